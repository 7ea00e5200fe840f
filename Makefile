# trackerflow task runner — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SAMPLE := deploy/samples/conversations.jsonl

.DEFAULT_GOAL := help
.PHONY: help setup kafka-jars run replay stop test lint typecheck unit bench-fold bench-pipeline bench-reminders clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

NATIVE := events/native-decoder
$(BIN)/trackerflow: pyproject.toml $(NATIVE)/Cargo.toml $(NATIVE)/Cargo.lock $(wildcard $(NATIVE)/src/*.rs)
	@command -v cargo >/dev/null || echo "note: no Rust toolchain (cargo) on PATH: installing without the compiled decoder"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

setup: $(BIN)/trackerflow ## Create .venv, install trackerflow (compiling its Rust decoder) and dev tools
	@# bytecode for the project's modules, as pip writes it for an installed package (with
	@# PYTHONDONTWRITEBYTECODE set, each worker start would compile them again: about 60 ms)
	@$(BIN)/python -m compileall -q events processors streams bench

kafka-jars: setup ## Fetch the Apache Kafka broker jars with Maven into .kafka/ (once)
	$(BIN)/python -c "import os; from streams.broker import DEFAULT_VERSION, ensure_jars; print(ensure_jars(os.environ.get('TRACKERFLOW_KAFKA_VERSION', DEFAULT_VERSION)))"

run: kafka-jars ## The main job: local Kafka + worker, publish the sample, show trackers and signals
	bash deploy/quickstart.sh

stop: ## Stop the worker and the local Kafka that `make run` started (by pid)
	-@[ -f out/worker.pid ] && kill $$(cat out/worker.pid) 2>/dev/null && echo "stopped the worker"; rm -f out/worker.pid
	-$(BIN)/trackerflow broker stop

replay: setup ## Offline: replay the sample conversations into out/trackers.jsonl (no Kafka)
	@mkdir -p out
	$(BIN)/trackerflow replay $(SAMPLE) --events applied --output out/trackers.jsonl \
		--stories out/stories.yml --rejects out/rejects.jsonl
	@echo "trackers: out/trackers.jsonl  stories: out/stories.yml  rejects: out/rejects.jsonl"

lint: setup ## ruff (style, imports, layering bans); rustfmt and clippy on the Rust decoder
	$(BIN)/ruff check .
	$(BIN)/ruff format --check events processors
	@if command -v cargo >/dev/null; then \
		cd $(NATIVE) && cargo fmt --check && cargo clippy --quiet --release -- -D warnings; \
	else echo "note: no cargo on PATH: the Rust decoder is not linted"; fi

typecheck: setup ## mypy --strict
	$(BIN)/mypy

unit: setup kafka-jars ## pytest with 100% branch coverage of events/ and processors/
	$(BIN)/pytest --cov --cov-report=term-missing:skip-covered

test: lint typecheck unit ## Everything CI runs: lint, types, the whole test suite

bench-fold: setup ## Decode+fold events/s vs a json.loads baseline (1M+ generated events)
	$(BIN)/python -m bench.fold

bench-pipeline: kafka-jars ## One worker on a local Kafka: end-to-end events/s vs raw consume, latency
	$(BIN)/python -m bench.pipeline

bench-reminders: kafka-jars ## One worker on a local Kafka: reminder firing delay, bytes per pending reminder
	$(BIN)/python -m bench.reminders

clean: ## Remove build, test and benchmark leftovers
	rm -rf out bench/out .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov *.egg-info build \
		$(NATIVE)/target
