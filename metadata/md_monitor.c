/*
 * The service's view of its store, for Kubernetes and for operators: a
 * thread probes the store every interval and reports the outcome as gRPC
 * health and as gauges on /metrics (service.h, "Monitor").
 *
 * Invariants
 *   1. Health follows the latest probe: NOT_SERVING for "" and for
 *      sluice.v1.MetadataService while the store does not answer a
 *      revision read within the probe's deadline (etcd killed, hung or
 *      partitioned away), SERVING once it answers again. Set on every
 *      probe, so a server started after a probe still ends up right.
 *   2. The thread touches the server only between monitor_start and
 *      monitor_stop, which the owner calls before destroying the server.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/metrics.h"
#include "metadata/service_int.h"

#define SERVICE_NAME "sluice.v1.MetadataService"

static pthread_once_t gauges_once = PTHREAD_ONCE_INIT;
static sl_metrics_gauge *store_up, *breaker_open, *brokers, *bookies, *watches;
static sl_metrics_counter *probes;

static void gauges_init(void) {
  sl_metrics *m = sl_metrics_default();
  static const char *const broker[] = {"kind", "broker", NULL};
  static const char *const bookie[] = {"kind", "bookie", NULL};
  sl_metrics_register_gauge(m, "sluice_metadata_store_up",
                            "1 if the last store probe answered, else 0.", NULL, &store_up,
                            NULL);
  sl_metrics_register_gauge(m, "sluice_metadata_store_breaker_open",
                            "1 while the etcd client fails calls at once because every "
                            "endpoint is unreachable (the fail-fast breaker), else 0.",
                            NULL, &breaker_open, NULL);
  sl_metrics_register_gauge(m, "sluice_metadata_sessions",
                            "Nodes registered with a live session, by kind.", broker, &brokers,
                            NULL);
  sl_metrics_register_gauge(m, "sluice_metadata_sessions",
                            "Nodes registered with a live session, by kind.", bookie, &bookies,
                            NULL);
  sl_metrics_register_gauge(m, "sluice_metadata_watches", "Open Watch streams.", NULL, &watches,
                            NULL);
  sl_metrics_register_counter(m, "sluice_metadata_store_probes_total",
                              "Store probes by the monitor (one per interval).", NULL, &probes,
                              NULL);
}

void sl_md_watches_add(int d) {
  pthread_once(&gauges_once, gauges_init);
  sl_metrics_gauge_add(watches, d);
}

/* Registrations under brokers/ or bookies/; -1 if the read failed. */
static double count_keys(sl_md_service *md, const char *what) {
  sl_md_key prefix;
  sl_md_key_fmt(&prefix, "%s/", what);
  sl_store_range_result r;
  if (sl_store_range(md->store, prefix.s, prefix.len, NULL, 0, 0, &r, NULL) != SL_OK) return -1;
  double n = (double)r.n;
  sl_store_range_result_release(&r);
  return n;
}

static void probe(sl_md_service *md) {
  sl_store_deadline d;
  sl_store_deadline_begin(&d, md->monitor_interval_ms);
  int64_t rev;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_store_revision(md->store, &rev, &err);
  double nb = st == SL_OK ? count_keys(md, "brokers") : -1;
  double nk = st == SL_OK ? count_keys(md, "bookies") : -1;
  sl_store_deadline_end(&d);
  sl_metrics_counter_inc(probes);
  bool up = st == SL_OK;
  sl_metrics_gauge_set(store_up, up);
  sl_metrics_gauge_set(breaker_open, sl_store_failing_fast(md->store));
  if (nb >= 0) sl_metrics_gauge_set(brokers, nb);
  if (nk >= 0) sl_metrics_gauge_set(bookies, nk);
  if (up != md->monitor_up)
    sl_log(up ? SL_LOG_INFO : SL_LOG_WARN, "event=%s error=\"%s\"",
           up ? "store_reachable" : "store_unreachable", up ? "" : sl_err_msg(&err, st));
  md->monitor_up = up;
  sl_rpc_server_set_health(md->monitor_srv, "", up);
  sl_rpc_server_set_health(md->monitor_srv, SERVICE_NAME, up);
}

static void *monitor_main(void *arg) {
  sl_md_service *md = arg;
  pthread_mutex_lock(&md->monitor_lock);
  while (!md->monitor_stop) {
    pthread_mutex_unlock(&md->monitor_lock);
    probe(md);
    pthread_mutex_lock(&md->monitor_lock);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += md->monitor_interval_ms / 1000;
    until.tv_nsec += (long)(md->monitor_interval_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    while (!md->monitor_stop &&
           pthread_cond_timedwait(&md->monitor_cond, &md->monitor_lock, &until) != ETIMEDOUT) {
    }
  }
  pthread_mutex_unlock(&md->monitor_lock);
  return NULL;
}

sl_status sl_md_service_monitor_start(sl_md_service *md, sl_rpc_server *srv, int interval_ms,
                                      sl_err *err) {
  if (interval_ms < 10 || interval_ms > 60000)
    return sl_err_set(err, SL_EINVAL, "metadata monitor: interval %d ms, want 10..60000",
                      interval_ms);
  if (md->monitor_running) return sl_err_set(err, SL_EEXIST, "metadata monitor: running");
  pthread_once(&gauges_once, gauges_init);
  md->monitor_srv = srv;
  md->monitor_interval_ms = interval_ms;
  md->monitor_stop = false;
  md->monitor_up = true; /* what the server reports before the first probe */
  if (pthread_create(&md->monitor, NULL, monitor_main, md) != 0)
    return sl_err_set(err, SL_EIO, "metadata monitor: cannot start a thread");
  md->monitor_running = true;
  return SL_OK;
}

void sl_md_service_monitor_stop(sl_md_service *md) {
  if (md == NULL || !md->monitor_running) return;
  pthread_mutex_lock(&md->monitor_lock);
  md->monitor_stop = true;
  pthread_cond_signal(&md->monitor_cond);
  pthread_mutex_unlock(&md->monitor_lock);
  pthread_join(md->monitor, NULL);
  md->monitor_running = false;
  md->monitor_srv = NULL;
}
