/* UDP (-U): see udp.h for the frame and how a channel serves its sockets. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel.h"
#include "clock.h"
#include "conn.h"
#include "proto/executor.h"
#include "udp.h"

mp_udp *mp_udp_open(mp_channel *ch, int fd)
{
    mp_udp *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->fd = fd;
    u->resps.at = malloc(MP_UDP_RESPS * sizeof(uint32_t));
    u->resps.flags = malloc(MP_UDP_RESPS);
    if (u->resps.at == NULL || u->resps.flags == NULL) {
        mp_udp_free(ch, u);
        return NULL;
    }
    u->resps.cap = MP_UDP_RESPS;
    mp_conn *c = &u->conn;
    c->fd = fd;
    c->slot = MP_NO_SLOT;
    c->state = MP_CONN_OPEN;
    c->listen_fd = fd;
    c->ch = ch;
    c->env = &ch->env;
    c->next_free = MP_NO_SLOT;
    c->last_cmd = mp_current_time;
    c->resps = &u->resps;
    /* memcached negotiates nothing on UDP: no "Client using" line at -vv */
    c->proto.log_negotiated = true;
    /* the binary protocol is served over TCP only: a datagram starting
     * with its magic is read as text (README, Compatibility) */
    c->proto.protocol = MP_PROT_ASCII;
    return u;
}

void mp_udp_free(mp_channel *ch, mp_udp *u)
{
    if (u == NULL)
        return;
    mp_conn *c = &u->conn;
    mp_proto_reset(c);
    mp_refs_release(ch->eng->store, &c->wrefs);
    mp_buf_put(ch, c->wbuf, c->wsize, MP_BUF_OUT);
    free(u->rbuf);
    for (int k = 0; k < MP_UDP_URING_RX; k++)
        free(u->rx[k].buf);
    free(u->tx);
    free(u->resps.at);
    free(u->resps.flags);
    free(u);
}

/* n datagrams of the batch go out; one the kernel refuses (a full send
 * buffer) is dropped with the rest of the batch: UDP promises no delivery,
 * and a channel that waited for room would stall its other clients. */
static void send_batch(mp_channel *ch, mp_udp *u, int n)
{
    int done = 0;
    while (done < n) {
        ch->stats.syscalls++;
        ch->stats.syscall_write++;
        int r = sendmmsg(u->fd, u->msgs + done, (unsigned)(n - done), MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        for (int i = done; i < done + r; i++)
            ch->stats.bytes_written += u->msgs[i].msg_len;
        done += r;
    }
}

/* Everything pending goes out, each response object as its own datagrams
 * (memcached's transmit_udp, one response at a time), then the output is
 * given back. */
static void flush(mp_channel *ch, mp_udp *u)
{
    mp_conn *c = &u->conn;
    mp_resps *rs = &u->resps;
    uint32_t total = (uint32_t)mp_out_pending(c);
    struct iovec out[2 * MP_OUT_REFS + 1];
    int nout = mp_out_iov(c->wbuf, c->wstart, c->wend, &c->wrefs, out);
    int oi = 0;
    size_t ooff = 0;
    int nb = 0;
    bool by_backend = ch->be != NULL && ch->be->udp_send != NULL;
    /* output ahead of the first response (none is expected) goes as one */
    bool lead = rs->n == 0 ? total > 0 : rs->at[0] > 0;
    /* a resumed get's first response continues the batch sent last */
    bool batch_sent = rs->sent;
    for (int32_t i = lead ? -1 : 0; i < (int32_t)rs->n; i++) {
        uint32_t start = i < 0 ? 0 : rs->at[i];
        uint32_t end = i + 1 < (int32_t)rs->n ? rs->at[i + 1] : total;
        uint32_t len = end - start;
        uint8_t flags = i < 0 ? 0 : rs->flags[i];
        if (flags & MP_RESP_BATCH)
            batch_sent = false;
        /* an empty one: silenced by noreply (memcached's skip), or behind
         * one its batch already sent (see MP_RESP_BATCH) */
        if (len == 0 && (!(flags & MP_RESP_FORCED) || batch_sent))
            continue;
        batch_sent = true;
        uint32_t count = len / MP_UDP_DATA + (len % MP_UDP_DATA != 0);
        if (count > 65535)
            count = 65535;
        uint16_t seq = 0;
        do {
            uint32_t chunk = len < MP_UDP_DATA ? len : MP_UDP_DATA;
            if (nb == MP_UDP_BATCH) {
                send_batch(ch, u, nb);
                nb = 0;
            }
            uint8_t *h = u->hdr[nb];
            h[0] = (uint8_t)(u->request_id >> 8);
            h[1] = (uint8_t)u->request_id;
            h[2] = (uint8_t)(seq >> 8);
            h[3] = (uint8_t)seq;
            h[4] = (uint8_t)(count >> 8);
            h[5] = (uint8_t)count;
            h[6] = h[7] = 0;
            struct iovec *iov = u->iov[nb];
            int niov = 0;
            iov[niov].iov_base = h;
            iov[niov++].iov_len = MP_UDP_HEADER;
            uint32_t need = chunk;
            while (need > 0 && oi < nout) {
                size_t avail = out[oi].iov_len - ooff;
                size_t take = avail < need ? avail : need;
                if (take > 0) {
                    iov[niov].iov_base = (char *)out[oi].iov_base + ooff;
                    iov[niov++].iov_len = take;
                }
                need -= (uint32_t)take;
                ooff += take;
                if (ooff == out[oi].iov_len) {
                    oi++;
                    ooff = 0;
                }
            }
            if (by_backend) {
                if (ch->be->udp_send(ch, u, iov, niov)) {
                    seq++;
                    len -= chunk;
                    continue;
                }
                by_backend = false;
            }
            struct msghdr *m = &u->msgs[nb].msg_hdr;
            memset(m, 0, sizeof(*m));
            m->msg_name = &c->peer;
            m->msg_namelen = c->peerlen;
            m->msg_iov = iov;
            m->msg_iovlen = (size_t)niov;
            nb++;
            seq++;
            len -= chunk;
        } while (len > 0);
    }
    if (nb > 0)
        send_batch(ch, u, nb);
    mp_out_sent(ch->eng->store, &c->wstart, &c->wrefs, total);
    mp_refs_release(ch->eng->store, &c->wrefs);
    if (c->wbuf != NULL)
        mp_buf_put(ch, c->wbuf, c->wsize, MP_BUF_OUT);
    c->wbuf = NULL;
    c->wsize = c->wstart = c->wend = 0;
    c->out_oom = false;
    rs->n = 0;
    rs->new_batch = true;
    rs->sent = batch_sent;
}

/* One request datagram, without its header: every command in it runs, its
 * replies go out as it yields and at its end, and whatever is left
 * unfinished (a partial line or data block) goes with the datagram, which
 * is the whole request.  memcached keeps a data block's missing part waiting
 * and reads it from the next datagram, header and all, as data; quit there
 * also leaves the socket cutting every later datagram short after its first
 * reply (README, Compatibility). */
static void request(mp_channel *ch, mp_udp *u, char *data, uint32_t n)
{
    mp_conn *c = &u->conn;
    c->rbuf = data;
    c->rsize = c->rend = n;
    c->rstart = 0;
    c->rbuf_borrowed = true;
    int budget = ch->eng->settings.reqs_per_event;
    for (;;) {
        int r = mp_process(c, budget);
        mp_out_check(c);
        flush(ch, u);
        if (r != MP_PROC_YIELD)
            break;
        ch->stats.conn_yields++;
    }
    mp_proto_reset(c);
    c->proto.yielded = false;
    c->close_after_write = false;
    c->rbuf = NULL;
    c->rsize = c->rstart = c->rend = 0;
    c->rbuf_borrowed = false;
}

void mp_udp_datagram(mp_channel *ch, mp_udp *u, char *buf, size_t n,
                     const struct sockaddr_storage *peer, socklen_t peerlen)
{
    if (n <= MP_UDP_HEADER)
        return;
    ch->stats.bytes_read += (uint64_t)n;
    const uint8_t *h = (const uint8_t *)buf;
    /* a request in more than one datagram is not served */
    if (h[4] != 0 || h[5] != 1)
        return;
    mp_conn *c = &u->conn;
    if (peer != &c->peer) {
        if (peerlen > sizeof(c->peer))
            peerlen = sizeof(c->peer);
        memcpy(&c->peer, peer, peerlen);
    }
    c->peerlen = peerlen;
    u->request_id = (uint16_t)(h[0] << 8 | h[1]);
    request(ch, u, buf + MP_UDP_HEADER, (uint32_t)(n - MP_UDP_HEADER));
}

void mp_udp_serve(mp_channel *ch, mp_udp *u)
{
    mp_conn *c = &u->conn;
    u->more = false;
    for (int k = 0; k < MP_UDP_PER_TURN; k++) {
        struct iovec iov = {.iov_base = u->rbuf, .iov_len = MP_UDP_READ_SIZE};
        struct msghdr msg = {.msg_name = &c->peer, .msg_namelen = sizeof(c->peer),
                             .msg_iov = &iov, .msg_iovlen = 1};
        ch->stats.syscalls++;
        ch->stats.syscall_read++;
        ssize_t n = recvmsg(u->fd, &msg, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;   /* EAGAIN: drained */
        }
        mp_udp_datagram(ch, u, u->rbuf, (size_t)n, &c->peer, msg.msg_namelen);
    }
    u->more = true;
}
