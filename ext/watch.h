/* "watch": memcached 1.6.18's log watchers (logger.c).  A connection that
 * sends "watch [kinds]" gets OK and from then on a line per event of those
 * kinds, in memcached's format ("ts=<sec>.<usec> gid=<n> type=..."), and
 * nothing else: what it sends is read and ignored, as memcached's logger
 * thread does.  Kinds, memcached's words and bits: fetchers (item_get, the
 * default), mutations (item_store), evictions (eviction), connevents
 * (conn_new, conn_close); sysevents, rawcmds and the proxy kinds are
 * accepted and, as in a 1.6.18 without its proxy, produce nothing here
 * (mpcache has no LRU crawler or slab mover to report on; 1.6.18 never
 * logs rawcmds).
 *
 * Events are formatted where they happen, on any channel (evictions under
 * a shard lock), and appended to each interested watcher's buffer (256 KiB,
 * memcached's watcher_logbuf_size) under the hub's mutex; a full buffer
 * skips lines and says "skipped=<n>" before the next line that fits.  The
 * watcher's own channel moves its buffer into the connection's output at
 * the end of each turn and at maintenance, never past the output mark.
 * While nobody watches a kind, its event costs one relaxed load and a
 * branch (mp_watch_on). */
#ifndef MP_WATCH_H
#define MP_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto_env.h"

struct mp_conn;
struct mp_item;
typedef struct mp_watch mp_watch;

/* memcached's LOG_* bits */
#define MP_WATCH_SYSEVENTS   (1 << 1)
#define MP_WATCH_FETCHERS    (1 << 2)
#define MP_WATCH_MUTATIONS   (1 << 3)
#define MP_WATCH_CONNEVENTS  (1 << 5)
#define MP_WATCH_EVICTIONS   (1 << 6)
#define MP_WATCH_RAWCMDS     (1 << 9)
#define MP_WATCH_PROXYREQS   (1 << 10)
#define MP_WATCH_PROXYEVENTS (1 << 11)
#define MP_WATCH_PROXYUSER   (1 << 12)

/* memcached's WATCHER_LIMIT */
#define MP_WATCH_MAX 20

mp_watch *mp_watch_create(void);
void mp_watch_destroy(mp_watch *w);

/* Does anyone watch this kind of event? */
static inline bool mp_watch_on(const mp_proto_env *env, int kind)
{
    const int *k = &env->shared->watch_kinds;
    return (__atomic_load_n(k, __ATOMIC_RELAXED) & kind) != 0;
}

/* c becomes a watcher of kinds, drained by `owner` (its channel).
 * 0, or -1 at MP_WATCH_MAX watchers, -2 without memory. */
int mp_watch_add(mp_watch *w, int *kinds_out, struct mp_conn *c, void *owner, int kinds);
/* c closes (mp_proto_reset). */
void mp_watch_remove(mp_watch *w, int *kinds_out, struct mp_conn *c);

/* Hands what waits for the watchers owned by `owner` to deliver(arg, c,
 * bytes, n) (in at most two pieces each), no more than each connection's
 * output has room for below its mark.  deliver runs under the hub's mutex:
 * it may append to c's output and nothing else (a send that fails would
 * close c, which takes the mutex again); the caller sends afterwards.
 * Returns MP_WATCH_OWNS when `owner` has watchers, plus MP_WATCH_LEFT when
 * lines still wait. */
#define MP_WATCH_OWNS 1
#define MP_WATCH_LEFT 2
int mp_watch_drain(mp_watch *w, void *owner,
                   void (*deliver)(void *arg, struct mp_conn *c, const char *p, size_t n),
                   void *arg);

/* For "stats", in memcached's order: log_worker_dropped (always 0: an
 * event is never dropped before a watcher's buffer), log_worker_written,
 * log_watcher_skipped, log_watcher_sent, log_watchers. */
void mp_watch_counters(mp_watch *w, uint64_t out[5]);
/* "stats reset": the counts restart (not the number of watchers). */
void mp_watch_reset(mp_watch *w);

/* ---- the events (callers test mp_watch_on first) ---- */

/* memcached's do_item_get: status 0 not_found, 1 found, 2 flushed, 3
 * expired; it is the item found (NULL otherwise). */
#define MP_WATCH_NOT_FOUND 0
#define MP_WATCH_FOUND     1
#define MP_WATCH_FLUSHED   2
#define MP_WATCH_EXPIRED   3
void mp_watch_item_get(struct mp_conn *c, const char *key, size_t nkey, int status,
                       const struct mp_item *it);
/* memcached's do_store_item: op an mp_store_op, result an mp_store_result
 * (0 for memcached's NOT_STORED); it is the item the command carried. */
void mp_watch_item_store(struct mp_conn *c, const char *key, size_t nkey, int op, int result,
                         const struct mp_item *it);
/* a store refused before an item exists (too large, no memory): memcached
 * logs it with no item, its class from the connection's number */
void mp_watch_item_refused(struct mp_conn *c, const char *key, size_t nkey, int op, int result);
/* The lookup memcached's commands start with (do_item_get), as a watcher
 * of fetchers sees it, shard lock held: found, or why not.  It drops an
 * expired or flushed item, which the command would find gone anyway. */
struct mp_shard;
void mp_watch_lookup(struct mp_conn *c, struct mp_shard *s, const char *key, size_t nkey,
                     uint64_t hv);
/* a miss's MP_MISS_* as the status above */
int mp_watch_miss_status(int why);

/* A store as a watcher of mutations sees it, shard lock held around both:
 * begin copies the item the command carries (the store consumes it), end
 * logs what was stored: for a stored append or prepend the item it made,
 * as memcached logs it, else the command's. */
typedef struct mp_watch_store {
    uint32_t nbytes, exptime;
    uint8_t nkey, clsid;
    char key[MP_KEY_MAX_LENGTH];
} mp_watch_store;
void mp_watch_store_begin(mp_watch_store *w, const struct mp_item *it);
void mp_watch_store_end(mp_watch_store *w, struct mp_conn *c, struct mp_shard *s, uint64_t hv,
                        int op, int result);

/* an eviction (store.c's hook, shard lock held) */
void mp_watch_eviction(mp_watch *w, const struct mp_item *it);
/* conn_new, or conn_close with its reason (MP_CLOSE_*, conn.h) */
void mp_watch_conn(struct mp_conn *c, bool closed, int reason);

#endif
