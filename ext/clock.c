#include "clock.h"
#include "settings.h"

volatile mp_rel_time mp_current_time;
volatile time_t mp_process_started;

/* memcached starts its clock two seconds in the past so that an absolute
 * exptime equal to "now" is already in the past; ITEM_UPDATE_INTERVAL is 60. */
#define MP_CLOCK_BACKDATE (60 + 2)

static time_t monotonic_origin;

void mp_clock_init(void)
{
    if (mp_process_started != 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    monotonic_origin = ts.tv_sec;
    mp_process_started = time(NULL) - MP_CLOCK_BACKDATE;
    mp_clock_update();
}

void mp_clock_update(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    mp_rel_time now = (mp_rel_time)(ts.tv_sec - monotonic_origin + MP_CLOCK_BACKDATE);
    if (now != mp_current_time)
        mp_current_time = now;
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
