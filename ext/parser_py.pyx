# cython: language_level=3
"""Python access to the C parser (ext/proto/parser.c), for tests and fuzzing.

parse(buf) -> (status, consumed, command word or None, [word bytes])
  status is OK, NEED_MORE or TOO_LONG; on NEED_MORE / TOO_LONG consumed is 0,
  the command None and the list empty.  The words are the ones the parser
  keeps (at most LINE_TOKENS); rest(buf) gives the unread tail of a longer line.
"""

from libc.stdint cimport uint32_t, int32_t, uint64_t


cdef extern from "proto/parser.h" nogil:
    ctypedef struct mp_token:
        uint32_t off
        uint32_t len

    ctypedef struct mp_request:
        int cmd
        int ntokens
        bint more_tokens
        const char *line
        uint32_t line_len
        uint32_t rest
        mp_token tok[24]

    ctypedef enum mp_parse_status:
        MP_PARSE_OK
        MP_PARSE_NEED_MORE
        MP_PARSE_TOO_LONG

    int MP_LINE_MAX
    int MP_LINE_TOKENS

    mp_parse_status mp_parse_line(const char *buf, size_t len, mp_request *req, size_t *consumed)
    bint mp_next_token(const char *line, size_t len, size_t *pos, mp_token *tok)
    bint mp_parse_u32(const char *p, size_t len, uint32_t *out)
    bint mp_parse_i32(const char *p, size_t len, int32_t *out)
    bint mp_parse_u64(const char *p, size_t len, uint64_t *out)


cdef extern from "proto/parser.h" nogil:
    ctypedef struct mp_meta:
        const char *key
        uint32_t nkey
        bint key_binary
        char mode
        int32_t ttl
        int32_t vivify_ttl
        int32_t recache_ttl
        uint32_t client_flags
        uint64_t cas
        uint64_t delta
        uint64_t initial

    int MP_META_MAX_WORDS
    int MP_META_OPAQUE_MAX
    bint mp_meta_has(const mp_meta *m, unsigned char flag)
    int mp_meta_parse(const mp_request *r, int first, char *keybuf, mp_meta *m)
    const char *mp_meta_error_text(int err)
    size_t mp_base64_decode(const char *src, size_t len, char *out)
    size_t mp_base64_encode(const char *src, size_t len, char *out)


cdef extern from "proto/replies.h" nogil:
    int MP_META_ERR_COUNT


cdef extern from "proto/commands.h" nogil:
    const char *mp_command_name(int cmd)
    int MP_CMD_COUNT


OK = MP_PARSE_OK
NEED_MORE = MP_PARSE_NEED_MORE
TOO_LONG = MP_PARSE_TOO_LONG
LINE_MAX = MP_LINE_MAX
LINE_TOKENS = MP_LINE_TOKENS

COMMANDS = tuple(mp_command_name(i).decode() for i in range(MP_CMD_COUNT))


cdef tuple _parse(bytes buf):
    cdef mp_request req
    cdef size_t consumed = 0
    cdef const char *p = buf
    cdef mp_parse_status st = mp_parse_line(p, len(buf), &req, &consumed)
    if st != MP_PARSE_OK:
        return (st, 0, None, [], None, b"")
    words = [p[req.tok[i].off:req.tok[i].off + req.tok[i].len] for i in range(req.ntokens)]
    name = mp_command_name(req.cmd).decode() if req.cmd >= 0 else None
    rest = p[req.rest:req.line_len] if req.more_tokens else None
    line = p[:req.line_len]
    return (st, consumed, name, words, rest, line)


def parse(bytes buf):
    """(status, consumed, command word or None, [words])."""
    r = _parse(buf)
    return r[0], r[1], r[2], r[3]


def parse_full(bytes buf):
    """(status, consumed, command, [words], rest of the line or None, line)."""
    return _parse(buf)


def split(bytes line):
    """Every word of a line, as the executor walks a long multi-get."""
    cdef const char *p = line
    cdef size_t pos = 0
    cdef mp_token t
    out = []
    while mp_next_token(p, len(line), &pos, &t):
        out.append(p[t.off:t.off + t.len])
    return out


def parse_u32(bytes tok):
    """memcached's safe_strtoul: the value, or None when refused."""
    cdef uint32_t v
    return v if mp_parse_u32(tok, len(tok), &v) else None


def parse_i32(bytes tok):
    """memcached's safe_strtol."""
    cdef int32_t v
    return v if mp_parse_i32(tok, len(tok), &v) else None


def parse_u64(bytes tok):
    """memcached's safe_strtoull."""
    cdef uint64_t v
    return v if mp_parse_u64(tok, len(tok), &v) else None


META_MAX_WORDS = MP_META_MAX_WORDS
META_OPAQUE_MAX = MP_META_OPAQUE_MAX
META_ERRORS = tuple(mp_meta_error_text(i).decode() for i in range(MP_META_ERR_COUNT))


def meta_parse(bytes line, int first=2):
    """The meta flags of one line ("mg key v t\\r\\n"), from word `first` on
    (2 for mg md ma, 3 for ms): (error text or None, fields).  fields holds
    the flag letters present ("flags", in byte order), the key as the
    executor will use it (decoded after b), and every number and the mode."""
    cdef mp_request req
    cdef size_t consumed = 0
    cdef mp_meta m
    cdef char keybuf[250]
    cdef const char *p = line
    if mp_parse_line(p, len(line), &req, &consumed) != MP_PARSE_OK or req.ntokens < 2:
        raise ValueError("not a complete meta line")
    cdef int err = mp_meta_parse(&req, first, keybuf, &m)
    flags = "".join(chr(i) for i in range(33, 127) if mp_meta_has(&m, i))
    fields = dict(flags=flags, key=m.key[:m.nkey], key_binary=bool(m.key_binary),
                  mode=chr(m.mode) if m.mode else None, ttl=m.ttl, vivify_ttl=m.vivify_ttl,
                  recache_ttl=m.recache_ttl, client_flags=m.client_flags, cas=m.cas,
                  delta=m.delta, initial=m.initial)
    return (mp_meta_error_text(err).decode() if err else None), fields


def b64decode(bytes data):
    """memcached's base64 decoding: the bytes, or None when refused."""
    out = bytearray(len(data) * 3 // 4 + 3)
    cdef char *o = out
    cdef size_t n = mp_base64_decode(data, len(data), o)
    return bytes(out[:n]) if n else None


def b64encode(bytes data):
    out = bytearray((len(data) + 2) // 3 * 4)
    cdef char *o = out
    cdef size_t n = mp_base64_encode(data, len(data), o)
    return bytes(out[:n])
