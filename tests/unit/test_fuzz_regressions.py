"""The fuzzer's inputs as ordinary tests: fuzz/fuzz_request.c built without
libFuzzer (fuzz/replay.c gives it a main) by the C compiler with
AddressSanitizer and UndefinedBehaviorSanitizer, so no clang is needed.

  fuzz/regressions/  inputs that once failed, each replayed alone, in a fresh
                     process, as libFuzzer reproduces a crash;
  fuzz/seeds/        the committed seed corpus, in one process, as a fuzzing
                     run goes through it (the store is kept across inputs).

The harness aborts on a failed check of its own, the engine on a broken
invariant (built with MPCACHE_DEBUG, ext/debug.h), a sanitizer on a memory
or undefined-behaviour error; any of them fails the test with the output.
"""

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ = os.path.join(ROOT, "fuzz")
# What Cython writes beside its .pyx files is not part of the engine.
GENERATED = {"_engine.c", "parser_py.c"}
ENV = dict(os.environ,
           ASAN_OPTIONS="halt_on_error=1:detect_leaks=1",
           UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")


def _regressions():
    return sorted(p for p in glob.glob(os.path.join(FUZZ, "regressions", "*")) if os.path.isfile(p))


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler (cc) found: the fuzz regressions need one"
    exe = tmp_path_factory.mktemp("fuzz") / "replay"
    engine = sorted(p for p in glob.glob(os.path.join(ROOT, "ext", "**", "*.c"), recursive=True)
                    if os.path.basename(p) not in GENERATED)
    flags = ["-std=gnu11", "-O1", "-g", "-pthread", "-Wall", "-Wno-unused-function",
             "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=all", "-DMPCACHE_DEBUG=1", "-I", os.path.join(ROOT, "ext")]
    sources = [os.path.join(FUZZ, "fuzz_request.c"), os.path.join(FUZZ, "replay.c"), *engine]
    # the harness fails allocations of its choosing (fuzz_request.c)
    wrap = ["-Wl,--wrap=malloc,--wrap=calloc"]
    build = subprocess.run([cc, *flags, *sources, *wrap, "-lm", "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, "compiling the fuzz harness failed:\n" + build.stderr
    return str(exe)


def _run(replay, *paths):
    res = subprocess.run([replay, *paths], capture_output=True, text=True, timeout=300, env=ENV)
    assert res.returncode == 0, (f"replaying {' '.join(os.path.relpath(p, ROOT) for p in paths)} "
                                 f"failed (status {res.returncode}):\n" + res.stderr[-8000:])


@pytest.mark.parametrize("path", _regressions(), ids=os.path.basename)
def test_regression(replay, path):
    _run(replay, path)


def test_seed_corpus(replay):
    seeds = os.path.join(FUZZ, "seeds")
    assert os.listdir(seeds), "fuzz/seeds is empty"
    _run(replay, seeds)
