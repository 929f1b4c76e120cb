/* Connection buffers: drawn from the channel's pools when needed and given
 * back when empty, so a connection that is idle between requests holds no
 * memory and a busy one does not go through malloc per request. */
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "conn.h"
#include "engine.h"
#include "store.h"

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

bool mp_out_grow(mp_conn *c, size_t n)
{
    if (c->wbuf == NULL) {
        c->wbuf = mp_buf_get(c->ch, n, &c->wsize, MP_BUF_OUT);
        c->wstart = c->wend = 0;
        if (c->wbuf == NULL) {
            c->wsize = 0;
            c->out_oom = true;
            return false;
        }
        return true;
    }
    if (c->wsize - c->wend >= n)
        return true;
    uint32_t pending = c->wend - c->wstart;
    if (c->wstart > 0) {
        for (uint32_t i = 0; i < c->wrefs.n; i++)
            c->wrefs.r[i].at -= c->wstart;
        memmove(c->wbuf, c->wbuf + c->wstart, pending);
        c->wstart = 0;
        c->wend = pending;
        if (c->wsize - c->wend >= n)
            return true;
    }
    uint32_t size;
    char *nb = mp_buf_get(c->ch, (size_t)pending + n, &size, MP_BUF_OUT);
    if (nb == NULL) {
        c->out_oom = true;
        return false;
    }
    memcpy(nb, c->wbuf, pending);
    mp_buf_put(c->ch, c->wbuf, c->wsize, MP_BUF_OUT);
    c->wbuf = nb;
    c->wsize = size;
    return true;
}

/* ---- values sent from their items ---- */

void mp_out_value(mp_conn *c, char *p, mp_shard *s, mp_item *it)
{
    if (!mp_out_by_ref(c, it->nbytes)) {
        memcpy(p, MP_ITEM_value(it), it->nbytes);
        mp_out_commit(c, (size_t)(p + it->nbytes - (c->wbuf + c->wend)));
        return;
    }
    mp_out_commit(c, (size_t)(p - (c->wbuf + c->wend)));
    mp_item_ref(s, it);
    mp_out_ref *r = &c->wrefs.r[c->wrefs.n++];
    r->at = c->wend;
    r->len = it->nbytes;
    r->data = MP_ITEM_value(it);
    r->it = it;
    c->wrefs.bytes += it->nbytes;
}

int mp_out_iov(const char *buf, uint32_t start, uint32_t end, const mp_refs *refs,
               struct iovec *iov)
{
    int n = 0;
    for (uint32_t i = 0; i < refs->n; i++) {
        const mp_out_ref *r = &refs->r[i];
        if (r->at > start) {
            iov[n].iov_base = (char *)buf + start;
            iov[n++].iov_len = r->at - start;
            start = r->at;
        }
        iov[n].iov_base = (char *)r->data;
        iov[n++].iov_len = r->len;
    }
    if (end > start) {
        iov[n].iov_base = (char *)buf + start;
        iov[n++].iov_len = end - start;
    }
    return n;
}

void mp_out_sent(mp_store *st, uint32_t *start, mp_refs *refs, size_t n)
{
    uint32_t done = 0;
    for (; done < refs->n; done++) {
        mp_out_ref *r = &refs->r[done];
        if (r->at > *start) {
            size_t k = r->at - *start < n ? r->at - *start : n;
            *start += (uint32_t)k;
            n -= k;
            if (*start < r->at)
                break;
        }
        if (n < r->len) {
            r->data += n;
            r->len -= (uint32_t)n;
            refs->bytes -= (uint32_t)n;
            n = 0;
            break;
        }
        n -= r->len;
        refs->bytes -= r->len;
        mp_store_unref(st, r->it);
    }
    if (done > 0) {
        memmove(refs->r, refs->r + done, (refs->n - done) * sizeof(refs->r[0]));
        refs->n -= done;
    }
    *start += (uint32_t)n;
}

void mp_refs_release(mp_store *st, mp_refs *refs)
{
    for (uint32_t i = 0; i < refs->n; i++)
        mp_store_unref(st, refs->r[i].it);
    refs->n = 0;
    refs->bytes = 0;
}

void mp_out_cull(mp_conn *c)
{
    c->out_oom = false;
    c->wend = c->wstart + c->proto.flush_mark;
    mp_refs *w = &c->wrefs;
    while (w->n > c->proto.flush_mark_refs) {
        mp_out_ref *r = &w->r[--w->n];
        w->bytes -= r->len;
        mp_store_unref(c->ch->eng->store, r->it);
    }
}
