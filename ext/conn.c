/* Connection buffers: drawn from the channel's pool when needed and given back
 * when empty, so a connection that is idle between requests holds no memory. */
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "conn.h"

char *mp_buf_get(mp_channel *ch)
{
    if (ch->npool > 0)
        return ch->pool[--ch->npool];
    return malloc(MP_BUF_INITIAL);
}

void mp_buf_put(mp_channel *ch, char *buf, uint32_t size)
{
    if (buf == NULL)
        return;
    if (size == MP_BUF_INITIAL && ch->npool < MP_BUF_POOL_MAX)
        ch->pool[ch->npool++] = buf;
    else
        free(buf);
}

bool mp_out_grow(mp_conn *c, size_t n)
{
    if (c->wbuf == NULL) {
        c->wbuf = mp_buf_get(c->ch);
        if (c->wbuf == NULL)
            return false;
        c->wsize = MP_BUF_INITIAL;
        c->wstart = c->wend = 0;
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
    size_t want = c->wsize;
    while (want - pending < n)
        want *= 2;
    if (want > UINT32_MAX)
        return false;
    char *nb;
    if (c->wsize == MP_BUF_INITIAL) {
        /* a pooled buffer goes back to the pool, not to realloc */
        nb = malloc(want);
        if (nb == NULL)
            return false;
        memcpy(nb, c->wbuf, pending);
        mp_buf_put(c->ch, c->wbuf, c->wsize);
    } else {
        nb = realloc(c->wbuf, want);
        if (nb == NULL)
            return false;
    }
    c->wbuf = nb;
    c->wsize = (uint32_t)want;
    return true;
}
