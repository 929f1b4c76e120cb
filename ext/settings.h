/* Server-wide configuration, filled by the Python shell (mpcache/config.py)
 * before any channel starts and read-only afterwards, except the few fields
 * the protocol may change at run time (verbosity, cache_memlimit), which are
 * plain stores of aligned words read racily by design, as in memcached. */
#ifndef MP_SETTINGS_H
#define MP_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MP_VERSION "1.6.18"          /* the memcached protocol version we speak */
#define MP_KEY_MAX_LENGTH 250
#define MP_REALTIME_MAXDELTA (60 * 60 * 24 * 30)

typedef struct mp_settings {
    size_t maxbytes;          /* -m, in bytes */
    int maxconns;             /* -c */
    int port;                 /* -p, as bound (ephemeral port resolved) */
    int udpport;              /* -U, accepted, never served */
    char inter[256];          /* -l, as given */
    char socketpath[256];     /* -s */
    int access;               /* -a */
    int backlog;              /* -b */
    int num_threads;          /* -t: channels */
    int reqs_per_event;       /* -R */
    uint32_t item_size_max;   /* -I */
    double factor;            /* -f */
    int chunk_size;           /* -n */
    int verbose;              /* -v, verbosity command */
    int idle_timeout;         /* -o idle_timeout, seconds, 0 = off */
    bool use_cas;             /* !-C */
    bool evict_to_free;       /* !-M */
    bool shutdown_command;    /* -A */
    bool flush_enabled;       /* !-F */
    bool maxconns_fast;
    char io_engine[16];       /* "epoll" (later "uring") */
} mp_settings;

/* memcached's defaults, so an embedded server and the daemon agree. */
void mp_settings_init(mp_settings *s);

#endif
