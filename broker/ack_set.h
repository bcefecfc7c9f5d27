/*
 * Ack set: the acknowledged positions beyond a cursor's mark-delete, with no
 * cap, in memory and in a compact encoding (broker/cursor.h stores it).
 *
 * In memory, per ledger, entry ids are grouped in blocks of
 * SL_ACK_BLOCK entries: a block holds a bitmap (1 bit per entry), or no
 * bitmap at all once every entry of it is acked. So a million scattered
 * holes cost about 1 bit per entry, and long acked runs cost almost nothing.
 * Messages acked one by one inside a batched entry are kept apart, per
 * entry, as a bitmap of batch indexes, until the whole batch is acked; then
 * the entry moves to the blocks.
 *
 * Encoding (all integers are unsigned LEB128 varints; ids are deltas from
 * the previous one in the same list, so sorted data stays small)
 *   set     := version(=1) n_ledgers ledger* n_batches batch*
 *   ledger  := d_ledger_id n_blocks block*
 *   block   := d_block_index kind body
 *              kind 0 FULL: no body (every entry of the block)
 *              kind 1 BITMAP: SL_ACK_BLOCK / 8 bytes, LSB first
 *              kind 2 RUNS: n_runs (gap, len - 1)*, offsets from the end of
 *                the previous run (the first from the block start)
 *   batch   := d_ledger_id d_entry_id batch_size bitmap(ceil(size / 8))
 *   The encoder picks, per block, the smaller of BITMAP and RUNS. Dense
 *   areas become RUNS or FULL, scattered ones BITMAP; every other entry
 *   acked costs SL_ACK_BLOCK / 8 + ~4 bytes per block.
 *
 * Invariants
 *  1. An entry is either in the blocks (fully acked) or in the batch list
 *     (partly acked), never both.
 *  2. A block's count is the number of its set bits; bits == NULL iff the
 *     block is full. Empty blocks and ledgers are removed.
 *  3. decode(encode(s)) holds exactly the same acks as s. Decoding ADDS to
 *     the set it is given (a snapshot, then deltas), and rejects malformed
 *     input with SL_ECORRUPT, never reading past its end.
 *
 * Not thread-safe: one owner (the cursor's serial).
 */
#ifndef SL_BROKER_ACK_SET_H
#define SL_BROKER_ACK_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/status.h"

#define SL_ACK_BLOCK 4096            /* entries per block */
#define SL_ACK_MAX_BATCH 65536       /* largest batch size accepted */

typedef struct sl_ack_block {
  uint64_t index;                    /* entries [index*BLOCK, +BLOCK) */
  uint32_t count;                    /* acked entries in the block */
  uint64_t *bits;                    /* NULL when full (invariant 2) */
} sl_ack_block;

typedef struct sl_ack_ledger {
  uint64_t ledger_id;
  sl_ack_block *blocks;              /* sorted by index */
  size_t n, cap;
} sl_ack_ledger;

typedef struct sl_ack_batch {
  uint64_t ledger_id;
  int64_t entry_id;
  uint32_t size;                     /* messages in the batched entry */
  uint32_t count;                    /* of them acked */
  uint64_t *bits;
} sl_ack_batch;

typedef struct sl_ack_set {
  sl_ack_ledger *ledgers;            /* sorted by ledger id */
  size_t n_ledgers, cap_ledgers;
  sl_ack_batch *batches;             /* sorted by (ledger, entry) */
  size_t n_batches, cap_batches;
  uint64_t entries;                  /* fully acked entries in the set */
} sl_ack_set;

#define SL_ACK_SET_INIT {.ledgers = NULL, .batches = NULL, .entries = 0}

void sl_ack_set_init(sl_ack_set *s);
/* Frees everything; s is empty afterwards. */
void sl_ack_set_release(sl_ack_set *s);
bool sl_ack_set_empty(const sl_ack_set *s);

/* Adds a whole entry (entry_id >= 0). True if it was not fully acked
 * before. A partial batch of that entry is dropped (invariant 1). */
bool sl_ack_set_add(sl_ack_set *s, uint64_t ledger_id, int64_t entry_id);

/* Adds message idx of a batched entry of `size` messages. Returns SL_OK and
 * sets *complete when the whole entry is now acked (it moved to the
 * blocks); SL_EINVAL if idx >= size, size is 0 or above SL_ACK_MAX_BATCH,
 * or an earlier partial ack of the entry gave another size. */
sl_status sl_ack_set_add_batch(sl_ack_set *s, uint64_t ledger_id,
                               int64_t entry_id, uint32_t idx, uint32_t size,
                               bool *complete, sl_err *err);

bool sl_ack_set_has(const sl_ack_set *s, uint64_t ledger_id, int64_t entry_id);
/* The entry is fully acked or message idx of it is. */
bool sl_ack_set_has_batch(const sl_ack_set *s, uint64_t ledger_id,
                          int64_t entry_id, uint32_t idx);
/* True if the entry has a partly acked batch. */
bool sl_ack_set_partial(const sl_ack_set *s, uint64_t ledger_id,
                        int64_t entry_id);

/* Removes everything at or before (ledger_id, entry_id): every ledger below
 * ledger_id, and entries <= entry_id of ledger_id. */
void sl_ack_set_drop_through(sl_ack_set *s, uint64_t ledger_id,
                             int64_t entry_id);

/* Fully acked entries of one ledger with ids in [from, to] (inclusive). */
uint64_t sl_ack_set_count_range(const sl_ack_set *s, uint64_t ledger_id,
                                int64_t from, int64_t to);

/* The first id >= from in the ledger that is NOT fully acked (skips full
 * blocks at once). */
int64_t sl_ack_set_next_gap(const sl_ack_set *s, uint64_t ledger_id,
                            int64_t from);

/* Adds every ack of `src` to `dst` (src unchanged). */
void sl_ack_set_merge(sl_ack_set *dst, const sl_ack_set *src);

/* Appends the encoding of s to out. */
void sl_ack_set_encode(const sl_ack_set *s, sl_buf *out);

/* Adds the acks encoded in [data, data+len) to s (invariant 3). On
 * SL_ECORRUPT s holds some of them; the caller drops it. */
sl_status sl_ack_set_decode(sl_ack_set *s, const void *data, size_t len,
                            sl_err *err);

/* The varints of the encoding, for the cursor's ledger entries: put appends
 * one; get reads one at *p (advancing it) and returns false on a truncated
 * or over-long varint. */
void sl_ack_varint_put(sl_buf *out, uint64_t v);
bool sl_ack_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v);

#endif
