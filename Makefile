# Two commands for a newcomer: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test protos demo bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start embedded Postgres, apply migrations, run matcher + tuner (+ gateway). Ctrl-C stops everything.
run: $(STAMP)
	$(VENV)/bin/ollama-optimizer up

## The whole test suite (what CI runs).
test: $(STAMP)
	bash deploy/tools/install-tools.sh
	bash bench/install_llamacpp.sh
	$(PY) -m pytest -q -rs -p no:cacheprovider $(PYTEST_ARGS)

## Regenerate the gRPC code from protos/ (a test fails when it is stale).
protos: $(STAMP)
	$(PY) -m ollama_optimizer.protogen

demo: $(STAMP)
	$(PY) -m bench.demo

bench: $(STAMP)
	$(PY) -m bench.e2e

clean:
	rm -rf $(VENV) .data build *.egg-info
