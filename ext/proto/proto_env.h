/* The protocol's narrow door (Pelikan's data_processor): everything the
 * executor (executor.c, meta.c) and a connection's output helpers (conn.c)
 * reach besides the connection itself.  They see no channel, engine,
 * socket or backend: a channel fills one of these and points each of its
 * connections at it (c->env), a test fills one with fakes.
 *
 *   I/O layer (channel, backends)      protocol (parser, executor, meta)
 *   -----------------------------      ---------------------------------
 *   rbuf, wbuf of the connection  <->  mp_process(c) reads rbuf, appends wbuf
 *   channel: counters, latency,   -->  c->env: store, settings, stats,
 *   buffer pool, engine hooks          latency, allocator, hooks
 */
#ifndef MP_PROTO_ENV_H
#define MP_PROTO_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "latency.h"
#include "settings.h"
#include "stats.h"

struct mp_auth;
struct mp_conn;
struct mp_store;

/* Where output buffers come from and go back to (a channel's pool in a
 * server).  get returns a buffer of at least need bytes and its real size
 * in *size, or NULL when memory is exhausted (counted by the allocator). */
typedef struct mp_out_alloc {
    char *(*get)(void *pool, size_t need, uint32_t *size);
    void (*put)(void *pool, char *buf, uint32_t size);
} mp_out_alloc;

/* Plain malloc and free, for connections outside a channel. */
extern const mp_out_alloc mp_out_heap;

/* The few commands that act on the server rather than the store.  Each gets
 * the env's owner (the engine, in a server). */
typedef struct mp_proto_hooks {
    /* "stats" (glen 0) and "stats <group>": STAT lines into c's output,
     * without END; -1 for a group that does not exist */
    int (*stats)(void *owner, struct mp_conn *c, const char *group, size_t glen);
    void (*stats_reset)(void *owner);
    /* "stats conns" from *resume on (0: the start); false when it stopped at
     * c's output mark, *resume then saying where to go on */
    bool (*stats_conns)(void *owner, struct mp_conn *c, uint64_t *resume);
    /* "shutdown [graceful]": asks the server to stop */
    void (*shutdown)(void *owner, bool graceful);
    /* "verbosity <level>" (already capped) and "cache_memlimit <MB>" (in
     * bytes): settings only the server writes */
    void (*set_verbosity)(void *owner, int level);
    void (*set_memlimit)(void *owner, size_t bytes);
    /* "refresh_certs": 0, or -1 with the reply (memcached's message and its
     * "\r\n") in err */
    int (*refresh_certs)(void *owner, char *err, size_t errlen);
} mp_proto_hooks;

/* What commands change for the whole server rather than one connection:
 * one per engine, shared by its channels (a test has its own).  Written by
 * any channel with relaxed atomics. */
struct mp_prefix_stats;
typedef struct mp_proto_shared {
    int lru_crawler_off;             /* "lru_crawler disable" */
    int detail_on;                   /* -D, "stats detail on|off" (prefix.h) */
    struct mp_prefix_stats *prefix;  /* per-prefix stats; NULL: none kept */
    int watch_kinds;                 /* what "watch" connections watch (watch.h) */
    struct mp_watch *watch;          /* their hub; NULL: none */
} mp_proto_shared;

typedef struct mp_proto_env {
    struct mp_store *store;
    const mp_settings *settings;
    mp_thread_stats *stats;           /* written only by the env's thread */
    mp_latency *latency;              /* per command, likewise */
    const mp_out_alloc *alloc;        /* output buffers, from and to pool */
    void *pool;
    const mp_proto_hooks *hooks;
    void *owner;
    /* -Y: where the current password table is published (auth.h; read
     * with an acquire load, a reload replaces it); NULL without -Y */
    struct mp_auth *const *auth;
    mp_proto_shared *shared;
    /* settings->verbose, copied here for the one branch the request path
     * pays while logging is off (log.h); the verbosity hook updates it */
    int verbose;
    /* an io_uring direct descriptor's number in "stats conns" and the log:
     * this plus its index (mp_conn_number, conn.h) */
    uint64_t fixed_id_base;
} mp_proto_env;

#endif
