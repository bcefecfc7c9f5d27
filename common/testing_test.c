#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/testing.h"

/* The scale as a fresh process sees it with SLUICE_TIME_SCALE=value
 * (NULL: unset): -1 when that process refused the value. The scale is read
 * once per process, hence the fork. */
static double scale_in_child(const char *value) {
  int fd[2];
  assert_int_equal(pipe(fd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fd[0]);
    if (value != NULL) setenv("SLUICE_TIME_SCALE", value, 1);
    else unsetenv("SLUICE_TIME_SCALE");
    double s = sl_test_time_scale();
    int64_t ms = sl_test_scaled_ms(1000);
    if (ms != (int64_t)(s * 1000 + 0.999)) _exit(3);
    (void)!write(fd[1], &s, sizeof(s));
    _exit(0);
  }
  close(fd[1]);
  double s = -1;
  ssize_t n = read(fd[0], &s, sizeof(s));
  close(fd[0]);
  int ws;
  assert_int_equal(waitpid(pid, &ws, 0), pid);
  assert_true(WIFEXITED(ws));
  if (WEXITSTATUS(ws) == 2) return -1;
  assert_int_equal(WEXITSTATUS(ws), 0);
  assert_int_equal(n, sizeof(s));
  return s;
}

static void test_testing__time_scale_default_and_set(void **state) {
  (void)state;
  assert_true(scale_in_child(NULL) == 1.0);
  assert_true(scale_in_child("") == 1.0);
  assert_true(scale_in_child("2.5") == 2.5);
  assert_true(scale_in_child("1") == 1.0);
}

static void test_testing__time_scale_refuses_bad_values(void **state) {
  (void)state;
  assert_true(scale_in_child("0.5") == -1);
  assert_true(scale_in_child("fast") == -1);
  assert_true(scale_in_child("2x") == -1);
  assert_true(scale_in_child("1000") == -1);
  assert_true(scale_in_child("nan") == -1);
}

static void *named_main(void *arg) {
  pthread_barrier_t *b = arg;
  (void)pthread_setname_np(pthread_self(), "named-probe");
  pthread_barrier_wait(b); /* named */
  pthread_barrier_wait(b); /* counted */
  return NULL;
}

static void test_testing__threads_named_counts_by_prefix(void **state) {
  (void)state;
  assert_int_equal(sl_test_threads_named("named-probe"), 0);
  pthread_barrier_t b;
  assert_int_equal(pthread_barrier_init(&b, NULL, 2), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, named_main, &b), 0);
  pthread_barrier_wait(&b);
  int whole = sl_test_threads_named("named-probe");
  int prefix = sl_test_threads_named("named-");
  int other = sl_test_threads_named("named-probeX");
  pthread_barrier_wait(&b);
  assert_int_equal(pthread_join(t, NULL), 0);
  pthread_barrier_destroy(&b);
  assert_int_equal(whole, 1);
  assert_int_equal(prefix, 1);
  assert_int_equal(other, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_testing__time_scale_default_and_set),
      cmocka_unit_test(test_testing__time_scale_refuses_bad_values),
      cmocka_unit_test(test_testing__threads_named_counts_by_prefix),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
