/* What a channel does whatever its backend: the connection table, input
 * buffering, running the protocol, fairness between connections (-R), flow
 * control, the connection limit (-c), idle timeouts and shard maintenance.
 * The backends (epoll.c, uring.c) only move bytes and descriptors, and stop
 * or resume receiving when told; see engine.h for the per-core picture. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "clock.h"
#include "conn.h"
#include "engine.h"
#include "log.h"
#include "proto/executor.h"
#include "store/store.h"
#include "tls.h"
#include "udp.h"
#include "watch.h"

/* A channel with "watch" connections waits at most this long, so that log
 * lines go out about as soon as memcached's logger thread sends them (it
 * sleeps 1 ms to 1 s, longer the quieter it is). */
#define MP_WATCH_WAIT_MS 10

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the connection table ---- */

/* Adds a chunk of free slots; false when memory is exhausted. */
static bool table_grow(mp_channel *ch)
{
    uint32_t n = ch->nslots;
    if (n >= ch->maxslots)
        return false;
    mp_conn *chunk = calloc(MP_CONN_CHUNK, sizeof(mp_conn));
    uint32_t cap = n + MP_CONN_CHUNK;
    uint64_t *r1 = realloc(ch->ready, cap * sizeof(uint64_t));
    if (r1 != NULL)
        ch->ready = r1;
    uint64_t *r2 = realloc(ch->ready_next, cap * sizeof(uint64_t));
    if (r2 != NULL)
        ch->ready_next = r2;
    if (chunk == NULL || r1 == NULL || r2 == NULL) {
        free(chunk);
        ch->stats.malloc_fails++;
        return false;
    }
    for (uint32_t i = 0; i < MP_CONN_CHUNK; i++) {
        chunk[i].fd = -1;
        chunk[i].slot = n + i;
        chunk[i].next_free = i + 1 < MP_CONN_CHUNK ? n + i + 1 : ch->free_head;
    }
    ch->free_head = n;
    ch->chunks[n / MP_CONN_CHUNK] = chunk;
    /* "stats conns" reads the table from another thread */
    __atomic_store_n(&ch->nslots, cap, __ATOMIC_RELEASE);
    return true;
}

bool mp_conn_admit(mp_channel *ch)
{
    mp_engine *eng = ch->eng;
    int now = __atomic_add_fetch(&eng->curr_conns, 1, __ATOMIC_RELAXED);
    if (now > eng->settings.maxconns || (ch->free_head == MP_NO_SLOT && !table_grow(ch))) {
        __atomic_sub_fetch(&eng->curr_conns, 1, __ATOMIC_RELAXED);
        ch->stats.rejected_conns++;
        return false;
    }
    return true;
}

mp_conn *mp_conn_open(mp_channel *ch, int fd, const mp_listener *l,
                      const struct sockaddr_storage *peer, socklen_t peerlen)
{
    uint32_t slot = ch->free_head;
    if (slot == MP_NO_SLOT)
        return NULL;
    mp_conn *c = mp_conn_at(ch, slot);
    /* the free list holds free slots, and a free slot holds nothing */
    MP_ASSERT(slot < ch->nslots && c->slot == slot && c->state == MP_CONN_FREE);
    MP_ASSERT(c->rbuf == NULL && c->wbuf == NULL && c->sbuf == NULL && c->tls == NULL &&
              c->wrefs.n == 0 && c->srefs.n == 0 && ch->nopen < ch->nslots);
    ch->free_head = c->next_free;
    uint32_t gen = c->gen;
    memset(c, 0, offsetof(mp_conn, proto));
    memset(&c->proto, 0, sizeof(c->proto));
    c->fd = fd;
    c->fixed = ch->fixed_fds;
    c->slot = slot;
    c->gen = gen;
    c->state = MP_CONN_OPEN;
    c->is_unix = l->is_unix;
    c->listen_fd = l->fd;
    c->ch = ch;
    c->env = &ch->env;
    c->next_free = MP_NO_SLOT;
    c->last_cmd = mp_current_time;
    if (peer != NULL && peerlen <= sizeof(c->peer)) {
        memcpy(&c->peer, peer, peerlen);
        c->peerlen = peerlen;
    }
    if (l->tls) {
        c->tls = mp_tls_open(ch, c);
        ch->tls_handshakes += c->tls->handshaking;
    }
    ch->nopen++;
    ch->stats.accepts++;
    ch->stats.total_conns++;
    if (mp_log_on(&ch->env, MP_LOG_CONN))
        mp_log_opened(c, &ch->eng->settings);
    if (mp_watch_on(&ch->env, MP_WATCH_CONNEVENTS)) {
        /* an io_uring connection's address comes with the channel's next
         * io_uring_enter (uring.c ask_peer): its conn_new goes out at its
         * first input, or at its close, with the address */
        if (c->peerlen == 0 && !c->is_unix)
            c->conn_new_owed = true;
        else
            mp_watch_conn(c, false, 0);
    }
    return c;
}

void mp_conn_release(mp_channel *ch, mp_conn *c)
{
    if (c->state == MP_CONN_FREE)
        return;
    /* not at shutdown, where memcached closes nothing one by one */
    if (mp_log_on(&ch->env, MP_LOG_CONN) && !ch->stopping)
        mp_log_closed(c);
    if (mp_watch_on(&ch->env, MP_WATCH_CONNEVENTS) && !ch->stopping && !c->proto.watcher) {
        if (c->conn_new_owed)
            mp_watch_conn(c, false, 0);
        mp_watch_conn(c, true, c->close_reason);
    }
    mp_proto_reset(c);
    if (c->tls != NULL) {
        ch->tls_handshakes -= c->tls->handshaking;
        mp_tls_free(c->tls);
        c->tls = NULL;
    }
    mp_refs_release(ch->eng->store, &c->wrefs);
    mp_refs_release(ch->eng->store, &c->srefs);
    if (c->rbuf != NULL && !c->rbuf_borrowed)
        mp_buf_put(ch, c->rbuf, c->rsize, MP_BUF_IN);
    mp_buf_put(ch, c->wbuf, c->wsize, MP_BUF_OUT);
    mp_buf_put(ch, c->sbuf, c->ssize, MP_BUF_OUT);
    c->rbuf = c->wbuf = c->sbuf = NULL;
    c->rsize = c->rstart = c->rend = 0;
    c->wsize = c->wstart = c->wend = 0;
    c->ssize = c->sstart = c->send = 0;
    c->state = MP_CONN_FREE;
    c->fd = -1;
    c->gen++;
    c->in_ready = false;   /* the ready list skips free slots */
    c->next_free = ch->free_head;
    MP_ASSERT(ch->nopen > 0 && mp_conn_at(ch, c->slot) == c);
    ch->free_head = c->slot;
    ch->nopen--;
    __atomic_sub_fetch(&ch->eng->curr_conns, 1, __ATOMIC_RELAXED);
}

/* ---- input ---- */

static void ready_push(mp_channel *ch, mp_conn *c)
{
    if (c->in_ready)
        return;
    /* the arrays hold nslots entries: a slot goes on once per turn, and
     * one closed and reopened within a turn has no input yet to yield */
    MP_ASSERT(ch->nready < ch->nslots);
    c->in_ready = true;
    ch->ready[ch->nready++] = ((uint64_t)c->gen << 32) | c->slot;
}

/* Gives back the input buffer when nothing is left in it, and moves a partial
 * request out of a borrowed buffer into one the connection keeps. */
static bool conn_keep_input(mp_channel *ch, mp_conn *c)
{
    uint32_t left = c->rend - c->rstart;
    if (c->rbuf_borrowed) {
        c->rbuf_borrowed = false;
        if (left == 0) {
            c->rbuf = NULL;
            c->rsize = c->rstart = c->rend = 0;
            return true;
        }
        uint32_t size;
        char *buf = mp_buf_get(ch, left, &size, MP_BUF_IN);
        if (buf == NULL) {
            c->rbuf = NULL;
            return false;
        }
        memcpy(buf, c->rbuf + c->rstart, left);
        c->rbuf = buf;
        c->rsize = size;
        c->rstart = 0;
        c->rend = left;
    } else if (c->rbuf != NULL && left == 0) {
        mp_buf_put(ch, c->rbuf, c->rsize, MP_BUF_IN);
        c->rbuf = NULL;
        c->rsize = c->rstart = c->rend = 0;
    }
    return true;
}

bool mp_conn_rbuf_room(mp_channel *ch, mp_conn *c, size_t n)
{
    if (c->rbuf == NULL) {
        c->rbuf = mp_buf_get(ch, MP_BUF_INITIAL, &c->rsize, MP_BUF_IN);
        if (c->rbuf == NULL)
            return false;
        c->rstart = c->rend = 0;
    }
    if (c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
    }
    size_t want = c->rsize;
    while (want - c->rend < n)
        want *= 2;
    if (want == c->rsize)
        return true;
    /* a request (a long multi-get line) longer than the buffer */
    if (want > MP_RBUF_MAX)
        return false;
    uint32_t size;
    char *nb = mp_buf_get(ch, want, &size, MP_BUF_IN);
    if (nb == NULL)
        return false;
    memcpy(nb, c->rbuf, c->rend);
    mp_buf_put(ch, c->rbuf, c->rsize, MP_BUF_IN);
    c->rbuf = nb;
    c->rsize = size;
    return true;
}

bool mp_conn_wants_input(const mp_conn *c)
{
    if (c->state != MP_CONN_OPEN)
        return false;
    if (!c->in_ready && !c->blocked_out)
        return true;
    return c->rend - c->rstart < MP_INPUT_PAUSE;
}

/* The one flow-control decision, the same for every backend: input is taken
 * while the connection is served or has less than MP_INPUT_PAUSE waiting;
 * beyond that the backend stops receiving until the connection has worked
 * through what it holds. */
static void conn_flow(mp_channel *ch, mp_conn *c)
{
    /* the common case: served, taking input, nothing to change */
    if (!c->input_paused && !c->in_ready && !c->blocked_out)
        return;
    if (c->state != MP_CONN_OPEN)
        return;
    bool want = mp_conn_wants_input(c);
    if (want && c->input_paused) {
        c->input_paused = false;
        ch->be->resume_input(ch, c);
    } else if (!want && !c->input_paused) {
        c->input_paused = true;
        ch->stats.input_pauses++;
        ch->be->pause_input(ch, c);
    }
}

/* ---- TLS (-Z): ciphertext in, plaintext for the protocol (tls.h) ---- */

/* What a connection does after mp_tls_feed: close (sending the alert
 * OpenSSL may have queued), send its handshake records, or run the
 * protocol over the plaintext, as mp_conn_input does. */
static void tls_fed(mp_channel *ch, mp_conn *c, int r)
{
    if (r == MP_TLS_CLOSED && c->rend > c->rstart && !c->in_ready && !c->blocked_out) {
        /* the requests that came with the close_notify are answered first
         * (requests left past -R go unanswered) */
        mp_conn_run(ch, c);
        if (c->state != MP_CONN_OPEN)
            return;
    }
    if (r == MP_TLS_FAIL || r == MP_TLS_CLOSED) {
        c->state = MP_CONN_CLOSING;
        /* a close_notify is answered with ours (sealing nothing but it) */
        if (r == MP_TLS_CLOSED && !mp_tls_seal(ch, c, c->wend - c->wstart)) {
            ch->be->close(ch, c);
            return;
        }
        ch->be->flush(ch, c);
        return;
    }
    if (r == MP_TLS_AGAIN || c->rend == c->rstart || c->in_ready || c->blocked_out) {
        /* the input buffer goes back when empty; flow control follows what
         * a waiting connection holds */
        if (!conn_keep_input(ch, c)) {
            ch->be->close(ch, c);
            return;
        }
        conn_flow(ch, c);
        if (mp_out_pending(c) > 0)
            ch->be->flush(ch, c);
        return;
    }
    mp_conn_run(ch, c);
}

/* mp_tls_feed for a handshake step, its records handed on at once. */
static void tls_step(mp_channel *ch, mp_conn *c, const char *data, size_t n)
{
    tls_fed(ch, c, mp_tls_feed(ch, c, data, n));
    if (ch->be->push != NULL)
        ch->be->push(ch);
}

static void tls_input(mp_channel *ch, mp_conn *c, const char *data, size_t n)
{
    mp_tls *t = c->tls;
    ch->stats.bytes_read += n;
    if (t->handshaking) {
        /* the turn's handshakes are used up, or earlier input waits: this
         * waits behind it for a later turn (tls_resume) */
        if (t->held_len > 0 || ch->tls_budget <= 0) {
            if (!mp_tls_hold(ch, c, data, n)) {
                ch->stats.ssl_handshake_errors++;
                ch->be->close(ch, c);
                return;
            }
            ready_push(ch, c);
            /* and it stops being read meanwhile: level-triggered, it would
             * fill every epoll_wait in the meantime */
            if (!c->input_paused) {
                c->input_paused = true;
                ch->stats.input_pauses++;
                ch->be->pause_input(ch, c);
            }
            return;
        }
        ch->tls_budget--;
        tls_step(ch, c, data, n);
        return;
    }
    tls_fed(ch, c, mp_tls_feed(ch, c, data, n));
}

/* A handshake whose input waited (mp_channel_run_ready). */
static void tls_resume(mp_channel *ch, mp_conn *c)
{
    mp_tls *t = c->tls;
    if (ch->tls_budget <= 0) {
        ready_push(ch, c);
        return;
    }
    ch->tls_budget--;
    char *held = t->held;
    uint32_t size = t->held_size, len = t->held_len;
    t->held = NULL;
    t->held_size = t->held_len = 0;
    tls_step(ch, c, held, len);
    mp_buf_put(ch, held, size, MP_BUF_IN);
}

/* A client that opened TLS and stalled (MP_TLS_HANDSHAKE_TIMEOUT). */
static void close_stalled_handshakes(mp_channel *ch, mp_rel_time now)
{
    for (uint32_t i = 0; i < ch->nslots; i++) {
        mp_conn *c = mp_conn_at(ch, i);
        if (c->state == MP_CONN_OPEN && c->tls != NULL && c->tls->handshaking &&
            now - c->tls->started > MP_TLS_HANDSHAKE_TIMEOUT) {
            ch->stats.ssl_handshake_errors++;
            ch->be->close(ch, c);
        }
    }
}

void mp_conn_input(mp_channel *ch, mp_conn *c, char *data, size_t n)
{
    if (c->state != MP_CONN_OPEN)
        return;   /* closing: input after quit is ignored */
    if (c->conn_new_owed) {
        c->conn_new_owed = false;
        if (mp_watch_on(&ch->env, MP_WATCH_CONNEVENTS))
            mp_watch_conn(c, false, 0);
    }
    if (c->tls != NULL) {
        tls_input(ch, c, data, n);
        return;
    }
    ch->stats.bytes_read += n;
    if (c->rbuf != NULL) {
        /* a partial request is waiting: append behind it */
        if (!mp_conn_rbuf_room(ch, c, n)) {
            ch->be->close(ch, c);
            return;
        }
        memcpy(c->rbuf + c->rend, data, n);
        c->rend += (uint32_t)n;
    } else {
        c->rbuf = data;
        c->rsize = c->rend = (uint32_t)n;
        c->rstart = 0;
        c->rbuf_borrowed = true;
    }
    if (c->in_ready || c->blocked_out) {
        /* it resumes later; the bytes must not stay in a borrowed buffer */
        if (!conn_keep_input(ch, c)) {
            ch->be->close(ch, c);
            return;
        }
        conn_flow(ch, c);
        return;
    }
    mp_conn_run(ch, c);
}

/* ---- running the protocol ---- */

void mp_conn_received(mp_channel *ch, mp_conn *c, size_t n)
{
    ch->stats.bytes_read += n;
    c->rend += (uint32_t)n;
    mp_conn_run(ch, c);
}

void mp_conn_run(mp_channel *ch, mp_conn *c)
{
    /* on TLS, the output up to here is ciphertext, what follows plaintext */
    MP_ASSERT(c->state == MP_CONN_OPEN);   /* input after quit is never run */
    uint32_t sealed = c->wend - c->wstart;
    int r = mp_process(c, ch->eng->settings.reqs_per_event);
    mp_out_check(c);
    if (r == MP_PROC_CLOSE) {
        if (!c->close_after_write) {
            mp_conn_drop_borrowed(c);
            ch->be->close(ch, c);
            return;
        }
        c->state = MP_CONN_CLOSING;
        c->rstart = c->rend;   /* input after quit is ignored */
    }
    if (!conn_keep_input(ch, c)) {
        ch->be->close(ch, c);
        return;
    }
    if (r == MP_PROC_YIELD) {
        ch->stats.conn_yields++;
        if (mp_out_over_mark(c)) {
            c->blocked_out = true;
            ch->stats.output_stalls++;
        } else {
            ready_push(ch, c);
        }
    }
    conn_flow(ch, c);
    if (c->tls != NULL && !mp_tls_seal(ch, c, sealed)) {
        ch->be->close(ch, c);
        return;
    }
    ch->be->flush(ch, c);
    if (c->blocked_out && c->state == MP_CONN_OPEN && !mp_out_over_mark(c)) {
        /* the send took enough at once: no completion or writable event is
         * owed to resume it, so it goes on next turn like any yielded
         * connection */
        c->blocked_out = false;
        ready_push(ch, c);
    }
}

void mp_conn_unblock(mp_channel *ch, mp_conn *c)
{
    if (!c->blocked_out || c->state != MP_CONN_OPEN || mp_out_over_mark(c))
        return;
    c->blocked_out = false;
    if (c->rbuf != NULL) {
        mp_conn_run(ch, c);
        return;
    }
    conn_flow(ch, c);
    ch->be->flush(ch, c);
}

/* ---- end of a turn ---- */

void mp_channel_run_ready(mp_channel *ch)
{
    /* connections that yield again go on the other array, for next turn */
    uint64_t *turn = ch->ready;
    uint32_t n = ch->nready;
    ch->ready = ch->ready_next;
    ch->ready_next = turn;
    ch->nready = 0;
    for (uint32_t i = 0; i < n; i++) {
        mp_conn *c = mp_conn_at(ch, (uint32_t)turn[i]);
        if (c->gen != (uint32_t)(turn[i] >> 32) || !c->in_ready)
            continue;
        c->in_ready = false;
        if (c->state != MP_CONN_OPEN)
            continue;
        if (c->tls != NULL && c->tls->handshaking)
            tls_resume(ch, c);
        else
            mp_conn_run(ch, c);
    }
}

/* memcached's idle timeout: a connection that has not sent a command for
 * idle_timeout seconds is closed, whether it is silent or trickling a line
 * or a data block; one whose replies are still going out is not. */
static void close_idle(mp_channel *ch, mp_rel_time now, mp_rel_time idle)
{
    for (uint32_t i = 0; i < ch->nslots; i++) {
        mp_conn *c = mp_conn_at(ch, i);
        if (c->state == MP_CONN_OPEN && mp_out_unsent(c) == 0 && !c->in_ready &&
            !c->blocked_out && !c->proto.watcher && now - c->last_cmd > idle) {
            ch->stats.idle_kicks++;
            c->close_reason = MP_CLOSE_IDLE;
            if (mp_log_on(&ch->env, MP_LOG_CONN))
                mp_log_idle(c);
            ch->be->close(ch, c);
        }
    }
}

#ifdef MPCACHE_DEBUG
/* The connection table walked whole at maintenance (debug builds): the
 * free list links free slots only and ends, every other slot counts in
 * nopen, no borrowed input outlives the call that lent it, the ready flags
 * are backed by entries, and each connection's output is sound. */
static void table_check(const mp_channel *ch)
{
    uint32_t nfree = 0, nused = 0, nready = 0;
    for (uint32_t s = ch->free_head; s != MP_NO_SLOT; s = mp_conn_at(ch, s)->next_free) {
        MP_ASSERT(s < ch->nslots && nfree < ch->nslots);
        MP_ASSERT(mp_conn_at(ch, s)->state == MP_CONN_FREE);
        nfree++;
    }
    for (uint32_t i = 0; i < ch->nslots; i++) {
        const mp_conn *c = mp_conn_at(ch, i);
        MP_ASSERT(c->slot == i);
        if (c->state == MP_CONN_FREE) {
            MP_ASSERT(!c->in_ready && c->rbuf == NULL && c->wbuf == NULL && c->sbuf == NULL);
            continue;
        }
        nused++;
        nready += c->in_ready;
        MP_ASSERT(!c->rbuf_borrowed && c->rstart <= c->rend && c->rend <= c->rsize);
        mp_out_check(c);
    }
    MP_ASSERT(nfree + nused == ch->nslots && nused == ch->nopen && nready <= ch->nready);
}
#endif

static void channel_maintain(mp_channel *ch)
{
    mp_engine *eng = ch->eng;
    int nshards = mp_store_nshards(eng->store);
    for (int s = ch->id; s < nshards; s += eng->nchannels)
        mp_store_maintain(eng->store, s);
    if (eng->settings.idle_timeout > 0)
        close_idle(ch, mp_current_time, (mp_rel_time)eng->settings.idle_timeout);
    if (ch->tls_handshakes > 0)
        close_stalled_handshakes(ch, mp_current_time);
#ifdef MPCACHE_DEBUG
    table_check(ch);
#endif
}

static uint64_t maintain_interval(const mp_channel *ch)
{
    return ch->stats.events == ch->events_at_maintain ? MP_IDLE_MAINTAIN_MS : MP_MAINTAIN_MS;
}

/* The watchers that got lines this turn, and where their plaintext starts
 * (TLS seals what follows). */
typedef struct watch_fed {
    int n;
    mp_conn *c[MP_WATCH_MAX];
    uint32_t sealed[MP_WATCH_MAX];
} watch_fed;

/* Under the hub's mutex: append only (watch.h). */
static void watch_deliver(void *arg, mp_conn *c, const char *p, size_t n)
{
    watch_fed *f = arg;
    if (c->state != MP_CONN_OPEN)
        return;
    int i = 0;
    while (i < f->n && f->c[i] != c)
        i++;
    if (i == f->n && f->n < MP_WATCH_MAX) {
        f->c[i] = c;
        f->sealed[i] = c->wend - c->wstart;
        f->n++;
    }
    mp_out_write(c, p, n);
}

static void watch_drain(mp_channel *ch)
{
    watch_fed f = {.n = 0};
    int rc = mp_watch_drain(ch->eng->shared.watch, &ch->env, watch_deliver, &f);
    ch->owns_watchers = (rc & MP_WATCH_OWNS) != 0;
    /* sent as any reply, once the hub is let go */
    for (int i = 0; i < f.n; i++) {
        mp_conn *c = f.c[i];
        if (c->state != MP_CONN_OPEN)
            continue;
        if (c->tls != NULL && !mp_tls_seal(ch, c, f.sealed[i])) {
            ch->be->close(ch, c);
            continue;
        }
        ch->be->flush(ch, c);
    }
}

/* End of a turn: connections that yielded go on, maintenance when due. */
static void end_turn(mp_channel *ch)
{
    ch->tls_budget = MP_TLS_HANDSHAKES_PER_TURN;
    mp_channel_run_ready(ch);
    /* UDP sockets that had more datagrams than a turn takes */
    for (int i = 0; i < ch->nudp; i++)
        if (ch->udp[i]->more)
            mp_udp_serve(ch, ch->udp[i]);
    if (ch->owns_watchers || __atomic_load_n(&ch->eng->shared.watch_kinds, __ATOMIC_RELAXED))
        watch_drain(ch);
    uint64_t t = now_ms();
    if (t - ch->last_maintain_ms >= maintain_interval(ch)) {
        ch->last_maintain_ms = t;
        ch->events_at_maintain = ch->stats.events;
        channel_maintain(ch);
    }
}

/* How long the next wait for events may block: not at all with connections
 * ready to go on, else until the next maintenance is due. */
static int wait_ms(const mp_channel *ch)
{
    if (ch->nready > 0)
        return 0;
    for (int i = 0; i < ch->nudp; i++)
        if (ch->udp[i]->more)
            return 0;
    uint64_t since = now_ms() - ch->last_maintain_ms;
    uint64_t interval = maintain_interval(ch);
    int ms = since >= interval ? 0 : (int)(interval - since);
    return ch->owns_watchers && ms > MP_WATCH_WAIT_MS ? MP_WATCH_WAIT_MS : ms;
}

void mp_channel_fail(mp_channel *ch, int neg_errno, const char *what)
{
    if (ch->error == 0) {
        ch->error = neg_errno < 0 ? neg_errno : -EIO;
        ch->error_what = what;
    }
    ch->stopping = 1;
}

static void count_turn(mp_channel *ch, int n)
{
    ch->stats.loop_turns++;
    ch->stats.events += (uint64_t)n;
    int b = 0;
    while (n > 0 && b < 7) {
        n >>= 1;
        b++;
    }
    ch->turn_hist[b]++;
}

/* The loop, one for every backend (Redis's aeMain): a turn is the backend's
 * I/O, then the work the channel owes (yielded connections, maintenance). */
static void channel_loop(mp_channel *ch)
{
    while (!ch->stopping) {
        int n = ch->be->wait(ch, wait_ms(ch));
        if (n < 0)
            break;
        /* once a turn, after the wait (which may have been long) and
         * before the requests and the maintenance that read the time */
        mp_clock_update();
        ch->be->handle(ch, n);
        count_turn(ch, n);
        end_turn(ch);
    }
}

int mp_channel_run(mp_engine *eng, int id)
{
    mp_channel *ch = eng->channels[id];
    ch->be = eng->use_uring ? &mp_uring_backend : &mp_epoll_backend;
    int rc = ch->be->setup(ch);
    if (rc < 0 && ch->be == &mp_uring_backend) {
        /* the probe passed but this ring could not be made (locked memory,
         * a limit on rings): serve on epoll rather than not at all */
        ch->be->teardown(ch);
        snprintf(eng->engine_desc, sizeof(eng->engine_desc),
                 "level_triggered,io_uring_setup_failed:%d", -rc);
        strcpy(eng->settings.io_engine, "epoll");
        ch->be = &mp_epoll_backend;
        rc = ch->be->setup(ch);
    }
    if (rc < 0)
        mp_channel_fail(ch, rc, ch->be == &mp_epoll_backend ? "epoll_create1" : "io_uring_setup");
    else
        channel_loop(ch);
    ch->be->teardown(ch);
    return ch->error;
}

/* ---- set-up, called from the engine before the loop runs ---- */

mp_channel *mp_channel_create(mp_engine *eng, int id)
{
    mp_channel *ch = calloc(1, sizeof(*ch));
    if (ch == NULL)
        return NULL;
    ch->id = id;
    ch->eng = eng;
    ch->epfd = -1;
    ch->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ch->maxslots = (uint32_t)eng->settings.maxconns;
    ch->free_head = MP_NO_SLOT;
    ch->tls_budget = MP_TLS_HANDSHAKES_PER_TURN;
    ch->chunks = calloc((ch->maxslots + MP_CONN_CHUNK - 1) / MP_CONN_CHUNK + 1, sizeof(mp_conn *));
    if (ch->stop_fd < 0 || ch->chunks == NULL || mp_buf_pools_init(ch) < 0) {
        mp_channel_destroy(ch);
        return NULL;
    }
    return ch;
}

void mp_channel_destroy(mp_channel *ch)
{
    if (ch == NULL)
        return;
    /* the backend's teardown closed its connections and descriptors */
    if (ch->stop_fd >= 0)
        close(ch->stop_fd);
    for (int i = 0; i < ch->nudp; i++)
        mp_udp_free(ch, ch->udp[i]);
    mp_buf_pools_free(ch);
    if (ch->chunks != NULL)
        for (uint32_t i = 0; i < ch->nslots / MP_CONN_CHUNK; i++)
            free(ch->chunks[i]);
    free(ch->chunks);
    free(ch->ready);
    free(ch->ready_next);
    free(ch->scratch);
    free(ch->tls_stage);
    free(ch);
}

int mp_channel_add_listener(mp_channel *ch, int fd, bool is_unix, bool tls)
{
    if (ch->nlisteners >= MP_MAX_LISTENERS)
        return -1;
    ch->listeners[ch->nlisteners].fd = fd;
    ch->listeners[ch->nlisteners].is_unix = is_unix;
    ch->listeners[ch->nlisteners].tls = tls;
    ch->nlisteners++;
    return 0;
}

int mp_channel_add_udp(mp_channel *ch, int fd)
{
    if (ch->nudp >= MP_MAX_LISTENERS)
        return -1;
    mp_udp *u = mp_udp_open(ch, fd);
    if (u == NULL)
        return -1;
    u->index = ch->nudp;
    ch->udp[ch->nudp++] = u;
    return 0;
}

void mp_channel_stop(mp_channel *ch)
{
    ch->stopping = 1;
    uint64_t one = 1;
    ssize_t n = write(ch->stop_fd, &one, sizeof(one));
    (void)n;
}

bool mp_engine_visit_conns(mp_engine *eng, uint64_t *cursor, mp_conn_visit_fn fn, void *arg)
{
    for (uint32_t i = (uint32_t)(*cursor >> 32); i < (uint32_t)eng->nchannels; i++) {
        mp_channel *ch = eng->channels[i];
        uint32_t n = __atomic_load_n(&ch->nslots, __ATOMIC_ACQUIRE);
        uint32_t s = i == (uint32_t)(*cursor >> 32) ? (uint32_t)*cursor : 0;
        for (; s < n; s++) {
            mp_conn *c = mp_conn_at(ch, s);
            if (c->state != MP_CONN_FREE && !fn(c, arg)) {
                *cursor = ((uint64_t)i << 32) | s;
                return false;
            }
        }
    }
    return true;
}
