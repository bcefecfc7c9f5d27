/* Managed ledger internals shared by managed_ledger*.c (see managed_ledger.h). */
#ifndef SL_BROKER_MANAGED_LEDGER_INT_H
#define SL_BROKER_MANAGED_LEDGER_INT_H

#include <pthread.h>

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

/* Starts the periodic trim timer (managed_ledger_trim.c). */
void ml_trim_timer_start(sl_ml *ml);
void ml_trim_fired(void *arg);

#endif
