/* The protocol's parser: a pure function over a byte buffer (lines, words,
 * numbers, and the meta commands' flags).
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
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "commands.h"
#include "decimal.h"
#include "parser.h"
#include "replies.h"
#include "settings.h"

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

/* memcached's safe_strto*: a number, then the end or white space. */
static bool scan_decimal(const char *p, size_t len, bool *neg, uint64_t *mag, bool *range)
{
    size_t end = mp_scan_decimal(p, len, neg, mag, range);
    return end != 0 && (end == len || mp_isspace((unsigned char)p[end]));
}

bool mp_parse_u32(const char *p, size_t len, uint32_t *out)
{
    /* safe_strtoul is strtoul into an unsigned long, then an assignment
     * that truncates: safe_strtoull's rules on 64 bits */
    uint64_t l;
    bool ok = mp_parse_u64(p, len, &l);
    *out = (uint32_t)l;
    return ok;
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
    uint64_t l = neg ? (uint64_t)0 - mag : mag;     /* strtoull negates */
    if ((int64_t)l < 0 && neg)
        return false;
    *out = l;
    return true;
}

/* ---- meta flags ---- */

/* How a flag's token is read.  Every letter memcached 1.6.18's flag parser
 * knows is here, for every meta command: like memcached, mg accepts (and
 * ignores) ms's F and ma's D, and so on. */
enum {
    MF_UNKNOWN = 0,  /* CLIENT_ERROR invalid flag */
    MF_PLAIN,        /* no token, or one the executor reads (O) or ignores (P L) */
    MF_BASE64,       /* b: the key is base64 */
    MF_I32,          /* N T R: memcached's safe_strtol */
    MF_U32,          /* F: safe_strtoul */
    MF_U64,          /* C J D: safe_strtoull */
    MF_MODE,         /* M: exactly one byte */
};

#define MF_FIELD(f) ((uint8_t)offsetof(mp_meta, f))

static const struct {
    uint8_t kind;
    uint8_t err;       /* the error a token that does not parse gives */
    uint8_t field;     /* where the number goes */
} meta_flags[128] = {
    ['b'] = {MF_BASE64, MP_META_ERR_DECODE_KEY, 0},
    ['N'] = {MF_I32, MP_META_ERR_BAD_TOKEN, MF_FIELD(vivify_ttl)},
    ['T'] = {MF_I32, MP_META_ERR_BAD_TOKEN, MF_FIELD(ttl)},
    ['R'] = {MF_I32, MP_META_ERR_BAD_TOKEN, MF_FIELD(recache_ttl)},
    /* memcached sets no text for a bad F: the last one set stays, or the
     * command's default (bad command line format) */
    ['F'] = {MF_U32, MP_META_ERR_NONE, MF_FIELD(client_flags)},
    ['C'] = {MF_U64, MP_META_ERR_BAD_TOKEN, MF_FIELD(cas)},
    ['J'] = {MF_U64, MP_META_ERR_BAD_INITIAL, MF_FIELD(initial)},
    ['D'] = {MF_U64, MP_META_ERR_BAD_DELTA, MF_FIELD(delta)},
    ['M'] = {MF_MODE, MP_META_ERR_M_LENGTH, 0},
    ['O'] = {MF_PLAIN, 0, 0}, ['P'] = {MF_PLAIN, 0, 0}, ['L'] = {MF_PLAIN, 0, 0},
    ['k'] = {MF_PLAIN, 0, 0}, ['s'] = {MF_PLAIN, 0, 0}, ['t'] = {MF_PLAIN, 0, 0},
    ['c'] = {MF_PLAIN, 0, 0}, ['f'] = {MF_PLAIN, 0, 0}, ['v'] = {MF_PLAIN, 0, 0},
    ['h'] = {MF_PLAIN, 0, 0}, ['l'] = {MF_PLAIN, 0, 0}, ['u'] = {MF_PLAIN, 0, 0},
    ['q'] = {MF_PLAIN, 0, 0}, ['I'] = {MF_PLAIN, 0, 0},
};

static const char *const meta_error_texts[MP_META_ERR_COUNT] = {
#define MP_META_ERR_TEXT(id, text) [MP_META_ERR_##id] = text,
    MP_META_ERRORS(MP_META_ERR_TEXT)
#undef MP_META_ERR_TEXT
};

const char *mp_meta_error_text(int err)
{
    if (err < 0 || err >= MP_META_ERR_COUNT)
        return NULL;
    return meta_error_texts[err];
}

int mp_meta_parse(const mp_request *r, int first, char *keybuf, mp_meta *m)
{
    memset(m, 0, sizeof(*m));
    m->delta = 1;
    m->key = r->line + r->tok[1].off;
    m->nkey = r->tok[1].len;
    int err = MP_META_ERR_NONE;
    bool failed = false;
    for (int i = first; i < r->ntokens; i++) {
        const char *w = r->line + r->tok[i].off;
        size_t n = r->tok[i].len;
        unsigned char f = (unsigned char)w[0];
        /* memcached's seen[] has 127 entries: DEL and high bytes count as
         * seen already */
        if (f >= 127 || mp_meta_has(m, f))
            return MP_META_ERR_DUPLICATE_FLAG;
        m->seen[f >> 6] |= (uint64_t)1 << (f & 63);
        void *field = (char *)m + meta_flags[f].field;
        bool ok = true;
        switch (meta_flags[f].kind) {
        case MF_UNKNOWN:
            return MP_META_ERR_INVALID_FLAG;
        case MF_PLAIN:
            break;
        case MF_BASE64: {
            /* decoded bytes are fewer than encoded ones; a key longer than
             * the executor lets through cannot be decoded into keybuf */
            size_t dn = m->nkey <= MP_KEY_MAX_LENGTH ? mp_base64_decode(m->key, m->nkey, keybuf) : 0;
            m->key = keybuf;
            m->nkey = (uint32_t)dn;
            m->key_binary = true;
            ok = dn > 0;
            break;
        }
        case MF_I32:
            ok = mp_parse_i32(w + 1, n - 1, (int32_t *)field);
            break;
        case MF_U32:
            ok = mp_parse_u32(w + 1, n - 1, (uint32_t *)field);
            break;
        case MF_U64:
            ok = mp_parse_u64(w + 1, n - 1, (uint64_t *)field);
            break;
        case MF_MODE:
            ok = n == 2;
            if (ok)
                m->mode = w[1];
            break;
        }
        if (!ok) {
            failed = true;
            if (meta_flags[f].err != MP_META_ERR_NONE)
                err = meta_flags[f].err;
        }
    }
    if (failed && err == MP_META_ERR_NONE)
        err = MP_META_ERR_BAD_FORMAT;
    return err;
}

/* ---- base64, with memcached's acceptance rules ---- */

static const char b64_alphabet[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* the value of an alphabet byte, 0 for the pad '=', -1 for others */
static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    if (ch == '=')
        return 0;
    return -1;
}

size_t mp_base64_decode(const char *src, size_t len, char *out)
{
    size_t count = 0;
    for (size_t i = 0; i < len; i++)
        if (b64_value((unsigned char)src[i]) >= 0)
            count++;
    if (count == 0 || count % 4 != 0)
        return 0;
    unsigned char block[4];
    size_t pos = 0, n = 0;
    int pad = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)src[i]);
        if (v < 0)
            continue;
        if (src[i] == '=')
            pad++;
        block[n++] = (unsigned char)v;
        if (n < 4)
            continue;
        out[pos++] = (char)((block[0] << 2) | (block[1] >> 4));
        out[pos++] = (char)((block[1] << 4) | (block[2] >> 2));
        out[pos++] = (char)((block[2] << 6) | block[3]);
        n = 0;
        if (pad > 0) {
            /* the first padded quantum ends the input */
            if (pad > 2)
                return 0;
            pos -= (size_t)pad;
            break;
        }
    }
    return pos;
}

size_t mp_base64_encode(const char *src, size_t len, char *out)
{
    const unsigned char *in = (const unsigned char *)src;
    size_t pos = 0, i = 0;
    for (; len - i >= 3; i += 3) {
        out[pos++] = b64_alphabet[in[i] >> 2];
        out[pos++] = b64_alphabet[((in[i] & 0x03) << 4) | (in[i + 1] >> 4)];
        out[pos++] = b64_alphabet[((in[i + 1] & 0x0f) << 2) | (in[i + 2] >> 6)];
        out[pos++] = b64_alphabet[in[i + 2] & 0x3f];
    }
    if (i < len) {
        out[pos++] = b64_alphabet[in[i] >> 2];
        if (len - i == 1) {
            out[pos++] = b64_alphabet[(in[i] & 0x03) << 4];
            out[pos++] = '=';
        } else {
            out[pos++] = b64_alphabet[((in[i] & 0x03) << 4) | (in[i + 1] >> 4)];
            out[pos++] = b64_alphabet[(in[i + 1] & 0x0f) << 2];
        }
        out[pos++] = '=';
    }
    return pos;
}
