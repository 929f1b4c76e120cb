"""Builds the engine: every C file in ext/ plus the Cython bridge.

Only a C compiler, the Python headers and libc are needed.  OpenSSL's
headers (Debian's libssl-dev) add TLS (-Z): when a one-line program using
them compiles and links, the engine is built with MP_HAVE_TLS and linked
with -lssl -lcrypto; without them it builds all the same and -Z is refused.
MPCACHE_TLS=0 builds without TLS even where OpenSSL is installed.
MPCACHE_DEBUG=1 compiles the engine's invariant checks in (MP_ASSERT and
the maintenance walks of ext/debug.h), with -g -O0 for a debugger;
MPCACHE_OPT=-O2 keeps the optimizer, as make sanitize does.  Release builds
leave the checks out, as uvloop does."""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("MPCACHE_DEBUG") == "1"
OPT = os.environ.get("MPCACHE_OPT") or ("-O0" if DEBUG else "-O2")

cflags = ["-std=gnu11", OPT, "-pthread", "-fno-strict-aliasing",
          "-Wall", "-Wno-unused-function"]
macros = [("MPCACHE_DEBUG", "1")] if DEBUG else [("NDEBUG", "1")]
if DEBUG:
    cflags += ["-g"]


def have_openssl():
    """Does a program using <openssl/ssl.h> compile and link here, with the
    compiler the extension is built with?"""
    if os.environ.get("MPCACHE_TLS") == "0":
        return False
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if shutil.which(cc[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <openssl/ssl.h>\n"
                    "int main(void) { return SSL_CTX_new(TLS_server_method()) == 0; }\n")
        cmd = cc + [src, "-o", os.path.join(tmp, "probe"), "-lssl", "-lcrypto"]
        ok = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    if not ok:
        print("mpcache: OpenSSL's headers not found (Debian: libssl-dev): "
              "building without TLS (-Z is refused)", file=sys.stderr)
    return ok


TLS = have_openssl()
tls_macros = [("MP_HAVE_TLS", "1")] if TLS else []
tls_libs = ["ssl", "crypto"] if TLS else []

# Cython writes _engine.c and parser_py.c beside their .pyx: not sources.
GENERATED = {"ext/_engine.c", "ext/parser_py.c"}
engine_sources = sorted(f for f in glob.glob("ext/**/*.c", recursive=True) if f not in GENERATED)

# The parser is a pure function, built alone as well so tests can drive it
# without a server.
extensions = [
    Extension(
        "mpcache._engine",
        sources=["ext/_engine.pyx"] + engine_sources,
        depends=sorted(glob.glob("ext/**/*.h", recursive=True)),
        include_dirs=["ext"],
        define_macros=macros + tls_macros,
        extra_compile_args=cflags,
        extra_link_args=["-pthread"],
        libraries=tls_libs,
    ),
    Extension(
        "mpcache._parser",
        sources=["ext/parser_py.pyx", "ext/proto/parser.c"],
        depends=sorted(glob.glob("ext/**/*.h", recursive=True)),
        include_dirs=["ext"],
        define_macros=macros,
        extra_compile_args=cflags,
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],
        compiler_directives={"language_level": "3", "boundscheck": False,
                             "wraparound": False},
    ),
)
