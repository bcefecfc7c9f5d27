/*
 * Registration: keeps this bookie registered with the metadata service in a
 * session bound to a lease (DESIGN.md §4-5). A thin user of the shared
 * session keeper (common/session.h), which owns the thread, the keep-alives,
 * the loss rule and re-registration; this module only says what a bookie
 * registers and when that changed.
 *
 * - OpenSession carries NodeKind BOOKIE and a BookieInfo: id, address,
 *   rack, instance id, start time, and the changing part (read-only flag, free and total
 *   bytes) read through get_state.
 * - sl_registration_poke (the disk watcher flipped read-only) sends
 *   UpdateNode with fresh state. Free space is also re-reported when it
 *   moved by more than 5% of the disk since the last report, checked at
 *   each keep-alive.
 * - A restarted bookie (same id, same address) takes its registration over
 *   at once; failures are retried with backoff. Registration never fails
 *   the bookie.
 * - sl_registration_stop sends CloseSession (bounded by close_timeout_ms) so
 *   the registration disappears at once instead of after the TTL.
 *
 * Threads: get_state runs on the session thread. poke, status and stop may
 * be called from any thread (stop from one).
 * Lock: r->mu guards what was last reported.
 */
#ifndef SL_BOOKIE_REGISTRATION_H
#define SL_BOOKIE_REGISTRATION_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

typedef struct sl_registration sl_registration;

/* The changing part of the registration. Called on the registration thread. */
typedef void (*sl_registration_state_fn)(void *arg, bool *read_only,
                                         uint64_t *free_bytes, uint64_t *total_bytes);

typedef struct sl_registration_opts {
  const char *target;       /* metadata service gRPC target; copied */
  const char *bookie_id;    /* copied */
  const char *address;      /* host:port brokers use to reach us; copied */
  const char *rack;         /* failure domain, may be NULL; copied */
  const char *tls_root_pem; /* CA for the metadata service; NULL = plaintext;
                               copied */
  const char *tls_cert_pem; /* client certificate for mutual TLS, or NULL */
  const char *tls_key_pem;
  const char *authorization; /* "authorization" metadata (a token), or
                               NULL; copied */
  uint32_t ttl_seconds;     /* session TTL asked for; 0 = the server's */
  int retry_min_ms;         /* first retry delay; 0 = 100 */
  int retry_max_ms;         /* backoff cap; 0 = 5000 */
  int rpc_timeout_ms;       /* per call; 0 = 2000 */
  int close_timeout_ms;     /* CloseSession at stop; 0 = 300 */
  const char *instance_id;  /* the store's instance id, may be NULL; copied */
  const char *cluster_id;   /* the cluster the store's data belongs to, as
                               recorded; NULL or "" = none yet; copied */
  /* Each session established: the cluster the metadata service serves,
   * which is the recorded one if there was one (else the service refuses
   * the session). The bookie records it the first time. Session thread. */
  void (*on_cluster)(void *arg, const char *cluster_id);
  sl_registration_state_fn get_state; /* may be NULL: writable, sizes 0 */
  void *arg;                /* retained for get_state and on_cluster until
                               stop returns */
} sl_registration_opts;

#define SL_REGISTRATION_OPTS_INIT {.target = NULL}

/* What the registration has done so far (for logs and tests). */
typedef struct sl_registration_status {
  bool registered;          /* a session is open */
  int64_t session_id;       /* 0 when not registered; private */
  uint32_t ttl_seconds;     /* granted TTL */
  bool reported_read_only;  /* read-only flag the metadata service has */
  uint64_t opens;           /* sessions opened */
  uint64_t takeovers;       /* of which took over our live registration */
  uint64_t losses;          /* sessions lost (lapsed, or TTL without a
                               keep-alive that succeeded) */
  uint64_t keepalives;      /* successful keep-alives */
  uint64_t updates;         /* successful UpdateNode calls */
  uint64_t failures;        /* failed calls of any kind */
  sl_status last_error;     /* status of the last failed call, SL_OK if none */
} sl_registration_status;

/* Starts registering; the first OpenSession goes out at once. Call it once
 * the bookie serves on `address` (session.h, invariant 5).
 * Errors: SL_EINVAL (missing target, id or address), or the channel's. */
sl_status sl_registration_start(const sl_registration_opts *opts,
                                sl_registration **out, sl_err *err);

/* The state may have changed: report it now (UpdateNode). Cheap; never
 * blocks on the network. */
void sl_registration_poke(sl_registration *r);

void sl_registration_get_status(sl_registration *r, sl_registration_status *out);

/* Closes the session (best effort, bounded), stops the thread, frees.
 * NULL does nothing. */
void sl_registration_stop(sl_registration *r);

#endif
