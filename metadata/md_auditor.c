/*
 * The auditor (DESIGN.md §4; the contract is proto/metadata.proto,
 * "auto-recovery"): one metadata replica at a time lists the CLOSED ledgers
 * whose copies on some bookies are to be replaced, as work items
 * under-replicated/<ledger id> that workers claim (md_rereplication.c).
 *
 * States (one thread, auditor_main):
 *   FOLLOWER  lease == 0. Every TTL/3 it reads the `auditor` key and, when
 *             there is none, grants a lease and creates the key bound to it
 *             (campaign). EEXIST: stays FOLLOWER.
 *   AUDITOR   lease != 0, key created at key_rev (win). Keeps the lease
 *             alive every TTL/3 (keep) and runs a pass every audit interval,
 *             the first at once (run_pass). Back to FOLLOWER (lose) when the
 *             lease is gone, when no keepalive succeeded for a TTL, or when
 *             the key is not the one it created. Stopping revokes the lease
 *             (resign), so another replica takes over within its TTL/3.
 *
 * A pass: read the registrations (bookies/) and the items; note which
 * bookies are gone since when; unless nothing can have changed
 * (invariant 7), read every ledger at one revision, page by page, and put,
 * rewrite or remove each ledger's item; remove items whose ledger is gone.
 * Every FULL_SCAN_EVERY passes a scan also tombstones orphan ledgers
 * (invariant 8).
 *
 * Invariants
 *   1. At most one replica writes as auditor: every write of a pass is a
 *      txn that also compares the `auditor` key's mod revision with the one
 *      this replica created, so a replica that lost the role (its lease
 *      lapsed, another created the key) writes nothing, whatever it thinks.
 *   2. An item is written only in a txn that finds its ledger at the
 *      revision the scan read and the item at the revision the pass read
 *      (or absent): it never names bookies from an older ledger, and never
 *      undoes a worker's FinishRereplication it did not see.
 *   3. A bookie counts as gone after `grace` from the first pass of any
 *      auditor that found it unregistered while known (named by a ledger,
 *      or registered at the pass before). Within a term that is measured
 *      on the monotonic clock. Across terms it is carried by the record
 *      bookies-gone/<id> (that first pass's wall-clock time), which a pass
 *      writes for every bookie it notes gone and deletes once the bookie
 *      is registered again or, after a scan, no ledger names it; a new
 *      auditor takes "gone since" from the record (never later than its
 *      own first sight), so a change of auditor does not restart the grace.
 *   4. A bookie registered with another instance id than the non-empty one
 *      a segment recorded is flagged at once: that copy was wiped.
 *   5. Only CLOSED ledgers have items. OPEN and IN_RECOVERY ones belong to
 *      their writer or recoverer, and a stale item of one is removed.
 *   6. An item is removed with its claim, in one txn (md_rereplication.c,
 *      invariant 3), only when the scan read its ledger with nothing to
 *      flag, or a read of the ledger's own key found it gone.
 *   7. A pass skips the ledgers only if none can need other work than at
 *      the last scan: no item exists, no bookie registered anew or with
 *      another instance, no gone bookie is past its grace, no OPEN or
 *      IN_RECOVERY ledger had a flagged bookie at the last scan (it may
 *      close), and fewer than FULL_SCAN_EVERY passes ran since the last
 *      scan (a bookie that came and went between two passes is seen by
 *      nobody else).
 *   8. A ledger is tombstoned only when md_orphans.c's rule finds it an
 *      orphan, in a guarded txn that finds its record at the revision the
 *      scan read; its item, if any, then goes in the same pass (sweep).
 *      The first scan of a term checks, then one scan in FULL_SCAN_EVERY
 *      passes.
 *
 * Threads: everything here belongs to the auditor thread, except
 * md->auditor_stop and md->audit_stats, which md->auditor_lock guards.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/map.h"
#include "common/metrics.h"
#include "metadata/service_int.h"

/* Invariant 7: at least one scan per this many passes. */
#define FULL_SCAN_EVERY 10

typedef struct gone {
  int64_t since_ms; /* monotonic: when it was first seen missing (invariant 3) */
  bool named;       /* named by a ledger in the scan under way */
  bool recorded;    /* bookies-gone/<id> exists (this term wrote or read it) */
} gone;

typedef struct sl_md_auditor {
  sl_md_service *md;
  pthread_t thread;
  int64_t ttl_s, ttl_ms, keep_ms, interval_ms, grace_ms;
  sl_md_key key;         /* the `auditor` key */
  int64_t lease;         /* 0 while FOLLOWER */
  int64_t key_rev;       /* mod revision of the key this replica created */
  int64_t last_keep_ms;  /* monotonic; last keepalive (or grant) that worked */
  int64_t next_keep_ms;  /* monotonic; next keepalive due */
  int64_t next_pass_ms;  /* monotonic; next pass due */
  /* Observations of this term as auditor (invariant 3), reset by lose. */
  bool scanned;          /* a scan completed since winning the role */
  unsigned since_scan;   /* passes since the last scan */
  bool pending;          /* the last scan saw a flagged non-CLOSED ledger */
  unsigned since_orphans; /* passes since the last orphan check */
  sl_map gone;           /* bookie id -> gone *, heap */
  sl_md_list prev;       /* registrations at the last completed pass */
} sl_md_auditor;

/* One work item as a pass read it. */
typedef struct item {
  uint64_t id;
  int64_t rev;
  Sluice__V1__UnderReplicated *msg; /* NULL if it did not decode */
  bool seen;                        /* its ledger was in the scan */
} item;

/* One pass's reading of the store and its counts. */
typedef struct pass {
  int64_t now_ms;   /* monotonic, at the start */
  int64_t wall_ms;  /* wall clock, at the start */
  sl_md_list regs;  /* bookie registrations, sorted by id */
  sl_md_kvs recs;   /* bookies-gone/ records, sorted by key */
  item *items;      /* sorted by id */
  size_t n_items;
  size_t ledgers;   /* ledgers scanned */
  size_t flagged;   /* items put or rewritten */
  size_t created;   /* of those, new ones */
  size_t removed;   /* items removed */
  size_t orphans;   /* orphan ledgers tombstoned */
  bool pending;     /* a non-CLOSED ledger has a flagged bookie */
  sl_md_orphans *orphan_rule; /* non-NULL: this scan checks for orphans */
} pass;

/* ---- metrics and stats ---- */

static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;
static sl_metrics_gauge *items_gauge, *auditor_gauge;
static sl_metrics_counter *passes_ok, *passes_failed, *orphans_total;

static void metrics_init(void) {
  sl_metrics *m = sl_metrics_default();
  static const char *const ok[] = {"outcome", "ok", NULL};
  static const char *const failed[] = {"outcome", "failed", NULL};
  sl_metrics_register_gauge(m, "sluice_metadata_under_replicated_ledgers",
                            "Work items (ledgers to re-replicate) after the auditor's last "
                            "pass; 0 on replicas that do not audit.",
                            NULL, &items_gauge, NULL);
  sl_metrics_register_gauge(m, "sluice_metadata_auditor",
                            "1 while this replica holds the auditor role, else 0.", NULL,
                            &auditor_gauge, NULL);
  sl_metrics_register_counter(m, "sluice_metadata_audit_passes_total",
                              "Audit passes by outcome.", ok, &passes_ok, NULL);
  sl_metrics_register_counter(m, "sluice_metadata_audit_passes_total",
                              "Audit passes by outcome.", failed, &passes_failed, NULL);
  sl_metrics_register_counter(m, "sluice_metadata_orphan_ledgers_deleted_total",
                              "Ledgers no list or cursor can ever name (created by an owner "
                              "that lost the partition before naming them), tombstoned.",
                              NULL, &orphans_total, NULL);
}

static void set_auditor(sl_md_auditor *a, bool on) {
  pthread_mutex_lock(&a->md->auditor_lock);
  a->md->audit_stats.auditor = on;
  pthread_mutex_unlock(&a->md->auditor_lock);
  sl_metrics_gauge_set(auditor_gauge, on);
  if (!on) sl_metrics_gauge_set(items_gauge, 0);
}

static void count_pass(sl_md_auditor *a, bool ok, bool scanned, size_t orphans) {
  pthread_mutex_lock(&a->md->auditor_lock);
  a->md->audit_stats.orphans += orphans;
  if (ok) a->md->audit_stats.passes++;
  if (!ok) a->md->audit_stats.failed++;
  if (ok && scanned) a->md->audit_stats.scans++;
  pthread_mutex_unlock(&a->md->auditor_lock);
  sl_metrics_counter_inc(ok ? passes_ok : passes_failed);
}

void sl_md_service_audit_stats(sl_md_service *md, sl_md_audit_stats *out) {
  pthread_mutex_lock(&md->auditor_lock);
  *out = md->audit_stats;
  pthread_mutex_unlock(&md->auditor_lock);
}

/* ---- the role ---- */

static bool stopping(sl_md_auditor *a) {
  pthread_mutex_lock(&a->md->auditor_lock);
  bool stop = a->md->auditor_stop;
  pthread_mutex_unlock(&a->md->auditor_lock);
  return stop;
}

/* Waits until the monotonic time `until_ms` or a stop; true on a stop. */
static bool wait_until(sl_md_auditor *a, int64_t until_ms) {
  sl_md_service *md = a->md;
  struct timespec until =
      sl_clock_deadline(CLOCK_MONOTONIC, (until_ms - sl_clock_mono_ms()) * 1000000);
  pthread_mutex_lock(&md->auditor_lock);
  while (!md->auditor_stop &&
         pthread_cond_timedwait(&md->auditor_cond, &md->auditor_lock, &until) != ETIMEDOUT) {
  }
  bool stop = md->auditor_stop;
  pthread_mutex_unlock(&md->auditor_lock);
  return stop;
}

static void free_gone(void *g) { free(g); }

/* Forgets this term's observations (invariant 3). */
static void forget(sl_md_auditor *a) {
  sl_map_release(&a->gone, free_gone);
  sl_md_list_release(&a->prev);
  a->scanned = false;
  a->since_scan = 0;
  a->pending = false;
}

/* AUDITOR -> FOLLOWER. The lease is revoked in case it still lives (the
 * key was deleted under it); usually it is gone already. */
static void lose(sl_md_auditor *a, const char *why) {
  sl_store_lease_revoke(a->md->store, a->lease, NULL); /* best effort */
  a->lease = 0;
  a->key_rev = 0;
  forget(a);
  set_auditor(a, false);
  sl_log(SL_LOG_WARN, "event=auditor_lost replica=%s reason=\"%s\"", a->md->replica_id, why);
}

static void win(sl_md_auditor *a, int64_t lease, int64_t rev, int64_t granted_ms) {
  a->lease = lease;
  a->key_rev = rev;
  a->last_keep_ms = granted_ms;
  a->next_keep_ms = granted_ms + a->keep_ms;
  a->next_pass_ms = sl_clock_mono_ms(); /* the first pass at once */
  a->since_orphans = FULL_SCAN_EVERY;   /* whose scan checks for orphans */
  set_auditor(a, true);
  sl_log(SL_LOG_INFO, "event=auditor_elected replica=%s ttl=%" PRId64, a->md->replica_id,
         a->ttl_s);
}

/* FOLLOWER: takes the role if nobody holds it. */
static void campaign(sl_md_auditor *a) {
  sl_store *store = a->md->store;
  sl_err err = SL_ERR_INIT;
  sl_store_kv kv = {0};
  sl_status st = sl_store_get(store, a->key.s, a->key.len, &kv, &err);
  sl_store_kv_release(&kv);
  pthread_mutex_lock(&a->md->auditor_lock);
  a->md->audit_stats.campaigns++;
  pthread_mutex_unlock(&a->md->auditor_lock);
  if (st == SL_OK) return; /* another replica audits */
  int64_t lease = 0, rev = 0, t0 = sl_clock_mono_ms();
  if (st == SL_ENOTFOUND) st = sl_store_lease_grant(store, a->ttl_s, &lease, NULL, &err);
  const char *id = a->md->replica_id;
  if (st == SL_OK) st = sl_store_create(store, a->key.s, a->key.len, id, strlen(id), lease, &rev,
                                        &err);
  if (st == SL_OK) {
    win(a, lease, rev, t0);
    return;
  }
  /* Lost the race (EEXIST), or the outcome is unknown: revoking undoes a
   * create that may have happened. */
  if (lease != 0) sl_store_lease_revoke(store, lease, NULL);
  if (st != SL_EEXIST)
    sl_log(SL_LOG_DEBUG, "event=auditor_campaign_failed error=\"%s\"", sl_err_msg(&err, st));
}

/* AUDITOR: renews the lease; loses the role when it is gone, or when no
 * renewal worked for a TTL (the lease may have lapsed meanwhile). */
static void keep(sl_md_auditor *a) {
  sl_err err = SL_ERR_INIT;
  int64_t t0 = sl_clock_mono_ms();
  sl_status st = sl_store_lease_keepalive(a->md->store, a->lease, NULL, &err);
  if (st == SL_OK) {
    a->last_keep_ms = t0;
    a->next_keep_ms = t0 + a->keep_ms;
  } else if (st == SL_ENOTFOUND) {
    lose(a, "lease gone");
  } else if (sl_clock_mono_ms() - a->last_keep_ms >= a->ttl_ms) {
    lose(a, "no keepalive for a ttl");
  } else {
    sl_log(SL_LOG_WARN, "event=auditor_keepalive_failed error=\"%s\"", sl_err_msg(&err, st));
    a->next_keep_ms = sl_clock_mono_ms() + a->keep_ms / 2;
  }
}

/* Mid-pass: keeps the lease alive when due; false once the role is gone. */
static bool held(sl_md_auditor *a) {
  if (a->lease != 0 && sl_clock_mono_ms() >= a->next_keep_ms) keep(a);
  return a->lease != 0;
}

/* Stopping: hands the role on at once. */
static void resign(sl_md_auditor *a) {
  forget(a);
  if (a->lease == 0) return;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_store_lease_revoke(a->md->store, a->lease, &err);
  sl_log(st == SL_OK || st == SL_ENOTFOUND ? SL_LOG_INFO : SL_LOG_WARN,
         "event=auditor_resigned replica=%s revoke=\"%s\"", a->md->replica_id,
         sl_err_msg(&err, st));
  a->lease = 0;
  set_auditor(a, false);
}

/* ---- guarded writes (invariant 1) ---- */

/* A guarded txn failed a compare: SL_EVERSION when the item or ledger
 * moved (skip it: the next pass looks again), SL_EPRECOND when the role is
 * gone (the pass ends). */
static sl_status raced(sl_md_auditor *a, sl_err *err) {
  sl_store_kv kv = {0};
  sl_status st = sl_store_get(a->md->store, a->key.s, a->key.len, &kv, err);
  bool ours = st == SL_OK && kv.mod_revision == a->key_rev;
  sl_store_kv_release(&kv);
  if (st != SL_OK && st != SL_ENOTFOUND) return st;
  if (ours) return SL_EVERSION;
  lose(a, "auditor key changed");
  return sl_err_set(err, SL_EPRECOND, "auditor: lost the role");
}

static sl_status guarded_txn(sl_md_auditor *a, const sl_store_cmp *cmps, size_t n_cmps,
                             const sl_store_op *ops, size_t n_ops, sl_err *err) {
  sl_store_cmp all[4];
  SL_ASSERT(n_cmps < 4);
  memcpy(all, cmps, n_cmps * sizeof(*cmps));
  all[n_cmps] = (sl_store_cmp){a->key.s, a->key.len, a->key_rev};
  sl_status st = sl_store_txn(a->md->store, all, n_cmps + 1, ops, n_ops, NULL, err);
  return st == SL_EVERSION ? raced(a, err) : st;
}

static sl_md_key id_key(const char *prefix, uint64_t id) {
  sl_md_key k;
  sl_md_key_fmt(&k, "%s%" PRIu64, prefix, id);
  return k;
}

/* Invariant 2: puts the item of ledger `id` (read at ledger_rev) naming
 * `ids`; it keeps the first listing time of the item it replaces. */
static sl_status put_item(sl_md_auditor *a, uint64_t id, int64_t ledger_rev, const item *it,
                          char **ids, size_t n, sl_err *err) {
  Sluice__V1__UnderReplicated u = SLUICE__V1__UNDER_REPLICATED__INIT;
  u.ledger_id = id;
  u.n_bookie_ids = n;
  u.bookie_ids = ids;
  u.since_ms = it != NULL && it->msg != NULL ? it->msg->since_ms : sl_clock_wall_ms();
  size_t len;
  uint8_t *buf = sl_md_pack(&u.base, &len);
  sl_md_key ik = id_key(SL_MD_ITEMS, id), lk = id_key("ledgers/", id);
  sl_store_cmp cmps[2] = {{ik.s, ik.len, it != NULL ? it->rev : SL_STORE_REV_ABSENT},
                          {lk.s, lk.len, ledger_rev}};
  sl_store_op op = {SL_STORE_OP_PUT, ik.s, ik.len, buf, len, 0};
  sl_status st = guarded_txn(a, cmps, 2, &op, 1, err);
  free(buf);
  return st;
}

/* Invariant 6: removes the item and its claim. */
static sl_status remove_item(sl_md_auditor *a, const item *it, sl_err *err) {
  sl_md_key ik = id_key(SL_MD_ITEMS, it->id), ck = id_key(SL_MD_CLAIMS, it->id);
  sl_store_cmp cmp = {ik.s, ik.len, it->rev};
  sl_store_op ops[2] = {{SL_STORE_OP_DELETE, ik.s, ik.len, NULL, 0, 0},
                        {SL_STORE_OP_DELETE, ck.s, ck.len, NULL, 0, 0}};
  return guarded_txn(a, &cmp, 1, ops, 2, err);
}

/* ---- reading ---- */

static int cmp_item(const void *x, const void *y) {
  uint64_t a = ((const item *)x)->id, b = ((const item *)y)->id;
  return a < b ? -1 : a > b;
}

static item *find_item(const pass *p, uint64_t id) {
  item key = {.id = id};
  return bsearch(&key, p->items, p->n_items, sizeof(*p->items), cmp_item);
}

static void release_pass(pass *p) {
  for (size_t i = 0; i < p->n_items; i++)
    if (p->items[i].msg != NULL) protobuf_c_message_free_unpacked(&p->items[i].msg->base, NULL);
  free(p->items);
  sl_md_list_release(&p->regs);
  sl_md_orphans_free(p->orphan_rule);
  sl_md_kvs_release(&p->recs);
}

/* The items, decoded where they decode (one that does not is rewritten). */
static sl_status read_items(sl_md_auditor *a, pass *p, sl_err *err) {
  sl_md_key prefix;
  sl_md_kvs l;
  sl_md_key_fmt(&prefix, SL_MD_ITEMS);
  sl_status st = sl_md_kvs_read(a->md, &prefix, &l, err);
  if (st != SL_OK) return st;
  p->items = sl_xcalloc(l.n + 1, sizeof(*p->items));
  for (size_t i = 0; i < l.n; i++) {
    item *it = &p->items[p->n_items];
    if (!sl_md_parse_id((const char *)l.kvs[i].key + prefix.len, &it->id)) continue;
    it->rev = l.kvs[i].mod_revision;
    ProtobufCMessage *m = NULL;
    if (sl_md_unpack(&l.kvs[i], &sluice__v1__under_replicated__descriptor, &m, NULL) == SL_OK)
      it->msg = (Sluice__V1__UnderReplicated *)m;
    p->n_items++;
  }
  sl_md_kvs_release(&l);
  qsort(p->items, p->n_items, sizeof(*p->items), cmp_item);
  return SL_OK;
}

static int cmp_str(const void *x, const void *y) {
  return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The registration of bookie id in l (sorted by id), or NULL. */
static const Sluice__V1__BookieInfo *find_reg(const sl_md_list *l, const char *id) {
  if (l->n == 0) return NULL; /* keys may be NULL */
  char *const *k = bsearch(&id, l->keys, l->n, sizeof(*l->keys), cmp_str);
  return k != NULL ? (const Sluice__V1__BookieInfo *)l->msgs[k - l->keys] : NULL;
}

static const char *text(const char *s) { return s != NULL ? s : ""; }

/* The bookies-gone/ record of bookie id in the pass's reading, or NULL. */
static const sl_store_kv *find_rec(const pass *p, const char *id) {
  size_t prefix = strlen(SL_MD_ROOT SL_MD_GONE);
  for (size_t i = 0; i < p->recs.n; i++)
    if (strcmp((const char *)p->recs.kvs[i].key + prefix, id) == 0) return &p->recs.kvs[i];
  return NULL;
}

/* The entry of a bookie not registered now, made if new: gone since its
 * record says, or since now (invariant 3). */
static gone *note_gone(sl_md_auditor *a, const pass *p, const char *id) {
  gone *g = sl_map_get(&a->gone, id);
  if (g != NULL) return g;
  g = sl_xcalloc(1, sizeof(*g));
  g->since_ms = p->now_ms;
  const sl_store_kv *rec = find_rec(p, id);
  char *end = NULL;
  long long wall = rec != NULL ? strtoll((const char *)rec->value, &end, 10) : 0;
  if (rec != NULL && end != (const char *)rec->value && *end == '\0' && wall > 0) {
    g->recorded = true;
    if (wall < p->wall_ms) g->since_ms = p->now_ms - (p->wall_ms - wall);
  }
  sl_status st = sl_map_put(&a->gone, id, g, NULL);
  SL_ASSERT(st == SL_OK); /* servers abort on out-of-memory */
  return g;
}

/* Compares the registrations with the last pass's: the registered leave
 * the gone map, those no longer registered enter it (invariant 3). True
 * if a bookie registered anew or with another instance id. */
static bool note_regs(sl_md_auditor *a, const pass *p) {
  bool changed = false;
  for (size_t i = 0; i < p->regs.n; i++) {
    const Sluice__V1__BookieInfo *now = (const Sluice__V1__BookieInfo *)p->regs.msgs[i];
    const Sluice__V1__BookieInfo *was = find_reg(&a->prev, p->regs.keys[i]);
    if (was == NULL || strcmp(text(was->instance_id), text(now->instance_id)) != 0)
      changed = true;
    void *g = NULL;
    if (sl_map_remove(&a->gone, p->regs.keys[i], &g)) free(g);
  }
  for (size_t i = 0; i < a->prev.n; i++)
    if (find_reg(&p->regs, a->prev.keys[i]) == NULL) note_gone(a, p, a->prev.keys[i]);
  return changed;
}

static bool past_grace(const sl_md_auditor *a, const gone *g, int64_t now) {
  return now - g->since_ms >= a->grace_ms;
}

static bool orphans_due(const sl_md_auditor *a) {
  return a->since_orphans + 1 >= FULL_SCAN_EVERY;
}

/* Invariant 7. */
static bool need_scan(sl_md_auditor *a, const pass *p, bool regs_changed) {
  if (!a->scanned || regs_changed || a->pending || p->n_items > 0 ||
      a->since_scan + 1 >= FULL_SCAN_EVERY || orphans_due(a))
    return true;
  sl_map_iter it = SL_MAP_ITER_INIT;
  void *g;
  while (sl_map_next(&a->gone, &it, NULL, &g))
    if (past_grace(a, g, p->now_ms)) return true;
  return false;
}

/* ---- one ledger ---- */

/* Invariants 3 and 4 for one position of a segment. */
static bool flag(sl_md_auditor *a, const pass *p, const char *id, const char *recorded) {
  const Sluice__V1__BookieInfo *b = find_reg(&p->regs, id);
  if (b != NULL) return recorded[0] != '\0' && strcmp(text(b->instance_id), recorded) != 0;
  gone *g = note_gone(a, p, id);
  g->named = true;
  return past_grace(a, g, p->now_ms);
}

/* The flagged bookies of l, sorted and unique, borrowed from l; caller
 * frees the array. */
static char **flagged_ids(sl_md_auditor *a, const pass *p, const Sluice__V1__LedgerInfo *l,
                          size_t *n) {
  size_t cap = 0;
  for (size_t s = 0; s < l->n_ensembles; s++) cap += l->ensembles[s]->n_bookie_ids;
  char **ids = sl_xmalloc((cap + 1) * sizeof(*ids));
  *n = 0;
  for (size_t s = 0; s < l->n_ensembles; s++) {
    const Sluice__V1__EnsembleSegment *seg = l->ensembles[s];
    for (size_t i = 0; i < seg->n_bookie_ids; i++) {
      const char *rec = i < seg->n_instance_ids ? text(seg->instance_ids[i]) : "";
      if (flag(a, p, seg->bookie_ids[i], rec)) ids[(*n)++] = seg->bookie_ids[i];
    }
  }
  qsort(ids, *n, sizeof(*ids), cmp_str);
  size_t u = 0;
  for (size_t i = 0; i < *n; i++)
    if (u == 0 || strcmp(ids[u - 1], ids[i]) != 0) ids[u++] = ids[i];
  *n = u;
  return ids;
}

static bool same_ids(const item *it, char **ids, size_t n) {
  if (it->msg == NULL || it->msg->n_bookie_ids != n) return false;
  for (size_t i = 0; i < n; i++)
    if (strcmp(text(it->msg->bookie_ids[i]), ids[i]) != 0) return false;
  return true;
}

/* Brings ledger id's item in line with the ledger (read at rev). */
static sl_status audit_ledger(sl_md_auditor *a, pass *p, uint64_t id, int64_t rev,
                              const Sluice__V1__LedgerInfo *l, sl_err *err) {
  item *it = find_item(p, id);
  if (it != NULL) it->seen = true;
  size_t n;
  char **ids = flagged_ids(a, p, l, &n);
  bool closed = l->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED;
  sl_status st = SL_OK;
  if (!closed && n > 0) p->pending = true;
  if (closed && n > 0 && (it == NULL || !same_ids(it, ids, n))) {
    st = put_item(a, id, rev, it, ids, n, err);
    if (st == SL_OK) p->flagged++;
    if (st == SL_OK && it == NULL) p->created++;
  } else if ((!closed || n == 0) && it != NULL) {
    st = remove_item(a, it, err);
    if (st == SL_OK) p->removed++;
  }
  free(ids);
  return st == SL_EVERSION ? SL_OK : st; /* raced: the next pass looks again */
}

/* Invariant 8: tombstones ledger id (read at rev) if it is an orphan;
 * *gone tells whether it did. */
static sl_status reap_orphan(sl_md_auditor *a, pass *p, uint64_t id, int64_t rev,
                             const Sluice__V1__LedgerInfo *l, bool *gone, sl_err *err) {
  bool orphan = false;
  *gone = false;
  sl_status st = sl_md_orphan_check(p->orphan_rule, id, l, &orphan, err);
  if (st != SL_OK || !orphan) return st;
  sl_md_key lk = sl_md_ledger_key(id), tk = sl_md_tombstone_key(id);
  sl_store_cmp cmp = {lk.s, lk.len, rev};
  sl_store_op ops[2] = {{SL_STORE_OP_DELETE, lk.s, lk.len, NULL, 0, 0},
                        {SL_STORE_OP_PUT, tk.s, tk.len, "", 0, 0}};
  st = guarded_txn(a, &cmp, 1, ops, 2, err);
  if (st == SL_EVERSION) return SL_OK; /* it changed: the next check looks again */
  if (st != SL_OK) return st;
  *gone = true;
  p->orphans++;
  sl_metrics_counter_inc(orphans_total);
  sl_log(SL_LOG_INFO, "event=orphan_ledger_deleted ledger=%" PRIu64 " partition=%s "
         "owner_epoch=%" PRIu64 " state=%d", id, l->partition, l->owner_epoch, (int)l->state);
  return SL_OK;
}

static sl_status audit_kv(sl_md_auditor *a, pass *p, const sl_md_key *prefix,
                          const sl_store_kv *kv, sl_err *err) {
  uint64_t id;
  if (!sl_md_parse_id((const char *)kv->key + prefix->len, &id)) return SL_OK; /* not a ledger */
  p->ledgers++;
  ProtobufCMessage *m = NULL;
  sl_err uerr = SL_ERR_INIT;
  if (sl_md_unpack(kv, &sluice__v1__ledger_info__descriptor, &m, &uerr) != SL_OK) {
    /* Nothing to decide on: its item, if any, stays as it is. */
    item *it = find_item(p, id);
    if (it != NULL) it->seen = true;
    sl_log(SL_LOG_WARN, "event=audit_skipped ledger=%" PRIu64 " error=\"%s\"", id, uerr.msg);
    return SL_OK;
  }
  const Sluice__V1__LedgerInfo *l = (const Sluice__V1__LedgerInfo *)m;
  bool gone = false;
  sl_status st = SL_OK;
  if (p->orphan_rule != NULL) st = reap_orphan(a, p, id, kv->mod_revision, l, &gone, err);
  /* A reaped ledger's item stays unseen: sweep removes it. */
  if (st == SL_OK && !gone) st = audit_ledger(a, p, id, kv->mod_revision, l, err);
  protobuf_c_message_free_unpacked(m, NULL);
  return st;
}

/* ---- a pass ---- */

/* Every ledger, one page at a time, all pages at one revision. */
static sl_status scan(sl_md_auditor *a, pass *p, sl_err *err) {
  sl_md_key prefix;
  sl_md_key_fmt(&prefix, "ledgers/");
  uint8_t *start = NULL;
  size_t start_len = 0;
  int64_t rev = 0;
  sl_status st = SL_OK;
  bool more = true;
  while (more) {
    if (stopping(a)) st = sl_err_set(err, SL_ECANCELED, "auditor: stopping");
    else if (!held(a)) st = sl_err_set(err, SL_EPRECOND, "auditor: lost the role");
    if (st != SL_OK) break;
    sl_store_range_result r;
    st = sl_store_range_at(a->md->store, prefix.s, prefix.len, start, start_len,
                           sl_md_page_limit(a->md), rev, &r, err);
    if (st != SL_OK) break;
    if (rev == 0) rev = r.revision;
    for (size_t i = 0; i < r.n && st == SL_OK; i++) {
      if (!held(a)) st = sl_err_set(err, SL_EPRECOND, "auditor: lost the role");
      else st = audit_kv(a, p, &prefix, &r.kvs[i], err);
    }
    more = st == SL_OK && sl_md_next_page(&r, &start, &start_len);
    sl_store_range_result_release(&r);
  }
  free(start);
  return st;
}

/* Removes the items whose ledger the scan did not see and a read of its
 * key confirms gone (it may just have fallen between two pages). */
static sl_status sweep(sl_md_auditor *a, pass *p, sl_err *err) {
  for (size_t i = 0; i < p->n_items; i++) {
    item *it = &p->items[i];
    if (it->seen) continue;
    sl_md_key lk = id_key("ledgers/", it->id);
    sl_store_kv kv = {0};
    sl_status st = sl_store_get(a->md->store, lk.s, lk.len, &kv, err);
    sl_store_kv_release(&kv);
    if (st == SL_OK) continue;
    if (st != SL_ENOTFOUND) return st;
    st = remove_item(a, it, err);
    if (st == SL_OK) p->removed++;
    else if (st != SL_EVERSION) return st;
  }
  return SL_OK;
}

/* Invariant 3: records each gone bookie not recorded yet; deletes the
 * records of bookies registered again or, after a scan, no longer
 * watched. Runs before the pass's registrations become a->prev. */
static sl_status sync_records(sl_md_auditor *a, pass *p, bool scanned, sl_err *err) {
  sl_map_iter it = SL_MAP_ITER_INIT;
  const char *id;
  void *v;
  while (sl_map_next(&a->gone, &it, &id, &v)) {
    gone *g = v;
    if (g->recorded) continue;
    sl_md_key k;
    sl_md_key_fmt(&k, SL_MD_GONE "%s", id);
    char val[24];
    snprintf(val, sizeof(val), "%" PRId64, p->wall_ms - (p->now_ms - g->since_ms));
    sl_store_cmp cmp = {k.s, k.len, SL_STORE_REV_ABSENT};
    sl_store_op op = {SL_STORE_OP_PUT, k.s, k.len, val, strlen(val), 0};
    sl_status st = guarded_txn(a, &cmp, 1, &op, 1, err);
    /* SL_EVERSION: another term's record appeared; the next pass reads it.
     * Any other failure may have lost the role, and the map with it. */
    if (st != SL_OK && st != SL_EVERSION) return st;
    g->recorded = true;
  }
  size_t prefix = strlen(SL_MD_ROOT SL_MD_GONE);
  for (size_t i = 0; i < p->recs.n; i++) {
    const sl_store_kv *kv = &p->recs.kvs[i];
    const char *bookie = (const char *)kv->key + prefix;
    if (find_reg(&p->regs, bookie) == NULL && (!scanned || sl_map_get(&a->gone, bookie) != NULL))
      continue;
    sl_store_cmp cmp = {kv->key, kv->key_len, kv->mod_revision};
    sl_store_op op = {SL_STORE_OP_DELETE, kv->key, kv->key_len, NULL, 0, 0};
    sl_status st = guarded_txn(a, &cmp, 1, &op, 1, err);
    if (st != SL_OK && st != SL_EVERSION) return st;
  }
  return SL_OK;
}

/* After a full scan, bookies no ledger names need no watching. */
static void prune_gone(sl_md_auditor *a) {
  sl_map_iter it = SL_MAP_ITER_INIT;
  const char *id;
  void *v;
  while (sl_map_next(&a->gone, &it, &id, &v)) {
    gone *g = v;
    if (!g->named) {
      char copy[SL_MD_KEY_MAX];
      snprintf(copy, sizeof(copy), "%s", id); /* id goes with the entry */
      sl_map_remove(&a->gone, copy, NULL);
      free(g);
    }
  }
}

static void unname_gone(sl_md_auditor *a) {
  sl_map_iter it = SL_MAP_ITER_INIT;
  void *v;
  while (sl_map_next(&a->gone, &it, NULL, &v)) ((gone *)v)->named = false;
}

/* Scans (if needed) and sweeps; *scanned tells whether it read the ledgers. */
static sl_status audit(sl_md_auditor *a, pass *p, bool *scanned, sl_err *err) {
  sl_md_key prefix;
  sl_md_key_fmt(&prefix, "bookies/");
  sl_status st = sl_md_list_read(a->md, &prefix, &sluice__v1__bookie_info__descriptor,
                                 &p->regs, err);
  sl_md_key_fmt(&prefix, SL_MD_GONE);
  if (st == SL_OK) st = sl_md_kvs_read(a->md, &prefix, &p->recs, err);
  if (st == SL_OK) st = read_items(a, p, err);
  if (st != SL_OK) return st;
  bool changed = note_regs(a, p);
  *scanned = need_scan(a, p, changed);
  if (*scanned) {
    unname_gone(a);
    if (orphans_due(a)) p->orphan_rule = sl_md_orphans_new(a->md);
    st = scan(a, p, err);
    if (st == SL_OK) st = sweep(a, p, err);
    if (st != SL_OK) return st;
    prune_gone(a);
    a->pending = p->pending;
  }
  if ((st = sync_records(a, p, *scanned, err)) != SL_OK) return st;
  /* Committed only now: a failed pass leaves the change to the next. */
  sl_md_list_release(&a->prev);
  a->prev = p->regs;
  memset(&p->regs, 0, sizeof(p->regs));
  a->scanned = a->scanned || *scanned;
  a->since_scan = *scanned ? 0 : a->since_scan + 1;
  a->since_orphans = p->orphan_rule != NULL ? 0 : a->since_orphans + 1;
  return SL_OK;
}

static void run_pass(sl_md_auditor *a) {
  sl_err err = SL_ERR_INIT;
  pass p = {.now_ms = sl_clock_mono_ms(), .wall_ms = sl_clock_wall_ms()};
  bool scanned = false;
  sl_status st = audit(a, &p, &scanned, &err);
  size_t after = p.n_items + p.created - p.removed;
  release_pass(&p);
  a->next_pass_ms = sl_clock_mono_ms() + a->interval_ms;
  if (st == SL_ECANCELED) return; /* stopping: no outcome */
  if (st != SL_OK) {
    count_pass(a, false, scanned, p.orphans);
    sl_log(SL_LOG_WARN, "event=audit_failed error=\"%s\"", sl_err_msg(&err, st));
    return;
  }
  sl_metrics_gauge_set(items_gauge, (double)after); /* before the count tests await */
  count_pass(a, true, scanned, p.orphans);
  sl_log(p.flagged + p.removed + p.orphans > 0 ? SL_LOG_INFO : SL_LOG_DEBUG,
         "event=audit_pass scanned=%d ledgers=%zu flagged=%zu removed=%zu items=%zu "
         "orphans=%zu", (int)scanned, p.ledgers, p.flagged, p.removed, after, p.orphans);
}

/* ---- the thread ---- */

static void *auditor_main(void *arg) {
  sl_md_auditor *a = arg;
  (void)pthread_setname_np(pthread_self(), "md-auditor");
  for (;;) {
    if (a->lease == 0) campaign(a);
    else if (sl_clock_mono_ms() >= a->next_keep_ms) keep(a);
    if (a->lease != 0 && sl_clock_mono_ms() >= a->next_pass_ms) run_pass(a);
    int64_t wake = sl_clock_mono_ms() + a->keep_ms;
    if (a->lease != 0) wake = a->next_keep_ms < a->next_pass_ms ? a->next_keep_ms : a->next_pass_ms;
    if (wait_until(a, wake)) break;
  }
  resign(a);
  return NULL;
}

sl_status sl_md_service_auditor_start(sl_md_service *md, sl_err *err) {
  if (md->opts.audit_interval_ms == 0) return SL_OK; /* this replica never audits */
  if (md->auditor != NULL) return sl_err_set(err, SL_EEXIST, "metadata auditor: running");
  pthread_once(&metrics_once, metrics_init);
  sl_md_auditor *a = sl_xcalloc(1, sizeof(*a));
  a->md = md;
  a->ttl_s = md->opts.auditor_ttl_s;
  a->ttl_ms = a->ttl_s * 1000;
  a->keep_ms = a->ttl_ms / 3;
  a->interval_ms = md->opts.audit_interval_ms;
  a->grace_ms = md->opts.rereplication_grace_ms;
  sl_md_key_fmt(&a->key, SL_MD_AUDITOR);
  sl_map_init(&a->gone);
  pthread_mutex_lock(&md->auditor_lock);
  md->auditor_stop = false;
  pthread_mutex_unlock(&md->auditor_lock);
  if (pthread_create(&a->thread, NULL, auditor_main, a) != 0) {
    free(a);
    return sl_err_set(err, SL_EIO, "metadata auditor: cannot start a thread");
  }
  md->auditor = a;
  return SL_OK;
}

void sl_md_service_auditor_stop(sl_md_service *md) {
  if (md == NULL || md->auditor == NULL) return;
  pthread_mutex_lock(&md->auditor_lock);
  md->auditor_stop = true;
  pthread_cond_signal(&md->auditor_cond);
  pthread_mutex_unlock(&md->auditor_lock);
  pthread_join(md->auditor->thread, NULL);
  free(md->auditor); /* resign() released its maps */
  md->auditor = NULL;
}
