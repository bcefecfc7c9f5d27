/* Design note: see service.h. This file: the unary methods and setup; the
 * AddEntry stream is in service_add.c. */
#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "service_int.h"

#define LIST_DEFAULT_LIMIT 1000u
#define LIST_MAX_LIMIT 100000u

/* A unary call answered later from the journal thread. Holds a call
 * reference until answered. */
typedef struct pending_call {
  sl_bookie_svc *svc;
  sl_rpc_call *call;
  uint64_t ledger;
} pending_call;

static pending_call *pending_new(sl_bookie_svc *svc, sl_rpc_call *call, uint64_t ledger) {
  pending_call *p = sl_xmalloc(sizeof(*p));
  p->svc = svc;
  p->call = call;
  p->ledger = ledger;
  sl_rpc_call_ref(call);
  return p;
}

static void pending_free(pending_call *p) {
  sl_rpc_call_unref(p->call);
  free(p);
}

void sl_bookie_svc_fail_(sl_rpc_call *call, sl_status st, const char *msg) {
  if (st == SL_ECORRUPT || st == SL_EIO || st == SL_EINTERNAL) {
    sl_log(SL_LOG_WARN, "event=request_failed method=%s status=\"%s\" error=\"%s\"",
           sl_rpc_call_method(call)->path, sl_status_str(st), msg);
  }
  sl_rpc_call_finish(call, st, msg, NULL);
}

/* ---- ReadLac ---- */

static void read_lac(sl_rpc_call *call, const Sluice__V1__ReadLacRequest *req, void *ctx) {
  sl_bookie_svc *svc = ctx;
  sl_err err = SL_ERR_INIT;
  sl_ledger_meta meta;
  sl_status st = sl_bookie_store_ledger_meta(svc->store, req->ledger_id, &meta, &err);
  if (st != SL_OK) {
    sl_bookie_svc_fail_(call, st, sl_err_msg(&err, st));
    return;
  }
  Sluice__V1__ReadLacResponse r = SLUICE__V1__READ_LAC_RESPONSE__INIT;
  r.lac = meta.lac;
  r.last_entry_id = meta.last_entry;
  r.fenced = meta.fenced;
  r.instance_id = (char *)sl_bookie_store_instance_id(svc->store);
  sl_bookie_service_read_lac_reply(call, &r);
}

/* ---- Fence ---- */

static void on_fenced(sl_status st, const char *msg, void *arg) {
  pending_call *p = arg;
  sl_err err = SL_ERR_INIT;
  sl_ledger_meta meta;
  if (st == SL_OK) {
    st = sl_bookie_store_ledger_meta(p->svc->store, p->ledger, &meta, &err);
    msg = sl_err_msg(&err, st);
  }
  if (st != SL_OK) {
    sl_bookie_svc_fail_(p->call, st, msg[0] ? msg : sl_status_str(st));
  } else {
    Sluice__V1__FenceResponse r = SLUICE__V1__FENCE_RESPONSE__INIT;
    r.lac = meta.lac;
    r.last_entry_id = meta.last_entry;
    r.instance_id = (char *)sl_bookie_store_instance_id(p->svc->store);
    sl_bookie_service_fence_reply(p->call, &r);
    sl_log(SL_LOG_INFO, "event=ledger_fenced ledger=%" PRIu64 " epoch=%" PRIu64
           " last_entry=%" PRId64, p->ledger, meta.max_epoch, meta.last_entry);
  }
  pending_free(p);
}

static void fence(sl_rpc_call *call, const Sluice__V1__FenceRequest *req, void *ctx) {
  sl_bookie_svc *svc = ctx;
  sl_err err = SL_ERR_INIT;
  pending_call *p = pending_new(svc, call, req->ledger_id);
  sl_status st = sl_bookie_store_fence(svc->store, req->ledger_id, req->epoch,
                                       req->password.data, req->password.len, on_fenced,
                                       p, &err);
  if (st != SL_OK) {
    pending_free(p);
    sl_bookie_svc_fail_(call, st, sl_err_msg(&err, st));
  }
}

/* ---- WriteLac ---- */

static void on_lac_written(sl_status st, const char *msg, void *arg) {
  pending_call *p = arg;
  sl_err err = SL_ERR_INIT;
  sl_ledger_meta meta;
  if (st == SL_OK) {
    st = sl_bookie_store_ledger_meta(p->svc->store, p->ledger, &meta, &err);
    msg = sl_err_msg(&err, st);
  }
  if (st != SL_OK) {
    sl_bookie_svc_fail_(p->call, st, msg[0] ? msg : sl_status_str(st));
  } else {
    Sluice__V1__WriteLacResponse r = SLUICE__V1__WRITE_LAC_RESPONSE__INIT;
    r.lac = meta.lac;
    sl_bookie_service_write_lac_reply(p->call, &r);
  }
  pending_free(p);
}

static void write_lac(sl_rpc_call *call, const Sluice__V1__WriteLacRequest *req, void *ctx) {
  sl_bookie_svc *svc = ctx;
  sl_err err = SL_ERR_INIT;
  pending_call *p = pending_new(svc, call, req->ledger_id);
  sl_status st = sl_bookie_store_write_lac(svc->store, req->ledger_id, req->epoch, req->lac,
                                           req->password.data, req->password.len,
                                           on_lac_written, p, &err);
  if (st != SL_OK) {
    pending_free(p);
    sl_bookie_svc_fail_(call, st, sl_err_msg(&err, st));
  }
}

/* ---- DeleteLedger ---- */

static void on_deleted(sl_status st, const char *msg, void *arg) {
  pending_call *p = arg;
  if (st != SL_OK) {
    sl_bookie_svc_fail_(p->call, st, msg[0] ? msg : sl_status_str(st));
  } else {
    Sluice__V1__DeleteLedgerEntriesResponse r =
        SLUICE__V1__DELETE_LEDGER_ENTRIES_RESPONSE__INIT;
    sl_bookie_service_delete_ledger_reply(p->call, &r);
    sl_log(SL_LOG_INFO, "event=ledger_deleted ledger=%" PRIu64, p->ledger);
  }
  pending_free(p);
}

static void delete_ledger(sl_rpc_call *call,
                          const Sluice__V1__DeleteLedgerEntriesRequest *req, void *ctx) {
  sl_bookie_svc *svc = ctx;
  sl_err err = SL_ERR_INIT;
  pending_call *p = pending_new(svc, call, req->ledger_id);
  sl_status st = sl_bookie_store_delete_ledger(svc->store, req->ledger_id,
                                               req->password.data, req->password.len,
                                               on_deleted, p, &err);
  if (st != SL_OK) {
    pending_free(p);
    sl_bookie_svc_fail_(call, st, sl_err_msg(&err, st));
  }
}

/* ---- ListLedgers ---- */

static void list_ledgers(sl_rpc_call *call, const Sluice__V1__ListLedgersRequest *req,
                         void *ctx) {
  sl_bookie_svc *svc = ctx;
  uint64_t *ids = NULL;
  size_t n = 0;
  sl_bookie_store_list_ledgers(svc->store, &ids, &n);
  /* First id above start_after (ids are ascending). */
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (ids[mid] <= req->start_after)
      lo = mid + 1;
    else
      hi = mid;
  }
  size_t limit = req->limit == 0 ? LIST_DEFAULT_LIMIT
                 : req->limit > LIST_MAX_LIMIT ? LIST_MAX_LIMIT : req->limit;
  size_t count = n - lo < limit ? n - lo : limit;
  Sluice__V1__ListLedgersResponse r = SLUICE__V1__LIST_LEDGERS_RESPONSE__INIT;
  r.n_ledger_ids = count;
  r.ledger_ids = count > 0 ? ids + lo : NULL;
  r.more = lo + count < n;
  sl_bookie_service_list_ledgers_reply(call, &r);
  free(ids);
}

/* ---- GetInfo ---- */

static void get_info(sl_rpc_call *call, const Sluice__V1__GetInfoRequest *req, void *ctx) {
  (void)req;
  sl_bookie_svc *svc = ctx;
  sl_bookie_store_info info;
  sl_bookie_store_info_get(svc->store, &info);
  Sluice__V1__GetInfoResponse r = SLUICE__V1__GET_INFO_RESPONSE__INIT;
  r.bookie_id = svc->bookie_id;
  r.free_bytes = info.free_bytes;
  r.total_bytes = info.total_bytes;
  r.read_only = info.readonly || info.failed;
  r.ledger_count = info.ledgers;
  r.entry_count = info.entries;
  r.journal_bytes = info.journal_bytes;
  r.instance_id = (char *)sl_bookie_store_instance_id(svc->store);
  sl_bookie_service_get_info_reply(call, &r);
}

/* ---- metrics ---- */

void sl_bookie_svc_count_(sl_metrics_counter *const *by_outcome, sl_status st) {
  int i = -(int)st;
  if (i < 0 || i >= SVC_N_OUTCOMES) i = -(int)SL_EINTERNAL;
  sl_metrics_counter_inc(by_outcome[i]);
}

/* Registers one counter per outcome: the sluice.v1.Status value names,
 * lowercased without their prefix ("ok", "fenced", "stale_epoch" ...), so
 * the label says exactly what the writer was told. */
static sl_status register_outcomes(sl_metrics *m, const char *name, const char *help,
                                   sl_metrics_counter **out, sl_err *err) {
  const ProtobufCEnumDescriptor *d = &sluice__v1__status__descriptor;
  for (unsigned i = 0; i < d->n_values; i++) {
    const ProtobufCEnumValue *v = &d->values[i];
    if (v->value < 0 || v->value >= SVC_N_OUTCOMES) continue;
    char label[32];
    const char *src = strncmp(v->name, "STATUS_", 7) == 0 ? v->name + 7 : v->name;
    size_t k = 0;
    for (; src[k] != '\0' && k + 1 < sizeof(label); k++)
      label[k] = (char)tolower((unsigned char)src[k]);
    label[k] = '\0';
    const char *const labels[] = {"outcome", label, NULL};
    sl_status st = sl_metrics_register_counter(m, name, help, labels, &out[v->value], err);
    if (st != SL_OK) return st;
  }
  return SL_OK;
}

static sl_status register_metrics(sl_bookie_svc *svc, sl_metrics *m, sl_err *err) {
  if (m == NULL) return SL_OK;
  sl_status st = register_outcomes(m, "sluice_bookie_adds_total",
                                   "adds answered, by outcome (the typed status sent)",
                                   svc->m_adds, err);
  if (st == SL_OK)
    st = register_outcomes(m, "sluice_bookie_reads_total",
                           "entries read (ReadEntry, ReadEntries), by outcome; "
                           "not_found: answered found=false", svc->m_reads, err);
  if (st == SL_OK)
    st = sl_metrics_register_histogram(m, "sluice_bookie_add_latency_seconds",
                                       "accepted adds, from arrival to ack (durable)",
                                       NULL, NULL, 0, &svc->m_add_seconds, err);
  return st;
}

/* ---- setup ---- */

sl_status sl_bookie_svc_create(sl_bookie_store *store, const sl_bookie_svc_opts *opts,
                               sl_bookie_svc **out, sl_err *err) {
  static const sl_bookie_svc_opts defaults = SL_BOOKIE_SVC_OPTS_INIT;
  if (opts == NULL) opts = &defaults;
  if (store == NULL || out == NULL || opts->bookie_id == NULL)
    return sl_err_set(err, SL_EINVAL, "bookie service: needs a store and an id");
  if (opts->read_threads < 0 || opts->read_threads > 64 || opts->read_nice < 0 ||
      opts->read_nice > 19)
    return sl_err_set(err, SL_EINVAL, "bookie service: read_threads 0..64, read_nice 0..19");
  sl_bookie_svc *svc = sl_xcalloc(1, sizeof(*svc));
  svc->store = store;
  svc->bookie_id = sl_xstrdup(opts->bookie_id);
  svc->max_stream_adds = opts->max_stream_adds ? opts->max_stream_adds : 1024;
  svc->max_stream_bytes = opts->max_stream_bytes ? opts->max_stream_bytes : (64u << 20);
  sl_status st = register_metrics(svc, opts->metrics, err);
  if (st == SL_OK)
    st = sl_bookie_read_pool_start(svc, opts->read_threads ? opts->read_threads : 2,
                                   opts->read_nice, err);
  if (st != SL_OK) {
    sl_bookie_svc_destroy(svc);
    return st;
  }
  *out = svc;
  return SL_OK;
}

sl_status sl_bookie_svc_register(sl_bookie_svc *svc, sl_rpc_server *srv, sl_err *err) {
  sl_bookie_service_handlers h;
  memset(&h, 0, sizeof(h));
  sl_bookie_svc_add_handlers_(&h);
  sl_bookie_svc_read_handlers_(&h);
  h.read_lac = read_lac;
  h.write_lac = write_lac;
  h.fence = fence;
  h.delete_ledger = delete_ledger;
  h.list_ledgers = list_ledgers;
  h.get_info = get_info;
  return sl_bookie_service_register(srv, &h, svc, err);
}

void sl_bookie_svc_get_stats(sl_bookie_svc *svc, sl_bookie_svc_stats *out) {
  out->streams = atomic_load(&svc->streams);
  out->adds = atomic_load(&svc->adds);
  out->adds_ok = atomic_load(&svc->adds_ok);
  out->adds_refused = atomic_load(&svc->adds_refused);
  out->acks_deferred = atomic_load(&svc->acks_deferred);
  out->pauses = atomic_load(&svc->pauses);
}

void sl_bookie_svc_destroy(sl_bookie_svc *svc) {
  if (svc == NULL) return;
  sl_bookie_read_pool_stop(svc);
  free(svc->bookie_id);
  free(svc);
}
