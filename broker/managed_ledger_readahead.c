/* Read-ahead for the Consume path's backlog reads (managed_ledger.h,
 * sl_ml_read_max_async).
 *
 * A read of the backlog from bookies costs a round trip per chunk; a
 * consumer with permits asks for the next chunk only when the last one was
 * delivered, so without read-ahead it waits one round trip per read. Here a
 * background chain read (a fetch) keeps a buffer of consecutive entries
 * filled ahead of the reader, and a read at the buffer's head is served
 * from memory.
 *
 * Invariants
 *  1. The buffer holds consecutive entries of the chain, oldest first;
 *     rd->next is the position after its last one (where the next fetch
 *     starts). Entries of a fetch begun before the buffer was last dropped
 *     (older rd->gen) are ignored.
 *  2. At most one fetch of the current generation is in flight, and one is
 *     started only while the buffer holds under half of
 *     SL_ML_READAHEAD_BYTES; it asks for the entries the rest of the budget
 *     holds at the average entry size seen (FETCH_MIN before any was seen).
 *  3. A read is answered later, on the serial, from the buffer (a waiter),
 *     or directly from bookies when it misses while another read waits (so
 *     two readers at different places do not take the buffer from each
 *     other). A miss with no waiter drops the buffer and refills it from
 *     the read's position.
 *  4. A waiter is answered once: with the buffered entries from its
 *     position (up to its max; they are dropped when a later read starts
 *     past them, or with the buffer), or, when no fetch (running or
 *     waiting for the budget) can bring its position, with none and the last fetch's status (none
 *     with SL_OK means nothing more is durable yet).
 *  5. A fetch reads the open current ledger through its writer handle, up
 *     to the LAC at the time it gets there, never past it (the entries
 *     after it are not durable yet); fewer entries than asked mark the end
 *     (at_end), and the next read at rd->next fetches again.
 *  6. Pacing: every byte a backlog read takes from bookies (fetches and
 *     direct reads) is charged to the managed ledger's token bucket, which
 *     gains `rate` bytes per second up to DEPTH_MS worth (at least 64 KiB
 *     and the largest entry seen: its depth). A fetch starts only while the
 *     bucket holds at least the largest entry seen; the first WARMUP fetches
 *     take one entry each, later ones at most the entries the bucket holds
 *     at that size. So over any interval of t seconds the partition's
 *     backlog reads take at most rate * t + depth + the last fetch's
 *     overshoot, which is only what its entries exceed the largest size
 *     seen before it by (one entry's worth during the warmup). Direct reads
 *     (a second reader elsewhere, single-entry reads) wait in rd->paced, in
 *     arrival order, until the bucket holds the largest entry, then ask
 *     for only the entries it holds (like a fetch; a reader takes fewer
 *     entries than its max and reads on), charged as they come. A fetch
 *     and a direct read started together may both count on the same
 *     tokens, so with several readers the bound is rate * t + twice the
 *     depth + overshoot. While the
 *     bucket is short, a timer starts the fetch and the waiting direct
 *     reads once it has refilled. So bookie reads in flight for one
 *     partition are bounded by the bucket's depth too (and by the ledger
 *     reader's window).
 */
#include "broker/managed_ledger_int.h"

#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"

/* Entries asked by one fetch: bounds the estimate's error. */
#define FETCH_MIN 16
#define FETCH_MAX 4096
/* The bucket holds this much of its rate (bursts), at least DEPTH_MIN and
 * one average entry. */
#define DEPTH_MS 100
#define DEPTH_MIN (64 << 10)
/* Rates above this are taken as this (1 TiB/s: unlimited in practice). */
#define RATE_MAX (1ll << 40)
/* Entry size assumed before any was seen. */
#define GUESS_LEN 1024
/* Entries fetched one at a time (paced) before the largest size seen is
 * trusted to size fetches. */
#define WARMUP 8

struct ml_ra_entry {
  ml_ra_entry *next;
  sl_ml_pos pos;
  size_t len;
  uint8_t data[];
};

struct ml_ra_wait {
  ml_ra_wait *next;
  sl_ml_pos from;
  uint64_t max;
  bool any;             /* the buffer refills from `from`: its head is ours */
  sl_ml_entry_cb on_entry;
  sl_ml_done_cb on_done;
  void *arg;
};

typedef struct fetch {
  sl_ml *ml;
  uint64_t gen;
  uint64_t asked, got;
} fetch;

/* A position at or past the end of a finished ledger means the next
 * ledger's first entry (how readers name "after the last entry"). */
static sl_ml_pos normalized(const sl_ml *ml, sl_ml_pos p) {
  for (size_t i = 0; i + 1 < ml->n_refs; i++) {
    const ml_ref *r = &ml->refs_v[i];
    if (r->id == p.ledger_id && r->entries >= 0 && p.entry_id >= r->entries)
      p = (sl_ml_pos){ml->refs_v[i + 1].id, 0};
  }
  return p;
}

static ml_ra_entry *pop_head(ml_reader *rd) {
  ml_ra_entry *e = rd->head;
  rd->head = e->next;
  if (rd->head == NULL) rd->tail = NULL;
  rd->bytes -= e->len;
  return e;
}

static void buffer_drop(ml_reader *rd) {
  while (rd->head != NULL) free(pop_head(rd));
  rd->gen++;
  rd->fetching = false;
  rd->at_end = false;
}

/* True if the buffer holds `from`; then entries before it are dropped. */
static bool holds(ml_reader *rd, sl_ml_pos from) {
  ml_ra_entry *e = rd->head;
  while (e != NULL && sl_ml_pos_cmp(e->pos, from) < 0) e = e->next;
  if (e == NULL || sl_ml_pos_cmp(e->pos, from) != 0) return false;
  while (rd->head != e) free(pop_head(rd));
  return true;
}

static void serve(void *arg);

static void post_serve(sl_ml *ml) {
  if (ml->rd.serve_posted) return;
  ml->rd.serve_posted = true;
  ml_ref_get(ml);
  sl_serial_post(ml->serial, serve, ml);
}

/* ---- pacing (invariant 6) ---- */

static void pace_fired(void *arg);

/* Never below the largest entry seen, or a fetch could wait forever. */
static int64_t depth(const ml_reader *rd) {
  int64_t d = rd->rate / (1000 / DEPTH_MS);
  if (d < DEPTH_MIN) d = DEPTH_MIN;
  return d < (int64_t)rd->max_len ? (int64_t)rd->max_len : d;
}

static void pace_setup(sl_ml *ml) {
  ml_reader *rd = &ml->rd;
  if (rd->pace_init) return;
  rd->pace_init = true;
  int64_t r = ml->policy.backlog_read_rate;
  rd->rate = r == 0 ? SL_ML_BACKLOG_READ_RATE : r < 0 ? 0 : r;
  if (rd->rate > RATE_MAX) rd->rate = RATE_MAX; /* keeps the arithmetic in range */
  rd->tokens = depth(rd);
  rd->tokens_ns = sl_clock_mono_ns();
  sl_timer_init(&rd->pace, ml->serial, pace_fired, ml);
}

/* Tops the bucket up for the time since the last top-up. */
static void tokens_update(ml_reader *rd) {
  int64_t now = sl_clock_mono_ns();
  double add = (double)(now - rd->tokens_ns) * (double)rd->rate / 1e9;
  int64_t d = depth(rd);
  rd->tokens = add >= (double)(d - rd->tokens) ? d : rd->tokens + (int64_t)add;
  rd->tokens_ns = now;
}

/* Charges bytes read from bookies to the budget. */
static void charge(sl_ml *ml, size_t len) {
  ml_read_add(ml, ML_READ_BACKLOG_BYTES, len);
  if (ml->rd.rate > 0) ml->rd.tokens -= (int64_t)len;
}

/* How many entries the budget allows a fetch now (n at most); 0 after
 * arming the timer for when it allows one. */
static uint64_t budget(sl_ml *ml, uint64_t n) {
  ml_reader *rd = &ml->rd;
  if (rd->rate == 0) return n;
  tokens_update(rd);
  int64_t len = rd->max_len > 0 ? (int64_t)rd->max_len : GUESS_LEN;
  if (rd->tokens >= len || (rd->max_len == 0 && rd->tokens > 0)) {
    /* One entry at a time until WARMUP were seen, then as many as the
     * bucket holds at the largest size seen: a fetch overshoots only by
     * entries larger than any before it (sizing by the average let one
     * fetch after a small first entry take several large ones). */
    uint64_t k = rd->seen < WARMUP ? 1 : (uint64_t)(rd->tokens / len);
    return k < n ? k : n;
  }
  if (!rd->pace_armed) {
    rd->pace_armed = true;
    ml_ref_get(ml);
    ml_read_count(ml, ML_READ_PACED);
    sl_timer_start(&rd->pace, ((len - rd->tokens) * 1000 + rd->rate - 1) / rd->rate);
  }
  return 0;
}

static void refill(sl_ml *ml);

static void start_paced(sl_ml *ml);

static void pace_fired(void *arg) {
  sl_ml *ml = arg;
  ml->rd.pace_armed = false;
  start_paced(ml);
  refill(ml);
  if (ml->rd.waiters != NULL) post_serve(ml);
  ml_unref(ml);
}

static void fetch_entry(sl_ml_pos pos, const void *data, size_t len, void *arg) {
  fetch *f = arg;
  ml_reader *rd = &f->ml->rd;
  f->got++;
  charge(f->ml, len);
  if (f->gen != rd->gen || rd->stopped) return;
  ml_ra_entry *e = sl_xmalloc(sizeof(*e) + len);
  e->next = NULL;
  e->pos = pos;
  e->len = len;
  memcpy(e->data, data, len);
  if (rd->tail != NULL) rd->tail->next = e;
  else rd->head = e;
  rd->tail = e;
  rd->bytes += len;
  rd->next = (sl_ml_pos){pos.ledger_id, pos.entry_id + 1};
  rd->avg_len = rd->avg_len == 0 ? len : (rd->avg_len * 7 + len) / 8;
  if (len > rd->max_len) rd->max_len = len;
  rd->seen++;
  ml_read_count(f->ml, ML_READ_AHEAD_ENTRY);
  if (rd->waiters != NULL) post_serve(f->ml); /* after this batch of entries */
}

static void fetch_done(sl_status st, const char *details, void *arg) {
  fetch *f = arg;
  sl_ml *ml = f->ml;
  ml_reader *rd = &ml->rd;
  if (f->gen == rd->gen && !rd->stopped) {
    rd->fetching = false;
    rd->fetch_st = st;
    /* Fewer than asked: the end of what is durable (or a failure); the
     * next read that reaches rd->next fetches again. */
    if (st != SL_OK || f->got < f->asked) rd->at_end = true;
    if (st != SL_OK)
      sl_log(SL_LOG_WARN, "event=readahead_failed partition=%s status=%s details=\"%s\"",
             ml->partition, sl_status_str(st), details != NULL ? details : "");
  }
  if (rd->waiters != NULL) post_serve(ml);
  free(f);
}

/* Starts a fetch if invariants 2 and 6 allow one. */
static void refill(sl_ml *ml) {
  ml_reader *rd = &ml->rd;
  if (rd->stopped || rd->fetching || rd->at_end || rd->bytes >= SL_ML_READAHEAD_BYTES / 2 ||
      rd->pace_armed)
    return;
  uint64_t n = rd->avg_len == 0 ? FETCH_MIN : (SL_ML_READAHEAD_BYTES - rd->bytes) / rd->avg_len;
  if (n < FETCH_MIN) n = FETCH_MIN;
  if (n > FETCH_MAX) n = FETCH_MAX;
  if ((n = budget(ml, n)) == 0) return;
  fetch *f = sl_xcalloc(1, sizeof(*f));
  *f = (fetch){ml, rd->gen, n, 0};
  sl_err err = SL_ERR_INIT;
  sl_status st = ml_read_direct(ml, rd->next, n, false, fetch_entry, fetch_done, f, &err);
  if (st != SL_OK) {
    free(f);
    rd->fetch_st = st;
    rd->at_end = true;
    return;
  }
  rd->fetching = true;
}

/* Whether w can be answered now, and from the buffer (*from_buffer). */
static bool ready(ml_reader *rd, ml_ra_wait *w, bool *from_buffer) {
  *from_buffer = rd->head != NULL && (w->any ? sl_ml_pos_cmp(rd->head->pos, w->from) >= 0
                                             : holds(rd, w->from));
  return rd->stopped || *from_buffer || (!rd->fetching && !rd->pace_armed);
}

static void answer(sl_ml *ml, ml_ra_wait *w, bool from_buffer) {
  ml_reader *rd = &ml->rd;
  sl_status st = rd->stopped ? SL_ECANCELED : SL_OK;
  if (!rd->stopped && from_buffer) {
    ml_read_count(ml, ML_READ_AHEAD_HIT);
    /* Delivered entries stay until a later read starts past them: a
     * reader that could not take a whole entry (too few permits) reads it
     * again. Entries are not freed under a callback: only reads drop them,
     * and reads run later. */
    uint64_t n = 0;
    for (ml_ra_entry *e = rd->head; e != NULL && n < w->max; e = e->next, n++)
      w->on_entry(e->pos, e->data, e->len, w->arg);
  } else if (!rd->stopped) {
    st = rd->fetch_st;
  }
  w->on_done(st, st == SL_ECANCELED ? "managed ledger destroyed" : NULL, w->arg);
  free(w);
}

static void serve(void *arg) {
  sl_ml *ml = arg;
  ml_reader *rd = &ml->rd;
  rd->serve_posted = false;
  if (rd->stopped) start_paced(ml); /* answers them ECANCELED */
  refill(ml);
  ml_ra_wait **pp = &rd->waiters;
  while (*pp != NULL) {
    ml_ra_wait *w = *pp;
    bool from_buffer;
    if (!ready(rd, w, &from_buffer)) {
      pp = &w->next;
      continue;
    }
    *pp = w->next;
    answer(ml, w, from_buffer);
    pp = &rd->waiters; /* callbacks may have changed the list */
  }
  refill(ml);
  ml_unref(ml);
}

/* A direct read's callbacks, charging its entries to the budget. */
typedef struct direct {
  sl_ml *ml;            /* the chain read holds a reference */
  sl_ml_entry_cb on_entry;
  sl_ml_done_cb on_done;
  void *arg;
} direct;

static void direct_entry(sl_ml_pos pos, const void *data, size_t len, void *arg) {
  direct *d = arg;
  charge(d->ml, len);
  d->on_entry(pos, data, len, d->arg);
}

static void direct_done(sl_status st, const char *details, void *arg) {
  direct *d = arg;
  d->on_done(st, details, d->arg);
  free(d);
}

/* A read's max (0: no limit) as a count for budget(). */
static uint64_t want(uint64_t max) { return max == 0 ? UINT64_MAX : max; }

/* max as budget() granted it: UINT64_MAX (no pacing, no limit) is 0 again. */
static sl_status start_direct(sl_ml *ml, sl_ml_pos from, uint64_t max,
                              sl_ml_entry_cb on_entry, sl_ml_done_cb on_done, void *arg,
                              sl_err *err) {
  direct *d = sl_xmalloc(sizeof(*d));
  *d = (direct){ml, on_entry, on_done, arg};
  if (max == UINT64_MAX) max = 0;
  sl_status st = ml_read_direct(ml, from, max, false, direct_entry, direct_done, d, err);
  if (st != SL_OK) free(d);
  return st;
}

/* Starts the direct reads waiting for the budget while it allows one
 * (invariant 6); answers them ECANCELED once the ledger is destroyed. */
static void start_paced(sl_ml *ml) {
  ml_reader *rd = &ml->rd;
  uint64_t k = 0;
  while (rd->paced != NULL && (rd->stopped || (k = budget(ml, want(rd->paced->max))) > 0)) {
    ml_ra_wait *w = rd->paced;
    rd->paced = w->next;
    sl_err err = SL_ERR_INIT;
    sl_status st = rd->stopped ? sl_err_set(&err, SL_ECANCELED, "managed ledger destroyed")
                               : start_direct(ml, w->from, k, w->on_entry, w->on_done,
                                              w->arg, &err);
    if (st != SL_OK) w->on_done(st, err.msg, w->arg);
    free(w);
  }
}

sl_status ml_readahead_direct(sl_ml *ml, sl_ml_pos from, uint64_t max,
                              sl_ml_entry_cb on_entry, sl_ml_done_cb on_done,
                              void *arg, sl_err *err) {
  SL_ASSERT(sl_serial_running_here(ml->serial));
  ml_reader *rd = &ml->rd;
  if (on_entry == NULL || on_done == NULL)
    return sl_err_set(err, SL_EINVAL, "read: callbacks required");
  if (rd->stopped) return sl_err_set(err, SL_ECANCELED, "read: managed ledger destroyed");
  pace_setup(ml);
  uint64_t k;
  if (rd->paced == NULL && (k = budget(ml, want(max))) > 0)
    return start_direct(ml, from, k, on_entry, on_done, arg, err);
  /* Behind the others waiting; budget() armed the timer. */
  ml_ra_wait *w = sl_xcalloc(1, sizeof(*w));
  *w = (ml_ra_wait){NULL, from, max, false, on_entry, on_done, arg};
  ml_ra_wait **pp = &rd->paced;
  while (*pp != NULL) pp = &(*pp)->next;
  *pp = w;
  return SL_OK;
}

sl_status ml_readahead_read(sl_ml *ml, sl_ml_pos from, uint64_t max,
                            sl_ml_entry_cb on_entry, sl_ml_done_cb on_done,
                            void *arg, sl_err *err) {
  SL_ASSERT(sl_serial_running_here(ml->serial));
  ml_reader *rd = &ml->rd;
  if (on_entry == NULL || on_done == NULL)
    return sl_err_set(err, SL_EINVAL, "read: callbacks required");
  if (rd->stopped) return sl_err_set(err, SL_ECANCELED, "read: managed ledger destroyed");
  pace_setup(ml);
  from = normalized(ml, from);
  bool any = false;
  if (holds(rd, from)) {
    /* served from the buffer */
  } else if (sl_ml_pos_cmp(from, normalized(ml, rd->next)) == 0) {
    /* Past everything buffered: the next fetch brings it. */
    while (rd->head != NULL) free(pop_head(rd));
    any = true;
    if (!rd->fetching) rd->at_end = false;
  } else if (rd->waiters != NULL) {
    ml_read_count(ml, ML_READ_DIRECT);
    return ml_readahead_direct(ml, from, max, on_entry, on_done, arg, err);
  } else {
    buffer_drop(rd);
    rd->next = from;
    any = true;
  }
  ml_ra_wait *w = sl_xcalloc(1, sizeof(*w));
  *w = (ml_ra_wait){NULL, from, max, any, on_entry, on_done, arg};
  ml_ra_wait **pp = &rd->waiters;
  while (*pp != NULL) pp = &(*pp)->next;
  *pp = w;
  refill(ml);
  post_serve(ml);
  return SL_OK;
}

void ml_readahead_stop(sl_ml *ml) {
  if (ml->rd.pace_armed && sl_timer_stop(&ml->rd.pace)) {
    ml->rd.pace_armed = false;
    ml_unref(ml);
  }
  buffer_drop(&ml->rd);
  if (ml->rd.waiters != NULL || ml->rd.paced != NULL) post_serve(ml);
}
