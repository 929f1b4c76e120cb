/* TLS (-Z): OpenSSL driven from the channel's own buffers.
 *
 * OpenSSL never touches a socket here.  Each TLS connection's SSL object
 * has one BIO of ours on both sides (tls.c, "the BIO"): its read side hands
 * OpenSSL the ciphertext the backend received (the epoll scratch buffer or
 * an io_uring provided buffer, in place), its write side appends records to
 * the connection's output buffer, which the backend sends as it sends any
 * output.  So the backends know nothing of TLS, and batching (one send per
 * connection per turn, one io_uring_enter per turn) stays what it is.
 *
 *   backend -> ciphertext (borrowed) -> mp_tls_feed: handshake, SSL_read
 *              -> plaintext in c->rbuf (the connection's own) -> protocol
 *   protocol -> plaintext in c->wbuf (+ values by reference)
 *              -> mp_tls_seal: SSL_write per ssl_wbuf_size -> ciphertext in
 *              c->wbuf -> backend's flush
 *
 * Outside mp_conn_run a TLS connection's output holds only ciphertext: the
 * channel seals what the protocol wrote before every flush (channel.c).
 *
 * Compiled with MP_HAVE_TLS (setup.py finds OpenSSL's headers); without it
 * these are stubs and -Z is refused. */
#ifndef MP_TLS_H
#define MP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "settings.h"

struct mp_channel;
struct mp_conn;
struct mp_engine;

/* A connection still in its handshake this many seconds after it was
 * accepted is closed and counted in ssl_handshake_errors: memcached has no
 * such bound (a stalled client holds its connection until idle_timeout, if
 * any); a client that opens TLS and says nothing should not hold a slot. */
#define MP_TLS_HANDSHAKE_TIMEOUT 5
/* Handshake steps a channel runs per loop turn.  The server's first flight
 * costs a signature (about a millisecond with RSA-2048): a burst of new
 * clients waits its turn, a few per turn, while the established ones are
 * served in every turn. */
#define MP_TLS_HANDSHAKES_PER_TURN 8
/* Ciphertext a connection may send before its handshake is done (it waits
 * in a buffer while the turn's handshakes are used up): a ClientHello with
 * every extension is a few KiB, a client certificate chain tens of KiB. */
#define MP_TLS_HELD_MAX (128u * 1024)
/* What a record adds to its plaintext at most (header, explicit IV, MAC or
 * tag, padding), for sizing the output before sealing. */
#define MP_TLS_RECORD_OVERHEAD 128
/* OpenSSL's maximum plaintext per record. */
#define MP_TLS_RECORD_MAX 16384

/* A connection's TLS state.  ssl is an SSL *, NULL when it could not be
 * made (the connection is then closed on its first input). */
typedef struct mp_tls {
    void *ssl;
    bool handshaking;
    bool shutdown_sent;
    mp_rel_time started;      /* accepted at, for MP_TLS_HANDSHAKE_TIMEOUT */
    /* ciphertext held back while the channel's handshakes per turn are used
     * up (an input buffer from the pool) */
    char *held;
    uint32_t held_size, held_len;
    /* the BIO's read side: ciphertext OpenSSL has not consumed yet */
    const char *in;
    size_t in_len;
    /* the BIO's write side while sealing: a fresh output buffer (records go
     * behind the ciphertext already queued); NULL: append to c->wbuf */
    char *sink;
    uint32_t sink_size, sink_len;
    struct mp_conn *c;
} mp_tls;

/* What mp_tls_feed made of the input. */
enum {
    MP_TLS_AGAIN,    /* handshake under way: nothing for the protocol */
    MP_TLS_DATA,     /* handshake done; plaintext (if any) behind c->rend */
    MP_TLS_FAIL,     /* close (after sending what c's output holds: an alert) */
    MP_TLS_CLOSED,   /* the client's close_notify, after the plaintext (if
                      * any) behind c->rend: answer it, then close */
};

/* Was the engine built with OpenSSL? */
bool mp_tls_built(void);

/* -Z: checks the settings as memcached's ssl_init does, making and
 * dropping a context (start-up refusals come before any socket is used).
 * 0, or -1 with memcached's message in err. */
int mp_tls_check(const mp_settings *s, char *err, size_t errlen);

/* A context made from the settings ahead of the engine (an SSL_CTX *): the
 * daemon makes it while it is still root, as memcached loads its key before
 * it drops privileges, and the engine takes it.  NULL with err as
 * mp_tls_check's. */
void *mp_tls_prepare(const mp_settings *s, char *err, size_t errlen);
void mp_tls_prepared_free(void *ctx);

/* The engine's context when -Z is given: `prepared` (the engine takes its
 * own reference), or one made now from the files (a refusal as
 * mp_tls_check's); freed with the engine. */
int mp_tls_server_create(struct mp_engine *eng, void *prepared, char *err, size_t errlen);
void mp_tls_server_free(struct mp_engine *eng);

/* "refresh_certs": a new context from the same files, swapped in for the
 * connections accepted from then on (established ones keep theirs).  0, or
 * -1 with memcached's reply in err ("...\r\n" included); the context in use
 * stays when the files cannot be loaded. */
int mp_tls_refresh(struct mp_engine *eng, char *err, size_t errlen);

/* For "stats": when the certificates were last loaded (0 until the first
 * refresh_certs: memcached's clock had not started at its first load), and
 * what "stats channels" adds to the backend's features. */
mp_rel_time mp_tls_refreshed(const struct mp_engine *eng);
const char *mp_tls_features(const struct mp_engine *eng);

/* A connection accepted on a TLS listener.  Never NULL: when no SSL object
 * can be made, a state whose first input closes the connection. */
mp_tls *mp_tls_open(struct mp_channel *ch, struct mp_conn *c);
void mp_tls_free(mp_tls *t);

/* n bytes of ciphertext (not kept past the call): the handshake, then
 * every record's plaintext appended to c's own rbuf.  Handshake records and
 * alerts are appended to c's output (ciphertext).  Counts
 * ssl_handshake_errors. */
int mp_tls_feed(struct mp_channel *ch, struct mp_conn *c, const char *data, size_t n);

/* Encrypts what the protocol wrote since the output held only ciphertext:
 * the plaintext from `sealed` bytes past wstart to wend, with the values
 * referenced in wrefs, in SSL_writes of up to ssl_wbuf_size (memcached's
 * record sizing).  After it the output is ciphertext only and holds no
 * references.  A connection that is closing (quit) gets its close_notify.
 * False: memory is exhausted, close. */
bool mp_tls_seal(struct mp_channel *ch, struct mp_conn *c, uint32_t sealed);

/* Ciphertext that waits for the next handshake turn; false when it passes
 * MP_TLS_HELD_MAX or memory is exhausted (close). */
bool mp_tls_hold(struct mp_channel *ch, struct mp_conn *c, const char *data, size_t n);

#endif
