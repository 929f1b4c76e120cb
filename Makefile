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

.PHONY: all run test test-tls build venv clean packages test-packages
.PHONY: fuzz fuzz-short fuzz-packages sanitize sanitize-python sanitize-tsan
.PHONY: debug test-debug

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

# After the whole suite (PYTEST_ARGS left at "tests"; SANITIZE=0 or 1 decides
# otherwise) come the sanitizer runs and a short fuzz, so CI covers them.
SANITIZE ?= $(if $(filter tests,$(PYTEST_ARGS)),1,0)

test: test-packages build $(VENV)/.test-deps
	$(VPY) -m pytest -q $(PYTEST_ARGS)
ifeq ($(SANITIZE),1)
	$(MAKE) --no-print-directory test-tls
	$(MAKE) --no-print-directory sanitize
	$(MAKE) --no-print-directory fuzz-short
endif

# The protocol suites once more with every mpcache server speaking TLS (-Z)
# and the reference memcached in plaintext (tests/support/certs.py).  Over
# TLS refresh_certs answers OK where the plaintext expectation is
# memcached's "Error TLS not enabled": that case is left out.
TLS_TESTS ?= tests/differential tests/integration/test_protocol_corners.py tests/integration/test_meta.py \
             tests/integration/test_dumps.py tests/integration/test_watch.py

test-tls: test-packages build $(VENV)/.test-deps
	MPCACHE_TEST_TLS=1 MPCACHE_TEST_BACKENDS=mpcache-epoll,mpcache-uring \
	  $(VPY) -m pytest -q $(TLS_TESTS) -k "not refresh_certs"

# ---- fuzzing and sanitizers (fuzz/README.md) ----
#
#   make fuzz        libFuzzer over the request path for FUZZ_TIME seconds
#                    (default 60), from seeds drawn from the differential
#                    generator and the tests; build/fuzz/corpus grows across runs
#   make fuzz-short  make test's run: FUZZ_SHORT_TIME seconds (30) from the
#                    committed seeds and regressions only, on a fresh corpus
#   make sanitize    the engine built with ASan + UBSan (gcc) under
#                    tests/engine and tests/integration, and the protocol
#                    suites tests/differential and tests/compat as well
#                    (SANITIZE_TESTS), then tests/c/test_store.c, all of it,
#                    under TSan (its threaded parts, ref_threads among them,
#                    are what TSan is for)
#
# About 7 minutes for make sanitize (the ASan build a minute when ext/
# changed, the four suites 5 to 6 minutes, TSan 40 s) and 35 s for
# fuzz-short on the project's 2-core machine, within the 15 minutes make
# test's sanitizer stage may take: nothing is trimmed.  tests/stress is
# left out: it bounds memory and time, which ASan changes.
# Any sanitizer report of ours fails the run: the code is built with
# -fno-sanitize-recover, and a report written by any Python process (the
# servers the tests spawn included: mpcache runs only in Python) is a
# failure even when the tests passed.  Reports of other programs are listed
# and not counted: they are not ours to fix.
# Every build here (ASan, TSan, the fuzzer) also compiles the engine's
# invariant checks in (MPCACHE_DEBUG, ext/debug.h): a broken invariant
# aborts, which ASan reports (handle_abort) like any other error of ours.

FUZZ_TIME ?= 60
FUZZ_SHORT_TIME ?= 30
FUZZ_DIR := build/fuzz
SAN_DIR := build/sanitize
SANITIZE_TESTS ?= tests/engine tests/integration tests/differential tests/compat
# The programs the tests compare with or drive run as installed, outside
# the sanitizers' runtimes (memcached under ASan faults where it otherwise
# fails with a message the tests compare).
SANITIZE_PLAIN := memcached memccapable openssl
# Tests that bound a server's RSS: ASan's shadow memory and quarantine are
# counted in it.
SANITIZE_DESELECT ?= \
	--deselect tests/integration/test_tls.py::test_memory_stays_bounded_over_tls_churn \
	--deselect tests/integration/test_tls.py::test_unread_multigets_over_tls_memory_is_bounded \
	--deselect tests/integration/test_tls.py::test_unread_pipelined_gets_over_tls_push_back \
	--deselect "tests/integration/test_dumps.py::test_metadump_of_100000_keys_to_a_client_that_does_not_read"
# The engine's C sources, without what Cython writes beside its .pyx files.
ENGINE_C = $(filter-out ext/_engine.c ext/parser_py.c,$(wildcard ext/*.c ext/*/*.c))
SAN_FLAGS := -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_ARGS = -max_len=16384 -timeout=25 -dict=fuzz/request.dict \
	-artifact_prefix=$(FUZZ_DIR)/crashes/ -print_final_stats=1

fuzz-packages:
	@PYTHON=$(PYTHON) tools/ensure-packages fuzz

# Only the engine is instrumented for coverage: the harness's own copies and
# checksums, instrumented, made every run three times slower and guide nothing.
$(FUZZ_DIR)/fuzz_request: fuzz/fuzz_request.c $(ENGINE_C) $(wildcard ext/*.h ext/*/*.h) | fuzz-packages
	@mkdir -p $(@D)
	clang -std=gnu11 -O1 -pthread -Iext $(SAN_FLAGS) -DMPCACHE_DEBUG=1 -c fuzz/fuzz_request.c \
	  -o $(FUZZ_DIR)/harness.o
	clang -std=gnu11 -O1 -pthread -Iext $(SAN_FLAGS) -DMPCACHE_DEBUG=1 -fsanitize=fuzzer \
	  -Wl,--wrap=malloc,--wrap=calloc $(FUZZ_DIR)/harness.o $(ENGINE_C) -lm -o $@

# run-fuzz <seconds> <corpus dirs>: libFuzzer's log goes to a file; on a
# failure its end and the input that failed are shown.
define run-fuzz
	@mkdir -p $(FUZZ_DIR)/crashes
	@echo "fuzzing for $(1) s: $(2)"
	@$(FUZZ_DIR)/fuzz_request -max_total_time=$(1) $(FUZZ_ARGS) $(2) \
	  >$(FUZZ_DIR)/fuzz.log 2>&1 || { tail -n 60 $(FUZZ_DIR)/fuzz.log; \
	  echo "make fuzz: failed (log: $(FUZZ_DIR)/fuzz.log); the input is kept in $(FUZZ_DIR)/crashes/:" \
	       "once fixed, add it to fuzz/regressions/ under a name saying what it pins"; exit 1; }
	@grep -aE '^(Done|stat::(number_of_executed_units|new_units_added|peak_rss_mb))' $(FUZZ_DIR)/fuzz.log
endef

fuzz: $(FUZZ_DIR)/fuzz_request
	@rm -rf $(FUZZ_DIR)/seeds && $(PYTHON) fuzz/seeds.py $(FUZZ_DIR)/seeds
	@mkdir -p $(FUZZ_DIR)/corpus
	$(call run-fuzz,$(FUZZ_TIME),$(FUZZ_DIR)/corpus $(FUZZ_DIR)/seeds fuzz/seeds fuzz/regressions)

fuzz-short: $(FUZZ_DIR)/fuzz_request
	@rm -rf $(FUZZ_DIR)/short-corpus && mkdir -p $(FUZZ_DIR)/short-corpus
	$(call run-fuzz,$(FUZZ_SHORT_TIME),$(FUZZ_DIR)/short-corpus fuzz/seeds fuzz/regressions)

sanitize: sanitize-python sanitize-tsan

# ext-tree <dir>: <dir>/tree, a copy of mpcache/ and tests/ holding the
# extension built into <dir>/lib, never over mpcache/*.so: the suites'
# servers run `python -m mpcache` from their ROOT, the tree they are in, so
# they load it too.
define ext-tree
	@rm -rf $(1)/tree && mkdir -p $(1)/tree
	@tar -cf - --exclude='*.so' --exclude=__pycache__ pyproject.toml mpcache tests | \
	  tar -xf - -C $(1)/tree
	cp $(1)/lib/mpcache/*.so $(1)/tree/mpcache/
endef

# At -O2 (MPCACHE_OPT), as the release build: the suites take minutes under
# ASan already.  gcc's runtimes are preloaded into the uninstrumented Python.
sanitize-python: test-packages build $(VENV)/.test-deps fuzz-packages
	MPCACHE_DEBUG=1 MPCACHE_OPT=-O2 CFLAGS="$(SAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" \
	  $(VPY) setup.py -q build_ext -j2 --build-lib $(SAN_DIR)/lib --build-temp $(SAN_DIR)/tmp
	$(call ext-tree,$(SAN_DIR))
	@rm -rf $(SAN_DIR)/logs && mkdir -p $(SAN_DIR)/logs
	@rm -rf $(SAN_DIR)/bin && mkdir -p $(SAN_DIR)/bin && for p in $(SANITIZE_PLAIN); do \
	  real=$$(command -v $$p) || continue; \
	  printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$$@"\n' "$$real" >$(SAN_DIR)/bin/$$p; \
	  chmod +x $(SAN_DIR)/bin/$$p; done
	cd $(SAN_DIR)/tree && PATH=$(CURDIR)/$(SAN_DIR)/bin:$$PATH \
	  LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:handle_abort=1:log_exe_name=1:log_path=$(CURDIR)/$(SAN_DIR)/logs/asan \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_exe_name=1:log_path=$(CURDIR)/$(SAN_DIR)/logs/ubsan \
	  $(abspath $(VPY)) -m pytest -q -p no:cacheprovider $(SANITIZE_TESTS) $(SANITIZE_DESELECT) || failed=1; \
	  cd $(CURDIR)/$(SAN_DIR)/logs; \
	  others=$$(ls | grep -v '^[a-z]*\.python' || true); ours=$$(ls | grep '^[a-z]*\.python' || true); \
	  [ -z "$$others" ] || echo "make sanitize: not counted, reports of programs that are not mpcache:" $$others; \
	  if [ -n "$$ours" ]; then head -n 80 $$ours; echo "make sanitize: sanitizer reports above"; exit 1; fi; \
	  [ -z "$$failed" ]

sanitize-tsan: fuzz-packages
	@mkdir -p $(SAN_DIR)
	gcc -std=gnu11 -O1 -g -pthread -fsanitize=thread -DMPCACHE_DEBUG=1 -Iext tests/c/test_store.c \
	  ext/store/store.c ext/store/slabs.c ext/store/hash.c ext/store/evict.c ext/clock.c ext/settings.c -lm \
	  -o $(SAN_DIR)/test_store_tsan
	TSAN_OPTIONS=halt_on_error=1 $(SAN_DIR)/test_store_tsan >$(SAN_DIR)/test_store_tsan.log 2>&1 || \
	  { tail -n 80 $(SAN_DIR)/test_store_tsan.log; exit 1; }
	@tail -n 1 $(SAN_DIR)/test_store_tsan.log

# ---- the debug build (ext/debug.h) ----
#
#   make debug       the extension with MPCACHE_DEBUG=1 (the engine's
#                    invariant checks, -g -O0) in build/debug/tree, a copy of
#                    mpcache/ and tests/; mpcache/*.so stays the release
#                    build, which the benchmarks and everyone's other runs
#                    load.  To serve with it:
#                      cd build/debug/tree && ../../../.venv/bin/python -m mpcache
#   make test-debug  DEBUG_TESTS (default: make sanitize's suites) on it
#
# CI runs the same checks through make sanitize (ASan, TSan), make
# fuzz-short and the C unit tests, which all build with them.

DEBUG_DIR := build/debug
DEBUG_TESTS ?= $(SANITIZE_TESTS)

debug: $(VPY)
	MPCACHE_DEBUG=1 $(VPY) setup.py -q build_ext -j2 --build-lib $(DEBUG_DIR)/lib \
	  --build-temp $(DEBUG_DIR)/tmp
	$(call ext-tree,$(DEBUG_DIR))

test-debug: test-packages debug $(VENV)/.test-deps
	cd $(DEBUG_DIR)/tree && $(abspath $(VPY)) -m pytest -q -p no:cacheprovider $(DEBUG_TESTS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
	rm -f mpcache/*.so ext/_engine.c ext/parser_py.c
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
