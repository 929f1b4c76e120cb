/* The epoll backend: the fallback where io_uring is unavailable.
 *
 * One turn: epoll_wait for up to MP_EVENTS_PER_TURN events; accept on ready
 * listeners; for each readable connection one recv into the channel's scratch
 * buffer (or behind a partial request it keeps), the protocol over all of it,
 * and the replies of every pipelined request in one send.  Level-triggered:
 * a connection not read this turn (it yielded, or its output is blocked) is
 * reported again by the next epoll_wait, so nothing is lost by skipping it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel.h"
#include "clock.h"
#include "conn.h"
#include "proto/replies.h"
#include "udp.h"

/* epoll user data: tag in the top two bits, then the slot's generation, then
 * the slot, so an event for a slot closed and reused within one batch is
 * recognised as stale. */
#define TAG_CONN     0ULL
#define TAG_LISTENER 1ULL
#define TAG_STOP     2ULL
#define TAG_UDP      3ULL
#define TAG_SHIFT    62
#define GEN_MASK     0x3fffffffULL

static const char too_many_conns[] = R_TOO_MANY_CONNS "\r\n";

static inline uint64_t conn_token(const mp_conn *c)
{
    return (TAG_CONN << TAG_SHIFT) | (((uint64_t)c->gen & GEN_MASK) << 32) | c->slot;
}

static int set_events(mp_channel *ch, mp_conn *c, uint32_t events)
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

/* What the connection waits for: input unless it is closing, paused by flow
 * control or stopped at the output mark (level-triggered, the input then
 * waits in the socket and is reported again once asked for), writability
 * while output is pending. */
static int update_interest(mp_channel *ch, mp_conn *c)
{
    uint32_t ev = 0;
    if (c->state == MP_CONN_OPEN && !c->input_paused && !c->blocked_out)
        ev |= EPOLLIN;
    if (mp_out_pending(c) > 0)
        ev |= EPOLLOUT;
    return set_events(ch, c, ev);
}

static void epoll_close(mp_channel *ch, mp_conn *c)
{
    if (c->state == MP_CONN_FREE)
        return;
    ch->stats.syscalls++;
    ch->stats.syscall_close++;
    close(c->fd);   /* also leaves the epoll set */
    mp_conn_release(ch, c);
}

/* One send of everything pending: values held by reference go out from
 * their items in the same sendmsg. */
static void epoll_flush(mp_channel *ch, mp_conn *c)
{
    size_t pending = mp_out_pending(c);
    if (pending > 0) {
        ch->stats.syscalls++;
        ch->stats.syscall_write++;
        ssize_t n;
        if (c->wrefs.n == 0) {
            n = send(c->fd, c->wbuf + c->wstart, pending, MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            struct iovec iov[2 * MP_OUT_REFS + 1];
            struct msghdr msg = {.msg_iov = iov};
            msg.msg_iovlen = (size_t)mp_out_iov(c->wbuf, c->wstart, c->wend, &c->wrefs, iov);
            n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                epoll_close(ch, c);
                return;
            }
            n = 0;
        }
        ch->stats.bytes_written += (uint64_t)n;
        mp_out_sent(ch->eng->store, &c->wstart, &c->wrefs, (size_t)n);
        pending -= (size_t)n;
    }
    if (pending == 0 && c->wbuf != NULL) {
        mp_buf_put(ch, c->wbuf, c->wsize, MP_BUF_OUT);
        c->wbuf = NULL;
        c->wsize = c->wstart = c->wend = 0;
    }
    if (pending == 0 && c->state == MP_CONN_CLOSING) {
        epoll_close(ch, c);
        return;
    }
    if (update_interest(ch, c) < 0)
        epoll_close(ch, c);
}

static void epoll_pause_input(mp_channel *ch, mp_conn *c)
{
    if (update_interest(ch, c) < 0)
        epoll_close(ch, c);
}

static void conn_readable(mp_channel *ch, mp_conn *c)
{
    char *dst;
    size_t room;
    /* TLS input is ciphertext: never behind the plaintext kept in rbuf */
    if (c->rbuf == NULL || c->tls != NULL) {
        dst = ch->scratch;
        room = MP_SCRATCH_SIZE;
    } else {
        /* behind the partial request the connection keeps */
        if (!mp_conn_rbuf_room(ch, c, c->rend == c->rsize ? c->rsize : 1)) {
            epoll_close(ch, c);
            return;
        }
        dst = c->rbuf + c->rend;
        room = c->rsize - c->rend;
    }
    ch->stats.syscalls++;
    ch->stats.syscall_read++;
    ssize_t n = recv(c->fd, dst, room, MSG_DONTWAIT);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n == 0)
            c->close_reason = MP_CLOSE_NORMAL;
        epoll_close(ch, c);
        return;
    }
    if (dst == ch->scratch)
        mp_conn_input(ch, c, dst, (size_t)n);
    else
        mp_conn_received(ch, c, (size_t)n);
}

static void conn_writable(mp_channel *ch, mp_conn *c)
{
    epoll_flush(ch, c);
    if (c->state == MP_CONN_OPEN)
        mp_conn_unblock(ch, c);
}

static void listener_ready(mp_channel *ch, mp_listener *l)
{
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
             * shared unix listener); EMFILE and friends: retried next turn */
            return;
        }
        if (!mp_conn_admit(ch)) {
            ch->stats.syscalls += 2;
            ssize_t w = send(fd, too_many_conns, sizeof(too_many_conns) - 1,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
            close(fd);
            continue;
        }
        /* admitted: a slot is free */
        mp_conn *c = mp_conn_open(ch, fd, l, &peer, len);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = conn_token(c)};
        c->events = EPOLLIN;
        ch->stats.syscalls++;
        ch->stats.syscall_ctl++;
        if (epoll_ctl(ch->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            epoll_close(ch, c);
    }
}

static int epoll_setup(mp_channel *ch)
{
    ch->scratch = malloc(MP_SCRATCH_SIZE);
    ch->events = malloc(MP_EVENTS_PER_TURN * sizeof(struct epoll_event));
    if (ch->scratch == NULL || ch->events == NULL)
        return -ENOMEM;
    ch->bufs.fixed_count = 1;
    ch->bufs.fixed_bytes = MP_SCRATCH_SIZE;
    ch->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ch->epfd < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_STOP << TAG_SHIFT};
    if (epoll_ctl(ch->epfd, EPOLL_CTL_ADD, ch->stop_fd, &ev) < 0)
        return -errno;
    for (int i = 0; i < ch->nlisteners; i++) {
        ev.events = EPOLLIN;
        ev.data.u64 = (TAG_LISTENER << TAG_SHIFT) | (uint64_t)i;
        /* a unix listener is shared by all channels: wake one per connection */
        if (ch->listeners[i].is_unix)
            ev.events |= EPOLLEXCLUSIVE;
        if (epoll_ctl(ch->epfd, EPOLL_CTL_ADD, ch->listeners[i].fd, &ev) < 0)
            return -errno;
    }
    for (int i = 0; i < ch->nudp; i++) {
        mp_udp *u = ch->udp[i];
        if (u->rbuf == NULL && (u->rbuf = malloc(MP_UDP_READ_SIZE)) == NULL)
            return -ENOMEM;
        ev.events = EPOLLIN;
        ev.data.u64 = (TAG_UDP << TAG_SHIFT) | (uint64_t)i;
        if (epoll_ctl(ch->epfd, EPOLL_CTL_ADD, ch->udp[i]->fd, &ev) < 0)
            return -errno;
    }
    return 0;
}

static void epoll_teardown(mp_channel *ch)
{
    for (uint32_t i = 0; i < ch->nslots; i++)
        epoll_close(ch, mp_conn_at(ch, i));
    if (ch->epfd >= 0)
        close(ch->epfd);
    ch->epfd = -1;
    free(ch->scratch);
    ch->scratch = NULL;
    free(ch->events);
    ch->events = NULL;
    ch->bufs.fixed_count = ch->bufs.fixed_bytes = 0;
}

static void dispatch(mp_channel *ch, const struct epoll_event *ev)
{
    uint64_t u = ev->data.u64;
    uint64_t tag = u >> TAG_SHIFT;
    if (tag == TAG_STOP) {
        ch->stopping = 1;
        return;
    }
    if (tag == TAG_LISTENER) {
        listener_ready(ch, &ch->listeners[u & 0xffffffffULL]);
        return;
    }
    if (tag == TAG_UDP) {
        mp_udp_serve(ch, ch->udp[u & 0xffffffffULL]);
        return;
    }
    if ((uint32_t)u >= ch->nslots)
        return;
    mp_conn *c = mp_conn_at(ch, (uint32_t)u);
    uint32_t gen = (uint32_t)((u >> 32) & GEN_MASK);
    if (c->state == MP_CONN_FREE || (c->gen & GEN_MASK) != gen)
        return;
    uint32_t e = ev->events;
    if (e & EPOLLOUT)
        conn_writable(ch, c);
    if (c->state == MP_CONN_FREE || (c->gen & GEN_MASK) != gen)
        return;
    if (!(e & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        return;
    if (c->state == MP_CONN_OPEN && !c->in_ready && !c->blocked_out)
        conn_readable(ch, c);
    else if (e & (EPOLLERR | EPOLLHUP))
        epoll_close(ch, c);
}

static int epoll_wait_events(mp_channel *ch, int timeout_ms)
{
    ch->stats.syscalls++;
    ch->stats.syscall_wait++;
    int n = epoll_wait(ch->epfd, ch->events, MP_EVENTS_PER_TURN, timeout_ms);
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        mp_channel_fail(ch, -errno, "epoll_wait");
        return -1;
    }
    return n;
}

static void epoll_handle(mp_channel *ch, int n)
{
    for (int i = 0; i < n; i++)
        dispatch(ch, &ch->events[i]);
}

const mp_backend mp_epoll_backend = {
    .name = "epoll",
    .setup = epoll_setup,
    .teardown = epoll_teardown,
    .wait = epoll_wait_events,
    .handle = epoll_handle,
    .flush = epoll_flush,
    .close = epoll_close,
    .pause_input = epoll_pause_input,
    /* level-triggered: interest follows the connection's state either way */
    .resume_input = epoll_pause_input,
};
