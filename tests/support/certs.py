"""Certificates for the TLS tests, made with the openssl CLI at test time,
and the suites' TLS mode.

  make_certs(dir)     a CA, a server certificate for 127.0.0.1 and a second
                      one (refresh_certs), a client certificate, and an
                      untrusted CA with a server and a client certificate
  client_context      a client's SSLContext trusting the CA
  tls_flags           -Z and its -o options (memcached's and mpcache's alike)

MPCACHE_TEST_TLS=1 runs the suites over TLS: every mpcache server
tests/support/servers.py starts gets tls_flags, and every connection it and
tests/support/raw.py make to one speaks TLS (suite_flags, suite_wrap).  The
reference memcached stays in plaintext: what it answers does not depend on
the transport, and memcached 1.6.18 over TLS stops answering a connection
that sent a value too large to store: it swallows the value in reads smaller
than a record, and seems to wait for the socket while the rest of a record
sits decrypted inside OpenSSL.
The certificates are made once per test process.
"""

import atexit
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from dataclasses import dataclass

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


# ---- MPCACHE_TEST_TLS=1: the suites over TLS ----

SUITE_TLS = os.environ.get("MPCACHE_TEST_TLS") == "1"
_suite = None
_tls_ports = set()   # the ports of the servers started with suite_flags


def _suite_certs():
    global _suite
    if _suite is None:
        d = tempfile.mkdtemp(prefix="mpcache-tls-")
        atexit.register(shutil.rmtree, d, True)
        certs = make_certs(d)
        _suite = (certs, client_context(certs))
    return _suite


def suite_flags(port):
    """The flags an mpcache server of the suites on `port` gets: none, or
    -Z with the suite's certificate."""
    if not SUITE_TLS:
        return ()
    certs = _suite_certs()[0]
    _tls_ports.add(port)
    return tls_flags(certs.server_crt, certs.server_key)


def suite_wrap(sock):
    """sock as the suites' clients use it: itself, or over TLS when it is
    connected to a server started with suite_flags (the handshake done,
    honouring sock's timeout)."""
    if not SUITE_TLS or sock.family not in (socket.AF_INET, socket.AF_INET6) or \
            sock.getpeername()[1] not in _tls_ports:
        return sock
    try:
        return _suite_certs()[1].wrap_socket(sock, server_hostname=sock.getpeername()[0])
    except BaseException:
        sock.close()
        raise
