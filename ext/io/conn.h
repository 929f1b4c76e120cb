/* A connection is a slot in its channel's connection table (MegaPipe's
 * lwsocket): a C struct, no Python object, addressed by (slot, generation).
 * The I/O layer (channel.c and a backend) only moves bytes between the socket
 * and the buffers below; the protocol (executor.c, meta.c) consumes rbuf and
 * appends to wbuf, and reaches nothing else but c->env (proto_env.h). */
#ifndef MP_CONN_H
#define MP_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "debug.h"
#include "proto/parser.h"
#include "proto/proto_env.h"

struct mp_channel;
struct mp_item;
struct mp_shard;
struct mp_store;

/* The protocol's state kept in each connection between calls of
 * mp_process (executor.h). */
typedef enum {
    MP_PS_LINE = 0,          /* expecting a command line */
    MP_PS_NREAD,             /* copying a data block into a pending item */
    MP_PS_SWALLOW,           /* discarding a data block (too large) */
    MP_PS_AUTH,              /* the data block of a set before authentication (-Y) */
} mp_proto_phase;

/* The protocol a connection speaks: decided by -B, or with -B auto by its
 * first byte (0x80 is the binary protocol's request magic, as memcached's
 * try_read_command_negotiate decides). */
typedef enum {
    MP_PROT_UNDECIDED = 0,
    MP_PROT_ASCII,
    MP_PROT_BINARY,
} mp_protocol;

typedef struct mp_proto {
    uint8_t phase;           /* mp_proto_phase */
    uint8_t protocol;        /* mp_protocol */
    /* binary protocol (binary.c): the request whose body is being read, for
     * the reply that follows it */
    uint8_t bin_opcode;      /* as sent: a reply echoes it (SETQ stays SETQ) */
    uint8_t sasl_state;      /* -S: binary.c's SASL_* */
    bool sasl_authed;        /* -S: may run commands besides SASL's and version */
    uint32_t bin_opaque;     /* as sent, echoed unchanged */
    uint8_t op;              /* pending storage op */
    bool noreply;
    bool seen_cmd;           /* a command was parsed ("stats conns" state) */
    bool log_negotiated;     /* -vv: "Client using the ascii protocol" said */
    uint8_t log_state;       /* -vvv: the state last logged (log.h) */
    bool yielded;            /* the last mp_process returned MP_PROC_YIELD */
    bool watcher;            /* "watch" took it: input is ignored (watch.h) */
    bool authenticated;      /* may run commands: -Y is off, or the client
                                sent credentials (false until the first
                                line tells which) */
    uint8_t reply_kind;      /* what to answer once the data block completes */
    uint64_t resume;         /* >0: the request at rstart stopped with its
                                reply half built; where to go on (a multi-get:
                                the offset of its next key in the line; stats
                                conns: the next connection, plus one) */
    /* a key dump stopped at the output mark (dump.c): where it goes on */
    uint32_t dump_shard;
    uint32_t dump_count, dump_bytes;   /* cachedump: items and bytes shown */
    uint64_t dump_cursor;    /* mp_store_walk's, in that shard */
    bool discard;            /* the stopped request's reply will be culled:
                                run the rest for its effects, compose nothing */
    uint32_t flush_mark;     /* output pending (from wstart) when this batch
                                began: replies after it are "unsent" */
    uint32_t flush_mark_refs;   /* output references queued by then */
    struct mp_item *item;    /* MP_PS_NREAD: the pending item */
    uint64_t hv;
    uint64_t cas_in;
    uint32_t left;           /* bytes of the data block still to come */
    uint32_t filled;         /* bytes already copied into the item */
    const char *meta_err;    /* RK_META_ERROR: an ms error, answered after its block */
    /* a pending ms (meta set): what its reply echoes */
    bool meta;               /* the pending data block is an ms's */
    bool meta_quiet;         /* q: an HD reply is not sent */
    uint8_t meta_opts;       /* MP_STORE_* options (ms I, ms b) */
    char meta_echo[4];       /* 'O' 'k' 'c' in request order, NUL-terminated */
    uint8_t opaque_len;
    char opaque[MP_META_OPAQUE_MAX];   /* the O token, "O" included */
} mp_proto;

/* A fresh buffer's size: a request line plus a small value fits, and replies
 * to a pipelined burst of small gets fit in one send. */
#define MP_BUF_INITIAL 16384
/* Stop executing a connection's requests while this much output is unsent
 * (queued or in the kernel's hands), even in the middle of a multi-get: a
 * client that does not read cannot make us buffer more than this plus one
 * line and one copied value (values of MP_OUT_REF_MIN and up are referenced,
 * not copied). */
#define MP_OUT_HIGHWATER (1024 * 1024)

/* A value of at least this many bytes is sent from its item, held by a
 * reference, instead of being copied into the output buffer first: from 8 KiB
 * on that saved 4-7% of a get's CPU (BENCHMARKS.md, notes). */
#define MP_OUT_REF_MIN 8192
/* References one output buffer holds; past them values are copied. */
#define MP_OUT_REFS 16

/* An item's value sent in place: it goes out after the buffer's bytes before
 * `at` (an offset in the buffer, like wstart/wend) and before those from
 * `at` on.  data/len shrink as a partial send eats into it. */
typedef struct mp_out_ref {
    uint32_t at;
    uint32_t len;
    const char *data;
    struct mp_item *it;
} mp_out_ref;

/* UDP (udp.c): where each of memcached's response objects starts in the
 * pending output, as memcached sends each one as its own datagrams with its
 * own sequence numbers.  Offsets count the output's bytes and its referenced
 * values alike (mp_out_pending's measure).  A forced response may go out
 * empty, as a bare header (a get's key that missed, quit); any other empty
 * one was silenced by noreply and sends nothing, as memcached's skip. */
typedef struct mp_resps {
    uint32_t n, cap;
    uint32_t *at;
    uint8_t *flags;           /* MP_RESP_* */
    bool new_batch;           /* the next response starts a transmit batch */
    bool sent;                /* the last flush's last batch sent something */
} mp_resps;

/* sent as a bare header when empty and first of its batch */
#define MP_RESP_FORCED 1
/* memcached transmits here (mp_out_mark): within a batch an empty response
 * behind one already sent is finished unsent by transmit_udp's accounting
 * (_transmit_post), so only one at a batch's head is a bare header */
#define MP_RESP_BATCH 2

typedef struct mp_refs {
    uint32_t n;
    uint32_t bytes;           /* value bytes still to send */
    mp_out_ref r[MP_OUT_REFS];
} mp_refs;

/* CLOSING: flush the output, then close (quit).  DEAD: io_uring only, the
 * descriptor is being torn down and the slot waits for the completions of
 * operations still in flight, which may reference its buffers. */
/* Why a connection closed, memcached's close_reasons (what "watch
 * connevents" prints): anything not named is an error. */
enum { MP_CLOSE_ERROR = 0, MP_CLOSE_NORMAL, MP_CLOSE_IDLE, MP_CLOSE_SHUTDOWN };

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
    bool input_paused;        /* the backend stopped receiving (flow control) */
    bool out_oom;             /* an output write failed for lack of memory */
    bool recv_armed;          /* io_uring: a multishot receive is pending */
    bool send_inflight;       /* io_uring: sbuf is being sent */
    uint8_t close_reason;     /* MP_CLOSE_*, for "watch connevents" */
    bool conn_new_owed;       /* its conn_new waits for its address (io_uring) */
    uint32_t events;          /* epoll interest currently registered */
    uint32_t next_free;       /* free list link */
    mp_rel_time last_cmd;     /* when the last command was read (idle_timeout) */

    char *rbuf;               /* input: [rstart, rend) is unconsumed */
    uint32_t rsize, rstart, rend;
    char *wbuf;               /* output: [wstart, wend) is unsent, */
    uint32_t wsize, wstart, wend;
    mp_refs wrefs;            /* with these values woven in */
    char *sbuf;               /* io_uring: output handed to the kernel, */
    uint32_t ssize, sstart, send;   /* [sstart, send) not yet acknowledged, */
    mp_refs srefs;            /* with these values */

    struct mp_channel *ch;    /* the I/O layer's; the protocol never reads it */
    struct mp_tls *tls;       /* -Z: its TLS state (tls.h), NULL in plaintext */
    const mp_proto_env *env;  /* all the protocol sees besides the connection */
    struct sockaddr_storage peer;
    socklen_t peerlen;
    int listen_fd;            /* for "stats conns" */
    mp_resps *resps;          /* UDP only: response boundaries (udp.c) */

    mp_proto proto;           /* the protocol's state (executor.c, meta.c) */
} mp_conn;

/* The number a connection shows as in "stats conns" and the -vv log: its
 * descriptor, as in memcached.  An io_uring direct descriptor is an index
 * into its channel's own table, not a process descriptor: it shows above
 * any real one, per channel (env->fixed_id_base), so every number is
 * unique. */
static inline unsigned long long mp_conn_number(const mp_conn *c)
{
    if (!c->fixed)
        return (unsigned long long)c->fd;
    return c->env->fixed_id_base + (unsigned)c->fd;
}

/* Grows wbuf so that n more bytes fit, with memory from c->env->alloc (in a
 * server the channel's pool, else malloc): never call it with a shard lock
 * held.  Returns false when memory is exhausted,
 * after counting it and setting c->out_oom: the reply under way is then
 * incomplete, and the executor culls it or closes the connection. */
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
    MP_ASSERT(n <= c->wsize - c->wend);   /* within what was reserved */
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

/* Output not yet handed to the kernel. */
static inline size_t mp_out_pending(const mp_conn *c)
{
    return c->wend - c->wstart + c->wrefs.bytes;
}

/* Output not yet acknowledged by the kernel: pending plus, on io_uring, the
 * send in flight.  What MP_OUT_HIGHWATER bounds. */
static inline size_t mp_out_unsent(const mp_conn *c)
{
    return mp_out_pending(c) + (c->send - c->sstart) + c->srefs.bytes;
}

static inline bool mp_out_over_mark(const mp_conn *c)
{
    return mp_out_unsent(c) > MP_OUT_HIGHWATER;
}

/* Is a value of nbytes sent by reference rather than copied? */
static inline bool mp_out_by_ref(const mp_conn *c, uint32_t nbytes)
{
    return nbytes >= MP_OUT_REF_MIN && c->wrefs.n < MP_OUT_REFS;
}

/* Shard lock held, item found under it: ends the reply line written up to p
 * (inside the output reserved before locking) with the item's value and its
 * "\r\n": by reference when mp_out_by_ref says so, copied when the output
 * has room for it.  Otherwise (the output would have to grow, which must
 * not happen under the lock) the line is committed, a reference taken and
 * the item returned: mp_out_value_deferred then finishes the reply once the
 * lock is released.  NULL when the reply is whole. */
struct mp_item *mp_out_value(mp_conn *c, char *p, struct mp_shard *s, struct mp_item *it);

/* No lock held: appends the value of an item mp_out_value returned and
 * drops its reference.  False when memory is exhausted (c->out_oom). */
bool mp_out_value_deferred(mp_conn *c, struct mp_item *it);

/* The same for the first len bytes of the value: the binary protocol sends
 * a value without its "\r\n". */
struct mp_item *mp_out_value_n(mp_conn *c, char *p, struct mp_shard *s, struct mp_item *it,
                               uint32_t len);
bool mp_out_value_deferred_n(mp_conn *c, struct mp_item *it, uint32_t len);

/* The output [start, end) of buf with refs woven in, as at most
 * 2 * MP_OUT_REFS + 1 iovecs; returns how many. */
int mp_out_iov(const char *buf, uint32_t start, uint32_t end, const mp_refs *refs,
               struct iovec *iov);

/* n bytes of that output were sent: advances *start and the references, and
 * drops those sent in full. */
void mp_out_sent(struct mp_store *st, uint32_t *start, mp_refs *refs, size_t n);

/* Drops every reference (the output is discarded). */
void mp_refs_release(struct mp_store *st, mp_refs *refs);

/* The replies queued so far can no longer be culled (memcached has sent
 * them); mp_out_cull drops what was queued after the last mark, including a
 * reply left incomplete by a failed write (it clears out_oom). */
static inline void mp_out_mark(mp_conn *c)
{
    c->proto.flush_mark = c->wend - c->wstart;
    c->proto.flush_mark_refs = c->wrefs.n;
    if (c->resps != NULL)
        c->resps->new_batch = true;
}

void mp_out_cull(mp_conn *c);

/* UDP: a response object starts here (memcached's resp_start); nothing on
 * a stream connection.  A full table merges it into the one before. */
static inline void mp_out_resp(mp_conn *c)
{
    mp_resps *rs = c->resps;
    if (rs == NULL)
        return;
    uint32_t at = (uint32_t)mp_out_pending(c);
    uint8_t batch = rs->new_batch ? MP_RESP_BATCH : 0;
    rs->new_batch = false;
    if (rs->n > 0 && rs->at[rs->n - 1] == at && !(rs->flags[rs->n - 1] & MP_RESP_FORCED)) {
        /* the one before is empty and silent: it is this one */
        rs->flags[rs->n - 1] |= batch;
        return;
    }
    if (rs->n == rs->cap)
        return;
    rs->at[rs->n] = at;
    rs->flags[rs->n] = batch;
    rs->n++;
}

/* UDP: a get resumed after its reply passed the output mark starts its next
 * key's response in the batch its first part went out in: memcached builds
 * the whole reply and transmits it at once. */
static inline void mp_out_resp_resumed(mp_conn *c)
{
    if (c->resps != NULL)
        c->resps->new_batch = false;
    mp_out_resp(c);
}

/* UDP: the current response is sent even when empty (a bare header). */
static inline void mp_out_resp_force(mp_conn *c)
{
    mp_resps *rs = c->resps;
    if (rs != NULL && rs->n > 0)
        rs->flags[rs->n - 1] |= MP_RESP_FORCED;
}

/* Debug builds: the output's invariants, the unsent [wstart, wend) within
 * wsize and each reference inside it, in order (the same for the send in
 * flight); nothing in a release build. */
#ifdef MPCACHE_DEBUG
void mp_out_check(const mp_conn *c);
#else
static inline void mp_out_check(const mp_conn *c)
{
    (void)c;
}
#endif

#endif
