# Two entry points that work on a fresh machine: `make run` (the main job) and `make test` (the test suite).
# Both create .venv and install negmine (editable) with what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.negmine-installed

.PHONY: install run demo-toy test test-all lint bench clean

$(STAMP): pyproject.toml examples/custom_generator/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev,speech]'
	$(BIN)/python -m pip install -q -e examples/custom_generator
	touch $(STAMP)

install: $(STAMP)

# The main job: train on the built-in toy task and print recall before and after.
run: $(STAMP)
	$(BIN)/negmine train --task toy --negatives random --negatives hard-minibatch

demo-toy: run

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q --runslow

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/core_mining.py

clean:
	rm -rf $(VENV) runs .pytest_cache
