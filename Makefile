# ocikit: two commands on a fresh machine, `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
OCIKIT  = $(VENV)/bin/ocikit
DEMO   ?= demo

.PHONY: venv demo test lint system-deps bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Convert the shipped sample (a real `docker save`, legacy form) to an OCI layout,
# inspect it, and write it back as a docker-archive.
demo: venv
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(OCIKIT) copy docker-archive:examples/hello.docker.tar oci:$(DEMO)/layout:hello
	$(OCIKIT) inspect oci:$(DEMO)/layout:hello
	$(OCIKIT) copy oci:$(DEMO)/layout:hello docker-archive:$(DEMO)/hello-again.tar:hello:latest
	@echo "demo: OCI layout in $(DEMO)/layout, docker-archive in $(DEMO)/hello-again.tar"

system-deps:
	bash scripts/install-system-deps.sh

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

test: system-deps venv lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: venv
	$(PY) bench/bench_copy.py

clean:
	rm -rf $(VENV) $(DEMO) build src/*.egg-info
