/* memcached 1.6.18's password file (authfile.c), read the way it reads it:
 * fgets into a buffer of the file's size, at most MP_AUTH_LINE bytes at a
 * time, each line's end overwritten by the next line.  The quirks that come
 * with it are kept, since they decide which passwords work:
 *   - a password ends at '\n', '\r' or NUL; a user name at the first ':';
 *   - the first fgets may read one byte less than the file holds, so a
 *     one-line file without a final newline loses its last byte ("a:bc" is
 *     the password "b");
 *   - a line without ':' (an empty line too, a trailing one included) makes
 *     the whole file malformed; one cut at MP_AUTH_LINE ends the file;
 *   - an empty file, a directory or a file whose size reads 0 (/proc) load
 *     no entry and start: no client can authenticate. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "auth.h"

/* memcached's vperror formats into this much, then perror adds ": <errno's
 * text>" */
#define MP_AUTH_MSG_MAX 1024

static void vperror_like(char *err, size_t errlen, int e, const char *fmt, const char *path)
{
    char buf[MP_AUTH_MSG_MAX];
    snprintf(buf, sizeof(buf), fmt, path, strerror(e));
    snprintf(err, errlen, "%s: %s", buf, strerror(e));
}

int mp_auth_read(FILE *f, long long size, mp_auth *out)
{
    mp_auth a;
    a.n = 0;
    a.retired = NULL;
    /* memcached's auth_end - auth_cur: where fgets may write in its buffer */
    long long room = size;
    char line[MP_AUTH_LINE];
    for (;;) {
        int n = room < MP_AUTH_LINE ? (int)room : MP_AUTH_LINE;
        if (fgets(line, n, f) == NULL)
            break;
        int x;
        int ulen = -1;
        mp_auth_entry *e = &a.e[a.n];
        for (x = 0; x < MP_AUTH_LINE; x++) {
            if (ulen < 0) {
                if (line[x] == '\0')
                    break;
                if (line[x] == ':')
                    ulen = x;
            } else if (line[x] == '\n' || line[x] == '\r' || line[x] == '\0') {
                break;
            }
        }
        if (ulen < 0)
            return -1;
        e->ulen = (uint16_t)ulen;
        e->plen = (uint16_t)(x - (ulen + 1));
        memcpy(e->user, line, e->ulen);
        memcpy(e->pass, line + ulen + 1, e->plen);
        if (++a.n == MP_AUTH_ENTRIES)
            break;
        if (line[x] == '\0')
            break;
        /* the next line is read over this one's end of line */
        room -= x;
    }
    *out = a;
    return 0;
}

mp_auth *mp_auth_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        vperror_like(err, errlen, errno, "Could not open authfile [%s] for reading, error %s", path);
        return NULL;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        int e = errno;
        fclose(f);
        vperror_like(err, errlen, e, "Could not stat authfile [%s], error %s", path);
        return NULL;
    }
    mp_auth *a = malloc(sizeof(*a));
    if (a == NULL) {
        fclose(f);
        snprintf(err, errlen, "Out of memory reading password file: %s", path);
        return NULL;
    }
    int rc = mp_auth_read(f, (long long)sb.st_size, a);
    fclose(f);
    if (rc != 0) {
        free(a);
        snprintf(err, errlen, "Authfile [%s] has a malformed entry. Should be 'user:password'", path);
        return NULL;
    }
    return a;
}

/* memcached's safe_memcmp: no early exit */
static unsigned diff_bytes(const char *a, const char *b, size_t n)
{
    const volatile unsigned char *ua = (const volatile unsigned char *)a;
    const volatile unsigned char *ub = (const volatile unsigned char *)b;
    unsigned d = 0;
    for (size_t i = 0; i < n; i++)
        d |= ua[i] ^ ub[i];
    return d;
}

bool mp_auth_check(const mp_auth *a, const char *user, size_t ulen, const char *pass, size_t plen)
{
    unsigned found = 0;
    for (int i = 0; i < a->n; i++) {
        const mp_auth_entry *e = &a->e[i];
        if (ulen != e->ulen || plen != e->plen)
            continue;
        unsigned d = diff_bytes(user, e->user, ulen) | diff_bytes(pass, e->pass, plen);
        found |= d == 0;
    }
    return found != 0;
}

void mp_auth_free(mp_auth *a)
{
    while (a != NULL) {
        mp_auth *next = a->retired;
        free(a);
        a = next;
    }
}

/* memcached's safe_memcmp: every byte looked at, whatever differs */
static bool same_bytes(const char *a, const char *b, size_t n)
{
    const volatile unsigned char *ua = (const volatile unsigned char *)a;
    const volatile unsigned char *ub = (const volatile unsigned char *)b;
    int delta = 0;
    for (size_t i = 0; i < n; i++)
        delta |= ua[i] ^ ub[i];
    return delta == 0;
}

bool mp_sasl_pwdb_check(const char *path, const char *user, size_t ulen, const char *pass,
                        size_t plen)
{
    if (path == NULL || path[0] == '\0' || plen + ulen > MP_AUTH_LINE - 4)
        return false;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char line[MP_AUTH_LINE];
    bool ok = false;
    for (;;) {
        memset(line, 0, sizeof(line));
        if (fgets(line, sizeof(line), f) == NULL)
            break;
        /* within the zeroed line: ulen + 1 + plen < MP_AUTH_LINE */
        if (same_bytes(user, line, ulen) && line[ulen] == ':' &&
            same_bytes(pass, line + ulen + 1, plen)) {
            char end = line[ulen + 1 + plen];
            if (end == ':' || end == '\n' || end == '\r' || end == '\0')
                ok = true;
        }
    }
    fclose(f);
    return ok;
}
