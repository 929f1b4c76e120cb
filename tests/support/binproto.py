"""memcached's binary protocol for the tests: requests built byte by byte,
replies read and split into packets (protocol_binary.h's layout)."""

import socket
import ssl
import struct
import time

from tests.support.raw import RawConn

REQ_MAGIC = 0x80
RES_MAGIC = 0x81
HEADER = struct.Struct(">BBHBBHIIQ")   # magic opcode keylen extlen datatype status/vbucket bodylen opaque cas

OP = dict(
    get=0x00, set=0x01, add=0x02, replace=0x03, delete=0x04, incr=0x05, decr=0x06,
    quit=0x07, flush=0x08, getq=0x09, noop=0x0a, version=0x0b, getk=0x0c, getkq=0x0d,
    append=0x0e, prepend=0x0f, stat=0x10, setq=0x11, addq=0x12, replaceq=0x13,
    deleteq=0x14, incrq=0x15, decrq=0x16, quitq=0x17, flushq=0x18, appendq=0x19,
    prependq=0x1a, verbosity=0x1b, touch=0x1c, gat=0x1d, gatq=0x1e,
    sasl_list=0x20, sasl_auth=0x21, sasl_step=0x22, gatk=0x23, gatkq=0x24,
)

ST_SUCCESS = 0x00
ST_KEY_ENOENT = 0x01
ST_KEY_EEXISTS = 0x02
ST_E2BIG = 0x03
ST_EINVAL = 0x04
ST_NOT_STORED = 0x05
ST_DELTA_BADVAL = 0x06
ST_AUTH_ERROR = 0x20
ST_AUTH_CONTINUE = 0x21
ST_UNKNOWN = 0x81
ST_ENOMEM = 0x82


def request(opcode, key=b"", extras=b"", value=b"", opaque=0, cas=0, magic=REQ_MAGIC,
            keylen=None, extlen=None, bodylen=None):
    """A request packet; keylen/extlen/bodylen override the true lengths
    (for malformed requests)."""
    if isinstance(opcode, str):
        opcode = OP[opcode]
    kl = len(key) if keylen is None else keylen
    el = len(extras) if extlen is None else extlen
    bl = len(key) + len(extras) + len(value) if bodylen is None else bodylen
    return HEADER.pack(magic, opcode, kl, el, 0, 0, bl, opaque, cas) + extras + key + value


def store_extras(flags=0, exptime=0):
    return struct.pack(">II", flags, exptime)


def arith_extras(delta=1, initial=0, exptime=0):
    return struct.pack(">QQI", delta, initial, exptime)


def touch_extras(exptime=0):
    return struct.pack(">I", exptime)


class Packet:
    __slots__ = ("magic", "opcode", "keylen", "extlen", "datatype", "status", "bodylen",
                 "opaque", "cas", "extras", "key", "value", "raw")

    def __init__(self, raw):
        (self.magic, self.opcode, self.keylen, self.extlen, self.datatype, self.status,
         self.bodylen, self.opaque, self.cas) = HEADER.unpack_from(raw)
        body = raw[24:]
        self.extras = body[:self.extlen]
        self.key = body[self.extlen:self.extlen + self.keylen]
        self.value = body[self.extlen + self.keylen:]
        self.raw = raw

    def __repr__(self):
        return (f"Packet(op=0x{self.opcode:02x} status=0x{self.status:02x} opaque={self.opaque} "
                f"cas={self.cas} ext={self.extras!r} key={self.key!r} value={self.value[:60]!r}"
                f"{'...' if len(self.value) > 60 else ''})")


def split_packets(buf):
    """(packets, rest): the whole packets at the start of buf."""
    out = []
    i = 0
    while len(buf) - i >= 24:
        bodylen = struct.unpack_from(">I", buf, i + 8)[0]
        if len(buf) - i < 24 + bodylen:
            break
        out.append(Packet(bytes(buf[i:i + 24 + bodylen])))
        i += 24 + bodylen
    return out, buf[i:]


class BinConn(RawConn):
    """A connection speaking the binary protocol with exact bytes (over TLS
    when the suite runs mpcache with -Z, as RawConn)."""

    def __init__(self, addr, timeout=5.0):
        super().__init__(addr, timeout)
        self.buf = b""

    def send(self, data, pieces=None, pause=0.002):
        """Sends data whole, or cut at the offsets in pieces with a pause
        between writes so the server reads them apart."""
        super().send(data, pieces, pause)

    def read_until(self, pred, timeout=None):
        """Packets until pred(packet) is true for one (included), or until
        EOF / timeout; returns (packets, ending) with ending None, "EOF" or
        "TIMEOUT"."""
        out = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            pk, self.buf = split_packets(self.buf)
            for i, p in enumerate(pk):
                out.append(p)
                if pred(p):
                    # put back what came after it
                    rest = b"".join(q.raw for q in pk[i + 1:])
                    self.buf = rest + self.buf
                    return out, None
            left = deadline - time.monotonic()
            if left <= 0:
                return out, "TIMEOUT"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                return out, "TIMEOUT"
            except (ConnectionResetError, ssl.SSLEOFError):
                return out, "EOF"
            if not data:
                return out, "EOF"
            self.buf += data

    def read_to_eof(self, timeout=None):
        out, ending = self.read_until(lambda p: False, timeout)
        return out, ending, self.buf

    def call(self, data, marker_opaque=0xFFFFFFFF):
        """Sends data and a noop with marker_opaque; the replies up to the
        noop's."""
        self.send(data + request("noop", opaque=marker_opaque))
        out, ending = self.read_until(
            lambda p: p.opcode == OP["noop"] and p.opaque == marker_opaque)
        assert ending is None, f"no noop reply ({ending}); got {out}"
        return out[:-1]
