/*
 * Entry log: append-only files that hold entry payloads for the ledger
 * storage, which keeps only an index (ledger, entry) -> location in leveldb.
 * Like BookKeeper's entry logger: a payload is written twice (journal, then
 * here) instead of three or more times through a leveldb memtable, table
 * and compactions.
 *
 * Why: with payloads in leveldb, every checkpoint flushed tens of MB of
 * memtable into a table file with one fsync at the end. On a disk shared with
 * the journal, that burst held the journal's fdatasync for 150-230 ms every
 * checkpoint, which was the whole e2e p99. Here the appender starts
 * writeback (sync_file_range) every writeback_bytes, so the disk sees a
 * steady trickle and the checkpoint's fdatasync finds little left to write.
 *
 * Files are <dir>/<id, 16 hex digits>.log: a 32-byte header (magic
 * "SLUICELG", version, id), then records:
 *   hcrc(4) len(4) ledger(8) entry(8) crc(4) payload(len)
 * little-endian; hcrc is CRC32C of the 24 header bytes after it, so a scan
 * skips a torn tail or a damaged record (it resynchronizes on the next
 * intact header); crc is sl_entry_crc.
 *
 * Invariants
 *  1. Only the current file (the highest id) is appended to. open() always
 *     starts a new file, so a tail torn by a crash is never appended after,
 *     and removes files shorter than a header (a crash between a file's
 *     creation and its header write).
 *  2. After sl_entry_log_sync returns, every byte appended before the call
 *     is durable, including the directory entries of new files.
 *  3. A location handed out by append stays readable until that file is
 *     removed; a read racing a removal gets SL_ENOTFOUND, never other bytes.
 *
 * Threads: append is called by one thread at a time (the storage's writer
 * lock); remove, read, sync, scan and the getters from any thread.
 * files_lk guards the file table and every file's fd; reads hold it shared
 * across their pread so that remove (exclusive) never closes an fd in use.
 * Syncs run one at a time, on dups of the fds and without files_lk, so a
 * roll to a new file never waits on the disk.
 */
#ifndef SL_BOOKIE_ENTRY_LOG_H
#define SL_BOOKIE_ENTRY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define SL_ENTRY_LOG_HEADER 32 /* file header bytes */
#define SL_ENTRY_LOG_REC_HDR 28 /* record header bytes */

typedef struct sl_entry_log sl_entry_log;

typedef struct sl_entry_log_opts {
  uint64_t file_bytes;      /* roll to a new file once one passes this */
  uint64_t writeback_bytes; /* start writeback of each this many bytes */
} sl_entry_log_opts;

#define SL_ENTRY_LOG_OPTS_INIT \
  {.file_bytes = 128u << 20, .writeback_bytes = 256u << 10}

/* Where a record is: file id and the offset of its header. */
typedef struct sl_entry_loc {
  uint64_t log;
  uint64_t offset;
  uint32_t len; /* payload bytes */
} sl_entry_loc;

/* One entry to append; everything borrowed for the call. */
typedef struct sl_entry_log_rec {
  uint64_t ledger;
  int64_t entry;
  uint32_t crc; /* sl_entry_crc(ledger, entry, payload) */
  const void *payload;
  uint32_t len;
} sl_entry_log_rec;

/*
 * Opens the log in `dir` (borrowed; created if missing) and starts a new
 * current file after the highest existing id. opts may be NULL for
 * defaults. Errors: SL_EINVAL, SL_EIO.
 */
sl_status sl_entry_log_open(const char *dir, const sl_entry_log_opts *opts,
                            sl_entry_log **out, sl_err *err);

/* Closes every file (nothing is synced) and frees. NULL does nothing. */
void sl_entry_log_close(sl_entry_log *el);

/*
 * Appends n records with one write, rolling to a new file first if the
 * current one is past file_bytes; fills locs[i] for recs[i]. Unsynced.
 * On error nothing is handed out; the bytes may be in the file, unindexed.
 * Errors: SL_EIO.
 */
sl_status sl_entry_log_append(sl_entry_log *el, const sl_entry_log_rec *recs,
                              size_t n, sl_entry_loc *locs, sl_err *err);

/*
 * Reads the record at loc with one pread, checking that its header is intact
 * and names (ledger, entry) and len. *rec is the malloc'd record (caller
 * frees); the payload starts at *rec + SL_ENTRY_LOG_REC_HDR. *crc is the
 * stored entry checksum, not yet checked against the payload.
 * Errors: SL_ENOTFOUND (the file was removed), SL_ECORRUPT, SL_EIO.
 */
sl_status sl_entry_log_read(sl_entry_log *el, sl_entry_loc loc, uint64_t ledger,
                            int64_t entry, uint8_t **rec, uint32_t *crc, sl_err *err);

/* Invariant 2. Errors: SL_EIO. */
sl_status sl_entry_log_sync(sl_entry_log *el, sl_err *err);

/* A record found by sl_entry_log_scan. */
typedef struct sl_entry_log_hdr {
  uint64_t ledger;
  int64_t entry;
  uint32_t crc;
  sl_entry_loc loc;
} sl_entry_log_hdr;

typedef sl_status (*sl_entry_log_scan_cb)(const sl_entry_log_hdr *h, void *arg);

/*
 * Calls cb for every intact record of file `log` in order, reading headers
 * only. Past a torn or damaged record it looks for the next intact header
 * byte by byte (a payload that happens to hold one can add a false record:
 * callers must treat records as hints, checked against the index).
 * *damaged (if not NULL) says whether an intact record came after skipped
 * bytes: damage in the middle, not just a torn tail. Non-OK from cb stops
 * and is returned. Errors: SL_ENOTFOUND, SL_ECORRUPT (bad file header),
 * SL_EIO.
 */
sl_status sl_entry_log_scan(sl_entry_log *el, uint64_t log, sl_entry_log_scan_cb cb,
                            void *arg, bool *damaged, sl_err *err);

/* Deletes file `log`, which must not be the current one, freeing its
 * blocks gradually first (it takes a while: not on the add path).
 * Errors: SL_EIO. */
sl_status sl_entry_log_remove(sl_entry_log *el, uint64_t log, sl_err *err);

/* The file being appended to. */
uint64_t sl_entry_log_current(sl_entry_log *el);

/* Ids of the files before the current one, ascending, into a malloc'd
 * array (caller frees); sizes[i] gets each file's size if sizes != NULL. */
size_t sl_entry_log_sealed(sl_entry_log *el, uint64_t **ids, uint64_t **sizes);

/* Number of files and their total size. */
void sl_entry_log_usage(sl_entry_log *el, uint64_t *files, uint64_t *bytes);

#endif
