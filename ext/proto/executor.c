/* The text protocol's executor: applies parsed lines to the store and writes
 * replies into the connection's output buffer (parse / execute / compose).
 *
 * One handler per command (cmd_<name>), dispatched through the command table
 * of commands.h after memcached's token-count check.  Every reply text is
 * defined once, in replies.h; the meta commands live in meta.c.  The behaviour is memcached 1.6.18's proto_text.c as
 * observed on the wire; where it is surprising the comment says so.
 *
 * Locking: see executor.h, one style for every command.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "commands.h"
#include "dump.h"
#include "executor.h"
#include "io/conn.h"
#include "latency.h"
#include "parser.h"
#include "prefix.h"
#include "proto_env.h"
#include "replies.h"
#include "settings.h"
#include "stats.h"
#include "store/store.h"
#include "watch.h"

/* memcached's MAX_VERBOSITY_LEVEL */
#define MP_MAX_VERBOSITY 2
/* cache_memlimit's bounds in megabytes, as memcached checks them */
#define MP_MEMLIMIT_MIN_MB 8
#define MP_MEMLIMIT_MAX_MB 1000000000u
/* "VALUE " key " " flags " " bytes " " cas "\r\n": the line around a hit */
#define MP_VALUE_LINE_MAX (6 + MP_KEY_MAX_LENGTH + 1 + 10 + 1 + 10 + 1 + 20 + 2)

/* memcached's resp_has_stack: replies of this batch are still queued
 * (watch and metadump hand the connection to another thread, which cannot
 * take them) */
static bool replies_queued(const mp_conn *c)
{
    return c->wend - c->wstart > c->proto.flush_mark || c->wrefs.n > c->proto.flush_mark_refs;
}

/* memcached's set_noreply_maybe: only the last word it kept counts. */
static bool noreply_maybe(mp_conn *c, const mp_request *r)
{
    if (r->ntokens > 0 && TOK_IS(r, r->ntokens - 1, "noreply"))
        c->proto.noreply = true;
    return c->proto.noreply;
}

/* memcached's conn_closing: replies it already transmitted reach the client,
 * the ones still queued are dropped with the connection. */
static int close_now(mp_conn *c)
{
    mp_out_cull(c);
    c->close_after_write = true;
    return MP_PROC_CLOSE;
}

/* ---- retrieval: get gets bget gat gats ---- */

typedef enum { GK_OK, GK_KEY_TOO_LONG, GK_NO_MEMORY } get_key_result;

/* One key of a get.  With compose false (a reply that will be culled) only
 * its effects happen: the lookup, the bump, a touch, the counters. */
static get_key_result get_one(mp_conn *c, const char *key, size_t nkey, bool return_cas,
                              bool touch, mp_rel_time exptime, bool compose)
{
    if (nkey > MP_KEY_MAX_LENGTH)
        return GK_KEY_TOO_LONG;
    /* the line's room, before the lock; a small value usually fits behind
     * it (an idle connection holds no output buffer) */
    if (compose && !mp_out_fits(c, MP_VALUE_LINE_MAX) && !mp_out_grow(c, MP_VALUE_LINE_MAX))
        return GK_NO_MEMORY;
    uint64_t hv = mp_hash(key, nkey);
    mp_shard *s = mp_store_shard(c->env->store, hv);
    int why = MP_MISS_NONE;
    mp_shard_lock(s);
    mp_item *it = mp_item_find(s, key, nkey, hv, &why);
    if (it == NULL) {
        mp_shard_unlock(s);
        if (mp_prefix_on(c->env))
            mp_prefix_record(c->env->shared->prefix, key, nkey, MP_PREFIX_GET);
        if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
            mp_watch_item_get(c, key, nkey, mp_watch_miss_status(why), NULL);
        if (mp_log_on(c->env, MP_LOG_STATE))
            mp_log_lookup(c, key, nkey, why);
        count_fetch(c, touch, false);
        count_miss_reason(c, why);
        return GK_OK;
    }
    if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
        mp_watch_item_get(c, key, nkey, MP_WATCH_FOUND, it);
    if (touch)
        mp_item_set_exptime(s, it, exptime);
    mp_item_bump(s, it);
    mp_item *deferred = NULL;
    if (compose) {
        char *p = c->wbuf + c->wend;
        memcpy(p, "VALUE ", 6);
        p += 6;
        memcpy(p, MP_ITEM_key(it), it->nkey);
        p += it->nkey;
        *p++ = ' ';
        p = u64_to_dec(p, mp_item_flags(it));
        *p++ = ' ';
        p = u64_to_dec(p, it->nbytes - 2);
        if (return_cas) {
            *p++ = ' ';
            p = u64_to_dec(p, it->cas);
        }
        *p++ = '\r';
        *p++ = '\n';
        deferred = mp_out_value(c, p, s, it);
    }
    mp_shard_unlock(s);
    if (mp_prefix_on(c->env))
        mp_prefix_record(c->env->shared->prefix, key, nkey, MP_PREFIX_HIT);
    if (mp_log_on(c->env, MP_LOG_CONN)) {
        if (mp_log_on(c->env, MP_LOG_STATE))
            mp_log_lookup(c, key, nkey, MP_MISS_NONE);
        mp_log_sending_key(c, key, nkey);
    }
    count_fetch(c, touch, true);
    if (deferred != NULL && !mp_out_value_deferred(c, deferred))
        return GK_NO_MEMORY;
    return GK_OK;
}

/* Are the keys of the line from pos on all short enough? */
static bool keys_ok_from(const mp_request *r, size_t pos)
{
    mp_token t;
    while (mp_next_token(r->line, r->line_len, &pos, &t))
        if (t.len > MP_KEY_MAX_LENGTH)
            return false;
    return true;
}

/* The key after offset pos of the line, from the parser's tokens while they
 * last (the common get has one key, already tokenized), then read on. */
static bool next_key(const mp_request *r, int *i, size_t *pos, mp_token *t)
{
    while (*i < r->ntokens) {
        *t = r->tok[(*i)++];
        if (t->off >= *pos) {
            *pos = t->off + t->len;
            return true;
        }
    }
    if (*pos < r->rest)
        *pos = r->rest;
    return *pos < r->line_len && mp_next_token(r->line, r->line_len, pos, t);
}

/* A get's reply streams: once the output passes MP_OUT_HIGHWATER it stops
 * after the current key and goes on when the client has read (proto.resume),
 * so one get of many large values never builds its whole reply.  memcached
 * builds it whole, and a bad key anywhere in the line culls every hit before
 * it: when a key ahead is bad, the reply is culled at once and the keys up to
 * the bad one only run for their effects. */
static int get_common(mp_conn *c, const mp_request *r, bool return_cas, bool touch)
{
    mp_proto *p = &c->proto;
    mp_rel_time exptime = 0;
    int first = 1;
    if (touch) {
        int32_t e;
        if (!mp_parse_i32(TOKP(r, 1), TOKL(r, 1), &e)) {
            REPLY(c, R_BAD_EXPTIME);
            return 0;
        }
        exptime = exptime_rel(e);
        first = 2;
    }
    /* a gat without keys gets a bare END, as in memcached */
    size_t pos = p->resume;
    p->resume = 0;
    get_key_result res = GK_OK;
    mp_token t;
    /* UDP: memcached gives each key its own response object, END riding on
     * the last; one for a key that missed may go out as a bare header (when
     * it heads its transmit batch: MP_RESP_BATCH) */
    bool resumed = pos != 0, own_resp = resumed;
    while (res == GK_OK && next_key(r, &first, &pos, &t)) {
        if (resumed)
            mp_out_resp_resumed(c);
        else if (own_resp)
            mp_out_resp(c);
        resumed = false;
        own_resp = true;
        mp_out_resp_force(c);
        res = get_one(c, r->line + t.off, t.len, return_cas, touch, exptime, !p->discard);
        if (res == GK_OK && !p->discard && mp_out_over_mark(c) && pos < r->line_len) {
            if (keys_ok_from(r, pos)) {
                p->resume = pos;
                return MP_PROC_SUSPEND;
            }
            mp_out_cull(c);
            p->discard = true;
        }
    }
    p->discard = false;
    if (res != GK_OK) {
        /* memcached logs the END it then does not send */
        if (mp_log_on(c->env, MP_LOG_CONN))
            mp_log_reply(c, R_END, sizeof(R_END) - 1, false);
        /* memcached then culls every reply it has not sent yet: this get's
         * hits and the replies of the requests before it in the same batch */
        mp_out_cull(c);
        if (res == GK_KEY_TOO_LONG)
            REPLY(c, R_BAD_FORMAT);
        else
            REPLY(c, R_OOM_GET);
        return 0;
    }
    REPLY(c, R_END);
    /* memcached transmits after every successful get: what is queued so far
     * can no longer be culled */
    mp_out_mark(c);
    return 0;
}

static int cmd_get(mp_conn *c, const mp_request *r) { return get_common(c, r, false, false); }
static int cmd_gets(mp_conn *c, const mp_request *r) { return get_common(c, r, true, false); }
static int cmd_gat(mp_conn *c, const mp_request *r) { return get_common(c, r, false, true); }
static int cmd_gats(mp_conn *c, const mp_request *r) { return get_common(c, r, true, true); }

/* ---- storage: set add replace append prepend cas, and their data block ---- */

static int update_common(mp_conn *c, const mp_request *r, mp_store_op op)
{
    mp_proto *p = &c->proto;
    noreply_maybe(c, r);
    const char *key = TOKP(r, 1);
    size_t nkey = TOKL(r, 1);
    if (nkey > MP_KEY_MAX_LENGTH) {
        REPLY(c, R_BAD_FORMAT);
        return 0;
    }
    uint32_t flags;
    int32_t exptime, vlen;
    if (!(mp_parse_u32(TOKP(r, 2), TOKL(r, 2), &flags) &&
          mp_parse_i32(TOKP(r, 3), TOKL(r, 3), &exptime) &&
          mp_parse_i32(TOKP(r, 4), TOKL(r, 4), &vlen))) {
        REPLY(c, R_BAD_FORMAT);
        return 0;
    }
    uint64_t cas_in = 0;
    if (op == MP_CAS && !mp_parse_u64(TOKP(r, 5), TOKL(r, 5), &cas_in)) {
        REPLY(c, R_BAD_FORMAT);
        return 0;
    }
    /* the data block of a rejected line is not read: it is parsed as commands */
    if (vlen < 0 || vlen > INT32_MAX - 2) {
        REPLY(c, R_BAD_FORMAT);
        return 0;
    }
    uint32_t nbytes = (uint32_t)vlen + 2;
    /* counted at the command line, stored or not, as memcached does */
    if (mp_prefix_on(c->env))
        mp_prefix_record(c->env->shared->prefix, key, nkey, MP_PREFIX_SET);
    mp_store *st = c->env->store;
    uint64_t hv = mp_hash(key, nkey);
    mp_item *it = NULL;
    int rc = mp_store_alloc(st, key, nkey, hv, flags, exptime_rel(exptime), nbytes, &it);
    if (rc != MP_ALLOC_OK) {
        if (rc == MP_ALLOC_TOO_LARGE) {
            STATS(c).store_too_large++;
            p->reply_kind = RK_TOO_LARGE;
        } else {
            STATS(c).store_no_memory++;
            p->reply_kind = RK_NO_MEMORY;
        }
        if (mp_watch_on(c->env, MP_WATCH_MUTATIONS))
            mp_watch_item_refused(c, key, nkey, op,
                                  rc == MP_ALLOC_TOO_LARGE ? MP_TOO_LARGE : MP_NO_MEMORY);
        /* stale data must not outlive a failed set (memcached's rule; the
         * other modes keep the old item) */
        if (op == MP_SET) {
            mp_shard *s = mp_store_shard(st, hv);
            mp_shard_lock(s);
            if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
                mp_watch_lookup(c, s, key, nkey, hv);
            mp_item_unlink_key(s, key, nkey, hv);
            mp_shard_unlock(s);
        }
        /* the error goes out after the block was swallowed, as memcached's
         * does: it queues the reply and only writes once it needs input */
        p->phase = MP_PS_SWALLOW;
        p->left = nbytes;
        if (mp_log_on(c->env, MP_LOG_STATE))
            mp_log_state_to(c, MP_LS_SWALLOW);
        return 0;
    }
    if (mp_log_on(c->env, MP_LOG_STATE))
        mp_log_state_to(c, MP_LS_NREAD);
    p->phase = MP_PS_NREAD;
    p->op = (uint8_t)op;
    p->item = it;
    p->hv = hv;
    p->cas_in = cas_in;
    p->left = nbytes;
    p->filled = 0;
    return 0;
}

static int cmd_set(mp_conn *c, const mp_request *r) { return update_common(c, r, MP_SET); }
static int cmd_add(mp_conn *c, const mp_request *r) { return update_common(c, r, MP_ADD); }
static int cmd_replace(mp_conn *c, const mp_request *r) { return update_common(c, r, MP_REPLACE); }
static int cmd_append(mp_conn *c, const mp_request *r) { return update_common(c, r, MP_APPEND); }
static int cmd_prepend(mp_conn *c, const mp_request *r) { return update_common(c, r, MP_PREPEND); }
static int cmd_cas(mp_conn *c, const mp_request *r) { return update_common(c, r, MP_CAS); }

/* memcached's complete_nread_ascii */
static void complete_nread(mp_conn *c)
{
    mp_proto *p = &c->proto;
    mp_store *st = c->env->store;
    mp_item *it = p->item;
    p->item = NULL;
    /* counted even when the chunk turns out bad, as memcached does */
    STATS(c).set_cmds++;
    const char *end = MP_ITEM_value(it) + it->nbytes - 2;
    if (end[0] != '\r' || end[1] != '\n') {
        p->meta = false;
        mp_store_release(st, it, p->hv);
        REPLY(c, R_BAD_CHUNK);
        return;
    }
    if (p->meta) {
        mp_meta_complete_nread(c, it);
        return;
    }
    mp_shard *s = mp_store_shard(st, p->hv);
    mp_shard_lock(s);
    if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
        mp_watch_lookup(c, s, MP_ITEM_key(it), it->nkey, p->hv);
    mp_watch_store w;
    bool watched = mp_watch_on(c->env, MP_WATCH_MUTATIONS);
    if (watched)
        mp_watch_store_begin(&w, it);
    mp_store_result res = mp_item_store(s, it, p->hv, (mp_store_op)p->op, p->cas_in, 0, NULL);
    if (watched)
        mp_watch_store_end(&w, c, s, p->hv, p->op, res);
    mp_shard_unlock(s);
    count_cas_result(c, p->op, res);
    switch (res) {
    case MP_STORED:
        REPLY(c, R_STORED);
        break;
    case MP_EXISTS:
        REPLY(c, R_EXISTS);
        break;
    case MP_NOT_FOUND:
        REPLY(c, R_NOT_FOUND);
        break;
    default:
        /* includes an append/prepend whose result did not fit: memcached
         * answers NOT_STORED there, not an object-too-large error */
        REPLY(c, R_NOT_STORED);
        break;
    }
}

static void complete_swallow(mp_conn *c)
{
    mp_proto *p = &c->proto;
    if (p->reply_kind == RK_TOO_LARGE)
        REPLY(c, R_TOO_LARGE);
    else if (p->reply_kind == RK_NO_MEMORY)
        REPLY(c, R_OOM_STORE);
    else if (p->reply_kind == RK_META_ERROR)
        mp_meta_complete_swallow(c);
    p->reply_kind = RK_NONE;
}

/* Feeds buffered input to a pending data block.  Returns true when the block
 * is complete (and answered), false when everything buffered was taken. */
static bool data_phase(mp_conn *c)
{
    mp_proto *p = &c->proto;
    if (!take_block(c))
        return false;
    if (p->phase == MP_PS_NREAD)
        complete_nread(c);
    else
        complete_swallow(c);
    p->phase = MP_PS_LINE;
    p->noreply = false;
    if (mp_log_on(c->env, MP_LOG_STATE))
        mp_log_state_to(c, MP_LS_NEW_CMD);
    return true;
}

/* ---- touch, delete, incr/decr ---- */

static int cmd_touch(mp_conn *c, const mp_request *r)
{
    noreply_maybe(c, r);
    const char *key = TOKP(r, 1);
    size_t nkey = TOKL(r, 1);
    if (nkey > MP_KEY_MAX_LENGTH) {
        REPLY(c, R_BAD_FORMAT);
        return 0;
    }
    int32_t exptime;
    if (!mp_parse_i32(TOKP(r, 2), TOKL(r, 2), &exptime)) {
        REPLY(c, R_BAD_EXPTIME);
        return 0;
    }
    STATS(c).touch_cmds++;
    uint64_t hv = mp_hash(key, nkey);
    mp_shard *s = mp_store_shard(c->env->store, hv);
    mp_shard_lock(s);
    if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
        mp_watch_lookup(c, s, key, nkey, hv);
    bool found = mp_item_touch(s, key, nkey, hv, exptime_rel(exptime));
    mp_shard_unlock(s);
    if (mp_log_on(c->env, MP_LOG_STATE))
        mp_log_lookup(c, key, nkey, found ? MP_MISS_NONE : MP_MISS_ABSENT);
    if (found) {
        STATS(c).touch_hits++;
        REPLY(c, R_TOUCHED);
    } else {
        STATS(c).touch_misses++;
        REPLY(c, R_NOT_FOUND);
    }
    return 0;
}

static int cmd_delete(mp_conn *c, const mp_request *r)
{
    if (r->ntokens > 2) {
        /* the legacy "delete <key> 0" (a hold time of zero) is still accepted */
        bool hold_is_zero = TOK_IS(r, 2, "0");
        bool sets_noreply = noreply_maybe(c, r);
        bool valid = (r->ntokens == 3 && (hold_is_zero || sets_noreply)) ||
                     (r->ntokens == 4 && hold_is_zero && sets_noreply);
        if (!valid) {
            REPLY(c, R_DELETE_USAGE);
            return 0;
        }
    }
    const char *key = TOKP(r, 1);
    size_t nkey = TOKL(r, 1);
    if (nkey > MP_KEY_MAX_LENGTH) {
        REPLY(c, R_BAD_FORMAT);
        return 0;
    }
    if (mp_prefix_on(c->env))
        mp_prefix_record(c->env->shared->prefix, key, nkey, MP_PREFIX_DEL);
    uint64_t hv = mp_hash(key, nkey);
    mp_shard *s = mp_store_shard(c->env->store, hv);
    mp_shard_lock(s);
    if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
        mp_watch_lookup(c, s, key, nkey, hv);
    bool found = mp_item_delete(s, key, nkey, hv);
    mp_shard_unlock(s);
    if (mp_log_on(c->env, MP_LOG_STATE))
        mp_log_lookup(c, key, nkey, found ? MP_MISS_NONE : MP_MISS_ABSENT);
    if (found) {
        STATS(c).delete_hits++;
        REPLY(c, R_DELETED);
    } else {
        STATS(c).delete_misses++;
        REPLY(c, R_NOT_FOUND);
    }
    return 0;
}

static int arith_common(mp_conn *c, const mp_request *r, bool incr)
{
    noreply_maybe(c, r);
    const char *key = TOKP(r, 1);
    size_t nkey = TOKL(r, 1);
    if (nkey > MP_KEY_MAX_LENGTH) {
        REPLY(c, R_BAD_FORMAT);
        return 0;
    }
    uint64_t delta;
    if (!mp_parse_u64(TOKP(r, 2), TOKL(r, 2), &delta)) {
        REPLY(c, R_BAD_DELTA);
        return 0;
    }
    char buf[24];
    uint64_t hv = mp_hash(key, nkey);
    mp_shard *s = mp_store_shard(c->env->store, hv);
    mp_item *it;
    bool moved;
    mp_shard_lock(s);
    if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
        mp_watch_lookup(c, s, key, nkey, hv);
    mp_delta_result res = mp_item_delta(s, key, nkey, hv, incr, delta, 0, buf, &it, &moved);
    mp_shard_unlock(s);
    if (mp_log_on(c->env, MP_LOG_STATE))
        mp_log_lookup(c, key, nkey, res == MP_DELTA_NOT_FOUND ? MP_MISS_ABSENT : MP_MISS_NONE);
    switch (res) {
    case MP_DELTA_OK: {
        if (incr)
            STATS(c).incr_hits++;
        else
            STATS(c).decr_hits++;
        size_t n = strlen(buf);
        buf[n++] = '\r';
        buf[n++] = '\n';
        reply(c, buf, n);
        break;
    }
    case MP_DELTA_NON_NUMERIC:
        REPLY(c, R_NON_NUMERIC);
        break;
    case MP_DELTA_EOM:
        REPLY(c, R_OOM);
        break;
    case MP_DELTA_NOT_FOUND:
    default:
        if (incr)
            STATS(c).incr_misses++;
        else
            STATS(c).decr_misses++;
        REPLY(c, R_NOT_FOUND);
        break;
    }
    return 0;
}

static int cmd_incr(mp_conn *c, const mp_request *r) { return arith_common(c, r, true); }
static int cmd_decr(mp_conn *c, const mp_request *r) { return arith_common(c, r, false); }

/* ---- administrative commands ---- */

static int cmd_flush_all(mp_conn *c, const mp_request *r)
{
    bool nr = noreply_maybe(c, r);
    /* counted even when flushing is disabled, as memcached does */
    STATS(c).flush_cmds++;
    if (!c->env->settings->flush_enabled) {
        REPLY(c, R_FLUSH_DISABLED);
        return 0;
    }
    int32_t delay = 0;
    if (r->ntokens != (nr ? 2 : 1) && !mp_parse_i32(TOKP(r, 1), TOKL(r, 1), &delay)) {
        REPLY(c, R_BAD_EXPTIME);
        return 0;
    }
    mp_store_flush(c->env->store, delay);
    REPLY(c, R_OKAY);
    return 0;
}

static int cmd_version(mp_conn *c, const mp_request *r)
{
    (void)r;
    REPLY(c, R_VERSION);
    return 0;
}

static int cmd_mn(mp_conn *c, const mp_request *r)
{
    (void)r;
    REPLY(c, R_MN);
    /* memcached flushes its replies at mn: nothing before it can be culled */
    mp_out_mark(c);
    return 0;
}

static int cmd_verbosity(mp_conn *c, const mp_request *r)
{
    noreply_maybe(c, r);
    uint32_t level;
    if (!mp_parse_u32(TOKP(r, 1), TOKL(r, 1), &level)) {
        REPLY(c, R_BAD_FORMAT);
        return 0;
    }
    c->env->hooks->set_verbosity(c->env->owner,
                                 level > MP_MAX_VERBOSITY ? MP_MAX_VERBOSITY : (int)level);
    REPLY(c, R_OKAY);
    return 0;
}

static int cmd_quit(mp_conn *c, const mp_request *r)
{
    (void)r;
    c->close_reason = MP_CLOSE_NORMAL;
    c->close_after_write = true;
    /* UDP: memcached transmits quit's empty response, a bare header */
    mp_out_resp_force(c);
    return MP_PROC_CLOSE;
}

static int cmd_shutdown(mp_conn *c, const mp_request *r)
{
    if (!c->env->settings->shutdown_command) {
        REPLY(c, R_SHUTDOWN_OFF);
        return 0;
    }
    if (r->ntokens == 1 || (r->ntokens == 2 && TOK_IS(r, 1, "graceful"))) {
        /* memcached closes this connection at once, without a reply */
        c->env->hooks->shutdown(c->env->owner, r->ntokens == 2);
        c->close_reason = MP_CLOSE_SHUTDOWN;
        return close_now(c);
    }
    REPLY(c, R_SHUTDOWN_MODE);
    return 0;
}

static int cmd_memlimit(mp_conn *c, const mp_request *r)
{
    noreply_maybe(c, r);
    uint32_t mb;
    if (!mp_parse_u32(TOKP(r, 1), TOKL(r, 1), &mb)) {
        REPLY(c, R_ERROR);
    } else if (mb < MP_MEMLIMIT_MIN_MB) {
        REPLY(c, R_MEMLIMIT_SMALL);
    } else if (mb > MP_MEMLIMIT_MAX_MB) {
        REPLY(c, R_MEMLIMIT_UNITS);
    } else {
        c->env->hooks->set_memlimit(c->env->owner, (size_t)mb * 1024 * 1024);
        REPLY(c, R_OKAY);
    }
    return 0;
}

/* "stats [group]": the groups themselves are the engine's (stats.c).  A
 * listing's END is not one of memcached's out_string replies: unlogged. */
static int cmd_stats(mp_conn *c, const mp_request *r)
{
    const mp_proto_env *env = c->env;
    if (r->ntokens == 1) {
        env->hooks->stats(env->owner, c, "", 0);
        REPLY_UNLOGGED(c, R_END);
        return 0;
    }
    if (TOK_IS(r, 1, "reset")) {
        env->hooks->stats_reset(env->owner);
        mp_prefix_clear(env->shared->prefix);
        mp_watch_reset(env->shared->watch);
        REPLY(c, R_RESET);
        return 0;
    }
    if (TOK_IS(r, 1, "detail")) {
        /* memcached looks at the third word only when there are four */
        if (r->ntokens < 3) {
            REPLY(c, R_DETAIL_USAGE);
        } else if (TOK_IS(r, 2, "on") || TOK_IS(r, 2, "off")) {
            __atomic_store_n(&env->shared->detail_on, TOK_IS(r, 2, "on"), __ATOMIC_RELAXED);
            REPLY(c, R_OKAY);
        } else if (TOK_IS(r, 2, "dump")) {
            /* what was counted stays readable with detail off */
            if (!mp_prefix_dump(env->shared->prefix, c, &c->proto.resume))
                return MP_PROC_SUSPEND;
            REPLY_UNLOGGED(c, R_END);
        } else {
            REPLY(c, R_DETAIL_USAGE);
        }
        return 0;
    }
    if (TOK_IS(r, 1, "conns")) {
        if (!env->hooks->stats_conns(env->owner, c, &c->proto.resume))
            return MP_PROC_SUSPEND;
        REPLY_UNLOGGED(c, R_END);
        return 0;
    }
    if (TOK_IS(r, 1, "cachedump")) {
        /* memcached's checks in its order: -X before the words */
        if (!env->settings->dump_enabled) {
            REPLY(c, R_DUMP_OFF);
            return 0;
        }
        uint32_t id, limit;
        if (r->ntokens < 4) {
            REPLY(c, R_BAD_CMDLINE);
        } else if (!mp_parse_u32(TOKP(r, 2), TOKL(r, 2), &id) ||
                   !mp_parse_u32(TOKP(r, 3), TOKL(r, 3), &limit)) {
            REPLY(c, R_BAD_FORMAT);
        } else if (id >= MP_MAX_SLAB_CLASSES) {
            REPLY(c, R_ILLEGAL_SLAB);
        } else if (!mp_dump_cachedump(c, id, limit)) {
            return MP_PROC_SUSPEND;
        }
        return 0;
    }
    if (env->hooks->stats(env->owner, c, TOKP(r, 1), TOKL(r, 1)) < 0) {
        REPLY(c, R_ERROR);
        return 0;
    }
    REPLY_UNLOGGED(c, R_END);
    return 0;
}

/* ---- memcached's tuning commands ----
 * mpcache has no segmented LRU, crawler, slab mover on request, log watchers
 * or TLS; these answer exactly as memcached does for the same request when
 * the feature is idle, disabled, or (for slabs reassign) has nothing to
 * move, so scripts and tools that send them get a reply they understand. */

/* memcached's safe_strtod over a token */
static bool parse_double(const char *p, size_t len, double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, p, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (errno == ERANGE || end == buf)
        return false;
    if (*end != '\0' && !mp_isspace((unsigned char)*end))
        return false;
    *out = d;
    return true;
}

static int cmd_slabs(mp_conn *c, const mp_request *r)
{
    if (r->ntokens == 4 && TOK_IS(r, 1, "reassign")) {
        int32_t src, dst;
        if (!mp_parse_i32(TOKP(r, 2), TOKL(r, 2), &src) ||
            !mp_parse_i32(TOKP(r, 3), TOKL(r, 3), &dst)) {
            REPLY(c, R_BAD_FORMAT);
            return 0;
        }
        int largest = mp_store_nclasses(c->env->store);
        if (src == dst)
            REPLY(c, R_SLAB_SAME);
        else if (src < 0 || src > largest || dst < 0 || dst > largest)
            REPLY(c, R_SLAB_BADCLASS);   /* -1 ("any") finds no spare page */
        else
            REPLY(c, R_SLAB_NOSPARE);    /* pages move by the store's own policy */
        return 0;
    }
    if (r->ntokens >= 3 && TOK_IS(r, 1, "automove")) {
        noreply_maybe(c, r);
        if (TOK_IS(r, 2, "ratio")) {
            double ratio;
            if (r->ntokens < 4 || !parse_double(TOKP(r, 3), TOKL(r, 3), &ratio)) {
                REPLY(c, R_ERROR);
                return 0;
            }
        } else {
            uint32_t level;
            if (!mp_parse_u32(TOKP(r, 2), TOKL(r, 2), &level)) {
                REPLY(c, R_BAD_FORMAT);
                return 0;
            }
            if (level > 2) {
                REPLY(c, R_ERROR);
                return 0;
            }
        }
        REPLY(c, R_OKAY);
        return 0;
    }
    REPLY(c, R_ERROR);
    return 0;
}

static int cmd_lru(mp_conn *c, const mp_request *r)
{
    noreply_maybe(c, r);
    if (TOK_IS(r, 1, "tune") && r->ntokens >= 6) {
        uint32_t hot, warm;
        double hot_factor, factor;
        if (!mp_parse_u32(TOKP(r, 2), TOKL(r, 2), &hot) ||
            !mp_parse_u32(TOKP(r, 3), TOKL(r, 3), &warm) ||
            !parse_double(TOKP(r, 4), TOKL(r, 4), &hot_factor) ||
            !parse_double(TOKP(r, 5), TOKL(r, 5), &factor))
            REPLY(c, R_ERROR);
        else if (hot + warm > 80)
            REPLY(c, R_LRU_PCTS);
        else if (factor <= 0 || hot_factor <= 0)
            REPLY(c, R_LRU_FACTORS);
        else
            REPLY(c, R_OKAY);
    } else if (TOK_IS(r, 1, "mode") && r->ntokens >= 3) {
        if (TOK_IS(r, 2, "flat") || TOK_IS(r, 2, "segmented"))
            REPLY(c, R_OKAY);
        else
            REPLY(c, R_ERROR);
    } else if (TOK_IS(r, 1, "temp_ttl") && r->ntokens >= 3) {
        int32_t ttl;
        if (!mp_parse_i32(TOKP(r, 2), TOKL(r, 2), &ttl))
            REPLY(c, R_ERROR);
        else
            REPLY(c, R_OKAY);
    } else {
        REPLY(c, R_ERROR);
    }
    return 0;
}

/* "lru_crawler enable|disable": memcached's crawler thread, as it is once a
 * stop has taken effect (memcached stops it asynchronously).  Server-wide
 * (env->shared, one per engine); only these replies and "stats" /
 * "stats settings" can observe it. */
static bool crawler_enabled(const mp_conn *c)
{
    return !__atomic_load_n(&c->env->shared->lru_crawler_off, __ATOMIC_RELAXED);
}

/* memcached's class list: "all", or comma-separated class ids (*set gets
 * them, every class for "all"); "hash" only where allowed (metadump walks
 * the hash table for it, crawl refuses it) */
static bool crawl_classes_ok(const char *p, size_t len, bool hash_ok, bool *any, mp_class_set *set)
{
    *any = false;
    memset(set, 0, sizeof(*set));
    if ((len == 3 && memcmp(p, "all", 3) == 0) || (hash_ok && len == 4 && memcmp(p, "hash", 4) == 0)) {
        *any = true;
        memset(set, 0xff, sizeof(*set));
        return true;
    }
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && p[j] != ',')
            j++;
        if (j > i) {
            uint32_t id;
            if (!mp_parse_u32(p + i, j - i, &id) || id < 1 || id >= MP_MAX_SLAB_CLASSES)
                return false;
            *any = true;
            mp_class_set_add(set, id);
        }
        i = j + 1;
    }
    return true;
}

static int cmd_lru_crawler(mp_conn *c, const mp_request *r)
{
    if (r->ntokens == 3 && TOK_IS(r, 1, "crawl")) {
        bool any;
        mp_class_set classes;
        if (!crawler_enabled(c))
            REPLY(c, R_CRAWLER_OFF);
        else if (TOK_IS(r, 2, "hash"))   /* a hash walk is metadump's alone */
            REPLY(c, R_CRAWLER_ERROR);
        else if (!crawl_classes_ok(TOKP(r, 2), TOKL(r, 2), false, &any, &classes))
            REPLY(c, R_CRAWLER_BADCLASS);
        else if (!any)
            REPLY(c, R_CRAWLER_NONE);
        else
            REPLY(c, R_OKAY);   /* expiry is swept continuously anyway */
    } else if (r->ntokens == 3 && TOK_IS(r, 1, "metadump")) {
        bool any;
        mp_class_set classes;
        if (c->proto.resume != 0) {
            /* going on after the output mark: checked when it started */
            crawl_classes_ok(TOKP(r, 2), TOKL(r, 2), true, &any, &classes);
            if (!mp_dump_metadump(c, &classes))
                return MP_PROC_SUSPEND;
        } else if (!crawler_enabled(c)) {
            REPLY(c, R_CRAWLER_OFF);
        } else if (!c->env->settings->dump_enabled) {
            REPLY(c, R_METADUMP_OFF);
        } else if (replies_queued(c)) {
            /* memcached hands the connection to its crawler thread, which
             * cannot take replies still queued before it (resp_has_stack) */
            REPLY(c, R_METADUMP_PIPE);
        } else if (!crawl_classes_ok(TOKP(r, 2), TOKL(r, 2), true, &any, &classes)) {
            REPLY(c, R_CRAWLER_BADCLASS);
        } else if (!any) {
            REPLY(c, R_CRAWLER_NONE);
        } else if (!mp_dump_metadump(c, &classes)) {
            return MP_PROC_SUSPEND;
        }
    } else if (r->ntokens == 3 && (TOK_IS(r, 1, "tocrawl") || TOK_IS(r, 1, "sleep"))) {
        uint32_t v;
        if (!mp_parse_u32(TOKP(r, 2), TOKL(r, 2), &v))
            REPLY(c, R_BAD_FORMAT);
        else if (TOK_IS(r, 1, "sleep") && v > 1000000)
            REPLY(c, R_CRAWLER_SLEEP);
        else
            REPLY(c, R_OKAY);
    } else if (r->ntokens == 2 && TOK_IS(r, 1, "enable")) {
        if (__atomic_exchange_n(&c->env->shared->lru_crawler_off, 0, __ATOMIC_RELAXED) == 0)
            REPLY(c, R_CRAWLER_START);
        else
            REPLY(c, R_OKAY);
    } else if (r->ntokens == 2 && TOK_IS(r, 1, "disable")) {
        /* stopping a stopped crawler succeeds in memcached */
        __atomic_store_n(&c->env->shared->lru_crawler_off, 1, __ATOMIC_RELAXED);
        REPLY(c, R_OKAY);
    } else {
        REPLY(c, R_ERROR);
    }
    return 0;
}

/* memcached's process_watch_command: the words after "watch" are the
 * kinds (fetchers without any); the OK comes with the log lines */
static int cmd_watch(mp_conn *c, const mp_request *r)
{
    static const struct { const char *word; int kind; } words[] = {
        {"rawcmds", MP_WATCH_RAWCMDS},         {"evictions", MP_WATCH_EVICTIONS},
        {"fetchers", MP_WATCH_FETCHERS},       {"mutations", MP_WATCH_MUTATIONS},
        {"sysevents", MP_WATCH_SYSEVENTS},     {"connevents", MP_WATCH_CONNEVENTS},
        {"proxyreqs", MP_WATCH_PROXYREQS},     {"proxyevents", MP_WATCH_PROXYEVENTS},
        {"proxyuser", MP_WATCH_PROXYUSER},
    };
    noreply_maybe(c, r);
    if (!c->env->settings->watch_enabled) {
        REPLY(c, R_WATCH_OFF);
        return 0;
    }
    if (replies_queued(c)) {
        REPLY(c, R_WATCH_PIPE);
        return 0;
    }
    int kinds = 0;
    for (int i = 1; i < r->ntokens; i++) {
        int k = 0;
        for (size_t j = 0; j < sizeof(words) / sizeof(words[0]) && k == 0; j++)
            if (tok_is(r, i, words[j].word, strlen(words[j].word)))
                k = words[j].kind;
        if (k == 0) {
            REPLY(c, R_ERROR);
            return 0;
        }
        kinds |= k;
    }
    if (r->ntokens == 1)
        kinds = MP_WATCH_FETCHERS;
    mp_proto_shared *sh = c->env->shared;
    /* a UDP socket cannot carry a stream of log lines: memcached would hand
     * it to its logger thread and break UDP; here the watcher is refused */
    if (c->resps != NULL) {
        REPLY(c, R_WATCH_FAILED);
        return 0;
    }
    /* its channel drains it: connections of one channel share its env */
    switch (mp_watch_add(sh->watch, &sh->watch_kinds, c, (void *)c->env, kinds)) {
    case 0:
        c->proto.watcher = true;
        break;
    case -1:
        REPLY(c, R_WATCH_TOO_MANY);
        break;
    default:
        REPLY(c, R_WATCH_FAILED);
        break;
    }
    return 0;
}

/* memcached's reply to a refused reload is its message, sent whatever
 * noreply says (write_and_free); OK is swallowed by noreply. */
static int cmd_refresh_certs(mp_conn *c, const mp_request *r)
{
    noreply_maybe(c, r);
    char err[MP_TLS_REFRESH_ERR_MAX];
    const mp_proto_hooks *h = c->env->hooks;
    if (h != NULL && h->refresh_certs != NULL) {
        err[0] = '\0';
        if (h->refresh_certs(c->env->owner, err, sizeof(err)) == 0) {
            REPLY(c, R_OKAY);
            return 0;
        }
        mp_out_write(c, err, strlen(err));
        return 0;
    }
    mp_out_lit(c, R_TLS_OFF "\r\n");
    return 0;
}

/* ---- before authentication (-Y): memcached's try_read_command_asciiauth ----
 * Until a client authenticates, a line is read only to see whether it is
 * "set <key> <flags> <exptime> <bytes>" (key, flags and exptime unread, any
 * words after <bytes> ignored, noreply too); its data block is then
 * "<user> <password>" and anything else is answered CLIENT_ERROR
 * unauthenticated, the connection staying open.  Nothing is stored and no
 * other counter moves; the idle timer is not reset by these lines (memcached
 * resets it only in the authenticated reader). */

/* memcached reads an unauthenticated connection into its fixed 16 KiB
 * buffer (READ_BUFFER_SIZE) and never grows it: a data block longer than
 * that is never answered, and once the buffer is full and more arrives, its
 * read of zero bytes looks like end of file and it closes. */
#define MP_AUTH_BUF 16384

/* auth_line and auth_block: the unit was handled, go on with the input */
#define AUTH_GO_ON (-1)

/* memcached writes every reply before authentication into the connection's
 * current response object, resetting it first, and starts a new one only
 * once that has been sent: of the replies of one batch (up to where it
 * stops for input or yields) only the last reaches the client. */
static void auth_reply(mp_conn *c, const char *s, size_t n)
{
    mp_out_cull(c);
    mp_out_write(c, s, n);
}
#define AUTH_REPLY(c, lit) auth_reply((c), lit "\r\n", sizeof(lit "\r\n") - 1)

static int auth_line(mp_conn *c, int *ran)
{
    size_t avail = c->rend - c->rstart;
    /* memcached's "impossible for the auth command to be this short" */
    if (avail < 2)
        return MP_PROC_NEED_INPUT;
    mp_request req;
    size_t consumed = 0;
    if (mp_parse_line(c->rbuf + c->rstart, avail, &req, &consumed) != MP_PARSE_OK) {
        /* no newline yet: past MP_LINE_MAX it is junk, a get line or not */
        if (avail > MP_LINE_MAX)
            return close_now(c);
        return MP_PROC_NEED_INPUT;
    }
    c->rstart += (uint32_t)consumed;
    STATS(c).requests++;
    uint32_t size;
    if (req.ntokens < 5 || !TOK_IS(&req, 0, "set") ||
        !mp_parse_u32(TOKP(&req, 4), TOKL(&req, 4), &size)) {
        (*ran)++;
        AUTH_REPLY(c, R_UNAUTHENTICATED);
        return AUTH_GO_ON;
    }
    c->proto.phase = MP_PS_AUTH;
    /* 32-bit arithmetic, as memcached's: the two largest sizes wrap to 0 and 1 */
    c->proto.left = size + 2;
    return AUTH_GO_ON;
}

static int auth_block(mp_conn *c)
{
    mp_proto *p = &c->proto;
    size_t avail = c->rend - c->rstart;
    uint32_t need = p->left;
    if (need > MP_AUTH_BUF) {
        /* includes the lengths memcached takes for negative ones (size + 2
         * over 2^31 - 1), on which it reads outside its buffer and crashes */
        if (avail <= MP_AUTH_BUF)
            return MP_PROC_NEED_INPUT;
        /* what it answered before went out when it stopped to read: no
         * cull.  It closes with the rest of the block unread, which resets
         * the connection; so does an immediate close here, when no reply is
         * left to send first. */
        c->close_after_write = mp_out_unsent(c) != 0;
        return MP_PROC_CLOSE;
    }
    if (avail < need)
        return MP_PROC_NEED_INPUT;
    const char *b = c->rbuf + c->rstart;
    c->rstart += need;
    p->phase = MP_PS_LINE;
    p->left = 0;
    /* a length that wrapped to 0 or 1 has memcached compare the end of its
     * own command line, whose newline its tokenizer turned into a NUL */
    if (need < 2 || b[need - 2] != '\r' || b[need - 1] != '\n') {
        AUTH_REPLY(c, R_AUTH_TERMINATION);
        return AUTH_GO_ON;
    }
    /* its tokenizer: a NUL ends the block, only ' ' separates, words after
     * the second are ignored */
    size_t len = need - 2;
    const char *nul = memchr(b, '\0', len);
    if (nul != NULL)
        len = (size_t)(nul - b);
    size_t pos = 0;
    mp_token user, pass;
    if (!mp_next_token(b, len, &pos, &user) || !mp_next_token(b, len, &pos, &pass)) {
        AUTH_REPLY(c, R_AUTH_FORMAT);
        return AUTH_GO_ON;
    }
    const mp_auth *table = __atomic_load_n(c->env->auth, __ATOMIC_ACQUIRE);
    STATS(c).auth_cmds++;
    if (mp_auth_check(table, b + user.off, user.len, b + pass.off, pass.len)) {
        p->authenticated = true;
        AUTH_REPLY(c, R_STORED);
    } else {
        STATS(c).auth_errors++;
        AUTH_REPLY(c, R_AUTH_FAILURE);
    }
    return AUTH_GO_ON;
}

/* ---- dispatch ---- */

typedef int (*mp_handler)(mp_conn *c, const mp_request *r);

static const struct {
    mp_handler fn;
    int8_t min_tokens, max_tokens;
} handlers[MP_CMD_COUNT] = {
#define MP_CMD_ROW(id, word, handler, lo, hi) [MP_CMD_##id] = {cmd_##handler, lo, hi},
    MP_COMMANDS(MP_CMD_ROW)
#undef MP_CMD_ROW
};

/* A word that is not a command.  memcached dispatches on the first byte
 * before comparing words, and only a line that falls through every branch
 * gets the HTTP check: a request whose last word starts with "HTTP/" closes
 * the connection silently (someone pointed a browser at the port). */
static int unknown_command(mp_conn *c, const mp_request *r)
{
    const char *w = TOKP(r, 0);
    size_t n = TOKL(r, 0);
    bool branch = (w[0] == 'm' && n == 2) || memchr("gsacidt", w[0], 7) != NULL;
    if (!branch) {
        const char *last = TOKP(r, r->ntokens - 1);
        if (TOKL(r, r->ntokens - 1) >= 5 && memcmp(last, "HTTP/", 5) == 0)
            return close_now(c);
    }
    REPLY(c, R_ERROR);
    return 0;
}

static int dispatch(mp_conn *c, const mp_request *r)
{
    /* no command is shorter than two bytes */
    if (r->ntokens == 0 || r->tok[0].len < 2) {
        REPLY(c, R_ERROR);
        return 0;
    }
    if (r->cmd < 0)
        return unknown_command(c, r);
    int lo = handlers[r->cmd].min_tokens, hi = handlers[r->cmd].max_tokens;
    if ((lo >= 0 && r->ntokens < lo) || (hi >= 0 && r->ntokens > hi)) {
        REPLY(c, R_ERROR);
        return 0;
    }
    uint64_t t0 = mp_now_ns();
    int rc = handlers[r->cmd].fn(c, r);
    mp_latency_record(c->env->latency, r->cmd, mp_now_ns() - t0);
    return rc;
}

/* -vv: the line about to run, and at -vvv the state it puts the connection
 * in (memcached logs both in process_command_ascii) */
static void log_command(mp_conn *c, size_t consumed)
{
    if (mp_log_on(c->env, MP_LOG_STATE))
        mp_log_state_to(c, MP_LS_PARSE_CMD);
    mp_log_command(c, c->rbuf + c->rstart, consumed);
}

static int process(mp_conn *c, int budget)
{
    mp_proto *p = &c->proto;
    /* memcached sends its queued replies whenever it runs out of input or
     * yields; both end a call here */
    mp_out_mark(c);
    int ran = batch_start(c);
    for (;;) {
        if (p->watcher) {
            /* memcached's logger reads a watcher's input only to see it close */
            c->rstart = c->rend;
            return MP_PROC_NEED_INPUT;
        }
        /* a reply could not be written whole: what was queued since the
         * last transmit goes, and so does the connection (memcached closes
         * a connection it cannot answer) */
        if (c->out_oom)
            return close_now(c);
        if (p->phase != MP_PS_LINE) {
            if (p->phase == MP_PS_AUTH) {
                int rc = auth_block(c);
                if (rc != AUTH_GO_ON)
                    return rc;
                /* memcached counts the set and its block as one request,
                 * in the call that completes it */
                ran++;
                continue;
            }
            if (!data_phase(c))
                return MP_PROC_NEED_INPUT;
            continue;
        }
        int gate = batch_gate(c, ran, budget);
        if (gate >= 0)
            return gate;
        if (!p->authenticated) {
            if (c->env->auth != NULL) {
                int rc = auth_line(c, &ran);
                if (rc != AUTH_GO_ON)
                    return rc;
                continue;
            }
            p->authenticated = true;
        }
        mp_request req;
        size_t consumed = 0;
        mp_parse_status st = mp_parse_line(c->rbuf + c->rstart, c->rend - c->rstart, &req, &consumed);
        if (st == MP_PARSE_NEED_MORE) {
            /* a partial line: the I/O layer grows a full buffer by itself */
            return MP_PROC_NEED_INPUT;
        }
        if (st == MP_PARSE_TOO_LONG)
            return close_now(c);
        if (p->resume == 0) {
            ran++;
            STATS(c).requests++;
            p->seen_cmd = true;
            c->last_cmd = mp_current_time;
            if (mp_log_on(c->env, MP_LOG_CONN))
                log_command(c, consumed);
        }
        p->noreply = false;
        if (p->resume == 0)
            mp_out_resp(c);
        int rc = dispatch(c, &req);
        if (rc == MP_PROC_SUSPEND) {
            /* the line stays unconsumed until its reply is whole */
            p->yielded = true;
            return MP_PROC_YIELD;
        }
        c->rstart += (uint32_t)consumed;
        if (p->phase == MP_PS_LINE)
            p->noreply = false;
        if (rc == MP_PROC_CLOSE)
            return rc;
    }
}

/* mp_process at -vv and up: the protocol negotiated on the first input
 * (memcached's try_read_command_negotiate; with -B ascii or -Y there is
 * nothing to negotiate), and at -vvv the states around the batch. */
static int process_logged(mp_conn *c, int budget)
{
    mp_proto *p = &c->proto;
    bool input = c->rend > c->rstart;
    bool states = mp_log_on(c->env, MP_LOG_STATE);
    if (states && input && p->phase == MP_PS_LINE)
        mp_log_state_to(c, MP_LS_PARSE_CMD);
    int rc = process(c, budget);
    if (states) {
        if (rc == MP_PROC_CLOSE) {
            mp_log_state_to(c, MP_LS_CLOSING);
        } else if (rc == MP_PROC_NEED_INPUT && p->phase == MP_PS_LINE) {
            /* replies queued go out as the call returns, then the next
             * command is awaited */
            if (mp_out_pending(c) > 0)
                mp_log_state_to(c, MP_LS_MWRITE);
            mp_log_state_to(c, MP_LS_NEW_CMD);
        }
    }
    return rc;
}

/* The protocol of a connection: -B's, or with -B auto (memcached's
 * try_read_command_negotiate) the binary one when the first byte is its
 * request magic.  -vv says which, as memcached does when it negotiates. */
static uint8_t negotiate(mp_conn *c)
{
    mp_proto *p = &c->proto;
    if (p->protocol != MP_PROT_UNDECIDED || c->rend == c->rstart)
        return p->protocol;
    const mp_settings *s = c->env->settings;
    if (s->binding_ascii) {
        p->protocol = MP_PROT_ASCII;
    } else if (s->binding_binary) {
        p->protocol = MP_PROT_BINARY;
    } else {
        bool binary = (unsigned char)c->rbuf[c->rstart] == MP_BIN_REQ_MAGIC;
        p->protocol = binary ? MP_PROT_BINARY : MP_PROT_ASCII;
        if (mp_log_on(c->env, MP_LOG_CONN) && !p->log_negotiated) {
            p->log_negotiated = true;
            mp_log_negotiated(c, binary);
        }
    }
    return p->protocol;
}

int mp_process(mp_conn *c, int budget)
{
    /* one compare on the text protocol's path once decided */
    if (c->proto.protocol != MP_PROT_ASCII && negotiate(c) == MP_PROT_BINARY)
        return mp_bin_process(c, budget);
    if (mp_log_on(c->env, MP_LOG_CONN))
        return process_logged(c, budget);
    return process(c, budget);
}

void mp_proto_reset(mp_conn *c)
{
    mp_proto *p = &c->proto;
    if (p->watcher) {
        mp_proto_shared *sh = c->env->shared;
        mp_watch_remove(sh->watch, &sh->watch_kinds, c);
        p->watcher = false;
    }
    if (p->item != NULL) {
        mp_store_release(c->env->store, p->item, p->hv);
        p->item = NULL;
    }
    p->phase = MP_PS_LINE;
    p->noreply = false;
    p->reply_kind = RK_NONE;
    p->meta = false;
    p->meta_err = NULL;
    p->left = p->filled = 0;
    p->resume = 0;
    p->discard = false;
}
