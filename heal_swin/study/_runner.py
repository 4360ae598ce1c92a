"""Running a study: every arm trains through the engine into an ordinary run directory.

- Keep-finished: a run directory holds `study.json` (its arm and result row) once its training and its
  evaluations are done; a rerun keeps it. Other settings get another directory (`Arm.run_name` hashes
  what the run computes), so nothing a finished run produced is overwritten.
- Resume: an arm whose directory has no `study.json` yet resumes from its last state (`train.resume=true`).
- `results.jsonl` is derived: it is rebuilt from the run directories after every finished run (atomically),
  so a damaged or deleted file costs nothing.
- A run directory is locked (`.study.lock`, flock) while a process trains it; worker processes die with
  the process that started them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ._arms import Arm, StudyError
from ._report import write_report

__all__ = ["Study", "run_study", "read_rows", "collect_rows", "merge", "synthetic_tree", "STUDY_FILE", "RESULTS"]

STUDY_FILE = "study.json"
RESULTS = "results.jsonl"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Study:
    """A study: its `arms`, the base `config` (a YAML path; relative paths are read from the repository
    root or the working directory), `overrides` for every arm, and optional hooks: `prepare(out) -> [overrides]`
    makes shared data before any run (e.g. a synthetic tree) and returns overrides pointing at it;
    `report(out, rows)` draws what the study adds to the common report (`heal_swin.study.write_report`)."""
    name: str
    config: str
    arms: list[Arm]
    overrides: list = field(default_factory=list)
    prepare: Callable | None = None
    report: Callable | None = None
    description: str = ""

    def __post_init__(self):
        names = [a.run_name(self.overrides) for a in self.arms]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise StudyError(f"study {self.name}: arms {sorted(dup)} are listed more than once (same model, task, "
                             "overrides and seed: a duplicate would count twice in the mean ± std)")
        if not self.arms:
            raise StudyError(f"study {self.name}: no arms to run")

    def config_path(self) -> Path:
        path = Path(self.config)
        if not path.is_absolute() and not path.is_file() and (ROOT / path).is_file():
            path = ROOT / path
        if not path.is_file():
            raise StudyError(f"study {self.name}: config {self.config} not found")
        return path


def synthetic_tree(frames: int, seed: int = 0, size=(640, 483), root=None, overrides=()) -> Callable:
    """A study's `prepare` hook for synthetic WoodScape-format data shared by every arm: the tree at `root`
    (default OUT/data), generated when empty (`data.synthetic.ensure_synthetic`), and `data.root` pointing at
    it; nothing when the caller's `overrides` (--set) name their own `data.root`."""
    def prepare(out: Path) -> list[str]:
        from ..data.synthetic import ensure_synthetic

        if any(item.startswith("data.root=") for item in overrides or ()):
            return []                                     # the caller's data tree
        data = Path(root) if root else Path(out) / "data"
        ensure_synthetic(data, frames=frames, seed=seed, size=tuple(size))
        return [f"data.root={data}"]

    return prepare


def _die_with_parent() -> None:
    """Worker initialiser: on Linux the kernel kills this worker when the study's process dies (SIGKILL
    included), so no orphan keeps training runs whose rows nobody writes."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() == 1:   # the parent died before prctl took effect
        os._exit(1)


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """An exclusive lock on a run directory while a process trains it; StudyError when another holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".study.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyError(f"{run_dir} is being trained by another process; wait for it or stop it") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _compact(result: dict) -> dict:
    """An evaluation's figures without the confusion matrix."""
    return {k: v for k, v in result.items() if k not in ("confusion_matrix",)}


def train_arm(job: dict) -> dict:
    """Train one arm (resuming its state if any), run its evaluations, write study.json; its row."""
    import torch

    from ..engine import atomic_write_text, evaluate_run, load_config, load_model, main, model_domain

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    run_dir = Path(job["run_dir"])
    with run_lock(run_dir):
        cfg = load_config(job["config"], job["overrides"])
        result = main(cfg)
        seconds = result.pop("train_seconds")          # a resumed run's parts added up
        evaluations = {}
        for name, extra in job["evaluations"].items():
            evaluations[name] = _compact(evaluate_run(run_dir, list(extra), out_dir=run_dir / f"eval-{name}",
                                                      device=cfg.run.device))
        flat = model_domain(cfg) == "flat" and cfg.data.source == "woodscape"
        grid = f"flat {cfg.data.flat_size[0]}×{cfg.data.flat_size[1]}" if flat else f"nside {cfg.data.nside}"
        params = sum(p.numel() for p in load_model(run_dir).parameters())
        row = {"study": job["study"], "arm": job["arm"], "group": job["group"], "tags": job["arm"]["tags"],
               "task": cfg.task, "model": job["arm"]["model"], "seed": cfg.run.seed, "run_dir": str(run_dir),
               "grid": grid, "params": params, "steps": result["step"], "batch": cfg.data.batch_size,
               "train_seconds": round(seconds, 1), "result": _compact(result), "evaluations": evaluations,
               "study_overrides": job["study_overrides"]}
        atomic_write_text(run_dir / STUDY_FILE, json.dumps(row, indent=1) + "\n")
    return row


def _finished(run_dir: Path, arm: dict, study_overrides: list) -> dict | None:
    """The row of a finished run of exactly this arm, else None (a damaged study.json counts as unfinished)."""
    path = run_dir / STUDY_FILE
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = row.get("arm", {}).get("model") == arm["model"] and all(
        row["arm"].get(k) == arm[k] for k in ("task", "overrides", "seed", "evaluations"))
    return row if same and row.get("study_overrides") == study_overrides else None


def collect_rows(out: Path) -> list[dict]:
    """Every finished run's row under `out` (OUT/runs/*/study.json), oldest first."""
    rows = []
    for path in sorted((Path(out) / "runs").glob(f"*/{STUDY_FILE}"), key=lambda p: p.stat().st_mtime):
        try:
            rows.append(json.loads(path.read_text()))
        except ValueError:
            print(f"skipped {path}: not valid JSON (a write cut short); its run will be finished on the next run")
    return rows


def read_rows(out: Path) -> list[dict]:
    """The rows of a study folder: rebuilt from its run directories (results.jsonl is only a copy)."""
    out = Path(out)
    if not (out / "runs").is_dir():
        raise StudyError(f"{out}: not a study folder (no runs/ inside; a study writes it at its first run)")
    return collect_rows(out)


def _write_results(out: Path, rows: list[dict]) -> None:
    from ..engine import atomic_write_text

    atomic_write_text(out / RESULTS, "".join(json.dumps(r) + "\n" for r in rows))


def _keys(overrides) -> set:
    return {o.split("=", 1)[0] for o in overrides}


def _check_set(study: Study, extra_overrides) -> None:
    """A --set key that an arm sets itself would be overridden, or would relabel the arm's results: refused."""
    for arm in study.arms:
        clash = sorted(_keys(extra_overrides) & _keys(arm.overrides))
        if clash:
            own = [o for o in arm.overrides if o.split("=", 1)[0] in clash]
            raise StudyError(f"--set {', '.join(clash)}: study {study.name}'s arm {arm.group} (seed {arm.seed}) sets "
                             f"{own} itself, so the --set value would not be what it trains with (or would make its "
                             "label wrong); use the study's own flags for it")


def _check_configs(jobs: list) -> None:
    """Every run's config is valid before any run trains: a bad value is refused naming the arm, not found
    by a worker after other runs trained."""
    from ..engine import ConfigError, load_config

    for job in jobs:
        try:
            load_config(job["config"], job["overrides"])
        except ConfigError as err:
            raise StudyError(f"arm {job['group']} (seed {job['arm']['seed']}): {err}") from None


def run_study(study: Study, out, workers: int = 1, threads: int | None = None, device: str | None = None,
              extra_overrides=(), report: bool = True, train: bool = True) -> list[dict]:
    """Train every arm of `study` that has no finished run under `out` (OUT/runs/<arm run name>), `workers`
    at a time (one in this process when 1), each with `threads` torch threads; rebuild OUT/results.jsonl
    after every run and write the report. `train=False`: train nothing, report the arms finished so far.
    Returns the rows of the study's arms."""
    if workers < 1:
        raise StudyError(f"--workers {workers} must be >= 1")
    if threads is not None and threads < 1:
        raise StudyError(f"--threads {threads} must be >= 1")
    _check_set(study, extra_overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = study.config_path()
    shared = list(study.overrides)
    if study.prepare is not None:
        shared += list(study.prepare(out) or [])
    shared += list(extra_overrides)                  # the caller's --set wins over the study's own
    threads = threads or (1 if workers > 1 else None)
    jobs, kept = [], []
    for arm in study.arms:
        run_dir = out / "runs" / arm.run_name(shared)
        desc = arm.describe()
        done = _finished(run_dir, desc, shared)
        if done is not None:
            kept.append(done)
            continue
        overrides = [*shared, *arm.spec.overrides(), f"task={arm.task}", f"run.seed={arm.seed}", *arm.overrides,
                     f"run.dir={run_dir}", "train.resume=true"]
        if threads:
            overrides.append(f"run.threads={threads}")
        if device:
            overrides.append(f"run.device={device}")
        jobs.append(dict(study=study.name, arm=desc, group=arm.group, config=str(config), overrides=overrides,
                         run_dir=str(run_dir), evaluations=arm.evaluations, threads=threads,
                         study_overrides=shared))
    if not train:
        print(f"{study.name}: {len(kept)} runs finished, {len(jobs)} not trained (report only)", flush=True)
        jobs = []
    _check_configs(jobs)
    print(f"{study.name}: {len(jobs)} runs to train ({len(kept)} kept), {workers} at once", flush=True)
    from tqdm import tqdm

    pool = ProcessPoolExecutor(workers, initializer=_die_with_parent) if workers > 1 and len(jobs) > 1 else None
    try:
        results = pool.map(train_arm, jobs) if pool else map(train_arm, jobs)
        for row in tqdm(results, total=len(jobs), desc=study.name, unit="run", disable=not jobs):
            print(json.dumps({k: row[k] for k in ("group", "task", "seed", "steps", "train_seconds", "run_dir")}),
                  flush=True)
            _write_results(out, collect_rows(out))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    every = collect_rows(out)
    _write_results(out, every)
    # this study's rows: found by the run name (what the run computes), named by the arm as it is now (a
    # relabelled arm keeps its finished run)
    arms = {arm.run_name(shared): arm for arm in study.arms}
    rows = [{**r, "group": arms[name].group, "tags": arms[name].tags}
            for r in every if (name := Path(r["run_dir"]).name) in arms and r.get("study_overrides") == shared]
    if report:
        write_report(out, rows)
        if study.report is not None and rows:
            study.report(out, rows)
    return rows


def merge(folders, out) -> list:
    """One report in `out` of every finished run in several study folders (e.g. the arms of a sweep run
    into their own folders); groups are named by the settings they do not share. Returns the rows."""
    rows = [r for folder in folders for r in read_rows(Path(folder))]
    Path(out).mkdir(parents=True, exist_ok=True)
    write_report(out, rows)
    return rows
