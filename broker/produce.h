/*
 * Produce: the BrokerService.Produce bidi handler and the partitions it
 * writes (DESIGN.md §6, issue 9 "Produce").
 *
 * The handler is thin: it decodes a stream message, checks it, encodes each
 * message into its stored form (entry.proto StoredMessage, publish time
 * stamped) on the server worker thread, and hands it to the partition. The
 * partition (one per owned partition, all of its work on one sl_serial
 * shared with its managed ledger) judges duplicates, groups messages that
 * arrive together into one entry, appends it, and when the entry is
 * durable sends the receipts.
 *
 * Partition life
 *   LOADING   first producer asked for it: read the namespace policy, open
 *             the managed ledger as owner (recovery), restore the dedup
 *             snapshot and replay the entries after it. Producers wait.
 *   READY     sends accepted (none once the partition is terminated: its
 *             producers are refused, its consumers read on)
 *   CLOSING   Unload or graceful stop: new sends refused (redirect), pending
 *             entries complete, the managed ledger closes, producers are
 *             redirected, ownership is told (sl_ownership_unloaded)
 *   GONE      fenced, session lost or failed: pending sends get no receipt,
 *             producers are redirected and their streams end; the
 *             partition is dropped (sl_ownership_drop when fenced)
 *
 * Grouping: messages accumulate in the partition's open group. The group
 * becomes an entry at once while fewer than group_inflight entries are
 * pending (so one message alone is not delayed), otherwise when it reaches
 * group_max_msgs or group_max_bytes, when an entry completes, or when
 * group_delay_ms has passed since its first message.
 *
 * Invariants
 *  1. A receipt with status OK is sent only after the managed ledger reported
 *     the message's entry durable (Qa bookies); receipts of one producer go
 *     out in the order its messages were received.
 *  2. With deduplication on, a (producer, sequence) already stored is never
 *     appended again: it is answered with its original id, duplicate=true.
 *     A resend of one still in flight is refused (BUSY) rather than written
 *     twice.
 *  3. Every message received after open gets exactly one receipt, or the
 *     stream ends (redirect or error) with it unanswered.
 *  4. In-flight bytes (received, not yet answered) stay below
 *     max_inflight_per_producer per stream and max_inflight_bytes per
 *     broker, up to one stream message over: beyond that the stream's reads
 *     pause until receipts bring it under half.
 *
 * Threads: stream callbacks run on server worker threads; a partition's work
 * runs on its serial; receipts are sent from the serial (sl_rpc_call_send is
 * thread-safe). Locks: produce->mu guards the partition table and the list
 * of paused streams; each stream's mu guards its receipt queue and
 * counters. Lock order: produce->mu, then a stream's mu.
 */
#ifndef SL_BROKER_PRODUCE_H
#define SL_BROKER_PRODUCE_H

#include <stddef.h>
#include <stdint.h>

#include "broker.slrpc.h"
#include "broker/ledger/ledger.h"
#include "broker/managed_ledger.h"
#include "broker/ownership.h"
#include "common/rpc_client.h"
#include "common/status.h"

typedef struct sl_produce sl_produce;

typedef struct sl_produce_opts {
  sl_rpc_channel *metadata;          /* retained: outlives produce */
  sl_ledger_client *ledgers;         /* retained: outlives produce */
  size_t max_inflight_per_producer;  /* bytes; 0 = 8 MiB */
  size_t max_inflight_bytes;         /* per broker; 0 = 256 MiB */
  uint32_t group_max_msgs;           /* messages per entry; 0 = 1000 */
  size_t group_max_bytes;            /* bytes per entry; 0 = 1 MiB */
  int group_delay_ms;                /* 0 = 2 */
  uint32_t group_inflight;           /* entries pending before grouping
                                        waits; 0 = 2 */
  uint32_t dedup_snapshot_entries;   /* snapshot every N entries; 0 = 1000 */
  int metadata_timeout_ms;           /* 0 = 5000 */
  int64_t trim_interval_ms;          /* 0 = 60 s; < 0 = never (tests) */
} sl_produce_opts;

/* Creates the produce state (no partition yet). Aborts on out-of-memory. */
sl_status sl_produce_create(const sl_produce_opts *opts, sl_produce **out,
                            sl_err *err);

/* Sets the ownership module (after it was created with sl_produce_hooks).
 * Until then every open is answered UNAVAILABLE. Any thread. */
void sl_produce_set_ownership(sl_produce *p, sl_ownership *own);

/* Hooks to pass to sl_ownership_create: unload closes the partition
 * gracefully, lost fails it at once. */
sl_ownership_hooks sl_produce_hooks(sl_produce *p);

/* Terminates `partition`, owned here at `epoch` (TerminateTopic): the
 * messages already accepted are stored, then the managed ledger is
 * terminated (sl_ml_terminate_async); from then on every producer of the
 * partition, attached or new, is refused with SL_EPRECOND ("terminated"),
 * while consumers go on reading. cb runs once, on the partition's serial,
 * with the last entry as sl_ml_terminate_async gives it:
 * SL_OK also when it was terminated already; SL_EBUSY while the partition
 * loads or a terminate runs (ask again); SL_EUNAVAIL when it is moving. */
void sl_produce_terminate(sl_produce *p, const char *partition, uint64_t epoch,
                          sl_ml_terminate_cb cb, void *arg);

/* Fills h->produce_start and friends (ctx must be the sl_produce). */
void sl_produce_handlers(sl_broker_service_handlers *h);

/* Frees everything. Call after the server stopped (no stream left) and
 * before the ledger client and metadata channel go. Partitions still open
 * are dropped as after a crash (their ledgers left for recovery). */
void sl_produce_destroy(sl_produce *p);

#endif
