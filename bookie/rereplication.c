/* Design note: see rereplication.h. */
#include "bookie/rereplication.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/ledger/ledger.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc_client.h"
#include "metadata.slrpc.h"

#define KIND_BOOKIE SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE

struct sl_rerep {
  sl_rpc_channel *ch;
  sl_ledger_client *client;
  char *node_id;
  sl_rerep_session_fn session;
  void *session_arg;
  int poll_ms;
  uint64_t bps;
  int rpc_timeout_ms;
  pthread_t thread;

  sl_metrics_counter *m_done, *m_failed, *m_copied;

  pthread_mutex_t mu;       /* guards stop and the outcome below */
  pthread_cond_t cv;        /* stop, an item's outcome */
  bool stop;
  atomic_bool cancel;       /* set by stop: the item in progress ends */
  bool item_done;
  sl_status item_st;
  uint64_t item_copied;
  char item_details[SL_ERR_MAX];
};

/* Waits up to ms or until stop; false once stopping. */
static bool nap(sl_rerep *w, int ms) {
  struct timespec ts = sl_clock_deadline(CLOCK_MONOTONIC, (int64_t)ms * 1000000);
  pthread_mutex_lock(&w->mu);
  while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &ts) == 0) {
  }
  bool go_on = !w->stop;
  pthread_mutex_unlock(&w->mu);
  return go_on;
}

/* ---- one item ---- */

/* The ledger client's serial. */
static void on_copied(sl_status st, const char *details, uint32_t replaced, uint64_t copied,
                      void *arg) {
  (void)replaced;
  sl_rerep *w = arg;
  pthread_mutex_lock(&w->mu);
  w->item_st = st;
  w->item_copied = copied;
  snprintf(w->item_details, sizeof(w->item_details), "%s", details);
  w->item_done = true;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Copies one claimed ledger; its status. Waits for the outcome even when
 * stopping: stop sets `cancel`, which ends the copy soon. */
static sl_status copy(sl_rerep *w, const Sluice__V1__UnderReplicated *item) {
  const char **gone = calloc(item->n_bookie_ids + 1, sizeof(char *));
  if (!gone) return SL_ENOMEM;
  for (size_t i = 0; i < item->n_bookie_ids; i++) gone[i] = item->bookie_ids[i];
  sl_ledger_rereplicate_opts o = {.gone = gone, .bytes_per_second = w->bps,
                                  .cancel = &w->cancel};
  pthread_mutex_lock(&w->mu);
  w->item_done = false;
  pthread_mutex_unlock(&w->mu);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_rereplicate_async(w->client, item->ledger_id, &o, on_copied, w,
                                             &err);
  free(gone);
  if (st != SL_OK) {
    sl_log(SL_LOG_WARN, "event=rereplication_not_started ledger=%" PRIu64 " error=\"%s\"",
           item->ledger_id, sl_err_msg(&err, st));
    return st;
  }
  pthread_mutex_lock(&w->mu);
  while (!w->item_done) pthread_cond_wait(&w->cv, &w->mu);
  st = w->item_st;
  uint64_t copied = w->item_copied;
  pthread_mutex_unlock(&w->mu);
  sl_metrics_counter_add(w->m_copied, copied);
  return st;
}

/* Nothing (more) to do for the item: it can go. */
static bool settled(sl_status st) {
  return st == SL_OK || st == SL_ENOTFOUND || st == SL_EPRECOND;
}

static sl_status finish(sl_rerep *w, int64_t session, uint64_t ledger, bool done) {
  Sluice__V1__FinishRereplicationRequest req = SLUICE__V1__FINISH_REREPLICATION_REQUEST__INIT;
  req.session_id = session;
  req.kind = KIND_BOOKIE;
  req.node_id = w->node_id;
  req.ledger_id = ledger;
  req.done = done;
  Sluice__V1__FinishRereplicationResponse *resp = NULL;
  sl_rpc_call_opts co = {.timeout_ms = w->rpc_timeout_ms};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_finish_rereplication(w->ch, &req, &resp, &co, &err);
  if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
  if (st != SL_OK)
    sl_log(SL_LOG_WARN, "event=rereplication_finish_failed ledger=%" PRIu64 " done=%d "
           "error=\"%s\"", ledger, (int)done, sl_err_msg(&err, st));
  return st;
}

/* Claims one item and works on it. True if there was one and it went well
 * (so the next claim comes at once). */
static bool work_once(sl_rerep *w) {
  int64_t session = w->session(w->session_arg);
  if (session == 0) return false;
  Sluice__V1__ClaimRereplicationRequest req = SLUICE__V1__CLAIM_REREPLICATION_REQUEST__INIT;
  req.session_id = session;
  req.kind = KIND_BOOKIE;
  req.node_id = w->node_id;
  Sluice__V1__ClaimRereplicationResponse *resp = NULL;
  sl_rpc_call_opts co = {.timeout_ms = w->rpc_timeout_ms};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_claim_rereplication(w->ch, &req, &resp, &co, &err);
  if (st != SL_OK) {
    sl_log(SL_LOG_WARN, "event=rereplication_claim_failed error=\"%s\"", sl_err_msg(&err, st));
    return false;
  }
  bool ok = false;
  if (resp->claimed && resp->work) {
    const Sluice__V1__UnderReplicated *item = resp->work;
    sl_log(SL_LOG_INFO, "event=rereplication_claimed ledger=%" PRIu64 " bookies=%zu",
           item->ledger_id, item->n_bookie_ids);
    st = copy(w, item);
    bool done = settled(st);
    sl_metrics_counter_inc(done ? w->m_done : w->m_failed);
    ok = finish(w, session, item->ledger_id, done) == SL_OK && done;
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return ok;
}

static void *run(void *arg) {
  sl_rerep *w = arg;
  (void)pthread_setname_np(pthread_self(), "bookie-rerep");
  for (;;) {
    bool busy = work_once(w);
    if (!(busy ? nap(w, 0) : nap(w, w->poll_ms))) break;
  }
  return NULL;
}

/* ---- start, stop ---- */

static sl_status register_metrics(sl_rerep *w, struct sl_metrics *m, sl_err *err) {
  if (m == NULL) return SL_OK;
  static const char *const done[] = {"outcome", "done", NULL};
  static const char *const failed[] = {"outcome", "failed", NULL};
  const char *help = "re-replication work items this bookie finished: done (copied, or "
                     "nothing left to do) or failed (released for a later try)";
  sl_status st = sl_metrics_register_counter(m, "sluice_bookie_rereplication_items_total",
                                             help, done, &w->m_done, err);
  if (st == SL_OK)
    st = sl_metrics_register_counter(m, "sluice_bookie_rereplication_items_total", help,
                                     failed, &w->m_failed, err);
  if (st == SL_OK)
    st = sl_metrics_register_counter(m, "sluice_bookie_rereplication_entries_total",
                                     "entries this bookie's worker copied to replacement "
                                     "bookies", NULL, &w->m_copied, err);
  return st;
}

static void rerep_free(sl_rerep *w) {
  sl_ledger_client_destroy(w->client);
  sl_rpc_channel_destroy(w->ch);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w->node_id);
  free(w);
}

sl_status sl_rerep_start(const sl_rerep_opts *o, sl_rerep **out, sl_err *err) {
  if (o == NULL || out == NULL || o->target == NULL || o->target[0] == '\0' ||
      o->node_id == NULL || o->session == NULL)
    return sl_err_set(err, SL_EINVAL, "re-replication: needs a metadata target, a node id "
                      "and a session");
  if (o->poll_ms < 0 || o->rpc_timeout_ms < 0)
    return sl_err_set(err, SL_EINVAL, "re-replication: poll_ms and rpc_timeout_ms must not "
                      "be negative");
  sl_rerep *w = sl_xcalloc(1, sizeof(*w));
  w->node_id = sl_xstrdup(o->node_id);
  w->session = o->session;
  w->session_arg = o->session_arg;
  w->poll_ms = o->poll_ms > 0 ? o->poll_ms : 10000;
  w->bps = o->bytes_per_second;
  w->rpc_timeout_ms = o->rpc_timeout_ms > 0 ? o->rpc_timeout_ms : 5000;
  atomic_init(&w->cancel, false);
  pthread_mutex_init(&w->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  sl_rpc_channel_opts co = {.target = o->target,
                            .tls_root_pem = o->tls_root_pem,
                            .tls_cert_pem = o->tls_cert_pem,
                            .tls_key_pem = o->tls_key_pem,
                            .authorization = o->authorization};
  sl_status st = register_metrics(w, o->metrics, err);
  if (st == SL_OK) st = sl_rpc_channel_create(&co, &w->ch, err);
  if (st == SL_OK) {
    sl_ledger_client_opts lo = SL_LEDGER_CLIENT_OPTS_INIT;
    lo.metadata = w->ch;
    lo.bookie_channel = o->bookie_channel;
    st = sl_ledger_client_create(&lo, &w->client, err);
  }
  if (st != SL_OK) goto out_free;
  int rc = pthread_create(&w->thread, NULL, run, w);
  if (rc != 0) {
    st = sl_err_set(err, SL_EINTERNAL, "re-replication: pthread_create: %s", strerror(rc));
    goto out_free;
  }
  sl_log(SL_LOG_INFO, "event=rereplication_started target=%s poll_ms=%d bytes_per_second=%"
         PRIu64, o->target, w->poll_ms, w->bps);
  *out = w;
  return SL_OK;
out_free:
  rerep_free(w);
  return sl_err_wrap(err, st, "re-replication");
}

void sl_rerep_stop(sl_rerep *w) {
  if (w == NULL) return;
  pthread_mutex_lock(&w->mu);
  w->stop = true;
  atomic_store(&w->cancel, true);
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  rerep_free(w);
}
