"""Memory and disk cache for sampling maps.

Maps depend only on the calibration values, nside, faces, orientation and rotation, so they are
keyed by a hash of those and stored once: data-loader workers and DDP ranks on one machine read
the same file instead of recomputing. Files are written atomically (temporary file, fsync, rename),
so a reader never sees half a map, and concurrent writers of the same key are harmless. Each file
carries a manifest with the dtype, shape and SHA-256 of its arrays: a truncated, edited or
foreign file is reported and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

# Bump when the content or meaning of a cached map changes (3: files carry a checksummed manifest).
MAP_FORMAT_VERSION = 3
_MEMORY: "OrderedDict[str, dict[str, np.ndarray]]" = OrderedDict()
_MEMORY_SIZE = 16


def default_cache_dir() -> Path:
    """$HEAL_SWIN_CACHE, else $XDG_CACHE_HOME/heal_swin, else ~/.cache/heal_swin."""
    env = os.environ.get("HEAL_SWIN_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "heal_swin"


def map_key(kind: str, **fields) -> str:
    """A stable hash of the map's defining values."""
    fields = {"kind": kind, "version": MAP_FORMAT_VERSION, **fields}
    text = json.dumps(fields, sort_keys=True, default=_jsonable)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return np.round(v.astype(np.float64), 12).tolist()
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"cannot hash {type(v).__name__}")


def cached(key: str, build: Callable[[], dict[str, np.ndarray]], cache_dir: str | os.PathLike | None | bool = None,
           expected: dict | None = None) -> dict[str, np.ndarray]:
    """Return the arrays for `key`: from memory, else from disk, else from `build()` (then stored).

    cache_dir: None = the default directory, False = memory only, or a directory. A file on disk is
    used only when its checksums (and the `expected` {name: (shape, dtype)}, when given) hold; any
    other file is reported (CacheWarning), rebuilt and replaced atomically."""
    if key in _MEMORY:
        _MEMORY.move_to_end(key)
        return _MEMORY[key]
    path = None
    if cache_dir is not False:
        path = Path(default_cache_dir() if cache_dir in (None, True) else cache_dir) / "maps" / f"{key}.npz"
    arrays = _read(path, expected) if path is not None else None
    if arrays is None:
        arrays = build()
        if path is not None:
            _write(path, arrays)
    _MEMORY[key] = arrays
    while len(_MEMORY) > _MEMORY_SIZE:
        _MEMORY.popitem(last=False)
    return arrays


def clear_memory_cache() -> None:
    _MEMORY.clear()


def atomic_write(path, data) -> None:
    """Write a file so that it is either the old one or the complete new one, whatever happens:
    `data` (bytes, or a callable that writes into a binary file object) goes to a temporary file
    `.<name>.<random>.tmp` in the same folder, is flushed and fsync'ed, then renamed over `path`.
    A failed write removes its temporary file and re-raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# The entry of a checked .npz that describes the others: format, and per array its dtype, shape and
# SHA-256, so a truncated, edited or shifted file is recognised instead of used.
_MANIFEST = "__manifest__"
_CHECKED_FORMAT = 1


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def save_checked_arrays(path, arrays: dict[str, np.ndarray]) -> None:
    """Arrays as an .npz with a manifest (dtype, shape, SHA-256 of each), written atomically."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    manifest = {"format": _CHECKED_FORMAT,
                "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape), "sha256": _digest(v)}
                           for k, v in arrays.items()}}
    payload = dict(arrays)
    payload[_MANIFEST] = np.frombuffer(json.dumps(manifest, sort_keys=True).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **payload))


class CacheWarning(RuntimeWarning):
    """A cache file was damaged or stale and is rebuilt."""


def load_checked_arrays(path, expected: dict | None = None) -> dict[str, np.ndarray] | None:
    """The arrays of a file written by `save_checked_arrays`, or None when there is none or it cannot be
    trusted (unreadable, truncated, no manifest, an array missing or extra, a dtype, shape or checksum
    that differs from the manifest, or from `expected` = {name: (shape, dtype)}); a damaged file is
    reported with a CacheWarning naming it and the reason, so the caller rebuilds and replaces it."""
    path = Path(path)
    if not path.is_file():
        return None
    reason = _check_file(path, expected)
    if isinstance(reason, dict):
        return reason
    warnings.warn(f"{path}: damaged cache file ({reason}); rebuilding it", CacheWarning, stacklevel=2)
    return None


def _dtype_name(text) -> str:
    try:
        return str(np.dtype(text))
    except TypeError:
        return repr(text)


def _check_file(path: Path, expected):
    """The arrays, or the reason they cannot be used."""
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:  # our handle: closed on errors too
            arrays = {k: f[k] for k in f.files}
    except Exception as err:  # truncated / empty / CRC errors come as BadZipFile, EOFError, OSError, ValueError
        return f"unreadable: {type(err).__name__}: {err}"
    if _MANIFEST not in arrays:
        return "no manifest (an old or foreign file)"
    try:
        manifest = json.loads(arrays.pop(_MANIFEST).tobytes().decode())
        entries = manifest["arrays"]
        if manifest.get("format") != _CHECKED_FORMAT:
            return f"manifest format {manifest.get('format')!r}, expected {_CHECKED_FORMAT}"
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return f"unreadable manifest ({err})"
    if set(entries) != set(arrays):
        return f"holds arrays {sorted(arrays)}, the manifest lists {sorted(entries)}"
    for name, array in arrays.items():
        entry = entries[name]
        if array.dtype.str != entry.get("dtype") or list(array.shape) != entry.get("shape"):
            return (f"{name} is {array.dtype} {tuple(array.shape)}, the manifest says "
                    f"{_dtype_name(entry.get('dtype'))} {tuple(entry.get('shape') or ())}")
        if _digest(array) != entry.get("sha256"):
            return f"{name} does not match its checksum (edited or corrupted)"
    for name, (shape, dtype) in (expected or {}).items():
        if name not in arrays:
            return f"{name} is missing"
        array = arrays[name]
        if tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
            return f"{name} is {array.dtype} {tuple(array.shape)}, expected {np.dtype(dtype)} {tuple(shape)}"
    return arrays


def _read(path: Path, expected=None):
    return load_checked_arrays(path, expected)


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        save_checked_arrays(path, arrays)
    except OSError:
        pass  # a read-only or full cache directory only costs recomputation
