/* A connection's output: growing it (memory from c->env's allocator), values
 * woven in by reference, and what a send or a cull does to both. */
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "proto/proto_env.h"
#include "store/store.h"

/* ---- memory for connections outside a channel ---- */

static char *heap_get(void *pool, size_t need, uint32_t *size)
{
    (void)pool;
    size_t sz = MP_BUF_INITIAL;
    while (sz < need)
        sz *= 2;
    if (sz > UINT32_MAX)
        return NULL;
    *size = (uint32_t)sz;
    return malloc(sz);
}

static void heap_put(void *pool, char *buf, uint32_t size)
{
    (void)pool;
    (void)size;
    free(buf);
}

const mp_out_alloc mp_out_heap = {heap_get, heap_put};

/* ---- growing ---- */


bool mp_out_grow(mp_conn *c, size_t n)
{
    if (c->wbuf == NULL) {
        c->wbuf = c->env->alloc->get(c->env->pool, n, &c->wsize);
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
    char *nb = c->env->alloc->get(c->env->pool, (size_t)pending + n, &size);
    if (nb == NULL) {
        c->out_oom = true;
        return false;
    }
    memcpy(nb, c->wbuf, pending);
    c->env->alloc->put(c->env->pool, c->wbuf, c->wsize);
    c->wbuf = nb;
    c->wsize = size;
    MP_ASSERT(c->wsize - c->wend >= n);
    return true;
}

/* ---- values sent from their items ---- */

mp_item *mp_out_value_n(mp_conn *c, char *p, mp_shard *s, mp_item *it, uint32_t len)
{
    /* p ends a line written into output reserved before the lock */
    MP_ASSERT(c->wbuf != NULL && p >= c->wbuf + c->wend && p <= c->wbuf + c->wsize);
    MP_ASSERT(len <= it->nbytes);
    if (!mp_out_by_ref(c, len)) {
        if ((size_t)(c->wbuf + c->wsize - p) >= len) {
            memcpy(p, MP_ITEM_value(it), len);
            mp_out_commit(c, (size_t)(p + len - (c->wbuf + c->wend)));
            return NULL;
        }
        mp_out_commit(c, (size_t)(p - (c->wbuf + c->wend)));
        mp_item_ref(s, it);
        return it;
    }
    mp_out_commit(c, (size_t)(p - (c->wbuf + c->wend)));
    mp_item_ref(s, it);
    mp_out_ref *r = &c->wrefs.r[c->wrefs.n++];
    r->at = c->wend;
    r->len = len;
    r->data = MP_ITEM_value(it);
    r->it = it;
    c->wrefs.bytes += len;
    return NULL;
}

mp_item *mp_out_value(mp_conn *c, char *p, mp_shard *s, mp_item *it)
{
    return mp_out_value_n(c, p, s, it, it->nbytes);
}

bool mp_out_value_deferred_n(mp_conn *c, mp_item *it, uint32_t len)
{
    /* a referenced item's value does not change: no lock to read it */
    char *dst = mp_out_reserve(c, len);
    if (dst != NULL) {
        memcpy(dst, MP_ITEM_value(it), len);
        mp_out_commit(c, len);
    }
    mp_store_unref(c->env->store, it);
    return dst != NULL;
}

bool mp_out_value_deferred(mp_conn *c, mp_item *it)
{
    return mp_out_value_deferred_n(c, it, it->nbytes);
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
    /* whatever the kernel took, no reference is left behind the start */
    MP_ASSERT(refs->n == 0 || refs->r[0].at >= *start);
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
    /* output only grows between a mark and its cull (nothing is sent
     * within mp_process) */
    MP_ASSERT(c->proto.flush_mark <= c->wend - c->wstart &&
              c->proto.flush_mark_refs <= c->wrefs.n);
    c->out_oom = false;
    c->wend = c->wstart + c->proto.flush_mark;
    mp_refs *w = &c->wrefs;
    while (w->n > c->proto.flush_mark_refs) {
        mp_out_ref *r = &w->r[--w->n];
        w->bytes -= r->len;
        mp_store_unref(c->env->store, r->it);
    }
    if (c->resps != NULL) {
        /* memcached frees the culled response objects and starts a new one
         * for what follows */
        mp_resps *rs = c->resps;
        uint32_t at = (uint32_t)mp_out_pending(c);
        while (rs->n > 0 && rs->at[rs->n - 1] >= at)
            rs->n--;
        rs->new_batch = true;   /* the cull went back to a mark */
        mp_out_resp(c);
    }
    mp_out_check(c);
}

#ifdef MPCACHE_DEBUG
/* The references of an output [start, end): at most MP_OUT_REFS, in order
 * inside it, their lengths summing to `bytes` (what MP_OUT_HIGHWATER counts
 * and mp_out_iov sends). */
static void refs_check(const mp_refs *refs, uint32_t start, uint32_t end)
{
    MP_ASSERT(refs->n <= MP_OUT_REFS);
    uint64_t bytes = 0;
    uint32_t at = start;
    for (uint32_t i = 0; i < refs->n; i++) {
        const mp_out_ref *r = &refs->r[i];
        MP_ASSERT(r->at >= at && r->at <= end && r->len > 0 && r->it != NULL);
        at = r->at;
        bytes += r->len;
    }
    MP_ASSERT(bytes == refs->bytes);
}

void mp_out_check(const mp_conn *c)
{
    MP_ASSERT(c->wstart <= c->wend && c->wend <= c->wsize && (c->wbuf != NULL || c->wsize == 0));
    refs_check(&c->wrefs, c->wstart, c->wend);
    MP_ASSERT(c->sstart <= c->send && c->send <= c->ssize && (c->sbuf != NULL || c->ssize == 0));
    refs_check(&c->srefs, c->sstart, c->send);
}
#endif
