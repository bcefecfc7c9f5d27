#include "tests/metrics_scrape.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <time.h>

#include "common/clock.h"
#include "common/testing.h"

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
  char **body = arg;
  size_t k = size * n, have = *body ? strlen(*body) : 0;
  char *grown = realloc(*body, have + k + 1);
  if (grown == NULL) return 0; /* curl fails the transfer */
  memcpy(grown + have, p, k);
  grown[have + k] = '\0';
  *body = grown;
  return k;
}

/* The last port the node logged: a restart logs a new one. */
static int metrics_port(sl_cluster *c, sl_node_kind kind, int i) {
  FILE *f = fopen(sl_cluster_log(c, kind, i), "r");
  if (f == NULL) fail_msg("no log for node %d of kind %d", i, (int)kind);
  char line[4096];
  int port = 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    const char *p = strstr(line, " event=metrics_ready ");
    if (p != NULL && (p = strstr(p, " port=")) != NULL) port = atoi(p + 6);
  }
  fclose(f);
  if (port <= 0) fail_msg("node %d of kind %d logged no metrics port", i, (int)kind);
  return port;
}

char *sl_ms_scrape(sl_cluster *c, int broker) {
  return sl_ms_scrape_node(c, SL_NODE_BROKER, broker);
}

char *sl_ms_scrape_node(sl_cluster *c, sl_node_kind kind, int i) {
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", metrics_port(c, kind, i));
  char *body = NULL;
  CURL *h = curl_easy_init();
  if (h == NULL) fail_msg("curl_easy_init failed");
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
  CURLcode rc = curl_easy_perform(h);
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(h);
  if (rc != CURLE_OK || code != 200 || body == NULL) {
    free(body);
    fail_msg("GET %s: %s (HTTP %ld)", url, curl_easy_strerror(rc), code);
  }
  return body;
}

bool sl_ms_sample(const char *page, const char *series, double *value) {
  size_t n = strlen(series);
  for (const char *line = page; *line != '\0';) {
    const char *end = strchr(line, '\n');
    if (end == NULL) end = line + strlen(line);
    if ((size_t)(end - line) > n && strncmp(line, series, n) == 0 && line[n] == ' ') {
      *value = strtod(line + n + 1, NULL);
      return true;
    }
    line = *end ? end + 1 : end;
  }
  return false;
}

double sl_ms_value(const char *page, const char *series) {
  double v = 0;
  if (!sl_ms_sample(page, series, &v)) fail_msg("no sample %s", series);
  return v;
}

static double node_value(sl_cluster *c, sl_node_kind kind, int i, const char *series) {
  char *page = sl_ms_scrape_node(c, kind, i);
  double v = sl_ms_value(page, series);
  free(page);
  return v;
}

void sl_ms_await_growth(sl_cluster *c, sl_node_kind kind, int i, const char *series,
                        double by, int timeout_ms) {
  double want = node_value(c, kind, i, series) + by;
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(timeout_ms);
  double now;
  while ((now = node_value(c, kind, i, series)) < want) {
    if (sl_clock_mono_ms() > deadline)
      fail_msg("%s: %.0f after %d ms, want %.0f", series, now, timeout_ms, want);
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
  }
}
