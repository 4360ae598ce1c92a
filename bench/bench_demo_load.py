"""The demo's training on a free and on a busy CPU: one JSON line per setting.

    python bench/bench_demo_load.py --steps 30

Trains configs/demo.yaml for --steps steps on the demo's synthetic data (generated first if absent)
in a fresh process, once on a free machine and once beside one busy process per core (a pure
Python loop each, as other work on a shared machine), with:
- `torch-default`: what the trainer did before: as many torch threads as cores, OpenMP's default
  wait policy (idle threads spin for a while before they sleep);
- `demo-default`: what `make demo` does now: torch threads = the cores not busy with other work
  (`heal_swin.demo.free_cores`, from the load average), OMP_WAIT_POLICY=PASSIVE.
Reports the wall time of the training command and the slowdown against the free machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _spin() -> None:
    while True:
        pass


def _train(steps: int, data: str, threads: int | None, passive: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "demo.yaml"),
               f"run.dir={tmp}/run", f"data.root={data}", f"train.max_steps={steps}", f"train.eval_every={steps}",
               "eval.backproject=false"]
        if threads:
            cmd.append(f"run.threads={threads}")
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--data", default=str(ROOT / "data" / "synthetic"))
    args = p.parse_args()
    from heal_swin.data.synthetic import ensure_synthetic
    from heal_swin.demo import free_cores

    ensure_synthetic(args.data, frames=16, seed=0, size=(640, 483))
    cores = len(os.sched_getaffinity(0))
    free = {}
    for load in (False, True):
        spinners = [mp.Process(target=_spin, daemon=True) for _ in range(cores if load else 0)]
        for s in spinners:
            s.start()
        if load:
            time.sleep(65)  # let the one-minute load average see the busy processes, as the demo would
        try:
            for name, threads, passive in (("torch-default", None, False),
                                           ("demo-default", free_cores(), True)):
                seconds = _train(args.steps, args.data, threads, passive)
                row = dict(setting=name, busy_processes=len(spinners), threads=threads or cores,
                           omp_wait_policy="PASSIVE" if passive else "default", steps=args.steps,
                           seconds=round(seconds, 1))
                if not load:
                    free[name] = seconds
                else:
                    row["slowdown_vs_free"] = round(seconds / free[name], 2)
                print(json.dumps(row), flush=True)
        finally:
            for s in spinners:
                s.terminate()


if __name__ == "__main__":
    main()
