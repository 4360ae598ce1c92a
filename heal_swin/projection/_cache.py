"""Memory and disk cache for sampling maps.

Maps depend only on the calibration values, nside, faces, orientation and rotation, so they are
keyed by a hash of those and stored once: data-loader workers and DDP ranks on one machine read
the same file instead of recomputing. Files are written atomically (temporary file + rename), so
a reader never sees half a map, and concurrent writers of the same key are harmless.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

# Bump when the content or meaning of a cached map changes.
MAP_FORMAT_VERSION = 2
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


def cached(key: str, build: Callable[[], dict[str, np.ndarray]],
           cache_dir: str | os.PathLike | None | bool = None) -> dict[str, np.ndarray]:
    """Return the arrays for `key`: from memory, else from disk, else from `build()` (then stored).

    cache_dir: None = the default directory, False = memory only, or a directory."""
    if key in _MEMORY:
        _MEMORY.move_to_end(key)
        return _MEMORY[key]
    path = None
    if cache_dir is not False:
        path = Path(default_cache_dir() if cache_dir in (None, True) else cache_dir) / "maps" / f"{key}.npz"
    arrays = _read(path) if path is not None else None
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


def _read(path: Path):
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError):
        return None  # a damaged file is rebuilt and replaced


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        # A read-only or full cache directory only costs recomputation.
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass
