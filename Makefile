# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean-results

setup:
	@bash scripts/setup_env.sh

demo: setup
	@$(VENV)/bin/sonieval demo

test: setup
	@$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-results:
	rm -rf results/demo
