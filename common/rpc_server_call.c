/*
 * One server call: its batches, bounded write queue, reads and lifetime.
 *
 * Design
 *   A call is created on a worker thread from a completed request and stays
 *   bound to that worker's completion queue, so every completion (and thus
 *   every handler callback) runs on that one thread. Sends, finish, ref and
 *   resume_reads may come from any thread; they take call->lock and may
 *   start batches, whose completions come back to the worker.
 *
 * Invariants
 *   1. At most one send batch (a message, or the final message+status) is
 *      in flight: gRPC refuses a second SEND_MESSAGE.
 *   2. q_len (messages accepted and not yet written, including the one in
 *      flight) never exceeds write_queue_max: sl_rpc_call_send() answers
 *      SL_EBUSY instead, and on_writable runs once q_len drops to half.
 *   3. The final batch starts only after every queued message was written,
 *      and only once.
 *   4. References: one held by the runtime from the start until on_done has
 *      run (it also covers the RECV_CLOSE_ON_SERVER batch), one per batch in
 *      flight, one per sl_rpc_call_ref(). The last unref releases the grpc
 *      call, the request and the arena.
 *   5. Handler callbacks run without call->lock held, and none runs after
 *      on_done; on_done runs only if on_start ran.
 *   6. Metrics (rpc_server_metrics.c): every call counts as started and
 *      open in new_call() and ends exactly once (status_counted): when its
 *      status is handed to gRPC, so a client that has its answer sees it
 *      counted, or else in on_close(), as DEADLINE_EXCEEDED or CANCELLED.
 *      A message counts as sent when handed to gRPC, as received when
 *      gRPC hands it to us.
 *
 * States (by flags under call->lock)
 *   OPEN      after sl_rpc_call_begin_(): close batch posted, on_start ran.
 *   FINISHING `finished`: sl_rpc_call_finish() called, queue draining.
 *   DONE      `done`: RECV_CLOSE_ON_SERVER completed; on_done runs; sends
 *             and finish answer SL_ECANCELED.
 */
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/rpc_server_int.h"
#include "common/tsan.h"
#include "common/rpc_status.h"

typedef struct arena_chunk {
  struct arena_chunk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
} arena_chunk;

typedef struct queued_msg {
  struct queued_msg *next;
  grpc_byte_buffer *bb;
} queued_msg;

struct sl_rpc_call {
  sl_rpc_server *srv;
  const sl_rpc_entry *entry; /* NULL: unknown method, answered UNIMPLEMENTED */
  const sl_rpc_method_metrics *metrics; /* entry's, or the server's "unknown" */
  uint64_t t0_ns;            /* sl_metrics_now_ns() at begin */
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;    /* client metadata; slices owned by `call` */
  ProtobufCMessage *req;     /* decoded request (unary, server streaming) */
  void *user;
  void (*user_destroy)(void *user); /* runs at the last unref */
  atomic_int refs;
  bool started;              /* on_start ran, so on_done must run */
  const char *role;          /* token's role (arena); NULL when auth is off */

  pthread_mutex_t lock;      /* guards everything below */
  queued_msg *q_head, *q_tail; /* accepted, not yet handed to gRPC */
  size_t q_len;              /* invariant 2: queued + in flight */
  bool sending;              /* a send batch is in flight (invariant 1) */
  bool sending_final;        /* ...and it is the final batch */
  bool md_sent;              /* initial metadata went out with a batch */
  bool want_writable;        /* a send got SL_EBUSY: call on_writable */
  bool finished;             /* sl_rpc_call_finish() was called */
  bool done;                 /* RECV_CLOSE_ON_SERVER completed */
  bool status_counted;       /* the end is in the metrics (invariant 6) */
  bool reading, paused, read_eof; /* client/bidi reads */
  grpc_byte_buffer *inflight; /* message of the send batch in flight */
  grpc_byte_buffer *final_msg;
  grpc_status_code final_code;
  const grpc_metadata *final_trailer; /* sl-status entry or NULL (rpc_status.h) */
  grpc_slice final_details;
  grpc_byte_buffer *recv_bb;
  sl_buf scratch;            /* gathers multi-slice requests (rpc_int.h);
                                on_recv only, one read at a time */
  int cancelled;             /* RECV_CLOSE_ON_SERVER output */
  arena_chunk *arena;

  sl_rpc_tag close_tag, send_tag, recv_tag;
};

/* ---- references and release ---- */

static void release(sl_rpc_call *c) {
  sl_rpc_server *srv = c->srv;
  SL_ASSERT(!c->sending && !c->reading);
  /* First: the handler's state may point into the arena or the request. */
  if (c->user_destroy != NULL) c->user_destroy(c->user);
  while (c->q_head != NULL) {
    queued_msg *m = c->q_head;
    c->q_head = m->next;
    grpc_byte_buffer_destroy(m->bb);
    free(m);
  }
  if (c->final_msg != NULL) grpc_byte_buffer_destroy(c->final_msg);
  grpc_slice_unref(c->final_details);
  if (c->req != NULL) protobuf_c_message_free_unpacked(c->req, NULL);
  grpc_metadata_array_destroy(&c->md); /* before the call: it owns the slices */
  grpc_call_unref(c->call);
  sl_buf_release(&c->scratch);
  while (c->arena != NULL) {
    arena_chunk *a = c->arena;
    c->arena = a->next;
    free(a);
  }
  pthread_mutex_destroy(&c->lock);
  free(c);
  sl_rpc_server_call_released_(srv); /* last: srv may go away after this */
}

void sl_rpc_call_ref(sl_rpc_call *c) {
  int old = atomic_fetch_add(&c->refs, 1);
  SL_ASSERT(old > 0);
}

void sl_rpc_call_unref(sl_rpc_call *c) {
  int old = atomic_fetch_sub(&c->refs, 1);
  SL_ASSERT(old > 0);
  if (old == 1) release(c);
}

/* ---- sending ---- */

static void start_batch(sl_rpc_call *c, const grpc_op *ops, size_t n, sl_rpc_tag *tag) {
  sl_rpc_call_ref(c);
  SL_TSAN_RELEASE(tag);
  grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
  /* Our own serialisation makes a refusal a bug, not a peer's doing. */
  if (e != GRPC_CALL_OK) {
    sl_log(SL_LOG_ERROR, "event=rpc_batch_refused error=%s", grpc_call_error_to_string(e));
    SL_ASSERT(e == GRPC_CALL_OK);
  }
}

/* Counts the call's end once (invariant 6). call->lock held. */
static void count_end_locked(sl_rpc_call *c, int grpc_code) {
  if (c->status_counted) return;
  c->status_counted = true;
  sl_rpc_metrics_ended_(c->metrics, grpc_code, c->t0_ns);
}

/* Starts the next send batch if none is in flight. call->lock held. */
static void pump_locked(sl_rpc_call *c) {
  grpc_op ops[3];
  size_t n = 0;
  if (c->sending || c->done) return;
  if (c->q_head == NULL && !c->finished) return;
  memset(ops, 0, sizeof(ops));
  if (!c->md_sent) {
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    c->md_sent = true;
  }
  if (c->q_head != NULL) {
    queued_msg *m = c->q_head;
    c->q_head = m->next;
    if (c->q_head == NULL) c->q_tail = NULL;
    c->inflight = m->bb;
    free(m);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->inflight;
    c->sending_final = false;
    sl_metrics_counter_inc(c->metrics->msg_sent);
  } else {
    /* invariant 3: queue empty and finish called */
    if (c->final_msg != NULL) {
      c->inflight = c->final_msg;
      c->final_msg = NULL;
      ops[n].op = GRPC_OP_SEND_MESSAGE;
      ops[n++].data.send_message.send_message = c->inflight;
      sl_metrics_counter_inc(c->metrics->msg_sent);
    }
    count_end_locked(c, c->final_code); /* before gRPC can deliver it */
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->final_code;
    ops[n].data.send_status_from_server.trailing_metadata_count = c->final_trailer ? 1 : 0;
    ops[n].data.send_status_from_server.trailing_metadata = (grpc_metadata *)c->final_trailer;
    ops[n++].data.send_status_from_server.status_details = &c->final_details;
    c->sending_final = true;
  }
  c->sending = true;
  start_batch(c, ops, n, &c->send_tag);
}

static void on_send(sl_rpc_tag *tag, bool ok) {
  sl_rpc_call *c = SL_RPC_CONTAINER_OF(tag, sl_rpc_call, send_tag);
  bool notify = false;
  pthread_mutex_lock(&c->lock);
  c->sending = false;
  if (c->inflight != NULL) grpc_byte_buffer_destroy(c->inflight);
  c->inflight = NULL;
  if (!c->sending_final) c->q_len--;
  if (ok) {
    pump_locked(c);
  }
  /* A failed send means the call is dead; RECV_CLOSE will tell us. */
  if (ok && c->want_writable && !c->done && !c->finished &&
      c->q_len <= c->srv->write_queue_max / 2) {
    c->want_writable = false;
    notify = true;
  }
  pthread_mutex_unlock(&c->lock);
  if (notify && c->entry->handler.on_writable != NULL)
    c->entry->handler.on_writable(c, c->entry->handler.ctx);
  sl_rpc_call_unref(c);
}

static sl_status check_msg(const sl_rpc_call *c, const ProtobufCMessage *msg) {
  if (c->entry == NULL) return SL_EINVAL;
  if (msg == NULL || msg->descriptor != c->entry->method.response) {
    sl_log(SL_LOG_ERROR, "event=rpc_bad_response method=%s type=%s", c->entry->method.path,
           msg ? msg->descriptor->name : "(null)");
    return SL_EINVAL;
  }
  return SL_OK;
}

sl_status sl_rpc_call_send(sl_rpc_call *c, const ProtobufCMessage *msg) {
  grpc_byte_buffer *bb;
  sl_status st = check_msg(c, msg);
  if (st != SL_OK) return st;
  /* Cheap check first, so a full queue costs no packing. */
  pthread_mutex_lock(&c->lock);
  st = c->done || c->finished ? SL_ECANCELED
       : c->q_len >= c->srv->write_queue_max ? SL_EBUSY : SL_OK;
  if (st == SL_EBUSY) c->want_writable = true;
  pthread_mutex_unlock(&c->lock);
  if (st == SL_EBUSY) sl_metrics_counter_inc(c->srv->write_queue_full);
  if (st != SL_OK) return st;

  sl_rpc_buf_pack(msg, 0, &bb, NULL); /* no limit here: gRPC enforces the cap */
  queued_msg *m = sl_xmalloc(sizeof(*m));
  m->next = NULL;
  m->bb = bb;
  pthread_mutex_lock(&c->lock);
  st = c->done || c->finished ? SL_ECANCELED
       : c->q_len >= c->srv->write_queue_max ? SL_EBUSY : SL_OK;
  if (st == SL_OK) {
    if (c->q_tail != NULL)
      c->q_tail->next = m;
    else
      c->q_head = m;
    c->q_tail = m;
    c->q_len++;
    pump_locked(c);
  } else if (st == SL_EBUSY) {
    c->want_writable = true;
  }
  pthread_mutex_unlock(&c->lock);
  if (st != SL_OK) {
    grpc_byte_buffer_destroy(bb);
    free(m);
  }
  if (st == SL_EBUSY) sl_metrics_counter_inc(c->srv->write_queue_full);
  return st;
}

sl_status sl_rpc_call_finish(sl_rpc_call *c, sl_status st, const char *message,
                             const ProtobufCMessage *last) {
  grpc_byte_buffer *bb = NULL;
  if (last != NULL) {
    if (check_msg(c, last) != SL_OK) {
      /* A handler bug; the client still gets an answer. */
      st = SL_EINTERNAL;
      message = "server produced a response of the wrong type";
    } else {
      sl_rpc_buf_pack(last, 0, &bb, NULL);
    }
  }
  pthread_mutex_lock(&c->lock);
  if (c->done || c->finished) {
    pthread_mutex_unlock(&c->lock);
    if (bb != NULL) grpc_byte_buffer_destroy(bb);
    return SL_ECANCELED;
  }
  c->finished = true;
  c->final_msg = bb;
  c->final_code = (grpc_status_code)sl_status_to_grpc(st);
  c->final_trailer = sl_rpc_status_encode(st);
  c->final_details = message != NULL ? grpc_slice_from_copied_string(message)
                     : st != SL_OK   ? grpc_slice_from_copied_string(sl_status_str(st))
                                     : grpc_empty_slice();
  pump_locked(c);
  pthread_mutex_unlock(&c->lock);
  return SL_OK;
}

size_t sl_rpc_call_write_queue_len(sl_rpc_call *c) {
  pthread_mutex_lock(&c->lock);
  size_t n = c->q_len;
  pthread_mutex_unlock(&c->lock);
  return n;
}

/* ---- reading (client and bidi streaming) ---- */

static void post_read_locked(sl_rpc_call *c) {
  if (c->reading || c->paused || c->read_eof || c->done || c->finished) return;
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->recv_bb;
  c->reading = true;
  start_batch(c, &op, 1, &c->recv_tag);
}

static void on_recv(sl_rpc_tag *tag, bool ok) {
  sl_rpc_call *c = SL_RPC_CONTAINER_OF(tag, sl_rpc_call, recv_tag);
  const sl_rpc_handler *h = &c->entry->handler;
  pthread_mutex_lock(&c->lock);
  grpc_byte_buffer *bb = c->recv_bb;
  c->recv_bb = NULL;
  c->reading = false;
  bool skip = !ok || c->done;
  if (ok && bb == NULL) c->read_eof = true; /* the client half-closed */
  pthread_mutex_unlock(&c->lock);
  if (bb != NULL) sl_metrics_counter_inc(c->metrics->msg_received);

  if (!skip && bb == NULL) {
    if (h->on_message != NULL) h->on_message(c, NULL, h->ctx);
  } else if (!skip) {
    ProtobufCMessage *msg;
    sl_err err = SL_ERR_INIT;
    if (sl_rpc_buf_unpack(c->entry->method.request, bb, &c->scratch, &msg, &err) != SL_OK) {
      sl_log(SL_LOG_WARN, "event=rpc_bad_request method=%s error=\"%s\"",
             c->entry->method.path, err.msg);
      sl_rpc_call_finish(c, SL_EINVAL, err.msg, NULL);
    } else {
      if (h->on_message != NULL) h->on_message(c, msg, h->ctx);
      protobuf_c_message_free_unpacked(msg, NULL);
    }
  }
  if (bb != NULL) grpc_byte_buffer_destroy(bb);
  pthread_mutex_lock(&c->lock);
  post_read_locked(c);
  pthread_mutex_unlock(&c->lock);
  sl_rpc_call_unref(c);
}

void sl_rpc_call_pause_reads(sl_rpc_call *c) {
  pthread_mutex_lock(&c->lock);
  c->paused = true;
  pthread_mutex_unlock(&c->lock);
}

void sl_rpc_call_resume_reads(sl_rpc_call *c) {
  pthread_mutex_lock(&c->lock);
  c->paused = false;
  if (c->started) post_read_locked(c); /* begin posts the first read itself */
  pthread_mutex_unlock(&c->lock);
}

/* ---- start and end ---- */

static void on_close(sl_rpc_tag *tag, bool ok) {
  (void)ok;
  sl_rpc_call *c = SL_RPC_CONTAINER_OF(tag, sl_rpc_call, close_tag);
  pthread_mutex_lock(&c->lock);
  c->done = true;
  /* Nothing queued can go out any more. */
  while (c->q_head != NULL) {
    queued_msg *m = c->q_head;
    c->q_head = m->next;
    grpc_byte_buffer_destroy(m->bb);
    free(m);
    c->q_len--;
  }
  c->q_tail = NULL;
  bool cancelled = c->cancelled != 0 || !c->finished;
  /* No status went out (invariant 6): the deadline or the peer ended it. */
  count_end_locked(c, sl_rpc_call_time_left_ms(c) == 0 ? GRPC_STATUS_DEADLINE_EXCEEDED
                                                       : GRPC_STATUS_CANCELLED);
  pthread_mutex_unlock(&c->lock);
  sl_metrics_gauge_add(c->metrics->open, -1);
  if (c->started && c->entry->handler.on_done != NULL)
    c->entry->handler.on_done(c, cancelled, c->entry->handler.ctx);
  sl_rpc_call_unref(c); /* the runtime's reference (invariant 4) */
}

static sl_rpc_call *new_call(sl_rpc_request *req) {
  sl_rpc_call *c = sl_xcalloc(1, sizeof(*c));
  c->srv = req->w->srv;
  c->entry = req->entry;
  c->metrics = req->entry != NULL ? &req->entry->metrics : &c->srv->unknown_metrics;
  c->t0_ns = sl_metrics_now_ns();
  c->call = req->call;
  c->deadline = req->entry != NULL ? req->deadline : req->details.deadline;
  c->md = req->md; /* moved; post_request re-inits req->md */
  c->final_details = grpc_empty_slice();
  atomic_init(&c->refs, 1);
  pthread_mutex_init(&c->lock, NULL);
  c->close_tag.fn = on_close;
  c->send_tag.fn = on_send;
  c->recv_tag.fn = on_recv;
  req->call = NULL;
  memset(&req->md, 0, sizeof(req->md));
  pthread_mutex_lock(&c->srv->lock);
  c->srv->n_calls++;
  pthread_mutex_unlock(&c->srv->lock);
  sl_metrics_counter_inc(c->metrics->started);
  sl_metrics_gauge_add(c->metrics->open, 1);

  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->cancelled;
  /* Covered by the runtime's reference, not a batch one. */
  SL_TSAN_RELEASE(&c->close_tag);
  grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL);
  SL_ASSERT(e == GRPC_CALL_OK);
  return c;
}

#define HEALTH_PREFIX "/grpc.health.v1.Health/"

/* Before anything is decoded, so a caller without a token costs us no
 * unpacking and reaches no handler. */
static bool authenticate(sl_rpc_call *c, const sl_rpc_method *m) {
  const sl_auth *auth = c->srv->auth;
  if (auth == NULL || strncmp(m->path, HEALTH_PREFIX, strlen(HEALTH_PREFIX)) == 0)
    return true;
  char role[SL_AUTH_ROLE_MAX];
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_auth_verify(auth, sl_rpc_call_metadata(c, "authorization"),
                                sl_clock_wall_ms() / 1000, role, &err);
  if (st == SL_OK && c->srv->superuser_only && !sl_auth_is_superuser(auth, role))
    st = sl_err_set(&err, SL_EPERM, "role %s: %s needs a super-user role", role, m->path);
  if (st != SL_OK) {
    sl_log(SL_LOG_WARN, "event=rpc_auth_refused method=%s peer=%s error=\"%s\"", m->path,
           sl_rpc_call_peer(c), err.msg);
    sl_rpc_call_finish(c, st, err.msg, NULL);
    return false;
  }
  size_t n = strlen(role) + 1;
  char *copy = sl_rpc_call_alloc(c, n);
  memcpy(copy, role, n);
  c->role = copy;
  return true;
}

void sl_rpc_call_begin_(sl_rpc_request *req) {
  sl_rpc_call *c = new_call(req);
  if (req->entry == NULL) {
    char path[200];
    sl_rpc_slice_str(req->details.method, path, sizeof(path));
    grpc_call_details_destroy(&req->details);
    grpc_call_details_init(&req->details); /* post_request or free_request next */
    sl_log(SL_LOG_DEBUG, "event=rpc_unknown_method method=%s", path);
    char msg[256];
    snprintf(msg, sizeof(msg), "unknown method %s", path);
    sl_rpc_call_finish(c, SL_EUNIMPL, msg, NULL);
    return;
  }
  const sl_rpc_method *m = &req->entry->method;
  const sl_rpc_handler *h = &req->entry->handler;
  if (!authenticate(c, m)) {
    if (req->payload != NULL) grpc_byte_buffer_destroy(req->payload);
    req->payload = NULL;
    return;
  }
  if (m->kind == SL_RPC_UNARY || m->kind == SL_RPC_SERVER_STREAMING) {
    grpc_byte_buffer *bb = req->payload;
    req->payload = NULL;
    if (bb != NULL) sl_metrics_counter_inc(c->metrics->msg_received);
    sl_err err = SL_ERR_INIT;
    sl_status st = bb == NULL ? sl_err_set(&err, SL_EINVAL, "%s: no request message", m->path)
                              : sl_rpc_buf_unpack(m->request, bb, NULL, &c->req, &err);
    if (bb != NULL) grpc_byte_buffer_destroy(bb);
    if (st != SL_OK) {
      sl_log(SL_LOG_WARN, "event=rpc_bad_request method=%s error=\"%s\"", m->path, err.msg);
      sl_rpc_call_finish(c, st, err.msg, NULL);
      return;
    }
  }
  /* Reads start after on_start so that on_message never precedes it. */
  h->on_start(c, c->req, h->ctx);
  pthread_mutex_lock(&c->lock);
  c->started = true;
  if (m->kind == SL_RPC_CLIENT_STREAMING || m->kind == SL_RPC_BIDI_STREAMING)
    post_read_locked(c);
  pthread_mutex_unlock(&c->lock);
}

/* ---- accessors ---- */

const sl_rpc_method *sl_rpc_call_method(const sl_rpc_call *c) {
  return c->entry != NULL ? &c->entry->method : NULL;
}

void sl_rpc_call_set_user(sl_rpc_call *c, void *user) { c->user = user; }

void sl_rpc_call_set_user_destroy(sl_rpc_call *c, void *user, void (*destroy)(void *user)) {
  c->user = user;
  c->user_destroy = destroy;
}
void *sl_rpc_call_user(const sl_rpc_call *c) { return c->user; }

void *sl_rpc_call_alloc(sl_rpc_call *c, size_t n) {
  n = (n + 15) & ~(size_t)15;
  pthread_mutex_lock(&c->lock);
  arena_chunk *a = c->arena;
  if (a == NULL || a->cap - a->used < n) {
    size_t cap = n > 4000 ? n : 4000;
    a = sl_xcalloc(1, sizeof(*a) + cap);
    a->cap = cap;
    a->next = c->arena;
    c->arena = a;
  }
  void *p = a->data + a->used;
  a->used += n;
  pthread_mutex_unlock(&c->lock);
  return p;
}

const char *sl_rpc_call_metadata(sl_rpc_call *c, const char *key) {
  for (size_t i = 0; i < c->md.count; i++) {
    if (grpc_slice_str_cmp(c->md.metadata[i].key, key) != 0) continue;
    grpc_slice v = c->md.metadata[i].value;
    char *s = sl_rpc_call_alloc(c, GRPC_SLICE_LENGTH(v) + 1);
    memcpy(s, GRPC_SLICE_START_PTR(v), GRPC_SLICE_LENGTH(v));
    return s;
  }
  return NULL;
}

const char *sl_rpc_call_role(const sl_rpc_call *c) { return c->role; }

bool sl_rpc_call_is_superuser(const sl_rpc_call *c) {
  return c->srv->auth == NULL || (c->role != NULL && sl_auth_is_superuser(c->srv->auth, c->role));
}

const char *sl_rpc_call_peer(sl_rpc_call *c) {
  char *p = grpc_call_get_peer(c->call);
  size_t n = strlen(p);
  char *s = sl_rpc_call_alloc(c, n + 1);
  memcpy(s, p, n);
  gpr_free(p);
  return s;
}

int64_t sl_rpc_call_time_left_ms(const sl_rpc_call *c) {
  if (gpr_time_cmp(c->deadline, gpr_inf_future(c->deadline.clock_type)) == 0) return INT64_MAX;
  gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);
  int64_t ms = gpr_time_to_millis(gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC)));
  return ms < 0 ? 0 : ms;
}
