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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cameras import FV_SAMPLE, RadialPolyCamera, rotation_to_quaternion, save_calibration
from .classes import WOODSCAPE_CLASSES, WOODSCAPE_COLORS, colorize

__all__ = ["RIG", "rig_cameras", "Scene", "random_scene", "render", "generate", "main", "SKY_DEPTH"]

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


def _intersect_boxes(origin, dirs, lo, hi, chunk=32768):
    """Nearest box hit per ray: distance (N,) (inf if none), box index (N,), hit axis (N,) and
    the sign of the hit face's normal (N,)."""
    n = len(dirs)
    t_best = np.full(n, np.inf)
    box = np.full(n, -1, dtype=np.int64)
    axis = np.zeros(n, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        for s in range(0, n, chunk):
            iv = inv[s:s + chunk, None, :]
            t1 = (lo[None] - origin) * iv
            t2 = (hi[None] - origin) * iv
            near = np.fmin(t1, t2)
            far = np.fmax(t1, t2)
            t_near = near.max(-1)
            t_far = far.min(-1)
            hit = (t_far >= t_near) & (t_near > 1e-3)
            t = np.where(hit, t_near, np.inf)
            j = t.argmin(-1)
            rows = np.arange(len(j))
            t_best[s:s + chunk] = t[rows, j]
            box[s:s + chunk] = np.where(np.isfinite(t[rows, j]), j, -1)
            axis[s:s + chunk] = near[rows, j].argmax(-1)
    sign = -np.sign(np.take_along_axis(dirs, axis[:, None], 1)[:, 0])
    return t_best, box, axis, sign


def render(scene: Scene, camera, rng: np.random.Generator | None = None):
    """Ray-cast `scene` through `camera` -> (rgb uint8 (H, W, 3), labels uint8 (H, W),
    depth float32 (H, W), metres along the ray; sky = SKY_DEPTH)."""
    rng = rng or np.random.default_rng(0)
    h, w = camera.height, camera.width
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = camera.pixel_to_ray(np.stack([uu, vv], -1).reshape(-1, 2))
    ok = np.all(np.isfinite(rays), axis=1)
    dirs = np.where(ok[:, None], rays, [0.0, 0.0, 1.0]) @ np.asarray(camera.rotation).T
    origin = np.asarray(camera.translation, dtype=np.float64)

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
    t_box, box, axis, sign = _intersect_boxes(origin, dirs, scene.lo, scene.hi)

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
    theta = np.arccos(np.clip(rays[:, 2], -1, 1))
    rgb *= (1.0 - 0.25 * (np.where(ok, theta, 0) / np.pi) ** 2)[:, None]
    rgb += rng.normal(0.0, scene.noise_sigma, rgb.shape)
    rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    depth = np.where(ok, depth, np.nan).astype(np.float32)
    return rgb.reshape(h, w, 3), label.astype(np.uint8).reshape(h, w), depth.reshape(h, w)


# --------------------------------------------------------------------------- writing


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    data = image[..., ::-1] if image.ndim == 3 else image  # cv2 writes BGR
    if not cv2.imwrite(str(path), np.ascontiguousarray(data)):
        raise OSError(f"could not write {path}")


def write_annotation_info(root: Path) -> Path:
    path = root / "semantic_annotations" / "seg_annotation_info.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"classes": list(WOODSCAPE_CLASSES), "class_indexes": list(range(len(WOODSCAPE_CLASSES))),
            "class_colors": WOODSCAPE_COLORS.tolist(), "color_scheme": "RGB"}
    path.write_text(json.dumps(info, indent=2))
    return path


def generate(out, frames: int = 4, seed: int = 0, size: tuple[int, int] = (1280, 966),
             cameras=tuple(RIG), progress: bool = True) -> list[str]:
    """Write `frames` frames of every camera into the WoodScape tree under `out`; return the stems.

    Frame i uses the scene of random state (seed, i): the same frame always looks the same, and
    the four cameras of a frame see the same scene at the same moment."""
    from tqdm import tqdm

    root = Path(out)
    cams = rig_cameras(*size)
    unknown = [c for c in cameras if c not in cams]
    if unknown:
        raise ValueError(f"cameras={list(cameras)}: unknown {unknown}; choose from {list(cams)}")
    write_annotation_info(root)
    stems = []
    jobs = [(i, c) for i in range(frames) for c in cameras]
    for i, name in tqdm(jobs, desc="synthetic frames", unit="image", disable=not progress):
        scene = random_scene(np.random.default_rng([seed, i]))
        stem = f"{i:05d}_{name}"
        rgb, labels, depth = render(scene, cams[name], np.random.default_rng([seed, i, len(stems)]))
        _write_png(root / "rgb_images" / f"{stem}.png", rgb)
        _write_png(root / "semantic_annotations" / "gtLabels" / f"{stem}.png", labels)
        _write_png(root / "semantic_annotations" / "rgbLabels" / f"{stem}.png", colorize(labels))
        depth_path = root / "depth_maps" / "raw_data" / f"{stem}.npy"
        depth_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(depth_path, depth)
        save_calibration(cams[name], root / "calibration" / f"{stem}.json")
        stems.append(stem)
    return stems


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
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f"--frames {args.frames} must be at least 1")
    try:
        stems = generate(args.out, args.frames, args.seed, args.size, tuple(args.cameras.split(",")))
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {len(stems)} images to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
