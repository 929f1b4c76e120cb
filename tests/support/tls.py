"""TLS for the test suites: certificates made with the openssl CLI at test
time, servers started with -Z (memcached's and mpcache's flags are the same),
and clients that speak TLS to them.

  make_certs(dir)        a CA, a server certificate for 127.0.0.1 and a second
                         one (refresh_certs), a client certificate, and an
                         untrusted CA with a server and a client certificate
  TLSServerProcess       a ServerProcess whose TCP port speaks TLS, with an
                         optional plaintext notls: port beside it
  TLSRawConn             tests.support.raw.RawConn over TLS
"""

import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field

from tests.support.raw import RawConn
from tests.support.servers import HOST, START_TIMEOUT, ServerProcess, ServerStartError, free_port

OPENSSL = shutil.which("openssl")


@dataclass
class Certs:
    dir: str
    ca: str = ""                 # the CA clients and the server trust
    server_crt: str = ""         # signed by ca, for 127.0.0.1 and localhost
    server_key: str = ""
    server2_crt: str = ""        # another one (refresh_certs)
    server2_key: str = ""
    client_crt: str = ""         # signed by ca
    client_key: str = ""
    untrusted_ca: str = ""       # nobody trusts it
    untrusted_crt: str = ""      # a server certificate it signed
    untrusted_key: str = ""
    untrusted_client_crt: str = ""
    untrusted_client_key: str = ""

    def path(self, name):
        return os.path.join(self.dir, name)


def _openssl(*args, cwd):
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _ca(d, name):
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}", cwd=d)


def _signed(d, ca, name, cn, server):
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    ext = f"{name}.ext"
    with open(os.path.join(d, ext), "w") as f:
        if server:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "30", "-extfile", ext, cwd=d)


def make_certs(d):
    """Every certificate the TLS tests use, in directory d."""
    os.makedirs(d, exist_ok=True)
    _ca(d, "ca")
    _ca(d, "untrusted_ca")
    _signed(d, "ca", "server", "127.0.0.1", True)
    _signed(d, "ca", "server2", "127.0.0.1", True)
    _signed(d, "ca", "client", "mpcache test client", False)
    _signed(d, "untrusted_ca", "untrusted", "127.0.0.1", True)
    _signed(d, "untrusted_ca", "untrusted_client", "stranger", False)
    c = Certs(d)
    for attr, name in (("ca", "ca.crt"), ("server_crt", "server.crt"), ("server_key", "server.key"),
                       ("server2_crt", "server2.crt"), ("server2_key", "server2.key"),
                       ("client_crt", "client.crt"), ("client_key", "client.key"),
                       ("untrusted_ca", "untrusted_ca.crt"), ("untrusted_crt", "untrusted.crt"),
                       ("untrusted_key", "untrusted.key"),
                       ("untrusted_client_crt", "untrusted_client.crt"),
                       ("untrusted_client_key", "untrusted_client.key")):
        setattr(c, attr, os.path.join(d, name))
    return c


def client_context(certs, cert=None, key=None, ca=None):
    """A client's SSLContext trusting certs.ca (or ca), with a client
    certificate when given."""
    ctx = ssl.create_default_context(cafile=ca or certs.ca)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def tls_flags(crt, key, *more):
    """-Z and its -o options: the certificate, key and more "name=value"."""
    return ("-Z", "-o", ",".join([f"ssl_chain_cert={crt}", f"ssl_key={key}", *more]))


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
