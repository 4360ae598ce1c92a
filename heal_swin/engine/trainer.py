"""Training, read top-down: the run's pieces (`builders`) -> `train_one_epoch` -> `evaluate`
(`evaluation`) -> `main(cfg)`.

One process, or one process per device under `torchrun --nproc_per_node=K train.py …` (DDP: NCCL
on GPUs, gloo on CPUs; `runtime`). Rank 0 alone logs and writes files; metrics are summed over ranks.
Every data source (`data.source`: WoodScape-format fisheye trees, spheres of digits) trains here: this is
the one training loop of the project.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..data import check_dataset
from ..data.progress import progress_options
from ..data.synthetic import ensure_synthetic
from .builders import build_datasets, build_loss, build_model, build_optimizer, model_domain, num_outputs
from .checkpoint import (atomic_write_text, load_state, remove_snapshots_after, remove_stale_temporaries, rng_state,
                         save_state, save_weights, set_rng_state, snapshot_name, sync_weights_with_state, unwrap)
from .config import ConfigError, check_resume_config, save_config
from .evaluation import evaluate_with_config, headline
from .memory import retain_freed_memory
from .runtime import Distributed, EpochSampler, autocast, seed_everything

__all__ = ["main", "TrainState", "train_one_epoch", "forward_loss"]


# ----------------------------------------------------------------------------- one epoch


@dataclass
class TrainState:
    """Where a run stands: optimiser steps, epoch, batches into the epoch, the best headline metric so
    far, the logged losses and the seconds spent training it (every process that trained it, up to its last
    checkpoint: a resumed run adds its parts); saved in every resume state."""
    step: int = 0
    epoch: int = 0
    batch: int = 0
    best: float | None = None
    losses: list = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def forward_loss(model, loss_fn, batch: dict, *, task: str, device, amp: str = "none") -> torch.Tensor:
    """The loss of one batch: labels (segmentation: per pixel; classification: per sample) or depth and its
    validity (depth) are the targets."""
    x = batch["image"].to(device, non_blocking=True)
    with autocast(amp, device):
        out = model(x)
    if task != "depth":
        return loss_fn(out.float(), batch["labels"].to(device))
    return loss_fn(out.float(), batch["depth"].to(device), batch["valid"].to(device))


def train_one_epoch(model, loss_fn, optimizer, scheduler, loader, *, task: str, device, state: TrainState,
                    total_steps: int, accumulate: int = 1, grad_clip: float | None = None, scaler=None,
                    amp: str = "none", max_steps: int | None = None, log=None, log_every: int = 10, world: int = 1,
                    show_progress: bool = True, on_step=None) -> bool:
    """Runs the epoch's remaining batches of `loader`, one optimiser step per `accumulate` batches;
    `log(record)` gets the mean loss, the learning rate and the throughput every `log_every` steps;
    `on_step()` runs after every step (evaluation, checkpoints). Returns False once `max_steps` is reached."""
    from tqdm import tqdm

    model.train()
    bar = tqdm(total=len(loader), desc=f"epoch {state.epoch}", unit="batch", **progress_options(show_progress),
               dynamic_ncols=True, leave=False)
    window_loss, window_n, window_samples, t0 = 0.0, 0, 0, time.perf_counter()
    for batch in loader:
        last_micro = (state.batch + 1) % accumulate == 0
        sync = nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            loss = forward_loss(model, loss_fn, batch, task=task, device=device, amp=amp)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {state.step}, epoch {state.epoch}; "
                                         "lower train.lr or enable train.grad_clip")
            scaled = loss / accumulate
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        state.batch += 1
        window_loss += loss.item()
        window_n += 1
        window_samples += len(batch["image"]) * world
        bar.update(1)
        if not last_micro:
            continue
        if scaler is not None:
            scaler.unscale_(optimizer)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        state.step += 1
        bar.set_postfix(loss=f"{loss.item():.4f}", step=f"{state.step}/{total_steps}")
        if state.step % log_every == 0 or state.step == total_steps:
            elapsed = time.perf_counter() - t0
            record = {"step": state.step, "epoch": state.epoch, "loss": window_loss / window_n,
                      "lr": scheduler.get_last_lr()[0], "samples_per_s": window_samples / max(elapsed, 1e-9)}
            if log is not None:
                log(record)
            state.losses.append(record["loss"])
            window_loss, window_n, window_samples, t0 = 0.0, 0, 0, time.perf_counter()
        if on_step is not None:
            on_step()
        if max_steps is not None and state.step >= max_steps:
            bar.close()
            return False
    bar.close()
    return True


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


def _prepare_data(cfg, dist: Distributed) -> None:
    """A WoodScape-format source: generate the synthetic tree when asked, then check the tree before any
    work. Other sources make their data in memory."""
    if cfg.data.source != "woodscape":
        return
    if cfg.data.generate and dist.main:
        ensure_synthetic(cfg.data.root, frames=cfg.data.synthetic_frames, seed=cfg.run.seed,
                         size=tuple(cfg.data.synthetic_size))
    dist.barrier()
    if not Path(cfg.data.root).is_dir():
        raise ConfigError(f"data.root={cfg.data.root}: the dataset folder does not exist; unpack WoodScape / "
                          "SynWoodScape there or pass data.root=PATH (see data/README.md), or train on the "
                          "synthetic data: --config configs/demo.yaml, or data.generate=true")
    check_dataset(cfg.data.root, cfg.data.cameras, cfg.task)


def main(cfg: DictConfig) -> dict:
    """Train (or resume) the run described by `cfg`; returns the last evaluation, with `train_seconds`: the
    wall time of this call and of the earlier calls it resumed, up to their last checkpoints."""
    started = time.perf_counter()
    dist = Distributed(cfg.run.device)
    _check_compatible(cfg, dist)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    if cfg.run.retain_memory != "none" and dist.device.type == "cpu":
        retain_freed_memory(large=cfg.run.retain_memory == "all")
    run_dir = Path(cfg.run.dir)
    _prepare_data(cfg, dist)
    state_path = run_dir / "state" / "last.pt"
    resume = cfg.train.resume and state_path.is_file()
    saved, changes = None, {}
    if resume:
        saved = load_state(state_path)
        changes = check_resume_config(saved.get("config", ""), cfg, state_path)
    seed_everything(cfg.run.seed, cfg.run.deterministic)

    datasets = build_datasets(cfg, ("train", cfg.eval.split) if cfg.eval.split != "train" else ("train",))
    train_set = datasets["train"]
    eval_set = datasets.get(cfg.eval.split, train_set)
    num_out = num_outputs(cfg, train_set)
    model = build_model(cfg, num_out).to(dist.device)
    counts = train_set.label_counts() if cfg.loss.class_balance != "none" else None
    loss_fn = build_loss(cfg, num_out, counts).to(dist.device)
    if dist.main:       # after the data and the model are built: a setting that cannot work leaves no files
        _prepare_run_dir(run_dir, cfg, resume)

    sampler = EpochSampler(len(train_set), True, cfg.run.seed, dist.rank, dist.world, drop_last=True)
    batches_per_epoch = len(sampler) // cfg.data.batch_size
    if batches_per_epoch < cfg.train.accumulate:
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} × train.accumulate={cfg.train.accumulate} × "
                          f"{dist.world} process(es) needs more than the {len(train_set)} training samples")
    steps_per_epoch = batches_per_epoch // cfg.train.accumulate
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch
    optimizer, scheduler = build_optimizer(cfg, model, total_steps)
    scaler = torch.amp.GradScaler("cuda") if cfg.train.amp == "fp16" else None

    state = TrainState()
    if resume:
        unwrap(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        state = TrainState(**{k: saved[k] for k in ("step", "epoch", "batch", "best", "losses")},
                           seconds=float(saved.get("seconds", 0.0)))     # states written before it was kept: 0
        set_rng_state(saved["rng"])
        if dist.main:
            print(f"resuming {run_dir} at step {state.step} (epoch {state.epoch}, batch {state.batch})")
            # a kill between the two checkpoint writes leaves last.safetensors a step ahead
            sync_weights_with_state(run_dir / "weights" / "last.safetensors", saved,
                                    {"model": cfg.model.name, "task": cfg.task})
            _truncate_log(run_dir / "metrics.jsonl", state.step)
            for path in remove_snapshots_after(run_dir, state.step):
                print(f"removed {path} (after the resumed step {state.step}; the retrained steps write it again)")
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
        logger.log({"event": "resume", "step": state.step, "changes": changes})

    earlier = state.seconds                     # what the processes before this one spent on the run

    def checkpoint(result=None):
        state.seconds = earlier + time.perf_counter() - started
        if result is not None:
            value = headline(result, cfg.train.metric)
            better = value is not None and (state.best is None or
                                            (value > state.best if cfg.train.metric_mode == "max"
                                             else value < state.best))
            if better:
                state.best = value
        if not dist.main:
            return
        meta = {"model": cfg.model.name, "step": state.step, "task": cfg.task}
        save_weights(model, run_dir / "weights" / "last.safetensors", meta)
        if result is not None and state.best == headline(result, cfg.train.metric):
            save_weights(model, run_dir / "weights" / "best.safetensors", meta)
        saved = {"model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 **state.as_dict(), "losses": list(state.losses), "rng": rng_state(),
                 "config": OmegaConf.to_yaml(cfg, resolve=True)}
        if scaler is not None:
            saved["scaler"] = scaler.state_dict()
        save_state(state_path, saved)

    def snapshot():
        """weights/step-NNNNNN.safetensors (train.snapshot_every): weights only, written before the step's resume
        state, so a run killed between the two retrains the step and writes the snapshot again."""
        if dist.main:
            save_weights(model, run_dir / "weights" / f"{snapshot_name(state.step)}.safetensors",
                         {"model": cfg.model.name, "step": state.step, "task": cfg.task})

    every = cfg.train.snapshot_every
    if resume and every and state.step % every == 0 and dist.main and \
            not (run_dir / "weights" / f"{snapshot_name(state.step)}.safetensors").is_file():
        snapshot()                  # snapshots asked for on resume: the restored step's, from its state

    last = {"result": None}

    def run_eval():
        result = evaluate_with_config(model, eval_set, cfg, dist)
        result["step"] = state.step
        last["result"] = result
        logger.log({"step": state.step, "eval": result | {"confusion_matrix": None}})
        if dist.main:
            h = headline(result, cfg.train.metric)
            print(f"step {state.step}: {cfg.eval.split} {cfg.train.metric} = {h:.4f}" if h is not None
                  else f"step {state.step}: evaluated")
        model.train()
        return result

    def on_step():
        if every and state.step % every == 0:
            snapshot()
        if cfg.train.eval_every and state.step % cfg.train.eval_every == 0:
            checkpoint(run_eval())
        elif cfg.train.checkpoint_every and state.step % cfg.train.checkpoint_every == 0:
            checkpoint()

    keep_going = state.step < total_steps
    while keep_going:
        epoch = state.epoch
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch, start=state.batch * cfg.data.batch_size)
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=cfg.data.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
            drop_last=True, generator=torch.Generator().manual_seed(cfg.run.seed + epoch),
            pin_memory=dist.device.type == "cuda")
        keep_going = train_one_epoch(
            model, loss_fn, optimizer, scheduler, loader, task=cfg.task, device=dist.device, state=state,
            total_steps=total_steps, accumulate=cfg.train.accumulate, grad_clip=cfg.train.grad_clip, scaler=scaler,
            amp=cfg.train.amp, max_steps=cfg.train.max_steps, log=logger.log, log_every=cfg.run.log_every,
            world=dist.world, show_progress=dist.main, on_step=on_step)
        if keep_going or state.batch >= batches_per_epoch:
            state.epoch += 1
            state.batch = 0
        keep_going = keep_going and state.step < total_steps
        if not cfg.train.eval_every and keep_going:
            checkpoint(run_eval())
    result = last["result"]
    if result is None or result["step"] != state.step:
        result = run_eval()
    checkpoint(result)
    logger.close()
    if dist.main:
        print(f"finished {run_dir}: step {state.step}, best {cfg.train.metric} = {state.best}")
    return {**result, "train_seconds": state.seconds}
