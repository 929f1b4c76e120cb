/* S3-FIFO eviction (Yang et al., SOSP 2023), one instance per shard per slab
 * class, plus one ghost per shard.  Store-internal; shard lock held.
 *
 *   new item --(key in ghost?)--no--> small FIFO (~10%) --tail, freq>=1--> main
 *                 |                         |tail, freq 0: evict, hash -> ghost
 *                 +--yes--> main FIFO --tail: freq>0 ? freq--, back to head : evict
 *
 * Most cached keys in skewed workloads are read rarely or never; the small
 * queue lets them go after a short stay without touching the main queue,
 * where frequently read keys are kept by lazy reinsertion (no list move on a
 * hit, unlike LRU: a hit is one byte written under the lock).
 *
 * item->freq holds the policy state: bits 0-1 the access count (0..3),
 * bit 2 "in main".  An item kept for its reads is stamped as accessed when
 * it goes back to the head (mp_s3_victim). */
#ifndef MP_EVICT_H
#define MP_EVICT_H

#include <stdbool.h>
#include <stdint.h>

#include "store.h"

#define MP_FREQ_MAX  3
#define MP_FREQ_MASK 0x03
#define MP_FREQ_MAIN 0x04

/* The paper's small-queue share: 10% of the class's items. */
#define MP_S3_SMALL_PERCENT 10

typedef struct mp_fifo {
    mp_item *head;    /* newest */
    mp_item *tail;    /* oldest: next to be examined */
    uint32_t n;
} mp_fifo;

typedef struct mp_s3 {
    mp_fifo small, main;
    mp_qbase qb;      /* what the items' links are relative to */
} mp_s3;

/* Ghost: fingerprints of keys recently evicted from the small queue, so a key
 * that comes back soon goes straight to main.  A bucketed table of
 * (fingerprint, insertion stamp) pairs; an entry is alive while fewer than
 * `window` insertions happened after it, which approximates the paper's
 * ghost FIFO as long as the main queue without any list or allocation. */
#define MP_GHOST_WAYS 8          /* one 64-byte cache line per bucket */
typedef struct mp_ghost {
    uint64_t *slots;             /* nbuckets * MP_GHOST_WAYS */
    uint32_t bucket_mask;
    uint32_t clock;              /* insertions so far */
} mp_ghost;

void mp_s3_insert(mp_s3 *q, mp_item *it, bool to_main);
void mp_s3_remove(mp_s3 *q, mp_item *it);
/* n takes old's place in its queue, with its policy state. */
void mp_s3_replace(mp_s3 *q, mp_item *old, mp_item *n);

/* A hit: one more access (saturating).  No list operation. */
static inline void mp_s3_hit(mp_item *it)
{
    if ((it->freq & MP_FREQ_MASK) < MP_FREQ_MAX)
        it->freq++;
}

/* The caller's opinion of a queued item met during an eviction scan. */
#define MP_S3_LIVE 0     /* apply the policy */
#define MP_S3_DEAD 1     /* expired or flushed: take it now, whatever its state */
#define MP_S3_SKIP 2     /* must not be evicted now: rotate it to the head */
typedef int (*mp_s3_judge)(void *ctx, mp_item *it);

/* Runs S3-FIFO until it picks a victim, which stays queued (the caller unlinks
 * it).  Reinsertion moves are bounded by max_steps, after which the current
 * candidate is taken even with freq > 0 (bounded time under the lock beats a
 * perfect choice).  *dead tells whether the victim was judged dead,
 * *from_small whether it leaves the small queue (its key goes to the ghost).
 * NULL when the queues are empty or every item must be skipped. */
mp_item *mp_s3_victim(mp_s3 *q, int max_steps, mp_s3_judge judge, void *ctx,
                      bool *dead, bool *from_small);

/* Oldest access time among the two tails (for "age"); 0 if empty. */
mp_rel_time mp_s3_tail_time(const mp_s3 *q, bool *empty);

static inline uint32_t mp_s3_count(const mp_s3 *q)
{
    return q->small.n + q->main.n;
}

#ifdef MPCACHE_DEBUG
/* Debug builds, shard lock held: both queues of class cls walked, every
 * link and count checked, each item linked, of the class and in the queue
 * its MP_FREQ_MAIN bit names (debug.h). */
void mp_s3_check(const mp_s3 *q, int cls);
#endif

/* Ghost operations; fingerprints come from the key's 64-bit hash. */
void mp_ghost_init(mp_ghost *g, uint64_t *slots, uint32_t nbuckets);
void mp_ghost_add(mp_ghost *g, uint64_t hv);
/* True (and forgets it) if hv was added within the last `window` additions. */
bool mp_ghost_take(mp_ghost *g, uint64_t hv, uint32_t window);

#endif
