/* Unit tests of the item store (ext/store/store.c and its parts), with
 * memcached 1.6.18's answers as the expected values.
 *
 *   cc -std=gnu11 -O1 -g -pthread -Iext tests/c/test_store.c ext/store/store.c \
 *      ext/store/slabs.c ext/store/hash.c ext/store/evict.c ext/clock.c ext/settings.c -lm -o /tmp/t && /tmp/t
 *
 * The same with -fsanitize=thread checks the threaded tests (ref_threads
 * reads referenced values with no lock held while others write the keys).
 *
 * Time is driven by hand: mp_current_time is advanced directly. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "settings.h"
#include "store/store.h"
#include "check.h"

#define MIB ((size_t)1024 * 1024)

static mp_store *store_with(const mp_settings *s, int nshards)
{
    char err[256] = "";
    mp_store *st = mp_store_create(s, nshards, err, sizeof(err));
    if (st == NULL) {
        fprintf(stderr, "mp_store_create: %s\n", err);
        exit(2);
    }
    return st;
}

static mp_store *make_store(size_t maxbytes, int nshards, bool use_cas, bool evict)
{
    mp_settings s;
    mp_settings_init(&s);
    s.maxbytes = maxbytes;
    s.use_cas = use_cas;
    s.evict_to_free = evict;
    return store_with(&s, nshards);
}

/* ---- helpers acting like the executor ---- */

/* exptime as the protocol gives it, converted as memcached does (negative:
 * already expired). */
static mp_rel_time exptime_of(long long e)
{
    if (e < 0)
        return mp_realtime(MP_REALTIME_MAXDELTA + 1);
    return mp_realtime(e);
}

static int store_full(mp_store *st, mp_store_op op, const char *key, const char *val,
                      size_t vlen, uint32_t flags, long long exptime, uint64_t cas_in,
                      uint64_t *cas_out)
{
    size_t nkey = strlen(key);
    uint64_t hv = mp_hash(key, nkey);
    mp_item *it;
    int r = mp_store_alloc(st, key, nkey, hv, flags, exptime_of(exptime), (uint32_t)vlen + 2, &it);
    if (r == MP_ALLOC_TOO_LARGE) {
        if (op == MP_SET)
            mp_store_delete_quiet(st, key, nkey, hv);
        return MP_TOO_LARGE;
    }
    if (r == MP_ALLOC_NO_MEMORY) {
        if (op == MP_SET)
            mp_store_delete_quiet(st, key, nkey, hv);
        return MP_NO_MEMORY;
    }
    memcpy(MP_ITEM_value(it), val, vlen);
    memcpy(MP_ITEM_value(it) + vlen, "\r\n", 2);
    return mp_store_item(st, it, hv, op, cas_in, cas_out);
}

static int store(mp_store *st, mp_store_op op, const char *key, const char *val)
{
    return store_full(st, op, key, val, strlen(val), 0, 0, 0, NULL);
}

typedef struct got {
    bool hit;
    char value[256];
    uint32_t flags;
    uint64_t cas;
    mp_rel_time exptime;
    mp_rel_time time;    /* the access time before this get */
    int why;
} got;

static got get(mp_store *st, const char *key)
{
    got g;
    memset(&g, 0, sizeof(g));
    size_t nkey = strlen(key);
    uint64_t hv = mp_hash(key, nkey);
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    mp_item *it = mp_item_find(s, key, nkey, hv, &g.why);
    if (it != NULL) {
        g.hit = true;
        size_t n = it->nbytes - 2;
        if (n >= sizeof(g.value))
            n = sizeof(g.value) - 1;
        memcpy(g.value, MP_ITEM_value(it), n);
        g.value[n] = '\0';
        g.flags = mp_item_flags(it);
        g.cas = it->cas;
        g.exptime = it->exptime;
        g.time = it->time;
        mp_item_bump(s, it);
    }
    mp_shard_unlock(s);
    return g;
}

static bool exists(mp_store *st, const char *key)
{
    size_t nkey = strlen(key);
    uint64_t hv = mp_hash(key, nkey);
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    bool hit = mp_item_find(s, key, nkey, hv, NULL) != NULL;
    mp_shard_unlock(s);
    return hit;
}

static mp_delta_result arith(mp_store *st, const char *key, bool incr, uint64_t delta, char *buf)
{
    return mp_store_arith(st, key, strlen(key), mp_hash(key, strlen(key)), incr, delta, buf, NULL);
}

static mp_store_stats stats(mp_store *st)
{
    mp_store_stats s;
    mp_store_get_stats(st, &s);
    return s;
}

/* ---- tests ---- */

static void test_storage_commands(void)
{
    mp_store *st = make_store(64 * MIB, 4, true, true);
    got g;

    CHECK_EQ_U64(store(st, MP_SET, "k", "v1"), MP_STORED);
    g = get(st, "k");
    CHECK(g.hit);
    CHECK_STR(g.value, "v1");

    CHECK_EQ_U64(store(st, MP_ADD, "k", "v2"), MP_NOT_STORED);
    CHECK_STR(get(st, "k").value, "v1");
    CHECK_EQ_U64(store(st, MP_ADD, "k2", "a"), MP_STORED);
    CHECK_STR(get(st, "k2").value, "a");

    CHECK_EQ_U64(store(st, MP_REPLACE, "nope", "x"), MP_NOT_STORED);
    CHECK(!exists(st, "nope"));
    CHECK_EQ_U64(store(st, MP_REPLACE, "k", "v3"), MP_STORED);
    CHECK_STR(get(st, "k").value, "v3");

    CHECK_EQ_U64(store(st, MP_APPEND, "nope", "x"), MP_NOT_STORED);
    CHECK_EQ_U64(store(st, MP_PREPEND, "nope", "x"), MP_NOT_STORED);
    CHECK(!exists(st, "nope"));

    /* append/prepend keep the old flags and exptime, ignore the new ones */
    CHECK_EQ_U64(store_full(st, MP_SET, "ap", "mid", 3, 42, 1000, 0, NULL), MP_STORED);
    mp_rel_time exp_before = get(st, "ap").exptime;
    CHECK_EQ_U64(store_full(st, MP_APPEND, "ap", "END", 3, 7, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(store_full(st, MP_PREPEND, "ap", "BEG", 3, 9, 5, 0, NULL), MP_STORED);
    g = get(st, "ap");
    CHECK_STR(g.value, "BEGmidEND");
    CHECK_EQ_U64(g.flags, 42);
    CHECK_EQ_U64(g.exptime, exp_before);

    /* empty values */
    CHECK_EQ_U64(store(st, MP_SET, "empty", ""), MP_STORED);
    g = get(st, "empty");
    CHECK(g.hit);
    CHECK_STR(g.value, "");
    CHECK_EQ_U64(store(st, MP_APPEND, "empty", "x"), MP_STORED);
    CHECK_STR(get(st, "empty").value, "x");

    /* cas */
    uint64_t c1 = 0, c2 = 0;
    CHECK_EQ_U64(store_full(st, MP_SET, "c", "one", 3, 0, 0, 0, &c1), MP_STORED);
    CHECK(c1 != 0);
    CHECK_EQ_U64(get(st, "c").cas, c1);
    CHECK_EQ_U64(store_full(st, MP_CAS, "c", "two", 3, 0, 0, c1 + 1000, NULL), MP_EXISTS);
    CHECK_EQ_U64(store_full(st, MP_CAS, "c", "two", 3, 0, 0, 0, NULL), MP_EXISTS);
    CHECK_EQ_U64(store_full(st, MP_CAS, "c", "two", 3, 0, 0, c1, &c2), MP_STORED);
    CHECK(c2 > c1);
    CHECK_STR(get(st, "c").value, "two");
    CHECK_EQ_U64(store_full(st, MP_CAS, "c", "three", 5, 0, 0, c1, NULL), MP_EXISTS);
    CHECK_EQ_U64(store_full(st, MP_CAS, "missing", "x", 1, 0, 0, 0, NULL), MP_NOT_FOUND);
    CHECK_EQ_U64(store_full(st, MP_CAS, "missing", "x", 1, 0, 0, 123, NULL), MP_NOT_FOUND);
    CHECK(!exists(st, "missing"));
    /* append with a wrong cas (meta ms C) */
    CHECK_EQ_U64(store_full(st, MP_APPEND, "c", "x", 1, 0, 0, c2 + 1, NULL), MP_EXISTS);
    CHECK_EQ_U64(store_full(st, MP_APPEND, "c", "x", 1, 0, 0, c2, NULL), MP_STORED);
    CHECK_STR(get(st, "c").value, "twox");

    /* every store gives a new cas, unique across keys and shards */
    uint64_t prev = 0;
    bool increasing = true;
    for (int i = 0; i < 200; i++) {
        char key[32];
        snprintf(key, sizeof(key), "cas%d", i);
        uint64_t c = 0;
        store_full(st, MP_SET, key, "v", 1, 0, 0, 0, &c);
        if (c <= prev)
            increasing = false;
        prev = c;
    }
    CHECK(increasing);

    /* delete */
    CHECK(mp_store_delete(st, "k", 1, mp_hash("k", 1)));
    CHECK(!mp_store_delete(st, "k", 1, mp_hash("k", 1)));
    CHECK(!exists(st, "k"));

    /* stats: curr_items and memcached's byte accounting */
    mp_store *st2 = make_store(64 * MIB, 1, true, true);
    store_full(st2, MP_SET, "abc", "12345", 5, 0, 0, 0, NULL);
    store_full(st2, MP_SET, "xy", "1", 1, 7, 0, 0, NULL);
    mp_store_stats ss = stats(st2);
    CHECK_EQ_U64(ss.curr_items, 2);
    CHECK_EQ_U64(ss.total_items, 2);
    CHECK_EQ_U64(ss.bytes, (48 + 8 + 4 + 7) + (48 + 8 + 3 + 4 + 3));
    store(st2, MP_SET, "abc", "1");
    ss = stats(st2);
    CHECK_EQ_U64(ss.curr_items, 2);
    CHECK_EQ_U64(ss.total_items, 3);
    CHECK_EQ_U64(ss.bytes, (48 + 8 + 4 + 3) + (48 + 8 + 3 + 4 + 3));
    mp_store_delete(st2, "abc", 3, mp_hash("abc", 3));
    mp_store_delete(st2, "xy", 2, mp_hash("xy", 2));
    ss = stats(st2);
    CHECK_EQ_U64(ss.curr_items, 0);
    CHECK_EQ_U64(ss.bytes, 0);
    /* the emptied slab went back to the pool */
    CHECK_EQ_U64(ss.total_malloced, 0);
    mp_store_destroy(st2);
    mp_store_destroy(st);
}

static void test_no_cas(void)
{
    mp_store *st = make_store(64 * MIB, 2, false, true);
    uint64_t c = 99;
    CHECK_EQ_U64(store_full(st, MP_SET, "k", "v", 1, 0, 0, 0, &c), MP_STORED);
    CHECK_EQ_U64(c, 0);
    CHECK_EQ_U64(get(st, "k").cas, 0);
    /* -C: cas can never match */
    CHECK_EQ_U64(store_full(st, MP_CAS, "k", "w", 1, 0, 0, 0, NULL), MP_EXISTS);
    CHECK_EQ_U64(store_full(st, MP_CAS, "k", "w", 1, 0, 0, 5, NULL), MP_EXISTS);
    CHECK_EQ_U64(store_full(st, MP_CAS, "nope", "w", 1, 0, 0, 5, NULL), MP_NOT_FOUND);
    char buf[32];
    CHECK_EQ_U64(store(st, MP_SET, "n", "5"), MP_STORED);
    uint64_t cas_out = 77;
    CHECK_EQ_U64(mp_store_arith(st, "n", 1, mp_hash("n", 1), true, 1, buf, &cas_out), MP_DELTA_OK);
    CHECK_EQ_U64(cas_out, 0);
    /* bytes without the 8 cas bytes */
    mp_store *st2 = make_store(64 * MIB, 1, false, true);
    store(st2, MP_SET, "abc", "12345");
    CHECK_EQ_U64(stats(st2).bytes, 48 + 4 + 7);
    mp_store_destroy(st2);
    mp_store_destroy(st);
}

static void test_arith(void)
{
    mp_store *st = make_store(64 * MIB, 4, true, true);
    char buf[32];
    got g;

    CHECK_EQ_U64(arith(st, "none", true, 1, buf), MP_DELTA_NOT_FOUND);

    store(st, MP_SET, "n", "10");
    CHECK_EQ_U64(arith(st, "n", false, 1, buf), MP_DELTA_OK);
    CHECK_STR(buf, "9");
    CHECK_STR(get(st, "n").value, "9 ");          /* padded in place */
    CHECK_EQ_U64(arith(st, "n", true, 100, buf), MP_DELTA_OK);
    CHECK_STR(buf, "109");
    CHECK_STR(get(st, "n").value, "109");         /* grown to its own length */

    /* decr floors at 0 */
    store(st, MP_SET, "d", "5");
    CHECK_EQ_U64(arith(st, "d", false, 6, buf), MP_DELTA_OK);
    CHECK_STR(buf, "0");
    CHECK_EQ_U64(arith(st, "d", false, UINT64_MAX, buf), MP_DELTA_OK);
    CHECK_STR(buf, "0");

    /* incr wraps mod 2^64, the shorter result padded */
    store(st, MP_SET, "w", "18446744073709551615");
    CHECK_EQ_U64(arith(st, "w", true, 2, buf), MP_DELTA_OK);
    CHECK_STR(buf, "1");
    CHECK_STR(get(st, "w").value, "1                   ");

    /* memcached's parse of the stored value */
    struct { const char *v; bool ok; const char *after_incr1; } cases[] = {
        { " 07", true, "8  " },
        { "+7", true, "8 " },
        { "5 ABC", true, "6    " },
        { "-0", true, "1 " },
        { "12ABC", false, NULL },
        { "-1", false, NULL },
        { "abc", false, NULL },
        { "   ", false, NULL },
        { "", false, NULL },
        { "18446744073709551616", false, NULL },          /* out of range */
        { "-9223372036854775809", true, "9223372036854775808 " },
        { "-18446744073709551615", true, "2                    " },
        { "0x10", false, NULL },
        { "1.5", false, NULL },
        { "\t3", true, "4 " },
        { "3\t", true, "4 " },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        store(st, MP_SET, "p", cases[i].v);
        mp_delta_result r = arith(st, "p", true, 1, buf);
        if (cases[i].ok) {
            CHECK_EQ_U64(r, MP_DELTA_OK);
            g = get(st, "p");
            if (strcmp(g.value, cases[i].after_incr1) != 0)
                fprintf(stderr, "  value \"%s\"\n", cases[i].v);
            CHECK_STR(g.value, cases[i].after_incr1);
        } else {
            if (r != MP_DELTA_NON_NUMERIC)
                fprintf(stderr, "  value \"%s\"\n", cases[i].v);
            CHECK_EQ_U64(r, MP_DELTA_NON_NUMERIC);
            CHECK_STR(get(st, "p").value, cases[i].v);
        }
    }

    /* length growth keeps flags and exptime; every change gives a new cas */
    uint64_t c0 = 0, c1 = 0, c2 = 0;
    store_full(st, MP_SET, "g", "99", 2, 1234, 500, 0, &c0);
    mp_rel_time e0 = get(st, "g").exptime;
    CHECK_EQ_U64(mp_store_arith(st, "g", 1, mp_hash("g", 1), true, 1, buf, &c1), MP_DELTA_OK);
    CHECK_STR(buf, "100");
    g = get(st, "g");
    CHECK_STR(g.value, "100");
    CHECK_EQ_U64(g.flags, 1234);
    CHECK_EQ_U64(g.exptime, e0);
    CHECK(c1 > c0);
    CHECK_EQ_U64(g.cas, c1);
    CHECK_EQ_U64(mp_store_arith(st, "g", 1, mp_hash("g", 1), false, 1, buf, &c2), MP_DELTA_OK);
    CHECK(c2 > c1);
    CHECK_STR(get(st, "g").value, "99 ");
    CHECK_EQ_U64(get(st, "g").cas, c2);

    /* growth from 20 blanks-worth: stays in place while it fits */
    store(st, MP_SET, "z", "0");
    for (int i = 0; i < 9; i++)
        arith(st, "z", true, 1, buf);
    CHECK_STR(get(st, "z").value, "9");
    arith(st, "z", true, 1, buf);
    CHECK_STR(get(st, "z").value, "10");
    mp_store_destroy(st);
}

static void test_expiry(void)
{
    mp_store *st = make_store(64 * MIB, 2, true, true);
    mp_rel_time start = mp_current_time;
    got g;

    store_full(st, MP_SET, "never", "v", 1, 0, 0, 0, NULL);
    store_full(st, MP_SET, "neg", "v", 1, 0, -1, 0, NULL);
    store_full(st, MP_SET, "rel", "v", 1, 0, 10, 0, NULL);
    store_full(st, MP_SET, "abspast", "v", 1, 0, (long long)time(NULL) - 100, 0, NULL);
    store_full(st, MP_SET, "absfut", "v", 1, 0, (long long)time(NULL) + 100, 0, NULL);

    CHECK(exists(st, "never"));
    g = get(st, "neg");
    CHECK(!g.hit);
    CHECK_EQ_U64(g.why, MP_MISS_EXPIRED);
    CHECK(!exists(st, "abspast"));
    CHECK(exists(st, "rel"));
    CHECK(exists(st, "absfut"));

    mp_current_time = start + 9;
    CHECK(exists(st, "rel"));
    mp_current_time = start + 10;
    g = get(st, "rel");
    CHECK(!g.hit);
    CHECK_EQ_U64(g.why, MP_MISS_EXPIRED);
    CHECK(exists(st, "absfut"));
    mp_current_time = start + 101;
    CHECK(!exists(st, "absfut"));
    CHECK(exists(st, "never"));
    g = get(st, "absent");
    CHECK_EQ_U64(g.why, MP_MISS_ABSENT);

    /* touch: a new exptime; negative makes it vanish after this access */
    store_full(st, MP_SET, "t", "v", 1, 0, 5, 0, NULL);
    CHECK(mp_store_touch(st, "t", 1, mp_hash("t", 1), exptime_of(100)));
    mp_current_time += 50;
    CHECK(exists(st, "t"));
    CHECK(mp_store_touch(st, "t", 1, mp_hash("t", 1), exptime_of(-1)));
    CHECK(!exists(st, "t"));
    CHECK(!mp_store_touch(st, "t", 1, mp_hash("t", 1), exptime_of(100)));

    /* an expired item is "not there" for every command */
    store_full(st, MP_SET, "e", "5", 1, 0, 1, 0, NULL);
    mp_current_time += 2;
    char buf[32];
    CHECK_EQ_U64(arith(st, "e", true, 1, buf), MP_DELTA_NOT_FOUND);
    CHECK_EQ_U64(store(st, MP_REPLACE, "e", "x"), MP_NOT_STORED);
    store_full(st, MP_SET, "e", "5", 1, 0, 1, 0, NULL);
    mp_current_time += 2;
    CHECK_EQ_U64(store(st, MP_ADD, "e", "x"), MP_STORED);
    CHECK_STR(get(st, "e").value, "x");

    /* the maintenance sweep reclaims expired items nobody asks for */
    for (int i = 0; i < 1000; i++) {
        char key[32];
        snprintf(key, sizeof(key), "sweep%d", i);
        store_full(st, MP_SET, key, "v", 1, 0, 3, 0, NULL);
    }
    uint64_t before = stats(st).curr_items;
    mp_current_time += 4;
    for (int r = 0; r < 64; r++)
        for (int i = 0; i < mp_store_nshards(st); i++)
            mp_store_maintain(st, i);
    mp_store_stats ss = stats(st);
    CHECK_EQ_U64(before - ss.curr_items, 1000);
    CHECK(ss.crawler_reclaimed >= 1000);
    CHECK(ss.expired_unfetched >= 1000);
    mp_current_time = start;
    mp_store_destroy(st);
}

static void test_flush(void)
{
    mp_rel_time start = mp_current_time;
    for (int use_cas = 1; use_cas >= 0; use_cas--) {
        mp_store *st = make_store(64 * MIB, 2, use_cas, true);
        store(st, MP_SET, "a", "1");
        mp_store_flush(st, 0);
        store(st, MP_SET, "b", "2");
        CHECK(!exists(st, "a"));
        if (use_cas) {
            /* stored after the flush in the same second: visible */
            CHECK(exists(st, "b"));
        } else {
            /* -C: memcached only knows the second; b dies too */
            CHECK(!exists(st, "b"));
        }
        mp_current_time = start + 1;
        store(st, MP_SET, "c", "3");
        CHECK(exists(st, "c"));
        if (use_cas)
            CHECK(exists(st, "b"));

        /* flush_all -1 flushes now */
        mp_current_time = start + 5;
        store(st, MP_SET, "d", "4");
        mp_store_flush(st, -1);
        CHECK(!exists(st, "d"));
        CHECK(!exists(st, "c"));

        /* delayed: flush_all 10 kills, once its time comes, what was stored before */
        mp_current_time = start + 20;
        store(st, MP_SET, "e", "5");
        mp_store_flush(st, 10);
        mp_current_time = start + 28;
        CHECK(exists(st, "e"));
        store(st, MP_SET, "f", "6");
        mp_current_time = start + 29 + (use_cas ? 0 : 1);
        got g = get(st, "e");
        CHECK(!g.hit);
        CHECK_EQ_U64(g.why, MP_MISS_FLUSHED);
        CHECK(!exists(st, "f"));
        mp_current_time = start + 31;
        store(st, MP_SET, "g", "7");
        CHECK(exists(st, "g"));
        mp_current_time = start;
        mp_store_destroy(st);
    }
}

static void fill_value(char *buf, size_t n, int seed)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)('a' + (seed + i) % 26);
}

/* Walks the keys <prefix>0 .. <prefix>n-1, each under its shard lock:
 * *present counts those found, and the result those `intact` rejects
 * (given the item, the key's number and n). */
static int count_damaged(mp_store *st, const char *prefix, int n, int *present,
                         bool (*intact)(const mp_item *it, int k, int n))
{
    char key[32];
    int damaged = 0;
    *present = 0;
    for (int k = 0; k < n; k++) {
        snprintf(key, sizeof(key), "%s%d", prefix, k);
        size_t nkey = strlen(key);
        uint64_t hv = mp_hash(key, nkey);
        mp_shard *s = mp_store_shard(st, hv);
        mp_shard_lock(s);
        mp_item *it = mp_item_find(s, key, nkey, hv, NULL);
        if (it != NULL) {
            (*present)++;
            damaged += !intact(it, k, n);
        }
        mp_shard_unlock(s);
    }
    return damaged;
}

/* A value of any length stored with flags i (i % n the key's number) and
 * fill_value(.., i). */
static bool intact_by_flags(const mp_item *it, int k, int n)
{
    static char val[300000];
    size_t len = it->nbytes - 2;
    if (len > sizeof(val))
        return false;
    fill_value(val, len, (int)mp_item_flags(it));
    return memcmp(MP_ITEM_value(it), val, len) == 0 && mp_item_flags(it) % (uint32_t)n == (uint32_t)k &&
           memcmp(MP_ITEM_value(it) + len, "\r\n", 2) == 0;
}

/* test_eviction's cold keys: 1000 bytes of fill_value(.., k). */
static bool intact_cold(const mp_item *it, int k, int n)
{
    (void)n;
    char val[1000];
    fill_value(val, sizeof(val), k);
    return it->nbytes == sizeof(val) + 2 && memcmp(MP_ITEM_value(it), val, sizeof(val)) == 0 &&
           memcmp(MP_ITEM_value(it) + sizeof(val), "\r\n", 2) == 0;
}

static void test_eviction(void)
{
    mp_store *st = make_store(2 * MIB, 1, true, true);
    static char val[1000];
    char key[32];
    /* 100 hot keys read after every store, and 10,000 keys stored once */
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "hot%d", i);
        fill_value(val, sizeof(val), i);
        CHECK_EQ_U64(store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL), MP_STORED);
    }
    int hot_misses = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "cold%d", i);
        fill_value(val, sizeof(val), i);
        int r = store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL);
        if (r != MP_STORED) {
            CHECK_EQ_U64(r, MP_STORED);
            break;
        }
        snprintf(key, sizeof(key), "hot%d", i % 100);
        if (!get(st, key).hit)
            hot_misses++;
    }
    mp_store_stats ss = stats(st);
    CHECK(ss.evictions > 0);
    CHECK(ss.curr_items < 10100);
    CHECK(ss.curr_items > 1000);
    CHECK(ss.total_malloced <= 2 * MIB);
    CHECK(ss.evicted_unfetched > 0);
    /* after the first round every hot key has been read: S3-FIFO keeps them */
    if (hot_misses > 100)
        fprintf(stderr, "  hot misses %d\n", hot_misses);
    CHECK(hot_misses <= 100);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "hot%d", i);
        got g = get(st, key);
        CHECK(g.hit);
        fill_value(val, 20, i);
        CHECK(strncmp(g.value, val, 20) == 0);
    }
    /* the most recent stores are still there */
    for (int i = 9990; i < 10000; i++) {
        snprintf(key, sizeof(key), "cold%d", i);
        CHECK(exists(st, key));
    }
    /* values survive intact (no chunk handed out twice) */
    int present;
    CHECK_EQ_U64(count_damaged(st, "cold", 10000, &present, intact_cold), 0);
    CHECK_EQ_U64(present + 100, stats(st).curr_items);

    mp_slab_class_stats cls[MP_MAX_SLAB_CLASSES];
    int n = mp_store_get_slab_stats(st, cls, MP_MAX_SLAB_CLASSES);
    uint64_t evicted = 0, number = 0;
    for (int c = 1; c < n; c++) {
        evicted += cls[c].evicted;
        number += cls[c].number;
        CHECK(cls[c].used_chunks <= cls[c].total_chunks);
    }
    CHECK_EQ_U64(evicted, ss.evictions);
    CHECK_EQ_U64(number, stats(st).curr_items);
    mp_store_destroy(st);
}

/* Items of many sizes through a small memory with several shards: pages move
 * between classes and shards, and nothing is lost or corrupted. */
static void test_mixed_sizes(void)
{
    mp_store *st = make_store(4 * MIB, 4, true, true);
    static char val[300000];
    char key[32];
    unsigned seed = 12345;
    int failed = 0;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245 + 12345;
        size_t len = (seed >> 8) % 4 == 0 ? (seed >> 4) % 300000 : (seed >> 4) % 2000;
        snprintf(key, sizeof(key), "m%d", i % 5000);
        fill_value(val, len, i);
        if (store_full(st, MP_SET, key, val, len, (uint32_t)i, 0, 0, NULL) != MP_STORED)
            failed++;
        if (i % 7 == 0) {
            snprintf(key, sizeof(key), "m%d", (i * 31) % 5000);
            get(st, key);
        }
    }
    CHECK_EQ_U64(failed, 0);
    mp_store_stats ss = stats(st);
    CHECK(ss.total_malloced <= 4 * MIB);
    /* every present item has the value its flags say it was stored with */
    int present;
    CHECK_EQ_U64(count_damaged(st, "m", 5000, &present, intact_by_flags), 0);
    mp_store_destroy(st);
}

/* The workload moves from small to large values: memory follows it instead
 * of staying with the stale small items (slab calcification). */
static void test_rebalance(void)
{
    mp_rel_time start = mp_current_time;
    mp_store *st = make_store(4 * MIB, 1, true, true);
    char key[32];
    static char val[1500];
    fill_value(val, sizeof(val), 0);
    for (int i = 0; i < 40000; i++) {
        snprintf(key, sizeof(key), "small%d", i);
        store_full(st, MP_SET, key, val, 50, 0, 0, 0, NULL);
    }
    mp_current_time += 60;
    for (int i = 0; i < 20000; i++) {
        if (i % 1000 == 0)
            mp_current_time++;
        snprintf(key, sizeof(key), "large%d", i);
        CHECK_EQ_U64(store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL), MP_STORED);
    }
    /* 4 MiB hold ~2400 such items; without moving memory the large class
     * would keep its first slabs only (~40 items each) */
    int present = 0;
    for (int i = 18000; i < 20000; i++) {
        snprintf(key, sizeof(key), "large%d", i);
        if (exists(st, key))
            present++;
    }
    if (present < 1800)
        fprintf(stderr, "  recent large items present: %d of 2000\n", present);
    CHECK(present >= 1800);
    CHECK(stats(st).slab_reassigns > 0);
    mp_current_time = start;
    mp_store_destroy(st);
}

/* Memory also moves to a class of much smaller items written as often as a
 * large class, within the same second (so not by age): at equal set rates
 * both end with memory in proportion, give or take twice, and the small
 * class holds its 10,000 keys where a single slab would hold ~600. */
static void test_rebalance_by_weight(void)
{
    mp_store *st = make_store(4 * MIB, 1, true, true);
    char key[32];
    static char val[4000];
    fill_value(val, sizeof(val), 0);
    for (int i = 0; i < 4000; i++) {
        snprintf(key, sizeof(key), "large%d", i % 2000);
        store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL);
    }
    uint64_t moved = stats(st).slab_reassigns;
    for (int i = 0; i < 60000; i++) {
        snprintf(key, sizeof(key), "small%d", i % 10000);
        store_full(st, MP_SET, key, val, 50, 0, 0, 0, NULL);
        snprintf(key, sizeof(key), "large%d", i % 2000);
        store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL);
    }
    int small = 0, large = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "small%d", i);
        small += exists(st, key);
    }
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "large%d", i);
        large += exists(st, key);
    }
    if (small < 9000 || large < 300)
        fprintf(stderr, "  small items present: %d of 10000, large: %d of 2000\n", small, large);
    CHECK(small >= 9000);
    CHECK(large >= 300);
    CHECK(stats(st).slab_reassigns > moved + 10);
    mp_store_destroy(st);
}

/* The age rule does not take memory from a class 4 times smaller that the
 * weight rule keeps (store.c shard_rebalance): a class of 50-byte values
 * stored a minute ago and written as often as a class of 4 KB values keeps
 * its keys while the large class evicts, where the age rule alone (its tail
 * 60 seconds old, the large class's 0) took a fifth of them. */
static void test_rebalance_age_defers_to_weight(void)
{
    mp_rel_time start = mp_current_time;
    mp_store *st = make_store(4 * MIB, 1, true, true);
    char key[32];
    static char val[4000];
    fill_value(val, sizeof(val), 0);
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "small%d", i);
        store_full(st, MP_SET, key, val, 50, 0, 0, 0, NULL);
    }
    for (int i = 0; i < 4000; i++) {
        snprintf(key, sizeof(key), "large%d", i % 2000);
        store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL);
    }
    mp_current_time += 60;
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "small%d", i);
        store_full(st, MP_SET, key, val, 50, 0, 0, 0, NULL);
        snprintf(key, sizeof(key), "large%d", i % 2000);
        CHECK_EQ_U64(store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL), MP_STORED);
    }
    int present = 0;
    for (int i = 5000; i < 10000; i++) {
        snprintf(key, sizeof(key), "small%d", i);
        present += exists(st, key);
    }
    if (present < 4900)
        fprintf(stderr, "  small items not rewritten present: %d of 5000\n", present);
    CHECK(present >= 4900);
    mp_current_time = start;
    mp_store_destroy(st);
}

/* An item the eviction scan keeps for its reads counts as accessed on that
 * lap (evict.c), so a class's tail time says how long it keeps what is not
 * read; an item never read keeps the time it was stored. */
static void test_lap_stamps_access(void)
{
    mp_rel_time start = mp_current_time;
    mp_store *st = make_store(4 * MIB, 1, true, true);
    char key[32];
    static char val[1000];
    fill_value(val, sizeof(val), 0);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "hot%d", i);
        store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL);
        CHECK(get(st, key).hit);
    }
    mp_current_time += 30;
    for (int i = 0; i < 20000; i++) {
        if (i % 1000 == 0)
            mp_current_time++;
        snprintf(key, sizeof(key), "cold%d", i);
        store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL);
    }
    CHECK(stats(st).evictions > 10000);
    int lapped = 0;
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "hot%d", i);
        got g = get(st, key);
        lapped += g.hit && g.time > start + 30;
    }
    if (lapped != 100)
        fprintf(stderr, "  read items stamped by their lap: %d of 100\n", lapped);
    CHECK(lapped == 100);
    got g = get(st, "cold18000");     /* stored a second before the last */
    CHECK(g.hit);
    CHECK_EQ_U64(g.time, mp_current_time - 1);
    mp_current_time = start;
    mp_store_destroy(st);
}

static void test_max_item_when_full(void)
{
    for (int nshards = 1; nshards <= 4; nshards *= 4) {
        mp_store *st = make_store(2 * MIB, nshards, true, true);
        char key[32];
        int stored = 0;
        for (int i = 0; i < 40000; i++) {
            snprintf(key, sizeof(key), "small%d", i);
            if (store_full(st, MP_SET, key, "0123456789", 10, 0, 0, 0, NULL) == MP_STORED)
                stored++;
        }
        CHECK_EQ_U64(stored, 40000);
        CHECK(stats(st).evictions > 0);
        static char big[1048507];
        fill_value(big, sizeof(big), 3);
        /* the largest item memcached -I 1m accepts with a 10-byte key */
        CHECK_EQ_U64(store_full(st, MP_SET, "bigkey0001", big, sizeof(big), 0, 0, 0, NULL), MP_STORED);
        size_t nkey = 10;
        uint64_t hv = mp_hash("bigkey0001", nkey);
        mp_shard *s = mp_store_shard(st, hv);
        mp_shard_lock(s);
        mp_item *it = mp_item_find(s, "bigkey0001", nkey, hv, NULL);
        CHECK(it != NULL);
        if (it != NULL) {
            CHECK_EQ_U64(it->nbytes, sizeof(big) + 2);
            CHECK(memcmp(MP_ITEM_value(it), big, sizeof(big)) == 0);
        }
        mp_shard_unlock(s);
        /* and again with a different key, the first one may go */
        CHECK_EQ_U64(store_full(st, MP_SET, "bigkey0002", big, sizeof(big), 0, 0, 0, NULL), MP_STORED);
        CHECK(exists(st, "bigkey0002"));
        /* small items still storable afterwards */
        CHECK_EQ_U64(store(st, MP_SET, "after", "x"), MP_STORED);
        CHECK(exists(st, "after"));
        CHECK(stats(st).total_malloced <= 2 * MIB);
        mp_store_destroy(st);
    }
}

static void test_too_large(void)
{
    mp_store *st = make_store(64 * MIB, 1, true, true);
    static char big[1048600];
    fill_value(big, sizeof(big), 0);
    CHECK_EQ_U64(store_full(st, MP_SET, "0123456789", big, 1048507, 0, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(store_full(st, MP_SET, "0123456789", big, 1048508, 0, 0, 0, NULL), MP_TOO_LARGE);
    /* a too-large set removed the old item (the helper acts as the executor) */
    CHECK(!exists(st, "0123456789"));
    /* flags take 4 more bytes */
    CHECK_EQ_U64(store_full(st, MP_SET, "0123456789", big, 1048503, 1, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(store_full(st, MP_SET, "0123456789", big, 1048504, 1, 0, 0, NULL), MP_TOO_LARGE);
    CHECK(stats(st).store_too_large >= 2);

    /* append beyond the limit: NOT_STORED, old value kept */
    CHECK_EQ_U64(store_full(st, MP_SET, "ap", big, 1048000, 0, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(store_full(st, MP_APPEND, "ap", big, 1000, 0, 0, 0, NULL), MP_NOT_STORED);
    CHECK_EQ_U64(store_full(st, MP_PREPEND, "ap", big, 1000, 0, 0, 0, NULL), MP_NOT_STORED);
    CHECK(exists(st, "ap"));
    mp_store_destroy(st);

    /* -C: memcached counts 8 bytes less, so 8 more value bytes fit */
    st = make_store(64 * MIB, 1, false, true);
    CHECK_EQ_U64(store_full(st, MP_SET, "0123456789", big, 1048515, 0, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(store_full(st, MP_SET, "0123456789", big, 1048516, 0, 0, 0, NULL), MP_TOO_LARGE);
    mp_store_destroy(st);

    /* -I 2m */
    mp_settings s;
    mp_settings_init(&s);
    s.item_size_max = 2 * 1024 * 1024;
    char err[128];
    st = mp_store_create(&s, 2, err, sizeof(err));
    CHECK(st != NULL);
    if (st != NULL) {
        static char huge[2 * 1024 * 1024];
        size_t ok = 2 * 1024 * 1024 - (48 + 8 + 11 + 2);
        CHECK_EQ_U64(store_full(st, MP_SET, "0123456789", huge, ok, 0, 0, 0, NULL), MP_STORED);
        CHECK_EQ_U64(store_full(st, MP_SET, "0123456789", huge, ok + 1, 0, 0, 0, NULL), MP_TOO_LARGE);
        mp_store_destroy(st);
    }
}

static void test_no_evictions(void)
{
    mp_store *st = make_store(2 * MIB, 1, true, false);
    char key[32], val[500];
    fill_value(val, sizeof(val), 0);
    int stored = 0, nomem = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        int r = store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL);
        if (r == MP_STORED)
            stored++;
        else if (r == MP_NO_MEMORY)
            nomem++;
    }
    CHECK(stored > 1000);
    CHECK(nomem > 0);
    CHECK_EQ_U64(stored + nomem, 10000);
    mp_store_stats ss = stats(st);
    CHECK_EQ_U64(ss.evictions, 0);
    CHECK_EQ_U64(ss.curr_items, stored);
    CHECK(ss.store_no_memory > 0);
    /* the first ones are all still there */
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        CHECK(exists(st, key));
    }
    /* expired items are reclaimed even with -M */
    mp_store *st2 = make_store(2 * MIB, 1, true, false);
    int first = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "e%d", i);
        if (store_full(st2, MP_SET, key, val, sizeof(val), 0, 5, 0, NULL) != MP_STORED)
            break;
        first++;
    }
    mp_current_time += 6;
    int again = 0;
    for (int i = 0; i < first; i++) {
        snprintf(key, sizeof(key), "f%d", i);
        if (store_full(st2, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL) == MP_STORED)
            again++;
    }
    mp_current_time -= 6;
    CHECK_EQ_U64(again, first);
    CHECK(stats(st2).reclaimed > 0);
    CHECK_EQ_U64(stats(st2).evictions, 0);
    mp_store_destroy(st2);
    mp_store_destroy(st);
}

static void test_pending(void)
{
    mp_store *st = make_store(2 * MIB, 1, true, true);
    /* a pending item survives any amount of eviction pressure */
    mp_item *p;
    uint64_t hv = mp_hash("pending", 7);
    CHECK_EQ_U64(mp_store_alloc(st, "pending", 7, hv, 5, 0, 102, &p), MP_ALLOC_OK);
    fill_value(MP_ITEM_value(p), 100, 9);
    memcpy(MP_ITEM_value(p) + 100, "\r\n", 2);
    CHECK(!exists(st, "pending"));
    char key[32], val[100];
    fill_value(val, sizeof(val), 1);
    for (int i = 0; i < 50000; i++) {
        snprintf(key, sizeof(key), "x%d", i);
        store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL);
    }
    static char big[1000000];
    CHECK_EQ_U64(store_full(st, MP_SET, "big", big, sizeof(big), 0, 0, 0, NULL), MP_STORED);
    fill_value(val, sizeof(val), 9);
    CHECK(memcmp(MP_ITEM_value(p), val, 100) == 0);
    CHECK_EQ_U64(mp_store_item(st, p, hv, MP_SET, 0, NULL), MP_STORED);
    got g = get(st, "pending");
    CHECK(g.hit);
    CHECK_EQ_U64(g.flags, 5);
    /* released pending items give their memory back */
    mp_store *st2 = make_store(64 * MIB, 1, true, true);
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ_U64(mp_store_alloc(st2, "r", 1, mp_hash("r", 1), 0, 0, 5000, &p), MP_ALLOC_OK);
        mp_store_release(st2, p, mp_hash("r", 1));
    }
    CHECK_EQ_U64(stats(st2).total_malloced, 0);
    CHECK_EQ_U64(stats(st2).curr_items, 0);
    mp_store_destroy(st2);
    mp_store_destroy(st);
}

static void test_hash_growth(void)
{
    mp_store *st = make_store(256 * MIB, 1, true, true);
    uint64_t level0 = stats(st).hash_power_level;
    CHECK_EQ_U64(level0, 16);
    char key[32];
    int n = 300000, missing = 0;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        store(st, MP_SET, key, "v");
        if (i % 1000 == 0) {
            /* everything stored so far is found, mid-expansion included */
            for (int j = 0; j <= i; j += 97) {
                snprintf(key, sizeof(key), "key:%d", j);
                if (!exists(st, key))
                    missing++;
            }
        }
    }
    CHECK_EQ_U64(missing, 0);
    for (int r = 0; r < 100; r++)
        mp_store_maintain(st, 0);
    mp_store_stats ss = stats(st);
    CHECK(ss.hash_power_level >= 18);
    CHECK_EQ_U64(ss.hash_is_expanding, 0);
    CHECK_EQ_U64(ss.curr_items, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "key:%d", i);
        if (!exists(st, key))
            missing++;
    }
    CHECK_EQ_U64(missing, 0);
    mp_store_destroy(st);
}

/* The index near full (six items a bucket before it doubles, so many go
 * past a full home bucket), then deletes and re-stores in random order
 * across its doublings: every lookup agrees with a model, and each key
 * finds its own value. */
static void test_index_churn(void)
{
    mp_store *st = make_store(256 * MIB, 1, true, true);
    enum { N = 160000 };
    unsigned char *in = calloc(N, 1);
    char key[32], val[32];
    int wrong = 0;
    /* just under the first table's threshold: 6 x 2^14 buckets */
    for (int i = 0; i < 98000; i++) {
        snprintf(key, sizeof(key), "ix:%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        store(st, MP_SET, key, val);
        in[i] = 1;
    }
    CHECK_EQ_U64(stats(st).hash_power_level, 16);
    for (int i = 0; i < 98000; i += 3) {
        snprintf(key, sizeof(key), "ix:%d", i);
        CHECK(mp_store_delete(st, key, strlen(key), mp_hash(key, strlen(key))));
        in[i] = 0;
    }
    uint64_t x = 88172645463325252ull;
    for (int op = 0; op < 400000; op++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int i = (int)(x % N);
        snprintf(key, sizeof(key), "ix:%d", i);
        unsigned what = (unsigned)((x >> 40) % 4);
        if (what == 0) {
            bool had = mp_store_delete(st, key, strlen(key), mp_hash(key, strlen(key)));
            wrong += had != (in[i] != 0);
            in[i] = 0;
        } else if (what < 3) {
            snprintf(val, sizeof(val), "v%d", i);
            store(st, MP_SET, key, val);
            in[i] = 1;
        } else {
            got g = get(st, key);
            snprintf(val, sizeof(val), "v%d", i);
            wrong += g.hit != (in[i] != 0) || (g.hit && strcmp(g.value, val) != 0);
        }
        if (op % 50000 == 0)
            mp_store_maintain(st, 0);
    }
    uint64_t live = 0;
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "ix:%d", i);
        wrong += exists(st, key) != (in[i] != 0);
        live += in[i];
    }
    CHECK_EQ_U64(wrong, 0);
    CHECK_EQ_U64(stats(st).curr_items, live);
    CHECK(stats(st).hash_power_level >= 17);
    free(in);
    mp_store_destroy(st);
}

/* mp_store_walk across the table's doublings: items stored between batches
 * make it grow (and migrate) under the walk; every item linked for the
 * whole walk is seen exactly once. */
typedef struct walk_seen {
    int n;
    unsigned char *seen;
    long dups, others;
} walk_seen;

static int walk_count(void *arg, const mp_item *it)
{
    walk_seen *w = arg;
    if (it == NULL)
        return MP_WALK_GO_ON;
    if (it->nkey > 4 && memcmp(MP_ITEM_key(it), "old:", 4) == 0) {
        int i = atoi(MP_ITEM_key(it) + 4);
        if (w->seen[i]++)
            w->dups++;
    } else {
        w->others++;
    }
    return MP_WALK_GO_ON;
}

static void test_walk_growth(void)
{
    mp_store *st = make_store(256 * MIB, 1, true, true);
    char key[32];
    /* near the growth threshold of the first table (1.5 items a bucket) */
    walk_seen w = {.n = 95000};
    w.seen = calloc((size_t)w.n, 1);
    for (int i = 0; i < w.n; i++) {
        snprintf(key, sizeof(key), "old:%d", i);
        store(st, MP_SET, key, "v");
    }
    uint64_t level0 = stats(st).hash_power_level;
    uint64_t cursor = 0;
    int added = 0, calls = 0;
    for (;;) {
        int rc = mp_store_walk(st, 0, &cursor, 7, walk_count, &w);
        calls++;
        if (rc == MP_WALK_SHARD_DONE)
            break;
        if (rc != MP_WALK_GO_ON)
            CHECK_EQ_U64(rc, MP_WALK_GO_ON);
        /* fewer new items per bucket walked than the table's load: the
         * walk outruns the growth */
        for (int j = 0; j < 5; j++, added++) {
            snprintf(key, sizeof(key), "new:%d", added);
            store(st, MP_SET, key, "v");
        }
        /* maintenance migrates too (rarely: debug builds walk the shard) */
        if (calls % 2000 == 0)
            mp_store_maintain(st, 0);
    }
    int missing = 0;
    for (int i = 0; i < w.n; i++)
        missing += w.seen[i] == 0;
    CHECK_EQ_U64(missing, 0);
    CHECK_EQ_U64(w.dups, 0);
    /* the table did double under the walk */
    CHECK(stats(st).hash_power_level >= level0 + 1);
    /* expired items are not shown */
    mp_current_time += 1;
    store_full(st, MP_SET, "old:0", "v", 1, 0, 1, 0, NULL);
    mp_current_time += 2;
    memset(w.seen, 0, (size_t)w.n);
    w.others = 0;
    cursor = 0;
    for (int shard_done = 0; !shard_done;)
        shard_done = mp_store_walk(st, 0, &cursor, 1000, walk_count, &w) == MP_WALK_SHARD_DONE;
    CHECK_EQ_U64(w.seen[0], 0);
    CHECK_EQ_U64(w.seen[1], 1);
    CHECK_EQ_U64(w.others, (uint64_t)added);
    free(w.seen);
    mp_store_destroy(st);
}

static void test_memlimit(void)
{
    mp_store *st = make_store(8 * MIB, 2, true, true);
    char key[32], val[1000];
    fill_value(val, sizeof(val), 0);
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL);
    }
    CHECK(stats(st).total_malloced > 6 * MIB);
    mp_store_set_limit(st, 3 * MIB);
    CHECK_EQ_U64(stats(st).limit_maxbytes, 3 * MIB);
    for (int r = 0; r < 20; r++)
        for (int i = 0; i < 2; i++)
            mp_store_maintain(st, i);
    CHECK(stats(st).total_malloced <= 3 * MIB);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "j%d", i);
        CHECK(store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL) == MP_STORED || i < 0);
    }
    CHECK(stats(st).total_malloced <= 3 * MIB);
    /* raised again, beyond the start-up limit */
    mp_store_set_limit(st, 32 * MIB);
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "l%d", i);
        store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL);
    }
    CHECK(stats(st).total_malloced > 16 * MIB);
    CHECK(stats(st).total_malloced <= 32 * MIB);
    mp_store_destroy(st);
}

/* Slabs of several 64 KiB units: a class of chunks over 8 KiB takes the
 * smallest power of two of units that holds 8 chunks (up to half a page),
 * so in -m 4 with one shard values of 10, 20, 40 and 60 KiB and small ones
 * all stay: with a whole 1 MiB page per class of 8 KiB and more they
 * needed 5 pages and evicted each other. */
static void test_medium_slabs(void)
{
    mp_store *st = make_store(4 * MIB, 1, true, true);
    static char big[60001];
    memset(big, 'b', sizeof(big) - 1);
    static const size_t sizes[] = {10000, 20000, 40000, 60000};
    char key[32];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof(key), "big%d", i);
            CHECK_EQ_U64(store_full(st, MP_SET, key, big, sizes[i], 0, 0, 0, NULL), MP_STORED);
        }
        for (int i = 0; i < 200; i++) {
            snprintf(key, sizeof(key), "small%d", i);
            CHECK_EQ_U64(store(st, MP_SET, key, "a small value"), MP_STORED);
        }
    }
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "big%d", i);
        CHECK(get(st, key).hit);
    }
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "small%d", i);
        CHECK(get(st, key).hit);
    }
    mp_slab_class_stats cls[MP_MAX_SLAB_CLASSES];
    int n = mp_store_get_slab_stats(st, cls, MP_MAX_SLAB_CLASSES);
    for (int c = 1; c < n - 1; c++)
        if (cls[c].chunk_size <= 512 * 1024 / 8)
            CHECK(cls[c].chunks_per_page >= 8);
    mp_store_destroy(st);
}

/* Chunks grow by the factor (8-byte aligned; by 1.25 from 4 KiB chunks up
 * when the factor is smaller) up to half a page, and the last class is a
 * page; the step to memcached's first chunk (`first`) may be shorter. */
static void check_class_growth(const mp_slab_class_stats *cls, int n, double factor, uint32_t first)
{
    /* a 1-byte key and an empty value, rounded to the 8-byte alignment */
    CHECK_EQ_U64(cls[1].chunk_size, (mp_item_size(1, 2, 0) + 7) / 8 * 8);
    for (int c = 2; c < n - 1; c++) {
        uint32_t prev = cls[c - 1].chunk_size;
        double f = prev >= 4096 && factor < 1.25 ? 1.25 : factor;
        CHECK(cls[c].chunk_size >= (uint32_t)(prev * f) || cls[c].chunk_size == first);
        CHECK(cls[c].chunk_size <= (uint32_t)(prev * f) + 8);
        CHECK_EQ_U64(cls[c].chunk_size % 8, 0);
    }
    CHECK(cls[n - 2].chunk_size <= 512 * 1024);
    CHECK(cls[n - 2].chunk_size * (factor < 1.25 ? 1.25 : factor) + 8 > 512 * 1024);
    CHECK(cls[n - 1].chunk_size >= 1024 * 1024);
}

static void test_slab_classes(void)
{
    mp_slab_class_stats cls[MP_MAX_SLAB_CLASSES];
    /* -f 1.25: our own classes for items below memcached's smallest chunk
     * (40, 56, 72), then memcached 1.6.18's boundaries, 96, 120, 152, 192,
     * 240, 304, 384, 480, and as many classes as it has (39 and the page) */
    mp_settings s;
    mp_settings_init(&s);
    s.factor = 1.25;
    mp_store *mc = store_with(&s, 1);
    int n = mp_store_get_slab_stats(mc, cls, MP_MAX_SLAB_CLASSES);
    CHECK_EQ_U64(n, 3 + 41);
    static const uint32_t first[] = {40, 56, 72, 96, 120, 152, 192, 240, 304, 384, 480};
    for (int c = 1; c <= 11; c++)
        CHECK_EQ_U64(cls[c].chunk_size, first[c - 1]);
    check_class_growth(cls, n, 1.25, 96);
    mp_store_destroy(mc);

    /* the default, 1.08: not cut at memcached's 63 classes, so it still
     * reaches half a page; a 300-byte value under an 8-byte key (32 + 9 +
     * 302 = 343 bytes) takes a 368-byte chunk, memcached's 384 */
    mp_store *st = make_store(64 * MIB, 1, true, true);
    n = mp_store_get_slab_stats(st, cls, MP_MAX_SLAB_CLASSES);
    CHECK(n > 63 && n < MP_MAX_SLAB_CLASSES);
    check_class_growth(cls, n, 1.08, 96);
    int c368 = 0;
    for (int c = 1; c < n; c++)
        if (cls[c].chunk_size == 368)
            c368 = c;
    CHECK(c368 != 0);
    store(st, MP_SET, "a", "1");   /* 37 bytes: the 40-byte class 1 */
    n = mp_store_get_slab_stats(st, cls, MP_MAX_SLAB_CLASSES);
    CHECK_EQ_U64(cls[1].chunk_size, 40);
    CHECK_EQ_U64(cls[1].used_chunks, 1);
    CHECK_EQ_U64(cls[1].number, 1);
    CHECK_EQ_U64(cls[1].total_pages, 1);
    CHECK_EQ_U64(cls[1].free_chunks, cls[1].total_chunks - 1);
    CHECK_EQ_U64(cls[1].cmd_set, 1);
    CHECK_EQ_U64(cls[2].used_chunks + cls[2].cmd_set, 0);
    get(st, "a");
    get(st, "a");
    n = mp_store_get_slab_stats(st, cls, MP_MAX_SLAB_CLASSES);
    CHECK_EQ_U64(cls[1].get_hits, 2);
    mp_store_destroy(st);

    /* an item takes the smallest class that holds it: one exactly a chunk's
     * size in that class, one a byte bigger in the next */
    st = make_store(64 * MIB, 1, true, true);
    n = mp_store_get_slab_stats(st, cls, MP_MAX_SLAB_CLASSES);
    static char value[512 * 1024];
    memset(value, 'v', sizeof(value));
    char key[16];
    for (int c = 1; c < n - 1; c++) {
        for (int more = 0; more <= 1; more++) {
            int nkey = snprintf(key, sizeof(key), "%c%d", more ? 'b' : 'a', c);
            size_t own = mp_item_size((size_t)nkey, 2, 0);   /* key, NUL, "\r\n" */
            CHECK_EQ_U64(store_full(st, MP_SET, key, value, cls[c].chunk_size - own + more,
                                    0, 0, 0, NULL), MP_STORED);
        }
    }
    mp_slab_class_stats after[MP_MAX_SLAB_CLASSES];
    mp_store_get_slab_stats(st, after, MP_MAX_SLAB_CLASSES);
    CHECK_EQ_U64(after[1].number, 1);
    for (int c = 2; c < n; c++)
        CHECK_EQ_U64(after[c].number, 2 - (c == n - 1));
    mp_store_destroy(st);
}

/* The client flags take 4 bytes only when not zero (as in memcached): a
 * value that fills a chunk with flags 0 spills into the next class with
 * flags 1, and one 4 bytes shorter fits again.  Flags and value read back
 * intact through every path that copies an item. */
static void test_flags_word(void)
{
    mp_slab_class_stats cls[MP_MAX_SLAB_CLASSES], after[MP_MAX_SLAB_CLASSES];
    mp_store *st = make_store(64 * MIB, 1, true, true);
    int n = mp_store_get_slab_stats(st, cls, MP_MAX_SLAB_CLASSES);
    static char value[4096];
    memset(value, 'v', sizeof(value));
    int c = 10;
    size_t fill = cls[c].chunk_size - mp_item_size(2, 2, 0);   /* key "kN" */
    CHECK_EQ_U64(store_full(st, MP_SET, "k0", value, fill, 0, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(store_full(st, MP_SET, "k1", value, fill, 1, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(store_full(st, MP_SET, "k2", value, fill - 4, 0xdeadbeef, 0, 0, NULL), MP_STORED);
    mp_store_get_slab_stats(st, after, MP_MAX_SLAB_CLASSES);
    CHECK_EQ_U64(after[c].number, 2);
    CHECK_EQ_U64(after[c + 1].number, 1);
    CHECK(n > c + 1);
    CHECK_EQ_U64(get(st, "k0").flags, 0);
    CHECK_EQ_U64(get(st, "k1").flags, 1);
    CHECK_EQ_U64(get(st, "k2").flags, 0xdeadbeef);

    /* append, prepend and incr's copy keep the flags word and the key */
    CHECK_EQ_U64(store_full(st, MP_SET, "a", "12", 2, 77, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(store_full(st, MP_APPEND, "a", "34", 2, 0, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(store_full(st, MP_PREPEND, "a", "0", 1, 0, 0, 0, NULL), MP_STORED);
    got g = get(st, "a");
    CHECK(g.hit && strcmp(g.value, "01234") == 0);
    CHECK_EQ_U64(g.flags, 77);
    char buf[32];
    CHECK_EQ_U64(arith(st, "a", true, 99999999, buf), MP_DELTA_OK);   /* longer: a copy */
    g = get(st, "a");
    CHECK(g.hit && strcmp(g.value, "100001233") == 0);
    CHECK_EQ_U64(g.flags, 77);
    CHECK(exists(st, "a"));
    mp_store_destroy(st);
}

/* A limit above what 32-bit links reach at 8-byte alignment (32 GiB) aligns
 * items to 16 bytes instead of refusing: classes are multiples of 16, and
 * the queues and free lists work under churn and eviction (at a lowered
 * limit, so nothing near 40 GiB is touched). */
static bool intact_aligned_16(const mp_item *it, int k, int n)
{
    return (uintptr_t)it % 16 == 0 && intact_by_flags(it, k, n);
}

static void test_large_arena(void)
{
    mp_store *st = make_store((size_t)40 << 30, 2, true, true);
    mp_slab_class_stats cls[MP_MAX_SLAB_CLASSES];
    int n = mp_store_get_slab_stats(st, cls, MP_MAX_SLAB_CLASSES);
    int misaligned = 0;
    for (int c = 1; c < n; c++)
        misaligned += cls[c].chunk_size % 16 != 0;
    CHECK_EQ_U64(misaligned, 0);
    mp_store_set_limit(st, 4 * MIB);
    static char val[20000];
    char key[32];
    unsigned seed = 777;
    for (int i = 0; i < 30000; i++) {
        seed = seed * 1103515245 + 12345;
        size_t len = (seed >> 4) % ((seed >> 20) % 8 == 0 ? 20000 : 300);
        snprintf(key, sizeof(key), "L%d", i % 3000);
        fill_value(val, len, i);
        CHECK(store_full(st, MP_SET, key, val, len, (uint32_t)i, 0, 0, NULL) == MP_STORED || i < 0);
        if (i % 5 == 0) {
            snprintf(key, sizeof(key), "L%d", (i * 7) % 3000);
            get(st, key);
        }
        if (i % 11 == 0) {
            snprintf(key, sizeof(key), "L%d", (i * 13) % 3000);
            mp_store_delete_quiet(st, key, strlen(key), mp_hash(key, strlen(key)));
        }
    }
    CHECK(stats(st).evictions > 0);
    int present;
    CHECK_EQ_U64(count_damaged(st, "L", 3000, &present, intact_aligned_16), 0);
    CHECK(present > 100);
    mp_store_destroy(st);
}

static void test_hash_quality(void)
{
    /* keys differing in one character spread evenly over high and low bits */
    enum { N = 1 << 16, B = 256 };
    static int lo[B], hi[B];
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "user:%08d", i);
        uint64_t h = mp_hash(key, strlen(key));
        lo[h & (B - 1)]++;
        hi[h >> 56]++;
    }
    int lo_max = 0, hi_max = 0;
    for (int b = 0; b < B; b++) {
        if (lo[b] > lo_max)
            lo_max = lo[b];
        if (hi[b] > hi_max)
            hi_max = hi[b];
    }
    /* mean 256 per bucket; a decent hash stays well under 1.3x */
    CHECK(lo_max < 256 * 13 / 10);
    CHECK(hi_max < 256 * 13 / 10);
    CHECK(mp_hash("a", 1) != mp_hash("b", 1));
    CHECK(mp_hash("", 0) != mp_hash("\0", 1));
    CHECK(mp_hash("abcdefghijklmnop", 16) != mp_hash("abcdefghijklmnoq", 16));
}

/* ---- the eviction policy against plain LRU ---- */

/* An LRU of the same number of items, over integer keys. */
typedef struct lru_node { int key, prev, next; } lru_node;
typedef struct lru {
    int *where;      /* key -> node, -1 absent */
    lru_node *nodes;
    int head, tail, used, cap;
} lru;

static void lru_unlink(lru *l, int i)
{
    lru_node *n = &l->nodes[i];
    if (n->prev >= 0) l->nodes[n->prev].next = n->next; else l->head = n->next;
    if (n->next >= 0) l->nodes[n->next].prev = n->prev; else l->tail = n->prev;
}

static void lru_push(lru *l, int i)
{
    l->nodes[i].prev = -1;
    l->nodes[i].next = l->head;
    if (l->head >= 0)
        l->nodes[l->head].prev = i;
    l->head = i;
    if (l->tail < 0)
        l->tail = i;
}

static bool lru_access(lru *l, int key)
{
    int i = l->where[key];
    if (i >= 0) {
        lru_unlink(l, i);
        lru_push(l, i);
        return true;
    }
    if (l->used < l->cap) {
        i = l->used++;
    } else {
        i = l->tail;
        lru_unlink(l, i);
        l->where[l->nodes[i].key] = -1;
    }
    l->nodes[i].key = key;
    l->where[key] = i;
    lru_push(l, i);
    return false;
}

/* A look-aside cache (get, on a miss set) under a Zipf(0.9) popularity:
 * S3-FIFO must miss clearly less than LRU with the same number of items. */
static void test_policy_vs_lru(void)
{
    enum { NKEYS = 100000, REQS = 600000 };
    const double alpha = 0.9;
    double *cdf = malloc(sizeof(double) * NKEYS);
    int *seq = malloc(sizeof(int) * REQS);
    double sum = 0;
    for (int i = 0; i < NKEYS; i++) {
        sum += 1.0 / pow(i + 1, alpha);
        cdf[i] = sum;
    }
    uint64_t rnd = 88172645463325252ull;
    for (int r = 0; r < REQS; r++) {
        rnd ^= rnd << 13; rnd ^= rnd >> 7; rnd ^= rnd << 17;
        double u = (double)(rnd >> 11) / (double)(1ull << 53) * sum;
        int lo = 0, hi = NKEYS - 1;
        while (lo < hi) {
            int m = (lo + hi) / 2;
            if (cdf[m] < u) lo = m + 1; else hi = m;
        }
        seq[r] = (int)(((unsigned)lo * 2654435761u) % NKEYS);
    }
    mp_store *st = make_store(3 * MIB, 1, true, true);
    char key[32], val[200];
    memset(val, 'v', sizeof(val));
    long hits = 0, measured = 0;
    for (int r = 0; r < REQS; r++) {
        snprintf(key, sizeof(key), "z%d", seq[r]);
        bool hit = get(st, key).hit;
        if (!hit)
            store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL);
        if (r >= REQS / 4) {
            measured++;
            hits += hit;
        }
    }
    lru l = { malloc(sizeof(int) * NKEYS), NULL, -1, -1, 0, (int)stats(st).curr_items };
    l.nodes = malloc(sizeof(lru_node) * (size_t)l.cap);
    memset(l.where, -1, sizeof(int) * NKEYS);
    long lru_hits = 0;
    for (int r = 0; r < REQS; r++) {
        bool hit = lru_access(&l, seq[r]);
        if (r >= REQS / 4)
            lru_hits += hit;
    }
    double miss_s3 = 1.0 - (double)hits / (double)measured;
    double miss_lru = 1.0 - (double)lru_hits / (double)measured;
    printf("  zipf 0.9, %d items: miss ratio S3-FIFO %.4f, LRU %.4f\n", l.cap, miss_s3, miss_lru);
    /* the paper reports ~10% fewer misses at this skew; ask for 5% */
    CHECK(miss_s3 < miss_lru * 0.95);
    free(l.where);
    free(l.nodes);
    free(cdf);
    free(seq);
    mp_store_destroy(st);
}

/* ---- threads ---- */

#define THREADS 4
#define INCRS 20000
#define HOT_KEYS 8

typedef struct worker {
    mp_store *st;
    int id;
    int errors;
} worker;

static void *incr_worker(void *arg)
{
    worker *w = arg;
    char buf[32], key[32], val[200];
    for (int i = 0; i < INCRS; i++) {
        snprintf(key, sizeof(key), "counter%d", i % HOT_KEYS);
        if (mp_store_arith(w->st, key, strlen(key), mp_hash(key, strlen(key)), true, 1,
                           buf, NULL) != MP_DELTA_OK)
            w->errors++;
        /* churn around the counters: sets, gets, deletes on other keys */
        snprintf(key, sizeof(key), "t%d-%d", w->id, i % 500);
        fill_value(val, sizeof(val), i);
        if (store_full(w->st, MP_SET, key, val, 50 + (size_t)(i % 150), 0, 0, 0, NULL) != MP_STORED)
            w->errors++;
        got g = get(w->st, key);
        if (!g.hit || strncmp(g.value, val, 20) != 0)
            w->errors++;
        if (i % 3 == 0)
            mp_store_delete(w->st, key, strlen(key), mp_hash(key, strlen(key)));
        if (i % 1000 == 0)
            mp_store_maintain(w->st, w->id % mp_store_nshards(w->st));
    }
    return NULL;
}

static void test_threads(void)
{
    mp_store *st = make_store(64 * MIB, 4, true, true);
    char key[32], buf[32];
    for (int k = 0; k < HOT_KEYS; k++) {
        snprintf(key, sizeof(key), "counter%d", k);
        store(st, MP_SET, key, "0");
    }
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){ st, i, 0 };
        pthread_create(&th[i], NULL, incr_worker, &w[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_U64(w[i].errors, 0);
    }
    for (int k = 0; k < HOT_KEYS; k++) {
        snprintf(key, sizeof(key), "counter%d", k);
        snprintf(buf, sizeof(buf), "%d", THREADS * INCRS / HOT_KEYS);
        CHECK_STR(get(st, key).value, buf);
    }
    mp_store_destroy(st);
}

/* Several threads under eviction pressure in a small memory with stealing
 * between shards: nothing crashes, memory stays bounded. */
static void *pressure_worker(void *arg)
{
    worker *w = arg;
    static char big[200000];
    char key[32], val[3000];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "p%d-%d", w->id, i);
        size_t len = (size_t)((i * 7919) % 3000);
        int r = i % 97 == 0
            ? store_full(w->st, MP_SET, key, big, sizeof(big), 0, 0, 0, NULL)
            : store_full(w->st, MP_SET, key, val, len, 0, 0, 0, NULL);
        if (r != MP_STORED)
            w->errors++;
        if (i % 5 == 0) {
            snprintf(key, sizeof(key), "p%d-%d", w->id, i / 2);
            get(w->st, key);
        }
        if (i % 500 == 0)
            mp_store_maintain(w->st, w->id % mp_store_nshards(w->st));
    }
    return NULL;
}

static void test_threads_pressure(void)
{
    mp_store *st = make_store(8 * MIB, 4, true, true);
    pthread_t th[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){ st, i, 0 };
        pthread_create(&th[i], NULL, pressure_worker, &w[i]);
    }
    int errors = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        errors += w[i].errors;
    }
    /* a store may fail only when every page is pinned by pending items,
     * which never happens here */
    CHECK_EQ_U64(errors, 0);
    mp_store_stats ss = stats(st);
    CHECK(ss.total_malloced <= 8 * MIB);
    CHECK(ss.evictions > 0);
    mp_store_destroy(st);
}

/* ---- references (zero-copy replies) ---- */

/* Looks a key up and takes a reference, as a reply sending the value from
 * the item does. */
static mp_item *ref_key(mp_store *st, const char *key)
{
    size_t nkey = strlen(key);
    uint64_t hv = mp_hash(key, nkey);
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    mp_item *it = mp_item_find(s, key, nkey, hv, NULL);
    if (it != NULL)
        mp_item_ref(s, it);
    mp_shard_unlock(s);
    return it;
}

static mp_item *find_ptr(mp_store *st, const char *key)
{
    size_t nkey = strlen(key);
    uint64_t hv = mp_hash(key, nkey);
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    mp_item *it = mp_item_find(s, key, nkey, hv, NULL);
    mp_shard_unlock(s);
    return it;
}

/* The referenced item still holds exactly this key and value. */
static bool ref_intact(const mp_item *it, const char *key, const char *val, size_t vlen)
{
    return it->nkey == strlen(key) && memcmp(MP_ITEM_key(it), key, it->nkey) == 0 &&
           it->nbytes == vlen + 2 && memcmp(MP_ITEM_value(it), val, vlen) == 0 &&
           memcmp(MP_ITEM_value(it) + vlen, "\r\n", 2) == 0;
}

static bool item_linked(mp_store *st, mp_item *it)
{
    mp_shard *s = mp_store_shard(st, mp_hash(MP_ITEM_key(it), it->nkey));
    mp_shard_lock(s);
    bool linked = (it->iflags & MP_IT_LINKED) != 0;
    mp_shard_unlock(s);
    return linked;
}

static mp_slab_class_stats class_stats_of(mp_store *st, int cls)
{
    mp_slab_class_stats c[MP_MAX_SLAB_CLASSES];
    mp_store_get_slab_stats(st, c, MP_MAX_SLAB_CLASSES);
    return c[cls];
}

static void test_ref_delete(void)
{
    /* the counters: curr_items and bytes drop at the delete as in memcached;
     * the chunk (so its slab and page) stays used until the unref */
    mp_store *st = make_store(64 * MIB, 1, true, true);
    static char val[1000];
    fill_value(val, sizeof(val), 7);
    CHECK_EQ_U64(store_full(st, MP_SET, "r", val, sizeof(val), 0, 0, 0, NULL), MP_STORED);
    mp_store_stats before = stats(st);
    mp_item *it = ref_key(st, "r");
    CHECK(it != NULL);
    if (it == NULL)
        return;
    int cls = it->clsid;
    CHECK(mp_store_delete(st, "r", 1, mp_hash("r", 1)));
    CHECK(!exists(st, "r"));
    CHECK(!mp_store_delete(st, "r", 1, mp_hash("r", 1)));
    mp_store_stats ss = stats(st);
    CHECK_EQ_U64(ss.curr_items, 0);
    CHECK_EQ_U64(ss.bytes, 0);
    CHECK_EQ_U64(ss.total_items, before.total_items);
    CHECK_EQ_U64(ss.total_malloced, before.total_malloced);
    CHECK(ss.total_malloced > 0);
    mp_slab_class_stats c = class_stats_of(st, cls);
    CHECK_EQ_U64(c.number, 0);
    CHECK_EQ_U64(c.used_chunks, 1);
    CHECK(ref_intact(it, "r", val, sizeof(val)));
    /* a second reference: the first unref frees nothing */
    mp_shard *s = mp_store_shard(st, mp_hash("r", 1));
    mp_shard_lock(s);
    mp_item_ref(s, it);
    mp_shard_unlock(s);
    mp_store_unref(st, it);
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 1);
    CHECK(ref_intact(it, "r", val, sizeof(val)));
    mp_store_unref(st, it);
    /* the last one gives the chunk back, and the emptied page to the pool */
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 0);
    CHECK_EQ_U64(stats(st).total_malloced, 0);
    /* a referenced item never unlinked: the unref frees nothing */
    store_full(st, MP_SET, "l", val, sizeof(val), 0, 0, 0, NULL);
    it = ref_key(st, "l");
    mp_store_unref(st, it);
    CHECK(find_ptr(st, "l") == it);
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 1);
    mp_store_destroy(st);

    /* deleted while referenced, then memory churned through many times over
     * (evictions in its class, whole pages drained for large items) */
    st = make_store(2 * MIB, 1, true, true);
    fill_value(val, sizeof(val), 3);
    CHECK_EQ_U64(store_full(st, MP_SET, "victim", val, sizeof(val), 0, 0, 0, NULL), MP_STORED);
    it = ref_key(st, "victim");
    CHECK(it != NULL);
    if (it == NULL)
        return;
    CHECK(mp_store_delete(st, "victim", 6, mp_hash("victim", 6)));
    /* and one left linked: eviction in its class skips it */
    CHECK_EQ_U64(store_full(st, MP_SET, "kept", val, sizeof(val), 0, 0, 0, NULL), MP_STORED);
    mp_item *kept = ref_key(st, "kept");
    static char other[1000], big[300000];
    char key[32];
    int failed = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "f%d", i);
        fill_value(other, sizeof(other), i + 4);   /* never the victim's bytes */
        if (i % 1000 == 500) {
            /* of four large classes in turn: each needs a whole page */
            size_t blen = sizeof(big) / 4 * (size_t)(1 + i / 1000 % 4);
            if (store_full(st, MP_SET, key, big, blen, 0, 0, 0, NULL) != MP_STORED)
                failed++;
        } else if (store_full(st, MP_SET, key, other, sizeof(other), 0, 0, 0, NULL) != MP_STORED) {
            failed++;
        }
    }
    CHECK_EQ_U64(failed, 0);
    ss = stats(st);
    CHECK(ss.evictions > 10000);
    CHECK(ss.slab_reassigns > 0);
    CHECK(ss.total_malloced <= 2 * MIB);
    CHECK(ref_intact(it, "victim", val, sizeof(val)));
    CHECK(find_ptr(st, "kept") == kept);
    CHECK(ref_intact(kept, "kept", val, sizeof(val)));
    mp_store_unref(st, kept);
    /* no live item was given the pinned chunk */
    int shared = 0;
    for (int i = 19000; i < 20000; i++) {
        snprintf(key, sizeof(key), "f%d", i);
        if (find_ptr(st, key) == it)
            shared++;
    }
    CHECK_EQ_U64(shared, 0);
    mp_store_unref(st, it);
    /* the chunk heads its class's free list now: the next item of that
     * class takes it */
    CHECK_EQ_U64(store_full(st, MP_SET, "next", other, sizeof(other), 0, 0, 0, NULL), MP_STORED);
    CHECK(find_ptr(st, "next") == it);
    mp_store_destroy(st);
}

/* References are counted per slab (the item has no count): an item of a
 * referenced slab that is deleted or overwritten keeps its chunk, whoever
 * holds the reference, until the slab's last reference goes, then all of
 * them are freed at once; another slab is not affected. */
static void test_ref_slab(void)
{
    mp_store *st = make_store(64 * MIB, 1, true, true);
    static char val[1000], val2[1000];
    fill_value(val, sizeof(val), 5);
    fill_value(val2, sizeof(val2), 6);
    const char *keys[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++)
        CHECK_EQ_U64(store_full(st, MP_SET, keys[i], val, sizeof(val), 0, 0, 0, NULL), MP_STORED);
    mp_item *a = ref_key(st, "a"), *b = find_ptr(st, "b");
    CHECK(a != NULL && b != NULL);
    if (a == NULL || b == NULL)
        return;
    int cls = a->clsid;
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 3);
    /* another class's item: another slab, no reference */
    CHECK_EQ_U64(store_full(st, MP_SET, "small", "x", 1, 0, 0, 0, NULL), MP_STORED);
    mp_shard *s = mp_store_shard(st, mp_hash("a", 1));
    mp_shard_lock(s);
    CHECK_EQ_U64(mp_item_slab_refs(s, a), 1);
    CHECK_EQ_U64(mp_item_slab_refs(s, b), 1);
    CHECK_EQ_U64(mp_item_slab_refs(s, mp_item_find(s, "small", 5, mp_hash("small", 5), NULL)), 0);
    mp_shard_unlock(s);
    /* b deleted, c overwritten (the new value takes a fresh chunk) */
    CHECK(mp_store_delete(st, "b", 1, mp_hash("b", 1)));
    CHECK_EQ_U64(store_full(st, MP_SET, "c", val2, sizeof(val2), 0, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(stats(st).curr_items, 3);   /* a, c, small */
    CHECK_EQ_U64(class_stats_of(st, cls).number, 2);
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 4);   /* and b, the old c */
    CHECK(ref_intact(a, "a", val, sizeof(val)));
    CHECK(ref_intact(b, "b", val, sizeof(val)));
    mp_store_unref(st, a);
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 2);
    CHECK(find_ptr(st, "a") == a);
    mp_store_destroy(st);

    /* incr of a number in a referenced slab writes a copy, not in place;
     * the old one is freed with the slab's last reference */
    st = make_store(64 * MIB, 1, true, true);
    CHECK_EQ_U64(store_full(st, MP_SET, "n1", "41", 2, 0, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(store_full(st, MP_SET, "n2", "10", 2, 0, 0, 0, NULL), MP_STORED);
    mp_item *n1 = ref_key(st, "n1"), *n2 = find_ptr(st, "n2");
    int ncls = n1->clsid;
    char buf[32];
    CHECK_EQ_U64(mp_store_arith(st, "n2", 2, mp_hash("n2", 2), true, 5, buf, NULL), MP_DELTA_OK);
    CHECK(strcmp(buf, "15") == 0);
    CHECK(find_ptr(st, "n2") != n2);
    CHECK_EQ_U64(class_stats_of(st, ncls).used_chunks, 3);
    mp_store_unref(st, n1);
    CHECK_EQ_U64(class_stats_of(st, ncls).used_chunks, 2);
    /* no reference now: in place */
    n2 = find_ptr(st, "n2");
    CHECK_EQ_U64(mp_store_arith(st, "n2", 2, mp_hash("n2", 2), true, 1, buf, NULL), MP_DELTA_OK);
    CHECK(strcmp(buf, "16") == 0);
    CHECK(find_ptr(st, "n2") == n2);
    mp_store_destroy(st);
}

/* A referenced item that stays linked is never evicted, and no slab
 * move takes its slab, while the memory moves to another class. */
static void test_ref_pins(void)
{
    mp_rel_time start = mp_current_time;
    mp_store *st = make_store(4 * MIB, 1, true, true);
    char key[32];
    static char val[1500];
    fill_value(val, sizeof(val), 0);
    mp_item *kept = NULL, *gone = NULL;
    for (int i = 0; i < 40000; i++) {
        snprintf(key, sizeof(key), "small%d", i);
        store_full(st, MP_SET, key, val, 50, 0, 0, 0, NULL);
        if (i == 20000)
            kept = ref_key(st, key);
        if (i == 20001)
            gone = ref_key(st, key);
    }
    CHECK(kept != NULL && gone != NULL);
    if (kept == NULL || gone == NULL)
        return;
    CHECK(mp_store_delete(st, "small20001", 10, mp_hash("small20001", 10)));
    uint64_t reassigns = stats(st).slab_reassigns;
    mp_current_time += 60;
    for (int i = 0; i < 20000; i++) {
        if (i % 1000 == 0)
            mp_current_time++;
        snprintf(key, sizeof(key), "large%d", i);
        CHECK_EQ_U64(store_full(st, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL), MP_STORED);
        if (i % 500 == 0)
            mp_store_maintain(st, 0);
    }
    int small_left = 0;
    for (int i = 0; i < 40000; i++) {
        snprintf(key, sizeof(key), "small%d", i);
        if (exists(st, key))
            small_left++;
    }
    /* most of the small class went to the large one, slab by slab */
    CHECK(stats(st).slab_reassigns > reassigns + 20);
    CHECK(small_left < 10000);
    /* but not the referenced item, nor the deleted one's memory */
    CHECK(exists(st, "small20000"));
    CHECK(find_ptr(st, "small20000") == kept);
    CHECK(ref_intact(kept, "small20000", val, 50));
    CHECK(ref_intact(gone, "small20001", val, 50));
    mp_store_unref(st, kept);
    mp_store_unref(st, gone);
    mp_current_time = start;
    mp_store_destroy(st);

    /* a large item has a page to itself: pages are emptied for other large
     * classes over and over, never that one */
    st = make_store(4 * MIB, 1, true, true);
    static char big[400000];
    fill_value(big, sizeof(big), 5);
    CHECK_EQ_U64(store_full(st, MP_SET, "bigref", big, sizeof(big), 0, 0, 0, NULL), MP_STORED);
    kept = ref_key(st, "bigref");
    CHECK(kept != NULL);
    if (kept == NULL)
        return;
    static char other[400000];
    fill_value(other, sizeof(other), 6);
    int failed = 0;
    static const size_t lens[] = { 60000, 78000, 101400, 131820, 171366, 222776, 289609, 376491 };
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "b%d", i);
        /* eight other large classes in turn, three pages for them */
        size_t len = lens[i % 8];
        if (store_full(st, MP_SET, key, other, len, 0, 0, 0, NULL) != MP_STORED)
            failed++;
    }
    CHECK_EQ_U64(failed, 0);
    CHECK(stats(st).slab_reassigns > 50);
    CHECK(find_ptr(st, "bigref") == kept);
    CHECK(ref_intact(kept, "bigref", big, sizeof(big)));
    mp_store_unref(st, kept);
    /* unpinned, its page goes the way of the others */
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "b%d", i);
        store_full(st, MP_SET, key, other, lens[i % 8], 0, 0, 0, NULL);
    }
    CHECK(!exists(st, "bigref"));
    mp_store_destroy(st);
}

static void test_ref_overwrite(void)
{
    mp_store *st = make_store(64 * MIB, 2, true, true);
    static char a[500], b[500];
    fill_value(a, sizeof(a), 1);
    fill_value(b, sizeof(b), 2);
    CHECK_EQ_U64(store_full(st, MP_SET, "o", a, sizeof(a), 5, 0, 0, NULL), MP_STORED);
    mp_item *ra = ref_key(st, "o");
    CHECK(ra != NULL);
    if (ra == NULL)
        return;
    int cls = ra->clsid;
    CHECK_EQ_U64(store_full(st, MP_SET, "o", b, sizeof(b), 6, 0, 0, NULL), MP_STORED);
    got g = get(st, "o");
    CHECK(g.hit);
    CHECK(memcmp(g.value, b, 255) == 0);
    CHECK_EQ_U64(g.flags, 6);
    CHECK(!item_linked(st, ra));
    CHECK(ref_intact(ra, "o", a, sizeof(a)));
    CHECK_EQ_U64(mp_item_flags(ra), 5);
    CHECK_EQ_U64(stats(st).curr_items, 1);
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 2);
    /* the new one referenced too, then appended to and cas-replaced */
    mp_item *rb = ref_key(st, "o");
    CHECK_EQ_U64(store(st, MP_APPEND, "o", "X"), MP_STORED);
    mp_item *rc = ref_key(st, "o");
    uint64_t cas = get(st, "o").cas;
    CHECK_EQ_U64(store_full(st, MP_CAS, "o", "c", 1, 0, 0, cas, NULL), MP_STORED);
    CHECK_STR(get(st, "o").value, "c");
    CHECK(ref_intact(ra, "o", a, sizeof(a)));
    CHECK(ref_intact(rb, "o", b, sizeof(b)));
    char bx[501];
    memcpy(bx, b, 500);
    bx[500] = 'X';
    CHECK(ref_intact(rc, "o", bx, sizeof(bx)));
    CHECK_EQ_U64(stats(st).curr_items, 1);
    mp_store_unref(st, rc);
    mp_store_unref(st, rb);
    mp_store_unref(st, ra);
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 0);
    CHECK_STR(get(st, "o").value, "c");
    mp_store_destroy(st);
}

static void test_ref_arith(void)
{
    mp_store *st = make_store(64 * MIB, 1, true, true);
    char buf[32];
    store_full(st, MP_SET, "n", "100", 3, 42, 1000, 0, NULL);
    got g0 = get(st, "n");   /* fetched: the flag must survive */
    mp_rel_time start = mp_current_time;
    mp_current_time += 30;   /* less than memcached's ITEM_UPDATE_INTERVAL */
    mp_item *p0 = ref_key(st, "n");
    CHECK(p0 != NULL);
    if (p0 == NULL)
        return;
    mp_store_stats before = stats(st);
    int cls = p0->clsid;
    uint64_t number = class_stats_of(st, cls).number;
    uint64_t cas = 0;
    CHECK_EQ_U64(mp_store_arith(st, "n", 1, mp_hash("n", 1), false, 1, buf, &cas), MP_DELTA_OK);
    CHECK_STR(buf, "99");
    /* the referenced bytes untouched; a copy with memcached's in-place
     * padding took its place */
    CHECK(ref_intact(p0, "n", "100", 3));
    CHECK(!item_linked(st, p0));
    mp_item *p1 = find_ptr(st, "n");
    CHECK(p1 != NULL && p1 != p0);
    CHECK(p1 != NULL && (p1->iflags & MP_IT_FETCHED));   /* before any get of it */
    got g = get(st, "n");
    CHECK_STR(g.value, "99 ");
    CHECK_EQ_U64(g.cas, cas);
    CHECK(cas > g0.cas);
    CHECK_EQ_U64(g.flags, 42);
    CHECK_EQ_U64(g.exptime, g0.exptime);
    CHECK(p1 != NULL && p1->time == start);   /* as in place: not refreshed yet */
    mp_current_time = start;
    /* as an in-place write: not a store, nothing else changes */
    mp_store_stats after = stats(st);
    CHECK_EQ_U64(after.total_items, before.total_items);
    CHECK_EQ_U64(after.curr_items, before.curr_items);
    CHECK_EQ_U64(after.bytes, before.bytes);
    CHECK_EQ_U64(class_stats_of(st, cls).number, number);
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 2);
    mp_store_unref(st, p0);
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 1);

    /* without a reference: in place, the same item */
    CHECK_EQ_U64(arith(st, "n", false, 1, buf), MP_DELTA_OK);
    CHECK(find_ptr(st, "n") == p1);
    CHECK_STR(get(st, "n").value, "98 ");

    /* referenced, the result longer: a new item as always */
    mp_item *r1 = ref_key(st, "n");
    CHECK_EQ_U64(arith(st, "n", true, 1000, buf), MP_DELTA_OK);
    CHECK_STR(get(st, "n").value, "1098");
    CHECK(ref_intact(r1, "n", "98 ", 3));
    mp_store_unref(st, r1);

    /* ma (mp_item_delta) on a referenced item: the copy stands for it, so
     * T applies to what is stored (not moved), as it would in place */
    mp_item *r2 = ref_key(st, "n");
    uint64_t hv = mp_hash("n", 1);
    mp_shard *s = mp_store_shard(st, hv);
    mp_item *out = NULL;
    bool moved = true;
    mp_shard_lock(s);
    CHECK_EQ_U64(mp_item_delta(s, "n", 1, hv, false, 98, 0, buf, &out, &moved), MP_DELTA_OK);
    CHECK(!moved);
    CHECK(out != NULL && out != r2 && out == mp_item_find(s, "n", 1, hv, NULL));
    mp_shard_unlock(s);
    CHECK_STR(buf, "1000");
    CHECK_STR(get(st, "n").value, "1000");
    CHECK(ref_intact(r2, "n", "1098", 4));
    mp_store_unref(st, r2);
    mp_store_destroy(st);
}

static void test_ref_expiry_flush(void)
{
    mp_rel_time start = mp_current_time;
    mp_store *st = make_store(64 * MIB, 2, true, true);
    static char val[2000];
    fill_value(val, sizeof(val), 11);

    /* reclaimed by the maintenance sweep */
    store_full(st, MP_SET, "e", val, sizeof(val), 0, 5, 0, NULL);
    mp_item *it = ref_key(st, "e");
    CHECK(it != NULL);
    if (it == NULL)
        return;
    mp_current_time += 6;
    for (int r = 0; r < 64; r++)
        for (int i = 0; i < mp_store_nshards(st); i++)
            mp_store_maintain(st, i);
    mp_store_stats ss = stats(st);
    CHECK_EQ_U64(ss.curr_items, 0);
    CHECK_EQ_U64(ss.crawler_reclaimed, 1);
    CHECK(ss.total_malloced > 0);
    CHECK(!item_linked(st, it));
    CHECK(ref_intact(it, "e", val, sizeof(val)));
    mp_store_unref(st, it);
    CHECK_EQ_U64(stats(st).total_malloced, 0);

    /* unlinked lazily by a lookup */
    store_full(st, MP_SET, "e2", val, sizeof(val), 0, 5, 0, NULL);
    it = ref_key(st, "e2");
    mp_current_time += 6;
    got g = get(st, "e2");
    CHECK(!g.hit);
    CHECK_EQ_U64(g.why, MP_MISS_EXPIRED);
    CHECK(ref_intact(it, "e2", val, sizeof(val)));
    mp_store_unref(st, it);
    CHECK_EQ_U64(stats(st).total_malloced, 0);

    /* flush_all, then the key stored again, then the sweep */
    store_full(st, MP_SET, "f", val, sizeof(val), 0, 0, 0, NULL);
    it = ref_key(st, "f");
    mp_store_flush(st, 0);
    g = get(st, "f");
    CHECK(!g.hit);
    CHECK_EQ_U64(g.why, MP_MISS_FLUSHED);
    CHECK_EQ_U64(store(st, MP_SET, "f", "new"), MP_STORED);
    CHECK_STR(get(st, "f").value, "new");
    for (int r = 0; r < 64; r++)
        for (int i = 0; i < mp_store_nshards(st); i++)
            mp_store_maintain(st, i);
    CHECK(ref_intact(it, "f", val, sizeof(val)));
    int cls = it->clsid;
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 1);
    mp_store_unref(st, it);
    CHECK_EQ_U64(class_stats_of(st, cls).used_chunks, 0);
    CHECK_STR(get(st, "f").value, "new");

    /* flushed while referenced and found dead at a tail while memory is
     * short: skipped, not reclaimed */
    mp_store *st2 = make_store(2 * MIB, 1, true, false);
    char key[32];
    store_full(st2, MP_SET, "t", val, sizeof(val), 0, 0, 0, NULL);
    it = ref_key(st2, "t");
    mp_current_time += 2;
    mp_store_flush(st2, 0);
    mp_current_time += 2;
    int stored = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        if (store_full(st2, MP_SET, key, val, sizeof(val), 0, 0, 0, NULL) == MP_STORED)
            stored++;
    }
    CHECK(stored > 500);
    CHECK(stored < 5000);
    /* memcached's lru_pull_tail passes over a referenced tail item too */
    CHECK_EQ_U64(stats(st2).reclaimed, 0);
    CHECK(ref_intact(it, "t", val, sizeof(val)));
    mp_store_unref(st2, it);
    /* now it is dead weight at the tail: the next store reclaims it */
    CHECK_EQ_U64(store_full(st2, MP_SET, "u", val, sizeof(val), 0, 0, 0, NULL), MP_STORED);
    CHECK_EQ_U64(stats(st2).reclaimed, 1);
    mp_store_destroy(st2);
    mp_current_time = start;
    mp_store_destroy(st);
}

/* Mixed sizes through a small memory with several shards (pages move
 * between classes and shards), with references held across many stores:
 * the referenced bytes never change. */
static void value_with_id(char *buf, size_t len, int id)
{
    fill_value(buf, len, id);
    char tag[16];
    int n = snprintf(tag, sizeof(tag), "#%d#", id);
    if ((size_t)n <= len)
        memcpy(buf, tag, (size_t)n);
}

/* A value stored as value_with_id(.., flags). */
static bool intact_with_id(const mp_item *it, int k, int n)
{
    (void)k;
    (void)n;
    static char val[300000];
    size_t len = it->nbytes - 2;
    if (len > sizeof(val))
        return false;
    value_with_id(val, len, (int)mp_item_flags(it));
    return memcmp(MP_ITEM_value(it), val, len) == 0;
}

static void test_ref_mixed_sizes(void)
{
    enum { MAXREFS = 16 };
    mp_store *st = make_store(8 * MIB, 4, true, true);
    static char val[300000];
    char key[32];
    struct { mp_item *it; char key[32]; size_t len; int id; } refs[MAXREFS];
    int nrefs = 0, taken = 0, corrupt = 0;
    unsigned seed = 777;
    for (int i = 0; i < 30000; i++) {
        seed = seed * 1103515245 + 12345;
        size_t len = (seed >> 8) % 8 == 0 ? (seed >> 4) % 300000 : (seed >> 4) % 3000;
        snprintf(key, sizeof(key), "m%d", i % 3000);
        value_with_id(val, len, i);
        store_full(st, MP_SET, key, val, len, (uint32_t)i, 0, 0, NULL);
        if (i % 13 == 0 && nrefs < MAXREFS) {
            mp_item *it = ref_key(st, key);
            if (it != NULL) {
                refs[nrefs].it = it;
                snprintf(refs[nrefs].key, sizeof(refs[nrefs].key), "%s", key);
                refs[nrefs].len = len;
                refs[nrefs].id = i;
                nrefs++;
                taken++;
                if (i % 2 == 0)
                    mp_store_delete(st, key, strlen(key), mp_hash(key, strlen(key)));
            }
        }
        if (i % 7 == 0) {
            snprintf(key, sizeof(key), "m%d", (i * 31) % 3000);
            get(st, key);
        }
        if (i % 1000 == 0)
            for (int k = 0; k < mp_store_nshards(st); k++)
                mp_store_maintain(st, k);
        if (nrefs == MAXREFS || i % 101 == 0) {
            /* verify every held one, drop the older half */
            for (int r = 0; r < nrefs; r++) {
                value_with_id(val, refs[r].len, refs[r].id);
                if (!ref_intact(refs[r].it, refs[r].key, val, refs[r].len))
                    corrupt++;
            }
            int drop = nrefs == MAXREFS ? MAXREFS / 2 : 0;
            for (int r = 0; r < drop; r++)
                mp_store_unref(st, refs[r].it);
            memmove(refs, refs + drop, sizeof(refs[0]) * (size_t)(nrefs - drop));
            nrefs -= drop;
        }
    }
    for (int r = 0; r < nrefs; r++) {
        value_with_id(val, refs[r].len, refs[r].id);
        if (!ref_intact(refs[r].it, refs[r].key, val, refs[r].len))
            corrupt++;
        mp_store_unref(st, refs[r].it);
    }
    CHECK(taken > 1000);
    CHECK_EQ_U64(corrupt, 0);
    mp_store_stats ss = stats(st);
    CHECK(ss.evictions > 0);
    CHECK(ss.slab_reassigns > 0);
    CHECK(ss.total_malloced <= 8 * MIB);
    /* and the live items are intact too */
    int present;
    CHECK_EQ_U64(count_damaged(st, "m", 3000, &present, intact_with_id), 0);
    mp_store_destroy(st);
}

/* Threads take references and read the values without a lock while others
 * overwrite, delete, incr and churn the same keys under memory pressure;
 * other threads drop references taken elsewhere.  Values describe
 * themselves (a version number, then bytes derived from it), so a torn or
 * reused value shows. */
#define REF_KEYS 16
#define REF_OPS 20000
#define REF_VMAX 5000

typedef struct ref_shared {
    mp_store *st;
    uint32_t version;              /* atomic */
    int stop;                      /* atomic */
    pthread_mutex_t lock;          /* the hand-over queue */
    mp_item *queue[64];
    int nqueue;
    uint64_t handed, unlinked_seen;
} ref_shared;

typedef struct ref_worker {
    ref_shared *sh;
    int id;
    int errors;
    uint64_t refs;
} ref_worker;

static size_t versioned_len(uint32_t v)
{
    return 16 + (size_t)(v * 2654435761u % REF_VMAX);
}

static void versioned_value(char *buf, uint32_t v)
{
    size_t len = versioned_len(v);
    snprintf(buf, 12, "%010u:", v);
    for (size_t i = 11; i < len; i++)
        buf[i] = (char)('a' + (v + i) % 26);
}

/* A referenced item read with no lock held: self-consistent? */
static bool versioned_ok(const char *p, size_t len)
{
    if (len < 11 || p[10] != ':')
        return false;
    uint32_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(p[i] - '0');
    }
    if (versioned_len(v) != len)
        return false;
    for (size_t i = 11; i < len; i++)
        if (p[i] != (char)('a' + (v + i) % 26))
            return false;
    return true;
}

static void *ref_writer(void *arg)
{
    ref_worker *w = arg;
    ref_shared *sh = w->sh;
    static __thread char val[REF_VMAX + 32];
    char key[32], buf[32];
    unsigned r = 1234u + (unsigned)w->id;
    for (int i = 0; i < REF_OPS; i++) {
        r = r * 1103515245 + 12345;
        int k = (int)((r >> 8) % REF_KEYS);
        switch ((r >> 4) % 8) {
        case 0:
            snprintf(key, sizeof(key), "v%d", k);
            mp_store_delete(sh->st, key, strlen(key), mp_hash(key, strlen(key)));
            break;
        case 1:
        case 2:
            snprintf(key, sizeof(key), "c%d", k);
            if (arith(sh->st, key, (r >> 12) % 2, (r >> 16) % 1000, buf) == MP_DELTA_NOT_FOUND)
                store(sh->st, MP_SET, key, "1000000");
            break;
        default: {
            uint32_t v = __atomic_add_fetch(&sh->version, 1, __ATOMIC_RELAXED);
            versioned_value(val, v);
            snprintf(key, sizeof(key), "v%d", k);
            if (store_full(sh->st, MP_SET, key, val, versioned_len(v), 0, 0, 0, NULL) != MP_STORED)
                w->errors++;
            break;
        }
        }
        /* churn: evictions and page moves around the shared keys */
        snprintf(key, sizeof(key), "x%d-%d", w->id, i);
        memset(val, 'x', 3000);
        store_full(sh->st, MP_SET, key, val, (size_t)(r >> 3) % 3000, 0, 0, 0, NULL);
        if (i % 500 == 0)
            mp_store_maintain(sh->st, w->id % mp_store_nshards(sh->st));
    }
    return NULL;
}

static void *ref_reader(void *arg)
{
    ref_worker *w = arg;
    ref_shared *sh = w->sh;
    static __thread char snap[REF_VMAX + 32];
    char key[32];
    unsigned r = 999u + (unsigned)w->id;
    for (int i = 0; i < REF_OPS; i++) {
        r = r * 1103515245 + 12345;
        int k = (int)((r >> 8) % REF_KEYS);
        bool counter = (r >> 4) % 4 == 0;
        snprintf(key, sizeof(key), counter ? "c%d" : "v%d", k);
        size_t nkey = strlen(key);
        uint64_t hv = mp_hash(key, nkey);
        mp_shard *s = mp_store_shard(sh->st, hv);
        mp_shard_lock(s);
        mp_item *it = mp_item_find(s, key, nkey, hv, NULL);
        size_t len = 0;
        if (it != NULL) {
            mp_item_ref(s, it);
            len = it->nbytes - 2;   /* the length is read under the lock */
        }
        mp_shard_unlock(s);
        if (it == NULL)
            continue;
        w->refs++;
        /* from here on no lock: as a send in flight would read it */
        const char *p = MP_ITEM_value(it);
        if (len > sizeof(snap) || (!counter && !versioned_ok(p, len))) {
            w->errors++;
        } else {
            memcpy(snap, p, len);
            for (int spin = 0; spin < (int)(r % 64); spin++)
                __asm__ __volatile__("" ::: "memory");
            sched_yield();
            if (memcmp(snap, p, len) != 0 || memcmp(p + len, "\r\n", 2) != 0)
                w->errors++;
        }
        /* half are dropped by another thread, as a completion might be */
        bool handed = false;
        if (i % 2 == 0) {
            pthread_mutex_lock(&sh->lock);
            if (sh->nqueue < (int)(sizeof(sh->queue) / sizeof(sh->queue[0]))) {
                sh->queue[sh->nqueue++] = it;
                sh->handed++;
                handed = true;
            }
            pthread_mutex_unlock(&sh->lock);
        }
        if (!handed)
            mp_store_unref(sh->st, it);
    }
    return NULL;
}

static void *ref_dropper(void *arg)
{
    ref_worker *w = arg;
    ref_shared *sh = w->sh;
    for (;;) {
        mp_item *it = NULL;
        pthread_mutex_lock(&sh->lock);
        if (sh->nqueue > 0)
            it = sh->queue[--sh->nqueue];
        pthread_mutex_unlock(&sh->lock);
        if (it == NULL) {
            if (__atomic_load_n(&sh->stop, __ATOMIC_ACQUIRE))
                break;
            sched_yield();
            continue;
        }
        /* still whole here, linked or not */
        size_t len;
        bool versioned = MP_ITEM_key(it)[0] == 'v';
        mp_shard *s = mp_store_shard(sh->st, mp_hash(MP_ITEM_key(it), it->nkey));
        mp_shard_lock(s);
        len = it->nbytes - 2;
        if (!(it->iflags & MP_IT_LINKED))
            sh->unlinked_seen++;
        mp_shard_unlock(s);
        if (versioned && !versioned_ok(MP_ITEM_value(it), len))
            w->errors++;
        mp_store_unref(sh->st, it);
    }
    return NULL;
}

static void test_ref_threads(void)
{
    ref_shared sh;
    memset(&sh, 0, sizeof(sh));
    sh.st = make_store(8 * MIB, 4, true, true);
    pthread_mutex_init(&sh.lock, NULL);
    enum { WRITERS = 2, READERS = 2 };
    pthread_t wt[WRITERS], rt[READERS], dt;
    ref_worker ww[WRITERS], rw[READERS], dw = { &sh, 99, 0, 0 };
    /* the shared keys exist before the readers start: on a busy machine
     * they could otherwise finish before a writer ran at all */
    static char val[REF_VMAX + 32];
    char key[32];
    for (int k = 0; k < REF_KEYS; k++) {
        uint32_t v = ++sh.version;
        versioned_value(val, v);
        snprintf(key, sizeof(key), "v%d", k);
        CHECK_EQ_U64(store_full(sh.st, MP_SET, key, val, versioned_len(v), 0, 0, 0, NULL), MP_STORED);
        snprintf(key, sizeof(key), "c%d", k);
        CHECK_EQ_U64(store(sh.st, MP_SET, key, "1000000"), MP_STORED);
    }
    pthread_create(&dt, NULL, ref_dropper, &dw);
    for (int i = 0; i < WRITERS; i++) {
        ww[i] = (ref_worker){ &sh, i, 0, 0 };
        pthread_create(&wt[i], NULL, ref_writer, &ww[i]);
    }
    for (int i = 0; i < READERS; i++) {
        rw[i] = (ref_worker){ &sh, 10 + i, 0, 0 };
        pthread_create(&rt[i], NULL, ref_reader, &rw[i]);
    }
    int errors = 0;
    uint64_t refs = 0;
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(wt[i], NULL);
        errors += ww[i].errors;
    }
    for (int i = 0; i < READERS; i++) {
        pthread_join(rt[i], NULL);
        errors += rw[i].errors;
        refs += rw[i].refs;
    }
    __atomic_store_n(&sh.stop, 1, __ATOMIC_RELEASE);
    pthread_join(dt, NULL);
    errors += dw.errors;
    CHECK_EQ_U64(errors, 0);
    CHECK(refs > REF_OPS / 2);
    CHECK(sh.handed > 0);
    /* the race the test is about did happen */
    CHECK(sh.unlinked_seen > 0);
    mp_store_stats ss = stats(sh.st);
    CHECK(ss.evictions > 0);
    /* every reference dropped: only linked items use chunks */
    mp_slab_class_stats c[MP_MAX_SLAB_CLASSES];
    int n = mp_store_get_slab_stats(sh.st, c, MP_MAX_SLAB_CLASSES);
    uint64_t used = 0;
    for (int i = 1; i < n; i++)
        used += c[i].used_chunks;
    CHECK_EQ_U64(used, ss.curr_items);
    pthread_mutex_destroy(&sh.lock);
    mp_store_destroy(sh.st);
}

/* Every channel calls mp_clock_update each turn: one that read the time a
 * second ago and stores it now must not take the clock back. */
static void *clock_updater(void *arg)
{
    int *went_back = arg;
    mp_rel_time last = 0;
    for (int i = 0; i < 200000; i++) {
        mp_clock_update();
        mp_rel_time now = __atomic_load_n(&mp_current_time, __ATOMIC_RELAXED);
        if (now < last)
            (*went_back)++;
        last = now;
    }
    return NULL;
}

static void test_clock_only_moves_on(void)
{
    mp_rel_time now = __atomic_load_n(&mp_current_time, __ATOMIC_RELAXED);
    /* as if another channel had stored a later second than this one reads */
    __atomic_store_n(&mp_current_time, now + 100, __ATOMIC_RELAXED);
    mp_clock_update();
    CHECK_EQ_U64(__atomic_load_n(&mp_current_time, __ATOMIC_RELAXED), now + 100);
    __atomic_store_n(&mp_current_time, now, __ATOMIC_RELAXED);
    mp_clock_update();
    CHECK(__atomic_load_n(&mp_current_time, __ATOMIC_RELAXED) >= now);
    pthread_t t[2];
    int went_back[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, clock_updater, &went_back[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ_U64(went_back[0] + went_back[1], 0);
}

int main(void)
{
    mp_clock_init();
    struct { const char *name; void (*fn)(void); } tests[] = {
        { "storage_commands", test_storage_commands },
        { "no_cas", test_no_cas },
        { "arith", test_arith },
        { "expiry", test_expiry },
        { "flush", test_flush },
        { "eviction", test_eviction },
        { "mixed_sizes", test_mixed_sizes },
        { "rebalance", test_rebalance },
        { "rebalance_by_weight", test_rebalance_by_weight },
        { "rebalance_age_defers_to_weight", test_rebalance_age_defers_to_weight },
        { "lap_stamps_access", test_lap_stamps_access },
        { "max_item_when_full", test_max_item_when_full },
        { "too_large", test_too_large },
        { "no_evictions", test_no_evictions },
        { "pending", test_pending },
        { "hash_growth", test_hash_growth },
        { "index_churn", test_index_churn },
        { "walk_growth", test_walk_growth },
        { "memlimit", test_memlimit },
        { "slab_classes", test_slab_classes },
        { "flags_word", test_flags_word },
        { "large_arena", test_large_arena },
        { "medium_slabs", test_medium_slabs },
        { "hash_quality", test_hash_quality },
        { "policy_vs_lru", test_policy_vs_lru },
        { "threads", test_threads },
        { "threads_pressure", test_threads_pressure },
        { "ref_delete", test_ref_delete },
        { "ref_slab", test_ref_slab },
        { "ref_pins", test_ref_pins },
        { "ref_overwrite", test_ref_overwrite },
        { "ref_arith", test_ref_arith },
        { "ref_expiry_flush", test_ref_expiry_flush },
        { "ref_mixed_sizes", test_ref_mixed_sizes },
        { "ref_threads", test_ref_threads },
        { "clock_only_moves_on", test_clock_only_moves_on },
    };
    const char *only = getenv("MP_TEST_ONLY");
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (only != NULL && strcmp(only, tests[i].name) != 0)
            continue;
        int before = failures;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        printf("%-22s %s (%.0f ms)\n", tests[i].name, failures == before ? "ok" : "FAILED", ms);
    }
    printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
