/* UDP (-U): memcached's datagram transport for the text protocol.
 *
 * Each channel has its own socket on every UDP address (SO_REUSEPORT, the
 * partitioned listener again), served on the channel's thread.
 *
 * io_uring: datagrams come in by IORING_OP_RECVMSG (MP_UDP_URING_RX receives
 * armed per socket, each with its own buffer, re-armed as each completes)
 * and replies go out by IORING_OP_SENDMSG, each datagram copied into a send
 * slot of its own (MP_UDP_URING_TX per socket, given back by its
 * completion), so nothing of the output buffer or of an item held by
 * reference must outlive the request.  With every slot in flight (a reply of
 * hundreds of datagrams), what is queued is submitted and the rest of the
 * reply goes by sendmmsg, in order.
 * epoll: recvmsg once the socket is readable (mp_udp_serve), replies by
 * sendmmsg.
 *
 * A socket's state (a connection for the protocol, its buffers and slots,
 * its send batch) is allocated when the socket is added or the ring set up,
 * so a request allocates nothing but pooled output buffers.
 *
 * The frame is memcached 1.6.18's (memcached.c try_read_udp,
 * build_udp_header, transmit_udp): 8 bytes, big-endian request id,
 * sequence number, datagram count, reserved.  A request is one datagram: one
 * of 8 bytes or fewer, or whose count is not 1, is dropped; the sequence
 * number and the reserved field are not looked at.  Each response object
 * (conn.h, mp_resps) goes out as ceil(length / 1392) datagrams numbered from
 * 0, each with the header and 1392 bytes of it (1400 in all). */
#ifndef MP_UDP_H
#define MP_UDP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "conn.h"

#define MP_UDP_HEADER 8
/* memcached's UDP_MAX_PAYLOAD_SIZE, the header included */
#define MP_UDP_MAX_PAYLOAD 1400
#define MP_UDP_DATA (MP_UDP_MAX_PAYLOAD - MP_UDP_HEADER)
/* memcached's UDP_READ_BUFFER_SIZE: a longer datagram is cut there */
#define MP_UDP_READ_SIZE 65536
/* datagrams read from one socket per turn, so a flood of them cannot starve
 * the channel's TCP connections */
#define MP_UDP_PER_TURN 64
/* datagrams per sendmmsg */
#define MP_UDP_BATCH 64
/* a datagram's slice of the output: the header plus every piece of the
 * output (mp_out_iov's bound) */
#define MP_UDP_IOV (2 * MP_OUT_REFS + 2)
/* response objects one datagram can start: at most one per input byte */
#define MP_UDP_RESPS (MP_UDP_READ_SIZE + 16)
/* memcached's MAX_SENDBUF_SIZE: a UDP socket's send buffer is asked for
 * this much (the kernel caps it at net.core.wmem_max), so a reply of
 * hundreds of datagrams is not dropped for room */
#define MP_UDP_SNDBUF 268435456
/* io_uring receives armed per socket: datagrams taken per turn */
#define MP_UDP_URING_RX 4
/* io_uring send slots per socket: datagrams in flight */
#define MP_UDP_URING_TX 128

/* One armed IORING_OP_RECVMSG: the kernel reads msg when it consumes the
 * submission and writes the datagram and its sender here. */
typedef struct mp_udp_rx {
    char *buf;                 /* MP_UDP_READ_SIZE */
    struct msghdr msg;
    struct iovec iov;
    struct sockaddr_storage peer;
} mp_udp_rx;

/* One datagram in flight by IORING_OP_SENDMSG: the kernel reads msg when
 * it consumes the submission, the rest until the send completes. */
typedef struct mp_udp_tx {
    struct msghdr msg;
    struct iovec iov;
    struct sockaddr_storage peer;
    uint8_t data[MP_UDP_MAX_PAYLOAD];
} mp_udp_tx;

struct mp_channel;

typedef struct mp_udp {
    int fd;
    int index;                 /* in its channel's udp[] */
    bool more;                 /* left datagrams unread at MP_UDP_PER_TURN */
    uint16_t request_id;       /* of the datagram being answered */
    mp_conn conn;              /* what the protocol runs on (memcached: one
                                * conn per UDP socket and thread) */
    mp_resps resps;
    char *rbuf;                /* epoll: MP_UDP_READ_SIZE, set up with the backend */
    mp_udp_rx rx[MP_UDP_URING_RX];   /* io_uring: set up with the ring */
    mp_udp_tx *tx;             /* io_uring: MP_UDP_URING_TX, set up with the ring */
    uint16_t tx_free[MP_UDP_URING_TX];
    int ntx_free;
    struct mmsghdr msgs[MP_UDP_BATCH];
    struct iovec iov[MP_UDP_BATCH][MP_UDP_IOV];
    uint8_t hdr[MP_UDP_BATCH][MP_UDP_HEADER];
} mp_udp;

/* Before the channel runs: state for a bound UDP socket; NULL when memory
 * is exhausted. */
mp_udp *mp_udp_open(struct mp_channel *ch, int fd);
void mp_udp_free(struct mp_channel *ch, mp_udp *u);
/* The socket is readable: answers up to MP_UDP_PER_TURN datagrams.  Sets
 * u->more when it stopped with datagrams possibly left (the channel serves
 * it again at the end of the turn). */
void mp_udp_serve(struct mp_channel *ch, mp_udp *u);
/* A datagram of n bytes from peer, header included: answered or dropped. */
void mp_udp_datagram(struct mp_channel *ch, mp_udp *u, char *buf, size_t n,
                     const struct sockaddr_storage *peer, socklen_t peerlen);

#endif
