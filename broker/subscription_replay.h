/*
 * Replay set of one subscription: the messages to deliver again, when, and
 * how often each was delivered before (issue 10, "Acks" and "Dead letter").
 *
 * A message enters the set when the dispatcher hands it back (a nack, the
 * consumer's ack timeout, its consumer left, a failover active change); it
 * is due at once or after a delay (the nack delay). The subscription takes
 * due messages out in id order and redelivers them before reading anything
 * newer, stamping each delivery with its redelivery count. A message that
 * would be redelivered more than max_redeliveries times is not queued: the
 * caller moves it to the dead-letter topic instead.
 *
 * Invariants
 *  1. count(id) is the number of times id was handed back since the
 *     subscription (this owner) first delivered it: a delivery carries it
 *     as its redelivery count. It only grows, until the message is acked
 *     (forget) or skipped by a seek (clear).
 *  2. A message is queued at most once; pop_due returns the smallest due id.
 *  3. With max_redeliveries > 0, push never queues a message whose count
 *     would exceed it: it answers SL_REPLAY_DEAD_LETTER and keeps the count
 *     (a failed dead-letter publish may push it again).
 *
 * Threads: none; the partition's serial only. Memory: O(messages handed
 * back and not yet acked), which the dispatcher bounds by permits.
 */
#ifndef SL_BROKER_SUBSCRIPTION_REPLAY_H
#define SL_BROKER_SUBSCRIPTION_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/dispatcher.h"

typedef struct sl_replay sl_replay;

/* max_redeliveries: 0 = never dead-letter. Aborts on out-of-memory. */
sl_replay *sl_replay_create(uint32_t max_redeliveries);

/* NULL is a no-op. */
void sl_replay_destroy(sl_replay *r);

typedef enum sl_replay_verdict {
  SL_REPLAY_QUEUED = 0,       /* redeliver it once due */
  SL_REPLAY_DEAD_LETTER = 1,  /* past max redeliveries: dead-letter it */
  SL_REPLAY_ALREADY = 2,      /* already queued: nothing changed */
} sl_replay_verdict;

/* Hands id back, due at due_ms (monotonic ms): its count grows by one. */
sl_replay_verdict sl_replay_push(sl_replay *r, sl_msg_id id, int64_t due_ms);

/* The smallest queued id due at now_ms (and above *after, unless after is
 * NULL), taken out of the queue (its count stays): true with *id and
 * *count, or false if none is due. `after` lets one dispatch pass go past
 * messages nobody can take now without trying them again. */
bool sl_replay_pop_due(sl_replay *r, int64_t now_ms, const sl_msg_id *after,
                       sl_msg_id *id, uint32_t *count);

/* Queues id without counting: a popped id nobody could take now, or a
 * message read for the first time that must wait (a key_shared key still
 * draining at another consumer). Nothing if it is queued already. */
void sl_replay_hold(sl_replay *r, sl_msg_id id, int64_t due_ms);

/* When the next queued message is due: false if none is queued. */
bool sl_replay_next_due(const sl_replay *r, int64_t *due_ms);

/* The redelivery count of id (0 if never handed back). */
uint32_t sl_replay_count(const sl_replay *r, sl_msg_id id);

/* Acked: id is forgotten (count and queue). */
void sl_replay_forget(sl_replay *r, sl_msg_id id);

/* Cumulative ack: every id at or before `upto` is forgotten. */
void sl_replay_forget_upto(sl_replay *r, sl_msg_id upto);

/* Seek: everything is forgotten. */
void sl_replay_clear(sl_replay *r);

/* Messages queued (due or not). */
size_t sl_replay_queued(const sl_replay *r);

#endif
