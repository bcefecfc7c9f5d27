/*
 * A hash map from 64-bit ledger id to a pointer: the bookie store's
 * in-memory index of ledger state. Not thread-safe; the owner locks.
 */
#ifndef SL_BOOKIE_LEDGER_TABLE_H
#define SL_BOOKIE_LEDGER_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sl_ledger_table {
  uint64_t *keys;
  void **vals;   /* NULL marks an empty slot */
  size_t cap;    /* power of two, or 0 */
  size_t count;
} sl_ledger_table;

#define SL_LEDGER_TABLE_INIT {.keys = NULL, .vals = NULL, .cap = 0, .count = 0}

/* Frees the table's arrays (not the values). */
void sl_ledger_table_release(sl_ledger_table *t);

/* The value for key, or NULL. */
void *sl_ledger_table_get(const sl_ledger_table *t, uint64_t key);

/* Inserts or replaces; val must not be NULL (borrowed: the table never
 * frees values). */
void sl_ledger_table_put(sl_ledger_table *t, uint64_t key, void *val);

/* Removes key if present and returns its value (or NULL). */
void *sl_ledger_table_remove(sl_ledger_table *t, uint64_t key);

/* Iteration: for (size_t i = 0; i < t->cap; i++) if (t->vals[i]) ... is
 * allowed; the order is unspecified. Do not modify the table meanwhile. */

#endif
