/*
 * Tests of serial executors (serial.h) and timers (timer.h): ordering and
 * non-concurrency under many posting threads, nesting, timers that fire,
 * stop, re-arm, and stops racing fires.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "common/clock.h"
#include "common/serial.h"
#include "common/timer.h"

/* Polls until *v >= want or timeout_ms passes. */
static bool wait_at_least(atomic_long *v, long want, int timeout_ms) {
  int64_t end = sl_clock_mono_ms() + timeout_ms;
  while (atomic_load(v) < want) {
    if (sl_clock_mono_ms() > end) return false;
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
  }
  return true;
}

static sl_serial *new_serial(void) {
  sl_serial *s = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_serial_create(&s, &err), SL_OK);
  return s;
}

/* ---- serial ---- */

#define N_POSTERS 4
#define N_PER_POSTER 20000

typedef struct stress {
  sl_serial *s;
  atomic_int inside;          /* items running now: must never exceed 1 */
  atomic_long ran;
  long last[N_POSTERS];       /* last sequence seen per poster; only items
                                 touch it, so a race here is a test failure
                                 (and a TSan report) */
  bool order_broken, overlap;
} stress;

typedef struct job {
  stress *st;
  int poster;
  long seq;
} job;

static void stress_item(void *arg) {
  job *j = arg;
  stress *st = j->st;
  if (atomic_fetch_add(&st->inside, 1) != 0) st->overlap = true;
  if (j->seq != st->last[j->poster] + 1) st->order_broken = true;
  st->last[j->poster] = j->seq;
  atomic_fetch_sub(&st->inside, 1);
  atomic_fetch_add(&st->ran, 1);
  free(j);
}

typedef struct poster_arg {
  stress *st;
  int poster;
} poster_arg;

static void *poster_main(void *arg) {
  poster_arg *p = arg;
  for (long i = 1; i <= N_PER_POSTER; i++) {
    job *j = malloc(sizeof(*j));
    *j = (job){p->st, p->poster, i};
    sl_serial_post(p->st->s, stress_item, j);
  }
  return NULL;
}

static void test_serial__order_and_no_overlap_under_stress(void **state) {
  (void)state;
  stress st = {.s = new_serial()};
  atomic_init(&st.inside, 0);
  atomic_init(&st.ran, 0);
  pthread_t th[N_POSTERS];
  poster_arg pa[N_POSTERS];
  for (int i = 0; i < N_POSTERS; i++) {
    pa[i] = (poster_arg){&st, i};
    assert_int_equal(pthread_create(&th[i], NULL, poster_main, &pa[i]), 0);
  }
  for (int i = 0; i < N_POSTERS; i++) pthread_join(th[i], NULL);
  /* Every post returned, and whoever drained ran everything before
   * letting go: nothing is left queued. */
  assert_int_equal(atomic_load(&st.ran), (long)N_POSTERS * N_PER_POSTER);
  assert_false(st.overlap);
  assert_false(st.order_broken);
  for (int i = 0; i < N_POSTERS; i++) assert_int_equal(st.last[i], N_PER_POSTER);
  sl_serial_unref(st.s);
}

typedef struct nest {
  sl_serial *s;
  int log[4];
  int n;
} nest;

static void nest_inner(void *arg) {
  nest *ns = arg;
  assert_true(sl_serial_running_here(ns->s));
  ns->log[ns->n++] = 2;
}

static void nest_outer(void *arg) {
  nest *ns = arg;
  ns->log[ns->n++] = 1;
  sl_serial_post(ns->s, nest_inner, ns); /* invariant 3: after this returns */
  ns->log[ns->n++] = 3;
}

static void test_serial__post_from_item_runs_after_it(void **state) {
  (void)state;
  nest ns = {.s = new_serial()};
  assert_false(sl_serial_running_here(ns.s));
  sl_serial_post(ns.s, nest_outer, &ns); /* idle: runs here, to the end */
  assert_int_equal(ns.n, 3);
  assert_int_equal(ns.log[0], 1);
  assert_int_equal(ns.log[1], 3);
  assert_int_equal(ns.log[2], 2);
  assert_false(sl_serial_running_here(ns.s));
  sl_serial_unref(ns.s);
}

static void drop_ref(void *arg) { sl_serial_unref(arg); }

static void test_serial__item_may_drop_last_ref(void **state) {
  (void)state;
  sl_serial *s = new_serial();
  sl_serial_post(s, drop_ref, s); /* ASan reports a use after free if not */
}

/* ---- timers ---- */

typedef struct tstate {
  sl_serial *s;
  sl_timer t;
  atomic_long fired;
  int64_t fired_at;
} tstate;

static void on_fire(void *arg) {
  tstate *ts = arg;
  assert_true(sl_serial_running_here(ts->s));
  ts->fired_at = sl_clock_mono_ms();
  atomic_fetch_add(&ts->fired, 1);
}

static void tstate_init(tstate *ts) {
  ts->s = new_serial();
  atomic_init(&ts->fired, 0);
  ts->fired_at = 0;
  sl_timer_init(&ts->t, ts->s, on_fire, ts);
}

static void test_timer__fires_once_after_delay(void **state) {
  (void)state;
  tstate ts;
  tstate_init(&ts);
  int64_t t0 = sl_clock_mono_ms();
  sl_timer_start(&ts.t, 50);
  assert_true(sl_timer_active(&ts.t));
  assert_true(wait_at_least(&ts.fired, 1, 5000));
  assert_true(ts.fired_at - t0 >= 50);
  assert_false(sl_timer_active(&ts.t));
  assert_false(sl_timer_stop(&ts.t)); /* already fired */
  /* Once per start. */
  struct timespec nap = {0, 50 * 1000000};
  nanosleep(&nap, NULL);
  assert_int_equal(atomic_load(&ts.fired), 1);
  sl_serial_unref(ts.s);
}

static void test_timer__stop_prevents_fire(void **state) {
  (void)state;
  tstate ts;
  tstate_init(&ts);
  sl_timer_start(&ts.t, 30);
  assert_true(sl_timer_stop(&ts.t));
  assert_false(sl_timer_stop(&ts.t));
  /* A later timer on the same thread proves the first deadline passed. */
  tstate probe;
  tstate_init(&probe);
  sl_timer_start(&probe.t, 80);
  assert_true(wait_at_least(&probe.fired, 1, 5000));
  assert_int_equal(atomic_load(&ts.fired), 0);
  sl_serial_unref(ts.s);
  sl_serial_unref(probe.s);
}

static void test_timer__restart_moves_deadline(void **state) {
  (void)state;
  tstate ts;
  tstate_init(&ts);
  int64_t t0 = sl_clock_mono_ms();
  sl_timer_start(&ts.t, 20);
  sl_timer_start(&ts.t, 150); /* re-arm: the 20 ms arming is gone */
  assert_true(wait_at_least(&ts.fired, 1, 5000));
  assert_true(ts.fired_at - t0 >= 150);
  /* And it can be armed again after firing. */
  sl_timer_start(&ts.t, 1);
  assert_true(wait_at_least(&ts.fired, 2, 5000));
  sl_serial_unref(ts.s);
}

static void test_timer__earlier_timer_fires_first(void **state) {
  (void)state;
  tstate a, b;
  tstate_init(&a);
  tstate_init(&b);
  sl_timer_start(&a.t, 200);
  sl_timer_start(&b.t, 20);
  assert_true(wait_at_least(&b.fired, 1, 5000));
  assert_int_equal(atomic_load(&a.fired), 0);
  assert_true(wait_at_least(&a.fired, 1, 5000));
  sl_serial_unref(a.s);
  sl_serial_unref(b.s);
}

/* Stop racing the fire, many times: each arming either fires or is
 * stopped (stop == true), never both, never neither. The timer memory is
 * freed right after stop, so a fire touching it is an ASan error. */
static void test_timer__stop_racing_fire(void **state) {
  (void)state;
  sl_serial *s = new_serial();
  tstate *ts = calloc(1, sizeof(*ts));
  long stopped = 0;
  const int rounds = 2000;
  atomic_long *fired = calloc(1, sizeof(*fired));
  atomic_init(fired, 0);
  for (int i = 0; i < rounds; i++) {
    tstate *x = calloc(1, sizeof(*x));
    x->s = s;
    atomic_init(&x->fired, 0);
    sl_timer_init(&x->t, s, on_fire, x);
    sl_timer_start(&x->t, i % 2);
    if (i % 3 == 0) sched_yield();
    if (sl_timer_stop(&x->t)) {
      stopped++;
      assert_int_equal(atomic_load(&x->fired), 0);
      free(x); /* a stopped timer's memory is the caller's again */
    } else {
      /* It began firing: wait for it to finish before freeing. */
      assert_true(wait_at_least(&x->fired, 1, 5000));
      atomic_fetch_add(fired, 1);
      free(x);
    }
  }
  assert_int_equal(stopped + atomic_load(fired), rounds);
  free(fired);
  free(ts);
  sl_serial_unref(s);
}

/* A timer's callback and other posts on its serial never overlap. */
typedef struct mix {
  sl_serial *s;
  sl_timer t[8];
  atomic_int inside;
  atomic_long done;
  bool overlap;
} mix;

static void mix_item(void *arg) {
  mix *m = arg;
  if (atomic_fetch_add(&m->inside, 1) != 0) m->overlap = true;
  for (volatile int i = 0; i < 200; i++) {
  }
  atomic_fetch_sub(&m->inside, 1);
  atomic_fetch_add(&m->done, 1);
}

static void test_timer__runs_serially_with_posts(void **state) {
  (void)state;
  mix m = {.s = new_serial()};
  atomic_init(&m.inside, 0);
  atomic_init(&m.done, 0);
  long want = 0;
  for (int round = 0; round < 50; round++) {
    for (int i = 0; i < 8; i++) {
      sl_timer_init(&m.t[i], m.s, mix_item, &m);
      sl_timer_start(&m.t[i], i % 3);
    }
    for (int i = 0; i < 100; i++) sl_serial_post(m.s, mix_item, &m);
    want += 108;
    assert_true(wait_at_least(&m.done, want, 5000));
  }
  assert_false(m.overlap);
  sl_serial_unref(m.s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_serial__order_and_no_overlap_under_stress),
      cmocka_unit_test(test_serial__post_from_item_runs_after_it),
      cmocka_unit_test(test_serial__item_may_drop_last_ref),
      cmocka_unit_test(test_timer__fires_once_after_delay),
      cmocka_unit_test(test_timer__stop_prevents_fire),
      cmocka_unit_test(test_timer__restart_moves_deadline),
      cmocka_unit_test(test_timer__earlier_timer_fires_first),
      cmocka_unit_test(test_timer__stop_racing_fire),
      cmocka_unit_test(test_timer__runs_serially_with_posts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
