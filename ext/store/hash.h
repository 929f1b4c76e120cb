/* A shard's key index (store-internal; every function expects the shard lock
 * held): an open-addressed table of item offsets, outside the item memory as
 * memcached's hash table is outside -m, so an item carries no chain link.
 *
 * A bucket is one cache line: a count of items that went past it and seven
 * slots.  A slot holds 16 bits of the key's hash (a tag) and the item's
 * offset in the arena in 8-byte units, so a lookup reads the bucket, compares
 * tags and touches only the items whose tag matches.  A full home bucket
 * sends an insert to the next one and counts it in "over"; a lookup moves on
 * only while that count says something went past.  Removal empties the slot
 * and takes the count back along the way, so nothing ever moves and a walk
 * can remove what it visits.
 *
 * The table doubles incrementally: while expanding, old buckets below
 * `migrated` have moved to the new table, the rest still live in the old
 * one, an item is in exactly one of the two, and every operation moves a few
 * more, so no caller ever waits for a whole table to be rehashed.  The bigger
 * table is allocated by the caller outside the lock and the old one is handed
 * back (retired) to be freed outside the lock too. */
#ifndef MP_HASH_H
#define MP_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define MP_HT_WAYS 7

typedef struct mp_htbucket {
    uint64_t over;                 /* inserts that went past this bucket */
    uint64_t slot[MP_HT_WAYS];     /* 0, or tag << 48 | (offset / 8 + 1) */
} mp_htbucket;

_Static_assert(sizeof(mp_htbucket) == 64, "a bucket is one cache line");

/* Largest table per shard: 2^28 buckets (16 GiB, 1.6 billion items) is far
 * beyond what a shard can hold, and keeps bucket indices in 32 bits. */
#define MP_HT_MAX_POWER 28

/* Reported as a chained table of memcached's (hash_power_level): a bucket of
 * seven takes the load of four chains at memcached's 1.5 items per bucket,
 * so the level starts at 16 and doubles at the same item counts. */
#define MP_HT_CHAIN_SHIFT 2

typedef struct mp_htable {
    mp_htbucket *buckets;     /* current table, 2^power buckets */
    mp_htbucket *old;         /* previous table while expanding, else NULL */
    mp_htbucket *retired;     /* fully migrated old table, to free unlocked */
    const char *base;         /* the arena: slots count from here */
    uint64_t migrated;        /* old buckets [0, migrated) are moved */
    uint32_t power;
    uint64_t count;           /* items linked */
} mp_htable;

/* Buckets in a table of the given power. */
#define MP_HT_SIZE(power) ((uint64_t)1 << (power))

/* Tables are mapped, not taken from malloc: a doubling frees the old one
 * (from another thread than the one that allocated it, often), and freed
 * heap memory of that size stays in the process.  Zeroed; NULL on failure.
 * Outside the shard lock (system calls). */
mp_htbucket *mp_ht_alloc(uint32_t power);
void mp_ht_free(mp_htbucket *tab, uint32_t power);

void mp_ht_init(mp_htable *t, const char *base, mp_htbucket *zeroed_buckets, uint32_t power);

static inline bool mp_ht_expanding(const mp_htable *t)
{
    return t->old != NULL;
}

/* Six items a bucket (86% of the slots), memcached's 1.5 per chain. */
static inline bool mp_ht_wants_growth(const mp_htable *t)
{
    return t->old == NULL && t->retired == NULL && t->power < MP_HT_MAX_POWER &&
           t->count > MP_HT_SIZE(t->power) * 6;
}

mp_item *mp_ht_find(const mp_htable *t, const char *key, size_t nkey, uint64_t hv);
void mp_ht_insert(mp_htable *t, mp_item *it, uint64_t hv);
void mp_ht_remove(mp_htable *t, mp_item *it, uint64_t hv);
/* n takes linked old's slot (same key). */
void mp_ht_replace(mp_htable *t, mp_item *old, mp_item *n, uint64_t hv);

/* Starts doubling into `zeroed` (2^(power+1) zeroed buckets). */
void mp_ht_expand_begin(mp_htable *t, mp_htbucket *zeroed);

/* Moves up to n old buckets; when the last one moved, the old table becomes
 * t->retired.  Returns the number of buckets moved. */
uint64_t mp_ht_migrate(mp_htable *t, uint64_t n);

/* Bytes of bucket arrays currently held. */
size_t mp_ht_bytes(const mp_htable *t);

/* The items stored in bucket pos of the current table (at most
 * MP_HT_WAYS, into out), whatever their home: a sweep acts on them after. */
int mp_ht_bucket_items(const mp_htable *t, uint64_t pos, mp_item **out);

/* Calls fn for each item whose home is bucket b of the current table
 * (old = false) or of the old one while expanding (old = true), stopping at
 * the first non-zero return, which it returns.  fn must not link or unlink. */
typedef int (*mp_ht_visit_fn)(void *arg, mp_item *it);
int mp_ht_visit_home(const mp_htable *t, bool old, uint64_t b, mp_ht_visit_fn fn, void *arg);

#endif
