/* Per-command server-side latency, per channel: from the parsed request to
 * its reply in the output buffer, timed with the vDSO clock (~20 ns, no
 * system call).  Buckets are powers of two from 1 us: bucket i counts times
 * below 2^i us (i = 0..MP_LAT_BUCKETS-2), the last everything slower. */
#ifndef MP_LATENCY_H
#define MP_LATENCY_H

#include <stdint.h>
#include <time.h>

#define MP_LAT_BUCKETS 22
/* Room for every row of the command table (commands.h). */
#define MP_LAT_COMMANDS 48

typedef struct mp_latency {
    uint64_t count[MP_LAT_COMMANDS][MP_LAT_BUCKETS];
    uint64_t sum_ns[MP_LAT_COMMANDS];
} mp_latency;

static inline uint64_t mp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void mp_latency_record(mp_latency *l, int cmd, uint64_t ns)
{
    if (cmd < 0 || cmd >= MP_LAT_COMMANDS)
        return;
    uint64_t us = ns / 1000;
    int b = us == 0 ? 0 : 64 - __builtin_clzll(us);
    if (b > MP_LAT_BUCKETS - 1)
        b = MP_LAT_BUCKETS - 1;
    l->count[cmd][b]++;
    l->sum_ns[cmd] += ns;
}

#endif
