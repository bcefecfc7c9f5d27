/*
 * Seek by publish time (issue 10, "Seek to a message id or a publish
 * time"): finds the first message of a partition whose publish_time_ms is
 * at or after T, so a subscription can be moved there (sl_sub_seek plus a
 * cursor reset; the Consume handler answers with SeekDone).
 *
 * How (one search, all of it on the caller's serial)
 *   1. Read the partition's ledger list from the metadata service (a
 *      missing list is an empty partition). The list is what the owner
 *      wrote before appending to any ledger in it (managed_ledger.h inv. 1),
 *      so the search sees every durable entry up to the moment it opens
 *      each ledger.
 *   2. Binary search over the ledgers for the first one whose last entry
 *      holds a message at or after T: each probe opens the ledger for
 *      reading (an OPEN one up to the LAC its bookies report) and reads
 *      one entry. An empty ledger stands for the next non-empty one.
 *   3. Binary search over that ledger's entries, one entry read a probe.
 *   4. In the entry found, the first message at or after T.
 *   So a search costs about log2(ledgers) + log2(entries per ledger) entry
 *   reads (each a single-entry range read) and one ledger open per probe.
 *
 * Invariants
 *  1. The answer is exact when publish times never decrease along the
 *     partition (one broker clock stamps them in append order). If they do
 *     decrease (a new owner's clock behind its predecessor's), the answer
 *     is still a message at or after T, but an earlier one at or after T
 *     in an entry the search did not probe may exist: seek by time is then
 *     approximate, never past the end.
 *  2. "At end" (no message at or after T) gives the position just past the
 *     last entry read (last ledger, last entry + 1): messages appended
 *     later are delivered from there, none before it is.
 *  3. Nothing is written: a search may run on any broker, owner or not.
 *
 * Threads: callbacks run on opts->serial, never inside the call.
 */
#ifndef SL_BROKER_SEEK_TIME_H
#define SL_BROKER_SEEK_TIME_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/ledger/ledger.h"
#include "broker/managed_ledger.h"
#include "common/rpc_client.h"
#include "common/serial.h"
#include "common/status.h"

typedef struct sl_seek_time_opts {
  sl_ledger_client *ledgers;    /* retained: outlives the search */
  sl_rpc_channel *metadata;     /* retained: outlives the search */
  const char *partition;        /* copied */
  int64_t publish_time_ms;      /* T (Unix ms) */
  sl_serial *serial;            /* retained (referenced); required */
  int metadata_timeout_ms;      /* 0 = 5000 */
} sl_seek_time_opts;

typedef struct sl_seek_time_result {
  sl_ml_pos pos;                /* the entry to read from */
  int32_t batch_index;          /* its first message at or after T (0 at
                                   end) */
  bool at_end;                  /* no message at or after T (inv. 2); pos
                                   is (0, 0) for an empty partition */
  uint32_t entries_read;        /* probes, for tests and logs */
} sl_seek_time_result;

/* Completion: st SL_OK with *r (borrowed for the call), else why (details
 * borrowed): SL_EUNAVAIL (metadata or bookies), SL_ECORRUPT (an entry
 * that does not decode), the ledger client's read errors. */
typedef void (*sl_seek_time_cb)(sl_status st, const char *details,
                                const sl_seek_time_result *r, void *arg);

/* Starts a search. SL_OK and cb runs once, later, on opts->serial; or
 * SL_EINVAL (missing option) and cb never runs. */
sl_status sl_seek_time_async(const sl_seek_time_opts *opts, sl_seek_time_cb cb,
                             void *arg, sl_err *err);

#endif
