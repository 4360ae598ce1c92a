"""Oracle ceiling of the pipelines (issue #17): how much of the ground truth survives the trip to the
model's grid and back, with no model in between.

    python bench/learning/oracle.py [--root runs/learning/data] [--frames 6] [--nsides 32 64 128]
                                    [--flat 64x96 96x128 256x384] [--out oracle.json]

Sphere: the ground-truth labels projected to HEALPix faces 0-7 (nearest, `FisheyeToHealpix`)
and back-projected (`HealpixToFisheye.backproject`). Sphere pixels whose centre falls just outside
the image take the label of the nearest image pixel (the best a model could predict there; their
fisheye pixels at the image border are scored). Flat: the labels resized nearest down to H×W with
OpenCV, as `FlatDataset` does, and up again with torch's nearest interpolation, as `evaluate`
upsamples flat predictions. Both are scored against the original labels at full resolution on the
fisheye pixels that faces 0-7 cover at nside 32 (the pixels the learning benchmark scores; the
faces' outline does not depend on nside), as mIoU over the classes present, per class and per ring
of incidence angle (`INCIDENCE_RINGS`).

Resolution: the solid angle of a fisheye pixel comes from the camera model (the cross product of
the ray's derivatives along u and v); a HEALPix pixel covers 4π / (12·nside²) sr, a flat pixel the
(W/w)·(H/h) fisheye pixels it is resized from. The table gives the model's pixels per full-resolution
fisheye pixel (median over the front camera's covered pixels) in the image centre (θ < 30°) and at
the periphery (θ > 90°), and their angular size (√solid angle, degrees).

Data: the learning benchmark's (synthetic, seed 0, 640×483); missing data are generated into
--root. The frames used are the first --frames of the tree (frame i depends only on (seed, i), so
the first 6 of a 24-frame tree are the 6 frames of `generate(frames=6)`).

Prints Markdown tables; --out writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SCORE_NSIDE = 32  # the learning benchmark's nside: its faces' covered mask selects the scored pixels
CENTRE_DEG, PERIPHERY_DEG = 30.0, 90.0


def _size(text: str) -> tuple[int, int]:
    """ "64x96" -> (64, 96) = (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"flat size {text!r} must be HxW, e.g. 64x96") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"flat size {text!r} must be positive")
    return h, w


def pixel_solid_angle(camera) -> np.ndarray:
    """float64 (H, W): the solid angle (sr) of every fisheye pixel, |∂r/∂u × ∂r/∂v| by central
    differences of the camera's rays over one pixel; NaN where the model has no ray."""
    w, h = int(camera.width), int(camera.height)
    vv, uu = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")

    def rays(du, dv):
        uv = np.stack([uu + du, vv + dv], axis=-1).reshape(-1, 2)
        return np.asarray(camera.pixel_to_ray(uv), dtype=np.float64)

    ru = rays(0.5, 0.0) - rays(-0.5, 0.0)
    rv = rays(0.0, 0.5) - rays(0.0, -0.5)
    return np.linalg.norm(np.cross(ru, rv), axis=1).reshape(h, w)


def sphere_labels(labels: np.ndarray, camera, nside: int, faces, ignore_index: int = 255) -> np.ndarray:
    """labels (H, W) -> the back-projected ground truth (H, W) int64 at `nside` over `faces`:
    nearest projection, sphere pixels just outside the image filled from the nearest image pixel,
    nearest back-projection (ignore_index where the faces do not cover the image)."""
    from heal_swin.projection import FisheyeToHealpix, HealpixToFisheye

    proj = FisheyeToHealpix(camera, nside, faces, ignore_index=ignore_index)
    y = proj.project_labels(labels)
    outside = ~proj.valid_mask
    uv = proj.sample_positions
    ok = outside & np.all(np.isfinite(uv), axis=1)
    h, w = labels.shape
    # The pixel centre's ray lands beyond the image's edge (or the pixel has no ray): the image
    # pixel nearest to where it lands is the label a perfect model would give it.
    x = np.clip(np.floor(uv[ok, 0] + 0.5), 0, w - 1).astype(np.int64)
    yy = np.clip(np.floor(uv[ok, 1] + 0.5), 0, h - 1).astype(np.int64)
    y[ok] = labels[yy, x]
    return np.asarray(HealpixToFisheye(camera, nside, faces, ignore_index=ignore_index).backproject(y))


def flat_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """labels (H, W) -> (H, W) int64: resized nearest to size = (h, w) as `FlatDataset` does (OpenCV),
    then back to (H, W) as `evaluate` upsamples a flat prediction (torch, nearest)."""
    import cv2
    import torch

    h, w = size
    small = cv2.resize(labels.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
    up = torch.nn.functional.interpolate(torch.from_numpy(small.astype(np.float32))[None, None],
                                         size=labels.shape, mode="nearest")[0, 0]
    return up.long().numpy()


def run(root: Path, frames: int, nsides, flats, faces=tuple(range(8))) -> dict:
    """Scores every setting over the first `frames` frames of the tree at `root`; returns
    {"settings": {name: {"pixels", "miou", "iou", "rings", "density"}}, "images", "scored_pixels"}."""
    from heal_swin.data import WoodScapeTree
    from heal_swin.cameras import INCIDENCE_RINGS, incidence_ring
    from heal_swin.projection import HealpixToFisheye
    from heal_swin.tasks import ConfusionMatrix

    tree = WoodScapeTree(root)
    samples = [s for s in tree.samples if int(s.frame) < frames]
    if not samples:
        raise SystemExit(f"{root}: no samples with frame < {frames}")
    k, names = len(tree.class_names), tree.class_names
    settings = {f"sphere nside {n}": ("sphere", n) for n in nsides}
    settings |= {f"flat {h}×{w}": ("flat", (h, w)) for h, w in flats}
    overall = {s: ConfusionMatrix(k, 255, names) for s in settings}
    rings = {s: {r: ConfusionMatrix(k, 255, names) for r in INCIDENCE_RINGS} for s in settings}
    cache: dict = {}
    scored = 0
    for sample in samples:
        item = tree.load(sample, labels=True)
        cam, truth = item["camera"], item["labels"].astype(np.int64)
        key = cam.fingerprint()
        if key not in cache:
            covered = HealpixToFisheye(cam, SCORE_NSIDE, faces).covered_mask
            cache[key] = (covered, incidence_ring(cam))
        covered, ring = cache[key]
        scored += int(covered.sum())
        for name, (kind, arg) in settings.items():
            pred = sphere_labels(truth, cam, arg, faces) if kind == "sphere" else flat_labels(truth, arg)
            overall[name].update(pred, truth, covered)
            for r, m in enumerate(rings[name].values()):
                m.update(pred, truth, covered & (ring == r))
    density = _density(tree, samples, nsides, flats, faces)
    out = {"root": str(root), "frames": frames, "images": len(samples), "scored_pixels": scored,
           "image_size": [int(cam.height), int(cam.width)], "fisheye_pixel_deg": density.pop("fisheye"),
           "settings": {}}
    for name, (kind, arg) in settings.items():
        s = overall[name].summary()
        model_pixels = len(faces) * arg**2 if kind == "sphere" else arg[0] * arg[1]
        out["settings"][name] = {"kind": kind, "model_pixels": model_pixels, "miou": s["miou"],
                                 "iou": s["iou"],
                                 "rings": {r: m.summary()["miou"] for r, m in rings[name].items()},
                                 "density": density[name]}
    return out


def _density(tree, samples, nsides, flats, faces) -> dict:
    """Per setting: model pixels per fisheye pixel and their angular size (degrees), median over the
    front camera's covered pixels in the centre and at the periphery; also how many sphere pixels
    see the image."""
    from heal_swin.cameras import incidence_angle
    from heal_swin.projection import FisheyeToHealpix, HealpixToFisheye

    front = next((s for s in samples if s.camera == "FV"), samples[0])
    cam = tree.camera(front)
    omega = pixel_solid_angle(cam)
    theta = incidence_angle(cam)
    covered = HealpixToFisheye(cam, SCORE_NSIDE, faces).covered_mask
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


def markdown(result: dict) -> str:
    from heal_swin.cameras import INCIDENCE_RINGS

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
              f"{ff['size_deg_periphery']:.3f}° at "
              "θ > 90° (medians over the FV image).", "",
              "Oracle mIoU per ring of incidence angle:", "",
              "| setting | " + " | ".join(_ring_label(v) for v in INCIDENCE_RINGS.values()) + " |",
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


def _ring_label(bounds) -> str:
    lo, hi = bounds
    return f"θ {lo:g}–{hi:g}°" if hi < 180 else f"θ > {lo:g}°"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="runs/learning/data", help="synthetic tree (generated when missing)")
    p.add_argument("--frames", type=int, default=6, help="the first FRAMES frames of the tree are scored")
    p.add_argument("--nsides", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--flat", type=_size, nargs="+", default=[(64, 96), (96, 128), (256, 384)],
                   help="flat sizes HxW")
    p.add_argument("--seed", type=int, default=0, help="data seed when the data are generated")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    if args.frames < 1:
        p.error(f"--frames {args.frames} must be at least 1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from heal_swin.data.synthetic import ensure_synthetic

    root = Path(args.root)
    ensure_synthetic(root, frames=args.frames, seed=args.seed, size=(640, 483))
    start = time.perf_counter()
    result = run(root, args.frames, args.nsides, args.flat)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(markdown(result))
    print(f"({result['seconds']} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
