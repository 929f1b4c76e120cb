/* Key dumps: "stats cachedump <class> <limit>" (memcached's item_cachedump)
 * and "lru_crawler metadump <all|hash|1,2,...>" (its crawler's metadump
 * module), streamed: a dump walks one shard at a time, a batch of buckets
 * per hold of the shard's lock (mp_store_walk), writing into output
 * reserved before locking, and stops between batches once the output
 * passes MP_OUT_HIGHWATER (MP_PROC_SUSPEND; the line is read again and the
 * walk goes on from c->proto's dump state).  So a client that does not read
 * holds about 1 MiB of output whatever the store holds, and every other
 * client is served meanwhile. */
#ifndef MP_DUMP_H
#define MP_DUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct mp_conn;

/* memcached's item_cachedump: at most `limit` items of slab class `clsid`
 * (0: no limit), within its 2 MB reply; then END.  false: suspended. */
bool mp_dump_cachedump(struct mp_conn *c, unsigned clsid, uint32_t limit);

/* metadump of the items of the classes in the set; then END.  false:
 * suspended. */
bool mp_dump_metadump(struct mp_conn *c, const mp_class_set *classes);

/* memcached's uriencode: bytes other than ASCII letters, digits and "-._~"
 * become %XX (upper case).  dst holds 3 * n bytes; returns the length. */
size_t mp_uriencode(const char *src, size_t n, char *dst);

#endif
