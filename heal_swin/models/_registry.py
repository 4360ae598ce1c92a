"""Model registry: `create_model(name, **overrides)`, `list_models()` and `model_info(name)`.

Each variant is registered with what the rest of the program needs to know about it, so nothing
decides by a name prefix: the input domain ("healpix": `(B, C, N)` NESTED maps built from
`nside` and `base_pixels`; "flat": `(B, C, H, W)` images built from `img_size`), the family
(one file per family) and the keyword arguments of a build small enough for a fast test.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

__all__ = ["DOMAINS", "ModelInfo", "register_model", "create_model", "list_models", "is_model", "model_info"]

DOMAINS = ("healpix", "flat")


@dataclass(frozen=True)
class ModelInfo:
    """What a registered variant is.

    name: the registry name; family: the backbone family (its file in `heal_swin/models/`);
    domain: "healpix" or "flat" (see the module docstring); test_kwargs: overrides that build a
    small instance of the variant in well under a second (tests, smoke runs), with its
    resolution (`nside` or `img_size`) included.
    """

    name: str
    family: str
    domain: str
    test_kwargs: Mapping = field(default_factory=dict)
    build: Callable = field(default=None, repr=False, compare=False)


_MODELS: dict[str, ModelInfo] = {}


def register_model(fn: Callable | None = None, *, family: str | None = None, domain: str = "healpix",
                   test_kwargs: Mapping | None = None):
    """Decorator: register a variant under its function name, with its metadata.

        @register_model(family="heal_swin", domain="healpix", test_kwargs=dict(nside=8, ...))
        def heal_swin_tiny(**kwargs): ...

    `family` defaults to the defining module's name (e.g. `heal_swin`), so one file is one family.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain={domain!r} must be one of {DOMAINS}")

    def register(fn: Callable) -> Callable:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        fam = family or fn.__module__.rsplit(".", 1)[-1]
        _MODELS[name] = ModelInfo(name, fam, domain, MappingProxyType(dict(test_kwargs or {})), fn)
        return fn

    return register(fn) if fn is not None else register


def is_model(name: str) -> bool:
    return name in _MODELS


def list_models(pattern: str = "*", *, domain: str | None = None, family: str | None = None) -> list[str]:
    """Registered names matching a shell-style pattern (and a domain / family when given), sorted."""
    return sorted(n for n, info in _MODELS.items() if fnmatch.fnmatch(n, pattern)
                  and (domain is None or info.domain == domain) and (family is None or info.family == family))


def model_info(name: str) -> ModelInfo:
    """The registered metadata of a variant (`ModelInfo`)."""
    if name not in _MODELS:
        raise ValueError(f"model={name!r} is unknown; available: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, **overrides):
    """Build a registered variant; keyword arguments override its defaults
    (e.g. `create_model("heal_swin_tiny", in_chans=3, num_classes=10, nside=64)`)."""
    return model_info(name).build(**overrides)
