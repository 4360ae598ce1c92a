"""Typed experiment configuration: dataclass schema + YAML files + dotted command-line overrides.

    cfg = load_config("configs/demo.yaml", ["train.max_steps=50", "data.nside=16"])

Unknown keys and bad values fail before any work, naming the key, the value and the file. The
resolved config is saved in the run directory (`config.yaml`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["Config", "ConfigError", "load_config", "config_from_dict", "save_config", "TASKS"]

TASKS = ("segmentation", "depth")


class ConfigError(ValueError):
    """A bad configuration: the message names the key, the value, the file and the rule."""


@dataclass
class RunConfig:
    dir: str = "runs/demo"                # output directory (checkpoints, logs, metrics, figures)
    seed: int = 0
    deterministic: bool = False           # deterministic algorithms (bitwise-repeatable CPU runs)
    log_every: int = 10                   # optimiser steps between log lines
    device: str = "auto"                  # auto | cpu | cuda | cuda:K
    threads: Optional[int] = None         # torch CPU threads (None: torch's default)
    retain_memory: str = "small"          # CPU: keep freed blocks for reuse: small (≤ 32 MiB) | all | none


@dataclass
class DataConfig:
    root: str = "data/synthetic"
    generate: bool = False                # write synthetic WoodScape-format data if root has none
    synthetic_frames: int = 16
    synthetic_size: list = field(default_factory=lambda: [640, 483])
    nside: int = 32
    base_pixels: Any = "0-7"              # "0-7", "all", or a list of faces
    cameras: Optional[list] = None        # None: FV, RV, MVL, MVR
    orientation: str = "camera"           # camera | vehicle
    rig: bool = False                     # fuse the four cameras of a frame on one sphere
    flat_size: list = field(default_factory=lambda: [640, 768])   # (H, W) of the flat baseline
    split_fractions: list = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int = 0
    group_size: int = 1
    class_names: Optional[list] = None    # target classes; None: the dataset's
    class_merge: Optional[dict] = None    # {source class: target class}
    ignore_index: int = 255
    outside: str = "ignore"               # ignore | void (the original paper's convention)
    mean: list = field(default_factory=lambda: [123.675, 116.28, 103.53])
    std: list = field(default_factory=lambda: [58.395, 57.12, 57.375])
    max_depth: Optional[float] = None
    batch_size: int = 4
    num_workers: int = 0
    sample_cache: Optional[str] = None


@dataclass
class AugmentConfig:
    photometric: list = field(default_factory=list)   # [{name: RandomBrightnessContrast, p: 0.5}, …]
    rotate_deg: float = 0.0
    quarter_turns: bool = False
    hflip: float = 0.0


@dataclass
class ModelConfig:
    name: str = "heal_swin_tiny"
    kwargs: dict = field(default_factory=dict)        # overrides of the variant's defaults


@dataclass
class LossConfig:
    class_weights: Optional[list] = None
    label_smoothing: float = 0.0
    depth: str = "l1"                     # l1 | l2 | silog
    depth_target: str = "log"             # depth | log | inverse


@dataclass
class TrainConfig:
    max_steps: Optional[int] = None       # stop after this many optimiser steps (else epochs)
    epochs: int = 10
    resume: bool = False                  # continue from run.dir's latest state
    optimizer: str = "adamw"              # adamw | adam
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"              # cosine | constant
    warmup_steps: int = 0
    grad_clip: Optional[float] = 1.0
    accumulate: int = 1                   # batches per optimiser step
    amp: str = "none"                     # none | bf16 | fp16 (fp16 on CUDA only)
    eval_every: int = 0                   # optimiser steps between evaluations (0: once per epoch)
    checkpoint_every: int = 0             # optimiser steps between resume states (0: at evaluations)
    metric: str = "miou"                  # the metric that picks the best checkpoint
    metric_mode: str = "max"              # max | min


@dataclass
class EvalConfig:
    split: str = "val"
    backproject: bool = True              # also score in the fisheye image, at full resolution
    figures: int = 3                      # samples drawn as PNGs by --evaluate
    batch_size: Optional[int] = None


@dataclass
class LoggingConfig:
    tensorboard: bool = False
    mlflow: bool = False
    mlflow_uri: Optional[str] = None


@dataclass
class Config:
    task: str = "segmentation"
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


_CHOICES = {
    "task": TASKS,
    "data.orientation": ("camera", "vehicle"),
    "data.outside": ("ignore", "void"),
    "loss.depth": ("l1", "l2", "silog"),
    "loss.depth_target": ("depth", "log", "inverse"),
    "train.optimizer": ("adamw", "adam"),
    "train.schedule": ("cosine", "constant"),
    "train.amp": ("none", "bf16", "fp16"),
    "run.retain_memory": ("small", "all", "none"),
    "train.metric_mode": ("max", "min"),
    "eval.split": ("train", "val", "test", "all"),
}
_POSITIVE = ("data.nside", "data.batch_size", "train.epochs", "train.accumulate", "data.synthetic_frames",
             "run.log_every")


def _get(cfg, dotted: str):
    return OmegaConf.select(cfg, dotted)


def _validate(cfg: DictConfig, source: str) -> None:
    """Value rules OmegaConf's types do not express; every message names key, value, rule, source."""
    def fail(key, rule):
        raise ConfigError(f"{source}: {key}={_get(cfg, key)!r} {rule}")

    for key, choices in _CHOICES.items():
        if _get(cfg, key) not in choices:
            fail(key, f"must be one of {list(choices)}")
    for key in _POSITIVE:
        if _get(cfg, key) is None or _get(cfg, key) < 1:
            fail(key, "must be a positive integer")
    if cfg.train.max_steps is not None and cfg.train.max_steps < 1:
        fail("train.max_steps", "must be a positive integer or null (then train.epochs counts)")
    if cfg.train.lr <= 0:
        fail("train.lr", "must be positive")
    if cfg.data.num_workers < 0:
        fail("data.num_workers", "must be >= 0")
    if len(cfg.data.mean) != 3 or len(cfg.data.std) != 3 or min(cfg.data.std) <= 0:
        fail("data.std", "and data.mean must be three numbers each, std positive (0–255 units)")
    from .. import grid

    try:
        grid.check_nside(cfg.data.nside, "data.nside")
        faces = cfg.data.base_pixels
        grid.check_base_pixels(faces if isinstance(faces, str) else list(faces), "data.base_pixels")
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    from ..models import is_model, list_models

    if not is_model(cfg.model.name):
        raise ConfigError(f"{source}: model.name={cfg.model.name!r} is not a registered model; choose from "
                          f"{list_models()}")


def _merge(base: DictConfig, other, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        raise ConfigError(f"{source}: {key + ': ' if key else ''}{_first_line(err)}") from None


def _first_line(err) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def load_config(path=None, overrides=()) -> DictConfig:
    """Schema defaults <- YAML file <- `key=value` overrides; validated."""
    cfg = OmegaConf.structured(Config)
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = OmegaConf.load(path)
        except Exception as err:  # YAML syntax errors come in several types
            raise ConfigError(f"{path}: cannot parse YAML ({_first_line(err)})") from None
        cfg = _merge(cfg, loaded, str(path))
        source = str(path)
    if overrides:
        where = f"{source} + command line" if path is not None else "command line"
        for override in overrides:  # one at a time, so an error names the override at fault
            if "=" not in override:
                raise ConfigError(f"{where}: {override!r} must look like key=value")
            cfg = _merge(cfg, OmegaConf.from_dotlist([override]), f"{where} ({override})")
        source = where
    _validate(cfg, source)
    return cfg


def config_from_dict(data: dict, source: str = "<dict>") -> DictConfig:
    cfg = _merge(OmegaConf.structured(Config), OmegaConf.create(data), source)
    _validate(cfg, source)
    return cfg


def save_config(cfg: DictConfig, path) -> None:
    from .checkpoint import atomic_write_text

    atomic_write_text(Path(path), OmegaConf.to_yaml(cfg, resolve=True))
