/* Per-prefix statistics: memcached 1.6.18's stats_prefix.c (prefix.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "decimal.h"
#include "io/conn.h"
#include "prefix.h"

/* memcached's PREFIX_HASH_SIZE */
#define MP_PREFIX_BUCKETS 256

typedef struct mp_prefix_entry {
    struct mp_prefix_entry *next;
    uint64_t gets, hits, sets, dels;
    size_t len;
    char prefix[];
} mp_prefix_entry;

struct mp_prefix_stats {
    pthread_mutex_t lock;
    char delimiter;
    mp_prefix_entry *buckets[MP_PREFIX_BUCKETS];
};

/* memcached's default hash (murmur3_hash.c, MurmurHash3_x86_32 without a
 * seed): the bucket of a prefix decides the dump's order, so it is
 * memcached's hash rather than the store's. */
static inline uint32_t rotl32(uint32_t x, int r)
{
    return (x << r) | (x >> (32 - r));
}

static uint32_t murmur3_32(const char *key, size_t len)
{
    const unsigned char *data = (const unsigned char *)key;
    size_t nblocks = len / 4;
    uint32_t h1 = 0;
    const uint32_t c1 = 0xcc9e2d51, c2 = 0x1b873593;
    for (size_t i = 0; i < nblocks; i++) {
        uint32_t k1;
        memcpy(&k1, data + i * 4, 4);
        k1 *= c1;
        k1 = rotl32(k1, 15);
        k1 *= c2;
        h1 ^= k1;
        h1 = rotl32(h1, 13);
        h1 = h1 * 5 + 0xe6546b64;
    }
    const unsigned char *tail = data + nblocks * 4;
    uint32_t k1 = 0;
    switch (len & 3) {
    case 3:
        k1 ^= (uint32_t)tail[2] << 16;
        /* fall through */
    case 2:
        k1 ^= (uint32_t)tail[1] << 8;
        /* fall through */
    case 1:
        k1 ^= tail[0];
        k1 *= c1;
        k1 = rotl32(k1, 15);
        k1 *= c2;
        h1 ^= k1;
    }
    h1 ^= (uint32_t)len;
    h1 ^= h1 >> 16;
    h1 *= 0x85ebca6b;
    h1 ^= h1 >> 13;
    h1 *= 0xc2b2ae35;
    h1 ^= h1 >> 16;
    return h1;
}

mp_prefix_stats *mp_prefix_create(char delimiter)
{
    mp_prefix_stats *ps = calloc(1, sizeof(*ps));
    if (ps == NULL)
        return NULL;
    pthread_mutex_init(&ps->lock, NULL);
    ps->delimiter = delimiter;
    return ps;
}

static void clear_locked(mp_prefix_stats *ps)
{
    for (int i = 0; i < MP_PREFIX_BUCKETS; i++) {
        mp_prefix_entry *e = ps->buckets[i];
        while (e != NULL) {
            mp_prefix_entry *next = e->next;
            free(e);
            e = next;
        }
        ps->buckets[i] = NULL;
    }
}

void mp_prefix_destroy(mp_prefix_stats *ps)
{
    if (ps == NULL)
        return;
    clear_locked(ps);
    pthread_mutex_destroy(&ps->lock);
    free(ps);
}

void mp_prefix_clear(mp_prefix_stats *ps)
{
    if (ps == NULL)
        return;
    pthread_mutex_lock(&ps->lock);
    clear_locked(ps);
    pthread_mutex_unlock(&ps->lock);
}

/* memcached's stats_prefix_find, under the lock.  Its match is strncmp(prefix,
 * key, length): an entry whose prefix merely starts with this one, in the
 * same bucket, is taken for it, and so is counted here. */
static mp_prefix_entry *find_locked(mp_prefix_stats *ps, const char *key, size_t nkey)
{
    size_t length = 0;
    while (length < nkey && key[length] != '\0' && key[length] != ps->delimiter)
        length++;
    if (length == nkey || key[length] != ps->delimiter)
        return NULL;
    uint32_t b = murmur3_32(key, length) % MP_PREFIX_BUCKETS;
    for (mp_prefix_entry *e = ps->buckets[b]; e != NULL; e = e->next)
        if (e->len >= length && memcmp(e->prefix, key, length) == 0)
            return e;
    mp_prefix_entry *e = calloc(1, sizeof(*e) + length + 1);
    if (e == NULL)
        return NULL;
    memcpy(e->prefix, key, length);
    e->len = length;
    e->next = ps->buckets[b];
    ps->buckets[b] = e;
    return e;
}

void mp_prefix_record(mp_prefix_stats *ps, const char *key, size_t nkey, mp_prefix_op op)
{
    if (ps == NULL)
        return;
    pthread_mutex_lock(&ps->lock);
    mp_prefix_entry *e = find_locked(ps, key, nkey);
    if (e != NULL) {
        switch (op) {
        case MP_PREFIX_HIT:
            e->hits++;
            /* fall through */
        case MP_PREFIX_GET:
            e->gets++;
            break;
        case MP_PREFIX_SET:
            e->sets++;
            break;
        case MP_PREFIX_DEL:
            e->dels++;
            break;
        }
    }
    pthread_mutex_unlock(&ps->lock);
}

/* "PREFIX " p " get " n " hit " n " set " n " del " n "\r\n" */
#define MP_PREFIX_LINE_FIXED (7 + 5 + 5 + 5 + 5 + 2 + 4 * 20)

bool mp_prefix_dump(mp_prefix_stats *ps, mp_conn *c, uint64_t *resume)
{
    uint64_t b = *resume;
    *resume = 0;
    if (ps == NULL)
        return true;
    for (; b < MP_PREFIX_BUCKETS; b++) {
        /* a bucket goes whole: entries are added at its head, so a position
         * inside it would not survive the lock's release */
        if (b > 0 && mp_out_over_mark(c)) {
            *resume = b;
            return false;
        }
        pthread_mutex_lock(&ps->lock);
        for (mp_prefix_entry *e = ps->buckets[b]; e != NULL; e = e->next) {
            char *p = mp_out_reserve(c, MP_PREFIX_LINE_FIXED + e->len);
            if (p == NULL)
                break;
            char *q = p;
            memcpy(q, "PREFIX ", 7);
            q += 7;
            memcpy(q, e->prefix, e->len);
            q += e->len;
            memcpy(q, " get ", 5);
            q = u64_to_dec(q + 5, e->gets);
            memcpy(q, " hit ", 5);
            q = u64_to_dec(q + 5, e->hits);
            memcpy(q, " set ", 5);
            q = u64_to_dec(q + 5, e->sets);
            memcpy(q, " del ", 5);
            q = u64_to_dec(q + 5, e->dels);
            *q++ = '\r';
            *q++ = '\n';
            mp_out_commit(c, (size_t)(q - p));
        }
        pthread_mutex_unlock(&ps->lock);
    }
    return true;
}
