"""WoodScape calibration JSON <-> camera objects."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ._base import (
    CalibrationError,
    Camera,
    _fail,
    check_float,
    check_name,
    check_quaternion,
    check_size,
    check_vector,
)
from ._kannala_brandt import KannalaBrandtCamera
from ._radial_poly import RadialPolyCamera

__all__ = ["FV_SAMPLE", "load_calibration", "save_calibration"]

# The sample front-view calibration published with WoodScape, in its JSON layout. Shared: copy
# (copy.deepcopy) before editing.
FV_SAMPLE: dict = {
    "extrinsic": {
        "quaternion": [0.594177, -0.587884, 0.387318, -0.389012],
        "translation": [3.7484, 0.0, 0.66017],
    },
    "intrinsic": {
        "aspect_ratio": 1.0,
        "cx_offset": 3.942,
        "cy_offset": -3.093,
        "height": 966.0,
        "width": 1280.0,
        "k1": 339.749,
        "k2": -31.988,
        "k3": 48.275,
        "k4": -7.201,
        "model": "radial_poly",
        "poly_order": 4,
    },
    "name": "FV",
}

_MODELS = ("radial_poly", "kannala_brandt")


class _Section:
    """Reads fields of one JSON object, naming them ``<section>.<key>`` in errors."""

    def __init__(self, data: dict, section: str, source: str) -> None:
        self.data, self.section, self.source = data, section, source

    def field(self, key: str) -> str:
        return f"{self.section}.{key}"

    def raw(self, key: str, why: str = ""):
        if key not in self.data:
            note = f" ({why})" if why else ""
            raise CalibrationError(f"{self.source}: {self.field(key)} is missing{note}")
        return self.data[key]

    def number(self, key: str, *, positive: bool = False, why: str = "") -> float:
        return check_float(self.raw(key, why), self.field(key), self.source, positive=positive)

    def size(self, key: str) -> int:
        return check_size(self.raw(key), self.field(key), self.source)


def _section(doc: dict, key: str, source: str) -> _Section:
    if key not in doc:
        raise CalibrationError(f"{source}: {key} is missing")
    value = doc[key]
    if not isinstance(value, dict):
        _fail(source, key, value, "must be a JSON object")
    return _Section(value, key, source)


def _read(path) -> tuple[dict, str, str]:
    """(document, source used in messages, default camera name)."""
    if isinstance(path, dict):
        return path, "<dict>", ""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CalibrationError(f"{source}: cannot read calibration file ({reason})") from e
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise CalibrationError(
            f"{source}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg})"
        ) from e
    if not isinstance(doc, dict):
        raise CalibrationError(f"{source}: top level must be a JSON object, got {type(doc).__name__}")
    # WoodScape names files <frame>_<camera>.json, e.g. 00012_FV.json
    stem = Path(source).stem
    default_name = stem.rsplit("_", 1)[1] if "_" in stem else ""
    return doc, source, default_name


def load_calibration(path) -> Camera:
    """Read a WoodScape calibration (JSON file path or an already parsed dict) into a camera.

    ``intrinsic.model`` selects the class: ``radial_poly`` -> RadialPolyCamera (fields
    aspect_ratio > 0, cx_offset, cy_offset, width, height, poly_order in 1..4, k1 > 0 and k2..k4 up
    to poly_order; higher coefficients are ignored) or ``kannala_brandt`` -> KannalaBrandtCamera
    (see its docstring). ``extrinsic`` holds quaternion (x, y, z, w; scalar last, unit to 1e-3) and
    translation (3 numbers). A missing ``name`` defaults to the file stem's camera suffix
    (``00012_FV.json`` -> "FV") or "". Nothing is cached.

    Raises:
        CalibrationError: unreadable file, invalid JSON, or any missing/invalid field; the message
            names the file (``<dict>`` for a dict), the dotted field, the value and the rule.
    """
    doc, source, default_name = _read(path)
    extrinsic = _section(doc, "extrinsic", source)
    intrinsic = _section(doc, "intrinsic", source)

    quaternion = check_quaternion(extrinsic.raw("quaternion"), extrinsic.field("quaternion"), source)
    translation = check_vector(extrinsic.raw("translation"), 3, extrinsic.field("translation"), source)
    name = check_name(doc["name"], "name", source) if "name" in doc else default_name

    model = intrinsic.raw("model")
    if not isinstance(model, str) or model not in _MODELS:
        _fail(source, intrinsic.field("model"), model, f"must be one of {', '.join(map(repr, _MODELS))}")

    width = intrinsic.size("width")
    height = intrinsic.size("height")
    if model == "radial_poly":
        order = intrinsic.raw("poly_order")
        if not isinstance(order, (int, float)) or isinstance(order, bool) or order not in (1, 2, 3, 4):
            _fail(source, intrinsic.field("poly_order"), order, "must be an integer from 1 to 4")
        order = int(order)
        why = f"required for poly_order {order}"
        k = [intrinsic.number(f"k{i}", positive=(i == 1), why=why) for i in range(1, order + 1)]
        camera: Camera = RadialPolyCamera(
            k=tuple(k),
            cx_offset=intrinsic.number("cx_offset"),
            cy_offset=intrinsic.number("cy_offset"),
            width=width,
            height=height,
            aspect_ratio=intrinsic.number("aspect_ratio", positive=True),
            quaternion=quaternion,
            translation=translation,
            name=name,
        )
    else:
        camera = KannalaBrandtCamera(
            fx=intrinsic.number("fx", positive=True),
            fy=intrinsic.number("fy", positive=True),
            cx=intrinsic.number("cx"),
            cy=intrinsic.number("cy"),
            k=tuple(intrinsic.number(f"k{i}") for i in range(1, 5)),
            width=width,
            height=height,
            quaternion=quaternion,
            translation=translation,
            name=name,
        )
    return camera


def save_calibration(cam: Camera, path) -> Path:
    """Write ``cam.to_dict()`` as WoodScape-format JSON (atomically); returns the path."""
    if not isinstance(cam, Camera):
        raise TypeError(f"cam must be a heal_swin.cameras.Camera, got {type(cam).__name__}")
    path = Path(path)
    text = json.dumps(cam.to_dict(), indent=2, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    # temp file + rename so concurrent readers (e.g. data-loader workers) never see half a file
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; calibration files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
