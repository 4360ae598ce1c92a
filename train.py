#!/usr/bin/env python
"""Train or evaluate a heal_swin model.

    python train.py --config configs/demo.yaml [key=value ...]          # train (or resume: train.resume=true)
    python train.py --evaluate runs/demo/run [key=value ...]            # evaluate a run's best weights
    torchrun --nproc_per_node=2 train.py --config configs/demo.yaml     # DDP, one process per device

Config keys and their defaults: heal_swin/engine/config.py (README, "Training").
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Train or evaluate a heal_swin model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python train.py --config configs/demo.yaml\n"
               "  python train.py --config configs/demo.yaml train.max_steps=50 data.nside=16 run.dir=runs/quick\n"
               "  python train.py --config configs/demo.yaml run.dir=runs/demo train.resume=true\n"
               "  python train.py --evaluate runs/demo/run eval.split=val\n"
               "  torchrun --nproc_per_node=2 train.py --config configs/demo.yaml")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="YAML experiment config (configs/*.yaml)")
    what.add_argument("--evaluate", metavar="RUN_DIR", help="evaluate a trained run")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.max_steps=100")
    args = parser.parse_args(argv)

    from heal_swin.cameras import CalibrationError
    from heal_swin.data import DatasetError
    from heal_swin.engine import CheckpointError, ConfigError, evaluate_run, load_config
    from heal_swin.engine import main as train

    try:
        if args.evaluate:
            evaluate_run(args.evaluate, args.overrides)
        else:
            train(load_config(args.config, args.overrides))
    except (ConfigError, DatasetError, CalibrationError, CheckpointError) as err:
        # Each names the file, the value and the fix: the message is the whole story, not a traceback.
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
