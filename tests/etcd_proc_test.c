#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "tests/etcd_proc.h"

static void test_etcd_proc__start_kill_restart_stop(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_etcd_proc e = SL_ETCD_PROC_INIT;
  sl_status st = sl_etcd_proc_start(&e, "etcd", &err);
  if (st != SL_OK) fail_msg("start: %s", sl_err_msg(&err, st));
  assert_non_null(strstr(e.endpoint, "http://127.0.0.1:"));
  int port = e.client_port;

  assert_int_equal(sl_etcd_proc_kill9(&e, &err), SL_OK);
  assert_false(sl_proc_running(&e.proc));
  assert_int_equal(sl_etcd_proc_wait_healthy(&e, 200, &err), SL_EUNAVAIL);

  st = sl_etcd_proc_restart(&e, &err);
  if (st != SL_OK) fail_msg("restart: %s", sl_err_msg(&err, st));
  assert_int_equal(e.client_port, port);
  assert_int_equal(sl_etcd_proc_restart(&e, &err), SL_EINVAL);

  assert_int_equal(sl_etcd_proc_stop(&e, &err), SL_OK);
  assert_false(sl_proc_running(&e.proc));
  sl_etcd_proc_release(&e);
  sl_etcd_proc_release(&e);
}

static void test_etcd_proc__two_instances_in_parallel(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_etcd_proc a = SL_ETCD_PROC_INIT, b = SL_ETCD_PROC_INIT;
  assert_int_equal(sl_etcd_proc_start(&a, "etcd-a", &err), SL_OK);
  assert_int_equal(sl_etcd_proc_start(&b, "etcd-b", &err), SL_OK);
  assert_int_not_equal(a.client_port, b.client_port);
  assert_string_not_equal(a.dir, b.dir);
  sl_etcd_proc_release(&a);
  sl_etcd_proc_release(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_etcd_proc__start_kill_restart_stop),
      cmocka_unit_test(test_etcd_proc__two_instances_in_parallel),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
