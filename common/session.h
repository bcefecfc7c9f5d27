/*
 * Session keeper: holds a broker's or a bookie's session with the metadata
 * service (DESIGN.md §5), from a thread of its own. Bookies use it through
 * bookie/registration.h; brokers use it directly, and stop acting as owner
 * when it says the session is lost.
 *
 *   NONE --OpenSession ok--> LIVE --KeepAlive ok (every ttl/3)--> LIVE
 *    ^   (on_established)     |  poke, or changed() at a keep-alive:
 *    |                        |      UpdateNode
 *    |                        |  TTL since the last keep-alive that
 *    |                        |  succeeded, or NOT_FOUND / PERMISSION_DENIED
 *    +------ (on_lost) -------+
 *   sl_session_stop: CloseSession (bounded), thread ends; on_lost is not
 *   called for it.
 *
 * Invariants
 *   1. on_lost fires before the server-side lease can have expired, and so
 *      before another node can have taken over anything bound to it. The
 *      clock starts when a keep-alive (or the OpenSession) that succeeded
 *      was SENT, on this host's monotonic clock: the service renews the
 *      lease only after that, so the lease lasts at least until send + TTL.
 *      on_lost is due at send + TTL - sl_session_lost_guard_ms(TTL), the
 *      guard covering this thread's wake-up, the callback's own work and a
 *      take-over's first steps. It does not wait for the service to say
 *      so: a call still in flight at that moment is abandoned.
 *   2. Every session id handed to on_established is followed by exactly one
 *      on_lost for it, unless stop comes first. Sessions never overlap: the
 *      next OpenSession goes out only after on_lost has returned.
 *   3. After a loss the keeper opens a new session at once, and keeps
 *      trying (backoff with jitter) while the service is unreachable. A
 *      node that opens its session from the same advertised address takes
 *      over its own registration at once (proto/metadata.proto), so a loss
 *      or a restart does not wait out the old lease.
 *   4. The session id is private to this process (a credential): it is
 *      given only to on_established and sl_session_get_status, and every
 *      call that carries it also names this node (kind + id).
 *   5. Open the session only once this process serves on `address`: the
 *      take-over rule relies on the old process being unable to serve there.
 *
 * A broker, say:
 *
 *   static void on_established(void *arg, const sl_session_event *ev) {
 *     broker_set_session(arg, ev->session_id);  // acquire ownership with it
 *   }
 *   static void on_lost(void *arg, const sl_session_event *ev) {
 *     broker_stop_owning_all(arg);  // before anyone else can take over
 *   }
 *   sl_session_opts o = {.target = md, .kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER,
 *                        .node_id = id, .address = advertised,
 *                        .on_established = on_established, .on_lost = on_lost,
 *                        .arg = broker};
 *   sl_session_start(&o, &broker->session, &err);  // after the server is bound
 *   ...
 *   sl_session_stop(broker->session);               // CloseSession
 *
 * Threads: one session thread makes every RPC and runs every callback
 * (describe, changed, reported, on_established, on_lost), one at a time
 * and never under a lock of ours. Callbacks must return quickly (they
 * delay keep-alives) and must not call sl_session_stop. sl_session_poke
 * and sl_session_get_status may be called from any thread, stop from one.
 * Lock: s->mu guards the flags, the waiters and the status.
 */
#ifndef SL_COMMON_SESSION_H
#define SL_COMMON_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "metadata.pb-c.h"

typedef struct sl_session sl_session;

/* How long before send + TTL on_lost is due (invariant 1): a tenth of the
 * TTL, at least 100 ms. The lease lapses TTL after the service renewed it
 * at the earliest, so this is about the time the user has, from on_lost,
 * to stop acting before a take-over can begin. */
static inline int64_t sl_session_lost_guard_ms(uint32_t ttl_s) {
  int64_t g = (int64_t)ttl_s * 100;
  return g > 100 ? g : 100;
}

/* Fills the registration: `info` is a Sluice__V1__BrokerInfo or a
 * Sluice__V1__BookieInfo (by opts.kind), with id and address already set.
 * Strings it points at must stay valid until the next describe or stop. */
typedef void (*sl_session_describe_fn)(void *arg, ProtobufCMessage *info);

/* Whether the registration should be re-sent (UpdateNode); asked at each
 * keep-alive. */
typedef bool (*sl_session_changed_fn)(void *arg);

/* The service now holds `info` (after an OpenSession or UpdateNode). */
typedef void (*sl_session_reported_fn)(void *arg, const ProtobufCMessage *info);

typedef struct sl_session_event {
  int64_t session_id;   /* the session that began or ended */
  uint64_t generation;  /* 1 for this process's first session, then +1 */
  uint32_t ttl_seconds; /* granted TTL */
  bool took_over;       /* established: replaced a live registration of ours
                           (a restart, or re-opening after a local loss) */
  sl_status why;        /* lost: SL_ETIMEDOUT (TTL passed since the last
                           keep-alive that succeeded), SL_ENOTFOUND (lapsed or
                           closed) or SL_EPERM (taken over) */
  const char *cluster_id; /* established: the cluster the metadata service
                           serves ("" from an older one); borrowed for the
                           callback */
} sl_session_event;

typedef void (*sl_session_event_fn)(void *arg, const sl_session_event *ev);

typedef struct sl_session_opts {
  const char *target;       /* metadata service gRPC target; copied */
  Sluice__V1__NodeKind kind; /* BROKER or BOOKIE */
  const char *node_id;      /* copied */
  const char *address;      /* host:port others reach us at; copied */
  const char *tls_root_pem; /* CA for the metadata service; NULL = plaintext */
  const char *tls_cert_pem; /* client certificate for mutual TLS, or NULL */
  const char *tls_key_pem;
  const char *authorization; /* "authorization" metadata (a token), or
                               NULL; copied */
  uint32_t ttl_seconds;     /* TTL asked for; 0 = the server's */
  int retry_min_ms;         /* first retry delay; 0 = 100 */
  int retry_max_ms;         /* backoff cap; 0 = 5000 */
  int rpc_timeout_ms;       /* per call; 0 = 2000 */
  int close_timeout_ms;     /* CloseSession at stop; 0 = 300 */
  sl_session_describe_fn describe;       /* may be NULL: id and address only */
  sl_session_changed_fn changed;         /* may be NULL: never */
  sl_session_reported_fn reported;       /* may be NULL */
  sl_session_event_fn on_established;    /* may be NULL */
  sl_session_event_fn on_lost;           /* may be NULL */
  void *arg;                /* retained for the callbacks until stop returns */
} sl_session_opts;

/* What the keeper has done so far (for logs and tests). */
typedef struct sl_session_status {
  bool live;                /* a session is open */
  int64_t session_id;       /* 0 when none; private (invariant 4) */
  uint64_t generation;      /* of the current or last session */
  uint32_t ttl_seconds;     /* granted TTL */
  int64_t renewed_ms;       /* CLOCK_MONOTONIC ms at which the last
                               OpenSession or keep-alive that succeeded was
                               sent (invariant 1's clock starts there) */
  uint64_t opens;           /* sessions opened */
  uint64_t takeovers;       /* of which took over a live registration */
  uint64_t losses;          /* on_lost calls */
  uint64_t keepalives;      /* successful keep-alives */
  uint64_t updates;         /* successful UpdateNode calls */
  uint64_t failures;        /* failed calls of any kind */
  sl_status last_error;     /* status of the last failed call, SL_OK if none */
} sl_session_status;

/* Starts the session thread; the first OpenSession goes out at once.
 * Errors: SL_EINVAL (missing target, id or address, or a bad kind), or the
 * channel's. */
sl_status sl_session_start(const sl_session_opts *opts, sl_session **out, sl_err *err);

/* The registration may have changed: send UpdateNode now. Cheap; never
 * blocks on the network. */
void sl_session_poke(sl_session *s);

void sl_session_get_status(sl_session *s, sl_session_status *out);

/* Closes the session (best effort, bounded by close_timeout_ms), stops the
 * thread, frees. NULL does nothing. */
void sl_session_stop(sl_session *s);

#endif
