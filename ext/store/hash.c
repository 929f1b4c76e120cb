#include <string.h>
#include <sys/mman.h>

#include "debug.h"
#include "hash.h"

/* ---- mp_hash: 64-bit multiply-fold hashing ----
 * One 64x64->128 multiply folded to 64 bits (high xor low) mixes every input
 * bit into every output bit; keys are short (<= 250 bytes), so 16 bytes per
 * step with one multiply each is as fast as anything fancier.  The shard is
 * taken from the high bits and the bucket from the low bits, so both halves
 * must be good: the fold makes them so. */

#define MIX_A 0x9e3779b97f4a7c15ull   /* odd constants with balanced bits */
#define MIX_B 0xc2b2ae3d27d4eb4full
#define MIX_C 0x165667b19e3779f9ull

static inline uint64_t fold_mul(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t load32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

uint64_t mp_hash(const char *key, size_t nkey)
{
    const unsigned char *p = (const unsigned char *)key;
    size_t n = nkey;
    uint64_t h = MIX_A ^ fold_mul((uint64_t)nkey ^ MIX_C, MIX_B);
    uint64_t a, b;

    while (n > 16) {
        h = fold_mul(load64(p) ^ MIX_B, load64(p + 8) ^ h);
        p += 16;
        n -= 16;
    }
    /* 0..16 bytes left: overlapping reads cover them without a byte loop;
     * the length is already in h, so overlaps cannot collide lengths. */
    if (n >= 8) {
        a = load64(p);
        b = load64(p + n - 8);
    } else if (n >= 4) {
        a = load32(p);
        b = load32(p + n - 4);
    } else if (n > 0) {
        a = ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) | p[n - 1];
        b = 0;
    } else {
        a = b = 0;
    }
    h = fold_mul(a ^ MIX_B, b ^ h ^ MIX_C);
    return fold_mul(h ^ MIX_A, MIX_B);
}

/* ---- the index ---- */

#define TAG_SHIFT 48
#define OFF_MASK ((1ull << TAG_SHIFT) - 1)

static inline uint64_t tag_of(uint64_t hv)
{
    /* bits the bucket (low, at most MP_HT_MAX_POWER) and the shard (high)
     * do not use */
    return ((hv >> 32) & 0xffff) << TAG_SHIFT;
}

static inline uint64_t slot_of(const mp_htable *t, const mp_item *it, uint64_t hv)
{
    return tag_of(hv) | ((uint64_t)((const char *)it - t->base) / 8 + 1);
}

static inline mp_item *item_at(const mp_htable *t, uint64_t slot)
{
    return (mp_item *)(t->base + ((slot & OFF_MASK) - 1) * 8);
}

mp_htbucket *mp_ht_alloc(uint32_t power)
{
    void *p = mmap(NULL, MP_HT_SIZE(power) * sizeof(mp_htbucket), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void mp_ht_free(mp_htbucket *tab, uint32_t power)
{
    if (tab != NULL)
        munmap(tab, MP_HT_SIZE(power) * sizeof(mp_htbucket));
}

void mp_ht_init(mp_htable *t, const char *base, mp_htbucket *zeroed_buckets, uint32_t power)
{
    memset(t, 0, sizeof(*t));
    t->buckets = zeroed_buckets;
    t->base = base;
    t->power = power;
}

static mp_item *table_find(const mp_htable *t, const mp_htbucket *tab, uint64_t mask,
                           const char *key, size_t nkey, uint64_t hv)
{
    uint64_t tag = tag_of(hv);
    for (uint64_t b = hv & mask, n = 0; n <= mask; b = (b + 1) & mask, n++) {
        const mp_htbucket *bk = &tab[b];
        for (int i = 0; i < MP_HT_WAYS; i++) {
            uint64_t sl = bk->slot[i];
            if (sl != 0 && (sl & ~OFF_MASK) == tag) {
                mp_item *it = item_at(t, sl);
                if (it->nkey == nkey && memcmp(MP_ITEM_key(it), key, nkey) == 0)
                    return it;
            }
        }
        if (bk->over == 0)
            break;
    }
    return NULL;
}

mp_item *mp_ht_find(const mp_htable *t, const char *key, size_t nkey, uint64_t hv)
{
    mp_item *it = table_find(t, t->buckets, MP_HT_SIZE(t->power) - 1, key, nkey, hv);
    if (it == NULL && t->old != NULL)
        it = table_find(t, t->old, MP_HT_SIZE(t->power - 1) - 1, key, nkey, hv);
    return it;
}

/* A table below its growth threshold always has a free slot; the walk is
 * bounded anyway, so an overfull one (its growth failed for want of memory)
 * loses the item from the index rather than looping. */
static void table_insert(mp_htbucket *tab, uint64_t mask, uint64_t slot, uint64_t hv)
{
    for (uint64_t b = hv & mask, n = 0; n <= mask; b = (b + 1) & mask, n++) {
        mp_htbucket *bk = &tab[b];
        for (int i = 0; i < MP_HT_WAYS; i++) {
            if (bk->slot[i] == 0) {
                bk->slot[i] = slot;
                return;
            }
        }
        bk->over++;
    }
    MP_ASSERT(!"index full");
}

/* The slot holding `want` (its bucket in *at), or NULL if it is not in
 * this table. */
static uint64_t *table_slot(mp_htbucket *tab, uint64_t mask, uint64_t want, uint64_t hv,
                            uint64_t *at)
{
    for (uint64_t b = hv & mask, n = 0; n <= mask; b = (b + 1) & mask, n++) {
        mp_htbucket *bk = &tab[b];
        for (int i = 0; i < MP_HT_WAYS; i++) {
            if (bk->slot[i] == want) {
                *at = b;
                return &bk->slot[i];
            }
        }
        if (bk->over == 0)
            break;
    }
    return NULL;
}

/* Empties a slot of bucket b and takes back the counts of the buckets its
 * item went past on the way from its home. */
static void table_clear(mp_htbucket *tab, uint64_t mask, uint64_t *slot, uint64_t hv, uint64_t b)
{
    *slot = 0;
    for (uint64_t p = hv & mask; p != b; p = (p + 1) & mask)
        tab[p].over--;
}

static bool table_remove(mp_htbucket *tab, uint64_t mask, uint64_t want, uint64_t hv)
{
    uint64_t b;
    uint64_t *sl = table_slot(tab, mask, want, hv, &b);
    if (sl != NULL)
        table_clear(tab, mask, sl, hv, b);
    return sl != NULL;
}

void mp_ht_insert(mp_htable *t, mp_item *it, uint64_t hv)
{
    table_insert(t->buckets, MP_HT_SIZE(t->power) - 1, slot_of(t, it, hv), hv);
    t->count++;
}

void mp_ht_remove(mp_htable *t, mp_item *it, uint64_t hv)
{
    uint64_t want = slot_of(t, it, hv);
    if (table_remove(t->buckets, MP_HT_SIZE(t->power) - 1, want, hv) ||
        (t->old != NULL && table_remove(t->old, MP_HT_SIZE(t->power - 1) - 1, want, hv)))
        t->count--;
}

void mp_ht_replace(mp_htable *t, mp_item *old, mp_item *n, uint64_t hv)
{
    uint64_t want = slot_of(t, old, hv), b;
    uint64_t *sl = table_slot(t->buckets, MP_HT_SIZE(t->power) - 1, want, hv, &b);
    if (sl == NULL && t->old != NULL)
        sl = table_slot(t->old, MP_HT_SIZE(t->power - 1) - 1, want, hv, &b);
    MP_ASSERT(sl != NULL);
    if (sl != NULL)
        *sl = slot_of(t, n, hv);
}

void mp_ht_expand_begin(mp_htable *t, mp_htbucket *zeroed)
{
    t->old = t->buckets;
    t->buckets = zeroed;
    t->power++;
    t->migrated = 0;
}

uint64_t mp_ht_migrate(mp_htable *t, uint64_t n)
{
    if (t->old == NULL)
        return 0;
    uint64_t oldsize = MP_HT_SIZE(t->power - 1);
    uint64_t omask = oldsize - 1, mask = MP_HT_SIZE(t->power) - 1;
    uint64_t moved = 0;
    while (moved < n && t->migrated < oldsize) {
        mp_htbucket *bk = &t->old[t->migrated];
        for (int i = 0; i < MP_HT_WAYS; i++) {
            uint64_t sl = bk->slot[i];
            if (sl == 0)
                continue;
            mp_item *it = item_at(t, sl);
            uint64_t hv = mp_hash(MP_ITEM_key(it), it->nkey);
            table_clear(t->old, omask, &bk->slot[i], hv, t->migrated);
            table_insert(t->buckets, mask, sl, hv);
        }
        t->migrated++;
        moved++;
    }
    if (t->migrated == oldsize) {
        t->retired = t->old;
        t->old = NULL;
        t->migrated = 0;
    }
    return moved;
}

size_t mp_ht_bytes(const mp_htable *t)
{
    size_t n = MP_HT_SIZE(t->power) * sizeof(mp_htbucket);
    if (t->old != NULL)
        n += MP_HT_SIZE(t->power - 1) * sizeof(mp_htbucket);
    return n;
}

int mp_ht_bucket_items(const mp_htable *t, uint64_t pos, mp_item **out)
{
    const mp_htbucket *bk = &t->buckets[pos];
    int n = 0;
    for (int i = 0; i < MP_HT_WAYS; i++)
        if (bk->slot[i] != 0)
            out[n++] = item_at(t, bk->slot[i]);
    return n;
}

int mp_ht_visit_home(const mp_htable *t, bool old, uint64_t home, mp_ht_visit_fn fn, void *arg)
{
    const mp_htbucket *tab = old ? t->old : t->buckets;
    uint64_t mask = MP_HT_SIZE(old ? t->power - 1 : t->power) - 1;
    for (uint64_t b = home, n = 0; n <= mask; b = (b + 1) & mask, n++) {
        const mp_htbucket *bk = &tab[b];
        for (int i = 0; i < MP_HT_WAYS; i++) {
            uint64_t sl = bk->slot[i];
            if (sl == 0)
                continue;
            mp_item *it = item_at(t, sl);
            /* a bucket also holds items of other homes that went past theirs */
            if ((mp_hash(MP_ITEM_key(it), it->nkey) & mask) != home)
                continue;
            int rc = fn(arg, it);
            if (rc != 0)
                return rc;
        }
        if (bk->over == 0)
            break;
    }
    return 0;
}
