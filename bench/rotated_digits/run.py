"""Equivariance versus augmentation: rotated-digits segmentation on the sphere, every backbone (issue #16).

    python bench/rotated_digits/run.py [--out runs/rotated_digits] [--workers 2] [--full]

Data: `heal_swin.data.digits` (scikit-learn's 8 × 8 digits, 3-5 per sphere, half width 0.5 rad, 11
classes), nside 16 on the full sphere by default. Each non-equivariant backbone (heal_swin_tiny, gauge_cnn_tiny
and the flat swin_unet_flat_tiny on the 32 × 96 θ-φ image of the sphere: the same pixel count, nearest-pixel
resampling both ways, `models.EquirectangularAdapter`) trains on spheres rotated by an increasing fraction
of SO(3) (--augment, default 0, ¼, ½, 1); the equivariant ones (s2cnn_digits, and heal_swin_tiny with
`symmetric=True`, written `heal_swin_tiny:symmetric=true`) on upright (0) and fully rotated (1) spheres.
Steps and learning rate are set per family (BUDGETS: the S2CNN's step costs about 9 of the others'). Every
run is scored on the same held-out test spheres (digits from other source images), upright and fully
rotated: mIoU over the classes present, on the sphere's pixels. --seeds runs per setting (the spread is over
seeds: model init, data order, training spheres). Then, as in Gerken & Kessel 2024, an ensemble of
--ensemble members per model in --ensemble-models, trained with full augmentation: the equivariance error
of each member and of the ensemble mean (average of softmax outputs) for K = 1, 2, ..., as 1 − the mIoU
between f(R·x) and R·f(x) over random rotations R of held-out spheres drawn turned
(`heal_swin.tools.equivariance`); the same measure on the ground-truth labels is the floor that moving
by the nearest pixel alone causes.

Each run is a directory OUT/runs/MODEL-augA-seedS (run.json + weights.safetensors) that
`heal-swin-equivariance` reads. Writes OUT/results.jsonl (one row per run), OUT/ensembles.jsonl,
OUT/results.md (tables), OUT/miou_vs_augmentation.png and OUT/ensemble_equivariance.png. Runs are
independent and spread over --workers processes (1 torch thread each); a finished run with the same settings
is kept on a rerun. --full: nside 32, 4× the spheres and steps (GPU-sized; pass --device cuda).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

FLAT = "swin_unet_flat_tiny"
SYMMETRIC = "heal_swin_tiny:symmetric=true"
# trained only on upright and fully rotated spheres (their symmetry, not the data, is what is measured)
EQUIVARIANT = {"s2cnn_digits", SYMMETRIC}
# steps and peak learning rate (one-cycle) per family at the default size (batch 4: at the same number of
# spheres seen, 800 steps of 4 took gauge_cnn_tiny to mIoU 0.52 where 400 steps of 8 reached 0.34)
BUDGETS = {"heal_swin": dict(steps=400, lr=1e-3), "swin_unet_flat": dict(steps=400, lr=1e-3),
           "gauge_cnn": dict(steps=400, lr=3e-3), "s2cnn": dict(steps=150, lr=5e-3)}


def parse_model(spec: str) -> tuple[str, dict]:
    """'heal_swin_tiny:symmetric=true,embed_dim=16' -> ('heal_swin_tiny', {'symmetric': True, 'embed_dim': 16}):
    a registry name and keyword overrides (JSON values; bare words are strings)."""
    name, _, rest = spec.partition(":")
    kwargs = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            raise SystemExit(f"--models {spec}: {part!r} must be key=value")
        try:
            kwargs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key.strip()] = value
    return name, kwargs


def run_name(spec: str) -> str:
    name, kwargs = parse_model(spec)
    return name + "".join(f"-{k}{v}" for k, v in sorted(kwargs.items())).lower()


# --------------------------------------------------------------------------- data and models


def _data(cfg: dict, split: str, rotate: float, n: int, seed: int):
    from heal_swin.data.digits import DigitSpheres

    return DigitSpheres(n, nside=cfg["nside"], faces=cfg["faces"], split=split, rotate=rotate, seed=seed,
                        digits=tuple(cfg["digits"]), half_width=cfg["half_width"])


@functools.lru_cache(maxsize=4)
def _test_set(nside: int, faces: tuple, digits: tuple, half_width: float, rotate: float, n: int):
    """The held-out test spheres (seed 7), made once per worker process and shared by its runs."""
    return _data(dict(nside=nside, faces=faces, digits=digits, half_width=half_width), "test", rotate, n, 7)


def _data_meta(cfg: dict) -> dict:
    """The DigitSpheres settings a run's run.json keeps (what the equivariance report redraws)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()
            if k in ("nside", "faces", "digits", "half_width")}


def _logits_labels(model, x, y):
    """Logits and labels on the pixels the model predicts: the flat model's are its image pixels."""
    import torch

    from heal_swin.models import EquirectangularAdapter

    if not isinstance(model, EquirectangularAdapter):
        return model(x), y
    y_img = torch.cat([y, y.new_zeros(y.shape[0], 1)], dim=-1).index_select(-1, model.to_image)
    return model.net(model.image(x)).flatten(-2), y_img


def _miou(pred, y, num_classes: int) -> float:
    from heal_swin.tasks import ConfusionMatrix

    conf = ConfusionMatrix(num_classes)
    conf.update(pred, y)
    return conf.summary()["miou"]


def budget(model: str, cfg: dict) -> dict:
    """The steps and learning rate of a model's family (BUDGETS), scaled by --steps-scale."""
    from heal_swin.models import model_info

    b = dict(BUDGETS[model_info(parse_model(model)[0]).family])
    b["steps"] = max(1, int(round(b["steps"] * cfg["steps_scale"])))
    if cfg.get("lr"):
        b["lr"] = cfg["lr"]
    return b


# --------------------------------------------------------------------------- one run


def train_one(job: dict) -> dict:
    """Train `job["model"]` on spheres rotated by `job["augment"]` of SO(3); score on the test sets; save
    the run (run.json + weights) for the ensemble measurement and `heal-swin-equivariance`."""
    import torch

    from heal_swin.data.digits import NUM_CLASSES
    from heal_swin.tools.equivariance import build_digits_model, save_digits_run

    torch.set_num_threads(job["threads"])
    cfg, device = job["cfg"], torch.device(job["device"])
    b = budget(job["model"], cfg)
    torch.manual_seed(job["seed"])
    train = _data(cfg, "train", job["augment"], cfg["train"], 1000 + job["seed"])
    name, kwargs = parse_model(job["model"])
    meta = {"kind": "digits", "model": name, "model_kwargs": kwargs, "data": _data_meta(cfg)}
    model = build_digits_model(meta).to(device)
    params = sum(p.numel() for p in model.parameters())
    counts = torch.bincount(train.y.flatten(), minlength=NUM_CLASSES).double()
    weight = (counts.sum() / counts.clamp_min(1)).sqrt()
    weight = (weight / weight.mean()).float().to(device)            # inverse-sqrt frequency, the same for all
    opt = torch.optim.AdamW(model.parameters(), lr=b["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, b["lr"], total_steps=b["steps"], pct_start=0.1)
    gen = torch.Generator().manual_seed(job["seed"])
    model.train()
    start = time.perf_counter()
    for _ in range(b["steps"]):
        idx = torch.randint(0, len(train), (cfg["batch"],), generator=gen)
        x, y = train.x[idx].to(device), train.y[idx].to(device)
        logits, target = _logits_labels(model, x, y)
        loss = torch.nn.functional.cross_entropy(logits, target, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.perf_counter() - start
    model.eval()
    row = dict(model=job["model"], augment=job["augment"], seed=job["seed"], params=params, steps=b["steps"],
               lr=b["lr"], batch=cfg["batch"], train_s=round(train_s, 1), loss=round(loss.item(), 4))
    with torch.no_grad():
        for test_name, rotate in (("upright", 0.0), ("rotated", 1.0)):
            test = _test_set(cfg["nside"], tuple(cfg["faces"]), tuple(cfg["digits"]), cfg["half_width"], rotate,
                             cfg["test"])
            pred = torch.cat([model(test.x[i:i + 16].to(device)).argmax(1).cpu()
                              for i in range(0, len(test), 16)])
            row[f"miou_{test_name}"] = round(_miou(pred, test.y, NUM_CLASSES), 4)
        x1 = test.x[:1].to(device)
        model(x1)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            model(x1)
            times.append(time.perf_counter() - t)
        row["latency_ms"] = round(1e3 * sorted(times)[2], 2)
    save_digits_run(job["run_dir"], name, kwargs, _data_meta(cfg), model,
                    extra={"train": {"augment": job["augment"], "seed": job["seed"], **b, "batch": cfg["batch"],
                                     "spheres": cfg["train"]}, "cfg": _jsonable(cfg), "result": row})
    return row


def _jsonable(cfg: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


# --------------------------------------------------------------------------- ensembles


def ensemble_errors(cfg: dict, name: str, run_dirs: list, rotations: int, device: str = "cpu") -> list:
    """Equivariance error of each member and of the mean of the first K members, as 1 − the mIoU between
    f(R·x) and R·f(x) (`heal_swin.tools.equivariance`) over random rotations R of the held-out spheres,
    drawn turned; the same measure on the labels (drawn turned against moved) is the floor."""
    from heal_swin.tools import equivariance as eq

    members, source = eq.load_runs(run_dirs, "test", cfg["ens_samples"], device)
    rots = [r for r in eq.rotations_for(source, "so3", rotations, seed=11) if r[1] == "so3"]

    def error(ms):
        res = eq.measure(ms, source, rots, progress=False)
        return (float(np.mean([1 - r["miou_between"] for r in res["rows"]])),
                float(np.mean([r["task_miou"] for r in res["rows"]])),
                float(np.mean([1 - r["floor_miou"] for r in res["rows"]])))

    rows = []
    for k in range(1, len(members) + 1):
        ens_err, ens_miou, floor = error(members[:k])
        mem_err, mem_miou, _ = error(members[k - 1:k])
        rows.append(dict(model=name, k=k, ensemble_error=round(ens_err, 4), member_error=round(mem_err, 4),
                         ensemble_miou_rotated=round(ens_miou, 4), member_miou_rotated=round(mem_miou, 4),
                         floor=round(floor, 4)))
    return rows


# --------------------------------------------------------------------------- report


def _summary(rows: list) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault((r["model"], r["augment"]), []).append(r)
    return out


def write_report(out: Path, rows: list, ens: list, cfg: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _summary(rows)
    lines = [f"nside {cfg['nside']}, faces {cfg['faces_text']}, {cfg['digits'][0]}-{cfg['digits'][1]} digits per sphere "
             f"(half width {cfg['half_width']} rad), {cfg['train']} training spheres, {cfg['test']} test spheres per "
             f"test set, batch {cfg['batch']}, AdamW (one-cycle), steps and lr per family; mean ± std over seeds", "",
             "| model | parameters | steps, lr | train augmentation (fraction of SO(3)) | seeds | mIoU upright test | "
             "mIoU rotated test | train time | latency (batch 1) |", "|---|---|---|---|---|---|---|---|---|"]
    for (model, aug), rs in sorted(groups.items()):
        up, rot = np.array([r["miou_upright"] for r in rs]), np.array([r["miou_rotated"] for r in rs])
        lines.append(f"| {model} | {rs[0]['params']:,} | {rs[0]['steps']}, {rs[0]['lr']:g} | {aug:g} | {len(rs)} | {up.mean():.3f} ± {up.std():.3f} | "
                     f"{rot.mean():.3f} ± {rot.std():.3f} | {np.mean([r['train_s'] for r in rs]):.0f} s | "
                     f"{np.mean([r['latency_ms'] for r in rs]):.1f} ms |")
    if ens:
        lines += ["", "Equivariance error: 1 − mIoU between f(R·x) and R·f(x) over random rotations R of "
                  f"{cfg['ens_samples']} held-out spheres (drawn turned; the prediction moved by the nearest pixel).", "",
                  "| model | K | member k's equivariance error | ensemble (first K) equivariance error | member k's mIoU "
                  "rotated | ensemble mIoU rotated | floor (labels drawn turned vs moved) |", "|---|---|---|---|---|---|---|"]
        for e in ens:
            lines.append(f"| {e['model']} | {e['k']} | {e['member_error']:.4f} | {e['ensemble_error']:.4f} | "
                         f"{e['member_miou_rotated']:.3f} | {e['ensemble_miou_rotated']:.3f} | {e['floor']:.4f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model in sorted({m for m, _ in groups}):
        augs = sorted(a for m, a in groups if m == model)
        mean = [np.mean([r["miou_rotated"] for r in groups[(model, a)]]) for a in augs]
        std = [np.std([r["miou_rotated"] for r in groups[(model, a)]]) for a in augs]
        ax.errorbar(augs, mean, yerr=std, marker="o", capsize=3, label=model,
                    linestyle="--" if model in EQUIVARIANT else "-")
    ax.set_xlabel("training augmentation (fraction of SO(3) rotation angles)")
    ax.set_ylabel("mIoU on fully rotated test spheres")
    ax.set_title(f"Rotated digits, nside {cfg['nside']}: equivariance vs augmentation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "miou_vs_augmentation.png", dpi=120)
    plt.close(fig)
    if ens:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for model in sorted({e["model"] for e in ens}):
            es = [e for e in ens if e["model"] == model]
            ax.plot([e["k"] for e in es], [e["ensemble_error"] for e in es], marker="o", label=f"{model}: ensemble mean")
            ax.plot([e["k"] for e in es], [e["member_error"] for e in es], marker="x", linestyle=":",
                    label=f"{model}: member k")
        ax.axhline(ens[0]["floor"], color="grey", linewidth=1, label="floor (labels moved, nearest pixel)")
        ax.set_xlabel("ensemble size K")
        ax.set_ylabel("equivariance error: 1 − mIoU(f(Rx), R f(x))")
        ax.set_title("Emergent equivariance of ensembles (full SO(3) augmentation)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "ensemble_equivariance.png", dpi=120)
        plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/rotated_digits")
    p.add_argument("--models", nargs="+", default=["heal_swin_tiny", SYMMETRIC, "gauge_cnn_tiny", "s2cnn_digits", FLAT],
                   help="registry names, with keyword overrides as NAME:key=value,...")
    p.add_argument("--augment", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--ensemble", type=int, default=5, help="members per ensemble (0: no ensemble part)")
    p.add_argument("--ensemble-models", nargs="+", default=["heal_swin_tiny", FLAT])
    p.add_argument("--ensemble-rotations", type=int, default=4, help="random rotations in the ensemble measure")
    p.add_argument("--nside", type=int, default=None)
    p.add_argument("--faces", default="all", help="all or 0-7")
    p.add_argument("--train", type=int, default=None, help="training spheres")
    p.add_argument("--test", type=int, default=None, help="test spheres per test set")
    p.add_argument("--digits", type=int, nargs=2, default=(3, 5), metavar=("MIN", "MAX"), help="digits per sphere")
    p.add_argument("--half-width", type=float, default=0.5, help="a digit's half width in the tangent plane (rad)")
    p.add_argument("--steps-scale", type=float, default=None, help="multiply every family's steps (BUDGETS)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=None, help="one learning rate for every family (default: BUDGETS)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="nside 32, 4x spheres and steps (a GPU run)")
    args = p.parse_args(argv)

    from heal_swin import grid, models

    for m in args.models + args.ensemble_models:
        models.model_info(parse_model(m)[0])
    scale = 4 if args.full else 1
    faces = grid.parse_base_pixels(args.faces) if args.faces != "all" else tuple(range(12))
    cfg = dict(nside=args.nside or (32 if args.full else 16), faces=tuple(faces), faces_text=args.faces,
               train=args.train or 400 * scale, test=args.test or 100, digits=tuple(args.digits),
               half_width=args.half_width, steps_scale=args.steps_scale or float(scale), batch=args.batch,
               lr=args.lr, ens_samples=50)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    jobs, rows = [], []
    for model in args.models:
        augs = [a for a in args.augment if a in (0.0, 1.0)] if model in EQUIVARIANT else args.augment
        extra = range(args.seeds, max(args.seeds, args.ensemble)) if model in args.ensemble_models else range(0)
        for aug in augs:
            for seed in list(range(args.seeds)) + (list(extra) if aug == 1.0 else []):
                run_dir = out / "runs" / f"{run_name(model)}-aug{aug:g}-seed{seed}"
                kept = _kept(run_dir, cfg)
                if kept is not None:
                    rows.append(kept)
                    continue
                jobs.append(dict(model=model, augment=aug, seed=seed, cfg=cfg, device=args.device,
                                 threads=args.threads, run_dir=str(run_dir)))
    jobs.sort(key=lambda j: j["model"] not in EQUIVARIANT)             # the slow ones first
    print(f"{len(jobs)} runs to train ({len(rows)} kept), {args.workers} workers", flush=True)
    from tqdm import tqdm

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    with ProcessPoolExecutor(args.workers) as pool:
        for row in tqdm(pool.map(train_one, jobs), total=len(jobs), desc="runs"):
            rows.append(row)
            print(json.dumps(row), flush=True)
    ens = []
    if args.ensemble:
        for model in args.ensemble_models:
            dirs = [out / "runs" / f"{run_name(model)}-aug1-seed{s}" for s in range(max(args.seeds, args.ensemble))]
            dirs = [str(d) for d in dirs if (d / "run.json").is_file()][:args.ensemble]
            if dirs:
                ens += ensemble_errors(cfg, model, dirs, args.ensemble_rotations, args.device)
        with open(out / "ensembles.jsonl", "w") as f:
            for e in ens:
                f.write(json.dumps(e) + "\n")
    with open(out / "results.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    write_report(out, rows, ens, cfg)
    print((out / "results.md").read_text())
    return 0


def _kept(run_dir: Path, cfg: dict):
    """The result row of a finished run with these settings (a rerun keeps it), else None."""
    path = run_dir / "run.json"
    if not (path.is_file() and (run_dir / "weights.safetensors").is_file()):
        return None
    meta = json.loads(path.read_text())
    return meta["result"] if meta.get("cfg") == _jsonable(cfg) else None


if __name__ == "__main__":
    raise SystemExit(main())
