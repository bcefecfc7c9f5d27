/* Key_shared dispatcher: a hash ring over consumer names picks each key's
 * consumer; a table of keys with unacked messages keeps per-key order
 * across joins and leaves (dispatcher.h invariant 4). d->impl is a ks. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/dispatcher_int.h"

/* Points per consumer: enough that keys spread within a few percent. */
#define RING_POINTS 64

typedef struct ring_point {
  uint64_t at;
  dconsumer *c;
} ring_point;

/* A key with unacked messages, all at one consumer. */
typedef struct held_key {
  dconsumer *c;
  uint64_t count;
} held_key;

typedef struct ks {
  ring_point *ring;          /* sorted by at, then arrival */
  size_t n;
  sl_map held;               /* hex key hash -> held_key */
} ks;

static ks *state(sl_disp *d) {
  if (d->impl == NULL) {
    ks *k = sl_xcalloc(1, sizeof(*k));
    sl_map_init(&k->held);
    d->impl = k;
  }
  return d->impl;
}

static int cmp_point(const void *a, const void *b) {
  const ring_point *x = a, *y = b;
  if (x->at != y->at) return x->at < y->at ? -1 : 1;
  return x->c->arrival < y->c->arrival ? -1 : x->c->arrival > y->c->arrival;
}

/* Points depend on the name only, so a consumer that reconnects under its
 * name gets its keys back; two consumers of one name share points and the
 * earlier one wins them. */
static void rebuild(sl_disp *d, const dconsumer *leaving) {
  ks *k = state(d);
  free(k->ring);
  k->ring = NULL;
  k->n = 0;
  size_t cap = (size_t)d->n_consumers * RING_POINTS;
  if (cap == 0) return;
  k->ring = sl_xcalloc(cap, sizeof(*k->ring));
  for (dconsumer *c = d->consumers; c != NULL; c = c->next) {
    if (c == leaving) continue;
    for (int i = 0; i < RING_POINTS; i++) {
      char label[300];
      int len = snprintf(label, sizeof(label), "%s#%d", c->name, i);
      if (len < 0 || (size_t)len >= sizeof(label)) len = (int)sizeof(label) - 1;
      k->ring[k->n].at = disp_hash(label, (size_t)len);
      k->ring[k->n].c = c;
      k->n++;
    }
  }
  qsort(k->ring, k->n, sizeof(*k->ring), cmp_point);
}

static dconsumer *owner(const ks *k, uint64_t h) {
  if (k->n == 0) return NULL;
  size_t lo = 0, hi = k->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (k->ring[mid].at < h) lo = mid + 1;
    else hi = mid;
  }
  return k->ring[lo == k->n ? 0 : lo].c;
}

static void hkey(uint64_t h, char out[24]) {
  snprintf(out, 24, "%" PRIx64, h);
}

static void joined(sl_disp *d, dconsumer *c, sl_disp_back_cb back, void *arg) {
  (void)c;
  (void)back;
  (void)arg;
  rebuild(d, NULL);
}

static void leaving(sl_disp *d, dconsumer *c, sl_disp_back_cb back, void *arg) {
  (void)back;
  (void)arg;
  rebuild(d, c);
}

static dconsumer *choose(sl_disp *d, const sl_disp_msg *m, uint64_t h) {
  (void)m;
  ks *k = state(d);
  dconsumer *o = owner(k, h);
  if (o == NULL || o->permits == 0) return NULL;
  char hk[24];
  hkey(h, hk);
  held_key *held = sl_map_get(&k->held, hk);
  if (held != NULL && held->c != o) return NULL; /* drains at its old consumer */
  return o;
}

static void placed(sl_disp *d, dconsumer *c, uint64_t h) {
  ks *k = state(d);
  char hk[24];
  hkey(h, hk);
  held_key *held = sl_map_get(&k->held, hk);
  if (held == NULL) {
    held = sl_xcalloc(1, sizeof(*held));
    held->c = c;
    sl_status st = sl_map_put(&k->held, hk, held, NULL);
    SL_ASSERT(st == SL_OK); /* servers abort on out-of-memory */
  }
  SL_ASSERT(held->c == c);
  held->count++;
}

static void forgotten(sl_disp *d, dconsumer *c, uint64_t h) {
  ks *k = state(d);
  char hk[24];
  hkey(h, hk);
  held_key *held = sl_map_get(&k->held, hk);
  SL_ASSERT(held != NULL && held->c == c && held->count > 0);
  if (--held->count == 0) {
    sl_map_remove(&k->held, hk, NULL);
    free(held);
  }
}

static bool can_dispatch(const sl_disp *d) {
  for (const dconsumer *c = d->consumers; c != NULL; c = c->next)
    if (c->permits > 0) return true;
  return false;
}

static void release_impl(sl_disp *d) {
  ks *k = d->impl;
  if (k == NULL) return;
  free(k->ring);
  sl_map_release(&k->held, free);
  free(k);
  d->impl = NULL;
}

const disp_ops sl_disp_key_shared_ops = {
    .joined = joined,
    .leaving = leaving,
    .choose = choose,
    .placed = placed,
    .forgotten = forgotten,
    .can_dispatch = can_dispatch,
    .release_impl = release_impl,
};
