"""Model registry: `create_model(name, **overrides)` and `list_models()`."""

from __future__ import annotations

import fnmatch
from typing import Callable

__all__ = ["register_model", "create_model", "list_models", "is_model"]

_MODELS: dict[str, Callable] = {}


def register_model(fn: Callable) -> Callable:
    """Decorator: register a variant under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def is_model(name: str) -> bool:
    return name in _MODELS


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **overrides):
    """Build a registered variant; keyword arguments override its defaults
    (e.g. `create_model("heal_swin_tiny", in_chans=3, num_classes=10, nside=64)`)."""
    if name not in _MODELS:
        raise ValueError(f"model={name!r} is unknown; available: {', '.join(list_models())}")
    return _MODELS[name](**overrides)
