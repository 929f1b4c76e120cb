/* The text protocol's parser: a pure function over a byte buffer.
 *
 * No I/O, no store, no allocation: a request is the offsets of its words in
 * the caller's buffer (memcached's tokenizer, without writing NULs into the
 * buffer, so the same bytes can be parsed again after a partial read).
 *
 * The rules are memcached 1.6.18's try_read_command_ascii and
 * tokenize_command, byte for byte:
 *   - a line ends at "\n"; one "\r" before it is dropped, but only when the
 *     line has at least one other byte ("\r\n" alone is the command "\r");
 *   - a NUL ends the line early (memcached runs strlen over it) while the
 *     whole line up to "\n" is consumed;
 *   - only ' ' separates words; runs collapse; every other byte (tab, \r,
 *     bytes >= 0x80) is part of a word;
 *   - more than MP_LINE_MAX bytes without "\n" is fatal unless the line is a
 *     multi-get ("get " or "gets " after at most 100 spaces).
 */
#include <stdint.h>
#include <string.h>

#include "commands.h"
#include "proto.h"

static const struct {
    const char *word;
    uint8_t len;
} command_words[MP_CMD_COUNT] = {
#define MP_CMD_WORD(id, word, handler, lo, hi) [MP_CMD_##id] = {word, sizeof(word) - 1},
    MP_COMMANDS(MP_CMD_WORD)
#undef MP_CMD_WORD
};

const char *mp_command_name(int cmd)
{
    if (cmd < 0 || cmd >= MP_CMD_COUNT)
        return NULL;
    return command_words[cmd].word;
}

static int lookup_command(const char *w, size_t len)
{
    /* a couple of dozen words: a scan that rejects on length first is as
     * fast as a hash here and keeps the table the only source of names */
    for (int i = 0; i < MP_CMD_COUNT; i++) {
        if (command_words[i].len == len && memcmp(command_words[i].word, w, len) == 0)
            return i;
    }
    return -1;
}

static bool is_multiget_start(const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len && buf[i] == ' ')
        i++;
    if (i > MP_LINE_MAX_LEADING_SPACES)
        return false;
    size_t left = len - i;
    return (left >= 4 && memcmp(buf + i, "get ", 4) == 0) ||
           (left >= 5 && memcmp(buf + i, "gets ", 5) == 0);
}

bool mp_next_token(const char *line, size_t len, size_t *pos, mp_token *tok)
{
    size_t i = *pos;
    while (i < len && line[i] == ' ')
        i++;
    if (i >= len) {
        *pos = len;
        return false;
    }
    const char *sp = memchr(line + i, ' ', len - i);
    size_t end = sp ? (size_t)(sp - line) : len;
    tok->off = (uint32_t)i;
    tok->len = (uint32_t)(end - i);
    *pos = end;
    return true;
}

mp_parse_status mp_parse_line(const char *buf, size_t len, mp_request *req, size_t *consumed)
{
    const char *nl = memchr(buf, '\n', len);
    if (nl == NULL) {
        if (len > MP_LINE_MAX && !is_multiget_start(buf, len))
            return MP_PARSE_TOO_LONG;
        return MP_PARSE_NEED_MORE;
    }
    size_t el = (size_t)(nl - buf);
    *consumed = el + 1;
    if (el > 1 && buf[el - 1] == '\r')
        el--;
    const char *nul = memchr(buf, '\0', el);
    if (nul != NULL)
        el = (size_t)(nul - buf);

    req->line = buf;
    req->line_len = (uint32_t)el;
    req->ntokens = 0;
    req->more_tokens = false;
    req->rest = (uint32_t)el;
    req->cmd = -1;

    size_t pos = 0;
    mp_token t;
    while (req->ntokens < MP_LINE_TOKENS && mp_next_token(buf, el, &pos, &t))
        req->tok[req->ntokens++] = t;
    if (req->ntokens == MP_LINE_TOKENS) {
        /* memcached stops after the space that ends the last kept word; any
         * byte left after it (even only spaces) makes the terminal token
         * non-NULL, which only a multi-get looks at */
        size_t after = pos < el ? pos + 1 : el;
        req->more_tokens = after < el;
        req->rest = (uint32_t)after;
    }
    if (req->ntokens > 0)
        req->cmd = lookup_command(buf + req->tok[0].off, req->tok[0].len);
    return MP_PARSE_OK;
}

/* ---- numbers: the C library's strto* grammar, on a counted token ---- */

static inline bool c_isspace(unsigned char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

/* Scans [space][sign]digits and checks what follows the digits as
 * memcached's safe_strto* do.  *mag saturates on overflow (*range set). */
static bool scan_decimal(const char *p, size_t len, bool *neg, uint64_t *mag, bool *range)
{
    size_t i = 0;
    while (i < len && c_isspace((unsigned char)p[i]))
        i++;
    *neg = false;
    if (i < len && (p[i] == '+' || p[i] == '-')) {
        *neg = p[i] == '-';
        i++;
    }
    size_t digits = i;
    uint64_t v = 0;
    *range = false;
    while (i < len && p[i] >= '0' && p[i] <= '9') {
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            *range = true;
        else
            v = v * 10 + d;
        i++;
    }
    if (i == digits)
        return false;        /* strto* sets endptr = str: not a number */
    *mag = v;
    return i == len || c_isspace((unsigned char)p[i]);
}

bool mp_parse_u32(const char *p, size_t len, uint32_t *out)
{
    bool neg, range;
    uint64_t mag;
    *out = 0;
    if (!scan_decimal(p, len, &neg, &mag, &range) || range)
        return false;
    uint64_t l = neg ? (uint64_t)0 - mag : mag;     /* strtoul negates */
    if ((int64_t)l < 0 && neg)
        return false;
    *out = (uint32_t)l;
    return true;
}

bool mp_parse_i32(const char *p, size_t len, int32_t *out)
{
    bool neg, range;
    uint64_t mag;
    *out = 0;
    if (!scan_decimal(p, len, &neg, &mag, &range) || range)
        return false;
    if (neg ? mag > (uint64_t)INT64_MAX + 1 : mag > (uint64_t)INT64_MAX)
        return false;                               /* strtol's ERANGE */
    int64_t l = neg ? (int64_t)((uint64_t)0 - mag) : (int64_t)mag;
    *out = (int32_t)l;
    return true;
}

bool mp_parse_u64(const char *p, size_t len, uint64_t *out)
{
    bool neg, range;
    uint64_t mag;
    *out = 0;
    if (!scan_decimal(p, len, &neg, &mag, &range) || range)
        return false;
    uint64_t l = neg ? (uint64_t)0 - mag : mag;
    if ((int64_t)l < 0 && neg)
        return false;
    *out = l;
    return true;
}
