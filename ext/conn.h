/* A connection is a slot in its channel's connection table (MegaPipe's
 * lwsocket): a C struct, no Python object, addressed by (slot, generation).
 * The I/O layer (channel.c) only moves bytes between the socket and the two
 * buffers below; the protocol (proto.c) consumes rbuf and appends to wbuf. */
#ifndef MP_CONN_H
#define MP_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "proto.h"

struct mp_channel;

/* A fresh buffer's size: a request line plus a small value fits, and replies
 * to a pipelined burst of small gets fit in one send. */
#define MP_BUF_INITIAL 16384
/* Stop executing a connection's requests while this much output is unsent:
 * a client that pipelines without reading cannot make us buffer unboundedly. */
#define MP_OUT_HIGHWATER (1024 * 1024)

/* CLOSING: flush the output, then close (quit).  DEAD: io_uring only, the
 * descriptor is being torn down and the slot waits for the completions of
 * operations still in flight, which may reference its buffers. */
typedef enum { MP_CONN_FREE = 0, MP_CONN_OPEN, MP_CONN_CLOSING, MP_CONN_DEAD } mp_conn_state;

typedef struct mp_conn {
    int fd;
    uint32_t slot;
    uint32_t gen;             /* bumped when the slot is reused */
    uint8_t state;            /* mp_conn_state */
    bool is_unix;
    bool close_after_write;   /* quit, fatal protocol error: flush then close */
    bool in_ready;            /* on the channel's ready list (budget exhausted) */
    bool blocked_out;         /* stopped at MP_OUT_HIGHWATER until output drains */
    bool rbuf_borrowed;       /* rbuf is the channel's scratch or a kernel buffer */
    bool fixed;               /* fd is an io_uring direct descriptor (lwsocket) */
    bool recv_armed;          /* io_uring: a multishot receive is pending */
    bool send_inflight;       /* io_uring: sbuf is being sent */
    uint32_t events;          /* epoll interest currently registered */
    uint32_t next_free;       /* free list link */
    mp_rel_time last_active;

    char *rbuf;               /* input: [rstart, rend) is unconsumed */
    uint32_t rsize, rstart, rend;
    char *wbuf;               /* output: [wstart, wend) is unsent */
    uint32_t wsize, wstart, wend;
    char *sbuf;               /* io_uring: output handed to the kernel, */
    uint32_t ssize, sstart, send;   /* [sstart, send) not yet acknowledged */

    struct mp_channel *ch;
    struct sockaddr_storage peer;
    socklen_t peerlen;
    int listen_fd;            /* for "stats conns" */

    mp_proto proto;           /* parser/executor state, owned by proto.c */
} mp_conn;

/* Grows wbuf so that n more bytes fit.  May call realloc: never call it with a
 * shard lock held (use mp_out_fits under the lock, grow after unlocking).
 * Returns false when memory is exhausted. */
bool mp_out_grow(mp_conn *c, size_t n);

static inline bool mp_out_fits(const mp_conn *c, size_t n)
{
    return c->wsize - c->wend >= n;
}

/* Space for n bytes at the end of the output; NULL if memory is exhausted. */
static inline char *mp_out_reserve(mp_conn *c, size_t n)
{
    if (!mp_out_fits(c, n) && !mp_out_grow(c, n))
        return NULL;
    return c->wbuf + c->wend;
}

static inline void mp_out_commit(mp_conn *c, size_t n)
{
    c->wend += (uint32_t)n;
}

static inline void mp_out_write(mp_conn *c, const void *p, size_t n)
{
    char *dst = mp_out_reserve(c, n);
    if (dst) {
        memcpy(dst, p, n);
        c->wend += (uint32_t)n;
    }
}

#define mp_out_lit(c, s) mp_out_write((c), (s), sizeof(s) - 1)

static inline size_t mp_out_pending(const mp_conn *c)
{
    return c->wend - c->wstart;
}

#endif
