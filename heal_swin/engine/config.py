"""Typed experiment configuration: dataclass schema + YAML files + dotted command-line overrides.

    cfg = load_config("configs/demo.yaml", ["train.max_steps=50", "data.nside=16"])

Unknown keys and bad values fail before any work, naming the key, the value and the file. The
resolved config is saved in the run directory (`config.yaml`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .. import grid
from ..data import TASKS

__all__ = ["Config", "ConfigError", "DATA_SOURCES", "load_config", "config_from_dict", "save_config", "config_faces",
           "resume_differences", "resume_changes", "resume_error_message", "check_resume_config", "TASKS", "MAX_NSIDE"]


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
    overwrite: bool = False               # a new run may replace the run files already in run.dir


@dataclass
class DigitsConfig:
    """The rotated-digits spheres (`data.source: digits`, `heal_swin.data.digits`)."""
    train: int = 400                      # spheres in the train split
    test: int = 100                       # spheres in each of the val and test splits (held-out digits)
    digits: list = field(default_factory=lambda: [3, 5])   # digits per sphere (min, max)
    half_width: float = 0.5               # a digit's half width in the tangent plane (radians)
    threshold: float = 0.3                # intensity above which a pixel carries the digit's class
    rotate: float = 0.0                   # training spheres: fraction of SO(3) they are turned by (augmentation)
    eval_rotate: float = 0.0              # val / test spheres: the same for the held-out spheres
    seed: int = 7                         # val spheres: this seed, test: seed + 1; train: 1000 + run.seed


@dataclass
class DataConfig:
    source: str = "woodscape"             # woodscape (WoodScape-format fisheye trees) | digits (spheres of digits)
    digits: DigitsConfig = field(default_factory=DigitsConfig)
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
    mount_deg: list = field(default_factory=lambda: [0.0, 0.0, 0.0])  # camera turned on its mount: roll, pitch, yaw
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
    unknown_labels: str = "error"         # label ids beyond the class table: error | ignore (counted in the log)
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
    class_balance: str = "none"           # none | inverse_sqrt_frequency (weights from the train split's labels)
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
    schedule: str = "cosine"              # cosine | constant | onecycle (torch's OneCycleLR shape; its rise:
                                          # train.warmup_steps, or 10 % of the steps when 0)
    warmup_steps: int = 0
    grad_clip: Optional[float] = 1.0
    accumulate: int = 1                   # batches per optimiser step
    amp: str = "none"                     # none | bf16 | fp16 (fp16 on CUDA only)
    eval_every: int = 0                   # optimiser steps between evaluations (0: once per epoch)
    checkpoint_every: int = 0             # optimiser steps between resume states (0: at evaluations)
    snapshot_every: Optional[int] = 0     # optimiser steps between weight snapshots, weights/step-NNNNNN.safetensors
                                          # (0 or null: none)
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


DATA_SOURCES = ("woodscape", "digits")

_CHOICES = {
    "task": TASKS,
    "data.source": DATA_SOURCES,
    "loss.class_balance": ("none", "inverse_sqrt_frequency"),
    "data.orientation": ("camera", "vehicle"),
    "data.outside": ("ignore", "void"),
    "data.unknown_labels": ("error", "ignore"),
    "loss.depth": ("l1", "l2", "silog"),
    "loss.depth_target": ("depth", "log", "inverse"),
    "train.optimizer": ("adamw", "adam"),
    "train.schedule": ("cosine", "constant", "onecycle"),
    "train.amp": ("none", "bf16", "fp16"),
    "run.retain_memory": ("small", "all", "none"),
    "train.metric_mode": ("max", "min"),
    "eval.split": ("train", "val", "test", "all"),
}
# key -> (smallest value, whether null is allowed, what 0 / null means when that needs saying)
_INTEGERS = {
    "run.seed": (0, False, ""),
    "run.log_every": (1, False, ""),
    "run.threads": (0, True, " (0 or null: torch's default)"),
    "data.synthetic_frames": (1, False, ""),
    "data.nside": (1, False, ""),
    "data.split_seed": (0, False, ""),
    "data.group_size": (1, False, ""),
    "data.ignore_index": (0, False, ""),
    "data.batch_size": (1, False, ""),
    "data.num_workers": (0, False, " (0: load in the training process)"),
    "data.digits.train": (1, False, ""),
    "data.digits.test": (1, False, ""),
    "data.digits.seed": (0, False, ""),
    "train.max_steps": (1, True, " (null: train.epochs counts)"),
    "train.epochs": (1, False, ""),
    "train.warmup_steps": (0, False, ""),
    "train.accumulate": (1, False, ""),
    "train.eval_every": (0, False, " (0: once per epoch)"),
    "train.checkpoint_every": (0, False, " (0: at every evaluation)"),
    "train.snapshot_every": (0, True, " (0 or null: no snapshots)"),
    "eval.figures": (0, False, ""),
    "eval.batch_size": (1, True, " (null: data.batch_size)"),
}
# The largest nside a run may ask for: 8 faces at 1024 already hold 8.4 M pixels, about seven times
# the pixels of a 1280×966 WoodScape image, and one camera's sampling tables need ≈ 0.5 GiB.
MAX_NSIDE = 1024
# Bytes per sphere pixel of one sample that every run holds whatever the model: the float32 RGB
# map, the int64 label map, the mask, the float32 sampling map (u, v) and the bilinear tables
# (4 int64 indices + 4 float32 weights).
_BYTES_PER_PIXEL = 3 * 4 + 8 + 1 + 2 * 4 + 4 * (8 + 4)


def _get(cfg, dotted: str):
    return OmegaConf.select(cfg, dotted)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def config_faces(cfg) -> tuple[int, ...]:
    """`data.base_pixels` ("0-7", "all" or a list of faces) as the sorted tuple of faces."""
    faces = cfg.data.base_pixels
    return grid.check_base_pixels(faces if isinstance(faces, str) else list(faces), "data.base_pixels")


def _validate(cfg: DictConfig, source: str) -> None:
    """Value rules OmegaConf's types do not express; every message names key, value, rule, source."""
    def fail(key, rule):
        raise ConfigError(f"{source}: {key}={_get(cfg, key)!r} {rule}")

    for key, choices in _CHOICES.items():
        if _get(cfg, key) not in choices:
            fail(key, f"must be one of {list(choices)}")
    for key, (low, nullable, meaning) in _INTEGERS.items():
        value = _get(cfg, key)
        if value is None and nullable:
            continue
        if not _is_int(value) or value < low:
            what = "a positive integer" if low == 1 else f"an integer >= {low}"
            fail(key, f"must be {what}{' or null' if nullable else ''}{meaning}")
    _validate_numbers(cfg, fail, source)
    try:
        grid.check_nside(cfg.data.nside, "data.nside")
        faces = config_faces(cfg)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    if cfg.data.nside > MAX_NSIDE:
        pixels = len(faces) * cfg.data.nside**2
        gib = pixels * _BYTES_PER_PIXEL * cfg.data.batch_size / 2**30
        fail("data.nside", f"must be at most {MAX_NSIDE}: {len(faces)} faces × nside² = {pixels:,} sphere pixels "
                           f"per sample would need ≈ {gib:,.1f} GiB for one batch of {cfg.data.batch_size} "
                           "input maps and sampling tables alone, before the model's activations")
    from ..models import is_model, list_models

    if not is_model(cfg.model.name):
        raise ConfigError(f"{source}: model.name={cfg.model.name!r} is not a registered model; choose from "
                          f"{list_models()}")
    _validate_metric(cfg, fail)


def _validate_numbers(cfg: DictConfig, fail, source: str) -> None:
    """The real-valued keys and the lists of numbers."""
    def number_list(key, length, rule):
        value = _get(cfg, key)
        if value is None or len(value) != length or not all(_is_number(v) for v in value):
            fail(key, f"must be {length} finite numbers{rule}")
        return list(value)

    size = number_list("data.synthetic_size", 2, " (width, height), whole pixels >= 16")
    if not all(_is_int(v) and v >= 16 for v in size):
        fail("data.synthetic_size", "must be (width, height), whole pixels >= 16")
    flat = number_list("data.flat_size", 2, " (height, width), whole pixels >= 8")
    if not all(_is_int(v) and v >= 8 for v in flat):
        fail("data.flat_size", "must be (height, width), whole pixels >= 8")
    fractions = number_list("data.split_fractions", 3, " (train, val, test) in [0, 1] that sum to 1")
    if min(fractions) < 0 or max(fractions) > 1 or abs(sum(fractions) - 1.0) > 1e-6:
        fail("data.split_fractions", "must be (train, val, test), each in [0, 1], summing to 1")
    number_list("data.mean", 3, " (RGB, 0–255 units)")
    if min(number_list("data.std", 3, " (RGB, 0–255 units), each positive")) <= 0:
        fail("data.std", "must be 3 positive numbers (RGB, 0–255 units)")
    if cfg.data.max_depth is not None and not (_is_number(cfg.data.max_depth) and cfg.data.max_depth > 0):
        fail("data.max_depth", "must be a positive number of metres or null (no limit)")
    if cfg.data.class_names is not None:
        names = list(cfg.data.class_names)
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            fail("data.class_names", "must be a non-empty list of distinct class names, or null (the dataset's)")
        if cfg.data.ignore_index < len(names):
            fail("data.ignore_index", f"must not be a class id: data.class_names has {len(names)} classes "
                                      f"(ids 0–{len(names) - 1})")

    from ..data.pose import check_mount

    try:
        check_mount(_get(cfg, "data.mount_deg"))
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    if cfg.data.source != "woodscape" and any(float(v) for v in cfg.data.mount_deg):
        fail("data.mount_deg", "turns a fisheye camera on its mount; data.source=digits has no camera (its "
                               "spheres turn with data.digits.rotate / eval_rotate)")

    _validate_digits(cfg, fail, number_list)

    if not (_is_number(cfg.augment.rotate_deg) and 0 <= cfg.augment.rotate_deg <= 180):
        fail("augment.rotate_deg", "must be in [0, 180] degrees (the largest random turn about the optical axis)")
    if not (_is_number(cfg.augment.hflip) and 0 <= cfg.augment.hflip <= 1):
        fail("augment.hflip", "must be a probability in [0, 1]")
    for i, entry in enumerate(cfg.augment.photometric or []):
        p = entry.get("p", 0.5) if hasattr(entry, "get") else None
        if not (_is_number(p) and 0 <= p <= 1):
            raise ConfigError(f"{source}: augment.photometric[{i}].p={p!r} must be a probability in [0, 1]")

    if not (_is_number(cfg.loss.label_smoothing) and 0 <= cfg.loss.label_smoothing < 1):
        fail("loss.label_smoothing", "must be in [0, 1)")
    if cfg.loss.class_weights is not None:
        weights = list(cfg.loss.class_weights)
        if not weights or not all(_is_number(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            fail("loss.class_weights", "must be non-negative numbers, one per class, not all 0 (or null)")

    t = cfg.train
    if not (_is_number(t.lr) and t.lr > 0):
        fail("train.lr", "must be positive")
    if not (_is_number(t.weight_decay) and t.weight_decay >= 0):
        fail("train.weight_decay", "must be >= 0")
    betas = number_list("train.betas", 2, " (beta1, beta2), each in [0, 1)")
    if not all(0 <= b < 1 for b in betas):
        fail("train.betas", "must be (beta1, beta2), each in [0, 1)")
    if t.grad_clip is not None and not (_is_number(t.grad_clip) and t.grad_clip >= 0):
        fail("train.grad_clip", "must be >= 0 (the largest gradient norm; 0 or null: no clipping)")
    if t.snapshot_every and t.max_steps is not None and t.snapshot_every > t.max_steps:
        fail("train.snapshot_every", f"must be at most train.max_steps={t.max_steps} (else the run writes no "
                                     "snapshot); 0 or null: no snapshots")


def _validate_digits(cfg: DictConfig, fail, number_list) -> None:
    """data.digits.* (checked whatever the source, so a typo never waits for the day it is used), and what a
    digits run cannot combine with."""
    d = cfg.data.digits
    count = number_list("data.digits.digits", 2, " (min, max) digits per sphere, whole numbers, 1 <= min <= max")
    if not all(_is_int(v) for v in count) or not 1 <= count[0] <= count[1]:
        fail("data.digits.digits", "must be (min, max) digits per sphere, whole numbers, 1 <= min <= max")
    if not (_is_number(d.half_width) and 0 < d.half_width < 0.6):
        fail("data.digits.half_width", "must be in (0, 0.6) radians (a gnomonic square well inside a hemisphere)")
    if not (_is_number(d.threshold) and 0 <= d.threshold < 1):
        fail("data.digits.threshold", "must be in [0, 1) (the intensity above which a pixel is labelled)")
    for key in ("rotate", "eval_rotate"):
        if not (_is_number(d[key]) and 0 <= d[key] <= 1):
            fail(f"data.digits.{key}", "must be in [0, 1] (the fraction of SO(3)'s rotation angles; 1 = all)")
    if cfg.data.source != "digits":
        if cfg.loss.class_balance != "none":
            fail("loss.class_balance", "needs the train split's label counts, which only data.source=digits "
                                       "gives today; set loss.class_weights instead")
        if cfg.task == "classification":
            fail("task", f"classification needs data.source=digits (one label per sphere); data.source="
                         f"{cfg.data.source} has per-pixel labels: segmentation or depth")
        return
    if cfg.task not in ("segmentation", "classification"):
        fail("task", "must be segmentation or classification with data.source=digits (the spheres carry class "
                     "labels only)")
    if cfg.task == "classification" and tuple(count) != (1, 1):
        fail("data.digits.digits", f"is {list(count)}; task=classification labels a sphere by its one digit: set "
                                   "data.digits.digits=[1,1]")
    if cfg.data.rig:
        fail("data.rig", "must be false with data.source=digits (there are no cameras to fuse)")
    if cfg.data.class_names is not None:
        fail("data.class_names", "must be null with data.source=digits (its classes are fixed: 11 for "
                                 "segmentation, the 10 digits for classification)")


def _validate_metric(cfg: DictConfig, fail) -> None:
    """train.metric must be a figure the task's evaluation reports, and metric_mode its better direction."""
    from ..tasks import TASK_METRICS

    metrics = TASK_METRICS[cfg.task]
    metric = cfg.train.metric
    if metric not in metrics:
        other = next((task for task, names in TASK_METRICS.items() if metric in names), None)
        hint = (f"is a {other} metric; task={cfg.task} reports" if other is not None
                else f"is not a metric of task={cfg.task}; choose from")
        example = next(iter(metrics))
        fail("train.metric", f"{hint} {list(metrics)} (e.g. train.metric={example} "
                             f"train.metric_mode={metrics[example]})")
    better = metrics[metric]
    if cfg.train.metric_mode != better:
        way = "smaller" if better == "min" else "larger"
        fail("train.metric_mode", f"would keep the worst checkpoint: train.metric={metric} is better when {way}; "
                                  f"set train.metric_mode={better}")


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


# ----------------------------------------------------------------------------- resuming with another config

# Keys that may change when a run is resumed: how long it runs, how often it evaluates, logs and
# checkpoints, where it runs and how its data is read. Every other key changes what is computed
# (data, model, task, loss, augmentation, optimiser, schedule, precision, seed) and is refused.
RESUME_ALLOWED = ("train.max_steps", "train.epochs", "train.resume", "train.eval_every", "train.checkpoint_every",
                  "train.snapshot_every",
                  "run.dir", "run.log_every", "run.overwrite", "run.device", "run.threads", "run.retain_memory",
                  "data.root", "data.generate", "data.num_workers", "data.sample_cache",
                  "eval.figures", "eval.batch_size", "data.digits.eval_rotate", "logging.*")


def flat_config(cfg) -> dict:
    """Dotted key -> value of a config (DictConfig, dict or YAML text), on top of the schema defaults
    (a run saved before a key existed had that key's default)."""
    if isinstance(cfg, str):
        cfg = OmegaConf.create(cfg)
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    out: dict = {}

    def walk(node, prefix):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                walk(value, dotted + ".")
            else:
                out[dotted] = value

    walk(OmegaConf.to_container(OmegaConf.structured(Config)), "")
    walk(dict(cfg), "")
    return out


def _resume_allowed(key: str) -> bool:
    return any(key == rule or (rule.endswith(".*") and key.startswith(rule[:-1])) for rule in RESUME_ALLOWED)


def resume_differences(saved_cfg, new_cfg) -> tuple[list[str], list[str]]:
    """The dotted keys whose values differ between the config a run was saved with and the config it
    is resumed with, as (forbidden, allowed): forbidden keys change what is computed, allowed ones
    (RESUME_ALLOWED: length, cadence, logging, device, data location) may change on resume. Each
    config: a DictConfig, a plain dict or YAML text (the `config` entry of a resume state)."""
    old, new = flat_config(saved_cfg), flat_config(new_cfg)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    forbidden = [k for k in changed if not _resume_allowed(k)]
    allowed = [k for k in changed if _resume_allowed(k)]
    return forbidden, allowed


def resume_changes(saved_cfg, new_cfg, keys) -> dict:
    """{key: [saved value, new value]} for `keys` (e.g. the allowed differences, to record the resume)."""
    old, new = flat_config(saved_cfg), flat_config(new_cfg)
    return {k: [old.get(k), new.get(k)] for k in keys}


def resume_error_message(state_path, saved_cfg, new_cfg, forbidden) -> str:
    """Why a resume is refused: every forbidden difference as `key: old -> new`, and the two fixes."""
    old, new = flat_config(saved_cfg), flat_config(new_cfg)
    def show(flat, k):
        return repr(flat[k]) if k in flat else "(not set)"

    lines = [f"  {k}: {show(old, k)} -> {show(new, k)}" for k in forbidden]
    return (f"{state_path} was saved with another config; these settings change what the run computes and "
            f"cannot change on resume:\n" + "\n".join(lines) + "\n"
            "Resume with the saved values (the run's config.yaml), or start a new run with another run.dir. "
            f"Only {', '.join(RESUME_ALLOWED)} may change on resume.")


def check_resume_config(saved_cfg, new_cfg, state_path) -> dict:
    """One call for a resume: ConfigError (`resume_error_message`) when a setting that changes what is
    computed differs from the saved config; else {key: [saved, new]} of the allowed differences, to
    record as the resume event in the run directory (empty when nothing changed)."""
    forbidden, allowed = resume_differences(saved_cfg, new_cfg)
    if forbidden:
        raise ConfigError(resume_error_message(state_path, saved_cfg, new_cfg, forbidden))
    return resume_changes(saved_cfg, new_cfg, allowed)
