/*
 * Garbage collection of the entry log: deleted ledgers leave dead bytes in
 * files shared with live ledgers. Like BookKeeper's GarbageCollectorThread.
 *
 * A round, for every file before the current one:
 *  - its usage (bytes per ledger) is read once, from the record stored when
 *    the file was sealed, or, if that is missing (a crash), by scanning the
 *    file and counting only records the index still points at; then kept,
 *    and later rounds only drop ledgers that have since been deleted;
 *  - a file with no live bytes is removed;
 *  - the first file whose live share is below gc_compact_ratio is compacted:
 *    its live records are copied to the current file, the copies synced,
 *    the index repointed, the index flushed, and only then the file removed.
 *
 * Invariants
 *  1. A file is removed only when no durable index points into it: every
 *     ledger with records in it is deleted (a delete removes the ledger's
 *     index and is in the journal until a checkpoint covers it), or its live
 *     records' new places are synced and their index flushed, and a walk of
 *     each of its live ledgers' index finds nothing left in the file.
 *  2. The collector repoints an index only under wmu and only if it still
 *     points at the record being moved, so a concurrent delete or rewrite
 *     always wins.
 *  3. A record that cannot be read keeps its file: compaction of that file
 *     stops, the error is logged, and the file is not compacted again for
 *     COMPACT_RETRY_MS while the others are. A file whose usage cannot be
 *     learned (a bad file header) is skipped, and the round goes on; one
 *     whose scan found intact records after damaged bytes is kept for good
 *     (the damaged record's ledger may be missing from the count).
 *  4. Compaction copies, and usage scans read, at most gc_rate_bytes per
 *     second, so they never compete with the journal for the disk in
 *     bursts.
 *
 * Threads: rounds run on the collector's thread (every gc_interval_ms) or
 * on a caller of sl_ledger_storage_gc, one at a time under round_mu.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bookie/ledger_storage_leveldb_int.h"
#include "common/clock.h"
#include "common/log.h"

#define MOVE_CHUNK (4u << 20) /* payload bytes copied per sync */
#define REPOINT_SLICE 128     /* index checks and updates per hold of wmu */
#define COMPACT_RETRY_MS (10 * 60 * 1000) /* after a failed compaction */

typedef struct log_usage {
  uint64_t log;
  ldb_ledger_bytes *lb; /* live bytes per ledger, ascending ledger */
  size_t n;
  int64_t retry_ms;     /* a failed compaction is not tried again before */
  bool keep;            /* a scan found damage: never removed or compacted */
} log_usage;

struct ldb_gc {
  ldb_storage *s;
  pthread_mutex_t round_mu; /* one round at a time; guards usage */
  log_usage *usage;
  size_t nusage, cap;
  pthread_mutex_t stop_mu;  /* guards stop */
  pthread_cond_t stop_cv;
  bool stop;
  pthread_t th;
  bool started;
  _Atomic uint64_t removed;
  _Atomic uint64_t compacted;
  _Atomic uint64_t scanned;
};

static bool pause_ms(struct ldb_gc *gc, int64_t ms);

/* ---- usage ---- */

typedef struct usage_build {
  ldb_storage *s;
  ldb_ledger_bytes *lb;
  size_t n, cap;
} usage_build;

/* Whether the index of h's entry points at h itself. */
static sl_status points_here(ldb_storage *s, const sl_entry_log_hdr *h, bool *here,
                             sl_err *err) {
  ldb_index ix;
  sl_status st = ldb_get_index(s, h->ledger, h->entry, &ix, err);
  *here = false;
  if (st == SL_ENOTFOUND) return SL_OK;
  if (st != SL_OK) return st;
  *here = ix.in_log && ix.loc.log == h->loc.log && ix.loc.offset == h->loc.offset;
  return SL_OK;
}

static sl_status count_record(const sl_entry_log_hdr *h, void *arg) {
  usage_build *u = arg;
  bool here;
  sl_status st = points_here(u->s, h, &here, NULL);
  if (st != SL_OK || !here) return st;
  uint64_t bytes = SL_ENTRY_LOG_REC_HDR + (uint64_t)h->loc.len;
  if (u->n > 0 && u->lb[u->n - 1].ledger == h->ledger) {
    u->lb[u->n - 1].bytes += bytes;
    return SL_OK;
  }
  if (u->n == u->cap) {
    u->cap = u->cap ? u->cap * 2 : 16;
    u->lb = sl_xrealloc(u->lb, u->cap * sizeof(*u->lb));
  }
  u->lb[u->n++] = (ldb_ledger_bytes){h->ledger, bytes};
  return SL_OK;
}

static int cmp_lb(const void *a, const void *b) {
  uint64_t x = ((const ldb_ledger_bytes *)a)->ledger, y = ((const ldb_ledger_bytes *)b)->ledger;
  return x < y ? -1 : x > y;
}

static sl_status build_usage(ldb_storage *s, uint64_t log, log_usage *out, sl_err *err) {
  usage_build u = {.s = s};
  bool damaged = false;
  sl_status st = sl_entry_log_scan(s->el, log, count_record, &u, &damaged, err);
  if (st != SL_OK) {
    free(u.lb);
    return st;
  }
  if (damaged) {
    /* A damaged record's ledger may be missing from what the scan counted,
     * so "no live ledger left" could be wrong: the file is kept (an
     * operator's call). */
    sl_log(SL_LOG_ERROR, "event=entry_log_damaged log=%" PRIu64 " (kept, not collected)", log);
  }
  if (u.n > 1) qsort(u.lb, u.n, sizeof(*u.lb), cmp_lb);
  size_t m = 0; /* merge runs of one ledger */
  for (size_t i = 0; i < u.n; i++) {
    if (m > 0 && u.lb[m - 1].ledger == u.lb[i].ledger) u.lb[m - 1].bytes += u.lb[i].bytes;
    else u.lb[m++] = u.lb[i];
  }
  *out = (log_usage){.log = log, .lb = u.lb, .n = m, .keep = damaged};
  return SL_OK;
}

static log_usage *find_usage(struct ldb_gc *gc, uint64_t log) {
  for (size_t i = 0; i < gc->nusage; i++)
    if (gc->usage[i].log == log) return &gc->usage[i];
  return NULL;
}

static void drop_usage(struct ldb_gc *gc, uint64_t log) {
  log_usage *u = find_usage(gc, log);
  if (u == NULL) return;
  free(u->lb);
  *u = gc->usage[--gc->nusage];
}

/* Drops ledgers deleted since the last round; *live gets what is left. */
static sl_status refresh_usage(ldb_storage *s, log_usage *u, uint64_t *live, sl_err *err) {
  size_t m = 0;
  *live = 0;
  for (size_t i = 0; i < u->n; i++) {
    bool alive;
    sl_status st = ldb_ledger_alive(s, u->lb[i].ledger, &alive, err);
    if (st != SL_OK) return st;
    if (!alive) continue;
    u->lb[m++] = u->lb[i];
    *live += u->lb[i].bytes;
  }
  u->n = m;
  return SL_OK;
}

/* A file's usage: stored at its seal, else learned by a scan paced at
 * gc_rate_bytes (after a crash; invariant 4). */
static sl_status usage_of(struct ldb_gc *gc, uint64_t log, uint64_t size, log_usage **out,
                          sl_err *err) {
  log_usage *u = find_usage(gc, log);
  if (u == NULL) {
    log_usage built = {.log = log};
    sl_status st = ldb_get_usage(gc->s, log, &built.lb, &built.n, err);
    if (st == SL_ENOTFOUND) {
      st = build_usage(gc->s, log, &built, err);
      if (st == SL_OK) {
        atomic_fetch_add(&gc->scanned, size);
        (void)pause_ms(gc, (int64_t)(size * 1000 / gc->s->opts.gc_rate_bytes));
      }
    }
    if (st != SL_OK) return st;
    if (gc->nusage == gc->cap) {
      gc->cap = gc->cap ? gc->cap * 2 : 16;
      gc->usage = sl_xrealloc(gc->usage, gc->cap * sizeof(*gc->usage));
    }
    u = &gc->usage[gc->nusage++];
    *u = built;
  }
  *out = u;
  return SL_OK;
}

/* ---- removal and compaction ---- */

static sl_status remove_file(struct ldb_gc *gc, uint64_t log, sl_err *err) {
  sl_status st = sl_entry_log_remove(gc->s->el, log, err);
  drop_usage(gc, log);
  if (st == SL_OK) ldb_drop_usage(gc->s, log);
  if (st == SL_OK) {
    atomic_fetch_add(&gc->removed, 1);
    sl_log(SL_LOG_INFO, "event=entry_log_removed log=%" PRIu64, log);
  }
  return st;
}

/* Waits ms or until stop; true if stopping. */
static bool pause_ms(struct ldb_gc *gc, int64_t ms) {
  pthread_mutex_lock(&gc->stop_mu);
  if (ms > 0 && !gc->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    (void)pthread_cond_timedwait(&gc->stop_cv, &gc->stop_mu, &ts);
  }
  bool stop = gc->stop;
  pthread_mutex_unlock(&gc->stop_mu);
  return stop;
}

typedef struct move_list {
  ldb_storage *s;
  const log_usage *u;
  sl_entry_log_hdr *h;
  size_t n, cap;
} move_list;

static bool ledger_in(const log_usage *u, uint64_t ledger) {
  ldb_ledger_bytes key = {ledger, 0};
  return u->n > 0 && bsearch(&key, u->lb, u->n, sizeof(*u->lb), cmp_lb) != NULL;
}

static sl_status collect_live(const sl_entry_log_hdr *h, void *arg) {
  move_list *m = arg;
  if (!ledger_in(m->u, h->ledger)) return SL_OK;
  bool here;
  sl_status st = points_here(m->s, h, &here, NULL);
  if (st != SL_OK || !here) return st;
  if (m->n == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 64;
    m->h = sl_xrealloc(m->h, m->cap * sizeof(*m->h));
  }
  m->h[m->n++] = *h;
  return SL_OK;
}

/* Repoints the index of moved records still at their old place (inv. 2),
 * REPOINT_SLICE at a time so that the applier never waits long on wmu. */
static sl_status repoint(ldb_storage *s, const sl_entry_log_hdr *h, const sl_entry_loc *to,
                         size_t n, sl_err *err) {
  sl_status st = SL_OK;
  for (size_t from = 0; from < n && st == SL_OK; from += REPOINT_SLICE) {
    size_t end = n - from < REPOINT_SLICE ? n : from + REPOINT_SLICE;
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    pthread_mutex_lock(&s->wmu);
    for (size_t i = from; i < end && st == SL_OK; i++) {
      bool here;
      st = points_here(s, &h[i], &here, err);
      if (st == SL_OK && here)
        st = ldb_put_index(s, b, h[i].ledger, h[i].entry, h[i].crc, to[i]);
    }
    if (st == SL_OK) {
      char *errptr = NULL;
      leveldb_write(s->db, s->wo, b, &errptr);
      if (errptr != NULL) st = ldb_error(errptr, err, "gc write");
    }
    pthread_mutex_unlock(&s->wmu);
    leveldb_writebatch_destroy(b);
  }
  return st;
}

/* Copies h[0..n) to the current file, syncs the copies, repoints. */
static sl_status move_chunk(ldb_storage *s, const sl_entry_log_hdr *h, size_t n,
                            sl_err *err) {
  sl_status st = SL_OK;
  sl_entry_log_rec *recs = sl_xcalloc(n, sizeof(*recs));
  uint8_t **bufs = sl_xcalloc(n, sizeof(*bufs));
  sl_entry_loc *to = sl_xmalloc(n * sizeof(*to));
  for (size_t i = 0; i < n && st == SL_OK; i++) {
    uint32_t crc;
    st = sl_entry_log_read(s->el, h[i].loc, h[i].ledger, h[i].entry, &bufs[i], &crc, err);
    if (st == SL_OK)
      recs[i] = (sl_entry_log_rec){.ledger = h[i].ledger, .entry = h[i].entry, .crc = crc,
                                 .payload = bufs[i] + SL_ENTRY_LOG_REC_HDR,
                                 .len = h[i].loc.len};
  }
  if (st == SL_OK) {
    pthread_mutex_lock(&s->wmu);
    st = sl_entry_log_append(s->el, recs, n, to, err);
    /* The copies count in their new file's usage like any append: a file's
     * stored usage must name every ledger with records in it. */
    if (st == SL_OK) ldb_note_appended(s, recs, to, n);
    pthread_mutex_unlock(&s->wmu);
  }
  if (st == SL_OK) st = sl_entry_log_sync(s->el, err);
  if (st == SL_OK) st = repoint(s, h, to, n, err);
  for (size_t i = 0; i < n; i++) free(bufs[i]);
  free(bufs);
  free(recs);
  free(to);
  return st;
}

static sl_status compact(struct ldb_gc *gc, const log_usage *u, sl_err *err) {
  ldb_storage *s = gc->s;
  move_list m = {.s = s, .u = u};
  uint64_t log = u->log;
  sl_status st = sl_entry_log_scan(s->el, log, collect_live, &m, NULL, err);
  int64_t t0 = sl_clock_mono_ms();
  uint64_t moved = 0;
  bool stopped = false;
  for (size_t i = 0; i < m.n && st == SL_OK && !stopped;) {
    size_t j = i;
    uint64_t bytes = 0;
    while (j < m.n && (j == i || bytes + m.h[j].loc.len <= MOVE_CHUNK)) bytes += m.h[j++].loc.len;
    st = move_chunk(s, &m.h[i], j - i, err);
    i = j;
    moved += bytes;
    atomic_fetch_add(&gc->compacted, bytes);
    /* Invariant 4: wait until the copied bytes fit the rate. */
    int64_t due = t0 + (int64_t)(moved * 1000 / s->opts.gc_rate_bytes);
    stopped = pause_ms(gc, due - sl_clock_mono_ms());
  }
  free(m.h);
  if (st != SL_OK) {
    sl_log(SL_LOG_WARN, "event=entry_log_compaction_failed log=%" PRIu64 " err=\"%s\"",
           log, err != NULL ? err->msg : "");
    return st;
  }
  if (stopped) return SL_OK;
  /* Invariant 1. The scan finds records by their headers, and a damaged
   * header hides its record (the scan skips to the next intact one): the
   * index of every ledger in the file must have left it. */
  for (size_t i = 0; i < u->n; i++) {
    bool uses;
    if ((st = ldb_ledger_uses_log(s, u->lb[i].ledger, log, &uses, err)) != SL_OK) return st;
    if (uses) {
      sl_log(SL_LOG_ERROR, "event=entry_log_compaction_incomplete log=%" PRIu64
             " ledger=%" PRIu64 " (a record past a damaged one is still indexed here)",
             log, u->lb[i].ledger);
      return sl_err_set(err, SL_ECORRUPT, "entry log %" PRIu64 ": ledger %" PRIu64
                        " still indexed here after compaction", log, u->lb[i].ledger);
    }
  }
  /* The repointed index is durable before the file goes. */
  leveldb_compact_range(s->db, "\0", 1, "\0", 1);
  sl_log(SL_LOG_INFO, "event=entry_log_compacted log=%" PRIu64 " moved_bytes=%" PRIu64,
         log, moved);
  return remove_file(gc, log, err);
}

/* ---- rounds ---- */

static sl_status round_locked(struct ldb_gc *gc, sl_err *err) {
  ldb_storage *s = gc->s;
  uint64_t *ids = NULL, *sizes = NULL;
  size_t n = sl_entry_log_sealed(s->el, &ids, &sizes);
  sl_status st = SL_OK;
  bool compacted = false;
  for (size_t i = 0; i < n && st == SL_OK; i++) {
    log_usage *u;
    uint64_t live;
    sl_err uerr = SL_ERR_INIT;
    sl_status ust = usage_of(gc, ids[i], sizes[i], &u, &uerr);
    if (ust != SL_OK) {
      /* One unreadable file must not stop the collection of the others. */
      sl_log(SL_LOG_WARN, "event=entry_log_gc_skipped log=%" PRIu64 " status=%s err=\"%s\"",
             ids[i], sl_status_str(ust), uerr.msg);
      continue;
    }
    if (u->keep) continue;
    if ((st = refresh_usage(s, u, &live, err)) != SL_OK) break;
    uint64_t used = sizes[i] > SL_ENTRY_LOG_HEADER ? sizes[i] - SL_ENTRY_LOG_HEADER : 0;
    if (live == 0) {
      st = remove_file(gc, ids[i], err);
    } else if (!compacted && (double)live < s->opts.gc_compact_ratio * (double)used &&
               sl_clock_mono_ms() >= u->retry_ms) {
      compacted = true;
      sl_err cerr = SL_ERR_INIT;
      if (compact(gc, u, &cerr) != SL_OK) {
        /* Logged by compact. Its file stays (invariant 3); the others get
         * their turn meanwhile, so one bad file cannot stop collection. */
        u = find_usage(gc, ids[i]);
        if (u != NULL) u->retry_ms = sl_clock_mono_ms() + COMPACT_RETRY_MS;
      }
    }
  }
  free(ids);
  free(sizes);
  return st;
}

sl_status ldb_gc_round(ldb_storage *s, sl_err *err) {
  pthread_mutex_lock(&s->gc->round_mu);
  sl_status st = round_locked(s->gc, err);
  pthread_mutex_unlock(&s->gc->round_mu);
  return st;
}

static void *gc_main(void *arg) {
  struct ldb_gc *gc = arg;
  (void)pthread_setname_np(pthread_self(), "bookie-gc");
  while (!pause_ms(gc, gc->s->opts.gc_interval_ms)) {
    sl_err err = SL_ERR_INIT;
    if (ldb_gc_round(gc->s, &err) != SL_OK)
      sl_log(SL_LOG_WARN, "event=entry_log_gc_failed err=\"%s\"", err.msg);
  }
  return NULL;
}

void ldb_gc_start(ldb_storage *s) {
  struct ldb_gc *gc = sl_xcalloc(1, sizeof(*gc));
  gc->s = s;
  pthread_mutex_init(&gc->round_mu, NULL);
  pthread_mutex_init(&gc->stop_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&gc->stop_cv, &ca);
  pthread_condattr_destroy(&ca);
  atomic_init(&gc->removed, 0);
  atomic_init(&gc->compacted, 0);
  atomic_init(&gc->scanned, 0);
  s->gc = gc;
  if (s->opts.gc_interval_ms > 0) {
    int rc = pthread_create(&gc->th, NULL, gc_main, gc);
    SL_ASSERT(rc == 0);
    gc->started = true;
  }
}

void ldb_gc_stop(struct ldb_gc *gc) {
  if (gc == NULL) return;
  pthread_mutex_lock(&gc->stop_mu);
  gc->stop = true;
  pthread_cond_broadcast(&gc->stop_cv);
  pthread_mutex_unlock(&gc->stop_mu);
  if (gc->started) pthread_join(gc->th, NULL);
  for (size_t i = 0; i < gc->nusage; i++) free(gc->usage[i].lb);
  free(gc->usage);
  pthread_mutex_destroy(&gc->round_mu);
  pthread_mutex_destroy(&gc->stop_mu);
  pthread_cond_destroy(&gc->stop_cv);
  free(gc);
}

void ldb_gc_stats(struct ldb_gc *gc, uint64_t *removed, uint64_t *compacted,
                  uint64_t *scanned) {
  *removed = atomic_load(&gc->removed);
  *compacted = atomic_load(&gc->compacted);
  *scanned = atomic_load(&gc->scanned);
}
