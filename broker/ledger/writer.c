/*
 * The writer: create, append, ensemble change and close (design and
 * invariants in ledger.h). Everything after the caller-side packing in
 * sl_ledger_append runs on the handle's serial; functions named *_run or
 * *_done are the serial's entry points.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/ledger/ledger_int.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"

#define UPDATE_WRITE SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_WRITE
#define STATE_OPEN SLUICE__V1__LEDGER_STATE__LEDGER_STATE_OPEN
#define STATE_CLOSED SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED

/* Entries beyond this many queued sends per bookie wait for on_writable. */
#define SEND_QUEUE_MAX 4096
/* Delay before a metadata update is tried again after a transient error,
 * and before a bookie that answered BUSY gets the pending entries again. */
#define RETRY_MS 100
/* The LAC rides on the next add; when no add follows within this long, a
 * WriteLac tells the bookies, so that readers and recovery see it. */
#define LAC_FLUSH_MS 200

static sl_ledger_state state_of(sl_ledger *lh) {
  return (sl_ledger_state)atomic_load(&lh->state);
}

static void set_state(sl_ledger *lh, sl_ledger_state st) {
  atomic_store(&lh->state, (int)st);
}

/* FENCED and FAILED refuse every write; so does a destroyed handle. */
static bool stopped(sl_ledger *lh) {
  sl_ledger_state s = state_of(lh);
  return lh->destroyed || s == SL_LEDGER_FENCED || s == SL_LEDGER_FAILED ||
         s == SL_LEDGER_CLOSED;
}

static uint64_t bit(uint32_t slot) { return UINT64_C(1) << slot; }

static void go_fenced(sl_ledger *lh, sl_status st, const char *details);
static void go_failed(sl_ledger *lh, sl_status st, const char *details);
static void change_start(sl_ledger *lh);
static void close_cas(sl_ledger *lh);
static void complete_front(sl_ledger *lh);

/* ------------------------------------------------------------ add streams */

static void slot_failed(sl_ledger *lh, uint32_t s, sl_status st,
                        const char *details);

static void pump(sl_ledger *lh, uint32_t s) {
  lh_slot *sl = &lh->slots[s];
  if (!sl->add || sl->failed || stopped(lh)) return;
  int64_t end = sl_addq_next(&lh->pending);
  if (sl->next_send < lh->pending.first) sl->next_send = lh->pending.first;
  int64_t e = sl->next_send;
  for (; e < end; e++) {
    if (!(sl_quorum_write_set(&lh->q, e) & bit(s))) continue;
    lh_add *a = sl_addq_get(&lh->pending, e)->data;
    sl_status st = sl_rpc_astream_send_packed(sl->add, a->packed);
    if (st == SL_EBUSY) break; /* on_writable resumes at e */
    if (st != SL_OK) {
      sl->next_send = e;
      slot_failed(lh, s, st, "send refused");
      return;
    }
  }
  sl->next_send = e;
}

static void add_on_message(sl_rpc_astream *s, const ProtobufCMessage *msg,
                           void *arg) {
  (void)s;
  lh_stream *ctx = arg;
  if (ctx->detached) return;
  const Sluice__V1__AddEntryResponse *r = (const Sluice__V1__AddEntryResponse *)msg;
  sl_status st = sl_lc_add_status(r);
  if (st != SL_OK) {
    slot_failed(ctx->lh, ctx->slot, st, r->error);
    return;
  }
  ctx->lh->slots[ctx->slot].last_ack_ms = sl_clock_mono_ms();
  if (sl_addq_ack(&ctx->lh->pending, r->entry_id, ctx->slot))
    complete_front(ctx->lh);
}

static void add_on_writable(sl_rpc_astream *s, void *arg) {
  (void)s;
  lh_stream *ctx = arg;
  if (!ctx->detached) pump(ctx->lh, ctx->slot);
}

static void add_on_done(sl_rpc_astream *s, sl_status st, const char *details,
                        void *arg) {
  (void)s;
  lh_stream *ctx = arg;
  if (ctx->detached) return;
  /* A bookie ending the stream by itself is going away. */
  slot_failed(ctx->lh, ctx->slot, st == SL_OK ? SL_EUNAVAIL : st, details);
}

static void add_on_release(void *arg) {
  lh_stream *ctx = arg;
  sl_lh_unref(ctx->lh);
  free(ctx);
}

static sl_status slot_open(sl_ledger *lh, uint32_t s) {
  lh_slot *sl = &lh->slots[s];
  sl->ch = sl_lc_channel(lh->client, sl->bookie);
  if (!sl->ch) return SL_EUNAVAIL;
  lh_stream *ctx = calloc(1, sizeof(*ctx));
  if (!ctx) return SL_ENOMEM;
  ctx->lh = lh;
  ctx->slot = s;
  sl_lh_ref(lh);
  sl_rpc_call_opts o = sl_lc_bookie_opts(lh->client, lh->serial, 0);
  o.send_queue_max = SEND_QUEUE_MAX;
  const sl_rpc_astream_handler h = {add_on_message, add_on_writable,
                                    add_on_done, add_on_release};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_astream_open(sl->ch, SL_BOOKIE_SERVICE_ADD_ENTRY, NULL,
                                     &o, &h, ctx, &sl->add, &err);
  if (st != SL_OK) {
    sl_lh_unref(lh);
    free(ctx);
    sl->add = NULL;
    return st;
  }
  sl->sctx = ctx;
  sl->last_ack_ms = sl_clock_mono_ms();
  return SL_OK;
}

/* Stops listening to slot s's stream and cancels it. */
static void slot_detach(sl_ledger *lh, uint32_t s) {
  lh_slot *sl = &lh->slots[s];
  if (!sl->add) return;
  sl->sctx->detached = true;
  sl_rpc_astream_cancel(sl->add);
  sl_rpc_astream_unref(sl->add);
  sl->add = NULL;
  sl->sctx = NULL;
}

static bool is_fencing(sl_status st) {
  return st == SL_EFENCED || st == SL_ESTALE_EPOCH || st == SL_ECONFLICT;
}

/* Refusals another bookie would give too: replacing does not help. */
static bool is_fatal(sl_status st) {
  return st == SL_EPERM || st == SL_EBADCRC || st == SL_EINVAL ||
         st == SL_ETOOBIG || st == SL_EDELETED || st == SL_ENOMEM;
}

/* A bookie that answered BUSY is alive but full of work: pause its stream
 * and resend what is pending to it a little later (resends are idempotent). */
static void slot_busy(sl_ledger *lh, uint32_t s) {
  lh_slot *sl = &lh->slots[s];
  if (sl->busy) return;
  sl_log(SL_LOG_DEBUG, "event=bookie_busy ledger=%" PRIu64 " bookie=%s", lh->id, sl->bookie);
  slot_detach(lh, s);
  sl->busy = true;
  if (!sl_timer_active(&lh->busy)) sl_timer_start(&lh->busy, RETRY_MS);
}

static void busy_run(void *arg) {
  sl_ledger *lh = arg;
  for (uint32_t s = 0; s < lh->q.e && !stopped(lh); s++) {
    lh_slot *sl = &lh->slots[s];
    if (!sl->busy) continue;
    sl->busy = false;
    if (sl->failed) continue;
    sl->next_send = lh->pending.first;
    if (slot_open(lh, s) == SL_OK)
      pump(lh, s);
    else
      slot_failed(lh, s, SL_EUNAVAIL, "cannot reopen the stream");
  }
}

static void slot_failed(sl_ledger *lh, uint32_t s, sl_status st,
                        const char *details) {
  if (stopped(lh)) return;
  if (st == SL_EBUSY) {
    slot_busy(lh, s);
    return;
  }
  if (is_fencing(st)) {
    go_fenced(lh, st, details);
    return;
  }
  if (is_fatal(st)) {
    go_failed(lh, st, details);
    return;
  }
  lh_slot *sl = &lh->slots[s];
  if (sl->failed) return;
  sl->busy = false;
  sl_log(SL_LOG_WARN,
         "event=bookie_failed ledger=%" PRIu64 " bookie=%s slot=%u status=%s "
         "details=\"%s\"",
         lh->id, sl->bookie, s, sl_status_str(st), details ? details : "");
  slot_detach(lh, s);
  sl->failed = true;
  sl_lc_bookie_failed(lh->client, sl->bookie);
  char **ids = realloc(lh->failed_ids, (lh->n_failed_ids + 1) * sizeof(*ids));
  char *id = strdup(sl->bookie);
  if (!ids || !id) {
    free(id);
    if (ids) lh->failed_ids = ids;
    go_failed(lh, SL_ENOMEM, "ledger: out of memory");
    return;
  }
  lh->failed_ids = ids;
  lh->failed_ids[lh->n_failed_ids++] = id;
  /* Its acks do not count in the new segment (addq invariant 3). */
  sl_addq_forget_slot(&lh->pending, s);
  if (!lh->changing) change_start(lh);
}

/* ------------------------------------------------------- timers, teardown */

static int tick_ms(const sl_ledger *lh) {
  int t = lh->client->opts.add_timeout_ms / 5;
  return t < 10 ? 10 : t > 1000 ? 1000 : t;
}

static void arm_tick(sl_ledger *lh) {
  if (lh->tick_armed || stopped(lh)) return;
  lh->tick_armed = true;
  sl_timer_start(&lh->tick, tick_ms(lh));
}

/* Add timeouts: a bookie of the oldest pending entry's write set that has
 * not acked it within add_timeout_ms, and has acked nothing else in that
 * time either, is treated as failed (a SIGSTOPped bookie keeps its
 * connection open and says nothing; a slow one still makes progress). */
static void tick_run(void *arg) {
  sl_ledger *lh = arg;
  lh->tick_armed = false;
  if (stopped(lh)) return;
  sl_addq_item *it = sl_addq_front(&lh->pending);
  if (!it) return; /* re-armed by the next append */
  int64_t now = sl_clock_mono_ms();
  if (now - it->sent_ms >= lh->client->opts.add_timeout_ms) {
    uint64_t ws = sl_quorum_write_set(&lh->q, it->entry);
    for (uint32_t s = 0; s < lh->q.e; s++)
      if ((ws & bit(s)) && !(it->acked & bit(s)) && !lh->slots[s].failed &&
          now - lh->slots[s].last_ack_ms >= lh->client->opts.add_timeout_ms)
        slot_failed(lh, s, SL_ETIMEDOUT, "add timed out");
  }
  arm_tick(lh);
}

static void retry_run(void *arg) {
  sl_ledger *lh = arg;
  void (*fn)(sl_ledger *) = lh->retry_fn;
  lh->retry_fn = NULL;
  if (fn && !lh->destroyed) fn(lh);
}

static void retry_later(sl_ledger *lh, void (*fn)(sl_ledger *)) {
  lh->retry_fn = fn;
  sl_timer_start(&lh->retry, RETRY_MS);
}

static void finish_close(sl_ledger *lh, sl_status st, const char *details) {
  sl_ledger_close_cb cb = lh->close_cb;
  if (!cb) return;
  lh->close_cb = NULL;
  cb(st, details, lh->close_arg);
  sl_lh_unref(lh); /* the close's reference */
}

/* An append leaves the pending list (completed or failed). */
static void pending_drop(sl_ledger *lh, const lh_add *a) {
  atomic_fetch_sub(&lh->pending_count, 1);
  atomic_fetch_sub(&lh->pending_bytes, a->len);
  sl_metrics_gauge_add(sl_lc_m.pending_bytes, -(double)a->len);
}

static void add_free(lh_add *a) {
  sl_rpc_packed_unref(a->packed);
  free(a);
}

void sl_lh_writer_stop(sl_ledger *lh, sl_status st, const char *details) {
  if (!lh->slots) {
    if (lh->destroyed) finish_close(lh, SL_ECANCELED, details);
    return;
  }
  for (uint32_t s = 0; s < lh->q.e; s++) slot_detach(lh, s);
  sl_timer_stop(&lh->tick);
  lh->tick_armed = false;
  sl_timer_stop(&lh->retry);
  lh->retry_fn = NULL;
  sl_timer_stop(&lh->busy);
  sl_timer_stop(&lh->lac_timer);
  /* In entry order (invariant 2), none OK after a failure (invariant 3). */
  while (sl_addq_front(&lh->pending)) {
    lh_add *a = sl_addq_pop(&lh->pending);
    pending_drop(lh, a);
    a->cb(st, a->entry, a->arg);
    add_free(a);
  }
  if (lh->destroyed) finish_close(lh, SL_ECANCELED, details);
}

static void go_fenced(sl_ledger *lh, sl_status st, const char *details) {
  if (stopped(lh)) return;
  sl_log(SL_LOG_WARN,
         "event=ledger_fenced ledger=%" PRIu64 " status=%s details=\"%s\"",
         lh->id, sl_status_str(st), details ? details : "");
  set_state(lh, SL_LEDGER_FENCED);
  lh->fail_st = SL_EFENCED;
  sl_lh_writer_stop(lh, SL_EFENCED, details);
  if (lh->on_fenced)
    lh->on_fenced(lh, st == SL_ESTALE_EPOCH ? st : SL_EFENCED,
                  details ? details : "", lh->fenced_arg);
  finish_close(lh, SL_EFENCED, details ? details : "ledger: fenced");
}

static void go_failed(sl_ledger *lh, sl_status st, const char *details) {
  if (stopped(lh)) return;
  sl_log(SL_LOG_ERROR,
         "event=ledger_failed ledger=%" PRIu64 " status=%s details=\"%s\"",
         lh->id, sl_status_str(st), details ? details : "");
  set_state(lh, SL_LEDGER_FAILED);
  lh->fail_st = st;
  lh->changing = false;
  sl_lh_writer_stop(lh, st, details);
  /* A close asked for before or after still records the end (LAC). */
  if (lh->close_cb && !lh->close_cas_inflight) close_cas(lh);
}

/* --------------------------------------------------------------- appends */

static void lac_written_done(sl_status st, const char *details, ProtobufCMessage *resp,
                             void *arg) {
  (void)st; /* best effort: a refusal also comes back on the next add */
  (void)details;
  (void)arg;
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
}

static void lac_run(void *arg) {
  sl_ledger *lh = arg;
  int64_t lac = atomic_load(&lh->lac);
  if (stopped(lh) || lac <= lh->lac_written) return;
  /* While adds keep coming they carry the LAC: a WriteLac then would only
   * cost each bookie a journal sync that competes with the adds'. */
  int64_t quiet = sl_clock_mono_ms() - lh->last_add_ms;
  if (sl_addq_front(&lh->pending) || quiet < LAC_FLUSH_MS) {
    sl_timer_start(&lh->lac_timer, sl_addq_front(&lh->pending) ? LAC_FLUSH_MS
                                                                : LAC_FLUSH_MS - quiet);
    return;
  }
  Sluice__V1__WriteLacRequest req = SLUICE__V1__WRITE_LAC_REQUEST__INIT;
  req.ledger_id = lh->id;
  req.lac = lac;
  req.password.data = lh->password;
  req.password.len = lh->password_len;
  req.epoch = lh->epoch;
  sl_rpc_call_opts o =
      sl_lc_bookie_opts(lh->client, lh->serial, lh->client->opts.add_timeout_ms);
  for (uint32_t s = 0; s < lh->q.e; s++)
    if (!lh->slots[s].failed && lh->slots[s].ch)
      sl_rpc_unary_start(lh->slots[s].ch, SL_BOOKIE_SERVICE_WRITE_LAC, &req.base, &o,
                         lac_written_done, NULL, NULL, NULL);
  lh->lac_written = lac;
}

static void complete_front(sl_ledger *lh) {
  while (!lh->changing && !stopped(lh) && sl_addq_front_complete(&lh->pending)) {
    lh_add *a = sl_addq_pop(&lh->pending);
    atomic_store(&lh->lac, a->entry);
    atomic_store(&lh->last_entry, a->entry);
    pending_drop(lh, a);
    atomic_fetch_add(&lh->bytes_appended, a->len);
    sl_metrics_histogram_observe_since(sl_lc_m.add_seconds, a->start_ns);
    a->cb(SL_OK, a->entry, a->arg);
    add_free(a);
    if (!sl_timer_active(&lh->lac_timer)) sl_timer_start(&lh->lac_timer, LAC_FLUSH_MS);
  }
  if (state_of(lh) == SL_LEDGER_CLOSING && !lh->changing &&
      !sl_addq_front(&lh->pending) && !lh->close_cas_inflight)
    close_cas(lh);
}

static void append_run(void *arg) {
  lh_add *a = arg;
  sl_ledger *lh = a->lh;
  if (stopped(lh)) {
    sl_status st = lh->destroyed ? SL_ECANCELED : lh->fail_st;
    pending_drop(lh, a);
    a->cb(st, a->entry, a->arg);
    add_free(a);
    sl_lh_unref(lh);
    return;
  }
  SL_ASSERT(a->entry == sl_addq_next(&lh->pending)); /* invariant 1 */
  if (sl_addq_push(&lh->pending, a, sl_clock_mono_ms()) != SL_OK) {
    go_failed(lh, SL_ENOMEM, "ledger: out of memory");
    pending_drop(lh, a);
    a->cb(SL_ENOMEM, a->entry, a->arg);
    add_free(a);
    sl_lh_unref(lh);
    return;
  }
  lh->last_add_ms = sl_clock_mono_ms();
  for (uint32_t i = 0; i < lh->q.qw; i++)
    pump(lh, sl_quorum_slot(&lh->q, a->entry, i));
  arm_tick(lh);
  sl_lh_unref(lh); /* the post's reference; the handle holds `a` now */
}

sl_status sl_ledger_append(sl_ledger *lh, const void *data, size_t len,
                           sl_ledger_append_cb cb, void *arg, int64_t *entry_id,
                           sl_err *err) {
  if (!lh || !cb || (!data && len))
    return sl_err_set(err, SL_EINVAL, "ledger: append needs a callback and data");
  if (len > lh->client->opts.max_entry_bytes)
    return sl_err_set(err, SL_ETOOBIG, "ledger %" PRIu64 ": entry of %zu bytes "
                      "over the limit of %u", lh->id, len,
                      lh->client->opts.max_entry_bytes);
  if (!lh->writer || atomic_load(&lh->close_called))
    return sl_err_set(err, SL_EPRECOND, "ledger %" PRIu64 ": not open for writing",
                      lh->id);
  if (state_of(lh) == SL_LEDGER_FENCED)
    return sl_err_set(err, SL_EFENCED, "ledger %" PRIu64 ": fenced", lh->id);
  int64_t e = atomic_load(&lh->next_entry);
  Sluice__V1__AddEntryRequest req = SLUICE__V1__ADD_ENTRY_REQUEST__INIT;
  req.ledger_id = lh->id;
  req.entry_id = e;
  req.lac = atomic_load(&lh->lac);
  req.payload.data = (uint8_t *)data;
  req.payload.len = len;
  req.crc32c = sl_entry_crc(lh->id, e, data, len);
  req.epoch = lh->epoch;
  req.password.data = lh->password;
  req.password.len = lh->password_len;
  req.tag = (uint64_t)e;
  lh_add *a = calloc(1, sizeof(*a));
  if (!a) return sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
  sl_status st = sl_rpc_pack(&req.base, 0, &a->packed, err);
  if (st != SL_OK) {
    free(a);
    return st;
  }
  a->lh = lh;
  a->entry = e;
  a->len = len;
  a->start_ns = sl_metrics_now_ns();
  a->cb = cb;
  a->arg = arg;
  atomic_store(&lh->next_entry, e + 1); /* only now: no gap on failure */
  atomic_fetch_add(&lh->pending_count, 1);
  atomic_fetch_add(&lh->pending_bytes, len);
  sl_metrics_gauge_add(sl_lc_m.pending_bytes, (double)len);
  if (entry_id) *entry_id = e;
  sl_lh_ref(lh);
  sl_serial_post(lh->serial, append_run, a);
  return SL_OK;
}

/* ------------------------------------------------------- ensemble change */

static void change_send_cas(sl_ledger *lh);

static void change_clear(sl_ledger *lh) {
  for (uint32_t s = 0; s < lh->q.e; s++) {
    free(lh->chg_ids[s]);
    free(lh->chg_instances[s]);
    lh->chg_ids[s] = lh->chg_instances[s] = NULL;
  }
  lh->chg_mask = 0;
}

static bool change_deadline_passed(sl_ledger *lh, sl_status st,
                                   const char *details) {
  if (sl_clock_mono_ms() < lh->change_deadline_ms) return false;
  go_failed(lh, st == SL_OK ? SL_EUNAVAIL : st, details);
  return true;
}

static void change_pick(sl_ledger *lh);

static void change_listed(sl_status st, const char *details, void *arg) {
  sl_ledger *lh = arg;
  if (!stopped(lh)) {
    if (st != SL_OK) {
      if (!change_deadline_passed(lh, st, details)) retry_later(lh, change_pick);
    } else {
      change_pick(lh);
    }
  }
  sl_lh_unref(lh);
}

static void change_refresh(sl_ledger *lh) {
  sl_lh_ref(lh);
  sl_lc_refresh(lh->client, lh->serial, true, change_listed, lh);
}

/* Picks a replacement for every failed slot, then writes the segment. */
static void change_pick(sl_ledger *lh) {
  if (stopped(lh)) return;
  change_clear(lh);
  const char *taken[SL_QUORUM_MAX_ENSEMBLE];
  size_t n_taken = 0, want = 0;
  uint32_t failed[SL_QUORUM_MAX_ENSEMBLE];
  for (uint32_t s = 0; s < lh->q.e; s++) {
    if (lh->slots[s].failed)
      failed[want++] = s;
    else
      taken[n_taken++] = lh->slots[s].bookie;
  }
  char *ids[SL_QUORUM_MAX_ENSEMBLE], *inst[SL_QUORUM_MAX_ENSEMBLE];
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_lc_pick(lh->client, (const char *const *)lh->failed_ids,
                            lh->n_failed_ids, taken, n_taken, want, ids, inst,
                            &err);
  if (st != SL_OK) {
    if (!change_deadline_passed(lh, st, err.msg)) retry_later(lh, change_refresh);
    return;
  }
  for (size_t k = 0; k < want; k++) {
    lh->chg_ids[failed[k]] = ids[k];
    lh->chg_instances[failed[k]] = inst[k];
    lh->chg_mask |= bit(failed[k]);
  }
  change_send_cas(lh);
}

static void change_start(sl_ledger *lh) {
  lh->changing = true;
  if (state_of(lh) == SL_LEDGER_WRITING) set_state(lh, SL_LEDGER_CHANGING);
  lh->change_deadline_ms = sl_clock_mono_ms() + 3 * lh->client->opts.metadata_timeout_ms;
  change_refresh(lh);
}

/* Swaps the new bookies into their slots and resends what is pending. */
static void change_apply(sl_ledger *lh) {
  int64_t now = sl_clock_mono_ms();
  for (size_t i = 0; i < lh->pending.len; i++)
    sl_addq_get(&lh->pending, lh->pending.first + (int64_t)i)->sent_ms = now;
  uint64_t opened = 0;
  for (uint32_t s = 0; s < lh->q.e; s++) {
    if (!(lh->chg_mask & bit(s))) continue;
    lh_slot *sl = &lh->slots[s];
    sl_lc_usage(lh->client, sl->bookie, -1);
    free(sl->bookie);
    free(sl->instance);
    sl->bookie = lh->chg_ids[s];
    sl->instance = lh->chg_instances[s];
    lh->chg_ids[s] = lh->chg_instances[s] = NULL;
    sl_lc_usage(lh->client, sl->bookie, +1);
    sl->failed = false;
    sl->next_send = lh->pending.first;
    if (slot_open(lh, s) == SL_OK) opened |= bit(s);
    else sl->failed = true; /* replaced again below */
  }
  lh->chg_mask = 0;
  atomic_fetch_add(&lh->ensemble_changes, 1);
  sl_metrics_counter_inc(sl_lc_m.ensemble_changes);
  for (uint32_t s = 0; s < lh->q.e; s++)
    if (lh->slots[s].failed) {
      change_start(lh); /* still changing: another bookie failed meanwhile */
      return;
    }
  lh->changing = false;
  if (state_of(lh) == SL_LEDGER_CHANGING) set_state(lh, SL_LEDGER_WRITING);
  for (uint32_t s = 0; s < lh->q.e; s++)
    if (opened & bit(s)) pump(lh, s);
  complete_front(lh);
}

static void change_reread_done(sl_status st, const char *details,
                               ProtobufCMessage *resp, void *arg);

static void change_cas_done(sl_status st, const char *details,
                            ProtobufCMessage *resp, void *arg) {
  sl_ledger *lh = arg;
  Sluice__V1__LedgerResponse *r = (Sluice__V1__LedgerResponse *)resp;
  if (stopped(lh)) goto out;
  if (st == SL_OK) {
    sl_log(SL_LOG_INFO, "event=ensemble_changed ledger=%" PRIu64 " first_entry=%" PRId64,
           lh->id, atomic_load(&lh->lac) + 1);
    sl_lh_set_info(lh, r->info, r->version);
    r->info = NULL;
    change_apply(lh);
  } else if (st == SL_EVERSION) {
    /* Someone changed the metadata, maybe our own unknown-outcome CAS. */
    Sluice__V1__GetLedgerRequest g = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
    g.ledger_id = lh->id;
    sl_rpc_call_opts o = sl_lc_meta_opts(lh->client, lh->serial);
    sl_lh_ref(lh);
    if (sl_rpc_unary_start(lh->client->opts.metadata, SL_METADATA_SERVICE_GET_LEDGER,
                           &g.base, &o, change_reread_done, lh, NULL, NULL) != SL_OK) {
      sl_lh_unref(lh);
      retry_later(lh, change_send_cas);
    }
  } else if (st == SL_ESTALE_EPOCH || st == SL_EPRECOND || st == SL_EFENCED) {
    go_fenced(lh, st, details);
  } else if (st == SL_EINVAL || st == SL_ENOTFOUND || st == SL_EDELETED) {
    go_failed(lh, st, details);
  } else if (!change_deadline_passed(lh, st, details)) {
    retry_later(lh, change_send_cas);
  }
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  sl_lh_unref(lh);
}

/* True if fresh metadata still lets us write: OPEN and created by us. */
static bool still_ours(const sl_ledger *lh, const Sluice__V1__LedgerInfo *info) {
  return info->state == STATE_OPEN && info->owner_epoch == lh->epoch;
}

static void change_reread_done(sl_status st, const char *details,
                               ProtobufCMessage *resp, void *arg) {
  sl_ledger *lh = arg;
  Sluice__V1__LedgerResponse *r = (Sluice__V1__LedgerResponse *)resp;
  if (stopped(lh)) goto out;
  if (st != SL_OK) {
    if (!change_deadline_passed(lh, st, details)) retry_later(lh, change_send_cas);
  } else if (!still_ours(lh, r->info)) {
    go_fenced(lh, SL_EFENCED, "ledger: metadata no longer open for this writer");
  } else {
    sl_lh_set_info(lh, r->info, r->version);
    r->info = NULL;
    change_send_cas(lh);
  }
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  sl_lh_unref(lh);
}

static void change_send_cas(sl_ledger *lh) {
  if (stopped(lh)) return;
  Sluice__V1__LedgerInfo info = *lh->info;
  size_t n = lh->info->n_ensembles;
  int64_t first = atomic_load(&lh->lac) + 1;
  Sluice__V1__EnsembleSegment seg = SLUICE__V1__ENSEMBLE_SEGMENT__INIT;
  char *ids[SL_QUORUM_MAX_ENSEMBLE], *inst[SL_QUORUM_MAX_ENSEMBLE];
  for (uint32_t s = 0; s < lh->q.e; s++) {
    bool repl = lh->chg_mask & bit(s);
    ids[s] = repl ? lh->chg_ids[s] : lh->slots[s].bookie;
    inst[s] = repl ? lh->chg_instances[s] : lh->slots[s].instance;
  }
  seg.first_entry = first;
  seg.n_bookie_ids = seg.n_instance_ids = lh->q.e;
  seg.bookie_ids = ids;
  seg.instance_ids = inst;
  Sluice__V1__EnsembleSegment **ens = malloc((n + 1) * sizeof(*ens));
  if (!ens) {
    go_failed(lh, SL_ENOMEM, "ledger: out of memory");
    return;
  }
  memcpy(ens, lh->info->ensembles, n * sizeof(*ens));
  /* The last segment may be replaced only by one that starts where it does
   * (a change that wrote no entry yet); else a new one follows it. */
  SL_ASSERT(n > 0 && lh->info->ensembles[n - 1]->first_entry <= first);
  if (lh->info->ensembles[n - 1]->first_entry == first)
    ens[n - 1] = &seg;
  else
    ens[n++] = &seg;
  info.ensembles = ens;
  info.n_ensembles = n;
  Sluice__V1__UpdateLedgerRequest req = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  req.info = &info;
  req.expected_version = lh->version;
  req.epoch = lh->epoch;
  req.kind = UPDATE_WRITE;
  sl_rpc_call_opts o = sl_lc_meta_opts(lh->client, lh->serial);
  sl_lh_ref(lh);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_unary_start(lh->client->opts.metadata,
                                    SL_METADATA_SERVICE_UPDATE_LEDGER, &req.base,
                                    &o, change_cas_done, lh, NULL, &err);
  free(ens);
  if (st != SL_OK) {
    sl_lh_unref(lh);
    if (!change_deadline_passed(lh, st, err.msg)) retry_later(lh, change_send_cas);
  }
}

/* ----------------------------------------------------------------- close */

static void close_reread_done(sl_status st, const char *details,
                              ProtobufCMessage *resp, void *arg);

static void close_fail(sl_ledger *lh, sl_status st, const char *details) {
  if (state_of(lh) != SL_LEDGER_FENCED) set_state(lh, SL_LEDGER_FAILED);
  finish_close(lh, st, details);
}

static void close_cas_done(sl_status st, const char *details,
                           ProtobufCMessage *resp, void *arg) {
  sl_ledger *lh = arg;
  Sluice__V1__LedgerResponse *r = (Sluice__V1__LedgerResponse *)resp;
  lh->close_cas_inflight = false;
  if (lh->destroyed) goto out;
  if (st == SL_OK) {
    sl_lh_set_info(lh, r->info, r->version);
    r->info = NULL;
    atomic_store(&lh->last_entry, atomic_load(&lh->lac));
    set_state(lh, SL_LEDGER_CLOSED);
    sl_lh_writer_stop(lh, SL_EPRECOND, "ledger: closed");
    finish_close(lh, SL_OK, "");
  } else if (st == SL_EVERSION) {
    Sluice__V1__GetLedgerRequest g = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
    g.ledger_id = lh->id;
    sl_rpc_call_opts o = sl_lc_meta_opts(lh->client, lh->serial);
    sl_lh_ref(lh);
    lh->close_cas_inflight = true;
    if (sl_rpc_unary_start(lh->client->opts.metadata, SL_METADATA_SERVICE_GET_LEDGER,
                           &g.base, &o, close_reread_done, lh, NULL, NULL) != SL_OK) {
      lh->close_cas_inflight = false;
      sl_lh_unref(lh);
      retry_later(lh, close_cas);
    }
  } else if (st == SL_ESTALE_EPOCH || st == SL_EPRECOND || st == SL_EFENCED) {
    if (state_of(lh) == SL_LEDGER_FAILED)
      finish_close(lh, SL_EFENCED, details);
    else
      go_fenced(lh, st, details);
  } else if (sl_clock_mono_ms() < lh->close_deadline_ms &&
             st != SL_EINVAL && st != SL_ENOTFOUND) {
    retry_later(lh, close_cas);
  } else {
    close_fail(lh, st, details);
  }
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  sl_lh_unref(lh);
}

static void close_reread_done(sl_status st, const char *details,
                              ProtobufCMessage *resp, void *arg) {
  sl_ledger *lh = arg;
  Sluice__V1__LedgerResponse *r = (Sluice__V1__LedgerResponse *)resp;
  lh->close_cas_inflight = false;
  if (lh->destroyed) goto out;
  if (st != SL_OK) {
    if (sl_clock_mono_ms() < lh->close_deadline_ms) retry_later(lh, close_cas);
    else close_fail(lh, st, details);
  } else if (r->info->state == STATE_CLOSED &&
             r->info->last_entry_id == atomic_load(&lh->lac) &&
             r->info->owner_epoch == lh->epoch && r->info->recovery_epoch == 0) {
    /* Our own close, whose answer was lost. */
    sl_lh_set_info(lh, r->info, r->version);
    r->info = NULL;
    set_state(lh, SL_LEDGER_CLOSED);
    sl_lh_writer_stop(lh, SL_EPRECOND, "ledger: closed");
    finish_close(lh, SL_OK, "");
  } else if (!still_ours(lh, r->info)) {
    if (state_of(lh) == SL_LEDGER_FAILED)
      finish_close(lh, SL_EFENCED, "ledger: closed by another owner");
    else
      go_fenced(lh, SL_EFENCED, "ledger: metadata no longer open for this writer");
  } else {
    sl_lh_set_info(lh, r->info, r->version);
    r->info = NULL;
    close_cas(lh);
  }
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  sl_lh_unref(lh);
}

static void close_cas(sl_ledger *lh) {
  if (lh->destroyed || !lh->close_cb) return;
  Sluice__V1__LedgerInfo info = *lh->info;
  info.state = STATE_CLOSED;
  info.last_entry_id = atomic_load(&lh->lac);
  info.length_bytes = atomic_load(&lh->bytes_appended);
  Sluice__V1__UpdateLedgerRequest req = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  req.info = &info;
  req.expected_version = lh->version;
  req.epoch = lh->epoch;
  req.kind = UPDATE_WRITE;
  sl_rpc_call_opts o = sl_lc_meta_opts(lh->client, lh->serial);
  sl_lh_ref(lh);
  lh->close_cas_inflight = true;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_unary_start(lh->client->opts.metadata,
                                    SL_METADATA_SERVICE_UPDATE_LEDGER, &req.base,
                                    &o, close_cas_done, lh, NULL, &err);
  if (st != SL_OK) {
    lh->close_cas_inflight = false;
    sl_lh_unref(lh);
    if (sl_clock_mono_ms() < lh->close_deadline_ms) retry_later(lh, close_cas);
    else close_fail(lh, st, err.msg);
  }
}

typedef struct close_op {
  sl_ledger *lh;
  sl_ledger_close_cb cb;
  void *arg;
} close_op;

static void close_run(void *arg) {
  close_op *op = arg;
  sl_ledger *lh = op->lh;
  lh->close_cb = op->cb;
  lh->close_arg = op->arg;
  free(op);
  lh->close_deadline_ms = sl_clock_mono_ms() + 3 * lh->client->opts.metadata_timeout_ms;
  if (lh->destroyed) {
    finish_close(lh, SL_ECANCELED, "ledger: handle destroyed");
    return;
  }
  switch (state_of(lh)) {
    case SL_LEDGER_WRITING:
    case SL_LEDGER_CHANGING:
      set_state(lh, SL_LEDGER_CLOSING);
      complete_front(lh); /* closes at once if nothing is pending */
      break;
    case SL_LEDGER_FAILED:
      close_cas(lh);
      break;
    case SL_LEDGER_FENCED:
      finish_close(lh, SL_EFENCED, "ledger: fenced");
      break;
    default: /* CLOSED, READING: nothing to write */
      finish_close(lh, SL_OK, "");
      break;
  }
}

sl_status sl_ledger_close_async(sl_ledger *lh, sl_ledger_close_cb cb,
                                void *arg, sl_err *err) {
  if (!lh || !cb) return sl_err_set(err, SL_EINVAL, "ledger: close needs a callback");
  if (atomic_exchange(&lh->close_called, true))
    return sl_err_set(err, SL_EPRECOND, "ledger %" PRIu64 ": close already called",
                      lh->id);
  close_op *op = malloc(sizeof(*op));
  if (!op) {
    atomic_store(&lh->close_called, false);
    return sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
  }
  op->lh = lh;
  op->cb = cb;
  op->arg = arg;
  sl_lh_ref(lh); /* dropped by finish_close */
  sl_serial_post(lh->serial, close_run, op);
  return SL_OK;
}

/* ---------------------------------------------------------------- create */

/* Sets up the writer state of a handle whose metadata was just created. */
static sl_status writer_init(sl_ledger *lh, const sl_ledger_create_opts *o) {
  const Sluice__V1__EnsembleSegment *seg = lh->info->ensembles[lh->info->n_ensembles - 1];
  lh->writer = true;
  lh->on_fenced = o->on_fenced;
  lh->fenced_arg = o->fenced_arg;
  sl_addq_init(&lh->pending, &lh->q, 0);
  sl_timer_init(&lh->tick, lh->serial, tick_run, lh);
  sl_timer_init(&lh->retry, lh->serial, retry_run, lh);
  sl_timer_init(&lh->busy, lh->serial, busy_run, lh);
  sl_timer_init(&lh->lac_timer, lh->serial, lac_run, lh);
  lh->lac_written = -1;
  lh->slots = calloc(lh->q.e, sizeof(*lh->slots));
  lh->chg_ids = calloc(lh->q.e, sizeof(char *));
  lh->chg_instances = calloc(lh->q.e, sizeof(char *));
  if (!lh->slots || !lh->chg_ids || !lh->chg_instances) return SL_ENOMEM;
  for (uint32_t s = 0; s < lh->q.e; s++) {
    lh_slot *sl = &lh->slots[s];
    sl->bookie = strdup(seg->bookie_ids[s]);
    sl->instance = strdup(s < seg->n_instance_ids ? seg->instance_ids[s] : "");
    if (!sl->bookie || !sl->instance) return SL_ENOMEM;
    sl_lc_usage(lh->client, sl->bookie, +1);
  }
  /* A stream that cannot open is a failed bookie: replaced at once. */
  for (uint32_t s = 0; s < lh->q.e; s++)
    if (slot_open(lh, s) != SL_OK)
      slot_failed(lh, s, SL_EUNAVAIL, "no channel to bookie");
  return SL_OK;
}

void sl_lh_writer_release(sl_ledger *lh) {
  if (!lh->slots && !lh->chg_ids) return;
  SL_ASSERT(!sl_addq_front(&lh->pending));
  sl_addq_release(&lh->pending);
  for (uint32_t s = 0; lh->slots && s < lh->q.e; s++) {
    if (lh->slots[s].bookie) sl_lc_usage(lh->client, lh->slots[s].bookie, -1);
    free(lh->slots[s].bookie);
    free(lh->slots[s].instance);
  }
  if (lh->chg_ids) change_clear(lh);
  free(lh->slots);
  free(lh->chg_ids);
  free(lh->chg_instances);
  for (size_t i = 0; i < lh->n_failed_ids; i++) free(lh->failed_ids[i]);
  free(lh->failed_ids);
}

typedef struct create_op {
  sl_ledger_client *c;
  sl_ledger_create_opts o;       /* pointers below replace the caller's */
  char *partition;
  uint8_t *password;
  char **exclude;
  size_t n_exclude;
  sl_serial *serial;
  sl_ledger_open_cb cb;
  void *arg;
  bool forced;                   /* the bookie list was refreshed for us */
} create_op;

static void create_op_free(create_op *op) {
  free(op->partition);
  free(op->password);
  for (size_t i = 0; i < op->n_exclude; i++) free(op->exclude[i]);
  free(op->exclude);
  sl_serial_unref(op->serial);
  free(op);
}

static void create_fail(create_op *op, sl_status st, const char *details) {
  op->cb(st, details, NULL, op->arg);
  create_op_free(op);
}

static void create_done(sl_status st, const char *details,
                        ProtobufCMessage *resp, void *arg) {
  create_op *op = arg;
  Sluice__V1__LedgerResponse *r = (Sluice__V1__LedgerResponse *)resp;
  if (st != SL_OK) {
    create_fail(op, st, details);
    return;
  }
  sl_ledger *lh;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__LedgerInfo *info = r->info;
  int64_t version = r->version;
  r->info = NULL;
  protobuf_c_message_free_unpacked(resp, NULL);
  st = sl_lh_create(op->c, op->serial, info, version, SL_LEDGER_WRITING, &lh, &err);
  if (st != SL_OK) {
    create_fail(op, st, err.msg);
    return;
  }
  if (writer_init(lh, &op->o) != SL_OK) {
    sl_ledger_destroy(lh);
    create_fail(op, SL_ENOMEM, "ledger: out of memory");
    return;
  }
  sl_log(SL_LOG_INFO, "event=ledger_created ledger=%" PRIu64 " e=%u qw=%u qa=%u",
         lh->id, lh->q.e, lh->q.qw, lh->q.qa);
  op->cb(SL_OK, "", lh, op->arg);
  create_op_free(op);
}

static void create_listed(sl_status st, const char *details, void *arg);

static void create_pick(create_op *op) {
  uint32_t e = op->o.ensemble_size;
  char *ids[SL_QUORUM_MAX_ENSEMBLE], *inst[SL_QUORUM_MAX_ENSEMBLE];
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_lc_pick(op->c, (const char *const *)op->exclude, op->n_exclude,
                            NULL, 0, e, ids, inst, &err);
  if (st == SL_EUNAVAIL && !op->forced) {
    op->forced = true; /* the cache may predate a bookie that just joined */
    sl_lc_refresh(op->c, op->serial, true, create_listed, op);
    return;
  }
  if (st != SL_OK) {
    create_fail(op, st, err.msg);
    return;
  }
  Sluice__V1__EnsembleSegment seg = SLUICE__V1__ENSEMBLE_SEGMENT__INIT;
  seg.first_entry = 0;
  seg.n_bookie_ids = seg.n_instance_ids = e;
  seg.bookie_ids = ids;
  seg.instance_ids = inst;
  Sluice__V1__EnsembleSegment *ens[1] = {&seg};
  Sluice__V1__LedgerInfo info = SLUICE__V1__LEDGER_INFO__INIT;
  info.ensemble_size = e;
  info.write_quorum = op->o.write_quorum;
  info.ack_quorum = op->o.ack_quorum;
  info.n_ensembles = 1;
  info.ensembles = ens;
  info.state = STATE_OPEN;
  info.last_entry_id = -1;
  info.password.data = op->password;
  info.password.len = op->o.password_len;
  info.owner_epoch = op->o.epoch;
  info.partition = op->partition ? op->partition : "";
  info.create_time_ms = sl_clock_wall_ms();
  Sluice__V1__CreateLedgerRequest req = SLUICE__V1__CREATE_LEDGER_REQUEST__INIT;
  req.info = &info;
  req.epoch = op->o.epoch;
  sl_rpc_call_opts o = sl_lc_meta_opts(op->c, op->serial);
  st = sl_rpc_unary_start(op->c->opts.metadata, SL_METADATA_SERVICE_CREATE_LEDGER,
                          &req.base, &o, create_done, op, NULL, &err);
  for (uint32_t i = 0; i < e; i++) {
    free(ids[i]);
    free(inst[i]);
  }
  if (st != SL_OK) create_fail(op, st, err.msg);
}

static void create_listed(sl_status st, const char *details, void *arg) {
  create_op *op = arg;
  if (st != SL_OK)
    create_fail(op, st, details);
  else
    create_pick(op);
}

sl_status sl_ledger_create_async(sl_ledger_client *c,
                                 const sl_ledger_create_opts *opts,
                                 sl_ledger_open_cb cb, void *arg, sl_err *err) {
  if (!c || !opts || !cb)
    return sl_err_set(err, SL_EINVAL, "ledger: create needs options and a callback");
  sl_ledger_create_opts o = *opts;
  if (!o.ensemble_size) o.ensemble_size = 3;
  if (!o.write_quorum) o.write_quorum = 2;
  if (!o.ack_quorum) o.ack_quorum = 2;
  sl_quorum q = {o.ensemble_size, o.write_quorum, o.ack_quorum};
  sl_status st = sl_quorum_check(&q, err);
  if (st != SL_OK) return st;
  if (!o.password && o.password_len)
    return sl_err_set(err, SL_EINVAL, "ledger: password NULL with a length");
  create_op *op = calloc(1, sizeof(*op));
  if (!op) return sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
  op->c = c;
  op->o = o;
  op->cb = cb;
  op->arg = arg;
  size_t n_ex = 0;
  while (o.exclude && o.exclude[n_ex]) n_ex++;
  op->exclude = calloc(n_ex ? n_ex : 1, sizeof(char *));
  op->password = malloc(o.password_len ? o.password_len : 1);
  op->partition = o.partition ? strdup(o.partition) : NULL;
  bool ok = op->exclude && op->password && (!o.partition || op->partition);
  for (size_t i = 0; ok && i < n_ex; i++) {
    op->exclude[i] = strdup(o.exclude[i]);
    ok = op->exclude[i] != NULL;
    op->n_exclude += ok;
  }
  if (!ok) {
    create_op_free(op);
    return sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
  }
  if (o.password_len) memcpy(op->password, o.password, o.password_len);
  op->o.exclude = NULL;
  op->o.partition = NULL;
  op->o.password = NULL;
  if (o.serial) {
    sl_serial_ref(o.serial);
    op->serial = o.serial;
  } else if ((st = sl_serial_create(&op->serial, err)) != SL_OK) {
    create_op_free(op);
    return st;
  }
  op->o.serial = NULL;
  sl_lc_refresh(c, op->serial, false, create_listed, op);
  return SL_OK;
}
