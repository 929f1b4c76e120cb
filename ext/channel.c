/* The channel loop on epoll.
 *
 * One turn: epoll_wait for up to MP_EVENTS_PER_TURN events; accept on ready
 * listeners; for each readable connection one read into the channel's scratch
 * buffer, then the protocol runs over everything that arrived and the replies
 * of all pipelined requests go out in one send; connections that spent their
 * request budget (-R) are resumed at the end of the turn, after everyone else
 * had a go.  Level-triggered, so a connection that is not read this turn is
 * simply reported again by the next epoll_wait.
 *
 * System calls per request are counted in ch->stats so the benchmark can
 * report them without strace.
 */
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

/* epoll user data: tag in the top two bits, then the slot's generation, then
 * the slot, so an event for a slot closed and reused within one batch is
 * recognised as stale. */
#define TAG_CONN     0ULL
#define TAG_LISTENER 1ULL
#define TAG_STOP     2ULL
#define TAG_SHIFT    62
#define GEN_MASK     0x3fffffffULL

static const char too_many_conns[] = "ERROR Too many open connections\r\n";

static inline uint64_t conn_token(const mp_conn *c)
{
    return (TAG_CONN << TAG_SHIFT) | (((uint64_t)c->gen & GEN_MASK) << 32) | c->slot;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- interest registration ---- */

static int conn_set_events(mp_channel *ch, mp_conn *c, uint32_t events)
{
    if (c->events == events)
        return 0;
    struct epoll_event ev = {.events = events, .data.u64 = conn_token(c)};
    ch->stats.syscalls++;
    ch->stats.syscall_ctl++;
    if (epoll_ctl(ch->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        return -1;
    c->events = events;
    return 0;
}

/* ---- connection life cycle ---- */

static void conn_close(mp_channel *ch, mp_conn *c)
{
    if (c->state == MP_CONN_FREE)
        return;
    mp_proto_reset(c);
    ch->stats.syscalls++;
    ch->stats.syscall_close++;
    close(c->fd);   /* also removes it from the epoll set */
    if (c->rbuf != NULL && c->rbuf != ch->scratch)
        mp_buf_put(ch, c->rbuf, c->rsize);
    if (c->wbuf != NULL)
        mp_buf_put(ch, c->wbuf, c->wsize);
    c->rbuf = c->wbuf = NULL;
    c->rsize = c->rstart = c->rend = 0;
    c->wsize = c->wstart = c->wend = 0;
    c->state = MP_CONN_FREE;
    c->fd = -1;
    c->gen++;
    c->in_ready = false;   /* the ready list skips free slots */
    c->next_free = ch->free_head;
    ch->free_head = c->slot;
    ch->nopen--;
    __atomic_sub_fetch(&ch->eng->curr_conns, 1, __ATOMIC_RELAXED);
}

static mp_conn *conn_open(mp_channel *ch, int fd, const mp_listener *l,
                          const struct sockaddr_storage *peer, socklen_t peerlen)
{
    uint32_t slot = ch->free_head;
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
    c->events = EPOLLIN;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = conn_token(c)};
    ch->stats.syscalls++;
    ch->stats.syscall_ctl++;
    if (epoll_ctl(ch->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        c->state = MP_CONN_FREE;
        c->next_free = ch->free_head;
        ch->free_head = slot;
        return NULL;
    }
    ch->nopen++;
    return c;
}

static void ready_push(mp_channel *ch, mp_conn *c)
{
    if (c->in_ready)
        return;
    c->in_ready = true;
    c->next_free = MP_NO_SLOT;
    if (ch->ready_tail == MP_NO_SLOT)
        ch->ready_head = c->slot;
    else
        ch->conns[ch->ready_tail].next_free = c->slot;
    ch->ready_tail = c->slot;
}

/* Gives back the input buffer when nothing is left in it, and moves a partial
 * request out of the shared scratch buffer into one the connection keeps. */
static bool conn_keep_input(mp_channel *ch, mp_conn *c)
{
    uint32_t left = c->rend - c->rstart;
    if (c->rbuf == ch->scratch) {
        if (left == 0) {
            c->rbuf = NULL;
            c->rsize = c->rstart = c->rend = 0;
            return true;
        }
        uint32_t size = MP_BUF_INITIAL;
        char *buf;
        if (left <= MP_BUF_INITIAL) {
            buf = mp_buf_get(ch);
        } else {
            while (size < left)
                size *= 2;
            buf = malloc(size);
        }
        if (buf == NULL)
            return false;
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

/* One send of everything pending.  Returns false if the connection closed. */
static bool conn_flush(mp_channel *ch, mp_conn *c)
{
    uint32_t pending = c->wend - c->wstart;
    if (pending > 0) {
        ch->stats.syscalls++;
        ch->stats.syscall_write++;
        ssize_t n = send(c->fd, c->wbuf + c->wstart, pending, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_close(ch, c);
                return false;
            }
            n = 0;
        }
        ch->stats.bytes_written += (uint64_t)n;
        c->wstart += (uint32_t)n;
        pending -= (uint32_t)n;
    }
    if (pending > 0) {
        uint32_t ev = (c->blocked_out || c->state == MP_CONN_CLOSING) ? EPOLLOUT
                                                                      : EPOLLIN | EPOLLOUT;
        if (conn_set_events(ch, c, ev) < 0) {
            conn_close(ch, c);
            return false;
        }
        c->want_write = true;
        return true;
    }
    if (c->wbuf != NULL) {
        mp_buf_put(ch, c->wbuf, c->wsize);
        c->wbuf = NULL;
        c->wsize = c->wstart = c->wend = 0;
    }
    c->want_write = false;
    if (c->state == MP_CONN_CLOSING) {
        conn_close(ch, c);
        return false;
    }
    if (conn_set_events(ch, c, EPOLLIN) < 0) {
        conn_close(ch, c);
        return false;
    }
    return true;
}

/* Runs the protocol over what is buffered, then sends the replies. */
static void conn_run(mp_channel *ch, mp_conn *c)
{
    int r = mp_process(c, ch->eng->settings.reqs_per_event);
    if (r == MP_PROC_CLOSE) {
        if (!c->close_after_write) {
            conn_close(ch, c);
            return;
        }
        c->state = MP_CONN_CLOSING;
        c->rstart = c->rend;   /* input after quit is ignored */
    }
    if (!conn_keep_input(ch, c)) {
        conn_close(ch, c);
        return;
    }
    if (r == MP_PROC_YIELD) {
        ch->stats.conn_yields++;
        if (mp_out_pending(c) > MP_OUT_HIGHWATER)
            c->blocked_out = true;
        else
            ready_push(ch, c);
    }
    conn_flush(ch, c);
}

static void conn_readable(mp_channel *ch, mp_conn *c)
{
    if (c->in_ready || c->blocked_out || c->state != MP_CONN_OPEN)
        return;
    if (c->rbuf == NULL) {
        c->rbuf = ch->scratch;
        c->rsize = MP_SCRATCH_SIZE;
        c->rstart = c->rend = 0;
    } else {
        if (c->rstart > 0) {
            memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
            c->rend -= c->rstart;
            c->rstart = 0;
        }
        if (c->rend == c->rsize || c->proto.want_rbuf > c->rsize) {
            /* a request (a long multi-get line) longer than the buffer */
            size_t want = (size_t)c->rsize * 2;
            if (want < c->proto.want_rbuf)
                want = c->proto.want_rbuf;
            if (want > MP_RBUF_MAX) {
                conn_close(ch, c);
                return;
            }
            char *nb = malloc(want);
            if (nb == NULL) {
                conn_close(ch, c);
                return;
            }
            memcpy(nb, c->rbuf, c->rend);
            mp_buf_put(ch, c->rbuf, c->rsize);
            c->rbuf = nb;
            c->rsize = (uint32_t)want;
        }
    }
    ch->stats.syscalls++;
    ch->stats.syscall_read++;
    ssize_t n = recv(c->fd, c->rbuf + c->rend, c->rsize - c->rend, MSG_DONTWAIT);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            conn_keep_input(ch, c);
            return;
        }
        conn_close(ch, c);
        return;
    }
    ch->stats.bytes_read += (uint64_t)n;
    c->rend += (uint32_t)n;
    c->last_active = mp_current_time;
    conn_run(ch, c);
}

static void conn_writable(mp_channel *ch, mp_conn *c)
{
    if (!conn_flush(ch, c))
        return;
    if (c->blocked_out && mp_out_pending(c) == 0) {
        c->blocked_out = false;
        if (c->rbuf == NULL) {
            /* nothing buffered: the data is still in the socket */
            return;
        }
        conn_run(ch, c);
    }
}

/* ---- accepting: this channel's partition of each listening address ---- */

static void reject(mp_channel *ch, int fd)
{
    ch->stats.syscalls += 2;
    ch->stats.syscall_write++;
    ch->stats.syscall_close++;
    ch->stats.rejected_conns++;
    ssize_t n = send(fd, too_many_conns, sizeof(too_many_conns) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
    close(fd);
}

static void listener_ready(mp_channel *ch, mp_listener *l)
{
    mp_engine *eng = ch->eng;
    for (int k = 0; k < MP_ACCEPTS_PER_TURN; k++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        ch->stats.syscalls++;
        ch->stats.syscall_accept++;
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            /* EAGAIN: drained (another channel may have won the race for a
             * shared unix listener); EMFILE and friends: retried next turn. */
            return;
        }
        int now = __atomic_add_fetch(&eng->curr_conns, 1, __ATOMIC_RELAXED);
        if (now > eng->settings.maxconns || ch->free_head == MP_NO_SLOT) {
            __atomic_sub_fetch(&eng->curr_conns, 1, __ATOMIC_RELAXED);
            reject(ch, fd);
            continue;
        }
        mp_conn *c = conn_open(ch, fd, l, &peer, len);
        if (c == NULL) {
            __atomic_sub_fetch(&eng->curr_conns, 1, __ATOMIC_RELAXED);
            close(fd);
            continue;
        }
        ch->stats.accepts++;
        ch->stats.total_conns++;
    }
}

/* ---- periodic work ---- */

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
            if (c->state == MP_CONN_OPEN && !c->want_write &&
                now - c->last_active > (mp_rel_time)idle)
                conn_close(ch, c);
        }
    }
}

static void run_ready(mp_channel *ch)
{
    uint32_t slot = ch->ready_head;
    ch->ready_head = ch->ready_tail = MP_NO_SLOT;
    while (slot != MP_NO_SLOT) {
        mp_conn *c = &ch->conns[slot];
        slot = c->next_free;
        if (!c->in_ready)
            continue;
        c->in_ready = false;
        c->next_free = MP_NO_SLOT;
        if (c->state == MP_CONN_OPEN)
            conn_run(ch, c);
    }
}

static void hist_add(mp_channel *ch, int n)
{
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
    struct epoll_event events[MP_EVENTS_PER_TURN];

    while (!ch->stopping) {
        mp_clock_update();
        int timeout = ch->ready_head != MP_NO_SLOT ? 0 : MP_MAINTAIN_MS;
        ch->stats.syscalls++;
        ch->stats.syscall_wait++;
        int n = epoll_wait(ch->epfd, events, MP_EVENTS_PER_TURN, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        mp_clock_update();
        ch->stats.loop_turns++;
        ch->stats.events += (uint64_t)n;
        hist_add(ch, n);
        for (int i = 0; i < n; i++) {
            uint64_t u = events[i].data.u64;
            uint64_t tag = u >> TAG_SHIFT;
            if (tag == TAG_STOP) {
                ch->stopping = 1;
                continue;
            }
            if (tag == TAG_LISTENER) {
                listener_ready(ch, &ch->listeners[u & 0xffffffffULL]);
                continue;
            }
            uint32_t slot = (uint32_t)u;
            mp_conn *c = &ch->conns[slot];
            if (c->state == MP_CONN_FREE || (c->gen & GEN_MASK) != ((u >> 32) & GEN_MASK))
                continue;
            uint32_t e = events[i].events;
            if (e & EPOLLOUT)
                conn_writable(ch, c);
            if (c->state == MP_CONN_FREE || (c->gen & GEN_MASK) != ((u >> 32) & GEN_MASK))
                continue;
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if (c->state == MP_CONN_CLOSING || c->blocked_out) {
                    if (e & (EPOLLERR | EPOLLHUP))
                        conn_close(ch, c);
                } else {
                    conn_readable(ch, c);
                }
            }
        }
        run_ready(ch);
        uint64_t t = now_ms();
        if (t - ch->last_maintain_ms >= MP_MAINTAIN_MS) {
            ch->last_maintain_ms = t;
            channel_maintain(ch);
        }
    }

    for (uint32_t i = 0; i < ch->nslots; i++)
        conn_close(ch, &ch->conns[i]);
    return 0;
}

/* ---- set-up, called from the engine before the loop runs ---- */

mp_channel *mp_channel_create(mp_engine *eng, int id)
{
    mp_channel *ch = calloc(1, sizeof(*ch));
    if (ch == NULL)
        return NULL;
    ch->id = id;
    ch->eng = eng;
    ch->epfd = epoll_create1(EPOLL_CLOEXEC);
    ch->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ch->nslots = (uint32_t)eng->settings.maxconns;
    ch->conns = calloc(ch->nslots, sizeof(mp_conn));
    ch->scratch = malloc(MP_SCRATCH_SIZE);
    ch->ready_head = ch->ready_tail = MP_NO_SLOT;
    if (ch->epfd < 0 || ch->stop_fd < 0 || ch->conns == NULL || ch->scratch == NULL) {
        mp_channel_destroy(ch);
        return NULL;
    }
    for (uint32_t i = 0; i < ch->nslots; i++) {
        ch->conns[i].fd = -1;
        ch->conns[i].slot = i;
        ch->conns[i].next_free = i + 1 < ch->nslots ? i + 1 : MP_NO_SLOT;
    }
    ch->free_head = ch->nslots > 0 ? 0 : MP_NO_SLOT;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_STOP << TAG_SHIFT};
    if (epoll_ctl(ch->epfd, EPOLL_CTL_ADD, ch->stop_fd, &ev) < 0) {
        mp_channel_destroy(ch);
        return NULL;
    }
    return ch;
}

void mp_channel_destroy(mp_channel *ch)
{
    if (ch == NULL)
        return;
    if (ch->conns != NULL)
        for (uint32_t i = 0; i < ch->nslots; i++)
            if (ch->conns[i].state != MP_CONN_FREE)
                conn_close(ch, &ch->conns[i]);
    if (ch->epfd >= 0)
        close(ch->epfd);
    if (ch->stop_fd >= 0)
        close(ch->stop_fd);
    for (int i = 0; i < ch->npool; i++)
        free(ch->pool[i]);
    free(ch->conns);
    free(ch->scratch);
    free(ch);
}

int mp_channel_add_listener(mp_channel *ch, int fd, bool is_unix)
{
    if (ch->nlisteners >= MP_MAX_LISTENERS)
        return -1;
    int idx = ch->nlisteners;
    struct epoll_event ev = {.events = EPOLLIN,
                             .data.u64 = (TAG_LISTENER << TAG_SHIFT) | (uint64_t)idx};
    /* a unix listener is shared by all channels: wake only one per connection */
    if (is_unix)
        ev.events |= EPOLLEXCLUSIVE;
    if (epoll_ctl(ch->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -1;
    ch->listeners[idx].fd = fd;
    ch->listeners[idx].is_unix = is_unix;
    ch->nlisteners++;
    return 0;
}

void mp_channel_stop(mp_channel *ch)
{
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
