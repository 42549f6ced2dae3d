# Every target sets up what it needs on a bare machine, idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VASTAI_VENV := .venv-vastai
VASTAI_STAMP := $(VASTAI_VENV)/.installed
VASTAI_VERSION := 1.9.1

.PHONY: all demo test lint bench clean venv vastai-cli

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The official CLI lives in its own venv: its pins must not constrain ours.
$(VASTAI_STAMP):
	@test -x $(VASTAI_VENV)/bin/python || $(PYTHON) -m venv $(VASTAI_VENV)
	$(VASTAI_VENV)/bin/python -m pip install -q --upgrade pip
	$(VASTAI_VENV)/bin/python -m pip install -q 'vastai==$(VASTAI_VERSION)'
	@touch $(VASTAI_STAMP)

vastai-cli: $(VASTAI_STAMP)

demo: $(STAMP)
	$(BIN)/python -m gpushop.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: $(STAMP) $(VASTAI_STAMP) lint
	VASTAI_CLI=$(CURDIR)/$(VASTAI_VENV)/bin/vastai $(BIN)/pytest -q

bench: $(STAMP) $(VASTAI_STAMP)
	VASTAI_CLI=$(CURDIR)/$(VASTAI_VENV)/bin/vastai $(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(VASTAI_VENV) .pytest_cache .mypy_cache .ruff_cache
