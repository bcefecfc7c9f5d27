/*
 * The code protoc-gen-slrpc generates, compiled from
 * tools/testdata/plugin_test.proto and used over real gRPC on 127.0.0.1:
 * the method tables, every call shape through the typed client helpers
 * against a server built from the typed handler struct, the awkward names,
 * and methods without a handler answering UNIMPLEMENTED.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "plugin_test.slrpc.h"
#include "plugin_test_types.slrpc.h"
#include "common/clock.h"

typedef Sluice__Test__Plugin__Echo echo;
typedef Sluice__Test__Plugin__HTTP2Frame frame;
typedef Sluice__Test__Plugin__HTTP2Frame__InnerMSG inner;

#define WAIT_MS 10000 /* generous deadline for anything awaited */

/* ---- the server: typed handlers (what a service author writes) ----
 * They run on the server's worker threads, where cmocka's asserts cannot
 * be used, so they check with SL_ASSERT (aborts the test with file:line). */

typedef struct server_state {
  atomic_long done;      /* *_done callbacks, any method */
  atomic_long cancelled; /* ...of which cancelled */
  atomic_long busy;      /* Watch writes refused with SL_EBUSY */
} server_state;

/* Server-streaming state, in the call's arena. */
typedef struct watch_state {
  const echo *req; /* borrowed until the call is released */
  int64_t next;    /* seq of the next message to write */
  bool finished;
} watch_state;

/* Client-streaming state, in the call's arena: the texts joined. */
typedef struct collect_state {
  char text[256];
  int64_t count;
} collect_state;

static void on_done(sl_rpc_call *call, bool cancelled, void *ctx) {
  (void)call;
  server_state *s = ctx;
  atomic_fetch_add(&s->done, 1);
  if (cancelled) atomic_fetch_add(&s->cancelled, 1);
}

static void ping(sl_rpc_call *call, const echo *req, void *ctx) {
  (void)ctx;
  echo resp = SLUICE__TEST__PLUGIN__ECHO__INIT;
  resp.text = req->text;
  resp.seq = req->seq + 1;
  SL_ASSERT(sl_echo_service_ping_reply(call, &resp) == SL_OK);
}

/* Writes Watch messages until all are queued or the write queue is full;
 * in that case watch_writable calls again once there is room. */
static void watch_pump(sl_rpc_call *call, server_state *s) {
  watch_state *w = sl_rpc_call_user(call);
  SL_ASSERT(w != NULL);
  while (!w->finished && w->next < w->req->seq) {
    echo msg = SLUICE__TEST__PLUGIN__ECHO__INIT;
    msg.text = w->req->text;
    msg.seq = w->next;
    sl_status st = sl_echo_service_watch_write(call, &msg);
    if (st == SL_EBUSY) {
      atomic_fetch_add(&s->busy, 1);
      return;
    }
    SL_ASSERT(st == SL_OK);
    w->next++;
  }
  if (!w->finished) {
    w->finished = true;
    SL_ASSERT(sl_echo_service_watch_reply(call, NULL) == SL_OK);
  }
}

static void watch(sl_rpc_call *call, const echo *req, void *ctx) {
  watch_state *w = sl_rpc_call_alloc(call, sizeof(*w));
  w->req = req;
  sl_rpc_call_set_user(call, w);
  watch_pump(call, ctx);
}

static void watch_writable(sl_rpc_call *call, void *ctx) { watch_pump(call, ctx); }

static void collect_start(sl_rpc_call *call, void *ctx) {
  (void)ctx;
  sl_rpc_call_set_user(call, sl_rpc_call_alloc(call, sizeof(collect_state)));
}

static void collect_message(sl_rpc_call *call, const echo *msg, void *ctx) {
  (void)ctx;
  collect_state *st = sl_rpc_call_user(call);
  SL_ASSERT(st != NULL);
  if (msg != NULL) {
    size_t used = strlen(st->text);
    snprintf(st->text + used, sizeof(st->text) - used, "%s", msg->text);
    st->count++;
    return;
  }
  echo resp = SLUICE__TEST__PLUGIN__ECHO__INIT;
  resp.text = st->text;
  resp.seq = st->count;
  SL_ASSERT(sl_echo_service_collect_reply(call, &resp) == SL_OK);
}

static void chat_message(sl_rpc_call *call, const echo *msg, void *ctx) {
  (void)ctx;
  if (msg == NULL) {
    SL_ASSERT(sl_echo_service_chat_reply(call, NULL) == SL_OK);
    return;
  }
  echo back = SLUICE__TEST__PLUGIN__ECHO__INIT;
  back.text = msg->text;
  back.seq = msg->seq * 10;
  SL_ASSERT(sl_echo_service_chat_write(call, &back) == SL_OK);
}

static void get_http2_frame(sl_rpc_call *call, const frame *req, void *ctx) {
  (void)ctx;
  char note[64];
  snprintf(note, sizeof(note), "%.*s", (int)req->payload.len, (const char *)req->payload.data);
  inner resp = SLUICE__TEST__PLUGIN__HTTP2_FRAME__INNER_MSG__INIT;
  resp.note = note;
  resp.n = (int32_t)req->payload.len;
  SL_ASSERT(sl_http2_service_get_http2_frame_reply(call, &resp) == SL_OK);
}

static void x1y2_z_message(sl_rpc_call *call, const inner *msg, void *ctx) {
  (void)ctx;
  int32_t *sum = sl_rpc_call_user(call);
  if (sum == NULL) {
    sum = sl_rpc_call_alloc(call, sizeof(*sum));
    sl_rpc_call_set_user(call, sum);
  }
  if (msg != NULL) {
    *sum += msg->n;
    return;
  }
  char text[32];
  int len = snprintf(text, sizeof(text), "sum=%d", (int)*sum);
  frame resp = SLUICE__TEST__PLUGIN__HTTP2_FRAME__INIT;
  resp.payload.data = (uint8_t *)text;
  resp.payload.len = (size_t)len;
  SL_ASSERT(sl_http2_service_x1y2_z_reply(call, &resp) == SL_OK);
}

/* Missing and MissingStream are left NULL on purpose. */
static const sl_echo_service_handlers kEchoHandlers = {
    .ping = ping,
    .ping_done = on_done,
    .watch = watch,
    .watch_writable = watch_writable,
    .watch_done = on_done,
    .collect_start = collect_start,
    .collect_message = collect_message,
    .collect_done = on_done,
    .chat_message = chat_message,
    .chat_done = on_done,
    .missing_done = on_done,
    .missing_stream_done = on_done,
};

static const sl_http2_service_handlers kHttp2Handlers = {
    .get_http2_frame = get_http2_frame,
    .x1y2_z_message = x1y2_z_message,
};

/* ---- fixture: one server with both services, one channel ---- */

typedef struct fixture {
  server_state state;
  sl_rpc_server *srv;
  sl_rpc_channel *ch;
} fixture;

static int fx_setup(void **state) {
  fixture *fx = calloc(1, sizeof(*fx));
  assert_non_null(fx);
  sl_err err = SL_ERR_INIT;
  /* A short write queue, so that a long Watch meets SL_EBUSY. */
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0", .n_threads = 2, .write_queue_max = 4};
  assert_int_equal(sl_rpc_server_create(&so, &fx->srv, &err), SL_OK);
  assert_int_equal(sl_echo_service_register(fx->srv, &kEchoHandlers, &fx->state, &err), SL_OK);
  assert_int_equal(sl_http2_service_register(fx->srv, &kHttp2Handlers, NULL, &err), SL_OK);
  if (sl_rpc_server_start(fx->srv, &err) != SL_OK) fail_msg("start: %s", err.msg);

  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", sl_rpc_server_port(fx->srv));
  sl_rpc_channel_opts co = {.target = target};
  assert_int_equal(sl_rpc_channel_create(&co, &fx->ch, &err), SL_OK);
  *state = fx;
  return 0;
}

static int fx_teardown(void **state) {
  fixture *fx = *state;
  sl_rpc_channel_destroy(fx->ch);
  sl_rpc_server_destroy(fx->srv);
  free(fx);
  return 0;
}

/* Polls until *counter >= want or WAIT_MS pass. */
static bool wait_count(atomic_long *counter, long want) {
  long long deadline = sl_clock_mono_ms() + WAIT_MS;
  while (atomic_load(counter) < want) {
    if (sl_clock_mono_ms() > deadline) return false;
    struct timespec nap = {0, 1000000};
    nanosleep(&nap, NULL);
  }
  return true;
}

static void free_msg(void *msg) {
  if (msg != NULL) protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---- (1) tables ---- */

static void expect_method(const sl_rpc_method *m, const char *path, sl_rpc_kind kind,
                          const ProtobufCMessageDescriptor *req,
                          const ProtobufCMessageDescriptor *resp) {
  assert_string_equal(m->path, path);
  assert_int_equal(m->kind, kind);
  assert_ptr_equal(m->request, req);
  assert_ptr_equal(m->response, resp);
}

static void test_plugin__method_tables(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *e = &sluice__test__plugin__echo__descriptor;
  assert_string_equal(sl_echo_service.name, "sluice.test.plugin.EchoService");
  assert_int_equal(sl_echo_service.n_methods, 6);
  assert_ptr_equal(sl_echo_service.methods, sl_echo_service_methods);
  expect_method(SL_ECHO_SERVICE_PING, "/sluice.test.plugin.EchoService/Ping", SL_RPC_UNARY, e, e);
  expect_method(SL_ECHO_SERVICE_WATCH, "/sluice.test.plugin.EchoService/Watch",
                SL_RPC_SERVER_STREAMING, e, e);
  expect_method(SL_ECHO_SERVICE_COLLECT, "/sluice.test.plugin.EchoService/Collect",
                SL_RPC_CLIENT_STREAMING, e, e);
  expect_method(SL_ECHO_SERVICE_CHAT, "/sluice.test.plugin.EchoService/Chat",
                SL_RPC_BIDI_STREAMING, e, e);
  expect_method(SL_ECHO_SERVICE_MISSING, "/sluice.test.plugin.EchoService/Missing",
                SL_RPC_UNARY, e, e);
  expect_method(SL_ECHO_SERVICE_MISSING_STREAM, "/sluice.test.plugin.EchoService/MissingStream",
                SL_RPC_BIDI_STREAMING, e, e);
  assert_ptr_equal(SL_ECHO_SERVICE_CHAT, &sl_echo_service_methods[3]);

  /* Digits, runs of capitals, a nested type from another file. */
  assert_string_equal(sl_http2_service.name, "sluice.test.plugin.HTTP2Service");
  assert_int_equal(sl_http2_service.n_methods, 2);
  expect_method(SL_HTTP2_SERVICE_GET_HTTP2_FRAME, "/sluice.test.plugin.HTTP2Service/GetHTTP2Frame",
                SL_RPC_UNARY, &sluice__test__plugin__http2_frame__descriptor,
                &sluice__test__plugin__http2_frame__inner_msg__descriptor);
  expect_method(SL_HTTP2_SERVICE_X1Y2_Z, "/sluice.test.plugin.HTTP2Service/X1y2Z",
                SL_RPC_CLIENT_STREAMING, &sluice__test__plugin__http2_frame__inner_msg__descriptor,
                &sluice__test__plugin__http2_frame__descriptor);
}

/* ---- (2) every call shape, round trip ---- */

static void test_plugin__unary_round_trip(void **state) {
  fixture *fx = *state;
  sl_err err = SL_ERR_INIT;
  echo req = SLUICE__TEST__PLUGIN__ECHO__INIT;
  req.text = "hello";
  req.seq = 41;
  echo *resp = NULL;
  sl_status st = sl_echo_service_ping(fx->ch, &req, &resp, NULL, &err);
  if (st != SL_OK) fail_msg("ping: %s", err.msg);
  assert_string_equal(resp->text, "hello");
  assert_int_equal(resp->seq, 42);
  free_msg(resp);
  /* ping_done ran with the ctx given to register. */
  assert_true(wait_count(&fx->state.done, 1));
}

typedef struct async_result {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool called;
  sl_status st;
  echo *resp;
} async_result;

static void on_ping(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  (void)details;
  async_result *r = arg;
  pthread_mutex_lock(&r->lock);
  r->called = true;
  r->st = st;
  r->resp = (echo *)resp;
  pthread_cond_signal(&r->cond);
  pthread_mutex_unlock(&r->lock);
}

static void test_plugin__unary_async_round_trip(void **state) {
  fixture *fx = *state;
  sl_err err = SL_ERR_INIT;
  async_result r = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
  echo req = SLUICE__TEST__PLUGIN__ECHO__INIT;
  req.text = "later";
  req.seq = 7;
  assert_int_equal(sl_echo_service_ping_async(fx->ch, &req, NULL, on_ping, &r, &err), SL_OK);

  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += WAIT_MS / 1000;
  pthread_mutex_lock(&r.lock);
  int rc = 0;
  while (!r.called && rc == 0) rc = pthread_cond_timedwait(&r.cond, &r.lock, &deadline);
  pthread_mutex_unlock(&r.lock);
  assert_true(r.called);
  assert_int_equal(r.st, SL_OK);
  assert_ptr_equal(r.resp->base.descriptor, &sluice__test__plugin__echo__descriptor);
  assert_string_equal(r.resp->text, "later");
  assert_int_equal(r.resp->seq, 8);
  free_msg(r.resp);
}

static void test_plugin__server_streaming_round_trip(void **state) {
  fixture *fx = *state;
  sl_err err = SL_ERR_INIT;
  echo req = SLUICE__TEST__PLUGIN__ECHO__INIT;
  req.text = "tick";
  req.seq = 3;
  sl_rpc_stream *s = NULL;
  assert_int_equal(sl_echo_service_watch_open(fx->ch, &req, NULL, &s, &err), SL_OK);
  for (int64_t i = 0; i < 3; i++) {
    echo *msg = NULL;
    sl_status st = sl_echo_service_watch_recv(s, &msg, WAIT_MS, &err);
    if (st != SL_OK) fail_msg("recv %d: %s", (int)i, err.msg);
    assert_non_null(msg);
    assert_string_equal(msg->text, "tick");
    assert_int_equal(msg->seq, i);
    free_msg(msg);
  }
  echo *end = (echo *)&req; /* must be overwritten with NULL */
  assert_int_equal(sl_echo_service_watch_recv(s, &end, WAIT_MS, &err), SL_OK);
  assert_null(end);
  sl_rpc_stream_destroy(s);
}

/* More messages than the server's write queue holds: the handler meets
 * SL_EBUSY and carries on from watch_writable; nothing is lost or reordered. */
static void test_plugin__server_streaming_back_pressure(void **state) {
  fixture *fx = *state;
  sl_err err = SL_ERR_INIT;
  echo req = SLUICE__TEST__PLUGIN__ECHO__INIT;
  req.text = "flood";
  req.seq = 300;
  sl_rpc_stream *s = NULL;
  assert_int_equal(sl_echo_service_watch_open(fx->ch, &req, NULL, &s, &err), SL_OK);
  for (int64_t i = 0; i < req.seq; i++) {
    echo *msg = NULL;
    sl_status st = sl_echo_service_watch_recv(s, &msg, WAIT_MS, &err);
    if (st != SL_OK || msg == NULL) fail_msg("recv %d: %s", (int)i, err.msg);
    assert_int_equal(msg->seq, i);
    free_msg(msg);
  }
  echo *end = NULL;
  assert_int_equal(sl_echo_service_watch_recv(s, &end, WAIT_MS, &err), SL_OK);
  assert_null(end);
  sl_rpc_stream_destroy(s);
  assert_true(atomic_load(&fx->state.busy) > 0);
}

static void test_plugin__client_streaming_round_trip(void **state) {
  fixture *fx = *state;
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s = NULL;
  assert_int_equal(sl_echo_service_collect_open(fx->ch, NULL, &s, &err), SL_OK);
  const char *parts[] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++) {
    echo msg = SLUICE__TEST__PLUGIN__ECHO__INIT;
    msg.text = (char *)parts[i];
    assert_int_equal(sl_echo_service_collect_send(s, &msg, WAIT_MS, &err), SL_OK);
  }
  assert_int_equal(sl_rpc_stream_close_send(s, &err), SL_OK);
  echo *resp = NULL;
  sl_status st = sl_echo_service_collect_recv(s, &resp, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("recv: %s", err.msg);
  assert_non_null(resp);
  assert_string_equal(resp->text, "abc");
  assert_int_equal(resp->seq, 3);
  free_msg(resp);
  assert_int_equal(sl_echo_service_collect_recv(s, &resp, WAIT_MS, &err), SL_OK);
  assert_null(resp);
  sl_rpc_stream_destroy(s);
}

static void test_plugin__bidi_streaming_round_trip(void **state) {
  fixture *fx = *state;
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s = NULL;
  assert_int_equal(sl_echo_service_chat_open(fx->ch, NULL, &s, &err), SL_OK);
  for (int64_t i = 1; i <= 3; i++) {
    echo msg = SLUICE__TEST__PLUGIN__ECHO__INIT;
    msg.text = "ping";
    msg.seq = i;
    assert_int_equal(sl_echo_service_chat_send(s, &msg, WAIT_MS, &err), SL_OK);
    echo *back = NULL;
    sl_status st = sl_echo_service_chat_recv(s, &back, WAIT_MS, &err);
    if (st != SL_OK) fail_msg("recv %d: %s", (int)i, err.msg);
    assert_non_null(back);
    assert_string_equal(back->text, "ping");
    assert_int_equal(back->seq, i * 10);
    free_msg(back);
  }
  assert_int_equal(sl_rpc_stream_close_send(s, &err), SL_OK);
  echo *end = NULL;
  assert_int_equal(sl_echo_service_chat_recv(s, &end, WAIT_MS, &err), SL_OK);
  assert_null(end);
  sl_rpc_stream_destroy(s);
  assert_true(wait_count(&fx->state.done, 1));
  assert_int_equal(atomic_load(&fx->state.cancelled), 0);
}

/* The typed async openers: bidi through _astream_open/_asend, server
 * streaming with its one request. */
typedef struct achat {
  atomic_long msgs, done;
  int64_t seq_sum;
  sl_status st;
} achat;

static void achat_message(sl_rpc_astream *s, const ProtobufCMessage *msg, void *arg) {
  (void)s;
  achat *a = arg;
  a->seq_sum += ((const echo *)msg)->seq;
  atomic_fetch_add(&a->msgs, 1);
}

static void achat_done(sl_rpc_astream *s, sl_status st, const char *details, void *arg) {
  (void)s;
  (void)details;
  achat *a = arg;
  a->st = st;
  atomic_fetch_add(&a->done, 1);
}

static const sl_rpc_astream_handler achat_handler = {.on_message = achat_message,
                                                     .on_done = achat_done};

static void test_plugin__async_stream_openers(void **state) {
  fixture *fx = *state;
  sl_err err = SL_ERR_INIT;
  achat a = {.st = 1};
  sl_rpc_astream *s = NULL;
  assert_int_equal(
      sl_echo_service_chat_astream_open(fx->ch, NULL, &achat_handler, &a, &s, &err), SL_OK);
  for (int64_t i = 1; i <= 3; i++) {
    echo msg = SLUICE__TEST__PLUGIN__ECHO__INIT;
    msg.text = "ping";
    msg.seq = i;
    assert_int_equal(sl_echo_service_chat_asend(s, &msg), SL_OK);
  }
  assert_int_equal(sl_rpc_astream_close_send(s), SL_OK);
  assert_true(wait_count(&a.done, 1));
  assert_int_equal(a.st, SL_OK);
  assert_int_equal(atomic_load(&a.msgs), 3);
  assert_int_equal(a.seq_sum, 60); /* the server answers seq * 10 */
  sl_rpc_astream_unref(s);

  achat w = {.st = 1};
  echo req = SLUICE__TEST__PLUGIN__ECHO__INIT;
  req.text = "w";
  req.seq = 3;
  assert_int_equal(
      sl_echo_service_watch_astream_open(fx->ch, &req, NULL, &achat_handler, &w, &s, &err),
      SL_OK);
  assert_true(wait_count(&w.done, 1));
  assert_int_equal(w.st, SL_OK);
  assert_true(atomic_load(&w.msgs) > 0);
  sl_rpc_astream_unref(s);
}

static void test_plugin__awkward_names_round_trip(void **state) {
  fixture *fx = *state;
  sl_err err = SL_ERR_INIT;
  frame req = SLUICE__TEST__PLUGIN__HTTP2_FRAME__INIT;
  req.payload.data = (uint8_t *)"frame-1";
  req.payload.len = 7;
  inner *resp = NULL;
  sl_status st = sl_http2_service_get_http2_frame(fx->ch, &req, &resp, NULL, &err);
  if (st != SL_OK) fail_msg("get_http2_frame: %s", err.msg);
  assert_string_equal(resp->note, "frame-1");
  assert_int_equal(resp->n, 7);
  free_msg(resp);

  sl_rpc_stream *s = NULL;
  assert_int_equal(sl_http2_service_x1y2_z_open(fx->ch, NULL, &s, &err), SL_OK);
  for (int32_t n = 1; n <= 4; n++) {
    inner msg = SLUICE__TEST__PLUGIN__HTTP2_FRAME__INNER_MSG__INIT;
    msg.n = n;
    assert_int_equal(sl_http2_service_x1y2_z_send(s, &msg, WAIT_MS, &err), SL_OK);
  }
  assert_int_equal(sl_rpc_stream_close_send(s, &err), SL_OK);
  frame *sum = NULL;
  st = sl_http2_service_x1y2_z_recv(s, &sum, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("x1y2_z: %s", err.msg);
  assert_int_equal(sum->payload.len, 6);
  assert_memory_equal(sum->payload.data, "sum=10", 6);
  free_msg(sum);
  sl_rpc_stream_destroy(s);
}

/* ---- (3) no handler: UNIMPLEMENTED with a message ---- */

static void test_plugin__unimplemented_unary(void **state) {
  fixture *fx = *state;
  sl_err err = SL_ERR_INIT;
  echo req = SLUICE__TEST__PLUGIN__ECHO__INIT;
  echo *resp = (echo *)&req; /* must be overwritten with NULL */
  assert_int_equal(sl_echo_service_missing(fx->ch, &req, &resp, NULL, &err), SL_EUNIMPL);
  assert_null(resp);
  assert_non_null(strstr(err.msg, "sluice.test.plugin.EchoService/Missing is not implemented yet"));
  /* The other callbacks still run: missing_done was set. */
  assert_true(wait_count(&fx->state.done, 1));
}

static void test_plugin__unimplemented_stream(void **state) {
  fixture *fx = *state;
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s = NULL;
  assert_int_equal(sl_echo_service_missing_stream_open(fx->ch, NULL, &s, &err), SL_OK);
  echo *msg = NULL;
  assert_int_equal(sl_echo_service_missing_stream_recv(s, &msg, WAIT_MS, &err), SL_EUNIMPL);
  assert_null(msg);
  assert_non_null(
      strstr(err.msg, "sluice.test.plugin.EchoService/MissingStream is not implemented yet"));
  sl_rpc_stream_destroy(s);
}

/* ---- bad arguments get a status, not a crash ---- */

static void test_plugin__bad_arguments(void **state) {
  fixture *fx = *state;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_echo_service_register(NULL, &kEchoHandlers, NULL, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "sluice.test.plugin.EchoService"));
  assert_int_equal(sl_echo_service_register(fx->srv, NULL, NULL, &err), SL_EINVAL);

  echo req = SLUICE__TEST__PLUGIN__ECHO__INIT;
  assert_int_equal(sl_echo_service_ping(fx->ch, &req, NULL, NULL, &err), SL_EINVAL);
  assert_string_equal(err.msg, "sluice.test.plugin.EchoService/Ping: resp is NULL");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plugin__method_tables),
      cmocka_unit_test_setup_teardown(test_plugin__unary_round_trip, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_plugin__unary_async_round_trip, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_plugin__server_streaming_round_trip, fx_setup,
                                      fx_teardown),
      cmocka_unit_test_setup_teardown(test_plugin__server_streaming_back_pressure, fx_setup,
                                      fx_teardown),
      cmocka_unit_test_setup_teardown(test_plugin__client_streaming_round_trip, fx_setup,
                                      fx_teardown),
      cmocka_unit_test_setup_teardown(test_plugin__bidi_streaming_round_trip, fx_setup,
                                      fx_teardown),
      cmocka_unit_test_setup_teardown(test_plugin__awkward_names_round_trip, fx_setup,
                                      fx_teardown),
      cmocka_unit_test_setup_teardown(test_plugin__async_stream_openers, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_plugin__unimplemented_unary, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_plugin__unimplemented_stream, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_plugin__bad_arguments, fx_setup, fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
