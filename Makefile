# accident-severity-forecast: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The venv's bin first: MLflow and papermill start helpers (uvicorn, kernels) by name.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
STAMP := $(VENV)/.installed

NB ?=
ARGS ?=

.PHONY: help setup up down status test lint notebooks run-notebook bench ingestion synthetic training-manual training-workflow compose compose-down

help: ## Show this list of targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --editable .
	@touch $(STAMP)

# .env: the local settings, readable by you only, with a generated password for the embedded PostgreSQL's
# application role (URL-safe base64, so it needs no quoting inside DATABASE_URL).
.env:
	@umask 077 && password=$$(head -c 18 /dev/urandom | base64 | tr '+/' '-_') && \
		sed "s|^DATABASE_URL=postgresql://asf@|DATABASE_URL=postgresql://asf:$$password@|" .env.example > .env
	@echo "Created .env from .env.example (readable by you only, with a generated PostgreSQL password)."

setup: $(STAMP) .env ## Create .venv and install everything (quick when nothing changed)
	@echo "Environment ready: $(VENV) ($$($(PY) --version))."

up: setup ## Start the embedded PostgreSQL, S3 and MLflow servers (idempotent)
	@$(PY) scripts/services.py up

down: ## Stop the embedded services that `make up` started
	@if [ -x $(PY) ]; then $(PY) scripts/services.py down; else echo "Nothing to stop: no .venv yet."; fi

status: setup ## Show each service, its URL and whether it answers its health check
	@$(PY) scripts/services.py status

ingestion: up ## Ingest STATS19_YEARS from STATS19_BASE_URL into the lake (01_ingest)
	$(PY) scripts/run_notebook.py 01_ingest

training-manual: up notebooks ## Start JupyterLab (token printed) on the notebooks, next to the MLflow UI
	$(PY) scripts/lab.py

training-workflow: up ## Train headless: run 02_train, track it in MLflow, promote if it wins
	$(PY) scripts/run_notebook.py 02_train $(ARGS)

serve: setup ## Serve the registered model over HTTP (MODEL_VERSION, else MODEL_ALIAS) on 127.0.0.1:SERVE_PORT
	$(PY) scripts/serve.py $(ARGS)

synthetic: setup ## Write synthetic DfT-format files: make synthetic YEARS=2019-2024 SIZE=20000
	$(PY) scripts/make_synthetic.py --years $(or $(YEARS),2019-2024) --collisions-per-year $(or $(SIZE),20000) \
		--out data/synthetic/road-accidents-safety-data

simulation: up ## Run the simulated production loop until Ctrl-C; SIM_DAYS=N stops after N simulated days, ARGS="--reset"
	$(PY) scripts/simulate.py $(if $(SIM_DAYS),--days $(SIM_DAYS)) $(ARGS)

demo: setup ## One command: services, ingest, train, 60 simulated days, then where to look (DEMO_DATA=synthetic: offline)
	$(PY) scripts/demo.py $(if $(SIM_DAYS),--days $(SIM_DAYS)) $(if $(DEMO_DATA),--data $(DEMO_DATA))

test: setup ## Run the test suite against real, private services
	$(PY) -m pytest

lint: setup ## Check the code with ruff
	$(PY) -m ruff check .

bench: setup ## Run the benchmark scripts (minutes; figures go into BENCHMARKS.md by hand)
	@# As modules from the repository root, so that the serving benchmarks can start servers as the tests do.
	@for script in scripts/bench/*.py; do echo "== $$script"; $(PY) -m scripts.bench.$$(basename $$script .py) || exit 1; done

notebooks: setup ## Generate the .ipynb twins of the notebooks for JupyterLab (not committed)
	$(PY) -m jupytext --sync notebooks/*.py

run-notebook: setup ## Run one notebook headless and archive it: make run-notebook NB=02_train ARGS="-p test_year 2018"
	@test -n "$(NB)" || { echo "usage: make run-notebook NB=02_train [ARGS='-p name value ...']"; exit 2; }
	$(PY) scripts/run_notebook.py $(NB) $(ARGS)

compose: .env ## Run the product in containers: make compose PROFILE=ingestion|training-manual|training-workflow|simulation|all
	@test -n "$(PROFILE)" || { echo "usage: make compose PROFILE=ingestion|training-manual|training-workflow|simulation|all"; exit 2; }
	docker compose --profile $(PROFILE) up --build

compose-down: ## Stop every docker-compose service (the named volumes, and so the data, stay)
	docker compose --profile all down
