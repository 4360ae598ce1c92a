"""Issue 12, the run directory: kills during checkpoint writes, resuming with another config, stale
temporaries, the metrics log on resume, fresh runs in used directories, missing datasets.

A SIGKILL is delivered inside `os.replace` of `state/last.pt` by a child process that patches it, so
the kill lands between the weights and the resume state of one checkpoint: the weights one step
ahead of the state, the state's temporary file left behind, the log written past the state.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from heal_swin.engine import ConfigError, load_config, trainer, weights_step
from heal_swin.engine.checkpoint import load_state

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"

_KILLED_AT_SECOND_STATE_WRITE = """
import os, signal, sys
from heal_swin.engine import load_config, trainer

real_replace = os.replace
writes = []

def replace(src, dst):
    if str(dst).endswith("last.pt"):
        writes.append(dst)
        if len(writes) == 2:  # the temporary is written, the rename never happens
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)

os.replace = replace
trainer.main(load_config(sys.argv[1], sys.argv[2:]))
"""


pytestmark = pytest.mark.usefixtures("run_env")  # data_root and run_env: tests/conftest.py


def _overrides(data_root, run_dir, *extra):
    return [f"run.dir={run_dir}", f"data.root={data_root}", "data.generate=false", "data.nside=8",
            "data.batch_size=2", "data.split_fractions=[0.5,0.5,0.0]", "run.log_every=1", "train.max_steps=4",
            "train.warmup_steps=0", "train.eval_every=2", "train.checkpoint_every=1", "run.deterministic=true",
            "run.threads=1", "model.kwargs.drop_path_rate=0.0", "eval.backproject=false", *extra]


def _cfg(data_root, run_dir, *extra):
    return load_config(DEMO, _overrides(data_root, run_dir, *extra))


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(run_dir, name="last"):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "weights" / f"{name}.safetensors"))


def test_kill_between_weights_and_state_resumes_consistently(data_root, tmp_path):
    """Items 10–12: a SIGKILL inside the second resume-state write (step 2) leaves its temporary and
    weights of step 2 beside the state of step 1. Resuming removes the temporary, rewrites the weights
    from the state, drops the log lines after step 1 and ends where the uninterrupted run ends."""
    run = tmp_path / "killed"
    child = subprocess.run([sys.executable, "-c", _KILLED_AT_SECOND_STATE_WRITE, str(DEMO),
                            *_overrides(data_root, run)], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    stale = list((run / "state").glob(".last.pt.*.tmp"))
    assert len(stale) == 1
    assert load_state(run / "state" / "last.pt")["step"] == 1
    assert weights_step(run / "weights" / "last.safetensors") == 2  # one step ahead of the state
    assert max(r["step"] for r in _log(run)) == 2

    trainer.main(_cfg(data_root, run, "train.resume=true"))
    assert not list((run / "state").glob("*.tmp"))
    steps = [r["step"] for r in _log(run) if "loss" in r]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4], steps  # every step logged once

    reference = tmp_path / "uninterrupted"
    trainer.main(_cfg(data_root, reference))
    ours, theirs = _weights(run), _weights(reference)
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k


def test_sync_rewrites_weights_that_ran_ahead(data_root, tmp_path):
    """Item 12 alone: after resuming from the state of step 1 the weights file is that state's model."""
    run = tmp_path / "r"
    subprocess.run([sys.executable, "-c", _KILLED_AT_SECOND_STATE_WRITE, str(DEMO), *_overrides(data_root, run)],
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    state = load_state(run / "state" / "last.pt")
    trainer.main(_cfg(data_root, run, "train.resume=true", "train.max_steps=1"))
    assert weights_step(run / "weights" / "last.safetensors") == 1
    weights = _weights(run)
    for k, v in state["model"].items():
        assert torch.equal(weights[k], v), k


def test_resume_refuses_a_config_that_changes_the_computation(data_root, tmp_path):
    """Item 3: nside and lr changes are refused, with the differences listed; max_steps may change,
    and the change is recorded as a resume event."""
    run = tmp_path / "r"
    trainer.main(_cfg(data_root, run, "train.max_steps=2"))
    with pytest.raises(ConfigError) as err:
        trainer.main(_cfg(data_root, run, "train.resume=true", "data.nside=16", "train.lr=1e-3"))
    text = str(err.value)
    assert "data.nside: 8 -> 16" in text and "train.lr: 0.002 -> 0.001" in text, text
    assert load_state(run / "state" / "last.pt")["step"] == 2  # nothing was touched

    trainer.main(_cfg(data_root, run, "train.resume=true", "train.max_steps=3"))
    events = [r for r in _log(run) if r.get("event") == "resume"]
    assert len(events) == 1 and events[0]["changes"]["train.max_steps"] == [2, 3], events
    assert load_config(run / "config.yaml").train.max_steps == 3


def test_fresh_run_refuses_a_used_directory(data_root, tmp_path):
    """Item 11: a run killed before its first checkpoint leaves a log; a new run does not append to it."""
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 7, "loss": 1.0}) + "\n")
    with pytest.raises(ConfigError, match="run.overwrite=true"):
        trainer.main(_cfg(data_root, run, "train.max_steps=1"))
    trainer.main(_cfg(data_root, run, "train.max_steps=1", "train.resume=true"))  # nothing to resume
    assert all(r["step"] <= 1 for r in _log(run))
    with pytest.raises(ConfigError, match="already holds a run"):
        trainer.main(_cfg(data_root, run, "train.max_steps=1"))
    trainer.main(_cfg(data_root, run, "train.max_steps=2", "run.overwrite=true"))
    assert max(r["step"] for r in _log(run)) == 2 and load_state(run / "state" / "last.pt")["step"] == 2


def test_missing_dataset_is_one_line_with_the_fix(tmp_path):
    """Item 14: a shipped WoodScape config without the dataset."""
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "woodscape_seg.yaml"),
                          f"run.dir={tmp_path / 'r'}", f"data.root={tmp_path / 'woodscape'}"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "does not exist" in lines[0] and "data.root=" in lines[0] and "configs/demo.yaml" in lines[0]
