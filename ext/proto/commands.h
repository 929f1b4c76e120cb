/* The command table of the text and meta protocols: one row per command word.
 *
 * The parser uses the names to classify a line; the executor uses the same
 * rows for dispatch and for the token-count check memcached 1.6.18 performs
 * before a handler runs (a wrong count is "ERROR", not CLIENT_ERROR).
 * Adding a command is one row here plus its handler cmd_<handler> in
 * executor.c (meta.c for the meta commands).
 *
 * Columns: id, word, handler, min tokens, max tokens.  Token counts include
 * the command word itself; -1 means unchecked.  They are memcached's
 * WANT_TOKENS numbers minus its terminal token. */
#ifndef MP_COMMANDS_H
#define MP_COMMANDS_H

#define MP_COMMANDS(X)                                   \
    X(GET,            "get",            get,        2, -1) \
    X(BGET,           "bget",           get,        2, -1) \
    X(GETS,           "gets",           gets,       2, -1) \
    X(GAT,            "gat",            gat,        2, -1) \
    X(GATS,           "gats",           gats,       2, -1) \
    X(SET,            "set",            set,        5,  6) \
    X(ADD,            "add",            add,        5,  6) \
    X(REPLACE,        "replace",        replace,    5,  6) \
    X(APPEND,         "append",         append,     5,  6) \
    X(PREPEND,        "prepend",        prepend,    5,  6) \
    X(CAS,            "cas",            cas,        6,  7) \
    X(TOUCH,          "touch",          touch,      3,  4) \
    X(DELETE,         "delete",         delete,     2,  4) \
    X(INCR,           "incr",           incr,       3,  4) \
    X(DECR,           "decr",           decr,       3,  4) \
    X(FLUSH_ALL,      "flush_all",      flush_all,  1,  3) \
    X(VERSION,        "version",        version,   -1, -1) \
    X(VERBOSITY,      "verbosity",      verbosity,  2,  3) \
    X(QUIT,           "quit",           quit,      -1, -1) \
    X(SHUTDOWN,       "shutdown",       shutdown,  -1, -1) \
    X(CACHE_MEMLIMIT, "cache_memlimit", memlimit,   2,  3) \
    X(STATS,          "stats",          stats,     -1, -1) \
    X(MN,             "mn",             mn,        -1, -1) \
    X(MG,             "mg",             mg,         2, -1) \
    X(MS,             "ms",             ms,         2, -1) \
    X(MD,             "md",             md,         2, -1) \
    X(MA,             "ma",             ma,         2, -1) \
    X(ME,             "me",             me,        -1, -1) \
    X(SLABS,          "slabs",          slabs,     -1, -1) \
    X(LRU,            "lru",            lru,        2, -1) \
    X(LRU_CRAWLER,    "lru_crawler",    lru_crawler, -1, -1) \
    X(WATCH,          "watch",          watch,     -1, -1) \
    X(REFRESH_CERTS,  "refresh_certs",  refresh_certs, -1, -1)

enum {
#define MP_CMD_ENUM(id, word, handler, lo, hi) MP_CMD_##id,
    MP_COMMANDS(MP_CMD_ENUM)
#undef MP_CMD_ENUM
    MP_CMD_COUNT
};

/* The word of command `cmd` (an MP_CMD_* value), or NULL. */
const char *mp_command_name(int cmd);

#endif
