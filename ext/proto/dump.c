/* Key dumps (dump.h). */
#include <string.h>

#include "decimal.h"
#include "dump.h"
#include "io/conn.h"
#include "proto_env.h"
#include "store/store.h"

/* buckets per hold of a shard lock: at 1.5 items a bucket, a hundred lines */
#define MP_DUMP_BUCKETS 64
/* output reserved before each batch; doubled when a bucket does not fit */
#define MP_DUMP_ROOM (32 * 1024)
/* memcached's item_cachedump builds its reply in 2 MB */
#define MP_CACHEDUMP_MAX (2 * 1024 * 1024)
/* "ITEM " key " [" bytes " b; " exp " s]\r\n" */
#define MP_CACHEDUMP_LINE_MAX (5 + MP_KEY_MAX_LENGTH + 2 + 10 + 4 + 20 + 4)
/* "key=" key(encoded) " exp=" " la=" " cas=" " fetch=yes" " cls=" " size=" "\n" */
#define MP_METADUMP_LINE_MAX (4 + 3 * MP_KEY_MAX_LENGTH + 5 + 21 + 4 + 20 + 5 + 20 + 10 + 5 + 3 + 6 + 20 + 1)

enum { STOP_ROOM = 2, STOP_DONE = 3 };

typedef struct dump_ctx {
    mp_conn *c;
    const mp_store *st;
    bool meta;
    mp_class_set classes;     /* metadump */
    unsigned clsid;           /* cachedump */
    uint32_t limit;
    uint32_t count, bytes;    /* cachedump: shown so far */
    uint32_t mark_wend, mark_count, mark_bytes;   /* at the bucket's start */
} dump_ctx;

static const char hexdig[] = "0123456789ABCDEF";

static inline bool uri_plain(unsigned char b)
{
    return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') ||
           b == '-' || b == '.' || b == '_' || b == '~';
}

size_t mp_uriencode(const char *src, size_t n, char *dst)
{
    char *q = dst;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)src[i];
        if (uri_plain(b)) {
            *q++ = (char)b;
        } else {
            *q++ = '%';
            *q++ = hexdig[b >> 4];
            *q++ = hexdig[b & 15];
        }
    }
    return (size_t)(q - dst);
}

static int cachedump_line(dump_ctx *d, const mp_item *it)
{
    mp_conn *c = d->c;
    /* memcached skips keys stored by a meta command's b (binary) */
    if (it->clsid != d->clsid || (it->iflags & MP_IT_KEY_BINARY))
        return MP_WALK_GO_ON;
    if (d->limit != 0 && d->count >= d->limit)
        return STOP_DONE;
    if (!mp_out_fits(c, MP_CACHEDUMP_LINE_MAX))
        return STOP_ROOM;
    char *p = c->wbuf + c->wend, *q = p;
    memcpy(q, "ITEM ", 5);
    q += 5;
    /* memcached prints the key with %s: it ends at a NUL */
    const char *key = MP_ITEM_key(it);
    size_t nkey = strnlen(key, it->nkey);
    memcpy(q, key, nkey);
    q += nkey;
    memcpy(q, " [", 2);
    q = u64_to_dec(q + 2, it->nbytes - 2);
    memcpy(q, " b; ", 4);
    q = u64_to_dec(q + 4, it->exptime == 0 ? 0 : (uint64_t)it->exptime + (uint64_t)mp_process_started);
    memcpy(q, " s]\r\n", 5);
    q += 5;
    uint32_t len = (uint32_t)(q - p);
    if (d->bytes + len + 6 > MP_CACHEDUMP_MAX)
        return STOP_DONE;
    c->wend += len;
    d->bytes += len;
    d->count++;
    return MP_WALK_GO_ON;
}

static int metadump_line(dump_ctx *d, const mp_item *it)
{
    mp_conn *c = d->c;
    if (!mp_class_set_has(&d->classes, it->clsid))
        return MP_WALK_GO_ON;
    if (!mp_out_fits(c, MP_METADUMP_LINE_MAX))
        return STOP_ROOM;
    char *p = c->wbuf + c->wend, *q = p;
    memcpy(q, "key=", 4);
    q += 4;
    q += mp_uriencode(MP_ITEM_key(it), it->nkey, q);
    memcpy(q, " exp=", 5);
    q += 5;
    if (it->exptime == 0) {
        *q++ = '-';
        *q++ = '1';
    } else {
        q = u64_to_dec(q, (uint64_t)it->exptime + (uint64_t)mp_process_started);
    }
    memcpy(q, " la=", 4);
    q = u64_to_dec(q + 4, (uint64_t)it->time + (uint64_t)mp_process_started);
    memcpy(q, " cas=", 5);
    q = u64_to_dec(q + 5, it->cas);
    if (it->iflags & MP_IT_FETCHED) {
        memcpy(q, " fetch=yes", 10);
        q += 10;
    } else {
        memcpy(q, " fetch=no", 9);
        q += 9;
    }
    memcpy(q, " cls=", 5);
    q = u64_to_dec(q + 5, it->clsid);
    memcpy(q, " size=", 6);
    q = u64_to_dec(q + 6, mp_item_size_memcached(d->st, it));
    /* memcached ends these lines with a bare newline (its END has \r\n) */
    *q++ = '\n';
    c->wend += (uint32_t)(q - p);
    return MP_WALK_GO_ON;
}

static int dump_item(void *arg, const mp_item *it)
{
    dump_ctx *d = arg;
    if (it == NULL) {
        d->mark_wend = d->c->wend;
        d->mark_count = d->count;
        d->mark_bytes = d->bytes;
        return MP_WALK_GO_ON;
    }
    return d->meta ? metadump_line(d, it) : cachedump_line(d, it);
}

/* The walk over every shard from where c's last call stopped; true when it
 * is over (END not yet written). */
static bool dump_run(dump_ctx *d)
{
    mp_conn *c = d->c;
    mp_proto *p = &c->proto;
    mp_store *st = c->env->store;
    if (p->resume == 0) {
        p->dump_shard = 0;
        p->dump_cursor = 0;
        p->dump_count = p->dump_bytes = 0;
    }
    p->resume = 0;
    d->count = p->dump_count;
    d->bytes = p->dump_bytes;
    size_t room = MP_DUMP_ROOM;
    int nshards = mp_store_nshards(st);
    while ((int)p->dump_shard < nshards) {
        if (mp_out_over_mark(c)) {
            p->dump_count = d->count;
            p->dump_bytes = d->bytes;
            p->resume = 1;
            return false;
        }
        if (!mp_out_fits(c, room) && !mp_out_grow(c, room))
            return true;   /* out_oom: the reply is culled and the connection closed */
        uint32_t before = c->wend;
        int rc = mp_store_walk(st, (int)p->dump_shard, &p->dump_cursor, MP_DUMP_BUCKETS,
                               dump_item, d);
        if (rc == STOP_ROOM) {
            /* the bucket goes again whole, in more room if it had it all */
            c->wend = d->mark_wend;
            d->count = d->mark_count;
            d->bytes = d->mark_bytes;
            if (c->wend == before)
                room *= 2;
            continue;
        }
        if (rc == STOP_DONE)
            return true;
        if (rc == MP_WALK_SHARD_DONE) {
            p->dump_shard++;
            p->dump_cursor = 0;
        }
    }
    return true;
}

bool mp_dump_cachedump(mp_conn *c, unsigned clsid, uint32_t limit)
{
    dump_ctx d = {.c = c, .st = c->env->store, .meta = false, .clsid = clsid, .limit = limit};
    if (!dump_run(&d))
        return false;
    mp_out_lit(c, "END\r\n");
    return true;
}

bool mp_dump_metadump(mp_conn *c, const mp_class_set *classes)
{
    dump_ctx d = {.c = c, .st = c->env->store, .meta = true, .classes = *classes};
    if (!dump_run(&d))
        return false;
    mp_out_lit(c, "END\r\n");
    return true;
}
