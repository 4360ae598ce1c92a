#!/usr/bin/env python
"""Export a trained run to ONNX and check it against PyTorch.

    python export.py --run runs/demo/run --out runs/demo/model.onnx
    python export.py --run runs/demo/run --out runs/demo/fv.onnx --with-projection \\
        --calibration data/synthetic/calibration/00000_FV.json          # fisheye in, fisheye out
    python export.py --run runs/demo/run --out runs/demo/model_fp16.onnx --fp16
    python export.py --run runs/demo/run --out runs/demo/model_int8.onnx --int8       # for CPUs
    python export.py --run runs/demo_rig/run --out runs/demo_rig/rig.onnx \
        --rig data/synthetic/calibration/00000      # a rig-trained run: every camera in, every camera out

Exit code 0 when onnxruntime matches PyTorch within the tolerance (fp32: max |diff| <= 1e-4 of the
largest logit; fp16: argmax agreement >= 99.5 %; int8: >= 99 %; depth: relative 1e-4 / 2 % / 5 %),
1 when it does not, 2 for bad arguments.
"""

import argparse
import json
import sys


# the oldest opset torch's (dynamo) exporter writes; it raises an older request to this one silently
MIN_OPSET = 18


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Export a trained heal_swin run to ONNX and check it.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--run", required=True, help="run directory (train.py's run.dir)")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default: heal_swin.export.DEFAULT_OPSET, 20)")
    parser.add_argument("--batch", default="dynamic", help="'dynamic' (default) or a fixed batch size")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true",
                           help="half-precision graph (sensitive parts in fp32)")
    precision.add_argument("--int8", action="store_true",
                           help="int8 weights for the MatMuls (dynamic quantisation, for CPUs; rest fp32)")
    parser.add_argument("--with-projection", action="store_true",
                        help="bake the fisheye -> sphere -> fisheye projection of --calibration into the graph")
    parser.add_argument("--calibration", help="WoodScape calibration JSON of the camera (with --with-projection)")
    parser.add_argument("--rig", metavar="FRAME_OR_CALIBRATION_DIR",
                        help="a rig-trained run (data.rig=true) as one graph: every camera's image in (one input "
                             "per camera, sorted names), one fused sphere, every camera's prediction out. The "
                             "calibrations: a folder of <frame>_<CAM>.json, DIR/<frame>, or a frame id of the "
                             "run's data")
    parser.add_argument("--weights", default="best", choices=["best", "last"])
    parser.add_argument("--report", help="also write the parity report as JSON here")
    args = parser.parse_args(argv)
    if args.with_projection != (args.calibration is not None):
        parser.error("--with-projection and --calibration go together")
    if args.rig is not None and args.with_projection:
        parser.error("--rig and --with-projection exclude each other: --rig bakes in every camera of the rig")
    if args.batch != "dynamic" and not (args.batch.isdigit() and int(args.batch) >= 1):
        parser.error(f"--batch {args.batch!r} must be 'dynamic' or a positive integer")
    import onnx

    top = onnx.defs.onnx_opset_version()
    if args.opset is not None and not MIN_OPSET <= args.opset <= top:
        parser.error(f"--opset {args.opset} must be in [{MIN_OPSET}, {top}]: torch's exporter writes opset "
                     f"{MIN_OPSET} or newer (an older one would silently become {MIN_OPSET}), and the installed "
                     f"onnx knows opsets up to {top}")

    from heal_swin.data import DatasetError
    from heal_swin.engine import CheckpointError, ConfigError
    from heal_swin.export import ExportError, OnnxFileError
    from heal_swin.tools.run_export import export_run

    try:
        report = export_run(args.run, args.out, opset=args.opset, batch=args.batch, fp16=args.fp16,
                            int8=args.int8, calibration=args.calibration, weights=args.weights, rig=args.rig)
    except (CheckpointError, ConfigError, DatasetError, ExportError, OnnxFileError, FileNotFoundError,
            ValueError) as err:
        print(f"export.py: error: {err}", file=sys.stderr)
        return 2
    print(report)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
