"""Equivariance versus augmentation: rotated-digits segmentation on the sphere, every backbone (issue #16).

    heal-swin-study bench/rotated_digits/study.py --out runs/rotated_digits --workers 2     # 52 runs
    heal-swin-study bench/rotated_digits/study.py --models gauge_cnn_tiny --augment 0 1 --seeds 2 --ensemble 0

Data: `data.source: digits` (scikit-learn's 8 × 8 digits, 3-5 per sphere, half width 0.5 rad, 11 classes),
nside 16 on the full sphere, 400 training spheres, 100 held-out test spheres. Each non-equivariant backbone
(heal_swin_tiny, gauge_cnn_tiny and the flat swin_unet_flat_tiny on the 32 × 96 θ-φ image of the sphere) trains
on spheres rotated by an increasing fraction of SO(3) (--augment, data.digits.rotate); the equivariant ones
(s2cnn_digits, and heal_swin_tiny:symmetric=true) on upright (0) and fully rotated (1) spheres only. Steps
and learning rate per family are those of configs/digits_<family>.yaml (the S2CNN's step costs several of
the others'); --steps gives every family the same count, --steps-scale multiplies them. Every run is scored
on the same held-out test spheres, upright and fully rotated (its eval-upright/ and eval-rotated/), mIoU over
the classes present. Then, as in Gerken & Kessel 2024, an ensemble of --ensemble members per model of
--ensemble-models trained with full augmentation: the equivariance error of each member and of the ensemble
mean for K = 1, 2, ..., as 1 − the mIoU between f(R·x) and R·f(x) over random rotations R of held-out spheres
drawn turned (`heal_swin.tools.equivariance`); the same measure on the labels is the floor.

Writes, beside the common report (results.md, curves.png): results.md's sections "mIoU against augmentation"
and "Ensembles", ensembles.jsonl, miou_vs_augmentation.png and ensemble_equivariance.png. --full: nside 32,
4× the spheres and steps (GPU-sized; add --device cuda).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from heal_swin.study import Arm, Study, StudyError, parse_model_spec

ROOT = Path(__file__).resolve().parents[2]
FLAT = "swin_unet_flat_tiny"
SYMMETRIC = "heal_swin_tiny:symmetric=true"
MODELS = ("heal_swin_tiny", SYMMETRIC, "gauge_cnn_tiny", "s2cnn_digits", FLAT)
# trained only on upright and fully rotated spheres (their symmetry, not the data, is what is measured)
EQUIVARIANT = {"s2cnn_digits", SYMMETRIC}
CONFIG = {"heal_swin": "digits_heal_swin", "swin_unet_flat": "digits_flat", "gauge_cnn": "digits_gauge_cnn",
          "s2cnn": "digits_s2cnn"}
EVALUATIONS = {"upright": ["eval.split=test", "data.digits.eval_rotate=0.0"],
               "rotated": ["eval.split=test", "data.digits.eval_rotate=1.0"]}
ENSEMBLE_SAMPLES, ENSEMBLE_SEED = 50, 11


def add_arguments(group) -> None:
    group.add_argument("--augment", type=float, nargs="+", default=None,
                       help="training rotation levels, fractions of SO(3) in [0, 1] (default 0 0.25 0.5 1)")
    group.add_argument("--steps-scale", type=float, default=None, help="multiply every family's steps (> 0)")
    group.add_argument("--ensemble", type=int, default=5, help="members per ensemble (0: no ensemble part)")
    group.add_argument("--ensemble-models", nargs="+", default=["heal_swin_tiny", FLAT])
    group.add_argument("--ensemble-rotations", type=int, default=4, help="random rotations in the ensemble measure")


def budget(model: str, steps: int | None, scale: float) -> tuple[int, float]:
    """(steps, lr) of a model spec: its family's digits config, or `steps` for every family."""
    from heal_swin.models import model_info

    cfg = OmegaConf.load(ROOT / "configs" / f"{CONFIG[model_info(parse_model_spec(model).name).family]}.yaml")
    return steps or max(1, round(cfg.train.max_steps * scale)), float(cfg.train.lr)


def make(options) -> Study:
    augments = options.augment if options.augment is not None else [0.0, 0.25, 0.5, 1.0]
    if len(set(augments)) != len(augments) or not all(0 <= a <= 1 for a in augments):
        raise StudyError(f"--augment {augments}: levels must be distinct fractions of SO(3) in [0, 1]")
    if options.steps_scale is not None and options.steps_scale <= 0:
        raise StudyError(f"--steps-scale {options.steps_scale} must be > 0")
    if options.ensemble < 0 or options.ensemble_rotations < 1:
        raise StudyError("--ensemble must be >= 0 and --ensemble-rotations >= 1")
    models = options.models or list(MODELS)
    seeds = options.seeds or 3
    scale = (options.steps_scale or 1.0) * (4 if options.full else 1)
    arms = []
    for model in models:
        levels = [a for a in augments if a in (0.0, 1.0)] if model in EQUIVARIANT else augments
        if not levels:
            raise StudyError(f"{model} is equivariant: it trains on upright (0) and fully rotated (1) spheres "
                             f"only, and --augment {augments} holds neither")
        steps, lr = budget(model, options.steps, scale)
        extra = range(seeds, max(seeds, options.ensemble)) if model in options.ensemble_models else range(0)
        for aug in levels:
            for seed in [*range(seeds), *(extra if aug == 1.0 else [])]:
                arms.append(Arm(model, "segmentation", [f"data.digits.rotate={aug:g}", f"train.max_steps={steps}",
                                                        f"train.lr={lr:g}", f"train.eval_every={steps}"],
                                seed, label=model, tags={"augment": aug}, evaluations=EVALUATIONS))
    overrides = ["data.nside=32", "data.digits.train=1600"] if options.full else []

    def report(out, rows):
        ensembles = ensemble_rows(out, rows, options) if options.ensemble else []
        write_digits_report(Path(out), rows, ensembles)

    return Study("rotated_digits", "configs/digits_heal_swin.yaml", arms, overrides=overrides, report=report)


def _miou(row: dict, name: str) -> float:
    return row["evaluations"][name]["sphere"]["miou"]


def ensemble_rows(out, rows: list, options) -> list:
    """Equivariance error of each member and of the mean of the first K members (module docstring), for
    each model of --ensemble-models with fully augmented members; written to OUT/ensembles.jsonl."""
    from heal_swin.engine import atomic_write_text
    from heal_swin.tools import equivariance as eq

    result = []
    for model in options.ensemble_models:
        members = sorted((r for r in rows if r["model"] == model and r["tags"]["augment"] == 1.0),
                         key=lambda r: r["seed"])[:options.ensemble]
        if not members:
            continue
        runs, source = eq.load_runs([r["run_dir"] for r in members], "test", ENSEMBLE_SAMPLES)
        rotations = [r for r in eq.rotations_for(source, "so3", options.ensemble_rotations, ENSEMBLE_SEED)
                     if r[1] == "so3"]

        def error(ms):
            rs = eq.measure(ms, source, rotations, progress=False)["rows"]
            return (float(np.mean([1 - r["miou_between"] for r in rs])), float(np.mean([r["task_miou"] for r in rs])),
                    float(np.mean([1 - r["floor_miou"] for r in rs])))

        for k in range(1, len(runs) + 1):
            ens_err, ens_miou, floor = error(runs[:k])
            mem_err, mem_miou, _ = error(runs[k - 1:k])
            result.append(dict(model=model, k=k, ensemble_error=round(ens_err, 4), member_error=round(mem_err, 4),
                               ensemble_miou_rotated=round(ens_miou, 4), member_miou_rotated=round(mem_miou, 4),
                               floor=round(floor, 4)))
    atomic_write_text(Path(out) / "ensembles.jsonl", "".join(json.dumps(e) + "\n" for e in result))
    return result


def write_digits_report(out: Path, rows: list, ensembles: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from heal_swin.engine import atomic_write_text

    groups: dict = {}
    for r in rows:
        groups.setdefault((r["model"], r["tags"]["augment"]), []).append(r)
    lines = ["", "## mIoU against augmentation", "",
             "Held-out test spheres, upright and fully rotated; mean ± std over seeds.", "",
             "| model | parameters | steps, lr | train augmentation (fraction of SO(3)) | seeds | mIoU upright test | "
             "mIoU rotated test | train time |", "|---|---|---|---|---|---|---|---|"]
    for (model, aug), rs in sorted(groups.items()):
        up, rot = np.array([_miou(r, "upright") for r in rs]), np.array([_miou(r, "rotated") for r in rs])
        lr = next(o for o in rs[0]["arm"]["overrides"] if o.startswith("train.lr=")).split("=")[1]
        lines.append(f"| {model} | {rs[0]['params']:,} | {rs[0]['steps']}, {lr} | {aug:g} | {len(rs)} | "
                     f"{up.mean():.3f} ± {up.std():.3f} | {rot.mean():.3f} ± {rot.std():.3f} | "
                     f"{np.mean([r['train_seconds'] for r in rs]):.0f} s |")
    if ensembles:
        lines += ["", "## Ensembles", "", "Equivariance error: 1 − mIoU between f(R·x) and R·f(x) over random rotations "
                  f"R of {ENSEMBLE_SAMPLES} held-out spheres (drawn turned; the prediction moved by the nearest pixel).",
                  "", "| model | K | member k's equivariance error | ensemble (first K) equivariance error | member k's "
                  "mIoU rotated | ensemble mIoU rotated | floor (labels drawn turned vs moved) |",
                  "|---|---|---|---|---|---|---|"]
        for e in ensembles:
            lines.append(f"| {e['model']} | {e['k']} | {e['member_error']:.4f} | {e['ensemble_error']:.4f} | "
                         f"{e['member_miou_rotated']:.3f} | {e['ensemble_miou_rotated']:.3f} | {e['floor']:.4f} |")
    atomic_write_text(out / "results.md", (out / "results.md").read_text() + "\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model in sorted({m for m, _ in groups}):
        augs = sorted(a for m, a in groups if m == model)
        vals = [[_miou(r, "rotated") for r in groups[(model, a)]] for a in augs]
        ax.errorbar(augs, [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], marker="o", capsize=3,
                    label=model, linestyle="--" if model in EQUIVARIANT else "-")
    ax.set_xlabel("training augmentation (fraction of SO(3) rotation angles)")
    ax.set_ylabel("mIoU on fully rotated test spheres")
    ax.set_title("Rotated digits: equivariance vs augmentation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "miou_vs_augmentation.png", dpi=120)
    plt.close(fig)
    if not ensembles:
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model in sorted({e["model"] for e in ensembles}):
        es = [e for e in ensembles if e["model"] == model]
        ax.plot([e["k"] for e in es], [e["ensemble_error"] for e in es], marker="o", label=f"{model}: ensemble mean")
        ax.plot([e["k"] for e in es], [e["member_error"] for e in es], marker="x", linestyle=":",
                label=f"{model}: member k")
    ax.axhline(ensembles[0]["floor"], color="grey", linewidth=1, label="floor (labels moved, nearest pixel)")
    ax.set_xlabel("ensemble size K")
    ax.set_ylabel("equivariance error: 1 − mIoU(f(Rx), R f(x))")
    ax.set_title("Emergent equivariance of ensembles (full SO(3) augmentation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ensemble_equivariance.png", dpi=120)
    plt.close(fig)
