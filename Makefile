# MigraineMamba — the two commands of the README are `make run` and `make test`.
# Everything lives in .venv, created from the project's own files.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# CPU-only machines: the CPU build of torch, installed before anything that needs torch.
# GPU machines: override, e.g. make install TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url <CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed

export PATH := $(abspath $(BIN)):$(PATH)
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: install run pipeline robustness serve test test-all benchmark lint clean

# `make serve`: where the service listens
HOST ?= 127.0.0.1
PORT ?= 3000

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## the main job on the embedded defaults: the whole DVC pipeline on the simulated cohort, then
## the REST service on the champions it packaged (stays in the foreground; Ctrl-C stops it)
run: install pipeline serve

pipeline:
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

## every generative scenario through the stages (opt-in, not part of `pipeline`):
## data/robustness/scores.parquet, plots/robustness/scores.png
robustness: install
	$(BIN)/dvc repro robustness/dvc.yaml

## the service from the working tree (`bentoml serve .`) on the packaged routing table, with the
## embedded defaults (SQLite in data/service/); docs at http://$(HOST):$(PORT)/ and /api/v1/docs
serve: install
	@test -f data/serving/routing.json || { \
		echo "data/serving/routing.json is missing: run 'make pipeline' (dvc repro) first" >&2; exit 1; }
	@echo "MigraineMamba on http://$(HOST):$(PORT)  (Swagger UI: http://$(HOST):$(PORT)/ and http://$(HOST):$(PORT)/api/v1/docs)"
	ROUTING_TABLE_PATH=$(CURDIR)/data/serving/routing.json BENTOML_HOME=$(CURDIR)/bentoml_home \
		$(BIN)/bentoml serve . --host $(HOST) --port $(PORT)

## the default test run (CI runs this): two pytest-xdist workers, one test file per worker at a
## time (module-scoped servers and cohorts are built once; servers, PostgreSQL and the DDP ranks
## take free ports and tmp folders, so the workers do not meet)
test: install
	$(BIN)/python -m pytest -m "not slow" -q -n 2 --dist loadfile

test-all: install
	$(BIN)/python -m pytest -q

benchmark: install
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_models.py

lint: install
	$(BIN)/ruff check src tests pipelines benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
