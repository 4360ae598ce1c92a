"""Building blocks shared by the backbones: window attention, MLP, drop path, patch layers, nested
pooling, gradient checkpointing of block lists, and gauge-equivariant convolutions on the face charts
(C4-regular field types, padding, pooling)."""

from ._attention import REL_POS_BIAS, WindowAttention, log_offsets
from ._checkpoint import CheckpointList, set_checkpointing
from ._dropout import DropPath, Dropout, dropout
from ._gauge import (ChartConv, FacePadding, FaceUnraster, FieldNorm, FieldPool, FieldType, FieldUnpool, GroupConv,
                     LiftingConv, OrientationPool, gauge_permutation, pad_tables, regular, rotate_kernel,
                     share_face_tables, trivial)
from ._init import init_swin_weights
from ._mlp import Mlp
from ._pool import NestedPool, NestedUnpool
from ._stage import UNetStage, set_stage_checkpointing
from ._patch import FlatPatchExpand, NestedPatchEmbed, NestedPatchExpand, NestedPatchMerge

__all__ = ["ChartConv", "CheckpointList", "FacePadding", "FaceUnraster", "FieldNorm", "FieldPool", "FieldType",
           "FieldUnpool", "GroupConv", "LiftingConv", "OrientationPool", "gauge_permutation", "pad_tables",
           "regular", "rotate_kernel", "share_face_tables", "trivial",
           "DropPath", "Dropout", "dropout", "FlatPatchExpand", "init_swin_weights", "Mlp",
           "NestedPatchEmbed", "NestedPatchExpand", "NestedPatchMerge", "NestedPool", "NestedUnpool",
           "REL_POS_BIAS", "UNetStage", "WindowAttention", "log_offsets", "set_checkpointing",
           "set_stage_checkpointing"]
