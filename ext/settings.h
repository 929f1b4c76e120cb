/* Server-wide configuration, filled by the Python shell (mpcache/config.py)
 * before any channel starts and read-only afterwards, except the few fields
 * changed at run time (verbosity and cache_memlimit by the protocol,
 * io_engine when a channel falls back to epoll), which are plain stores of
 * aligned words read racily by design, as in memcached.
 *
 * Adding a setting: one line in MP_SETTINGS below makes the field, its
 * default (mp_settings_init) and its entry in mp_setting_descs, which the
 * Cython bridge (ext/_engine.pyx) walks to fill the struct by name.  Then
 * give it a value on the Python side, one line in ENGINE_KEYS in
 * mpcache/config.py (from a Settings field, with its validation there; the
 * engine refuses to start while a field has no value or a value has no
 * field), and write its behaviour where it is read.  "stats settings"
 * (ext/stats.c compose_settings) lists memcached's names in memcached's
 * order, so a setting it should show is added there by hand. */
#ifndef MP_SETTINGS_H
#define MP_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MP_VERSION "1.6.18"          /* the memcached protocol version we speak */
#define MP_KEY_MAX_LENGTH 250
#define MP_REALTIME_MAXDELTA (60 * 60 * 24 * 30)

/* VAL(type, name, default, doc): a number or bool field.
 * STR(name, size, default, doc): a NUL-terminated char[size] field.
 * The defaults are memcached's (but -f: see slabs.c), so an embedded server
 * and the daemon agree. */
#define MP_SETTINGS(VAL, STR) \
    VAL(size_t,   maxbytes,         64 * 1024 * 1024, "-m, in bytes") \
    VAL(int,      maxconns,         1024,        "-c") \
    VAL(int,      port,             11211,       "-p, as bound (ephemeral port resolved)") \
    VAL(int,      udpport,          0,           "-U: UDP port, 0 off") \
    STR(          inter,      256,  "127.0.0.1", "-l, as given") \
    STR(          socketpath, 256,  "",          "-s") \
    VAL(int,      access,           0700,        "-a") \
    VAL(int,      backlog,          1024,        "-b") \
    VAL(int,      num_threads,      4,           "-t: channels") \
    VAL(int,      reqs_per_event,   20,          "-R") \
    VAL(uint32_t, item_size_max,    1024 * 1024, "-I") \
    VAL(double,   factor,           1.08,        "-f") \
    VAL(int,      chunk_size,       48,          "-n") \
    VAL(int,      verbose,          0,           "-v, verbosity command") \
    VAL(int,      idle_timeout,     0,           "-o idle_timeout, seconds, 0 = off") \
    VAL(bool,     use_cas,          true,        "!-C") \
    VAL(bool,     evict_to_free,    true,        "!-M") \
    VAL(bool,     shutdown_command, false,       "-A") \
    VAL(bool,     flush_enabled,    true,        "!-F") \
    VAL(bool,     maxconns_fast,    true,        "-o maxconns_fast") \
    VAL(int,      prefix_delimiter, ':',         "-D: the byte that ends a key's prefix in per-prefix stats") \
    VAL(bool,     detail_enabled,   false,       "-D: per-prefix stats kept from the start (then stats detail on|off)") \
    VAL(bool,     dump_enabled,     true,        "!-X: stats cachedump, lru_crawler metadump") \
    VAL(bool,     watch_enabled,    true,        "!-W: watch") \
    VAL(bool,     binding_ascii,    false,       "-B ascii or -Y: ascii from the start, not auto-negotiated") \
    VAL(bool,     binding_binary,   false,       "-B binary (or -S): binary from the start, not auto-negotiated") \
    VAL(bool,     sasl,             false,       "-S: binary clients authenticate with SASL PLAIN first") \
    STR(          sasl_pwdb, 4096,  "",          "-S: $MEMCACHED_SASL_PWDB at start, user:password lines; \"\" = none") \
    STR(          auth_file, 4096,  "",          "-Y, as given (PATH_MAX); \"\" = no authentication") \
    STR(          io_engine,  16,   "epoll",     "asked: auto, uring, epoll; after create, the one in use") \
    VAL(bool,     ssl_enabled,      false,       "-Z: TCP listeners speak TLS, but notls: ones") \
    STR(          ssl_chain_cert, 4096, "",      "-o ssl_chain_cert, PEM; \"\" = not given") \
    STR(          ssl_key,   4096,  "",          "-o ssl_key; \"\" = not given") \
    VAL(int,      ssl_keyformat,    1,           "-o ssl_keyformat: SSL_FILETYPE_PEM (1) or _ASN1 (2)") \
    VAL(int,      ssl_verify_mode,  0,           "-o ssl_verify_mode, as given: 0 none, 1 request, 2 require, 3 once") \
    STR(          ssl_ciphers, 1024, "",         "-o ssl_ciphers (TLS 1.2 and below); \"\" = OpenSSL's") \
    STR(          ssl_ca_cert, 4096, "",         "-o ssl_ca_cert: client CAs, PEM; \"\" = none") \
    VAL(uint32_t, ssl_wbuf_size,    16384,       "-o ssl_wbuf_size, in bytes: plaintext per SSL_write") \
    VAL(bool,     ssl_session_cache, false,      "-o ssl_session_cache") \
    VAL(bool,     ssl_kernel_tls,   false,       "-o ssl_kernel_tls (asked; see tls.c)") \
    VAL(int,      ssl_min_version,  2,           "-o ssl_min_version, as given: 0 tlsv1.0 .. 3 tlsv1.3")

typedef struct mp_settings {
#define MP_SETTING_VAL_FIELD(type, name, def, doc) type name;
#define MP_SETTING_STR_FIELD(name, size, def, doc) char name[size];
    MP_SETTINGS(MP_SETTING_VAL_FIELD, MP_SETTING_STR_FIELD)
#undef MP_SETTING_VAL_FIELD
#undef MP_SETTING_STR_FIELD
} mp_settings;

void mp_settings_init(mp_settings *s);

/* The fields by name, in MP_SETTINGS order, for code that has only the
 * name (the Cython bridge): where each lives and how to store into it. */
typedef enum mp_setting_kind {
    MP_SETTING_INT,      /* signed integer of `size` bytes */
    MP_SETTING_UINT,     /* unsigned integer of `size` bytes */
    MP_SETTING_FLOAT,    /* float or double, by `size` */
    MP_SETTING_BOOL,
    MP_SETTING_STR,      /* char[size], NUL-terminated */
} mp_setting_kind;

typedef struct mp_setting_desc {
    const char *name;
    mp_setting_kind kind;
    size_t offset;
    size_t size;
    const char *doc;
} mp_setting_desc;

extern const mp_setting_desc mp_setting_descs[];
extern const int mp_setting_count;

#endif
