/*
 * Ledger client: the replicated log under a partition (DESIGN.md §3). It
 * creates ledgers on an ensemble of bookies, appends to them with quorum
 * writes, replaces failed bookies without closing (ensemble change), fences
 * and recovers ledgers whose writer died, reads entries back, and deletes
 * ledgers nobody needs (data on the bookies first, then the metadata: see
 * sl_ledger_delete_async). Its metrics (ensemble changes, recoveries,
 * deletes, pending bytes, add latency) go to sl_metrics_default(). It knows
 * bookies and ledger metadata, not topics: the managed ledger (one per
 * partition) and the auto-recovery worker (sl_ledger_rereplicate_async) sit
 * on top of it.
 *
 * Words
 *   E, Qw, Qa     ensemble size, write quorum, ack quorum (E >= Qw >= Qa >= 1)
 *   write set     the Qw bookies of entry e: ensemble[(e + i) mod E], i < Qw,
 *                 in the ensemble segment that covers e
 *   LAC           last add confirmed: the highest entry id whose add is
 *                 complete (every entry up to it has Qa acks); -1 if none
 *   epoch         the ownership epoch of the partition's owner; it goes with
 *                 every add, fence and ledger-metadata update
 *
 * Life of an append (writer handle)
 *   1. sl_ledger_append (caller's thread) gives the entry the next id, packs
 *      one AddEntryRequest (payload, LAC so far, epoch, password, CRC32C over
 *      ledger id, entry id and payload) once, and posts it to the handle's
 *      serial.
 *   2. On the serial the packed request is queued on the AddEntry stream of
 *      each bookie of its write set (one long-lived stream per bookie, many
 *      entries in flight on it; the same packed bytes for all Qw).
 *   3. Acks come back on the serial, in any order. An entry is complete once
 *      Qa bookies of its current write set acked it. Completions run in entry
 *      order from the front of the pending list: the callback of entry e runs
 *      only after e and every entry before it are complete. The new LAC rides
 *      on the next add; once no add came for 200 ms (and none is pending),
 *      a WriteLac to the ensemble carries it, so readers of the open ledger
 *      and a recovery see it. Under steady traffic no WriteLac is sent.
 *   4. A bookie that answers BUSY gets a pause: its stream is reopened
 *      100 ms later and what is pending is resent to it (adds are
 *      idempotent). A bookie that ends its stream, answers a typed refusal
 *      that means "not here" (READ_ONLY, UNAVAILABLE, FAILED, I/O), or holds an
 *      add unanswered past add_timeout_ms while acking nothing else either (a
 *      silent peer, e.g. SIGSTOP) is
 *      replaced: ensemble change (below).
 *   5. FENCED, STALE_EPOCH or an entry CONFLICT from a bookie, or a metadata
 *      update refused because the ledger is no longer ours, moves the handle
 *      to FENCED: every pending append fails with SL_EFENCED, in order, and
 *      on_fenced runs once. The managed ledger turns that into redirects.
 *
 * Ensemble change (writer, on the serial)
 *   Completions are held. A replacement is picked for each failed bookie
 *   (placement rules below, never a bookie of the current ensemble or one
 *   that failed on this handle). The new segment starts at LAC + 1 (the
 *   first unconfirmed entry). It is written with a compare-and-swap on the
 *   ledger's metadata version, with our epoch. Only after the CAS succeeds
 *   are the unconfirmed entries resent (the very same packed requests) to
 *   the replacements, and completions resume. The writer's metadata
 *   updates (ensemble change, close) are UpdateLedger kind WRITE with the
 *   epoch that created the ledger. A lost CAS (version mismatch)
 *   re-reads the metadata: if it is still OPEN and ours, the change is
 *   retried on the new version; IN_RECOVERY, CLOSED or a stale epoch means
 *   FENCED. No bookie to replace with, or a metadata service unreachable past
 *   metadata_timeout_ms, moves the handle to FAILED.
 *
 * Recovery (sl_ledger_recover_async), for a ledger whose writer is gone
 *   1. Read the metadata. CLOSED: done (idempotent). OPEN, or IN_RECOVERY
 *      with a recovery epoch at or below ours: CAS it to IN_RECOVERY with
 *      recovery_epoch = our epoch (UpdateLedger kind RECOVER). Our epoch must
 *      be above the ledger's owner epoch, and a higher recovery epoch wins:
 *      SL_ESTALE_EPOCH.
 *   2. Fence every bookie of the last ensemble (Fence with our epoch and the
 *      ledger password). Wait until, in every write quorum of that ensemble,
 *      at least Qw - Qa + 1 bookies answered the fence: then no write set can
 *      gather Qa acks for a new add of the old writer. More are not waited
 *      for; a write quorum short of that after recovery_timeout_ms fails the
 *      recovery with SL_EUNAVAIL (nothing was changed; re-run later). The
 *      same timeout bounds every later step between two recovered entries.
 *   3. From the highest LAC any fenced bookie reported (or the first entry
 *      of the last segment, if later), read forward entry by entry (fencing
 *      reads, so every answer comes from a fenced bookie). An entry found on
 *      any bookie with a good checksum is written back, as a recovery add
 *      with our epoch, to its whole write set and counts as recovered once
 *      Qa acks are in. A bookie whose write-back fails is replaced
 *      (placement rules) from that entry on; the new segment goes into the
 *      metadata only with the closing CAS of step 4 and records no instance
 *      id for the replacement (it never saw the old writer's adds), so a
 *      re-run after a crash still reads the old writer's bookies. An entry is absent only when Qw - Qa + 1
 *      bookies of its write set say "not found" with a valid vote: a vote is
 *      valid only from a fenced bookie whose instance id is the one the
 *      ledger's metadata recorded for it in that segment
 *      (EnsembleSegment.instance_ids, taken from the bookie's registration
 *      when the segment was written). A bookie wiped and restarted under the
 *      same id is a new instance and votes for nothing; so does one for
 *      which no instance id was recorded. Neither found
 *      nor absent (too few valid answers): the recovery fails with
 *      SL_EUNAVAIL and changes nothing more; a re-run continues.
 *   4. The last recovered entry (the one before the first absent one) is the
 *      ledger's end: CAS the metadata to CLOSED with that last_entry_id (and
 *      the segments of step 3's replacements).
 *   Re-running after a crash at any step is safe: fencing and recovery adds
 *   are idempotent, and step 1 accepts our own IN_RECOVERY.
 *
 * Reads (sl_ledger_read_async)
 *   Entries [first, last], never past the handle's LAC (a writer's own LAC,
 *   a recovered or closed ledger's last entry, or the LAC bookies report for
 *   an OPEN ledger opened for reading). A read keeps a window of entries in
 *   flight: about 8 MiB at the average entry size seen (at most 128 entries),
 *   issued in chunks of half of it, each within one ensemble segment. A
 *   chunk of 4 entries or more is read through ReadEntries range streams to
 *   bookies of its ensemble that together hold it: with striping (E > Qw) a
 *   bookie holds only the entries whose write set includes it, so each is
 *   asked for just those (a striped range, bookie.proto), two bookies for
 *   E=3, Qw=2, with no entry twice, the first one rotating per chunk to
 *   spread the load. Every entry a range does not bring with a good checksum
 *   (stream error, "not found", bad checksum, a bookie silent for
 *   speculative_read_ms; a failed or silent bookie gets no more ranges in
 *   this read's segment), and every entry of a smaller chunk, is read with
 *   ReadEntry from the first bookie of its write set; an entry that comes
 *   back with an error, "not found" or a bad checksum is asked of the next
 *   bookie of its write set. If that bookie has not answered within
 *   speculative_read_ms, the next one is asked too and the first good
 *   answer wins. on_entry runs in entry order, exactly once per entry, then
 *   on_done once; the window bounds what a slow consumer makes the read
 *   hold.
 *
 * Placement (create and ensemble change)
 *   Candidates are the live bookies from ListBookies that are not read-only
 *   and not excluded. A bookie that failed an add of any handle of this
 *   client in the last SL_LEDGER_QUARANTINE_MS is left out too, unless
 *   there are too few others: the bookie list lags a dead bookie by up to
 *   its session TTL, and without this every new ledger (a rollover right
 *   after an ensemble change, say) could pick it again and fail over
 *   again. When they span at least as many racks as needed, the
 *   ensemble takes bookies from as many different racks as possible. Among
 *   equals, the bookie with the fewest writer handles of this client on it
 *   goes first, then the one with the most free bytes, then by id (so the
 *   choice is deterministic for tests).
 *
 * Invariants
 *  1. Entry ids of a writer handle are 0, 1, 2 ... in sl_ledger_append call
 *     order, with no gaps. Each entry is packed once; every send and resend
 *     of it (to any bookie, before or after an ensemble change) carries the
 *     same bytes, CRC and epoch.
 *  2. An append's callback reports SL_OK only after Qa bookies of the entry's
 *     current write set acknowledged it (each ack means durable on that
 *     bookie's disk) and every earlier entry reported SL_OK. Callbacks run in
 *     entry order, each exactly once. The LAC is the last id reported SL_OK.
 *  3. Once an append fails, every later append of that handle fails too: a
 *     handle never leaves a hole. The first failure moves it to FENCED or
 *     FAILED, which refuse further appends.
 *  4. No completion runs while an ensemble change is in flight. A bookie
 *     receives entries of a new segment only after the CAS that records the
 *     segment succeeded. An ack counts only from a bookie in the entry's
 *     current write set.
 *  5. The first entry of the last ensemble segment never moves back, and
 *     segments are only appended (ensemble history stays).
 *  6. After FENCED, the handle sends no add and writes no metadata.
 *  7. Close writes CLOSED with last_entry_id = LAC, only once no append is
 *     pending. A ledger is never closed past an entry that a reader could not
 *     find on Qa bookies.
 *  8. Recovery reads no entry before fencing reached Qw - Qa + 1 bookies of
 *     every write quorum; it never counts an invalid "not found" vote; it
 *     closes the ledger at the end of the contiguous recovered prefix, which
 *     includes every entry the old writer reported SL_OK.
 *  9. A read never returns an entry past the handle's LAC or one whose
 *     CRC32C does not match.
 *
 * States of a handle and the function behind each transition
 *   WRITING     appends accepted            sl_ledger_create_async
 *   CHANGING    appends queued, completions held; back to WRITING when the
 *               ensemble CAS succeeds        bookie failure or timeout
 *   CLOSING     appends refused, pending    sl_ledger_close_async
 *               ones still complete
 *   CLOSED      read-only, end fixed        close CAS done;
 *                                           sl_ledger_recover_async;
 *                                           sl_ledger_open_async (CLOSED)
 *   READING     read-only view of an OPEN   sl_ledger_open_async (OPEN)
 *               ledger, up to its LAC
 *   FENCED      terminal for writes         FENCED, STALE_EPOCH, CONFLICT,
 *                                           metadata no longer ours
 *   FAILED      terminal for writes         no replacement bookie, metadata
 *                                           unreachable, wrong password
 *   Reads are served in every state but FENCED and FAILED up to the LAC.
 *
 * Threads, serials and locks
 *   Each handle runs on one sl_serial (common/serial.h): its bookie stream
 *   callbacks, metadata call completions and timers are all posted there, so
 *   the handle's state needs no lock. Every user callback of a handle
 *   (append, close, read, on_fenced) runs on that serial, never two at once,
 *   never inside the call that started the operation. Pass the managed
 *   ledger's own serial in the options and its callbacks and the handle's
 *   share one strand. A callback must not block; it may call any function
 *   here, sl_ledger_destroy included.
 *   The client is thread-safe. client->mu guards only its bookie cache and
 *   channel pool (taken when a handle is created or changes its ensemble,
 *   never per append).
 */
#ifndef SL_BROKER_LEDGER_LEDGER_H
#define SL_BROKER_LEDGER_LEDGER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rpc_client.h"
#include "common/serial.h"
#include "common/status.h"

typedef struct sl_ledger_client sl_ledger_client;
typedef struct sl_ledger sl_ledger;

typedef struct sl_ledger_client_opts {
  sl_rpc_channel *metadata;    /* metadata service channel; retained: it must
                                  outlive the client (the caller owns it) */
  const sl_rpc_channel_opts *bookie_channel; /* template for bookie channels
                                  (TLS, token); target ignored; NULL =
                                  plaintext defaults; borrowed */
  int add_timeout_ms;          /* a bookie holding an add unanswered this
                                  long is replaced; 0 = 5000 */
  int metadata_timeout_ms;     /* per metadata call; 0 = 5000 */
  int recovery_timeout_ms;     /* a recovery that recovers no entry for this
                                  long fails (SL_EUNAVAIL); 0 = 10000 */
  int read_timeout_ms;         /* per bookie read; 0 = 5000 */
  int speculative_read_ms;     /* ask a second replica after this; 0 = 100,
                                  < 0 = never */
  int bookie_cache_ms;         /* ListBookies answer kept this long; 0 = 1000 */
  uint32_t max_entry_bytes;    /* larger appends: SL_ETOOBIG; 0 = 5 MiB */
} sl_ledger_client_opts;

#define SL_LEDGER_CLIENT_OPTS_INIT {.metadata = NULL, .bookie_channel = NULL}

/* Creates a client. Makes no call yet. Errors: SL_EINVAL (no metadata
 * channel), SL_ENOMEM. */
sl_status sl_ledger_client_create(const sl_ledger_client_opts *opts,
                                  sl_ledger_client **out, sl_err *err);

/* Frees the client and its bookie channels. Every handle must have been
 * destroyed (sl_ledger_destroy) and every create/open/recover callback must
 * have run; it waits (up to 10 s, then leaks the client with an error log)
 * for those handles' streams to finish releasing, which happens on gRPC
 * threads after sl_ledger_destroy. Not from a callback of this client.
 * NULL is a no-op. */
void sl_ledger_client_destroy(sl_ledger_client *c);

/* Called once, on the handle's serial, when the handle becomes FENCED: a
 * newer owner took the ledger. st is SL_EFENCED or SL_ESTALE_EPOCH; details
 * is borrowed. */
typedef void (*sl_ledger_fenced_cb)(sl_ledger *lh, sl_status st,
                                    const char *details, void *arg);

typedef struct sl_ledger_create_opts {
  uint32_t ensemble_size;      /* E; 0 = 3 */
  uint32_t write_quorum;       /* Qw; 0 = 2 */
  uint32_t ack_quorum;         /* Qa; 0 = 2 */
  uint64_t epoch;              /* the caller's ownership epoch of partition */
  const char *partition;       /* recorded in the metadata; NULL = none */
  const void *password;        /* ledger password; copied; NULL with
                                  password_len 0 = the empty password */
  size_t password_len;
  const char *const *exclude;  /* bookie ids not to use, NULL-terminated, or
                                  NULL; borrowed */
  sl_serial *serial;           /* the handle's serial (retained); NULL = a
                                  new one */
  sl_ledger_fenced_cb on_fenced; /* may be NULL */
  void *fenced_arg;
} sl_ledger_create_opts;

#define SL_LEDGER_CREATE_OPTS_INIT \
  {.ensemble_size = 0, .write_quorum = 0, .ack_quorum = 0, .serial = NULL}

/* Completion of create, open and recover: runs on the new handle's serial.
 * On SL_OK *lh is a handle the callback now owns (sl_ledger_destroy); else
 * lh is NULL and details (borrowed) says why. */
typedef void (*sl_ledger_open_cb)(sl_status st, const char *details,
                                  sl_ledger *lh, void *arg);

/*
 * Creates a ledger: picks an ensemble (placement rules above), allocates an
 * id and writes its metadata OPEN with our epoch, then opens the AddEntry
 * streams. The handle is WRITING. The caller registers the ledger id in its
 * managed-ledger list before appending (the ledger exists in metadata from
 * this callback on, even if the caller then drops it).
 * Returns SL_OK and cb runs once later, or an error and cb never runs:
 * SL_EINVAL (quorums out of order, no epoch), SL_ENOMEM.
 * Errors through cb: SL_EUNAVAIL ("ledger: 2 writable bookies, need 3", or
 * the metadata service is unreachable), SL_ESTALE_EPOCH / SL_EPRECOND (the
 * metadata service refused our epoch for the partition).
 */
sl_status sl_ledger_create_async(sl_ledger_client *c,
                                 const sl_ledger_create_opts *opts,
                                 sl_ledger_open_cb cb, void *arg, sl_err *err);

/* Completion of one append. Runs on the handle's serial, exactly once, in
 * entry order. st is SL_OK (entry_id is durable on Qa bookies), SL_EFENCED
 * (no longer the owner: redirect), SL_EUNAVAIL / SL_EPERM / SL_EIO (FAILED),
 * or SL_ECANCELED (the handle was destroyed). */
typedef void (*sl_ledger_append_cb)(sl_status st, int64_t entry_id, void *arg);

/*
 * Appends one entry. `data` is borrowed for the call (it is packed before
 * return). Calls on one handle must not run concurrently (the caller
 * serialises them, e.g. by appending from the handle's serial); ids follow
 * call order. If entry_id is not NULL it receives the entry's id.
 * Returns SL_OK and cb runs once later, or an error and cb never runs:
 * SL_EINVAL (cb NULL, or data NULL with len > 0), SL_ETOOBIG (len over
 * max_entry_bytes), SL_EPRECOND (not a writer handle, or close was called),
 * SL_EFENCED (the handle is FENCED), SL_ENOMEM.
 * There is no limit on entries in flight here: the caller bounds them (bytes
 * pending are in sl_ledger_stats).
 */
sl_status sl_ledger_append(sl_ledger *lh, const void *data, size_t len,
                           sl_ledger_append_cb cb, void *arg, int64_t *entry_id,
                           sl_err *err);

/* Completion of close: runs on the handle's serial. */
typedef void (*sl_ledger_close_cb)(sl_status st, const char *details,
                                   void *arg);

/*
 * Closes a writer handle: refuses new appends, waits until every pending
 * append has completed or failed, then CASes the metadata to CLOSED with
 * last_entry_id = LAC. The handle becomes CLOSED (reads still work). On a
 * handle that is already CLOSED or READING, cb reports SL_OK. On a FENCED
 * handle cb reports SL_EFENCED (the new owner closes the ledger through
 * recovery). On a FAILED handle it still tries the CAS at the LAC.
 * Returns SL_OK and cb runs once later; SL_EPRECOND if close was already
 * called.
 */
sl_status sl_ledger_close_async(sl_ledger *lh, sl_ledger_close_cb cb,
                                void *arg, sl_err *err);

/*
 * Frees a handle without closing the ledger (its metadata stays as it is:
 * an OPEN ledger is left for recovery, as if the writer died). Streams are
 * cancelled; pending appends, reads and a pending close get their callback
 * with SL_ECANCELED on the serial, possibly after this returns, and the
 * memory goes with the last of them. Any thread, callbacks included. NULL is
 * a no-op.
 */
void sl_ledger_destroy(sl_ledger *lh);

typedef struct sl_ledger_open_opts {
  sl_serial *serial;           /* the handle's serial (retained); NULL = new */
} sl_ledger_open_opts;

/*
 * Opens an existing ledger for reading, without fencing it: a CLOSED ledger
 * reads up to its last entry, an OPEN or IN_RECOVERY one up to the highest
 * LAC its bookies report (ReadLac). Errors through cb: SL_ENOTFOUND,
 * SL_EUNAVAIL. opts may be NULL.
 */
sl_status sl_ledger_open_async(sl_ledger_client *c, uint64_t ledger_id,
                               const sl_ledger_open_opts *opts,
                               sl_ledger_open_cb cb, void *arg, sl_err *err);

typedef struct sl_ledger_recover_opts {
  uint64_t epoch;              /* our ownership epoch; must be at least the
                                  ledger's owner epoch */
  sl_serial *serial;           /* the handle's serial (retained); NULL = new */
} sl_ledger_recover_opts;

/*
 * Fences and recovers a ledger as described in the design note, and closes
 * it. On SL_OK the handle is CLOSED; sl_ledger_last_entry() is its end (-1
 * if empty). The password comes from the ledger's metadata. A ledger that is
 * already CLOSED succeeds at once (idempotent).
 * Errors through cb: SL_ENOTFOUND, SL_ESTALE_EPOCH (a higher epoch is
 * recovering or owns it), SL_EUNAVAIL (too few bookies answered to decide;
 * nothing past fencing was decided, re-run later), SL_EVERSION (lost a CAS
 * race to another recoverer twice), SL_EPERM (bookies refuse the password).
 */
sl_status sl_ledger_recover_async(sl_ledger_client *c, uint64_t ledger_id,
                                  const sl_ledger_recover_opts *opts,
                                  sl_ledger_open_cb cb, void *arg, sl_err *err);

/* Completion of delete: runs on the serial of the delete options. details
 * is borrowed. */
typedef void (*sl_ledger_delete_cb)(sl_status st, const char *details,
                                    void *arg);

typedef struct sl_ledger_delete_opts {
  uint64_t epoch;              /* the partition owner's epoch (the metadata
                                  service checks it) */
  sl_serial *serial;           /* where cb runs (retained); NULL = a new one */
} sl_ledger_delete_opts;

/*
 * Deletes a ledger that no one reads or writes any more (a trimmed one):
 *   1. GetLedger. NOT_FOUND: done, SL_OK (see 3).
 *   2. DeleteLedger, with the ledger's password, on every bookie its metadata
 *      names (every segment's ensemble and every re-replication target),
 *      each once, all at the same time. The bookies drop its entries and keep
 *      a tombstone. A bookie with no registration (its session lapsed) is
 *      skipped and logged: it is gone and its copy with it.
 *   3. Only when every bookie asked said OK: DeleteLedger on the metadata
 *      (CAS on the version read in 1, with opts->epoch).
 * So the metadata, the only map to the data, is deleted last: a ledger
 * without metadata holds no data on a registered bookie. A failure at any
 * step leaves the metadata, and re-running the delete is safe (a bookie
 * deletes a tombstone again with SL_OK).
 * Returns SL_OK and cb runs once later, or an error and cb never runs:
 * SL_EINVAL (no client, ledger id 0, epoch 0, cb NULL), SL_ENOMEM.
 * Errors through cb: the first bookie's failure (SL_EUNAVAIL, SL_EBUSY,
 * SL_EPERM for a wrong password; details name the bookie) or the metadata
 * service's (SL_ESTALE_EPOCH, SL_EVERSION, SL_EUNAVAIL).
 */
sl_status sl_ledger_delete_async(sl_ledger_client *c, uint64_t ledger_id,
                                 const sl_ledger_delete_opts *opts,
                                 sl_ledger_delete_cb cb, void *arg, sl_err *err);

/* Outcome of a re-replication: runs on the serial of the options. details
 * is borrowed. replaced counts the (segment, bookie) positions moved to new
 * bookies, copied the entries written to them. */
typedef void (*sl_ledger_rereplicate_cb)(sl_status st, const char *details,
                                         uint32_t replaced, uint64_t copied,
                                         void *arg);

typedef struct sl_ledger_rereplicate_opts {
  const char *const *gone;     /* bookie ids the auditor found gone; only
                                  these are replaced; NULL-terminated;
                                  borrowed for the call */
  uint64_t bytes_per_second;   /* copy rate bound (payload bytes); 0 = none */
  const atomic_bool *cancel;   /* once true, the op ends with SL_ECANCELED
                                  before its next chunk (rate waits look at
                                  it at least once a second); NULL = never;
                                  retained until cb runs */
  sl_serial *serial;           /* where cb runs (retained); NULL = a new one */
} sl_ledger_rereplicate_opts;

/*
 * Re-replication (auto-recovery, DESIGN.md §4) of one CLOSED ledger: gives
 * every entry its Qw copies again after bookies in opts->gone are lost.
 *   1. ListBookies (fresh) and GetLedger. A position of a segment is to be
 *      replaced when its bookie is in opts->gone and either has no
 *      registration now, or is registered with another instance id than the
 *      segment recorded (wiped). A bookie that came back with its data is
 *      left alone: nothing is copied twice.
 *   2. Per segment with such positions: replacements are picked (placement
 *      rules; never a bookie of that segment, of opts->gone, or one an
 *      earlier re-replication of this ledger replaced, so a bookie replaced
 *      out of a ledger never holds it again and may drop its copy), and each
 *      entry of the segment whose write set includes a replaced position is
 *      read from the surviving copies (CRC checked) and written to its
 *      replacement as a recovery add with the ledger's highest epoch, at most
 *      bytes_per_second, in chunks of at most 32 entries (with a rate, about
 *      50 ms worth of bytes each, so bookies take copies in small bursts).
 *   3. One UpdateLedger kind REREPLICATE (CAS on the version read in 1)
 *      replaces those bookie ids and instance ids and appends one
 *      Rereplication record per position. Copies are made before the
 *      metadata names them, so a reader never sees a bookie without its
 *      entries.
 * A failure leaves the metadata as it was; re-running is safe (adds are
 * idempotent). Copies a failed run wrote to a replacement that the
 * metadata never named stay on that bookie until the ledger is deleted.
 * Returns SL_OK and cb runs once later, or an error and cb never runs:
 * SL_EINVAL (no client, ledger id 0, cb NULL), SL_ENOMEM.
 * Errors through cb: SL_ENOTFOUND (no such ledger, or deleted: nothing to
 * do), SL_EPRECOND (the ledger is not CLOSED), SL_EUNAVAIL (no bookie to
 * copy to, no good copy of an entry, or a bookie or the metadata service
 * did not answer within recovery_timeout_ms), SL_EVERSION (the metadata
 * changed under us), SL_ECANCELED (opts->cancel), or a bookie's refusal of
 * a copy (details name it).
 */
sl_status sl_ledger_rereplicate_async(sl_ledger_client *c, uint64_t ledger_id,
                                      const sl_ledger_rereplicate_opts *opts,
                                      sl_ledger_rereplicate_cb cb, void *arg,
                                      sl_err *err);

/* One entry read: runs on the handle's serial, in entry order. data is
 * borrowed (valid during the call); its CRC32C was checked. */
typedef void (*sl_ledger_entry_cb)(int64_t entry_id, const void *data,
                                   size_t len, void *arg);
/* End of a read: runs once, after the last on_entry. On failure the entries
 * delivered so far are a prefix of [first, last]. */
typedef void (*sl_ledger_read_done_cb)(sl_status st, const char *details,
                                       void *arg);

/*
 * Reads entries [first, last] of a handle's ledger. last must be at most
 * sl_ledger_lac(lh) at the time of the call, else SL_ERANGE.
 * Returns SL_OK and on_done runs once later, or an error and nothing runs:
 * SL_EINVAL (first < 0, last < first, callbacks NULL), SL_ERANGE,
 * SL_EPRECOND (the handle is FENCED or FAILED), SL_ENOMEM.
 * Errors through on_done: SL_EUNAVAIL or SL_ECORRUPT (no replica gave a good
 * copy of an entry; details names it), SL_ECANCELED.
 */
sl_status sl_ledger_read_async(sl_ledger *lh, int64_t first, int64_t last,
                               sl_ledger_entry_cb on_entry,
                               sl_ledger_read_done_cb on_done, void *arg,
                               sl_err *err);

/* How long a bookie that failed an add is avoided by placement. */
#define SL_LEDGER_QUARANTINE_MS 30000

/* Thread-safe getters. */
uint64_t sl_ledger_id(const sl_ledger *lh);
int64_t sl_ledger_lac(const sl_ledger *lh);        /* -1 if nothing yet */
/* The end of a CLOSED ledger; the LAC otherwise. */
int64_t sl_ledger_last_entry(const sl_ledger *lh);
/* Segments this handle added (ensemble changes); 0 for a reader. */
uint64_t sl_ledger_ensemble_changes(const sl_ledger *lh);
sl_serial *sl_ledger_serial(const sl_ledger *lh);  /* borrowed */

typedef enum sl_ledger_state {
  SL_LEDGER_WRITING = 0,
  SL_LEDGER_CHANGING = 1,
  SL_LEDGER_CLOSING = 2,
  SL_LEDGER_CLOSED = 3,
  SL_LEDGER_READING = 4,
  SL_LEDGER_FENCED = 5,
  SL_LEDGER_FAILED = 6,
} sl_ledger_state;

typedef struct sl_ledger_stats {
  sl_ledger_state state;
  int64_t lac;
  int64_t next_entry;          /* id the next append gets */
  uint64_t pending_appends;    /* appended, callback not yet run */
  uint64_t pending_bytes;      /* their payload bytes */
  uint64_t ensemble_changes;   /* segments added by this handle */
  uint64_t bytes_appended;     /* payload bytes reported SL_OK */
} sl_ledger_stats;

/* A snapshot of the handle's counters (thread-safe; fields are read one by
 * one, so they may be from slightly different moments). */
void sl_ledger_stats_get(const sl_ledger *lh, sl_ledger_stats *out);

#endif
