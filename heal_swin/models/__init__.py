"""Backbones, heads and the model registry.

    model = models.create_model("heal_swin_tiny", in_chans=3, num_classes=10, nside=64,
                                base_pixels=range(8))
    model(x)  # x (B, C, N) -> (B, num_classes, N);  models.list_models() names every variant
    models.model_info("heal_swin_tiny")   # family, input domain, a fast test build's kwargs

The backbone contract (every family keeps it, so swapping a backbone is a config change):

- One file per family, `heal_swin/models/<family>.py`; each variant is a function registered with
  `@register_model(family=..., domain="healpix"|"flat", test_kwargs=...)` that overrides its
  defaults with the caller's keywords, `Model(**dict(model_args, **kwargs))` (timm's). The
  trainer, the exporter and the tests read the domain and the test build from `model_info(name)`.
- Every model subclasses `SphereBackbone` (HEALPix) or `FlatBackbone` (flat), both `Backbone`
  (`_base.py`), which own the shared part of what follows: the checks of the shared constructor
  values, `feature_info`, the head, `forward`, `extra_repr` and `set_grad_checkpointing(enable=True)`
  (timm's name; the same gradients for less memory). A family adds its stages and their checks.
- Constructor: plain values. HEALPix models take `nside`, `base_pixels`, `in_chans`,
  `num_classes`, `task` ("segmentation" | "depth" | "classification"), `log_variance` (depth) and
  `grad_checkpointing`; flat ones take `img_size` instead of `nside`/`base_pixels`.
- `forward(x)`: HEALPix x `(B, in_chans, N)`, N = len(base_pixels)·nside², NESTED, faces
  ascending -> `(B, num_classes, N)` (depth: 1 channel, 2 with log-variance). Flat x
  `(B, in_chans, H, W)` -> `(B, num_classes, H, W)`.
- `forward_features(x)` -> the list of stage maps, channels first, finest first, bottleneck last:
  `(B, C_i, N_i)` on the sphere, `(B, C_i, H_i, W_i)` flat. `feature_info[i]` is a dict (timm's
  convention) with `num_chs`, `reduction` (the stride: input nside / map nside, or input pixels
  per map pixel along each image axis), `nside` (or `resolution`) and `module`, the name of the
  submodule whose output is map i.
- `forward_decoder(features)` -> `(B, C, N_0)` (flat `(B, C, H_0, W_0)`), which the task head
  (`PixelHead`) turns into the output: `forward(x) = head(forward_decoder(forward_features(x)))`.
  A classifier (`task="classification"`, `model.dense` False) has no decoder: `forward_decoder` returns
  the bottleneck map and `PooledHead` pools it into `(B, num_classes)`.
- Index tables are non-persistent buffers; `state_dict()` holds parameters only.
"""

from . import heal_swin as _heal_swin  # noqa: F401  (registers the variants)
from . import swin_unet_flat as _swin_unet_flat  # noqa: F401
from ._base import Backbone, FlatBackbone, SphereBackbone
from ._controls import PlainFaceCNN
from ._equirect import EquirectangularAdapter, equirectangular_shape
from ._heads import PixelHead, PooledHead, create_head
from ._registry import DOMAINS, ModelInfo, create_model, is_model, list_models, model_info, register_model
from .chart_cnn import ChartCNNUNet  # also registers the chart_cnn variants
from .gauge_cnn import GaugeCNNUNet  # also registers the gauge_cnn variants
from .heal_swin import HealSwinUNet, checkpoint_filter_fn, load_original
from .planar_cnn import PlanarCNN  # also registers the planar_cnn variants
from .s2cnn import S2CNN, S2CNNUNet  # also registers the s2cnn variants
from .swin_unet_flat import SwinUNetFlat

__all__ = ["Backbone", "ChartCNNUNet", "DOMAINS", "EquirectangularAdapter", "FlatBackbone", "GaugeCNNUNet",
           "HealSwinUNet", "ModelInfo", "PixelHead", "PlainFaceCNN", "PooledHead", "PlanarCNN", "S2CNN", "S2CNNUNet",
           "SphereBackbone", "SwinUNetFlat", "checkpoint_filter_fn", "create_head", "create_model",
           "equirectangular_shape", "is_model", "list_models", "load_original", "model_info",
           "register_model"]
