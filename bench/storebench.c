/* The store alone, under many threads: does throughput hold when threads
 * outnumber CPUs, and how does it move with the number of shards?
 *
 *   make -C bench storebench && bench/storebench [-t 1,2,4,8,16] [-s 1,4,16,64]
 *       [-d seconds] [-k keys] [-g get_ratio] [-m megabytes] [--json]
 *
 * Each thread runs the executor's critical sections in a loop: a get (lock
 * the key's shard, find, bump, copy the value out, unlock) or a set (allocate
 * an item, fill it, link it), over keys drawn uniformly.  There is no I/O, so
 * this is the upper bound of the store's share of a request and shows lock
 * contention without the network in the way.  Lock waits per operation come
 * from the shards' own counters (mp_store_lock_stats), the same figures
 * "stats channels" shows.
 *
 * Threads are not pinned: with more threads than CPUs, a thread preempted
 * while it holds a shard lock makes the others wait, which is what an
 * oversubscribed server would see.  Each cell is one run of -d seconds. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "settings.h"
#include "store/store.h"

#define MAX_LIST 16
#define VALUE_LEN 32

typedef struct config {
    int threads[MAX_LIST], nthreads;
    int shards[MAX_LIST], nshards;
    double seconds;
    unsigned keys;
    double get_ratio;
    size_t megabytes;
    int json;
} config;

typedef struct worker {
    pthread_t tid;
    mp_store *st;
    const config *cfg;
    unsigned seed;
    uint64_t ops, hits;
} worker;

static atomic_int go, stop;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* xorshift: cheap and thread-local, so the generator is not the bottleneck */
static unsigned next_rand(unsigned *s)
{
    unsigned x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void do_set(mp_store *st, const char *key, size_t nkey, uint64_t hv)
{
    mp_item *it;
    if (mp_store_alloc(st, key, nkey, hv, 0, 0, VALUE_LEN + 2, &it) != MP_ALLOC_OK)
        return;
    memset(MP_ITEM_value(it), 'v', VALUE_LEN);
    memcpy(MP_ITEM_value(it) + VALUE_LEN, "\r\n", 2);
    mp_store_item(st, it, hv, MP_SET, 0, NULL);
}

static bool do_get(mp_store *st, const char *key, size_t nkey, uint64_t hv, char *out)
{
    mp_shard *s = mp_store_shard(st, hv);
    mp_shard_lock(s);
    mp_item *it = mp_item_find(s, key, nkey, hv, NULL);
    if (it != NULL) {
        memcpy(out, MP_ITEM_value(it), it->nbytes < 64 ? it->nbytes : 64);
        mp_item_bump(s, it);
    }
    mp_shard_unlock(s);
    return it != NULL;
}

static void *work(void *arg)
{
    worker *w = arg;
    char key[32], out[64];
    unsigned threshold = (unsigned)(w->cfg->get_ratio * 4294967295.0);
    while (!atomic_load_explicit(&go, memory_order_acquire))
        ;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        /* a batch between checks of the flag */
        for (int i = 0; i < 256; i++) {
            unsigned k = next_rand(&w->seed) % w->cfg->keys;
            size_t nkey = (size_t)snprintf(key, sizeof(key), "key:%u", k);
            uint64_t hv = mp_hash(key, nkey);
            if (next_rand(&w->seed) <= threshold)
                w->hits += do_get(w->st, key, nkey, hv, out);
            else
                do_set(w->st, key, nkey, hv);
        }
        w->ops += 256;
    }
    return NULL;
}

static mp_store *make_store(const config *cfg, int nshards)
{
    mp_settings s;
    mp_settings_init(&s);
    s.maxbytes = cfg->megabytes << 20;
    char err[256] = "";
    mp_store *st = mp_store_create(&s, nshards, err, sizeof(err));
    if (st == NULL) {
        fprintf(stderr, "mp_store_create: %s\n", err);
        exit(2);
    }
    char key[32];
    for (unsigned k = 0; k < cfg->keys; k++) {
        size_t nkey = (size_t)snprintf(key, sizeof(key), "key:%u", k);
        do_set(st, key, nkey, mp_hash(key, nkey));
    }
    return st;
}

static void run_cell(const config *cfg, int nthreads, int nshards, int first)
{
    mp_store *st = make_store(cfg, nshards);
    uint64_t acq0[MP_MAX_SHARDS], waits0[MP_MAX_SHARDS], acq1[MP_MAX_SHARDS], waits1[MP_MAX_SHARDS];
    worker *ws = calloc((size_t)nthreads, sizeof(worker));
    atomic_store(&go, 0);
    atomic_store(&stop, 0);
    for (int i = 0; i < nthreads; i++) {
        ws[i].st = st;
        ws[i].cfg = cfg;
        ws[i].seed = 0x9e3779b9u * (unsigned)(i + 1);
        pthread_create(&ws[i].tid, NULL, work, &ws[i]);
    }
    int n = mp_store_lock_stats(st, acq0, waits0, MP_MAX_SHARDS);
    double t0 = now_s();
    atomic_store_explicit(&go, 1, memory_order_release);
    struct timespec d = {(time_t)cfg->seconds, (long)((cfg->seconds - (time_t)cfg->seconds) * 1e9)};
    nanosleep(&d, NULL);
    atomic_store(&stop, 1);
    uint64_t ops = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(ws[i].tid, NULL);
        ops += ws[i].ops;
    }
    double elapsed = now_s() - t0;
    mp_store_lock_stats(st, acq1, waits1, MP_MAX_SHARDS);
    uint64_t acq = 0, waits = 0;
    for (int i = 0; i < n; i++) {
        acq += acq1[i] - acq0[i];
        waits += waits1[i] - waits0[i];
    }
    double mops = ops / elapsed / 1e6;
    double wait_share = acq ? (double)waits / (double)acq : 0;
    if (cfg->json)
        printf("%s{\"threads\": %d, \"shards\": %d, \"mops\": %.3f, \"lock_waits_per_op\": %.5f}",
               first ? "" : ",\n ", nthreads, nshards, mops, wait_share);
    else
        printf("%7d %6d %10.2f %12.4f\n", nthreads, nshards, mops, wait_share);
    fflush(stdout);
    free(ws);
    mp_store_destroy(st);
}

static int parse_list(const char *s, int *out)
{
    int n = 0;
    while (*s && n < MAX_LIST) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (s == NULL)
            break;
        s++;
    }
    return n;
}

int main(int argc, char **argv)
{
    config cfg = {.seconds = 1.0, .keys = 100000, .get_ratio = 0.9, .megabytes = 256};
    cfg.nthreads = parse_list("1,2,4,8,16", cfg.threads);
    cfg.nshards = parse_list("1,2,4,8,16,64", cfg.shards);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (strcmp(a, "-t") == 0) cfg.nthreads = parse_list(v, cfg.threads), i++;
        else if (strcmp(a, "-s") == 0) cfg.nshards = parse_list(v, cfg.shards), i++;
        else if (strcmp(a, "-d") == 0) cfg.seconds = atof(v), i++;
        else if (strcmp(a, "-k") == 0) cfg.keys = (unsigned)atol(v), i++;
        else if (strcmp(a, "-g") == 0) cfg.get_ratio = atof(v), i++;
        else if (strcmp(a, "-m") == 0) cfg.megabytes = (size_t)atol(v), i++;
        else if (strcmp(a, "--json") == 0) cfg.json = 1;
        else {
            fprintf(stderr, "usage: %s [-t list] [-s list] [-d s] [-k keys] [-g ratio] [-m MB] [--json]\n",
                    argv[0]);
            return 64;
        }
    }
    mp_clock_init();
    if (cfg.json)
        printf("[");
    else
        printf("threads shards  Mops/s    lock waits/op\n");
    int first = 1;
    for (int s = 0; s < cfg.nshards; s++)
        for (int t = 0; t < cfg.nthreads; t++) {
            run_cell(&cfg, cfg.threads[t], cfg.shards[s], first);
            first = 0;
        }
    if (cfg.json)
        printf("]\n");
    return 0;
}
