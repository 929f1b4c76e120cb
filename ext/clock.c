#include "clock.h"
#include "settings.h"

volatile mp_rel_time mp_current_time;
volatile time_t mp_process_started;

/* memcached starts its clock two seconds in the past so that an absolute
 * exptime equal to "now" is already in the past; ITEM_UPDATE_INTERVAL is 60. */
#define MP_CLOCK_BACKDATE (60 + 2)

/* The instant the clock started, in nanoseconds of the monotonic clock.
 * Seconds are counted from that instant, not from the monotonic clock's own
 * second boundaries: memcached's clock_handler runs first at start and then
 * every second, so its current_time ticks at the start's phase, and a rel
 * second r covers wall time [started + r, started + r + 1) shifted later by
 * the wall clock's fraction at start.  Its clock is thus never ahead of the
 * wall clock's second, which flush_all <absolute time> depends on:
 * oldest_live (deadline - 1) is reached no earlier than a second before the
 * deadline by the wall clock, and the items it flushes are those stored
 * before the deadline plus that fraction.  Counting from the monotonic
 * second boundaries instead could put rel time up to a second ahead of the
 * wall clock and flush items set just after the command, a second early.
 *
 * The clocks are the precise ones, read once a turn.  The coarse clocks
 * (and time(), which reads one) move a tick of a few milliseconds at a
 * time, and a tick is not aligned with the wall clock's seconds: with the
 * start's second counted from a coarse read, rel time was two seconds
 * behind the wall clock's for part of a tick after a second began (a model
 * with 20.3 ms "seconds" and 4 ms ticks: 4% of reads two behind; with the
 * precise clocks none). */
static int64_t origin_ns;

static int64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void mp_clock_init(void)
{
    if (mp_process_started != 0)
        return;
    /* the wall clock first: the origin read after it can only be later, so
     * the seconds counted from it never run ahead of the wall clock's */
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    origin_ns = monotonic_ns();
    mp_process_started = wall.tv_sec - MP_CLOCK_BACKDATE;
    mp_clock_update();
}

/* Every channel updates the clock at each turn.  A channel descheduled
 * between reading the time and storing it would store a second already
 * passed over another's newer one, and requests served meanwhile would
 * read a clock gone back: the clock only moves on. */
void mp_clock_update(void)
{
    mp_rel_time now = (mp_rel_time)((monotonic_ns() - origin_ns) / 1000000000 + MP_CLOCK_BACKDATE);
    mp_rel_time cur = __atomic_load_n(&mp_current_time, __ATOMIC_RELAXED);
    while (now > cur &&
           !__atomic_compare_exchange_n(&mp_current_time, &cur, now, 0,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

mp_rel_time mp_realtime(int64_t exptime)
{
    if (exptime == 0)
        return 0;
    if (exptime > MP_REALTIME_MAXDELTA) {
        if (exptime <= mp_process_started)
            return 1;
        return (mp_rel_time)(exptime - mp_process_started);
    }
    return (mp_rel_time)(exptime + mp_current_time);
}
