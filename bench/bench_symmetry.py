"""Symmetry profile of every registered HEALPix backbone (issue #16, part 4).

    python bench/bench_symmetry.py [--digits-study runs/rotated_digits runs/controls] [--rotations 3]

Per variant, in float64 and eval mode: the relative output error max |f(g·x) − g·f(x)| / max |f(x)| for
random inputs under the grid's own symmetries (the 90° turn about the pole on the full sphere and on
faces 0–7, the largest over the three 180° flips about equatorial axes at 0°, 45°, 90° on the full sphere),
and the error under random rotations R of SO(3) of a band-limited input, measured in harmonic space
(`heal_swin.equivariance.so3_errors`: l ≤ 4 in, l ≤ 8 out; a pointwise map's error is the
measurement's own floor). "At init": each variant's test build (`model_info(name).test_kwargs`, 2 input
channels, 3 outputs) with its initial weights; heal_swin_tiny also with `symmetric=True`; flat variants on
the equirectangular image of an nside-16 map (`models.EquirectangularAdapter`, as they train on spheres).
"Trained": the upright (augment 0) seed-0 segmentation run of each backbone of the digits study folders
(bench/rotated_digits, bench/controls; full sphere only: those models are built on faces 0–11). Prints
Markdown tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

SPHERE, FACES_0_7 = tuple(range(12)), tuple(range(8))


def _fmt(v) -> str:
    if v is None:
        return "–"
    return "0" if v == 0 else f"{v:.1e}" if v < 1e-3 else f"{v:.3f}"


def profile_row(label: str, build, nside: int, in_chans: int, rotations: int) -> dict:
    """The errors of one network; `build(faces)` makes it on a face set (None where it cannot be)."""
    from heal_swin.equivariance import grid_symmetry_errors, so3_errors

    row = {"model": label, "nside": nside}
    for key, faces in (("sphere", SPHERE), ("faces", FACES_0_7)):
        try:
            net = build(faces)
        except ValueError as err:                      # e.g. the original's shift needs faces 0-7
            row[key] = None
            row.setdefault("notes", []).append(f"{key}: {str(err).split(':')[0][:60]}")
            continue
        if net is None:
            row[key] = None
            continue
        errs = grid_symmetry_errors(net, nside, faces, in_chans)
        row[key] = errs
        if key == "sphere":
            row["so3"] = so3_errors({"net": net}, nside, in_chans, 4, 8, rotations)["net"]
    return row


def table(rows: list) -> str:
    lines = ["| model | nside | polar turn 90°, sphere | polar turn 90°, faces 0–7 | flips 180°, sphere (max) | "
             "random SO(3), band-limited input |", "|---|---|---|---|---|---|"]
    for r in rows:
        s, f = r.get("sphere"), r.get("faces")
        flips = max(v for k, v in s.items() if k.startswith("flip")) if s else None
        lines.append(f"| {r['model']} | {r['nside']} | {_fmt(s['polar turn 90°']) if s else '–'} | "
                     f"{_fmt(f['polar turn 90°']) if f else '–'} | {_fmt(flips)} | {_fmt(r.get('so3'))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--digits-study", nargs="+", default=["runs/rotated_digits", "runs/controls"],
                   help="digits study folders (rotated digits, controls)")
    p.add_argument("--rotations", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from heal_swin import models
    from heal_swin.engine import load_model
    from heal_swin.study import read_rows

    variants = [(n, {}) for n in models.list_models()]
    variants.insert(variants.index(("heal_swin_tiny", {})) + 1, ("heal_swin_tiny", {"symmetric": True}))
    rows = []
    for name, extra in variants:
        kw = {**models.model_info(name).test_kwargs, **extra}
        flat = models.model_info(name).domain == "flat"
        nside = 16 if flat else kw.pop("nside")
        kw.pop("img_size", None)

        def build(faces, name=name, kw=kw, nside=nside, flat=flat):
            torch.manual_seed(args.seed)
            if flat:
                shape = models.equirectangular_shape(nside, faces)
                net = models.create_model(name, in_chans=2, num_classes=3, img_size=shape, **kw)
                return models.EquirectangularAdapter(net, nside, faces, shape).double().eval()
            net = models.create_model(name, in_chans=2, num_classes=3, nside=nside, base_pixels=faces, **kw)
            return net.double().eval()

        label = name + ("  (symmetric=True)" if extra else "")
        rows.append(profile_row(label, build, nside, 2, args.rotations))
        print(f"{label}: done", file=sys.stderr, flush=True)
    print("At init (test builds, float64):\n")
    print(table(rows))
    for r in rows:
        for note in r.get("notes", []):
            print(f"- {r['model']}: {note}")

    studies = [Path(s) for s in args.digits_study if (Path(s) / "runs").is_dir()]
    rows = [r for study in studies for r in read_rows(study)
            if r["tags"].get("augment", 0) == 0 and r["seed"] == 0 and r["task"] == "segmentation"]
    if rows:
        trained = []
        for row in sorted(rows, key=lambda r: r["model"]):
            model = load_model(row["run_dir"]).double()
            nside = int(row["grid"].split()[-1])
            label = row["model"] + (f" ({Path(row['run_dir']).parents[1].name})" if len(studies) > 1 else "")
            trained.append(profile_row(label, lambda faces, m=model: m if faces == SPHERE else None, nside, 1,
                                       args.rotations))
            print(f"{row['model']} (trained): done", file=sys.stderr, flush=True)
        print(f"\nAfter training on the rotated digits (upright spheres, seed 0; {', '.join(map(str, studies))}):\n")
        print(table(trained))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
