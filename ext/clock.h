/* Server time as memcached keeps it: seconds since process start ("rel time"),
 * refreshed by every channel at the top of its loop turn from the vDSO clock
 * (no system call).  All expiry arithmetic is done in rel time. */
#ifndef MP_CLOCK_H
#define MP_CLOCK_H

#include <stdint.h>
#include <time.h>

typedef uint32_t mp_rel_time;

extern volatile mp_rel_time mp_current_time;  /* rel seconds now */
extern volatile time_t mp_process_started;    /* unix time of rel 0 */

void mp_clock_init(void);         /* once per process, idempotent */
void mp_clock_update(void);       /* cheap; called every loop turn */

/* memcached's realtime(): exptime from the protocol -> rel time.
 * 0 stays 0 (never); > 30 days is absolute unix time (1 if in the past);
 * otherwise relative to now.  Negative values are handled by callers exactly
 * as memcached does (they become "already expired"). */
mp_rel_time mp_realtime(int64_t exptime);

#endif
