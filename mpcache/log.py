"""Logging to stderr, memcached style: bare lines, -v levels.

Warnings and errors always print; -v adds start-up and shutdown notes
(INFO), -vv and more add DEBUG detail.  This is the Python shell's side
only: memcached's -vv and -vvv lines about connections, commands and
replies ("<28 set a 0 0 1", ">28 STORED") are written by the engine's
channel threads in C (ext/log.c), which never call into Python; the
engine reads the level from Settings.verbose and the "verbosity" command."""

import logging
import sys

logger = logging.getLogger("mpcache")


def setup(verbose=0, stream=None):
    """Configures the "mpcache" logger for the daemon (the embedded API
    leaves logging to its host application)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.propagate = False
    if verbose >= 2:
        logger.setLevel(logging.DEBUG)
    elif verbose == 1:
        logger.setLevel(logging.INFO)
    else:
        logger.setLevel(logging.WARNING)
    return logger
