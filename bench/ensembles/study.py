"""Emergent equivariance in deep ensembles (issue #28, item 3; Gerken & Kessel 2024): does the mean of K
non-equivariant members become equivariant as K grows when the members were trained with full rotation
augmentation, at every training time, and not when they were trained upright?

    heal-swin-study bench/ensembles/study.py --out runs/ensembles --threads 1       # 32 runs, ≈ 25 min
    heal-swin-study bench/ensembles/study.py --ensemble-models chart_cnn_tiny --members 4 --steps 200
    heal-swin-study bench/ensembles/study.py --full --device cuda --out runs/ensembles_full     # a GPU

Members: --members (default 8) seeds of each model of --ensemble-models (default the chart CNN,
chart_cnn_tiny, on the sphere and the planar CNN, planar_cnn_1x, on the 32 × 96 θ-φ image through its
equirectangular adapter; about 61k parameters each), each trained with full SO(3) augmentation
(data.digits.rotate=1) and with none (0), on the rotated-digits spheres of configs/digits_chart_cnn.yaml
(segmentation, 3-5 digits per sphere, 11 classes, nside 16, full sphere, 400 training spheres; AdamW,
one-cycle at lr 3e-3, batch 4) for --steps (default 600: trained upright, the chart CNN reaches 0.41 mIoU at
400 steps and 0.74 at 1000 in the controls study; the planar CNN 0.20 at 400). Every run writes --snapshots
(default 4) weight snapshots along training (train.snapshot_every: weights/step-000150 ... -000600, each
with a resume state, so a killed run resumes). Training time here is the one-cycle schedule's: early
snapshots are taken at a high learning rate.

Then, for every model × augmentation × snapshot, `heal_swin.tools.equivariance.ensemble_errors` on the
held-out test spheres: for K = 1 … members, the equivariance error 1 − mIoU(f(R·x), R·f(x)) of the mean
of the first K members (their class probabilities) and of member K alone, over --ensemble-rotations random
rotations R of SO(3) of --ensemble-samples spheres (drawn turned; the prediction moved by the nearest
pixel), their mIoU on the turned spheres, and the floor: the same measure on the labels (drawn turned
against moved), which an exactly equivariant model would reach. The theory predicts: with augmentation the
ensemble's error falls with K towards the floor at every training time; without it, it does not. Members
that have not learned the digits (mIoU on turned spheres near the all-background 0.1) answer nothing: read
the table's mIoU columns first.

Writes, beside the common report (results.md, curves.png): ensembles.jsonl (a row per model ×
augmentation × snapshot × K; kept and reused on a rerun: delete it to measure again), results.md's section
"Ensembles", ensemble_error_vs_k.png (error against K, a panel per model and snapshot: ensemble solid,
member K dotted, floor grey) and ensemble_error_vs_step.png (at K = members against the snapshot's step,
beside the members' mean with their min-max band).

Time (measured, bench/README.md): the default, one thread, took 70 min on the 2-core machine shared with other
jobs (load 5-6). With the 4x members at the paper study's budget (--ensemble-models chart_cnn_tiny_4x
planar_cnn_4x --steps 3000 --workers 2) a run took 275-350 s on a free core: 32 runs ≈ 1 h 20 min on two free
cores, plus about 3 min of measures. --full (a GPU, not run; an estimated 0.1-0.24 h of training on one H100,
bench/gpu/ESTIMATE.md; the GPU check's research part measures its steps): nside 32, 1,600 training spheres,
16 members, 2,400 steps, 8 snapshots, 100 spheres × 8 rotations per measure: 64 runs, one at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

from heal_swin.study import Arm, Study, StudyError

MODELS = ("chart_cnn_tiny", "planar_cnn_1x")
AUGMENT = {1.0: "full", 0.0: "none"}            # data.digits.rotate -> name
SEED = 11                                       # of the random rotations of the measure
# the default budget, and --full's
DEFAULT = dict(members=8, steps=600, snapshots=4, samples=24, rotations=3)
FULL = dict(members=16, steps=2400, snapshots=8, samples=100, rotations=8)


def add_arguments(group) -> None:
    group.add_argument("--members", type=int, default=None, help="members per ensemble (seeds; default 8, --full 16)")
    group.add_argument("--ensemble-models", nargs="+", default=None, metavar="SPEC",
                       help=f"the members' model specs (default {' '.join(MODELS)})")
    group.add_argument("--snapshots", type=int, default=None,
                       help="points along training measured (every steps/N steps; default 4, --full 8)")
    group.add_argument("--ensemble-samples", type=int, default=None,
                       help="held-out spheres per measure (default 24, --full 100)")
    group.add_argument("--ensemble-rotations", type=int, default=None,
                       help="random SO(3) rotations per measure (default 3, --full 8)")


def _setting(options, name: str, flag: str) -> int:
    value = getattr(options, flag, None)
    value = (FULL if options.full else DEFAULT)[name] if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StudyError(f"--{flag.replace('_', '-')} {value!r} must be a whole number >= 1")
    return value


def points(steps: int, snapshots: int) -> list[tuple[str, int]]:
    """(weights name, step) of the points along training that are measured: the snapshots every
    steps // snapshots steps, and the last weights where the steps are not a multiple of that."""
    from heal_swin.engine import snapshot_name

    every = steps // snapshots
    out = [(snapshot_name(every * j), every * j) for j in range(1, steps // every + 1)]
    return out if out[-1][1] == steps else [*out, ("last", steps)]


def make(options) -> Study:
    if options.seeds is not None:
        raise StudyError("--seeds: the members of an ensemble are its seeds; use --members")
    if options.tasks not in (None, ["segmentation"]):
        raise StudyError(f"--tasks {options.tasks}: the ensemble measure compares segmentation maps; "
                         "segmentation only")
    models = options.ensemble_models or options.models or list(MODELS)
    if len(set(models)) != len(models):
        raise StudyError(f"--ensemble-models {models}: a model listed twice would train its members twice")
    members = _setting(options, "members", "members")
    steps = options.steps or (FULL if options.full else DEFAULT)["steps"]
    snapshots = _setting(options, "snapshots", "snapshots")
    samples = _setting(options, "samples", "ensemble_samples")
    rotations = _setting(options, "rotations", "ensemble_rotations")
    if snapshots > steps:
        raise StudyError(f"--snapshots {snapshots} must be at most the steps ({steps}): a snapshot is taken every "
                         "steps/N steps")
    every = steps // snapshots
    budget = [f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.snapshot_every={every}",
              f"train.checkpoint_every={every}"]
    arms = [Arm(model, "segmentation", [f"data.digits.rotate={aug:g}", *budget], seed,
                label=f"{model}, augmentation {name}", tags={"augment": aug})
            for model in models for aug, name in AUGMENT.items() for seed in range(members)]
    overrides = ["data.nside=32", "data.digits.train=1600"] if options.full else []
    measured = points(steps, snapshots)

    def report(out, rows):
        measure(Path(out), rows, models, members, measured, samples, rotations, _device(options.device))

    return Study("ensembles", "configs/digits_chart_cnn.yaml", arms, overrides=overrides, report=report,
                 description="emergent equivariance of ensembles against K and training time")


def _device(device: str | None) -> str:
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# --------------------------------------------------------------------------- the report


def measure(out: Path, rows: list, models, members: int, measured, samples: int, rotations: int,
            device: str) -> list[dict]:
    """Every model × augmentation × point along training through `ensemble_errors`, reusing the rows of
    OUT/ensembles.jsonl measured with the same runs and settings; writes the file after every ensemble,
    the figures and results.md's section. Returns the rows."""
    from heal_swin.engine import atomic_write_text
    from heal_swin.tools.equivariance import ensemble_errors

    path = out / "ensembles.jsonl"
    kept: dict = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue                              # a line cut short: measured again
        kept.setdefault(_key(row), []).append(row)
    result = []
    for model in models:
        for aug in AUGMENT:
            runs = sorted((r for r in rows if r["model"] == model and r["tags"].get("augment") == aug),
                          key=lambda r: r["seed"])[:members]
            if not runs:
                continue
            for weights, step in measured:
                setting = dict(model=model, augment=aug, step=step, weights=weights, samples=samples,
                               rotations=rotations, seed=SEED, runs=[Path(r["run_dir"]).name for r in runs])
                found = kept.get(_key(setting))
                if found is None:
                    errors = ensemble_errors([r["run_dir"] for r in runs], "test", samples, rotations, SEED,
                                             device=device, weights=weights)
                    found = [{**setting, **e} for e in errors]
                    print(f"ensemble measure: {model}, augmentation {AUGMENT[aug]}, step {step}: ensemble error "
                          f"{found[-1]['ensemble_error']:.3f} at K={len(runs)} (floor {found[-1]['floor']:.3f})",
                          flush=True)
                result += found
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in result))
    if not result:
        return result
    plot_against_k(result, out / "ensemble_error_vs_k.png")
    plot_against_step(result, out / "ensemble_error_vs_step.png")
    text = (out / "results.md").read_text() + "\n".join(section(result)) + "\n"
    atomic_write_text(out / "results.md", text)
    return result


def _key(row: dict) -> str:
    return json.dumps([row[k] for k in ("model", "augment", "weights", "samples", "rotations", "seed", "runs")])


def _series(result: list) -> dict:
    """{(model, augment, step): rows in K order}."""
    out: dict = {}
    for r in result:
        out.setdefault((r["model"], r["augment"], r["step"]), []).append(r)
    return {key: sorted(rs, key=lambda r: r["k"]) for key, rs in out.items()}


def section(result: list) -> list[str]:
    """results.md's section: a row per model × augmentation × point along training."""
    import numpy as np

    series = _series(result)
    kmax = max(r["k"] for r in result)
    ks = sorted({k for k in (1, 2, 4, 8, 16, kmax) if k <= kmax})
    r0 = result[0]
    lines = ["", "## Ensembles", "",
             f"Equivariance error 1 − mIoU(f(R·x), R·f(x)) over {r0['rotations']} random rotations R of SO(3) of "
             f"{r0['samples']} held-out test spheres (drawn turned; the prediction moved by the nearest pixel), of "
             "the mean of the first K members' class probabilities and of each member alone; the floor is the same "
             "measure on the labels (what an exactly equivariant model reaches). Members: seeds 0 … K−1 of each "
             "model, trained with full SO(3) augmentation or none; every K: ensembles.jsonl, "
             "ensemble_error_vs_k.png, ensemble_error_vs_step.png.", "",
             "| model | augmentation | step | members' error (mean ± std) | "
             + " | ".join(f"ensemble K={k}" for k in ks)
             + " | floor | members' mIoU on turned spheres | ensemble mIoU on turned spheres (K max) |",
             "|---" * (7 + len(ks)) + "|"]
    for (model, aug, step), rs in sorted(series.items(), key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        member = np.array([r["member_error"] for r in rs])
        by_k = {r["k"]: r for r in rs}
        cells = [model, AUGMENT[aug], str(step), f"{member.mean():.3f} ± {member.std():.3f}"]
        cells += [f"{by_k[k]['ensemble_error']:.3f}" if k in by_k else "–" for k in ks]
        cells += [f"{rs[0]['floor']:.3f}", f"{np.mean([r['member_miou_rotated'] for r in rs]):.3f}",
                  f"{rs[-1]['ensemble_miou_rotated']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COLOUR = {1.0: "tab:blue", 0.0: "tab:red"}


def plot_against_k(result: list, path) -> None:
    """Error against K: a row of panels per model, a panel per point along training; per augmentation the
    ensemble (solid) and member K alone (dotted); the floor (grey)."""
    plt = _pyplot()
    series = _series(result)
    models = sorted({m for m, _, _ in series})
    steps = sorted({s for _, _, s in series})
    # wide enough for the title and the legend when one point along training is measured (one column)
    fig, axes = plt.subplots(len(models), len(steps), figsize=(max(3.3 * len(steps) + 0.6, 7.5), 3.0 * len(models)),
                             squeeze=False, sharey="row")
    for i, model in enumerate(models):
        for j, step in enumerate(steps):
            ax = axes[i][j]
            for aug in AUGMENT:
                rs = series.get((model, aug, step))
                if not rs:
                    continue
                ks = [r["k"] for r in rs]
                ax.plot(ks, [r["ensemble_error"] for r in rs], marker="o", markersize=3, color=COLOUR[aug],
                        label=f"augmentation {AUGMENT[aug]}: ensemble of K")
                ax.plot(ks, [r["member_error"] for r in rs], marker="x", markersize=3, linestyle=":",
                        color=COLOUR[aug], label=f"augmentation {AUGMENT[aug]}: member K")
                ax.axhline(rs[0]["floor"], color="grey", linewidth=1, label="floor (labels, nearest pixel)")
            ax.set_title(f"{model}, step {step}", fontsize=9)
            ax.set_xlabel("ensemble size K")
            ax.grid(alpha=0.3)
        axes[i][0].set_ylabel("1 − mIoU(f(Rx), R f(x))")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=3 if len(steps) > 1 else 2, fontsize=8,
               frameon=False)
    fig.suptitle("Emergent equivariance: error against ensemble size, at each point along training", fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if len(steps) > 1 else 0.14, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_against_step(result: list, path) -> None:
    """Error at the largest K against the step: per model a panel, per augmentation the ensemble (solid) and
    the members' mean (dotted, band min-max over the members); the floor (grey)."""
    import numpy as np

    plt = _pyplot()
    series = _series(result)
    models = sorted({m for m, _, _ in series})
    fig, axes = plt.subplots(1, len(models), figsize=(max(5.2 * len(models), 7.5), 4.4), squeeze=False,
                             sharey=True)
    for ax, model in zip(axes[0], models):
        for aug in AUGMENT:
            steps = sorted(s for m, a, s in series if m == model and a == aug)
            if not steps:
                continue
            rs = [series[(model, aug, s)] for s in steps]
            member = np.array([[r["member_error"] for r in x] for x in rs])
            ax.plot(steps, [x[-1]["ensemble_error"] for x in rs], marker="o", color=COLOUR[aug],
                    label=f"augmentation {AUGMENT[aug]}: ensemble of {rs[0][-1]['k']}")
            ax.plot(steps, member.mean(1), marker="x", linestyle=":", color=COLOUR[aug],
                    label=f"augmentation {AUGMENT[aug]}: members (mean, band min-max)")
            ax.fill_between(steps, member.min(1), member.max(1), color=COLOUR[aug], alpha=0.12)
            ax.plot(steps, [x[0]["floor"] for x in rs], color="grey", linewidth=1, label="floor (labels)")
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("training step (snapshot)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("1 − mIoU(f(Rx), R f(x))")
    # one legend for every panel, below them, where it covers no curve
    unique = {}
    for ax in axes[0]:
        handles, labels = ax.get_legend_handles_labels()
        unique.update(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Emergent equivariance along training: the ensemble of all members against its members",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
