/*
 * RPC client: channels and unary calls.
 *
 * Design
 *   Blocking unary calls use a pluck queue of their own (a shared pluck
 *   queue allows only 6 concurrent pluckers), one 6-op batch, and one pluck.
 *   Async unary calls share the channel's next-queue, polled by one
 *   completion thread that runs the callbacks; both are made on first use.
 *   The thread polls only while async calls are in flight and otherwise
 *   waits on ch->work: gRPC's poller hands socket events of every call in
 *   the process to any thread blocked in a queue, so an idle thread parked
 *   in grpc_completion_queue_next() costs every other call extra wake-ups
 *   (rpc-bench stream_seq: ~6 context switches per message instead of ~3,
 *   and half the rate; see tools/grpc_core_baseline.c).
 *
 * Invariants
 *   1. Every async call is on ch->async from start until its callback has
 *      run, so destroy can cancel it and wait for it.
 *   2. Once ch->closing is set no async call starts, and the completion
 *      thread and queue go away only after ch->n_async reached 0.
 *   3. An event arrives on ch->cq only for a listed call, so while
 *      ch->n_async is 0 nothing needs polling and the thread may wait.
 */
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rpc_client_int.h"
#include "common/rpc_status.h"

/* Default deadline of a unary call without timeout_ms. */
#define UNARY_DEFAULT_TIMEOUT_MS 10000

struct sl_rpc_async {
  sl_rpc_tag tag;
  sl_rpc_async *prev, *next; /* on ch->async */
  sl_rpc_channel *ch;
  const sl_rpc_method *m;
  sl_rpc_unary_cb cb;
  void *arg;
  grpc_call *call;
  sl_rpc_client_md md;
  grpc_byte_buffer *send_bb, *recv_bb;
  grpc_metadata_array initial, trailing;
  grpc_status_code code;
  grpc_slice details;
};

/* ---- helpers shared with rpc_client_stream.c ---- */

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
  st = sl_rpc_buf_unpack(m->response, bb, resp, err);
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
  return opts != NULL && opts->timeout_ms > 0 ? opts->timeout_ms : UNARY_DEFAULT_TIMEOUT_MS;
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
  sl_rpc_channel *ch = calloc(1, sizeof(*ch));
  if (ch == NULL) return sl_err_set(err, SL_ENOMEM, "rpc channel %s: out of memory", opts->target);
  bool oom = false;
  ch->target = dup_or_null(opts->target, &oom);
  ch->authorization = dup_or_null(opts->authorization, &oom);
  if (oom) {
    free(ch->target);
    free(ch->authorization);
    free(ch);
    return sl_err_set(err, SL_ENOMEM, "rpc channel %s: out of memory", opts->target);
  }
  ch->max_message_bytes =
      opts->max_message_bytes ? opts->max_message_bytes : SL_RPC_DEFAULT_MAX_MESSAGE;
  pthread_mutex_init(&ch->lock, NULL);
  pthread_cond_init(&ch->cond, NULL);
  pthread_cond_init(&ch->work, NULL);

  sl_rpc_log_init();
  grpc_init();
  grpc_channel_credentials *creds;
  if (opts->tls_root_pem != NULL) {
    grpc_ssl_pem_key_cert_pair pair = {opts->tls_key_pem, opts->tls_cert_pem};
    creds = grpc_ssl_credentials_create(opts->tls_root_pem,
                                        opts->tls_cert_pem != NULL ? &pair : NULL, NULL, NULL);
  } else {
    creds = grpc_insecure_credentials_create();
  }
  if (creds == NULL) {
    sl_rpc_channel_destroy(ch);
    return sl_err_set(err, SL_EINVAL, "rpc channel %s: bad tls settings", opts->target);
  }
  sl_rpc_args args;
  ch->channel = grpc_channel_create(ch->target, creds,
                                    sl_rpc_args_init(&args, ch->max_message_bytes, false));
  grpc_channel_credentials_release(creds);
  *out = ch;
  return SL_OK;
}

/* Waits until there is something to poll for (invariant 3); once closing,
 * it polls on until the queue is shut down. */
static void wait_for_work(sl_rpc_channel *ch) {
  pthread_mutex_lock(&ch->lock);
  while (ch->n_async == 0 && !ch->closing) pthread_cond_wait(&ch->work, &ch->lock);
  pthread_mutex_unlock(&ch->lock);
}

static void *completion_main(void *arg) {
  sl_rpc_channel *ch = arg;
  for (;;) {
    wait_for_work(ch);
    grpc_event ev = grpc_completion_queue_next(ch->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    sl_rpc_tag *tag = ev.tag;
    tag->fn(tag, ev.success != 0);
  }
  return NULL;
}

void sl_rpc_channel_destroy(sl_rpc_channel *ch) {
  if (ch == NULL) return;
  pthread_mutex_lock(&ch->lock);
  ch->closing = true;
  pthread_cond_signal(&ch->work);
  for (sl_rpc_async *a = ch->async; a != NULL; a = a->next) grpc_call_cancel(a->call, NULL);
  while (ch->n_async > 0) pthread_cond_wait(&ch->cond, &ch->lock);
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
  grpc_call_error e = grpc_call_start_batch(call, ops, 6, &ops[0], NULL);
  if (e != GRPC_CALL_OK) {
    st = sl_err_set(err, SL_EINTERNAL, "%s: cannot start call: %s", m->path,
                    grpc_call_error_to_string(e));
    goto out_unref_call;
  }
  grpc_event ev = grpc_completion_queue_pluck(cq, &ops[0], gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
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

/* ---- async unary ---- */

static void async_free(sl_rpc_async *a) {
  if (a->call != NULL) grpc_call_unref(a->call);
  sl_rpc_client_md_release(&a->md);
  grpc_metadata_array_destroy(&a->initial);
  grpc_metadata_array_destroy(&a->trailing);
  grpc_slice_unref(a->details);
  if (a->send_bb != NULL) grpc_byte_buffer_destroy(a->send_bb);
  if (a->recv_bb != NULL) grpc_byte_buffer_destroy(a->recv_bb);
  free(a);
}

static void async_unlink(sl_rpc_async *a) {
  sl_rpc_channel *ch = a->ch;
  pthread_mutex_lock(&ch->lock);
  if (a->prev != NULL) a->prev->next = a->next;
  else ch->async = a->next;
  if (a->next != NULL) a->next->prev = a->prev;
  if (--ch->n_async == 0) pthread_cond_broadcast(&ch->cond);
  pthread_mutex_unlock(&ch->lock);
}

static void on_async_done(sl_rpc_tag *tag, bool ok) {
  (void)ok; /* the status says it all */
  sl_rpc_async *a = SL_RPC_CONTAINER_OF(tag, sl_rpc_async, tag);
  sl_err err = SL_ERR_INIT;
  ProtobufCMessage *resp;
  sl_status st = unary_result(a->m, a->code, &a->trailing, a->details, a->recv_bb, &resp, &err);
  a->cb(st, st == SL_OK ? "" : err.msg, resp, a->arg);
  /* Unlinking after the callback keeps destroy waiting for it (invariant 1);
   * destroy joins this thread before it frees the channel. */
  async_unlink(a);
  async_free(a);
}

/* Registers `a` on the channel (making the queue and thread on first use)
 * and starts its batch. Under ch->lock so that destroy never sees a listed
 * call without a grpc call to cancel. */
static sl_status async_start(sl_rpc_channel *ch, sl_rpc_async *a, int timeout_ms,
                             sl_err *err) {
  grpc_op ops[6];
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
  }
  a->call = sl_rpc_client_call(ch, a->m, ch->cq, timeout_ms);
  unary_ops(ops, &a->md, a->send_bb, &a->initial, &a->recv_bb, &a->trailing, &a->code,
            &a->details);
  grpc_call_error e = grpc_call_start_batch(a->call, ops, 6, &a->tag, NULL);
  if (e != GRPC_CALL_OK) {
    st = sl_err_set(err, SL_EINTERNAL, "%s: cannot start call: %s", a->m->path,
                    grpc_call_error_to_string(e));
    goto out_unlock;
  }
  a->next = ch->async;
  if (ch->async != NULL) ch->async->prev = a;
  ch->async = a;
  if (ch->n_async++ == 0) pthread_cond_signal(&ch->work);
out_unlock:
  pthread_mutex_unlock(&ch->lock);
  return st;
}

sl_status sl_rpc_unary_async(sl_rpc_channel *ch, const sl_rpc_method *m,
                             const ProtobufCMessage *req, const sl_rpc_call_opts *opts,
                             sl_rpc_unary_cb cb, void *arg, sl_err *err) {
  grpc_byte_buffer *send_bb;
  if (cb == NULL) return sl_err_set(err, SL_EINVAL, "rpc: async call without callback");
  sl_status st = check_kind(m, SL_RPC_UNARY, err);
  if (st == SL_OK) st = sl_rpc_client_pack(ch, m, m->request, req, &send_bb, err);
  if (st != SL_OK) return st;
  sl_rpc_async *a = calloc(1, sizeof(*a));
  if (a == NULL) {
    grpc_byte_buffer_destroy(send_bb);
    return sl_err_set(err, SL_ENOMEM, "%s: out of memory", m->path);
  }
  a->tag.fn = on_async_done;
  a->ch = ch;
  a->m = m;
  a->cb = cb;
  a->arg = arg;
  a->send_bb = send_bb;
  a->code = GRPC_STATUS_UNKNOWN;
  a->details = grpc_empty_slice();
  grpc_metadata_array_init(&a->initial);
  grpc_metadata_array_init(&a->trailing);
  sl_rpc_client_md_init(&a->md, ch, opts);
  st = async_start(ch, a, unary_timeout(opts), err);
  if (st != SL_OK) async_free(a);
  return st;
}
