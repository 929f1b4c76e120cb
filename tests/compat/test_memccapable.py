"""memccapable -a (libmemcached-tools): every ascii test passes on every backend.

memccapable prints one line per test, e.g. `ascii set    [pass]`, then
`All tests passed` (against memcached 1.6.18 all 27 ascii tests pass)."""

import re
import shutil
import subprocess

import pytest

ASCII_TESTS = [
    "version", "quit", "verbosity", "set", "set noreply", "get", "gets", "mget",
    "flush", "flush noreply", "add", "add noreply", "replace", "replace noreply",
    "cas", "cas noreply", "delete", "delete noreply", "incr", "incr noreply",
    "decr", "decr noreply", "append", "append noreply", "prepend", "prepend noreply",
    "stat",
]
LINE = re.compile(r"^ascii (.+?)\s+\[(\w+)\]\s*$")


def test_memccapable_ascii(server_factory):
    if shutil.which("memccapable") is None:
        pytest.fail("memccapable not installed: apt-get install libmemcached-tools")
    srv = server_factory()
    proc = subprocess.run(["memccapable", "-h", "127.0.0.1", "-p", str(srv.port), "-a", "-t", "5"],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    results = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            results[m.group(1)] = m.group(2)
    failed = {name: r for name, r in results.items() if r != "pass"}
    assert not failed, f"memccapable failures on {srv.name}: {failed}\n{out}"
    assert list(results) == ASCII_TESTS, out
    assert "All tests passed" in out, out
    assert proc.returncode == 0, out
