"""Runs a command with io_uring_setup denied by a seccomp filter, as Docker's
default profile denies it:  python no_io_uring.py PROGRAM [ARGS...]

The filter answers EPERM to io_uring_setup (and io_uring_enter/register,
which are useless without it) and allows everything else."""

import sys

# Run as a script, this file's directory is first on sys.path.
from deny_syscalls import deny_and_exec

IO_URING = "io_uring_setup,io_uring_enter,io_uring_register"

if __name__ == "__main__":
    deny_and_exec(IO_URING, sys.argv[1:], prog_name="no_io_uring")
