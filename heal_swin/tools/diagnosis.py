"""Diagnosis of the projection pipelines and of trained segmentation runs (issue #17): the oracle ceiling
of each pipeline, and per-pixel error maps of a sphere and a flat run.

    python -m heal_swin.tools.diagnosis oracle --root runs/diag/data --frames 6 --out runs/diag/oracle.json
    python -m heal_swin.tools.diagnosis oracle --nsides 32 64 --flat 64x96 96x128      # other settings
    python -m heal_swin.tools.diagnosis errors --sphere runs/diag/seg-heal --flat runs/diag/seg-flat \\
        --out runs/diag/error_maps.png

    result = oracle(root, frames=6, nsides=[32], flats=[(64, 96)]); print(oracle_markdown(result))
    summary = error_maps(sphere_run, flat_run, "error_maps.png")          # also writes error_maps.md

`oracle`: how much of the ground truth survives the trip to a model's grid and back, with no model in
between. Sphere: the labels projected to HEALPix faces 0-7 (nearest, `FisheyeToHealpix`) and back-projected
(`HealpixToFisheye.backproject`); sphere pixels whose centre falls just outside the image take the label of
the nearest image pixel (the best a model could predict there; their fisheye pixels at the image border are
scored). Flat: the labels resized nearest down to H×W with OpenCV, as `FlatDataset` does, and up again with
torch's nearest interpolation, as `evaluate` upsamples flat predictions. Both are scored by the engine's
`FisheyeScorer` against the original labels at full resolution on the fisheye pixels that faces 0-7 cover
at nside 32 (the pixels the learning benchmark scores; the faces' outline does not depend on nside), as
mIoU over the classes present, per class and per ring of incidence angle (`cameras.INCIDENCE_RINGS`).
Resolution: the solid angle of a fisheye pixel comes from the camera model (`cameras.pixel_solid_angle`);
a HEALPix pixel covers 4π / (12·nside²) sr, a flat pixel the (W/w)·(H/h) fisheye pixels it is resized from.
The table gives the model's pixels per full-resolution fisheye pixel (median over the front camera's
covered pixels) in the image centre (θ < 30°) and at the periphery (θ > 90°), and their angular size
(√solid angle, degrees). Data: a synthetic tree (seed 0, 640×483 by default; generated into --root when
missing); the first --frames frames are scored (frame i depends only on (seed, i)).

`error_maps`: error = prediction != label, on the fisheye pixels the sphere model's faces cover (the pixels
the evaluation scores), at full resolution after the evaluation's own back-projection (sphere) or nearest
upsampling (flat), collected from `evaluate` itself (`collect_fisheye`); averaged over the validation
images of every camera (they share the image size and nearly the intrinsics; the first camera's incidence
angles, faces and sphere pixels stand for all, a few pixels off for the others' principal points). The PNG:

  row 1: fisheye error rate of the sphere run | of the flat run | their difference (sphere − flat), with
         the faces' outlines and circles at 30°, 60°, 90° of incidence;
  row 2: on the sphere, seen from its centre around the optical axis out to 110° (azimuthal equidistant,
         so radius = incidence angle): the sphere run's error on its own pixels (against the projected
         labels) | the flat run's fisheye errors pooled into the same nside pixels | error rate against
         incidence angle for both, in 5° bins.

Also prints (and writes beside the PNG as .md) error rates per ring of incidence angle, and at face seams
(fisheye pixels whose sphere pixel lies on the edge of its face) against face interiors, per ring.
Training the two runs: `heal-swin-study bench/learning/error_maps.py` (the learning study's settings).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

PROG = "python -m heal_swin.tools.diagnosis"
SCORE_NSIDE = 32  # the learning benchmark's nside: its faces' covered mask selects the scored pixels
CENTRE_DEG, PERIPHERY_DEG = 30.0, 90.0
BIN_DEG = 5.0
VIEW_MAX_DEG = 110.0  # faces 0-7 reach 104.6° in the WoodScape FV calibration

__all__ = ["DiagnosisError", "ErrorMaps", "collect_errors", "error_maps", "error_tables", "flat_labels",
           "main", "oracle", "oracle_markdown", "sphere_labels"]


class DiagnosisError(ValueError):
    """A diagnosis that cannot run as asked: the message names the flag, the value and the rule."""


def _theta_label(name: str | None) -> str:
    """A ring of `INCIDENCE_RINGS` as the tables write it ('θ 30–60°', 'θ > 90°'); None: 'all'."""
    from ..cameras import ring_label

    return "all" if name is None else f"θ {ring_label(name)}"


# --------------------------------------------------------------------------- oracle ceiling


def sphere_labels(labels: np.ndarray, camera, nside: int, faces, ignore_index: int = 255) -> np.ndarray:
    """labels (H, W) -> the back-projected ground truth (H, W) int64 at `nside` over `faces`: nearest
    projection, sphere pixels just outside the image filled from the nearest image pixel, nearest
    back-projection (ignore_index where the faces do not cover the image)."""
    from ..projection import FisheyeToHealpix, HealpixToFisheye

    proj = FisheyeToHealpix(camera, nside, faces, ignore_index=ignore_index)
    y = proj.project_labels(labels)
    uv = proj.sample_positions
    ok = ~proj.valid_mask & np.all(np.isfinite(uv), axis=1)
    h, w = labels.shape
    # The pixel centre's ray lands beyond the image's edge: the image pixel nearest to where it lands is
    # the label a perfect model would give it.
    x = np.clip(np.floor(uv[ok, 0] + 0.5), 0, w - 1).astype(np.int64)
    yy = np.clip(np.floor(uv[ok, 1] + 0.5), 0, h - 1).astype(np.int64)
    y[ok] = labels[yy, x]
    return np.asarray(HealpixToFisheye(camera, nside, faces, ignore_index=ignore_index).backproject(y))


def flat_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """labels (H, W) -> (H, W) int64: resized nearest to size = (h, w) as `FlatDataset` does (OpenCV), then
    back to (H, W) as `evaluate` upsamples a flat prediction (torch, nearest)."""
    import cv2
    import torch

    h, w = size
    small = cv2.resize(labels.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
    up = torch.nn.functional.interpolate(torch.from_numpy(small.astype(np.float32))[None, None],
                                         size=labels.shape, mode="nearest")[0, 0]
    return up.long().numpy()


def oracle(root, frames: int, nsides, flats, faces=tuple(range(8))) -> dict:
    """Scores every setting (sphere at each of `nsides`, flat at each (h, w) of `flats`) over the first
    `frames` frames of the tree at `root`; returns {"settings": {name: {"kind", "model_pixels", "miou",
    "iou", "rings", "density"}}, "images", "scored_pixels", ...}."""
    from ..data import WoodScapeTree
    from ..engine import FisheyeScorer

    faces = tuple(faces)
    settings = {f"sphere nside {n}": ("sphere", n) for n in nsides}
    settings |= {f"flat {h}×{w}": ("flat", (h, w)) for h, w in flats}
    if not settings:
        raise DiagnosisError("oracle: give at least one nside or flat size to score")
    tree = WoodScapeTree(root)
    samples = [s for s in tree.samples if int(s.frame) < frames]
    if not samples:
        raise DiagnosisError(f"--root {root}: no samples with frame < {frames} (--frames)")
    coverage = (SCORE_NSIDE, faces, "camera")
    scorers = {s: FisheyeScorer("segmentation", coverage, tree.class_names, 255) for s in settings}
    scored = 0
    for sample in samples:
        item = tree.load(sample, labels=True)
        cam, truth = item["camera"], item["labels"].astype(np.int64)
        for name, (kind, arg) in settings.items():
            pred = sphere_labels(truth, cam, arg, faces) if kind == "sphere" else flat_labels(truth, arg)
            mask = scorers[name].update(sample.camera, cam, pred, truth)  # the same covered pixels for all
        scored += int(mask.sum())
    density = _density(tree, samples, nsides, flats, faces, next(iter(scorers.values())))
    out = {"root": str(root), "frames": frames, "images": len(samples), "scored_pixels": scored,
           "image_size": [int(cam.height), int(cam.width)], "fisheye_pixel_deg": density.pop("fisheye"),
           "settings": {}}
    for name, (kind, arg) in settings.items():
        s = scorers[name].summary()
        model_pixels = len(faces) * arg**2 if kind == "sphere" else arg[0] * arg[1]
        out["settings"][name] = {"kind": kind, "model_pixels": model_pixels, "miou": s["fisheye"]["miou"],
                                 "iou": s["fisheye"]["iou"],
                                 "rings": {r: m["miou"] for r, m in s["fisheye_rings"].items()},
                                 "density": density[name]}
    return out


def _density(tree, samples, nsides, flats, faces, scorer) -> dict:
    """Per setting: model pixels per fisheye pixel and their angular size (degrees), median over the front
    camera's covered pixels (those `scorer` scores) in the centre and at the periphery; also how many sphere
    pixels see the image."""
    from ..cameras import incidence_angle, pixel_solid_angle
    from ..projection import FisheyeToHealpix

    front = next((s for s in samples if s.camera == "FV"), samples[0])
    cam = tree.camera(front)
    omega = pixel_solid_angle(cam)
    theta = incidence_angle(cam)
    covered = scorer.geometry(cam)[1].cpu().numpy()
    regions = {"centre": covered & (theta < CENTRE_DEG), "periphery": covered & (theta > PERIPHERY_DEG)}
    fish = {r: float(np.nanmedian(omega[m])) for r, m in regions.items()}
    out = {}
    for n in nsides:
        pix = 4 * math.pi / (12 * n * n)
        seeing = int(FisheyeToHealpix(cam, n, faces).valid_mask.sum())
        out[f"sphere nside {n}"] = {"seeing_image": seeing} | {
            f"per_fisheye_px_{r}": fish[r] / pix for r in regions} | {
            f"size_deg_{r}": math.degrees(math.sqrt(pix)) for r in regions}
    h0, w0 = omega.shape
    for h, w in flats:
        scale = (h0 / h) * (w0 / w)  # fisheye pixels per flat pixel
        out[f"flat {h}×{w}"] = {"seeing_image": h * w} | {
            f"per_fisheye_px_{r}": 1.0 / scale for r in regions} | {
            f"size_deg_{r}": math.degrees(math.sqrt(fish[r] * scale)) for r in regions}
    out["fisheye"] = {"size_deg_centre": math.degrees(math.sqrt(fish["centre"])),
                      "size_deg_periphery": math.degrees(math.sqrt(fish["periphery"]))}
    return out


def oracle_markdown(result: dict) -> str:
    """The oracle's tables: per setting, per ring of incidence angle, per class."""
    from ..cameras import INCIDENCE_RINGS

    st = result["settings"]
    h0, w0 = result["image_size"]
    lines = [f"{result['images']} images ({result['frames']} frames × 4 cameras, {w0}×{h0}), "
             f"{result['scored_pixels']:,} scored fisheye pixels (faces 0–7 cover them).", "",
             "| setting | model pixels | seeing the FV image | mIoU "
             "| model px per fisheye px, θ < 30° | θ > 90° "
             "| pixel size θ < 30° | θ > 90° |", "|---|---|---|---|---|---|---|---|"]
    for name, s in st.items():
        d = s["density"]
        lines.append(f"| {name} | {s['model_pixels']:,} | {d['seeing_image']:,} | {s['miou']:.3f} | "
                     f"{d['per_fisheye_px_centre']:.3f} | {d['per_fisheye_px_periphery']:.3f} | "
                     f"{d['size_deg_centre']:.2f}° | {d['size_deg_periphery']:.2f}° |")
    ff = result["fisheye_pixel_deg"]
    lines += ["", f"A full-resolution fisheye pixel is {ff['size_deg_centre']:.3f}° wide in the centre and "
              f"{ff['size_deg_periphery']:.3f}° at θ > 90° (medians over the FV image).", "",
              "Oracle mIoU per ring of incidence angle:", "",
              "| setting | " + " | ".join(_theta_label(r) for r in INCIDENCE_RINGS) + " |",
              "|---" * (len(INCIDENCE_RINGS) + 1) + "|"]
    for name, s in st.items():
        lines.append(f"| {name} | " + " | ".join(f"{s['rings'][r]:.3f}" for r in INCIDENCE_RINGS) + " |")
    classes = list(next(iter(st.values()))["iou"])
    lines += ["", "Oracle IoU per class (– : the class is absent from the scored pixels):", "",
              "| class | " + " | ".join(st) + " |", "|---" * (len(st) + 1) + "|"]
    for c in classes:
        vals = [st[name]["iou"][c] for name in st]
        lines.append(f"| {c} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- error maps


class ErrorMaps:
    """Accumulated errors of one run: fisheye `err`/`count` (H, W) int64 (allocated by the first image),
    sphere `sphere_err`/`sphere_count` (N,) int64 on the coverage grid (sphere runs only)."""

    def __init__(self, npix: int):
        self.err = self.count = None
        self.sphere_err = np.zeros(npix, dtype=np.int64)
        self.sphere_count = np.zeros(npix, dtype=np.int64)

    def add_fisheye(self, pred: np.ndarray, truth: np.ndarray, scored: np.ndarray) -> None:
        if self.err is None:
            self.err = np.zeros(truth.shape, dtype=np.int64)
            self.count = np.zeros(truth.shape, dtype=np.int64)
        self.err += scored & (pred != truth)
        self.count += scored

    def rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.err / self.count, np.nan)

    def sphere_rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.sphere_count > 0, self.sphere_err / self.sphere_count, np.nan)

    def mean(self) -> float:
        return float(self.err.sum() / max(1, self.count.sum()))


def collect_errors(run_dir, coverage: tuple) -> tuple[ErrorMaps, object]:
    """Evaluates `run_dir`'s best weights on its validation split (`engine.evaluate`) and accumulates its
    errors on the fisheye pixels that `coverage` = (nside, faces, orientation) covers, and on its own sphere
    pixels (sphere runs). Returns the maps and the camera of the first validation image."""
    import torch

    from ..data import FlatDataset
    from ..engine import build_datasets, evaluate, load_model, load_run_config

    cfg = load_run_config(run_dir, ["eval.split=val"])
    ds = build_datasets(cfg, ("val",))["val"]
    if len(ds) == 0:
        raise DiagnosisError(f"{run_dir}: its validation split holds no images (data.split_fractions)")
    model = load_model(run_dir)
    flat = isinstance(ds, FlatDataset)
    ignore = cfg.data.ignore_index
    maps = ErrorMaps(len(coverage[1]) * coverage[0] ** 2)
    first: list = []

    def on_sphere(indices, batch, pred):
        if flat:
            return
        pred, labels = pred.cpu().numpy(), batch["labels"].numpy()
        ok = batch["valid"].numpy() & (labels != ignore)
        maps.sphere_err += (ok & (pred != labels)).sum(0)
        maps.sphere_count += ok.sum(0)

    def in_fisheye(index, sample, cam, pred, truth, scored):
        truth = torch.as_tensor(truth)
        keep = (torch.as_tensor(scored).cpu() & (truth != ignore)).numpy()
        maps.add_fisheye(torch.as_tensor(pred).cpu().numpy(), truth.numpy(), keep)
        if not first or index < first[0]:
            first[:] = [index, cam]

    evaluate(model, ds, task=cfg.task, batch_size=cfg.data.batch_size, coverage=coverage, collect=on_sphere,
             collect_fisheye=in_fisheye)
    return maps, first[1]


def containing_pixel(back) -> np.ndarray:
    """int64 (H, W): the index of the sphere pixel that contains each fisheye pixel's ray (the evaluation's
    back-projection), −1 outside the faces."""
    return np.asarray(back.backproject(np.arange(back.npix, dtype=np.int64), fill=-1)).astype(np.int64)


def pooled_on_sphere(maps: ErrorMaps, index: np.ndarray, npix: int) -> np.ndarray:
    """The fisheye error counts pooled into the sphere pixels that contain them (`index`, from
    `containing_pixel`; the first camera's stands for all): rate (npix,)."""
    index = index.reshape(-1)
    ok = index >= 0
    err = np.bincount(index[ok], maps.err.reshape(-1)[ok], minlength=npix)
    count = np.bincount(index[ok], maps.count.reshape(-1)[ok], minlength=npix)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, err / count, np.nan)


def seam_mask(nside: int, faces) -> np.ndarray:
    """bool (N,): sphere pixels on the edge of their base pixel (face), NESTED over `faces`."""
    from .. import grid

    x, y, _ = grid.nest2xyf(nside, np.arange(nside * nside))
    edge = (x == 0) | (y == 0) | (x == nside - 1) | (y == nside - 1)
    return np.tile(edge, len(faces))


def error_tables(maps: dict, theta: np.ndarray, seam_fisheye: np.ndarray) -> str:
    """Markdown: error rate per ring, and at seams against interiors, for each run in `maps` (name ->
    ErrorMaps); `theta` and `seam_fisheye` (H, W) of the reference camera."""
    from ..cameras import INCIDENCE_RINGS

    names = list(maps)
    rings = [(r, *INCIDENCE_RINGS[r]) for r in INCIDENCE_RINGS] + [(None, 0.0, 180.0)]
    lines = ["Error rate (prediction != label) per ring of incidence angle, validation images:", "",
             "| ring | scored pixels | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for ring, lo, hi in rings:
        sel = (theta >= lo) & (theta < hi)
        scored = int(next(iter(maps.values())).count[sel].sum())
        cells = [_rate(m, sel) for m in maps.values()]
        lines.append(f"| {_theta_label(ring)} | {scored:,} | " + " | ".join(cells) + " |")
    lines += ["", "At face seams (fisheye pixels in a sphere pixel on its face's edge) / in face interiors:",
              "", "| ring | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for ring, lo, hi in rings:
        sel = (theta >= lo) & (theta < hi)
        cells = [f"{_rate(m, sel & seam_fisheye)} / {_rate(m, sel & ~seam_fisheye)}" for m in maps.values()]
        lines.append(f"| {_theta_label(ring)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _rate(m: ErrorMaps, sel) -> str:
    c = m.count[sel].sum()
    return f"{m.err[sel].sum() / c:.3f}" if c else "–"


def _equidistant(nside: int, faces, size: int = 420):
    """An azimuthal equidistant view around the optical axis (camera frame: θ = 0 at the centre, image right
    = raster right, image down = raster down), radius = θ up to VIEW_MAX_DEG: (local (size, size) indices
    into a map over `faces`, −1 elsewhere; face (size, size), −1 off the disc; theta (size, size) degrees)."""
    from .. import grid

    c = (np.arange(size) + 0.5) / size * 2 - 1
    a, b = np.meshgrid(c, c)
    r = np.hypot(a, b)
    inside = r <= 1
    theta = np.radians(VIEW_MAX_DEG) * r
    phi = np.mod(np.arctan2(b, a), 2 * np.pi)  # φ = 90° towards image down, as in the camera frame
    gpix = grid.ang2pix(nside, theta[inside], phi[inside])
    local = np.full(r.shape, -1, dtype=np.int64)
    face = np.full(r.shape, -1, dtype=np.int64)
    local[inside] = grid.global_to_local(nside, faces, gpix)
    face[inside] = gpix // (nside * nside)
    return local, face, np.where(inside, np.degrees(theta), np.nan)


def error_figure(sphere: ErrorMaps, flat: ErrorMaps, flat_on_sphere, theta, face_fisheye, nside, faces, names,
                 path):
    """Draws the PNG described in the module docstring to `path`; returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ..projection import views

    fig = Figure(figsize=(16, 10), dpi=100, layout="constrained")
    axes = fig.subplots(2, 3)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=(0.85, 0.85, 0.85))
    diff_map = matplotlib.colormaps["RdBu_r"].with_extremes(bad=(0.85, 0.85, 0.85))
    rs, rf = sphere.rate(), flat.rate()
    faces_line = views.face_overlay(face_fisheye, views.FACE_COLORS, width=2)
    faces_line[..., 3] *= 0.6
    panels = [(rs, cmap, (0, 1), f"{names[0]}: fisheye error rate (mean {sphere.mean():.3f})"),
              (rf, cmap, (0, 1), f"{names[1]}: fisheye error rate (mean {flat.mean():.3f})"),
              (rs - rf, diff_map, (-0.5, 0.5), f"{names[0]} − {names[1]} (red: the sphere model errs more)")]
    for ax, (img, cm, (lo, hi), title) in zip(axes[0], panels):
        im = ax.imshow(img, cmap=cm, vmin=lo, vmax=hi, interpolation="nearest")
        ax.imshow(faces_line, interpolation="nearest")
        cs = ax.contour(theta, levels=[30, 60, 90], colors="white", linewidths=0.8, linestyles="--")
        ax.clabel(cs, fmt="%d°", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        fig.colorbar(im, ax=ax, shrink=0.8)
    local, face, vtheta = _equidistant(nside, faces)
    on = local >= 0
    row = [(axes[1, 0], sphere.sphere_rate(), f"{names[0]} on its sphere pixels (nside {nside})"),
           (axes[1, 1], flat_on_sphere, f"{names[1]}: fisheye errors pooled per nside-{nside} pixel")]
    for ax, values, title in row:
        img = np.full(local.shape, np.nan)
        img[on] = values[local[on]]
        im = ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        outline = views.face_overlay(np.where(on, face, -1), views.FACE_COLORS, width=2)
        ax.imshow(outline, interpolation="nearest")
        cs = ax.contour(vtheta, levels=[30, 60, 90], colors="white", linewidths=0.8, linestyles="--")
        ax.clabel(cs, fmt="%d°", fontsize=8)
        ax.set_title(title + "\nazimuthal equidistant around the optical axis, radius = θ", fontsize=10)
        ax.axis("off")
        fig.colorbar(im, ax=ax, shrink=0.8)
    ax = axes[1, 2]
    edges = np.arange(0, VIEW_MAX_DEG + BIN_DEG, BIN_DEG)
    share = None
    for m, name in [(sphere, names[0]), (flat, names[1])]:
        rates, counts = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = (theta >= lo) & (theta < hi)
            c = m.count[sel].sum()
            rates.append(m.err[sel].sum() / c if c else np.nan)
            counts.append(c)
        ax.plot(edges[:-1] + BIN_DEG / 2, rates, marker="o", ms=3, label=name)
        share = np.asarray(counts, dtype=np.float64)
    ax2 = ax.twinx()
    ax2.bar(edges[:-1] + BIN_DEG / 2, share / share.sum(), width=BIN_DEG * 0.9, color=(0.6, 0.6, 0.6),
            alpha=0.35)
    ax2.set_ylabel("share of scored pixels (bars)")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlabel("incidence angle θ (degrees)")
    ax.set_ylabel("error rate")
    ax.set_title(f"error rate against θ ({BIN_DEG:g}° bins)", fontsize=10)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.suptitle(f"Segmentation errors on the validation images: {names[0]} vs {names[1]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return fig


def check_runs(sphere_dir, flat_dir) -> tuple:
    """The two runs' configs, or DiagnosisError naming the flag, the run and the rule."""
    from ..engine import load_run_config, model_domain

    cfgs = []
    for flag, run_dir, want in [("--sphere", sphere_dir, "healpix"), ("--flat", flat_dir, "flat")]:
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise DiagnosisError(f"{flag} {run_dir}: not a run directory (no config.yaml); give a directory "
                                 "that train.py or heal-swin-study trained")
        if not any((run_dir / "weights" / f"{w}.safetensors").is_file() for w in ("best", "last")):
            raise DiagnosisError(f"{flag} {run_dir}: no weights (weights/best.safetensors or "
                                 "last.safetensors); the run has not trained yet")
        cfg = load_run_config(run_dir)
        if cfg.task != "segmentation":
            raise DiagnosisError(f"{flag} {run_dir}: task={cfg.task}; the error maps are for segmentation "
                                 "runs")
        if cfg.data.source != "woodscape" or cfg.data.rig:
            raise DiagnosisError(f"{flag} {run_dir}: data.source={cfg.data.source}, data.rig={cfg.data.rig}; "
                                 "the error maps need single-camera fisheye images (source woodscape, rig "
                                 "false)")
        domain = model_domain(cfg)
        if domain != want:
            raise DiagnosisError(f"{flag} {run_dir}: its model {cfg.model.name} works on the {domain} "
                                 f"domain; {flag} takes a {want} model")
        cfgs.append(cfg)
    if cfgs[0].data.orientation != "camera":
        raise DiagnosisError(f"--sphere {sphere_dir}: data.orientation={cfgs[0].data.orientation}; the error "
                             "maps draw the sphere in the camera frame (data.orientation=camera)")
    return tuple(cfgs)


def error_maps(sphere_dir, flat_dir, out) -> dict:
    """Error maps of a sphere and a flat segmentation run on their validation images: writes the PNG `out`
    and its tables beside it (.md); returns {"sphere_run", "flat_run", "png", "sphere_error", "flat_error",
    "tables"}."""
    from ..cameras import incidence_angle
    from ..engine import config_faces
    from ..projection import HealpixToFisheye

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DiagnosisError(f"--out {out}: the figure is a PNG; give a path ending in .png")
    scfg, fcfg = check_runs(sphere_dir, flat_dir)
    nside, faces = scfg.data.nside, config_faces(scfg)
    coverage = (nside, faces, scfg.data.orientation)
    sphere, cam = collect_errors(sphere_dir, coverage)
    flat, _ = collect_errors(flat_dir, coverage)
    theta = incidence_angle(cam)
    index = containing_pixel(HealpixToFisheye(cam, *coverage))
    face_fisheye = np.where(index >= 0, np.asarray(faces)[np.clip(index // (nside * nside), 0, None)], -1)
    seam_fisheye = (index >= 0) & seam_mask(nside, faces)[np.clip(index, 0, None)]
    names = (scfg.model.name, fcfg.model.name)
    text = error_tables({names[0]: sphere, names[1]: flat}, theta, seam_fisheye)
    flat_on_sphere = pooled_on_sphere(flat, index, len(faces) * nside**2)
    error_figure(sphere, flat, flat_on_sphere, theta, face_fisheye, nside, faces, names, out)
    out.with_suffix(".md").write_text(text)
    return {"sphere_run": str(sphere_dir), "flat_run": str(flat_dir), "png": str(out),
            "sphere_error": sphere.mean(), "flat_error": flat.mean(), "tables": text}


# --------------------------------------------------------------------------- command line


def _size(text: str) -> tuple[int, int]:
    """'64x96' -> (64, 96) = (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be HxW in whole pixels, e.g. 64x96") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be at least 1 pixel")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=raw)
    sub = p.add_subparsers(dest="command", required=True, metavar="{oracle,errors}")
    o = sub.add_parser("oracle", help="oracle ceiling of the projection pipelines (no model)",
                       formatter_class=raw,
                       description="The ceiling of each pipeline: the ground truth to the model's grid and "
                                   "back.",
                       epilog=f"examples:\n  {PROG} oracle --root runs/diag/data --frames 6 --out "
                              f"runs/diag/oracle.json\n  {PROG} oracle --nsides 32 --flat 64x96 --frames 2")
    o.add_argument("--root", default="runs/learning/data", help="synthetic tree (generated when missing)")
    o.add_argument("--frames", type=int, default=6, help="the first FRAMES frames of the tree are scored")
    o.add_argument("--nsides", type=int, nargs="+", default=[32, 64, 128], help="sphere resolutions")
    o.add_argument("--flat", type=_size, nargs="+", default=[(64, 96), (96, 128), (256, 384)],
                   help="flat sizes HxW")
    o.add_argument("--seed", type=int, default=0, help="data seed when the data are generated")
    o.add_argument("--out", default=None, help="also write the figures as JSON here")
    e = sub.add_parser("errors", help="per-pixel error maps of a sphere and a flat segmentation run",
                       formatter_class=raw,
                       description="Per-pixel error maps of a sphere and a flat run on their validation "
                                   "images.",
                       epilog=f"examples:\n  {PROG} errors --sphere runs/a --flat runs/b "
                              "--out runs/error_maps.png\n"
                              "  heal-swin-study bench/learning/error_maps.py --out runs/error_maps"
                              "      # trains both, then draws")
    e.add_argument("--sphere", required=True, help="run directory of a HEALPix (sphere) segmentation run")
    e.add_argument("--flat", required=True, help="run directory of a flat segmentation run")
    e.add_argument("--out", default="runs/error_maps/error_maps.png", help="the PNG (tables beside it, .md)")
    e.add_argument("--threads", type=int, default=1, help="torch threads")
    return p


def _check_oracle(args) -> None:
    from .. import grid

    if args.frames < 1:
        raise DiagnosisError(f"--frames {args.frames} must be at least 1")
    for n in args.nsides:
        if not grid.is_valid_nside(n):
            raise DiagnosisError(f"--nsides {n} must be a power of two (HEALPix NESTED resolution)")
    if args.seed < 0:
        raise DiagnosisError(f"--seed {args.seed} must be >= 0")


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as err:  # --help (0) or a usage error (2, printed by argparse)
        return int(err.code or 0)
    threads = getattr(args, "threads", 1)
    try:
        if threads < 1:
            raise DiagnosisError(f"--threads {threads} must be at least 1")
        if args.command == "oracle":
            _check_oracle(args)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(threads)
        if args.command == "oracle":
            from ..data.synthetic import ensure_synthetic

            root = Path(args.root)
            ensure_synthetic(root, frames=args.frames, seed=args.seed, size=(640, 483))
            start = time.perf_counter()
            result = oracle(root, args.frames, args.nsides, args.flat)
            result["seconds"] = round(time.perf_counter() - start, 1)
            print(oracle_markdown(result))
            print(f"({result['seconds']} s)")
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(result, indent=2))
        else:
            summary = error_maps(args.sphere, args.flat, args.out)
            print(summary.pop("tables"))
            print(json.dumps(summary))
    except DiagnosisError as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
