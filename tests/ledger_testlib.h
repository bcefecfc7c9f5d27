/*
 * Helpers for the ledger client's integration tests (tests/ledger_*_test.c):
 * a cluster (real etcd, one metadata service, N bookies) from
 * tests/cluster.h, a ledger client on it, blocking wrappers over the async
 * API, deterministic payloads, and SIGSTOP/SIGCONT and disk wipes of a
 * bookie (features the harness does not have). Every helper fails the
 * running cmocka test on an unexpected error, so tests read as the scenario.
 */
#ifndef SL_TESTS_LEDGER_TESTLIB_H
#define SL_TESTS_LEDGER_TESTLIB_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "broker/ledger/ledger.h"
#include "common/clock.h"
#include "tests/cluster.h"

typedef struct sl_lt {
  sl_cluster *cluster;
  sl_rpc_channel *meta;
  sl_ledger_client *client;
  const char *bookie_args[8];  /* the harness keeps the pointer (restarts) */
} sl_lt;

/* Starts etcd, one metadata service and `bookies` bookies (short session
 * TTL so restarted bookies re-register fast, plus `bookie_args`, up to 4
 * more flags, NULL-terminated, or NULL) and a client with the given options
 * (NULL = defaults; the metadata channel is filled in). */
void sl_lt_start(sl_lt *t, const char *name, int bookies,
                 const char *const *bookie_args, const sl_ledger_client_opts *opts);
/* sl_lt_start with flags for the metadata service too (NULL-terminated,
 * or NULL; the harness keeps the pointer). */
void sl_lt_start_md(sl_lt *t, const char *name, int bookies, const char *const *bookie_args,
                    const char *const *metadata_args, const sl_ledger_client_opts *opts);
/* Destroys the client, the channel and the cluster (checking bookie logs
 * for sanitizer reports). */
void sl_lt_stop(sl_lt *t);
/* A cmocka group teardown: sl_lt_stop on *state (a calloc'ed sl_lt), then
 * frees it. */
int sl_lt_teardown(void **state);

/* Deterministic payload of (ledger, entry), 1 .. 2000 bytes, into buf
 * (at least SL_LT_PAYLOAD_MAX); returns its length. */
#define SL_LT_PAYLOAD_MAX 2000
size_t sl_lt_payload(uint64_t ledger, int64_t entry, uint8_t *buf);

/* Creates a ledger and waits. Fails the test unless SL_OK. */
sl_ledger *sl_lt_create(sl_lt *t, uint32_t e, uint32_t qw, uint32_t qa,
                        uint64_t epoch, sl_ledger_fenced_cb on_fenced, void *arg);

/* An E=3 Qw=2 Qa=2 ledger (epoch 1) holding n entries (deterministic
 * payloads), closed if `close`. Fails the test unless every step is OK. */
sl_ledger *sl_lt_filled(sl_lt *t, int n, bool close);
/* Outcomes of appends made with sl_lt_append(), recorded by entry id. */
typedef struct sl_lt_appends {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int64_t n;              /* appended */
  int64_t done;           /* callbacks run */
  int64_t ok;             /* SL_OK among them */
  int64_t last_ok;        /* highest entry reported SL_OK; -1 */
  int64_t last_cb;        /* entry of the latest callback (order check) */
  bool out_of_order;      /* a callback came for an entry below last_cb */
  bool ok_after_fail;     /* an SL_OK after a failure (a hole) */
  sl_status first_fail;   /* status of the first failure, or SL_OK */
  uint64_t ledger;
} sl_lt_appends;

void sl_lt_appends_init(sl_lt_appends *a, uint64_t ledger);
void sl_lt_appends_release(sl_lt_appends *a);

/* Appends the next entry (deterministic payload). Returns the append's
 * status (SL_OK: a callback will follow). */
sl_status sl_lt_append(sl_ledger *lh, sl_lt_appends *a);

/* Waits until at least `count` callbacks ran (fails after timeout_ms). */
void sl_lt_wait_done(sl_lt_appends *a, int64_t count, int timeout_ms);
/* Appends completed so far (read under the lock: callbacks run on the
 * handle's serial). */
int64_t sl_lt_done(sl_lt_appends *a);

/* Closes and waits; returns close's status. */
sl_status sl_lt_close(sl_ledger *lh);

/* Recovers and waits; on SL_OK *out is the CLOSED handle (else NULL). */
sl_status sl_lt_recover(sl_lt *t, uint64_t ledger, uint64_t epoch,
                        sl_ledger **out, char *details, size_t n);

/* Opens for reading and waits. Fails the test unless SL_OK. */
sl_ledger *sl_lt_open(sl_lt *t, uint64_t ledger);

/* Reads [first, last] and checks every payload; returns on_done's status
 * and the number of entries delivered (in order, else the test fails). */
sl_status sl_lt_read_check(sl_ledger *lh, int64_t first, int64_t last,
                           int64_t *delivered);

/* Destroys a handle and waits until its serial ran the destroy (so that
 * pending callbacks have run). */
void sl_lt_destroy(sl_ledger *lh);

/* Index of the bookie with this id in the cluster, or -1. */
int sl_lt_bookie_index(sl_lt *t, const char *bookie_id);

/* Index of the bookie in slot `slot` of the ledger's last ensemble, as the
 * metadata service has it. */
int sl_lt_ensemble_bookie(sl_lt *t, sl_ledger *lh, uint32_t slot);

/* SIGSTOP / SIGCONT bookie i (found by its data dir in /proc). */
void sl_lt_signal_bookie(sl_lt *t, int i, int sig);

/* Stops bookie i, deletes its data dir, restarts it under the same id (a
 * new instance id). Waits until it has registered again. */
void sl_lt_wipe_bookie(sl_lt *t, int i);

/* Waits until ListBookies shows bookie i (by id) live, or fails. */
void sl_lt_wait_registered(sl_lt *t, int i, int timeout_ms);
/* Waits until ListBookies no longer shows bookie i (its session lapsed), or
 * fails. */
void sl_lt_wait_gone(sl_lt *t, int i, int timeout_ms);
/* Stops bookie i (SIGTERM) and waits until it is unregistered; restarts it
 * (same id, data, port) and waits until it is registered again. */
void sl_lt_stop_bookie(sl_lt *t, int i);
void sl_lt_restart_bookie(sl_lt *t, int i);
/* Waits until bookie i answers DELETED (a tombstone: its copy of the
 * ledger was dropped) for entry 0 of the ledger, or fails. */
void sl_lt_await_dropped(sl_lt *t, int i, uint64_t ledger, int timeout_ms);


#endif
