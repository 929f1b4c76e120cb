"""Runs a command with io_uring_setup denied by a seccomp filter, as Docker's
default profile denies it:  python no_io_uring.py PROGRAM [ARGS...]

The filter answers EPERM to io_uring_setup (and io_uring_enter/register,
which are useless without it) and allows everything else."""

import ctypes
import os
import platform
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1

# io_uring_setup, io_uring_enter, io_uring_register: the same numbers in
# x86_64's table and the generic one (aarch64).
IO_URING_SYSCALLS = (425, 426, 427)
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06
OFF_NR = 0
OFF_ARCH = 4


def insn(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)


def build_filter(arch):
    prog = [insn(BPF_LD_W_ABS, 0, 0, OFF_ARCH),
            # another architecture: allow (the numbers would mean other calls)
            insn(BPF_JEQ_K, 1, 0, arch),
            insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
            insn(BPF_LD_W_ABS, 0, 0, OFF_NR)]
    n = len(IO_URING_SYSCALLS)
    for i, nr in enumerate(IO_URING_SYSCALLS):
        # match: jump to the EPERM return after the remaining checks and ALLOW
        prog.append(insn(BPF_JEQ_K, n - i, 0, nr))
    prog.append(insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    prog.append(insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM))
    return b"".join(prog), len(prog)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def main(argv):
    arch = AUDIT_ARCH.get(platform.machine())
    if arch is None:
        sys.exit(f"no_io_uring: unsupported architecture {platform.machine()}")
    code, n = build_filter(arch)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = SockFprog(n, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sys.exit(f"no_io_uring: PR_SET_NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        sys.exit(f"no_io_uring: PR_SET_SECCOMP: {os.strerror(ctypes.get_errno())}")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
