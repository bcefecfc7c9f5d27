/*
 * Reading a node's /metrics in integration tests: its port from its log,
 * one scrape over HTTP (libcurl; the test calls curl_global_init once in
 * main), and one sample's value from the Prometheus text page. Helpers fail
 * the running cmocka test on transport errors.
 */
#ifndef SL_TESTS_METRICS_SCRAPE_H
#define SL_TESTS_METRICS_SCRAPE_H

#include <stdbool.h>

#include "tests/cluster.h"

/* GET /metrics of broker i of the cluster (its port from the last
 * "event=metrics_ready ... port=N" line of its log: the broker was started
 * with SLUICE_BROKER_METRICS_LISTEN set). Fails the test unless the answer
 * is 200. The caller frees the page. */
char *sl_ms_scrape(sl_cluster *c, int broker);

/* The same for node i of any kind (a bookie or metadata service started
 * with --metrics_listen). */
char *sl_ms_scrape_node(sl_cluster *c, sl_node_kind kind, int i);

/* The value of `series` (the name with its labels, as printed, e.g.
 * `x_total{outcome="ok"}`) in a page: true and *value, or false when the
 * page has no such sample. */
bool sl_ms_sample(const char *page, const char *series, double *value);

/* The same, failing the test when the sample is absent. */
double sl_ms_value(const char *page, const char *series);

/* Waits until `series` of node i has grown by `by` from its value now,
 * scraping every 100 ms; fails the test after timeout_ms (scaled by
 * sl_test_scaled_ms). */
void sl_ms_await_growth(sl_cluster *c, sl_node_kind kind, int i, const char *series,
                        double by, int timeout_ms);

#endif
