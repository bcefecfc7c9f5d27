/* Cursor internals shared by cursor.c (acks, positions, lifecycle) and
 * cursor_store.c (the record, the cursor ledger, flushes, recovery). */
#ifndef SL_BROKER_CURSOR_INT_H
#define SL_BROKER_CURSOR_INT_H

#include <pthread.h>

#include "broker/ack_set.h"
#include "broker/cursor.h"
#include "common/timer.h"

/* One durable callback waiting for the flush that covers its change. */
typedef struct cursor_waiter {
  sl_cursor_durable_cb cb;
  void *arg;
  uint64_t gen;                /* the change generation it waits for */
} cursor_waiter;

/* What runs once no flush is in flight: close or delete. */
typedef enum cursor_finish { FINISH_NONE = 0, FINISH_CLOSE, FINISH_DELETE } cursor_finish;

struct sl_cursor {
  /* options (immutable after open) */
  sl_ledger_client *ledgers;
  sl_rpc_channel *metadata;
  sl_serial *serial;           /* referenced */
  char *partition, *subscription;
  uint64_t epoch;
  int type;
  uint32_t e, qw, qa;
  size_t inline_max;
  int persist_delay_ms, min_flush_interval_ms, retry_ms, metadata_timeout_ms;
  sl_cursor_lost_cb on_lost;
  void *lost_arg;

  sl_cursor_state state;       /* serial only; mirrored in stats */
  int refs;                    /* the owner + each async operation (serial) */
  bool destroyed;

  /* the partition's chain */
  sl_cursor_ledger *chain;
  size_t n_chain, cap_chain;

  /* acknowledgement state */
  sl_ml_pos mark_delete;
  sl_ack_set acked;            /* every ack beyond mark_delete */
  sl_ack_set delta;            /* acks since the last flush started */
  uint64_t gen;                /* bumped by every change */
  uint64_t durable_gen;        /* every change up to it is durable */
  bool need_snapshot;          /* a seek happened, or the ledger is unusable */

  cursor_waiter *waiters;      /* FIFO by gen */
  size_t n_waiters, cap_waiters;

  /* persistence */
  int64_t version;             /* record version (0: not created yet) */
  sl_ledger *lh;               /* cursor ledger we append deltas to, or NULL */
  uint64_t ack_ledger;         /* the ledger the record points at, 0 = INLINE */
  uint64_t snapshot_bytes, delta_bytes;
  bool flushing;
  uint64_t flush_gen;          /* gen covered by the flush in flight */
  int64_t last_flush_ms;       /* when the previous flush started */
  sl_timer timer;
  cursor_finish finish;
  sl_cursor_done_cb finish_cb;
  void *finish_arg;

  sl_cursor_open_cb open_cb;
  void *open_arg;

  pthread_mutex_t stats_mu;    /* guards stats */
  sl_cursor_stats stats;
};

/* cursor.c */
void cursor_ref(sl_cursor *c);
void cursor_unref(sl_cursor *c);
void cursor_stats_sync(sl_cursor *c);
/* Moves the mark-delete over contiguous acks and drops what it passed. */
void cursor_advance(sl_cursor *c);
/* Runs waiters up to durable_gen with SL_OK, or all with st. */
void cursor_run_waiters(sl_cursor *c, sl_status st);
/* FENCED or FAILED: fails the waiters, calls on_lost once. */
void cursor_lose(sl_cursor *c, sl_cursor_state to, sl_status st, const char *details);
sl_rpc_call_opts cursor_call_opts(const sl_cursor *c);

/* cursor_store.c */
/* Opening: reads the record, recovers the state, creates a new record;
 * then c->open_cb. */
void cursor_store_open(sl_cursor *c);
/* A change happened: arm the flush timer (delay and rate rules). */
void cursor_store_schedule(sl_cursor *c);
/* Starts a flush now if dirty and none is in flight. */
void cursor_store_flush(sl_cursor *c);
/* Runs the pending close/delete once no flush is in flight. */
void cursor_store_finish(sl_cursor *c);

#endif
