"""The automotive form of the question (issue #28, item 5): what each backbone loses when the camera is
mounted differently from training. Every backbone, at its demo size on the synthetic fisheye data, trained
with and without rotation augmentation (`augment.rotate_deg`: a random roll about the optical axis, inside
the projection for the sphere models, the fisheye frame re-rendered for the flat ones), then scored on the
test split with the camera turned on its mount (`data.mount_deg`: every test frame rendered as the turned
camera would see it, image bilinear, labels nearest; pixels with no content are not scored): rolls about
the optical axis of 0-180° and small pitches and yaws, in the fisheye image, overall and per ring of
incidence angle (the engine's evaluation: every model on the same fisheye pixels).

    heal-swin-study bench/pose/study.py --out runs/pose --threads 1          # the default: ≈ 40 min, 1 core
    heal-swin-study bench/pose/study.py --out runs/pose --workers 2          # the same on 2 cores: ≈ 20-25 min
    heal-swin-study bench/pose/study.py --models gauge_cnn_tiny chart_cnn_tiny --seeds 2 --out runs/pose_cnn
    heal-swin-study bench/pose/study.py --full --device cuda --out runs/pose_full          # a GPU run

Default: heal_swin_tiny, swin_unet_flat_tiny, gauge_cnn_tiny, s2cnn_tiny, chart_cnn_tiny and planar_cnn_1x
× augment.rotate_deg 0 and 180 × 1 seed (--seeds), 200 steps (--steps) at batch 4 with 2 validation
evaluations, 20 synthetic frames at 640 × 483 (4 cameras each; split 60/20/20 by frame: 48 training images,
16 test images). Sphere models at the demo's nside 32 on faces 0-7; flat ones on a 64 × 96 image (matched
pixel counts, as in bench/learning/study.py). Each run is then evaluated 15 times on the test split (rolls
0, 30, ..., 180; pitch and yaw ±2, ±5; --rolls, --tilts). Measured on the 2-core CPU machine, 1 thread,
beside other jobs (with roll augmentation; without it the flat models' steps are ≈ 0.1 s faster): seconds per
step at batch 4: chart_cnn_tiny 0.32, planar_cnn_1x 0.61, gauge_cnn_tiny 0.68, heal_swin_tiny 0.69,
s2cnn_tiny 0.8-1.1, swin_unet_flat_tiny 1.0; an evaluation ≈ 0.3 s per test image. So a run takes 2.5-5 min
(200 steps, 2 validations, 15 test evaluations of 16 images) and the 12 runs ≈ 40 min on one core. These are
wall times beside other jobs (the timing runs' CPU time was about a third of their wall time): on a free
core expect less, and --steps 400 may still fit in 40 minutes.
--full (a GPU, --device cuda implied): nside 256, a 512 × 1024 flat image, 200 frames of 1280 × 966, 20,000
steps, 3 seeds: 36 runs, 8 loader processes (in the training process, loading a batch of these frames would
take longer than the GPU's step); not timed here (no GPU was lent): bench/full_estimate.py estimates
9-18 h of training in all on one H100 (bench/gpu/ESTIMATE.md), and the GPU check's research-run part
(bench/gpu_check.py) runs a few steps of each of its arm groups and measures them.

Besides the common report (results.md, curves.png, results.jsonl), the study writes pose.jsonl (a row per
run and camera pose: mIoU in the fisheye image, overall and per ring), the section "Camera pose" of
results.md (mIoU against roll, pitch and yaw, and per ring, mean ± std over seeds, per backbone and
augmentation), and miou_vs_roll.png, miou_vs_tilt.png and miou_per_ring.png (solid: trained with
rotation augmentation, dashed: without).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from heal_swin.study import Arm, Study, StudyError, parse_model_spec, synthetic_tree

MODELS = ("heal_swin_tiny", "swin_unet_flat_tiny", "gauge_cnn_tiny", "s2cnn_tiny", "chart_cnn_tiny",
          "planar_cnn_1x")
ROLLS = (0, 30, 60, 90, 120, 150, 180)
TILTS = (2, 5)                  # pitch and yaw of the mount, each at ± these angles
AUGMENT = (0, 180)              # augment.rotate_deg: none, and a roll of any angle
FLAT = (64, 96)
FULL = dict(nside=256, flat_size=(512, 1024), size=(1280, 966), frames=200, steps=20000, seeds=3)


def add_arguments(group) -> None:
    group.add_argument("--rolls", type=float, nargs="+", default=None,
                       help=f"test rolls about the optical axis, degrees in [0, 180] (default {list(ROLLS)})")
    group.add_argument("--tilts", type=float, nargs="*", default=None,
                       help=f"test pitches and yaws of the mount, each at ±angle, degrees in (0, 90] (default "
                            f"{list(TILTS)}; none: rolls only)")
    group.add_argument("--augment", type=float, nargs="+", default=None,
                       help=f"training augment.rotate_deg values in [0, 180] (default {list(AUGMENT)})")
    group.add_argument("--evals", type=int, default=2, help="validation evaluations during training")
    group.add_argument("--frames", type=int, default=None, help="synthetic frames (default 20; --full: 200)")
    group.add_argument("--data", default=None, help="the synthetic tree (default OUT/data; generated when empty)")


def poses(rolls, tilts) -> dict:
    """{evaluation name: (kind, angle, [roll, pitch, yaw])} of every test camera pose."""
    out = {f"roll{a:g}": ("roll", a, [a, 0, 0]) for a in rolls}
    for t in tilts:
        for a in (-t, t):
            out[f"pitch{a:+g}"] = ("pitch", a, [0, a, 0])
            out[f"yaw{a:+g}"] = ("yaw", a, [0, 0, a])
    return out


def _grid(model: str, full: bool) -> list:
    """Flat models on a 64 × 96 image (matched pixel counts) unless @HxW says otherwise; sphere models at
    the config's nside (--full: 256)."""
    from heal_swin.models import model_info

    spec = parse_model_spec(model)
    if model_info(spec.name).domain == "flat":
        if spec.flat_size is not None:
            return []
        h, w = FULL["flat_size"] if full else FLAT
        return [f"data.flat_size=[{h},{w}]"]
    return [f"data.nside={FULL['nside']}"] if full else []


def _check(options) -> tuple:
    rolls = ROLLS if options.rolls is None else tuple(options.rolls)
    tilts = TILTS if options.tilts is None else tuple(options.tilts)
    augments = AUGMENT if options.augment is None else tuple(options.augment)
    for flag, values, ok, rule in (("--rolls", rolls, lambda a: 0 <= a <= 180, "degrees in [0, 180]"),
                                   ("--tilts", tilts, lambda a: 0 < a <= 90, "degrees in (0, 90]"),
                                   ("--augment", augments, lambda a: 0 <= a <= 180, "degrees in [0, 180]")):
        if len(set(values)) != len(values) or not all(ok(a) for a in values):
            raise StudyError(f"{flag} {list(values)}: values must be distinct {rule}")
    if not rolls:
        raise StudyError("--rolls: name at least one roll (0 is the camera as mounted in training)")
    if options.evals < 1:
        raise StudyError(f"--evals {options.evals} must be >= 1")
    if options.frames is not None and options.frames < 5:
        raise StudyError(f"--frames {options.frames} must be >= 5 (a 60/20/20 split needs a frame in each part)")
    return rolls, tilts, augments


def make(options) -> Study:
    rolls, tilts, augments = _check(options)
    full = options.full
    steps = options.steps or (FULL["steps"] if full else 200)
    frames = options.frames or (FULL["frames"] if full else 20)
    evaluations = {name: ["eval.split=test", f"data.mount_deg=[{m[0]:g},{m[1]:g},{m[2]:g}]", "eval.figures=0"]
                   for name, (_, _, m) in poses(rolls, tilts).items()}
    arms = [Arm(model, "segmentation", [*_grid(model, full), f"augment.rotate_deg={aug:g}"], seed, label=model,
                tags={"augment": aug}, evaluations=evaluations)
            for model in options.models or MODELS for aug in augments
            for seed in range(options.seeds or (FULL["seeds"] if full else 1))]
    prepare = synthetic_tree(frames, size=FULL["size"] if full else (640, 483), root=options.data,
                             overrides=options.set)

    def report(out, rows):
        write_pose_report(Path(out), rows, rolls, tilts)

    return Study("pose", "configs/demo.yaml", arms, prepare=prepare, report=report, description=__doc__,
                 overrides=["data.generate=false", f"train.max_steps={steps}",
                            f"train.eval_every={max(1, steps // options.evals)}", "data.split_fractions=[0.6,0.2,0.2]",
                            *(["run.device=cuda", "data.num_workers=8"] if full else [])])


# --------------------------------------------------------------------------- the study's own report


def pose_rows(rows: list, rolls, tilts) -> list[dict]:
    """A row per run and test camera pose: fisheye mIoU overall and per ring of incidence angle."""
    out = []
    for r in rows:
        for name, (kind, angle, mount) in poses(rolls, tilts).items():
            result = r.get("evaluations", {}).get(name)
            if result is None:
                continue
            rings = {k: v.get("miou") for k, v in result.get("fisheye_rings", {}).items()}
            out.append(dict(model=r["group"], augment=r["tags"].get("augment"), seed=r["seed"], pose=kind,
                            angle_deg=angle, mount_deg=mount, miou=result.get("fisheye", {}).get("miou"),
                            rings=rings, run_dir=r["run_dir"]))
    return out


def _stats(prs, model, aug, kind, angle, ring=None) -> tuple[float, float, int]:
    vals = [p["miou"] if ring is None else p["rings"].get(ring) for p in prs
            if p["model"] == model and p["augment"] == aug and p["pose"] == kind and p["angle_deg"] == angle]
    vals = np.array([v for v in vals if v is not None], dtype=float)
    return (float(vals.mean()), float(vals.std()), len(vals)) if vals.size else (float("nan"), 0.0, 0)


def _cell(stat) -> str:
    mean, std, n = stat
    return "–" if n == 0 else f"{mean:.3f} ± {std:.3f}"


def _aug_name(aug) -> str:
    return f"roll ±{aug:g}°" if aug else "none"


def _markdown(prs, rolls, tilts) -> list[str]:
    from heal_swin.cameras import INCIDENCE_RINGS, ring_label

    groups = sorted({(p["model"], p["augment"]) for p in prs})
    seeds = {g: len({p["seed"] for p in prs if (p["model"], p["augment"]) == g}) for g in groups}
    lines = ["", "## Camera pose", "",
             "mIoU on the test split in the fisheye image (the pixels the sphere models' faces cover), the camera "
             "turned on its mount (`data.mount_deg`: each test frame rendered as the turned camera sees it; pixels "
             "without content are not scored), mean ± std over seeds. Training augmentation: `augment.rotate_deg`.",
             "", "Roll about the optical axis:", "",
             "| model | augmentation | seeds | " + " | ".join(f"{a:g}°" for a in rolls) + " | kept at worst roll |",
             "|---" * (4 + len(rolls)) + "|"]
    for model, aug in groups:
        stats = [_stats(prs, model, aug, "roll", a) for a in rolls]
        base, worst = stats[0][0], min((s[0] for s in stats if s[2]), default=float("nan"))
        kept = f"{worst / base:.0%}" if rolls[0] == 0 and base > 0 else "–"
        lines.append(f"| {model} | {_aug_name(aug)} | {seeds[model, aug]} | " + " | ".join(map(_cell, stats))
                     + f" | {kept} |")
    if tilts:
        cols = [(k, s * t) for k in ("pitch", "yaw") for t in tilts for s in (-1, 1)]
        cols.sort(key=lambda c: (c[0] != "pitch", c[1]))
        lines += ["", "Pitch (about the camera's x axis) and yaw (about its y axis) of the mount:", "",
                  "| model | augmentation | " + " | ".join(f"{k} {a:+g}°" for k, a in cols) + " |",
                  "|---" * (2 + len(cols)) + "|"]
        for model, aug in groups:
            lines.append(f"| {model} | {_aug_name(aug)} | "
                         + " | ".join(_cell(_stats(prs, model, aug, k, a)) for k, a in cols) + " |")
    turned = [a for a in rolls if a != 0]
    rings = list(INCIDENCE_RINGS)
    lines += ["", "Per ring of incidence angle θ: mIoU at roll 0° / mean over the rolls "
              f"{', '.join(f'{a:g}' for a in turned) or '(none)'}°:", "",
              "| model | augmentation | " + " | ".join(f"θ {ring_label(k)}" for k in rings) + " |",
              "|---" * (2 + len(rings)) + "|"]
    for model, aug in groups:
        cells = []
        for k in rings:
            up = _stats(prs, model, aug, "roll", 0, k) if 0 in rolls else (float("nan"), 0, 0)
            rot = [_stats(prs, model, aug, "roll", a, k)[0] for a in turned]
            rot = [v for v in rot if np.isfinite(v)]
            cells.append(f"{up[0]:.3f} / {np.mean(rot):.3f}" if up[2] and rot else
                         f"{up[0]:.3f} / –" if up[2] else "–")
        lines.append(f"| {model} | {_aug_name(aug)} | " + " | ".join(cells) + " |")
    return lines


def _style(models):
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def _lines(ax, prs, kind, angles, color, ring=None):
    for (model, aug) in sorted({(p["model"], p["augment"]) for p in prs}):
        stats = [_stats(prs, model, aug, kind, a, ring) for a in angles]
        xs = [a for a, s in zip(angles, stats) if s[2]]
        if not xs:
            continue
        ax.errorbar(xs, [s[0] for s in stats if s[2]], yerr=[s[1] for s in stats if s[2]], marker="o",
                    markersize=3, capsize=2, color=color[model], linestyle="-" if aug else "--",
                    label=f"{model}, {'aug ' + _aug_name(aug) if aug else 'no aug'}")


def _plots(out: Path, prs, rolls, tilts) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from heal_swin.cameras import INCIDENCE_RINGS, ring_label

    color = _style(sorted({p["model"] for p in prs}))
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    _lines(ax, prs, "roll", list(rolls), color)
    ax.set_xlabel("roll of the camera about its optical axis at test (°)")
    ax.set_ylabel("fisheye mIoU, test split")
    ax.set_title("Camera roll: solid = trained with roll augmentation, dashed = without", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "miou_vs_roll.png", dpi=110)
    plt.close(fig)

    if tilts:
        angles = sorted({s * t for t in tilts for s in (-1, 1)} | ({0} if 0 in rolls else set()))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for ax, kind in zip(axes, ("pitch", "yaw")):
            # the untilted camera is roll 0: the same evaluation
            pr = prs + [dict(p, pose=kind) for p in prs if p["pose"] == "roll" and p["angle_deg"] == 0]
            _lines(ax, pr, kind, angles, color)
            ax.set_xlabel(f"{kind} of the camera mount at test (°)")
            ax.set_title(kind)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("fisheye mIoU, test split")
        axes[1].legend(fontsize=6, ncol=2)
        fig.suptitle("Small changes of the mount: solid = trained with roll augmentation, dashed = without",
                     fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "miou_vs_tilt.png", dpi=110)
        plt.close(fig)

    rings = list(INCIDENCE_RINGS)
    fig, axes = plt.subplots(1, len(rings), figsize=(4.2 * len(rings), 4), sharey=True)
    for ax, ring in zip(axes, rings):
        _lines(ax, prs, "roll", list(rolls), color, ring)
        ax.set_title(f"θ {ring_label(ring)}")
        ax.set_xlabel("roll at test (°)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fisheye mIoU in the ring, test split")
    axes[-1].legend(fontsize=6)
    fig.suptitle("Per ring of incidence angle: solid = trained with roll augmentation, dashed = without",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "miou_per_ring.png", dpi=110)
    plt.close(fig)


def write_pose_report(out: Path, rows: list, rolls=ROLLS, tilts=TILTS) -> list[dict]:
    """pose.jsonl, the section "Camera pose" of results.md and the three PNGs; returns the pose rows."""
    from heal_swin.engine import atomic_write_text

    prs = pose_rows(rows, rolls, tilts)
    atomic_write_text(out / "pose.jsonl", "".join(json.dumps(p) + "\n" for p in prs))
    if not prs:
        return prs
    text = (out / "results.md").read_text() if (out / "results.md").is_file() else ""
    atomic_write_text(out / "results.md", text + "\n".join(_markdown(prs, rolls, tilts)) + "\n")
    _plots(out, prs, rolls, tilts)
    return prs
