"""The Dockerfile and the systemd unit, checked as far as this machine can
without Docker or systemd running:

  - the Dockerfile's structure (two stages, non-root user, ports, health
    check), its build context (.dockerignore keeps what setup.py reads),
    the wheel its build stage makes (built here the same way, then run from
    the install, not the source tree), its CMD and its HEALTHCHECK run
    against a real server;
  - the unit passes `systemd-analyze verify`, and its command line with its
    default options starts a server that answers."""

import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile

import pytest

from mpcache.cli import parse_args
from tests.metrics.procs import (HOST, ROOT, Mpcache, Proc, free_port, http_get,
                                 memcached_version_ok, need)

DOCKERFILE = os.path.join(ROOT, "Dockerfile")
UNIT = os.path.join(ROOT, "deploy", "mpcache.service")


def instructions(path):
    """[(INSTRUCTION, arguments)] with continuation lines joined."""
    out = []
    with open(path) as f:
        text = f.read()
    text = re.sub(r"\\\n", " ", text)
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(ins):
    result = []
    for word, rest in ins:
        if word == "FROM":
            result.append([])
        if result:
            result[-1].append((word, rest))
    return result


def exec_form(rest):
    args = json.loads(rest)
    assert isinstance(args, list) and all(isinstance(a, str) for a in args), rest
    return args


@pytest.fixture(scope="module")
def docker():
    ins = instructions(DOCKERFILE)
    return ins, stages(ins)


def test_dockerfile_is_multi_stage_and_unprivileged(docker):
    ins, st = docker
    assert ins[0][0] == "ARG" and ins[0][1].startswith("PYTHON_VERSION=")
    assert len(st) == 2
    build, run = st
    assert build[0] == ("FROM", "python:${PYTHON_VERSION}-slim-bookworm AS build")
    assert run[0] == ("FROM", "python:${PYTHON_VERSION}-slim-bookworm")
    # the compiler stays in the build stage
    assert any("gcc" in rest for w, rest in build if w == "RUN")
    assert not any("gcc" in rest for w, rest in run if w == "RUN")
    words = [w for w, _ in run]
    user = [rest for w, rest in run if w == "USER"]
    assert len(user) == 1
    uid = user[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert f"--uid {uid}" in " ".join(rest for w, rest in run if w == "RUN")
    # nothing runs as root after USER, and the server starts after it
    assert words.index("USER") < words.index("ENTRYPOINT")
    assert "RUN" not in words[words.index("USER"):]
    assert " ".join(rest for w, rest in run if w == "EXPOSE").split() == ["11211", "9150"]


def test_dockerfile_command_line_is_mpcaches(docker):
    _, (_, run) = docker
    entry = exec_form(dict(run)["ENTRYPOINT"])
    cmd = exec_form(dict(run)["CMD"])
    assert entry == ["mpcache"]
    s = parse_args(cmd).settings
    assert (s.port, s.listen, s.memory_mb, s.metrics_listen) == \
        (11211, ["0.0.0.0"], 64, "0.0.0.0:9150")
    assert s.validate() == []


def dockerignore_rules():
    rules = []
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return rules


def in_context(path, rules):
    """Docker's rule: the last pattern matching the path (or a parent) decides."""
    keep = True
    parts = path.split("/")
    for negated, pattern in rules:
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, pattern) or (
                    pattern.startswith("**/") and fnmatch.fnmatch(parts[i - 1], pattern[3:])):
                keep = negated
                break
    return keep


def tracked_files():
    r = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return r.stdout.split()


def test_build_context_holds_what_setup_reads_and_nothing_else():
    rules = dockerignore_rules()
    files = tracked_files()
    kept = {f for f in files if in_context(f, rules)}
    needed = {f for f in files if f.startswith(("ext/", "mpcache/"))} | {
        "pyproject.toml", "setup.py", "README.md"}
    assert needed <= kept
    assert not any(f.startswith(("tests/", "bench/", ".ci/", "metrics/")) for f in kept)
    assert not in_context("ext/_engine.c", rules) and not in_context("mpcache/_engine.so", rules)
    # and the Dockerfile copies all of it
    build, _ = stages(instructions(DOCKERFILE))
    copied = " ".join(rest for w, rest in build if w == "COPY")
    for path in ("pyproject.toml", "setup.py", "README.md", "ext", "mpcache"):
        assert path in copied.split(), path


def build_context(dest):
    """What `docker build .` sends: the directory's files (tracked or not)
    less what .dockerignore excludes."""
    rules = dockerignore_rules()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        # every rule starts from "*": a directory left out is left out whole
        dirnames[:] = [d for d in dirnames
                       if in_context(os.path.normpath(os.path.join(rel, d)), rules)]
        for name in filenames:
            f = os.path.normpath(os.path.join(rel, name))
            if in_context(f, rules):
                os.makedirs(os.path.join(dest, os.path.dirname(f)), exist_ok=True)
                shutil.copy2(os.path.join(ROOT, f), os.path.join(dest, f))


@pytest.fixture(scope="module")
def installed_wheel():
    """The build stage's `pip wheel` on the build context alone (offline: this
    environment's setuptools and Cython), installed into a directory."""
    work = tempfile.mkdtemp(prefix="mpcache-wheel-")
    try:
        ctx = os.path.join(work, "ctx")
        build_context(ctx)
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "--no-cache-dir", "--wheel-dir",
                            os.path.join(work, "wheels"), ctx],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        (wheel,) = glob.glob(os.path.join(work, "wheels", "mpcache-*.whl"))
        names = zipfile.ZipFile(wheel).namelist()
        assert any(re.fullmatch(r"mpcache/_engine\..*\.so", n) for n in names), names
        assert "mpcache/metrics.py" in names
        target = os.path.join(work, "site")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                            "--no-index", "--target", target, wheel],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        yield work, target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def container_command(run_stage, port, metrics_port):
    """ENTRYPOINT + CMD as the container would run them, on this machine's
    loopback and this suite's ports."""
    cmd = exec_form(dict(run_stage)["ENTRYPOINT"]) + exec_form(dict(run_stage)["CMD"])
    cmd = [a.replace("0.0.0.0", HOST) for a in cmd]
    cmd = [a.replace("11211", str(port)).replace("9150", str(metrics_port)) for a in cmd]
    assert cmd[0] == "mpcache"
    return [sys.executable, "-m", "mpcache"] + cmd[1:] + (["-u", "root"] if os.geteuid() == 0
                                                         else [])


def healthcheck(run_stage, port):
    rest = dict(run_stage)["HEALTHCHECK"]
    assert rest.startswith("--interval=")
    args = exec_form(rest[rest.index("CMD ") + 4:])
    assert args[0] == "python"
    return [sys.executable] + [a.replace("11211", str(port)) for a in args[1:]]


def test_wheel_runs_the_containers_command_and_passes_its_healthcheck(docker, installed_wheel):
    work, site = installed_wheel
    _, (_, run) = docker
    port, metrics_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=site)
    # run from the installed wheel, outside the source tree
    srv = Proc(container_command(run, port, metrics_port), env=env, cwd=work).spawn()
    srv.name = "mpcache (wheel)"
    try:
        srv.wait_until(lambda: memcached_version_ok((HOST, port)), "answer to version")
        where = subprocess.run([sys.executable, "-c", "import mpcache; print(mpcache.__file__)"],
                               cwd=work, env=env, capture_output=True, text=True)
        assert where.stdout.startswith(site), where
        status, _, body = http_get(f"http://{HOST}:{metrics_port}/metrics")
        assert status == 200 and "memcached_up 1.0" in body.decode().splitlines()
        check = healthcheck(run, port)
        assert subprocess.run(check, timeout=10).returncode == 0
        assert srv.stop() == 0, srv.describe()
        # and the check fails once nothing answers
        assert subprocess.run(check, timeout=10, capture_output=True).returncode != 0
    finally:
        srv.close()


# ---- systemd ----

def unit_settings():
    out = {}
    with open(UNIT) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", "[")):
                key, _, value = line.partition("=")
                out.setdefault(key, []).append(value)
    return out


def test_unit_passes_systemd_analyze(tmp_path):
    need("systemd-analyze")
    with open(UNIT) as f:
        text = f.read()
    # verify insists the program exists; the unit names where pip puts it
    assert "ExecStart=/usr/local/bin/mpcache " in text
    unit = tmp_path / "mpcache.service"
    unit.write_text(text.replace("/usr/local/bin/mpcache", shutil.which("true")))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r


def test_unit_command_line_serves():
    u = unit_settings()
    (env,) = u["Environment"]
    key, _, opts = shlex.split(env)[0].partition("=")
    assert key == "MPCACHE_OPTS"
    (exec_start,) = u["ExecStart"]
    assert exec_start == "/usr/local/bin/mpcache $MPCACHE_OPTS"
    args = shlex.split(opts)
    s = parse_args(args).settings
    assert (s.port, s.listen, s.metrics_listen) == (11211, ["127.0.0.1"], "127.0.0.1:9150")
    assert u["DynamicUser"] == ["yes"] and u["Type"] == ["exec"]
    port, metrics_port = free_port(), free_port()
    args = [a.replace("11211", str(port)).replace("9150", str(metrics_port)) for a in args]
    srv = Mpcache(metrics=False)
    srv.cmd = [sys.executable, "-m", "mpcache", *args] + (["-u", "root"] if os.geteuid() == 0
                                                          else [])
    srv.port, srv.metrics_port = port, metrics_port
    try:
        srv.start()
        assert http_get(srv.metrics_url)[0] == 200
        assert srv.stop() == 0      # SIGTERM, as systemctl stop sends
    finally:
        srv.close()
