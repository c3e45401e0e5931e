# Two commands on a fresh machine with Python 3.10+:  make demo  /  make test
# VENV may point outside the clone (CI reuses one); the install step still runs every time.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"

demo: install
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		convnext_cxr/train.py --config convnext_cxr/demo.yaml

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/engine_overhead.py
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/gpu_throughput.py
