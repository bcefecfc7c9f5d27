/* Replay set: a map id -> record for counts, plus a sorted array of the
 * queued ids. See subscription_replay.h. */
#include "broker/subscription_replay.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/map.h"

typedef struct rec {
  sl_msg_id id;
  uint32_t count;
  int64_t due_ms;
  bool queued;
} rec;

struct sl_replay {
  uint32_t max;
  sl_map recs;          /* id_key() -> rec */
  rec **queue;          /* queued records, by id */
  size_t n, cap;
};

static void id_key(sl_msg_id id, char out[64]) {
  snprintf(out, 64, "%" PRIx64 ":%" PRIx64 ":%" PRIx32, id.ledger_id,
           (uint64_t)id.entry_id, (uint32_t)id.batch_index);
}

sl_replay *sl_replay_create(uint32_t max_redeliveries) {
  sl_replay *r = sl_xcalloc(1, sizeof(*r));
  r->max = max_redeliveries;
  sl_map_init(&r->recs);
  return r;
}

void sl_replay_destroy(sl_replay *r) {
  if (r == NULL) return;
  sl_map_release(&r->recs, free);
  free(r->queue);
  free(r);
}

/* Index of the first queued record with id >= id. */
static size_t lower_bound(const sl_replay *r, sl_msg_id id) {
  size_t lo = 0, hi = r->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (sl_msg_id_cmp(r->queue[mid]->id, id) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static void enqueue(sl_replay *r, rec *x, int64_t due_ms) {
  SL_ASSERT(!x->queued);
  if (r->n == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 16;
    r->queue = sl_xrealloc(r->queue, r->cap * sizeof(*r->queue));
  }
  size_t i = lower_bound(r, x->id);
  memmove(&r->queue[i + 1], &r->queue[i], (r->n - i) * sizeof(*r->queue));
  r->queue[i] = x;
  r->n++;
  x->queued = true;
  x->due_ms = due_ms;
}

static void dequeue(sl_replay *r, rec *x) {
  if (!x->queued) return;
  size_t i = lower_bound(r, x->id);
  SL_ASSERT(i < r->n && r->queue[i] == x);
  memmove(&r->queue[i], &r->queue[i + 1], (r->n - i - 1) * sizeof(*r->queue));
  r->n--;
  x->queued = false;
}

static rec *find_or_add(sl_replay *r, sl_msg_id id) {
  char k[64];
  id_key(id, k);
  rec *x = sl_map_get(&r->recs, k);
  if (x == NULL) {
    x = sl_xcalloc(1, sizeof(*x));
    x->id = id;
    sl_status st = sl_map_put(&r->recs, k, x, NULL);
    SL_ASSERT(st == SL_OK); /* servers abort on out-of-memory */
  }
  return x;
}

sl_replay_verdict sl_replay_push(sl_replay *r, sl_msg_id id, int64_t due_ms) {
  rec *x = find_or_add(r, id);
  if (x->queued) return SL_REPLAY_ALREADY;
  if (r->max > 0 && x->count >= r->max) return SL_REPLAY_DEAD_LETTER;
  x->count++;
  enqueue(r, x, due_ms);
  return SL_REPLAY_QUEUED;
}

bool sl_replay_pop_due(sl_replay *r, int64_t now_ms, const sl_msg_id *after,
                       sl_msg_id *id, uint32_t *count) {
  for (size_t i = after ? lower_bound(r, *after) : 0; i < r->n; i++) {
    rec *x = r->queue[i];
    if (x->due_ms > now_ms || (after && sl_msg_id_cmp(x->id, *after) <= 0))
      continue;
    dequeue(r, x);
    *id = x->id;
    *count = x->count;
    return true;
  }
  return false;
}

void sl_replay_hold(sl_replay *r, sl_msg_id id, int64_t due_ms) {
  rec *x = find_or_add(r, id);
  if (!x->queued) enqueue(r, x, due_ms);
}

bool sl_replay_next_due(const sl_replay *r, int64_t *due_ms) {
  if (r->n == 0) return false;
  int64_t best = r->queue[0]->due_ms;
  for (size_t i = 1; i < r->n; i++)
    if (r->queue[i]->due_ms < best) best = r->queue[i]->due_ms;
  *due_ms = best;
  return true;
}

uint32_t sl_replay_count(const sl_replay *r, sl_msg_id id) {
  char k[64];
  id_key(id, k);
  const rec *x = sl_map_get(&r->recs, k);
  return x ? x->count : 0;
}

void sl_replay_forget(sl_replay *r, sl_msg_id id) {
  char k[64];
  id_key(id, k);
  void *v;
  if (!sl_map_remove(&r->recs, k, &v)) return;
  dequeue(r, v);
  free(v);
}

void sl_replay_forget_upto(sl_replay *r, sl_msg_id upto) {
  sl_map_iter it = SL_MAP_ITER_INIT;
  const char *k;
  void *v;
  while (sl_map_next(&r->recs, &it, &k, &v)) {
    rec *x = v;
    if (sl_msg_id_cmp(x->id, upto) > 0) continue;
    dequeue(r, x);
    sl_map_remove(&r->recs, k, NULL);
    free(x);
  }
}

void sl_replay_clear(sl_replay *r) {
  sl_map_release(&r->recs, free);
  sl_map_init(&r->recs);
  r->n = 0;
}

size_t sl_replay_queued(const sl_replay *r) { return r->n; }
