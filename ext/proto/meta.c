/* The meta commands of memcached 1.6.18: mg, ms, md, ma and me (mn answers
 * with the text commands).  They share the text commands' parser, command
 * table, store and data-block machinery; the flags after the key are read
 * by mp_meta_parse (parser.c), one table for every meta command, and each
 * command then walks its flag words again in request order, as memcached's
 * process_m*_command do, because the order is visible: reply flags come
 * back in the order asked, and a TTL change (T, N) or an over-long opaque
 * (O) takes effect where it stands among the other flags.
 *
 * Quiet mode (q) hides exactly what memcached hides: mg's EN, ms's and md's
 * HD, ma's reply to a change of an existing item.  Errors are never hidden,
 * so meta handlers never set c->proto.noreply.
 *
 * Locking as in executor.c (executor.h says how): the reply line's room is
 * reserved before the shard lock is taken, and a value that does not fit
 * behind it is copied after unlocking. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "executor.h"
#include "io/conn.h"
#include "parser.h"
#include "replies.h"
#include "stats.h"
#include "store/store.h"
#include "watch.h"

/* Room for a meta reply line without its value: "VA " and a length, the key
 * echoed in base64 with " b", the opaque, every other flag of a line of at
 * most MP_META_MAX_WORDS words with a 20-digit number, " Z X W" and "\r\n". */
#define MP_META_LINE_MAX 1024
_Static_assert(MP_META_LINE_MAX >= 3 + 10 + 2 + MP_BASE64_LEN(MP_KEY_MAX_LENGTH) + 2 +
               1 + MP_META_OPAQUE_MAX + MP_META_MAX_WORDS * 22 + 6 + 2,
               "MP_META_LINE_MAX must hold the longest meta reply line");
/* ma's value: a 64-bit number and its "\r\n" */
#define MP_META_NUMBER_MAX 24

/* ---- replies ---- */

/* An error by number; errors are shown whatever q says (and logged at
 * -vv, memcached's out_errstring). */
static void meta_error(mp_conn *c, int err)
{
    const char *text = mp_meta_error_text(err);
    if (mp_log_on(c->env, MP_LOG_CONN))
        mp_log_reply(c, text, strlen(text), false);
    mp_out_write(c, text, strlen(text));
    mp_out_lit(c, "\r\n");
}

static char *put2(char *p, const char *code)
{
    p[0] = code[0];
    p[1] = code[1];
    return p + 2;
}

/* " <f><v>" */
static char *echo_num(char *p, char f, uint64_t v)
{
    *p++ = ' ';
    *p++ = f;
    return u64_to_dec(p, v);
}

/* " k<key>", base64-encoded and followed by " b" for a binary key */
static char *echo_key(char *p, const char *key, size_t nkey, bool binary)
{
    *p++ = ' ';
    *p++ = 'k';
    if (!binary) {
        memcpy(p, key, nkey);
        return p + nkey;
    }
    p += mp_base64_encode(key, nkey, p);
    *p++ = ' ';
    *p++ = 'b';
    return p;
}

/* " <word>": the opaque is echoed as given, its O included */
static char *echo_word(char *p, const char *w, size_t n)
{
    *p++ = ' ';
    memcpy(p, w, n);
    return p + n;
}

/* " t<seconds left>", -1 for no expiry.  memcached computes the seconds in
 * unsigned 32-bit arithmetic: an item given a TTL in the past by this very
 * command shows a number near 2^32. */
static char *echo_ttl(char *p, mp_rel_time exptime)
{
    *p++ = ' ';
    *p++ = 't';
    if (exptime == 0) {
        *p++ = '-';
        *p++ = '1';
        return p;
    }
    return u64_to_dec(p, (uint32_t)(exptime - mp_current_time));
}

static bool opaque_too_long(const mp_request *r, int i)
{
    return TOKL(r, i) > MP_META_OPAQUE_MAX;
}

/* The checks before the flags, in memcached's order (ms has its own). */
static bool meta_line_ok(mp_conn *c, const mp_request *r, int too_long)
{
    if (TOKL(r, 1) > MP_KEY_MAX_LENGTH) {
        REPLY(c, R_BAD_FORMAT);
        return false;
    }
    if (r->ntokens > MP_META_MAX_WORDS) {
        meta_error(c, too_long);
        return false;
    }
    return true;
}

/* md and ma: the line checks, then the flags; false when an error was
 * answered. */
static bool meta_parse_simple(mp_conn *c, const mp_request *r, char *keybuf, mp_meta *m)
{
    if (!meta_line_ok(c, r, MP_META_ERR_TOO_LONG))
        return false;
    if (mp_meta_parse(r, 2, keybuf, m) != MP_META_ERR_NONE) {
        meta_error(c, MP_META_ERR_INVALID_OR_DUP);
        return false;
    }
    return true;
}

/* The flags of a reply line that carry no item data (a miss, NF, EX): the
 * opaque and the key.  Returns NULL when the opaque is too long. */
static char *echo_request_flags(char *p, const mp_request *r, const mp_meta *m)
{
    for (int i = 2; i < r->ntokens; i++) {
        switch (TOKP(r, i)[0]) {
        case 'O':
            if (opaque_too_long(r, i))
                return NULL;
            p = echo_word(p, TOKP(r, i), TOKL(r, i));
            break;
        case 'k':
            p = echo_key(p, m->key, m->nkey, m->key_binary);
            break;
        }
    }
    return p;
}

/* ---- mg ---- */

int cmd_mg(mp_conn *c, const mp_request *r)
{
    if (!meta_line_ok(c, r, MP_META_ERR_MG_TOO_LONG))
        return 0;
    char keybuf[MP_KEY_MAX_LENGTH];
    mp_meta m;
    int err = mp_meta_parse(r, 2, keybuf, &m);
    if (err != MP_META_ERR_NONE) {
        meta_error(c, err);
        return 0;
    }
    bool quiet = mp_meta_has(&m, 'q'), value = mp_meta_has(&m, 'v');
    bool vivify = mp_meta_has(&m, 'N'), bump = !mp_meta_has(&m, 'u');
    /* memcached fetches these under the item lock and bumps after the reply
     * line; the others bump at the fetch (which an O error does not undo) */
    bool late_bump = vivify || mp_meta_has(&m, 'T') || mp_meta_has(&m, 'R') ||
                     mp_meta_has(&m, 'l') || mp_meta_has(&m, 'h');
    mp_rel_time ttl = exptime_rel(m.ttl), vivify_ttl = exptime_rel(m.vivify_ttl);
    mp_rel_time recache = exptime_rel(m.recache_ttl);

    if (!mp_out_fits(c, MP_META_LINE_MAX) && !mp_out_grow(c, MP_META_LINE_MAX)) {
        REPLY(c, R_OOM_GET);
        return 0;
    }
    uint64_t hv = mp_hash(m.key, m.nkey);
    mp_shard *s = mp_store_shard(c->env->store, hv);
    int why = MP_MISS_NONE;
    bool created = false;
    mp_shard_lock(s);
    mp_item *it = mp_item_find(s, m.key, m.nkey, hv, &why);
    if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
        mp_watch_item_get(c, m.key, m.nkey,
                          it != NULL ? MP_WATCH_FOUND : mp_watch_miss_status(why), it);
    if (it == NULL && vivify) {
        /* a stub for the first client to miss: it wins the recache */
        it = mp_item_vivify(s, m.key, m.nkey, hv, "", 0);
        created = it != NULL;
    }

    if (it == NULL) {
        mp_shard_unlock(s);
        count_fetch(c, false, false);
        count_miss_reason(c, why);
        char *p = put2(c->wbuf + c->wend, R_EN);
        p = echo_request_flags(p, r, &m);
        if (p == NULL) {
            meta_error(c, MP_META_ERR_OPAQUE_TOO_LONG);
            return 0;
        }
        if (!quiet) {
            p = put2(p, "\r\n");
            mp_out_commit(c, (size_t)(p - (c->wbuf + c->wend)));
        }
        return 0;
    }

    char *start = c->wbuf + c->wend, *p = start;
    if (value) {
        memcpy(p, R_VA " ", 3);
        p = u64_to_dec(p + 3, it->nbytes - 2);
    } else {
        p = put2(p, R_HD);
    }
    bool won = false, ttl_set = false;
    for (int i = 2; i < r->ntokens; i++) {
        switch (TOKP(r, i)[0]) {
        case 'T':
            ttl_set = true;
            mp_item_set_exptime(s, it, ttl);
            break;
        case 'N':
            if (created) {
                mp_item_set_exptime(s, it, vivify_ttl);
                won = true;
            }
            break;
        case 'R':
            /* an item about to expire is handed to one client to refresh */
            if (!(it->iflags & MP_IT_WIN) && !created && it->exptime != 0 &&
                it->exptime < recache)
                won = true;
            break;
        case 's':
            p = echo_num(p, 's', it->nbytes - 2);
            break;
        case 't':
            p = echo_ttl(p, it->exptime);
            break;
        case 'c':
            p = echo_num(p, 'c', it->cas);
            break;
        case 'f':
            p = echo_num(p, 'f', mp_item_flags(it));
            break;
        case 'l':
            p = echo_num(p, 'l', (uint32_t)(mp_current_time - it->time));
            break;
        case 'h':
            p = echo_num(p, 'h', (it->iflags & MP_IT_FETCHED) ? 1 : 0);
            break;
        case 'O':
            if (opaque_too_long(r, i)) {
                if (bump && !late_bump)
                    mp_item_access(s, it);
                mp_shard_unlock(s);
                meta_error(c, MP_META_ERR_OPAQUE_TOO_LONG);
                return 0;
            }
            p = echo_word(p, TOKP(r, i), TOKL(r, i));
            break;
        case 'k':
            p = echo_key(p, MP_ITEM_key(it), it->nkey, (it->iflags & MP_IT_KEY_BINARY) != 0);
            break;
        }
    }
    /* Z before W: a client never sees both */
    if (it->iflags & MP_IT_WIN) {
        memcpy(p, " Z", 2);
        p += 2;
    }
    if (it->iflags & MP_IT_STALE) {
        memcpy(p, " X", 2);
        p += 2;
        if (!(it->iflags & MP_IT_WIN))
            won = true;
    }
    if (won) {
        memcpy(p, " W", 2);
        p += 2;
        mp_item_set_win(s, it);
    }
    p = put2(p, "\r\n");
    mp_item *deferred = NULL;
    if (value)
        deferred = mp_out_value(c, p, s, it);
    else
        mp_out_commit(c, (size_t)(p - start));
    if (bump)
        mp_item_access(s, it);
    mp_item_count_hit(s, it, ttl_set);
    mp_shard_unlock(s);
    count_fetch(c, ttl_set, true);
    /* a failure leaves out_oom set: the reply is culled with the connection */
    if (deferred != NULL)
        mp_out_value_deferred(c, deferred);
    return 0;
}

/* ---- ms ---- */

/* An ms refused after its length was read: its data block is swallowed and
 * the error answered once it has been, as memcached's conn_swallow does. */
static int ms_swallow(mp_conn *c, uint32_t nbytes, const char *err)
{
    mp_proto *p = &c->proto;
    p->phase = MP_PS_SWALLOW;
    p->left = nbytes;
    p->reply_kind = RK_META_ERROR;
    p->meta_err = err;
    return 0;
}

int cmd_ms(mp_conn *c, const mp_request *r)
{
    mp_proto *p = &c->proto;
    /* errors before the length is known leave the data block to be parsed
     * as commands */
    if (TOKL(r, 1) > MP_KEY_MAX_LENGTH || r->ntokens == 2) {
        REPLY(c, R_BAD_FORMAT);
        return 0;
    }
    if (r->ntokens > MP_META_MAX_WORDS) {
        meta_error(c, MP_META_ERR_TOO_LONG);
        return 0;
    }
    int32_t vlen;
    if (!mp_parse_i32(TOKP(r, 2), TOKL(r, 2), &vlen) || vlen < 0 || vlen > INT32_MAX - 2) {
        REPLY(c, R_BAD_FORMAT);
        return 0;
    }
    uint32_t nbytes = (uint32_t)vlen + 2;
    char keybuf[MP_KEY_MAX_LENGTH];
    mp_meta m;
    int err = mp_meta_parse(r, 3, keybuf, &m);
    if (err != MP_META_ERR_NONE)
        return ms_swallow(c, nbytes, mp_meta_error_text(err));

    /* what the reply echoes, noted now: the item is gone by then */
    int necho = 0;
    bool opaque_bad = false;
    p->opaque_len = 0;
    for (int i = 3; i < r->ntokens; i++) {
        char f = TOKP(r, i)[0];
        if (f == 'O') {
            if (opaque_too_long(r, i)) {
                opaque_bad = true;
                continue;
            }
            memcpy(p->opaque, TOKP(r, i), TOKL(r, i));
            p->opaque_len = (uint8_t)TOKL(r, i);
            p->meta_echo[necho++] = f;
        } else if (f == 'k' || f == 'c') {
            p->meta_echo[necho++] = f;
        }
    }
    p->meta_echo[necho] = '\0';

    mp_store_op op;
    switch (m.mode) {
    case 0:
    case 'S': op = MP_SET; break;
    case 'E': op = MP_ADD; break;
    case 'A': op = MP_APPEND; break;
    case 'P': op = MP_PREPEND; break;
    case 'R': op = MP_REPLACE; break;
    default:
        return ms_swallow(c, nbytes, mp_meta_error_text(MP_META_ERR_MS_MODE));
    }
    bool has_cas = mp_meta_has(&m, 'C');
    /* a compare turns set and replace into cas; add ignores it and
     * append/prepend check it themselves */
    if (has_cas && (op == MP_SET || op == MP_REPLACE))
        op = MP_CAS;
    if (opaque_bad)
        return ms_swallow(c, nbytes, mp_meta_error_text(MP_META_ERR_OPAQUE_TOO_LONG));

    mp_store *st = c->env->store;
    uint64_t hv = mp_hash(m.key, m.nkey);
    mp_rel_time exptime = mp_meta_has(&m, 'T') ? exptime_rel(m.ttl) : 0;
    mp_item *it = NULL;
    int rc = mp_store_alloc(st, m.key, m.nkey, hv, m.client_flags, exptime, nbytes, &it);
    if (rc != MP_ALLOC_OK) {
        /* stale data must not outlive a failed ms, whatever its mode */
        mp_shard *s = mp_store_shard(st, hv);
        mp_shard_lock(s);
        mp_item_unlink_key(s, m.key, m.nkey, hv);
        mp_shard_unlock(s);
        if (rc == MP_ALLOC_TOO_LARGE) {
            STATS(c).store_too_large++;
            return ms_swallow(c, nbytes, R_TOO_LARGE);
        }
        STATS(c).store_no_memory++;
        return ms_swallow(c, nbytes, R_OOM_STORE);
    }
    p->phase = MP_PS_NREAD;
    p->op = (uint8_t)op;
    p->item = it;
    p->hv = hv;
    p->cas_in = has_cas ? m.cas : 0;
    p->left = nbytes;
    p->filled = 0;
    p->meta = true;
    p->meta_quiet = mp_meta_has(&m, 'q');
    p->meta_opts = (uint8_t)((m.key_binary ? MP_STORE_KEY_BINARY : 0) |
                             (mp_meta_has(&m, 'I') && op == MP_CAS ? MP_STORE_STALE_OK : 0));
    return 0;
}

void mp_meta_complete_nread(mp_conn *c, mp_item *it)
{
    mp_proto *p = &c->proto;
    p->meta = false;
    char key[MP_KEY_MAX_LENGTH];
    size_t nkey = it->nkey;
    memcpy(key, MP_ITEM_key(it), nkey);
    uint64_t cas = 0;
    mp_shard *s = mp_store_shard(c->env->store, p->hv);
    mp_shard_lock(s);
    if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
        mp_watch_lookup(c, s, key, nkey, p->hv);
    mp_watch_store w;
    bool watched = mp_watch_on(c->env, MP_WATCH_MUTATIONS);
    if (watched)
        mp_watch_store_begin(&w, it);
    mp_store_result res = mp_item_store(s, it, p->hv, (mp_store_op)p->op, p->cas_in,
                                        p->meta_opts, &cas);
    if (watched)
        mp_watch_store_end(&w, c, s, p->hv, p->op, res);
    mp_shard_unlock(s);
    count_cas_result(c, p->op, res);
    const char *code;
    switch (res) {
    case MP_STORED:
        if (p->meta_quiet)
            return;
        code = R_HD;
        break;
    case MP_EXISTS:
        code = R_EX;
        break;
    case MP_NOT_FOUND:
        code = R_NF;
        break;
    default:
        code = R_NS;
        break;
    }
    char *out = mp_out_reserve(c, MP_META_LINE_MAX);
    if (out == NULL)
        return;
    char *q = put2(out, code);
    for (const char *f = p->meta_echo; *f != '\0'; f++) {
        if (*f == 'O')
            q = echo_word(q, p->opaque, p->opaque_len);
        else if (*f == 'k')
            q = echo_key(q, key, nkey, (p->meta_opts & MP_STORE_KEY_BINARY) != 0);
        else
            q = echo_num(q, 'c', cas);
    }
    q = put2(q, "\r\n");
    mp_out_commit(c, (size_t)(q - out));
}

void mp_meta_complete_swallow(mp_conn *c)
{
    mp_proto *p = &c->proto;
    if (mp_log_on(c->env, MP_LOG_CONN))
        mp_log_reply(c, p->meta_err, strlen(p->meta_err), false);
    mp_out_write(c, p->meta_err, strlen(p->meta_err));
    mp_out_lit(c, "\r\n");
    p->meta_err = NULL;
}

/* ---- md ---- */

int cmd_md(mp_conn *c, const mp_request *r)
{
    char keybuf[MP_KEY_MAX_LENGTH];
    mp_meta m;
    if (!meta_parse_simple(c, r, keybuf, &m))
        return 0;
    char *out = mp_out_reserve(c, MP_META_LINE_MAX);
    if (out == NULL)
        return 0;
    /* the flags are composed first (an over-long opaque stops md before it
     * touches the item), the code in front once it is known */
    char *q = echo_request_flags(out + 2, r, &m);
    if (q == NULL) {
        meta_error(c, MP_META_ERR_OPAQUE_TOO_LONG);
        return 0;
    }
    mp_mdelete md = {
        .has_cas = mp_meta_has(&m, 'C'),
        .cas = m.cas,
        .invalidate = mp_meta_has(&m, 'I'),
        .set_ttl = mp_meta_has(&m, 'T'),
        .exptime = exptime_rel(m.ttl),
    };
    const char *code;
    uint64_t hv = mp_hash(m.key, m.nkey);
    mp_shard *s = mp_store_shard(c->env->store, hv);
    mp_shard_lock(s);
    if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
        mp_watch_lookup(c, s, m.key, m.nkey, hv);
    mp_mdelete_result res = mp_item_mdelete(s, m.key, m.nkey, hv, &md);
    mp_shard_unlock(s);
    switch (res) {
    case MP_MD_DELETED:
        STATS(c).delete_hits++;
        /* fall through */
    case MP_MD_INVALIDATED:
        if (mp_meta_has(&m, 'q'))
            return 0;
        code = R_HD;
        break;
    case MP_MD_EXISTS:
        STATS(c).delete_misses++;
        code = R_EX;
        break;
    case MP_MD_NOT_FOUND:
    default:
        STATS(c).delete_misses++;
        code = R_NF;
        break;
    }
    put2(out, code);
    q = put2(q, "\r\n");
    mp_out_commit(c, (size_t)(q - out));
    return 0;
}

/* ---- ma ---- */

int cmd_ma(mp_conn *c, const mp_request *r)
{
    char keybuf[MP_KEY_MAX_LENGTH];
    mp_meta m;
    if (!meta_parse_simple(c, r, keybuf, &m))
        return 0;
    bool incr;
    switch (m.mode) {
    case 0:
    case 'I':
    case '+':
        incr = true;
        break;
    case 'D':
    case '-':
        incr = false;
        break;
    default:
        meta_error(c, MP_META_ERR_MA_MODE);
        return 0;
    }
    bool value = mp_meta_has(&m, 'v');
    mp_rel_time ttl = exptime_rel(m.ttl), vivify_ttl = exptime_rel(m.vivify_ttl);
    char *out = mp_out_reserve(c, MP_META_LINE_MAX + MP_META_NUMBER_MAX);
    if (out == NULL)
        return 0;

    uint64_t hv = mp_hash(m.key, m.nkey);
    mp_shard *s = mp_store_shard(c->env->store, hv);
    char num[MP_META_NUMBER_MAX];
    mp_item *it = NULL;
    bool created = false, quiet = false, moved = false;
    const char *code = NULL;
    mp_shard_lock(s);
    if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
        mp_watch_lookup(c, s, m.key, m.nkey, hv);
    switch (mp_item_delta(s, m.key, m.nkey, hv, incr, m.delta,
                          mp_meta_has(&m, 'C') ? m.cas : 0, num, &it, &moved)) {
    case MP_DELTA_OK:
        if (incr)
            STATS(c).incr_hits++;
        else
            STATS(c).decr_hits++;
        quiet = mp_meta_has(&m, 'q');
        break;
    case MP_DELTA_NON_NUMERIC:
        mp_shard_unlock(s);
        REPLY(c, R_NON_NUMERIC);
        return 0;
    case MP_DELTA_EOM:
        mp_shard_unlock(s);
        REPLY(c, R_OOM);
        return 0;
    case MP_DELTA_EXISTS:
        code = R_EX;
        break;
    case MP_DELTA_NOT_FOUND:
    default:
        if (!mp_meta_has(&m, 'N')) {
            if (incr)
                STATS(c).incr_misses++;
            else
                STATS(c).decr_misses++;
            code = R_NF;
            break;
        }
        /* created with the initial value, the delta not applied */
        *u64_to_dec(num, m.initial) = '\0';
        it = mp_item_vivify(s, m.key, m.nkey, hv, num, strlen(num));
        if (it == NULL) {
            mp_shard_unlock(s);
            meta_error(c, MP_META_ERR_MA_VIVIFY_OOM);
            return 0;
        }
        created = true;
        break;
    }

    char *q;
    if (it == NULL) {
        q = echo_request_flags(put2(out, code), r, &m);
        mp_shard_unlock(s);
        if (q == NULL) {
            meta_error(c, MP_META_ERR_OPAQUE_TOO_LONG);
            return 0;
        }
    } else {
        size_t nlen = strlen(num);
        if (value) {
            memcpy(out, R_VA " ", 3);
            q = u64_to_dec(out + 3, nlen);
        } else {
            q = put2(out, R_HD);
        }
        /* memcached goes on with the old item when the result needed a new
         * one: T then shows in t but changes nothing stored */
        mp_rel_time exptime = it->exptime;
        for (int i = 2; i < r->ntokens; i++) {
            switch (TOKP(r, i)[0]) {
            case 'c':
                q = echo_num(q, 'c', it->cas);
                break;
            case 't':
                q = echo_ttl(q, exptime);
                break;
            case 'T':
                exptime = ttl;
                if (!moved)
                    mp_item_set_exptime(s, it, ttl);
                break;
            case 'N':
                if (created) {
                    exptime = vivify_ttl;
                    mp_item_set_exptime(s, it, vivify_ttl);
                }
                break;
            case 'O':
                /* the change is made already: only the reply is refused */
                if (opaque_too_long(r, i)) {
                    mp_shard_unlock(s);
                    meta_error(c, MP_META_ERR_OPAQUE_TOO_LONG);
                    return 0;
                }
                q = echo_word(q, TOKP(r, i), TOKL(r, i));
                break;
            case 'k':
                q = echo_key(q, m.key, m.nkey, m.key_binary);
                break;
            }
        }
        mp_shard_unlock(s);
        if (value) {
            q = put2(q, "\r\n");
            memcpy(q, num, nlen);
            q += nlen;
        }
    }
    q = put2(q, "\r\n");
    if (!quiet)
        mp_out_commit(c, (size_t)(q - out));
    return 0;
}

/* ---- me ---- */

/* "ME <key> exp=.. la=.. cas=.. fetch=yes|no cls=.. size=..": memcached's
 * debug line.  cls is the item's class in mpcache's own slab classes (the
 * ones "stats slabs" shows); size is memcached's accounting of the item. */
int cmd_me(mp_conn *c, const mp_request *r)
{
    if (r->ntokens < 2 || TOKL(r, 1) > MP_KEY_MAX_LENGTH) {
        REPLY(c, R_BAD_FORMAT);
        return 0;
    }
    const char *key = TOKP(r, 1);
    size_t nkey = TOKL(r, 1);
    char keybuf[MP_KEY_MAX_LENGTH];
    /* unlike the other meta commands, only a lone "b" right after the key */
    if (r->ntokens >= 3 && TOK_IS(r, 2, "b")) {
        nkey = mp_base64_decode(key, nkey, keybuf);
        key = keybuf;
        if (nkey == 0) {
            REPLY(c, R_BAD_FORMAT);
            return 0;
        }
    }
    STATS(c).meta_cmds++;
    uint64_t hv = mp_hash(key, nkey);
    mp_shard *s = mp_store_shard(c->env->store, hv);
    int why = MP_MISS_NONE;
    mp_shard_lock(s);
    mp_item *it = mp_item_find(s, key, nkey, hv, &why);
    if (mp_watch_on(c->env, MP_WATCH_FETCHERS))
        mp_watch_item_get(c, key, nkey, it != NULL ? MP_WATCH_FOUND : mp_watch_miss_status(why), it);
    if (it == NULL) {
        mp_shard_unlock(s);
        count_miss_reason(c, why);
        REPLY(c, R_EN);
        return 0;
    }
    mp_item found = *it;   /* the header only: the flags word is in the data */
    uint32_t found_flags = mp_item_flags(it);
    char ikey[MP_KEY_MAX_LENGTH];
    memcpy(ikey, MP_ITEM_key(it), it->nkey);
    mp_shard_unlock(s);

    char *out = mp_out_reserve(c, MP_META_LINE_MAX);
    if (out == NULL)
        return 0;
    char *q = put2(out, R_ME);
    *q++ = ' ';
    if (found.iflags & MP_IT_KEY_BINARY)
        q += mp_base64_encode(ikey, found.nkey, q);
    else {
        memcpy(q, ikey, found.nkey);
        q += found.nkey;
    }
    /* exp: minus the seconds left, as memcached prints it */
    memcpy(q, " exp=", 5);
    q += 5;
    if (found.exptime == 0) {
        memcpy(q, "-1", 2);
        q += 2;
    } else {
        int32_t exp = (int32_t)(mp_current_time - found.exptime);
        if (exp < 0) {
            *q++ = '-';
            q = u64_to_dec(q, (uint64_t)(-(int64_t)exp));
        } else {
            q = u64_to_dec(q, (uint64_t)exp);
        }
    }
    memcpy(q, " la=", 4);
    q = u64_to_dec(q + 4, (uint32_t)(mp_current_time - found.time));
    memcpy(q, " cas=", 5);
    q = u64_to_dec(q + 5, found.cas);
    if (found.iflags & MP_IT_FETCHED) {
        memcpy(q, " fetch=yes", 10);
        q += 10;
    } else {
        memcpy(q, " fetch=no", 9);
        q += 9;
    }
    memcpy(q, " cls=", 5);
    q = u64_to_dec(q + 5, found.clsid);
    memcpy(q, " size=", 6);
    q = u64_to_dec(q + 6, mp_item_ntotal_memcached(found.nkey, found.nbytes, found_flags,
                                                   c->env->settings->use_cas));
    q = put2(q, "\r\n");
    mp_out_commit(c, (size_t)(q - out));
    return 0;
}
