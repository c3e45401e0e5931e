# Two commands on a fresh machine with Python 3.10-3.12 on Linux:  make demo  /  make test
# `make install` installs the exact versions of requirements.lock and checks them; `make lock`
# re-resolves the lock from pyproject.toml's ranges (and lock-constraints.txt).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install lock demo test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python scripts/check_lock.py requirements.lock

lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/python -m uv pip compile pyproject.toml --extra dev --universal --python-version 3.10 \
		--constraint lock-constraints.txt --no-header --quiet --output-file requirements.lock

demo: install
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		convnext_cxr/train.py --config convnext_cxr/demo.yaml --train.overwrite true

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/engine_overhead.py
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/gpu_throughput.py
