"""Fisheye metrics per ring of incidence angle (issue #17): the rings partition the scored pixels,
a perfect prediction scores perfectly in every ring, and the table shows them."""

from pathlib import Path

import numpy as np
import pytest
import torch

from heal_swin import cameras
from heal_swin.data.synthetic import rig_cameras
from heal_swin.engine import build_datasets, build_model, evaluate, evaluate_with_config, load_config
from heal_swin.engine import evaluation
from heal_swin.engine.evaluation import markdown_table

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("run_env")  # data_root and run_env: tests/conftest.py


def _cfg(data_root, tmp_path, *extra):
    return load_config(ROOT / "configs" / "demo.yaml", [
        f"run.dir={tmp_path / 'r'}", f"data.root={data_root}", "data.generate=false", "data.nside=8",
        "data.batch_size=2", "data.split_fractions=[0.5,0.5,0.0]", *extra])


def test_incidence_angle_follows_the_camera_model():
    cam = rig_cameras(96, 72)["FV"]
    theta = cameras.incidence_angle(cam)
    assert theta.shape == (72, 96)
    # The principal point is at about 0°, the image corners of the FV calibration beyond 90°.
    cy, cx = np.unravel_index(np.nanargmin(theta), theta.shape)
    assert theta[cy, cx] < 2.0 and abs(cx - 47.5) < 2 and abs(cy - 35.5) < 2
    assert np.nanmax(theta) > 100.0
    ring = cameras.incidence_ring(cam)
    lo = np.array([r[0] for r in cameras.INCIDENCE_RINGS.values()])
    ok = ring >= 0
    assert ok.sum() == np.isfinite(theta).sum()
    assert np.all(theta[ok] >= lo[ring[ok]])


@pytest.mark.parametrize("task", ["segmentation", "depth"])
def test_rings_add_up_to_the_fisheye_pixels(data_root, tmp_path, task):
    """Sphere model (untrained): every scored fisheye pixel lies in exactly one ring, and the
    evaluation's other figures are still there."""
    extra = ["train.metric=abs_rel", "train.metric_mode=min"] if task == "depth" else []
    cfg = _cfg(data_root, tmp_path, f"task={task}", *extra)
    ds = build_datasets(cfg, ("val",))["val"]
    torch.manual_seed(0)
    model = build_model(cfg, len(ds.class_names) if task == "segmentation" else 1)
    result = evaluate_with_config(model, ds, cfg, evaluation.Distributed("cpu"))
    assert {"sphere", "fisheye", "per_camera", "fisheye_rings"} <= set(result)
    rings = result["fisheye_rings"]
    assert list(rings) == list(cameras.INCIDENCE_RINGS)
    assert sum(m["pixels"] for m in rings.values()) == result["fisheye"]["pixels"] > 0
    assert rings["theta_90_plus"]["pixels"] > 0  # faces 0-7 reach 104.6° in the FV calibration
    table = markdown_table(result, task)
    assert "| > 90° |" in table and "| 0–30° |" in table
    # The rows that were there before come first, unchanged in form.
    assert table.splitlines()[2].startswith("| where |")


@pytest.mark.parametrize("task", ["segmentation", "depth"])
def test_a_perfect_prediction_scores_perfectly_in_every_ring(data_root, tmp_path, monkeypatch, task):
    """A flat model at the full image size whose prediction is the truth itself: the evaluation's
    nearest upsampling is then the identity, so every ring has mIoU 1 (segmentation) or AbsRel 0
    and δ<1.25 = 1 (depth)."""
    extra = ["train.metric=abs_rel", "train.metric_mode=min"] if task == "depth" else []
    cfg = _cfg(data_root, tmp_path, f"task={task}", "model.name=swin_unet_flat_tiny",
               "data.flat_size=[72,96]", *extra)
    ds = build_datasets(cfg, ("val",))["val"]
    key = "labels" if task == "segmentation" else "depth"
    # the prediction is the truth of the sample whose image comes in
    by_image = {ds[i]["image"].numpy().tobytes(): ds[i][key] for i in range(len(ds))}
    monkeypatch.setattr(evaluation, "predict",
                        lambda model, images, **kw: torch.stack([by_image[x.numpy().tobytes()] for x in images]))
    result = evaluate(torch.nn.Identity(), ds, task=task, batch_size=2, coverage=(8, tuple(range(8)), "camera"))
    rings = result["fisheye_rings"]
    assert sum(m["pixels"] for m in rings.values()) == result["fisheye"]["pixels"]
    for name, m in rings.items():
        assert m["pixels"] > 0, name
        if task == "segmentation":
            assert m["miou"] == pytest.approx(1.0) and m["accuracy"] == pytest.approx(1.0), name
        else:
            assert m["abs_rel"] == pytest.approx(0.0, abs=1e-9) and m["d1"] == pytest.approx(1.0), name
