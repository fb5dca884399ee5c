# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest browser bench clean

# The dashboard's browser tests drive Debian's chromium through Playwright (which never downloads a
# browser of its own). As root it is installed when missing; otherwise the message says how.
CHROMIUM ?= /usr/bin/chromium

# The stamp depends on pyproject.toml, so a changed dependency list rebuilds the environment.
# pip shows its progress: the first install downloads about 1.4 GB and takes a few minutes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "qhybrid needs Python >= 3.11; set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing qhybrid and its dependencies into $(VENV) (the first time: about 1.4 GB, a few minutes)..."
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	@touch $(STAMP)
	@echo "installed: $(BIN)/qhybrid"

demo: $(STAMP)
	$(BIN)/qhybrid demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the dashboard's browser tests (apt-get)..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "the dashboard's browser tests need chromium at $(CHROMIUM): run 'sudo apt-get install -y chromium' (or set CHROMIUM=/path; with CI=true a missing chromium fails them)"; \
	fi

pytest: $(STAMP) browser
	QHYBRID_TEST_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Benchmarks run outside `make test`; each prints a table (figures go in docs/benchmarks.md).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.quality
	$(BIN)/python -m benchmarks.simulator
	$(BIN)/python -m benchmarks.time_to_solution
	$(BIN)/python -m benchmarks.accept_latency

clean:
	rm -rf $(VENV) .qhybrid .qhybrid-cloud .qhybrid-demo .pytest_cache .mypy_cache .ruff_cache tmp
