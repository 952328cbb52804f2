# Two commands for a fresh machine with Python >= 3.10: `make demo` and `make test`.
# Both bootstrap uv into .tools/ when it is not on PATH, then install the locked environment
# (with bytecode compiled up front: machines that set PYTHONDONTWRITEBYTECODE would otherwise
# recompile torch on every start).
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
SYNC = $(UV) sync --all-extras --all-groups --frozen --quiet --compile-bytecode

.PHONY: demo test lint bench fidelity fidelity-root docs serve-docs check-docs env

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet uv

env: $(UV)
	$(SYNC)
	@# torchattacks 3.5.1's wheel ships its own commented-out copy of robustbench: installed after robustbench, it
	@# overwrites robustbench's files (no robustbench.eval.benchmark), so robustbench goes back on top of it
	@if grep -qs '^# from .eval import benchmark' .venv/lib/python*/site-packages/robustbench/__init__.py; then \
		$(SYNC) --reinstall-package robustbench; fi

demo: env  ## run all nine recipes on the embedded digits data, offline
	$(UV) run robustkit demo

test: env  ## run the test suite (offline, a few minutes on 2 cores)
	$(UV) run pytest -q

lint: env
	$(UV) run ruff check robustkit recipes tests benchmarks docs

bench: env  ## measure overheads (writes benchmarks/results.json)
	$(UV) run python -m benchmarks

ROOT ?=
SEEDS ?= 1
OUT ?= runs/fidelity
fidelity-root:
	@test -n "$(ROOT)" || { echo "usage: make fidelity ROOT=/path/holding/cifar-10-batches-py [SEEDS=3] [OUT=runs/fidelity]"; exit 2; }

fidelity: fidelity-root env  ## every recipe on real CIFAR beside the write-ups and a plain PyTorch loop: make fidelity ROOT=/data/cifar [SEEDS=3]
	$(UV) run python -m benchmarks.fidelity --root $(ROOT) --seeds $(SEEDS) --out $(OUT) --docs docs/fidelity.md

docs: env  ## run the recipes on digits for the worked examples, then build the site strictly
	$(UV) run python docs/build_examples.py
	$(UV) run mkdocs build --strict

serve-docs: docs  ## serve the built site on http://127.0.0.1:8000
	$(UV) run mkdocs serve --no-livereload

check-docs: docs  ## open the built site in headless Chromium and check it renders (needs chromium, chromium-driver)
	$(UV) run python docs/check_site.py
