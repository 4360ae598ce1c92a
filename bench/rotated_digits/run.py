"""Equivariance versus augmentation: rotated-digits segmentation on the sphere, every backbone (issue #16).

    python bench/rotated_digits/run.py [--out runs/rotated_digits] [--workers 2] [--full]

Data: `heal_swin.data.digits` (scikit-learn's 8 × 8 digits, 1-3 per sphere, 11 classes), nside 16 on the
full sphere by default. Each non-equivariant backbone (heal_swin_tiny, gauge_cnn_tiny, and the flat
swin_unet_flat_tiny on a 32 × 96 θ-φ image of the sphere: the same pixel count, nearest-pixel resampling
both ways) trains on spheres rotated by an increasing fraction of SO(3) (--augment, default 0, ¼, ½, 1);
s2cnn_digits trains on upright (0) and fully rotated (1) spheres. Every run is scored on the same
held-out test spheres (digits from other source images), upright and fully rotated: mIoU over the
classes present, on the sphere's pixels. --seeds runs per setting (the spread is over seeds: model
init, data order, training spheres). Then, as in Gerken & Kessel 2024, an ensemble of --ensemble
members per model in --ensemble-models, trained with full augmentation: the equivariance error of each
member and of the ensemble mean (average of softmax outputs) for K = 1, 2, ..., against random rotations
R of the test spheres rendered exactly (`DigitSpheres(then_rotate=R)`): the fraction of pixels where
argmax f(R·x) differs from R·argmax f(x) (the prediction moved by R, nearest pixel), among the pixels
where either says "digit"; the same measure on the ground-truth labels is the floor that nearest-pixel
moving alone causes.

Writes OUT/results.jsonl (one row per trained model), OUT/ensembles.jsonl, OUT/results.md (tables),
OUT/miou_vs_augmentation.png and OUT/ensemble_equivariance.png. Runs are independent and spread over
--workers processes (1 torch thread each); a finished run's row is kept and not retrained on a rerun.
--full: nside 32, 4× the spheres and steps (GPU-sized; pass --device cuda).
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

EQUIVARIANT = {"s2cnn_digits"}
FLAT = "swin_unet_flat_tiny"


# --------------------------------------------------------------------------- data and models


def _flat_tables(nside: int, faces, shape):
    """Index of the nearest sphere pixel for each pixel of the (H, W) θ-φ image, and of the nearest image
    pixel for each sphere pixel (local NESTED indices over `faces`)."""
    from heal_swin import grid

    h, w = shape
    theta = (np.arange(h) + 0.5) * np.pi / h
    phi = (np.arange(w) + 0.5) * 2 * np.pi / w
    tt, pp = np.meshgrid(theta, phi, indexing="ij")
    glob = grid.ang2pix(nside, tt.ravel(), pp.ravel(), nest=True)
    local = grid.global_to_local(nside, faces, glob)
    sph_theta, sph_phi = grid.pix2ang(nside, grid.base_pixel_indices(nside, faces), nest=True)
    row = np.clip((sph_theta / np.pi * h).astype(np.int64), 0, h - 1)
    col = np.clip((np.mod(sph_phi, 2 * np.pi) / (2 * np.pi) * w).astype(np.int64), 0, w - 1)
    return np.asarray(local), row * w + col


class _Model:
    """A backbone with its input / output adapters: always (B, 1, N) sphere maps in, (B, 11, N) logits out."""

    def __init__(self, name: str, nside: int, faces, device):
        import torch

        from heal_swin import models
        from heal_swin.data.digits import NUM_CLASSES

        self.name, self.device = name, device
        if name == FLAT:
            npix = len(faces) * nside ** 2
            self.shape = (nside * 2, npix // (nside * 2))                   # 32 x 96 at nside 16, full sphere
            to_img, to_sph = _flat_tables(nside, faces, self.shape)
            self.to_img = torch.as_tensor(np.where(to_img >= 0, to_img, npix), device=device)
            self.to_sph = torch.as_tensor(to_sph, device=device)
            self.net = models.create_model(name, in_chans=1, num_classes=NUM_CLASSES, img_size=self.shape)
        else:
            self.net = models.create_model(name, in_chans=1, num_classes=NUM_CLASSES, nside=nside,
                                           base_pixels=faces)
        self.net.to(device)

    def image(self, x):
        import torch

        x = torch.cat([x, x.new_zeros(*x.shape[:-1], 1)], dim=-1)
        return x.index_select(-1, self.to_img).unflatten(-1, self.shape)

    def __call__(self, x):
        if self.name != FLAT:
            return self.net(x)
        return self.net(self.image(x)).flatten(-2).index_select(-1, self.to_sph)

    def train_logits_labels(self, x, y):
        """Logits and labels on the pixels the model predicts (the flat model: its image pixels)."""
        import torch

        if self.name != FLAT:
            return self.net(x), y
        y_img = torch.cat([y, y.new_zeros(y.shape[0], 1)], dim=-1).index_select(-1, self.to_img)
        return self.net(self.image(x)).flatten(-2), y_img


def _miou(pred, y, num_classes: int) -> float:
    import torch

    conf = torch.bincount(y.flatten() * num_classes + pred.flatten(), minlength=num_classes ** 2)
    conf = conf.reshape(num_classes, num_classes).double()
    inter, union = conf.diag(), conf.sum(0) + conf.sum(1) - conf.diag()
    present = union > 0
    return float((inter[present] / union[present]).mean())


def _data(cfg: dict, split: str, rotate: float, n: int, seed: int, then_rotate=None):
    from heal_swin.data.digits import DigitSpheres

    return DigitSpheres(n, nside=cfg["nside"], faces=cfg["faces"], split=split, rotate=rotate, seed=seed,
                        then_rotate=then_rotate)


@functools.lru_cache(maxsize=4)
def _test_set(nside: int, faces: tuple, rotate: float, n: int):
    """The held-out test spheres (seed 7), made once per worker process and shared by its runs."""
    return _data(dict(nside=nside, faces=faces), "test", rotate, n, 7)


# --------------------------------------------------------------------------- one run


def train_one(job: dict) -> dict:
    """Train `job["model"]` on spheres rotated by `job["augment"]` of SO(3); score on the test sets;
    save its weights for the ensemble measurement."""
    import torch

    from heal_swin.data.digits import NUM_CLASSES

    torch.set_num_threads(job["threads"])
    cfg, device = job["cfg"], torch.device(job["device"])
    torch.manual_seed(job["seed"])
    train = _data(cfg, "train", job["augment"], cfg["train"], 1000 + job["seed"])
    model = _Model(job["model"], cfg["nside"], cfg["faces"], device)
    params = sum(p.numel() for p in model.net.parameters())
    counts = torch.bincount(train.y.flatten(), minlength=NUM_CLASSES).double()
    weight = (counts.sum() / counts.clamp_min(1)).sqrt()
    weight = (weight / weight.mean()).float().to(device)            # inverse-sqrt frequency, the same for all
    opt = torch.optim.AdamW(model.net.parameters(), lr=cfg["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg["lr"], total_steps=cfg["steps"], pct_start=0.1)
    gen = torch.Generator().manual_seed(job["seed"])
    model.net.train()
    start = time.perf_counter()
    for _ in range(cfg["steps"]):
        idx = torch.randint(0, len(train), (cfg["batch"],), generator=gen)
        x, y = train.x[idx].to(device), train.y[idx].to(device)
        logits, target = model.train_logits_labels(x, y)
        loss = torch.nn.functional.cross_entropy(logits, target, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.perf_counter() - start
    model.net.eval()
    row = dict(model=job["model"], augment=job["augment"], seed=job["seed"], params=params,
               steps=cfg["steps"], batch=cfg["batch"], train_s=round(train_s, 1), loss=round(float(loss), 4))
    with torch.no_grad():
        for name, rotate in (("upright", 0.0), ("rotated", 1.0)):
            test = _test_set(cfg["nside"], tuple(cfg["faces"]), rotate, cfg["test"])
            pred = torch.cat([model(test.x[i:i + 16].to(device)).argmax(1).cpu()
                              for i in range(0, len(test), 16)])
            row[f"miou_{name}"] = round(_miou(pred, test.y, NUM_CLASSES), 4)
        x1 = test.x[:1].to(device)
        model(x1)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            model(x1)
            times.append(time.perf_counter() - t)
        row["latency_ms"] = round(1e3 * sorted(times)[2], 2)
    torch.save(model.net.state_dict(), job["weights"])
    return row


# --------------------------------------------------------------------------- ensembles


def _moved(pred, nside: int, faces, rotations):
    """R·g for per-pixel values g (n, N): (R·g)(p) = g(nearest pixel of R^-1 p)."""
    import torch

    from heal_swin import grid

    glob = grid.base_pixel_indices(nside, faces)
    v = np.stack(grid.pix2vec(nside, glob, nest=True), axis=1)
    out = torch.full_like(pred, -1)
    for i, r in enumerate(rotations):
        src = grid.global_to_local(nside, faces, grid.vec2pix(nside, *(v @ r).T, nest=True))  # R^T v = R^-1 v
        ok = torch.as_tensor(np.asarray(src) >= 0)
        out[i, ok] = pred[i, torch.as_tensor(np.asarray(src)[np.asarray(src) >= 0])]
    return out


def ensemble_errors(cfg: dict, name: str, weight_files: list, device: str = "cpu") -> list:
    """Equivariance error (and rotated-test mIoU) of each member and of the mean of the first K members."""
    import torch

    from heal_swin.data.digits import NUM_CLASSES, haar_rotations

    rng = np.random.default_rng(11)
    n = cfg["test"]
    rots = haar_rotations(rng, n, 1.0)
    base = _test_set(cfg["nside"], tuple(cfg["faces"]), 1.0, n)
    turned = _data(cfg, "test", 1.0, n, 7, then_rotate=rots)
    probs, probs_rot = [], []
    for path in weight_files:
        m = _Model(name, cfg["nside"], cfg["faces"], torch.device(device))
        m.net.load_state_dict(torch.load(path, map_location=device))
        m.net.eval()
        with torch.no_grad():
            probs.append(torch.cat([m(base.x[i:i + 16]).softmax(1) for i in range(0, n, 16)]))
            probs_rot.append(torch.cat([m(turned.x[i:i + 16]).softmax(1) for i in range(0, n, 16)]))

    def disagreement(a_rot, moved):
        """Pixels where the two differ, over the pixels where either is a digit (background is most of
        the sphere and would dilute the measure)."""
        valid = moved >= 0
        a_rot, moved = a_rot[valid], moved[valid]
        fg = (a_rot > 0) | (moved > 0)
        return float((a_rot != moved)[fg].float().sum() / fg.float().sum().clamp_min(1))

    def err(p, p_rot):
        return disagreement(p_rot.argmax(1), _moved(p.argmax(1), cfg["nside"], cfg["faces"], rots))

    floor = disagreement(turned.y, _moved(base.y, cfg["nside"], cfg["faces"], rots))
    rows = []
    for k in range(1, len(weight_files) + 1):
        mean, mean_rot = torch.stack(probs[:k]).mean(0), torch.stack(probs_rot[:k]).mean(0)
        rows.append(dict(model=name, k=k, ensemble_error=round(err(mean, mean_rot), 4),
                         member_error=round(err(probs[k - 1], probs_rot[k - 1]), 4),
                         ensemble_miou_rotated=round(_miou(mean.argmax(1), base.y, NUM_CLASSES), 4),
                         member_miou_rotated=round(_miou(probs[k - 1].argmax(1), base.y, NUM_CLASSES), 4),
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
    lines = [f"nside {cfg['nside']}, faces {cfg['faces_text']}, {cfg['train']} training spheres, {cfg['test']} test "
             f"spheres per test set, {cfg['steps']} steps of batch {cfg['batch']}, AdamW (one-cycle, lr {cfg['lr']}), "
             "mean ± std over seeds", "",
             "| model | parameters | train augmentation (fraction of SO(3)) | seeds | mIoU upright test | "
             "mIoU rotated test | train time | latency (batch 1) |", "|---|---|---|---|---|---|---|---|"]
    for (model, aug), rs in sorted(groups.items()):
        up, rot = np.array([r["miou_upright"] for r in rs]), np.array([r["miou_rotated"] for r in rs])
        lines.append(f"| {model} | {rs[0]['params']:,} | {aug:g} | {len(rs)} | {up.mean():.3f} ± {up.std():.3f} | "
                     f"{rot.mean():.3f} ± {rot.std():.3f} | {np.mean([r['train_s'] for r in rs]):.0f} s | "
                     f"{np.mean([r['latency_ms'] for r in rs]):.1f} ms |")
    if ens:
        lines += ["", "| model | K | member equivariance error | ensemble equivariance error | member mIoU rotated | "
                  "ensemble mIoU rotated | floor (labels moved) |", "|---|---|---|---|---|---|---|"]
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
        ax.set_ylabel("equivariance error (pixels changed)")
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
    p.add_argument("--models", nargs="+", default=["heal_swin_tiny", "gauge_cnn_tiny", "s2cnn_digits", FLAT])
    p.add_argument("--augment", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--ensemble", type=int, default=5, help="members per ensemble (0: no ensemble part)")
    p.add_argument("--ensemble-models", nargs="+", default=["heal_swin_tiny", FLAT])
    p.add_argument("--nside", type=int, default=None)
    p.add_argument("--faces", default="all", help="all or 0-7")
    p.add_argument("--train", type=int, default=None, help="training spheres")
    p.add_argument("--test", type=int, default=None, help="test spheres per test set")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--device", default="cpu")
    p.add_argument("--full", action="store_true", help="nside 32, 4x spheres and steps (a GPU run)")
    args = p.parse_args(argv)

    from heal_swin import grid, models

    for m in args.models + args.ensemble_models:
        models.model_info(m)
    scale = 4 if args.full else 1
    faces = grid.parse_base_pixels(args.faces) if args.faces != "all" else tuple(range(12))
    cfg = dict(nside=args.nside or (32 if args.full else 16), faces=tuple(faces), faces_text=args.faces,
               train=args.train or 400 * scale, test=args.test or 100, steps=args.steps or 150 * scale,
               batch=args.batch, lr=args.lr)
    out = Path(args.out)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    done_path = out / "results.jsonl"
    done = {}
    if done_path.exists():
        for line in done_path.read_text().splitlines():
            r = json.loads(line)
            if r.get("cfg") == {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}:
                done[(r["model"], r["augment"], r["seed"])] = r
    jobs = []
    for model in args.models:
        augs = [a for a in args.augment if a in (0.0, 1.0)] if model in EQUIVARIANT else args.augment
        seeds = range(args.seeds)
        if model in args.ensemble_models and args.ensemble:
            extra = range(args.seeds, max(args.seeds, args.ensemble))
        else:
            extra = range(0)
        for aug in augs:
            for seed in list(seeds) + (list(extra) if aug == 1.0 else []):
                w = out / "weights" / f"{model}-aug{aug:g}-seed{seed}.pt"
                if (model, aug, seed) in done and w.exists():
                    continue
                jobs.append(dict(model=model, augment=aug, seed=seed, cfg=cfg, device=args.device,
                                 threads=args.threads, weights=str(w)))
    jobs.sort(key=lambda j: j["model"] not in EQUIVARIANT)             # the slow ones first
    print(f"{len(jobs)} runs to train ({len(done)} kept), {args.workers} workers", flush=True)
    from tqdm import tqdm

    rows = list(done.values())
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    with ProcessPoolExecutor(args.workers) as pool, open(done_path, "a") as f:
        for row in tqdm(pool.map(train_one, jobs), total=len(jobs), desc="runs"):
            row["cfg"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
            f.write(json.dumps(row) + "\n")
            f.flush()
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "cfg"}), flush=True)
    ens = []
    if args.ensemble:
        for model in args.ensemble_models:
            files = [out / "weights" / f"{model}-aug1-seed{s}.pt" for s in range(max(args.seeds, args.ensemble))]
            files = [str(w) for w in files if w.exists()][:args.ensemble]
            ens += ensemble_errors(cfg, model, files, args.device)
        with open(out / "ensembles.jsonl", "w") as f:
            for e in ens:
                f.write(json.dumps(e) + "\n")
    write_report(out, rows, ens, cfg)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
