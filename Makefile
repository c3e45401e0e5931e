# Two commands on a fresh machine with Python 3.10-3.12 on Linux:  make demo  /  make test  (then: make serve)
# `make install` installs the exact versions of requirements.lock and checks them; `make lock`
# re-resolves the lock from pyproject.toml's ranges (and lock-constraints.txt).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install lock demo serve test bench

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

# The page for the export `make demo` leaves; http://127.0.0.1:7860/ (PORT=... to change), Ctrl-C stops it.
PORT ?= 7860
serve: install
	@test -f runs/convnext_cxr_demo/export/model.json || { echo "no demo export: run make demo first"; exit 1; }
	$(BIN)/python -m shared.serve --model runs/convnext_cxr_demo/export --port $(PORT)

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/engine_overhead.py
	$(BIN)/python bench/data_pipeline.py
	$(BIN)/python bench/gpu_throughput.py
