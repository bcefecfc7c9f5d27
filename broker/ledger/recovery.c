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
 *   CLOSE      CAS CLOSED at the last recovered entry      rec_close
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

  const Sluice__V1__EnsembleSegment *seg;   /* last segment (in info) */
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
  uint64_t wb_acked, wb_failed;
  sl_rpc_astream *wb[SL_QUORUM_MAX_ENSEMBLE];
  rec_stream *wbctx[SL_QUORUM_MAX_ENSEMBLE];
  int64_t recovered;              /* entries written back (for the log) */
};

static uint64_t bit(uint32_t s) { return UINT64_C(1) << s; }

static void op_put(rec_op *op) {
  if (--op->outstanding > 0 || !op->finished) return;
  if (op->info) protobuf_c_message_free_unpacked(&op->info->base, NULL);
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
  snprintf(msg, sizeof(msg), "ledger %" PRIu64 ": recovery timed out", op->ledger_id);
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
    int64_t lac_next = op->max_lac + 1;
    op->entry = lac_next > op->seg->first_entry ? lac_next : op->seg->first_entry;
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
    bool sent = op->ch[s] &&
                call(op, op->ch[s], SL_BOOKIE_SERVICE_FENCE, &req.base,
                     op->c->opts.read_timeout_ms, s, fence_done) == SL_OK;
    if (!sent) op->fence_answered |= bit(s);
  }
  if (!op->finished && op->fence_answered == seg_mask(op) && !op->reading)
    finish(op, SL_EUNAVAIL, "ledger: no bookie of the last ensemble reachable");
}

static void rec_fence(rec_op *op) {
  op->seg = op->info->ensembles[op->info->n_ensembles - 1];
  if (op->seg->n_bookie_ids != op->q.e) {
    finish(op, SL_ECORRUPT, "ledger: segment size differs from E");
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

static void wb_on_message(sl_rpc_astream *s, const ProtobufCMessage *msg, void *arg) {
  (void)s;
  rec_stream *ctx = arg;
  rec_op *op = ctx->op;
  if (ctx->done || op->finished) return;
  const Sluice__V1__AddEntryResponse *r = (const Sluice__V1__AddEntryResponse *)msg;
  if (r->entry_id != op->entry) return; /* an earlier entry's late ack */
  bool ok = r->status == SLUICE__V1__STATUS__STATUS_OK && r->code == 0;
  if (ok)
    op->wb_acked |= bit(ctx->slot);
  else
    op->wb_failed |= bit(ctx->slot);
  uint64_t ws = sl_quorum_write_set(&op->q, op->entry);
  if (sl_quorum_complete(&op->q, op->entry, op->wb_acked)) {
    op->recovered++;
    op->entry++;
    rec_read(op);
  } else if (sl_quorum_count(ws & ~op->wb_failed) < op->q.qa) {
    char m[160];
    snprintf(m, sizeof(m), "ledger %" PRIu64 " entry %" PRId64
             ": write-back refused (%s)", op->ledger_id, op->entry, r->error);
    finish(op, SL_EUNAVAIL, m);
  }
}

static void wb_on_done(sl_rpc_astream *s, sl_status st, const char *details,
                       void *arg) {
  (void)s;
  rec_stream *ctx = arg;
  rec_op *op = ctx->op;
  if (ctx->done || op->finished) return;
  ctx->done = true;
  sl_rpc_astream_unref(op->wb[ctx->slot]);
  op->wb[ctx->slot] = NULL;
  op->wb_failed |= bit(ctx->slot);
  uint64_t ws = sl_quorum_write_set(&op->q, op->entry);
  if (sl_quorum_count(ws & ~op->wb_failed) < op->q.qa) {
    char m[160];
    snprintf(m, sizeof(m), "ledger %" PRIu64 ": write-back stream ended: %s (%s)",
             op->ledger_id, sl_status_str(st), details);
    finish(op, SL_EUNAVAIL, m);
  }
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
  sl_status st = sl_rpc_astream_open(op->ch[s], SL_BOOKIE_SERVICE_ADD_ENTRY, NULL, &o,
                                     &h, ctx, &op->wb[s], NULL);
  if (st != SL_OK) {
    free(ctx);
    return st;
  }
  op->wbctx[s] = ctx;
  op->outstanding++;
  return SL_OK;
}

static void rec_write(rec_op *op) {
  op->gen++; /* late read answers of this entry no longer matter */
  op->wb_acked = op->wb_failed = 0;
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
  for (uint32_t i = 0; i < op->q.qw; i++) {
    uint32_t s = sl_quorum_slot(&op->q, op->entry, i);
    sl_status st = SL_EUNAVAIL;
    if (op->ch[s] && (op->wb[s] || wb_open(op, s) == SL_OK))
      st = sl_rpc_astream_send(op->wb[s], &req.base);
    if (st != SL_OK) op->wb_failed |= bit(s);
  }
  uint64_t ws = sl_quorum_write_set(&op->q, op->entry);
  if (sl_quorum_count(ws & ~op->wb_failed) < op->q.qa)
    finish(op, SL_EUNAVAIL, "ledger: too few bookies for the write-back");
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
  info.state = STATE_CLOSED;
  info.last_entry_id = op->entry - 1;
  info.recovery_epoch = op->epoch;
  Sluice__V1__UpdateLedgerRequest req = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  req.info = &info;
  req.expected_version = op->version;
  req.epoch = op->epoch;
  req.kind = UPDATE_RECOVER;
  sl_status st = meta_call(op, SL_METADATA_SERVICE_UPDATE_LEDGER, &req.base, close_done);
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
