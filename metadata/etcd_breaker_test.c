/* The fail-fast gate (etcd_breaker.h) on a fake clock: when it opens, the
 * one probe at a time, closing on a reply or after down_ms, and exactly one
 * probe among racing threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "metadata/etcd_breaker.h"

#define DOWN 500
#define T0 100000LL /* fake monotonic clock start */

static bool admit(sl_etcd_breaker *b, long long now, bool may_probe, bool *probe) {
  char why[512];
  return sl_etcd_breaker_admit(b, now, may_probe, probe, why, sizeof(why));
}

static void test_etcd_breaker__opens_only_when_every_endpoint_failed(void **state) {
  (void)state;
  sl_etcd_breaker b;
  bool probe;
  sl_etcd_breaker_init(&b, 2, DOWN);
  assert_true(admit(&b, T0, true, &probe));
  assert_false(probe);
  assert_false(sl_etcd_breaker_failed(&b, 0, T0, "http://a: refused"));
  assert_false(sl_etcd_breaker_is_open(&b, T0));
  assert_true(admit(&b, T0, false, &probe)); /* endpoint 1 may still answer */
  assert_false(probe);
  assert_true(sl_etcd_breaker_failed(&b, 1, T0 + 10, "http://b: refused"));
  assert_true(sl_etcd_breaker_is_open(&b, T0 + 10));
  /* A second failure while open does not "open" it again (one log line). */
  assert_false(sl_etcd_breaker_failed(&b, 0, T0 + 20, "http://a: refused"));
  sl_etcd_breaker_release(&b);
}

static void test_etcd_breaker__refuses_with_last_failure(void **state) {
  (void)state;
  sl_etcd_breaker b;
  bool probe;
  char why[512];
  sl_etcd_breaker_init(&b, 1, DOWN);
  sl_etcd_breaker_failed(&b, 0, T0, "http://127.0.0.1:1: Connection refused");
  /* A call that already made its round gets no second one. */
  assert_false(sl_etcd_breaker_admit(&b, T0 + 30, false, &probe, why, sizeof(why)));
  assert_false(probe);
  assert_string_equal(why, "all endpoints unreachable (last: http://127.0.0.1:1: "
                           "Connection refused, 30 ms ago)");
  sl_etcd_breaker_release(&b);
}

static void test_etcd_breaker__one_probe_at_a_time(void **state) {
  (void)state;
  sl_etcd_breaker b;
  bool probe;
  sl_etcd_breaker_init(&b, 1, DOWN);
  sl_etcd_breaker_failed(&b, 0, T0, "x: refused");
  assert_true(admit(&b, T0 + 1, true, &probe));
  assert_true(probe);
  bool other;
  assert_false(admit(&b, T0 + 2, true, &other)); /* the probe is out */
  /* The probe fails: the gate stays open, the next call may probe. */
  sl_etcd_breaker_failed(&b, 0, T0 + 3, "x: refused");
  sl_etcd_breaker_probe_done(&b);
  assert_true(admit(&b, T0 + 4, true, &probe));
  assert_true(probe);
  /* This probe reaches etcd: closed, everyone goes, nobody probes. */
  assert_true(sl_etcd_breaker_reached(&b, 0, T0 + 5));
  sl_etcd_breaker_probe_done(&b);
  assert_false(sl_etcd_breaker_is_open(&b, T0 + 5));
  assert_true(admit(&b, T0 + 6, false, &other));
  assert_false(other);
  /* Reaching an endpoint of a closed gate is not a transition. */
  assert_false(sl_etcd_breaker_reached(&b, 0, T0 + 7));
  sl_etcd_breaker_release(&b);
}

static void test_etcd_breaker__closes_after_down_ms(void **state) {
  (void)state;
  sl_etcd_breaker b;
  bool probe;
  sl_etcd_breaker_init(&b, 2, DOWN);
  sl_etcd_breaker_failed(&b, 0, T0, "a: refused");
  sl_etcd_breaker_failed(&b, 1, T0 + 100, "b: refused");
  assert_true(sl_etcd_breaker_is_open(&b, T0 + 499));
  /* Endpoint 0's failure is now older than down_ms: worth trying again. */
  assert_false(sl_etcd_breaker_is_open(&b, T0 + DOWN));
  assert_true(admit(&b, T0 + DOWN, false, &probe));
  assert_false(probe);
  /* A fresh failure keeps it open for another down_ms. */
  sl_etcd_breaker_failed(&b, 0, T0 + 450, "a: refused");
  assert_true(sl_etcd_breaker_is_open(&b, T0 + 599));
  assert_false(sl_etcd_breaker_is_open(&b, T0 + 600));
  sl_etcd_breaker_release(&b);
}

static void test_etcd_breaker__zero_down_ms_disables(void **state) {
  (void)state;
  sl_etcd_breaker b;
  bool probe;
  sl_etcd_breaker_init(&b, 1, 0);
  sl_etcd_breaker_failed(&b, 0, T0, "x: refused");
  assert_false(sl_etcd_breaker_is_open(&b, T0));
  assert_true(admit(&b, T0, false, &probe));
  assert_false(probe);
  sl_etcd_breaker_release(&b);
}

#define RACERS 8

typedef struct race {
  sl_etcd_breaker *b;
  pthread_barrier_t *start;
  int probes; /* atomic */
  int refused; /* atomic */
} race;

static void *racer(void *arg) {
  race *r = arg;
  bool probe;
  pthread_barrier_wait(r->start);
  if (admit(r->b, T0 + 1, true, &probe)) {
    if (probe) __atomic_add_fetch(&r->probes, 1, __ATOMIC_SEQ_CST);
  } else {
    __atomic_add_fetch(&r->refused, 1, __ATOMIC_SEQ_CST);
  }
  return NULL;
}

static void test_etcd_breaker__racing_callers_get_one_probe(void **state) {
  (void)state;
  sl_etcd_breaker b;
  sl_etcd_breaker_init(&b, 1, DOWN);
  sl_etcd_breaker_failed(&b, 0, T0, "x: refused");
  pthread_barrier_t start;
  assert_int_equal(pthread_barrier_init(&start, NULL, RACERS), 0);
  race r = {&b, &start, 0, 0};
  pthread_t t[RACERS];
  for (int i = 0; i < RACERS; i++) assert_int_equal(pthread_create(&t[i], NULL, racer, &r), 0);
  for (int i = 0; i < RACERS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
  assert_int_equal(r.probes, 1);
  assert_int_equal(r.refused, RACERS - 1);
  sl_etcd_breaker_probe_done(&b);
  pthread_barrier_destroy(&start);
  sl_etcd_breaker_release(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_etcd_breaker__opens_only_when_every_endpoint_failed),
      cmocka_unit_test(test_etcd_breaker__refuses_with_last_failure),
      cmocka_unit_test(test_etcd_breaker__one_probe_at_a_time),
      cmocka_unit_test(test_etcd_breaker__closes_after_down_ms),
      cmocka_unit_test(test_etcd_breaker__zero_down_ms_disables),
      cmocka_unit_test(test_etcd_breaker__racing_callers_get_one_probe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
