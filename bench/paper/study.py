"""Equivariance versus augmentation, the 2022 paper's experiment on our digits (issue #28, items 1, 2 and 6).

    heal-swin-study bench/paper/study.py --out runs/paper --workers 2          # the default: see bench/README.md
    heal-swin-study bench/paper/study.py --out runs/paper --workers 2 --grid   # + the size and augmentation axes
    heal-swin-study bench/paper/study.py --tasks classification --seeds 1      # one task, one seed
    heal-swin-study bench/paper/study.py --ladder 1x 4x 20x --sizes 100 400 1600 6400
    heal-swin-study bench/paper/study.py --full --device cuda --workers 1      # the grid, nside 32, 4x spheres, steps

Data: the rotated-digits spheres (`data.source: digits`: scikit-learn's 8 x 8 digits on the full HEALPix
sphere, nside 16): segmentation with 3-5 digits per sphere (11 classes), classification with one digit per
sphere (10 classes). Held-out test spheres are scored upright and fully rotated (eval-upright/, eval-rotated/).

Arms, per task and seed (--seeds, default 3):
- the equivariant models (gauge CNN, S2CNN, HEAL-SWIN with the turn-invariant layout) trained on upright
  spheres, at every training-set size (--sizes; default the reference size, 400 spheres);
- the controls (chart CNN and planar CNN at 4x the gauge CNN's parameters, its activation width) trained with
  every augmentation level (--augment; default none and full SO(3)) at the reference size, and with full
  augmentation at every other size (the paper's x-axis: CNNs trained on rotated data);
- the rest of the ladder (--ladder; default none) with full augmentation at the reference size, for each family
  whose 4x control is among the models.
--grid is the paper's whole grid: sizes 100 400 1600, augmentation 0 1/4 1/2 1, the 1x rung (138 runs; measured on
two free cores: the default's 42 in 1 h 35 min, one seed of the grid's other arms with the 20x rung, 36 runs, in
1 h 34 min); --full implies it (on one H100 an estimated 1.8-4.3 h of training, bench/gpu/ESTIMATE.md).
--converge: each family's best arm at the reference size run once more for twice the steps (seed 0), the check
that the budget is where its learning curve has flattened.
Every family trains on its own recipe: the keys in which configs/digits_<family>.yaml differs from the gauge
CNN's (e.g. the learning rate), and for classification, where it exists, the keys in which
configs/digits_classification_<family>.yaml differs from configs/digits_classification.yaml; every arm of a task
on one budget (STEPS; --steps gives every arm the same). Seeds run outermost and the budget checks last, so a
study cut short reports every arm at fewer seeds rather than some arms at none.

The report adds to the common one (results.md, curves.png: learning curves on the validation spheres):
`paper.md` (each point: ours, mIoU over the classes present, and the paper's, mIoU over the ten digit classes
without the background; accuracy for classification; mean ± std over seeds; the all-background / majority
class score; the paper's three axes at the budget as tables, upright / rotated in each cell: size, augmentation,
ladder; runs trained on a former recipe of their family are listed apart and left out of the figures),
`paper.jsonl`, and per task `size_<task>.png` (against training spheres, the paper's figure) and
`augment_<task>.png` (against augmentation; the equivariant models' upright-trained scores as dashed lines).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from heal_swin.study import Arm, Study, StudyError, parse_model_spec

ROOT = Path(__file__).resolve().parents[2]
BASE = "configs/digits_gauge_cnn.yaml"
CLASSIFICATION = "configs/digits_classification.yaml"
SYMMETRIC = "heal_swin_tiny:symmetric=true"
EQUIVARIANT = ("gauge_cnn_tiny", "s2cnn_digits", SYMMETRIC)
LADDER = {"chart_cnn": {"1x": "chart_cnn_tiny", "4x": "chart_cnn_tiny_4x", "20x": "chart_cnn_tiny_20x"},
          "planar_cnn": {"1x": "planar_cnn_1x", "4x": "planar_cnn_4x", "20x": "planar_cnn_20x"}}
MAIN_RUNG = "4x"
# the common budget: every family's best arm still gained from 1,000 to 2,000 segmentation steps (and from 600 to
# 1,200 classification steps); HEAL-SWIN's pre-norm curve flattens at 3,000 (0.432 at 2,000, 0.433 at 3,000:
# bench/README.md, "Why the transformers did not learn the digits")
STEPS = {"segmentation": 3000, "classification": 1800}
SIZES, REFERENCE = (100, 400, 1600), 400
AUGMENT = (0.0, 0.25, 0.5, 1.0)
# the default: both ends of the augmentation axis at the reference size, three seeds, within two hours on two cores
DEFAULT_AUGMENT, DEFAULT_SIZES = (0.0, 1.0), (REFERENCE,)
EVALUATIONS = {"upright": ["eval.split=test", "data.digits.eval_rotate=0.0"],
               "rotated": ["eval.split=test", "data.digits.eval_rotate=1.0"]}
# keys of a family's config that are not its recipe: where a run goes, what it is, and what the arms set
# (both tasks score the base config's 100 test spheres)
NOT_RECIPE = ("run.", "task", "model.name", "train.max_steps", "train.eval_every", "data.digits.rotate",
              "data.digits.eval_rotate", "data.digits.train", "data.digits.test")


def add_arguments(group) -> None:
    group.add_argument("--augment", type=float, nargs="+", default=None,
                       help="the controls' training rotation levels, fractions of SO(3) (default 0 1; --grid: "
                            f"{' '.join(f'{a:g}' for a in AUGMENT)})")
    group.add_argument("--sizes", type=int, nargs="+", default=None,
                       help=f"numbers of training spheres (default {REFERENCE}; --grid: {' '.join(map(str, SIZES))}; "
                            f"the reference {REFERENCE} is always included)")
    group.add_argument("--ladder", nargs="+", default=None, choices=["1x", "4x", "20x"],
                       help="control sizes besides 4x, with full augmentation at the reference size (default none; "
                            "--grid: 1x)")
    group.add_argument("--grid", action="store_true",
                       help="the paper's whole grid: every size, augmentation level and the 1x rung (the flags above "
                            "still choose where given)")
    group.add_argument("--evals", type=int, default=5, help="validation evaluations per run (the learning curve)")
    group.add_argument("--converge", action="store_true",
                       help="add the twice-as-long runs (seed 0) that check each family's budget")


def _load(path) -> dict:
    from heal_swin.engine import flat_config

    return flat_config(OmegaConf.load(ROOT / path))


def recipe(path, base=BASE) -> list[str]:
    """The overrides that turn `base` into the config at `path`, without the keys the arms set themselves."""
    mine, theirs = _load(path), _load(base)
    return [f"{k}={v if isinstance(v, str) and v.isidentifier() else json.dumps(v).replace(' ', '')}"
            for k, v in sorted(mine.items()) if not k.startswith(NOT_RECIPE) and (k not in theirs or theirs[k] != v)]


def family(model: str) -> str:
    from heal_swin.models import model_info

    return model_info(parse_model_spec(model).name).family


def family_config(model: str) -> str:
    if model == SYMMETRIC:
        return "configs/digits_heal_swin_symmetric.yaml"
    name = family(model)
    return f"configs/digits_{'flat' if name == 'swin_unet_flat' else name}.yaml"


def model_recipe(model: str, task: str) -> list[str]:
    """A model's overrides on the base config for a task: the task's, the family's, and for classification the
    family's classification recipe where configs/digits_classification_<family>.yaml exists."""
    out = [*(recipe(CLASSIFICATION) if task == "classification" else []), *recipe(family_config(model))]
    own = f"configs/digits_classification_{family(model)}.yaml"
    if task == "classification" and (ROOT / own).is_file():
        out += recipe(own, base=CLASSIFICATION)
    return list({item.split("=", 1)[0]: item for item in out}.values())     # a key set twice: the last value


def make(options) -> Study:
    tasks = options.tasks or list(STEPS)
    unknown = sorted(set(tasks) - set(STEPS))
    grid = options.grid or options.full                    # a GPU runs the whole grid
    augments = list(options.augment if options.augment is not None else AUGMENT if grid else DEFAULT_AUGMENT)
    sizes = sorted(set(options.sizes or (SIZES if grid else DEFAULT_SIZES)) | {REFERENCE})
    if unknown:
        raise StudyError(f"--tasks {unknown}: choose from {list(STEPS)}")
    if len(set(augments)) != len(augments) or not all(0 <= a <= 1 for a in augments) or 1.0 not in augments:
        raise StudyError(f"--augment {augments}: levels must be distinct fractions of SO(3) in [0, 1], full (1) "
                         "among them (the controls' size sweep trains with it)")
    if min(sizes) < 1 or options.evals < 1:
        raise StudyError(f"--sizes {sizes} must be >= 1 sphere and --evals {options.evals} >= 1")
    scale = 4 if options.full else 1
    ladder = options.ladder if options.ladder is not None else ["1x"] if grid else []
    rungs = [MAIN_RUNG, *[r for r in ladder if r != MAIN_RUNG]]
    # (model, role, augment, size, steps factor)
    plan = []
    for model in options.models or [*EQUIVARIANT, *(LADDER[f][MAIN_RUNG] for f in LADDER)]:
        parse_model_spec(model)
        if model in EQUIVARIANT:
            plan += [(model, "equivariant", 0.0, n, 1) for n in sizes]
            continue
        plan += [(model, "control", a, REFERENCE, 1) for a in augments]
        plan += [(model, "control", 1.0, n, 1) for n in sizes if n != REFERENCE]
    chosen = {model for model, *_ in plan}
    plan += [(LADDER[f][r], "ladder", 1.0, REFERENCE, 1) for f in LADDER for r in rungs[1:]
             if LADDER[f][MAIN_RUNG] in chosen and LADDER[f][r] not in chosen]
    if options.converge:
        plan += [(m, role, a, n, 2) for m, role, a, n, _ in list(plan) if n == REFERENCE
                 and (role == "equivariant" or (role == "control" and a == 1.0))]
    budgets = {task: (options.steps or STEPS[task]) * scale for task in tasks}
    arms = []
    # seeds outermost, the budget checks last: a study cut short has every arm at fewer seeds
    order = [(seed, task, p) for seed in range(options.seeds or 3) for task in tasks for p in plan if p[4] == 1]
    order += [(0, task, p) for task in tasks for p in plan if p[4] > 1]
    for seed, task, (model, role, aug, size, factor) in order:
        steps = budgets[task] * factor
        size_here = size * scale
        budget = [f"train.max_steps={steps}", f"train.eval_every={max(1, steps // options.evals)}"]
        tags = {"role": role, "augment": aug, "spheres": size_here, "steps": steps, "converge": factor > 1}
        label = f"{model} ({'2x steps' if factor > 1 else 'upright' if role == 'equivariant' else role})"
        arms.append(Arm(model, task, [*model_recipe(model, task),
                                      f"data.digits.rotate={aug:g}", f"data.digits.train={size_here}",
                                      *budget], seed, label=label, tags=tags, evaluations=EVALUATIONS))
    overrides = ["data.nside=32"] if options.full else []
    return Study("paper", BASE, arms, overrides=overrides,
                 report=functools.partial(report, budgets=budgets, reference=REFERENCE * scale))


# --------------------------------------------------------------------------- report


def digit_miou(result: dict) -> float | None:
    """The paper's metric: the mean IoU over the ten digit classes, the background left out."""
    iou = result.get("sphere", {}).get("iou")
    if not iou:
        return None
    values = [v for k, v in iou.items() if k != "background" and v is not None]
    return float(np.mean(values)) if values else None


def score(row: dict, evaluation: str) -> dict:
    result = row["evaluations"][evaluation]
    if row["task"] == "classification":
        return {"ours": result["sphere"]["accuracy"], "paper": result["sphere"]["accuracy"]}
    return {"ours": result["sphere"]["miou"], "paper": digit_miou(result)}


def chance(rows: list, task: str) -> dict:
    """What predicting the most frequent class everywhere scores on the upright test spheres of a run: for
    segmentation the background (ours: its IoU, the background's share of the pixels, over the classes; the
    paper's metric: 0), for classification the largest class's share."""
    from heal_swin.engine import build_datasets, load_config

    row = next(r for r in rows if r["task"] == task)
    cfg = load_config(Path(row["run_dir"]) / "config.yaml", ["data.digits.eval_rotate=0.0"])
    test = build_datasets(cfg, ("test",))["test"]
    labels = np.concatenate([np.atleast_1d(test[i]["labels"].numpy()) for i in range(len(test))])
    if task == "classification":
        share = float(np.bincount(labels, minlength=len(test.class_names)).max() / labels.size)
        return {"ours": share, "paper": share}
    return {"ours": float((labels == 0).mean() / len(test.class_names)), "paper": 0.0}


def _stat(values) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None], dtype=float)
    return (float(v.mean()), float(v.std())) if v.size else (float("nan"), float("nan"))


# the overrides by which an arm places itself on the study's axes (the rest of its overrides are its recipe)
ARM_KEYS = ("data.digits.rotate=", "data.digits.train=", "train.max_steps=", "train.eval_every=")


@functools.lru_cache(maxsize=None)
def _resolved(overrides: tuple) -> dict:
    from heal_swin.engine import flat_config, load_config

    return flat_config(load_config(ROOT / BASE, list(overrides)))


@functools.lru_cache(maxsize=None)
def _current_recipe(model: str, task: str) -> dict:
    """A family's recipe for a task as the configs give it now, resolved: read once per report, not once per run."""
    return _resolved(tuple(model_recipe(model, task)))


def former_recipe(row: dict) -> str:
    """'' for a run trained on its family's recipe as the configs give it now; otherwise the settings in which
    the run's recipe differs from it, the run's values (e.g. 'train.lr=0.005' for a run made before the learning
    rate changed). Compared as resolved configs: an override that restates a default is no difference."""
    then = _resolved(tuple(o for o in row["arm"]["overrides"] if not o.startswith(ARM_KEYS)))
    now = _current_recipe(row["model"], row["task"])
    return ", ".join(f"{k}={then.get(k)}" for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k))


def summarise(rows: list) -> list[dict]:
    """One point per (task, model, role, augmentation, spheres, steps, recipe): mean and std over seeds. Runs on a
    former recipe of their family are points of their own (`recipe` names the difference; '' for today's)."""
    points: dict = {}
    for r in rows:
        t = r["tags"]
        key = (r["task"], r["model"], t["role"], t["augment"], t["spheres"], t["steps"], former_recipe(r))
        points.setdefault(key, []).append(r)
    out = []
    for (task, model, role, aug, spheres, steps, former), rs in sorted(points.items(), key=lambda kv: str(kv[0])):
        point = dict(task=task, model=model, role=role, augment=aug, spheres=spheres, steps=steps, recipe=former,
                     seeds=len(rs),
                     converge=any(r["tags"].get("converge") for r in rs),
                     params=rs[0]["params"], train_seconds=round(float(np.mean([r["train_seconds"] for r in rs])), 1))
        for ev in EVALUATIONS:
            for kind in ("ours", "paper"):
                point[f"{ev}_{kind}"] = _stat([score(r, ev)[kind] for r in rs])
        out.append(point)
    return out


def _fmt(pair) -> str:
    mean, std = pair
    return "–" if np.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def _figure(points: list, task: str, x: str, path: Path, floor: dict, steps: int | None, reference: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    metric = "accuracy" if task == "classification" else "mIoU over the digit classes"
    for ax, ev in zip(axes, EVALUATIONS):
        for model in sorted({p["model"] for p in points}):
            if x == "spheres":
                mine = [p for p in points if p["model"] == model and (p["augment"] == 1.0 or p["role"] == "equivariant")]
            else:
                mine = [p for p in points if p["model"] == model and p["spheres"] == reference]
            mine = sorted((p for p in mine if p["task"] == task and not p.get("converge")), key=lambda p: p[x])
            if not mine:
                continue
            equivariant = mine[0]["role"] == "equivariant"
            ys = [p[f"{ev}_paper"] for p in mine]
            if x == "augment" and equivariant:
                ax.axhline(ys[0][0], linestyle="--", linewidth=1.2, label=f"{model} (upright training)",
                           color=f"C{sorted({p['model'] for p in points}).index(model)}")
                continue
            ax.errorbar([p[x] for p in mine], [y[0] for y in ys], yerr=[y[1] for y in ys], marker="o", capsize=3,
                        linestyle="--" if equivariant else "-", label=model + (" (upright)" if equivariant else
                                                                               " (augmented)" if x == "spheres" else ""),
                        color=f"C{sorted({p['model'] for p in points}).index(model)}")
        ax.axhline(floor["paper"], color="grey", linewidth=1, label="most frequent class")
        ax.set_title(f"test spheres {ev}")
        ax.set_xlabel("training spheres" if x == "spheres" else "training augmentation (fraction of SO(3))")
        if x == "spheres":
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    _save_panels(fig, axes, metric, f"Rotated digits, {task}: equivariance vs augmentation ({steps} steps)", path)


def _save_panels(fig, axes, ylabel: str, title: str, path: Path) -> None:
    """The upright / rotated pair of panels: labelled, titled, written as PNG and closed."""
    import matplotlib.pyplot as plt

    axes[0].set_ylabel(ylabel)
    # the legend to the right of the panels, where it covers no point (the panels keep their width)
    width, height = fig.get_size_inches()
    fig.set_size_inches(width + 2.8, height)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, width / (width + 2.8), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _main_arm(tags: dict, reference: int) -> bool:
    """An arm of the default's kind at the reference size: a model trained upright or fully augmented."""
    return tags["spheres"] == reference and tags["role"] != "ladder" and tags["augment"] in (0.0, 1.0)


def _line(role: str, aug: float) -> tuple[str, str]:
    """(line style, training label) of a main arm: equivariant dashed, augmented solid, upright control dotted."""
    return ("--" if role == "equivariant" else "-" if aug == 1.0 else ":"), ("augmented" if aug == 1.0 else "upright")


def _budget_figure(points: list, task: str, path: Path, floor: dict, reference: int) -> None:
    """The learning curve across budgets: the test score of each model trained upright or fully augmented at the
    reference size against its number of steps (every budget in the folder, the budget checks among them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    mine = [p for p in points if p["task"] == task and _main_arm(p, reference)]
    lines = sorted({(p["model"], p["augment"]) for p in mine})
    for ax, ev in zip(axes, EVALUATIONS):
        for i, (model, aug) in enumerate(lines):
            curve = sorted((p for p in mine if (p["model"], p["augment"]) == (model, aug)), key=lambda p: p["steps"])
            ys = [p[f"{ev}_paper"] for p in curve]
            style, trained = _line(curve[0]["role"], aug)
            ax.errorbar([p["steps"] for p in curve], [y[0] for y in ys], yerr=[y[1] for y in ys], marker="o",
                        capsize=3, color=plt.cm.tab10(i % 10), linestyle=style, label=f"{model} ({trained})")
        ax.axhline(floor["paper"], color="grey", linewidth=1, label="most frequent class")
        ax.set_title(f"test spheres {ev}, {reference} training spheres")
        ax.set_xlabel("training steps")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    _save_panels(fig, axes, "accuracy" if task == "classification" else "mIoU over the digit classes",
                 f"Rotated digits, {task}: the score against the budget (has it converged?)", path)


def _curve_figure(rows: list, task: str, steps: int, path: Path, reference: int) -> None:
    """The learning curves at the study's budget: each model trained upright or fully augmented at the reference
    size, its validation score (upright validation spheres, ours) against the step, mean over seeds with the
    min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from heal_swin.study import curve

    key = "accuracy" if task == "classification" else "miou"
    mine = [r for r in rows if r["task"] == task and r["tags"]["steps"] == steps and _main_arm(r["tags"], reference)]
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for i, (model, aug) in enumerate(sorted({(r["model"], r["tags"]["augment"]) for r in mine})):
        curves = [curve(r["run_dir"], key) for r in mine if (r["model"], r["tags"]["augment"]) == (model, aug)]
        length = min(len(c[0]) for c in curves)
        if length == 0:
            continue
        xs, ys = curves[0][0][:length], np.array([c[1][:length] for c in curves])
        style, trained = _line(next(r["tags"]["role"] for r in mine if r["model"] == model), aug)
        ax.plot(xs, ys.mean(0), marker="o", color=plt.cm.tab10(i % 10), linestyle=style,
                label=f"{model} ({trained}, {len(curves)} seeds)")
        ax.fill_between(xs, ys.min(0), ys.max(0), color=plt.cm.tab10(i % 10), alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {'accuracy' if key == 'accuracy' else 'mIoU (ours)'}, upright spheres")
    ax.set_title(f"Rotated digits, {task}: learning curves at {steps} steps, {reference} spheres")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table_row(p: dict) -> str:
    return (f"| {p['model']} | {p['role']} | {p['augment']:g} | {p['spheres']} | {p['steps']} | {p['seeds']} | "
            f"{p['params']:,} | {_fmt(p['upright_ours'])} | {_fmt(p['rotated_ours'])} | "
            f"{_fmt(p['upright_paper'])} | {_fmt(p['rotated_paper'])} | {p['train_seconds']} |")


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _short(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def axis_tables(points: list, task: str, reference: int) -> list[str]:
    """The paper's three axes at one budget as Markdown tables, each cell upright / rotated test score (the
    paper's metric; mean ± std over seeds): the size axis (the equivariant models trained upright, the controls
    fully augmented), the augmentation axis (the controls at the reference size) and the ladder (each family's
    rungs, fully augmented, at the reference size). A point whose number of seeds differs from the most
    common one in its table says how many it has. Tables without a point are left out."""
    mine = [p for p in points if p["task"] == task and not p["converge"] and not p["recipe"]]
    digits = 2 if task == "classification" else 3

    def cell(p, seeds) -> str:
        if p is None:
            return "–"
        pairs = [p[f"{ev}_paper"] for ev in EVALUATIONS]
        text = " / ".join(f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if p["seeds"] > 1 else "") for m, sd in pairs)
        return text + (f" ({_seeds(p['seeds'])})" if p["seeds"] != seeds else "")

    def table(title: str, columns: list, rows: list) -> list[str]:
        # rows: (label, [point or None per column])
        found = [p for _, cells in rows for p in cells if p is not None]
        if not found:
            return []
        counts = [p["seeds"] for p in found]
        seeds = max(set(counts), key=lambda n: (counts.count(n), n))       # a tie: the larger count
        return [f"| {title} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|",
                *(f"| {label} | " + " | ".join(cell(p, seeds) for p in cells) + " |" for label, cells in rows
                  if any(c is not None for c in cells)), "", f"{_seeds(seeds)} a point unless noted.", ""]

    def find(**want):
        hits = [p for p in mine if all(p[k] == v for k, v in want.items())]
        return hits[0] if hits else None

    order = [*EQUIVARIANT, *(LADDER[f][MAIN_RUNG] for f in LADDER)]          # the default's models first

    def models(role: str) -> list[str]:
        found = {p["model"] for p in mine if p["role"] == role}
        return sorted(found, key=lambda m: (order.index(m) if m in order else len(order), m))

    sizes = sorted({p["spheres"] for p in mine})
    size_rows = []
    for role, aug in (("equivariant", 0.0), ("control", 1.0)):
        for model in models(role):
            cells = [find(model=model, role=role, augment=aug, spheres=n) for n in sizes]
            params = next((p["params"] for p in cells if p is not None), 0)
            size_rows.append((f"{model} ({_short(params)}), {'upright' if aug == 0 else 'full SO(3)'}", cells))
    controls = models("control")
    augments = sorted({p["augment"] for p in mine if p["role"] == "control" and p["spheres"] == reference})
    aug_rows = [(model, [find(model=model, role="control", augment=a, spheres=reference) for a in augments])
                for model in controls]
    ladder_rows = []
    for name, ladder in LADDER.items():
        cells = [find(model=ladder[r], augment=1.0, spheres=reference) for r in ladder]
        params = " / ".join(_short(p["params"]) for p in cells if p is not None)
        ladder_rows.append((f"{name} ({params})", cells))
    level = {0.0: "0", 0.25: "¼", 0.5: "½", 1.0: "full"}
    return [*table("training spheres →", [f"{n:,}" for n in sizes], size_rows),
            *table(f"augmentation ({reference:,} spheres) →", [level.get(a, f"{a:g}") for a in augments], aug_rows),
            *table(f"ladder (full SO(3), {reference:,} spheres) →", list(next(iter(LADDER.values()))), ladder_rows)]


def report(out, rows, budgets: dict | None = None, reference: int = REFERENCE) -> None:
    """paper.md / paper.jsonl, the size and augmentation figures at each task's budget (`budgets`, task -> steps;
    by default the largest of the task's points), the learning curves and the budget figure. Every finished run
    in the folder counts, not only this invocation's arms (`rows`): runs at other budgets are the budget figure's
    points, and a run with other arms keeps the report whole. Runs made with other study-wide overrides (--set,
    --full) are left out, as the runner leaves them out of `rows`: they compute something else."""
    from heal_swin.engine import atomic_write_text
    from heal_swin.study import read_rows

    out = Path(out)
    shared = rows[0].get("study_overrides")
    rows = [r for r in read_rows(out) if r.get("study_overrides") == shared]
    every = summarise(rows)
    atomic_write_text(out / "paper.jsonl", "".join(json.dumps(p) + "\n" for p in every))
    # the figures and the main tables show today's recipes; runs on a former one are listed apart, never averaged
    points, former = [p for p in every if not p["recipe"]], [p for p in every if p["recipe"]]
    rows = [r for r in rows if not former_recipe(r)]
    header = ("| model | role | augment | spheres | steps | seeds | params | upright (ours) | rotated (ours) | "
              "upright (paper) | rotated (paper) | train s |")
    lines = ["# Equivariance vs augmentation on the rotated digits", ""]
    for task in sorted({p["task"] for p in points}):
        floor = chance(rows, task)
        mine = [p for p in points if p["task"] == task]
        planned = [p["steps"] for p in mine if not p["converge"]]
        budget = (budgets or {}).get(task) or (max(planned) if planned else None)
        at_budget = [p for p in mine if p["steps"] == budget]
        _figure(at_budget, task, "spheres", out / f"size_{task}.png", floor, budget, reference)
        _figure(at_budget, task, "augment", out / f"augment_{task}.png", floor, budget, reference)
        _budget_figure(mine, task, out / f"budget_{task}.png", floor, reference)
        _curve_figure(rows, task, budget, out / f"curves_{task}.png", reference)
        name = "accuracy" if task == "classification" else "mIoU"
        lines += [f"## {task}", "", f"Most frequent class everywhere: ours {floor['ours']:.3f}, paper's metric "
                  f"{floor['paper']:.3f}. Ours: {name}" + (" over the classes present" if name == "mIoU" else "") +
                  (", paper: mIoU over the ten digit classes (background left out)." if name == "mIoU" else "."),
                  "", header, "|---" * 12 + "|"]
        lines += [_table_row(p) for p in mine]
        lines += ["", f"### The paper's axes at {budget} steps (upright / rotated test, the paper's metric)", "",
                  *axis_tables(at_budget, task, reference)]
    if former:
        lines += ["## Runs on a former recipe", "", "Not in the tables above nor in the figures: trained before their "
                  "family's recipe changed (how it differed: the last column).", "",
                  header.replace("| model |", "| task | model |") + " recipe |", "|---" * 14 + "|"]
        lines += [f"| {p['task']} {_table_row(p)} {p['recipe']} |" for p in former]
        lines.append("")
    atomic_write_text(out / "paper.md", "\n".join(lines) + "\n")
