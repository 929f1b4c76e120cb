#include <string.h>

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

/* ---- the table ---- */

void mp_ht_init(mp_htable *t, mp_item **zeroed_buckets, uint32_t power)
{
    memset(t, 0, sizeof(*t));
    t->buckets = zeroed_buckets;
    t->power = power;
}

static inline mp_item **bucket_of(const mp_htable *t, uint64_t hv)
{
    if (t->old != NULL) {
        uint64_t ob = hv & (MP_HT_SIZE(t->power - 1) - 1);
        if (ob >= t->migrated)
            return &t->old[ob];
    }
    return &t->buckets[hv & (MP_HT_SIZE(t->power) - 1)];
}

mp_item *mp_ht_find(const mp_htable *t, const char *key, size_t nkey, uint64_t hv)
{
    mp_item *it = *bucket_of(t, hv);
    while (it != NULL) {
        if (it->nkey == nkey && memcmp(MP_ITEM_key(it), key, nkey) == 0)
            return it;
        it = it->hnext;
    }
    return NULL;
}

void mp_ht_insert(mp_htable *t, mp_item *it, uint64_t hv)
{
    mp_item **b = bucket_of(t, hv);
    it->hnext = *b;
    *b = it;
    t->count++;
}

void mp_ht_remove(mp_htable *t, mp_item *it, uint64_t hv)
{
    mp_item **pp = bucket_of(t, hv);
    while (*pp != NULL && *pp != it)
        pp = &(*pp)->hnext;
    if (*pp == it) {
        *pp = it->hnext;
        it->hnext = NULL;
        t->count--;
    }
}

void mp_ht_expand_begin(mp_htable *t, mp_item **zeroed)
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
    uint64_t mask = MP_HT_SIZE(t->power) - 1;
    uint64_t moved = 0;
    while (moved < n && t->migrated < oldsize) {
        mp_item *it = t->old[t->migrated];
        t->old[t->migrated] = NULL;
        while (it != NULL) {
            mp_item *next = it->hnext;
            uint64_t b = mp_hash(MP_ITEM_key(it), it->nkey) & mask;
            it->hnext = t->buckets[b];
            t->buckets[b] = it;
            it = next;
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
    size_t n = MP_HT_SIZE(t->power) * sizeof(mp_item *);
    if (t->old != NULL)
        n += MP_HT_SIZE(t->power - 1) * sizeof(mp_item *);
    return n;
}
