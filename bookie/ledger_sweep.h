/*
 * Ledger sweep: drops the local copy of every ledger the metadata service
 * says is deleted.
 *
 * Why: a broker deletes a ledger's data by sending DeleteLedger to each
 * bookie of its ensemble (broker/ledger/delete.c). A bookie unregistered at
 * that moment is skipped and, if it comes back, keeps the data forever; and
 * the metadata service tombstones a deleted topic's ledgers without telling
 * any bookie. So each bookie sweeps its own ledgers now and then.
 *
 * A pass lists the ledgers stored here (sl_bookie_store_list_ledgers:
 * ascending, tombstones left out) and asks the metadata service's GetLedger
 * about each in turn, at most lookups_per_second a second. By the answer:
 *   SL_OK         the ledger exists: kept, unless it is CLOSED, a
 *                 Rereplication record names this bookie (bookie_id) as
 *                 replaced, and no segment names it any more: auto-recovery
 *                 copied its entries elsewhere while this bookie was gone,
 *                 and never gives the ledger back to a bookie it replaced
 *                 (broker/ledger/ledger.h), so the copy is dropped.
 *   SL_EDELETED   the service holds the ledger's tombstone
 *                 (deleted-ledgers/<id>): dropped with
 *                 sl_bookie_store_drop_ledger; SL_EBUSY (requests for it in
 *                 flight) skips it until the next pass.
 *   SL_ENOTFOUND  no record and no tombstone: kept, with a warning.
 *   anything else (unavailable, deadline, a drop that failed otherwise)
 *                 ends the pass at once: every ledger not yet dropped is
 *                 kept until the next pass. Logged once per pass.
 *
 * Invariants (why dropping is safe)
 *  1. Only positive evidence deletes: a ledger is dropped only right after
 *     GetLedger answered SL_EDELETED for that very id, or showed the
 *     "moved away" record above. Silence, errors and "not found" never
 *     delete.
 *  2. A ledger's metadata is created before its first entry reaches any
 *     bookie, so every ledger stored here had a record. A missing record
 *     without a tombstone means the metadata service is wrong (or belongs to
 *     another cluster), never that the data is garbage.
 *  3. Ledger ids are never reused and a tombstone is never removed, so once
 *     it has been seen nothing can make the ledger live again: no race
 *     between the lookup and the drop can drop a live ledger.
 *  4. A drop is durable (its callback ran) before the next lookup starts.
 *  5. Passes never overlap (sw->pass_mu), whoever runs them.
 *
 * States
 *   RUNNING  sl_sweep_start: the thread runs a pass every interval_ms,
 *            counted from the end of the previous one (none if 0);
 *            sl_sweep_run_once runs one on the caller's thread
 *   STOPPED  sl_sweep_stop: a pass in progress ends at its next wait (the
 *            lookup in flight is cancelled, the rate-limit wait woken), the
 *            thread is joined and everything freed
 *
 * Threads: the sweep thread ("bookie-sweep") runs the periodic passes.
 * GetLedger answers arrive on the channel's completion thread and drop
 * completions on the store's applier thread; both only record the outcome
 * and signal sw->cv.
 *
 * Locks: sw->pass_mu is held for a whole pass (network waits included).
 * sw->mu guards the stop flag, the lookup in flight and the completion
 * flags, and is the mutex sw->cv waits with. Order: pass_mu -> mu ->
 * the RPC call's lock (cancelling the lookup in flight). No call into the
 * store is made with mu held.
 */
#ifndef SL_BOOKIE_LEDGER_SWEEP_H
#define SL_BOOKIE_LEDGER_SWEEP_H

#include <stdint.h>

#include "bookie/bookie_store.h"
#include "common/status.h"

struct sl_metrics;

typedef struct sl_sweep sl_sweep;

typedef struct sl_sweep_opts {
  const char *target;       /* metadata service gRPC target; copied */
  const char *tls_root_pem; /* CA for the metadata service; NULL = plaintext.
                               The three PEMs are borrowed for the call (the
                               channel keeps its own copies) */
  const char *tls_cert_pem; /* client certificate for mutual TLS, or NULL */
  const char *tls_key_pem;
  const char *authorization; /* "authorization" metadata (a token), or
                               NULL; copied */
  const char *bookie_id;    /* this bookie's id, for "moved away" drops;
                               NULL = none; copied */
  int interval_ms;          /* between passes; the first comes after one
                               interval; 0 = no passes (run_once only) */
  int lookups_per_second;   /* GetLedger calls at most; 0 = 100 */
  int rpc_timeout_ms;       /* per GetLedger; 0 = 2000 */
  struct sl_metrics *metrics; /* registry for sluice_bookie_sweep_*; NULL:
                                 none. Retained until stop */
  /* Whether the metadata service is known to be this bookie's own cluster's
   * (registration confirmed it); a pass finding false drops nothing and
   * ends at once (SL_EPRECOND). NULL = always. Any thread; arg retained. */
  bool (*trusted)(void *arg);
  void *trusted_arg;
} sl_sweep_opts;

#define SL_SWEEP_OPTS_INIT                                                   \
  {.target = NULL, .interval_ms = 600000, .lookups_per_second = 100,         \
   .rpc_timeout_ms = 2000, .metrics = NULL}

/* What one pass did. */
typedef struct sl_sweep_result {
  uint64_t ledgers;      /* stored here (not tombstones) when it began */
  uint64_t checked;      /* looked up and answered OK, DELETED or NOT_FOUND */
  uint64_t dropped;      /* deleted in metadata, or moved away (below),
                            and now dropped here too */
  uint64_t moved;        /* of them, moved away by re-replication */
  uint64_t kept_unknown; /* NOT_FOUND in metadata: kept (and warned) */
  uint64_t busy;         /* deleted in metadata, but the drop was refused
                            with SL_EBUSY: left for the next pass */
  sl_status ended_by;    /* SL_OK: every ledger was looked at; else what
                            ended the pass early (e.g. SL_EUNAVAIL,
                            SL_ETIMEDOUT, SL_ECANCELED on stop) */
} sl_sweep_result;

/*
 * Creates the channel to opts->target and, if interval_ms > 0, starts the
 * thread. store is retained until sl_sweep_stop returns (stop the sweep
 * before closing the store). Nothing is sent before the first pass.
 * Errors: SL_EINVAL (no store or target, a negative setting), the
 * channel's (e.g. a certificate without its key), the metrics registry's.
 */
sl_status sl_sweep_start(sl_bookie_store *store, const sl_sweep_opts *opts,
                         sl_sweep **out, sl_err *err);

/*
 * Runs one pass now on the caller's thread, after any pass in progress
 * (they never overlap), and fills *out. Returns out->ended_by: SL_OK if
 * every stored ledger was looked at, else the status that ended the pass
 * early, with err naming the ledger ("ledger 7: get ledger: ..."). Not
 * while sl_sweep_stop runs or after it.
 */
sl_status sl_sweep_run_once(sl_sweep *sw, sl_sweep_result *out, sl_err *err);

/*
 * Stops promptly: a pass in progress ends before its next lookup (one in
 * flight is cancelled; a drop in flight is waited for, it is local and
 * quick), the thread is joined, the channel destroyed and sw freed. No
 * sl_sweep_run_once may be running on another thread. NULL does nothing.
 */
void sl_sweep_stop(sl_sweep *sw);

#endif
