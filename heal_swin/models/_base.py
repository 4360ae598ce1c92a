"""The backbone base: what every family shares, written once, so that a family file holds only what
is its own (timm's `build_model_with_cfg` and `set_grad_checkpointing`).

`Backbone` owns the surface of the contract in `heal_swin.models`: the checks of the plain values
every constructor takes (in_chans, num_classes, task, log_variance), the task head, `feature_info`,
`forward` = forward_features -> forward_decoder -> head, `extra_repr` and `set_grad_checkpointing`.
A classifier (task="classification") is an encoder: a family builds no decoder for it (`dense` is False) and its
`forward_decoder` returns the bottleneck map, which `PooledHead` pools (as classification networks do).
`SphereBackbone` adds the HEALPix grid (nside, base_pixels, the stages' nsides, the input check),
`FlatBackbone` the image size. A family's constructor reads

    super().__init__(nside, base_pixels, in_chans, num_classes, task=task, log_variance=log_variance)
    widths, depths, nsides = self.check_stages(widths, depths)    # then the family's own checks
    ...                                                           # the body
    self.feature_info = self.stage_info([(channels_i, nside_i, module_i), ...])
    self.head = self.build_head(in_chs, expand, bias)             # after the body (see build_head)
    self.set_grad_checkpointing(grad_checkpointing)

and the family defines `forward_features` (which starts with `self.check_input(x)`), `forward_decoder`
and `repr_args`, the geometry that `print(model)` shows after the shared values.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

from torch import nn

from ..grid import check_base_pixels, check_nside, format_base_pixels
from ..layers import set_checkpointing
from ._heads import create_head, head_channels

__all__ = ["Backbone", "FlatBackbone", "SphereBackbone"]


def is_whole(value) -> bool:
    """A whole number (8 or 8.0; not True, not 8.7): what a count may be given as (YAML may write 8.0)."""
    return not isinstance(value, bool) and (isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and float(value).is_integer()))


def _check_count(value, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer ({what})")
    return int(value)


class Backbone(nn.Module):
    """The surface every backbone shares (see `heal_swin.models` for the layouts).

    Attributes: `in_chans`; `task` ("segmentation" | "depth" | "classification"); `num_classes`, the
    head's output channels (the classes, or for depth 1, 2 with `log_variance`); `feature_info`, one dict per map
    of `forward_features` (num_chs, reduction, module, and nside or resolution); `head`. Families add
    `embed_dim` (the decoder's output channels) and `num_features` (the bottleneck's).
    `dense`: whether the task predicts per pixel (segmentation, depth: an encoder-decoder) or per sample
    (classification: the encoder alone, its bottleneck pooled by the head).
    """

    head_layout = "nested"  # the decoder's output to PixelHead: (B, C, N) "nested" or (B, C, H, W) "flat"

    def __init__(self, in_chans: int, num_classes: int, *, task: str = "segmentation",
                 log_variance: bool = False):
        super().__init__()
        self.in_chans = _check_count(in_chans, "in_chans", "input channels")
        self.task, self.log_variance = task, bool(log_variance)
        self.num_classes = head_channels(task, num_classes, self.log_variance)

    @staticmethod
    def check_stage_lists(widths: Sequence[int], depths: Sequence[int], *, name: str = "widths",
                          unit: str = "channel") -> tuple[tuple, tuple]:
        """(widths, depths) as int tuples, or ValueError naming the values and the rule: widths
        (channels, fields or heads per stage: `name`, counted in `unit`s) and depths (blocks per
        stage) non-empty, of equal length, at least one of each per stage."""
        for label, values in ((name, widths), ("depths", depths)):
            if not all(map(is_whole, values)):
                raise ValueError(f"{label}={tuple(values)} must be whole numbers (one per stage); a fraction would "
                                 "be cut off")
        widths, depths = tuple(int(w) for w in widths), tuple(int(d) for d in depths)
        if not widths or len(widths) != len(depths) or min(depths) < 1 or min(widths) < 1:
            raise ValueError(f"{name}={widths} and depths={depths} must be non-empty, of equal length, with "
                             f"at least one {unit} and one block per stage")
        return widths, depths

    def build_head(self, in_chs: int, expand: int = 1, bias: bool = False) -> nn.Module:
        """The task head on the decoder's `in_chs` channels: per pixel (`PixelHead`, `expand` output
        pixels per decoder pixel: the tokens' patch size), or for task="classification" one prediction
        per sample (`PooledHead`: the mean over the grid, then a linear map). Families build it last: it
        then draws its initial weights after the body's, as before the base existed, so a seed gives the
        weights it gave then."""
        return create_head(self.task, in_chs, self.num_classes, expand,
                           self.head_layout, self.log_variance, bias)

    def stage_info(self, stages: Iterable[tuple], **extra) -> list[dict]:
        """`feature_info` from (num_chs, grid, module) per map of `forward_features`, finest first;
        `extra` is added to every map's dict."""
        raise NotImplementedError

    def check_input(self, x) -> None:
        """ValueError unless x has the shape the model was built for, naming expected and actual."""
        raise NotImplementedError

    def forward_features(self, x) -> list:
        """x -> the list of stage maps, channels first, finest first, bottleneck last."""
        raise NotImplementedError

    @property
    def dense(self) -> bool:
        """True where the head predicts per pixel (a decoder is built), False for task="classification"
        (the head pools the bottleneck: no decoder)."""
        return self.task != "classification"

    def forward_decoder(self, features):
        """The maps of `forward_features` -> the head's input: at the first map's grid for a dense task,
        the bottleneck map for classification."""
        raise NotImplementedError

    def forward(self, x):
        return self.head(self.forward_decoder(self.forward_features(x)))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing on or off in every block list of the model (`layers.CheckpointList`):
        in training, each block keeps only its input and runs again in the backward pass: the same
        gradients for less activation memory."""
        set_checkpointing(self, enable)

    def grid_repr(self) -> str:
        """The input grid, first in `extra_repr`."""
        raise NotImplementedError

    def repr_args(self) -> list[str]:
        """The family's geometry, "name=value" items printed after the shared ones."""
        return []

    def extra_repr(self) -> str:
        return ", ".join([self.grid_repr(), f"in_chans={self.in_chans}", f"task={self.task}",
                          f"out_chans={self.num_classes}", *self.repr_args()])


class SphereBackbone(Backbone):
    """A backbone on HEALPix maps: x (B, in_chans, N), N = len(base_pixels)·nside², NESTED, faces
    ascending -> (B, num_classes, N). `base_pixels` holds the checked faces as a tuple (`faces` is the
    same tuple under the name the families' internals use)."""

    def __init__(self, nside: int, base_pixels: Sequence[int] | str, in_chans: int, num_classes: int, *,
                 task: str = "segmentation", log_variance: bool = False):
        super().__init__(in_chans, num_classes, task=task, log_variance=log_variance)
        self.nside = check_nside(nside)
        self.base_pixels = check_base_pixels(base_pixels)

    @property
    def faces(self) -> tuple[int, ...]:
        return self.base_pixels

    def check_stages(self, widths: Sequence[int], depths: Sequence[int], *, name: str = "widths",
                     unit: str = "channel", patch_size: int = 1) -> tuple[tuple, tuple, list]:
        """(widths, depths, nsides) of a U-Net's stages, or ValueError naming the values and the rule:
        `check_stage_lists`, and stage i works at nsides[i] = nside / (√patch_size·2^i) (`patch_size`
        pixels per token; 1 when the first stage works on pixels), so the last stage needs
        nside ≥ √patch_size·2^(stages−1)."""
        widths, depths = self.check_stage_lists(widths, depths, name=name, unit=unit)
        stages, side = len(widths), math.isqrt(patch_size)
        needed = side << (stages - 1)
        if self.nside < needed:
            tokens, rule = ("", "2^(stages−1)")
            if patch_size > 1:
                tokens, rule = f" with patch_size={patch_size}", "√patch_size·2^(stages−1)"
            raise ValueError(f"nside={self.nside} is too small for {stages} stages{tokens}: the last stage "
                             f"needs nside ≥ {rule} = {needed}")
        return widths, depths, [self.nside // (side << i) for i in range(stages)]

    def stage_info(self, stages: Iterable[tuple], **extra) -> list[dict]:
        """From (num_chs, nside, module) per map; reduction is timm's stride along a face's axes,
        input nside / map nside."""
        return [dict(num_chs=int(c), nside=int(n), reduction=self.nside // n, module=m, **extra)
                for c, n, m in stages]

    def check_input(self, x) -> None:
        n = len(self.faces) * self.nside ** 2
        if x.dim() != 3 or x.shape[1] != self.in_chans or x.shape[2] != n:
            raise ValueError(f"expected x of shape (B, {self.in_chans}, {n}) (in_chans, len(faces)·nside² "
                             f"for nside={self.nside}, faces={format_base_pixels(self.faces)}), "
                             f"got {tuple(x.shape)}")

    def grid_repr(self) -> str:
        return f"nside={self.nside}, faces={format_base_pixels(self.faces)}"


class FlatBackbone(Backbone):
    """A backbone on images: x (B, in_chans, H, W), (H, W) = img_size -> (B, num_classes, H, W)."""

    head_layout = "flat"

    def __init__(self, img_size: int | Sequence[int], in_chans: int, num_classes: int, *,
                 task: str = "segmentation", log_variance: bool = False):
        super().__init__(in_chans, num_classes, task=task, log_variance=log_variance)
        size = (img_size, img_size) if isinstance(img_size, numbers.Number) else \
            tuple(img_size) if isinstance(img_size, Iterable) else ()
        if len(size) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
                                     for s in size):
            raise ValueError(f"img_size={img_size!r} must be a positive integer or a pair (H, W) of them")
        self.img_size = (int(size[0]), int(size[1]))

    def stage_info(self, stages: Iterable[tuple], **extra) -> list[dict]:
        """From (num_chs, (H_i, W_i), module) per map; reduction is the stride along each image axis,
        H / H_i."""
        return [dict(num_chs=int(c), resolution=tuple(r), reduction=self.img_size[0] // r[0], module=m,
                     **extra) for c, r, m in stages]

    def check_input(self, x) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans or tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f"expected x of shape (B, {self.in_chans}, {self.img_size[0]}, "
                             f"{self.img_size[1]}), got {tuple(x.shape)}")

    def grid_repr(self) -> str:
        return f"img_size={self.img_size}"
