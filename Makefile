# streamwarden: every target installs what it needs (venv, package, Kafka jars, redis-server).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install demo test test-unit test-integration bench dev-up dev-down dev-status lint typecheck clean

help:
	@echo "make demo   - start local Kafka + Redis, run a worker on simulator data, show live alerts and a summary"
	@echo "make test   - install everything, start Kafka + Redis, run the test suite, stop the services"
	@echo "make bench  - run the benchmarks and write BENCHMARKS.md figures"
	@echo "make dev-up / dev-down / dev-status - local Kafka + Redis"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m stream_models.transaction_features  # compiles the feature kernels once (Numba cache)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamwarden demo

# conftest.py starts Kafka and Redis if they are not running and stops what it started
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration tests/reliability $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

dev-up: $(STAMP)
	$(BIN)/streamwarden dev up

dev-down: $(STAMP)
	$(BIN)/streamwarden dev down

dev-status: $(STAMP)
	$(BIN)/streamwarden dev status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy ingest stream_models sinks pipeline

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
