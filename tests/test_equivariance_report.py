"""heal-swin-equivariance (issue #16, part 3): the report on digits runs and fisheye runs of the engine,
ensembles of runs, the grid's symmetries as permutations, and `HealpixDataset.rotated`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from heal_swin import grid
from heal_swin.tools import equivariance as eq

from heal_swin.equivariance import rotation_permutation
from pictures import read_png

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["data.nside=8", "data.digits.train=4", "data.digits.test=4", "data.digits.digits=[2,3]",
          "data.digits.half_width=0.5"]


def _digits_run(path, name, seed=0, data=DIGITS):
    """A digits run of the engine (train.py's run directory) after one step."""
    from heal_swin.engine import load_config, main

    main(load_config(ROOT / "configs" / "digits_gauge_cnn.yaml", [
        f"run.dir={path}", f"model.name={name}", f"run.seed={seed}", *data, "train.max_steps=1",
        "train.eval_every=1", "run.threads=1"]))
    return path


# --------------------------------------------------------------------------- grid symmetries


@pytest.mark.parametrize("faces", [tuple(range(12)), tuple(range(8)), (0, 1, 2, 3)])
def test_grid_symmetries_are_the_pixel_maps_of_the_rotations(faces):
    syms = grid.grid_symmetries(8, faces)
    want = 6 if len(faces) == 12 else 3
    assert len(syms) == want, list(syms)
    x = np.random.default_rng(0).standard_normal(len(faces) * 64)
    for name, m in syms.items():
        perm = grid.symmetry_permutation(8, m, faces)
        np.testing.assert_array_equal(perm, rotation_permutation(8, m, faces).numpy())
        np.testing.assert_array_equal(grid.nearest_rotation_index(8, m, faces), perm)
        idx, w = grid.bilinear_rotation_weights(8, m, faces)
        np.testing.assert_allclose((w * x[np.maximum(idx, 0)]).sum(0), x[perm], atol=1e-12)
    # the data layer's quarter turns sample at R·v: the inverse turn
    from heal_swin.data.augment import quarter_turn_permutation

    np.testing.assert_array_equal(quarter_turn_permutation(8, faces, 1),
                                  grid.symmetry_permutation(8, grid.polar_turn_matrix(-1), faces))


def test_non_symmetries_are_refused_and_resampled():
    r = grid.equatorial_flip(0)
    with pytest.raises(ValueError, match=r"not a symmetry of the nside-8 grid over faces \[0, 1, 2, 3, 4, 5, 6, 7\]"):
        grid.symmetry_permutation(8, r, range(8))                      # swaps north and south faces
    tilt = np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    assert not grid.is_symmetry(8, tilt, range(12))
    assert grid.rotation_angle(tilt) == pytest.approx(np.degrees(0.3))
    with pytest.raises(ValueError, match="must be a 3×3 rotation matrix"):
        grid.nearest_rotation_index(8, 2 * np.eye(3), range(12))
    # faces 0-7 lose the pixels whose source lies on a southern face
    idx = grid.nearest_rotation_index(8, tilt, range(8))
    assert (idx == -1).any() and (idx >= 0).any()
    widx, w = grid.bilinear_rotation_weights(8, tilt, range(8))
    assert np.all(w[widx < 0] == 0)
    # a smooth map turned by bilinear resampling: close to the map of the turned function
    v = np.stack(grid.pix2vec(16, np.arange(12 * 256)), axis=1)
    f = lambda u: u[:, 0] + 0.5 * u[:, 2]  # noqa: E731 (linear: interpolation error is the chord's)
    idx, w = grid.bilinear_rotation_weights(16, tilt, range(12))
    turned = (w * f(v)[idx]).sum(0)
    assert np.abs(turned - f(v @ tilt)).max() < 0.02


# --------------------------------------------------------------------------- digits runs


def test_report_is_exactly_one_for_an_equivariant_model_and_less_otherwise(tmp_path):
    gauge = _digits_run(tmp_path / "gauge", "gauge_cnn_tiny")
    res = eq.report([gauge], split="test", rotations=1, kind="so3", samples=2, double=True, progress=False)
    exact = [r for r in res["rows"] if r["kind"] == "exact"]
    assert [r["name"] for r in exact] == list(grid.grid_symmetries(8, range(12)))
    for r in exact:                                    # a gauge CNN commutes with the grid's symmetries
        assert r["agreement"] == 1.0 and r["miou_between"] == 1.0 and r["floor_agreement"] == 1.0, r
        assert r["excluded"] == 0 and r["pixels"] == 2 * 12 * 64
    so3 = [r for r in res["rows"] if r["kind"] == "so3"]
    assert len(so3) == 1 and 0 < so3[0]["floor_agreement"] < 1      # moving by the nearest pixel costs a little

    swin = _digits_run(tmp_path / "swin", "heal_swin_tiny")          # grid shift: not equivariant
    res = eq.report([swin], split="test", rotations=0, samples=2, double=True, progress=False)
    assert all(r["agreement"] < 0.95 for r in res["rows"]), [r["agreement"] for r in res["rows"]]
    out = tmp_path / "swin" / "equivariance-test"
    saved = json.loads((out / "equivariance.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(res["rows"]))
    assert "| polar turn 90° | exact |" in (out / "equivariance.md").read_text()
    read_png(out / "equivariance.png", size=(1210, 462), min_colours=5)     # the 11 × 4.2 in figure at 110 dpi


def test_an_ensemble_of_runs_loads_and_averages(tmp_path):
    a = _digits_run(tmp_path / "a", "gauge_cnn_tiny", seed=0)
    b = _digits_run(tmp_path / "b", "gauge_cnn_tiny", seed=1)
    members, source = eq.load_runs([a, b], "test", 2)
    assert [m.run_dir for m in members] == [a, b] and source.n == 2
    xs = [x[None] for x in source.upright(0)[0]]          # each member's own input (its run's preprocessing)
    assert len(xs) == 2 and torch.equal(xs[0], xs[1])    # digit spheres: the same for both
    assert source.sources[0] is source.sources[1]         # equal data settings: one source, read once
    x = xs[0]
    p = eq.ensemble_predict(members, xs)
    want = (members[0].model(x).softmax(1) + members[1].model(x).softmax(1)) / 2
    torch.testing.assert_close(p, want)
    assert not torch.allclose(members[0].predict(x), members[1].predict(x))
    # the report of a run twice is the report of the run
    one = eq.report([a], split="test", rotations=1, samples=2, out=tmp_path / "one", progress=False)
    two = eq.report([a, a], split="test", rotations=1, samples=2, out=tmp_path / "two", progress=False)
    assert [r["agreement"] for r in one["rows"]] == pytest.approx([r["agreement"] for r in two["rows"]])
    ens = eq.report([a, b], split="test", rotations=1, samples=2, progress=False)
    assert ens["out"].endswith("equivariance-test-ensemble2") and len(ens["runs"]) == 2


def test_runs_of_other_data_and_non_runs_are_refused(tmp_path):
    a = _digits_run(tmp_path / "a", "gauge_cnn_tiny")
    b = _digits_run(tmp_path / "b", "gauge_cnn_tiny", data=[*DIGITS, "data.digits.half_width=0.4"])
    with pytest.raises(eq.EquivarianceError, match=r"b: data.digits.half_width='0.4' differs from .*a's '0.5'"):
        eq.load_runs([a, b], "test", 2)
    with pytest.raises(eq.EquivarianceError, match="not a run directory"):
        eq.load_runs([tmp_path], "test", 2)
    assert eq.main([str(tmp_path), "--samples", "1"]) == 2
    with pytest.raises(eq.EquivarianceError, match="--split 'dev' must be train, val or test"):
        eq.report([a], split="dev")


# --------------------------------------------------------------------------- train.py runs (fisheye data)


@pytest.mark.usefixtures("run_env")
def test_report_on_a_fisheye_run_rolls_about_the_optical_axis(data_root, tmp_path, capsys):
    from heal_swin.engine import load_config, main

    run = tmp_path / "run"
    cfg = load_config(ROOT / "configs" / "gauge_cnn_demo.yaml",
                      [f"run.dir={run}", f"data.root={data_root}", "data.generate=false", "data.nside=8",
                       "data.batch_size=2", "data.split_fractions=[0.5,0.5,0.0]", "train.max_steps=2",
                       "train.warmup_steps=0", "train.eval_every=2", "run.threads=1", "eval.backproject=false"])
    main(cfg)
    assert eq.main([str(run), "--rotations", "2", "--samples", "2", "--double"]) == 0
    printed = capsys.readouterr().out
    assert "rotations `roll`" in printed
    res = json.loads((run / "equivariance-val" / "equivariance.json").read_text())
    exact = [r for r in res["rows"] if r["kind"] == "exact"]
    assert [r["name"] for r in exact] == ["polar turn 90°", "polar turn 180°", "polar turn 270°"]
    for r in exact:                                    # the camera rolled by 90°: exact, nothing excluded
        assert r["agreement"] == 1.0 and r["excluded"] == 0 and r["pixels"] > 0, r
    rolls = [r for r in res["rows"] if r["kind"] == "roll"]
    assert [r["roll_deg"] for r in rolls] == [120.0, 240.0]
    for r in rolls:                                    # the image's corners turn out of the field of view
        assert r["excluded"] > 0 and 0 < r["floor_agreement"] <= 1


def _fisheye_run(data_root, run, *extra):
    from heal_swin.engine import load_config, main

    main(load_config(ROOT / "configs" / "gauge_cnn_demo.yaml",
                     [f"run.dir={run}", f"data.root={data_root}", "data.generate=false", "data.nside=8",
                      "data.batch_size=2", "data.split_fractions=[0.5,0.5,0.0]", "train.max_steps=1",
                      "train.warmup_steps=0", "train.eval_every=1", "run.threads=1", "eval.backproject=false",
                      *extra]))
    return run


@pytest.mark.usefixtures("run_env")
def test_ensemble_members_keep_their_own_preprocessing_and_held_out_samples(data_root, tmp_path):
    """Issue #31, item 1: each member reads the samples through its own run's normalisation, so the ensemble
    does not depend on the order of its runs; it is scored only on samples that no member trained on, and
    refused where there is none."""
    a = _fisheye_run(data_root, tmp_path / "a")
    b = _fisheye_run(data_root, tmp_path / "b", "data.mean=[100,100,100]", "data.std=[40,40,40]")
    members, source = eq.load_runs([a, b], "val", None)
    xs, _, _ = source.upright(0)
    assert not torch.allclose(xs[0], xs[1])                      # B's own normalisation, not A's
    _, alone = eq.load_runs([b], "val", None)
    torch.testing.assert_close(xs[1], alone.upright(0)[0][0])
    ab = eq.report([a, b], split="val", rotations=1, samples=None, progress=False)
    ba = eq.report([b, a], split="val", rotations=1, samples=None, progress=False)
    assert ab["upright"] == pytest.approx(ba["upright"]) and ab["rows"][0]["agreement"] == pytest.approx(
        ba["rows"][0]["agreement"])
    # another split: the samples C trained on are not scored, and without any held-out sample it is refused
    c = _fisheye_run(data_root, tmp_path / "c", "data.split_fractions=[0.75,0.25,0.0]")
    _, both = eq.load_runs([a, c], "val", None)
    from heal_swin.engine import build_datasets, load_run_config

    trained_c = set(eq._sample_keys(build_datasets(load_run_config(c), ("train",))["train"]))
    kept = [both.sources[0].keys()[j[0]] for j in both.index]
    assert kept and not set(kept) & trained_c and len(kept) < len(both.sources[0])
    with pytest.raises(eq.EquivarianceError, match="held out by every member"):
        eq.load_runs([a, c], "train", None)                       # every sample trained some member


@pytest.mark.usefixtures("run_env")
def test_report_on_a_rig_run_yaws_exactly_and_tilts_the_vehicle(data_root, tmp_path):
    """Issue #29: on the vehicle's sphere the grid's polar turns are yaws (exact for the gauge CNN); --kind tilt
    (the default for rig runs) pitches and rolls the whole rig by a few degrees, the cameras turned together."""
    from heal_swin.engine import load_config, main

    run = tmp_path / "rig"
    main(load_config(ROOT / "configs" / "demo_rig.yaml",
                     [f"run.dir={run}", f"data.root={data_root}", "data.generate=false", "data.nside=8",
                      "model.name=gauge_cnn_tiny", "data.batch_size=1", "data.split_fractions=[0.5,0.5,0.0]",
                      "train.max_steps=1", "train.warmup_steps=0", "train.eval_every=1", "run.threads=1",
                      "eval.figures=0"]))
    res = eq.report([run], split="val", rotations=2, samples=1, progress=False, out=tmp_path / "eq")
    turns = [r for r in res["rows"] if r["name"].startswith("polar turn")]
    assert len(turns) == 3 and all(r["agreement"] == 1.0 and r["pixels"] > 0 for r in turns), turns
    tilts = [r for r in res["rows"] if r["kind"] == "tilt"]
    assert [r["name"] for r in tilts] == ["vehicle roll 5.0°", "vehicle pitch 5.0°"]
    assert all(r["pixels"] > 0 and abs(r["angle_deg"] - 5.0) < 1e-6 and 0 < r["floor_agreement"] <= 1
               for r in tilts), tilts


@pytest.mark.usefixtures("run_env")
def test_rotated_dataset_items_are_the_turned_projection(data_root):
    from heal_swin.data import HealpixDataset

    ds = HealpixDataset(data_root, nside=16, base_pixels=range(8), split="train", split_fractions=(1.0, 0.0, 0.0))
    item = ds[0]
    for k in (1, 2):
        perm = torch.as_tensor(grid.symmetry_permutation(16, grid.polar_turn_matrix(k), range(8)))
        turned = ds.rotated(0, grid.polar_turn_matrix(k))
        # the same directions sampled: equal up to ties at the 1/32-pixel rounding of the sampling positions
        assert (turned["valid"] == item["valid"][perm]).float().mean() > 0.99
        both = turned["valid"] & item["valid"][perm]
        assert (turned["labels"][both] == item["labels"][perm][both]).float().mean() > 0.99
        assert (turned["image"][:, both] - item["image"][:, perm][:, both]).abs().median() < 1e-3
    # a rig: the four cameras turned together (issue #29: yaw = the grid's polar turns, pitch and roll)
    rig = HealpixDataset(data_root, nside=16, base_pixels=range(12), rig=True, split="train",
                         split_fractions=(1.0, 0.0, 0.0))
    item = rig[0]
    same = rig.rotated(0, np.eye(3))
    assert all(torch.equal(same[k], item[k]) for k in ("image", "labels", "valid"))
    perm = torch.as_tensor(grid.symmetry_permutation(16, grid.polar_turn_matrix(1), range(12)))
    turned = rig.rotated(0, grid.polar_turn_matrix(1))
    assert (turned["valid"] == item["valid"][perm]).float().mean() > 0.99
    both = turned["valid"] & item["valid"][perm]
    assert (turned["labels"][both] == item["labels"][perm][both]).float().mean() > 0.99


def test_equirectangular_adapter_moves_pixels_both_ways():
    from heal_swin import models

    shape = models.equirectangular_shape(16, range(12))
    assert shape == (32, 96) and shape[0] * shape[1] == 12 * 256
    ident = models.EquirectangularAdapter(torch.nn.Identity(), 16, range(12))
    x = torch.arange(12 * 256, dtype=torch.float64)[None, None]
    img = ident.image(x)
    assert img.shape == (1, 1, 32, 96)
    assert set(img.unique().long().tolist()) <= set(range(12 * 256))       # values moved, never blended
    back = ident(x)
    assert (back == x).double().mean() > 0.5                              # most pixels come home unchanged
    # an image pixel reads the sphere pixel containing its direction
    theta, phi = (5 + 0.5) * np.pi / 32, (40 + 0.5) * 2 * np.pi / 96
    assert int(img[0, 0, 5, 40]) == grid.ang2pix(16, theta, phi)
    # faces the map lacks read zero
    half = models.EquirectangularAdapter(torch.nn.Identity(), 16, range(8), shape=(32, 64))
    assert (half.image(torch.ones(1, 1, 8 * 256))[0, 0, -1] == 0).all()     # the south pole row: faces 8-11


def test_bad_samples_missing_and_damaged_weights_are_refused_with_the_file(tmp_path, capsys):
    """Issue #31, item 8: --samples 0 or -2 is refused before any work (it wrote an all-NaN report, or
    became 50); a missing best file says it uses last; no weights or a truncated file is one line naming the
    file and a fix the tool offers (--weights), exit 2."""
    run = _digits_run(tmp_path / "a", "gauge_cnn_tiny")
    for bad in ("0", "-2"):
        assert eq.main([str(run), "--samples", bad, "--out", str(tmp_path / "o")]) == 2
        assert f"--samples {bad} must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    (run / "weights" / "best.safetensors").unlink()
    assert eq.main([str(run), "--samples", "1", "--rotations", "0", "--out", str(tmp_path / "o")]) == 0
    assert "no weights/best.safetensors, using weights/last.safetensors" in capsys.readouterr().err
    last = run / "weights" / "last.safetensors"
    last.write_bytes(last.read_bytes()[:100])
    assert eq.main([str(run), "--samples", "1", "--weights", "last"]) == 2
    err = capsys.readouterr().err
    assert "last.safetensors" in err and "Traceback" not in err
    last.unlink()
    assert eq.main([str(run), "--samples", "1"]) == 2
    assert "neither best.safetensors nor last.safetensors" in capsys.readouterr().err
