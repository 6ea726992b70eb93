# Two commands for a newcomer: `make run` and `make test`. Everything installs into .venv.
# `make run` installs only what running needs; `make test` (and demo, bench, protos) adds the dev extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip's progress without its notices: one line per package it fetches, then what it installed.
PIP_PROGRESS := $(PY) -u -c "import sys; [print('  fetching ' + line.split()[1] if line.startswith('Collecting') else line.rstrip(), flush=True) for line in sys.stdin if line.startswith(('Collecting', 'Successfully installed', 'ERROR', 'error'))]"

.PHONY: run test protos config-docs demo bench install clean

$(RUN_STAMP): pyproject.toml
	@test -x $(PY) || { echo "make: creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "make: installing ollama-optimizer and what it needs to run into $(VENV) (first time: about a minute)"
	@$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -e . 2>&1 | $(PIP_PROGRESS)
	@touch $@

$(DEV_STAMP): $(RUN_STAMP)
	@echo "make: installing the test and benchmark tools (the dev extras) into $(VENV)"
	$(PY) -m pip install --progress-bar off -e '.[dev]' 2>&1 | $(PIP_PROGRESS)
	@touch $@

install: $(RUN_STAMP)

## Start embedded Postgres, apply migrations, run matcher + tuner (+ gateway). Ctrl-C stops everything.
run: $(RUN_STAMP)
	$(VENV)/bin/ollama-optimizer up

## The whole test suite (what CI runs): lint, strict types, then pytest.
test: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m ollama_optimizer.config_docs --check
	bash deploy/tools/install-tools.sh
	bash bench/install_llamacpp.sh
	$(PY) -m pytest -q -rs -p no:cacheprovider $(PYTEST_ARGS)

## Regenerate the README configuration tables and proxy_plugin/config.json from the settings' declarations.
config-docs: $(DEV_STAMP)
	$(PY) -m ollama_optimizer.config_docs

## Regenerate the gRPC code from protos/ (a test fails when it is stale).
protos: $(DEV_STAMP)
	$(PY) -m ollama_optimizer.protogen

demo: $(DEV_STAMP)
	$(PY) -m bench.demo

bench: $(DEV_STAMP)
	$(PY) -m bench.e2e

clean:
	rm -rf $(VENV) .data build *.egg-info
