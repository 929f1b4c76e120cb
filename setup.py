"""Builds the engine: every C file in ext/ plus the Cython bridge.

Only a C compiler, the Python headers and libc are needed.  MPCACHE_DEBUG=1
compiles assertions in (release builds leave them out, as uvloop does)."""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("MPCACHE_DEBUG") == "1"

cflags = ["-std=gnu11", "-O2", "-pthread", "-fno-strict-aliasing",
          "-Wall", "-Wno-unused-function"]
macros = [] if DEBUG else [("NDEBUG", "1")]
if DEBUG:
    cflags += ["-g", "-O0"]

# Cython writes _engine.c and parser_py.c beside their .pyx: not sources.
GENERATED = {"ext/_engine.c", "ext/parser_py.c"}
engine_sources = sorted(f for f in glob.glob("ext/*.c") if f not in GENERATED)

# The parser is a pure function, built alone as well so tests can drive it
# without a server.
extensions = [
    Extension(
        "mpcache._engine",
        sources=["ext/_engine.pyx"] + engine_sources,
        depends=sorted(glob.glob("ext/*.h")),
        include_dirs=["ext"],
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=["-pthread"],
    ),
    Extension(
        "mpcache._parser",
        sources=["ext/parser_py.pyx", "ext/parser.c"],
        depends=sorted(glob.glob("ext/*.h")),
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
