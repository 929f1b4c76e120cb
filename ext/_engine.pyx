# cython: language_level=3
"""The Python boundary of the engine.

Everything here runs at start-up, shutdown or for stats; a channel thread
enters mp_channel_run once, inside ``with nogil``, and never comes back into
Python while it serves."""

import os

from libc.stdlib cimport free
from libc.string cimport strncpy

from includes.engine cimport (
    mp_engine, mp_settings, mp_settings_init, mp_engine_create, mp_engine_destroy,
    mp_engine_add_listener, mp_channel_run, mp_engine_stop, mp_stats_text,
    mp_thread_stat_names, mp_engine_channel_counters, mp_engine_channel_turn_hist,
    MP_TURN_HIST_BUCKETS, mp_engine_channel_latency, mp_engine_channel_conns,
    mp_command_name, MP_LAT_BUCKETS, MP_LAT_COMMANDS,
    MP_CHANNEL_BUFFER_KINDS, mp_channel_buffer_names, mp_engine_channel_buffers,
    MP_MAX_SHARDS, mp_store_lock_stats,
)
from libc.stdlib cimport malloc
from libc.stdint cimport uint64_t

# Upper bound on the per-channel counters; the C list is far shorter.
DEF MAX_COUNTERS = 256


cdef void _fill_settings(mp_settings *s, dict values) except *:
    cdef bytes b
    for key, value in values.items():
        if key == "maxbytes":
            s.maxbytes = value
        elif key == "maxconns":
            s.maxconns = value
        elif key == "port":
            s.port = value
        elif key == "udpport":
            s.udpport = value
        elif key == "inter":
            b = str(value).encode()[:255]
            strncpy(s.inter, b, 255)
        elif key == "socketpath":
            b = str(value).encode()[:255]
            strncpy(s.socketpath, b, 255)
        elif key == "access":
            s.access = value
        elif key == "backlog":
            s.backlog = value
        elif key == "num_threads":
            s.num_threads = value
        elif key == "reqs_per_event":
            s.reqs_per_event = value
        elif key == "item_size_max":
            s.item_size_max = value
        elif key == "factor":
            s.factor = value
        elif key == "chunk_size":
            s.chunk_size = value
        elif key == "verbose":
            s.verbose = value
        elif key == "idle_timeout":
            s.idle_timeout = value
        elif key == "use_cas":
            s.use_cas = bool(value)
        elif key == "evict_to_free":
            s.evict_to_free = bool(value)
        elif key == "shutdown_command":
            s.shutdown_command = bool(value)
        elif key == "flush_enabled":
            s.flush_enabled = bool(value)
        elif key == "maxconns_fast":
            s.maxconns_fast = bool(value)
        elif key == "io_engine":
            b = str(value).encode()[:15]
            strncpy(s.io_engine, b, 15)
        else:
            raise KeyError(f"unknown engine setting {key!r}")


cdef class Engine:
    """Channels, store and settings of one server (several may share a process)."""

    cdef mp_engine *eng
    cdef object _running

    def __cinit__(self, dict settings=None):
        cdef mp_settings s
        cdef char err[256]
        mp_settings_init(&s)
        _fill_settings(&s, settings or {})
        err[0] = 0
        self.eng = mp_engine_create(&s, err, sizeof(err))
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

    def add_listener(self, int channel, int fd, bint is_unix=False):
        if mp_engine_add_listener(self._live(), channel, fd, is_unix) != 0:
            raise OSError(f"cannot add listener fd {fd} to channel {channel}")

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
