"""Runs a command with some system calls denied by a seccomp filter, as a
container's profile or a sandbox denies them:

    python deny_syscalls.py NAME[=ERRNO][,NAME[=ERRNO]...] PROGRAM [ARGS...]

Each named call fails with ERRNO (a name such as EMFILE; EPERM when left
out, as Docker's default profile answers); every other call is allowed.
The filter is inherited by the program and everything it starts."""

import ctypes
import errno
import os
import platform
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000

# Only the calls the tests deny; x86_64's numbers differ from the generic
# table's (aarch64), except io_uring's.
SYSCALLS = {
    "x86_64": {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
               "epoll_create": 213, "epoll_create1": 291},
    "aarch64": {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
                "epoll_create1": 20},
}
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06
OFF_NR = 0
OFF_ARCH = 4


def insn(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)


def build_filter(arch, denials):
    """denials: [(syscall number, errno)] -> (BPF program bytes, length)."""
    prog = [insn(BPF_LD_W_ABS, 0, 0, OFF_ARCH),
            # another architecture: allow (the numbers would mean other calls)
            insn(BPF_JEQ_K, 1, 0, arch),
            insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
            insn(BPF_LD_W_ABS, 0, 0, OFF_NR)]
    for nr, err in denials:
        prog.append(insn(BPF_JEQ_K, 0, 1, nr))
        prog.append(insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | err))
    prog.append(insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    return b"".join(prog), len(prog)


def parse_denials(machine, spec):
    """"epoll_create1=EMFILE,io_uring_setup" -> [(number, errno)]."""
    table = SYSCALLS.get(machine)
    if table is None:
        raise ValueError(f"unsupported architecture {machine}")
    out = []
    for item in spec.split(","):
        name, _, err = item.partition("=")
        if name not in table:
            raise ValueError(f"no number for {name} on {machine}")
        code = getattr(errno, err or "EPERM", None)
        if not isinstance(code, int):
            raise ValueError(f"unknown errno {err}")
        out.append((table[name], code))
    return out


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def deny_and_exec(spec, argv, prog_name="deny_syscalls"):
    machine = platform.machine()
    try:
        denials = parse_denials(machine, spec)
    except ValueError as e:
        sys.exit(f"{prog_name}: {e}")
    code, n = build_filter(AUDIT_ARCH[machine], denials)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = SockFprog(n, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sys.exit(f"{prog_name}: PR_SET_NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        sys.exit(f"{prog_name}: PR_SET_SECCOMP: {os.strerror(ctypes.get_errno())}")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    deny_and_exec(sys.argv[1], sys.argv[2:])
