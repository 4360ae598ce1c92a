"""What a run is made of, built from its config: the datasets of its data source, the model, the loss,
the optimiser and its schedule. The training loop and the evaluation take these objects, not the config.

Data sources (`data.source`): `woodscape` (a WoodScape-format tree, projected onto HEALPix, or resized for
flat models) and `digits` (spheres of handwritten digits, `heal_swin.data.digits`: segmentation, or with
task=classification one digit and one label per sphere). A flat model on a
sphere source runs on the equirectangular image of the sphere (`models.EquirectangularAdapter`).
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..data import FlatDataset, HealpixDataset
from ..grid import parse_base_pixels
from ..models import EquirectangularAdapter, create_model, equirectangular_shape, model_info
from ..tasks import ClassificationLoss, DepthLoss, SegmentationLoss
from .config import ConfigError, config_faces

__all__ = ["DATA_SOURCE_BUILDERS", "build_datasets", "build_model", "build_loss", "build_optimizer", "model_domain",
           "num_outputs", "has_augmentation"]


def model_domain(cfg) -> str:
    """The registered input domain of the run's model: "healpix" or "flat"."""
    return model_info(cfg.model.name).domain


def has_augmentation(augment: dict) -> bool:
    return bool(augment["photometric"] or augment["rotate_deg"] or augment["quarter_turns"] or augment["hflip"])


def _woodscape(cfg: DictConfig, split: str, train: bool):
    d = cfg.data
    common = dict(task=cfg.task, cameras=d.cameras, split_fractions=tuple(d.split_fractions),
                  split_seed=d.split_seed, group_size=d.group_size, class_names=d.class_names,
                  class_merge=OmegaConf.to_container(d.class_merge) if d.class_merge else None,
                  ignore_index=d.ignore_index, mean=tuple(d.mean), std=tuple(d.std), max_depth=d.max_depth,
                  unknown_labels=d.unknown_labels, seed=cfg.run.seed, mount=tuple(d.mount_deg))
    augment = OmegaConf.to_container(cfg.augment)
    transform = augment if train and has_augmentation(augment) else None
    if model_domain(cfg) == "flat":
        return FlatDataset(d.root, size=tuple(d.flat_size), split=split, transform=transform, **common)
    return HealpixDataset(d.root, nside=d.nside, base_pixels=config_faces(cfg), split=split,
                          orientation=d.orientation, transform=transform, rig=d.rig, outside=d.outside,
                          sample_cache=d.sample_cache, **common)


def _digits(cfg: DictConfig, split: str, train: bool):
    from ..data.digits import DigitsDataset

    g = cfg.data.digits
    if split == "all":
        raise ConfigError("eval.split=all: data.source=digits has the splits train, val and test")
    seed = {"train": 1000 + cfg.run.seed, "val": g.seed, "test": g.seed + 1}[split]
    return DigitsDataset(split, spheres=g.train if split == "train" else g.test, nside=cfg.data.nside,
                         base_pixels=config_faces(cfg), digits=tuple(g.digits), half_width=g.half_width,
                         threshold=g.threshold, rotate=g.rotate if split == "train" else g.eval_rotate, seed=seed,
                         task=cfg.task)


# data.source -> (cfg, split, is the training split) -> dataset
DATA_SOURCE_BUILDERS = {"woodscape": _woodscape, "digits": _digits}


def build_datasets(cfg: DictConfig, splits=("train", "val")) -> dict:
    """{split: dataset} of the run's data source, task and model domain; augmentation on "train" only."""
    build = DATA_SOURCE_BUILDERS[cfg.data.source]
    return {split: build(cfg, split, split == "train") for split in splits}


def num_outputs(cfg, dataset) -> int:
    """Output channels of the model: one per class (segmentation, classification), one for depth."""
    return 1 if cfg.task == "depth" else len(dataset.class_names)


def build_model(cfg: DictConfig, num_outputs: int) -> nn.Module:
    """The registered model with the data's shape; on a sphere source a flat model gets the
    equirectangular adapter (its image has as many pixels as the map)."""
    kwargs = dict(OmegaConf.to_container(cfg.model.kwargs) or {})
    flat = model_domain(cfg) == "flat"
    on_sphere = cfg.data.source != "woodscape"
    faces = config_faces(cfg)
    # what the data decide: model.kwargs may repeat these values, never contradict them
    decided = {"in_chans": (1 if cfg.data.source == "digits" else 3, "the data's channels"),
               "num_classes": (num_outputs, "the data's classes" if cfg.task != "depth" else "depth"),
               "task": (cfg.task, "task")}
    if flat and not on_sphere:
        decided["img_size"] = (tuple(cfg.data.flat_size), "data.flat_size")
    elif not flat:
        decided.update(nside=(cfg.data.nside, "data.nside"), base_pixels=(tuple(faces), "data.base_pixels"))
    for key, (value, source) in decided.items():
        given = kwargs.get(key, value)
        same = (tuple(given) == tuple(value) if isinstance(value, tuple) and isinstance(given, (list, tuple))
                else given == value and type(given) is type(value))
        if key == "base_pixels" and not same:
            try:
                same = tuple(parse_base_pixels(given)) == tuple(value)
            except ValueError:
                same = False
        if not same:
            hint = f" or set {source}" if source.startswith(("data.", "task")) else ""
            raise ConfigError(f"model.kwargs.{key}={given!r} contradicts {source} ({value!r}), which decides it: "
                              f"drop model.kwargs.{key}{hint}")
        kwargs[key] = value
    if flat and on_sphere:
        kwargs.setdefault("img_size", equirectangular_shape(cfg.data.nside, faces))
    try:
        model = create_model(cfg.model.name, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.name={cfg.model.name!r} with {kwargs}: {err}") from None
    if flat and on_sphere:
        model = EquirectangularAdapter(model, cfg.data.nside, faces, tuple(kwargs["img_size"]))
    return model


def build_loss(cfg: DictConfig, num_classes: int, class_counts: torch.Tensor | None = None) -> nn.Module:
    """The task's loss; `class_counts` (pixels, or samples for classification, per class of the train split)
    for loss.class_balance."""
    if cfg.task == "depth":
        return DepthLoss(cfg.loss.depth, cfg.loss.depth_target)
    weights = cfg.loss.class_weights
    if cfg.loss.class_balance == "inverse_sqrt_frequency":
        counts = torch.as_tensor(class_counts, dtype=torch.float64)
        w = (counts.sum() / counts.clamp_min(1)).sqrt()
        weights = (w / w.mean()).float().tolist()
    loss = ClassificationLoss if cfg.task == "classification" else SegmentationLoss
    return loss(num_classes, weights, cfg.data.ignore_index, cfg.loss.label_smoothing)


def build_optimizer(cfg: DictConfig, model: nn.Module, total_steps: int):
    """(optimizer, scheduler) of train.optimizer / train.schedule over `total_steps`: a LambdaLR of
    `lr_factor`, and for onecycle also the cycled first beta (`OneCycleMomentum`)."""
    t = cfg.train
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Norms, biases, logit scales and bias tables are not decayed (standard for Swin).
        (no_decay if p.ndim <= 1 or "bias_table" in name or "logit_scale" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas))
    else:  # the original paper's recipe: Adam without weight decay
        opt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=tuple(t.betas))
    if t.schedule == "onecycle":
        return opt, OneCycleMomentum(opt, total_steps, t.warmup_steps)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(t.schedule, total_steps, t.warmup_steps))


def _onecycle(step: int, total_steps: int, warmup_steps: int = 0) -> tuple[float, bool]:
    """(phase, rising) of the one-cycle schedule at `step`: phase rises from 0 to 1 by a half cosine over
    the rise (`warmup_steps`, 10 % of the steps when 0), then falls back to 0 by the end."""
    rise = warmup_steps or max(1, round(0.1 * total_steps))
    if step < rise:
        return (1 - math.cos(math.pi * step / rise)) / 2, True
    progress = min(1.0, (step - rise) / max(1, total_steps - rise))
    return (1 + math.cos(math.pi * progress)) / 2, False


class OneCycleMomentum(torch.optim.lr_scheduler.LambdaLR):
    """torch's OneCycleLR recipe on a LambdaLR: the learning rate of `lr_factor("onecycle", ...)` and the
    momentum (Adam's first beta) cycled the other way, from `max_momentum` down to `base_momentum` while the
    rate rises, and back while it falls. Unlike OneCycleLR, a resumed run may train longer (the schedule is
    recomputed from the config's step count, as LambdaLR's are)."""

    def __init__(self, optimizer, total_steps: int, warmup_steps: int = 0, base_momentum: float = 0.85,
                 max_momentum: float = 0.95):
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.base_momentum, self.max_momentum = base_momentum, max_momentum
        super().__init__(optimizer, lr_factor("onecycle", total_steps, warmup_steps))

    def momentum(self, step: int) -> float:
        phase, _ = _onecycle(step, self.total_steps, self.warmup_steps)
        return self.max_momentum - (self.max_momentum - self.base_momentum) * phase

    def step(self, epoch=None):
        super().step(epoch)
        m = self.momentum(self.last_epoch)
        for group in self.optimizer.param_groups:
            if "betas" in group:
                group["betas"] = (m, *group["betas"][1:])
            elif "momentum" in group:
                group["momentum"] = m


def lr_factor(schedule: str, total_steps: int, warmup_steps: int = 0):
    """step -> the learning rate's factor of train.lr. cosine / constant: linear warm-up over
    `warmup_steps`, then a cosine to 0 or constant; onecycle: torch's OneCycleLR shape (cosine rise from
    lr/25 over `warmup_steps`, 10 % of the steps when 0, then a cosine fall to lr/25e4)."""
    if schedule == "onecycle":
        def onecycle(step: int) -> float:
            phase, rising = _onecycle(step, total_steps, warmup_steps)
            low = 1 / 25 if rising else 1 / 25e4          # OneCycleLR's div_factor and final_div_factor
            return low + (1 - low) * phase
        return onecycle

    def warm_then(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return warm_then
