"""Checkpoints: weights as safetensors, a resume state as a plain dict, every write atomic.

A file is written to a temporary name in the same folder, flushed to disk, and renamed over the
target, so a run killed at any moment leaves the previous complete file in place; a half-written
temporary file never replaces a good checkpoint.

Run directory layout:
    config.yaml             the resolved config
    weights/last.safetensors, weights/best.safetensors
    weights/step-NNNNNN.safetensors   snapshots along training (train.snapshot_every; weights only)
    state/last.pt           optimiser, scheduler, scaler, step, epoch, RNG states, config, best metric
    metrics.jsonl           one JSON object per log line / evaluation
"""

from __future__ import annotations

import os  # noqa: F401  (atomic writes fsync through os; tests patch os.fsync via this module)
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..projection import atomic_write

__all__ = ["CheckpointError", "atomic_write_bytes", "atomic_write_text", "save_weights", "load_weights",
           "save_state", "load_state", "rng_state", "set_rng_state", "unwrap", "remove_stale_temporaries",
           "weights_step", "check_pair", "sync_weights_with_state", "snapshot_name", "is_snapshot_name",
           "list_snapshots", "remove_snapshots_after"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message names the file, what is wrong and what to do."""


def _atomic(path: Path, write) -> None:
    atomic_write(path, write)


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, data)


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


# ----------------------------------------------------------------------------- snapshots along training

_SNAPSHOT = re.compile(r"^step-(?P<step>\d{6,})$")


def snapshot_name(step: int) -> str:
    """The weights name of the snapshot at optimiser step `step`: 'step-000200' (weights/<name>.safetensors)."""
    return f"step-{int(step):06d}"


def is_snapshot_name(name: str) -> bool:
    """Whether `name` names a snapshot ('step-' and at least six digits), not best / last."""
    return bool(_SNAPSHOT.match(str(name)))


def list_snapshots(run_dir) -> list[str]:
    """The snapshot names a run directory holds (weights/step-*.safetensors), in step order."""
    folder = Path(run_dir) / "weights"
    names = [p.name.removesuffix(".safetensors") for p in folder.glob("step-*.safetensors")] if folder.is_dir() else []
    return sorted((n for n in names if is_snapshot_name(n)), key=lambda n: int(_SNAPSHOT.match(n)["step"]))


def remove_snapshots_after(run_dir, step: int) -> list[Path]:
    """Remove the snapshots of steps after `step`: a resumed run restarts from `step`, so later snapshots
    belong to a trajectory the run no longer has (the retrained steps write them again). Returns the paths."""
    removed = []
    for name in list_snapshots(run_dir):
        if int(_SNAPSHOT.match(name)["step"]) > step:
            path = Path(run_dir) / "weights" / f"{name}.safetensors"
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _weights_fix(path: Path) -> str:
    """What to do about a damaged weights file: the other weights of the run, or its resume state."""
    others = [p.name for p in sorted(path.parent.glob("*.safetensors")) if p != path]
    fix = f"use {', '.join(others)} (e.g. --weights / weights=...) instead, " if others else ""
    state = path.parent.parent / "state" / "last.pt"
    if state.is_file():
        fix += f"or resume the run (train.resume=true) to rewrite it from {state}, "
    return fix + "or retrain; export and evaluation need an intact file"


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the weights file is empty (0 bytes; a write was cut short): "
                              f"{_weights_fix(path)}")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises SafetensorError, OSError or ValueError on damaged files
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err}); it is "
                              f"truncated or overwritten: {_weights_fix(path)}") from None


def load_weights(model: torch.nn.Module, path, strict: bool = True) -> torch.nn.Module:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    state = _read_safetensors(path)
    fix = "they belong to another model or config (check model.name and model.kwargs in the run's config.yaml)"
    try:
        missing, unexpected = unwrap(model).load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that differ
        detail = "; ".join(line.strip() for line in str(err).splitlines()[1:4])
        raise CheckpointError(f"{path}: weights do not fit the model ({detail}); {fix}") from None
    if strict and (missing or unexpected):
        raise CheckpointError(f"{path}: weights do not fit the model: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}; {fix}")
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


def _state_fix(path: Path) -> str:
    run = path.parent.parent
    weights = [p.name for p in sorted((run / "weights").glob("*.safetensors"))]
    keep = (f"its weights ({', '.join(weights)} in {run / 'weights'}) still serve --evaluate and export.py; "
            if weights else "")
    return (f"the run cannot be resumed from it: {keep}move {path} aside and start a new run (another run.dir), "
            "or restore the file from a backup")


def load_state(path) -> dict:
    """A resume state written by `save_state`; a damaged file raises CheckpointError with the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no resume state")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the resume state is empty (0 bytes; a write was cut short): "
                              f"{_state_fix(path)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files: RuntimeError, EOFError, UnpicklingError, …
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{path}: not a readable resume state ({type(err).__name__}: {first[:200]}); it is "
                              f"truncated, overwritten or not a heal_swin state: {_state_fix(path)}") from None
    missing = [k for k in ("model", "step") if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: the resume state lacks {missing}; it was not written by train.py: "
                              f"{_state_fix(path)}")
    return state


# ----------------------------------------------------------------------------- run-directory hygiene

# The temporary files `atomic_write` makes beside a target: `.<name>.<random>.tmp`.
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")


def remove_stale_temporaries(run_dir) -> list[Path]:
    """Remove the temporary files that killed writes left in a run directory (in it and in its
    weights/ and state/ folders); returns the paths removed. Call before a run writes anything."""
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / "weights", run_dir / "state"):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.is_file() and _TEMPORARY.match(p.name):
                try:
                    p.unlink()
                except FileNotFoundError:
                    continue
                removed.append(p)
    return removed


def weights_step(path) -> int | None:
    """The optimiser step stored in a weights file's metadata, or None when it has none."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err}): "
                              f"{_weights_fix(path)}") from None
    step = meta.get("step")
    return int(step) if step is not None and str(step).lstrip("-").isdigit() else None


def check_pair(weights_path, state_path) -> int:
    """The step of a (weights, resume state) pair; CheckpointError when the two disagree (a run
    killed between the two writes), with the fix."""
    weights_path, state_path = Path(weights_path), Path(state_path)
    state = load_state(state_path)
    step = weights_step(weights_path)
    if step != state["step"]:
        raise CheckpointError(f"{weights_path} is from step {step} but {state_path} from step {state['step']} "
                              "(the run was stopped between the two writes): resume the run (train.resume=true), "
                              "which rewrites the weights from the resume state")
    return int(step)


def sync_weights_with_state(weights_path, state: dict, metadata: dict | None = None) -> bool:
    """Make `weights_path` hold the resume state's model when it does not (missing, unreadable, or
    from another step): the state is the complete record. Returns True when it rewrote the file."""
    weights_path = Path(weights_path)
    try:
        if weights_path.is_file() and weights_step(weights_path) == state["step"]:
            return False
    except CheckpointError:
        pass
    from safetensors.torch import save

    meta = {k: str(v) for k, v in (metadata or {}).items()}
    meta["step"] = str(state["step"])
    tensors = {k: v.detach().cpu().contiguous() for k, v in state["model"].items()}
    atomic_write_bytes(weights_path, save(tensors, metadata=meta))
    return True
