"""Where each model loses (issue #17): per-pixel segmentation error averaged over the validation
images, in the fisheye image and on the sphere, for a HEAL-SWIN run and a flat run.

    python bench/learning/error_maps.py --sphere RUN_DIR --flat RUN_DIR [--out error_maps.png]
    python bench/learning/error_maps.py [--steps 150] [--work runs/error_maps] [--out error_maps.png]

Without run directories, trains heal_swin_tiny (nside 32, faces 0-7) and swin_unet_flat_tiny
(64 × 96) for segmentation with the learning benchmark's settings (`bench/learning/run.py`, one
thread) into --work first.

Error = prediction != label, on the fisheye pixels the sphere model's faces cover (the pixels the
evaluation scores), at full resolution after the evaluation's own back-projection (sphere) or
nearest upsampling (flat); averaged over the validation images of every camera (they share the
image size and nearly the intrinsics; the first camera's incidence angles, faces and sphere
pixels stand for all, a few pixels off for the others' principal points). The figure (PNG):

  row 1: fisheye error rate of HEAL-SWIN | of the flat model | their difference (HEAL-SWIN − flat),
         with the faces' outlines and circles at 30°, 60°, 90° of incidence;
  row 2: on the sphere, seen from its centre around the optical axis out to 110° (azimuthal
         equidistant, so radius = incidence angle): HEAL-SWIN's error on its own pixels (against
         the projected labels) | the flat model's fisheye errors pooled into the same nside
         pixels | error rate against incidence angle for both, in 5° bins.

Also prints error rates per ring of incidence angle, and at face seams (fisheye pixels whose
sphere pixel lies on the edge of its face) against face interiors, per ring.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BIN_DEG = 5.0
VIEW_MAX_DEG = 110.0  # faces 0-7 reach 104.6° in the WoodScape FV calibration


class ErrorMaps:
    """Accumulated errors of one run: fisheye `err`/`count` (H, W) int64, sphere `err`/`count` (N,)
    int64 at the run's nside (sphere runs only), and the HealpixToFisheye maps per camera."""

    def __init__(self, shape, npix):
        self.err = np.zeros(shape, dtype=np.int64)
        self.count = np.zeros(shape, dtype=np.int64)
        self.sphere_err = np.zeros(npix, dtype=np.int64)
        self.sphere_count = np.zeros(npix, dtype=np.int64)

    def rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.err / self.count, np.nan)

    def sphere_rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.sphere_count > 0, self.sphere_err / self.sphere_count, np.nan)


def collect_errors(run_dir, nside: int, faces) -> tuple[ErrorMaps, dict]:
    """Evaluates `run_dir`'s best weights on its validation split and accumulates its errors;
    `nside`/`faces` define the scored fisheye pixels (the sphere model's covered mask). Returns
    the maps and {camera fingerprint: (camera, HealpixToFisheye)}."""
    import torch

    from heal_swin.data import FlatDataset
    from heal_swin.engine import build_datasets, evaluate, load_model, load_run_config
    from heal_swin.projection import HealpixToFisheye

    cfg = load_run_config(run_dir, ["eval.split=val"])
    if cfg.task != "segmentation":
        raise SystemExit(f"{run_dir}: task={cfg.task}; the error maps are for segmentation runs")
    ds = build_datasets(cfg, ("val",))["val"]
    model = load_model(run_dir)
    flat = isinstance(ds, FlatDataset)
    preds: dict = {}

    def keep(indices, batch, pred):
        for j, i in enumerate(indices):
            preds[i] = (pred[j].cpu(), batch["labels"][j], batch["valid"][j])

    evaluate(model, ds, task=cfg.task, batch_size=cfg.data.batch_size, backproject=False, collect=keep)
    backs: dict = {}
    maps = None
    for i, (pred, sphere_labels, sphere_valid) in sorted(preds.items()):
        sample = ds.items[i]
        item = ds.tree.load(sample, labels=True)
        cam, truth = item["camera"], ds.map_labels(item["labels"], sample.labels)
        key = cam.fingerprint()
        if key not in backs:
            backs[key] = (cam, HealpixToFisheye(cam, nside, faces))
        back = backs[key][1]
        if maps is None:
            maps = ErrorMaps(truth.shape, len(faces) * nside**2)
        if flat:
            p = torch.nn.functional.interpolate(pred[None, None].float(), size=truth.shape, mode="nearest")
            p = p[0, 0].long().numpy()
        else:
            p = np.asarray(back.backproject(pred.numpy()))
            ok = sphere_valid.numpy() & (sphere_labels.numpy() != cfg.data.ignore_index)
            maps.sphere_err += ok & (pred.numpy() != sphere_labels.numpy())
            maps.sphere_count += ok
        scored = back.covered_mask & (truth != cfg.data.ignore_index)
        maps.err += scored & (p != truth)
        maps.count += scored
    return maps, backs


def containing_pixel(back) -> np.ndarray:
    """int64 (H, W): the index of the sphere pixel that contains each fisheye pixel's ray (the
    evaluation's back-projection), −1 outside the faces."""
    return np.asarray(back.backproject(np.arange(back.npix, dtype=np.int64), fill=-1)).astype(np.int64)


def pooled_on_sphere(maps: ErrorMaps, index: np.ndarray, nside: int, faces) -> np.ndarray:
    """The fisheye error counts pooled into the sphere pixels that contain them (`index`, from
    `containing_pixel`; the first camera's stands for all): rate (N,)."""
    index = index.reshape(-1)
    ok = index >= 0
    n = len(faces) * nside**2
    err = np.bincount(index[ok], maps.err.reshape(-1)[ok], minlength=n)
    count = np.bincount(index[ok], maps.count.reshape(-1)[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, err / count, np.nan)


def seam_mask(nside: int, faces) -> np.ndarray:
    """bool (N,): sphere pixels on the edge of their base pixel (face), NESTED over `faces`."""
    from heal_swin import grid

    local = np.arange(nside * nside)
    x, y, _ = grid.nest2xyf(nside, local)
    edge = (x == 0) | (y == 0) | (x == nside - 1) | (y == nside - 1)
    return np.tile(edge, len(faces))


def tables(maps: dict, theta: np.ndarray, seam_fisheye: np.ndarray) -> str:
    """Markdown: error rate per ring, and at seams against interiors, for each run in `maps`."""
    from heal_swin.cameras import INCIDENCE_RINGS

    names = list(maps)
    lines = ["Error rate (prediction != label) per ring of incidence angle, validation images:", "",
             "| ring | scored pixels | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    rings = list(INCIDENCE_RINGS.values()) + [(0.0, 180.0)]
    for lo, hi in rings:
        sel = (theta >= lo) & (theta < hi)
        label = "all" if (lo, hi) == (0.0, 180.0) else (f"θ {lo:g}–{hi:g}°" if hi < 180 else f"θ > {lo:g}°")
        cells = [_rate(m, sel) for m in maps.values()]
        scored = int(next(iter(maps.values())).count[sel].sum())
        lines.append(f"| {label} | {scored:,} | " + " | ".join(cells) + " |")
    lines += ["", "At face seams (fisheye pixels in a sphere pixel on its face's edge) / in face interiors:",
              "",
              "| ring | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for lo, hi in rings:
        sel = (theta >= lo) & (theta < hi)
        label = "all" if (lo, hi) == (0.0, 180.0) else (f"θ {lo:g}–{hi:g}°" if hi < 180 else f"θ > {lo:g}°")
        cells = [f"{_rate(m, sel & seam_fisheye)} / {_rate(m, sel & ~seam_fisheye)}" for m in maps.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _rate(m: ErrorMaps, sel) -> str:
    c = m.count[sel].sum()
    return f"{m.err[sel].sum() / c:.3f}" if c else "–"


def _equidistant(nside: int, faces, size: int = 420):
    """An azimuthal equidistant view around the optical axis (camera frame: θ = 0 at the centre,
    image right = raster right, image down = raster down), radius = θ up to VIEW_MAX_DEG:
    (local (size, size) indices into a map over `faces`, −1 elsewhere; face (size, size), −1 off
    the disc; theta (size, size) degrees)."""
    from heal_swin import grid

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


def figure(sphere: ErrorMaps, flat: ErrorMaps, flat_on_sphere, theta, face_fisheye, nside, faces, names,
           path):
    """Draws the PNG described in the module docstring."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from heal_swin.projection import views

    fig = Figure(figsize=(16, 10), dpi=100, layout="constrained")
    axes = fig.subplots(2, 3)
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad((0.85, 0.85, 0.85))
    diff_map = matplotlib.colormaps["RdBu_r"].copy()
    diff_map.set_bad((0.85, 0.85, 0.85))
    rs, rf = sphere.rate(), flat.rate()
    faces_line = views.face_overlay(face_fisheye, views.FACE_COLORS, width=2)
    faces_line[..., 3] *= 0.6
    panels = [(rs, cmap, (0, 1), f"{names[0]}: fisheye error rate (mean {_mean(sphere)})"),
              (rf, cmap, (0, 1), f"{names[1]}: fisheye error rate (mean {_mean(flat)})"),
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


def _mean(m: ErrorMaps) -> str:
    return f"{m.err.sum() / max(1, m.count.sum()):.3f}"


def train_runs(work: Path, steps: int, threads: int) -> tuple[Path, Path]:
    """Trains the two segmentation runs with the learning benchmark's settings (its data in
    work/data); returns their run directories."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import run as learning

    models = ("heal_swin_tiny", "swin_unet_flat_tiny")
    dirs = tuple(work / f"segmentation-{m}" for m in models)
    missing = [m for m, d in zip(models, dirs) if not (d / "weights" / "last.safetensors").is_file()]
    if missing:
        learning.main(["--models", *missing, "--tasks", "segmentation", "--steps", str(steps),
                       "--out", str(work), "--threads", str(threads)])
    return dirs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sphere", default=None, help="run directory of a HEAL-SWIN (sphere) segmentation run")
    p.add_argument("--flat", default=None, help="run directory of a flat segmentation run")
    p.add_argument("--steps", type=int, default=150, help="training steps when the runs are trained here")
    p.add_argument("--work", default="runs/error_maps", help="where runs are trained when not given")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="PNG (default: WORK/error_maps.png)")
    args = p.parse_args(argv)
    if (args.sphere is None) != (args.flat is None):
        p.error("give both --sphere and --flat, or neither (then both are trained)")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from heal_swin.engine import config_faces, load_run_config
    from heal_swin.cameras import incidence_angle
    from heal_swin.models import model_info

    if args.sphere is None:
        sphere_dir, flat_dir = train_runs(Path(args.work), args.steps, args.threads)
    else:
        sphere_dir, flat_dir = Path(args.sphere), Path(args.flat)
    for d, want in [(sphere_dir, "healpix"), (flat_dir, "flat")]:
        domain = model_info(load_run_config(d).model.name).domain
        if domain != want:
            raise SystemExit(f"{d}: its model works on the {domain} domain; expected a {want} model here")
    scfg = load_run_config(sphere_dir)
    nside, faces = scfg.data.nside, config_faces(scfg)
    sphere, backs = collect_errors(sphere_dir, nside, faces)
    flat, _ = collect_errors(flat_dir, nside, faces)
    cam, back = next(iter(backs.values()))
    theta = incidence_angle(cam)
    index = containing_pixel(back)
    face_fisheye = np.where(index >= 0, index // (nside * nside), -1)
    face_fisheye = np.where(index >= 0, np.asarray(faces)[np.clip(face_fisheye, 0, None)], -1)
    seam = seam_mask(nside, faces)
    seam_fisheye = (index >= 0) & seam[np.clip(index, 0, None)]
    names = (scfg.model.name, load_run_config(flat_dir).model.name)
    text = tables({names[0]: sphere, names[1]: flat}, theta, seam_fisheye)
    print(text)
    out = Path(args.out) if args.out else Path(args.work) / "error_maps.png"
    flat_on_sphere = pooled_on_sphere(flat, index, nside, faces)
    figure(sphere, flat, flat_on_sphere, theta, face_fisheye, nside, faces, names, out)
    (out.with_suffix(".md")).write_text(text)
    summary = {"sphere_run": str(sphere_dir), "flat_run": str(flat_dir), "png": str(out),
               "sphere_error": float(sphere.err.sum() / max(1, sphere.count.sum())),
               "flat_error": float(flat.err.sum() / max(1, flat.count.sum()))}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
