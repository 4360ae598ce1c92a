"""HEAL-SWIN's `symmetric=True` (issue #16): exactly equivariant to the grid's 90° polar turns in
float64 on the sphere and on faces 0–7, where the default grid shift is not; the layout tables
behind it (`grid.symmetric_grid_shift`, `grid.polar_turn`); same parameters, fused kernels and
ONNX export."""

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from heal_swin import grid, models
from heal_swin.equivariance import assert_equivariant, equivariance_error, rotation_permutation, rz
from heal_swin.models import heal_swin as hs

from equivariance import FACE_SETS, FACES_0_7, SPHERE

NO_DROPOUT = dict(drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)


def _model(name="heal_swin_tiny", seed=0, **kwargs):
    """A float64 eval model at the registered test size (nside 16), with random bias tables and
    logit scales (they start at 0 and log 10, under which a turned bias would go unnoticed)."""
    torch.manual_seed(seed)
    model = models.create_model(name, **{**models.model_info(name).test_kwargs, **NO_DROPOUT, **kwargs})
    model = model.double().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "relative_position_bias_table" in n or "cpb_mlp" in n:
                p.normal_(0.0, 1.0)
            elif "logit_scale" in n:
                p.uniform_(0.5, 3.0)
    return model


def _turn_check(model, turns=1):
    """(f, act_in, act_out, x) for `assert_equivariant`: the turn acts alike on input and output."""
    index = rotation_permutation(model.nside, rz(turns * math.pi / 2), model.faces)
    x = torch.randn(1, model.in_chans, len(model.faces) * model.nside ** 2, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    act = lambda t: t[..., index]  # noqa: E731
    return model, act, act, x


# --------------------------------------------------------------------------- tables


@FACE_SETS
@pytest.mark.parametrize("turns", [1, 2, 3])
def test_polar_turn_is_the_rotation_about_the_axis(faces, turns):
    want = rotation_permutation(4, rz(turns * math.pi / 2), faces).numpy()
    np.testing.assert_array_equal(grid.polar_turn(4, faces, turns), want)


def test_polar_turn_needs_whole_rings():
    with pytest.raises(ValueError, match="each ring's four faces"):
        grid.polar_turn(4, (0, 1, 4))


def _groups(table, ws):
    """(window, label) -> [(token, row, col)], the layout position of each token in its window."""
    row, col = grid.window_layout(ws)
    groups = defaultdict(list)
    for s, (t, lab) in enumerate(zip(table.index, table.labels)):
        groups[(s // ws, int(lab))].append((int(t), int(row[s % ws]), int(col[s % ws])))
    return groups


def _turn_defects(nside, faces, ws, table):
    """The attention groups that the polar turn does not map onto a group with the same offsets
    between its tokens: [(faces of the group, 'self-mapped' or 'other')]."""
    moves_to = grid.invert_permutation(grid.polar_turn(nside, faces))
    groups = _groups(table, ws)
    where = {t: (key, r, c) for key, items in groups.items() for t, r, c in items}
    defects = []
    for key, items in groups.items():
        images = [where[moves_to[t]] for t, _, _ in items]
        target = {k for k, _, _ in images}
        shifts = {(r2 - r, c2 - c) for (_, r, c), (_, r2, c2) in zip(items, images)}
        if len(target) != 1 or len(groups[target.pop()]) != len(items) or len(shifts) != 1:
            kind = "self-mapped" if all(k == key for k, _, _ in images) else "other"
            defects.append((sorted({faces[t // nside ** 2] for t, _, _ in items}), kind))
    return defects


@FACE_SETS
@pytest.mark.parametrize("nside,ws", [(8, 16), (4, 16), (2, 4), (8, 4)])
def test_symmetric_grid_shift_turns_every_window_but_the_poles_rigidly(faces, nside, ws):
    """Every attention group (a window, or a labelled piece of one) maps under the turn onto a
    group with the same 2-D offsets; only the complete pole windows map onto themselves, turned.
    The default grid shift breaks this at the seams 3|0 and 11|8 and in its packed pieces."""
    table = grid.symmetric_grid_shift(nside, faces, ws)
    grid.check_permutation(table.index, table.inverse, "symmetric_grid_shift")
    poles = [[0, 1, 2, 3]] + ([[8, 9, 10, 11]] if faces == SPHERE else [])
    assert _turn_defects(nside, faces, ws, table) == [(p, "self-mapped") for p in poles]
    default = grid.grid_shift(nside, faces, ws)
    assert any(kind == "other" for _, kind in _turn_defects(nside, faces, ws, default))


@pytest.mark.parametrize("faces", [SPHERE, FACES_0_7, (0,), (4, 5), (1, 5, 9)])
def test_symmetric_grid_shift_has_the_windows_of_grid_shift(faces):
    """The same windows as sets of tokens, only laid out and packed differently."""
    a, b = grid.grid_shift(8, faces, 16), grid.symmetric_grid_shift(8, faces, 16)
    complete = lambda t: {frozenset(w) for w, lab in zip(t.index.reshape(-1, 16), t.labels.reshape(-1, 16))
                          if (lab == lab[0]).all()}
    assert complete(a) == complete(b)
    assert (a.labels == 0).sum() == (b.labels == 0).sum()


# --------------------------------------------------------------------------- the model


@FACE_SETS
def test_symmetric_heal_swin_is_equivariant_to_polar_turns(faces):
    model = _model(base_pixels=faces, symmetric=True)
    for turns in (1, 2, 3):
        assert_equivariant(*_turn_check(model, turns), tol=1e-10)


@FACE_SETS
def test_default_grid_shift_is_not_equivariant_to_polar_turns(faces):
    """The check can fail: the default layout breaks the turn at O(1)."""
    assert equivariance_error(*_turn_check(_model(base_pixels=faces))) > 1e-3


@FACE_SETS
def test_the_pole_windows_need_the_averaged_bias(faces, monkeypatch):
    """The symmetric table alone is not enough: with the plain bias in the pole windows the
    error is O(1)."""
    monkeypatch.setattr(hs, "turned_windows", lambda geometry, shifted: (0, None))
    assert equivariance_error(*_turn_check(_model(base_pixels=faces, symmetric=True))) > 1e-3


@FACE_SETS
def test_symmetric_global_stages_and_log_cpb_bias(faces):
    """A four-stage variant whose last stages attend globally (one window, the turn permutes its
    tokens), with the continuous bias, scaled attention and pre-norm."""
    model = _model("heal_swin_small", base_pixels=faces, symmetric=True, rel_pos_bias="log_cpb",
                   cosine_attention=False, post_norm=False)
    assert any(g.window == g.tokens for g in model.geometries)
    assert_equivariant(*_turn_check(model), tol=1e-10)


def test_symmetric_has_the_same_parameters():
    default, symmetric = _model(), _model(symmetric=True)
    assert [(n, p.shape) for n, p in default.named_parameters()] == \
        [(n, p.shape) for n, p in symmetric.named_parameters()]
    symmetric.load_state_dict(default.state_dict())
    assert "symmetric=True" in repr(symmetric) and "turned=1" in repr(symmetric)


def test_symmetric_fused_training_equals_plain_autograd_float64():
    """The pole windows' separate call with the averaged bias, through the fused kernels: outputs
    and every gradient as with plain autograd, and the bias table learns from them."""
    torch.manual_seed(0)
    kwargs = {**models.model_info("heal_swin_tiny").test_kwargs, **NO_DROPOUT, "symmetric": True,
              "base_pixels": SPHERE}
    fused = models.create_model("heal_swin_tiny", **kwargs).double().train()
    plain = models.create_model("heal_swin_tiny", **kwargs, fused=False).double().train()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(1, 3, 12 * 16 ** 2, dtype=torch.float64)
    grads = []
    for model in (fused, plain):
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([out.detach(), xi.grad] + [p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10 * b.abs().max().item())
    turned = [b for b in fused.modules() if isinstance(b, hs.HealSwinBlock) and b.turned_tokens]
    assert turned and all(b.attn.relative_position_bias_table.grad.abs().sum() > 0 for b in turned)


@pytest.mark.parametrize("kwargs,message", [
    (dict(shift_strategy="nest_roll"), "symmetric=True needs shift_strategy"),
    (dict(shift_strategy="ring_shift"), "symmetric=True needs shift_strategy"),
    (dict(window_span="sequence"), "window_span='face'"),
    (dict(ape=True), "ape=False"),
    (dict(base_pixels=(0, 1, 4)), "each ring's four faces"),
])
def test_symmetric_rejects_layouts_that_cannot_be(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.create_model("heal_swin_tiny", nside=16, symmetric=True, **kwargs)


@pytest.mark.slow
def test_symmetric_model_exports_to_onnx():
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = models.create_model("heal_swin_tiny", nside=16, base_pixels=FACES_0_7, symmetric=True,
                                post_norm=False, cosine_attention=False).eval()
    x = torch.randn(1, 3, 8 * 16 ** 2)
    program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    sess = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-4)
