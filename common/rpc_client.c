/*
 * RPC client: channels, unary calls and the channel's completion thread.
 *
 * Design
 *   Blocking unary calls use a pluck queue of their own (a shared pluck
 *   queue allows only 6 concurrent pluckers), one 6-op batch, and one pluck.
 *   Async calls (async streams, and async unary calls, which are async
 *   streams of a unary method: rpc_astream.c) share the channel's
 *   next-queue, polled by one completion thread; both are made on first
 *   use. The thread polls only while tracked calls exist and otherwise
 *   waits on ch->work: gRPC's poller hands socket events of every call in
 *   the process to any thread blocked in a queue, so an idle thread parked
 *   in grpc_completion_queue_next() costs every other call extra wake-ups
 *   (rpc-bench stream_seq: ~6 context switches per message instead of ~3,
 *   and half the rate; see tools/grpc_core_baseline.c).
 *
 * Invariants
 *   1. Every async call is on ch->tracked from creation until no event of
 *      it can arrive on ch->cq, so destroy can cancel it and wait for it.
 *   2. Once ch->closing is set no async call starts, and the completion
 *      thread and queue go away only after ch->n_tracked reached 0.
 *   3. An event arrives on ch->cq only for a tracked call, so while
 *      ch->n_tracked is 0 nothing needs polling and the thread may wait.
 */
#include <arpa/inet.h>
#include <grpc/grpc_security.h>
#include <stdio.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>

#include "common/tsan.h"
#include "common/log.h"
#include "common/rpc_client_int.h"
#include "common/rpc_status.h"

/* ---- helpers shared with rpc_astream.c and rpc_client_stream.c ---- */

void sl_rpc_client_md_init(sl_rpc_client_md *md, const sl_rpc_channel *ch,
                           const sl_rpc_call_opts *opts) {
  const char *auth = opts != NULL && opts->authorization != NULL ? opts->authorization
                                                                 : ch->authorization;
  memset(md, 0, sizeof(*md));
  if (auth != NULL && auth[0] != '\0') {
    md->md[0].key = grpc_slice_from_static_string("authorization");
    md->md[0].value = grpc_slice_from_copied_string(auth);
    md->count = 1;
  }
  if (opts != NULL && opts->wait_for_ready)
    md->flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
}

void sl_rpc_client_md_release(sl_rpc_client_md *md) {
  for (size_t i = 0; i < md->count; i++) grpc_slice_unref(md->md[i].value);
  md->count = 0;
}

grpc_call *sl_rpc_client_call(sl_rpc_channel *ch, const sl_rpc_method *m,
                              grpc_completion_queue *cq, int timeout_ms) {
  grpc_slice path = grpc_slice_from_static_string(m->path);
  return grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path, NULL,
                                  sl_rpc_deadline(timeout_ms), NULL);
}

sl_status sl_rpc_client_status(const sl_rpc_method *m, grpc_status_code code,
                               const grpc_metadata_array *trailing, grpc_slice details,
                               sl_err *err) {
  sl_status st = sl_rpc_status_decode(code, trailing);
  if (st == SL_OK) return SL_OK;
  if (GRPC_SLICE_LENGTH(details) == 0)
    return sl_err_set(err, st, "%s: %s", m->path, sl_status_str(st));
  if (err != NULL) sl_rpc_slice_str(details, err->msg, sizeof(err->msg));
  return st;
}

sl_status sl_rpc_client_pack(const sl_rpc_channel *ch, const sl_rpc_method *m,
                             const ProtobufCMessageDescriptor *want,
                             const ProtobufCMessage *msg, grpc_byte_buffer **out,
                             sl_err *err) {
  if (msg == NULL || msg->descriptor != want)
    return sl_err_set(err, SL_EINVAL, "%s: request is a %s, want %s", m->path,
                      msg != NULL ? msg->descriptor->name : "null pointer", want->name);
  sl_status st = sl_rpc_buf_pack(msg, ch->max_message_bytes, out, err);
  if (st != SL_OK) sl_err_wrap(err, st, "%s", m->path);
  return st;
}

void sl_rpc_client_cq_destroy(grpc_completion_queue *cq) {
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_destroy(cq);
}

/* Turns a finished unary call into (status, response). */
static sl_status unary_result(const sl_rpc_method *m, grpc_status_code code,
                              const grpc_metadata_array *trailing, grpc_slice details,
                              grpc_byte_buffer *bb, ProtobufCMessage **resp, sl_err *err) {
  *resp = NULL;
  sl_status st = sl_rpc_client_status(m, code, trailing, details, err);
  if (st != SL_OK) return st;
  if (bb == NULL) return sl_err_set(err, SL_EINTERNAL, "%s: no response message", m->path);
  st = sl_rpc_buf_unpack(m->response, bb, NULL, resp, err);
  if (st != SL_OK) return sl_err_wrap(err, SL_EINTERNAL, "%s: bad response", m->path);
  return SL_OK;
}

/* The six ops of a unary call; outputs point into the caller's storage. */
static void unary_ops(grpc_op ops[6], sl_rpc_client_md *md, grpc_byte_buffer *send_bb,
                      grpc_metadata_array *initial, grpc_byte_buffer **recv_bb,
                      grpc_metadata_array *trailing, grpc_status_code *code,
                      grpc_slice *details) {
  memset(ops, 0, 6 * sizeof(*ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].flags = md->flags;
  ops[0].data.send_initial_metadata.count = md->count;
  ops[0].data.send_initial_metadata.metadata = md->md;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send_bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = initial;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = recv_bb;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = trailing;
  ops[5].data.recv_status_on_client.status = code;
  ops[5].data.recv_status_on_client.status_details = details;
}

static int unary_timeout(const sl_rpc_call_opts *opts) {
  return opts != NULL && opts->timeout_ms > 0 ? opts->timeout_ms
                                              : SL_RPC_UNARY_DEFAULT_TIMEOUT_MS;
}

static sl_status check_kind(const sl_rpc_method *m, sl_rpc_kind want, sl_err *err) {
  if (m == NULL || m->path == NULL)
    return sl_err_set(err, SL_EINVAL, "rpc: no method");
  if (m->kind != want)
    return sl_err_set(err, SL_EINVAL, "%s: wrong call shape for this method", m->path);
  return SL_OK;
}

/* ---- channel ---- */

static char *dup_or_null(const char *s, bool *oom) {
  if (s == NULL) return NULL;
  char *d = strdup(s);
  if (d == NULL) *oom = true;
  return d;
}

/* Whether `p` (up to `end`) is one numeric "a.b.c.d:port" or
 * "[v6]:port". */
static bool numeric_endpoint(const char *p, const char *end, bool *v6) {
  char host[64];
  const char *colon;
  *v6 = p < end && *p == '[';
  if (*v6) {
    const char *close = memchr(p, ']', (size_t)(end - p));
    if (close == NULL || close + 1 >= end || close[1] != ':') return false;
    if ((size_t)(close - p - 1) >= sizeof(host)) return false;
    memcpy(host, p + 1, (size_t)(close - p - 1));
    host[close - p - 1] = '\0';
    colon = close + 1;
  } else {
    colon = NULL;
    for (const char *q = p; q < end; q++)
      if (*q == ':') colon = q;
    if (colon == NULL || (size_t)(colon - p) >= sizeof(host)) return false;
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = '\0';
  }
  if (colon + 1 >= end) return false;
  for (const char *q = colon + 1; q < end; q++)
    if (*q < '0' || *q > '9') return false;
  unsigned char buf[16];
  return inet_pton(*v6 ? AF_INET6 : AF_INET, host, buf) == 1;
}

/* The gRPC target for ours: a comma-separated list of numeric endpoints
 * becomes gRPC's "ipv4:a:p,b:p" (or "ipv6:[a]:p,[b]:p"); anything else
 * (one host:port, a DNS name, a URI) goes as is, and gRPC's DNS resolver
 * uses every address a name has. */
static sl_status channel_target(const char *target, char **out, sl_err *err) {
  *out = NULL;
  if (strchr(target, ',') == NULL || strstr(target, ":/") != NULL ||
      strncmp(target, "ipv4:", 5) == 0 || strncmp(target, "ipv6:", 5) == 0) {
    *out = strdup(target);
    return *out != NULL ? SL_OK : sl_err_set(err, SL_ENOMEM, "rpc channel: out of memory");
  }
  int n4 = 0, n6 = 0;
  for (const char *p = target;;) {
    const char *end = strchr(p, ',');
    if (end == NULL) end = p + strlen(p);
    bool v6;
    if (!numeric_endpoint(p, end, &v6))
      return sl_err_set(err, SL_EINVAL,
                        "rpc channel %s: a list takes numeric ip:port endpoints "
                        "(for names, use one DNS name with several addresses)",
                        target);
    v6 ? n6++ : n4++;
    if (*end == '\0') break;
    p = end + 1;
  }
  if (n4 > 0 && n6 > 0)
    return sl_err_set(err, SL_EINVAL, "rpc channel %s: cannot mix IPv4 and IPv6 in one list",
                      target);
  size_t len = strlen(target) + 6;
  *out = malloc(len);
  if (*out == NULL) return sl_err_set(err, SL_ENOMEM, "rpc channel: out of memory");
  snprintf(*out, len, "%s:%s", n6 > 0 ? "ipv6" : "ipv4", target);
  return SL_OK;
}

/* Our arguments then the caller's (gRPC takes the first of a key given
 * twice). *out is heap memory; `ours` must outlive it. */
static sl_status channel_args(const sl_rpc_channel_opts *opts, size_t max_message,
                              sl_rpc_args *ours, grpc_channel_args *out, sl_err *err) {
  sl_rpc_args_init(ours, max_message, false);
  int ka = opts->keepalive_time_ms == 0 ? SL_RPC_KEEPALIVE_TIME_MS : opts->keepalive_time_ms;
  if (ka > 0) {
    if (ka < SL_RPC_MIN_PING_INTERVAL_MS) ka = SL_RPC_MIN_PING_INTERVAL_MS;
    int kt = opts->keepalive_timeout_ms > 0 ? opts->keepalive_timeout_ms
                                            : SL_RPC_KEEPALIVE_TIMEOUT_MS;
    sl_rpc_args_add_int(ours, GRPC_ARG_KEEPALIVE_TIME_MS, ka);
    sl_rpc_args_add_int(ours, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kt);
    /* A stream waiting for acks may carry no data for a while: ping anyway. */
    sl_rpc_args_add_int(ours, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    sl_rpc_args_add_int(ours, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  sl_rpc_args_add_int(ours, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, SL_RPC_MAX_RECONNECT_BACKOFF_MS);
  sl_rpc_args_add_str(ours, GRPC_ARG_LB_POLICY_NAME,
                      opts->lb_policy != NULL ? opts->lb_policy : "pick_first");
  size_t n_extra = opts->extra_args != NULL ? opts->extra_args->num_args : 0;
  out->num_args = ours->args.num_args + n_extra;
  out->args = calloc(out->num_args, sizeof(grpc_arg));
  if (out->args == NULL) return sl_err_set(err, SL_ENOMEM, "rpc channel: out of memory");
  memcpy(out->args, ours->arg, ours->args.num_args * sizeof(grpc_arg));
  if (n_extra > 0)
    memcpy(out->args + ours->args.num_args, opts->extra_args->args, n_extra * sizeof(grpc_arg));
  return SL_OK;
}

static grpc_channel_credentials *channel_creds(const sl_rpc_channel_opts *opts) {
  if (opts->tls_root_pem == NULL) return grpc_insecure_credentials_create();
  grpc_ssl_pem_key_cert_pair pair = {opts->tls_key_pem, opts->tls_cert_pem};
  return grpc_ssl_credentials_create(opts->tls_root_pem,
                                     opts->tls_cert_pem != NULL ? &pair : NULL, NULL, NULL);
}

sl_status sl_rpc_channel_create(const sl_rpc_channel_opts *opts, sl_rpc_channel **out,
                                sl_err *err) {
  *out = NULL;
  if (opts == NULL || opts->target == NULL || opts->target[0] == '\0')
    return sl_err_set(err, SL_EINVAL, "rpc channel: no target");
  if ((opts->tls_cert_pem == NULL) != (opts->tls_key_pem == NULL))
    return sl_err_set(err, SL_EINVAL, "rpc channel %s: client cert and key go together",
                      opts->target);
  if (opts->tls_cert_pem != NULL && opts->tls_root_pem == NULL)
    return sl_err_set(err, SL_EINVAL, "rpc channel %s: client cert without tls roots",
                      opts->target);
  char *grpc_target;
  sl_status st = channel_target(opts->target, &grpc_target, err);
  if (st != SL_OK) return st;
  sl_rpc_channel *ch = calloc(1, sizeof(*ch));
  bool oom = ch == NULL;
  if (ch != NULL) {
    ch->target = dup_or_null(opts->target, &oom);
    ch->authorization = dup_or_null(opts->authorization, &oom);
  }
  if (oom) {
    if (ch != NULL) {
      free(ch->target);
      free(ch->authorization);
    }
    free(ch);
    free(grpc_target);
    return sl_err_set(err, SL_ENOMEM, "rpc channel %s: out of memory", opts->target);
  }
  ch->max_message_bytes =
      opts->max_message_bytes ? opts->max_message_bytes : SL_RPC_DEFAULT_MAX_MESSAGE;
  pthread_mutex_init(&ch->lock, NULL);
  pthread_cond_init(&ch->cond, NULL);
  pthread_cond_init(&ch->work, NULL);

  sl_rpc_log_init();
  grpc_init();
  sl_rpc_args ours;
  grpc_channel_args args = {0, NULL};
  st = channel_args(opts, ch->max_message_bytes, &ours, &args, err);
  if (st != SL_OK) goto out_destroy;
  grpc_channel_credentials *creds = channel_creds(opts);
  if (creds == NULL) {
    st = sl_err_set(err, SL_EINVAL, "rpc channel %s: bad tls settings", opts->target);
    goto out_destroy;
  }
  ch->channel = grpc_channel_create(grpc_target, creds, &args);
  grpc_channel_credentials_release(creds);
  free(args.args);
  free(grpc_target);
  *out = ch;
  return SL_OK;

out_destroy:
  free(args.args);
  free(grpc_target);
  sl_rpc_channel_destroy(ch);
  return st;
}

/* Waits until there is something to poll for (invariant 3); once closing,
 * it polls on until the queue is shut down. */
static void wait_for_work(sl_rpc_channel *ch) {
  pthread_mutex_lock(&ch->lock);
  while (ch->n_tracked == 0 && !ch->closing) pthread_cond_wait(&ch->work, &ch->lock);
  pthread_mutex_unlock(&ch->lock);
}

static void *completion_main(void *arg) {
  sl_rpc_channel *ch = arg;
  for (;;) {
    wait_for_work(ch);
    grpc_event ev = grpc_completion_queue_next(ch->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    SL_TSAN_ACQUIRE(ev.tag);
    sl_rpc_tag *tag = ev.tag;
    tag->fn(tag, ev.success != 0);
  }
  return NULL;
}

sl_status sl_rpc_client_track(sl_rpc_channel *ch, sl_rpc_tracked *t, const sl_rpc_method *m,
                              int timeout_ms, sl_err *err) {
  sl_status st = SL_OK;
  pthread_mutex_lock(&ch->lock);
  if (ch->closing) {
    st = sl_err_set(err, SL_ECANCELED, "rpc channel %s: closing", ch->target);
    goto out_unlock;
  }
  if (ch->cq == NULL) {
    ch->cq = grpc_completion_queue_create_for_next(NULL);
    int rc = pthread_create(&ch->thread, NULL, completion_main, ch);
    if (rc != 0) {
      grpc_completion_queue_destroy(ch->cq);
      ch->cq = NULL;
      st = sl_err_set(err, SL_ENOMEM, "rpc channel %s: cannot start thread: %s", ch->target,
                      strerror(rc));
      goto out_unlock;
    }
    /* Named for the peer (its port, mostly) so a profile tells channels
     * apart; by us, so the name is there once the first call is. */
    size_t len = strlen(ch->target);
    char name[16];
    snprintf(name, sizeof(name), "cq %s", ch->target + (len > 12 ? len - 12 : 0));
    (void)pthread_setname_np(ch->thread, name);
  }
  /* Created under the lock so destroy never sees a listed call without a
   * grpc call to cancel. */
  t->call = sl_rpc_client_call(ch, m, ch->cq, timeout_ms);
  t->prev = NULL;
  t->next = ch->tracked;
  if (ch->tracked != NULL) ch->tracked->prev = t;
  ch->tracked = t;
  if (ch->n_tracked++ == 0) pthread_cond_signal(&ch->work);
out_unlock:
  pthread_mutex_unlock(&ch->lock);
  return st;
}

void sl_rpc_client_untrack(sl_rpc_channel *ch, sl_rpc_tracked *t) {
  pthread_mutex_lock(&ch->lock);
  if (t->prev != NULL) t->prev->next = t->next;
  else ch->tracked = t->next;
  if (t->next != NULL) t->next->prev = t->prev;
  if (--ch->n_tracked == 0) pthread_cond_broadcast(&ch->cond);
  pthread_mutex_unlock(&ch->lock);
}

void sl_rpc_channel_destroy(sl_rpc_channel *ch) {
  if (ch == NULL) return;
  pthread_mutex_lock(&ch->lock);
  ch->closing = true;
  pthread_cond_signal(&ch->work);
  for (sl_rpc_tracked *t = ch->tracked; t != NULL; t = t->next) grpc_call_cancel(t->call, NULL);
  while (ch->n_tracked > 0) pthread_cond_wait(&ch->cond, &ch->lock);
  pthread_mutex_unlock(&ch->lock);
  if (ch->cq != NULL) {
    grpc_completion_queue_shutdown(ch->cq);
    pthread_join(ch->thread, NULL);
    grpc_completion_queue_destroy(ch->cq);
  }
  if (ch->channel != NULL) grpc_channel_destroy(ch->channel);
  pthread_cond_destroy(&ch->work);
  pthread_cond_destroy(&ch->cond);
  pthread_mutex_destroy(&ch->lock);
  free(ch->target);
  free(ch->authorization);
  free(ch);
  grpc_shutdown();
}

/* ---- blocking unary ---- */

sl_status sl_rpc_unary(sl_rpc_channel *ch, const sl_rpc_method *m,
                       const ProtobufCMessage *req, ProtobufCMessage **resp,
                       const sl_rpc_call_opts *opts, sl_err *err) {
  grpc_byte_buffer *send_bb = NULL, *recv_bb = NULL;
  grpc_metadata_array initial, trailing;
  grpc_status_code code = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  sl_rpc_client_md md;
  grpc_op ops[6];
  *resp = NULL;
  sl_status st = check_kind(m, SL_RPC_UNARY, err);
  if (st == SL_OK) st = sl_rpc_client_pack(ch, m, m->request, req, &send_bb, err);
  if (st != SL_OK) return st;

  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_call *call = sl_rpc_client_call(ch, m, cq, unary_timeout(opts));
  grpc_metadata_array_init(&initial);
  grpc_metadata_array_init(&trailing);
  sl_rpc_client_md_init(&md, ch, opts);
  unary_ops(ops, &md, send_bb, &initial, &recv_bb, &trailing, &code, &details);
  SL_TSAN_RELEASE(&ops[0]);
  grpc_call_error e = grpc_call_start_batch(call, ops, 6, &ops[0], NULL);
  if (e != GRPC_CALL_OK) {
    st = sl_err_set(err, SL_EINTERNAL, "%s: cannot start call: %s", m->path,
                    grpc_call_error_to_string(e));
    goto out_unref_call;
  }
  grpc_event ev = grpc_completion_queue_pluck(cq, &ops[0], gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  SL_TSAN_ACQUIRE(&ops[0]);
  SL_ASSERT(ev.type == GRPC_OP_COMPLETE);
  st = unary_result(m, code, &trailing, details, recv_bb, resp, err);

out_unref_call:
  grpc_call_unref(call);
  sl_rpc_client_cq_destroy(cq);
  sl_rpc_client_md_release(&md);
  grpc_metadata_array_destroy(&initial);
  grpc_metadata_array_destroy(&trailing);
  grpc_slice_unref(details);
  grpc_byte_buffer_destroy(send_bb);
  if (recv_bb != NULL) grpc_byte_buffer_destroy(recv_bb);
  return st;
}

/* ---- async unary: an async stream of a unary method ---- */

struct sl_rpc_ucall {
  sl_rpc_astream *s;
  sl_rpc_unary_cb cb;
  void *arg;
  ProtobufCMessage *resp; /* taken in on_message; serial only */
};

static void ucall_on_message(sl_rpc_astream *s, const ProtobufCMessage *msg, void *arg) {
  sl_rpc_ucall *c = arg;
  if (c->resp != NULL) return; /* gRPC ends a unary call that sends two */
  sl_rpc_astream_take_message_(s);
  c->resp = (ProtobufCMessage *)msg;
}

static void ucall_on_done(sl_rpc_astream *s, sl_status st, const char *details, void *arg) {
  (void)s;
  sl_rpc_ucall *c = arg;
  ProtobufCMessage *resp = c->resp;
  c->resp = NULL;
  char msg[128];
  if (st == SL_OK && resp == NULL) {
    st = SL_EINTERNAL;
    snprintf(msg, sizeof(msg), "%s: no response message", sl_rpc_astream_method_(s)->path);
    details = msg;
  }
  if (st != SL_OK && resp != NULL) {
    protobuf_c_message_free_unpacked(resp, NULL);
    resp = NULL;
  }
  c->cb(st, st == SL_OK ? "" : details, resp, c->arg);
}

static void ucall_on_release(void *arg) { free(arg); }

sl_status sl_rpc_unary_start(sl_rpc_channel *ch, const sl_rpc_method *m,
                             const ProtobufCMessage *req, const sl_rpc_call_opts *opts,
                             sl_rpc_unary_cb cb, void *arg, sl_rpc_ucall **out, sl_err *err) {
  static const sl_rpc_astream_handler h = {
      .on_message = ucall_on_message,
      .on_done = ucall_on_done,
      .on_release = ucall_on_release,
  };
  if (out != NULL) *out = NULL;
  if (cb == NULL) return sl_err_set(err, SL_EINVAL, "rpc: async call without callback");
  sl_status st = check_kind(m, SL_RPC_UNARY, err);
  if (st != SL_OK) return st;
  sl_rpc_ucall *c = calloc(1, sizeof(*c));
  if (c == NULL) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", m->path);
  c->cb = cb;
  c->arg = arg;
  sl_rpc_call_opts o = opts != NULL ? *opts : (sl_rpc_call_opts){0};
  o.timeout_ms = unary_timeout(opts);
  st = sl_rpc_astream_open(ch, m, req, &o, &h, c, &c->s, err);
  if (st != SL_OK) {
    free(c);
    return st;
  }
  if (out != NULL) *out = c;
  else sl_rpc_astream_unref(c->s);
  return SL_OK;
}

sl_status sl_rpc_unary_async(sl_rpc_channel *ch, const sl_rpc_method *m,
                             const ProtobufCMessage *req, const sl_rpc_call_opts *opts,
                             sl_rpc_unary_cb cb, void *arg, sl_err *err) {
  return sl_rpc_unary_start(ch, m, req, opts, cb, arg, NULL, err);
}

void sl_rpc_ucall_cancel(sl_rpc_ucall *c) { sl_rpc_astream_cancel(c->s); }

void sl_rpc_ucall_unref(sl_rpc_ucall *c) {
  if (c != NULL) sl_rpc_astream_unref(c->s);
}
