"""Backbones, heads and the model registry.

    model = models.create_model("heal_swin_tiny", in_chans=3, num_classes=10, nside=64,
                                base_pixels=range(8))
    model(x)  # x (B, C, N) -> (B, num_classes, N);  models.list_models() names every variant
"""

from . import heal_swin as _heal_swin  # noqa: F401  (registers the variants)
from . import swin_unet_flat as _swin_unet_flat  # noqa: F401
from ._heads import PixelHead, create_head
from ._registry import create_model, is_model, list_models, register_model
from .heal_swin import HealSwinUNet, checkpoint_filter_fn, load_original
from .swin_unet_flat import SwinUNetFlat

__all__ = ["HealSwinUNet", "PixelHead", "checkpoint_filter_fn", "create_head", "create_model",
           "is_model", "list_models", "load_original", "register_model", "SwinUNetFlat"]
