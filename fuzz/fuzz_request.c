/* The request path under a coverage-guided fuzzer (libFuzzer): parser,
 * executor, meta commands, store, connection buffers and the channel's flow
 * control, in-process on a fake connection, no sockets.  See fuzz/README.md.
 *
 * Two engines for the whole run (1 channel, epoll, -m 16, never started),
 * one with memcached's defaults, one with -C -M (no cas, no eviction: out of
 * memory errors instead).  Their stores are kept across inputs, so one input
 * finds the items earlier ones left, and full (filler items are added when
 * they have room), so every new item evicts or fails.  Each input opens a
 * connection slot, feeds it the request bytes and releases it.
 *
 * Input: three control bytes, then the bytes a client sends.
 *   byte 0  bits 0-1  -R (requests per turn): 20, 1, 2, 5
 *           bits 2-3  the client's reading: 0 output dropped after every call
 *                     (references released), 1 read whole, 2 read a few bytes
 *                     at a time, 3 read only once the server stops at the mark
 *           bits 4-5  how the bytes arrive: 0 at once, 1 in two pieces cut at
 *                     byte 1, 2 in pieces of byte 1 % 32 + 1, 3 byte by byte
 *                     (in at most 4096 pieces)
 *           bit  6    the clock jumps 1 + byte 1 % 64 seconds after the first
 *                     piece and the store's maintenance runs
 *           bit  7    through the channel (received as the epoll backend
 *                     receives, the ready list, flow control) instead of
 *                     mp_process on the harness's input buffer, where any
 *                     byte but the unconsumed ones is out of bounds
 *   byte 1  the piece parameter
 *   byte 2  bits 0-1  the bytes are sent 1, 2, 16 or 256 times over (at most
 *                     384 KiB), enough to make the channel pause the input
 *           bit  2    flush_all is disabled (-F)
 *           bit  3    shutdown is disabled (no -A)
 *           bits 4-5  k: the k-th allocation while the input is served fails
 *                     (0: none), as malloc does when memory is exhausted
 *           bit  6    the engine with -C -M
 *           bit  7    every allocation after the k-th fails too
 *
 * Checked besides what the sanitizers see: output offsets and references are
 * consistent after every call; a referenced value does not change while it
 * is held; what the client reads is whole replies, each value as long as its
 * line says; the connection makes progress (no endless yield, input not left
 * paused); after the connection is released no chunk is held by a reference.
 *
 * Two large items, "big" (64 KiB) and "huge" (400 KiB), are put back before
 * each input when missing, so short inputs reach the output mark.
 *
 * Build with -Wl,--wrap=malloc,--wrap=calloc (the allocations that fail). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_ASAN 1
#endif
#endif
#ifdef FUZZ_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#include "io/channel.h"
#include "clock.h"
#include "io/conn.h"
#include "engine.h"
#include "proto/executor.h"
#include "settings.h"
#include "store/store.h"

/* -m 16: with less, the 64 KiB slabs of the classes in use in each of the
 * 4 shards take all of it, and items are evicted by the slab, never one by
 * one */
#define FUZZ_MEMORY ((size_t)16 << 20)
#define FUZZ_BIG 65536u
#define FUZZ_HUGE 409600u
/* bytes a partial read takes: a prime, so reads end anywhere in a reply */
#define FUZZ_READ_SOME 1499
/* mp_process calls per input byte before a stuck connection is assumed */
#define FUZZ_CALLS_PER_BYTE 64
#define FUZZ_MAX_INPUT ((size_t)384 << 10)
/* pieces an input is cut into at most, however small byte 1 asks them */
#define FUZZ_MAX_PIECES 4096
/* filler items stored at most per input, and evictions that say the store
 * is full: enough that every size class of every shard evicts its own */
#define FUZZ_FILL_MAX 8192
#define FUZZ_FILL_EVICTIONS 256

/* the engines, and the one (and its channel) the current input runs on */
static mp_engine *engines[2];
static mp_engine *eng;
static mp_channel *ch;
static const mp_listener no_listener = {.fd = -1, .is_unix = false};

static int out_mode;
static bool conn_closed;
static char sink[1 << 16];
/* replay.c -v: where the client's reads go, for a person reading a case */
FILE *fuzz_echo;

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_request: %s\n", what);
    abort();
}

/* ---- allocations that fail ----
 * An output buffer asked of the connection's env (even one the channel's
 * pool has spare) and any malloc or calloc (linked with
 * -Wl,--wrap=malloc,--wrap=calloc: input buffers, table growth) count; the
 * harness's own buffers come from __real_malloc and never fail. */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);

static unsigned alloc_countdown;   /* 0: none fails; else the one that does */
static bool alloc_fail_on;         /* every one after it fails too */

static bool alloc_fails(void)
{
    if (alloc_countdown == 0)
        return false;
    if (--alloc_countdown > 0)
        return false;
    if (alloc_fail_on)
        alloc_countdown = 1;
    return true;
}

void *__wrap_malloc(size_t n)
{
    return alloc_fails() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return alloc_fails() ? NULL : __real_calloc(n, size);
}

static char *failing_out_get(void *pool, size_t need, uint32_t *size)
{
    return alloc_fails() ? NULL : mp_channel_out_alloc.get(pool, need, size);
}

static void out_put(void *pool, char *buf, uint32_t size)
{
    mp_channel_out_alloc.put(pool, buf, size);
}

static const mp_out_alloc failing_out_alloc = {failing_out_get, out_put};

static void *harness_alloc(size_t n)
{
    void *p = __real_malloc(n ? n : 1);
    if (p == NULL)
        fail("out of memory");
    return p;
}

/* ---- references the output holds: their bytes must stay put ---- */

typedef struct {
    const mp_item *it;
    const char *start, *end;   /* the value as first referenced */
    uint32_t nbytes;
    uint64_t sum;
} held_ref;

static held_ref held[MP_OUT_REFS];
static int nheld;

/* A checksum of the value's head and tail, a word at a time: enough to see
 * its chunk reused by another item, cheap enough for every read. */
#define SUM_EDGE 512
static uint64_t value_sum(const char *p, size_t n)
{
    uint64_t h = n;
    for (int part = 0; part < 2; part++) {
        size_t from = part == 0 ? 0 : (n > SUM_EDGE ? n - SUM_EDGE : n);
        size_t to = part == 0 ? (n < SUM_EDGE ? n : SUM_EDGE) : n;
        size_t i = from;
        for (; i + 8 <= to; i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            h = (h ^ w) * 0x100000001b3ull;
        }
        for (; i < to; i++)
            h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    }
    return h;
}

/* The output's offsets and references are consistent; a reference not seen
 * before is remembered with the checksum of its value; with verify (the
 * client is about to read) the values held are checked against theirs. */
static void check_output(mp_conn *c, bool verify)
{
    if (c->wstart > c->wend || c->wend > c->wsize || (c->wbuf == NULL && c->wend != 0))
        fail("output offsets out of order");
    const mp_refs *w = &c->wrefs;
    if (w->n > MP_OUT_REFS)
        fail("too many output references");
    uint64_t bytes = 0;
    uint32_t at = c->wstart;
    held_ref now[MP_OUT_REFS];
    for (uint32_t i = 0; i < w->n; i++) {
        const mp_out_ref *r = &w->r[i];
        if (r->at < at || r->at > c->wend)
            fail("an output reference outside the pending output");
        at = r->at;
        mp_shard *s = mp_store_shard(eng->store, mp_hash(MP_ITEM_key(r->it), r->it->nkey));
        mp_shard_lock(s);
        uint32_t refs = mp_item_slab_refs(s, r->it);
        mp_shard_unlock(s);
        if (refs == 0)
            fail("an output reference to an item without references");
        const char *end = r->data + r->len;
        int k = 0;
        while (k < nheld && !(held[k].it == r->it && held[k].end == end))
            k++;
        if (k == nheld) {
            /* the binary protocol sends a value without its "\r\n" */
            if ((r->len != r->it->nbytes && r->len != r->it->nbytes - 2) ||
                r->data != MP_ITEM_value(r->it))
                fail("a new output reference is not its item's whole value");
            now[i] = (held_ref){r->it, r->data, end, r->it->nbytes, value_sum(r->data, r->len)};
        } else {
            now[i] = held[k];
            if (r->it->nbytes != held[k].nbytes || MP_ITEM_value(r->it) != held[k].start)
                fail("a referenced item changed while the output held it");
            if (verify && value_sum(held[k].start, (size_t)(end - held[k].start)) != held[k].sum)
                fail("a referenced value changed while the output held it");
        }
        bool whole = now[i].nbytes == (uint32_t)(now[i].end - now[i].start);
        if (whole && (end[-2] != '\r' || end[-1] != '\n'))
            fail("a referenced value does not end in \\r\\n");
        bytes += r->len;
    }
    if (bytes != w->bytes)
        fail("output reference bytes miscounted");
    memcpy(held, now, sizeof(now[0]) * w->n);
    nheld = (int)w->n;
}

/* ---- what the client reads: well-framed replies ----
 * Lines end in "\r\n"; "VALUE <key> <flags> <bytes> [<cas>]" and
 * "VA <bytes> ..." are followed by exactly that many bytes and "\r\n".
 * Whatever the input, errors and culled replies included, the client never
 * reads half a reply or a value of another length than its line says. */

#define REPLY_LINE_MAX 8192

static struct {
    bool in_data;
    uint64_t data_left;          /* in_data: value bytes and "\r\n" to come */
    size_t len;
    char line[REPLY_LINE_MAX];
} rd;

static void reply_line(void)
{
    if (rd.len < 2 || rd.line[rd.len - 2] != '\r')
        fail("the client read a line not ended by \\r\\n");
    const char *l = rd.line;
    size_t len = rd.len - 2, word = 0;
    if (len > 6 && memcmp(l, "VALUE ", 6) == 0)
        word = 3;                /* VALUE key flags BYTES [cas] */
    else if (len > 3 && memcmp(l, "VA ", 3) == 0)
        word = 1;                /* VA BYTES flags... */
    if (word == 0)
        return;
    size_t i = 0;
    for (size_t w = 0; w < word; w++) {
        while (i < len && l[i] != ' ')
            i++;
        if (i == len)
            fail("the client read a value line without its length");
        i++;
    }
    uint64_t n = 0;
    size_t digits = 0;
    while (i < len && l[i] >= '0' && l[i] <= '9' && digits < 20) {
        n = n * 10 + (uint64_t)(l[i++] - '0');
        digits++;
    }
    if (digits == 0 || (i < len && l[i] != ' '))
        fail("the client read a value line whose length is not a number");
    rd.in_data = true;
    rd.data_left = n + 2;
}

/* The binary protocol's framing: a 24-byte header of magic 0x81 whose
 * extras and key fit its body, then exactly its body. */
static void bin_reply_bytes(const char *p, size_t n)
{
    while (n > 0) {
        if (rd.in_data) {
            size_t k = rd.data_left < n ? (size_t)rd.data_left : n;
            rd.data_left -= k;
            p += k;
            n -= k;
            if (rd.data_left == 0)
                rd.in_data = false;
            continue;
        }
        rd.line[rd.len++] = *p++;
        n--;
        if (rd.len < 24)
            continue;
        const unsigned char *h = (const unsigned char *)rd.line;
        uint32_t body = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11];
        uint32_t keylen = (uint32_t)h[2] << 8 | h[3];
        if (h[0] != 0x81)
            fail("the client read a binary reply without its magic");
        if (keylen + h[4] > body)
            fail("the client read a binary reply whose key and extras overrun its body");
        rd.len = 0;
        rd.data_left = body;
        rd.in_data = body > 0;
    }
}

/* the connection the client reads from */
static const mp_conn *rd_conn;

static void reply_bytes(const char *p, size_t n)
{
    if (rd_conn != NULL && rd_conn->proto.protocol == MP_PROT_BINARY) {
        bin_reply_bytes(p, n);
        return;
    }
    while (n > 0) {
        if (rd.in_data) {
            if (rd.data_left > 2) {
                size_t k = rd.data_left - 2 < n ? (size_t)(rd.data_left - 2) : n;
                rd.data_left -= k;
                p += k;
                n -= k;
                continue;
            }
            if (*p != (rd.data_left == 2 ? '\r' : '\n'))
                fail("the client read a value longer or shorter than its line says");
            p++;
            n--;
            if (--rd.data_left == 0)
                rd.in_data = false;
            continue;
        }
        if (rd.len == REPLY_LINE_MAX)
            fail("the client read a reply line of 8 KiB");
        char b = *p++;
        n--;
        rd.line[rd.len++] = b;
        if (b == '\n') {
            reply_line();
            rd.len = 0;
        }
    }
}

/* The client reads up to n bytes: they are copied out (so the sanitizer sees
 * every byte) and the output advances as a send would advance it. */
static void client_read(mp_conn *c, size_t n)
{
    check_output(c, true);
    struct iovec iov[2 * MP_OUT_REFS + 1];
    int k = mp_out_iov(c->wbuf, c->wstart, c->wend, &c->wrefs, iov);
    size_t took = 0;
    for (int i = 0; i < k && took < n; i++) {
        size_t m = iov[i].iov_len < n - took ? iov[i].iov_len : n - took;
        for (size_t off = 0; off < m; off += sizeof(sink)) {
            size_t part = m - off < sizeof(sink) ? m - off : sizeof(sink);
            memcpy(sink, (char *)iov[i].iov_base + off, part);
            reply_bytes(sink, part);
            if (fuzz_echo != NULL)
                fwrite(sink, 1, part, fuzz_echo);
        }
        took += m;
    }
    mp_out_sent(eng->store, &c->wstart, &c->wrefs, took);
    if (mp_out_pending(c) == 0 && c->wbuf != NULL) {
        mp_buf_put(ch, c->wbuf, c->wsize, MP_BUF_OUT);
        c->wbuf = NULL;
        c->wsize = c->wstart = c->wend = 0;
    }
    check_output(c, false);
}

/* What the client does with the output after the server wrote some. */
static void client_turn(mp_conn *c)
{
    check_output(c, out_mode == 0);
    switch (out_mode) {
    case 0: {
        /* read at once, and the buffer kept */
        struct iovec iov[2 * MP_OUT_REFS + 1];
        int k = mp_out_iov(c->wbuf, c->wstart, c->wend, &c->wrefs, iov);
        for (int i = 0; i < k; i++) {
            reply_bytes(iov[i].iov_base, iov[i].iov_len);
            if (fuzz_echo != NULL)
                fwrite(iov[i].iov_base, 1, iov[i].iov_len, fuzz_echo);
        }
        mp_refs_release(eng->store, &c->wrefs);
        c->wstart = c->wend = 0;
        nheld = 0;
        break;
    }
    case 1:
        client_read(c, SIZE_MAX);
        break;
    case 2:
        client_read(c, FUZZ_READ_SOME);
        break;
    default:
        if (mp_out_over_mark(c))
            client_read(c, SIZE_MAX);
        break;
    }
}

/* ---- the backend the channel drives ---- */

static void fake_close(mp_channel *chan, mp_conn *c)
{
    nheld = 0;
    mp_conn_release(chan, c);
    conn_closed = true;
}

static void fake_flush(mp_channel *chan, mp_conn *c)
{
    client_turn(c);
    if (mp_out_pending(c) == 0 && c->state == MP_CONN_CLOSING)
        fake_close(chan, c);
}

static void fake_input_switch(mp_channel *chan, mp_conn *c)
{
    (void)chan;
    (void)c;
}

static const mp_backend fake_backend = {
    .name = "fuzz",
    .flush = fake_flush,
    .close = fake_close,
    .pause_input = fake_input_switch,
    .resume_input = fake_input_switch,
};

/* ---- the store's contents ---- */

static bool put(const char *key, uint32_t len, bool only_if_missing)
{
    size_t nkey = strlen(key);
    uint64_t hv = mp_hash(key, nkey);
    if (only_if_missing) {
        mp_shard *s = mp_store_shard(eng->store, hv);
        mp_shard_lock(s);
        bool present = mp_item_find(s, key, nkey, hv, NULL) != NULL;
        mp_shard_unlock(s);
        if (present)
            return true;
    }
    mp_item *it;
    if (mp_store_alloc(eng->store, key, nkey, hv, 0, 0, len + 2, &it) != MP_ALLOC_OK)
        return false;
    static char pattern[FUZZ_HUGE];
    if (pattern[0] == 0)
        for (uint32_t i = 0; i < FUZZ_HUGE; i++)
            pattern[i] = (char)('a' + i % 26);
    char *v = MP_ITEM_value(it);
    memcpy(v, pattern, len);
    memcpy(v + len, "\r\n", 2);
    mp_store_item(eng->store, it, hv, MP_SET, 0, NULL);
    return true;
}

/* Filler items of every size class until the store evicts for a while: then
 * whatever an input stores evicts something.  Done again when deletes, flushes or expiry
 * have left a quarter of what was full. */
static void fill_store(int which)
{
    static const uint32_t sizes[] = {5, 40, 120, 300, 900, 2500, 7000, 20000};
    static uint32_t nexts[2];
    static uint64_t fulls[2];
    uint32_t next = nexts[which];
    uint64_t full_bytes = fulls[which];
    mp_store_stats ss;
    mp_store_get_stats(eng->store, &ss);
    if (ss.bytes * 4 >= full_bytes * 3 && full_bytes > 0)
        return;
    uint64_t evictions = ss.evictions;
    for (int i = 0; i < FUZZ_FILL_MAX; i++, next++) {
        char key[32];
        snprintf(key, sizeof(key), "fill:%u", next);
        if (!put(key, sizes[next % 8], false))
            break;
        if (i % 16 == 15) {
            mp_store_get_stats(eng->store, &ss);
            if (ss.evictions >= evictions + FUZZ_FILL_EVICTIONS)
                break;
        }
    }
    mp_store_get_stats(eng->store, &ss);
    if (ss.evictions > evictions || full_bytes == 0 || !eng->settings.evict_to_free)
        fulls[which] = ss.bytes;
    nexts[which] = next;
}

/* ---- feeding ---- */

/* Direct mode's input buffer is the harness's: rcap bytes, of which only
 * the unconsumed [rstart, rend) may be read; the rest is poisoned, so that a
 * read outside them is reported as out of bounds. */
static uint32_t rcap;

static void poison_input(mp_conn *c)
{
    POISON(c->rbuf, c->rstart);
    POISON(c->rbuf + c->rend, rcap - c->rend);
}

static void direct_free_input(mp_conn *c)
{
    if (c->rbuf != NULL)
        UNPOISON(c->rbuf, rcap);
    free(c->rbuf);
    c->rbuf = NULL;
    c->rsize = c->rstart = c->rend = rcap = 0;
}

/* Direct: mp_process on the harness's input buffer.  Returns false once the
 * connection closes. */
static bool direct_feed(mp_conn *c, const uint8_t *p, size_t n, int budget, size_t *calls,
                        size_t max_calls)
{
    uint32_t left = c->rend - c->rstart;
    if (c->rbuf != NULL)
        UNPOISON(c->rbuf, rcap);
    if (c->rbuf == NULL || c->rend + n > rcap) {
        /* doubling, so a line that keeps growing is not copied over and over */
        size_t cap = 64;
        while (cap < left + n)
            cap *= 2;
        char *nb = harness_alloc(cap);
        if (left > 0)
            memcpy(nb, c->rbuf + c->rstart, left);
        free(c->rbuf);
        c->rbuf = nb;
        rcap = (uint32_t)cap;
        c->rstart = 0;
        c->rend = left;
    }
    memcpy(c->rbuf + c->rend, p, n);
    c->rend += (uint32_t)n;
    c->rsize = c->rend;
    for (;;) {
        if (++*calls > max_calls)
            fail("the connection makes no progress (mp_process yields forever)");
        poison_input(c);
        int r = mp_process(c, budget);
        UNPOISON(c->rbuf, rcap);
        client_turn(c);
        if (r == MP_PROC_CLOSE)
            return false;
        if (r == MP_PROC_NEED_INPUT)
            return true;
        if (mp_out_over_mark(c))
            client_read(c, SIZE_MAX);   /* the client reads once it is stopped */
    }
}

/* One turn of the loop with no input: the client reads what stopped the
 * connection at the mark (a writable event), or the yielded go on.  False
 * when the connection has nothing left to do. */
static bool channel_turn(mp_conn *c, size_t *calls, size_t max_calls)
{
    if (conn_closed || (!c->blocked_out && ch->nready == 0))
        return false;
    if (++*calls > max_calls)
        fail("the connection makes no progress (yields forever)");
    if (c->blocked_out) {
        client_read(c, SIZE_MAX);
        if (c->state == MP_CONN_OPEN)
            mp_conn_unblock(ch, c);
    } else {
        mp_channel_run_ready(ch);
    }
    return true;
}

/* Through the channel, as the epoll backend receives: into a borrowed
 * buffer (allocated to the byte and freed at once, as a kernel buffer is
 * given back) when the connection holds no input, else behind what it holds;
 * one read per turn, none while its input is paused. */
static void channel_feed(mp_conn *c, const uint8_t *p, size_t n, size_t *calls, size_t max_calls)
{
    while (n > 0 && !conn_closed && c->state == MP_CONN_OPEN) {
        if (c->input_paused) {
            if (!channel_turn(c, calls, max_calls))
                fail("input left paused with nothing left to do");
            continue;
        }
        size_t k;
        if (c->rbuf == NULL) {
            k = n < MP_SCRATCH_SIZE ? n : MP_SCRATCH_SIZE;
            char *borrowed = harness_alloc(k);
            memcpy(borrowed, p, k);
            mp_conn_input(ch, c, borrowed, k);
            free(borrowed);
        } else {
            if (!mp_conn_rbuf_room(ch, c, c->rend == c->rsize ? c->rsize : 1)) {
                fake_close(ch, c);
                return;
            }
            size_t room = c->rsize - c->rend;
            k = n < room ? n : room;
            memcpy(c->rbuf + c->rend, p, k);
            mp_conn_received(ch, c, k);
        }
        p += k;
        n -= k;
        /* the rest of the turn: one read per turn, as a loop does */
        channel_turn(c, calls, max_calls);
    }
    while (channel_turn(c, calls, max_calls))
        ;
    if (!conn_closed && c->state == MP_CONN_OPEN && c->input_paused)
        fail("input left paused with nothing left to do");
}

/* ---- libFuzzer's entry points ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (int i = 0; i < 2; i++) {
        mp_settings s;
        mp_settings_init(&s);
        s.maxbytes = FUZZ_MEMORY;
        s.num_threads = 1;
        s.maxconns = 4;
        s.shutdown_command = true;
        s.use_cas = s.evict_to_free = i == 0;
        strcpy(s.io_engine, "epoll");
        char err[256] = "";
        engines[i] = mp_engine_create(&s, err, sizeof(err));
        if (engines[i] == NULL) {
            fprintf(stderr, "mp_engine_create: %s\n", err);
            exit(1);
        }
        mp_channel *chan = engines[i]->channels[0];
        chan->be = &fake_backend;
        chan->env.alloc = &failing_out_alloc;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    static const int budgets[4] = {20, 1, 2, 5};
    static const size_t repeats[4] = {1, 2, 16, 256};
    uint8_t opt = data[0], param = data[1], more = data[2];
    int budget = budgets[opt & 3];
    out_mode = (opt >> 2) & 3;
    int feed = (opt >> 4) & 3;
    bool tick = opt & 0x40, via_channel = opt & 0x80;

    /* the bytes the client sends, repeated, in a buffer of their own */
    size_t n1 = size - 3, times = repeats[more & 3];
    if (n1 > 0 && times > FUZZ_MAX_INPUT / n1)
        times = FUZZ_MAX_INPUT / n1 > 0 ? FUZZ_MAX_INPUT / n1 : 1;
    size_t n = n1 * times;
    uint8_t *req = harness_alloc(n);
    for (size_t i = 0; i < times; i++)
        memcpy(req + i * n1, data + 3, n1);

    int which = (more >> 6) & 1;
    eng = engines[which];
    ch = eng->channels[0];
    fill_store(which);
    put("big", FUZZ_BIG, true);
    put("huge", FUZZ_HUGE, true);
    eng->settings.reqs_per_event = budget;
    eng->settings.flush_enabled = !(more & 4);
    eng->settings.shutdown_command = !(more & 8);
    if (!mp_conn_admit(ch))
        fail("connection refused");
    mp_conn *c = mp_conn_open(ch, -1, &no_listener, NULL, 0);
    if (c == NULL)
        fail("no connection slot");
    conn_closed = false;
    nheld = 0;
    rd.in_data = false;
    rd.len = 0;
    rd_conn = c;
    alloc_countdown = (more >> 4) & 3;
    alloc_fail_on = more & 0x80;

    size_t calls = 0, max_calls = (n + 16) * FUZZ_CALLS_PER_BYTE;
    size_t piece = feed == 0 ? n : feed == 2 ? (size_t)(param % 32 + 1) : 1;
    if (piece < n / FUZZ_MAX_PIECES)
        piece = n / FUZZ_MAX_PIECES;
    size_t cut = feed == 1 ? n * param / 256 : 0;
    size_t off = 0;
    bool first = true;
    while (off < n || first) {
        size_t len = feed == 1 ? (first ? cut : n - off) : (n - off < piece ? n - off : piece);
        bool open = via_channel ? (channel_feed(c, req + off, len, &calls, max_calls), !conn_closed)
                                : direct_feed(c, req + off, len, budget, &calls, max_calls);
        off += len;
        if (!open)
            break;
        if (first && tick) {
            mp_current_time += 1 + param % 64;
            for (int i = 0; i < mp_store_nshards(eng->store); i++)
                mp_store_maintain(eng->store, i);
        }
        first = false;
    }
    alloc_countdown = 0;

    if (!conn_closed) {
        if (!via_channel)
            direct_free_input(c);
        nheld = 0;
        mp_conn_release(ch, c);
    }
    free(req);
    /* cache_memlimit may have moved the limit: back to the small memory */
    mp_store_set_limit(eng->store, FUZZ_MEMORY);
    eng->settings.maxbytes = FUZZ_MEMORY;

    /* every reference dropped: only linked items use chunks */
    mp_store_stats ss;
    mp_store_get_stats(eng->store, &ss);
    mp_slab_class_stats cls[MP_MAX_SLAB_CLASSES];
    int ncls = mp_store_get_slab_stats(eng->store, cls, MP_MAX_SLAB_CLASSES);
    uint64_t used = 0;
    for (int i = 1; i < ncls; i++)
        used += cls[i].used_chunks;
    if (used != ss.curr_items)
        fail("chunks still in use after the connection was released (a reference leaked)");
    return 0;
}
