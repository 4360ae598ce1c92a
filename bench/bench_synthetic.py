"""Synthetic data generator benchmark: wall time to write N frames of the four-camera rig.

    python bench/bench_synthetic.py [--frames 100] [--size 1280x966] [--workers 2]

Prints one JSON line. The issue's target: 100 frames × 4 cameras at 1280×966 in ≤ 3 minutes on
2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", default="1280x966")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    from heal_swin.data import synthetic

    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        stems = synthetic.generate(out, frames=args.frames, size=size, workers=args.workers)
        seconds = time.perf_counter() - start
    print(json.dumps({"frames": args.frames, "images": len(stems), "size": list(size), "workers": args.workers,
                      "seconds": round(seconds, 1), "ms_per_image": round(1e3 * seconds / len(stems), 1),
                      "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
