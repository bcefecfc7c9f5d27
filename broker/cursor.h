/*
 * Cursor: one subscription's durable read state on one partition (DESIGN.md
 * §6, issue 10 "Cursors"). It holds the mark-delete position (every entry at
 * or before it is acknowledged) plus EVERY ack beyond it: whole entries and
 * single messages inside batched entries (sl_ack_set, broker/ack_set.h). It
 * persists that state, batched, with a bounded delay and rate, and recovers
 * it when a new owner takes the partition over. Dispatchers (consume) ask it
 * which positions are still unacked; it knows nothing of consumers.
 *
 * Where the state lives (the metadata record cursors/<partition>/<sub> is
 * always the root; every write to it is a CAS on the version we last read or
 * wrote, with our ownership epoch)
 *   INLINE   the encoded ack set fits in inline_max_bytes: it is stored in
 *            the record itself (CursorInfo.ack_state), one CAS per flush.
 *   LEDGER   larger: the record points at a cursor ledger
 *            (CursorInfo.ack_ledger: ledger id + the entry where the latest
 *            snapshot starts). The ledger holds a snapshot (the whole ack set,
 *            in parts of at most 1 MiB) followed by deltas (the acks and the
 *            mark-delete of one flush each). A flush is one ledger append,
 *            no metadata write. When the deltas since the snapshot outgrow
 *            the snapshot (or a seek happens, or the cursor ledger changed
 *            its ensemble: its older entries lack a copy on the replaced
 *            bookie, and a new ledger frees the old one at once instead of
 *            leaving it to auto-recovery), the state is rewritten: a new
 *            ledger with a fresh snapshot, a CAS of the record onto it, then
 *            the old ledger is deleted. The record's mark_delete is refreshed
 *            with every CAS (it lags in LEDGER mode, which is safe: the
 *            managed ledger's trim only needs a position at or before the
 *            true mark-delete).
 *   The state moves back to INLINE when it shrinks below inline_max_bytes / 2
 *   (hysteresis, so a cursor at the threshold does not flap).
 *
 * Open (sl_cursor_open_async), as the partition's owner with epoch E
 *   1. GetCursor. NOT_FOUND: a new subscription; the cursor starts at the
 *      initial position of the options and the record is created (CAS with
 *      version 0) before the open callback runs.
 *   2. INLINE: decode the ack set from the record.
 *      LEDGER: recover the cursor ledger with epoch E (fence + close: the old
 *      owner can add no delta any more), read it from the snapshot entry to
 *      its end, apply the snapshot, then every delta in order.
 *   3. The mark-delete advances over acks that became contiguous.
 *   A recovered cursor ledger is never written again: the next flush that
 *   needs a ledger writes a new snapshot into a new one.
 *
 * Persistence (acks are batched)
 *   Every change (ack, cumulative ack, seek) marks the cursor dirty. A flush
 *   starts persist_delay_ms after the first dirty change, but never sooner
 *   than min_flush_interval_ms after the previous flush started, and only one
 *   flush is in flight: so a cursor writes at most 1000 / min_flush_interval
 *   times per second, however fast acks come. A flush covers every change
 *   made before it started; the changes made during it wait for the next.
 *
 * Invariants
 *  1. An ack's durable callback runs with SL_OK only after a flush that
 *     contains it is durable (record CAS done, or ledger append on Qa bookies
 *     and the record pointing at that ledger). Callbacks run in ack order.
 *  2. Durable state only grows between seeks: a flush never persists less
 *     than an earlier flush did, except by sl_cursor_seek. So after a crash
 *     the recovered cursor holds every ack whose durable callback ran
 *     SL_OK, and possibly some later ones; nothing acked durably is lost,
 *     and an ack that was not yet durable only causes redelivery.
 *  3. The mark-delete never moves back, except by sl_cursor_seek.
 *  4. The record always names a ledger whose snapshot is complete: the CAS
 *     onto a new cursor ledger happens after its snapshot parts are durable,
 *     and the old ledger is deleted only after that CAS.
 *  5. A lost CAS, a stale epoch or a fenced cursor ledger moves the cursor
 *     to FENCED (another owner exists): nothing more is written, pending and
 *     later durable callbacks get SL_EFENCED. Acks are still accepted in
 *     memory (so dispatch code needs no special case) but never persisted.
 *  6. No cap: every ack hole is kept in memory and persisted, however many.
 *
 * States and the function behind each transition
 *   OPENING   reading the record, recovering the ledger   sl_cursor_open_async
 *   ACTIVE    acks accepted, flushes run                  open done
 *   CLOSING   last flush running                          sl_cursor_close_async
 *   CLOSED    nothing more is written                     close done
 *   FENCED    another owner; nothing more is written      lost CAS, stale
 *                                                         epoch, ledger fenced
 *   FAILED    metadata or bookies failed for good; acks   I/O, no bookies,
 *             are in memory only, the owner should give   bad stored state
 *             the partition up
 *   A flush that fails with SL_EUNAVAIL (metadata or bookies briefly away) is
 *   retried after retry_ms; the cursor stays ACTIVE and its acks stay dirty.
 *
 * Positions and the chain
 *   Positions are (ledger id, entry id) as in managed_ledger.h; a message is
 *   a position plus its index in the batched entry. Advancing the
 *   mark-delete across a ledger boundary, finding the next unacked position
 *   and counting the backlog need the partition's chain of ledgers: the
 *   caller passes it at open (sl_cursor_chain) and tells the cursor of every
 *   newly durable entry (sl_cursor_extend). Positions past the chain's end
 *   are refused (SL_ERANGE): nobody can have read them.
 *
 * Threads: everything of one cursor runs on its serial (the partition's, in
 * the options, shared with the managed ledger). Every function here except
 * the stats getter must be called on that serial; every callback runs on it,
 * never inside the call that started the operation.
 */
#ifndef SL_BROKER_CURSOR_H
#define SL_BROKER_CURSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/ledger/ledger.h"
#include "broker/managed_ledger.h"
#include "common/rpc_client.h"
#include "common/serial.h"
#include "common/status.h"

typedef struct sl_cursor sl_cursor;

/* One ledger of the partition's chain, oldest first. */
typedef struct sl_cursor_ledger {
  uint64_t ledger_id;
  int64_t entries;             /* entries it holds so far (ids 0..entries-1) */
  uint64_t bytes;              /* their bytes, if known (0 = unknown) */
} sl_cursor_ledger;

typedef struct sl_cursor_chain {
  const sl_cursor_ledger *ledgers; /* borrowed for the call; copied */
  size_t n;
} sl_cursor_chain;

/* Where a new subscription starts. */
typedef enum sl_cursor_initial {
  SL_CURSOR_LATEST = 0,        /* after the chain's last entry */
  SL_CURSOR_EARLIEST = 1,      /* before the chain's first entry */
} sl_cursor_initial;

typedef enum sl_cursor_state {
  SL_CURSOR_OPENING = 0,
  SL_CURSOR_ACTIVE = 1,
  SL_CURSOR_CLOSING = 2,
  SL_CURSOR_CLOSED = 3,
  SL_CURSOR_FENCED = 4,
  SL_CURSOR_FAILED = 5,
} sl_cursor_state;

/* Called once, on the serial, when the cursor becomes FENCED or FAILED.
 * details is borrowed. */
typedef void (*sl_cursor_lost_cb)(sl_cursor *c, sl_status st,
                                  const char *details, void *arg);

typedef struct sl_cursor_opts {
  sl_ledger_client *ledgers;   /* retained: outlives the cursor */
  sl_rpc_channel *metadata;    /* retained: outlives the cursor */
  sl_serial *serial;           /* retained (referenced); required */
  const char *partition;       /* copied */
  const char *subscription;    /* copied */
  uint64_t epoch;              /* our ownership epoch of the partition */
  int subscription_type;       /* SubscriptionType, stored in the record */
  sl_cursor_initial initial;   /* for a new subscription */
  sl_cursor_chain chain;       /* the partition's ledgers now */
  uint32_t ensemble_size;      /* cursor ledgers' E, Qw, Qa; 0 = 3, 2, 2 */
  uint32_t write_quorum;
  uint32_t ack_quorum;
  size_t inline_max_bytes;     /* 0 = 64 KiB (see cursor.c for the figures) */
  int persist_delay_ms;        /* 0 = 100 */
  int min_flush_interval_ms;   /* 0 = 100 */
  int retry_ms;                /* after SL_EUNAVAIL; 0 = 1000 */
  int metadata_timeout_ms;     /* per metadata call; 0 = 5000 */
  sl_cursor_lost_cb on_lost;   /* may be NULL */
  void *lost_arg;
} sl_cursor_opts;

/* Completion of open: on SL_OK the callback owns *c (sl_cursor_destroy or
 * sl_cursor_close_async). Else c is NULL and details says why:
 * SL_ESTALE_EPOCH / SL_EFENCED / SL_EVERSION (another owner), SL_EUNAVAIL,
 * SL_ECORRUPT (stored state does not decode). */
typedef void (*sl_cursor_open_cb)(sl_status st, const char *details,
                                  sl_cursor *c, void *arg);

/* Opens (creating if new) the cursor of (partition, subscription) as the
 * partition's owner, recovering its durable state (steps above). Returns
 * SL_OK and cb runs later on opts->serial, or SL_EINVAL (missing option,
 * bad name) and cb never runs. */
sl_status sl_cursor_open_async(const sl_cursor_opts *opts, sl_cursor_open_cb cb,
                               void *arg, sl_err *err);

/* Durable callback of an ack (invariant 1): SL_OK once durable; else
 * SL_EFENCED, SL_EUNAVAIL / SL_EIO (FAILED), SL_ECANCELED (destroyed). */
typedef void (*sl_cursor_durable_cb)(sl_status st, void *arg);

/* The partition grew: every entry up to `last` is durable (last is in the
 * chain's last ledger, or the first entry(s) of a new ledger, whose id is
 * above every chain ledger's: a rollover). bytes: the new entries' bytes,
 * 0 if unknown. Cheap: call it from the append callback. */
void sl_cursor_extend(sl_cursor *c, sl_ml_pos last, uint64_t bytes);

/*
 * Acknowledges one message: the entry at pos, or (batch_size > 1) the
 * message batch_index of the batched entry at pos. An entry counts as acked
 * once all its batch_size messages are. Acking something already acked
 * (or at or before the mark-delete) is not an error. If cb is not NULL it
 * runs once, when the ack is durable or can no longer become so.
 * Returns SL_OK (cb will run), or an error and cb never runs:
 * SL_EINVAL (batch_index >= batch_size, batch_size > 65536, or a batch_size
 * different from an earlier partial ack of the same entry), SL_ERANGE (pos
 * is not in the chain), SL_EPRECOND (CLOSING or CLOSED).
 */
sl_status sl_cursor_ack(sl_cursor *c, sl_ml_pos pos, uint32_t batch_index,
                        uint32_t batch_size, sl_cursor_durable_cb cb, void *arg,
                        sl_err *err);

/* Acknowledges every message at or before pos (cumulative ack): the
 * mark-delete moves to pos if it is ahead, then over contiguous acks.
 * Errors as sl_cursor_ack (no SL_EINVAL). */
sl_status sl_cursor_ack_cumulative(sl_cursor *c, sl_ml_pos pos,
                                   sl_cursor_durable_cb cb, void *arg,
                                   sl_err *err);

/* Acknowledges every message before `to` (message TTL, backlog eviction):
 * the mark-delete moves to the entry just before it if it is ahead, acks
 * after it are kept. `to` is an entry of a ledger of the chain or just past
 * that ledger's end (SL_ERANGE otherwise); SL_EPRECOND unless open. cb as
 * for sl_cursor_ack. */
sl_status sl_cursor_ack_before(sl_cursor *c, sl_ml_pos to, sl_cursor_durable_cb cb, void *arg,
                               sl_err *err);

/* True if the entry at pos is fully acked (at or before the mark-delete, or
 * every message of it acked). */
bool sl_cursor_is_acked(const sl_cursor *c, sl_ml_pos pos);

/* True if message batch_index of the entry at pos is acked (whole entry
 * acked, or that index acked individually). For dispatchers that skip the
 * acked messages of a partly acked batch on redelivery. */
bool sl_cursor_is_batch_acked(const sl_cursor *c, sl_ml_pos pos,
                              uint32_t batch_index);

/* Everything at or before this position is acked. {first ledger, -1} when
 * nothing is (EARLIEST on a chain whose first ledger is that one). */
sl_ml_pos sl_cursor_mark_delete(const sl_cursor *c);

/* The first position after `after` that is not fully acked and is in the
 * chain. Pass the mark-delete to get the oldest unacked message's entry.
 * Returns false when every position up to the chain's end is acked. */
bool sl_cursor_next_unacked(const sl_cursor *c, sl_ml_pos after,
                            sl_ml_pos *out);

/*
 * Seek (reset): forgets every ack and moves the mark-delete to just before
 * `to` (so `to` is the next unacked position); {0, 0} = the chain's start,
 * {UINT64_MAX, 0} = after the chain's end. The new state is persisted as a
 * snapshot; cb (may be NULL) runs when it is durable. Durable callbacks of
 * earlier acks still run as usual. SL_ERANGE if `to` is neither in the chain
 * nor just past its end; SL_EPRECOND unless ACTIVE.
 */
sl_status sl_cursor_seek(sl_cursor *c, sl_ml_pos to, sl_cursor_durable_cb cb,
                         void *arg, sl_err *err);

/* Starts a flush now if the cursor is dirty (e.g. before a graceful
 * handover); cb (may be NULL) runs when everything acked before the call is
 * durable. SL_EPRECOND unless ACTIVE. */
sl_status sl_cursor_flush(sl_cursor *c, sl_cursor_durable_cb cb, void *arg,
                          sl_err *err);

typedef struct sl_cursor_backlog {
  uint64_t entries;            /* entries after the mark-delete not fully
                                  acked (a partly acked batch counts as 1) */
  uint64_t bytes;              /* estimate from the chain's byte counts
                                  (0 if unknown) */
  uint64_t acked_beyond;       /* entries acked after the mark-delete */
} sl_cursor_backlog;

void sl_cursor_backlog_get(const sl_cursor *c, sl_cursor_backlog *out);

/* Graceful close: flushes what is dirty, then CLOSED. cb runs once. The
 * cursor ledger (if any) is closed; the record keeps pointing at it. */
typedef void (*sl_cursor_done_cb)(sl_status st, const char *details,
                                  void *arg);
sl_status sl_cursor_close_async(sl_cursor *c, sl_cursor_done_cb cb, void *arg,
                                sl_err *err);

/* Deletes the subscription's durable state: the record (DeleteCursor with
 * our epoch) and its cursor ledger. The cursor becomes CLOSED first; cb runs
 * once. The caller still destroys it. */
sl_status sl_cursor_delete_async(sl_cursor *c, sl_cursor_done_cb cb,
                                 void *arg, sl_err *err);

/* Frees the cursor without flushing (as a crash would: changes not yet
 * durable are lost and will be redelivered). Pending durable callbacks get
 * SL_ECANCELED, possibly after this returns. Serial only; NULL is a no-op. */
void sl_cursor_destroy(sl_cursor *c);

typedef struct sl_cursor_stats {
  sl_cursor_state state;
  bool in_ledger;              /* LEDGER mode (else INLINE) */
  uint64_t ack_ledger;         /* cursor ledger id, 0 if none */
  uint64_t stored_bytes;       /* encoded ack set at the last snapshot or
                                  inline write */
  uint64_t delta_bytes;        /* deltas appended since that snapshot */
  uint64_t flushes;            /* flushes done */
  uint64_t snapshots;          /* snapshots written (ledger rewrites) */
  uint64_t dirty_acks;         /* changes not yet durable */
} sl_cursor_stats;

/* Thread-safe snapshot (fields read one by one). */
void sl_cursor_stats_get(const sl_cursor *c, sl_cursor_stats *out);

const char *sl_cursor_subscription(const sl_cursor *c); /* borrowed */

#endif
