/*
 * Tests of the metrics registry (metrics.h): the exact exposition text,
 * exact totals under concurrent updates, histogram bucket placement, label
 * and help escaping, registration rules, callbacks and process metrics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/metrics.h"

static sl_metrics_counter *counter(sl_metrics *reg, const char *name,
                                   const char *const *labels) {
  sl_metrics_counter *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metrics_register_counter(reg, name, "help", labels, &c, &err);
  if (st != SL_OK) fail_msg("%s", sl_err_msg(&err, st));
  return c;
}

static void assert_render(sl_metrics *reg, const char *want) {
  size_t len = 0;
  char *got = sl_metrics_render(reg, &len);
  assert_int_equal(len, strlen(got));
  assert_string_equal(got, want);
  free(got);
}

static double seven(void *arg) { return *(double *)arg; }

static void test_metrics__render_format_exact(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  sl_err err = SL_ERR_INIT;
  const char *const get[] = {"method", "/sluice.v1.BookieService/AddEntry", "code", "OK", NULL};
  const char *const put[] = {"method", "/sluice.v1.BookieService/ReadEntry", "code", "OK", NULL};
  sl_metrics_counter *a = counter(reg, "calls_total", get);
  sl_metrics_counter *b = counter(reg, "calls_total", put);
  sl_metrics_gauge *g;
  assert_int_equal(sl_metrics_register_gauge(reg, "temp", "a gauge", NULL, &g, &err), SL_OK);
  sl_metrics_histogram *h;
  const double bounds[] = {0.005, 0.5, 1, 2.5};
  const char *const hl[] = {"op", "sync", NULL};
  assert_int_equal(sl_metrics_register_histogram(reg, "lat_seconds", "latency", hl, bounds, 4,
                                                 &h, &err),
                   SL_OK);
  double v = 7;
  sl_metrics_callback *cb;
  assert_int_equal(sl_metrics_register_callback(reg, SL_METRICS_GAUGE, "cb", "from fn", NULL,
                                                seven, &v, &cb, &err),
                   SL_OK);
  sl_metrics_counter_add(a, 3);
  sl_metrics_counter_inc(b);
  sl_metrics_gauge_set(g, -1.5);
  sl_metrics_histogram_observe(h, 0.001);
  sl_metrics_histogram_observe(h, 0.75);
  sl_metrics_histogram_observe(h, 100);
  assert_render(reg,
                "# HELP calls_total help\n"
                "# TYPE calls_total counter\n"
                "calls_total{method=\"/sluice.v1.BookieService/AddEntry\",code=\"OK\"} 3\n"
                "calls_total{method=\"/sluice.v1.BookieService/ReadEntry\",code=\"OK\"} 1\n"
                "# HELP temp a gauge\n"
                "# TYPE temp gauge\n"
                "temp -1.5\n"
                "# HELP lat_seconds latency\n"
                "# TYPE lat_seconds histogram\n"
                "lat_seconds_bucket{op=\"sync\",le=\"0.005\"} 1\n"
                "lat_seconds_bucket{op=\"sync\",le=\"0.5\"} 1\n"
                "lat_seconds_bucket{op=\"sync\",le=\"1\"} 2\n"
                "lat_seconds_bucket{op=\"sync\",le=\"2.5\"} 2\n"
                "lat_seconds_bucket{op=\"sync\",le=\"+Inf\"} 3\n"
                "lat_seconds_sum{op=\"sync\"} 100.751\n"
                "lat_seconds_count{op=\"sync\"} 3\n"
                "# HELP cb from fn\n"
                "# TYPE cb gauge\n"
                "cb 7\n");
  sl_metrics_destroy(reg);
}

static void test_metrics__unlabelled_histogram_and_special_values(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  sl_err err = SL_ERR_INIT;
  sl_metrics_histogram *h;
  const double bounds[] = {1};
  assert_int_equal(sl_metrics_register_histogram(reg, "h", "", NULL, bounds, 1, &h, &err),
                   SL_OK);
  sl_metrics_gauge *g1, *g2, *g3;
  assert_int_equal(sl_metrics_register_gauge(reg, "g", "", (const char *const[]){"k", "nan", NULL},
                                             &g1, &err), SL_OK);
  assert_int_equal(sl_metrics_register_gauge(reg, "g", "", (const char *const[]){"k", "inf", NULL},
                                             &g2, &err), SL_OK);
  assert_int_equal(sl_metrics_register_gauge(reg, "g", "", (const char *const[]){"k", "tenth", NULL},
                                             &g3, &err), SL_OK);
  sl_metrics_gauge_set(g1, NAN);
  sl_metrics_gauge_set(g2, -INFINITY);
  sl_metrics_gauge_set(g3, 0.1);
  assert_render(reg,
                "# HELP h \n"
                "# TYPE h histogram\n"
                "h_bucket{le=\"1\"} 0\n"
                "h_bucket{le=\"+Inf\"} 0\n"
                "h_sum 0\n"
                "h_count 0\n"
                "# HELP g \n"
                "# TYPE g gauge\n"
                "g{k=\"nan\"} NaN\n"
                "g{k=\"inf\"} -Inf\n"
                "g{k=\"tenth\"} 0.1\n");
  sl_metrics_destroy(reg);
}

/* ---- concurrency ---- */

enum { THREADS = 8, PER_THREAD = 200000 };

typedef struct worker_arg {
  sl_metrics_counter *c;
  sl_metrics_gauge *g;
  sl_metrics_histogram *h;
  int i;
} worker_arg;

static void *hammer(void *p) {
  worker_arg *a = p;
  for (int k = 0; k < PER_THREAD; k++) {
    sl_metrics_counter_inc(a->c);
    sl_metrics_gauge_add(a->g, 1);
    sl_metrics_gauge_add(a->g, -1);
    sl_metrics_gauge_add(a->g, 0.5);
    sl_metrics_histogram_observe(a->h, (double)(k % 4)); /* 0, 1, 2, 3 */
  }
  return NULL;
}

static void *render_loop(void *p) {
  sl_metrics *reg = p;
  for (int k = 0; k < 200; k++) free(sl_metrics_render(reg, NULL));
  return NULL;
}

static void test_metrics__concurrent_updates_total_exactly(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  sl_err err = SL_ERR_INIT;
  worker_arg args[THREADS];
  pthread_t t[THREADS + 1];
  sl_metrics_counter *c = counter(reg, "n_total", NULL);
  sl_metrics_gauge *g;
  sl_metrics_histogram *h;
  const double bounds[] = {0, 1, 2};
  assert_int_equal(sl_metrics_register_gauge(reg, "g", "", NULL, &g, &err), SL_OK);
  assert_int_equal(sl_metrics_register_histogram(reg, "h", "", NULL, bounds, 3, &h, &err), SL_OK);
  for (int i = 0; i < THREADS; i++) {
    args[i] = (worker_arg){c, g, h, i};
    assert_int_equal(pthread_create(&t[i], NULL, hammer, &args[i]), 0);
  }
  assert_int_equal(pthread_create(&t[THREADS], NULL, render_loop, reg), 0);
  for (int i = 0; i <= THREADS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
  double v;
  assert_int_equal(sl_metrics_value(reg, "n_total", NULL, &v), SL_OK);
  assert_true(v == (double)THREADS * PER_THREAD);
  assert_int_equal(sl_metrics_value(reg, "g", NULL, &v), SL_OK);
  assert_true(v == 0.5 * THREADS * PER_THREAD); /* halves add exactly */
  assert_int_equal(sl_metrics_value(reg, "h", NULL, &v), SL_OK);
  assert_true(v == (double)THREADS * PER_THREAD);
  char *text = sl_metrics_render(reg, NULL);
  char want[512];
  long q = (long)THREADS * PER_THREAD / 4;
  snprintf(want, sizeof(want),
           "h_bucket{le=\"0\"} %ld\nh_bucket{le=\"1\"} %ld\nh_bucket{le=\"2\"} %ld\n"
           "h_bucket{le=\"+Inf\"} %ld\nh_sum %ld\nh_count %ld\n",
           q, 2 * q, 3 * q, 4 * q, 6 * q, 4 * q);
  assert_non_null(strstr(text, want));
  free(text);
  sl_metrics_destroy(reg);
}

typedef struct reg_arg {
  sl_metrics *reg;
  sl_metrics_counter *got[16];
} reg_arg;

static void *register_many(void *p) {
  reg_arg *a = p;
  for (int i = 0; i < 16; i++) {
    char v[16];
    snprintf(v, sizeof(v), "%d", i);
    const char *const labels[] = {"i", v, NULL};
    if (sl_metrics_register_counter(a->reg, "r_total", "", labels, &a->got[i], NULL) != SL_OK)
      a->got[i] = NULL;
    sl_metrics_counter_inc(a->got[i]);
  }
  return NULL;
}

static void test_metrics__concurrent_registration_gives_one_handle(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  reg_arg args[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    args[i].reg = reg;
    assert_int_equal(pthread_create(&t[i], NULL, register_many, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
  for (int i = 0; i < 16; i++) {
    assert_non_null(args[0].got[i]);
    for (int k = 1; k < 4; k++) assert_ptr_equal(args[k].got[i], args[0].got[i]);
    char v[16];
    snprintf(v, sizeof(v), "%d", i);
    double n;
    assert_int_equal(sl_metrics_value(reg, "r_total", (const char *const[]){"i", v, NULL}, &n),
                     SL_OK);
    assert_true(n == 4);
  }
  sl_metrics_destroy(reg);
}

/* ---- histograms ---- */

static void test_metrics__histogram_bucket_placement(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  sl_metrics_histogram *h;
  const double bounds[] = {-1, 0, 0.25, 10};
  assert_int_equal(sl_metrics_register_histogram(reg, "p", "", NULL, bounds, 4, &h, NULL), SL_OK);
  /* A sample equal to a bound belongs to it (le is inclusive). */
  const double samples[] = {-5, -1, -0.5, 0, 0.25, 0.2500001, 10, 10.5, INFINITY};
  for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
    sl_metrics_histogram_observe(h, samples[i]);
  sl_metrics_histogram_observe(NULL, 1); /* ignored */
  assert_render(reg,
                "# HELP p \n"
                "# TYPE p histogram\n"
                "p_bucket{le=\"-1\"} 2\n"
                "p_bucket{le=\"0\"} 4\n"
                "p_bucket{le=\"0.25\"} 5\n"
                "p_bucket{le=\"10\"} 7\n"
                "p_bucket{le=\"+Inf\"} 9\n"
                "p_sum +Inf\n"
                "p_count 9\n");
  sl_metrics_destroy(reg);
}

static void test_metrics__histogram_nan_and_latency_defaults(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  sl_metrics_histogram *h;
  assert_int_equal(sl_metrics_register_histogram(reg, "d_seconds", "", NULL, NULL, 0, &h, NULL),
                   SL_OK);
  sl_metrics_histogram_observe(h, NAN);
  uint64_t t0 = sl_metrics_now_ns();
  sl_metrics_histogram_observe_since(h, t0); /* well under 100 us */
  char *text = sl_metrics_render(reg, NULL);
  assert_non_null(strstr(text, "d_seconds_bucket{le=\"0.0001\"} 1\n"));
  assert_non_null(strstr(text, "d_seconds_bucket{le=\"0.00025\"} 1\n"));
  assert_non_null(strstr(text, "d_seconds_bucket{le=\"10\"} 1\n"));
  assert_non_null(strstr(text, "d_seconds_bucket{le=\"+Inf\"} 2\n"));
  assert_non_null(strstr(text, "d_seconds_sum NaN\n"));
  free(text);
  sl_metrics_destroy(reg);
}

/* ---- escaping and registration rules ---- */

static void test_metrics__label_and_help_escaping(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  sl_metrics_counter *c;
  const char *const labels[] = {"path", "a\\b\"c\nd", "utf8", "caf\xc3\xa9", NULL};
  assert_int_equal(sl_metrics_register_counter(reg, "e_total", "back\\slash \"q\"\nline two",
                                               labels, &c, NULL),
                   SL_OK);
  assert_render(reg,
                "# HELP e_total back\\\\slash \"q\"\\nline two\n"
                "# TYPE e_total counter\n"
                "e_total{path=\"a\\\\b\\\"c\\nd\",utf8=\"caf\xc3\xa9\"} 0\n");
  /* The same raw labels find the same series. */
  sl_metrics_counter *again;
  assert_int_equal(sl_metrics_register_counter(reg, "e_total", "", labels, &again, NULL), SL_OK);
  assert_ptr_equal(again, c);
  sl_metrics_destroy(reg);
}

static void test_metrics__rejects_bad_registrations(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  sl_err err = SL_ERR_INIT;
  sl_metrics_counter *c;
  sl_metrics_gauge *g;
  sl_metrics_histogram *h;
  sl_metrics_callback *cb;
  const char *const bad_names[] = {"", "1abc", "a-b", "a b", "é"};
  for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
    assert_int_equal(sl_metrics_register_counter(reg, bad_names[i], "", NULL, &c, &err), SL_EINVAL);
  assert_int_equal(sl_metrics_register_counter(reg, NULL, "", NULL, &c, &err), SL_EINVAL);
  assert_null(c);
  assert_int_equal(sl_metrics_register_counter(reg, "ns:sub_total", "", NULL, &c, &err), SL_OK);
  assert_int_equal(sl_metrics_register_counter(reg, "x", "", (const char *const[]){"__r", "v", NULL},
                                               &c, &err), SL_EINVAL);
  assert_int_equal(sl_metrics_register_counter(reg, "x", "", (const char *const[]){"a:b", "v", NULL},
                                               &c, &err), SL_EINVAL);
  assert_int_equal(sl_metrics_register_counter(reg, "x", "",
                                               (const char *const[]){"a", "1", "a", "2", NULL}, &c,
                                               &err), SL_EINVAL);
  assert_string_equal(err.msg, "metric x: label a given twice");
  const char *const nine[] = {"a", "", "b", "", "c", "", "d", "", "e", "",
                              "f", "", "g", "", "h", "", "i", "", NULL};
  assert_int_equal(sl_metrics_register_counter(reg, "x", "", nine, &c, &err), SL_EINVAL);
  /* One name, one type. */
  assert_int_equal(sl_metrics_register_counter(reg, "t", "", NULL, &c, &err), SL_OK);
  assert_int_equal(sl_metrics_register_gauge(reg, "t", "", NULL, &g, &err), SL_EINVAL);
  assert_string_equal(err.msg, "metric t: registered as a counter, not a gauge");
  /* Histogram buckets. */
  const double up[] = {1, 2}, down[] = {2, 1}, inf[] = {1, INFINITY};
  assert_int_equal(sl_metrics_register_histogram(reg, "h", "", NULL, down, 2, &h, &err), SL_EINVAL);
  assert_int_equal(sl_metrics_register_histogram(reg, "h", "", NULL, inf, 2, &h, &err), SL_EINVAL);
  assert_int_equal(sl_metrics_register_histogram(reg, "h", "", NULL, up, 0, &h, &err), SL_EINVAL);
  assert_int_equal(sl_metrics_register_histogram(reg, "h", "", (const char *const[]){"le", "1", NULL},
                                                 up, 2, &h, &err), SL_EINVAL);
  assert_int_equal(sl_metrics_register_histogram(reg, "h", "", NULL, up, 2, &h, &err), SL_OK);
  assert_int_equal(sl_metrics_register_histogram(reg, "h", "", (const char *const[]){"a", "1", NULL},
                                                 up, 1, &h, &err), SL_EINVAL);
  /* Callbacks: no fn, histogram type, a name taken by a plain series. */
  assert_int_equal(sl_metrics_register_callback(reg, SL_METRICS_GAUGE, "f", "", NULL, NULL, NULL,
                                                &cb, &err), SL_EINVAL);
  assert_int_equal(sl_metrics_register_callback(reg, SL_METRICS_HISTOGRAM, "f", "", NULL, seven,
                                                NULL, &cb, &err), SL_EINVAL);
  assert_int_equal(sl_metrics_register_callback(reg, SL_METRICS_COUNTER, "t", "", NULL, seven,
                                                NULL, &cb, &err), SL_EEXIST);
  double v;
  assert_int_equal(sl_metrics_value(reg, "nope", NULL, &v), SL_ENOTFOUND);
  assert_int_equal(sl_metrics_value(reg, "t", (const char *const[]){"a", "1", NULL}, &v),
                   SL_ENOTFOUND);
  sl_metrics_destroy(reg);
}

static void test_metrics__callback_unregister(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  double v = 2;
  sl_metrics_callback *cb, *again;
  assert_int_equal(sl_metrics_register_callback(reg, SL_METRICS_COUNTER, "c_total", "x", NULL,
                                                seven, &v, &cb, NULL), SL_OK);
  assert_int_equal(sl_metrics_register_callback(reg, SL_METRICS_COUNTER, "c_total", "x", NULL,
                                                seven, &v, &again, NULL), SL_EEXIST);
  sl_metrics_counter *c;
  assert_int_equal(sl_metrics_register_counter(reg, "c_total", "", NULL, &c, NULL), SL_EINVAL);
  assert_render(reg, "# HELP c_total x\n# TYPE c_total counter\nc_total 2\n");
  sl_metrics_unregister_callback(reg, cb);
  sl_metrics_unregister_callback(reg, NULL);
  assert_render(reg, ""); /* an empty family is left out */
  assert_int_equal(sl_metrics_register_callback(reg, SL_METRICS_COUNTER, "c_total", "x", NULL,
                                                seven, &v, &cb, NULL), SL_OK);
  v = 3;
  double got;
  assert_int_equal(sl_metrics_value(reg, "c_total", NULL, &got), SL_OK);
  assert_true(got == 3);
  sl_metrics_destroy(reg); /* frees the registered callback too */
}

static void test_metrics__null_handles_are_ignored(void **state) {
  (void)state;
  sl_metrics_counter_inc(NULL);
  sl_metrics_counter_add(NULL, 5);
  sl_metrics_gauge_set(NULL, 1);
  sl_metrics_gauge_add(NULL, 1);
  sl_metrics_histogram_observe_since(NULL, 0);
  sl_metrics_destroy(NULL);
}

/* ---- process metrics and the default registry ---- */

static double value_of(sl_metrics *reg, const char *name) {
  double v = NAN;
  assert_int_equal(sl_metrics_value(reg, name, NULL, &v), SL_OK);
  return v;
}

static void test_metrics__process_metrics(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_metrics_register_process(reg, &err), SL_OK);
  assert_int_equal(sl_metrics_register_process(reg, &err), SL_OK); /* idempotent */
  double start = value_of(reg, "process_start_time_seconds");
  double now = (double)time(NULL);
  assert_true(start > now - 3600 && start <= now + 1);
  assert_true(value_of(reg, "process_resident_memory_bytes") > 1e5);
  assert_true(value_of(reg, "process_virtual_memory_bytes") >=
              value_of(reg, "process_resident_memory_bytes"));
  assert_true(value_of(reg, "process_cpu_seconds_total") >= 0);
  assert_true(value_of(reg, "process_max_fds") > 0);
  double fds = value_of(reg, "process_open_fds");
  assert_true(fds >= 3);
  FILE *f = fopen("/proc/self/stat", "r");
  assert_non_null(f);
  assert_true(value_of(reg, "process_open_fds") == fds + 1);
  fclose(f);
  char *text = sl_metrics_render(reg, NULL);
  assert_non_null(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
  assert_non_null(strstr(text, "# TYPE process_open_fds gauge\nprocess_open_fds "));
  free(text);
  sl_metrics_destroy(reg);
}

static void test_metrics__default_registry_is_one(void **state) {
  (void)state;
  sl_metrics *a = sl_metrics_default();
  assert_non_null(a);
  assert_ptr_equal(sl_metrics_default(), a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metrics__render_format_exact),
      cmocka_unit_test(test_metrics__unlabelled_histogram_and_special_values),
      cmocka_unit_test(test_metrics__concurrent_updates_total_exactly),
      cmocka_unit_test(test_metrics__concurrent_registration_gives_one_handle),
      cmocka_unit_test(test_metrics__histogram_bucket_placement),
      cmocka_unit_test(test_metrics__histogram_nan_and_latency_defaults),
      cmocka_unit_test(test_metrics__label_and_help_escaping),
      cmocka_unit_test(test_metrics__rejects_bad_registrations),
      cmocka_unit_test(test_metrics__callback_unregister),
      cmocka_unit_test(test_metrics__null_handles_are_ignored),
      cmocka_unit_test(test_metrics__process_metrics),
      cmocka_unit_test(test_metrics__default_registry_is_one),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
