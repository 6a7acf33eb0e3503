# Paygate: `make run` starts the gateway on the embedded default; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install migrate cluster bench bench-growth clean promtool

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

# How cost grows with merchants and stored payments (docs/performance.md, "How cost grows"):
# e.g. make bench-growth GROWTH_ARGS="--database sqlite --seconds 5"
GROWTH_ARGS ?= --database both
bench-growth: $(STAMP)
	$(BIN)/python bench/growth.py $(GROWTH_ARGS)

# promtool (Debian's prometheus package) checks the alert rules in deploy/; the tests that use it
# fail without it. Installed here when missing and apt-get can (as root); a new machine may have
# no package lists yet, so they are read once first.
PROMTOOL_INSTALL := apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1
promtool:
	@command -v promtool >/dev/null || $(PROMTOOL_INSTALL) || \
		{ apt-get update -q >/dev/null 2>&1 && $(PROMTOOL_INSTALL); } || \
		echo "promtool is missing: install Debian's prometheus package for the alert-rule tests"

test: $(STAMP) promtool
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
