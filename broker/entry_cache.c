/* Entry cache: a ring of the newest entries, oldest first. See
 * entry_cache.h. */
#include "broker/entry_cache.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_BYTES ((size_t)64 << 20)

typedef struct slot {
  sl_ml_pos pos;
  void *data;
  size_t len;
} slot;

struct sl_entry_cache {
  size_t max_bytes;
  slot *ring;            /* cap slots; entries at head .. head+n-1 (mod cap) */
  size_t cap, head, n;
  size_t bytes;
  uint64_t hits, misses, evicted;
};

sl_entry_cache *sl_entry_cache_create(size_t max_bytes) {
  sl_entry_cache *c = sl_xcalloc(1, sizeof(*c));
  c->max_bytes = max_bytes ? max_bytes : DEFAULT_MAX_BYTES;
  return c;
}

static slot *at(const sl_entry_cache *c, size_t i) {
  return &c->ring[(c->head + i) % c->cap];
}

static void evict_oldest(sl_entry_cache *c) {
  slot *s = at(c, 0);
  c->bytes -= s->len;
  free(s->data);
  s->data = NULL;
  c->head = (c->head + 1) % c->cap;
  c->n--;
  c->evicted++;
}

void sl_entry_cache_clear(sl_entry_cache *c) {
  while (c->n > 0) evict_oldest(c);
}

void sl_entry_cache_destroy(sl_entry_cache *c) {
  if (c == NULL) return;
  sl_entry_cache_clear(c);
  free(c->ring);
  free(c);
}

static void grow(sl_entry_cache *c) {
  size_t cap = c->cap ? c->cap * 2 : 64;
  slot *ring = sl_xcalloc(cap, sizeof(*ring));
  for (size_t i = 0; i < c->n; i++) ring[i] = *at(c, i);
  free(c->ring);
  c->ring = ring;
  c->cap = cap;
  c->head = 0;
}

void sl_entry_cache_put(sl_entry_cache *c, sl_ml_pos pos, const void *data,
                        size_t len) {
  if (c->n > 0 && sl_ml_pos_cmp(pos, at(c, c->n - 1)->pos) <= 0)
    sl_entry_cache_clear(c);
  if (len > c->max_bytes) {
    sl_entry_cache_clear(c);
    return;
  }
  while (c->n > 0 && c->bytes + len > c->max_bytes) evict_oldest(c);
  if (c->n == c->cap) grow(c);
  slot *s = at(c, c->n);
  s->pos = pos;
  s->data = sl_xmalloc(len ? len : 1);
  if (len) memcpy(s->data, data, len);
  s->len = len;
  c->n++;
  c->bytes += len;
}

/* Index of the first cached entry at or after pos (n if none). */
static size_t lower_bound(const sl_entry_cache *c, sl_ml_pos pos) {
  size_t lo = 0, hi = c->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (sl_ml_pos_cmp(at(c, mid)->pos, pos) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

bool sl_entry_cache_get(sl_entry_cache *c, sl_ml_pos pos, const void **data,
                        size_t *len) {
  size_t i = lower_bound(c, pos);
  if (i == c->n || sl_ml_pos_cmp(at(c, i)->pos, pos) != 0) {
    c->misses++;
    return false;
  }
  *data = at(c, i)->data;
  *len = at(c, i)->len;
  c->hits++;
  return true;
}

bool sl_entry_cache_first(const sl_entry_cache *c, sl_ml_pos *out) {
  if (c->n == 0) return false;
  *out = at(c, 0)->pos;
  return true;
}

bool sl_entry_cache_next(const sl_entry_cache *c, sl_ml_pos pos, sl_ml_pos *out) {
  size_t i = lower_bound(c, pos);
  if (i < c->n && sl_ml_pos_cmp(at(c, i)->pos, pos) == 0) i++;
  if (i >= c->n) return false;
  *out = at(c, i)->pos;
  return true;
}

void sl_entry_cache_stats_get(const sl_entry_cache *c,
                              sl_entry_cache_stats *out) {
  out->entries = c->n;
  out->bytes = c->bytes;
  out->hits = c->hits;
  out->misses = c->misses;
  out->evicted = c->evicted;
}
