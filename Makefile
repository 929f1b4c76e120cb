# mpcache, in two commands on a fresh Debian machine with python3 and make:
#
#   make run     build, then serve on 127.0.0.1:11211 (ARGS="-t 4 -vv" adds flags)
#   make test    install what the tests run, build, then run the whole suite
#
# Each installs the Debian packages it needs first (tools/ensure-packages:
# as root with apt-get; otherwise it names them and stops).
#
# Everything goes into a virtualenv in .venv; `make clean` removes it and
# every build output.

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PORT ?= 11211
ARGS ?=
# pytest arguments, e.g. PYTEST_ARGS="-x tests/test_cli.py"
PYTEST_ARGS ?= tests
# Kept in step with [project.optional-dependencies] test in pyproject.toml.
TEST_DEPS := "pytest>=7" "pymemcache>=4" "hypothesis>=6" "prometheus-client>=0.17"
BUILD_DEPS := "setuptools>=77" "Cython>=3.0" wheel
# memcached refuses to run as root without -u; so does mpcache.
RUN_AS := $(shell [ "$$(id -u)" = 0 ] && echo "-u root")

.PHONY: all run test build venv clean packages test-packages

all: build

# Debian's python3 without python3-venv has no ensurepip: make the venv
# without pip, then let the system's pip install pip into it.
packages:
	@PYTHON=$(PYTHON) tools/ensure-packages build

test-packages:
	@PYTHON=$(PYTHON) tools/ensure-packages test

$(VPY): | packages
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed (no ensurepip?); creating it --without-pip"; \
	  rm -rf $(VENV) && $(PYTHON) -m venv --without-pip $(VENV) && \
	  $(PYTHON) -m pip --python $(VPY) install -q pip; }
	$(VPY) -m pip install -q --upgrade $(BUILD_DEPS)

venv: $(VPY)

# The editable install (console script `mpcache`, extension built in place)
# once; afterwards build_ext only recompiles what changed.
$(VENV)/.installed: $(VPY) pyproject.toml setup.py
	$(VPY) -m pip install -q --no-build-isolation -e .
	@touch $@

build: $(VENV)/.installed
	$(VPY) setup.py -q build_ext --inplace -j2

$(VENV)/.test-deps: $(VPY) pyproject.toml
	$(VPY) -m pip install -q $(TEST_DEPS)
	@touch $@

run: build
	$(VENV)/bin/mpcache -p $(PORT) -l 127.0.0.1 $(RUN_AS) $(ARGS)

test: test-packages build $(VENV)/.test-deps
	$(VPY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
	rm -f mpcache/*.so ext/_engine.c ext/parser_py.c
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
