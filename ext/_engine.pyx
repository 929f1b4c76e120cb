# cython: language_level=3
"""The Python boundary of the engine.

Everything here runs at start-up, shutdown or for stats; a channel thread
enters mp_channel_run once, inside ``with nogil``, and never comes back into
Python while it serves."""

import os

from libc.stdlib cimport free
from libc.string cimport memcpy

from includes.engine cimport (
    mp_engine, mp_settings, mp_settings_init, mp_setting_desc, mp_setting_descs,
    mp_setting_count, MP_SETTING_INT, MP_SETTING_UINT, MP_SETTING_FLOAT, MP_SETTING_BOOL,
    MP_SETTING_STR, mp_engine_create, mp_engine_destroy,
    mp_engine_add_listener, mp_engine_add_udp, mp_channel_run, mp_engine_stop, mp_engine_reload_auth, mp_stats_text,
    mp_thread_stat_names, mp_engine_channel_counters, mp_engine_channel_turn_hist,
    MP_TURN_HIST_BUCKETS, mp_engine_channel_latency, mp_engine_channel_conns,
    mp_command_name, MP_LAT_BUCKETS, MP_LAT_COMMANDS,
    MP_CHANNEL_BUFFER_KINDS, mp_channel_buffer_names, mp_engine_channel_buffers,
    MP_MAX_SHARDS, mp_store_lock_stats, mp_own_totals, mp_tls_built, mp_tls_check, mp_tls_prepare,
    mp_tls_prepared_free, mp_engine_create_tls,
)
from libc.stdlib cimport malloc
from libc.stdint cimport (
    int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t,
)

# Upper bound on the per-channel counters; the C list is far shorter.
DEF MAX_COUNTERS = 256


cdef extern from "<stdbool.h>":
    # C's bool, one byte, where Cython's bint is an int.
    ctypedef int c_bool "bool"


cdef void _store_setting(mp_settings *s, const mp_setting_desc *d, value) except *:
    # Cython's conversion to the field's C type: a float truncates, so
    # mpcache.Server(memory_mb=0.5) works; an int the field cannot hold
    # raises OverflowError.
    cdef char *p = <char *>s + d.offset
    cdef bytes b
    if d.kind == MP_SETTING_INT and d.size == sizeof(int64_t):
        (<int64_t *>p)[0] = value
    elif d.kind == MP_SETTING_INT and d.size == sizeof(int32_t):
        (<int32_t *>p)[0] = value
    elif d.kind == MP_SETTING_INT and d.size == sizeof(int16_t):
        (<int16_t *>p)[0] = value
    elif d.kind == MP_SETTING_INT and d.size == sizeof(int8_t):
        (<int8_t *>p)[0] = value
    elif d.kind == MP_SETTING_UINT and d.size == sizeof(uint64_t):
        (<uint64_t *>p)[0] = value
    elif d.kind == MP_SETTING_UINT and d.size == sizeof(uint32_t):
        (<uint32_t *>p)[0] = value
    elif d.kind == MP_SETTING_UINT and d.size == sizeof(uint16_t):
        (<uint16_t *>p)[0] = value
    elif d.kind == MP_SETTING_UINT and d.size == sizeof(uint8_t):
        (<uint8_t *>p)[0] = value
    elif d.kind == MP_SETTING_FLOAT and d.size == sizeof(double):
        (<double *>p)[0] = value
    elif d.kind == MP_SETTING_FLOAT and d.size == sizeof(float):
        (<float *>p)[0] = value
    elif d.kind == MP_SETTING_BOOL and d.size == sizeof(c_bool):
        (<c_bool *>p)[0] = 1 if value else 0
    elif d.kind == MP_SETTING_STR and d.size > 0:
        # Cut to fit, keeping the NUL: inter may name more addresses than
        # its 255 bytes hold and is only shown ("stats settings"); the
        # strings the engine acts on are validated shorter in config.py.
        b = str(value).encode()[:d.size - 1]
        memcpy(p, <const char *>b, len(b))
        p[len(b)] = 0
    else:
        raise TypeError(f"engine setting {d.name.decode()!r}: no conversion to kind "
                        f"{<int>d.kind} of {d.size} bytes")


cdef object _load_setting(const mp_settings *s, const mp_setting_desc *d):
    cdef const char *p = <const char *>s + d.offset
    if d.kind == MP_SETTING_INT and d.size == sizeof(int64_t):
        return (<const int64_t *>p)[0]
    elif d.kind == MP_SETTING_INT and d.size == sizeof(int32_t):
        return (<const int32_t *>p)[0]
    elif d.kind == MP_SETTING_INT and d.size == sizeof(int16_t):
        return (<const int16_t *>p)[0]
    elif d.kind == MP_SETTING_INT and d.size == sizeof(int8_t):
        return (<const int8_t *>p)[0]
    elif d.kind == MP_SETTING_UINT and d.size == sizeof(uint64_t):
        return (<const uint64_t *>p)[0]
    elif d.kind == MP_SETTING_UINT and d.size == sizeof(uint32_t):
        return (<const uint32_t *>p)[0]
    elif d.kind == MP_SETTING_UINT and d.size == sizeof(uint16_t):
        return (<const uint16_t *>p)[0]
    elif d.kind == MP_SETTING_UINT and d.size == sizeof(uint8_t):
        return (<const uint8_t *>p)[0]
    elif d.kind == MP_SETTING_FLOAT and d.size == sizeof(double):
        return (<const double *>p)[0]
    elif d.kind == MP_SETTING_FLOAT and d.size == sizeof(float):
        return (<const float *>p)[0]
    elif d.kind == MP_SETTING_BOOL and d.size == sizeof(c_bool):
        return bool((<const c_bool *>p)[0])
    elif d.kind == MP_SETTING_STR and d.size > 0:
        return p[:d.size].partition(b"\0")[0].decode(errors="replace")
    raise TypeError(f"engine setting {d.name.decode()!r}: no conversion from kind "
                    f"{<int>d.kind} of {d.size} bytes")


cdef void _fill_settings(mp_settings *s, dict values) except *:
    # Every field or none: a field nobody sets would keep its C default
    # while the Python default it mirrors drifts, and a key with no field
    # would be a setting that silently does nothing.
    cdef int i
    names = [mp_setting_descs[i].name.decode() for i in range(mp_setting_count)]
    missing = [n for n in names if n not in values]
    unknown = sorted(set(values) - set(names))
    if missing or unknown:
        raise KeyError("engine settings do not match mp_settings (ext/settings.h):"
                       + (f" missing {', '.join(missing)}" if missing else "")
                       + (f" unknown {', '.join(map(str, unknown))}" if unknown else ""))
    for i in range(mp_setting_count):
        _store_setting(s, &mp_setting_descs[i], values[names[i]])


def settings_table():
    """mp_settings' fields in MP_SETTINGS order (ext/settings.h), as
    (name, C default, doc) tuples."""
    cdef mp_settings s
    cdef int i
    mp_settings_init(&s)
    return tuple((mp_setting_descs[i].name.decode(), _load_setting(&s, &mp_setting_descs[i]),
                  mp_setting_descs[i].doc.decode())
                 for i in range(mp_setting_count))


def own_totals():
    """mpcache's own totals (MP_OWN_TOTALS in ext/stats.h) as (name, help)
    tuples: "stats mpcache" shows each as mpcache_<name>, /metrics as the
    counter mpcache_<name>_total; each is a field of channel_stats()."""
    cdef int i = 0
    out = []
    while mp_own_totals[i].name != NULL:
        out.append((mp_own_totals[i].name.decode(), mp_own_totals[i].help.decode()))
        i += 1
    return tuple(out)


def tls_built():
    """Was the engine built with OpenSSL (TLS, -Z)?"""
    return bool(mp_tls_built())


def tls_check(dict settings):
    """-Z: loads the certificates and options of `settings` (every field of
    mp_settings) as the engine would, and drops them.  Returns None, or
    memcached's message for what it refuses."""
    cdef mp_settings s
    # a path of up to PATH_MAX and OpenSSL's error text
    cdef char err[4608]
    mp_settings_init(&s)
    _fill_settings(&s, settings)
    err[0] = 0
    if mp_tls_check(&s, err, sizeof(err)) == 0:
        return None
    return err.decode(errors="replace").rstrip("\r\n")


cdef class TLSContext:
    """-Z's context made from `settings` (every field of mp_settings) ahead
    of the engine: the daemon makes it before it drops privileges, as
    memcached loads its key as root.  Raises ValueError with memcached's
    message when the files do not load."""

    cdef void *ctx

    def __cinit__(self, dict settings):
        cdef mp_settings s
        cdef char err[4608]
        mp_settings_init(&s)
        _fill_settings(&s, settings)
        err[0] = 0
        self.ctx = mp_tls_prepare(&s, err, sizeof(err))
        if self.ctx == NULL:
            raise ValueError(err.decode(errors="replace").rstrip("\r\n"))

    def __dealloc__(self):
        if self.ctx != NULL:
            mp_tls_prepared_free(self.ctx)
            self.ctx = NULL


cdef class Engine:
    """Channels, store and settings of one server (several may share a process).

    `settings` names every field of mp_settings (settings_table()), or is
    None for the C defaults; `tls` is -Z's context made ahead (TLSContext),
    else the engine loads the files named in `settings` itself."""

    cdef mp_engine *eng
    cdef object _running

    def __cinit__(self, dict settings=None, TLSContext tls=None):
        cdef mp_settings s
        # room for memcached's longest start-up message: a 1023-byte line
        # (its vperror's buffer) and errno's text, or -Z's: a path of up to
        # PATH_MAX and OpenSSL's error text
        cdef char err[4608]
        mp_settings_init(&s)
        if settings is not None:
            _fill_settings(&s, settings)
        err[0] = 0
        self.eng = mp_engine_create_tls(&s, tls.ctx if tls is not None else NULL, err, sizeof(err))
        if self.eng == NULL:
            raise ValueError(err.decode(errors="replace") or "cannot create engine")
        self._running = set()

    def __dealloc__(self):
        if self.eng != NULL and not self._running:
            mp_engine_destroy(self.eng)
            self.eng = NULL

    cdef mp_engine *_live(self) except NULL:
        if self.eng == NULL:
            raise ValueError("engine is closed")
        return self.eng

    @property
    def nchannels(self):
        return self._live().nchannels

    @property
    def control_fd(self):
        return self._live().control_fd

    @property
    def curr_conns(self):
        return self._live().curr_conns

    def add_listener(self, int channel, int fd, bint is_unix=False, bint tls=False):
        """tls: its connections speak TLS (an engine made with ssl_enabled)."""
        if mp_engine_add_listener(self._live(), channel, fd, is_unix, tls) != 0:
            raise OSError(f"cannot add listener fd {fd} to channel {channel}")

    def add_udp(self, int channel, int fd):
        """A bound UDP socket (-U), served by that channel alone."""
        if mp_engine_add_udp(self._live(), channel, fd) != 0:
            raise OSError(f"cannot add UDP socket fd {fd} to channel {channel}")

    def run_channel(self, int channel):
        """Serves on the calling thread until stop(); the GIL is released."""
        cdef mp_engine *eng = self._live()
        cdef int rc
        if channel < 0 or channel >= eng.nchannels:
            raise ValueError(f"no channel {channel}")
        self._running.add(channel)
        try:
            with nogil:
                rc = mp_channel_run(eng, channel)
        finally:
            self._running.discard(channel)
        # mp_channel_run: 0 after stop(), else a negative errno
        if rc < 0:
            raise OSError(-rc, f"channel {channel}: event loop failed: {os.strerror(-rc)}")
        if rc != 0:
            raise OSError(f"channel {channel}: event loop failed with status {rc}")

    def stop(self):
        if self.eng != NULL:
            mp_engine_stop(self.eng)

    def reload_auth(self):
        """-Y: reads the password file again (SIGHUP).  Raises ValueError
        with memcached's message when it cannot be loaded; the table in use
        is then kept."""
        cdef char err[1200]
        err[0] = 0
        if mp_engine_reload_auth(self._live(), err, sizeof(err)) != 0:
            raise ValueError(err.decode(errors="replace"))

    def stats(self, group=b""):
        """What "stats <group>" answers, as bytes (STAT lines and END)."""
        cdef mp_engine *eng = self._live()
        cdef bytes g = group.encode() if isinstance(group, str) else bytes(group)
        cdef size_t n = 0
        cdef char *text
        cdef const char *gp = g
        cdef size_t glen = len(g)
        with nogil:
            text = mp_stats_text(eng, gp, glen, &n)
        if text == NULL:
            raise KeyError(f"unknown stats group {g!r}")
        try:
            return text[:n]
        finally:
            free(text)

    def channel_stats(self):
        """Per channel: its raw counters (monotonic; "stats reset" does not
        touch them), "turn_hist", loop turns by completions per turn
        (0, 1, 2-3, 4-7, ..., 64+), "open_conns" and "buffer_bytes", the
        bytes of connection buffers by kind.  For metrics; read without
        locks."""
        cdef mp_engine *eng = self._live()
        cdef uint64_t vals[MAX_COUNTERS]
        cdef uint64_t hist[16]
        cdef uint64_t bufs[MP_CHANNEL_BUFFER_KINDS]
        cdef int n, i, ch
        out = []
        for ch in range(eng.nchannels):
            n = mp_engine_channel_counters(eng, ch, vals, MAX_COUNTERS)
            d = {mp_thread_stat_names[i].decode(): vals[i] for i in range(n)}
            n = mp_engine_channel_turn_hist(eng, ch, hist)
            d["turn_hist"] = [hist[i] for i in range(n)]
            d["open_conns"] = mp_engine_channel_conns(eng, ch)
            n = mp_engine_channel_buffers(eng, ch, bufs)
            d["buffer_bytes"] = {mp_channel_buffer_names[i].decode(): bufs[i] for i in range(n)}
            out.append(d)
        return out

    def shard_locks(self):
        """Per shard, (times its lock was taken, times a taker waited for
        it): any channel takes any shard's lock, so this is where channels
        contend.  Monotonic; read without locks."""
        cdef mp_engine *eng = self._live()
        cdef uint64_t *acq = <uint64_t *>malloc(MP_MAX_SHARDS * sizeof(uint64_t))
        cdef uint64_t *waits = <uint64_t *>malloc(MP_MAX_SHARDS * sizeof(uint64_t))
        cdef int n, i
        if acq == NULL or waits == NULL:
            free(acq)
            free(waits)
            raise MemoryError()
        try:
            n = mp_store_lock_stats(eng.store, acq, waits, MP_MAX_SHARDS)
            return [(acq[i], waits[i]) for i in range(n)]
        finally:
            free(acq)
            free(waits)

    def command_latency(self):
        """(bounds_ns, {command: (counts, sum_ns)}): server-side time per
        command, summed over channels.  counts[i] counts times below
        bounds_ns[i] (and at or above the bound before it); the last entry,
        one more than the bounds, everything slower.  Not cumulative.
        Commands never run are left out."""
        cdef mp_engine *eng = self._live()
        cdef size_t cells = <size_t>MP_LAT_COMMANDS * MP_LAT_BUCKETS
        cdef uint64_t *hist = <uint64_t *>malloc(cells * sizeof(uint64_t))
        cdef uint64_t *sums = <uint64_t *>malloc(MP_LAT_COMMANDS * sizeof(uint64_t))
        cdef int ch, cmd, b, ncmd = 0
        if hist == NULL or sums == NULL:
            free(hist)
            free(sums)
            raise MemoryError()
        totals = {}
        try:
            for ch in range(eng.nchannels):
                ncmd = mp_engine_channel_latency(eng, ch, hist, sums)
                for cmd in range(ncmd):
                    counts, total = totals.get(cmd, ([0] * MP_LAT_BUCKETS, 0))
                    for b in range(MP_LAT_BUCKETS):
                        counts[b] += hist[cmd * MP_LAT_BUCKETS + b]
                    totals[cmd] = (counts, total + sums[cmd])
        finally:
            free(hist)
            free(sums)
        bounds = [1000 << i for i in range(MP_LAT_BUCKETS - 1)]
        out = {}
        for cmd, (counts, total) in totals.items():
            if any(counts):
                out[mp_command_name(cmd).decode()] = (counts, total)
        return bounds, out

    def close(self):
        """Frees the engine; every channel thread must have returned."""
        if self._running:
            raise RuntimeError("channels still running")
        if self.eng != NULL:
            mp_engine_destroy(self.eng)
            self.eng = NULL
