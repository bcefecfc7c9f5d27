/* The consume side of one partition, shared by partition_consume.c (its
 * subscriptions and consumers) and partition_expiry.c (message TTL). See
 * partition_consume.c for the design note. Everything here runs on the
 * partition's serial. */
#ifndef SL_BROKER_PARTITION_CONSUME_INT_H
#define SL_BROKER_PARTITION_CONSUME_INT_H

#include "broker/consume_int.h"
#include "broker/cursor.h"
#include "broker/entry_cache.h"
#include "broker/subscription.h"
#include "common/timer.h"

typedef struct pexpiry pexpiry;

typedef struct pconsume {
  ptopic *t;                 /* owns this (t->consume); not referenced */
  sl_consume *c;
  sl_entry_cache *cache;
  psub *subs;
  cstream *waiters;          /* subscribed while the partition loads */
  sl_timer tick;
  int closing;               /* cursor closes pending in a graceful unload */
  sl_timer close_timer;      /* bounds them (UNLOAD_FLUSH_MS) */
  pexpiry *expiry;           /* message TTL state (partition_expiry.c) */
  int64_t quota_next_ms;     /* next backlog quota check (partition_quota.c) */
} pconsume;

/* A subscription's figures for /metrics, refreshed on every tick (the
 * render reads them from another thread). */
typedef struct psub_gauges {
  _Atomic uint64_t backlog, backlog_bytes, unacked, consumers;
  sl_metrics_callback *cb[4];
} psub_gauges;

struct psub {
  psub *next;                /* in pc->subs */
  psub_gauges gauges;
  pconsume *pc;              /* NULL once the partition is gone */
  char *name;
  sl_disp_type type;
  /* Redelivery options, for all its consumers (see options_conflict): as
   * its first consumer asked, else the defaults. */
  char *dead_letter_topic;   /* else <topic>-<subscription>-DLQ */
  uint32_t max_redeliveries; /* else the namespace policy (0 = never) */
  uint32_t nack_delay_ms;    /* else DEFAULT_NACK_DELAY_MS */
  sl_cursor *cursor;         /* once open */
  sl_sub *sub;               /* once open */
  cstream *consumers;        /* joined */
  cstream *waiters;          /* waiting for the cursor */
  cstream *joining;          /* during sl_sub_add_consumer */
};

/* ---- partition_consume.c ---- */

/* The partition is READY: cs joins its subscription (opening it if new). */
void pc_subscribe_now(pconsume *pc, cstream *cs);

/* Opens (or recovers) subscription sub's cursor on the partition's chain as
 * it stands (sl_cursor_open_async, arg for both callbacks). */
sl_status pc_cursor_open(ptopic *t, const char *sub, int type, sl_cursor_initial initial,
                         sl_cursor_lost_cb lost, sl_cursor_open_cb opened, void *arg,
                         sl_err *err);

/* ---- partition_expiry.c: message TTL (namespace message_ttl_seconds) ----
 *
 * Every so often (a quarter of the TTL, between 1 s and 60 s) the partition
 * finds the first entry published at or after now - TTL (seek_time.h) and
 * expires everything before it in every subscription: the open ones through
 * sl_sub_expire, the others (no consumer since the partition loaded) by
 * opening their cursor for the moment (ack before, close). A consumer that
 * subscribes to one of those meanwhile waits for its close. The same state
 * knows every subscription's mark-delete, for the backlog quota. */

/* Starts the state once the partition is READY (nothing runs without a TTL
 * or a quota). */
void pc_expiry_init(pconsume *pc, int64_t ttl_seconds, bool quota);
/* Expires everything before `before` in every subscription (as above). */
void pc_expiry_expire_all(pconsume *pc, sl_ml_pos before);
/* The oldest mark-delete of all subscriptions into *slowest (*any false
 * when there is none). False while not known yet (no ListCursors answered
 * since the partition loaded). */
bool pc_expiry_slowest(pconsume *pc, sl_ml_pos *slowest, bool *any);
/* From the partition's tick: runs a pass when one is due. */
void pc_expiry_tick(pconsume *pc, int64_t now_ms);
/* True (and cs is held, to join once the cursor is closed) when cs's
 * subscription is being expired without consumers. */
bool pc_expiry_holds(pconsume *pc, cstream *cs);
/* The partition is gone: held streams end with st; passes in flight find
 * nothing left to do. */
void pc_expiry_gone(pconsume *pc, sl_status st, const char *msg);

/* ---- partition_quota.c: backlog quota (namespace backlog_quota_bytes) ----
 *
 * Once a second the backlog, the bytes after the oldest mark-delete of all
 * subscriptions (none: no backlog), is measured against the quota. Over
 * it, by backlog_policy: CONSUMER_EVICTION expires the oldest entries in
 * every subscription until what is left fits; PRODUCER_HOLD and
 * PRODUCER_EXCEPTION tell the produce side (pt_backlog_over), which holds
 * or refuses sends until the backlog is back under the quota. */
void pc_quota_check(pconsume *pc, int64_t now_ms);

#endif
