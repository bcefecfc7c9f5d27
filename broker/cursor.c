/* Cursor: acks, positions along the chain, waiters and the lifecycle (the
 * design is in cursor.h; persistence is in cursor_store.c). */
#include "broker/cursor_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define DEFAULT_INLINE_MAX (64 * 1024)
#define DEFAULT_PERSIST_DELAY_MS 100
#define DEFAULT_MIN_FLUSH_INTERVAL_MS 100
#define DEFAULT_RETRY_MS 1000
#define DEFAULT_METADATA_TIMEOUT_MS 5000

/* ---- references, stats, waiters ---- */

void cursor_ref(sl_cursor *c) { c->refs++; }

void cursor_unref(sl_cursor *c) {
  SL_ASSERT(c->refs > 0);
  if (--c->refs > 0) return;
  sl_timer_stop(&c->timer);
  sl_ack_set_release(&c->acked);
  sl_ack_set_release(&c->delta);
  free(c->waiters);
  free(c->chain);
  free(c->partition);
  free(c->subscription);
  pthread_mutex_destroy(&c->stats_mu);
  sl_serial_unref(c->serial);
  free(c);
}

sl_rpc_call_opts cursor_call_opts(const sl_cursor *c) {
  sl_rpc_call_opts o = {0};
  o.timeout_ms = c->metadata_timeout_ms;
  o.serial = c->serial;
  return o;
}

void cursor_stats_sync(sl_cursor *c) {
  pthread_mutex_lock(&c->stats_mu);
  c->stats.state = c->state;
  c->stats.in_ledger = c->ack_ledger != 0;
  c->stats.ack_ledger = c->ack_ledger;
  c->stats.stored_bytes = c->snapshot_bytes;
  c->stats.delta_bytes = c->delta_bytes;
  c->stats.dirty_acks = c->gen - c->durable_gen;
  pthread_mutex_unlock(&c->stats_mu);
}

void sl_cursor_stats_get(const sl_cursor *c, sl_cursor_stats *out) {
  pthread_mutex_lock((pthread_mutex_t *)&c->stats_mu);
  *out = c->stats;
  pthread_mutex_unlock((pthread_mutex_t *)&c->stats_mu);
}

const char *sl_cursor_subscription(const sl_cursor *c) { return c->subscription; }

static void add_waiter(sl_cursor *c, sl_cursor_durable_cb cb, void *arg);

void cursor_run_waiters(sl_cursor *c, sl_status st) {
  size_t done = 0;
  while (done < c->n_waiters && (st != SL_OK || c->waiters[done].gen <= c->durable_gen)) done++;
  if (done == 0) return;
  /* Callbacks may ack again (adding waiters): run from a private copy. */
  cursor_waiter *run = sl_xmalloc(done * sizeof(*run));
  memcpy(run, c->waiters, done * sizeof(*run));
  memmove(c->waiters, &c->waiters[done], (c->n_waiters - done) * sizeof(*run));
  c->n_waiters -= done;
  cursor_ref(c);
  for (size_t i = 0; i < done; i++) run[i].cb(st, run[i].arg);
  cursor_unref(c);
  free(run);
}

static void waiters_posted(void *arg) {
  sl_cursor *c = arg;
  if (!c->destroyed)
    cursor_run_waiters(c, c->state == SL_CURSOR_FENCED ? SL_EFENCED
                          : c->state == SL_CURSOR_FAILED ? SL_EIO : SL_OK);
  cursor_unref(c);
}

static void add_waiter(sl_cursor *c, sl_cursor_durable_cb cb, void *arg) {
  if (cb == NULL) return;
  if (c->n_waiters == c->cap_waiters) {
    c->cap_waiters = c->cap_waiters ? 2 * c->cap_waiters : 16;
    c->waiters = sl_xrealloc(c->waiters, c->cap_waiters * sizeof(*c->waiters));
  }
  c->waiters[c->n_waiters++] = (cursor_waiter){cb, arg, c->gen};
  /* Already durable (nothing changed), or lost: answer from the serial,
   * never inside the ack call. */
  if (c->gen <= c->durable_gen || c->state == SL_CURSOR_FENCED || c->state == SL_CURSOR_FAILED) {
    cursor_ref(c);
    sl_serial_post(c->serial, waiters_posted, c);
  }
}

void cursor_lose(sl_cursor *c, sl_cursor_state to, sl_status st, const char *details) {
  if (c->state == SL_CURSOR_FENCED || c->state == SL_CURSOR_FAILED) return;
  sl_log(SL_LOG_WARN, "event=cursor_lost partition=%s subscription=%s state=%s status=%s "
         "details=\"%s\"", c->partition, c->subscription,
         to == SL_CURSOR_FENCED ? "fenced" : "failed", sl_status_str(st), details ? details : "");
  c->state = to;
  cursor_stats_sync(c);
  sl_timer_stop(&c->timer);
  cursor_run_waiters(c, to == SL_CURSOR_FENCED ? SL_EFENCED : st);
  if (c->on_lost != NULL && !c->destroyed) c->on_lost(c, st, details, c->lost_arg);
}

/* ---- the chain ---- */

static const sl_cursor_ledger *chain_find(const sl_cursor *c, uint64_t ledger_id, size_t *at) {
  size_t lo = 0, hi = c->n_chain;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (c->chain[mid].ledger_id < ledger_id) lo = mid + 1;
    else hi = mid;
  }
  if (at != NULL) *at = lo;
  return lo < c->n_chain && c->chain[lo].ledger_id == ledger_id ? &c->chain[lo] : NULL;
}

static bool in_chain(const sl_cursor *c, sl_ml_pos pos) {
  const sl_cursor_ledger *l = chain_find(c, pos.ledger_id, NULL);
  return l != NULL && pos.entry_id >= 0 && pos.entry_id < l->entries;
}

static void chain_push(sl_cursor *c, uint64_t ledger_id, int64_t entries, uint64_t bytes) {
  if (c->n_chain == c->cap_chain) {
    c->cap_chain = c->cap_chain ? 2 * c->cap_chain : 8;
    c->chain = sl_xrealloc(c->chain, c->cap_chain * sizeof(*c->chain));
  }
  c->chain[c->n_chain++] = (sl_cursor_ledger){ledger_id, entries, bytes};
}

void sl_cursor_extend(sl_cursor *c, sl_ml_pos last, uint64_t bytes) {
  SL_ASSERT(sl_serial_running_here(c->serial));
  sl_cursor_ledger *tail = c->n_chain > 0 ? &c->chain[c->n_chain - 1] : NULL;
  if (tail == NULL || last.ledger_id > tail->ledger_id) {
    chain_push(c, last.ledger_id, last.entry_id + 1, bytes);
  } else if (last.ledger_id == tail->ledger_id && last.entry_id + 1 > tail->entries) {
    tail->entries = last.entry_id + 1;
    tail->bytes += bytes;
  }
}

/* Position of the chain's end, or of its start ({first, -1}). */
static sl_ml_pos chain_end(const sl_cursor *c) {
  if (c->n_chain == 0) return (sl_ml_pos){0, -1};
  const sl_cursor_ledger *l = &c->chain[c->n_chain - 1];
  return (sl_ml_pos){l->ledger_id, l->entries - 1};
}

static sl_ml_pos chain_start(const sl_cursor *c) {
  return (sl_ml_pos){c->n_chain > 0 ? c->chain[0].ledger_id : 0, -1};
}

/* The first not fully acked position strictly after `after` (and after the
 * mark-delete), walking the chain; false if none up to its end. */
static bool next_unacked(const sl_cursor *c, sl_ml_pos after, sl_ml_pos *out) {
  if (sl_ml_pos_cmp(after, c->mark_delete) < 0) after = c->mark_delete;
  size_t i;
  const sl_cursor_ledger *l = chain_find(c, after.ledger_id, &i);
  int64_t from = l != NULL ? after.entry_id + 1 : 0;
  for (; i < c->n_chain; i++, from = 0) {
    l = &c->chain[i];
    if (from < 0) from = 0;
    if (from >= l->entries) continue;
    int64_t gap = sl_ack_set_next_gap(&c->acked, l->ledger_id, from);
    if (gap < l->entries) {
      *out = (sl_ml_pos){l->ledger_id, gap};
      return true;
    }
  }
  return false;
}

void cursor_advance(sl_cursor *c) {
  sl_ml_pos next;
  sl_ml_pos md = next_unacked(c, c->mark_delete, &next)
                     ? (sl_ml_pos){next.ledger_id, next.entry_id - 1}
                     : chain_end(c);
  /* {L, -1} for the next unacked entry 0 of L: keep the earlier form when
   * it names the same place (nothing of L acked). */
  if (sl_ml_pos_cmp(md, c->mark_delete) <= 0) return;
  c->mark_delete = md;
  sl_ack_set_drop_through(&c->acked, md.ledger_id, md.entry_id);
  sl_ack_set_drop_through(&c->delta, md.ledger_id, md.entry_id);
}

/* ---- open ---- */

static sl_status copy_opts(sl_cursor *c, const sl_cursor_opts *o, sl_err *err) {
  if (o->ledgers == NULL || o->metadata == NULL || o->serial == NULL || o->partition == NULL ||
      o->subscription == NULL || o->partition[0] == '\0' || o->subscription[0] == '\0')
    return sl_err_set(err, SL_EINVAL, "cursor: ledger client, metadata channel, serial, "
                      "partition and subscription are required");
  if (o->epoch == 0) return sl_err_set(err, SL_EINVAL, "cursor %s/%s: no epoch", o->partition,
                                       o->subscription);
  for (size_t i = 1; i < o->chain.n; i++)
    if (o->chain.ledgers[i].ledger_id <= o->chain.ledgers[i - 1].ledger_id)
      return sl_err_set(err, SL_EINVAL, "cursor %s/%s: chain ledger ids must increase",
                        o->partition, o->subscription);
  c->ledgers = o->ledgers;
  c->metadata = o->metadata;
  c->serial = o->serial;
  c->partition = strdup(o->partition);
  c->subscription = strdup(o->subscription);
  if (c->partition == NULL || c->subscription == NULL) abort();
  c->epoch = o->epoch;
  c->type = o->subscription_type;
  c->e = o->ensemble_size ? o->ensemble_size : 3;
  c->qw = o->write_quorum ? o->write_quorum : 2;
  c->qa = o->ack_quorum ? o->ack_quorum : 2;
  c->inline_max = o->inline_max_bytes ? o->inline_max_bytes : DEFAULT_INLINE_MAX;
  c->persist_delay_ms = o->persist_delay_ms ? o->persist_delay_ms : DEFAULT_PERSIST_DELAY_MS;
  c->min_flush_interval_ms =
      o->min_flush_interval_ms ? o->min_flush_interval_ms : DEFAULT_MIN_FLUSH_INTERVAL_MS;
  c->retry_ms = o->retry_ms ? o->retry_ms : DEFAULT_RETRY_MS;
  c->metadata_timeout_ms =
      o->metadata_timeout_ms ? o->metadata_timeout_ms : DEFAULT_METADATA_TIMEOUT_MS;
  c->on_lost = o->on_lost;
  c->lost_arg = o->lost_arg;
  for (size_t i = 0; i < o->chain.n; i++)
    chain_push(c, o->chain.ledgers[i].ledger_id, o->chain.ledgers[i].entries,
               o->chain.ledgers[i].bytes);
  c->mark_delete = o->initial == SL_CURSOR_EARLIEST ? chain_start(c) : chain_end(c);
  return SL_OK;
}

/* The timer holds no reference: every path that ends the cursor stops it
 * first, on the serial, where a stop is exact (timer.h invariant 2). */
static void timer_fired(void *arg) { cursor_store_flush(arg); }

static void open_posted(void *arg) { cursor_store_open(arg); }

sl_status sl_cursor_open_async(const sl_cursor_opts *opts, sl_cursor_open_cb cb, void *arg,
                               sl_err *err) {
  if (opts == NULL || cb == NULL) return sl_err_set(err, SL_EINVAL, "cursor: no options");
  sl_cursor *c = sl_xcalloc(1, sizeof(*c));
  sl_status st = copy_opts(c, opts, err);
  if (st != SL_OK) {
    free(c->chain);
    free(c->partition);
    free(c->subscription);
    free(c);
    return st;
  }
  sl_serial_ref(c->serial);
  pthread_mutex_init(&c->stats_mu, NULL);
  c->refs = 1;
  c->state = SL_CURSOR_OPENING;
  c->open_cb = cb;
  c->open_arg = arg;
  sl_timer_init(&c->timer, c->serial, timer_fired, c);
  cursor_stats_sync(c);
  sl_serial_post(c->serial, open_posted, c);
  return SL_OK;
}

/* ---- acks ---- */

static sl_status check_ack(const sl_cursor *c, sl_ml_pos pos, sl_err *err) {
  if (c->state == SL_CURSOR_CLOSING || c->state == SL_CURSOR_CLOSED ||
      c->state == SL_CURSOR_OPENING)
    return sl_err_set(err, SL_EPRECOND, "cursor %s/%s: not open", c->partition, c->subscription);
  if (sl_ml_pos_cmp(pos, c->mark_delete) <= 0 || in_chain(c, pos)) return SL_OK;
  return sl_err_set(err, SL_ERANGE, "cursor %s/%s: message %" PRIu64 ":%" PRId64 " is not in "
                    "the partition", c->partition, c->subscription, pos.ledger_id, pos.entry_id);
}

static void changed(sl_cursor *c) {
  c->gen++;
  cursor_store_schedule(c);
}

sl_status sl_cursor_ack(sl_cursor *c, sl_ml_pos pos, uint32_t batch_index, uint32_t batch_size,
                        sl_cursor_durable_cb cb, void *arg, sl_err *err) {
  SL_ASSERT(sl_serial_running_here(c->serial));
  sl_status st = check_ack(c, pos, err);
  if (st != SL_OK) return st;
  if (batch_size > SL_ACK_MAX_BATCH || (batch_size > 1 && batch_index >= batch_size))
    return sl_err_set(err, SL_EINVAL, "cursor %s/%s: batch index %u of %u", c->partition,
                      c->subscription, batch_index, batch_size);
  if (sl_ml_pos_cmp(pos, c->mark_delete) > 0 && !sl_ack_set_has(&c->acked, pos.ledger_id,
                                                                pos.entry_id)) {
    bool complete = true, unused;
    if (batch_size > 1) {
      st = sl_ack_set_add_batch(&c->acked, pos.ledger_id, pos.entry_id, batch_index, batch_size,
                                &complete, err);
      if (st != SL_OK) return st;
      (void)sl_ack_set_add_batch(&c->delta, pos.ledger_id, pos.entry_id, batch_index,
                                 batch_size, &unused, NULL);
    } else {
      sl_ack_set_add(&c->acked, pos.ledger_id, pos.entry_id);
    }
    if (complete) sl_ack_set_add(&c->delta, pos.ledger_id, pos.entry_id);
    if (complete) cursor_advance(c);
    changed(c);
  }
  add_waiter(c, cb, arg);
  return SL_OK;
}

/* Everything at or before md is acked (a no-op unless md is ahead). */
static void ack_through(sl_cursor *c, sl_ml_pos md) {
  if (sl_ml_pos_cmp(md, c->mark_delete) <= 0) return;
  c->mark_delete = md;
  sl_ack_set_drop_through(&c->acked, md.ledger_id, md.entry_id);
  sl_ack_set_drop_through(&c->delta, md.ledger_id, md.entry_id);
  cursor_advance(c);
  changed(c);
}

sl_status sl_cursor_ack_cumulative(sl_cursor *c, sl_ml_pos pos, sl_cursor_durable_cb cb,
                                   void *arg, sl_err *err) {
  SL_ASSERT(sl_serial_running_here(c->serial));
  sl_status st = check_ack(c, pos, err);
  if (st != SL_OK) return st;
  ack_through(c, pos);
  add_waiter(c, cb, arg);
  return SL_OK;
}

sl_status sl_cursor_ack_before(sl_cursor *c, sl_ml_pos to, sl_cursor_durable_cb cb, void *arg,
                               sl_err *err) {
  SL_ASSERT(sl_serial_running_here(c->serial));
  sl_status st = check_ack(c, c->mark_delete, err); /* the state only */
  if (st != SL_OK) return st;
  /* Any entry of a ledger of the chain, or just past that ledger's end
   * (the same place as the next ledger's start). */
  const sl_cursor_ledger *l = chain_find(c, to.ledger_id, NULL);
  if (l == NULL || to.entry_id < 0 || to.entry_id > l->entries)
    return sl_err_set(err, SL_ERANGE, "cursor %s/%s: ack before %" PRIu64 ":%" PRId64 ", not in "
                      "the partition", c->partition, c->subscription, to.ledger_id, to.entry_id);
  ack_through(c, (sl_ml_pos){to.ledger_id, to.entry_id - 1});
  add_waiter(c, cb, arg);
  return SL_OK;
}

bool sl_cursor_is_acked(const sl_cursor *c, sl_ml_pos pos) {
  return sl_ml_pos_cmp(pos, c->mark_delete) <= 0 ||
         sl_ack_set_has(&c->acked, pos.ledger_id, pos.entry_id);
}

bool sl_cursor_is_batch_acked(const sl_cursor *c, sl_ml_pos pos, uint32_t batch_index) {
  return sl_ml_pos_cmp(pos, c->mark_delete) <= 0 ||
         sl_ack_set_has_batch(&c->acked, pos.ledger_id, pos.entry_id, batch_index);
}

sl_ml_pos sl_cursor_mark_delete(const sl_cursor *c) { return c->mark_delete; }

bool sl_cursor_next_unacked(const sl_cursor *c, sl_ml_pos after, sl_ml_pos *out) {
  return next_unacked(c, after, out);
}

sl_status sl_cursor_seek(sl_cursor *c, sl_ml_pos to, sl_cursor_durable_cb cb, void *arg,
                         sl_err *err) {
  SL_ASSERT(sl_serial_running_here(c->serial));
  if (c->state != SL_CURSOR_ACTIVE)
    return sl_err_set(err, SL_EPRECOND, "cursor %s/%s: not active", c->partition,
                      c->subscription);
  sl_ml_pos end = chain_end(c), md;
  if (to.ledger_id == 0 && to.entry_id == 0) {
    md = chain_start(c);
  } else if (to.ledger_id == UINT64_MAX) {
    md = end;
  } else if (in_chain(c, to)) {
    md = (sl_ml_pos){to.ledger_id, to.entry_id - 1};
  } else if (to.ledger_id == end.ledger_id && to.entry_id == end.entry_id + 1) {
    md = end;
  } else {
    return sl_err_set(err, SL_ERANGE, "cursor %s/%s: seek to %" PRIu64 ":%" PRId64 ", not in "
                      "the partition", c->partition, c->subscription, to.ledger_id, to.entry_id);
  }
  sl_ack_set_release(&c->acked);
  sl_ack_set_release(&c->delta);
  c->mark_delete = md;
  c->need_snapshot = true;
  sl_log(SL_LOG_INFO, "event=cursor_seek partition=%s subscription=%s ledger=%" PRIu64
         " entry=%" PRId64, c->partition, c->subscription, md.ledger_id, md.entry_id);
  changed(c);
  add_waiter(c, cb, arg);
  return SL_OK;
}

sl_status sl_cursor_flush(sl_cursor *c, sl_cursor_durable_cb cb, void *arg, sl_err *err) {
  SL_ASSERT(sl_serial_running_here(c->serial));
  if (c->state != SL_CURSOR_ACTIVE)
    return sl_err_set(err, SL_EPRECOND, "cursor %s/%s: not active", c->partition,
                      c->subscription);
  add_waiter(c, cb, arg);
  cursor_store_flush(c);
  return SL_OK;
}

void sl_cursor_backlog_get(const sl_cursor *c, sl_cursor_backlog *out) {
  *out = (sl_cursor_backlog){0};
  size_t i;
  chain_find(c, c->mark_delete.ledger_id, &i);
  for (; i < c->n_chain; i++) {
    const sl_cursor_ledger *l = &c->chain[i];
    int64_t from = l->ledger_id == c->mark_delete.ledger_id ? c->mark_delete.entry_id + 1 : 0;
    if (from >= l->entries) continue;
    uint64_t acked = sl_ack_set_count_range(&c->acked, l->ledger_id, from, l->entries - 1);
    uint64_t unacked = (uint64_t)(l->entries - from) - acked;
    out->entries += unacked;
    out->acked_beyond += acked;
    if (l->entries > 0) out->bytes += (uint64_t)((double)l->bytes * unacked / l->entries);
  }
}

/* ---- close, delete, destroy ---- */

static void finish_posted(void *arg) {
  sl_cursor *c = arg;
  if (!c->destroyed) cursor_store_finish(c);
  cursor_unref(c);
}

static sl_status begin_finish(sl_cursor *c, cursor_finish f, sl_cursor_done_cb cb, void *arg,
                              sl_err *err) {
  SL_ASSERT(sl_serial_running_here(c->serial));
  if (c->finish != FINISH_NONE || c->state == SL_CURSOR_OPENING ||
      c->state == SL_CURSOR_CLOSED)
    return sl_err_set(err, SL_EPRECOND, "cursor %s/%s: already closing or closed",
                      c->partition, c->subscription);
  c->finish = f;
  c->finish_cb = cb;
  c->finish_arg = arg;
  if (c->state == SL_CURSOR_ACTIVE) {
    c->state = SL_CURSOR_CLOSING;
    sl_timer_stop(&c->timer);
    if (f == FINISH_CLOSE) cursor_store_flush(c);
  }
  cursor_stats_sync(c);
  cursor_ref(c);
  sl_serial_post(c->serial, finish_posted, c);
  return SL_OK;
}

sl_status sl_cursor_close_async(sl_cursor *c, sl_cursor_done_cb cb, void *arg, sl_err *err) {
  return begin_finish(c, FINISH_CLOSE, cb, arg, err);
}

sl_status sl_cursor_delete_async(sl_cursor *c, sl_cursor_done_cb cb, void *arg, sl_err *err) {
  return begin_finish(c, FINISH_DELETE, cb, arg, err);
}

void sl_cursor_destroy(sl_cursor *c) {
  if (c == NULL) return;
  SL_ASSERT(sl_serial_running_here(c->serial));
  c->destroyed = true;
  sl_timer_stop(&c->timer);
  cursor_run_waiters(c, SL_ECANCELED);
  /* Pending appends of the cursor ledger call back with SL_ECANCELED (each
   * holds a reference); the ledger stays as it is, for recovery. */
  sl_ledger_destroy(c->lh);
  c->lh = NULL;
  cursor_unref(c);
}
