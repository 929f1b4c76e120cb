/* Item memory: one arena reserved at start-up, cut into pages that shards take
 * against a global budget (-m), and slab classes carved from them.
 * Store-internal.
 *
 *   arena  [page][page][page] ...          page: the unit of the -m budget,
 *           |      |                             big enough for the largest item
 *           |      +-- WHOLE: one slab of a large class
 *           +-- SPLIT: units of 64 KiB, each free or part of a slab of
 *               1, 2, 4 ... units (MP_SLAB_MIN_CHUNKS)
 *
 * Slabs smaller than a page let a shard hold items of many sizes with
 * little memory: with several shards, page-sized slabs per shard per class
 * would spend most of a small -m on classes with a few items each.  A page
 * returns to the global pool as soon as nothing in it is used.
 *
 * Locking: the arena's pool (free pages, budget) has its own mutex, a leaf
 * taken under a shard lock for a few instructions.  Everything else here
 * (class free lists, slab metadata of a shard's pages) is protected by the
 * lock of the shard that owns the page. */
#ifndef MP_SLABS_H
#define MP_SLABS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "debug.h"
#include "store.h"

#define MP_UNIT_SHIFT 16
#define MP_UNIT_SIZE ((size_t)1 << MP_UNIT_SHIFT)
/* Every slab holds at least 8 chunks, so at most an eighth of it is lost to
 * rounding: a class of chunks up to MP_UNIT_SIZE / 8 takes 64 KiB slabs
 * (one unit), a bigger one the smallest power of two of units that holds 8
 * (2 to half a page), aligned to that power within its page, and one whose
 * 8 chunks do not fit in half a page a whole page. */
#define MP_SLAB_MIN_CHUNKS 8
/* Classes of chunks from this size up grow by at least this factor
 * (memcached's default), whatever -f (slabs.c). */
#define MP_COARSE_CHUNK 4096
#define MP_COARSE_FACTOR 1.25
/* memcached's page size; larger when -I needs it. */
#define MP_PAGE_MIN ((size_t)1024 * 1024)
/* Address space reserved so that cache_memlimit can raise the limit without
 * moving the arena; PROT_NONE until used, so it costs nothing.  At most what
 * 32-bit item links reach (store.h): 32 GiB with 8-byte aligned items, or
 * -m itself when that is larger (and items are aligned to more). */
#define MP_ARENA_RESERVE ((size_t)32 << 30)

enum { MP_PAGE_FREE = 0, MP_PAGE_WHOLE, MP_PAGE_SPLIT };

#define MP_NONE 0u   /* list links and "current slab" are index + 1; 0 is none */

typedef struct mp_page_meta {
    uint32_t next, prev;     /* owner's circular page list, or the pool's free stack */
    int32_t shard;           /* owner, -1 in the pool */
    uint8_t kind;            /* MP_PAGE_* */
    uint16_t free_units;     /* SPLIT: units not given to a class */
} mp_page_meta;

typedef struct mp_slab_meta {
    uint32_t next, prev;     /* class's circular slab list, or the shard's free units */
    uint32_t used;           /* chunks holding an item (linked, pending, or
                                a zombie: see mp_slab_ref) */
    uint32_t carved;         /* chunks [0, carved) have been handed out once */
    uint32_t pinned;         /* pending items plus references: while
                                non-zero the slab is never emptied */
    uint32_t refs;           /* references to its items (mp_item_ref) */
    uint32_t zombies;        /* items unlinked while refs > 0, not yet freed */
    uint8_t clsid;           /* 0: free unit */
} mp_slab_meta;

typedef struct mp_arena {
    char *base;
    mp_qbase qb;                 /* item links: base, log2 of the item alignment */
    size_t page_size;
    uint32_t units_per_page;
    uint32_t pages_reserved;     /* address space */
    uint32_t pages_mapped;       /* read/write so far (pool lock) */
    uint32_t budget;             /* pages the limit allows (pool lock) */
    uint32_t in_use;             /* pages owned by shards (pool lock) */
    uint32_t fresh;              /* never used: [fresh, pages_mapped) */
    uint32_t free_head;          /* pool's stack of released pages */
    pthread_mutex_t pool_lock;   /* leaf */
    mp_page_meta *pages;
    mp_slab_meta *slabs;         /* one per unit */
    int nclasses;                /* classes are 1..nclasses */
    uint32_t chunk_size[MP_MAX_SLAB_CLASSES];
    uint32_t perslab[MP_MAX_SLAB_CLASSES];
    uint32_t slab_units[MP_MAX_SLAB_CLASSES];   /* units per slab; [0] = 1 */
    uint64_t reassigns;          /* pages or slabs moved between classes/shards (atomic) */
} mp_arena;

typedef struct mp_slab_class {
    mp_item *free;               /* chunks freed, linked through qnext/qprev */
    uint32_t nfree;
    uint32_t cur;                /* slab being carved */
    uint32_t slabs;              /* circular list of the class's slabs */
    uint32_t nslabs;
    uint64_t used;               /* chunks holding items */
    uint64_t requested;          /* bytes those items need (our header) */
} mp_slab_class;

typedef struct mp_slabs {
    mp_slab_class cls[MP_MAX_SLAB_CLASSES];
    uint32_t free_units;         /* circular list of unassigned units */
    uint32_t nfree_units;
    uint32_t pages;              /* circular list of owned pages */
    uint32_t npages;
    uint32_t empty_pages;        /* SPLIT pages with every unit free */
    uint32_t page_cursor;        /* where the next victim-page scan starts */
    uint32_t run_cursor;         /* where the next search for free units starts */
    int32_t shard;
    bool hoard;                  /* keep emptied pages (a move is in progress) */
} mp_slabs;

/* ---- start-up ---- */
int mp_arena_init(mp_arena *a, const mp_settings *settings, size_t limit,
                  char *err, size_t errlen);
void mp_arena_destroy(mp_arena *a);
/* Raises or lowers the page budget (maps more address space first: a system
 * call, so never under a shard lock).  Returns the budget in bytes. */
size_t mp_arena_set_limit(mp_arena *a, size_t bytes);
void mp_slabs_init(mp_slabs *sl, int shard);

/* Smallest class whose chunk holds `size` bytes, 0 if none. */
int mp_slabs_clsid(const mp_arena *a, size_t size);

/* ---- shard lock held ---- */

/* A chunk from the class's free list or current slab; NULL if neither has one. */
mp_item *mp_slab_chunk(mp_arena *a, mp_slabs *sl, int cls, size_t size, bool pending);
/* Gives the class one more slab from the shard's free units, from an empty
 * page, or from the global pool.  False when the budget is spent. */
bool mp_slab_grow(mp_arena *a, mp_slabs *sl, int cls);
/* Returns a chunk.  A slab left empty goes back to the shard's free units, a
 * page left empty to the pool (unless sl->hoard). */
void mp_slab_free(mp_arena *a, mp_slabs *sl, mp_item *it, size_t size);
/* A pending item became linked (no longer pins its slab). */
void mp_slab_unpend(mp_arena *a, mp_item *it);

/* The first unit of the slab holding p (every unit of a slab carries its
 * class, and a slab of k units starts at a multiple of k in its page). */
static inline uint32_t mp_slab_of(const mp_arena *a, const void *p)
{
    uint32_t u = (uint32_t)(((const char *)p - a->base) >> MP_UNIT_SHIFT);
    uint32_t pg = u / a->units_per_page, u0 = pg * a->units_per_page;
    if (a->pages[pg].kind == MP_PAGE_WHOLE)
        return u0;
    uint32_t k = a->slab_units[a->slabs[u].clsid];
    return u0 + ((u - u0) & ~(k - 1));
}

/* Is unit u where a slab starts (not a free unit, nor inside a slab)? */
static inline bool mp_slab_is_head(const mp_arena *a, uint32_t u)
{
    uint8_t cls = a->slabs[u].clsid;
    return cls != 0 && ((u % a->units_per_page) & (a->slab_units[cls] - 1)) == 0;
}

/* References are counted per slab, not per item (the item header has no
 * count): a reference pins its item's slab as a pending item does, and an
 * item of a referenced slab that is unlinked stays allocated (a zombie)
 * until the slab's last reference goes. */
static inline void mp_slab_ref(mp_arena *a, const mp_item *it)
{
    mp_slab_meta *m = &a->slabs[mp_slab_of(a, it)];
    m->pinned++;
    m->refs++;
}

/* True when that was the slab's last reference and zombies wait. */
static inline bool mp_slab_unref(mp_arena *a, const mp_item *it)
{
    mp_slab_meta *m = &a->slabs[mp_slab_of(a, it)];
    MP_ASSERT(m->refs > 0 && m->pinned >= m->refs);
    m->pinned--;
    return --m->refs == 0 && m->zombies != 0;
}

static inline bool mp_slab_referenced(const mp_arena *a, const mp_item *it)
{
    return a->slabs[mp_slab_of(a, it)].refs != 0;
}

static inline char *mp_slab_base(const mp_arena *a, uint32_t u)
{
    return a->base + ((size_t)u << MP_UNIT_SHIFT);
}

static inline uint32_t mp_page_of_unit(const mp_arena *a, uint32_t u)
{
    return u / a->units_per_page;
}

/* Moves an empty page (all units free, kind SPLIT) from shard `from` to `to`. */
void mp_page_transfer(mp_arena *a, mp_slabs *from, mp_slabs *to, uint32_t pg);
/* The same in two steps, for a caller that cannot hold both shard locks: the
 * detached page still counts against the budget and belongs to nobody until
 * attached. */
void mp_page_detach(mp_arena *a, mp_slabs *sl, uint32_t pg);
void mp_page_attach(mp_arena *a, mp_slabs *sl, uint32_t pg);
/* Gives an empty page back to the pool. */
void mp_page_release(mp_arena *a, mp_slabs *sl, uint32_t pg);
/* An empty page of the shard, or UINT32_MAX. */
uint32_t mp_slabs_empty_page(const mp_arena *a, const mp_slabs *sl);

#ifdef MPCACHE_DEBUG
/* Debug builds, shard lock held: every list of the shard's slab metadata
 * walked, and each slab's used and pinned counts checked against its
 * chunks (debug.h). */
void mp_slabs_check(const mp_arena *a, const mp_slabs *sl);
#endif

#endif
