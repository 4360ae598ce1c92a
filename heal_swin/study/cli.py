"""heal-swin-study: run a study file, or report several study folders as one.

    heal-swin-study bench/learning/study.py [--out runs/learning] [--workers 2] [--threads 1]
                    [--models NAME ...] [--seeds 3] [--steps 300] [--tasks segmentation depth]
                    [--set KEY=VALUE ...] [--full] [--device cuda]
    heal-swin-study --merge runs/a runs/b --out runs/ab
    heal-swin-study bench/paper/study.py --out runs/paper --report-only      # the finished arms' report
    python -m heal_swin.study.cli ...

A study file is a Python file with `make(options) -> heal_swin.study.Study`; `options` carries the flags
above (None where not given: the study's defaults apply) and the study's own, which it may declare in
`add_arguments(group)` (they show in `heal-swin-study FILE --help`). Every arm trains through the engine into
OUT/runs/<arm>/ (an ordinary run directory: config.yaml, metrics.jsonl, weights/, state/, eval-*/), finished
runs are kept on a rerun, interrupted ones resume; OUT/results.jsonl (rebuilt from the run directories),
OUT/results.md and OUT/curves.png report them, plus what the study draws itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from ._arms import StudyError

PROG = "heal-swin-study"


def load_study_file(path):
    """The module of a study file (its `make(options)` builds the Study)."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    spec = importlib.util.spec_from_file_location(f"heal_swin_study_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "make", None)):
        raise StudyError(f"{path}: a study file defines make(options) -> heal_swin.study.Study")
    return module


def _check_options(args) -> None:
    """Refuse what would silently give another study than the one asked for, before any work."""
    for flag in ("models", "tasks", "set"):
        values = getattr(args, flag) or []
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise StudyError(f"--{flag} lists {dup} more than once (duplicates would count twice in mean ± std)")
    for flag in ("seeds", "steps", "workers", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise StudyError(f"--{flag} {value} must be >= 1")
    for item in args.set or []:
        if "=" not in item:
            raise StudyError(f"--set {item!r} must be KEY=VALUE, e.g. train.lr=1e-3")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", nargs="?", help="a study file (Python, with make(options))")
    p.add_argument("--out", default=None, help="the study folder (default runs/<study file name>)")
    p.add_argument("--workers", type=int, default=1, help="runs trained at once (worker processes)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: 1 with --workers > 1)")
    p.add_argument("--models", nargs="+", default=None, help="model specs NAME[@HxW][:key=value,...]")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm")
    p.add_argument("--steps", type=int, default=None, help="training steps (where the study takes one budget)")
    p.add_argument("--tasks", nargs="+", default=None)
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    p.add_argument("--full", action="store_true", help="the study's paper-scale setting (a GPU run)")
    p.add_argument("--device", default=None, help="run.device of every run")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR", help="train nothing: one report in --out of "
                   "every finished run in these study folders")
    p.add_argument("--report-only", action="store_true", help="train nothing: the study's report of its arms "
                   "finished so far (e.g. while it still runs, or of a study cut short)")
    return p


def main(argv=None) -> int:
    from . import merge, run_study

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)      # the study file first, so --help can show its flags
    pre.add_argument("study", nargs="?")
    pre.add_argument("--merge", nargs="+", default=None)
    first, _ = pre.parse_known_args(argv)
    try:
        module = load_study_file(first.study) if first.study and not first.merge else None
    except StudyError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    if module is not None and callable(getattr(module, "add_arguments", None)):
        module.add_arguments(parser.add_argument_group(f"{first.study}"))   # the study's own flags
    args = parser.parse_args(argv)
    try:
        _check_options(args)
        if args.merge:
            if not args.out:
                raise StudyError("--merge needs --out (the folder of the merged report)")
            merge([Path(d) for d in args.merge], Path(args.out))
            print((Path(args.out) / "results.md").read_text())
            return 0
        if not args.study:
            raise StudyError("name a study file (e.g. bench/learning/study.py) or --merge DIR ...")
        study = module.make(args)
        out = Path(args.out or Path("runs") / Path(args.study).stem)
        run_study(study, out, workers=args.workers, threads=args.threads, device=args.device,
                  extra_overrides=args.set, train=not args.report_only)
        print((out / "results.md").read_text())
        return 0
    except StudyError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
