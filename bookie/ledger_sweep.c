/* Design note: see ledger_sweep.h. */
#include "bookie/ledger_sweep.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc_client.h"
#include "metadata.slrpc.h"

struct sl_sweep {
  sl_bookie_store *store;
  sl_rpc_channel *ch;
  char *target;
  char *bookie_id;          /* NULL: no "moved away" drops */
  int interval_ms;
  int64_t lookup_period_ns; /* 1 s / lookups_per_second */
  int rpc_timeout_ms;
  bool (*trusted)(void *arg);
  void *trusted_arg;
  pthread_t thread;
  bool started;             /* the thread runs */

  sl_metrics_counter *m_passes_complete, *m_passes_early, *m_dropped, *m_unknown, *m_moved;

  pthread_mutex_t pass_mu;  /* held for a whole pass: invariant 5 */
  pthread_mutex_t mu;       /* guards the fields below and every `done` flag */
  pthread_cond_t cv;        /* stop, a lookup answered, a drop completed */
  bool stop;
  sl_rpc_ucall *call;       /* the lookup in flight, for stop to cancel */
};

/* ---- waiting ---- */

/* Waits on sw->cv until deadline_ns (monotonic). Under sw->mu. False once
 * the deadline has passed. */
static bool wait_until_locked(sl_sweep *sw, int64_t deadline_ns) {
  int64_t left = deadline_ns - sl_clock_mono_ns();
  if (left <= 0) return false;
  struct timespec ts = sl_clock_deadline(CLOCK_MONOTONIC, left);
  pthread_cond_timedwait(&sw->cv, &sw->mu, &ts);
  return true;
}

/* The rate limit: waits until *next_ns, then sets the slot after this one.
 * A condition wait, so stop ends it at once. False on stop. */
static bool pace(sl_sweep *sw, int64_t *next_ns) {
  pthread_mutex_lock(&sw->mu);
  while (!sw->stop && wait_until_locked(sw, *next_ns)) {
  }
  bool stopping = sw->stop;
  pthread_mutex_unlock(&sw->mu);
  *next_ns = sl_clock_mono_ns() + sw->lookup_period_ns;
  return !stopping;
}

/* ---- one lookup ---- */

/* A GetLedger in flight. Lives on the sweeping thread's stack: that thread
 * always waits for on_reply (a cancel makes it come at once). */
typedef struct lookup {
  sl_sweep *sw;
  bool done; /* under sw->mu */
  sl_status st;
  bool moved; /* SL_OK, and re-replication moved this bookie's copy away */
  char details[SL_ERR_MAX];
} lookup;

/* The rule for SL_OK: a CLOSED ledger that a Rereplication record says was
 * copied away from this bookie, and that no segment names it in any more.
 * Re-replication never picks a bookie a record replaced (ledger.h), so
 * nothing can name it again. */
static bool moved_away(const char *me, const Sluice__V1__LedgerInfo *l) {
  if (me == NULL || l == NULL || l->state != SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED)
    return false;
  bool replaced = false;
  for (size_t i = 0; i < l->n_rereplications; i++)
    replaced |= strcmp(l->rereplications[i]->from_bookie, me) == 0;
  for (size_t s = 0; replaced && s < l->n_ensembles; s++)
    for (size_t b = 0; b < l->ensembles[s]->n_bookie_ids; b++)
      if (strcmp(l->ensembles[s]->bookie_ids[b], me) == 0) return false;
  return replaced;
}

/* Channel completion thread. */
static void on_reply(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  lookup *lk = arg;
  sl_sweep *sw = lk->sw;
  bool moved = st == SL_OK && resp != NULL &&
               moved_away(sw->bookie_id, ((Sluice__V1__LedgerResponse *)resp)->info);
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  pthread_mutex_lock(&sw->mu);
  lk->st = st;
  lk->moved = moved;
  snprintf(lk->details, sizeof(lk->details), "%s", details != NULL ? details : "");
  lk->done = true;
  pthread_cond_broadcast(&sw->cv);
  pthread_mutex_unlock(&sw->mu);
}

/* GetLedger(ledger): its status (SL_ECANCELED on stop). */
static sl_status look_up(sl_sweep *sw, uint64_t ledger, bool *moved, sl_err *err) {
  Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  req.ledger_id = ledger;
  lookup lk = {.sw = sw, .done = false};
  sl_rpc_call_opts co = {.timeout_ms = sw->rpc_timeout_ms};
  sl_rpc_ucall *call = NULL;
  sl_status st = sl_rpc_unary_start(sw->ch, SL_METADATA_SERVICE_GET_LEDGER, &req.base,
                                    &co, on_reply, &lk, &call, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "ledger %" PRIu64 ": get ledger", ledger);
  pthread_mutex_lock(&sw->mu);
  /* Published for stop; a stop that came before it could see the call
   * cancels it here instead. */
  sw->call = call;
  if (sw->stop) sl_rpc_ucall_cancel(call);
  while (!lk.done) pthread_cond_wait(&sw->cv, &sw->mu);
  sw->call = NULL;
  pthread_mutex_unlock(&sw->mu);
  sl_rpc_ucall_unref(call);
  *moved = lk.moved;
  if (lk.st == SL_OK) return SL_OK;
  return sl_err_set(err, lk.st, "ledger %" PRIu64 ": get ledger: %s", ledger,
                    lk.details[0] ? lk.details : sl_status_str(lk.st));
}

/* ---- one drop ---- */

/* A drop in flight; on the sweeping thread's stack until its callback ran. */
typedef struct drop {
  sl_sweep *sw;
  bool done; /* under sw->mu */
  sl_status st;
  char msg[SL_ERR_MAX];
} drop;

/* Store applier thread. */
static void on_dropped(sl_status st, const char *msg, void *arg) {
  drop *d = arg;
  sl_sweep *sw = d->sw;
  pthread_mutex_lock(&sw->mu);
  d->st = st;
  snprintf(d->msg, sizeof(d->msg), "%s", msg != NULL ? msg : "");
  d->done = true;
  pthread_cond_broadcast(&sw->cv);
  pthread_mutex_unlock(&sw->mu);
}

/* Drops a ledger and waits until that is durable (invariant 4). Stop does
 * not cut the wait short: the callback must run before d goes away, and a
 * local delete is quick. */
static sl_status drop_ledger(sl_sweep *sw, uint64_t ledger, sl_err *err) {
  drop d = {.sw = sw, .done = false};
  sl_status st = sl_bookie_store_drop_ledger(sw->store, ledger, on_dropped, &d, err);
  if (st != SL_OK) return st;
  pthread_mutex_lock(&sw->mu);
  while (!d.done) pthread_cond_wait(&sw->cv, &sw->mu);
  pthread_mutex_unlock(&sw->mu);
  if (d.st == SL_OK) return SL_OK;
  return sl_err_set(err, d.st, "ledger %" PRIu64 ": drop: %s", ledger,
                    d.msg[0] ? d.msg : sl_status_str(d.st));
}

/* ---- a pass ---- */

/* Looks up one ledger and acts on the answer (the rule in the design
 * note). SL_OK to go on with the next ledger, else what ends the pass. */
static sl_status sweep_one(sl_sweep *sw, uint64_t ledger, sl_sweep_result *r, sl_err *err) {
  bool moved = false;
  sl_status st = look_up(sw, ledger, &moved, err);
  if (st == SL_OK && !moved) {
    r->checked++;
    return SL_OK;
  }
  if (st == SL_ENOTFOUND) {
    r->checked++;
    r->kept_unknown++;
    sl_metrics_counter_inc(sw->m_unknown);
    /* Invariant 2: the metadata service is wrong, not the data. */
    sl_log(SL_LOG_WARN, "event=sweep_unknown_ledger ledger=%" PRIu64 " target=%s "
           "action=kept error=\"%s\"", ledger, sw->target, sl_err_msg(err, st));
    return SL_OK;
  }
  if (st != SL_EDELETED && !moved) return st;
  r->checked++;
  st = drop_ledger(sw, ledger, err);
  if (st == SL_EBUSY) {
    r->busy++;
    sl_log(SL_LOG_INFO, "event=sweep_drop_busy ledger=%" PRIu64, ledger);
    return SL_OK;
  }
  if (st != SL_OK) return st;
  r->dropped++;
  r->moved += moved;
  sl_metrics_counter_inc(moved ? sw->m_moved : sw->m_dropped);
  sl_log(SL_LOG_INFO, "event=sweep_dropped ledger=%" PRIu64 " reason=%s", ledger,
         moved ? "rereplicated_away" : "deleted");
  return SL_OK;
}

/* One line per pass; a pass ended early also says why, once (a metadata
 * service that is down would otherwise fill the log once per ledger). */
static void log_pass(const sl_sweep *sw, const sl_sweep_result *r, int64_t took_ms,
                     uint64_t at_ledger, const sl_err *err) {
  if (r->ended_by == SL_OK) {
    sl_log(SL_LOG_INFO, "event=sweep_pass ledgers=%" PRIu64 " checked=%" PRIu64
           " dropped=%" PRIu64 " moved=%" PRIu64 " unknown=%" PRIu64 " busy=%" PRIu64
           " took_ms=%" PRId64, r->ledgers, r->checked, r->dropped, r->moved,
           r->kept_unknown, r->busy, took_ms);
    return;
  }
  /* Stopping is not a problem worth a warning. */
  sl_log(r->ended_by == SL_ECANCELED ? SL_LOG_INFO : SL_LOG_WARN,
         "event=sweep_pass_ended_early ledger=%" PRIu64 " target=%s status=\"%s\" "
         "error=\"%s\" ledgers=%" PRIu64 " checked=%" PRIu64 " dropped=%" PRIu64
         " unknown=%" PRIu64 " busy=%" PRIu64 " took_ms=%" PRId64, at_ledger, sw->target,
         sl_status_str(r->ended_by), sl_err_msg(err, r->ended_by), r->ledgers, r->checked,
         r->dropped, r->kept_unknown, r->busy, took_ms);
}

static sl_status pass(sl_sweep *sw, sl_sweep_result *r, sl_err *err) {
  *r = (sl_sweep_result){.ended_by = SL_OK};
  /* Invariant 2's "or belongs to another cluster": tombstones of another
   * cluster name its own ledger ids, which may be ours. */
  if (sw->trusted != NULL && !sw->trusted(sw->trusted_arg)) {
    sl_log(SL_LOG_INFO, "event=sweep_skipped reason=\"metadata service not confirmed as this "
           "bookie's cluster\"");
    r->ended_by = sl_err_set(err, SL_EPRECOND, "ledger sweep: metadata service not confirmed "
                             "as this bookie's cluster");
    return r->ended_by;
  }
  /* Lookups that only keep a ledger fail too (NOT_FOUND): their messages
   * stay here, and the caller's err gets only what ended the pass. */
  sl_err e = SL_ERR_INIT;
  pthread_mutex_lock(&sw->pass_mu);
  int64_t t0 = sl_clock_mono_ms();
  uint64_t *ids = NULL;
  size_t n = 0;
  sl_bookie_store_list_ledgers(sw->store, &ids, &n);
  r->ledgers = n;
  int64_t next_ns = sl_clock_mono_ns();
  uint64_t at = 0;
  for (size_t i = 0; i < n && r->ended_by == SL_OK; i++) {
    at = ids[i];
    if (!pace(sw, &next_ns))
      r->ended_by = sl_err_set(&e, SL_ECANCELED, "ledger sweep: stopping");
    else
      r->ended_by = sweep_one(sw, at, r, &e);
  }
  free(ids);
  sl_metrics_counter_inc(r->ended_by == SL_OK ? sw->m_passes_complete : sw->m_passes_early);
  log_pass(sw, r, sl_clock_mono_ms() - t0, at, &e);
  pthread_mutex_unlock(&sw->pass_mu);
  if (r->ended_by != SL_OK && err != NULL) *err = e;
  return r->ended_by;
}

sl_status sl_sweep_run_once(sl_sweep *sw, sl_sweep_result *out, sl_err *err) {
  if (sw == NULL || out == NULL)
    return sl_err_set(err, SL_EINVAL, "ledger sweep: run_once needs a sweep and a result");
  return pass(sw, out, err);
}

/* ---- the thread ---- */

static void *run(void *arg) {
  sl_sweep *sw = arg;
  (void)pthread_setname_np(pthread_self(), "bookie-sweep");
  pthread_mutex_lock(&sw->mu);
  for (;;) {
    int64_t due = sl_clock_mono_ns() + (int64_t)sw->interval_ms * 1000000;
    while (!sw->stop && wait_until_locked(sw, due)) {
    }
    if (sw->stop) break;
    pthread_mutex_unlock(&sw->mu);
    sl_sweep_result r;
    sl_err err = SL_ERR_INIT;
    (void)pass(sw, &r, &err); /* it logs its own outcome */
    pthread_mutex_lock(&sw->mu);
  }
  pthread_mutex_unlock(&sw->mu);
  return NULL;
}

/* ---- start, stop ---- */

static sl_status register_metrics(sl_sweep *sw, struct sl_metrics *m, sl_err *err) {
  if (m == NULL) return SL_OK;
  static const char *const complete[] = {"outcome", "complete", NULL};
  static const char *const early[] = {"outcome", "ended_early", NULL};
  const char *passes_help = "ledger sweep passes: complete, or ended early (metadata "
                            "service unreachable, stop)";
  sl_status st = sl_metrics_register_counter(m, "sluice_bookie_sweep_passes_total",
                                             passes_help, complete,
                                             &sw->m_passes_complete, err);
  if (st == SL_OK)
    st = sl_metrics_register_counter(m, "sluice_bookie_sweep_passes_total", passes_help,
                                     early, &sw->m_passes_early, err);
  if (st == SL_OK)
    st = sl_metrics_register_counter(m, "sluice_bookie_sweep_dropped_ledgers_total",
                                     "local ledgers dropped because the metadata "
                                     "service holds their tombstone", NULL,
                                     &sw->m_dropped, err);
  if (st == SL_OK)
    st = sl_metrics_register_counter(m, "sluice_bookie_sweep_moved_ledgers_total",
                                     "local ledgers dropped because auto-recovery copied "
                                     "them to other bookies while this one was gone",
                                     NULL, &sw->m_moved, err);
  if (st == SL_OK)
    st = sl_metrics_register_counter(m, "sluice_bookie_sweep_unknown_ledgers_total",
                                     "local ledgers the metadata service has neither a "
                                     "record nor a tombstone for (kept), per pass",
                                     NULL, &sw->m_unknown, err);
  return st;
}

static void sweep_free(sl_sweep *sw) {
  sl_rpc_channel_destroy(sw->ch);
  pthread_cond_destroy(&sw->cv);
  pthread_mutex_destroy(&sw->mu);
  pthread_mutex_destroy(&sw->pass_mu);
  free(sw->target);
  free(sw->bookie_id);
  free(sw);
}

sl_status sl_sweep_start(sl_bookie_store *store, const sl_sweep_opts *o, sl_sweep **out,
                         sl_err *err) {
  if (store == NULL || o == NULL || out == NULL || o->target == NULL || o->target[0] == '\0')
    return sl_err_set(err, SL_EINVAL, "ledger sweep: needs a store and a metadata target");
  if (o->interval_ms < 0 || o->lookups_per_second < 0 || o->rpc_timeout_ms < 0)
    return sl_err_set(err, SL_EINVAL, "ledger sweep: interval_ms, lookups_per_second and "
                      "rpc_timeout_ms must not be negative");
  sl_sweep *sw = sl_xcalloc(1, sizeof(*sw));
  sw->store = store;
  sw->target = sl_xstrdup(o->target);
  sw->bookie_id = o->bookie_id ? sl_xstrdup(o->bookie_id) : NULL;
  sw->interval_ms = o->interval_ms;
  sw->trusted = o->trusted;
  sw->trusted_arg = o->trusted_arg;
  int lps = o->lookups_per_second > 0 ? o->lookups_per_second : 100;
  sw->lookup_period_ns = 1000000000 / lps;
  sw->rpc_timeout_ms = o->rpc_timeout_ms > 0 ? o->rpc_timeout_ms : 2000;
  pthread_mutex_init(&sw->pass_mu, NULL);
  pthread_mutex_init(&sw->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&sw->cv, &ca);
  pthread_condattr_destroy(&ca);
  sl_rpc_channel_opts co = {.target = o->target,
                            .tls_root_pem = o->tls_root_pem,
                            .tls_cert_pem = o->tls_cert_pem,
                            .tls_key_pem = o->tls_key_pem,
                            .authorization = o->authorization};
  sl_status st = register_metrics(sw, o->metrics, err);
  if (st == SL_OK) st = sl_rpc_channel_create(&co, &sw->ch, err);
  if (st != SL_OK) goto out_free;
  if (sw->interval_ms > 0) {
    int rc = pthread_create(&sw->thread, NULL, run, sw);
    if (rc != 0) {
      st = sl_err_set(err, SL_EINTERNAL, "ledger sweep: pthread_create: %s", strerror(rc));
      goto out_free;
    }
    sw->started = true;
  }
  sl_log(SL_LOG_INFO, "event=sweep_started target=%s interval_ms=%d lookups_per_second=%d",
         sw->target, sw->interval_ms, lps);
  *out = sw;
  return SL_OK;
out_free:
  sweep_free(sw);
  return sl_err_wrap(err, st, "ledger sweep");
}

void sl_sweep_stop(sl_sweep *sw) {
  if (sw == NULL) return;
  pthread_mutex_lock(&sw->mu);
  sw->stop = true;
  /* Cancelling only posts the call's end to its completion thread, so it
   * is safe under mu; under mu the looking thread cannot unref it. */
  if (sw->call != NULL) sl_rpc_ucall_cancel(sw->call);
  pthread_cond_broadcast(&sw->cv);
  pthread_mutex_unlock(&sw->mu);
  if (sw->started) pthread_join(sw->thread, NULL);
  sweep_free(sw);
}
