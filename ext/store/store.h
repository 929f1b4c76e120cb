/* The item store: shards (one lock each), their hash tables, slab arenas,
 * expiry and eviction, and memcached's storage semantics (do_store_item,
 * do_add_delta, touch, flush).  Lock order and ownership: see the note at the
 * top of store.c.
 *
 * Calling convention: functions named mp_shard_* / mp_item_* expect the
 * shard lock held by the caller; functions named mp_store_* take and release
 * it themselves.  Nothing here performs a system call or a general-heap
 * allocation while a shard lock is held. */
#ifndef MP_STORE_H
#define MP_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "settings.h"

/* item->iflags */
#define MP_IT_LINKED   0x01   /* in the hash table */
#define MP_IT_FETCHED  0x02   /* read at least once since stored (meta h, evicted_unfetched) */
#define MP_IT_PENDING  0x04   /* allocated, data still arriving, not linked */
#define MP_IT_STALE    0x08   /* meta: invalidated by md I / ms I */
#define MP_IT_WIN      0x10   /* meta: a W flag has been handed out */
#define MP_IT_KEY_BINARY 0x20 /* meta: stored by ms b, so its key is echoed base64-encoded */
#define MP_IT_FLAGS    0x40   /* a client flags word follows the value (non-zero flags) */
#define MP_IT_FREE     0x80   /* chunk on a free list (store-internal) */

/* Queue and free-list links between items: an arena offset in units of the
 * item alignment, plus one (0 is none).  Half a pointer: 8 bytes less per
 * item, for an arena of at most 2^32 alignment units (32 GiB at the usual
 * 8 bytes; a larger -m takes a larger alignment, slabs.c). */
typedef uint32_t mp_qlink;
typedef struct mp_qbase {
    char *base;
    unsigned shift;
} mp_qbase;

struct mp_item;
static inline struct mp_item *mp_qitem(mp_qbase b, mp_qlink l)
{
    return l != 0 ? (struct mp_item *)(b.base + ((size_t)(l - 1) << b.shift)) : NULL;
}

static inline mp_qlink mp_qlink_of(mp_qbase b, const struct mp_item *it)
{
    return it != NULL ? (mp_qlink)((size_t)((const char *)it - b.base) >> b.shift) + 1 : 0;
}

typedef struct mp_item {
    mp_qlink qnext;            /* eviction queue or free list (store-internal) */
    mp_qlink qprev;
    uint64_t cas;
    mp_rel_time time;          /* last access */
    mp_rel_time exptime;       /* 0 = never */
    uint32_t nbytes;           /* value length INCLUDING the trailing "\r\n" */
    uint8_t nkey;
    uint8_t iflags;
    uint8_t clsid;             /* slab class (store-internal) */
    uint8_t freq;              /* eviction policy state (store-internal) */
    char data[];               /* key, NUL, value with "\r\n", client flags if MP_IT_FLAGS */
} mp_item;

/* 32 bytes, 36 with non-zero client flags (memcached, too, stores flags only
 * when they are not zero): the key index lives outside the item (hash.h),
 * links are 32 bits, and references are counted per slab (slabs.h). */
_Static_assert(offsetof(mp_item, data) == 32, "mp_item header grew");

#define MP_ITEM_FLAGS_BYTES(flags) ((flags) != 0 ? sizeof(uint32_t) : 0)
/* Key and value are where nkey alone says, so a reference holder finds them
 * without the lock (iflags changes under it); the flags word is read under
 * the lock, with the rest of a reply's header line. */
#define MP_ITEM_key(it)   ((it)->data)
#define MP_ITEM_value(it) ((it)->data + (it)->nkey + 1)

static inline uint32_t mp_item_flags(const mp_item *it)
{
    uint32_t f = 0;
    if (it->iflags & MP_IT_FLAGS)
        __builtin_memcpy(&f, MP_ITEM_value(it) + it->nbytes, sizeof(f));
    return f;
}

/* Bytes an item takes in our layout (before rounding to its slab class). */
static inline size_t mp_item_size(size_t nkey, size_t nbytes_with_crlf, uint32_t flags)
{
    return offsetof(mp_item, data) + MP_ITEM_FLAGS_BYTES(flags) + nkey + 1 + nbytes_with_crlf;
}

/* memcached's item header without the cas (sizeof(item) in 1.6.18), which
 * its sizes count from: -I, "bytes", the slab classes. */
#define MEMCACHED_ITEM_HEADER 48

/* memcached's accounting of an item's size (ITEM_ntotal in 1.6.18): used for
 * the "object too large" decision and for the "bytes" statistic, so both match
 * memcached exactly whatever our own header size is. */
static inline size_t mp_item_ntotal_memcached(size_t nkey, size_t nbytes_with_crlf,
                                              uint32_t flags, bool use_cas)
{
    return MEMCACHED_ITEM_HEADER + (use_cas ? 8 : 0) + nkey + 1 + (flags ? 4 : 0) + nbytes_with_crlf;
}

typedef struct mp_shard mp_shard;
typedef struct mp_store mp_store;

/* Shards are a power of two up to this (-t 1024 at 4 per channel). */
#define MP_MAX_SHARDS 4096

/* ---- life cycle (start-up and shutdown only; may allocate) ---- */
mp_store *mp_store_create(const mp_settings *settings, int nshards, char *err, size_t errlen);
void mp_store_destroy(mp_store *st);
int mp_store_nshards(const mp_store *st);
/* Pages the memory limit allows (each at least 1 MiB, and big enough for
 * the largest item). */
uint32_t mp_store_pages(mp_store *st);

/* ---- hashing and locking ---- */
/* The store's key hash (hash.c): one 64x64->128-bit multiply folded to 64
 * bits per 16 bytes of key; neither of memcached's (murmur3, jenkins).
 * "stats settings" shows this name as hash_algorithm. */
#define MP_HASH_NAME "mulfold64"
uint64_t mp_hash(const char *key, size_t nkey);
mp_shard *mp_store_shard(mp_store *st, uint64_t hv);
void mp_shard_lock(mp_shard *s);
void mp_shard_unlock(mp_shard *s);

/* ---- lookups: shard lock held; returned pointer valid until unlock (or,
 * with mp_item_ref, until mp_store_unref) ---- */

/* Finds a live item; an expired or flushed one is unlinked and NULL returned.
 * As in memcached, such a lazy unlink is not "reclaimed" (that counts memory
 * reused at allocation) but get_expired / get_flushed, which the caller counts
 * from *why_missing (optional, MP_MISS_*).
 * Does not mark the item fetched nor bump its access time: see mp_item_bump. */
#define MP_MISS_NONE    0
#define MP_MISS_ABSENT  1
#define MP_MISS_EXPIRED 2
#define MP_MISS_FLUSHED 3
mp_item *mp_item_find(mp_shard *s, const char *key, size_t nkey, uint64_t hv, int *why_missing);

/* Records an access for the eviction policy, sets MP_IT_FETCHED, updates time,
 * and counts a get hit for the item's class ("stats slabs" get_hits). */
void mp_item_bump(mp_shard *s, mp_item *it);

/* Sets a new expiry (rel time, already converted by mp_realtime). */
void mp_item_set_exptime(mp_shard *s, mp_item *it, mp_rel_time exptime);

/* Unlinks and frees a linked item (with references held, the last
 * mp_store_unref frees it). */
void mp_item_unlink(mp_shard *s, mp_item *it);

/* ---- references: an item's bytes outliving the shard lock ----
 * A reply that sends a value straight from the item (no copy into the output
 * buffer) holds a reference until the send completes, as memcached's item
 * refcount does.  A referenced item can still be unlinked by anything (delete,
 * overwrite, expiry, flush, eviction; statistics count it gone at once), but
 * its chunk is not reused: eviction skips it, its slab is never emptied for
 * another class or shard, and incr/decr do not write into it.  Each
 * reference pins its slab (64 KiB, or a whole page for a large item), so
 * hold one only while a send is in flight.  Costs nothing to unreferenced
 * items beyond a compare here and there.  mp_store_destroy frees everything,
 * references or not; no mp_store_unref may follow it. */

/* Shard lock held: takes a reference on a linked item found by mp_item_find.
 * While any reference is held the item's memory is not freed or reused and
 * its key and value bytes do not change, even if it is unlinked meanwhile
 * (delete, overwrite, expiry, flush, eviction); the last mp_store_unref frees
 * an unlinked item.  */
void mp_item_ref(mp_shard *s, mp_item *it);
/* No lock held (takes the item's shard lock itself). Any thread. */
void mp_store_unref(mp_store *st, mp_item *it);
/* Shard lock held: references held on the items of its slab (they are
 * counted per slab, not per item; tests and debugging). */
uint32_t mp_item_slab_refs(mp_shard *s, const mp_item *it);

/* ---- allocation of a new item whose data will be filled by the caller ----
 * Not under a lock: takes the shard lock itself for the slab work.  Returns
 * MP_ALLOC_OK and *out, MP_ALLOC_TOO_LARGE (memcached ntotal > -I) or
 * MP_ALLOC_NO_MEMORY (-M and full, or nothing evictable).  The item is
 * MP_IT_PENDING: the caller copies nkey/value bytes into MP_ITEM_value() and
 * then either stores it with mp_store_item() or drops it with mp_store_release(). */
#define MP_ALLOC_OK        0
#define MP_ALLOC_TOO_LARGE 1
#define MP_ALLOC_NO_MEMORY 2
int mp_store_alloc(mp_store *st, const char *key, size_t nkey, uint64_t hv,
                   uint32_t flags, mp_rel_time exptime, uint32_t nbytes_with_crlf,
                   mp_item **out);
void mp_store_release(mp_store *st, mp_item *it, uint64_t hv);

/* ---- memcached's storage semantics ---- */
typedef enum {
    MP_SET = 1, MP_ADD, MP_REPLACE, MP_APPEND, MP_PREPEND, MP_CAS
} mp_store_op;

typedef enum {
    MP_STORED = 1, MP_NOT_STORED, MP_EXISTS, MP_NOT_FOUND, MP_TOO_LARGE, MP_NO_MEMORY
} mp_store_result;

/* Stores a PENDING item from mp_store_alloc (consumes it in every case).
 * cas_in is the client's unique for MP_CAS (0 means "match nothing": EXISTS if
 * present, NOT_FOUND if not); for append/prepend a non-zero cas_in that does
 * not match gives EXISTS (meta ms C).  On success *cas_out (optional) gets the
 * new cas.  append/prepend keep the old item's flags and exptime and need a
 * larger allocation: when the result would exceed -I or memory is short, the
 * answer is NOT_STORED, as memcached 1.6.18 answers. */
mp_store_result mp_store_item(mp_store *st, mp_item *it, uint64_t hv, mp_store_op op,
                              uint64_t cas_in, uint64_t *cas_out);

/* mp_store_item with the meta set's options (memcached's do_store_item as ms
 * drives it):
 *   MP_STORE_STALE_OK   ms I: for MP_CAS, a non-zero cas_in lower than the
 *                       item's stores the value anyway, marked stale, with
 *                       the old item's exptime and win state (CAS_STALE);
 *   MP_STORE_KEY_BINARY ms b: the stored item echoes its key in base64. */
#define MP_STORE_STALE_OK   0x01
#define MP_STORE_KEY_BINARY 0x02
mp_store_result mp_store_item_ex(mp_store *st, mp_item *it, uint64_t hv, mp_store_op op,
                                 uint64_t cas_in, unsigned opts, uint64_t *cas_out);
/* Lock held: mp_store_item_ex. */
mp_store_result mp_item_store(mp_shard *s, mp_item *it, uint64_t hv, mp_store_op op,
                              uint64_t cas_in, unsigned opts, uint64_t *cas_out);

/* A too-large or out-of-memory "set" removes the existing item, as memcached does. */
void mp_store_delete_quiet(mp_store *st, const char *key, size_t nkey, uint64_t hv);
/* Lock held: the same. */
void mp_item_unlink_key(mp_shard *s, const char *key, size_t nkey, uint64_t hv);

/* incr/decr with memcached's exact semantics (64-bit, incr wraps, decr floors
 * at 0, in-place space padding when the result is not longer, new cas).
 * Writes the decimal result into buf (NUL-terminated, >= 21 bytes). */
typedef enum { MP_DELTA_OK = 1, MP_DELTA_NON_NUMERIC, MP_DELTA_NOT_FOUND,
               MP_DELTA_EOM, MP_DELTA_EXISTS } mp_delta_result;
mp_delta_result mp_store_arith(mp_store *st, const char *key, size_t nkey, uint64_t hv,
                               bool incr, uint64_t delta, char *buf, uint64_t *cas_out);

/* ---- the meta protocol (memcached's mg / md / ma semantics) ---- */

/* incr/decr under the shard lock (ma holds it for the whole command): as
 * mp_store_arith, plus a compare: a non-zero cas_in that is not the item's
 * gives MP_DELTA_EXISTS (checked after the empty-value test, before the
 * digits, as memcached does).  On success *out is the item holding the
 * result, and *moved tells whether the result was longer than the old value:
 * memcached's ma then goes on with the old, unlinked item, so its T and N
 * change nothing stored.  A referenced item is not written in place: *out is
 * then a new item with the same padded value, flags and state, standing for
 * the old one (*moved false: T and N apply to it). */
mp_delta_result mp_item_delta(mp_shard *s, const char *key, size_t nkey, uint64_t hv,
                              bool incr, uint64_t delta, uint64_t cas_in, char *buf,
                              mp_item **out, bool *moved);

/* Lock held: creates and links an item holding value[0, vlen), client flags
 * 0, no expiry and a new cas (mg N and ma N on a miss).  NULL when there is
 * no memory for it. */
mp_item *mp_item_vivify(mp_shard *s, const char *key, size_t nkey, uint64_t hv,
                        const char *value, size_t vlen);

/* Lock held: records an access (eviction policy, MP_IT_FETCHED, access
 * time) without counting a hit: mg bumps after composing its reply, so that
 * h and l show the state before the fetch, and not at all with u. */
void mp_item_access(mp_shard *s, mp_item *it);
/* Lock held: counts a get hit of the item's class, or a touch hit (mg T). */
void mp_item_count_hit(mp_shard *s, mp_item *it, bool touched);

/* Lock held: a W (win) flag was handed out for this item. */
void mp_item_set_win(mp_shard *s, mp_item *it);

/* md: delete, or with invalidate mark stale (clearing the win flag, with a
 * new cas and optionally a new exptime), when the item exists and, with
 * has_cas, its cas matches. */
typedef struct mp_mdelete {
    bool has_cas, invalidate, set_ttl;
    uint64_t cas;
    mp_rel_time exptime;
} mp_mdelete;
typedef enum { MP_MD_DELETED = 1, MP_MD_INVALIDATED, MP_MD_NOT_FOUND,
               MP_MD_EXISTS } mp_mdelete_result;
mp_mdelete_result mp_store_mdelete(mp_store *st, const char *key, size_t nkey, uint64_t hv,
                                   const mp_mdelete *md);
mp_mdelete_result mp_item_mdelete(mp_shard *s, const char *key, size_t nkey, uint64_t hv,
                                  const mp_mdelete *md);   /* lock held */

/* delete: true when an item was removed. */
bool mp_store_delete(mp_store *st, const char *key, size_t nkey, uint64_t hv);
bool mp_item_delete(mp_shard *s, const char *key, size_t nkey, uint64_t hv);   /* lock held */

/* touch: true when found (and its exptime changed). */
bool mp_store_touch(mp_store *st, const char *key, size_t nkey, uint64_t hv, mp_rel_time exptime);
bool mp_item_touch(mp_shard *s, const char *key, size_t nkey, uint64_t hv,
                   mp_rel_time exptime);   /* lock held */

/* flush_all [delay]: delay 0 (or negative) flushes now (items stored before it
 * are dead even within the same second); otherwise at rel time realtime(delay). */
void mp_store_flush(mp_store *st, int64_t delay);

/* cache_memlimit, in bytes. */
void mp_store_set_limit(mp_store *st, size_t bytes);

/* Global cas counter (server-wide unique, 64-bit). */
uint64_t mp_store_next_cas(mp_store *st);

/* ---- maintenance, run by the shard's home channel from its loop ----
 * Bounded work per call (expiry sweep of a slice of the table, incremental
 * hash table growth); returns quickly. */
void mp_store_maintain(mp_store *st, int shard_index);

/* ---- walks: the key dumps (stats cachedump, lru_crawler metadump) ----
 * Visits the live items of one shard a batch of buckets at a time under
 * its lock, from *cursor (0: the start), without stopping the table from
 * growing: the cursor counts in reverse-binary order, so after a doubling
 * between batches every item linked for the whole walk is visited once and
 * none twice.  fn(arg, NULL) opens each bucket; fn(arg, it) sees its items
 * (expired and flushed ones are skipped) under the shard lock, and must not
 * block.  fn returns MP_WALK_GO_ON, or anything else to stop: the cursor
 * then stays at the bucket it stopped in, which the next call visits again
 * from its start.  Returns fn's stop, MP_WALK_GO_ON after max_buckets (the
 * cursor at the next one), or MP_WALK_SHARD_DONE. */
#define MP_WALK_GO_ON      0
#define MP_WALK_SHARD_DONE 1
typedef int (*mp_walk_fn)(void *arg, const mp_item *it);
int mp_store_walk(mp_store *st, int shard, uint64_t *cursor, int max_buckets,
                  mp_walk_fn fn, void *arg);

/* Start-up only: fn(arg, item) is called for each item evicted, with its
 * shard lock held, while *kinds (read relaxed) has kind ("watch
 * evictions"). */
void mp_store_watch_evictions(mp_store *st, const int *kinds, int kind,
                              void (*fn)(void *arg, const mp_item *it), void *arg);

/* memcached's size of an item (ITEM_ntotal), as metadump prints it. */
uint64_t mp_item_size_memcached(const mp_store *st, const mp_item *it);

/* ---- statistics (take each shard lock briefly) ---- */

/* Per shard, without locking: times its lock was taken, and times a taker
 * found it held and waited.  Returns how many shards (at most max). */
int mp_store_lock_stats(const mp_store *st, uint64_t *acquires, uint64_t *waits, int max);
typedef struct mp_store_stats {
    uint64_t curr_items, total_items, bytes;
    uint64_t evictions, reclaimed, expired_unfetched, evicted_unfetched;
    uint64_t evicted_active, crawler_reclaimed, crawler_items_checked, lrutail_reflocked;
    uint64_t store_too_large, store_no_memory;
    uint64_t total_malloced, limit_maxbytes;
    uint64_t hash_power_level, hash_bytes, hash_is_expanding;
    uint64_t slab_reassigns;
    uint64_t slabs_used_pages;
} mp_store_stats;
void mp_store_get_stats(mp_store *st, mp_store_stats *out);

/* Class ids are 1 .. MP_MAX_SLAB_CLASSES - 1: memcached stops at 63, which at
 * a growth factor below ~1.2 leaves everything from a few KiB up to -I in
 * one page-sized class; ours reach half a page at the default 1.08. */
#define MP_MAX_SLAB_CLASSES 128

/* A set of class ids (the class lists of lru_crawler). */
typedef struct mp_class_set {
    uint64_t w[MP_MAX_SLAB_CLASSES / 64];
} mp_class_set;

static inline void mp_class_set_add(mp_class_set *s, unsigned id)
{
    s->w[id / 64] |= (uint64_t)1 << (id % 64);
}

static inline bool mp_class_set_has(const mp_class_set *s, unsigned id)
{
    return id < MP_MAX_SLAB_CLASSES && ((s->w[id / 64] >> (id % 64)) & 1);
}

/* The number of the largest class (classes are 1 .. that). */
int mp_store_nclasses(const mp_store *st);

/* Per slab class, summed over shards, for "stats slabs" and "stats items". */
typedef struct mp_slab_class_stats {
    uint32_t chunk_size, chunks_per_page;
    uint64_t total_pages, total_chunks, used_chunks, free_chunks;
    uint64_t mem_requested;
    uint64_t number;           /* items linked */
    uint64_t age;              /* seconds since oldest item's last access */
    uint64_t evicted, evicted_nonzero, evicted_time, outofmemory, reclaimed,
             expired_unfetched, evicted_unfetched, evicted_active, crawler_reclaimed,
             crawler_items_checked, lrutail_reflocked;
    uint64_t get_hits, cmd_set, delete_hits, incr_hits, decr_hits, cas_hits,
             cas_badval, touch_hits;
} mp_slab_class_stats;
/* Fills per-class stats; returns the number of the largest class + 1. */
int mp_store_get_slab_stats(mp_store *st, mp_slab_class_stats *out, int max);

#endif
