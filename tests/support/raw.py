"""A raw-socket client: exact bytes out, exact bytes back.

Replies to a batch of requests are collected by sending the meta no-op `mn`
after the batch and reading until its reply `MN\\r\\n` ends the stream at a
reply boundary (a VALUE line's data block may itself contain those bytes).
Requests that close the connection are read until EOF instead.
"""

import socket
import time

from tests.support.certs import suite_wrap

MARKER = b"mn\r\n"
MARKER_REPLY = b"MN\r\n"
EOF_TAG = b"<EOF>"
TIMEOUT_TAG = b"<TIMEOUT>"
RESET_TAG = b"<RESET>"


def reply_boundaries(buf):
    """Offsets in buf where a reply line starts, walking VALUE data blocks.

    Returns (offsets, complete): complete is False when buf ends inside a line
    or a data block.  A VALUE line that does not parse is treated as a plain
    line (the server is then wrong anyway and the bytes will be compared)."""
    offs = []
    i = 0
    n = len(buf)
    while i < n:
        offs.append(i)
        j = buf.find(b"\n", i)
        if j < 0:
            return offs, False
        line = buf[i:j + 1]
        i = j + 1
        if line.startswith(b"VALUE "):
            parts = line.rstrip(b"\r\n").split(b" ")
            if len(parts) in (4, 5) and parts[3].isdigit():
                size = int(parts[3])
                if i + size + 2 > n:
                    return offs, False
                i += size + 2
    return offs, True


def ends_with_marker(buf, count=1):
    """True when buf ends with the reply to `mn` at a reply boundary and holds
    at least `count` such replies (a batch may contain `mn` requests itself)."""
    if not buf.endswith(MARKER_REPLY):
        return False
    offs, complete = reply_boundaries(buf)
    if not (complete and offs and offs[-1] == len(buf) - len(MARKER_REPLY)):
        return False
    if count == 1:
        return True
    return sum(1 for o in offs if buf.startswith(MARKER_REPLY, o)) >= count


class RawConn:
    def __init__(self, addr, timeout=5.0):
        self.addr = addr
        self.timeout = timeout
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # MPCACHE_TEST_TLS=1: over TLS (tests/support/certs.py)
        self.sock = suite_wrap(self.sock)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data, pieces=None, pause=0.0):
        """Sends data; with pieces (cut offsets), in several writes so the
        server sees the request split at those bytes."""
        if not pieces:
            self.sock.sendall(data)
            return
        prev = 0
        for cut in list(pieces) + [len(data)]:
            if cut > prev:
                self.sock.sendall(data[prev:cut])
                if pause:
                    time.sleep(pause)
            prev = cut

    def read_until_marker(self, timeout=None, count=1):
        """Reads until the stream ends with the reply to `mn` at a reply
        boundary (the count-th such reply).  On EOF or timeout the bytes so
        far are returned with a tag appended, so they compare unequal to a
        proper reply."""
        deadline = time.monotonic() + (timeout or self.timeout)
        buf = b""
        while not ends_with_marker(buf, count):
            left = deadline - time.monotonic()
            if left <= 0:
                return buf + TIMEOUT_TAG
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                return buf + TIMEOUT_TAG
            except ConnectionResetError:
                return buf + RESET_TAG
            if not chunk:
                return buf + EOF_TAG
            buf += chunk
        return buf[:-len(MARKER_REPLY)]

    def read_until_eof(self, timeout=None):
        """Reads until the server closes; a reset counts as a close."""
        deadline = time.monotonic() + (timeout or self.timeout)
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return buf + TIMEOUT_TAG
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                return buf + TIMEOUT_TAG
            except ConnectionResetError:
                return buf + EOF_TAG
            if not chunk:
                return buf + EOF_TAG
            buf += chunk

    def call(self, data, timeout=None, **kw):
        """Sends data followed by `mn` and returns the replies to data."""
        self.send(data + MARKER, **kw)
        return self.read_until_marker(timeout)


def stats(addr, group=b""):
    """`stats [group]` as a dict of str to str."""
    with RawConn(addr) as c:
        c.send(b"stats " + group + b"\r\n" if group else b"stats\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            c.sock.settimeout(c.timeout)
            chunk = c.sock.recv(65536)
            assert chunk, buf
            buf += chunk
    out = {}
    for line in buf.decode().split("\r\n"):
        if line.startswith("STAT "):
            _, k, v = line.split(" ", 2)
            out[k] = v
    return out


def wait_for_stat(addr, group, name, want, timeout=5.0):
    """Until `stats <group>` shows name = want.  memcached changes some
    state after its reply: "lru_crawler disable" answers OK before its
    crawler thread has exited, and the thread clears the setting on its way
    out (1.6.18 crawler.c, CRAWLER_NOWAIT)."""
    deadline = time.monotonic() + timeout
    while stats(addr, group).get(name) != want:
        assert time.monotonic() < deadline, f"{name} never became {want}"
        time.sleep(0.02)
