#include "common/map.h"

#include <stdlib.h>
#include <string.h>

/* A slot is empty (key NULL, not dead), a tombstone (key NULL, dead) or
 * live (key set). */
struct sl_map_slot {
  char *key;
  void *value;
  uint64_t hash;
  bool dead;
};

static uint64_t hash_key(const char *key) {
  uint64_t h = 14695981039346656037ull;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
    h ^= *p;
    h *= 1099511628211ull;
  }
  return h;
}

void sl_map_init(sl_map *m) {
  m->slots = NULL;
  m->cap = 0;
  m->len = 0;
  m->used = 0;
}

void sl_map_release(sl_map *m, void (*free_value)(void *value)) {
  for (size_t i = 0; i < m->cap; i++) {
    if (m->slots[i].key == NULL) continue;
    if (free_value != NULL) free_value(m->slots[i].value);
    free(m->slots[i].key);
  }
  free(m->slots);
  sl_map_init(m);
}

/* The live slot holding key, or the cap when absent. */
static size_t find_slot(const sl_map *m, const char *key, uint64_t h) {
  if (m->cap == 0) return 0;
  size_t mask = m->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const struct sl_map_slot *s = &m->slots[i];
    if (s->key == NULL && !s->dead) return m->cap; /* invariant 2: ends */
    if (s->key != NULL && s->hash == h && strcmp(s->key, key) == 0) return i;
  }
}

/* Moves every live entry into a fresh table of new_cap slots, dropping the
 * tombstones. On allocation failure the map is unchanged. */
static bool rebuild(sl_map *m, size_t new_cap) {
  struct sl_map_slot *slots = calloc(new_cap, sizeof(*slots));
  if (slots == NULL) return false;
  size_t mask = new_cap - 1;
  for (size_t i = 0; i < m->cap; i++) {
    struct sl_map_slot *s = &m->slots[i];
    if (s->key == NULL) continue;
    size_t j = s->hash & mask;
    while (slots[j].key != NULL) j = (j + 1) & mask;
    slots[j] = *s;
  }
  free(m->slots);
  m->slots = slots;
  m->cap = new_cap;
  m->used = m->len;
  return true;
}

/* Makes room for one more entry under invariant 2. */
static bool make_room(sl_map *m) {
  if (m->cap != 0 && (m->used + 1) * 4 <= m->cap * 3) return true;
  size_t cap = m->cap == 0 ? 8 : m->cap;
  /* Grow only when live entries need it; else just sweep the tombstones. */
  while ((m->len + 1) * 2 > cap) {
    if (cap > SIZE_MAX / 2 / sizeof(struct sl_map_slot)) return false;
    cap *= 2;
  }
  return rebuild(m, cap);
}

sl_status sl_map_put(sl_map *m, const char *key, void *value, void **old_out) {
  uint64_t h = hash_key(key);
  size_t i = find_slot(m, key, h);
  if (i < m->cap) {
    if (old_out != NULL) *old_out = m->slots[i].value;
    m->slots[i].value = value;
    return SL_OK;
  }
  char *copy = strdup(key);
  if (copy == NULL) return SL_ENOMEM;
  if (!make_room(m)) {
    free(copy);
    return SL_ENOMEM;
  }
  size_t mask = m->cap - 1;
  /* Reuse the first tombstone on the probe path, else the empty slot. */
  for (i = h & mask; m->slots[i].key != NULL; i = (i + 1) & mask) {
  }
  if (!m->slots[i].dead) m->used++;
  m->slots[i] = (struct sl_map_slot){.key = copy, .value = value, .hash = h};
  m->len++;
  if (old_out != NULL) *old_out = NULL;
  return SL_OK;
}

bool sl_map_find(const sl_map *m, const char *key, void **value_out) {
  size_t i = find_slot(m, key, hash_key(key));
  if (i >= m->cap) return false;
  if (value_out != NULL) *value_out = m->slots[i].value;
  return true;
}

void *sl_map_get(const sl_map *m, const char *key) {
  void *v = NULL;
  return sl_map_find(m, key, &v) ? v : NULL;
}

bool sl_map_remove(sl_map *m, const char *key, void **value_out) {
  size_t i = find_slot(m, key, hash_key(key));
  if (i >= m->cap) return false;
  struct sl_map_slot *s = &m->slots[i];
  if (value_out != NULL) *value_out = s->value;
  free(s->key);
  *s = (struct sl_map_slot){.dead = true};
  m->len--;
  return true;
}

size_t sl_map_len(const sl_map *m) { return m->len; }

bool sl_map_next(const sl_map *m, sl_map_iter *it, const char **key_out,
                 void **value_out) {
  while (it->next < m->cap) {
    const struct sl_map_slot *s = &m->slots[it->next++];
    if (s->key == NULL) continue;
    if (key_out != NULL) *key_out = s->key;
    if (value_out != NULL) *value_out = s->value;
    return true;
  }
  return false;
}
