"""The backbone base: checkpoints of every registered variant keep loading (a frozen description of
each test build's state_dict and of its outputs under deterministic weights)."""

import json
import math
import re
import sys
import zlib
from pathlib import Path

import pytest
import torch

from heal_swin import models

# Written once, from the code before the backbone base (commit def34e7), by running this file:
# `python tests/test_backbone_base.py` adds the variants that are missing and never rewrites one.
FROZEN = Path(__file__).parent / "data" / "backbone_checkpoints.json"
PROBES = 16  # output values compared one by one, evenly spaced over the flattened output


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
    scale = want["rms"]
    assert math.isclose(got["rms"], want["rms"], rel_tol=1e-9), (got["rms"], want["rms"])
    assert math.isclose(got["sum"], want["sum"], rel_tol=1e-9, abs_tol=1e-9 * scale * math.prod(want["shape"]))
    got_probes, want_probes = (torch.tensor(d["probes"], dtype=torch.float64) for d in (got, want))
    torch.testing.assert_close(got_probes, want_probes, rtol=1e-9, atol=1e-9 * scale)


def test_every_registered_variant_has_a_frozen_checkpoint():
    missing = sorted(set(models.list_models()) - set(_frozen()))
    assert not missing, f"no frozen description for {missing}: run `python {Path(__file__).name}`"


if __name__ == "__main__":
    frozen = _frozen()
    for name in models.list_models():
        if name not in frozen:
            frozen[name] = _describe(name)
            print("froze", name, file=sys.stderr)
    text = json.dumps(frozen, indent=1, sort_keys=True)
    # a list of numbers on one line: one line per state_dict entry
    FROZEN.write_text(re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m[1].split()) + "]", text) + "\n")
