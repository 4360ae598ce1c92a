"""heal-swin-equivariance: how equivariant is a trained model? An equivariance report for any run.

    heal-swin-equivariance runs/demo/run                        # rolls about the optical axis, split val
    heal-swin-equivariance runs/a runs/b runs/c --rotations 12  # an ensemble: the mean of the runs' outputs
    heal-swin-equivariance runs/digits_gauge_cnn                 # a digits run (configs/digits_gauge_cnn.yaml): SO(3)
    python -m heal_swin.tools.equivariance RUN_DIR [...]

For every sample of the split, the input x is turned by a rotation R of the sphere and the model's
prediction of the turned input, f(R·x), is compared with the turned prediction, R·f(x):

- the grid's own symmetries (90° turns about the pole; on the full sphere also the 180° flips about
  equatorial axes) move pixels onto pixels, so both sides are exact permutations and an exactly
  equivariant model agrees on every pixel (agreement 1);
- `--rotations N` further rotations: rolls about the camera's optical axis (`--kind roll`, the physically
  meaningful ones for a fisheye camera: the camera turned on its mount; the default for WoodScape-format
  runs), random rotations of SO(3) (`--kind so3`, the default for the rotated digits), or small pitches and
  rolls of the whole vehicle (`--kind tilt`, the default for rig runs, `data.rig=true`: on the vehicle's
  sphere the pole is the vertical, so the grid's polar turns are its yaws, which map the rig onto itself
  with the cameras exchanged). The turned input
  is rendered anew (the fisheye image projected through the turned grid; the four cameras of a rig turned
  together and fused again; the digits drawn turned), and
  the prediction is moved by the nearest pixel, which costs some agreement at edges even for an exactly
  equivariant model: the same measure on the ground truth (labels or depth rendered turned against moved)
  is reported beside it as the floor.

Only pixels both sides see count: sphere pixels whose turned direction leaves the fisheye image (or the
model's faces) are excluded, and counted. Segmentation: per-pixel agreement of the class ids and the mIoU
between the two; depth: the mean relative difference |f(R·x) − R·f(x)| / R·f(x). Beside it, the task metric
of f(R·x) against the turned ground truth, as a function of the angle. Several run directories make an
ensemble: the mean of the members' class probabilities (segmentation) or depths, as in Gerken & Kessel
2024 ("Emergent equivariance in deep ensembles").

Writes OUT/equivariance.json, OUT/equivariance.md (a table) and OUT/equivariance.png (agreement and the
task metric against the angle). OUT defaults to FIRST_RUN/equivariance-<split> (with -ensemble<K> for K runs).

Runs: any run directory of the engine (config.yaml + weights/, made by train.py or heal-swin-study): HEALPix
models on single-camera or rig fisheye data, and any backbone on a sphere source (`data.source: digits`; the flat
one through its equirectangular adapter).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PROG = "heal-swin-equivariance"
KINDS = ("auto", "roll", "so3", "tilt")
TILT_DEG = 5.0      # the largest pitch / roll of --kind tilt


class EquivarianceError(Exception):
    pass


# --------------------------------------------------------------------------- what the report rotates


@dataclass
class Member:
    """One run: `predict(x)` -> class probabilities (B, K, N) or depth in metres (B, N)."""
    run_dir: Path
    model: torch.nn.Module
    depth_target: str | None

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        from ..tasks import from_prediction

        out = self.model(x)
        out = out if out.dtype == torch.float64 else out.float()       # --double keeps float64 throughout
        if self.depth_target is None:
            return out.softmax(1)
        return from_prediction(out[:, 0], self.depth_target)


class _RunSource:
    """The samples of a run's split, from its config through the engine (no augmentation, upright); turned
    samples come from the dataset's `rotated` (a fisheye image projected through the turned grid; digit
    spheres drawn turned), never resampled."""

    def __init__(self, cfg, split: str, run_dir: Path):
        from omegaconf import OmegaConf

        from ..engine import build_datasets, config_faces, model_domain

        if model_domain(cfg) != "healpix" and cfg.data.source == "woodscape":
            raise EquivarianceError(f"{run_dir}: model.name={cfg.model.name} takes flat fisheye images; the report "
                                    "turns sphere inputs, so it needs a HEALPix run or a flat model on a sphere "
                                    "source (data.source=digits, through its equirectangular adapter)")
        cfg = OmegaConf.merge(cfg, {"augment": {"photometric": [], "rotate_deg": 0, "quarter_turns": False,
                                                "hflip": 0},
                                    "data": {"digits": {"rotate": 0.0, "eval_rotate": 0.0}}})
        self.dataset = build_datasets(cfg, (split,))[split]
        if len(self.dataset) == 0:
            raise EquivarianceError(f"{run_dir / 'config.yaml'}: split {split!r} holds no samples "
                                    f"(data.split_fractions={list(cfg.data.split_fractions)}); choose another --split")
        self.task, self.nside, self.faces = cfg.task, int(cfg.data.nside), tuple(config_faces(cfg))
        self.class_names = tuple(self.dataset.class_names)
        self.ignore_index = int(getattr(self.dataset, "ignore_index", 255))
        self.orientation = cfg.data.orientation
        self.default_kind = "tilt" if cfg.data.rig else "roll" if cfg.data.source == "woodscape" else "so3"
        self.fisheye = cfg.data.source == "woodscape"

    def __len__(self):
        return len(self.dataset)

    def keys(self) -> list:
        return _sample_keys(self.dataset)

    def _unpack(self, item):
        target = item["labels" if self.task == "segmentation" else "depth"]
        return item["image"], target, item["valid"]

    def upright(self, i):
        return self._unpack(self.dataset[i])

    def rotated(self, i, rotation):
        return self._unpack(self.dataset.rotated(i, rotation))

    def roll_axis(self) -> np.ndarray:
        """The optical axis in the sphere's frame: its pole in the camera orientation (the digits' sphere:
        its pole)."""
        if self.fisheye and self.orientation != "camera":
            raise EquivarianceError("data.orientation=vehicle: each camera's optical axis points elsewhere on the "
                                    "vehicle's sphere, so no one roll serves the split; use --kind so3 (the polar "
                                    "turns, yaws of the vehicle there, stay exact)")
        return np.array([0.0, 0.0, 1.0])


def _sample_keys(dataset) -> list:
    """What names each sample of a dataset across runs: the frame and camera's stem (fisheye), the sphere's
    split, seed and index (digits)."""
    if hasattr(dataset, "items"):          # a rig item is a frame's cameras: the frame names it
        return [next(iter(item.values())).frame if isinstance(item, dict) else item.stem for item in dataset.items]
    return [f"{dataset.split}-{dataset.seed}-{i}" for i in range(len(dataset))]


class _Ensemble:
    """The samples an ensemble (or one run) is scored on, each member's input made by its own run's
    preprocessing (normalisation, projection): `upright(i)` and `rotated(i, R)` give ([x per member], target,
    valid). `index[i]` holds sample i's position in each member's split."""

    def __init__(self, sources: list, index: list):
        self.sources, self.index, self.n = sources, index, len(index)
        for attr in ("task", "nside", "faces", "class_names", "ignore_index", "orientation", "default_kind",
                     "fisheye"):
            setattr(self, attr, getattr(sources[0], attr))

    def __len__(self):
        return len(self.index)

    def _gather(self, i, get):
        """Sample i for every member; members that share a source (the same preprocessing) read it once."""
        read: dict = {}
        for s, j in zip(self.sources, self.index[i]):
            if (id(s), j) not in read:
                read[id(s), j] = get(s, j)
        items = [read[id(s), j] for s, j in zip(self.sources, self.index[i])]
        return [x for x, _, _ in items], items[0][1], items[0][2]

    def upright(self, i):
        return self._gather(i, lambda s, j: s.upright(j))

    def rotated(self, i, rotation):
        return self._gather(i, lambda s, j: s.rotated(j, rotation))

    def roll_axis(self) -> np.ndarray:
        return self.sources[0].roll_axis()


def _held_out(sources: list, cfgs: list, split: str, run_dirs: list) -> list:
    """[(position in each member's split)] of the samples every member's `split` holds and no member trained
    on, in the first member's order; EquivarianceError naming the runs where there is none."""
    from omegaconf import OmegaConf

    from ..engine import build_datasets

    keys = [s.keys() for s in sources]
    trained, seen = set(), set()
    for cfg in cfgs:
        data = OmegaConf.to_yaml(cfg.data)
        # spheres of digits: the training spheres come from other source images (digits.source_split) and are
        # named by their split, so none is ever a held-out sample; a fisheye tree's split follows its data keys
        if cfg.data.source == "digits" or data in seen:
            continue
        seen.add(data)
        trained |= set(_sample_keys(build_datasets(cfg, ("train",))["train"]))
    where = [{k: j for j, k in enumerate(ks)} for ks in keys]
    index = [tuple(w[k] for w in where) for k in keys[0] if all(k in w for w in where) and k not in trained]
    if not index:
        names = ", ".join(str(r) for r in run_dirs)
        raise EquivarianceError(f"{names}: no sample of split {split!r} is held out by every member (their "
                                "data.split_fractions / data.split_seed / run.seed put each one in some member's "
                                "training split); an ensemble is scored only on samples no member trained on")
    return index


def _weights_of(run_dir: Path, wanted: str = "best") -> str:
    """`wanted` ("best" or "last"), or "last" (said on stderr) where a run has no best weights;
    EquivarianceError where the run has neither. A snapshot name ("step-000200", `train.snapshot_every`)
    must exist: EquivarianceError naming the file and the snapshots the run holds."""
    from ..engine import is_snapshot_name, list_snapshots

    folder = run_dir / "weights"
    if is_snapshot_name(wanted):
        if (folder / f"{wanted}.safetensors").is_file():
            return wanted
        held = list_snapshots(run_dir)
        raise EquivarianceError(f"{folder / wanted}.safetensors: no such snapshot; the run holds "
                                f"{', '.join(held) if held else 'none (train it with train.snapshot_every=N)'}")
    if (folder / f"{wanted}.safetensors").is_file():
        return wanted
    if (folder / "last.safetensors").is_file():
        print(f"{PROG}: {run_dir}: no weights/{wanted}.safetensors, using weights/last.safetensors", file=sys.stderr)
        return "last"
    raise EquivarianceError(f"{folder}: neither best.safetensors nor last.safetensors; the run has no trained weights "
                            "(resume it with train.py ... train.resume=true, or train it anew)")


def load_runs(run_dirs, split: str, samples: int | None, device="cpu", dtype=torch.float32, weights: str = "best"):
    """(members, source) for one run or an ensemble of runs of the same data and task: every run is a
    `train.py` run directory (config.yaml + weights/), of any data source; `weights`: best, last or a
    snapshot along training ("step-000200", written by train.snapshot_every). Each member reads the samples
    through its own run's preprocessing; an ensemble is scored on the samples of `split` that no member
    trained on (`_held_out`)."""
    from omegaconf import OmegaConf

    from ..data import DatasetError
    from ..engine import CheckpointError, ConfigError, load_model, load_run_config, model_domain

    members, sources, cfgs, first = [], [], [], None
    by_input: dict = {}          # members whose data settings are equal read their samples through one source
    for run_dir in map(Path, run_dirs):
        if not (run_dir / "config.yaml").is_file():
            raise EquivarianceError(f"{run_dir}: not a run directory (no config.yaml; train one with train.py or "
                                    "heal-swin-study)")
        cfg = load_run_config(run_dir)
        if cfg.task == "classification":
            raise EquivarianceError(f"{run_dir}: task=classification: a class score is invariant, not a map to "
                                    "compare with the turned prediction; evaluate it on turned spheres instead "
                                    "(train.py --evaluate RUN eval.split=test data.digits.eval_rotate=1)")
        signature = {"task": cfg.task, "data.source": cfg.data.source, "data.nside": cfg.data.nside,
                     "data.base_pixels": str(cfg.data.base_pixels)}
        if cfg.data.source == "woodscape":
            signature.update({"data.root": str(cfg.data.root), "data.orientation": cfg.data.orientation,
                              "data.class_names": str(cfg.data.class_names)})
        else:
            signature.update({f"data.digits.{k}": str(cfg.data.digits[k])
                              for k in ("test", "digits", "half_width", "threshold", "seed")})
        key = (cfg.task, model_domain(cfg), OmegaConf.to_yaml(cfg.data))
        try:
            if key not in by_input:
                by_input[key] = _RunSource(cfg, split, run_dir)
        except (DatasetError, ConfigError, ValueError) as err:
            raise EquivarianceError(f"{run_dir}: split {split!r}: {err}") from None
        sources.append(by_input[key])
        cfgs.append(cfg)
        chosen = _weights_of(run_dir, weights)
        try:
            model = load_model(run_dir, weights=chosen, device=device).to(dtype)
        except CheckpointError as err:
            raise EquivarianceError(str(err)) from None
        members.append(Member(run_dir, model, cfg.loss.depth_target if cfg.task == "depth" else None))
        if first is None:
            first = (run_dir, signature)
        for key, value in signature.items():
            if first[1].get(key) != value:
                raise EquivarianceError(f"{run_dir}: {key}={value!r} differs from {first[0]}'s {first[1].get(key)!r}; "
                                        "an ensemble averages runs of the same data and task")
    run_dirs = [m.run_dir for m in members]
    index = ([(j,) for j in range(len(sources[0]))] if len(sources) == 1 else
             _held_out(sources, cfgs, split, run_dirs))
    source = _Ensemble(sources, index)
    source.n = min(samples, len(source)) if samples is not None else len(source)
    return members, source


def ensemble_predict(members, x) -> torch.Tensor:
    """The mean of the members' probabilities (segmentation) or depths (depth). x: one input for every
    member, or a list with each member's own (its run's preprocessing)."""
    xs = x if isinstance(x, (list, tuple)) else [x] * len(members)
    return torch.stack([m.predict(xi) for m, xi in zip(members, xs)]).mean(0)


# --------------------------------------------------------------------------- the measurement


def rotations_for(source, kind: str, count: int, seed: int = 0) -> list:
    """[(name, kind, R, roll_deg or None)]: the grid symmetries of the source's faces, then `count` rolls
    about the optical axis (evenly spaced, the exact quarter turns left out) or Haar-random rotations."""
    from .. import grid
    from ..data.augment import axis_rotation
    from ..data.digits import haar_rotations

    out = [(name, "exact", m, None) for name, m in grid.grid_symmetries(source.nside, source.faces).items()]
    if kind == "roll":
        axis = source.roll_axis()
        angles = [a for a in np.linspace(0, 360, count + 2)[1:-1]]
        out += [(f"roll {a:.1f}°", "roll", axis_rotation(axis, math.radians(a)), float(a)) for a in angles]
    elif kind == "tilt":            # ISO 8855 vehicle axes: x forward (roll about it), y left (pitch about it)
        steps = max(1, math.ceil(count / 2))
        for j in range(count):
            angle = TILT_DEG * (j // 2 + 1) / steps
            axis, name = (np.array([1.0, 0.0, 0.0]), "roll") if j % 2 == 0 else (np.array([0.0, 1.0, 0.0]), "pitch")
            out.append((f"vehicle {name} {angle:.1f}°", "tilt", axis_rotation(axis, math.radians(angle)), None))
    else:
        for j, m in enumerate(haar_rotations(np.random.default_rng(seed), count, 1.0)):
            out.append((f"SO(3) #{j}", "so3", m, None))
    return out


def measure(members, source, rotations, dtype=torch.float32, progress: bool = True) -> dict:
    """The report's numbers: one row per rotation (module docstring), plus the upright task metric."""
    from tqdm import tqdm

    from .. import grid
    from ..tasks import ConfusionMatrix, DepthMetrics

    seg = source.task == "segmentation"
    k = len(source.class_names)
    device = next(members[0].model.parameters()).device

    def metric():
        return ConfusionMatrix(k, source.ignore_index, source.class_names) if seg else DepthMetrics()

    tables = []
    for name, kind, m, roll in rotations:
        exact = kind == "exact"
        index = (grid.symmetry_permutation if exact else grid.nearest_rotation_index)(source.nside, m, source.faces)
        tables.append(torch.as_tensor(np.asarray(index)))
    stats = [dict(between=metric(), task=metric(), floor=metric(), pixels=0, excluded=0) for _ in rotations]
    upright = metric()
    for i in tqdm(range(source.n), desc="equivariance", unit="sample", disable=not progress):
        xs, t, v = source.upright(i)
        p = ensemble_predict(members, [x[None].to(device, dtype) for x in xs])[0].cpu()
        upright.update(p.argmax(0) if seg else p, t, v)
        turned = [(([x[..., idx] for x in xs], t[idx], v[idx]) if kind == "exact" else source.rotated(i, m))
                  for (name, kind, m, _), idx in zip(rotations, tables)]
        batch = [torch.stack([xr[k] for xr, _, _ in turned]).to(device, dtype) for k in range(len(members))]
        p_rot = ensemble_predict(members, batch).cpu()
        for j, (idx, (xr, tr, vr)) in enumerate(zip(tables, turned)):
            ok = idx >= 0
            safe = idx.clamp_min(0)
            moved_valid = v[safe] & ok                                    # R·f(x) is defined here
            both = vr & moved_valid
            s = stats[j]
            s["pixels"] += int(both.sum())
            s["excluded"] += int((vr | moved_valid).sum() - both.sum())
            a = p_rot[j].argmax(0) if seg else p_rot[j]
            moved = p[..., safe]
            b = moved.argmax(0) if seg else moved
            t_moved = t[safe]
            if seg:
                b_labels = torch.where(both, b, torch.full_like(b, source.ignore_index))
                s["between"].update(a, b_labels, both)
                s["floor"].update(tr, torch.where(both, t_moved, torch.full_like(t_moved, source.ignore_index)), both)
            else:
                s["between"].update(a, b, both)
                s["floor"].update(tr, t_moved, both)
            s["task"].update(a, tr, vr)
    up = upright.summary()
    rows = []
    for (name, kind, m, roll), s in zip(rotations, stats):
        between, task, floor = s["between"].summary(), s["task"].summary(), s["floor"].summary()
        row = dict(name=name, kind=kind, angle_deg=round(grid.rotation_angle(m), 3), roll_deg=roll,
                   pixels=s["pixels"], excluded=s["excluded"])
        if seg:
            row.update(agreement=between["accuracy"], miou_between=between["miou"], task_miou=task["miou"],
                       floor_agreement=floor["accuracy"], floor_miou=floor["miou"])
        else:
            row.update(relative_difference=between["abs_rel"], task_abs_rel=task["abs_rel"],
                       floor_relative_difference=floor["abs_rel"])
        rows.append(row)
    return {"task": source.task, "samples": source.n, "nside": source.nside, "faces": list(source.faces),
            "upright": ({"miou": up["miou"], "accuracy": up["accuracy"]} if seg else {"abs_rel": up["abs_rel"]}),
            "rows": rows}


# --------------------------------------------------------------------------- model-level symmetry errors


from ..equivariance import relative_error, so3_errors  # noqa: E402,F401  (moved to heal_swin.equivariance)


# --------------------------------------------------------------------------- the report


class _KeptPredictions:
    """A member that keeps its predictions, keyed by the input's bytes: `ensemble_errors` scores the first K
    members for every K on the same inputs, so each member predicts each input once."""

    def __init__(self, member: Member):
        self.member, self.run_dir, self.model, self.kept = member, member.run_dir, member.model, {}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), str(x.dtype), hashlib.sha1(x.detach().cpu().numpy().tobytes()).digest())
        if key not in self.kept:
            self.kept[key] = self.member.predict(x)
        return self.kept[key]


class _KeptSamples:
    """A source that draws each sample (upright and turned) once: every K is scored on the same ones."""

    def __init__(self, source):
        self.source, self.kept = source, {}

    def __getattr__(self, name):
        return getattr(self.source, name)

    def __len__(self):
        return len(self.source)

    def _get(self, key, read):
        if key not in self.kept:
            self.kept[key] = read()
        return self.kept[key]

    def upright(self, i):
        return self._get(("upright", i), lambda: self.source.upright(i))

    def rotated(self, i, rotation):
        return self._get(("rotated", i, np.asarray(rotation).tobytes()), lambda: self.source.rotated(i, rotation))


def ensemble_errors(run_dirs, split: str = "test", samples: int | None = 50, rotations: int = 4, seed: int = 11,
                    device="cpu", weights: str = "best") -> list[dict]:
    """Emergent equivariance of an ensemble (Gerken & Kessel 2024): for K = 1 … len(run_dirs), the
    equivariance error 1 − mIoU(f(R·x), R·f(x)) of member K alone and of the mean of the first K members,
    over `rotations` random rotations of SO(3) (turned samples drawn turned), their task mIoU on the turned
    samples, and the floor (the same measure on the labels). Segmentation runs of one data source; `weights`:
    best, last or a snapshot along training ("step-000200"). Each member predicts each sample once (kept for
    every K: memory ≈ members × samples × (1 + rotations) probability maps)."""
    members, source = load_runs(run_dirs, split, samples, device, weights=weights)
    members, source = [_KeptPredictions(m) for m in members], _KeptSamples(source)
    rots = [r for r in rotations_for(source, "so3", rotations, seed) if r[1] == "so3"]

    def error(ms):
        rows = measure(ms, source, rots, progress=False)["rows"]
        return (float(np.mean([1 - r["miou_between"] for r in rows])), float(np.mean([r["task_miou"] for r in rows])),
                float(np.mean([1 - r["floor_miou"] for r in rows])))

    out = []
    for k in range(1, len(members) + 1):
        ens_err, ens_miou, floor = error(members[:k])
        mem_err, mem_miou, _ = error(members[k - 1:k])
        out.append(dict(k=k, ensemble_error=round(ens_err, 4), member_error=round(mem_err, 4),
                        ensemble_miou_rotated=round(ens_miou, 4), member_miou_rotated=round(mem_miou, 4),
                        floor=round(floor, 4)))
    return out


def plot_ensemble_errors(curves: dict, path) -> None:
    """{label: `ensemble_errors` rows} -> a PNG: the ensemble's and member K's error against K, with the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, rows in curves.items():
        ks = [r["k"] for r in rows]
        ax.plot(ks, [r["ensemble_error"] for r in rows], marker="o", label=f"{label}: ensemble mean")
        ax.plot(ks, [r["member_error"] for r in rows], marker="x", linestyle=":", label=f"{label}: member k")
    ax.axhline(next(iter(curves.values()))[0]["floor"], color="grey", linewidth=1,
               label="floor (labels moved, nearest pixel)")
    ax.set_xlabel("ensemble size K")
    ax.set_ylabel("equivariance error: 1 − mIoU(f(Rx), R f(x))")
    ax.set_title("Emergent equivariance of ensembles")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(result: dict) -> str:
    seg = result["task"] == "segmentation"
    k = len(result["runs"])
    runs = ", ".join(f"`{r}`" for r in result["runs"])
    head = (f"Equivariance of {runs} ({f'ensemble of {k}' if k > 1 else 'one run'}), split `{result['split']}`, "
            f"{result['samples']} samples, nside {result['nside']}, faces {result['faces_text']}, rotations "
            f"`{result['kind']}`.")
    up = result["upright"]
    upright = (f"Upright: mIoU {up['miou']:.4f}, accuracy {up['accuracy']:.4f}." if seg
               else f"Upright: AbsRel {up['abs_rel']:.4f}.")
    # (header, value of a row) per column after the rotation's name, kind and angle
    columns = ([("agreement f(Rx) vs R f(x)", lambda r: f"{r['agreement']:.4f}"),
                ("mIoU between", lambda r: f"{r['miou_between']:.4f}"),
                ("floor: agreement / mIoU (labels)", lambda r: f"{r['floor_agreement']:.4f} / {r['floor_miou']:.4f}"),
                ("task mIoU on Rx", lambda r: f"{r['task_miou']:.4f}")] if seg else
               [("relative difference f(Rx) vs R f(x)", lambda r: f"{r['relative_difference']:.4f}"),
                ("floor (depth)", lambda r: f"{r['floor_relative_difference']:.4f}"),
                ("task AbsRel on Rx", lambda r: f"{r['task_abs_rel']:.4f}")])
    columns += [("pixels", lambda r: str(r["pixels"])), ("excluded", lambda r: str(r["excluded"]))]
    lines = [head, "", upright, "", "| rotation | kind | angle | " + " | ".join(h for h, _ in columns) + " |",
             "|---" * (3 + len(columns)) + "|"]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['kind']} | {r['angle_deg']:.1f}° | " + " | ".join(f(r) for _, f in columns)
                     + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seg = result["task"] == "segmentation"
    keys = (("agreement", "floor_agreement", "task_miou") if seg else
            ("relative_difference", "floor_relative_difference", "task_abs_rel"))
    labels = (("agreement f(Rx) vs R f(x)", "floor: labels rendered vs moved", "task mIoU on Rx") if seg else
              ("relative difference f(Rx) vs R f(x)", "floor: depth rendered vs moved", "task AbsRel on Rx"))
    rows = result["rows"]
    roll = any(r["kind"] == "roll" for r in rows)

    def x_of(r):
        return r["roll_deg"] if r["roll_deg"] is not None else r["angle_deg"]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, pair in ((axes[0], (0, 1)), (axes[1], (2,))):
        for j in pair:
            sampled = sorted((r for r in rows if r["kind"] != "exact"), key=x_of)
            exact = [r for r in rows if r["kind"] == "exact"]
            line, = ax.plot([x_of(r) for r in sampled], [r[keys[j]] for r in sampled], marker="o", markersize=4,
                            linestyle="--" if j == 1 else "-", label=labels[j])
            ax.scatter([x_of(r) if not (roll and r["name"].startswith("polar")) else float(r["name"].split()[2][:-1])
                        for r in exact], [r[keys[j]] for r in exact], marker="*", s=110, color=line.get_color(),
                       edgecolor="black", zorder=3, label=f"{labels[j]}: exact grid symmetries")
        if seg and 2 in pair:
            ax.axhline(result["upright"]["miou"], color="grey", linewidth=1, label="upright mIoU")
        ax.set_xlabel("roll about the optical axis (°)" if roll else "rotation angle (°)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("f(R·x) against R·f(x)")
    axes[1].set_title("the task on turned inputs")
    ens = len(result["runs"])
    fig.suptitle(f"Equivariance ({'ensemble of ' + str(ens) if ens > 1 else Path(result['runs'][0]).name}, "
                 f"split {result['split']}, {result['samples']} samples)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(run_dirs, split: str = "val", rotations: int = 8, kind: str = "auto", samples: int | None = None,
           out=None, device: str = "cpu", double: bool = False, seed: int = 0, progress: bool = True,
           weights: str = "best") -> dict:
    """Measure and write the report (module docstring); returns the result dict."""
    from .. import grid
    from ..engine import atomic_write_text

    if kind not in KINDS:
        raise EquivarianceError(f"--kind {kind!r} must be one of {KINDS}")
    if rotations < 0:
        raise EquivarianceError(f"--rotations {rotations} must be >= 0")
    if split not in ("train", "val", "test"):
        raise EquivarianceError(f"--split {split!r} must be train, val or test")
    if samples is not None and (isinstance(samples, bool) or samples < 1):
        raise EquivarianceError(f"--samples {samples} must be >= 1 (or left out: the whole split)")
    dtype = torch.float64 if double else torch.float32
    from ..engine import is_snapshot_name

    if weights not in ("best", "last") and not is_snapshot_name(weights):
        raise EquivarianceError(f"--weights {weights!r} must be best, last or a snapshot along training, "
                                "step-NNNNNN (train.snapshot_every)")
    members, source = load_runs(run_dirs, split, samples, device, dtype, weights)
    kind = source.default_kind if kind == "auto" else kind
    rots = rotations_for(source, kind, rotations, seed)
    result = measure(members, source, rots, dtype, progress)
    result.update(runs=[str(m.run_dir) for m in members], split=split, kind=kind,
                  faces_text=grid.format_base_pixels(source.faces), dtype=str(dtype).replace("torch.", ""))
    k = len(members)
    out = Path(out) if out else Path(run_dirs[0]) / (f"equivariance-{split}" + (f"-ensemble{k}" if k > 1 else ""))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "equivariance.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "equivariance.md", markdown(result))
    plot(result, out / "equivariance.png")
    result["out"] = str(out)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="one run, or several for an ensemble")
    p.add_argument("--rotations", type=int, default=8, help="rolls or random rotations besides the grid symmetries")
    p.add_argument("--kind", default="auto", choices=KINDS,
                   help="roll: about the optical axis; so3: Haar-random; auto: roll for fisheye runs, so3 for digits")
    p.add_argument("--split", default="val", help="train, val or test (digits: val/test = the held-out spheres)")
    p.add_argument("--samples", type=int, default=None, help="at most this many samples (default: the whole split)")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/equivariance-SPLIT)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--double", action="store_true", help="run the models in float64 (separates the model's "
                   "symmetry from float32 rounding)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random SO(3) rotations")
    p.add_argument("--weights", default="best",
                   help="which weights of each run: best (falls back to last, saying so, where a run has none), "
                        "last, or a snapshot along training, e.g. step-000200 (train.snapshot_every)")
    args = p.parse_args(argv)
    try:
        result = report(args.runs, args.split, args.rotations, args.kind, args.samples, args.out, args.device,
                        args.double, args.seed, progress=sys.stderr.isatty(), weights=args.weights)
    except EquivarianceError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    print(markdown(result))
    print(f"wrote {result['out']}/equivariance.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
