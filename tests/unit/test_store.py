"""The item store's C unit tests (tests/c/test_store.c), built and run here.

The C program links the store (ext/store.c, slabs.c, hash.c, evict.c) with
the clock and settings, drives it like the executor does, and exits non-zero
on any failed check.  A missing compiler or a compile error fails the test:
the store must always build on its own.  MPCACHE_TEST_SANITIZE=1 builds it
with AddressSanitizer and UndefinedBehaviorSanitizer instead.
"""

import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXT = os.path.join(ROOT, "ext")
SOURCES = [
    os.path.join(ROOT, "tests", "c", "test_store.c"),
    *(os.path.join(EXT, name) for name in
      ("store.c", "slabs.c", "hash.c", "evict.c", "clock.c", "settings.c")),
]


def _compiler():
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler (cc) found: the store's unit tests need one"
    return cc


def test_store_c_unit_tests(tmp_path):
    exe = tmp_path / "test_store"
    flags = ["-std=gnu11", "-O2", "-g", "-Wall", "-Werror", "-pthread", "-I", EXT]
    if os.environ.get("MPCACHE_TEST_SANITIZE") == "1":
        flags += ["-O1", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined"]
    build = subprocess.run([_compiler(), *flags, *SOURCES, "-lm", "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, "compiling the store tests failed:\n" + build.stderr

    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    print(run.stdout)
    print(run.stderr)
    assert run.returncode == 0, "store unit tests failed:\n" + run.stdout + run.stderr
    assert run.stdout.rstrip().endswith(" 0 failures")
