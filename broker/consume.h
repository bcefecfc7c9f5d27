/*
 * Consume: the BrokerService.Consume bidi handler and the consume side of
 * each owned partition (DESIGN.md §6, issue 10). The stream contract is in
 * proto/broker.proto (ConsumeRequest / ConsumeResponse).
 *
 * The handler (consume.c) is thin: it checks and copies Subscribe, resolves
 * the partition's owner (a redirect if it is another broker), and posts
 * every request of the stream to the partition's serial as one call on its
 * subscription (broker/subscription.h). It encodes what comes back:
 * messages, ack receipts, active changes, seek done, end of topic,
 * redirects, Closed.
 *
 * The partition side (partition_consume.c) is the partition of the Produce
 * path (broker/produce_int.h: one table, one serial, one managed ledger,
 * the same ownership rules); a Consume stream loads it when no producer
 * did. It holds, per partition, an entry cache (broker/entry_cache.h) that
 * the produce path fills when an entry is durable, and the subscriptions by
 * name, each with its durable cursor (broker/cursor.h, opened or recovered
 * through the metadata service on the first Subscribe) and its sl_sub. It
 * wires the sl_sub ports: reads from the cache at the tail and from bookies
 * (bounded range reads of the managed ledger) behind it, deliveries to the
 * streams, failover active changes, ticks for ack timeouts and nack delays.
 * On a terminated partition (TerminateTopic) each consumer gets EndOfTopic
 * once its subscription has offered every entry and has nothing left to
 * redeliver (checked on joins and ticks; a seek ends it again later).
 *
 * Flow control (invariant 2): the client grants permits to the stream; the
 * stream hands them on to the dispatcher at most `window` at a time,
 * counting the messages still waiting in the stream's queue, so a consumer
 * that does not read holds the broker to its window, not to its permits.
 * Permits and the window count messages, never responses.
 *
 * Batches: a consumer that subscribed with max_messages_per_response > 1
 * gets the messages one dispatch round (one read: a run of the entry cache,
 * a bookie range read, a replayed entry) hands it in MessageBatch responses
 * of at most that many messages and at most a quarter of the gRPC message
 * limit (1 MiB at most) of bytes (broker/consume_batch.h); the batch goes
 * out when the read ends, or before any other response to that consumer,
 * so the stream's order is the order of delivery. A message too big for
 * the cap goes alone. Ids, redelivery counts and properties are per message
 * as without batches.
 *
 * Invariants
 *  1. Subscribed is the first response of a stream; nothing is delivered to
 *     a consumer before it.
 *  2. Per consumer, messages queued or batched and not yet written plus
 *     permits held by the dispatcher stay at or below the window.
 *  3. An AckReceipt with status OK is sent only once every ack of its Ack
 *     is durable in the cursor (cursor.h invariant 1).
 *  4. A stream ends once, with a Redirect (not or no longer the owner) or a
 *     Closed carrying the same status as the gRPC status.
 *
 * Threads: stream callbacks run on server worker threads; a partition's
 * consume work runs on its serial; responses are sent from the serial
 * (sl_rpc_call_send is thread-safe). Each stream's mu guards its write
 * queue and state; nothing is posted to a serial while it is held (serial.h
 * invariant 2).
 */
#ifndef SL_BROKER_CONSUME_H
#define SL_BROKER_CONSUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.slrpc.h"
#include "broker/dead_letter.h"
#include "broker/produce.h"
#include "common/status.h"

typedef struct sl_consume sl_consume;

typedef struct sl_consume_opts {
  sl_produce *produce;       /* retained: its partitions; outlives consume */
  uint32_t window;           /* permits per consumer at the dispatcher plus
                                messages queued or batched; 0 = 256 */
  size_t cache_bytes;        /* entry cache per partition; 0 = 16 MiB */
  int tick_ms;               /* ack timeout / nack delay check; 0 = 50 */
  size_t max_response_bytes; /* the server's gRPC message limit; batches
                                stay under a quarter of it; 0 =
                                SL_RPC_DEFAULT_MAX_MESSAGE */
} sl_consume_opts;

/* Creates the consume state and hooks it into the produce partitions
 * (before the broker serves). Aborts on out-of-memory. */
sl_status sl_consume_create(const sl_consume_opts *opts, sl_consume **out,
                            sl_err *err);

/* Fills h->consume_start and friends. The ctx must be an sl_broker
 * (service.h) whose consume is set. */
void sl_consume_handlers(sl_broker_service_handlers *h);

/* Sets where dead letters are published (broker/dead_letter.h; retained:
 * it outlives consume). Until then, or with NULL, a dead letter fails and
 * its subscription retries it on the next tick. Any thread. */
void sl_consume_set_dead_letter(sl_consume *c, sl_dead_letter *dl);

/* GetTopicStats: fills out->subscriptions of a partition this broker has
 * loaded, one per open subscription (backlog entries and bytes, unacked,
 * consumers, mark-delete). Waits up to timeout_ms for the partition's
 * serial, so call it from a thread that may block. False (nothing filled)
 * if the partition is not loaded here or did not answer in time. Free
 * what it filled with sl_consume_topic_stats_free. */
bool sl_consume_topic_stats(sl_consume *c, const char *partition, int timeout_ms,
                            Sluice__V1__TopicStats *out);
void sl_consume_topic_stats_free(Sluice__V1__TopicStats *out);

/* Frees it. Call after the server stopped and after sl_produce_destroy
 * dropped the partitions (which frees their consume side). */
void sl_consume_destroy(sl_consume *c);

#endif
