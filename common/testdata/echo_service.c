/* Echo service for the RPC runtime's tests and benchmark (echo_service.h). */
#include "common/testdata/echo_service.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef Sluice__Test__EchoRequest echo_req;
typedef Sluice__Test__EchoResponse echo_resp;

#define REQ_DESC &sluice__test__echo_request__descriptor
#define RESP_DESC &sluice__test__echo_response__descriptor

const sl_rpc_method sl_echo_unary = {"/sluice.test.Echo/Unary", SL_RPC_UNARY, REQ_DESC,
                                     RESP_DESC};
const sl_rpc_method sl_echo_server_stream = {"/sluice.test.Echo/ServerStream",
                                             SL_RPC_SERVER_STREAMING, REQ_DESC, RESP_DESC};
const sl_rpc_method sl_echo_client_stream = {"/sluice.test.Echo/ClientStream",
                                             SL_RPC_CLIENT_STREAMING, REQ_DESC, RESP_DESC};
const sl_rpc_method sl_echo_bidi = {"/sluice.test.Echo/Bidi", SL_RPC_BIDI_STREAMING, REQ_DESC,
                                    RESP_DESC};

/* Per-call state of the streaming methods (in the call arena, except the
 * malloc'd copies, freed in on_done). */
typedef struct echo_state {
  int64_t next, total;          /* ServerStream progress */
  ProtobufCBinaryData payload;  /* ServerStream: arena; ClientStream: malloc */
  bool payload_malloced;
  int64_t count;                /* ClientStream messages */
  echo_resp *stash;             /* Bidi: reply that met a full queue (malloc) */
  bool eof;                     /* Bidi: client half-closed */
} echo_state;

static void note_send(sl_rpc_call *call, sl_echo_stats *stats, sl_status st) {
  if (st == SL_EBUSY) atomic_fetch_add(&stats->ebusy, 1);
  if (st != SL_OK) return;
  atomic_fetch_add(&stats->sent, 1);
  long q = (long)sl_rpc_call_write_queue_len(call);
  long old = atomic_load(&stats->max_queue);
  while (q > old && !atomic_compare_exchange_weak(&stats->max_queue, &old, q)) {
  }
}

static void describe(sl_rpc_call *call, echo_resp *r) {
  const char *auth = sl_rpc_call_metadata(call, "authorization");
  r->authorization = (char *)(auth != NULL ? auth : "");
  r->time_left_ms = sl_rpc_call_time_left_ms(call);
  r->peer = (char *)sl_rpc_call_peer(call);
}

static void on_done(sl_rpc_call *call, bool cancelled, void *ctx) {
  sl_echo_stats *stats = ctx;
  echo_state *s = sl_rpc_call_user(call);
  if (s != NULL) {
    if (s->payload_malloced) free(s->payload.data);
    if (s->stash != NULL) {
      free(s->stash->payload.data);
      free(s->stash);
    }
  }
  atomic_fetch_add(&stats->done, 1);
  if (cancelled) atomic_fetch_add(&stats->cancelled, 1);
}

/* ---- Unary ---- */

static void unary_start(sl_rpc_call *call, const ProtobufCMessage *msg, void *ctx) {
  sl_echo_stats *stats = ctx;
  const echo_req *req = (const echo_req *)msg;
  atomic_fetch_add(&stats->started, 1);
  if (req->action == SLUICE__TEST__ECHO_REQUEST__ACTION__HANG) return;
  if (req->action == SLUICE__TEST__ECHO_REQUEST__ACTION__FAIL) {
    sl_rpc_call_finish(call, (sl_status)req->n, "echo: failing as asked", NULL);
    return;
  }
  echo_resp resp = SLUICE__TEST__ECHO_RESPONSE__INIT;
  resp.payload = req->payload;
  resp.n = req->n;
  describe(call, &resp);
  sl_rpc_call_finish(call, SL_OK, NULL, &resp.base);
}

/* ---- ServerStream ---- */

static void stream_pump(sl_rpc_call *call, sl_echo_stats *stats) {
  echo_state *s = sl_rpc_call_user(call);
  echo_resp resp = SLUICE__TEST__ECHO_RESPONSE__INIT;
  resp.payload = s->payload;
  while (s->next < s->total) {
    resp.n = s->next;
    sl_status st = sl_rpc_call_send(call, &resp.base);
    note_send(call, stats, st);
    if (st != SL_OK) return; /* SL_EBUSY: on_writable resumes; else over */
    s->next++;
  }
  sl_rpc_call_finish(call, SL_OK, NULL, NULL);
}

static void stream_start(sl_rpc_call *call, const ProtobufCMessage *msg, void *ctx) {
  sl_echo_stats *stats = ctx;
  const echo_req *req = (const echo_req *)msg;
  atomic_fetch_add(&stats->started, 1);
  if (req->action == SLUICE__TEST__ECHO_REQUEST__ACTION__FAIL) {
    sl_rpc_call_finish(call, (sl_status)req->n, "echo: failing as asked", NULL);
    return;
  }
  echo_state *s = sl_rpc_call_alloc(call, sizeof(*s));
  s->total = req->n;
  s->payload.len = req->payload.len;
  s->payload.data = sl_rpc_call_alloc(call, req->payload.len + 1);
  if (req->payload.len > 0) memcpy(s->payload.data, req->payload.data, req->payload.len);
  sl_rpc_call_set_user(call, s);
  if (req->action != SLUICE__TEST__ECHO_REQUEST__ACTION__HANG) stream_pump(call, stats);
}

static void stream_writable(sl_rpc_call *call, void *ctx) {
  sl_echo_stats *stats = ctx;
  atomic_fetch_add(&stats->writable, 1);
  stream_pump(call, stats);
}

/* ---- ClientStream ---- */

static void cstream_start(sl_rpc_call *call, const ProtobufCMessage *msg, void *ctx) {
  (void)msg;
  sl_echo_stats *stats = ctx;
  atomic_fetch_add(&stats->started, 1);
  sl_rpc_call_set_user(call, sl_rpc_call_alloc(call, sizeof(echo_state)));
}

static void cstream_message(sl_rpc_call *call, const ProtobufCMessage *msg, void *ctx) {
  sl_echo_stats *stats = ctx;
  echo_state *s = sl_rpc_call_user(call);
  const echo_req *req = (const echo_req *)msg;
  if (req == NULL) {
    echo_resp resp = SLUICE__TEST__ECHO_RESPONSE__INIT;
    resp.n = s->count;
    resp.payload = s->payload;
    describe(call, &resp);
    sl_rpc_call_finish(call, SL_OK, NULL, &resp.base);
    return;
  }
  atomic_fetch_add(&stats->messages, 1);
  if (req->action == SLUICE__TEST__ECHO_REQUEST__ACTION__FAIL) {
    sl_rpc_call_finish(call, (sl_status)req->n, "echo: failing as asked", NULL);
    return;
  }
  s->count++;
  free(s->payload.data);
  s->payload.len = req->payload.len;
  s->payload.data = malloc(req->payload.len + 1);
  if (s->payload.data == NULL) abort();
  s->payload_malloced = true;
  if (req->payload.len > 0) memcpy(s->payload.data, req->payload.data, req->payload.len);
}

/* ---- Bidi ---- */

static void bidi_start(sl_rpc_call *call, const ProtobufCMessage *msg, void *ctx) {
  (void)msg;
  sl_echo_stats *stats = ctx;
  atomic_fetch_add(&stats->started, 1);
  sl_rpc_call_set_user(call, sl_rpc_call_alloc(call, sizeof(echo_state)));
}

static void bidi_message(sl_rpc_call *call, const ProtobufCMessage *msg, void *ctx) {
  sl_echo_stats *stats = ctx;
  echo_state *s = sl_rpc_call_user(call);
  const echo_req *req = (const echo_req *)msg;
  if (req == NULL) {
    s->eof = true;
    if (s->stash == NULL) sl_rpc_call_finish(call, SL_OK, NULL, NULL);
    return;
  }
  atomic_fetch_add(&stats->messages, 1);
  if (req->action == SLUICE__TEST__ECHO_REQUEST__ACTION__HANG) return;
  if (req->action == SLUICE__TEST__ECHO_REQUEST__ACTION__FAIL) {
    sl_rpc_call_finish(call, (sl_status)req->n, "echo: failing as asked", NULL);
    return;
  }
  echo_resp resp = SLUICE__TEST__ECHO_RESPONSE__INIT;
  resp.payload = req->payload;
  resp.n = req->n;
  sl_status st = sl_rpc_call_send(call, &resp.base);
  note_send(call, stats, st);
  if (st != SL_EBUSY) return;
  /* Keep the reply and stop reading until the queue drains. */
  s->stash = malloc(sizeof(*s->stash));
  if (s->stash == NULL) abort();
  *s->stash = resp;
  s->stash->payload.data = malloc(req->payload.len + 1);
  if (s->stash->payload.data == NULL) abort();
  if (req->payload.len > 0) memcpy(s->stash->payload.data, req->payload.data, req->payload.len);
  sl_rpc_call_pause_reads(call);
}

static void bidi_writable(sl_rpc_call *call, void *ctx) {
  sl_echo_stats *stats = ctx;
  echo_state *s = sl_rpc_call_user(call);
  atomic_fetch_add(&stats->writable, 1);
  if (s->stash == NULL) return;
  sl_status st = sl_rpc_call_send(call, &s->stash->base);
  note_send(call, stats, st);
  if (st == SL_EBUSY) return;
  free(s->stash->payload.data);
  free(s->stash);
  s->stash = NULL;
  if (s->eof)
    sl_rpc_call_finish(call, SL_OK, NULL, NULL);
  else
    sl_rpc_call_resume_reads(call);
}

sl_status sl_echo_register(sl_rpc_server *srv, sl_echo_stats *stats, sl_err *err) {
  sl_rpc_handler unary = {.on_start = unary_start, .on_done = on_done, .ctx = stats};
  sl_rpc_handler sstream = {.on_start = stream_start, .on_writable = stream_writable,
                            .on_done = on_done, .ctx = stats};
  sl_rpc_handler cstream = {.on_start = cstream_start, .on_message = cstream_message,
                            .on_done = on_done, .ctx = stats};
  sl_rpc_handler bidi = {.on_start = bidi_start, .on_message = bidi_message,
                         .on_writable = bidi_writable, .on_done = on_done, .ctx = stats};
  sl_status st = sl_rpc_server_add_method(srv, &sl_echo_unary, &unary, err);
  if (st == SL_OK) st = sl_rpc_server_add_method(srv, &sl_echo_server_stream, &sstream, err);
  if (st == SL_OK) st = sl_rpc_server_add_method(srv, &sl_echo_client_stream, &cstream, err);
  if (st == SL_OK) st = sl_rpc_server_add_method(srv, &sl_echo_bidi, &bidi, err);
  return st;
}

sl_status sl_echo_server_start(const sl_rpc_server_opts *opts, sl_echo_stats *stats,
                               sl_rpc_server **out, sl_err *err) {
  sl_rpc_server *srv;
  *out = NULL;
  sl_status st = sl_rpc_server_create(opts, &srv, err);
  if (st != SL_OK) return st;
  st = sl_echo_register(srv, stats, err);
  if (st == SL_OK) st = sl_rpc_server_start(srv, err);
  if (st != SL_OK) {
    sl_rpc_server_destroy(srv);
    return st;
  }
  *out = srv;
  return SL_OK;
}

bool sl_echo_wait(atomic_long *counter, long want, int timeout_ms) {
  struct timespec start, now, pause = {0, 1000000};
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    if (atomic_load(counter) >= want) return true;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if (ms > timeout_ms) return false;
    nanosleep(&pause, NULL);
  }
}
