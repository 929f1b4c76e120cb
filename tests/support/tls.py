"""Servers started with -Z (memcached's and mpcache's flags are the same)
and clients that speak TLS to them; the certificates are tests/support/certs.py's.

  TLSServerProcess       a ServerProcess whose TCP port speaks TLS, with an
                         optional plaintext notls: port beside it
  TLSRawConn             tests.support.raw.RawConn over TLS
"""

import socket
import ssl
import time
from dataclasses import dataclass, field

from tests.support.certs import (OPENSSL, Certs, client_context, make_certs,  # noqa: F401
                                 tls_flags)
from tests.support.raw import RawConn
from tests.support.servers import HOST, START_TIMEOUT, ServerProcess, ServerStartError, free_port


@dataclass
class TLSServerProcess(ServerProcess):
    """ServerProcess with -Z: `port` speaks TLS to clients made with
    `context`; with plain=True a notls: listener on `plain_port` too."""
    context: ssl.SSLContext = None
    plain: bool = False
    plain_port: int = 0
    tls_extra: tuple = field(default_factory=tuple)

    def start(self):
        extra = tuple(self.tls_extra)
        if self.plain:
            self.plain_port = free_port()
            extra += ("-l", f"notls:{HOST}:{self.plain_port}")
        self.extra = tuple(self.extra) + extra
        return super().start()

    @property
    def plain_addr(self):
        return (HOST, self.plain_port)

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(
                    f"{self.name} exited with status {rc} before accepting connections\n"
                    f"command: {' '.join(self.cmd)}\noutput:\n{self.output()}")
            try:
                with self.tls_connect(timeout=1.0) as s:
                    s.sendall(b"version\r\n")
                    if s.recv(100).startswith(b"VERSION "):
                        return
            except (OSError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.name} did not accept TLS connections on {self.addr} within "
                    f"{START_TIMEOUT}s\ncommand: {' '.join(self.cmd)}\noutput:\n{self.output()}")
            time.sleep(0.05)

    def tls_connect(self, context=None, timeout=5.0):
        raw = socket.create_connection(self.addr, timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            return (context or self.context).wrap_socket(raw, server_hostname=HOST)
        except BaseException:
            raw.close()
            raise


class TLSRawConn(RawConn):
    """RawConn over TLS: the same exact-bytes calls."""

    def __init__(self, addr, context, timeout=5.0):
        self.addr = addr
        self.timeout = timeout
        raw = socket.create_connection(addr, timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = context.wrap_socket(raw, server_hostname=addr[0])
        except BaseException:
            raw.close()
            raise


def tls_stats(addr, context, group=b""):
    """`stats [group]` over TLS as an ordered dict of str to str."""
    with TLSRawConn(addr, context) as c:
        c.send(b"stats " + group + b"\r\n" if group else b"stats\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = c.sock.recv(65536)
            assert chunk, buf
            buf += chunk
    out = {}
    for line in buf.decode().split("\r\n"):
        if line.startswith("STAT "):
            _, k, v = line.split(" ", 2)
            out[k] = v
    return out
