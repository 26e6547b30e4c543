# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench chaos install clean

# The C core is built by the install (pyproject's ext-modules): a change to it installs again.
$(STAMP): pyproject.toml labelhaul/_maskcore.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/labelhaul demo

test: $(STAMP)
	@# Whole files per worker, longest first (the order tests/conftest.py gives them): without
	@# --no-loadscope-reorder xdist sends the files with most tests first and the one-test slow
	@# files (chaos, signals, the wheel) last, each then the only thing left running.
	$(BIN)/pytest -n 4 --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# mypy cannot follow the editable install's import hook that maps labelhaul.flows to
	@# flows/ (pyproject's package-dir), so it checks a link tree laid out as installed.
	rm -rf build/typecheck && mkdir -p build/typecheck/labelhaul
	for f in labelhaul/*; do ln -s "$(CURDIR)/$$f" build/typecheck/labelhaul/; done
	for d in flows tasks config deployments; do ln -s "$(CURDIR)/$$d" build/typecheck/labelhaul/$$d; done
	cd build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p labelhaul

bench: $(STAMP)
	$(BIN)/python -m bench

chaos: $(STAMP)
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) datasets .pytest_cache .mypy_cache .ruff_cache
