# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench chaos install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/labelhaul demo

# The e2e tier mostly waits on real Prefect servers, debounces and subprocesses: it runs in
# a second process beside the unit and integration tiers (measured: 14m47 + 6m41 in parallel
# instead of ~20 min in one process). Its output follows the others'; the exit code is both's.
test: $(STAMP)
	@$(BIN)/pytest tests/e2e -p no:cacheprovider > .e2e-tests.log 2>&1 & e2e=$$!; \
	$(BIN)/pytest tests/unit tests/integration; rest=$$?; \
	wait $$e2e; e2e_rc=$$?; \
	echo "== tests/e2e (ran beside the others) =="; cat .e2e-tests.log; \
	echo "unit+integration exit $$rest, e2e exit $$e2e_rc"; \
	test $$rest -eq 0 -a $$e2e_rc -eq 0

test-fast: $(STAMP)
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy labelhaul config flows tasks deployments

bench: $(STAMP)
	$(BIN)/python -m bench

chaos: $(STAMP)
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) datasets .pytest_cache .mypy_cache .ruff_cache
