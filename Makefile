# Two entry points for a fresh machine with only Python 3.11: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup demo test bench lock clean

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

setup: $(BIN)/.installed

demo: setup  ## the main job: the whole pipeline on the embedded defaults
	$(BIN)/python -m flows.pipeline

test: setup  ## the test suite (no network; real MLflow, Prefect, DVC)
	$(BIN)/python -m pytest -q

lock:  ## re-resolve requirements.in into requirements.lock
	$(PYTHON) -m venv /tmp/pricer-lock-venv
	/tmp/pricer-lock-venv/bin/pip install --quiet -r requirements.in
	/tmp/pricer-lock-venv/bin/pip freeze | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache
