"""Learning benchmark: backbones on the sphere vs the flat Swin-UNet, same step budget and data, on
synthetic WoodScape-format data, scored on the same fisheye pixels (those the sphere models' faces
cover), for segmentation and depth, over seeds, with learning curves (issues #5, #17).

    python bench/learning/run.py [--models heal_swin_tiny swin_unet_flat_tiny gauge_cnn_tiny s2cnn_tiny]
                                 [--steps 300] [--seeds 3] [--evals 6] [--frames 24]
                                 [--tasks segmentation depth] [--out runs/learning] [--threads N] [--workers 2]
                                 [--set KEY=VALUE ...] [--data DIR]
    python bench/learning/run.py --merge DIR [DIR ...] --out DIR

The default is the study of issue #17: the four backbones, both tasks, 3 seeds, 6 evaluations per run,
two runs at once of one thread each (28 min on 2 CPU cores). Any registered variant can be named;
sphere models train at the demo's nside 32 on faces 0-7, flat ones on a 64 x 96 image (about as many
pixels as the sphere models see: matched token counts). NAME@HxW trains a flat model at another size,
e.g. swin_unet_flat_tiny@96x128 (about the sphere's angular resolution in the image centre).
--seeds S trains each (task, model) with run.seed 0 … S-1 (model init, data order; the data are the
same); --evals E evaluates E times during training (the learning curve, from each run's metrics.jsonl);
--workers W trains W runs at once (each with --threads, default 1 then); --set adds config overrides
to every run (e.g. train.lr=1e-3 for a learning-rate sweep, model.kwargs.embed_dim=10 for another width);
--merge reports the rows of several such folders in one table. --full: the paper's setting for a GPU
(nside 256, a 512 x 1024 flat image, 1280 x 966 frames, more frames and steps).

Prints one JSON line per run and writes OUT/results.jsonl, OUT/results.md (mean ± std over seeds,
overall and per ring of incidence angle) and OUT/curves.png (validation metric against step). A run
that finished with the same settings is kept on a rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

DEFAULT_MODELS = ("heal_swin_tiny", "swin_unet_flat_tiny", "gauge_cnn_tiny", "s2cnn_tiny")
# The flat input has about as many pixels as the sphere models see (nside 32, faces 0-7: 8192 pixels,
# 75 % of them inside the image).
FLAT_OVERRIDES = ["data.flat_size=[64,96]"]
FULL = dict(nside=256, flat_size=[512, 1024], size=(1280, 966), frames=200, steps=20000)
METRIC = {"segmentation": ("miou", "mIoU ↑"), "depth": ("abs_rel", "AbsRel ↓")}
SECOND = {"segmentation": ("accuracy", "accuracy ↑"), "depth": ("d1", "δ<1.25 ↑")}


def parse_model(spec: str) -> tuple[str, list | None]:
    """'NAME' or 'NAME@HxW' (a flat model at H x W) -> (name, [H, W] or None); bad specs fail here."""
    from heal_swin.models import model_info

    name, _, size = spec.partition("@")
    info = model_info(name)                    # an unknown name fails here, before any training
    if not size:
        return name, None
    if info.domain != "flat":
        raise SystemExit(f"--models {spec}: @HxW sets the flat image size; {name} is a {info.domain} model")
    try:
        h, w = (int(x) for x in size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--models {spec}: the size must be HxW in whole pixels, e.g. {name}@96x128") from None
    return name, [h, w]


def overrides_for(spec: str, full: bool = False) -> list:
    from heal_swin.models import model_info

    name, size = parse_model(spec)
    if model_info(name).domain == "flat":
        if size is not None:
            return [f"data.flat_size=[{size[0]},{size[1]}]"]
        return [f"data.flat_size=[{FULL['flat_size'][0]},{FULL['flat_size'][1]}]"] if full else list(FLAT_OVERRIDES)
    return [f"data.nside={FULL['nside']}"] if full else []


def grid_of(spec: str, full: bool = False) -> str:
    """The input grid a model spec trains on, for the tables."""
    for o in overrides_for(spec, full):
        if o.startswith("data.flat_size="):
            h, w = o.split("=", 1)[1].strip("[]").split(",")
            return f"flat {h}×{w}"
    return f"nside {FULL['nside'] if full else 32}"


def train_one(job: dict) -> dict:
    """One training run (job: task, model, seed, overrides, run_dir); its result row."""
    from heal_swin.engine import load_config
    from heal_swin.engine.trainer import build_model
    from heal_swin.engine.trainer import main as train
    from heal_swin.models import model_info

    cfg = load_config(ROOT / "configs" / "demo.yaml", job["overrides"])
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    task, model = job["task"], job["model"]
    params = sum(p.numel() for p in build_model(cfg, 10 if task == "segmentation" else 1).parameters())
    key = METRIC[task][0]
    flat = model_info(cfg.model.name).domain == "flat"
    grid = f"flat {cfg.data.flat_size[0]}×{cfg.data.flat_size[1]}" if flat else f"nside {cfg.data.nside}"
    return {"task": task, "model": model, "seed": job["seed"], "grid": grid, "params": params,
            "steps": cfg.train.max_steps,
            "batch": cfg.data.batch_size, "train_seconds": round(seconds, 1),
            f"fisheye_{key}": result["fisheye"][key],
            "fisheye": {k: v for k, v in result["fisheye"].items() if k != "iou"},
            # Per ring of incidence angle (issue #17): where in the image each model wins or loses.
            "fisheye_rings": {name: {k: v for k, v in m.items() if k not in ("iou", "theta_deg")}
                              for name, m in result.get("fisheye_rings", {}).items()},
            "per_class_iou": result["fisheye"].get("iou"), "run_dir": job["run_dir"], "settings": job["settings"]}


def curve(run_dir, task: str) -> tuple[list, list]:
    """(steps, fisheye metric) of a run's evaluations, from its metrics.jsonl."""
    key = METRIC[task][0]
    steps, values = [], []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "eval" in row and "fisheye" in row["eval"]:
            steps.append(row["step"])
            values.append(row["eval"]["fisheye"][key])
    return steps, values


def ring_label(key: str) -> str:
    """'theta_30_60' -> '30–60°', 'theta_90_plus' -> '> 90°'."""
    lo, hi = key.split("_")[1:3]
    return f"> {lo}°" if hi == "plus" else f"{lo}–{hi}°"


def group_label(row: dict, shared: set = frozenset()) -> str:
    """The model spec, with the --set overrides that not every row of the report shares:
    'heal_swin_tiny (embed_dim=10)', 'swin_unet_flat_tiny (train.lr=1e-3)'."""
    own = [x.removeprefix("model.kwargs.") for x in sorted(row.get("settings", {}).get("set", [])) if x not in shared]
    return f"{row['model']} ({', '.join(own)})" if own else row["model"]


def write_report(out: Path, rows: list) -> None:
    import matplotlib

    from heal_swin.engine import atomic_write_text

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict = {}
    shared = set.intersection(*(set(r.get("settings", {}).get("set", [])) for r in rows)) if rows else set()
    for r in rows:
        groups.setdefault((r["task"], group_label(r, shared), json.dumps(r.get("settings"), sort_keys=True)),
                          []).append(r)
    # One label per group: the same model under other settings (another budget) gets them named.
    labels = [(task, label) for task, label, _ in groups]
    renamed = {}
    for (task, label, settings), rs in groups.items():
        if labels.count((task, label)) > 1:
            s = json.loads(settings) or {}
            label = f"{label} [{s.get('steps')} steps, {s.get('frames')} frames]"
        renamed[(task, label)] = rs
    groups = renamed
    rings = sorted({k for r in rows for k in r.get("fisheye_rings", {})}, key=lambda k: float(k.split("_")[1]))
    lines = ["| task | model | grid | parameters | seeds | steps | fisheye metric (mean ± std) | second metric | "
             + " | ".join(f"θ {ring_label(k)}" for k in rings)
             + " | train time |", "|---" * (9 + len(rings)) + "|"]
    for (task, model), rs in sorted(groups.items()):
        key, label = METRIC[task]
        key2, label2 = SECOND[task]
        v = np.array([r[f"fisheye_{key}"] for r in rs])
        v2 = np.array([r["fisheye"].get(key2, np.nan) for r in rs])
        ring_cells = []
        for k in rings:
            rv = np.array([r["fisheye_rings"][k][key] for r in rs if k in r.get("fisheye_rings", {})])
            ring_cells.append(f"{rv.mean():.3f} ± {rv.std():.3f}" if rv.size else "–")
        full = bool(rs[0].get("settings", {}).get("full"))
        lines.append(f"| {task} | {model} | {rs[0].get('grid') or grid_of(rs[0]['model'], full)} | {rs[0]['params']:,} | {len(rs)} | {rs[0]['steps']} "
                     f"| {label[:-2]} {v.mean():.3f} ± {v.std():.3f} | {label2[:-2]} {v2.mean():.3f} ± {v2.std():.3f} | "
                     + " | ".join(ring_cells) + f" | {np.mean([r['train_seconds'] for r in rs]):.0f} s |")
    lines.append("")
    lines.append("std: over seeds (population). Rings: incidence angle θ of the fisheye pixel from the optical axis.")
    seg = {m: rs for (t, m), rs in sorted(groups.items()) if t == "segmentation" and rs[0].get("per_class_iou")}
    if seg:                                   # which classes each model has learned at all
        classes = list(next(iter(seg.values()))[0]["per_class_iou"])
        lines += ["", "Segmentation, IoU per class (mean over seeds):", "",
                  "| model | " + " | ".join(classes) + " |", "|---" * (1 + len(classes)) + "|"]
        for model, rs in seg.items():
            # null: the class is absent from the validation labels and predictions (IoU undefined)
            cells = [[v for r in rs if (v := r["per_class_iou"].get(c)) is not None] for c in classes]
            lines.append(f"| {model} | " + " | ".join(f"{np.mean(v):.3f}" if v else "–" for v in cells) + " |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")

    tasks = sorted({t for t, _ in groups})
    names = sorted({m for _, m in groups})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    color = {m: cmap(i % cmap.N) for i, m in enumerate(names)}  # one colour per model in every panel
    many = len(names) > 6                     # then one legend beside the panels, not over the data
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.5 * len(tasks) + (3.2 if many else 0), 8.4), squeeze=False)
    for ax, task in zip(axes[1], tasks):          # the final metric per ring: where each model wins
        models = [m for t, m in sorted(groups) if t == task]
        width = 0.8 / max(1, len(models))
        for i, model in enumerate(models):
            rs = groups[(task, model)]
            key = METRIC[task][0]
            vals = np.array([[r["fisheye_rings"][k][key] for k in rings] for r in rs])
            ax.bar(np.arange(len(rings)) + (i - (len(models) - 1) / 2) * width, vals.mean(0), width,
                   yerr=vals.std(0), capsize=2, label=model, color=color[model])
        ax.set_xticks(np.arange(len(rings)), [f"θ {ring_label(k)}" for k in rings])
        ax.set_ylabel(f"fisheye {METRIC[task][1]} (final, mean ± std)")
        ax.set_title(f"{task}: per ring of incidence angle")
        ax.grid(alpha=0.3, axis="y")
        if not many:
            ax.legend(fontsize=7)
    for ax, task in zip(axes[0], tasks):
        for (t, model), rs in sorted(groups.items()):
            if t != task:
                continue
            curves = [curve(r["run_dir"], task) for r in rs]
            n = min(len(c[0]) for c in curves)
            if n == 0:
                continue
            steps = curves[0][0][:n]
            vals = np.array([c[1][:n] for c in curves])
            ax.plot(steps, vals.mean(0), marker="o", markersize=3, color=color[model], label=f"{model} ({len(rs)} seeds)")
            ax.fill_between(steps, vals.min(0), vals.max(0), color=color[model], alpha=0.2)
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation fisheye {METRIC[task][1]}")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        if task == "depth":
            ax.set_yscale("log")              # early depth errors are many times the final ones
        if not many:
            ax.legend(fontsize=8)
    fig.suptitle("Learning curves: mean over seeds, band = min–max", fontsize=10)
    if many:
        handles = [plt.Rectangle((0, 0), 1, 1, color=color[m]) for m in names]
        fig.legend(handles, names, loc="center right", fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0, 1 - 3.2 / fig.get_figwidth(), 1))
    else:
        fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def read_rows(folder: Path) -> list:
    """The result rows a study wrote into `folder` (results.jsonl), oldest first; [] before its first run."""
    path = folder / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def merge_reports(folders: list, out: Path) -> int:
    """One report (results.md, curves.png in `out`) of the rows of several studies, e.g. the arms of a
    sweep trained into their own folders; groups differ by model, --set overrides and budget."""
    rows = []
    for folder in folders:
        if not (folder / "results.jsonl").is_file():
            raise SystemExit(f"--merge {folder}: no results.jsonl there (a study writes it after its first run)")
        rows += read_rows(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, rows)
    print((out / "results.md").read_text())
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="registered variants to train")
    p.add_argument("--steps", type=int, default=None, help="default 300 (--full: 20000)")
    p.add_argument("--frames", type=int, default=None, help="default 24 (--full: 200)")
    p.add_argument("--tasks", nargs="+", default=["segmentation", "depth"])
    p.add_argument("--out", default="runs/learning")
    p.add_argument("--data", default=None, help="the synthetic data tree (default OUT/data; generated when empty)")
    p.add_argument("--seed", type=int, default=0, help="the first seed (and the synthetic data's)")
    p.add_argument("--seeds", type=int, default=3, help="runs per (task, model): seeds seed … seed+S-1")
    p.add_argument("--evals", type=int, default=6, help="evaluations per run (the learning curve)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: 1 with --workers "
                   "> 1, else torch's)")
    p.add_argument("--workers", type=int, default=2, help="runs trained at once")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides for every run (e.g. train.lr=1e-3)")
    p.add_argument("--full", action="store_true", help="the paper's setting on a GPU (see the docstring)")
    p.add_argument("--device", default=None, help="run.device for every run (--full: cuda)")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="train nothing: one report in --out of every row in these folders' results.jsonl")
    args = p.parse_args(argv)

    if args.merge:
        return merge_reports([Path(d) for d in args.merge], Path(args.out))

    from heal_swin.data.synthetic import ensure_synthetic
    from heal_swin.engine import atomic_write_text

    for spec in args.models:
        parse_model(spec)
    for item in args.set:
        if "=" not in item:
            raise SystemExit(f"--set {item}: must be KEY=VALUE, e.g. train.lr=1e-3")
    steps = args.steps or (FULL["steps"] if args.full else 300)
    frames = args.frames or (FULL["frames"] if args.full else 24)
    threads = args.threads or (1 if args.workers > 1 else None)
    device = args.device or ("cuda" if args.full else None)
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    out.mkdir(parents=True, exist_ok=True)
    ensure_synthetic(data, frames=frames, seed=args.seed, size=FULL["size"] if args.full else (640, 483))
    eval_every = max(1, steps // max(1, args.evals))
    kept = {(r["task"], r["model"], r.get("seed", 0), json.dumps(r.get("settings"))): r for r in read_rows(out)}
    jobs, rows = [], []
    for task in args.tasks:
        for model in args.models:
            for seed in range(args.seed, args.seed + args.seeds):
                name = model.replace("@", "-") + "".join("-" + re.sub(r"[^A-Za-z0-9._-]+", "-", x) for x in args.set)
                run_dir = out / f"{task}-{name}" if args.seeds == 1 else out / f"{task}-{name}-seed{seed}"
                overrides = [f"run.dir={run_dir}", f"data.root={data}", "data.generate=false", f"task={task}",
                             f"model.name={parse_model(model)[0]}", f"train.max_steps={steps}",
                             f"train.eval_every={eval_every}",
                             "data.split_fractions=[0.75,0.25,0.0]", f"run.seed={seed}", "run.overwrite=true",
                             *overrides_for(model, args.full)]
                if threads:
                    overrides.append(f"run.threads={threads}")
                if device:
                    overrides.append(f"run.device={device}")
                if task == "depth":
                    overrides += ["train.metric=abs_rel", "train.metric_mode=min", "loss.depth=silog",
                                  "data.max_depth=100"]
                overrides += args.set
                settings = {"steps": steps, "frames": frames, "evals": args.evals, "full": args.full}
                if args.set:
                    settings["set"] = sorted(args.set)
                done = kept.pop((task, model, seed, json.dumps(settings)), None)
                if done is not None and (run_dir / "metrics.jsonl").is_file():
                    rows.append(done)
                    continue
                jobs.append(dict(task=task, model=model, seed=seed, overrides=overrides, run_dir=str(run_dir),
                                 settings=settings))
    print(f"{len(jobs)} runs to train ({len(rows)} kept), {args.workers} at once", flush=True)
    # One worker trains in this process; more train in worker processes.
    with ProcessPoolExecutor(args.workers) if args.workers > 1 else contextlib.nullcontext() as pool:
        for row in (pool.map(train_one, jobs) if pool else map(train_one, jobs)):
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("per_class_iou", "fisheye", "fisheye_rings")}),
                  flush=True)
            # After every run, atomically: an interrupted study resumes; rows of other settings (an
            # earlier sweep in the same --out) are kept in the file, not in this report.
            atomic_write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in [*kept.values(), *rows]))
    write_report(out, rows)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
