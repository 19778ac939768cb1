PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

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

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

## make bench: the benchmarks (bench/README.md)
bench: $(VENV)/.bench-installed
	$(BIN)/python bench/authserver.py
	$(BIN)/python bench/guard.py

clean:
	rm -rf $(VENV) .pytest_cache
