/* The load sampler: a busy thread shows as its share of the cores, an idle
 * process as (almost) nothing, and a too-short interval repeats the last
 * figure. */
#include "broker/load.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static int64_t now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins until the process has used ms milliseconds of CPU. Counting CPU
 * rather than wall time keeps the test exact on a shared machine, where a
 * spinning thread may get far less than a core. */
static void spin(int ms) {
  volatile uint64_t x = 0;
  int64_t end = now_ns(CLOCK_PROCESS_CPUTIME_ID) + (int64_t)ms * 1000000;
  while (now_ns(CLOCK_PROCESS_CPUTIME_ID) < end) x++;
}

static void test_load__busy_thread_counts_its_share(void **state) {
  (void)state;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int64_t wall0 = now_ns(CLOCK_MONOTONIC);
  sl_load_sampler s;
  sl_load_sampler_init(&s);
  spin(200);
  uint32_t busy = sl_load_sample(&s);
  int64_t wall = now_ns(CLOCK_MONOTONIC) - wall0;
  /* The sampler saw at least 200 ms of CPU within at most `wall`: its
   * figure cannot be below that share (1 permille for rounding). */
  int64_t floor = 200LL * 1000000 * 1000 / wall / cores;
  assert_true((int64_t)busy + 1 >= floor);
  assert_true(busy <= 1000);
}

static void test_load__idle_is_near_zero(void **state) {
  (void)state;
  sl_load_sampler s;
  sl_load_sampler_init(&s);
  struct timespec ts = {0, 200 * 1000 * 1000}; /* the idle time measured */
  nanosleep(&ts, NULL);
  assert_true(sl_load_sample(&s) < 50);
}

static void test_load__short_interval_repeats_the_last(void **state) {
  (void)state;
  sl_load_sampler s;
  sl_load_sampler_init(&s);
  spin(100);
  uint32_t a = sl_load_sample(&s);
  assert_true(a > 0);
  assert_int_equal(sl_load_sample(&s), a); /* well under 10 ms later */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_load__busy_thread_counts_its_share),
      cmocka_unit_test(test_load__idle_is_near_zero),
      cmocka_unit_test(test_load__short_interval_repeats_the_last),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
