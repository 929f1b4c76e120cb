# The C engine's API, declared once (uvloop keeps its libuv declarations the
# same way); every function may run without the GIL.
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "settings.h" nogil:
    # Opaque here: its fields are reached through mp_setting_descs, so a new
    # setting is declared only in settings.h (MP_SETTINGS).
    ctypedef struct mp_settings:
        pass

    ctypedef enum mp_setting_kind:
        MP_SETTING_INT
        MP_SETTING_UINT
        MP_SETTING_FLOAT
        MP_SETTING_BOOL
        MP_SETTING_STR

    ctypedef struct mp_setting_desc:
        const char *name
        mp_setting_kind kind
        size_t offset
        size_t size
        const char *doc

    const mp_setting_desc mp_setting_descs[]
    const int mp_setting_count

    void mp_settings_init(mp_settings *s)


cdef extern from "stats.h" nogil:
    ctypedef struct mp_thread_stats:
        pass
    ctypedef struct mp_own_total:
        const char *name
        const char *help
    const mp_own_total mp_own_totals[]


cdef extern from "store/store.h" nogil:
    ctypedef struct mp_store:
        pass
    enum: MP_MAX_SHARDS
    int mp_store_lock_stats(const mp_store *st, uint64_t *acquires, uint64_t *waits, int max)


cdef extern from "engine.h" nogil:
    ctypedef struct mp_engine:
        mp_store *store
        int nchannels
        int control_fd
        int curr_conns

    mp_engine *mp_engine_create(const mp_settings *settings, char *err, size_t errlen)
    mp_engine *mp_engine_create_tls(const mp_settings *settings, void *tls_ctx, char *err,
                                    size_t errlen)
    void mp_engine_destroy(mp_engine *eng)
    int mp_engine_add_listener(mp_engine *eng, int ch, int fd, int is_unix, int tls)
    int mp_engine_add_udp(mp_engine *eng, int ch, int fd)
    int mp_channel_run(mp_engine *eng, int ch)
    void mp_engine_stop(mp_engine *eng)
    int mp_engine_reload_auth(mp_engine *eng, char *err, size_t errlen)
    const char *const mp_thread_stat_names[]
    int mp_engine_channel_counters(mp_engine *eng, int ch, uint64_t *out, int max)
    int MP_TURN_HIST_BUCKETS
    int mp_engine_channel_turn_hist(mp_engine *eng, int ch, uint64_t *out)
    int mp_engine_channel_latency(mp_engine *eng, int ch, uint64_t *hist, uint64_t *sum_ns)
    int mp_engine_channel_conns(mp_engine *eng, int ch)
    enum: MP_CHANNEL_BUFFER_KINDS
    const char *const mp_channel_buffer_names[]
    int mp_engine_channel_buffers(mp_engine *eng, int ch, uint64_t *out)


cdef extern from "proto/commands.h" nogil:
    const char *mp_command_name(int cmd)


cdef extern from "io/tls.h" nogil:
    bint mp_tls_built()
    int mp_tls_check(const mp_settings *s, char *err, size_t errlen)
    void *mp_tls_prepare(const mp_settings *s, char *err, size_t errlen)
    void mp_tls_prepared_free(void *ctx)


cdef extern from "latency.h" nogil:
    int MP_LAT_BUCKETS
    int MP_LAT_COMMANDS


cdef extern from "engine.h" nogil:
    # Composes "stats <group>" into a malloc'd, NUL-free byte string; the
    # caller frees it.  NULL for an unknown group.
    char *mp_stats_text(mp_engine *eng, const char *group, size_t glen, size_t *outlen)
