/*
 * Producer deduplication for one partition (DESIGN.md §6, §10.4).
 *
 * A producer numbers its messages with increasing sequence ids and resends
 * with the same ids after a reconnect. With deduplication on (a namespace
 * policy), a resent (producer, sequence id) that is already stored is
 * answered with its original message id and duplicate=true, and is not
 * stored again.
 *
 * State per producer: the highest sequence id handed to the managed ledger
 * ("pushed") and the highest one stored durably ("stored"), plus a ring of
 * the most recent stored runs (consecutive sequence ids in one entry share
 * one run) to answer a resend with its original id. A resend older than the
 * ring is still a duplicate, answered without an id.
 *
 * Failover: sl_dedup_snapshot() writes the stored state into managed-ledger
 * properties ("dedup:<producer>" -> "<seq> <ledger> <entry> <batch>", plus
 * "dedup-at" -> "<ledger> <entry>", the last entry the snapshot covers). A new
 * owner calls sl_dedup_restore() and then sl_dedup_stored() for every
 * message of every entry after "dedup-at", in log order; the state is then
 * what the old owner had durably stored.
 *
 * Invariants
 *  1. stored <= pushed for every producer; both only grow, except that
 *     sl_dedup_failed() moves pushed back to stored (the pending writes were
 *     not stored, so their resends must be accepted).
 *  2. A message is NEW only if its sequence id is above pushed: two sends of
 *     one (producer, sequence) are never both written.
 *  3. A snapshot holds only stored (durable) state, and "dedup-at" names an
 *     entry at or after every position in it.
 *
 * Threads: none of its own. One partition's dedup is used from that
 * partition's serial only (no locks).
 */
#ifndef SL_BROKER_DEDUP_H
#define SL_BROKER_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct sl_dedup sl_dedup;

/* A message's place in its partition (MessageId without the partition). */
typedef struct sl_dedup_id {
  uint64_t ledger_id;
  int64_t entry_id;
  int32_t batch_index;
} sl_dedup_id;

typedef enum sl_dedup_verdict {
  SL_DEDUP_NEW = 0,       /* above pushed: store it (then call push) */
  SL_DEDUP_STORED = 1,    /* at or below stored: a duplicate, already durable */
  SL_DEDUP_IN_FLIGHT = 2, /* above stored, at or below pushed: being written */
} sl_dedup_verdict;

/* Property keys of the snapshot. */
#define SL_DEDUP_PROP_PREFIX "dedup:"
#define SL_DEDUP_PROP_AT "dedup-at"

/* ring_runs: stored runs remembered per producer for original ids (0 = 64).
 * Aborts on out-of-memory (a server). */
sl_dedup *sl_dedup_create(size_t ring_runs);
/* NULL is a no-op. */
void sl_dedup_destroy(sl_dedup *d);

/* Judges one send. For SL_DEDUP_STORED, *orig gets the original id and
 * *orig_known says whether it is still remembered (else *orig is zeroed).
 * orig and orig_known may be NULL. An unknown producer's messages are NEW. */
sl_dedup_verdict sl_dedup_check(const sl_dedup *d, const char *producer,
                                uint64_t seq, sl_dedup_id *orig,
                                bool *orig_known);

/* A NEW message was handed to the managed ledger: pushed = seq. */
void sl_dedup_push(sl_dedup *d, const char *producer, uint64_t seq);

/* The message is durable at id (messages of one producer arrive in log
 * order). Also raises pushed (replay after a failover). */
void sl_dedup_stored(sl_dedup *d, const char *producer, uint64_t seq,
                     sl_dedup_id id);

/* Writes of this producer failed and will not be stored: pushed = stored. */
void sl_dedup_failed(sl_dedup *d, const char *producer);

/* The highest stored sequence of a producer (for ProducerOpen with resume).
 * false if the producer has stored nothing that is remembered. id may be
 * NULL; *id_known says whether its position is known (the entry that
 * restored it may be older than the ring). */
bool sl_dedup_last(const sl_dedup *d, const char *producer, uint64_t *seq,
                   sl_dedup_id *id, bool *id_known);

/* Producers remembered. */
size_t sl_dedup_count(const sl_dedup *d);

/* One managed-ledger property (strings are heap-allocated; see
 * sl_dedup_props_free). */
typedef struct sl_dedup_prop {
  char *key;
  char *value;
} sl_dedup_prop;

/* The stored state as properties: SL_DEDUP_PROP_AT = at (the last entry
 * whose messages have all been passed to sl_dedup_stored), then one
 * property per producer, most recently stored first, until max_bytes of
 * keys and values or max_props properties (the metadata service's limits,
 * minus what else the caller keeps there). Producers left out lose their
 * dedup state at the next failover; *dropped counts them (may be NULL).
 * *out is an array of *n_out properties the caller frees with
 * sl_dedup_props_free. */
void sl_dedup_snapshot(const sl_dedup *d, uint64_t at_ledger, int64_t at_entry,
                       size_t max_bytes, size_t max_props,
                       sl_dedup_prop **out, size_t *n_out, size_t *dropped);
void sl_dedup_props_free(sl_dedup_prop *props, size_t n);

/* Loads a snapshot into an empty dedup. Properties whose key has neither
 * snapshot name are ignored (they belong to someone else). *at_ledger and
 * *at_entry get "dedup-at" (0 and -1 when absent: replay everything).
 * SL_ECORRUPT for a malformed snapshot value (nothing is half-loaded: the
 * dedup is left empty); SL_EPRECOND if d is not empty. */
sl_status sl_dedup_restore(sl_dedup *d, const sl_dedup_prop *props, size_t n,
                           uint64_t *at_ledger, int64_t *at_entry, sl_err *err);

/* Forgets everything. */
void sl_dedup_clear(sl_dedup *d);

#endif
