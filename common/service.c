#include "common/service.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc.h"
#include "common/metrics_http.h"

bool sl_service_configure(const char *svc, const sl_conf_entry *table, size_t n,
                          void *cfg, const sl_service_opts *opts, int argc,
                          char **argv, int *exit_code) {
  sl_err err = SL_ERR_INIT;
  sl_log_set_service(svc);
  sl_status st = sl_conf_parse(table, n, cfg, argv[0], argc, argv, &err);
  if (st == SL_ECANCELED) {
    *exit_code = 0;
    return false;
  }
  if (st != SL_OK) {
    fprintf(stderr, "%s: %s\n", argv[0], sl_err_msg(&err, st));
    *exit_code = 2;
    return false;
  }
  sl_log_level level;
  if (sl_log_parse_level(opts->log_level, &level) != SL_OK) {
    fprintf(stderr, "%s: log_level: unknown level '%s'\n", argv[0],
            opts->log_level);
    sl_conf_release(table, n, cfg);
    *exit_code = 2;
    return false;
  }
  sl_log_set_level(level);
  return true;
}

sl_status sl_service_read_file(const char *path, char **out, sl_err *err) {
  sl_status st = SL_OK;
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return sl_err_set(err, SL_EINVAL, "%s: %s", path, strerror(errno));
  sl_buf b = SL_BUF_INIT;
  char chunk[4096];
  size_t got;
  while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) sl_buf_append(&b, chunk, got);
  *out = NULL;
  if (ferror(f))
    st = sl_err_set(err, SL_EIO, "%s: read failed", path);
  else
    *out = sl_buf_detach_str(&b);
  sl_buf_release(&b);
  fclose(f);
  return st;
}

/* "Bearer <token>" from the token file, or NULL when none is set. */
static sl_status read_token(const sl_service_opts *opts, char **out, sl_err *err) {
  *out = NULL;
  if (opts->auth_token_file == NULL || opts->auth_token_file[0] == '\0') return SL_OK;
  char *tok = NULL;
  size_t len = 0;
  sl_status st = sl_auth_read_file(opts->auth_token_file, true, &tok, &len, err);
  if (st != SL_OK) return st;
  if (len == 0) {
    free(tok);
    return sl_err_set(err, SL_EINVAL, "auth_token_file %s: empty", opts->auth_token_file);
  }
  *out = sl_xmalloc(len + sizeof("Bearer "));
  snprintf(*out, len + sizeof("Bearer "), "Bearer %s", tok);
  free(tok);
  return SL_OK;
}

sl_status sl_service_peer_tls_read(const sl_service_opts *opts, const char *ca_file,
                                   sl_service_peer_tls *out, sl_err *err) {
  *out = (sl_service_peer_tls){NULL, NULL, NULL, NULL};
  sl_status st = read_token(opts, &out->authorization, err);
  if (st != SL_OK || ca_file == NULL || ca_file[0] == '\0') return st;
  st = sl_service_read_file(ca_file, &out->ca, err);
  if (st == SL_OK && opts->tls_cert[0] != '\0' && opts->tls_key[0] != '\0') {
    st = sl_service_read_file(opts->tls_cert, &out->cert, err);
    if (st == SL_OK) st = sl_service_read_file(opts->tls_key, &out->key, err);
  }
  if (st != SL_OK) sl_service_peer_tls_release(out);
  return st;
}

void sl_service_peer_tls_release(sl_service_peer_tls *t) {
  free(t->ca);
  free(t->cert);
  free(t->key);
  free(t->authorization);
  *t = (sl_service_peer_tls){NULL, NULL, NULL, NULL};
}

sl_rpc_channel_opts sl_service_peer_channel(const sl_service_peer_tls *t) {
  sl_rpc_channel_opts o = {.target = NULL};
  o.tls_root_pem = t->ca;
  o.tls_cert_pem = t->cert;
  o.tls_key_pem = t->key;
  o.authorization = t->authorization;
  return o;
}

sl_status sl_service_auth_create(const sl_service_opts *opts, sl_auth **out, sl_err *err) {
  *out = NULL;
  bool secret = opts->auth_secret_file != NULL && opts->auth_secret_file[0] != '\0';
  bool pub = opts->auth_public_key_file != NULL && opts->auth_public_key_file[0] != '\0';
  if (!secret && !pub) return SL_OK;
  sl_auth_opts ao = {.secret_file = secret ? opts->auth_secret_file : NULL,
                     .public_key_file = pub ? opts->auth_public_key_file : NULL,
                     .superusers = opts->auth_superusers};
  sl_status st = sl_auth_create(&ao, out, err);
  if (st == SL_OK)
    sl_log(SL_LOG_INFO, "event=auth_on hs256=%s public_key=%s superusers=\"%s\"",
           secret ? "yes" : "no", pub ? "yes" : "no",
           opts->auth_superusers ? opts->auth_superusers : "");
  return st;
}

sl_status sl_service_server_create(const sl_service_opts *opts, const sl_auth *auth,
                                   bool superuser_only, sl_rpc_server **out, sl_err *err) {
  char *cert = NULL, *key = NULL, *ca = NULL;
  sl_status st = SL_OK;
  if (opts->tls_cert[0] != '\0') {
    if (opts->tls_key[0] == '\0')
      return sl_err_set(err, SL_EINVAL, "tls_cert is set but tls_key is not");
    if ((st = sl_service_read_file(opts->tls_cert, &cert, err)) != SL_OK)
      goto out;
    if ((st = sl_service_read_file(opts->tls_key, &key, err)) != SL_OK) goto out;
    if (opts->tls_client_ca[0] != '\0' &&
        (st = sl_service_read_file(opts->tls_client_ca, &ca, err)) != SL_OK)
      goto out;
  }
  sl_rpc_server_opts so = {
      .addr = opts->listen,
      .n_threads = (int)opts->threads,
      .max_message_bytes = (size_t)opts->max_message_bytes,
      .tls_cert_pem = cert,
      .tls_key_pem = key,
      .tls_client_ca_pem = ca,
      .auth = auth,
      .superuser_only = superuser_only,
  };
  st = sl_rpc_server_create(&so, out, err);
out:
  free(cert);
  free(key);
  free(ca);
  return st;
}

static void fill_set(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGINT);
}

void sl_service_block_signals(void) {
  sigset_t set;
  fill_set(&set);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  /* A peer closing a socket must give EPIPE, not kill the process. */
  signal(SIGPIPE, SIG_IGN);
}

int sl_service_wait(void) {
  sigset_t set;
  fill_set(&set);
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

/* ---- the whole process ---- */

/* Serves sl_metrics_default() on opts->metrics_listen, if set. */
static sl_status start_metrics(const sl_service_opts *opts, sl_metrics_http **out,
                               sl_err *err) {
  *out = NULL;
  if (opts->metrics_listen == NULL || opts->metrics_listen[0] == '\0') return SL_OK;
  sl_status st = sl_metrics_register_process(sl_metrics_default(), err);
  if (st != SL_OK) return st;
  sl_metrics_http_opts mo = {.addr = opts->metrics_listen};
  st = sl_metrics_http_start(&mo, out, err);
  if (st != SL_OK) return st;
  sl_log_always(SL_LOG_INFO, "event=metrics_ready listen=%s port=%d", opts->metrics_listen,
         sl_metrics_http_port(*out));
  return SL_OK;
}

int sl_service_main(const sl_service_def *def, int argc, char **argv) {
  int code = 0;
  sl_err err = SL_ERR_INIT;
  sl_rpc_server *srv = NULL;
  sl_metrics_http *metrics = NULL;
  sl_auth *auth = NULL;
  void *state = NULL;
  if (!sl_service_configure(def->name, def->table, def->n_table, def->cfg, def->opts,
                            argc, argv, &code))
    return code;
  sl_service_block_signals(); /* before any thread, the metrics one too */
  sl_status st = start_metrics(def->opts, &metrics, &err);
  if (st != SL_OK) goto out_release;
  st = sl_service_auth_create(def->opts, &auth, &err);
  if (st != SL_OK) goto out_metrics;
  st = sl_service_server_create(def->opts, auth, def->superuser_only, &srv, &err);
  if (st != SL_OK) goto out_server;
  st = def->start(def->cfg, srv, &state, &err);
  if (st != SL_OK) goto out_server;
  st = sl_rpc_server_start(srv, &err);
  if (st != SL_OK) goto out_stop;
  int port = sl_rpc_server_port(srv);
  if (def->serving != NULL && (st = def->serving(state, port, &err)) != SL_OK)
    goto out_stop;
  sl_log_always(SL_LOG_INFO, "event=ready listen=%s port=%d", def->opts->listen, port);
  int sig = sl_service_wait();
  sl_log(SL_LOG_INFO, "event=stopping signal=%d", sig);
  if (def->quiesce != NULL) def->quiesce(state);
out_stop:
  sl_rpc_server_destroy(srv);
  srv = NULL;
  if (def->stop != NULL) def->stop(state);
out_server:
  sl_rpc_server_destroy(srv);
  sl_auth_destroy(auth); /* after the server: calls check tokens with it */
out_metrics:
  /* Last, so that shutdown itself can still be scraped. */
  sl_metrics_http_stop(metrics);
  /* A clean exit joins gRPC's threads too; one still up after this long
   * means a channel or server outlived stop(), which is worth a warning
   * but not a failed exit. */
  if (sl_rpc_wait_shutdown(5000) != SL_OK)
    sl_log(SL_LOG_WARN, "event=grpc_shutdown_timeout waited_ms=5000");
out_release:
  if (st != SL_OK) {
    sl_log(SL_LOG_ERROR, "event=failed status=\"%s\" error=\"%s\"",
           sl_status_str(st), sl_err_msg(&err, st));
    code = 1;
  } else {
    sl_log(SL_LOG_INFO, "event=stopped");
  }
  sl_conf_release(def->table, def->n_table, def->cfg);
  return code;
}
