/*
 * Ledger storage: where a bookie keeps entries and per-ledger state once the
 * journal has made them durable. One interface (a table of functions, like
 * SQLite's VFS) so that another layout can be added without touching the
 * bookie store. Today there is one implementation, leveldb
 * (ledger_storage_leveldb.c), with payloads either in an entry log and only
 * their index in leveldb (the default) or in leveldb values.
 *
 * The ledger storage is not durable on its own: writes are unsynced unless a
 * checkpoint is passed (see sl_ledger_storage_write). The journal covers
 * everything written since the last checkpoint; replay writes it again, so
 * every write here must be idempotent (putting the same entry twice, or the
 * same state, leaves the same result).
 *
 * Thread-safety: every function may be called from any thread concurrently,
 * except close. Implementations do their own locking (leveldb is
 * thread-safe).
 */
#ifndef SL_BOOKIE_LEDGER_STORAGE_H
#define SL_BOOKIE_LEDGER_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bookie/entry_log.h"
#include "bookie/journal.h"
#include "common/status.h"

/* Persistent state of one ledger. */
typedef struct sl_ledger_meta {
  uint64_t ledger;
  bool fenced;
  uint64_t max_epoch;  /* highest writer epoch seen (fencing epoch) */
  int64_t lac;         /* last add confirmed reported by the writer, -1 none */
  int64_t last_entry;  /* highest entry id stored here, -1 none */
  uint64_t entries;    /* entries stored here */
  uint64_t bytes;      /* payload bytes stored here */
  bool has_key;        /* the master key below is set (a state written before
                          keys existed has none) */
  uint8_t key[SL_LEDGER_KEY_BYTES]; /* SHA-256 of the ledger's password,
                          never the password itself (bookie_store.h) */
  bool deleted;        /* a tombstone: the ledger was deleted here, its
                          entries are gone and it never comes back */
} sl_ledger_meta;

typedef enum sl_ls_op_kind {
  SL_LS_PUT_ENTRY = 1, /* ledger, entry, crc, payload, len */
  SL_LS_PUT_META,      /* meta */
  SL_LS_DELETE_LEDGER, /* ledger: its entries and its state */
} sl_ls_op_kind;

/* One change in a write. Everything is borrowed for the call. */
typedef struct sl_ls_op {
  sl_ls_op_kind kind;
  uint64_t ledger;
  int64_t entry;
  uint32_t crc;         /* sl_entry_crc(ledger, entry, payload), stored */
  const void *payload;
  uint32_t len;
  sl_ledger_meta meta;  /* SL_LS_PUT_META */
} sl_ls_op;

/* An entry read back. payload is valid until sl_ledger_entry_release. */
typedef struct sl_ledger_entry {
  const uint8_t *payload;
  uint32_t len;
  uint32_t crc;          /* the stored sl_entry_crc; the payload matches it
                            under the (ledger, entry) it was read as */
  void *base_;           /* implementation's allocation */
  void (*free_)(void *); /* releases base_ */
} sl_ledger_entry;

#define SL_LEDGER_ENTRY_INIT \
  {.payload = NULL, .len = 0, .crc = 0, .base_ = NULL, .free_ = NULL}

/* Frees what a successful get_entry returned; safe on an INIT entry. */
void sl_ledger_entry_release(sl_ledger_entry *e);

typedef struct sl_ledger_storage sl_ledger_storage;

/* Figures for metrics; zeros where an implementation has nothing to say. */
typedef struct sl_ledger_storage_stats {
  uint64_t entry_log_files;     /* entry log files on disk */
  uint64_t entry_log_bytes;     /* their total size */
  uint64_t gc_removed_files;    /* files removed since open */
  uint64_t gc_compacted_bytes;  /* payload bytes moved out of sparse files */
  uint64_t gc_scanned_bytes;    /* bytes of files read to learn their usage */
} sl_ledger_storage_stats;


/* Called once per ledger by scan_meta, in ledger id order. Non-OK stops. */
typedef sl_status (*sl_ledger_meta_cb)(const sl_ledger_meta *meta, void *arg);

typedef struct sl_ledger_storage_ops {
  const char *name;
  sl_status (*write)(sl_ledger_storage *ls, const sl_ls_op *ops, size_t n,
                     const sl_journal_pos *checkpoint, sl_err *err);
  sl_status (*get_entry)(sl_ledger_storage *ls, uint64_t ledger, int64_t entry,
                         sl_ledger_entry *out, sl_err *err);
  sl_status (*scan_meta)(sl_ledger_storage *ls, sl_ledger_meta_cb cb, void *arg,
                         sl_err *err);
  sl_status (*get_checkpoint)(sl_ledger_storage *ls, sl_journal_pos *out,
                              sl_err *err);
  void (*stats)(sl_ledger_storage *ls, sl_ledger_storage_stats *out);
  sl_status (*gc)(sl_ledger_storage *ls, sl_err *err);
  void (*close)(sl_ledger_storage *ls);
} sl_ledger_storage_ops;

/* Implementations embed this as their first member. */
struct sl_ledger_storage {
  const sl_ledger_storage_ops *ops;
};

/*
 * Applies ops atomically and in order (all or none). If checkpoint is not
 * NULL, the write also records it and is synced to disk, and so is every
 * earlier write: after it returns, everything written so far survives a
 * crash and replay may start at *checkpoint.
 * SL_LS_DELETE_LEDGER sees only entries written by earlier calls, not by
 * earlier ops of the same call. Errors: SL_EIO.
 */
sl_status sl_ledger_storage_write(sl_ledger_storage *ls, const sl_ls_op *ops,
                                  size_t n, const sl_journal_pos *checkpoint,
                                  sl_err *err);

/*
 * Reads one entry and checks its stored checksum against sl_entry_crc of
 * (ledger, entry, payload), so bytes stored under another id fail it.
 * Errors: SL_ENOTFOUND,
 * SL_ECORRUPT ("ledger 42 entry 7: checksum mismatch"; the bytes are never
 * returned), SL_EIO. On success release *out with sl_ledger_entry_release.
 */
sl_status sl_ledger_storage_get_entry(sl_ledger_storage *ls, uint64_t ledger,
                                      int64_t entry, sl_ledger_entry *out,
                                      sl_err *err);

/* Calls cb for every ledger's state. Errors: SL_EIO, SL_ECORRUPT, cb's. */
sl_status sl_ledger_storage_scan_meta(sl_ledger_storage *ls, sl_ledger_meta_cb cb,
                                      void *arg, sl_err *err);

/* The last checkpoint written, or {0, 0} if none. Errors: SL_EIO, SL_ECORRUPT. */
sl_status sl_ledger_storage_get_checkpoint(sl_ledger_storage *ls,
                                           sl_journal_pos *out, sl_err *err);

/* Closes and frees. NULL does nothing. */
void sl_ledger_storage_close(sl_ledger_storage *ls);

void sl_ledger_storage_stats_get(sl_ledger_storage *ls, sl_ledger_storage_stats *out);

/* Runs one garbage-collection round now, on the calling thread (tests and
 * tools; the storage runs its own rounds every gc_interval_ms).
 * Errors: SL_EIO, SL_ECORRUPT. */
sl_status sl_ledger_storage_gc(sl_ledger_storage *ls, sl_err *err);

/* ---- leveldb implementation ---- */

typedef struct sl_ledger_storage_leveldb_opts {
  size_t cache_bytes;        /* block cache */
  size_t write_buffer_bytes; /* memtable size before a flush to a table */
  size_t max_file_bytes;     /* table file size; leveldb's own 2 MiB: a
                                compaction rewrites whole tables where key
                                ranges touch, so large tables made every
                                compaction a burst of tens of MB */
  bool compress;             /* snappy; off by default: payloads are opaque */
  bool entry_log;            /* payloads in an entry log (entry_log.h) under
                                <path>/entrylogs, only their index in leveldb;
                                false keeps payloads in leveldb values */
  sl_entry_log_opts log;
  int gc_interval_ms;        /* entry log GC round period; 0: no GC thread */
  double gc_compact_ratio;   /* compact a file whose live share is below */
  uint64_t gc_rate_bytes;    /* compaction copies at most this per second */
} sl_ledger_storage_leveldb_opts;

#define SL_LEDGER_STORAGE_LEVELDB_OPTS_INIT                                  \
  {.cache_bytes = 32u << 20, .write_buffer_bytes = 8u << 20,               \
   .max_file_bytes = 2u << 20, .compress = false, .entry_log = true,       \
   .log = SL_ENTRY_LOG_OPTS_INIT, .gc_interval_ms = 60000,                 \
   .gc_compact_ratio = 0.5, .gc_rate_bytes = 16u << 20}

/*
 * Opens (creating if missing) a leveldb database at `path` (borrowed).
 * opts may be NULL for defaults. Errors: SL_EINVAL, SL_EIO, SL_ECORRUPT.
 *
 * Layout, all integers big-endian in keys so that range scans follow id
 * order, little-endian in values:
 *   'E' ledger(8) entry(8) -> version(1)=2 crc(4) payload
 *                             crc: sl_entry_crc (common/crc32c.h). Version 1
 *                             (crc of the payload only) is still read.
 *                          -> version(1)=3 crc(4) log(8) offset(8) len(4)
 *                             with entry_log: where the payload is. Either
 *                             kind is read whatever the option, so a data
 *                             dir can switch and keep its old entries.
 *   'L' ledger(8)          -> version(1)=2 flags(1) max_epoch(8) lac(8)
 *                             last_entry(8) entries(8) bytes(8) key(32)
 *                             flags: 1 fenced, 2 has key (key is zeros
 *                             without it), 4 deleted (a tombstone). Version 1 (42 bytes, no key) is
 *                             still read, as a state without a key.
 *   'G' log(8)             -> version(1)=1 n(4) then n x (ledger(8) bytes(8)):
 *                             record bytes per ledger appended to entry log
 *                             file `log`, stored when the next file starts
 *                             (or at close) so the collector need not scan
 *                             it; a file without one is scanned
 *   'Z' "checkpoint"       -> segment(8) offset(8)
 */
sl_status sl_ledger_storage_leveldb_open(const char *path,
                                         const sl_ledger_storage_leveldb_opts *opts,
                                         sl_ledger_storage **out, sl_err *err);

#endif
