/* A minimal io_uring on the kernel ABI: setup, mmap of the rings, SQE
 * allocation, submit-and-wait, CQE iteration, provided-buffer rings.  No
 * liburing: the package builds with a C compiler and libc only. */
#ifndef MP_RING_H
#define MP_RING_H

#include <linux/io_uring.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct mp_ring {
    int fd;
    unsigned flags;            /* setup flags in effect */
    unsigned features;
    /* submission queue */
    unsigned *sq_khead, *sq_ktail, *sq_array;
    unsigned sq_mask, sq_entries;
    struct io_uring_sqe *sqes;
    unsigned sqe_head, sqe_tail;   /* SQEs handed out but not yet submitted */
    /* completion queue */
    unsigned *cq_khead, *cq_ktail;
    unsigned cq_mask, cq_entries;
    struct io_uring_cqe *cqes;
    void *sq_map, *cq_map;
    size_t sq_map_len, cq_map_len, sqes_len;
} mp_ring;

/* Sets up a ring; tries `flags` and falls back by dropping the optional ones
 * (DEFER_TASKRUN, SINGLE_ISSUER, COOP_TASKRUN) the kernel rejects.  Returns
 * 0 or -errno (-ENOSYS / -EPERM when io_uring is unavailable). */
int mp_ring_init(mp_ring *r, unsigned entries, unsigned cq_entries, unsigned flags);
void mp_ring_exit(mp_ring *r);

/* A zeroed SQE, or NULL when the submission queue is full. */
static inline struct io_uring_sqe *mp_ring_sqe(mp_ring *r)
{
    unsigned head = __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
    if (r->sqe_tail - head >= r->sq_entries)
        return NULL;
    struct io_uring_sqe *sqe = &r->sqes[r->sqe_tail & r->sq_mask];
    r->sqe_tail++;
    memset(sqe, 0, sizeof(*sqe));
    return sqe;
}

/* Publishes the SQEs handed out and enters the kernel once: submits them and
 * waits for at least wait_nr completions (0: do not wait).  timeout_ms >= 0
 * bounds the wait (needs IORING_FEAT_EXT_ARG).  Returns what io_uring_enter
 * returned. */
int mp_ring_submit(mp_ring *r, unsigned wait_nr, int timeout_ms);

/* Submissions prepared and not yet handed to the kernel. */
static inline unsigned mp_ring_queued(const mp_ring *r)
{
    return r->sqe_tail - r->sqe_head;
}

/* Completions: iterate from *head to tail, then mp_ring_cq_advance. */
static inline unsigned mp_ring_cq_ready(mp_ring *r, unsigned *head)
{
    *head = *r->cq_khead;
    return __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE) - *head;
}

static inline struct io_uring_cqe *mp_ring_cqe_at(mp_ring *r, unsigned i)
{
    return &r->cqes[i & r->cq_mask];
}

static inline void mp_ring_cq_advance(mp_ring *r, unsigned n)
{
    __atomic_store_n(r->cq_khead, *r->cq_khead + n, __ATOMIC_RELEASE);
}

int mp_ring_register(mp_ring *r, unsigned opcode, const void *arg, unsigned nr_args);

/* ---- provided-buffer ring (IORING_REGISTER_PBUF_RING, 5.19+) ---- */
typedef struct mp_bufring {
    struct io_uring_buf_ring *br;
    char *mem;                 /* nbufs * bufsize, touched as buffers are handed out */
    unsigned nbufs, bufsize, mask;
    unsigned active;           /* buffers handed to the kernel so far: 0 .. active-1 */
    uint16_t bgid;
    uint16_t tail;             /* local tail, published by mp_bufring_commit */
    size_t ring_len;
} mp_bufring;

/* Registers a ring for nbufs buffers and hands the kernel the first `first`
 * of them; mp_bufring_grow hands it more. */
int mp_bufring_init(mp_ring *r, mp_bufring *b, uint16_t bgid, unsigned nbufs, unsigned first,
                    unsigned bufsize);
void mp_bufring_free(mp_ring *r, mp_bufring *b);

static inline char *mp_bufring_addr(mp_bufring *b, unsigned bid)
{
    return b->mem + (size_t)bid * b->bufsize;
}

/* Hands buffer `bid` back to the kernel (visible after mp_bufring_commit). */
static inline void mp_bufring_recycle(mp_bufring *b, unsigned bid)
{
    struct io_uring_buf *buf = &b->br->bufs[b->tail & b->mask];
    buf->addr = (uint64_t)(uintptr_t)mp_bufring_addr(b, bid);
    buf->len = b->bufsize;
    buf->bid = (uint16_t)bid;
    b->tail++;
}

static inline void mp_bufring_commit(mp_bufring *b)
{
    __atomic_store_n(&b->br->tail, b->tail, __ATOMIC_RELEASE);
}

/* Hands the kernel up to `n` buffers it has never had (visible after
 * mp_bufring_commit). */
static inline void mp_bufring_grow(mp_bufring *b, unsigned n)
{
    unsigned end = n < b->nbufs - b->active ? b->active + n : b->nbufs;
    while (b->active < end)
        mp_bufring_recycle(b, b->active++);
}

/* Is opcode `op` supported (IORING_REGISTER_PROBE)? */
bool mp_ring_probe_op(mp_ring *r, int op);

#endif
