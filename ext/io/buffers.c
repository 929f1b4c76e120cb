/* A channel's connection buffers: drawn from its pools when needed and given
 * back when empty, so a connection that is idle between requests holds no
 * memory and a busy one does not go through malloc per request.  Output
 * buffers reach the protocol through the channel's env (mp_channel_out_alloc),
 * input buffers are the channel's own business. */
#include <stdlib.h>
#include <string.h>

#include "buffers.h"
#include "channel.h"

/* The pool class of a buffer of `size` bytes, or -1 if it is not pooled. */
static int buf_class(uint32_t size)
{
    for (int k = 0; k < MP_BUF_CLASSES; k++)
        if (size == (uint32_t)MP_BUF_INITIAL << k)
            return k;
    return -1;
}

int mp_buf_pools_init(mp_channel *ch)
{
    for (int k = 0; k < MP_BUF_CLASSES; k++) {
        int cap = (int)(MP_BUF_POOL_BYTES / ((uint32_t)MP_BUF_INITIAL << k));
        ch->pool[k].cap = cap < 4 ? 4 : cap;
        ch->pool[k].n = 0;
        ch->pool[k].bufs = calloc((size_t)ch->pool[k].cap, sizeof(char *));
        if (ch->pool[k].bufs == NULL)
            return -1;
    }
    return 0;
}

void mp_buf_pools_free(mp_channel *ch)
{
    for (int k = 0; k < MP_BUF_CLASSES; k++) {
        for (int i = 0; i < ch->pool[k].n; i++)
            free(ch->pool[k].bufs[i]);
        free(ch->pool[k].bufs);
        ch->pool[k].bufs = NULL;
        ch->pool[k].n = 0;
    }
    ch->bufs.spare_count = ch->bufs.spare_bytes = 0;
}

char *mp_buf_get(mp_channel *ch, size_t need, uint32_t *size, mp_buf_role role)
{
    size_t sz = MP_BUF_INITIAL;
    while (sz < need)
        sz *= 2;
    if (sz > UINT32_MAX)
        return NULL;
    int k = ch != NULL ? buf_class((uint32_t)sz) : -1;
    *size = (uint32_t)sz;
    char *buf;
    if (k >= 0 && ch->pool[k].n > 0) {
        buf = ch->pool[k].bufs[--ch->pool[k].n];
        ch->bufs.spare_count--;
        ch->bufs.spare_bytes -= sz;
    } else {
        buf = malloc(sz);
    }
    if (ch == NULL)
        return buf;
    if (buf == NULL) {
        ch->stats.malloc_fails++;
        if (role == MP_BUF_IN)
            ch->stats.read_buf_oom++;
        else
            ch->stats.response_obj_oom++;
        return NULL;
    }
    ch->bufs.count[role]++;
    ch->bufs.bytes[role] += sz;
    return buf;
}

void mp_buf_put(mp_channel *ch, char *buf, uint32_t size, mp_buf_role role)
{
    if (buf == NULL)
        return;
    if (ch == NULL) {
        free(buf);
        return;
    }
    ch->bufs.count[role]--;
    ch->bufs.bytes[role] -= size;
    int k = buf_class(size);
    if (k >= 0 && ch->pool[k].n < ch->pool[k].cap) {
        ch->pool[k].bufs[ch->pool[k].n++] = buf;
        ch->bufs.spare_count++;
        ch->bufs.spare_bytes += size;
    } else {
        free(buf);
    }
}

static char *out_get(void *pool, size_t need, uint32_t *size)
{
    return mp_buf_get(pool, need, size, MP_BUF_OUT);
}

static void out_put(void *pool, char *buf, uint32_t size)
{
    mp_buf_put(pool, buf, size, MP_BUF_OUT);
}

const mp_out_alloc mp_channel_out_alloc = {out_get, out_put};
