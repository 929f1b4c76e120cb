/* A channel: one thread, one event queue, its own listener partition and
 * connection table (MegaPipe's per-core channel).  Nothing here is written by
 * another thread except the stop eventfd; stats read the counters and the
 * connection table racily. */
#ifndef MP_CHANNEL_H
#define MP_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "engine.h"
#include "latency.h"
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
/* Buffers come in power-of-two sizes from MP_BUF_INITIAL up to
 * MP_BUF_INITIAL << (MP_BUF_CLASSES - 1) (1 MiB), and a channel keeps spares of
 * each size up to MP_BUF_POOL_BYTES per size: a reply of a 16 KiB value then
 * reuses a 32 KiB buffer instead of going through malloc (whose heap trimming
 * made every such request fault pages in again). */
#define MP_BUF_CLASSES 7
#define MP_BUF_POOL_BYTES (4u * 1024 * 1024)
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
} mp_listener;

typedef struct mp_uring mp_uring;

/* Connection buffers by what holds them, for memcached's read_buf_* and
 * response_obj_* stats.  Gauges, written only by the channel's thread. */
typedef enum { MP_BUF_IN, MP_BUF_OUT } mp_buf_role;
typedef struct mp_buf_usage {
    uint64_t count[2], bytes[2];   /* by mp_buf_role */
    uint64_t spare_count, spare_bytes;   /* in the pool */
    uint64_t fixed_count, fixed_bytes;   /* the backend's receive area */
} mp_buf_usage;

struct mp_channel {
    int id;
    mp_engine *eng;
    mp_thread_stats stats;

    /* the backend: how output leaves, how a descriptor is closed, and how
     * receiving stops and starts again (flow control, decided here) */
    void (*flush)(mp_channel *ch, mp_conn *c);
    void (*close)(mp_channel *ch, mp_conn *c);
    void (*pause_input)(mp_channel *ch, mp_conn *c);
    void (*resume_input)(mp_channel *ch, mp_conn *c);
    mp_uring *uring;             /* NULL on epoll */
    /* why the loop ended, when it failed: a negative errno and the call */
    int error;
    const char *error_what;

    int epfd;
    int stop_fd;                 /* eventfd written by mp_engine_stop */
    volatile int stopping;
    mp_listener listeners[MP_MAX_LISTENERS];
    int nlisteners;

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
    struct {
        char **bufs;             /* spare buffers of MP_BUF_INITIAL << class */
        int n, cap;
    } pool[MP_BUF_CLASSES];
    mp_buf_usage bufs;

    uint64_t last_maintain_ms;
    uint64_t events_at_maintain; /* stats.events then: none since means idle */
    uint64_t turn_hist[MP_TURN_HIST_BUCKETS];   /* events per turn: 0,1,2-3,...,64+ */
    mp_latency latency;          /* per command, written only by this channel */
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
/* End of a loop turn: resume connections that yielded, periodic maintenance. */
void mp_channel_end_turn(mp_channel *ch);
/* How long (ms) the next wait for events may block: 0 with connections
 * ready to go on, else until the next maintenance is due. */
int mp_channel_wait_ms(const mp_channel *ch);
void mp_channel_count_turn(mp_channel *ch, int nevents);
static inline bool mp_channel_busy(const mp_channel *ch)
{
    return ch->nready > 0;
}

/* ---- backends ---- */
int mp_epoll_run(mp_channel *ch);
/* MP_URING_FALLBACK: the ring could not be set up, run epoll instead */
#define MP_URING_FALLBACK 1
int mp_uring_run(mp_channel *ch);
int mp_uring_probe(char *why, size_t whylen);  /* 0 when usable */

mp_channel *mp_channel_create(mp_engine *eng, int id);
void mp_channel_destroy(mp_channel *ch);
int mp_channel_add_listener(mp_channel *ch, int fd, bool is_unix);
void mp_channel_stop(mp_channel *ch);

/* Buffer pool of the connection's channel (conn.c).  A buffer of at least
 * `need` bytes; *size gets its real size (a power of two times
 * MP_BUF_INITIAL).  ch may be NULL (not a channel thread: no pool, nothing
 * counted).  NULL when memory is exhausted, counted in malloc_fails and
 * read_buf_oom or response_obj_oom. */
char *mp_buf_get(mp_channel *ch, size_t need, uint32_t *size, mp_buf_role role);
void mp_buf_put(mp_channel *ch, char *buf, uint32_t size, mp_buf_role role);
int mp_buf_pools_init(mp_channel *ch);
void mp_buf_pools_free(mp_channel *ch);

/* Visits the open connections of every channel from *cursor on (0: the
 * first), until fn returns false (it took nothing from that connection);
 * *cursor is then that connection, where to go on.  Returns
 * true when every connection was visited.  Racy, for "stats conns": a slot
 * may change while it is read, but never goes away. */
typedef bool (*mp_conn_visit_fn)(mp_conn *c, void *arg);
bool mp_engine_visit_conns(mp_engine *eng, uint64_t *cursor, mp_conn_visit_fn fn, void *arg);

#endif
