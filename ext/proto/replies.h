/* Every fixed reply of the protocol, memcached 1.6.18's exact bytes, defined
 * once.  The text commands' replies are used by executor.c and meta.c; the
 * meta commands' error replies are numbered (MP_META_ERRORS) because the
 * meta flag parser in parser.c, a pure function, reports them by number. */
#ifndef MP_REPLIES_H
#define MP_REPLIES_H

#define R_ERROR            "ERROR"
#define R_STORED           "STORED"
#define R_NOT_STORED       "NOT_STORED"
#define R_EXISTS           "EXISTS"
#define R_NOT_FOUND        "NOT_FOUND"
#define R_DELETED          "DELETED"
#define R_TOUCHED          "TOUCHED"
#define R_OKAY             "OK"    /* not R_OK: <unistd.h> has that name */
#define R_END              "END"
#define R_RESET            "RESET"
#define R_MN               "MN"
#define R_VERSION          "VERSION " MP_VERSION
#define R_BAD_FORMAT       "CLIENT_ERROR bad command line format"
#define R_DELETE_USAGE     "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
#define R_BAD_EXPTIME      "CLIENT_ERROR invalid exptime argument"
#define R_BAD_DELTA        "CLIENT_ERROR invalid numeric delta argument"
#define R_NON_NUMERIC      "CLIENT_ERROR cannot increment or decrement non-numeric value"
#define R_BAD_CHUNK        "CLIENT_ERROR bad data chunk"
#define R_FLUSH_DISABLED   "CLIENT_ERROR flush_all not allowed"
#define R_SHUTDOWN_MODE    "CLIENT_ERROR invalid shutdown mode"
#define R_SHUTDOWN_OFF     "ERROR: shutdown not enabled"
#define R_DETAIL_USAGE     "CLIENT_ERROR usage: stats detail on|off|dump"
#define R_TOO_LARGE        "SERVER_ERROR object too large for cache"
#define R_OOM_STORE        "SERVER_ERROR out of memory storing object"
#define R_OOM_GET          "SERVER_ERROR out of memory writing get response"
#define R_OOM              "SERVER_ERROR out of memory"
#define R_OOM_STATS        "SERVER_ERROR out of memory writing stats"
#define R_MEMLIMIT_SMALL   "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m"
#define R_MEMLIMIT_UNITS   "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes"
#define R_DUMP_OFF         "CLIENT_ERROR stats cachedump not allowed"
#define R_METADUMP_OFF     "ERROR metadump not allowed"
#define R_METADUMP_PIPE    "ERROR cannot pipeline other commands before metadump"
#define R_BAD_CMDLINE      "CLIENT_ERROR bad command line"
#define R_ILLEGAL_SLAB     "CLIENT_ERROR Illegal slab id"
#define R_WATCH_OFF        "CLIENT_ERROR watch commands not allowed"
#define R_WATCH_PIPE       "ERROR cannot pipeline other commands before watch"
#define R_WATCH_TOO_MANY   "WATCHER_TOO_MANY log watcher limit reached"
#define R_WATCH_FAILED     "WATCHER_FAILED failed to add log watcher"
#define R_TLS_OFF          "Error TLS not enabled"
/* refresh_certs' other replies are memcached's messages naming the file and
 * OpenSSL's error (tls.c), at most this long: a path and two messages */
#define MP_TLS_REFRESH_ERR_MAX (4096 + 64 + 256)
#define R_CRAWLER_OFF      "CLIENT_ERROR lru crawler disabled"
#define R_CRAWLER_START    "ERROR failed to start lru crawler thread"
#define R_CRAWLER_SLEEP    "CLIENT_ERROR sleep must be one second or less"
#define R_CRAWLER_BADCLASS "BADCLASS invalid class id"
#define R_CRAWLER_NONE     "NOTSTARTED no items to crawl"
#define R_CRAWLER_ERROR    "ERROR an unknown error happened"
#define R_SLAB_SAME        "SAME src and dst class are identical"
#define R_SLAB_BADCLASS    "BADCLASS invalid src or dst class id"
#define R_SLAB_NOSPARE     "NOSPARE source class has no spare pages"
#define R_LRU_PCTS         "ERROR hot and warm pcts must not exceed 80"
#define R_LRU_FACTORS      "ERROR hot/warm age factors must be greater than 0"
/* a connection over -c, before it is closed (the backends send it) */
#define R_TOO_MANY_CONNS   "ERROR Too many open connections"

/* before authentication (-Y) */
#define R_UNAUTHENTICATED  "CLIENT_ERROR unauthenticated"
#define R_AUTH_TERMINATION "CLIENT_ERROR bad command line termination"
#define R_AUTH_FORMAT      "CLIENT_ERROR bad authentication token format"
#define R_AUTH_FAILURE     "CLIENT_ERROR authentication failure"

/* the binary protocol's error bodies (binary.c): memcached's
 * write_bin_error texts, and its out_of_memory messages without their
 * "SERVER_ERROR " */
#define RB_ENOMEM          "Out of memory"
#define RB_UNKNOWN_COMMAND "Unknown command"
#define RB_KEY_ENOENT      "Not found"
#define RB_EINVAL          "Invalid arguments"
#define RB_KEY_EEXISTS     "Data exists for key."
#define RB_E2BIG           "Too large."
#define RB_DELTA_BADVAL    "Non-numeric server-side value for incr or decr"
#define RB_NOT_STORED      "Not stored."
#define RB_AUTH_ERROR      "Auth failure."
#define RB_OOM_ALLOC       "Out of memory allocating item"
#define RB_OOM_INCR        "Out of memory incrementing value"
#define RB_OOM_NEW_ITEM    "Out of memory allocating new item"
#define RB_OOM_STATS       "Out of memory generating stats"
#define RB_AUTHENTICATED   "Authenticated"

/* meta commands (mg ms md ma me; mn answers R_MN) */
#define R_HD               "HD"
#define R_VA               "VA"
#define R_EN               "EN"
#define R_NF               "NF"
#define R_NS               "NS"
#define R_EX               "EX"
#define R_ME               "ME"

/* The meta commands' errors by number: id, text.  memcached 1.6.18 reports
 * a flag it does not know, a repeated flag, a flag number it cannot read
 * and a key it cannot decode with the first six (from its flag parser,
 * _meta_flag_preparse, where a refused F number keeps the command's default
 * text); md and ma answer every one of those with INVALID_OR_DUP instead. */
#define MP_META_ERRORS(X)                                                     \
    X(NONE,            "")                                                    \
    X(DUPLICATE_FLAG,  "CLIENT_ERROR duplicate flag")                         \
    X(INVALID_FLAG,    "CLIENT_ERROR invalid flag")                           \
    X(BAD_TOKEN,       "CLIENT_ERROR bad token in command line format")       \
    X(BAD_FORMAT,      R_BAD_FORMAT)                                          \
    X(DECODE_KEY,      "CLIENT_ERROR error decoding key")                     \
    X(M_LENGTH,        "CLIENT_ERROR incorrect length for M token")           \
    X(BAD_INITIAL,     "CLIENT_ERROR invalid numeric initial value")          \
    X(BAD_DELTA,       "CLIENT_ERROR invalid numeric delta value")            \
    X(INVALID_OR_DUP,  "CLIENT_ERROR invalid or duplicate flag")              \
    X(MG_TOO_LONG,     "CLIENT_ERROR options flags are too long")             \
    X(TOO_LONG,        "CLIENT_ERROR options flags too long")                 \
    X(OPAQUE_TOO_LONG, "CLIENT_ERROR opaque token too long")                  \
    X(MS_MODE,         "CLIENT_ERROR invalid mode for ms M token")            \
    X(MA_MODE,         "CLIENT_ERROR invalid mode for ma M token")            \
    X(MA_VIVIFY_OOM,   "SERVER_ERROR Out of memory allocating new item")

enum {
#define MP_META_ERR_ENUM(id, text) MP_META_ERR_##id,
    MP_META_ERRORS(MP_META_ERR_ENUM)
#undef MP_META_ERR_ENUM
    MP_META_ERR_COUNT
};

#endif
