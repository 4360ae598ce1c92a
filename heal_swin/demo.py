"""The main job on the embedded default: `python -m heal_swin.demo --out runs/demo`.

Today: generate one synthetic WoodScape-format frame of the four-camera rig, then draw what the
sphere sees: the projection preview of the front camera (with its labels) and of the whole rig
on one sphere in the vehicle frame. Training, export and inference join this command as their
issues land.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m heal_swin.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--size", default="640x483", help="synthetic image size WxH (default 640x483)")
    parser.add_argument("--nside", type=int, default=128, help="HEALPix nside of the previews (default 128)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from .data import synthetic
    from .tools import preview

    out = Path(args.out)
    data = out / "data"
    start = time.perf_counter()
    if not (data / "rgb_images" / "00000_FV.png").is_file():
        print(f"[1/3] generating a synthetic four-camera frame in {data}")
        synthetic.main(["--out", str(data), "--frames", "1", "--seed", str(args.seed), "--size", args.size])
    else:
        print(f"[1/3] using the synthetic frame in {data}")
    stem = "00000_FV"
    print("[2/3] projection preview of the front camera")
    code = preview.main(["--image", str(data / "rgb_images" / f"{stem}.png"),
                         "--calibration", str(data / "calibration" / f"{stem}.json"),
                         "--labels", str(data / "semantic_annotations" / "gtLabels" / f"{stem}.png"),
                         "--nside", str(args.nside), "--faces", "0-7",
                         "--out", str(out / "preview_FV.png")])
    if code:
        return code
    print("[3/3] the four cameras on one sphere (vehicle frame)")
    code = preview.main(["--rig", "00000", "--root", str(data), "--nside", str(args.nside),
                         "--out", str(out / "preview_rig.png")])
    if code:
        return code
    print(f"done in {time.perf_counter() - start:.1f} s: {out / 'preview_FV.png'}, {out / 'preview_rig.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
