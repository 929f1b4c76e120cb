/*
 * loadgen: a memcached text-protocol load generator that can saturate a server
 * from one core.
 *
 * One thread, nonblocking sockets on level-triggered epoll, N connection
 * "slots".  Each slot is a persistent connection (one or D requests in flight)
 * or, in churn mode, a cycle of connect -> R requests -> close -> connect.
 *
 * Every reply is parsed and checked against what the request must produce:
 * values are a deterministic function of the key (so a get can be checked
 * byte for byte, and flags too), set must answer STORED, a multi-get must
 * answer its keys in request order.  A wrong, unexpected or missing reply
 * (including one that does not arrive within --timeout, or a connection the
 * server closes) is an error; any error makes the exit status 1, so a report
 * never comes from a run that served nonsense.
 *
 * Timing: a warm-up, then a measured window of --duration seconds; only
 * replies received inside the window count.  At the window's edges the
 * server's CPU time is read from each /proc/PID/task/TID/schedstat (--server-pid) and its
 * `stats` are fetched (--stats) so the report can give CPU and counters per
 * request over exactly the window the requests were counted in.
 *
 * --tls speaks TLS on every connection (OpenSSL, nonblocking; no certificate
 * check, no session resumption: each churn connection is a full handshake, as
 * a client without a session cache makes), with `stats` fetched from a
 * plaintext --stats-port (mpcache's and memcached's notls: listener).  Built
 * with LOADGEN_TLS where OpenSSL's headers are (bench/Makefile).
 *
 * Exit status: 0 clean run, 1 errors, 2 usage or setup failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifdef LOADGEN_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Caps, each with its reason. */
#define MAX_EVENTS 256          /* events per epoll_wait: enough to batch, small enough to stay in cache */
#define MAX_MGET 100            /* keys per multi-get: memcached's own key-count limits are far above */
#define MAX_DEPTH 1024          /* pipeline depth: beyond this the server's socket buffers are the limit */
#define MAX_VALUE (1 << 20)     /* value size: memcached's default item size limit (-I 1m) */
#define MAX_SRC_ADDRS 16        /* source addresses 127.0.0.1..16: 16 x ~28k ephemeral ports */
#define MAX_LINE 2048           /* a reply line longer than this is garbage, not a slow reply */
#define IN_BUF_MIN 16384        /* first receive buffer; grows to hold one whole VALUE item */
#define VALUE_SPREAD 251        /* value of key k starts at pattern[k % 251]: a prime, so neighbours differ */
#define STATS_MAX 512           /* `stats` lines kept per snapshot */
#define PRELOAD_DEPTH 64        /* sets in flight per connection while preloading */

/* ---------------------------------------------------------------- config */

struct config {
    const char *host;
    int port;
    int conns;
    int depth;
    int mget;
    int reqs_per_conn;          /* 0: persistent connections */
    double get_ratio;
    int value_size;
    uint64_t keys;
    const char *prefix;
    double zipf;                /* 0: uniform */
    double duration;
    double warmup;
    int preload;
    int preload_only;
    int preloaded;              /* an earlier run stored every key */
    int fill_on_miss;           /* hit-ratio mode: get, and set on a miss */
    int allow_miss;
    int src_addrs;
    int linger0;
    int nodelay;
    double timeout;
    uint64_t seed;
    int json;
    int server_pid;
    int stats;
    int max_error_msgs;
    const char *label;
    int tls;
    int stats_port;             /* 0: --port */
};

static struct config cfg = {
    .host = "127.0.0.1", .port = 0, .conns = 50, .depth = 1, .mget = 1,
    .reqs_per_conn = 0, .get_ratio = 1.0, .value_size = 32, .keys = 10000,
    .prefix = "key:", .zipf = 0.0, .duration = 5.0, .warmup = 1.0,
    .preload = 0, .src_addrs = 0, .linger0 = 0, .nodelay = 1, .timeout = 5.0,
    .seed = 1, .json = 0, .server_pid = 0, .stats = 0, .max_error_msgs = 10,
    .label = "",
};

/* ---------------------------------------------------------------- time, rng */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state;

static inline uint64_t rng_next(void)
{
    /* splitmix64: fast, good enough for picking keys, reproducible by --seed */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double rng_unit(void)
{
    return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0);
}

/* ---------------------------------------------------------------- histogram */

/*
 * Log-linear buckets as in HdrHistogram: values below 2^SUB_BITS are exact,
 * above that each power of two is cut into HALF linear sub-buckets, so any
 * recorded value is known to within 1/HALF (1.6%) of itself.
 */
#define HIST_SUB_BITS 7
#define HIST_HALF (1 << (HIST_SUB_BITS - 1))
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_HALF + HIST_HALF)

struct hist {
    uint64_t count[HIST_BUCKETS];
    uint64_t total;
    uint64_t max;
    double sum;
};

static inline int hist_index(uint64_t v)
{
    if (v < (1u << HIST_SUB_BITS))
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - (HIST_SUB_BITS - 1);
    return shift * HIST_HALF + (int)(v >> shift);
}

/* The highest value that falls in bucket idx: percentiles never understate. */
static uint64_t hist_value(int idx)
{
    if (idx < (1 << HIST_SUB_BITS))
        return (uint64_t)idx;
    int shift = idx / HIST_HALF - 1;
    uint64_t mant = (uint64_t)(idx - shift * HIST_HALF);
    return ((mant + 1) << shift) - 1;
}

static inline void hist_record(struct hist *h, uint64_t v)
{
    h->count[hist_index(v)]++;
    h->total++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
}

static uint64_t hist_percentile(const struct hist *h, double p)
{
    if (h->total == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->total);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= want) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---------------------------------------------------------------- keys, values */

static int key_digits;          /* every key has the same length */
static int key_len;
static char *pattern;           /* value of key k is pattern + k % VALUE_SPREAD */
static double *zipf_cdf;

static inline int key_format(char *dst, uint64_t k)
{
    int plen = (int)strlen(cfg.prefix);
    memcpy(dst, cfg.prefix, (size_t)plen);
    char *d = dst + plen + key_digits;
    for (int i = 0; i < key_digits; i++) {
        *--d = (char)('0' + k % 10);
        k /= 10;
    }
    dst[plen + key_digits] = 0;     /* callers overwrite it, error messages need it */
    return plen + key_digits;
}

static inline const char *value_of(uint64_t k)
{
    return pattern + k % VALUE_SPREAD;
}

static inline uint32_t flags_of(uint64_t k)
{
    return (uint32_t)(k * 2654435761u) & 0xffff;
}

static void zipf_init(void)
{
    zipf_cdf = malloc(sizeof(double) * cfg.keys);
    if (!zipf_cdf) {
        fprintf(stderr, "loadgen: no memory for a Zipf table of %" PRIu64 " keys\n", cfg.keys);
        exit(2);
    }
    double sum = 0;
    for (uint64_t i = 0; i < cfg.keys; i++) {
        sum += 1.0 / pow((double)(i + 1), cfg.zipf);
        zipf_cdf[i] = sum;
    }
    for (uint64_t i = 0; i < cfg.keys; i++)
        zipf_cdf[i] /= sum;
}

/*
 * Rank r of a Zipf draw is spread over the key space by a multiplicative
 * permutation, so hot keys are not also neighbours in key order.
 */
static uint64_t zipf_mult;

static inline uint64_t key_next(void)
{
    if (cfg.zipf <= 0)
        return rng_next() % cfg.keys;
    double u = rng_unit();
    uint64_t lo = 0, hi = cfg.keys - 1;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (zipf_cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (uint64_t)(((unsigned __int128)lo * zipf_mult) % cfg.keys);
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* ---------------------------------------------------------------- errors */

static uint64_t errors;

static void error_at(const char *fmt, ...)
{
    errors++;
    if (errors > (uint64_t)cfg.max_error_msgs)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: error: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Printable form of a reply excerpt for error messages. */
static const char *excerpt(const char *p, size_t n)
{
    static char buf[96];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < sizeof(buf); i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '\r') { buf[o++] = '\\'; buf[o++] = 'r'; }
        else if (ch == '\n') { buf[o++] = '\\'; buf[o++] = 'n'; }
        else if (isprint(ch)) buf[o++] = (char)ch;
        else o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\\x%02x", ch);
    }
    buf[o] = 0;
    return buf;
}

/* ---------------------------------------------------------------- connections */

enum req_type { REQ_GET, REQ_SET };

struct pending {
    uint8_t type;
    uint8_t fill;               /* a set issued because the get before it missed */
    uint16_t nkeys;
    uint64_t sent_ns;
};

enum conn_state { CONN_IDLE, CONN_CONNECTING, CONN_OPEN };

struct conn {
    int fd;
    int state;
#ifdef LOADGEN_TLS
    SSL *ssl;                   /* --tls */
#endif
    int idx;
    int want_out;               /* EPOLLOUT registered */
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_off, out_len, out_cap;
    struct pending *q;          /* ring of requests in flight, oldest first */
    uint64_t *qkeys;            /* their keys: MAX keys per request, same ring index */
    int q_head, q_count, q_cap;
    int mget_pos;               /* keys of the oldest request already answered or skipped */
    int issued;                 /* requests issued on this connection (churn counts to R) */
    int answered;
    int has_fill;
    uint64_t fill_key;
    uint64_t open_ns;
};

/* What the loop is doing. */
enum phase { PH_PRELOAD, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

static int ep;
#ifdef LOADGEN_TLS
static SSL_CTX *tls_ctx;
#endif
static struct conn *conns;
static int nconns;
static int phase;
static int depth;               /* in flight per connection, this phase */
static int reqs_per_conn;       /* this phase: 0 = persistent */
static uint64_t preload_next;   /* next key to preload */
static unsigned src_rr;
static int nlive;               /* slots with a socket: none left means nothing more can happen */

/* counters: totals over the whole run, and the measured window */
struct counters {
    uint64_t requests, gets, sets, keys_req, hits, misses, fills, conns_done, conns_opened;
};
static struct counters total, win;
static struct hist lat_hist, conn_hist;
static uint64_t bytes_in, bytes_out;

static void conn_close(struct conn *c);
static void conn_open(struct conn *c);
static int conn_flush(struct conn *c);

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "loadgen: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return q;
}

static void out_reserve(struct conn *c, size_t n)
{
    if (c->out_len + n <= c->out_cap)
        return;
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_len + n <= c->out_cap)
            return;
    }
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + n)
        cap *= 2;
    c->out = xrealloc(c->out, cap);
    c->out_cap = cap;
}

static int epoll_set(struct conn *c, int op, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = c };
    return epoll_ctl(ep, op, c->fd, &ev);
}

static void want_out(struct conn *c, int on)
{
    if (c->want_out == on)
        return;
    c->want_out = on;
    if (epoll_set(c, EPOLL_CTL_MOD, EPOLLIN | (on ? EPOLLOUT : 0)) < 0)
        error_at("epoll_ctl: %s", strerror(errno));
}

/* ---------------------------------------------------------------- requests */

static inline char *put_u64(char *d, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *d++ = tmp[--n];
    return d;
}

static void push_pending(struct conn *c, int type, int nkeys, const uint64_t *keys, int fill, uint64_t now)
{
    int slot = (c->q_head + c->q_count) % c->q_cap;
    struct pending *p = &c->q[slot];
    p->type = (uint8_t)type;
    p->fill = (uint8_t)fill;
    p->nkeys = (uint16_t)nkeys;
    p->sent_ns = now;
    memcpy(&c->qkeys[(size_t)slot * cfg.mget], keys, sizeof(uint64_t) * (size_t)nkeys);
    c->q_count++;
    c->issued++;
}

static void build_set(struct conn *c, uint64_t k, int fill, uint64_t now)
{
    out_reserve(c, (size_t)key_len + (size_t)cfg.value_size + 64);
    char *d = c->out + c->out_len;
    memcpy(d, "set ", 4);
    d += 4;
    d += key_format(d, k);
    *d++ = ' ';
    d = put_u64(d, flags_of(k));
    memcpy(d, " 0 ", 3);
    d += 3;
    d = put_u64(d, (uint64_t)cfg.value_size);
    *d++ = '\r';
    *d++ = '\n';
    memcpy(d, value_of(k), (size_t)cfg.value_size);
    d += cfg.value_size;
    *d++ = '\r';
    *d++ = '\n';
    c->out_len = (size_t)(d - c->out);
    push_pending(c, REQ_SET, 1, &k, fill, now);
}

static void build_get(struct conn *c, int nkeys, uint64_t now)
{
    uint64_t keys[MAX_MGET];
    out_reserve(c, (size_t)nkeys * ((size_t)key_len + 1) + 8);
    char *d = c->out + c->out_len;
    memcpy(d, "get", 3);
    d += 3;
    for (int i = 0; i < nkeys; i++) {
        keys[i] = key_next();
        *d++ = ' ';
        d += key_format(d, keys[i]);
    }
    *d++ = '\r';
    *d++ = '\n';
    c->out_len = (size_t)(d - c->out);
    push_pending(c, REQ_GET, nkeys, keys, 0, now);
}

/* May this connection issue another request now? */
static inline int may_issue(struct conn *c)
{
    if (c->q_count >= depth)
        return 0;
    if (c->has_fill)
        return phase != PH_DONE;
    if (phase == PH_PRELOAD)
        return preload_next < cfg.keys;
    if (phase != PH_WARMUP && phase != PH_MEASURE)
        return 0;
    return reqs_per_conn == 0 || c->issued < reqs_per_conn;
}

static void conn_fill(struct conn *c, uint64_t now)
{
    while (may_issue(c)) {
        if (c->has_fill) {
            c->has_fill = 0;
            build_set(c, c->fill_key, 1, now);
        } else if (phase == PH_PRELOAD) {
            build_set(c, preload_next++, 0, now);
        } else if (cfg.get_ratio >= 1.0 || rng_unit() < cfg.get_ratio) {
            build_get(c, cfg.mget, now);
        } else {
            build_set(c, key_next(), 0, now);
        }
    }
}

/* ---------------------------------------------------------------- replies */

static inline void count_done(struct conn *c, const struct pending *p, uint64_t now)
{
    struct counters *w = phase == PH_MEASURE ? &win : NULL;
    total.requests++;
    if (p->type == REQ_GET) {
        total.gets++;
        total.keys_req += p->nkeys;
    } else {
        total.sets++;
        total.fills += p->fill;
    }
    if (w) {
        w->requests++;
        if (p->type == REQ_GET) {
            w->gets++;
            w->keys_req += p->nkeys;
        } else {
            w->sets++;
            w->fills += p->fill;
        }
        hist_record(&lat_hist, now - p->sent_ns);
    }
    c->answered++;
}

static inline void count_hit(int hit)
{
    if (hit) {
        total.hits++;
        if (phase == PH_MEASURE)
            win.hits++;
    } else {
        total.misses++;
        if (phase == PH_MEASURE)
            win.misses++;
    }
}

/* A miss is an error only where every key must be there: after a preload. */
static inline int miss_is_error(void)
{
    return (cfg.preload || cfg.preloaded) && !cfg.fill_on_miss && !cfg.allow_miss && phase != PH_PRELOAD;
}

static inline char *find_crlf(char *p, char *end)
{
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl || nl == p || nl[-1] != '\r')
        return nl ? (char *)-1 : NULL;
    return nl - 1;
}

/*
 * Parse as many whole replies as the buffer holds.  Returns 0, or -1 after an
 * error (the connection is out of step with its requests and must close).
 */
static int parse_replies(struct conn *c, uint64_t now)
{
    char *p = c->in, *end = c->in + c->in_len;
    char keybuf[512];

    while (c->q_count > 0 && p < end) {
        struct pending *pd = &c->q[c->q_head];
        uint64_t *keys = &c->qkeys[(size_t)c->q_head * cfg.mget];
        char *cr = find_crlf(p, end);
        if (cr == (char *)-1) {
            error_at("conn %d: reply line without \\r\\n: '%s'", c->idx, excerpt(p, (size_t)(end - p)));
            return -1;
        }
        if (!cr) {
            if (end - p > MAX_LINE) {
                error_at("conn %d: reply line over %d bytes: '%s'", c->idx, MAX_LINE, excerpt(p, 40));
                return -1;
            }
            break;
        }
        size_t llen = (size_t)(cr - p);

        if (pd->type == REQ_SET) {
            if (llen != 6 || memcmp(p, "STORED", 6) != 0) {
                error_at("conn %d: set %s: expected STORED, got '%s'", c->idx,
                         (key_format(keybuf, keys[0]), keybuf), excerpt(p, llen));
                return -1;
            }
            p = cr + 2;
            count_done(c, pd, now);
            c->q_head = (c->q_head + 1) % c->q_cap;
            c->q_count--;
            continue;
        }

        /* get: VALUE items for the keys that hit, in request order, then END */
        if (llen == 3 && memcmp(p, "END", 3) == 0) {
            int missed = pd->nkeys - c->mget_pos;
            for (int i = 0; i < missed; i++)
                count_hit(0);
            if (missed && miss_is_error()) {
                key_format(keybuf, keys[c->mget_pos]);
                error_at("conn %d: get %s: miss on a preloaded key", c->idx, keybuf);
                return -1;
            }
            if (missed && cfg.fill_on_miss && pd->nkeys == 1 && phase != PH_DRAIN) {
                c->has_fill = 1;
                c->fill_key = keys[0];
            }
            p = cr + 2;
            c->mget_pos = 0;
            count_done(c, pd, now);
            c->q_head = (c->q_head + 1) % c->q_cap;
            c->q_count--;
            continue;
        }
        if (llen < 6 || memcmp(p, "VALUE ", 6) != 0) {
            error_at("conn %d: get: expected VALUE or END, got '%s'", c->idx, excerpt(p, llen));
            return -1;
        }
        /* VALUE <key> <flags> <bytes> */
        char *k = p + 6, *sp = memchr(k, ' ', (size_t)(cr - k));
        if (!sp) {
            error_at("conn %d: malformed VALUE line '%s'", c->idx, excerpt(p, llen));
            return -1;
        }
        size_t klen = (size_t)(sp - k);
        char *q = sp + 1, *ep_;
        errno = 0;
        unsigned long flags = strtoul(q, &ep_, 10);
        if (ep_ == q || *ep_ != ' ' || errno) {
            error_at("conn %d: malformed VALUE line '%s'", c->idx, excerpt(p, llen));
            return -1;
        }
        q = ep_ + 1;
        unsigned long bytes = strtoul(q, &ep_, 10);
        if (ep_ == q || ep_ != cr || errno) {
            error_at("conn %d: malformed VALUE line '%s'", c->idx, excerpt(p, llen));
            return -1;
        }
        /* which requested key is it: the next one, or a later one after misses */
        int pos = c->mget_pos;
        for (; pos < pd->nkeys; pos++) {
            int kl = key_format(keybuf, keys[pos]);
            if ((size_t)kl == klen && memcmp(keybuf, k, klen) == 0)
                break;
        }
        if (pos == pd->nkeys) {
            error_at("conn %d: VALUE for key '%s' that was not requested (or out of order)",
                     c->idx, excerpt(k, klen));
            return -1;
        }
        uint64_t key = keys[pos];
        if (bytes != (unsigned long)cfg.value_size || flags != flags_of(key)) {
            error_at("conn %d: key %s: flags %lu bytes %lu, expected flags %u bytes %d",
                     c->idx, keybuf, flags, bytes, flags_of(key), cfg.value_size);
            return -1;
        }
        size_t item = llen + 2 + bytes + 2;
        if ((size_t)(end - p) < item) {
            /* wait for the rest of the item; make room for it */
            size_t need = item + (size_t)(p - c->in);
            if (need > c->in_cap) {
                size_t have = (size_t)(end - p);
                memmove(c->in, p, have);
                c->in_len = have;
                size_t cap = c->in_cap;
                while (cap < item + MAX_LINE)
                    cap *= 2;
                if (cap != c->in_cap) {
                    c->in = xrealloc(c->in, cap);
                    c->in_cap = cap;
                }
                return 0;
            }
            break;
        }
        char *data = cr + 2;
        if (memcmp(data, value_of(key), bytes) != 0 || data[bytes] != '\r' || data[bytes + 1] != '\n') {
            error_at("conn %d: key %s: wrong value data '%s'", c->idx, keybuf,
                     excerpt(data, bytes + 2 < 40 ? bytes + 2 : 40));
            return -1;
        }
        for (int i = c->mget_pos; i < pos; i++)
            count_hit(0);
        if (pos > c->mget_pos && miss_is_error()) {
            key_format(keybuf, keys[c->mget_pos]);
            error_at("conn %d: get %s: miss on a preloaded key", c->idx, keybuf);
            return -1;
        }
        count_hit(1);
        c->mget_pos = pos + 1;
        p += item;
    }

    if (c->q_count == 0 && p < end) {
        error_at("conn %d: %zu bytes nobody asked for: '%s'", c->idx, (size_t)(end - p),
                 excerpt(p, (size_t)(end - p)));
        return -1;
    }
    size_t left = (size_t)(end - p);
    if (left && p != c->in)
        memmove(c->in, p, left);
    c->in_len = left;
    return 0;
}

/* ---------------------------------------------------------------- socket I/O */

/* One send (or SSL_write): bytes taken, or -1 with errno (EAGAIN: later). */
static ssize_t conn_send(struct conn *c, const char *p, size_t n)
{
#ifdef LOADGEN_TLS
    if (c->ssl) {
        int r = SSL_write(c->ssl, p, (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        ERR_clear_error();
        errno = (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) ? EAGAIN : EPROTO;
        return -1;
    }
#endif
    return send(c->fd, p, n, MSG_NOSIGNAL);
}

/* One recv (or SSL_read): bytes, 0 at the end, or -1 with errno. */
static ssize_t conn_recv(struct conn *c, char *p, size_t n)
{
#ifdef LOADGEN_TLS
    if (c->ssl) {
        int r = SSL_read(c->ssl, p, (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        ERR_clear_error();
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
            return 0;
        if (e == SSL_ERROR_SYSCALL)
            return -1;
        errno = (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? EAGAIN : EPROTO;
        return -1;
    }
#endif
    return recv(c->fd, p, n, 0);
}

static int conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = conn_send(c, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                want_out(c, 1);
                return 0;
            }
            if (errno == EINTR)
                continue;
            return -errno;
        }
        bytes_out += (uint64_t)n;
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    if (c->want_out && c->state == CONN_OPEN)
        want_out(c, 0);
    return 0;
}

static int reopen_wanted(void)
{
    if (phase == PH_PRELOAD)
        return preload_next < cfg.keys;
    return phase == PH_WARMUP || phase == PH_MEASURE;
}

static void conn_reset(struct conn *c)
{
    c->fd = -1;
    c->state = CONN_IDLE;
    c->want_out = 0;
    c->in_len = 0;
    c->out_off = c->out_len = 0;
    c->q_head = c->q_count = 0;
    c->mget_pos = 0;
    c->issued = c->answered = 0;
    c->has_fill = 0;
}

static void conn_close(struct conn *c)
{
#ifdef LOADGEN_TLS
    /* no close_notify: the socket's close ends it, as most clients do */
    SSL_free(c->ssl);
    c->ssl = NULL;
#endif
    if (c->fd >= 0) {
        close(c->fd);   /* also leaves the epoll set */
        nlive--;
    }
    conn_reset(c);
}

/* An error on c: drop it, and keep the slot busy if the run goes on. */
static void conn_fail(struct conn *c, uint64_t now)
{
    (void)now;
    conn_close(c);
    if (reopen_wanted())
        conn_open(c);
}

static void conn_established(struct conn *c, uint64_t now)
{
    c->state = CONN_OPEN;
    total.conns_opened++;
    if (phase == PH_MEASURE)
        win.conns_opened++;
    (void)now;
}

static void conn_open(struct conn *c)
{
    uint64_t now = now_ns();
    conn_reset(c);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_at("socket: %s", strerror(errno));
        return;
    }
    c->fd = fd;
    nlive++;
    int one = 1;
    if (cfg.nodelay)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (cfg.linger0) {
        struct linger l = { .l_onoff = 1, .l_linger = 0 };
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    if (cfg.src_addrs > 1) {
        /* the port is picked at connect() by the whole 4-tuple, not at bind() */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in src = { .sin_family = AF_INET };
        src.sin_addr.s_addr = htonl(0x7f000001u + (src_rr++ % (unsigned)cfg.src_addrs));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
            error_at("bind source address: %s", strerror(errno));
            conn_close(c);
            return;
        }
    }
    struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)cfg.port) };
    inet_pton(AF_INET, cfg.host, &dst.sin_addr);
    c->open_ns = now;
    c->state = CONN_CONNECTING;
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
        error_at("connect: %s", strerror(errno));
        conn_close(c);
        return;
    }
#ifdef LOADGEN_TLS
    if (cfg.tls) {
        c->ssl = SSL_new(tls_ctx);
        if (c->ssl == NULL || !SSL_set_fd(c->ssl, fd)) {
            error_at("SSL_new failed");
            conn_close(c);
            return;
        }
        SSL_set_connect_state(c->ssl);
        /* the requests wait in the output for the handshake (handle_event) */
        conn_fill(c, now);
        c->want_out = 1;
        if (epoll_set(c, EPOLL_CTL_ADD, EPOLLIN | EPOLLOUT) < 0)
            error_at("epoll_ctl add: %s", strerror(errno));
        return;
    }
#endif
    /*
     * On loopback the handshake has usually finished by the time connect()
     * returns, so try to send at once: this saves the EPOLLOUT round and an
     * epoll_ctl per connection, which matters on churn.
     */
    conn_fill(c, now);
    ssize_t n = c->out_len ? send(fd, c->out, c->out_len, MSG_NOSIGNAL) : 0;
    if (n >= 0 && c->out_len) {
        bytes_out += (uint64_t)n;
        c->out_off = (size_t)n;
        conn_established(c, now);
        int partial = c->out_off < c->out_len;
        c->want_out = partial;
        if (!partial)
            c->out_off = c->out_len = 0;
        if (epoll_set(c, EPOLL_CTL_ADD, EPOLLIN | (partial ? EPOLLOUT : 0)) < 0)
            error_at("epoll_ctl add: %s", strerror(errno));
        return;
    }
    if (n < 0 && errno != EAGAIN && errno != ENOTCONN && errno != EWOULDBLOCK) {
        error_at("connect/send: %s", strerror(errno));
        conn_close(c);
        return;
    }
    c->want_out = 1;
    if (epoll_set(c, EPOLL_CTL_ADD, EPOLLIN | EPOLLOUT) < 0)
        error_at("epoll_ctl add: %s", strerror(errno));
}

static void conn_finish_if_done(struct conn *c, uint64_t now)
{
    /* churn: R answered -> close and start the next connection */
    if (reqs_per_conn > 0 && c->answered >= reqs_per_conn && c->q_count == 0 && !c->has_fill) {
        if (phase == PH_MEASURE) {
            win.conns_done++;
            hist_record(&conn_hist, now - c->open_ns);
        }
        total.conns_done++;
        conn_close(c);
        if (reopen_wanted())
            conn_open(c);
    }
}

static void handle_event(struct conn *c, uint32_t ev, uint64_t now)
{
    if (c->state == CONN_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            error_at("connect to %s:%d: %s", cfg.host, cfg.port, strerror(err));
            conn_close(c);
            return;
        }
        if (!(ev & (EPOLLOUT | EPOLLIN)))
            return;
#ifdef LOADGEN_TLS
        if (c->ssl) {
            int r = SSL_do_handshake(c->ssl);
            if (r != 1) {
                int e = SSL_get_error(c->ssl, r);
                ERR_clear_error();
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                    want_out(c, e == SSL_ERROR_WANT_WRITE);
                    return;
                }
                error_at("conn %d: TLS handshake failed (%d)", c->idx, e);
                conn_fail(c, now);
                return;
            }
            ev |= EPOLLOUT;   /* the requests queued meanwhile go now */
        }
#endif
        conn_established(c, now);
    }
    if (ev & EPOLLOUT) {
        int r = conn_flush(c);
        if (r < 0) {
            error_at("conn %d: send: %s", c->idx, strerror(-r));
            conn_fail(c, now);
            return;
        }
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (;;) {
            if (c->in_cap - c->in_len < 1024) {
                c->in_cap *= 2;
                c->in = xrealloc(c->in, c->in_cap);
            }
            ssize_t n = conn_recv(c, c->in + c->in_len, c->in_cap - c->in_len);
            if (n > 0) {
                bytes_in += (uint64_t)n;
                size_t room = c->in_cap - c->in_len;
                c->in_len += (size_t)n;
                if (parse_replies(c, now) < 0) {
                    conn_fail(c, now);
                    return;
                }
                if ((size_t)n == room || cfg.tls)
                    continue;   /* the buffer was filled (or OpenSSL holds more): there may be more */
                break;
            }
            if (n == 0) {
                if (c->q_count > 0)
                    error_at("conn %d: server closed the connection with %d replies missing",
                             c->idx, c->q_count);
                else
                    error_at("conn %d: server closed the connection", c->idx);
                conn_fail(c, now);
                return;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            error_at("conn %d: recv: %s", c->idx, strerror(errno));
            conn_fail(c, now);
            return;
        }
    }
    conn_finish_if_done(c, now);
    if (c->state == CONN_OPEN) {
        conn_fill(c, now);
        if (c->out_len > c->out_off) {
            int r = conn_flush(c);
            if (r < 0) {
                error_at("conn %d: send: %s", c->idx, strerror(-r));
                conn_fail(c, now);
            }
        }
    }
}

/*
 * Replies that do not come back are errors too, not just slow.  `now` is read
 * here, not passed in: connections opened while handling events carry newer
 * timestamps than the loop's.
 */
static void check_timeouts(void)
{
    uint64_t now = now_ns();
    uint64_t limit = (uint64_t)(cfg.timeout * 1e9);
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        if (c->state == CONN_CONNECTING && now - c->open_ns > limit) {
            error_at("conn %d: connect timed out after %.1f s", i, cfg.timeout);
            conn_fail(c, now);
        } else if (c->state == CONN_OPEN && c->q_count > 0 && now - c->q[c->q_head].sent_ns > limit) {
            error_at("conn %d: no reply within %.1f s (%d requests in flight)", i, cfg.timeout, c->q_count);
            conn_fail(c, now);
        }
    }
}

/* ---------------------------------------------------------------- server side */

/* The server's CPU time in nanoseconds.  The scheduler's own runtime of
 * every thread (/proc/PID/task/TID/schedstat, first field) is exact; the
 * utime+stime of /proc/PID/stat is sampled at the tick (4 ms at HZ=250),
 * and measured here it over-charged a server that sleeps in short bursts by
 * up to 20%, differently for each server.  stat is the fallback for kernels
 * without CONFIG_SCHED_INFO. */
static int read_schedstat_ns(int pid, uint64_t *ns)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    uint64_t sum = 0;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char p2[320];
        snprintf(p2, sizeof(p2), "/proc/%d/task/%s/schedstat", pid, e->d_name);
        FILE *f = fopen(p2, "r");
        if (!f)
            continue;   /* the thread just exited */
        unsigned long long run = 0;
        if (fscanf(f, "%llu", &run) == 1) {
            sum += run;
            found = 1;
        }
        fclose(f);
    }
    closedir(d);
    if (!found)
        return -1;
    *ns = sum;
    return 0;
}

static int read_proc_cpu(int pid, uint64_t *ns)
{
    if (read_schedstat_ns(pid, ns) == 0)
        return 0;
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    /* after "pid (comm)": field 3 is state; utime and stime are fields 14 and 15 */
    unsigned long long ut = 0, st = 0;
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
        field++;
        if (field == 14)
            ut = strtoull(tok, NULL, 10);
        else if (field == 15) {
            st = strtoull(tok, NULL, 10);
            break;
        }
    }
    *ns = (uint64_t)((ut + st) * (1e9 / (double)sysconf(_SC_CLK_TCK)));
    return 0;
}

struct stats_snap {
    int n;
    char name[STATS_MAX][80];
    double val[STATS_MAX];
    int numeric[STATS_MAX];
};

static struct stats_snap stats_a, stats_b;

/* A blocking side connection: `stats` (and `stats channels` if the server knows it). */
static int fetch_stats_cmd(const char *cmd, struct stats_snap *s, const char *group)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = { .tv_sec = 2 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int port = cfg.stats_port ? cfg.stats_port : cfg.port;
    struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, cfg.host, &dst.sin_addr);
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
        close(fd);
        return -1;
    }
    if (send(fd, cmd, strlen(cmd), MSG_NOSIGNAL) < 0) {
        close(fd);
        return -1;
    }
    static char buf[1 << 18];
    size_t len = 0;
    int done = 0;
    while (!done && len < sizeof(buf) - 1) {
        ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        if ((len >= 5 && memcmp(buf + len - 5, "END\r\n", 5) == 0) ||
            (len >= 7 && memcmp(buf + len - 7, "ERROR\r\n", 7) == 0))
            done = 1;
    }
    close(fd);
    if (!done)
        return -1;
    for (char *line = buf; *line;) {
        char *nl = strstr(line, "\r\n");
        if (!nl)
            break;
        *nl = 0;
        char name[64], value[128];
        if (sscanf(line, "STAT %63s %127s", name, value) == 2 && s->n < STATS_MAX) {
            if (group)
                snprintf(s->name[s->n], sizeof(s->name[0]), "%s:%s", group, name);
            else
                snprintf(s->name[s->n], sizeof(s->name[0]), "%s", name);
            char *e;
            s->val[s->n] = strtod(value, &e);
            s->numeric[s->n] = (e != value && *e == 0);
            s->n++;
        }
        line = nl + 2;
    }
    return 0;
}

static int fetch_stats(struct stats_snap *s)
{
    s->n = 0;
    if (fetch_stats_cmd("stats\r\n", s, NULL) < 0)
        return -1;
    /* mpcache's own totals (mpcache_syscalls, ...); memcached answers ERROR */
    fetch_stats_cmd("stats mpcache\r\n", s, NULL);
    /* mpcache's per-channel counters; memcached answers this with nothing useful */
    for (int i = 0; i < s->n; i++)
        if (strncmp(s->name[i], "mpcache_", 8) == 0) {
            fetch_stats_cmd("stats channels\r\n", s, "channels");
            break;
        }
    return 0;
}

/* ---------------------------------------------------------------- report */

struct window {
    double secs;
    uint64_t cpu_ns;
    int cpu_ok;
    double client_cpu;
    int stats_ok;
};

static double rusage_secs(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static const char *mode_name(void)
{
    if (cfg.preload_only)
        return "preload";
    if (cfg.fill_on_miss)
        return "hitratio";
    if (cfg.reqs_per_conn > 0)
        return "churn";
    if (cfg.mget > 1)
        return "multiget";
    if (cfg.depth > 1)
        return "pipeline";
    return "persistent";
}

static double stat_delta(const char *name, int *found)
{
    for (int i = 0; i < stats_b.n; i++) {
        if (strcmp(stats_b.name[i], name) != 0 || !stats_b.numeric[i])
            continue;
        for (int j = 0; j < stats_a.n; j++)
            if (strcmp(stats_a.name[j], name) == 0 && stats_a.numeric[j]) {
                *found = 1;
                return stats_b.val[i] - stats_a.val[j];
            }
    }
    *found = 0;
    return 0;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

/* A measurement that could not be taken is null, never a made-up number. */
static void json_num(FILE *f, double v, int prec)
{
    if (v < 0)
        fprintf(f, "null");
    else
        fprintf(f, "%.*f", prec, v);
}

static void report(const struct window *w)
{
    double secs = w->secs > 0 ? w->secs : 1e-9;
    double rps = (double)win.requests / secs;
    double cps = (double)win.conns_done / secs;
    uint64_t lookups = win.hits + win.misses;
    double hit_ratio = lookups ? (double)win.hits / (double)lookups : 0;
    double server_cpu = w->cpu_ok ? (double)w->cpu_ns / 1e9 : -1;
    double cpu_us_req = (w->cpu_ok && win.requests) ? server_cpu * 1e6 / (double)win.requests : -1;
    double cpu_us_conn = (w->cpu_ok && win.conns_done) ? server_cpu * 1e6 / (double)win.conns_done : -1;
    double p50 = hist_percentile(&lat_hist, 50) / 1e3, p90 = hist_percentile(&lat_hist, 90) / 1e3;
    double p99 = hist_percentile(&lat_hist, 99) / 1e3, p999 = hist_percentile(&lat_hist, 99.9) / 1e3;
    double lmax = lat_hist.max / 1e3, lmean = lat_hist.total ? lat_hist.sum / lat_hist.total / 1e3 : 0;

    if (!cfg.json) {
        printf("mode %s: conns %d depth %d mget %d reqs/conn %d get-ratio %.2f value %d B keys %" PRIu64
               " %s%s\n",
               mode_name(), cfg.conns, cfg.depth, cfg.mget, cfg.reqs_per_conn, cfg.get_ratio,
               cfg.value_size, cfg.keys, cfg.zipf > 0 ? "zipf " : "uniform", "");
        if (cfg.zipf > 0)
            printf("  zipf alpha %.3f\n", cfg.zipf);
        printf("window      %.3f s (warm-up %.1f s)\n", w->secs, cfg.warmup);
        printf("requests    %" PRIu64 "  %.0f/s  (gets %" PRIu64 ", sets %" PRIu64 ", keys %.0f/s)\n",
               win.requests, rps, win.gets, win.sets, (double)win.keys_req / secs);
        if (cfg.reqs_per_conn > 0)
            printf("connections %" PRIu64 "  %.0f/s  (connect to close p50 %.1f us, p99 %.1f us)\n",
                   win.conns_done, cps, hist_percentile(&conn_hist, 50) / 1e3,
                   hist_percentile(&conn_hist, 99) / 1e3);
        printf("lookups     hits %" PRIu64 " misses %" PRIu64 " hit ratio %.4f%s\n", win.hits, win.misses,
               hit_ratio, cfg.fill_on_miss ? " (set on miss)" : "");
        printf("latency us  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f\n", p50, p90, p99,
               p999, lmax, lmean);
        if (w->cpu_ok)
            printf("server cpu  %.3f s  %.2f us/request%s", server_cpu, cpu_us_req,
                   cfg.reqs_per_conn > 0 ? "" : "\n");
        if (w->cpu_ok && cfg.reqs_per_conn > 0)
            printf("  %.2f us/connection\n", cpu_us_conn);
        if (w->secs > 0.01)
            printf("client cpu  %.0f%% of one core\n", 100.0 * w->client_cpu / secs);
        if (w->stats_ok) {
            for (int i = 0; i < stats_b.n; i++) {
                int found;
                if (strncmp(stats_b.name[i], "mpcache_", 8) && strncmp(stats_b.name[i], "channels:", 9))
                    continue;
                double d = stat_delta(stats_b.name[i], &found);
                if (found && win.requests)
                    printf("server %-28s %.0f  (%.3f/request)\n", stats_b.name[i], d, d / (double)win.requests);
            }
        }
        printf("errors      %" PRIu64 "\n", errors);
        return;
    }

    FILE *f = stdout;
    fprintf(f, "{\"label\": ");
    json_str(f, cfg.label);
    fprintf(f, ", \"mode\": \"%s\", \"config\": {\"port\": %d, \"conns\": %d, \"depth\": %d, \"mget\": %d, "
               "\"reqs_per_conn\": %d, \"get_ratio\": %.4f, \"value_size\": %d, \"keys\": %" PRIu64 ", "
               "\"zipf\": %.4f, \"duration\": %.3f, \"warmup\": %.3f, \"preload\": %d, \"preloaded\": %d, \"fill_on_miss\": %d, "
               "\"src_addrs\": %d, \"linger0\": %d, \"nodelay\": %d, \"seed\": %" PRIu64 "},\n",
            mode_name(), cfg.port, cfg.conns, cfg.depth, cfg.mget, cfg.reqs_per_conn, cfg.get_ratio,
            cfg.value_size, cfg.keys, cfg.zipf, cfg.duration, cfg.warmup, cfg.preload, cfg.preloaded, cfg.fill_on_miss,
            cfg.src_addrs, cfg.linger0, cfg.nodelay, cfg.seed);
    fprintf(f, " \"window_s\": %.6f, \"requests\": %" PRIu64 ", \"requests_per_s\": %.1f, \"gets\": %" PRIu64
               ", \"sets\": %" PRIu64 ", \"fills\": %" PRIu64 ", \"keys_per_s\": %.1f,\n",
            w->secs, win.requests, rps, win.gets, win.sets, win.fills, (double)win.keys_req / secs);
    fprintf(f, " \"conns\": %" PRIu64 ", \"conns_per_s\": %.1f, \"conns_opened\": %" PRIu64
               ", \"hits\": %" PRIu64 ", \"misses\": %" PRIu64 ", \"hit_ratio\": %.6f,\n",
            win.conns_done, cps, win.conns_opened, win.hits, win.misses, hit_ratio);
    fprintf(f, " \"latency_us\": {\"p50\": %.2f, \"p90\": %.2f, \"p99\": %.2f, \"p999\": %.2f, \"max\": %.2f, "
               "\"mean\": %.2f, \"count\": %" PRIu64 "},\n",
            p50, p90, p99, p999, lmax, lmean, lat_hist.total);
    fprintf(f, " \"conn_latency_us\": {\"p50\": %.2f, \"p99\": %.2f, \"count\": %" PRIu64 "},\n",
            hist_percentile(&conn_hist, 50) / 1e3, hist_percentile(&conn_hist, 99) / 1e3, conn_hist.total);
    fprintf(f, " \"server_pid\": %d, \"server_cpu_s\": ", cfg.server_pid);
    json_num(f, w->cpu_ok ? server_cpu : -1, 4);
    fprintf(f, ", \"server_cpu_us_per_request\": ");
    json_num(f, cpu_us_req, 4);
    fprintf(f, ", \"server_cpu_us_per_conn\": ");
    json_num(f, cpu_us_conn, 4);
    fprintf(f, ",\n");
    fprintf(f, " \"client_cpu_s\": %.4f, \"client_busy\": ", w->client_cpu);
    json_num(f, w->secs > 0.01 ? w->client_cpu / secs : -1, 4);
    fprintf(f, ",\n");
    fprintf(f, " \"total\": {\"requests\": %" PRIu64 ", \"gets\": %" PRIu64 ", \"sets\": %" PRIu64
               ", \"keys\": %" PRIu64 ", \"conns_opened\": %" PRIu64 ", \"conns_done\": %" PRIu64
               ", \"bytes_in\": %" PRIu64 ", \"bytes_out\": %" PRIu64 "},\n",
            total.requests, total.gets, total.sets, total.keys_req, total.conns_opened, total.conns_done, bytes_in,
            bytes_out);
    fprintf(f, " \"server_stats_delta\": ");
    if (w->stats_ok) {
        fprintf(f, "{");
        int first = 1;
        for (int i = 0; i < stats_b.n; i++) {
            int found;
            double d = stat_delta(stats_b.name[i], &found);
            if (!found)
                continue;
            fprintf(f, "%s", first ? "" : ", ");
            json_str(f, stats_b.name[i]);
            fprintf(f, ": %.6g", d);
            first = 0;
        }
        fprintf(f, "},\n");
    } else {
        fprintf(f, "null,\n");
    }
    fprintf(f, " \"errors\": %" PRIu64 "}\n", errors);
}

/* ---------------------------------------------------------------- main loop */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int all_quiet(void)
{
    for (int i = 0; i < nconns; i++)
        if (conns[i].state != CONN_IDLE && (conns[i].q_count > 0 || conns[i].has_fill))
            return 0;
    return 1;
}

static int all_idle(void)
{
    for (int i = 0; i < nconns; i++)
        if (conns[i].state != CONN_IDLE)
            return 0;
    return 1;
}

/* Run the event loop until `until` returns nonzero.  Returns the time it stopped. */
static void loop(int (*until)(uint64_t now), uint64_t deadline_ns)
{
    struct epoll_event evs[MAX_EVENTS];
    uint64_t next_check = now_ns() + 100000000ull;
    for (;;) {
        uint64_t now = now_ns();
        if (until(now) || interrupted)
            return;
        if (nlive == 0) {
            error_at("no connection left to the server");
            return;
        }
        if (deadline_ns && now > deadline_ns)
            return;
        int n = epoll_wait(ep, evs, MAX_EVENTS, 10);
        if (n < 0 && errno != EINTR) {
            error_at("epoll_wait: %s", strerror(errno));
            return;
        }
        now = now_ns();
        for (int i = 0; i < n; i++)
            handle_event(evs[i].data.ptr, evs[i].events, now);
        if (now >= next_check) {
            check_timeouts();
            next_check = now + 100000000ull;
        }
    }
}

static uint64_t phase_end;

static int until_time(uint64_t now)
{
    return now >= phase_end;
}

static int until_preloaded(uint64_t now)
{
    (void)now;
    return preload_next >= cfg.keys && all_quiet();
}

static int until_quiet(uint64_t now)
{
    (void)now;
    return all_quiet();
}

static void open_all(void)
{
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == CONN_IDLE)
            conn_open(&conns[i]);
}

static void close_all(void)
{
    for (int i = 0; i < nconns; i++)
        if (conns[i].state != CONN_IDLE)
            conn_close(&conns[i]);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: loadgen -p PORT [options]\n"
        "  -s, --host ADDR        server address (127.0.0.1)\n"
        "  -p, --port PORT        server port (required)\n"
        "  -c, --conns N          concurrent connection slots (50)\n"
        "  -D, --depth D          requests in flight per connection (1); >1 pipelines\n"
        "  -K, --mget K           keys per get (1); >1 is a multi-get\n"
        "  -R, --reqs-per-conn R  churn: connect, R requests, close (0 = persistent)\n"
        "  -g, --get-ratio F      fraction of requests that are gets, the rest sets (1.0)\n"
        "  -v, --value-size B     value bytes, 1..%d (32)\n"
        "  -k, --keys N           key space size (10000)\n"
        "      --key-prefix S     key prefix (key:)\n"
        "  -z, --zipf ALPHA       Zipf-distributed keys (0 = uniform)\n"
        "  -d, --duration S       measured seconds (5)\n"
        "  -w, --warmup S         warm-up seconds before measuring (1)\n"
        "  -P, --preload          store every key before the run; then a miss is an error\n"
        "      --preload-only     store every key and exit\n"
        "      --preloaded        an earlier --preload-only stored every key: a miss is an error\n"
        "      --fill-on-miss     hit-ratio mode: get, and set the key when it missed\n"
        "      --allow-miss       misses are not errors even after --preload\n"
        "      --src-addrs N      spread connections over 127.0.0.1..N (default 16 in churn)\n"
        "      --linger0          close with SO_LINGER 0 (RST) instead of FIN\n"
        "      --no-nodelay       leave Nagle on\n"
        "      --timeout S        a reply later than this is an error (5)\n"
        "      --seed N           random seed (1)\n"
        "      --server-pid PID   report the server's CPU time per request (schedstat)\n"
        "      --stats            fetch `stats` at the window's edges and report deltas\n"
        "      --label S          a name for the run, echoed in the JSON\n"
        "      --max-error-msgs N error messages printed (10)\n"
        "      --json             JSON report on stdout\n"
        "      --tls              every connection over TLS (a build with OpenSSL)\n"
        "      --stats-port PORT  fetch `stats` from this port (plaintext), not --port\n",
        MAX_VALUE);
}

int main(int argc, char **argv)
{
    enum { O_PREFIX = 256, O_PRELOAD_ONLY, O_PRELOADED, O_FILL, O_ALLOW_MISS, O_SRC, O_LINGER0, O_NONODELAY, O_TIMEOUT,
           O_SEED, O_PID, O_STATS, O_LABEL, O_MAXERR, O_JSON, O_TLS, O_STATS_PORT };
    static const struct option opts[] = {
        {"host", required_argument, 0, 's'}, {"port", required_argument, 0, 'p'},
        {"conns", required_argument, 0, 'c'}, {"depth", required_argument, 0, 'D'},
        {"mget", required_argument, 0, 'K'}, {"reqs-per-conn", required_argument, 0, 'R'},
        {"get-ratio", required_argument, 0, 'g'}, {"value-size", required_argument, 0, 'v'},
        {"keys", required_argument, 0, 'k'}, {"key-prefix", required_argument, 0, O_PREFIX},
        {"zipf", required_argument, 0, 'z'}, {"duration", required_argument, 0, 'd'},
        {"warmup", required_argument, 0, 'w'}, {"preload", no_argument, 0, 'P'},
        {"preload-only", no_argument, 0, O_PRELOAD_ONLY},
        {"preloaded", no_argument, 0, O_PRELOADED}, {"fill-on-miss", no_argument, 0, O_FILL},
        {"allow-miss", no_argument, 0, O_ALLOW_MISS}, {"src-addrs", required_argument, 0, O_SRC},
        {"linger0", no_argument, 0, O_LINGER0}, {"no-nodelay", no_argument, 0, O_NONODELAY},
        {"timeout", required_argument, 0, O_TIMEOUT}, {"seed", required_argument, 0, O_SEED},
        {"server-pid", required_argument, 0, O_PID}, {"stats", no_argument, 0, O_STATS},
        {"label", required_argument, 0, O_LABEL}, {"max-error-msgs", required_argument, 0, O_MAXERR},
        {"json", no_argument, 0, O_JSON}, {"tls", no_argument, 0, O_TLS},
        {"stats-port", required_argument, 0, O_STATS_PORT}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "s:p:c:D:K:R:g:v:k:z:d:w:Ph", opts, NULL)) != -1) {
        switch (opt) {
        case 's': cfg.host = optarg; break;
        case 'p': cfg.port = atoi(optarg); break;
        case 'c': cfg.conns = atoi(optarg); break;
        case 'D': cfg.depth = atoi(optarg); break;
        case 'K': cfg.mget = atoi(optarg); break;
        case 'R': cfg.reqs_per_conn = atoi(optarg); break;
        case 'g': cfg.get_ratio = atof(optarg); break;
        case 'v': cfg.value_size = atoi(optarg); break;
        case 'k': cfg.keys = strtoull(optarg, NULL, 10); break;
        case 'z': cfg.zipf = atof(optarg); break;
        case 'd': cfg.duration = atof(optarg); break;
        case 'w': cfg.warmup = atof(optarg); break;
        case 'P': cfg.preload = 1; break;
        case O_PREFIX: cfg.prefix = optarg; break;
        case O_PRELOAD_ONLY: cfg.preload = cfg.preload_only = 1; break;
        case O_PRELOADED: cfg.preloaded = 1; break;
        case O_FILL: cfg.fill_on_miss = 1; break;
        case O_ALLOW_MISS: cfg.allow_miss = 1; break;
        case O_SRC: cfg.src_addrs = atoi(optarg); break;
        case O_LINGER0: cfg.linger0 = 1; break;
        case O_NONODELAY: cfg.nodelay = 0; break;
        case O_TIMEOUT: cfg.timeout = atof(optarg); break;
        case O_SEED: cfg.seed = strtoull(optarg, NULL, 10); break;
        case O_PID: cfg.server_pid = atoi(optarg); break;
        case O_STATS: cfg.stats = 1; break;
        case O_LABEL: cfg.label = optarg; break;
        case O_MAXERR: cfg.max_error_msgs = atoi(optarg); break;
        case O_JSON: cfg.json = 1; break;
        case O_TLS: cfg.tls = 1; break;
        case O_STATS_PORT: cfg.stats_port = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    const char *bad = NULL;
    struct in_addr tmp;
    if (cfg.port <= 0 || cfg.port > 65535) bad = "--port is required (1..65535)";
    else if (inet_pton(AF_INET, cfg.host, &tmp) != 1) bad = "--host must be an IPv4 address";
    else if (cfg.conns < 1 || cfg.conns > 100000) bad = "--conns must be 1..100000";
    else if (cfg.depth < 1 || cfg.depth > MAX_DEPTH) bad = "--depth out of range";
    else if (cfg.mget < 1 || cfg.mget > MAX_MGET) bad = "--mget out of range (1..100)";
    else if (cfg.reqs_per_conn < 0) bad = "--reqs-per-conn must be >= 0";
    else if (cfg.get_ratio < 0 || cfg.get_ratio > 1) bad = "--get-ratio must be 0..1";
    else if (cfg.value_size < 1 || cfg.value_size > MAX_VALUE) bad = "--value-size out of range";
    else if (cfg.keys < 1) bad = "--keys must be >= 1";
    else if (cfg.zipf < 0) bad = "--zipf must be >= 0";
    else if (cfg.duration <= 0 || cfg.warmup < 0) bad = "--duration must be > 0, --warmup >= 0";
    else if (cfg.src_addrs < 0 || cfg.src_addrs > MAX_SRC_ADDRS) bad = "--src-addrs must be 0..16";
    else if (cfg.fill_on_miss && (cfg.mget > 1 || cfg.depth > 1))
        bad = "--fill-on-miss works with single-key gets, one in flight per connection";
    else if (cfg.timeout <= 0) bad = "--timeout must be > 0";
    else if (cfg.stats_port < 0 || cfg.stats_port > 65535) bad = "--stats-port out of range";
    else if (cfg.tls && cfg.stats && !cfg.stats_port) bad = "--stats with --tls needs a plaintext --stats-port";
#ifndef LOADGEN_TLS
    else if (cfg.tls) bad = "--tls: this loadgen was built without OpenSSL";
#endif
    if (bad) {
        fprintf(stderr, "loadgen: %s\n", bad);
        usage(stderr);
        return 2;
    }
    if (cfg.src_addrs == 0)
        cfg.src_addrs = cfg.reqs_per_conn > 0 ? MAX_SRC_ADDRS : 1;

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    rng_state = cfg.seed;

    key_digits = 1;
    for (uint64_t m = cfg.keys - 1; m >= 10; m /= 10)
        key_digits++;
    key_len = (int)strlen(cfg.prefix) + key_digits;
    if (key_len > 250) {
        fprintf(stderr, "loadgen: keys would be %d bytes; memcached allows 250\n", key_len);
        return 2;
    }
    pattern = malloc((size_t)cfg.value_size + VALUE_SPREAD);
    if (!pattern)
        return 2;
    {
        uint64_t s = 0x5eed;
        for (int i = 0; i < cfg.value_size + VALUE_SPREAD; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            pattern[i] = (char)('!' + (s >> 33) % 94);   /* printable, no spaces */
        }
    }
    if (cfg.zipf > 0) {
        zipf_init();
        zipf_mult = 2654435761ull % cfg.keys;
        while (zipf_mult == 0 || gcd64(zipf_mult, cfg.keys) != 1)
            zipf_mult = (zipf_mult + 1) % cfg.keys;
        if (cfg.keys == 1)
            zipf_mult = 1;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)cfg.conns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

#ifdef LOADGEN_TLS
    if (cfg.tls) {
        tls_ctx = SSL_CTX_new(TLS_client_method());
        if (tls_ctx == NULL) {
            fprintf(stderr, "loadgen: SSL_CTX_new failed\n");
            return 2;
        }
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
#endif
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("epoll_create1");
        return 2;
    }
    nconns = cfg.conns;
    conns = calloc((size_t)nconns, sizeof(*conns));
    int qcap = cfg.depth > PRELOAD_DEPTH ? cfg.depth : PRELOAD_DEPTH;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        c->idx = i;
        c->in_cap = IN_BUF_MIN;
        c->in = xrealloc(NULL, c->in_cap);
        c->q_cap = qcap;
        c->q = xrealloc(NULL, sizeof(struct pending) * (size_t)qcap);
        c->qkeys = xrealloc(NULL, sizeof(uint64_t) * (size_t)qcap * (size_t)cfg.mget);
        conn_reset(c);
    }

    /* preload: persistent connections, sets pipelined */
    if (cfg.preload) {
        int saved = nconns;
        if (nconns > 16)
            nconns = 16;    /* a few connections fill the cache fastest */
        phase = PH_PRELOAD;
        depth = PRELOAD_DEPTH;
        reqs_per_conn = 0;
        preload_next = 0;
        open_all();
        loop(until_preloaded, now_ns() + (uint64_t)(600 * 1e9));
        if (preload_next < cfg.keys || !all_quiet())
            error_at("preload did not finish");
        close_all();
        nconns = saved;
        if (cfg.preload_only || errors || interrupted) {
            if (cfg.json)
                printf("{\"mode\": \"preload\", \"keys\": %" PRIu64 ", \"sets\": %" PRIu64 ", \"errors\": %" PRIu64 "}\n",
                       cfg.keys, total.sets, errors);
            else
                printf("preloaded %" PRIu64 " keys, errors %" PRIu64 "\n", cfg.keys, errors);
            return errors ? 1 : 0;
        }
    }

    phase = PH_WARMUP;
    depth = cfg.depth;
    reqs_per_conn = cfg.reqs_per_conn;
    open_all();
    phase_end = now_ns() + (uint64_t)(cfg.warmup * 1e9);
    loop(until_time, 0);

    /* the measured window */
    struct window w = {0};
    memset(&win, 0, sizeof(win));
    if (cfg.stats)
        w.stats_ok = fetch_stats(&stats_a) == 0;
    uint64_t cpu0 = 0, cpu1 = 0;
    if (cfg.server_pid)
        w.cpu_ok = read_proc_cpu(cfg.server_pid, &cpu0) == 0;
    double client0 = rusage_secs();
    uint64_t t0 = now_ns();
    phase = PH_MEASURE;
    phase_end = t0 + (uint64_t)(cfg.duration * 1e9);
    loop(until_time, 0);
    uint64_t t1 = now_ns();
    phase = PH_DRAIN;
    w.client_cpu = rusage_secs() - client0;
    if (w.cpu_ok)
        w.cpu_ok = read_proc_cpu(cfg.server_pid, &cpu1) == 0;
    w.cpu_ns = cpu1 - cpu0;
    if (w.stats_ok)
        w.stats_ok = fetch_stats(&stats_b) == 0;
    w.secs = (double)(t1 - t0) / 1e9;

    /* every request sent must be answered, even after the window */
    loop(until_quiet, now_ns() + (uint64_t)(cfg.timeout * 1e9));
    for (int i = 0; i < nconns; i++)
        if (conns[i].state != CONN_IDLE && conns[i].q_count > 0)
            error_at("conn %d: %d replies missing at the end of the run", i, conns[i].q_count);
    close_all();
    (void)all_idle;

    if (interrupted)
        error_at("interrupted");
    if (win.requests == 0)
        error_at("no request completed in the measured window");
    report(&w);
    if (errors)
        fprintf(stderr, "loadgen: %" PRIu64 " errors: this run's numbers are not valid\n", errors);
    return errors ? 1 : 0;
}
