/*
 * The conformance suite on the etcd backend against a real etcd, plus the
 * fault cases only a remote store has: etcd killed (-9) and restarted under
 * a watch and under calls, etcd hanging (SIGSTOP), endpoint failover.
 * Conformance cases share one etcd (started in the group setup); each
 * fault case starts its own, so a failure cannot leak into other cases.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metadata/store_conformance.h"
#include "tests/etcd_proc.h"

#define EXPECT(want, expr)                                                         \
  do {                                                                             \
    err = (sl_err)SL_ERR_INIT;                                                     \
    sl_status st_ = (expr);                                                        \
    if (st_ != (want))                                                             \
      fail_msg("%s:%d: %s -> %s (%s), want %s", __FILE__, __LINE__, #expr,         \
               sl_status_str(st_), err.msg, sl_status_str(want));                  \
  } while (0)

static sl_etcd_proc shared = SL_ETCD_PROC_INIT;

static sl_status open_etcd(void *ctx, sl_store **out, sl_err *err) {
  sl_etcd_proc *e = ctx;
  char uri[128];
  snprintf(uri, sizeof(uri), "etcd:%s", e->endpoint);
  return sl_store_open(uri, NULL, out, err);
}

static void close_etcd(void *ctx, sl_store *s) {
  (void)ctx;
  sl_store_close(s);
}

static int group_setup(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_etcd_proc_start(&shared, "etcd", &err);
  if (st != SL_OK) {
    print_error("start etcd: %s\n", sl_err_msg(&err, st));
    return -1;
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  sl_etcd_proc_release(&shared);
  return 0;
}

/* A private etcd and a store on it with a short deadline. */
static void start_private(sl_etcd_proc *e, sl_store **s, int timeout_ms) {
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_etcd_proc_start(e, "etcd-fault", &err);
  if (st != SL_OK) fail_msg("start etcd: %s", sl_err_msg(&err, st));
  char uri[128];
  snprintf(uri, sizeof(uri), "etcd:%s", e->endpoint);
  sl_store_opts opts = SL_STORE_OPTS_INIT;
  opts.timeout_ms = timeout_ms;
  opts.connect_timeout_ms = 500;
  st = sl_store_open(uri, &opts, s, &err);
  if (st != SL_OK) fail_msg("open: %s", sl_err_msg(&err, st));
}

static void put_n(sl_store *s, int from, int to) {
  sl_err err;
  for (int i = from; i < to; i++) {
    char k[32], v[32];
    snprintf(k, sizeof(k), "/r/%02d", i);
    int n = snprintf(v, sizeof(v), "v%d", i);
    EXPECT(SL_OK, sl_store_put(s, k, strlen(k), v, (size_t)n, SL_STORE_REV_ANY, 0, NULL, &err));
  }
}

static void test_store_etcd__watch_resumes_after_kill9(void **state) {
  (void)state;
  sl_err err;
  sl_etcd_proc e = SL_ETCD_PROC_INIT;
  sl_store *s = NULL;
  start_private(&e, &s, 5000);
  sl_store_conf_events ev;
  sl_store_conf_events_init(&ev);
  sl_store_watch *w = NULL;
  EXPECT(SL_OK, sl_store_watch_start(s, "/r/", 3, 0, sl_store_conf_collect, &ev, &w, &err));
  put_n(s, 0, 5);
  assert_true(sl_store_conf_wait_events(&ev, 5, 10000));

  EXPECT(SL_OK, sl_etcd_proc_kill9(&e, &err));
  EXPECT(SL_OK, sl_etcd_proc_restart(&e, &err));
  /* Written before the watch has reconnected (it backs off up to 1 s):
   * the resumed watch must still deliver them. */
  put_n(s, 5, 10);
  /* And some after it surely has. */
  assert_true(sl_store_conf_wait_events(&ev, 10, 20000));
  put_n(s, 10, 12);
  assert_true(sl_store_conf_wait_events(&ev, 12, 10000));
  sl_store_watch_stop(w);

  assert_int_equal(ev.n, 12); /* nothing twice */
  for (size_t i = 0; i < ev.n; i++) {
    char k[32];
    snprintf(k, sizeof(k), "/r/%02d", (int)i);
    assert_int_equal(ev.evs[i].type, SL_STORE_EVENT_PUT);
    assert_int_equal(ev.evs[i].kv.key_len, strlen(k));
    assert_memory_equal(ev.evs[i].kv.key, k, strlen(k));
    if (i > 0) assert_true(ev.evs[i].revision > ev.evs[i - 1].revision);
  }
  sl_store_conf_events_release(&ev);
  sl_store_close(s);
  sl_etcd_proc_release(&e);
}

static void test_store_etcd__unavailable_then_recovers(void **state) {
  (void)state;
  sl_err err;
  sl_etcd_proc e = SL_ETCD_PROC_INIT;
  sl_store *s = NULL;
  const int timeout = 1500;
  start_private(&e, &s, timeout);
  EXPECT(SL_OK, sl_store_put(s, "/a", 2, "A", 1, SL_STORE_REV_ANY, 0, NULL, &err));
  EXPECT(SL_OK, sl_etcd_proc_kill9(&e, &err));

  /* Every kind of call fails with SL_EUNAVAIL, within its deadline. */
  sl_store_kv kv;
  int64_t x;
  sl_store_watch *w = NULL;
  sl_store_conf_events ev;
  sl_store_conf_events_init(&ev);
  for (int call = 0; call < 6; call++) {
    long long t0 = sl_store_conf_now_ms();
    switch (call) {
      case 0: EXPECT(SL_EUNAVAIL, sl_store_get(s, "/a", 2, &kv, &err)); break;
      case 1:
        EXPECT(SL_EUNAVAIL, sl_store_put(s, "/a", 2, "B", 1, SL_STORE_REV_ANY, 0, NULL, &err));
        break;
      case 2: EXPECT(SL_EUNAVAIL, sl_store_create(s, "/b", 2, "B", 1, 0, NULL, &err)); break;
      case 3: EXPECT(SL_EUNAVAIL, sl_store_lease_grant(s, 5, &x, NULL, &err)); break;
      case 4: EXPECT(SL_EUNAVAIL, sl_store_revision(s, &x, &err)); break;
      case 5:
        EXPECT(SL_EUNAVAIL, sl_store_watch_start(s, "/", 1, 0, sl_store_conf_collect, &ev, &w,
                                                 &err));
        break;
    }
    long long took = sl_store_conf_now_ms() - t0;
    if (took > timeout + 700) fail_msg("call %d took %lld ms, deadline %d ms", call, took, timeout);
    assert_true(took >= timeout - 100); /* it did retry until the deadline */
    assert_non_null(strstr(err.msg, e.endpoint + strlen("http://")));
  }
  assert_null(w);
  sl_store_conf_events_release(&ev);

  /* Same handle, after a restart: works again, data intact. */
  EXPECT(SL_OK, sl_etcd_proc_restart(&e, &err));
  long long deadline = sl_store_conf_now_ms() + 20000;
  sl_status st;
  while ((st = sl_store_get(s, "/a", 2, &kv, &err)) != SL_OK &&
         sl_store_conf_now_ms() < deadline) {
  }
  if (st != SL_OK) fail_msg("after restart: %s", sl_err_msg(&err, st));
  assert_string_equal((char *)kv.value, "A");
  sl_store_kv_release(&kv);
  EXPECT(SL_OK, sl_store_put(s, "/a", 2, "C", 1, SL_STORE_REV_ANY, 0, NULL, &err));
  sl_store_close(s);
  sl_etcd_proc_release(&e);
}

static void test_store_etcd__timeout_when_etcd_hangs(void **state) {
  (void)state;
  sl_err err;
  sl_etcd_proc e = SL_ETCD_PROC_INIT;
  sl_store *s = NULL;
  const int timeout = 1000;
  start_private(&e, &s, timeout);
  EXPECT(SL_OK, sl_store_put(s, "/a", 2, "A", 1, SL_STORE_REV_ANY, 0, NULL, &err));
  /* Stopped, not dead: connections open, no answers. */
  assert_int_equal(kill(e.proc.pid, SIGSTOP), 0);
  sl_store_kv kv;
  long long t0 = sl_store_conf_now_ms();
  EXPECT(SL_ETIMEDOUT, sl_store_get(s, "/a", 2, &kv, &err));
  long long took = sl_store_conf_now_ms() - t0;
  assert_true(took >= timeout - 100 && took < timeout + 700);
  /* A write that may have been sent reports that its outcome is unknown. */
  t0 = sl_store_conf_now_ms();
  EXPECT(SL_ETIMEDOUT, sl_store_put(s, "/a", 2, "B", 1, SL_STORE_REV_ANY, 0, NULL, &err));
  assert_non_null(strstr(err.msg, "outcome unknown"));
  took = sl_store_conf_now_ms() - t0;
  assert_true(took < timeout + 700);
  assert_int_equal(kill(e.proc.pid, SIGCONT), 0);
  EXPECT(SL_OK, sl_store_get(s, "/a", 2, &kv, &err));
  sl_store_kv_release(&kv);
  sl_store_close(s);
  sl_etcd_proc_release(&e);
}

static void test_store_etcd__failover_to_second_endpoint(void **state) {
  (void)state;
  sl_err err;
  int dead_port = 0;
  EXPECT(SL_OK, sl_proc_free_port(&dead_port, &err));
  char uri[256];
  snprintf(uri, sizeof(uri), "etcd:http://127.0.0.1:%d, %s/", dead_port, shared.endpoint);
  sl_store *s = NULL;
  EXPECT(SL_OK, sl_store_open(uri, NULL, &s, &err));
  assert_string_equal(sl_store_backend(s), "etcd");
  int64_t rev;
  EXPECT(SL_OK, sl_store_put(s, "/fo", 3, "1", 1, SL_STORE_REV_ANY, 0, &rev, &err));
  sl_store_conf_events ev;
  sl_store_conf_events_init(&ev);
  sl_store_watch *w = NULL;
  EXPECT(SL_OK, sl_store_watch_start(s, "/fo", 3, rev, sl_store_conf_collect, &ev, &w, &err));
  assert_true(sl_store_conf_wait_events(&ev, 1, 10000));
  sl_store_watch_stop(w);
  sl_store_conf_events_release(&ev);
  sl_store_close(s);
}

static void test_store_etcd__bad_uris(void **state) {
  (void)state;
  sl_err err;
  sl_store *s = NULL;
  EXPECT(SL_EINVAL, sl_store_open("etcd:", NULL, &s, &err));
  EXPECT(SL_EINVAL, sl_store_open("etcd:127.0.0.1:2379", NULL, &s, &err));
  assert_non_null(strstr(err.msg, "127.0.0.1:2379"));
  EXPECT(SL_EINVAL, sl_store_open("etcd:http://", NULL, &s, &err));
  EXPECT(SL_EINVAL, sl_store_open("etcd:,,", NULL, &s, &err));
  sl_store_opts opts = SL_STORE_OPTS_INIT;
  opts.timeout_ms = 0;
  EXPECT(SL_EINVAL, sl_store_open("etcd:http://127.0.0.1:1", &opts, &s, &err));
  assert_null(s);
}

int main(void) {
  static const sl_store_conf_backend etcd = {"etcd", open_etcd, close_etcd, &shared};
  sl_store_conf_set_backend(&etcd);
  const struct CMUnitTest tests[] = {
      SL_STORE_CONFORMANCE_TESTS
      cmocka_unit_test(test_store_etcd__watch_resumes_after_kill9),
      cmocka_unit_test(test_store_etcd__unavailable_then_recovers),
      cmocka_unit_test(test_store_etcd__timeout_when_etcd_hangs),
      cmocka_unit_test(test_store_etcd__failover_to_second_endpoint),
      cmocka_unit_test(test_store_etcd__bad_uris),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
