/* -vv / -vvv lines in memcached's format on stderr: see log.h. */
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "decimal.h"
#include "io/conn.h"
#include "log.h"
#include "store/store.h"

/* A line is built here, on the calling thread's stack: a command line of
 * a few keys fits; a longer one (a multi-get of many keys) goes out with
 * writev, still as one call. */
#define MP_LOG_BUF 1024

/* The line's head: a few dozen bytes ("<" or ">" and a number, or a fixed
 * text), then its data (copied, never a format), then a tail. */
typedef struct line_head {
    char b[96];
    size_t n;
} line_head;

static void head_lit(line_head *h, const char *s)
{
    size_t n = strlen(s);
    memcpy(h->b + h->n, s, n);
    h->n += n;
}

static void head_num(line_head *h, unsigned long long v)
{
    h->n = (size_t)(u64_to_dec(h->b + h->n, v) - h->b);
}

/* "<N " or ">N " */
static void head_conn(line_head *h, char dir, const mp_conn *c)
{
    h->n = 0;
    if (dir != 0)
        h->b[h->n++] = dir;
    head_num(h, mp_conn_number(c));
}

static void emit(const line_head *h, const char *data, size_t dlen, const char *tail)
{
    size_t tlen = tail != NULL ? strlen(tail) : 0;
    char buf[MP_LOG_BUF];
    size_t n = h->n + dlen + tlen + 1;
    ssize_t w;
    if (n <= sizeof(buf)) {
        memcpy(buf, h->b, h->n);
        if (dlen > 0)
            memcpy(buf + h->n, data, dlen);
        if (tlen > 0)
            memcpy(buf + h->n + dlen, tail, tlen);
        buf[n - 1] = '\n';
        w = write(STDERR_FILENO, buf, n);
    } else {
        struct iovec iov[4] = {
            {(void *)h->b, h->n}, {(void *)data, dlen}, {(void *)tail, tlen}, {"\n", 1},
        };
        w = writev(STDERR_FILENO, iov, 4);
    }
    (void)w;   /* nowhere to report a failure to log */
}

void mp_log_command(const mp_conn *c, const char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\n')
        len--;
    /* memcached's try_read_command_ascii: "\r" goes only when the line has
     * two bytes or more before its "\n" */
    if (len > 1 && line[len - 1] == '\r')
        len--;
    const char *nul = memchr(line, '\0', len);
    if (nul != NULL)
        len = (size_t)(nul - line);
    line_head h;
    head_conn(&h, '<', c);
    h.b[h.n++] = ' ';
    emit(&h, line, len, NULL);
}

void mp_log_reply(const mp_conn *c, const char *text, size_t len, bool noreply)
{
    if (len >= 2 && text[len - 2] == '\r' && text[len - 1] == '\n')
        len -= 2;
    line_head h;
    head_conn(&h, '>', c);
    head_lit(&h, noreply ? " NOREPLY " : " ");
    emit(&h, text, len, NULL);
}

void mp_log_sending_key(const mp_conn *c, const char *key, size_t nkey)
{
    line_head h;
    head_conn(&h, '>', c);
    head_lit(&h, " sending key ");
    emit(&h, key, nkey, NULL);
}

void mp_log_lookup(const mp_conn *c, const char *key, size_t nkey, int why)
{
    (void)c;
    line_head h = {.n = 0};
    head_lit(&h, why == MP_MISS_ABSENT ? "> NOT FOUND " : "> FOUND KEY ");
    emit(&h, key, nkey, why == MP_MISS_EXPIRED   ? " -nuked by expire"
                        : why == MP_MISS_FLUSHED ? " -nuked by flush"
                                                 : NULL);
}

void mp_log_opened(const mp_conn *c, const mp_settings *s)
{
    line_head h;
    head_conn(&h, '<', c);
    emit(&h, NULL, 0, s->binding_ascii    ? " new ascii client connection."
                      : s->binding_binary ? " new binary client connection."
                                          : " new auto-negotiating client connection");
}

void mp_log_bin_header(const mp_conn *c, bool read, const char *hdr)
{
    static const char hex[] = "0123456789abcdef";
    line_head h;
    head_conn(&h, read ? '<' : '>', c);
    emit(&h, NULL, 0, read ? " Read binary protocol data:" : " Writing bin response:");
    for (int i = 0; i < 24; i += 4) {
        head_conn(&h, read ? '<' : '>', c);
        head_lit(&h, read ? "   " : "  ");
        for (int j = i; j < i + 4; j++) {
            unsigned char b = (unsigned char)hdr[j];
            head_lit(&h, " 0x");
            h.b[h.n++] = hex[b >> 4];
            h.b[h.n++] = hex[b & 15];
        }
        emit(&h, NULL, 0, NULL);
    }
}

void mp_log_text(const mp_conn *c, char dir, const char *head, const char *data, size_t dlen,
                 const char *tail)
{
    line_head h = {.n = 0};
    if (dir != 0)
        head_conn(&h, dir, c);
    head_lit(&h, head);
    emit(&h, data, dlen, tail);
}

void mp_log_negotiated(const mp_conn *c, bool binary)
{
    line_head h;
    head_conn(&h, 0, c);
    emit(&h, NULL, 0, binary ? ": Client using the binary protocol"
                             : ": Client using the ascii protocol");
}

void mp_log_closed(const mp_conn *c)
{
    line_head h;
    head_conn(&h, '<', c);
    emit(&h, NULL, 0, " connection closed.");
}

void mp_log_idle(const mp_conn *c)
{
    line_head h = {.n = 0};
    head_lit(&h, "Closing idle fd ");
    head_num(&h, mp_conn_number(c));
    emit(&h, NULL, 0, NULL);
}

void mp_log_listening(int fd, const mp_settings *s)
{
    line_head h = {.n = 0};
    h.b[h.n++] = '<';
    head_num(&h, (unsigned long long)fd);
    emit(&h, NULL, 0, s->binding_ascii    ? " server listening (ascii)"
                      : s->binding_binary ? " server listening (binary)"
                                          : " server listening (auto-negotiate)");
}

void mp_log_udp_sndbuf(int fd, int was, int now)
{
    line_head h = {.n = 0};
    h.b[h.n++] = '<';
    head_num(&h, (unsigned long long)fd);
    head_lit(&h, " send buffer was ");
    head_num(&h, (unsigned long long)(unsigned)was);
    head_lit(&h, ", now ");
    head_num(&h, (unsigned long long)(unsigned)now);
    emit(&h, NULL, 0, NULL);
}

void mp_log_listening_udp(int fd)
{
    line_head h = {.n = 0};
    h.b[h.n++] = '<';
    head_num(&h, (unsigned long long)fd);
    emit(&h, NULL, 0, " server listening (udp)");
}

/* memcached's "%3d" and "%9u" / "%7u": right-aligned in a field */
static void head_padded(line_head *h, unsigned long long v, int width)
{
    char digits[20];
    int n = (int)(u64_to_dec(digits, v) - digits);
    for (int i = n; i < width; i++)
        h->b[h->n++] = ' ';
    memcpy(h->b + h->n, digits, (size_t)n);
    h->n += (size_t)n;
}

void mp_log_slab_class(int id, unsigned chunk_size, unsigned perslab)
{
    line_head h = {.n = 0};
    head_lit(&h, "slab class ");
    head_padded(&h, (unsigned)id, 3);
    head_lit(&h, ": chunk size ");
    head_padded(&h, chunk_size, 9);
    head_lit(&h, " perslab ");
    head_padded(&h, perslab, 7);
    emit(&h, NULL, 0, NULL);
}

const char *const mp_log_state_names[] = {
    [MP_LS_NEW_CMD] = "conn_new_cmd", [MP_LS_PARSE_CMD] = "conn_parse_cmd",
    [MP_LS_NREAD] = "conn_nread",     [MP_LS_SWALLOW] = "conn_swallow",
    [MP_LS_MWRITE] = "conn_mwrite",   [MP_LS_CLOSING] = "conn_closing",
};

void mp_log_state_to(mp_conn *c, mp_log_state to)
{
    mp_log_state from = (mp_log_state)c->proto.log_state;
    if (from == to)
        return;
    c->proto.log_state = (uint8_t)to;
    line_head h;
    head_conn(&h, 0, c);
    head_lit(&h, ": going from ");
    const char *f = mp_log_state_names[from], *t = mp_log_state_names[to];
    char mid[64];
    size_t fl = strlen(f), tl = strlen(t);
    memcpy(mid, f, fl);
    memcpy(mid + fl, " to ", 4);
    memcpy(mid + fl + 4, t, tl);
    emit(&h, mid, fl + 4 + tl, NULL);
}
