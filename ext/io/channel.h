/* A channel: one thread, one event queue, its own listener partition and
 * connection table (MegaPipe's per-core channel).  Nothing here is written by
 * another thread except the stop request (the eventfd and `stopping`);
 * stats read the counters and the connection table racily. */
#ifndef MP_CHANNEL_H
#define MP_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffers.h"
#include "conn.h"
#include "engine.h"
#include "latency.h"
#include "proto/proto_env.h"
#include "stats.h"

/* Listening sockets per channel: one per -l address plus the unix socket. */
#define MP_MAX_LISTENERS 32
/* Events taken per epoll_wait: large enough to batch a busy turn, small
 * enough that the array stays in L1. */
#define MP_EVENTS_PER_TURN 256
/* Accepts per listener per turn, so a connection storm cannot starve the
 * connections already being served. */
#define MP_ACCEPTS_PER_TURN 64
/* One read's worth of input lands here first; only a partial request is
 * copied into a buffer the connection keeps, so idle connections pin none. */
#define MP_SCRATCH_SIZE (64 * 1024)
/* A get line may grow the input buffer to this before we give up on it.
 * Nothing else grows the input this far: see MP_INPUT_PAUSE. */
#define MP_RBUF_MAX (64u * 1024 * 1024)
/* Flow control: a connection that waits for its turn (-R) or for its output
 * to drain keeps at most this much unprocessed input before its receive is
 * stopped; the rest waits in the kernel's socket buffer and the TCP window
 * pushes back on the client, as memcached's one read per event does.  Big
 * enough that a pipelining client is not paused at every yield (a pause and
 * resume cost two submissions on io_uring). */
#define MP_INPUT_PAUSE (256u * 1024)
/* Connection slots are allocated this many at a time, as connections arrive,
 * so a large -c costs nothing until it is used. */
#define MP_CONN_CHUNK 64
/* How often (ms) the home channel runs shard maintenance and idle checks
 * while it serves; a channel that saw no event since its last maintenance
 * waits MP_IDLE_MAINTAIN_MS instead, so an idle server wakes a channel once
 * a second (memcached's clock ticks as often) rather than ten times. */
#define MP_MAINTAIN_MS 100
#define MP_IDLE_MAINTAIN_MS 1000

#define MP_NO_SLOT UINT32_MAX

typedef struct mp_listener {
    int fd;
    bool is_unix;
    bool tls;          /* -Z, and not a notls: address */
} mp_listener;

typedef struct mp_uring mp_uring;
struct mp_udp;
struct epoll_event;

/* An I/O backend (Redis's ae_epoll.c / ae_kqueue.c): the channel runs the
 * loop (mp_channel_run) and decides everything about connections; a backend
 * only moves bytes and descriptors.  Each hook runs on the channel's thread. */
typedef struct mp_backend {
    const char *name;
    /* Set up on the channel's thread (a ring's SINGLE_ISSUER binds it
     * there); a negative errno on failure, after which teardown still runs. */
    int (*setup)(mp_channel *ch);
    /* Closes every connection and frees what setup made. */
    void (*teardown)(mp_channel *ch);
    /* Hands the kernel what the last turn queued and waits at most
     * timeout_ms (0: not at all) for events.  Returns how many are ready, or
     * -1 after mp_channel_fail when the loop cannot go on. */
    int (*wait)(mp_channel *ch, int timeout_ms);
    /* Handles the n events wait found (accepts, input through
     * mp_conn_input, output progress), with the clock already updated. */
    void (*handle)(mp_channel *ch, int n);
    /* Output is pending on c: send it, or queue its send. */
    void (*flush)(mp_channel *ch, mp_conn *c);
    /* Closes c and gives its slot back (at once, or once the kernel is done
     * with its buffers). */
    void (*close)(mp_channel *ch, mp_conn *c);
    /* Flow control, decided by the channel: stop and start receiving. */
    void (*pause_input)(mp_channel *ch, mp_conn *c);
    void (*resume_input)(mp_channel *ch, mp_conn *c);
    /* Optional: hands the kernel what is queued now, without waiting, after
     * work long enough (a TLS handshake step) that output held to the end
     * of the turn would leave the peer idle meanwhile.  NULL where flush
     * sends at once. */
    void (*push)(mp_channel *ch);
    /* UDP (udp.h), optional: queues one datagram, the iovecs copied (they
     * hold the header and a slice of the output).  False: not taken (and
     * what was taken is submitted), the caller sends it and the rest of
     * the reply itself. */
    bool (*udp_send)(mp_channel *ch, struct mp_udp *u, const struct iovec *iov, int niov);
} mp_backend;

extern const mp_backend mp_epoll_backend;
extern const mp_backend mp_uring_backend;


struct mp_channel {
    int id;
    mp_engine *eng;
    mp_thread_stats stats;

    const mp_backend *be;
    mp_uring *uring;             /* the io_uring backend's state, NULL on epoll */
    bool fixed_fds;              /* connections get io_uring direct descriptors */
    /* why the loop ended, when it failed: a negative errno and the call */
    int error;
    const char *error_what;

    int epfd;                    /* epoll backend */
    struct epoll_event *events;  /* epoll backend: MP_EVENTS_PER_TURN */
    int stop_fd;                 /* eventfd written by mp_engine_stop */
    volatile int stopping;
    mp_listener listeners[MP_MAX_LISTENERS];
    int nlisteners;
    struct mp_udp *udp[MP_MAX_LISTENERS];   /* -U: this channel's UDP sockets */
    int nudp;

    /* the connection table: chunks of MP_CONN_CHUNK slots, allocated as
     * connections arrive and never moved (completions and "stats conns"
     * hold slot pointers); nslots is published after its chunk */
    mp_conn **chunks;
    uint32_t nslots;             /* allocated */
    uint32_t maxslots;           /* -c: any channel may hold every connection */
    uint32_t free_head;          /* free slots, linked by next_free */
    /* Connections that yielded with work left, as (generation, slot): a
     * connection closed and its slot reused meanwhile is recognised and
     * skipped, so the list never needs unlinking.  Two arrays swapped each
     * turn; a connection is in at most one (in_ready). */
    uint64_t *ready;
    uint64_t *ready_next;
    uint32_t nready;
    uint32_t nopen;

    char *scratch;               /* MP_SCRATCH_SIZE */
    mp_buf_pool pool[MP_BUF_CLASSES];
    mp_buf_usage bufs;

    uint64_t last_maintain_ms;
    bool owns_watchers;          /* "watch" connections are drained each turn */
    uint64_t events_at_maintain; /* stats.events then: none since means idle */
    uint64_t turn_hist[MP_TURN_HIST_BUCKETS];   /* events per turn: 0,1,2-3,...,64+ */
    mp_latency latency;          /* per command, written only by this channel */
    /* TLS (tls.h): handshake steps left this turn, connections still in
     * their handshake (the maintenance looks for stalled ones only then),
     * and where plaintext pieces are gathered into one SSL_write */
    int tls_budget;
    uint32_t tls_handshakes;
    char *tls_stage;
    /* what this channel's connections' protocol sees (c->env): the engine
     * fills it when it creates the channel */
    mp_proto_env env;
};

static inline mp_conn *mp_conn_at(const mp_channel *ch, uint32_t slot)
{
    return &ch->chunks[slot / MP_CONN_CHUNK][slot % MP_CONN_CHUNK];
}

/* ---- shared by the backends (channel.c) ---- */

/* Takes a free slot for an accepted descriptor that mp_conn_admit let in
 * (which guarantees one). */
mp_conn *mp_conn_open(mp_channel *ch, int fd, const mp_listener *l,
                      const struct sockaddr_storage *peer, socklen_t peerlen);
/* Gives back buffers and the slot once the descriptor is closed. */
void mp_conn_release(mp_channel *ch, mp_conn *c);
/* Admission against -c, making room in the table; false: reject the
 * connection (counted in rejected_connections). */
bool mp_conn_admit(mp_channel *ch);
/* Runs the protocol over what is buffered and hands replies to the backend. */
void mp_conn_run(mp_channel *ch, mp_conn *c);
/* n bytes were received into the connection's own buffer, behind
 * what it kept (at c->rbuf + c->rend): counts them and runs the protocol. */
void mp_conn_received(mp_channel *ch, mp_conn *c, size_t n);
/* Forgets a borrowed input buffer (the scratch buffer or a kernel-provided
 * one) that the connection will not read again. */
static inline void mp_conn_drop_borrowed(mp_conn *c)
{
    if (c->rbuf_borrowed) {
        c->rbuf = NULL;
        c->rbuf_borrowed = false;
    }
}
/* Output went out: a connection stopped at MP_OUT_HIGHWATER goes on once it
 * is back under the mark. */
void mp_conn_unblock(mp_channel *ch, mp_conn *c);
/* Bytes that arrived in a buffer the connection does not own (the scratch
 * buffer, a kernel-provided buffer): processed in place, the remainder kept. */
void mp_conn_input(mp_channel *ch, mp_conn *c, char *data, size_t n);
/* Makes room for more input in the connection's own buffer; false: close. */
bool mp_conn_rbuf_room(mp_channel *ch, mp_conn *c, size_t n);
/* Does the connection take more input now?  False while it waits with
 * MP_INPUT_PAUSE or more unprocessed, or closes. */
bool mp_conn_wants_input(const mp_conn *c);
/* The loop cannot go on: records why (a negative errno and the call that
 * failed) and stops the channel; mp_channel_run returns the errno. */
void mp_channel_fail(mp_channel *ch, int neg_errno, const char *what);
/* The end of a turn's first step: the connections that yielded go on, and
 * those that yield again wait for the next turn (the fuzzer's turns too). */
void mp_channel_run_ready(mp_channel *ch);

/* ---- backends ---- */
int mp_uring_probe(char *why, size_t whylen);  /* 0 when usable */

mp_channel *mp_channel_create(mp_engine *eng, int id);
void mp_channel_destroy(mp_channel *ch);
int mp_channel_add_listener(mp_channel *ch, int fd, bool is_unix, bool tls);
/* A bound UDP socket (udp.h), served by this channel alone. */
int mp_channel_add_udp(mp_channel *ch, int fd);
void mp_channel_stop(mp_channel *ch);

/* Visits the open connections of every channel from *cursor on (0: the
 * first), until fn returns false (it took nothing from that connection);
 * *cursor is then that connection, where to go on.  Returns
 * true when every connection was visited.  Racy, for "stats conns": a slot
 * may change while it is read, but never goes away. */
typedef bool (*mp_conn_visit_fn)(mp_conn *c, void *arg);
bool mp_engine_visit_conns(mp_engine *eng, uint64_t *cursor, mp_conn_visit_fn fn, void *arg);

#endif
