/*
 * Deleting a ledger (ledger.h, sl_ledger_delete_async): its entries on every
 * bookie that ever held it, then its metadata. Data first, because the
 * metadata is the only record of where the data is: once it is gone, only
 * each bookie's own sweep (bookie/ledger_sweep.h) would still find a
 * leftover copy, up to a sweep interval later. So a ledger whose metadata is
 * gone has no data left on any registered bookie, and a re-run after a crash
 * between the steps redoes the bookie deletes (idempotent: a tombstone may
 * be deleted again) and then the metadata.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/ledger/ledger_int.h"
#include "common/log.h"

typedef struct del_op {
  sl_ledger_client *c;
  sl_serial *serial;
  uint64_t ledger_id;
  uint64_t epoch;
  sl_ledger_delete_cb cb;
  void *arg;
  Sluice__V1__LedgerInfo *info;  /* from GetLedger */
  int64_t version;
  size_t outstanding;            /* bookie deletes in flight */
  sl_status bookie_st;           /* first bookie failure */
  char details[192];
} del_op;

/* One bookie delete in flight. */
typedef struct del_call {
  del_op *op;
  const char *bookie;            /* borrowed from op->info */
} del_call;

static void finish(del_op *op, sl_status st, const char *details) {
  sl_metrics_counter_inc(st == SL_OK ? sl_lc_m.deletes_ok : sl_lc_m.deletes_failed);
  if (st == SL_OK)
    sl_log(SL_LOG_INFO, "event=ledger_deleted ledger=%" PRIu64, op->ledger_id);
  else
    sl_log(SL_LOG_WARN, "event=ledger_delete_failed ledger=%" PRIu64
           " status=%s details=\"%s\"", op->ledger_id, sl_status_str(st),
           details ? details : "");
  op->cb(st, details ? details : "", op->arg);
  if (op->info) protobuf_c_message_free_unpacked(&op->info->base, NULL);
  sl_serial_unref(op->serial);
  free(op);
}

static void meta_deleted(sl_status st, const char *details, ProtobufCMessage *resp,
                         void *arg) {
  del_op *op = arg;
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  /* NOT_FOUND: a concurrent deleter got there first, after the data. */
  finish(op, st == SL_ENOTFOUND ? SL_OK : st, details);
}

static void delete_meta(del_op *op) {
  Sluice__V1__DeleteLedgerRequest req = SLUICE__V1__DELETE_LEDGER_REQUEST__INIT;
  req.ledger_id = op->ledger_id;
  req.expected_version = op->version;
  req.epoch = op->epoch;
  sl_rpc_call_opts o = sl_lc_meta_opts(op->c, op->serial);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_unary_async(op->c->opts.metadata, SL_METADATA_SERVICE_DELETE_LEDGER,
                                    &req.base, &o, meta_deleted, op, &err);
  if (st != SL_OK) finish(op, st, err.msg);
}

/* One bookie delete (or the sending loop) is over. */
static void bookie_put(del_op *op) {
  if (--op->outstanding > 0) return;
  /* A bookie that could not delete keeps the metadata: the caller re-runs. */
  if (op->bookie_st != SL_OK) finish(op, op->bookie_st, op->details);
  else delete_meta(op);
}

static void bookie_deleted(sl_status st, const char *details, ProtobufCMessage *resp,
                           void *arg) {
  del_call *dc = arg;
  del_op *op = dc->op;
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  if (st != SL_OK && op->bookie_st == SL_OK) {
    op->bookie_st = st;
    snprintf(op->details, sizeof(op->details), "ledger %" PRIu64 ": bookie %s: %s",
             op->ledger_id, dc->bookie, details ? details : sl_status_str(st));
  }
  free(dc);
  bookie_put(op);
}

/* True if `id` is named earlier in the ledger's history than (seg, slot), so
 * each bookie is asked once. */
static bool seen_before(const Sluice__V1__LedgerInfo *info, size_t seg, size_t slot,
                        const char *id) {
  for (size_t s = 0; s <= seg; s++) {
    size_t end = s == seg ? slot : info->ensembles[s]->n_bookie_ids;
    for (size_t k = 0; k < end; k++)
      if (strcmp(info->ensembles[s]->bookie_ids[k], id) == 0) return true;
  }
  return false;
}

/* Every bookie in the history (ensembles, then re-replication targets),
 * each once; `fn` gets it. */
static void each_bookie(const Sluice__V1__LedgerInfo *info,
                        void (*fn)(del_op *op, const char *id), del_op *op) {
  for (size_t s = 0; s < info->n_ensembles; s++)
    for (size_t k = 0; k < info->ensembles[s]->n_bookie_ids; k++) {
      const char *id = info->ensembles[s]->bookie_ids[k];
      if (!seen_before(info, s, k, id)) fn(op, id);
    }
  for (size_t r = 0; r < info->n_rereplications; r++) {
    const char *id = info->rereplications[r]->to_bookie;
    bool dup = seen_before(info, info->n_ensembles - 1,
                           info->ensembles[info->n_ensembles - 1]->n_bookie_ids, id);
    for (size_t q = 0; q < r && !dup; q++)
      dup = strcmp(info->rereplications[q]->to_bookie, id) == 0;
    if (!dup) fn(op, id);
  }
}

static bool registered(sl_ledger_client *c, const char *id) {
  pthread_mutex_lock(&c->mu);
  bool live = false;
  for (size_t i = 0; i < c->n_bookies && !live; i++)
    live = c->bookies[i]->live && strcmp(c->bookies[i]->id, id) == 0;
  pthread_mutex_unlock(&c->mu);
  return live;
}

static void send_delete(del_op *op, const char *id) {
  /* A bookie with no registration is gone (its session lapsed); waiting for
   * it would keep the ledger forever. If it comes back, its sweep drops its
   * copy on seeing the tombstone (bookie/ledger_sweep.h). */
  if (!registered(op->c, id)) {
    sl_log(SL_LOG_WARN, "event=ledger_delete_skipped ledger=%" PRIu64
           " bookie=%s reason=not_registered", op->ledger_id, id);
    return;
  }
  sl_rpc_channel *ch = sl_lc_channel(op->c, id);
  del_call *dc = sl_xcalloc(1, sizeof(*dc));
  dc->op = op;
  dc->bookie = id;
  op->outstanding++;
  if (!ch) {
    bookie_deleted(SL_EUNAVAIL, "no channel", NULL, dc);
    return;
  }
  Sluice__V1__DeleteLedgerEntriesRequest req =
      SLUICE__V1__DELETE_LEDGER_ENTRIES_REQUEST__INIT;
  req.ledger_id = op->ledger_id;
  req.password.data = op->info->password.data;
  req.password.len = op->info->password.len;
  sl_rpc_call_opts o = sl_lc_bookie_opts(op->c, op->serial, op->c->opts.read_timeout_ms);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_unary_async(ch, SL_BOOKIE_SERVICE_DELETE_LEDGER, &req.base, &o,
                                    bookie_deleted, dc, &err);
  if (st != SL_OK) bookie_deleted(st, err.msg, NULL, dc);
}

static void bookies_listed(sl_status st, const char *details, void *arg) {
  del_op *op = arg;
  if (st != SL_OK) {
    finish(op, st, details);
    return;
  }
  /* The loop holds one count, so that a delete failing inside it cannot
   * end the op before the others are sent. */
  op->outstanding = 1;
  each_bookie(op->info, send_delete, op);
  bookie_put(op);
}

static void got_ledger(sl_status st, const char *details, ProtobufCMessage *resp,
                       void *arg) {
  del_op *op = arg;
  if (st == SL_ENOTFOUND || st == SL_EDELETED) {
    /* Its data went before its metadata (see the top of this file). */
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    finish(op, SL_OK, "");
    return;
  }
  if (st != SL_OK) {
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    finish(op, st, details);
    return;
  }
  Sluice__V1__LedgerResponse *r = (Sluice__V1__LedgerResponse *)resp;
  op->info = r->info;
  op->version = r->version;
  r->info = NULL;
  protobuf_c_message_free_unpacked(resp, NULL);
  if (op->info == NULL || op->info->n_ensembles == 0) {
    finish(op, SL_EINVAL, "ledger: metadata without an ensemble");
    return;
  }
  sl_lc_refresh(op->c, op->serial, true, bookies_listed, op);
}

sl_status sl_ledger_delete_async(sl_ledger_client *c, uint64_t ledger_id,
                                 const sl_ledger_delete_opts *opts,
                                 sl_ledger_delete_cb cb, void *arg, sl_err *err) {
  if (!c || !opts || !cb || ledger_id == 0 || opts->epoch == 0)
    return sl_err_set(err, SL_EINVAL, "ledger delete: client, ledger id, epoch and "
                                      "callback required");
  del_op *op = sl_xcalloc(1, sizeof(*op));
  if (opts->serial) {
    op->serial = opts->serial;
    sl_serial_ref(op->serial);
  } else {
    sl_status st = sl_serial_create(&op->serial, err);
    if (st != SL_OK) {
      free(op);
      return st;
    }
  }
  op->c = c;
  op->ledger_id = ledger_id;
  op->epoch = opts->epoch;
  op->cb = cb;
  op->arg = arg;
  Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  req.ledger_id = ledger_id;
  sl_rpc_call_opts o = sl_lc_meta_opts(c, op->serial);
  sl_status st = sl_rpc_unary_async(c->opts.metadata, SL_METADATA_SERVICE_GET_LEDGER,
                                    &req.base, &o, got_ledger, op, err);
  if (st != SL_OK) {
    sl_serial_unref(op->serial);
    free(op);
  }
  return st;
}
