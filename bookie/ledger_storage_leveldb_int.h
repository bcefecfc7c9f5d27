/* Internals shared by ledger_storage_leveldb.c and the entry log's garbage
 * collector (ledger_storage_gc.c). */
#ifndef SL_BOOKIE_LEDGER_STORAGE_LEVELDB_INT_H
#define SL_BOOKIE_LEDGER_STORAGE_LEVELDB_INT_H

#include <leveldb/c.h>
#include <pthread.h>
#include <stdatomic.h>

#include "bookie/entry_log.h"
#include "bookie/ledger_storage.h"

struct ldb_gc;

/* Bytes (records with headers) of one ledger in one entry log file. */
typedef struct ldb_ledger_bytes {
  uint64_t ledger;
  uint64_t bytes;
} ldb_ledger_bytes;

typedef struct ldb_storage {
  sl_ledger_storage base; /* first: ops */
  sl_ledger_storage_leveldb_opts opts;
  char *path;
  leveldb_t *db;
  leveldb_options_t *options;
  leveldb_cache_t *cache;
  leveldb_filterpolicy_t *bloom;
  leveldb_readoptions_t *ro;      /* verify checksums */
  leveldb_readoptions_t *ro_scan; /* verify checksums, no cache fill */
  leveldb_writeoptions_t *wo;      /* no sync */
  leveldb_writeoptions_t *wo_sync; /* sync */
  sl_entry_log *el;        /* NULL without opts.entry_log */
  /* Serialises entry log appends, and makes a write's index
   * changes atomic with respect to the collector's move of an entry (it
   * checks the index still points at the old place and rewrites it under
   * wmu). Not held by a checkpoint's sync and flush. */
  pthread_mutex_t wmu;
  _Atomic uint64_t checkpoints; /* checkpoint writes completed */
  /* Under wmu: bytes per ledger appended to the current entry log file
   * (cur_log), stored as the file's usage record when the next one starts,
   * so that the collector need not scan sealed files (ldb_get_usage). */
  uint64_t cur_log;
  ldb_ledger_bytes *cur_lb;
  size_t cur_n, cur_cap;
  struct ldb_gc *gc;       /* NULL without an entry log */
} ldb_storage;

/* Where an index value says an entry is. */
typedef struct ldb_index {
  bool in_log;        /* false: the payload is in the value (versions 1, 2) */
  uint32_t crc;
  sl_entry_loc loc;   /* in_log */
} ldb_index;

#define LDB_ENTRY_KEY_LEN 17

void ldb_entry_key(uint8_t *k, uint64_t ledger, int64_t entry);

/* Reads the index of (ledger, entry). SL_ENOTFOUND when there is none.
 * Errors: SL_EIO, SL_ECORRUPT. */
sl_status ldb_get_index(ldb_storage *s, uint64_t ledger, int64_t entry, ldb_index *out,
                        sl_err *err);

/* Points (ledger, entry) at loc with crc, unsynced. Caller holds wmu. */
sl_status ldb_put_index(ldb_storage *s, leveldb_writebatch_t *b, uint64_t ledger,
                        int64_t entry, uint32_t crc, sl_entry_loc loc);

/* Counts records just appended (recs[i] at locs[i]) towards their file's
 * usage, storing the previous file's usage once appends move past it.
 * Caller holds wmu. */
void ldb_note_appended(ldb_storage *s, const sl_entry_log_rec *recs,
                       const sl_entry_loc *locs, size_t n);

/* The stored usage of sealed file `log`: *lb (malloc'd, ascending ledger;
 * caller frees) and *n. SL_ENOTFOUND when none was stored (a crash before
 * a checkpoint made it durable, or the file was current at a crash).
 * Errors: SL_EIO, SL_ECORRUPT. */
sl_status ldb_get_usage(ldb_storage *s, uint64_t log, ldb_ledger_bytes **lb, size_t *n,
                        sl_err *err);

/* Whether any index entry of `ledger` points into entry log file `log`
 * (walks the ledger's index). Errors: SL_EIO, SL_ECORRUPT. */
sl_status ldb_ledger_uses_log(ldb_storage *s, uint64_t ledger, uint64_t log, bool *uses,
                              sl_err *err);

/* Drops the stored usage of a removed file (unsynced; a leftover is never
 * read, since files are listed from the directory). */
void ldb_drop_usage(ldb_storage *s, uint64_t log);

/* Whether a ledger's entries are still wanted: its state is not a tombstone
 * (a ledger without any state counts as alive). Errors: SL_EIO, SL_ECORRUPT. */
sl_status ldb_ledger_alive(ldb_storage *s, uint64_t ledger, bool *alive, sl_err *err);

/* Maps a leveldb error string to a status and frees it. */
sl_status ldb_error(char *errptr, sl_err *err, const char *what);

/* ---- garbage collector (ledger_storage_gc.c) ---- */

/* Starts the collector (its thread only if gc_interval_ms > 0). */
void ldb_gc_start(ldb_storage *s);
/* Stops the thread, if any, and frees the collector. NULL-safe. */
void ldb_gc_stop(struct ldb_gc *gc);
sl_status ldb_gc_round(ldb_storage *s, sl_err *err);
void ldb_gc_stats(struct ldb_gc *gc, uint64_t *removed, uint64_t *compacted,
                  uint64_t *scanned);

#endif
