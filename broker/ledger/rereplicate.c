/*
 * Re-replication of a CLOSED ledger (auto-recovery, steps in ledger.h). One
 * rr_op runs on one serial; every completion is posted there, the read
 * handle's included (it shares the serial). The op lives until it has
 * finished and nothing of it is in flight (`outstanding`), so late answers
 * after the end are dropped safely.
 *
 * Steps and the function behind each
 *   LIST     fresh ListBookies (who is live, with which instance)  start_run
 *   GET      read the metadata, plan the positions to replace      rr_get, plan
 *   COPY     per segment: read a chunk of entries, write each to
 *            the replacements of its write set, wait for the acks   rr_segment,
 *                                                                   rr_chunk
 *   PACE     before the next chunk, wait until the bytes copied fit
 *            the rate (and stop if cancelled)                       chunk_next
 *   UPDATE   CAS the new bookie ids and the records                 rr_update
 *
 * Invariants
 *   1. The metadata names a replacement only after every entry it must
 *      hold was acked by it (UPDATE comes after every COPY).
 *   2. Only positions whose bookie is in `gone` and is not back with its
 *      data (live with the recorded instance id) are replaced.
 *   3. A copy is the entry's bytes as read with a good CRC, re-checksummed
 *      for its (ledger, entry), sent as a recovery add with the ledger's
 *      highest epoch; a bookie's refusal fails the op (a re-run picks again).
 *   4. At most CHUNK entries are read or unacknowledged at a time, so memory
 *      stays bounded whatever the ledger's size; with a rate bound, about
 *      CHUNK_MS worth of bytes (at least one entry).
 *   5. A bookie that a Rereplication record names as replaced (from_bookie)
 *      is never picked for that ledger again. So once no segment names a
 *      bookie that a record replaced, its local copy is garbage for good,
 *      and its sweep may drop it (bookie/ledger_sweep.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/ledger/ledger_int.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"

#define STATE_CLOSED SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED
#define UPDATE_REREPLICATE SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_REREPLICATE
#define MAX_CAS_TRIES 3
#define CHUNK 32 /* entries per read; below the astream send queue (64) */
/* With a rate bound, a chunk holds about this long's worth of bytes: a
 * bookie then takes the copies in small bursts between its other adds,
 * instead of a whole chunk of large entries at once in one journal sync. */
#define CHUNK_MS 50

typedef struct rr_op rr_op;

/* Callback argument of one AddEntry stream (to one replaced position). */
typedef struct rr_stream {
  rr_op *op;
  uint32_t slot;
  bool done;          /* on_done ran, or the op stopped using the stream */
} rr_stream;

/* The plan for one segment: which positions move, and where. */
typedef struct rr_seg {
  uint64_t mask;                          /* positions to replace */
  char *to[SL_QUORUM_MAX_ENSEMBLE];       /* new bookie id where mask */
  char *inst[SL_QUORUM_MAX_ENSEMBLE];     /* its instance id */
} rr_seg;

struct rr_op {
  sl_ledger_client *c;
  uint64_t ledger_id;
  sl_serial *serial;
  sl_ledger_rereplicate_cb cb;
  void *arg;
  char **gone;
  size_t n_gone;
  uint64_t bps;
  const atomic_bool *cancel;
  bool finished;
  int outstanding;                /* calls, reads and streams in flight */
  sl_timer deadline;              /* no progress for recovery_timeout_ms */
  sl_timer pace;

  Sluice__V1__LedgerInfo *info;
  int64_t version;
  sl_quorum q;
  uint64_t epoch;                 /* highest epoch that wrote the ledger */
  int cas_tries;
  rr_seg *plan;                   /* [info->n_ensembles] */
  uint32_t replaced;

  sl_ledger *lh;                  /* read handle (CLOSED) */
  size_t seg;                     /* segment being copied */
  int64_t next, seg_end, chunk_last;
  bool reading;                   /* a chunk read is in flight */
  uint32_t unacked;               /* copies sent, not yet acked */
  sl_rpc_astream *st[SL_QUORUM_MAX_ENSEMBLE];
  rr_stream *stctx[SL_QUORUM_MAX_ENSEMBLE];
  uint64_t copied, bytes;
  int64_t start_ms;
};

static uint64_t bit(uint32_t s) { return UINT64_C(1) << s; }

static void plan_free(rr_op *op) {
  if (!op->plan) return;
  for (size_t i = 0; i < op->info->n_ensembles; i++)
    for (uint32_t s = 0; s < SL_QUORUM_MAX_ENSEMBLE; s++) {
      free(op->plan[i].to[s]);
      free(op->plan[i].inst[s]);
    }
  free(op->plan);
  op->plan = NULL;
}

static void op_put(rr_op *op) {
  if (--op->outstanding > 0 || !op->finished) return;
  plan_free(op);
  if (op->info) protobuf_c_message_free_unpacked(&op->info->base, NULL);
  for (size_t i = 0; i < op->n_gone; i++) free(op->gone[i]);
  free(op->gone);
  sl_serial_unref(op->serial);
  free(op);
}

static void drop_streams(rr_op *op) {
  for (uint32_t s = 0; s < SL_QUORUM_MAX_ENSEMBLE; s++) {
    if (!op->st[s]) continue;
    op->stctx[s]->done = true; /* ignore what is still in flight */
    sl_rpc_astream_cancel(op->st[s]);
    sl_rpc_astream_unref(op->st[s]);
    op->st[s] = NULL;
  }
}

/* Ends the op: exactly one callback. */
static void finish(rr_op *op, sl_status st, const char *details) {
  if (op->finished) return;
  op->finished = true;
  sl_timer_stop(&op->deadline);
  sl_timer_stop(&op->pace);
  drop_streams(op);
  if (op->lh) sl_ledger_destroy(op->lh);
  op->lh = NULL;
  if (st == SL_OK)
    sl_log(SL_LOG_INFO,
           "event=ledger_rereplicated ledger=%" PRIu64 " replaced=%u copied=%" PRIu64
           " bytes=%" PRIu64, op->ledger_id, op->replaced, op->copied, op->bytes);
  else
    sl_log(SL_LOG_WARN,
           "event=ledger_rereplication_failed ledger=%" PRIu64 " status=%s details=\"%s\"",
           op->ledger_id, sl_status_str(st), details ? details : "");
  op->cb(st, details ? details : "", st == SL_OK ? op->replaced : 0, op->copied, op->arg);
  op->outstanding++;
  op_put(op);
}

static void deadline_run(void *arg) {
  rr_op *op = arg;
  char msg[112];
  snprintf(msg, sizeof(msg), "ledger %" PRIu64 ": re-replication made no progress at entry %"
           PRId64, op->ledger_id, op->next);
  finish(op, SL_EUNAVAIL, msg);
}

/* A unary metadata call whose completion gets the op. */
static sl_status meta_call(rr_op *op, const sl_rpc_method *m, const ProtobufCMessage *req,
                           sl_rpc_unary_cb cb) {
  sl_rpc_call_opts o = sl_lc_meta_opts(op->c, op->serial);
  sl_status st = sl_rpc_unary_start(op->c->opts.metadata, m, req, &o, cb, op, NULL, NULL);
  if (st == SL_OK) op->outstanding++;
  return st;
}

/* Takes a completion's op; NULL if the op is over (the answer is dropped). */
static rr_op *op_of(void *arg) {
  rr_op *op = arg;
  if (op->finished) {
    op_put(op);
    return NULL;
  }
  op->outstanding--; /* the caller is on the serial: op stays alive */
  return op;
}

static bool is_gone(const rr_op *op, const char *id) {
  for (size_t i = 0; i < op->n_gone; i++)
    if (strcmp(op->gone[i], id) == 0) return true;
  return false;
}

/* ------------------------------------------------------------- GET, plan */

static void rr_get(rr_op *op);
static void rr_segment(rr_op *op);

/* Whether position s of segment g has lost its copy (invariant 2). */
static bool lost(rr_op *op, const Sluice__V1__EnsembleSegment *g, uint32_t s) {
  const char *id = g->bookie_ids[s];
  if (!is_gone(op, id)) return false;
  const char *recorded = s < g->n_instance_ids ? g->instance_ids[s] : "";
  char *now = NULL;
  bool live = sl_lc_bookie_state(op->c, id, &now);
  bool wiped = live && recorded[0] && (!now || strcmp(now, recorded) != 0);
  free(now);
  return !live || wiped;
}

/* Picks replacements for every lost position of every segment. */
static sl_status plan(rr_op *op, sl_err *err) {
  const Sluice__V1__LedgerInfo *i = op->info;
  op->plan = calloc(i->n_ensembles, sizeof(*op->plan));
  if (!op->plan) return sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
  for (size_t k = 0; k < i->n_ensembles; k++) {
    const Sluice__V1__EnsembleSegment *g = i->ensembles[k];
    rr_seg *p = &op->plan[k];
    const char *taken[SL_QUORUM_MAX_ENSEMBLE];
    size_t n_taken = 0, want = 0;
    for (uint32_t s = 0; s < op->q.e; s++) {
      if (lost(op, g, s)) {
        p->mask |= bit(s);
        want++;
      } else {
        taken[n_taken++] = g->bookie_ids[s];
      }
    }
    if (!want) continue;
    size_t n_avoid = op->n_gone + i->n_rereplications;
    const char **avoid = malloc((n_avoid ? n_avoid : 1) * sizeof(char *));
    if (!avoid) return sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
    for (size_t j = 0; j < op->n_gone; j++) avoid[j] = op->gone[j];
    /* Invariant 5: a bookie replaced out of this ledger never gets it back. */
    for (size_t j = 0; j < i->n_rereplications; j++)
      avoid[op->n_gone + j] = i->rereplications[j]->from_bookie;
    char *ids[SL_QUORUM_MAX_ENSEMBLE], *inst[SL_QUORUM_MAX_ENSEMBLE];
    sl_status st = sl_lc_pick(op->c, avoid, n_avoid, taken, n_taken, want, ids, inst, err);
    free(avoid);
    if (st != SL_OK) return st;
    size_t n = 0;
    for (uint32_t s = 0; s < op->q.e; s++) {
      if (!(p->mask & bit(s))) continue;
      p->to[s] = ids[n];
      p->inst[s] = inst[n++];
      op->replaced++;
    }
  }
  return SL_OK;
}

static void got_ledger(sl_status st, const char *details, ProtobufCMessage *resp,
                       void *arg) {
  rr_op *op = op_of(arg);
  if (!op) goto out;
  if (st != SL_OK) {
    finish(op, st == SL_EDELETED ? SL_ENOTFOUND : st, details);
    goto out;
  }
  Sluice__V1__LedgerResponse *r = (Sluice__V1__LedgerResponse *)resp;
  plan_free(op);
  if (op->info) protobuf_c_message_free_unpacked(&op->info->base, NULL);
  op->info = r->info;
  op->version = r->version;
  r->info = NULL;
  const Sluice__V1__LedgerInfo *i = op->info;
  op->q = (sl_quorum){i->ensemble_size, i->write_quorum, i->ack_quorum};
  op->epoch = i->recovery_epoch > i->owner_epoch ? i->recovery_epoch : i->owner_epoch;
  op->replaced = 0;
  char msg[128];
  if (i->state != STATE_CLOSED) {
    snprintf(msg, sizeof(msg), "ledger %" PRIu64 ": not closed; its writer or recoverer "
             "replaces bookies", op->ledger_id);
    finish(op, SL_EPRECOND, msg);
    goto out;
  }
  if (sl_quorum_check(&op->q, NULL) != SL_OK || i->n_ensembles == 0) {
    snprintf(msg, sizeof(msg), "ledger %" PRIu64 ": bad metadata", op->ledger_id);
    finish(op, SL_ECORRUPT, msg);
    goto out;
  }
  sl_err err = SL_ERR_INIT;
  st = plan(op, &err);
  if (st != SL_OK) {
    finish(op, st, err.msg);
    goto out;
  }
  if (op->replaced == 0) {
    finish(op, SL_OK, ""); /* every copy is where the metadata says */
    goto out;
  }
  if (op->lh == NULL) {
    Sluice__V1__LedgerInfo *dup = sl_lh_info_dup(op->info);
    st = dup ? sl_lh_create(op->c, op->serial, dup, op->version, SL_LEDGER_CLOSED, &op->lh,
                            &err)
             : sl_err_set(&err, SL_ENOMEM, "ledger: out of memory");
    if (st != SL_OK) {
      finish(op, st, err.msg);
      goto out;
    }
  }
  op->seg = 0;
  rr_segment(op);
out:
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
}

static void rr_get(rr_op *op) {
  Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  req.ledger_id = op->ledger_id;
  if (meta_call(op, SL_METADATA_SERVICE_GET_LEDGER, &req.base, got_ledger) != SL_OK)
    finish(op, SL_EUNAVAIL, "ledger: metadata call failed");
}

static void listed(sl_status st, const char *details, void *arg) {
  rr_op *op = op_of(arg);
  if (!op) return;
  if (st != SL_OK)
    finish(op, st, details);
  else
    rr_get(op);
}

/* ------------------------------------------------------------------ COPY */

static void rr_chunk(rr_op *op);
static void rr_update(rr_op *op);

static bool cancelled(const rr_op *op) {
  return op->cancel && atomic_load(op->cancel);
}

/* Between chunks: stop if asked, wait while ahead of the rate (at most a
 * second per wait, so a cancel is seen), else read the next chunk. */
static void chunk_next(rr_op *op) {
  if (cancelled(op)) {
    finish(op, SL_ECANCELED, "ledger: re-replication cancelled");
    return;
  }
  int64_t wait = 0;
  if (op->bps) {
    int64_t due_ms = (int64_t)(op->bytes * 1000 / op->bps);
    wait = due_ms - (sl_clock_mono_ms() - op->start_ms);
  }
  if (wait > 0) {
    sl_timer_stop(&op->deadline); /* pacing is not a lack of progress */
    sl_timer_start(&op->pace, wait < 1000 ? wait : 1000);
    return;
  }
  sl_timer_start(&op->deadline, op->c->opts.recovery_timeout_ms);
  rr_chunk(op);
}

static void pace_run(void *arg) {
  rr_op *op = arg;
  if (!op->finished) chunk_next(op);
}

/* The chunk is read and acked: next chunk, or next segment. */
static void chunk_done(rr_op *op) {
  if (op->finished || op->reading || op->unacked) return;
  op->next = op->chunk_last + 1;
  if (op->next > op->seg_end) {
    drop_streams(op);
    op->seg++;
    rr_segment(op);
  } else {
    chunk_next(op);
  }
}

static void copy_failed(rr_op *op, uint32_t s, sl_status st, const char *details) {
  char msg[256];
  snprintf(msg, sizeof(msg), "ledger %" PRIu64 ": copy to bookie %s failed: %s", op->ledger_id,
           op->plan[op->seg].to[s], details && details[0] ? details : sl_status_str(st));
  finish(op, st, msg);
}

static void st_on_message(sl_rpc_astream *s, const ProtobufCMessage *msg, void *arg) {
  (void)s;
  rr_stream *ctx = arg;
  rr_op *op = ctx->op;
  if (ctx->done || op->finished) return;
  const Sluice__V1__AddEntryResponse *r = (const Sluice__V1__AddEntryResponse *)msg;
  sl_status st = sl_lc_add_status(r);
  if (st != SL_OK) {
    copy_failed(op, ctx->slot, st, r->error);
    return;
  }
  op->unacked--;
  op->copied++;
  sl_timer_start(&op->deadline, op->c->opts.recovery_timeout_ms); /* progress */
  chunk_done(op);
}

static void st_on_done(sl_rpc_astream *s, sl_status st, const char *details, void *arg) {
  (void)s;
  rr_stream *ctx = arg;
  if (ctx->done || ctx->op->finished) return;
  copy_failed(ctx->op, ctx->slot, st == SL_OK ? SL_EUNAVAIL : st, details);
}

static void st_on_release(void *arg) {
  rr_stream *ctx = arg;
  rr_op *op = ctx->op;
  free(ctx);
  op_put(op);
}

static sl_status st_open(rr_op *op, uint32_t s) {
  sl_rpc_channel *ch = sl_lc_channel(op->c, op->plan[op->seg].to[s]);
  if (!ch) return SL_EUNAVAIL;
  rr_stream *ctx = calloc(1, sizeof(*ctx));
  if (!ctx) return SL_ENOMEM;
  ctx->op = op;
  ctx->slot = s;
  sl_rpc_call_opts o = sl_lc_bookie_opts(op->c, op->serial, 0);
  const sl_rpc_astream_handler h = {st_on_message, NULL, st_on_done, st_on_release};
  sl_status st = sl_rpc_astream_open(ch, SL_BOOKIE_SERVICE_ADD_ENTRY, NULL, &o, &h, ctx,
                                     &op->st[s], NULL);
  if (st != SL_OK) {
    free(ctx);
    return st;
  }
  op->stctx[s] = ctx;
  op->outstanding++;
  return SL_OK;
}

static void on_entry(int64_t entry, const void *data, size_t len, void *arg) {
  rr_op *op = arg;
  if (op->finished) return;
  const rr_seg *p = &op->plan[op->seg];
  Sluice__V1__AddEntryRequest req = SLUICE__V1__ADD_ENTRY_REQUEST__INIT;
  req.ledger_id = op->ledger_id;
  req.entry_id = entry;
  req.lac = entry - 1;
  req.payload.data = (uint8_t *)data;
  req.payload.len = len;
  req.crc32c = sl_entry_crc(op->ledger_id, entry, data, len);
  req.epoch = op->epoch;
  req.password = op->info->password;
  req.recovery = true;
  req.tag = (uint64_t)entry;
  for (uint32_t i = 0; i < op->q.qw && !op->finished; i++) {
    uint32_t s = sl_quorum_slot(&op->q, entry, i);
    if (!(p->mask & bit(s))) continue;
    sl_status st = sl_rpc_astream_send(op->st[s], &req.base);
    if (st != SL_OK) {
      copy_failed(op, s, st, "copy not sent");
      return;
    }
    op->unacked++;
    op->bytes += len;
  }
}

static void on_read_done(sl_status st, const char *details, void *arg) {
  rr_op *op = op_of(arg);
  if (!op) return;
  op->reading = false;
  if (st != SL_OK) {
    finish(op, st, details);
    return;
  }
  chunk_done(op);
}

/* Entries for the next chunk: CHUNK, or with a rate bound CHUNK_MS worth
 * at the average copy size so far (one entry until a size is known). */
static int64_t chunk_entries(const rr_op *op) {
  if (!op->bps) return CHUNK;
  if (op->copied == 0) return 1;
  uint64_t avg = op->bytes / op->copied + 1; /* every copy sent is acked here */
  uint64_t n = op->bps * CHUNK_MS / 1000 / avg;
  return n < 1 ? 1 : n > CHUNK ? CHUNK : (int64_t)n;
}

static void rr_chunk(rr_op *op) {
  int64_t n = chunk_entries(op);
  op->chunk_last = op->next + n - 1 < op->seg_end ? op->next + n - 1 : op->seg_end;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_read_async(op->lh, op->next, op->chunk_last, on_entry, on_read_done,
                                      op, &err);
  if (st != SL_OK) {
    finish(op, st, err.msg);
    return;
  }
  op->outstanding++;
  op->reading = true;
}

/* Copies the next segment that has positions to replace, or updates. */
static void rr_segment(rr_op *op) {
  const Sluice__V1__LedgerInfo *i = op->info;
  for (; op->seg < i->n_ensembles; op->seg++) {
    const rr_seg *p = &op->plan[op->seg];
    int64_t first = i->ensembles[op->seg]->first_entry;
    int64_t end = op->seg + 1 < i->n_ensembles ? i->ensembles[op->seg + 1]->first_entry - 1
                                               : i->last_entry_id;
    if (end > i->last_entry_id) end = i->last_entry_id;
    if (!p->mask || end < first) continue; /* nothing held there */
    for (uint32_t s = 0; s < op->q.e; s++) {
      if (!(p->mask & bit(s))) continue;
      sl_status st = st_open(op, s);
      if (st != SL_OK) {
        copy_failed(op, s, st, "cannot open a stream");
        return;
      }
    }
    op->next = first;
    op->seg_end = end;
    rr_chunk(op);
    return;
  }
  rr_update(op);
}

/* ---------------------------------------------------------------- UPDATE */

static void update_done(sl_status st, const char *details, ProtobufCMessage *resp,
                        void *arg) {
  rr_op *op = op_of(arg);
  if (op) {
    if (st == SL_OK)
      finish(op, SL_OK, "");
    else if (st == SL_EVERSION && ++op->cas_tries < MAX_CAS_TRIES)
      rr_get(op); /* plans again; copies already made are idempotent */
    else
      finish(op, st == SL_EDELETED ? SL_ENOTFOUND : st, details);
  }
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
}

static void rr_update(rr_op *op) {
  const Sluice__V1__LedgerInfo *cur = op->info;
  size_t n = cur->n_ensembles, old_r = cur->n_rereplications;
  Sluice__V1__EnsembleSegment *segs = calloc(n, sizeof(*segs));
  Sluice__V1__EnsembleSegment **ens = calloc(n, sizeof(*ens));
  char **ids = calloc(n * op->q.e, sizeof(*ids)), **inst = calloc(n * op->q.e, sizeof(*inst));
  Sluice__V1__Rereplication *recs = calloc(op->replaced, sizeof(*recs));
  Sluice__V1__Rereplication **rr = calloc(old_r + op->replaced, sizeof(*rr));
  if (!segs || !ens || !ids || !inst || !recs || !rr) {
    finish(op, SL_ENOMEM, "ledger: out of memory");
    goto out;
  }
  if (old_r) memcpy(rr, cur->rereplications, old_r * sizeof(*rr));
  size_t nr = 0;
  int64_t now = sl_clock_wall_ms();
  for (size_t k = 0; k < n; k++) {
    const Sluice__V1__EnsembleSegment *g = cur->ensembles[k];
    segs[k] = *g;
    ens[k] = &segs[k];
    segs[k].bookie_ids = &ids[k * op->q.e];
    bool with_inst = g->n_instance_ids == op->q.e;
    segs[k].instance_ids = with_inst ? &inst[k * op->q.e] : NULL;
    for (uint32_t s = 0; s < op->q.e; s++) {
      bool moved = op->plan[k].mask & bit(s);
      ids[k * op->q.e + s] = moved ? op->plan[k].to[s] : g->bookie_ids[s];
      if (with_inst) inst[k * op->q.e + s] = moved ? op->plan[k].inst[s] : g->instance_ids[s];
      if (!moved) continue;
      sluice__v1__rereplication__init(&recs[nr]);
      recs[nr].segment = (uint32_t)k;
      recs[nr].from_bookie = g->bookie_ids[s];
      recs[nr].to_bookie = op->plan[k].to[s];
      recs[nr].time_ms = now;
      rr[old_r + nr] = &recs[nr];
      nr++;
    }
  }
  Sluice__V1__LedgerInfo info = *cur;
  info.ensembles = ens;
  info.rereplications = rr;
  info.n_rereplications = old_r + nr;
  Sluice__V1__UpdateLedgerRequest req = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  req.info = &info;
  req.expected_version = op->version;
  req.epoch = 0; /* auto-recovery owns no partition */
  req.kind = UPDATE_REREPLICATE;
  if (meta_call(op, SL_METADATA_SERVICE_UPDATE_LEDGER, &req.base, update_done) != SL_OK)
    finish(op, SL_EUNAVAIL, "ledger: metadata call failed");
out:
  free(segs);
  free(ens);
  free(ids);
  free(inst);
  free(recs);
  free(rr);
}

/* ------------------------------------------------------------------- API */

static void start_run(void *arg) {
  rr_op *op = arg;
  sl_timer_start(&op->deadline, op->c->opts.recovery_timeout_ms);
  op->start_ms = sl_clock_mono_ms();
  op->outstanding++;
  sl_lc_refresh(op->c, op->serial, true, listed, op);
  op_put(op); /* the start's count */
}

static sl_status copy_gone(rr_op *op, const char *const *gone) {
  size_t n = 0;
  while (gone && gone[n]) n++;
  op->gone = calloc(n ? n : 1, sizeof(char *));
  if (!op->gone) return SL_ENOMEM;
  for (; op->n_gone < n; op->n_gone++)
    if (!(op->gone[op->n_gone] = strdup(gone[op->n_gone]))) return SL_ENOMEM;
  return SL_OK;
}

sl_status sl_ledger_rereplicate_async(sl_ledger_client *c, uint64_t ledger_id,
                                      const sl_ledger_rereplicate_opts *opts,
                                      sl_ledger_rereplicate_cb cb, void *arg,
                                      sl_err *err) {
  if (!c || ledger_id == 0 || !opts || !cb)
    return sl_err_set(err, SL_EINVAL, "ledger: re-replication needs a ledger, options and "
                      "a callback");
  rr_op *op = calloc(1, sizeof(*op));
  if (!op) return sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
  sl_status st = copy_gone(op, opts->gone);
  if (st == SL_OK && opts->serial) {
    sl_serial_ref(opts->serial);
    op->serial = opts->serial;
  } else if (st == SL_OK) {
    st = sl_serial_create(&op->serial, err);
  }
  if (st != SL_OK) {
    for (size_t i = 0; i < op->n_gone; i++) free(op->gone[i]);
    free(op->gone);
    free(op);
    return st == SL_ENOMEM ? sl_err_set(err, st, "ledger: out of memory") : st;
  }
  op->c = c;
  op->ledger_id = ledger_id;
  op->bps = opts->bytes_per_second;
  op->cancel = opts->cancel;
  op->cb = cb;
  op->arg = arg;
  op->outstanding = 1;
  sl_timer_init(&op->deadline, op->serial, deadline_run, op);
  sl_timer_init(&op->pace, op->serial, pace_run, op);
  sl_serial_post(op->serial, start_run, op);
  return SL_OK;
}
