#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bookie/disk_watcher.h"
#include "bookie/testing/test_util.h"

typedef struct changes {
  atomic_int to_ro;
  atomic_int to_rw;
} changes;

static void on_change(bool ro, void *arg) {
  changes *c = arg;
  atomic_fetch_add(ro ? &c->to_ro : &c->to_rw, 1);
}

/* A file of `bytes` real (allocated) bytes in dir. */
static void write_file(const char *dir, const char *name, size_t bytes) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  assert_true(fd >= 0);
  char *buf = calloc(1, bytes);
  memset(buf, 'x', bytes);
  assert_int_equal(write(fd, buf, bytes), (ssize_t)bytes);
  assert_int_equal(fsync(fd), 0);
  close(fd);
  free(buf);
}

static void test_disk_watcher__quota_hysteresis(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("dwq");
  write_file(dir, "data", 1u << 20);
  changes c = {0};
  sl_disk_watcher_opts o = SL_DISK_WATCHER_OPTS_INIT;
  o.dir = dir;
  o.limit_bytes = 10u << 20;
  o.interval_ms = 60000; /* only explicit samples in this test */
  o.on_change = on_change;
  o.arg = &c;
  sl_disk_watcher *w = NULL;
  assert_int_equal(sl_disk_watcher_start(&o, &w, NULL), SL_OK);
  assert_false(sl_disk_watcher_readonly(w));
  sl_disk_usage u;
  sl_disk_watcher_usage(w, &u);
  assert_int_equal(u.total_bytes, 10u << 20);
  assert_true(u.used_pct > 9.0 && u.used_pct < 11.0);

  sl_disk_watcher_set_limit(w, (1u << 20) + (1u << 20) / 40); /* ~97.6% used */
  sl_disk_watcher_check_now(w);
  assert_true(sl_disk_watcher_readonly(w));
  assert_int_equal(atomic_load(&c.to_ro), 1);
  sl_disk_watcher_usage(w, &u);
  assert_true(u.readonly);

  sl_disk_watcher_set_limit(w, (1u << 20) * 100 / 92); /* 92%: between marks */
  sl_disk_watcher_check_now(w);
  assert_true(sl_disk_watcher_readonly(w));
  assert_int_equal(atomic_load(&c.to_rw), 0);

  sl_disk_watcher_set_limit(w, 2u << 20); /* 50% */
  sl_disk_watcher_check_now(w);
  assert_false(sl_disk_watcher_readonly(w));
  assert_int_equal(atomic_load(&c.to_rw), 1);
  assert_int_equal(atomic_load(&c.to_ro), 1);
  sl_disk_watcher_stop(w);
  sl_test_rmdtemp(dir);
}

typedef struct poll_arg {
  sl_disk_watcher *w;
  bool want;
} poll_arg;

static bool is_state(void *arg) {
  poll_arg *p = arg;
  return sl_disk_watcher_readonly(p->w) == p->want;
}

/* The thread notices a growing directory on its own. */
static void test_disk_watcher__periodic_sampling(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("dwp");
  sl_disk_watcher_opts o = SL_DISK_WATCHER_OPTS_INIT;
  o.dir = dir;
  o.limit_bytes = 1u << 20;
  o.interval_ms = 5;
  sl_disk_watcher *w = NULL;
  assert_int_equal(sl_disk_watcher_start(&o, &w, NULL), SL_OK);
  assert_false(sl_disk_watcher_readonly(w));
  write_file(dir, "big", 1u << 20);
  poll_arg p = {w, true};
  assert_true(sl_test_poll(is_state, &p, 5000));
  char path[512];
  snprintf(path, sizeof(path), "%s/big", dir);
  assert_int_equal(unlink(path), 0);
  p.want = false;
  assert_true(sl_test_poll(is_state, &p, 5000));
  sl_disk_watcher_stop(w);
  sl_test_rmdtemp(dir);
}

static void test_disk_watcher__real_disk(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("dwr");
  sl_disk_watcher_opts o = SL_DISK_WATCHER_OPTS_INIT;
  o.dir = dir;
  sl_disk_watcher *w = NULL;
  assert_int_equal(sl_disk_watcher_start(&o, &w, NULL), SL_OK);
  sl_disk_usage u;
  sl_disk_watcher_usage(w, &u);
  assert_true(u.total_bytes > 0);
  assert_true(u.free_bytes <= u.total_bytes);
  assert_true(u.used_pct >= 0.0 && u.used_pct <= 100.0);
  sl_disk_watcher_stop(w);
  sl_disk_watcher_stop(NULL);
  sl_test_rmdtemp(dir);
}

static void test_disk_watcher__bad_input(void **state) {
  (void)state;
  sl_disk_watcher *w = NULL;
  sl_err err = SL_ERR_INIT;
  sl_disk_watcher_opts o = SL_DISK_WATCHER_OPTS_INIT;
  assert_int_equal(sl_disk_watcher_start(&o, &w, &err), SL_EINVAL);
  o.dir = "/";
  o.low_pct = 96.0;
  assert_int_equal(sl_disk_watcher_start(&o, &w, &err), SL_EINVAL);
  o.low_pct = 90.0;
  o.interval_ms = 0;
  assert_int_equal(sl_disk_watcher_start(&o, &w, &err), SL_EINVAL);
  o.interval_ms = 10;
  o.dir = "/nonexistent/dir";
  assert_int_equal(sl_disk_watcher_start(&o, &w, &err), SL_EIO);
  assert_non_null(strstr(err.msg, "/nonexistent/dir"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_disk_watcher__quota_hysteresis),
      cmocka_unit_test(test_disk_watcher__periodic_sampling),
      cmocka_unit_test(test_disk_watcher__real_disk),
      cmocka_unit_test(test_disk_watcher__bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
