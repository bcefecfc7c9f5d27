/*
 * Bookie journal: the append-only, group-committed write-ahead log that makes
 * an add durable before the bookie acknowledges it.
 *
 * Callers submit requests (sl_journal_req, one record each). One journal
 * thread takes everything queued, writes it with one pwritev to the current
 * segment file, calls fdatasync once, and then hands the whole batch to the
 * owner's on_durable callback. Requests that arrive while that fdatasync runs
 * wait in the queue and share the next one: that is the group commit.
 *
 * On disk: a directory of segment files named <16 hex digit id>.jnl, ids
 * increasing. Each segment is preallocated (posix_fallocate) to
 * segment_bytes so that fdatasync does not have to write a new file size;
 * the journal thread also writes zeros a little ahead of its records, so
 * that fdatasync does not have to convert unwritten extents either (one
 * metadata write per 256 KiB instead of one per group commit). Each
 * segment starts with a 48-byte header:
 *
 *   off size field
 *    0   8   magic "SLJOURN1"
 *    8   4   version (3)
 *   12   4   header size (48)
 *   16   8   segment id
 *   24  16   instance id of the bookie that wrote it (bookie_store.h)
 *   40   4   zero
 *   44   4   CRC32C of bytes [0, 44)
 *
 * Replay refuses (SL_ECORRUPT) a version 3 segment stamped with another
 * instance id than the journal's: a journal dir from another disk or another
 * life of the bookie must never be replayed into this one.
 * Records follow back to back:
 *
 *   off size field
 *    0   4   crc          CRC32C of header bytes [4, 48), then of the key
 *    4   4   len          payload length
 *    8   1   type         sl_journal_rec_type
 *    9   1   flags        SL_JOURNAL_F_KEY: a ledger key follows the header
 *   10   2   zero
 *   12   4   payload_crc  ADD: sl_entry_crc(ledger, entry, payload), the
 *                        entry checksum of common/crc32c.h; other types:
 *                        CRC32C of the payload (0 when empty)
 *   16   8   ledger       (CHECKPOINT: segment of the recorded position)
 *   24   8   entry        (int64; CHECKPOINT: offset of the position)
 *   32   8   epoch
 *   40   8   lac          (int64)
 *   48  32   key          only with SL_JOURNAL_F_KEY (SL_LEDGER_KEY_BYTES)
 *   .. len   payload
 *
 * A record is valid when both CRCs match: the header CRC covers payload_crc
 * and the key, so the journal thread never hashes payloads (the submitter
 * already did). The key is the ledger's master key (a SHA-256 digest of its
 * password, see bookie_store.h), carried by the record that first records
 * it, so that the key is durable exactly when that record is.
 * Segment format version 2 added the flags byte; version 1 segments (written
 * before it, flags always zero) are read the same way. Version 3 added the
 * instance id and the entry checksum; version 1 and 2 segments (32-byte
 * header, payload-only CRC on ADD) are still read, and replay hands their
 * ADD records on with the entry checksum. An older bookie does not read
 * newer segments, so a downgrade needs a clean stop first (its final
 * checkpoint leaves nothing to replay).
 * All integers are little-endian. Replay reads a segment until the first
 * record that fails its checks (short, bad CRC, unknown type, too long): a
 * torn tail after a crash, or the zeros of the preallocated space. Nothing
 * after that point in that segment was ever acknowledged (invariant 2), so
 * it is ignored; a restarted journal always writes to a new segment.
 *
 * Invariants
 *  1. on_durable sees a request only after the fdatasync (or fsync) of every
 *     byte of its record returned success. Requests are handed back in the
 *     order they were submitted, each exactly once.
 *  2. A record is never written into a segment after a failed write or sync:
 *     the first I/O error moves the journal to FAILED, and every later
 *     request fails with SL_EIO (retrying fsync after a failure can silently
 *     lose data, so we do not).
 *  3. Segment ids only grow. A new journal starts strictly after every
 *     existing segment and after the position passed to sl_journal_start.
 *  4. sl_journal_release deletes only segments whose id is below the given
 *     position's segment, never the one being written.
 *
 * States and transitions
 *   OPEN (segments listed, replay allowed)   sl_journal_open
 *   RUNNING (thread writing)                 sl_journal_start
 *   FAILED (refuses requests with SL_EIO)    first write/sync/rotate error
 *   CLOSED (queue drained, thread joined)    sl_journal_close
 *
 * Threads and locks: j->mu guards the queue, the state, the error message,
 * the segment list (ids, and bytes written in each) and the stats. The journal thread owns the current
 * segment's fd and offset and holds no lock while writing, syncing or calling
 * on_durable. Submitting is allowed from any thread, including from inside
 * on_durable.
 */
#ifndef SL_BOOKIE_JOURNAL_H
#define SL_BOOKIE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef enum sl_journal_rec_type {
  SL_JOURNAL_ADD = 1,        /* an entry: all fields */
  SL_JOURNAL_FENCE = 2,      /* ledger, epoch */
  SL_JOURNAL_LAC = 3,        /* ledger, epoch, lac */
  SL_JOURNAL_CHECKPOINT = 4, /* written by sl_journal_mark_checkpoint only */
  SL_JOURNAL_DELETE = 5,     /* ledger */
} sl_journal_rec_type;

#define SL_JOURNAL_RECORD_HEADER 48u
#define SL_JOURNAL_SEGMENT_HEADER 48u

/* Size of a bookie instance id, stamped into every segment header. */
#define SL_JOURNAL_INSTANCE_BYTES 16u

/* Size of a ledger master key (a SHA-256 digest) in records and state. */
#define SL_LEDGER_KEY_BYTES 32u

/* Record flags (byte 9 of the header). */
#define SL_JOURNAL_F_KEY 1u /* SL_LEDGER_KEY_BYTES of key follow the header */

/* A place in the journal: a segment id and a byte offset inside it. */
typedef struct sl_journal_pos {
  uint64_t segment;
  uint64_t offset;
} sl_journal_pos;

/* <0, 0, >0 like strcmp. */
int sl_journal_pos_cmp(sl_journal_pos a, sl_journal_pos b);

typedef struct sl_journal_record {
  sl_journal_rec_type type;
  uint64_t ledger;
  int64_t entry;
  uint64_t epoch;
  int64_t lac;
  uint32_t payload_crc; /* ADD: sl_entry_crc(ledger, entry, payload, len);
                           else sl_crc32c(payload, len): see submit */
  const void *payload;  /* retained until the request is handed back */
  uint32_t len;
  const uint8_t *key;   /* NULL, or SL_LEDGER_KEY_BYTES retained like payload
                           (ADD and FENCE only) */
} sl_journal_record;

/* Bytes the record takes in a segment: header, key if any, payload. */
uint64_t sl_journal_record_bytes(const sl_journal_record *r);

/*
 * One journal write. The caller owns the memory (embed it in a larger
 * struct) and keeps it and rec.payload valid until on_durable hands it back.
 */
typedef struct sl_journal_req {
  sl_journal_record rec;       /* set by the caller */
  sl_journal_pos pos;          /* set by the journal: where the record starts */
  struct sl_journal_req *next; /* owned by the journal until handed back */
  bool internal_;              /* journal-owned (checkpoint marker) */
} sl_journal_req;

/*
 * Runs on the journal thread with a batch (linked by ->next, in submission
 * order). st is SL_OK if every record is durable, else SL_EIO and `msg` says
 * why. `end` is the position just after the last record of the batch. After
 * it returns the journal no longer touches the requests. It must not call
 * sl_journal_close.
 */
typedef void (*sl_journal_durable_cb)(sl_journal_req *batch, sl_status st,
                                      const char *msg, sl_journal_pos end,
                                      void *arg);

typedef struct sl_journal_opts {
  const char *dir;            /* borrowed; created if missing */
  uint64_t segment_bytes;     /* preallocation and rotation size */
  uint32_t max_record_bytes;  /* payload limit for submit and replay */
  size_t max_batch_bytes;     /* most bytes one write+sync covers */
  sl_journal_durable_cb on_durable;
  void *arg;                  /* passed to on_durable */
  /* Fault injection for tests: replaces fdatasync/fsync when set. */
  int (*sync_hook)(int fd, void *hook_arg);
  void *hook_arg;
  /* SL_JOURNAL_INSTANCE_BYTES stamped into each new segment and required of
   * version 3 segments at replay; NULL means all zeros. Retained while the
   * journal is open and read at replay and start, so the owner may fill it
   * in after open (e.g. once it knows the journal's segments). */
  const uint8_t *instance_id;
  /* Where the journal registers its metrics (sync latency, batch sizes);
   * NULL: none. Retained while the journal is open. */
  struct sl_metrics *metrics;
} sl_journal_opts;

#define SL_JOURNAL_OPTS_INIT                                   \
  {.segment_bytes = 64u << 20, .max_record_bytes = 8u << 20, \
   .max_batch_bytes = 16u << 20}

typedef struct sl_journal_stats {
  uint64_t syncs;    /* fdatasync/fsync calls that covered records */
  uint64_t batches;  /* batches written */
  uint64_t records;  /* records written (including checkpoint markers) */
  uint64_t bytes;    /* record bytes written */
  uint64_t segments_created;
  uint64_t segments_deleted;
  uint64_t segments; /* segment files that exist now */
} sl_journal_stats;

typedef struct sl_journal sl_journal;

/*
 * Opens (creating if missing) the journal directory and lists its segments.
 * Does not write anything. On success *out must be released with
 * sl_journal_close. Errors: SL_EINVAL (bad opts), SL_EIO.
 */
sl_status sl_journal_open(const sl_journal_opts *opts, sl_journal **out,
                          sl_err *err);

typedef struct sl_journal_replay_stats {
  uint64_t records;        /* records passed to the callback */
  uint64_t segments;       /* segments read */
  uint64_t torn_tails;     /* segments that ended in a bad (non-zero) record */
  bool have_marker;        /* a checkpoint marker was seen */
  sl_journal_pos marker;   /* position the last marker recorded */
  sl_journal_pos end;      /* just after the last valid record read */
} sl_journal_replay_stats;

/* Called for each record at or after `from`, in journal order. The record,
 * its payload and its key are valid only during the call. Non-OK stops replay and is
 * returned by sl_journal_replay. Checkpoint markers are not passed on. */
typedef sl_status (*sl_journal_replay_cb)(const sl_journal_record *rec,
                                          sl_journal_pos pos, void *arg);

/*
 * Reads every valid record at or after `from` (only before sl_journal_start).
 * Segments wholly before `from` are skipped. Fills *stats if not NULL.
 * Errors: SL_EPRECOND (already started), SL_EIO, SL_ECORRUPT (a segment of
 * another instance), or the callback's status.
 */
sl_status sl_journal_replay(sl_journal *j, sl_journal_pos from,
                            sl_journal_replay_cb cb, void *arg,
                            sl_journal_replay_stats *stats, sl_err *err);

/*
 * Creates a new segment after every existing one and after `after.segment`,
 * and starts the journal thread. Errors: SL_EPRECOND (already started),
 * SL_EIO.
 */
sl_status sl_journal_start(sl_journal *j, sl_journal_pos after, sl_err *err);

/*
 * Queues req (retained until handed back by on_durable). Precondition:
 * req->rec.payload_crc is the record's checksum (see sl_journal_record). The journal does not
 * hash payloads again; a wrong value makes replay stop at that record, so
 * callers verify (the bookie store checks every writer's CRC before it
 * submits). On SL_OK, on_durable
 * will see it exactly once; on any error it will not. Errors: SL_EINVAL (bad
 * type, or a key on a record other than ADD or FENCE), SL_ETOOBIG (payload
 * over max_record_bytes), SL_EPRECOND (not started or closing), SL_EIO
 * (journal FAILED).
 */
sl_status sl_journal_submit(sl_journal *j, sl_journal_req *req, sl_err *err);

/* Queues a checkpoint marker recording `pos`. Informational: the owner keeps
 * the authoritative checkpoint with its flushed state; replay reports the
 * last marker in its stats. Errors as for sl_journal_submit. */
sl_status sl_journal_mark_checkpoint(sl_journal *j, sl_journal_pos pos,
                                     sl_err *err);

/*
 * Deletes segments whose id is below upto.segment (their records are all
 * before upto). The caller promises it no longer needs them for replay.
 * Errors: SL_EIO (an unlink failed; the others are still attempted).
 */
sl_status sl_journal_release(sl_journal *j, sl_journal_pos upto, sl_err *err);

/* Current position of the writer (end of the last written batch). */
sl_journal_pos sl_journal_tail(sl_journal *j);

/*
 * Bytes of journal after `pos` up to the tail, counting every segment still
 * on disk after it (records, checkpoint markers and segment headers as
 * written; the preallocated space beyond is not counted). Segments that
 * existed before open count what replay found valid in them (0 if they were
 * not replayed). A position past the tail gives 0.
 */
uint64_t sl_journal_bytes_after(sl_journal *j, sl_journal_pos pos);

void sl_journal_get_stats(sl_journal *j, sl_journal_stats *out);

/*
 * Stops accepting requests, writes and hands back everything queued, joins
 * the thread and frees the journal. Must not be called from on_durable.
 * NULL does nothing.
 */
void sl_journal_close(sl_journal *j);

#endif
