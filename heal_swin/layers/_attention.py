"""Multi-head self-attention inside windows of consecutive tokens (scaled or cosine).

Uses `torch.nn.functional.scaled_dot_product_attention`. Windows are laid out window-major
(window, batch) so that the windows that need a mask — a shift's incomplete windows, kept last by
the shift tables — are one contiguous slice; the others share a (1, heads, ws, ws) bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..grid._windows import check_window_size, relative_position_index

__all__ = ["WindowAttention", "REL_POS_BIAS"]

REL_POS_BIAS = (None, "flat")


class WindowAttention(nn.Module):
    """Attention within each window of `window_size` consecutive tokens.

    Args:
        dim: channels C; num_heads: heads (C divisible by it).
        window_size: tokens per window (a power of 4, or all tokens of a stage for global
            attention).
        cosine: cosine attention with a learned per-head logit scale (clamped at
            `logit_scale_max`); otherwise scaled dot product (scale `qk_scale` or head_dim^-½).
        rel_pos_bias: None or "flat": a learned ((2·side − 1)², heads) table over the 2-D offsets
            of two tokens of a window, side = √bias_window_size (the configured window; a smaller
            window indexes the table's corner, which holds the same offsets).
        mask_value: added to the logits of masked pairs (−inf, or the original's −100).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, *, qkv_bias: bool = True,
                 qk_scale: float | None = None, cosine: bool = False, rel_pos_bias: str | None = None,
                 bias_window_size: int | None = None, mask_value: float = float("-inf"),
                 attn_drop: float = 0.0, proj_drop: float = 0.0, logit_scale_max: float = 100.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if rel_pos_bias not in REL_POS_BIAS:
            raise ValueError(f"rel_pos_bias={rel_pos_bias!r} must be one of {REL_POS_BIAS}")
        self.dim, self.num_heads, self.window_size = dim, num_heads, window_size
        self.cosine = cosine
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.mask_value = mask_value
        self.attn_drop = attn_drop
        self.log_scale_max = math.log(logit_scale_max)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if cosine:
            self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.rel_pos_bias = rel_pos_bias
        if rel_pos_bias == "flat":
            table_ws = bias_window_size or window_size
            side = check_window_size(table_ws, "bias_window_size")
            if window_size > table_ws:
                raise ValueError(f"window_size={window_size} exceeds the bias table's {table_ws}")
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * side - 1) ** 2, num_heads))
            index = relative_position_index(table_ws)[:window_size, :window_size]
            self.register_buffer("relative_position_index", torch.tensor(index.reshape(-1)),
                                 persistent=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        kind = "cosine" if self.cosine else "scaled"
        return (f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
                f"attention={kind}, rel_pos_bias={self.rel_pos_bias}")

    def _bias(self, dtype):
        if self.rel_pos_bias is None:
            return None
        ws = self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index]
        return bias.view(ws, ws, self.num_heads).permute(2, 0, 1).unsqueeze(0).to(dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, C), N = windows·window_size, windows consecutive.
        mask: optional bool (m, ws, ws), True where two tokens may attend, for the last m windows.
        Returns (B, N, C)."""
        B, N, C = x.shape
        ws, H = self.window_size, self.num_heads
        if N % ws:
            raise ValueError(f"{N} tokens do not split into windows of {ws}")
        nw = N // ws
        qkv = self.qkv(x).view(B, nw, ws, 3, H, C // H).permute(3, 1, 0, 4, 2, 5)
        q, k, v = qkv.reshape(3, nw * B, H, ws, C // H).unbind(0)
        if self.cosine:
            scale = torch.clamp(self.logit_scale, max=self.log_scale_max).exp()
            q = (F.normalize(q.float(), dim=-1) * scale).to(v.dtype)
            k = F.normalize(k.float(), dim=-1).to(v.dtype)
            sdpa_scale = 1.0
        else:
            sdpa_scale = self.scale
        bias = self._bias(q.dtype)
        drop = self.attn_drop if self.training else 0.0
        n_masked = 0 if mask is None else mask.shape[0]
        if n_masked == 0:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop, scale=sdpa_scale)
        else:
            split = (nw - n_masked) * B
            add = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, self.mask_value)
            add = add.unsqueeze(1) if bias is None else add.unsqueeze(1) + bias
            add = add.unsqueeze(1).expand(n_masked, B, *add.shape[1:]).reshape(n_masked * B, -1, ws, ws)
            parts = []
            if split:
                parts.append(F.scaled_dot_product_attention(q[:split], k[:split], v[:split], attn_mask=bias,
                                                            dropout_p=drop, scale=sdpa_scale))
            parts.append(F.scaled_dot_product_attention(q[split:], k[split:], v[split:], attn_mask=add,
                                                        dropout_p=drop, scale=sdpa_scale))
            out = torch.cat(parts) if len(parts) > 1 else parts[0]
        out = out.reshape(nw, B, H, ws, C // H).permute(1, 0, 3, 2, 4)
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            # The fused CPU kernel returns (…, L, H, E)-strided outputs, making the reshape below a
            # view when traced; decompositions return (…, H, L, E), so copy explicitly there.
            out = out.clone(memory_format=torch.contiguous_format)
        out = out.reshape(B, N, C)
        return self.proj_drop(self.proj(out))
