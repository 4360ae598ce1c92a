"""ONNX export: every model, parity with PyTorch, the fisheye-in/fisheye-out graph, fp16, the
predictor's provider check, export.py and heal-swin-infer."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from heal_swin import models
from heal_swin.data import synthetic
from heal_swin.engine import load_config
from heal_swin.engine import trainer
from heal_swin.export import (FisheyeGraph, OnnxPredictor, ProviderError, SphereGraph, compare_onnx, export_onnx,
                              read_metadata)
from heal_swin.projection import FisheyeToHealpix, HealpixToFisheye
from heal_swin.tools import infer
from heal_swin.tools.run_export import export_run

from pictures import read_png

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", models.list_models())
def test_every_model_exports_with_a_dynamic_batch(name, tmp_path):
    torch.manual_seed(0)
    model = models.create_model(name, in_chans=3, num_classes=5, **models.model_info(name).test_kwargs).eval()
    if models.model_info(name).domain == "flat":
        example = torch.randn(2, 3, *model.img_size)
    else:
        example = torch.randn(2, 3, len(model.faces) * model.nside ** 2)
    path = tmp_path / f"{name}.onnx"
    exporter, notes = export_onnx(SphereGraph(model, "segmentation"), example, path, metadata={"model": name})
    assert exporter == "dynamo", notes
    assert read_metadata(path)["model"] == name
    inputs = [example, torch.randn(1, *example.shape[1:]), torch.randn(3, *example.shape[1:])]
    max_abs, max_rel, agreement, passed, _ = compare_onnx(path, SphereGraph(model, "segmentation"), inputs,
                                                          "segmentation")
    # Random post-norm cosine networks amplify float rounding; relative agreement is the check here,
    # the fp32 tolerance (max |diff| <= 1e-4 of the largest output) is met by trained runs (below).
    assert max_rel < 1e-3 and agreement > 0.99


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("exp")
    data = base / "data"
    synthetic.generate(data, frames=3, seed=5, size=(96, 72), progress=False, workers=1)
    run_dir = base / "run"
    cfg = load_config(ROOT / "configs" / "demo.yaml",
                      [f"run.dir={run_dir}", f"data.root={data}", "data.generate=false", "data.nside=8",
                       "data.batch_size=2", "train.max_steps=3", "data.split_fractions=[0.67,0.33,0.0]",
                       "eval.backproject=false"])
    trainer.main(cfg)
    return run_dir, data


def test_export_run_sphere_graph_passes_fp32_tolerance(run, tmp_path):
    run_dir, _ = run
    report = export_run(run_dir, tmp_path / "m.onnx")
    assert report.passed and report.max_abs_diff <= 1e-4 and report.argmax_agreement > 0.999, str(report)
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["input"] == "sphere" and meta["nside"] == 8 and meta["class_names"][1] == "road"


def test_fisheye_graph_equals_the_python_pipeline(run, tmp_path):
    run_dir, data = run
    cal = data / "calibration" / "00000_FV.json"
    report = export_run(run_dir, tmp_path / "fv.onnx", calibration=cal)
    assert report.passed, str(report)
    meta = read_metadata(tmp_path / "fv.onnx")
    from heal_swin.cameras import load_calibration
    from heal_swin.data.woodscape import read_image
    from heal_swin.engine import load_model

    cam = load_calibration(cal)
    assert meta["calibration_hash"] == cam.fingerprint() and meta["image_size"] == [96, 72]
    image = read_image(data / "rgb_images" / "00000_FV.png")
    # The Python pipeline: project (CPU path), normalise, model, back-project.
    model = load_model(run_dir)
    proj, back = FisheyeToHealpix(cam, 8, range(8)), HealpixToFisheye(cam, 8, range(8))
    mean, std = np.array(meta["mean"])[:, None], np.array(meta["std"])[:, None]
    x = ((proj.project_image(image) - mean) / std * proj.valid_mask).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)[None])[0].numpy()
    expected = back.backproject(logits, fill=0.0)
    session = ort.InferenceSession(str(tmp_path / "fv.onnx"), providers=["CPUExecutionProvider"])
    batch = np.stack([image, image[::-1, ::-1]]).transpose(0, 3, 1, 2).astype(np.uint8).astype(np.float32)
    got, covered = session.run(None, {"input": batch})
    assert got.shape == (2, 10, 72, 96) and covered.shape == (2, 72, 96)
    np.testing.assert_array_equal(covered[0], back.covered_mask)
    np.testing.assert_allclose(got[0], expected, atol=2e-4)
    assert (got[0].argmax(0) == expected.argmax(0)).mean() > 0.999


def test_fp16_export_report(run, tmp_path):
    run_dir, _ = run
    report = export_run(run_dir, tmp_path / "h.onnx", fp16=True)
    assert report.precision == "fp16" and report.passed and report.argmax_agreement >= 0.995, str(report)
    assert report.size_mb < export_run(run_dir, tmp_path / "f.onnx").size_mb


def test_int8_export_report(run, tmp_path):
    import onnx
    run_dir, _ = run
    report = export_run(run_dir, tmp_path / "q.onnx", int8=True)
    assert report.precision == "int8" and read_metadata(tmp_path / "q.onnx")["precision"] == "int8"
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    # the verdict follows the stated rule on the measured agreement. The fixture's model has
    # trained three steps, so its logits are nearly tied and int8 rounding flips many argmaxes
    # (0.89 with onnxruntime 1.31); a broken quantisation would agree at chance, 1/10.
    assert report.tolerance == "int8: argmax agreement >= 99 %"
    assert report.passed == (report.argmax_agreement >= 0.99) and report.argmax_agreement > 0.75, str(report)
    out = OnnxPredictor(tmp_path / "q.onnx", batch_size=2)(np.zeros((3, 3, 512), np.float32))
    assert out[0].shape == (3, 10, 512) and np.isfinite(out[0]).all()
    with pytest.raises(ValueError, match="exclude each other"):
        export_run(run_dir, tmp_path / "x.onnx", int8=True, fp16=True)
    # issue #31, item 5: judged one image at a time (a dynamic graph's deployment), on every distinct image of
    # the split (4 here: fewer than the 8 wanted, said), and the report states the sample
    assert report.compared == "4 input(s) in 4 batch(es) of 1, 2,048 output pixels", report.compared
    assert any("fewer than the 8" in n for n in report.notes) and any("deployment batch size 1" in n
                                                                       for n in report.notes)
    from heal_swin.engine import build_datasets, load_model, load_run_config
    from heal_swin.export import SphereGraph

    cfg = load_run_config(run_dir)
    ds = build_datasets(cfg, ("val",))["val"]
    module = SphereGraph(load_model(run_dir), cfg.task).eval()
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    agree = total = 0
    for i in range(len(ds)):                                    # each image alone, as the report judged it
        x = ds[i]["image"][None]
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0].argmax(1)
        with torch.no_grad():
            ref = module(x).numpy().argmax(1)
        agree, total = agree + int((got == ref).sum()), total + ref.size
    assert report.argmax_agreement == pytest.approx(agree / total)
    # a fixed batch larger than the split: one whole batch, its 4 distinct inputs repeated to fill it
    fixed = export_run(run_dir, tmp_path / "q8.onnx", int8=True, batch=8)
    assert fixed.compared == "8 input(s) in 1 batch(es) of 8, 4,096 output pixels", fixed.compared
    assert any("deployment batch size 8 on 4 distinct inputs" in n for n in fixed.notes), fixed.notes


def test_compare_names_the_precisions_it_knows(tmp_path):
    with pytest.raises(ValueError, match=r"precision='int4' must be one of \['fp16', 'fp32', 'int8'\]"):
        compare_onnx(tmp_path / "none.onnx", None, [], "segmentation", "int4")


def test_predictor_refuses_a_gpu_it_did_not_get(run, tmp_path):
    run_dir, _ = run
    export_run(run_dir, tmp_path / "m.onnx")
    cpu = OnnxPredictor(tmp_path / "m.onnx", device="cpu", batch_size=2)
    assert cpu.providers == ["CPUExecutionProvider"]
    out = cpu(np.random.default_rng(0).normal(size=(5, 3, 512)).astype(np.float32))
    assert out[0].shape == (5, 10, 512)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is checked on machines without one")
    with pytest.raises(ProviderError, match="device='cuda'"):
        OnnxPredictor(tmp_path / "m.onnx", device="cuda")


def test_export_cli_and_inference_cli(run, tmp_path):
    run_dir, data = run
    fv = tmp_path / "fv.onnx"
    cmd = [sys.executable, str(ROOT / "export.py"), "--run", str(run_dir), "--out", str(fv), "--with-projection",
           "--calibration", str(data / "calibration" / "00001_FV.json"), "--report", str(tmp_path / "r.json")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "PASSED" in done.stdout and json.loads((tmp_path / "r.json").read_text())["passed"]
    bad = subprocess.run([sys.executable, str(ROOT / "export.py"), "--run", str(run_dir), "--out", "x.onnx",
                          "--with-projection"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--with-projection and --calibration go together" in bad.stderr
    # Fisheye graph: the images as they are.
    out = tmp_path / "infer"
    assert infer.main(["--model", str(fv), "--images", str(data / "rgb_images" / "*_FV.png"), "--out", str(out),
                       "--calibrations", str(data / "calibration")]) == 0
    pred = np.load(out / "00002_FV.npy")
    assert pred.shape == (72, 96) and pred.dtype == np.uint8 and set(np.unique(pred)) <= set(range(10)) | {255}
    # The picture beside it is this prediction's class colours over this image, a legend strip below.
    from heal_swin.data import WOODSCAPE_COLORS
    from heal_swin.data.woodscape import read_image

    picture = read_png(out / "00002_FV.png", min_size=(96, 73), min_colours=10)
    image = read_image(data / "rgb_images" / "00002_FV.png")
    expected = infer._overlay(image, pred, "segmentation", WOODSCAPE_COLORS, read_metadata(fv)["class_names"])
    np.testing.assert_array_equal(picture, expected)
    # Sphere graph: grouped by calibration, projected and back-projected by the tool.
    sphere = tmp_path / "m.onnx"
    export_run(run_dir, sphere)
    out2 = tmp_path / "infer2"
    assert infer.main(["--model", str(sphere), "--images", str(data / "rgb_images"), "--out", str(out2),
                       "--calibrations", str(data / "calibration")]) == 0
    assert len(list(out2.glob("*.npy"))) == 12
    # The same answers for the FV images either way.
    for stem in ("00000_FV", "00002_FV"):
        a, b = np.load(out / f"{stem}.npy"), np.load(out2 / f"{stem}.npy")
        assert (a == b).mean() > 0.999
    assert infer.main(["--model", str(sphere), "--images", str(data / "rgb_images"), "--out", str(out2)]) == 2


def test_export_and_infer_refuse_bad_batch_and_opset_before_any_work(tmp_path):
    """Issue #31, item 12: export.py --batch 0 left a broken ONNX file and exit 1 ("parity failed"), --opset 5
    silently became 18, heal-swin-infer --batch 0 blamed every image: each is refused up front, exit 2."""
    out = tmp_path / "m.onnx"
    for flags, message in [(["--batch", "0"], "--batch '0' must be 'dynamic' or a positive integer"),
                           (["--opset", "5"], "--opset 5 must be in [18, "),
                           (["--opset", "999"], "--opset 999 must be in [18, ")]:
        bad = subprocess.run([sys.executable, str(ROOT / "export.py"), "--run", str(tmp_path / "no_run"), "--out",
                              str(out), *flags], capture_output=True, text=True)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        infer.main(["--model", str(out), "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--batch", "0"])
    assert exit_info.value.code == 2 and not (tmp_path / "o").exists()


def test_a_segmentation_run_exports_without_its_data(run, tmp_path):
    """Issue #31, item 11: a run without data.class_names needed its data tree for the number of classes; the
    weights give it, and the parity check falls back to random inputs, saying so."""
    import shutil

    run_dir, _ = run
    moved = tmp_path / "run"
    shutil.copytree(run_dir, moved)
    config = (moved / "config.yaml").read_text()
    assert "class_names: null" in config
    (moved / "config.yaml").write_text(config.replace(f"root: {run[1]}", f"root: {tmp_path / 'elsewhere'}"))
    report = export_run(moved, tmp_path / "m.onnx")
    assert report.passed and any("random inputs" in n for n in report.notes), str(report)
    assert read_metadata(tmp_path / "m.onnx")["class_names"][1] == "road"
