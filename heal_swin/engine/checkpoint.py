"""Checkpoints: weights as safetensors, a resume state as a plain dict, every write atomic.

A file is written to a temporary name in the same folder, flushed to disk, and renamed over the
target, so a run killed at any moment leaves the previous complete file in place; a half-written
temporary file never replaces a good checkpoint.

Run directory layout:
    config.yaml             the resolved config
    weights/last.safetensors, weights/best.safetensors
    state/last.pt           optimiser, scheduler, scaler, step, epoch, RNG states, config, best metric
    metrics.jsonl           one JSON object per log line / evaluation
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "save_weights", "load_weights", "save_state",
           "load_state", "rng_state", "set_rng_state", "unwrap"]


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    _atomic(Path(path), lambda f: f.write(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP / torch.compile wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def save_weights(model: torch.nn.Module, path, metadata: dict | None = None) -> None:
    """Parameters and persistent buffers as safetensors (index tables are not persistent)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    atomic_write_bytes(path, save(state, metadata=meta))


def load_weights(model: torch.nn.Module, path, strict: bool = True) -> torch.nn.Module:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    state = load_file(str(path))
    missing, unexpected = unwrap(model).load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise ValueError(f"{path}: weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def rng_state() -> dict:
    """Python, numpy and torch RNG states as tensors and plain values (loadable with weights_only)."""
    py = random.getstate()
    np_state = np.random.get_state()
    out = {
        "python_version": int(py[0]),
        "python_state": torch.tensor(py[1], dtype=torch.int64),
        "python_gauss": py[2] if py[2] is not None else float("nan"),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    gauss = state["python_gauss"]
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()),
                     None if gauss != gauss else gauss))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path, state: dict) -> None:
    """A resume state (plain dict of tensors, numbers, strings, lists, dicts)."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no resume state")
    return torch.load(path, map_location="cpu", weights_only=True)
