/*
 * Bookie store: the bookie's storage engine below the gRPC service. It ties
 * together the journal (durability, group commit), the ledger storage
 * (payloads in an entry log, their index and per-ledger state in leveldb:
 * ledger_storage.h) and the disk watcher.
 *
 * Life of an add
 *   1. sl_bookie_store_add (any thread) checks the request: size, lac below
 *      the entry, the writer's entry checksum, read-only, password, deleted,
 *      fenced, epoch, duplicate. A refusal is returned at once, with a typed
 *      status (see sl_bookie_store_add), and the callback is never called.
 *   2. Accepted, it is queued on the journal. The journal thread writes it
 *      with everything else queued, and one fdatasync covers them all.
 *   3. The synced batch goes to the applier thread: into ledger storage (one
 *      unsynced entry log append and leveldb write), then the in-memory
 *      state is updated, then each callback runs, in journal order.
 *      Meanwhile the journal thread already writes and syncs the next batch.
 *   4. Every checkpoint_interval_ms (or after checkpoint_bytes of journal)
 *      the maintenance thread syncs ledger storage together with the journal
 *      position everything before which is applied (the checkpoint), writes
 *      a marker into the journal and deletes the segments before it.
 *   5. Opening replays the journal from the checkpoint into ledger storage.
 *
 * Ledger master key (as in BookKeeper): every add, fence and fencing read
 * carries the ledger's password from its metadata. The first add or fence
 * of a ledger here records the key, the SHA-256 digest of that password
 * (OpenSSL EVP, computed on the caller's thread outside every lock); the
 * password itself is never stored. Later requests must bring a password
 * with the same digest, or are refused with SL_EPERM ("ledger 42: wrong
 * password"). The empty password is a password like any other. A state
 * without a key (written before keys existed, or created by
 * sl_bookie_store_write_lac, which carries no password) adopts the key of
 * the next add or fence. Reads need no password.
 *
 * Instance id (BookKeeper's cookie). The first open of an empty store draws
 * 16 random bytes and writes them, as 32 hex digits, to a file INSTANCE in
 * the ledger dir (<dir>/ledgers) and in the journal dir; every journal
 * segment header carries them too (journal.h). Open compares the two files:
 * both present and equal, or the store is empty (a crash during the first
 * open), or the store refuses to open with SL_ECORRUPT. Both missing with
 * data present is a store from before instance ids: it gets one. So a
 * bookie whose disk was wiped comes back with a new instance id, and one
 * whose journal or ledger dir alone was wiped does not start at all.
 *
 * Tombstones. A delete removes a ledger's entries and leaves its state as a
 * tombstone (meta.deleted) in ledger storage. Adds, fences and LAC updates
 * of a tombstoned ledger are refused with SL_EDELETED, also after restart
 * and replay, so a late writer or fencer cannot bring it back. Ledger ids
 * are never reused (DESIGN.md §2), so tombstones are never removed (each
 * takes one small leveldb value and one table slot). A delete comes from
 * a broker (sl_bookie_store_delete_ledger, with the password) or from the
 * bookie's own sweep (sl_bookie_store_drop_ledger, on the metadata
 * service's tombstone; ledger_sweep.h).
 *
 * Invariants
 *  1. An add, fence, LAC update or delete is acknowledged (callback with
 *     SL_OK) only after the fdatasync of the journal segment that holds it.
 *  2. Journal order per ledger equals admission order: admission and
 *     queueing happen under one lock (store->mu), so replay reproduces what
 *     the callbacks reported.
 *  3. Once a fence is admitted, no add without the recovery flag is admitted
 *     to that ledger, and no add or fence with an epoch below the highest
 *     epoch admitted is. Fenced state and epochs survive restart (they are
 *     journaled, then stored).
 *  4. An entry, once acknowledged, is never replaced by different bytes:
 *     a second add of (ledger, entry) is accepted only with the same payload
 *     (a resend), or if the stored copy fails its checksum (a repair).
 *  5. Reads return only bytes whose entry checksum (sl_entry_crc over
 *     ledger id, entry id and payload) matches the stored one, and only
 *     entries whose add is durable (applied after the sync).
 *  6. Journal segments are deleted only after a synced ledger-storage write
 *     recorded a checkpoint at or past their end.
 *  7. Once an add or fence that records a ledger's key is admitted, no add
 *     or fence with a password of another digest is admitted to that ledger
 *     (checked before the fence and epoch rules, under store->mu), and a
 *     refusal changes nothing. The key is journaled in the very record that
 *     records it (journal.h, SL_JOURNAL_F_KEY), so it is durable exactly when
 *     that add or fence is, then stored in the ledger's state: it survives
 *     restart and replay. Only a delete of the ledger removes it.
 *  8. Once a delete is admitted, nothing but another delete is admitted to
 *     that ledger, ever (tombstones).
 *
 * States
 *   OPEN      serving                            sl_bookie_store_open
 *   READONLY  adds refused, except recovery      disk watcher over high_pct
 *             adds below floor_pct; reads served
 *             (a flag beside OPEN; back below low_pct clears it)
 *   FAILED    writes refused with SL_EFAILED,    a journal or ledger-storage
 *             reads served                       write failed
 *   CLOSED                                       sl_bookie_store_close
 *
 * Threads
 *   caller threads   add/fence/write_lac/delete submit; reads; info
 *   journal thread   writes and syncs batches (journal.h)
 *   applier thread   applies synced batches to ledger storage, runs every
 *                    completion callback (sl_bookie_store_cb)
 *   maintenance      periodic checkpoints
 *   disk watcher     statvfs samples; runs on_readonly_change
 *
 * Locks: store->mu guards the ledger table and every ledger's state in it,
 * the in-flight count and the applied position. It is held while queueing on
 * the journal (lock order store->mu -> journal's lock) and, rarely, during a
 * leveldb read (duplicate check of an entry at or below the highest one).
 * store->ckpt_mu serialises checkpoints (order: ckpt_mu -> mu). Metrics
 * callbacks (opts.metrics) run under the registry's lock and take mu and
 * ckpt_mu (order: registry -> ckpt_mu/mu); nothing here calls into the
 * registry with either held except lock-free histogram updates.
 * store->apply_mu guards the queue from the journal thread to the applier.
 * Callbacks run with no lock held and may call any function here except
 * sl_bookie_store_close.
 */
#ifndef SL_BOOKIE_BOOKIE_STORE_H
#define SL_BOOKIE_BOOKIE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bookie/ledger_storage.h"
#include "common/status.h"

typedef struct sl_bookie_store sl_bookie_store;

typedef struct sl_bookie_store_opts {
  const char *journal_dir;        /* NULL: <dir>/journal (put it on its own
                                     disk for the best add latency) */
  uint32_t max_entry_bytes;       /* larger payloads: SL_ETOOBIG */
  uint64_t journal_segment_bytes; /* preallocation and rotation size */
  size_t journal_max_batch_bytes; /* most bytes one fdatasync covers */
  int checkpoint_interval_ms;
  uint64_t checkpoint_bytes;      /* checkpoint early after this much journal */
  double disk_high_pct;           /* read-only at or above this % used */
  double disk_low_pct;            /* writable again below this % used */
  double disk_floor_pct;          /* hard floor: recovery adds, which a
                                     read-only store still takes, are refused
                                     at or above this % used */
  uint64_t max_inflight_bytes;    /* payload bytes of adds admitted and not
                                     yet completed, over all writers; more is
                                     SL_EBUSY (bounds the memory they pin) */
  uint64_t disk_limit_bytes;      /* 0: the real disk; else a quota for dir */
  int disk_interval_ms;
  sl_ledger_storage_leveldb_opts leveldb;
  /* Called on the disk watcher thread when the read-only flag changes, so
   * the service can update its registration. May be NULL. */
  void (*on_readonly_change)(bool readonly, void *arg);
  void *arg;
  /* Fault injection for tests: replaces the journal's fdatasync/fsync. */
  int (*sync_hook)(int fd, void *hook_arg);
  void *hook_arg;
  /* Registry for the store's and journal's metrics (sluice_bookie_*);
   * NULL: none. Retained until close. */
  struct sl_metrics *metrics;
  /* Encryption at rest (bookie/entry_crypt.h): adds are sealed before the
   * journal, reads opened after storage; NULL = plaintext. A store is one
   * or the other for life: open refuses (SL_EINVAL) another key, no key
   * for an encrypted store, and a key for a store with plaintext data.
   * Retained until close. */
  const struct sl_entry_crypt *crypt;
} sl_bookie_store_opts;

#define SL_BOOKIE_STORE_OPTS_INIT                                             \
  {.max_entry_bytes = 5u << 20, .journal_segment_bytes = 64u << 20,          \
   .journal_max_batch_bytes = 16u << 20, .checkpoint_interval_ms = 10000,    \
   .checkpoint_bytes = 256u << 20, .disk_high_pct = 95.0,                    \
   .disk_low_pct = 90.0, .disk_floor_pct = 98.0,                             \
   .max_inflight_bytes = 256u << 20, .disk_interval_ms = 1000,               \
   .leveldb = SL_LEDGER_STORAGE_LEVELDB_OPTS_INIT}

/* Add flags. */
#define SL_BOOKIE_ADD_RECOVERY 1u /* recovery write-back: allowed on a fenced
                                     ledger (epoch rules still apply) and on
                                     a read-only store below floor_pct */

typedef struct sl_bookie_add_req {
  uint64_t ledger;
  int64_t entry;        /* >= 0 */
  uint64_t epoch;       /* the writer's ownership epoch */
  int64_t lac;          /* writer's last add confirmed, -1 if none; must be
                           below entry */
  const void *payload;  /* retained until the callback runs */
  uint32_t len;
  uint32_t crc;         /* writer's sl_entry_crc(ledger, entry, payload) */
  uint32_t flags;       /* SL_BOOKIE_ADD_* */
  const void *password; /* the ledger's password (borrowed for the call);
                           NULL with password_len 0 is the empty password */
  size_t password_len;
} sl_bookie_add_req;

/*
 * Completion of an accepted request. Runs on the store's applier thread,
 * exactly once. msg is "" on success, else says why (valid during the call only).
 * Keep it short: the next group commit waits for it.
 */
typedef void (*sl_bookie_store_cb)(sl_status st, const char *msg, void *arg);

/*
 * Opens (creating if missing) the store in `dir` (borrowed), checks (or
 * creates) the instance id, replays the journal since the last checkpoint
 * and starts the threads. opts may be NULL for defaults. Only one process
 * may open a dir at a time (leveldb's lock). Errors: SL_EINVAL, SL_EIO,
 * SL_ECORRUPT (also: the journal and ledger dirs disagree on the instance
 * id, "bookie store d: journal dir has no instance id, ledger dir has: one
 * was wiped", or a journal segment carries another instance's id).
 */
sl_status sl_bookie_store_open(const char *dir, const sl_bookie_store_opts *opts,
                               sl_bookie_store **out, sl_err *err);

/*
 * Adds an entry. On SL_OK, cb(arg) will run once the entry is durable (or
 * with SL_EFAILED if the journal failed). The first add of a ledger records
 * its key (see the design note). Otherwise cb is never called and:
 *   SL_EINVAL       bad field: entry < 0, lac < -1, lac >= entry, flags
 *   SL_EBADCRC      req->crc is not sl_entry_crc(ledger, entry, payload)
 *                   ("ledger 42 entry 7: checksum mismatch ...")
 *   SL_ETOOBIG      payload over max_entry_bytes
 *   SL_EREADONLY    the disk is nearly full (a recovery add: past the floor)
 *   SL_EPERM        "ledger 42: wrong password" (its digest is not the key)
 *   SL_EDELETED     "ledger 42: deleted" (a tombstone)
 *   SL_EFENCED      "ledger 42: fenced" (and not a recovery add)
 *   SL_ESTALE_EPOCH "ledger 42: stale epoch 3 < 5"
 *   SL_ECONFLICT    the entry is stored or queued with a different payload
 *   SL_EBUSY        max_inflight_bytes of adds are in flight (one add alone
 *                   is always admitted, however large)
 *   SL_EFAILED      the store FAILED earlier (needs a restart)
 * A resend of a stored or queued entry with the same payload is accepted.
 * req is borrowed for the call; req->payload is retained until cb.
 */
sl_status sl_bookie_store_add(sl_bookie_store *s, const sl_bookie_add_req *req,
                              sl_bookie_store_cb cb, void *arg, sl_err *err);

/*
 * Fences a ledger (creating its state, and recording its key, if unknown)
 * and raises its epoch to `epoch`. password (borrowed; NULL with
 * password_len 0 is the empty password) must match the ledger's key. cb runs
 * once the fence is durable. Adds admitted after this call are refused.
 * Errors (cb not called): SL_EINVAL (NULL password with a length),
 * SL_EPERM ("ledger 42: wrong password"), SL_ESTALE_EPOCH (epoch below the
 * highest seen), SL_EDELETED (a tombstone), SL_EFAILED. Allowed while
 * read-only.
 */
sl_status sl_bookie_store_fence(sl_bookie_store *s, uint64_t ledger,
                                uint64_t epoch, const void *password,
                                size_t password_len, sl_bookie_store_cb cb,
                                void *arg, sl_err *err);

/*
 * Records a last-add-confirmed for a ledger (kept if higher than the
 * stored one). Same epoch, fence, deleted and read-only rules and errors as
 * an add; SL_EINVAL if lac < -1. password (borrowed; NULL with password_len
 * 0 is the empty password) is checked against the ledger's key like an
 * add's, but never records one.
 */
sl_status sl_bookie_store_write_lac(sl_bookie_store *s, uint64_t ledger,
                                    uint64_t epoch, int64_t lac,
                                    const void *password, size_t password_len,
                                    sl_bookie_store_cb cb, void *arg,
                                    sl_err *err);

/*
 * Deletes a ledger: its entries, leaving its state as a tombstone (see the
 * design note). password (borrowed, as for fence) must match the ledger's
 * key if it has one. A ledger unknown here gets a tombstone too, and
 * deleting a tombstone again is OK. cb runs once the deletion is durable and
 * applied. Errors (cb not called): SL_EINVAL, SL_EPERM, SL_EBUSY (requests
 * for it in flight; retry), SL_EFAILED. Allowed while read-only (it frees
 * space).
 */
sl_status sl_bookie_store_delete_ledger(sl_bookie_store *s, uint64_t ledger,
                                        const void *password, size_t password_len,
                                        sl_bookie_store_cb cb, void *arg,
                                        sl_err *err);

/*
 * Trusted delete, for the bookie's own sweep (ledger_sweep.h) only: the
 * same effect as sl_bookie_store_delete_ledger (entries removed, a
 * tombstone left, durable and applied before cb runs; the same journal
 * record, so replay cannot tell them apart) but without the password check.
 * The bookie stores only a ledger's key, never its password, so it could
 * not pass the check itself; the authority is the metadata service's
 * tombstone for the ledger, which the caller must have seen. Errors (cb not
 * called): SL_EINVAL, SL_EBUSY (requests for it in flight; retry later),
 * SL_EFAILED. Allowed while read-only.
 */
sl_status sl_bookie_store_drop_ledger(sl_bookie_store *s, uint64_t ledger,
                                      sl_bookie_store_cb cb, void *arg,
                                      sl_err *err);

/*
 * Reads an entry into *out (release it with sl_ledger_entry_release). The
 * stored entry checksum is checked first. Errors: SL_EINVAL (entry < 0),
 * SL_ENOTFOUND (ledger or entry), SL_EDELETED (a tombstone), SL_ECORRUPT
 * (checksum mismatch; the bytes are not returned), SL_EIO.
 */
sl_status sl_bookie_store_read(sl_bookie_store *s, uint64_t ledger, int64_t entry,
                               sl_ledger_entry *out, sl_err *err);

/* The stored LAC of a ledger (-1 if none yet). Errors: SL_ENOTFOUND,
 * SL_EDELETED. */
sl_status sl_bookie_store_read_lac(sl_bookie_store *s, uint64_t ledger,
                                   int64_t *lac, sl_err *err);

/* The durable state of a ledger (with its key, if recorded). Errors:
 * SL_ENOTFOUND, SL_EDELETED (a tombstone). */
sl_status sl_bookie_store_ledger_meta(sl_bookie_store *s, uint64_t ledger,
                                      sl_ledger_meta *out, sl_err *err);

/* Ledger ids stored here (tombstones left out), ascending, as a malloc'd array the caller frees
 * (NULL when *n is 0). */
void sl_bookie_store_list_ledgers(sl_bookie_store *s, uint64_t **ids, size_t *n);

typedef struct sl_bookie_store_info {
  uint64_t total_bytes;  /* disk (or quota) size */
  uint64_t free_bytes;
  double used_pct;
  bool readonly;
  bool failed;
  uint64_t ledgers;
  uint64_t entries;
  uint64_t entry_bytes;  /* payload bytes stored */
  uint64_t journal_syncs;
  uint64_t journal_records;
  uint64_t journal_segments;
  uint64_t checkpoints;
  uint64_t replayed_records; /* at open */
  uint64_t journal_bytes;    /* journal after the last checkpoint: what a
                                restart now would replay (and a little more:
                                markers, segment headers) */
  uint64_t tombstones;       /* deleted ledgers remembered */
} sl_bookie_store_info;

/* Size of an instance id as text: 32 hex digits and a NUL. */
#define SL_BOOKIE_INSTANCE_ID_LEN 33

/* This store's instance id, 32 lowercase hex digits (see the design note).
 * Valid until close. */
const char *sl_bookie_store_instance_id(const sl_bookie_store *s);

void sl_bookie_store_info_get(sl_bookie_store *s, sl_bookie_store_info *out);

/* Takes a checkpoint now (normally the maintenance thread does). Errors:
 * SL_EIO. */
sl_status sl_bookie_store_checkpoint(sl_bookie_store *s, sl_err *err);

/* Re-samples the disk now and waits for the result (tests, after deletes). */
void sl_bookie_store_check_disk(sl_bookie_store *s);

/* Changes the disk quota (0: the real disk) and re-samples. */
void sl_bookie_store_set_disk_limit(sl_bookie_store *s, uint64_t limit_bytes);

/*
 * Waits for every accepted request to complete, takes a final checkpoint,
 * stops the threads and frees the store. Callers stop submitting first.
 * Not from a callback. NULL does nothing.
 */
void sl_bookie_store_close(sl_bookie_store *s);

#endif
