/* Managed ledger trim: drop ledgers every cursor has passed, once they are
 * outside retention (managed_ledger.h, "Trim", invariant 6). */
#include "broker/managed_ledger_int.h"

#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "metadata.slrpc.h"

#define DEFAULT_TRIM_INTERVAL_MS 60000

typedef struct trim {
  sl_ml *ml;
  sl_ml_done_cb cb;
  void *arg;
  uint64_t *deleted;  /* ledger ids removed from the list */
  size_t n_deleted;
} trim;

static void trim_finish(trim *t, sl_status st, const char *details) {
  sl_ml *ml = t->ml;
  ml->trim_busy = false;
  if (t->cb != NULL && !ml->destroyed) t->cb(st, details, t->arg);
  free(t->deleted);
  free(t);
  ml_unref(ml);
}

/* The ledger's metadata goes after the list no longer names it; a failure
 * here leaves an orphan (logged), never a dangling list entry. */
static void ledger_deleted(sl_status st, const char *details, ProtobufCMessage *resp,
                           void *arg) {
  sl_ml *ml = arg;
  if (st != SL_OK && st != SL_ENOTFOUND)
    sl_log(SL_LOG_WARN, "event=ml_trim_delete_failed partition=%s status=%s details=\"%s\"",
           ml->partition, sl_status_str(st), details != NULL ? details : "");
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  ml_unref(ml);
}

static void trimmed_stats_fn(sl_ml_stats *s, void *arg) {
  s->ledgers_trimmed += *(size_t *)arg;
}

static void list_trimmed(sl_ml *ml, sl_status st, const char *details, void *arg) {
  trim *t = arg;
  if (st == SL_OK) {
    for (size_t i = 0; i < t->n_deleted; i++) {
      Sluice__V1__DeleteLedgerRequest req = SLUICE__V1__DELETE_LEDGER_REQUEST__INIT;
      req.ledger_id = t->deleted[i];
      req.epoch = ml->epoch;
      sl_rpc_call_opts o = ml_call_opts(ml);
      sl_err err = SL_ERR_INIT;
      ml_ref_get(ml);
      sl_status dst = sl_rpc_unary_start(ml->metadata, SL_METADATA_SERVICE_DELETE_LEDGER,
                                         &req.base, &o, ledger_deleted, ml, NULL, &err);
      if (dst != SL_OK) ledger_deleted(dst, err.msg, NULL, ml);
      sl_log(SL_LOG_INFO, "event=ml_trimmed partition=%s ledger=%llu", ml->partition,
             (unsigned long long)t->deleted[i]);
    }
    ml_stats_update(ml, trimmed_stats_fn, &t->n_deleted);
  }
  trim_finish(t, st, details);
}

/* Passed by a cursor at mark_delete: every entry of ledger r is at or
 * before it. */
static bool passed(const ml_ref *r, const Sluice__V1__Position *md) {
  if (md == NULL) return false;
  if (md->ledger_id != r->id) return md->ledger_id > r->id;
  return md->entry_id >= r->entries - 1;
}

static void cursors_listed(sl_status st, const char *details, ProtobufCMessage *resp,
                           void *arg) {
  trim *t = arg;
  sl_ml *ml = t->ml;
  const Sluice__V1__ListCursorsResponse *r = (const void *)resp;
  if (st != SL_OK || ml->destroyed ||
      (ml->state != SL_ML_WRITING && ml->state != SL_ML_ROLLING)) {
    if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
    trim_finish(t, st != SL_OK ? st : SL_EPRECOND, details);
    return;
  }
  int64_t now = sl_clock_wall_ms();
  uint64_t total = 0;
  for (size_t i = 0; i < ml->n_refs; i++) total += ml->refs_v[i].size;
  size_t k = 0; /* ledgers to drop from the front */
  uint64_t dropped_bytes = 0;
  /* Never the last ledger (the current one, or the one being rolled). */
  while (k + 1 < ml->n_refs) {
    const ml_ref *ref = &ml->refs_v[k];
    bool all_passed = true;
    for (size_t c = 0; c < r->n_cursors && all_passed; c++)
      all_passed = passed(ref, r->cursors[c]->mark_delete);
    if (!all_passed) break;
    /* Closed when the next one was created. */
    int64_t age = now - ml->refs_v[k + 1].ctime_ms;
    bool expired = ml->policy.retention_ms >= 0 && age >= ml->policy.retention_ms;
    bool over_size = ml->policy.retention_bytes >= 0 &&
                     total - dropped_bytes - ref->size >= (uint64_t)ml->policy.retention_bytes;
    if (!expired && !over_size) break;
    dropped_bytes += ref->size;
    k++;
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  if (k == 0) {
    trim_finish(t, SL_OK, NULL);
    return;
  }
  t->deleted = calloc(k, sizeof(*t->deleted));
  if (t->deleted == NULL) abort();
  for (size_t i = 0; i < k; i++) t->deleted[i] = ml->refs_v[i].id;
  t->n_deleted = k;
  memmove(ml->refs_v, ml->refs_v + k, (ml->n_refs - k) * sizeof(*ml->refs_v));
  ml->n_refs -= k;
  ml_write_list(ml, list_trimmed, t);
}

sl_status sl_ml_trim_async(sl_ml *ml, sl_ml_done_cb cb, void *arg, sl_err *err) {
  SL_ASSERT(sl_serial_running_here(ml->serial));
  if (ml->state != SL_ML_WRITING && ml->state != SL_ML_ROLLING)
    return sl_err_set(err, SL_EPRECOND, "partition %s: not writable", ml->partition);
  if (ml->trim_busy) return sl_err_set(err, SL_EBUSY, "partition %s: trim running",
                                       ml->partition);
  trim *t = calloc(1, sizeof(*t));
  if (t == NULL) abort();
  t->ml = ml;
  t->cb = cb;
  t->arg = arg;
  ml->trim_busy = true;
  ml_ref_get(ml);
  Sluice__V1__ListCursorsRequest req = SLUICE__V1__LIST_CURSORS_REQUEST__INIT;
  req.partition = ml->partition;
  sl_rpc_call_opts o = ml_call_opts(ml);
  sl_status st = sl_rpc_unary_start(ml->metadata, SL_METADATA_SERVICE_LIST_CURSORS,
                                    &req.base, &o, cursors_listed, t, NULL, err);
  if (st != SL_OK) {
    ml->trim_busy = false;
    free(t);
    ml_unref(ml);
  }
  return st;
}

void ml_trim_timer_start(sl_ml *ml) {
  int64_t every = ml->policy.trim_interval_ms;
  if (every < 0) return;
  sl_timer_start(&ml->trim_timer, every > 0 ? every : DEFAULT_TRIM_INTERVAL_MS);
}

void ml_trim_fired(void *arg) {
  sl_ml *ml = arg;
  if (ml->destroyed || (ml->state != SL_ML_WRITING && ml->state != SL_ML_ROLLING))
    return;
  if (!ml->trim_busy) sl_ml_trim_async(ml, NULL, NULL, NULL);
  ml_trim_timer_start(ml);
}
