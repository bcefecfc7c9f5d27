/* Managed ledger internals shared by managed_ledger*.c (see managed_ledger.h). */
#ifndef SL_BROKER_MANAGED_LEDGER_INT_H
#define SL_BROKER_MANAGED_LEDGER_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "broker/managed_ledger.h"
#include "common/timer.h"
#include "metadata.pb-c.h"

/* One ledger of the chain, as in the list (LedgerRef). */
typedef struct ml_ref {
  uint64_t id;
  int64_t entries;    /* -1 while it is the open current ledger */
  uint64_t size;
  int64_t ctime_ms;
} ml_ref;

/* An append waiting in the queue while ROLLING (its bytes copied). */
typedef struct ml_queued {
  struct ml_queued *next;
  sl_ml_append_cb cb;
  void *arg;
  size_t len;
  uint8_t data[];
} ml_queued;

/* A caller of a list write, told once the write that carried its change is
 * done. */
typedef void (*ml_written_fn)(sl_ml *ml, sl_status st, const char *details,
                              void *arg);
typedef struct ml_waiter {
  struct ml_waiter *next;
  ml_written_fn fn;
  void *arg;
} ml_waiter;

/* A finished ledger's read handle kept open (managed_ledger_read.c). */
#define ML_READ_HANDLES 4
typedef struct ml_cached_lh {
  uint64_t id;                /* 0: free slot */
  sl_ledger *lh;
  int users;                  /* chain reads reading through it now */
  uint64_t used;              /* tick of the last use (LRU) */
  bool stale;                 /* a read through it failed: no new users, and
                                 closed once idle, so the next read opens
                                 the ledger again with fresh metadata (auto-
                                 recovery may have moved its copies) */
} ml_cached_lh;

/* The read side's state (managed_ledger_read.c, managed_ledger_readahead.c);
 * zeroed with the managed ledger, serial only but the counters. */
typedef struct ml_ra_entry ml_ra_entry;
typedef struct ml_ra_wait ml_ra_wait;
typedef struct ml_reader {
  ml_cached_lh handles[ML_READ_HANDLES];
  uint64_t tick;
  bool stopped;               /* sl_ml_destroy ran: nothing more is kept */
  /* read-ahead buffer: consecutive entries of the chain, oldest first */
  ml_ra_entry *head, *tail;
  size_t bytes;
  sl_ml_pos next;             /* where the next fetch starts */
  uint64_t gen;               /* bumped when the buffer is dropped */
  bool fetching, at_end;
  sl_status fetch_st;         /* of the last fetch */
  size_t avg_len;             /* entry size seen, to size fetches */
  size_t max_len;             /* largest entry seen, to pace them */
  uint64_t seen;              /* entries fetched so far */
  ml_ra_wait *waiters;
  ml_ra_wait *paced;          /* direct reads waiting for the budget, FIFO */
  bool serve_posted;
  /* pacing (managed_ledger_readahead.c): a token bucket in bytes */
  bool pace_init;             /* the fields below are set up */
  int64_t rate;               /* bytes/s; 0 = unlimited */
  int64_t tokens;             /* budget left; negative after an overshoot */
  int64_t tokens_ns;          /* when tokens were last topped up */
  sl_timer pace;              /* fires once the budget allows a fetch */
  bool pace_armed;            /* holds a managed-ledger reference */
  _Atomic uint64_t ledger_opens, handle_reuses, readahead_hits,
      readahead_entries, direct_reads, backlog_bytes, paced_waits;
} ml_reader;

struct sl_ml {
  int refs;                   /* serial only: the user's + one per async op */
  bool destroyed;             /* sl_ml_destroy ran: no user callback but
                                 append completions */
  sl_serial *serial;
  sl_ledger_client *ledgers;
  sl_rpc_channel *metadata;
  char *partition;
  uint64_t epoch;
  sl_ml_policy policy;
  int metadata_timeout_ms;
  sl_ml_lost_cb on_lost;
  void *lost_arg;

  sl_ml_state state;
  /* The list as last written (or read) and its version (0 = not stored). */
  ml_ref *refs_v;
  size_t n_refs;
  sl_ml_prop *props;          /* owned copies of key and value */
  size_t n_props;
  bool terminated;
  int64_t version;

  sl_ledger *cur;             /* the current writer handle (WRITING, ROLLING
                                 before its close, CLOSING) */
  uint64_t cur_appends;       /* appended to cur (called, not completed) */
  uint64_t cur_bytes;
  ml_queued *queue_head, *queue_tail; /* appends waiting for a rollover */

  bool write_busy;            /* a list write is in flight */
  bool write_wanted;          /* the state changed since the last write */
  ml_waiter *waiters;         /* told after the next write */

  bool close_wanted;          /* sl_ml_close_async during a rollover */
  sl_ml_done_cb close_cb;
  void *close_arg;

  bool terminating;           /* sl_ml_terminate_async: its close runs */
  sl_ml_terminate_cb term_cb;
  void *term_arg;

  sl_timer trim_timer;
  bool trim_busy;

  /* open */
  sl_ml_open_cb open_cb;
  void *open_arg;

  ml_reader rd;

  pthread_mutex_t stats_mu;   /* guards stats (read from any thread) */
  sl_ml_stats stats;
};

void ml_ref_get(sl_ml *ml);
void ml_unref(sl_ml *ml);

/* Moves to FENCED (st fencing) or FAILED and fails queued appends; runs
 * on_lost once. */
void ml_lose(sl_ml *ml, sl_status st, const char *details);

/* Asks for a list write of the current state; fn runs after a write that
 * began after this call (coalesced with others). */
void ml_write_list(sl_ml *ml, ml_written_fn fn, void *arg);

/* Call options for metadata calls on the managed ledger's serial. */
sl_rpc_call_opts ml_call_opts(const sl_ml *ml);

/* Updates stats under the lock. */
void ml_stats_update(sl_ml *ml, void (*fn)(sl_ml_stats *s, void *arg), void *arg);

/* Reads ledgers[i..] in order, at most max entries (0 = all)
 * (managed_ledger_read.c). ids is copied. *out (may be NULL) gets the read,
 * which starts on `serial` after the caller's item when called on it. */
typedef struct chain_read chain_read;
sl_status ml_read_chain(sl_ledger_client *c, sl_serial *serial,
                        const uint64_t *ids, size_t n, sl_ml_pos from,
                        uint64_t max, sl_ml_entry_cb on_entry,
                        sl_ml_done_cb on_done, void *arg, chain_read **out,
                        sl_err *err);

/* Chain read of the managed ledger's ledgers from `from`, at most max
 * entries: what sl_ml_read_max_async does without read-ahead.
 * finished_only leaves the open current ledger out. */
sl_status ml_read_direct(sl_ml *ml, sl_ml_pos from, uint64_t max, bool finished_only,
                         sl_ml_entry_cb on_entry, sl_ml_done_cb on_done,
                         void *arg, sl_err *err);

/* ml_read_direct for a backlog read, its bytes charged to the pacing budget
 * (managed_ledger_readahead.c). */
sl_status ml_readahead_direct(sl_ml *ml, sl_ml_pos from, uint64_t max,
                              sl_ml_entry_cb on_entry, sl_ml_done_cb on_done,
                              void *arg, sl_err *err);

/* Serves a read through the read-ahead buffer (managed_ledger_readahead.c). */
sl_status ml_readahead_read(sl_ml *ml, sl_ml_pos from, uint64_t max,
                            sl_ml_entry_cb on_entry, sl_ml_done_cb on_done,
                            void *arg, sl_err *err);

/* Counts a read-side event in the managed ledger's stats and in the
 * process-wide sluice_ml_read_* counters of sl_metrics_default(). */
typedef enum ml_read_event {
  ML_READ_LEDGER_OPEN = 0,
  ML_READ_HANDLE_REUSE,
  ML_READ_AHEAD_HIT,
  ML_READ_AHEAD_ENTRY,
  ML_READ_DIRECT,
  ML_READ_BACKLOG_BYTES,
  ML_READ_PACED,
} ml_read_event;
void ml_read_count(sl_ml *ml, ml_read_event ev);
void ml_read_add(sl_ml *ml, ml_read_event ev, uint64_t n);

/* sl_ml_destroy's part for reads: frees the read-ahead buffer and the idle
 * cached handles; busy ones go with their last read. Waiting reads end
 * with SL_ECANCELED once their fetch is over. */
void ml_read_stop(sl_ml *ml);
void ml_readahead_stop(sl_ml *ml);

/* Starts the periodic trim timer (managed_ledger_trim.c). */
void ml_trim_timer_start(sl_ml *ml);
void ml_trim_fired(void *arg);
/* Starts a rollover if one is due (WRITING, something appended). */
void ml_roll_if_due(sl_ml *ml);

#endif
