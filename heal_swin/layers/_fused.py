"""Memory-lean training kernels: window attention and the MLP with hand-written backward passes.

Autograd would keep every intermediate of a window-attention block for the backward pass: the
normalised queries and keys, the attention probabilities before and after dropout, the MLP's
hidden activations before and after GELU and dropout. At nside 256 these dominate training
memory. The two functions below keep only their input (and, for the MLP, its hidden
pre-activation) and a random seed, and recompute the rest in the backward pass: the qkv
projection, a few elementwise passes and two small matrix products per window.

Both compute in the dtype their inputs arrive in (bf16 under autocast), with the softmax in
float32; dropout masks (applied with `torch.where`: multiplying by a bool tensor is several times
slower on CPUs) are regenerated from a seed drawn from torch's generator, so runs stay
reproducible under `torch.manual_seed`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._rng import _keep, _seed

__all__ = ["window_attention", "mlp_gelu"]


def _accurate(dtype):
    """float32 for the softmax and its gradient when computing in half precision."""
    return torch.promote_types(dtype, torch.float32)


def _compute_dtype(t: torch.Tensor):
    dev = t.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else t.dtype


class _Attention(torch.autograd.Function):
    """x (B, N, C) -> proj(attention(qkv(x))) (B, N, C), keeping only x for the backward pass."""

    @staticmethod
    def forward(ctx, x, w_qkv, b_qkv, w_proj, b_proj, scale, bias, add, num_heads, window, qk_scale, p, seed,
                dtype):
        in_dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):
            x, w_qkv, b_qkv, w_proj, b_proj = (t.to(dtype) if t is not None else None
                                               for t in (x, w_qkv, b_qkv, w_proj, b_proj))
            qkv = F.linear(x, w_qkv, b_qkv)
            out, _ = _attention_forward(qkv, scale, bias, add, num_heads, window, qk_scale, p, seed)
            y = F.linear(out, w_proj, b_proj)
        ctx.save_for_backward(x, w_qkv, b_qkv, w_proj, scale, bias, add)
        ctx.cfg = (num_heads, window, qk_scale, p, seed, in_dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w_qkv, b_qkv, w_proj, scale, bias, add = ctx.saved_tensors
        num_heads, window, qk_scale, p, seed, in_dtype = ctx.cfg
        needs = ctx.needs_input_grad
        with torch.autocast(x.device.type, enabled=False):
            dy = dy.to(x.dtype)
            qkv = F.linear(x, w_qkv, b_qkv)
            out, saved = _attention_forward(qkv, scale, bias, add, num_heads, window, qk_scale, p, seed)
            dw_proj = _weight_grad(dy, out) if needs[3] else None
            db_proj = _bias_grad(dy) if needs[4] else None
            dqkv, dscale, dbias = _attention_backward(dy @ w_proj, qkv, scale, bias, num_heads, window,
                                                      qk_scale, p, saved, needs[5], needs[6])
            dw_qkv = _weight_grad(dqkv, x) if needs[1] else None
            db_qkv = _bias_grad(dqkv) if needs[2] and b_qkv is not None else None
            dx = (dqkv @ w_qkv).to(in_dtype) if needs[0] else None
        return dx, dw_qkv, db_qkv, dw_proj, db_proj, dscale, dbias, None, None, None, None, None, None, None


def _weight_grad(dy, x):
    return dy.reshape(-1, dy.shape[-1]).t() @ x.reshape(-1, x.shape[-1])


def _bias_grad(dy):
    return dy.reshape(-1, dy.shape[-1]).sum(0)


def _split(qkv, num_heads, window):
    B, N, C3 = qkv.shape
    C = C3 // 3
    return qkv.view(B * (N // window), window, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4).unbind(0)


def _inv_norm(x):
    """1/max(|x|, 1e-12) over the last axis, as F.normalize."""
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12).reciprocal()


def _attention_forward(qkv, scale, bias, add, H, ws, qk_scale, p, seed):
    B, N, _ = qkv.shape
    nw = N // ws
    q, k, v = _split(qkv, H, ws)  # (B·nw, H, ws, hd)
    extra = None
    if scale is not None:  # cosine: logits = s·q̂·k̂ᵀ, q̂ = q/|q|
        rq, rk = _inv_norm(q), _inv_norm(k)
        qh, kh = q * rq, k * rk
        raw = torch.matmul(qh, kh.transpose(-1, -2))
        logits = raw * scale.to(raw.dtype)
        extra = (qh, kh, rq, rk, raw)
    else:
        logits = torch.matmul(q * qk_scale, k.transpose(-1, -2))
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    if add is not None:
        logits.view(B, nw, H, ws, ws)[:, nw - add.shape[0]:] += add.to(logits.dtype)
    attn = torch.softmax(logits, -1)  # half-precision kernels accumulate in float32
    keep = _keep(attn.shape, p, seed, attn.device) if p > 0 and seed else None
    # dropout: mask here, and the 1/(1 − p) on the (smaller) output
    dropped = attn if keep is None else torch.where(keep, attn, 0)
    out = torch.matmul(dropped, v)
    if keep is not None:
        out = out * (1.0 / (1.0 - p))
    return out.transpose(1, 2).reshape(B, N, -1), (q, k, v, attn, keep, dropped, extra)


def _attention_backward(dout, qkv, scale, bias, H, ws, qk_scale, p, saved, need_scale, need_bias):
    """Gradients of qkv, the logit scale and the bias from the recomputed forward intermediates."""
    B, N, C3 = qkv.shape
    C = C3 // 3
    q, k, v, attn, keep, dropped, extra = saved
    do = dout.to(v.dtype).reshape(B * (N // ws), ws, H, C // H).transpose(1, 2)
    if keep is not None:
        do = do * (1.0 / (1.0 - p))
    dv = torch.matmul(dropped.transpose(-1, -2), do)
    da = torch.matmul(do, v.transpose(-1, -2))
    if keep is not None:
        da = da.masked_fill_(~keep, 0)
    dlogits = torch.ops.aten._softmax_backward_data(da, attn, -1, attn.dtype)
    dbias = dlogits.sum(0, keepdim=True).to(bias.dtype) if bias is not None and need_bias else None
    dscale = None
    if scale is not None:
        qh, kh, rq, rk, raw = extra
        s = scale.to(qh.dtype)
        if need_scale:
            dscale = (dlogits * raw).sum((0, 2, 3), dtype=_accurate(raw.dtype)).view_as(scale).to(scale.dtype)
        dlogits = dlogits * s
        dqh = torch.matmul(dlogits, kh)
        dkh = torch.matmul(dlogits.transpose(-1, -2), qh)
        # through the normalisation: d(x/|x|) = (dy − y·(y·dy)) / |x|
        dq = (dqh - qh * (qh * dqh).sum(-1, keepdim=True)) * rq
        dk = (dkh - kh * (kh * dkh).sum(-1, keepdim=True)) * rk
    else:
        dq = torch.matmul(dlogits, k) * qk_scale
        dk = torch.matmul(dlogits.transpose(-1, -2), q * qk_scale)
    dqkv = torch.empty_like(qkv)
    dq_, dk_, dv_ = _split(dqkv, H, ws)
    dq_.copy_(dq)
    dk_.copy_(dk)
    dv_.copy_(dv)
    return dqkv, dscale, dbias


def window_attention(x, qkv: torch.nn.Linear, proj: torch.nn.Linear, num_heads, window, *, scale=None,
                     qk_scale=1.0, bias=None, add=None, p=0.0, training=False):
    """proj(window attention(qkv(x))), recomputing its intermediates in the backward pass.

    x: (B, N, C), windows of `window` consecutive tokens. scale: (heads, 1, 1) logit scale for
    cosine attention (None: scaled dot product with `qk_scale`). bias: (1, heads, ws, ws) added to
    every window's logits; add: (m, 1, ws, ws) added to the last m windows of each sequence.
    p: dropout on the attention probabilities (training only). Returns (B, N, C).
    """
    return _Attention.apply(x, qkv.weight, qkv.bias, proj.weight, proj.bias, scale, bias, add, num_heads, window,
                            qk_scale, p, _seed(p, training), _compute_dtype(x))


class _MlpGelu(torch.autograd.Function):
    """x -> dropout(GELU(x W1ᵀ + b1)) W2ᵀ + b2, keeping x and the pre-activation only."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, p, seed, dtype):
        in_dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):
            x, w1c, b1c, w2c, b2c = (t.to(dtype) if t is not None else None for t in (x, w1, b1, w2, b2))
            h = F.linear(x, w1c, b1c)
            a = F.gelu(h)
            if p > 0 and seed:  # dropout: mask here, the 1/(1 − p) folded into the second weight
                a = torch.where(_keep(a.shape, p, seed, a.device), a, 0)
                w2c = w2c * (1.0 / (1.0 - p))
            y = F.linear(a, w2c, b2c)
        ctx.save_for_backward(x, h, w1c, w2c)
        ctx.cfg = (p, seed, w1.dtype, b1 is not None, b2 is not None, in_dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, h, w1, w2 = ctx.saved_tensors
        p, seed, wdtype, has_b1, has_b2, in_dtype = ctx.cfg
        with torch.autocast(x.device.type, enabled=False):
            dy = dy.to(h.dtype)
            a = F.gelu(h)
            keep = None
            if p > 0 and seed:
                keep = _keep(a.shape, p, seed, a.device)
                a = torch.where(keep, a, 0)
            dy2 = dy.reshape(-1, dy.shape[-1])
            dw2 = dy2.t() @ a.reshape(-1, a.shape[-1])
            dw2 = (dw2 if keep is None else dw2 * (1.0 / (1.0 - p))).to(wdtype)
            db2 = dy2.sum(0).to(wdtype) if has_b2 else None
            da = dy @ w2  # w2 as saved: scaled by 1/(1 − p) under dropout
            if keep is not None:
                da = torch.where(keep, da, 0)
            dh = torch.ops.aten.gelu_backward(da, h)
            dh2 = dh.reshape(-1, dh.shape[-1])
            dw1 = (dh2.t() @ x.reshape(-1, x.shape[-1])).to(wdtype)
            db1 = dh2.sum(0).to(wdtype) if has_b1 else None
            dx = (dh @ w1).to(in_dtype)
        return dx, dw1, db1, dw2, db2, None, None, None


def mlp_gelu(x, fc1, fc2, p=0.0, training=False):
    """fc2(dropout(GELU(fc1(x)))) keeping only x and fc1's output for the backward pass."""
    return _MlpGelu.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, p, _seed(p, training),
                          _compute_dtype(x))
