/* Design note: see service.h. This file: the unary methods and setup; the
 * AddEntry stream is in service_add.c. */
#include <inttypes.h>
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
  int64_t entry; /* fencing reads */
} pending_call;

static pending_call *pending_new(sl_bookie_svc *svc, sl_rpc_call *call, uint64_t ledger,
                                 int64_t entry) {
  pending_call *p = sl_xmalloc(sizeof(*p));
  p->svc = svc;
  p->call = call;
  p->ledger = ledger;
  p->entry = entry;
  sl_rpc_call_ref(call);
  return p;
}

static void pending_free(pending_call *p) {
  sl_rpc_call_unref(p->call);
  free(p);
}

/* Ends a call with a failure, logging what deserves an operator's eye. */
static void fail(sl_rpc_call *call, sl_status st, const char *msg) {
  if (st == SL_ECORRUPT || st == SL_EIO || st == SL_EINTERNAL) {
    sl_log(SL_LOG_WARN, "event=request_failed method=%s status=\"%s\" error=\"%s\"",
           sl_rpc_call_method(call)->path, sl_status_str(st), msg);
  }
  sl_rpc_call_finish(call, st, msg, NULL);
}

/* ---- ReadEntry ---- */

/* Reads (ledger, entry), entry -1 meaning the last one stored, and answers. */
static void answer_read(sl_bookie_svc *svc, sl_rpc_call *call, uint64_t ledger,
                        int64_t entry) {
  sl_err err = SL_ERR_INIT;
  sl_ledger_meta meta;
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  sl_status st = sl_bookie_store_ledger_meta(svc->store, ledger, &meta, &err);
  if (st != SL_OK) goto out_fail;
  if (entry == -1) {
    entry = meta.last_entry;
    if (entry < 0) {
      st = sl_err_set(&err, SL_ENOTFOUND, "ledger %" PRIu64 ": no entries here", ledger);
      goto out_fail;
    }
  }
  st = sl_bookie_store_read(svc->store, ledger, entry, &e, &err);
  if (st != SL_OK) goto out_fail;
  Sluice__V1__ReadEntryResponse r = SLUICE__V1__READ_ENTRY_RESPONSE__INIT;
  r.ledger_id = ledger;
  r.entry_id = entry;
  r.payload.data = (uint8_t *)e.payload;
  r.payload.len = e.len;
  r.crc32c = e.crc;
  r.lac = meta.lac;
  sl_bookie_service_read_entry_reply(call, &r);
  sl_ledger_entry_release(&e);
  return;
out_fail:
  fail(call, st, sl_err_msg(&err, st));
}

/* Journal thread: the fence of a fencing read is durable (or failed). */
static void on_read_fenced(sl_status st, const char *msg, void *arg) {
  pending_call *p = arg;
  if (st != SL_OK)
    fail(p->call, st, msg[0] ? msg : sl_status_str(st));
  else
    answer_read(p->svc, p->call, p->ledger, p->entry);
  pending_free(p);
}

static void read_entry(sl_rpc_call *call, const Sluice__V1__ReadEntryRequest *req,
                       void *ctx) {
  sl_bookie_svc *svc = ctx;
  sl_err err = SL_ERR_INIT;
  if (req->entry_id < -1) {
    sl_err_set(&err, SL_EINVAL, "ledger %" PRIu64 " entry %" PRId64
               ": bad entry id (>= 0, or -1 for the last)", req->ledger_id, req->entry_id);
    fail(call, SL_EINVAL, err.msg);
    return;
  }
  if (!req->fence) {
    answer_read(svc, call, req->ledger_id, req->entry_id);
    return;
  }
  pending_call *p = pending_new(svc, call, req->ledger_id, req->entry_id);
  sl_status st = sl_bookie_store_fence(svc->store, req->ledger_id, req->epoch,
                                       req->password.data, req->password.len,
                                       on_read_fenced, p, &err);
  if (st != SL_OK) {
    pending_free(p);
    fail(call, st, sl_err_msg(&err, st));
  }
}

/* ---- ReadLac ---- */

static void read_lac(sl_rpc_call *call, const Sluice__V1__ReadLacRequest *req, void *ctx) {
  sl_bookie_svc *svc = ctx;
  sl_err err = SL_ERR_INIT;
  sl_ledger_meta meta;
  sl_status st = sl_bookie_store_ledger_meta(svc->store, req->ledger_id, &meta, &err);
  if (st != SL_OK) {
    fail(call, st, sl_err_msg(&err, st));
    return;
  }
  Sluice__V1__ReadLacResponse r = SLUICE__V1__READ_LAC_RESPONSE__INIT;
  r.lac = meta.lac;
  r.last_entry_id = meta.last_entry;
  r.fenced = meta.fenced;
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
    fail(p->call, st, msg[0] ? msg : sl_status_str(st));
  } else {
    Sluice__V1__FenceResponse r = SLUICE__V1__FENCE_RESPONSE__INIT;
    r.lac = meta.lac;
    r.last_entry_id = meta.last_entry;
    sl_bookie_service_fence_reply(p->call, &r);
    sl_log(SL_LOG_INFO, "event=ledger_fenced ledger=%" PRIu64 " epoch=%" PRIu64
           " last_entry=%" PRId64, p->ledger, meta.max_epoch, meta.last_entry);
  }
  pending_free(p);
}

static void fence(sl_rpc_call *call, const Sluice__V1__FenceRequest *req, void *ctx) {
  sl_bookie_svc *svc = ctx;
  sl_err err = SL_ERR_INIT;
  pending_call *p = pending_new(svc, call, req->ledger_id, -1);
  sl_status st = sl_bookie_store_fence(svc->store, req->ledger_id, req->epoch,
                                       req->password.data, req->password.len, on_fenced,
                                       p, &err);
  if (st != SL_OK) {
    pending_free(p);
    fail(call, st, sl_err_msg(&err, st));
  }
}

/* ---- DeleteLedger ---- */

static void on_deleted(sl_status st, const char *msg, void *arg) {
  pending_call *p = arg;
  if (st != SL_OK) {
    fail(p->call, st, msg[0] ? msg : sl_status_str(st));
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
  pending_call *p = pending_new(svc, call, req->ledger_id, -1);
  sl_status st = sl_bookie_store_delete_ledger(svc->store, req->ledger_id, on_deleted, p,
                                               &err);
  if (st != SL_OK) {
    pending_free(p);
    fail(call, st, sl_err_msg(&err, st));
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
  sl_bookie_service_get_info_reply(call, &r);
}

/* ---- setup ---- */

sl_status sl_bookie_svc_create(sl_bookie_store *store, const sl_bookie_svc_opts *opts,
                               sl_bookie_svc **out, sl_err *err) {
  static const sl_bookie_svc_opts defaults = SL_BOOKIE_SVC_OPTS_INIT;
  if (opts == NULL) opts = &defaults;
  if (store == NULL || out == NULL || opts->bookie_id == NULL)
    return sl_err_set(err, SL_EINVAL, "bookie service: needs a store and an id");
  sl_bookie_svc *svc = sl_xcalloc(1, sizeof(*svc));
  svc->store = store;
  svc->bookie_id = sl_xstrdup(opts->bookie_id);
  svc->max_stream_adds = opts->max_stream_adds ? opts->max_stream_adds : 1024;
  svc->max_stream_bytes = opts->max_stream_bytes ? opts->max_stream_bytes : (64u << 20);
  *out = svc;
  return SL_OK;
}

sl_status sl_bookie_svc_register(sl_bookie_svc *svc, sl_rpc_server *srv, sl_err *err) {
  sl_bookie_service_handlers h;
  memset(&h, 0, sizeof(h));
  sl_bookie_svc_add_handlers_(&h);
  h.read_entry = read_entry;
  h.read_lac = read_lac;
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
  free(svc->bookie_id);
  free(svc);
}
