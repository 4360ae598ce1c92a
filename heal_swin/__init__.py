"""heal_swin: fisheye vision on the HEALPix sphere.

    import heal_swin
    from heal_swin import grid, cameras, projection, models
    model = heal_swin.load_model("runs/demo/run")      # a trained run, in eval mode

Layers, lowest first (see the README's diagram): grid < harmonics < cameras < projection <
data, layers < tasks, models < engine, export < tools; a package imports only lower rows. The light
layers load on import; the others on first use.
"""

import importlib

from . import cameras, grid, projection

__version__ = "0.1.0"
__all__ = ["cameras", "data", "engine", "export", "grid", "harmonics", "layers", "load_model", "models", "projection",
           "tasks", "tools", "__version__"]
_LAZY = ("data", "engine", "export", "harmonics", "layers", "models", "tasks", "tools")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'heal_swin' has no attribute {name!r}")


def load_model(run_dir, weights: str = "best", device="cpu"):
    """The trained model of a run directory in eval mode (its config and best, else last, weights)."""
    from .engine import load_model as _load

    return _load(run_dir, weights=weights, device=device)
