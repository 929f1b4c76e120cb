/* Per-prefix statistics ("stats detail", -D), memcached 1.6.18's
 * stats_prefix.c: a key's prefix is what comes before the first delimiter
 * byte (':' unless -D says otherwise; a key without one, or with a NUL
 * before it, has none), and for each prefix seen while detail is on the
 * text protocol counts gets, hits, sets (the command line of set, add,
 * replace, append, prepend and cas, stored or not) and deletes.  The meta
 * commands, incr, decr and touch count nothing, as in memcached.
 *
 * One table per engine, under its own mutex (memcached's STATS_LOCK).  The
 * request path pays one relaxed load and a branch while detail is off
 * (mp_prefix_on). */
#ifndef MP_PREFIX_H
#define MP_PREFIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_env.h"

struct mp_conn;
typedef struct mp_prefix_stats mp_prefix_stats;

mp_prefix_stats *mp_prefix_create(char delimiter);
void mp_prefix_destroy(mp_prefix_stats *ps);

static inline bool mp_prefix_on(const mp_proto_env *env)
{
    return __atomic_load_n(&env->shared->detail_on, __ATOMIC_RELAXED) != 0;
}

typedef enum { MP_PREFIX_GET, MP_PREFIX_HIT, MP_PREFIX_SET, MP_PREFIX_DEL } mp_prefix_op;

/* Counts op for key's prefix (a hit counts as a get too).  A prefix seen
 * for the first time gets an entry, unless memory is short. */
void mp_prefix_record(mp_prefix_stats *ps, const char *key, size_t nkey, mp_prefix_op op);

/* "stats reset": every prefix goes. */
void mp_prefix_clear(mp_prefix_stats *ps);

/* "stats detail dump": "PREFIX <p> get <n> hit <n> set <n> del <n>" lines
 * in memcached's order (its hash buckets, newest first in each), then END.
 * It stops between buckets once c's output passes its mark and returns
 * false, *resume saying where to go on (0 is the start). */
bool mp_prefix_dump(mp_prefix_stats *ps, struct mp_conn *c, uint64_t *resume);

#endif
