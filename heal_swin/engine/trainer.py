"""Training and evaluation, read top-down: data, model, loss, optimiser -> train_one_epoch ->
evaluate -> main.

One process, or one process per device under `torchrun --nproc_per_node=K train.py …` (DDP: NCCL
on GPUs, gloo on CPUs). Rank 0 alone logs and writes files; metrics are summed over ranks.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..data import FlatDataset, HealpixDataset, check_dataset
from ..data.progress import progress_options
from ..data.synthetic import ensure_synthetic
from ..models import create_model, model_info
from ..tasks import ConfusionMatrix, DepthLoss, DepthMetrics, SegmentationLoss, from_prediction
from .checkpoint import (atomic_write_text, load_state, remove_stale_temporaries, rng_state, save_state,
                         save_weights, set_rng_state, sync_weights_with_state, unwrap)
from .config import ConfigError, check_resume_config, config_faces, save_config
from .memory import retain_freed_memory

__all__ = ["main", "build_datasets", "build_model", "build_loss", "build_optimizer", "train_one_epoch",
           "evaluate", "EpochSampler", "Distributed", "model_domain", "INCIDENCE_RINGS", "incidence_angle",
           "incidence_ring"]


# ----------------------------------------------------------------------------- processes, devices


class Distributed:
    """Rank, world size and device of this process; DDP is set up when torchrun started it."""

    def __init__(self, device: str = "auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        elif device == "cuda":
            device = f"cuda:{self.local_rank}"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"run.device={device!r} but CUDA is not available on this machine")
            torch.cuda.set_device(self.device)
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(tensor)
        return tensor


class EpochSampler(torch.utils.data.Sampler):
    """This rank's share of a seeded permutation per epoch (or the plain order), optionally
    starting part-way into the epoch, so a resumed run sees exactly the remaining samples."""

    def __init__(self, length: int, shuffle: bool, seed: int, rank: int = 0, world: int = 1,
                 drop_last: bool = True):
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world, self.drop_last = rank, world, drop_last
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if self.drop_last:
            order = order[: len(order) - len(order) % self.world]
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        return max(0, len(self._indices()) - self.start)


# ----------------------------------------------------------------------------- building blocks


def model_domain(cfg) -> str:
    """The registered input domain of the run's model: "healpix" or "flat"."""
    return model_info(cfg.model.name).domain


def build_datasets(cfg: DictConfig, splits=("train", "val")) -> dict:
    """The datasets of the run's task and model family (sphere or flat)."""
    d = cfg.data
    common = dict(task=cfg.task, cameras=d.cameras, split_fractions=tuple(d.split_fractions),
                  split_seed=d.split_seed, group_size=d.group_size, class_names=d.class_names,
                  class_merge=OmegaConf.to_container(d.class_merge) if d.class_merge else None,
                  ignore_index=d.ignore_index, mean=tuple(d.mean), std=tuple(d.std), max_depth=d.max_depth,
                  unknown_labels=d.unknown_labels, seed=cfg.run.seed)
    augment = OmegaConf.to_container(cfg.augment)
    out = {}
    for split in splits:
        transform = augment if split == "train" and _has_augmentation(augment) else None
        if model_domain(cfg) == "flat":
            out[split] = FlatDataset(d.root, size=tuple(d.flat_size), split=split, transform=transform, **common)
        else:
            out[split] = HealpixDataset(d.root, nside=d.nside, base_pixels=config_faces(cfg), split=split,
                                        orientation=d.orientation, transform=transform, rig=d.rig,
                                        outside=d.outside, sample_cache=d.sample_cache, **common)
    return out


def _has_augmentation(a: dict) -> bool:
    return bool(a["photometric"] or a["rotate_deg"] or a["quarter_turns"] or a["hflip"])


def _num_outputs(cfg, dataset) -> int:
    return len(dataset.class_names) if cfg.task == "segmentation" else 1


def build_model(cfg: DictConfig, num_outputs: int) -> nn.Module:
    kwargs = dict(OmegaConf.to_container(cfg.model.kwargs) or {})
    kwargs.setdefault("in_chans", 3)
    kwargs.setdefault("num_classes", num_outputs)
    kwargs.setdefault("task", cfg.task)
    if model_domain(cfg) == "flat":
        kwargs.setdefault("img_size", tuple(cfg.data.flat_size))
    else:
        kwargs.setdefault("nside", cfg.data.nside)
        kwargs.setdefault("base_pixels", config_faces(cfg))
    try:
        return create_model(cfg.model.name, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.name={cfg.model.name!r} with {kwargs}: {err}") from None


def build_loss(cfg: DictConfig, num_classes: int) -> nn.Module:
    if cfg.task == "segmentation":
        return SegmentationLoss(num_classes, cfg.loss.class_weights, cfg.data.ignore_index, cfg.loss.label_smoothing)
    return DepthLoss(cfg.loss.depth, cfg.loss.depth_target)


def build_optimizer(cfg: DictConfig, model: nn.Module, total_steps: int):
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

    def factor(step: int) -> float:
        if t.warmup_steps and step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        if t.schedule == "constant":
            return 1.0
        progress = (step - t.warmup_steps) / max(1, total_steps - t.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _autocast(cfg, device: torch.device):
    if cfg.train.amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


# ----------------------------------------------------------------------------- one epoch


def _forward_loss(model, loss_fn, batch, cfg, device):
    x = batch["image"].to(device, non_blocking=True)
    with _autocast(cfg, device):
        out = model(x)
    if cfg.task == "segmentation":
        return loss_fn(out.float(), batch["labels"].to(device))
    return loss_fn(out.float(), batch["depth"].to(device), batch["valid"].to(device))


def train_one_epoch(model, loss_fn, optimizer, scheduler, scaler, loader, cfg, dist: Distributed, state: dict,
                    logger, total_steps: int, on_step=None) -> bool:
    """Runs the epoch's remaining batches; returns False once train.max_steps is reached."""
    from tqdm import tqdm

    model.train()
    accumulate = cfg.train.accumulate
    bar = tqdm(total=len(loader), desc=f"epoch {state['epoch']}", unit="batch", **progress_options(dist.main),
               dynamic_ncols=True, leave=False)
    window_loss, window_n, t0 = 0.0, 0, time.perf_counter()
    for i, batch in enumerate(loader):
        last_micro = (state["batch"] + 1) % accumulate == 0
        sync = nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            loss = _forward_loss(model, loss_fn, batch, cfg, dist.device)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {state['step']}, epoch {state['epoch']}; "
                                         "lower train.lr or enable train.grad_clip")
            scaled = loss / accumulate
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        state["batch"] += 1
        window_loss += loss.item()
        window_n += 1
        bar.update(1)
        if not last_micro:
            continue
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        state["step"] += 1
        bar.set_postfix(loss=f"{loss.item():.4f}", step=f"{state['step']}/{total_steps}")
        if state["step"] % cfg.run.log_every == 0 or state["step"] == total_steps:
            elapsed = time.perf_counter() - t0
            record = {"step": state["step"], "epoch": state["epoch"], "loss": window_loss / window_n,
                      "lr": scheduler.get_last_lr()[0],
                      "samples_per_s": window_n * cfg.data.batch_size * dist.world / max(elapsed, 1e-9)}
            logger.log(record)
            state["losses"].append(record["loss"])
            window_loss, window_n, t0 = 0.0, 0, time.perf_counter()
        if on_step is not None:
            on_step()
        if cfg.train.max_steps is not None and state["step"] >= cfg.train.max_steps:
            bar.close()
            return False
    bar.close()
    return True


# ----------------------------------------------------------------------------- evaluation


# Rings of the incidence angle θ (degrees from the optical axis) that the fisheye metrics are also
# split into: name -> [lo, hi). Names are plain identifiers so they pass as TensorBoard / MLflow
# metric keys; the last ring holds everything beyond 90°, where a flat image is most distorted.
INCIDENCE_RINGS = {"theta_0_30": (0.0, 30.0), "theta_30_60": (30.0, 60.0), "theta_60_90": (60.0, 90.0),
                   "theta_90_plus": (90.0, 180.0)}


def incidence_angle(camera) -> np.ndarray:
    """float64 (H, W): the incidence angle θ in degrees of every pixel centre of `camera`'s image
    (cos θ = the z component of its ray in the camera frame); NaN where the model has no ray."""
    w, h = int(camera.width), int(camera.height)
    vv, uu = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    rays = np.asarray(camera.pixel_to_ray(np.stack([uu, vv], axis=-1).reshape(-1, 2)), dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.degrees(np.arccos(np.clip(rays[:, 2], -1.0, 1.0))).reshape(h, w)


def incidence_ring(camera, rings=INCIDENCE_RINGS) -> np.ndarray:
    """int8 (H, W): the index of the ring of `rings` (name -> [lo, hi) degrees) each pixel of
    `camera`'s image falls in; -1 where it has no ray or lies in no ring."""
    theta = incidence_angle(camera)
    out = np.full(theta.shape, -1, dtype=np.int8)
    for r, (lo, hi) in enumerate(rings.values()):
        out[(theta >= lo) & (theta < hi)] = r
    return out


@torch.no_grad()
def predict(model, batch, cfg, device) -> torch.Tensor:
    """Class ids (segmentation) or metres (depth), (B, N) or (B, H, W)."""
    with _autocast(cfg, device):
        out = model(batch["image"].to(device)).float()
    if cfg.task == "segmentation":
        return out.argmax(1)
    return from_prediction(out[:, 0], cfg.loss.depth_target)


@torch.no_grad()
def evaluate(model, dataset, cfg, dist: Distributed, backproject: bool | None = None, collect=None) -> dict:
    """Metrics on a dataset: on the sphere (or the flat grid), and, with `backproject`, in the
    fisheye image at full resolution, masked to the pixels the chosen faces cover (so sphere and
    flat models are scored on the same pixels); per camera too, and per ring of incidence angle
    (`INCIDENCE_RINGS`, result["fisheye_rings"]: name -> the same figures as result["fisheye"] plus
    "theta_deg" = [lo, hi)), which partition those pixels. `collect(i, batch, pred)` sees every
    prediction (figures)."""
    from tqdm import tqdm

    from ..projection import HealpixToFisheye

    model.eval()
    backproject = cfg.eval.backproject if backproject is None else backproject
    flat = isinstance(dataset, FlatDataset)
    rig = getattr(dataset, "rig", False)
    backproject = backproject and not rig  # a fused rig has no single fisheye to go back to
    faces = config_faces(cfg)
    seg = cfg.task == "segmentation"
    k = len(dataset.class_names) if seg else 0

    def new_metric():
        return (ConfusionMatrix(k, cfg.data.ignore_index, dataset.class_names, dist.device) if seg
                else DepthMetrics(cfg.data.max_depth, dist.device))

    sphere, fisheye = new_metric(), new_metric()
    # Every rank holds every camera's metric, so the sums over ranks line up.
    per_camera = {c: new_metric() for c in dataset.tree.cameras}
    rings = {name: new_metric() for name in INCIDENCE_RINGS}
    sampler = EpochSampler(len(dataset), False, 0, dist.rank, dist.world, drop_last=False)
    # Its own generator: evaluating never moves the global RNG, so resumed runs stay identical.
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.eval.batch_size or cfg.data.batch_size,
                                         sampler=sampler, num_workers=cfg.data.num_workers,
                                         generator=torch.Generator().manual_seed(0))
    back_cache: dict = {}
    ring_cache: dict = {}  # camera fingerprint -> (H, W) ring index, like back_cache
    tree = dataset.tree
    indices = list(iter(sampler))
    seen = 0
    for batch in tqdm(loader, desc="evaluate", unit="batch", leave=False, **progress_options(dist.main)):
        pred = predict(model, batch, cfg, dist.device)
        target = batch["labels" if seg else "depth"].to(dist.device)
        valid = batch["valid"].to(dist.device)
        sphere.update(pred, target, valid)
        if collect is not None:
            collect(indices[seen:seen + len(pred)], batch, pred)
        if backproject:
            for j in range(len(pred)):
                sample = dataset.items[indices[seen + j]]
                item = tree.load(sample, labels=seg, depth=not seg)
                cam = item["camera"]
                if seg:
                    truth = torch.from_numpy(dataset.map_labels(item["labels"], sample.labels))
                else:
                    truth = torch.from_numpy(item["depth"])
                key = cam.fingerprint()
                if key not in back_cache:
                    back_cache[key] = HealpixToFisheye(cam, cfg.data.nside, faces, cfg.data.orientation)
                back = back_cache[key]
                if key not in ring_cache:
                    ring_cache[key] = torch.from_numpy(incidence_ring(cam)).to(dist.device)
                covered = torch.from_numpy(back.covered_mask)
                if flat:  # flat predictions: nearest upsampling to the full image
                    p = torch.nn.functional.interpolate(pred[j][None, None].float(), size=truth.shape,
                                                        mode="nearest")[0, 0]
                    p = p.long() if seg else p
                else:
                    p = back.backproject(pred[j].cpu())
                ok = covered & (torch.isfinite(truth) if not seg else torch.ones_like(covered))
                p_dev, t_dev, ok_dev = p.to(dist.device), truth.to(dist.device), ok.to(dist.device)
                fisheye.update(p_dev, t_dev, ok_dev)
                per_camera[sample.camera].update(p_dev, t_dev, ok_dev)
                for r, m in enumerate(rings.values()):
                    m.update(p_dev, t_dev, ok_dev & (ring_cache[key] == r))
        seen += len(pred)
    if dist.world > 1:
        for m in [sphere, fisheye, *per_camera.values(), *rings.values()]:
            m.all_reduce()
    result = {"split": dataset.split, "samples": len(dataset), "sphere" if not flat else "flat": sphere.summary()}
    if backproject:
        result["fisheye"] = fisheye.summary()
        result["per_camera"] = {c: m.summary() for c, m in per_camera.items()
                                if (m.counts.sum() if seg else m.sums[0]) > 0}
        result["fisheye_rings"] = {name: m.summary() | {"theta_deg": list(INCIDENCE_RINGS[name])}
                                   for name, m in rings.items()}
    if seg:
        result["confusion_matrix"] = sphere.counts.cpu().tolist()
    return result


def headline(result: dict, metric: str) -> float | None:
    """The metric that selects the best checkpoint: fisheye figures when present, else sphere/flat."""
    for key in ("fisheye", "sphere", "flat"):
        if key in result and metric in result[key]:
            return result[key][metric]
    return None


# ----------------------------------------------------------------------------- logging


class Logger:
    """JSON lines in run.dir/metrics.jsonl (+ TensorBoard / MLflow when enabled); rank 0 only."""

    def __init__(self, cfg, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = self.mlflow = None
        if not enabled:
            return
        if cfg.logging.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("logging.tensorboard=true needs the tensorboard extra: "
                                  "pip install -e '.[tensorboard]'") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if cfg.logging.mlflow:
            try:
                import mlflow
            except ImportError:
                raise ConfigError("logging.mlflow=true needs the mlflow extra: pip install -e '.[mlflow]'") from None
            if cfg.logging.mlflow_uri:
                mlflow.set_tracking_uri(cfg.logging.mlflow_uri)
            mlflow.start_run(run_name=run_dir.name)
            mlflow.log_params({k: str(v) for k, v in _flatten(OmegaConf.to_container(cfg)).items()})
            self.mlflow = mlflow

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        numbers = {k: v for k, v in _flatten(record).items() if isinstance(v, (int, float)) and k != "step"}
        step = record.get("step", 0)
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, step)
        if self.mlflow is not None:
            self.mlflow.log_metrics({k.replace("/", "."): v for k, v in numbers.items() if v == v}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        elif not isinstance(v, list):
            out[key] = v
    return out


# ----------------------------------------------------------------------------- main


_RUN_FILES = ("config.yaml", "metrics.jsonl", "weights", "state", "tensorboard")


def _prepare_run_dir(run_dir: Path, cfg, resume: bool) -> None:
    """Rank 0, before anything is written: remove temporaries of killed writes; a new run refuses a
    directory that holds another run's files unless told to replace them (`run.overwrite=true`), or
    unless `train.resume=true` found no state to resume (a run killed before its first checkpoint:
    its log is restarted)."""
    for path in remove_stale_temporaries(run_dir) if run_dir.is_dir() else []:
        print(f"removed {path} (left by a write that was cut short)")
    if resume:
        return
    present = [name for name in _RUN_FILES if (run_dir / name).exists()]
    if not present:
        if cfg.train.resume:
            print(f"starting a new run in {run_dir}")
        return
    if (run_dir / "state" / "last.pt").exists() and not cfg.run.overwrite:
        raise ConfigError(f"run.dir={run_dir} already holds a run; pass train.resume=true to continue it, "
                          "run.overwrite=true to replace it, or choose another run.dir")
    if not (cfg.train.resume or cfg.run.overwrite):
        raise ConfigError(f"run.dir={run_dir} already holds files of another run ({', '.join(present)}); pass "
                          "run.overwrite=true to replace them, or choose another run.dir")
    import shutil

    for name in present:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    print(f"starting a new run in {run_dir} (replaced {', '.join(present)})")


def _truncate_log(path: Path, step: int) -> None:
    """Drop the log lines of steps after `step` (written after the state a run resumes from), so a
    resumed run does not log them twice."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line if line.endswith("\n") else line + "\n" for line in kept))


def _logged_step(line: str) -> float:
    """The step of a log line; a line cut short by a kill (not JSON) counts as after every step."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return math.inf


def _check_compatible(cfg, dist: Distributed) -> None:
    """Incompatible options fail before any work, with the fix in the message."""
    if cfg.train.amp == "fp16" and dist.device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device (a gradient scaler on GPUs); use train.amp=bf16 "
                          "on CPUs")
    if model_domain(cfg) == "flat" and cfg.data.rig:
        raise ConfigError("data.rig=true fuses cameras on the sphere; the flat baseline "
                          f"(model.name={cfg.model.name}) takes one camera image: set data.rig=false")
    import importlib.util

    for logger in ("tensorboard", "mlflow"):
        if cfg.logging[logger] and importlib.util.find_spec(logger) is None:
            raise ConfigError(f"logging.{logger}=true needs the {logger} extra: pip install -e '.[{logger}]'")


def main(cfg: DictConfig) -> dict:
    """Train (or resume) the run described by `cfg`; returns the last evaluation."""
    dist = Distributed(cfg.run.device)
    _check_compatible(cfg, dist)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    if cfg.run.retain_memory != "none" and dist.device.type == "cpu":
        retain_freed_memory(large=cfg.run.retain_memory == "all")
    run_dir = Path(cfg.run.dir)
    if cfg.data.generate and dist.main:
        ensure_synthetic(cfg.data.root, frames=cfg.data.synthetic_frames, seed=cfg.run.seed,
                         size=tuple(cfg.data.synthetic_size))
    dist.barrier()
    if not Path(cfg.data.root).is_dir():
        raise ConfigError(f"data.root={cfg.data.root}: the dataset folder does not exist; unpack WoodScape / "
                          "SynWoodScape there or pass data.root=PATH (see data/README.md), or train on the "
                          "synthetic data: --config configs/demo.yaml, or data.generate=true")
    check_dataset(cfg.data.root, cfg.data.cameras, cfg.task)
    state_path = run_dir / "state" / "last.pt"
    resume = cfg.train.resume and state_path.is_file()
    saved, changes = None, {}
    if resume:
        saved = load_state(state_path)
        changes = check_resume_config(saved.get("config", ""), cfg, state_path)
    if dist.main:
        _prepare_run_dir(run_dir, cfg, resume)
    _seed_everything(cfg.run.seed, cfg.run.deterministic)
    _seed_everything(cfg.run.seed, cfg.run.deterministic)

    datasets = build_datasets(cfg, ("train", cfg.eval.split) if cfg.eval.split != "train" else ("train",))
    train_set = datasets["train"]
    eval_set = datasets.get(cfg.eval.split, train_set)
    num_out = _num_outputs(cfg, train_set)
    model = build_model(cfg, num_out).to(dist.device)
    loss_fn = build_loss(cfg, num_out).to(dist.device)

    sampler = EpochSampler(len(train_set), True, cfg.run.seed, dist.rank, dist.world, drop_last=True)
    batches_per_epoch = len(sampler) // cfg.data.batch_size
    if batches_per_epoch < cfg.train.accumulate:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} × train.accumulate={cfg.train.accumulate} × "
                          f"{dist.world} process(es) needs more than the {len(train_set)} training samples")
    steps_per_epoch = batches_per_epoch // cfg.train.accumulate
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch
    optimizer, scheduler = build_optimizer(cfg, model, total_steps)
    scaler = torch.amp.GradScaler("cuda") if cfg.train.amp == "fp16" else None

    state = {"step": 0, "epoch": 0, "batch": 0, "best": None, "losses": []}
    if resume:
        unwrap(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        state.update({k: saved[k] for k in ("step", "epoch", "batch", "best", "losses")})
        set_rng_state(saved["rng"])
        if dist.main:
            print(f"resuming {run_dir} at step {state['step']} (epoch {state['epoch']}, batch {state['batch']})")
            # a kill between the two checkpoint writes leaves last.safetensors a step ahead
            sync_weights_with_state(run_dir / "weights" / "last.safetensors", saved,
                                    {"model": cfg.model.name, "task": cfg.task})
            _truncate_log(run_dir / "metrics.jsonl", state["step"])
    if dist.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        n_params = sum(p.numel() for p in unwrap(model).parameters())
        print(f"{cfg.model.name}: {n_params:,} parameters; {len(train_set)} training samples, {total_steps} steps "
              f"on {dist.world} × {dist.device}")
    logger = Logger(cfg, run_dir, dist.main)
    if resume and changes:
        logger.log({"event": "resume", "step": state["step"], "changes": changes})

    def checkpoint(result=None):
        if result is not None:
            value = headline(result, cfg.train.metric)
            better = value is not None and (state["best"] is None or
                                            (value > state["best"] if cfg.train.metric_mode == "max"
                                             else value < state["best"]))
            if better:
                state["best"] = value
        if not dist.main:
            return
        meta = {"model": cfg.model.name, "step": state["step"], "task": cfg.task}
        save_weights(model, run_dir / "weights" / "last.safetensors", meta)
        if result is not None and state["best"] == headline(result, cfg.train.metric):
            save_weights(model, run_dir / "weights" / "best.safetensors", meta)
        saved = {"model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "step": state["step"], "epoch": state["epoch"], "batch": state["batch"], "best": state["best"],
                 "losses": list(state["losses"]), "rng": rng_state(),
                 "config": OmegaConf.to_yaml(cfg, resolve=True)}
        if scaler is not None:
            saved["scaler"] = scaler.state_dict()
        save_state(state_path, saved)

    last = {"result": None}

    def run_eval():
        result = evaluate(model, eval_set, cfg, dist)
        result["step"] = state["step"]
        last["result"] = result
        logger.log({"step": state["step"], "eval": result | {"confusion_matrix": None}})
        if dist.main:
            h = headline(result, cfg.train.metric)
            print(f"step {state['step']}: {cfg.eval.split} {cfg.train.metric} = {h:.4f}" if h is not None
                  else f"step {state['step']}: evaluated")
        model.train()
        return result

    def on_step():
        if cfg.train.eval_every and state["step"] % cfg.train.eval_every == 0:
            checkpoint(run_eval())
        elif cfg.train.checkpoint_every and state["step"] % cfg.train.checkpoint_every == 0:
            checkpoint()

    keep_going = state["step"] < total_steps
    while keep_going:
        epoch = state["epoch"]
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch, start=state["batch"] * cfg.data.batch_size)
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=cfg.data.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
            drop_last=True, generator=torch.Generator().manual_seed(cfg.run.seed + epoch),
            pin_memory=dist.device.type == "cuda")
        keep_going = train_one_epoch(model, loss_fn, optimizer, scheduler, scaler, loader, cfg, dist, state, logger,
                                     total_steps, on_step)
        if keep_going or state["batch"] >= batches_per_epoch:
            state["epoch"] += 1
            state["batch"] = 0
        keep_going = keep_going and state["step"] < total_steps
        if not cfg.train.eval_every and keep_going:
            checkpoint(run_eval())
    result = last["result"]
    if result is None or result["step"] != state["step"]:
        result = run_eval()
    checkpoint(result)
    logger.close()
    if dist.main:
        print(f"finished {run_dir}: step {state['step']}, best {cfg.train.metric} = {state['best']}")
    return result
