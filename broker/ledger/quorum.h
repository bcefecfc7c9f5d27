/*
 * Quorum rules of a ledger (DESIGN.md §3), as pure functions over bit masks
 * of ensemble slots: striping, when an add is complete, when fencing has
 * reached enough bookies, and what recovery may conclude about one entry.
 * No I/O and no state: the writer, the recovery and the reader call these,
 * and quorum_test checks them exhaustively on small ensembles.
 *
 * A slot is a position 0 .. E-1 in one ensemble segment; bit s of a mask is
 * slot s. Entry e is stored on the Qw slots (e + i) mod E, i = 0 .. Qw-1:
 * its write set.
 *
 * Invariants (what the rules guarantee, given E >= Qw >= Qa >= 1)
 *  1. An entry is complete only with Qa acks from slots of its write set.
 *  2. fence_covers() is true only when every one of the E write sets has at
 *     least Qw - Qa + 1 fenced slots: then at most Qa - 1 bookies of any write
 *     set can still take a plain add, so no new add can complete.
 *  3. verdict() says ABSENT only when Qw - Qa + 1 slots of the write set gave
 *     a valid "not found": then at most Qa - 1 copies can exist, so the add
 *     was never complete and the writer never reported it. FOUND needs one
 *     good copy. Anything else is UNKNOWN: recovery must not guess.
 */
#ifndef SL_BROKER_LEDGER_QUORUM_H
#define SL_BROKER_LEDGER_QUORUM_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

/* Slots fit in one uint64_t mask. */
#define SL_QUORUM_MAX_ENSEMBLE 64

typedef struct sl_quorum {
  uint32_t e;   /* ensemble size */
  uint32_t qw;  /* write quorum */
  uint32_t qa;  /* ack quorum */
} sl_quorum;

/* SL_OK if 1 <= qa <= qw <= e <= SL_QUORUM_MAX_ENSEMBLE, else SL_EINVAL
 * ("ledger: need E >= Qw >= Qa >= 1, got E=2 Qw=3 Qa=2"). */
sl_status sl_quorum_check(const sl_quorum *q, sl_err *err);

/* The slot of the i-th bookie (i < qw) of entry's write set. entry >= 0. */
uint32_t sl_quorum_slot(const sl_quorum *q, int64_t entry, uint32_t i);

/* The write set of entry as a mask. */
uint64_t sl_quorum_write_set(const sl_quorum *q, int64_t entry);

/* Bits set in mask. */
uint32_t sl_quorum_count(uint64_t mask);

/* True if `acked` holds Qa slots of entry's write set (invariant 1). */
bool sl_quorum_complete(const sl_quorum *q, int64_t entry, uint64_t acked);

/* True if every write set has Qw - Qa + 1 slots in `fenced` (invariant 2). */
bool sl_quorum_fence_covers(const sl_quorum *q, uint64_t fenced);

typedef enum sl_quorum_verdict {
  SL_QUORUM_UNKNOWN = 0,  /* too few answers to decide */
  SL_QUORUM_FOUND = 1,    /* some slot holds a good copy */
  SL_QUORUM_ABSENT = 2,   /* never completed: the ledger ends before it */
} sl_quorum_verdict;

/* What recovery knows about `entry` (invariant 3). `found`: slots that
 * returned a good copy. `absent`: slots whose "not found" is a valid vote
 * (fenced, and the instance that held the segment); the caller leaves out
 * every other negative answer. Bits outside the write set are ignored. */
sl_quorum_verdict sl_quorum_verdict_of(const sl_quorum *q, int64_t entry,
                                       uint64_t found, uint64_t absent);

/* One range read of a cover (sl_quorum_cover): slot `slot` serves the
 * entries that have it among the first `depth` members of their write set,
 * i.e. (slot - e) mod E < depth: a bookie's striped ReadEntries with write
 * quorum `depth` (bookie.proto). */
typedef struct sl_quorum_pick {
  uint32_t slot;
  uint32_t depth;  /* 1 .. Qw */
} sl_quorum_pick;

/* True if pick serves entry (entry >= 0). */
bool sl_quorum_serves(const sl_quorum *q, const sl_quorum_pick *pick, int64_t entry);

/*
 * Chooses range reads that together serve every entry of [first, last]
 * (0 <= first <= last) from slots in `usable`, greedily: next the slot that
 * serves the most entries not yet served (counted by entry mod E), ties to
 * the smaller depth, then to the first slot from `start` on (so callers
 * rotating `start` spread the load), each with the smallest depth that
 * serves its new entries (so the ranges overlap as little as they can: with
 * E=3 and Qw=2, two picks and no entry twice). Entries whose write set has
 * no usable slot are served by no pick. Writes at most E picks to picks[]
 * and returns their number.
 */
uint32_t sl_quorum_cover(const sl_quorum *q, int64_t first, int64_t last,
                         uint32_t start, uint64_t usable, sl_quorum_pick *picks);

#endif
