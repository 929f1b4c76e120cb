/* Log watchers (watch.h): memcached 1.6.18's logger.c formats. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include "clock.h"
#include "decimal.h"
#include "io/conn.h"
#include "proto/dump.h"
#include "store/store.h"
#include "watch.h"

/* memcached's LOGGER_WATCHER_BUF_SIZE */
#define MP_WATCH_BUF (256 * 1024)
/* memcached's LOGGER_PARSE_SCRATCH: a line at most */
#define MP_WATCH_LINE 4096
/* memcached asks for a line plus this much room (a "skipped=" line) */
#define MP_WATCH_SLACK 128

typedef struct mp_watcher {
    struct mp_conn *c;           /* NULL: a free entry */
    void *owner;
    int kinds;
    uint64_t min_gid;
    uint64_t skipped;
    char *buf;                   /* a ring of MP_WATCH_BUF bytes */
    size_t head, len;
} mp_watcher;

struct mp_watch {
    pthread_mutex_t lock;
    uint64_t gid;
    uint64_t written, skipped, sent;   /* "stats" log_worker_written, ... */
    int count;
    mp_watcher w[MP_WATCH_MAX];
};

mp_watch *mp_watch_create(void)
{
    mp_watch *w = calloc(1, sizeof(*w));
    if (w != NULL)
        pthread_mutex_init(&w->lock, NULL);
    return w;
}

void mp_watch_destroy(mp_watch *w)
{
    if (w == NULL)
        return;
    for (int i = 0; i < MP_WATCH_MAX; i++)
        free(w->w[i].buf);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static void publish_kinds(mp_watch *w, int *kinds_out)
{
    int k = 0;
    for (int i = 0; i < MP_WATCH_MAX; i++)
        if (w->w[i].c != NULL)
            k |= w->w[i].kinds;
    __atomic_store_n(kinds_out, k, __ATOMIC_RELAXED);
}

static void ring_put(mp_watcher *x, const char *p, size_t n)
{
    size_t tail = (x->head + x->len) % MP_WATCH_BUF;
    size_t first = MP_WATCH_BUF - tail < n ? MP_WATCH_BUF - tail : n;
    memcpy(x->buf + tail, p, first);
    memcpy(x->buf, p + first, n - first);
    x->len += n;
}

int mp_watch_add(mp_watch *w, int *kinds_out, struct mp_conn *c, void *owner, int kinds)
{
    if (w == NULL)
        return -2;
    pthread_mutex_lock(&w->lock);
    if (w->count >= MP_WATCH_MAX) {
        pthread_mutex_unlock(&w->lock);
        return -1;
    }
    mp_watcher *x = NULL;
    for (int i = 0; i < MP_WATCH_MAX && x == NULL; i++)
        if (w->w[i].c == NULL)
            x = &w->w[i];
    if (x->buf == NULL)
        x->buf = malloc(MP_WATCH_BUF);
    if (x->buf == NULL) {
        pthread_mutex_unlock(&w->lock);
        return -2;
    }
    x->c = c;
    x->owner = owner;
    x->kinds = kinds;
    x->min_gid = ++w->gid;
    x->skipped = 0;
    x->head = x->len = 0;
    /* memcached's OK comes through the watcher's buffer too */
    ring_put(x, "OK\r\n", 4);
    w->count++;
    publish_kinds(w, kinds_out);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void mp_watch_remove(mp_watch *w, int *kinds_out, struct mp_conn *c)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    for (int i = 0; i < MP_WATCH_MAX; i++) {
        if (w->w[i].c == c) {
            w->w[i].c = NULL;
            w->w[i].len = 0;
            w->count--;
        }
    }
    publish_kinds(w, kinds_out);
    pthread_mutex_unlock(&w->lock);
}

int mp_watch_drain(mp_watch *w, void *owner,
                   void (*deliver)(void *arg, struct mp_conn *c, const char *p, size_t n),
                   void *arg)
{
    if (w == NULL)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&w->lock);
    for (int i = 0; i < MP_WATCH_MAX; i++) {
        mp_watcher *x = &w->w[i];
        if (x->c == NULL || x->owner != owner)
            continue;
        rc |= MP_WATCH_OWNS;
        if (x->len == 0)
            continue;
        mp_conn *c = x->c;
        size_t unsent = mp_out_unsent(c);
        size_t room = unsent >= MP_OUT_HIGHWATER ? 0 : MP_OUT_HIGHWATER - unsent;
        size_t n = room < x->len ? room : x->len;
        if (n > 0) {
            size_t first = MP_WATCH_BUF - x->head < n ? MP_WATCH_BUF - x->head : n;
            deliver(arg, c, x->buf + x->head, first);
            if (n > first)
                deliver(arg, c, x->buf, n - first);
            x->head = (x->head + n) % MP_WATCH_BUF;
            x->len -= n;
        }
        if (x->len > 0)
            rc |= MP_WATCH_LEFT;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

/* One event: its gid, its time, and the line into every watcher of kind. */
static void emit(mp_watch *w, int kind, const char *body, size_t n)
{
    char line[MP_WATCH_LINE];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    pthread_mutex_lock(&w->lock);
    uint64_t gid = ++w->gid;
    w->written++;
    /* "ts=%lld.%d gid=%llu ": memcached prints the microseconds unpadded */
    char *q = line;
    memcpy(q, "ts=", 3);
    q = u64_to_dec(q + 3, (uint64_t)tv.tv_sec);
    *q++ = '.';
    q = u64_to_dec(q, (uint64_t)tv.tv_usec);
    memcpy(q, " gid=", 5);
    q = u64_to_dec(q + 5, gid);
    *q++ = ' ';
    size_t len = (size_t)(q - line);
    if (len + n > sizeof(line))
        n = sizeof(line) - len;
    memcpy(q, body, n);
    len += n;
    for (int i = 0; i < MP_WATCH_MAX; i++) {
        mp_watcher *x = &w->w[i];
        if (x->c == NULL || !(x->kinds & kind) || gid < x->min_gid)
            continue;
        if (MP_WATCH_BUF - x->len < len + MP_WATCH_SLACK) {
            x->skipped++;
            w->skipped++;
            continue;
        }
        if (x->skipped > 0) {
            char sk[40] = "skipped=";
            char *e = u64_to_dec(sk + 8, x->skipped);
            *e++ = '\n';
            ring_put(x, sk, (size_t)(e - sk));
            x->skipped = 0;
        }
        ring_put(x, line, len);
        w->sent++;
    }
    pthread_mutex_unlock(&w->lock);
}

/* the fields memcached prints as %u of an 8-bit class and %d of a size */
static char *put_str(char *q, const char *s)
{
    size_t n = strlen(s);
    memcpy(q, s, n);
    return q + n;
}

static char *put_i64(char *q, int64_t v)
{
    if (v < 0) {
        *q++ = '-';
        return u64_to_dec(q, (uint64_t)0 - (uint64_t)v);
    }
    return u64_to_dec(q, (uint64_t)v);
}

static char *put_key(char *q, const char *key, size_t nkey)
{
    return q + mp_uriencode(key, nkey, q);
}

static mp_watch *hub(const mp_conn *c)
{
    return c->env->shared->watch;
}

void mp_watch_item_get(mp_conn *c, const char *key, size_t nkey, int status, const mp_item *it)
{
    static const char *const found[] = {"not_found", "found", "flushed", "expired"};
    char body[MP_WATCH_LINE];
    char *q = put_str(body, "type=item_get key=");
    q = put_key(q, key, nkey);
    q = put_str(q, " status=");
    q = put_str(q, found[status & 3]);
    q = put_str(q, " clsid=");
    q = u64_to_dec(q, it != NULL ? it->clsid : 0);
    q = put_str(q, " cfd=");
    q = u64_to_dec(q, mp_conn_number(c));
    q = put_str(q, " size=");
    q = u64_to_dec(q, it != NULL && it->nbytes > 2 ? it->nbytes - 2 : 0);
    *q++ = '\n';
    emit(hub(c), MP_WATCH_FETCHERS, body, (size_t)(q - body));
}

/* memcached's enum store_item_type order and its NREAD_* command numbers */
static const char *store_status(int result)
{
    switch (result) {
    case MP_STORED: return "stored";
    case MP_EXISTS: return "exists";
    case MP_NOT_FOUND: return "not_found";
    case MP_TOO_LARGE: return "too_large";
    case MP_NO_MEMORY: return "no_memory";
    default: return "not_stored";
    }
}

static const char *store_cmd(int op)
{
    switch (op) {
    case MP_ADD: return "add";
    case MP_SET: return "set";
    case MP_REPLACE: return "replace";
    case MP_APPEND: return "append";
    case MP_PREPEND: return "prepend";
    case MP_CAS: return "cas";
    default: return "null";
    }
}

static void store_line(mp_conn *c, const char *key, size_t nkey, int op, int result,
                       uint32_t ttl, unsigned clsid, uint64_t cfd, uint32_t size)
{
    char body[MP_WATCH_LINE];
    char *q = put_str(body, "type=item_store key=");
    q = put_key(q, key, nkey);
    q = put_str(q, " status=");
    q = put_str(q, store_status(result));
    q = put_str(q, " cmd=");
    q = put_str(q, store_cmd(op));
    q = put_str(q, " ttl=");
    q = u64_to_dec(q, ttl);
    q = put_str(q, " clsid=");
    q = u64_to_dec(q, clsid);
    q = put_str(q, " cfd=");
    q = u64_to_dec(q, cfd);
    q = put_str(q, " size=");
    q = u64_to_dec(q, size);
    *q++ = '\n';
    emit(hub(c), MP_WATCH_MUTATIONS, body, (size_t)(q - body));
}

void mp_watch_item_store(mp_conn *c, const char *key, size_t nkey, int op, int result,
                         const mp_item *it)
{
    /* a ttl is printed as an unsigned difference from now, as memcached's */
    uint32_t ttl = it->exptime != 0 ? (uint32_t)(it->exptime - mp_current_time) : 0;
    store_line(c, key, nkey, op, result, ttl, it->clsid, mp_conn_number(c),
               it->nbytes > 2 ? it->nbytes - 2 : 0);
}

void mp_watch_item_refused(mp_conn *c, const char *key, size_t nkey, int op, int result)
{
    /* memcached 1.6.18 passes one argument short here: its class is the
     * connection's number cut to 8 bits, and its cfd reads past the
     * arguments (0 on the x86-64 builds tried) */
    uint64_t cfd = mp_conn_number(c);
    store_line(c, key, nkey, op, result, 0, (unsigned)(cfd & 0xff), 0, 0);
}

int mp_watch_miss_status(int why)
{
    switch (why) {
    case MP_MISS_FLUSHED: return MP_WATCH_FLUSHED;
    case MP_MISS_EXPIRED: return MP_WATCH_EXPIRED;
    default: return MP_WATCH_NOT_FOUND;
    }
}

void mp_watch_lookup(mp_conn *c, mp_shard *s, const char *key, size_t nkey, uint64_t hv)
{
    int why = MP_MISS_NONE;
    mp_item *it = mp_item_find(s, key, nkey, hv, &why);
    mp_watch_item_get(c, key, nkey, it != NULL ? MP_WATCH_FOUND : mp_watch_miss_status(why), it);
}

void mp_watch_store_begin(mp_watch_store *w, const mp_item *it)
{
    w->nbytes = it->nbytes;
    w->exptime = it->exptime;
    w->nkey = it->nkey;
    w->clsid = it->clsid;
    memcpy(w->key, MP_ITEM_key(it), it->nkey);
}

void mp_watch_store_end(mp_watch_store *w, mp_conn *c, mp_shard *s, uint64_t hv, int op,
                        int result)
{
    if (result == MP_STORED && (op == MP_APPEND || op == MP_PREPEND)) {
        mp_item *it = mp_item_find(s, w->key, w->nkey, hv, NULL);
        if (it != NULL) {
            mp_watch_item_store(c, w->key, w->nkey, op, result, it);
            return;
        }
    }
    uint32_t ttl = w->exptime != 0 ? (uint32_t)(w->exptime - mp_current_time) : 0;
    store_line(c, w->key, w->nkey, op, result, ttl, w->clsid, mp_conn_number(c),
               w->nbytes > 2 ? w->nbytes - 2 : 0);
}

void mp_watch_eviction(mp_watch *w, const mp_item *it)
{
    char body[MP_WATCH_LINE];
    char *q = put_str(body, "type=eviction key=");
    q = put_key(q, MP_ITEM_key(it), it->nkey);
    q = put_str(q, (it->iflags & MP_IT_FETCHED) ? " fetch=yes" : " fetch=no");
    q = put_str(q, " ttl=");
    q = put_i64(q, it->exptime != 0 ? (int64_t)it->exptime - (int64_t)mp_current_time : -1);
    q = put_str(q, " la=");
    q = put_i64(q, (int32_t)(mp_current_time - it->time));
    q = put_str(q, " clsid=");
    q = u64_to_dec(q, it->clsid);
    q = put_str(q, " size=");
    q = u64_to_dec(q, it->nbytes > 2 ? it->nbytes - 2 : 0);
    *q++ = '\n';
    emit(w, MP_WATCH_EVICTIONS, body, (size_t)(q - body));
}

void mp_watch_conn(mp_conn *c, bool closed, int reason)
{
    static const char *const reasons[] = {"error", "normal", "idle_timeout", "shutdown"};
    char rip[INET6_ADDRSTRLEN + 8] = "";
    unsigned port = 0;
    const struct sockaddr *sa = (const struct sockaddr *)&c->peer;
    if (c->is_unix || c->peerlen == 0 || sa->sa_family == AF_UNIX) {
        /* memcached's Unix socket connections have no peer address */
        strcpy(rip, "unix");
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, rip, sizeof(rip));
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, rip, sizeof(rip));
        port = ntohs(in6->sin6_port);
    }
    char body[MP_WATCH_LINE];
    char *q = put_str(body, closed ? "type=conn_close rip=" : "type=conn_new rip=");
    q = put_str(q, rip);
    q = put_str(q, " rport=");
    q = u64_to_dec(q, port);
    q = put_str(q, c->is_unix ? " transport=local" : " transport=tcp");
    if (closed) {
        q = put_str(q, " reason=");
        q = put_str(q, reasons[reason & 3]);
    }
    q = put_str(q, " cfd=");
    q = u64_to_dec(q, mp_conn_number(c));
    *q++ = '\n';
    emit(hub(c), MP_WATCH_CONNEVENTS, body, (size_t)(q - body));
}

void mp_watch_counters(mp_watch *w, uint64_t out[5])
{
    memset(out, 0, 5 * sizeof(uint64_t));
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    out[1] = w->written;
    out[2] = w->skipped;
    out[3] = w->sent;
    out[4] = (uint64_t)w->count;
    pthread_mutex_unlock(&w->lock);
}

void mp_watch_reset(mp_watch *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->written = w->skipped = w->sent = 0;
    pthread_mutex_unlock(&w->lock);
}
