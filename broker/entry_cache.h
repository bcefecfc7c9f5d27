/*
 * Entry cache: the newest entries of one partition, in memory, so that
 * consumers at the tail read without a bookie round trip (issue 10, "Flow
 * control"). One per partition, shared by all its subscriptions.
 *
 * The produce path puts every entry once the managed ledger reports it
 * durable (append callback, in append order); subscriptions get entries by
 * position. Entries older than the cache are read from bookies.
 *
 * Invariants
 *  1. The cache holds a contiguous suffix of what was put: positions
 *     strictly increase, and when an entry goes (eviction), every older one
 *     went before it. So a position between the oldest and the newest cached
 *     entry that is not found does not exist.
 *  2. Cached bytes (payload lengths) stay at or below max_bytes. An entry
 *     larger than max_bytes empties the cache and is not kept.
 *  3. A put whose position is not above the newest cached entry (a new
 *     owner's log is never rewound, so this means a caller bug or a seek
 *     of the log itself) empties the cache first, then keeps the entry.
 *
 * Threads: none; used from the partition's serial only. Data returned by
 * sl_entry_cache_get is borrowed until the next put or clear.
 */
#ifndef SL_BROKER_ENTRY_CACHE_H
#define SL_BROKER_ENTRY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/managed_ledger.h"

typedef struct sl_entry_cache sl_entry_cache;

/* A cache of at most max_bytes (0 = 64 MiB). Aborts on out-of-memory. */
sl_entry_cache *sl_entry_cache_create(size_t max_bytes);

/* NULL is a no-op. */
void sl_entry_cache_destroy(sl_entry_cache *c);

/* Keeps a copy of the entry at pos (invariants 2, 3), evicting the oldest
 * entries as needed. */
void sl_entry_cache_put(sl_entry_cache *c, sl_ml_pos pos, const void *data,
                        size_t len);

/* The entry at pos: true with *data (borrowed, see above) and *len, or
 * false if it is not cached. */
bool sl_entry_cache_get(sl_entry_cache *c, sl_ml_pos pos, const void **data,
                        size_t *len);

/* The oldest cached position: true if the cache is not empty. A reader at
 * or after it reads from the cache only (invariant 1). */
bool sl_entry_cache_first(const sl_entry_cache *c, sl_ml_pos *out);

/* The first cached position after pos (the next entry for a reader that
 * just read pos): false if none is cached yet. */
bool sl_entry_cache_next(const sl_entry_cache *c, sl_ml_pos pos, sl_ml_pos *out);

/* Drops everything (the partition is unloaded or its log rewound). */
void sl_entry_cache_clear(sl_entry_cache *c);

typedef struct sl_entry_cache_stats {
  uint64_t entries;
  uint64_t bytes;
  uint64_t hits;
  uint64_t misses;
  uint64_t evicted;
} sl_entry_cache_stats;

void sl_entry_cache_stats_get(const sl_entry_cache *c,
                              sl_entry_cache_stats *out);

#endif
