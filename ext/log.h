/* -vv and -vvv: memcached's lines on stderr (memcached.c, proto_text.c and
 * items.c under settings.verbose), written by the channel threads in C: the
 * channels never call into Python.
 *
 *   -vv  (MP_LOG_CONN)   listeners, connections opened and closed, the
 *                        protocol negotiated, each command line and each
 *                        reply memcached logs (its out_string's), a get's
 *                        hits ("sending key") and END, idle kicks
 *   -vvv (MP_LOG_STATE)  adds the lookups ("> FOUND KEY", "> NOT FOUND")
 *                        and the connection's state changes, in memcached's
 *                        state names; mpcache's connection has fewer states
 *                        than memcached's machine, so fewer changes show
 *
 * A connection is numbered as in "stats conns" (mp_conn_number): its
 * descriptor on epoll, 2^24 * (channel + 1) + its index on io_uring.
 *
 * Cheap when off: a caller tests mp_log_on(env, level), one predictable
 * branch on a field of its env (env->verbose, kept by the verbosity hook),
 * before calling anything here.  Keys and command lines are data: they are
 * copied byte by byte into the line, never used as a format.  Each line is
 * one write(2) (writev for a line longer than the buffer), so lines of
 * several channels never mix; a full pipe blocks the channel, as
 * memcached's fprintf blocks its worker. */
#ifndef MP_LOG_H
#define MP_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/proto_env.h"

#define MP_LOG_CONN  2
#define MP_LOG_STATE 3

struct mp_conn;

static inline bool mp_log_on(const mp_proto_env *env, int level)
{
    return __builtin_expect(env->verbose >= level, 0);
}

/* "<N <line>": a command line as the parser found it, its "\n" and (in a
 * line of two bytes or more) the "\r" before it cut, and cut at a NUL, as
 * memcached prints the C string it made of the line. */
void mp_log_command(const struct mp_conn *c, const char *line, size_t len);
/* ">N <reply>" or ">N NOREPLY <reply>": a reply without its "\r\n". */
void mp_log_reply(const struct mp_conn *c, const char *text, size_t len, bool noreply);
/* ">N sending key <key>" */
void mp_log_sending_key(const struct mp_conn *c, const char *key, size_t nkey);
/* "> FOUND KEY <key>", "> NOT FOUND <key>", with " -nuked by expire" or
 * " -nuked by flush" (why: MP_MISS_*, store.h) */
void mp_log_lookup(const struct mp_conn *c, const char *key, size_t nkey, int why);
/* "<N new auto-negotiating client connection", or with -B ascii / -Y
 * "<N new ascii client connection." */
void mp_log_opened(const struct mp_conn *c, const mp_settings *s);
/* "N: Client using the ascii protocol" (auto-negotiation, first input) */
void mp_log_negotiated(const struct mp_conn *c, bool binary);
/* The binary protocol's -vv lines (memcached's proto_bin.c):
 * "<N Read binary protocol data:" and its 24 bytes, four a line
 * ("<N    0x80 0x01 0x00 0x01"), or with read false ">N Writing bin
 * response:" and ">N   0x81 ..." */
void mp_log_bin_header(const struct mp_conn *c, bool read, const char *hdr);
/* A line of text around data: with dir '<' or '>' after "<N", else alone
 * ("Deleting <key>", "incr ...") */
void mp_log_text(const struct mp_conn *c, char dir, const char *head, const char *data,
                 size_t dlen, const char *tail);
/* "<N connection closed." */
void mp_log_closed(const struct mp_conn *c);
/* "Closing idle fd N" */
void mp_log_idle(const struct mp_conn *c);
/* "<fd server listening (auto-negotiate)" or "(ascii)" */
void mp_log_listening(int fd, const mp_settings *s);
/* "<N send buffer was X, now Y" */
void mp_log_udp_sndbuf(int fd, int was, int now);
/* "<N server listening (udp)" */
void mp_log_listening_udp(int fd);
/* "slab class   1: chunk size        96 perslab   10922" */
void mp_log_slab_class(int id, unsigned chunk_size, unsigned perslab);

/* memcached's connection states, as "stats conns" and -vvv name them */
typedef enum {
    MP_LS_NEW_CMD = 0, MP_LS_PARSE_CMD, MP_LS_NREAD, MP_LS_SWALLOW, MP_LS_MWRITE,
    MP_LS_CLOSING,
} mp_log_state;
extern const char *const mp_log_state_names[];

/* -vvv: "N: going from <state> to <state>" when the state changes
 * (c->proto.log_state keeps the last one). */
void mp_log_state_to(struct mp_conn *c, mp_log_state to);

#endif
