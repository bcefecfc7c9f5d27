/*
 * A real single-member etcd for tests, on free loopback ports.
 *
 *   sl_etcd_proc etcd = SL_ETCD_PROC_INIT;
 *   sl_etcd_proc_start(&etcd, "etcd", &err);    // waits until it answers
 *   ... talk to etcd.endpoint ("http://127.0.0.1:PORT") ...
 *   sl_etcd_proc_kill9(&etcd, &err);            // crash it
 *   sl_etcd_proc_restart(&etcd, &err);          // same data dir and ports
 *   sl_etcd_proc_release(&etcd);                // stops it, frees
 *
 * It runs with the limits we deploy (k8s/etcd.yaml): periodic
 * auto-compaction keeping $SL_ETCD_COMPACTION_RETENTION of history (default
 * "1m") and a backend quota of $SL_ETCD_QUOTA_BYTES (default 2 GiB).
 *
 * The binary is /usr/bin/etcd, or $SL_ETCD_BIN when set. Its data directory
 * and log live in a fresh temp dir under $TEST_TMPDIR (`<dir>/data`,
 * `<dir>/etcd.log`; the log is kept after release). One thread drives one
 * handle.
 */
#ifndef SL_TESTS_ETCD_PROC_H
#define SL_TESTS_ETCD_PROC_H

#include "common/status.h"
#include "tests/proc.h"

typedef struct sl_etcd_proc {
  sl_proc proc;
  char *dir;          /* temp dir holding data/ and etcd.log; owned */
  int client_port;
  int peer_port;
  char endpoint[64];  /* "http://127.0.0.1:<client_port>" */
} sl_etcd_proc;

#define SL_ETCD_PROC_INIT                                                \
  {.proc = SL_PROC_INIT, .dir = NULL, .client_port = 0, .peer_port = 0, \
   .endpoint = {0}}

/*
 * Picks free ports, starts etcd, waits until a kv range answers (up to 30 s).
 * If etcd exits at start (a port was taken meanwhile) it retries with new
 * ports, a few times. `name` names the temp dir (borrowed).
 * Precondition: e is SL_ETCD_PROC_INIT.
 */
sl_status sl_etcd_proc_start(sl_etcd_proc *e, const char *name, sl_err *err);

/* Starts etcd again on the same data dir and ports and waits until it
 * answers. Precondition: it was started and is not running now. */
sl_status sl_etcd_proc_restart(sl_etcd_proc *e, sl_err *err);

/* SIGKILL, like a crash; data stays. */
sl_status sl_etcd_proc_kill9(sl_etcd_proc *e, sl_err *err);

/* SIGTERM, then SIGKILL after a grace period; data stays. */
sl_status sl_etcd_proc_stop(sl_etcd_proc *e, sl_err *err);

/* Polls until etcd serves a linearizable kv range, up to timeout_ms. */
sl_status sl_etcd_proc_wait_healthy(sl_etcd_proc *e, int timeout_ms, sl_err *err);

/* The backend's size on disk and the part of it in use (maintenance
 * status: dbSize, dbSizeInUse), in bytes. */
sl_status sl_etcd_proc_db_size(sl_etcd_proc *e, long long *size, long long *in_use,
                               sl_err *err);

/* Defragments the member (maintenance defragment): gives the space freed
 * by compaction back to the file system. */
sl_status sl_etcd_proc_defragment(sl_etcd_proc *e, sl_err *err);

/* Stops etcd if running, deletes its data and frees the handle (the temp
 * dir with etcd.log stays for post-mortems). Safe on SL_ETCD_PROC_INIT. */
void sl_etcd_proc_release(sl_etcd_proc *e);

#endif
