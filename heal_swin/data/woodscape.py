"""WoodScape / SynWoodScape trees: find the files of every sample, load them, check them.

Both the flat layout of the dataset's README (`rgb_images/00000_FV.png`) and the doubled folders
of the real downloads (`rgb_images/rgb_images/00000_FV.png`) are accepted, and so are the
`*(test_set)` folders (`rgb_images(test_set)/…`). Files are matched by stem, `<frame>_<camera>`.

    tree = WoodScapeTree("data/woodscape", cameras=["FV", "RV"])
    tree.samples[0]           # Sample(stem="00000_FV", frame="00000", camera="FV", image=…, …)
    tree.load(tree.samples[0])  # {"image": uint8 (H, W, 3) RGB, "labels": uint8 (H, W), "camera": …}
    tree.check()              # every problem of the tree at once, as a list of messages
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cameras import CalibrationError, load_calibration
from .classes import WOODSCAPE_CLASSES, WOODSCAPE_COLORS

__all__ = ["CAMERAS", "Sample", "WoodScapeTree", "DatasetError", "FrameFiles", "find_frame_files", "frame_stem",
           "resolve_folder", "read_image", "read_labels", "read_depth", "image_size", "check_dataset"]

CAMERAS = ("FV", "RV", "MVL", "MVR")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_STEM = re.compile(r"^(?P<frame>.+)_(?P<camera>FV|RV|MVL|MVR)$")

# Logical folders of a tree -> their path parts below the root.
FOLDERS = {
    "images": ("rgb_images",),
    "calibration": ("calibration",),
    "labels": ("semantic_annotations", "gtLabels"),
    "depth": ("depth_maps", "raw_data"),
}


class DatasetError(ValueError):
    """A broken dataset: the message names the stem, the path and what is wrong."""


@dataclass(frozen=True)
class Sample:
    stem: str
    frame: str
    camera: str
    image: Path
    calibration: Path
    labels: Path | None = None
    depth: Path | None = None


def _candidates(root: Path, parts: tuple[str, ...], test_set: bool) -> list[Path]:
    """The places a logical folder may live: flat, with the top folder doubled (as the real
    downloads unpack), and the same with the top folder's `(test_set)` variant."""
    top, rest = parts[0], parts[1:]
    tops = [f"{top}(test_set)", f"{top} (test_set)"] if test_set else [top]
    out = []
    for t in tops:
        out.append(root.joinpath(t, *rest))
        out.append(root.joinpath(t, t, *rest))
        out.append(root.joinpath(t, top, *rest))
    return out


def resolve_folder(root, kind: str, test_set: bool = False) -> Path | None:
    """The folder for `kind` (images, calibration, labels, depth) under `root` that holds files
    (a doubled layout's outer folder holds only the inner one), or None."""
    for path in _candidates(Path(root), FOLDERS[kind], test_set):
        if path.is_dir() and any(p.is_file() for p in path.iterdir()):
            return path
    return None


@dataclass(frozen=True)
class FrameFiles:
    """The files of one camera of one frame; `labels` is None when the frame has no annotation."""

    image: Path
    calibration: Path
    labels: Path | None = None


def frame_stem(frame_id) -> str:
    """WoodScape frame ids are zero-padded to five digits: 12 and '12' -> '00012'."""
    if isinstance(frame_id, int):
        if frame_id < 0:
            raise ValueError(f"frame_id={frame_id} must be >= 0")
        return f"{frame_id:05d}"
    text = str(frame_id).strip()
    if not text:
        raise ValueError("frame_id is empty")
    return text.zfill(5) if text.isdigit() else text


def find_frame_files(root, frame_id, cameras=CAMERAS) -> dict[str, FrameFiles]:
    """camera name -> FrameFiles of one frame, in any of the layouts (flat, doubled, test set).

    Raises FileNotFoundError naming the frame, the camera and every path tried when an image or a
    calibration is missing (label files are optional)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"WoodScape root {root} is not a directory")
    frame = frame_stem(frame_id)
    cameras = (cameras,) if isinstance(cameras, str) else tuple(cameras)

    def places(kind, stem, suffix):
        return [d / f"{stem}{suffix}" for ts in (False, True) for d in _candidates(root, FOLDERS[kind], ts)]

    found = {}
    for cam in cameras:
        stem = f"{frame}_{cam}"
        paths = {}
        for kind, suffix in (("images", ".png"), ("calibration", ".json"), ("labels", ".png")):
            tried = places(kind, stem, suffix)
            paths[kind] = next((p for p in tried if p.is_file()), None)
            if paths[kind] is None and kind != "labels":
                what = "image" if kind == "images" else kind
                raise FileNotFoundError(f"frame {frame}, camera {cam}: no {what} file found; tried "
                                        + ", ".join(str(p) for p in tried))
        found[cam] = FrameFiles(paths["images"], paths["calibration"], paths["labels"])
    return found


def read_image(path) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"{path}: cannot read the image (missing, empty or not an image)")
    return np.ascontiguousarray(img[..., ::-1])


def read_labels(path) -> np.ndarray:
    """Class ids uint8 (H, W); a 3-channel file must carry the id in every channel."""
    import cv2

    lbl = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lbl is None:
        raise DatasetError(f"{path}: cannot read the label map")
    if lbl.ndim == 3:
        if not (np.array_equal(lbl[..., 0], lbl[..., 1]) and np.array_equal(lbl[..., 0], lbl[..., 2])):
            raise DatasetError(f"{path}: label map has {lbl.shape[2]} different channels; expected class "
                               "ids (gtLabels), not colours (rgbLabels)")
        lbl = lbl[..., 0]
    if lbl.dtype != np.uint8:
        lbl = lbl.astype(np.int64)
    return lbl


def read_depth(path) -> np.ndarray:
    """Depth float32 (H, W), metres along the ray."""
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read the depth map ({err})") from None
    depth = np.squeeze(depth)
    if depth.ndim != 2:
        raise DatasetError(f"{path}: depth map has shape {depth.shape}; expected (H, W)")
    return depth.astype(np.float32, copy=False)


def image_size(path) -> tuple[int, int]:
    """(width, height) of a PNG or JPEG from its header, without decoding the pixels."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
                return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
            if head.startswith(b"\xff\xd8"):
                return _jpeg_size(f, path)
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the file ({err})") from None
    what = "empty" if not head else "not a PNG or JPEG file (or its header is damaged)"
    raise DatasetError(f"{path}: {what}")


def _jpeg_size(f, path: Path) -> tuple[int, int]:
    """Walks the JPEG markers to the first start-of-frame segment, which holds the size."""
    f.seek(2)
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise DatasetError(f"{path}: damaged JPEG header (no frame size before the data)")
        kind = marker[1]
        if kind in (0xD8, 0x01) or 0xD0 <= kind <= 0xD7:  # markers without a length
            continue
        length = int.from_bytes(f.read(2), "big")
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
            body = f.read(5)
            if len(body) < 5:
                raise DatasetError(f"{path}: truncated JPEG header")
            return int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big")
        if length < 2:
            raise DatasetError(f"{path}: damaged JPEG header")
        f.seek(length - 2, 1)


def _index(folder: Path | None, suffixes) -> dict[str, Path]:
    if folder is None:
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in suffixes and p.is_file():
            out.setdefault(p.stem, p)
    return out


class WoodScapeTree:
    """The samples of a WoodScape-format tree, optionally restricted to some cameras.

    kind: "woodscape" (labels required unless `require` says otherwise), "synwoodscape" (depth
    maps too). Samples are the stems that have an image and a calibration; labels and depth are
    attached where present. Class names and colours come from
    `semantic_annotations/seg_annotation_info.json` when present.
    """

    def __init__(self, root, cameras=None, test_set: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset folder does not exist")
        cams = tuple(CAMERAS if cameras is None else cameras)
        unknown = [c for c in cams if c not in CAMERAS]
        if unknown:
            raise DatasetError(f"cameras={list(cams)}: unknown {unknown}; WoodScape cameras are {list(CAMERAS)}")
        self.cameras = cams
        self.test_set = test_set
        self.folders = {k: resolve_folder(self.root, k, test_set) for k in FOLDERS}
        if self.folders["images"] is None:
            tried = ", ".join(str(p) for p in _candidates(self.root, FOLDERS["images"], test_set))
            raise DatasetError(f"{self.root}: no image folder found (tried {tried})")
        images = _index(self.folders["images"], IMAGE_SUFFIXES)
        calibs = _index(self.folders["calibration"], (".json",))
        labels = _index(self.folders["labels"], (".png",))
        depths = _index(self.folders["depth"], (".npy",))
        self.samples: list[Sample] = []
        self.unmatched: list[str] = []
        for stem, image in images.items():
            m = _STEM.match(stem)
            if m is None:
                self.unmatched.append(f"{image}: file name is not <frame>_<FV|RV|MVL|MVR>")
                continue
            if m["camera"] not in cams:
                continue
            self.samples.append(Sample(stem, m["frame"], m["camera"], image,
                                       calibs.get(stem, self._expected("calibration", stem, ".json")),
                                       labels.get(stem), depths.get(stem)))
        self.class_names, self.class_colors = self._annotation_info()

    def _expected(self, kind: str, stem: str, suffix: str) -> Path:
        folder = self.folders[kind] or _candidates(self.root, FOLDERS[kind], self.test_set)[0]
        return folder / f"{stem}{suffix}"

    def _annotation_info(self):
        labels = self.folders["labels"]
        info = labels.parent / "seg_annotation_info.json" if labels is not None else None
        if info is None or not info.is_file():
            return WOODSCAPE_CLASSES, WOODSCAPE_COLORS
        try:
            data = json.loads(info.read_text())
            names = tuple(data["classes"])
            colors = np.asarray(data.get("class_colors", WOODSCAPE_COLORS[:len(names)]), dtype=np.uint8)
        except (ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"{info}: cannot read class names and colours ({err})") from None
        if colors.shape != (len(names), 3):
            raise DatasetError(f"{info}: class_colors has shape {colors.shape}; expected ({len(names)}, 3)")
        return names, colors

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"WoodScapeTree({str(self.root)!r}, samples={len(self)}, cameras={list(self.cameras)})"

    @property
    def frames(self) -> list[str]:
        return sorted({s.frame for s in self.samples})

    def camera(self, sample: Sample):
        try:
            cam = load_calibration(sample.calibration)
        except CalibrationError as err:
            raise DatasetError(f"{sample.stem}: {err}") from None
        except FileNotFoundError:
            raise DatasetError(f"{sample.stem}: calibration file {sample.calibration} is missing") from None
        return cam

    def load(self, sample: Sample, labels: bool = True, depth: bool = False) -> dict:
        """Read one sample: image (RGB uint8), camera, and labels / depth when asked for. Sizes are
        checked against the calibration."""
        cam = self.camera(sample)
        out = {"image": read_image(sample.image), "camera": cam, "stem": sample.stem}
        wanted = [("labels", labels, sample.labels, read_labels), ("depth", depth, sample.depth, read_depth)]
        for key, want, path, reader in wanted:
            if not want:
                continue
            if path is None:
                raise DatasetError(f"{sample.stem}: {key} file is missing (expected "
                                   f"{self._expected(key, sample.stem, '.png' if key == 'labels' else '.npy')})")
            out[key] = reader(path)
        expected = (cam.height, cam.width)
        for key in ("image", "labels", "depth"):
            if key in out and out[key].shape[:2] != expected:
                path = {"image": sample.image, "labels": sample.labels, "depth": sample.depth}[key]
                raise DatasetError(f"{sample.stem}: {path} is {out[key].shape[1]}×{out[key].shape[0]} but "
                                   f"{sample.calibration.name} says {cam.width}×{cam.height}")
        return out

    def _missing(self, kind: str, stem: str) -> str:
        """The problem line of a sample's missing label ("labels") or depth ("depth") file."""
        name, ext = ("label", ".png") if kind == "labels" else ("depth", ".npy")
        return f"{stem}: {name} file {self._expected(kind, stem, ext)} is missing"

    def check(self, labels: bool = True, depth: bool = False, read: bool = True) -> list[str]:
        """Every problem of the tree at once (missing files, unreadable files, size mismatches,
        class ids beyond the class table), one message per problem; an empty list when clean."""
        problems = list(self.unmatched)
        if not self.samples:
            problems.append(f"{self.root}: no samples for cameras {list(self.cameras)}")
        for s in self.samples:
            if not s.calibration.is_file():
                problems.append(f"{s.stem}: calibration file {s.calibration} is missing")
                continue
            if labels and s.labels is None:
                problems.append(self._missing("labels", s.stem))
            if depth and s.depth is None:
                problems.append(self._missing("depth", s.stem))
            if not read:
                continue
            try:
                item = self.load(s, labels=labels and s.labels is not None, depth=depth and s.depth is not None)
            except DatasetError as err:
                problems.append(str(err))
                continue
            if "labels" in item and item["labels"].max() >= len(self.class_names):
                problems.append(f"{s.stem}: {s.labels} holds class id {int(item['labels'].max())}, beyond the "
                                f"{len(self.class_names)} classes of this dataset")
        return problems

    def check_fast(self, labels: bool = True, depth: bool = False) -> list[str]:
        """The problems `check` finds without decoding any image: missing files, empty files,
        unreadable headers, calibrations that do not parse, and image / label / depth sizes (from
        the file headers) that differ from the calibration. One message per problem; [] when clean."""
        problems = list(self.unmatched)
        if not self.samples:
            problems.append(f"{self.root}: no samples for cameras {list(self.cameras)}")
        for s in self.samples:
            if not s.calibration.is_file():
                problems.append(f"{s.stem}: calibration file {s.calibration} is missing")
                continue
            try:
                cam = self.camera(s)
            except DatasetError as err:
                problems.append(str(err))
                continue
            files = [("image", s.image)]
            if labels:
                if s.labels is None:
                    problems.append(self._missing("labels", s.stem))
                else:
                    files.append(("labels", s.labels))
            if depth:
                if s.depth is None:
                    problems.append(self._missing("depth", s.stem))
                else:
                    files.append(("depth", s.depth))
            for kind, path in files:
                try:
                    if kind == "depth":
                        shape = np.squeeze(np.load(path, mmap_mode="r", allow_pickle=False)).shape
                        if len(shape) != 2:
                            raise DatasetError(f"{path}: depth map has shape {shape}; expected (H, W)")
                        w, h = shape[1], shape[0]
                    else:
                        w, h = image_size(path)
                except DatasetError as err:
                    problems.append(f"{s.stem}: {err}")
                    continue
                except (OSError, ValueError) as err:
                    problems.append(f"{s.stem}: {path}: cannot read the depth map ({err})")
                    continue
                if (w, h) != (cam.width, cam.height):
                    problems.append(f"{s.stem}: {path} is {w}×{h} but {s.calibration.name} says "
                                    f"{cam.width}×{cam.height}")
        return problems


def check_dataset(root, cameras=None, task: str = "segmentation", test_set: bool = False, limit: int = 10) -> int:
    """A fast start-up check of a tree (`WoodScapeTree.check_fast`: files, headers, calibrations,
    sizes; no pixels decoded): the number of samples, or a DatasetError listing the first `limit`
    problems, the count, and the full check to run."""
    tree = WoodScapeTree(root, cameras, test_set=test_set)
    problems = tree.check_fast(labels=task == "segmentation", depth=task == "depth")
    if problems:
        shown = "\n  ".join(problems[:limit])
        more = f"\n  … and {len(problems) - limit} more" if len(problems) > limit else ""
        flags = " --depth --no-labels" if task == "depth" else ""
        raise DatasetError(f"{tree.root}: {len(problems)} problem(s) in the dataset:\n  {shown}{more}\n"
                           f"List them all with: python -m heal_swin.data.woodscape {tree.root} --check{flags}")
    return len(tree)


def main(argv=None) -> int:
    """`python -m heal_swin.data.woodscape ROOT --check`: list every problem of a tree at once."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m heal_swin.data.woodscape",
        description="Summarise a WoodScape / SynWoodScape tree; with --check, read every sample and "
                    "list every problem (missing or unreadable files, size mismatches, bad calibration "
                    "fields, class ids beyond the class table). Exit code 1 when there are problems.",
        epilog="examples:\n  python -m heal_swin.data.woodscape data/woodscape --check --cameras FV,RV\n"
               "  python -m heal_swin.data.woodscape data/synwoodscape --check --fast --depth --no-labels",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--check", action="store_true", help="read and verify every sample")
    parser.add_argument("--fast", action="store_true",
                        help="with --check: files, headers, calibrations and sizes only, no pixels decoded "
                             "(what training checks at start-up)")
    parser.add_argument("--depth", action="store_true", help="require depth maps (SynWoodScape)")
    parser.add_argument("--no-labels", action="store_true", help="do not require label maps")
    parser.add_argument("--cameras", default=",".join(CAMERAS))
    parser.add_argument("--test-set", action="store_true", help="read the *(test_set) folders")
    args = parser.parse_args(argv)
    try:
        tree = WoodScapeTree(args.root, args.cameras.split(","), test_set=args.test_set)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{tree.root}: {len(tree)} samples, {len(tree.frames)} frames, cameras {list(tree.cameras)}")
    for kind, folder in tree.folders.items():
        print(f"  {kind:12s} {folder if folder is not None else '(not found)'}")
    print(f"  classes      {len(tree.class_names)}: {', '.join(tree.class_names)}")
    if args.check and args.fast:
        problems = tree.check_fast(labels=not args.no_labels, depth=args.depth)
    else:
        problems = tree.check(labels=not args.no_labels, depth=args.depth, read=args.check)
    for p in problems:
        print(f"problem: {p}")
    print(f"{len(problems)} problem(s)" if problems else "no problems found")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
