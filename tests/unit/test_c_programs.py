"""The C unit tests (tests/c/*.c), built and run here.

  test_store.c  the item store (ext/store/store.c, slabs.c, hash.c, evict.c) with
                the clock and settings, driven like the executor drives it;
  test_out.c    a connection's output with values held by reference
                (ext/io/conn.c) over a real store;
  test_executor.c  the protocol (executor.c, meta.c, parser.c, conn.c) in
                process on a fake connection and a fake env (proto_env.h),
                without channel.c, engine.c or a backend.

Each program exits non-zero on any failed check, and is built with the
engine's invariant checks (MPCACHE_DEBUG, ext/debug.h), which abort on the
first broken one.  The replies test_executor.c
expects are memcached 1.6.18's: test_executor_cases_are_memcacheds replays
its table of cases on a fresh memcached each and compares.  A missing compiler or a
compile error fails the test: these parts must always build on their own.
MPCACHE_TEST_SANITIZE=1 builds them with AddressSanitizer and
UndefinedBehaviorSanitizer instead.
"""

import os
import re
import selectors
import shutil
import socket
import subprocess
import time

import pytest

from tests.support.raw import RawConn
from tests.support.servers import start_server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXT = os.path.join(ROOT, "ext")
STORE = ("store/store.c", "store/slabs.c", "store/hash.c", "store/evict.c", "clock.c", "settings.c")
PROGRAMS = {
    "test_store": STORE,
    "test_out": ("io/conn.c",) + STORE,
    "test_executor": ("proto/executor.c", "proto/binary.c", "proto/meta.c", "proto/parser.c", "io/conn.c",
                      "proto/auth.c", "log.c", "proto/dump.c", "proto/prefix.c", "watch.c") + STORE,
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
    flags = ["-std=gnu11", "-O2", "-g", "-Wall", "-Werror", "-pthread", "-DMPCACHE_DEBUG=1",
             "-I", EXT]
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


# ---- test_executor.c's cases against memcached ----

_STRING = r'"(?:[^"\\\n]|\\.)*"'
_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


def _c_string(literal):
    """The bytes of one C string literal (the escapes the cases use)."""
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
        elif body[i + 1] == "x":
            m = re.match(r"[0-9a-fA-F]+", body[i + 2:])
            out.append(chr(int(m.group(0), 16)))
            i += 2 + len(m.group(0))
        else:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
    return "".join(out).encode("latin-1")


def _c_concat(text, macros):
    """Adjacent literals and string macros, concatenated."""
    parts = re.findall(_STRING + r"|[A-Z_][A-Z0-9_]*", text)
    return b"".join(_c_string(p) if p.startswith('"') else macros[p] for p in parts)


def executor_macros():
    """test_executor.c's string macros, as bytes."""
    with open(os.path.join(ROOT, "tests", "c", "test_executor.c")) as f:
        src = f.read()
    return src, {m.group(1): _c_string(m.group(2))
                 for m in re.finditer(r"#define ([A-Z_0-9]+) (" + _STRING + ")", src)}


def executor_cases(table="cases"):
    """(name, modes, request, reply) for each row of a table of
    test_executor.c: `cases`, or `auth cases`."""
    src, macros = executor_macros()
    table = src[src.index(f"/* {table}: begin */"):src.index(f"/* {table}: end */")]
    row = re.compile(r"\{(" + _STRING + r"),\s*([A-Z| ]+),((?:\s*(?:" + _STRING +
                     r"|[A-Z_0-9]+))+),((?:\s*(?:" + _STRING + r"|[A-Z_0-9]+))+)\}")
    cases = [(_c_string(m.group(1)).decode(), m.group(2).split("|"), _c_concat(m.group(3), macros),
              _c_concat(m.group(4), macros)) for m in row.finditer(table)]
    assert len(cases) == table.count('\n    {"'), "a row of the cases table was not understood"
    return cases


def _memcached_reply(request):
    own_mn = sum(1 for line in request.split(b"\n") if line.split(b" ")[:1] in ([b"mn"], [b"mn\r"]))
    with start_server("memcached", threads=1) as srv:
        with RawConn(srv.addr) as c:
            c.send(request + b"mn\r\n")
            return c.read_until_marker(count=own_mn + 1, timeout=10)


@pytest.mark.skipif(shutil.which("memcached") is None, reason="memcached is not installed")
def test_executor_cases_are_memcacheds():
    cases = [c for c in executor_cases() if "NOMC" not in [m.strip() for m in c[1]]]
    assert len(cases) > 40
    wrong = []
    for name, _, request, want in cases:
        got = _memcached_reply(request)
        # a TTL read back may cross memcached's clock tick once: try again
        if got != want:
            got = _memcached_reply(request)
        if got != want:
            wrong.append(f"{name}:\n  memcached: {got!r}\n  the case:  {want!r}")
    assert not wrong, "cases whose reply is not memcached's:\n" + "\n".join(wrong)


def _replies_until_quiet(addr, requests, quiet=0.5, timeout=10.0):
    """Each request on a connection of its own, all at once; what each
    connection read until the server stayed quiet for `quiet` seconds (or
    closed it)."""
    socks = []
    for request in requests:
        s = socket.create_connection(addr, timeout=timeout)
        s.sendall(request)
        s.setblocking(False)
        socks.append(s)
    got = [b""] * len(socks)
    open_ = set(range(len(socks)))
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for i in open_:
            sel.register(socks[i], selectors.EVENT_READ, i)
        while open_ and time.monotonic() < deadline:
            events = sel.select(quiet)
            if not events:
                break
            for key, _ in events:
                i = key.data
                try:
                    chunk = socks[i].recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    chunk = b""
                if chunk:
                    got[i] += chunk
                else:
                    sel.unregister(socks[i])
                    open_.discard(i)
    for s in socks:
        s.close()
    return got


@pytest.mark.skipif(shutil.which("memcached") is None, reason="memcached is not installed")
def test_executor_auth_cases_are_memcacheds(tmp_path):
    """test_executor.c's auth cases on memcached -Y with its AUTH_FILE."""
    cases = executor_cases("auth cases")
    assert len(cases) > 20
    auth_file = tmp_path / "auth"
    auth_file.write_bytes(executor_macros()[1]["AUTH_FILE"])
    with start_server("memcached", threads=1, extra=("-Y", str(auth_file))) as srv:
        got = _replies_until_quiet(srv.addr, [request for _, _, request, _ in cases])
    wrong = [f"{name}:\n  memcached: {g!r}\n  the case:  {want!r}"
             for (name, _, _, want), g in zip(cases, got) if g != want]
    assert not wrong, "auth cases whose reply is not memcached's:\n" + "\n".join(wrong)
