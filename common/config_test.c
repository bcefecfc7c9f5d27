#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/config.h"

typedef struct test_cfg {
  char *addr;
  long long threads;
  bool tls;
} test_cfg;

static const sl_conf_entry table[] = {
    SL_CONF_STR(test_cfg, addr, "127.0.0.1:1", "SL_TEST_ADDR", "listen address"),
    SL_CONF_INT(test_cfg, threads, "2", 1, 8, "SL_TEST_THREADS", "threads"),
    SL_CONF_BOOL(test_cfg, tls, "false", "SL_TEST_TLS", "use tls"),
};
#define N (sizeof(table) / sizeof(table[0]))

static void test_config__defaults_env_flags(void **state) {
  (void)state;
  test_cfg cfg = {0};
  setenv("SL_TEST_THREADS", "4", 1);
  char *argv[] = {"prog", "--addr", "0.0.0.0:9", "--tls", NULL};
  assert_int_equal(sl_conf_parse(table, N, &cfg, "prog", 4, argv, NULL), SL_OK);
  assert_string_equal(cfg.addr, "0.0.0.0:9");
  assert_int_equal(cfg.threads, 4);
  assert_true(cfg.tls);
  sl_conf_release(table, N, &cfg);
  unsetenv("SL_TEST_THREADS");
}

static void test_config__flag_beats_env_and_dashes(void **state) {
  (void)state;
  test_cfg cfg = {0};
  setenv("SL_TEST_THREADS", "4", 1);
  char *argv[] = {"prog", "--threads=7", NULL};
  assert_int_equal(sl_conf_parse(table, N, &cfg, "prog", 2, argv, NULL), SL_OK);
  assert_int_equal(cfg.threads, 7);
  assert_string_equal(cfg.addr, "127.0.0.1:1");
  sl_conf_release(table, N, &cfg);
  unsetenv("SL_TEST_THREADS");
}

static void test_config__rejects_bad_input(void **state) {
  (void)state;
  test_cfg cfg = {0};
  sl_err err = SL_ERR_INIT;
  char *a1[] = {"prog", "--threads", "99", NULL};
  assert_int_equal(sl_conf_parse(table, N, &cfg, "prog", 3, a1, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "threads"));
  char *a2[] = {"prog", "--nope", NULL};
  assert_int_equal(sl_conf_parse(table, N, &cfg, "prog", 2, a2, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "unknown flag"));
  char *a3[] = {"prog", "--threads", "x1", NULL};
  assert_int_equal(sl_conf_parse(table, N, &cfg, "prog", 3, a3, &err), SL_EINVAL);
  char *a4[] = {"prog", "--addr", NULL};
  assert_int_equal(sl_conf_parse(table, N, &cfg, "prog", 2, a4, &err), SL_EINVAL);
  assert_null(cfg.addr);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config__defaults_env_flags),
      cmocka_unit_test(test_config__flag_beats_env_and_dashes),
      cmocka_unit_test(test_config__rejects_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
