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

The common report (results.md: a row per model and augmentation level with its eval `upright` and eval
`rotated` columns; curves.png) gets results.md's section "Ensembles", ensembles.jsonl,
miou_vs_augmentation.png and ensemble_equivariance.png. --full: nside 32, 4× the spheres and steps
(GPU-sized; add --device cuda).
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from heal_swin.study import Arm, Study, StudyError, parse_model_spec

ROOT = Path(__file__).resolve().parents[2]
FLAT = "swin_unet_flat_tiny"
SYMMETRIC = "heal_swin_tiny:symmetric=true"
MODELS = ("heal_swin_tiny", SYMMETRIC, "gauge_cnn_tiny", "s2cnn_digits", FLAT)
# trained only on upright and fully rotated spheres (their symmetry, not the data, is what is measured)
EQUIVARIANT = {"s2cnn_digits", SYMMETRIC}
CONFIG = {"heal_swin": "digits_heal_swin", "swin_unet_flat": "digits_flat", "gauge_cnn": "digits_gauge_cnn",
          "s2cnn": "digits_s2cnn", "chart_cnn": "digits_chart_cnn", "planar_cnn": "digits_planar_cnn"}
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


def budget(model: str, steps: int | None, scale: float) -> tuple[int, float, list]:
    """(steps, lr, model kwargs overrides) of a model spec: its family's digits config (steps, or `steps` for
    every family; the config's model.kwargs that the spec does not set, e.g. the transformers' pre-norm)."""
    from heal_swin.models import model_info

    spec = parse_model_spec(model)
    cfg = OmegaConf.load(ROOT / "configs" / f"{CONFIG[model_info(spec.name).family]}.yaml")
    own = dict(spec.kwargs)
    kwargs = [f"model.kwargs.{k}={json.dumps(v).replace(' ', '')}"
              for k, v in OmegaConf.to_container(cfg.model).get("kwargs", {}).items() if k not in own]
    return steps or max(1, round(cfg.train.max_steps * scale)), float(cfg.train.lr), kwargs


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
        steps, lr, kwargs = budget(model, options.steps, scale)
        extra = range(seeds, max(seeds, options.ensemble)) if model in options.ensemble_models else range(0)
        for aug in levels:
            for seed in [*range(seeds), *(extra if aug == 1.0 else [])]:
                arms.append(Arm(model, "segmentation", [*kwargs, f"data.digits.rotate={aug:g}",
                                                        f"train.max_steps={steps}", f"train.lr={lr:g}",
                                                        f"train.eval_every={steps}"],
                                seed, label=model, tags={"augment": aug}, evaluations=EVALUATIONS))
    overrides = ["data.nside=32", "data.digits.train=1600"] if options.full else []

    def report(out, rows):
        from heal_swin.engine import atomic_write_text
        from heal_swin.study import plot_by_tag
        from heal_swin.tools.equivariance import ensemble_errors, plot_ensemble_errors

        plot_by_tag(rows, "augment", Path(out) / "miou_vs_augmentation.png", evaluation="rotated",
                    xlabel="training augmentation (fraction of SO(3) rotation angles)", dashed=EQUIVARIANT,
                    title="Rotated digits: equivariance vs augmentation")
        curves = {}
        for model in options.ensemble_models if options.ensemble else []:
            members = sorted((r for r in rows if r["model"] == model and r["tags"]["augment"] == 1.0),
                             key=lambda r: r["seed"])[:options.ensemble]
            if members:
                curves[model] = ensemble_errors([r["run_dir"] for r in members], "test", ENSEMBLE_SAMPLES,
                                                options.ensemble_rotations, ENSEMBLE_SEED)
        if not curves:
            return
        atomic_write_text(Path(out) / "ensembles.jsonl", "".join(json.dumps({"model": m, **e}) + "\n"
                                                                 for m, es in curves.items() for e in es))
        plot_ensemble_errors(curves, Path(out) / "ensemble_equivariance.png")
        lines = ["", "## Ensembles", "", "Equivariance error: 1 − mIoU between f(R·x) and R·f(x) over random "
                 f"rotations R of {ENSEMBLE_SAMPLES} held-out spheres (drawn turned; the prediction moved by the "
                 "nearest pixel).", "", "| model | K | member k's equivariance error | ensemble (first K) "
                 "equivariance error | member k's mIoU rotated | ensemble mIoU rotated | floor (labels drawn "
                 "turned vs moved) |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {m} | {e['k']} | {e['member_error']:.4f} | {e['ensemble_error']:.4f} | "
                  f"{e['member_miou_rotated']:.3f} | {e['ensemble_miou_rotated']:.3f} | {e['floor']:.4f} |"
                  for m, es in curves.items() for e in es]
        atomic_write_text(Path(out) / "results.md", (Path(out) / "results.md").read_text() + "\n".join(lines) + "\n")

    return Study("rotated_digits", "configs/digits_gauge_cnn.yaml", arms, overrides=overrides, report=report)
