"""The CPU estimate of the --full runs' GPU time (bench/full_estimate.py, issue #28): the operator count sees
what a step launches (FLOPs of a matmul, no views), the per-operator model orders its bounds, and a shrunk run
over two studies writes a row per arm group and a total per study."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "full_estimate.py"


@pytest.fixture(scope="module")
def fe():
    spec = importlib.util.spec_from_file_location("full_estimate_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_kernels_and_matmul_flops_not_views(fe):
    a, b = torch.randn(6, 5), torch.randn(5, 7)
    with fe.OpCount() as counted:
        c = a @ b
        c.view(42)                                         # a view: no kernel
        (c + 1.0).relu_()
    names = [name for name, _, _ in counted.ops]
    assert names == ["mm", "add", "relu_"], names
    assert counted.ops[0][1] == 2 * 6 * 5 * 7                 # multiply-adds of an m×k by k×n product
    assert counted.ops[0][2] == 4 * (6 * 5 + 5 * 7 + 6 * 7)    # float32: both inputs and the output
    assert counted.ops[1][1] == 0


def test_step_model_orders_its_bounds(fe):
    counted = fe.OpCount()
    counted.ops = [("mm", 1e12, 1e6), ("add", 0.0, 8e9)] + [("relu", 0.0, 10.0)] * 1000
    c = fe.CONSTANTS["fast"]
    host, gpu = counted.gpu_seconds(c)
    assert host == pytest.approx(1002 * c["host_us"] * 1e-6)
    # the matmul at the FLOP rate, the add at the bandwidth, each small one at the minimum kernel time
    assert gpu == pytest.approx(1e12 / (c["tflops"] * 1e12) + 8e9 / (c["tb_per_s"] * 1e12)
                                + 1000 * c["kernel_us"] * 1e-6)
    slow_host, slow_gpu = counted.gpu_seconds(fe.CONSTANTS["slow"])
    assert slow_host > host and slow_gpu > gpu


def test_two_studies_shrunk_write_a_row_per_group(tmp_path):
    small = ["data.nside=8", "data.digits.train=8", "data.digits.test=4"]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--studies", "paper", "ensembles", "--groups-per-study", "2",
                           "--out", str(tmp_path), "--override", *(f"{s}:{o}" for s in ("paper", "ensembles")
                                                                   for o in small)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((tmp_path / "estimate.json").read_text())["rows"]
    assert [(r["study"], r["task"]) for r in rows] == [("paper", "segmentation"), ("ensembles", "segmentation")] * 2
    for r in rows:
        assert "error" not in r, r
        assert r["grid"] == "nside 8" and r["ops"] > 50 and r["gflops"] > 0 and r["gbytes"] > 0
        # the --full run's sizes, not the shrunk ones: 12,000 segmentation steps, a group of several runs
        assert r["full_steps"] >= 2400 and r["runs"] >= 2
        assert 0 < r["fast_h"] < r["slow_h"]
        assert r["fast_h"] == pytest.approx(r["fast_step_s"] * r["full_steps"] * r["runs"] / 3600)
    md = (tmp_path / "ESTIMATE.md").read_text()
    assert "| paper | `heal-swin-study bench/paper/study.py --full --device cuda --out runs/paper_full` |" in md
    assert "| ensembles |" in md and "not estimated" not in md


def test_a_bad_flag_names_the_rule(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--studies", "paper", "--out", str(tmp_path),
                           "--override", "nosuch:data.nside=8"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "must be STUDY:KEY=VALUE" in proc.stderr
    proc = subprocess.run([sys.executable, str(SCRIPT), "--studies", "paper", "--out", str(tmp_path),
                           "--groups-per-study", "0"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "--groups-per-study 0: must be >= 1" in proc.stderr
    assert not (tmp_path / "ESTIMATE.md").exists()          # refused before any work
