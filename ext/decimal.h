/* Decimal numbers as memcached reads and writes them, once for the protocol
 * (parser.c's safe_strto* rules, replies) and the store (incr/decr read and
 * write a value's digits). */
#ifndef MP_DECIMAL_H
#define MP_DECIMAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* isspace() as memcached sees it, in the C locale: the process's own
 * locale is the environment's (Python sets LC_CTYPE from it). */
static inline bool mp_isspace(unsigned char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

/* The C library's strto* grammar at the start of p[0, len): white space, a
 * sign, decimal digits.  Returns where the digits end, or 0 when there are
 * none (strto* leaves endptr at the start: not a number); the caller judges
 * what follows.  *range is set on overflow, and *mag is then meaningless. */
static inline size_t mp_scan_decimal(const char *p, size_t len, bool *neg, uint64_t *mag,
                                     bool *range)
{
    size_t i = 0;
    while (i < len && mp_isspace((unsigned char)p[i]))
        i++;
    *neg = false;
    if (i < len && (p[i] == '+' || p[i] == '-')) {
        *neg = p[i] == '-';
        i++;
    }
    size_t digits = i;
    uint64_t v = 0;
    *range = false;
    for (; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            *range = true;
        else
            v = v * 10 + d;
    }
    *mag = v;
    return i == digits ? 0 : i;
}

/* Writes the decimal digits of v at p (no NUL); returns the end. */
static inline char *u64_to_dec(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

#endif
