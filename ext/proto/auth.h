/* ASCII authentication (-Y <file>): memcached 1.6.18's password file
 * (authfile.c) and the check of a client's credentials against it.  The
 * protocol's side, what a connection may send before it authenticates, is
 * executor.c's (auth_line, auth_block).
 *
 * The file is read once per engine (mp_engine_create) and again on SIGHUP
 * (mp_engine_reload_auth), never while a request is served: a table is
 * immutable once published, and a reload publishes a new one. */
#ifndef MP_AUTH_H
#define MP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* memcached's MAX_ENTRIES ("Not supposed to be a huge database!"): lines
 * after the eighth entry are not read at all, malformed or not */
#define MP_AUTH_ENTRIES 8
/* memcached's MAX_ENTRY_LEN: each line is read with fgets into this much,
 * so a longer line is cut, and what is cut off ends the file */
#define MP_AUTH_LINE 256

typedef struct mp_auth_entry {
    uint16_t ulen, plen;
    char user[MP_AUTH_LINE];
    char pass[MP_AUTH_LINE];
} mp_auth_entry;

typedef struct mp_auth {
    int n;
    mp_auth_entry e[MP_AUTH_ENTRIES];
    /* the table this one replaced (SIGHUP): a channel may still be reading
     * it, so it lives as long as the engine; a reload is rare and a table
     * is 4 KiB */
    struct mp_auth *retired;
} mp_auth;

/* Reads the file at path as memcached's authfile_load does.  Returns a
 * malloc'd table (possibly empty: an empty file, or a directory, loads no
 * entry and starts, as in memcached), or NULL with memcached's start-up
 * message in err ("Could not open authfile [...]...", "Authfile [...] has
 * a malformed entry. Should be 'user:password'"). */
mp_auth *mp_auth_load(const char *path, char *err, size_t errlen);

/* The parse itself, over an open stream whose size (st_size: fgets' limits
 * follow from it) is given.  Returns 0, or -1 for a malformed entry (a
 * line without ':'), which loads nothing. */
int mp_auth_read(FILE *f, long long size, mp_auth *out);

/* Do user and pass name an entry?  Every entry is looked at and every byte
 * of an entry of the same lengths compared, whatever matches: the time
 * tells the lengths, as memcached's does, not the contents. */
bool mp_auth_check(const mp_auth *a, const char *user, size_t ulen, const char *pass,
                   size_t plen);

/* SASL's PLAIN (-S) against memcached's pwdb file ($MEMCACHED_SASL_PWDB),
 * as its sasl_server_userdb_checkpass reads it: the file again at every
 * check (a change takes effect at once, a missing file fails every user),
 * "user:password" lines read with fgets into MP_AUTH_LINE bytes, a
 * password ending at ':', '\n', '\r' or NUL, and a user and password
 * longer than MP_AUTH_LINE - 4 together refused.  Every line is compared,
 * in time that tells the lengths, not the contents.  Blocking file I/O on
 * the caller's thread, as in memcached: once per authentication. */
bool mp_sasl_pwdb_check(const char *path, const char *user, size_t ulen, const char *pass,
                        size_t plen);

/* Frees a table and every table it retired. */
void mp_auth_free(mp_auth *a);

#endif
