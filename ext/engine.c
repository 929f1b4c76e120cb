/* The engine's life cycle: what the Python shell calls before, around and
 * after the channel loops.  See engine.h for the per-core picture. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "engine.h"
#include "io/channel.h"
#include "io/tls.h"
#include "latency.h"
#include "log.h"
#include "io/udp.h"
#include "proto/commands.h"
#include "proto/prefix.h"
#include "watch.h"

/* Shards per channel.  Any channel takes any shard's lock: with N channels
 * over S shards, the chance that another channel holds the lock a command
 * wants is about (N-1)/S times the share of its time a channel spends under
 * a lock.  S = N makes that grow with -t; S = 4N keeps it under a quarter
 * of that share at any -t ("stats channels" counts the waits per shard). */
#define MP_SHARDS_PER_CHANNEL 4
/* ... but each shard has at least this many pages of -m (see
 * mp_engine_create_tls). */
#define MP_PAGES_PER_SHARD 16

/* ---- the protocol's door (proto_env.h): what the engine offers it ---- */

static int hook_stats(void *eng, mp_conn *c, const char *group, size_t glen)
{
    return mp_stats_compose(eng, c, group, glen);
}

static void hook_stats_reset(void *eng)
{
    mp_stats_reset(eng);
}

static bool hook_stats_conns(void *eng, mp_conn *c, uint64_t *resume)
{
    return mp_stats_compose_conns(eng, c, resume);
}

static void hook_shutdown(void *eng, bool graceful)
{
    mp_engine_request_shutdown(eng, graceful);
}

static void hook_set_verbosity(void *owner, int level)
{
    mp_engine *eng = owner;
    eng->settings.verbose = level;
    /* each channel's copy, read racily as the setting is (proto_env.h) */
    for (int i = 0; i < eng->nchannels; i++)
        __atomic_store_n(&eng->channels[i]->env.verbose, level, __ATOMIC_RELAXED);
}

static void hook_set_memlimit(void *owner, size_t bytes)
{
    mp_engine *eng = owner;
    mp_store_set_limit(eng->store, bytes);
    eng->settings.maxbytes = bytes;
}

static int hook_refresh_certs(void *eng, char *err, size_t errlen)
{
    return mp_tls_refresh(eng, err, errlen);
}

static const mp_proto_hooks engine_hooks = {
    .stats = hook_stats,
    .stats_reset = hook_stats_reset,
    .stats_conns = hook_stats_conns,
    .shutdown = hook_shutdown,
    .set_verbosity = hook_set_verbosity,
    .set_memlimit = hook_set_memlimit,
    .refresh_certs = hook_refresh_certs,
};

/* A channel's env: the engine's store, settings and hooks, the channel's
 * counters, latency and buffer pool. */
static void fill_env(mp_engine *eng, mp_channel *ch)
{
    ch->env = (mp_proto_env){
        .store = eng->store,
        .settings = &eng->settings,
        .stats = &ch->stats,
        .latency = &ch->latency,
        .alloc = &mp_channel_out_alloc,
        .pool = ch,
        .hooks = &engine_hooks,
        .owner = eng,
        .auth = eng->auth != NULL ? &eng->auth : NULL,
        .shared = &eng->shared,
        .verbose = eng->settings.verbose,
        .fixed_id_base = (uint64_t)(ch->id + 1) << 24,
    };
}

/* -vv: the slab classes, in memcached's format (slabs_init), with this
 * store's sizes: chunks per 64 KiB slab for the small classes, per page for
 * the others (what "stats slabs" calls chunks_per_page) */
static void log_slab_classes(mp_store *st)
{
    mp_slab_class_stats cls[MP_MAX_SLAB_CLASSES];
    int n = mp_store_get_slab_stats(st, cls, MP_MAX_SLAB_CLASSES);
    for (int i = 1; i < n; i++)
        mp_log_slab_class(i, cls[i].chunk_size, cls[i].chunks_per_page);
}

static void watch_eviction(void *hub, const mp_item *it)
{
    mp_watch_eviction(hub, it);
}

static int pow2_at_least(int n)
{
    int p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

mp_engine *mp_engine_create(const mp_settings *settings, char *err, size_t errlen)
{
    return mp_engine_create_tls(settings, NULL, err, errlen);
}

mp_engine *mp_engine_create_tls(const mp_settings *settings, void *tls_ctx, char *err,
                                size_t errlen)
{
    mp_clock_init();
    mp_engine *eng = calloc(1, sizeof(*eng));
    if (eng == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    eng->settings = *settings;
    eng->control_fd = -1;
    eng->nchannels = settings->num_threads;
    if (eng->nchannels < 1) {
        snprintf(err, errlen, "Number of threads must be greater than 0");
        goto fail;
    }
    /* before anything is allocated for serving: a bad file refuses to start */
    if (settings->auth_file[0] != '\0') {
        eng->auth = mp_auth_load(settings->auth_file, err, errlen);
        if (eng->auth == NULL)
            goto fail;
    }
    /* -Z: the certificates load now, or the server does not start */
    if (mp_tls_server_create(eng, tls_ctx, err, errlen) < 0)
        goto fail;
    eng->control_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (eng->control_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (strcmp(settings->io_engine, "epoll") != 0) {
        char why[96] = "";
        int ok = mp_uring_probe(why, sizeof(why)) == 0;
        if (!ok && strcmp(settings->io_engine, "uring") == 0) {
            snprintf(err, errlen, "io_uring is not available: %s", why);
            goto fail;
        }
        eng->use_uring = ok;
    }
    /* the io_uring features are filled in when the rings are set up */
    snprintf(eng->engine_desc, sizeof(eng->engine_desc), "%s",
             eng->use_uring ? "rings_not_started" : "level_triggered");
    strcpy(eng->settings.io_engine, eng->use_uring ? "uring" : "epoll");
    int nshards = pow2_at_least(eng->nchannels * MP_SHARDS_PER_CHANNEL);
    if (nshards > MP_MAX_SHARDS)
        nshards = MP_MAX_SHARDS;
    eng->store = mp_store_create(&eng->settings, nshards, err, errlen);
    if (eng->store == NULL)
        goto fail;
    /* Each shard has pages of its own, and each slab class of a shard
     * needs memory of its own: a 64 KiB unit for a small class, a whole page
     * for one of 8 KiB chunks and up.  With few pages per shard, values of
     * many sizes cannot all stay (at -m 16 -t 2, 8 shards of 2 pages:
     * a Zipf cache-aside over 100 B - 64 KiB values hit 0.37 where
     * memcached hits 0.84; with 1 shard, 0.81).  So no more shards than
     * -m has MP_PAGES_PER_SHARD pages: 4 at -m 64, 8 from -m 128 at -t 2;
     * and at -m 2 -t 1 one shard, not four that took each other's only
     * page on every store. */
    uint32_t most = mp_store_pages(eng->store) / MP_PAGES_PER_SHARD;
    if (most < (uint32_t)nshards) {
        while (nshards > 1 && (uint32_t)nshards > most)
            nshards >>= 1;
        mp_store_destroy(eng->store);
        eng->store = mp_store_create(&eng->settings, nshards, err, errlen);
        if (eng->store == NULL)
            goto fail;
    }
    eng->shared.prefix = mp_prefix_create((char)eng->settings.prefix_delimiter);
    if (eng->shared.prefix == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    eng->shared.detail_on = eng->settings.detail_enabled;
    eng->shared.watch = mp_watch_create();
    if (eng->shared.watch == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    mp_store_watch_evictions(eng->store, &eng->shared.watch_kinds, MP_WATCH_EVICTIONS,
                             watch_eviction, eng->shared.watch);
    if (eng->settings.verbose > 1)
        log_slab_classes(eng->store);
    eng->channels = calloc((size_t)eng->nchannels, sizeof(mp_channel *));
    if (eng->channels == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < eng->nchannels; i++) {
        eng->channels[i] = mp_channel_create(eng, i);
        if (eng->channels[i] == NULL) {
            snprintf(err, errlen, "cannot create channel %d: %s", i, strerror(errno));
            goto fail;
        }
        fill_env(eng, eng->channels[i]);
    }
    return eng;
fail:
    mp_engine_destroy(eng);
    return NULL;
}

void mp_engine_destroy(mp_engine *eng)
{
    if (eng == NULL)
        return;
    if (eng->channels != NULL)
        for (int i = 0; i < eng->nchannels; i++)
            mp_channel_destroy(eng->channels[i]);
    free(eng->channels);
    if (eng->store != NULL)
        mp_store_destroy(eng->store);
    if (eng->control_fd >= 0)
        close(eng->control_fd);
    mp_auth_free(eng->auth);
    mp_tls_server_free(eng);
    mp_prefix_destroy(eng->shared.prefix);
    mp_watch_destroy(eng->shared.watch);
    free(eng);
}

int mp_engine_add_listener(mp_engine *eng, int ch, int fd, int is_unix, int tls)
{
    if (ch < 0 || ch >= eng->nchannels)
        return -1;
    if (!is_unix) {
        /* inherited by every accepted socket: replies are complete messages,
         * Nagle would only delay them */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (eng->settings.verbose > 1)
        mp_log_listening(fd, &eng->settings);
    /* a unix socket is plaintext, as memcached's under -Z */
    return mp_channel_add_listener(eng->channels[ch], fd, is_unix != 0,
                                   tls && !is_unix && eng->tls != NULL);
}

int mp_engine_add_udp(mp_engine *eng, int ch, int fd)
{
    if (ch < 0 || ch >= eng->nchannels)
        return -1;
    /* memcached's maximize_sndbuf: its binary search ends on the largest
     * size, which setsockopt takes (capping it) */
    int was = 0, want = MP_UDP_SNDBUF;
    socklen_t len = sizeof(was);
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &was, &len) == 0 &&
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want)) == 0 &&
        eng->settings.verbose > 1)
        mp_log_udp_sndbuf(fd, was, want);
    if (eng->settings.verbose > 1)
        mp_log_listening_udp(fd);
    return mp_channel_add_udp(eng->channels[ch], fd);
}

void mp_engine_stop(mp_engine *eng)
{
    for (int i = 0; i < eng->nchannels; i++)
        mp_channel_stop(eng->channels[i]);
}

int mp_engine_reload_auth(mp_engine *eng, char *err, size_t errlen)
{
    if (eng->auth == NULL)
        return 0;
    mp_auth *a = mp_auth_load(eng->settings.auth_file, err, errlen);
    if (a == NULL)
        return -1;
    a->retired = eng->auth;
    __atomic_store_n(&eng->auth, a, __ATOMIC_RELEASE);
    return 0;
}

void mp_engine_request_shutdown(mp_engine *eng, int graceful)
{
    uint64_t v = graceful ? 2 : 1;
    ssize_t n = write(eng->control_fd, &v, sizeof(v));
    (void)n;
}

static void stats_sum(mp_engine *eng, mp_thread_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < eng->nchannels; i++) {
        const mp_thread_stats *s = &eng->channels[i]->stats;
#define MP_STAT_ADD(name) out->name += __atomic_load_n(&s->name, __ATOMIC_RELAXED);
        MP_THREAD_STATS(MP_STAT_ADD)
#undef MP_STAT_ADD
    }
}

/* "stats reset" subtracts a snapshot instead of zeroing counters that other
 * threads increment without locks; the raw counters stay monotonic for
 * Prometheus. */
void mp_engine_thread_stats(mp_engine *eng, mp_thread_stats *out)
{
    stats_sum(eng, out);
#define MP_STAT_SUB(name) out->name -= eng->reset_base.name;
    MP_THREAD_STATS(MP_STAT_SUB)
#undef MP_STAT_SUB
}

void mp_engine_reset_stats(mp_engine *eng)
{
    stats_sum(eng, &eng->reset_base);
}

const char *const mp_thread_stat_names[] = {
#define MP_STAT_NAME(name) #name,
    MP_THREAD_STATS(MP_STAT_NAME)
#undef MP_STAT_NAME
    NULL,
};

int mp_engine_channel_counters(mp_engine *eng, int ch, uint64_t *out, int max)
{
    if (ch < 0 || ch >= eng->nchannels)
        return 0;
    const mp_thread_stats *s = &eng->channels[ch]->stats;
    int n = 0;
#define MP_STAT_COPY(name) \
    if (n < max)           \
        out[n++] = __atomic_load_n(&s->name, __ATOMIC_RELAXED);
    MP_THREAD_STATS(MP_STAT_COPY)
#undef MP_STAT_COPY
    return n;
}

int mp_engine_channel_turn_hist(mp_engine *eng, int ch, uint64_t *out)
{
    if (ch < 0 || ch >= eng->nchannels)
        return 0;
    for (int b = 0; b < MP_TURN_HIST_BUCKETS; b++)
        out[b] = __atomic_load_n(&eng->channels[ch]->turn_hist[b], __ATOMIC_RELAXED);
    return MP_TURN_HIST_BUCKETS;
}

_Static_assert(MP_CMD_COUNT <= MP_LAT_COMMANDS, "MP_LAT_COMMANDS must cover the command table");

int mp_engine_channel_latency(mp_engine *eng, int ch, uint64_t *hist, uint64_t *sum_ns)
{
    if (ch < 0 || ch >= eng->nchannels)
        return 0;
    const mp_latency *l = &eng->channels[ch]->latency;
    for (int c = 0; c < MP_LAT_COMMANDS; c++) {
        for (int b = 0; b < MP_LAT_BUCKETS; b++)
            hist[c * MP_LAT_BUCKETS + b] = __atomic_load_n(&l->count[c][b], __ATOMIC_RELAXED);
        sum_ns[c] = __atomic_load_n(&l->sum_ns[c], __ATOMIC_RELAXED);
    }
    return MP_CMD_COUNT;
}

int mp_engine_channel_conns(mp_engine *eng, int ch)
{
    if (ch < 0 || ch >= eng->nchannels)
        return 0;
    return (int)__atomic_load_n(&eng->channels[ch]->nopen, __ATOMIC_RELAXED);
}

const char *const mp_channel_buffer_names[MP_CHANNEL_BUFFER_KINDS] = {
    "input", "output", "spare", "receive_area",
};

int mp_engine_channel_buffers(mp_engine *eng, int ch, uint64_t *out)
{
    if (ch < 0 || ch >= eng->nchannels)
        return 0;
    const mp_buf_usage *u = &eng->channels[ch]->bufs;
    out[0] = u->bytes[MP_BUF_IN];
    out[1] = u->bytes[MP_BUF_OUT];
    out[2] = u->spare_bytes;
    out[3] = u->fixed_bytes;
    return MP_CHANNEL_BUFFER_KINDS;
}
