"""s2cnn_digits beside the original S2CNN (JanEGerken/sem_seg_s2cnn, S2ConvNet_sem_seg), same run, alternating.

    bash bench/s2cnn_original/make_venv.sh /work/peer_venv            # once; calls pip (run it by hand)
    .venv/bin/python bench/s2cnn_original/compare.py --original /work/.mirror/JanEGerken+sem_seg_s2cnn/repo \
        --peer-python /work/peer_venv/bin/python --rounds 8

--original: a checkout of the original, or a bare git directory (its HEAD is exported to a temporary folder).
Each round runs every entry once, one fresh process each (bench/s2cnn_original/step.py: batch 4, fp32, 1
thread, forward + cross-entropy + backward, --steps timed steps after a warm-up step), in the same order;
the original runs in its own venv (torch 2.13, numpy < 2, lie_learn) with its working directory in the
temporary folder (it writes a cache/ folder there). Prints each process's JSON line, then per entry the
median and the minimum over all timed steps of all rounds, the batch-1 forward and the peak-RSS growth of a
step (medians over rounds), and the ratios to the original.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

OURS = [("s2cnn_digits", "{}"), ("s2cnn_digits", '{"so3_grid": "shared"}'), ("s2cnn_digits", '{"so3_grid": "own"}'),
        ("gauge_cnn_tiny", "{}")]


def _source(path: Path, tmp: Path) -> Path:
    if (path / "s2cnn").is_dir():
        return path
    out = tmp / "sem_seg_s2cnn"
    out.mkdir()
    archive = subprocess.run(["git", f"--git-dir={path}", "archive", "HEAD"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--original", type=Path, required=True)
    p.add_argument("--peer-python", required=True, help="the original's venv python (make_venv.sh)")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="s2cnn_original_"))
    try:
        src = _source(args.original.resolve(), tmp)
        runs = [("ours", m, kw) for m, kw in OURS[:1]] + [("original", None, None)] + \
               [("ours", m, kw) for m, kw in OURS[1:]]
        rows = {}
        for rnd in range(args.rounds):
            for impl, model, kw in runs:
                if impl == "ours":
                    cmd, cwd = [sys.executable, str(HERE / "step.py"), "ours", "--model", model, "--kw", kw], None
                else:
                    cmd, cwd = [args.peer_python, str(HERE / "step.py"), "original", "--src", str(src)], tmp
                cmd += ["--steps", str(args.steps)]
                out = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout
                row = json.loads(out.strip().splitlines()[-1])
                print(json.dumps(dict(round=rnd, **row)), flush=True)
                rows.setdefault(row["model"], []).append(row)
        ref = statistics.median(t for r in rows["S2ConvNet_sem_seg"] for t in r["step_ms"])
        print(f"\n| model | params | step median / min (ms) | × original | batch-1 forward | Δ peak RSS of a step |")
        print("|---|---|---|---|---|---|")
        for name, rs in rows.items():
            steps = [t for r in rs for t in r["step_ms"]]
            med = statistics.median(steps)
            print(f"| {name} | {rs[0]['params']:,} | {med:.0f} / {min(steps):.0f} | {ref / med:.2f}× faster | "
                  f"{statistics.median(r['fwd1_ms'] for r in rs):.1f} ms | "
                  f"{statistics.median(r['peak_rss_growth_mib'] for r in rs):+.0f} MiB |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
