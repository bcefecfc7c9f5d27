#include "tests/waiter.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#define RUN_ON_MS 60000

void sl_tw_init(sl_tw *w) {
  memset(w, 0, sizeof(*w));
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
}

void sl_tw_done_out(sl_tw *w, sl_status st, const char *details, void *out) {
  pthread_mutex_lock(&w->mu);
  w->st = st;
  snprintf(w->details, sizeof(w->details), "%s", details ? details : "");
  w->out = out;
  w->count++;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

void sl_tw_done(sl_tw *w, sl_status st, const char *details) {
  sl_tw_done_out(w, st, details, NULL);
}

int sl_tw_count(sl_tw *w) {
  pthread_mutex_lock(&w->mu);
  int n = w->count;
  pthread_mutex_unlock(&w->mu);
  return n;
}

void sl_tw_wait_n(sl_tw *w, int n, int timeout_ms) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
  if (until.tv_nsec >= 1000000000) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&w->mu);
  while (w->count < n && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0) {
  }
  int have = w->count;
  pthread_mutex_unlock(&w->mu);
  if (have < n) fail_msg("%d of %d callbacks in %d ms", have, n, timeout_ms);
}

sl_status sl_tw_wait(sl_tw *w, int timeout_ms) {
  sl_tw_wait_n(w, 1, timeout_ms);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  return w->st;
}

typedef struct run_on {
  void (*fn)(void *arg);
  void *arg;
  sl_tw done;
} run_on;

static void run_on_run(void *arg) {
  run_on *r = arg;
  r->fn(r->arg);
  sl_tw_done(&r->done, SL_OK, NULL);
}

void sl_tw_run_on(sl_serial *serial, void (*fn)(void *arg), void *arg) {
  run_on r = {.fn = fn, .arg = arg};
  sl_tw_init(&r.done);
  sl_serial_post(serial, run_on_run, &r);
  sl_tw_wait(&r.done, RUN_ON_MS);
}
