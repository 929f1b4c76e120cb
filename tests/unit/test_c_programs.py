"""The C unit tests (tests/c/*.c), built and run here.

  test_store.c  the item store (ext/store.c, slabs.c, hash.c, evict.c) with
                the clock and settings, driven like the executor drives it;
  test_out.c    a connection's output with values held by reference
                (ext/conn.c) over a real store.

Each program exits non-zero on any failed check.  A missing compiler or a
compile error fails the test: these parts must always build on their own.
MPCACHE_TEST_SANITIZE=1 builds them with AddressSanitizer and
UndefinedBehaviorSanitizer instead.
"""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXT = os.path.join(ROOT, "ext")
STORE = ("store.c", "slabs.c", "hash.c", "evict.c", "clock.c", "settings.c")
PROGRAMS = {
    "test_store": STORE,
    "test_out": ("conn.c",) + STORE,
}


def _compiler():
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler (cc) found: the C unit tests need one"
    return cc


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_c_unit_tests(tmp_path, program):
    exe = tmp_path / program
    sources = [os.path.join(ROOT, "tests", "c", program + ".c"),
               *(os.path.join(EXT, name) for name in PROGRAMS[program])]
    flags = ["-std=gnu11", "-O2", "-g", "-Wall", "-Werror", "-pthread", "-I", EXT]
    if os.environ.get("MPCACHE_TEST_SANITIZE") == "1":
        flags += ["-O1", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined"]
    build = subprocess.run([_compiler(), *flags, *sources, "-lm", "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, f"compiling {program} failed:\n" + build.stderr

    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    print(run.stdout)
    print(run.stderr)
    assert run.returncode == 0, f"{program} failed:\n" + run.stdout + run.stderr
    assert run.stdout.rstrip().endswith(" 0 failures")
