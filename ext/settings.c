#include <string.h>

#include "settings.h"

void mp_settings_init(mp_settings *s)
{
    memset(s, 0, sizeof(*s));
    s->maxbytes = 64 * 1024 * 1024;
    s->maxconns = 1024;
    s->port = 11211;
    s->udpport = 0;
    strcpy(s->inter, "127.0.0.1");
    s->access = 0700;
    s->backlog = 1024;
    s->num_threads = 4;
    s->reqs_per_event = 20;
    s->item_size_max = 1024 * 1024;
    s->factor = 1.25;
    s->chunk_size = 48;
    s->verbose = 0;
    s->idle_timeout = 0;
    s->use_cas = true;
    s->evict_to_free = true;
    s->shutdown_command = false;
    s->flush_enabled = true;
    s->maxconns_fast = true;
    strcpy(s->io_engine, "epoll");
}
