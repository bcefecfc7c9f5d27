/*
 * Recovery of a ledger whose writer is gone (steps in ledger.h). One
 * rec_op runs on one serial; every RPC completion is posted there. The op
 * lives until it has finished and no call of it is in flight
 * (`outstanding`), so late answers after the end are dropped safely.
 *
 * Steps and the function behind each
 *   GET        read the metadata                          rec_get
 *   MARK       CAS IN_RECOVERY with our epoch              rec_mark
 *   FENCE      Fence every bookie of the last segment      rec_fence
 *   READ       fencing reads of entry e from its write set rec_read
 *   WRITE      recovery adds of e to its write set         rec_write
 *   CHANGE     replace dead bookies of the write ensemble  rec_change
 *   CLOSE      CAS CLOSED at the last recovered entry, with
 *              the pending segments                        rec_close
 *
 * Fencing and reads go to the ledger's last segment as the old writer left
 * it (`seg`, a copy); write-backs go to the write ensemble (`wid`), which
 * starts as that segment. A bookie whose write-back failed is replaced
 * (CHANGE): the write ensemble from the entry being written on becomes a
 * pending segment, kept here and written into the metadata only by the
 * closing CAS. So the metadata never names a bookie that holds only part of
 * what recovery wrote, and a re-run after a crash reads the old writer's
 * bookies again. A pending segment records the instance ids of the bookies
 * it kept and none for the replacements: a replacement never saw the old
 * writer's adds, so its "not found" must never count.
 * A failure at any step ends the op with its status; nothing after the
 * failed step was changed, so a re-run continues where this one stopped.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/ledger/ledger_int.h"
#include "common/crc32c.h"
#include "common/log.h"

#define STATE_OPEN SLUICE__V1__LEDGER_STATE__LEDGER_STATE_OPEN
#define STATE_IN_RECOVERY SLUICE__V1__LEDGER_STATE__LEDGER_STATE_IN_RECOVERY
#define STATE_CLOSED SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED
#define UPDATE_RECOVER SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_RECOVER

/* CAS races lost before giving up with SL_EVERSION. */
#define MAX_CAS_TRIES 3

typedef struct rec_op rec_op;

/* A segment recovery adds to the metadata when it closes the ledger. */
typedef struct rec_seg {
  int64_t first;
  char **ids;         /* [E] */
  char **inst;        /* [E], "" for replacements */
} rec_seg;

/* Callback argument of one RPC of the op. */
typedef struct rec_call {
  rec_op *op;
  uint32_t slot;
  uint32_t gen;       /* op->gen when sent: stale answers are ignored */
} rec_call;

/* One recovery AddEntry stream (to one slot), open for the whole op. */
typedef struct rec_stream {
  rec_op *op;
  uint32_t slot;
  bool done;          /* on_done ran */
} rec_stream;

struct rec_op {
  sl_ledger_client *c;
  uint64_t ledger_id;
  uint64_t epoch;
  sl_serial *serial;
  sl_ledger_open_cb cb;
  void *arg;
  Sluice__V1__LedgerInfo *info;
  int64_t version;
  sl_quorum q;
  int cas_tries;
  bool finished;
  int outstanding;                /* calls and streams not yet released */
  sl_timer deadline;

  Sluice__V1__EnsembleSegment *seg; /* the old writer's last segment (copy) */
  sl_rpc_channel *ch[SL_QUORUM_MAX_ENSEMBLE];
  uint64_t fenced;                /* slots that answered the fence */
  uint64_t fence_answered;
  int64_t max_lac;
  bool reading;                   /* fencing covered: READ started */

  int64_t entry;                  /* entry being read or written back */
  uint32_t gen;
  uint64_t found, absent, answered;
  uint8_t *data;                  /* the good copy of entry */
  size_t len;
  uint32_t crc;
  uint64_t wb_acked;              /* write-back acks of entry */
  sl_rpc_astream *wb[SL_QUORUM_MAX_ENSEMBLE];
  rec_stream *wbctx[SL_QUORUM_MAX_ENSEMBLE];

  /* write ensemble (CHANGE) */
  char *wid[SL_QUORUM_MAX_ENSEMBLE];   /* bookie ids */
  char *winst[SL_QUORUM_MAX_ENSEMBLE]; /* recorded instance ids ("" none) */
  sl_rpc_channel *wch[SL_QUORUM_MAX_ENSEMBLE];
  uint64_t wbroken;               /* slots whose write-back failed */
  int64_t last_first;             /* first entry of the ledger's last segment */
  rec_seg *pend;                  /* segments for the close (CHANGE) */
  size_t n_pend;
  char *avoid[2 * SL_QUORUM_MAX_ENSEMBLE]; /* never pick these again */
  size_t n_avoid;
  int64_t recovered;              /* entries written back (for the log) */
};

static uint64_t bit(uint32_t s) { return UINT64_C(1) << s; }

static void op_put(rec_op *op) {
  if (--op->outstanding > 0 || !op->finished) return;
  if (op->info) protobuf_c_message_free_unpacked(&op->info->base, NULL);
  if (op->seg) protobuf_c_message_free_unpacked(&op->seg->base, NULL);
  for (size_t i = 0; i < SL_QUORUM_MAX_ENSEMBLE; i++) {
    free(op->wid[i]);
    free(op->winst[i]);
  }
  for (size_t i = 0; i < op->n_pend; i++) {
    for (uint32_t s = 0; s < op->q.e; s++) {
      if (op->pend[i].ids) free(op->pend[i].ids[s]);
      if (op->pend[i].inst) free(op->pend[i].inst[s]);
    }
    free(op->pend[i].ids);
    free(op->pend[i].inst);
  }
  free(op->pend);
  for (size_t i = 0; i < op->n_avoid; i++) free(op->avoid[i]);
  free(op->data);
  sl_serial_unref(op->serial);
  free(op);
}

/* Ends the op: exactly one callback. */
static void finish(rec_op *op, sl_status st, const char *details) {
  if (op->finished) return;
  op->finished = true;
  sl_timer_stop(&op->deadline);
  for (uint32_t s = 0; s < SL_QUORUM_MAX_ENSEMBLE; s++) {
    if (!op->wb[s]) continue;
    op->wbctx[s]->done = true; /* ignore what is still in flight */
    sl_rpc_astream_cancel(op->wb[s]);
    sl_rpc_astream_unref(op->wb[s]);
    op->wb[s] = NULL;
  }
  sl_ledger *lh = NULL;
  if (st == SL_OK) {
    sl_err err = SL_ERR_INIT;
    Sluice__V1__LedgerInfo *info = op->info;
    op->info = NULL;
    st = sl_lh_create(op->c, op->serial, info, op->version, SL_LEDGER_CLOSED, &lh,
                      &err);
    if (st != SL_OK) details = err.msg;
  }
  sl_metrics_counter_inc(st == SL_OK ? sl_lc_m.recoveries_ok : sl_lc_m.recoveries_failed);
  if (st == SL_OK)
    sl_log(SL_LOG_INFO,
           "event=ledger_recovered ledger=%" PRIu64 " last_entry=%" PRId64
           " written_back=%" PRId64,
           op->ledger_id, sl_ledger_last_entry(lh), op->recovered);
  else
    sl_log(SL_LOG_WARN,
           "event=ledger_recovery_failed ledger=%" PRIu64 " status=%s details=\"%s\"",
           op->ledger_id, sl_status_str(st), details ? details : "");
  op->cb(st, details ? details : "", lh, op->arg);
  op->outstanding++;
  op_put(op);
}

static void deadline_run(void *arg) {
  rec_op *op = arg;
  char msg[96];
  snprintf(msg, sizeof(msg), "ledger %" PRIu64 ": recovery made no progress at entry %"
           PRId64, op->ledger_id, op->entry);
  finish(op, SL_EUNAVAIL, msg);
}

/* Starts a unary call whose completion gets a rec_call. */
static sl_status call(rec_op *op, sl_rpc_channel *ch, const sl_rpc_method *m,
                      const ProtobufCMessage *req, int timeout_ms, uint32_t slot,
                      sl_rpc_unary_cb cb) {
  rec_call *rc = malloc(sizeof(*rc));
  if (!rc) return SL_ENOMEM;
  rc->op = op;
  rc->slot = slot;
  rc->gen = op->gen;
  sl_rpc_call_opts o = sl_lc_bookie_opts(op->c, op->serial, timeout_ms);
  sl_status st = sl_rpc_unary_start(ch, m, req, &o, cb, rc, NULL, NULL);
  if (st != SL_OK) {
    free(rc);
    return st;
  }
  op->outstanding++;
  return SL_OK;
}

static sl_status meta_call(rec_op *op, const sl_rpc_method *m,
                           const ProtobufCMessage *req, sl_rpc_unary_cb cb) {
  return call(op, op->c->opts.metadata, m, req, op->c->opts.metadata_timeout_ms,
              0, cb);
}

/* Takes the rec_call of a completion; false if the op is over (the answer
 * is then dropped). */
static rec_op *call_op(void *arg, rec_call *out) {
  rec_call *rc = arg;
  *out = *rc;
  free(rc);
  if (out->op->finished) {
    op_put(out->op);
    return NULL;
  }
  out->op->outstanding--; /* the caller is on the serial: op stays alive */
  return out->op;
}

static void rec_get(rec_op *op);
static void rec_fence(rec_op *op);
static void rec_read(rec_op *op);
static void rec_close(rec_op *op);

static void take_info(rec_op *op, Sluice__V1__LedgerResponse *r) {
  if (op->info) protobuf_c_message_free_unpacked(&op->info->base, NULL);
  op->info = r->info;
  op->version = r->version;
  r->info = NULL;
  op->q = (sl_quorum){op->info->ensemble_size, op->info->write_quorum,
                      op->info->ack_quorum};
}

/* ------------------------------------------------------------ GET, MARK */

static void mark_done(sl_status st, const char *details, ProtobufCMessage *resp,
                      void *arg) {
  rec_call rc;
  rec_op *op = call_op(arg, &rc);
  if (op) {
    if (st == SL_OK) {
      take_info(op, (Sluice__V1__LedgerResponse *)resp);
      rec_fence(op);
    } else if (st == SL_EVERSION && ++op->cas_tries < MAX_CAS_TRIES) {
      rec_get(op);
    } else {
      finish(op, st, details);
    }
  }
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
}

static void rec_mark(rec_op *op) {
  Sluice__V1__LedgerInfo info = *op->info;
  info.state = STATE_IN_RECOVERY;
  info.recovery_epoch = op->epoch;
  Sluice__V1__UpdateLedgerRequest req = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  req.info = &info;
  req.expected_version = op->version;
  req.epoch = op->epoch;
  req.kind = UPDATE_RECOVER;
  sl_status st = meta_call(op, SL_METADATA_SERVICE_UPDATE_LEDGER, &req.base, mark_done);
  if (st != SL_OK) finish(op, st, "ledger: metadata call failed");
}

static void got_ledger(sl_status st, const char *details, ProtobufCMessage *resp,
                       void *arg) {
  rec_call rc;
  rec_op *op = call_op(arg, &rc);
  if (!op) goto out;
  if (st != SL_OK) {
    finish(op, st, details);
    goto out;
  }
  take_info(op, (Sluice__V1__LedgerResponse *)resp);
  const Sluice__V1__LedgerInfo *i = op->info;
  char msg[128];
  if (i->state == STATE_CLOSED) {
    finish(op, SL_OK, ""); /* idempotent: already recovered or closed */
  } else if (op->epoch < i->owner_epoch ||
             (i->state == STATE_IN_RECOVERY && i->recovery_epoch > op->epoch)) {
    snprintf(msg, sizeof(msg), "ledger %" PRIu64 ": epoch %" PRIu64 " is stale",
             op->ledger_id, op->epoch);
    finish(op, SL_ESTALE_EPOCH, msg);
  } else if (sl_quorum_check(&op->q, NULL) != SL_OK || i->n_ensembles == 0) {
    snprintf(msg, sizeof(msg), "ledger %" PRIu64 ": bad metadata", op->ledger_id);
    finish(op, SL_ECORRUPT, msg);
  } else if (i->state == STATE_IN_RECOVERY && i->recovery_epoch == op->epoch) {
    rec_fence(op); /* our own earlier run marked it */
  } else {
    rec_mark(op);
  }
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
}

static void rec_get(rec_op *op) {
  Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  req.ledger_id = op->ledger_id;
  sl_status st = meta_call(op, SL_METADATA_SERVICE_GET_LEDGER, &req.base, got_ledger);
  if (st != SL_OK) finish(op, st, "ledger: metadata call failed");
}

/* ------------------------------------------------------------------ FENCE */

static uint64_t seg_mask(const rec_op *op) { return (UINT64_C(1) << op->q.e) - 1; }

static void fence_done(sl_status st, const char *details, ProtobufCMessage *resp,
                       void *arg) {
  rec_call rc;
  rec_op *op = call_op(arg, &rc);
  if (!op) goto out;
  op->fence_answered |= bit(rc.slot);
  if (st == SL_OK) {
    const Sluice__V1__FenceResponse *r = (const Sluice__V1__FenceResponse *)resp;
    op->fenced |= bit(rc.slot);
    if (r->lac > op->max_lac) op->max_lac = r->lac;
  } else if (st == SL_ESTALE_EPOCH || st == SL_EPERM || st == SL_EDELETED) {
    /* A newer fencer, the wrong password or a deleted ledger: stop. */
    finish(op, st, details);
    goto out;
  } else {
    sl_log(SL_LOG_WARN, "event=fence_failed ledger=%" PRIu64 " bookie=%s status=%s",
           op->ledger_id, op->seg->bookie_ids[rc.slot], sl_status_str(st));
  }
  if (op->reading) goto out;
  if (sl_quorum_fence_covers(&op->q, op->fenced)) {
    op->reading = true;
    /* Entries before the last segment were complete when it was made. */
    int64_t lac_next = op->max_lac + 1;
    op->entry = lac_next > op->last_first ? lac_next : op->last_first;
    rec_read(op);
  } else if (op->fence_answered == seg_mask(op)) {
    char msg[128];
    snprintf(msg, sizeof(msg),
             "ledger %" PRIu64 ": too few bookies fenced to recover", op->ledger_id);
    finish(op, SL_EUNAVAIL, msg);
  }
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
}

static void fence_all(sl_status st, const char *details, void *arg) {
  (void)st;
  (void)details; /* a stale bookie cache still has the addresses we need */
  rec_op *op = arg;
  op->outstanding--;
  if (op->finished) {
    op->outstanding++;
    op_put(op);
    return;
  }
  Sluice__V1__FenceRequest req = SLUICE__V1__FENCE_REQUEST__INIT;
  req.ledger_id = op->ledger_id;
  req.epoch = op->epoch;
  req.password = op->info->password;
  for (uint32_t s = 0; s < op->q.e && !op->finished; s++) {
    op->ch[s] = sl_lc_channel(op->c, op->seg->bookie_ids[s]);
    op->wch[s] = sl_lc_channel(op->c, op->wid[s]);
    bool sent = op->ch[s] &&
                call(op, op->ch[s], SL_BOOKIE_SERVICE_FENCE, &req.base,
                     op->c->opts.read_timeout_ms, s, fence_done) == SL_OK;
    if (!sent) op->fence_answered |= bit(s);
  }
  if (!op->finished && op->fence_answered == seg_mask(op) && !op->reading)
    finish(op, SL_EUNAVAIL, "ledger: no bookie of the last ensemble reachable");
}

static sl_status avoid_add(rec_op *op, const char *id) {
  for (size_t i = 0; i < op->n_avoid; i++)
    if (strcmp(op->avoid[i], id) == 0) return SL_OK;
  if (op->n_avoid == 2 * SL_QUORUM_MAX_ENSEMBLE) return SL_OK; /* best effort */
  if (!(op->avoid[op->n_avoid] = strdup(id))) return SL_ENOMEM;
  op->n_avoid++;
  return SL_OK;
}

/* A deep copy of the last segment, and the write ensemble set to it. */
static sl_status take_segment(rec_op *op) {
  const Sluice__V1__LedgerInfo *i = op->info;
  const Sluice__V1__EnsembleSegment *last = i->ensembles[i->n_ensembles - 1];
  if (last->n_bookie_ids != op->q.e) return SL_ECORRUPT;
  op->last_first = last->first_entry;
  size_t n = protobuf_c_message_get_packed_size(&last->base);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) return SL_ENOMEM;
  protobuf_c_message_pack(&last->base, buf);
  if (op->seg) protobuf_c_message_free_unpacked(&op->seg->base, NULL);
  op->seg = sluice__v1__ensemble_segment__unpack(NULL, n, buf);
  free(buf);
  if (!op->seg) return SL_ENOMEM;
  op->wbroken = 0;
  for (uint32_t s = 0; s < op->q.e; s++) {
    free(op->wid[s]);
    free(op->winst[s]);
    op->wid[s] = strdup(last->bookie_ids[s]);
    op->winst[s] = strdup(s < last->n_instance_ids ? last->instance_ids[s] : "");
    if (!op->wid[s] || !op->winst[s] || avoid_add(op, last->bookie_ids[s]) != SL_OK)
      return SL_ENOMEM;
  }
  return SL_OK;
}

static void rec_fence(rec_op *op) {
  sl_status st = take_segment(op);
  if (st != SL_OK) {
    finish(op, st, st == SL_ECORRUPT ? "ledger: segment size differs from E"
                                     : "ledger: out of memory");
    return;
  }
  op->max_lac = -1;
  op->outstanding++;
  sl_lc_refresh(op->c, op->serial, false, fence_all, op);
}

/* ------------------------------------------------------------ READ, WRITE */

/* A "not found" is a vote only from a fenced bookie of the instance that
 * held the segment (ledger.h, recovery step 3). */
static bool valid_vote(const rec_op *op, uint32_t slot, bool fenced,
                       const char *instance) {
  if (!fenced || slot >= op->seg->n_instance_ids) return false;
  const char *held = op->seg->instance_ids[slot];
  return held[0] != '\0' && instance && strcmp(held, instance) == 0;
}

static void rec_write(rec_op *op);

static void decide(rec_op *op) {
  uint64_t ws = sl_quorum_write_set(&op->q, op->entry);
  switch (sl_quorum_verdict_of(&op->q, op->entry, op->found, op->absent)) {
    case SL_QUORUM_FOUND:
      rec_write(op);
      break;
    case SL_QUORUM_ABSENT:
      rec_close(op);
      break;
    case SL_QUORUM_UNKNOWN:
      if ((op->answered & ws) == ws) {
        char msg[128];
        snprintf(msg, sizeof(msg),
                 "ledger %" PRIu64 " entry %" PRId64 ": too few valid answers",
                 op->ledger_id, op->entry);
        finish(op, SL_EUNAVAIL, msg);
      }
      break;
  }
}

static void read_done(sl_status st, const char *details, ProtobufCMessage *resp,
                      void *arg) {
  (void)details;
  rec_call rc;
  rec_op *op = call_op(arg, &rc);
  if (!op || rc.gen != op->gen) goto out;
  op->answered |= bit(rc.slot);
  if (st == SL_OK) {
    const Sluice__V1__ReadEntryResponse *r = (const Sluice__V1__ReadEntryResponse *)resp;
    bool good = r->found &&
                sl_entry_crc(op->ledger_id, op->entry, r->payload.data,
                             r->payload.len) == r->crc32c;
    if (good && !op->found) {
      uint8_t *d = malloc(r->payload.len ? r->payload.len : 1);
      if (!d) {
        finish(op, SL_ENOMEM, "ledger: out of memory");
        goto out;
      }
      memcpy(d, r->payload.data, r->payload.len);
      free(op->data);
      op->data = d;
      op->len = r->payload.len;
      op->crc = r->crc32c;
    }
    if (good)
      op->found |= bit(rc.slot);
    else if (!r->found && valid_vote(op, rc.slot, r->fenced, r->instance_id))
      op->absent |= bit(rc.slot);
  }
  decide(op);
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
}

static void rec_read(rec_op *op) {
  op->gen++;
  op->found = op->absent = op->answered = 0;
  Sluice__V1__ReadEntryRequest req = SLUICE__V1__READ_ENTRY_REQUEST__INIT;
  req.ledger_id = op->ledger_id;
  req.entry_id = op->entry;
  req.fence = true;
  req.epoch = op->epoch;
  req.password = op->info->password;
  for (uint32_t i = 0; i < op->q.qw && !op->finished; i++) {
    uint32_t s = sl_quorum_slot(&op->q, op->entry, i);
    bool sent = op->ch[s] &&
                call(op, op->ch[s], SL_BOOKIE_SERVICE_READ_ENTRY, &req.base,
                     op->c->opts.read_timeout_ms, s, read_done) == SL_OK;
    if (!sent) op->answered |= bit(s);
  }
  if (!op->finished && op->answered) decide(op);
}

/* Stops using the write-back stream of slot s. */
static void wb_drop(rec_op *op, uint32_t s) {
  if (!op->wb[s]) return;
  op->wbctx[s]->done = true;
  sl_rpc_astream_cancel(op->wb[s]);
  sl_rpc_astream_unref(op->wb[s]);
  op->wb[s] = NULL;
}

/* A write-back to slot s failed: replace its bookie, then write again. */
static void wb_broken(rec_op *op, uint32_t s, sl_status st, const char *details) {
  sl_log(SL_LOG_WARN,
         "event=writeback_failed ledger=%" PRIu64 " entry=%" PRId64 " bookie=%s "
         "status=%s details=\"%s\"",
         op->ledger_id, op->entry, op->wid[s], sl_status_str(st), details ? details : "");
  if (st == SL_ESTALE_EPOCH || st == SL_EPERM || st == SL_EDELETED) {
    finish(op, st, details);
    return;
  }
  wb_drop(op, s);
  op->wbroken |= bit(s);
  rec_write(op);
}

static void wb_on_message(sl_rpc_astream *s, const ProtobufCMessage *msg, void *arg) {
  (void)s;
  rec_stream *ctx = arg;
  rec_op *op = ctx->op;
  if (ctx->done || op->finished) return;
  const Sluice__V1__AddEntryResponse *r = (const Sluice__V1__AddEntryResponse *)msg;
  if (r->entry_id != op->entry || (op->wb_acked & bit(ctx->slot)))
    return; /* an earlier entry's late ack, or a resend's */
  sl_status st = sl_lc_add_status(r);
  if (st != SL_OK) {
    wb_broken(op, ctx->slot, st, r->error);
    return;
  }
  op->wb_acked |= bit(ctx->slot);
  if (sl_quorum_complete(&op->q, op->entry, op->wb_acked)) {
    op->recovered++;
    op->entry++;
    sl_timer_start(&op->deadline, op->c->opts.recovery_timeout_ms); /* progress */
    rec_read(op);
  }
}

static void wb_on_done(sl_rpc_astream *s, sl_status st, const char *details,
                       void *arg) {
  (void)s;
  rec_stream *ctx = arg;
  rec_op *op = ctx->op;
  if (ctx->done || op->finished) return;
  wb_broken(op, ctx->slot, st == SL_OK ? SL_EUNAVAIL : st, details);
}

static void wb_on_release(void *arg) {
  rec_stream *ctx = arg;
  rec_op *op = ctx->op;
  free(ctx);
  op_put(op);
}

static sl_status wb_open(rec_op *op, uint32_t s) {
  rec_stream *ctx = calloc(1, sizeof(*ctx));
  if (!ctx) return SL_ENOMEM;
  ctx->op = op;
  ctx->slot = s;
  sl_rpc_call_opts o = sl_lc_bookie_opts(op->c, op->serial, 0);
  const sl_rpc_astream_handler h = {wb_on_message, NULL, wb_on_done, wb_on_release};
  sl_status st = sl_rpc_astream_open(op->wch[s], SL_BOOKIE_SERVICE_ADD_ENTRY, NULL, &o,
                                     &h, ctx, &op->wb[s], NULL);
  if (st != SL_OK) {
    free(ctx);
    return st;
  }
  op->wbctx[s] = ctx;
  op->outstanding++;
  return SL_OK;
}

static void rec_change(rec_op *op, uint64_t dead);

static void rec_write(rec_op *op) {
  if (op->finished) return;
  op->gen++; /* late read answers of this entry no longer matter */
  op->wb_acked = 0;
  uint64_t ws = sl_quorum_write_set(&op->q, op->entry), dead = 0;
  for (uint32_t s = 0; s < op->q.e; s++)
    if ((ws & bit(s)) && ((op->wbroken & bit(s)) || !op->wch[s])) dead |= bit(s);
  if (dead) {
    rec_change(op, dead);
    return;
  }
  Sluice__V1__AddEntryRequest req = SLUICE__V1__ADD_ENTRY_REQUEST__INIT;
  req.ledger_id = op->ledger_id;
  req.entry_id = op->entry;
  req.lac = op->entry - 1;
  req.payload.data = op->data;
  req.payload.len = op->len;
  req.crc32c = op->crc;
  req.epoch = op->epoch;
  req.password = op->info->password;
  req.recovery = true;
  req.tag = (uint64_t)op->entry;
  for (uint32_t i = 0; i < op->q.qw && !op->finished; i++) {
    uint32_t s = sl_quorum_slot(&op->q, op->entry, i);
    sl_status st = op->wb[s] ? SL_OK : wb_open(op, s);
    if (st == SL_OK) st = sl_rpc_astream_send(op->wb[s], &req.base);
    if (st != SL_OK) {
      wb_broken(op, s, st, "write-back not sent");
      return;
    }
  }
}

/* Remembers the write ensemble as a segment from op->entry on (replacing a
 * pending one that starts there). */
static sl_status pend_push(rec_op *op) {
  rec_seg *p = op->n_pend ? &op->pend[op->n_pend - 1] : NULL;
  if (!p || p->first != op->entry) {
    rec_seg *grown = realloc(op->pend, (op->n_pend + 1) * sizeof(*grown));
    if (!grown) return SL_ENOMEM;
    op->pend = grown;
    p = &op->pend[op->n_pend++];
    p->first = op->entry;
    p->ids = calloc(op->q.e, sizeof(char *));
    p->inst = calloc(op->q.e, sizeof(char *));
    if (!p->ids || !p->inst) return SL_ENOMEM;
  }
  for (uint32_t s = 0; s < op->q.e; s++) {
    free(p->ids[s]);
    free(p->inst[s]);
    p->ids[s] = strdup(op->wid[s]);
    p->inst[s] = strdup(op->winst[s]);
    if (!p->ids[s] || !p->inst[s]) return SL_ENOMEM;
  }
  return SL_OK;
}

/* Replaces the dead slots of the write ensemble (see the design note). */
static void rec_change(rec_op *op, uint64_t dead) {
  const char *taken[SL_QUORUM_MAX_ENSEMBLE];
  char *ids[SL_QUORUM_MAX_ENSEMBLE], *inst[SL_QUORUM_MAX_ENSEMBLE];
  size_t n_taken = 0, want = 0;
  for (uint32_t s = 0; s < op->q.e; s++)
    if (dead & bit(s)) want++;
    else taken[n_taken++] = op->wid[s];
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_lc_pick(op->c, (const char *const *)op->avoid, op->n_avoid, taken,
                            n_taken, want, ids, inst, &err);
  if (st != SL_OK) {
    finish(op, st, err.msg);
    return;
  }
  size_t k = 0;
  for (uint32_t s = 0; s < op->q.e; s++) {
    if (!(dead & bit(s))) continue;
    wb_drop(op, s);
    sl_log(SL_LOG_INFO, "event=recovery_ensemble_change ledger=%" PRIu64 " entry=%" PRId64
           " from=%s to=%s", op->ledger_id, op->entry, op->wid[s], ids[k]);
    free(op->wid[s]);
    free(op->winst[s]);
    free(inst[k]);
    op->wid[s] = ids[k++];
    op->winst[s] = strdup(""); /* a replacement votes for nothing */
    op->wch[s] = sl_lc_channel(op->c, op->wid[s]);
    op->wbroken &= ~bit(s);
    if (!op->winst[s] || avoid_add(op, op->wid[s]) != SL_OK) st = SL_ENOMEM;
  }
  if (st == SL_OK) st = pend_push(op);
  if (st != SL_OK) {
    finish(op, st, "ledger: out of memory");
    return;
  }
  rec_write(op);
}

/* ------------------------------------------------------------------ CLOSE */

static void close_done(sl_status st, const char *details, ProtobufCMessage *resp,
                       void *arg) {
  rec_call rc;
  rec_op *op = call_op(arg, &rc);
  if (op) {
    if (st == SL_OK) {
      take_info(op, (Sluice__V1__LedgerResponse *)resp);
      finish(op, SL_OK, "");
    } else if (st == SL_EVERSION && ++op->cas_tries < MAX_CAS_TRIES) {
      rec_get(op); /* a newer recoverer, or our unknown CAS: start over */
    } else {
      finish(op, st, details);
    }
  }
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
}

static void rec_close(rec_op *op) {
  op->gen++;
  Sluice__V1__LedgerInfo info = *op->info;
  size_t n = info.n_ensembles;
  Sluice__V1__EnsembleSegment **ens = malloc((n + op->n_pend) * sizeof(*ens));
  Sluice__V1__EnsembleSegment *segs = calloc(op->n_pend ? op->n_pend : 1, sizeof(*segs));
  if (!ens || !segs) {
    free(ens);
    free(segs);
    finish(op, SL_ENOMEM, "ledger: out of memory");
    return;
  }
  memcpy(ens, info.ensembles, n * sizeof(*ens));
  for (size_t i = 0; i < op->n_pend; i++) {
    sluice__v1__ensemble_segment__init(&segs[i]);
    segs[i].first_entry = op->pend[i].first;
    segs[i].n_bookie_ids = segs[i].n_instance_ids = op->q.e;
    segs[i].bookie_ids = op->pend[i].ids;
    segs[i].instance_ids = op->pend[i].inst;
    /* Starting where the last one does: everything from there on was
     * written back to the new ensemble, so it takes the old one's place. */
    if (ens[n - 1]->first_entry == segs[i].first_entry)
      ens[n - 1] = &segs[i];
    else
      ens[n++] = &segs[i];
  }
  info.ensembles = ens;
  info.n_ensembles = n;
  info.state = STATE_CLOSED;
  info.last_entry_id = op->entry - 1;
  info.recovery_epoch = op->epoch;
  Sluice__V1__UpdateLedgerRequest req = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  req.info = &info;
  req.expected_version = op->version;
  req.epoch = op->epoch;
  req.kind = UPDATE_RECOVER;
  sl_status st = meta_call(op, SL_METADATA_SERVICE_UPDATE_LEDGER, &req.base, close_done);
  free(ens);
  free(segs);
  if (st != SL_OK) finish(op, st, "ledger: metadata call failed");
}

/* ------------------------------------------------------------------- API */

static void start_run(void *arg) {
  rec_op *op = arg;
  sl_timer_start(&op->deadline, op->c->opts.recovery_timeout_ms);
  rec_get(op);
  op_put(op); /* the start's count */
}

sl_status sl_ledger_recover_async(sl_ledger_client *c, uint64_t ledger_id,
                                  const sl_ledger_recover_opts *opts,
                                  sl_ledger_open_cb cb, void *arg, sl_err *err) {
  if (!c || !opts || !cb)
    return sl_err_set(err, SL_EINVAL, "ledger: recover needs options and a callback");
  rec_op *op = calloc(1, sizeof(*op));
  if (!op) return sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
  if (opts->serial) {
    sl_serial_ref(opts->serial);
    op->serial = opts->serial;
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
  op->outstanding = 1;
  sl_timer_init(&op->deadline, op->serial, deadline_run, op);
  sl_serial_post(op->serial, start_run, op);
  return SL_OK;
}
