/*
 * Subscription: one subscription of one partition, with its consumers
 * (issue 10). It ties together the dispatcher (who gets what,
 * broker/dispatcher.h), the replay set (what to deliver again,
 * broker/subscription_replay.h), the cursor (what is acked) and the
 * partition's entries (entry cache at the tail, bookies behind it). The
 * Consume handler stays thin: it decodes requests into the calls below and
 * encodes what the deliver/event ports hand it.
 *
 * The subscription reaches the partition through ports (sl_sub_ports): the
 * partition wires them to its cursor (broker/cursor.h), its entry cache and
 * managed ledger, and the Consume streams; tests wire them to fakes.
 *
 * Dispatch (pump, run after every change that can let a message go)
 *   While some consumer can take a message and no read is in flight:
 *     1. a due message of the replay set (smallest id first) is read again
 *        (one entry) and offered to the dispatcher with its redelivery
 *        count; if nobody can take it, it goes back (not counted);
 *     2. else entries are read from the read position on, at most as many
 *        as the consumers have permits (read-ahead bounded by permits);
 *        every message not acked yet is offered in order. exclusive,
 *        failover and shared stop at the first message nobody can take
 *        (the read position stays there); key_shared holds such a message
 *        in the replay set and goes on with other keys, up to max_held.
 *   A read that finds nothing new leaves the subscription waiting for
 *   sl_sub_notify (the partition appended entries).
 *
 * Invariants
 *  1. Every message after the cursor's mark-delete that is not acked is
 *     either at or after the read position, in the replay set, or unacked
 *     at a consumer (dispatcher). So nothing is skipped (at-least-once).
 *  2. Messages go out in id order per subscription for exclusive and
 *     failover (the replay set is served first and a failover active change
 *     hands back everything unacked), per key for key_shared.
 *  3. A consumer gets at most the permits it granted (dispatcher inv. 1).
 *  4. A message handed back more than max_redeliveries times goes to the
 *     dead-letter port; only once that reports success is it acked here.
 *  5. Cumulative acks are refused on shared and key_shared (SL_EINVAL).
 *
 * Threads: none of its own. Every function and every port callback runs on
 * the partition's serial; ports may complete reads later, on that serial.
 */
#ifndef SL_BROKER_SUBSCRIPTION_H
#define SL_BROKER_SUBSCRIPTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/dispatcher.h"
#include "broker/managed_ledger.h"
#include "common/status.h"
#include "entry.pb-c.h"

typedef struct sl_sub sl_sub;

/* One message handed to a consumer or to the dead-letter port. Everything
 * is borrowed for the call. */
typedef struct sl_sub_delivery {
  sl_msg_id id;
  int32_t batch_size;                   /* messages in its entry */
  const Sluice__V1__StoredMessage *msg;
  uint32_t redelivery_count;            /* deliveries before this one */
} sl_sub_delivery;

/* Entry reads: on_entry for each entry in order (data borrowed for the
 * call), then on_done once (SL_OK, also when nothing was there). */
typedef void (*sl_sub_entry_cb)(sl_ml_pos pos, const void *data, size_t len,
                                void *arg);
typedef void (*sl_sub_read_cb)(sl_status st, void *arg);

/* Completion of an ack's persistence or a dead-letter publish. */
typedef void (*sl_sub_done_cb)(sl_status st, void *arg);

typedef struct sl_sub_ports {
  void *ctx;                    /* for read, deliver, active, dead_letter */
  void *cursor_ctx;             /* for read_start, is_acked, ack,
                                   ack_cumulative, ack_before */
  /* Reads durable entries from `from` (inclusive; a position past a
   * ledger's end continues in the next ledger), at most max. Callbacks
   * run later, on the serial. Non-OK return: the read did not start. */
  sl_status (*read)(void *ctx, sl_ml_pos from, uint32_t max,
                    sl_sub_entry_cb on_entry, sl_sub_read_cb on_done,
                    void *arg);
  /* Cursor: where reading starts (the entry after the mark-delete), and
   * whether one message is acked. */
  sl_ml_pos (*read_start)(void *ctx);
  bool (*is_acked)(void *ctx, sl_msg_id id, int32_t batch_size);
  /* Cursor acks; cb (may be NULL) runs once the ack is durable. Errors as
   * the cursor's (SL_ERANGE: not in the partition). */
  sl_status (*ack)(void *ctx, sl_msg_id id, int32_t batch_size,
                   sl_sub_done_cb cb, void *arg, sl_err *err);
  sl_status (*ack_cumulative)(void *ctx, sl_msg_id id, sl_sub_done_cb cb,
                              void *arg, sl_err *err);
  /* Acks every message before the entry at `to` (sl_cursor_ack_before). */
  sl_status (*ack_before)(void *ctx, sl_ml_pos to, sl_sub_done_cb cb,
                          void *arg, sl_err *err);
  /* Sends one message to a consumer (it holds a permit for it). */
  void (*deliver)(void *ctx, uint64_t consumer, const sl_sub_delivery *d);
  /* Failover: a consumer became (in)active. May be NULL. */
  void (*active)(void *ctx, uint64_t consumer, bool active);
  /* Publishes d to the dead-letter topic; cb once it is durable there. */
  sl_status (*dead_letter)(void *ctx, const sl_sub_delivery *d,
                           sl_sub_done_cb cb, void *arg);
} sl_sub_ports;

typedef struct sl_sub_opts {
  const char *name;             /* copied */
  sl_disp_type type;
  uint32_t max_redeliveries;    /* 0 = never dead-letter */
  int64_t nack_delay_ms;        /* 0 = 1000 */
  uint32_t max_read;            /* entries per read; 0 = 100 */
  uint32_t max_held;            /* key_shared messages held back; 0 = 10000 */
  sl_sub_ports ports;           /* copied; both contexts retained */
} sl_sub_opts;

/* SL_EINVAL for an unknown type (err says so) or a missing port. */
sl_status sl_sub_create(const sl_sub_opts *opts, sl_sub **out, sl_err *err);

/* Frees it. A read in flight completes into nothing (the port must still
 * run its callbacks, which then do nothing). NULL is a no-op. */
void sl_sub_destroy(sl_sub *s);

sl_disp_type sl_sub_type(const sl_sub *s);
const char *sl_sub_name(const sl_sub *s);

/* The next entry to read: every entry before it was offered (end of topic
 * is when no entry is left at or after it). */
sl_ml_pos sl_sub_read_pos(const sl_sub *s);

/* A consumer joins (see sl_disp_add; SL_EBUSY names the subscription). */
sl_status sl_sub_add_consumer(sl_sub *s, const sl_disp_consumer *c,
                              sl_err *err);

/* A consumer leaves: its unacked messages are redelivered to the others. */
void sl_sub_remove_consumer(sl_sub *s, uint64_t consumer);

/* Grants permits (SL_EINVAL for permits <= 0, SL_ENOTFOUND). */
sl_status sl_sub_flow(sl_sub *s, uint64_t consumer, int64_t permits,
                      sl_err *err);

/* Acks one message (batch_size from its MessageId; 0 means 1). cb (may be
 * NULL) runs once it is durable. */
sl_status sl_sub_ack(sl_sub *s, sl_msg_id id, int32_t batch_size,
                     sl_sub_done_cb cb, void *arg, sl_err *err);

/* Acks everything up to id for `consumer` (exclusive, failover only). */
sl_status sl_sub_ack_cumulative(sl_sub *s, uint64_t consumer, sl_msg_id id,
                                sl_sub_done_cb cb, void *arg, sl_err *err);

/* Expires every message before the entry at `to`, whatever the type
 * (message TTL, backlog eviction): the cursor acks them, reading goes on
 * from `to` if it was behind, and queued redeliveries before it are
 * dropped. Consumers holding some of them may still ack them (a no-op);
 * handed back, they are skipped. cb as for sl_sub_ack. */
sl_status sl_sub_expire(sl_sub *s, sl_ml_pos to, sl_sub_done_cb cb, void *arg,
                        sl_err *err);

/* Redeliver id after delay_ms (0 = the subscription's nack delay). False
 * if it was not unacked at a consumer. */
bool sl_sub_nack(sl_sub *s, sl_msg_id id, int64_t delay_ms, int64_t now_ms);

/* Timers: ack timeouts and due nacks (now_ms monotonic), then dispatch.
 * Returns when the next queued redelivery is due (or -1: none). */
int64_t sl_sub_tick(sl_sub *s, int64_t now_ms);

/* The partition has new durable entries: dispatch if waiting for them. */
void sl_sub_notify(sl_sub *s, int64_t now_ms);

/* Seek: the read position moves to `to`, the replay set and the
 * dispatcher's unacked messages are forgotten (the caller resets the
 * cursor first). Messages read for the old position that are still
 * arriving from a read in flight are dropped. */
void sl_sub_seek(sl_sub *s, sl_ml_pos to, int64_t now_ms);

typedef struct sl_sub_stats {
  uint32_t consumers;
  uint64_t unacked;             /* delivered, not acked */
  uint64_t replay;              /* waiting for redelivery */
  uint64_t delivered;           /* messages sent, redeliveries included */
  uint64_t redelivered;
  uint64_t dead_lettered;
} sl_sub_stats;

void sl_sub_stats_get(const sl_sub *s, sl_sub_stats *out);

#endif
