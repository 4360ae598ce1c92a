# One-command set-up: `make demo` (main job on the embedded default) and `make test` (the test suite).
# Both create .venv on first use with the pinned torch + torchvision pair.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= runs/demo

.PHONY: venv demo test bench gpu-check clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_PIN)
	$(PY) -m pip install -e ".[dev]" $(TORCH_PIN)
	touch $@

venv: $(VENV)/.installed

# Idle OpenMP threads sleep instead of spinning, so a machine shared with other work slows the demo
# in proportion to the load rather than many times over.
demo: venv
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(PY) -m heal_swin.demo --out $(DEMO_DIR)

test: venv
	$(PY) -m pytest -n 2 --timeout 600 tests

bench: venv
	$(PY) bench/bench_projection.py

# The first thing to run on a newly available GPU (issue #30): every GPU figure in under 8 minutes on one
# H100/H200, written to bench/gpu/REPORT.md and bench/gpu/report.json (commit them). GPU_CHECK_ARGS=--smoke: tiny
# sizes on a CPU.
gpu-check: venv
	$(PY) bench/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
