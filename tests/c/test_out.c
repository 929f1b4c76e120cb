/* Unit tests of a connection's output with values held by reference
 * (ext/io/conn.c: mp_out_value and its deferred copy, mp_out_iov, mp_out_sent,
 * mp_out_cull and the compaction in mp_out_grow).
 *
 *   cc -std=gnu11 -O1 -g -pthread -Iext tests/c/test_out.c ext/io/conn.c ext/store/store.c \
 *      ext/store/slabs.c ext/store/hash.c ext/store/evict.c ext/clock.c ext/settings.c -lm -o /tmp/t && /tmp/t
 *
 * A "send" of k bytes is simulated by gathering the first k bytes of the
 * iovecs, so every way a kernel can cut a send is checked against the byte
 * stream the output stands for. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/conn.h"
#include "proto/proto_env.h"
#include "settings.h"
#include "store/store.h"
#include "check.h"

static mp_store *st;
static mp_proto_env env = {.alloc = &mp_out_heap};

static mp_item *put_item(const char *key, size_t nvalue, char fill)
{
    size_t nkey = strlen(key);
    uint64_t hv = mp_hash(key, nkey);
    mp_item *it;
    if (mp_store_alloc(st, key, nkey, hv, 0, 0, (uint32_t)nvalue + 2, &it) != MP_ALLOC_OK)
        return NULL;
    memset(MP_ITEM_value(it), fill, nvalue);
    memcpy(MP_ITEM_value(it) + nvalue, "\r\n", 2);
    if (mp_store_item(st, it, hv, MP_SET, 0, NULL) != MP_STORED)
        return NULL;
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    it = mp_item_find(s, key, nkey, hv, NULL);
    mp_shard_unlock(s);
    return it;
}

static uint32_t refs_of(mp_item *it)
{
    mp_shard *s = mp_store_shard(st, mp_hash(MP_ITEM_key(it), it->nkey));
    mp_shard_lock(s);
    uint32_t n = mp_item_slab_refs(s, it);
    mp_shard_unlock(s);
    return n;
}

static void add_ref(mp_conn *c, mp_item *it)
{
    mp_shard *s = mp_store_shard(st, mp_hash(MP_ITEM_key(it), it->nkey));
    mp_shard_lock(s);
    CHECK(mp_out_by_ref(c, it->nbytes));
    char *p = mp_out_reserve(c, 1);
    CHECK(p != NULL);
    CHECK(mp_out_value(c, p, s, it) == NULL);
    mp_shard_unlock(s);
}

/* Appends bytes to the output and to the expected stream. */
static void add_bytes(mp_conn *c, char *exp, size_t *nexp, const char *p, size_t n)
{
    mp_out_write(c, p, n);
    memcpy(exp + *nexp, p, n);
    *nexp += n;
}

static void add_value(mp_conn *c, char *exp, size_t *nexp, mp_item *it)
{
    add_ref(c, it);
    memcpy(exp + *nexp, MP_ITEM_value(it), it->nbytes);
    *nexp += it->nbytes;
}

/* Drains the output in sends of `step` bytes (0: a varying size), the way
 * epoll_flush does; returns the bytes sent. */
static size_t drain(mp_conn *c, char *out, size_t step)
{
    size_t total = 0, k = 0;
    while (mp_out_pending(c) > 0) {
        struct iovec iov[2 * MP_OUT_REFS + 1];
        int n = mp_out_iov(c->wbuf, c->wstart, c->wend, &c->wrefs, iov);
        size_t avail = 0;
        for (int i = 0; i < n; i++)
            avail += iov[i].iov_len;
        CHECK(avail == mp_out_pending(c));
        size_t want = step ? step : 1 + (k++ * 7919) % 30011;
        if (want > avail)
            want = avail;
        size_t got = 0;
        for (int i = 0; i < n && got < want; i++) {
            size_t take = iov[i].iov_len < want - got ? iov[i].iov_len : want - got;
            memcpy(out + total + got, iov[i].iov_base, take);
            got += take;
        }
        mp_out_sent(st, &c->wstart, &c->wrefs, got);
        total += got;
    }
    return total;
}

static void fresh_conn(mp_conn *c)
{
    memset(c, 0, sizeof(*c));
    c->env = &env;
    c->fd = -1;
}

static void release_conn(mp_conn *c)
{
    mp_refs_release(st, &c->wrefs);
    env.alloc->put(env.pool, c->wbuf, c->wsize);
    c->wbuf = NULL;
}

static void test_partial_sends(mp_item *a, mp_item *b)
{
    static const size_t steps[] = {1, 2, 3, 7, 100, 4096, 8191, 8192, 8193, 65536, 1 << 20, 0};
    static char exp[1 << 20], out[1 << 20];
    for (size_t si = 0; si < sizeof(steps) / sizeof(steps[0]); si++) {
        mp_conn c;
        fresh_conn(&c);
        size_t nexp = 0;
        /* values back to back, at the start, and between lines */
        add_value(&c, exp, &nexp, a);
        add_bytes(&c, exp, &nexp, "VALUE b 0 9000\r\n", 16);
        add_value(&c, exp, &nexp, b);
        add_value(&c, exp, &nexp, a);
        add_bytes(&c, exp, &nexp, "END\r\n", 5);
        CHECK(refs_of(a) == 2 && refs_of(b) == 1);
        CHECK(mp_out_pending(&c) == nexp);
        size_t n = drain(&c, out, steps[si]);
        CHECK(n == nexp);
        CHECK(memcmp(out, exp, nexp) == 0);
        CHECK(c.wrefs.n == 0 && c.wrefs.bytes == 0);
        CHECK(refs_of(a) == 0 && refs_of(b) == 0);
        release_conn(&c);
    }
}

static void test_compaction(mp_item *a)
{
    static char exp[1 << 21], out[1 << 21];
    mp_conn c;
    fresh_conn(&c);
    size_t nexp = 0;
    char line[4000];
    memset(line, 'L', sizeof(line));
    add_bytes(&c, exp, &nexp, line, sizeof(line));
    add_value(&c, exp, &nexp, a);
    add_bytes(&c, exp, &nexp, line, 100);
    /* send part of the first line, so wstart > 0, then grow: the buffer is
     * compacted and the reference's offset must move with it */
    char sink[3000];
    struct iovec iov[2 * MP_OUT_REFS + 1];
    mp_out_iov(c.wbuf, c.wstart, c.wend, &c.wrefs, iov);
    memcpy(sink, iov[0].iov_base, sizeof(sink));
    mp_out_sent(st, &c.wstart, &c.wrefs, sizeof(sink));
    memmove(exp, exp + sizeof(sink), nexp - sizeof(sink));
    nexp -= sizeof(sink);
    CHECK(c.wstart == sizeof(sink));
    uint32_t old_size = c.wsize;
    CHECK(mp_out_grow(&c, c.wsize - c.wend + 2000));   /* fits after compaction */
    CHECK(c.wstart == 0 && c.wsize == old_size);
    CHECK(mp_out_grow(&c, 100000));                     /* and a bigger buffer */
    CHECK(c.wsize > old_size);
    add_bytes(&c, exp, &nexp, line, 50);
    CHECK(drain(&c, out, 5000) == nexp);
    CHECK(memcmp(out, exp, nexp) == 0);
    CHECK(refs_of(a) == 0);
    release_conn(&c);
}

/* A copied value that does not fit the output behind its line: the line is
 * committed, the item comes back referenced, and the copy made after the
 * (here pretended) unlock completes the reply and drops the reference. */
static void test_deferred_copy(void)
{
    static char out[1 << 16];
    mp_item *v = put_item("v", 6000, 'v');
    CHECK(v != NULL);
    mp_conn c;
    fresh_conn(&c);
    char fill[MP_BUF_INITIAL - 100];
    memset(fill, 'f', sizeof(fill));
    mp_out_write(&c, fill, sizeof(fill));
    CHECK(c.wsize == MP_BUF_INITIAL);
    mp_shard *s = mp_store_shard(st, mp_hash("v", 1));
    mp_shard_lock(s);
    CHECK(!mp_out_by_ref(&c, v->nbytes));
    char *p = c.wbuf + c.wend;
    memcpy(p, "LINE\r\n", 6);
    mp_item *later = mp_out_value(&c, p + 6, s, v);
    CHECK(later == v);
    CHECK(mp_item_slab_refs(s, v) == 1);
    CHECK(c.wsize == MP_BUF_INITIAL);   /* nothing grew under the lock */
    mp_shard_unlock(s);
    CHECK(mp_out_value_deferred(&c, later));
    CHECK(refs_of(v) == 0);
    size_t n = drain(&c, out, 0);
    CHECK(n == sizeof(fill) + 6 + 6002);
    CHECK(memcmp(out + sizeof(fill), "LINE\r\nvvvv", 10) == 0);
    CHECK(memcmp(out + n - 3, "v\r\n", 3) == 0);
    release_conn(&c);
}

static void test_cull(mp_item *a, mp_item *b)
{
    static char out[1 << 20];
    mp_conn c;
    fresh_conn(&c);
    mp_out_lit(&c, "HEAD\r\n");
    add_ref(&c, a);
    mp_out_mark(&c);
    /* queued after the mark: culled, references dropped */
    mp_out_lit(&c, "VALUE b\r\n");
    add_ref(&c, b);
    add_ref(&c, a);
    mp_out_lit(&c, "END\r\n");
    CHECK(refs_of(a) == 2 && refs_of(b) == 1);
    mp_out_cull(&c);
    CHECK(refs_of(a) == 1 && refs_of(b) == 0);
    CHECK(c.wrefs.n == 1 && c.wrefs.bytes == a->nbytes);
    size_t n = drain(&c, out, 0);
    CHECK(n == 6 + a->nbytes);
    CHECK(memcmp(out, "HEAD\r\n", 6) == 0 && memcmp(out + 6, MP_ITEM_value(a), a->nbytes) == 0);
    CHECK(refs_of(a) == 0);
    release_conn(&c);
}

static void test_limit_and_release(mp_item *a)
{
    mp_conn c;
    fresh_conn(&c);
    for (int i = 0; i < MP_OUT_REFS; i++) {
        mp_out_lit(&c, "V\r\n");
        add_ref(&c, a);
    }
    CHECK(!mp_out_by_ref(&c, a->nbytes));   /* the next one is copied */
    CHECK(!mp_out_by_ref(&c, MP_OUT_REF_MIN - 1));
    CHECK(refs_of(a) == MP_OUT_REFS);
    CHECK(mp_out_pending(&c) == MP_OUT_REFS * (3 + (size_t)a->nbytes));
    /* a connection closed with values queued gives them all back */
    release_conn(&c);
    CHECK(refs_of(a) == 0);
}

static void test_deleted_while_queued(void)
{
    static char out[1 << 20];
    mp_item *it = put_item("gone", 50000, 'g');
    CHECK(it != NULL);
    mp_conn c;
    fresh_conn(&c);
    add_ref(&c, it);
    uint64_t hv = mp_hash("gone", 4);
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    mp_item_unlink(s, mp_item_find(s, "gone", 4, hv, NULL));
    CHECK(mp_item_find(s, "gone", 4, hv, NULL) == NULL);
    mp_shard_unlock(s);
    /* overwrite the freed-looking memory's neighbours: the value stays */
    for (int i = 0; i < 50; i++) {
        char key[16];
        snprintf(key, sizeof(key), "n%d", i);
        CHECK(put_item(key, 50000, 'n') != NULL);
    }
    size_t n = drain(&c, out, 1000);
    CHECK(n == 50002);
    int same = 1;
    for (size_t i = 0; i < 50000; i++)
        same &= out[i] == 'g';
    CHECK(same);
    release_conn(&c);
}

int main(void)
{
    mp_settings set;
    mp_settings_init(&set);
    set.maxbytes = 64 * 1024 * 1024;
    char err[256];
    st = mp_store_create(&set, 2, err, sizeof(err));
    if (st == NULL) {
        fprintf(stderr, "mp_store_create: %s\n", err);
        return 1;
    }
    env.store = st;

    mp_item *a = put_item("a", 20000, 'a');
    mp_item *b = put_item("b", 9000, 'b');
    CHECK(a != NULL && b != NULL);
    test_partial_sends(a, b);
    test_compaction(a);
    test_deferred_copy();
    test_cull(a, b);
    test_limit_and_release(a);
    test_deleted_while_queued();

    mp_store_destroy(st);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
