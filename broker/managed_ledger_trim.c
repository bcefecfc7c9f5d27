/* Managed ledger trim: drop ledgers every cursor has passed, once they are
 * outside retention, and delete them from the bookies and the metadata
 * (managed_ledger.h, "Trim", invariant 6). */
#include "broker/managed_ledger_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "metadata.slrpc.h"

#define DEFAULT_TRIM_INTERVAL_MS 60000

/* The list property that names ledgers out of the list whose deletion has
 * not finished (decimal ids, comma-separated): the state mark that lets a
 * later pass, on this broker or the next owner, finish what a crash cut. */
#define TRIM_PROP_PREFIX "trim:"
#define TRIM_PROP_KEY TRIM_PROP_PREFIX "deleting"

typedef struct trim {
  sl_ml *ml;
  sl_ml_done_cb cb;
  void *arg;
  uint64_t *ids;      /* ledgers to delete: the mark's, then the new ones */
  bool *deleted;      /* ids[i] is gone from the bookies and the metadata */
  size_t n_ids;
  size_t n_new;       /* of which removed from the list by this pass */
  size_t outstanding; /* deletes in flight */
  sl_status del_st;   /* first delete failure */
  char details[192];
} trim;

static void trim_finish(trim *t, sl_status st, const char *details) {
  sl_ml *ml = t->ml;
  ml->trim_busy = false;
  if (t->cb != NULL && !ml->destroyed) t->cb(st, details, t->arg);
  free(t->ids);
  free(t->deleted);
  free(t);
  ml_unref(ml);
}

/* Ledger ids in the mark, appended to t->ids. */
static void mark_parse(trim *t, const char *v) {
  while (*v != '\0') {
    char *endp = NULL;
    unsigned long long id = strtoull(v, &endp, 10);
    if (endp == v) break; /* not ours to judge: a bad mark is ignored */
    t->ids = realloc(t->ids, (t->n_ids + 1) * sizeof(*t->ids));
    if (t->ids == NULL) abort();
    t->ids[t->n_ids++] = id;
    v = *endp == ',' ? endp + 1 : endp;
  }
}

/* Writes the mark (the ids whose deletion is not done; none: no mark) into
 * the next list write; cb runs after it. */
static sl_status mark_write(trim *t, sl_ml_done_cb cb, sl_err *err) {
  size_t cap = t->n_ids * 21 + 1, off = 0;
  char *v = sl_xcalloc(cap, 1);
  for (size_t i = 0; i < t->n_ids; i++)
    if (!t->deleted[i])
      off += (size_t)snprintf(v + off, cap - off, "%s%llu", off ? "," : "",
                              (unsigned long long)t->ids[i]);
  sl_ml_prop p = {TRIM_PROP_KEY, v};
  sl_status st = sl_ml_set_properties(t->ml, TRIM_PROP_PREFIX, &p, off ? 1 : 0, cb, t, err);
  free(v);
  return st;
}

static void unmarked(sl_status st, const char *details, void *arg) {
  trim *t = arg;
  if (st == SL_OK && t->del_st != SL_OK) trim_finish(t, t->del_st, t->details);
  else trim_finish(t, st, details);
}

static void deleted_stats_fn(sl_ml_stats *s, void *arg) {
  s->ledgers_deleted += *(size_t *)arg;
}

static void all_deleted(trim *t) {
  sl_ml *ml = t->ml;
  size_t n = 0;
  for (size_t i = 0; i < t->n_ids; i++) n += t->deleted[i];
  ml_stats_update(ml, deleted_stats_fn, &n);
  if (ml->destroyed) {
    trim_finish(t, SL_ECANCELED, "managed ledger destroyed");
    return;
  }
  if (n == 0) { /* the mark stays as it is */
    trim_finish(t, t->del_st, t->details);
    return;
  }
  sl_err err = SL_ERR_INIT;
  sl_status st = mark_write(t, unmarked, &err);
  if (st != SL_OK) trim_finish(t, st, err.msg);
}

typedef struct del_arg {
  trim *t;
  size_t i;
} del_arg;

static void ledger_deleted(sl_status st, const char *details, void *arg) {
  del_arg *d = arg;
  trim *t = d->t;
  if (st == SL_OK) {
    t->deleted[d->i] = true;
    sl_log(SL_LOG_INFO, "event=ml_ledger_deleted partition=%s ledger=%llu",
           t->ml->partition, (unsigned long long)t->ids[d->i]);
  } else if (t->del_st == SL_OK) {
    /* Kept in the mark: the next pass tries again. */
    t->del_st = st;
    snprintf(t->details, sizeof(t->details), "%s", details != NULL ? details : "");
  }
  free(d);
  if (--t->outstanding == 0) all_deleted(t);
}

/* Deletes every marked ledger (bookies, then metadata: ledger.h), all at
 * once. */
static void delete_all(trim *t) {
  sl_ml *ml = t->ml;
  t->deleted = sl_xcalloc(t->n_ids, sizeof(*t->deleted));
  t->outstanding = 1; /* the loop's own count */
  for (size_t i = 0; i < t->n_ids; i++) {
    del_arg *d = sl_xcalloc(1, sizeof(*d));
    d->t = t;
    d->i = i;
    sl_ledger_delete_opts o = {ml->epoch, ml->serial};
    sl_err err = SL_ERR_INIT;
    t->outstanding++;
    sl_status st = sl_ledger_delete_async(ml->ledgers, t->ids[i], &o, ledger_deleted, d, &err);
    if (st != SL_OK) ledger_deleted(st, err.msg, d);
  }
  if (--t->outstanding == 0) all_deleted(t);
}

static void trimmed_stats_fn(sl_ml_stats *s, void *arg) {
  s->ledgers_trimmed += *(size_t *)arg;
}

/* The list without the trimmed ledgers and with the mark is stored. */
static void marked(sl_status st, const char *details, void *arg) {
  trim *t = arg;
  if (st != SL_OK) {
    trim_finish(t, st, details);
    return;
  }
  for (size_t i = t->n_ids - t->n_new; i < t->n_ids; i++)
    sl_log(SL_LOG_INFO, "event=ml_trimmed partition=%s ledger=%llu", t->ml->partition,
           (unsigned long long)t->ids[i]);
  ml_stats_update(t->ml, trimmed_stats_fn, &t->n_new);
  if (t->ml->destroyed) trim_finish(t, SL_ECANCELED, "managed ledger destroyed");
  else delete_all(t);
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
  for (size_t i = 0; i < ml->n_props; i++)
    if (strcmp(ml->props[i].key, TRIM_PROP_KEY) == 0) mark_parse(t, ml->props[i].value);
  if (k == 0 && t->n_ids == 0) {
    trim_finish(t, SL_OK, NULL);
    return;
  }
  if (k == 0) { /* only what an earlier pass left */
    delete_all(t);
    return;
  }
  /* Out of the list and into the mark in one CAS: from then on no reader
   * can find these ledgers, and whoever owns the list deletes them. */
  t->ids = realloc(t->ids, (t->n_ids + k) * sizeof(*t->ids));
  if (t->ids == NULL) abort();
  for (size_t i = 0; i < k; i++) t->ids[t->n_ids++] = ml->refs_v[i].id;
  t->n_new = k;
  t->deleted = sl_xcalloc(t->n_ids, sizeof(*t->deleted));
  memmove(ml->refs_v, ml->refs_v + k, (ml->n_refs - k) * sizeof(*ml->refs_v));
  ml->n_refs -= k;
  sl_err err = SL_ERR_INIT;
  sl_status wst = mark_write(t, marked, &err);
  free(t->deleted);
  t->deleted = NULL;
  if (wst != SL_OK) trim_finish(t, wst, err.msg);
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
  ml_roll_if_due(ml); /* an idle partition reaches the age limit too */
  ml_trim_timer_start(ml);
}
