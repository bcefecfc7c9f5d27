#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <cmocka.h>

#include "common/clock.h"

static void test_clock__mono_never_goes_back(void **state) {
  (void)state;
  int64_t prev_ns = sl_clock_mono_ns();
  int64_t prev_ms = sl_clock_mono_ms();
  for (int i = 0; i < 100000; i++) {
    int64_t ns = sl_clock_mono_ns();
    int64_t ms = sl_clock_mono_ms();
    assert_true(ns >= prev_ns);
    assert_true(ms >= prev_ms);
    prev_ns = ns;
    prev_ms = ms;
  }
}

/* A 20 ms sleep shows up as at least 20 ms on both scales, which also
 * checks the units (a seconds or microseconds slip would fail). */
static void test_clock__units_match_a_sleep(void **state) {
  (void)state;
  int64_t ms0 = sl_clock_mono_ms();
  int64_t ns0 = sl_clock_mono_ns();
  struct timespec d = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
  while (nanosleep(&d, &d) != 0) {
  }
  int64_t dms = sl_clock_mono_ms() - ms0;
  int64_t dns = sl_clock_mono_ns() - ns0;
  assert_true(dms >= 19);
  assert_true(dns >= 20 * 1000 * 1000);
}

static void test_clock__wall_is_unix_ms(void **state) {
  (void)state;
  int64_t ms = sl_clock_wall_ms();
  int64_t s = (int64_t)time(NULL);
  assert_true(ms / 1000 >= s - 1 && ms / 1000 <= s + 1);
  assert_true(ms > 1600000000000); /* after 2020: milliseconds, not seconds */
}

/* A deadline is the clock's now plus the offset, normalized (a carry into
 * seconds), and never in the past. */
static void test_clock__deadline_is_now_plus_offset(void **state) {
  (void)state;
  int64_t before = sl_clock_mono_ns();
  struct timespec d = sl_clock_deadline(CLOCK_MONOTONIC, 1999999999);
  int64_t after = sl_clock_mono_ns();
  int64_t at = (int64_t)d.tv_sec * 1000000000 + d.tv_nsec;
  assert_true(d.tv_nsec >= 0 && d.tv_nsec < 1000000000);
  assert_true(at >= before + 1999999999 && at <= after + 1999999999);
  struct timespec now = sl_clock_deadline(CLOCK_REALTIME, -5);
  int64_t wall = sl_clock_wall_ms();
  int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
  assert_true(now_ms <= wall && now_ms >= wall - 1000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_clock__mono_never_goes_back),
      cmocka_unit_test(test_clock__units_match_a_sleep),
      cmocka_unit_test(test_clock__wall_is_unix_ms),
      cmocka_unit_test(test_clock__deadline_is_now_plus_offset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
