/* The channel's pool of connection buffers (buffers.c): input and output
 * buffers come from it and go back to it, so a busy channel does not go
 * through malloc per request. */
#ifndef MP_BUFFERS_H
#define MP_BUFFERS_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"

struct mp_channel;

/* Buffers come in power-of-two sizes from MP_BUF_INITIAL up to
 * MP_BUF_INITIAL << (MP_BUF_CLASSES - 1) (1 MiB), and a channel keeps spares of
 * each size up to MP_BUF_POOL_BYTES per size: a reply of a 16 KiB value then
 * reuses a 32 KiB buffer instead of going through malloc (whose heap trimming
 * made every such request fault pages in again). */
#define MP_BUF_CLASSES 7
#define MP_BUF_POOL_BYTES (4u * 1024 * 1024)

/* Connection buffers by what holds them, for memcached's read_buf_* and
 * response_obj_* stats.  Gauges, written only by the channel's thread. */
typedef enum { MP_BUF_IN, MP_BUF_OUT } mp_buf_role;
typedef struct mp_buf_usage {
    uint64_t count[2], bytes[2];   /* by mp_buf_role */
    uint64_t spare_count, spare_bytes;   /* in the pool */
    uint64_t fixed_count, fixed_bytes;   /* the backend's receive area */
} mp_buf_usage;

/* Spare buffers of one size, MP_BUF_INITIAL << class. */
typedef struct mp_buf_pool {
    char **bufs;
    int n, cap;
} mp_buf_pool;

/* Buffer pool of the connection's channel (buffers.c).  A buffer of at least
 * `need` bytes; *size gets its real size (a power of two times
 * MP_BUF_INITIAL).  ch may be NULL (not a channel thread: no pool, nothing
 * counted).  NULL when memory is exhausted, counted in malloc_fails and
 * read_buf_oom or response_obj_oom. */
char *mp_buf_get(struct mp_channel *ch, size_t need, uint32_t *size, mp_buf_role role);
void mp_buf_put(struct mp_channel *ch, char *buf, uint32_t size, mp_buf_role role);
int mp_buf_pools_init(struct mp_channel *ch);
void mp_buf_pools_free(struct mp_channel *ch);
/* The pool's output buffers as the protocol's allocator (pool: the channel). */
extern const mp_out_alloc mp_channel_out_alloc;

#endif
