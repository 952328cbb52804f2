# Two commands for a fresh machine with Python >= 3.10: `make demo` and `make test`.
# Both bootstrap uv into .tools/ when it is not on PATH, then install the locked environment.
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
SYNC = $(UV) sync --all-extras --frozen --quiet

.PHONY: demo test lint bench docs env

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet uv

env: $(UV)
	$(SYNC)

demo: env  ## run all seven recipes on the embedded digits data, offline
	$(UV) run robustkit demo

test: env  ## run the test suite (offline, a few minutes on 2 cores)
	$(UV) run pytest -q

lint: env
	$(UV) run ruff check robustkit recipes tests benchmarks

bench: env  ## measure overheads (writes benchmarks/results.json)
	$(UV) run python -m benchmarks

docs: env  ## build the docs site (figures come from a fresh digits run)
	$(SYNC) --group docs
	$(UV) run --group docs python docs/build_examples.py
	$(UV) run --group docs mkdocs build --strict
