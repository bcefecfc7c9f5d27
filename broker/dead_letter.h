/*
 * Dead letters (issue 10): a message redelivered more than a
 * subscription's max_redeliveries times is published to the dead-letter
 * topic (by default "<topic>-<subscription>-DLQ", non-partitioned) with its
 * payload, key, event time and properties, plus "sl-original-id"
 * ("<ledger>:<entry>:<batch index>") and "sl-original-topic" (the source
 * partition). Only once it is durable there does the subscription ack it
 * on the original (subscription.h inv. 4). This is the `dead_letter` port
 * of sl_sub_ports.
 *
 * How one publish goes (all on the caller's serial)
 *   1. Lookup of the dead-letter topic through a broker (the broker's own
 *      address in production: it answers for local and remote owners
 *      alike). NOT_FOUND: the topic is created (CreateTopic, 0 partitions;
 *      ALREADY_EXISTS is fine) and looked up again.
 *   2. A Produce stream to the owner (generated stubs, rpc_astream): open
 *      with resume, one SendRequest, wait for its receipt. A redirect (the
 *      topic moved, or the lookup was stale) is followed to the owner it
 *      names, up to 4 hops, then looked up again. When the owner is this
 *      broker the stream is a loopback call into this broker's own Produce
 *      path, so a local and a remote owner get exactly the same treatment
 *      (dedup, ownership checks, redirects).
 *   3. The receipt decides (below); the stream is then closed.
 *
 * Deduplication (the dead-letter topic's namespace must deduplicate): a
 * dead letter of one message is always sent as the same (producer,
 * sequence), so a retry (lost receipt, ownership change, or a crash of
 * the source broker before the ack on the original was durable) is
 * answered "duplicate" and stored once.
 *   - producer "sl-dlq:<source partition>:<subscription>", sequence =
 *     ledger << 40 | entry << 16 | batch index (ids beyond 2^24 / 2^24 /
 *     2^16 use the per-message name below at once). Sequences of one
 *     producer must rise for dedup, and dead letters need not come in id
 *     order; so a receipt "duplicate" WITH the original id is a true
 *     duplicate (the owner remembers exactly that sequence), while
 *     "duplicate" WITHOUT an id is ambiguous (stored long ago, or a
 *     lower sequence never stored): then the message is sent again under
 *     its own producer "sl-dlq:<source partition>:<subscription>:<id>"
 *     with sequence 0, whose dedup is exact.
 *   So nothing is ever dropped as a false duplicate. A message stored
 *   under the shared name whose retry comes after the owner forgot that
 *   sequence (more than the dedup ring, 64 runs, of later dead letters, or
 *   an ownership change of the dead-letter topic without a snapshot past
 *   it) may be stored a second time under its own name.
 *
 * Invariants
 *  1. cb reports SL_OK only after a receipt OK (durable on Qa bookies) or
 *     a true duplicate for this message.
 *  2. Every publish ends with exactly one cb, on the publish's serial,
 *     never inside sl_dead_letter_publish.
 *  3. At most one Produce stream per publish is open at a time.
 *
 * Threads: sl_dead_letter_publish from any thread; everything of a
 * publish runs on its serial. The channel cache is guarded by dl->mu.
 */
#ifndef SL_BROKER_DEAD_LETTER_H
#define SL_BROKER_DEAD_LETTER_H

#include <stddef.h>
#include <stdint.h>

#include "common/serial.h"
#include "common/rpc_client.h"
#include "common/status.h"
#include "entry.pb-c.h"

#define SL_DLQ_PROP_ORIGINAL_ID "sl-original-id"
#define SL_DLQ_PROP_ORIGINAL_TOPIC "sl-original-topic"

typedef struct sl_dead_letter sl_dead_letter;

typedef struct sl_dead_letter_opts {
  const char *lookup_target;   /* any broker, host:port (the broker's own
                                  address); copied */
  int timeout_ms;              /* lookup, create and each stream; 0 = 10000 */
  const sl_rpc_channel_opts *channel; /* template for broker channels (TLS
                                  PEMs, which must outlive this; target
                                  unset); NULL = plaintext; copied */
} sl_dead_letter_opts;

/* One per broker: a cache of channels to brokers. Aborts on out-of-memory
 * (a server); SL_EINVAL without lookup_target. */
sl_status sl_dead_letter_create(const sl_dead_letter_opts *opts,
                                sl_dead_letter **out, sl_err *err);

/* Frees the channels. Every publish must have completed (its cb ran).
 * Not from a channel callback. NULL is a no-op. */
void sl_dead_letter_destroy(sl_dead_letter *dl);

/* The default dead-letter topic of a subscription: "<topic>-<sub>-DLQ",
 * where <topic> is the source without a "-partition-N" suffix. Writes at
 * most size bytes; SL_ETOOBIG if it does not fit or is over a topic
 * name's 255 bytes. */
sl_status sl_dead_letter_topic(const char *source, const char *subscription,
                               char *buf, size_t size, sl_err *err);

typedef struct sl_dead_letter_msg {
  const char *source;          /* the source partition; borrowed */
  const char *subscription;    /* borrowed */
  const char *topic;           /* dead-letter topic; NULL = default */
  uint64_t ledger_id;          /* the original id */
  int64_t entry_id;
  int32_t batch_index;
  const Sluice__V1__StoredMessage *msg; /* borrowed: copied before return */
} sl_dead_letter_msg;

typedef void (*sl_dead_letter_cb)(sl_status st, void *arg);

/* Publishes one dead letter (steps above); cb(st, arg) once, on serial
 * (retained until then): SL_OK (durable, or a true duplicate), else the
 * receipt's or the stream's status (SL_EUNAVAIL, SL_ETIMEDOUT, SL_EBUSY
 * while an earlier send of it is still in flight, ...): retry later.
 * Returns SL_OK, or SL_EINVAL / SL_ETOOBIG (bad names; cb never runs). */
sl_status sl_dead_letter_publish(sl_dead_letter *dl, const sl_dead_letter_msg *m,
                                 sl_serial *serial, sl_dead_letter_cb cb,
                                 void *arg, sl_err *err);

#endif
