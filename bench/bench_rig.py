"""One rig graph against four single-camera graphs on the same frames (issue #29), CPU.

    python bench/bench_rig.py --rig-run runs/demo_rig/run --camera-run runs/demo_vehicle/run \\
        --data data/synthetic --out bench/rig

Exports, from the rig-trained run, `RigGraph` (four images in, one sphere, the model once, four
outputs) and from the camera-trained run (one camera per sphere, the same vehicle-frame faces) one
`FisheyeGraph` per camera: today's deployment, four graphs. Each configuration runs in its own
process (so its peak memory is its own): latency per frame (batch 1, median of --repeats, the four
single-camera graphs one after the other), the peak resident memory its sessions add (over the
process after its imports), file size. Then, on every frame of
--data, the share of the sphere pixels seen by two cameras on which the two cameras' predictions
disagree (argmax class; per camera pair): the four graphs answer each from their own view, the rig
graph reads one sphere, so its count must be 0. Prints a Markdown table; writes --out/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ORDER = ["FV", "MVL", "MVR", "RV"]


def _cams(data: Path):
    from heal_swin.cameras import load_calibration

    return {c: load_calibration(data / "calibration" / f"00000_{c}.json") for c in ORDER}


def export(args) -> dict:
    import torch

    from heal_swin.engine import config_faces, load_model, load_run_config
    from heal_swin.export import FisheyeGraph, export_onnx
    from heal_swin.tools.run_export import export_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = export_run(args.rig_run, out / "rig.onnx", rig=args.data / "calibration" / "00000")
    assert report.passed, str(report)
    cfg = load_run_config(args.camera_run)
    model = load_model(args.camera_run)
    for c, cam in _cams(args.data).items():
        graph = FisheyeGraph(model, cam, cfg.data.nside, config_faces(cfg), cfg.data.orientation, cfg.data.mean,
                             cfg.data.std, cfg.task).eval()
        export_onnx(graph, torch.rand(2, 3, cam.height, cam.width) * 255, out / f"camera_{c}.onnx",
                    output_names=("output", "covered"), metadata={"task": cfg.task, "input": "fisheye"})
    return {"rig_mb": (out / "rig.onnx").stat().st_size / 2**20,
            "cameras_mb": sum((out / f"camera_{c}.onnx").stat().st_size for c in ORDER) / 2**20}


def _frames(data: Path) -> list[dict]:
    from heal_swin.data.woodscape import read_image

    stems = sorted({p.stem.rsplit("_", 1)[0] for p in (data / "rgb_images").glob("*_FV.png")})
    return [{c: read_image(data / "rgb_images" / f"{s}_{c}.png").transpose(2, 0, 1)[None] for c in ORDER}
            for s in stems]


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args) -> dict:
    """One configuration in this process: latency per frame, and the peak resident memory that its
    sessions add (the high-water mark is reset after the imports and the frames are loaded)."""
    from heal_swin.export import OnnxPredictor

    out = Path(args.out)
    frames = _frames(args.data)
    Path("/proc/self/clear_refs").write_text("5")   # reset VmHWM to the current RSS (Linux)
    base = _rss_mb("VmRSS")
    if args.worker == "rig":
        pred = OnnxPredictor(out / "rig.onnx", threads=args.threads)

        def run(frame):
            return pred.run_rig(frame)
    else:
        preds = {c: OnnxPredictor(out / f"camera_{c}.onnx", threads=args.threads) for c in ORDER}

        def run(frame):
            return {c: preds[c](frame[c].astype(np.float32)) for c in ORDER}
    for frame in frames[:2]:
        run(frame)
    times = []
    for i in range(args.repeats):
        t = time.perf_counter()
        run(frames[i % len(frames)])
        times.append(time.perf_counter() - t)
    peak = _rss_mb("VmHWM")
    return {"median_ms": 1e3 * float(np.median(times)), "p90_ms": 1e3 * float(np.percentile(times, 90)),
            "peak_rss_mb": peak, "rss_before_mb": base, "peak_added_mb": peak - base}


def disagreement(args) -> dict:
    """Per camera pair: shared sphere pixels, and on how many of them the two cameras' argmax differs."""
    from heal_swin.engine import config_faces, load_run_config
    from heal_swin.export import OnnxPredictor
    from heal_swin.projection import HealpixToFisheye

    out = Path(args.out)
    cams = _cams(args.data)
    frames = _frames(args.data)
    rig = OnnxPredictor(out / "rig.onnx", threads=args.threads)
    singles = {c: OnnxPredictor(out / f"camera_{c}.onnx", threads=args.threads) for c in ORDER}
    result = {}
    for name, cfg_run in (("rig", args.rig_run), ("cameras", args.camera_run)):
        cfg = load_run_config(cfg_run)
        index = {c: HealpixToFisheye(cams[c], cfg.data.nside, config_faces(cfg), "vehicle")._nearest for c in ORDER}
        shared_total = differ_total = 0
        pairs = {}
        for frame in frames:
            if name == "rig":
                o = rig.run_rig(frame)
                labels = {c: o[f"output_{c}"][0].argmax(0).reshape(-1) for c in ORDER}
            else:
                labels = {c: singles[c](frame[c].astype(np.float32))[0][0].argmax(0).reshape(-1) for c in ORDER}
            for i, a in enumerate(ORDER):
                for b in ORDER[i + 1:]:
                    ia, ib = index[a], index[b]
                    shared = np.intersect1d(ia[ia >= 0], ib[ib >= 0])
                    if not len(shared):
                        continue
                    # one label per (camera, sphere pixel): the first image pixel in that sphere pixel
                    la = _per_sphere_pixel(ia, labels[a], shared)
                    lb = _per_sphere_pixel(ib, labels[b], shared)
                    key = f"{a}-{b}"
                    n, d = pairs.get(key, (0, 0))
                    pairs[key] = (n + len(shared), d + int((la != lb).sum()))
                    shared_total += len(shared)
                    differ_total += int((la != lb).sum())
        result[name] = {"shared_sphere_pixels": shared_total, "disagree": differ_total,
                        "share": differ_total / max(shared_total, 1), "pairs": pairs, "frames": len(frames)}
    return result


def _per_sphere_pixel(index: np.ndarray, labels: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    order = np.argsort(index, kind="stable")
    first = order[np.searchsorted(index[order], pixels)]
    return labels[first]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rig-run", type=Path, required=True, help="a run trained with data.rig=true")
    p.add_argument("--camera-run", type=Path, required=True,
                   help="a run trained one camera per sphere (data.orientation=vehicle, the rig run's faces)")
    p.add_argument("--data", type=Path, default=Path("data/synthetic"))
    p.add_argument("--out", type=Path, default=Path("bench/rig"))
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", choices=["rig", "cameras"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    sizes = export(args)
    timing = {}
    for mode in ("rig", "cameras"):
        cmd = [sys.executable, __file__, "--worker", mode] + [a for a in (argv or sys.argv[1:])]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        timing[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    agree = disagreement(args)
    results = {"sizes_mb": sizes, "timing": timing, "overlap": agree, "threads": args.threads,
               "repeats": args.repeats}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print("| graph | files | size | latency per frame (median / p90) | peak memory added | overlap pixels where "
          "two cameras disagree |")
    print("|---|---|---|---|---|---|")
    for mode, files, size in (("rig", "1 (RigGraph)", sizes["rig_mb"]),
                              ("cameras", "4 (FisheyeGraph each)", sizes["cameras_mb"])):
        t, a = timing[mode], agree[mode]
        print(f"| {mode} | {files} | {size:.1f} MB | {t['median_ms']:.1f} / {t['p90_ms']:.1f} ms | "
              f"{t['peak_added_mb']:.0f} MB | {a['disagree']} of {a['shared_sphere_pixels']} "
              f"({100 * a['share']:.1f} %) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
