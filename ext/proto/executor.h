/* The protocol's entry points for the I/O layer (mp_process,
 * mp_proto_reset: executor.c), then what the text commands (executor.c) and
 * the meta commands (meta.c) share: reply helpers, token access, and the
 * meta handlers the command table of executor.c dispatches to, private to
 * those two files.
 *
 * The protocol's world is the connection and c->env (proto_env.h): the
 * store, the settings, this thread's counters and latency, an allocator for
 * output and the engine's hooks.  Nothing here includes channel.h or
 * engine.h.
 *
 * Locking, one style for every command (the store's side of it is the note
 * at the top of store.c): the handler takes the shard lock itself
 * (mp_shard_lock), calls only lock-held mp_item_* functions inside it,
 * composes the reply into output reserved before locking, and unlocks.
 * What is bounded is reserved (a reply line: MP_VALUE_LINE_MAX,
 * MP_META_LINE_MAX); a value that turns out not to fit behind its line gets
 * no room made under the lock: mp_out_value takes a reference and the value
 * is copied after unlocking (mp_out_value_deferred), so nothing retries.
 * Why compose under the lock rather than after it: a reply shows the item
 * (flags, cas, TTL, value) as the command left it, and composing in place
 * costs neither a snapshot of the item nor, for the value, a reference and
 * a second lock per hit.  Called without the lock, never with it: the store
 * functions that manage memory (mp_store_alloc, which may wait for another
 * shard's page; mp_store_release; mp_store_unref) and the store-wide ones
 * (mp_store_flush, mp_store_set_limit).  Under the lock: no system call, no
 * general-heap allocation, no mp_out_grow.
 */
#ifndef MP_EXECUTOR_H
#define MP_EXECUTOR_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "clock.h"
#include "decimal.h"
#include "io/conn.h"
#include "log.h"
#include "parser.h"
#include "proto_env.h"
#include "replies.h"
#include "settings.h"
#include "store/store.h"

/* ---- the I/O layer's interface ---- */

/* The executor applies what the parser (parser.h) found to the store and
 * writes replies into the connection's output (mp_process).
 *
 * Contract with the I/O layer (channel.c):
 *   - the I/O layer appends received bytes at c->rbuf[c->rend] and calls
 *     mp_process(c, budget) whenever new input arrived or a previous call
 *     returned MP_PROC_YIELD;
 *   - mp_process consumes input by advancing c->rstart and appends replies
 *     with the mp_out_* helpers of conn.h;
 *   - before reading more, the I/O layer may compact rbuf (move
 *     [rstart, rend) to offset 0) and grows it when a line does not fit (a
 *     long multi-get line);
 *   - a request whose reply passes MP_OUT_HIGHWATER stops in the middle (a
 *     multi-get) and yields with its line still unconsumed; the next call
 *     parses the line again and goes on where it stopped (proto.resume).
 */

/* mp_process results */
#define MP_PROC_NEED_INPUT 0   /* everything buffered is consumed or incomplete */
#define MP_PROC_YIELD      1   /* budget spent or output high-water mark: call again later */
#define MP_PROC_CLOSE      2   /* close the connection (after flushing if close_after_write) */

/* budget is memcached's -R (reqs_per_event) and counts as memcached's nreqs
 * does: a call that starts on fresh input runs at most budget + 1 requests,
 * one that resumes after MP_PROC_YIELD at most budget.  Where memcached
 * transmits (yield, end of input, after a get, mn) decides which replies a
 * later error may cull, so the count is part of the wire behaviour. */
int mp_process(struct mp_conn *c, int budget);

/* mp_process for a connection speaking the binary protocol (binary.c). */
int mp_bin_process(struct mp_conn *c, int budget);

/* Called when a connection closes with protocol state pending (drops a
 * pending item). */
void mp_proto_reset(struct mp_conn *c);

/* ---- shared by executor.c and meta.c ---- */

#define STATS(c) (*(c)->env->stats)

#define TOKP(r, i) ((r)->line + (r)->tok[i].off)
#define TOKL(r, i) ((size_t)(r)->tok[i].len)

static inline bool tok_is(const mp_request *r, int i, const char *s, size_t n)
{
    return TOKL(r, i) == n && memcmp(TOKP(r, i), s, n) == 0;
}
#define TOK_IS(r, i, lit) tok_is((r), (i), (lit), sizeof(lit) - 1)

/* A reply memcached writes without out_string (a stats listing's END):
 * not logged. */
/* Takes buffered input into the pending data block (copied into the item,
 * or dropped when swallowing): true once the whole block is in. */
static inline bool take_block(mp_conn *c)
{
    mp_proto *p = &c->proto;
    uint32_t avail = c->rend - c->rstart;
    uint32_t n = avail < p->left ? avail : p->left;
    if (p->phase == MP_PS_NREAD && n > 0) {
        memcpy(MP_ITEM_value(p->item) + p->filled, c->rbuf + c->rstart, n);
        p->filled += n;
    }
    c->rstart += n;
    p->left -= n;
    return p->left == 0;
}

static inline void reply_unlogged(mp_conn *c, const char *s, size_t n)
{
    if (c->proto.noreply) {
        c->proto.noreply = false;
        return;
    }
    mp_out_write(c, s, n);
}

/* memcached's out_string: "noreply" swallows exactly one reply, errors too;
 * -vv logs it (">N STORED", ">N NOREPLY STORED"). */
static inline void reply(mp_conn *c, const char *s, size_t n)
{
    if (mp_log_on(c->env, MP_LOG_CONN))
        mp_log_reply(c, s, n, c->proto.noreply);
    reply_unlogged(c, s, n);
}
#define REPLY(c, lit) reply((c), lit "\r\n", sizeof(lit "\r\n") - 1)
#define REPLY_UNLOGGED(c, lit) reply_unlogged((c), lit "\r\n", sizeof(lit "\r\n") - 1)

/* A get that missed: memcached also counts why, when the item had expired
 * or been flushed (mp_item_find's *why_missing). */
/* A retrieval counted as memcached counts it: a get or a touch (gat,
 * gats, mg with T), a hit or a miss. */
static inline void count_fetch(mp_conn *c, bool touch, bool hit)
{
    if (touch) {
        STATS(c).touch_cmds++;
        if (hit)
            STATS(c).touch_hits++;
        else
            STATS(c).touch_misses++;
    } else {
        STATS(c).get_cmds++;
        if (hit)
            STATS(c).get_hits++;
        else
            STATS(c).get_misses++;
    }
}

static inline void count_miss_reason(mp_conn *c, int why)
{
    if (why == MP_MISS_EXPIRED)
        STATS(c).get_expired++;
    else if (why == MP_MISS_FLUSHED)
        STATS(c).get_flushed++;
}

/* memcached's EXPTIME_TO_POSITIVE_TIME then realtime(): a negative exptime
 * becomes an absolute time in the past, i.e. already expired. */
static inline mp_rel_time exptime_rel(int32_t exptime)
{
    return mp_realtime(exptime < 0 ? (int64_t)MP_REALTIME_MAXDELTA + 1 : exptime);
}

/* cas_hits / cas_badval / cas_misses for a stored cas, text or meta */
static inline void count_cas_result(mp_conn *c, int op, mp_store_result res)
{
    if (op != MP_CAS)
        return;
    if (res == MP_STORED)
        STATS(c).cas_hits++;
    else if (res == MP_EXISTS)
        STATS(c).cas_badval++;
    else if (res == MP_NOT_FOUND)
        STATS(c).cas_misses++;
}

/* A handler's result besides 0 and MP_PROC_CLOSE: it stopped with its reply
 * half built and proto.resume set; its line is run again later. */
#define MP_PROC_SUSPEND 3

/* -R's accounting, memcached's nreqs, for the text and binary protocols
 * alike: a call that starts on fresh input runs budget + 1 requests, one
 * that resumes after a yield runs budget (it re-enters conn_new_cmd, which
 * counts first).  batch_start gives the count a call starts from. */
static inline int batch_start(mp_conn *c)
{
    int ran = c->proto.yielded ? 1 : 0;
    c->proto.yielded = false;
    return ran;
}

/* Before the next request of a batch: MP_PROC_NEED_INPUT when the input is
 * used up (a spent budget counts as a yield even then, as memcached counts
 * it; nothing is left to resume), MP_PROC_YIELD when the budget is spent or
 * the output is over its mark (one pipelining client must not starve the
 * others, nor make us buffer its replies without bound), -1 to go on. */
static inline int batch_gate(mp_conn *c, int ran, int budget)
{
    if (c->rstart == c->rend) {
        if (ran > budget)
            STATS(c).conn_yields++;
        return MP_PROC_NEED_INPUT;
    }
    if (ran > budget || mp_out_over_mark(c)) {
        c->proto.yielded = true;
        return MP_PROC_YIELD;
    }
    return -1;
}

/* what a swallowed data block answers once it has been read */
enum { RK_NONE = 0, RK_TOO_LARGE, RK_NO_MEMORY, RK_META_ERROR };

/* The meta commands (meta.c). */
int cmd_mg(mp_conn *c, const mp_request *r);
int cmd_ms(mp_conn *c, const mp_request *r);
int cmd_md(mp_conn *c, const mp_request *r);
int cmd_ma(mp_conn *c, const mp_request *r);
int cmd_me(mp_conn *c, const mp_request *r);

/* ms: the data block `it` has arrived whole and well terminated (the caller
 * counted it and answered a bad chunk); stores it and answers as memcached's
 * complete_nread_ascii does for a meta set. */
void mp_meta_complete_nread(mp_conn *c, mp_item *it);
/* The text of a swallowed ms's error (RK_META_ERROR). */
void mp_meta_complete_swallow(mp_conn *c);

#endif
