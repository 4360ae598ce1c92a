"""ONNX Runtime vs PyTorch eager: latency of the sphere graph, and of the fisheye-in/fisheye-out graph.

    python bench/bench_onnx.py [--models heal_swin_tiny heal_swin_paper] [--nside 64] [--batch 1] [--threads 2]
    python bench/bench_onnx.py --int8                                             # + int8 MatMuls (CPU)
    python bench/bench_onnx.py --device cuda --nside 256 --batch 1 8 --fp16      # on a GPU machine

Random weights (latency does not depend on them; accuracy does, so the int8 agreement of a trained
model comes from `export.py --int8`). One JSON line per (model, batch, runtime).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from _timing import median_ms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["heal_swin_tiny", "heal_swin_paper"])
    p.add_argument("--nside", type=int, default=64)
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--fp16", action="store_true", help="also time a half-precision graph")
    p.add_argument("--int8", action="store_true", help="also time a graph with int8 MatMul weights (CPU)")
    p.add_argument("--projection", action="store_true", help="also time the fisheye-in/fisheye-out graph (FV sample)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch

    from heal_swin import cameras, models
    from heal_swin.export import (FisheyeGraph, OnnxPredictor, SphereGraph, convert_fp16, export_onnx,
                                  quantize_int8)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp())
    for name in args.models:
        torch.manual_seed(0)
        model = models.create_model(name, in_chans=3, num_classes=10, nside=args.nside, base_pixels=range(8)).eval()
        n = 8 * args.nside**2
        graphs = [("sphere", SphereGraph(model, "segmentation"), (3, n))]
        if args.projection:
            cam = cameras.load_calibration(cameras.FV_SAMPLE)
            fisheye = FisheyeGraph(model, cam, args.nside, range(8), "camera", (123.675, 116.28, 103.53),
                                   (58.395, 57.12, 57.375), "segmentation").eval()
            graphs.append(("fisheye", fisheye, (3, cam.height, cam.width)))
        for kind, graph, shape in graphs:
            path = tmp / f"{name}-{kind}.onnx"
            t = time.perf_counter()
            export_onnx(graph, torch.rand(2, *shape) * (255 if kind == "fisheye" else 1), path)
            export_s = time.perf_counter() - t
            variants = [("fp32", path)]
            if args.fp16:
                half = tmp / f"{name}-{kind}-fp16.onnx"
                convert_fp16(path, half)
                variants.append(("fp16", half))
            if args.int8:
                quant = tmp / f"{name}-{kind}-int8.onnx"
                quantize_int8(path, quant)
                variants.append(("int8", quant))
            for batch in args.batch:
                x = torch.rand(batch, *shape) * (255 if kind == "fisheye" else 1)
                row = {"model": name, "graph": kind, "nside": args.nside, "batch": batch, "threads": args.threads,
                       "device": args.device, "export_s": round(export_s, 1)}
                g = graph.to(device)
                xd = x.to(device)
                with torch.inference_mode():
                    def eager():
                        out = g(xd)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        return out
                    row["eager_fp32_ms"] = round(median_ms(eager, args.repeats), 2)
                for precision, onnx_path in variants:
                    pred = OnnxPredictor(onnx_path, device=args.device, threads=args.threads, batch_size=batch)
                    row[f"ort_{precision}_ms"] = round(pred.benchmark(x.numpy(), args.repeats)["median_ms"], 2)
                    row["providers"] = pred.providers
                for precision, _ in variants:
                    ort_ms = row[f"ort_{precision}_ms"]
                    row[f"speedup_ort_{precision}"] = round(row["eager_fp32_ms"] / ort_ms, 2)
                row["cpu"] = platform.processor() or platform.machine()
                row["torch"] = torch.__version__
                print(json.dumps(row), flush=True)
                graph = graph.cpu()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
