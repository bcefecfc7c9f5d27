/*
 * Tests of the RPC server runtime (rpc_server.h) over real gRPC on loopback:
 * statuses for bad input, deadlines, cancellation, back-pressure, shutdown
 * and the built-in health service. Client-side shapes are in
 * rpc_client_test.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/metrics.h"
#include "common/rpc_client.h"
#include "common/rpc_health.h"
#include "common/rpc_server.h"
#include "common/testing.h"
#include "common/testdata/echo_service.h"
#include "common/testdata/raw_call.h"
#include "common/testdata/rpc_fixture.h"

typedef Sluice__Test__EchoRequest echo_req;
typedef Sluice__Test__EchoResponse echo_resp;
typedef Grpc__Health__V1__HealthCheckRequest health_req;
typedef Grpc__Health__V1__HealthCheckResponse health_resp;

#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define SERVICE_UNKNOWN GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

/* Resident set size in KiB, from /proc/self/status. */
static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  assert_non_null(f);
  while (fgets(line, sizeof(line), f) != NULL)
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
  fclose(f);
  assert_true(kib > 0);
  return kib;
}

static sl_status echo_unary(sl_echo_fx *fx, const echo_req *req, const sl_rpc_call_opts *o,
                            echo_resp **resp, sl_err *err) {
  return sl_rpc_unary(fx->ch, &sl_echo_unary, &req->base, (ProtobufCMessage **)resp, o, err);
}

/* ---- basics ---- */

/* A raw call with this file's 5 s deadline (see common/testdata/raw_call.h). */
static grpc_status_code raw(const char *target, const char *path, const void *bytes,
                            size_t n, char *details, size_t cap) {
  return sl_test_raw_call(target, path, bytes, n, 5000, details, cap);
}

static void test_rpc_server__unary_sees_metadata_deadline_peer(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_rpc_channel_opts co = {.authorization = "Bearer channel-token"};
  sl_echo_fx_start(&fx, NULL, &co);
  sl_err err = SL_ERR_INIT;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.payload.data = (uint8_t *)"hello";
  req.payload.len = 5;
  req.n = 42;
  echo_resp *resp = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 5000};
  assert_int_equal(echo_unary(&fx, &req, &o, &resp, &err), SL_OK);
  assert_int_equal(resp->n, 42);
  assert_int_equal(resp->payload.len, 5);
  assert_memory_equal(resp->payload.data, "hello", 5);
  assert_string_equal(resp->authorization, "Bearer channel-token");
  /* Up to 5 s and a little: gRPC sends a timeout under 10 s rounded up to
   * 10 ms units. */
  assert_in_range(resp->time_left_ms, 3001, 5050);
  assert_true(strncmp(resp->peer, "ipv4:127.0.0.1:", 15) == 0);
  protobuf_c_message_free_unpacked(&resp->base, NULL);

  /* A per-call token overrides the channel's. */
  o.authorization = "Bearer call-token";
  assert_int_equal(echo_unary(&fx, &req, &o, &resp, &err), SL_OK);
  assert_string_equal(resp->authorization, "Bearer call-token");
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  assert_true(sl_echo_wait(&fx.stats.done, 2, sl_test_scaled_ms(5000)));
  assert_int_equal(atomic_load(&fx.stats.cancelled), 0);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_server__error_status_carries_details(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_err err = SL_ERR_INIT;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.action = SLUICE__TEST__ECHO_REQUEST__ACTION__FAIL;
  req.n = SL_ENOTFOUND;
  echo_resp *resp = NULL;
  assert_int_equal(echo_unary(&fx, &req, NULL, &resp, &err), SL_ENOTFOUND);
  assert_null(resp);
  assert_string_equal(err.msg, "echo: failing as asked");
  sl_echo_fx_stop(&fx);
}

static void test_rpc_server__unknown_method_is_unimplemented(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  const sl_rpc_method nope = {"/sluice.test.Echo/Nope", SL_RPC_UNARY,
                              &sluice__test__echo_request__descriptor,
                              &sluice__test__echo_response__descriptor};
  sl_err err = SL_ERR_INIT;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  int64_t t0 = sl_clock_mono_ms();
  assert_int_equal(sl_rpc_unary(fx.ch, &nope, &req.base, &resp, NULL, &err), SL_EUNIMPL);
  assert_true(sl_clock_mono_ms() - t0 < 2000); /* answered, not left to the deadline */
  assert_non_null(strstr(err.msg, "/sluice.test.Echo/Nope"));
  /* The server keeps answering after it. */
  assert_int_equal(sl_rpc_unary(fx.ch, &nope, &req.base, &resp, NULL, &err), SL_EUNIMPL);
  echo_resp *ok = NULL;
  assert_int_equal(echo_unary(&fx, &req, NULL, &ok, &err), SL_OK);
  protobuf_c_message_free_unpacked(&ok->base, NULL);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_server__malformed_request_is_invalid_argument(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  char details[256];
  /* Wire type 7 does not exist. */
  const uint8_t bad_wire[] = {0xff, 0xff, 0xff, 0xff};
  /* Field 1 claims 16 bytes, has 1. */
  const uint8_t truncated[] = {0x0a, 0x10, 'a'};
  assert_int_equal(raw(fx.target, sl_echo_unary.path, bad_wire, sizeof(bad_wire), details,
                       sizeof(details)),
                   GRPC_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(details, "malformed"));
  assert_int_equal(raw(fx.target, sl_echo_server_stream.path, truncated, sizeof(truncated),
                       details, sizeof(details)),
                   GRPC_STATUS_INVALID_ARGUMENT);
  assert_int_equal(raw(fx.target, sl_echo_client_stream.path, bad_wire, sizeof(bad_wire),
                       details, sizeof(details)),
                   GRPC_STATUS_INVALID_ARGUMENT);
  assert_int_equal(raw(fx.target, sl_echo_bidi.path, truncated, sizeof(truncated), details,
                       sizeof(details)),
                   GRPC_STATUS_INVALID_ARGUMENT);
  /* Handlers of unary calls never saw the bad ones; the server lives on. */
  assert_int_equal(atomic_load(&fx.stats.started), 2); /* the two streams' on_start */
  sl_err err = SL_ERR_INIT;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  echo_resp *resp = NULL;
  assert_int_equal(echo_unary(&fx, &req, NULL, &resp, &err), SL_OK);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_server__oversized_request_is_resource_exhausted(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0", .max_message_bytes = 64 << 10};
  sl_rpc_channel_opts co = {.max_message_bytes = 4 << 20};
  sl_echo_fx_start(&fx, &so, &co);
  size_t n = 100 << 10;
  uint8_t *big = calloc(1, n);
  assert_non_null(big);
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.payload.data = big;
  req.payload.len = n;
  sl_err err = SL_ERR_INIT;
  echo_resp *resp = NULL;
  assert_int_equal(echo_unary(&fx, &req, NULL, &resp, &err), SL_ETOOBIG); /* RESOURCE_EXHAUSTED */
  assert_int_equal(atomic_load(&fx.stats.started), 0);
  /* Below the cap is fine. */
  req.payload.len = 60 << 10;
  assert_int_equal(echo_unary(&fx, &req, NULL, &resp, &err), SL_OK);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  free(big);
  sl_echo_fx_stop(&fx);
}

/* ---- deadlines and cancellation ---- */

static void test_rpc_server__deadline_exceeded_ends_call(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.action = SLUICE__TEST__ECHO_REQUEST__ACTION__HANG;
  sl_rpc_call_opts o = {.timeout_ms = 200};
  sl_err err = SL_ERR_INIT;
  echo_resp *resp = NULL;
  int64_t t0 = sl_clock_mono_ms();
  assert_int_equal(echo_unary(&fx, &req, &o, &resp, &err), SL_ETIMEDOUT);
  int64_t took = sl_clock_mono_ms() - t0;
  assert_true(took >= 150 && took < sl_test_scaled_ms(3000));
  /* The server's handler hears about it. */
  assert_true(sl_echo_wait(&fx.stats.cancelled, 1, sl_test_scaled_ms(5000)));
  assert_int_equal(atomic_load(&fx.stats.done), 1);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_server__client_cancel_reaches_handler(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s;
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_bidi, NULL, NULL, &s, &err), SL_OK);
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.n = 7;
  assert_int_equal(sl_rpc_stream_send(s, &req.base, 5000, &err), SL_OK);
  ProtobufCMessage *msg;
  assert_int_equal(sl_rpc_stream_recv(s, &msg, 5000, &err), SL_OK);
  assert_int_equal(((echo_resp *)msg)->n, 7);
  protobuf_c_message_free_unpacked(msg, NULL);
  sl_rpc_stream_cancel(s);
  assert_int_equal(sl_rpc_stream_recv(s, &msg, 5000, &err), SL_ECANCELED);
  assert_int_equal(sl_rpc_stream_send(s, &req.base, 5000, &err), SL_ECANCELED);
  assert_true(sl_echo_wait(&fx.stats.cancelled, 1, sl_test_scaled_ms(5000)));
  sl_rpc_stream_destroy(s);
  sl_echo_fx_stop(&fx);
}

/* ---- back-pressure ---- */

static void test_rpc_server__slow_reader_gets_backpressure(void **state) {
  (void)state;
  sl_echo_fx fx;
  const long total = 2000, queue_max = 8;
  const size_t payload = 64 << 10; /* 2000 x 64 KiB = 125 MiB if unbounded */
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0", .write_queue_max = (size_t)queue_max};
  sl_echo_fx_start(&fx, &so, NULL);
  uint8_t *buf = calloc(1, payload);
  assert_non_null(buf);
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.n = total;
  req.payload.data = buf;
  req.payload.len = payload;
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s;
  long rss_before = rss_kib();
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_server_stream, &req.base, NULL, &s, &err),
                   SL_OK);
  /* Not reading: the server must hit a full queue... */
  assert_true(sl_echo_wait(&fx.stats.ebusy, 1, sl_test_scaled_ms(5000)));
  long sent_at_stall = atomic_load(&fx.stats.sent);
  /* ...and stay stalled. Nothing signals "did not grow", so give it a
   * fixed window in which an unbounded writer would have sent everything. */
  struct timespec window = {0, 300 * 1000000L};
  nanosleep(&window, NULL);
  long sent_after = atomic_load(&fx.stats.sent);
  long rss_growth = rss_kib() - rss_before;
  printf("backpressure: stalled at %ld of %ld sends (%ld after %d ms), max queue %ld, "
         "rss +%ld KiB\n", sent_at_stall, total, sent_after, 300,
         (long)atomic_load(&fx.stats.max_queue), rss_growth);
  assert_true(sent_after < total / 4);
  assert_true(rss_growth < 48 * 1024); /* unbounded would be 125 MiB */
  assert_true(sent_after - sent_at_stall < total / 4);
  assert_true(atomic_load(&fx.stats.max_queue) <= queue_max);

  /* Reading everything drains it, in order, through on_writable. */
  for (long i = 0; i < total; i++) {
    ProtobufCMessage *msg;
    sl_status st = sl_rpc_stream_recv(s, &msg, 10000, &err);
    if (st != SL_OK || msg == NULL) fail_msg("message %ld: %s", i, sl_err_msg(&err, st));
    assert_int_equal(((echo_resp *)msg)->n, i);
    assert_int_equal(((echo_resp *)msg)->payload.len, payload);
    protobuf_c_message_free_unpacked(msg, NULL);
  }
  ProtobufCMessage *end;
  assert_int_equal(sl_rpc_stream_recv(s, &end, 10000, &err), SL_OK);
  assert_null(end);
  assert_int_equal(atomic_load(&fx.stats.sent), total);
  assert_true(atomic_load(&fx.stats.writable) >= 1);
  assert_true(atomic_load(&fx.stats.max_queue) <= queue_max);
  sl_rpc_stream_destroy(s);
  free(buf);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_server__paused_reads_push_back_on_client(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0", .write_queue_max = 4};
  sl_echo_fx_start(&fx, &so, NULL);
  const size_t payload = 64 << 10;
  uint8_t *buf = calloc(1, payload);
  assert_non_null(buf);
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.payload.data = buf;
  req.payload.len = payload;
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s;
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_bidi, NULL, NULL, &s, &err), SL_OK);
  /* We never read the echoes: the server's queue fills, it pauses reads,
   * and HTTP/2 flow control stops our sends. */
  sl_status st = SL_OK;
  int sent = 0;
  while (sent < 2000 && (st = sl_rpc_stream_send(s, &req.base, 500, &err)) == SL_OK) sent++;
  printf("paused reads: client blocked after %d sends, server read %ld\n", sent,
         (long)atomic_load(&fx.stats.messages));
  assert_int_equal(st, SL_ETIMEDOUT);
  assert_true(sent < 2000 / 4);
  assert_true(atomic_load(&fx.stats.ebusy) >= 1);
  assert_true(atomic_load(&fx.stats.max_queue) <= 4);
  /* A send timeout cancels the stream; the handler hears it. */
  assert_true(sl_echo_wait(&fx.stats.cancelled, 1, sl_test_scaled_ms(5000)));
  sl_rpc_stream_destroy(s);
  free(buf);
  sl_echo_fx_stop(&fx);
}

/* ---- answering from another thread ---- */

typedef struct deferred {
  _Atomic(sl_rpc_call *) call;
  void *mem;
} deferred;

static void deferred_start(sl_rpc_call *call, const ProtobufCMessage *req, void *ctx) {
  (void)req;
  deferred *d = ctx;
  sl_rpc_call_ref(call); /* answered later by the test thread */
  d->mem = sl_rpc_call_alloc(call, 100000); /* larger than one arena chunk */
  memset(d->mem, 0xab, 100000);
  atomic_store(&d->call, call);
}

typedef struct unary_done {
  atomic_int done;
  sl_status st;
  int64_t n;
} unary_done;

static void on_unary_done(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  (void)details;
  unary_done *u = arg;
  u->st = st;
  if (resp != NULL) {
    u->n = ((echo_resp *)resp)->n;
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  atomic_store(&u->done, 1);
}

static void test_rpc_server__handler_answers_from_another_thread(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_rpc_server *srv;
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0", .n_threads = 1};
  assert_int_equal(sl_rpc_server_create(&so, &srv, &err), SL_OK);
  deferred *d = sl_rpc_server_alloc(srv, sizeof(*d)); /* freed with the server */
  assert_null(atomic_load(&d->call));
  sl_rpc_handler h = {.on_start = deferred_start, .ctx = d};
  assert_int_equal(sl_rpc_server_add_method(srv, &sl_echo_unary, &h, &err), SL_OK);
  assert_int_equal(sl_rpc_server_start(srv, &err), SL_OK);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", sl_rpc_server_port(srv));
  sl_rpc_channel *ch;
  sl_rpc_channel_opts co = {.target = target};
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_OK);
  unary_done u = {0};
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  assert_int_equal(
      sl_rpc_unary_async(ch, &sl_echo_unary, &req.base, NULL, on_unary_done, &u, &err), SL_OK);
  int64_t t0 = sl_clock_mono_ms();
  while (atomic_load(&d->call) == NULL && sl_clock_mono_ms() - t0 < sl_test_scaled_ms(5000)) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  sl_rpc_call *call = atomic_load(&d->call);
  assert_non_null(call);
  assert_int_equal(atomic_load(&u.done), 0);
  echo_resp resp = SLUICE__TEST__ECHO_RESPONSE__INIT;
  resp.n = 77;
  assert_int_equal(sl_rpc_call_finish(call, SL_OK, NULL, &resp.base), SL_OK);
  assert_int_equal(sl_rpc_call_finish(call, SL_OK, NULL, &resp.base), SL_ECANCELED);
  sl_rpc_call_unref(call);
  while (atomic_load(&u.done) == 0 && sl_clock_mono_ms() - t0 < sl_test_scaled_ms(5000)) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  assert_int_equal(u.st, SL_OK);
  assert_int_equal(u.n, 77);
  sl_rpc_channel_destroy(ch);
  sl_rpc_server_destroy(srv);
}

/* ---- user-state destructor at the last unref ---- */

typedef struct held {
  _Atomic(sl_rpc_call *) call;
  atomic_int done_seen;    /* on_done ran */
  atomic_int destroyed;    /* the destructor ran */
  atomic_int done_at_destroy;
} held;

typedef struct held_state {
  held *h;
  char *buf; /* malloc'd: ASan reports it if the destructor never runs */
} held_state;

static void held_destroy(void *user) {
  held_state *hs = user;
  atomic_store(&hs->h->done_at_destroy, atomic_load(&hs->h->done_seen));
  atomic_fetch_add(&hs->h->destroyed, 1);
  free(hs->buf);
  free(hs);
}

static void held_start(sl_rpc_call *call, const ProtobufCMessage *req, void *ctx) {
  (void)req;
  held *h = ctx;
  held_state *hs = calloc(1, sizeof(*hs));
  hs->h = h;
  hs->buf = malloc(64);
  sl_rpc_call_set_user_destroy(call, hs, held_destroy);
  sl_rpc_call_ref(call); /* "another thread" (the test) still holds it */
  atomic_store(&h->call, call);
}

static void held_done(sl_rpc_call *call, bool cancelled, void *ctx) {
  (void)cancelled;
  held *h = ctx;
  held_state *hs = sl_rpc_call_user(call);
  assert_ptr_equal(hs->h, h); /* state still there in on_done */
  atomic_store(&h->done_seen, 1);
}

static void test_rpc_server__user_destroy_runs_at_last_unref(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_rpc_server *srv;
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0", .n_threads = 1};
  assert_int_equal(sl_rpc_server_create(&so, &srv, &err), SL_OK);
  held *h = sl_rpc_server_alloc(srv, sizeof(*h));
  sl_rpc_handler hd = {.on_start = held_start, .on_done = held_done, .ctx = h};
  assert_int_equal(sl_rpc_server_add_method(srv, &sl_echo_unary, &hd, &err), SL_OK);
  assert_int_equal(sl_rpc_server_start(srv, &err), SL_OK);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", sl_rpc_server_port(srv));
  sl_rpc_channel *ch;
  sl_rpc_channel_opts co = {.target = target};
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_OK);
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 200}; /* the handler never answers */
  assert_int_equal(sl_rpc_unary(ch, &sl_echo_unary, &req.base, &resp, &o, &err), SL_ETIMEDOUT);
  int64_t t0 = sl_clock_mono_ms();
  while (atomic_load(&h->done_seen) == 0 && sl_clock_mono_ms() - t0 < sl_test_scaled_ms(5000)) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  /* on_done ran, but our reference keeps the state alive. */
  assert_int_equal(atomic_load(&h->done_seen), 1);
  assert_int_equal(atomic_load(&h->destroyed), 0);
  sl_rpc_call *call = atomic_load(&h->call);
  held_state *hs = sl_rpc_call_user(call);
  assert_ptr_equal(hs->h, h);
  /* Ours or the runtime's (just after on_done) is the last; either way the
   * destructor runs once, after on_done. */
  sl_rpc_call_unref(call);
  while (atomic_load(&h->destroyed) == 0 && sl_clock_mono_ms() - t0 < sl_test_scaled_ms(5000)) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  assert_int_equal(atomic_load(&h->destroyed), 1);
  assert_int_equal(atomic_load(&h->done_at_destroy), 1);
  sl_rpc_channel_destroy(ch);
  sl_rpc_server_destroy(srv);
}

/* ---- shutdown ---- */

static void test_rpc_server__shutdown_with_open_streams_is_quick(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL); /* default grace: 500 ms */
  sl_err err = SL_ERR_INIT;
  enum { N = 3 };
  sl_rpc_stream *s[N + 1];
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  for (int i = 0; i < N; i++) {
    assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_bidi, NULL, NULL, &s[i], &err), SL_OK);
    assert_int_equal(sl_rpc_stream_send(s[i], &req.base, 5000, &err), SL_OK);
    ProtobufCMessage *msg;
    assert_int_equal(sl_rpc_stream_recv(s[i], &msg, 5000, &err), SL_OK);
    protobuf_c_message_free_unpacked(msg, NULL);
  }
  health_req hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  hreq.service = "";
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_rpc_health_watch, &hreq.base, NULL, &s[N], &err),
                   SL_OK);
  ProtobufCMessage *hmsg;
  assert_int_equal(sl_rpc_stream_recv(s[N], &hmsg, 5000, &err), SL_OK);
  protobuf_c_message_free_unpacked(hmsg, NULL);

  int64_t t0 = sl_clock_mono_ms();
  sl_rpc_server_destroy(fx.srv);
  int64_t took = sl_clock_mono_ms() - t0;
  printf("shutdown with %d open streams took %lld ms\n", N + 1, (long long)took);
  assert_true(took < sl_test_scaled_ms(1000));
  assert_int_equal(atomic_load(&fx.stats.done), N);
  assert_int_equal(atomic_load(&fx.stats.cancelled), N);
  for (int i = 0; i <= N; i++) {
    ProtobufCMessage *msg = NULL;
    sl_status st;
    do { /* the watch may still deliver NOT_SERVING first */
      if (msg != NULL) protobuf_c_message_free_unpacked(msg, NULL);
      st = sl_rpc_stream_recv(s[i], &msg, 5000, &err);
    } while (st == SL_OK && msg != NULL);
    assert_int_not_equal(st, SL_OK);
    sl_rpc_stream_destroy(s[i]);
  }
  sl_rpc_channel_destroy(fx.ch);
}

static void test_rpc_server__destroy_unstarted_and_null(void **state) {
  (void)state;
  sl_rpc_server *srv;
  sl_err err = SL_ERR_INIT;
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0"};
  assert_int_equal(sl_rpc_server_create(&so, &srv, &err), SL_OK);
  sl_rpc_server_destroy(srv);
  sl_rpc_server_destroy(NULL);
}

/* ---- bad setup ---- */

static void never_called(sl_rpc_call *call, const ProtobufCMessage *req, void *ctx) {
  (void)call, (void)req, (void)ctx;
  fail_msg("handler of a method that was refused");
}

static void test_rpc_server__rejects_bad_setup(void **state) {
  (void)state;
  sl_rpc_server *srv = NULL, *srv2 = NULL;
  sl_err err = SL_ERR_INIT;
  sl_rpc_server_opts so = {0};
  assert_int_equal(sl_rpc_server_create(&so, &srv, &err), SL_EINVAL);
  so.addr = "127.0.0.1:0";
  so.tls_cert_pem = "x";
  assert_int_equal(sl_rpc_server_create(&so, &srv, &err), SL_EINVAL);
  so.tls_cert_pem = NULL;
  assert_int_equal(sl_rpc_server_create(&so, &srv, &err), SL_OK);
  sl_rpc_handler h = {0};
  assert_int_equal(sl_rpc_server_add_method(srv, &sl_echo_unary, &h, &err), SL_EINVAL);
  sl_echo_stats stats;
  memset(&stats, 0, sizeof(stats));
  assert_int_equal(sl_echo_register(srv, &stats, &err), SL_OK);
  assert_int_equal(sl_echo_register(srv, &stats, &err), SL_EEXIST);
  h.on_start = never_called;
  assert_int_equal(sl_rpc_server_add_method(srv, &sl_rpc_health_check, &h, &err), SL_EEXIST);
  assert_int_equal(sl_rpc_server_start(srv, &err), SL_OK);
  assert_int_equal(sl_rpc_server_add_method(srv, &sl_echo_unary, &h, &err), SL_EPRECOND);

  /* SO_REUSEPORT is off: a second server cannot share the port. */
  char addr[64];
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", sl_rpc_server_port(srv));
  so.addr = addr;
  assert_int_equal(sl_rpc_server_create(&so, &srv2, &err), SL_OK);
  assert_int_equal(sl_rpc_server_start(srv2, &err), SL_EUNAVAIL);
  sl_rpc_server_destroy(srv2);
  sl_rpc_server_destroy(srv);
}

/* ---- health ---- */

static sl_status health_check(sl_echo_fx *fx, const char *service, int *status, sl_err *err) {
  health_req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = (char *)service;
  ProtobufCMessage *resp = NULL;
  sl_status st = sl_rpc_unary(fx->ch, &sl_rpc_health_check, &req.base, &resp, NULL, err);
  if (st == SL_OK) {
    *status = (int)((health_resp *)resp)->status;
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  return st;
}

static void test_rpc_server__health_check(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_err err = SL_ERR_INIT;
  int status = -1;
  assert_int_equal(health_check(&fx, "", &status, &err), SL_OK);
  assert_int_equal(status, SERVING);
  assert_int_equal(health_check(&fx, "sluice.test.Echo", &status, &err), SL_ENOTFOUND);
  assert_non_null(strstr(err.msg, "sluice.test.Echo"));
  sl_rpc_server_set_health(fx.srv, "sluice.test.Echo", false);
  assert_int_equal(health_check(&fx, "sluice.test.Echo", &status, &err), SL_OK);
  assert_int_equal(status, NOT_SERVING);
  sl_rpc_server_set_health(fx.srv, "sluice.test.Echo", true);
  assert_int_equal(health_check(&fx, "sluice.test.Echo", &status, &err), SL_OK);
  assert_int_equal(status, SERVING);
  sl_echo_fx_stop(&fx);
}

static int watch_next(sl_rpc_stream *s, int timeout_ms, sl_status *st_out) {
  ProtobufCMessage *msg = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_stream_recv(s, &msg, timeout_ms, &err);
  *st_out = st;
  if (st != SL_OK || msg == NULL) return -1;
  int status = (int)((health_resp *)msg)->status;
  protobuf_c_message_free_unpacked(msg, NULL);
  return status;
}

static void test_rpc_server__health_watch(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_err err = SL_ERR_INIT;
  sl_status st;
  health_req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = "svc";
  sl_rpc_stream *s;
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_rpc_health_watch, &req.base, NULL, &s, &err),
                   SL_OK);
  assert_int_equal(watch_next(s, sl_test_scaled_ms(5000), &st), SERVICE_UNKNOWN);
  sl_rpc_server_set_health(fx.srv, "svc", true);
  assert_int_equal(watch_next(s, sl_test_scaled_ms(5000), &st), SERVING);
  sl_rpc_server_set_health(fx.srv, "other", false); /* not ours: nothing comes */
  sl_rpc_server_set_health(fx.srv, "svc", true);    /* no change: nothing comes */
  assert_int_equal(watch_next(s, 100, &st), -1);
  assert_int_equal(st, SL_ETIMEDOUT);
  sl_rpc_server_set_health(fx.srv, "svc", false);
  assert_int_equal(watch_next(s, sl_test_scaled_ms(5000), &st), NOT_SERVING);
  /* Server shutdown reports NOT_SERVING, then ends the watch with
   * UNAVAILABLE. */
  sl_rpc_server_set_health(fx.srv, "svc", true);
  assert_int_equal(watch_next(s, sl_test_scaled_ms(5000), &st), SERVING);
  sl_rpc_server_destroy(fx.srv);
  assert_int_equal(watch_next(s, sl_test_scaled_ms(5000), &st), NOT_SERVING);
  assert_int_equal(watch_next(s, sl_test_scaled_ms(5000), &st), -1);
  assert_int_equal(st, SL_EUNAVAIL);
  sl_rpc_stream_destroy(s);
  sl_rpc_channel_destroy(fx.ch);
}

/* ---- metrics (rpc_server_metrics.c) ---- */

/* A series of the runtime's in sl_metrics_default(); 0 if not there yet. */
static double metric(const char *name, const char *method, const char *code) {
  const char *const with_code[] = {"method", method, "code", code, NULL};
  const char *const just_method[] = {"method", method, NULL};
  double v = 0;
  sl_status st = sl_metrics_value(sl_metrics_default(), name,
                                  method == NULL ? NULL : code ? with_code : just_method, &v);
  return st == SL_OK ? v : 0;
}

/* Polls until metric(...) == want (things counted when a call closes). */
static bool metric_reaches(const char *name, const char *method, const char *code, double want) {
  int64_t until = sl_clock_mono_ms() + sl_test_scaled_ms(5000);
  while (metric(name, method, code) != want) {
    if (sl_clock_mono_ms() > until) return false;
    struct timespec t = {0, 2000000};
    nanosleep(&t, NULL);
  }
  return true;
}

#define STARTED "sluice_rpc_server_started_total"
#define HANDLED "sluice_rpc_server_handled_total"

/* handled_total of `method` over every code. */
static double handled_sum(const char *method) {
  static const char *const codes[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  double sum = 0;
  for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
    sum += metric(HANDLED, method, codes[i]);
  return sum;
}
#define SECONDS "sluice_rpc_server_handling_seconds"
#define RECEIVED "sluice_rpc_server_msg_received_total"
#define SENT "sluice_rpc_server_msg_sent_total"
#define OPEN "sluice_rpc_server_open_calls"

static void count_ended(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  (void)st;
  (void)details;
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  atomic_fetch_add((atomic_long *)arg, 1);
}

static void test_rpc_server__metrics_count_unary_calls_by_code(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  const char *m = sl_echo_unary.path;
  double started = metric(STARTED, m, NULL), ok = metric(HANDLED, m, "OK"),
         not_found = metric(HANDLED, m, "NOT_FOUND"), recv = metric(RECEIVED, m, NULL),
         sent = metric(SENT, m, NULL), seconds = metric(SECONDS, m, NULL),
         open = metric(OPEN, m, NULL), unknown = metric(STARTED, "unknown", NULL),
         unimpl = metric(HANDLED, "unknown", "UNIMPLEMENTED");
  sl_err err = SL_ERR_INIT;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  echo_resp *resp = NULL;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(echo_unary(&fx, &req, NULL, &resp, &err), SL_OK);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  req.action = SLUICE__TEST__ECHO_REQUEST__ACTION__FAIL;
  req.n = SL_ENOTFOUND;
  for (int i = 0; i < 2; i++)
    assert_int_equal(echo_unary(&fx, &req, NULL, &resp, &err), SL_ENOTFOUND);
  /* Counted before the status went out: no waiting needed. */
  assert_true(metric(STARTED, m, NULL) == started + 5);
  assert_true(metric(HANDLED, m, "OK") == ok + 3);
  assert_true(metric(HANDLED, m, "NOT_FOUND") == not_found + 2);
  assert_true(metric(RECEIVED, m, NULL) == recv + 5);
  assert_true(metric(SENT, m, NULL) == sent + 3);
  assert_true(metric(SECONDS, m, NULL) == seconds + 5);
  assert_true(metric_reaches(OPEN, m, NULL, open)); /* closes land a little later */

  /* Unknown paths share one "unknown" series. */
  const sl_rpc_method nope = {"/sluice.test.Echo/Nope", SL_RPC_UNARY,
                              &sluice__test__echo_request__descriptor,
                              &sluice__test__echo_response__descriptor};
  ProtobufCMessage *r = NULL;
  assert_int_equal(sl_rpc_unary(fx.ch, &nope, &req.base, &r, NULL, &err), SL_EUNIMPL);
  assert_true(metric(STARTED, "unknown", NULL) == unknown + 1);
  assert_true(metric(HANDLED, "unknown", "UNIMPLEMENTED") == unimpl + 1);
  assert_true(metric(STARTED, nope.path, NULL) == 0);

  /* A deadline: no status was sent, the close counts it. The server's
   * deadline (the client's, propagated) and the cancel the client sends
   * when its own timer fires come due together; whichever the server sees
   * first makes it DEADLINE_EXCEEDED or CANCELLED (under TSan either
   * happens), so only the call being counted once, as one of the two, is
   * certain. */
  double before = handled_sum(m), by_peer = metric(HANDLED, m, "DEADLINE_EXCEEDED") +
                                            metric(HANDLED, m, "CANCELLED");
  req.action = SLUICE__TEST__ECHO_REQUEST__ACTION__HANG;
  sl_rpc_call_opts o = {.timeout_ms = 100};
  assert_int_equal(echo_unary(&fx, &req, &o, &resp, &err), SL_ETIMEDOUT);
  assert_true(metric_reaches(OPEN, m, NULL, open)); /* closed, so counted */
  assert_true(handled_sum(m) == before + 1);
  assert_true(metric(HANDLED, m, "DEADLINE_EXCEEDED") + metric(HANDLED, m, "CANCELLED") ==
              by_peer + 1);

  /* The client goes away mid-call: CANCELLED, counted at the close. */
  double cancelled = metric(HANDLED, m, "CANCELLED");
  sl_rpc_channel *ch;
  sl_rpc_channel_opts co = {.target = fx.target};
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_OK);
  atomic_long ended = 0;
  assert_int_equal(sl_rpc_unary_async(ch, &sl_echo_unary, &req.base, NULL, count_ended, &ended,
                                      &err), SL_OK);
  assert_true(metric_reaches(OPEN, m, NULL, open + 1)); /* the server has it */
  sl_rpc_channel_destroy(ch); /* cancels it */
  assert_int_equal(atomic_load(&ended), 1);
  assert_true(metric_reaches(HANDLED, m, "CANCELLED", cancelled + 1));
  assert_true(metric_reaches(OPEN, m, NULL, open));
  sl_echo_fx_stop(&fx);
}

static void test_rpc_server__metrics_count_stream_messages(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  const char *ss = sl_echo_server_stream.path, *bidi = sl_echo_bidi.path;
  double ss_sent = metric(SENT, ss, NULL), ss_ok = metric(HANDLED, ss, "OK"),
         bidi_recv = metric(RECEIVED, bidi, NULL), bidi_sent = metric(SENT, bidi, NULL),
         bidi_handled = handled_sum(bidi), bidi_open = metric(OPEN, bidi, NULL);
  sl_err err = SL_ERR_INIT;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.n = 4;
  sl_rpc_stream *s;
  ProtobufCMessage *msg;
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_server_stream, &req.base, NULL, &s, &err),
                   SL_OK);
  int got = sl_echo_fx_drain(s);
  assert_int_equal(got, 4);
  sl_rpc_stream_destroy(s);
  assert_true(metric(SENT, ss, NULL) == ss_sent + 4);
  assert_true(metric(HANDLED, ss, "OK") == ss_ok + 1);

  /* Bidi: three echoed, an open call while it lasts, then a cancel. */
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_bidi, NULL, NULL, &s, &err), SL_OK);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(sl_rpc_stream_send(s, &req.base, 5000, &err), SL_OK);
    assert_int_equal(sl_rpc_stream_recv(s, &msg, 5000, &err), SL_OK);
    protobuf_c_message_free_unpacked(msg, NULL);
  }
  assert_true(metric(RECEIVED, bidi, NULL) == bidi_recv + 3);
  assert_true(metric(SENT, bidi, NULL) == bidi_sent + 3);
  assert_true(metric(OPEN, bidi, NULL) == bidi_open + 1);
  /* A cancel ends the call exactly once, as whatever the handler chose if
   * it chose first (echo finishes OK when its read ends), else CANCELLED. */
  sl_rpc_stream_cancel(s);
  int64_t until = sl_clock_mono_ms() + sl_test_scaled_ms(5000);
  while (handled_sum(bidi) != bidi_handled + 1 && sl_clock_mono_ms() < until) {
    struct timespec t = {0, 2000000};
    nanosleep(&t, NULL);
  }
  assert_true(handled_sum(bidi) == bidi_handled + 1);
  assert_true(metric_reaches(OPEN, bidi, NULL, bidi_open));
  sl_rpc_stream_destroy(s);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_server__metrics_count_write_queue_full(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0", .write_queue_max = 2};
  sl_echo_fx_start(&fx, &so, NULL);
  double full = metric("sluice_rpc_server_write_queue_full_total", NULL, NULL);
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.n = 200; /* FLOOD-like: a server stream faster than the queue */
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s;
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_server_stream, &req.base, NULL, &s, &err),
                   SL_OK);
  int got = sl_echo_fx_drain(s);
  assert_int_equal(got, 200);
  sl_rpc_stream_destroy(s);
  long ebusy = atomic_load(&fx.stats.ebusy);
  assert_true(ebusy > 0);
  /* Other servers in this process may add to the shared counter, never less. */
  assert_true(metric("sluice_rpc_server_write_queue_full_total", NULL, NULL) >= full + ebusy);
  sl_echo_fx_stop(&fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rpc_server__unary_sees_metadata_deadline_peer),
      cmocka_unit_test(test_rpc_server__error_status_carries_details),
      cmocka_unit_test(test_rpc_server__unknown_method_is_unimplemented),
      cmocka_unit_test(test_rpc_server__malformed_request_is_invalid_argument),
      cmocka_unit_test(test_rpc_server__oversized_request_is_resource_exhausted),
      cmocka_unit_test(test_rpc_server__deadline_exceeded_ends_call),
      cmocka_unit_test(test_rpc_server__client_cancel_reaches_handler),
      cmocka_unit_test(test_rpc_server__slow_reader_gets_backpressure),
      cmocka_unit_test(test_rpc_server__paused_reads_push_back_on_client),
      cmocka_unit_test(test_rpc_server__handler_answers_from_another_thread),
      cmocka_unit_test(test_rpc_server__user_destroy_runs_at_last_unref),
      cmocka_unit_test(test_rpc_server__shutdown_with_open_streams_is_quick),
      cmocka_unit_test(test_rpc_server__destroy_unstarted_and_null),
      cmocka_unit_test(test_rpc_server__rejects_bad_setup),
      cmocka_unit_test(test_rpc_server__health_check),
      cmocka_unit_test(test_rpc_server__health_watch),
      cmocka_unit_test(test_rpc_server__metrics_count_unary_calls_by_code),
      cmocka_unit_test(test_rpc_server__metrics_count_stream_messages),
      cmocka_unit_test(test_rpc_server__metrics_count_write_queue_full),
  };
  return cmocka_run_group_tests(tests, NULL, sl_echo_fx_teardown_group);
}
