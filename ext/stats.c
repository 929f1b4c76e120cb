/* "stats" and its groups, composed into a connection's output: the engine's
 * side of the protocol's stats hooks (proto_env.h), which is why this file,
 * unlike the executor, sees the channels and the engine.
 *
 * Names, order and meaning are memcached 1.6.18's (as Debian builds it, with
 * extstore and TLS), so tools that parse memcached's stats keep working.
 * Counters memcached keeps for machinery we do not have (segmented LRU,
 * slab mover, logger) are printed with the value they have here: zero, or
 * the constant memcached's defaults give.  A line memcached prints only
 * under a flag or a state (idle_kicks, rejected_connections, the crawler's,
 * ssl_*) is printed under the same one.  mpcache's own figures are in
 * groups memcached does not have: "stats mpcache" and "stats channels".
 *
 * No shard lock is held while composing: the store's stats functions take
 * each lock briefly and return copies.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "engine.h"
#include "io/channel.h"
#include "io/conn.h"
#include "io/tls.h"
#include "io/udp.h"
#include "proto/parser.h"
#include "settings.h"
#include "stats.h"
#include "store/store.h"
#include "watch.h"

/* Room for one "STAT name value\r\n" line: names and values are short. */
#define MP_STAT_LINE_MAX 512
/* memcached's ITEM_UPDATE_INTERVAL: its clock starts this far (plus 2 s) in
 * the past, and "uptime" subtracts it again. */
#define MP_MC_UPDATE_INTERVAL 60

static void stat_linef(mp_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void stat_linef(mp_conn *c, const char *fmt, ...)
{
    char *dst = mp_out_reserve(c, MP_STAT_LINE_MAX);
    if (dst == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, MP_STAT_LINE_MAX - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > MP_STAT_LINE_MAX - 3)
        n = MP_STAT_LINE_MAX - 3;
    dst[n] = '\r';
    dst[n + 1] = '\n';
    mp_out_commit(c, (size_t)n + 2);
}

#define STAT_U64(c, name, v) stat_linef((c), "STAT %s %llu", (name), (unsigned long long)(v))
#define STAT_STR(c, name, v) stat_linef((c), "STAT %s %s", (name), (v))
#define STAT_YESNO(c, name, v) STAT_STR((c), (name), (v) ? "yes" : "no")

/* ---- "stats reset" for the store's counters ----
 * The store keeps monotonic totals and has no reset of its own, so a reset
 * records a baseline in the engine that later reads subtract, as the engine
 * does for the per-channel counters.  Read racily against a concurrent
 * reset, as memcached's stats are: a total below its baseline shows 0. */
#define MP_STORE_RESETTABLE(X) \
    X(total_items) X(evictions) X(reclaimed) X(expired_unfetched) \
    X(evicted_unfetched) X(evicted_active) X(crawler_reclaimed) \
    X(crawler_items_checked) X(lrutail_reflocked) X(slab_reassigns)

/* memcached's item_stats_reset and the slab stats of threadlocal_stats_reset:
 * every per-class counter (evicted_time goes back to 0 with evicted) */
#define MP_CLASS_RESETTABLE(X) \
    X(evicted) X(evicted_nonzero) X(outofmemory) X(reclaimed) X(expired_unfetched) \
    X(evicted_unfetched) X(evicted_active) X(crawler_reclaimed) X(crawler_items_checked) \
    X(lrutail_reflocked) X(get_hits) X(cmd_set) X(delete_hits) X(incr_hits) X(decr_hits) \
    X(cas_hits) X(cas_badval) X(touch_hits)

#define MP_SUB_BASE(f) out->f = out->f >= b->f ? out->f - b->f : 0;

static void store_stats(mp_engine *eng, mp_store_stats *out)
{
    mp_store_get_stats(eng->store, out);
    const mp_store_stats *b = &eng->store_base;
    MP_STORE_RESETTABLE(MP_SUB_BASE)
}

static void class_rebase(const mp_engine *eng, int i, mp_slab_class_stats *out)
{
    const mp_slab_class_stats *b = &eng->class_base[i];
    MP_CLASS_RESETTABLE(MP_SUB_BASE)
    if (out->evicted == 0)
        out->evicted_time = 0;
}

void mp_stats_reset(mp_engine *eng)
{
    mp_engine_reset_stats(eng);
    mp_store_get_stats(eng->store, &eng->store_base);
    mp_slab_class_stats cls[MP_MAX_SLAB_CLASSES];
    int n = mp_store_get_slab_stats(eng->store, cls, MP_MAX_SLAB_CLASSES);
    for (int i = 0; i < n && i < MP_MAX_SLAB_CLASSES; i++) {
        mp_slab_class_stats *b = &eng->class_base[i];
#define MP_SET_BASE(f) b->f = cls[i].f;
        MP_CLASS_RESETTABLE(MP_SET_BASE)
#undef MP_SET_BASE
    }
    /* memcached counts its listening connections in total_conns, and a
     * reset zeroes that too */
    eng->reset_listeners = 1;
}

static bool crawler_enabled(const mp_engine *eng)
{
    return !__atomic_load_n(&eng->shared.lru_crawler_off, __ATOMIC_RELAXED);
}

/* ---- "stats" ---- */

static int listeners_total(mp_engine *eng)
{
    /* memcached counts one connection structure per listening address; every
     * channel listens on each address, so count one channel's */
    return eng->nchannels > 0 ? eng->channels[0]->nlisteners : 0;
}

static int udp_total(mp_engine *eng)
{
    /* memcached has a connection per UDP socket and worker thread, as we
     * have a socket per channel */
    int n = 0;
    for (int i = 0; i < eng->nchannels; i++)
        n += eng->channels[i]->nudp;
    return n;
}

/* Every channel's connection buffers (racy reads of gauges, as memcached's
 * per-thread stats are). */
static void buf_usage(mp_engine *eng, mp_buf_usage *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < eng->nchannels; i++) {
        const mp_buf_usage *u = &eng->channels[i]->bufs;
        for (int r = 0; r < 2; r++) {
            out->count[r] += u->count[r];
            out->bytes[r] += u->bytes[r];
        }
        out->spare_count += u->spare_count;
        out->spare_bytes += u->spare_bytes;
        out->fixed_count += u->fixed_count;
        out->fixed_bytes += u->fixed_bytes;
    }
}

static void compose_general(mp_engine *eng, mp_conn *c)
{
    mp_thread_stats t;
    mp_store_stats s;
    mp_buf_usage b;
    buf_usage(eng, &b);
    mp_engine_thread_stats(eng, &t);
    store_stats(eng, &s);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    mp_rel_time now = mp_current_time;
    int nudp = udp_total(eng);
    int curr = __atomic_load_n(&eng->curr_conns, __ATOMIC_RELAXED) + nudp;
    int nl = listeners_total(eng);
    const mp_settings *set = &eng->settings;

    STAT_U64(c, "pid", (unsigned long long)getpid());
    STAT_U64(c, "uptime", now - MP_MC_UPDATE_INTERVAL);
    STAT_U64(c, "time", (unsigned long long)(now + mp_process_started));
    STAT_STR(c, "version", MP_VERSION);
    STAT_STR(c, "libevent", "mpcache");
    STAT_U64(c, "pointer_size", 8 * sizeof(void *));
    stat_linef(c, "STAT rusage_user %ld.%06ld", (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec);
    stat_linef(c, "STAT rusage_system %ld.%06ld", (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec);
    STAT_U64(c, "max_connections", set->maxconns);
    STAT_U64(c, "curr_connections", curr);
    STAT_U64(c, "total_connections", t.total_conns + (eng->reset_listeners ? 0u : (unsigned)(nl + nudp)));
    if (set->maxconns_fast)
        STAT_U64(c, "rejected_connections", t.rejected_conns);
    STAT_U64(c, "connection_structures", curr + nl);
    STAT_U64(c, "response_obj_oom", t.response_obj_oom);
    STAT_U64(c, "response_obj_count", b.count[MP_BUF_OUT]);
    STAT_U64(c, "response_obj_bytes", b.bytes[MP_BUF_OUT]);
    STAT_U64(c, "read_buf_count", b.count[MP_BUF_IN] + b.spare_count + b.fixed_count);
    STAT_U64(c, "read_buf_bytes", b.bytes[MP_BUF_IN] + b.spare_bytes + b.fixed_bytes);
    STAT_U64(c, "read_buf_bytes_free", b.spare_bytes);
    STAT_U64(c, "read_buf_oom", t.read_buf_oom);
    STAT_U64(c, "reserved_fds", 20);
    STAT_U64(c, "cmd_get", t.get_cmds);
    STAT_U64(c, "cmd_set", t.set_cmds);
    STAT_U64(c, "cmd_flush", t.flush_cmds);
    STAT_U64(c, "cmd_touch", t.touch_cmds);
    STAT_U64(c, "cmd_meta", t.meta_cmds);
    STAT_U64(c, "get_hits", t.get_hits);
    STAT_U64(c, "get_misses", t.get_misses);
    STAT_U64(c, "get_expired", t.get_expired);
    STAT_U64(c, "get_flushed", t.get_flushed);
    STAT_U64(c, "delete_misses", t.delete_misses);
    STAT_U64(c, "delete_hits", t.delete_hits);
    STAT_U64(c, "incr_misses", t.incr_misses);
    STAT_U64(c, "incr_hits", t.incr_hits);
    STAT_U64(c, "decr_misses", t.decr_misses);
    STAT_U64(c, "decr_hits", t.decr_hits);
    STAT_U64(c, "cas_misses", t.cas_misses);
    STAT_U64(c, "cas_hits", t.cas_hits);
    STAT_U64(c, "cas_badval", t.cas_badval);
    STAT_U64(c, "touch_hits", t.touch_hits);
    STAT_U64(c, "touch_misses", t.touch_misses);
    STAT_U64(c, "store_too_large", t.store_too_large);
    STAT_U64(c, "store_no_memory", t.store_no_memory);
    STAT_U64(c, "auth_cmds", t.auth_cmds);
    STAT_U64(c, "auth_errors", t.auth_errors);
    if (set->idle_timeout > 0)
        STAT_U64(c, "idle_kicks", t.idle_kicks);
    STAT_U64(c, "bytes_read", t.bytes_read);
    STAT_U64(c, "bytes_written", t.bytes_written);
    STAT_U64(c, "limit_maxbytes", set->maxbytes);
    /* over -c a connection is told and closed rather than the listeners
     * disabled, as memcached does with its default maxconns_fast: they
     * always accept */
    STAT_U64(c, "accepting_conns", 1);
    STAT_U64(c, "listen_disabled_num", 0);
    STAT_U64(c, "time_in_listen_disabled_us", 0);
    STAT_U64(c, "threads", eng->nchannels);
    STAT_U64(c, "conn_yields", t.conn_yields);
    STAT_U64(c, "hash_power_level", s.hash_power_level);
    STAT_U64(c, "hash_bytes", s.hash_bytes);
    STAT_U64(c, "hash_is_expanding", s.hash_is_expanding);
    STAT_U64(c, "slab_reassign_rescues", 0);
    STAT_U64(c, "slab_reassign_chunk_rescues", 0);
    STAT_U64(c, "slab_reassign_evictions_nomem", 0);
    STAT_U64(c, "slab_reassign_inline_reclaim", 0);
    STAT_U64(c, "slab_reassign_busy_items", 0);
    STAT_U64(c, "slab_reassign_busy_deletes", 0);
    STAT_U64(c, "slab_reassign_running", 0);
    STAT_U64(c, "slabs_moved", s.slab_reassigns);
    /* "lru_crawler disable" takes these away, as in memcached */
    if (crawler_enabled(eng)) {
        STAT_U64(c, "lru_crawler_running", 0);
        STAT_U64(c, "lru_crawler_starts", 0);
    }
    STAT_U64(c, "lru_maintainer_juggles", 0);
    STAT_U64(c, "malloc_fails", t.malloc_fails);
    uint64_t lg[5];
    mp_watch_counters(eng->shared.watch, lg);
    STAT_U64(c, "log_worker_dropped", lg[0]);
    STAT_U64(c, "log_worker_written", lg[1]);
    STAT_U64(c, "log_watcher_skipped", lg[2]);
    STAT_U64(c, "log_watcher_sent", lg[3]);
    STAT_U64(c, "log_watchers", lg[4]);
    if (set->ssl_enabled) {
        if (set->ssl_session_cache)
            STAT_U64(c, "ssl_new_sessions", t.ssl_new_sessions);
        STAT_U64(c, "ssl_handshake_errors", t.ssl_handshake_errors);
        STAT_U64(c, "time_since_server_cert_refresh", now - mp_tls_refreshed(eng));
    }
    STAT_U64(c, "unexpected_napi_ids", 0);
    STAT_U64(c, "round_robin_fallback", 0);
    STAT_U64(c, "bytes", s.bytes);
    STAT_U64(c, "curr_items", s.curr_items);
    STAT_U64(c, "total_items", s.total_items);
    STAT_U64(c, "slab_global_page_pool", 0);
    STAT_U64(c, "expired_unfetched", s.expired_unfetched);
    STAT_U64(c, "evicted_unfetched", s.evicted_unfetched);
    STAT_U64(c, "evicted_active", s.evicted_active);
    STAT_U64(c, "evictions", s.evictions);
    STAT_U64(c, "reclaimed", s.reclaimed);
    STAT_U64(c, "crawler_reclaimed", s.crawler_reclaimed);
    STAT_U64(c, "crawler_items_checked", s.crawler_items_checked);
    STAT_U64(c, "lrutail_reflocked", s.lrutail_reflocked);
    STAT_U64(c, "moves_to_cold", 0);
    STAT_U64(c, "moves_to_warm", 0);
    STAT_U64(c, "moves_within_lru", 0);
    STAT_U64(c, "direct_reclaims", 0);
    STAT_U64(c, "lru_bumps_dropped", 0);
}

/* ---- "stats mpcache": mpcache's own figures, the MegaPipe mechanics ---- */

const mp_own_total mp_own_totals[] = {
#define MP_OWN_ROW(name, help) {#name, help},
    MP_OWN_TOTALS(MP_OWN_ROW)
#undef MP_OWN_ROW
    {NULL, NULL},
};

static void compose_mpcache(mp_engine *eng, mp_conn *c)
{
    mp_thread_stats t;
    mp_engine_thread_stats(eng, &t);
    STAT_STR(c, "mpcache_io_engine", eng->settings.io_engine);
    STAT_U64(c, "mpcache_channels", eng->nchannels);
#define MP_OWN_LINE(name, help) STAT_U64(c, "mpcache_" #name, t.name);
    MP_OWN_TOTALS(MP_OWN_LINE)
#undef MP_OWN_LINE
}

/* ---- "stats settings" ---- */

static void compose_settings(mp_engine *eng, mp_conn *c)
{
    const mp_settings *s = &eng->settings;
    STAT_U64(c, "maxbytes", s->maxbytes);
    STAT_U64(c, "maxconns", s->maxconns);
    STAT_U64(c, "tcpport", s->port);
    STAT_U64(c, "udpport", s->udpport);
    STAT_STR(c, "inter", s->inter[0] ? s->inter : "NULL");
    STAT_U64(c, "verbosity", s->verbose);
    STAT_U64(c, "oldest", 0);
    STAT_STR(c, "evictions", s->evict_to_free ? "on" : "off");
    STAT_STR(c, "domain_socket", s->socketpath[0] ? s->socketpath : "NULL");
    stat_linef(c, "STAT umask %o", s->access);
    STAT_YESNO(c, "shutdown_command", s->shutdown_command);
    stat_linef(c, "STAT growth_factor %.2f", s->factor);
    STAT_U64(c, "chunk_size", s->chunk_size);
    STAT_U64(c, "num_threads", eng->nchannels);
    STAT_U64(c, "num_threads_per_udp", eng->nchannels);
    stat_linef(c, "STAT stat_key_prefix %c", s->prefix_delimiter);
    STAT_YESNO(c, "detail_enabled",
               __atomic_load_n(&eng->shared.detail_on, __ATOMIC_RELAXED) != 0);
    STAT_U64(c, "reqs_per_event", s->reqs_per_event);
    STAT_YESNO(c, "cas_enabled", s->use_cas);
    STAT_U64(c, "tcp_backlog", s->backlog);
    /* -B auto negotiates each connection from its first byte, as memcached
     * does */
    STAT_STR(c, "binding_protocol", s->binding_ascii    ? "ascii"
                                    : s->binding_binary ? "binary"
                                                        : "auto-negotiate");
    STAT_YESNO(c, "auth_enabled_sasl", s->sasl);
    /* memcached prints at most 126 bytes of a longer path, then whatever
     * its stack holds after them; here the path, up to MP_STAT_LINE_MAX */
    STAT_STR(c, "auth_enabled_ascii", s->auth_file[0] ? s->auth_file : "no");
    STAT_U64(c, "item_size_max", s->item_size_max);
    STAT_YESNO(c, "maxconns_fast", s->maxconns_fast);
    STAT_U64(c, "hashpower_init", 0);
    STAT_YESNO(c, "slab_reassign", true);
    STAT_U64(c, "slab_automove", 1);
    STAT_STR(c, "slab_automove_ratio", "0.80");
    STAT_U64(c, "slab_automove_window", 30);
    /* memcached keeps 512 KiB chunks and refuses a smaller -I */
    STAT_U64(c, "slab_chunk_max", s->item_size_max < 524288 ? s->item_size_max : 524288);
    STAT_YESNO(c, "lru_crawler", crawler_enabled(eng));
    STAT_U64(c, "lru_crawler_sleep", 100);
    STAT_U64(c, "lru_crawler_tocrawl", 0);
    STAT_U64(c, "tail_repair_time", 0);
    STAT_YESNO(c, "flush_enabled", s->flush_enabled);
    STAT_YESNO(c, "dump_enabled", s->dump_enabled);
    STAT_STR(c, "hash_algorithm", MP_HASH_NAME);   /* the store's own (store.h) */
    STAT_YESNO(c, "lru_maintainer_thread", true);
    STAT_YESNO(c, "lru_segmented", true);
    STAT_U64(c, "hot_lru_pct", 20);
    STAT_U64(c, "warm_lru_pct", 40);
    STAT_STR(c, "hot_max_factor", "0.20");
    STAT_STR(c, "warm_max_factor", "2.00");
    STAT_YESNO(c, "temp_lru", false);
    STAT_U64(c, "temporary_ttl", 61);
    STAT_U64(c, "idle_timeout", s->idle_timeout);
    STAT_U64(c, "watcher_logbuf_size", 262144);
    STAT_U64(c, "worker_logbuf_size", 65536);
    STAT_U64(c, "read_buf_mem_limit", 0);
    STAT_YESNO(c, "track_sizes", false);
    STAT_YESNO(c, "inline_ascii_response", false);
    STAT_U64(c, "ext_item_size", 512);
    STAT_U64(c, "ext_item_age", 4294967295u);
    STAT_U64(c, "ext_low_ttl", 0);
    STAT_U64(c, "ext_recache_rate", 2000);
    STAT_U64(c, "ext_wbuf_size", 4194304);
    STAT_U64(c, "ext_compact_under", 0);
    STAT_U64(c, "ext_drop_under", 0);
    STAT_U64(c, "ext_max_sleep", 1000000);
    STAT_STR(c, "ext_max_frag", "0.80");
    STAT_STR(c, "slab_automove_freeratio", "0.010");
    STAT_YESNO(c, "ext_drop_unread", false);
    /* as memcached prints them: a file not given as "(null)" or "NULL",
     * the verify mode as OpenSSL's flags (2 is PEER|FAIL_IF_NO_PEER_CERT) */
    static const int verify_flags[] = {0, 1, 3, 7};
    static const char *const tls_versions[] = {"tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3"};
    STAT_YESNO(c, "ssl_enabled", s->ssl_enabled);
    STAT_STR(c, "ssl_chain_cert", s->ssl_chain_cert[0] ? s->ssl_chain_cert : "(null)");
    STAT_STR(c, "ssl_key", s->ssl_key[0] ? s->ssl_key : "(null)");
    STAT_U64(c, "ssl_verify_mode", verify_flags[s->ssl_verify_mode & 3]);
    STAT_U64(c, "ssl_keyformat", s->ssl_keyformat);
    STAT_STR(c, "ssl_ciphers", s->ssl_ciphers[0] ? s->ssl_ciphers : "NULL");
    STAT_STR(c, "ssl_ca_cert", s->ssl_ca_cert[0] ? s->ssl_ca_cert : "NULL");
    STAT_U64(c, "ssl_wbuf_size", s->ssl_wbuf_size);
    STAT_YESNO(c, "ssl_session_cache", s->ssl_session_cache);
    STAT_YESNO(c, "ssl_kernel_tls", s->ssl_kernel_tls);
    STAT_STR(c, "ssl_min_version", tls_versions[s->ssl_min_version & 3]);
    STAT_STR(c, "num_napi_ids", "(null)");
    STAT_STR(c, "memory_file", "(null)");
}

/* ---- "stats items" and "stats slabs" ---- */

static int slab_stats(mp_engine *eng, mp_slab_class_stats *cls)
{
    memset(cls, 0, sizeof(mp_slab_class_stats) * MP_MAX_SLAB_CLASSES);
    int n = mp_store_get_slab_stats(eng->store, cls, MP_MAX_SLAB_CLASSES);
    if (n > MP_MAX_SLAB_CLASSES)
        n = MP_MAX_SLAB_CLASSES;
    for (int i = 0; i < n; i++)
        class_rebase(eng, i, &cls[i]);
    return n;
}

static void compose_items(mp_engine *eng, mp_conn *c)
{
    mp_slab_class_stats cls[MP_MAX_SLAB_CLASSES];
    int n = slab_stats(eng, cls);
    for (int i = 0; i < n; i++) {
        const mp_slab_class_stats *k = &cls[i];
        if (k->number == 0)
            continue;
        /* one queue per class here: memcached's hot/warm split does not
         * exist, so everything counts as cold, the queue evictions take from */
#define ITEM_STAT(name, v) stat_linef(c, "STAT items:%d:%s %llu", i, (name), (unsigned long long)(v))
        ITEM_STAT("number", k->number);
        ITEM_STAT("number_hot", 0);
        ITEM_STAT("number_warm", 0);
        ITEM_STAT("number_cold", k->number);
        ITEM_STAT("age_hot", 0);
        ITEM_STAT("age_warm", 0);
        ITEM_STAT("age", k->age);
        ITEM_STAT("mem_requested", k->mem_requested);
        ITEM_STAT("evicted", k->evicted);
        ITEM_STAT("evicted_nonzero", k->evicted_nonzero);
        ITEM_STAT("evicted_time", k->evicted_time);
        ITEM_STAT("outofmemory", k->outofmemory);
        ITEM_STAT("tailrepairs", 0);
        ITEM_STAT("reclaimed", k->reclaimed);
        ITEM_STAT("expired_unfetched", k->expired_unfetched);
        ITEM_STAT("evicted_unfetched", k->evicted_unfetched);
        ITEM_STAT("evicted_active", k->evicted_active);
        ITEM_STAT("crawler_reclaimed", k->crawler_reclaimed);
        ITEM_STAT("crawler_items_checked", k->crawler_items_checked);
        ITEM_STAT("lrutail_reflocked", k->lrutail_reflocked);
        ITEM_STAT("moves_to_cold", 0);
        ITEM_STAT("moves_to_warm", 0);
        ITEM_STAT("moves_within_lru", 0);
        ITEM_STAT("direct_reclaims", 0);
        ITEM_STAT("hits_to_hot", 0);
        ITEM_STAT("hits_to_warm", 0);
        ITEM_STAT("hits_to_cold", k->get_hits);
        ITEM_STAT("hits_to_temp", 0);
#undef ITEM_STAT
    }
}

static void compose_slabs(mp_engine *eng, mp_conn *c)
{
    mp_slab_class_stats cls[MP_MAX_SLAB_CLASSES];
    int n = slab_stats(eng, cls);
    int active = 0;
    for (int i = 0; i < n; i++) {
        const mp_slab_class_stats *k = &cls[i];
        if (k->total_pages == 0)
            continue;
        active++;
#define SLAB_STAT(name, v) stat_linef(c, "STAT %d:%s %llu", i, (name), (unsigned long long)(v))
        SLAB_STAT("chunk_size", k->chunk_size);
        SLAB_STAT("chunks_per_page", k->chunks_per_page);
        SLAB_STAT("total_pages", k->total_pages);
        SLAB_STAT("total_chunks", k->total_chunks);
        SLAB_STAT("used_chunks", k->used_chunks);
        SLAB_STAT("free_chunks", k->free_chunks);
        SLAB_STAT("free_chunks_end", 0);
        SLAB_STAT("get_hits", k->get_hits);
        SLAB_STAT("cmd_set", k->cmd_set);
        SLAB_STAT("delete_hits", k->delete_hits);
        SLAB_STAT("incr_hits", k->incr_hits);
        SLAB_STAT("decr_hits", k->decr_hits);
        SLAB_STAT("cas_hits", k->cas_hits);
        SLAB_STAT("cas_badval", k->cas_badval);
        SLAB_STAT("touch_hits", k->touch_hits);
#undef SLAB_STAT
    }
    mp_store_stats s;
    mp_store_get_stats(eng->store, &s);
    STAT_U64(c, "active_slabs", active);
    STAT_U64(c, "total_malloced", s.total_malloced);
}

/* ---- "stats conns" ---- */

static void format_addr(const struct sockaddr_storage *ss, socklen_t len, bool is_unix,
                        char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];
    if (is_unix || ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
        size_t max = len > offsetof(struct sockaddr_un, sun_path)
                         ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        snprintf(out, outlen, "unix:%.*s", (int)strnlen(un->sun_path, max), un->sun_path);
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(out, outlen, "tcp:%s:%u", ip, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(out, outlen, "tcp6:[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(out, outlen, "unknown");
    }
}

static bool sock_name(int fd, bool is_unix, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(out, outlen, "unknown");
        return false;
    }
    format_addr(&ss, len, is_unix, out, outlen);
    return true;
}

struct conns_ctx {
    mp_conn *self;
    bool stream;   /* stop at the output mark: a client reads meanwhile */
};

/* memcached's state names, as they show for a connection in each phase */
static const char *conn_state_name(const mp_conn *c, const mp_conn *self)
{
    if (c == self)
        return "conn_parse_cmd";
    if (c->state == MP_CONN_CLOSING)
        return "conn_closing";
    if (c->proto.phase == MP_PS_NREAD)
        return "conn_nread";
    if (c->proto.phase == MP_PS_SWALLOW)
        return "conn_swallow";
    if (mp_out_pending(c) != 0)
        return "conn_mwrite";
    return c->proto.seen_cmd ? "conn_read" : "conn_new_cmd";
}

/* One connection's lines; false once the output is past its mark, so a
 * server with many connections streams its answer (the connection is then
 * visited again when the client has read). */
static bool visit_conn(mp_conn *c, void *arg)
{
    struct conns_ctx *ctx = arg;
    mp_conn *out = ctx->self;
    if (ctx->stream && mp_out_over_mark(out))
        return false;
    char addr[160], laddr[160];
    format_addr(&c->peer, c->peerlen, c->is_unix, addr, sizeof(addr));
    /* memcached shows the connection's own address (on a wildcard listener,
     * the address the client reached); a direct descriptor has no
     * getsockname, and shows its listener's.  Read racily, as the rest: a
     * descriptor closed meanwhile shows its listener's, or, reused at once,
     * another socket's, for this one reply. */
    if (c->fixed || !sock_name(c->fd, c->is_unix, laddr, sizeof(laddr)))
        sock_name(c->listen_fd, c->is_unix, laddr, sizeof(laddr));
    mp_rel_time now = mp_current_time;
    mp_rel_time last = c->last_cmd;
    unsigned long long id = mp_conn_number(c);
    stat_linef(out, "STAT %llu:addr %s", id, addr);
    stat_linef(out, "STAT %llu:listen_addr %s", id, laddr);
    stat_linef(out, "STAT %llu:state %s", id, conn_state_name(c, out));
    stat_linef(out, "STAT %llu:secs_since_last_cmd %u", id, now >= last ? now - last : 0);
    return true;
}

/* memcached's UDP connection: the socket's own address while it waits,
 * the client's (and the socket's as listen_addr) while it answers. */
static void udp_conn_lines(mp_conn *out, mp_udp *u)
{
    mp_conn *c = &u->conn;
    char addr[160], laddr[160];
    int fd = u->fd;
    stat_linef(out, "STAT %d:UDP UDP", fd);
    sock_name(fd, false, laddr, sizeof(laddr));
    if (laddr[0] == 't')
        laddr[0] = 'u', laddr[1] = 'd';
    mp_rel_time now = mp_current_time;
    mp_rel_time last = c->last_cmd;
    unsigned secs = now >= last ? now - last : 0;
    if (c != out) {
        stat_linef(out, "STAT %d:addr %s", fd, laddr);
        stat_linef(out, "STAT %d:state conn_read", fd);
    } else {
        format_addr(&c->peer, c->peerlen, false, addr, sizeof(addr));
        if (addr[0] == 't')
            addr[0] = 'u', addr[1] = 'd';
        stat_linef(out, "STAT %d:addr %s", fd, addr);
        stat_linef(out, "STAT %d:listen_addr %s", fd, laddr);
        stat_linef(out, "STAT %d:state conn_parse_cmd", fd);
    }
    stat_linef(out, "STAT %d:secs_since_last_cmd %u", fd, secs);
}

static bool compose_conns(mp_engine *eng, mp_conn *c, uint64_t *resume, bool stream)
{
    if (*resume == 0) {
        mp_rel_time up = mp_current_time - MP_MC_UPDATE_INTERVAL;
        for (int i = 0; i < eng->nchannels; i++) {
            mp_channel *ch = eng->channels[i];
            for (int j = 0; j < ch->nlisteners; j++) {
                char addr[160];
                int fd = ch->listeners[j].fd;
                sock_name(fd, ch->listeners[j].is_unix, addr, sizeof(addr));
                stat_linef(c, "STAT %d:addr %s", fd, addr);
                stat_linef(c, "STAT %d:state conn_listening", fd);
                stat_linef(c, "STAT %d:secs_since_last_cmd %u", fd, up);
            }
        }
        for (int i = 0; i < eng->nchannels; i++) {
            mp_channel *ch = eng->channels[i];
            for (int j = 0; j < ch->nudp; j++)
                udp_conn_lines(c, ch->udp[j]);
        }
    }
    /* resume is the visit's cursor plus one, so that 0 means "not begun" */
    uint64_t cursor = *resume == 0 ? 0 : *resume - 1;
    struct conns_ctx ctx = {.self = c, .stream = stream};
    if (mp_engine_visit_conns(eng, &cursor, visit_conn, &ctx)) {
        *resume = 0;
        return true;
    }
    *resume = cursor + 1;
    return false;
}

bool mp_stats_compose_conns(mp_engine *eng, mp_conn *c, uint64_t *resume)
{
    /* a UDP reply is one response object, its datagrams numbered against
     * its whole length: it cannot stream */
    return compose_conns(eng, c, resume, c->resps == NULL);
}

/* ---- "stats channels": the MegaPipe mechanics per channel ---- */

/* The counters that show how requests became system calls; the rest of a
 * channel's counters are the command counts "stats" already sums. */
static const char *const channel_counters[] = {
    "requests", "accepts", "loop_turns", "events", "sqes", "syscalls", "syscall_wait",
    "syscall_read", "syscall_write", "syscall_accept", "syscall_close", "syscall_ctl",
    "bytes_read", "bytes_written", "conn_yields", "input_pauses", "output_stalls",
    "idle_kicks", "malloc_fails", NULL,
};

static const char *const turn_buckets[MP_TURN_HIST_BUCKETS] = {
    "0", "1", "2_3", "4_7", "8_15", "16_31", "32_63", "64_plus",
};

static void compose_channels(mp_engine *eng, mp_conn *c)
{
    uint64_t vals[128];
    uint64_t hist[MP_TURN_HIST_BUCKETS];
    STAT_STR(c, "engine", eng->settings.io_engine);
    stat_linef(c, "STAT features %s%s", eng->engine_desc, mp_tls_features(eng));
    STAT_U64(c, "channels", eng->nchannels);
    for (int ch = 0; ch < eng->nchannels; ch++) {
        int n = mp_engine_channel_counters(eng, ch, vals, 128);
        for (const char *const *want = channel_counters; *want != NULL; want++)
            for (int i = 0; i < n; i++)
                if (strcmp(mp_thread_stat_names[i], *want) == 0)
                    stat_linef(c, "STAT %d:%s %llu", ch, *want, (unsigned long long)vals[i]);
        stat_linef(c, "STAT %d:conns_open %u", ch, eng->channels[ch]->nopen);
        stat_linef(c, "STAT %d:conn_slots %u", ch, eng->channels[ch]->nslots);
        uint64_t bufs[MP_CHANNEL_BUFFER_KINDS];
        int nb = mp_engine_channel_buffers(eng, ch, bufs);
        for (int k = 0; k < nb; k++)
            stat_linef(c, "STAT %d:%s_buffer_bytes %llu", ch, mp_channel_buffer_names[k],
                       (unsigned long long)bufs[k]);
        mp_engine_channel_turn_hist(eng, ch, hist);
        for (int b = 0; b < MP_TURN_HIST_BUCKETS; b++)
            stat_linef(c, "STAT %d:turns_with_%s_events %llu", ch, turn_buckets[b],
                       (unsigned long long)hist[b]);
    }
    /* any channel takes any shard's lock: contention is per shard */
    uint64_t acquires[MP_MAX_SHARDS], waits[MP_MAX_SHARDS];
    int ns = mp_store_lock_stats(eng->store, acquires, waits, MP_MAX_SHARDS);
    STAT_U64(c, "shards", (uint64_t)ns);
    for (int i = 0; i < ns; i++) {
        stat_linef(c, "STAT shard_%d:lock_acquires %llu", i, (unsigned long long)acquires[i]);
        stat_linef(c, "STAT shard_%d:lock_waits %llu", i, (unsigned long long)waits[i]);
    }
}

/* ---- entry point ---- */

static bool group_is(const char *g, size_t glen, const char *name)
{
    return glen == strlen(name) && memcmp(g, name, glen) == 0;
}

int mp_stats_compose(mp_engine *eng, mp_conn *c, const char *group, size_t glen)
{
    /* relative to wstart: growing the output may compact it */
    uint32_t start = c->wend - c->wstart;
    if (glen == 0)
        compose_general(eng, c);
    else if (group_is(group, glen, "settings"))
        compose_settings(eng, c);
    else if (group_is(group, glen, "items"))
        compose_items(eng, c);
    else if (group_is(group, glen, "slabs"))
        compose_slabs(eng, c);
    else if (group_is(group, glen, "conns")) {
        uint64_t resume = 0;
        compose_conns(eng, c, &resume, false);
    }
    else if (group_is(group, glen, "channels"))
        compose_channels(eng, c);
    else if (group_is(group, glen, "mpcache"))
        compose_mpcache(eng, c);
    else if (group_is(group, glen, "sizes"))
        STAT_STR(c, "sizes_status", "disabled");
    else
        return -1;
    return (int)(c->wend - c->wstart - start);
}

/* A reply big enough for "stats settings" in one piece; bigger ones grow.
 * The fake connection's buffers come from the heap, never from a channel's
 * pool: the caller is not a channel thread. */
#define MP_STATS_TEXT_INITIAL (64 * 1024)

char *mp_stats_text(mp_engine *eng, const char *group, size_t glen, size_t *outlen)
{
    mp_proto_env env = {.store = eng->store, .settings = &eng->settings, .alloc = &mp_out_heap};
    mp_conn c;
    memset(&c, 0, sizeof(c));
    c.fd = -1;
    c.env = &env;
    c.wbuf = malloc(MP_STATS_TEXT_INITIAL);
    if (c.wbuf == NULL)
        return NULL;
    c.wsize = MP_STATS_TEXT_INITIAL;
    if (mp_stats_compose(eng, &c, group, glen) < 0) {
        free(c.wbuf);
        return NULL;
    }
    mp_out_lit(&c, "END\r\n");
    *outlen = c.wend;
    return c.wbuf;
}
