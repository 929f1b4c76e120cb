/* The io_uring backend: MegaPipe's batched system calls and lwsockets.
 *
 * One turn is one io_uring_enter: it submits every accept, receive, send and
 * close the previous turn produced and waits for completions; the turn then
 * reaps all completions, runs the protocol over everything that arrived, and
 * queues one send per connection with replies.  Listeners are served by a
 * multishot accept that puts each connection straight into the ring's sparse
 * file table (a direct descriptor, never in the process file table: the
 * lwsocket); receives are multishot from a provided-buffer ring, so idle
 * connections pin no receive memory.
 *
 * user_data carries (operation, generation, slot): a completion for a slot
 * that was closed and reused is recognised by its generation and dropped.
 *
 * A send hands the connection's output buffer to the kernel (sbuf) and starts
 * a fresh one for later replies, so the bytes the kernel reads never move.
 * A connection is torn down only when no operation that could reference its
 * buffers is in flight (state DEAD waits for them).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <unistd.h>

#include "channel.h"
#include "clock.h"
#include "conn.h"
#include "proto/replies.h"
#include "udp.h"
#include "ring.h"

/* Submission queue size: a busy turn queues a send per connection plus
 * re-arms; when it fills we submit early, so this bounds nothing else. */
#define MP_URING_SQ 1024
/* Completion queue: multishot receives can post many CQEs per connection. */
#define MP_URING_CQ 8192
/* Provided receive buffers per channel and their size: 256 x 16 KiB keeps a
 * channel's receive memory at 4 MiB however many connections are open.
 * The kernel takes buffers in ring order and each comes back to the tail,
 * so every buffer it is given is soon written and resident: given all 256
 * at once, 8 MiB of a -t 2 server's RSS after any bulk load, where a turn
 * of 50 busy connections takes about 50.  It is given the first 32, and
 * twice as many at the end of a turn in which a receive found none
 * (ENOBUFS: the data waits in the socket and the receive is re-armed). */
#define MP_URING_NBUFS 256
#define MP_URING_NBUFS_FIRST 32
#define MP_URING_BUFSIZE 16384
#define MP_URING_BGID 1
/* Direct descriptors beyond -c and the backlog (see uring_setup). */
#define MP_URING_FILE_SLACK 64
/* Sends with values by reference per io_uring_enter; more submit early. */
#define MP_URING_MSGS 64

enum { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_CLOSE, OP_STOP, OP_REJECT, OP_CANCEL, OP_PEER, OP_UDP,
       OP_UDP_SEND };

/* A direct descriptor has no getpeername, and a multishot accept cannot
 * return each connection's address: it is asked of the socket with
 * IORING_OP_URING_CMD's getsockopt (Linux 6.7), SOL_SOCKET / SO_PEERNAME,
 * which the kernel runs inline at submission, writing c->peer.  One more
 * submission per connection, in the same io_uring_enter as its receive, and
 * no completion when it succeeds.  Older kernels' headers lack the names. */
#define MP_SOCKET_URING_OP_GETSOCKOPT 2

#define UD(op, gen, slot) (((uint64_t)(op) << 56) | (((uint64_t)(gen) & 0xffffff) << 32) | (slot))
#define UD_OP(u)   ((unsigned)((u) >> 56))
#define UD_GEN(u)  ((uint32_t)(((u) >> 32) & 0xffffff))
#define UD_SLOT(u) ((uint32_t)(u))

struct mp_uring {
    mp_ring ring;
    mp_bufring bufs;
    bool direct;                 /* accept into the registered file table */
    bool rearm_accept[MP_MAX_LISTENERS];
    bool bufs_short;             /* a receive found no buffer this turn */
    bool accept_dead[MP_MAX_LISTENERS];   /* failed for good: not re-armed */
    uint64_t stop_val;
    bool skip_cqe;               /* IOSQE_CQE_SKIP_SUCCESS is supported */
    bool peer_cmd;               /* SO_PEERNAME by IORING_OP_URING_CMD works */
    /* the peer address length of each listener's connections (SO_PEERNAME
     * wants no more than the kernel has); 0: not asked (a Unix socket) */
    uint8_t peer_len[MP_MAX_LISTENERS];
    /* sendmsg headers of this turn's sends with values held by reference:
     * read by the kernel when it consumes the SQE (IORING_FEAT_SUBMIT_STABLE),
     * so they are reused after every io_uring_enter */
    unsigned nmsgs;
    struct msghdr msgs[MP_URING_MSGS];
    struct iovec iovs[MP_URING_MSGS][2 * MP_OUT_REFS + 1];
    /* handed out when the ring refuses submissions for good: the channel
     * has failed and stops, and callers need not check for NULL */
    struct io_uring_sqe sink;
};

static const char too_many_conns[] = R_TOO_MANY_CONNS "\r\n";

/* ---- submission helpers ---- */

/* Submits what is queued without waiting.  A refusal other than a
 * transient one fails the channel. */
static bool submit_early(mp_channel *ch)
{
    for (int tries = 0; tries < 3; tries++) {
        ch->stats.syscalls++;
        int rc = mp_ring_submit(&ch->uring->ring, 0, -1);
        ch->uring->nmsgs = 0;
        if (rc >= 0)
            return true;
        if (rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            mp_channel_fail(ch, rc, "io_uring_enter");
            return false;
        }
    }
    return false;
}

static struct io_uring_sqe *get_sqe(mp_channel *ch)
{
    mp_ring *r = &ch->uring->ring;
    struct io_uring_sqe *sqe = mp_ring_sqe(r);
    if (sqe == NULL) {
        /* full: submit what we have without waiting, then there is room */
        if (submit_early(ch))
            sqe = mp_ring_sqe(r);
        if (sqe == NULL) {
            /* the kernel takes no more submissions: nothing this turn
             * prepares can be relied on, so the channel stops */
            mp_channel_fail(ch, -EBUSY, "io_uring submission queue");
            memset(&ch->uring->sink, 0, sizeof(ch->uring->sink));
            return &ch->uring->sink;
        }
    }
    ch->stats.sqes++;
    return sqe;
}

static void set_fd(struct io_uring_sqe *sqe, const mp_conn *c)
{
    sqe->fd = c->fd;
    if (c->fixed)
        sqe->flags |= IOSQE_FIXED_FILE;
}

static void arm_accept(mp_channel *ch, int i)
{
    struct io_uring_sqe *sqe = get_sqe(ch);
    sqe->opcode = IORING_OP_ACCEPT;
    sqe->fd = ch->listeners[i].fd;
    sqe->ioprio = IORING_ACCEPT_MULTISHOT;
    /* a direct descriptor has no file-table entry to close on exec, and
     * the kernel rejects SOCK_CLOEXEC for it */
    if (ch->uring->direct)
        sqe->file_index = IORING_FILE_INDEX_ALLOC;
    else
        sqe->accept_flags = SOCK_CLOEXEC;
    sqe->user_data = UD(OP_ACCEPT, 0, (uint32_t)i);
}

/* c's peer address into c->peer (see MP_SOCKET_URING_OP_GETSOCKOPT). */
static void ask_peer(mp_channel *ch, mp_conn *c, unsigned len)
{
    struct io_uring_sqe *sqe = get_sqe(ch);
    sqe->opcode = IORING_OP_URING_CMD;
    set_fd(sqe, c);
    sqe->cmd_op = MP_SOCKET_URING_OP_GETSOCKOPT;
    /* the union over addr: level in its low word, optname in its high one */
    sqe->addr = ((uint64_t)SO_PEERNAME << 32) | (uint32_t)SOL_SOCKET;
    sqe->file_index = len;                          /* optlen */
    sqe->addr3 = (uint64_t)(uintptr_t)&c->peer;     /* optval */
    sqe->user_data = UD(OP_PEER, c->gen, c->slot);
    if (ch->uring->skip_cqe)
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    c->peerlen = len;
}

static void on_peer(mp_channel *ch, mp_conn *c, int res)
{
    if (res >= 0)
        return;
    /* the address stays unknown; a kernel without the command is not
     * asked again */
    c->peerlen = 0;
    memset(&c->peer, 0, sizeof(c->peer));
    if (res == -EOPNOTSUPP || res == -EINVAL || res == -ENOTSOCK)
        ch->uring->peer_cmd = false;
}

static void arm_recv(mp_channel *ch, mp_conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(ch);
    sqe->opcode = IORING_OP_RECV;
    set_fd(sqe, c);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = MP_URING_BGID;
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->user_data = UD(OP_RECV, c->gen, c->slot);
    c->recv_armed = true;
}

static void submit_send(mp_channel *ch, mp_conn *c)
{
    mp_uring *u = ch->uring;
    if (c->srefs.n > 0 && u->nmsgs == MP_URING_MSGS && !submit_early(ch))
        return;
    struct io_uring_sqe *sqe = get_sqe(ch);
    set_fd(sqe, c);
    size_t len = c->send - c->sstart + c->srefs.bytes;
    if (c->srefs.n == 0) {
        sqe->opcode = IORING_OP_SEND;
        sqe->addr = (uint64_t)(uintptr_t)(c->sbuf + c->sstart);
        sqe->len = (uint32_t)len;
    } else {
        struct msghdr *m = &u->msgs[u->nmsgs];
        struct iovec *iov = u->iovs[u->nmsgs++];
        memset(m, 0, sizeof(*m));
        m->msg_iov = iov;
        m->msg_iovlen = (size_t)mp_out_iov(c->sbuf, c->sstart, c->send, &c->srefs, iov);
        sqe->opcode = IORING_OP_SENDMSG;
        sqe->addr = (uint64_t)(uintptr_t)m;
        sqe->len = 1;
    }
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = UD(OP_SEND, c->gen, c->slot);
    c->send_inflight = true;
    ch->stats.syscall_write++;   /* counted as the send it replaces */
}

static void close_descriptor(mp_channel *ch, int fd, bool fixed, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(ch);
    sqe->opcode = IORING_OP_CLOSE;
    if (fixed) {
        sqe->fd = 0;
        sqe->file_index = (uint32_t)fd + 1;
    } else {
        sqe->fd = fd;
    }
    sqe->user_data = ud;
    /* nothing to do once it is closed: only a failure needs to wake us */
    if (ch->uring->skip_cqe)
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    ch->stats.syscall_close++;
}

/* ---- connection teardown ---- */

static void cancel_recv(mp_channel *ch, mp_conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(ch);
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->addr = UD(OP_RECV, c->gen, c->slot);
    sqe->user_data = UD(OP_CANCEL, 0, 0);
    if (ch->uring->skip_cqe)
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}


static void finish_close(mp_channel *ch, mp_conn *c)
{
    close_descriptor(ch, c->fd, c->fixed, UD(OP_CLOSE, 0, 0));
    mp_conn_release(ch, c);
}

static void uring_close(mp_channel *ch, mp_conn *c)
{
    if (c->state == MP_CONN_FREE || c->state == MP_CONN_DEAD)
        return;
    mp_conn_drop_borrowed(c);
    if (!c->recv_armed && !c->send_inflight) {
        finish_close(ch, c);
        return;
    }
    c->state = MP_CONN_DEAD;
    if (c->recv_armed)
        cancel_recv(ch, c);
    /* an in-flight send completes (or fails) on its own */
}

/* Flow control: the multishot receive is cancelled; what it delivers before
 * the cancel lands is kept (on_recv), and its last completion
 * (-ECANCELED) re-arms it if the connection was resumed meanwhile. */
static void uring_pause_input(mp_channel *ch, mp_conn *c)
{
    if (c->recv_armed)
        cancel_recv(ch, c);
}

static void uring_resume_input(mp_channel *ch, mp_conn *c)
{
    if (!c->recv_armed)
        arm_recv(ch, c);
}

static void dead_progress(mp_channel *ch, mp_conn *c)
{
    if (c->state == MP_CONN_DEAD && !c->recv_armed && !c->send_inflight)
        finish_close(ch, c);
}

/* ---- output ---- */

static void uring_flush(mp_channel *ch, mp_conn *c)
{
    if (c->state == MP_CONN_DEAD || c->state == MP_CONN_FREE || c->send_inflight)
        return;
    if (mp_out_pending(c) == 0) {
        if (c->wbuf != NULL) {
            mp_buf_put(ch, c->wbuf, c->wsize, MP_BUF_OUT);
            c->wbuf = NULL;
            c->wsize = c->wstart = c->wend = 0;
        }
        if (c->state == MP_CONN_CLOSING)
            uring_close(ch, c);
        return;
    }
    /* hand the buffer to the kernel; later replies start a fresh one */
    mp_buf_put(ch, c->sbuf, c->ssize, MP_BUF_OUT);
    c->sbuf = c->wbuf;
    c->ssize = c->wsize;
    c->sstart = c->wstart;
    c->send = c->wend;
    c->srefs = c->wrefs;
    c->wbuf = NULL;
    c->wsize = c->wstart = c->wend = 0;
    c->wrefs.n = c->wrefs.bytes = 0;
    submit_send(ch, c);
}

static void on_send(mp_channel *ch, mp_conn *c, int res)
{
    c->send_inflight = false;
    if (c->state == MP_CONN_DEAD) {
        dead_progress(ch, c);
        return;
    }
    if (res < 0) {
        if (res == -EINTR || res == -EAGAIN) {
            submit_send(ch, c);
            return;
        }
        uring_close(ch, c);
        return;
    }
    ch->stats.bytes_written += (uint64_t)res;
    mp_out_sent(ch->eng->store, &c->sstart, &c->srefs, (size_t)res);
    if (c->sstart < c->send || c->srefs.n > 0) {
        submit_send(ch, c);
        return;
    }
    mp_buf_put(ch, c->sbuf, c->ssize, MP_BUF_OUT);
    c->sbuf = NULL;
    c->ssize = c->sstart = c->send = 0;
    /* under the mark again, it runs (and flushes what it produces); still
     * over it, what is pending goes out now */
    mp_conn_unblock(ch, c);
    if (c->state != MP_CONN_FREE)
        uring_flush(ch, c);
}

/* ---- input ---- */

static void on_recv(mp_channel *ch, mp_conn *c, int res, unsigned flags)
{
    mp_uring *u = ch->uring;
    bool more = (flags & IORING_CQE_F_MORE) != 0;
    if (!more)
        c->recv_armed = false;
    if (c->state == MP_CONN_DEAD) {
        dead_progress(ch, c);
        return;
    }
    if (res > 0) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        ch->stats.syscall_read++;   /* counted as the read it replaces */
        /* taken even when paused: the bytes have left the socket */
        mp_conn_input(ch, c, mp_bufring_addr(&u->bufs, bid), (size_t)res);
        if (c->state == MP_CONN_OPEN && !c->recv_armed && !c->input_paused)
            arm_recv(ch, c);
        return;
    }
    if (res == -ENOBUFS || res == -ECANCELED) {
        /* every provided buffer is in use this turn (they come back at its
         * end), or flow control cancelled it */
        if (res == -ENOBUFS)
            u->bufs_short = true;
        if (c->state == MP_CONN_OPEN && !c->recv_armed && !c->input_paused)
            arm_recv(ch, c);
        return;
    }
    /* 0: the peer closed; anything else: the connection failed */
    if (c->state == MP_CONN_CLOSING && res == 0)
        return;   /* still flushing the reply to quit */
    if (res == 0)
        c->close_reason = MP_CLOSE_NORMAL;
    uring_close(ch, c);
}

/* ---- accepting ---- */

static void reject(mp_channel *ch, int fd)
{
    struct io_uring_sqe *sqe = get_sqe(ch);
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = fd;
    if (ch->uring->direct)
        sqe->flags |= IOSQE_FIXED_FILE;
    /* hard: the close must happen even if the peer is already gone */
    sqe->flags |= IOSQE_IO_HARDLINK;
    sqe->addr = (uint64_t)(uintptr_t)too_many_conns;
    sqe->len = sizeof(too_many_conns) - 1;
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = UD(OP_REJECT, 0, 0);
    close_descriptor(ch, fd, ch->uring->direct, UD(OP_REJECT, 0, 0));
}

static void on_accept(mp_channel *ch, uint32_t idx, int res, unsigned flags)
{
    /* EINVAL/EBADF/ENOTSOCK would fail again at once: that listener is
     * dropped rather than spinning; EMFILE, ENFILE (table full) and the
     * like are retried next turn */
    if (!(flags & IORING_CQE_F_MORE)) {
        if (res != -EINVAL && res != -EBADF && res != -ENOTSOCK)
            ch->uring->rearm_accept[idx] = true;
        else
            ch->uring->accept_dead[idx] = true;
    }
    if (res < 0)
        return;
    ch->stats.syscall_accept++;   /* counted as the accept4 it replaces */
    if (!mp_conn_admit(ch)) {
        reject(ch, res);
        return;
    }
    mp_conn *c = mp_conn_open(ch, res, &ch->listeners[idx], NULL, 0);
    c->fixed = ch->uring->direct;
    if (ch->uring->peer_cmd && ch->uring->peer_len[idx] != 0)
        ask_peer(ch, c, ch->uring->peer_len[idx]);
    arm_recv(ch, c);
}

static void arm_stop(mp_channel *ch)
{
    struct io_uring_sqe *sqe = get_sqe(ch);
    sqe->opcode = IORING_OP_READ;
    sqe->fd = ch->stop_fd;
    sqe->addr = (uint64_t)(uintptr_t)&ch->uring->stop_val;
    sqe->len = sizeof(ch->uring->stop_val);
    sqe->user_data = UD(OP_STOP, 0, 0);
}

/* Receive k of UDP socket i (udp.h): one datagram into its own buffer.
 * user_data carries k where a connection's carries its generation. */
static void arm_udp(mp_channel *ch, int i, int k)
{
    mp_udp_rx *rx = &ch->udp[i]->rx[k];
    rx->iov.iov_base = rx->buf;
    rx->iov.iov_len = MP_UDP_READ_SIZE;
    memset(&rx->msg, 0, sizeof(rx->msg));
    rx->msg.msg_name = &rx->peer;
    rx->msg.msg_namelen = sizeof(rx->peer);
    rx->msg.msg_iov = &rx->iov;
    rx->msg.msg_iovlen = 1;
    struct io_uring_sqe *sqe = get_sqe(ch);
    sqe->opcode = IORING_OP_RECVMSG;
    sqe->fd = ch->udp[i]->fd;
    sqe->addr = (uint64_t)(uintptr_t)&rx->msg;
    sqe->len = 1;
    sqe->user_data = UD(OP_UDP, k, (uint32_t)i);
}

static bool uring_udp_send(mp_channel *ch, mp_udp *u, const struct iovec *iov, int niov)
{
    if (u->ntx_free == 0) {
        /* what is queued goes first: the rest of the reply follows it */
        submit_early(ch);
        return false;
    }
    int k = u->tx_free[--u->ntx_free];
    mp_udp_tx *t = &u->tx[k];
    size_t n = 0;
    for (int i = 0; i < niov; i++) {
        memcpy(t->data + n, iov[i].iov_base, iov[i].iov_len);
        n += iov[i].iov_len;
    }
    memcpy(&t->peer, &u->conn.peer, u->conn.peerlen);
    t->iov.iov_base = t->data;
    t->iov.iov_len = n;
    memset(&t->msg, 0, sizeof(t->msg));
    t->msg.msg_name = &t->peer;
    t->msg.msg_namelen = u->conn.peerlen;
    t->msg.msg_iov = &t->iov;
    t->msg.msg_iovlen = 1;
    struct io_uring_sqe *sqe = get_sqe(ch);
    sqe->opcode = IORING_OP_SENDMSG;
    sqe->fd = u->fd;
    sqe->addr = (uint64_t)(uintptr_t)&t->msg;
    sqe->len = 1;
    sqe->user_data = UD(OP_UDP_SEND, k, (uint32_t)u->index);
    ch->stats.syscall_write++;   /* counted as the send it replaces */
    return true;
}

static void on_udp_send(mp_channel *ch, uint32_t i, uint32_t k, int res)
{
    if (i >= (uint32_t)ch->nudp || k >= MP_UDP_URING_TX)
        return;
    mp_udp *u = ch->udp[i];
    u->tx_free[u->ntx_free++] = (uint16_t)k;
    if (res > 0)
        ch->stats.bytes_written += (uint64_t)res;
}

static void on_udp(mp_channel *ch, uint32_t i, uint32_t k, int res)
{
    if (i >= (uint32_t)ch->nudp || k >= MP_UDP_URING_RX)
        return;
    mp_udp *u = ch->udp[i];
    mp_udp_rx *rx = &u->rx[k];
    if (res >= 0)
        mp_udp_datagram(ch, u, rx->buf, (size_t)res, &rx->peer, rx->msg.msg_namelen);
    /* re-armed after a datagram or a passing failure; not once cancelled at
     * teardown, nor after a failure that would only come back at once (a
     * receive failing on every turn would keep the loop from ever waiting) */
    bool passing = res >= 0 || res == -EINTR || res == -EAGAIN || res == -ENOBUFS ||
                   res == -ENOMEM || res == -ECONNREFUSED;
    if (passing && !ch->stopping)
        arm_udp(ch, (int)i, (int)k);
}

/* ---- set-up ---- */

static int ring_features_ok(mp_ring *r, char *why, size_t whylen)
{
    static const struct { int op; const char *name; } need[] = {
        {IORING_OP_ACCEPT, "accept"}, {IORING_OP_RECV, "recv"}, {IORING_OP_SEND, "send"},
        {IORING_OP_CLOSE, "close"}, {IORING_OP_ASYNC_CANCEL, "cancel"},
        {IORING_OP_READ, "read"}, {IORING_OP_SENDMSG, "sendmsg"},
    };
    if (!(r->features & IORING_FEAT_EXT_ARG)) {
        snprintf(why, whylen, "kernel lacks IORING_FEAT_EXT_ARG");
        return -1;
    }
    if (!(r->features & IORING_FEAT_SUBMIT_STABLE)) {
        snprintf(why, whylen, "kernel lacks IORING_FEAT_SUBMIT_STABLE");
        return -1;
    }
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
        if (!mp_ring_probe_op(r, need[i].op)) {
            snprintf(why, whylen, "kernel lacks IORING_OP_%s", need[i].name);
            return -1;
        }
    return 0;
}

static int register_files(mp_ring *r, unsigned n)
{
    struct io_uring_rsrc_register reg = {.nr = n, .flags = IORING_RSRC_REGISTER_SPARSE};
    return mp_ring_register(r, IORING_REGISTER_FILES2, &reg, sizeof(reg));
}

int mp_uring_probe(char *why, size_t whylen)
{
    mp_ring r;
    int rc = mp_ring_init(&r, 8, 16, 0);
    if (rc < 0) {
        snprintf(why, whylen, "io_uring_setup: %s", strerror(-rc));
        return -1;
    }
    if (ring_features_ok(&r, why, whylen) < 0) {
        mp_ring_exit(&r);
        return -1;
    }
    mp_bufring b;
    rc = mp_bufring_init(&r, &b, MP_URING_BGID, 2, 2, 64);
    if (rc < 0) {
        snprintf(why, whylen, "provided buffer rings: %s", strerror(-rc));
        mp_ring_exit(&r);
        return -1;
    }
    mp_bufring_free(&r, &b);
    mp_ring_exit(&r);
    return 0;
}

/* What stats report as the receive area: the buffers the kernel has had. */
static void count_bufs(mp_channel *ch)
{
    ch->bufs.fixed_count = ch->uring->bufs.active;
    ch->bufs.fixed_bytes = (uint64_t)ch->uring->bufs.active * MP_URING_BUFSIZE;
}

static int uring_setup(mp_channel *ch)
{
    mp_uring *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return -ENOMEM;
    ch->uring = u;
    /* created on the channel's own thread: SINGLE_ISSUER binds it here */
    int rc = mp_ring_init(&u->ring, MP_URING_SQ, MP_URING_CQ,
                          IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                              IORING_SETUP_COOP_TASKRUN);
    if (rc < 0)
        return rc;
    rc = mp_bufring_init(&u->ring, &u->bufs, MP_URING_BGID, MP_URING_NBUFS, MP_URING_NBUFS_FIRST,
                         MP_URING_BUFSIZE);
    if (rc < 0)
        return rc;
    count_bufs(ch);
    /* A multishot accept takes every connection waiting in the backlog at
     * once, refused ones included (they hold a slot until their close), and
     * one that finds the table full is closed by the kernel unanswered: room
     * for -c, a full backlog and some slack.  The kernel caps the table at
     * RLIMIT_NOFILE, which start-up raises to cover it. */
    struct rlimit nofile;
    unsigned want = ch->maxslots + (unsigned)ch->eng->settings.backlog + MP_URING_FILE_SLACK;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < want)
        want = (unsigned)nofile.rlim_cur;
    u->direct = register_files(&u->ring, want) >= 0;
    ch->fixed_fds = u->direct;
    u->skip_cqe = (u->ring.features & IORING_FEAT_CQE_SKIP) != 0;
    u->peer_cmd = mp_ring_probe_op(&u->ring, IORING_OP_URING_CMD);
    for (int i = 0; i < ch->nlisteners; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (ch->listeners[i].is_unix || getsockname(ch->listeners[i].fd, (struct sockaddr *)&ss, &len) < 0)
            continue;
        if (ss.ss_family == AF_INET)
            u->peer_len[i] = sizeof(struct sockaddr_in);
        else if (ss.ss_family == AF_INET6)
            u->peer_len[i] = sizeof(struct sockaddr_in6);
    }
    /* the channels' rings are alike: channel 0 describes them for all, so
     * no two threads write the description at once */
    if (ch->id == 0)
        snprintf(ch->eng->engine_desc, sizeof(ch->eng->engine_desc),
                 "%s%s%s,multishot_accept,multishot_recv,provided_buffers,sendmsg_by_reference%s%s",
                 u->direct ? "direct_descriptors" : "regular_descriptors",
                 (u->ring.flags & IORING_SETUP_SINGLE_ISSUER) ? ",single_issuer" : "",
                 (u->ring.flags & IORING_SETUP_DEFER_TASKRUN) ? ",defer_taskrun" : "",
                 u->skip_cqe ? ",cqe_skip_success" : "",
                 u->peer_cmd ? ",peer_by_uring_cmd" : "");
    arm_stop(ch);
    for (int i = 0; i < ch->nlisteners; i++)
        arm_accept(ch, i);
    for (int i = 0; i < ch->nudp; i++) {
        mp_udp *ud = ch->udp[i];
        if (ud->tx == NULL && (ud->tx = malloc(MP_UDP_URING_TX * sizeof(mp_udp_tx))) == NULL)
            return -ENOMEM;
        ud->ntx_free = 0;
        for (int k = MP_UDP_URING_TX - 1; k >= 0; k--)
            ud->tx_free[ud->ntx_free++] = (uint16_t)k;
    }
    for (int i = 0; i < ch->nudp; i++)
        for (int k = 0; k < MP_UDP_URING_RX; k++) {
            mp_udp_rx *rx = &ch->udp[i]->rx[k];
            if (rx->buf == NULL && (rx->buf = malloc(MP_UDP_READ_SIZE)) == NULL)
                return -ENOMEM;
            arm_udp(ch, i, k);
        }
    return 0;
}

/* Stopping must leave the listening sockets unreferenced: a pending accept
 * holds its socket open, and the ring's own teardown cancels it only later,
 * asynchronously, so a connect right after stop() would still be accepted by
 * the kernel.  Cancel the accepts and wait (bounded) for their completions. */
#define MP_URING_STOP_WAIT_TURNS 20

static void cancel_accepts(mp_channel *ch)
{
    mp_ring *r = &ch->uring->ring;
    int live = 0;
    for (int i = 0; i < ch->nlisteners; i++) {
        /* only a listener whose multishot accept is still armed */
        if (ch->uring->accept_dead[i] || ch->uring->rearm_accept[i])
            continue;
        struct io_uring_sqe *sqe = get_sqe(ch);
        sqe->opcode = IORING_OP_ASYNC_CANCEL;
        sqe->addr = UD(OP_ACCEPT, 0, (uint32_t)i);
        sqe->user_data = UD(OP_CANCEL, 0, (uint32_t)i);
        live++;
    }
    for (int turn = 0; live > 0 && turn < MP_URING_STOP_WAIT_TURNS; turn++) {
        if (mp_ring_submit(r, 1, MP_MAINTAIN_MS) < 0)
            break;
        unsigned head;
        unsigned n = mp_ring_cq_ready(r, &head);
        for (unsigned k = 0; k < n; k++) {
            struct io_uring_cqe *cqe = mp_ring_cqe_at(r, head + k);
            if (UD_OP(cqe->user_data) == OP_ACCEPT && !(cqe->flags & IORING_CQE_F_MORE))
                live--;
            else if (UD_OP(cqe->user_data) == OP_CANCEL && cqe->res == -ENOENT)
                live--;   /* it had just ended on its own */
            else if (UD_OP(cqe->user_data) == OP_RECV && (cqe->flags & IORING_CQE_F_BUFFER))
                mp_bufring_recycle(&ch->uring->bufs, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            if (UD_OP(cqe->user_data) == OP_ACCEPT && cqe->res >= 0) {
                /* accepted just before the cancel: nobody will serve it */
                close_descriptor(ch, cqe->res, ch->uring->direct, UD(OP_CLOSE, 0, 0));
            }
        }
        mp_ring_cq_advance(r, n);
        mp_bufring_commit(&ch->uring->bufs);
    }
}

static void uring_teardown(mp_channel *ch)
{
    mp_uring *u = ch->uring;
    if (u == NULL)
        return;
    if (u->ring.fd >= 0)
        cancel_accepts(ch);
    /* closing the ring cancels what is in flight and closes the direct
     * descriptors; only then are the connections' buffers ours again */
    if (u->ring.fd >= 0)
        mp_ring_exit(&u->ring);
    for (uint32_t i = 0; i < ch->nslots; i++) {
        mp_conn *c = mp_conn_at(ch, i);
        if (c->state != MP_CONN_FREE) {
            if (!c->fixed)
                close(c->fd);
            mp_conn_drop_borrowed(c);
            mp_conn_release(ch, c);
        }
    }
    mp_bufring_free(&u->ring, &u->bufs);
    ch->bufs.fixed_count = ch->bufs.fixed_bytes = 0;
    free(u);
    ch->uring = NULL;
}

/* ---- the loop ---- */

static void dispatch(mp_channel *ch, struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    unsigned op = UD_OP(ud);
    if (op == OP_RECV && (cqe->flags & IORING_CQE_F_BUFFER)) {
        /* whoever gets the data, the buffer goes back at the end of the turn
         * (mp_conn_input copies what it must keep) */
        mp_bufring_recycle(&ch->uring->bufs, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    }
    switch (op) {
    case OP_ACCEPT:
        on_accept(ch, UD_SLOT(ud), cqe->res, cqe->flags);
        return;
    case OP_STOP:
        ch->stopping = 1;
        return;
    case OP_UDP:
        on_udp(ch, UD_SLOT(ud), UD_GEN(ud), cqe->res);
        return;
    case OP_UDP_SEND:
        on_udp_send(ch, UD_SLOT(ud), UD_GEN(ud), cqe->res);
        return;
    case OP_RECV:
    case OP_SEND:
    case OP_PEER: {
        uint32_t slot = UD_SLOT(ud);
        if (slot >= ch->nslots)
            return;
        mp_conn *c = mp_conn_at(ch, slot);
        if (c->state == MP_CONN_FREE || (c->gen & 0xffffff) != UD_GEN(ud))
            return;
        if (op == OP_RECV)
            on_recv(ch, c, cqe->res, cqe->flags);
        else if (op == OP_SEND)
            on_send(ch, c, cqe->res);
        else
            on_peer(ch, c, cqe->res);
        return;
    }
    default:
        return;   /* close, reject, cancel: nothing to do */
    }
}

/* A turn waits for one completion.  Waiting for more (the completions of
 * sends that finish inside the submit, plus one) with Linux 6.12's min_wait
 * as a bound saved system calls but no CPU where the load generator had its
 * own core, and cost CPU and p99 where it shared ours: each wait the timer
 * ended short was a sleep and a timer interrupt while the clients, on our
 * CPUs, could not send (BENCHMARKS.md notes). */
static int uring_wait(mp_channel *ch, int timeout_ms)
{
    mp_uring *u = ch->uring;
    ch->stats.syscalls++;
    ch->stats.syscall_wait++;
    int rc = mp_ring_submit(&u->ring, timeout_ms == 0 ? 0 : 1, timeout_ms);
    u->nmsgs = 0;
    if (rc < 0 && rc != -EINTR && rc != -ETIME && rc != -EBUSY && rc != -EAGAIN) {
        mp_channel_fail(ch, rc, "io_uring_enter");
        return -1;
    }
    unsigned head;
    return (int)mp_ring_cq_ready(&u->ring, &head);
}

static void uring_handle(mp_channel *ch, int n)
{
    mp_uring *u = ch->uring;
    mp_ring *r = &u->ring;
    unsigned head;
    mp_ring_cq_ready(r, &head);
    for (int i = 0; i < n; i++)
        dispatch(ch, mp_ring_cqe_at(r, head + (unsigned)i));
    mp_ring_cq_advance(r, (unsigned)n);
    if (u->bufs_short) {
        u->bufs_short = false;
        mp_bufring_grow(&u->bufs, u->bufs.active);
        count_bufs(ch);
    }
    mp_bufring_commit(&u->bufs);
    for (int i = 0; i < ch->nlisteners; i++)
        if (u->rearm_accept[i]) {
            u->rearm_accept[i] = false;
            arm_accept(ch, i);
        }
}

/* A handshake step costs hundreds of microseconds: its records go out at
 * once, not after the turn's other handshakes, so the client's half of the
 * handshake runs beside ours (tls-churn-1 in BENCHMARKS.md). */
static void uring_push(mp_channel *ch)
{
    if (mp_ring_queued(&ch->uring->ring) > 0)
        submit_early(ch);
}

const mp_backend mp_uring_backend = {
    .name = "uring",
    .setup = uring_setup,
    .teardown = uring_teardown,
    .wait = uring_wait,
    .handle = uring_handle,
    .flush = uring_flush,
    .close = uring_close,
    .pause_input = uring_pause_input,
    .resume_input = uring_resume_input,
    .push = uring_push,
    .udp_send = uring_udp_send,
};
