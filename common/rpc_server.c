/*
 * RPC server lifecycle: create, register, start, poll, shut down.
 *
 * Design
 *   One grpc_server with n_workers completion queues (created for next),
 *   each polled by its own worker thread. Every event tag is an sl_rpc_tag
 *   whose fn runs on that worker. Calls (rpc_server_call.c) are bound to the
 *   queue whose request they arrived on, so every callback of one call runs
 *   on one thread.
 *
 * Invariants
 *   1. While running, every queue has SL_RPC_REQUESTS_PER_METHOD requests
 *      posted for every registered method plus one generic request; a
 *      request is re-posted as soon as it yields a call.
 *   2. A request completing with ok=0 (shutdown) is freed, never re-posted
 *      (re-posting a failed request spins, then crashes in gRPC).
 *   3. Once `stopping` is set, nothing is posted any more.
 *   4. The queues are shut down only after grpc_server_destroy and after
 *      every call object was released, so no tag can arrive at a dead queue.
 *
 * States and transitions
 *   CREATED  sl_rpc_server_create(): args set, queues registered, health
 *            methods registered.  sl_rpc_server_add_method() adds more.
 *   RUNNING  sl_rpc_server_start(): port bound, requests posted, threads up.
 *   GONE     sl_rpc_server_destroy(): shutdown_and_notify, grace period,
 *            cancel_all_calls, wait notify + calls released, destroy server,
 *            shut down and drain queues, join threads, free.
 */
#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/rpc_server_int.h"
#include "common/tsan.h"

static char *dup_or_null(const char *s) { return s == NULL ? NULL : sl_xstrdup(s); }

static void free_request(sl_rpc_request *req) {
  grpc_metadata_array_destroy(&req->md);
  if (req->entry == NULL) grpc_call_details_destroy(&req->details);
  if (req->payload != NULL) grpc_byte_buffer_destroy(req->payload);
  free(req);
}

static void on_request(sl_rpc_tag *tag, bool ok);

/* Posts (or re-posts) `req` on its worker's queue; frees it instead when the
 * server is stopping or gRPC refuses (invariants 2 and 3). */
static void post_request(sl_rpc_request *req) {
  sl_rpc_server *srv = req->w->srv;
  grpc_call_error e;
  if (atomic_load(&srv->stopping)) {
    free_request(req);
    return;
  }
  req->call = NULL;
  req->payload = NULL;
  grpc_metadata_array_init(&req->md);
  SL_TSAN_RELEASE(&req->tag);
  if (req->entry == NULL) {
    grpc_call_details_init(&req->details);
    e = grpc_server_request_call(srv->server, &req->call, &req->details, &req->md,
                                 req->w->cq, req->w->cq, &req->tag);
  } else {
    bool wants_payload = req->entry->method.kind == SL_RPC_UNARY ||
                         req->entry->method.kind == SL_RPC_SERVER_STREAMING;
    e = grpc_server_request_registered_call(
        srv->server, req->entry->registered, &req->call, &req->deadline, &req->md,
        wants_payload ? &req->payload : NULL, req->w->cq, req->w->cq, &req->tag);
  }
  if (e != GRPC_CALL_OK) {
    sl_log(SL_LOG_ERROR, "event=rpc_request_failed error=%s", grpc_call_error_to_string(e));
    free_request(req);
  }
}

static void on_request(sl_rpc_tag *tag, bool ok) {
  sl_rpc_request *req = SL_RPC_CONTAINER_OF(tag, sl_rpc_request, tag);
  if (!ok) {
    free_request(req); /* invariant 2 */
    return;
  }
  sl_rpc_call_begin_(req); /* moves the call out of req */
  post_request(req);
}

static void new_request(sl_rpc_worker *w, sl_rpc_entry *entry) {
  sl_rpc_request *req = sl_xcalloc(1, sizeof(*req));
  req->tag.fn = on_request;
  req->w = w;
  req->entry = entry;
  post_request(req);
}

static void *worker_main(void *arg) {
  sl_rpc_worker *w = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    sl_rpc_tag *tag = ev.tag;
    SL_TSAN_ACQUIRE(tag);
    tag->fn(tag, ev.success != 0);
  }
  return NULL;
}

static void on_shutdown(sl_rpc_tag *tag, bool ok) {
  (void)ok;
  sl_rpc_server *srv = SL_RPC_CONTAINER_OF(tag, sl_rpc_server, shutdown_tag);
  pthread_mutex_lock(&srv->lock);
  srv->shutdown_done = true;
  pthread_cond_broadcast(&srv->cond);
  pthread_mutex_unlock(&srv->lock);
}

sl_status sl_rpc_server_create(const sl_rpc_server_opts *opts, sl_rpc_server **out,
                               sl_err *err) {
  *out = NULL;
  if (opts == NULL || opts->addr == NULL || opts->addr[0] == '\0')
    return sl_err_set(err, SL_EINVAL, "rpc server: no address");
  if (opts->n_threads < 0 || opts->n_threads > 256)
    return sl_err_set(err, SL_EINVAL, "rpc server %s: bad thread count %d", opts->addr,
                      opts->n_threads);
  if (opts->shutdown_grace_ms < 0)
    return sl_err_set(err, SL_EINVAL, "rpc server %s: negative shutdown grace", opts->addr);
  if ((opts->tls_cert_pem == NULL) != (opts->tls_key_pem == NULL))
    return sl_err_set(err, SL_EINVAL, "rpc server %s: tls needs both cert and key", opts->addr);
  if (opts->tls_client_ca_pem != NULL && opts->tls_cert_pem == NULL)
    return sl_err_set(err, SL_EINVAL, "rpc server %s: client ca set without tls", opts->addr);

  sl_rpc_server *srv = sl_xcalloc(1, sizeof(*srv));
  srv->addr = sl_xstrdup(opts->addr);
  srv->tls_cert_pem = dup_or_null(opts->tls_cert_pem);
  srv->tls_key_pem = dup_or_null(opts->tls_key_pem);
  srv->tls_client_ca_pem = dup_or_null(opts->tls_client_ca_pem);
  srv->auth = opts->auth;
  srv->superuser_only = opts->superuser_only;
  srv->max_message_bytes =
      opts->max_message_bytes ? opts->max_message_bytes : SL_RPC_DEFAULT_MAX_MESSAGE;
  srv->write_queue_max = opts->write_queue_max ? opts->write_queue_max : 64;
  srv->shutdown_grace_ms = opts->shutdown_grace_ms ? opts->shutdown_grace_ms : 500;
  srv->n_workers = opts->n_threads ? opts->n_threads : 2;
  atomic_init(&srv->stopping, false);
  pthread_mutex_init(&srv->lock, NULL);
  pthread_cond_init(&srv->cond, NULL);
  srv->shutdown_tag.fn = on_shutdown;
  sl_rpc_metrics_init_(&srv->unknown_metrics, "unknown");
  srv->write_queue_full = sl_rpc_metrics_queue_full_();

  sl_rpc_log_init();
  grpc_init();
  sl_rpc_args args;
  srv->server = grpc_server_create(sl_rpc_args_init(&args, srv->max_message_bytes, true), NULL);
  srv->workers = sl_xcalloc((size_t)srv->n_workers, sizeof(*srv->workers));
  for (int i = 0; i < srv->n_workers; i++) {
    srv->workers[i].srv = srv;
    srv->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->workers[i].cq, NULL);
  }
  sl_status st = sl_rpc_health_create_(srv, err);
  if (st != SL_OK) {
    sl_rpc_server_destroy(srv);
    return st;
  }
  *out = srv;
  return SL_OK;
}

sl_status sl_rpc_server_add_(sl_rpc_server *srv, const sl_rpc_method *method,
                             const sl_rpc_handler *h, sl_err *err) {
  if (method == NULL || method->path == NULL || method->path[0] != '/' ||
      method->request == NULL || method->response == NULL || method->kind < SL_RPC_UNARY ||
      method->kind > SL_RPC_BIDI_STREAMING)
    return sl_err_set(err, SL_EINVAL, "rpc server %s: bad method %s", srv->addr,
                      method && method->path ? method->path : "(null)");
  if (h == NULL || h->on_start == NULL)
    return sl_err_set(err, SL_EINVAL, "rpc server %s: method %s: no on_start handler",
                      srv->addr, method->path);
  if (srv->started)
    return sl_err_set(err, SL_EPRECOND, "rpc server %s: method %s: server already started",
                      srv->addr, method->path);
  for (size_t i = 0; i < srv->n_entries; i++)
    if (strcmp(srv->entries[i]->method.path, method->path) == 0)
      return sl_err_set(err, SL_EEXIST, "rpc server %s: method %s: already registered",
                        srv->addr, method->path);
  bool wants_payload = method->kind == SL_RPC_UNARY || method->kind == SL_RPC_SERVER_STREAMING;
  void *registered = grpc_server_register_method(
      srv->server, method->path, NULL,
      wants_payload ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER : GRPC_SRM_PAYLOAD_NONE, 0);
  if (registered == NULL)
    return sl_err_set(err, SL_EINVAL, "rpc server %s: method %s: grpc refused to register it",
                      srv->addr, method->path);
  sl_rpc_entry *e = sl_xcalloc(1, sizeof(*e));
  e->method = *method;
  e->handler = *h;
  e->registered = registered;
  sl_rpc_metrics_init_(&e->metrics, method->path);
  srv->entries = sl_xrealloc(srv->entries, (srv->n_entries + 1) * sizeof(*srv->entries));
  srv->entries[srv->n_entries++] = e;
  return SL_OK;
}

sl_status sl_rpc_server_add_method(sl_rpc_server *srv, const sl_rpc_method *method,
                                   const sl_rpc_handler *h, sl_err *err) {
  if (method != NULL && method->path != NULL &&
      strncmp(method->path, "/grpc.health.v1.Health/", 23) == 0)
    return sl_err_set(err, SL_EEXIST, "rpc server %s: method %s: built into every server",
                      srv->addr, method->path);
  return sl_rpc_server_add_(srv, method, h, err);
}

static grpc_server_credentials *server_creds(sl_rpc_server *srv) {
  if (srv->tls_cert_pem == NULL) return grpc_insecure_server_credentials_create();
  grpc_ssl_pem_key_cert_pair pair = {srv->tls_key_pem, srv->tls_cert_pem};
  return grpc_ssl_server_credentials_create_ex(
      srv->tls_client_ca_pem, &pair, 1,
      srv->tls_client_ca_pem != NULL ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
      NULL);
}

sl_status sl_rpc_server_start(sl_rpc_server *srv, sl_err *err) {
  if (srv->started)
    return sl_err_set(err, SL_EPRECOND, "rpc server %s: already started", srv->addr);
  grpc_server_credentials *creds = server_creds(srv);
  if (creds == NULL)
    return sl_err_set(err, SL_EINVAL, "rpc server %s: bad tls certificate or key", srv->addr);
  srv->port = grpc_server_add_http2_port(srv->server, srv->addr, creds);
  grpc_server_credentials_release(creds);
  if (srv->port == 0)
    return sl_err_set(err, SL_EUNAVAIL, "rpc server %s: cannot listen (address in use, "
                      "bad address or bad tls key pair)", srv->addr);
  grpc_server_start(srv->server);
  srv->started = true;
  sl_rpc_server_set_health(srv, "", true);
  for (int i = 0; i < srv->n_workers; i++) {
    sl_rpc_worker *w = &srv->workers[i];
    for (size_t m = 0; m < srv->n_entries; m++)
      for (int k = 0; k < SL_RPC_REQUESTS_PER_METHOD; k++) new_request(w, srv->entries[m]);
    new_request(w, NULL);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
      sl_log(SL_LOG_ERROR, "event=rpc_thread_failed addr=%s error=%s", srv->addr, strerror(rc));
      abort(); /* servers abort on resource exhaustion */
    }
    (void)pthread_setname_np(w->thread, "rpc-server"); /* named once start returns */
  }
  sl_log(SL_LOG_INFO, "event=rpc_server_started addr=%s port=%d threads=%d tls=%s", srv->addr,
         srv->port, srv->n_workers,
         srv->tls_cert_pem == NULL ? "off" : srv->tls_client_ca_pem ? "mutual" : "on");
  return SL_OK;
}

int sl_rpc_server_port(const sl_rpc_server *srv) { return srv->port; }

void *sl_rpc_server_alloc(sl_rpc_server *srv, size_t n) {
  void *p = sl_xcalloc(1, n ? n : 1);
  pthread_mutex_lock(&srv->lock);
  srv->allocs = sl_xrealloc(srv->allocs, (srv->n_allocs + 1) * sizeof(*srv->allocs));
  srv->allocs[srv->n_allocs++] = p;
  pthread_mutex_unlock(&srv->lock);
  return p;
}

void sl_rpc_server_call_released_(sl_rpc_server *srv) {
  pthread_mutex_lock(&srv->lock);
  SL_ASSERT(srv->n_calls > 0);
  if (--srv->n_calls == 0) pthread_cond_broadcast(&srv->cond);
  pthread_mutex_unlock(&srv->lock);
}

/* Waits on srv->cond until `done` holds or `until` (realtime) passes;
 * srv->lock held. Returns whether `done` held. */
static bool wait_until(sl_rpc_server *srv, bool (*done)(sl_rpc_server *), const struct timespec *until) {
  while (!done(srv)) {
    if (until == NULL) {
      pthread_cond_wait(&srv->cond, &srv->lock);
    } else if (pthread_cond_timedwait(&srv->cond, &srv->lock, until) == ETIMEDOUT) {
      return done(srv);
    }
  }
  return true;
}

static bool is_idle(sl_rpc_server *srv) { return srv->shutdown_done && srv->n_calls == 0; }

/* Unstarted server: nobody polls the queues, so wait for the notify tag here
 * (no request was ever posted, so it is the only event). */
static void shutdown_unstarted(sl_rpc_server *srv) {
  grpc_server_shutdown_and_notify(srv->server, srv->workers[0].cq, &srv->shutdown_tag);
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(srv->workers[0].cq,
                                               gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    SL_ASSERT(ev.type == GRPC_OP_COMPLETE);
    if (ev.tag == &srv->shutdown_tag) break;
  }
}

static void shutdown_started(sl_rpc_server *srv) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += srv->shutdown_grace_ms / 1000;
  until.tv_nsec += (long)(srv->shutdown_grace_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  grpc_server_shutdown_and_notify(srv->server, srv->workers[0].cq, &srv->shutdown_tag);
  sl_rpc_health_stop_(srv); /* watch streams never end by themselves */
  pthread_mutex_lock(&srv->lock);
  bool clean = wait_until(srv, is_idle, &until);
  size_t open_calls = srv->n_calls; /* read under the lock: calls end on workers */
  pthread_mutex_unlock(&srv->lock);
  if (!clean) {
    /* Open streams would block shutdown forever. */
    sl_log(SL_LOG_INFO, "event=rpc_server_cancel_calls addr=%s calls=%zu", srv->addr,
           open_calls);
    grpc_server_cancel_all_calls(srv->server);
  }
  pthread_mutex_lock(&srv->lock);
  wait_until(srv, is_idle, NULL); /* invariant 4: handlers drop their refs in on_done */
  pthread_mutex_unlock(&srv->lock);
}

void sl_rpc_server_destroy(sl_rpc_server *srv) {
  if (srv == NULL) return;
  atomic_store(&srv->stopping, true);
  if (srv->server != NULL) {
    if (srv->started)
      shutdown_started(srv);
    else
      shutdown_unstarted(srv);
    grpc_server_destroy(srv->server);
  }
  for (int i = 0; i < srv->n_workers; i++) grpc_completion_queue_shutdown(srv->workers[i].cq);
  for (int i = 0; i < srv->n_workers; i++) {
    sl_rpc_worker *w = &srv->workers[i];
    if (srv->started) {
      pthread_join(w->thread, NULL);
    } else {
      while (grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
             GRPC_QUEUE_SHUTDOWN) {
      }
    }
    grpc_completion_queue_destroy(w->cq);
  }
  if (srv->started) sl_log(SL_LOG_INFO, "event=rpc_server_stopped addr=%s", srv->addr);
  sl_rpc_health_destroy_(srv);
  for (size_t i = 0; i < srv->n_entries; i++) free(srv->entries[i]);
  for (size_t i = 0; i < srv->n_allocs; i++) free(srv->allocs[i]);
  free(srv->allocs);
  free(srv->entries);
  free(srv->workers);
  pthread_cond_destroy(&srv->cond);
  pthread_mutex_destroy(&srv->lock);
  free(srv->addr);
  free(srv->tls_cert_pem);
  free(srv->tls_key_pem);
  free(srv->tls_client_ca_pem);
  free(srv);
  grpc_shutdown();
}
