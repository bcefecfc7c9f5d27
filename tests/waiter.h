/*
 * Waiting for async callbacks in tests: a callback (any thread) records a
 * status, details and optionally a handle it hands over, and counts; the
 * test thread waits with a deadline for the first one (one-shot, sl_tw_wait)
 * or for the n-th (sl_tw_wait_n, e.g. one per append). Plus running a
 * function on a serial and waiting for it to return.
 */
#ifndef SL_TESTS_WAITER_H
#define SL_TESTS_WAITER_H

#include <pthread.h>

#include "common/serial.h"
#include "common/status.h"

typedef struct sl_tw {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int count;                  /* sl_tw_done calls so far */
  sl_status st;               /* of the last call */
  char details[SL_ERR_MAX];
  void *out;                  /* what the last call handed over, or NULL */
} sl_tw;

void sl_tw_init(sl_tw *w);

/* Records the outcome, counts and wakes the waiter. details may be NULL. */
void sl_tw_done(sl_tw *w, sl_status st, const char *details);

/* The same, handing a result over (e.g. an opened handle) in w->out. */
void sl_tw_done_out(sl_tw *w, sl_status st, const char *details, void *out);

/* How many sl_tw_done calls came so far. */
int sl_tw_count(sl_tw *w);

/* Waits until sl_tw_done came n times in all; fails the test after
 * timeout_ms. w stays usable (fields readable, more waits). */
void sl_tw_wait_n(sl_tw *w, int n, int timeout_ms);

/* One-shot: waits for the first sl_tw_done (failing the test after
 * timeout_ms), then releases w's lock and condition; its fields stay
 * readable. Returns the recorded status. */
sl_status sl_tw_wait(sl_tw *w, int timeout_ms);

/* Runs fn(arg) on the serial and waits (up to 60 s, else the test fails)
 * until it returned. */
void sl_tw_run_on(sl_serial *serial, void (*fn)(void *arg), void *arg);

#endif
