# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

# `make test` runs `make lint` (ruff check + ruff format --check) first; RUN_LINT=0 skips it.
# (Not named LINT: GNU make predefines LINT, so `LINT ?= 1` would never take effect.)
RUN_LINT ?= 1

.PHONY: setup demo test lint bench clean-results

setup:
	@bash scripts/setup_env.sh

demo: setup
	@$(VENV)/bin/sonieval demo

test: setup
ifeq ($(RUN_LINT),1)
	@$(MAKE) --no-print-directory lint
endif
	@$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-results:
	rm -rf results/demo
