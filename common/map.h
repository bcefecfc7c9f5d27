/*
 * sl_map: a string-keyed hash map from a copied key to a borrowed void *
 * (the broker's topics, producers and subscriptions).
 *
 * Open addressing with linear probing over a power-of-two table. A removed
 * slot becomes a tombstone rather than moving its neighbours, which is what
 * makes removal during iteration safe. The hash is 64-bit FNV-1a; it is not
 * keyed, so callers must bound what an untrusted peer can insert (topic and
 * producer names are validated and counted before they reach a map).
 *
 * Invariants
 *  1. Each key is present at most once. The map owns a private copy of every
 *     key; values are never touched (freed only by the callback passed to
 *     sl_map_release, if any).
 *  2. live + tombstones <= 3/4 of the table, so every probe ends at an empty
 *     slot. Only sl_map_put grows or rebuilds the table; sl_map_remove and
 *     lookups never move an entry.
 *  3. A failed sl_map_put (SL_ENOMEM) leaves the map as it was.
 *
 * Iteration (sl_map_next) visits each entry present for the whole walk
 * exactly once, in no particular order. During a walk the caller may remove
 * any key (including the current one) and replace the value of an existing
 * key; inserting a NEW key may rebuild the table and is not allowed until the
 * walk is over.
 *
 * Not thread-safe: guard a shared map with its owner's lock.
 */
#ifndef SL_COMMON_MAP_H
#define SL_COMMON_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

struct sl_map_slot;

typedef struct sl_map {
  struct sl_map_slot *slots; /* cap entries; NULL while cap == 0 */
  size_t cap;                /* table size, 0 or a power of two */
  size_t len;                /* live entries */
  size_t used;               /* live entries + tombstones (invariant 2) */
} sl_map;

#define SL_MAP_INIT {.slots = NULL, .cap = 0, .len = 0, .used = 0}

/* A walk's position; start each walk from SL_MAP_ITER_INIT. */
typedef struct sl_map_iter {
  size_t next; /* next slot to look at */
} sl_map_iter;

#define SL_MAP_ITER_INIT {.next = 0}

/* Makes m empty. m is caller-owned storage; all-zero is also empty. */
void sl_map_init(sl_map *m);

/* Frees the table and every key; calls free_value(value) for each entry when
 * free_value is not NULL. m is left empty and reusable. */
void sl_map_release(sl_map *m, void (*free_value)(void *value));

/* Sets key -> value. key is borrowed (the map copies it). When the key was
 * present, its old value is stored in *old_out (if not NULL) and replaced;
 * otherwise *old_out is set to NULL. Returns SL_OK, or SL_ENOMEM with the
 * map unchanged. */
sl_status sl_map_put(sl_map *m, const char *key, void *value, void **old_out);

/* True when key is present; its value goes to *value_out (if not NULL). */
bool sl_map_find(const sl_map *m, const char *key, void **value_out);

/* The value for key, or NULL when absent. Use sl_map_find when NULL is a
 * value you store. */
void *sl_map_get(const sl_map *m, const char *key);

/* Removes key. True when it was present; its value goes to *value_out (if
 * not NULL) for the caller to free. Safe during a walk. */
bool sl_map_remove(sl_map *m, const char *key, void **value_out);

/* Number of entries. */
size_t sl_map_len(const sl_map *m);

/* The next entry of a walk: true with *key_out (owned by the map, valid until
 * that key is removed or the map released) and *value_out set, or false when
 * the walk is over. Either out-pointer may be NULL. */
bool sl_map_next(const sl_map *m, sl_map_iter *it, const char **key_out,
                 void **value_out);

#endif
