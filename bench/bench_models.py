"""Speed and memory of the model zoo: one JSON line per measurement.

    python bench/bench_models.py --models heal_swin_paper --nside 64 --threads 2 --dtype fp32 bf16
    python bench/bench_models.py --models heal_swin_paper:drop_rate=0.0 swin_unet_flat_paper@128x256
    python bench/bench_models.py --models heal_swin_paper --nside 256 --modes train --repeats 1
    python bench/bench_models.py --tables --checkpoint
    python bench/bench_models.py --flops --models gauge_cnn_tiny chart_cnn_tiny planar_cnn_1x --nside 16 --faces all \
        --in-chans 1 --num-classes 11          # parameters and forward FLOPs (flat models: the θ-φ image)

Models are model specs (`NAME[@HxW][:key=value,...]`, `heal_swin.study.parse_model_spec`: @HxW a flat
model's image size, key=value its keyword overrides). Per model: parameters, forward time (eval, no grad),
forward+backward time (train mode, loss = mean square of the output, no optimizer step), peak memory. Each model/dtype runs in a fresh
subprocess so that its peak resident memory (CPU) or peak allocated memory (CUDA) is its own.
Times are medians over --repeats after one warm-up call. On CPUs freed memory is retained for
reuse as the trainer does (`heal_swin.engine.retain_freed_memory`; --retain-memory none: glibc's
default). `--tables` times building every window and shift table of the paper architecture on the full sphere at nside 256 (caches cleared);
`--checkpoint` writes heal_swin_paper's state_dict and reports the file size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
from _timing import median_ms

from heal_swin import models
from heal_swin.engine import retain_freed_memory
from heal_swin.grid import parse_base_pixels
from heal_swin.study import parse_model_spec


def _input(model, batch, device):
    if hasattr(model, "img_size"):  # the flat domain
        return torch.randn(batch, model.in_chans, *model.img_size, device=device)
    return torch.randn(batch, model.in_chans, len(model.faces) * model.nside ** 2, device=device)


def build(args, name: str):
    """The model of a spec at the run's grid: sphere models at --nside/--faces, flat ones at their @HxW (or,
    with --flops, the equirectangular image of that grid); --in-chans / --num-classes when given."""
    spec = parse_model_spec(name)
    kwargs = dict(spec.kwargs)
    kwargs.update({k: v for k, v in (("in_chans", args.in_chans), ("num_classes", args.num_classes)) if v})
    if spec.flat_size:
        kwargs["img_size"] = spec.flat_size
    elif models.model_info(spec.name).domain != "flat":
        kwargs.update(nside=args.nside, base_pixels=args.faces)
    elif args.flops:
        kwargs["img_size"] = models.equirectangular_shape(args.nside, args.faces)
    if args.grad_checkpointing:
        kwargs["grad_checkpointing"] = True
    return models.create_model(spec.name, **kwargs)


def count_flops(args, name: str) -> dict:
    """Parameters and forward FLOPs at batch 1 (matrix products and convolutions, torch's FlopCounterMode:
    2 per multiply-add; gathers, norms and activations not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(args, name).eval()
    x = _input(model, 1, "cpu")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    grid = (dict(img_size=list(model.img_size)) if hasattr(model, "img_size") else
            dict(nside=model.nside, faces=args.faces_text))
    return dict(model=name, **grid, params=sum(p.numel() for p in model.parameters()),
                gflops_fwd=round(counter.get_total_flops() / 1e9, 4))


def measure(args) -> dict:
    """Runs inside the child process: one model, one dtype."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    retained = "none"
    if device.type == "cpu" and args.retain_memory != "none":
        retained = args.retain_memory if retain_freed_memory(args.retain_memory == "all") else "none"
    model = build(args, args.model).to(device)
    x = _input(model, args.batch, device)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    row = dict(model=args.model, device=str(device), threads=args.threads, dtype=args.dtype, batch=args.batch,
               params=sum(p.numel() for p in model.parameters()), grad_checkpointing=args.grad_checkpointing,
               retain_memory=retained)
    if hasattr(model, "img_size"):  # the flat domain
        row["img_size"] = list(model.img_size)
    else:
        row.update(nside=model.nside, faces=args.faces_text)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def forward():
        with torch.no_grad(), torch.autocast(**amp):
            model(x)

    def train_step():
        with torch.autocast(**amp):
            y = model(x)
        y.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    if "fwd" in args.modes:
        model.eval()
        row["fwd_s"] = round(median_ms(forward, args.repeats, 1, sync) / 1e3, 4)
    if "train" in args.modes:
        model.train()
        row["fwd_bwd_s"] = round(median_ms(train_step, args.repeats, 1, sync) / 1e3, 4)
    if device.type == "cuda":
        row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    else:
        row["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        row["rss_after_build_mb"] = round(rss0, 1)
    return row


def bench_tables(nside=256, faces=tuple(range(12))) -> list[dict]:
    """Build every window/shift table of the paper architecture from scratch."""
    from heal_swin.grid import _windows as W
    from heal_swin.models import heal_swin as hs

    rows = []
    for strategy in ("ring_shift", "grid_shift", "nest_roll"):
        for fn in (W.grid_shift, W.ring_shift, W.nest_roll_shift, W.original_grid_shift,
                   W.relative_position_index, hs.shift_buffers):
            fn.cache_clear()
        t = time.perf_counter()
        size = None if strategy == "grid_shift" else 4
        geoms = [hs.stage_geometry(nside // (2 << i), faces, 64, strategy, size, "face") for i in range(4)]
        for g in geoms:
            if g.shift:
                hs.shift_buffers(g)
        W.relative_position_index(64)
        rows.append(dict(tables="heal_swin_paper architecture", nside=nside, faces="0-11", shift=strategy,
                         stages=[str(g) for g in geoms], build_s=round(time.perf_counter() - t, 3)))
    for fn in (W.grid_shift, W.ring_shift, W.nest_roll_shift, hs.shift_buffers):
        fn.cache_clear()
    t = time.perf_counter()
    models.create_model("heal_swin_small", nside=nside, base_pixels=faces)
    rows.append(dict(construct="heal_swin_small (grid_shift)", nside=nside, faces="0-11",
                     build_s=round(time.perf_counter() - t, 3)))
    return rows


def bench_checkpoint() -> dict:
    model = models.create_model("heal_swin_paper")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "heal_swin_paper.pt")
        torch.save(model.state_dict(), path)
        size = os.path.getsize(path)
    return dict(checkpoint="heal_swin_paper state_dict", bytes=size, mib=round(size / 2 ** 20, 1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["heal_swin_tiny", "heal_swin_paper", "swin_unet_flat_paper"],
                   help="model specs NAME[@HxW][:key=value,...]")
    p.add_argument("--nside", type=int, default=64)
    p.add_argument("--faces", default="0-7", help="HEALPix faces, e.g. 0-7 or all")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--modes", nargs="+", default=["fwd", "train"], choices=["fwd", "train"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--grad-checkpointing", action="store_true",
                   help="recompute each block in the backward pass")
    p.add_argument("--retain-memory", default="small", choices=["small", "all", "none"],
                   help="CPU: freed blocks malloc keeps for reuse, as the trainer's run.retain_memory "
                        "(default small: up to 32 MiB; none: glibc's default)")
    p.add_argument("--tables", action="store_true", help="time the shift tables at nside 256, full sphere")
    p.add_argument("--checkpoint", action="store_true", help="size of heal_swin_paper's checkpoint file")
    p.add_argument("--flops", action="store_true", help="parameters and forward FLOPs only (no timing)")
    p.add_argument("--in-chans", type=int, default=None, help="input channels (default: the variant's)")
    p.add_argument("--num-classes", type=int, default=None, help="output classes (default: the variant's)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.faces_text = args.faces
    args.faces = parse_base_pixels(args.faces)
    for spec in args.models:
        parse_model_spec(spec)                # a bad spec fails here, before any subprocess

    if args.child:
        args.model, args.dtype = args.child.rsplit("/", 1)
        print(json.dumps(measure(args)), flush=True)
        return
    if args.tables:
        for row in bench_tables():
            print(json.dumps(row), flush=True)
    if args.checkpoint:
        print(json.dumps(bench_checkpoint()), flush=True)
    if args.flops:
        for name in args.models:
            print(json.dumps(count_flops(args, name)), flush=True)
    if args.tables or args.checkpoint or args.flops:
        return
    base = [sys.executable, os.path.abspath(__file__), "--nside", str(args.nside), "--faces", args.faces_text,
            "--batch", str(args.batch), "--threads", str(args.threads), "--device", args.device,
            "--repeats", str(args.repeats), "--modes", *args.modes]
    base += [f"--{k}={v}" for k, v in (("in-chans", args.in_chans), ("num-classes", args.num_classes)) if v]
    if args.grad_checkpointing:
        base += ["--grad-checkpointing"]
    base += ["--retain-memory", args.retain_memory]
    for name in args.models:
        for dtype in args.dtype:
            out = subprocess.run(base + ["--child", f"{name}/{dtype}"], capture_output=True, text=True)
            if out.returncode:
                print(json.dumps(dict(model=name, dtype=dtype, error=out.stderr.strip().splitlines()[-1:])),
                      flush=True)
            else:
                sys.stdout.write(out.stdout)
                sys.stdout.flush()


if __name__ == "__main__":
    main()
