#include "broker/ledger/addq.h"

#include <stdlib.h>
#include <string.h>

void sl_addq_init(sl_addq *q, const sl_quorum *quorum, int64_t first_entry) {
  memset(q, 0, sizeof(*q));
  q->q = *quorum;
  q->first = first_entry;
}

void sl_addq_release(sl_addq *q) {
  free(q->ring);
  q->ring = NULL;
  q->cap = q->len = q->head = 0;
}

static sl_addq_item *at(const sl_addq *q, size_t i) {
  return &q->ring[(q->head + i) % q->cap];
}

static sl_status grow(sl_addq *q) {
  size_t cap = q->cap ? q->cap * 2 : 64;
  sl_addq_item *ring = malloc(cap * sizeof(*ring));
  if (!ring) return SL_ENOMEM;
  for (size_t i = 0; i < q->len; i++) ring[i] = *at(q, i);
  free(q->ring);
  q->ring = ring;
  q->cap = cap;
  q->head = 0;
  return SL_OK;
}

sl_status sl_addq_push(sl_addq *q, void *data, int64_t now_ms) {
  if (q->len == q->cap) {
    sl_status st = grow(q);
    if (st != SL_OK) return st;
  }
  sl_addq_item *it = at(q, q->len);
  it->entry = q->first + (int64_t)q->len;
  it->acked = 0;
  it->sent_ms = now_ms;
  it->data = data;
  q->len++;
  return SL_OK;
}

int64_t sl_addq_next(const sl_addq *q) { return q->first + (int64_t)q->len; }

sl_addq_item *sl_addq_get(sl_addq *q, int64_t entry) {
  if (entry < q->first || entry >= sl_addq_next(q)) return NULL;
  return at(q, (size_t)(entry - q->first));
}

sl_addq_item *sl_addq_front(sl_addq *q) { return q->len ? at(q, 0) : NULL; }

bool sl_addq_ack(sl_addq *q, int64_t entry, uint32_t slot) {
  sl_addq_item *it = sl_addq_get(q, entry);
  if (!it || slot >= q->q.e) return false;
  uint64_t bit = UINT64_C(1) << slot;
  if (!(sl_quorum_write_set(&q->q, entry) & bit)) return false;
  it->acked |= bit;
  return true;
}

bool sl_addq_front_complete(const sl_addq *q) {
  if (!q->len) return false;
  const sl_addq_item *it = at(q, 0);
  return sl_quorum_complete(&q->q, it->entry, it->acked);
}

void *sl_addq_pop(sl_addq *q) {
  SL_ASSERT(q->len > 0);
  void *data = at(q, 0)->data;
  q->head = (q->head + 1) % q->cap;
  q->len--;
  q->first++;
  return data;
}

void sl_addq_forget_slot(sl_addq *q, uint32_t slot) {
  uint64_t keep = ~(UINT64_C(1) << slot);
  for (size_t i = 0; i < q->len; i++) at(q, i)->acked &= keep;
}
