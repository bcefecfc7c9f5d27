#include "broker/ledger/quorum.h"

sl_status sl_quorum_check(const sl_quorum *q, sl_err *err) {
  if (q->qa < 1 || q->qa > q->qw || q->qw > q->e ||
      q->e > SL_QUORUM_MAX_ENSEMBLE)
    return sl_err_set(err, SL_EINVAL,
                      "ledger: need %d >= E >= Qw >= Qa >= 1, got E=%u Qw=%u "
                      "Qa=%u",
                      SL_QUORUM_MAX_ENSEMBLE, q->e, q->qw, q->qa);
  return SL_OK;
}

uint32_t sl_quorum_slot(const sl_quorum *q, int64_t entry, uint32_t i) {
  SL_ASSERT(entry >= 0 && i < q->qw);
  return (uint32_t)(((uint64_t)entry % q->e + i) % q->e);
}

uint64_t sl_quorum_write_set(const sl_quorum *q, int64_t entry) {
  uint64_t m = 0;
  for (uint32_t i = 0; i < q->qw; i++)
    m |= UINT64_C(1) << sl_quorum_slot(q, entry, i);
  return m;
}

uint32_t sl_quorum_count(uint64_t mask) {
  return (uint32_t)__builtin_popcountll(mask);
}

bool sl_quorum_complete(const sl_quorum *q, int64_t entry, uint64_t acked) {
  return sl_quorum_count(acked & sl_quorum_write_set(q, entry)) >= q->qa;
}

bool sl_quorum_fence_covers(const sl_quorum *q, uint64_t fenced) {
  /* The E write sets are those of entries 0 .. E-1. */
  for (uint32_t s = 0; s < q->e; s++)
    if (sl_quorum_count(fenced & sl_quorum_write_set(q, s)) <
        q->qw - q->qa + 1)
      return false;
  return true;
}

sl_quorum_verdict sl_quorum_verdict_of(const sl_quorum *q, int64_t entry,
                                       uint64_t found, uint64_t absent) {
  uint64_t ws = sl_quorum_write_set(q, entry);
  if (found & ws) return SL_QUORUM_FOUND;
  if (sl_quorum_count(absent & ws) >= q->qw - q->qa + 1)
    return SL_QUORUM_ABSENT;
  return SL_QUORUM_UNKNOWN;
}
