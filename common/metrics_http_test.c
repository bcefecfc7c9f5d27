/*
 * Tests of the scrape endpoint (metrics_http.h) over real HTTP on loopback
 * with libcurl and raw sockets: answers per path and method, live values,
 * port 0, bad addresses, the connection limit and the idle timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/metrics.h"
#include "common/metrics_http.h"
#include "common/clock.h"

typedef struct answer {
  long code;
  char body[65536];
  size_t len;
  char type[128];
  char allow[64];
  CURLcode rc;
} answer;

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
  answer *a = arg;
  size_t k = size * n;
  if (a->len + k >= sizeof(a->body)) return 0;
  memcpy(a->body + a->len, p, k);
  a->len += k;
  a->body[a->len] = '\0';
  return k;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg) {
  answer *a = arg;
  size_t k = size * n;
  if (strncasecmp(p, "Content-Type: ", 14) == 0)
    snprintf(a->type, sizeof(a->type), "%.*s", (int)(k - 16), p + 14); /* no CRLF */
  if (strncasecmp(p, "Allow: ", 7) == 0)
    snprintf(a->allow, sizeof(a->allow), "%.*s", (int)(k - 9), p + 7);
  return k;
}

static long fetch_timeout_ms = 5000;

/* One request to 127.0.0.1:port; method is "GET", "HEAD" or "POST". */
static void fetch(int port, const char *method, const char *path, answer *a) {
  char url[256];
  memset(a, 0, sizeof(*a));
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
  CURL *c = curl_easy_init();
  assert_non_null(c);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, fetch_timeout_ms);
  if (strcmp(method, "HEAD") == 0) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  if (strcmp(method, "POST") == 0) curl_easy_setopt(c, CURLOPT_POSTFIELDS, "a=1");
  a->rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->code);
  curl_easy_cleanup(c);
}

static sl_metrics_http *start(sl_metrics *reg, const char *addr, int max_conn, int timeout_s) {
  sl_metrics_http_opts o = {.addr = addr, .registry = reg, .max_connections = max_conn,
                            .timeout_s = timeout_s};
  sl_metrics_http *h = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metrics_http_start(&o, &h, &err);
  if (st != SL_OK) fail_msg("start %s: %s", addr, sl_err_msg(&err, st));
  assert_true(sl_metrics_http_port(h) > 0);
  return h;
}

/* A raw TCP connection to 127.0.0.1:port that sends nothing. */
static int raw_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  return fd;
}

static void test_metrics_http__serves_get_metrics(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  sl_metrics_counter *c;
  assert_int_equal(sl_metrics_register_counter(reg, "hits_total", "hits", NULL, &c, NULL), SL_OK);
  sl_metrics_http *h = start(reg, "127.0.0.1:0", 0, 0);
  int port = sl_metrics_http_port(h);
  answer a;
  fetch(port, "GET", "/metrics", &a);
  assert_int_equal(a.rc, CURLE_OK);
  assert_int_equal(a.code, 200);
  assert_string_equal(a.type, "text/plain; version=0.0.4; charset=utf-8");
  assert_string_equal(a.body, "# HELP hits_total hits\n# TYPE hits_total counter\nhits_total 0\n");
  /* Live values, and query strings do not matter. */
  sl_metrics_counter_add(c, 41);
  sl_metrics_counter_inc(c);
  fetch(port, "GET", "/metrics?debug=1", &a);
  assert_int_equal(a.code, 200);
  assert_non_null(strstr(a.body, "\nhits_total 42\n"));
  fetch(port, "HEAD", "/metrics", &a);
  assert_int_equal(a.rc, CURLE_OK);
  assert_int_equal(a.code, 200);
  assert_int_equal(a.len, 0);
  sl_metrics_http_stop(h);
  sl_metrics_destroy(reg);
}

static void test_metrics_http__other_paths_404_other_methods_405(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  sl_metrics_http *h = start(reg, "127.0.0.1:0", 0, 0);
  int port = sl_metrics_http_port(h);
  answer a;
  const char *const paths[] = {"/", "/metrics/", "/metricsx", "/Metrics", "/health"};
  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
    fetch(port, "GET", paths[i], &a);
    assert_int_equal(a.rc, CURLE_OK);
    assert_int_equal(a.code, 404);
    assert_string_equal(a.body, "not found\n");
  }
  fetch(port, "POST", "/metrics", &a);
  assert_int_equal(a.rc, CURLE_OK);
  assert_int_equal(a.code, 405);
  assert_string_equal(a.allow, "GET, HEAD");
  fetch(port, "POST", "/elsewhere", &a);
  assert_int_equal(a.code, 405);
  /* Still serving after all that. */
  fetch(port, "GET", "/metrics", &a);
  assert_int_equal(a.code, 200);
  sl_metrics_http_stop(h);
  sl_metrics_destroy(reg);
}

static void test_metrics_http__default_registry_and_fixed_port(void **state) {
  (void)state;
  sl_metrics_counter *c;
  assert_int_equal(sl_metrics_register_counter(sl_metrics_default(), "dflt_total", "", NULL, &c,
                                               NULL), SL_OK);
  sl_metrics_http *h = start(NULL, "127.0.0.1:0", 0, 0);
  int port = sl_metrics_http_port(h);
  answer a;
  fetch(port, "GET", "/metrics", &a);
  assert_non_null(strstr(a.body, "dflt_total 0\n"));
  sl_metrics_http_stop(h);
  /* The same port again, by number, once free (SO_REUSEADDR: no TIME_WAIT wait). */
  char addr[64];
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  h = start(NULL, addr, 0, 0);
  assert_int_equal(sl_metrics_http_port(h), port);
  /* ...but not twice at once. */
  sl_metrics_http_opts o = {.addr = addr};
  sl_metrics_http *h2 = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_metrics_http_start(&o, &h2, &err), SL_EUNAVAIL);
  assert_null(h2);
  assert_non_null(strstr(err.msg, addr));
  assert_non_null(strstr(err.msg, "in use"));
  sl_metrics_http_stop(h);
  sl_metrics_http_stop(NULL);
}

static void test_metrics_http__rejects_bad_addresses(void **state) {
  (void)state;
  const char *const bad[] = {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:65536",
                             "127.0.0.1:-1", "::1:80", "[::1", "[::1]80"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    sl_metrics_http_opts o = {.addr = bad[i]};
    sl_metrics_http *h = NULL;
    sl_err err = SL_ERR_INIT;
    assert_int_equal(sl_metrics_http_start(&o, &h, &err), SL_EINVAL);
    assert_null(h);
    assert_true(err.msg[0] != '\0');
  }
  sl_metrics_http_opts o = {.addr = NULL};
  sl_metrics_http *h = NULL;
  assert_int_equal(sl_metrics_http_start(&o, &h, NULL), SL_EINVAL);
  o.addr = "127.0.0.1:0";
  o.max_connections = -1;
  assert_int_equal(sl_metrics_http_start(&o, &h, NULL), SL_EINVAL);
  /* Well-formed but not ours to bind. */
  sl_metrics_http_opts other = {.addr = "192.0.2.1:0"};
  assert_int_equal(sl_metrics_http_start(&other, &h, NULL), SL_EUNAVAIL);
  assert_null(h);
}

static void test_metrics_http__ipv6_loopback(void **state) {
  (void)state;
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  bool v6 = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
  if (fd >= 0) close(fd);
  if (!v6) skip(); /* no IPv6 loopback on this machine */
  sl_metrics_http *h = start(NULL, "[::1]:0", 0, 0);
  char url[128];
  snprintf(url, sizeof(url), "http://[::1]:%d/metrics", sl_metrics_http_port(h));
  CURL *c = curl_easy_init();
  answer a = {0};
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
  assert_int_equal(curl_easy_perform(c), CURLE_OK);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.code);
  curl_easy_cleanup(c);
  assert_int_equal(a.code, 200);
  sl_metrics_http_stop(h);
}

static void test_metrics_http__connection_limit(void **state) {
  (void)state;
  sl_metrics *reg = sl_metrics_create();
  sl_metrics_http *h = start(reg, "127.0.0.1:0", 2, 30);
  int port = sl_metrics_http_port(h);
  int a1 = raw_connect(port), a2 = raw_connect(port);
  /* Both slots are taken by idle connections: a third gets no answer (it
   * waits in the listen backlog, or is closed at once). */
  answer a;
  fetch_timeout_ms = 500;
  fetch(port, "GET", "/metrics", &a);
  fetch_timeout_ms = 5000;
  assert_int_not_equal(a.rc, CURLE_OK);
  close(a1);
  /* The server notices the close on its own time: poll for a free slot. */
  long long deadline = sl_clock_mono_ms() + 5000;
  do {
    fetch(port, "GET", "/metrics", &a);
  } while (a.rc != CURLE_OK && sl_clock_mono_ms() < deadline);
  assert_int_equal(a.rc, CURLE_OK);
  assert_int_equal(a.code, 200);
  close(a2);
  sl_metrics_http_stop(h);
  sl_metrics_destroy(reg);
}

static void test_metrics_http__idle_connection_times_out(void **state) {
  (void)state;
  sl_metrics_http *h = start(NULL, "127.0.0.1:0", 0, 1);
  int fd = raw_connect(sl_metrics_http_port(h));
  long long t0 = sl_clock_mono_ms();
  struct pollfd p = {.fd = fd, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 5000), 1); /* the server's close */
  char b;
  assert_true(recv(fd, &b, 1, 0) <= 0);
  long long took = sl_clock_mono_ms() - t0;
  assert_true(took >= 900 && took < 5000);
  close(fd);
  /* A connection left open does not hold up stop. */
  fd = raw_connect(sl_metrics_http_port(h));
  t0 = sl_clock_mono_ms();
  sl_metrics_http_stop(h);
  assert_true(sl_clock_mono_ms() - t0 < 1000);
  close(fd);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metrics_http__serves_get_metrics),
      cmocka_unit_test(test_metrics_http__other_paths_404_other_methods_405),
      cmocka_unit_test(test_metrics_http__default_registry_and_fixed_port),
      cmocka_unit_test(test_metrics_http__rejects_bad_addresses),
      cmocka_unit_test(test_metrics_http__ipv6_loopback),
      cmocka_unit_test(test_metrics_http__connection_limit),
      cmocka_unit_test(test_metrics_http__idle_connection_times_out),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
