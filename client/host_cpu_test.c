#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "client/host_cpu.h"

static const char *stat_at(int step) {
  /* user nice system idle iowait irq softirq steal guest guest_nice */
  static const char *const texts[] = {
      "cpu  100 0 50 800 20 0 10 20 0 0\n"
      "cpu0 50 0 25 400 10 0 5 10 0 0\n"
      "cpu1 50 0 25 400 10 0 5 10 0 0\n"
      "intr 12345 1 2 3\n"
      "ctxt 999\n",
      "cpu  160 0 80 880 40 0 30 30 5 0\n"
      "cpu0 80 0 40 440 20 0 15 15 0 0\n"
      "cpu1 80 0 40 440 20 0 15 15 5 0\n",
  };
  return texts[step];
}

static void parses_the_cpu_line(void **state) {
  (void)state;
  sl_host_cpu c;
  assert_true(sl_host_cpu_parse(stat_at(0), &c));
  assert_int_equal(c.busy, 160);
  assert_int_equal(c.idle, 820);
  assert_int_equal(c.steal, 20);
  assert_int_equal(c.cpus, 2);
}

static void splits_the_time_between_samples(void **state) {
  (void)state;
  sl_host_cpu a, b;
  assert_true(sl_host_cpu_parse(stat_at(0), &a));
  assert_true(sl_host_cpu_parse(stat_at(1), &b));
  sl_host_cpu_split s;
  assert_true(sl_host_cpu_split_of(&a, &b, &s));
  /* busy 110, idle 100, steal 10 ticks */
  assert_float_equal(s.busy_pct, 50.0, 1e-9);
  assert_float_equal(s.idle_pct, 100.0 * 100 / 220, 1e-9);
  assert_float_equal(s.steal_pct, 100.0 * 10 / 220, 1e-9);
  assert_false(sl_host_cpu_split_of(&b, &a, &s)); /* backwards */
  assert_false(sl_host_cpu_split_of(&a, &a, &s)); /* no time */
}

static void refuses_what_is_not_proc_stat(void **state) {
  (void)state;
  sl_host_cpu c;
  assert_false(sl_host_cpu_parse("", &c));
  assert_false(sl_host_cpu_parse("cpu0 1 2 3 4 5 6 7 8\n", &c));
  assert_false(sl_host_cpu_parse("cpu  1 2 3\n", &c));
  assert_false(sl_host_cpu_parse("cpu  1 2 3 4 5 6 x 8\n", &c));
}

static void reads_this_host(void **state) {
  (void)state;
  sl_host_cpu c;
  assert_true(sl_host_cpu_read(&c));
  assert_true(c.cpus >= 1);
  assert_true(c.busy + c.idle > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parses_the_cpu_line),
      cmocka_unit_test(splits_the_time_between_samples),
      cmocka_unit_test(refuses_what_is_not_proc_stat),
      cmocka_unit_test(reads_this_host),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
