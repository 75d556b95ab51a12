# hdlora — two commands on a fresh machine:
#   make figures   executes every notebook (profile $(PROFILE)) and writes data/ and figures/
#   make test      lint, unit tests, then every notebook under nbval (profile smoke)
# Each creates .venv and installs the project the first time; later calls install nothing.
# `make help` lists every target.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hdlora-installed
KERNEL := hdlora
PROFILE ?= quick
# RECOMPUTE=True ignores the tables cached in data/ (by default a table is reused when the hash
# of what produced it — points, arguments, library code — matches)
RECOMPUTE ?= False
# where the notebooks' jobs run (hdlora.harness.executors): empty = in each notebook's process;
# processes[:N], dask-local[:N], or dask://host:port (a dask.distributed scheduler)
EXECUTOR ?=
# where `make figures` writes data/ and figures/ (the repository; CI's book check: a folder in build/)
OUT_DIR ?= $(CURDIR)
NOTEBOOKS := $(sort $(wildcard notebooks/*.py))
NAMES := $(basename $(notdir $(NOTEBOOKS)))
LIB := $(shell find lib/hdlora -name '*.py')
EXEC := build/executed/$(PROFILE)
STAMPS := $(NAMES:%=$(EXEC)/%.done)

.DEFAULT_GOAL := help
.PHONY: help figures test unit notebooks lint venv clean mutants plan $(NAMES)

help: ## list the targets
	@echo "hdlora: make <target> [PROFILE=smoke|quick|paper] [RECOMPUTE=True] [JOBS=2] [EXECUTOR=...]"
	@grep -hE '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18
	@echo "one notebook:     make <name>, one of: $(NAMES)"

venv: $(STAMP) ## create .venv and install the project (once)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (hdlora)" >/dev/null
	touch $(STAMP)

# `make figures` runs JOBS notebooks at once, each on one BLAS/OpenMP thread when JOBS > 1 (two
# notebooks on 2 cores with a thread each: ~3x faster than both fighting over the cores)
JOBS ?= 2
ifeq ($(JOBS),1)
THREAD_ENV :=
else
THREAD_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
endif

figures: $(STAMP) ## execute the notebooks whose source or library changed (JOBS=2 at once); write data/ and figures/
	@$(THREAD_ENV) $(MAKE) --no-print-directory -j$(JOBS) $(STAMPS)
	@if [ "$(OUT_DIR)" = "$(CURDIR)" ]; then $(BIN)/python tools/readings.py; fi

plan: $(STAMP) ## list and price every job of PROFILE that is not cached (e.g. PROFILE=paper), computing nothing
	@$(THREAD_ENV) $(BIN)/python tools/plan.py --profile $(PROFILE) $(if $(WORKERS),--workers $(WORKERS))

# one notebook by name, e.g. `make 02_pretraining_theory`
$(NAMES): %: $(EXEC)/%.done

# A notebook reruns when it or the library changed. It writes into the repository (out_dir) and
# its executed copy goes to build/executed/$(PROFILE)/; its log replaces papermill's noise.
$(EXEC)/%.done: notebooks/%.py $(LIB) $(STAMP)
	@mkdir -p $(EXEC); start=$$(date +%s); \
	if $(BIN)/jupytext --to ipynb -o - $< 2>/dev/null \
	    | HDLORA_PROGRESS=0 $(BIN)/papermill - $(EXEC)/$*.ipynb -k $(KERNEL) -l python \
	        -p profile $(PROFILE) -p out_dir $(OUT_DIR) -p recompute $(RECOMPUTE) \
	        $(if $(EXECUTOR),-p executor $(EXECUTOR)) \
	        --no-progress-bar --log-level ERROR >$(EXEC)/$*.log 2>&1; then \
	  echo "$$(( $$(date +%s) - start ))" >$(EXEC)/$*.seconds; \
	  echo "$* (profile $(PROFILE)): done in $$(cat $(EXEC)/$*.seconds) s"; touch $@; \
	else \
	  echo "$* (profile $(PROFILE)): FAILED after $$(( $$(date +%s) - start )) s; log: $(EXEC)/$*.log"; \
	  tail -n 40 $(EXEC)/$*.log; exit 1; \
	fi

# The HTML book of the notebooks as `make figures` executed them (same PROFILE; nothing re-runs):
# book/stage.py stages book/ and build/executed/$(PROFILE)/*.ipynb in build/book-src/ (it stops,
# naming them, if a notebook has no finished run there), sphinx-build writes build/book/. Its
# packages (the `book` extra: jupyter-book 1, offline MathJax, selenium) install on first use.
BOOK_STAMP := $(VENV)/.hdlora-book-installed
.PHONY: book

$(BOOK_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,book]'
	touch $(BOOK_STAMP)

book: $(BOOK_STAMP) ## HTML book of the notebooks run by `make figures`: build/book/index.html
	@start=$$(date +%s); \
	$(BIN)/python book/stage.py --executed $(EXEC) --out build/book-src $(NAMES); \
	$(BIN)/sphinx-build -b html -q -d build/book-doctrees build/book-src build/book; \
	echo "book (profile $(PROFILE)): build/book/index.html in $$(( $$(date +%s) - start )) s"

test: lint unit notebooks ## lint, unit tests, and every notebook under nbval (profile smoke)

unit: $(STAMP) ## the unit tests only (the fast tier)
	HDLORA_PROGRESS=0 $(BIN)/python -m pytest tests -p no:cacheprovider -q

# Notebooks run with profile smoke into build/nbval (wiped first, caches ignored): a test never
# trusts an old table.
notebooks: $(STAMP) ## every notebook under nbval (profile smoke, fresh outputs)
	rm -rf build/nbval && mkdir -p build/nbval
	for name in $(NAMES); do \
	  $(BIN)/jupytext --to ipynb -o - notebooks/$$name.py 2>/dev/null \
	    | $(BIN)/papermill - build/nbval/$$name.ipynb -k $(KERNEL) -l python \
	        -p profile smoke -p out_dir $(CURDIR)/build/nbval/out/$$name -p recompute True \
	        --prepare-only --log-level ERROR 2>/dev/null; \
	done
	HDLORA_PROGRESS=0 $(BIN)/python -m pytest build/nbval --nbval-lax --nbval-current-env -p no:cacheprovider -q

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check lib tests notebooks bench book tools
	$(BIN)/ruff format --check lib tests bench book tools

# Plant each bug of tools/mutants.py in a copy of lib/ (never the live one) and run the unit tier
# on it; fails on a survivor that is not listed as equivalent. ~15 min on 2 cores.
mutants: $(STAMP) ## mutation testing of the unit tier (tools/mutants.py)
	HDLORA_PROGRESS=0 $(BIN)/python tools/mutants.py

clean: ## remove build/ (executed notebooks, stamps, test outputs)
	rm -rf build
