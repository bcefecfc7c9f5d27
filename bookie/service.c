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
#define RANGE_DEFAULT_ENTRIES 64u
#define RANGE_DEFAULT_BYTES (1u << 20)

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

/* Counts one read by outcome: found, not found here, or an error. */
static void count_read(sl_bookie_svc *svc, sl_status st, bool found) {
  sl_bookie_svc_count_(svc->m_reads, st == SL_OK && !found ? SL_ENOTFOUND : st);
}

/* Reads (ledger, entry), entry -1 meaning the last one stored, and answers:
 * OK with found=false when this bookie does not have the entry. */
static void answer_read(sl_bookie_svc *svc, sl_rpc_call *call, uint64_t ledger,
                        int64_t entry) {
  sl_err err = SL_ERR_INIT;
  sl_ledger_meta meta;
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  sl_status st = sl_bookie_store_ledger_meta(svc->store, ledger, &meta, &err);
  if (st != SL_OK) goto out_fail;
  if (entry == -1) entry = meta.last_entry;
  bool found = false;
  if (entry >= 0) {
    st = sl_bookie_store_read(svc->store, ledger, entry, &e, &err);
    found = st == SL_OK;
    if (st == SL_ENOTFOUND) st = SL_OK;
    if (st != SL_OK) goto out_fail;
  }
  Sluice__V1__ReadEntryResponse r = SLUICE__V1__READ_ENTRY_RESPONSE__INIT;
  r.ledger_id = ledger;
  r.entry_id = entry;
  r.found = found;
  r.payload.data = (uint8_t *)e.payload;
  r.payload.len = e.len;
  r.crc32c = e.crc;
  r.lac = meta.lac;
  r.last_entry_id = meta.last_entry;
  r.fenced = meta.fenced;
  r.instance_id = (char *)sl_bookie_store_instance_id(svc->store);
  sl_bookie_service_read_entry_reply(call, &r);
  sl_ledger_entry_release(&e);
  count_read(svc, SL_OK, found);
  return;
out_fail:
  count_read(svc, st, false);
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
    count_read(svc, SL_EINVAL, false);
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
    count_read(svc, st, false);
    fail(call, st, sl_err_msg(&err, st));
  }
}

/* ---- ReadEntries ----
 *
 * State of one range read, in call memory. pump() runs first from the
 * handler and then only from on_writable, which the runtime calls only
 * after a send came back SL_EBUSY and pump returned: so pumps never overlap
 * and need no lock.
 */
typedef struct range_read {
  sl_bookie_svc *svc;
  uint64_t ledger;
  int64_t next;       /* first entry not yet sent */
  int64_t last;       /* last entry wanted */
  uint32_t max_entries;
  uint32_t max_bytes;
} range_read;

/* Fills one batch from rr->next. Returns SL_OK (with *found false if an
 * entry was missing), or an error. Entries in *batch must be released. */
static sl_status fill_batch(range_read *rr, sl_ledger_entry *ents, Sluice__V1__Entry *pb,
                            Sluice__V1__Entry **ptrs, size_t *n, bool *found,
                            sl_err *err) {
  size_t bytes = 0;
  *n = 0;
  *found = true;
  for (int64_t id = rr->next; id <= rr->last && *n < rr->max_entries; id++) {
    sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
    sl_status st = sl_bookie_store_read(rr->svc->store, rr->ledger, id, &e, err);
    if (st == SL_ENOTFOUND) {
      *found = false;
      return SL_OK;
    }
    if (st != SL_OK) return st;
    /* An entry larger than max_bytes still goes, alone. */
    if (*n > 0 && bytes + e.len > rr->max_bytes) {
      sl_ledger_entry_release(&e);
      break;
    }
    bytes += e.len;
    ents[*n] = e;
    sluice__v1__entry__init(&pb[*n]);
    pb[*n].entry_id = id;
    pb[*n].payload.data = (uint8_t *)e.payload;
    pb[*n].payload.len = e.len;
    pb[*n].crc32c = e.crc;
    ptrs[*n] = &pb[*n];
    (*n)++;
  }
  return SL_OK;
}

/* Sends batches until the range is done, an entry is missing, an error, or
 * the write queue is full (then on_writable calls again). */
static void pump(sl_rpc_call *call, range_read *rr) {
  sl_bookie_svc *svc = rr->svc;
  size_t cap = rr->max_entries;
  sl_ledger_entry *ents = sl_xcalloc(cap, sizeof(*ents));
  Sluice__V1__Entry *pb = sl_xcalloc(cap, sizeof(*pb));
  Sluice__V1__Entry **ptrs = sl_xcalloc(cap, sizeof(*ptrs));
  for (;;) {
    sl_err err = SL_ERR_INIT;
    sl_ledger_meta meta;
    size_t n = 0;
    bool found = true;
    sl_status st = sl_bookie_store_ledger_meta(svc->store, rr->ledger, &meta, &err);
    if (st == SL_OK) st = fill_batch(rr, ents, pb, ptrs, &n, &found, &err);
    if (st != SL_OK) {
      count_read(svc, st, false);
      fail(call, st, sl_err_msg(&err, st));
      break;
    }
    Sluice__V1__ReadEntriesResponse r = SLUICE__V1__READ_ENTRIES_RESPONSE__INIT;
    r.ledger_id = rr->ledger;
    r.n_entries = n;
    r.entries = n > 0 ? ptrs : NULL;
    r.found = found;
    r.missing_entry_id = found ? 0 : rr->next + (int64_t)n;
    r.lac = meta.lac;
    r.last_entry_id = meta.last_entry;
    r.fenced = meta.fenced;
    r.instance_id = (char *)sl_bookie_store_instance_id(svc->store);
    bool end = !found || rr->next + (int64_t)n > rr->last;
    if (end) {
      sl_rpc_call_finish(call, SL_OK, NULL, &r.base);
    } else {
      st = sl_bookie_service_read_entries_write(call, &r);
    }
    for (size_t i = 0; i < n; i++) sl_ledger_entry_release(&ents[i]);
    if (st == SL_EBUSY) break; /* on_writable sends this batch again */
    for (size_t i = 0; i < n; i++) count_read(svc, SL_OK, true);
    if (!found) count_read(svc, SL_OK, false);
    if (end || st != SL_OK) break; /* done, or the call is over */
    rr->next += (int64_t)n;
  }
  free(ptrs);
  free(pb);
  free(ents);
}

/* A fence the handler waits for. A range read streams many entries, so
 * unlike ReadEntry it does not answer from the fence's completion, which
 * runs on the store's applier thread and would hold up every group commit
 * while it read; the worker waits one journal sync instead. */
typedef struct fence_wait {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  sl_status st;
  char msg[SL_ERR_MAX];
} fence_wait;

static void on_range_fenced(sl_status st, const char *msg, void *arg) {
  fence_wait *w = arg;
  pthread_mutex_lock(&w->mu);
  w->st = st;
  snprintf(w->msg, sizeof(w->msg), "%s", msg[0] ? msg : sl_status_str(st));
  w->done = true;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Fences and waits until the fence is durable (or failed). */
static sl_status fence_and_wait(sl_bookie_svc *svc, const Sluice__V1__ReadEntriesRequest *req,
                                sl_err *err) {
  fence_wait w = {.done = false};
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  sl_status st = sl_bookie_store_fence(svc->store, req->ledger_id, req->epoch,
                                       req->password.data, req->password.len,
                                       on_range_fenced, &w, err);
  if (st == SL_OK) {
    pthread_mutex_lock(&w.mu);
    while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    st = w.st;
    if (st != SL_OK) sl_err_set(err, st, "%s", w.msg);
  }
  pthread_cond_destroy(&w.cv);
  pthread_mutex_destroy(&w.mu);
  return st;
}

static void read_entries(sl_rpc_call *call, const Sluice__V1__ReadEntriesRequest *req,
                         void *ctx) {
  sl_bookie_svc *svc = ctx;
  sl_err err = SL_ERR_INIT;
  if (req->first_entry_id < 0 || req->last_entry_id < req->first_entry_id) {
    sl_err_set(&err, SL_EINVAL, "ledger %" PRIu64 ": bad range %" PRId64 "..%" PRId64
               " (0 <= first <= last)", req->ledger_id, req->first_entry_id,
               req->last_entry_id);
    count_read(svc, SL_EINVAL, false);
    fail(call, SL_EINVAL, err.msg);
    return;
  }
  range_read *rr = sl_rpc_call_alloc(call, sizeof(*rr));
  rr->svc = svc;
  rr->ledger = req->ledger_id;
  rr->next = req->first_entry_id;
  rr->last = req->last_entry_id;
  rr->max_entries = req->max_entries ? req->max_entries : RANGE_DEFAULT_ENTRIES;
  if (rr->max_entries > 4096) rr->max_entries = 4096; /* bounds one batch's arrays */
  rr->max_bytes = req->max_bytes ? req->max_bytes : RANGE_DEFAULT_BYTES;
  sl_rpc_call_set_user(call, rr);
  sl_status st = req->fence ? fence_and_wait(svc, req, &err) : SL_OK;
  if (st != SL_OK) {
    count_read(svc, st, false);
    fail(call, st, sl_err_msg(&err, st));
    return;
  }
  pump(call, rr);
}

static void read_entries_writable(sl_rpc_call *call, void *ctx) {
  (void)ctx;
  pump(call, sl_rpc_call_user(call));
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
    fail(p->call, st, msg[0] ? msg : sl_status_str(st));
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
  pending_call *p = pending_new(svc, call, req->ledger_id, -1);
  sl_status st = sl_bookie_store_fence(svc->store, req->ledger_id, req->epoch,
                                       req->password.data, req->password.len, on_fenced,
                                       p, &err);
  if (st != SL_OK) {
    pending_free(p);
    fail(call, st, sl_err_msg(&err, st));
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
    fail(p->call, st, msg[0] ? msg : sl_status_str(st));
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
  pending_call *p = pending_new(svc, call, req->ledger_id, -1);
  sl_status st = sl_bookie_store_write_lac(svc->store, req->ledger_id, req->epoch, req->lac,
                                           req->password.data, req->password.len,
                                           on_lac_written, p, &err);
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
  sl_status st = sl_bookie_store_delete_ledger(svc->store, req->ledger_id,
                                               req->password.data, req->password.len,
                                               on_deleted, p, &err);
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
  sl_bookie_svc *svc = sl_xcalloc(1, sizeof(*svc));
  svc->store = store;
  svc->bookie_id = sl_xstrdup(opts->bookie_id);
  svc->max_stream_adds = opts->max_stream_adds ? opts->max_stream_adds : 1024;
  svc->max_stream_bytes = opts->max_stream_bytes ? opts->max_stream_bytes : (64u << 20);
  sl_status st = register_metrics(svc, opts->metrics, err);
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
  h.read_entry = read_entry;
  h.read_entries = read_entries;
  h.read_entries_writable = read_entries_writable;
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
  free(svc->bookie_id);
  free(svc);
}
