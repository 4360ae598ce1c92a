"""Every command of the README and configs/README.md, run as written (issue 12, item 13).

The commands run in a scratch folder that holds the repository's `configs/`, `train.py` and
`export.py`; `.venv/bin/` means this interpreter's folder. The README's synthetic-data command
writes `data/synthetic`, a short demo (`heal_swin.demo`, 2 steps at nside 8) writes `runs/demo`,
the rig demo's config (2 steps at nside 8) writes `runs/demo_rig/run`, and then every other command runs against those outputs in the README's order, so a README that
drifts from the program fails here. Commands that cannot run in a test say why in `NOT_RUN` (set-up,
the test suite itself, several GPUs, datasets that are not shipped); those are still checked as far
as they can be without running: make targets exist, train.py configs and overrides load.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "configs" / "README.md"]
BIN = Path(sys.executable).parent

# first words -> why the command is not run here
NOT_RUN = {
    "make": "set-up and the test suite itself (checked: the target exists in the Makefile)",
    "python3": "creates the virtual environment (CI does)",
    "pip": "installs packages (CI does)",
    "torchrun": "several processes or GPUs (checked: its config and overrides load)",
    "srun": "a SLURM cluster (checked: its config and overrides load)",
    "pytest": "the test suite itself",
}
# real datasets are not shipped: their check commands run on the synthetic tree, which has their layout
DATASETS = {"data/woodscape": "data/synthetic", "data/synwoodscape": "data/synthetic"}


def _commands(path: Path) -> list[str]:
    """The logical command lines of the bash blocks of a Markdown file (continuations joined)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(line.strip())
    return out


def _program(words: list[str]) -> str:
    first = words[0]
    if first.startswith(".venv/bin/"):
        first = first[len(".venv/bin/"):]
    if first == "python" and words[1:2] == ["-m"]:
        return words[2]
    if first == "python":
        return words[1]
    return first


def _config_loads(words: list[str]) -> None:
    """train.py --config C k=v …, as torchrun or srun would start it: the config and overrides load."""
    from heal_swin.engine import load_config

    i = words.index("--config")
    overrides = [w for w in words[i + 2:] if "=" in w and not w.startswith("-")]
    load_config(ROOT / words[i + 1], overrides)


def _check_not_run(words: list[str], line: str) -> None:
    first = _program(words)
    if first == "make":
        targets = re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M)
        assert all(t in targets for t in words[1:]), f"{line}: no such make target (Makefile has {targets})"
    elif first in ("torchrun", "srun"):
        _config_loads(words[words.index("train.py"):])


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    box = tmp_path_factory.mktemp("readme")
    for name in ("configs", "train.py", "export.py"):
        (box / name).symlink_to(ROOT / name)
    return box


def _run(words: list[str], box: Path, line: str, timeout: int = 600) -> str:
    if words[0].startswith(".venv/bin/"):
        words = [str(BIN / words[0][len(".venv/bin/"):])] + words[1:]
    words = [DATASETS.get(w, w) for w in words]
    env = {**os.environ, "HEAL_SWIN_CACHE": str(box / ".cache"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(words, cwd=box, capture_output=True, text=True, timeout=timeout, env=env)
    if "--int8" in words and out.returncode == 1:
        # int8's accuracy depends on the trained weights, which is why export.py checks it: the 2-step
        # demo model's logits are nearly tied, and exit 1 with the report is the documented answer
        assert "tolerance: int8" in out.stdout and "FAILED" in out.stdout, out.stdout[-2000:]
        return out.stdout
    assert out.returncode == 0, f"README command failed ({out.returncode}): {line}\n{out.stderr[-3000:]}"
    return out.stdout


def _runs_training(words: list[str]) -> bool:
    """train.py --config …: training runs (minutes); the demo stands in for them, their configs load."""
    return _program(words) == "train.py" and "--config" in words


@pytest.mark.slow
def test_every_readme_command_runs_as_written(sandbox):
    lines = [line for doc in DOCS for line in _commands(doc)]
    assert len(lines) > 20, "the README's command blocks were not found"
    synthetic = [line for line in lines if "heal_swin.data.synthetic" in line]
    assert synthetic, "the README no longer shows how to generate the synthetic data"
    _run(shlex.split(synthetic[0], comments=True), sandbox, synthetic[0])
    _run([sys.executable, "-m", "heal_swin.demo", "--out", "runs/demo", "--data", "data/synthetic", "--steps", "2",
          "--nside", "8", "--preview-nside", "16"], sandbox, "the demo")
    # the rig demo's run (configs/demo_rig.yaml, 2 steps at nside 8) for the rig commands (export.py --rig, …)
    _run([sys.executable, "train.py", "--config", "configs/demo_rig.yaml", "data.nside=8", "train.max_steps=2",
          "eval.figures=0"], sandbox, "the rig demo")
    ran = []
    for line in lines:
        words = shlex.split(line, comments=True)
        program = _program(words)
        if program in NOT_RUN or words[0] in NOT_RUN:
            _check_not_run(words, line)
        elif _runs_training(words):
            _config_loads(words)
        elif "heal_swin.data.synthetic" not in line:
            _run(words, sandbox, line)
            ran.append(program)
    for expected in ("heal-swin-preview", "export.py", "heal-swin-infer", "train.py", "heal_swin.data.woodscape"):
        assert expected in ran, f"no README command of {expected} was run"
