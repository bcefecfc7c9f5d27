/*
 * The ledger client: options, the bookie cache (ListBookies answers) with
 * one channel per bookie, and placement over that cache. client->mu guards
 * the cache; it is taken when a handle picks bookies or looks a channel up,
 * never per append.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/ledger/ledger_int.h"
#include "broker/ledger/placement.h"
#include "common/clock.h"
#include "common/log.h"

lc_metrics sl_lc_m;

static void register_metrics(void) {
  sl_metrics *reg = sl_metrics_default();
  /* Best effort: a failed registration leaves a NULL handle. */
  sl_metrics_register_counter(reg, "sluice_broker_ledger_ensemble_changes_total",
                              "bookies replaced in open ledgers (ensemble changes)",
                              NULL, &sl_lc_m.ensemble_changes, NULL);
  static const char *const ok[] = {"outcome", "ok", NULL};
  static const char *const failed[] = {"outcome", "failed", NULL};
  const char *rec = "sluice_broker_ledger_recoveries_total";
  const char *rec_help = "ledger recoveries (fence, read forward, close) by outcome";
  sl_metrics_register_counter(reg, rec, rec_help, ok, &sl_lc_m.recoveries_ok, NULL);
  sl_metrics_register_counter(reg, rec, rec_help, failed, &sl_lc_m.recoveries_failed, NULL);
  const char *del = "sluice_broker_ledger_deletes_total";
  const char *del_help = "ledgers deleted from their bookies and the metadata, by outcome";
  sl_metrics_register_counter(reg, del, del_help, ok, &sl_lc_m.deletes_ok, NULL);
  sl_metrics_register_counter(reg, del, del_help, failed, &sl_lc_m.deletes_failed, NULL);
  sl_metrics_register_gauge(reg, "sluice_broker_ledger_pending_bytes",
                            "payload bytes appended to ledgers and not yet on Qa bookies",
                            NULL, &sl_lc_m.pending_bytes, NULL);
  sl_metrics_register_histogram(reg, "sluice_broker_ledger_add_seconds",
                                "from a ledger append to its completion (Qa acks, in order)",
                                NULL, NULL, 0, &sl_lc_m.add_seconds, NULL);
}

static int or_default(int v, int def) { return v ? v : def; }

sl_status sl_ledger_client_create(const sl_ledger_client_opts *opts,
                                  sl_ledger_client **out, sl_err *err) {
  if (!opts || !opts->metadata || !out)
    return sl_err_set(err, SL_EINVAL, "ledger client: no metadata channel");
  static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;
  pthread_once(&metrics_once, register_metrics);
  sl_ledger_client *c = calloc(1, sizeof(*c));
  if (!c) return sl_err_set(err, SL_ENOMEM, "ledger client: out of memory");
  c->opts = *opts;
  c->opts.add_timeout_ms = or_default(opts->add_timeout_ms, 5000);
  c->opts.metadata_timeout_ms = or_default(opts->metadata_timeout_ms, 5000);
  c->opts.recovery_timeout_ms = or_default(opts->recovery_timeout_ms, 10000);
  c->opts.read_timeout_ms = or_default(opts->read_timeout_ms, 5000);
  c->opts.speculative_read_ms = or_default(opts->speculative_read_ms, 100);
  c->opts.bookie_cache_ms = or_default(opts->bookie_cache_ms, 1000);
  if (!c->opts.max_entry_bytes) c->opts.max_entry_bytes = 5u << 20;
  if (opts->bookie_channel) c->chopts = *opts->bookie_channel;
  c->opts.bookie_channel = NULL; /* borrowed only for the call: copied */
  c->chopts.target = NULL;
  pthread_mutex_init(&c->mu, NULL);
  pthread_condattr_t ca; /* the wait in destroy is on CLOCK_MONOTONIC */
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->handles_gone, &ca);
  pthread_condattr_destroy(&ca);
  c->listed_ms = -1;
  *out = c;
  return SL_OK;
}

static void bookie_free(lc_bookie *b) {
  sl_rpc_channel_destroy(b->ch);
  for (size_t i = 0; i < b->n_old; i++) sl_rpc_channel_destroy(b->old[i]);
  free(b->old);
  free(b->id);
  free(b->address);
  free(b->rack);
  free(b->instance);
  free(b);
}

void sl_lc_handle_made(sl_ledger_client *c) {
  pthread_mutex_lock(&c->mu);
  c->handles++;
  pthread_mutex_unlock(&c->mu);
}

void sl_lc_handle_gone(sl_ledger_client *c) {
  pthread_mutex_lock(&c->mu);
  if (--c->handles == 0) pthread_cond_broadcast(&c->handles_gone);
  pthread_mutex_unlock(&c->mu);
}

/* Long enough for destroyed handles' streams to be cancelled and released;
 * past it a handle was never destroyed (a bug), and the client is leaked
 * rather than freed under it. */
#define HANDLES_WAIT_MS 10000

void sl_ledger_client_destroy(sl_ledger_client *c) {
  if (!c) return;
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += HANDLES_WAIT_MS / 1000;
  pthread_mutex_lock(&c->mu);
  while (c->handles > 0 &&
         pthread_cond_timedwait(&c->handles_gone, &c->mu, &until) != ETIMEDOUT) {
  }
  int left = c->handles;
  pthread_mutex_unlock(&c->mu);
  if (left > 0) {
    sl_log(SL_LOG_ERROR, "event=ledger_client_leaked handles=%d (never destroyed)", left);
    return;
  }
  for (size_t i = 0; i < c->n_bookies; i++) bookie_free(c->bookies[i]);
  free(c->bookies);
  pthread_cond_destroy(&c->handles_gone);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

sl_rpc_call_opts sl_lc_meta_opts(const sl_ledger_client *c, sl_serial *serial) {
  sl_rpc_call_opts o = {0};
  o.timeout_ms = c->opts.metadata_timeout_ms;
  o.serial = serial;
  return o;
}

sl_rpc_call_opts sl_lc_bookie_opts(const sl_ledger_client *c, sl_serial *serial,
                                   int timeout_ms) {
  (void)c;
  sl_rpc_call_opts o = {0};
  o.timeout_ms = timeout_ms;
  o.serial = serial;
  return o;
}

static lc_bookie *find_locked(sl_ledger_client *c, const char *id) {
  for (size_t i = 0; i < c->n_bookies; i++)
    if (strcmp(c->bookies[i]->id, id) == 0) return c->bookies[i];
  return NULL;
}

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

/* Takes one registration into the cache. False on ENOMEM. */
static bool upsert_locked(sl_ledger_client *c, const Sluice__V1__BookieInfo *bi) {
  lc_bookie *b = find_locked(c, bi->id);
  if (!b) {
    lc_bookie **nb = realloc(c->bookies, (c->n_bookies + 1) * sizeof(*nb));
    if (!nb) return false;
    c->bookies = nb;
    b = calloc(1, sizeof(*b));
    if (!b || !(b->id = strdup(bi->id))) {
      free(b);
      return false;
    }
    c->bookies[c->n_bookies++] = b;
  }
  if (!b->address || strcmp(b->address, bi->address) != 0) {
    char *addr = strdup(bi->address);
    if (!addr) return false;
    if (b->ch) {
      /* Restarted elsewhere: handles may still stream on the old channel. */
      sl_rpc_channel **old = realloc(b->old, (b->n_old + 1) * sizeof(*old));
      if (!old) {
        free(addr);
        return false;
      }
      b->old = old;
      b->old[b->n_old++] = b->ch;
      b->ch = NULL;
    }
    free(b->address);
    b->address = addr;
  }
  char *rack = dup_or_empty(bi->rack), *inst = dup_or_empty(bi->instance_id);
  if (!rack || !inst) {
    free(rack);
    free(inst);
    return false;
  }
  free(b->rack);
  free(b->instance);
  b->rack = rack;
  b->instance = inst;
  b->read_only = bi->read_only;
  b->free_bytes = bi->free_bytes;
  b->live = true;
  return true;
}

typedef struct refresh_op {
  sl_ledger_client *c;
  sl_lc_done_cb cb;
  void *arg;
} refresh_op;

static void refresh_done(sl_status st, const char *details,
                         ProtobufCMessage *resp, void *arg) {
  refresh_op *op = arg;
  sl_ledger_client *c = op->c;
  if (st == SL_OK) {
    Sluice__V1__ListBookiesResponse *r = (Sluice__V1__ListBookiesResponse *)resp;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_bookies; i++) c->bookies[i]->live = false;
    for (size_t i = 0; i < r->n_bookies && st == SL_OK; i++)
      if (!upsert_locked(c, r->bookies[i])) st = SL_ENOMEM;
    c->listed_ms = sl_clock_mono_ms();
    pthread_mutex_unlock(&c->mu);
    details = st == SL_OK ? "" : "ledger client: out of memory";
  }
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  op->cb(st, details, op->arg);
  free(op);
}

typedef struct posted_done {
  sl_lc_done_cb cb;
  void *arg;
  sl_status st;
} posted_done;

static void run_posted_done(void *arg) {
  posted_done *p = arg;
  p->cb(p->st, p->st == SL_OK ? "" : "ledger: metadata service unreachable",
        p->arg);
  free(p);
}

/* Runs cb(st) on serial: callers always get their callback there. */
static void post_done(sl_serial *serial, sl_lc_done_cb cb, void *arg,
                      sl_status st) {
  posted_done *p = malloc(sizeof(*p));
  SL_ASSERT(p); /* a lost callback would hang the caller's state machine */
  p->cb = cb;
  p->arg = arg;
  p->st = st;
  sl_serial_post(serial, run_posted_done, p);
}

void sl_lc_refresh(sl_ledger_client *c, sl_serial *serial, bool force,
                   sl_lc_done_cb cb, void *arg) {
  pthread_mutex_lock(&c->mu);
  bool fresh = !force && c->listed_ms >= 0 &&
               sl_clock_mono_ms() - c->listed_ms < c->opts.bookie_cache_ms;
  pthread_mutex_unlock(&c->mu);
  if (fresh) {
    post_done(serial, cb, arg, SL_OK);
    return;
  }
  refresh_op *op = malloc(sizeof(*op));
  SL_ASSERT(op);
  op->c = c;
  op->cb = cb;
  op->arg = arg;
  Sluice__V1__ListBookiesRequest req = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
  sl_rpc_call_opts o = sl_lc_meta_opts(c, serial);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_unary_start(c->opts.metadata, SL_METADATA_SERVICE_LIST_BOOKIES,
                                    &req.base, &o, refresh_done, op, NULL, &err);
  if (st != SL_OK) {
    sl_log(SL_LOG_WARN, "event=list_bookies_failed status=%s", sl_status_str(st));
    free(op);
    post_done(serial, cb, arg, st);
  }
}

sl_status sl_lc_pick(sl_ledger_client *c, const char *const *avoid,
                     size_t n_avoid, const char *const *taken, size_t n_taken,
                     size_t want, char **ids, char **instances, sl_err *err) {
  sl_status st = SL_OK;
  pthread_mutex_lock(&c->mu);
  size_t n = c->n_bookies;
  sl_placement_bookie *cands = calloc(n ? n : 1, sizeof(*cands));
  sl_placement_bookie *tk = calloc(n_taken ? n_taken : 1, sizeof(*tk));
  size_t *idx = calloc(want ? want : 1, sizeof(*idx));
  if (!cands || !tk || !idx) {
    st = sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
    goto out_unlock;
  }
  int64_t now = sl_clock_mono_ms();
  size_t quarantined = 0;
  for (size_t i = 0; i < n; i++) {
    const lc_bookie *b = c->bookies[i];
    bool usable = b->live && !b->read_only;
    bool q = usable && b->failed_ms != 0 && now - b->failed_ms < SL_LEDGER_QUARANTINE_MS;
    quarantined += q;
    /* read_only marks "not a candidate" (placement.h rule 1) */
    cands[i] = (sl_placement_bookie){b->id, b->rack, !usable || q, b->free_bytes, b->usage};
  }
  for (size_t i = 0; i < n_taken; i++) {
    const lc_bookie *b = find_locked(c, taken[i]);
    tk[i] = (sl_placement_bookie){taken[i], b ? b->rack : NULL, false, 0, 0};
  }
  st = sl_placement_pick(cands, n, avoid, n_avoid, tk, n_taken, want, idx, err);
  for (; st == SL_EUNAVAIL && quarantined > 0; quarantined--) {
    /* Too few others: take back the one that failed longest ago. */
    size_t back = n;
    for (size_t i = 0; i < n; i++) {
      const lc_bookie *b = c->bookies[i];
      if (cands[i].read_only && b->live && !b->read_only &&
          (back == n || b->failed_ms < c->bookies[back]->failed_ms))
        back = i;
    }
    cands[back].read_only = false;
    st = sl_placement_pick(cands, n, avoid, n_avoid, tk, n_taken, want, idx, err);
  }
  if (st != SL_OK) goto out_unlock;
  for (size_t k = 0; k < want; k++) {
    ids[k] = strdup(c->bookies[idx[k]]->id);
    instances[k] = strdup(c->bookies[idx[k]]->instance);
    if (!ids[k] || !instances[k]) {
      for (size_t j = 0; j <= k; j++) {
        free(ids[j]);
        free(instances[j]);
        ids[j] = instances[j] = NULL;
      }
      st = sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
      break;
    }
  }
out_unlock:
  pthread_mutex_unlock(&c->mu);
  free(cands);
  free(tk);
  free(idx);
  return st;
}

void sl_lc_bookie_failed(sl_ledger_client *c, const char *bookie_id) {
  pthread_mutex_lock(&c->mu);
  lc_bookie *b = find_locked(c, bookie_id);
  if (b != NULL) b->failed_ms = sl_clock_mono_ms();
  pthread_mutex_unlock(&c->mu);
}

sl_rpc_channel *sl_lc_channel(sl_ledger_client *c, const char *bookie_id) {
  pthread_mutex_lock(&c->mu);
  lc_bookie *b = find_locked(c, bookie_id);
  sl_rpc_channel *ch = NULL;
  if (b && b->ch) {
    ch = b->ch;
  } else if (b && b->address) {
    sl_rpc_channel_opts o = c->chopts;
    o.target = b->address;
    sl_err err = SL_ERR_INIT;
    if (sl_rpc_channel_create(&o, &b->ch, &err) == SL_OK)
      ch = b->ch;
    else
      sl_log(SL_LOG_WARN, "event=bookie_channel_failed bookie=%s err=\"%s\"",
             bookie_id, err.msg);
  }
  pthread_mutex_unlock(&c->mu);
  return ch;
}

sl_status sl_lc_add_status(const Sluice__V1__AddEntryResponse *r) {
  if (r->status != SLUICE__V1__STATUS__STATUS_OK) return -(int)r->status;
  return r->code ? sl_status_from_grpc(r->code) : SL_OK;
}

bool sl_lc_bookie_state(sl_ledger_client *c, const char *bookie_id, char **instance) {
  pthread_mutex_lock(&c->mu);
  const lc_bookie *b = find_locked(c, bookie_id);
  bool live = b && b->live;
  if (instance) *instance = b ? strdup(b->instance) : NULL;
  pthread_mutex_unlock(&c->mu);
  return live;
}

void sl_lc_usage(sl_ledger_client *c, const char *bookie_id, int delta) {
  pthread_mutex_lock(&c->mu);
  lc_bookie *b = find_locked(c, bookie_id);
  if (b && (delta > 0 || b->usage > 0)) b->usage += (uint32_t)delta;
  pthread_mutex_unlock(&c->mu);
}
