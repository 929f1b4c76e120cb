/* The memcached text and meta protocols: a parser that does no I/O
 * (mp_parse_line) and the executor that applies parsed requests to the store
 * and writes replies into the connection's output (mp_process).
 *
 * Contract with the I/O layer (channel.c):
 *   - the I/O layer appends received bytes at c->rbuf[c->rend] and calls
 *     mp_process(c, budget) whenever new input arrived or a previous call
 *     returned MP_PROC_YIELD;
 *   - mp_process consumes input by advancing c->rstart and appends replies
 *     with the mp_out_* helpers of conn.h;
 *   - before reading more, the I/O layer may compact rbuf (move
 *     [rstart, rend) to offset 0) and grows it when a line does not fit (a
 *     long multi-get line);
 *   - a request whose reply passes MP_OUT_HIGHWATER stops in the middle (a
 *     multi-get) and yields with its line still unconsumed; the next call
 *     parses the line again and goes on where it stopped (proto.resume).
 */
#ifndef MP_PROTO_H
#define MP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"

struct mp_conn;
struct mp_item;

/* Lines longer than this without a newline close the connection, unless the
 * line is a get/gets (memcached 1.6.18's try_read_command_ascii). */
#define MP_LINE_MAX 2048
/* Tokens kept per parse; longer lines (multi-get) are walked incrementally.
 * memcached's MAX_TOKENS: it keeps MAX_TOKENS - 1 words and a terminal token,
 * and the words it keeps decide "noreply" and the HTTP check, so we keep the
 * same number. */
#define MP_MAX_TOKENS 24
#define MP_LINE_TOKENS (MP_MAX_TOKENS - 1)
/* An over-long line is still a multi-get if "get "/"gets " starts within
 * this many leading spaces (memcached's limit). */
#define MP_LINE_MAX_LEADING_SPACES 100

typedef struct mp_token {
    uint32_t off;    /* offset from the start of the line */
    uint32_t len;
} mp_token;

typedef struct mp_request {
    int cmd;                     /* index into the command table, -1 unknown */
    int ntokens;                 /* tokens stored in tok[] */
    bool more_tokens;            /* words follow the MP_LINE_TOKENS kept */
    const char *line;            /* start of the line in the buffer */
    uint32_t line_len;           /* without the "\n" and one "\r" before it;
                                    a NUL ends the line early, as in memcached */
    uint32_t rest;               /* more_tokens: offset where the unread words start */
    mp_token tok[MP_MAX_TOKENS];
} mp_request;

/* Result of the pure parser over buf[0, len). */
typedef enum {
    MP_PARSE_OK = 0,         /* a full line: *req filled, *consumed = bytes incl. "\n" */
    MP_PARSE_NEED_MORE,      /* no complete line yet */
    MP_PARSE_TOO_LONG,       /* over MP_LINE_MAX without newline, not a get: close */
} mp_parse_status;

mp_parse_status mp_parse_line(const char *buf, size_t len, mp_request *req, size_t *consumed);

/* Walks the words of line[0, len) from *pos (spaces separate; runs collapse).
 * Returns false at the end of the line. */
bool mp_next_token(const char *line, size_t len, size_t *pos, mp_token *tok);

/* memcached's safe_strtoul / safe_strtol / safe_strtoull over a token that
 * is not NUL-terminated, with the same acceptance rules (C strto* grammar:
 * leading isspace, a sign, decimal digits, then the end or an isspace byte;
 * a '-' on a value that is negative as signed is refused; the 32-bit ones
 * truncate like the originals' assignments do). */
bool mp_parse_u32(const char *p, size_t len, uint32_t *out);
bool mp_parse_i32(const char *p, size_t len, int32_t *out);
bool mp_parse_u64(const char *p, size_t len, uint64_t *out);

/* ---- the meta commands' flags (mg ms md ma) ----
 * memcached 1.6.18's _meta_flag_preparse as a pure function: every word
 * after the key (after ms's length) is a flag whose first byte names it and
 * whose other bytes are its token.  The table in parser.c lists the flags
 * 1.6.18 knows (for every meta command alike, as memcached does): a byte it
 * does not know is refused at once, as is a repeated one or any byte >= 127;
 * a number that does not parse or a key that does not decode is remembered
 * (the last one wins) and parsing goes on. */

/* memcached refuses a meta line of 20 words or more (its MFLAG_MAX_OPT_LENGTH
 * counts the tokenizer's terminal token), before looking at the flags. */
#define MP_META_MAX_WORDS 19
/* memcached's MFLAG_MAX_OPAQUE_LENGTH, the O token included */
#define MP_META_OPAQUE_MAX 32

typedef struct mp_meta {
    uint64_t seen[2];        /* flags present: bit (byte & 63) of word (byte >> 6) */
    const char *key;         /* the key: its word, or the caller's buffer after b */
    uint32_t nkey;
    bool key_binary;         /* b */
    char mode;               /* M's byte, 0 if absent */
    int32_t ttl;             /* T */
    int32_t vivify_ttl;      /* N */
    int32_t recache_ttl;     /* R */
    uint32_t client_flags;   /* F */
    uint64_t cas;            /* C */
    uint64_t delta;          /* D, 1 if absent */
    uint64_t initial;        /* J, 0 if absent */
} mp_meta;

static inline bool mp_meta_has(const mp_meta *m, unsigned char flag)
{
    return flag < 128 && (m->seen[flag >> 6] >> (flag & 63)) & 1;
}

/* Parses the flags of r from word `first` on; the key is word 1.  keybuf
 * (MP_KEY_MAX_LENGTH bytes) receives the decoded key when b is given.
 * Returns MP_META_ERR_NONE or the error memcached answers (replies.h). */
int mp_meta_parse(const mp_request *r, int first, char *keybuf, mp_meta *m);

/* The reply text of a meta error number (without "\r\n"). */
const char *mp_meta_error_text(int err);

/* memcached's base64 (RFC 1341 alphabet).  Decoding skips bytes outside the
 * alphabet, wants a non-zero multiple of four of the others and stops after
 * the first padded quantum; it returns the decoded length, 0 when the input
 * is refused (out must hold len * 3 / 4 bytes).  Encoding pads with '=' and
 * returns the encoded length (out must hold MP_BASE64_LEN(len) bytes). */
#define MP_BASE64_LEN(n) (((n) + 2) / 3 * 4)
size_t mp_base64_decode(const char *src, size_t len, char *out);
size_t mp_base64_encode(const char *src, size_t len, char *out);

/* Parser/executor state kept in each connection between calls. */
typedef enum {
    MP_PS_LINE = 0,          /* expecting a command line */
    MP_PS_NREAD,             /* copying a data block into a pending item */
    MP_PS_SWALLOW,           /* discarding a data block (too large) */
    MP_PS_AUTH,              /* the data block of a set before authentication (-Y) */
} mp_proto_phase;

typedef struct mp_proto {
    uint8_t phase;           /* mp_proto_phase */
    uint8_t op;              /* pending storage op */
    bool noreply;
    bool seen_cmd;           /* a command was parsed ("stats conns" state) */
    bool log_negotiated;     /* -vv: "Client using the ascii protocol" said */
    uint8_t log_state;       /* -vvv: the state last logged (log.h) */
    bool yielded;            /* the last mp_process returned MP_PROC_YIELD */
    bool authenticated;      /* may run commands: -Y is off, or the client
                                sent credentials (false until the first
                                line tells which) */
    uint8_t reply_kind;      /* what to answer once the data block completes */
    uint64_t resume;         /* >0: the request at rstart stopped with its
                                reply half built; where to go on (a multi-get:
                                the offset of its next key in the line; stats
                                conns: the next connection, plus one) */
    bool discard;            /* the stopped request's reply will be culled:
                                run the rest for its effects, compose nothing */
    uint32_t flush_mark;     /* output pending (from wstart) when this batch
                                began: replies after it are "unsent" */
    uint32_t flush_mark_refs;   /* output references queued by then */
    struct mp_item *item;    /* MP_PS_NREAD: the pending item */
    uint64_t hv;
    uint64_t cas_in;
    uint32_t left;           /* bytes of the data block still to come */
    uint32_t filled;         /* bytes already copied into the item */
    const char *meta_err;    /* RK_META_ERROR: an ms error, answered after its block */
    /* a pending ms (meta set): what its reply echoes */
    bool meta;               /* the pending data block is an ms's */
    bool meta_quiet;         /* q: an HD reply is not sent */
    uint8_t meta_opts;       /* MP_STORE_* options (ms I, ms b) */
    char meta_echo[4];       /* 'O' 'k' 'c' in request order, NUL-terminated */
    uint8_t opaque_len;
    char opaque[MP_META_OPAQUE_MAX];   /* the O token, "O" included */
} mp_proto;

/* mp_process results */
#define MP_PROC_NEED_INPUT 0   /* everything buffered is consumed or incomplete */
#define MP_PROC_YIELD      1   /* budget spent or output high-water mark: call again later */
#define MP_PROC_CLOSE      2   /* close the connection (after flushing if close_after_write) */

/* budget is memcached's -R (reqs_per_event) and counts as memcached's nreqs
 * does: a call that starts on fresh input runs at most budget + 1 requests,
 * one that resumes after MP_PROC_YIELD at most budget.  Where memcached
 * transmits (yield, end of input, after a get, mn) decides which replies a
 * later error may cull, so the count is part of the wire behaviour. */
int mp_process(struct mp_conn *c, int budget);

/* Called when a connection closes with protocol state pending (drops a
 * pending item). */
void mp_proto_reset(struct mp_conn *c);

#endif
