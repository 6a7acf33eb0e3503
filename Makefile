# Paygate: `make run` starts the gateway on the embedded default; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install migrate cluster bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/paygate serve --demo

cluster: $(STAMP)
	$(BIN)/paygate cluster

migrate: $(STAMP)
	$(BIN)/paygate migrate

# The benchmark harness (docs/performance.md): e.g. make bench BENCH_ARGS="--mode embedded --seconds 5"
BENCH_ARGS ?= --mode both
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
