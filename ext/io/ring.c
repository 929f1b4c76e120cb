#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ring.h"

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags,
                     const void *arg, size_t argsz)
{
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz);
}

int mp_ring_register(mp_ring *r, unsigned opcode, const void *arg, unsigned nr_args)
{
    int rc = (int)syscall(__NR_io_uring_register, r->fd, opcode, arg, nr_args);
    return rc < 0 ? -errno : rc;
}

/* The optional setup flags, dropped one by one (newest first) on EINVAL. */
static const unsigned optional_flags[] = {
    IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_SINGLE_ISSUER,
    IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_COOP_TASKRUN,
};

int mp_ring_init(mp_ring *r, unsigned entries, unsigned cq_entries, unsigned flags)
{
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    struct io_uring_params p;
    int fd = -1;
    for (size_t drop = 0;; drop++) {
        memset(&p, 0, sizeof(p));
        p.flags = flags | IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
        fd = sys_setup(entries, &p);
        if (fd >= 0)
            break;
        int e = errno;
        if (e != EINVAL || drop >= sizeof(optional_flags) / sizeof(optional_flags[0]))
            return -e;
        flags &= ~optional_flags[drop];
        if (optional_flags[drop] == IORING_SETUP_SINGLE_ISSUER)
            flags &= ~IORING_SETUP_DEFER_TASKRUN;   /* requires SINGLE_ISSUER */
        if (optional_flags[drop] == IORING_SETUP_COOP_TASKRUN)
            flags &= ~IORING_SETUP_TASKRUN_FLAG;
    }
    r->fd = fd;
    r->flags = p.flags;
    r->features = p.features;

    r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (r->cq_map_len > r->sq_map_len)
            r->sq_map_len = r->cq_map_len;
        r->cq_map_len = r->sq_map_len;
    }
    r->sq_map = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                     fd, IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED) {
        r->sq_map = NULL;
        goto fail;
    }
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        r->cq_map = r->sq_map;
    } else {
        r->cq_map = mmap(NULL, r->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                         fd, IORING_OFF_CQ_RING);
        if (r->cq_map == MAP_FAILED) {
            r->cq_map = NULL;
            goto fail;
        }
    }
    r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                   fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) {
        r->sqes = NULL;
        goto fail;
    }
    char *sq = r->sq_map, *cq = r->cq_map;
    r->sq_khead = (unsigned *)(sq + p.sq_off.head);
    r->sq_ktail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_entries = *(unsigned *)(sq + p.sq_off.ring_entries);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_khead = (unsigned *)(cq + p.cq_off.head);
    r->cq_ktail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
    r->cq_entries = *(unsigned *)(cq + p.cq_off.ring_entries);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    /* identity map: SQE i always sits at array slot i */
    for (unsigned i = 0; i < r->sq_entries; i++)
        r->sq_array[i] = i;
    r->sqe_head = r->sqe_tail = *r->sq_ktail;
    return 0;
fail:;
    int e = errno;
    mp_ring_exit(r);
    return -e;
}

void mp_ring_exit(mp_ring *r)
{
    if (r->sqes != NULL)
        munmap(r->sqes, r->sqes_len);
    if (r->cq_map != NULL && r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_map_len);
    if (r->sq_map != NULL)
        munmap(r->sq_map, r->sq_map_len);
    if (r->fd >= 0)
        close(r->fd);
    memset(r, 0, sizeof(*r));
    r->fd = -1;
}

int mp_ring_submit(mp_ring *r, unsigned wait_nr, int timeout_ms)
{
    unsigned to_submit = mp_ring_queued(r);
    if (to_submit)
        __atomic_store_n(r->sq_ktail, r->sqe_tail, __ATOMIC_RELEASE);
    r->sqe_head = r->sqe_tail;
    /* always GETEVENTS: with DEFER_TASKRUN completions are only posted then */
    unsigned flags = IORING_ENTER_GETEVENTS;
    if (wait_nr && timeout_ms >= 0 && (r->features & IORING_FEAT_EXT_ARG)) {
        struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                       .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
        struct io_uring_getevents_arg arg = {.ts = (uint64_t)(uintptr_t)&ts};
        int rc = sys_enter(r->fd, to_submit, wait_nr, flags | IORING_ENTER_EXT_ARG,
                           &arg, sizeof(arg));
        return rc < 0 ? -errno : rc;
    }
    int rc = sys_enter(r->fd, to_submit, wait_nr, flags, NULL, 0);
    return rc < 0 ? -errno : rc;
}

int mp_bufring_init(mp_ring *r, mp_bufring *b, uint16_t bgid, unsigned nbufs, unsigned first,
                    unsigned bufsize)
{
    memset(b, 0, sizeof(*b));
    b->nbufs = nbufs;
    b->bufsize = bufsize;
    b->mask = nbufs - 1;
    b->bgid = bgid;
    b->ring_len = nbufs * sizeof(struct io_uring_buf);
    b->br = mmap(NULL, b->ring_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b->br == MAP_FAILED) {
        b->br = NULL;
        return -errno;
    }
    b->mem = malloc((size_t)nbufs * bufsize);
    if (b->mem == NULL) {
        mp_bufring_free(r, b);
        return -ENOMEM;
    }
    struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)b->br,
                                   .ring_entries = nbufs, .bgid = bgid};
    int rc = mp_ring_register(r, IORING_REGISTER_PBUF_RING, &reg, 1);
    if (rc < 0) {
        mp_bufring_free(r, b);
        return rc;
    }
    mp_bufring_grow(b, first);
    mp_bufring_commit(b);
    return 0;
}

void mp_bufring_free(mp_ring *r, mp_bufring *b)
{
    if (b->br != NULL && r->fd >= 0) {
        struct io_uring_buf_reg reg = {.bgid = b->bgid};
        mp_ring_register(r, IORING_UNREGISTER_PBUF_RING, &reg, 1);
    }
    if (b->br != NULL)
        munmap(b->br, b->ring_len);
    free(b->mem);
    memset(b, 0, sizeof(*b));
}

bool mp_ring_probe_op(mp_ring *r, int op)
{
    size_t len = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *probe = calloc(1, len);
    if (probe == NULL)
        return false;
    bool ok = false;
    if (mp_ring_register(r, IORING_REGISTER_PROBE, probe, 256) >= 0 && op <= probe->last_op)
        ok = (probe->ops[op].flags & IO_URING_OP_SUPPORTED) != 0;
    free(probe);
    return ok;
}
