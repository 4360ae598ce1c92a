"""Evaluation: `evaluate(model, dataset, task=...)` scores a model on a dataset (on the sphere or the
flat grid, and back in the fisheye image at full resolution, per camera and per ring of incidence angle);
`evaluate_run` scores a trained run (`python train.py --evaluate RUN_DIR [key=value ...]`).

`evaluate_run` writes into RUN_DIR/eval-<split>/: metrics.json, metrics.md (a table people read), and PNGs
of a few samples: the fisheye image with the prediction and the ground truth overlaid (segmentation) or
colour-mapped depth, and the prediction on the sphere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ..cameras import INCIDENCE_RINGS, incidence_ring
from ..data import FlatDataset
from ..data.progress import progress_options
from ..tasks import ClassificationMetrics, ConfusionMatrix, DepthMetrics, from_prediction
from .builders import build_datasets, build_model
from .checkpoint import atomic_write_text, load_weights
from .config import ConfigError, config_faces, load_config
from .runtime import Distributed, EpochSampler, autocast

__all__ = ["FisheyeScorer", "evaluate", "predict", "headline", "load_model", "load_run_config", "evaluate_run", "evaluate_with_config",
           "markdown_table"]


@torch.no_grad()
def predict(model, images: torch.Tensor, *, task: str, device, amp: str = "none",
            depth_target: str = "log") -> torch.Tensor:
    """Class ids (segmentation) or metres (depth) of a batch of inputs, (B, N) or (B, H, W); class ids (B,)
    (classification)."""
    device = torch.device(device)
    with autocast(amp, device):
        out = model(images.to(device)).float()
    if task != "depth":
        return out.argmax(1)
    return from_prediction(out[:, 0], depth_target)


class FisheyeScorer:
    """Scores predictions in the fisheye image at full resolution: on the pixels the sphere grid `coverage`
    = (nside, base_pixels, orientation) covers (so sphere and flat models, and oracles, are scored on the
    same pixels), overall, per camera and per ring of incidence angle (`cameras.INCIDENCE_RINGS`, which
    partition those pixels). One back-projector and one ring map per camera calibration.

        scorer = FisheyeScorer("segmentation", coverage=(32, range(8), "camera"), class_names=names)
        scorer.update("FV", cam, scorer.backproject(cam, sphere_pred), truth)   # or a flat prediction upsampled
        scorer.summary()     # {"fisheye": ..., "per_camera": {...}, "fisheye_rings": {...}}"""

    def __init__(self, task: str, coverage: tuple, class_names=(), ignore_index: int = 255,
                 max_depth: float | None = None, device="cpu", cameras=()):
        self.task, self.coverage, self.device = task, tuple(coverage), torch.device(device)
        self.seg = task == "segmentation"
        self._metric = (lambda: ConfusionMatrix(len(class_names), ignore_index, class_names, self.device)) \
            if self.seg else (lambda: DepthMetrics(max_depth, self.device))
        self.fisheye = self._metric()
        # every camera named up front: under DDP every rank holds the same metrics, so the sums line up
        self.per_camera = {c: self._metric() for c in cameras}
        self.rings = {name: self._metric() for name in INCIDENCE_RINGS}
        self._cache: dict = {}          # camera fingerprint -> (back-projector, covered (H, W), ring (H, W))

    def geometry(self, cam):
        """(HealpixToFisheye of the coverage grid, covered mask (H, W) bool, ring index (H, W)) of a camera."""
        from ..projection import HealpixToFisheye

        key = cam.fingerprint()
        if key not in self._cache:
            back = HealpixToFisheye(cam, *self.coverage)
            self._cache[key] = (back, torch.from_numpy(back.covered_mask).to(self.device),
                                torch.from_numpy(incidence_ring(cam)).to(self.device))
        return self._cache[key]

    def backproject(self, cam, sphere_pred) -> torch.Tensor:
        """A prediction on the coverage grid (N,) -> the fisheye image (H, W): each image pixel takes the
        sphere pixel that contains its ray."""
        return torch.as_tensor(self.geometry(cam)[0].backproject(sphere_pred.cpu() if torch.is_tensor(sphere_pred)
                                                                  else sphere_pred))

    def update(self, camera: str, cam, pred, truth) -> torch.Tensor:
        """Adds one image's prediction and truth (H, W); returns the mask of the pixels scored."""
        _, covered, ring = self.geometry(cam)
        pred, truth = torch.as_tensor(pred).to(self.device), torch.as_tensor(truth).to(self.device)
        ok = covered & (torch.isfinite(truth) if not self.seg else torch.ones_like(covered))
        self.fisheye.update(pred, truth, ok)
        if camera not in self.per_camera:
            self.per_camera[camera] = self._metric()
        self.per_camera[camera].update(pred, truth, ok)
        for r, m in enumerate(self.rings.values()):
            m.update(pred, truth, ok & (ring == r))
        return ok

    def metrics(self) -> list:
        return [self.fisheye, *self.per_camera.values(), *self.rings.values()]

    def summary(self) -> dict:
        return {"fisheye": self.fisheye.summary(),
                "per_camera": {c: m.summary() for c, m in self.per_camera.items()
                               if (m.counts.sum() if self.seg else m.sums[0]) > 0},
                "fisheye_rings": {name: m.summary() | {"theta_deg": list(INCIDENCE_RINGS[name])}
                                  for name, m in self.rings.items()}}


@torch.no_grad()
def evaluate(model, dataset, *, task: str, device="cpu", batch_size: int = 4, num_workers: int = 0,
             amp: str = "none", depth_target: str = "log", backproject: bool = True, coverage: tuple | None = None,
             dist: Distributed | None = None, collect=None, collect_fisheye=None) -> dict:
    """Metrics of `model` on `dataset`: on the sphere (or the flat grid), and, with `backproject`, in the
    fisheye image (`FisheyeScorer`: overall, per camera, per ring of incidence angle; result["fisheye"],
    ["per_camera"], ["fisheye_rings"]). The grid (nside, faces, orientation), the classes, `ignore_index` and
    `max_depth` are the dataset's; a flat dataset is scored on the fisheye pixels that `coverage` = (nside,
    base_pixels, orientation) covers (the sphere models' grid). Datasets without fisheye images (a fused
    rig, spheres of digits) are scored on the sphere only. Under DDP (`dist`) every rank scores its share
    and the sums are reduced. `collect(indices, batch, pred)` sees every prediction (figures);
    `collect_fisheye(index, sample, cam, pred, truth, scored)` every prediction in the fisheye image."""
    from tqdm import tqdm

    dist = dist if dist is not None else Distributed(str(device))
    device = dist.device
    model.eval()
    flat = isinstance(dataset, FlatDataset)
    tree = getattr(dataset, "tree", None)
    backproject = backproject and tree is not None and not getattr(dataset, "rig", False)
    if backproject and flat and coverage is None:
        raise ValueError("evaluate: a flat dataset is scored in the fisheye on the pixels a sphere grid covers; "
                         "pass coverage=(nside, base_pixels, orientation)")
    seg, labels = task == "segmentation", task != "depth"
    names = dataset.class_names
    ignore_index = getattr(dataset, "ignore_index", 255)
    max_depth = getattr(dataset, "max_depth", None)
    counts = ClassificationMetrics if task == "classification" else ConfusionMatrix
    sphere = counts(len(names), ignore_index, names, device) if labels else DepthMetrics(max_depth, device)
    scorer = None
    if backproject:
        coverage = coverage or (dataset.nside, dataset.base_pixels, dataset.orientation)
        scorer = FisheyeScorer(task, coverage, names, ignore_index, max_depth, device, tree.cameras)
    sampler = EpochSampler(len(dataset), False, 0, dist.rank, dist.world, drop_last=False)
    # Its own generator: evaluating never moves the global RNG, so resumed runs stay identical.
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                                         generator=torch.Generator().manual_seed(0))
    indices = list(iter(sampler))
    seen = 0
    for batch in tqdm(loader, desc="evaluate", unit="batch", leave=False, **progress_options(dist.main)):
        pred = predict(model, batch["image"], task=task, device=device, amp=amp, depth_target=depth_target)
        target = batch["labels" if labels else "depth"].to(device)
        sphere.update(pred, target, batch["valid"].to(device))
        if collect is not None:
            collect(indices[seen:seen + len(pred)], batch, pred)
        for j in range(len(pred) if scorer is not None else 0):
            sample = dataset.items[indices[seen + j]]
            item = dataset.frame(sample, labels=seg, depth=not seg)     # class ids; turned as data.mount_deg says
            cam = item["camera"]
            truth = torch.from_numpy(item["labels"] if seg else item["depth"])
            if flat:  # flat predictions: nearest upsampling to the full image
                p = torch.nn.functional.interpolate(pred[j][None, None].float(), size=truth.shape,
                                                    mode="nearest")[0, 0]
                p = p.long() if seg else p
            else:
                p = scorer.backproject(cam, pred[j])
            scored = scorer.update(sample.camera, cam, p, truth)
            if collect_fisheye is not None:
                collect_fisheye(indices[seen + j], sample, cam, p, truth, scored)
        seen += len(pred)
    if dist.world > 1:
        for m in [sphere, *(scorer.metrics() if scorer is not None else [])]:
            m.all_reduce()
    result = {"split": dataset.split, "samples": len(dataset), "sphere" if not flat else "flat": sphere.summary()}
    if scorer is not None:
        result.update(scorer.summary())
    if labels:
        result["confusion_matrix"] = sphere.counts.cpu().tolist()
    return result


def headline(result: dict, metric: str) -> float | None:
    """The metric that selects the best checkpoint: fisheye figures when present, else sphere/flat."""
    for key in ("fisheye", "sphere", "flat"):
        if key in result and metric in result[key]:
            return result[key][metric]
    return None


def load_run_config(run_dir, overrides=()) -> DictConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    return load_config(path, overrides)


def load_model(run_dir, weights: str = "best", device="cpu"):
    """The trained model of a run in eval mode: its config and its best (else last) weights."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    path = run_dir / "weights" / f"{weights}.safetensors"
    if not path.is_file():
        path = run_dir / "weights" / "last.safetensors"
    num_out = len(cfg.data.class_names) if cfg.data.class_names else None
    if cfg.data.source == "digits":
        from ..data.digits import class_names

        num_out = len(class_names(cfg.task))
    if num_out is None and cfg.task != "depth":
        num_out = _head_outputs(path)            # the weights know it: no data needed (export, other machines)
    model = build_model(cfg, num_out if cfg.task != "depth" else 1)
    load_weights(model, path)
    return model.to(device).eval()


def _head_outputs(path: Path) -> int:
    """The number of output channels of a weights file: the rows of its task head's last projection
    (`head.proj.weight`, under an adapter's prefix too), read from the file's header."""
    from safetensors import safe_open

    from .checkpoint import CheckpointError

    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = [k for k in f.keys() if k == "head.proj.weight" or k.endswith(".head.proj.weight")]
            if keys:
                return int(f.get_slice(keys[0]).get_shape()[0])
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot read the weights file ({err})") from None
    raise CheckpointError(f"{path}: no head.proj.weight in the weights: set data.class_names in the run's "
                          "config.yaml to give the number of classes")


def markdown_table(result: dict, task: str) -> str:
    if task == "classification":
        m = result["sphere"] if "sphere" in result else result["flat"]
        lines = [f"Split `{result['split']}`, {result['samples']} samples.", "",
                 "| accuracy | balanced accuracy | samples |", "|---|---|---|",
                 f"| {_fmt(m['accuracy'])} | {_fmt(m['balanced_accuracy'])} | {m['samples']} |", "",
                 "Per-class accuracy:", "", "| class | accuracy |", "|---|---|"]
        lines += [f"| {name} | {_fmt(v)} |" for name, v in m["per_class_accuracy"].items()]
        return "\n".join(lines) + "\n"
    keys = ["miou", "accuracy"] if task == "segmentation" else ["abs_rel", "sq_rel", "rmse", "rmse_log", "d1",
                                                                 "d2", "d3"]
    rows = [(where, result[where]) for where in ("sphere", "flat", "fisheye") if where in result]
    rows += [(f"fisheye, {cam}", m) for cam, m in result.get("per_camera", {}).items()]
    lines = [f"Split `{result['split']}`, {result['samples']} samples.", "",
             "| where | " + " | ".join(keys) + " | pixels |", "|---" * (len(keys) + 2) + "|"]
    for where, m in rows:
        lines.append(f"| {where} | " + " | ".join(_fmt(m.get(k)) for k in keys) + f" | {m.get('pixels', '')} |")
    if task == "segmentation":
        for where, m in rows[:2]:
            lines += ["", f"Per-class IoU ({where}):", "", "| class | IoU |", "|---|---|"]
            lines += [f"| {name} | {_fmt(v)} |" for name, v in m["iou"].items()]
    rings = result.get("fisheye_rings", {})
    if rings:
        # After the tables that were there before, so readers of the first lines see no change.
        lines += ["", "Fisheye, per ring of incidence angle θ (the same pixels as the fisheye row):", "",
                  "| θ | " + " | ".join(keys) + " | pixels |", "|---" * (len(keys) + 2) + "|"]
        for m in rings.values():
            lo, hi = m["theta_deg"]
            ring = f"{lo:g}–{hi:g}°" if hi < 180 else f"> {lo:g}°"
            cells = " | ".join(_fmt(m.get(k)) for k in keys)
            lines.append(f"| {ring} | {cells} | {m.get('pixels', '')} |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{v:.4f}"


def evaluate_with_config(model, dataset, cfg: DictConfig, dist: Distributed, collect=None) -> dict:
    """`evaluate` with the settings a run's config gives (batch size, precision, depth target, fisheye
    scoring and, for flat models, the sphere grid whose covered pixels are scored)."""
    return evaluate(model, dataset, task=cfg.task, batch_size=cfg.eval.batch_size or cfg.data.batch_size,
                    num_workers=cfg.data.num_workers, amp=cfg.train.amp, depth_target=cfg.loss.depth_target,
                    backproject=cfg.eval.backproject,
                    coverage=(cfg.data.nside, config_faces(cfg), cfg.data.orientation), dist=dist, collect=collect)


def evaluate_run(run_dir, overrides=(), out_dir=None, device: str = "auto", weights: str = "best") -> dict:
    """Evaluate RUN_DIR's best (or `weights`) weights on cfg.eval.split; write metrics and figures (out_dir,
    default RUN_DIR/eval-<split>)."""
    from ..data import check_dataset

    cfg = load_run_config(run_dir, overrides)
    dist = Distributed(device if device != "auto" else cfg.run.device)
    split = cfg.eval.split
    if cfg.data.source == "woodscape":
        check_dataset(cfg.data.root, cfg.data.cameras, cfg.task)
    dataset = build_datasets(cfg, (split,))[split]
    if len(dataset) == 0:
        fractions = list(cfg.data.split_fractions)
        raise ConfigError(f"{Path(run_dir) / 'config.yaml'}: eval.split={split} holds no samples (data.split_fractions="
                          f"{fractions} for train, val, test over {cfg.data.root}); evaluate another split, e.g. "
                          "eval.split=val")
    model = load_model(run_dir, weights=weights, device=dist.device)
    # figures show the fisheye image: sources without one (spheres of digits) have their metrics only
    wanted = set(range(min(cfg.eval.figures, len(dataset)))) if hasattr(dataset, "tree") else set()
    shown: dict = {}

    def collect(indices, batch, pred):
        for j, i in enumerate(indices):
            if i in wanted:
                shown[i] = pred[j].cpu()

    result = evaluate_with_config(model, dataset, cfg, dist, collect=collect)
    out = Path(out_dir) if out_dir else Path(run_dir) / f"eval-{split}"
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
        atomic_write_text(out / "metrics.md", markdown_table(result, cfg.task))
        for i, pred in sorted(shown.items()):
            _figure(dataset, i, pred, cfg, out / f"sample_{i:03d}.png")
        print(markdown_table(result, cfg.task))
        print(f"wrote {out}")
    return result


def _figure(dataset, index: int, pred: torch.Tensor, cfg, path: Path):
    """One sample: fisheye | truth | prediction in the fisheye | prediction on the sphere (faces
    outlined and numbered); a class legend (segmentation) or a depth colour bar in metres. Returns
    the matplotlib Figure after saving it to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import patheffects
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from .. import grid
    from ..data import FlatDataset, colorize
    from ..projection import HealpixToFisheye, views

    sample = dataset.items[index]
    if isinstance(sample, dict):  # a rig frame: show its front camera
        sample = sample.get("FV", next(iter(sample.values())))
    seg = cfg.task == "segmentation"
    item = dataset.frame(sample, labels=seg, depth=not seg)
    cam, image = item["camera"], item["image"]
    faces = config_faces(cfg)
    flat = isinstance(dataset, FlatDataset)
    if flat:
        p = torch.nn.functional.interpolate(pred[None, None].float(), size=image.shape[:2], mode="nearest")[0, 0]
        fisheye_pred = p.long().numpy() if seg else p.numpy()
        sphere_pred = None
    else:
        # A rig dataset puts every camera on the vehicle-frame sphere, whatever the config says.
        back = HealpixToFisheye(cam, cfg.data.nside, faces, getattr(dataset, "orientation", cfg.data.orientation))
        fisheye_pred = back.backproject(pred.numpy())
        sphere_pred = pred.numpy()
    fig = Figure(figsize=(16, 4.6), dpi=100, layout="constrained")
    axes = fig.subplots(1, 4)
    names = dataset.class_names
    if seg:
        truth = item["labels"]
        panels = [(image, "fisheye"), (_overlay(image, colorize(truth)), "ground truth"),
                  (_overlay(image, colorize(fisheye_pred)), "prediction (back-projected)")]
    else:
        truth = item["depth"]
        vmax = float(np.nanpercentile(truth, 95))
        panels = [(image, "fisheye"), (views.depth_rgb(truth, vmax), "ground truth depth"),
                  (views.depth_rgb(fisheye_pred, vmax), "predicted depth (back-projected)")]
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title)
        ax.axis("off")
    ax = axes[3]
    if sphere_pred is not None:
        view = views.MollweideView(600)
        colors = (colorize(sphere_pred) if seg else views.depth_rgb(sphere_pred, vmax)) / 255.0
        local, face = views.lookup(view, cfg.data.nside, faces)
        seen = np.ones(len(colors), dtype=bool)
        ax.imshow(views.paint(local, colors, seen, (0.75, 0.75, 0.75), (0.3, 0.3, 0.3)))
        ax.imshow(views.face_overlay(face, views.FACE_COLORS, width=2))
        stroke = [patheffects.withStroke(linewidth=2.0, foreground="black")]
        for f, (col, row) in enumerate(views.face_label_positions(view)):
            used = f in faces
            ax.text(col, row, str(f), color=views.FACE_COLORS[f] if used else (0.85, 0.85, 0.85), fontsize=9,
                    fontweight="bold" if used else "normal", ha="center", va="center", path_effects=stroke)
        ax.set_title(f"on the sphere (Mollweide), faces {grid.format_base_pixels(faces)}")
    ax.axis("off")
    fig.suptitle(f"{sample.stem}: {cfg.model.name}, nside {cfg.data.nside}" if not flat else
                 f"{sample.stem}: {cfg.model.name}")
    if seg:
        present = np.unique(np.concatenate([np.unique(truth), np.unique(fisheye_pred)]))
        handles = [Patch(facecolor=colorize(np.array([c]))[0] / 255.0, edgecolor=(0.25, 0.25, 0.25),
                         linewidth=0.8, label=names[c]) for c in present if 0 <= c < len(names)]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 10), fontsize=8)
    else:
        scale = ScalarMappable(Normalize(0.0, vmax), matplotlib.colormaps[views.DEPTH_COLORMAP])
        bar = fig.colorbar(scale, ax=list(axes[1:]), location="bottom", fraction=0.05, shrink=0.6,
                           extend="max")
        bar.set_label("depth (m); light grey: no depth")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return fig


def _overlay(image: np.ndarray, colors: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Class colours blended over the image (uint8 RGB)."""
    return (image * (1 - alpha) + colors * alpha).astype(np.uint8)
