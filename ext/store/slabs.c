#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "slabs.h"

/* Under AddressSanitizer the arena is poisoned except the bytes of live
 * items (and the header of free chunks, which the free lists and slab moves
 * read), so an overrun into a neighbouring chunk is reported. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* ---- circular lists threaded through the metadata arrays (links are
 * index + 1, 0 = none) ---- */

#define DEFINE_CLIST(name, type)                                              \
static void name##_add(type *m, uint32_t *head, uint32_t i, bool at_head)     \
{                                                                             \
    uint32_t id = i + 1;                                                      \
    MP_ASSERT(m[i].prev == MP_NONE);   /* on no list already */               \
    if (*head == MP_NONE) {                                                   \
        m[i].next = m[i].prev = id;                                           \
        *head = id;                                                           \
        return;                                                               \
    }                                                                         \
    uint32_t h = *head - 1, t = m[h].prev - 1;                                \
    m[i].next = *head;                                                        \
    m[i].prev = t + 1;                                                        \
    m[t].next = id;                                                           \
    m[h].prev = id;                                                           \
    if (at_head)                                                              \
        *head = id;                                                           \
}                                                                             \
static void name##_del(type *m, uint32_t *head, uint32_t i)                   \
{                                                                             \
    uint32_t id = i + 1;                                                      \
    MP_ASSERT(*head != MP_NONE && m[i].next != MP_NONE && m[i].prev != MP_NONE); \
    MP_ASSERT(m[m[i].prev - 1].next == id && m[m[i].next - 1].prev == id);    \
    if (m[i].next == id) {                                                    \
        *head = MP_NONE;                                                      \
    } else {                                                                  \
        m[m[i].prev - 1].next = m[i].next;                                    \
        m[m[i].next - 1].prev = m[i].prev;                                    \
        if (*head == id)                                                      \
            *head = m[i].next;                                                \
    }                                                                         \
    m[i].next = m[i].prev = MP_NONE;                                          \
}

DEFINE_CLIST(slist, mp_slab_meta)
DEFINE_CLIST(plist, mp_page_meta)

/* ---- start-up ---- */

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static uint32_t pages_for(const mp_arena *a, size_t bytes)
{
    size_t n = bytes / a->page_size;
    if (n < 1)
        n = 1;   /* -m below one page: still able to store something */
    if (n > a->pages_reserved)
        n = a->pages_reserved;
    return (uint32_t)n;
}

int mp_arena_init(mp_arena *a, const mp_settings *settings, size_t limit,
                  char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    pthread_mutex_init(&a->pool_lock, NULL);

    /* The largest item memcached accepts, in our layout: ours differs from
     * memcached's ntotal by header size, cas and the flags word. */
    size_t max_own = (size_t)settings->item_size_max + offsetof(mp_item, data) -
                     MEMCACHED_ITEM_HEADER - (settings->use_cas ? 8 : 0);
    a->page_size = round_up(max_own > MP_PAGE_MIN ? max_own : MP_PAGE_MIN, MP_UNIT_SIZE);
    a->units_per_page = (uint32_t)(a->page_size / MP_UNIT_SIZE);

    size_t limit_pages = limit / a->page_size;
    if (limit_pages < 1)
        limit_pages = 1;
    /* 32-bit links reach 2^32 - 1 alignment units: 8 bytes cover 32 GiB,
     * and a limit beyond takes the next power of two that covers it */
    unsigned shift = 3;
    while (((size_t)UINT32_MAX << shift) < limit_pages * a->page_size)
        shift++;
    size_t reach = ((size_t)UINT32_MAX << shift) / a->page_size * a->page_size;
    size_t reserve = MP_ARENA_RESERVE;
    if (reserve < limit_pages * a->page_size)
        reserve = limit_pages * a->page_size;
    if (reserve > reach)
        reserve = reach;
    reserve = reserve / a->page_size * a->page_size;
    void *base = mmap(NULL, reserve, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        /* address space is limited (ulimit -v): reserve just the limit */
        reserve = limit_pages * a->page_size;
        base = mmap(NULL, reserve, PROT_NONE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED) {
            snprintf(err, errlen, "cannot reserve %zu bytes for items: %s",
                     reserve, strerror(errno));
            return -1;
        }
    }
    a->base = base;
    a->qb = (mp_qbase){ .base = base, .shift = shift };
    a->pages_reserved = (uint32_t)(reserve / a->page_size);
    if (mprotect(base, limit_pages * a->page_size, PROT_READ | PROT_WRITE) != 0) {
        snprintf(err, errlen, "cannot map %zu bytes for items: %s",
                 limit_pages * a->page_size, strerror(errno));
        munmap(base, reserve);
        a->base = NULL;
        return -1;
    }
    a->pages_mapped = (uint32_t)limit_pages;
    a->budget = (uint32_t)limit_pages;

    /* calloc'ed metadata stays untouched (not resident) until pages are used */
    a->pages = calloc(a->pages_reserved, sizeof(mp_page_meta));
    a->slabs = calloc((size_t)a->pages_reserved * a->units_per_page, sizeof(mp_slab_meta));
    if (a->pages == NULL || a->slabs == NULL) {
        snprintf(err, errlen, "out of memory for slab metadata");
        mp_arena_destroy(a);
        return -1;
    }

    /* Classes as memcached builds them, from memcached's header plus -n
     * (not ours: with cas our 56 bytes are its 48 plus the cas), growing by
     * -f, aligned (8 bytes up to 32 GiB), up to half a page; the last class
     * is a whole page and holds the largest item.  Counting from memcached's header puts an
     * item in a chunk no bigger than memcached's at the same -f (at 300-byte
     * values 384 bytes, where counting from our header gave 440).
     *
     * Unlike memcached, the classes are not cut at 63, so a factor below
     * 1.25 still ends at half a page, and the default is 1.08 (settings.h):
     * a chunk wastes 4% on average instead of 11% where items are many.
     * From MP_COARSE_CHUNK up they grow by at least MP_COARSE_FACTOR: large
     * items are few per class, and spread over three times as many classes
     * (each with its own queues and first slab) they hit less when
     * popularity moves to them.  Measured on the hit-ratio matrix
     * (bench/hitmatrix.py, docs/ARCHITECTURE.md).
     *
     * Below memcached's first class come classes of our own, from our
     * smallest item (a 1-byte key and an empty value) up by -f: an item
     * smaller than memcached's smallest chunk (96 bytes at -n 48: a counter,
     * a 50-byte value) takes a chunk its own size instead of 96 bytes. */
    double factor = settings->factor;   /* > 1: the command line checks it */
    size_t align = (size_t)1 << shift;
    size_t first = round_up(MEMCACHED_ITEM_HEADER + (size_t)(settings->chunk_size > 0 ? settings->chunk_size : 48), align);
    size_t size = round_up(mp_item_size(1, 2, 0), align);
    int i = 1;
    while (i < MP_MAX_SLAB_CLASSES - 1 && size <= a->page_size / 2) {
        a->chunk_size[i] = (uint32_t)size;
        uint32_t k = 1;
        while ((size_t)k * MP_UNIT_SIZE < MP_SLAB_MIN_CHUNKS * size)
            k <<= 1;
        if ((size_t)k * MP_UNIT_SIZE > a->page_size / 2)
            k = a->units_per_page;
        a->slab_units[i] = k;
        a->perslab[i] = (uint32_t)((size_t)k * MP_UNIT_SIZE / size);
        double f = size >= MP_COARSE_CHUNK && factor < MP_COARSE_FACTOR ? MP_COARSE_FACTOR : factor;
        size_t next = round_up((size_t)((double)size * f), align);
        next = next > size ? next : size + align;
        size = size < first && next > first ? first : next;
        i++;
    }
    a->chunk_size[i] = (uint32_t)a->page_size;
    a->perslab[i] = 1;
    a->slab_units[i] = a->units_per_page;
    a->slab_units[0] = 1;
    a->nclasses = i;
    return 0;
}

void mp_arena_destroy(mp_arena *a)
{
    if (a->base != NULL)
        munmap(a->base, (size_t)a->pages_reserved * a->page_size);
    free(a->pages);
    free(a->slabs);
    pthread_mutex_destroy(&a->pool_lock);
    a->base = NULL;
    a->pages = NULL;
    a->slabs = NULL;
}

size_t mp_arena_set_limit(mp_arena *a, size_t bytes)
{
    uint32_t want = pages_for(a, bytes);
    pthread_mutex_lock(&a->pool_lock);
    uint32_t mapped = a->pages_mapped;
    pthread_mutex_unlock(&a->pool_lock);
    if (want > mapped) {
        if (mprotect(a->base + (size_t)mapped * a->page_size,
                     (size_t)(want - mapped) * a->page_size, PROT_READ | PROT_WRITE) != 0)
            want = mapped;
    }
    pthread_mutex_lock(&a->pool_lock);
    if (want > a->pages_mapped)
        a->pages_mapped = want;
    a->budget = want;
    pthread_mutex_unlock(&a->pool_lock);
    return (size_t)want * a->page_size;
}

void mp_slabs_init(mp_slabs *sl, int shard)
{
    memset(sl, 0, sizeof(*sl));
    sl->shard = shard;
}

int mp_slabs_clsid(const mp_arena *a, size_t size)
{
    /* chunk sizes ascend: 69 classes at the default -f, up to 127 */
    if (size > a->chunk_size[a->nclasses])
        return 0;
    int lo = 1, hi = a->nclasses;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (size <= a->chunk_size[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* ---- the pool ---- */

static uint32_t pool_take(mp_arena *a)
{
    uint32_t pg = UINT32_MAX;
    pthread_mutex_lock(&a->pool_lock);
    if (a->in_use < a->budget) {
        if (a->free_head != MP_NONE) {
            pg = a->free_head - 1;
            a->free_head = a->pages[pg].next;
        } else if (a->fresh < a->pages_mapped) {
            pg = a->fresh++;
        }
        if (pg != UINT32_MAX)
            a->in_use++;
    }
    pthread_mutex_unlock(&a->pool_lock);
    return pg;
}

static void pool_give(mp_arena *a, uint32_t pg)
{
    pthread_mutex_lock(&a->pool_lock);
    MP_ASSERT(a->in_use > 0);
    a->pages[pg].kind = MP_PAGE_FREE;
    a->pages[pg].shard = -1;
    a->pages[pg].prev = MP_NONE;
    a->pages[pg].next = a->free_head;
    a->free_head = pg + 1;
    a->in_use--;
    pthread_mutex_unlock(&a->pool_lock);
}

/* ---- pages and units of a shard ---- */

/* The page becomes an empty SPLIT page, every unit on the shard's free list:
 * the one representation of "free" within a shard. */
static void page_split_free(mp_arena *a, mp_slabs *sl, uint32_t pg)
{
    mp_page_meta *p = &a->pages[pg];
    p->kind = MP_PAGE_SPLIT;
    p->free_units = (uint16_t)a->units_per_page;
    uint32_t u0 = pg * a->units_per_page;
    for (uint32_t k = 0; k < a->units_per_page; k++) {
        memset(&a->slabs[u0 + k], 0, sizeof(mp_slab_meta));
        /* at the tail: units of partly used pages are taken first, so empty
         * pages stay whole for large classes */
        slist_add(a->slabs, &sl->free_units, u0 + k, false);
    }
    sl->nfree_units += a->units_per_page;
    sl->empty_pages++;
}

static void page_attach_empty(mp_arena *a, mp_slabs *sl, uint32_t pg)
{
    a->pages[pg].shard = sl->shard;
    plist_add(a->pages, &sl->pages, pg, false);
    sl->npages++;
    page_split_free(a, sl, pg);
}

static void page_detach_empty(mp_arena *a, mp_slabs *sl, uint32_t pg)
{
    uint32_t u0 = pg * a->units_per_page;
    for (uint32_t k = 0; k < a->units_per_page; k++)
        slist_del(a->slabs, &sl->free_units, u0 + k);
    sl->nfree_units -= a->units_per_page;
    sl->empty_pages--;
    if (sl->page_cursor == pg + 1)
        sl->page_cursor = MP_NONE;
    if (sl->run_cursor == pg + 1)
        sl->run_cursor = MP_NONE;
    plist_del(a->pages, &sl->pages, pg);
    sl->npages--;
}

void mp_page_release(mp_arena *a, mp_slabs *sl, uint32_t pg)
{
    page_detach_empty(a, sl, pg);
    pool_give(a, pg);
}

void mp_page_transfer(mp_arena *a, mp_slabs *from, mp_slabs *to, uint32_t pg)
{
    page_detach_empty(a, from, pg);
    page_attach_empty(a, to, pg);
    __atomic_add_fetch(&a->reassigns, 1, __ATOMIC_RELAXED);
}

void mp_page_detach(mp_arena *a, mp_slabs *sl, uint32_t pg)
{
    page_detach_empty(a, sl, pg);
    a->pages[pg].shard = -1;
}

void mp_page_attach(mp_arena *a, mp_slabs *sl, uint32_t pg)
{
    page_attach_empty(a, sl, pg);
    __atomic_add_fetch(&a->reassigns, 1, __ATOMIC_RELAXED);
}

uint32_t mp_slabs_empty_page(const mp_arena *a, const mp_slabs *sl)
{
    if (sl->empty_pages == 0 || sl->pages == MP_NONE)
        return UINT32_MAX;
    uint32_t pg = sl->pages - 1;
    for (uint32_t n = 0; n < sl->npages; n++) {
        const mp_page_meta *p = &a->pages[pg];
        if (p->kind == MP_PAGE_SPLIT && p->free_units == a->units_per_page)
            return pg;
        pg = p->next - 1;
    }
    return UINT32_MAX;
}

static void slab_assign(mp_arena *a, mp_slabs *sl, int cls, uint32_t u)
{
    mp_slab_meta *m = &a->slabs[u];
    m->used = m->carved = m->pinned = m->refs = m->zombies = 0;
    m->clsid = (uint8_t)cls;
    mp_slab_class *c = &sl->cls[cls];
    slist_add(a->slabs, &c->slabs, u, false);
    c->nslabs++;
    c->cur = u + 1;
    POISON(mp_slab_base(a, u), (size_t)a->slab_units[cls] * MP_UNIT_SIZE);
}

/* Takes k free units of a SPLIT page of the shard, starting at u0. */
static void units_take(mp_arena *a, mp_slabs *sl, uint32_t u0, uint32_t k)
{
    mp_page_meta *p = &a->pages[mp_page_of_unit(a, u0)];
    if (p->free_units == a->units_per_page)
        sl->empty_pages--;
    for (uint32_t j = 0; j < k; j++)
        slist_del(a->slabs, &sl->free_units, u0 + j);
    sl->nfree_units -= k;
    p->free_units = (uint16_t)(p->free_units - k);
}

/* Pages searched for k free units in a row before an empty page is taken. */
#define MP_RUN_SCAN 64

/* The first unit of k free ones in a row, aligned to k, in a page of the
 * shard: a partly used page first (empty ones stay whole for the large
 * classes), else an empty one; UINT32_MAX if none. */
static uint32_t find_run(mp_arena *a, mp_slabs *sl, uint32_t k)
{
    if (sl->pages == MP_NONE)
        return UINT32_MAX;
    uint32_t empty = UINT32_MAX;
    uint32_t pg = (sl->run_cursor != MP_NONE ? sl->run_cursor : sl->pages) - 1;
    uint32_t n = sl->npages < MP_RUN_SCAN ? sl->npages : MP_RUN_SCAN;
    for (uint32_t i = 0; i < n; i++, pg = a->pages[pg].next - 1) {
        const mp_page_meta *p = &a->pages[pg];
        if (p->kind != MP_PAGE_SPLIT || p->free_units < k)
            continue;
        uint32_t u0 = pg * a->units_per_page;
        if (p->free_units == a->units_per_page) {
            if (empty == UINT32_MAX)
                empty = u0;
            continue;
        }
        for (uint32_t off = 0; off + k <= a->units_per_page; off += k) {
            uint32_t j = 0;
            while (j < k && a->slabs[u0 + off + j].clsid == 0)
                j++;
            if (j == k) {
                sl->run_cursor = pg + 1;
                return u0 + off;
            }
        }
    }
    if (empty == UINT32_MAX && sl->empty_pages > 0) {
        uint32_t e = mp_slabs_empty_page(a, sl);
        if (e != UINT32_MAX)
            empty = e * a->units_per_page;
    }
    return empty;
}

bool mp_slab_grow(mp_arena *a, mp_slabs *sl, int cls)
{
    uint32_t k = a->slab_units[cls];
    if (k > 1 && k < a->units_per_page) {
        uint32_t u0 = find_run(a, sl, k);
        if (u0 == UINT32_MAX) {
            uint32_t pg = pool_take(a);
            if (pg == UINT32_MAX)
                return false;
            page_attach_empty(a, sl, pg);
            u0 = pg * a->units_per_page;
        }
        units_take(a, sl, u0, k);
        slab_assign(a, sl, cls, u0);
        /* the other units carry the class too (mp_slab_of), on no list */
        for (uint32_t j = 1; j < k; j++) {
            memset(&a->slabs[u0 + j], 0, sizeof(mp_slab_meta));
            a->slabs[u0 + j].clsid = (uint8_t)cls;
        }
        return true;
    }
    if (k == 1) {
        if (sl->nfree_units == 0) {
            uint32_t pg = pool_take(a);
            if (pg == UINT32_MAX)
                return false;
            page_attach_empty(a, sl, pg);
        }
        uint32_t u = sl->free_units - 1;
        slist_del(a->slabs, &sl->free_units, u);
        sl->nfree_units--;
        mp_page_meta *p = &a->pages[mp_page_of_unit(a, u)];
        if (p->free_units == a->units_per_page)
            sl->empty_pages--;
        p->free_units--;
        slab_assign(a, sl, cls, u);
        return true;
    }
    uint32_t pg = mp_slabs_empty_page(a, sl);
    if (pg == UINT32_MAX) {
        pg = pool_take(a);
        if (pg == UINT32_MAX)
            return false;
        page_attach_empty(a, sl, pg);
    }
    /* an empty SPLIT page becomes one WHOLE slab */
    uint32_t u0 = pg * a->units_per_page;
    for (uint32_t k = 0; k < a->units_per_page; k++)
        slist_del(a->slabs, &sl->free_units, u0 + k);
    sl->nfree_units -= a->units_per_page;
    sl->empty_pages--;
    a->pages[pg].kind = MP_PAGE_WHOLE;
    a->pages[pg].free_units = 0;
    slab_assign(a, sl, cls, u0);
    return true;
}

/* ---- chunks ---- */

static inline void free_push(mp_qbase qb, mp_slab_class *c, mp_item *it)
{
    it->qprev = 0;
    it->qnext = mp_qlink_of(qb, c->free);
    if (c->free != NULL)
        c->free->qprev = mp_qlink_of(qb, it);
    c->free = it;
    c->nfree++;
}

static inline void free_unlink(mp_qbase qb, mp_slab_class *c, mp_item *it)
{
    mp_item *prev = mp_qitem(qb, it->qprev), *next = mp_qitem(qb, it->qnext);
    MP_ASSERT(c->nfree > 0 && it->iflags == MP_IT_FREE);
    MP_ASSERT(prev != NULL ? mp_qitem(qb, prev->qnext) == it : c->free == it);
    MP_ASSERT(next == NULL || mp_qitem(qb, next->qprev) == it);
    if (prev != NULL)
        prev->qnext = it->qnext;
    else
        c->free = next;
    if (next != NULL)
        next->qprev = it->qprev;
    it->qnext = it->qprev = 0;
    c->nfree--;
}

mp_item *mp_slab_chunk(mp_arena *a, mp_slabs *sl, int cls, size_t size, bool pending)
{
    mp_slab_class *c = &sl->cls[cls];
    mp_item *it = c->free;
    if (it != NULL) {
        MP_ASSERT(it->clsid == cls);
        free_unlink(a->qb, c, it);
    } else if (c->cur != MP_NONE) {
        uint32_t u = c->cur - 1;
        mp_slab_meta *m = &a->slabs[u];
        it = (mp_item *)(mp_slab_base(a, u) + (size_t)m->carved * a->chunk_size[cls]);
        if (++m->carved == a->perslab[cls])
            c->cur = MP_NONE;
    } else {
        return NULL;
    }
    POISON(it, a->chunk_size[cls]);
    UNPOISON(it, size);
    mp_slab_meta *m = &a->slabs[mp_slab_of(a, it)];
    m->used++;
    if (pending)
        m->pinned++;
    MP_ASSERT(m->clsid == cls && m->used <= m->carved);
    c->used++;
    c->requested += size;
    it->clsid = (uint8_t)cls;
    it->iflags = pending ? MP_IT_PENDING : 0;
    return it;
}

void mp_slab_unpend(mp_arena *a, mp_item *it)
{
    mp_slab_meta *m = &a->slabs[mp_slab_of(a, it)];
    MP_ASSERT((it->iflags & MP_IT_PENDING) && m->pinned > 0);
    m->pinned--;
    it->iflags &= (uint8_t)~MP_IT_PENDING;
}

/* A slab with nothing used leaves its class: its free chunks leave the free
 * list (one pass over the slab, paid once per emptied slab), and its memory
 * goes back to the shard, or the pool. */
static void slab_release(mp_arena *a, mp_slabs *sl, uint32_t u)
{
    mp_slab_meta *m = &a->slabs[u];
    int cls = m->clsid;
    mp_slab_class *c = &sl->cls[cls];
    char *base = mp_slab_base(a, u);
    MP_ASSERT(m->used == 0 && m->pinned == 0 && m->refs == 0 && m->zombies == 0);
    for (uint32_t k = 0; k < m->carved; k++)
        free_unlink(a->qb, c, (mp_item *)(base + (size_t)k * a->chunk_size[cls]));
    slist_del(a->slabs, &c->slabs, u);
    c->nslabs--;
    if (c->cur == u + 1)
        c->cur = MP_NONE;
    m->clsid = 0;
    m->carved = m->used = m->pinned = 0;

    uint32_t pg = mp_page_of_unit(a, u);
    mp_page_meta *p = &a->pages[pg];
    if (p->kind == MP_PAGE_WHOLE) {
        page_split_free(a, sl, pg);
    } else {
        uint32_t k = a->slab_units[cls];
        for (uint32_t j = 0; j < k; j++) {
            a->slabs[u + j].clsid = 0;
            slist_add(a->slabs, &sl->free_units, u + j, true);
        }
        sl->nfree_units += k;
        p->free_units = (uint16_t)(p->free_units + k);
        if (p->free_units == a->units_per_page)
            sl->empty_pages++;
    }
    if (!sl->hoard && p->free_units == a->units_per_page)
        mp_page_release(a, sl, pg);
}

void mp_slab_free(mp_arena *a, mp_slabs *sl, mp_item *it, size_t size)
{
    uint32_t u = mp_slab_of(a, it);
    mp_slab_meta *m = &a->slabs[u];
    mp_slab_class *c = &sl->cls[it->clsid];
    /* freed once, by its last holder: nothing links it */
    MP_ASSERT(!(it->iflags & (MP_IT_FREE | MP_IT_LINKED)));
    MP_ASSERT(m->clsid == it->clsid && m->used > 0 && c->used > 0);
    m->used--;
    if (it->iflags & MP_IT_PENDING)
        m->pinned--;
    MP_ASSERT(m->pinned >= m->refs && m->zombies <= m->used);
    c->used--;
    c->requested -= size;
    it->iflags = MP_IT_FREE;
    free_push(a->qb, c, it);
    POISON(it->data, a->chunk_size[it->clsid] - offsetof(mp_item, data));
    if (m->used == 0)
        slab_release(a, sl, u);
}

#ifdef MPCACHE_DEBUG
/* ---- the whole-shard walk (debug builds, from maintenance) ---- */

/* A circular list of slab metadata from head, every link checked, each
 * entry of class cls (0: the free units); returns its length.  A cycle
 * that never comes back to the head is caught by the bound. */
static uint32_t slab_list_check(const mp_arena *a, uint32_t head, int cls)
{
    uint32_t n = 0, id = head, units = a->pages_reserved * a->units_per_page;
    if (id == MP_NONE)
        return 0;
    do {
        const mp_slab_meta *m = &a->slabs[id - 1];
        MP_ASSERT(n < units && m->clsid == cls);
        MP_ASSERT(m->next != MP_NONE && a->slabs[m->next - 1].prev == id);
        id = m->next;
        n++;
    } while (id != head);
    return n;
}

/* One slab of class cls: its counts against its chunks (a free chunk is
 * exactly MP_IT_FREE; a pending item pins once, as each reference does; an
 * item neither linked nor pending is a zombie, only while references are
 * held). */
static void slab_check(const mp_arena *a, uint32_t u, int cls)
{
    const mp_slab_meta *m = &a->slabs[u];
    MP_ASSERT(m->carved <= a->perslab[cls] && m->used <= m->carved);
    MP_ASSERT(m->zombies == 0 || m->refs != 0);
    uint32_t used = 0, pinned = m->refs, zombies = 0;
    const char *base = mp_slab_base(a, u);
    for (uint32_t k = 0; k < m->carved; k++) {
        const mp_item *it = (const mp_item *)(base + (size_t)k * a->chunk_size[cls]);
        MP_ASSERT(it->clsid == cls);
        if (it->iflags == MP_IT_FREE)
            continue;
        MP_ASSERT(!(it->iflags & MP_IT_FREE));
        used++;
        pinned += (it->iflags & MP_IT_PENDING) != 0;
        zombies += !(it->iflags & (MP_IT_PENDING | MP_IT_LINKED));
    }
    MP_ASSERT(used == m->used && pinned == m->pinned && zombies == m->zombies);
}

void mp_slabs_check(const mp_arena *a, const mp_slabs *sl)
{
    uint32_t npages = 0, empty = 0, pg = sl->pages;
    if (pg != MP_NONE) {
        do {
            const mp_page_meta *p = &a->pages[pg - 1];
            MP_ASSERT(npages < a->pages_reserved && p->shard == sl->shard);
            MP_ASSERT(p->next != MP_NONE && a->pages[p->next - 1].prev == pg);
            if (p->kind == MP_PAGE_SPLIT) {
                uint32_t u0 = (pg - 1) * a->units_per_page, nfree = 0;
                for (uint32_t k = 0; k < a->units_per_page; k++) {
                    const mp_slab_meta *m = &a->slabs[u0 + k];
                    nfree += m->clsid == 0;
                    /* a slab of several units: the others carry its class
                     * and are on no list */
                    if (mp_slab_is_head(a, u0 + k))
                        for (uint32_t j = 1; j < a->slab_units[m->clsid]; j++)
                            MP_ASSERT(a->slabs[u0 + k + j].clsid == m->clsid &&
                                      a->slabs[u0 + k + j].prev == MP_NONE &&
                                      a->slabs[u0 + k + j].used == 0);
                }
                MP_ASSERT(nfree == p->free_units);
                empty += nfree == a->units_per_page;
            } else {
                MP_ASSERT(p->kind == MP_PAGE_WHOLE && p->free_units == 0);
            }
            pg = p->next;
            npages++;
        } while (pg != sl->pages);
    }
    MP_ASSERT(npages == sl->npages && empty == sl->empty_pages);
    MP_ASSERT(slab_list_check(a, sl->free_units, 0) == sl->nfree_units);
    for (int cls = 1; cls <= a->nclasses; cls++) {
        const mp_slab_class *c = &sl->cls[cls];
        MP_ASSERT(slab_list_check(a, c->slabs, cls) == c->nslabs);
        MP_ASSERT(c->cur == MP_NONE || a->slabs[c->cur - 1].clsid == cls);
        uint64_t used = 0, nfree = 0;
        uint32_t id = c->slabs;
        for (uint32_t k = 0; k < c->nslabs; k++, id = a->slabs[id - 1].next) {
            const mp_slab_meta *m = &a->slabs[id - 1];
            slab_check(a, id - 1, cls);
            used += m->used;
            nfree += m->carved - m->used;
        }
        MP_ASSERT(used == c->used && nfree == c->nfree);
        uint32_t n = 0;
        for (const mp_item *it = c->free; it != NULL; it = mp_qitem(a->qb, it->qnext), n++) {
            MP_ASSERT(n < c->nfree && it->iflags == MP_IT_FREE && it->clsid == cls);
            MP_ASSERT(it->qnext == 0 || mp_qitem(a->qb, mp_qitem(a->qb, it->qnext)->qprev) == it);
        }
        MP_ASSERT(n == c->nfree);
    }
}
#endif
