/* Unit tests of the protocol in process (ext/proto/executor.c, meta.c, parser.c
 * and conn.c's output over a real store): a fake connection on a proto env
 * (proto_env.h) filled by the test, no channel, engine, socket or backend.
 *
 *   cc -std=gnu11 -O1 -g -pthread -Iext tests/c/test_executor.c ext/proto/executor.c ext/proto/binary.c \
 *      ext/proto/meta.c ext/proto/parser.c ext/io/conn.c ext/proto/auth.c ext/log.c \
 *      ext/proto/dump.c ext/proto/prefix.c ext/watch.c ext/store/store.c ext/store/slabs.c \
 *      ext/store/hash.c ext/store/evict.c ext/clock.c ext/settings.c -lm -o /tmp/t && /tmp/t
 *
 * The client sends bytes and reads every reply after each mp_process call
 * (as a channel that sends everything would), and runs the protocol again
 * while it yields.  Each case starts on a fresh store, so cas uniques are
 * 1, 2, ... as on a fresh memcached.  The expected replies in `cases` are
 * memcached 1.6.18's: tests/unit/test_c_programs.py replays every case not
 * marked NOMC on a fresh memcached and compares, and every case of
 * `auth_cases` on a memcached started with -Y and AUTH_FILE. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/auth.h"
#include "clock.h"
#include "proto/commands.h"
#include "io/conn.h"
#include "proto/executor.h"
#include "proto/prefix.h"
#include "proto/proto_env.h"
#include "settings.h"
#include "store/store.h"
#include "check.h"

/* ---- the world a case runs in: a store and a fake env ---- */

static mp_settings set;
static mp_store *st;
static mp_thread_stats stats;
static mp_latency latency;

/* what the engine hooks were asked */
static struct {
    int stats, resets, conns_calls, shutdowns, verbosity_calls, memlimit_calls;
    bool graceful;
    int verbosity;
    size_t memlimit;
} seen;

static int fake_stats(void *owner, mp_conn *c, const char *group, size_t glen)
{
    (void)owner;
    seen.stats++;
    if (glen == 0) {
        mp_out_lit(c, "STAT pid 1\r\n");
        return 0;
    }
    if (glen == 8 && memcmp(group, "settings", 8) == 0) {
        mp_out_lit(c, "STAT maxbytes 67108864\r\n");
        return 0;
    }
    return -1;
}

static void fake_stats_reset(void *owner)
{
    (void)owner;
    seen.resets++;
}

/* three connections, one line each; it stops after each as if the output
 * had passed its mark */
static bool fake_stats_conns(void *owner, mp_conn *c, uint64_t *resume)
{
    (void)owner;
    seen.conns_calls++;
    char line[64];
    int n = snprintf(line, sizeof(line), "STAT %d:state conn_read\r\n", (int)*resume + 5);
    mp_out_write(c, line, (size_t)n);
    if (*resume == 2) {
        *resume = 0;
        return true;
    }
    ++*resume;
    return false;
}

static void fake_shutdown(void *owner, bool graceful)
{
    (void)owner;
    seen.shutdowns++;
    seen.graceful = graceful;
}

static void fake_set_verbosity(void *owner, int level)
{
    (void)owner;
    seen.verbosity_calls++;
    seen.verbosity = level;
}

static void fake_set_memlimit(void *owner, size_t bytes)
{
    (void)owner;
    seen.memlimit_calls++;
    seen.memlimit = bytes;
}

static const mp_proto_hooks fake_hooks = {
    .stats = fake_stats,
    .stats_reset = fake_stats_reset,
    .stats_conns = fake_stats_conns,
    .shutdown = fake_shutdown,
    .set_verbosity = fake_set_verbosity,
    .set_memlimit = fake_set_memlimit,
};

/* output buffers from the heap, counted, so a leak shows */
static long bufs_out;

static char *count_get(void *pool, size_t need, uint32_t *size)
{
    char *b = mp_out_heap.get(pool, need, size);
    if (b != NULL)
        bufs_out++;
    return b;
}

static void count_put(void *pool, char *buf, uint32_t size)
{
    if (buf != NULL)
        bufs_out--;
    mp_out_heap.put(pool, buf, size);
}

static const mp_out_alloc counted_heap = {count_get, count_put};

static mp_proto_shared shared;

static mp_proto_env env = {
    .settings = &set,
    .shared = &shared,
    .stats = &stats,
    .latency = &latency,
    .alloc = &counted_heap,
    .hooks = &fake_hooks,
};

static void world_fresh(void)
{
    if (st != NULL)
        mp_store_destroy(st);
    char err[256];
    st = mp_store_create(&set, 4, err, sizeof(err));
    if (st == NULL) {
        fprintf(stderr, "mp_store_create: %s\n", err);
        exit(1);
    }
    env.store = st;
    memset(&stats, 0, sizeof(stats));
    memset(&latency, 0, sizeof(latency));
    memset(&seen, 0, sizeof(seen));
    memset(&shared, 0, sizeof(shared));
}

static void settings_default(void)
{
    mp_settings_init(&set);
    set.maxbytes = 64u << 20;
}

/* ---- the client ---- */

typedef struct client {
    mp_conn c;
    size_t rcap;
    char *out;
    size_t nout, outcap;
    int rc;          /* the last mp_process result */
    int calls;
    int budget;
    bool keep;       /* the client does not read: output piles up */
} client;

static void client_open(client *k)
{
    memset(k, 0, sizeof(*k));
    k->c.fd = -1;
    k->c.state = MP_CONN_OPEN;
    k->c.env = &env;
    k->budget = set.reqs_per_event;
    k->rc = MP_PROC_NEED_INPUT;
}

static void out_append(client *k, const char *p, size_t n)
{
    if (k->nout + n + 1 > k->outcap) {
        k->outcap = (k->nout + n + 1) * 2;
        k->out = realloc(k->out, k->outcap);
    }
    memcpy(k->out + k->nout, p, n);
    k->nout += n;
    k->out[k->nout] = '\0';
}

/* The client reads everything pending; an empty buffer goes back, as the
 * I/O layer gives it back once sent. */
static void client_read(client *k)
{
    mp_conn *c = &k->c;
    struct iovec iov[2 * MP_OUT_REFS + 1];
    int n = mp_out_iov(c->wbuf, c->wstart, c->wend, &c->wrefs, iov);
    size_t took = 0;
    for (int i = 0; i < n; i++) {
        out_append(k, iov[i].iov_base, iov[i].iov_len);
        took += iov[i].iov_len;
    }
    mp_out_sent(st, &c->wstart, &c->wrefs, took);
    if (mp_out_pending(c) == 0 && c->wbuf != NULL) {
        env.alloc->put(env.pool, c->wbuf, c->wsize);
        c->wbuf = NULL;
        c->wsize = c->wstart = c->wend = 0;
    }
}

/* One mp_process call, then the client reads (unless it keeps still). */
static int client_step(client *k)
{
    k->rc = mp_process(&k->c, k->budget);
    k->calls++;
    if (!k->keep)
        client_read(k);
    return k->rc;
}

/* As a channel runs a connection: again while it yields. */
static int client_run(client *k)
{
    int guard = 0;
    while (client_step(k) == MP_PROC_YIELD) {
        /* stopped at the mark: only the client's reading moves it on */
        if (k->keep && mp_out_over_mark(&k->c))
            break;
        if (++guard > 1000000) {
            CHECK(!"mp_process yields forever");
            break;
        }
    }
    return k->rc;
}

/* Appends bytes behind the unconsumed input (moved to the front first, as
 * the channel compacts) and runs the protocol.  Bytes after a close are
 * dropped, as the channel drops them. */
static int client_send(client *k, const char *p, size_t n)
{
    mp_conn *c = &k->c;
    if (k->rc == MP_PROC_CLOSE)
        return k->rc;
    if (c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
    }
    if (c->rend + n > k->rcap) {
        k->rcap = (c->rend + n) * 2 + 16;
        c->rbuf = realloc(c->rbuf, k->rcap);
    }
    memcpy(c->rbuf + c->rend, p, n);
    c->rend += (uint32_t)n;
    c->rsize = (uint32_t)k->rcap;
    return client_run(k);
}

static void client_close(client *k)
{
    mp_conn *c = &k->c;
    mp_proto_reset(c);
    mp_refs_release(st, &c->wrefs);
    env.alloc->put(env.pool, c->wbuf, c->wsize);
    free(c->rbuf);
    free(k->out);
    memset(k, 0, sizeof(*k));
}

/* ---- comparing replies ---- */

static void show(const char *what, const char *p, size_t n)
{
    fprintf(stderr, "  %s (%zu bytes): \"", what, n);
    for (size_t i = 0; i < n && i < 600; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '\r')
            fputs("\\r", stderr);
        else if (ch == '\n')
            fputs("\\n", stderr);
        else if (ch == '"' || ch == '\\')
            fprintf(stderr, "\\%c", ch);
        else if (ch < 32 || ch > 126)
            fprintf(stderr, "\\x%02x", ch);
        else
            fputc(ch, stderr);
    }
    fputs(n > 600 ? "...\"\n" : "\"\n", stderr);
}

#define CHECK_WIRE(got, ngot, want, nwant, label) do {                          \
    checks++;                                                                 \
    if ((ngot) != (nwant) || memcmp((got), (want), (nwant)) != 0) {           \
        failures++;                                                           \
        fprintf(stderr, "%s:%d: %s: reply differs\n", __FILE__, __LINE__, (label)); \
        show("got", (got), (ngot));                                           \
        show("want", (want), (nwant));                                        \
    }                                                                         \
} while (0)

/* ---- the cases: request bytes and memcached 1.6.18's reply bytes ----
 * WHOLE: sent at once.  BYTES: also byte by byte.  SPLITS: also in two
 * pieces cut at every position.  A reply that depends on where the input
 * is cut (memcached culls what it has not sent when a get fails) is WHOLE
 * only.  NOMC: not replayed on memcached (fake hooks, mpcache's own slab
 * classes, a server option). */
#define WHOLE  0x1
#define BYTES  0x2
#define SPLITS 0x4
#define ALL    (WHOLE | BYTES | SPLITS)
#define NOMC   0x8

typedef struct wire_case {
    const char *name;
    unsigned modes;
    const char *in;
    const char *out;
} wire_case;

#define OPAQUE_33 "O99999999999999999999999999999999"

/* cases: begin */
static const wire_case cases[] = {
    /* ---- retrieval ---- */
    {"get miss", ALL,
     "get a\r\n",
     "END\r\n"},
    {"set then get", ALL,
     "set a 5 0 3\r\nabc\r\nget a\r\n",
     "STORED\r\nVALUE a 5 3\r\nabc\r\nEND\r\n"},
    {"gets shows the cas", ALL,
     "set a 0 0 1\r\nx\r\nset b 0 0 2\r\nyz\r\ngets a b\r\n",
     "STORED\r\nSTORED\r\nVALUE a 0 1 1\r\nx\r\nVALUE b 0 2 2\r\nyz\r\nEND\r\n"},
    {"gat and gats", ALL,
     "set a 0 0 1\r\nx\r\ngat 100 a nope\r\ngats 0 a\r\ngat 10\r\ngat x a\r\n",
     "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\nVALUE a 0 1 1\r\nx\r\nEND\r\nEND\r\n"
     "CLIENT_ERROR invalid exptime argument\r\n"},
    {"gat with a past time expires", WHOLE | BYTES,
     "set a 0 0 1\r\nx\r\ngat -1 a\r\nget a\r\ntouch a 0\r\n",
     "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\nEND\r\nNOT_FOUND\r\n"},
    {"multi-get", ALL,
     "set a 0 0 1\r\n1\r\nset c 0 0 1\r\n3\r\nget a b c a\r\n",
     "STORED\r\nSTORED\r\nVALUE a 0 1\r\n1\r\nVALUE c 0 1\r\n3\r\nVALUE a 0 1\r\n1\r\nEND\r\n"},
    {"bget and gets of many", WHOLE | BYTES,
     "set a 0 0 1\r\n1\r\nbget a a\r\ngets   a    b  \r\n",
     "STORED\r\nVALUE a 0 1\r\n1\r\nVALUE a 0 1\r\n1\r\nEND\r\nVALUE a 0 1 1\r\n1\r\nEND\r\n"},

    /* ---- storage ---- */
    {"add replace append prepend", WHOLE | BYTES,
     "add a 0 0 1\r\nx\r\nadd a 0 0 1\r\ny\r\nreplace b 0 0 1\r\nz\r\nreplace a 3 0 1\r\nz\r\n"
     "append a 7 0 2\r\n12\r\nprepend a 0 0 2\r\n00\r\nappend nope 0 0 1\r\nq\r\n"
     "prepend nope 0 0 1\r\nq\r\nget a\r\n",
     "STORED\r\nNOT_STORED\r\nNOT_STORED\r\nSTORED\r\nSTORED\r\nSTORED\r\nNOT_STORED\r\n"
     "NOT_STORED\r\nVALUE a 3 5\r\n00z12\r\nEND\r\n"},
    {"cas", ALL,
     "cas a 0 0 1 1\r\nx\r\nset a 0 0 1\r\nx\r\ncas a 0 0 1 99\r\ny\r\ncas a 0 0 1 1\r\nz\r\n"
     "gets a\r\ncas a 0 0 1 x\r\n",
     "NOT_FOUND\r\nSTORED\r\nEXISTS\r\nSTORED\r\nVALUE a 0 1 2\r\nz\r\nEND\r\n"
     "CLIENT_ERROR bad command line format\r\n"},
    {"noreply", ALL,
     "set a 0 0 1 noreply\r\nx\r\nadd a 0 0 1 noreply\r\ny\r\nget a\r\nincr a 1 noreply\r\n"
     "touch a 10 noreply\r\ndelete a noreply\r\nget a\r\nset b 0 0 x noreply\r\nget b\r\n",
     "VALUE a 0 1\r\nx\r\nEND\r\nEND\r\nEND\r\n"},
    {"a zero-length value", ALL,
     "set e 1 0 0\r\n\r\nget e\r\n",
     "STORED\r\nVALUE e 1 0\r\n\r\nEND\r\n"},

    /* ---- incr, decr, delete, touch ---- */
    {"incr and decr", WHOLE | BYTES,
     "set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nget n\r\nincr n 18446744073709551615\r\n"
     "incr n 2\r\nget n\r\ndecr nope 1\r\nincr nope 1\r\nincr n x\r\nincr n -1\r\n"
     "set s 0 0 3\r\nabc\r\nincr s 1\r\n",
     "STORED\r\n15\r\n0\r\nVALUE n 0 2\r\n0 \r\nEND\r\n18446744073709551615\r\n1\r\n"
     "VALUE n 0 20\r\n1                   \r\nEND\r\nNOT_FOUND\r\nNOT_FOUND\r\n"
     "CLIENT_ERROR invalid numeric delta argument\r\nCLIENT_ERROR invalid numeric delta argument\r\n"
     "STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"},
    {"delete", ALL,
     "delete a\r\nset a 0 0 1\r\nx\r\ndelete a\r\ndelete a 0\r\nset a 0 0 1\r\nx\r\n"
     "delete a 0 noreply\r\ndelete a 5\r\ndelete a x noreply\r\nget a\r\n",
     "NOT_FOUND\r\nSTORED\r\nDELETED\r\nNOT_FOUND\r\nSTORED\r\n"
     "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\nEND\r\n"},
    {"touch", ALL,
     "touch a 10\r\nset a 0 0 1\r\nx\r\ntouch a 10\r\ntouch a x\r\ntouch a -1\r\nget a\r\n",
     "NOT_FOUND\r\nSTORED\r\nTOUCHED\r\nCLIENT_ERROR invalid exptime argument\r\nTOUCHED\r\nEND\r\n"},

    /* ---- administrative ---- */
    {"flush_all", WHOLE | BYTES,
     "set a 0 0 1\r\nx\r\nflush_all\r\nget a\r\nset a 0 0 1\r\ny\r\nget a\r\nflush_all 0\r\n"
     "flush_all noreply\r\nflush_all x\r\nflush_all 0 noreply\r\nget a\r\n",
     "STORED\r\nOK\r\nEND\r\nSTORED\r\nVALUE a 0 1\r\ny\r\nEND\r\nOK\r\n"
     "CLIENT_ERROR invalid exptime argument\r\nEND\r\n"},
    {"verbosity and version", ALL,
     "verbosity 1\r\nverbosity\r\nverbosity x\r\nverbosity 5 noreply\r\nversion\r\n",
     "OK\r\nERROR\r\nCLIENT_ERROR bad command line format\r\nVERSION 1.6.18\r\n"},
    {"cache_memlimit", WHOLE,
     "cache_memlimit 100\r\ncache_memlimit 4\r\ncache_memlimit 2000000000\r\ncache_memlimit x\r\n"
     "cache_memlimit 64 noreply\r\n",
     "OK\r\nMEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"
     "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\nERROR\r\n"},
    {"shutdown not enabled", WHOLE,
     "shutdown\r\nshutdown graceful\r\n",
     "ERROR: shutdown not enabled\r\nERROR: shutdown not enabled\r\n"},
    {"stats through the hooks", ALL | NOMC,
     "stats\r\nstats settings\r\nstats nope\r\nstats reset\r\nstats detail dump\r\n"
     "stats detail on\r\nstats detail\r\nstats cachedump 1 1\r\nstats conns\r\n",
     "STAT pid 1\r\nEND\r\nSTAT maxbytes 67108864\r\nEND\r\nERROR\r\nRESET\r\nEND\r\nOK\r\n"
     "CLIENT_ERROR usage: stats detail on|off|dump\r\nEND\r\n"
     "STAT 5:state conn_read\r\nSTAT 6:state conn_read\r\nSTAT 7:state conn_read\r\nEND\r\n"},
    {"tuning commands", WHOLE,
     "slabs reassign 1 1\r\nslabs reassign 1 2\r\nslabs reassign 1 200\r\nslabs automove 1\r\n"
     "slabs automove 3\r\nlru mode flat\r\nlru tune 10 80 0.1 2\r\nlru_crawler sleep 2000000\r\n"
     "refresh_certs\r\n",
     "SAME src and dst class are identical\r\nNOSPARE source class has no spare pages\r\n"
     "BADCLASS invalid src or dst class id\r\nOK\r\nERROR\r\nOK\r\n"
     "ERROR hot and warm pcts must not exceed 80\r\nCLIENT_ERROR sleep must be one second or less\r\n"
     "Error TLS not enabled\r\n"},

    /* ---- bad lines and data blocks ---- */
    {"lines that are not commands", ALL,
     "\r\nfoo\r\nset a 0 0\r\ng\r\nget\r\nGET a\r\nmn\r\n",
     "ERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\nMN\r\n"},
    {"a refused line leaves its data block to be read as a command", ALL,
     "set a x 0 1\r\nz\r\nset a 0 0 -1\r\nget a\r\n",
     "CLIENT_ERROR bad command line format\r\nERROR\r\nCLIENT_ERROR bad command line format\r\n"
     "END\r\n"},
    {"a bad data chunk", ALL,
     "set a 0 0 1\r\nxy\r\nget a\r\n",
     "CLIENT_ERROR bad data chunk\r\nERROR\r\nEND\r\n"},
    {"a line ending in a bare newline", ALL,
     "set a 0 0 1\nx\r\nget a\n",
     "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n"},

    /* ---- mg ---- */
    {"mg misses", ALL,
     "mg k\r\nmg k v\r\nmg k q\r\nmg k k O123 q\r\nmg k k O1\r\nmn\r\n",
     "EN\r\nEN\r\nEN kk O1\r\nMN\r\n"},
    {"mg hits, flags in request order", ALL,
     "set k 5 0 3\r\nabc\r\nmg k\r\nmg k v\r\nmg k s v f k O99 q\r\nmg k q\r\nmg k t\r\n",
     "STORED\r\nHD\r\nVA 3\r\nabc\r\nVA 3 s3 f5 kk O99\r\nabc\r\nHD\r\nHD t-1\r\n"},
    {"mg cas", ALL,
     "set k 0 0 1\r\nx\r\nmg k c v\r\nms k 1 c\r\ny\r\nmg k c\r\n",
     "STORED\r\nVA 1 c1\r\nx\r\nHD c2\r\nHD c2\r\n"},
    {"mg h and u", WHOLE | BYTES,
     "set k 0 0 1\r\nx\r\nmg k u h\r\nmg k u h\r\nmg k h\r\nmg k h\r\n",
     "STORED\r\nHD h0\r\nHD h0\r\nHD h0\r\nHD h1\r\n"},
    {"mg T and N in the order given", ALL,
     "mg v1 N30 T60 t\r\nmg v2 T60 N30 t\r\nmg v3 t N30 T60\r\n",
     "HD t60 W\r\nHD t30 W\r\nHD t-1 W\r\n"},
    {"mg T touches, a past T expires", WHOLE | BYTES,
     "set k 0 0 1\r\nx\r\nmg k t T100\r\nmg k t\r\nmg k T0 t\r\nmg k T-1 v\r\nmg k v\r\n",
     "STORED\r\nHD t-1\r\nHD t100\r\nHD t-1\r\nVA 1\r\nx\r\nEN\r\n"},
    {"mg N vivifies: W, then Z", WHOLE | BYTES,
     "mg new N30 c v k\r\nmg new v\r\nmg new N30 q\r\nmg new\r\nms new 3 C1\r\nnew\r\nmg new v\r\n",
     "VA 0 c1 knew W\r\n\r\nVA 0 Z\r\n\r\nHD Z\r\nHD Z\r\nHD\r\nVA 3\r\nnew\r\n"},
    {"mg R hands out one recache", WHOLE | BYTES,
     "ms r 1 T100\r\nx\r\nms r2 1\r\nx\r\nmg r R30\r\nmg r R200\r\nmg r R200\r\nmg r2 R200\r\n",
     "HD\r\nHD\r\nHD\r\nHD W\r\nHD Z\r\nHD\r\n"},
    {"mg errors", ALL,
     "mg k E\r\nmg k v v\r\nmg k Tx q\r\nmg k M\r\nmg k " OPAQUE_33 "\r\nmg\r\n",
     "CLIENT_ERROR invalid flag\r\nCLIENT_ERROR duplicate flag\r\n"
     "CLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR incorrect length for M token\r\n"
     "CLIENT_ERROR opaque token too long\r\nERROR\r\n"},
    {"mg of a hit with an over-long opaque", WHOLE | BYTES,
     "set k 0 0 1\r\nx\r\nmg k v " OPAQUE_33 "\r\nmg k h\r\n",
     "STORED\r\nCLIENT_ERROR opaque token too long\r\nHD h1\r\n"},

    /* ---- ms ---- */
    {"ms flags and data blocks", ALL,
     "ms k 3\r\nabc\r\nms k 3 T0 F7 k O1 q\r\nabc\r\nmg k f v\r\nms k 0\r\n\r\nmg k v s\r\n",
     "HD\r\nVA 3 f7\r\nabc\r\nHD\r\nVA 0 s0\r\n\r\n"},
    {"ms modes", WHOLE | BYTES,
     "ms k 3\r\nabc\r\nms k 3 MA\r\nxyz\r\nms k 3 MP F9 T100\r\n123\r\nmg k v f t\r\n"
     "ms n 3 MA c\r\nxyz\r\nms n 3 MP\r\nxyz\r\nms n 3 MR\r\nxyz\r\nms n 3 ME\r\nxyz\r\n"
     "ms n 3 ME\r\nxyz\r\nms n 3 MS k\r\nabc\r\nmg n v\r\n",
     "HD\r\nHD\r\nHD\r\nVA 9 f0 t-1\r\n123abcxyz\r\nNS c0\r\nNS\r\nNS\r\nHD\r\nNS\r\nHD kn\r\n"
     "VA 3\r\nabc\r\n"},
    {"ms compare", WHOLE | BYTES,
     "ms k 1 c\r\na\r\nms k 1 C9 c\r\nb\r\nms k 1 C1 c\r\nb\r\nms nope 1 C5 c\r\nb\r\n"
     "ms k 1 MA C1\r\nz\r\nms k 1 MA C2\r\nz\r\nmg k v c\r\n",
     "HD c1\r\nEX c0\r\nHD c2\r\nNF c0\r\nEX\r\nHD\r\nVA 2 c3\r\nbz\r\n"},
    {"ms I keeps an older writer's value, stale", WHOLE | BYTES,
     "ms s 1 T100\r\nx\r\nms s 1 T100\r\nx\r\nms s 1 C1 I c T0\r\ny\r\nmg s v c\r\n"
     "ms s 1 C1 I\r\nz\r\nmg s v\r\n",
     "HD\r\nHD\r\nHD c3\r\nVA 1 c3 X W\r\ny\r\nHD\r\nVA 1 Z X\r\nz\r\n"},
    {"ms errors swallow the data block", ALL,
     "ms k 3 zz\r\nabc\r\nms k 3 Mx\r\nabc\r\nms k 3 " OPAQUE_33 "\r\nabc\r\nms k abc\r\nxyz\r\n",
     "CLIENT_ERROR invalid flag\r\nCLIENT_ERROR invalid mode for ms M token\r\n"
     "CLIENT_ERROR opaque token too long\r\nCLIENT_ERROR bad command line format\r\nERROR\r\n"},
    {"ms bad data chunks", ALL,
     "ms k 3 q\r\nabcde\r\nms k 1 q\r\nxx\r\nms k 2\r\nabc\r\n",
     "CLIENT_ERROR bad data chunk\r\nERROR\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\n"
     "CLIENT_ERROR bad data chunk\r\nERROR\r\n"},

    /* ---- md ---- */
    {"md", ALL,
     "md k\r\nmd k q\r\nmd k k O5 q\r\nset k 0 0 1\r\na\r\nmd k q\r\nmg k\r\n"
     "set k 0 0 1\r\na\r\nmd k C1 k O9\r\nmd k C1 q\r\nmd k T30\r\nmg k\r\n",
     "NF\r\nNF\r\nNF kk O5\r\nSTORED\r\nEN\r\nSTORED\r\nEX kk O9\r\nEX\r\nHD\r\nEN\r\n"},
    {"md I invalidates: X W, then Z X", WHOLE | BYTES,
     "set k 0 0 1\r\na\r\nmd k I\r\nmg k c v\r\nmg k c v\r\nmg k\r\nmd k I q\r\nmg k\r\nmg k\r\n"
     "ms k 1 C3\r\nb\r\nmg k v\r\nmd k I T30\r\nmg k t\r\n",
     "STORED\r\nHD\r\nVA 1 c2 X W\r\na\r\nVA 1 c2 Z X\r\na\r\nHD Z X\r\nHD X W\r\nHD Z X\r\nHD\r\n"
     "VA 1\r\nb\r\nHD\r\nHD t30 X W\r\n"},
    {"md errors", ALL,
     "md k zz\r\nmd k v v\r\nmd k q " OPAQUE_33 "\r\n",
     "CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\n"
     "CLIENT_ERROR opaque token too long\r\n"},

    /* ---- ma ---- */
    {"ma modes", WHOLE | BYTES,
     "ma k\r\nma k q\r\nma k N0 v\r\nma k v\r\nma k v D5\r\nma k v MD D3\r\nma k v M- D100\r\n"
     "ma k v M+\r\nma k v MI\r\nma k v Md\r\nma k v MII\r\n",
     "NF\r\nNF\r\nVA 1\r\n0\r\nVA 1\r\n1\r\nVA 1\r\n6\r\nVA 1\r\n3\r\nVA 1\r\n0\r\nVA 1\r\n1\r\n"
     "VA 1\r\n2\r\nCLIENT_ERROR invalid mode for ma M token\r\n"
     "CLIENT_ERROR invalid or duplicate flag\r\n"},
    {"ma N, J and q", ALL,
     "ma n N0 J10 v\r\nma n N0 J10 v\r\nma n q\r\nma n q v\r\nmg n v\r\nma n J5\r\n",
     "VA 2\r\n10\r\nVA 2\r\n11\r\nVA 2\r\n13\r\nHD\r\n"},
    {"ma compare and cas", WHOLE | BYTES,
     "set c 0 0 1\r\n5\r\nma c C2 v\r\nma c C1 v c\r\nma c C0 v\r\nma nx C5 v\r\nma nx C5 N0 v\r\n",
     "STORED\r\nEX\r\nVA 1 c2\r\n6\r\nVA 1\r\n7\r\nNF\r\nVA 1\r\n0\r\n"},
    {"ma wraps around", WHOLE | BYTES,
     "set w 0 0 20\r\n18446744073709551615\r\nma w v\r\nma w v MD D18446744073709551615\r\n"
     "ma w v D18446744073709551615\r\n",
     "STORED\r\nVA 1\r\n0\r\nVA 1\r\n0\r\nVA 20\r\n18446744073709551615\r\n"},
    {"ma TTL flags act where they stand", WHOLE | BYTES,
     "ma t1 N100 t v\r\nma t2 t N100 v\r\nmg t2 t\r\nma t3 N100 T50 t v\r\nma t4 T50 N100 t v\r\n",
     "VA 1 t100\r\n0\r\nVA 1 t-1\r\n0\r\nHD t100\r\nVA 1 t50\r\n0\r\nVA 1 t100\r\n0\r\n"},
    {"ma on a non-numeric value", WHOLE | BYTES,
     "set s 0 0 3\r\nabc\r\nma s\r\nma s C99\r\nset e 0 0 0\r\n\r\nma e C1\r\n",
     "STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nEX\r\nSTORED\r\n"
     "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"},

    /* ---- base64 keys, me, mn ---- */
    {"b: keys in base64", WHOLE | BYTES,
     "ms a2V5 1 b k\r\nx\r\nmg key k v\r\nmg a2V5 b k v\r\nmd key k\r\nmg a2V5 b k\r\n"
     "mg YQ b k\r\nma dGVzdA== b N0 k v\r\n",
     "HD ka2V5 b\r\nVA 1 ka2V5 b\r\nx\r\nVA 1 ka2V5 b\r\nx\r\nHD kkey\r\nEN ka2V5 b\r\n"
     "CLIENT_ERROR error decoding key\r\nVA 1 kdGVzdA== b\r\n0\r\n"},
    {"me misses and errors", ALL,
     "me\r\nme k\r\nme k b\r\nme !!! b\r\n",
     "CLIENT_ERROR bad command line format\r\nEN\r\nCLIENT_ERROR bad command line format\r\n"
     "CLIENT_ERROR bad command line format\r\n"},
    {"me of a hit (mpcache's own slab class)", WHOLE | BYTES | NOMC,
     "set k 0 0 1\r\na\r\nme k\r\nget k\r\nme k x y\r\n",
     "STORED\r\nME k exp=-1 la=0 cas=1 fetch=no cls=1 size=61\r\nVALUE k 0 1\r\na\r\nEND\r\n"
     "ME k exp=-1 la=0 cas=1 fetch=yes cls=1 size=61\r\n"},
    {"mn and two-letter words", ALL,
     "mn extra tokens\r\nmx\r\nmgg k\r\nMG k\r\n",
     "MN\r\nERROR\r\nERROR\r\nERROR\r\n"},

    /* ---- pipelines ---- */
    {"quiet mode hides only what memcached hides", ALL,
     "ms a 1 q\r\n1\r\nms a 1 q ME\r\n1\r\nmg a q\r\nmg b q\r\nmg a q v\r\nma a q\r\nma b q\r\n"
     "ma b q N0\r\nmd a q\r\nmd a q\r\nmd b q I\r\nmn\r\n",
     "NS\r\nHD\r\nVA 1\r\n1\r\nNF\r\nHD\r\nNF\r\nMN\r\n"},
    {"text and meta on one connection", ALL,
     "set t 1 0 2\r\nab\r\nmg t f v\r\nappend t 0 0 1\r\nc\r\nms t 1 MA\r\nd\r\nget t\r\nma t\r\n"
     "incr n 1\r\nma n N0 J41 v\r\nincr n 1\r\ndelete t\r\nmg t v\r\ntouch n 100\r\nmg n v s\r\n"
     "decr n 50\r\nmn\r\nversion\r\n",
     "STORED\r\nVA 2 f1\r\nab\r\nSTORED\r\nHD\r\nVALUE t 1 4\r\nabcd\r\nEND\r\n"
     "CLIENT_ERROR cannot increment or decrement non-numeric value\r\nNOT_FOUND\r\n"
     "VA 2\r\n41\r\n42\r\nDELETED\r\nEN\r\nTOUCHED\r\nVA 2 s2\r\n42\r\n0\r\nMN\r\n"
     "VERSION 1.6.18\r\n"},
    {"flush_all reaches meta", ALL,
     "ms f 1\r\nx\r\nflush_all\r\nmg f v\r\nma f\r\nmd f\r\nme f\r\n",
     "HD\r\nOK\r\nEN\r\nNF\r\nNF\r\nEN\r\n"},
};
/* cases: end */

/* One case in one way of sending; returns what the client read. */
static void run_case(const wire_case *wc, unsigned how, size_t cut, client *k)
{
    world_fresh();
    client_open(k);
    const char *in = wc->in;
    size_t n = strlen(in);
    if (how == WHOLE) {
        client_send(k, in, n);
    } else if (how == BYTES) {
        for (size_t i = 0; i < n; i++)
            client_send(k, in + i, 1);
    } else {
        client_send(k, in, cut);
        client_send(k, in + cut, n - cut);
    }
}

/* Every case of a table in each way its modes ask for, failures labelled
 * with prefix.  An open connection ends waiting for input; one a case
 * closes (auth) may have read nothing at all (k.out NULL). */
static void run_table(const wire_case *table, size_t ncases, const char *prefix, bool stays_open)
{
    static const unsigned hows[] = {WHOLE, BYTES};
    for (size_t i = 0; i < ncases; i++) {
        const wire_case *wc = &table[i];
        size_t n = strlen(wc->in), nwant = strlen(wc->out);
        char label[160];
        client k;
        for (int h = 0; h < 2; h++) {
            if (!(wc->modes & hows[h]))
                continue;
            run_case(wc, hows[h], 0, &k);
            snprintf(label, sizeof(label), "%s%s (%s)", prefix, wc->name,
                     h == 0 ? "whole" : "byte by byte");
            CHECK_WIRE(k.out ? k.out : "", k.nout, wc->out, nwant, label);
            if (stays_open)
                CHECK(k.rc == MP_PROC_NEED_INPUT);
            client_close(&k);
        }
        if (wc->modes & SPLITS) {
            for (size_t cut = 1; cut < n; cut++) {
                run_case(wc, SPLITS, cut, &k);
                snprintf(label, sizeof(label), "%s%s (cut at %zu)", prefix, wc->name, cut);
                CHECK_WIRE(k.out ? k.out : "", k.nout, wc->out, nwant, label);
                client_close(&k);
            }
        }
        CHECK(bufs_out == 0);
    }
}

static void test_cases(void)
{
    run_table(cases, sizeof(cases) / sizeof(cases[0]), "", true);
}

/* ---- what the store holds, and the counters ---- */

/* The item's value (without "\r\n"), flags and cas; false on a miss. */
static bool peek(const char *key, char *value, size_t cap, uint32_t *flags, uint64_t *cas)
{
    size_t nkey = strlen(key);
    uint64_t hv = mp_hash(key, nkey);
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    mp_item *it = mp_item_find(s, key, nkey, hv, NULL);
    if (it != NULL) {
        size_t n = it->nbytes - 2 < cap - 1 ? it->nbytes - 2 : cap - 1;
        memcpy(value, MP_ITEM_value(it), n);
        value[n] = '\0';
        if (flags != NULL)
            *flags = mp_item_flags(it);
        if (cas != NULL)
            *cas = it->cas;
    }
    mp_shard_unlock(s);
    return it != NULL;
}

static uint32_t refs_of(const char *key)
{
    size_t nkey = strlen(key);
    uint64_t hv = mp_hash(key, nkey);
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    mp_item *it = mp_item_find(s, key, nkey, hv, NULL);
    uint32_t n = it != NULL ? mp_item_slab_refs(s, it) : 0;
    mp_shard_unlock(s);
    return n;
}

static void send_str(client *k, const char *s)
{
    client_send(k, s, strlen(s));
}

#define CHECK_OUT(k, want) CHECK_WIRE((k)->out, (k)->nout, (want), strlen(want), #want)

static void out_reset(client *k)
{
    k->nout = 0;
}

static void test_store_state(void)
{
    world_fresh();
    client k;
    client_open(&k);
    char v[64];
    uint32_t flags;
    uint64_t cas;
    send_str(&k, "set a 42 0 5\r\nhello\r\n");
    CHECK(peek("a", v, sizeof(v), &flags, &cas));
    CHECK_STR(v, "hello");
    CHECK_EQ_U64(flags, 42);
    CHECK_EQ_U64(cas, 1);
    send_str(&k, "append a 0 0 1\r\n!\r\nprepend a 0 0 1\r\n>\r\n");
    CHECK(peek("a", v, sizeof(v), &flags, &cas));
    CHECK_STR(v, ">hello!");
    CHECK_EQ_U64(flags, 42);
    CHECK_EQ_U64(cas, 3);
    send_str(&k, "cas a 7 0 2 3\r\nhi\r\n");
    CHECK(peek("a", v, sizeof(v), &flags, &cas));
    CHECK_STR(v, "hi");
    CHECK_EQ_U64(flags, 7);
    send_str(&k, "set n 0 0 2\r\n99\r\nincr n 1\r\n");
    CHECK(peek("n", v, sizeof(v), NULL, NULL));
    CHECK_STR(v, "100");
    send_str(&k, "decr n 95\r\n");
    CHECK(peek("n", v, sizeof(v), NULL, NULL));
    CHECK_STR(v, "5  ");
    send_str(&k, "delete a\r\n");
    CHECK(!peek("a", v, sizeof(v), NULL, NULL));
    send_str(&k, "ms m 3 F9 I\r\nxyz\r\nmd m I\r\n");
    CHECK(peek("m", v, sizeof(v), &flags, NULL));
    CHECK_STR(v, "xyz");
    CHECK_EQ_U64(flags, 9);
    send_str(&k, "md m\r\n");
    CHECK(!peek("m", v, sizeof(v), NULL, NULL));
    send_str(&k, "mg viv N10\r\n");
    CHECK(peek("viv", v, sizeof(v), NULL, NULL));
    CHECK_STR(v, "");
    send_str(&k, "ma cnt N0 J7\r\n");
    CHECK(peek("cnt", v, sizeof(v), NULL, NULL));
    CHECK_STR(v, "7");
    client_close(&k);
}

static void test_counters(void)
{
    world_fresh();
    client k;
    client_open(&k);
    send_str(&k, "set a 0 0 1\r\nx\r\nget a b\r\ngets a\r\ntouch a 10\r\ntouch b 10\r\ngat 10 a b\r\n"
                 "delete b\r\ndelete a\r\nincr a 1\r\nmg a v\r\nmn\r\nflush_all\r\nme a\r\n"
                 "cas a 0 0 1 5\r\nx\r\n");
    CHECK_EQ_U64(stats.set_cmds, 2);
    CHECK_EQ_U64(stats.get_cmds, 4);
    CHECK_EQ_U64(stats.get_hits, 2);
    CHECK_EQ_U64(stats.get_misses, 2);
    CHECK_EQ_U64(stats.touch_cmds, 4);
    CHECK_EQ_U64(stats.touch_hits, 2);
    CHECK_EQ_U64(stats.touch_misses, 2);
    CHECK_EQ_U64(stats.delete_hits, 1);
    CHECK_EQ_U64(stats.delete_misses, 1);
    CHECK_EQ_U64(stats.incr_misses, 1);
    CHECK_EQ_U64(stats.flush_cmds, 1);
    CHECK_EQ_U64(stats.meta_cmds, 1);
    CHECK_EQ_U64(stats.cas_misses, 1);
    CHECK_EQ_U64(stats.requests, 14);
    uint64_t timed = 0;
    for (int b = 0; b < MP_LAT_BUCKETS; b++)
        timed += latency.count[MP_CMD_GET][b];
    CHECK_EQ_U64(timed, 1);
    client_close(&k);
}

/* ---- the engine's hooks ---- */

static void test_hooks(void)
{
    world_fresh();
    client k;
    client_open(&k);
    send_str(&k, "verbosity 1\r\nverbosity 7\r\n");
    CHECK_EQ_U64(seen.verbosity_calls, 2);
    CHECK_EQ_U64(seen.verbosity, 2);   /* capped, as memcached does */
    send_str(&k, "cache_memlimit 100\r\ncache_memlimit 4\r\n");
    CHECK_EQ_U64(seen.memlimit_calls, 1);
    CHECK_EQ_U64(seen.memlimit, 100u << 20);
    send_str(&k, "stats\r\nstats reset\r\nstats conns\r\n");
    CHECK_EQ_U64(seen.stats, 1);
    CHECK_EQ_U64(seen.resets, 1);
    CHECK_EQ_U64(seen.conns_calls, 3);
    client_close(&k);

    /* "stats conns" stops with its line unread and goes on where it stopped */
    world_fresh();
    client_open(&k);
    k.keep = true;
    send_str(&k, "stats conns\r\nmn\r\n");
    CHECK_EQ_U64(k.calls, 3);
    client_read(&k);
    CHECK_OUT(&k, "STAT 5:state conn_read\r\nSTAT 6:state conn_read\r\nSTAT 7:state conn_read\r\n"
                  "END\r\nMN\r\n");
    client_close(&k);

    /* flush_all and shutdown as the settings allow them */
    set.flush_enabled = false;
    set.shutdown_command = true;
    world_fresh();
    client_open(&k);
    send_str(&k, "set a 0 0 1\r\nx\r\nflush_all\r\nget a\r\nshutdown x\r\n");
    CHECK_OUT(&k, "STORED\r\nCLIENT_ERROR flush_all not allowed\r\nVALUE a 0 1\r\nx\r\nEND\r\n"
                  "CLIENT_ERROR invalid shutdown mode\r\n");
    CHECK_EQ_U64(stats.flush_cmds, 1);
    CHECK_EQ_U64(seen.shutdowns, 0);
    out_reset(&k);
    /* shutdown closes the connection at once, without a reply */
    send_str(&k, "shutdown graceful\r\nget a\r\n");
    CHECK(k.rc == MP_PROC_CLOSE);
    CHECK(k.c.close_after_write);
    CHECK_EQ_U64(seen.shutdowns, 1);
    CHECK(seen.graceful);
    CHECK_EQ_U64(k.nout, 0);
    client_close(&k);
    world_fresh();
    client_open(&k);
    send_str(&k, "shutdown\r\n");
    CHECK(k.rc == MP_PROC_CLOSE && seen.shutdowns == 1 && !seen.graceful);
    client_close(&k);
    settings_default();
}

/* ---- closing ---- */

static void test_close(void)
{
    world_fresh();
    client k;
    client_open(&k);
    send_str(&k, "set a 0 0 1\r\nx\r\nget a\r\nquit\r\nget a\r\n");
    CHECK(k.rc == MP_PROC_CLOSE);
    CHECK(k.c.close_after_write);
    CHECK_OUT(&k, "STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n");
    client_close(&k);

    /* someone pointed a browser at the port */
    world_fresh();
    client_open(&k);
    send_str(&k, "GET / HTTP/1.1\r\nHost: x\r\n");
    CHECK(k.rc == MP_PROC_CLOSE);
    CHECK_EQ_U64(k.nout, 0);
    client_close(&k);

    /* a line past MP_LINE_MAX without a newline closes, unless it is a get */
    static char line[3 * MP_LINE_MAX];
    world_fresh();
    client_open(&k);
    memset(line, 'x', sizeof(line));
    client_send(&k, line, sizeof(line));
    CHECK(k.rc == MP_PROC_CLOSE);
    client_close(&k);
    world_fresh();
    client_open(&k);
    memcpy(line, "get ", 4);
    for (size_t i = 4; i < sizeof(line); i++)
        line[i] = i % 8 == 0 ? ' ' : 'k';
    client_send(&k, line, sizeof(line));
    CHECK(k.rc == MP_PROC_NEED_INPUT);
    send_str(&k, "\r\n");
    CHECK_OUT(&k, "END\r\n");
    client_close(&k);
}

/* ---- budget: -R requests per call ---- */

static void test_budget(void)
{
    world_fresh();
    client k;
    client_open(&k);
    k.budget = 1;
    /* budget + 1 on fresh input, then budget per resumed call */
    send_str(&k, "mn\r\nmn\r\nmn\r\nmn\r\nmn\r\n");
    CHECK_EQ_U64(k.calls, 4);
    CHECK_OUT(&k, "MN\r\nMN\r\nMN\r\nMN\r\nMN\r\n");
    client_close(&k);
}

/* ---- large values: too large, deferred copies, references, the mark ---- */

static char *repeat(char ch, size_t n)
{
    char *p = malloc(n + 1);
    memset(p, ch, n);
    p[n] = '\0';
    return p;
}

/* Appends printf output to a growing buffer. */
static void bprintf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void bprintf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (*len + (size_t)n + 1 > *cap) {
        *cap = (*len + (size_t)n + 1) * 2;
        *buf = realloc(*buf, *cap);
    }
    va_start(ap, fmt);
    vsnprintf(*buf + *len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
}

static void bput(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = realloc(*buf, *cap);
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static void test_too_large(void)
{
    size_t vlen = 2u << 20;
    char *value = repeat('v', vlen);
    char *in = NULL;
    size_t n = 0, cap = 0;
    bprintf(&in, &n, &cap, "set a 0 0 1\r\nx\r\nset a 0 0 %zu\r\n", vlen);
    bput(&in, &n, &cap, value, vlen);
    bprintf(&in, &n, &cap, "\r\nget a\r\nms b %zu T0\r\n", vlen);
    bput(&in, &n, &cap, value, vlen);
    bprintf(&in, &n, &cap, "\r\nmg b v\r\nappend a 0 0 1\r\nz\r\n");
    static const char want[] =
        "STORED\r\nSERVER_ERROR object too large for cache\r\nEND\r\n"
        "SERVER_ERROR object too large for cache\r\nEN\r\nNOT_STORED\r\n";
    for (int how = 0; how < 2; how++) {
        world_fresh();
        client k;
        client_open(&k);
        if (how == 0) {
            client_send(&k, in, n);
        } else {
            /* in reads of 64 KiB, the data blocks swallowed piece by piece */
            for (size_t off = 0; off < n; off += 65536)
                client_send(&k, in + off, n - off < 65536 ? n - off : 65536);
        }
        CHECK_WIRE(k.out, k.nout, want, sizeof(want) - 1, "too large, swallowed");
        CHECK_EQ_U64(stats.store_too_large, 2);
        client_close(&k);
    }
    free(in);
    free(value);
}

/* A value that does not fit the output behind its line is copied after the
 * lock is released; one of MP_OUT_REF_MIN and up goes by reference until
 * the connection holds MP_OUT_REFS of them. */
static void test_large_values(void)
{
    world_fresh();
    client k;
    client_open(&k);
    char *v6 = repeat('s', 6000), *v20 = repeat('L', 20000);
    char *in = NULL, *want = NULL;
    size_t n = 0, cap = 0, nw = 0, wcap = 0;
    bprintf(&in, &n, &cap, "set s 1 0 6000\r\n%s\r\nset l 2 0 20000\r\n%s\r\n", v6, v20);
    send_str(&k, in);
    CHECK_OUT(&k, "STORED\r\nSTORED\r\n");
    out_reset(&k);
    n = 0;
    /* three 6000-byte copies do not fit a 16 KiB buffer: the third is
     * deferred; then 20 references asked for, 16 held */
    bprintf(&in, &n, &cap, "get s s s\r\nmg s v\r\nmg s s v\r\n");
    bprintf(&want, &nw, &wcap, "VALUE s 1 6000\r\n%s\r\nVALUE s 1 6000\r\n%s\r\nVALUE s 1 6000\r\n%s\r\n"
            "END\r\nVA 6000\r\n%s\r\nVA 6000 s6000\r\n%s\r\n", v6, v6, v6, v6, v6);
    bprintf(&in, &n, &cap, "get");
    for (int i = 0; i < 20; i++) {
        bprintf(&in, &n, &cap, " l");
        bprintf(&want, &nw, &wcap, "VALUE l 2 20000\r\n%s\r\n", v20);
    }
    bprintf(&in, &n, &cap, "\r\nmg l v f\r\n");
    bprintf(&want, &nw, &wcap, "END\r\nVA 20000 f2\r\n%s\r\n", v20);
    k.keep = true;
    client_send(&k, in, n);
    CHECK(k.rc == MP_PROC_NEED_INPUT);
    CHECK_EQ_U64(k.c.wrefs.n, MP_OUT_REFS);
    CHECK_EQ_U64(refs_of("l"), MP_OUT_REFS);
    CHECK_EQ_U64(refs_of("s"), 0);
    client_read(&k);
    CHECK_WIRE(k.out, k.nout, want, nw, "large values");
    CHECK_EQ_U64(refs_of("l"), 0);
    /* the same, byte by byte and read as it comes */
    client_close(&k);
    world_fresh();
    client_open(&k);
    n = 0;
    bprintf(&in, &n, &cap, "set s 1 0 6000\r\n%s\r\nset l 2 0 20000\r\n%s\r\n", v6, v20);
    bprintf(&in, &n, &cap, "get s s s\r\nmg s v\r\nmg s s v\r\nget");
    for (int i = 0; i < 20; i++)
        bprintf(&in, &n, &cap, " l");
    bprintf(&in, &n, &cap, "\r\nmg l v f\r\n");
    for (size_t i = 0; i < n; i++)
        client_send(&k, in + i, 1);
    CHECK(k.nout == nw + 16 && memcmp(k.out, "STORED\r\nSTORED\r\n", 16) == 0);
    CHECK(k.nout == nw + 16 && memcmp(k.out + 16, want, nw) == 0);
    client_close(&k);
    free(in);
    free(want);
    free(v6);
    free(v20);
}

/* A multi-get whose reply passes MP_OUT_HIGHWATER stops with proto.resume
 * set and its line unconsumed, and finishes once the client has read. */
static void test_highwater_multiget(void)
{
    world_fresh();
    client k;
    client_open(&k);
    enum { NVAL = 24, VLEN = 100000 };
    char *in = NULL, *want = NULL;
    size_t n = 0, cap = 0, nw = 0, wcap = 0;
    for (int i = 0; i < NVAL; i++) {
        char *v = repeat((char)('a' + i), VLEN);
        bprintf(&in, &n, &cap, "set big%d %d 0 %d\r\n%s\r\n", i, i, VLEN, v);
        bprintf(&want, &nw, &wcap, "VALUE big%d %d %d\r\n%s\r\n", i, i, VLEN, v);
        free(v);
    }
    client_send(&k, in, n);
    CHECK_EQ_U64(k.nout, 8 * NVAL);
    out_reset(&k);
    bprintf(&want, &nw, &wcap, "END\r\nMN\r\n");
    n = 0;
    bprintf(&in, &n, &cap, "get");
    for (int i = 0; i < NVAL; i++)
        bprintf(&in, &n, &cap, " big%d", i);
    bprintf(&in, &n, &cap, "\r\n");
    size_t line = n;
    bprintf(&in, &n, &cap, "mn\r\n");

    k.keep = true;
    client_send(&k, in, n);
    CHECK(k.rc == MP_PROC_YIELD);
    CHECK(k.c.proto.resume > 0);
    CHECK_EQ_U64(k.c.rstart, 0);                 /* the line is still unread */
    CHECK(mp_out_over_mark(&k.c));
    CHECK(mp_out_unsent(&k.c) < MP_OUT_HIGHWATER + VLEN + 100);
    /* it goes on only when the client has read */
    client_read(&k);
    int rounds = 0;
    while (client_step(&k) == MP_PROC_YIELD && rounds++ < 100)
        client_read(&k);
    client_read(&k);
    CHECK(k.rc == MP_PROC_NEED_INPUT);
    CHECK(rounds >= 1);
    CHECK_EQ_U64(k.c.proto.resume, 0);
    CHECK_EQ_U64(k.c.rstart, line + 4);
    CHECK_WIRE(k.out, k.nout, want, nw, "multi-get past the mark");
    CHECK_EQ_U64(stats.get_hits, NVAL);
    client_close(&k);

    /* a bad key behind the mark: memcached would cull the whole reply, so
     * it is culled at once and the keys before it run for their effects */
    world_fresh();
    client_open(&k);
    n = 0;
    for (int i = 0; i < NVAL; i++) {
        char *v = repeat('z', VLEN);
        bprintf(&in, &n, &cap, "set big%d 0 0 %d\r\n%s\r\n", i, VLEN, v);
        free(v);
    }
    client_send(&k, in, n);
    out_reset(&k);
    n = 0;
    bprintf(&in, &n, &cap, "get");
    for (int i = 0; i < NVAL; i++)
        bprintf(&in, &n, &cap, " big%d", i);
    char *longkey = repeat('k', MP_KEY_MAX_LENGTH + 1);
    bprintf(&in, &n, &cap, " %s\r\nmn\r\n", longkey);
    free(longkey);
    client_send(&k, in, n);
    CHECK_OUT(&k, "CLIENT_ERROR bad command line format\r\nMN\r\n");
    CHECK_EQ_U64(stats.get_hits, NVAL);
    CHECK_EQ_U64(refs_of("big0"), 0);
    client_close(&k);
    free(in);
    free(want);
}

/* Lines of out[0, n) that start with `head`, and how many of them are
 * distinct (sorted copies compared). */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t count_lines(const char *out, size_t n, const char *head, char sep, size_t *distinct)
{
    size_t cap = 1024, cnt = 0;
    char **lines = malloc(cap * sizeof(char *));
    const char *p = out, *end = out + n;
    size_t hl = strlen(head);
    while (p < end) {
        const char *e = memchr(p, sep, (size_t)(end - p));
        if (e == NULL)
            break;
        if ((size_t)(e - p) >= hl && memcmp(p, head, hl) == 0) {
            if (cnt == cap)
                lines = realloc(lines, (cap *= 2) * sizeof(char *));
            /* what follows the head up to a space: the key or prefix */
            const char *q = p + hl;
            const char *sp = memchr(q, ' ', (size_t)(e - q));
            size_t len = (size_t)((sp != NULL ? sp : e) - q);
            lines[cnt] = strndup(q, len);
            cnt++;
        }
        p = e + 1;
    }
    qsort(lines, cnt, sizeof(char *), cmp_str);
    *distinct = cnt > 0;
    for (size_t i = 1; i < cnt; i++)
        *distinct += strcmp(lines[i], lines[i - 1]) != 0;
    for (size_t i = 0; i < cnt; i++)
        free(lines[i]);
    free(lines);
    return cnt;
}

/* A dump to a client that does not read stops at the output mark with its
 * line unread, and goes on, whole and without repeats, as it reads. */
static void dump_streams(client *k, const char *req, const char *head, char sep, size_t want)
{
    out_reset(k);
    k->keep = true;
    char in[128];
    snprintf(in, sizeof(in), "%smn\r\n", req);
    client_send(k, in, strlen(in));
    CHECK(k->rc == MP_PROC_YIELD);
    CHECK(k->c.proto.resume > 0);
    CHECK_EQ_U64(k->c.rstart, 0);
    CHECK(mp_out_unsent(&k->c) < MP_OUT_HIGHWATER + 256 * 1024);
    int rounds = 0;
    client_read(k);
    while (client_step(k) == MP_PROC_YIELD && rounds++ < 10000)
        client_read(k);
    client_read(k);
    k->keep = false;
    CHECK(k->rc == MP_PROC_NEED_INPUT);
    CHECK_EQ_U64(k->c.proto.resume, 0);
    CHECK(k->nout > 9 && memcmp(k->out + k->nout - 9, "END\r\nMN\r\n", 9) == 0);
    size_t distinct = 0;
    CHECK_EQ_U64(count_lines(k->out, k->nout, head, sep, &distinct), want);
    CHECK_EQ_U64(distinct, want);
}

static void test_dumps(void)
{
    enum { N = 60000 };
    world_fresh();
    client k;
    client_open(&k);
    char *in = NULL;
    size_t n = 0, cap = 0;
    for (int i = 0; i < N; i++)
        bprintf(&in, &n, &cap, "set k%06d 0 0 1 noreply\r\nv\r\nget p%06d:x\r\n", i, i);
    /* the gets count per prefix only once detail is on */
    shared.prefix = mp_prefix_create(':');
    shared.detail_on = 1;
    client_send(&k, in, n);
    shared.detail_on = 0;
    dump_streams(&k, "lru_crawler metadump all\r\n", "key=k", '\n', N);
    /* every key is in one class: its number from the first line */
    const char *cls = strstr(k.out, " cls=");
    CHECK(cls != NULL);
    char req[64];
    snprintf(req, sizeof(req), "stats cachedump %d 0\r\n", cls != NULL ? atoi(cls + 5) : 1);
    dump_streams(&k, req, "ITEM k", '\n', N);
    dump_streams(&k, "stats detail dump\r\n", "PREFIX ", '\n', N);
    mp_prefix_destroy(shared.prefix);
    shared.prefix = NULL;
    client_close(&k);
    free(in);
}

/* memcached culls the replies it has not sent when a get fails: what came
 * before it in the same read goes too; a later read is not affected. */
static void test_cull_on_bad_key(void)
{
    char *longkey = repeat('k', MP_KEY_MAX_LENGTH + 1);
    char *in = NULL;
    size_t n = 0, cap = 0;
    bprintf(&in, &n, &cap, "set a 0 0 1\r\nx\r\nget a %s\r\nget a\r\n", longkey);
    world_fresh();
    client k;
    client_open(&k);
    client_send(&k, in, n);
    CHECK_OUT(&k, "CLIENT_ERROR bad command line format\r\nVALUE a 0 1\r\nx\r\nEND\r\n");
    client_close(&k);
    world_fresh();
    client_open(&k);
    send_str(&k, "set a 0 0 1\r\nx\r\n");
    n = 0;
    bprintf(&in, &n, &cap, "get a %s\r\n", longkey);
    send_str(&k, in);
    CHECK_OUT(&k, "STORED\r\nCLIENT_ERROR bad command line format\r\n");
    /* a key of exactly the longest length is a key */
    longkey[MP_KEY_MAX_LENGTH] = '\0';
    n = 0;
    bprintf(&in, &n, &cap, "get %s\r\n", longkey);
    out_reset(&k);
    send_str(&k, in);
    CHECK_OUT(&k, "END\r\n");
    client_close(&k);
    free(in);
    free(longkey);
}

/* ---- ASCII authentication (-Y) ----
 * The protocol with a password table in the env.  The cases below are
 * replayed on a memcached started with -Y and a file holding AUTH_FILE
 * (tests/unit/test_c_programs.py), whole, each on a new connection: what a
 * connection sends before authenticating is answered by memcached one reply
 * per batch (the last), so a case that sends several lines is WHOLE only. */

#define AUTH_FILE "alice:secret\nbob:hunter2\n"

/* auth cases: begin */
static const wire_case auth_cases[] = {
    {"a command before authentication", ALL,
     "get a\r\n",
     "CLIENT_ERROR unauthenticated\r\n"},
    {"quit does not close before authentication", ALL,
     "quit\r\n",
     "CLIENT_ERROR unauthenticated\r\n"},
    {"ms is not set", ALL,
     "ms a 12\r\n",
     "CLIENT_ERROR unauthenticated\r\n"},
    {"a set line without its length", ALL,
     "set a 0 0\r\n",
     "CLIENT_ERROR unauthenticated\r\n"},
    {"a negative length", ALL,
     "set a 0 0 -1\r\n",
     "CLIENT_ERROR unauthenticated\r\n"},
    {"a pipeline before authentication: the batch's last reply", WHOLE,
     "get a\r\nversion\r\nstats\r\nset a 0 0 1\r\nx\r\nmn\r\n",
     "CLIENT_ERROR unauthenticated\r\n"},
    {"credentials", ALL,
     "set a 0 0 12\r\nalice secret\r\nversion\r\n",
     "STORED\r\nVERSION 1.6.18\r\n"},
    {"the key, flags, exptime and noreply are not read", ALL,
     "set anything 5 100 11 noreply\r\nbob hunter2\r\nget anything\r\n",
     "STORED\r\nEND\r\n"},
    {"bare newlines", ALL,
     "set a 0 0 12\nalice secret\r\nversion\n",
     "STORED\r\nVERSION 1.6.18\r\n"},
    {"leading spaces and words after the password", ALL,
     "set a 0 0 20\r\n  alice secret extra\r\nversion\r\n",
     "STORED\r\nVERSION 1.6.18\r\n"},
    {"a wrong password", ALL,
     "set a 0 0 11\r\nalice wrong\r\n",
     "CLIENT_ERROR authentication failure\r\n"},
    {"an unknown user", ALL,
     "set a 0 0 14\r\nmallory secret\r\n",
     "CLIENT_ERROR authentication failure\r\n"},
    {"another user's password", ALL,
     "set a 0 0 10\r\nbob secret\r\n",
     "CLIENT_ERROR authentication failure\r\n"},
    {"a password ending in \\r", ALL,
     "set a 0 0 13\r\nalice secret\r\r\n",
     "CLIENT_ERROR authentication failure\r\n"},
    {"a failure, then credentials, in one batch", WHOLE,
     "set a 0 0 11\r\nalice wrong\r\nset a 0 0 12\r\nalice secret\r\nget a\r\n",
     "STORED\r\nEND\r\n"},
    {"a failure answered alone", WHOLE,
     "set a 0 0 11\r\nalice wrong\r\nget a\r\n",
     "CLIENT_ERROR unauthenticated\r\n"},
    {"after credentials the rest of the batch runs", WHOLE,
     "get a\r\nset a 0 0 12\r\nalice secret\r\nset k 0 0 1\r\nv\r\nget k\r\n",
     "STORED\r\nSTORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n"},
    {"one word is no credentials", ALL,
     "set a 0 0 5\r\nalice\r\n",
     "CLIENT_ERROR bad authentication token format\r\n"},
    {"a tab does not separate", ALL,
     "set a 0 0 12\r\nalice\tsecret\r\n",
     "CLIENT_ERROR bad authentication token format\r\n"},
    {"an empty block", ALL,
     "set a 0 0 0\r\n\r\n",
     "CLIENT_ERROR bad authentication token format\r\n"},
    {"a block not ending in \\r\\n", ALL,
     "set a 0 0 12\r\nalice secretXX",
     "CLIENT_ERROR bad command line termination\r\n"},
    {"a block shorter than said", WHOLE,
     "set a 0 0 10\r\nalice secret\r\nversion\r\n",
     "CLIENT_ERROR unauthenticated\r\n"},
    {"a length that wraps to 0", ALL,
     "set a 0 0 4294967294\r\n",
     "CLIENT_ERROR bad command line termination\r\n"},
    {"a length that wraps to 1 takes one byte", ALL,
     "set a 0 0 4294967295\r\nX",
     "CLIENT_ERROR bad command line termination\r\n"},
    {"a lone newline waits for a second byte", WHOLE,
     "\n",
     ""},
    {"a newline, then a command", WHOLE,
     "\nversion\r\n",
     "CLIENT_ERROR unauthenticated\r\n"},
    {"a partial line waits", ALL,
     "set a 0 0 12",
     ""},
    {"a browser", WHOLE,
     "GET / HTTP/1.1\r\n",
     "CLIENT_ERROR unauthenticated\r\n"},
};
/* auth cases: end */

static mp_auth *auth_table(const char *text, size_t n)
{
    FILE *f = fmemopen((void *)text, n, "r");
    mp_auth *a = calloc(1, sizeof(*a));
    CHECK(f != NULL && a != NULL);
    CHECK(mp_auth_read(f, (long long)n, a) == 0);
    fclose(f);
    return a;
}

/* The file's parse, memcached's fgets quirks included (the same files are
 * tried on memcached in tests/integration/test_auth.py). */
static int auth_parse(const char *text, size_t n, mp_auth *a)
{
    FILE *f = fmemopen((void *)text, n, "r");
    int rc = mp_auth_read(f, (long long)n, a);
    fclose(f);
    return rc;
}

#define AUTH_PARSE(a, lit) auth_parse((lit), sizeof(lit) - 1, (a))

static bool auth_has(const mp_auth *a, const char *user, const char *pass)
{
    return mp_auth_check(a, user, strlen(user), pass, strlen(pass));
}

static void test_auth_file(void)
{
    mp_auth a;
    CHECK(AUTH_PARSE(&a, AUTH_FILE) == 0);
    CHECK_EQ_U64(a.n, 2);
    CHECK(auth_has(&a, "alice", "secret") && auth_has(&a, "bob", "hunter2"));
    CHECK(!auth_has(&a, "alice", "hunter2") && !auth_has(&a, "alice", "secre"));
    CHECK(!auth_has(&a, "alic", "secret") && !auth_has(&a, "alice", "secret2"));
    /* the first fgets reads one byte less than the file holds */
    CHECK(AUTH_PARSE(&a, "a:bc") == 0);
    CHECK(a.n == 1 && auth_has(&a, "a", "b"));
    CHECK(AUTH_PARSE(&a, "a:b") == 0);
    CHECK(a.n == 1 && auth_has(&a, "a", ""));
    CHECK(AUTH_PARSE(&a, "a:b\nc:de") == 0);
    CHECK(a.n == 2 && auth_has(&a, "a", "b") && auth_has(&a, "c", "de"));
    /* a password ends at \r, \n or NUL; a user at the first ':' */
    CHECK(AUTH_PARSE(&a, "a:b\r\nc:d:e f\r\n") == 0);
    CHECK(a.n == 2 && auth_has(&a, "a", "b") && auth_has(&a, "c", "d:e f"));
    CHECK(auth_parse("a:b\0c\nd:e\n", 10, &a) == 0);
    CHECK(a.n == 1 && auth_has(&a, "a", "b"));
    /* an empty file loads nothing; a line without ':' is malformed, an
     * empty one too */
    CHECK(AUTH_PARSE(&a, "") == 0);
    CHECK_EQ_U64(a.n, 0);
    CHECK(AUTH_PARSE(&a, "nocolon\n") == -1);
    CHECK(AUTH_PARSE(&a, "a:b\n\n") == -1);
    CHECK(AUTH_PARSE(&a, "a:b\nc\nd:e\n") == -1);
    CHECK(AUTH_PARSE(&a, "\n") == -1);
    /* eight entries, and nothing after them is read */
    CHECK(AUTH_PARSE(&a, "u1:p\nu2:p\nu3:p\nu4:p\nu5:p\nu6:p\nu7:p\nu8:p\nnocolon\n") == 0);
    CHECK(a.n == MP_AUTH_ENTRIES && auth_has(&a, "u8", "p"));
    /* a line cut at 255 bytes keeps what fits and ends the file */
    char longf[400];
    memcpy(longf, "u:", 2);
    memset(longf + 2, 'p', 298);
    memcpy(longf + 300, "\nv:w\n", 5);
    CHECK(auth_parse(longf, 305, &a) == 0);
    CHECK_EQ_U64(a.n, 1);
    CHECK_EQ_U64(a.e[0].plen, 253);
    char pass[254];
    memset(pass, 'p', 253);
    pass[253] = '\0';
    CHECK(auth_has(&a, "u", pass));

    /* mp_auth_load: memcached's messages */
    char err[1200];
    CHECK(mp_auth_load("/nonexistent/auth", err, sizeof(err)) == NULL);
    CHECK_STR(err, "Could not open authfile [/nonexistent/auth] for reading, error "
                   "No such file or directory: No such file or directory");
    char path[] = "/tmp/mpcache-test-auth-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "bad\n", 4) == 4);
    close(fd);
    CHECK(mp_auth_load(path, err, sizeof(err)) == NULL);
    char want[200];
    snprintf(want, sizeof(want), "Authfile [%s] has a malformed entry. Should be 'user:password'",
             path);
    CHECK_STR(err, want);
    unlink(path);
    /* a directory opens and reads as empty */
    mp_auth *d = mp_auth_load("/tmp", err, sizeof(err));
    CHECK(d != NULL && d->n == 0);
    mp_auth_free(d);
}

static void test_auth_cases(void)
{
    mp_auth *table = auth_table(AUTH_FILE, sizeof(AUTH_FILE) - 1);
    env.auth = &table;
    run_table(auth_cases, sizeof(auth_cases) / sizeof(auth_cases[0]), "auth: ", false);
    env.auth = NULL;
    mp_auth_free(table);
    CHECK(bufs_out == 0);
}

/* n copies of s, concatenated (freed by the caller) */
static char *times(const char *s, int n)
{
    size_t len = strlen(s);
    char *out = malloc(len * (size_t)n + 1);
    for (int i = 0; i < n; i++)
        memcpy(out + len * (size_t)i, s, len);
    out[len * (size_t)n] = '\0';
    return out;
}

/* Random inputs before authentication, cut at random places: the replies
 * have no oracle here (memcached's are the cases above), but every byte
 * must be read within bounds (the ASan build), and each run must end in a
 * state the protocol knows.  The words are the ones the auth path looks
 * at. */
static uint64_t lcg_state = 12345;

static uint32_t lcg(void)
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(lcg_state >> 33);
}

static void test_auth_random(void)
{
    static const char *const words[] = {
        "set", " ", "  ", "a", "0", "5", "12", "-1", "4294967294", "4294967295",
        "4294967296", "3000000000", "16382", "16383", "\r\n", "\n", "\r", "alice",
        "secret", "bob", "hunter2", "get", "noreply", "mn", "\t", "x",
    };
    const size_t nwords = sizeof(words) / sizeof(words[0]);
    mp_auth *table = auth_table(AUTH_FILE, sizeof(AUTH_FILE) - 1);
    env.auth = &table;
    enum { CAP = 64 * 1024, FILLER_MAX = 20000 };
    char *in = malloc(CAP);
    world_fresh();
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = 0;
        int parts = 1 + (int)(lcg() % 40);
        for (int i = 0; i < parts && n + FILLER_MAX < CAP; i++) {
            uint32_t r = lcg() % 100;
            if (r < 3) {
                /* a run of filler: long lines and long blocks */
                size_t len = lcg() % FILLER_MAX;
                memset(in + n, r == 0 ? '\0' : 'y', len);
                n += len;
            } else {
                const char *w = words[lcg() % nwords];
                memcpy(in + n, w, strlen(w));
                n += strlen(w);
            }
        }
        client k;
        client_open(&k);
        size_t at = 0;
        while (at < n && k.rc != MP_PROC_CLOSE) {
            size_t piece = 1 + lcg() % (n - at < 5000 ? n - at : 5000);
            client_send(&k, in + at, piece);
            at += piece;
            CHECK(k.rc == MP_PROC_NEED_INPUT || k.rc == MP_PROC_CLOSE);
        }
        CHECK(k.c.rstart <= k.c.rend);
        CHECK(stats.auth_errors <= stats.auth_cmds);
        client_close(&k);
    }
    free(in);
    env.auth = NULL;
    mp_auth_free(table);
    CHECK(bufs_out == 0);
}

static void test_auth_session(void)
{
    mp_auth *table = auth_table(AUTH_FILE, sizeof(AUTH_FILE) - 1);
    env.auth = &table;
    client k;

    /* the counters: a check counts, a failed one is an error too; a block
     * that is no credentials is neither */
    world_fresh();
    client_open(&k);
    send_str(&k, "set a 0 0 11\r\nalice wrong\r\n");
    send_str(&k, "set a 0 0 5\r\nalice\r\n");
    send_str(&k, "set a 0 0 1\r\nx\r\n");
    send_str(&k, "get a\r\n");
    CHECK_EQ_U64(stats.auth_cmds, 1);
    CHECK_EQ_U64(stats.auth_errors, 1);
    CHECK_EQ_U64(stats.get_cmds + stats.set_cmds, 0);
    send_str(&k, "set a 0 0 12\r\nalice secret\r\nget a\r\n");
    CHECK_EQ_U64(stats.auth_cmds, 2);
    CHECK_EQ_U64(stats.auth_errors, 1);
    CHECK_EQ_U64(stats.get_cmds, 1);
    CHECK_OUT(&k, "CLIENT_ERROR authentication failure\r\n"
                  "CLIENT_ERROR bad authentication token format\r\n"
                  "CLIENT_ERROR bad authentication token format\r\n"
                  "CLIENT_ERROR unauthenticated\r\nSTORED\r\nEND\r\n");
    CHECK(k.c.proto.authenticated);
    /* authenticated, a set is a set */
    out_reset(&k);
    send_str(&k, "set a 0 0 12\r\nalice secret\r\n");
    CHECK_OUT(&k, "STORED\r\n");
    CHECK_EQ_U64(stats.auth_cmds, 2);
    CHECK_EQ_U64(stats.set_cmds, 1);
    client_close(&k);

    /* -R: memcached flushes its one reply object when it yields, after
     * budget + 1 requests on fresh input, then budget */
    static const struct { int lines, replies; } batches[] = {
        {20, 1}, {21, 1}, {22, 2}, {41, 2}, {42, 3}, {61, 3}, {62, 4},
    };
    for (size_t i = 0; i < sizeof(batches) / sizeof(batches[0]); i++) {
        client_open(&k);
        char *in = times("get a\r\n", batches[i].lines);
        send_str(&k, in);
        char *want = times("CLIENT_ERROR unauthenticated\r\n", batches[i].replies);
        CHECK_OUT(&k, want);
        free(in);
        free(want);
        client_close(&k);
    }
    /* a block that completes in a later call counts as its first request */
    for (int extra = 20; extra <= 21; extra++) {
        client_open(&k);
        send_str(&k, "set a 0 0 11\r\n");
        char *gets = times("get a\r\n", extra);
        char in[400];
        snprintf(in, sizeof(in), "alice wrong\r\n%s", gets);
        send_str(&k, in);
        char *want = times("CLIENT_ERROR unauthenticated\r\n", extra == 20 ? 1 : 2);
        CHECK_OUT(&k, want);
        free(gets);
        free(want);
        client_close(&k);
    }

    /* memcached's 16 KiB buffer: the largest block that fits ... */
    size_t big = 16382;
    char *block = malloc(big + 64);
    snprintf(block, big + 64, "set a 0 0 %zu\r\nalice secret", big);
    size_t at = strlen(block);
    memset(block + at, ' ', big - 12);
    memcpy(block + at + big - 12, "\r\nversion\r\n", 12);
    client_open(&k);
    send_str(&k, block);
    CHECK_OUT(&k, "STORED\r\nVERSION 1.6.18\r\n");
    client_close(&k);
    /* ... and one byte more: never answered, closed once more arrives than
     * the buffer holds (nothing left to send: at once) */
    snprintf(block, big + 64, "set a 0 0 %zu\r\n", big + 1);
    client_open(&k);
    send_str(&k, "get a\r\n");
    send_str(&k, block);
    char *data = malloc(1 << 20);
    memset(data, 'x', 1 << 20);
    client_send(&k, data, 16384);
    CHECK(k.rc == MP_PROC_NEED_INPUT);
    client_send(&k, data, 1);
    CHECK(k.rc == MP_PROC_CLOSE);
    CHECK(!k.c.close_after_write);
    CHECK_OUT(&k, "CLIENT_ERROR unauthenticated\r\n");
    client_close(&k);
    /* a megabyte in one go, after a command in the same batch: its reply
     * goes out first; a length memcached takes as negative, likewise */
    const char *huge[] = {"set a 0 0 1048576\r\n", "set a 0 0 3000000000\r\n"};
    for (int i = 0; i < 2; i++) {
        client_open(&k);
        size_t hn = strlen(huge[i]);
        char *in = malloc(7 + hn + (1 << 20));
        memcpy(in, "get a\r\n", 7);
        memcpy(in + 7, huge[i], hn);
        memcpy(in + 7 + hn, data, 1 << 20);
        client_send(&k, in, 7 + hn + (1 << 20));
        CHECK(k.rc == MP_PROC_CLOSE);
        CHECK_OUT(&k, "CLIENT_ERROR unauthenticated\r\n");
        free(in);
        client_close(&k);
    }
    free(block);

    /* a line without a newline: past 2048 bytes closes, and what this batch
     * answered is not sent */
    client_open(&k);
    send_str(&k, "get a\r\n");
    memcpy(data, "get a\r\n", 7);
    client_send(&k, data, 7 + 2048);
    CHECK(k.rc == MP_PROC_NEED_INPUT);
    client_close(&k);
    client_open(&k);
    client_send(&k, data, 7 + 2049);
    CHECK(k.rc == MP_PROC_CLOSE);
    CHECK_EQ_U64(k.nout, 0);
    client_close(&k);
    free(data);

    /* a reload publishes a new table: connections see it at their next check */
    client_open(&k);
    mp_auth *next = auth_table("carol:x\n", 8);
    next->retired = table;
    table = next;
    send_str(&k, "set a 0 0 12\r\nalice secret\r\n");
    send_str(&k, "set a 0 0 7\r\ncarol x\r\n");
    CHECK_OUT(&k, "CLIENT_ERROR authentication failure\r\nSTORED\r\n");
    client_close(&k);

    env.auth = NULL;
    mp_auth_free(table);
    CHECK(bufs_out == 0);
}

/* ---- the binary protocol (binary.c) ---- */

/* A packet into p: magic, opcode, key, extras, value, opaque, cas, status
 * (a reply's) or 0.  Returns its length. */
static size_t pkt(char *p, uint8_t magic, uint8_t op, const char *key, const char *ext,
                  size_t extlen, const char *val, size_t vlen, uint32_t opaque, uint64_t cas,
                  uint16_t status)
{
    size_t klen = strlen(key), body = extlen + klen + vlen;
    unsigned char *u = (unsigned char *)p;
    memset(u, 0, 24);
    u[0] = magic;
    u[1] = op;
    u[2] = (unsigned char)(klen >> 8);
    u[3] = (unsigned char)klen;
    u[4] = (unsigned char)extlen;
    u[6] = (unsigned char)(status >> 8);
    u[7] = (unsigned char)status;
    for (int i = 0; i < 4; i++)
        u[8 + i] = (unsigned char)(body >> (24 - 8 * i));
    memcpy(u + 12, &opaque, 4);
    for (int i = 0; i < 8; i++)
        u[16 + i] = (unsigned char)(cas >> (56 - 8 * i));
    memcpy(p + 24, ext, extlen);
    memcpy(p + 24 + extlen, key, klen);
    memcpy(p + 24 + extlen + klen, val, vlen);
    return 24 + body;
}
#define REQ(p, op, key, ext, extlen, val, vlen, opaque) \
    pkt((p), 0x80, (op), (key), (ext), (extlen), (val), (vlen), (opaque), 0, 0)
#define RES(p, op, key, ext, extlen, val, vlen, opaque, cas, status) \
    pkt((p), 0x81, (op), (key), (ext), (extlen), (val), (vlen), (opaque), (cas), (status))

/* in (n bytes) whole, byte by byte and cut at every byte: want each time. */
static void binary_all_ways(const char *name, const char *in, size_t n, const char *want,
                            size_t nwant, int rc)
{
    char label[160];
    for (size_t cut = 0; cut <= n; cut++) {
        for (int bytes = 0; bytes < (cut == 0 ? 2 : 1); bytes++) {
            client k;
            world_fresh();
            client_open(&k);
            if (bytes) {
                for (size_t i = 0; i < n; i++)
                    client_send(&k, in + i, 1);
            } else if (cut == 0) {
                client_send(&k, in, n);
            } else {
                client_send(&k, in, cut);
                client_send(&k, in + cut, n - cut);
            }
            snprintf(label, sizeof(label), "binary: %s (%s %zu)", name,
                     bytes ? "byte by byte" : cut ? "cut at" : "whole", cut);
            CHECK_WIRE(k.out ? k.out : "", k.nout, want, nwant, label);
            CHECK(k.rc == rc);
            client_close(&k);
        }
    }
    CHECK(bufs_out == 0);
}

static void test_binary(void)
{
    static const char flags5[8] = {0, 0, 0, 5, 0, 0, 0, 0};
    static const char flags[4] = {0, 0, 0, 5};
    char in[1024], want[1024];
    size_t n = 0, m = 0;
    /* a set, a getk hit, a quiet miss (no reply) and the noop ending them */
    n += REQ(in + n, 0x01, "a", flags5, 8, "abc", 3, 1);
    n += REQ(in + n, 0x0c, "a", "", 0, "", 0, 2);
    n += REQ(in + n, 0x09, "zz", "", 0, "", 0, 3);
    n += REQ(in + n, 0x0a, "", "", 0, "", 0, 4);
    m += RES(want + m, 0x01, "", "", 0, "", 0, 1, 1, 0);
    m += RES(want + m, 0x0c, "a", flags, 4, "abc", 3, 2, 1, 0);
    m += RES(want + m, 0x0a, "", "", 0, "", 0, 4, 0, 0);
    binary_all_ways("set, getk, getq miss, noop", in, n, want, m, MP_PROC_NEED_INPUT);

    /* a miss's error body; an unknown opcode swallows its body */
    n = m = 0;
    n += REQ(in + n, 0x00, "nope", "", 0, "", 0, 7);
    n += REQ(in + n, 0x1b, "", "", 0, "xyz", 3, 8);
    n += REQ(in + n, 0x0b, "", "", 0, "", 0, 9);
    m += RES(want + m, 0x00, "", "", 0, "Not found", 9, 7, 0, 1);
    m += RES(want + m, 0x1b, "", "", 0, "Unknown command", 15, 8, 0, 0x81);
    m += RES(want + m, 0x0b, "", "", 0, MP_VERSION, strlen(MP_VERSION), 9, 0, 0);
    binary_all_ways("miss, unknown opcode, version", in, n, want, m, MP_PROC_NEED_INPUT);

    /* a bad magic byte closes: the replies not yet sent go with it */
    n = 0;
    n += REQ(in + n, 0x01, "a", flags5, 8, "abc", 3, 1);
    n += pkt(in + n, 0x81, 0x00, "", "", 0, "", 0, 0, 0, 0);
    {
        client k;
        world_fresh();
        client_open(&k);
        client_send(&k, in, n);
        CHECK(k.rc == MP_PROC_CLOSE && k.nout == 0);
        client_close(&k);
    }

    /* a key longer than memcached's: Invalid arguments, then closed */
    char key[252];
    memset(key, 'k', 251);
    key[251] = '\0';
    n = REQ(in, 0x00, key, "", 0, "", 0, 5);
    m = RES(want, 0x00, "", "", 0, "Invalid arguments", 17, 5, 0, 4);
    binary_all_ways("key too long", in, n, want, m, MP_PROC_CLOSE);
}

int main(void)
{
    mp_clock_init();
    settings_default();
    test_cases();
    test_store_state();
    test_counters();
    test_hooks();
    test_close();
    test_budget();
    test_too_large();
    test_large_values();
    test_highwater_multiget();
    test_cull_on_bad_key();
    test_dumps();
    test_auth_file();
    test_auth_cases();
    test_auth_session();
    test_auth_random();
    test_binary();
    CHECK(bufs_out == 0);
    mp_store_destroy(st);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
