"""heal_swin.tools.diagnosis (issue #17): the oracle ceiling of the projection pipelines, the error maps of
a sphere and a flat segmentation run, and the command line's refusals."""

import json
from pathlib import Path

import numpy as np
import pytest

from heal_swin import cameras
from heal_swin.engine import load_config
from heal_swin.engine import main as train
from heal_swin.tools import diagnosis
from pictures import read_png

ROOT = Path(__file__).resolve().parents[1]


def test_oracle_ceiling_on_tiny_data(data_root):
    """A flat size equal to the image's loses nothing (mIoU 1), the sphere ceiling rises with nside, and the
    rings partition the scored pixels."""
    result = diagnosis.oracle(data_root, 2, [4, 16], [(72, 96), (24, 32)])
    st = result["settings"]
    assert st["flat 72×96"]["miou"] == pytest.approx(1.0)
    assert st["flat 24×32"]["miou"] < 1.0
    assert st["sphere nside 4"]["miou"] < st["sphere nside 16"]["miou"] < 1.0
    assert all(list(s["rings"]) == list(cameras.INCIDENCE_RINGS) for s in st.values())
    assert result["images"] == 8 and result["scored_pixels"] > 0
    d = st["sphere nside 16"]["density"]
    # The fisheye compresses the periphery: a fisheye pixel there spans less of the sphere.
    assert d["per_fisheye_px_periphery"] < d["per_fisheye_px_centre"]
    assert "| sphere nside 16 |" in diagnosis.oracle_markdown(result)


def _train(data_root, run_dir, *extra) -> dict:
    """A tiny segmentation run (nside 8 grid, 2 steps, one evaluation); its last evaluation."""
    cfg = load_config(ROOT / "configs" / "demo.yaml", [
        f"run.dir={run_dir}", f"data.root={data_root}", "data.generate=false", "data.nside=8",
        "data.batch_size=2", "data.split_fractions=[0.5,0.5,0.0]", "train.max_steps=2", "train.eval_every=2",
        "eval.figures=0", *extra])
    return train(cfg)


def _rows(table: str) -> dict:
    """Markdown table rows -> {first cell: [other cells]}."""
    return {cells[0]: cells[1:] for line in table.splitlines() if line.startswith("| ") and "---" not in line
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}


@pytest.mark.usefixtures("run_env")
def test_error_maps_of_two_tiny_runs(data_root, tmp_path, capsys):
    """The tables count the pixels the evaluation scores, with its error rate (1 − accuracy), per ring and at
    seams; the PNG shows the maps; a run given for the other domain is refused."""
    sphere, flat = tmp_path / "sphere", tmp_path / "flat"
    scored = {"heal_swin_tiny": _train(data_root, sphere)["fisheye"],
              "swin_unet_flat_tiny": _train(data_root, flat, "model.name=swin_unet_flat_tiny",
                                            "data.flat_size=[64,96]")["fisheye"]}
    capsys.readouterr()
    png = tmp_path / "maps" / "error_maps.png"
    assert diagnosis.main(["errors", "--sphere", str(sphere), "--flat", str(flat), "--out", str(png)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.strip().splitlines()[-1])
    tables = png.with_suffix(".md").read_text()
    assert tables in printed
    per_ring, seams = tables.split("At face seams")
    labels = [f"θ {cameras.ring_label(r)}" for r in cameras.INCIDENCE_RINGS] + ["all"]
    rows, seam_rows = _rows(per_ring), _rows(seams)
    assert rows["ring"] == ["scored pixels", *scored] and seam_rows["ring"] == list(scored)
    assert list(rows)[1:] == labels and list(seam_rows)[1:] == labels
    pixels = [int(rows[label][0].replace(",", "")) for label in labels]
    # the rings partition the scored pixels, which are the evaluation's fisheye pixels (both runs: one grid)
    assert sum(pixels[:-1]) == pixels[-1] == scored["heal_swin_tiny"]["pixels"] == \
        scored["swin_unet_flat_tiny"]["pixels"] > 0
    for column, (name, fisheye) in enumerate(scored.items(), start=1):
        error = summary["sphere_error" if column == 1 else "flat_error"]
        assert error == pytest.approx(1 - fisheye["accuracy"], abs=1e-12)
        assert rows["all"][column] == f"{error:.3f}"
        for label in labels:
            seam, interior = (float(v) for v in seam_rows[label][column - 1].split(" / "))
            assert 0.0 <= seam <= 1.0 and 0.0 <= interior <= 1.0
    image = read_png(png, size=(1600, 1000), min_colours=1000)
    # inside every map (fisheye: the top row; sphere: bottom left and middle): many colours of the colour
    # maps, mostly neither the light grey of pixels without a rate nor the white of an empty axes
    for top, left in [(120, 30), (120, 520), (120, 1060), (560, 30), (560, 520)]:
        panel = image[top:top + 260, left:left + 360].reshape(-1, 3).astype(int)
        grey, white = (abs(panel - 217).max(1) <= 2).mean(), (panel.min(1) >= 250).mean()
        assert len(np.unique(panel, axis=0)) > 100 and grey < 0.5 and white < 0.1, (top, left, grey, white)
    assert summary["png"] == str(png) and summary["sphere_run"] == str(sphere)

    assert diagnosis.main(["errors", "--sphere", str(flat), "--flat", str(sphere), "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert f"--sphere {flat}" in err and "flat domain" in err and "healpix model" in err


@pytest.mark.parametrize("argv, words", [
    ([], ["required", "oracle,errors"]),
    (["oracle", "--frames", "0"], ["--frames 0", "at least 1"]),
    (["oracle", "--nsides", "32", "3"], ["--nsides 3", "power of two"]),
    (["oracle", "--flat", "64x"], ["--flat", "'64x' must be HxW"]),
    (["oracle", "--flat", "0x96"], ["--flat", "'0x96'", "at least 1"]),
    (["oracle", "--seed", "-1"], ["--seed -1", ">= 0"]),
    (["errors", "--sphere", "{tmp}/a"], ["--flat", "required"]),
    (["errors", "--sphere", "{tmp}/a", "--flat", "{tmp}/b"], ["--sphere {tmp}/a", "not a run directory"]),
    (["errors", "--sphere", "{tmp}/a", "--flat", "{tmp}/b", "--out", "{tmp}/maps.jpg"],
     ["--out {tmp}/maps.jpg", ".png"]),
    (["errors", "--sphere", "{tmp}/a", "--flat", "{tmp}/b", "--threads", "0"], ["--threads 0", "at least 1"]),
])
def test_the_command_line_refuses_bad_values(tmp_path, capsys, argv, words):
    """Exit status 2 and a message naming the flag, the value and the rule, before any work (no data made)."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    root = ["--root", str(tmp_path / "data")] if argv[:1] == ["oracle"] else []
    assert diagnosis.main([*argv, *root]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word.replace("{tmp}", str(tmp_path)) in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_help_shows_examples(capsys):
    assert diagnosis.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "oracle" in out and "errors --sphere" in out
    for command in ("oracle", "errors"):
        assert diagnosis.main([command, "--help"]) == 0
        assert f"examples:\n  {diagnosis.PROG} {command}" in capsys.readouterr().out


def test_the_bench_study_file_trains_the_pair_and_draws_its_maps(data_root, tmp_path, monkeypatch):
    """bench/learning/error_maps.py (a study file of heal-swin-study): the learning study's pair and settings;
    its report hands the two run directories to `error_maps`."""
    import argparse

    from heal_swin.study.cli import load_study_file

    module = load_study_file(ROOT / "bench" / "learning" / "error_maps.py")
    study = module.make(argparse.Namespace(steps=None, set=[]))
    assert [(a.model, a.task, a.seed) for a in study.arms] == [
        ("heal_swin_tiny", "segmentation", 0), ("swin_unet_flat_tiny@64x96", "segmentation", 0)]
    assert study.arms[1].spec.overrides()[-1] == "data.flat_size=[64,96]"
    assert {"data.generate=false", "train.max_steps=150", "train.eval_every=25",
            "data.split_fractions=[0.75,0.25,0.0]"} <= set(study.overrides)
    (tmp_path / "data").symlink_to(data_root)          # a tree is there: prepare only points at it
    assert study.prepare(tmp_path) == [f"data.root={tmp_path / 'data'}"]
    given = module.make(argparse.Namespace(steps=40, set=[f"data.root={data_root}"]))
    assert given.prepare(tmp_path / "elsewhere") == [] and not (tmp_path / "elsewhere").exists()
    assert {"train.max_steps=40", "train.eval_every=6"} <= set(given.overrides)
    drawn = []
    monkeypatch.setattr(module, "error_maps", lambda *args: drawn.append(args))
    study.report(tmp_path, [{"model": "swin_unet_flat_tiny@64x96", "run_dir": "f"},
                            {"model": "heal_swin_tiny", "run_dir": "s"}])
    assert drawn == [("s", "f", tmp_path / "error_maps.png")]
