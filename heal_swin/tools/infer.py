"""heal-swin-infer: run an exported model over a folder of fisheye images.

    heal-swin-infer --model runs/demo/fv.onnx --images data/synthetic/rgb_images --out runs/demo/infer
    heal-swin-infer --model runs/demo/model.onnx --images 'data/synthetic/rgb_images/*_FV.png' \\
        --calibrations data/synthetic/calibration --out runs/demo/infer

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


def _overlay(image: np.ndarray, result: np.ndarray, task: str, class_colors) -> np.ndarray:
    from ..data.classes import colorize

    if task == "segmentation":
        colors = colorize(result, class_colors)
        covered = (result != 255)[..., None]
        return np.where(covered, (0.45 * image + 0.55 * colors), image * 0.5).astype(np.uint8)
    import matplotlib

    d = np.nan_to_num(result, nan=0.0)
    vmax = float(np.nanpercentile(result, 95)) if np.isfinite(result).any() else 1.0
    rgb = (matplotlib.colormaps["magma_r"](np.clip(d / max(vmax, 1e-6), 0, 1))[..., :3] * 255).astype(np.uint8)
    rgb[~np.isfinite(result)] = 40
    return np.concatenate([image, rgb], axis=1)


class Runner:
    """Turns fisheye images into per-pixel answers with one predictor, whatever its input kind."""

    def __init__(self, predictor, calibrations: Path | None):
        from ..data.classes import WOODSCAPE_COLORS

        self.pred = predictor
        self.meta = predictor.metadata
        self.kind = self.meta.get("input", "sphere")
        self.task = self.meta.get("task", "segmentation")
        self.calibrations = calibrations
        self.colors = WOODSCAPE_COLORS
        self._projectors: dict = {}
        missing = [k for k in ("input", "task") if k not in self.meta]
        if missing:
            raise InferError(f"{predictor.path}: the graph has no heal_swin metadata "
                             f"({', '.join('heal_swin.' + k for k in missing)}): it was not written by export.py, "
                             "or its metadata was stripped; re-export it with export.py")
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
    return p


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from tqdm import tqdm

    from ..data.woodscape import DatasetError, read_image
    from ..export import OnnxPredictor, ProviderError

    args = build_parser().parse_args(argv)
    failed: list[tuple[Path, str]] = []
    try:
        if not args.model.is_file():
            raise InferError(f"--model {args.model}: no such file")
        files = _images(args.images)
        try:
            predictor = OnnxPredictor(args.model, device=args.device, batch_size=args.batch)
        except ValueError as e:  # a damaged or foreign ONNX file: the message names it and the fix
            raise InferError(str(e)) from None
        runner = Runner(predictor, args.calibrations)
        args.out.mkdir(parents=True, exist_ok=True)
        start, done = time.perf_counter(), 0
        pending: dict = {}

        def skip(path: Path, reason: str) -> None:
            if args.strict:
                raise InferError(reason)
            failed.append((path, reason))
            tqdm.write(f"{PROG}: skipped {path}: {reason}", file=sys.stderr)

        def write(path: Path, image: np.ndarray, result: np.ndarray) -> None:
            nonlocal done
            np.save(args.out / f"{path.stem}.npy", result)
            if not args.no_png:
                import cv2

                cv2.imwrite(str(args.out / f"{path.stem}.png"),
                            _overlay(image, result, runner.task, runner.colors)[..., ::-1])
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
            for path in tqdm(files, desc="inference", unit="image"):
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
    seconds = time.perf_counter() - start
    print(f"{done} images in {seconds:.1f} s ({done / max(seconds, 1e-9):.1f} images/s, including reading "
          f"and writing) on {predictor.providers[0]}; wrote {args.out}")
    if failed:
        print(f"{PROG}: {len(failed)} of {len(files)} images failed and were skipped (listed above); "
              "--strict stops at the first", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
