/* The engine: settings, the store, and the channels that serve it.
 *
 *        Python main thread: cli, config, signals, metrics
 *             |  starts N threads, each: with nogil: mp_channel_run(eng, i)
 *   +---------+----------------+-------------------------+
 *   | channel 0                | channel 1               |   one per core
 *   |  epoll/io_uring instance |  epoll/io_uring inst.   |
 *   |  listener partition 0    |  listener partition 1   |   SO_REUSEPORT, same addr:port
 *   |  connection table        |  connection table       |   lwsockets (slot, generation)
 *   |  home of shards 0,2,4,6  |  home of shards 1,3,5,7 |   4 per channel: expiry sweep,
 *   |                          |                         |   table growth
 *   +------------+-------------+------------+------------+
 *                |   any channel serves any key:          |
 *                +--> shard lock for the critical section <+
 */
#ifndef MP_ENGINE_H
#define MP_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "proto/auth.h"
#include "proto/proto_env.h"
#include "settings.h"
#include "stats.h"
#include "store/store.h"

typedef struct mp_channel mp_channel;

typedef struct mp_engine {
    mp_settings settings;
    mp_store *store;
    int nchannels;
    mp_channel **channels;
    int use_uring;               /* backend chosen at create (settings.io_engine) */
    char engine_desc[256];       /* features of the backend in use ("stats channels") */
    int control_fd;              /* eventfd: readable when "shutdown" was received */
    volatile int curr_conns;     /* atomic */
    mp_thread_stats reset_base;  /* counters at the last "stats reset" */
    /* the store keeps monotonic totals: "stats reset" records them here
     * and stats.c subtracts (per engine, so embedded servers in one
     * process never share a baseline) */
    mp_store_stats store_base;
    mp_slab_class_stats class_base[MP_MAX_SLAB_CLASSES];
    bool reset_listeners;        /* the listeners' share of total_connections went too */
    mp_proto_shared shared;      /* what commands change server-wide (proto_env.h) */
    mp_auth *auth;               /* -Y: the password table in use, else NULL */
    struct mp_tls_server *tls;   /* -Z: the context connections get (tls.c), else NULL */
} mp_engine;

mp_engine *mp_engine_create(const mp_settings *settings, char *err, size_t errlen);
/* The same with -Z's context made ahead (tls.h, mp_tls_prepare): the
 * engine takes its own reference; NULL makes one from the files. */
mp_engine *mp_engine_create_tls(const mp_settings *settings, void *tls_ctx, char *err,
                                size_t errlen);
void mp_engine_destroy(mp_engine *eng);

/* Gives channel `ch` a listening socket (already bound, listening,
 * nonblocking); with tls (-Z, not a notls: address) its connections speak
 * TLS. */
int mp_engine_add_listener(mp_engine *eng, int ch, int fd, int is_unix, int tls);
/* Gives channel `ch` a bound UDP socket (-U) of its own. */
int mp_engine_add_udp(mp_engine *eng, int ch, int fd);

/* Runs channel `ch`'s loop on the calling thread until mp_engine_stop(). */
int mp_channel_run(mp_engine *eng, int ch);

/* Asks every channel to stop (thread-safe, async-signal-safe). */
void mp_engine_stop(mp_engine *eng);

/* -Y, on SIGHUP: reads settings.auth_file again and publishes the new
 * table (thread-safe against the channels, one caller at a time).  As in
 * memcached, a file that cannot be read or is malformed keeps the table in
 * use; returns -1 then, with its message in err.  0 without -Y. */
int mp_engine_reload_auth(mp_engine *eng, char *err, size_t errlen);

/* "shutdown" command: wakes whoever waits on control_fd. */
void mp_engine_request_shutdown(mp_engine *eng, int graceful);

/* One channel's raw counters (monotonic, not rebased by "stats reset"), in
 * MP_THREAD_STATS order, named by mp_thread_stat_names; returns how many.
 * Racy reads of another thread's counters, as memcached's stats are. */
extern const char *const mp_thread_stat_names[];
int mp_engine_channel_counters(mp_engine *eng, int ch, uint64_t *out, int max);

/* Completions (events) per loop turn of one channel: bucket 0 counts turns
 * with none, bucket b (1..7) turns with 2^(b-1) .. 2^b - 1, the last 64 or
 * more.  Returns the number of buckets. */
#define MP_TURN_HIST_BUCKETS 8
int mp_engine_channel_turn_hist(mp_engine *eng, int ch, uint64_t *out);

/* Per-command latency of one channel (latency.h): hist gets
 * MP_LAT_COMMANDS x MP_LAT_BUCKETS counts in command-table order, sum_ns
 * MP_LAT_COMMANDS sums.  Returns the number of commands in the table. */
int mp_engine_channel_latency(mp_engine *eng, int ch, uint64_t *hist, uint64_t *sum_ns);

/* Open connections of one channel. */
int mp_engine_channel_conns(mp_engine *eng, int ch);

/* Bytes of connection buffers one channel holds, by kind, named by
 * mp_channel_buffer_names (input, output, spare in the pool, the backend's
 * receive area); returns how many. */
#define MP_CHANNEL_BUFFER_KINDS 4
extern const char *const mp_channel_buffer_names[MP_CHANNEL_BUFFER_KINDS];
int mp_engine_channel_buffers(mp_engine *eng, int ch, uint64_t *out);

/* Sums every channel's counters. */
void mp_engine_thread_stats(mp_engine *eng, mp_thread_stats *out);
void mp_engine_reset_stats(mp_engine *eng);

/* Composes a "stats [group]" reply (without the trailing END) into buf;
 * returns bytes written, or -1 for an unknown group. Implemented in stats.c. */
struct mp_conn;
int mp_stats_compose(mp_engine *eng, struct mp_conn *c, const char *group, size_t glen);

/* "stats reset": the engine's per-channel counters and the store's totals
 * (total_items, evictions, ...) restart from zero, as in memcached. */
void mp_stats_reset(mp_engine *eng);

/* "stats conns" from *resume on (0: from the start), stopping once the
 * output is past MP_OUT_HIGHWATER; returns true when it is complete, else
 * *resume says where to go on.  stats.c. */
bool mp_stats_compose_conns(mp_engine *eng, struct mp_conn *c, uint64_t *resume);

/* The same reply ("STAT ..." lines and END) for Python (embedded API, metrics):
 * a malloc'd buffer the caller frees, *outlen its length; NULL for an unknown
 * group.  Implemented in stats.c. */
char *mp_stats_text(mp_engine *eng, const char *group, size_t glen, size_t *outlen);

#endif
