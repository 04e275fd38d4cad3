# The README's two commands are `make demo` and `make test`; both set up what they need.
.PHONY: install demo test lint typecheck bench clean

VENV := .venv
PY := $(VENV)/bin/python

install:
	@tools/bootstrap.sh

demo: install
	@$(PY) -m deskwatch.demo $(DEMO_ARGS)

test: install lint typecheck
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	@$(VENV)/bin/ruff check daemon tests hw-tests
	@$(VENV)/bin/ruff format --check daemon tests hw-tests >/dev/null || { echo "ruff format: run '$(VENV)/bin/ruff format daemon tests hw-tests'"; exit 1; }

typecheck: install
	@$(VENV)/bin/mypy daemon/deskwatch

bench: install
	@$(PY) -m deskwatch bench --json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info daemon/*.egg-info
