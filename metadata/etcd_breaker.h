/*
 * Fail-fast gate of the etcd client: a circuit breaker over connection
 * failures, so that while etcd cannot be reached a call fails at once
 * instead of holding its thread for the whole deadline retrying.
 *
 * Design note
 *  State: per endpoint, whether its last connection attempt failed and when;
 *  per gate, whether a probe is out, and the text of the latest connection
 *  failure (for the refusal message).
 *  Invariants:
 *   1. Only a failed connection attempt (refused, unresolvable, connect
 *      timeout) marks an endpoint down (sl_etcd_breaker_failed). Any reply,
 *      an etcd error reply included, marks it up (sl_etcd_breaker_reached).
 *   2. The gate is OPEN exactly while every endpoint is down and failed
 *      within the last down_ms; otherwise it is CLOSED.
 *   3. While OPEN, sl_etcd_breaker_admit lets at most one call at a time
 *      through, as the probe (HALF-OPEN); every other call is refused. The
 *      probe's attempts update the endpoints like any call's, and it hands
 *      the gate back with sl_etcd_breaker_probe_done.
 *   4. down_ms 0 disables the gate: every call is admitted.
 *  Transitions:
 *   CLOSED -> OPEN   the last endpoint still up fails (_failed returns true)
 *   OPEN -> CLOSED   a probe reaches an endpoint (_reached returns true), or
 *                    down_ms passes with no new failure
 *  Recovery is therefore seen at the first probe after etcd is back: with
 *  calls arriving, at once; with none, down_ms after the last failure.
 *
 * Time is passed in by the caller (monotonic milliseconds), so the logic is
 * tested with a fake clock (metadata/etcd_breaker_test.c).
 *
 * Thread-safety: every function may be called from any thread; one mutex
 * guards the state and is held for O(endpoints) work, never across I/O.
 */
#ifndef SL_METADATA_ETCD_BREAKER_H
#define SL_METADATA_ETCD_BREAKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct sl_etcd_breaker_ep {
  bool down;         /* the last connection attempt failed */
  long long down_at; /* when (monotonic ms); meaningful if down */
} sl_etcd_breaker_ep;

typedef struct sl_etcd_breaker {
  pthread_mutex_t lock; /* guards every field below */
  sl_etcd_breaker_ep *eps;
  size_t n_eps;
  int down_ms;
  bool probing;      /* a probe is out (invariant 3) */
  long long last_at; /* when the latest connection failure happened */
  char last[320];    /* its text: "<endpoint>: <curl error>" */
} sl_etcd_breaker;

/* Initialises a gate over n_eps >= 1 endpoints, all up. down_ms >= 0. */
void sl_etcd_breaker_init(sl_etcd_breaker *b, size_t n_eps, int down_ms);

/* Frees what init allocated. */
void sl_etcd_breaker_release(sl_etcd_breaker *b);

/*
 * Asks to make one round of attempts at `now`. Returns true to go ahead;
 * *probe is then true if this call is the probe and must call
 * sl_etcd_breaker_probe_done once its round is over. Returns false when the
 * gate is OPEN and this call may not probe (another probe is out, or
 * may_probe is false: a call that already made its round while etcd is
 * down gets no second one); `why` then receives
 * "all endpoints unreachable (last: <failure>, N ms ago)".
 */
bool sl_etcd_breaker_admit(sl_etcd_breaker *b, long long now, bool may_probe,
                           bool *probe, char *why, size_t why_cap);

/* The probe's round is over (whatever its outcome). */
void sl_etcd_breaker_probe_done(sl_etcd_breaker *b);

/* A connection attempt to endpoint ep failed at `now`; `detail` (borrowed)
 * says how. Returns true if this opened the gate (for logging). */
bool sl_etcd_breaker_failed(sl_etcd_breaker *b, size_t ep, long long now,
                            const char *detail);

/* Endpoint ep answered. Returns true if this closed an OPEN gate. */
bool sl_etcd_breaker_reached(sl_etcd_breaker *b, size_t ep, long long now);

/* True while the gate is OPEN at `now` (invariant 2). */
bool sl_etcd_breaker_is_open(sl_etcd_breaker *b, long long now);

#endif
