/* Managed ledger reads: a chain of ledgers read in order, for the dedup
 * replay after a take-over (sl_ml_read_async), the Consume path's backlog
 * reads (sl_ml_read_max_async, through the read-ahead of
 * managed_ledger_readahead.c) and tools and tests that check a partition's
 * log without owning it (sl_ml_scan_async).
 *
 * A managed ledger keeps the read handles of up to ML_READ_HANDLES finished
 * ledgers open (ml->rd.handles), so a consumer reading a backlog chunk by
 * chunk opens each ledger once (one GetLedger) instead of once per read. A
 * handle in use by a read is never closed under it; an idle one goes when
 * its slot is wanted (least recently used), when its ledger left the list
 * (trim), once a read through it failed (auto-recovery may have moved the
 * ledger's copies since it was opened: the next read opens it again with
 * the new metadata), or with sl_ml_destroy. */
#include "broker/managed_ledger_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics.h"
#include "metadata.slrpc.h"

/* Entries asked of the ledger client per range read: bounds the memory one
 * read holds. */
#define READ_CHUNK 256

typedef struct chain_read {
  sl_ledger_client *client;
  sl_serial *serial;
  sl_ml *ml;            /* referenced, for its writer handle; NULL = scan */
  bool borrowed;        /* lh is ml->cur: read up to its LAC, never freed */
  bool cached;          /* lh is in ml->rd.handles: released, not freed */
  uint64_t *ids;
  size_t n, i;
  sl_ml_pos from;
  sl_ledger *lh;        /* the ledger being read */
  int64_t next, last;   /* next entry to ask for, last readable entry */
  uint64_t left;        /* entries still wanted (bounded reads) */
  sl_ml_entry_cb on_entry;
  sl_ml_done_cb on_done;
  void *arg;
} chain_read;

/* ---- counters ---- */

static const struct {
  const char *name, *help;
} k_read_metrics[] = {
    {"sluice_ml_read_ledger_opens_total", "finished ledgers opened for reading"},
    {"sluice_ml_read_handle_reuses_total", "reads that found the ledger's read handle open"},
    {"sluice_ml_readahead_hits_total", "backlog reads served from the read-ahead buffer"},
    {"sluice_ml_readahead_entries_total", "entries the read-ahead fetched from bookies"},
    {"sluice_ml_read_direct_total", "reads sent to bookies without read-ahead"},
    {"sluice_ml_backlog_read_bytes_total",
     "bytes backlog reads took from bookies (charged to the partitions' read budgets)"},
    {"sluice_ml_backlog_read_paced_total",
     "times a read-ahead fetch waited for its partition's read budget"},
};
#define N_READ_METRICS (sizeof(k_read_metrics) / sizeof(k_read_metrics[0]))

static sl_metrics_counter *g_read_counters[N_READ_METRICS];
static pthread_once_t g_read_once = PTHREAD_ONCE_INIT;

static void read_metrics_register(void) {
  for (size_t i = 0; i < N_READ_METRICS; i++) {
    sl_err err = SL_ERR_INIT;
    /* Unregistered (NULL) counters are ignored: metrics never fail a read. */
    (void)sl_metrics_register_counter(sl_metrics_default(), k_read_metrics[i].name,
                                      k_read_metrics[i].help, NULL,
                                      &g_read_counters[i], &err);
  }
}

void ml_read_add(sl_ml *ml, ml_read_event ev, uint64_t n) {
  pthread_once(&g_read_once, read_metrics_register);
  sl_metrics_counter_add(g_read_counters[ev], n);
  _Atomic uint64_t *c[] = {&ml->rd.ledger_opens, &ml->rd.handle_reuses,
                           &ml->rd.readahead_hits, &ml->rd.readahead_entries,
                           &ml->rd.direct_reads, &ml->rd.backlog_bytes,
                           &ml->rd.paced_waits};
  atomic_fetch_add(c[ev], n);
}

void ml_read_count(sl_ml *ml, ml_read_event ev) { ml_read_add(ml, ev, 1); }

/* ---- cached read handles ---- */

static ml_cached_lh *handle_slot(sl_ml *ml, const sl_ledger *lh) {
  for (int i = 0; i < ML_READ_HANDLES; i++)
    if (ml->rd.handles[i].lh == lh) return &ml->rd.handles[i];
  return NULL;
}

static void slot_clear(ml_cached_lh *h) {
  sl_ledger_destroy(h->lh);
  *h = (ml_cached_lh){0};
}

static bool in_list(const sl_ml *ml, uint64_t id) {
  for (size_t i = 0; i < ml->n_refs; i++)
    if (ml->refs_v[i].id == id) return true;
  return false;
}

/* Closes idle handles of ledgers trimmed from the list. */
static void handles_prune(sl_ml *ml) {
  for (int i = 0; i < ML_READ_HANDLES; i++) {
    ml_cached_lh *h = &ml->rd.handles[i];
    if (h->lh != NULL && h->users == 0 && !in_list(ml, h->id)) slot_clear(h);
  }
}

static sl_ledger *handle_get(sl_ml *ml, uint64_t id) {
  for (int i = 0; i < ML_READ_HANDLES; i++) {
    ml_cached_lh *h = &ml->rd.handles[i];
    if (h->lh != NULL && h->id == id && !h->stale) {
      h->users++;
      h->used = ++ml->rd.tick;
      ml_read_count(ml, ML_READ_HANDLE_REUSE);
      return h->lh;
    }
  }
  return NULL;
}

/* Keeps a finished ledger's handle (in use by the caller) if a slot is free
 * or idle; false: the caller keeps owning it. */
static bool handle_put(sl_ml *ml, sl_ledger *lh) {
  sl_ledger_stats ls;
  sl_ledger_stats_get(lh, &ls);
  if (ml->rd.stopped || ls.state != SL_LEDGER_CLOSED) return false; /* OPEN ones grow */
  ml_cached_lh *victim = NULL;
  for (int i = 0; i < ML_READ_HANDLES; i++) {
    ml_cached_lh *h = &ml->rd.handles[i];
    if (h->lh == NULL) {
      victim = h;
      break;
    }
    if (h->users == 0 && (victim == NULL || h->used < victim->used)) victim = h;
  }
  if (victim == NULL) return false;
  if (victim->lh != NULL) slot_clear(victim);
  *victim = (ml_cached_lh){.id = sl_ledger_id(lh), .lh = lh, .users = 1, .used = ++ml->rd.tick};
  return true;
}

static void handle_release(sl_ml *ml, sl_ledger *lh) {
  ml_cached_lh *h = handle_slot(ml, lh);
  SL_ASSERT(h != NULL && h->users > 0);
  if (--h->users == 0 && (ml->rd.stopped || h->stale || !in_list(ml, h->id))) slot_clear(h);
}

void ml_read_stop(sl_ml *ml) {
  ml->rd.stopped = true;
  for (int i = 0; i < ML_READ_HANDLES; i++) {
    ml_cached_lh *h = &ml->rd.handles[i];
    if (h->lh != NULL && h->users == 0) slot_clear(h);
  }
  ml_readahead_stop(ml);
}

/* ---- chain reads ---- */

/* Lets go of the ledger being read. */
static void drop_lh(chain_read *r) {
  if (r->cached) handle_release(r->ml, r->lh);
  else if (!r->borrowed) sl_ledger_destroy(r->lh);
  r->lh = NULL;
  r->cached = false;
  r->borrowed = false;
}

static void chain_free(chain_read *r) {
  drop_lh(r);
  if (r->ml != NULL) ml_unref(r->ml);
  sl_serial_unref(r->serial);
  free(r->ids);
  free(r);
}

static void chain_finish(chain_read *r, sl_status st, const char *details) {
  r->on_done(st, details, r->arg);
  chain_free(r);
}

static void next_ledger(chain_read *r);

static void chunk_entry(int64_t entry_id, const void *data, size_t len, void *arg) {
  chain_read *r = arg;
  sl_ml_pos pos = {r->ids[r->i], entry_id};
  if (r->left > 0) r->left--;
  r->on_entry(pos, data, len, r->arg);
}

static void read_chunk(chain_read *r);

static void chunk_done(sl_status st, const char *details, void *arg) {
  chain_read *r = arg;
  if (st != SL_OK) {
    if (r->cached) handle_slot(r->ml, r->lh)->stale = true;
    chain_finish(r, st, details);
    return;
  }
  read_chunk(r);
}

static void read_chunk(chain_read *r) {
  if (r->left == 0) {
    chain_finish(r, SL_OK, NULL);
    return;
  }
  if (r->borrowed && (r->ml->cur != r->lh || sl_ledger_id(r->lh) != r->ids[r->i])) {
    /* Rolled over or closed meanwhile: the caller reads on from here. */
    r->lh = NULL;
    chain_finish(r, SL_OK, NULL);
    return;
  }
  if (r->next > r->last) {
    drop_lh(r);
    r->i++;
    next_ledger(r);
    return;
  }
  int64_t end = r->next + READ_CHUNK - 1;
  if (end > r->last) end = r->last;
  if ((uint64_t)(end - r->next) >= r->left) end = r->next + (int64_t)r->left - 1;
  int64_t first = r->next;
  r->next = end + 1;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_read_async(r->lh, first, end, chunk_entry, chunk_done, r, &err);
  if (st != SL_OK) chain_finish(r, st, err.msg);
}

/* Reads r->lh from `from` (in its ledger) or its first entry. */
static void start_ledger(chain_read *r) {
  r->next = r->ids[r->i] == r->from.ledger_id && r->from.entry_id > 0 ? r->from.entry_id : 0;
  r->last = r->borrowed ? sl_ledger_lac(r->lh) : sl_ledger_last_entry(r->lh);
  read_chunk(r);
}

static void ledger_opened(sl_status st, const char *details, sl_ledger *lh, void *arg) {
  chain_read *r = arg;
  if (st != SL_OK) {
    char msg[SL_ERR_MAX];
    snprintf(msg, sizeof(msg), "ledger %llu: %s", (unsigned long long)r->ids[r->i],
             details != NULL ? details : sl_status_str(st));
    chain_finish(r, st, msg);
    return;
  }
  r->lh = lh;
  r->cached = r->ml != NULL && handle_put(r->ml, lh);
  start_ledger(r);
}

static void next_ledger(chain_read *r) {
  while (r->i < r->n && r->ids[r->i] < r->from.ledger_id) r->i++;
  if (r->i == r->n) {
    chain_finish(r, SL_OK, NULL);
    return;
  }
  if (r->ml != NULL && r->ml->cur != NULL && sl_ledger_id(r->ml->cur) == r->ids[r->i]) {
    /* Our own current ledger: its bookies learn the LAC only with the
     * next add, the writer knows it now. */
    r->lh = r->ml->cur;
    r->borrowed = true;
    start_ledger(r);
    return;
  }
  if (r->ml != NULL && (r->lh = handle_get(r->ml, r->ids[r->i])) != NULL) {
    r->cached = true;
    start_ledger(r);
    return;
  }
  if (r->ml != NULL) ml_read_count(r->ml, ML_READ_LEDGER_OPEN);
  sl_ledger_open_opts o = {r->serial};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_open_async(r->client, r->ids[r->i], &o, ledger_opened, r, &err);
  if (st != SL_OK) ledger_opened(st, err.msg, NULL, r);
}

static void chain_start(void *arg) { next_ledger(arg); }

sl_status ml_read_chain(sl_ledger_client *c, sl_serial *serial,
                        const uint64_t *ids, size_t n, sl_ml_pos from,
                        uint64_t max, sl_ml_entry_cb on_entry,
                        sl_ml_done_cb on_done, void *arg, chain_read **out,
                        sl_err *err) {
  if (on_entry == NULL || on_done == NULL)
    return sl_err_set(err, SL_EINVAL, "read: callbacks required");
  chain_read *r = calloc(1, sizeof(*r));
  if (r == NULL) return sl_err_set(err, SL_ENOMEM, "read: out of memory");
  r->ids = calloc(n + 1, sizeof(*ids));
  if (r->ids == NULL) {
    free(r);
    return sl_err_set(err, SL_ENOMEM, "read: out of memory");
  }
  if (n > 0) memcpy(r->ids, ids, n * sizeof(*ids));
  r->n = n;
  r->client = c;
  sl_serial_ref(serial);
  r->serial = serial;
  r->from = from;
  r->left = max > 0 ? max : UINT64_MAX;
  r->on_entry = on_entry;
  r->on_done = on_done;
  r->arg = arg;
  if (out != NULL) *out = r;
  sl_serial_post(serial, chain_start, r); /* on the serial: runs later */
  return SL_OK;
}

sl_status ml_read_direct(sl_ml *ml, sl_ml_pos from, uint64_t max, bool finished_only,
                         sl_ml_entry_cb on_entry, sl_ml_done_cb on_done,
                         void *arg, sl_err *err) {
  SL_ASSERT(sl_serial_running_here(ml->serial));
  handles_prune(ml);
  uint64_t *ids = calloc(ml->n_refs + 1, sizeof(*ids));
  if (ids == NULL) return sl_err_set(err, SL_ENOMEM, "read: out of memory");
  size_t n = 0;
  for (size_t i = 0; i < ml->n_refs; i++)
    if (!finished_only || ml->refs_v[i].entries >= 0) ids[n++] = ml->refs_v[i].id;
  chain_read *r = NULL;
  sl_status st = ml_read_chain(ml->ledgers, ml->serial, ids, n, from,
                               max, on_entry, on_done, arg, &r, err);
  free(ids);
  if (st == SL_OK) {
    ml_ref_get(ml);
    r->ml = ml;
  }
  return st;
}

sl_status sl_ml_read_max_async(sl_ml *ml, sl_ml_pos from, uint64_t max,
                               sl_ml_entry_cb on_entry, sl_ml_done_cb on_done,
                               void *arg, sl_err *err) {
  if (max > 1) return ml_readahead_read(ml, from, max, on_entry, on_done, arg, err);
  ml_read_count(ml, ML_READ_DIRECT);
  return ml_readahead_direct(ml, from, max, on_entry, on_done, arg, err);
}

void sl_ml_read_stats_get(const sl_ml *ml, sl_ml_read_stats *out) {
  sl_ml *m = (sl_ml *)ml; /* atomics only */
  out->ledger_opens = atomic_load(&m->rd.ledger_opens);
  out->handle_reuses = atomic_load(&m->rd.handle_reuses);
  out->readahead_hits = atomic_load(&m->rd.readahead_hits);
  out->readahead_entries = atomic_load(&m->rd.readahead_entries);
  out->direct_reads = atomic_load(&m->rd.direct_reads);
  out->backlog_bytes = atomic_load(&m->rd.backlog_bytes);
  out->paced_waits = atomic_load(&m->rd.paced_waits);
}

sl_status sl_ml_read_async(sl_ml *ml, sl_ml_pos from, sl_ml_entry_cb on_entry,
                           sl_ml_done_cb on_done, void *arg, sl_err *err) {
  ml_read_count(ml, ML_READ_DIRECT);
  return ml_read_direct(ml, from, 0, false, on_entry, on_done, arg, err);
}

size_t sl_ml_chain(const sl_ml *ml, sl_ml_ledger_info **out) {
  SL_ASSERT(sl_serial_running_here(ml->serial));
  sl_ml_stats s;
  sl_ml_stats_get(ml, &s);
  sl_ml_ledger_info *v = sl_xcalloc(ml->n_refs + 1, sizeof(*v));
  for (size_t i = 0; i < ml->n_refs; i++) {
    const ml_ref *r = &ml->refs_v[i];
    v[i].ledger_id = r->id;
    v[i].bytes = r->size;
    v[i].entries = r->entries;
    if (r->entries < 0) /* the open current ledger: what is durable so far */
      v[i].entries = s.last_confirmed.ledger_id == r->id ? s.last_confirmed.entry_id + 1 : 0;
  }
  *out = v;
  return ml->n_refs;
}

/* ---- scan: read a partition's log without owning it ---- */

typedef struct scan {
  sl_ledger_client *client;
  sl_serial *serial;
  sl_ml_pos from;
  sl_ml_entry_cb on_entry;
  sl_ml_done_cb on_done;
  void *arg;
} scan;

static void scan_listed(sl_status st, const char *details, ProtobufCMessage *resp,
                        void *arg) {
  scan *s = arg;
  const Sluice__V1__ManagedLedgerResponse *r = (const void *)resp;
  if (st == SL_OK && r->info == NULL) st = SL_ECORRUPT;
  if (st == SL_OK) {
    uint64_t *ids = calloc(r->info->n_ledgers + 1, sizeof(*ids));
    if (ids == NULL) abort();
    for (size_t i = 0; i < r->info->n_ledgers; i++) ids[i] = r->info->ledgers[i]->ledger_id;
    sl_err err = SL_ERR_INIT;
    st = ml_read_chain(s->client, s->serial, ids, r->info->n_ledgers, s->from, 0,
                       s->on_entry, s->on_done, s->arg, NULL, &err);
    free(ids);
    if (st != SL_OK) s->on_done(st, err.msg, s->arg);
  } else {
    s->on_done(st, details, s->arg);
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  sl_serial_unref(s->serial);
  free(s);
}

sl_status sl_ml_scan_async(sl_ledger_client *ledgers, sl_rpc_channel *metadata,
                           const char *partition, sl_ml_pos from,
                           sl_serial *serial, sl_ml_entry_cb on_entry,
                           sl_ml_done_cb on_done, void *arg, sl_err *err) {
  if (ledgers == NULL || metadata == NULL || partition == NULL ||
      on_entry == NULL || on_done == NULL)
    return sl_err_set(err, SL_EINVAL, "scan: missing argument");
  scan *s = calloc(1, sizeof(*s));
  if (s == NULL) return sl_err_set(err, SL_ENOMEM, "scan: out of memory");
  if (serial == NULL) {
    sl_status st = sl_serial_create(&s->serial, err);
    if (st != SL_OK) {
      free(s);
      return st;
    }
  } else {
    sl_serial_ref(serial);
    s->serial = serial;
  }
  s->client = ledgers;
  s->from = from;
  s->on_entry = on_entry;
  s->on_done = on_done;
  s->arg = arg;
  Sluice__V1__GetManagedLedgerRequest req = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  req.partition = (char *)partition;
  sl_rpc_call_opts o = {0};
  o.serial = s->serial;
  sl_status st = sl_rpc_unary_start(metadata, SL_METADATA_SERVICE_GET_MANAGED_LEDGER,
                                    &req.base, &o, scan_listed, s, NULL, err);
  if (st != SL_OK) {
    sl_serial_unref(s->serial);
    free(s);
  }
  return st;
}
