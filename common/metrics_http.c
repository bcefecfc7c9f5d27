/*
 * GET /metrics over libmicrohttpd (metrics_http.h).
 *
 * One MHD daemon with its own polling thread (epoll or poll, whichever MHD
 * picks) answers every request in its access handler, on the first call
 * for the request: the only body we accept is none, so there is nothing to
 * wait for. The registry is rendered into a heap buffer that MHD frees
 * once it is sent. MHD_stop_daemon() joins that thread, so after stop no
 * handler (and no render) runs.
 */
#include "common/metrics_http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"

struct sl_metrics_http {
  struct MHD_Daemon *daemon;
  sl_metrics *reg; /* retained */
  int port;
  char last_error[160]; /* MHD's last message; read only when start fails */
};

static const char content_type[] = "text/plain; version=0.0.4; charset=utf-8";

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const char *text) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
  if (r == NULL) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
  if (code == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, "Allow", "GET, HEAD");
  enum MHD_Result ret = MHD_queue_response(conn, code, r);
  MHD_destroy_response(r);
  return ret;
}

/* Runs on the daemon's thread, once per request. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls) {
  (void)version;
  (void)upload_data;
  (void)upload_data_size;
  (void)req_cls;
  sl_metrics_http *h = cls;
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
  if (strcmp(url, "/metrics") != 0) return reply(conn, MHD_HTTP_NOT_FOUND, "not found\n");
  size_t len;
  char *text = sl_metrics_render(h->reg, &len);
  struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
  if (r == NULL) {
    free(text);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return ret;
}

/* MHD's own error messages, one log line each; runs on the starting thread
 * during MHD_start_daemon, later on the daemon's thread. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  sl_metrics_http *h = cls;
  char msg[sizeof(h->last_error)];
  vsnprintf(msg, sizeof(msg), fmt, ap);
  size_t n = strlen(msg);
  while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = '\0';
  for (char *p = msg; *p != '\0'; p++)
    if (*p == '\n' || *p == '"') *p = ' ';
  memcpy(h->last_error, msg, n + 1);
  sl_log(SL_LOG_WARN, "event=metrics_http_error error=\"%s\"", msg);
}

/* Splits "host:port" or "[v6]:port" and resolves it for a passive socket.
 * *out is freed with freeaddrinfo(). */
static sl_status resolve(const char *addr, struct addrinfo **out, sl_err *err) {
  char host[256];
  const char *port;
  *out = NULL;
  if (addr == NULL) return sl_err_set(err, SL_EINVAL, "metrics listen: no address");
  if (addr[0] == '[') {
    const char *close = strchr(addr, ']');
    if (close == NULL || close[1] != ':' || (size_t)(close - addr - 1) >= sizeof(host))
      return sl_err_set(err, SL_EINVAL, "metrics listen %s: want [v6]:port", addr);
    memcpy(host, addr + 1, (size_t)(close - addr - 1));
    host[close - addr - 1] = '\0';
    port = close + 2;
  } else {
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host) ||
        memchr(addr, ':', (size_t)(colon - addr)) != NULL)
      return sl_err_set(err, SL_EINVAL, "metrics listen %s: want host:port", addr);
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    port = colon + 1;
  }
  char *end;
  long p = strtol(port, &end, 10);
  if (*port == '\0' || *end != '\0' || p < 0 || p > 65535)
    return sl_err_set(err, SL_EINVAL, "metrics listen %s: bad port", addr);
  struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
  int rc = getaddrinfo(host[0] != '\0' ? host : "0.0.0.0", port, &hints, out);
  if (rc != 0)
    return sl_err_set(err, SL_EINVAL, "metrics listen %s: %s", addr, gai_strerror(rc));
  return SL_OK;
}

sl_status sl_metrics_http_start(const sl_metrics_http_opts *opts, sl_metrics_http **out,
                                sl_err *err) {
  struct addrinfo *ai;
  *out = NULL;
  if (opts == NULL) return sl_err_set(err, SL_EINVAL, "metrics listen: no options");
  if (opts->max_connections < 0 || opts->max_connections > 10000 || opts->timeout_s < 0)
    return sl_err_set(err, SL_EINVAL, "metrics listen %s: bad connection limit or timeout",
                      opts->addr ? opts->addr : "(null)");
  sl_status st = resolve(opts->addr, &ai, err);
  if (st != SL_OK) return st;
  sl_metrics_http *h = sl_xcalloc(1, sizeof(*h));
  h->reg = opts->registry != NULL ? opts->registry : sl_metrics_default();
  unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;
  if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
  uint16_t port = ntohs(ai->ai_family == AF_INET6
                            ? ((struct sockaddr_in6 *)ai->ai_addr)->sin6_port
                            : ((struct sockaddr_in *)ai->ai_addr)->sin_port);
  h->daemon = MHD_start_daemon(
      flags, port, NULL, NULL, on_request, h,
      /* first, or MHD prints its own messages about the other options */
      MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
      MHD_OPTION_CONNECTION_LIMIT,
      (unsigned)(opts->max_connections ? opts->max_connections : 16),
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(opts->timeout_s ? opts->timeout_s : 10),
      MHD_OPTION_END);
  freeaddrinfo(ai);
  if (h->daemon == NULL) {
    st = sl_err_set(err, SL_EUNAVAIL, "metrics listen %s: cannot serve: %s", opts->addr,
                    h->last_error[0] != '\0' ? h->last_error : "unknown error");
    free(h);
    return st;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
  h->port = info != NULL ? info->port : 0;
  if (h->port == 0) {
    MHD_stop_daemon(h->daemon);
    free(h);
    return sl_err_set(err, SL_EUNAVAIL, "metrics listen %s: no bound port", opts->addr);
  }
  sl_log(SL_LOG_DEBUG, "event=metrics_http_started addr=%s port=%d", opts->addr, h->port);
  *out = h;
  return SL_OK;
}

int sl_metrics_http_port(const sl_metrics_http *h) { return h->port; }

void sl_metrics_http_stop(sl_metrics_http *h) {
  if (h == NULL) return;
  MHD_stop_daemon(h->daemon);
  free(h);
}
