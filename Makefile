# smallwb — two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NBS := nbs experiments
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test venv export clean-nbs check-sync nbtest pytest readme docs lab

# The venv: pinned requirements from settings.ini (`pip install -e .[dev]`) and the `smallwb` Jupyter kernel for papermill.
$(STAMP): settings.ini setup.py
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name smallwb --display-name 'Python (smallwb)' >/dev/null
	@touch $(STAMP)
venv: $(STAMP)

## make demo: the whole experiment chain on the built-in digits
demo: $(STAMP)
	$(BIN)/smallwb run --name demo

## make test: library and notebooks in sync, notebooks clean, notebook tests, integration tests
test: $(STAMP) check-sync nbtest pytest

# nbdev_export must not change the library, nbdev_clean must not change the notebooks.
check-sync: $(STAMP)
	@before=$$(cat smallwb/*.py | md5sum); $(BIN)/nbdev_export; after=$$(cat smallwb/*.py | md5sum); \
	  if [ "$$before" != "$$after" ]; then echo "smallwb/ changed on nbdev_export: notebooks and library are out of sync (run nbdev_export and commit)"; exit 1; fi
	@before=$$(cat nbs/*.ipynb experiments/*.ipynb | md5sum); $(BIN)/nbdev_clean --fname nbs; $(BIN)/nbdev_clean --fname experiments; \
	  after=$$(cat nbs/*.ipynb experiments/*.ipynb | md5sum); \
	  if [ "$$before" != "$$after" ]; then echo "nbdev_clean changed notebooks: run nbdev_clean and commit"; exit 1; fi
	@echo "library and notebooks in sync; notebooks clean"

nbtest: $(STAMP)
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: $(STAMP)
	$(BIN)/python -m pytest -q tests

export: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean --fname nbs
	$(BIN)/nbdev_clean --fname experiments

# README.md is written from nbs/index.ipynb. nbdev_readme needs quarto, which cannot be installed
# here, so tools/readme.py runs nbconvert on the notebook and turns its front matter into a title.
readme: $(STAMP)
	$(BIN)/python tools/readme.py nbs/index.ipynb README.md
