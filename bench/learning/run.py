"""Learning benchmark: backbones on the sphere vs the flat Swin-UNet, same step budget and data, on
synthetic WoodScape-format data, scored on the same fisheye pixels (those the sphere models' faces
cover), for segmentation and depth.

    python bench/learning/run.py [--models heal_swin_tiny swin_unet_flat_tiny gauge_cnn_tiny s2cnn_tiny]
                                 [--steps 300] [--frames 24] [--tasks segmentation depth] [--out runs/learning]
                                 [--threads N]

Any registered variant can be named; sphere models train at the demo's nside 32 on faces 0-7, flat
ones on a 64 x 96 image (about as many pixels). Default: heal_swin_tiny and swin_unet_flat_tiny.

Prints one JSON line per run and writes them to OUT/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DEFAULT_MODELS = ("heal_swin_tiny", "swin_unet_flat_tiny")
# The flat input has about as many pixels as the sphere models see (nside 32, faces 0-7: 8192 pixels,
# 75 % of them inside the image).
FLAT_OVERRIDES = ["data.flat_size=[64,96]"]


def overrides_for(model: str) -> list:
    from heal_swin.models import model_info

    return list(FLAT_OVERRIDES) if model_info(model).domain == "flat" else []


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="registered variants to train")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--tasks", nargs="+", default=["segmentation", "depth"])
    p.add_argument("--out", default="runs/learning")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    args = p.parse_args(argv)

    import torch

    from heal_swin.data.synthetic import ensure_synthetic
    from heal_swin.engine import load_config
    from heal_swin.engine.checkpoint import unwrap
    from heal_swin.engine.trainer import main as train
    from heal_swin.models import model_info

    for model in args.models:
        model_info(model)                      # an unknown name fails here, before any training
    out = Path(args.out)
    data = out / "data"
    ensure_synthetic(data, frames=args.frames, seed=args.seed, size=(640, 483))
    results = []
    for task in args.tasks:
        for model in args.models:
            extra = overrides_for(model)
            run_dir = out / f"{task}-{model}"
            overrides = [f"run.dir={run_dir}", f"data.root={data}", "data.generate=false", f"task={task}",
                         f"model.name={model}", f"train.max_steps={args.steps}", f"train.eval_every={args.steps}",
                         "data.split_fractions=[0.75,0.25,0.0]", f"run.seed={args.seed}", *extra]
            if args.threads:
                overrides.append(f"run.threads={args.threads}")
            if task == "depth":
                overrides += ["train.metric=abs_rel", "train.metric_mode=min", "loss.depth=silog",
                              "data.max_depth=100"]
            cfg = load_config(ROOT / "configs" / "demo.yaml", overrides)
            start = time.perf_counter()
            result = train(cfg)
            seconds = time.perf_counter() - start
            from heal_swin.engine.trainer import build_model

            params = sum(p.numel() for p in build_model(cfg, 10 if task == "segmentation" else 1).parameters())
            key = "miou" if task == "segmentation" else "abs_rel"
            row = {"task": task, "model": model, "params": params, "steps": args.steps,
                   "batch": cfg.data.batch_size, "train_seconds": round(seconds, 1),
                   f"fisheye_{key}": result["fisheye"][key],
                   "fisheye": {k: v for k, v in result["fisheye"].items() if k != "iou"},
                   # Per ring of incidence angle (issue #17): where in the image each model wins or loses.
                   "fisheye_rings": {name: {k: v for k, v in m.items() if k not in ("iou", "theta_deg")}
                                     for name, m in result.get("fisheye_rings", {}).items()},
                   "per_class_iou": result["fisheye"].get("iou")}
            results.append(row)
            print(json.dumps(row), flush=True)
    with open(out / "results.jsonl", "w") as f:
        for row in results:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
