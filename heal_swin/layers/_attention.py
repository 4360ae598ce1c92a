"""Multi-head self-attention inside windows of consecutive tokens (scaled or cosine).

Windows are consecutive blocks of `window_size` tokens of a (B, N, C) sequence. A shift's
incomplete windows, which need a mask, are the last ones of each sequence (the shift tables put
them there); all others share one (1, heads, ws, ws) bias. Without gradients the attention runs
in `scaled_dot_product_attention`. With gradients and `fused=True` (the default) it runs
`_fused.window_attention`, whose hand-written backward pass keeps only the block's input (SDPA's
CPU kernels fall back to a slower, memory-hungry path when the bias is learned); `fused=False`
trains through the same SDPA path with autograd, the plain reference the fused kernel is tested
against.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..grid import check_window_size, relative_position_index
from ._dropout import Dropout
from ._fused import _compute_dtype, _inv_norm, window_attention

__all__ = ["WindowAttention", "REL_POS_BIAS", "log_offsets"]

REL_POS_BIAS = (None, "flat", "log_cpb")


def log_offsets(side: int) -> torch.Tensor:
    """The ((2·side − 1)², 2) row/column offsets of two tokens of a side × side window, in the order
    of `relative_position_index`, scaled to ±8 at the window's extent and mapped to
    sign(d)·log2(1 + |d|)/3 (Swin V2's log-spaced coordinates; at most log2(9)/3 ≈ 1.06)."""
    d = torch.arange(-(side - 1), side, dtype=torch.float32)
    if side > 1:
        d = d * (8.0 / (side - 1))
    d = torch.sign(d) * torch.log2(1.0 + d.abs()) / 3.0
    dr, dc = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([dr, dc], dim=-1).reshape(-1, 2)


def _orbit_index(index, turn):
    """The bias index (k, ws, ws) of a window under the powers σ⁰ … σ^(k−1) of a slot permutation
    σ of order k: entry p holds index[σ^p(i), σ^p(j)] for the pair (i, j)."""
    sigma = np.asarray(turn, dtype=np.int64)
    ws = index.shape[0]
    if sigma.shape != (ws,) or not np.array_equal(np.sort(sigma), np.arange(ws)):
        raise ValueError(f"bias_turn must be a permutation of the {ws} slots of a window, got shape "
                         f"{sigma.shape}")
    power, tables = np.arange(ws), []
    while not tables or not np.array_equal(power, np.arange(ws)):
        tables.append(index[power][:, power])
        power = sigma[power]
    return np.stack(tables)


class WindowAttention(nn.Module):
    """Attention within each window of `window_size` consecutive tokens.

    Args:
        dim: channels C; num_heads: heads (C divisible by it).
        window_size: tokens per window (a power of 4, or all tokens of a stage for global
            attention).
        cosine: cosine attention with a learned per-head logit scale (clamped at
            `logit_scale_max`); otherwise scaled dot product (scale `qk_scale` or head_dim^-½).
        rel_pos_bias: None; "flat": a learned ((2·side − 1)², heads) table over the 2-D offsets
            of two tokens of a window, side = √bias_window_size (the configured window; a smaller
            window indexes the table's corner, which holds the same offsets); "log_cpb": the
            better-conditioned continuous bias of Swin V2, 16·sigmoid(MLP(offset)) with offsets
            on a log scale: a small shared MLP (2 → 512 → heads) instead of one free parameter
            per offset, so rarely seen offsets (the corners of the table, which few token pairs
            share) are not left at their initial values, and one model works at other window sizes.
        mask_value: added to the logits of masked pairs (−inf, or the original's −100).
        bias_turn: a permutation σ of a window's slots (int, (window_size,)): slot s's token moves
            to slot σ[s] under a symmetry of the grid that maps some windows onto themselves (a
            90° polar turn maps the pole windows onto themselves, turned). `forward(...,
            turned=True)` gives those windows the bias averaged over the powers of σ, which is
            invariant under it; a bias over 2-D offsets alone turns with the window.
        fused: train with the memory-lean hand-written backward pass (`_fused`); False: plain
            autograd through `scaled_dot_product_attention` (the reference; same function, its
            dropout masks drawn by torch).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, *, qkv_bias: bool = True,
                 qk_scale: float | None = None, cosine: bool = False, rel_pos_bias: str | None = None,
                 bias_window_size: int | None = None, mask_value: float = float("-inf"),
                 attn_drop: float = 0.0, proj_drop: float = 0.0, logit_scale_max: float = 100.0,
                 bias_turn=None, fused: bool = True):
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
        self.fused = bool(fused)
        self.log_scale_max = math.log(logit_scale_max)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if cosine:
            self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.rel_pos_bias = rel_pos_bias
        if rel_pos_bias is not None:
            table_ws = bias_window_size or window_size
            side = check_window_size(table_ws, "bias_window_size")
            if window_size > table_ws:
                raise ValueError(f"window_size={window_size} exceeds the bias table's {table_ws}")
            index = relative_position_index(table_ws)[:window_size, :window_size]
            self.register_buffer("relative_position_index", torch.tensor(index.reshape(-1)),
                                 persistent=False)
            if bias_turn is not None:
                turned = _orbit_index(index, bias_turn).reshape(-1)
                self.register_buffer("relative_position_index_turned", torch.tensor(turned), persistent=False)
        if rel_pos_bias == "flat":
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * side - 1) ** 2, num_heads))
        elif rel_pos_bias == "log_cpb":
            self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True),
                                         nn.Linear(512, num_heads, bias=False))
            self.register_buffer("cpb_coords", log_offsets(side), persistent=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = Dropout(proj_drop)

    def extra_repr(self) -> str:
        kind = "cosine" if self.cosine else "scaled"
        return (f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
                f"attention={kind}, rel_pos_bias={self.rel_pos_bias}, attn_drop={self.attn_drop}, fused={self.fused}")

    def _bias(self, dtype, turned: bool = False):
        if self.rel_pos_bias is None:
            return None
        ws = self.window_size
        table = self.relative_position_bias_table if self.rel_pos_bias == "flat" else \
            16 * torch.sigmoid(self.cpb_mlp(self.cpb_coords))
        # gathered along the table's second axis: the backward pass then sums contiguous rows of
        # the (heads, ws·ws) gradient, 15× faster on CPUs than scattering (ws·ws, heads) rows
        if turned:
            index = getattr(self, "relative_position_index_turned", None)
            if index is None:
                raise ValueError("turned=True needs the attention built with bias_turn (the slot "
                                 "permutation to average the bias over)")
            bias = table.t().index_select(1, index).view(self.num_heads, -1, ws, ws).mean(1)
        else:
            bias = table.t().index_select(1, self.relative_position_index)
        return bias.view(1, self.num_heads, ws, ws).to(dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                turned: bool = False) -> torch.Tensor:
        """x: (B, N, C), N = windows·window_size, windows consecutive.
        mask: optional bool (m, ws, ws), True where two tokens may attend, for the last m windows
        of each sequence. turned: the windows map onto themselves under `bias_turn`; their bias
        is averaged over its powers. Returns (B, N, C)."""
        B, N, C = x.shape
        ws, H = self.window_size, self.num_heads
        if N % ws:
            raise ValueError(f"{N} tokens do not split into windows of {ws}")
        nw = N // ws
        m = 0 if mask is None else mask.shape[0]
        if self.fused and torch.is_grad_enabled() and (x.requires_grad or
                                                       any(p.requires_grad for p in self.parameters())):
            # training: the hand-written backward keeps only x (see _fused)
            scale = torch.clamp(self.logit_scale, max=self.log_scale_max).exp() if self.cosine else None
            dtype = _compute_dtype(x)
            add = self._mask_add(mask, dtype) if m else None
            return window_attention(x, self.qkv, self.proj, H, ws, scale=scale, qk_scale=self.scale,
                                    bias=self._bias(dtype, turned), add=add, p=self.attn_drop,
                                    p_out=self.proj_drop.p, training=self.training)
        qkv = self.qkv(x)
        q, k, v = qkv.view(B * nw, ws, 3, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)  # (B·nw, H, ws, hd)
        if self.cosine:
            scale = torch.clamp(self.logit_scale, max=self.log_scale_max).exp().to(q.dtype)
            q = q * (scale * _inv_norm(q))
            k = k * _inv_norm(k)
            qk_scale = 1.0
        else:
            qk_scale = self.scale
        add = self._mask_add(mask, q.dtype) if m else None
        out = self._attend_sdpa(q, k, v, self._bias(q.dtype, turned), add, B, nw, qk_scale)
        return self.proj_drop(self.proj(out))

    def _mask_add(self, mask, dtype):
        """bool (m, ws, ws) -> additive (m, 1, ws, ws): 0 where allowed, mask_value elsewhere."""
        add = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return add.masked_fill(~mask, self.mask_value).unsqueeze(1)

    def _attend_sdpa(self, q, k, v, bias, add, B, nw, qk_scale):
        ws, H = self.window_size, self.num_heads
        hd = q.shape[-1]

        drop = self.attn_drop if self.training else 0.0

        def sdpa(q, k, v, mask, n):
            if torch.compiler.is_exporting():
                # Written out for export: SDPA's decomposition transposes the keys between two
                # reshapes, which onnxruntime cannot fold into the product (a slow Transpose per
                # block); k.transpose(-1, -2) right at the MatMul becomes one fused MatMul.
                logits = torch.matmul(q if qk_scale == 1.0 else q * qk_scale, k.transpose(-1, -2))
                out = torch.matmul(torch.softmax(logits if mask is None else logits + mask, -1), v)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, scale=qk_scale)
            out = out.reshape(B, n, H, ws, hd).transpose(2, 3)
            if torch.compiler.is_compiling() or torch.compiler.is_exporting():
                # The fused CPU kernel returns (…, L, H, E)-strided outputs, which makes the
                # reshape below a view when traced; decompositions return (…, H, L, E).
                out = out.clone(memory_format=torch.contiguous_format)
            return out.reshape(B, n * ws, H * hd)

        if add is None:
            return sdpa(q, k, v, bias, nw)
        m = add.shape[0]
        full = add if bias is None else add + bias  # (m, 1|H, ws, ws)
        full = full.repeat(B, 1, 1, 1)

        def part(t, lo, hi):
            return t.reshape(B, nw, H, ws, hd)[:, lo:hi].reshape(B * (hi - lo), H, ws, hd)

        parts = [sdpa(part(q, nw - m, nw), part(k, nw - m, nw), part(v, nw - m, nw), full, m)]
        if nw > m:
            parts.insert(0, sdpa(part(q, 0, nw - m), part(k, 0, nw - m), part(v, 0, nw - m), bias, nw - m))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
