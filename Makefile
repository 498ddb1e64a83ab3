# Quickstart: `make demo` then `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-compare bench-compare-full bench-step bench-l1-vs-gmp clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The main job on built-in data: 90 % zero weights on LeNet-300-100, real MNIST digits.
demo: $(STAMP)
	OMP_NUM_THREADS=1 L1SPARSE_THREADS=1 $(VENV)/bin/l1sparse fit --data mnist-5k \
		--task classification --hidden 300,100 --target-sparsity 0.9 --force --out runs/demo
	@echo "results: runs/demo/result.json, runs/demo/history.csv, runs/demo/model.safetensors"

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

# A first look (minutes): selection cost on mnist-5k, then the side-by-side quick comparison.
bench: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/selection.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/compare.py --quick

bench-compare: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/compare.py --quick

# The full suite: Fashion-MNIST and mnist-5k LeNet-300-100, four scikit-learn sets, 90/95/98 %
# and per-layer targets, several seeds (about 40-60 minutes here) -> benchmarks/RESULTS.md.
bench-compare-full: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/compare.py

bench-step: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/step_bench.py --write

# l1 against gradual magnitude pruning at equal nnz: live units, inference after compaction.
bench-l1-vs-gmp: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/l1_vs_magnitude.py --write

clean:
	rm -rf $(VENV) runs .pytest_cache
