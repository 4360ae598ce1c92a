"""heal-swin-infer: run an exported model over a folder of fisheye images.

    heal-swin-infer --model runs/demo/fv.onnx --images data/synthetic/rgb_images --out runs/demo/infer
    heal-swin-infer --model runs/demo/model.onnx --images 'data/synthetic/rgb_images/*_FV.png' \\
        --calibrations data/synthetic/calibration --out runs/demo/infer
    heal-swin-infer --rig --model runs/demo_rig/rig.onnx --images data/synthetic/rgb_images \\
        --out runs/demo_rig/infer

Graphs with the projection baked in (export.py --with-projection) take the images as they are;
graphs on the sphere need each image's calibration (`<stem>.json` in --calibrations): images are
projected on the CPU, grouped by calibration, and the answers back-projected. Writes per image
`<stem>.npy` (class ids uint8, 255 where the model's faces do not reach; or depth float32 metres,
NaN there) and `<stem>.png` (class colours over the image, or a depth colour map beside it).

A bad image (unreadable, another size, another camera, no calibration) is reported and skipped;
every good image is written, and the exit status is 1 when any was skipped (--strict: stop at
the first, status 2). A graph with the projection baked in serves the one camera it was exported
for: images whose WoodScape file name (`<frame>_<CAM>.png`) or size says another camera are refused.
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
import time
from pathlib import Path

import numpy as np

PROG = "heal-swin-infer"
_STEM = re.compile(r"^.+_(?P<camera>FV|RV|MVL|MVR)$")  # WoodScape file names: <frame>_<camera>


class InferError(Exception):
    pass


def _images(spec: str) -> list[Path]:
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
    else:
        files = sorted(Path(f) for f in glob.glob(spec))
    if not files:
        raise InferError(f"--images {spec}: no PNG/JPEG images found")
    return files


_PAPER = (255, 255, 255)      # legend strip background
_INK = (20, 20, 20)           # text and swatch outlines
_UNCOVERED_DIM = 0.5          # image brightness where the model's faces do not reach


def _text_scale(width: int) -> tuple[float, int]:
    """cv2 font scale and line height in pixels for a strip `width` pixels wide."""
    scale = float(np.clip(width / 900, 0.35, 1.0))
    return scale, int(round(28 * scale)) + 6


def _legend_strip(width: int, entries) -> np.ndarray:
    """uint8 RGB (h, width, 3): a swatch (outlined) and a name per (name, rgb) entry, in rows."""
    import cv2

    scale, line = _text_scale(width)
    box = line - 8
    items, x, y = [], 6, 4
    for name, rgb in entries:
        (tw, _), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        if x > 6 and x + box + 6 + tw > width - 6:
            x, y = 6, y + line
        items.append((x, y, name, rgb))
        x += box + 6 + tw + 18
    strip = np.full((y + line + 4, width, 3), _PAPER, dtype=np.uint8)
    for x, y, name, rgb in items:
        cv2.rectangle(strip, (x, y + 2), (x + box, y + 2 + box), tuple(int(c) for c in rgb), cv2.FILLED)
        cv2.rectangle(strip, (x, y + 2), (x + box, y + 2 + box), _INK, 1)
        cv2.putText(strip, name, (x + box + 6, y + 2 + box - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, _INK, 1,
                    cv2.LINE_AA)
    return strip


def _colour_bar_strip(width: int, left: int, vmax: float) -> np.ndarray:
    """uint8 RGB (h, width, 3): the depth colour map over [0, vmax] m from column `left` to the
    right end, with ticks in metres, and the colour of pixels without depth."""
    import cv2

    from ..projection import views

    scale, line = _text_scale(width - left)
    bar_h = line
    x0, x1 = left + 8, width - 8
    strip = np.full((bar_h + 2 * line + 8, width, 3), _PAPER, dtype=np.uint8)
    strip[4:4 + bar_h, x0:x1] = views.depth_rgb(np.linspace(0.0, vmax, x1 - x0), vmax)[None]
    cv2.rectangle(strip, (x0 - 1, 3), (x1, 4 + bar_h), _INK, 1)  # around the ramp: its ends stay visible
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = int(round(x0 + frac * (x1 - 1 - x0)))
        cv2.line(strip, (x, 4 + bar_h), (x, 8 + bar_h), _INK, 1)
        text = f"{frac * vmax:.3g}" + ("+" if frac == 1.0 else "")
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        tx = int(np.clip(x - tw / 2, 2, width - tw - 2))
        cv2.putText(strip, text, (tx, 10 + bar_h + th), cv2.FONT_HERSHEY_SIMPLEX, scale, _INK, 1, cv2.LINE_AA)
    label = "depth (m)"
    cv2.putText(strip, label, (x0, 2 * line + bar_h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, _INK, 1, cv2.LINE_AA)
    return strip


def _overlay(image: np.ndarray, result: np.ndarray, task: str, class_colors, class_names=()) -> np.ndarray:
    """The PNG written beside each result: class colours over the image and a legend of the
    classes present (segmentation), or the image beside its depth map and a colour bar in metres."""
    from ..data.classes import colorize
    from ..projection import views

    if task == "segmentation":
        colors = colorize(result, class_colors)
        covered = (result != 255)[..., None]
        shown = np.where(covered, (0.45 * image + 0.55 * colors), image * _UNCOVERED_DIM).astype(np.uint8)
        ids = [int(c) for c in np.unique(result) if c != 255 and c < len(class_colors)]
        entries = [(class_names[c] if c < len(class_names) else f"class {c}", class_colors[c]) for c in ids]
        if not covered.all():
            entries.append(("not covered", tuple(int(v * _UNCOVERED_DIM) for v in (160, 160, 160))))
        return np.concatenate([shown, _legend_strip(shown.shape[1], entries)], axis=0)
    vmax = float(np.nanpercentile(result, 95)) if np.isfinite(result).any() else 1.0
    vmax = max(vmax, 1e-6)
    rgb = views.depth_rgb(result, vmax)
    side = np.concatenate([image, rgb], axis=1)
    bar = _colour_bar_strip(side.shape[1], image.shape[1], vmax)
    no_depth = _legend_strip(image.shape[1], [("no depth", tuple(int(c) for c in views.depth_rgb(np.nan, 1.0)))])
    bar[:no_depth.shape[0], :image.shape[1]] = no_depth[:bar.shape[0]]
    return np.concatenate([side, bar], axis=0)


class Runner:
    """Turns fisheye images into per-pixel answers with one predictor, whatever its input kind."""

    def __init__(self, predictor, calibrations: Path | None, rig: bool = False):
        from ..data.classes import WOODSCAPE_CLASSES, WOODSCAPE_COLORS

        self.pred = predictor
        self.meta = predictor.metadata
        self.kind = self.meta.get("input", "sphere")
        self.task = self.meta.get("task", "segmentation")
        self.calibrations = calibrations
        self.colors = WOODSCAPE_COLORS
        self.class_names = tuple(self.meta.get("class_names") or WOODSCAPE_CLASSES)
        self._projectors: dict = {}
        missing = [k for k in ("input", "task") if k not in self.meta]
        if missing:
            raise InferError(f"{predictor.path}: the graph has no heal_swin metadata "
                             f"({', '.join('heal_swin.' + k for k in missing)}): it was not written by export.py, "
                             "or its metadata was stripped; re-export it with export.py")
        if self.kind == "rig" and not rig:
            raise InferError(f"{predictor.path} is a rig graph (cameras {predictor.cameras}): pass --rig, with the "
                             "images of whole frames (<frame>_<CAM>.png)")
        if rig and self.kind != "rig":
            raise InferError(f"--rig: {predictor.path} is not a rig graph (heal_swin.input={self.kind!r}); export "
                             "a rig-trained run with export.py --rig, or leave --rig out")
        if self.kind != "fisheye" and calibrations is None and self.kind == "sphere":
            raise InferError(f"{predictor.path} takes sphere maps: pass --calibrations DIR (the JSON of each "
                             "image), or export with --with-projection")

    def _camera(self, image_path: Path):
        from ..cameras import CalibrationError, load_calibration

        path = self.calibrations / f"{image_path.stem}.json"
        if not path.is_file():
            raise InferError(f"{image_path}: no calibration {path}")
        try:
            return load_calibration(path)
        except CalibrationError as e:
            raise InferError(str(e)) from None

    def _check_camera(self, path: Path, image: np.ndarray) -> None:
        """A fisheye-in graph knows its camera (name, image size): refuse images of another one."""
        w, h = self.meta["image_size"]
        exported = self.meta.get("camera") or "?"
        fix = ("export a graph for that camera (export.py --with-projection --calibration <its JSON>), or use a "
               "sphere-in graph with --calibrations DIR, which projects every image with its own calibration")
        m = _STEM.match(path.stem)
        if m is not None and exported != "?" and m["camera"] != exported:
            raise InferError(f"{path}: the file name says camera {m['camera']}, but {self.pred.path} has the "
                             f"projection of camera {exported} ({w}×{h}) baked in; {fix}")
        if image.shape[:2] != (h, w):
            raise InferError(f"{path}: image is {image.shape[1]}×{image.shape[0]}; {self.pred.path} was "
                             f"exported for camera {exported} at {w}×{h}; {fix}")

    def group_key(self, path: Path, image: np.ndarray):
        if self.kind == "fisheye":
            self._check_camera(path, image)
            if self.calibrations is not None:
                cam = self._camera(path)
                if cam.fingerprint() != self.meta.get("calibration_hash"):
                    raise InferError(f"{path}: its calibration differs from the one baked into {self.pred.path} "
                                     "(export one graph per camera)")
            return "fisheye"
        if self.kind == "flat":
            return ("flat", image.shape[:2])
        cam = self._camera(path)
        return cam.fingerprint(), cam

    def run(self, key, images: list[np.ndarray]) -> list[np.ndarray]:
        if self.kind == "fisheye":
            x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)
            out, covered = self.pred(x)
            return [self._finish(o, c) for o, c in zip(out, covered)]
        mean = np.asarray(self.meta["mean"], np.float32)[:, None]
        std = np.asarray(self.meta["std"], np.float32)[:, None]
        if self.kind == "flat":
            import cv2

            w, h = self.meta["image_size"]
            x = np.stack([(cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA).reshape(-1, 3).T - mean) / std
                          for im in images]).reshape(len(images), 3, h, w)
            out = self.pred(x.astype(np.float32))[0]
            results = []
            for im, o in zip(images, out):
                full = cv2.resize(np.ascontiguousarray(o.transpose(1, 2, 0)), (im.shape[1], im.shape[0]),
                                  interpolation=cv2.INTER_NEAREST).reshape(im.shape[0], im.shape[1], -1)
                results.append(self._finish(full.transpose(2, 0, 1), np.ones(im.shape[:2], bool)))
            return results
        from ..projection import FisheyeToHealpix, HealpixToFisheye

        fingerprint, cam = key
        if fingerprint not in self._projectors:
            args = (cam, self.meta["nside"], self.meta["base_pixels"], self.meta.get("orientation", "camera"))
            self._projectors[fingerprint] = FisheyeToHealpix(*args), HealpixToFisheye(*args)
        proj, back = self._projectors[fingerprint]
        x = np.stack([(proj.project_image(im) - mean) / std * proj.valid_mask for im in images])
        out = self.pred(x.astype(np.float32))[0]
        covered = back.covered_mask
        return [self._finish(back.backproject(o), covered) for o in out]

    def _finish(self, out: np.ndarray, covered: np.ndarray) -> np.ndarray:
        if self.task == "segmentation":
            return np.where(covered, out.argmax(0), 255).astype(np.uint8)
        return np.where(covered, out[0], np.nan).astype(np.float32)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="ONNX file from export.py")
    p.add_argument("--images", required=True, help="folder of fisheye images, or a glob pattern")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--calibrations", type=Path, help="folder with <stem>.json calibrations")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--no-png", action="store_true", help="write only the .npy outputs")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first bad image (default: report it, skip it, go on; exit status 1 at the end)")
    p.add_argument("--rig", action="store_true",
                   help="a rig graph (export.py --rig): group <frame>_<CAM>.png into frames, one call per frame "
                        "(--batch frames per call), each camera's outputs and a Mollweide picture of the sphere")
    return p


_FRAME = re.compile(r"^(?P<frame>.+)_(?P<camera>[^_]+)$")
SPHERE_WIDTH = 720   # the Mollweide picture of a frame's sphere


def _rig_frames(files: list[Path], cameras: list[str]):
    """{frame: {camera: path}} of the complete frames, and [(path, reason)] of the files that are not
    part of one (not a <frame>_<CAM> name, a camera outside the rig, or an incomplete frame)."""
    frames: dict[str, dict[str, Path]] = {}
    refused: list[tuple[Path, str]] = []
    for f in files:
        m = _FRAME.match(f.stem)
        if m is None or m["camera"] not in cameras:
            refused.append((f, f"not an image of the rig's cameras {cameras}: its name is not <frame>_<CAM> with "
                               f"CAM one of them"))
            continue
        frames.setdefault(m["frame"], {})[m["camera"]] = f
    complete = {}
    for frame, got in sorted(frames.items()):
        missing = [c for c in cameras if c not in got]
        if missing:
            refused.append((next(iter(got.values())), f"frame {frame} is incomplete: missing {missing} (has "
                                                       f"{sorted(got)}; the rig graph needs {cameras})"))
        else:
            complete[frame] = {c: got[c] for c in cameras}
    return complete, refused


class RigPictures:
    """The Mollweide picture of a rig frame's fused sphere prediction (class colours or depth)."""

    def __init__(self, meta: dict, colors, class_names):
        from ..cameras import load_calibration
        from ..projection import RigToHealpix, views

        self.meta, self.colors, self.class_names = meta, colors, class_names
        cams = {r["name"]: load_calibration(r["calibration"]) for r in meta["rig"]}
        self.seen = RigToHealpix(cams, meta["nside"], meta["base_pixels"]).valid_mask
        self.view = views.MollweideView(SPHERE_WIDTH)
        self.local, self.face = views.lookup(self.view, meta["nside"], meta["base_pixels"])

    def __call__(self, sphere: np.ndarray, task: str) -> np.ndarray:
        from ..projection import views

        if task == "segmentation":
            ids = sphere.argmax(0)
            rgb = np.asarray(self.colors, dtype=np.float32)[np.minimum(ids, len(self.colors) - 1)] / 255
            present = sorted({int(c) for c in np.unique(ids[self.seen])})
            entries = [(self.class_names[c] if c < len(self.class_names) else f"class {c}", self.colors[c])
                       for c in present if c < len(self.colors)]
        else:
            depth = np.where(self.seen, sphere[0], np.nan)
            vmax = float(np.nanpercentile(depth, 95)) if np.isfinite(depth).any() else 1.0
            rgb = views.depth_rgb(sphere[0], max(vmax, 1e-6)).astype(np.float32) / 255
            entries = [(f"depth 0–{vmax:.3g} m (near bright)", tuple(int(c) for c in views.depth_rgb(0.0, 1.0)))]
        unseen = (0.55, 0.55, 0.55)
        rgba = views.paint(self.local, rgb, self.seen, unseen, (0.3, 0.3, 0.3))
        picture = np.full(rgba.shape[:2] + (3,), _PAPER, dtype=np.float32)
        alpha = rgba[..., 3:]
        picture = (picture * (1 - alpha) + 255 * rgba[..., :3] * alpha).astype(np.uint8)
        entries.append(("no camera sees it", tuple(int(255 * c) for c in unseen)))
        return np.concatenate([picture, _legend_strip(picture.shape[1], entries)], axis=0)


def _rig_main(args, predictor, runner, files, skip) -> tuple[int, int]:
    """--rig: frames of complete camera sets, one predictor call per --batch frames; returns
    (frames written, images written)."""
    import cv2
    from tqdm import tqdm

    from ..data.progress import progress_options
    from ..data.woodscape import DatasetError, read_image
    from ..export import RigInputError

    cameras = predictor.cameras
    frames, refused = _rig_frames(files, cameras)
    for path, reason in refused:
        skip(path, reason)
    pictures = None if args.no_png else RigPictures(runner.meta, runner.colors, runner.class_names)
    done_frames = done_images = 0
    names = list(frames)
    for start in tqdm(range(0, len(names), args.batch), desc="inference", unit="batch", **progress_options()):
        batch = []
        for frame in names[start:start + args.batch]:
            try:
                images = {c: read_image(p) for c, p in frames[frame].items()}
                predictor.check_rig_inputs({c: im.transpose(2, 0, 1) for c, im in images.items()})
            except (DatasetError, RigInputError) as e:
                skip(frames[frame][cameras[0]], f"frame {frame}: {e}")
                continue
            batch.append((frame, images))
        if not batch:
            continue
        out = predictor.run_rig({c: np.stack([im[c] for _, im in batch]).transpose(0, 3, 1, 2) for c in cameras})
        for k, (frame, images) in enumerate(batch):
            for c in cameras:
                result = runner._finish(out[f"output_{c}"][k], out[f"covered_{c}"][k])
                stem = frames[frame][c].stem
                np.save(args.out / f"{stem}.npy", result)
                if pictures is not None:
                    cv2.imwrite(str(args.out / f"{stem}.png"),
                                _overlay(images[c], result, runner.task, runner.colors, runner.class_names)[..., ::-1])
                done_images += 1
            if pictures is not None:
                cv2.imwrite(str(args.out / f"{frame}_sphere.png"), pictures(out["sphere"][k], runner.task)[..., ::-1])
            done_frames += 1
    return done_frames, done_images


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from tqdm import tqdm

    from ..data.progress import progress_options
    from ..data.woodscape import DatasetError, read_image
    from ..export import OnnxPredictor, ProviderError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch {args.batch} must be a positive integer (images per onnxruntime call)")
    failed: list[tuple[Path, str]] = []
    try:
        if not args.model.is_file():
            raise InferError(f"--model {args.model}: no such file")
        files = _images(args.images)
        try:
            predictor = OnnxPredictor(args.model, device=args.device, batch_size=args.batch)
        except ValueError as e:  # a damaged or foreign ONNX file: the message names it and the fix
            raise InferError(str(e)) from None
        runner = Runner(predictor, args.calibrations, rig=args.rig)
        args.out.mkdir(parents=True, exist_ok=True)
        start, done = time.perf_counter(), 0
        pending: dict = {}

        def skip(path: Path, reason: str) -> None:
            if args.strict:
                raise InferError(reason)
            failed.append((path, reason))
            tqdm.write(f"{PROG}: skipped {path}: {reason}", file=sys.stderr)

        def finish(count: int, what: str, unit: str, digits: int, refused: str) -> int:
            """The run's summary on stdout, the refusals on stderr; the exit code (1 where any were refused)."""
            seconds = time.perf_counter() - start
            print(f"{count} {what} in {seconds:.1f} s ({count / max(seconds, 1e-9):.{digits}f} {unit}/s, including "
                  f"reading and writing) on {predictor.providers[0]}; wrote {args.out}")
            if failed:
                print(f"{PROG}: {len(failed)} {refused}", file=sys.stderr)
            return 1 if failed else 0

        if args.rig:
            frames, done = _rig_main(args, predictor, runner, files, skip)
            return finish(frames, f"frames ({done} images)", "frames", 2, f"frames or images of {len(files)} images "
                          "were refused (listed above); the complete frames were written")

        def write(path: Path, image: np.ndarray, result: np.ndarray) -> None:
            nonlocal done
            np.save(args.out / f"{path.stem}.npy", result)
            if not args.no_png:
                import cv2

                cv2.imwrite(str(args.out / f"{path.stem}.png"),
                            _overlay(image, result, runner.task, runner.colors, runner.class_names)[..., ::-1])
            done += 1

        def flush(key):
            batch = pending.pop(key)
            try:
                results = runner.run(key, [image for _, image in batch])
            except (InferError, ValueError) as e:
                if len(batch) == 1:
                    skip(batch[0][0], str(e))
                    return
                # One image spoiled the batch: run them one by one, so the good ones are kept.
                for path, image in batch:
                    pending[key] = [(path, image)]
                    flush(key)
                return
            for (path, image), result in zip(batch, results):
                write(path, image, result)

        try:
            for path in tqdm(files, desc="inference", unit="image", **progress_options()):
                try:
                    image = read_image(path)
                    key = runner.group_key(path, image)  # images of one calibration (or size) run together
                except (InferError, DatasetError) as e:
                    skip(path, str(e))
                    continue
                pending.setdefault(key, []).append((path, image))
                if len(pending[key]) >= args.batch:
                    flush(key)
        finally:  # the good images read so far are written, also when --strict stops at a bad one
            for key in list(pending):
                flush(key)
    except (InferError, ProviderError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return finish(done, "images", "images", 1, f"of {len(files)} images failed and were skipped (listed above); "
                  "--strict stops at the first")


if __name__ == "__main__":
    raise SystemExit(main())
