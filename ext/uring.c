/* The io_uring backend (placeholder until the ring loop lands). */
#include <errno.h>
#include <stdio.h>

#include "channel.h"

int mp_uring_probe(char *why, size_t whylen)
{
    snprintf(why, whylen, "not built yet");
    return -1;
}

int mp_uring_run(mp_channel *ch)
{
    (void)ch;
    return -ENOSYS;
}
