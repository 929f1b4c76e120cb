/* Invariant checks on the engine's hot structures (connection table, output
 * buffers and their references, item refcounts, slab and queue links),
 * compiled in only by a debug build: MPCACHE_DEBUG=1 (setup.py; make debug,
 * make sanitize and the C unit tests build that way).  A release build
 * evaluates nothing: the condition is only type-checked, so a check cannot
 * rot unnoticed and costs no instruction.
 *
 * An MP_ASSERT is O(1) where it sits on the request path; the walks over
 * whole tables and lists run from maintenance (mp_store_maintain,
 * channel_maintain), debug builds only.  A failed check names itself on
 * stderr and aborts: the corruption it caught would otherwise show up later
 * and elsewhere (Redis's serverAssert). */
#ifndef MP_DEBUG_H
#define MP_DEBUG_H

#ifdef MPCACHE_DEBUG
#include <stdio.h>
#include <stdlib.h>

__attribute__((noreturn, cold)) static inline void mp_assert_fail(const char *what, const char *file,
                                                                  int line, const char *func)
{
    fprintf(stderr, "mpcache: %s:%d: %s: invariant broken: %s\n", file, line, func, what);
    abort();
}

#define MP_ASSERT(cond) \
    ((cond) ? (void)0 : mp_assert_fail(#cond, __FILE__, __LINE__, __func__))
#else
#define MP_ASSERT(cond) ((void)sizeof(!(cond)))
#endif

#endif
