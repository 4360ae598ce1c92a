"""The parts of the GPU check (issue #30): the report's tables, what each part measures, and the process
that measures them. `bench/gpu_check.py` plans the items, runs one process per part, enforces the time
limits and writes the report; this file is the measuring side.

    python bench/gpu/parts.py PART --config CFG.json --work DIR --items ID [ID ...]

PART is one of PARTS. The process appends JSON lines to DIR/PART.jsonl as it goes: {"event": "start", "item"},
{"event": "row", "item", "table", "row"}, {"event": "end", "item"}; a figure it could not take is None with
its reason in row["missing"][column]. It exits with EXIT_CUDA after a CUDA error that leaves the device
unusable (the check starts a fresh process for the remaining items). Nothing here asserts: a failure is a
figure's reason, so one broken measurement leaves the rest of the report.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PARTS = ("train", "infer", "onnx", "harmonics", "research")
EXIT_CUDA = 3
NO_CUDA = "skipped: no CUDA device"
NO_DROPOUT = dict(drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)
AMP = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
# Fused against plain kernels, relative to the largest magnitude (outputs) or to the norm (each gradient):
# float32 as the library's float32 tolerance (heal_swin.equivariance.TOLERANCE), the half types about eight
# units of their last place (2^-7 bf16, 2^-10 fp16).
AGREE_TOL = {"fp32": 1e-4, "bf16": 6e-2, "fp16": 1e-2}
# The export rules (heal_swin.export.compare_onnx; README, "Export and inference"): fp32 logits within 1e-4 of
# the largest, fp16 argmax agreement >= 99.5 %. The check's smoke run compares this text with the library's
# own on the CPU provider, so the two cannot drift apart unseen (tests/test_gpu_check.py).
PARITY_RULE = {"fp32": ("rel", 1e-4), "fp16": ("argmax", 0.995)}


# ----------------------------------------------------------------------------- the report's tables

@dataclass(frozen=True)
class Col:
    key: str
    header: str
    is_key: bool = False            # identifies the row; every other column is a figure or has a reason
    fmt: str = ""                   # "ms", "int", "sci", "pct", "" (as is)


@dataclass(frozen=True)
class Table:
    part: str
    title: str
    columns: tuple
    note: str = ""

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.columns if c.is_key]

    @property
    def figures(self) -> list[str]:
        return [c.key for c in self.columns if not c.is_key]


def _k(key, header, fmt=""):
    return Col(key, header, True, fmt)


TABLES = {
    "train.steps": Table("train", "Training steps (forward, loss, backward, AdamW step; the same batch every step)", (
        _k("model", "model"), _k("kernels", "kernels"), _k("dtype", "autocast"), Col("grid", "grid"),
        Col("batch", "batch", fmt="int"), Col("params", "parameters", fmt="int"),
        Col("step_ms", "median warm step (ms)", fmt="ms"), Col("images_per_s", "images/s", fmt="ms"),
        Col("peak_mib", "peak CUDA memory (MiB)", fmt="int"), Col("loss_first", "loss, first step", fmt="ms"),
        Col("loss_last", "loss, last step", fmt="ms"), Col("loss_down", "loss went down"),
        Col("steps_taken", "optimiser steps taken"))),
    "train.agree": Table("train", "Fused kernels against `fused=False` on one batch (train mode, no dropout)", (
        _k("model", "model"), _k("dtype", "autocast"), Col("out_rel", "output: max abs diff / max abs", fmt="sci"),
        Col("grad_rel", "worst gradient ‖diff‖ / ‖grad‖", fmt="sci"),
        Col("fused_out_err", "fused against float32: output", fmt="sci"),
        Col("fused_grad_err", "fused against float32: gradient", fmt="sci"),
        Col("plain_out_err", "plain against float32: output", fmt="sci"),
        Col("plain_grad_err", "plain against float32: gradient", fmt="sci"),
        Col("tolerance", "tolerance", fmt="sci"), Col("agree", "agree"))),
    "infer.eager": Table("infer", "Eager PyTorch inference (eval, inference mode)", (
        _k("model", "model"), _k("dtype", "autocast"), Col("grid", "grid"),
        Col("latency_ms", "latency, batch 1 (ms)", fmt="ms"), Col("throughput", "throughput, batch 8 (images/s)", fmt="ms"),
        Col("peak_mib", "peak CUDA memory, batch 8 (MiB)", fmt="int"))),
    "onnx.exports": Table("onnx", "Exported graphs (random weights, opset and exporter as export.py)", (
        _k("model", "model"), _k("graph", "graph"), Col("input", "input"), Col("exporter", "exporter"),
        Col("export_s", "export (s)", fmt="ms"), Col("size_mib", "size (MiB)", fmt="ms"),
        Col("fp16_s", "fp16 conversion (s)", fmt="ms"), Col("eager_ms", "PyTorch eager fp32, batch 1 (ms)", fmt="ms"))),
    "onnx.sessions": Table("onnx", "ONNX Runtime sessions (batch 1; latency includes the copies to and from the device; "
                                   "parity against PyTorch float32 without TF32)", (
        _k("model", "model"), _k("graph", "graph"), _k("provider", "provider asked"), _k("precision", "precision"),
        Col("session_s", "session start + first run (s)", fmt="ms"), Col("providers_got", "providers the session got"),
        Col("placement", "kernel time by provider (nodes)"), Col("latency_ms", "latency (ms)", fmt="ms"),
        Col("parity", "parity against PyTorch"), Col("rule", "export rule"), Col("passed", "passed"))),
    "onnx.refusal": Table("onnx", "OnnxPredictor refuses a silent CPU fallback", (
        _k("check", "check"), Col("refused", "refused"), Col("message", "message"))),
    "harmonics.parity": Table("harmonics", "RealSHT / InverseRealSHT against healpy on one map (the device, float32)", (
        _k("transform", "transform"), _k("dtype", "dtype"), Col("nside", "nside", fmt="int"), Col("lmax", "lmax", fmt="int"),
        Col("reference", "reference"), Col("rel_err", "max abs diff / max abs reference", fmt="sci"),
        Col("tolerance", "tolerance", fmt="sci"), Col("agree", "agree"))),
    "harmonics.time": Table("harmonics", "Spherical harmonic transforms per batch (full sphere, lmax = 2·nside)", (
        _k("transform", "transform"), _k("dtype", "dtype"), Col("nside", "nside", fmt="int"),
        Col("batch", "maps per call", fmt="int"), Col("build_s", "table build, both transforms (s)", fmt="ms"),
        Col("table_mib", "tables (MiB)", fmt="ms"), Col("fwd_ms", "forward (ms)", fmt="ms"),
        Col("fwd_bwd_ms", "forward + backward (ms)", fmt="ms"), Col("maps_per_s", "maps/s, forward", fmt="ms"))),
    "harmonics.so3": Table("harmonics", "SO3Activation at the S2CNNs' bandwidths (synthesis, GroupNorm, ReLU, analysis)", (
        _k("model", "model"), _k("b", "bandwidth", fmt="int"), _k("channels", "channels", fmt="int"),
        Col("grid", "SO(3) grid (nside × γ)"), Col("layers", "layers like it", fmt="int"),
        Col("batch", "batch", fmt="int"), Col("fwd_ms", "forward (ms)", fmt="ms"),
        Col("fwd_bwd_ms", "forward + backward (ms)", fmt="ms"))),
    "research.arms": Table("research", "A few steps of each arm group at the studies' --full settings (seed 0, through the trainer)", (
        _k("study", "study"), _k("arm", "arm"), _k("task", "task"), Col("grid", "grid"), Col("batch", "batch", fmt="int"),
        Col("steps_run", "steps run", fmt="int"), Col("step_s", "median step (s)", fmt="ms"),
        Col("full_steps", "steps at --full", fmt="int"), Col("runs", "runs at --full", fmt="int"),
        Col("est_h", "estimated training (h)", fmt="ms"), Col("loss_first", "loss, first step", fmt="ms"),
        Col("loss_last", "loss, last step", fmt="ms"))),
    "research.summary": Table("research", "The full runs (separate commands; training time estimated from the steps above)", (
        _k("study", "study"), Col("command", "command"), Col("runs", "runs", fmt="int"),
        Col("measured", "arm groups measured"), Col("est_h", "estimated training on one GPU (h)", fmt="ms"))),
}

STUDIES = {"learning": "bench/learning/study.py", "rotated_digits": "bench/rotated_digits/study.py",
           "paper": "bench/paper/study.py", "ensembles": "bench/ensembles/study.py", "pose": "bench/pose/study.py"}
# the full run of each study (the learning study's --full picks the device itself)
STUDY_COMMANDS = {name: f"heal-swin-study {path} --full{'' if name == 'learning' else ' --device cuda'} "
                        f"--out runs/{name}_full" for name, path in STUDIES.items()}


@dataclass
class Item:
    """One measurement unit of a part: its id, its time limit, the rows it should produce (table, key)."""
    part: str
    id: str
    limit_s: float
    rows: list = field(default_factory=list)
    skip: str | None = None          # planned as skipped, with the reason (no CUDA device, ...)


# ----------------------------------------------------------------------------- planning (no torch work)

def has_fused(name: str) -> bool:
    """Whether a variant has the fused kernels and `fused=False` (a test-size build tells)."""
    from heal_swin import models

    info = models.model_info(name)
    model = models.create_model(name, **_size_kwargs(info, {"smoke": True}))
    return any(hasattr(m, "fused") for m in model.modules())


def plan(cfg: dict) -> list[Item]:
    """Every part's items, in the order they run, with the rows each should produce."""
    from heal_swin import models

    cuda, smoke = cfg["cuda"], cfg["smoke"]
    lim = cfg["item_limits"]
    items: list[Item] = []
    gpu_only = None if cuda or smoke else "skipped: no CUDA device (the full sizes need a GPU; --smoke runs " \
                                          "tiny sizes on a CPU)"
    for name in cfg["train"]["models"]:
        fused = has_fused(name)
        rows = [("train.steps", dict(model=name, kernels=k, dtype=d)) for k in (("fused", "plain") if fused else
                                                                                ("default",))
                for d in cfg["train"]["dtypes"]]
        rows += [("train.agree", dict(model=name, dtype=d)) for d in cfg["train"]["dtypes"]] if fused else []
        items.append(Item("train", name, lim["train"], rows, gpu_only))
    for name in cfg["infer"]["models"]:
        items.append(Item("infer", name, lim["infer"],
                          [("infer.eager", dict(model=name, dtype=d)) for d in cfg["infer"]["dtypes"]], gpu_only))
    providers = ["cuda"] + ([] if cuda else ["cpu"]) + ["tensorrt"]
    first = True
    for name in cfg["onnx"]["models"]:           # per graph: the export, then its sessions, TensorRT's last
        flat = models.model_info(name).domain == "flat"
        for graph in ["sphere"] + ([] if flat else ["fisheye"]):
            items.append(Item("onnx", f"{name}/{graph}/export", lim["onnx_export"],
                              [("onnx.exports", dict(model=name, graph=graph))], gpu_only))
            if first:
                items.append(Item("onnx", f"{name}/{graph}/refusal", lim["onnx_session"],
                                  [("onnx.refusal", dict(check="OnnxPredictor(device='cuda') on a session that got "
                                                                "only the CPU provider"))], gpu_only))
                first = False
            for provider in providers:
                for precision in cfg["onnx"]["precisions"]:
                    needs_cuda = provider != "cpu" and not cuda
                    items.append(Item("onnx", f"{name}/{graph}/{provider}/{precision}",
                                      lim["onnx_tensorrt" if provider == "tensorrt" else "onnx_session"],
                                      [("onnx.sessions", dict(model=name, graph=graph, provider=provider,
                                                              precision=precision))],
                                      gpu_only or (NO_CUDA if needs_cuda else None)))
        if flat:
            items.append(Item("onnx", f"{name}/fisheye/none", 0, [("onnx.exports", dict(model=name, graph="fisheye"))],
                              f"no fisheye graph: {name} is a flat model (export.py bakes the projection into "
                              "HEALPix models only)"))
    for name in cfg["harmonics"]["so3_models"]:
        items.append(Item("harmonics", f"so3/{name}", lim["harmonics_so3"], [("harmonics.so3", dict(model=name))],
                          gpu_only))
    items.append(Item("harmonics", "sht", lim["harmonics_sht"],
                      [("harmonics.parity", dict(transform=t, dtype="float32")) for t in ("RealSHT", "InverseRealSHT")]
                      + [("harmonics.time", dict(transform=t, dtype="float32")) for t in ("RealSHT", "InverseRealSHT")],
                      gpu_only))
    per_study = cfg["research"].get("groups_per_study")
    counts: dict = {}
    for study, arm, task in research_groups(cfg):
        counts[study] = counts.get(study, 0) + 1
        beyond = per_study is not None and counts[study] > per_study
        items.append(Item("research", f"{study}/{task}/{arm}", lim["research"],
                          [("research.arms", dict(study=study, arm=arm, task=task))],
                          gpu_only or (f"skipped: --smoke runs the first {per_study} arm group(s) of each study"
                                       if beyond else None)))
    return items


def _study(study: str, cfg: dict):
    """The study of a study file at its --full settings (its make(options), as heal-swin-study builds it)."""
    from heal_swin.study.cli import build_parser, load_study_file

    path = ROOT / STUDIES[study]
    module = load_study_file(path)
    parser = build_parser()
    if callable(getattr(module, "add_arguments", None)):
        module.add_arguments(parser.add_argument_group(str(path)))
    return module.make(parser.parse_args([str(path), "--full"]))


def research_groups(cfg: dict) -> list[tuple[str, str, str]]:
    """(study, arm group, task) of every arm group of the studies, taken in turns: every study's first group,
    then every study's second, and so on (a part cut short by its time limit still has a figure for each study),
    the depth arms last (the segmentation backbones again: the least new)."""
    ranked = []
    for order, study in enumerate(cfg["research"]["studies"]):
        seen = []
        for arm in _study(study, cfg).arms:
            if (arm.group, arm.task) not in seen:
                seen.append((arm.group, arm.task))
        ranked += [((t == "depth", rank, order), (study, g, t)) for rank, (g, t) in enumerate(seen)]
    return [group for _, group in sorted(ranked, key=lambda r: r[0])]


# ----------------------------------------------------------------------------- the measuring process

class Emitter:
    """Appends the process's events to DIR/PART.jsonl (flushed each line: a killed process keeps its rows)."""

    def __init__(self, path: Path):
        self.f = open(path, "a", buffering=1)
        self.item = None

    def event(self, event: str, **kw) -> None:
        self.f.write(json.dumps({"event": event, "item": self.item, "t": time.time(), **kw}) + "\n")

    def row(self, table: str, row: dict) -> None:
        missing = row.setdefault("missing", {})
        for col in TABLES[table].figures:
            if row.get(col) is None and col not in missing:
                missing[col] = "not measured"
        self.event("row", table=table, row=_jsonable(row))


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)                         # nan / inf as text: valid JSON, and visible
    if hasattr(v, "item") and callable(v.item):
        return _jsonable(v.item())
    return v


def reason_of(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    return f"failed: {type(err).__name__}: {first[:300]}"


def is_fatal_cuda(err: BaseException) -> bool:
    """A CUDA error after which the process's CUDA context is unusable (not out-of-memory, which is not)."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return False
    return isinstance(err, getattr(torch, "AcceleratorError", ())) or "CUDA error" in str(err)


def guarded(emit: Emitter, table: str, key: dict, fn) -> None:
    """Emit fn()'s row for `key`; on failure a row with the reason for every figure (and re-raise a fatal
    CUDA error, so the process ends and the check goes on in a fresh one)."""
    try:
        row = fn()
    except Exception as err:            # every failure becomes the figures' reason
        emit.row(table, {**key, "missing": {c: reason_of(err) for c in TABLES[table].figures}})
        if is_fatal_cuda(err):
            raise
    else:
        emit.row(table, {**key, **row})
        return
    _free()                             # here the failed call's frames (and its device memory) are released


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Clock:
    """Wall time of device work: synchronises the device before reading the clock."""

    def __init__(self, device):
        import torch

        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def time(self, fn) -> float:
        self.sync()
        t = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t


def _size_kwargs(info, cfg: dict) -> dict:
    """The build of a variant at the check's size: its test build (--smoke), else its registered size on
    the check's grid (HEALPix: nside and faces; flat: the equirectangular image of that grid, as many
    pixels as nside 256 over faces 0-7 at 512 × 1024, swin_unet_flat_paper's registered size)."""
    from heal_swin import models

    kw = {"in_chans": 3, "num_classes": 10}
    if cfg["smoke"]:
        kw.update(info.test_kwargs)
        if info.domain == "healpix":
            kw["base_pixels"] = tuple(range(8))
        return kw
    if info.domain == "healpix":
        kw.update(nside=cfg["nside"], base_pixels=tuple(cfg["faces"]))
    else:
        kw["img_size"] = models.equirectangular_shape(cfg["nside"], tuple(cfg["faces"]))
    return kw


def build(name: str, cfg: dict, **extra):
    from heal_swin import models
    import torch

    torch.manual_seed(0)
    return models.create_model(name, **{**_size_kwargs(models.model_info(name), cfg), **extra})


def grid_text(model) -> str:
    if hasattr(model, "img_size"):
        return f"{model.img_size[0]}×{model.img_size[1]}"
    faces = list(model.faces)
    text = f"{faces[0]}–{faces[-1]}" if faces == list(range(faces[0], faces[-1] + 1)) else str(faces)
    return f"nside {model.nside}, faces {text}"


def model_input(model, batch: int, device, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    shape = (batch, model.in_chans, *model.img_size) if hasattr(model, "img_size") else \
        (batch, model.in_chans, len(model.faces) * model.nside ** 2)
    return torch.randn(shape, generator=gen).to(device)


def _autocast(device, dtype: str):
    import torch

    return torch.autocast(device.type, dtype=getattr(torch, AMP[dtype] or "float32"), enabled=dtype != "fp32")


def _peak(device, row: dict, col: str) -> None:
    import torch

    if device.type == "cuda":
        row[col] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        row.setdefault("missing", {})[col] = "no CUDA device"


def _reset_peak(device) -> None:
    import torch

    _free()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


# ----------------------------------------------------------------------------- 1. training

def measure_train(cfg: dict, name: str, emit: Emitter) -> None:
    import torch

    device = torch.device(cfg["device"])
    tc = cfg["train"]
    base = build(name, cfg)
    fused = any(hasattr(m, "fused") for m in base.modules())
    variants = {"default": base}
    if fused:
        plain = build(name, cfg, fused=False)
        plain.load_state_dict(base.state_dict())
        variants = {"fused": base, "plain": plain}
    x = model_input(base, tc["batch"], device)
    labels = (x[:, 0] > 1).long()              # learnable from the input: the loss must fall in a few steps
    params = sum(p.numel() for p in base.parameters())
    clock = Clock(device)
    for kernels, src in variants.items():
        for dtype in tc["dtypes"]:
            def run():
                _reset_peak(device)
                model = copy.deepcopy(src).to(device).train()
                opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"])
                scaler = torch.amp.GradScaler(device.type) if dtype == "fp16" else None
                losses, times, taken = [], [], 0

                def step():
                    nonlocal taken
                    with _autocast(device, dtype):
                        out = model(x)
                    loss = torch.nn.functional.cross_entropy(out.float(), labels)
                    if scaler is None:
                        loss.backward()
                        opt.step()
                        taken += 1
                    else:
                        scale = scaler.get_scale()
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                        taken += scaler.get_scale() >= scale     # a step with inf/NaN gradients lowers the scale
                    opt.zero_grad(set_to_none=True)
                    losses.append(loss.item())

                n = tc["warmup"] + tc["steps"]
                for _ in range(n):
                    times.append(clock.time(step))
                median = statistics.median(times[tc["warmup"]:])
                row = dict(grid=grid_text(model), batch=tc["batch"], params=params, step_ms=1e3 * median,
                           images_per_s=tc["batch"] / median, loss_first=losses[0], loss_last=losses[-1],
                           loss_down=bool(losses[-1] < losses[0]), steps_taken=f"{taken}/{n}", missing={})
                _peak(device, row, "peak_mib")
                if taken < n:
                    row["notes"] = [f"GradScaler skipped {n - taken} of {n} steps (inf/NaN gradients at its scale)"]
                del model, opt
                return row

            guarded(emit, "train.steps", dict(model=name, kernels=kernels, dtype=dtype), run)
    if not fused:
        return
    del variants, plain
    _free()
    # Dropout off, one batch: the fused path against plain autograd in each dtype, and both against plain
    # autograd in float32. A network at init can amplify rounding (post-norm on near-constant vectors), so in
    # a half type the two paths may differ by more than the tolerance while neither is worse than the other:
    # then they agree when the fused path is no farther from float32 than the plain one (x1.5 + the tolerance).
    ref = build(name, cfg, **NO_DROPOUT).to(device).train()
    other = build(name, cfg, fused=False, **NO_DROPOUT)
    other.load_state_dict(ref.state_dict())
    other = other.to(device).train()
    xb, lb = x[:1], labels[:1]

    def outputs_and_grads(model, dtype):
        model.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            out = model(xb)
        torch.nn.functional.cross_entropy(out.float(), lb).backward()
        return out.detach().float(), {n: p.grad.detach().float() for n, p in model.named_parameters()
                                      if p.grad is not None}

    def distance(a, b):
        """(output max |diff| / max |b|, worst gradient ‖diff‖ / ‖b‖) of a against b."""
        (out_a, g_a), (out_b, g_b) = a, b
        if set(g_a) != set(g_b):
            raise RuntimeError(f"the two paths give gradients to different parameters: {sorted(set(g_a) ^ set(g_b))[:4]}")
        out = ((out_a - out_b).abs().max() / out_b.abs().max().clamp_min(1e-30)).item()
        grad = max([((g_a[k] - g_b[k]).norm() / g_b[k].norm()).item() for k in g_b if g_b[k].norm() > 0] or [0.0])
        return out, grad

    base32 = None
    for dtype in tc["dtypes"]:
        def agree():
            nonlocal base32
            if base32 is None:
                base32 = outputs_and_grads(other, "fp32")
            fused_run, plain_run = outputs_and_grads(ref, dtype), outputs_and_grads(other, dtype)
            out_rel, grad_rel = distance(fused_run, plain_run)
            tol = AGREE_TOL[dtype]
            row = dict(out_rel=out_rel, grad_rel=grad_rel, tolerance=tol, notes=[])
            fused_err, plain_err = distance(fused_run, base32), distance(plain_run, base32)
            row.update(fused_out_err=fused_err[0], fused_grad_err=fused_err[1], plain_out_err=plain_err[0],
                       plain_grad_err=plain_err[1])
            if max(out_rel, grad_rel) <= tol:
                row["agree"] = True
            elif dtype == "fp32":
                row["agree"] = False
            else:
                row["agree"] = all(f <= 1.5 * p + tol for f, p in zip(fused_err, plain_err))
                row["notes"].append("beyond the tolerance from each other; " + (
                    "the fused path is as close to float32 as the plain one" if row["agree"] else
                    "the fused path is farther from float32 than the plain one"))
            return row

        guarded(emit, "train.agree", dict(model=name, dtype=dtype), agree)


# ----------------------------------------------------------------------------- 2. inference

def measure_infer(cfg: dict, name: str, emit: Emitter) -> None:
    import torch

    from _timing import median_ms

    device = torch.device(cfg["device"])
    ic = cfg["infer"]
    model = build(name, cfg).to(device).eval()
    clock = Clock(device)
    x1 = model_input(model, 1, device)
    xb = model_input(model, ic["batch"], device)
    for dtype in ic["dtypes"]:
        def run():
            row = dict(grid=grid_text(model), missing={})
            with torch.inference_mode(), _autocast(device, dtype):
                row["latency_ms"] = median_ms(lambda: model(x1), ic["repeats"], 2, clock.sync)
                _reset_peak(device)
                ms = median_ms(lambda: model(xb), max(3, ic["repeats"] // 2), 1, clock.sync)
            row["throughput"] = 1e3 * ic["batch"] / ms
            _peak(device, row, "peak_mib")
            return row

        guarded(emit, "infer.eager", dict(model=name, dtype=dtype), run)


# ----------------------------------------------------------------------------- 2. ONNX Runtime

def _camera(cfg):
    from heal_swin import cameras

    cam = cameras.load_calibration(cameras.FV_SAMPLE)
    size = cfg["onnx"].get("camera_size")
    return cam.resized(*size) if size else cam


def _graph(cfg, name: str, graph: str):
    """(module, input, metadata) of a model's sphere or fisheye-in graph, as export.py builds them."""
    import torch

    from heal_swin.export import FisheyeGraph, SphereGraph

    model = build(name, cfg).eval()
    gen = torch.Generator().manual_seed(1)
    meta = {"task": "segmentation", "model": name}
    if graph == "sphere":
        x = model_input(model, 2, "cpu")
        if hasattr(model, "img_size"):
            meta.update(input="flat", image_size=[model.img_size[1], model.img_size[0]])
        else:
            meta.update(input="sphere", nside=model.nside, base_pixels=list(model.faces))
        return SphereGraph(model, "segmentation").eval(), x, meta
    cam = _camera(cfg)
    module = FisheyeGraph(model, cam, model.nside, model.faces, "camera", (123.675, 116.28, 103.53),
                          (58.395, 57.12, 57.375), "segmentation").eval()
    meta.update(input="fisheye", image_size=[cam.width, cam.height], nside=model.nside,
                base_pixels=list(model.faces))
    return module, torch.rand(2, 3, cam.height, cam.width, generator=gen) * 255, meta


def _paths(work: Path, name: str, graph: str) -> dict:
    d = work / "onnx"
    d.mkdir(parents=True, exist_ok=True)
    stem = d / f"{name}-{graph}"
    return dict(fp32=Path(f"{stem}.onnx"), fp16=Path(f"{stem}-fp16.onnx"), x=Path(f"{stem}-x.npy"),
                ref=Path(f"{stem}-ref.npy"))


def onnx_export(cfg: dict, work: Path, name: str, graph: str, emit: Emitter) -> None:
    import numpy as np
    import torch

    from _timing import median_ms
    from heal_swin.export import convert_fp16, export_onnx

    device = torch.device(cfg["device"])
    paths = _paths(work, name, graph)

    def run():
        module, example, meta = _graph(cfg, name, graph)
        t = time.perf_counter()
        exporter, notes = export_onnx(module, example, paths["fp32"], output_names=(
            ("output",) if graph == "sphere" else ("output", "covered")), metadata=meta)
        row = dict(input="×".join(map(str, ["B", *example.shape[1:]])), exporter=exporter,
                   export_s=time.perf_counter() - t, size_mib=paths["fp32"].stat().st_size / 2 ** 20, notes=notes)
        t = time.perf_counter()
        convert_fp16(paths["fp32"], paths["fp16"])
        row["fp16_s"] = time.perf_counter() - t
        x = example[:1]
        module = module.to(device)
        xd = x.to(device)
        clock = Clock(device)
        with torch.inference_mode(), _no_tf32():     # the reference in true float32, as the export rules assume
            out = module(xd)
            ref = (out[0] if isinstance(out, tuple) else out).float().cpu().numpy()
        with torch.inference_mode():
            row["eager_ms"] = median_ms(lambda: module(xd), cfg["onnx"]["repeats"], 1, clock.sync)
        np.save(paths["x"], x.numpy())
        np.save(paths["ref"], ref)
        return row

    guarded(emit, "onnx.exports", dict(model=name, graph=graph), run)


@contextlib.contextmanager
def _no_tf32():
    """float32 matmuls and convolutions without TF32 (cuDNN uses it by default), restored afterwards."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def parity(ref, got, precision: str) -> tuple[str, str, bool]:
    """(value, rule, passed) of onnxruntime's output against PyTorch's by the export rules (class scores)."""
    import numpy as np

    if got.shape != ref.shape:
        raise ValueError(f"onnxruntime's output {got.shape} differs from PyTorch's {ref.shape}")
    if not np.array_equal(np.isfinite(ref), np.isfinite(got)):
        raise ValueError("onnxruntime and PyTorch disagree on which outputs are finite")
    both = np.isfinite(ref)
    kind, limit = PARITY_RULE[precision]
    if kind == "rel":
        diff = float(np.abs(got - ref)[both].max(initial=0.0))
        value = diff / max(float(np.abs(ref)[both].max(initial=0.0)), 1e-12)
        return f"{value:.3g}", f"{precision}: max |diff| / max |output| <= {limit:g}", value <= limit
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    return f"{100 * agree:.3f} %", f"{precision}: argmax agreement >= {100 * limit:g} %", agree >= limit


def _providers(provider: str, precision: str, work: Path, tag: str):
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    cache = work / "trt" / tag
    cache.mkdir(parents=True, exist_ok=True)
    # fp16 under TensorRT: the fp32 graph with TensorRT's own fp16 kernels (trt_fp16_enable), its usual use
    options = {"trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True,
               "trt_engine_cache_path": str(cache)}
    return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider", "CPUExecutionProvider"]


def placement(path, providers, x, work: Path, tag: str) -> str:
    """Kernel time and node count per provider from an onnxruntime profile of two runs: where the graph
    really ran (a provider in the session's list may still leave nodes to the CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / f"profile-{tag}")
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = ort.InferenceSession(str(path), opts, providers=providers)
    name = session.get_inputs()[0].name
    for _ in range(2):
        session.run(None, {name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    dur, nodes = {}, {}
    for e in events:
        provider = e.get("args", {}).get("provider")
        if e.get("cat") == "Node" and provider and e.get("name", "").endswith("_kernel_time"):
            short = provider.replace("ExecutionProvider", "")
            dur[short] = dur.get(short, 0) + e.get("dur", 0)
            nodes.setdefault(short, set()).add(e["name"])
    total = sum(dur.values()) or 1
    return ", ".join(f"{p} {100 * d / total:.1f} % ({len(nodes[p])})" for p, d in sorted(dur.items(), key=lambda i: -i[1]))


def onnx_session(cfg: dict, work: Path, name: str, graph: str, provider: str, precision: str, emit: Emitter) -> None:
    import numpy as np

    from heal_swin.export import OnnxPredictor, compare_onnx

    paths = _paths(work, name, graph)
    key = dict(model=name, graph=graph, provider=provider, precision=precision)

    def run():
        if not paths["ref"].is_file():
            raise FileNotFoundError(f"the {graph} graph of {name} was not exported (see the exports table)")
        graph_path = paths["fp16"] if precision == "fp16" and provider != "tensorrt" else paths["fp32"]
        x, ref = np.load(paths["x"]), np.load(paths["ref"])
        tag = f"{name}-{graph}-{provider}-{precision}"
        providers = _providers(provider, precision, work, tag)
        t = time.perf_counter()
        pred = OnnxPredictor(graph_path, device="cpu" if provider == "cpu" else "cuda", providers=providers,
                             batch_size=1, threads=cfg.get("threads"))
        row = dict(session_s=time.perf_counter() - t, providers_got=", ".join(
            p.replace("ExecutionProvider", "") for p in pred.providers), missing={}, notes=[])
        if provider == "tensorrt" and "TensorrtExecutionProvider" not in pred.providers:
            why = (f"TensorRT was asked for but the session got {pred.providers} (onnxruntime could not load "
                   "TensorRT: its libraries, libnvinfer and libnvonnxparser, are missing or of another version)")
            row["missing"] = {c: why for c in ("placement", "latency_ms", "parity", "rule", "passed")}
            return row
        if provider == "cuda":
            tf32 = pred.session.get_provider_options().get("CUDAExecutionProvider", {}).get("use_tf32")
            if tf32 is not None:
                row["notes"].append(f"CUDA provider use_tf32={tf32}")
        row["latency_ms"] = pred.benchmark(x, cfg["onnx"]["repeats"])["median_ms"]
        row["parity"], row["rule"], row["passed"] = parity(ref, pred(x)[0].astype(np.float32), precision)
        try:
            row["placement"] = placement(graph_path, providers, x.astype(np.float32), work, tag)
        except Exception as err:        # the profile is a diagnosis; the figures above stand without it
            row["missing"]["placement"] = reason_of(err)
        if provider == "cpu":           # the library's own check on the CPU: the same rule (see PARITY_RULE)
            module, _, _ = _graph(cfg, name, graph)
            import torch

            *_, passed, tolerance = compare_onnx(graph_path, module, [torch.from_numpy(x)], "segmentation", precision)
            row["library_rule"], row["library_passed"] = tolerance, bool(passed)
        del pred
        return row

    guarded(emit, "onnx.sessions", key, run)


def onnx_refusal(cfg: dict, work: Path, name: str, graph: str, emit: Emitter) -> None:
    """The predictor asked for the GPU must refuse a session that got only the CPU provider (what
    onnxruntime-gpu does silently when it cannot load CUDA)."""
    from heal_swin.export import OnnxPredictor, ProviderError

    key = dict(check="OnnxPredictor(device='cuda') on a session that got only the CPU provider")

    def run():
        path = _paths(work, name, graph)["fp32"]
        try:
            OnnxPredictor(path, device="cuda", providers=["CPUExecutionProvider"], batch_size=1, warmup=0)
        except ProviderError as err:
            return dict(refused=True, message=str(err).replace(str(path), path.name).splitlines()[0][:240])
        return dict(refused=False, message="no ProviderError: the predictor accepted a CPU-only session")

    guarded(emit, "onnx.refusal", key, run)


def measure_onnx(cfg: dict, item: str, work: Path, emit: Emitter) -> None:
    name, graph, what, *rest = item.split("/")
    if what == "export":
        onnx_export(cfg, work, name, graph, emit)
    elif what == "refusal":
        onnx_refusal(cfg, work, name, graph, emit)
    else:
        onnx_session(cfg, work, name, graph, what, rest[0], emit)


# ----------------------------------------------------------------------------- 3. harmonics

def measure_so3(cfg: dict, name: str, emit: Emitter) -> None:
    """Every distinct SO3Activation of the model (bandwidth, channels, grid), timed alone on the device."""
    import torch

    from _timing import median_ms
    from heal_swin import models
    from heal_swin.models.s2cnn import SO3Activation

    device = torch.device(cfg["device"])
    hc = cfg["harmonics"]
    info = models.model_info(name)            # the registered model (its own grid): the bandwidths are its own
    model = models.create_model(name, **(dict(info.test_kwargs) if cfg["smoke"] else {}))
    acts = {}
    for m in model.modules():
        if isinstance(m, SO3Activation):
            channels = m.norm.num_channels if m.norm is not None else None
            key = (m.b, channels, m.synthesis.nside, m.synthesis.n_gamma)
            acts.setdefault(key, []).append(m)
    if not acts:
        raise ValueError(f"{name} has no SO3Activation layers")
    del model
    clock = Clock(device)
    for (b, channels, nside, n_gamma), layers in sorted(acts.items(), key=lambda kv: kv[0][:2]):
        def run():
            act = layers[0].to(device)
            g = torch.randn(hc["so3_batch"], channels or 1, b, b, 2 * b - 1, 2, device=device)
            with torch.no_grad():
                fwd = median_ms(lambda: act(g), hc["repeats"], 1, clock.sync)
            gg = g.clone().requires_grad_(True)

            def fwd_bwd():
                gg.grad = None
                act(gg).square().mean().backward()

            return dict(grid=f"{nside} × {n_gamma}", layers=len(layers), batch=hc["so3_batch"], fwd_ms=fwd,
                        fwd_bwd_ms=median_ms(fwd_bwd, hc["repeats"], 1, clock.sync))

        guarded(emit, "harmonics.so3", dict(model=name, b=b, channels=channels), run)


def measure_sht(cfg: dict, emit: Emitter) -> None:
    """RealSHT / InverseRealSHT at nside (lmax = 2·nside, full sphere, float32 on the device): one map against
    healpy (iter=0 and use_weights=False passed explicitly: healpy's default is iter=3), then time per batch."""
    import healpy as hp
    import numpy as np
    import torch

    from _timing import median_ms
    from heal_swin import grid, harmonics

    device = torch.device(cfg["device"])
    hc = cfg["harmonics"]
    nside, lmax, batch = hc["nside"], 2 * hc["nside"], hc["batch"]
    npix = 12 * nside ** 2
    t = time.perf_counter()
    sht = harmonics.RealSHT(nside, lmax, iterations=0)
    isht = harmonics.InverseRealSHT(nside, lmax)
    build_s = time.perf_counter() - t
    sht, isht = sht.to(device), isht.to(device)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, npix))
    alm = rng.standard_normal((batch, harmonics.alm_size(lmax), 2))
    alm[:, :lmax + 1, 1] = 0                   # m = 0: real coefficients
    ring = grid.ring2nest(nside, np.arange(npix))
    tol = hc["tolerance"]

    def parity_sht():
        with torch.no_grad():
            ours = sht(torch.from_numpy(x[:1]).float().to(device)).double().cpu().numpy()[0]
        ref = hp.map2alm(x[0, ring], lmax=lmax, iter=0, use_weights=False)
        err = float(np.abs(ours[:, 0] + 1j * ours[:, 1] - ref).max() / np.abs(ref).max())
        return dict(nside=nside, lmax=lmax, reference="healpy.map2alm(iter=0, use_weights=False)", rel_err=err,
                    tolerance=tol, agree=err <= tol)

    def parity_isht():
        with torch.no_grad():
            ours = isht(torch.from_numpy(alm[:1]).float().to(device)).double().cpu().numpy()[0]
        ref = hp.alm2map(alm[0, :, 0] + 1j * alm[0, :, 1], nside, lmax=lmax)[grid.nest2ring(nside, np.arange(npix))]
        err = float(np.abs(ours - ref).max() / np.abs(ref).max())
        return dict(nside=nside, lmax=lmax, reference="healpy.alm2map", rel_err=err, tolerance=tol, agree=err <= tol)

    guarded(emit, "harmonics.parity", dict(transform="RealSHT", dtype="float32"), parity_sht)
    guarded(emit, "harmonics.parity", dict(transform="InverseRealSHT", dtype="float32"), parity_isht)
    clock = Clock(device)
    for transform, module, data in (("RealSHT", sht, x), ("InverseRealSHT", isht, alm)):
        def run():
            inp = torch.from_numpy(data).float().to(device)
            with torch.no_grad():
                fwd = median_ms(lambda: module(inp), hc["repeats"], 1, clock.sync)
            leaf = inp.clone().requires_grad_(True)

            def fwd_bwd():
                leaf.grad = None
                module(leaf).square().sum().backward()

            return dict(nside=nside, batch=batch, build_s=build_s, table_mib=harmonics.table_bytes(module) / 2 ** 20,
                        fwd_ms=fwd, fwd_bwd_ms=median_ms(fwd_bwd, hc["repeats"], 1, clock.sync),
                        maps_per_s=1e3 * batch / fwd)

        guarded(emit, "harmonics.time", dict(transform=transform, dtype="float32"), run)


# ----------------------------------------------------------------------------- 4. research runs

def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo; platform's name where that cannot be read)."""
    import platform

    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()



def group_run(cfg: dict, item: str, work: Path, steps: int):
    """(arms, full, run, grid) of `item` = "study/task/group": the arm group's arms, its first arm's config at
    --full, the config of a short run of that arm (`steps` steps on cfg's device, no evaluation before the end, no
    weight snapshots) and the grid overrides --full sets; a study with its own data (the fisheye studies) gets
    a few frames of the --full size."""
    from heal_swin.engine import load_config

    study_name, task, group = item.split("/", 2)
    rc = cfg["research"]
    study = _study(study_name, cfg)
    arms = [a for a in study.arms if a.group == group and a.task == task]
    if not arms:
        raise ValueError(f"{item}: no arm group {group!r} with task {task!r} in {STUDIES[study_name]}")
    shared = list(study.overrides)
    if study.prepare is not None:          # the fisheye studies' data: a few frames of the --full size
        from heal_swin.data.synthetic import generate

        data = work / f"data-{study_name}"
        if not (data / ".complete").is_file():       # a process stopped while generating left half a tree
            shutil.rmtree(data, ignore_errors=True)
            generate(data, frames=rc["frames"], size=tuple(rc["size"]), progress=False, workers=rc["workers"])
            (data / ".complete").touch()
        shared.append(f"data.root={data}")
    arm = arms[0]
    run_dir = work / "runs" / f"{study_name}-{task}-{arm.run_name(shared)}"
    overrides = [*shared, *arm.spec.overrides(), f"task={arm.task}", f"run.seed={arm.seed}", *arm.overrides]
    full = load_config(study.config_path(), overrides)
    # a few timed steps: no weight snapshots along training (the ensemble study's arms ask for them)
    mine = [f"run.dir={run_dir}", f"train.max_steps={steps}", f"train.eval_every={steps}", "run.log_every=1",
            "train.snapshot_every=0",
            f"run.device={cfg['device']}", "eval.backproject=false", "run.overwrite=true",
            *rc["overrides"].get(study_name, [])]
    if cfg.get("threads"):
        mine.append(f"run.threads={cfg['threads']}")
    full_grid = [o for o in overrides if o.startswith(("data.nside", "data.flat_size", "data.digits.train"))]
    return arms, full, load_config(study.config_path(), overrides + mine), full_grid


def grid_of(run_cfg) -> str:
    """The grid a run's model sees, in words."""
    from heal_swin.engine import model_domain

    if model_domain(run_cfg) == "flat" and run_cfg.data.source == "woodscape":
        return f"{run_cfg.data.flat_size[0]}×{run_cfg.data.flat_size[1]}"
    return f"nside {run_cfg.data.nside}" + (", θ-φ image" if model_domain(run_cfg) == "flat" else "")


def measure_research(cfg: dict, item: str, work: Path, emit: Emitter) -> None:
    """A few steps of an arm group's first arm at the study's --full settings, through the trainer, and the
    estimated training time of the group's runs at --full from the median step."""
    from heal_swin.engine import main

    study_name, task, group = item.split("/", 2)
    key = dict(study=study_name, arm=group, task=task)

    def run():
        arms, full, run_cfg, full_grid = group_run(cfg, item, work, cfg["research"]["steps"])
        main(run_cfg)
        records = [json.loads(line) for line in (Path(run_cfg.run.dir) / "metrics.jsonl").read_text().splitlines()
                   if line.strip() and '"samples_per_s"' in line]
        step_s = [run_cfg.data.batch_size / r["samples_per_s"] for r in records]
        warm = step_s[1:] or step_s             # the first step carries the device's warm-up
        median = statistics.median(warm)
        full_steps = int(full.train.max_steps)
        return dict(grid=grid_of(run_cfg), batch=int(run_cfg.data.batch_size), steps_run=len(records),
                    step_s=median, full_steps=full_steps, runs=len(arms),
                    est_h=median * full_steps * len(arms) / 3600,
                    loss_first=records[0]["loss"], loss_last=records[-1]["loss"],
                    notes=[f"--full sets {', '.join(full_grid)}"] if full_grid else [])

    guarded(emit, "research.arms", key, run)


# ----------------------------------------------------------------------------- the process

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=PARTS)
    p.add_argument("--config", required=True, help="the check's settings (JSON)")
    p.add_argument("--work", required=True, help="the work folder (exported graphs, run directories, events)")
    p.add_argument("--items", nargs="+", required=True)
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))        # bench/_timing.py
    cfg = json.loads(Path(args.config).read_text())
    work = Path(args.work)
    emit = Emitter(work / f"{args.part}.jsonl")
    import torch

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    for item in args.items:
        emit.item = item
        emit.event("start")
        try:
            if args.part == "train":
                measure_train(cfg, item, emit)
            elif args.part == "infer":
                measure_infer(cfg, item, emit)
            elif args.part == "onnx":
                measure_onnx(cfg, item, work, emit)
            elif args.part == "harmonics":
                measure_so3(cfg, item.split("/", 1)[1], emit) if item.startswith("so3/") else measure_sht(cfg, emit)
            else:
                measure_research(cfg, item, work, emit)
        except Exception as err:         # the item's remaining figures take this reason
            emit.event("error", reason=reason_of(err))
            if is_fatal_cuda(err):
                return EXIT_CUDA
            _free()
            continue
        emit.event("end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
