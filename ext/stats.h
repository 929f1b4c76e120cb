/* Per-channel counters.  Each is written only by its own channel thread
 * (plain increments, no atomics on the serving path) and read racily by
 * whoever composes "stats", as memcached's per-thread stats are. */
#ifndef MP_STATS_H
#define MP_STATS_H

#include <stdbool.h>
#include <stdint.h>

/* One X-macro list so "stats", "stats reset" and the metrics exporter cannot
 * drift apart.  Names are memcached's. */
#define MP_THREAD_STATS(X) \
    X(get_cmds) X(get_hits) X(get_misses) X(get_expired) X(get_flushed) \
    X(set_cmds) X(touch_cmds) X(touch_hits) X(touch_misses) \
    X(delete_hits) X(delete_misses) X(incr_hits) X(incr_misses) \
    X(decr_hits) X(decr_misses) X(cas_hits) X(cas_misses) X(cas_badval) \
    X(flush_cmds) X(meta_cmds) X(bytes_read) X(bytes_written) \
    X(conn_yields) X(total_conns) X(rejected_conns) X(idle_kicks) \
    X(store_too_large) X(store_no_memory) X(auth_cmds) X(auth_errors) \
    X(ssl_handshake_errors) X(ssl_new_sessions) \
    X(malloc_fails) X(read_buf_oom) X(response_obj_oom) \
    /* flow control: receives stopped for unprocessed input, output over the
     * mark (a connection stopped until its client reads) */ \
    X(input_pauses) X(output_stalls) \
    /* MegaPipe mechanics, per channel */ \
    X(requests) X(syscalls) X(accepts) X(loop_turns) X(events) \
    X(syscall_wait) X(syscall_read) X(syscall_write) X(syscall_accept) \
    X(syscall_close) X(syscall_ctl) X(sqes)

typedef struct mp_thread_stats {
#define MP_STAT_FIELD(name) uint64_t name;
    MP_THREAD_STATS(MP_STAT_FIELD)
#undef MP_STAT_FIELD
} mp_thread_stats;

/* "stats mpcache": mpcache's own totals, kept out of "stats" so that it
 * carries memcached's names only.  Each is a per-channel counter above,
 * summed: the group shows it as mpcache_<name> (rebased by "stats reset",
 * like every stats line), /metrics as the counter mpcache_<name>_total
 * with this help (raw, from the channels; mpcache/metrics.py reads the
 * list through mpcache._engine.own_totals()).  X(name, help) */
#define MP_OWN_TOTALS(X) \
    X(requests, "Requests executed, all channels.") \
    X(syscalls, "System calls made by the channels' loops.") \
    X(loop_turns, "Event loop turns, all channels.") \
    X(events, "Events (epoll) or completions (io_uring) handled, all channels.") \
    X(accepts, "Connections accepted, all channels.")

typedef struct mp_own_total {
    const char *name;   /* a field of mp_thread_stats */
    const char *help;
} mp_own_total;

/* MP_OWN_TOTALS as a table, ended by a NULL name (stats.c). */
extern const mp_own_total mp_own_totals[];

#endif
