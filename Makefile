# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-behaviour test lint typecheck unit install bench examples clean system-deps kafka-jars

# Debian packages the tests use as real outside tools (command:package); installed
# only when missing.
SYSTEM_TOOLS := kcat:kcat promtool:prometheus prometheus:prometheus docker-compose:docker-compose openssl:openssl
KAFKA_LIB := deploy/kafka/lib

# The compiled replay path (native/, Rust) needs cargo (on PATH, or rustup's default
# place); without it replay runs on the Python path alone, with the same output, slower.
CARGO ?= $(shell command -v cargo 2>/dev/null || ls $$HOME/.cargo/bin/cargo 2>/dev/null)
$(STAMP): pyproject.toml native/Cargo.toml native/Cargo.lock native/src/*.rs native/sessionwatch_native.pyi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,stream]'
	@if [ -n "$(CARGO)" ]; then \
		echo "building the compiled replay path (native/) with $(CARGO)"; \
		PATH="$(dir $(CARGO)):$$PATH" $(BIN)/python -m pip install --quiet ./native; \
	else \
		echo "no Rust toolchain (cargo): replay runs on the Python path only"; \
	fi
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default: replay the bundled recorded log, show the alerts.
demo: $(STAMP)
	$(BIN)/sessionwatch replay --config examples/policy.toml \
		--alerts-out out/demo-alerts.jsonl --dead-letter-out out/demo-dead-letters.jsonl \
		examples/sample-events.jsonl 2>&1 | grep -v "development key" || true
	@echo
	@echo "First alerts (all in out/demo-alerts.jsonl):"
	@head -n 5 out/demo-alerts.jsonl

## The behaviour model on a simulated week (users need history before they are scored).
demo-behaviour: $(STAMP) | out
	$(BIN)/sessionwatch simulate --users 80 --hours 168 --seed 21 --behaviour-attacks 2 \
		-o out/week.jsonl --labels-out out/week-labels.jsonl
	$(BIN)/sessionwatch evaluate --config examples/policy.toml out/week.jsonl out/week-labels.jsonl
	@$(BIN)/sessionwatch replay -q --config examples/policy.toml out/week.jsonl 2>/dev/null \
		| grep behaviour_anomaly > out/week-behaviour-alerts.jsonl || true
	@echo
	@echo "Behaviour alerts (all in out/week-behaviour-alerts.jsonl):"
	@head -n 3 out/week-behaviour-alerts.jsonl

demo: | out
out:
	mkdir -p out

lint: $(STAMP)
	$(BIN)/ruff check detector tests bench deploy native/sessionwatch_native.pyi
	$(BIN)/ruff format --check detector tests bench deploy native/sessionwatch_native.pyi

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do \
		command -v $${t%%:*} >/dev/null || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

## The Kafka broker's jars, from Maven Central (see deploy/kafka/pom.xml).
kafka-jars: $(KAFKA_LIB)/.fetched
$(KAFKA_LIB)/.fetched: deploy/kafka/pom.xml
	mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies \
		-DoutputDirectory=lib -DincludeScope=runtime
	touch $@

## The whole suite: lint, types, unit, property, and integration tests on a real broker.
test: lint typecheck system-deps kafka-jars unit

## Regenerates the bundled sample log and its labels (deterministic).
examples: $(STAMP)
	$(BIN)/sessionwatch simulate --users 12 --hours 24 --seed 7 \
		-o examples/sample-events.jsonl --labels-out examples/sample-labels.jsonl

bench: $(STAMP)
	$(BIN)/python bench/replay_throughput.py

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .hypothesis native/target
