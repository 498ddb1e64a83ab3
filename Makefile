# Quickstart: `make demo` then `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The main job on built-in data: 90 % zero weights on LeNet-300-100, real MNIST digits.
demo: $(STAMP)
	OMP_NUM_THREADS=1 L1SPARSE_THREADS=1 $(VENV)/bin/l1sparse fit --data mnist-5k \
		--task classification --hidden 300,100 --target-sparsity 0.9 --out runs/demo
	@echo "results: runs/demo/result.json, runs/demo/history.csv, runs/demo/model.safetensors"

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/selection.py

clean:
	rm -rf $(VENV) runs .pytest_cache
