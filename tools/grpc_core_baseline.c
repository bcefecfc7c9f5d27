/*
 * grpc-core-baseline: bare gRPC core ping-pong over loopback, the reference
 * for rpc-bench's unary_seq figure (tools/rpc_bench.c). No Sluice runtime:
 * what this prints is what gRPC core itself costs on this machine now.
 *
 *   bazel run -c opt //tools:grpc-core-baseline -- [--seconds N]
 *       [--payload BYTES] [--threads N] [--close] [--cq-per-call]
 *
 * Server: N threads (default 1), each polling its own next-queue with one
 * registered unary method; every call is answered with a single
 * SEND_INITIAL_METADATA + SEND_MESSAGE + SEND_STATUS_FROM_SERVER batch
 * started on the polling thread. --close adds a separate
 * RECV_CLOSE_ON_SERVER batch per call, as the runtime does.
 * Client: blocking unary calls one at a time (one 6-op batch each) plucked
 * from one pluck queue; --cq-per-call makes a pluck queue per call, as
 * sl_rpc_unary does.
 *
 * Then one bidi stream, the reference for stream_seq: the client sends a
 * message (one batch, plucked), then receives its echo (one batch, plucked);
 * the server (worker 0) keeps a RECV_MESSAGE posted and echoes each message
 * with its own SEND_MESSAGE batch.
 *
 * Prints baseline_unary_seq calls_per_s=... and baseline_stream_seq
 * msgs_per_s=..., each with cpu_us and switches per call or message.
 *
 * With --astream W [--streams K], instead the reference for rpc-bench's
 * async stream rows: K bidi streams (default 1) on one client next-queue
 * polled by one thread, each keeping W messages unanswered (one
 * SEND_MESSAGE in flight per stream, the next sent when it completes and
 * the window allows; one RECV_MESSAGE posted). The server echoes each
 * message and reads the next only once its echo went out, so flow control,
 * not memory, absorbs the window. Prints baseline_astream ... msgs_per_s.
 */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/bench_util.h"

#define METHOD "/baseline.Echo/Unary"
#define METHOD_BIDI "/baseline.Echo/Bidi"
enum { SLOTS_PER_CQ = 4 };

typedef enum {
  EV_REQUEST, EV_REPLY, EV_CLOSE, EV_SHUTDOWN,
  EV_BIDI_REQUEST, EV_BIDI_RECV, EV_BIDI_SEND, EV_BIDI_STATUS
} ev_kind;

typedef struct slot slot;
typedef struct tag {
  ev_kind kind;
  slot *s;
} tag;

typedef struct worker {
  grpc_completion_queue *cq;
  pthread_t thread;
} worker;

/* One posted request; after a call arrives it also holds that call until
 * its batches completed, then it is posted again. Touched only by the
 * worker thread that polls s->w->cq. */
struct slot {
  worker *w;
  tag req_tag, reply_tag, close_tag;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_byte_buffer *payload;
  grpc_byte_buffer *reply;
  int cancelled;
  int pending; /* batches of `call` in flight */
};

static grpc_server *server;
static void *registered, *registered_bidi;
static bool with_close;
static tag shutdown_tag = {EV_SHUTDOWN, NULL};
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static bool shutdown_done; /* under mu */
static atomic_bool stopping; /* set before shutdown: no more re-posting */

static void die(const char *what) {
  fprintf(stderr, "grpc-core-baseline: %s\n", what);
  exit(1);
}

static void post(slot *s) {
  s->call = NULL;
  s->payload = NULL;
  grpc_metadata_array_init(&s->md);
  if (grpc_server_request_registered_call(server, registered, &s->call, &s->deadline, &s->md,
                                          &s->payload, s->w->cq, s->w->cq,
                                          &s->req_tag) != GRPC_CALL_OK)
    die("request_registered_call refused");
}

/* The request payload is echoed back as is. */
static void reply(slot *s) {
  grpc_op ops[4];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  s->reply = s->payload;
  s->payload = NULL;
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n++].data.send_message.send_message = s->reply;
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n++].data.send_status_from_server.status = GRPC_STATUS_OK;
  s->pending = 1;
  if (grpc_call_start_batch(s->call, ops, n, &s->reply_tag, NULL) != GRPC_CALL_OK)
    die("reply batch refused");
  if (with_close) {
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &s->cancelled;
    s->pending++;
    if (grpc_call_start_batch(s->call, &op, 1, &s->close_tag, NULL) != GRPC_CALL_OK)
      die("close batch refused");
  }
}

static void batch_done(slot *s) {
  if (--s->pending > 0) return;
  if (s->reply != NULL) grpc_byte_buffer_destroy(s->reply);
  s->reply = NULL;
  grpc_metadata_array_destroy(&s->md);
  grpc_call_unref(s->call);
  if (!atomic_load(&stopping)) post(s);
}

/* One bidi stream the benchmark opens: every message is echoed back, one
 * send in flight at a time, and the next message is read only once the
 * previous echo went out; the client's half-close gets an OK status.
 * Touched only by the thread of worker `w`. */
#define MAX_BIDI 8
typedef struct bidi_srv {
  worker *w;
  tag req_tag, recv_tag, send_tag, status_tag;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_byte_buffer *recv_bb, *send_bb, *stash;
  bool md_sent, sending, eof, status_started;
  int pending; /* batches in flight */
} bidi_srv;
static bidi_srv bidis[MAX_BIDI];

static void bidi_batch(bidi_srv *b, grpc_op *ops, size_t n, tag *t) {
  b->pending++;
  if (grpc_call_start_batch(b->call, ops, n, t, NULL) != GRPC_CALL_OK)
    die("bidi batch refused");
}

static void bidi_post_recv(bidi_srv *b) {
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &b->recv_bb;
  bidi_batch(b, &op, 1, &b->recv_tag);
}

/* Sends `bb` (taking it), or the status once the client half-closed. */
static void bidi_send(bidi_srv *b, grpc_byte_buffer *bb) {
  grpc_op ops[2];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  if (!b->md_sent) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  b->md_sent = true;
  if (bb != NULL) {
    b->send_bb = bb;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = bb;
    b->sending = true;
    bidi_batch(b, ops, n, &b->send_tag);
  } else {
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n++].data.send_status_from_server.status = GRPC_STATUS_OK;
    b->status_started = true;
    bidi_batch(b, ops, n, &b->status_tag);
  }
}

static void bidi_event(bidi_srv *b, ev_kind kind, bool ok) {
  if (kind == EV_BIDI_REQUEST) {
    if (!ok) return; /* shut down before the stream came */
    bidi_post_recv(b);
    return;
  }
  b->pending--;
  if (kind == EV_BIDI_RECV) {
    grpc_byte_buffer *bb = b->recv_bb;
    b->recv_bb = NULL;
    if (!ok || bb == NULL) {
      b->eof = true;
    } else if (b->sending) {
      b->stash = bb; /* read on once this one is echoed */
    } else {
      bidi_send(b, bb);
      bidi_post_recv(b);
    }
  } else if (kind == EV_BIDI_SEND) {
    grpc_byte_buffer_destroy(b->send_bb);
    b->send_bb = NULL;
    b->sending = false;
    if (b->stash != NULL) {
      grpc_byte_buffer *bb = b->stash;
      b->stash = NULL;
      bidi_send(b, bb);
      bidi_post_recv(b);
    }
  }
  if (b->eof && !b->sending && !b->status_started) bidi_send(b, NULL);
  if (b->pending == 0 && b->status_started) {
    grpc_metadata_array_destroy(&b->md);
    grpc_call_unref(b->call);
    b->call = NULL;
  }
}

static void *worker_main(void *arg) {
  worker *w = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) return NULL;
    tag *t = ev.tag;
    if (t->kind == EV_SHUTDOWN) {
      pthread_mutex_lock(&mu);
      shutdown_done = true;
      pthread_cond_signal(&cv);
      pthread_mutex_unlock(&mu);
    } else if (t->kind >= EV_BIDI_REQUEST) {
      bidi_event((bidi_srv *)(void *)t->s, t->kind, ev.success != 0);
    } else if (t->kind == EV_REQUEST && !ev.success) {
      grpc_metadata_array_destroy(&t->s->md); /* shutting down: never re-post */
    } else if (t->kind == EV_REQUEST) {
      reply(t->s);
    } else {
      batch_done(t->s);
    }
  }
}

/* One blocking unary call; returns false on a non-OK status. */
/* gRPC core empties a byte buffer it sends (it takes the slices), so every
 * send gets a fresh buffer over the one payload slice (no copy). */
static grpc_byte_buffer *fresh(grpc_slice payload) {
  return grpc_raw_byte_buffer_create(&payload, 1);
}

static bool call_once(grpc_channel *ch, grpc_completion_queue *cq, grpc_slice req) {
  grpc_byte_buffer *bb = fresh(req);
  grpc_metadata_array initial, trailing;
  grpc_byte_buffer *resp = NULL;
  grpc_status_code code = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  grpc_op ops[6];
  grpc_metadata_array_init(&initial);
  grpc_metadata_array_init(&trailing);
  grpc_call *call = grpc_channel_create_call(
      ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, grpc_slice_from_static_string(METHOD), NULL,
      gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(10000, GPR_TIMESPAN)),
      NULL);
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &resp;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
  ops[5].data.recv_status_on_client.status = &code;
  ops[5].data.recv_status_on_client.status_details = &details;
  if (grpc_call_start_batch(call, ops, 6, ops, NULL) != GRPC_CALL_OK) die("call refused");
  grpc_event ev = grpc_completion_queue_pluck(cq, ops, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  if (ev.type != GRPC_OP_COMPLETE) die("pluck failed");
  grpc_call_unref(call);
  grpc_byte_buffer_destroy(bb);
  grpc_metadata_array_destroy(&initial);
  grpc_metadata_array_destroy(&trailing);
  grpc_slice_unref(details);
  if (resp != NULL) grpc_byte_buffer_destroy(resp);
  return code == GRPC_STATUS_OK && resp != NULL;
}

static double unary_seq(grpc_channel *ch, grpc_slice req, double seconds,
                        bool cq_per_call) {
  grpc_completion_queue *shared = cq_per_call ? NULL : grpc_completion_queue_create_for_pluck(NULL);
  long n = 0;
  double t0 = sl_bench_now_s(), t;
  do {
    for (int i = 0; i < 100; i++, n++) {
      grpc_completion_queue *cq = shared ? shared : grpc_completion_queue_create_for_pluck(NULL);
      if (!call_once(ch, cq, req)) die("call failed");
      if (shared == NULL) {
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
      }
    }
    t = sl_bench_now_s();
  } while (t - t0 < seconds);
  if (shared != NULL) {
    grpc_completion_queue_shutdown(shared);
    grpc_completion_queue_destroy(shared);
  }
  return (double)n / (t - t0);
}

/* Client side of the bidi stream, all plucked from one queue: open, then
 * per message one send batch and one receive batch, each plucked. */
static double stream_seq(grpc_channel *ch, grpc_slice req, double seconds) {
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_metadata_array initial, trailing;
  grpc_status_code code = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  grpc_byte_buffer *resp = NULL;
  char t_open, t_status, t_send, t_recv; /* addresses used as tags */
  grpc_op ops[2];
  grpc_metadata_array_init(&initial);
  grpc_metadata_array_init(&trailing);
  grpc_call *call = grpc_channel_create_call(
      ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, grpc_slice_from_static_string(METHOD_BIDI), NULL,
      gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (grpc_call_start_batch(call, ops, 1, &t_open, NULL) != GRPC_CALL_OK) die("open refused");
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[0].data.recv_status_on_client.trailing_metadata = &trailing;
  ops[0].data.recv_status_on_client.status = &code;
  ops[0].data.recv_status_on_client.status_details = &details;
  if (grpc_call_start_batch(call, ops, 1, &t_status, NULL) != GRPC_CALL_OK) die("status refused");
  grpc_completion_queue_pluck(cq, &t_open, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  long n = 0;
  bool first = true;
  double t0 = sl_bench_now_s(), t;
  do {
    for (int i = 0; i < 100; i++, n++) {
      memset(ops, 0, sizeof(ops));
      grpc_byte_buffer *bb = fresh(req);
      ops[0].op = GRPC_OP_SEND_MESSAGE;
      ops[0].data.send_message.send_message = bb;
      if (grpc_call_start_batch(call, ops, 1, &t_send, NULL) != GRPC_CALL_OK) die("send refused");
      if (!grpc_completion_queue_pluck(cq, &t_send, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .success)
        die("send failed");
      grpc_byte_buffer_destroy(bb);
      memset(ops, 0, sizeof(ops));
      size_t k = 0;
      if (first) {
        ops[k].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[k++].data.recv_initial_metadata.recv_initial_metadata = &initial;
        first = false;
      }
      ops[k].op = GRPC_OP_RECV_MESSAGE;
      ops[k++].data.recv_message.recv_message = &resp;
      if (grpc_call_start_batch(call, ops, k, &t_recv, NULL) != GRPC_CALL_OK) die("recv refused");
      grpc_completion_queue_pluck(cq, &t_recv, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
      if (resp == NULL) die("stream ended early");
      grpc_byte_buffer_destroy(resp);
      resp = NULL;
    }
    t = sl_bench_now_s();
  } while (t - t0 < seconds);
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  if (grpc_call_start_batch(call, ops, 1, &t_send, NULL) != GRPC_CALL_OK) die("close refused");
  grpc_completion_queue_pluck(cq, &t_send, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_RECV_MESSAGE;
  ops[0].data.recv_message.recv_message = &resp;
  if (grpc_call_start_batch(call, ops, 1, &t_recv, NULL) != GRPC_CALL_OK) die("recv refused");
  grpc_completion_queue_pluck(cq, &t_recv, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  if (resp != NULL) die("echo after half-close");
  grpc_completion_queue_pluck(cq, &t_status, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  if (code != GRPC_STATUS_OK) die("stream status not OK");
  grpc_call_unref(call);
  grpc_metadata_array_destroy(&initial);
  grpc_metadata_array_destroy(&trailing);
  grpc_slice_unref(details);
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_destroy(cq);
  return (double)n / (t - t0);
}

/* Client side of --astream: K streams, W unanswered messages each, all on
 * one next-queue polled by this thread. */
typedef struct bidi_cli {
  tag t_open, t_status, t_send, t_recv; /* .s is unused; kind tells which */
  grpc_call *call;
  grpc_metadata_array initial, trailing;
  grpc_status_code code;
  grpc_slice details;
  grpc_byte_buffer *resp, *send_bb;
  int in_flight;     /* sent, echo not yet received */
  bool sending, closing, first_recv, ended;
} bidi_cli;

static void cli_batch(bidi_cli *c, grpc_op *ops, size_t n, tag *t) {
  if (grpc_call_start_batch(c->call, ops, n, t, NULL) != GRPC_CALL_OK) die("batch refused");
}

static void cli_send(bidi_cli *c, grpc_slice req) {
  grpc_op op;
  memset(&op, 0, sizeof(op));
  if (c->closing) {
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  } else {
    c->send_bb = fresh(req);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = c->send_bb;
    c->in_flight++;
  }
  c->sending = true;
  cli_batch(c, &op, 1, &c->t_send);
}

static void cli_recv(bidi_cli *c) {
  grpc_op ops[2];
  size_t k = 0;
  memset(ops, 0, sizeof(ops));
  if (c->first_recv) {
    ops[k].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[k++].data.recv_initial_metadata.recv_initial_metadata = &c->initial;
    c->first_recv = false;
  }
  ops[k].op = GRPC_OP_RECV_MESSAGE;
  ops[k++].data.recv_message.recv_message = &c->resp;
  cli_batch(c, ops, k, &c->t_recv);
}

static double astream(grpc_channel *ch, grpc_slice req, double seconds, int window,
                      int k) {
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  bidi_cli *cs = calloc((size_t)k, sizeof(*cs));
  if (cs == NULL) die("out of memory");
  for (int i = 0; i < k; i++) {
    bidi_cli *c = &cs[i];
    c->t_open = (tag){EV_BIDI_REQUEST, NULL};
    c->t_status = (tag){EV_BIDI_STATUS, NULL};
    c->t_send = (tag){EV_BIDI_SEND, NULL};
    c->t_recv = (tag){EV_BIDI_RECV, NULL};
    c->first_recv = true;
    c->details = grpc_empty_slice();
    grpc_metadata_array_init(&c->initial);
    grpc_metadata_array_init(&c->trailing);
    c->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                       grpc_slice_from_static_string(METHOD_BIDI), NULL,
                                       gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    grpc_op ops[1];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    cli_batch(c, ops, 1, &c->t_open);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &c->trailing;
    ops[0].data.recv_status_on_client.status = &c->code;
    ops[0].data.recv_status_on_client.status_details = &c->details;
    cli_batch(c, ops, 1, &c->t_status);
    cli_recv(c);
    cli_send(c, req);
  }
  long n = 0;
  int ended = 0;
  double t0 = sl_bench_now_s(), t = t0;
  bool stop = false;
  while (ended < k) {
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE) die("queue failed");
    tag *tg = ev.tag;
    bidi_cli *c = NULL;
    for (int i = 0; i < k && c == NULL; i++) {
      bidi_cli *x = &cs[i];
      if (tg == &x->t_open || tg == &x->t_status || tg == &x->t_send || tg == &x->t_recv) c = x;
    }
    if (tg->kind == EV_BIDI_STATUS) {
      if (c->code != GRPC_STATUS_OK) die("stream status not OK");
      ended++;
      continue;
    }
    if (tg->kind == EV_BIDI_RECV) {
      if (c->resp == NULL) continue; /* end of stream; status follows */
      grpc_byte_buffer_destroy(c->resp);
      c->resp = NULL;
      c->in_flight--;
      if (!stop && ++n % 256 == 0) {
        t = sl_bench_now_s();
        stop = t - t0 >= seconds;
      }
      cli_recv(c);
    } else if (tg->kind == EV_BIDI_SEND) {
      if (!ev.success) die("send failed");
      if (c->send_bb != NULL) grpc_byte_buffer_destroy(c->send_bb);
      c->send_bb = NULL;
      c->sending = false;
    } else {
      continue; /* open */
    }
    if (stop && !c->closing && c->in_flight == 0 && !c->sending) {
      c->closing = true;
      cli_send(c, req);
    } else if (!stop && !c->sending && c->in_flight < window) {
      cli_send(c, req);
    }
  }
  for (int i = 0; i < k; i++) {
    grpc_call_unref(cs[i].call);
    grpc_metadata_array_destroy(&cs[i].initial);
    grpc_metadata_array_destroy(&cs[i].trailing);
    grpc_slice_unref(cs[i].details);
  }
  free(cs);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  return (double)n / (t - t0);
}

int main(int argc, char **argv) {
  double seconds = 2;
  size_t payload = 16;
  int threads = 1;
  bool cq_per_call = false;
  int window = 0, n_bidi = 1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      seconds = atof(argv[++i]);
    } else if (strcmp(argv[i], "--payload") == 0 && i + 1 < argc) {
      payload = (size_t)strtoul(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--close") == 0) {
      with_close = true;
    } else if (strcmp(argv[i], "--cq-per-call") == 0) {
      cq_per_call = true;
    } else if (strcmp(argv[i], "--astream") == 0 && i + 1 < argc) {
      window = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--streams") == 0 && i + 1 < argc) {
      n_bidi = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: grpc-core-baseline [--seconds N] [--payload BYTES] "
                      "[--threads N] [--close] [--cq-per-call] "
                      "[--astream WINDOW [--streams K]]\n");
      return 2;
    }
  }
  if (seconds <= 0) seconds = 2;
  if (threads < 1 || threads > 64) threads = 1;
  if (n_bidi < 1 || n_bidi > MAX_BIDI) n_bidi = 1;

  grpc_init();
  grpc_arg reuse = {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ALLOW_REUSEPORT,
                    .value.integer = 0};
  grpc_channel_args sargs = {1, &reuse};
  server = grpc_server_create(&sargs, NULL);
  registered = grpc_server_register_method(server, METHOD, NULL,
                                           GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
  registered_bidi = grpc_server_register_method(server, METHOD_BIDI, NULL,
                                                GRPC_SRM_PAYLOAD_NONE, 0);
  worker *workers = calloc((size_t)threads, sizeof(*workers));
  slot *slots = calloc((size_t)threads * SLOTS_PER_CQ, sizeof(*slots));
  if (workers == NULL || slots == NULL || registered == NULL) die("setup failed");
  for (int i = 0; i < threads; i++) {
    workers[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server, workers[i].cq, NULL);
  }
  grpc_server_credentials *screds = grpc_insecure_server_credentials_create();
  int port = grpc_server_add_http2_port(server, "127.0.0.1:0", screds);
  grpc_server_credentials_release(screds);
  if (port == 0) die("cannot listen");
  grpc_server_start(server);
  for (int i = 0; i < threads * SLOTS_PER_CQ; i++) {
    slot *s = &slots[i];
    s->w = &workers[i / SLOTS_PER_CQ];
    s->req_tag = (tag){EV_REQUEST, s};
    s->reply_tag = (tag){EV_REPLY, s};
    s->close_tag = (tag){EV_CLOSE, s};
    post(s);
  }
  for (int i = 0; i < n_bidi; i++) {
    bidi_srv *b = &bidis[i];
    slot *as_slot = (slot *)(void *)b; /* tags carry one pointer */
    b->w = &workers[i % threads];
    b->req_tag = (tag){EV_BIDI_REQUEST, as_slot};
    b->recv_tag = (tag){EV_BIDI_RECV, as_slot};
    b->send_tag = (tag){EV_BIDI_SEND, as_slot};
    b->status_tag = (tag){EV_BIDI_STATUS, as_slot};
    grpc_metadata_array_init(&b->md);
    if (grpc_server_request_registered_call(server, registered_bidi, &b->call, &b->deadline,
                                            &b->md, NULL, b->w->cq, b->w->cq,
                                            &b->req_tag) != GRPC_CALL_OK)
      die("bidi request refused");
  }
  for (int i = 0; i < threads; i++)
    if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0)
      die("cannot start thread");

  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(target, creds, NULL);
  grpc_channel_credentials_release(creds);
  char *data = calloc(1, payload ? payload : 1);
  if (data == NULL) die("out of memory");
  grpc_slice req = grpc_slice_from_copied_buffer(data, payload);
  free(data);

  unary_seq(ch, req, 0.2, cq_per_call); /* connect and warm up */
  sl_bench_usage u0 = sl_bench_usage_now();
  if (window > 0) {
    double t1 = sl_bench_now_s();
    double r = astream(ch, req, seconds, window, n_bidi);
    double took1 = sl_bench_now_s() - t1;
    printf("baseline_astream msgs_per_s=%.0f window=%d streams=%d payload=%zu threads=%d", r,
           window, n_bidi, payload, threads);
    sl_bench_usage_print(u0, r * took1);
    fflush(stdout);
    goto out_shutdown;
  }
  double t0 = sl_bench_now_s();
  double rate = unary_seq(ch, req, seconds, cq_per_call);
  double took = sl_bench_now_s() - t0;
  printf("baseline_unary_seq calls_per_s=%.0f payload=%zu threads=%d close=%d cq_per_call=%d",
         rate, payload, threads, with_close, cq_per_call);
  sl_bench_usage_print(u0, rate * took);
  fflush(stdout);
  u0 = sl_bench_usage_now();
  t0 = sl_bench_now_s();
  rate = stream_seq(ch, req, seconds);
  took = sl_bench_now_s() - t0;
  printf("baseline_stream_seq msgs_per_s=%.0f payload=%zu threads=%d", rate, payload, threads);
  sl_bench_usage_print(u0, rate * took);
  fflush(stdout);

out_shutdown:
  grpc_slice_unref(req);
  grpc_channel_destroy(ch);
  atomic_store(&stopping, true);
  grpc_server_shutdown_and_notify(server, workers[0].cq, &shutdown_tag);
  grpc_server_cancel_all_calls(server);
  pthread_mutex_lock(&mu);
  while (!shutdown_done) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  grpc_server_destroy(server);
  for (int i = 0; i < threads; i++) grpc_completion_queue_shutdown(workers[i].cq);
  for (int i = 0; i < threads; i++) {
    pthread_join(workers[i].thread, NULL);
    grpc_completion_queue_destroy(workers[i].cq);
  }
  free(slots);
  free(workers);
  grpc_shutdown();
  return 0;
}
