/*
 * Range reads of a read's chunk (ledger.h "Reads"; the window is reader.c's).
 *
 * A chunk [first, last] lies in one ensemble segment. sl_quorum_cover picks
 * bookies of that ensemble whose striped ReadEntries ranges (bookie.proto)
 * together hold every entry of it, starting from a slot that rotates per
 * chunk so that a backlog read spreads over the ensemble; with E=3, Qw=2 two
 * streams serve the chunk and no entry comes twice. Each stream (rd_range)
 * hands its entries to the window in the order they come (sl_rd_take checks
 * their CRC32C). Whatever a stream did not bring goes to reader.c's
 * ReadEntry path (sl_rd_retry), so a range never decides a read's outcome.
 *
 * Invariants
 *  1. A stream's entries come ascending: every entry it serves below `from`
 *     was either taken or handed to sl_rd_retry, exactly once. An entry it
 *     skipped (a bookie breaking the order) is handed over as well.
 *  2. A stream that sends nothing for stall_ms (speculative_read_ms, or
 *     read_timeout_ms when speculation is off) is cancelled, so a silent
 *     bookie delays its entries about as long as it delays a ReadEntry, and
 *     its slot gets no more ranges in this read's segment (op->shunned;
 *     the same for a stream that failed).
 *  3. Each open stream holds one reference of op, dropped in on_done (on the
 *     serial); on_release only frees the rd_range.
 * All callbacks run on the handle's serial.
 */
#include <stdlib.h>

#include "broker/ledger/ledger_int.h"

struct rd_range {
  rd_op *op;
  rd_range *next;          /* in op->ranges while open */
  sl_rpc_astream *s;
  sl_quorum_pick pick;     /* the entries it serves */
  int64_t from;            /* next entry it may bring (invariant 1) */
  int64_t last;
  int stall_ms;
  sl_timer stall;          /* invariant 2 */
};

static void unlink_range(rd_range *r) {
  for (rd_range **p = &r->op->ranges; *p != NULL; p = &(*p)->next) {
    if (*p == r) {
      *p = r->next;
      return;
    }
  }
}

/* Hands the entries r serves in [r->from, to] to the ReadEntry path. */
static void hand_over(rd_range *r, int64_t to) {
  rd_op *op = r->op;
  for (; r->from <= to && !op->finished; r->from++) {
    if (!sl_quorum_serves(&op->lh->q, &r->pick, r->from)) continue;
    rd_slot *sl = &op->ring[r->from % SL_RD_WINDOW];
    if (sl->entry != r->from || sl->have) continue;
    sl->ranged--;
    sl_rd_retry(op, sl);
  }
}

static void shun_slot(rd_op *op, size_t seg, uint32_t slot) {
  if (seg != op->shunned_seg) op->shunned = 0;
  op->shunned_seg = seg;
  op->shunned |= UINT64_C(1) << slot;
}

static void on_message(sl_rpc_astream *s, const ProtobufCMessage *msg, void *arg) {
  rd_range *r = arg;
  rd_op *op = r->op;
  if (op->finished) return;
  const Sluice__V1__ReadEntriesResponse *m = (const Sluice__V1__ReadEntriesResponse *)msg;
  sl_timer_start(&r->stall, r->stall_ms);
  for (size_t i = 0; i < m->n_entries && !op->finished; i++) {
    const Sluice__V1__Entry *e = m->entries[i];
    if (e->entry_id < r->from || e->entry_id > r->last ||
        !sl_quorum_serves(&op->lh->q, &r->pick, e->entry_id)) {
      /* Not what we asked for: end the stream (what it took was checked
       * entry by entry); the rest goes the ReadEntry way. */
      sl_rpc_astream_cancel(s);
      return;
    }
    hand_over(r, e->entry_id - 1);
    if (op->finished) return;
    r->from = e->entry_id + 1;
    rd_slot *sl = &op->ring[e->entry_id % SL_RD_WINDOW];
    if (sl->entry != e->entry_id || sl->have) continue;
    sl->ranged--;
    if (!sl_rd_take(op, sl, e->payload.data, e->payload.len, e->crc32c))
      sl_rd_retry(op, sl);
  }
}

static void on_done(sl_rpc_astream *s, sl_status st, const char *details, void *arg) {
  (void)details;
  rd_range *r = arg;
  rd_op *op = r->op;
  sl_timer_stop(&r->stall);
  unlink_range(r);
  if (!op->finished) {
    if (st != SL_OK) shun_slot(op, sl_lh_segment_of(op->lh->info, r->last), r->pick.slot);
    hand_over(r, r->last);
  }
  sl_rd_put(op);
  sl_rpc_astream_unref(s);
}

static void on_release(void *arg) { free(arg); }

static void stall_run(void *arg) {
  rd_range *r = arg;
  sl_rpc_astream_cancel(r->s);
}

/* Opens one stream for pick over [first, last]; false if it could not. */
static bool open_range(rd_op *op, const char *bookie, sl_quorum_pick pick, int64_t first,
                       int64_t last) {
  sl_ledger *lh = op->lh;
  sl_rpc_channel *ch = sl_lc_channel(lh->client, bookie);
  rd_range *r = ch != NULL ? calloc(1, sizeof(*r)) : NULL;
  if (r == NULL) return false;
  r->op = op;
  r->pick = pick;
  r->from = first;
  r->last = last;
  int spec = lh->client->opts.speculative_read_ms;
  r->stall_ms = spec > 0 ? spec : lh->client->opts.read_timeout_ms;
  sl_timer_init(&r->stall, lh->serial, stall_run, r);
  Sluice__V1__ReadEntriesRequest req = SLUICE__V1__READ_ENTRIES_REQUEST__INIT;
  req.ledger_id = lh->id;
  req.first_entry_id = first;
  req.last_entry_id = last;
  req.ensemble_size = lh->q.e;
  req.write_quorum = pick.depth;
  req.ensemble_index = pick.slot;
  /* No deadline: the stall timer ends a stream that stops moving. */
  sl_rpc_call_opts o = sl_lc_bookie_opts(lh->client, lh->serial, 0);
  static const sl_rpc_astream_handler h = {on_message, NULL, on_done, on_release};
  if (sl_bookie_service_read_entries_astream_open(ch, &req, &o, &h, r, &r->s, NULL) != SL_OK) {
    free(r);
    return false;
  }
  /* Callbacks are posted on the serial we run on: none runs before this. */
  sl_timer_start(&r->stall, r->stall_ms);
  r->next = op->ranges;
  op->ranges = r;
  op->outstanding++;
  for (int64_t e = first; e <= last; e++)
    if (sl_quorum_serves(&lh->q, &pick, e)) op->ring[e % SL_RD_WINDOW].ranged++;
  return true;
}

void sl_rd_range_start(rd_op *op, int64_t first, int64_t last) {
  sl_ledger *lh = op->lh;
  size_t seg_i = sl_lh_segment_of(lh->info, first);
  const Sluice__V1__EnsembleSegment *seg = lh->info->ensembles[seg_i];
  uint64_t usable = 0;
  for (uint32_t s = 0; s < lh->q.e && s < seg->n_bookie_ids; s++) usable |= UINT64_C(1) << s;
  if (seg_i == op->shunned_seg) usable &= ~op->shunned;
  sl_quorum_pick picks[SL_QUORUM_MAX_ENSEMBLE];
  uint32_t n = sl_quorum_cover(&lh->q, first, last, op->rotation++ % lh->q.e, usable, picks);
  for (uint32_t i = 0; i < n; i++) {
    /* A stream that cannot open leaves its entries' ranged at 0: the
     * caller reads them with ReadEntry. */
    if (!open_range(op, seg->bookie_ids[picks[i].slot], picks[i], first, last))
      shun_slot(op, seg_i, picks[i].slot);
  }
}

void sl_rd_range_cancel(rd_op *op) {
  for (rd_range *r = op->ranges; r != NULL; r = r->next) sl_rpc_astream_cancel(r->s);
}
