/* What a channel does whatever its backend: the connection table, input
 * buffering, running the protocol, fairness between connections (-R), the
 * connection limit (-c), idle timeouts and shard maintenance.  The backends
 * (epoll.c, uring.c) only move bytes and descriptors; see engine.h for the
 * per-core picture. */
#define _GNU_SOURCE
#include <errno.h>
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
#include "proto.h"
#include "store.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the connection table ---- */

bool mp_conn_admit(mp_channel *ch)
{
    mp_engine *eng = ch->eng;
    int now = __atomic_add_fetch(&eng->curr_conns, 1, __ATOMIC_RELAXED);
    if (now > eng->settings.maxconns || ch->free_head == MP_NO_SLOT) {
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
    mp_conn *c = &ch->conns[slot];
    ch->free_head = c->next_free;
    uint32_t gen = c->gen;
    memset(c, 0, offsetof(mp_conn, proto));
    memset(&c->proto, 0, sizeof(c->proto));
    c->fd = fd;
    c->slot = slot;
    c->gen = gen;
    c->state = MP_CONN_OPEN;
    c->is_unix = l->is_unix;
    c->listen_fd = l->fd;
    c->ch = ch;
    c->next_free = MP_NO_SLOT;
    c->last_active = mp_current_time;
    if (peer != NULL && peerlen <= sizeof(c->peer)) {
        memcpy(&c->peer, peer, peerlen);
        c->peerlen = peerlen;
    }
    ch->nopen++;
    ch->stats.accepts++;
    ch->stats.total_conns++;
    return c;
}

void mp_conn_release(mp_channel *ch, mp_conn *c)
{
    if (c->state == MP_CONN_FREE)
        return;
    mp_proto_reset(c);
    mp_refs_release(ch->eng->store, &c->wrefs);
    mp_refs_release(ch->eng->store, &c->srefs);
    if (c->rbuf != NULL && !c->rbuf_borrowed)
        mp_buf_put(ch, c->rbuf, c->rsize);
    mp_buf_put(ch, c->wbuf, c->wsize);
    mp_buf_put(ch, c->sbuf, c->ssize);
    c->rbuf = c->wbuf = c->sbuf = NULL;
    c->rsize = c->rstart = c->rend = 0;
    c->wsize = c->wstart = c->wend = 0;
    c->ssize = c->sstart = c->send = 0;
    c->state = MP_CONN_FREE;
    c->fd = -1;
    c->gen++;
    c->in_ready = false;   /* the ready list skips free slots */
    c->next_free = ch->free_head;
    ch->free_head = c->slot;
    ch->nopen--;
    __atomic_sub_fetch(&ch->eng->curr_conns, 1, __ATOMIC_RELAXED);
}

/* ---- input ---- */

static void ready_push(mp_channel *ch, mp_conn *c)
{
    if (c->in_ready)
        return;
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
        char *buf = mp_buf_get_sized(ch, left, &size);
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
        mp_buf_put(ch, c->rbuf, c->rsize);
        c->rbuf = NULL;
        c->rsize = c->rstart = c->rend = 0;
    }
    return true;
}

bool mp_conn_rbuf_room(mp_channel *ch, mp_conn *c, size_t n)
{
    if (c->rbuf == NULL) {
        c->rbuf = mp_buf_get(ch);
        if (c->rbuf == NULL)
            return false;
        c->rsize = MP_BUF_INITIAL;
        c->rstart = c->rend = 0;
    }
    if (c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
        c->rend -= c->rstart;
        c->rstart = 0;
    }
    size_t want = c->rsize;
    if (want < c->proto.want_rbuf)
        want = c->proto.want_rbuf;
    while (want - c->rend < n)
        want *= 2;
    if (want == c->rsize)
        return true;
    /* a request (a long multi-get line) longer than the buffer */
    if (want > MP_RBUF_MAX)
        return false;
    uint32_t size;
    char *nb = mp_buf_get_sized(ch, want, &size);
    if (nb == NULL)
        return false;
    memcpy(nb, c->rbuf, c->rend);
    mp_buf_put(ch, c->rbuf, c->rsize);
    c->rbuf = nb;
    c->rsize = size;
    return true;
}

void mp_conn_input(mp_channel *ch, mp_conn *c, char *data, size_t n)
{
    if (c->state != MP_CONN_OPEN)
        return;   /* closing: input after quit is ignored */
    ch->stats.bytes_read += n;
    c->last_active = mp_current_time;
    if (c->rbuf != NULL) {
        /* a partial request is waiting: append behind it */
        if (!mp_conn_rbuf_room(ch, c, n)) {
            ch->close(ch, c);
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
        if (!conn_keep_input(ch, c))
            ch->close(ch, c);
        return;
    }
    mp_conn_run(ch, c);
}

/* ---- running the protocol ---- */

void mp_conn_run(mp_channel *ch, mp_conn *c)
{
    int r = mp_process(c, ch->eng->settings.reqs_per_event);
    if (r == MP_PROC_CLOSE) {
        if (!c->close_after_write) {
            if (c->rbuf_borrowed) {
                c->rbuf = NULL;
                c->rbuf_borrowed = false;
            }
            ch->close(ch, c);
            return;
        }
        c->state = MP_CONN_CLOSING;
        c->rstart = c->rend;   /* input after quit is ignored */
    }
    if (!conn_keep_input(ch, c)) {
        ch->close(ch, c);
        return;
    }
    if (r == MP_PROC_YIELD) {
        ch->stats.conn_yields++;
        if (mp_out_pending(c) > MP_OUT_HIGHWATER)
            c->blocked_out = true;
        else
            ready_push(ch, c);
    }
    ch->flush(ch, c);
    if (c->blocked_out && c->state == MP_CONN_OPEN && mp_out_pending(c) == 0) {
        /* the send took it all at once: no writable event will come to
         * resume it, so it goes on next turn like any yielded connection */
        c->blocked_out = false;
        ready_push(ch, c);
    }
}

/* ---- end of a turn ---- */

static void run_ready(mp_channel *ch)
{
    /* connections that yield again go on the other array, for next turn */
    uint64_t *turn = ch->ready;
    uint32_t n = ch->nready;
    ch->ready = ch->ready_next;
    ch->ready_next = turn;
    ch->nready = 0;
    for (uint32_t i = 0; i < n; i++) {
        mp_conn *c = &ch->conns[(uint32_t)turn[i]];
        if (c->gen != (uint32_t)(turn[i] >> 32) || !c->in_ready)
            continue;
        c->in_ready = false;
        if (c->state == MP_CONN_OPEN)
            mp_conn_run(ch, c);
    }
}

static void channel_maintain(mp_channel *ch)
{
    mp_engine *eng = ch->eng;
    int nshards = mp_store_nshards(eng->store);
    for (int s = ch->id; s < nshards; s += eng->nchannels)
        mp_store_maintain(eng->store, s);
    int idle = eng->settings.idle_timeout;
    if (idle > 0) {
        mp_rel_time now = mp_current_time;
        for (uint32_t i = 0; i < ch->nslots; i++) {
            mp_conn *c = &ch->conns[i];
            if (c->state == MP_CONN_OPEN && mp_out_pending(c) == 0 && !c->send_inflight &&
                now - c->last_active > (mp_rel_time)idle)
                ch->close(ch, c);
        }
    }
}

void mp_channel_end_turn(mp_channel *ch)
{
    run_ready(ch);
    uint64_t t = now_ms();
    if (t - ch->last_maintain_ms >= MP_MAINTAIN_MS) {
        ch->last_maintain_ms = t;
        channel_maintain(ch);
    }
}

void mp_channel_count_turn(mp_channel *ch, int n)
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

int mp_channel_run(mp_engine *eng, int id)
{
    mp_channel *ch = eng->channels[id];
    if (eng->use_uring) {
        int rc = mp_uring_run(ch);
        if (rc != MP_URING_FALLBACK)
            return rc;
        ch->flush = NULL;
        ch->close = NULL;
    }
    return mp_epoll_run(ch);
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
    ch->nslots = (uint32_t)eng->settings.maxconns;
    ch->conns = calloc(ch->nslots, sizeof(mp_conn));
    ch->scratch = malloc(MP_SCRATCH_SIZE);
    ch->ready = calloc(ch->nslots, sizeof(uint64_t));
    ch->ready_next = calloc(ch->nslots, sizeof(uint64_t));
    if (ch->stop_fd < 0 || ch->conns == NULL || ch->scratch == NULL || ch->ready == NULL ||
        ch->ready_next == NULL || mp_buf_pools_init(ch) < 0) {
        mp_channel_destroy(ch);
        return NULL;
    }
    for (uint32_t i = 0; i < ch->nslots; i++) {
        ch->conns[i].fd = -1;
        ch->conns[i].slot = i;
        ch->conns[i].next_free = i + 1 < ch->nslots ? i + 1 : MP_NO_SLOT;
    }
    ch->free_head = ch->nslots > 0 ? 0 : MP_NO_SLOT;
    return ch;
}

void mp_channel_destroy(mp_channel *ch)
{
    if (ch == NULL)
        return;
    /* the loop closed its connections on the way out */
    if (ch->epfd >= 0)
        close(ch->epfd);
    if (ch->stop_fd >= 0)
        close(ch->stop_fd);
    mp_buf_pools_free(ch);
    free(ch->conns);
    free(ch->ready);
    free(ch->ready_next);
    free(ch->scratch);
    free(ch);
}

int mp_channel_add_listener(mp_channel *ch, int fd, bool is_unix)
{
    if (ch->nlisteners >= MP_MAX_LISTENERS)
        return -1;
    ch->listeners[ch->nlisteners].fd = fd;
    ch->listeners[ch->nlisteners].is_unix = is_unix;
    ch->nlisteners++;
    return 0;
}

void mp_channel_stop(mp_channel *ch)
{
    ch->stopping = 1;
    uint64_t one = 1;
    ssize_t n = write(ch->stop_fd, &one, sizeof(one));
    (void)n;
}

void mp_engine_visit_conns(mp_engine *eng, mp_conn_visit_fn fn, void *arg)
{
    for (int i = 0; i < eng->nchannels; i++) {
        mp_channel *ch = eng->channels[i];
        for (uint32_t s = 0; s < ch->nslots; s++)
            if (ch->conns[s].state != MP_CONN_FREE)
                fn(&ch->conns[s], arg);
    }
}
