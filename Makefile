# hdlora — two commands on a fresh machine:
#   make figures   executes every notebook (profile $(PROFILE)) and writes data/ and figures/
#   make test      unit tests + every notebook under nbval (profile smoke)
# Each creates .venv and installs the project the first time; later calls install nothing.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hdlora-installed
KERNEL := hdlora
PROFILE ?= quick
# RECOMPUTE=True ignores the simulation/theory tables cached in data/ (default: replot them)
RECOMPUTE ?= False
NOTEBOOKS := $(sort $(wildcard notebooks/*.py))

.DEFAULT_GOAL := figures
.PHONY: figures test lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (hdlora)" >/dev/null
	touch $(STAMP)

# Execute each notebook with papermill (profile $(PROFILE)); executed copies go to build/executed.
figures: $(STAMP)
	mkdir -p build/executed
	for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .py); echo "== $$name (profile $(PROFILE))"; \
	  $(BIN)/jupytext --to ipynb -o - $$nb 2>/dev/null \
	    | $(BIN)/papermill - build/executed/$$name.ipynb -k $(KERNEL) -l python \
	        -p profile $(PROFILE) -p recompute $(RECOMPUTE) --log-level ERROR; \
	done

# Unit tests, then the notebooks (profile smoke) under nbval, in one pytest run.
test: $(STAMP)
	rm -rf build/nbval && mkdir -p build/nbval
	for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .py); \
	  $(BIN)/jupytext --to ipynb -o - $$nb 2>/dev/null \
	    | $(BIN)/papermill - build/nbval/$$name.ipynb -k $(KERNEL) -l python \
	        -p profile smoke --prepare-only --log-level WARNING; \
	done
	HDLORA_PROGRESS=0 $(BIN)/python -m pytest tests build/nbval --nbval-lax --nbval-current-env -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check lib tests notebooks bench
	$(BIN)/ruff format --check lib tests bench

clean:
	rm -rf build
