/* TLS (-Z) with OpenSSL over the channel's buffers: see tls.h for the path
 * of the bytes.  memcached's tls.c is the model for the context (the same
 * options, messages and defaults); what differs is where the records go:
 * memcached gives OpenSSL the socket, here OpenSSL sees only a BIO of ours
 * that reads the ciphertext a backend received and writes records into the
 * connection's output. */
#define _GNU_SOURCE
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "channel.h"
#include "conn.h"
#include "engine.h"

#ifndef MP_HAVE_TLS

bool mp_tls_built(void) { return false; }

int mp_tls_check(const mp_settings *s, char *err, size_t errlen)
{
    (void)s;
    snprintf(err, errlen, "This server is not built with TLS support.");
    return -1;
}

void *mp_tls_prepare(const mp_settings *s, char *err, size_t errlen)
{
    mp_tls_check(s, err, errlen);
    return NULL;
}

void mp_tls_prepared_free(void *ctx) { (void)ctx; }

int mp_tls_server_create(mp_engine *eng, void *prepared, char *err, size_t errlen)
{
    (void)prepared;
    return eng->settings.ssl_enabled ? mp_tls_check(&eng->settings, err, errlen) : 0;
}

void mp_tls_server_free(mp_engine *eng) { (void)eng; }

int mp_tls_refresh(mp_engine *eng, char *err, size_t errlen)
{
    (void)eng;
    snprintf(err, errlen, "Error TLS not enabled\r\n");
    return -1;
}

mp_rel_time mp_tls_refreshed(const mp_engine *eng) { (void)eng; return 0; }
const char *mp_tls_features(const mp_engine *eng) { (void)eng; return ""; }

mp_tls *mp_tls_open(mp_channel *ch, mp_conn *c)
{
    (void)ch;
    (void)c;
    static mp_tls none;
    return &none;
}

void mp_tls_free(mp_tls *t) { (void)t; }

int mp_tls_feed(mp_channel *ch, mp_conn *c, const char *data, size_t n)
{
    (void)ch, (void)c, (void)data, (void)n;
    return MP_TLS_FAIL;
}

bool mp_tls_seal(mp_channel *ch, mp_conn *c, uint32_t sealed)
{
    (void)ch, (void)c, (void)sealed;
    return false;
}

bool mp_tls_hold(mp_channel *ch, mp_conn *c, const char *data, size_t n)
{
    (void)ch, (void)c, (void)data, (void)n;
    return false;
}

#else /* MP_HAVE_TLS */

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "store/store.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

/* memcached's, so a session cached by one is scoped as by the other */
#define SESSION_ID_CONTEXT "memcached"

/* The engine's side: the context new connections get, swapped whole by
 * refresh_certs.  The lock covers taking the context for SSL_new and the
 * swap (memcached's SSL_LOCK): SSL_new takes its own reference, so the old
 * context lives on, unlocked, as long as a connection made from it. */
typedef struct mp_tls_server {
    pthread_mutex_t lock;
    SSL_CTX *ctx;
    mp_rel_time refreshed;
    char features[64];
} mp_tls_server;

bool mp_tls_built(void) { return true; }

/* ---- the context ---- */

static void ssl_error_text(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    buf[0] = '\0';
    if (e != 0)
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
}

static int verify_mask(int mode)
{
    switch (mode) {
    case 1: return SSL_VERIFY_PEER;
    case 2: return SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    case 3: return SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE;
    default: return SSL_VERIFY_NONE;
    }
}

static int min_version(int v)
{
    switch (v) {
    case 0: return TLS1_VERSION;
    case 1: return TLS1_1_VERSION;
    case 3: return TLS1_3_VERSION;
    default: return TLS1_2_VERSION;
    }
}

/* A file not given: memcached passes NULL to OpenSSL, whose fopen(NULL)
 * fails with EFAULT on glibc; NULL is no file name to fopen (undefined, and
 * AddressSanitizer's fopen faults on it), so the same error is raised here
 * without the call and the message stays memcached's.  glibc prints the
 * name as "(null)". */
static int no_file(void)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    ERR_raise(ERR_LIB_SYS, EFAULT);
#else
    ERR_put_error(ERR_LIB_SYS, SYS_F_FOPEN, EFAULT, __FILE__, __LINE__);
#endif
    return 0;
}

static int use_chain_file(SSL_CTX *ctx, const char *path)
{
    return path[0] ? SSL_CTX_use_certificate_chain_file(ctx, path) : no_file();
}

static int use_key_file(SSL_CTX *ctx, const char *path, int type)
{
    return path[0] ? SSL_CTX_use_PrivateKey_file(ctx, path, type) : no_file();
}

static const char *shown(const char *s)
{
    return s[0] ? s : "(null)";
}

/* memcached's load_server_certificates, into a context of its own: the
 * same checks in the same order and the same messages, ending "\r\n" as
 * refresh_certs answers them. */
static bool load_certificates(SSL_CTX *ctx, const mp_settings *s, char *err, size_t errlen)
{
    char why[256];
    if (!use_chain_file(ctx, s->ssl_chain_cert)) {
        ssl_error_text(why, sizeof(why));
        snprintf(err, errlen, "Error loading the certificate chain: %s : %s\r\n",
                 shown(s->ssl_chain_cert), why);
        return false;
    }
    if (!use_key_file(ctx, s->ssl_key, s->ssl_keyformat)) {
        ssl_error_text(why, sizeof(why));
        snprintf(err, errlen, "Error loading the key: %s : %s\r\n", shown(s->ssl_key), why);
        return false;
    }
    if (!SSL_CTX_check_private_key(ctx)) {
        ssl_error_text(why, sizeof(why));
        snprintf(err, errlen, "Error validating the certificate: %s\r\n", why);
        return false;
    }
    if (s->ssl_ca_cert[0]) {
        if (!SSL_CTX_load_verify_locations(ctx, s->ssl_ca_cert, NULL)) {
            ssl_error_text(why, sizeof(why));
            snprintf(err, errlen, "Error loading the CA certificate: %s : %s\r\n",
                     s->ssl_ca_cert, why);
            return false;
        }
        SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(s->ssl_ca_cert));
    }
    return true;
}

static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)sess;
    mp_tls *t = SSL_get_app_data(ssl);
    if (t != NULL && t->c != NULL && t->c->ch != NULL)
        t->c->ch->stats.ssl_new_sessions++;
    return 0;   /* the cache keeps its own reference */
}

/* memcached's ssl_init: a NULL context with err set when it refuses. */
static SSL_CTX *make_ctx(const mp_settings *s, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "Error creating the TLS context");
        ERR_clear_error();
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, min_version(s->ssl_min_version));
    if (!load_certificates(ctx, s, err, errlen))
        goto fail;
    SSL_CTX_set_verify(ctx, verify_mask(s->ssl_verify_mode), NULL);
    if (s->ssl_ciphers[0] && !SSL_CTX_set_cipher_list(ctx, s->ssl_ciphers)) {
        snprintf(err, errlen, "Error setting the provided cipher(s): %s\n", s->ssl_ciphers);
        goto fail;
    }
    if (s->ssl_session_cache) {
        SSL_CTX_sess_set_new_cb(ctx, new_session);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SESSION_ID_CONTEXT,
                                       strlen(SESSION_ID_CONTEXT));
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    /* an idle connection gives OpenSSL's record buffers back */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

int mp_tls_check(const mp_settings *s, char *err, size_t errlen)
{
    SSL_CTX *ctx = make_ctx(s, err, errlen);
    if (ctx == NULL)
        return -1;
    SSL_CTX_free(ctx);
    return 0;
}

void *mp_tls_prepare(const mp_settings *s, char *err, size_t errlen)
{
    return make_ctx(s, err, errlen);
}

void mp_tls_prepared_free(void *ctx)
{
    SSL_CTX_free(ctx);
}

/* Can the kernel take over the record layer (the "tls" upper-layer
 * protocol)?  Asked once, of a throwaway loopback connection: 0, or the
 * errno (ENOENT: no tls module). */
static int ktls_probe(void)
{
    int rc = EOPNOTSUPP;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int a = -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) < 0 ||
        connect(c, (struct sockaddr *)&sa, sizeof(sa)) < 0 || (a = accept(l, NULL, NULL)) < 0) {
        rc = errno;
    } else {
        rc = setsockopt(a, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) == 0 ? 0 : errno;
    }
    if (a >= 0)
        close(a);
    if (c >= 0)
        close(c);
    if (l >= 0)
        close(l);
    return rc;
}

int mp_tls_server_create(mp_engine *eng, void *prepared, char *err, size_t errlen)
{
    if (!eng->settings.ssl_enabled)
        return 0;
    mp_tls_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (prepared != NULL && SSL_CTX_up_ref(prepared))
        srv->ctx = prepared;
    else
        srv->ctx = make_ctx(&eng->settings, err, errlen);
    if (srv->ctx == NULL) {
        free(srv);
        return -1;
    }
    pthread_mutex_init(&srv->lock, NULL);
    /* The records stay in user space either way: handing them to the kernel
     * needs the session's keys, which OpenSSL gives only to a socket BIO of
     * its own (SSL_OP_ENABLE_KTLS), and OpenSSL never sees our sockets.
     * Where the kernel has the tls module, that hand-off is the next step. */
    if (eng->settings.ssl_kernel_tls) {
        int why = ktls_probe();
        if (why == 0)
            snprintf(srv->features, sizeof(srv->features), ",tls,ktls_available_not_used");
        else
            snprintf(srv->features, sizeof(srv->features), ",tls,ktls_unavailable:%s",
                     why == ENOENT ? "no_tls_ulp" : strerror(why));
    } else {
        snprintf(srv->features, sizeof(srv->features), ",tls");
    }
    eng->tls = srv;
    return 0;
}

void mp_tls_server_free(mp_engine *eng)
{
    mp_tls_server *srv = eng->tls;
    if (srv == NULL)
        return;
    SSL_CTX_free(srv->ctx);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
    eng->tls = NULL;
}

int mp_tls_refresh(mp_engine *eng, char *err, size_t errlen)
{
    mp_tls_server *srv = eng->tls;
    if (srv == NULL) {
        snprintf(err, errlen, "Error TLS not enabled\r\n");
        return -1;
    }
    /* loaded into a new context: a file that fails leaves the one in use
     * whole (memcached loads into its live context and can be left with
     * the new chain and the old key) */
    SSL_CTX *ctx = make_ctx(&eng->settings, err, errlen);
    if (ctx == NULL)
        return -1;
    pthread_mutex_lock(&srv->lock);
    SSL_CTX *old = srv->ctx;
    srv->ctx = ctx;
    __atomic_store_n(&srv->refreshed, mp_current_time, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&srv->lock);
    SSL_CTX_free(old);
    return 0;
}

mp_rel_time mp_tls_refreshed(const mp_engine *eng)
{
    return eng->tls != NULL ? __atomic_load_n(&eng->tls->refreshed, __ATOMIC_RELAXED) : 0;
}

const char *mp_tls_features(const mp_engine *eng)
{
    return eng->tls != NULL ? eng->tls->features : "";
}

/* ---- the BIO: ciphertext in from the backend's buffer, out to c's ---- */

static int bio_write(BIO *b, const char *data, int len)
{
    mp_tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (t->sink != NULL) {
        if (t->sink_size - t->sink_len < (uint32_t)len) {
            /* more than the estimate (post-handshake messages): grow */
            mp_channel *ch = t->c->ch;
            uint32_t size;
            char *nb = mp_buf_get(ch, (size_t)t->sink_len + (size_t)len, &size, MP_BUF_OUT);
            if (nb == NULL)
                return -1;
            memcpy(nb, t->sink, t->sink_len);
            mp_buf_put(ch, t->sink, t->sink_size, MP_BUF_OUT);
            t->sink = nb;
            t->sink_size = size;
        }
        memcpy(t->sink + t->sink_len, data, (size_t)len);
        t->sink_len += (uint32_t)len;
        return len;
    }
    /* outside sealing the output holds only ciphertext: append */
    char *dst = mp_out_reserve(t->c, (size_t)len);
    if (dst == NULL)
        return -1;
    memcpy(dst, data, (size_t)len);
    mp_out_commit(t->c, (size_t)len);
    return len;
}

static int bio_read(BIO *b, char *out, int len)
{
    mp_tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->in_len == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t k = (size_t)len < t->in_len ? (size_t)len : t->in_len;
    memcpy(out, t->in, k);
    t->in += k;
    t->in_len -= k;
    return (int)k;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    /* OpenSSL flushes after each flight: what we write is already queued */
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mpcache");
    if (m == NULL)
        return;
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    bio_method = m;
}

/* ---- a connection ---- */

mp_tls *mp_tls_open(mp_channel *ch, mp_conn *c)
{
    static mp_tls broken;   /* ssl NULL: the first input closes */
    mp_tls_server *srv = ch->eng->tls;
    pthread_once(&bio_once, bio_method_init);
    mp_tls *t = calloc(1, sizeof(*t));
    if (t == NULL || srv == NULL || bio_method == NULL)
        goto fail;
    t->c = c;
    t->handshaking = true;
    t->started = mp_current_time;
    pthread_mutex_lock(&srv->lock);
    SSL *ssl = SSL_new(srv->ctx);
    pthread_mutex_unlock(&srv->lock);
    BIO *bio = ssl != NULL ? BIO_new(bio_method) : NULL;
    if (bio == NULL) {
        SSL_free(ssl);
        goto fail;
    }
    BIO_set_data(bio, t);
    SSL_set_bio(ssl, bio, bio);   /* one BIO, both sides: freed with ssl */
    SSL_set_accept_state(ssl);
    SSL_set_app_data(ssl, t);
    t->ssl = ssl;
    return t;
fail:
    ERR_clear_error();
    free(t);
    ch->stats.malloc_fails++;
    return &broken;
}

void mp_tls_free(mp_tls *t)
{
    if (t == NULL || t->ssl == NULL)
        return;
    SSL_free(t->ssl);
    if (t->held != NULL)
        mp_buf_put(t->c->ch, t->held, t->held_size, MP_BUF_IN);
    if (t->sink != NULL)
        mp_buf_put(t->c->ch, t->sink, t->sink_size, MP_BUF_OUT);
    free(t);
}

bool mp_tls_hold(mp_channel *ch, mp_conn *c, const char *data, size_t n)
{
    mp_tls *t = c->tls;
    if (t->ssl == NULL || (size_t)t->held_len + n > MP_TLS_HELD_MAX)
        return false;
    if (t->held_size - t->held_len < n) {
        uint32_t size;
        char *nb = mp_buf_get(ch, (size_t)t->held_len + n, &size, MP_BUF_IN);
        if (nb == NULL)
            return false;
        if (t->held != NULL) {
            memcpy(nb, t->held, t->held_len);
            mp_buf_put(ch, t->held, t->held_size, MP_BUF_IN);
        }
        t->held = nb;
        t->held_size = size;
    }
    memcpy(t->held + t->held_len, data, n);
    t->held_len += (uint32_t)n;
    return true;
}

int mp_tls_feed(mp_channel *ch, mp_conn *c, const char *data, size_t n)
{
    mp_tls *t = c->tls;
    SSL *ssl = t->ssl;
    if (ssl == NULL)
        return MP_TLS_FAIL;
    t->in = data;
    t->in_len = n;
    int r = MP_TLS_DATA;
    if (t->handshaking) {
        int rc = SSL_do_handshake(ssl);
        if (rc != 1) {
            if (SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ) {
                r = MP_TLS_AGAIN;
            } else {
                ch->stats.ssl_handshake_errors++;
                r = MP_TLS_FAIL;
            }
            goto out;
        }
        t->handshaking = false;
        ch->tls_handshakes--;
    }
    /* every record that arrived, decrypted into the connection's own input:
     * nothing stays inside OpenSSL but a partial record, so no event is
     * owed for plaintext the backend cannot see */
    for (;;) {
        if (!mp_conn_rbuf_room(ch, c, 1)) {
            r = MP_TLS_FAIL;
            break;
        }
        uint32_t room = c->rsize - c->rend;
        int k = SSL_read(ssl, c->rbuf + c->rend, room > INT32_MAX ? INT32_MAX : (int)room);
        if (k > 0) {
            c->rend += (uint32_t)k;
            continue;
        }
        /* anything but "needs more" ends the connection: a close_notify
         * (what came before it is still answered), an alert, a bad record */
        int e = SSL_get_error(ssl, k);
        if (e == SSL_ERROR_ZERO_RETURN)
            r = MP_TLS_CLOSED;
        else if (e != SSL_ERROR_WANT_READ)
            r = MP_TLS_FAIL;
        break;
    }
out:
    if (r == MP_TLS_FAIL)
        ERR_clear_error();
    t->in = NULL;
    t->in_len = 0;
    return r;
}

/* One SSL_write of p[0..len): len is at most ssl_wbuf_size, so a write is
 * ceil(len / 16 KiB) records. */
static bool write_plain(SSL *ssl, const char *p, size_t len)
{
    return SSL_write(ssl, p, (int)len) == (int)len;
}

/* The plaintext src[start, end) with the values of refs woven in, in
 * SSL_writes of up to ssl_wbuf_size: pieces (the output between referenced
 * values, the values) are gathered into the channel's stage as memcached's
 * ssl_sendmsg gathers its iovecs; a piece that fills a write alone, or the
 * last one, is written where it lies. */
static bool encrypt_output(mp_channel *ch, SSL *ssl, const char *src, uint32_t start,
                           uint32_t end, const mp_refs *refs)
{
    size_t wbuf = ch->eng->settings.ssl_wbuf_size;
    if (ch->tls_stage == NULL) {
        ch->tls_stage = malloc(wbuf);
        if (ch->tls_stage == NULL) {
            ch->stats.malloc_fails++;
            return false;
        }
    }
    struct iovec iov[2 * MP_OUT_REFS + 1];
    int niov = mp_out_iov(src, start, end, refs, iov);
    size_t staged = 0;
    for (int i = 0; i < niov; i++) {
        const char *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        while (len > 0) {
            size_t k;
            if (staged == 0 && (len >= wbuf || i == niov - 1)) {
                k = len < wbuf ? len : wbuf;
                if (!write_plain(ssl, p, k))
                    return false;
            } else {
                k = wbuf - staged < len ? wbuf - staged : len;
                memcpy(ch->tls_stage + staged, p, k);
                staged += k;
                if (staged == wbuf) {
                    if (!write_plain(ssl, ch->tls_stage, staged))
                        return false;
                    staged = 0;
                }
            }
            p += k;
            len -= k;
        }
    }
    return staged == 0 || write_plain(ssl, ch->tls_stage, staged);
}

bool mp_tls_seal(mp_channel *ch, mp_conn *c, uint32_t sealed)
{
    mp_tls *t = c->tls;
    SSL *ssl = t->ssl;
    uint32_t from = c->wstart + sealed;
    bool ok = true;
    if (from < c->wend || c->wrefs.n > 0) {
        /* The records cannot be written over the plaintext they come from:
         * whichever is smaller moves.  Usually nothing is queued ahead, and
         * the records go to a fresh buffer; while a long queue of records
         * waits (a send in flight), the plaintext moves aside and the records
         * go behind the queue, so a queue is never copied again and again. */
        uint32_t inbuf = c->wend - from;
        if (sealed > inbuf) {
            uint32_t size;
            char *moved = mp_buf_get(ch, inbuf, &size, MP_BUF_OUT);
            if (moved == NULL)
                return false;
            memcpy(moved, c->wbuf + from, inbuf);
            mp_refs refs = c->wrefs;
            for (uint32_t i = 0; i < refs.n; i++)
                refs.r[i].at -= from;
            c->wend = from;
            ok = encrypt_output(ch, ssl, moved, 0, inbuf, &refs);
            mp_buf_put(ch, moved, size, MP_BUF_OUT);
        } else {
            size_t plain = (size_t)inbuf + c->wrefs.bytes;
            size_t wbuf = ch->eng->settings.ssl_wbuf_size;
            size_t record = wbuf < MP_TLS_RECORD_MAX ? wbuf : MP_TLS_RECORD_MAX;
            /* a record per ssl_wbuf_size (or 16 KiB), and one more per piece
             * written where it lies */
            size_t est = sealed + plain +
                         (plain / record + 2 * MP_OUT_REFS + 2) * MP_TLS_RECORD_OVERHEAD;
            t->sink = mp_buf_get(ch, est, &t->sink_size, MP_BUF_OUT);
            if (t->sink == NULL)
                return false;
            memcpy(t->sink, c->wbuf + c->wstart, sealed);
            t->sink_len = sealed;
            ok = encrypt_output(ch, ssl, c->wbuf, from, c->wend, &c->wrefs);
            mp_buf_put(ch, c->wbuf, c->wsize, MP_BUF_OUT);
            c->wbuf = t->sink;
            c->wsize = t->sink_size;
            c->wstart = 0;
            c->wend = t->sink_len;
            t->sink = NULL;
            t->sink_size = t->sink_len = 0;
        }
        /* the values have been read: their items may go */
        mp_refs_release(ch->eng->store, &c->wrefs);
    }
    if (ok && c->state == MP_CONN_CLOSING && !t->shutdown_sent) {
        /* quit: close_notify goes out behind the last reply, as memcached's
         * SSL_shutdown at close sends it */
        t->shutdown_sent = true;
        SSL_shutdown(ssl);
    }
    if (!ok)
        ERR_clear_error();
    return ok;
}

#endif /* MP_HAVE_TLS */
