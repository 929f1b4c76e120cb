/* The item store.
 *
 * Locks and ownership (the rules every function here relies on)
 * ---------------------------------------------------------------
 *   shard lock (one per shard, pthread mutex)
 *       protects the shard's hash table, its S3-FIFO queues and ghost, its
 *       statistics, the slab metadata of every page the shard owns, and every
 *       linked item of the shard.  A channel takes it for one command's
 *       critical section (how the protocol does: executor.h); no system call
 *       and no malloc happen while it is held.
 *   arena pool lock (slabs.c)
 *       a leaf: taken under a shard lock, only to take or give back a page.
 *   two shard locks
 *       never waited for together: a shard that must steal a page from another
 *       shard only pthread_mutex_trylock()s the other one, so no lock cycle
 *       can form.
 *   pending items (MP_IT_PENDING)
 *       belong to the connection that allocated them, between mp_store_alloc
 *       and mp_store_item / mp_store_release; no lock is held while their data
 *       arrives.  A slab holding a pending item is never emptied for reuse, so
 *       the connection's pointer stays valid.
 *   referenced items (slab meta "refs" > 0)
 *       a reply sending the value from the item itself holds a reference
 *       (mp_item_ref under the shard lock, mp_store_unref takes the lock),
 *       counted in the item's slab (slabs.h), a plain counter under the shard
 *       lock, no atomics; the item itself carries no count.  Readers of a
 *       referenced item's key and value need no lock: nothing writes them
 *       (incr/decr make a new item instead of writing in place into a
 *       referenced slab).  Unlinking any item of a referenced slab takes it
 *       out of the table, queues and statistics as usual but leaves its chunk
 *       allocated (a zombie); the slab's last unref frees them.  Eviction
 *       skips the items of a referenced slab, and the slab is pinned like a
 *       pending item's (slab meta "pinned"), so it is never emptied nor its
 *       page moved to another class or shard; hence the page's owner, which
 *       mp_store_unref reads without a lock to find the shard, does not
 *       change while a reference is held.
 *       The old item of an append/prepend/incr holds a reference of the
 *       store's own while the new one is being allocated under the same lock.
 *   global atomics
 *       the cas counter, flush markers (oldest_live, oldest_cas), the limit.
 *   start-up / shutdown
 *       mp_store_create / mp_store_destroy run with no other thread using the
 *       store, and may allocate.
 *   allocations outside locks
 *       a bigger hash table (calloc) is made by mp_store_alloc or
 *       mp_store_maintain before taking the lock and swapped in under it; the
 *       old one is freed after unlocking.
 *
 * Making room for an item of class c in shard s (shard_alloc):
 *   1. a free chunk of c, or the rest of c's current slab;
 *   2. a new slab for c: a free unit of s, or a page from the global budget;
 *   3. an expired or flushed item at the tails of c's queues;
 *   4. (-M stops here: out of memory) evict from c by S3-FIFO;
 *   5. c has nothing to evict: empty a slab/page of another class of s;
 *   6. s has nothing to give: take a page from another shard (trylock).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "debug.h"
#include "decimal.h"
#include "evict.h"
#include "hash.h"
#include "slabs.h"
#include "store.h"

/* memcached starts with 2^16 buckets; the shards share that start (counted
 * in memcached's chains, hash.h). */
#define MP_HT_INITIAL_TOTAL_POWER 16
#define MP_HT_MIN_POWER 6
/* Buckets moved per link while a table doubles: inserts drive growth, so
 * they pay for it, a few pointer moves each. */
#define MP_HT_MIGRATE_PER_LINK 2
/* Buckets moved per maintenance call (every ~100 ms): finishes a doubling
 * of a quiet shard in seconds, each call well under a millisecond. */
#define MP_HT_MIGRATE_PER_MAINTAIN 8192
/* Expiry sweep per maintenance call: buckets looked at and items reclaimed. */
#define MP_SWEEP_BUCKETS 4096
#define MP_SWEEP_MAX_RECLAIM 512
/* memcached's lru_pull_tail looks at 5 tail items for an expired one. */
#define MP_TAIL_SEARCH 5
/* S3-FIFO reinsertions per eviction before the candidate is taken anyway.
 * Each item is promoted out of the small queue once and each reinsertion in
 * main is paid for by an earlier hit, so the work is O(1) per operation on
 * average; the cap only bounds one unlucky eviction (~1000 pointer moves,
 * some microseconds), and is high enough that a burst of hot items at a
 * tail is promoted rather than evicted. */
#define MP_EVICT_STEPS 1024
/* Rounds of the make-room loop: each round frees or gains memory. */
#define MP_ALLOC_ROUNDS 16
/* Ghost: one fingerprint (8 bytes) per 512 bytes of -m, i.e. 1.5% of the
 * limit, remembering about as many evicted keys as a cache of ~500-byte
 * items holds. */
#define MP_GHOST_BYTES_PER_ENTRY 512
#define MP_GHOST_MIN_BUCKETS 64
/* How many candidates a victim scan looks at: enough to find a cheap page or
 * slab, few enough to keep the scan short under the lock. */
#define MP_VICTIM_SCAN 32
/* memcached's ITEM_UPDATE_INTERVAL: an item's access time is refreshed at
 * most this often (seconds). */
#define MP_ITEM_UPDATE_INTERVAL 60
/* Rebalancing between classes (memcached's slab automover, done inline):
 * a class about to evict takes a slab from another class instead when that
 * class's oldest item is more than twice as old (plus a margin of whole
 * seconds, the clock's resolution), or when a class of chunks at least
 * MP_WEIGHT_SIZES times larger holds its memory more than MP_WEIGHT_RATIO
 * times as long per set (class_weight).  Checked on every 16th eviction of
 * a class, which is often enough to follow a shift in value sizes within
 * seconds and keeps the scan of ~70 classes off the common path. */
#define MP_REBALANCE_EVERY 16
#define MP_REBALANCE_MARGIN 2
#define MP_WEIGHT_RATIO 2.0
#define MP_WEIGHT_SIZES 4
/* Slabs moved per maintenance call at most: each move evicts up to a few
 * hundred items under the lock. */
#define MP_REBALANCE_PER_MAINTAIN 4

typedef struct class_stats {
    uint64_t evicted, evicted_nonzero, evicted_unfetched, evicted_active;
    uint64_t reclaimed, expired_unfetched, crawler_reclaimed, outofmemory;
    uint64_t crawler_items_checked, lrutail_reflocked;
    mp_rel_time evicted_time;
    uint64_t get_hits, cmd_set, delete_hits, incr_hits, decr_hits, cas_hits,
             cas_badval, touch_hits;
    uint32_t evict_tick;         /* evictions until the next rebalance check */
    uint64_t set_clock;          /* the shard's set clock at the class's last set */
    uint64_t set_gap16;          /* sets of the shard between two of the class's,
                                    a moving average (1/8), in sixteenths */
    uint64_t evicted_seen;       /* "evicted" at the last maintenance call */
} class_stats;

struct mp_shard {
    pthread_mutex_t lock;
    mp_store *st;
    int index;
    mp_htable ht;
    mp_slabs slabs;
    mp_ghost ghost;
    uint64_t curr_items, total_items, bytes;
    uint64_t set_clock;          /* items allocated for sets so far (class_count_set) */
    uint64_t sweep_pos;
    int grow_hint;               /* written under the lock, read without */
    uint64_t lock_acquires, lock_waits;   /* written under the lock, read without */
    int growing;                 /* atomic: a thread is allocating a bigger table */
    mp_s3 q[MP_MAX_SLAB_CLASSES];
    class_stats cs[MP_MAX_SLAB_CLASSES];
} __attribute__((aligned(64)));

struct mp_store {
    mp_arena arena;
    mp_shard *shards;
    int nshards;
    int shard_bits;
    bool use_cas;
    bool evict_to_free;
    uint32_t item_size_max;
    uint64_t cas_id;             /* atomic */
    mp_rel_time oldest_live;     /* atomic: flush_all marker */
    uint64_t oldest_cas;         /* atomic */
    uint64_t limit;              /* atomic: bytes, for stats */
    uint64_t too_large, no_memory;   /* atomic */
    uint64_t *ghost_slots;
    /* "watch evictions": told of each eviction while *watch_kinds has
     * evict_kind (one relaxed load otherwise) */
    const int *watch_kinds;
    int evict_kind;
    void (*on_evict)(void *arg, const mp_item *it);
    void *evict_arg;
};

#define ITEM_size(it) mp_item_size((it)->nkey, (it)->nbytes, mp_item_flags(it))

static inline uint64_t item_ntotal(const mp_store *st, const mp_item *it)
{
    return mp_item_ntotal_memcached(it->nkey, it->nbytes, mp_item_flags(it), st->use_cas);
}

/* ---- life cycle ---- */

static int log2_floor(uint64_t n)
{
    int b = 0;
    while (n > 1) {
        n >>= 1;
        b++;
    }
    return b;
}

mp_store *mp_store_create(const mp_settings *settings, int nshards, char *err, size_t errlen)
{
    if (nshards < 1 || (nshards & (nshards - 1)) != 0) {
        snprintf(err, errlen, "number of shards must be a power of two (got %d)", nshards);
        return NULL;
    }
    mp_store *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->nshards = nshards;
    st->shard_bits = log2_floor((uint64_t)nshards);
    st->use_cas = settings->use_cas;
    st->evict_to_free = settings->evict_to_free;
    st->item_size_max = settings->item_size_max;
    if (mp_arena_init(&st->arena, settings, settings->maxbytes, err, errlen) != 0) {
        free(st);
        return NULL;
    }
    st->limit = settings->maxbytes;

    if (posix_memalign((void **)&st->shards, 64, sizeof(mp_shard) * (size_t)nshards) != 0) {
        st->shards = NULL;
        goto oom;
    }
    memset(st->shards, 0, sizeof(mp_shard) * (size_t)nshards);

    uint64_t ghost_entries = settings->maxbytes / MP_GHOST_BYTES_PER_ENTRY / (uint64_t)nshards;
    uint64_t ghost_buckets = MP_GHOST_MIN_BUCKETS;
    while (ghost_buckets * 2 * MP_GHOST_WAYS <= ghost_entries && ghost_buckets < ((uint64_t)1 << 30))
        ghost_buckets *= 2;
    st->ghost_slots = calloc(ghost_buckets * MP_GHOST_WAYS * (uint64_t)nshards, sizeof(uint64_t));
    if (st->ghost_slots == NULL)
        goto oom;

    int power = MP_HT_INITIAL_TOTAL_POWER - MP_HT_CHAIN_SHIFT - st->shard_bits;
    if (power < MP_HT_MIN_POWER)
        power = MP_HT_MIN_POWER;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
#ifdef PTHREAD_MUTEX_ADAPTIVE_NP
    /* critical sections are a few hundred nanoseconds: spin briefly first */
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    for (int i = 0; i < nshards; i++) {
        mp_shard *s = &st->shards[i];
        s->st = st;
        s->index = i;
        pthread_mutex_init(&s->lock, &attr);
        mp_htbucket *buckets = mp_ht_alloc((uint32_t)power);
        if (buckets == NULL) {
            pthread_mutexattr_destroy(&attr);
            goto oom;
        }
        mp_ht_init(&s->ht, st->arena.base, buckets, (uint32_t)power);
        mp_slabs_init(&s->slabs, i);
        for (int c = 0; c < MP_MAX_SLAB_CLASSES; c++)
            s->q[c].qb = st->arena.qb;
        mp_ghost_init(&s->ghost, st->ghost_slots + (uint64_t)i * ghost_buckets * MP_GHOST_WAYS,
                      (uint32_t)ghost_buckets);
    }
    pthread_mutexattr_destroy(&attr);
    return st;
oom:
    snprintf(err, errlen, "out of memory");
    mp_store_destroy(st);
    return NULL;
}

void mp_store_destroy(mp_store *st)
{
    if (st == NULL)
        return;
    if (st->shards != NULL) {
        for (int i = 0; i < st->nshards; i++) {
            mp_shard *s = &st->shards[i];
            if (s->st == NULL)
                continue;
            mp_ht_free(s->ht.buckets, s->ht.power);
            mp_ht_free(s->ht.old, s->ht.power - 1);
            mp_ht_free(s->ht.retired, s->ht.power - 1);
            pthread_mutex_destroy(&s->lock);
        }
        free(st->shards);
    }
    free(st->ghost_slots);
    mp_arena_destroy(&st->arena);
    free(st);
}

int mp_store_nshards(const mp_store *st)
{
    return st->nshards;
}

int mp_store_nclasses(const mp_store *st)
{
    return st->arena.nclasses;
}

uint32_t mp_store_pages(mp_store *st)
{
    mp_arena *a = &st->arena;
    pthread_mutex_lock(&a->pool_lock);
    uint32_t n = a->budget;
    pthread_mutex_unlock(&a->pool_lock);
    return n;
}

/* ---- shards and locks ---- */

mp_shard *mp_store_shard(mp_store *st, uint64_t hv)
{
    if (st->shard_bits == 0)
        return &st->shards[0];
    return &st->shards[hv >> (64 - st->shard_bits)];
}

/* Contention is counted where it happens: a lock that was free costs one
 * uncontended atomic, a wait is what "stats shards" and /metrics show.  The
 * counters are written under the lock and read without it. */
void mp_shard_lock(mp_shard *s)
{
    if (pthread_mutex_trylock(&s->lock) != 0) {
        pthread_mutex_lock(&s->lock);
        __atomic_store_n(&s->lock_waits, s->lock_waits + 1, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&s->lock_acquires, s->lock_acquires + 1, __ATOMIC_RELAXED);
}

void mp_shard_unlock(mp_shard *s)
{
    pthread_mutex_unlock(&s->lock);
}

uint64_t mp_store_next_cas(mp_store *st)
{
    return __atomic_add_fetch(&st->cas_id, 1, __ATOMIC_RELAXED);
}

/* ---- liveness ---- */

/* memcached's item_is_flushed: with cas on, an immediate flush_all marks the
 * next cas id, so items stored earlier in the same second die and later ones
 * live; without cas only the second is known. */
static inline bool item_flushed(const mp_store *st, const mp_item *it)
{
    mp_rel_time oldest_live = __atomic_load_n(&st->oldest_live, __ATOMIC_RELAXED);
    if (oldest_live == 0 || oldest_live > mp_current_time)
        return false;
    if (it->time <= oldest_live)
        return true;
    uint64_t oldest_cas = __atomic_load_n(&st->oldest_cas, __ATOMIC_RELAXED);
    return oldest_cas != 0 && it->cas != 0 && it->cas < oldest_cas;
}

static inline bool item_expired(const mp_item *it)
{
    return it->exptime != 0 && it->exptime <= mp_current_time;
}

/* ---- link / unlink ---- */

static void item_link(mp_shard *s, mp_item *it, uint64_t hv, int inherit_main, uint8_t inherit_freq)
{
    mp_store *st = s->st;
    MP_ASSERT(!(it->iflags & (MP_IT_LINKED | MP_IT_FREE)));
    if (it->iflags & MP_IT_PENDING)
        mp_slab_unpend(&st->arena, it);
    it->iflags |= MP_IT_LINKED;
    it->time = mp_current_time;
    it->cas = st->use_cas ? mp_store_next_cas(st) : 0;
    it->freq = inherit_freq & MP_FREQ_MASK;
    bool to_main;
    if (inherit_main >= 0)
        to_main = inherit_main != 0;
    else
        to_main = mp_ghost_take(&s->ghost, hv, (uint32_t)(s->ht.count + 1));
    mp_ht_insert(&s->ht, it, hv);
    mp_s3_insert(&s->q[it->clsid], it, to_main);
    s->curr_items++;
    s->total_items++;
    s->bytes += item_ntotal(st, it);
    if (mp_ht_expanding(&s->ht))
        mp_ht_migrate(&s->ht, MP_HT_MIGRATE_PER_LINK);
    if (s->ht.retired != NULL || mp_ht_wants_growth(&s->ht))
        __atomic_store_n(&s->grow_hint, 1, __ATOMIC_RELAXED);
}

/* An unlinked item of a referenced slab waits for the slab's last
 * reference (slabs.h); any other is freed now. */
static void item_free_or_hold(mp_shard *s, mp_item *it)
{
    mp_arena *a = &s->st->arena;
    mp_slab_meta *m = &a->slabs[mp_slab_of(a, it)];
    if (m->refs != 0)
        m->zombies++;
    else
        mp_slab_free(a, &s->slabs, it, ITEM_size(it));
}

/* Takes a linked item out of the table and queues and frees its chunk, or
 * leaves that to its slab's last reference. */
static void item_unlink_hv(mp_shard *s, mp_item *it, uint64_t hv)
{
    mp_store *st = s->st;
    MP_ASSERT(it->iflags & MP_IT_LINKED);
    mp_ht_remove(&s->ht, it, hv);
    mp_s3_remove(&s->q[it->clsid], it);
    s->curr_items--;
    s->bytes -= item_ntotal(st, it);
    it->iflags &= (uint8_t)~MP_IT_LINKED;
    item_free_or_hold(s, it);
}

/* ---- references ---- */

static inline void item_ref(mp_shard *s, mp_item *it)
{
    MP_ASSERT(!(it->iflags & (MP_IT_FREE | MP_IT_PENDING)));
    mp_slab_ref(&s->st->arena, it);
}

/* The slab's last reference went: the items unlinked while it was held are
 * freed (one pass over the slab, only when there are any).  Every other
 * item of the slab is linked, pending or free, so what is neither linked
 * nor pending is one of them; a chunk the store takes for a copy under the
 * lock is pending until linked for that reason. */
static void slab_free_zombies(mp_shard *s, const mp_item *any)
{
    mp_arena *a = &s->st->arena;
    uint32_t u = mp_slab_of(a, any);
    mp_slab_meta *m = &a->slabs[u];
    size_t csize = a->chunk_size[m->clsid];
    char *base = mp_slab_base(a, u);
    for (uint32_t k = 0; m->zombies != 0 && k < m->carved; k++) {
        mp_item *it = (mp_item *)(base + (size_t)k * csize);
        if (it->iflags & (MP_IT_FREE | MP_IT_LINKED | MP_IT_PENDING))
            continue;
        m->zombies--;
        mp_slab_free(a, &s->slabs, it, ITEM_size(it));
    }
    MP_ASSERT(m->zombies == 0);
}

static inline void item_unref(mp_shard *s, mp_item *it)
{
    MP_ASSERT(!(it->iflags & MP_IT_FREE));
    if (mp_slab_unref(&s->st->arena, it))
        slab_free_zombies(s, it);
}

void mp_item_ref(mp_shard *s, mp_item *it)
{
    item_ref(s, it);
}

void mp_store_unref(mp_store *st, mp_item *it)
{
    mp_arena *a = &st->arena;
    /* the item's page is pinned, so its owner stays put: no lock needed to
     * read it (the item's own shard, as its key's hash would say) */
    uint32_t u = (uint32_t)(((const char *)it - a->base) >> MP_UNIT_SHIFT);
    MP_ASSERT(a->pages[mp_page_of_unit(a, u)].shard >= 0);
    mp_shard *s = &st->shards[a->pages[mp_page_of_unit(a, u)].shard];
    mp_shard_lock(s);
    item_unref(s, it);
    pthread_mutex_unlock(&s->lock);
}

uint32_t mp_item_slab_refs(mp_shard *s, const mp_item *it)
{
    const mp_arena *a = &s->st->arena;
    return a->slabs[mp_slab_of(a, it)].refs;
}

static void item_unlink(mp_shard *s, mp_item *it)
{
    item_unlink_hv(s, it, mp_hash(MP_ITEM_key(it), it->nkey));
}

/* Replaces old (linked) with new (fresh chunk): the new one takes the old
 * one's place in the eviction policy, as a write to a cached key should. */
static void item_replace(mp_shard *s, mp_item *old, mp_item *it, uint64_t hv)
{
    int in_main = (old->freq & MP_FREQ_MAIN) ? 1 : 0;
    uint8_t freq = old->freq & MP_FREQ_MASK;
    item_unlink_hv(s, old, hv);
    item_link(s, it, hv, in_main, freq);
}

/* For a referenced item that would have been written in place: n, of the
 * same size (so class), takes its place in the table and at its position in
 * its queue, with its policy state, access time and flags, and no store is
 * counted: only the address tells it from the in-place write.  The old item
 * stays allocated until its slab's last reference goes. */
static void item_substitute(mp_shard *s, mp_item *old, mp_item *n, uint64_t hv)
{
    if (n->iflags & MP_IT_PENDING)
        mp_slab_unpend(&s->st->arena, n);
    mp_ht_replace(&s->ht, old, n, hv);
    mp_s3_replace(&s->q[old->clsid], old, n);
    n->time = old->time;
    n->iflags = old->iflags & (uint8_t)(MP_IT_LINKED | MP_IT_FETCHED | MP_IT_STALE |
                                        MP_IT_WIN | MP_IT_KEY_BINARY | MP_IT_FLAGS);
    old->iflags &= (uint8_t)~MP_IT_LINKED;
    item_free_or_hold(s, old);
}

/* Dead (expired or flushed) item found while looking for memory. */
static void item_reclaim(mp_shard *s, mp_item *it)
{
    class_stats *cs = &s->cs[it->clsid];
    cs->reclaimed++;
    if (!(it->iflags & MP_IT_FETCHED))
        cs->expired_unfetched++;
    item_unlink(s, it);
}

static void item_evict(mp_shard *s, mp_item *it, bool to_ghost)
{
    const mp_store *st = s->st;
    if (st->watch_kinds != NULL &&
        (__atomic_load_n(st->watch_kinds, __ATOMIC_RELAXED) & st->evict_kind))
        st->on_evict(st->evict_arg, it);
    class_stats *cs = &s->cs[it->clsid];
    cs->evicted++;
    cs->evicted_time = mp_current_time - it->time;
    if (it->exptime != 0)
        cs->evicted_nonzero++;
    if (!(it->iflags & MP_IT_FETCHED))
        cs->evicted_unfetched++;
    if ((it->freq & MP_FREQ_MASK) != 0)
        cs->evicted_active++;
    uint64_t hv = mp_hash(MP_ITEM_key(it), it->nkey);
    if (to_ghost)
        mp_ghost_add(&s->ghost, hv);
    item_unlink_hv(s, it, hv);
}

static void item_evict_or_reclaim(mp_shard *s, mp_item *it)
{
    if (item_expired(it) || item_flushed(s->st, it))
        item_reclaim(s, it);
    else
        item_evict(s, it, false);
}

/* ---- making room ---- */

static int judge_item(void *ctx, mp_item *it)
{
    mp_shard *s = ctx;
    /* memcached's lru_pull_tail skips refcounted items too, and counts them
     * (here: items of a slab with a reference held) */
    if (mp_slab_referenced(&s->st->arena, it)) {
        s->cs[it->clsid].lrutail_reflocked++;
        return MP_S3_SKIP;
    }
    if (item_expired(it) || item_flushed(s->st, it))
        return MP_S3_DEAD;
    return MP_S3_LIVE;
}

/* Frees one chunk of class cls by reclaiming a dead tail item or, when
 * evictions are allowed, by S3-FIFO.  1: freed one; 0: nothing to take. */
static int class_make_room(mp_shard *s, int cls)
{
    mp_s3 *q = &s->q[cls];
    if (mp_s3_count(q) == 0)
        return 0;
    mp_fifo *fifos[2] = { &q->small, &q->main };
    for (int f = 0; f < 2; f++) {
        mp_item *it = fifos[f]->tail;
        for (int k = 0; k < MP_TAIL_SEARCH && it != NULL; k++, it = mp_qitem(q->qb, it->qprev)) {
            if (!(item_expired(it) || item_flushed(s->st, it)))
                continue;
            if (mp_slab_referenced(&s->st->arena, it)) {
                s->cs[cls].lrutail_reflocked++;
                continue;
            }
            item_reclaim(s, it);
            return 1;
        }
    }
    if (!s->st->evict_to_free)
        return 0;
    bool dead, from_small;
    mp_item *victim = mp_s3_victim(q, MP_EVICT_STEPS, judge_item, s, &dead, &from_small);
    if (victim == NULL)
        return 0;
    if (dead)
        item_reclaim(s, victim);
    else
        item_evict(s, victim, from_small);
    return 1;
}

/* Evicts everything in a slab; when the last item goes the slab leaves its
 * class (slabs.c), and with sl->hoard set its page stays in the shard.  Only
 * for a slab with nothing pinned (no pending or referenced item). */
static void drain_slab(mp_shard *s, uint32_t u)
{
    mp_arena *a = &s->st->arena;
    mp_slab_meta *m = &a->slabs[u];
    int cls = m->clsid;
    uint32_t carved = m->carved;
    size_t csize = a->chunk_size[cls];
    char *base = mp_slab_base(a, u);
    for (uint32_t k = 0; k < carved; k++) {
        mp_item *it = (mp_item *)(base + (size_t)k * csize);
        if (it->iflags & MP_IT_LINKED)
            item_evict_or_reclaim(s, it);
    }
}

/* Can the page be emptied now (nothing pinned)?  Sets *used to the chunks
 * it holds. */
static bool page_drainable(const mp_shard *s, uint32_t pg, uint64_t *used)
{
    const mp_arena *a = &s->st->arena;
    uint32_t u0 = pg * a->units_per_page;
    *used = 0;
    if (a->pages[pg].kind == MP_PAGE_WHOLE) {
        const mp_slab_meta *m = &a->slabs[u0];
        *used = m->used;
        return m->pinned == 0;
    }
    for (uint32_t k = 0; k < a->units_per_page; k++) {
        const mp_slab_meta *m = &a->slabs[u0 + k];
        if (m->clsid == 0)
            continue;
        if (m->pinned != 0)
            return false;
        *used += m->used;
    }
    return true;
}

/* The cheapest page of the shard to empty (fewest items lost) among a few,
 * starting where the last scan stopped. */
static uint32_t pick_victim_page(mp_shard *s)
{
    mp_arena *a = &s->st->arena;
    mp_slabs *sl = &s->slabs;
    if (sl->pages == MP_NONE)
        return UINT32_MAX;
    uint32_t pg = (sl->page_cursor != MP_NONE ? sl->page_cursor : sl->pages) - 1;
    uint32_t best = UINT32_MAX;
    uint64_t best_used = UINT64_MAX;
    uint32_t n = sl->npages < MP_VICTIM_SCAN ? sl->npages : MP_VICTIM_SCAN;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t used;
        if (page_drainable(s, pg, &used) && used < best_used) {
            best = pg;
            best_used = used;
        }
        pg = a->pages[pg].next - 1;
    }
    sl->page_cursor = pg + 1;
    return best;
}

static void drain_page(mp_shard *s, uint32_t pg)
{
    mp_arena *a = &s->st->arena;
    uint32_t u0 = pg * a->units_per_page;
    if (a->pages[pg].kind == MP_PAGE_WHOLE) {
        drain_slab(s, u0);
        return;
    }
    for (uint32_t k = 0; k < a->units_per_page; k++)
        if (mp_slab_is_head(a, u0 + k))
            drain_slab(s, u0 + k);
}

/* The least used drainable slab of a class among the first few. */
static uint32_t pick_victim_slab(mp_shard *s, int cls)
{
    mp_arena *a = &s->st->arena;
    mp_slab_class *c = &s->slabs.cls[cls];
    if (c->slabs == MP_NONE)
        return UINT32_MAX;
    uint32_t u = c->slabs - 1, best = UINT32_MAX, best_used = UINT32_MAX;
    uint32_t n = c->nslabs < MP_VICTIM_SCAN ? c->nslabs : MP_VICTIM_SCAN;
    for (uint32_t i = 0; i < n; i++) {
        const mp_slab_meta *m = &a->slabs[u];
        if (m->pinned == 0 && m->used < best_used) {
            best = u;
            best_used = m->used;
        }
        u = m->next - 1;
    }
    /* next time start further on, so one slab is not emptied again and again */
    c->slabs = u + 1;
    return best;
}

/* Step 5: memory of another class of the same shard.  The class whose
 * eviction candidate was used least recently gives a slab (a small class
 * needs one unit; emptying a large class's slab frees a whole page); a large
 * class needs a whole page, and the cheapest page to empty is taken. */
static bool shard_move_memory(mp_shard *s, int cls)
{
    mp_arena *a = &s->st->arena;
    if (a->slab_units[cls] == 1) {
        int best = 0;
        uint32_t best_slab = UINT32_MAX;
        mp_rel_time best_time = 0;
        for (int d = 1; d <= a->nclasses; d++) {
            if (d == cls || s->slabs.cls[d].nslabs == 0)
                continue;
            bool empty;
            mp_rel_time t = mp_s3_tail_time(&s->q[d], &empty);
            if (best != 0 && t >= best_time)
                continue;
            uint32_t u = pick_victim_slab(s, d);
            if (u == UINT32_MAX)
                continue;
            best = d;
            best_slab = u;
            best_time = t;
        }
        if (best != 0) {
            drain_slab(s, best_slab);
            __atomic_add_fetch(&a->reassigns, 1, __ATOMIC_RELAXED);
            return true;
        }
        return false;
    }
    uint32_t pg = pick_victim_page(s);
    if (pg == UINT32_MAX)
        return false;
    drain_page(s, pg);
    __atomic_add_fetch(&a->reassigns, 1, __ATOMIC_RELAXED);
    return true;
}

/* Age of the least valuable item of a class (its oldest tail). */
static bool class_age(mp_shard *s, int cls, mp_rel_time now, mp_rel_time *age)
{
    bool empty;
    mp_rel_time t = mp_s3_tail_time(&s->q[cls], &empty);
    *age = now > t ? now - t : 0;
    return !empty;
}

/* A set into class cls: memcached's per-class count, and the shard's set
 * clock that class_weight reads. */
static inline void class_count_set(mp_shard *s, int cls)
{
    class_stats *cs = &s->cs[cls];
    cs->cmd_set++;
    uint64_t now = ++s->set_clock, gap16 = (now - cs->set_clock) << 4;
    if (cs->set_clock == 0)
        cs->set_gap16 = gap16;
    else
        cs->set_gap16 = cs->set_gap16 - (cs->set_gap16 >> 3) + (gap16 >> 3);
    cs->set_clock = now;
}

/* How long class d holds a byte, in sets of the shard: its memory (items
 * times chunk size) times the sets between two of its own, or since its
 * last one when that is longer.  For one class against another this is
 * memory over set rate, so where it is equal every class has memory in
 * proportion to how often it is written, whatever its size: a class of
 * small items keeps them longer than one of large items, which is what
 * more hits per byte asks when popularity does not depend on size (a get
 * counts the same for 100 bytes as for 60 KiB). */
static double class_weight(const mp_shard *s, int d)
{
    const class_stats *cs = &s->cs[d];
    double gap = (double)cs->set_gap16 / 16.0, since = (double)(s->set_clock - cs->set_clock);
    if (since > gap)
        gap = since;
    return (double)mp_s3_count(&s->q[d]) * gap * (double)s->st->arena.chunk_size[d];
}

/* The weight rule's verdict: a class of weight w_d holds its memory so much
 * longer than one of weight w_c that memory should move to the latter. */
static inline bool weight_outweighs(double w_d, double w_c)
{
    return w_d > MP_WEIGHT_RATIO * w_c;
}

/* A class of much larger chunks that holds its memory much longer than cls
 * (of weight w_c, class_weight), or 0.  Only from larger to smaller: both ways, or between
 * classes of close sizes, the estimate's noise and the miss rate's answer to
 * each move (a class given memory misses, so sets, less) moved slabs back
 * and forth, and each move evicts a slab's items hot or not (measured:
 * docs/ARCHITECTURE.md, "Which class gets the memory"). */
static int weight_donor(mp_shard *s, int cls, double w_c)
{
    mp_arena *a = &s->st->arena;
    double best_w = 0;
    int best = 0;
    for (int d = cls + 1; d <= a->nclasses; d++) {
        if (a->chunk_size[d] < MP_WEIGHT_SIZES * a->chunk_size[cls] ||
            s->slabs.cls[d].nslabs == 0 || mp_s3_count(&s->q[d]) == 0)
            continue;
        double w = class_weight(s, d);
        if (w > best_w) {
            best = d;
            best_w = w;
        }
    }
    return best != 0 && weight_outweighs(best_w, w_c) ? best : 0;
}

/* Moves one slab (a page for a large class) to class cls from the class
 * whose oldest item is much older than cls's (the memory goes where it holds
 * more recently used data), or else from a weight_donor.  The freed unit or
 * page stays in the shard (or, outside an allocation, returns to the pool)
 * and cls takes it next.
 *
 * Between classes MP_WEIGHT_SIZES apart the weight rule wants the smaller
 * one's items to stay longer, so its older tail is no reason to take its
 * memory: the age rule takes from it only when the weight rule would too
 * (weight_outweighs: as for a class no longer written, whose weight grows
 * with every set of the shard).  Otherwise the
 * two rules pass slabs back and forth, each move evicting a slab's items
 * (docs/ARCHITECTURE.md, "Which class gets the memory"). */
static bool shard_rebalance(mp_shard *s, int cls)
{
    mp_arena *a = &s->st->arena;
    mp_rel_time now = mp_current_time, age_c, age;
    if (!class_age(s, cls, now, &age_c))
        return false;
    double w_c = class_weight(s, cls);
    int best = 0;
    mp_rel_time best_age = 0;
    for (int d = 1; d <= a->nclasses; d++) {
        if (d == cls || s->slabs.cls[d].nslabs == 0)
            continue;
        /* a slab of d frees as many units as cls needs, aligned, only if
         * d's slabs are no smaller */
        if (a->slab_units[d] < a->slab_units[cls])
            continue;
        if (!class_age(s, d, now, &age) || age <= best_age)
            continue;
        if (MP_WEIGHT_SIZES * a->chunk_size[d] <= a->chunk_size[cls] &&
            !weight_outweighs(class_weight(s, d), w_c))
            continue;
        best = d;
        best_age = age;
    }
    if (best == 0 || (uint64_t)best_age < 2 * (uint64_t)age_c + MP_REBALANCE_MARGIN)
        best = weight_donor(s, cls, w_c);
    if (best == 0)
        return false;
    uint32_t u = pick_victim_slab(s, best);
    if (u == UINT32_MAX)
        return false;
    drain_slab(s, u);
    __atomic_add_fetch(&a->reassigns, 1, __ATOMIC_RELAXED);
    return true;
}

/* t's lock held: an empty page of t, emptying the cheapest one if there is
 * none, or UINT32_MAX if none could be emptied (pinned items).  Sets
 * t->slabs.hoard so the emptied page stays in t for the caller; the caller
 * restores it. */
static uint32_t empty_a_page(mp_shard *t)
{
    mp_arena *a = &t->st->arena;
    t->slabs.hoard = true;
    uint32_t pg = mp_slabs_empty_page(a, &t->slabs);
    if (pg == UINT32_MAX) {
        pg = pick_victim_page(t);
        if (pg != UINT32_MAX)
            drain_page(t, pg);
    }
    if (pg != UINT32_MAX && (a->pages[pg].kind != MP_PAGE_SPLIT ||
                             a->pages[pg].free_units != a->units_per_page))
        pg = UINT32_MAX;   /* not emptied after all */
    return pg;
}

/* Step 6: a page from another shard, without ever waiting for its lock. */
static bool shard_steal_page(mp_shard *s)
{
    mp_store *st = s->st;
    mp_arena *a = &st->arena;
    for (int i = 1; i < st->nshards; i++) {
        mp_shard *t = &st->shards[(s->index + i) & (st->nshards - 1)];
        if (pthread_mutex_trylock(&t->lock) != 0)
            continue;
        bool hoard = t->slabs.hoard;
        uint32_t pg = empty_a_page(t);
        if (pg != UINT32_MAX)
            mp_page_transfer(a, &t->slabs, &s->slabs, pg);
        t->slabs.hoard = hoard;
        pthread_mutex_unlock(&t->lock);
        if (pg != UINT32_MAX)
            return true;
    }
    return false;
}

/* Empties one page of shard t and takes it out of t (still counted against
 * the budget, owned by nobody); the caller holds no lock.  UINT32_MAX when t
 * has no page that can be emptied now. */
static uint32_t shard_give_page(mp_shard *t)
{
    mp_arena *a = &t->st->arena;
    mp_shard_lock(t);
    uint32_t pg = empty_a_page(t);
    if (pg != UINT32_MAX)
        mp_page_detach(a, &t->slabs, pg);
    t->slabs.hoard = false;
    pthread_mutex_unlock(&t->lock);
    return pg;
}

/* Pages emptied while hoarding go back to the pool. */
static void shard_release_empty_pages(mp_shard *s)
{
    mp_arena *a = &s->st->arena;
    uint32_t pg;
    while (s->slabs.empty_pages > 0 && (pg = mp_slabs_empty_page(a, &s->slabs)) != UINT32_MAX)
        mp_page_release(a, &s->slabs, pg);
}

/* A chunk for an item of `size` bytes of class cls; see the note at the top. */
static mp_item *shard_alloc(mp_shard *s, int cls, size_t size, bool pending)
{
    mp_store *st = s->st;
    mp_arena *a = &st->arena;
    mp_item *it = NULL;
    s->slabs.hoard = true;
    for (int round = 0; round < MP_ALLOC_ROUNDS; round++) {
        it = mp_slab_chunk(a, &s->slabs, cls, size, pending);
        if (it != NULL)
            break;
        if (mp_slab_grow(a, &s->slabs, cls))
            continue;
        if (st->evict_to_free && ++s->cs[cls].evict_tick >= MP_REBALANCE_EVERY) {
            s->cs[cls].evict_tick = 0;
            if (shard_rebalance(s, cls))
                continue;
        }
        if (class_make_room(s, cls))
            continue;
        if (!st->evict_to_free)
            break;
        if (shard_move_memory(s, cls))
            continue;
        if (!shard_steal_page(s))
            break;
    }
    s->slabs.hoard = false;
    if (s->slabs.empty_pages > 0)
        shard_release_empty_pages(s);
    if (it == NULL)
        s->cs[cls].outofmemory++;
    return it;
}

static void item_init(mp_item *it, const char *key, size_t nkey, uint32_t flags,
                      mp_rel_time exptime, uint32_t nbytes)
{
    it->qnext = it->qprev = 0;
    it->cas = 0;
    it->time = mp_current_time;
    it->exptime = exptime;
    it->nbytes = nbytes;
    it->nkey = (uint8_t)nkey;
    it->freq = 0;
    memcpy(it->data, key, nkey);
    it->data[nkey] = '\0';
    if (flags != 0) {
        it->iflags |= MP_IT_FLAGS;
        memcpy(MP_ITEM_value(it) + nbytes, &flags, sizeof(flags));
    }
}

/* A bigger table is allocated outside the lock by whoever notices first. */
static void shard_grow_table(mp_shard *s)
{
    if (__atomic_exchange_n(&s->growing, 1, __ATOMIC_ACQUIRE) != 0)
        return;
    mp_shard_lock(s);
    mp_htbucket *retired = s->ht.retired;
    s->ht.retired = NULL;
    bool want = mp_ht_wants_growth(&s->ht);
    uint32_t power = s->ht.power;
    __atomic_store_n(&s->grow_hint, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->lock);
    mp_ht_free(retired, power - 1);
    if (want) {
        mp_htbucket *fresh = mp_ht_alloc(power + 1);
        if (fresh != NULL) {
            mp_shard_lock(s);
            if (s->ht.power == power && mp_ht_wants_growth(&s->ht)) {
                mp_ht_expand_begin(&s->ht, fresh);
                fresh = NULL;
            }
            pthread_mutex_unlock(&s->lock);
            mp_ht_free(fresh, power + 1);
        }
    }
    __atomic_store_n(&s->growing, 0, __ATOMIC_RELEASE);
}

/* ---- lookups (shard lock held) ---- */

static mp_item *shard_find(mp_shard *s, const char *key, size_t nkey, uint64_t hv, int *why)
{
    mp_item *it = mp_ht_find(&s->ht, key, nkey, hv);
    int w = MP_MISS_NONE;
    if (it == NULL) {
        w = MP_MISS_ABSENT;
    } else if (item_flushed(s->st, it)) {
        item_unlink_hv(s, it, hv);
        it = NULL;
        w = MP_MISS_FLUSHED;
    } else if (item_expired(it)) {
        item_unlink_hv(s, it, hv);
        it = NULL;
        w = MP_MISS_EXPIRED;
    }
    if (why != NULL)
        *why = w;
    return it;
}

mp_item *mp_item_find(mp_shard *s, const char *key, size_t nkey, uint64_t hv, int *why_missing)
{
    return shard_find(s, key, nkey, hv, why_missing);
}

/* memcached's do_item_update: the access time moves only when it is more
 * than ITEM_UPDATE_INTERVAL old, which is what mg's l and me's la report
 * (the first fetch of an item shows the seconds since it was stored). */
static inline void item_update_time(mp_item *it)
{
    if (it->time + MP_ITEM_UPDATE_INTERVAL < mp_current_time)
        it->time = mp_current_time;
}

static inline void item_touch_access(mp_item *it)
{
    mp_s3_hit(it);
    it->iflags |= MP_IT_FETCHED;
    item_update_time(it);
}

void mp_item_bump(mp_shard *s, mp_item *it)
{
    item_touch_access(it);
    s->cs[it->clsid].get_hits++;
}

void mp_item_set_exptime(mp_shard *s, mp_item *it, mp_rel_time exptime)
{
    (void)s;
    it->exptime = exptime;
}

void mp_item_unlink(mp_shard *s, mp_item *it)
{
    if (it->iflags & MP_IT_LINKED)
        item_unlink(s, it);
}

/* ---- allocation ---- */

int mp_store_alloc(mp_store *st, const char *key, size_t nkey, uint64_t hv,
                   uint32_t flags, mp_rel_time exptime, uint32_t nbytes_with_crlf,
                   mp_item **out)
{
    *out = NULL;
    /* the executor rejects long keys first; it->nkey is one byte */
    if (nkey > MP_KEY_MAX_LENGTH ||
        mp_item_ntotal_memcached(nkey, nbytes_with_crlf, flags, st->use_cas) > st->item_size_max) {
        __atomic_add_fetch(&st->too_large, 1, __ATOMIC_RELAXED);
        return MP_ALLOC_TOO_LARGE;
    }
    size_t size = mp_item_size(nkey, nbytes_with_crlf, flags);
    int cls = mp_slabs_clsid(&st->arena, size);
    if (cls == 0) {   /* cannot happen: the page holds the largest item */
        __atomic_add_fetch(&st->too_large, 1, __ATOMIC_RELAXED);
        return MP_ALLOC_TOO_LARGE;
    }
    mp_shard *s = mp_store_shard(st, hv);
    if (__atomic_load_n(&s->grow_hint, __ATOMIC_RELAXED))
        shard_grow_table(s);
    mp_shard_lock(s);
    mp_item *it = shard_alloc(s, cls, size, true);
    /* memcached counts a set per class once the value is read, even when its
     * data chunk turns out bad: counting here differs only for a connection
     * that dies mid-value */
    if (it != NULL)
        class_count_set(s, cls);
    pthread_mutex_unlock(&s->lock);
    /* Every other shard was busy when shard_alloc tried to take a page: now,
     * holding no lock, wait for one to hand a page over. */
    for (int i = 1; it == NULL && st->evict_to_free && i < st->nshards; i++) {
        uint32_t pg = shard_give_page(&st->shards[(s->index + i) & (st->nshards - 1)]);
        if (pg == UINT32_MAX)
            continue;
        mp_shard_lock(s);
        mp_page_attach(&st->arena, &s->slabs, pg);
        it = shard_alloc(s, cls, size, true);
        if (it != NULL)
            class_count_set(s, cls);
        pthread_mutex_unlock(&s->lock);
    }
    if (it == NULL) {
        __atomic_add_fetch(&st->no_memory, 1, __ATOMIC_RELAXED);
        return MP_ALLOC_NO_MEMORY;
    }
    /* pending: nobody else looks at it (slabs.c set iflags and clsid) */
    item_init(it, key, nkey, flags, exptime, nbytes_with_crlf);
    *out = it;
    return MP_ALLOC_OK;
}

void mp_store_release(mp_store *st, mp_item *it, uint64_t hv)
{
    mp_shard *s = mp_store_shard(st, hv);
    MP_ASSERT(it->iflags & MP_IT_PENDING);
    mp_shard_lock(s);
    mp_slab_free(&st->arena, &s->slabs, it, ITEM_size(it));
    pthread_mutex_unlock(&s->lock);
}

/* ---- storage commands (memcached's do_store_item) ---- */

/* append/prepend: a new item holding both values, old flags and exptime.
 * NULL when too large or out of memory: memcached answers NOT_STORED then. */
static mp_item *combine_values(mp_shard *s, mp_item *old, mp_item *it, mp_store_op op)
{
    mp_store *st = s->st;
    uint32_t nbytes = old->nbytes + it->nbytes - 2;
    uint32_t flags = mp_item_flags(old);
    if (mp_item_ntotal_memcached(it->nkey, nbytes, flags, st->use_cas) > st->item_size_max)
        return NULL;
    size_t size = mp_item_size(it->nkey, nbytes, flags);
    int cls = mp_slabs_clsid(&st->arena, size);
    if (cls == 0)
        return NULL;
    item_ref(s, old);   /* survives the allocation */
    mp_item *n = shard_alloc(s, cls, size, true);   /* pending: slab_free_zombies */
    item_unref(s, old);
    if (n == NULL)
        return NULL;
    item_init(n, MP_ITEM_key(it), it->nkey, flags, old->exptime, nbytes);
    char *dst = MP_ITEM_value(n);
    if (op == MP_APPEND) {
        memcpy(dst, MP_ITEM_value(old), old->nbytes - 2);
        memcpy(dst + old->nbytes - 2, MP_ITEM_value(it), it->nbytes);
    } else {
        memcpy(dst, MP_ITEM_value(it), it->nbytes - 2);
        memcpy(dst + it->nbytes - 2, MP_ITEM_value(old), old->nbytes);
    }
    return n;
}

mp_store_result mp_store_item(mp_store *st, mp_item *it, uint64_t hv, mp_store_op op,
                              uint64_t cas_in, uint64_t *cas_out)
{
    return mp_store_item_ex(st, it, hv, op, cas_in, 0, cas_out);
}

mp_store_result mp_store_item_ex(mp_store *st, mp_item *it, uint64_t hv, mp_store_op op,
                                 uint64_t cas_in, unsigned opts, uint64_t *cas_out)
{
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    mp_store_result res = mp_item_store(s, it, hv, op, cas_in, opts, cas_out);
    pthread_mutex_unlock(&s->lock);
    return res;
}

mp_store_result mp_item_store(mp_shard *s, mp_item *it, uint64_t hv, mp_store_op op,
                              uint64_t cas_in, unsigned opts, uint64_t *cas_out)
{
    mp_store *st = s->st;
    mp_store_result res = MP_NOT_STORED;
    mp_item *stored = NULL;

    MP_ASSERT(it->iflags & MP_IT_PENDING);
    if (opts & MP_STORE_KEY_BINARY)
        it->iflags |= MP_IT_KEY_BINARY;
    mp_item *old = shard_find(s, MP_ITEM_key(it), it->nkey, hv, NULL);
    if (old != NULL) {
        switch (op) {
        case MP_ADD:
            /* memcached: add fails but refreshes the old item's access time */
            item_update_time(old);
            break;
        case MP_CAS:
            if (cas_in != 0 && cas_in == old->cas) {
                s->cs[old->clsid].cas_hits++;
                item_replace(s, old, it, hv);
                stored = it;
            } else if ((opts & MP_STORE_STALE_OK) && cas_in != 0 && cas_in < old->cas) {
                /* memcached's CAS_STALE: an older writer's value is kept, as
                 * stale, under the item's TTL and win state */
                it->exptime = old->exptime;
                it->iflags |= MP_IT_STALE | (old->iflags & MP_IT_WIN);
                s->cs[old->clsid].cas_hits++;
                item_replace(s, old, it, hv);
                stored = it;
            } else {
                s->cs[old->clsid].cas_badval++;
                res = MP_EXISTS;
            }
            break;
        case MP_APPEND:
        case MP_PREPEND:
            if (cas_in != 0 && cas_in != old->cas) {
                res = MP_EXISTS;
                break;
            }
            {
                mp_item *n = combine_values(s, old, it, op);
                if (n != NULL) {
                    item_replace(s, old, n, hv);
                    stored = n;
                }
            }
            break;
        case MP_SET:
        case MP_REPLACE:
            item_replace(s, old, it, hv);
            stored = it;
            break;
        }
    } else {
        switch (op) {
        case MP_SET:
        case MP_ADD:
            item_link(s, it, hv, -1, 0);
            stored = it;
            break;
        case MP_CAS:
            res = MP_NOT_FOUND;
            break;
        default:
            break;   /* replace, append, prepend need an existing item */
        }
    }
    if (stored != NULL) {
        res = MP_STORED;
        if (cas_out != NULL)
            *cas_out = stored->cas;
    }
    if (stored != it)
        mp_slab_free(&st->arena, &s->slabs, it, ITEM_size(it));
    return res;
}

void mp_store_delete_quiet(mp_store *st, const char *key, size_t nkey, uint64_t hv)
{
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    mp_item_unlink_key(s, key, nkey, hv);
    pthread_mutex_unlock(&s->lock);
}

void mp_item_unlink_key(mp_shard *s, const char *key, size_t nkey, uint64_t hv)
{
    mp_item *it = mp_ht_find(&s->ht, key, nkey, hv);
    if (it != NULL)
        item_unlink_hv(s, it, hv);
}

bool mp_store_delete(mp_store *st, const char *key, size_t nkey, uint64_t hv)
{
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    bool found = mp_item_delete(s, key, nkey, hv);
    pthread_mutex_unlock(&s->lock);
    return found;
}

bool mp_item_delete(mp_shard *s, const char *key, size_t nkey, uint64_t hv)
{
    mp_item *it = shard_find(s, key, nkey, hv, NULL);
    if (it != NULL) {
        s->cs[it->clsid].delete_hits++;
        item_unlink_hv(s, it, hv);
    }
    return it != NULL;
}

bool mp_store_touch(mp_store *st, const char *key, size_t nkey, uint64_t hv, mp_rel_time exptime)
{
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    bool found = mp_item_touch(s, key, nkey, hv, exptime);
    pthread_mutex_unlock(&s->lock);
    return found;
}

bool mp_item_touch(mp_shard *s, const char *key, size_t nkey, uint64_t hv, mp_rel_time exptime)
{
    mp_item *it = shard_find(s, key, nkey, hv, NULL);
    if (it != NULL) {
        /* memcached's touch fetches with update: the item counts as read */
        item_touch_access(it);
        it->exptime = exptime;
        s->cs[it->clsid].touch_hits++;
    }
    return it != NULL;
}

/* ---- incr / decr (memcached's do_add_delta) ---- */

/* memcached's safe_strtoull over the value bytes, which ends at a NUL as
 * a C string does; a "negative" result (minus sign with the top bit set) is
 * refused.  An all-blank value is refused too (memcached reads past the
 * value there). */
static bool value_to_u64(const char *p, size_t len, uint64_t *out)
{
    bool neg, range;
    uint64_t v;
    size_t end = mp_scan_decimal(p, len, &neg, &v, &range);
    if (end == 0 || range)
        return false;
    if (end < len && !mp_isspace((unsigned char)p[end]) && p[end] != '\0')
        return false;
    if (neg) {
        v = (uint64_t)0 - v;
        if ((int64_t)v < 0)
            return false;
    }
    *out = v;
    return true;
}

mp_delta_result mp_item_delta(mp_shard *s, const char *key, size_t nkey, uint64_t hv,
                              bool incr, uint64_t delta, uint64_t cas_in, char *buf,
                              mp_item **out, bool *moved)
{
    mp_store *st = s->st;
    *out = NULL;
    *moved = false;
    mp_item *it = shard_find(s, key, nkey, hv, NULL);
    uint64_t value;
    if (it == NULL)
        return MP_DELTA_NOT_FOUND;
    /* memcached's order: an empty value, then the cas, then the digits */
    if (it->nbytes <= 2)
        return MP_DELTA_NON_NUMERIC;
    if (cas_in != 0 && cas_in != it->cas)
        return MP_DELTA_EXISTS;
    if (!value_to_u64(MP_ITEM_value(it), it->nbytes - 2, &value))
        return MP_DELTA_NON_NUMERIC;
    if (incr)
        value += delta;
    else
        value = delta > value ? 0 : value - delta;
    if (incr)
        s->cs[it->clsid].incr_hits++;
    else
        s->cs[it->clsid].decr_hits++;
    size_t len = (size_t)(u64_to_dec(buf, value) - buf);
    buf[len] = '\0';
    bool fits = len + 2 <= it->nbytes;
    if (fits && !mp_slab_referenced(&st->arena, it)) {
        /* in place, blank-padded to the old length, with a new cas */
        char *v = MP_ITEM_value(it);
        memcpy(v, buf, len);
        memset(v + len, ' ', it->nbytes - 2 - len);
        it->cas = st->use_cas ? mp_store_next_cas(st) : 0;
        item_update_time(it);
        *out = it;
        return MP_DELTA_OK;
    }
    /* A longer result, or a referenced item, whose bytes must not change
     * under a send in flight.  memcached (refcount != 2) then stores the
     * result unpadded, so what a later get shows would depend on a
     * concurrent reader; the copy here is padded as the in-place write
     * would have been, and stands for the old item (item_substitute). */
    uint32_t nbytes = fits ? it->nbytes : (uint32_t)len + 2, flags = mp_item_flags(it);
    size_t size = mp_item_size(nkey, nbytes, flags);
    int cls = mp_slabs_clsid(&st->arena, size);
    item_ref(s, it);   /* survives the allocation */
    mp_item *n = shard_alloc(s, cls, size, true);   /* pending: slab_free_zombies */
    item_unref(s, it);
    if (n == NULL)
        return MP_DELTA_EOM;
    item_init(n, key, nkey, flags, it->exptime, nbytes);
    char *v = MP_ITEM_value(n);
    memcpy(v, buf, len);
    memset(v + len, ' ', nbytes - 2 - len);
    memcpy(v + nbytes - 2, "\r\n", 2);
    if (fits) {
        item_substitute(s, it, n, hv);
        n->cas = st->use_cas ? mp_store_next_cas(st) : 0;
        item_update_time(n);
    } else {
        item_replace(s, it, n, hv);
        *moved = true;
    }
    *out = n;
    return MP_DELTA_OK;
}

mp_delta_result mp_store_arith(mp_store *st, const char *key, size_t nkey, uint64_t hv,
                               bool incr, uint64_t delta, char *buf, uint64_t *cas_out)
{
    mp_shard *s = mp_store_shard(st, hv);
    mp_item *it;
    bool moved;
    mp_shard_lock(s);
    mp_delta_result res = mp_item_delta(s, key, nkey, hv, incr, delta, 0, buf, &it, &moved);
    if (res == MP_DELTA_OK && cas_out != NULL)
        *cas_out = it->cas;
    pthread_mutex_unlock(&s->lock);
    return res;
}

/* ---- the meta protocol's own operations ---- */

mp_item *mp_item_vivify(mp_shard *s, const char *key, size_t nkey, uint64_t hv,
                        const char *value, size_t vlen)
{
    mp_store *st = s->st;
    uint32_t nbytes = (uint32_t)vlen + 2;
    if (nkey > MP_KEY_MAX_LENGTH ||
        mp_item_ntotal_memcached(nkey, nbytes, 0, st->use_cas) > st->item_size_max)
        return NULL;
    size_t size = mp_item_size(nkey, nbytes, 0);
    int cls = mp_slabs_clsid(&st->arena, size);
    if (cls == 0)
        return NULL;
    mp_item *it = shard_alloc(s, cls, size, false);
    if (it == NULL)
        return NULL;
    item_init(it, key, nkey, 0, 0, nbytes);
    memcpy(MP_ITEM_value(it), value, vlen);
    memcpy(MP_ITEM_value(it) + vlen, "\r\n", 2);
    item_link(s, it, hv, -1, 0);
    return it;
}

void mp_item_access(mp_shard *s, mp_item *it)
{
    (void)s;
    item_touch_access(it);
}

void mp_item_count_hit(mp_shard *s, mp_item *it, bool touched)
{
    if (touched)
        s->cs[it->clsid].touch_hits++;
    else
        s->cs[it->clsid].get_hits++;
}

void mp_item_set_win(mp_shard *s, mp_item *it)
{
    (void)s;
    it->iflags |= MP_IT_WIN;
}

mp_mdelete_result mp_store_mdelete(mp_store *st, const char *key, size_t nkey, uint64_t hv,
                                   const mp_mdelete *md)
{
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    mp_mdelete_result res = mp_item_mdelete(s, key, nkey, hv, md);
    pthread_mutex_unlock(&s->lock);
    return res;
}

mp_mdelete_result mp_item_mdelete(mp_shard *s, const char *key, size_t nkey, uint64_t hv,
                                  const mp_mdelete *md)
{
    mp_store *st = s->st;
    mp_mdelete_result res;
    mp_item *it = shard_find(s, key, nkey, hv, NULL);
    if (it == NULL) {
        res = MP_MD_NOT_FOUND;
    } else if (md->has_cas && md->cas != it->cas) {
        res = MP_MD_EXISTS;
    } else if (md->invalidate) {
        /* stale-while-revalidate: keep the value, let the next reader win */
        if (md->set_ttl)
            it->exptime = md->exptime;
        it->iflags = (uint8_t)((it->iflags | MP_IT_STALE) & ~MP_IT_WIN);
        it->cas = st->use_cas ? mp_store_next_cas(st) : 0;
        res = MP_MD_INVALIDATED;
    } else {
        s->cs[it->clsid].delete_hits++;
        item_unlink_hv(s, it, hv);
        res = MP_MD_DELETED;
    }
    return res;
}

/* ---- flush_all ---- */

void mp_store_flush(mp_store *st, int64_t delay)
{
    /* memcached's process_flush_all_command: realtime(0) is 0, so no delay
     * means "now"; the marker is one second before the deadline, and with
     * cas on an immediate flush also marks the next cas id. */
    mp_rel_time now = mp_current_time;
    mp_rel_time new_oldest = delay > 0 ? mp_realtime(delay) : now;
    if (st->use_cas) {
        mp_rel_time oldest_live = new_oldest - 1;
        if (oldest_live <= now)
            __atomic_store_n(&st->oldest_cas, mp_store_next_cas(st), __ATOMIC_RELAXED);
        __atomic_store_n(&st->oldest_live, oldest_live, __ATOMIC_RELAXED);
    } else {
        __atomic_store_n(&st->oldest_live, new_oldest, __ATOMIC_RELAXED);
    }
}

void mp_store_set_limit(mp_store *st, size_t bytes)
{
    mp_arena_set_limit(&st->arena, bytes);
    __atomic_store_n(&st->limit, (uint64_t)bytes, __ATOMIC_RELAXED);
}

/* ---- maintenance ---- */

/* Reclaims dead items in a slice of the table, as memcached's LRU crawler
 * does (counted as crawler_reclaimed). */
static void shard_sweep(mp_shard *s)
{
    mp_htable *t = &s->ht;
    if (mp_ht_expanding(t))
        return;
    uint64_t size = MP_HT_SIZE(t->power);
    uint64_t pos = s->sweep_pos % size;
    int reclaimed = 0;
    for (int b = 0; b < MP_SWEEP_BUCKETS && reclaimed < MP_SWEEP_MAX_RECLAIM; b++) {
        mp_item *its[MP_HT_WAYS];
        int n = mp_ht_bucket_items(t, pos, its);
        for (int i = 0; i < n; i++) {
            mp_item *it = its[i];
            bool flushed = item_flushed(s->st, it);
            class_stats *cs = &s->cs[it->clsid];
            cs->crawler_items_checked++;
            if (flushed || item_expired(it)) {
                cs->crawler_reclaimed++;
                if (!(it->iflags & MP_IT_FETCHED) && !flushed)
                    cs->expired_unfetched++;
                item_unlink(s, it);
                reclaimed++;
            }
        }
        pos = (pos + 1) % size;
    }
    s->sweep_pos = pos;
}

#ifdef MPCACHE_DEBUG
/* What the O(1) checks on the request path cannot see, walked whole once
 * per maintenance call (debug builds only): every queue, every slab list
 * and slab, and the counts that tie them together (debug.h). */
static void shard_check(mp_shard *s)
{
    mp_arena *a = &s->st->arena;
    uint64_t queued = 0;
    for (int cls = 1; cls <= a->nclasses; cls++) {
        mp_s3_check(&s->q[cls], cls);
        queued += mp_s3_count(&s->q[cls]);
    }
    MP_ASSERT(queued == s->curr_items && s->ht.count == s->curr_items);
    mp_slabs_check(a, &s->slabs);
}
#endif

/* ---- walks (key dumps) ---- */

static inline uint64_t rev64(uint64_t v)
{
    v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
    v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
    v = ((v >> 4) & 0x0f0f0f0f0f0f0f0full) | ((v & 0x0f0f0f0f0f0f0f0full) << 4);
    return __builtin_bswap64(v);
}

/* The cursor's next bucket under mask: the high bits count first (Redis's
 * SCAN), so the buckets already visited at one size are, after a doubling,
 * exactly the expansions of those visited.  0 again: the walk is over. */
static inline uint64_t cursor_next(uint64_t v, uint64_t mask)
{
    v |= ~mask;
    v = rev64(v);
    v++;
    return rev64(v);
}

typedef struct walk_ctx {
    mp_shard *s;
    mp_walk_fn fn;
    void *arg;
} walk_ctx;

static int walk_one(void *arg, mp_item *it)
{
    walk_ctx *w = arg;
    if (item_expired(it) || item_flushed(w->s->st, it))
        return MP_WALK_GO_ON;
    return w->fn(w->arg, it);
}

int mp_store_walk(mp_store *st, int shard, uint64_t *cursor, int max_buckets,
                  mp_walk_fn fn, void *arg)
{
    mp_shard *s = &st->shards[shard];
    int rc = MP_WALK_GO_ON;
    uint64_t v = *cursor;
    walk_ctx w = {s, fn, arg};
    mp_shard_lock(s);
    const mp_htable *t = &s->ht;
    for (int n = 0; n < max_buckets; n++) {
        rc = fn(arg, NULL);
        if (rc != MP_WALK_GO_ON)
            break;
        uint64_t mask;
        if (t->old != NULL) {
            /* doubling: the old home holds both new ones, some of its items
             * moved to them, the rest not yet */
            mask = MP_HT_SIZE(t->power - 1) - 1;
            uint64_t ob = v & mask;
            rc = mp_ht_visit_home(t, true, ob, walk_one, &w);
            if (rc == MP_WALK_GO_ON)
                rc = mp_ht_visit_home(t, false, ob, walk_one, &w);
            if (rc == MP_WALK_GO_ON)
                rc = mp_ht_visit_home(t, false, ob | (mask + 1), walk_one, &w);
        } else {
            mask = MP_HT_SIZE(t->power) - 1;
            rc = mp_ht_visit_home(t, false, v & mask, walk_one, &w);
        }
        if (rc != MP_WALK_GO_ON)
            break;
        v = cursor_next(v, mask);
        if (v == 0) {
            rc = MP_WALK_SHARD_DONE;
            break;
        }
    }
    mp_shard_unlock(s);
    *cursor = v;
    return rc;
}


void mp_store_maintain(mp_store *st, int shard_index)
{
    mp_shard *s = &st->shards[shard_index];
    if (__atomic_load_n(&s->grow_hint, __ATOMIC_RELAXED))
        shard_grow_table(s);
    mp_shard_lock(s);
    if (mp_ht_expanding(&s->ht)) {
        mp_ht_migrate(&s->ht, MP_HT_MIGRATE_PER_MAINTAIN);
        if (s->ht.retired != NULL)
            __atomic_store_n(&s->grow_hint, 1, __ATOMIC_RELAXED);
    }
    shard_sweep(s);
    /* classes that had to evict since the last call may deserve memory
     * from staler classes even when their own stores are rare */
    if (st->evict_to_free) {
        int moves = 0;
        for (int c = 1; c <= st->arena.nclasses && moves < MP_REBALANCE_PER_MAINTAIN; c++) {
            class_stats *cs = &s->cs[c];
            if (cs->evicted == cs->evicted_seen)
                continue;
            cs->evicted_seen = cs->evicted;
            while (moves < MP_REBALANCE_PER_MAINTAIN && shard_rebalance(s, c))
                moves++;
        }
    }
    /* cache_memlimit lowered: give back one page per call */
    mp_arena *a = &st->arena;
    pthread_mutex_lock(&a->pool_lock);
    bool over = a->in_use > a->budget;
    pthread_mutex_unlock(&a->pool_lock);
    if (over) {
        uint32_t pg = pick_victim_page(s);
        if (pg != UINT32_MAX)
            drain_page(s, pg);   /* the emptied page returns to the pool */
    }
#ifdef MPCACHE_DEBUG
    shard_check(s);
#endif
    pthread_mutex_unlock(&s->lock);
}

/* ---- statistics ---- */

int mp_store_lock_stats(const mp_store *st, uint64_t *acquires, uint64_t *waits, int max)
{
    int n = st->nshards < max ? st->nshards : max;
    for (int i = 0; i < n; i++) {
        acquires[i] = __atomic_load_n(&st->shards[i].lock_acquires, __ATOMIC_RELAXED);
        waits[i] = __atomic_load_n(&st->shards[i].lock_waits, __ATOMIC_RELAXED);
    }
    return n;
}

void mp_store_get_stats(mp_store *st, mp_store_stats *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t buckets = 0;
    for (int i = 0; i < st->nshards; i++) {
        mp_shard *s = &st->shards[i];
        mp_shard_lock(s);
        out->curr_items += s->curr_items;
        out->total_items += s->total_items;
        out->bytes += s->bytes;
        for (int c = 1; c < MP_MAX_SLAB_CLASSES; c++) {
            const class_stats *cs = &s->cs[c];
            out->evictions += cs->evicted;
            out->reclaimed += cs->reclaimed;
            out->expired_unfetched += cs->expired_unfetched;
            out->evicted_unfetched += cs->evicted_unfetched;
            out->evicted_active += cs->evicted_active;
            out->crawler_reclaimed += cs->crawler_reclaimed;
            out->crawler_items_checked += cs->crawler_items_checked;
            out->lrutail_reflocked += cs->lrutail_reflocked;
        }
        buckets += MP_HT_SIZE(s->ht.power) << MP_HT_CHAIN_SHIFT;
        out->hash_bytes += mp_ht_bytes(&s->ht);
        if (mp_ht_expanding(&s->ht))
            out->hash_is_expanding = 1;
        pthread_mutex_unlock(&s->lock);
    }
    out->hash_power_level = (uint64_t)log2_floor(buckets);
    out->store_too_large = __atomic_load_n(&st->too_large, __ATOMIC_RELAXED);
    out->store_no_memory = __atomic_load_n(&st->no_memory, __ATOMIC_RELAXED);
    mp_arena *a = &st->arena;
    pthread_mutex_lock(&a->pool_lock);
    out->slabs_used_pages = a->in_use;
    out->total_malloced = (uint64_t)a->in_use * a->page_size;
    pthread_mutex_unlock(&a->pool_lock);
    out->limit_maxbytes = __atomic_load_n(&st->limit, __ATOMIC_RELAXED);
    out->slab_reassigns = __atomic_load_n(&a->reassigns, __ATOMIC_RELAXED);
}

int mp_store_get_slab_stats(mp_store *st, mp_slab_class_stats *out, int max)
{
    mp_arena *a = &st->arena;
    int n = a->nclasses + 1;
    if (n > max)
        n = max;
    memset(out, 0, sizeof(*out) * (size_t)max);
    mp_rel_time oldest[MP_MAX_SLAB_CLASSES];
    bool have[MP_MAX_SLAB_CLASSES] = { false };
    for (int c = 1; c < n; c++) {
        out[c].chunk_size = a->chunk_size[c];
        out[c].chunks_per_page = a->perslab[c];
    }
    for (int i = 0; i < st->nshards; i++) {
        mp_shard *s = &st->shards[i];
        mp_shard_lock(s);
        for (int c = 1; c < n; c++) {
            mp_slab_class_stats *o = &out[c];
            const mp_slab_class *sc = &s->slabs.cls[c];
            const class_stats *cs = &s->cs[c];
            o->total_pages += sc->nslabs;
            o->used_chunks += sc->used;
            o->mem_requested += sc->requested;
            o->number += mp_s3_count(&s->q[c]);
            bool empty;
            mp_rel_time t = mp_s3_tail_time(&s->q[c], &empty);
            if (!empty && (!have[c] || t < oldest[c])) {
                oldest[c] = t;
                have[c] = true;
            }
            o->evicted += cs->evicted;
            o->evicted_nonzero += cs->evicted_nonzero;
            if (cs->evicted_time > o->evicted_time)
                o->evicted_time = cs->evicted_time;
            o->outofmemory += cs->outofmemory;
            o->reclaimed += cs->reclaimed;
            o->expired_unfetched += cs->expired_unfetched;
            o->evicted_unfetched += cs->evicted_unfetched;
            o->evicted_active += cs->evicted_active;
            o->crawler_reclaimed += cs->crawler_reclaimed;
            o->crawler_items_checked += cs->crawler_items_checked;
            o->lrutail_reflocked += cs->lrutail_reflocked;
            o->get_hits += cs->get_hits;
            o->cmd_set += cs->cmd_set;
            o->delete_hits += cs->delete_hits;
            o->incr_hits += cs->incr_hits;
            o->decr_hits += cs->decr_hits;
            o->cas_hits += cs->cas_hits;
            o->cas_badval += cs->cas_badval;
            o->touch_hits += cs->touch_hits;
        }
        pthread_mutex_unlock(&s->lock);
    }
    mp_rel_time now = mp_current_time;
    for (int c = 1; c < n; c++) {
        out[c].total_chunks = out[c].total_pages * out[c].chunks_per_page;
        out[c].free_chunks = out[c].total_chunks - out[c].used_chunks;
        out[c].age = have[c] && now > oldest[c] ? now - oldest[c] : 0;
    }
    return n;
}

uint64_t mp_item_size_memcached(const mp_store *st, const mp_item *it)
{
    return item_ntotal(st, it);
}

void mp_store_watch_evictions(mp_store *st, const int *kinds, int kind,
                              void (*fn)(void *arg, const mp_item *it), void *arg)
{
    st->on_evict = fn;
    st->evict_arg = arg;
    st->evict_kind = kind;
    st->watch_kinds = kinds;
}
