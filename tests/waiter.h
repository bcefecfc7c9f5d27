/*
 * A one-shot completion for tests that start an async call and wait for its
 * callback: the callback (any thread) records a status and details once,
 * the test thread waits for it with a deadline.
 */
#ifndef SL_TESTS_WAITER_H
#define SL_TESTS_WAITER_H

#include <pthread.h>
#include <stdbool.h>

#include "common/status.h"

typedef struct sl_tw {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  sl_status st;
  char details[SL_ERR_MAX];
} sl_tw;

void sl_tw_init(sl_tw *w);

/* Records the outcome and wakes the waiter. details may be NULL. */
void sl_tw_done(sl_tw *w, sl_status st, const char *details);

/* Waits for sl_tw_done, fails the test after timeout_ms, then releases w's
 * lock and condition. Returns the recorded status. */
sl_status sl_tw_wait(sl_tw *w, int timeout_ms);

#endif
