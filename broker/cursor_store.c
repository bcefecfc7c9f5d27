/* Cursor persistence: the metadata record, the cursor ledger (snapshots and
 * deltas), flushes, and recovery at open (cursor.h, "Where the state lives",
 * "Open", "Persistence").
 *
 * The INLINE limit. Measured on this machine (tests/cursor_persist_test.c
 * prints the figures): an UpdateCursor CAS through the metadata service costs
 * about 1 ms for a small record and grows with the value (etcd stores and
 * replicates the whole value on every rewrite, and its requests stop at
 * 1.5 MiB); a cursor-ledger append of a delta costs about the same as a small
 * CAS whatever the snapshot's size, because only the delta is written.
 * Encoding costs ~4 ms per 125 KB of state (1M entries, every other acked).
 * Rewriting 64 KiB into etcd 10 times a second is ~640 KB/s of etcd writes per
 * subscription, which is where etcd's own guidance on value sizes and our
 * compaction budget stop being comfortable; past it, deltas in a ledger keep
 * the per-flush cost proportional to what changed. So 64 KiB is the default
 * threshold (~500k scattered holes still fit inline, see ack_set.h sizes).
 *
 * Cursor ledger entries (varints as in ack_set.h):
 *   SNAPSHOT part  := 1 part parts md_ledger md_entry+1 chunk
 *   DELTA          := 2 md_ledger md_entry+1 ack-set encoding
 */
#include "broker/cursor_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "metadata.slrpc.h"

#define ENTRY_SNAPSHOT 1
#define ENTRY_DELTA 2
#define SNAPSHOT_PART_BYTES (1024 * 1024)
static const char PASSWORD[] = "sluice-cursor";

/* One flush (or the record write of an open). */
typedef struct flush {
  sl_cursor *c;
  sl_buf state;                /* full encoding (snapshot or inline) */
  sl_ml_pos md;                /* mark-delete the flush persists */
  sl_ledger *lh;               /* new cursor ledger being written */
  int parts, parts_done;
  bool failed;
} flush;

static void flush_free(flush *f) {
  sl_buf_release(&f->state);
  free(f);
}

static bool shrunk(const sl_cursor *c);
static void flush_finished(flush *f, sl_status st, const char *details);

/* ---- the record ---- */

typedef void (*record_cb)(sl_cursor *c, sl_status st, const char *details, void *arg);

typedef struct record_call {
  sl_cursor *c;
  record_cb cb;
  void *arg;
} record_call;

static void record_written(sl_status st, const char *details, ProtobufCMessage *resp,
                           void *arg) {
  record_call *rc = arg;
  sl_cursor *c = rc->c;
  if (st == SL_OK) c->version = ((Sluice__V1__CursorResponse *)resp)->version;
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  if (!c->destroyed) rc->cb(c, st, details, rc->arg);
  else rc->cb(c, SL_ECANCELED, "cursor destroyed", rc->arg);
  free(rc);
  cursor_unref(c);
}

/* CAS of the record: INLINE with `state`, or pointing at ledger_id. */
static void write_record(sl_cursor *c, sl_ml_pos md, const sl_buf *state, uint64_t ledger_id,
                         uint64_t snapshot_bytes, record_cb cb, void *arg) {
  Sluice__V1__Position pos = SLUICE__V1__POSITION__INIT;
  pos.ledger_id = md.ledger_id;
  pos.entry_id = md.entry_id;
  Sluice__V1__CursorLedgerRef ref = SLUICE__V1__CURSOR_LEDGER_REF__INIT;
  ref.ledger_id = ledger_id;
  ref.snapshot_entry = 0;
  ref.snapshot_bytes = snapshot_bytes;
  Sluice__V1__CursorInfo info = SLUICE__V1__CURSOR_INFO__INIT;
  info.partition = c->partition;
  info.subscription = c->subscription;
  info.mark_delete = &pos;
  info.type = (Sluice__V1__SubscriptionType)c->type;
  info.last_active_ms = sl_clock_wall_ms();
  if (ledger_id != 0) {
    info.ack_ledger = &ref;
  } else if (state != NULL) {
    info.ack_state.data = (uint8_t *)state->data;
    info.ack_state.len = state->len;
  }
  Sluice__V1__UpdateCursorRequest req = SLUICE__V1__UPDATE_CURSOR_REQUEST__INIT;
  req.info = &info;
  req.expected_version = c->version;
  req.epoch = c->epoch;
  record_call *rc = sl_xmalloc(sizeof(*rc));
  *rc = (record_call){c, cb, arg};
  sl_rpc_call_opts o = cursor_call_opts(c);
  sl_err err = SL_ERR_INIT;
  cursor_ref(c);
  sl_status st = sl_rpc_unary_start(c->metadata, SL_METADATA_SERVICE_UPDATE_CURSOR, &req.base,
                                    &o, record_written, rc, NULL, &err);
  if (st != SL_OK) record_written(st, err.msg, NULL, rc);
}

static void ledger_deleted(sl_status st, const char *details, ProtobufCMessage *resp,
                           void *arg) {
  sl_cursor *c = arg;
  if (st != SL_OK && st != SL_ENOTFOUND)
    sl_log(SL_LOG_WARN, "event=cursor_ledger_delete_failed partition=%s subscription=%s "
           "status=%s details=\"%s\"", c->partition, c->subscription, sl_status_str(st),
           details ? details : "");
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  cursor_unref(c);
}

/* Deletes a cursor ledger's metadata, leaving its tombstone: its bookies
 * drop their copies when their sweep sees it (bookie/ledger_sweep.h). A
 * failure leaves an orphan ledger, logged, never a record naming a deleted
 * one (invariant 4: the record moved off it first). */
static void delete_ledger(sl_cursor *c, uint64_t ledger_id) {
  if (ledger_id == 0) return;
  Sluice__V1__DeleteLedgerRequest req = SLUICE__V1__DELETE_LEDGER_REQUEST__INIT;
  req.ledger_id = ledger_id;
  req.epoch = c->epoch;
  sl_rpc_call_opts o = cursor_call_opts(c);
  sl_err err = SL_ERR_INIT;
  cursor_ref(c);
  sl_status st = sl_rpc_unary_start(c->metadata, SL_METADATA_SERVICE_DELETE_LEDGER, &req.base,
                                    &o, ledger_deleted, c, NULL, &err);
  if (st != SL_OK) ledger_deleted(st, err.msg, NULL, c);
}

typedef struct retire {
  sl_cursor *c;
  sl_ledger *lh;
  uint64_t ledger_id;
} retire;

static void retired_closed(sl_status st, const char *details, void *arg) {
  retire *r = arg;
  (void)st;
  (void)details;
  delete_ledger(r->c, r->ledger_id);
  sl_ledger_destroy(r->lh);
  cursor_unref(r->c);
  free(r);
}

/* The record no longer names this ledger: close our handle, then delete. */
static void retire_ledger(sl_cursor *c, sl_ledger *lh, uint64_t ledger_id) {
  if (lh == NULL) {
    delete_ledger(c, ledger_id);
    return;
  }
  retire *r = sl_xmalloc(sizeof(*r));
  *r = (retire){c, lh, ledger_id};
  cursor_ref(c);
  if (sl_ledger_close_async(lh, retired_closed, r, NULL) != SL_OK)
    retired_closed(SL_OK, NULL, r);
}

/* ---- flushes ---- */

static void put_md(sl_buf *b, sl_ml_pos md) {
  sl_ack_varint_put(b, md.ledger_id);
  sl_ack_varint_put(b, (uint64_t)(md.entry_id + 1));
}

void cursor_store_schedule(sl_cursor *c) {
  cursor_stats_sync(c);
  if (c->state != SL_CURSOR_ACTIVE || c->flushing || sl_timer_active(&c->timer)) return;
  int64_t delay = c->persist_delay_ms;
  int64_t rate = c->last_flush_ms + c->min_flush_interval_ms - sl_clock_mono_ms();
  sl_timer_start(&c->timer, rate > delay ? rate : delay);
}

static void stats_bump(sl_cursor *c, bool snapshot) {
  pthread_mutex_lock(&c->stats_mu);
  c->stats.flushes++;
  if (snapshot) c->stats.snapshots++;
  pthread_mutex_unlock(&c->stats_mu);
}

/* Another owner took over (invariant 5), or a failure nothing here fixes. */
static bool fencing(sl_status st) {
  return st == SL_EVERSION || st == SL_ESTALE_EPOCH || st == SL_EFENCED || st == SL_EPRECOND;
}

static void flush_finished(flush *f, sl_status st, const char *details) {
  sl_cursor *c = f->c;
  c->flushing = false;
  if (st == SL_OK) {
    c->durable_gen = f->c->flush_gen;
    cursor_stats_sync(c); /* before the receipts: they may read the stats */
    cursor_run_waiters(c, SL_OK);
  } else if (st == SL_ECANCELED && c->destroyed) {
    /* destroy already failed the waiters */
  } else if (fencing(st)) {
    cursor_lose(c, SL_CURSOR_FENCED, st, details);
  } else if (st == SL_EUNAVAIL || st == SL_ETIMEDOUT || st == SL_ECANCELED) {
    /* Retry with the whole state: a lost delta is covered by a snapshot. */
    c->need_snapshot = true;
    sl_log(SL_LOG_WARN, "event=cursor_flush_retry partition=%s subscription=%s status=%s "
           "details=\"%s\"", c->partition, c->subscription, sl_status_str(st),
           details ? details : "");
    if (c->state == SL_CURSOR_ACTIVE || c->state == SL_CURSOR_CLOSING)
      sl_timer_start(&c->timer, c->retry_ms);
  } else {
    cursor_lose(c, SL_CURSOR_FAILED, st, details);
  }
  cursor_stats_sync(c);
  flush_free(f);
  if (!c->destroyed) {
    if (c->finish != FINISH_NONE) cursor_store_finish(c);
    else if (c->gen > c->durable_gen && !sl_timer_active(&c->timer)) cursor_store_schedule(c);
  }
  cursor_unref(c);
}

static void delta_appended(sl_status st, int64_t entry_id, void *arg) {
  flush *f = arg;
  (void)entry_id;
  if (st != SL_OK && !f->c->destroyed) {
    /* The handle is FENCED or FAILED for good: stop using it. */
    sl_ledger_destroy(f->c->lh);
    f->c->lh = NULL;
  }
  if (st == SL_OK) stats_bump(f->c, false);
  flush_finished(f, st, st == SL_OK ? NULL : "cursor ledger append failed");
}

static void append_delta(flush *f, sl_ack_set *delta) {
  sl_cursor *c = f->c;
  sl_buf entry = SL_BUF_INIT;
  sl_ack_varint_put(&entry, ENTRY_DELTA);
  put_md(&entry, f->md);
  sl_ack_set_encode(delta, &entry);
  c->delta_bytes += entry.len;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_append(c->lh, entry.data, entry.len, delta_appended, f, NULL, &err);
  sl_buf_release(&entry);
  if (st != SL_OK) delta_appended(st, -1, f);
}

/* The record now points at the new ledger (or holds the state inline):
 * the old ledger can go. */
static void snapshot_recorded(sl_cursor *c, sl_status st, const char *details, void *arg) {
  flush *f = arg;
  if (st != SL_OK) {
    if (f->lh != NULL) {
      uint64_t id = sl_ledger_id(f->lh);
      sl_ledger_destroy(f->lh);
      if (!fencing(st)) delete_ledger(c, id); /* never named by the record */
    }
    flush_finished(f, st, details);
    return;
  }
  uint64_t old_id = c->ack_ledger;
  sl_ledger *old_lh = c->lh;
  c->lh = f->lh;
  c->ack_ledger = f->lh != NULL ? sl_ledger_id(f->lh) : 0;
  c->snapshot_bytes = f->state.len;
  c->delta_bytes = 0;
  f->lh = NULL;
  if (old_id != 0 && old_id != c->ack_ledger) retire_ledger(c, old_lh, old_id);
  else if (old_lh != NULL && old_lh != c->lh) sl_ledger_destroy(old_lh);
  stats_bump(c, c->ack_ledger != 0);
  sl_log(SL_LOG_DEBUG, "event=cursor_snapshot partition=%s subscription=%s bytes=%zu ledger=%"
         PRIu64, c->partition, c->subscription, f->state.len, c->ack_ledger);
  flush_finished(f, SL_OK, NULL);
}

static void part_appended(sl_status st, int64_t entry_id, void *arg) {
  flush *f = arg;
  (void)entry_id;
  if (st != SL_OK) f->failed = true;
  if (++f->parts_done < f->parts) return;
  if (f->failed || f->c->destroyed) {
    snapshot_recorded(f->c, f->c->destroyed ? SL_ECANCELED : SL_EUNAVAIL,
                      "cursor ledger snapshot append failed", f);
    return;
  }
  write_record(f->c, f->md, NULL, sl_ledger_id(f->lh), f->state.len, snapshot_recorded, f);
}

static void snapshot_ledger_created(sl_status st, const char *details, sl_ledger *lh,
                                    void *arg) {
  flush *f = arg;
  sl_cursor *c = f->c;
  if (st != SL_OK || c->destroyed) {
    sl_ledger_destroy(lh);
    flush_finished(f, st != SL_OK ? st : SL_ECANCELED, details);
    return;
  }
  f->lh = lh;
  f->parts = (int)((f->state.len + SNAPSHOT_PART_BYTES - 1) / SNAPSHOT_PART_BYTES);
  for (int i = 0; i < f->parts; i++) {
    size_t off = (size_t)i * SNAPSHOT_PART_BYTES;
    size_t n = f->state.len - off < SNAPSHOT_PART_BYTES ? f->state.len - off : SNAPSHOT_PART_BYTES;
    sl_buf entry = SL_BUF_INIT;
    sl_ack_varint_put(&entry, ENTRY_SNAPSHOT);
    sl_ack_varint_put(&entry, (uint64_t)i);
    sl_ack_varint_put(&entry, (uint64_t)f->parts);
    put_md(&entry, f->md);
    sl_buf_append(&entry, f->state.data + off, n);
    sl_err err = SL_ERR_INIT;
    st = sl_ledger_append(lh, entry.data, entry.len, part_appended, f, NULL, &err);
    sl_buf_release(&entry);
    if (st != SL_OK) {
      /* the parts already appended still call back; count the rest */
      f->failed = true;
      f->parts_done += f->parts - i - 1;
      part_appended(st, -1, f);
      return;
    }
  }
}

/* Writes the whole state: inline in the record when small, else a new
 * cursor ledger with a snapshot, then the record pointing at it. */
static void write_snapshot(flush *f) {
  sl_cursor *c = f->c;
  c->need_snapshot = false;
  sl_ack_set_encode(&c->acked, &f->state);
  size_t limit = c->ack_ledger != 0 ? c->inline_max / 2 : c->inline_max;
  if (f->state.len <= limit) {
    write_record(c, f->md, &f->state, 0, 0, snapshot_recorded, f);
    return;
  }
  sl_ledger_create_opts o = SL_LEDGER_CREATE_OPTS_INIT;
  o.ensemble_size = c->e;
  o.write_quorum = c->qw;
  o.ack_quorum = c->qa;
  o.epoch = c->epoch;
  o.partition = c->partition;
  o.password = PASSWORD;
  o.password_len = sizeof(PASSWORD) - 1;
  o.serial = c->serial;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_create_async(c->ledgers, &o, snapshot_ledger_created, f, &err);
  if (st != SL_OK) flush_finished(f, st, err.msg);
}

/* An upper bound of the encoded size, without encoding. */
static size_t encoded_bound(const sl_ack_set *s) {
  size_t n = 16;
  for (size_t i = 0; i < s->n_ledgers; i++) n += 20 + s->ledgers[i].n * (SL_ACK_BLOCK / 8 + 12);
  for (size_t i = 0; i < s->n_batches; i++) n += 32 + s->batches[i].size / 8;
  return n;
}

static bool shrunk(const sl_cursor *c) {
  return c->ack_ledger != 0 && encoded_bound(&c->acked) <= c->inline_max / 2;
}

void cursor_store_flush(sl_cursor *c) {
  if (c->flushing || c->gen == c->durable_gen) return;
  if (c->state != SL_CURSOR_ACTIVE && c->state != SL_CURSOR_CLOSING) return;
  sl_timer_stop(&c->timer);
  flush *f = sl_xcalloc(1, sizeof(*f));
  f->c = c;
  f->md = c->mark_delete;
  c->flushing = true;
  c->flush_gen = c->gen;
  c->last_flush_ms = sl_clock_mono_ms();
  cursor_ref(c);
  sl_ack_set delta = c->delta;
  sl_ack_set_init(&c->delta);
  size_t limit = c->snapshot_bytes > c->inline_max ? c->snapshot_bytes : c->inline_max;
  if (c->lh != NULL && !c->need_snapshot && !shrunk(c) &&
      sl_ledger_ensemble_changes(c->lh) == 0 && c->delta_bytes + encoded_bound(&delta) <= limit)
    append_delta(f, &delta);
  else
    write_snapshot(f);
  sl_ack_set_release(&delta);
}

/* ---- close and delete ---- */

static void finish_done(sl_cursor *c, sl_status st, const char *details) {
  c->finish = FINISH_NONE;
  if (c->state == SL_CURSOR_CLOSING) c->state = SL_CURSOR_CLOSED;
  cursor_stats_sync(c);
  if (c->finish_cb != NULL) c->finish_cb(st, details, c->finish_arg);
}

static void closed_ledger(sl_status st, const char *details, void *arg) {
  sl_cursor *c = arg;
  if (!c->destroyed) finish_done(c, st, details);
  cursor_unref(c);
}

static void cursor_deleted(sl_status st, const char *details, ProtobufCMessage *resp,
                           void *arg) {
  sl_cursor *c = arg;
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  if (st == SL_OK || st == SL_ENOTFOUND) {
    retire_ledger(c, c->lh, c->ack_ledger);
    c->lh = NULL;
    c->ack_ledger = 0;
    st = SL_OK;
  }
  if (!c->destroyed) finish_done(c, st, details);
  cursor_unref(c);
}

void cursor_store_finish(sl_cursor *c) {
  if (c->finish == FINISH_NONE || c->flushing) return;
  if (c->state == SL_CURSOR_FENCED || c->state == SL_CURSOR_FAILED) {
    finish_done(c, c->state == SL_CURSOR_FENCED ? SL_EFENCED : SL_EIO, "cursor lost");
    return;
  }
  if (c->finish == FINISH_CLOSE) {
    if (c->gen > c->durable_gen) {
      if (!sl_timer_active(&c->timer)) cursor_store_flush(c);
      return; /* the flush (or its retry) comes back here */
    }
    if (c->lh == NULL) {
      finish_done(c, SL_OK, NULL);
      return;
    }
    cursor_ref(c);
    if (sl_ledger_close_async(c->lh, closed_ledger, c, NULL) != SL_OK)
      closed_ledger(SL_OK, NULL, c);
    return;
  }
  Sluice__V1__DeleteCursorRequest req = SLUICE__V1__DELETE_CURSOR_REQUEST__INIT;
  req.partition = c->partition;
  req.subscription = c->subscription;
  req.epoch = c->epoch;
  sl_rpc_call_opts o = cursor_call_opts(c);
  sl_err err = SL_ERR_INIT;
  cursor_ref(c);
  sl_status st = sl_rpc_unary_start(c->metadata, SL_METADATA_SERVICE_DELETE_CURSOR, &req.base,
                                    &o, cursor_deleted, c, NULL, &err);
  if (st != SL_OK) cursor_deleted(st, err.msg, NULL, c);
}

/* ---- open and recovery ---- */

typedef struct recovery {
  sl_cursor *c;
  sl_ledger *lh;
  sl_buf snapshot;             /* parts gathered so far */
  uint64_t parts_seen, parts;
  sl_status st;
  char why[320];
} recovery;

static void open_done(sl_cursor *c, sl_status st, const char *details) {
  sl_cursor_open_cb cb = c->open_cb;
  if (st != SL_OK) {
    sl_log(SL_LOG_WARN, "event=cursor_open_failed partition=%s subscription=%s status=%s "
           "details=\"%s\"", c->partition, c->subscription, sl_status_str(st),
           details ? details : "");
    c->destroyed = true;
    cb(st, details, NULL, c->open_arg);
    cursor_unref(c);
    return;
  }
  cursor_advance(c);
  c->state = SL_CURSOR_ACTIVE;
  cursor_stats_sync(c);
  sl_log(SL_LOG_INFO, "event=cursor_open partition=%s subscription=%s mark_delete=%" PRIu64
         ":%" PRId64 " acked_beyond=%" PRIu64 " ack_ledger=%" PRIu64, c->partition,
         c->subscription, c->mark_delete.ledger_id, c->mark_delete.entry_id, c->acked.entries,
         c->ack_ledger);
  cb(SL_OK, NULL, c, c->open_arg);
}

static bool read_md(const uint8_t **p, const uint8_t *end, sl_ml_pos *md) {
  uint64_t l, e;
  if (!sl_ack_varint_get(p, end, &l) || !sl_ack_varint_get(p, end, &e) || e > INT64_MAX)
    return false;
  *md = (sl_ml_pos){l, (int64_t)e - 1};
  return true;
}

static void apply_md(sl_cursor *c, sl_ml_pos md) {
  if (sl_ml_pos_cmp(md, c->mark_delete) > 0) c->mark_delete = md;
}

static void recovered_entry(int64_t entry_id, const void *data, size_t len, void *arg) {
  recovery *r = arg;
  const uint8_t *p = data, *end = p + len;
  uint64_t type = 0, part = 0, parts = 0;
  sl_ml_pos md;
  sl_err err = SL_ERR_INIT;
  if (r->st != SL_OK) return;
  if (!sl_ack_varint_get(&p, end, &type)) type = 0;
  if (type == ENTRY_SNAPSHOT && sl_ack_varint_get(&p, end, &part) &&
      sl_ack_varint_get(&p, end, &parts) && read_md(&p, end, &md) && part == r->parts_seen &&
      (part == 0 || parts == r->parts)) {
    r->parts = parts;
    sl_buf_append(&r->snapshot, p, (size_t)(end - p));
    if (++r->parts_seen == parts) {
      apply_md(r->c, md);
      r->st = sl_ack_set_decode(&r->c->acked, r->snapshot.data, r->snapshot.len, &err);
      r->c->snapshot_bytes = r->snapshot.len;
    }
  } else if (type == ENTRY_DELTA && r->parts_seen == r->parts && r->parts > 0 &&
             read_md(&p, end, &md)) {
    apply_md(r->c, md);
    r->st = sl_ack_set_decode(&r->c->acked, p, (size_t)(end - p), &err);
    r->c->delta_bytes += len;
  } else {
    r->st = sl_err_set(&err, SL_ECORRUPT, "unexpected entry");
  }
  if (r->st != SL_OK)
    snprintf(r->why, sizeof(r->why), "cursor ledger %" PRIu64 " entry %" PRId64 ": %s",
             sl_ledger_id(r->lh), entry_id, err.msg);
}

static void recovery_end(recovery *r, sl_status st, const char *details) {
  sl_cursor *c = r->c;
  if (st == SL_OK && r->st != SL_OK) st = r->st, details = r->why;
  if (st == SL_OK && r->parts_seen != r->parts)
    st = SL_ECORRUPT, details = "cursor ledger: incomplete snapshot";
  if (st == SL_OK) sl_ack_set_drop_through(&c->acked, c->mark_delete.ledger_id,
                                           c->mark_delete.entry_id);
  sl_ledger_destroy(r->lh);
  /* The recovered ledger is CLOSED: the next flush writes a new one. */
  c->need_snapshot = true;
  open_done(c, st, details);
  sl_buf_release(&r->snapshot);
  free(r);
}

static void recovery_read(sl_status st, const char *details, void *arg) {
  recovery_end(arg, st, details);
}

static void ledger_recovered(sl_status st, const char *details, sl_ledger *lh, void *arg) {
  recovery *r = arg;
  r->lh = lh;
  if (st != SL_OK) {
    recovery_end(r, st == SL_ENOTFOUND ? SL_ECORRUPT : st, details);
    return;
  }
  int64_t last = sl_ledger_last_entry(lh);
  if (last < 0) {
    recovery_end(r, SL_OK, NULL);
    return;
  }
  sl_err err = SL_ERR_INIT;
  st = sl_ledger_read_async(lh, 0, last, recovered_entry, recovery_read, r, &err);
  if (st != SL_OK) recovery_end(r, st, err.msg);
}

static void recover_ledger(sl_cursor *c, uint64_t ledger_id) {
  recovery *r = sl_xcalloc(1, sizeof(*r));
  r->c = c;
  c->ack_ledger = ledger_id;
  sl_ledger_recover_opts o = {.epoch = c->epoch, .serial = c->serial};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_recover_async(c->ledgers, ledger_id, &o, ledger_recovered, r, &err);
  if (st != SL_OK) recovery_end(r, st, err.msg);
}

static void record_created(sl_cursor *c, sl_status st, const char *details, void *arg) {
  (void)arg;
  open_done(c, st, details);
}

static void record_read(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  sl_cursor *c = arg;
  Sluice__V1__CursorResponse *r = (Sluice__V1__CursorResponse *)resp;
  sl_err err = SL_ERR_INIT;
  if (st == SL_ENOTFOUND) {
    c->version = 0;
    write_record(c, c->mark_delete, NULL, 0, 0, record_created, NULL);
  } else if (st != SL_OK) {
    open_done(c, st, details);
  } else {
    c->version = r->version;
    const Sluice__V1__CursorInfo *info = r->info;
    if (info != NULL && info->mark_delete != NULL)
      c->mark_delete = (sl_ml_pos){info->mark_delete->ledger_id, info->mark_delete->entry_id};
    if (info != NULL && info->ack_ledger != NULL && info->ack_ledger->ledger_id != 0) {
      recover_ledger(c, info->ack_ledger->ledger_id);
    } else {
      st = info == NULL ? SL_OK
                        : sl_ack_set_decode(&c->acked, info->ack_state.data, info->ack_state.len,
                                            &err);
      if (info != NULL) c->snapshot_bytes = info->ack_state.len;
      sl_ack_set_drop_through(&c->acked, c->mark_delete.ledger_id, c->mark_delete.entry_id);
      open_done(c, st, st == SL_OK ? NULL : err.msg);
    }
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
}

void cursor_store_open(sl_cursor *c) {
  Sluice__V1__GetCursorRequest req = SLUICE__V1__GET_CURSOR_REQUEST__INIT;
  req.partition = c->partition;
  req.subscription = c->subscription;
  sl_rpc_call_opts o = cursor_call_opts(c);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_unary_start(c->metadata, SL_METADATA_SERVICE_GET_CURSOR, &req.base, &o,
                                    record_read, c, NULL, &err);
  if (st != SL_OK) record_read(st, err.msg, NULL, c);
}
