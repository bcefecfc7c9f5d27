/* The store monitor's gauges and the store's metrics, in-process on a local
 * store (and on an etcd endpoint that refuses connections): each moves by
 * what was done, and promtool accepts the rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/metrics.h"
#include "tests/metadata_util.h"

#define P "public/orders-partition-0"

static double value(const char *name, const char *const *labels) {
  double v = -1;
  assert_int_equal(sl_metrics_value(sl_metrics_default(), name, labels, &v), SL_OK);
  return v;
}

/* Polls a gauge until it reads `want` (the monitor sets it every 20 ms). */
static void await_value(const char *name, const char *const *labels, double want) {
  long long deadline = sl_clock_mono_ms() + 5000;
  while (value(name, labels) != want) {
    if (sl_clock_mono_ms() > deadline)
      fail_msg("%s is %g after 5 s, want %g", name, value(name, labels), want);
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static void test_md_monitor__gauges_and_store_metrics(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_md_service_monitor_start(l->md, l->srv, 20, &err), SL_OK, &err);
  mdt_expect(sl_md_service_monitor_start(l->md, l->srv, 20, &err), SL_EEXIST, &err);
  await_value("sluice_metadata_store_up", NULL, 1);
  assert_true(value("sluice_metadata_store_breaker_open", NULL) == 0);
  static const char *const broker[] = {"kind", "broker", NULL};
  static const char *const bookie[] = {"kind", "bookie", NULL};
  await_value("sluice_metadata_sessions", broker, 0);
  int64_t s = mdt_open_broker(l->ch, "b1", 0);
  (void)mdt_open_bookie(l->ch, "k1", false, 0);
  await_value("sluice_metadata_sessions", broker, 1);
  await_value("sluice_metadata_sessions", bookie, 1);

  /* Store calls are timed by operation; a lost CAS counts once. */
  static const char *const txn[] = {"op", "txn", NULL};
  static const char *const get[] = {"op", "get", NULL};
  const char *hist = "sluice_metadata_store_request_duration_seconds";
  double txns = value(hist, txn), gets = value(hist, get);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(l->ch, P, "b1", s);
  uint64_t epoch = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_true(value(hist, txn) > txns);
  assert_true(value(hist, get) > gets);
  int64_t v = 0;
  mdt_expect(mdt_st_update_cursor(l->ch, P, "s", 1, 0, epoch, &v, &err), SL_OK, &err);
  double conflicts = value("sluice_metadata_store_cas_conflicts_total", NULL);
  mdt_expect(mdt_st_update_cursor(l->ch, P, "s", 2, v - 1, epoch, NULL, &err), SL_EVERSION,
             &err);
  assert_true(value("sluice_metadata_store_cas_conflicts_total", NULL) == conflicts + 1);

  /* Open watches. */
  double watches = value("sluice_metadata_watches", NULL);
  Sluice__V1__WatchRequest req = SLUICE__V1__WATCH_REQUEST__INIT;
  req.target = SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BROKERS;
  sl_rpc_stream *w = NULL;
  mdt_expect(sl_metadata_service_watch_open(l->ch, &req, NULL, &w, &err), SL_OK, &err);
  Sluice__V1__WatchEvent *ev = NULL;
  mdt_expect(sl_metadata_service_watch_recv(w, &ev, 5000, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  assert_true(value("sluice_metadata_watches", NULL) == watches + 1);
  sl_rpc_stream_destroy(w);
  await_value("sluice_metadata_watches", NULL, watches);

  /* promtool finds nothing to complain about. */
  size_t len = 0;
  char *text = sl_metrics_render(sl_metrics_default(), &len);
  assert_non_null(strstr(text, "# TYPE sluice_metadata_store_request_duration_seconds histogram"));
  assert_non_null(strstr(text, "# TYPE sluice_metadata_store_cas_conflicts_total counter"));
  FILE *p = popen("promtool check metrics > promtool.out 2>&1", "w");
  if (p == NULL) {
    free(text);
    skip(); /* promtool is optional on developer machines */
  }
  fwrite(text, 1, len, p);
  free(text);
  int rc = pclose(p);
  print_message("promtool check metrics: exit %d\n", rc / 256);
  if (rc != 0) {
    char buf[4096] = {0};
    FILE *o = fopen("promtool.out", "r");
    if (o != NULL) {
      size_t n = fread(buf, 1, sizeof(buf) - 1, o);
      buf[n] = '\0';
      fclose(o);
    }
    /* 127: no promtool here. */
    if (rc / 256 != 127) fail_msg("promtool check metrics: %s", buf);
  }
  sl_md_service_monitor_stop(l->md);
  sl_md_service_monitor_stop(l->md); /* a no-op */
}

/* The monitor probes once per interval and sleeps in between: a wait that
 * returned at once (a cond on the wrong clock) made it spin, hammering
 * etcd from every replica. An upper bound holds however slow the machine. */
static void test_md_monitor__probes_once_per_interval(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  double before = value("sluice_metadata_store_probes_total", NULL);
  mdt_expect(sl_md_service_monitor_start(l->md, l->srv, 200, &err), SL_OK, &err);
  long long t0 = sl_clock_mono_ms();
  struct timespec ts = {1, 0};
  nanosleep(&ts, NULL);
  sl_md_service_monitor_stop(l->md);
  long long took = sl_clock_mono_ms() - t0;
  double n = value("sluice_metadata_store_probes_total", NULL) - before;
  print_message("%g probes in %lld ms at a 200 ms interval\n", n, took);
  assert_true(n >= 1);
  assert_true(n <= took / 200 + 2);
}

/* The gauges of a store that does not answer: an etcd endpoint on a port
 * that is bound but not listening, so every connection is refused at once
 * and no other process can take the port meanwhile. store_up goes to 0 and
 * the fail-fast breaker shows open; a local store would never move them. */
static void test_md_monitor__unreachable_store_shows_down(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  socklen_t alen = sizeof(a);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
  char uri[64];
  snprintf(uri, sizeof(uri), "etcd:http://127.0.0.1:%u", ntohs(a.sin_port));
  sl_store_opts so = SL_STORE_OPTS_INIT;
  so.etcd_down_ms = 60000; /* the breaker stays open between probes */
  sl_store *store = NULL;
  mdt_expect(sl_store_open(uri, &so, &store, &err), SL_OK, &err);
  mdt_local r;
  mdt_replica_start(&r, store, NULL);
  mdt_expect(sl_md_service_monitor_start(r.md, r.srv, 20, &err), SL_OK, &err);
  await_value("sluice_metadata_store_up", NULL, 0);
  await_value("sluice_metadata_store_breaker_open", NULL, 1);
  sl_md_service_monitor_stop(r.md);
  mdt_local_stop(&r);
  sl_store_close(store);
  close(fd);
}

/* The monitor touches the server: stop it first, even after a failure. */
static int teardown(void **state) {
  mdt_local *l = *state;
  sl_md_service_monitor_stop(l->md);
  return mdt_local_teardown(state);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_md_monitor__gauges_and_store_metrics, mdt_local_setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_md_monitor__probes_once_per_interval, mdt_local_setup,
                                      teardown),
      cmocka_unit_test(test_md_monitor__unreachable_store_shows_down),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
