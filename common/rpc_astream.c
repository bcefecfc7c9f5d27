/*
 * Async client streams (rpc_astream.h) on the channel's next-queue.
 *
 * Design
 *   Four kinds of batch, each with its own tag: open (initial metadata, and
 *   for unary/server streaming the request and half-close), status
 *   (RECV_STATUS_ON_CLIENT, started at open), recv (RECV_MESSAGE, plus
 *   RECV_INITIAL_METADATA the first time) and send (one SEND_MESSAGE or the
 *   SEND_CLOSE_FROM_CLIENT; gRPC allows one in flight). Their completions
 *   run on the completion thread, update the state under s->lock, and post
 *   user callbacks on s->serial. User calls (send, cancel, ...) take the
 *   same lock, so any thread may make them.
 *
 * States (flags under s->lock, each set once)
 *   open --status_in--> ending --done_posted--> on_done queued
 *        --done_ran && batches == 0--> finished (untracked, call unrefed)
 *        --last unref--> released (on_release, freed)
 *
 * Invariants
 *   1. At most one recv is outstanding, counting a received message that is
 *      still being delivered (recv_busy); the next RECV_MESSAGE starts after
 *      on_message returned, unless paused (header invariant 2).
 *   2. on_done is posted once status_in is set and no RECV_MESSAGE is in
 *      flight, so every message delivery was posted before it, and the
 *      serial runs them first (header invariant 1). Items check done_ran /
 *      cancelled when they run, so nothing user-visible follows on_done.
 *   3. The send ring holds at most queue_max buffers, its head being the
 *      one in flight while sending; a send batch starts only when none is in
 *      flight (one SEND_MESSAGE at a time is gRPC's rule).
 *   4. References: the caller's, one for the runtime (dropped when
 *      finished), one per queued serial item. s->call is valid from open
 *      until finished; cancel checks `finished` under the lock.
 *   5. The call stays tracked on the channel while any batch is in flight
 *      (batches > 0) or on_done has not run (channel invariant 1).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/tsan.h"
#include "common/log.h"
#include "common/rpc_client_int.h"

#define SEND_QUEUE_DEFAULT 64

struct sl_rpc_astream {
  sl_rpc_tracked tracked; /* call and channel list (invariant 5) */
  sl_rpc_channel *ch;
  const sl_rpc_method *m;
  sl_rpc_astream_handler h;
  void *arg;
  sl_serial *serial; /* one reference */
  atomic_int refs;
  sl_rpc_client_md md;
  grpc_byte_buffer *first_bb; /* unary / server streaming: the request */
  sl_rpc_tag tag_open, tag_status, tag_recv, tag_send;
  sl_buf scratch; /* gathers multi-slice messages (rpc_int.h); on_recv
                     only, which invariant 1 keeps to one at a time */

  pthread_mutex_t lock; /* guards everything below */
  size_t queue_max;
  grpc_byte_buffer **ring; /* send queue (invariant 3) */
  size_t head, len;
  bool sending, sending_close; /* a send batch is in flight, and which */
  bool close_wanted;           /* close_send called (or implied at open) */
  bool want_writable;          /* a send got SL_EBUSY */
  bool send_dead;              /* a send batch failed: the call is over */
  bool paused, recv_inflight, recv_busy, reads_done, got_initial;
  bool cancelled, bad_response;
  bool status_in, done_posted, done_ran, finished;
  int batches; /* batches in flight */
  grpc_byte_buffer *recv_bb;
  ProtobufCMessage *msg; /* being delivered (invariant 1) */
  bool msg_taken;
  grpc_metadata_array initial, trailing;
  grpc_status_code code;
  grpc_slice details;
};

/* ---- references and release ---- */

static void release(sl_rpc_astream *s) {
  if (s->h.on_release != NULL) s->h.on_release(s->arg);
  for (size_t i = 0; i < s->len; i++)
    grpc_byte_buffer_destroy(s->ring[(s->head + i) % s->queue_max]);
  free(s->ring);
  if (s->first_bb != NULL) grpc_byte_buffer_destroy(s->first_bb);
  if (s->recv_bb != NULL) grpc_byte_buffer_destroy(s->recv_bb);
  sl_buf_release(&s->scratch);
  sl_rpc_client_md_release(&s->md);
  grpc_metadata_array_destroy(&s->initial);
  grpc_metadata_array_destroy(&s->trailing);
  grpc_slice_unref(s->details);
  sl_serial_unref(s->serial);
  pthread_mutex_destroy(&s->lock);
  free(s);
}

void sl_rpc_astream_ref(sl_rpc_astream *s) {
  int old = atomic_fetch_add(&s->refs, 1);
  SL_ASSERT(old > 0);
}

void sl_rpc_astream_unref(sl_rpc_astream *s) {
  if (s == NULL) return;
  int old = atomic_fetch_sub(&s->refs, 1);
  SL_ASSERT(old > 0);
  if (old == 1) release(s);
}

/* Posts fn(s) on the serial with a reference for the item (invariant 4).
 * Never under s->lock: an idle serial runs fn right here. */
static void post(sl_rpc_astream *s, void (*fn)(void *)) {
  sl_rpc_astream_ref(s);
  sl_serial_post(s->serial, fn, s);
}

/* Under s->lock: whether the runtime's part is over (invariant 5); the
 * caller then runs finish() after unlocking. */
static bool should_finish(sl_rpc_astream *s) {
  if (s->finished || !s->done_ran || s->batches > 0) return false;
  s->finished = true;
  return true;
}

static void finish(sl_rpc_astream *s) {
  sl_rpc_client_untrack(s->ch, &s->tracked);
  grpc_call_unref(s->tracked.call);
  sl_rpc_astream_unref(s); /* the runtime's reference */
}

/* ---- end of stream ---- */

static void run_done(void *arg) {
  sl_rpc_astream *s = arg;
  sl_err err = SL_ERR_INIT;
  sl_status st;
  pthread_mutex_lock(&s->lock);
  bool bad = s->bad_response, cancelled = s->cancelled;
  pthread_mutex_unlock(&s->lock);
  /* The status fields were written by gRPC before on_status set status_in,
   * and nothing writes them after. */
  if (bad)
    st = sl_err_set(&err, SL_EINTERNAL, "%s: bad response from the server", s->m->path);
  else if (cancelled && s->code == GRPC_STATUS_CANCELLED)
    st = sl_err_set(&err, SL_ECANCELED, "%s: stream cancelled", s->m->path);
  else
    st = sl_rpc_client_status(s->m, s->code, &s->trailing, s->details, &err);
  if (s->h.on_done != NULL) s->h.on_done(s, st, st == SL_OK ? "" : err.msg, s->arg);
  pthread_mutex_lock(&s->lock);
  s->done_ran = true;
  bool fin = should_finish(s);
  pthread_mutex_unlock(&s->lock);
  if (fin) finish(s);
  sl_rpc_astream_unref(s);
}

/* Under s->lock: posts on_done once its time has come (invariant 2);
 * returns whether the caller must post run_done after unlocking. */
static bool should_post_done(sl_rpc_astream *s) {
  if (s->done_posted || !s->status_in || s->recv_inflight) return false;
  s->done_posted = true;
  return true;
}

/* ---- receiving ---- */

/* Under s->lock: starts a RECV_MESSAGE if one may run (invariant 1). */
static void start_recv(sl_rpc_astream *s) {
  grpc_op ops[2];
  size_t n = 0;
  if (s->paused || s->recv_busy || s->reads_done || s->status_in || s->cancelled) return;
  memset(ops, 0, sizeof(ops));
  if (!s->got_initial) {
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->initial;
    s->got_initial = true;
  }
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n++].data.recv_message.recv_message = &s->recv_bb;
  SL_TSAN_RELEASE(&s->tag_recv);
  grpc_call_error e = grpc_call_start_batch(s->tracked.call, ops, n, &s->tag_recv, NULL);
  SL_ASSERT(e == GRPC_CALL_OK); /* one recv at a time on a live call */
  s->recv_busy = s->recv_inflight = true;
  s->batches++;
}

static void run_message(void *arg) {
  sl_rpc_astream *s = arg;
  ProtobufCMessage *msg = s->msg; /* only this item touches s->msg now */
  s->msg = NULL;
  s->msg_taken = false;
  pthread_mutex_lock(&s->lock);
  bool skip = s->cancelled;
  pthread_mutex_unlock(&s->lock);
  if (!skip && s->h.on_message != NULL) s->h.on_message(s, msg, s->arg);
  if (!s->msg_taken) protobuf_c_message_free_unpacked(msg, NULL);
  pthread_mutex_lock(&s->lock);
  s->recv_busy = false;
  start_recv(s);
  pthread_mutex_unlock(&s->lock);
  sl_rpc_astream_unref(s);
}

static void on_recv(sl_rpc_tag *tag, bool ok) {
  sl_rpc_astream *s = SL_RPC_CONTAINER_OF(tag, sl_rpc_astream, tag_recv);
  grpc_byte_buffer *bb = s->recv_bb;
  s->recv_bb = NULL;
  ProtobufCMessage *msg = NULL;
  if (ok && bb != NULL && sl_rpc_buf_unpack(s->m->response, bb, &s->scratch, &msg, NULL) != SL_OK) {
    msg = NULL;
  }
  bool bad = ok && bb != NULL && msg == NULL;
  if (bb != NULL) grpc_byte_buffer_destroy(bb);
  pthread_mutex_lock(&s->lock);
  s->recv_inflight = false;
  s->batches--;
  if (msg != NULL) {
    s->msg = msg;
  } else {
    s->recv_busy = false;
    s->reads_done = true;
    if (bad) {
      /* The server speaks another protocol: end the stream. */
      s->bad_response = true;
      grpc_call_cancel(s->tracked.call, NULL);
    }
  }
  bool done = should_post_done(s);
  bool fin = should_finish(s);
  pthread_mutex_unlock(&s->lock);
  if (msg != NULL) post(s, run_message);
  if (done) post(s, run_done);
  if (fin) finish(s);
}

/* ---- sending ---- */

/* Under s->lock: starts the next send batch if none is in flight
 * (invariant 3). */
static void start_send(sl_rpc_astream *s) {
  grpc_op op;
  if (s->sending || s->send_dead || s->status_in) return;
  memset(&op, 0, sizeof(op));
  if (s->len > 0) {
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->ring[s->head];
    s->sending_close = false;
  } else if (s->close_wanted && !s->sending_close) {
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    s->sending_close = true;
  } else {
    return;
  }
  SL_TSAN_RELEASE(&s->tag_send);
  grpc_call_error e = grpc_call_start_batch(s->tracked.call, &op, 1, &s->tag_send, NULL);
  SL_ASSERT(e == GRPC_CALL_OK);
  s->sending = true;
  s->batches++;
}

static void run_writable(void *arg) {
  sl_rpc_astream *s = arg;
  pthread_mutex_lock(&s->lock);
  bool skip = s->cancelled || s->done_posted;
  pthread_mutex_unlock(&s->lock);
  if (!skip && s->h.on_writable != NULL) s->h.on_writable(s, s->arg);
  sl_rpc_astream_unref(s);
}

static void on_send(sl_rpc_tag *tag, bool ok) {
  sl_rpc_astream *s = SL_RPC_CONTAINER_OF(tag, sl_rpc_astream, tag_send);
  bool writable = false;
  pthread_mutex_lock(&s->lock);
  s->sending = false;
  s->batches--;
  if (!s->sending_close) {
    grpc_byte_buffer_destroy(s->ring[s->head]);
    s->head = (s->head + 1) % s->queue_max;
    s->len--;
  }
  if (!ok) s->send_dead = true; /* the call is over; the status says why */
  start_send(s);
  if (s->want_writable && ok && s->len <= s->queue_max / 2 && !s->status_in) {
    s->want_writable = false;
    writable = true;
  }
  bool fin = should_finish(s);
  pthread_mutex_unlock(&s->lock);
  if (writable) post(s, run_writable);
  if (fin) finish(s);
}

/* Queues bb (taking it) or destroys it and says why not. */
static sl_status enqueue(sl_rpc_astream *s, grpc_byte_buffer *bb) {
  sl_status st = SL_OK;
  pthread_mutex_lock(&s->lock);
  if (s->close_wanted || s->send_dead || s->status_in || s->cancelled) {
    st = SL_ECANCELED;
  } else if (s->len == s->queue_max) {
    s->want_writable = true;
    st = SL_EBUSY;
  } else {
    s->ring[(s->head + s->len) % s->queue_max] = bb;
    s->len++;
    start_send(s);
  }
  pthread_mutex_unlock(&s->lock);
  if (st != SL_OK) grpc_byte_buffer_destroy(bb);
  return st;
}

static sl_status check_sendable(sl_rpc_astream *s, const ProtobufCMessageDescriptor *d) {
  if (s->m->kind == SL_RPC_UNARY || s->m->kind == SL_RPC_SERVER_STREAMING) {
    sl_log(SL_LOG_WARN, "event=astream_send_refused method=%s reason=not_client_streaming",
           s->m->path);
    return SL_EINVAL;
  }
  if (d != s->m->request) {
    sl_log(SL_LOG_WARN, "event=astream_send_refused method=%s reason=wrong_type type=%s",
           s->m->path, d != NULL ? d->name : "null");
    return SL_EINVAL;
  }
  return SL_OK;
}

sl_status sl_rpc_astream_send(sl_rpc_astream *s, const ProtobufCMessage *msg) {
  grpc_byte_buffer *bb;
  sl_status st = check_sendable(s, msg != NULL ? msg->descriptor : NULL);
  if (st != SL_OK) return st;
  st = sl_rpc_buf_pack(msg, s->ch->max_message_bytes, &bb, NULL);
  if (st != SL_OK) return st;
  return enqueue(s, bb);
}

sl_status sl_rpc_astream_send_packed(sl_rpc_astream *s, sl_rpc_packed *p) {
  sl_status st = check_sendable(s, sl_rpc_packed_type(p));
  if (st != SL_OK) return st;
  if (sl_rpc_packed_size(p) > s->ch->max_message_bytes) return SL_ETOOBIG;
  return enqueue(s, sl_rpc_packed_buffer_(p));
}

sl_status sl_rpc_astream_close_send(sl_rpc_astream *s) {
  if (s->m->kind == SL_RPC_UNARY || s->m->kind == SL_RPC_SERVER_STREAMING) return SL_OK;
  sl_status st = SL_OK;
  pthread_mutex_lock(&s->lock);
  if (s->close_wanted || s->send_dead || s->status_in || s->cancelled) {
    st = SL_ECANCELED;
  } else {
    s->close_wanted = true;
    start_send(s);
  }
  pthread_mutex_unlock(&s->lock);
  return st;
}

size_t sl_rpc_astream_queue_len(const sl_rpc_astream *s) {
  sl_rpc_astream *w = (sl_rpc_astream *)s; /* the lock is not part of the value */
  pthread_mutex_lock(&w->lock);
  size_t n = w->len;
  pthread_mutex_unlock(&w->lock);
  return n;
}

/* ---- flow control and cancel ---- */

void sl_rpc_astream_pause_reads(sl_rpc_astream *s) {
  pthread_mutex_lock(&s->lock);
  s->paused = true;
  pthread_mutex_unlock(&s->lock);
}

void sl_rpc_astream_resume_reads(sl_rpc_astream *s) {
  pthread_mutex_lock(&s->lock);
  s->paused = false;
  if (!s->finished) start_recv(s);
  pthread_mutex_unlock(&s->lock);
}

void sl_rpc_astream_cancel(sl_rpc_astream *s) {
  pthread_mutex_lock(&s->lock);
  s->cancelled = true;
  if (!s->finished && !s->status_in) grpc_call_cancel(s->tracked.call, NULL);
  pthread_mutex_unlock(&s->lock);
}

/* ---- open ---- */

static void on_open(sl_rpc_tag *tag, bool ok) {
  (void)ok; /* a failed open shows in the status */
  sl_rpc_astream *s = SL_RPC_CONTAINER_OF(tag, sl_rpc_astream, tag_open);
  pthread_mutex_lock(&s->lock);
  s->batches--;
  bool fin = should_finish(s);
  pthread_mutex_unlock(&s->lock);
  if (fin) finish(s);
}

static void on_status(sl_rpc_tag *tag, bool ok) {
  (void)ok; /* RECV_STATUS_ON_CLIENT always completes with a status */
  sl_rpc_astream *s = SL_RPC_CONTAINER_OF(tag, sl_rpc_astream, tag_status);
  pthread_mutex_lock(&s->lock);
  s->batches--;
  s->status_in = true;
  bool done = should_post_done(s);
  pthread_mutex_unlock(&s->lock);
  if (done) post(s, run_done);
}

static sl_status check_open(sl_rpc_channel *ch, const sl_rpc_method *m,
                            const ProtobufCMessage *first, grpc_byte_buffer **first_bb,
                            sl_err *err) {
  *first_bb = NULL;
  if (m == NULL || m->path == NULL) return sl_err_set(err, SL_EINVAL, "rpc: no method");
  if (m->kind == SL_RPC_UNARY || m->kind == SL_RPC_SERVER_STREAMING)
    return sl_rpc_client_pack(ch, m, m->request, first, first_bb, err);
  if (first != NULL)
    return sl_err_set(err, SL_EINVAL, "%s: send the first message with sl_rpc_astream_send",
                      m->path);
  return SL_OK;
}

/* Starts the open, status and first recv batches (all fresh op types on a
 * fresh call: a refusal is a bug). */
static void start_call(sl_rpc_astream *s) {
  grpc_op ops[3];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[n].flags = s->md.flags;
  ops[n].data.send_initial_metadata.count = s->md.count;
  ops[n++].data.send_initial_metadata.metadata = s->md.md;
  if (s->first_bb != NULL) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = s->first_bb;
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  }
  pthread_mutex_lock(&s->lock);
  SL_TSAN_RELEASE(&s->tag_open);
  grpc_call_error e1 = grpc_call_start_batch(s->tracked.call, ops, n, &s->tag_open, NULL);
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing;
  ops[0].data.recv_status_on_client.status = &s->code;
  ops[0].data.recv_status_on_client.status_details = &s->details;
  SL_TSAN_RELEASE(&s->tag_status);
  grpc_call_error e2 = grpc_call_start_batch(s->tracked.call, ops, 1, &s->tag_status, NULL);
  SL_ASSERT(e1 == GRPC_CALL_OK && e2 == GRPC_CALL_OK);
  s->batches = 2;
  start_recv(s);
  pthread_mutex_unlock(&s->lock);
}

sl_status sl_rpc_astream_open(sl_rpc_channel *ch, const sl_rpc_method *m,
                              const ProtobufCMessage *first, const sl_rpc_call_opts *opts,
                              const sl_rpc_astream_handler *h, void *arg,
                              sl_rpc_astream **out, sl_err *err) {
  grpc_byte_buffer *first_bb;
  *out = NULL;
  if (h == NULL) return sl_err_set(err, SL_EINVAL, "rpc: stream without handler");
  sl_status st = check_open(ch, m, first, &first_bb, err);
  if (st != SL_OK) return st;
  size_t qmax = opts != NULL && opts->send_queue_max > 0 ? opts->send_queue_max
                                                         : SEND_QUEUE_DEFAULT;
  sl_rpc_astream *s = calloc(1, sizeof(*s));
  grpc_byte_buffer **ring = calloc(qmax, sizeof(*ring));
  if (s == NULL || ring == NULL) {
    st = sl_err_set(err, SL_ENOMEM, "%s: out of memory", m->path);
    goto out_free;
  }
  if (opts != NULL && opts->serial != NULL) {
    s->serial = opts->serial;
    sl_serial_ref(s->serial);
  } else if ((st = sl_serial_create(&s->serial, err)) != SL_OK) {
    goto out_free;
  }
  s->ch = ch;
  s->m = m;
  s->h = *h;
  s->arg = arg;
  atomic_init(&s->refs, 2); /* the caller's and the runtime's */
  s->first_bb = first_bb;
  s->tag_open.fn = on_open;
  s->tag_status.fn = on_status;
  s->tag_recv.fn = on_recv;
  s->tag_send.fn = on_send;
  pthread_mutex_init(&s->lock, NULL);
  s->queue_max = qmax;
  s->ring = ring;
  s->close_wanted = first_bb != NULL; /* closed in the open batch */
  s->code = GRPC_STATUS_UNKNOWN;
  s->details = grpc_empty_slice();
  grpc_metadata_array_init(&s->initial);
  grpc_metadata_array_init(&s->trailing);
  sl_rpc_client_md_init(&s->md, ch, opts);
  st = sl_rpc_client_track(ch, &s->tracked, m, opts != NULL ? opts->timeout_ms : 0, err);
  if (st != SL_OK) {
    s->h.on_release = NULL; /* no callback runs on failure */
    atomic_store(&s->refs, 1);
    release(s);
    return st;
  }
  start_call(s);
  *out = s;
  return SL_OK;

out_free:
  if (s != NULL && s->serial != NULL) sl_serial_unref(s->serial);
  free(s);
  free(ring);
  if (first_bb != NULL) grpc_byte_buffer_destroy(first_bb);
  return st;
}

/* ---- internal, for async unary calls ---- */

void sl_rpc_astream_take_message_(sl_rpc_astream *s) { s->msg_taken = true; }

const sl_rpc_method *sl_rpc_astream_method_(const sl_rpc_astream *s) { return s->m; }
