# Bootstraps .venv from nothing; every target installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint types unit bench clean chromium reliability

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/troth serve --host 127.0.0.1 --port 8001 --store sqlite:///troth.db

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples tools
	$(BIN)/ruff format --check src tests benchmarks examples tools

types: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict tools

unit: $(STAMP) chromium
	$(BIN)/pytest -q

# The dashboard test drives Debian's chromium (tests/browser); install it when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: lint types unit

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The long versions of tests/reliability (docs/reliability.md); CI runs the short ones.
# PostgreSQL runs use TROTH_TEST_PG (default: the test database on 127.0.0.1:5432).
RELIABILITY_PG ?= $(or $(TROTH_TEST_PG),postgresql://postgres@127.0.0.1:5432/test)
reliability: $(STAMP)
	$(BIN)/python -m tools.linearize run --store sqlite:///$$(mktemp -d)/lin.db --clients 16 --ops 20000
	$(BIN)/python -m tools.linearize run --store '$(RELIABILITY_PG)?schema=troth_rel_lin_'$$$$ --processes 3 --clients 18 --ops 20000
	$(BIN)/python -m tools.crash --cycles 30
	$(BIN)/python -m tools.crash --cycles 10 --store '$(RELIABILITY_PG)?schema=troth_rel_crash_'$$$$
	TROTH_FUZZ_EXAMPLES=200 $(BIN)/pytest -q -p no:cacheprovider tests/reliability/test_schemathesis.py tests/reliability/test_fuzz_wire.py
	$(BIN)/python -m tools.soak --minutes 5 --out benchmarks/results/soak-latest.md
	$(BIN)/pytest -q -p no:cacheprovider tests/reliability
	$(BIN)/python -m tools.dropschemas '$(RELIABILITY_PG)' troth_rel_
