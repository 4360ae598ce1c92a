"""The GPU check (bench/gpu_check.py, issue #30) on a CPU with --smoke, as the test suite runs it between lendings
of a GPU: the report has every section, and every figure is there or says why it is not, in the Markdown and the
JSON alike; what a CPU can measure is measured; a part that runs out of time still leaves the report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "bench" / "gpu_check.py"
SECTIONS = ["## Machine", "## 1. Training step at full resolution", "## 2a. Inference: eager PyTorch",
            "## 2b. Inference: ONNX Runtime", "## 3. Harmonics and SO(3) transforms",
            "## 4. Research runs at their --full settings, as smoke"]
TABLES = {"train": ["train.steps", "train.agree"], "infer": ["infer.eager"],
          "onnx": ["onnx.exports", "onnx.sessions", "onnx.refusal"],
          "harmonics": ["harmonics.parity", "harmonics.time", "harmonics.so3"],
          "research": ["research.arms", "research.summary"]}
CUDA = torch.cuda.is_available()


def _check(out: Path, *extra) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, str(CHECK), "--smoke", "--out", str(out), "--threads", "1", *extra],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), (out / "REPORT.md").read_text()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return _check(tmp_path_factory.mktemp("gpu_check"))


def _rows(report, table):
    part = table.split(".")[0]
    return report["parts"][part]["tables"][table]["rows"]


def _figures(report, table):
    part = table.split(".")[0]
    return [c["key"] for c in report["parts"][part]["tables"][table]["columns"] if not c["is_key"]]


def _reason(row, col) -> str:
    return row.get("missing", {}).get(col) or ""


def _markdown_tables(md: str) -> dict[str, list[list[str]]]:
    """### title -> the rows of the table under it, as cells (escaped pipes kept inside their cell)."""
    tables, title = {}, None
    for line in md.splitlines():
        if line.startswith("### "):
            title = line[4:].strip()
            tables[title] = []
        elif line.startswith("|") and title is not None:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            tables[title].append(cells)
    return {t: rows[2:] for t, rows in tables.items()}          # without the header and the separator


def test_every_figure_is_there_or_says_why(smoke):
    report, _ = smoke
    assert report["complete"] and report["smoke"]
    for part, tables in TABLES.items():
        assert set(report["parts"][part]["tables"]) == set(tables), part
        for table in tables:
            rows = _rows(report, table)
            assert rows, f"{table} has no rows"
            for row in rows:
                for col in _figures(report, table):
                    assert row.get(col) is not None or _reason(row, col), f"{table} {row}: {col} has no reason"


def test_markdown_has_every_section_and_each_gap_its_reason(smoke):
    report, md = smoke
    assert md.startswith("# GPU check (issue #30)")
    positions = [md.index(s) for s in SECTIONS]
    assert positions == sorted(positions), "sections out of order"
    machine = md[md.index("## Machine"):md.index(SECTIONS[1])]
    for what in ("GPU", "driver", "CUDA", "torch", "onnxruntime", "TensorRT"):
        assert f"| {what} |" in machine
    assert "providers available:" in machine and ("no GPU" in machine) == (not CUDA)
    md_tables = _markdown_tables(md)
    for part, tables in TABLES.items():
        for table in tables:
            title = report["parts"][part]["tables"][table]["title"]
            assert title in md_tables, title
            rows = md_tables[title]
            assert len(rows) == len(_rows(report, table)), title
            for cells in rows:
                if "—" in cells[:-1]:
                    assert cells[-1], f"{title}: {cells} has a gap without a reason"


def test_what_a_cpu_can_measure_is_measured(smoke):
    report, _ = smoke
    for part, tables in TABLES.items():
        for table in tables:
            for row in _rows(report, table):
                for why in row.get("missing", {}).values():
                    assert not why.startswith("failed"), f"{table} {row}"   # the check's own code is broken
    steps = _rows(report, "train.steps")
    assert {r["kernels"] for r in steps} >= {"fused", "plain", "default"}
    for r in steps:
        assert r["step_ms"] > 0 and r["images_per_s"] > 0 and r["steps_taken"]
        if r["dtype"] == "fp32":
            assert r["loss_down"], r                                   # one AdamW step lowers the loss
    fp32 = [r for r in _rows(report, "train.agree") if r["dtype"] == "fp32"]
    assert fp32 and all(r["agree"] and r["out_rel"] <= 1e-4 for r in fp32)
    assert all(r["latency_ms"] > 0 and r["throughput"] > 0 for r in _rows(report, "infer.eager"))
    assert all(r["export_s"] > 0 and r["size_mib"] > 0 for r in _rows(report, "onnx.exports"))
    assert {r["graph"] for r in _rows(report, "onnx.exports")} == {"sphere", "fisheye"}
    assert _rows(report, "onnx.refusal")[0]["refused"] is True
    assert all(r["agree"] for r in _rows(report, "harmonics.parity"))
    assert {r["model"] for r in _rows(report, "harmonics.so3")} == {"s2cnn_small", "s2cnn_digits"}
    measured = [r for r in _rows(report, "research.arms") if r.get("step_s") is not None]
    assert {r["study"] for r in measured} == {"learning", "rotated_digits", "paper", "ensembles", "pose"}
    assert all(r["est_h"] > 0 and r["full_steps"] > r["steps_run"] for r in measured)
    assert all(r["est_h"] > 0 for r in _rows(report, "research.summary"))


@pytest.mark.skipif(CUDA, reason="on a GPU the smoke run measures the CUDA rows")
def test_without_cuda_the_gpu_rows_say_so(smoke):
    report, _ = smoke
    sessions = _rows(report, "onnx.sessions")
    for r in sessions:
        if r["provider"] in ("cuda", "tensorrt"):
            assert _reason(r, "latency_ms") == "skipped: no CUDA device", r
    cpu = [r for r in sessions if r["provider"] == "cpu"]
    assert {r["precision"] for r in cpu} == {"fp32", "fp16"}
    for r in cpu:                # the check's parity rule is the export rule (heal_swin.export.compare_onnx)
        assert r["rule"] == r["library_rule"] and r["latency_ms"] > 0 and r["providers_got"] == "CPU"
        assert r["placement"].startswith("CPU 100.0 %")
    assert all(r["passed"] for r in cpu if r["precision"] == "fp32")
    for table in ("train.steps", "infer.eager"):
        assert all(_reason(r, "peak_mib") == "no CUDA device" for r in _rows(report, table))


def test_a_part_out_of_time_is_skipped_with_its_reason(tmp_path):
    report, md = _check(tmp_path, "--parts", "harmonics", "--limit", "harmonics=1")
    items = report["parts"]["harmonics"]["items"]
    assert items and all("time limit (1 s) ran out" in why for why in items.values()), items
    assert all(why == "skipped: not among --parts" for why in report["parts"]["train"]["items"].values())
    for row in _rows(report, "harmonics.time"):
        assert "time limit (1 s) ran out" in _reason(row, "fwd_ms")
    assert report["complete"] and "## 4. Research runs" in md
