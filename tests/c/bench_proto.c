/* A fixed request script through mp_process, for counting instructions
 * before and after a change to the request path (issue 15: stay within 2%).
 * Not a test: it prints the number of bytes the replies came to and their
 * FNV-1a hash, which must not change either.
 *
 *   cc -std=gnu11 -O2 -g -pthread -fno-strict-aliasing -DNDEBUG -Iext tests/c/bench_proto.c \
 *      $(find ext -name '*.c' ! -name _engine.c ! -name parser_py.c) -lm -o /tmp/bench_proto
 *   valgrind --tool=callgrind --toggle-collect=mp_process /tmp/bench_proto
 *
 * (setup.py's flags; counting mp_process only leaves out the hashing of the
 * replies.)  It runs on the engine, not on a fake env, so the same file
 * measures the code from before proto_env.h: 182,062,944 instructions at
 * 4678f40, 182,237,894 with the env (+0.10%).
 *
 * The script: 1000 keys set, then 100000 requests drawn from a fixed LCG:
 * single gets (hits and misses), 10-key multi-gets, gets, sets, incr/decr,
 * deletes, touches and the meta commands (mg with flags, ms, md, ma, mn).
 * One connection on an engine that is created but never started; the whole
 * script sits in its input buffer and every reply is "sent" (dropped) after
 * each mp_process call, as a socket that always takes everything would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/channel.h"
#include "clock.h"
#include "io/conn.h"
#include "engine.h"
#include "proto/executor.h"
#include "settings.h"
#include "store/store.h"

#define BENCH_KEYS 1000
#define BENCH_REQUESTS 100000

static uint64_t lcg = 42;

static uint32_t rnd(uint32_t n)
{
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(lcg >> 33) % n;
}

static char *script;
static size_t slen, scap;

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#include <stdarg.h>
static void emit(const char *fmt, ...)
{
    if (scap - slen < 4096) {
        scap = scap ? scap * 2 : 1 << 20;
        script = realloc(script, scap);
    }
    va_list ap;
    va_start(ap, fmt);
    slen += (size_t)vsnprintf(script + slen, scap - slen, fmt, ap);
    va_end(ap);
}

static void emit_value(size_t n)
{
    if (scap - slen < n + 4096) {
        scap = (scap + n) * 2;
        script = realloc(script, scap);
    }
    for (size_t i = 0; i < n; i++)
        script[slen++] = (char)('a' + (i * 7) % 26);
    script[slen++] = '\r';
    script[slen++] = '\n';
}

static void make_script(void)
{
    for (int k = 0; k < BENCH_KEYS; k++) {
        size_t n = 10 + (size_t)rnd(300);
        emit("set key:%d %d 0 %zu\r\n", k, k, n);
        emit_value(n);
    }
    for (int k = 0; k < 20; k++)
        emit("set counter:%d 0 0 1\r\n5\r\n", k);
    for (int i = 0; i < BENCH_REQUESTS; i++) {
        uint32_t r = rnd(100);
        /* a fifth of the keys miss */
        int key = (int)rnd(BENCH_KEYS * 5 / 4);
        if (r < 40) {
            emit("get key:%d\r\n", key);
        } else if (r < 48) {
            emit("get");
            for (int j = 0; j < 10; j++)
                emit(" key:%d", (int)rnd(BENCH_KEYS * 5 / 4));
            emit("\r\n");
        } else if (r < 53) {
            emit("gets key:%d key:%d\r\n", key, (int)rnd(BENCH_KEYS));
        } else if (r < 65) {
            size_t n = 10 + (size_t)rnd(300);
            emit("set key:%d %u 0 %zu\r\n", key, rnd(1000), n);
            emit_value(n);
        } else if (r < 68) {
            emit("%s counter:%u %u\r\n", rnd(2) ? "incr" : "decr", rnd(20), rnd(100));
        } else if (r < 70) {
            emit("delete key:%d\r\n", key);
        } else if (r < 72) {
            emit("touch key:%d %u\r\n", key, 100 + rnd(1000));
        } else if (r < 84) {
            static const char *const flags[] = {"v", "v f t", "s c", "k v O123 q", "v c f k t s"};
            emit("mg key:%d %s\r\n", key, flags[rnd(5)]);
        } else if (r < 90) {
            size_t n = 10 + (size_t)rnd(300);
            emit("ms key:%d %zu T%u F%u%s\r\n", key, n, 100 + rnd(100), rnd(1000),
                 rnd(2) ? " c k" : "");
            emit_value(n);
        } else if (r < 93) {
            emit("md key:%d%s\r\n", key, rnd(2) ? " q" : "");
        } else if (r < 97) {
            emit("ma counter:%u %s\r\n", rnd(20), rnd(2) ? "v" : "N0 J10 v t");
        } else {
            emit("mn\r\n");
        }
    }
}

static uint64_t out_hash = 1469598103934665603ull;
static uint64_t out_bytes;

/* Everything pending is sent: hashed, then dropped from the output. */
static void drain(mp_store *st, mp_conn *c)
{
    struct iovec iov[2 * MP_OUT_REFS + 1];
    int k = mp_out_iov(c->wbuf, c->wstart, c->wend, &c->wrefs, iov);
    size_t n = 0;
    for (int i = 0; i < k; i++) {
        const unsigned char *p = iov[i].iov_base;
        for (size_t j = 0; j < iov[i].iov_len; j++)
            out_hash = (out_hash ^ p[j]) * 1099511628211ull;
        n += iov[i].iov_len;
    }
    out_bytes += n;
    mp_out_sent(st, &c->wstart, &c->wrefs, n);
    if (c->wstart == c->wend)
        c->wstart = c->wend = 0;
}

static int calls;

void run_script(mp_store *st, mp_conn *c);
void __attribute__((noinline)) run_script(mp_store *st, mp_conn *c)
{
    for (;;) {
        int r = mp_process(c, 20);
        calls++;
        drain(st, c);
        if (r != MP_PROC_YIELD)
            break;
    }
}

int main(void)
{
    mp_settings s;
    mp_settings_init(&s);
    s.maxbytes = (size_t)64 << 20;
    s.num_threads = 1;
    strcpy(s.io_engine, "epoll");
    char err[256] = "";
    mp_engine *eng = mp_engine_create(&s, err, sizeof(err));
    if (eng == NULL) {
        fprintf(stderr, "mp_engine_create: %s\n", err);
        return 1;
    }
    make_script();
    mp_channel *ch = eng->channels[0];
    static const mp_listener none = {.fd = -1};
    if (!mp_conn_admit(ch))
        return 1;
    mp_conn *c = mp_conn_open(ch, -1, &none, NULL, 0);
    c->rbuf = script;
    c->rsize = c->rend = (uint32_t)slen;
    c->rstart = 0;
    run_script(eng->store, c);
    printf("script %zu bytes, %d calls, replies %llu bytes, hash %016llx, left %u\n", slen, calls,
           (unsigned long long)out_bytes, (unsigned long long)out_hash, c->rend - c->rstart);
    c->rbuf = NULL;
    mp_conn_release(ch, c);
    mp_engine_destroy(eng);
    free(script);
    return 0;
}
