# The two commands a newcomer runs: `make demo` and `make test`.
# Both create the virtual environment on first use and are quick afterwards.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.taskpgm-installed
PYTHON ?= python3

.PHONY: setup demo test lint bench browser clean

setup: $(STAMP)

# torch first, pinned exactly: a looser requirement would pull multi-GB CUDA builds.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/taskpgm demo

lint: setup
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy

# The report's browser tests need Chromium (Debian's package); installed once.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

test: lint browser
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
