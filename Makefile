# Two entry points that work on a fresh machine: `make run` (the main job) and `make test` (the test suite).
# Both create .venv and install negmine (editable) with what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.negmine-installed

.PHONY: install run demo-toy test test-all lint bench clean

QUICK_DATA ?= data/audio-clevrgan-quick
QUICK_STAMP := $(shell date +%Y%m%d-%H%M%S)
QUICK_RUN ?= runs/audio-clevrgan-quick-$(QUICK_STAMP)

$(STAMP): pyproject.toml examples/custom_generator/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev,speech]'
	$(BIN)/python -m pip install -q -e examples/custom_generator
	touch $(STAMP)

install: $(STAMP)

# The main job, end to end on CPU (about 12 minutes on 2 cores): build 4,000 Audio CLEVRGAN pairs from the committed
# GAN and segmenter (resumed or reused when already there), train DaveNet (cpu profile, random negatives), then write
# the report (recall, Table 1 attribute test, rendered-scene test, figures).
run: $(STAMP)
	$(BIN)/negmine data build audio-clevrgan --out $(QUICK_DATA) --n 4000 --seed 0
	$(BIN)/negmine train --task audio-clevrgan --profile cpu --task-option data_dir=$(QUICK_DATA) \
		-n random --steps 600 --eval-every 300 --run-dir $(QUICK_RUN)
	$(BIN)/negmine eval $(QUICK_RUN)

# The built-in toy task in seconds: recall before and after random + hard in-batch negatives.
demo-toy: $(STAMP)
	$(BIN)/negmine train --task toy --negatives random --negatives hard-minibatch

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
