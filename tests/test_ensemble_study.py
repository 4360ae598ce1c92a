"""Issue #28, item 3: weight snapshots along training (train.snapshot_every), the equivariance tools reading a
snapshot by name, and the emergent-equivariance study (bench/ensembles/study.py): its arms and a two-step
version of it run end to end."""

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from heal_swin.engine import ConfigError, list_snapshots, load_config, main, weights_step
from heal_swin.study import StudyError
from heal_swin.tools import equivariance as eq

from pictures import read_png

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "bench" / "ensembles" / "study.py"
TINY = ["data.nside=8", "data.digits.train=8", "data.digits.test=4", "data.digits.digits=[1,2]", "run.threads=1",
        "run.log_every=1"]


def _train(run_dir, steps, snapshot_every, *extra):
    return main(load_config(ROOT / "configs" / "digits_chart_cnn.yaml", [
        f"run.dir={run_dir}", *TINY, f"train.max_steps={steps}", f"train.eval_every={steps}",
        f"train.snapshot_every={snapshot_every}", "train.checkpoint_every=1", "train.resume=true", *extra]))


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def snapshotted(tmp_path_factory):
    """A run trained 2 steps with a snapshot every step, then resumed to 4, with a stale snapshot of a later
    step planted before the resume: (run dir, {name: bytes before the resume})."""
    run = tmp_path_factory.mktemp("snap") / "run"
    _train(run, 2, 1)
    weights = run / "weights"
    before = {p.name: p.read_bytes() for p in weights.glob("step-*.safetensors")}
    (weights / "step-000007.safetensors").write_bytes(before["step-000002.safetensors"])  # not this trajectory's
    _train(run, 4, 1)
    return run, before


def test_snapshots_are_written_every_n_steps_and_resume_keeps_them(snapshotted):
    run, before = snapshotted
    assert sorted(before) == ["step-000001.safetensors", "step-000002.safetensors"]
    assert list_snapshots(run) == ["step-000001", "step-000002", "step-000003", "step-000004"]
    for name, data in before.items():                       # the resumed run kept the earlier snapshots as they were
        assert (run / "weights" / name).read_bytes() == data
    assert not (run / "weights" / "step-000007.safetensors").exists()   # after the resumed step: removed
    for step in range(1, 5):
        assert weights_step(run / "weights" / f"step-{step:06d}.safetensors") == step
    last, final = _tensors(run / "weights" / "last.safetensors"), _tensors(run / "weights" / "step-000004.safetensors")
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in last)
    first = _tensors(run / "weights" / "step-000001.safetensors")
    assert any(not torch.equal(first[k], final[k]) for k in first)   # snapshots along training differ
    assert not list((run / "weights").glob(".*.tmp"))


def test_snapshots_every_two_steps_and_none_by_default(tmp_path):
    _train(tmp_path / "a", 4, 2)
    assert list_snapshots(tmp_path / "a") == ["step-000002", "step-000004"]
    _train(tmp_path / "b", 2, 0)
    assert list_snapshots(tmp_path / "b") == [] and (tmp_path / "b" / "weights" / "last.safetensors").is_file()


@pytest.mark.parametrize("value, message", [
    ("-1", "train.snapshot_every=-1 must be an integer >= 0 or null (0 or null: no snapshots)"),
    ("true", "train.snapshot_every: Value 'True' of type 'bool' could not be converted to Integer"),
    ("9", "train.snapshot_every=9 must be at most train.max_steps=4 (else the run writes no snapshot)"),
])
def test_bad_snapshot_values_are_refused(value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ROOT / "configs" / "digits_chart_cnn.yaml", ["train.max_steps=4", f"train.snapshot_every={value}"])
    with pytest.raises(ConfigError, match="snapshot_every"):
        load_config(ROOT / "configs" / "digits_chart_cnn.yaml", ["train.snapshot_every=1.5"])
    for ok in ("0", "null", "4"):
        load_config(ROOT / "configs" / "digits_chart_cnn.yaml", ["train.max_steps=4", f"train.snapshot_every={ok}"])


def test_the_equivariance_tools_read_a_snapshot_by_name(snapshotted, capsys):
    run, _ = snapshotted
    rows = eq.ensemble_errors([run, run], "test", samples=2, rotations=1, weights="step-000001")
    assert [r["k"] for r in rows] == [1, 2]
    # two copies of one member: the mean is the member, so every K measures the same
    assert rows[0]["ensemble_error"] == rows[1]["ensemble_error"] == rows[1]["member_error"]
    with pytest.raises(eq.EquivarianceError, match=r"step-000099.safetensors: no such snapshot; the run holds "
                                                    r"step-000001, step-000002, step-000003, step-000004"):
        eq.load_runs([run], "test", 2, weights="step-000099")
    assert eq.main([str(run), "--weights", "step-000099", "--samples", "1", "--rotations", "0"]) == 2
    assert "no such snapshot" in capsys.readouterr().err
    assert eq.main([str(run), "--weights", "newest", "--samples", "1"]) == 2
    assert "must be best, last or a snapshot along training, step-NNNNNN" in capsys.readouterr().err
    result = eq.report([run], "test", rotations=1, samples=1, out=run / "eq", progress=False, weights="step-000002")
    assert result["samples"] == 1


def _options(**kw):
    base = dict(models=None, seeds=None, steps=None, tasks=None, set=[], full=False, device=None, members=None,
                ensemble_models=None, snapshots=None, ensemble_samples=None, ensemble_rotations=None)
    return argparse.Namespace(**{**base, **kw})


def test_the_ensemble_study_file_declares_its_arms():
    from heal_swin.study.cli import load_study_file

    module = load_study_file(STUDY)
    s = module.make(_options())
    assert len(s.arms) == 2 * 2 * 8                          # two models, two augmentations, eight members
    assert {a.model for a in s.arms} == {"chart_cnn_tiny", "planar_cnn_1x"}
    assert {a.tags["augment"] for a in s.arms} == {0.0, 1.0}
    assert sorted({a.seed for a in s.arms}) == list(range(8))
    assert all({"train.max_steps=600", "train.snapshot_every=150", "train.checkpoint_every=150"} <= set(a.overrides)
               for a in s.arms)
    assert module.points(400, 4) == [("step-000100", 100), ("step-000200", 200), ("step-000300", 300),
                                     ("step-000400", 400)]
    assert module.points(10, 3) == [("step-000003", 3), ("step-000006", 6), ("step-000009", 9), ("last", 10)]
    full = module.make(_options(full=True))
    assert len(full.arms) == 2 * 2 * 16 and "data.nside=32" in full.overrides
    assert len(module.make(_options(members=3, ensemble_models=["chart_cnn_tiny"])).arms) == 2 * 3
    with pytest.raises(StudyError, match="--members 0 must be a whole number >= 1"):
        module.make(_options(members=0))
    with pytest.raises(StudyError, match="--snapshots 5 must be at most the steps"):
        module.make(_options(steps=4, snapshots=5))
    with pytest.raises(StudyError, match="use --members"):
        module.make(_options(seeds=3))
    with pytest.raises(StudyError, match="'nope'"):
        module.make(_options(ensemble_models=["nope"]))


def test_a_two_step_ensemble_study_runs_end_to_end(tmp_path, capsys):
    from heal_swin.study.cli import main as study

    out = tmp_path / "out"
    argv = [str(STUDY), "--out", str(out), "--members", "2", "--steps", "2", "--snapshots", "2",
            "--ensemble-samples", "2", "--ensemble-rotations", "1", "--threads", "1",
            "--set", "data.nside=8", "data.digits.train=8", "data.digits.test=4", "data.digits.digits=[1,2]"]
    assert study(argv) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "ensembles.jsonl").read_text().splitlines()]
    # two models × two augmentations × two snapshots × K = 1, 2
    assert len(rows) == 16
    assert {(r["model"], r["augment"], r["weights"], r["k"]) for r in rows} == {
        (m, a, w, k) for m in ("chart_cnn_tiny", "planar_cnn_1x") for a in (0.0, 1.0)
        for w in ("step-000001", "step-000002") for k in (1, 2)}
    for r in rows:
        assert 0 <= r["ensemble_error"] <= 1 and 0 <= r["member_error"] <= 1 and 0 <= r["floor"] <= 1
        if r["k"] == 1:
            assert r["ensemble_error"] == r["member_error"]   # an ensemble of one is its member
    text = (out / "results.md").read_text()
    assert "## Ensembles" in text and "| chart_cnn_tiny | full | 1 |" in text and "| planar_cnn_1x | none | 2 |" in text
    assert "ensemble measure: chart_cnn_tiny, augmentation full, step 1" in printed
    read_png(out / "ensemble_error_vs_k.png", min_size=(600, 400), min_colours=4)
    read_png(out / "ensemble_error_vs_step.png", min_size=(600, 300), min_colours=4)
    # a rerun trains nothing and measures nothing: the kept rows are reused
    assert study(argv) == 0
    printed = capsys.readouterr().out
    assert "0 runs to train (8 kept)" in printed and "ensemble measure:" not in printed
    assert len((out / "ensembles.jsonl").read_text().splitlines()) == 16
    assert (out / "results.md").read_text().count("## Ensembles") == 1
