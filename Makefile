# The two commands of the README: `make demo` (the main job) and `make test` (the kit's own tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/ladder grade --demo --out grades -j 2

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ladder stubs --check

test: lint
	$(BIN)/pytest -n 2

bench: setup
	$(BIN)/python benchmarks/learner_loop.py
