/*
 * The conformance suite on the etcd backend against a real etcd, plus the
 * fault cases only a remote store has: etcd killed (-9) and restarted under
 * a watch and under calls, etcd hanging (SIGSTOP), endpoint failover,
 * failing fast while etcd is down, and the calling thread's deadline.
 * Conformance cases share one etcd (started in the group setup); each
 * fault case starts its own, so a failure cannot leak into other cases.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metadata/store_conformance.h"
#include "tests/etcd_proc.h"
#include "common/testing.h"

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

/* True once every thread of pid is stopped ('T' in /proc/pid/task/N/stat). */
static bool all_stopped(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (d == NULL) return false;
  bool stopped = true;
  struct dirent *de;
  while (stopped && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    char stat[384], buf[512];
    snprintf(stat, sizeof(stat), "%s/%s/stat", path, de->d_name);
    FILE *f = fopen(stat, "r");
    if (f == NULL) continue; /* the thread just exited */
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* state follows "(comm) " */
    stopped = paren != NULL && paren[1] == ' ' && paren[2] == 'T';
  }
  closedir(d);
  return stopped;
}

/* SIGSTOP etcd and wait until it really is stopped: a signal lands
 * asynchronously, and a request sent just after kill() could still be
 * answered. */
static void freeze(sl_etcd_proc *e) {
  assert_int_equal(kill(e->proc.pid, SIGSTOP), 0);
  long long deadline = sl_clock_mono_ms() + 5000;
  while (!all_stopped(e->proc.pid)) {
    if (sl_clock_mono_ms() > deadline) fail_msg("etcd did not stop within 5 s");
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
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

  /* Every kind of call fails with SL_EUNAVAIL: unary calls at once (one
   * refused connection, then the fail-fast gate), a watch at its deadline
   * (watches keep retrying on their own). */
  sl_store_kv kv;
  int64_t x;
  sl_store_watch *w = NULL;
  sl_store_conf_events ev;
  sl_store_conf_events_init(&ev);
  for (int call = 0; call < 6; call++) {
    long long t0 = sl_clock_mono_ms();
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
    long long took = sl_clock_mono_ms() - t0;
    if (took > timeout + sl_test_scaled_ms(700)) fail_msg("call %d took %lld ms, deadline %d ms", call, took, timeout);
    if (call < 5) {
      if (took > sl_test_scaled_ms(300)) fail_msg("call %d took %lld ms with etcd down, want fail-fast", call, took);
      assert_non_null(strstr(err.msg, "all endpoints unreachable"));
    } else {
      assert_true(took >= timeout - 100); /* the watch retried until its deadline */
    }
    assert_non_null(strstr(err.msg, e.endpoint + strlen("http://")));
  }
  assert_null(w);
  sl_store_conf_events_release(&ev);

  /* Same handle, after a restart: works again, data intact, and soon: the
   * gate lets a probe through as soon as one comes (restart returns once
   * etcd answers its own client). */
  EXPECT(SL_OK, sl_etcd_proc_restart(&e, &err));
  long long back = sl_clock_mono_ms();
  long long deadline = back + 20000;
  sl_status st;
  while ((st = sl_store_get(s, "/a", 2, &kv, &err)) != SL_OK &&
         sl_clock_mono_ms() < deadline) {
  }
  if (st != SL_OK) fail_msg("after restart: %s", sl_err_msg(&err, st));
  long long recovered = sl_clock_mono_ms() - back;
  print_message("store recovered %lld ms after etcd answered again\n", recovered);
  assert_true(recovered < sl_test_scaled_ms(3000));
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
  freeze(&e);
  sl_store_kv kv;
  long long t0 = sl_clock_mono_ms();
  EXPECT(SL_ETIMEDOUT, sl_store_get(s, "/a", 2, &kv, &err));
  long long took = sl_clock_mono_ms() - t0;
  assert_true(took >= timeout - 100 && took < timeout + sl_test_scaled_ms(700));
  /* A write that may have been sent reports that its outcome is unknown. */
  t0 = sl_clock_mono_ms();
  EXPECT(SL_ETIMEDOUT, sl_store_put(s, "/a", 2, "B", 1, SL_STORE_REV_ANY, 0, NULL, &err));
  assert_non_null(strstr(err.msg, "outcome unknown"));
  took = sl_clock_mono_ms() - t0;
  assert_true(took < timeout + sl_test_scaled_ms(700));
  assert_int_equal(kill(e.proc.pid, SIGCONT), 0);
  EXPECT(SL_OK, sl_store_get(s, "/a", 2, &kv, &err));
  sl_store_kv_release(&kv);
  sl_store_close(s);
  sl_etcd_proc_release(&e);
}

/* A store on a port where nothing listens. */
static sl_store *open_dead(int timeout_ms, int down_ms) {
  sl_err err;
  int port = 0;
  EXPECT(SL_OK, sl_proc_free_port(&port, &err));
  char uri[128];
  snprintf(uri, sizeof(uri), "etcd:http://127.0.0.1:%d", port);
  sl_store_opts opts = SL_STORE_OPTS_INIT;
  opts.timeout_ms = timeout_ms;
  opts.etcd_down_ms = down_ms;
  sl_store *s = NULL;
  EXPECT(SL_OK, sl_store_open(uri, &opts, &s, &err));
  return s;
}

static void test_store_etcd__fail_fast_off_retries_until_deadline(void **state) {
  (void)state;
  sl_err err;
  sl_store *s = open_dead(400, 0);
  int64_t rev;
  for (int i = 0; i < 2; i++) {
    long long t0 = sl_clock_mono_ms();
    EXPECT(SL_EUNAVAIL, sl_store_revision(s, &rev, &err));
    long long took = sl_clock_mono_ms() - t0;
    assert_true(took >= 350 && took < sl_test_scaled_ms(1500));
    assert_non_null(strstr(err.msg, "unreachable within 400 ms"));
  }
  sl_store_close(s);
}

#define FF_THREADS 8
#define FF_CALLS 50

static void *fail_fast_caller(void *arg) {
  sl_store *s = arg;
  for (int i = 0; i < FF_CALLS; i++) {
    int64_t rev;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_store_revision(s, &rev, &err);
    if (st != SL_EUNAVAIL) return (void *)"not unavailable";
  }
  return NULL;
}

static void test_store_etcd__fail_fast_many_threads(void **state) {
  (void)state;
  /* With a 2 s deadline, 400 calls that each retried until it would hold
   * their threads for 100 s. */
  sl_store *s = open_dead(2000, 500);
  pthread_t t[FF_THREADS];
  long long t0 = sl_clock_mono_ms();
  for (int i = 0; i < FF_THREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, fail_fast_caller, s), 0);
  for (int i = 0; i < FF_THREADS; i++) {
    void *res;
    assert_int_equal(pthread_join(t[i], &res), 0);
    if (res != NULL) fail_msg("thread %d: %s", i, (const char *)res);
  }
  long long took = sl_clock_mono_ms() - t0;
  print_message("%d calls on %d threads with etcd down: %lld ms\n", FF_THREADS * FF_CALLS,
                FF_THREADS, took);
  assert_true(took < sl_test_scaled_ms(2000));
  sl_store_close(s);
}

static void test_store_etcd__thread_deadline_bounds_calls(void **state) {
  (void)state;
  sl_err err;
  sl_etcd_proc e = SL_ETCD_PROC_INIT;
  sl_store *s = NULL;
  start_private(&e, &s, 5000);
  EXPECT(SL_OK, sl_store_put(s, "/a", 2, "A", 1, SL_STORE_REV_ANY, 0, NULL, &err));
  sl_store_kv kv;
  /* A generous scope changes nothing. */
  sl_store_deadline outer;
  sl_store_deadline_begin(&outer, 10000);
  EXPECT(SL_OK, sl_store_get(s, "/a", 2, &kv, &err));
  sl_store_kv_release(&kv);
  /* etcd hangs: the call ends at the thread's 300 ms, not the store's 5 s. */
  freeze(&e);
  sl_store_deadline inner;
  sl_store_deadline_begin(&inner, 300);
  long long t0 = sl_clock_mono_ms();
  EXPECT(SL_ETIMEDOUT, sl_store_get(s, "/a", 2, &kv, &err));
  long long took = sl_clock_mono_ms() - t0;
  assert_true(took >= 250 && took < sl_test_scaled_ms(1000));
  assert_non_null(strstr(err.msg, "caller's deadline"));
  /* Once passed, calls fail without trying. */
  t0 = sl_clock_mono_ms();
  EXPECT(SL_ETIMEDOUT, sl_store_put(s, "/a", 2, "B", 1, SL_STORE_REV_ANY, 0, NULL, &err));
  assert_true(sl_clock_mono_ms() - t0 < sl_test_scaled_ms(100));
  assert_non_null(strstr(err.msg, "deadline passed before the call"));
  sl_store_deadline_end(&inner);
  assert_int_equal(kill(e.proc.pid, SIGCONT), 0);
  /* The outer scope is back in force: 10 s, plenty. */
  EXPECT(SL_OK, sl_store_get(s, "/a", 2, &kv, &err));
  sl_store_kv_release(&kv);
  sl_store_deadline_end(&outer);
  /* A scope of a passed deadline, then none at all. */
  sl_store_deadline gone;
  sl_store_deadline_begin(&gone, 0);
  EXPECT(SL_ETIMEDOUT, sl_store_get(s, "/a", 2, &kv, &err));
  sl_store_deadline_end(&gone);
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
  opts = (sl_store_opts)SL_STORE_OPTS_INIT;
  opts.etcd_down_ms = -1;
  EXPECT(SL_EINVAL, sl_store_open("etcd:http://127.0.0.1:1", &opts, &s, &err));
  assert_non_null(strstr(err.msg, "etcd_down_ms"));
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
      cmocka_unit_test(test_store_etcd__fail_fast_off_retries_until_deadline),
      cmocka_unit_test(test_store_etcd__fail_fast_many_threads),
      cmocka_unit_test(test_store_etcd__thread_deadline_bounds_calls),
      cmocka_unit_test(test_store_etcd__failover_to_second_endpoint),
      cmocka_unit_test(test_store_etcd__bad_uris),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
