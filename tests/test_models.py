"""Model zoo: every registered variant at tiny size (shape, finiteness, gradients, ONNX), the
HEAL-SWIN geometry options, construction errors, and window attention against a slow reference."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from heal_swin import models
from heal_swin.layers import WindowAttention

FACES_0_7, SPHERE = tuple(range(8)), tuple(range(12))
HEALPIX_MODELS = models.list_models(domain="healpix")


def tiny_kwargs(name, **extra):
    """Each variant at the registered test size (a 2-core CPU runs it in well under a second)."""
    return {**models.model_info(name).test_kwargs, **extra}


def tiny_input(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    if hasattr(model, "img_size"):
        return torch.randn(batch, model.in_chans, *model.img_size, generator=g)
    return torch.randn(batch, model.in_chans, len(model.faces) * model.nside ** 2, generator=g)


def assert_gradients(model, x):
    out = model(x)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without a gradient: {missing}"
    return out


# --------------------------------------------------------------------------- zoo


def test_registry_lists_the_variants():
    names = models.list_models()
    for required in ("heal_swin_tiny", "heal_swin_small", "heal_swin_base", "heal_swin_paper",
                     "swin_unet_flat_tiny", "swin_unet_flat_paper"):
        assert required in names
    assert models.list_models("swin_unet_flat_*") == ["swin_unet_flat_paper", "swin_unet_flat_tiny"]
    assert models.list_models(domain="flat") == ["planar_cnn_1x", "planar_cnn_20x", "planar_cnn_4x",
                                                 "swin_unet_flat_paper", "swin_unet_flat_tiny"]
    assert models.list_models(family="heal_swin") == ["heal_swin_base", "heal_swin_paper", "heal_swin_small",
                                                      "heal_swin_tiny"]
    with pytest.raises(ValueError, match="model='nope' is unknown"):
        models.create_model("nope")
    with pytest.raises(ValueError, match="model='nope' is unknown"):
        models.model_info("nope")


@pytest.mark.parametrize("name", models.list_models())
def test_registry_metadata(name):
    info = models.model_info(name)
    assert info.name == name and info.domain in models.DOMAINS
    assert info.family and models.model_info(name).build.__module__ == f"heal_swin.models.{info.family}"
    geometry = "img_size" if info.domain == "flat" else "nside"
    assert geometry in info.test_kwargs, f"{name}: test_kwargs must fix the resolution ({geometry})"
    model = models.create_model(name, **info.test_kwargs)
    assert hasattr(model, "img_size") == (info.domain == "flat")


def test_register_model_rejects_bad_metadata_and_duplicates():
    with pytest.raises(ValueError, match="domain='cube' must be one of"):
        models.register_model(domain="cube")
    with pytest.raises(ValueError, match="registered twice"):
        models.register_model(family="heal_swin")(models.model_info("heal_swin_tiny").build)


@pytest.mark.parametrize("name", models.list_models())
def test_zoo_forward_backward(name):
    torch.manual_seed(0)
    model = models.create_model(name, in_chans=3, num_classes=5, **tiny_kwargs(name)).eval()
    x = tiny_input(model)
    out = assert_gradients(model, x)
    assert out.shape == (x.shape[0], 5) + tuple(x.shape[2:])
    # checkpoints hold parameters only (index tables and masks are non-persistent buffers)
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}
    for name_, buf in model.named_buffers():
        if "mask" in name_:
            assert buf.dtype in (torch.bool, torch.float32), name_  # never int64


@pytest.mark.parametrize("name", models.list_models())
def test_zoo_forward_features_and_feature_info(name):
    """The backbone surface: channels-first stage maps (finest first, bottleneck last) that
    `feature_info` describes, each the output of the module it names; the decoder and the head
    consume them and give forward's result."""
    model = models.create_model(name, **tiny_kwargs(name)).eval()
    x = tiny_input(model, batch=1)
    produced = {}
    modules = dict(model.named_modules())
    hooks = [modules[fi["module"]].register_forward_hook(lambda m, i, o, k=k: produced.setdefault(k, o))
             for k, fi in enumerate(model.feature_info)]
    with torch.no_grad():
        features = model.forward_features(x)
        decoded = model.forward_decoder(features)
        out = model(x)
    for h in hooks:
        h.remove()
    info = model.feature_info
    assert isinstance(features, list) and len(features) == len(info)
    pixels = x.shape[2:].numel()
    for k, (t, fi) in enumerate(zip(features, info)):
        assert t.shape[:2] == (1, fi["num_chs"])
        if "nside" in fi:
            assert t.shape[2] == len(model.faces) * fi["nside"] ** 2
        else:
            assert tuple(t.shape[2:]) == fi["resolution"]
        assert t.shape[2:].numel() * fi["reduction"] ** 2 == pixels  # a stride along both axes
        made = produced[k]
        if made.shape != t.shape:  # a module inside the backbone may work channels-last
            made = made.movedim(-1, 1)
        torch.testing.assert_close(made, t, rtol=0, atol=0, msg=f"map {k} is not {fi['module']}'s output")
    assert decoded.shape[:2] == (1, model.embed_dim)
    torch.testing.assert_close(model.head(decoded), out, rtol=0, atol=0)


@pytest.mark.parametrize("strategy", ["grid_shift", "ring_shift", "nest_roll", "nest_grid_shift", None])
@pytest.mark.parametrize("faces", [FACES_0_7, SPHERE, (1, 5, 9)], ids=["faces0-7", "sphere", "faces1,5,9"])
@pytest.mark.parametrize("name", models.list_models(family="heal_swin"))
def test_heal_swin_faces_and_shift_strategies(name, faces, strategy):
    if name == "heal_swin_paper" and strategy in ("grid_shift", "nest_grid_shift"):
        pytest.skip("the paper variant keeps the original's windows across faces; grid shifts need "
                    "windows inside a face")
    if strategy == "nest_grid_shift" and faces != FACES_0_7:
        pytest.skip("the original's grid shift exists for faces 0-7 only")
    torch.manual_seed(0)
    model = models.create_model(name, base_pixels=faces, shift_strategy=strategy,
                                **tiny_kwargs(name, drop_path_rate=0.0)).eval()
    x = tiny_input(model, batch=1)
    out = assert_gradients(model, x)
    assert out.shape == (1, model.num_classes, x.shape[2])


def test_depth_head_and_log_variance():
    x = torch.randn(1, 3, 8 * 16 * 16)
    depth = models.create_model("heal_swin_tiny", nside=16, task="depth")
    assert depth(x).shape == (1, 1, x.shape[2])
    var = models.create_model("heal_swin_tiny", nside=16, task="depth", log_variance=True)
    assert var(x).shape == (1, 2, x.shape[2])
    flat = models.create_model("swin_unet_flat_tiny", img_size=(32, 64), task="depth", log_variance=True)
    assert flat(torch.randn(1, 3, 32, 64)).shape == (1, 2, 32, 64)


def test_repr_documents_the_geometry():
    text = repr(models.create_model("heal_swin_tiny", nside=32))
    assert "nside=32, faces=0-7" in text
    assert "nside=16, faces=0-7, tokens=2048, window=16 (4×4), shift=grid_shift (half window)" in text
    assert "nside=4, faces=0-7, tokens=128, window=16 (4×4)" in text
    paper = repr(models.create_model("heal_swin_paper", nside=32))
    assert "shift=ring_shift (4)" in paper and "window=32 (all tokens), shift=none" in paper


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = models.create_model("heal_swin_tiny", nside=16, drop_path_rate=0.0)
    b = models.create_model("heal_swin_tiny", nside=16, drop_path_rate=0.0, grad_checkpointing=True)
    b.load_state_dict(a.state_dict())
    x = tiny_input(a, batch=1)
    for m in (a, b):
        m(x).square().mean().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=n)


def _rel(a, b):
    """Relative RMS error."""
    return ((a.float() - b).norm() / b.norm()).item()


WELL_CONDITIONED = dict(post_norm=False, cosine_attention=False)  # pre-norm, scaled attention


@pytest.mark.parametrize("name, extra", [("heal_swin_tiny", {}), ("heal_swin_paper", {}), ("swin_unet_flat_tiny", {}),
                                         ("heal_swin_tiny", WELL_CONDITIONED),
                                         ("heal_swin_paper", WELL_CONDITIONED)],
                         ids=["tiny", "paper", "flat", "tiny-prenorm", "paper-prenorm"])
def test_bf16_autocast_on_cpu(name, extra):
    """bf16 autocast against fp32, with the tolerance derived from the two formats' precision.

    To first order a network's relative output error is κ·u for unit roundoff u, with κ its
    amplification of rounding. Running it in fp32 against fp64 measures κ = err32 / u32; bf16
    autocast (matrix-product operands rounded to bf16, u16 = 2^-8 = 65536·u32) must then stay
    within κ·u16. Randomly initialised post-norm cosine U-Nets amplify rounding a hundredfold
    (κ ≈ 100–300), pre-norm scaled ones about tenfold, so the bound is tight for the latter;
    the first-order model holds while the bf16 outputs still follow the fp32 ones (relative error
    well below 1), which the test checks too.
    """
    torch.manual_seed(0)
    model = models.create_model(name, **tiny_kwargs(name, **extra)).eval()
    x = tiny_input(model, batch=1)
    with torch.no_grad():
        ref = model(x)
        exact = copy.deepcopy(model).double()(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert torch.isfinite(low).all()
    u32, u16 = 2.0 ** -24, 2.0 ** -8
    kappa = _rel(ref.double(), exact) / u32
    err = _rel(low, ref)
    # The first-order regime: bf16's outputs still follow fp32's. (Not κ·u16 < 1 itself: κ, measured from
    # one fp32 run, is 260 for the post-norm paper variant on an AVX-512 Xeon and below 256 on an EPYC.)
    assert err < 0.5, f"bf16 error {err:.3f}: outputs no longer follow fp32 (κ = {kappa:.0f})"
    assert err <= kappa * u16, (err, kappa * u16)


def _attention_case(dim, windows, n_masked, **kwargs):
    """Seeded: a WindowAttention (2 heads, window 16; a flat bias table is filled at random), an
    input (2, windows·16, dim), and a bool mask (None when n_masked is 0) that lets the tokens of
    one random group attend to each other in the last n_masked windows."""
    torch.manual_seed(0)
    attn = WindowAttention(dim, 2, 16, **kwargs).eval()
    if kwargs.get("rel_pos_bias") == "flat":
        torch.nn.init.normal_(attn.relative_position_bias_table)
    x = torch.randn(2, windows * 16, dim)
    mask = None
    if n_masked:
        labels = torch.randint(0, 3, (n_masked, 16))
        mask = labels[:, :, None] == labels[:, None, :]
    return attn, x, mask


@pytest.mark.parametrize("cosine", [True, False])
def test_bf16_attention_keeps_masks_exact(cosine):
    attn, x, mask = _attention_case(32, 4, 2, cosine=cosine, rel_pos_bias="flat")
    with torch.no_grad():
        ref = attn(x, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = attn(x, mask)
        # a token whose group differs does not leak: perturbing it leaves the others unchanged
        x2 = x.clone()
        w0 = 2 * 16 + torch.nonzero(~mask[0, 0])[0, 0]  # grouped apart from token 0
        x2[:, w0] += 100.0
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low2 = attn(x2, mask)
    assert _rel(low, ref) < 0.02
    same = 2 * 16 + torch.nonzero(mask[0, 0])[:, 0]
    torch.testing.assert_close(low2[:, same], low[:, same])


# --------------------------------------------------------------------------- construction errors


@pytest.mark.parametrize("kwargs,message", [
    (dict(window_size=32), r"window_size=32 must be a power of 4 \(square nested window\)"),
    (dict(patch_size=8), r"patch_size=8 must be a power of 4"),
    (dict(nside=24), r"nside=24 must be a power of two"),
    (dict(nside=4), r"nside=4 is too small for 3 stages with patch_size=4"),
    (dict(base_pixels=(0, 12)), r"must be distinct faces 0–11"),
    (dict(base_pixels=(3, 1)), r"must be distinct faces 0–11 in ascending order"),
    (dict(shift_strategy="spiral"), r"shift_strategy='spiral' must be one of"),
    (dict(num_heads=(3, 4, 8)), r"must be divisible by num_heads\[0\]=3"),
    (dict(depths=(2, 2)), r"must be non-empty, of equal length"),
    (dict(window_span="sequence", nside=16), r"grid_shift' needs windows inside one face"),
    (dict(task="panoptic"), r"task='panoptic' must be one of"),
    (dict(shift_strategy="nest_roll", shift_size=32), r"shift_size=32 must lie in \(0, window=16\]"),
    (dict(rel_pos_bias="cpb_mlp"), r"rel_pos_bias='cpb_mlp' must be one of"),
    (dict(shift_strategy="nest_grid_shift", base_pixels=range(12)), r"needs faces 0–7"),
])
def test_invalid_geometry_fails_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.create_model("heal_swin_tiny", **{"nside": 32, **kwargs})


def test_flat_invalid_geometry():
    with pytest.raises(ValueError, match=r"img_size=\(30, 64\) must be divisible by"):
        models.create_model("swin_unet_flat_tiny", img_size=(30, 64))


def test_wrong_input_shape_names_expected_and_actual():
    model = models.create_model("heal_swin_tiny", nside=16)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 3, 2048\).*got \(1, 3, 3072\)"):
        model(torch.randn(1, 3, 3072))


# --------------------------------------------------------------------------- attention reference


def _slow_attention(attn, x, mask):
    """Windows one by one, explicit softmax: what the fast path must compute."""
    B, N, C = x.shape
    ws, H = attn.window_size, attn.num_heads
    nw = N // ws
    out = torch.empty_like(x)
    bias = None
    if attn.rel_pos_bias == "flat":
        bias = attn.relative_position_bias_table[attn.relative_position_index]
        bias = bias.view(ws, ws, H).permute(2, 0, 1)
    elif attn.rel_pos_bias == "log_cpb":  # 16·sigmoid(MLP(log-spaced offset)), token pair by token pair
        from heal_swin.grid import window_layout
        row, col = (torch.tensor(a, dtype=torch.float32) for a in window_layout(ws))
        side = math.isqrt(ws)

        def f(d):
            d = d * 8.0 / (side - 1)
            return torch.sign(d) * torch.log2(1 + d.abs()) / 3

        offsets = torch.stack([f(row[:, None] - row[None, :]), f(col[:, None] - col[None, :])], -1)
        bias = (16 * torch.sigmoid(attn.cpb_mlp(offsets))).permute(2, 0, 1)
    for b in range(B):
        for w in range(nw):
            t = x[b, w * ws:(w + 1) * ws]
            q, k, v = attn.qkv(t).view(ws, 3, H, C // H).permute(1, 2, 0, 3)
            if attn.cosine:
                logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
                logits = logits * torch.clamp(attn.logit_scale, max=math.log(100)).exp()
            else:
                logits = (q * attn.scale) @ k.transpose(-1, -2)
            if bias is not None:
                logits = logits + bias
            m = nw - (0 if mask is None else mask.shape[0])
            if mask is not None and w >= m:
                logits = logits.masked_fill(~mask[w - m], attn.mask_value)
            o = logits.softmax(-1) @ v
            out[b, w * ws:(w + 1) * ws] = attn.proj(o.transpose(0, 1).reshape(ws, C))
    return out


@pytest.mark.parametrize("cosine", [True, False])
@pytest.mark.parametrize("bias", [None, "flat", "log_cpb"])
@pytest.mark.parametrize("n_masked", [0, 2, 6])
def test_window_attention_matches_slow_reference(cosine, bias, n_masked):
    attn, x, mask = _attention_case(16, 6, n_masked, cosine=cosine, rel_pos_bias=bias, mask_value=-100.0)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask), _slow_attention(attn, x, mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cosine", [True, False])
def test_training_path_equals_inference_path(cosine):
    """With gradients the attention is written out; without, it runs in SDPA: same numbers."""
    attn, x, mask = _attention_case(16, 5, 3, cosine=cosine, rel_pos_bias="flat")
    with torch.no_grad():
        fast = attn(x, mask)
    explicit = attn(x.requires_grad_(), mask)
    torch.testing.assert_close(explicit.detach(), fast, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- fused kernels vs plain autograd

NO_DROPOUT = dict(drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)


def _outputs_and_grads(module, *inputs):
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    module.zero_grad()
    out = module(*inputs)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    grads = {n: p.grad for n, p in module.named_parameters()}
    return out.detach(), inputs[0].grad, grads


def _assert_same(a, b, tol=1e-10):
    """Outputs, input gradients and every parameter's gradient agree to `tol` relative to each
    tensor's largest entry (random post-norm networks have gradients of 1e6 at init)."""
    (out_a, dx_a, g_a), (out_b, dx_b, g_b) = a, b
    assert g_a.keys() == g_b.keys()
    pairs = [("output", out_a, out_b), ("input gradient", dx_a, dx_b)] + [(n, g_a[n], g_b[n]) for n in g_a]
    for n, x, y in pairs:
        assert x is not None and y is not None, n
        torch.testing.assert_close(x, y, rtol=0, atol=tol * y.abs().max().item(), msg=n)


class _Masked(torch.nn.Module):
    """attn(x, mask) as a one-input module."""

    def __init__(self, attn, mask):
        super().__init__()
        self.attn, self.mask = attn, mask

    def forward(self, x):
        return self.attn(x, self.mask)


@pytest.mark.parametrize("cosine", [True, False])
@pytest.mark.parametrize("bias", [None, "flat", "log_cpb"])
def test_fused_attention_equals_plain_autograd_float64(cosine, bias):
    attn, x, mask = _attention_case(16, 5, 2, cosine=cosine, rel_pos_bias=bias)
    fused = _Masked(attn.double().train(), mask)
    plain = copy.deepcopy(fused)
    plain.attn.fused = False
    _assert_same(_outputs_and_grads(fused, x.double()), _outputs_and_grads(plain, x.double()))


def test_fused_mlp_equals_plain_autograd_float64():
    from heal_swin.layers import Mlp

    torch.manual_seed(0)
    mlp = Mlp(16, 48).double().train()
    plain = copy.deepcopy(mlp)
    plain.fused = False
    assert mlp.runs_fused and not plain.runs_fused
    x = torch.randn(2, 40, 16, dtype=torch.float64)
    _assert_same(_outputs_and_grads(mlp, x), _outputs_and_grads(plain, x))


@pytest.mark.parametrize("name", models.list_models(family="heal_swin"))
def test_fused_model_equals_plain_autograd_float64(name):
    """Every model that uses the fused kernels: outputs and all gradients as with plain autograd."""
    torch.manual_seed(0)
    fused = models.create_model(name, **tiny_kwargs(name, **NO_DROPOUT)).double().train()
    plain = models.create_model(name, **tiny_kwargs(name, **NO_DROPOUT), fused=False).double().train()
    plain.load_state_dict(fused.state_dict())
    assert all(m.fused for m in fused.modules() if hasattr(m, "fused"))
    assert not any(m.fused for m in plain.modules() if hasattr(m, "fused"))
    x = tiny_input(fused, batch=1).double()
    _assert_same(_outputs_and_grads(fused, x), _outputs_and_grads(plain, x))


def test_mlp_activation_takes_effect_in_training():
    from heal_swin.layers import Mlp

    torch.manual_seed(0)
    mlp = Mlp(8, 16, act_layer=torch.nn.ReLU).train()
    assert not mlp.runs_fused
    x = torch.randn(4, 8, requires_grad=True)
    y = mlp(x)
    torch.testing.assert_close(y, mlp.fc2(torch.relu(mlp.fc1(x))))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_dropout_statistics_and_gradient():
    from heal_swin.layers import dropout
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, requires_grad=True)
    y = dropout(x, 0.1, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 2e-3
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.9))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # the same mask, the same scale
    torch.manual_seed(0)
    assert torch.equal(dropout(torch.ones(1000, 1000), 0.1) != 0, kept)  # seeded: reproducible
    assert dropout(x, 0.1, training=False) is x

@pytest.mark.parametrize("numel", [1, 4097, 4 * (1 << 16) + 3], ids=["one", "one-piece", "two-pieces"])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.97, 1.0])
def test_dropout_masks_agree_across_dtypes(numel, p):
    """The 16-bit floats take an integer shortcut: the same seed gives the same mask (and
    multiplier, and penalty) in every dtype, equal to thresholding the raw 16-bit draws, with keep
    rate 1 − p."""
    from heal_swin.layers._rng import _bits, _mask, _penalty
    raw = torch.cat(_bits(numel, 321, torch.device("cpu")))
    expected = raw.int() >= int(round(p * 65536)) - 32768
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        mask = _mask((numel,), p, 321, dtype, "cpu")
        assert mask.dtype == dtype
        assert torch.equal(mask, expected.to(dtype)), dtype
        scale = torch.tensor(1 / 0.7, dtype=dtype)  # a multiplier with the dropout scale in it
        assert torch.equal(_mask((numel,), p, 321, dtype, "cpu", 1 / 0.7), expected.to(dtype) * scale)
        if dtype != torch.float16:  # the penalty: 0 where kept, −1e30 where dropped
            penalty = _penalty((numel,), p, 321, dtype, "cpu")
            assert torch.equal(penalty == 0, expected) and (penalty[~expected] == -1e30).all()
    if numel > 10000:
        assert abs(expected.double().mean().item() - (1 - p)) < 5e-3
        threads = torch.get_num_threads()
        try:  # with one thread the two halves are drawn one after the other: the same mask
            torch.set_num_threads(1)
            assert torch.equal(_mask((numel,), p, 321, torch.bfloat16, "cpu"), expected.to(torch.bfloat16))
        finally:
            torch.set_num_threads(threads)



# --------------------------------------------------------------------------- hand-written backward passes


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [3, 21846], ids=["one-piece", "two-pieces"])
def test_penalty_with_a_bias_row(dtype, rows):
    """The penalty with a bias: the bias where `_mask` keeps an element, −1e30 where it drops it,
    whatever the phase of chunks and halves in the rows (12 columns do not divide them)."""
    from heal_swin.layers._rng import _mask, _penalty
    bias = torch.randn(12).to(dtype)
    out = _penalty((rows, 12), 0.3, 77, dtype, "cpu", base=bias)
    kept = _mask((rows, 12), 0.3, 77, torch.float32, "cpu") == 1
    assert torch.equal(out[kept], bias.expand(rows, 12)[kept])
    assert (out[~kept] == torch.tensor(-1e30, dtype=dtype)).all()
    assert 0.25 < (~kept).float().mean() < 0.35


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_torch_mask_path_matches_numpy_path(dtype, monkeypatch):
    """Devices other than the CPU build masks with torch operations from the same draws: forced
    on the CPU, that path gives the numpy path's masks, multipliers and penalties."""
    from heal_swin.layers import _rng
    shape, bias = (300, 12), torch.randn(12).to(dtype)
    fast = [_rng._mask(shape, 0.3, 9, dtype, "cpu", 1 / 0.7), _rng._penalty(shape, 0.3, 9, dtype, "cpu"),
            _rng._penalty(shape, 0.3, 9, dtype, "cpu", base=bias)]
    monkeypatch.setattr(_rng, "_NUMPY", {})
    slow = [_rng._mask(shape, 0.3, 9, dtype, "cpu", 1 / 0.7), _rng._penalty(shape, 0.3, 9, dtype, "cpu"),
            _rng._penalty(shape, 0.3, 9, dtype, "cpu", base=bias)]
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cosine", [True, False])
@pytest.mark.parametrize("p, p_out", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.25), (0.3, 0.25)])
@pytest.mark.parametrize("keep_bytes", [0, 1 << 30], ids=["recompute", "keep"])
def test_fused_attention_gradcheck(cosine, p, p_out, keep_bytes):
    from heal_swin.layers._fused import _Attention
    from heal_swin.layers._rng import _mask
    torch.manual_seed(0)
    B, nw, ws, H, hd = 2, 3, 16, 2, 3
    C, dt = H * hd, torch.float64
    x = torch.randn(B, nw * ws, C, dtype=dt, requires_grad=True)
    w_qkv, b_qkv = torch.randn(3 * C, C, dtype=dt) * 0.5, torch.randn(3 * C, dtype=dt)
    w_proj, b_proj = torch.randn(C, C, dtype=dt), torch.randn(C, dtype=dt)
    weights = [t.requires_grad_() for t in (w_qkv, b_qkv, w_proj, b_proj)]
    scale = (torch.rand(H, 1, 1, dtype=dt) * 5 + 1).requires_grad_() if cosine else None
    bias = torch.randn(1, H, ws, ws, dtype=dt, requires_grad=True)
    labels = torch.randint(0, 3, (2, ws))
    add = torch.where(labels[:, :, None] == labels[:, None, :], 0.0, -100.0).to(dt).unsqueeze(1)

    def f(x, w_qkv, b_qkv, w_proj, b_proj, scale, bias, out_seed=77 if p_out else 0):  # fixed seeds: fixed masks
        return _Attention.apply(x, w_qkv, b_qkv, w_proj, b_proj, scale, bias, add, H, ws, 0.3, p,
                                1234 if p else 0, p_out, out_seed, dt, keep_bytes)

    assert torch.autograd.gradcheck(f, (x, *weights, scale, bias), eps=1e-6, atol=1e-5)
    if p_out:  # output dropout = the undropped output, masked and scaled
        y = f(x, *weights, scale, bias)
        y0 = f(x, *weights, scale, bias, out_seed=0)
        keep = _mask(y.shape, p_out, 77, dt, "cpu")
        assert 0 < keep.sum() < keep.numel()
        torch.testing.assert_close(y, y0 * keep / (1 - p_out))


@pytest.mark.parametrize("p, p_out", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.2), (0.3, 0.2)])
@pytest.mark.parametrize("keep_bytes", [0, 1 << 30], ids=["recompute", "keep"])
def test_fused_mlp_gradcheck(p, p_out, keep_bytes):
    from heal_swin.layers._fused import _MlpGelu
    from heal_swin.layers._rng import _mask
    torch.manual_seed(0)
    dt = torch.float64
    x = torch.randn(2, 10, 6, dtype=dt, requires_grad=True)
    params = [torch.randn(24, 6, dtype=dt), torch.randn(24, dtype=dt), torch.randn(6, 24, dtype=dt),
              torch.randn(6, dtype=dt)]
    params = [t.requires_grad_() for t in params]

    def f(x, w1, b1, w2, b2, out_seed=5 if p_out else 0):
        return _MlpGelu.apply(x, w1, b1, w2, b2, p, 99 if p else 0, p_out, out_seed, dt, keep_bytes)

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5)
    if p_out:  # output dropout = the undropped output, masked and scaled
        y, y0 = f(x, *params), f(x, *params, out_seed=0)
        torch.testing.assert_close(y, y0 * _mask(y.shape, p_out, 5, dt, "cpu") / (1 - p_out))
    if p:  # hidden dropout as the composition of plain operations
        h = torch.nn.functional.gelu(x @ params[0].T + params[1])
        h = h * _mask(h.shape, p, 99, dt, "cpu") / (1 - p)
        torch.testing.assert_close(f(x, *params, out_seed=0), h @ params[2].T + params[3])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_fused_mlp_dropout_in_compute_dtypes(dtype):
    """Both dropouts in the compute dtype (bfloat16/float32: hidden dropout as a −1e30 penalty
    before GELU; float16: as a mask after it) against plain float64 operations with the same
    masks: outputs and all gradients."""
    from heal_swin.layers._fused import _MlpGelu
    from heal_swin.layers._rng import _mask
    torch.manual_seed(0)
    p, p_out, rows = 0.3, 0.2, 64
    x = torch.randn(1, rows, 16, dtype=torch.float64)
    params = [torch.randn(64, 16) / 4, torch.randn(64) / 4, torch.randn(16, 64) / 8, torch.randn(16) / 4]
    params = [t.to(torch.float64) for t in params]

    def leaves():
        return [t.clone().requires_grad_() for t in (x, *params)]

    fused = leaves()
    y = _MlpGelu.apply(*fused, p, 99, p_out, 5, dtype, 1 << 30)
    assert y.dtype == torch.float64  # the output dropout writes the caller's dtype
    g = torch.randn(y.shape, dtype=torch.float64)
    y.backward(g)

    ref = leaves()
    xr, w1, b1, w2, b2 = ref
    a = torch.nn.functional.gelu(xr @ w1.T + b1) * _mask((1, rows, 64), p, 99, torch.float64, "cpu") / (1 - p)
    yr = (a @ w2.T + b2) * _mask((1, rows, 16), p_out, 5, torch.float64, "cpu") / (1 - p_out)
    yr.backward(g)
    tol = 1e-2 if dtype != torch.float32 else 1e-5  # relative to the norm: a wrong mask gives ~0.3
    for mine, theirs in [(y.double(), yr)] + [(a.grad, b.grad) for a, b in zip(fused, ref)]:
        assert ((mine - theirs).norm() / theirs.norm()).item() < tol


def test_training_step_with_dropout_is_reproducible():
    """Dropout, attention dropout and drop path active: seeded runs give identical gradients."""
    model = models.create_model("heal_swin_paper", **tiny_kwargs("heal_swin_paper")).train()
    x = tiny_input(model, batch=2)
    grads = []
    for _ in range(2):
        torch.manual_seed(7)
        model.zero_grad()
        model(x).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.manual_seed(8)
    model.zero_grad()
    model(x).square().mean().backward()
    assert any(not torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads[0]))


# --------------------------------------------------------------------------- ONNX


def _onnx_roundtrip(model, x):
    ort = pytest.importorskip("onnxruntime")
    program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    sess = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    return got, ref


# Every registered variant's export, with a dynamic batch and onnxruntime parity, is tested in
# tests/test_export.py::test_every_model_exports_with_a_dynamic_batch; here a tight check on
# well-conditioned configurations.


@pytest.mark.parametrize("strategy", ["grid_shift", "ring_shift"])
def test_onnx_export_is_exact_when_well_conditioned(strategy):
    torch.manual_seed(0)
    model = models.create_model("heal_swin_tiny", nside=16, base_pixels=(1, 5, 9), shift_strategy=strategy,
                                post_norm=False, cosine_attention=False).eval()
    got, ref = _onnx_roundtrip(model, tiny_input(model, batch=1))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_fused_attention_flushes_subnormal_probabilities():
    """The original's −100 masks put logits where exp() is slow and probabilities (≈ e^-100) are
    subnormal and slow every later product; the training path sets logits more than 78 below
    their row's maximum to −inf (probabilities below 1e-34 become 0) and keeps the rest."""
    from heal_swin.layers._fused import _attention_forward
    torch.manual_seed(0)
    B, nw, ws, H, hd = 1, 3, 16, 2, 4
    qkv = torch.randn(B, nw * ws, 3 * H * hd)
    labels = torch.randint(0, 2, (2, ws))
    add = torch.where(labels[:, :, None] == labels[:, None, :], 0.0, -100.0).unsqueeze(1)
    _, saved = _attention_forward(qkv, None, None, add, H, ws, 0.5, 0.0, 0)
    attn = saved[3]
    tiny = torch.finfo(torch.float32).tiny
    assert not ((attn > 0) & (attn < tiny)).any()
    masked = (add < 0).expand(2, H, ws, ws)
    assert (attn.view(B, nw, H, ws, ws)[0, 1:][masked] == 0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(B * nw, H, ws))
    q, k, _ = qkv.double().view(nw, ws, 3, H, hd).permute(2, 0, 3, 1, 4)
    logits = 0.5 * q @ k.transpose(-1, -2)
    logits[1:] += add.double()
    torch.testing.assert_close(attn.double(), torch.softmax(logits, -1), rtol=1e-5, atol=1e-33)


def test_drop_path_residual_in_one_pass():
    """DropPath.add_to(x, b) is x + DropPath(b): same draws under the same seed, same gradients;
    in eval mode, a plain sum."""
    from heal_swin.layers import DropPath
    dp = DropPath(0.5).train()
    x, b = torch.randn(16, 5, 3, requires_grad=True), torch.randn(16, 5, 3, requires_grad=True)
    torch.manual_seed(3)
    fused = dp.add_to(x, b)
    torch.manual_seed(3)
    plain = x + dp(b)
    assert torch.equal(fused, plain)
    assert 0 < (plain == x).all(-1).all(-1).sum() < 16  # some samples' branches dropped, not all
    g = torch.randn_like(fused)
    torch.testing.assert_close(torch.autograd.grad(fused, (x, b), g), torch.autograd.grad(plain, (x, b), g))
    assert torch.equal(dp.eval().add_to(x, b), x + b)


def test_token_permutation_backward_gathers_with_the_inverse():
    from heal_swin.models.heal_swin import _permute_tokens
    torch.manual_seed(0)
    index = torch.randperm(24)
    inverse = torch.argsort(index)
    x = torch.randn(2, 24, 3, dtype=torch.float64, requires_grad=True)
    assert torch.equal(_permute_tokens(x, index, inverse), x[:, index])
    assert torch.autograd.gradcheck(lambda t: _permute_tokens(t, index, inverse), (x,))


@pytest.mark.parametrize("kind", ["flat", "log_cpb"])
@pytest.mark.parametrize("window, table_window", [(16, 16), (16, 64)])
def test_bias_gather_matches_plain_indexing(kind, window, table_window):
    """The bias is gathered along the table's transpose (a faster backward pass): values and the
    table's (or the MLP's) gradient equal plain indexing's, also when a smaller window reads the
    table's corner."""
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, window, rel_pos_bias=kind, bias_window_size=table_window).double()
    for p in attn.parameters():
        p.data.normal_()
    params = [p for n, p in attn.named_parameters() if "relative_position" in n or "cpb" in n]
    fast = attn._bias(torch.float64)
    g = torch.randn_like(fast)
    grads = torch.autograd.grad(fast, params, g)
    table = attn.relative_position_bias_table if kind == "flat" else \
        16 * torch.sigmoid(attn.cpb_mlp(attn.cpb_coords))
    side = int(window ** 0.5)
    plain = table[attn.relative_position_index].view(side * side, side * side, 2).permute(2, 0, 1).unsqueeze(0)
    torch.testing.assert_close(fast, plain)
    for mine, theirs in zip(grads, torch.autograd.grad(plain, params, g)):
        torch.testing.assert_close(mine, theirs)


def test_log_cpb_offsets_follow_the_bias_index():
    from heal_swin.grid._windows import relative_position_index, window_layout
    from heal_swin.layers import log_offsets
    coords = log_offsets(8)
    assert coords.shape == (15 * 15, 2)
    torch.testing.assert_close(coords.abs().max(), torch.log2(torch.tensor(9.0)) / 3)
    assert torch.equal(coords[112], torch.zeros(2))  # the centre row: offset (0, 0)
    row, col = window_layout(64)
    index = relative_position_index(64)
    i, j = 5, 58  # a pair of tokens: its row of the table holds the signs of its offsets
    dr, dc = row[i] - row[j], col[i] - col[j]
    assert torch.equal(torch.sign(coords[index[i, j]]), torch.sign(torch.tensor([dr, dc], dtype=torch.float32)))
    torch.testing.assert_close(log_offsets(8)[index[i, j]].abs().max(),
                               torch.log2(torch.tensor(1 + 8 * max(abs(dr), abs(dc)) / 7, dtype=torch.float32)) / 3)


def test_log_cpb_model_trains_and_exports():
    torch.manual_seed(0)
    model = models.create_model("heal_swin_tiny", nside=16, base_pixels=range(8), rel_pos_bias="log_cpb")
    assert "rel_pos_bias=log_cpb" in repr(model)
    assert not any("cpb_coords" in k or "relative_position_index" in k for k in model.state_dict())
    x = tiny_input(model, batch=2)
    model.train()
    model(x).square().mean().backward()
    cpb = [p for n, p in model.named_parameters() if "cpb_mlp" in n]
    assert cpb and all(p.grad is not None and p.grad.abs().sum() > 0 for p in cpb)
    model.eval()
    got, ref = _onnx_roundtrip(model, x[:1])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
