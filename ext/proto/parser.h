/* The parser of the memcached text and meta protocols: it finds a line and
 * its words in a buffer and does no I/O (h11's rule); the executor
 * (executor.c, meta.c) applies what it parsed. */
#ifndef MP_PARSER_H
#define MP_PARSER_H

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

/* ---- the binary protocol (binary.c) ---- */

/* A request's fixed header, 24 bytes, then extlen bytes of extras, keylen
 * of key and the value: bodylen covers the three. */
#define MP_BIN_HEADER 24
#define MP_BIN_REQ_MAGIC 0x80
#define MP_BIN_RES_MAGIC 0x81

typedef struct mp_bin_request {
    uint8_t opcode;
    uint8_t extlen;
    uint16_t keylen;
    uint32_t bodylen;
    uint32_t opaque;         /* network order: echoed as received */
    uint64_t cas;
    const char *ext;         /* extlen bytes */
    const char *key;         /* keylen bytes */
} mp_bin_request;

typedef enum {
    MP_BIN_PARSE_OK = 0,     /* header, extras and key are whole; *consumed
                                is their length (the value follows) */
    MP_BIN_PARSE_NEED_MORE,
    MP_BIN_PARSE_BAD_MAGIC,  /* memcached closes at once, answering nothing */
} mp_bin_parse_status;

/* The pure parser of the binary protocol over buf[0, len): memcached reads
 * the header once 24 bytes are in, then waits for the extras and key. */
mp_bin_parse_status mp_bin_parse(const char *buf, size_t len, mp_bin_request *req,
                                 size_t *consumed);

#endif
