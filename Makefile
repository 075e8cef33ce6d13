# Set-up and entry points. Everything installs into .venv inside this folder.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch: a plain "torch" from PyPI is a multi-GB CUDA build on Linux.
# Override TORCH_SPEC/TORCH_PIP_ARGS for another platform, e.g.
#   make install TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.veil-installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/veil demo

test: install
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --doctest-modules veil  # the docstring examples run too

lint: install
	$(BIN)/ruff check veil tests bench

bench: install
	$(BIN)/veil bench all

clean:
	rm -rf $(VENV) build *.egg-info
