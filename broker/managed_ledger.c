/* Managed ledger: open, append, rollover, close, list writes. See
 * managed_ledger.h for the design note. */
#include "broker/managed_ledger_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "metadata.slrpc.h"
#include "common/status.h"

#define DEFAULT_ROLLOVER_ENTRIES 50000u
#define DEFAULT_ROLLOVER_BYTES (256u << 20)
#define DEFAULT_ROLLOVER_MS (4 * 3600 * 1000)

int sl_ml_pos_cmp(sl_ml_pos a, sl_ml_pos b) {
  if (a.ledger_id != b.ledger_id) return a.ledger_id < b.ledger_id ? -1 : 1;
  if (a.entry_id != b.entry_id) return a.entry_id < b.entry_id ? -1 : 1;
  return 0;
}

/* ---- lifetime ---- */

static void props_clear(sl_ml *ml) {
  for (size_t i = 0; i < ml->n_props; i++) {
    free((char *)ml->props[i].key);
    free((char *)ml->props[i].value);
  }
  free(ml->props);
  ml->props = NULL;
  ml->n_props = 0;
}

void ml_ref_get(sl_ml *ml) {
  SL_ASSERT(ml->refs > 0);
  ml->refs++;
}

void ml_unref(sl_ml *ml) {
  SL_ASSERT(ml->refs > 0);
  if (--ml->refs > 0) return;
  SL_ASSERT(ml->queue_head == NULL && ml->waiters == NULL && ml->cur == NULL);
  props_clear(ml);
  free(ml->refs_v);
  free(ml->partition);
  pthread_mutex_destroy(&ml->stats_mu);
  sl_serial_unref(ml->serial);
  free(ml);
}

void ml_stats_update(sl_ml *ml, void (*fn)(sl_ml_stats *s, void *arg), void *arg) {
  pthread_mutex_lock(&ml->stats_mu);
  fn(&ml->stats, arg);
  pthread_mutex_unlock(&ml->stats_mu);
}

static void set_state_fn(sl_ml_stats *s, void *arg) { s->state = *(sl_ml_state *)arg; }

static void set_state(sl_ml *ml, sl_ml_state st) {
  ml->state = st;
  ml_stats_update(ml, set_state_fn, &st);
}

sl_rpc_call_opts ml_call_opts(const sl_ml *ml) {
  sl_rpc_call_opts o = {0};
  o.timeout_ms = ml->metadata_timeout_ms;
  o.serial = ml->serial;
  return o;
}

void sl_ml_stats_get(const sl_ml *ml, sl_ml_stats *out) {
  pthread_mutex_lock((pthread_mutex_t *)&ml->stats_mu);
  *out = ml->stats;
  pthread_mutex_unlock((pthread_mutex_t *)&ml->stats_mu);
}

const char *sl_ml_partition(const sl_ml *ml) { return ml->partition; }
uint64_t sl_ml_epoch(const sl_ml *ml) { return ml->epoch; }

size_t sl_ml_properties(const sl_ml *ml, const sl_ml_prop **out) {
  *out = ml->props;
  return ml->n_props;
}

static void open_finish(sl_ml *ml, sl_status st, const char *details);

/* ---- losing the partition ---- */

static bool is_fencing(sl_status st) {
  return st == SL_EFENCED || st == SL_ESTALE_EPOCH || st == SL_EVERSION ||
         st == SL_EPRECOND;
}

static void fail_queue(sl_ml *ml, sl_status st) {
  ml_queued *q = ml->queue_head;
  ml->queue_head = ml->queue_tail = NULL;
  sl_ml_pos none = {0, -1};
  while (q != NULL) {
    ml_queued *next = q->next;
    q->cb(st, none, q->arg);
    free(q);
    q = next;
  }
}

void ml_lose(sl_ml *ml, sl_status st, const char *details) {
  if (ml->state == SL_ML_FENCED || ml->state == SL_ML_FAILED) return;
  bool fenced = is_fencing(st);
  sl_log(SL_LOG_WARN, "event=ml_lost partition=%s epoch=%llu status=%s details=\"%s\"",
         ml->partition, (unsigned long long)ml->epoch, sl_status_str(st),
         details != NULL ? details : "");
  set_state(ml, fenced ? SL_ML_FENCED : SL_ML_FAILED);
  fail_queue(ml, fenced ? SL_EFENCED : SL_EUNAVAIL);
  if (ml->close_wanted) {
    ml->close_wanted = false;
    ml->close_cb(fenced ? SL_EFENCED : st, details, ml->close_arg);
  }
  /* While opening, the open callback reports the failure instead. */
  if (!ml->destroyed && ml->open_cb == NULL && ml->on_lost != NULL)
    ml->on_lost(ml, st, details != NULL ? details : sl_status_str(st), ml->lost_arg);
}

static void on_ledger_fenced(sl_ledger *lh, sl_status st, const char *details,
                             void *arg) {
  (void)lh;
  ml_lose(arg, st, details);
}

/* ---- list writes (invariant 4: one in flight, CAS on our version) ---- */

typedef struct list_write {
  sl_ml *ml;
  ml_waiter *waiters; /* told when this write is done */
} list_write;

static void start_list_write(sl_ml *ml);

static void list_written(sl_status st, const char *details, ProtobufCMessage *resp,
                         void *arg) {
  list_write *w = arg;
  sl_ml *ml = w->ml;
  ml->write_busy = false;
  if (st == SL_OK) {
    const Sluice__V1__ManagedLedgerResponse *r = (const void *)resp;
    ml->version = r->version;
  } else {
    /* A lost CAS or stale epoch: another owner. An unknown outcome
     * (unavailable, timeout) is not retried blindly (invariant 4): the
     * partition is given up and the next owner's recovery sorts it out. */
    ml_lose(ml, st, details);
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  ml_waiter *wt = w->waiters;
  free(w);
  while (wt != NULL) {
    ml_waiter *next = wt->next;
    wt->fn(ml, st, details, wt->arg);
    free(wt);
    wt = next;
  }
  if (ml->write_wanted && st == SL_OK) start_list_write(ml);
  ml_unref(ml);
}

static void start_list_write(sl_ml *ml) {
  SL_ASSERT(!ml->write_busy);
  ml->write_busy = true;
  ml->write_wanted = false;
  list_write *w = sl_xcalloc(1, sizeof(*w));
  w->ml = ml;
  w->waiters = ml->waiters;
  ml->waiters = NULL;

  Sluice__V1__LedgerRef *refs = sl_xcalloc(ml->n_refs + 1, sizeof(*refs));
  Sluice__V1__LedgerRef **ref_ptrs = sl_xcalloc(ml->n_refs + 1, sizeof(*ref_ptrs));
  for (size_t i = 0; i < ml->n_refs; i++) {
    sluice__v1__ledger_ref__init(&refs[i]);
    refs[i].ledger_id = ml->refs_v[i].id;
    refs[i].entries = ml->refs_v[i].entries < 0 ? 0 : ml->refs_v[i].entries;
    refs[i].size_bytes = ml->refs_v[i].size;
    refs[i].create_time_ms = ml->refs_v[i].ctime_ms;
    ref_ptrs[i] = &refs[i];
  }
  Sluice__V1__KeyValue *kvs = sl_xcalloc(ml->n_props + 1, sizeof(*kvs));
  Sluice__V1__KeyValue **kv_ptrs = sl_xcalloc(ml->n_props + 1, sizeof(*kv_ptrs));
  for (size_t i = 0; i < ml->n_props; i++) {
    sluice__v1__key_value__init(&kvs[i]);
    kvs[i].key = (char *)ml->props[i].key;
    kvs[i].value = (char *)ml->props[i].value;
    kv_ptrs[i] = &kvs[i];
  }
  Sluice__V1__ManagedLedgerInfo info = SLUICE__V1__MANAGED_LEDGER_INFO__INIT;
  info.partition = ml->partition;
  info.n_ledgers = ml->n_refs;
  info.ledgers = ref_ptrs;
  info.epoch = ml->epoch;
  info.n_properties = ml->n_props;
  info.properties = kv_ptrs;
  info.terminated = ml->terminated;
  Sluice__V1__UpdateManagedLedgerRequest req =
      SLUICE__V1__UPDATE_MANAGED_LEDGER_REQUEST__INIT;
  req.info = &info;
  req.expected_version = ml->version;
  req.epoch = ml->epoch;

  sl_rpc_call_opts o = ml_call_opts(ml);
  sl_err err = SL_ERR_INIT;
  ml_ref_get(ml);
  sl_status st = sl_rpc_unary_start(ml->metadata, SL_METADATA_SERVICE_UPDATE_MANAGED_LEDGER,
                                    &req.base, &o, list_written, w, NULL, &err);
  free(refs);
  free(ref_ptrs);
  free(kvs);
  free(kv_ptrs);
  if (st != SL_OK) list_written(st, err.msg, NULL, w);
}

void ml_write_list(sl_ml *ml, ml_written_fn fn, void *arg) {
  ml_waiter *wt = sl_xcalloc(1, sizeof(*wt));
  wt->fn = fn;
  wt->arg = arg;
  /* Keep the waiters in request order. */
  ml_waiter **tail = &ml->waiters;
  while (*tail != NULL) tail = &(*tail)->next;
  *tail = wt;
  ml->write_wanted = true;
  if (!ml->write_busy) start_list_write(ml);
}

/* ---- new ledgers (open and rollover) ---- */

static void push_ref(sl_ml *ml, uint64_t id, int64_t ctime_ms) {
  ml->refs_v = realloc(ml->refs_v, (ml->n_refs + 1) * sizeof(*ml->refs_v));
  if (ml->refs_v == NULL) abort();
  ml_ref r = {id, -1, 0, ctime_ms};
  ml->refs_v[ml->n_refs++] = r;
}

static void stats_ledgers_fn(sl_ml_stats *s, void *arg) {
  sl_ml *ml = arg;
  s->ledgers = (uint32_t)ml->n_refs;
  s->current_ledger = ml->cur != NULL ? sl_ledger_id(ml->cur) : 0;
}

static void new_ledger_ready(sl_ml *ml); /* WRITING from now on */

static void new_ledger_registered(sl_ml *ml, sl_status st, const char *details,
                                  void *arg) {
  (void)details;
  (void)arg;
  if (ml->destroyed) {
    /* nothing to do: destroy already let the current ledger go */
  } else if (st == SL_OK && ml->state != SL_ML_FENCED && ml->state != SL_ML_FAILED) {
    new_ledger_ready(ml);
  } else if (ml->open_cb != NULL) {
    open_finish(ml, st != SL_OK ? st : SL_EFENCED, details);
  }
  ml_unref(ml);
}

static void open_finish(sl_ml *ml, sl_status st, const char *details) {
  sl_ml_open_cb cb = ml->open_cb;
  ml->open_cb = NULL;
  if (cb == NULL) return;
  if (st == SL_OK) {
    cb(SL_OK, NULL, ml, ml->open_arg);
    return;
  }
  /* The open failed: nobody owns ml; drop the user's reference. */
  ml->destroyed = true;
  if (ml->cur != NULL) {
    sl_ledger_destroy(ml->cur);
    ml->cur = NULL;
  }
  cb(st, details, NULL, ml->open_arg);
  ml_unref(ml);
}

static void ledger_created(sl_status st, const char *details, sl_ledger *lh,
                           void *arg) {
  sl_ml *ml = arg;
  if (st != SL_OK || ml->destroyed || ml->state == SL_ML_FENCED ||
      ml->state == SL_ML_FAILED) {
    if (lh != NULL) sl_ledger_destroy(lh); /* an orphan, never in the list */
    if (st == SL_OK) st = SL_ECANCELED;
    if (ml->state == SL_ML_OPENING) {
      open_finish(ml, st, details);
    } else if (!ml->destroyed) {
      ml_lose(ml, st, details);
    }
    ml_unref(ml);
    return;
  }
  ml->cur = lh;
  ml->cur_appends = 0;
  ml->cur_bytes = 0;
  push_ref(ml, sl_ledger_id(lh), sl_clock_wall_ms());
  ml_stats_update(ml, stats_ledgers_fn, ml);
  sl_log(SL_LOG_INFO, "event=ml_ledger_created partition=%s ledger=%llu epoch=%llu",
         ml->partition, (unsigned long long)sl_ledger_id(lh),
         (unsigned long long)ml->epoch);
  /* Invariant 1: nothing is appended before this write succeeds. */
  ml_write_list(ml, new_ledger_registered, NULL);
  /* ml_write_list's waiter holds the reference passed to us. */
}

static void create_ledger(sl_ml *ml) {
  sl_ledger_create_opts o = SL_LEDGER_CREATE_OPTS_INIT;
  o.ensemble_size = ml->policy.ensemble_size;
  o.write_quorum = ml->policy.write_quorum;
  o.ack_quorum = ml->policy.ack_quorum;
  o.epoch = ml->epoch;
  o.partition = ml->partition;
  o.serial = ml->serial;
  o.on_fenced = on_ledger_fenced;
  o.fenced_arg = ml;
  sl_err err = SL_ERR_INIT;
  ml_ref_get(ml);
  sl_status st = sl_ledger_create_async(ml->ledgers, &o, ledger_created, ml, &err);
  if (st != SL_OK) ledger_created(st, err.msg, NULL, ml);
}

/* ---- appends ---- */

typedef struct append_ctx {
  sl_ml *ml;
  uint64_t ledger_id;
  size_t len;
  sl_ml_append_cb cb;
  void *arg;
} append_ctx;

typedef struct append_stat {
  sl_status st;
  sl_ml_pos pos;
  size_t len;
} append_stat;

static void append_stats_fn(sl_ml_stats *s, void *arg) {
  const append_stat *a = arg;
  s->pending_appends--;
  s->pending_bytes -= a->len;
  if (a->st != SL_OK) return;
  s->entries_appended++;
  s->bytes_appended += a->len;
  s->last_confirmed = a->pos;
}

static bool rollover_due(const sl_ml *ml);
static void start_rollover(sl_ml *ml);

static void append_done(sl_status st, int64_t entry_id, void *arg) {
  append_ctx *a = arg;
  sl_ml *ml = a->ml;
  sl_ml_pos pos = {a->ledger_id, st == SL_OK ? entry_id : -1};
  append_stat s = {st, pos, a->len};
  ml_stats_update(ml, append_stats_fn, &s);
  if (st == SL_OK && ml->n_refs > 0 && ml->refs_v[ml->n_refs - 1].id == a->ledger_id)
    ml->refs_v[ml->n_refs - 1].size += a->len;
  a->cb(st, pos, a->arg);
  /* An ensemble change happens between appends: the first completion
   * after it (invariant 4 of ledger.h: none runs during one) sees it. */
  if (!ml->destroyed && ml->state == SL_ML_WRITING && sl_ledger_id(ml->cur) == a->ledger_id &&
      rollover_due(ml))
    start_rollover(ml);
  free(a);
  ml_unref(ml);
}

static void pending_add_fn(sl_ml_stats *s, void *arg) {
  s->pending_appends++;
  s->pending_bytes += *(size_t *)arg;
}

/* Invariant 8. */
static bool rollover_due(const sl_ml *ml) {
  const sl_ml_policy *p = &ml->policy;
  uint64_t max_entries = p->rollover_entries ? p->rollover_entries : DEFAULT_ROLLOVER_ENTRIES;
  uint64_t max_bytes = p->rollover_bytes ? p->rollover_bytes : DEFAULT_ROLLOVER_BYTES;
  int64_t max_ms = p->rollover_ms ? p->rollover_ms : DEFAULT_ROLLOVER_MS;
  if (ml->cur_appends >= max_entries || ml->cur_bytes >= max_bytes) return true;
  if (sl_ledger_ensemble_changes(ml->cur) > 0) return true;
  int64_t ctime = ml->refs_v[ml->n_refs - 1].ctime_ms;
  return sl_clock_wall_ms() - ctime >= max_ms;
}

/* Hands one append to the current ledger (WRITING). */
static sl_status append_now(sl_ml *ml, const void *data, size_t len,
                            sl_ml_append_cb cb, void *arg, sl_err *err) {
  append_ctx *a = sl_xcalloc(1, sizeof(*a));
  a->ml = ml;
  a->ledger_id = sl_ledger_id(ml->cur);
  a->len = len;
  a->cb = cb;
  a->arg = arg;
  sl_status st = sl_ledger_append(ml->cur, data, len, append_done, a, NULL, err);
  if (st != SL_OK) {
    free(a);
    return st;
  }
  ml_ref_get(ml);
  ml_stats_update(ml, pending_add_fn, &len);
  ml->cur_appends++;
  ml->cur_bytes += len;
  return SL_OK;
}

static sl_status enqueue(sl_ml *ml, const void *data, size_t len,
                         sl_ml_append_cb cb, void *arg) {
  ml_queued *q = malloc(sizeof(*q) + len);
  if (q == NULL) abort();
  q->next = NULL;
  q->cb = cb;
  q->arg = arg;
  q->len = len;
  if (len > 0) memcpy(q->data, data, len);
  if (ml->queue_tail != NULL) ml->queue_tail->next = q;
  else ml->queue_head = q;
  ml->queue_tail = q;
  return SL_OK;
}

sl_status sl_ml_append(sl_ml *ml, const void *data, size_t len,
                       sl_ml_append_cb cb, void *arg, sl_err *err) {
  SL_ASSERT(sl_serial_running_here(ml->serial));
  if (cb == NULL || (data == NULL && len > 0))
    return sl_err_set(err, SL_EINVAL, "partition %s: bad append", ml->partition);
  switch (ml->state) {
    case SL_ML_WRITING: {
      sl_status st = append_now(ml, data, len, cb, arg, err);
      if (st == SL_OK && rollover_due(ml)) start_rollover(ml);
      return st;
    }
    case SL_ML_ROLLING:
      return enqueue(ml, data, len, cb, arg);
    case SL_ML_FENCED:
      return sl_err_set(err, SL_EFENCED, "partition %s: fenced by a newer owner",
                        ml->partition);
    case SL_ML_FAILED:
      return sl_err_set(err, SL_EUNAVAIL, "partition %s: log failed", ml->partition);
    default:
      return sl_err_set(err, SL_EPRECOND, "partition %s: not open for appends",
                        ml->partition);
  }
}

/* ---- rollover ---- */

static void rollover_stats_fn(sl_ml_stats *s, void *arg) {
  (void)arg;
  s->rollovers++;
}

static void finish_close(sl_ml *ml);

static void new_ledger_ready(sl_ml *ml) {
  bool was_opening = ml->state == SL_ML_OPENING;
  set_state(ml, SL_ML_WRITING);
  ml_stats_update(ml, stats_ledgers_fn, ml);
  if (was_opening) {
    ml_trim_timer_start(ml);
    open_finish(ml, SL_OK, NULL);
  }
  /* Queued appends go to the new ledger in order (invariant 3). */
  while (ml->queue_head != NULL && ml->state == SL_ML_WRITING) {
    ml_queued *q = ml->queue_head;
    ml->queue_head = q->next;
    if (ml->queue_head == NULL) ml->queue_tail = NULL;
    sl_err err = SL_ERR_INIT;
    sl_status st = append_now(ml, q->data, q->len, q->cb, q->arg, &err);
    if (st != SL_OK) {
      sl_ml_pos none = {0, -1};
      q->cb(st, none, q->arg);
    }
    free(q);
    /* The rest waits for the next ledger if this one is full already. */
    if (st == SL_OK && !ml->close_wanted && rollover_due(ml)) start_rollover(ml);
  }
  if (ml->close_wanted && ml->state == SL_ML_WRITING) {
    ml->close_wanted = false;
    finish_close(ml);
  } else if (ml->state == SL_ML_WRITING && rollover_due(ml) && ml->cur_appends > 0) {
    start_rollover(ml);
  }
}

static void rolled_closed(sl_status st, const char *details, void *arg) {
  sl_ml *ml = arg;
  sl_ledger *old = ml->cur;
  ml->cur = NULL;
  if (ml->destroyed) {
    sl_ledger_destroy(old);
    ml_unref(ml);
    return;
  }
  if (st != SL_OK) {
    sl_ledger_destroy(old);
    ml_lose(ml, st, details);
    ml_unref(ml);
    return;
  }
  ml_ref *r = &ml->refs_v[ml->n_refs - 1];
  r->entries = sl_ledger_last_entry(old) + 1;
  sl_ledger_destroy(old);
  ml_stats_update(ml, rollover_stats_fn, NULL);
  create_ledger(ml);
  ml_unref(ml);
}

void ml_roll_if_due(sl_ml *ml) {
  if (ml->state == SL_ML_WRITING && ml->cur_appends > 0 && rollover_due(ml)) start_rollover(ml);
}

static void start_rollover(sl_ml *ml) {
  SL_ASSERT(ml->state == SL_ML_WRITING && ml->cur != NULL);
  set_state(ml, SL_ML_ROLLING);
  sl_log(SL_LOG_INFO, "event=ml_rollover partition=%s ledger=%llu entries=%llu bytes=%llu",
         ml->partition, (unsigned long long)sl_ledger_id(ml->cur),
         (unsigned long long)ml->cur_appends, (unsigned long long)ml->cur_bytes);
  sl_err err = SL_ERR_INIT;
  ml_ref_get(ml);
  sl_status st = sl_ledger_close_async(ml->cur, rolled_closed, ml, &err);
  if (st != SL_OK) rolled_closed(st, err.msg, ml);
}

/* ---- close ---- */

static void close_written(sl_ml *ml, sl_status st, const char *details, void *arg) {
  (void)arg;
  if (st == SL_OK) set_state(ml, SL_ML_CLOSED);
  sl_ml_done_cb cb = ml->close_cb;
  ml->close_cb = NULL;
  if (cb != NULL) cb(st, details, ml->close_arg);
}

static void ledger_closed_for_close(sl_status st, const char *details, void *arg) {
  sl_ml *ml = arg;
  sl_ledger *old = ml->cur;
  ml->cur = NULL;
  if (st == SL_OK && old != NULL && !ml->destroyed) {
    ml->refs_v[ml->n_refs - 1].entries = sl_ledger_last_entry(old) + 1;
  }
  sl_ledger_destroy(old);
  if (ml->destroyed) {
    ml_unref(ml);
    return;
  }
  if (st != SL_OK) {
    ml_lose(ml, st, details);
    close_written(ml, st, details, NULL);
  } else {
    /* Only this last write carries the flag: a list that gains a ledger
     * after it would be refused. */
    if (ml->terminating) ml->terminated = true;
    ml_write_list(ml, close_written, NULL);
  }
  ml_unref(ml);
}

static void finish_close(sl_ml *ml) {
  set_state(ml, SL_ML_CLOSING);
  sl_timer_stop(&ml->trim_timer);
  sl_err err = SL_ERR_INIT;
  ml_ref_get(ml);
  sl_status st = sl_ledger_close_async(ml->cur, ledger_closed_for_close, ml, &err);
  if (st != SL_OK) ledger_closed_for_close(st, err.msg, ml);
}

sl_status sl_ml_close_async(sl_ml *ml, sl_ml_done_cb cb, void *arg, sl_err *err) {
  SL_ASSERT(sl_serial_running_here(ml->serial));
  if (cb == NULL) return sl_err_set(err, SL_EINVAL, "close: no callback");
  if (ml->close_cb != NULL || ml->state == SL_ML_CLOSING || ml->state == SL_ML_CLOSED)
    return sl_err_set(err, SL_EPRECOND, "partition %s: close already called",
                      ml->partition);
  if (ml->state == SL_ML_FENCED || ml->state == SL_ML_FAILED)
    return sl_err_set(err, ml->state == SL_ML_FENCED ? SL_EFENCED : SL_EUNAVAIL,
                      "partition %s: no longer writable", ml->partition);
  ml->close_cb = cb;
  ml->close_arg = arg;
  if (ml->state == SL_ML_ROLLING) {
    ml->close_wanted = true; /* after the rollover, queue flushed */
    return SL_OK;
  }
  finish_close(ml);
  return SL_OK;
}

/* ---- terminate ---- */

bool sl_ml_terminated(const sl_ml *ml) {
  return ml->terminated && ml->state == SL_ML_CLOSED;
}

static sl_ml_pos last_entry(const sl_ml *ml) {
  sl_ml_stats s;
  sl_ml_stats_get(ml, &s);
  return s.last_confirmed;
}

static void terminate_closed(sl_status st, const char *details, void *arg) {
  sl_ml *ml = arg;
  sl_ml_terminate_cb cb = ml->term_cb;
  ml->term_cb = NULL;
  ml->terminating = false;
  if (st == SL_OK)
    sl_log(SL_LOG_INFO, "event=ml_terminated partition=%s last_ledger=%llu last_entry=%lld",
           ml->partition, (unsigned long long)last_entry(ml).ledger_id,
           (long long)last_entry(ml).entry_id);
  cb(st, details, last_entry(ml), ml->term_arg);
}

typedef struct terminate_task {
  sl_ml *ml;
  sl_ml_terminate_cb cb;
  void *arg;
} terminate_task;

static void terminated_already(void *arg) {
  terminate_task *k = arg;
  if (!k->ml->destroyed) k->cb(SL_OK, NULL, last_entry(k->ml), k->arg);
  ml_unref(k->ml);
  free(k);
}

sl_status sl_ml_terminate_async(sl_ml *ml, sl_ml_terminate_cb cb, void *arg,
                                sl_err *err) {
  SL_ASSERT(sl_serial_running_here(ml->serial));
  if (cb == NULL) return sl_err_set(err, SL_EINVAL, "terminate: no callback");
  if (sl_ml_terminated(ml)) {
    terminate_task *k = sl_xcalloc(1, sizeof(*k));
    *k = (terminate_task){ml, cb, arg};
    ml_ref_get(ml);
    sl_serial_post(ml->serial, terminated_already, k);
    return SL_OK;
  }
  if (ml->terminating)
    return sl_err_set(err, SL_EBUSY, "partition %s: being terminated", ml->partition);
  ml->term_cb = cb;
  ml->term_arg = arg;
  ml->terminating = true;
  sl_status st = sl_ml_close_async(ml, terminate_closed, ml, err);
  if (st != SL_OK) {
    ml->term_cb = NULL;
    ml->terminating = false;
  }
  return st;
}

void sl_ml_destroy(sl_ml *ml) {
  if (ml == NULL) return;
  SL_ASSERT(!ml->destroyed);
  ml->destroyed = true;
  sl_timer_stop(&ml->trim_timer);
  ml_read_stop(ml);
  fail_queue(ml, SL_ECANCELED);
  ml->close_wanted = false;
  ml->close_cb = NULL;
  sl_ml_terminate_cb term_cb = ml->term_cb;
  ml->term_cb = NULL;
  if (term_cb != NULL) { /* its caller waits, like an append's */
    sl_ml_pos none = {0, -1};
    term_cb(SL_ECANCELED, "partition closed before it was terminated", none, ml->term_arg);
  }
  if (ml->cur != NULL && ml->state != SL_ML_ROLLING && ml->state != SL_ML_CLOSING) {
    /* Pending appends complete with SL_ECANCELED, holding references. A
     * close in flight owns cur and destroys it in its callback. */
    sl_ledger_destroy(ml->cur);
    ml->cur = NULL;
  }
  ml_unref(ml);
}

/* ---- properties ---- */

typedef struct prop_waiter {
  sl_ml_done_cb cb;
  void *arg;
} prop_waiter;

static void props_written(sl_ml *ml, sl_status st, const char *details, void *arg) {
  (void)ml;
  prop_waiter *w = arg;
  if (w->cb != NULL) w->cb(st, details, w->arg);
  free(w);
}

sl_status sl_ml_set_properties(sl_ml *ml, const char *prefix,
                               const sl_ml_prop *props, size_t n,
                               sl_ml_done_cb cb, void *arg, sl_err *err) {
  SL_ASSERT(sl_serial_running_here(ml->serial));
  if (ml->state != SL_ML_WRITING && ml->state != SL_ML_ROLLING)
    return sl_err_set(err, SL_EPRECOND, "partition %s: not writable", ml->partition);
  size_t plen = strlen(prefix);
  sl_ml_prop *out = sl_xcalloc(ml->n_props + n + 1, sizeof(*out));
  size_t k = 0;
  for (size_t i = 0; i < ml->n_props; i++) {
    if (strncmp(ml->props[i].key, prefix, plen) == 0) {
      free((char *)ml->props[i].key);
      free((char *)ml->props[i].value);
      continue;
    }
    out[k++] = ml->props[i];
  }
  for (size_t i = 0; i < n; i++) {
    out[k].key = sl_xstrdup(props[i].key);
    out[k].value = sl_xstrdup(props[i].value);
    k++;
  }
  free(ml->props);
  ml->props = out;
  ml->n_props = k;
  prop_waiter *w = sl_xcalloc(1, sizeof(*w));
  w->cb = cb;
  w->arg = arg;
  ml_write_list(ml, props_written, w);
  return SL_OK;
}

/* ---- open ---- */

static void recovered_stats_fn(sl_ml_stats *s, void *arg) {
  const sl_ml_pos *p = arg;
  s->recovered_entries = (uint64_t)(p->entry_id + 1);
  if (p->entry_id >= 0) s->last_confirmed = *p;
}

static void last_recovered(sl_status st, const char *details, sl_ledger *lh,
                           void *arg) {
  sl_ml *ml = arg;
  if (st != SL_OK) {
    open_finish(ml, st, details);
    ml_unref(ml);
    return;
  }
  ml_ref *r = &ml->refs_v[ml->n_refs - 1];
  r->entries = sl_ledger_last_entry(lh) + 1;
  sl_ml_pos last = {r->id, sl_ledger_last_entry(lh)};
  ml_stats_update(ml, recovered_stats_fn, &last);
  sl_log(SL_LOG_INFO, "event=ml_recovered partition=%s ledger=%llu last_entry=%lld epoch=%llu",
         ml->partition, (unsigned long long)r->id, (long long)last.entry_id,
         (unsigned long long)ml->epoch);
  sl_ledger_destroy(lh);
  create_ledger(ml);
  ml_unref(ml);
}

static void last_entry_fn(sl_ml_stats *s, void *arg) {
  sl_ml *ml = arg;
  s->ledgers = (uint32_t)ml->n_refs;
  for (size_t i = ml->n_refs; i > 0; i--) {
    if (ml->refs_v[i - 1].entries > 0) {
      s->last_confirmed.ledger_id = ml->refs_v[i - 1].id;
      s->last_confirmed.entry_id = ml->refs_v[i - 1].entries - 1;
      return;
    }
  }
}

/* A terminated list: the terminate closed the last ledger before it wrote
 * the flag, so every entry count is final and there is nothing to recover
 * (and nothing may be added): open CLOSED, for reads only. */
static void open_read_only(sl_ml *ml) {
  ml_stats_update(ml, last_entry_fn, ml);
  set_state(ml, SL_ML_CLOSED);
  sl_log(SL_LOG_INFO, "event=ml_opened_terminated partition=%s ledgers=%zu epoch=%llu",
         ml->partition, ml->n_refs, (unsigned long long)ml->epoch);
  open_finish(ml, SL_OK, NULL);
}

static void list_read(sl_status st, const char *details, ProtobufCMessage *resp,
                      void *arg) {
  sl_ml *ml = arg;
  const Sluice__V1__ManagedLedgerResponse *r = (const void *)resp;
  if (st == SL_ENOTFOUND) {
    ml->version = 0; /* a new partition: the first write creates the list */
    create_ledger(ml);
    ml_unref(ml);
    return;
  }
  if (st != SL_OK || r->info == NULL) {
    if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
    open_finish(ml, st != SL_OK ? st : SL_ECORRUPT,
                st != SL_OK ? details : "managed ledger without info");
    ml_unref(ml);
    return;
  }
  ml->version = r->version;
  ml->terminated = r->info->terminated;
  ml->refs_v = sl_xcalloc(r->info->n_ledgers + 1, sizeof(*ml->refs_v));
  for (size_t i = 0; i < r->info->n_ledgers; i++) {
    const Sluice__V1__LedgerRef *l = r->info->ledgers[i];
    ml_ref x = {l->ledger_id, l->entries, l->size_bytes, l->create_time_ms};
    ml->refs_v[ml->n_refs++] = x;
  }
  ml->props = sl_xcalloc(r->info->n_properties + 1, sizeof(*ml->props));
  for (size_t i = 0; i < r->info->n_properties; i++) {
    ml->props[i].key = sl_xstrdup(r->info->properties[i]->key);
    ml->props[i].value = sl_xstrdup(r->info->properties[i]->value);
  }
  ml->n_props = r->info->n_properties;
  protobuf_c_message_free_unpacked(resp, NULL);
  if (ml->terminated) {
    open_read_only(ml);
    ml_unref(ml);
    return;
  }
  if (ml->n_refs == 0) {
    create_ledger(ml);
    ml_unref(ml);
    return;
  }
  sl_ledger_recover_opts o = {ml->epoch, ml->serial};
  sl_err err = SL_ERR_INIT;
  st = sl_ledger_recover_async(ml->ledgers, ml->refs_v[ml->n_refs - 1].id, &o,
                               last_recovered, ml, &err);
  if (st != SL_OK) last_recovered(st, err.msg, NULL, ml);
}

static void open_start(void *arg) {
  sl_ml *ml = arg;
  Sluice__V1__GetManagedLedgerRequest req = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  req.partition = ml->partition;
  sl_rpc_call_opts o = ml_call_opts(ml);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_unary_start(ml->metadata, SL_METADATA_SERVICE_GET_MANAGED_LEDGER,
                                    &req.base, &o, list_read, ml, NULL, &err);
  if (st != SL_OK) list_read(st, err.msg, NULL, ml);
}

sl_status sl_ml_open_async(const sl_ml_opts *opts, sl_ml_open_cb cb, void *arg,
                           sl_err *err) {
  if (opts == NULL || opts->ledgers == NULL || opts->metadata == NULL ||
      opts->partition == NULL || opts->partition[0] == '\0' ||
      opts->serial == NULL || opts->epoch == 0 || cb == NULL)
    return sl_err_set(err, SL_EINVAL, "managed ledger: missing option");
  sl_ml *ml = sl_xcalloc(1, sizeof(*ml));
  ml->refs = 2; /* the user's (handed over by cb) and the open's */
  sl_serial_ref(opts->serial);
  ml->serial = opts->serial;
  ml->ledgers = opts->ledgers;
  ml->metadata = opts->metadata;
  ml->partition = sl_xstrdup(opts->partition);
  ml->epoch = opts->epoch;
  ml->policy = opts->policy;
  ml->metadata_timeout_ms = opts->metadata_timeout_ms > 0 ? opts->metadata_timeout_ms : 5000;
  ml->on_lost = opts->on_lost;
  ml->lost_arg = opts->lost_arg;
  ml->open_cb = cb;
  ml->open_arg = arg;
  ml->state = SL_ML_OPENING;
  pthread_mutex_init(&ml->stats_mu, NULL);
  ml->stats.state = SL_ML_OPENING;
  ml->stats.last_confirmed.entry_id = -1;
  sl_timer_init(&ml->trim_timer, ml->serial, ml_trim_fired, ml);
  /* Posted, so that cb never runs inside this call. */
  sl_serial_post(ml->serial, open_start, ml);
  return SL_OK;
}
