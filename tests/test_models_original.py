"""Compatibility with the original HEAL-SWIN implementation: goldens, checkpoint loading, the
paper architecture."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from heal_swin import models
from heal_swin import grid as W
from heal_swin.models.heal_swin import checkpoint_filter_fn

# Produced by the original implementation (see ../shared/reference/README.md), shipped with the tests
GOLDENS = Path(__file__).parent / "data"
NAMES = ["paperlike_ring", "nestroll_v1"]


def _golden(name):
    d = np.load(GOLDENS / f"{name}.npz")
    cfg = json.loads(str(d["config"]))
    sd = {k[3:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("sd/")}
    return cfg, sd, torch.from_numpy(d["x"]), torch.from_numpy(d["y"])


def _load(cfg, source):
    data = cfg["data"]
    return models.load_original(source, cfg["model"], data["nside"], data["base_pix"], data["f_out"]).eval()


@pytest.mark.parametrize("name", NAMES)
def test_golden_parity(name):
    cfg, sd, x, y = _golden(name)
    model = _load(cfg, sd)
    with torch.no_grad():
        out = model(x)
    assert out.shape == y.shape
    diff = (out - y).abs().max().item()
    assert diff <= 1e-4, f"{name}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_golden_masks_and_bias_index_match_our_tables(name):
    """The original's derived buffers equal what our table builders produce."""
    cfg, sd, _, _ = _golden(name)
    m, base_pix = cfg["model"], cfg["data"]["base_pix"]
    ws = m["window_size"]
    seen = 0
    for key, buf in sd.items():
        if key.endswith("relative_position_index"):
            np.testing.assert_array_equal(W.relative_position_index(ws), buf.numpy())
        if key.endswith("attn_mask"):
            n = buf.shape[0] * ws
            nside = int(round((n / base_pix) ** 0.5))
            if m["shift_strategy"] == "ring_shift":
                table = W.ring_shift(nside, tuple(range(base_pix)), m["shift_size"])
            else:
                table = W.nest_roll_shift(n, ws, m["shift_size"])
            ours = np.where(W.window_mask(table.labels, ws), 0.0, -100.0)
            np.testing.assert_array_equal(ours, buf.numpy(), err_msg=key)
            seen += 1
    assert seen > 0


def test_load_original_from_files(tmp_path):
    """A torch.save'd state_dict and a Lightning-style checkpoint with a key prefix."""
    cfg, sd, x, y = _golden("paperlike_ring")
    plain, lightning = tmp_path / "plain.pt", tmp_path / "lightning.ckpt"
    torch.save(sd, plain)
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in sd.items()}}, lightning)
    for source in (plain, str(lightning)):
        with torch.no_grad():
            out = _load(cfg, source)(x)
        assert (out - y).abs().max().item() <= 1e-4, source


def test_load_original_rejects_mismatches():
    cfg, sd, _, _ = _golden("nestroll_v1")
    data = cfg["data"]
    with pytest.raises(ValueError, match="num_classes=7"):
        models.load_original(sd, cfg["model"], data["nside"], data["base_pix"], 7)
    with pytest.raises(ValueError, match="shape"):
        models.load_original(sd, {**cfg["model"], "embed_dim": 16}, data["nside"], data["base_pix"],
                             data["f_out"])
    with pytest.raises(ValueError, match="patch_embed.proj.weight"):
        models.load_original({"foo": torch.zeros(1)}, cfg["model"], data["nside"], data["base_pix"], 3)


def test_checkpoint_filter_drops_derived_buffers_and_round_trips():
    cfg, sd, _, _ = _golden("paperlike_ring")
    model = _load(cfg, sd)
    mapped = checkpoint_filter_fn(sd, model)
    assert not any(k.endswith(("attn_mask", "relative_position_index")) for k in mapped)
    assert set(mapped) == set(model.state_dict())
    # our own keys pass through unchanged
    assert checkpoint_filter_fn(model.state_dict()).keys() == model.state_dict().keys()
    # checkpoints hold parameters only: no index tables, no masks
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}


def test_paper_parameter_count():
    model = models.create_model("heal_swin_paper", nside=32)
    assert sum(p.numel() for p in model.parameters()) == 41_279_688


def test_load_original_with_the_original_grid_shift():
    """The weights do not depend on the shift: a nest_grid_shift config loads and runs."""
    cfg, sd, x, y = _golden("nestroll_v1")
    data = cfg["data"]
    model = models.load_original(sd, {**cfg["model"], "shift_strategy": "nest_grid_shift"}, data["nside"],
                                 data["base_pix"], data["f_out"]).eval()
    assert "shift=nest_grid_shift" in repr(model)
    with torch.no_grad():
        out = model(x)
    assert torch.isfinite(out).all() and out.shape == y.shape
    assert (out - y).abs().max() > 1e-3  # a different shift gives a different function


def test_load_original_takes_base_pixels_and_the_originals_base_pix_still_works():
    """One vocabulary (issue #25): base_pixels is the keyword; the original's `base_pix` still loads, warning."""
    cfg, sd, _, _ = _golden(NAMES[0])
    data = cfg["data"]
    new = models.load_original(sd, cfg["model"], data["nside"], base_pixels=data["base_pix"],
                               num_classes=data["f_out"])
    with pytest.warns(DeprecationWarning, match=r"load_original\(base_pix=...\) is deprecated"):
        old = models.load_original(sd, cfg["model"], data["nside"], base_pix=data["base_pix"], num_classes=data["f_out"])
    assert new.base_pixels == old.base_pixels
    with pytest.raises(TypeError, match="not both"):
        models.load_original(sd, cfg["model"], data["nside"], base_pixels=8, base_pix=8, num_classes=data["f_out"])
