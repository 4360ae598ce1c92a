"""The GPU figures in one prepared command (issue #30): the first thing to run on a newly available GPU.

    make gpu-check                                  # = python bench/gpu_check.py: bench/gpu/REPORT.md + report.json
    python bench/gpu_check.py --smoke --out runs/gpu_check_smoke     # tiny sizes on a CPU, in seconds (the tests)
    python bench/gpu_check.py --parts train onnx --limit onnx=300    # some parts, another time limit

Designed to finish in under 8 minutes on one H100/H200 (--budget, default 465 s): every part has its own
time limit and every item in it one too; an item that runs past its limit, fails or finds no CUDA device is
skipped with its reason, and the rest of the report is still written. The report names the machine first
(GPU, driver, CUDA, torch, onnxruntime and its providers), then:

1. training step at full resolution (nside 256, faces 0-7; flat models on the 512 x 1024 image of that grid)
   per family at its paper or base size, fp32 / bf16 / fp16 autocast: median warm step, peak CUDA memory,
   images/s, the loss over the steps; fused kernels against `fused=False` where a family has both, and
   whether the two agree on one batch to the dtype's tolerance;
2. inference: eager fp32 / bf16 latency at batch 1 and throughput at batch 8; the exported sphere and
   fisheye-in graphs under onnxruntime's CUDA and TensorRT providers (fp32, fp16): export rules' parity,
   latency, the providers each session really got and where its kernel time went;
3. RealSHT / InverseRealSHT against healpy on one map and their time per batch at nside 256; SO3Activation
   at the S2CNNs' bandwidths;
4. a few steps of every arm group of the learning study, the rotated-digits benchmark and the paper's
   experiment (bench/paper/study.py) at their --full settings, through the trainer, with each full run's
   estimated training time.

Each part runs in its own process (bench/gpu/parts.py), so a crash or a hung kernel costs that part's item,
not the report. Random weights throughout (speed does not depend on them; the ONNX parity of a trained model
comes from export.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PARTS_FILE = HERE / "gpu" / "parts.py"
_spec = importlib.util.spec_from_file_location("gpu_check_parts", PARTS_FILE)
parts = sys.modules["gpu_check_parts"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parts)

PART_TITLES = {"train": "1. Training step at full resolution", "infer": "2a. Inference: eager PyTorch",
               "onnx": "2b. Inference: ONNX Runtime", "harmonics": "3. Harmonics and SO(3) transforms",
               "research": "4. Research runs at their --full settings, as smoke"}
FAMILIES = ("heal_swin_small", "gauge_cnn_base", "s2cnn_small", "swin_unet_flat_paper", "chart_cnn_base",
            "planar_cnn_4x", "heal_swin_paper")
# --smoke: one family per kind of code path (fused kernels, spectral, sphere CNN, flat)
SMOKE_FAMILIES = ("heal_swin_small", "s2cnn_small", "chart_cnn_base", "planar_cnn_4x")


def settings(args) -> dict:
    """The check's settings: the full sizes, or with --smoke the models' test builds and a few steps."""
    from heal_swin import models

    import torch

    names = args.models or [n for n in FAMILIES if models.is_model(n)]
    for flag, given in (("--models", args.models), ("--onnx-models", args.onnx_models)):
        unknown = [n for n in given or [] if not models.is_model(n)]
        if unknown:
            raise SystemExit(f"{flag} {' '.join(unknown)}: not a registered model; models.list_models() has "
                             f"{', '.join(models.list_models())}")
    cuda = torch.cuda.is_available()
    smoke = args.smoke
    cfg = dict(smoke=smoke, cuda=cuda, device="cuda" if cuda else "cpu", nside=256, faces=list(range(8)),
               threads=args.threads,
               train=dict(models=names, dtypes=["fp32", "bf16", "fp16"], batch=args.train_batch, warmup=2, steps=5,
                          lr=1e-3),
               infer=dict(models=names, dtypes=["fp32", "bf16"], batch=8, repeats=10),
               onnx=dict(models=args.onnx_models or ["heal_swin_small", "gauge_cnn_base"], precisions=["fp32", "fp16"],
                         repeats=10, camera_size=None),
               harmonics=dict(nside=256, batch=16, repeats=5, so3_models=["s2cnn_small", "s2cnn_digits"],
                              so3_batch=8, tolerance=1e-4),
               research=dict(studies=list(parts.STUDIES), steps=4, frames=4, size=[1280, 966],
                             workers=min(8, os.cpu_count() or 1), overrides={}),
               part_limits=dict(train=135, infer=40, onnx=140, harmonics=60, research=90),
               item_limits=dict(train=60, infer=20, onnx_export=75, onnx_session=30, onnx_tensorrt=60,
                                harmonics_so3=20, harmonics_sht=55, research=45),
               budget=args.budget or 470)
    if smoke:                        # every code path once, at the smallest sizes: a few families, one graph
        small = args.models or [n for n in SMOKE_FAMILIES if models.is_model(n)]
        cfg["train"].update(models=small, warmup=1, steps=1)
        cfg["infer"].update(models=small, repeats=3)
        cfg["onnx"].update(models=args.onnx_models or ["chart_cnn_tiny"], repeats=3, camera_size=[160, 120])
        cfg["harmonics"].update(nside=16, batch=4, repeats=3, so3_batch=2)
        fisheye = ["data.nside=16", "data.flat_size=[32,64]"]
        digits = ["data.nside=16", "data.digits.train=16", "data.digits.test=8"]
        cfg["research"].update(steps=2, frames=2, size=[128, 96], workers=1, groups_per_study=1, overrides={
            "learning": fisheye, "rotated_digits": digits, "paper": digits, "ensembles": digits, "pose": fisheye})
        cfg["part_limits"] = {p: 240 for p in cfg["part_limits"]}
        cfg["item_limits"] = {p: 240 for p in cfg["item_limits"]}
        cfg["budget"] = args.budget or 900
    for item in args.limit or []:
        part, _, seconds = item.partition("=")
        if part not in cfg["part_limits"] or not seconds.replace(".", "", 1).isdigit():
            raise SystemExit(f"--limit {item}: must be PART=SECONDS (seconds >= 0) with PART one of "
                             f"{', '.join(cfg['part_limits'])}")
        cfg["part_limits"][part] = float(seconds)
    return cfg


# ----------------------------------------------------------------------------- the machine

def _run(cmd) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine(cfg: dict) -> dict:
    """What the figures were taken on, as rows of (what, value)."""
    import ctypes.util

    import torch

    rows = {}
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"])
    if cfg["cuda"] and smi:
        gpus = [s.split(", ") for s in smi.splitlines()]
        rows["GPU"] = "; ".join(f"{g[0]} ({g[2]}, compute capability {g[3]})" for g in gpus if len(g) == 4)
        rows["driver"] = gpus[0][1] if gpus and len(gpus[0]) > 1 else "unknown"
        header = _run(["nvidia-smi"])
        cuda_driver = header.split("CUDA Version:")[1].split()[0] if "CUDA Version:" in header else "unknown"
        rows["CUDA"] = f"{torch.version.cuda} (torch's build); the driver supports {cuda_driver}"
    elif cfg["cuda"]:
        rows["GPU"] = torch.cuda.get_device_name(0)
        rows["driver"] = "unknown (no nvidia-smi)"
        rows["CUDA"] = f"{torch.version.cuda} (torch's build)"
    else:
        rows["GPU"] = "no GPU (torch.cuda.is_available() is False): the parts that need CUDA are skipped"
        rows["driver"] = "none"
        rows["CUDA"] = f"{torch.version.cuda} (torch's build), no device"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    rows["cuDNN"] = str(cudnn) if cudnn else "not available"
    rows["torch"] = (f"{torch.__version__}; float32 matmul precision {torch.get_float32_matmul_precision()!r} "
                     f"(TF32 matmuls {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}), cuDNN TF32 "
                     f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'}, cudnn.benchmark "
                     f"{torch.backends.cudnn.benchmark} (torch's defaults, left as they are)")
    try:
        import onnxruntime as ort

        dist = "onnxruntime-gpu" if _version("onnxruntime-gpu") else "onnxruntime"
        rows["onnxruntime"] = f"{ort.__version__} ({dist}); providers available: {', '.join(ort.get_available_providers())}"
    except ImportError as err:
        rows["onnxruntime"] = f"not importable ({err})"
    trt = _version("tensorrt") or _version("tensorrt-cu13") or _version("tensorrt-cu12")
    lib = ctypes.util.find_library("nvinfer")
    rows["TensorRT"] = (f"{trt} (Python package)" if trt else "no Python package") + \
        (f"; {lib} found" if lib else "; libnvinfer not found on the library path")
    rows["CPU"] = f"{parts.cpu_name()}, {os.cpu_count()} logical cores"
    rows["Python"] = f"{platform.python_version()}; numpy {_version('numpy')}, healpy {_version('healpy')}, " \
                     f"onnx {_version('onnx')}"
    commit = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    rows["commit"] = (commit + (" (with uncommitted changes)" if dirty else "")) if commit else "unknown"
    return rows


# ----------------------------------------------------------------------------- running the parts

class PartRunner:
    """Runs a part's items in a child process, enforcing each item's and the part's time limit; starts a
    fresh process for the items after one that was killed or died. Collects the rows and each item's fate."""

    def __init__(self, cfg: dict, work: Path, cfg_path: Path, deadline: float):
        self.cfg, self.work, self.cfg_path, self.deadline = cfg, work, cfg_path, deadline

    def _tail(self, log: Path) -> str:
        try:
            lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def run(self, part: str, items: list) -> tuple[list, dict, float]:
        start = time.time()
        limit = self.cfg["part_limits"][part]
        part_deadline = min(start + limit, self.deadline)
        out_of = (f"the check's {self.cfg['budget']:.0f} s budget" if self.deadline < start + limit
                  else f"this part's time limit ({limit:.0f} s)")
        fate = {it.id: it.skip for it in items if it.skip}
        todo = [it for it in items if not it.skip]
        by_id = {it.id: it for it in items}
        rows: list = []
        events = self.work / f"{part}.jsonl"
        log = self.work / f"{part}.log"
        offset = 0
        while todo:
            if time.time() >= part_deadline:
                for it in todo:
                    fate[it.id] = f"skipped: {out_of} ran out before it"
                break
            cmd = [sys.executable, str(PARTS_FILE), part, "--config", str(self.cfg_path), "--work", str(self.work),
                   "--items", *[it.id for it in todo]]
            # Idle OpenMP threads sleep instead of spinning (as `make demo`): on a machine shared with other
            # work a spinning pool makes small CPU ops up to 100x slower; the device's figures do not need it.
            env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
            with open(log, "a") as logf:
                proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                        start_new_session=True)
            current, started, killed = None, None, False
            while True:
                done = proc.poll() is not None
                if events.is_file():
                    with open(events, "rb") as f:
                        f.seek(offset)
                        chunk = f.read()
                    complete = chunk[:chunk.rfind(b"\n") + 1]         # a line being written waits
                    offset += len(complete)
                    for line in complete.decode().splitlines():
                        e = json.loads(line)
                        if e["event"] == "start":
                            current, started = e["item"], time.time()
                        elif e["event"] == "row":
                            rows.append((e["item"], e["table"], e["row"]))
                        elif e["event"] in ("end", "error"):
                            fate[e["item"]] = e.get("reason")
                            todo = [it for it in todo if it.id != e["item"]]
                            current = None
                if done:
                    break
                now = time.time()
                stop = None
                if current is not None and now - started > by_id[current].limit_s:
                    stop = f"skipped: ran past its {by_id[current].limit_s:.0f} s limit (stopped there)"
                elif now >= part_deadline:
                    stop = f"skipped: {out_of} ran out while it was measured (stopped there)"
                if stop is not None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    killed = True
                    if current is not None:
                        fate[current] = stop
                        todo = [it for it in todo if it.id != current]
                    break
                time.sleep(0.1)
            if killed:
                continue
            if current is not None:                               # the process died inside an item
                why = ("a CUDA error left the device unusable" if proc.returncode == parts.EXIT_CUDA
                       else f"exit code {proc.returncode}")
                fate[current] = f"failed: the measuring process ended ({why}): {self._tail(log)}"
                todo = [it for it in todo if it.id != current]
            elif todo and proc.returncode != parts.EXIT_CUDA:     # it never reached an item, or skipped them
                for it in todo:
                    fate[it.id] = (f"failed: the measuring process ended (exit code {proc.returncode}) before "
                                   f"measuring it: {self._tail(log)}")
                break
        return rows, fate, time.time() - start


# ----------------------------------------------------------------------------- the report

def assemble(items: list, rows: list, fate: dict) -> dict:
    """Every table's rows: what was measured, and for every planned row not measured one with the reason."""
    tables = {name: [] for name in parts.TABLES}
    for it in items:
        mine = [(t, r) for i, t, r in rows if i == it.id]
        for table, row in mine:
            tables[table].append(row)
        for table, key in it.rows:
            if not any(t == table and all(r.get(k) == v for k, v in key.items()) for t, r in mine):
                reason = fate.get(it.id) or "failed: the item ended without this row"
                tables[table].append({**key, "missing": {c: reason for c in parts.TABLES[table].figures}})
    return tables


def part_report(cfg: dict, part: str, items: list, rows: list, fate: dict, elapsed: float) -> dict:
    """A part's entry in the report: its limit, the time it took, each item's fate (None: measured) and its tables."""
    tables = assemble(items, rows, fate)
    if part == "research":
        tables["research.summary"] = research_summary(cfg, tables)
    return dict(title=PART_TITLES[part], limit_s=cfg["part_limits"][part], elapsed_s=elapsed,
                items={it.id: fate[it.id] if it.id in fate else "not run" for it in items},
                tables={name: dict(title=parts.TABLES[name].title, rows=rows_, columns=[
                    dict(key=c.key, header=c.header, is_key=c.is_key) for c in parts.TABLES[name].columns])
                        for name, rows_ in tables.items() if parts.TABLES[name].part == part})


def research_summary(cfg: dict, tables: dict) -> list:
    rows = []
    for study in cfg["research"]["studies"]:
        arms = [r for r in tables["research.arms"] if r["study"] == study]
        measured = [r for r in arms if r.get("est_h") is not None]
        try:
            runs = len(parts._study(study, cfg).arms)
        except Exception as err:       # a broken study file: its reason instead of the count
            rows.append(dict(study=study, missing={c: parts.reason_of(err) for c in parts.TABLES["research.summary"].figures}))
            continue
        row = dict(study=study, command=parts.STUDY_COMMANDS[study], runs=runs,
                   measured=f"{len(measured)} of {len(arms)}", missing={}, notes=[])
        if measured:
            row["est_h"] = sum(r["est_h"] for r in measured)
            if len(measured) < len(arms):
                row["notes"].append("a lower bound: the arm groups not measured are not in it")
            row["notes"].append("training steps only (evaluations, data generation and projection not included)")
        else:
            row["missing"]["est_h"] = "no arm group was measured"
        rows.append(row)
    return rows


def _fmt(value, kind: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind == "int":
            return f"{int(round(value)):,}"
        if kind == "sci":
            return f"{value:.2e}"
        if kind == "ms":
            a = abs(value)
            return f"{value:,.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.2f}" if a >= 1 \
                else f"{value:.3g}"
        return str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: parts.Table, rows: list) -> list[str]:
    cols = table.columns
    lines = ["| " + " | ".join(_fmt(c.header, "") for c in cols) + " | notes |", "|" + "---|" * (len(cols) + 1)]
    figures = [c for c in cols if not c.is_key]
    for r in rows:
        missing = {k: v for k, v in r.get("missing", {}).items() if r.get(k) is None}
        notes = []
        for why in dict.fromkeys(missing.values()):
            which = [c.header for c in figures if missing.get(c.key) == why]
            notes.append(why if len(which) == len(figures) else f"{', '.join(which)}: {why}")
        notes += list(r.get("notes", []))
        lines.append("| " + " | ".join(_fmt(r.get(c.key), c.fmt) for c in cols) + " | " + _fmt("; ".join(notes), "")
                     + " |")
    return lines


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    m = report["machine"]
    mode = ("smoke run (--smoke: the models' test builds, tiny grids, a few steps; its times say nothing about "
            "a GPU)" if report["smoke"] else "full run")
    lines = ["# GPU check (issue #30)", "",
             f"Written by `bench/gpu_check.py` (`make gpu-check`) on {report['started']}: {mode}. It took "
             f"{report['elapsed_s']:.0f} s (budget {report['budget_s']:.0f} s; designed for under 8 minutes on one "
             "H100/H200). Every figure was measured in this run with random weights; one that could not be taken "
             "says why."]
    if not report["complete"]:
        lines += ["", "**Incomplete**: the check writes this report after every part and had not finished when it "
                      "was last written (parts not yet run say \"not reached\")."]
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v, '')} |" for k, v in m.items()]
    for part, data in report["parts"].items():
        done = sum(1 for f in data["items"].values() if f is None)
        lines += ["", f"## {data['title']}", "",
                  f"Time limit {data['limit_s']:.0f} s, used {data['elapsed_s']:.0f} s; {done} of "
                  f"{len(data['items'])} items finished."]
        for name, table in data["tables"].items():
            spec = parts.TABLES[name]
            lines += ["", f"### {spec.title}", ""] + markdown_table(spec, table["rows"])
    lines += ["", "## Settings", ""] + [f"- {k}: `{json.dumps(v)}`" for k, v in report["settings"].items()] + [""]
    for name, text in (("report.json", json.dumps(report, indent=1) + "\n"), ("REPORT.md", "\n".join(lines))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="the report's folder (default bench/gpu; --smoke: runs/gpu_check_smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (the models' test builds), a few steps: "
                                                        "seconds on a CPU")
    p.add_argument("--parts", nargs="+", choices=parts.PARTS, default=list(parts.PARTS))
    p.add_argument("--models", nargs="+", default=None,
                   help=f"the training and eager-inference models (default: {' '.join(FAMILIES)}, where "
                        f"registered; --smoke: {' '.join(SMOKE_FAMILIES)})")
    p.add_argument("--onnx-models", nargs="+", default=None,
                   help="the exported models (default heal_swin_small gauge_cnn_base; --smoke chart_cnn_tiny)")
    p.add_argument("--train-batch", type=int, default=2, help="the training step's batch (default 2)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole check (default 470; --smoke 900)")
    p.add_argument("--limit", nargs="+", default=None, metavar="PART=SECONDS", help="another time limit for a part")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads in the measuring processes")
    p.add_argument("--work", default=None, help="keep the work files (graphs, runs, logs) in this folder")
    args = p.parse_args(argv)
    if args.train_batch < 1:
        p.error(f"--train-batch {args.train_batch} must be >= 1")
    if args.budget is not None and args.budget <= 0:
        p.error(f"--budget {args.budget} must be > 0 seconds")
    t0 = time.time()
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = Path(args.out or (ROOT / ("runs/gpu_check_smoke" if args.smoke else "bench/gpu")))
    cfg = settings(args)
    deadline = t0 + cfg["budget"]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("*.jsonl"):
        stale.unlink()
    cfg_path = work / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    try:
        info = machine(cfg)
        print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
        items = parts.plan(cfg)
        runner = PartRunner(cfg, work, cfg_path, deadline)
        report = dict(check="bench/gpu_check.py", issue=30, smoke=cfg["smoke"], started=started,
                      budget_s=cfg["budget"], elapsed_s=0.0, complete=False, machine=info, parts={}, settings=cfg)
        for part in parts.PARTS:          # pending parts first, so a report written early says so
            report["parts"][part] = part_report(cfg, part, [it for it in items if it.part == part], [], {
                it.id: "not reached: the check ended before this part" for it in items if it.part == part}, 0.0)
        for part in parts.PARTS:
            mine = [it for it in items if it.part == part]
            if part not in args.parts:
                for it in mine:
                    it.skip = "skipped: not among --parts"
            print(f"{PART_TITLES[part]}: {len(mine)} items, limit {cfg['part_limits'][part]:.0f} s", flush=True)
            rows, fate, elapsed = runner.run(part, mine)
            report["parts"][part] = part_report(cfg, part, mine, rows, fate, elapsed)
            reasons: dict = {}
            for item, why in report["parts"][part]["items"].items():
                if why:
                    reasons.setdefault(why, []).append(item)
            print(f"  {elapsed:.0f} s; " + ("; ".join(f"{len(ids)} item(s) {why} ({ids[0]}{', ...' if len(ids) > 1 else ''})"
                                                     for why, ids in reasons.items()) or "every item measured"), flush=True)
            report["elapsed_s"] = time.time() - t0
            write_report(out, report)    # after every part: a machine taken back early still leaves a report
        report["complete"] = True
        write_report(out, report)
        print(f"wrote {out / 'REPORT.md'} and {out / 'report.json'} in {report['elapsed_s']:.0f} s")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
