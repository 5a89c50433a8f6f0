# The README's commands. `make demo` and `make test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The PyTorch pair this project is tested with (pip takes them from the local disk where present).
TORCH  ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT := runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup data demo demo-an test bench clean-venv

setup: $(VENV)/.installed data

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, torchvision" 2>/dev/null || \
	  $(PY) -m pip install -q $(TORCH) 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, torchvision, dan, search_spaces, optuna, tensorboard, yaml, pytest"
	touch $@

data:
	@bash scripts/get_data.sh

# DAN on Fashion-MNIST: width search at 25% of the FLOPs (half of 30k training images drive the
# architecture), then an adjoint retrain of the found widths on all 60k images.
demo: setup
	$(PY) tools/search.py --config configs/fashion_mnist_resnet18.yaml --budget-flops 25% --epochs 3 \
	  --set data.train_subset=30000 --out $(DEMO_OUT)/search
	$(PY) tools/retrain.py $(DEMO_OUT)/search/arch.json --epochs 2

# AN alone: adjoint training at alpha = 4 (the issue-2 demo).
demo-an: setup
	$(PY) tools/train.py --config configs/fashion_mnist_resnet18.yaml --epochs 2 --out $(DEMO_OUT)

# Two workers (pytest-xdist), one per core of the 2-core machine the suite is sized for; a test marked
# `alone` (it asserts a speed measured in its own run) runs with no other test running (tests/conftest.py).
test: setup
	$(PY) -m pytest -q -n 2

bench: setup
	$(PY) tools/bench.py --json docs/benchmarks.json --markdown docs/benchmarks.md

clean-venv:
	rm -rf $(VENV)
