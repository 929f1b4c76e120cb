/* memcached's binary protocol, as memcached 1.6.18's proto_bin.c answers it
 * (the protocol memcached deprecated but still serves): a 24-byte header,
 * extras, key and value per request, one reply packet per request or none
 * for a quiet request that succeeded.
 *
 * parse (mp_bin_parse: no I/O, no allocation) / process (one bin_<op>
 * function per opcode, called from dispatch after memcached's length
 * checks) / compose (bin_header and the reply helpers, into the output
 * reserved before a shard lock).  The store, the counters and the output
 * are the text protocol's: a key set over one protocol reads the same over
 * the other.  Locking as everywhere in the protocol: executor.h.
 *
 * When memcached transmits decides which replies a later fatal error (a bad
 * magic byte) drops, as in the text protocol: it sends whatever is queued
 * when it runs out of input or yields, and at once after a noop, a quit and
 * any error not followed by a swallowed body (its conn_mwrite). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "executor.h"
#include "io/conn.h"
#include "log.h"
#include "parser.h"
#include "proto_env.h"
#include "replies.h"
#include "settings.h"
#include "stats.h"
#include "store/store.h"

/* opcodes (protocol_binary.h) */
enum {
    OP_GET = 0x00, OP_SET = 0x01, OP_ADD = 0x02, OP_REPLACE = 0x03, OP_DELETE = 0x04,
    OP_INCREMENT = 0x05, OP_DECREMENT = 0x06, OP_QUIT = 0x07, OP_FLUSH = 0x08,
    OP_GETQ = 0x09, OP_NOOP = 0x0a, OP_VERSION = 0x0b, OP_GETK = 0x0c, OP_GETKQ = 0x0d,
    OP_APPEND = 0x0e, OP_PREPEND = 0x0f, OP_STAT = 0x10, OP_SETQ = 0x11, OP_ADDQ = 0x12,
    OP_REPLACEQ = 0x13, OP_DELETEQ = 0x14, OP_INCREMENTQ = 0x15, OP_DECREMENTQ = 0x16,
    OP_QUITQ = 0x17, OP_FLUSHQ = 0x18, OP_APPENDQ = 0x19, OP_PREPENDQ = 0x1a,
    OP_TOUCH = 0x1c, OP_GAT = 0x1d, OP_GATQ = 0x1e,
    OP_SASL_LIST_MECHS = 0x20, OP_SASL_AUTH = 0x21, OP_SASL_STEP = 0x22,
    OP_GATK = 0x23, OP_GATKQ = 0x24,
};

/* statuses */
enum {
    ST_SUCCESS = 0x00, ST_KEY_ENOENT = 0x01, ST_KEY_EEXISTS = 0x02, ST_E2BIG = 0x03,
    ST_EINVAL = 0x04, ST_NOT_STORED = 0x05, ST_DELTA_BADVAL = 0x06,
    ST_AUTH_ERROR = 0x20, ST_AUTH_CONTINUE = 0x21,
    ST_UNKNOWN_COMMAND = 0x81, ST_ENOMEM = 0x82,
};

/* A get's reply before its value: header, flags, and the key for getk */
#define BIN_GET_HEAD_MAX (MP_BIN_HEADER + 4 + MP_KEY_MAX_LENGTH)
/* incr/decr's "no such key, do not create it" expiration */
#define BIN_NO_CREATE 0xffffffffu

static inline uint16_t rd16(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint16_t)(u[0] << 8 | u[1]);
}

static inline uint32_t rd32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static inline uint64_t rd64(const char *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

static inline char *wr16(char *p, uint16_t v)
{
    p[0] = (char)(v >> 8);
    p[1] = (char)v;
    return p + 2;
}

static inline char *wr32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
    return p + 4;
}

static inline char *wr64(char *p, uint64_t v)
{
    wr32(p, (uint32_t)(v >> 32));
    return wr32(p + 4, (uint32_t)v);
}

/* ---- parse ---- */

mp_bin_parse_status mp_bin_parse(const char *buf, size_t len, mp_bin_request *req,
                                 size_t *consumed)
{
    if (len < MP_BIN_HEADER)
        return MP_BIN_PARSE_NEED_MORE;
    if ((unsigned char)buf[0] != MP_BIN_REQ_MAGIC)
        return MP_BIN_PARSE_BAD_MAGIC;
    req->opcode = (uint8_t)buf[1];
    req->keylen = rd16(buf + 2);
    req->extlen = (uint8_t)buf[4];
    req->bodylen = rd32(buf + 8);
    memcpy(&req->opaque, buf + 12, 4);
    req->cas = rd64(buf + 16);
    size_t need = (size_t)MP_BIN_HEADER + req->extlen + req->keylen;
    if (len < need)
        return MP_BIN_PARSE_NEED_MORE;
    req->ext = buf + MP_BIN_HEADER;
    req->key = req->ext + req->extlen;
    *consumed = need;
    return MP_BIN_PARSE_OK;
}

/* ---- compose ---- */

/* The reply header (memcached's add_bin_header) at p. */
static char *bin_header(char *p, uint8_t opcode, uint32_t opaque, uint16_t status,
                        uint8_t extlen, uint16_t keylen, uint32_t bodylen, uint64_t cas)
{
    p[0] = (char)MP_BIN_RES_MAGIC;
    p[1] = (char)opcode;
    wr16(p + 2, keylen);
    p[4] = (char)extlen;
    p[5] = 0;   /* PROTOCOL_BINARY_RAW_BYTES */
    wr16(p + 6, status);
    wr32(p + 8, bodylen);
    memcpy(p + 12, &opaque, 4);
    wr64(p + 16, cas);
    return p + MP_BIN_HEADER;
}

/* -vv: memcached's lines about a request or a reply (its proto_bin.c
 * fprintfs at verbose > 1), one branch when logging is off */
static inline bool bin_logging(const mp_conn *c)
{
    return mp_log_on(c->env, MP_LOG_CONN);
}

/* "<N GET key", "<N STATS group", "Deleting key": a text, a key, a tail */
static void log_key(const mp_conn *c, char dir, const char *head, const mp_bin_request *q,
                    const char *tail)
{
    mp_log_text(c, dir, head, q->key, q->keylen, tail);
}

/* A reply of a header and a body of n bytes, extras and key none. */
static void bin_reply(mp_conn *c, uint16_t status, const char *body, size_t n, uint64_t cas)
{
    char *p = mp_out_reserve(c, MP_BIN_HEADER + n);
    if (p == NULL)
        return;
    if (bin_logging(c)) {
        /* write_bin_error names its text before add_bin_header dumps */
        if (status != ST_SUCCESS && status != ST_AUTH_CONTINUE)
            mp_log_text(c, '>', " Writing an error: ", body, n, NULL);
        char hdr[MP_BIN_HEADER];
        bin_header(hdr, c->proto.bin_opcode, c->proto.bin_opaque, status, 0, 0, (uint32_t)n, cas);
        mp_log_bin_header(c, false, hdr);
    }
    p = bin_header(p, c->proto.bin_opcode, c->proto.bin_opaque, status, 0, 0,
                   (uint32_t)n, cas);
    if (n > 0)
        memcpy(p, body, n);
    mp_out_commit(c, MP_BIN_HEADER + n);
}

/* memcached's write_bin_response: a quiet request's success is not
 * answered (a getq's hit is, and never comes here). */
static void bin_success(mp_conn *c, const char *body, size_t n, uint64_t cas)
{
    if (!c->proto.noreply)
        bin_reply(c, ST_SUCCESS, body, n, cas);
}

/* memcached's write_bin_error: answered quiet or not, with a text body.
 * With nothing to swallow after it memcached transmits at once. */
static void bin_error_text(mp_conn *c, uint16_t status, const char *text, size_t n,
                           uint32_t swallow)
{
    bin_reply(c, status, text, n, 0);
    if (swallow > 0) {
        c->proto.phase = MP_PS_SWALLOW;
        c->proto.reply_kind = RK_NONE;
        c->proto.left = swallow;
    } else {
        mp_out_mark(c);
    }
}
#define BIN_ERROR(c, status, lit, swallow) \
    bin_error_text((c), (status), lit, sizeof(lit) - 1, (swallow))

static void bin_error(mp_conn *c, uint16_t status, uint32_t swallow)
{
    switch (status) {
    case ST_KEY_ENOENT:      BIN_ERROR(c, status, RB_KEY_ENOENT, swallow); break;
    case ST_KEY_EEXISTS:     BIN_ERROR(c, status, RB_KEY_EEXISTS, swallow); break;
    case ST_E2BIG:           BIN_ERROR(c, status, RB_E2BIG, swallow); break;
    case ST_EINVAL:          BIN_ERROR(c, status, RB_EINVAL, swallow); break;
    case ST_NOT_STORED:      BIN_ERROR(c, status, RB_NOT_STORED, swallow); break;
    case ST_DELTA_BADVAL:    BIN_ERROR(c, status, RB_DELTA_BADVAL, swallow); break;
    case ST_AUTH_ERROR:      BIN_ERROR(c, status, RB_AUTH_ERROR, swallow); break;
    case ST_UNKNOWN_COMMAND: BIN_ERROR(c, status, RB_UNKNOWN_COMMAND, swallow); break;
    default:                 BIN_ERROR(c, ST_ENOMEM, RB_ENOMEM, swallow); break;
    }
}

/* An error before a value memcached then swallows: it does not transmit
 * here, even with nothing to swallow (its conn_swallow comes after the
 * error's conn_mwrite).  A negative length (a body over 2^31) swallows
 * nothing, and what follows is read as requests. */
static void bin_error_swallow(mp_conn *c, uint16_t status, const char *text, size_t n,
                              int32_t vlen)
{
    bin_reply(c, status, text, n, 0);
    if (vlen > 0) {
        c->proto.phase = MP_PS_SWALLOW;
        c->proto.reply_kind = RK_NONE;
        c->proto.left = (uint32_t)vlen;
    }
}
#define BIN_ERROR_SWALLOW(c, status, lit, vlen) \
    bin_error_swallow((c), (status), lit, sizeof(lit) - 1, (vlen))

/* memcached stores a value bigger than its slab_chunk_max (512 KiB by
 * default) in chunks, and refuses to incr or decr one, before comparing a
 * cas: non-numeric, whatever its bytes. */
#define MC_SLAB_CHUNK_MAX (512 * 1024)
static bool chunked(const mp_conn *c, const mp_item *it)
{
    return mp_item_ntotal_memcached(it->nkey, it->nbytes, mp_item_flags(it),
                                    c->env->settings->use_cas) > MC_SLAB_CHUNK_MAX;
}

/* ---- retrieval: get getq getk getkq touch gat gatq gatk gatkq ---- */

static int bin_get(mp_conn *c, const mp_bin_request *q, uint8_t cmd)
{
    bool touch = cmd == OP_TOUCH || cmd == OP_GAT || cmd == OP_GATK;
    bool with_key = cmd == OP_GETK || cmd == OP_GATK;
    bool with_value = cmd != OP_TOUCH;
    mp_rel_time exptime = 0;
    if (touch)
        exptime = mp_realtime((int64_t)rd32(q->ext));
    size_t nkey = q->keylen;
    if (bin_logging(c))
        log_key(c, '<', touch ? " TOUCH " : " GET ", q, NULL);
    /* the reply up to its value, before the lock */
    if (!mp_out_fits(c, BIN_GET_HEAD_MAX) && !mp_out_grow(c, BIN_GET_HEAD_MAX))
        return 0;
    uint64_t hv = mp_hash(q->key, nkey);
    mp_shard *s = mp_store_shard(c->env->store, hv);
    int why = MP_MISS_NONE;
    mp_shard_lock(s);
    mp_item *it = mp_item_find(s, q->key, nkey, hv, &why);
    if (it == NULL) {
        mp_shard_unlock(s);
        count_fetch(c, touch, false);
        count_miss_reason(c, why);
        if (c->proto.noreply)
            return 0;
        if (!with_key) {
            bin_error(c, ST_KEY_ENOENT, 0);
            return 0;
        }
        /* a getk's miss names its key, and is not an error memcached
         * transmits at once */
        char *p = mp_out_reserve(c, MP_BIN_HEADER + nkey);
        if (p != NULL) {
            p = bin_header(p, c->proto.bin_opcode, c->proto.bin_opaque, ST_KEY_ENOENT, 0,
                           (uint16_t)nkey, (uint32_t)nkey, 0);
            if (bin_logging(c))
                mp_log_bin_header(c, false, p - MP_BIN_HEADER);
            memcpy(p, q->key, nkey);
            mp_out_commit(c, MP_BIN_HEADER + nkey);
        }
        return 0;
    }
    if (touch) {
        mp_item_set_exptime(s, it, exptime);
        mp_item_access(s, it);
        mp_item_count_hit(s, it, true);
    } else {
        mp_item_bump(s, it);
    }
    uint32_t vlen = with_value ? it->nbytes - 2 : 0;
    uint16_t klen = with_key ? (uint16_t)nkey : 0;
    char *p = c->wbuf + c->wend;
    p = bin_header(p, c->proto.bin_opcode, c->proto.bin_opaque, ST_SUCCESS, 4, klen,
                   4 + klen + vlen, it->cas);
    p = wr32(p, mp_item_flags(it));
    if (with_key) {
        memcpy(p, MP_ITEM_key(it), nkey);
        p += nkey;
    }
    mp_item *deferred = mp_out_value_n(c, p, s, it, vlen);
    mp_shard_unlock(s);
    if (bin_logging(c)) {
        /* memcached dumps the header before it sets the item's cas */
        char hdr[MP_BIN_HEADER];
        bin_header(hdr, c->proto.bin_opcode, c->proto.bin_opaque, ST_SUCCESS, 4, klen,
                   4 + klen + vlen, 0);
        mp_log_bin_header(c, false, hdr);
    }
    count_fetch(c, touch, true);
    if (deferred != NULL)
        mp_out_value_deferred_n(c, deferred, vlen);
    return 0;
}

/* ---- storage: set add replace append prepend (and quiet forms) ---- */

static int bin_update(mp_conn *c, const mp_bin_request *q, mp_store_op op)
{
    mp_proto *p = &c->proto;
    bool append = op == MP_APPEND || op == MP_PREPEND;
    uint32_t flags = append ? 0 : rd32(q->ext);
    mp_rel_time exptime = append ? 0 : mp_realtime((int64_t)rd32(q->ext + 4));
    /* memcached's int: a body over 2^31 makes it negative */
    int32_t vlen = (int32_t)(q->bodylen - q->keylen - q->extlen);
    if (bin_logging(c)) {
        char tail[32];
        snprintf(tail, sizeof(tail), " Value len is %d", (int)vlen);
        if (append)
            mp_log_text(c, 0, tail + 1, NULL, 0, NULL);
        else
            log_key(c, '<', op == MP_SET ? " SET " : op == MP_ADD ? " ADD " : " REPLACE ", q, tail);
    }
    uint64_t cas_in = c->env->settings->use_cas ? q->cas : 0;
    mp_store *st = c->env->store;
    uint64_t hv = mp_hash(q->key, q->keylen);
    mp_item *it = NULL;
    int rc = MP_ALLOC_TOO_LARGE;
    if (vlen >= 0 && vlen <= INT32_MAX - 2)
        rc = mp_store_alloc(st, q->key, q->keylen, hv, flags, exptime, (uint32_t)vlen + 2, &it);
    if (rc != MP_ALLOC_OK) {
        if (rc == MP_ALLOC_TOO_LARGE) {
            STATS(c).store_too_large++;
            BIN_ERROR_SWALLOW(c, ST_E2BIG, RB_E2BIG, vlen);
        } else {
            STATS(c).store_no_memory++;
            BIN_ERROR_SWALLOW(c, ST_ENOMEM, RB_OOM_ALLOC, vlen);
        }
        /* stale data must not outlive a failed set (with a cas too) */
        if (op == MP_SET) {
            mp_shard *s = mp_store_shard(st, hv);
            mp_shard_lock(s);
            mp_item_unlink_key(s, q->key, q->keylen, hv);
            mp_shard_unlock(s);
        }
        return 0;
    }
    p->phase = MP_PS_NREAD;
    p->op = (uint8_t)(!append && cas_in != 0 ? MP_CAS : op);
    p->item = it;
    p->hv = hv;
    p->cas_in = cas_in;
    p->left = (uint32_t)vlen;
    p->filled = 0;
    return 0;
}

/* memcached's complete_update_bin: the value is whole. */
static void bin_complete_update(mp_conn *c)
{
    mp_proto *p = &c->proto;
    mp_store *st = c->env->store;
    mp_item *it = p->item;
    p->item = NULL;
    STATS(c).set_cmds++;
    /* the binary protocol sends no "\r\n" after a value; the store keeps one */
    memcpy(MP_ITEM_value(it) + it->nbytes - 2, "\r\n", 2);
    uint64_t cas = 0;
    mp_shard *s = mp_store_shard(st, p->hv);
    mp_shard_lock(s);
    mp_store_result res = mp_item_store(s, it, p->hv, (mp_store_op)p->op, p->cas_in, 0, &cas);
    mp_shard_unlock(s);
    count_cas_result(c, p->op, res);
    switch (res) {
    case MP_STORED:
        bin_success(c, NULL, 0, cas);
        break;
    case MP_EXISTS:
        bin_error(c, ST_KEY_EEXISTS, 0);
        break;
    case MP_NOT_FOUND:
        bin_error(c, ST_KEY_ENOENT, 0);
        break;
    default:
        if (p->op == MP_ADD)
            bin_error(c, ST_KEY_EEXISTS, 0);
        else if (p->op == MP_REPLACE)
            bin_error(c, ST_KEY_ENOENT, 0);
        else
            bin_error(c, ST_NOT_STORED, 0);
        break;
    }
}

/* ---- SASL (-S): list mechanisms, auth, step ----
 * memcached runs Cyrus SASL; here PLAIN alone, as memcached's pwdb build
 * checks it (auth.h, mp_sasl_pwdb_check).  The mechanism and the data
 * arrive as a value does, into a pending item that is never linked. */

/* memcached's MAX_SASL_MECH_LEN */
#define SASL_MECH_MAX 32
/* where a connection is in Cyrus' exchange (memcached's sasl_started) */
enum { SASL_NONE = 0, SASL_CONTINUE, SASL_DONE };
enum { SASL_OK, SASL_MORE, SASL_FAIL };

static int bin_sasl_list(mp_conn *c)
{
    /* memcached starts the exchange over, which forgets an authentication */
    c->proto.sasl_authed = false;
    bin_success(c, "PLAIN", 5, 0);
    return 0;
}

static int bin_sasl_auth(mp_conn *c, const mp_bin_request *q, uint8_t cmd)
{
    mp_proto *p = &c->proto;
    /* memcached's int */
    int32_t vlen = (int32_t)(q->bodylen - q->keylen);
    if (q->keylen > SASL_MECH_MAX) {
        BIN_ERROR_SWALLOW(c, ST_EINVAL, RB_EINVAL, vlen);
        return 0;
    }
    mp_store *st = c->env->store;
    uint64_t hv = mp_hash(q->key, q->keylen);
    mp_item *it = NULL;
    if (vlen < 0 || vlen > INT32_MAX - 2 ||
        mp_store_alloc(st, q->key, q->keylen, hv, 0, 0, (uint32_t)vlen + 2, &it) != MP_ALLOC_OK ||
        chunked(c, it)) {
        /* memcached cannot read SASL data into a chunked item either */
        if (it != NULL)
            mp_store_release(st, it, hv);
        BIN_ERROR_SWALLOW(c, ST_ENOMEM, RB_ENOMEM, vlen);
        return 0;
    }
    p->phase = MP_PS_NREAD;
    p->op = cmd;
    p->item = it;
    p->hv = hv;
    p->left = (uint32_t)vlen;
    p->filled = 0;
    return 0;
}

/* PLAIN's one message, "authzid NUL authcid NUL password" (Cyrus' plain
 * plugin): a third NUL, an empty user or an authzid other than the user
 * fail. */
static int sasl_plain(const mp_conn *c, const char *d, size_t n)
{
    const char *z1 = memchr(d, '\0', n);
    if (z1 == NULL)
        return SASL_FAIL;
    const char *user = z1 + 1;
    const char *z2 = memchr(user, '\0', (size_t)(d + n - user));
    if (z2 == NULL)
        return SASL_FAIL;
    const char *pass = z2 + 1;
    size_t ulen = (size_t)(z2 - user), plen = (size_t)(d + n - pass);
    size_t zlen = (size_t)(z1 - d);
    if (memchr(pass, '\0', plen) != NULL || ulen == 0)
        return SASL_FAIL;
    if (zlen != 0 && (zlen != ulen || memcmp(d, user, ulen) != 0))
        return SASL_FAIL;
    return mp_sasl_pwdb_check(c->env->settings->sasl_pwdb, user, ulen, pass, plen) ? SASL_OK
                                                                                  : SASL_FAIL;
}

/* memcached's process_bin_complete_sasl_auth */
static void bin_complete_sasl(mp_conn *c)
{
    mp_proto *p = &c->proto;
    mp_item *it = p->item;
    p->item = NULL;
    /* memcached's mechanism is a C string: it ends at a NUL */
    size_t nmech = strnlen(MP_ITEM_key(it), it->nkey);
    const char *data = MP_ITEM_value(it);
    size_t n = it->nbytes - 2;
    p->sasl_authed = false;
    int result = SASL_FAIL;
    if (p->op == OP_SASL_AUTH) {
        if (nmech == 5 && strncasecmp(MP_ITEM_key(it), "PLAIN", 5) == 0)
            result = n == 0 ? SASL_MORE : sasl_plain(c, data, n);
        p->sasl_state = result == SASL_MORE ? SASL_CONTINUE
                        : result == SASL_OK ? SASL_DONE : SASL_NONE;
    } else if (p->sasl_state == SASL_CONTINUE) {
        result = sasl_plain(c, data, n);
        p->sasl_state = SASL_DONE;
    }
    /* a step after a finished exchange, or before any, fails */
    mp_store_release(c->env->store, it, p->hv);
    if (result == SASL_OK) {
        p->sasl_authed = true;
        STATS(c).auth_cmds++;
        bin_success(c, RB_AUTHENTICATED, sizeof(RB_AUTHENTICATED) - 1, 0);
    } else if (result == SASL_MORE) {
        bin_reply(c, ST_AUTH_CONTINUE, NULL, 0, 0);
        mp_out_mark(c);
    } else {
        STATS(c).auth_cmds++;
        STATS(c).auth_errors++;
        bin_error(c, ST_AUTH_ERROR, 0);
    }
}

/* Feeds buffered input to a pending value or a swallowed body.  Returns true
 * when it is complete (and answered), false when everything buffered was
 * taken. */
static bool bin_data_phase(mp_conn *c)
{
    mp_proto *p = &c->proto;
    if (!take_block(c))
        return false;
    if (p->phase == MP_PS_NREAD) {
        if (p->op == OP_SASL_AUTH || p->op == OP_SASL_STEP)
            bin_complete_sasl(c);
        else
            bin_complete_update(c);
    }
    p->phase = MP_PS_LINE;
    p->noreply = false;
    return true;
}

/* ---- delete, incr/decr ---- */

static int bin_delete(mp_conn *c, const mp_bin_request *q)
{
    if (bin_logging(c))
        log_key(c, 0, "Deleting ", q, NULL);
    uint64_t hv = mp_hash(q->key, q->keylen);
    mp_shard *s = mp_store_shard(c->env->store, hv);
    mp_mdelete md = {.has_cas = q->cas != 0, .cas = q->cas};
    mp_shard_lock(s);
    mp_mdelete_result res = mp_item_mdelete(s, q->key, q->keylen, hv, &md);
    mp_shard_unlock(s);
    if (res == MP_MD_DELETED) {
        STATS(c).delete_hits++;
        bin_success(c, NULL, 0, 0);
    } else if (res == MP_MD_EXISTS) {
        bin_error(c, ST_KEY_EEXISTS, 0);
    } else {
        STATS(c).delete_misses++;
        bin_error(c, ST_KEY_ENOENT, 0);
    }
    return 0;
}

/* A missed incr/decr with an expiration other than BIN_NO_CREATE stores
 * its initial value (memcached's complete_incr_bin). */
static void bin_incr_create(mp_conn *c, const mp_bin_request *q, uint64_t initial,
                            uint32_t expiration)
{
    char num[24];
    char *e = u64_to_dec(num, initial);
    size_t n = (size_t)(e - num);
    memcpy(e, "\r\n", 2);
    mp_store *st = c->env->store;
    uint64_t hv = mp_hash(q->key, q->keylen);
    mp_item *it = NULL;
    if (mp_store_alloc(st, q->key, q->keylen, hv, 0, mp_realtime((int64_t)expiration),
                       (uint32_t)n + 2, &it) != MP_ALLOC_OK) {
        BIN_ERROR(c, ST_ENOMEM, RB_OOM_NEW_ITEM, 0);
        return;
    }
    memcpy(MP_ITEM_value(it), num, n + 2);
    uint64_t cas = 0;
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    mp_store_result res = mp_item_store(s, it, hv, MP_ADD, 0, 0, &cas);
    mp_shard_unlock(s);
    if (res != MP_STORED) {
        bin_error(c, ST_NOT_STORED, 0);
        return;
    }
    char body[8];
    wr64(body, initial);
    bin_success(c, body, sizeof(body), cas);
}

static int bin_arith(mp_conn *c, const mp_bin_request *q, bool incr)
{
    uint64_t delta = rd64(q->ext);
    uint64_t initial = rd64(q->ext + 8);
    uint32_t expiration = rd32(q->ext + 16);
    if (bin_logging(c)) {
        /* decr too says "incr", the delta signed, the expiration an int */
        char tail[80];
        snprintf(tail, sizeof(tail), " %lld, %llu, %d", (long long)delta,
                 (unsigned long long)initial, (int)expiration);
        log_key(c, 0, "incr ", q, tail);
    }
    char buf[24];
    uint64_t hv = mp_hash(q->key, q->keylen);
    mp_shard *s = mp_store_shard(c->env->store, hv);
    mp_item *it;
    bool moved;
    uint64_t cas = 0;
    mp_delta_result res;
    mp_shard_lock(s);
    it = mp_item_find(s, q->key, q->keylen, hv, NULL);
    if (it != NULL && chunked(c, it))
        res = MP_DELTA_NON_NUMERIC;
    else
        res = mp_item_delta(s, q->key, q->keylen, hv, incr, delta, q->cas, buf, &it, &moved);
    if (res == MP_DELTA_OK)
        cas = it->cas;
    mp_shard_unlock(s);
    switch (res) {
    case MP_DELTA_OK: {
        if (incr)
            STATS(c).incr_hits++;
        else
            STATS(c).decr_hits++;
        uint64_t v = 0;
        for (const char *d = buf; *d >= '0' && *d <= '9'; d++)
            v = v * 10 + (uint64_t)(*d - '0');
        char body[8];
        wr64(body, v);
        bin_success(c, body, sizeof(body), cas);
        break;
    }
    case MP_DELTA_NON_NUMERIC:
        bin_error(c, ST_DELTA_BADVAL, 0);
        break;
    case MP_DELTA_EOM:
        BIN_ERROR(c, ST_ENOMEM, RB_OOM_INCR, 0);
        break;
    case MP_DELTA_EXISTS:
        bin_error(c, ST_KEY_EEXISTS, 0);
        break;
    case MP_DELTA_NOT_FOUND:
    default:
        if (expiration != BIN_NO_CREATE) {
            bin_incr_create(c, q, initial, expiration);
            break;
        }
        if (incr)
            STATS(c).incr_misses++;
        else
            STATS(c).decr_misses++;
        bin_error(c, ST_KEY_ENOENT, 0);
        break;
    }
    return 0;
}

/* ---- flush, noop, version, quit ---- */

static int bin_flush(mp_conn *c, const mp_bin_request *q)
{
    if (!c->env->settings->flush_enabled) {
        /* memcached answers with an auth error and counts nothing */
        bin_error(c, ST_AUTH_ERROR, 0);
        return 0;
    }
    uint32_t exptime = q->extlen == 4 ? rd32(q->ext) : 0;
    mp_store_flush(c->env->store, (int64_t)exptime);
    STATS(c).flush_cmds++;
    bin_success(c, NULL, 0, 0);
    return 0;
}

static int bin_noop(mp_conn *c)
{
    bin_success(c, NULL, 0, 0);
    /* a noop ends a batch of quiet requests: memcached transmits here */
    mp_out_mark(c);
    return 0;
}

static int bin_version(mp_conn *c)
{
    bin_success(c, MP_VERSION, sizeof(MP_VERSION) - 1, 0);
    return 0;
}

static int bin_quit(mp_conn *c)
{
    bin_success(c, NULL, 0, 0);
    c->close_after_write = true;
    return MP_PROC_CLOSE;
}

/* ---- stat ---- */

/* The text "STAT <name> <value>\r\n" lines the stats hook appended from
 * `from` (relative to wstart) become stat packets (memcached's
 * append_bin_stats: the name as key, the value as body), in place: each
 * packet is longer than its line, so they are written from the last one
 * back, each at or after where its own line began. */
static void stats_to_binary(mp_conn *c, uint32_t from)
{
    size_t len = c->wend - c->wstart - from;
    const char *text = c->wbuf + c->wstart + from;
    /* a line "STAT <name> <value>\r\n" loses 8 bytes and gains a header;
     * one without a value ("STAT <name>\r\n") has no space to lose */
    size_t grow = 0;
    for (size_t i = 0, ls = 0; i < len; i++) {
        if (text[i] != '\n')
            continue;
        grow += MP_BIN_HEADER - 8;
        if (memchr(text + ls, ' ', i - ls) == text + ls + 4 &&
            memchr(text + ls + 5, ' ', i - ls - 5) == NULL)
            grow++;
        ls = i + 1;
    }
    if (mp_out_reserve(c, grow) == NULL)
        return;
    char *base = c->wbuf + c->wstart + from;
    char *src_end = base + len;
    char *dst_end = base + len + grow;
    while (src_end > base) {
        char *le = src_end - 2;   /* the line's "\r\n" */
        char *ls = le;
        while (ls > base && ls[-1] != '\n')
            ls--;
        char *k = ls + 5;
        char *sp = memchr(k, ' ', (size_t)(le - k));
        size_t klen = sp != NULL ? (size_t)(sp - k) : (size_t)(le - k);
        size_t vlen = sp != NULL ? (size_t)(le - sp - 1) : 0;
        char *dst = dst_end - (MP_BIN_HEADER + klen + vlen);
        if (vlen > 0)
            memmove(dst + MP_BIN_HEADER + klen, sp + 1, vlen);
        memmove(dst + MP_BIN_HEADER, k, klen);
        bin_header(dst, OP_STAT, c->proto.bin_opaque, ST_SUCCESS, 0, (uint16_t)klen,
                   (uint32_t)(klen + vlen), 0);
        dst_end = dst;
        src_end = ls;
    }
    mp_out_commit(c, grow);
}

/* The end of a listing: a packet with no key and no body. */
static void stats_end(mp_conn *c)
{
    char *p = mp_out_reserve(c, MP_BIN_HEADER);
    if (p == NULL)
        return;
    bin_header(p, OP_STAT, c->proto.bin_opaque, ST_SUCCESS, 0, 0, 0, 0);
    mp_out_commit(c, MP_BIN_HEADER);
}

static bool key_is(const mp_bin_request *q, const char *s)
{
    size_t n = strlen(s);
    return q->keylen == n && memcmp(q->key, s, n) == 0;
}

/* memcached compares some groups as prefixes (strncmp over the group's
 * length), others whole */
static bool key_starts(const mp_bin_request *q, const char *s)
{
    size_t n = strlen(s);
    return q->keylen >= n && memcmp(q->key, s, n) == 0;
}

static int bin_stat(mp_conn *c, const mp_bin_request *q)
{
    if (bin_logging(c))
        log_key(c, '<', " STATS ", q, NULL);
    const mp_proto_env *env = c->env;
    uint32_t from = c->wend - c->wstart;
    if (q->keylen == 0) {
        env->hooks->stats(env->owner, c, "", 0);
    } else if (key_starts(q, "reset")) {
        env->hooks->stats_reset(env->owner);
        stats_end(c);
        return 0;
    } else if (key_starts(q, "settings")) {
        env->hooks->stats(env->owner, c, "settings", 8);
    } else if (key_starts(q, "detail")) {
        /* per-prefix statistics are not kept: a dump is empty */
        if (key_starts(q, "detail dump")) {
            static const char name[] = "detailed", dump[] = "END\r\n";
            char *p = mp_out_reserve(c, MP_BIN_HEADER + sizeof(name) - 1 + sizeof(dump) - 1);
            if (p == NULL)
                return 0;
            p = bin_header(p, OP_STAT, c->proto.bin_opaque, ST_SUCCESS, 0, sizeof(name) - 1,
                           sizeof(name) - 1 + sizeof(dump) - 1, 0);
            memcpy(p, name, sizeof(name) - 1);
            memcpy(p + sizeof(name) - 1, dump, sizeof(dump) - 1);
            mp_out_commit(c, MP_BIN_HEADER + sizeof(name) - 1 + sizeof(dump) - 1);
        } else if (!key_starts(q, "detail on") && !key_starts(q, "detail off")) {
            bin_error(c, ST_KEY_ENOENT, 0);
            return 0;
        }
        stats_end(c);
        return 0;
    } else if (key_is(q, "items") || key_is(q, "slabs") || key_is(q, "sizes")) {
        /* the groups memcached's get_stats serves; "conns" and the rest
         * are the text protocol's */
        env->hooks->stats(env->owner, c, q->key, q->keylen);
    } else {
        bin_error(c, ST_KEY_ENOENT, 0);
        return 0;
    }
    stats_to_binary(c, from);
    stats_end(c);
    return 0;
}

/* ---- dispatch ---- */

/* A request memcached refuses for its lengths: an error, then the
 * connection is closed once it is sent. */
static int protocol_error(mp_conn *c)
{
    bin_error(c, ST_EINVAL, 0);
    if (c->env->verbose >= 1) {
        static const char hex[] = "0123456789abcdef";
        char tail[48];
        snprintf(tail, sizeof(tail), "%c%c), close connection %llu", hex[c->proto.bin_opcode >> 4],
                 hex[c->proto.bin_opcode & 15], mp_conn_number(c));
        mp_log_text(c, 0, "Protocol error (opcode ", NULL, 0, tail);
    }
    c->close_after_write = true;
    return MP_PROC_CLOSE;
}

/* memcached's dispatch_bin_command: the length checks, then the handler */
static int dispatch(mp_conn *c, const mp_bin_request *q)
{
    uint8_t ext = q->extlen;
    uint16_t key = q->keylen;
    uint32_t body = q->bodylen;
    if (key > body || (uint32_t)key + ext > body) {
        bin_error(c, ST_UNKNOWN_COMMAND, 0);
        c->close_after_write = true;
        return MP_PROC_CLOSE;
    }
    /* -S: before authenticating, SASL's requests and version only */
    bool allowed = c->proto.sasl_authed || q->opcode == OP_SASL_LIST_MECHS ||
                   q->opcode == OP_SASL_AUTH || q->opcode == OP_SASL_STEP ||
                   q->opcode == OP_VERSION;
    if (c->env->settings->sasl && bin_logging(c)) {
        char tail[32];
        snprintf(tail, sizeof(tail), "%02x is %s", q->opcode, allowed ? "true" : "false");
        mp_log_text(c, 0, "authenticated() in cmd 0x", NULL, 0, tail);
    }
    if (c->env->settings->sasl && !allowed) {
        bin_error(c, ST_AUTH_ERROR, 0);
        c->close_after_write = true;
        return MP_PROC_CLOSE;
    }
    if (key > MP_KEY_MAX_LENGTH)
        return protocol_error(c);
    uint8_t cmd = q->opcode;
    c->proto.noreply = true;
    switch (cmd) {
    case OP_SETQ: cmd = OP_SET; break;
    case OP_ADDQ: cmd = OP_ADD; break;
    case OP_REPLACEQ: cmd = OP_REPLACE; break;
    case OP_DELETEQ: cmd = OP_DELETE; break;
    case OP_INCREMENTQ: cmd = OP_INCREMENT; break;
    case OP_DECREMENTQ: cmd = OP_DECREMENT; break;
    case OP_QUITQ: cmd = OP_QUIT; break;
    case OP_FLUSHQ: cmd = OP_FLUSH; break;
    case OP_APPENDQ: cmd = OP_APPEND; break;
    case OP_PREPENDQ: cmd = OP_PREPEND; break;
    case OP_GETQ: cmd = OP_GET; break;
    case OP_GETKQ: cmd = OP_GETK; break;
    case OP_GATQ: cmd = OP_GAT; break;
    case OP_GATKQ: cmd = OP_GATK; break;
    default: c->proto.noreply = false; break;
    }
    switch (cmd) {
    case OP_VERSION:
        if (ext != 0 || key != 0 || body != 0)
            return protocol_error(c);
        return bin_version(c);
    case OP_FLUSH:
        if (key != 0 || body != ext || (ext != 0 && ext != 4))
            return protocol_error(c);
        return bin_flush(c, q);
    case OP_NOOP:
        if (ext != 0 || key != 0 || body != 0)
            return protocol_error(c);
        return bin_noop(c);
    case OP_SET:
    case OP_ADD:
    case OP_REPLACE:
        if (ext != 8 || key == 0 || body < (uint32_t)key + 8)
            return protocol_error(c);
        return bin_update(c, q, cmd == OP_SET ? MP_SET : cmd == OP_ADD ? MP_ADD : MP_REPLACE);
    case OP_GET:
    case OP_GETK:
        if (ext != 0 || body != key || key == 0)
            return protocol_error(c);
        return bin_get(c, q, cmd);
    case OP_DELETE:
        if (key == 0 || ext != 0 || body != key)
            return protocol_error(c);
        return bin_delete(c, q);
    case OP_INCREMENT:
    case OP_DECREMENT:
        if (key == 0 || ext != 20 || body != (uint32_t)key + ext)
            return protocol_error(c);
        return bin_arith(c, q, cmd == OP_INCREMENT);
    case OP_APPEND:
    case OP_PREPEND:
        if (key == 0 || ext != 0)
            return protocol_error(c);
        return bin_update(c, q, cmd == OP_APPEND ? MP_APPEND : MP_PREPEND);
    case OP_STAT:
        if (ext != 0)
            return protocol_error(c);
        return bin_stat(c, q);
    case OP_QUIT:
        if (key != 0 || ext != 0 || body != 0)
            return protocol_error(c);
        return bin_quit(c);
    case OP_SASL_LIST_MECHS:
        if (ext != 0 || key != 0 || body != 0)
            return protocol_error(c);
        if (!c->env->settings->sasl) {
            bin_error(c, ST_UNKNOWN_COMMAND, body - key);
            return 0;
        }
        return bin_sasl_list(c);
    case OP_SASL_AUTH:
    case OP_SASL_STEP:
        if (ext != 0 || key == 0)
            return protocol_error(c);
        if (!c->env->settings->sasl) {
            bin_error(c, ST_UNKNOWN_COMMAND, body - key);
            return 0;
        }
        return bin_sasl_auth(c, q, cmd);
    case OP_TOUCH:
    case OP_GAT:
    case OP_GATK:
        if (ext != 4 || key == 0)
            return protocol_error(c);
        return bin_get(c, q, cmd);
    default:
        /* memcached swallows the whole body length after the extras and
         * key it has already consumed: a following request of fewer bytes
         * than those is swallowed with it */
        bin_error(c, ST_UNKNOWN_COMMAND, body);
        return 0;
    }
}

/* memcached's conn_closing: what it has not transmitted is dropped. */
static int close_now(mp_conn *c)
{
    mp_out_cull(c);
    c->close_after_write = true;
    return MP_PROC_CLOSE;
}

int mp_bin_process(mp_conn *c, int budget)
{
    mp_proto *p = &c->proto;
    mp_out_mark(c);
    int ran = batch_start(c);
    for (;;) {
        if (c->out_oom)
            return close_now(c);
        if (p->phase != MP_PS_LINE) {
            if (!bin_data_phase(c))
                return MP_PROC_NEED_INPUT;
            continue;
        }
        int gate = batch_gate(c, ran, budget);
        if (gate >= 0)
            return gate;
        mp_bin_request q;
        size_t consumed = 0;
        mp_bin_parse_status st = mp_bin_parse(c->rbuf + c->rstart, c->rend - c->rstart, &q,
                                              &consumed);
        if (st == MP_BIN_PARSE_NEED_MORE)
            return MP_PROC_NEED_INPUT;
        /* memcached dumps a header once it has 24 bytes; here once the
         * extras and key are in too (it dumps again each time it looks at
         * a header still waiting for them) */
        if (bin_logging(c))
            mp_log_bin_header(c, true, c->rbuf + c->rstart);
        if (st == MP_BIN_PARSE_BAD_MAGIC) {
            if (c->env->verbose >= 1) {
                char tail[8];
                snprintf(tail, sizeof(tail), "%x", (unsigned char)c->rbuf[c->rstart]);
                mp_log_text(c, 0, "Invalid magic:  ", NULL, 0, tail);
            }
            return close_now(c);
        }
        ran++;
        STATS(c).requests++;
        p->seen_cmd = true;
        c->last_cmd = mp_current_time;
        p->bin_opcode = q.opcode;
        p->bin_opaque = q.opaque;
        /* the request's extras and key stay readable in rbuf while it runs */
        int rc = dispatch(c, &q);
        c->rstart += (uint32_t)consumed;
        if (p->phase == MP_PS_LINE)
            p->noreply = false;
        if (rc == MP_PROC_CLOSE)
            return rc;
    }
}
