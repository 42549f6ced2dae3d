# Every target sets up what it needs on a bare machine, idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VASTAI_VENV := .venv-vastai
VASTAI_STAMP := $(VASTAI_VENV)/.installed
VASTAI_VERSION := 1.9.1

.PHONY: all demo test fuzz lint bench clean venv vastai-cli

all: test

# uv installs what pip would, twice as fast (CI starts from nothing each time); pip stays the
# fallback if uv cannot be had. --compile-bytecode as pip does: PYTHONDONTWRITEBYTECODE is set
# here, and every process of the suite compiling its imports again cost half of CI's CPU.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q 'uv>=0.4,<1' \
		&& $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev]' \
		|| $(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The official CLI lives in its own venv: its pins must not constrain ours. It imports
# distutils.util; setuptools' distutils-precedence.pth made that import all of setuptools on
# every start (0.4 s of 1.2 s CPU). Below Python 3.12 the stdlib's distutils serves it.
$(VASTAI_STAMP): Makefile
	@test -x $(VASTAI_VENV)/bin/python || $(PYTHON) -m venv $(VASTAI_VENV)
	@test -x $(BIN)/uv && $(BIN)/uv pip install -q --compile-bytecode --python $(VASTAI_VENV)/bin/python \
		'vastai==$(VASTAI_VERSION)' || $(VASTAI_VENV)/bin/python -m pip install -q \
		'vastai==$(VASTAI_VERSION)'
	$(VASTAI_VENV)/bin/python -c 'import sys; sys.exit(sys.version_info >= (3, 12))' \
		&& rm -f $(VASTAI_VENV)/lib/python3*/site-packages/distutils-precedence.pth || true
	@touch $(VASTAI_STAMP)

vastai-cli: $(VASTAI_STAMP)

demo: $(STAMP)
	$(BIN)/python -m gpushop.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# pytest-xdist: the suite mostly waits (SSH, emulated hosts, subprocesses), so more workers than
# the 2 cores; worksteal evens out the few slow tests. Figures: README "Tests".
PYTEST_WORKERS ?= 4
PYTEST_ARGS ?=

test: $(STAMP) $(VASTAI_STAMP) lint
	VASTAI_CLI=$(CURDIR)/$(VASTAI_VENV)/bin/vastai $(BIN)/pytest -q -n $(PYTEST_WORKERS) \
		--dist worksteal --durations=15 $(PYTEST_ARGS)

# The property tests (tests/property) with ~100,000 random examples instead of make test's 330
# derandomized ones; no per-test timeout. Figures: README "Tests".
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist worksteal --timeout=0 \
		--hypothesis-show-statistics $(PYTEST_ARGS) tests/property

bench: $(STAMP) $(VASTAI_STAMP)
	VASTAI_CLI=$(CURDIR)/$(VASTAI_VENV)/bin/vastai $(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(VASTAI_VENV) .pytest_cache .mypy_cache .ruff_cache
