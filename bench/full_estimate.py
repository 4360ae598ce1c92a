"""How long the studies' --full runs would take on one H100, estimated on a CPU (issue #28, item 6).

    python bench/full_estimate.py                       # every study: bench/gpu/ESTIMATE.md + estimate.json
    python bench/full_estimate.py --studies paper --out runs/estimate

No GPU has been lent to this project yet, so the GPU check's measured steps (`make gpu-check`, part 4) do not
exist. This script estimates them instead, from what one training step of each arm group does at the study's
--full settings (the same arms and settings the GPU check runs):

- it builds the group's first arm as the trainer would (the study's own `make(options)` with --full, through
  bench/gpu/parts.py), runs one training step on the CPU to warm up, then records every operator the next step
  dispatches (forward, backward, the optimiser's foreach update, as on CUDA): its count, its FLOPs (PyTorch's
  FLOP counter: matmuls, convolutions, attention) and the bytes of its tensors (inputs and outputs); it times
  loading a batch the trainer's way (one process, one CPU core);
- on the GPU, each operator is taken to launch one kernel, which costs the largest of a minimum kernel time, its
  FLOPs at a sustained rate and its bytes at a sustained bandwidth; the host issues one operator per
  `host_us`. The step costs the larger of the two sums (the host runs ahead of the GPU until the trainer's
  `loss.item()` waits for it). Loading the batch adds to that when the run loads in its training process
  (`data.num_workers=0`: between the steps); with W loader processes it only bounds the step, at a W-th of
  the measured time (they load the next batches while the GPU runs; the GPU machines have 16 cores);
- two sets of constants bound the answer: `fast` (8 µs of host time per operator, 3 µs per kernel, 40 TFLOP/s,
  2.5 TB/s: near an H100's fp32 and memory peaks) and `slow` (20 µs, 6 µs, 15 TFLOP/s, 1.2 TB/s).

The hours are step × the --full steps × the group's runs; evaluations, the ensembles' measures and generating
data are not in them. They are an estimate to plan a lending with, not a measurement: the GPU check's median
step replaces them the first time it runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("gpu_check_parts", HERE / "gpu" / "parts.py")
parts = sys.modules.setdefault("gpu_check_parts", importlib.util.module_from_spec(_spec))
if not hasattr(parts, "STUDIES"):
    _spec.loader.exec_module(parts)

CONSTANTS = {"fast": dict(host_us=8.0, kernel_us=3.0, tflops=40.0, tb_per_s=2.5),
             "slow": dict(host_us=20.0, kernel_us=6.0, tflops=15.0, tb_per_s=1.2)}


class OpCount:
    """Every operator a block of code dispatches below autograd (views and allocations left out: they launch
    no kernel), each with its FLOPs and the bytes of its tensors."""

    def __init__(self):
        self.ops: list[tuple[str, float, float]] = []         # (name, flops, bytes)

    def __enter__(self):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten
        from torch.utils.flop_counter import flop_registry

        ops = self.ops
        free = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "lift_fresh",
                "set_", "resize_", "_reshape_alias", "alias"}

        def nbytes(tree) -> int:
            leaves, _ = tree_flatten(tree)
            return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                name = func.overloadpacket.__name__
                if func.is_view or name in free:
                    return out
                count = flop_registry.get(func.overloadpacket)
                flops = float(count(*args, **kwargs, out_val=out)) if count is not None else 0.0
                ops.append((name, flops, float(nbytes((args, kwargs)) + nbytes(out))))
                return out

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)

    def gpu_seconds(self, c: dict) -> tuple[float, float]:
        """(host time, GPU time) of the recorded operators under the constants `c`."""
        host = len(self.ops) * c["host_us"] * 1e-6
        gpu = sum(max(c["kernel_us"] * 1e-6, f / (c["tflops"] * 1e12), b / (c["tb_per_s"] * 1e12))
                  for _, f, b in self.ops)
        return host, gpu


def _one_batch(dataset, batch_size: int, start: int = 0) -> tuple[dict, float]:
    """A batch of the training set as the trainer's loader makes it, and the seconds it took to load."""
    import torch

    t0 = time.perf_counter()
    items = [dataset[(start + i) % len(dataset)] for i in range(batch_size)]
    batch = torch.utils.data.default_collate(items)
    return batch, time.perf_counter() - t0


def estimate_group(cfg: dict, item: str, work: Path) -> dict:
    """One arm group: its operators, FLOPs and bytes in a training step at --full, and the estimated hours."""
    import torch

    from heal_swin.engine import build_datasets, build_loss, build_model, build_optimizer, num_outputs, seed_everything
    from heal_swin.engine.trainer import forward_loss

    arms, full, run_cfg, full_grid = parts.group_run(cfg, item, work, steps=2)
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    seed_everything(0)
    train = build_datasets(run_cfg, ("train",))["train"]
    num_out = num_outputs(run_cfg, train)
    model = build_model(run_cfg, num_out)
    counts = train.label_counts() if run_cfg.loss.class_balance != "none" else None
    loss_fn = build_loss(run_cfg, num_out, counts)
    optimizer, _ = build_optimizer(run_cfg, model, total_steps=10)
    for group in optimizer.param_groups:          # on CUDA the optimisers take their foreach path
        if "foreach" in group:
            group["foreach"] = True
    batch_size = int(run_cfg.data.batch_size)

    def step(batch):
        loss = forward_loss(model, loss_fn, batch, task=run_cfg.task, device="cpu")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    batch, _ = _one_batch(train, batch_size)     # warm-up: the first step builds what the model caches
    step(batch)
    loads = [_one_batch(train, batch_size, start=i * batch_size)[1] for i in (1, 2)]
    batch, load_s = _one_batch(train, batch_size, start=3 * batch_size)
    t0 = time.perf_counter()
    with OpCount() as counted:
        step(batch)
    cpu_step = time.perf_counter() - t0           # counting costs a few µs an operator: small beside the step
    full_steps, runs = int(full.train.max_steps), len(arms)
    load = statistics.median([*loads, load_s])
    workers = int(run_cfg.data.num_workers)
    row = dict(grid=parts.grid_of(run_cfg), batch=batch_size, params=sum(p.numel() for p in model.parameters()),
               ops=len(counted.ops), gflops=sum(f for _, f, _ in counted.ops) / 1e9,
               gbytes=sum(b for _, _, b in counted.ops) / 1e9, load_s=load, workers=workers, cpu_step_s=cpu_step,
               full_steps=full_steps, runs=runs, notes=[f"--full sets {', '.join(full_grid)}"] if full_grid else [])
    # in-process loading comes between the steps; workers load the next batches while the GPU runs
    between, beside = (0.0, load / workers) if workers else (load, 0.0)
    for name, c in CONSTANTS.items():
        host, gpu = counted.gpu_seconds(c)
        row[f"{name}_step_s"] = between + max(host, gpu, beside)
        row[f"{name}_bound"] = max((("loading", between or beside), ("host", host), ("GPU", gpu)),
                                   key=lambda kv: kv[1])[0]
        row[f"{name}_h"] = row[f"{name}_step_s"] * full_steps * runs / 3600
    return row


def _fmt_h(h: float) -> str:
    return f"{h:.2f}" if h < 10 else f"{h:,.0f}"


def report(rows: list[dict], studies: list[str], cpu: str) -> str:
    """The estimate as markdown: per study, then per arm group."""
    lines = ["# The --full runs on one H100, estimated on a CPU", "",
             "Made by `python bench/full_estimate.py` (its docstring gives the model). Not a measurement: no GPU has",
             "been lent yet, and `make gpu-check` (part 4) replaces these with measured steps. The operators were",
             f"counted, and the batch loading and the CPU step timed, on {cpu}. Constants:", "",
             *(f"- {n}: {c['host_us']:g} µs of host time an operator, {c['kernel_us']:g} µs a kernel at least, "
               f"{c['tflops']:g} TFLOP/s, {c['tb_per_s']:g} TB/s" for n, c in CONSTANTS.items()),
             "", "## Per study (training only: evaluations, ensemble measures and data generation not included)", "",
             "| study | command | runs | training steps in all | estimated hours on one H100 (fast – slow) |",
             "|---|---|---|---|---|"]
    for study in studies:
        mine = [r for r in rows if r["study"] == study and "error" not in r]
        failed = [r for r in rows if r["study"] == study and "error" in r]
        if not mine:
            lines.append(f"| {study} | `{parts.STUDY_COMMANDS[study]}` | – | – | not estimated: "
                         f"{failed[0]['error'] if failed else 'no arm group'} |")
            continue
        runs = sum(r["runs"] for r in mine)
        total = sum(r["runs"] * r["full_steps"] for r in mine)
        fast, slow = sum(r["fast_h"] for r in mine), sum(r["slow_h"] for r in mine)
        gap = f" ({len(failed)} group(s) failed: a lower bound)" if failed else ""
        lines.append(f"| {study} | `{parts.STUDY_COMMANDS[study]}` | {runs} | {total:,} | "
                     f"{_fmt_h(fast)} – {_fmt_h(slow)}{gap} |")
    lines += ["", "## Per arm group (its first arm, seed 0)", "",
              "| study | task | arm group | grid | batch | parameters | operators / step | GFLOP / step | "
              "GB touched / step | batch loading, one core (s) | loader processes | CPU step (s) | "
              "H100 step, fast – slow (ms) | bound | steps × runs | hours, fast – slow |", "|" + "---|" * 16]
    for r in rows:
        head = f"| {r['study']} | {r['task']} | {r['group']} |"
        if "error" in r:
            lines.append(head + f" not estimated: {r['error']} |" + " |" * 12)
            continue
        lines.append(head + f" {r['grid']} | {r['batch']} | {r['params']:,} | {r['ops']:,} | {r['gflops']:.2f} | "
                     f"{r['gbytes']:.2f} | {r['load_s']:.3f} | {r['workers'] or 'none'} | {r['cpu_step_s']:.2f} | "
                     f"{r['fast_step_s'] * 1e3:.1f} – {r['slow_step_s'] * 1e3:.1f} | "
                     f"{r['fast_bound']} / {r['slow_bound']} | {r['full_steps']:,} × {r['runs']} | "
                     f"{_fmt_h(r['fast_h'])} – {_fmt_h(r['slow_h'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--studies", nargs="+", choices=list(parts.STUDIES), default=list(parts.STUDIES))
    p.add_argument("--groups-per-study", type=int, default=None, help="only the first N arm groups of each study")
    p.add_argument("--override", nargs="*", default=[], metavar="STUDY:KEY=VALUE",
                   help="a config override for one study's runs (the tests shrink the grids with it)")
    p.add_argument("--out", type=Path, default=HERE / "gpu", help="folder for ESTIMATE.md and estimate.json")
    p.add_argument("--frames", type=int, default=2, help="synthetic frames of the --full size for the fisheye studies")
    args = p.parse_args(argv)
    if args.groups_per_study is not None and args.groups_per_study < 1:
        raise SystemExit(f"--groups-per-study {args.groups_per_study}: must be >= 1 (leave it out for every group)")
    overrides: dict = {}
    for o in args.override:
        study, sep, kv = o.partition(":")
        if not sep or study not in parts.STUDIES or "=" not in kv:
            raise SystemExit(f"--override {o}: must be STUDY:KEY=VALUE with STUDY one of {', '.join(parts.STUDIES)}")
        overrides.setdefault(study, []).append(kv)
    cfg = dict(device="cpu", threads=1, research=dict(studies=args.studies, frames=args.frames, size=[1280, 966],
                                                      workers=1, overrides=overrides))
    from tqdm import tqdm

    groups, seen = [], {}
    for study, group, task in parts.research_groups(cfg):
        seen[study] = seen.get(study, 0) + 1
        if args.groups_per_study is None or seen[study] <= args.groups_per_study:
            groups.append((study, group, task))
    rows = []
    with tempfile.TemporaryDirectory(prefix="full_estimate-") as tmp:
        for study, group, task in tqdm(groups, desc="arm groups", unit="group"):
            row = dict(study=study, task=task, group=group)
            try:
                row.update(estimate_group(cfg, f"{study}/{task}/{group}", Path(tmp)))
            except Exception as err:        # one group that cannot be built leaves the others' estimates
                row["error"] = parts.reason_of(err)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "estimate.json").write_text(json.dumps(dict(constants=CONSTANTS, rows=rows), indent=1) + "\n")
    (args.out / "ESTIMATE.md").write_text(report(rows, args.studies, f"{parts.cpu_name()} ({os.cpu_count()} logical cores, 1 thread)"))
    print(f"wrote {args.out / 'ESTIMATE.md'} and {args.out / 'estimate.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
