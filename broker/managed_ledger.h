/*
 * Managed ledger: one partition's log as a chain of ledgers (DESIGN.md §3,
 * §6). It sits between the Produce/Consume handlers and the ledger client
 * (broker/ledger/ledger.h): handlers append entries and read them back by
 * position; the managed ledger decides which ledger they go to, rolls over
 * to a new ledger, recovers the chain when it takes a partition over, and
 * trims ledgers nobody needs any more.
 *
 * The chain lives in the metadata service as the partition's managed-ledger
 * list (ManagedLedgerInfo: ledger refs oldest first, small properties such
 * as the dedup snapshot, a terminated flag). Every change is an
 * UpdateManagedLedger compare-and-swap on the version we last read or wrote,
 * with our ownership epoch; a lost CAS or a stale epoch means another owner
 * exists, and the managed ledger becomes FENCED.
 *
 * Positions: (ledger id, entry id). Positions of one partition are totally
 * ordered by ledger id, then entry id (ledger ids increase along the chain).
 *
 * Open (sl_ml_open_async), as the partition's new owner with epoch E
 *   1. Read the list (NOT_FOUND: a new partition, empty chain).
 *   2. Recover the last ledger with epoch E (fence, read forward, close:
 *      ledger.h). Afterwards the old owner can complete nothing more in it.
 *      Earlier ledgers were closed by earlier owners (each owner recovered
 *      its predecessor's last ledger before writing), so they are not
 *      touched.
 *   3. Create a new ledger (OPEN, epoch E) and CAS the list: the recovered
 *      ledger's entry count filled in, the new ledger appended. Only then is
 *      the managed ledger WRITING and the open callback runs.
 *
 * Rollover: after an append makes the current ledger reach the entry,
 * byte or age limit (whichever first), or an append completes after the
 * ledger changed its ensemble (invariant 8), and at the trim timer for an
 * idle partition, the managed ledger moves to ROLLING:
 * new appends wait in a queue (their bytes copied), the current ledger is
 * closed (its pending appends complete first), a new ledger is created and
 * CASed into the list, and the queued appends go to it in order.
 *
 * Terminate (sl_ml_terminate_async): a close whose list write also sets
 * the list's terminated flag. Pending appends complete first; afterwards
 * nothing can ever be appended to the partition again, by this owner or any
 * later one (the metadata service refuses a new ledger in a terminated
 * list). Opening a terminated list succeeds read-only: no recovery (the
 * terminate closed the last ledger before it wrote the flag), no new
 * ledger, state CLOSED, sl_ml_terminated() true.
 *
 * Trim (sl_ml_trim_async, and every trim_interval_ms): a ledger before the
 * current one is deleted when every cursor of the partition (ListCursors)
 * has its mark-delete position past the ledger's last entry, and the ledger
 * is outside retention: it closed more than retention_ms ago, or the
 * ledgers after it already hold more than retention_bytes. -1 keeps
 * forever / unlimited. Deleting is three steps, each safe to cut by a crash:
 *   a. One list CAS removes the ledgers and adds their ids to the list
 *      property "trim:deleting" (the state mark).
 *   b. Each is deleted on its bookies, then its metadata goes
 *      (sl_ledger_delete_async: data first, so metadata never outlives the
 *      map to data that still exists).
 *   c. A list write drops the deleted ids from the mark; failed ones stay.
 * Every pass (on this owner or the next, which reads the mark with the
 * list) first retries what the mark names. So a list never names a deleted
 * ledger, and a trimmed ledger's data is deleted eventually, crash or not.
 *
 * Invariants
 *  1. A ledger is in the list (CAS done) before any entry is appended to it.
 *  2. Ledger ids strictly increase along the list; a new ledger's id is above
 *     every id the list ever held (the metadata service enforces it too).
 *  3. Append callbacks run in append order, across ledgers too: a rollover
 *     sends nothing to the new ledger before the old one is closed (all its
 *     appends completed). So positions handed to callbacks strictly increase.
 *  4. Every list write is a CAS on the version from our last read or write,
 *     and at most one is in flight. A CAS we lose is never retried blindly:
 *     it moves the managed ledger to FENCED.
 *  5. Once FENCED or FAILED, nothing more is appended or written to the list;
 *     pending and queued appends fail (SL_EFENCED, or the failure's status).
 *  6. Trim never removes the current ledger, never one a cursor still needs,
 *     and removes a ledger from the list (with the mark) before deleting its
 *     data, and its data before its metadata.
 *  7. The terminated flag is written only by the terminate's final list
 *     write, after its ledger is closed, so a stored terminated list never
 *     has an open ledger.
 *  8. A ledger that changed its ensemble (a bookie failed or timed out) is
 *     rolled over at once: the entries before the change keep a copy on the
 *     replaced bookie, and auto-recovery copies only CLOSED ledgers (the
 *     metadata rules keep an open ledger's history to its writer), so the
 *     ledger must close for those entries to get their Qw copies back when
 *     that bookie stays gone, rather than at the age limit (hours).
 *
 * States and the function behind each transition
 *   OPENING   reading, recovering, creating   sl_ml_open_async
 *   WRITING   appends go to the current ledger   open done; rollover done
 *   ROLLING   appends queue; closing the current ledger, creating the next
 *             and CASing the list                a rollover limit reached
 *   CLOSING   appends refused; pending ones complete, then the ledger is
 *             closed and the list written        sl_ml_close_async
 *   CLOSED    reads only                          close or terminate done;
 *                                                 open of a terminated list
 *   FENCED    another owner took over: appends fail with SL_EFENCED
 *             ledger FENCED, lost list CAS, stale epoch
 *   FAILED    the ledger or metadata failed for good (no bookies, I/O):
 *             appends fail; the owner should give the partition up
 *
 * Threads: everything of one managed ledger runs on its serial (the one in
 * the open options, shared with its ledger handles, timers and metadata
 * calls). sl_ml_append, sl_ml_close_async, sl_ml_set_properties,
 * sl_ml_read_async, sl_ml_trim_async and sl_ml_terminate_async must be
 * called on that serial; every callback runs on it, never inside the call
 * that started the operation.
 * The getters are thread-safe.
 */
#ifndef SL_BROKER_MANAGED_LEDGER_H
#define SL_BROKER_MANAGED_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/ledger/ledger.h"
#include "common/rpc_client.h"
#include "common/serial.h"
#include "common/status.h"

typedef struct sl_ml sl_ml;

/* Where one entry is: positions of a partition are ordered by ledger id,
 * then entry id. */
typedef struct sl_ml_pos {
  uint64_t ledger_id;
  int64_t entry_id;
} sl_ml_pos;

/* <0, 0, >0 like strcmp. */
int sl_ml_pos_cmp(sl_ml_pos a, sl_ml_pos b);

/* Namespace policy that the managed ledger applies (0 = default). */
typedef struct sl_ml_policy {
  uint32_t ensemble_size;       /* E; 0 = 3 */
  uint32_t write_quorum;        /* Qw; 0 = 2 */
  uint32_t ack_quorum;          /* Qa; 0 = 2 */
  uint64_t rollover_entries;    /* 0 = 50000 */
  uint64_t rollover_bytes;      /* 0 = 256 MiB */
  int64_t rollover_ms;          /* 0 = 4 hours */
  int64_t retention_ms;         /* -1 = forever; 0 = none */
  int64_t retention_bytes;      /* -1 = unlimited; 0 = none */
  int64_t trim_interval_ms;     /* 0 = 60 s; < 0 = only on sl_ml_trim_async */
  int64_t backlog_read_rate;    /* bytes/s the backlog reads may take from
                                   bookies (sl_ml_read_max_async);
                                   0 = SL_ML_BACKLOG_READ_RATE; < 0 = unlimited */
} sl_ml_policy;

/* Default budget of a partition's backlog reads from bookies, in bytes/s
 * (see sl_ml_read_max_async). */
#define SL_ML_BACKLOG_READ_RATE (4ll << 20)

/* A managed-ledger property (key and value are borrowed where passed in). */
typedef struct sl_ml_prop {
  const char *key;
  const char *value;
} sl_ml_prop;

/* Called once, on the serial, when the managed ledger becomes FENCED
 * (another owner) or FAILED. st: SL_EFENCED, SL_ESTALE_EPOCH, SL_EVERSION,
 * or the failure. details is borrowed. The owner gives the partition up. */
typedef void (*sl_ml_lost_cb)(sl_ml *ml, sl_status st, const char *details,
                              void *arg);

typedef struct sl_ml_opts {
  sl_ledger_client *ledgers;    /* retained: outlives the managed ledger */
  sl_rpc_channel *metadata;     /* retained: outlives the managed ledger */
  const char *partition;        /* copied */
  uint64_t epoch;               /* our ownership epoch of the partition */
  sl_serial *serial;            /* retained (referenced); required */
  sl_ml_policy policy;
  int metadata_timeout_ms;      /* per metadata call; 0 = 5000 */
  sl_ml_lost_cb on_lost;        /* may be NULL */
  void *lost_arg;
} sl_ml_opts;

/* Completion of open: on SL_OK the callback owns *ml (sl_ml_destroy). Else
 * ml is NULL and details says why: SL_EFENCED / SL_ESTALE_EPOCH /
 * SL_EVERSION (another owner), SL_EUNAVAIL (bookies or metadata), or the
 * recovery's error. */
typedef void (*sl_ml_open_cb)(sl_status st, const char *details, sl_ml *ml,
                              void *arg);

/* Opens the partition's log as its owner (steps above). Returns SL_OK and
 * cb runs later on opts->serial, or SL_EINVAL (missing option) and cb never
 * runs. */
sl_status sl_ml_open_async(const sl_ml_opts *opts, sl_ml_open_cb cb, void *arg,
                           sl_err *err);

/* Completion of one append, in append order (invariant 3). SL_OK: durable
 * on Qa bookies at pos. Else SL_EFENCED (redirect the producer), SL_EUNAVAIL
 * / SL_EIO (FAILED), SL_ECANCELED (destroyed). */
typedef void (*sl_ml_append_cb)(sl_status st, sl_ml_pos pos, void *arg);

/* Appends one entry (data is borrowed: packed or copied before return).
 * Returns SL_OK and cb runs later, or an error and cb never runs:
 * SL_EPRECOND (CLOSING or CLOSED), SL_EFENCED, SL_EUNAVAIL (FAILED),
 * SL_ETOOBIG, SL_EINVAL. */
sl_status sl_ml_append(sl_ml *ml, const void *data, size_t len,
                       sl_ml_append_cb cb, void *arg, sl_err *err);

/* Completion of a list write or close. */
typedef void (*sl_ml_done_cb)(sl_status st, const char *details, void *arg);

/* Replaces the properties whose keys start with `prefix` by `props` (the
 * others stay), in the next list write. Properties are copied. Writes
 * coalesce: while one is in flight, later calls replace the waiting one (its
 * cb gets the outcome of the write that carried it or superseded it).
 * cb may be NULL. SL_EPRECOND unless WRITING or ROLLING. */
sl_status sl_ml_set_properties(sl_ml *ml, const char *prefix,
                               const sl_ml_prop *props, size_t n,
                               sl_ml_done_cb cb, void *arg, sl_err *err);

/* The properties as last read or written (borrowed until the next list
 * write; serial only). */
size_t sl_ml_properties(const sl_ml *ml, const sl_ml_prop **out);

/* Graceful close: refuses new appends, lets pending ones complete, closes
 * the current ledger and writes the list. cb runs once. */
sl_status sl_ml_close_async(sl_ml *ml, sl_ml_done_cb cb, void *arg, sl_err *err);

/* Completion of a terminate. On SL_OK, last is the partition's last entry
 * ({0, -1} if it holds none). */
typedef void (*sl_ml_terminate_cb)(sl_status st, const char *details, sl_ml_pos last,
                                   void *arg);

/* Terminates the partition (see Terminate above): cb runs once, after the
 * list with the flag is stored (the managed ledger is CLOSED), or with the
 * close's failure. On a terminated one it answers SL_OK again (cb still
 * runs later). sl_ml_destroy during the terminate runs cb with
 * SL_ECANCELED (inside the destroy). Returns SL_EBUSY while a terminate
 * runs, SL_EPRECOND while closing or closed (not terminated), SL_EFENCED /
 * SL_EUNAVAIL when lost; then cb never runs. */
sl_status sl_ml_terminate_async(sl_ml *ml, sl_ml_terminate_cb cb, void *arg,
                                sl_err *err);

/* True once the terminated list is stored (or was read so by the open):
 * reads only, appends fail with SL_EPRECOND. Serial only. */
bool sl_ml_terminated(const sl_ml *ml);

/* Frees the managed ledger without closing (its current ledger is left OPEN
 * for the next owner's recovery, as after a crash). Pending appends get
 * SL_ECANCELED, possibly after this returns. Serial only; NULL is a no-op. */
void sl_ml_destroy(sl_ml *ml);

/* One entry read back: data borrowed for the call. */
typedef void (*sl_ml_entry_cb)(sl_ml_pos pos, const void *data, size_t len,
                               void *arg);

/* Reads every entry from `from` (inclusive) up to the last confirmed entry
 * at the time of the call, in order, across ledgers; then on_done. A `from`
 * before the first ledger starts at the first ledger. */
sl_status sl_ml_read_async(sl_ml *ml, sl_ml_pos from, sl_ml_entry_cb on_entry,
                           sl_ml_done_cb on_done, void *arg, sl_err *err);

/* Like sl_ml_read_async, but stops after max entries (0 = no limit): the
 * Consume path's bounded backlog reads. It may deliver fewer than max (what
 * the read-ahead holds); none means nothing more is durable yet.
 *
 * Read-ahead (max > 1; single-entry reads, redeliveries, go straight to
 * the bookies): reads are served from a buffer of consecutive entries that a
 * background chain read keeps filled ahead of the reader, so a consumer
 * with permits streams the backlog instead of paying a bookie round trip
 * per read. One buffer per managed ledger, following the last reader that
 * missed it: a read from a position the buffer does not hold drops it and
 * refills from there. Memory: at most SL_ML_READAHEAD_BYTES of entries
 * plus one fetch's overshoot (a fetch asks for entries by the average size
 * seen so far), and ML_READ_HANDLES open read handles of finished ledgers
 * (each one ledger's metadata). Both go with sl_ml_destroy; a handle of a
 * trimmed ledger goes at the next read.
 *
 * Pacing: every byte these reads take from bookies is charged to the
 * partition's read budget, policy.backlog_read_rate bytes/s with bursts of
 * 100 ms of it (at least 64 KiB and one average entry); the read-ahead
 * fetches only the entries the budget holds and otherwise waits for it, so
 * a reader at the read-ahead's position takes at most rate * t + burst +
 * about one entry in any t seconds. Reads that bypass the buffer (a second
 * subscription at another position while the first waits, single-entry
 * reads) wait for the same budget and take only the entries it holds, so
 * several subscriptions catching up at different positions share it (the
 * bound then allows the burst twice: a fetch and a direct read may start
 * on the same tokens). The open current ledger
 * is read ahead too, through its writer, up to its LAC. The tail, served from the Consume path's entry
 * cache, is not charged. */
#define SL_ML_READAHEAD_BYTES (8u << 20)
sl_status sl_ml_read_max_async(sl_ml *ml, sl_ml_pos from, uint64_t max,
                               sl_ml_entry_cb on_entry, sl_ml_done_cb on_done,
                               void *arg, sl_err *err);

/* Counters of the read side (tests, benchmarks). */
typedef struct sl_ml_read_stats {
  uint64_t ledger_opens;       /* finished ledgers opened for reading */
  uint64_t handle_reuses;      /* reads that found the ledger's handle open */
  uint64_t readahead_hits;     /* reads served from the read-ahead buffer */
  uint64_t readahead_entries;  /* entries the read-ahead fetched from bookies */
  uint64_t direct_reads;       /* reads that went to bookies directly */
  uint64_t backlog_bytes;      /* bytes backlog reads took from bookies */
  uint64_t paced_waits;        /* fetches that waited for the read budget */
} sl_ml_read_stats;

/* Thread-safe snapshot. */
void sl_ml_read_stats_get(const sl_ml *ml, sl_ml_read_stats *out);

/* One ledger of the chain as the cursors need it (cursor.h). */
typedef struct sl_ml_ledger_info {
  uint64_t ledger_id;
  int64_t entries;             /* durable entries so far */
  uint64_t bytes;              /* their bytes (0 = unknown) */
} sl_ml_ledger_info;

/* The chain now, oldest first; the current ledger counts the entries up to
 * the last confirmed one. *out is malloc'd (the caller frees it), even for
 * n = 0. Serial only. */
size_t sl_ml_chain(const sl_ml *ml, sl_ml_ledger_info **out);

/* Reads a partition's whole log without owning it (tools and tests): gets
 * the list, opens each ledger for reading (an OPEN one up to the LAC its
 * bookies report), reads from `from` on. Callbacks run on `serial`
 * (retained for the read; NULL = a private one). */
sl_status sl_ml_scan_async(sl_ledger_client *ledgers, sl_rpc_channel *metadata,
                           const char *partition, sl_ml_pos from,
                           sl_serial *serial, sl_ml_entry_cb on_entry,
                           sl_ml_done_cb on_done, void *arg, sl_err *err);

/* Runs a trim pass now (rules above); cb (may be NULL) runs once it is done:
 * the list written, the deletes tried and the mark updated
 * (sl_ml_stats.ledgers_trimmed counts what left the list, ledgers_deleted
 * what left the bookies). A delete that failed reports its status (the
 * ledger stays in the mark for the next pass). SL_EBUSY while a pass runs;
 * SL_EPRECOND unless WRITING or ROLLING. */
sl_status sl_ml_trim_async(sl_ml *ml, sl_ml_done_cb cb, void *arg, sl_err *err);

typedef enum sl_ml_state {
  SL_ML_OPENING = 0,
  SL_ML_WRITING = 1,
  SL_ML_ROLLING = 2,
  SL_ML_CLOSING = 3,
  SL_ML_CLOSED = 4,
  SL_ML_FENCED = 5,
  SL_ML_FAILED = 6,
} sl_ml_state;

typedef struct sl_ml_stats {
  sl_ml_state state;
  uint32_t ledgers;            /* in the list */
  uint64_t current_ledger;     /* 0 if none */
  sl_ml_pos last_confirmed;    /* last entry appended durably (or recovered) */
  uint64_t entries_appended;   /* by this managed ledger */
  uint64_t bytes_appended;
  uint64_t pending_appends;    /* appended, callback not yet run */
  uint64_t pending_bytes;
  uint64_t rollovers;
  uint64_t ledgers_trimmed;    /* removed from the list */
  uint64_t ledgers_deleted;    /* removed from bookies and metadata */
  uint64_t recovered_entries;  /* entries the open's recovery found */
} sl_ml_stats;

/* Thread-safe snapshot (fields read one by one). */
void sl_ml_stats_get(const sl_ml *ml, sl_ml_stats *out);

/* The partition name (borrowed for the managed ledger's life). */
const char *sl_ml_partition(const sl_ml *ml);
uint64_t sl_ml_epoch(const sl_ml *ml);

#endif
