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

/* Position of slot in the write set of entries with e mod E = residue (E
 * or more: not in it is any value >= Qw). */
static uint32_t member(const sl_quorum *q, uint32_t slot, uint32_t residue) {
  return (slot + q->e - residue) % q->e;
}

bool sl_quorum_serves(const sl_quorum *q, const sl_quorum_pick *pick, int64_t entry) {
  SL_ASSERT(entry >= 0 && pick->slot < q->e);
  return member(q, pick->slot, (uint32_t)((uint64_t)entry % q->e)) < pick->depth;
}

uint32_t sl_quorum_cover(const sl_quorum *q, int64_t first, int64_t last,
                         uint32_t start, uint64_t usable, sl_quorum_pick *picks) {
  SL_ASSERT(first >= 0 && last >= first);
  uint64_t need = 0; /* residues (entry mod E) of the range not yet served */
  for (int64_t e = first; e <= last && e - first < q->e; e++)
    need |= UINT64_C(1) << ((uint64_t)e % q->e);
  uint64_t chosen = 0;
  uint32_t n = 0;
  while (need != 0) {
    sl_quorum_pick best = {0, 0};
    uint32_t best_count = 0;
    for (uint32_t k = 0; k < q->e; k++) {
      uint32_t s = (start + k) % q->e;
      if (!(usable >> s & 1) || (chosen >> s & 1)) continue;
      uint32_t count = 0, depth = 0;
      for (uint32_t r = 0; r < q->e; r++) {
        uint32_t m = member(q, s, r);
        if (!(need >> r & 1) || m >= q->qw) continue;
        count++;
        if (m + 1 > depth) depth = m + 1;
      }
      if (count > best_count || (count > 0 && count == best_count && depth < best.depth)) {
        best = (sl_quorum_pick){s, depth};
        best_count = count;
      }
    }
    if (best_count == 0) break;
    picks[n++] = best;
    chosen |= UINT64_C(1) << best.slot;
    for (uint32_t r = 0; r < q->e; r++)
      if (member(q, best.slot, r) < best.depth) need &= ~(UINT64_C(1) << r);
  }
  return n;
}
