"""Synthetic data in WoodScape's format: a procedural street scene ray-cast through a four-camera
fisheye rig (FV, RV, MVL, MVR).

Images, labels (WoodScape's 10 classes) and depth (metres along the ray, SynWoodScape-style) come
from the same ray hits, so they agree exactly with each other and with the calibration files. The
scene is simple geometry a network can learn: a road plane with lane marks and curbs, sidewalks,
building blocks, vehicles, people, riders on bicycles and motorcycles, traffic signs, and sky.

    python -m heal_swin.data.synthetic --out data/synthetic --frames 4 --seed 0 --size 640x483

Layout written (the WoodScape tree; see data/README.md):
    rgb_images/<frame>_<CAM>.png                       RGB, uint8
    semantic_annotations/gtLabels/<frame>_<CAM>.png    class ids, uint8
    semantic_annotations/rgbLabels/<frame>_<CAM>.png   class colours, for people
    semantic_annotations/seg_annotation_info.json      class names and colours
    depth_maps/raw_data/<frame>_<CAM>.npy              float32 metres along the ray, sky = 1000
    calibration/<frame>_<CAM>.json                     WoodScape calibration
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cameras import FV_SAMPLE, RadialPolyCamera, rotation_to_quaternion, save_calibration
from .classes import WOODSCAPE_CLASSES, WOODSCAPE_COLORS, colorize
from .progress import progress_options

__all__ = ["RIG", "rig_cameras", "Scene", "RayBundle", "random_scene", "render", "generate", "ensure_synthetic",
           "main", "SKY_DEPTH"]

SKY_DEPTH = 1000.0
CLS = {name: i for i, name in enumerate(WOODSCAPE_CLASSES)}

# Mounting of the four cameras on a car (vehicle frame, ISO 8855: x forward, y left, z up, origin
# on the ground below the rear axle): yaw of the optical axis (degrees, from +x towards +y), its
# pitch below the horizon (degrees), position (m), and principal-point offsets (px at 1280×966).
# Values resemble WoodScape's rig: bumper cameras look slightly down, mirror cameras steeply.
RIG = {
    "FV": dict(yaw=0.0, pitch=23.4, position=(3.75, 0.0, 0.66), offset=(3.942, -3.093)),
    "RV": dict(yaw=180.0, pitch=28.0, position=(-1.05, 0.0, 0.93), offset=(-1.6, 2.4)),
    "MVL": dict(yaw=90.0, pitch=52.0, position=(2.05, 1.02, 1.02), offset=(2.7, -1.1)),
    "MVR": dict(yaw=-90.0, pitch=52.0, position=(2.05, -1.02, 1.02), offset=(-2.2, 1.6)),
}


def _camera_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Camera -> vehicle rotation for an optical axis at `yaw` and `pitch` below the horizon, with
    the image's x axis horizontal (no roll): columns are the camera's x, y, z in the vehicle."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    z = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), -np.sin(pitch)])
    x = np.array([np.sin(yaw), -np.cos(yaw), 0.0])  # image right = the vehicle's right of the view
    y = np.cross(z, x)                               # image down
    return np.stack([x, y, z], axis=1)


def rig_cameras(width: int = 1280, height: int = 966) -> dict[str, RadialPolyCamera]:
    """The four rig cameras, WoodScape FV sample intrinsics, scaled to `width`×`height`."""
    intr = FV_SAMPLE["intrinsic"]
    k = tuple(intr[f"k{i}"] for i in range(1, 5))
    cams = {}
    for name, m in RIG.items():
        full = RadialPolyCamera(k=k, cx_offset=m["offset"][0], cy_offset=m["offset"][1],
                                width=int(intr["width"]), height=int(intr["height"]),
                                aspect_ratio=intr["aspect_ratio"],
                                quaternion=rotation_to_quaternion(_camera_rotation(m["yaw"], m["pitch"])),
                                translation=m["position"], name=name)
        cams[name] = full if (width, height) == (full.width, full.height) else full.resized(width, height)
    return cams


# --------------------------------------------------------------------------- scene


@dataclass
class Scene:
    """Axis-aligned boxes (vehicle frame) with a class and a colour, plus the ground layout."""

    lo: np.ndarray                  # (M, 3) box minimum corners, metres
    hi: np.ndarray                  # (M, 3) box maximum corners
    label: np.ndarray               # (M,) class ids
    color: np.ndarray               # (M, 3) float RGB 0..255
    road_half_width: float = 5.0
    lane_width: float = 3.2
    curb_width: float = 0.25
    road_tone: float = 95.0
    sidewalk_tone: float = 150.0
    sun: np.ndarray = field(default_factory=lambda: np.array([0.4, 0.3, 0.87]))
    brightness: float = 1.0
    noise_sigma: float = 2.0


def _hsv_color(rng, sat=(0.3, 0.9), val=(0.35, 0.95)) -> np.ndarray:
    h, s, v = rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb) * 255.0


def random_scene(rng: np.random.Generator) -> Scene:
    """A street around the ego car, different for every random state."""
    boxes: list[tuple] = []  # (lo, hi, label, color)
    road = rng.uniform(4.0, 7.0)
    curb = 0.25

    def add(lo, hi, label, color):
        boxes.append((np.asarray(lo, float), np.asarray(hi, float), CLS[label], np.asarray(color, float)))

    def free(x, y, half_x, half_y):
        """Keeps objects off the ego car (x −1.5 … 4.3, |y| < 1.3) and off each other."""
        if -1.5 - half_x < x < 4.3 + half_x and abs(y) < 1.3 + half_y:
            return False
        for lo, hi, *_ in boxes:
            if lo[0] - half_x < x < hi[0] + half_x and lo[1] - half_y < y < hi[1] + half_y and lo[2] < 0.5:
                return False
        return True

    def place(half_x, half_y, y_range, tries=30):
        for _ in range(tries):
            x, y = rng.uniform(-28, 32), rng.uniform(*y_range) * rng.choice([-1, 1])
            if free(x, y, half_x, half_y):
                return x, y
        return None

    # Building blocks beyond the sidewalks (WoodScape labels them void).
    for side in (-1, 1):
        x = -60.0
        setback = road + curb + rng.uniform(2.5, 5.0)
        while x < 60:
            length = rng.uniform(8, 18)
            height = rng.uniform(5, 22)
            y0 = side * (setback + rng.uniform(0, 2))
            add((x, min(y0, y0 + side * 12), 0), (x + length - rng.uniform(0.5, 3), max(y0, y0 + side * 12), height),
                "void", _hsv_color(rng, sat=(0.05, 0.35), val=(0.4, 0.85)))
            x += length
    # Vehicles in the lanes and parked at the curb.
    for _ in range(rng.integers(3, 8)):
        spot = place(2.2, 0.95, (0.8 * road * 0.3, road - 1.0))
        if spot is None:
            continue
        x, y = spot
        color = _hsv_color(rng)
        add((x - 2.2, y - 0.9, 0.25), (x + 2.2, y + 0.9, 1.0), "vehicles", color)
        add((x - 1.2, y - 0.8, 1.0), (x + 0.9, y + 0.8, 1.5), "vehicles", color * 0.8)
        add((x - 1.8, y - 0.95, 0.0), (x - 1.1, y + 0.95, 0.3), "vehicles", (25, 25, 25))  # wheels
        add((x + 1.1, y - 0.95, 0.0), (x + 1.8, y + 0.95, 0.3), "vehicles", (25, 25, 25))
    # People on the sidewalks and crossing.
    for _ in range(rng.integers(2, 7)):
        spot = place(0.25, 0.25, (1.5, road + curb + 3.0))
        if spot is None:
            continue
        x, y = spot
        h = rng.uniform(1.5, 1.9)
        add((x - 0.22, y - 0.18, 0), (x + 0.22, y + 0.18, h - 0.25), "person", _hsv_color(rng))
        add((x - 0.12, y - 0.12, h - 0.25), (x + 0.12, y + 0.12, h), "person", (205, 165, 135))
    # Cyclists and motorcyclists in the lanes.
    for vehicle, length, width, height in (("bicycle", 0.9, 0.2, 0.95), ("motorcycle", 1.1, 0.4, 1.1)):
        for _ in range(rng.integers(0, 3)):
            spot = place(length, width, (1.5, road - 0.8))
            if spot is None:
                continue
            x, y = spot
            add((x - length, y - width, 0), (x + length, y + width, height), vehicle, _hsv_color(rng))
            add((x - 0.25, y - 0.22, height), (x + 0.2, y + 0.22, height + 0.75), "rider", _hsv_color(rng))
            add((x - 0.12, y - 0.12, height + 0.75), (x + 0.12, y + 0.12, height + 1.0), "rider", (60, 60, 60))
    # Traffic signs at the curb: a pole (void) and a plate.
    for _ in range(rng.integers(1, 4)):
        x, side = rng.uniform(-25, 30), rng.choice([-1, 1])
        y = side * (road + curb + 0.5)
        add((x - 0.04, y - 0.04, 0), (x + 0.04, y + 0.04, 2.0), "void", (120, 120, 125))
        add((x - 0.05, y - 0.35, 2.0), (x + 0.05, y + 0.35, 2.7), "traffic_sign",
            rng.choice([(200, 30, 30), (30, 60, 190), (230, 200, 30)]))

    lo, hi, label, color = (np.array(v) for v in zip(*boxes))
    sun = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.5, 1.5)])
    return Scene(lo=lo, hi=hi, label=label.astype(np.int64), color=color, road_half_width=road,
                 lane_width=rng.uniform(2.8, 3.6), curb_width=curb, road_tone=rng.uniform(70, 120),
                 sidewalk_tone=rng.uniform(120, 180), sun=sun / np.linalg.norm(sun),
                 brightness=rng.uniform(0.75, 1.15), noise_sigma=rng.uniform(1.0, 4.0))


# --------------------------------------------------------------------------- ray casting


def _hash_noise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Deterministic value noise in [0, 1) on the integer lattice (a, b)."""
    return np.modf(np.abs(np.sin(a * 12.9898 + b * 78.233) * 43758.5453))[0]


class RayBundle:
    """The rays of every pixel of one camera in the vehicle frame, sorted into square tiles with a
    bounding cone each, so a box is only tested against the tiles it can reach. Depends only on
    the camera, so one bundle serves every frame."""

    def __init__(self, camera, tile: int = 16):
        h, w = camera.height, camera.width
        vv, uu = np.mgrid[0:h, 0:w]
        rays = camera.pixel_to_ray(np.stack([uu, vv], -1).reshape(-1, 2).astype(np.float64))
        ok = np.all(np.isfinite(rays), axis=1)
        rays = np.where(ok[:, None], rays, [0.0, 0.0, 1.0])
        tile_id = (vv // tile).ravel() * ((w + tile - 1) // tile) + (uu // tile).ravel()
        self.order = np.argsort(tile_id, kind="stable")         # tile order <- image order
        self.dirs = (rays @ np.asarray(camera.rotation).T)[self.order]
        self.cam_rays = rays[self.order]
        self.ok = ok[self.order]
        counts = np.bincount(tile_id)
        self.start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.count = counts
        sums = np.add.reduceat(self.dirs, self.start, axis=0)
        self.tile_axis = sums / np.linalg.norm(sums, axis=1, keepdims=True)
        cos = np.einsum("ij,ij->i", self.dirs, np.repeat(self.tile_axis, counts, axis=0))
        self.tile_radius = np.maximum.reduceat(np.arccos(np.clip(cos, -1, 1)), self.start) + 1e-6
        self.origin = np.asarray(camera.translation, dtype=np.float64)
        self.shape = (h, w)

    def candidates(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Indices (tile order) of the pixels whose tile cone meets the box's bounding sphere."""
        centre = (lo + hi) / 2 - self.origin
        radius = np.linalg.norm(hi - lo) / 2
        dist = np.linalg.norm(centre)
        if dist <= radius * 1.0001:
            return np.arange(len(self.dirs))
        alpha = np.arcsin(radius / dist)
        cos_limit = np.cos(np.minimum(alpha + self.tile_radius, np.pi))
        tiles = np.flatnonzero(self.tile_axis @ (centre / dist) >= cos_limit)
        if len(tiles) == 0:
            return np.zeros(0, dtype=np.int64)
        counts = self.count[tiles]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.repeat(self.start[tiles], counts) + offsets


def _intersect_boxes(bundle: RayBundle, lo, hi):
    """Nearest box hit per ray (tile order): distance (N,) (inf if none), box index (N,), hit
    axis (N,) and the sign of the hit face's normal (N,)."""
    n = len(bundle.dirs)
    t_best = np.full(n, np.inf)
    box = np.full(n, -1, dtype=np.int64)
    axis = np.zeros(n, dtype=np.int64)
    o = bundle.origin
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(len(lo)):
            idx = bundle.candidates(lo[j], hi[j])
            if len(idx) == 0:
                continue
            inv = 1.0 / bundle.dirs[idx]
            t1 = (lo[j] - o) * inv
            t2 = (hi[j] - o) * inv
            near = np.fmin(t1, t2)
            t_near = near.max(1)
            t_far = np.fmax(t1, t2).min(1)
            closer = (t_far >= t_near) & (t_near > 1e-3) & (t_near < t_best[idx])
            hit = idx[closer]
            t_best[hit] = t_near[closer]
            box[hit] = j
            axis[hit] = near[closer].argmax(1)
    sign = -np.sign(np.take_along_axis(bundle.dirs, axis[:, None], 1)[:, 0])
    return t_best, box, axis, sign


def render(scene: Scene, camera, rng: np.random.Generator | None = None, bundle: RayBundle | None = None):
    """Ray-cast `scene` through `camera` -> (rgb uint8 (H, W, 3), labels uint8 (H, W),
    depth float32 (H, W), metres along the ray; sky = SKY_DEPTH). Pass the camera's `RayBundle`
    to reuse it across frames."""
    rng = rng or np.random.default_rng(0)
    bundle = bundle or RayBundle(camera)
    h, w = bundle.shape
    dirs, origin = bundle.dirs, bundle.origin

    n = len(dirs)
    depth = np.full(n, SKY_DEPTH)
    label = np.full(n, CLS["void"], dtype=np.int64)
    # Sky: brighter towards the horizon.
    elev = np.clip(dirs[:, 2], 0, 1)[:, None]
    color = (1 - elev) * np.array([200.0, 215, 235]) + elev * np.array([95.0, 140, 210])
    shade = np.ones(n)

    # Ground plane z = 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dirs[:, 2] < -1e-9, -origin[2] / dirs[:, 2], np.inf)
    t_box, box, axis, sign = _intersect_boxes(bundle, scene.lo, scene.hi)

    ground = np.isfinite(t_ground) & (t_ground < t_box)
    p = origin + t_ground[ground, None] * dirs[ground]
    x, y = p[:, 0], np.abs(p[:, 1])
    road, curb = scene.road_half_width, scene.road_half_width + scene.curb_width
    g_label = np.where(y < road, CLS["road"], np.where(y < curb, CLS["curb"], CLS["void"]))
    grain = _hash_noise(np.floor(p[:, 0] * 8), np.floor(p[:, 1] * 8))
    tone = np.where(y < road, scene.road_tone + 18 * (grain - 0.5),
                    np.where(y < curb, 185.0, scene.sidewalk_tone + 25 * (grain - 0.5)))
    # Paving joints on the sidewalk.
    joints = (y >= curb) & ((np.mod(p[:, 0], 1.2) < 0.05) | (np.mod(p[:, 1], 1.2) < 0.05))
    tone = np.where(joints, tone * 0.75, tone)
    # Lane marks: dashed lines between lanes, solid lines near the edges.
    lane_y = np.arange(scene.lane_width / 2, road - 0.5, scene.lane_width)
    dist_dash = np.min(np.abs(np.abs(p[:, 1])[:, None] - lane_y[None, :]), axis=1) if len(lane_y) else np.inf
    dashed = (dist_dash < 0.08) & (np.mod(x, 6.0) < 3.0)
    solid = np.abs(y - (road - 0.3)) < 0.08
    centre = (np.abs(p[:, 1]) < 0.08) & (np.mod(x, 6.0) < 3.0) & (road > 5.5)
    mark = (y < road) & (dashed | solid | centre)
    g_label = np.where(mark, CLS["lanemarks"], g_label)
    tone = np.where(mark, 235.0, tone)
    label[ground] = g_label
    depth[ground] = t_ground[ground]
    color[ground] = tone[:, None] * np.array([1.0, 1.0, 1.02])
    # Light falls on the ground from the sun.
    shade[ground] = 0.55 + 0.45 * max(scene.sun[2], 0.0)

    hit = (box >= 0) & ~ground & np.isfinite(t_box)
    b = box[hit]
    label[hit] = scene.label[b]
    depth[hit] = t_box[hit]
    normal = np.zeros((int(hit.sum()), 3))
    normal[np.arange(len(b)), axis[hit]] = sign[hit]
    lambert = np.clip(normal @ scene.sun, 0, 1)
    shade[hit] = 0.45 + 0.55 * lambert
    # Windows on buildings: a regular grid of darker panes on vertical faces.
    q = origin + t_box[hit, None] * dirs[hit]
    building = (scene.label[b] == CLS["void"]) & (scene.hi[b, 2] > 4) & (axis[hit] != 2)
    along = np.where(axis[hit] == 0, q[:, 1], q[:, 0])
    window = building & (np.mod(along, 3.0) < 1.6) & (np.mod(q[:, 2], 3.2) > 1.2) & (q[:, 2] > 1.5)
    color[hit] = np.where(window[:, None], np.array([60.0, 75, 95]), scene.color[b])

    rgb = color * shade[:, None] * scene.brightness
    # A little vignetting, as real fisheye lenses show.
    theta = np.arccos(np.clip(bundle.cam_rays[:, 2], -1, 1))
    rgb *= (1.0 - 0.25 * (np.where(bundle.ok, theta, 0) / np.pi) ** 2)[:, None]
    depth = np.where(bundle.ok, depth, np.nan)
    # Back from tile order to image order.
    back = np.empty_like(bundle.order)
    back[bundle.order] = np.arange(n)
    rgb = rgb[back].reshape(h, w, 3)
    rgb += scene.noise_sigma * rng.standard_normal(rgb.shape, dtype=np.float32)
    rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return rgb, label[back].astype(np.uint8).reshape(h, w), depth[back].astype(np.float32).reshape(h, w)


# --------------------------------------------------------------------------- writing


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    data = image[..., ::-1] if image.ndim == 3 else image  # cv2 writes BGR
    # Light compression: several times faster to write than the default, files ~20 % larger.
    if not cv2.imwrite(str(path), np.ascontiguousarray(data), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {path}")


def write_annotation_info(root: Path) -> Path:
    path = root / "semantic_annotations" / "seg_annotation_info.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"classes": list(WOODSCAPE_CLASSES), "class_indexes": list(range(len(WOODSCAPE_CLASSES))),
            "class_colors": WOODSCAPE_COLORS.tolist(), "color_scheme": "RGB"}
    path.write_text(json.dumps(info, indent=2))
    return path


_WORKER: dict = {}


def _render_job(args) -> str:
    """Render and write one image (in a worker process; cameras and ray bundles cached there)."""
    root, seed, size, frame, name = args
    key = (size, name)
    if key not in _WORKER:
        cam = rig_cameras(*size)[name]
        _WORKER[key] = (cam, RayBundle(cam))
    cam, bundle = _WORKER[key]
    scene = random_scene(np.random.default_rng([seed, frame]))
    stem = f"{frame:05d}_{name}"
    rgb, labels, depth = render(scene, cam, np.random.default_rng([seed, frame, list(RIG).index(name)]), bundle)
    root = Path(root)
    _write_png(root / "rgb_images" / f"{stem}.png", rgb)
    _write_png(root / "semantic_annotations" / "gtLabels" / f"{stem}.png", labels)
    _write_png(root / "semantic_annotations" / "rgbLabels" / f"{stem}.png", colorize(labels))
    depth_path = root / "depth_maps" / "raw_data" / f"{stem}.npy"
    depth_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(depth_path, depth)
    save_calibration(cam, root / "calibration" / f"{stem}.json")
    return stem


def generate(out, frames: int = 4, seed: int = 0, size: tuple[int, int] = (1280, 966),
             cameras=tuple(RIG), progress: bool = True, workers: int | None = None) -> list[str]:
    """Write `frames` frames of every camera into the WoodScape tree under `out`; return the stems.

    Frame i uses the scene of random state (seed, i): the same frame always looks the same, and
    the four cameras of a frame see the same scene at the same moment. `workers` processes render
    in parallel (default: up to 2, the CPUs this machine has)."""
    from tqdm import tqdm

    root = Path(out)
    unknown = [c for c in cameras if c not in RIG]
    if unknown:
        raise ValueError(f"cameras={list(cameras)}: unknown {unknown}; choose from {list(RIG)}")
    write_annotation_info(root)
    # Camera-major order: each worker keeps reusing the ray bundle of one camera.
    jobs = [(str(root), seed, tuple(size), i, c) for c in cameras for i in range(frames)]
    workers = min(workers or min(2, os.cpu_count() or 1), len(jobs))
    bar = dict(total=len(jobs), desc="synthetic frames", unit="image", **progress_options(progress))
    if workers <= 1:
        stems = [_render_job(job) for job in tqdm(jobs, **bar)]
    else:
        import multiprocessing

        # spawn, not fork: the parent may hold torch/OpenMP thread pools that fork does not copy safely.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            chunk = max(1, len(jobs) // (4 * workers))
            stems = list(tqdm(pool.imap(_render_job, jobs, chunksize=chunk), **bar))
    return sorted(stems)


def ensure_synthetic(root, frames: int = 16, seed: int = 0, size: tuple[int, int] = (640, 483),
                     progress: bool = True) -> bool:
    """Generate synthetic data into `root` when it holds no images yet (the embedded default
    dataset of the demo); return True when it generated. An existing tree is left alone."""
    root = Path(root)
    images = root / "rgb_images"
    if images.is_dir() and any(images.iterdir()):
        return False
    generate(root, frames=frames, seed=seed, size=size, progress=progress)
    return True


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r} must look like 1280x966") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"--size {text!r}: width and height must be at least 16")
    return w, h


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m heal_swin.data.synthetic",
        description="Write synthetic fisheye frames of a four-camera rig in WoodScape's format.",
        epilog="example: python -m heal_swin.data.synthetic --out data/synthetic --frames 8 --size 640x483")
    parser.add_argument("--out", required=True, help="output folder (the WoodScape tree root)")
    parser.add_argument("--frames", type=int, default=4, help="frames per camera (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=_parse_size, default=(1280, 966), help="WxH (default 1280x966)")
    parser.add_argument("--cameras", default=",".join(RIG), help="comma-separated (default FV,RV,MVL,MVR)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f"--frames {args.frames} must be at least 1")
    try:
        stems = generate(args.out, args.frames, args.seed, args.size, tuple(args.cameras.split(",")),
                         workers=args.workers)
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {len(stems)} images to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
