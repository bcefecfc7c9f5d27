/*
 * Backlog quota of one partition (contract in partition_consume_int.h).
 *
 * The backlog is measured from the chain the managed ledger reports: the
 * entries after the oldest mark-delete, each counted at its ledger's mean
 * entry size (a ledger's bytes over its entries), as the subscription
 * backlog gauges count. Acks beyond a mark-delete are not subtracted: the
 * quota bounds what the oldest subscription holds back from trimming.
 *
 * Invariants
 *  1. Nothing is enforced before every subscription's mark-delete is known
 *     (pc_expiry_slowest), so a partition is never judged on part of them.
 *  2. Eviction keeps the newest entries whose bytes fit in the quota and
 *     expires everything older, in every subscription; what a subscription
 *     then holds back is at most the quota (counted in mean entry sizes).
 */
#include <inttypes.h>
#include <stdlib.h>

#include "broker/partition_consume_int.h"
#include "common/log.h"

#define CHECK_EVERY_MS 1000

static double mean_entry(const sl_ml_ledger_info *l) {
  return l->entries > 0 ? (double)l->bytes / (double)l->entries : 0;
}

/* Bytes of the entries after md. */
static uint64_t bytes_after(const sl_ml_ledger_info *chain, size_t n, sl_ml_pos md) {
  double bytes = 0;
  for (size_t i = 0; i < n; i++) {
    const sl_ml_ledger_info *l = &chain[i];
    int64_t first = l->ledger_id < md.ledger_id    ? l->entries
                    : l->ledger_id == md.ledger_id ? md.entry_id + 1
                                                   : 0;
    if (first < l->entries) bytes += mean_entry(l) * (double)(l->entries - first);
  }
  return (uint64_t)bytes;
}

/* The oldest entry to keep: it and everything after it fit in quota bytes
 * (just past the newest entry when not even that one fits). */
static sl_ml_pos keep_from(const sl_ml_ledger_info *chain, size_t n, int64_t quota) {
  double kept = 0;
  for (size_t i = n; i-- > 0;) {
    const sl_ml_ledger_info *l = &chain[i];
    double each = mean_entry(l);
    for (int64_t e = l->entries - 1; e >= 0; e--) {
      if (kept + each > (double)quota) return (sl_ml_pos){l->ledger_id, e + 1};
      kept += each;
    }
  }
  return (sl_ml_pos){n > 0 ? chain[0].ledger_id : 0, 0};
}

void pc_quota_check(pconsume *pc, int64_t now_ms) {
  ptopic *t = pc->t;
  if (t->backlog_quota_bytes <= 0 || t->ml == NULL || now_ms < pc->quota_next_ms) return;
  pc->quota_next_ms = now_ms + CHECK_EVERY_MS;
  sl_ml_pos slowest = {0, -1};
  bool any;
  if (!pc_expiry_slowest(pc, &slowest, &any)) return; /* invariant 1 */
  sl_ml_ledger_info *chain = NULL;
  size_t n = sl_ml_chain(t->ml, &chain);
  uint64_t backlog = any ? bytes_after(chain, n, slowest) : 0;
  bool over = backlog > (uint64_t)t->backlog_quota_bytes;
  if (t->backlog_policy == SLUICE__V1__BACKLOG_POLICY__BACKLOG_POLICY_CONSUMER_EVICTION) {
    if (over) {
      sl_ml_pos keep = keep_from(chain, n, t->backlog_quota_bytes);
      sl_log(SL_LOG_INFO, "event=backlog_evicting partition=%s backlog_bytes=%" PRIu64
             " quota_bytes=%lld keep_from=%" PRIu64 ":%" PRId64, t->name, backlog,
             (long long)t->backlog_quota_bytes, keep.ledger_id, keep.entry_id);
      pc_expiry_expire_all(pc, keep);
    }
    t->backlog_bytes = backlog;
  } else {
    pt_backlog_over(t, over, backlog);
  }
  free(chain);
}
