"""The rig graph (issue #29): four fisheye images -> one vehicle-frame sphere -> four fisheye outputs.

A tiny rig-trained run (nside 8, two steps on the synthetic four-camera data) is exported with
`export.py --rig`; onnxruntime runs the graph on images it was not traced with and matches the
Python pipeline; cameras that see one sphere pixel get one answer; bad inputs and mismatching
calibrations are refused with expected vs given, and nothing is written half.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from heal_swin.cameras import load_calibration, save_calibration
from heal_swin.data.woodscape import read_image
from heal_swin.engine import load_config, load_model, trainer
from heal_swin.export import ExportError, OnnxPredictor, RigGraph, RigInputError, read_metadata
from heal_swin.projection import HealpixToFisheye, RigToHealpix
from heal_swin.tools.run_export import export_run

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["FV", "MVL", "MVR", "RV"]   # the graph's documented order: sorted names, as the rig datasets


def _train(base: Path, data: Path, rig: bool) -> Path:
    run_dir = base / ("rig_run" if rig else "fv_run")
    extra = ["data.rig=true", "data.base_pixels=all"] if rig else []
    cfg = load_config(ROOT / "configs" / "demo.yaml",
                      [f"run.dir={run_dir}", f"data.root={data}", "data.generate=false", "data.nside=8",
                       "data.batch_size=2", "train.max_steps=2", "data.split_fractions=[0.67,0.33,0.0]",
                       "eval.backproject=false", "eval.figures=0", *extra])
    trainer.main(cfg)
    return run_dir


@pytest.fixture(scope="module")
def rig_run(data_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("rig")
    run_dir = _train(base, data_root, rig=True)
    out = base / "rig.onnx"
    report = export_run(run_dir, out, rig=data_root / "calibration" / "00000")
    return run_dir, data_root, out, report


def _frame(data: Path, frame: str) -> dict:
    return {c: read_image(data / "rgb_images" / f"{frame}_{c}.png") for c in ORDER}


def _chw(images: dict) -> dict:
    return {c: im.transpose(2, 0, 1)[None] for c, im in images.items()}


def test_rig_export_passes_fp32_and_writes_the_rig_metadata(rig_run):
    run_dir, data, path, report = rig_run
    assert report.passed and report.max_rel_diff <= 1e-4, str(report)
    assert any("fused sphere equals the rig dataset's model input" in n for n in report.notes), report.notes
    meta = read_metadata(path)
    assert meta["input"] == "rig" and meta["cameras"] == ORDER and meta["orientation"] == "vehicle"
    assert meta["nside"] == 8 and meta["base_pixels"] == list(range(12)) and "optical axis" in meta["fusion"]
    for entry, cam in zip(meta["rig"], ORDER):
        calib = load_calibration(data / "calibration" / f"00000_{cam}.json")
        assert entry["name"] == cam and entry["calibration_hash"] == calib.fingerprint()
        assert entry["image_size"] == [96, 72]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ORDER
    assert [o.name for o in session.get_outputs()] == [f"{k}_{c}" for c in ORDER for k in ("output", "covered")] + [
        "sphere"]
    # one source table for training and deployment
    cams = {c: load_calibration(data / "calibration" / f"00000_{c}.json") for c in ORDER}
    import hashlib

    source = RigToHealpix(cams, 8, range(12)).source.astype(np.int8)
    assert meta["fusion_source_sha256"] == hashlib.sha256(source.tobytes()).hexdigest()


def test_rig_graph_equals_the_python_pipeline_on_new_inputs(rig_run):
    """Frames and a batch size the graph was not traced with (flipped images, batch 3), against
    the Python path: RigToHealpix (CPU) -> normalise -> model -> each camera's back-projection."""
    run_dir, data, path, _ = rig_run
    meta = read_metadata(path)
    cams = {c: load_calibration(data / "calibration" / f"00000_{c}.json") for c in ORDER}
    rig = RigToHealpix(cams, 8, range(12))
    model = load_model(run_dir)
    mean, std = np.array(meta["mean"])[:, None], np.array(meta["std"])[:, None]
    frames = [_frame(data, "00003"), {c: im[::-1, ::-1].copy() for c, im in _frame(data, "00005").items()},
              _frame(data, "00001")]
    x = np.stack([((rig.project_images(f) - mean) / std * rig.valid_mask).astype(np.float32) for f in frames])
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    batch = {c: np.stack([f[c] for f in frames]).transpose(0, 3, 1, 2) for c in ORDER}   # uint8
    got = OnnxPredictor(path, batch_size=3).run_rig(batch)
    scale = np.abs(logits).max()
    assert np.abs(got["sphere"] - logits).max() <= 1e-4 * scale
    for c in ORDER:
        back = HealpixToFisheye(cams[c], 8, range(12), "vehicle")
        expected = back.backproject(logits, fill=0.0)
        assert got[f"output_{c}"].shape == (3, 10, 72, 96)
        np.testing.assert_array_equal(got[f"covered_{c}"][1], back.covered_mask)
        assert np.abs(got[f"output_{c}"] - expected).max() <= 1e-4 * scale
    # float input 0–255 is the same as uint8
    again = OnnxPredictor(path).run_rig({c: batch[c].astype(np.float32) for c in ORDER})
    np.testing.assert_array_equal(again["sphere"], got["sphere"])


def test_two_cameras_agree_exactly_where_they_see_one_sphere_pixel(rig_run):
    _, data, path, _ = rig_run
    cams = {c: load_calibration(data / "calibration" / f"00000_{c}.json") for c in ORDER}
    out = OnnxPredictor(path).run_rig(_chw(_frame(data, "00002")))
    index = {c: HealpixToFisheye(cams[c], 8, range(12), "vehicle")._nearest for c in ORDER}
    pairs = 0
    for i, a in enumerate(ORDER):
        for b in ORDER[i + 1:]:
            shared = np.intersect1d(index[a][index[a] >= 0], index[b][index[b] >= 0])
            if not len(shared):
                continue
            pa = out[f"output_{a}"][0].reshape(10, -1)
            pb = out[f"output_{b}"][0].reshape(10, -1)
            for pix in shared:
                va = pa[:, index[a] == pix]
                vb = pb[:, index[b] == pix]
                np.testing.assert_array_equal(va, np.repeat(vb[:, :1], va.shape[1], 1))
                np.testing.assert_array_equal(vb, np.repeat(va[:, :1], vb.shape[1], 1))
                np.testing.assert_array_equal(va[:, 0], out["sphere"][0][:, pix])
                pairs += 1
    assert pairs > 50, f"only {pairs} shared sphere pixels: the rig's cameras should overlap"


@pytest.mark.parametrize("case", ["count", "order", "size", "dtype"])
def test_wrong_rig_inputs_name_expected_and_given(rig_run, case):
    _, data, path, _ = rig_run
    images = _chw(_frame(data, "00000"))
    pred = OnnxPredictor(path)
    if case == "count":
        bad, message = {c: images[c] for c in ORDER[:3]}, r"takes 4 cameras \['FV', 'MVL', 'MVR', 'RV'\]; given 3"
    elif case == "order":
        bad = {c: images[c] for c in ["RV", "FV", "MVL", "MVR"]}
        message = r"wrong camera order: the graph takes \['FV', 'MVL', 'MVR', 'RV'\].*given \['RV', 'FV', 'MVL', 'MVR'\]"
    elif case == "size":
        bad = {**images, "MVR": images["MVR"][..., :64]}
        message = r"camera MVR takes \(B, 3, 72, 96\) images .*given shape \(1, 3, 72, 64\)"
    else:
        bad = {**images, "FV": images["FV"].astype(np.uint16)}
        message = r"camera FV takes uint8 or float images .*given dtype uint16"
    with pytest.raises(RigInputError, match=message):
        pred.run_rig(bad)


def test_export_refuses_a_non_rig_run_and_mismatching_calibrations(rig_run, data_root, tmp_path):
    run_dir, data, _, _ = rig_run
    out = tmp_path / "x.onnx"
    fv_run = _train(tmp_path, data, rig=False)
    with pytest.raises(ExportError, match=r"was not trained on the rig \(its config has data.rig=false"):
        export_run(fv_run, out, rig=data / "calibration" / "00000")
    with pytest.raises(ExportError, match=r"trained on the rig \(data.rig=true.*export it with --rig"):
        export_run(run_dir, out, calibration=data / "calibration" / "00000_FV.json")
    # a calibration set without RV
    three = tmp_path / "three"
    three.mkdir()
    for c in ORDER[:3]:
        shutil.copy(data / "calibration" / f"00000_{c}.json", three)
    with pytest.raises(ExportError, match=r"has calibrations for \['FV', 'MVL', 'MVR'\]; the run was trained on the rig "
                                          r"\['FV', 'MVL', 'MVR', 'RV'\] \(data.cameras\): missing \['RV'\]"):
        export_run(run_dir, out, rig=three)
    # another rig: the RV camera at another size
    other = tmp_path / "other"
    other.mkdir()
    for c in ORDER:
        cam = load_calibration(data / "calibration" / f"00000_{c}.json")
        save_calibration(cam.resized(80, 60) if c == "RV" else cam, other / f"00000_{c}.json")
    with pytest.raises(ExportError, match=r"camera RV: the calibration given \(80×60, sha256 .*expected 96×72"):
        export_run(run_dir, out, rig=other)
    assert not out.exists() and not list(tmp_path.glob(".x.onnx*")), "a refused export left files"
    # the CLI: one line, exit 2
    done = subprocess.run([sys.executable, str(ROOT / "export.py"), "--run", str(fv_run), "--out", str(out), "--rig",
                           str(data / "calibration")], capture_output=True, text=True)
    assert done.returncode == 2 and "was not trained on the rig" in done.stderr and not out.exists(), done.stderr


def test_a_failing_export_leaves_nothing_half_written(rig_run, tmp_path, monkeypatch):
    """An error after the graph was written (here: in the parity check) leaves no file and no scratch."""
    from heal_swin.export import _export

    run_dir, data, _, _ = rig_run

    def broken(*args, **kwargs):
        raise ExportError("simulated failure in the parity check")

    monkeypatch.setattr(_export, "compare_onnx", broken)
    with pytest.raises(ExportError, match="simulated"):
        export_run(run_dir, tmp_path / "r.onnx", rig=data / "calibration")
    assert list(tmp_path.iterdir()) == []


def test_rig_graph_fp16_export(rig_run, tmp_path):
    run_dir, data, _, _ = rig_run
    report = export_run(run_dir, tmp_path / "h.onnx", rig=data / "calibration", fp16=True)
    assert report.precision == "fp16" and report.tolerance == "fp16: argmax agreement >= 99.5 %"
    assert report.passed == (report.argmax_agreement >= 0.995) and report.argmax_agreement > 0.9, str(report)


def test_rig_graph_module_fuses_as_the_dataset(rig_run):
    """The torch module alone: its fused input is RigToHealpix's, and every camera's output is the
    back-projection of the one sphere prediction."""
    run_dir, data, _, _ = rig_run
    cams = {c: load_calibration(data / "calibration" / f"00000_{c}.json") for c in ORDER}
    graph = RigGraph(load_model(run_dir), cams, 8, range(12), [0, 0, 0], [1, 1, 1], "segmentation").eval()
    frame = _frame(data, "00004")
    fused = graph.fuse(*(torch.from_numpy(im).permute(2, 0, 1)[None] for im in frame.values()))[0].numpy()
    expected = RigToHealpix(cams, 8, range(12)).project_images(frame)
    np.testing.assert_allclose(fused, expected, atol=1e-3)
    with pytest.raises(ValueError, match=r"takes 4 images \(FV, MVL, MVR, RV, in that order\); got 2"):
        graph.fuse(torch.zeros(1, 3, 72, 96), torch.zeros(1, 3, 72, 96))


def test_infer_rig_writes_complete_frames_and_lists_what_incomplete_ones_miss(rig_run, tmp_path, capsys):
    from heal_swin.tools import infer

    _, data, path, _ = rig_run
    images = tmp_path / "images"
    images.mkdir()
    for f in (data / "rgb_images").glob("*.png"):
        if f.stem[:5] in ("00000", "00001", "00002") and not f.stem == "00001_MVL":
            shutil.copy(f, images)
    out = tmp_path / "out"
    assert infer.main(["--rig", "--model", str(path), "--images", str(images), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "frame 00001 is incomplete: missing ['MVL']" in captured.err
    assert "2 frames (8 images)" in captured.out and "frames/s" in captured.out
    assert sorted(p.name for p in out.glob("*_sphere.png")) == ["00000_sphere.png", "00002_sphere.png"]
    assert not list(out.glob("00001_*")), "an incomplete frame was written"
    # the same answers as the predictor on the same frame
    expected = OnnxPredictor(path).run_rig(_chw(_frame(data, "00002")))
    for c in ORDER:
        pred = np.load(out / f"00002_{c}.npy")
        covered = expected[f"covered_{c}"][0]
        np.testing.assert_array_equal(pred, np.where(covered, expected[f"output_{c}"][0].argmax(0), 255))
        assert (out / f"00002_{c}.png").is_file()
    from pictures import read_png

    read_png(out / "00002_sphere.png", min_size=(720, 360), min_colours=4)
    # a rig graph without --rig, and --rig with a one-camera graph: refused up front
    assert infer.main(["--model", str(path), "--images", str(images), "--out", str(tmp_path / "o2")]) == 2
    assert "is a rig graph (cameras ['FV', 'MVL', 'MVR', 'RV']): pass --rig" in capsys.readouterr().err
