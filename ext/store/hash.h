/* A shard's chained hash table (store-internal; every function expects the
 * shard lock held).  The table doubles incrementally: while expanding, old
 * buckets below `migrated` have moved to the new table, the rest still live
 * in the old one, and every operation moves a few more, so no caller ever
 * waits for a whole table to be rehashed.  The bigger table is allocated by
 * the caller outside the lock and the old one is handed back (retired) to be
 * freed outside the lock too. */
#ifndef MP_HASH_H
#define MP_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Largest table per shard: 2^30 buckets (8 GiB of pointers) is far beyond
 * any item count a shard can hold, and keeps bucket indices in 32 bits. */
#define MP_HT_MAX_POWER 30

typedef struct mp_htable {
    mp_item **buckets;        /* current table, 2^power entries */
    mp_item **old;            /* previous table while expanding, else NULL */
    mp_item **retired;        /* fully migrated old table, to free unlocked */
    uint64_t migrated;        /* old buckets [0, migrated) are moved */
    uint32_t power;
    uint64_t count;           /* items linked */
} mp_htable;

/* Buckets in a table of the given power. */
#define MP_HT_SIZE(power) ((uint64_t)1 << (power))

void mp_ht_init(mp_htable *t, mp_item **zeroed_buckets, uint32_t power);

static inline bool mp_ht_expanding(const mp_htable *t)
{
    return t->old != NULL;
}

/* Items above 1.5 per bucket make chains long enough to show in lookups:
 * the same threshold memcached uses. */
static inline bool mp_ht_wants_growth(const mp_htable *t)
{
    return t->old == NULL && t->retired == NULL && t->power < MP_HT_MAX_POWER &&
           t->count > (MP_HT_SIZE(t->power) * 3) / 2;
}

mp_item *mp_ht_find(const mp_htable *t, const char *key, size_t nkey, uint64_t hv);
void mp_ht_insert(mp_htable *t, mp_item *it, uint64_t hv);
void mp_ht_remove(mp_htable *t, mp_item *it, uint64_t hv);

/* Starts doubling into `zeroed` (2^(power+1) NULL entries). */
void mp_ht_expand_begin(mp_htable *t, mp_item **zeroed);

/* Moves up to n old buckets; when the last one moved, the old table becomes
 * t->retired.  Returns the number of buckets moved. */
uint64_t mp_ht_migrate(mp_htable *t, uint64_t n);

/* Bytes of bucket arrays currently held. */
size_t mp_ht_bytes(const mp_htable *t);

#endif
