"""Memory-lean training kernels: window attention and the MLP with hand-written backward passes.

Autograd would keep every intermediate of a window-attention block for the backward pass: the
normalised queries and keys, the attention probabilities before and after dropout, the MLP's
hidden activations before and after GELU and dropout. At nside 256 these dominate training
memory. The two functions below keep their input (and, for the MLP, its hidden pre-activation)
and random seeds; the other intermediates of a call are kept too when they take at most
`KEEP_BYTES`, and otherwise recomputed in the backward pass (the qkv projection, a few
elementwise passes and two small matrix products per window) and released as soon as used.

Both compute in the dtype their inputs arrive in (bf16 under autocast), with the softmax in
float32. Dropout masks hold 0 and 1/(1 − p) in the compute dtype (multiplying by them is several
times faster on CPUs than `torch.where` with a bool mask, and carries the scale); the MLP's hidden
dropout is instead a −1e30 penalty on its pre-activation, which GELU maps to 0 with zero gradient.
All are regenerated from seeds drawn from torch's generator (`_rng`), so runs stay reproducible
under `torch.manual_seed`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._rng import _mask, _penalty, _seed

__all__ = ["window_attention", "mlp_gelu", "KEEP_BYTES"]

# Intermediates of one call up to this size are kept for the backward pass instead of being
# recomputed: at nside 64 that skips most recomputation, at nside 256 the large stages still
# recompute (their intermediates would take gigabytes).
KEEP_BYTES = 32 * 2 ** 20


def _accurate(dtype):
    """float32 for the softmax and its gradient when computing in half precision."""
    return torch.promote_types(dtype, torch.float32)


def _compute_dtype(t: torch.Tensor):
    dev = t.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else t.dtype


class _Attention(torch.autograd.Function):
    """x (B, N, C) -> dropout(proj(attention(qkv(x)))) (B, N, C); see the module's docstring."""

    @staticmethod
    def forward(ctx, x, w_qkv, b_qkv, w_proj, b_proj, scale, bias, add, num_heads, window, qk_scale, p, seed,
                p_out, seed_out, dtype, keep_bytes):
        in_dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):
            x, w_qkv, b_qkv, w_proj, b_proj = (t.to(dtype) if t is not None else None
                                               for t in (x, w_qkv, b_qkv, w_proj, b_proj))
            qkv = F.linear(x, w_qkv, b_qkv)
            out, saved = _attention_forward(qkv, scale, bias, add, num_heads, window, qk_scale, p, seed)
            y = F.linear(out, w_proj, b_proj)
            mask_out = None
            if seed_out:  # output dropout: a mask of 0 and 1/(1 − p), applied as the output takes
                # the caller's dtype (one pass for both)
                mask_out = _mask(y.shape, p_out, seed_out, y.dtype, y.device, _inv_keep(p_out, seed_out))
                y = _mul_into(y, mask_out, in_dtype)
            # small intermediates are kept (no recomputation); large ones are recomputed
            kept = (qkv, out, saved, mask_out)
            ctx.kept = kept if _small(keep_bytes, kept) else None
            del saved, kept
        ctx.save_for_backward(x, w_qkv, b_qkv, w_proj, scale, bias, add)
        ctx.cfg = (num_heads, window, qk_scale, p, seed, p_out, seed_out, in_dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w_qkv, b_qkv, w_proj, scale, bias, add = ctx.saved_tensors
        num_heads, window, qk_scale, p, seed, p_out, seed_out, in_dtype = ctx.cfg
        needs = ctx.needs_input_grad
        with torch.autocast(x.device.type, enabled=False):
            if ctx.kept is not None:
                (qkv, out, saved, mask_out), ctx.kept = ctx.kept, None
            else:
                qkv = F.linear(x, w_qkv, b_qkv)
                out, saved = _attention_forward(qkv, scale, bias, add, num_heads, window, qk_scale, p, seed)
                mask_out = None
                if seed_out:
                    mask_out = _mask(dy.shape, p_out, seed_out, dy.dtype, dy.device, _inv_keep(p_out, seed_out))
            dy = dy.to(x.dtype)  # then the mask: mixed-dtype products are slower than the two passes
            if seed_out:
                dy = dy * mask_out
            del mask_out
            dw_proj = _weight_grad(dy, out) if needs[3] else None
            db_proj = _bias_grad(dy) if needs[4] else None
            del out
            dqkv, dscale, dbias = _attention_backward(dy @ w_proj, qkv, scale, bias, num_heads, window,
                                                      qk_scale, p, saved, needs[5], needs[6])
            dw_qkv = _weight_grad(dqkv, x) if needs[1] else None
            db_qkv = _bias_grad(dqkv) if needs[2] and b_qkv is not None else None
            dx = (dqkv @ w_qkv).to(in_dtype) if needs[0] else None
        return (dx, dw_qkv, db_qkv, dw_proj, db_proj, dscale, dbias) + (None,) * 10


def _mul_into(a, b, dtype=None):
    """a·b in a new row-major tensor of `dtype` (default a's), whatever a's strides. Row-major:
    `matmul` copies operands that are neither row- nor column-major, and the split of qkv into
    heads leaves them neither. `dtype`: a dropout mask applied while raising precision costs one
    pass (towards a narrower dtype, mixed-dtype products are slower than converting first)."""
    return torch.mul(a, b, out=torch.empty(a.shape, dtype=dtype or a.dtype, device=a.device))


def _small(limit: int, *tensors) -> bool:
    """Whether the tensors take at most `limit` bytes. Always False while tracing (torch.export,
    torch.compile): a size test would add a guard on the batch size to the traced program."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return _nbytes(*tensors) <= limit


def _nbytes(*tensors) -> int:
    """Bytes held by the tensors in a nest of tuples and lists (None skipped; views counted)."""
    total = 0
    for t in tensors:
        if isinstance(t, (tuple, list)):
            total += _nbytes(*t)
        elif t is not None:
            total += t.numel() * t.element_size()
    return total


def _penalised(dtype) -> bool:
    """Whether hidden dropout is applied as a −1e30 penalty before GELU (dtypes that hold 1e30)."""
    return dtype != torch.float16


def _inv_keep(p, seed):
    """1/(1 − p) when dropout with probability p is active (seed ≠ 0), else 1."""
    return 1.0 / (1.0 - p) if seed else 1.0


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


def _floor_logits(logits, depth: float = 78.0):
    """Logits more than `depth` below their row's maximum set to −inf, in place: their
    probabilities (below e^-78 ≈ 1e-34) become 0. A finite mask (the original's −100) puts many
    logits there, where x86 CPUs compute exp() on a slow path (its results are subnormal floats;
    the softmax ran 5× slower), and their subnormal probabilities would slow every later product
    with them up to 20-fold."""
    floor = logits.amax(-1, keepdim=True).sub_(depth)
    logits.masked_fill_(logits < floor, float("-inf"))


def _attention_forward(qkv, scale, bias, add, H, ws, qk_scale, p, seed):
    B, N, _ = qkv.shape
    nw = N // ws
    q, k, v = _split(qkv, H, ws)  # (B·nw, H, ws, hd)
    extra = None
    if scale is not None:  # cosine: logits = (s·q̂)·k̂ᵀ, q̂ = q/|q|; the head's scale s on the queries
        rq, rk = _inv_norm(q), _inv_norm(k)
        qs, kh = _mul_into(q, rq * scale.to(q.dtype)), _mul_into(k, rk)
        logits = torch.matmul(qs, kh.transpose(-1, -2))
        extra = (qs, kh, rq, rk)
    else:
        logits = torch.matmul(_mul_into(q, qk_scale), k.transpose(-1, -2))
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    if add is not None:
        tail = logits.view(B, nw, H, ws, ws)[:, nw - add.shape[0]:]
        tail += add.to(logits.dtype)
        _floor_logits(tail)
    attn = torch.softmax(logits, -1)  # half-precision kernels accumulate in float32
    del logits
    # dropout: a mask of 0 and 1/(1 − p)
    keep = _mask(attn.shape, p, seed, attn.dtype, attn.device, _inv_keep(p, seed)) if p > 0 and seed else None
    dropped = attn if keep is None else attn * keep
    v = v.contiguous()  # once, for this product and the backward pass's
    out = torch.matmul(dropped, v)
    # a list, so that the backward pass can release each intermediate as soon as it is used
    return out.transpose(1, 2).reshape(B, N, -1), [q, k, v, attn, keep, dropped, extra]


def _attention_backward(dout, qkv, scale, bias, H, ws, qk_scale, p, saved, need_scale, need_bias):
    """Gradients of qkv, the logit scale and the bias from the recomputed forward intermediates."""
    B, N, C3 = qkv.shape
    C = C3 // 3
    q, k, v, attn, keep, dropped, extra = saved
    saved.clear()
    do = dout.to(v.dtype).reshape(B * (N // ws), ws, H, C // H).transpose(1, 2).contiguous()
    dv = torch.matmul(dropped.transpose(-1, -2), do)
    del dropped
    da = torch.matmul(do, v.transpose(-1, -2))
    if keep is not None:
        da = da.mul_(keep)
    del keep
    dlogits = torch.ops.aten._softmax_backward_data(da, attn, -1, attn.dtype)
    del da, attn
    dbias = dlogits.sum(0, keepdim=True).to(bias.dtype) if bias is not None and need_bias else None
    dscale = None
    if scale is not None:
        qs, kh, rq, rk = extra
        s = scale.to(qs.dtype)
        g = torch.matmul(dlogits, kh)  # d/d(s·q̂)
        dkh = torch.matmul(dlogits.transpose(-1, -2), qs)
        u = (qs * g).sum(-1, keepdim=True)  # s·(q̂·g)
        if need_scale:  # d/ds = Σ q̂·g = Σ u / s
            dscale = (u.sum((0, 2, 3), dtype=_accurate(u.dtype)).view_as(scale) / scale).to(scale.dtype)
    dqkv = torch.empty_like(qkv)
    dq_, dk_, dv_ = _split(dqkv, H, ws)  # the last products write straight into these
    if scale is not None:
        # through the normalisation d(x/|x|) = (dy − y·(y·dy)) / |x|, with y = q̂ = qs/s, dy = s·g
        torch.mul(g.mul_(s).sub_(qs * (u / s)), rq, out=dq_)
        del g
        torch.mul(dkh.sub_(kh * (kh * dkh).sum(-1, keepdim=True)), rk, out=dk_)
    else:
        torch.mul(torch.matmul(dlogits, k), qk_scale, out=dq_)
        torch.matmul(dlogits.transpose(-1, -2), _mul_into(q, qk_scale), out=dk_)
    dv_.copy_(dv)
    return dqkv, dscale, dbias


def window_attention(x, qkv: torch.nn.Linear, proj: torch.nn.Linear, num_heads, window, *, scale=None,
                     qk_scale=1.0, bias=None, add=None, p=0.0, p_out=0.0, training=False,
                     keep_bytes=KEEP_BYTES):
    """dropout(proj(window attention(qkv(x)))) with the memory-lean backward pass above.

    x: (B, N, C), windows of `window` consecutive tokens. scale: (heads, 1, 1) logit scale for
    cosine attention (None: scaled dot product with `qk_scale`). bias: (1, heads, ws, ws) added to
    every window's logits; add: (m, 1, ws, ws) added to the last m windows of each sequence.
    p: dropout on the attention probabilities, p_out: on the output (training only).
    keep_bytes: the intermediates (qkv, probabilities, masks) are kept for the backward pass when
    they take at most this many bytes, and recomputed there otherwise. Returns (B, N, C) in the
    compute dtype, or in x's dtype when an output dropout is applied (it converts in passing).
    """
    return _Attention.apply(x, qkv.weight, qkv.bias, proj.weight, proj.bias, scale, bias, add, num_heads, window,
                            qk_scale, p, _seed(p, training), p_out, _seed(p_out, training), _compute_dtype(x),
                            keep_bytes)


class _MlpGelu(torch.autograd.Function):
    """x -> dropout(dropout(GELU(x W1ᵀ + b1)) W2ᵀ + b2), keeping x and the pre-activation (and the
    activation and masks when small)."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, p, seed, p_out, seed_out, dtype, keep_bytes):
        in_dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):
            x, w1c, b1c, w2c, b2c = (t.to(dtype) if t is not None else None for t in (x, w1, b1, w2, b2))
            keep = None
            if seed and _penalised(dtype):  # hidden dropout inside the GELU (its 1/(1 − p) in the
                # output mask or the second weight): dropped pre-activations set to −1e30, where GELU
                # and its derivative are exactly 0, so the saved h carries the mask. The product is
                # accumulated onto the bias-or-penalty matrix (no pass of its own for either).
                h = _penalty((*x.shape[:-1], w1c.shape[0]), p, seed, dtype, x.device, base=b1c)
                h.view(-1, h.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), w1c.t())
            else:
                h = F.linear(x, w1c, b1c)
            a = F.gelu(h)
            if seed and not _penalised(dtype):  # float16's range is too small: mask the activation
                keep = _mask(a.shape, p, seed, a.dtype, a.device)
                a = a.mul_(keep)
            sh, so = _inv_keep(p, seed), _inv_keep(p_out, seed_out)
            mask_out = None
            if seed_out:  # output dropout: a mask of 0 and both dropouts' 1/(1 − p), so the bias
                # (not under the hidden dropout) is divided by the hidden one's
                b2c = b2c / sh if b2c is not None and seed else b2c
                y = F.linear(a, w2c, b2c)
                mask_out = _mask(y.shape, p_out, seed_out, y.dtype, y.device, sh * so)
                y = _mul_into(y, mask_out, in_dtype)  # into the caller's dtype in the same pass
            else:  # the hidden dropout's 1/(1 − p), if any, on the second weight
                w2c = w2c * sh if seed else w2c
                y = F.linear(a, w2c, b2c)
        ctx.save_for_backward(x, h, w1c, w2c)
        ctx.cfg = (p, seed, p_out, seed_out, w1.dtype, b1 is not None, b2 is not None, in_dtype)
        kept = (a, keep, mask_out)
        ctx.kept = kept if _small(keep_bytes, kept) else None  # else recomputed
        return y

    @staticmethod
    def backward(ctx, dy):
        x, h, w1, w2 = ctx.saved_tensors
        p, seed, p_out, seed_out, wdtype, has_b1, has_b2, in_dtype = ctx.cfg
        sh, so = _inv_keep(p, seed), _inv_keep(p_out, seed_out)
        with torch.autocast(x.device.type, enabled=False):
            if ctx.kept is not None:
                (a, keep, mask_out), ctx.kept = ctx.kept, None
            else:
                a, keep = F.gelu(h), None  # h carries the hidden dropout when penalised
                if seed and not _penalised(h.dtype):
                    keep = _mask(a.shape, p, seed, a.dtype, a.device)
                    a = a.mul_(keep)
                mask_out = _mask(dy.shape, p_out, seed_out, dy.dtype, dy.device, sh * so) if seed_out else None
            dy = dy.to(h.dtype)
            if seed_out:  # the mask carries both scales; the bias had the hidden one divided out
                dy = dy * mask_out
            del mask_out
            dy2 = dy.reshape(-1, dy.shape[-1])
            dw2 = dy2.t() @ a.reshape(-1, a.shape[-1])
            del a
            dw2 = (dw2.mul_(sh) if seed and not seed_out else dw2).to(wdtype)
            db2 = (dy2.sum(0) / sh if seed_out else dy2.sum(0)).to(wdtype) if has_b2 else None
            da = dy @ w2  # w2 as saved: times the hidden dropout's 1/(1 − p) when there is no output one
            if keep is not None:
                da = da.mul_(keep)
            del keep
            dh = torch.ops.aten.gelu_backward(da, h)
            del da
            dh2 = dh.reshape(-1, dh.shape[-1])
            dw1 = (dh2.t() @ x.reshape(-1, x.shape[-1])).to(wdtype)
            db1 = dh2.sum(0).to(wdtype) if has_b1 else None
            dx = (dh @ w1).to(in_dtype)
        return dx, dw1, db1, dw2, db2, None, None, None, None, None, None


def mlp_gelu(x, fc1, fc2, p=0.0, training=False, p_out=0.0, keep_bytes=KEEP_BYTES):
    """dropout(fc2(dropout(GELU(fc1(x))))), with probabilities p (hidden) and p_out (output),
    keeping x and fc1's output for the backward pass, and the activation and its dropout mask
    when they take at most `keep_bytes` (recomputed otherwise). The result is in the compute
    dtype, or in x's dtype when the output dropout is applied (it converts in passing)."""
    return _MlpGelu.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, p, _seed(p, training),
                          p_out, _seed(p_out, training), _compute_dtype(x), keep_bytes)
