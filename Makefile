# `make run` and `make test` create .venv on first use, install the pinned
# dependencies, then run the pipeline or the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)

.PHONY: run test lint bench pacs clean-data

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	# The test of `mlflow models serve --env-manager uv` builds the served model's environment offline: fill
	# uv's cache now with that runtime and the build tools MLflow records, installed once into a scratch env.
	$(BIN)/python tests/integration/served_requirements.py > $(VENV)/served-requirements.txt
	rm -rf $(VENV)/served-env && $(BIN)/uv venv -q $(VENV)/served-env --python $(BIN)/python
	$(BIN)/uv pip install -q --python $(VENV)/served-env/bin/python -r $(VENV)/served-requirements.txt
	rm -rf $(VENV)/served-env
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest

# A local PACS: Orthanc with DICOMweb on 127.0.0.1 (params.yaml pacs:), until Ctrl-C.
pacs: $(STAMP)
	$(BIN)/her2pcr pacs

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

bench: $(STAMP)
	$(BIN)/python bench/simulate.py
	$(BIN)/python bench/preprocess.py
	$(BIN)/python bench/train.py
