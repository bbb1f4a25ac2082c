# Two commands: `make demo` and `make test`. Both create (or reuse) the virtual environment;
# the demo installs calm alone, the tests add the dev extras (transformers, playwright, faiss...)
# that the demo does not need, so a fresh clone's demo does not wait for them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.calm-installed
DEV_STAMP := $(VENV)/.calm-dev-installed
DEMO_OUT ?= runs/demo

.PHONY: setup test lint demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

setup: $(DEV_STAMP)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(DEV_STAMP) lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

demo: $(STAMP)
	$(BIN)/calm demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) build *.egg-info
