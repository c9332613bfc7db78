# smallwb — two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
# every recipe line fails on the first failing command, pipes included: failures always reach make
.SHELLFLAGS := -eu -o pipefail -c
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NBS := nbs experiments
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test venv export check-sync nbtest pytest readme docs lab
.NOTPARALLEL:  # make -j must not run check-sync (which rewrites files) beside the tests

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
# (file names and contents are hashed, so a module that appears on export counts as a change too)
FINGERPRINT = find $(1) -type f -name '$(2)' -not -path '*/.ipynb_checkpoints/*' | LC_ALL=C sort | xargs md5sum | md5sum
check-sync: $(STAMP)
	@before=$$($(call FINGERPRINT,smallwb,*.py)); $(BIN)/nbdev_export; after=$$($(call FINGERPRINT,smallwb,*.py)); \
	  if [ "$$before" != "$$after" ]; then echo "smallwb/ changed on nbdev_export: notebooks and library are out of sync (run make export and commit)"; exit 1; fi
	@before=$$($(call FINGERPRINT,$(NBS),*.ipynb)); $(BIN)/nbdev_clean --fname nbs; $(BIN)/nbdev_clean --fname experiments; \
	  after=$$($(call FINGERPRINT,$(NBS),*.ipynb)); \
	  if [ "$$before" != "$$after" ]; then echo "nbdev_clean changed notebooks: run make export and commit"; exit 1; fi
	@tmp=$$(mktemp); $(BIN)/python tools/readme.py nbs/index.ipynb $$tmp; \
	  if ! cmp -s $$tmp README.md; then rm -f $$tmp; echo "README.md is not what nbs/index.ipynb gives: run make readme and commit"; exit 1; fi; rm -f $$tmp
	@echo "library and notebooks in sync; notebooks clean; README up to date"

# nbdev_test, keeping the executed notebooks so the docs test renders them without running them again.
nbtest: $(STAMP)
	$(BIN)/python tools/nbtest.py --n_workers 2 --timing

# pytest's exit code 5 means "no tests collected": treat it as the failure it is, with a message.
pytest: $(STAMP)
	@rc=0; $(BIN)/python -m pytest -q --durations=8 -n 2 --dist loadfile tests || rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests in tests/"; fi; exit $$rc

export: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean --fname nbs
	$(BIN)/nbdev_clean --fname experiments

# README.md is written from nbs/index.ipynb. nbdev_readme needs quarto, which cannot be installed
# here, so tools/readme.py runs nbconvert on the notebook and turns its front matter into a title.
readme: $(STAMP)
	$(BIN)/python tools/readme.py nbs/index.ipynb README.md

## make docs: the notebooks rendered offline (Sphinx + myst-nb; quarto is not installable here) into _docs/; open _docs/index.html
docs: $(STAMP)
	$(BIN)/python tools/docs.py

## make lab: JupyterLab on localhost only, kernel `smallwb`; open the URL it prints (random token) to land on nbs/index.ipynb
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --LabApp.default_url=/lab/tree/nbs/index.ipynb \
	  --MultiKernelManager.default_kernel_name=smallwb $$([ "$$(id -u)" = 0 ] && echo --allow-root)
