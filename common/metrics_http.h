/*
 * The Prometheus scrape endpoint: GET /metrics over HTTP/1.1, served by
 * libmicrohttpd from one internal polling thread.
 *
 *   sl_metrics_http_opts o = {.addr = "0.0.0.0:9090"};
 *   sl_metrics_http *h;
 *   sl_metrics_http_start(&o, &h, &err);
 *   sl_metrics_http_port(h);     // the bound port, also after ":0"
 *   sl_metrics_http_stop(h);
 *
 * Answers: GET or HEAD /metrics -> 200 with the registry rendered as
 * "text/plain; version=0.0.4"; any other path -> 404; any other method ->
 * 405 with "Allow: GET, HEAD". Query strings are ignored.
 *
 * Limits: at most max_connections connections are served at once (more
 * wait in the kernel's listen backlog until one closes, or are refused),
 * and a connection idle for timeout_s seconds is closed, so a stuck or
 * malicious client cannot pin the thread or the descriptors for long.
 */
#ifndef SL_COMMON_METRICS_HTTP_H
#define SL_COMMON_METRICS_HTTP_H

#include "common/metrics.h"
#include "common/status.h"

typedef struct sl_metrics_http sl_metrics_http;

typedef struct sl_metrics_http_opts {
  const char *addr;     /* "host:port" or "[v6]:port"; an empty host is
                           0.0.0.0; port 0 picks a free port */
  sl_metrics *registry; /* retained until stop; NULL = sl_metrics_default() */
  int max_connections;  /* 0 = 16 */
  int timeout_s;        /* idle connection timeout; 0 = 10 */
} sl_metrics_http_opts;

/* Binds addr and starts serving. SL_EINVAL for a malformed address or a
 * bad limit, SL_EUNAVAIL if the address cannot be bound (in use, not
 * local) or the server cannot start. */
sl_status sl_metrics_http_start(const sl_metrics_http_opts *opts,
                                sl_metrics_http **out, sl_err *err);

/* The bound TCP port. */
int sl_metrics_http_port(const sl_metrics_http *h);

/* Closes the listening socket and every connection, joins the thread and
 * frees. No render runs after it returns. NULL is a no-op. */
void sl_metrics_http_stop(sl_metrics_http *h);

#endif
