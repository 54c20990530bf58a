# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up by them.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test lint install install-test clean-venv

demo: $(VENV)/.runtime
	$(BIN)/retrain demo fetch
	$(BIN)/retrain run pipeline.yaml

test: $(VENV)/.test
	$(BIN)/ruff check runner tests notebooks
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.test
	$(BIN)/ruff check runner tests notebooks
	$(BIN)/mypy

install: $(VENV)/.runtime
install-test: $(VENV)/.test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The runtime only: no jupyter metapackage (it slows every kernel start; see README).
$(VENV)/.runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PIP) -e '.[test]'
	touch $@

# Refresh the lock after changing dependencies in pyproject.toml.
constraints.lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^notebook-retrain' > constraints.txt

clean-venv:
	rm -rf $(VENV)
