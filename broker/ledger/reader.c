/*
 * Reads (ledger.h, "Reads") and opening a ledger for reading.
 *
 * A read keeps up to WINDOW entries in flight, each asked of one bookie of
 * its write set at a time (the first, then the next on an error, a "not
 * found" or a bad checksum; and the next one as well when the first has
 * not answered within speculative_read_ms). Answers are kept in a ring
 * indexed by entry and handed to on_entry strictly in entry order. Every
 * completion and timer runs on the handle's serial.
 *
 * Unary ReadEntry rather than the ReadEntries range stream: with striping
 * (E > Qw) a bookie holds only runs of Qw consecutive entries, so a range
 * from one bookie stops after Qw entries; a window of single reads spread
 * over the write sets keeps every bookie busy instead.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/ledger/ledger_int.h"
#include "common/crc32c.h"

#define WINDOW 128

typedef struct rd_op rd_op;

typedef struct rd_slot {
  rd_op *op;
  int64_t entry;         /* -1: unused */
  uint32_t asked;        /* replicas asked so far (index into the write set) */
  uint32_t inflight;     /* of them, not answered */
  bool bad_crc;          /* some replica returned bytes that do not verify */
  bool have;
  uint8_t *data;
  size_t len;
  sl_timer spec;         /* speculative second request */
} rd_slot;

struct rd_op {
  sl_ledger *lh;
  int64_t last;
  int64_t next_deliver;
  int64_t next_issue;
  sl_ledger_entry_cb on_entry;
  sl_ledger_read_done_cb on_done;
  void *arg;
  bool finished;
  int outstanding;       /* calls in flight, plus one while not finished */
  rd_slot ring[WINDOW];
};

typedef struct rd_call {
  rd_op *op;
  int64_t entry;
} rd_call;

static void op_put(rd_op *op) {
  if (--op->outstanding > 0) return;
  for (int i = 0; i < WINDOW; i++) free(op->ring[i].data);
  sl_lh_unref(op->lh);
  free(op);
}

static void finish(rd_op *op, sl_status st, const char *details) {
  if (op->finished) return;
  op->finished = true;
  for (int i = 0; i < WINDOW; i++) sl_timer_stop(&op->ring[i].spec);
  op->on_done(st, details, op->arg);
  op_put(op);
}

static void issue(rd_op *op);
static void ask(rd_op *op, rd_slot *sl);

static void deliver(rd_op *op) {
  while (!op->finished && op->next_deliver <= op->last) {
    rd_slot *sl = &op->ring[op->next_deliver % WINDOW];
    if (sl->entry != op->next_deliver || !sl->have) break;
    sl_timer_stop(&sl->spec);
    op->on_entry(sl->entry, sl->data, sl->len, op->arg);
    free(sl->data);
    sl->data = NULL;
    sl->have = false;
    sl->entry = -1;
    op->next_deliver++;
    if (op->lh->destroyed) {
      finish(op, SL_ECANCELED, "ledger: handle destroyed");
      return;
    }
  }
  if (!op->finished && op->next_deliver > op->last) {
    finish(op, SL_OK, "");
    return;
  }
  issue(op);
}

/* All replicas asked and none gave a good copy. */
static void give_up(rd_op *op, rd_slot *sl) {
  char msg[128];
  snprintf(msg, sizeof(msg), "ledger %" PRIu64 " entry %" PRId64 ": no replica "
           "gave a good copy", op->lh->id, sl->entry);
  finish(op, sl->bad_crc ? SL_ECORRUPT : SL_EUNAVAIL, msg);
}

static void read_done(sl_status st, const char *details, ProtobufCMessage *resp,
                      void *arg) {
  (void)details;
  rd_call *rc = arg;
  rd_op *op = rc->op;
  rd_slot *sl = &op->ring[rc->entry % WINDOW];
  int64_t entry = rc->entry;
  free(rc);
  if (op->finished || sl->entry != entry || sl->have) goto out;
  sl->inflight--;
  const Sluice__V1__ReadEntryResponse *r = (const Sluice__V1__ReadEntryResponse *)resp;
  if (st == SL_OK && r->found) {
    if (sl_entry_crc(op->lh->id, entry, r->payload.data, r->payload.len) == r->crc32c) {
      sl->data = malloc(r->payload.len ? r->payload.len : 1);
      if (!sl->data) {
        finish(op, SL_ENOMEM, "ledger: out of memory");
        goto out;
      }
      memcpy(sl->data, r->payload.data, r->payload.len);
      sl->len = r->payload.len;
      sl->have = true;
      deliver(op);
      goto out;
    }
    sl->bad_crc = true;
  }
  if (sl->asked < op->lh->q.qw)
    ask(op, sl);
  else if (!sl->inflight)
    give_up(op, sl);
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  op_put(op);
}

static void spec_run(void *arg) {
  rd_slot *sl = arg;
  if (!sl->op->finished && !sl->have && sl->asked < sl->op->lh->q.qw)
    ask(sl->op, sl);
}

/* Asks the next replica of sl->entry. */
static void ask(rd_op *op, rd_slot *sl) {
  sl_ledger *lh = op->lh;
  while (sl->asked < lh->q.qw) {
    const Sluice__V1__EnsembleSegment *seg =
        lh->info->ensembles[sl_lh_segment_of(lh->info, sl->entry)];
    uint32_t s = sl_quorum_slot(&lh->q, sl->entry, sl->asked++);
    sl_rpc_channel *ch = s < seg->n_bookie_ids
                             ? sl_lc_channel(lh->client, seg->bookie_ids[s])
                             : NULL;
    rd_call *rc = ch ? malloc(sizeof(*rc)) : NULL;
    if (!rc) continue;
    rc->op = op;
    rc->entry = sl->entry;
    Sluice__V1__ReadEntryRequest req = SLUICE__V1__READ_ENTRY_REQUEST__INIT;
    req.ledger_id = lh->id;
    req.entry_id = sl->entry;
    sl_rpc_call_opts o =
        sl_lc_bookie_opts(lh->client, lh->serial, lh->client->opts.read_timeout_ms);
    if (sl_rpc_unary_start(ch, SL_BOOKIE_SERVICE_READ_ENTRY, &req.base, &o,
                           read_done, rc, NULL, NULL) != SL_OK) {
      free(rc);
      continue;
    }
    op->outstanding++;
    sl->inflight++;
    if (lh->client->opts.speculative_read_ms > 0 && sl->asked < lh->q.qw)
      sl_timer_start(&sl->spec, lh->client->opts.speculative_read_ms);
    return;
  }
  if (!sl->inflight) give_up(op, sl);
}

static void issue(rd_op *op) {
  while (!op->finished && op->next_issue <= op->last &&
         op->next_issue < op->next_deliver + WINDOW) {
    rd_slot *sl = &op->ring[op->next_issue % WINDOW];
    sl->entry = op->next_issue++;
    sl->asked = sl->inflight = 0;
    sl->bad_crc = sl->have = false;
    ask(op, sl);
  }
}

static void read_run(void *arg) {
  rd_op *op = arg;
  sl_ledger_state st = (sl_ledger_state)atomic_load(&op->lh->state);
  if (op->lh->destroyed)
    finish(op, SL_ECANCELED, "ledger: handle destroyed");
  else if (st == SL_LEDGER_FENCED || st == SL_LEDGER_FAILED)
    finish(op, SL_EPRECOND, "ledger: handle fenced or failed");
  else
    issue(op);
}

sl_status sl_ledger_read_async(sl_ledger *lh, int64_t first, int64_t last,
                               sl_ledger_entry_cb on_entry,
                               sl_ledger_read_done_cb on_done, void *arg,
                               sl_err *err) {
  if (!lh || !on_entry || !on_done || first < 0 || last < first)
    return sl_err_set(err, SL_EINVAL, "ledger: bad read range or callbacks");
  sl_ledger_state st = (sl_ledger_state)atomic_load(&lh->state);
  if (st == SL_LEDGER_FENCED || st == SL_LEDGER_FAILED)
    return sl_err_set(err, SL_EPRECOND, "ledger %" PRIu64 ": fenced or failed",
                      lh->id);
  int64_t end = sl_ledger_last_entry(lh);
  if (last > end)
    return sl_err_set(err, SL_ERANGE, "ledger %" PRIu64 ": entry %" PRId64
                      " is past the last confirmed %" PRId64, lh->id, last, end);
  rd_op *op = calloc(1, sizeof(*op));
  if (!op) return sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
  op->lh = lh;
  op->last = last;
  op->next_deliver = op->next_issue = first;
  op->on_entry = on_entry;
  op->on_done = on_done;
  op->arg = arg;
  op->outstanding = 1;
  for (int i = 0; i < WINDOW; i++) {
    op->ring[i].op = op;
    op->ring[i].entry = -1;
    sl_timer_init(&op->ring[i].spec, lh->serial, spec_run, &op->ring[i]);
  }
  sl_lh_ref(lh);
  sl_serial_post(lh->serial, read_run, op);
  return SL_OK;
}

/* ------------------------------------------------------------------- open */

typedef struct open_op {
  sl_ledger_client *c;
  uint64_t ledger_id;
  sl_serial *serial;
  sl_ledger_open_cb cb;
  void *arg;
  Sluice__V1__LedgerInfo *info;
  int64_t version;
  int64_t lac;
  int waiting;              /* ReadLac answers still due */
} open_op;

static void open_finish(open_op *op, sl_status st, const char *details) {
  sl_ledger *lh = NULL;
  if (st == SL_OK) {
    sl_err err = SL_ERR_INIT;
    bool closed = op->info->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED;
    st = sl_lh_create(op->c, op->serial, op->info, op->version,
                      closed ? SL_LEDGER_CLOSED : SL_LEDGER_READING, &lh, &err);
    op->info = NULL;
    if (st != SL_OK) details = err.msg;
    else if (!closed) {
      atomic_store(&lh->lac, op->lac);
      atomic_store(&lh->last_entry, op->lac);
    }
  }
  op->cb(st, details, lh, op->arg);
  if (op->info) protobuf_c_message_free_unpacked(&op->info->base, NULL);
  sl_serial_unref(op->serial);
  free(op);
}

static void lac_done(sl_status st, const char *details, ProtobufCMessage *resp,
                     void *arg) {
  (void)details;
  open_op *op = arg;
  if (st == SL_OK) {
    const Sluice__V1__ReadLacResponse *r = (const Sluice__V1__ReadLacResponse *)resp;
    if (r->lac > op->lac) op->lac = r->lac;
  }
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  if (--op->waiting == 0) open_finish(op, SL_OK, "");
}

static void open_read_lacs(sl_status st, const char *details, void *arg) {
  (void)st;
  (void)details;
  open_op *op = arg;
  const Sluice__V1__EnsembleSegment *seg = op->info->ensembles[op->info->n_ensembles - 1];
  /* Entries before the last segment were complete when it was made. */
  op->lac = seg->first_entry - 1;
  op->waiting = 1;
  Sluice__V1__ReadLacRequest req = SLUICE__V1__READ_LAC_REQUEST__INIT;
  req.ledger_id = op->ledger_id;
  for (size_t i = 0; i < seg->n_bookie_ids; i++) {
    sl_rpc_channel *ch = sl_lc_channel(op->c, seg->bookie_ids[i]);
    sl_rpc_call_opts o = sl_lc_bookie_opts(op->c, op->serial, op->c->opts.read_timeout_ms);
    if (ch && sl_rpc_unary_start(ch, SL_BOOKIE_SERVICE_READ_LAC, &req.base, &o, lac_done,
                                 op, NULL, NULL) == SL_OK)
      op->waiting++;
  }
  if (--op->waiting == 0) open_finish(op, SL_OK, "");
}

static void open_closed_refreshed(sl_status st, const char *details, void *arg) {
  (void)st;
  (void)details;
  open_finish(arg, SL_OK, "");
}

static void open_got(sl_status st, const char *details, ProtobufCMessage *resp,
                     void *arg) {
  open_op *op = arg;
  if (st != SL_OK) {
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    open_finish(op, st, details);
    return;
  }
  Sluice__V1__LedgerResponse *r = (Sluice__V1__LedgerResponse *)resp;
  op->info = r->info;
  op->version = r->version;
  r->info = NULL;
  protobuf_c_message_free_unpacked(resp, NULL);
  sl_quorum q = {op->info->ensemble_size, op->info->write_quorum, op->info->ack_quorum};
  if (sl_quorum_check(&q, NULL) != SL_OK || op->info->n_ensembles == 0)
    open_finish(op, SL_ECORRUPT, "ledger: bad metadata");
  else if (op->info->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED)
    /* Reads need the bookies' addresses: a client that has written
     * nothing yet knows none. */
    sl_lc_refresh(op->c, op->serial, false, open_closed_refreshed, op);
  else
    sl_lc_refresh(op->c, op->serial, false, open_read_lacs, op);
}

sl_status sl_ledger_open_async(sl_ledger_client *c, uint64_t ledger_id,
                               const sl_ledger_open_opts *opts,
                               sl_ledger_open_cb cb, void *arg, sl_err *err) {
  if (!c || !cb) return sl_err_set(err, SL_EINVAL, "ledger: open needs a callback");
  open_op *op = calloc(1, sizeof(*op));
  if (!op) return sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
  op->c = c;
  op->ledger_id = ledger_id;
  op->cb = cb;
  op->arg = arg;
  if (opts && opts->serial) {
    sl_serial_ref(opts->serial);
    op->serial = opts->serial;
  } else {
    sl_status st = sl_serial_create(&op->serial, err);
    if (st != SL_OK) {
      free(op);
      return st;
    }
  }
  Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  req.ledger_id = ledger_id;
  sl_rpc_call_opts o = sl_lc_meta_opts(c, op->serial);
  sl_status st = sl_rpc_unary_start(c->opts.metadata, SL_METADATA_SERVICE_GET_LEDGER,
                                    &req.base, &o, open_got, op, NULL, err);
  if (st != SL_OK) {
    sl_serial_unref(op->serial);
    free(op);
  }
  return st;
}
