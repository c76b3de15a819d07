# Janus developer entry points. `make test` is what CI runs (.ci/run).
VENV := .venv
BIN := $(VENV)/bin
# bench/ may not exist yet; ruff errors on missing paths.
LINT_PATHS := src tests examples $(wildcard bench)

.PHONY: venv lint test demo bench clean

venv:
	bash scripts/bootstrap.sh

lint:
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy src

test: venv
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest

demo: venv
	$(BIN)/janus demo

bench: venv
	$(BIN)/python bench/admission.py

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis .janus-tmp build dist
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
