"""Weight initialisation shared by the Swin-style backbones."""

from torch import nn
from torch.nn.init import trunc_normal_


def init_swin_weights(m: nn.Module) -> None:
    """Linear: truncated normal (std 0.02), zero bias; LayerNorm: (1, 0). Use with `model.apply`."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
