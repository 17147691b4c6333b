# SEMOPS: the two commands are `make up` (run the network) and `make test` (run every test).
# Both create the virtual environment on first use, so a fresh clone needs only Python 3.11+
# and make.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck vectors up demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The whole suite, plus the static checks that keep the core honest.
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

# Regenerate the golden vectors (only when a message format changes on purpose).
vectors: $(STAMP)
	$(BIN)/python tests/vectors/generate.py

up: $(STAMP)
	@$(BIN)/semops up

demo: $(STAMP)
	@$(BIN)/semops demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
