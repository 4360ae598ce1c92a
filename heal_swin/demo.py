"""The main job on the embedded default: `python -m heal_swin.demo --out runs/demo`.

1. synthetic WoodScape-format data of the four-camera rig (generated on first use, data/synthetic);
2. train `heal_swin_tiny` with configs/demo.yaml (a few hundred steps, a few minutes on 2 cores;
   an interrupted demo resumes where it stopped);
3. evaluate it on the validation split: metrics on the sphere and in the fisheye, figures;
4. draw what the sphere sees: the projection preview of the front camera and of the whole rig;
5. export the model for the front camera as one ONNX graph (fisheye image in, fisheye answer out)
   and check it against PyTorch;
6. run that graph with onnxruntime over the front-camera images (heal-swin-infer).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def free_cores() -> int:
    """Cores this process may use that other work is not already busy on (at least 1): more torch
    threads than free cores make every step wait for the slowest thread, many times slower."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m heal_swin.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--data", default="data/synthetic", help="synthetic data folder (default data/synthetic)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: configs/demo.yaml)")
    parser.add_argument("--frames", type=int, default=None, help="synthetic frames per camera (default: config)")
    parser.add_argument("--size", default=None, help="synthetic image size WxH (default: config)")
    parser.add_argument("--nside", type=int, default=None, help="HEALPix nside (default: config)")
    parser.add_argument("--preview-nside", type=int, default=128, help="nside of the previews (default 128)")
    args = parser.parse_args(argv)

    from .data.woodscape import find_frame_files
    from .engine import evaluate_run, load_config
    from .engine import main as train
    from .tools.run_export import export_run
    from .tools import infer, preview

    out = Path(args.out)
    run_dir = out / "run"
    threads = free_cores()
    overrides = [f"run.dir={run_dir}", f"data.root={args.data}", "train.resume=true", f"run.threads={threads}"]
    if args.steps is not None:
        overrides += [f"train.max_steps={args.steps}", f"train.eval_every={args.steps}"]
    if args.frames is not None:
        overrides.append(f"data.synthetic_frames={args.frames}")
    if args.size is not None:
        w, h = args.size.lower().split("x")
        overrides.append(f"data.synthetic_size=[{int(w)},{int(h)}]")
    if args.nside is not None:
        overrides.append(f"data.nside={args.nside}")
    start = time.perf_counter()
    print(f"[1-2/6] synthetic data in {args.data}, training {run_dir} ({CONFIG.name}, {threads} thread(s): "
          "the cores not busy with other work)")
    train(load_config(CONFIG, overrides))
    print("[3/6] evaluating on the validation split")
    evaluate_run(run_dir, [f"data.root={args.data}"])
    print("[4/6] projection previews")
    files = find_frame_files(args.data, "00000")
    code = preview.main(["--image", str(files["FV"].image), "--calibration", str(files["FV"].calibration),
                         "--labels", str(files["FV"].labels), "--nside", str(args.preview_nside),
                         "--faces", "0-7", "--out", str(out / "preview_FV.png")])
    if code:
        return code
    code = preview.main(["--rig", "00000", "--root", args.data, "--nside", str(args.preview_nside),
                         "--out", str(out / "preview_rig.png")])
    if code:
        return code
    print("[5/6] ONNX export of the front camera's fisheye-in/fisheye-out graph")
    onnx_path = out / "fv.onnx"
    report = export_run(run_dir, onnx_path, calibration=files["FV"].calibration)
    print(report)
    if not report.passed:
        return 1
    print("[6/6] inference with onnxruntime over the front-camera images")
    code = infer.main(["--model", str(onnx_path), "--images", str(Path(files["FV"].image).parent / "*_FV.png"),
                       "--out", str(out / "infer"), "--calibrations", str(Path(files["FV"].calibration).parent)])
    if code:
        return code
    print(f"done in {time.perf_counter() - start:.0f} s:\n"
          f"  {run_dir}/eval-val/metrics.md   metrics on the sphere and in the fisheye\n"
          f"  {run_dir}/eval-val/sample_*.png predictions against the ground truth\n"
          f"  {out / 'preview_FV.png'}, {out / 'preview_rig.png'}   what the sphere sees\n"
          f"  {onnx_path}, {out / 'infer'}/   the exported graph and its answers per image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
