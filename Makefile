# Two set-up-and-go targets: `make demo` (the main job on the arithmetic testbed, CPU) and `make test`.
# Each creates or reuses .venv and installs the project first. On a machine without CUDA the CPU
# build of torch is installed before anything that depends on torch (a bare `torch` is a multi-GB
# CUDA download).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUNS ?= runs
NPROC ?= 2
TORCH_CPU ?= torch==2.13.0

# CPU ranks for DeepSpeed on a machine without a GPU; a GPU machine keeps its own accelerator.
export DS_ACCELERATOR ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
# DeepSpeed compiles its CPU ops (CPU Adam, shared-memory collectives) on first use into one directory
# per user by default; two checkouts' venvs sharing it rebuild each other's ops (a minute or more) at
# every switch. One directory per venv builds them once.
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	if [ "$(DS_ACCELERATOR)" = "cpu" ]; then $(PY) -m pip install "$(TORCH_CPU)"; fi
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) launch/undo.py --out $(RUNS) --nproc $(NPROC)

test: $(STAMP)
	$(PY) -m pytest -q --durations=15 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(RUNS) .pytest_cache
