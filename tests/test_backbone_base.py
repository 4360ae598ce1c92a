"""The backbone base (`heal_swin.models.Backbone`): every family is one and checks its constructor
values the same way, gradient checkpointing gives the plain run's gradients in every family, the
checkpoints of every registered variant load as they did before the base existed (a frozen
description of each test build's state_dict and of its outputs under deterministic weights), and
nested pooling is one layer."""

import json
import math
import re
import sys
import zlib
from pathlib import Path

import pytest
import torch

from heal_swin import layers, models

# Written once, from the code before the backbone base (commit def34e7), by running this file:
# `python tests/test_backbone_base.py` adds the variants that are missing and never rewrites one. Where a
# default changed what a build computes, the entry names the old value: s2cnn_digits' outputs were frozen
# on the shared SO(3) grid (`so3_grid="shared"`; the default is "sphere" since issue #27).
FROZEN = Path(__file__).parent / "data" / "backbone_checkpoints.json"
PROBES = 16  # output values compared one by one, evenly spaced over the flattened output


# --------------------------------------------------------------------------- checkpoints


def frozen_state_dict(shapes):
    """Deterministic float64 weights for a {key: shape} description: each tensor drawn from a
    generator seeded by its key, scaled like an initialisation (1/√fan_in; norm scales near 1), so
    that the outputs stay finite and depend on every entry."""
    state = {}
    for key, shape in shapes.items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        t = torch.randn(shape, generator=g, dtype=torch.float64)
        if len(shape) >= 2:
            t /= math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight"):
            t = 1 + 0.1 * t
        else:
            t *= 0.1
        state[key] = t
    return state


def fingerprint(model):
    """The model in float64 and eval mode on a seeded input (B = 1): output shape, sum, root mean
    square and PROBES values."""
    g = torch.Generator().manual_seed(0)
    if hasattr(model, "img_size"):
        shape = (1, model.in_chans, *model.img_size)
    else:
        shape = (1, model.in_chans, len(model.faces) * model.nside ** 2)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = model.double().eval()(x)
    y = out.flatten()
    probes = torch.linspace(0, y.numel() - 1, PROBES).round().long()
    return dict(shape=list(out.shape), sum=y.sum().item(), rms=y.square().mean().sqrt().item(),
                probes=y[probes].tolist())


def _build(entry):
    torch.manual_seed(0)
    return models.create_model(entry["name"], **entry["kwargs"])


def _describe(name):
    kwargs = dict(models.model_info(name).test_kwargs)
    entry = dict(name=name, kwargs=json.loads(json.dumps(kwargs)))  # tuples as lists, as they load
    model = _build(entry)
    entry["state_dict"] = {k: list(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(frozen_state_dict(entry["state_dict"]), strict=True)
    entry["outputs"] = fingerprint(model)
    return entry


def _frozen():
    return json.loads(FROZEN.read_text()) if FROZEN.exists() else {}


@pytest.mark.parametrize("name", sorted(_frozen()))
def test_checkpoints_of_every_variant_still_load(name):
    """The description frozen from the code before the backbone base: the same build takes its
    keys and shapes with strict=True and gives its outputs (float64: only summation order may
    differ between machines)."""
    entry = _frozen()[name]
    model = _build(entry)
    model.load_state_dict(frozen_state_dict(entry["state_dict"]), strict=True)
    got, want = fingerprint(model), entry["outputs"]
    assert got["shape"] == want["shape"]
    scale, pixels = want["rms"], math.prod(want["shape"])
    assert math.isclose(got["rms"], want["rms"], rel_tol=1e-9), (got["rms"], want["rms"])
    assert math.isclose(got["sum"], want["sum"], rel_tol=1e-9, abs_tol=1e-9 * scale * pixels)
    got_probes, want_probes = (torch.tensor(d["probes"], dtype=torch.float64) for d in (got, want))
    torch.testing.assert_close(got_probes, want_probes, rtol=1e-9, atol=1e-9 * scale)


def test_every_registered_variant_has_a_frozen_checkpoint():
    missing = sorted(set(models.list_models()) - set(_frozen()))
    assert not missing, f"no frozen description for {missing}: run `python {Path(__file__).name}`"


# --------------------------------------------------------------------------- one base


def _tiny(name, **extra):
    torch.manual_seed(0)
    return models.create_model(name, **{**models.model_info(name).test_kwargs, **extra})


def _input(model, batch=1):
    g = torch.Generator().manual_seed(1)
    if isinstance(model, models.FlatBackbone):
        return torch.randn(batch, model.in_chans, *model.img_size, generator=g)
    return torch.randn(batch, model.in_chans, len(model.faces) * model.nside ** 2, generator=g)


# one variant of each model class (s2cnn: the all-spectral S2CNN and the hybrid U-Net), at its test size
REPRESENTATIVES = ["heal_swin_tiny", "gauge_cnn_tiny", "chart_cnn_tiny", "s2cnn_tiny", "s2cnn_digits",
                   "swin_unet_flat_tiny", "planar_cnn_1x"]
SPHERE_REPRESENTATIVES = [n for n in REPRESENTATIVES if models.model_info(n).domain == "healpix"]


def test_the_representatives_cover_every_family_and_model_class():
    families = {models.model_info(n).family for n in models.list_models()}
    assert families == {models.model_info(n).family for n in REPRESENTATIVES}
    classes = {type(models.create_model(n, **models.model_info(n).test_kwargs)) for n in models.list_models()}
    assert classes == {type(_tiny(n)) for n in REPRESENTATIVES}


@pytest.mark.parametrize("name", models.list_models())
def test_every_variant_is_a_backbone(name):
    model = _tiny(name)
    domain = models.model_info(name).domain
    assert isinstance(model, models.Backbone)
    assert isinstance(model, models.SphereBackbone if domain == "healpix" else models.FlatBackbone)
    # print(model): the shared values first, then the family's geometry
    text = model.extra_repr()
    assert text.startswith("img_size=" if domain == "flat" else f"nside={model.nside}, faces=")
    assert f"in_chans={model.in_chans}, task=segmentation, out_chans={model.num_classes}" in text
    depth = _tiny(name, task="depth", log_variance=True)
    assert depth.num_classes == depth.head.out_chs == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(in_chans=0), r"in_chans=0 must be a positive integer \(input channels\)"),
    (dict(in_chans=2.5), r"in_chans=2.5 must be a positive integer"),
    (dict(num_classes=0), r"num_classes=0 must be a positive integer \(the segmentation classes\)"),
    (dict(task="detection"), r"task='detection' must be one of \('segmentation', 'depth', 'classification'\)"),
    (dict(log_variance=True), r"log_variance=True needs task='depth'"),
])
@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_every_family_checks_the_shared_values_alike(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _tiny(name, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(nside=12), r"nside=12 must be a power of two"),
    (dict(base_pixels=(3, 1)), r"base_pixels=\[3, 1\] must be distinct faces 0–11 in ascending order"),
])
@pytest.mark.parametrize("name", SPHERE_REPRESENTATIVES)
def test_every_sphere_family_checks_the_grid_alike(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _tiny(name, **kwargs)


@pytest.mark.parametrize("name, kwargs, message", [
    ("gauge_cnn_tiny", dict(widths=(8, 16), depths=(1, 1, 1)),
     r"widths=\(8, 16\) and depths=\(1, 1, 1\) must be non-empty, of equal length, with at least one field"),
    ("gauge_cnn_tiny", dict(nside=2),
     r"nside=2 is too small for 3 stages: the last stage needs nside ≥ 2\^\(stages−1\) = 4"),
    ("s2cnn_tiny", dict(depths=(1, 0)),
     r"depths=\(1, 0\) must be non-empty, of equal length, with at least one channel and one block "
     r"per stage"),
    ("heal_swin_tiny", dict(nside=4),
     r"nside=4 is too small for 3 stages with patch_size=4: the last stage needs nside ≥ "
     r"√patch_size·2\^\(stages−1\) = 8"),
    ("swin_unet_flat_tiny", dict(num_heads=(2, 4)),
     r"num_heads=\(2, 4\) and depths=\(2, 2, 2\) must be non-empty, of equal length, with at least one head"),
    ("swin_unet_flat_tiny", dict(img_size=(32, 0)),
     r"img_size=\(32, 0\) must be a positive integer or a pair \(H, W\) of them"),
])
def test_stage_checks_name_the_values_and_the_rule(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _tiny(name, **kwargs)


# --------------------------------------------------------------------------- gradient checkpointing


def _checkpoint_lists(model):
    return [m for m in model.modules() if isinstance(m, layers.CheckpointList)]


@pytest.mark.parametrize("name", models.list_models())
def test_grad_checkpointing_gives_the_same_gradients(name):
    """Training mode with each variant's own dropout and drop path (the same seed for both runs):
    with `set_grad_checkpointing()` every block of every CheckpointList runs twice (forward, then
    again in the backward pass) and the gradients are those of the plain run."""
    plain = _tiny(name).train()
    checkpointed = _tiny(name).train()
    checkpointed.set_grad_checkpointing()
    lists = _checkpoint_lists(checkpointed)
    assert lists and all(m.grad_checkpointing for m in lists)
    calls = {}
    for block in (b for lst in lists for b in lst):
        # a pre-hook: torch stops a recomputation once it has what the backward pass needs, which
        # may be before the block's end
        block.register_forward_pre_hook(lambda m, args: calls.__setitem__(m, calls.get(m, 0) + 1))
    x = _input(plain, batch=2)
    for model in (plain, checkpointed):
        torch.manual_seed(7)
        model(x).square().mean().backward()
    assert calls and all(n == 2 for n in calls.values()), "a block was not recomputed in the backward pass"
    for (n, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=n)

    checkpointed.set_grad_checkpointing(False)
    assert not any(m.grad_checkpointing for m in lists)
    assert not any(m.grad_checkpointing for m in _checkpoint_lists(_tiny(name)))
    assert all(m.grad_checkpointing for m in _checkpoint_lists(_tiny(name, grad_checkpointing=True)))


def test_grad_checkpointing_runs_each_block_once_in_evaluation():
    model = _tiny("gauge_cnn_tiny", grad_checkpointing=True).eval()
    calls = []
    model.stages[0].blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    model(_input(model)).square().mean().backward()
    assert len(calls) == 1


# --------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_nested_pooling_reads_the_four_children(mode):
    """Coarse pixel p has the NESTED children 4p … 4p + 3; unpooling copies p to them."""
    x = torch.randn(2, 3, 4, 64, dtype=torch.float64)
    pooled = layers.NestedPool(mode)(x)
    reduce = (lambda t: t.mean(-1)) if mode == "mean" else (lambda t: t.amax(-1))
    assert torch.equal(pooled, torch.stack([reduce(x[..., 4 * p:4 * p + 4]) for p in range(16)], dim=-1))
    up = layers.NestedUnpool()(pooled)
    assert up.shape == x.shape and all(torch.equal(up[..., q], pooled[..., q // 4]) for q in range(64))
    assert torch.equal(layers.NestedPool("mean")(up), pooled)
    with pytest.raises(ValueError, match=r"NestedPool: N=6 is not a multiple of 4"):
        layers.NestedPool(mode)(torch.zeros(1, 6))


def test_the_gauge_fields_pool_with_the_shared_layer():
    assert issubclass(layers.FieldPool, layers.NestedPool)
    assert issubclass(layers.FieldUnpool, layers.NestedUnpool)
    with pytest.raises(ValueError, match="FieldPool mode='min' must be 'mean' or 'max'"):
        layers.FieldPool("min")


if __name__ == "__main__":
    frozen = _frozen()
    for name in models.list_models():
        if name not in frozen:
            frozen[name] = _describe(name)
            print("froze", name, file=sys.stderr)
    text = json.dumps(frozen, indent=1, sort_keys=True)
    # a list of numbers on one line: one line per state_dict entry
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m[1].split()) + "]", text)
    FROZEN.write_text(text + "\n")
