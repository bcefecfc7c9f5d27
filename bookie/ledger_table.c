#include "bookie/ledger_table.h"

#include <stdbool.h>
#include <stdlib.h>

#include "common/status.h"

static size_t slot_of(uint64_t key, size_t cap) {
  /* Fibonacci hashing: ledger ids are often sequential. */
  return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

void sl_ledger_table_release(sl_ledger_table *t) {
  free(t->keys);
  free(t->vals);
  *t = (sl_ledger_table)SL_LEDGER_TABLE_INIT;
}

void *sl_ledger_table_get(const sl_ledger_table *t, uint64_t key) {
  if (t->cap == 0) return NULL;
  for (size_t i = slot_of(key, t->cap);; i = (i + 1) & (t->cap - 1)) {
    if (t->vals[i] == NULL) return NULL;
    if (t->keys[i] == key) return t->vals[i];
  }
}

static void grow(sl_ledger_table *t) {
  sl_ledger_table n = {NULL, NULL, t->cap ? t->cap * 2 : 16, 0};
  n.keys = sl_xcalloc(n.cap, sizeof(*n.keys));
  n.vals = sl_xcalloc(n.cap, sizeof(*n.vals));
  for (size_t i = 0; i < t->cap; i++) {
    if (t->vals[i] != NULL) sl_ledger_table_put(&n, t->keys[i], t->vals[i]);
  }
  sl_ledger_table_release(t);
  *t = n;
}

void sl_ledger_table_put(sl_ledger_table *t, uint64_t key, void *val) {
  SL_ASSERT(val != NULL);
  if ((t->count + 1) * 4 > t->cap * 3) grow(t); /* load factor <= 3/4 */
  for (size_t i = slot_of(key, t->cap);; i = (i + 1) & (t->cap - 1)) {
    if (t->vals[i] == NULL) {
      t->keys[i] = key;
      t->vals[i] = val;
      t->count++;
      return;
    }
    if (t->keys[i] == key) {
      t->vals[i] = val;
      return;
    }
  }
}

void *sl_ledger_table_remove(sl_ledger_table *t, uint64_t key) {
  if (t->cap == 0) return NULL;
  size_t mask = t->cap - 1;
  size_t i = slot_of(key, t->cap);
  while (t->vals[i] != NULL && t->keys[i] != key) i = (i + 1) & mask;
  void *val = t->vals[i];
  if (val == NULL) return NULL;
  t->vals[i] = NULL;
  t->count--;
  /* Backward-shift deletion keeps probe chains unbroken without tombstones. */
  for (size_t j = (i + 1) & mask; t->vals[j] != NULL; j = (j + 1) & mask) {
    size_t home = slot_of(t->keys[j], t->cap);
    /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
    bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (stays) continue;
    t->keys[i] = t->keys[j];
    t->vals[i] = t->vals[j];
    t->vals[j] = NULL;
    i = j;
  }
  return val;
}
