"""heal_swin.study: arms and the model-spec grammar, training into run directories, keep-finished resume,
results rebuilt from the runs, a study killed and rerun, locks, the report, --merge, the CLI's refusals and
the two benchmark study files."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heal_swin import study
from heal_swin.study import Arm, Study, StudyError, parse_model_spec

from pictures import read_png

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("sklearn")
# spheres of digits: no data tree, a few seconds per run
TINY = ["data.nside=8", "data.digits.train=8", "data.digits.test=4", "data.digits.digits=[1,2]", "run.threads=1",
        "train.max_steps=2", "train.eval_every=1", "run.log_every=1"]


def _study(arms, name="t", overrides=TINY):
    return Study(name, "configs/digits_gauge_cnn.yaml", arms, overrides=list(overrides))


def test_model_spec_grammar():
    spec = parse_model_spec("gauge_cnn_tiny:widths=[4,8],depths=[1,1]")
    assert spec.name == "gauge_cnn_tiny" and dict(spec.kwargs) == {"widths": [4, 8], "depths": [1, 1]}
    assert "model.kwargs.widths=[4,8]" in spec.overrides()
    assert parse_model_spec("heal_swin_tiny:symmetric=true").kwargs == (("symmetric", True),)
    assert parse_model_spec("swin_unet_flat_tiny@96x128").overrides() == [
        "model.name=swin_unet_flat_tiny", "data.flat_size=[96,128]"]
    with pytest.raises(StudyError, match="'nope'"):
        parse_model_spec("nope")
    with pytest.raises(StudyError, match="heal_swin_tiny is a healpix model"):
        parse_model_spec("heal_swin_tiny@96x128")
    with pytest.raises(StudyError, match="HxW in whole pixels >= 8"):
        parse_model_spec("swin_unet_flat_tiny@96by128")
    with pytest.raises(StudyError, match="must be key=value"):
        parse_model_spec("gauge_cnn_tiny:widths")


def test_arms_get_their_own_directories_and_duplicates_are_refused():
    a, b = Arm("gauge_cnn_tiny", seed=0), Arm("gauge_cnn_tiny", seed=1)
    c = Arm("gauge_cnn_tiny", overrides=["train.lr=1e-3"], seed=0)
    names = {x.run_name(TINY) for x in (a, b, c)}
    assert len(names) == 3
    assert a.run_name(TINY) != a.run_name([*TINY, "train.max_steps=3"])   # other settings: another directory
    assert a.run_name(TINY) == Arm("gauge_cnn_tiny", seed=0, label="x").run_name(TINY)   # labels compute nothing
    with pytest.raises(StudyError, match="more than once"):
        _study([a, Arm("gauge_cnn_tiny", seed=0)])
    with pytest.raises(StudyError, match="seed=-1 must be an integer >= 0"):
        Arm("gauge_cnn_tiny", seed=-1)
    with pytest.raises(StudyError, match="must be KEY=VALUE"):
        Arm("gauge_cnn_tiny", overrides=["train.lr"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two models × two seeds, one extra evaluation each: a finished study folder."""
    out = tmp_path_factory.mktemp("study")
    arms = [Arm(m, seed=s, evaluations={"rotated": ["eval.split=test", "data.digits.eval_rotate=1.0"]})
            for m in ("gauge_cnn_tiny", "heal_swin_tiny") for s in (0, 1)]
    rows = study.run_study(_study(arms), out)
    return out, arms, rows


def test_arms_train_into_ordinary_run_directories(trained):
    out, arms, rows = trained
    assert sorted((r["model"], r["seed"]) for r in rows) == [("gauge_cnn_tiny", 0), ("gauge_cnn_tiny", 1),
                                                             ("heal_swin_tiny", 0), ("heal_swin_tiny", 1)]
    for r in rows:
        run = Path(r["run_dir"])
        assert {"config.yaml", "metrics.jsonl", "weights", "state", "study.json", "eval-rotated"} <= \
            {p.name for p in run.iterdir()}
        assert r["steps"] == 2 and r["grid"] == "nside 8" and r["params"] > 0
        assert 0 <= r["result"]["sphere"]["miou"] <= 1 and 0 <= r["evaluations"]["rotated"]["sphere"]["miou"] <= 1
    steps, values = study.curve(rows[0]["run_dir"], "miou")
    assert steps == [1, 2] and len(values) == 2


def test_the_report_has_a_row_per_group_and_a_drawn_figure(trained):
    out, _, rows = trained
    text = (out / "results.md").read_text()
    assert "| segmentation | gauge_cnn_tiny | nside 8 | " in text and "| segmentation | heal_swin_tiny | nside 8 | " in text
    assert "eval `rotated`" in text and "| model | background | 0 |" in text
    assert text.count(" ± ") >= 2 * 3                        # metric, second metric, the evaluation
    read_png(out / "curves.png", min_size=(600, 400), min_colours=5)
    assert len((out / "results.jsonl").read_text().splitlines()) == 4


def test_a_rerun_keeps_every_finished_run(trained, capsys):
    out, arms, _ = trained
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/weights/last.safetensors")}
    study.run_study(_study(arms), out)
    assert "0 runs to train (4 kept)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/weights/last.safetensors")} == before


def test_damaged_or_deleted_results_are_rebuilt_from_the_runs(trained, capsys):
    out, arms, _ = trained
    path = out / "results.jsonl"
    path.write_text(path.read_text()[:-5])                    # a write cut short
    assert len(study.read_rows(out)) == 4                     # the rows come from the run directories
    path.unlink()
    rows = study.run_study(_study(arms), out)
    assert "0 runs to train (4 kept)" in capsys.readouterr().out and len(rows) == 4
    assert len(path.read_text().splitlines()) == 4


def test_merge_names_groups_by_the_settings_they_do_not_share(trained, tmp_path):
    out, _, _ = trained
    other = tmp_path / "lr"
    study.run_study(_study([Arm("gauge_cnn_tiny", seed=0)], overrides=[*TINY, "train.lr=1e-3"]), other)
    merged = tmp_path / "merged"
    rows = study.merge([out, other], merged)
    assert len(rows) == 5
    text = (merged / "results.md").read_text()
    assert "| gauge_cnn_tiny (train.lr=1e-3) |" in text and "| heal_swin_tiny |" in text
    with pytest.raises(StudyError, match="not a study folder"):
        study.merge([tmp_path / "nowhere"], merged)


def test_a_locked_run_directory_is_not_trained_twice(tmp_path):
    from heal_swin.study._runner import run_lock

    arm = Arm("gauge_cnn_tiny")
    run_dir = tmp_path / "runs" / arm.run_name(TINY)
    with run_lock(run_dir):
        with pytest.raises(StudyError, match="being trained by another process"):
            study.run_study(_study([arm]), tmp_path)


STUDY_FILE = '''
from heal_swin.study import Arm, Study

def make(options):
    tiny = {tiny!r}
    return Study("killed", {config!r}, [Arm("gauge_cnn_tiny", overrides=["train.max_steps=2"]),
                                        Arm("heal_swin_tiny", overrides=["train.max_steps=60"])],
                 overrides=[*tiny, "train.checkpoint_every=1", "train.eval_every=0", "train.epochs=1000"])
'''


def test_a_study_killed_mid_run_loses_nothing_and_resumes(tmp_path, capsys):
    """SIGKILL of the study's process while the second arm trains: the first arm's run is kept as it was,
    the second resumes from its last state, and nothing is trained twice."""
    path = tmp_path / "killed.py"
    path.write_text(STUDY_FILE.format(tiny=TINY, config=str(ROOT / "configs" / "digits_gauge_cnn.yaml")))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "heal_swin.study.cli", str(path), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            states = list(out.glob("runs/segmentation-heal_swin_tiny-*/state/last.pt"))
            if states and list(out.glob("runs/segmentation-gauge_cnn_tiny-*/study.json")):
                import torch

                try:
                    if torch.load(states[0], weights_only=True)["step"] >= 3:
                        break
                except Exception:                          # read while being replaced: look again
                    pass
            time.sleep(0.1)
        else:
            pytest.fail("the study did not reach the second arm's step 3 in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = next(out.glob("runs/segmentation-gauge_cnn_tiny-*"))
    kept = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    second = next(out.glob("runs/segmentation-heal_swin_tiny-*"))
    assert not (second / "study.json").exists()
    import torch

    before = torch.load(second / "state" / "last.pt", weights_only=True)["seconds"]
    from heal_swin.study.cli import main

    assert main([str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 runs to train (1 kept)" in printed and "resuming" in printed
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file() and p.name != ".study.lock"} == \
        {p: t for p, t in kept.items() if p.name != ".study.lock"}
    row = json.loads((second / "study.json").read_text())
    assert row["steps"] == 60
    assert row["train_seconds"] > before > 0          # the killed part's time counts in the run's time
    assert len(torch.load(second / "state" / "last.pt", weights_only=True)["losses"]) == 60   # each step once


def _children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_die_with_the_study_process(tmp_path):
    """Issue #31, item 4: SIGKILL of the study's own process (not its group) with --workers 2: its pool workers
    die with it instead of training queued runs whose rows are never written."""
    path = tmp_path / "killed.py"
    path.write_text(STUDY_FILE.replace('overrides=["train.max_steps=2"]', 'overrides=["train.max_steps=500"]')
                    .replace('"train.max_steps=60"', '"train.max_steps=500"')
                    .format(tiny=TINY, config=str(ROOT / "configs" / "digits_gauge_cnn.yaml")))
    cmd = [sys.executable, "-m", "heal_swin.study.cli", str(path), "--out", str(tmp_path / "out"), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(list((tmp_path / "out").glob("runs/*/state/last.pt"))) < 1:
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers                          # both workers are training
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(map(_alive, workers)):
            time.sleep(0.2)
        alive = [w for w in workers if _alive(w)]
        assert not alive, f"workers {alive} outlived the study process"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_command_line_refuses_bad_options_before_any_work(tmp_path, capsys):
    from heal_swin.study.cli import main

    learning = str(ROOT / "bench" / "learning" / "study.py")
    assert main([learning, "--models", "gauge_cnn_tiny", "gauge_cnn_tiny", "--out", str(tmp_path)]) == 2
    assert "more than once" in capsys.readouterr().err
    assert main([learning, "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds 0 must be >= 1" in capsys.readouterr().err
    assert main([str(tmp_path / "nope.py")]) == 2
    assert "study file not found" in capsys.readouterr().err
    assert main(["--merge", str(tmp_path)]) == 2
    assert "--merge needs --out" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    # issue #31, item 7: a bad value is found before any run trains, and a --set that an arm overrides is refused
    digits = str(ROOT / "bench" / "rotated_digits" / "study.py")
    assert main([digits, "--models", "gauge_cnn_tiny", "--set", "data.digits.train=0", "--out", str(tmp_path)]) == 2
    assert "arm gauge_cnn_tiny (seed 0): " in (err := capsys.readouterr().err) and "data.digits.train=0" in err
    assert main([digits, "--models", "gauge_cnn_tiny", "--set", "data.digits.rotate=1", "--out", str(tmp_path)]) == 2
    assert "--set data.digits.rotate: study rotated_digits's arm gauge_cnn_tiny" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def _options(**kw):
    base = dict(models=None, seeds=None, steps=None, tasks=None, set=[], full=False, device=None, augment=None,
                evals=6, frames=None, data=None,
                steps_scale=None, ensemble=5, ensemble_models=["heal_swin_tiny", "swin_unet_flat_tiny"],
                ensemble_rotations=4)
    return argparse.Namespace(**{**base, **kw})


def test_the_benchmark_study_files_declare_their_arms():
    from heal_swin.study.cli import load_study_file

    learning = load_study_file(ROOT / "bench" / "learning" / "study.py").make(_options())
    assert len(learning.arms) == 4 * 2 * 3                  # four backbones, two tasks, three seeds
    flat = [a for a in learning.arms if a.model == "swin_unet_flat_tiny"]
    assert all("data.flat_size=[64,96]" in a.overrides for a in flat)
    assert "train.max_steps=300" in learning.overrides
    full = load_study_file(ROOT / "bench" / "learning" / "study.py").make(_options(full=True))
    assert "data.nside=256" in next(a for a in full.arms if a.model == "heal_swin_tiny").overrides

    digits = load_study_file(ROOT / "bench" / "rotated_digits" / "study.py")
    s = digits.make(_options())
    levels = {(a.model, a.tags["augment"]) for a in s.arms}
    assert ("s2cnn_digits", 0.25) not in levels and ("s2cnn_digits", 1.0) in levels   # equivariant: 0 and 1
    assert ("gauge_cnn_tiny", 0.25) in levels
    # 3 seeds per level, 5 ensemble members at full augmentation for the ensemble models
    assert sum(a.model == "heal_swin_tiny" and a.tags["augment"] == 1.0 for a in s.arms) == 5
    assert len(s.arms) == 52
    # every family's own budget (configs/digits_<family>.yaml): since issue #27 the S2CNN trains as long as the others
    assert "train.max_steps=400" in next(a for a in s.arms if a.model == "s2cnn_digits").overrides
    same = digits.make(_options(steps=250))
    assert all("train.max_steps=250" in a.overrides for a in same.arms)
    with pytest.raises(StudyError, match="distinct fractions"):
        digits.make(_options(augment=[0.5, 0.5]))

    controls = load_study_file(ROOT / "bench" / "controls" / "study.py")
    c = controls.make(_options(evals=8))
    assert len(c.arms) == 5 * 2 * 2                        # five models, two tasks, two seeds
    cls = [a for a in c.arms if a.task == "classification"]
    assert cls and all("data.digits.digits=[1,1]" in a.overrides and "train.metric=accuracy" in a.overrides
                       for a in cls)
    assert {a.model for a in c.arms} >= {"gauge_cnn_tiny", "chart_cnn_tiny", "planar_cnn_1x"}
    with pytest.raises(StudyError, match="choose from"):
        controls.make(_options(evals=8, tasks=["depth"]))


def test_a_relabelled_arm_keeps_its_run_and_reports_under_its_new_label(trained, capsys):
    """Labels and tags compute nothing: a rerun with new ones trains nothing and reports the finished runs
    under the new names."""
    out, arms, _ = trained
    renamed = [Arm(a.model, seed=a.seed, evaluations=a.evaluations, label=f"{a.model} (renamed)", tags={"k": 1})
               for a in arms]
    rows = study.run_study(_study(renamed), out)
    assert "0 runs to train (4 kept)" in capsys.readouterr().out
    assert len(rows) == 4 and {r["group"] for r in rows} == {"gauge_cnn_tiny (renamed)", "heal_swin_tiny (renamed)"}
    assert all(r["tags"] == {"k": 1} for r in rows)
