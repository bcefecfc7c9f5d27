/*
 * Dispatcher: which consumer of one subscription gets which message
 * (DESIGN.md §6, issue 10). One interface, one implementation per
 * subscription type:
 *
 *   exclusive   one consumer; a second one is refused (SL_EBUSY, naming the
 *               subscription)
 *   failover    many consumers, one active: the best by (priority level,
 *               name, arrival); the others wait. Every change of the active
 *               consumer is reported (on_active) to the old and the new one
 *   shared      round-robin over consumers with permits, no order
 *   key_shared  each key to one live consumer (a hash ring over consumer
 *               names), per-key order kept across joins and leaves
 *
 * The dispatcher knows message ids, keys and consumers, never payloads. Its
 * caller (the subscription) reads entries, asks sl_disp_pick() for each
 * message, sends it to the consumer picked, and keeps every message the
 * dispatcher answered SL_EBUSY (or handed back: a consumer left, a nack,
 * an ack timeout) in its replay set, tried again in id order before newer
 * messages. On a failover active change the caller also rewinds to the
 * oldest unacknowledged message, so the new active consumer sees what the
 * old one had not acked, in order, before anything newer.
 *
 * Invariants
 *  1. A consumer never gets more messages than the permits it granted:
 *     pick() takes one permit for every message it places.
 *  2. A delivered message is unacked at exactly one consumer until it is
 *     acked, released (nack / ack timeout) or its consumer leaves; those
 *     hand it back to the caller exactly once.
 *  3. exclusive/failover: only the active consumer gets messages.
 *  4. key_shared: while a key has unacked messages at consumer C, no other
 *     consumer gets a message of that key. A key whose ring owner changed
 *     (a join or leave) moves only once the old consumer acked (or gave
 *     back) every message of it; until then its messages wait (SL_EBUSY),
 *     other keys flow. So the wait of a joiner is bounded by the old
 *     consumer's acks (or ack timeout), never by the whole backlog.
 *  5. pick() of one key answers SL_EBUSY for every later message of that
 *     key until an ack, release, flow, join or leave changes the state, so
 *     a caller that tries messages in id order never reorders a key.
 *
 * Keys are compared by a 64-bit hash; two keys that collide are treated as
 * one key (more waiting, never reordering).
 *
 * Threads: none of its own; one subscription's dispatcher is used from that
 * partition's serial only. on_active runs inside the call that caused it.
 */
#ifndef SL_BROKER_DISPATCHER_H
#define SL_BROKER_DISPATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct sl_disp sl_disp;

/* The values of common.proto SubscriptionType. */
typedef enum sl_disp_type {
  SL_DISP_EXCLUSIVE = 0,
  SL_DISP_FAILOVER = 1,
  SL_DISP_SHARED = 2,
  SL_DISP_KEY_SHARED = 3,
} sl_disp_type;

/* A message within its partition (common.proto MessageId without the
 * partition). Ordered by ledger, entry, then batch index. */
typedef struct sl_msg_id {
  uint64_t ledger_id;
  int64_t entry_id;
  int32_t batch_index;
} sl_msg_id;

/* <0, 0, >0 like strcmp. */
int sl_msg_id_cmp(sl_msg_id a, sl_msg_id b);

/* One message offered to pick(). key is borrowed for the call. */
typedef struct sl_disp_msg {
  sl_msg_id id;
  const char *key;
  size_t key_len;
} sl_disp_msg;

/* Failover: consumer `consumer` became active (true) or inactive (false). */
typedef void (*sl_disp_active_cb)(uint64_t consumer, bool active, void *arg);

/* Called once for each message handed back (leave, release, expiry), in
 * id order within one call. */
typedef void (*sl_disp_back_cb)(sl_msg_id id, void *arg);

typedef struct sl_disp_opts {
  sl_disp_type type;
  const char *subscription;     /* copied; named in errors */
  sl_disp_active_cb on_active;  /* may be NULL */
  void *active_arg;
} sl_disp_opts;

/* Creates a dispatcher with no consumer. SL_EINVAL for an unknown type.
 * Aborts on out-of-memory (servers do). */
sl_status sl_disp_create(const sl_disp_opts *opts, sl_disp **out, sl_err *err);

/* Hands nothing back (unacked messages are forgotten). NULL is a no-op. */
void sl_disp_destroy(sl_disp *d);

sl_disp_type sl_disp_get_type(const sl_disp *d);

/* A consumer joining. id is the caller's unique handle; name is copied.
 * ack_timeout_ms > 0 makes sl_disp_expire() hand back what it left unacked
 * that long. Failover: a joiner that becomes active takes over from the
 * old active consumer, whose unacked messages go to back() (may be NULL)
 * for the caller to redeliver. SL_EBUSY: exclusive and a consumer is there
 * (err names the subscription and that consumer); SL_EEXIST: id already
 * present. */
typedef struct sl_disp_consumer {
  uint64_t id;
  const char *name;
  uint32_t priority;            /* 0 = highest */
  int64_t ack_timeout_ms;       /* 0 = never */
} sl_disp_consumer;

sl_status sl_disp_add(sl_disp *d, const sl_disp_consumer *c,
                      sl_disp_back_cb back, void *arg, sl_err *err);

/* A consumer leaving: its unacked messages go to back() (may be NULL) so
 * the caller can redeliver them. False if id is unknown. */
bool sl_disp_remove(sl_disp *d, uint64_t id, sl_disp_back_cb back, void *arg);

/* Adds permits. SL_EINVAL for permits == 0 or above 2^31 in all;
 * SL_ENOTFOUND for an unknown consumer. */
sl_status sl_disp_flow(sl_disp *d, uint64_t id, uint32_t permits, sl_err *err);

/* The consumer that gets m now, recorded unacked there with now_ms as its
 * delivery time and one permit taken. SL_EBUSY when nobody may take it now
 * (no consumer, no permits, or a key waiting: invariants 3-5). SL_EEXIST
 * when m is already unacked at a consumer (the caller offered it twice). */
sl_status sl_disp_pick(sl_disp *d, const sl_disp_msg *m, int64_t now_ms,
                       uint64_t *consumer);

/* An individual ack: forgets id. True if it was unacked at a consumer
 * (false: unknown or not delivered; acks are idempotent). */
bool sl_disp_ack(sl_disp *d, sl_msg_id id);

/* A cumulative ack by `consumer`: forgets every message up to and
 * including id that is unacked at it. Returns how many. */
size_t sl_disp_ack_upto(sl_disp *d, uint64_t consumer, sl_msg_id id);

/* A nack: forgets id and hands it back (back may be NULL). True if it was
 * unacked. */
bool sl_disp_release(sl_disp *d, sl_msg_id id, sl_disp_back_cb back, void *arg);

/* Hands back every message whose consumer's ack timeout passed since its
 * delivery (now_ms). Returns how many. */
size_t sl_disp_expire(sl_disp *d, int64_t now_ms, sl_disp_back_cb back,
                      void *arg);

/* Seek: forgets every unacked message (nothing is handed back). */
void sl_disp_forget_all(sl_disp *d);

/* Whether the consumer is the active one (exclusive/failover) or present
 * (shared, key_shared). */
bool sl_disp_is_active(const sl_disp *d, uint64_t id);

/* Whether some consumer could take a message now (has permits, and for
 * exclusive/failover is active): the caller reads only then. */
bool sl_disp_can_dispatch(const sl_disp *d);

typedef struct sl_disp_stats {
  uint32_t consumers;
  uint64_t unacked;             /* delivered, not acked, all consumers */
  uint64_t permits;             /* granted, not yet used, all consumers */
} sl_disp_stats;

void sl_disp_stats_get(const sl_disp *d, sl_disp_stats *out);

/* Unacked and permits of one consumer. False if id is unknown. */
bool sl_disp_consumer_stats(const sl_disp *d, uint64_t id, uint64_t *unacked,
                            uint64_t *permits);

#endif
