/*
 * RPC client streams (server-, client- and bidi-streaming), blocking.
 *
 * Design
 *   Each stream has its own pluck queue and four fixed tags: open (initial
 *   metadata, plus the request and half-close for server streaming), send,
 *   recv and status. RECV_STATUS_ON_CLIENT is posted at open, so the final
 *   status is captured whenever it comes. One sender and one receiver
 *   thread may pluck their own tags at the same time.
 *
 * Invariants
 *   1. RECV_INITIAL_METADATA is never in the open batch (it would wait for
 *      the server's first message); the first recv batch carries it.
 *   2. A recv batch outlives a recv timeout (recv_pending) and is plucked by
 *      the next recv, so a timeout loses no message.
 *   3. A send that times out cancels the stream: the message may or may not
 *      have gone out, and a stuck peer should not be written to again.
 *   4. The status tag is plucked exactly once (status_state), by whichever
 *      thread needs the final status first; others wait on cond.
 *   5. Only the receiver waits for the status: gRPC completes
 *      RECV_STATUS_ON_CLIENT only once the receive side is drained
 *      (initial metadata and messages read). A sender whose stream ended
 *      merely polls for it.
 */
#include <grpc/support/time.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/tsan.h"
#include "common/rpc_client_int.h"

enum { STATUS_PENDING, STATUS_PLUCKING, STATUS_DONE };

struct sl_rpc_stream {
  sl_rpc_channel *ch;
  const sl_rpc_method *m;
  grpc_completion_queue *cq; /* pluck queue of this stream only */
  grpc_call *call;
  sl_rpc_client_md md;
  grpc_byte_buffer *first_bb; /* server streaming: the request */
  atomic_bool cancelled;

  /* Sender thread only (and destroy). */
  bool open_plucked;

  /* Receiver thread only (and destroy). */
  bool recv_pending, got_initial, recv_eof;
  grpc_metadata_array initial;
  grpc_byte_buffer *recv_bb;

  pthread_mutex_t lock; /* guards status_state; the status fields are
                           written before it becomes STATUS_DONE */
  pthread_cond_t cond;
  int status_state;
  grpc_metadata_array trailing;
  grpc_status_code code;
  grpc_slice details;

  char tag_open, tag_send, tag_recv, tag_status; /* addresses used as tags */
};

static grpc_event pluck_until(sl_rpc_stream *s, void *tag, gpr_timespec deadline) {
  grpc_event ev = grpc_completion_queue_pluck(s->cq, tag, deadline, NULL);
  if (ev.type == GRPC_OP_COMPLETE) SL_TSAN_ACQUIRE(tag);
  SL_ASSERT(ev.type == GRPC_OP_COMPLETE || ev.type == GRPC_QUEUE_TIMEOUT);
  return ev;
}

/* timeout_ms <= 0 waits forever. */
static grpc_event pluck(sl_rpc_stream *s, void *tag, int timeout_ms) {
  return pluck_until(s, tag, timeout_ms > 0 ? sl_rpc_deadline(timeout_ms)
                                            : gpr_inf_future(GPR_CLOCK_MONOTONIC));
}

/* The final status (invariant 4), mapped. With wait == false it only polls
 * (invariant 5) and answers SL_ECANCELED if the status is not in yet. */
static sl_status final_status(sl_rpc_stream *s, bool wait, sl_err *err) {
  pthread_mutex_lock(&s->lock);
  while (s->status_state == STATUS_PLUCKING) pthread_cond_wait(&s->cond, &s->lock);
  if (s->status_state == STATUS_PENDING) {
    s->status_state = STATUS_PLUCKING;
    pthread_mutex_unlock(&s->lock);
    grpc_event ev = pluck_until(s, &s->tag_status, wait ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                                                        : gpr_now(GPR_CLOCK_MONOTONIC));
    pthread_mutex_lock(&s->lock);
    s->status_state = ev.type == GRPC_OP_COMPLETE ? STATUS_DONE : STATUS_PENDING;
    pthread_cond_broadcast(&s->cond);
  }
  bool done = s->status_state == STATUS_DONE;
  pthread_mutex_unlock(&s->lock);
  if (!done)
    return sl_err_set(err, SL_ECANCELED, "%s: stream closed (receive to get its status)",
                      s->m->path);
  if (atomic_load(&s->cancelled) && s->code == GRPC_STATUS_CANCELLED)
    return sl_err_set(err, SL_ECANCELED, "%s: stream cancelled", s->m->path);
  return sl_rpc_client_status(s->m, s->code, &s->trailing, s->details, err);
}

static bool status_known(sl_rpc_stream *s) {
  pthread_mutex_lock(&s->lock);
  bool done = s->status_state == STATUS_DONE;
  pthread_mutex_unlock(&s->lock);
  return done;
}

static void pluck_open(sl_rpc_stream *s) {
  if (s->open_plucked) return;
  pluck(s, &s->tag_open, 0); /* done or failing fast once a send completed */
  s->open_plucked = true;
}

sl_status sl_rpc_stream_open(sl_rpc_channel *ch, const sl_rpc_method *m,
                             const ProtobufCMessage *first, const sl_rpc_call_opts *opts,
                             sl_rpc_stream **out, sl_err *err) {
  grpc_byte_buffer *first_bb = NULL;
  grpc_op ops[3];
  size_t n = 0;
  *out = NULL;
  if (m == NULL || m->path == NULL) return sl_err_set(err, SL_EINVAL, "rpc: no method");
  if (m->kind == SL_RPC_UNARY)
    return sl_err_set(err, SL_EINVAL, "%s: unary method, not a stream", m->path);
  if (m->kind == SL_RPC_SERVER_STREAMING) {
    sl_status st = sl_rpc_client_pack(ch, m, m->request, first, &first_bb, err);
    if (st != SL_OK) return st;
  } else if (first != NULL) {
    return sl_err_set(err, SL_EINVAL, "%s: send the first message with sl_rpc_stream_send",
                      m->path);
  }
  sl_rpc_stream *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    if (first_bb != NULL) grpc_byte_buffer_destroy(first_bb);
    return sl_err_set(err, SL_ENOMEM, "%s: out of memory", m->path);
  }
  s->ch = ch;
  s->m = m;
  s->first_bb = first_bb;
  atomic_init(&s->cancelled, false);
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->cond, NULL);
  s->status_state = STATUS_PENDING;
  s->code = GRPC_STATUS_UNKNOWN;
  s->details = grpc_empty_slice();
  grpc_metadata_array_init(&s->initial);
  grpc_metadata_array_init(&s->trailing);
  sl_rpc_client_md_init(&s->md, ch, opts);
  s->cq = grpc_completion_queue_create_for_pluck(NULL);
  s->call = sl_rpc_client_call(ch, m, s->cq, opts != NULL ? opts->timeout_ms : 0);

  memset(ops, 0, sizeof(ops));
  ops[n].op = GRPC_OP_SEND_INITIAL_METADATA; /* invariant 1: nothing to receive here */
  ops[n].flags = s->md.flags;
  ops[n].data.send_initial_metadata.count = s->md.count;
  ops[n++].data.send_initial_metadata.metadata = s->md.md;
  if (first_bb != NULL) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = first_bb;
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  }
  SL_TSAN_RELEASE(&s->tag_open);
  grpc_call_error e1 = grpc_call_start_batch(s->call, ops, n, &s->tag_open, NULL);
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing;
  ops[0].data.recv_status_on_client.status = &s->code;
  ops[0].data.recv_status_on_client.status_details = &s->details;
  SL_TSAN_RELEASE(&s->tag_status);
  grpc_call_error e2 = grpc_call_start_batch(s->call, ops, 1, &s->tag_status, NULL);
  /* Both take only fresh op types on a fresh call; a refusal is a bug. */
  SL_ASSERT(e1 == GRPC_CALL_OK && e2 == GRPC_CALL_OK);
  *out = s;
  return SL_OK;
}

/* A send failed: the call is over. Its status says why, if it is in. */
static sl_status send_failed(sl_rpc_stream *s, sl_err *err) {
  sl_status st = final_status(s, false, err);
  if (st == SL_OK) st = sl_err_set(err, SL_ECANCELED, "%s: stream ended by the server", s->m->path);
  return st;
}

sl_status sl_rpc_stream_send(sl_rpc_stream *s, const ProtobufCMessage *msg, int timeout_ms,
                             sl_err *err) {
  grpc_byte_buffer *bb;
  grpc_op op;
  if (s->m->kind == SL_RPC_SERVER_STREAMING)
    return sl_err_set(err, SL_EINVAL, "%s: server-streaming method takes no sends", s->m->path);
  if (atomic_load(&s->cancelled))
    return sl_err_set(err, SL_ECANCELED, "%s: stream cancelled", s->m->path);
  if (status_known(s)) return send_failed(s, err);
  sl_status st = sl_rpc_client_pack(s->ch, s->m, s->m->request, msg, &bb, err);
  if (st != SL_OK) return st;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_SEND_MESSAGE;
  op.data.send_message.send_message = bb;
  SL_TSAN_RELEASE(&s->tag_send);
  grpc_call_error e = grpc_call_start_batch(s->call, &op, 1, &s->tag_send, NULL);
  if (e != GRPC_CALL_OK) {
    /* e.g. a send after close_send, or two sender threads */
    grpc_byte_buffer_destroy(bb);
    return sl_err_set(err, SL_EPRECOND, "%s: cannot send: %s", s->m->path,
                      grpc_call_error_to_string(e));
  }
  grpc_event ev = pluck(s, &s->tag_send, timeout_ms);
  if (ev.type == GRPC_QUEUE_TIMEOUT) {
    grpc_call_cancel(s->call, NULL); /* invariant 3 */
    ev = pluck(s, &s->tag_send, 0);
    grpc_byte_buffer_destroy(bb);
    pluck_open(s);
    return sl_err_set(err, SL_ETIMEDOUT, "%s: send not taken within %d ms, stream cancelled",
                      s->m->path, timeout_ms);
  }
  grpc_byte_buffer_destroy(bb);
  pluck_open(s);
  return ev.success ? SL_OK : send_failed(s, err);
}

sl_status sl_rpc_stream_close_send(sl_rpc_stream *s, sl_err *err) {
  grpc_op op;
  if (s->m->kind == SL_RPC_SERVER_STREAMING) return SL_OK; /* closed at open */
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  SL_TSAN_RELEASE(&s->tag_send);
  grpc_call_error e = grpc_call_start_batch(s->call, &op, 1, &s->tag_send, NULL);
  if (e != GRPC_CALL_OK)
    return sl_err_set(err, SL_EPRECOND, "%s: cannot half-close: %s", s->m->path,
                      grpc_call_error_to_string(e));
  grpc_event ev = pluck(s, &s->tag_send, 0);
  pluck_open(s);
  if (ev.success) return SL_OK;
  /* OK if the server had already ended the stream well. */
  return final_status(s, false, err);
}

sl_status sl_rpc_stream_recv(sl_rpc_stream *s, ProtobufCMessage **msg, int timeout_ms,
                             sl_err *err) {
  grpc_op ops[2];
  size_t n = 0;
  *msg = NULL;
  if (s->recv_eof) return final_status(s, true, err);
  if (!s->recv_pending) {
    memset(ops, 0, sizeof(ops));
    if (!s->got_initial) {
      ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
      ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->initial;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &s->recv_bb;
    SL_TSAN_RELEASE(&s->tag_recv);
    grpc_call_error e = grpc_call_start_batch(s->call, ops, n, &s->tag_recv, NULL);
    if (e != GRPC_CALL_OK)
      return sl_err_set(err, SL_EPRECOND, "%s: cannot receive: %s", s->m->path,
                        grpc_call_error_to_string(e));
    s->recv_pending = true;
    s->got_initial = true;
  }
  grpc_event ev = pluck(s, &s->tag_recv, timeout_ms);
  if (ev.type == GRPC_QUEUE_TIMEOUT) /* invariant 2 */
    return sl_err_set(err, SL_ETIMEDOUT, "%s: no message within %d ms", s->m->path, timeout_ms);
  s->recv_pending = false;
  grpc_byte_buffer *bb = s->recv_bb;
  s->recv_bb = NULL;
  if (bb == NULL) {
    s->recv_eof = true;
    return final_status(s, true, err);
  }
  sl_status st = sl_rpc_buf_unpack(s->m->response, bb, NULL, msg, err);
  grpc_byte_buffer_destroy(bb);
  if (st != SL_OK) {
    grpc_call_cancel(s->call, NULL); /* the server speaks another protocol */
    return sl_err_wrap(err, SL_EINTERNAL, "%s: bad response", s->m->path);
  }
  return SL_OK;
}

void sl_rpc_stream_cancel(sl_rpc_stream *s) {
  atomic_store(&s->cancelled, true);
  grpc_call_cancel(s->call, NULL);
}

void sl_rpc_stream_destroy(sl_rpc_stream *s) {
  if (s == NULL) return;
  if (!status_known(s)) grpc_call_cancel(s->call, NULL);
  if (s->recv_pending) {
    pluck(s, &s->tag_recv, 0);
    if (s->recv_bb != NULL) grpc_byte_buffer_destroy(s->recv_bb);
  }
  pluck_open(s);
  final_status(s, true, NULL); /* cancelled above unless already known */
  grpc_call_unref(s->call);
  sl_rpc_client_cq_destroy(s->cq);
  if (s->first_bb != NULL) grpc_byte_buffer_destroy(s->first_bb);
  sl_rpc_client_md_release(&s->md);
  grpc_metadata_array_destroy(&s->initial);
  grpc_metadata_array_destroy(&s->trailing);
  grpc_slice_unref(s->details);
  pthread_cond_destroy(&s->cond);
  pthread_mutex_destroy(&s->lock);
  free(s);
}
