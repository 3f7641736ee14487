# ocikit: two commands on a fresh machine, `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
OCIKIT  = $(VENV)/bin/ocikit
DEMO   ?= demo

.PHONY: venv demo test test-fast lint system-deps bench clean

$(VENV)/.installed: pyproject.toml setup.py $(wildcard src/native/*.c src/native/*.h)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Build the example recipe (examples/ocikit.yaml) without a daemon, inspect and check the
# image, and run it with docker when an engine answers (scripts/demo.sh).
demo: venv
	OCIKIT=$(OCIKIT) DEMO=$(DEMO) bash scripts/demo.sh

system-deps:
	bash scripts/install-system-deps.sh

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

# The whole suite on every core (pytest-xdist: each worker has its own engine, registries and
# temporary directories: tests/conftest.py). TEST_JOBS=0 runs it in one process.
TEST_JOBS ?= auto
test: system-deps venv lint
	$(VENV)/bin/pytest -n $(TEST_JOBS) $(PYTEST_ARGS)

# The inner loop: the in-process unit tests only (-m unit), no lint, under a minute.
test-fast: venv
	$(VENV)/bin/pytest -q -n $(TEST_JOBS) -m unit $(PYTEST_ARGS)

# Every row of the performance table, ocikit beside its peer (bench/README.md); as root.
# BENCH_ARGS=--quick checks the harness in a few minutes.
bench: venv
	$(PY) bench/bench_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DEMO) build src/*.egg-info
