PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test conformance bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## make run: the embedded default on http://127.0.0.1:8000 with a demo account
run: $(STAMP)
	$(BIN)/gatehouse serve --demo-user demo

## make test: every test (SQLite and, when reachable, PostgreSQL)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

CONFORMANCE := tests/conformance

$(CONFORMANCE)/node_modules/.package-lock.json: $(CONFORMANCE)/package.json $(CONFORMANCE)/package-lock.json
	cd $(CONFORMANCE) && npm ci --no-audit --no-fund --loglevel=error

## make conformance: the official MCP conformance suite alone (client, authorization server and
## server scenarios); prints the harness's own summary lines
conformance: $(STAMP) $(CONFORMANCE)/node_modules/.package-lock.json
	$(BIN)/python -m pytest $(CONFORMANCE) -s -p no:randomly -q $(PYTEST_ARGS)

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

## make bench: the benchmarks (bench/README.md)
bench: $(VENV)/.bench-installed
	$(BIN)/python bench/authserver.py
	$(BIN)/python bench/guard.py

clean:
	rm -rf $(VENV) .pytest_cache
