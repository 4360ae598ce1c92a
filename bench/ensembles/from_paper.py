"""Emergent equivariance at the end of training, measured on members the paper study has already trained
(issue #28, item 3): the controls of `bench/paper/study.py` (chart CNN and planar CNN 4x, segmentation, trained
with full SO(3) augmentation and with none, one run per seed) are the members; nothing is trained here.

    python bench/ensembles/from_paper.py runs/paper --out runs/ensembles_paper

For K = 1 ... (the seeds found), the same measure as `bench/ensembles/study.py` (its `measure`: equivariance
error 1 - mIoU(f(R x), R f(x)) of the mean of the first K members and of member K, on held-out test spheres
drawn turned by random rotations of SO(3), and the floor), on the members' last weights. The paper study's
runs have no snapshots along training; `bench/ensembles/study.py` trains its own members for that axis.
Writes OUT/ensembles.jsonl, OUT/results.md, OUT/ensemble_error_vs_k.png (and the study's
ensemble_error_vs_step.png, of one point here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def members(rows: list, models, steps: int, spheres: int) -> list[dict]:
    """The paper study's control runs of `models` at `steps` and `spheres`, segmentation, trained fully augmented
    or upright, all made with one setting of the study-wide overrides: none (the default) where such runs exist,
    else the only setting found; runs of several other settings (--set, --full) are refused, not mixed."""
    rows = [r for r in rows if r["task"] == "segmentation" and r["model"] in models
            and r["tags"].get("role") == "control" and r["tags"].get("augment") in (0.0, 1.0)
            and r["tags"].get("steps") == steps and r["tags"].get("spheres") == spheres
            and not r["tags"].get("converge")]
    settings = {tuple(r.get("study_overrides") or ()) for r in rows}
    if len(settings) > 1 and () not in settings:
        raise SystemExit(f"the members were trained with several study-wide settings {sorted(settings)}: "
                         "an ensemble mixes one; move the others' runs to another folder")
    chosen = () if () in settings else next(iter(settings), ())
    return [r for r in rows if tuple(r.get("study_overrides") or ()) == chosen]


def main(argv=None) -> int:
    from heal_swin.engine import atomic_write_text
    from heal_swin.study import read_rows
    from heal_swin.study.cli import load_study_file

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("paper", help="the paper study's folder (its runs/ hold the members)")
    p.add_argument("--out", default="runs/ensembles_paper", help="where the measure and its figure go")
    p.add_argument("--models", nargs="+", default=["chart_cnn_tiny_4x", "planar_cnn_4x"])
    p.add_argument("--steps", type=int, default=3000, help="the members' training steps (the paper study's budget)")
    p.add_argument("--spheres", type=int, default=400, help="the members' training spheres")
    p.add_argument("--samples", type=int, default=24, help="held-out spheres per measure")
    p.add_argument("--rotations", type=int, default=3, help="random SO(3) rotations per measure")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    for flag in ("steps", "spheres", "samples", "rotations"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} {getattr(args, flag)}: must be a whole number >= 1")
    ensembles = load_study_file(HERE / "study.py")
    rows = members(read_rows(Path(args.paper)), args.models, args.steps, args.spheres)
    if not rows:
        print(f"{args.paper}: no finished segmentation control runs of {args.models} at {args.steps} steps and "
              f"{args.spheres} spheres (run bench/paper/study.py first)", file=sys.stderr)
        return 2
    count = max(sum(1 for r in rows if (r["model"], r["tags"]["augment"]) == key)
                for key in {(r["model"], r["tags"]["augment"]) for r in rows})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.md", f"# Ensembles of the paper study's members ({args.paper})\n\n"
                      f"Members: the seeds of each control, {args.steps} steps, {args.spheres} training spheres, "
                      "last weights.\n")
    ensembles.measure(out, rows, [m for m in args.models if any(r["model"] == m for r in rows)], count,
                      [("last", args.steps)], args.samples, args.rotations, args.device)
    print(f"wrote {out / 'results.md'}, {out / 'ensembles.jsonl'}, {out / 'ensemble_error_vs_k.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
