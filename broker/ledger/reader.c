/*
 * Reads (ledger.h, "Reads") and opening a ledger for reading.
 *
 * A read keeps a window of entries in flight, at most SL_RD_WINDOW and
 * about READ_AHEAD_BYTES at the average entry size seen so far, issued in
 * chunks of half of it that stay within one ensemble segment. A chunk of
 * RANGE_MIN entries or more is read with ReadEntries range streams
 * (reader_range.c): a backlog then costs a few streams per chunk instead of
 * one call per entry, and with striping (E > Qw) each bookie is asked only
 * for the entries it holds. Any entry a range did not bring (stream error,
 * "not found", bad checksum, a bookie silent for speculative_read_ms) and
 * every entry of a small chunk goes the ReadEntry way: one bookie of its
 * write set at a time (the first, then the next on an error, a "not found"
 * or a bad checksum; and the next one as well when the first has not
 * answered within speculative_read_ms). Answers are kept in a ring indexed
 * by entry and handed to on_entry strictly in entry order, so the window
 * bounds what a slow consumer makes us hold. Every completion, stream
 * callback and timer runs on the handle's serial.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/ledger/ledger_int.h"
#include "common/crc32c.h"

#define WINDOW SL_RD_WINDOW
#define READ_AHEAD_BYTES (8u << 20)
#define FIRST_AHEAD 16 /* entries ahead before any size is known */
#define RANGE_MIN 4    /* smaller chunks: one ReadEntry per entry is as cheap */

typedef struct rd_call {
  rd_op *op;
  int64_t entry;
} rd_call;

void sl_rd_put(rd_op *op) {
  if (--op->outstanding > 0) return;
  for (int i = 0; i < WINDOW; i++) free(op->ring[i].data);
  sl_lh_unref(op->lh);
  free(op);
}

static void finish(rd_op *op, sl_status st, const char *details) {
  if (op->finished) return;
  op->finished = true;
  if (op->got > 0) op->lh->read_avg = op->got_bytes / op->got + 1;
  for (int i = 0; i < WINDOW; i++) sl_timer_stop(&op->ring[i].spec);
  sl_rd_range_cancel(op);
  op->on_done(st, details, op->arg);
  sl_rd_put(op);
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

bool sl_rd_take(rd_op *op, rd_slot *sl, const uint8_t *data, size_t len, uint32_t crc) {
  SL_ASSERT(!op->finished && !sl->have);
  if (sl_entry_crc(op->lh->id, sl->entry, data, len) != crc) {
    sl->bad_crc = true;
    return false;
  }
  sl->data = malloc(len ? len : 1);
  if (!sl->data) {
    finish(op, SL_ENOMEM, "ledger: out of memory");
    return true;
  }
  memcpy(sl->data, data, len);
  sl->len = len;
  sl->have = true;
  op->got++;
  op->got_bytes += len;
  deliver(op);
  return true;
}

/* All replicas asked and none gave a good copy. */
static void give_up(rd_op *op, rd_slot *sl) {
  char msg[128];
  snprintf(msg, sizeof(msg), "ledger %" PRIu64 " entry %" PRId64 ": no replica "
           "gave a good copy", op->lh->id, sl->entry);
  finish(op, sl->bad_crc ? SL_ECORRUPT : SL_EUNAVAIL, msg);
}

void sl_rd_retry(rd_op *op, rd_slot *sl) {
  if (op->finished || sl->have || sl->ranged > 0 || sl->inflight > 0) return;
  if (sl->asked < op->lh->q.qw)
    ask(op, sl);
  else
    give_up(op, sl);
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
  if (st == SL_OK && r->found &&
      sl_rd_take(op, sl, r->payload.data, r->payload.len, r->crc32c))
    goto out;
  if (sl->asked < op->lh->q.qw)
    ask(op, sl);
  else if (!sl->inflight)
    give_up(op, sl);
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  sl_rd_put(op);
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

/* Entries to keep in flight: READ_AHEAD_BYTES at the average size so far
 * (this read's, else the handle's last read's). */
static int64_t ahead(const rd_op *op) {
  uint64_t avg = op->got > 0 ? op->got_bytes / op->got + 1 : op->lh->read_avg;
  if (avg == 0) return FIRST_AHEAD;
  uint64_t n = READ_AHEAD_BYTES / avg;
  return n < 2 ? 2 : n > WINDOW ? WINDOW : (int64_t)n;
}

/* The last entry of the chunk that starts at first: half the read-ahead,
 * within the read and first's segment. */
static int64_t chunk_end(const rd_op *op, int64_t first) {
  const Sluice__V1__LedgerInfo *info = op->lh->info;
  size_t seg = sl_lh_segment_of(info, first);
  int64_t end = first + ahead(op) / 2 - 1;
  if (end > op->last) end = op->last;
  if (seg + 1 < info->n_ensembles && end >= info->ensembles[seg + 1]->first_entry)
    end = info->ensembles[seg + 1]->first_entry - 1;
  return end;
}

static void issue(rd_op *op) {
  /* An entry no replica can serve gives the read up inside ask(), which
   * may drop the op's last reference while this loop still reads it. */
  op->outstanding++;
  while (!op->finished && op->next_issue <= op->last) {
    int64_t first = op->next_issue, end = chunk_end(op, first);
    if (end - op->next_deliver >= ahead(op)) break; /* window full */
    for (int64_t e = first; e <= end; e++) {
      rd_slot *sl = &op->ring[e % WINDOW];
      SL_ASSERT(sl->entry == -1 && !sl->have);
      sl->entry = e;
      sl->ranged = sl->asked = sl->inflight = 0;
      sl->bad_crc = false;
    }
    op->next_issue = end + 1;
    if (end - first + 1 >= RANGE_MIN) sl_rd_range_start(op, first, end);
    for (int64_t e = first; e <= end && !op->finished; e++) {
      rd_slot *sl = &op->ring[e % WINDOW];
      if (sl->entry == e && sl->ranged == 0 && sl->asked == 0) ask(op, sl);
    }
  }
  sl_rd_put(op);
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
  static atomic_uint rotation; /* spreads the reads' first covers */
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
  op->rotation = atomic_fetch_add(&rotation, 1);
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
