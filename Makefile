# goalworker tasks. `make demo` and `make test` set up everything they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

# Services: the local ones that scripts/services.sh starts, unless these are set already.
export KAFKA_PORT ?= 9092
export KAFKA_CONTROLLER_PORT ?= 9093
export PG_PORT ?= 55432
export GOALWORKER_KAFKA_BOOTSTRAP ?= 127.0.0.1:$(KAFKA_PORT)
export GOALWORKER_DATABASE_URL ?= postgresql+psycopg://goalworker:goalworker@127.0.0.1:$(PG_PORT)/goalworker

.PHONY: help install services-up services-down services-status migrate worker demo bench test test-faults test-unit lint format typecheck clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/goalworker: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/goalworker ## Create .venv and install goalworker with its dev tools

services-up: ## Install (first time) and start Kafka and PostgreSQL on loopback; idempotent
	bash scripts/services.sh up

services-down: ## Stop the services started by services-up
	bash scripts/services.sh down

services-status: ## Say which services run
	bash scripts/services.sh status

migrate: install services-up ## Apply the database migrations
	$(BIN)/goalworker migrate

worker: migrate ## Run the worker in the foreground
	$(BIN)/goalworker worker

demo: migrate ## Run the worker on a realistic generated stream and print a summary
	$(BIN)/goalworker demo

bench: install services-up ## Benchmark against a bare-consumer ceiling and a naive design; ARGS=--full for the full size
	$(BIN)/python -m bench $(ARGS)

test: install services-up ## Run the tests (short fault runs included) on the real broker and database
	$(BIN)/pytest -q -p no:cacheprovider -m "not faults"

test-faults: install services-up ## Run the long fault runs (kills, rebalances, outages, hostile input)
	$(BIN)/pytest -q -p no:cacheprovider -m faults

test-unit: install ## Run the unit tests only (no services needed)
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

lint: install ## Lint with ruff
	$(BIN)/ruff check goalworker tests migrations
	$(BIN)/ruff format --check goalworker tests migrations

format: install ## Format with ruff
	$(BIN)/ruff format goalworker tests migrations
	$(BIN)/ruff check --fix goalworker tests migrations

typecheck: install ## Type-check with mypy
	$(BIN)/mypy goalworker bench

clean: ## Remove the virtualenv and caches (not the services' data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
