/* Connection buffers: drawn from the channel's pools when needed and given
 * back when empty, so a connection that is idle between requests holds no
 * memory and a busy one does not go through malloc per request. */
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "conn.h"

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
}

char *mp_buf_get_sized(mp_channel *ch, size_t need, uint32_t *size)
{
    size_t sz = MP_BUF_INITIAL;
    while (sz < need)
        sz *= 2;
    if (sz > UINT32_MAX)
        return NULL;
    int k = ch != NULL ? buf_class((uint32_t)sz) : -1;
    *size = (uint32_t)sz;
    if (k >= 0 && ch->pool[k].n > 0)
        return ch->pool[k].bufs[--ch->pool[k].n];
    return malloc(sz);
}

char *mp_buf_get(mp_channel *ch)
{
    uint32_t size;
    return mp_buf_get_sized(ch, MP_BUF_INITIAL, &size);
}

void mp_buf_put(mp_channel *ch, char *buf, uint32_t size)
{
    if (buf == NULL)
        return;
    int k = ch != NULL ? buf_class(size) : -1;
    if (k >= 0 && ch->pool[k].n < ch->pool[k].cap)
        ch->pool[k].bufs[ch->pool[k].n++] = buf;
    else
        free(buf);
}

bool mp_out_grow(mp_conn *c, size_t n)
{
    if (c->wbuf == NULL) {
        c->wbuf = mp_buf_get_sized(c->ch, n, &c->wsize);
        c->wstart = c->wend = 0;
        return c->wbuf != NULL;
    }
    if (c->wsize - c->wend >= n)
        return true;
    uint32_t pending = c->wend - c->wstart;
    if (c->wstart > 0) {
        memmove(c->wbuf, c->wbuf + c->wstart, pending);
        c->wstart = 0;
        c->wend = pending;
        if (c->wsize - c->wend >= n)
            return true;
    }
    uint32_t size;
    char *nb = mp_buf_get_sized(c->ch, (size_t)pending + n, &size);
    if (nb == NULL)
        return false;
    memcpy(nb, c->wbuf, pending);
    mp_buf_put(c->ch, c->wbuf, c->wsize);
    c->wbuf = nb;
    c->wsize = size;
    return true;
}
