#include <string.h>

#include "debug.h"
#include "evict.h"

/* Queue links: qprev points toward the head (newer), qnext toward the tail. */

#define NEXT(it) mp_qitem(qb, (it)->qnext)
#define PREV(it) mp_qitem(qb, (it)->qprev)
#define LINK(it) mp_qlink_of(qb, (it))

static inline void fifo_push(mp_qbase qb, mp_fifo *f, mp_item *it)
{
    MP_ASSERT(it->qprev == 0 && it->qnext == 0 && f->head != it);
    it->qprev = 0;
    it->qnext = LINK(f->head);
    if (f->head != NULL)
        f->head->qprev = LINK(it);
    else
        f->tail = it;
    f->head = it;
    f->n++;
}

/* An item unlinked from the queue it is not in would corrupt both: its
 * neighbours must point back at it, or the queue's ends be it. */
static inline void fifo_check_linked(mp_qbase qb, const mp_fifo *f, const mp_item *it)
{
    (void)qb;
    MP_ASSERT(f->n > 0);
    MP_ASSERT(it->qprev != 0 ? NEXT(PREV(it)) == it : f->head == it);
    MP_ASSERT(it->qnext != 0 ? PREV(NEXT(it)) == it : f->tail == it);
}

static inline void fifo_unlink(mp_qbase qb, mp_fifo *f, mp_item *it)
{
    fifo_check_linked(qb, f, it);
    mp_item *prev = PREV(it), *next = NEXT(it);
    if (prev != NULL)
        prev->qnext = it->qnext;
    else
        f->head = next;
    if (next != NULL)
        next->qprev = it->qprev;
    else
        f->tail = prev;
    it->qnext = it->qprev = 0;
    f->n--;
}

void mp_s3_insert(mp_s3 *q, mp_item *it, bool to_main)
{
    if (to_main) {
        it->freq |= MP_FREQ_MAIN;
        fifo_push(q->qb, &q->main, it);
    } else {
        it->freq &= (uint8_t)~MP_FREQ_MAIN;
        fifo_push(q->qb, &q->small, it);
    }
}

void mp_s3_remove(mp_s3 *q, mp_item *it)
{
    fifo_unlink(q->qb, (it->freq & MP_FREQ_MAIN) ? &q->main : &q->small, it);
}

void mp_s3_replace(mp_s3 *q, mp_item *old, mp_item *n)
{
    mp_qbase qb = q->qb;
    mp_fifo *f = (old->freq & MP_FREQ_MAIN) ? &q->main : &q->small;
    fifo_check_linked(qb, f, old);
    n->freq = old->freq;
    n->qprev = old->qprev;
    n->qnext = old->qnext;
    mp_item *prev = PREV(n), *next = NEXT(n);
    if (prev != NULL)
        prev->qnext = LINK(n);
    else
        f->head = n;
    if (next != NULL)
        next->qprev = LINK(n);
    else
        f->tail = n;
    old->qnext = old->qprev = 0;
}

static inline bool small_turn(const mp_s3 *q)
{
    if (q->small.n == 0)
        return false;
    if (q->main.n == 0)
        return true;
    return (uint64_t)q->small.n * 100 >=
           (uint64_t)(q->small.n + q->main.n) * MP_S3_SMALL_PERCENT;
}

mp_item *mp_s3_victim(mp_s3 *q, int max_steps, mp_s3_judge judge, void *ctx,
                      bool *dead, bool *from_small)
{
    int steps = 0;
    uint32_t skips = 0;
    uint32_t total = q->small.n + q->main.n;

    while (q->small.n + q->main.n > 0) {
        bool use_small = small_turn(q);
        mp_fifo *f = use_small ? &q->small : &q->main;
        mp_item *t = f->tail;
        int verdict = judge(ctx, t);
        if (verdict == MP_S3_DEAD) {
            *dead = true;
            *from_small = use_small;
            return t;
        }
        if (verdict == MP_S3_SKIP) {
            if (++skips > total)
                return NULL;
            fifo_unlink(q->qb, f, t);
            fifo_push(q->qb, f, t);
            continue;
        }
        bool forced = steps >= max_steps;
        if (!forced && (t->freq & MP_FREQ_MASK) > 0) {
            steps++;
            /* read since it was last here: its lap counts as an access, so
             * the tails' times (mp_s3_tail_time, the age shard_rebalance
             * compares) say how long a class keeps what is not read.
             * Without it a hot item kept lap after lap shows the time it
             * was stored, and its class looked idle (the hit path moves
             * the time once a minute at most, as memcached's does) */
            t->time = mp_current_time;
            fifo_unlink(q->qb, f, t);
            if (use_small) {
                /* read while in the small queue: promote, keeping its count */
                t->freq |= MP_FREQ_MAIN;
            } else {
                t->freq--;
            }
            fifo_push(q->qb, &q->main, t);
            continue;
        }
        *dead = false;
        *from_small = use_small;
        return t;
    }
    return NULL;
}

mp_rel_time mp_s3_tail_time(const mp_s3 *q, bool *empty)
{
    mp_rel_time t = 0;
    bool have = false;
    if (q->small.tail != NULL) {
        t = q->small.tail->time;
        have = true;
    }
    if (q->main.tail != NULL && (!have || q->main.tail->time < t)) {
        t = q->main.tail->time;
        have = true;
    }
    *empty = !have;
    return t;
}

#ifdef MPCACHE_DEBUG
static void fifo_check(mp_qbase qb, const mp_fifo *f, int cls, bool main)
{
    uint32_t n = 0;
    const mp_item *prev = NULL;
    for (const mp_item *it = f->head; it != NULL; prev = it, it = NEXT(it), n++) {
        MP_ASSERT(n < f->n && PREV(it) == prev && it->clsid == cls);
        MP_ASSERT((it->iflags & (MP_IT_LINKED | MP_IT_FREE | MP_IT_PENDING)) == MP_IT_LINKED);
        MP_ASSERT(((it->freq & MP_FREQ_MAIN) != 0) == main);
    }
    MP_ASSERT(n == f->n && f->tail == prev);
}

void mp_s3_check(const mp_s3 *q, int cls)
{
    fifo_check(q->qb, &q->small, cls, false);
    fifo_check(q->qb, &q->main, cls, true);
}
#endif

/* ---- ghost ---- */

void mp_ghost_init(mp_ghost *g, uint64_t *slots, uint32_t nbuckets)
{
    g->slots = slots;
    g->bucket_mask = nbuckets - 1;
    g->clock = 0;
}

/* The shard comes from the top bits and the bucket from the low ones: the
 * fingerprint takes the middle, independent of both. */
static inline uint32_t ghost_fp(uint64_t hv)
{
    uint32_t fp = (uint32_t)(hv >> 24);
    return fp ? fp : 1;
}

void mp_ghost_add(mp_ghost *g, uint64_t hv)
{
    if (g->slots == NULL)
        return;
    uint64_t *b = &g->slots[(hv & g->bucket_mask) * MP_GHOST_WAYS];
    uint32_t fp = ghost_fp(hv);
    int victim = 0;
    uint32_t oldest_age = 0;
    for (int i = 0; i < MP_GHOST_WAYS; i++) {
        uint64_t e = b[i];
        if (e == 0 || (uint32_t)(e >> 32) == fp) {
            victim = i;
            break;
        }
        uint32_t age = g->clock - (uint32_t)e;
        if (age >= oldest_age) {
            oldest_age = age;
            victim = i;
        }
    }
    b[victim] = ((uint64_t)fp << 32) | g->clock;
    g->clock++;
}

bool mp_ghost_take(mp_ghost *g, uint64_t hv, uint32_t window)
{
    if (g->slots == NULL)
        return false;
    uint64_t *b = &g->slots[(hv & g->bucket_mask) * MP_GHOST_WAYS];
    uint32_t fp = ghost_fp(hv);
    for (int i = 0; i < MP_GHOST_WAYS; i++) {
        uint64_t e = b[i];
        if (e != 0 && (uint32_t)(e >> 32) == fp) {
            b[i] = 0;
            return g->clock - (uint32_t)e < window;
        }
    }
    return false;
}
