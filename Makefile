# The two commands a newcomer runs: `make demo` and `make test`.
# Both create the virtual environment on first use and are quick afterwards.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.taskpgm-installed
TSTAMP := $(VENV)/.taskpgm-test-installed
CVENV  ?= .venv-consumers
CSTAMP := $(CVENV)/.taskpgm-consumers-installed
PYTHON ?= python3

.PHONY: setup setup-test demo test test-consumers test-cluster lint bench fuzz browser clean

setup: $(STAMP)
setup-test: $(TSTAMP)

# torch first, pinned exactly: a looser requirement would pull multi-GB CUDA builds.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

# The test and benchmark tools (pytest, cvxpy, mypy, playwright): not needed by the demo.
$(TSTAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(TSTAMP)

# The trainers whose own readers check our exports (tests/consumers): a second venv that
# sees the main one's packages and adds LLaMA-Factory, axolotl and megatron-core --no-deps.
$(CSTAMP): $(TSTAMP) tests/consumers/requirements.txt
	test -x $(CVENV)/bin/python || $(PYTHON) -m venv $(CVENV)
	main=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	own=$$($(CVENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	echo "import site; site.addsitedir('$$main')" > "$$own/taskpgm-main.pth"
	$(CVENV)/bin/python -m pip install --quiet --no-deps -r tests/consumers/requirements.txt
	touch $(CSTAMP)

demo: setup
	$(VENV)/bin/taskpgm demo

lint: setup-test
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy

# The report's browser tests need Chromium (Debian's package); installed once.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

test-consumers: $(CSTAMP)
	PYTHONPATH=tests/consumers/stubs $(CVENV)/bin/python -m pytest -q -p no:cacheprovider tests/consumers

# The Ray backend's tests: a one-node cluster on loopback only, inside a network
# namespace that holds nothing but lo (unshare -n; as a user, unshare -rn).
test-cluster: $(TSTAMP)
	$(PY) tests/cluster/loopback.py $(PY) -m pytest -q -p no:cacheprovider tests/cluster

test: lint browser test-consumers test-cluster
	$(PY) -m pytest -q

# The long fuzzing campaign (a few minutes): 10,000 task files and 3,000 run configs.
fuzz: setup-test
	$(PY) tests/fuzz/campaign.py --tasks 10000 --configs 3000

bench: setup-test
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(CVENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
