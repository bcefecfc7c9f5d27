/*
 * Tests of the RPC client runtime (rpc_client.h) over real gRPC on loopback
 * against the echo service: every call shape, many async calls, timeouts,
 * failure to connect, TLS and mutual TLS with certificates made at test
 * time. Server-side behaviour is in rpc_server_test.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "common/testing.h"
#include "common/testdata/echo_service.h"
#include "common/testdata/rpc_fixture.h"

typedef Sluice__Test__EchoRequest echo_req;
typedef Sluice__Test__EchoResponse echo_resp;

static echo_resp *recv_echo(sl_rpc_stream *s) {
  ProtobufCMessage *msg = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_stream_recv(s, &msg, 10000, &err);
  if (st != SL_OK || msg == NULL) fail_msg("recv: %s", sl_err_msg(&err, st));
  return (echo_resp *)msg;
}

static void expect_end(sl_rpc_stream *s, sl_status want) {
  ProtobufCMessage *msg = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_rpc_stream_recv(s, &msg, 10000, &err), want);
  assert_null(msg);
  /* The end is sticky. */
  assert_int_equal(sl_rpc_stream_recv(s, &msg, 10000, &err), want);
}

/* ---- call shapes ---- */

static void test_rpc_client__unary(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_err err = SL_ERR_INIT;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.n = -5;
  req.payload.data = (uint8_t *)"x";
  req.payload.len = 1;
  ProtobufCMessage *resp = NULL;
  assert_int_equal(sl_rpc_unary(fx.ch, &sl_echo_unary, &req.base, &resp, NULL, &err), SL_OK);
  assert_int_equal(((echo_resp *)resp)->n, -5);
  /* Default unary deadline is 10 s. */
  assert_true(((echo_resp *)resp)->time_left_ms > 8000);
  assert_string_equal(((echo_resp *)resp)->authorization, "");
  protobuf_c_message_free_unpacked(resp, NULL);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_client__rejects_misuse(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_rpc_channel_opts co = {.max_message_bytes = 1024};
  sl_echo_fx_start(&fx, NULL, &co);
  sl_err err = SL_ERR_INIT;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  echo_resp wrong = SLUICE__TEST__ECHO_RESPONSE__INIT;
  ProtobufCMessage *resp = NULL;
  sl_rpc_stream *s = NULL;
  /* Wrong shape, wrong type, too big for our own cap: refused locally. */
  assert_int_equal(sl_rpc_unary(fx.ch, &sl_echo_bidi, &req.base, &resp, NULL, &err), SL_EINVAL);
  assert_int_equal(sl_rpc_unary(fx.ch, &sl_echo_unary, &wrong.base, &resp, NULL, &err),
                   SL_EINVAL);
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_unary, &req.base, NULL, &s, &err),
                   SL_EINVAL);
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_bidi, &req.base, NULL, &s, &err),
                   SL_EINVAL);
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_server_stream, NULL, NULL, &s, &err),
                   SL_EINVAL);
  uint8_t big[2048] = {0};
  req.payload.data = big;
  req.payload.len = sizeof(big);
  assert_int_equal(sl_rpc_unary(fx.ch, &sl_echo_unary, &req.base, &resp, NULL, &err), SL_ETOOBIG);
  assert_non_null(strstr(err.msg, "exceeds"));
  assert_int_equal(atomic_load(&fx.stats.started), 0);
  sl_rpc_channel *ch;
  sl_rpc_channel_opts bad = {.target = "127.0.0.1:1", .tls_cert_pem = "c"};
  assert_int_equal(sl_rpc_channel_create(&bad, &ch, &err), SL_EINVAL);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_client__server_streaming(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_err err = SL_ERR_INIT;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.n = 100;
  req.payload.data = (uint8_t *)"abc";
  req.payload.len = 3;
  sl_rpc_stream *s;
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_server_stream, &req.base, NULL, &s, &err),
                   SL_OK);
  assert_int_equal(sl_rpc_stream_send(s, &req.base, 1000, &err), SL_EINVAL);
  for (int i = 0; i < 100; i++) {
    echo_resp *r = recv_echo(s);
    assert_int_equal(r->n, i);
    assert_memory_equal(r->payload.data, "abc", 3);
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  expect_end(s, SL_OK);
  sl_rpc_stream_destroy(s);

  /* An error status ends a stream with its details. */
  req.action = SLUICE__TEST__ECHO_REQUEST__ACTION__FAIL;
  req.n = SL_EPERM;
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_server_stream, &req.base, NULL, &s, &err),
                   SL_OK);
  expect_end(s, SL_EPERM);
  sl_rpc_stream_destroy(s);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_client__client_streaming(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s;
  sl_rpc_call_opts o = {.timeout_ms = 10000, .authorization = "tok"};
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_client_stream, NULL, &o, &s, &err), SL_OK);
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  char text[16];
  for (int i = 0; i < 50; i++) {
    snprintf(text, sizeof(text), "m%d", i);
    req.payload.data = (uint8_t *)text;
    req.payload.len = strlen(text);
    assert_int_equal(sl_rpc_stream_send(s, &req.base, 5000, &err), SL_OK);
  }
  assert_int_equal(sl_rpc_stream_close_send(s, &err), SL_OK);
  echo_resp *r = recv_echo(s);
  assert_int_equal(r->n, 50);
  assert_memory_equal(r->payload.data, "m49", 3);
  assert_string_equal(r->authorization, "tok");
  /* gRPC sends a timeout of 10 s or more rounded up to 100 ms units (seen:
   * 10098 ms left under TSan), so up to 10.1 s and a little. */
  assert_in_range(r->time_left_ms, 5001, 10150);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  expect_end(s, SL_OK);
  sl_rpc_stream_destroy(s);

  /* The server ends it early: the next sends report its status. */
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_client_stream, NULL, NULL, &s, &err), SL_OK);
  req.action = SLUICE__TEST__ECHO_REQUEST__ACTION__FAIL;
  req.n = SL_EFENCED;
  assert_int_equal(sl_rpc_stream_send(s, &req.base, 5000, &err), SL_OK);
  /* Sends succeed until the server's status arrives, however long that
   * takes on a loaded machine: bounded by time, not by a count. */
  sl_status st = SL_OK;
  int64_t until = sl_clock_mono_ns() + sl_test_scaled_ms(10000) * 1000000;
  while (st == SL_OK && sl_clock_mono_ns() < until)
    st = sl_rpc_stream_send(s, &req.base, 5000, &err);
  /* The sender learns that the stream is over; the receiver gets why. */
  assert_true(st == SL_ECANCELED || st == SL_EFENCED);
  ProtobufCMessage *none = NULL;
  assert_int_equal(sl_rpc_stream_recv(s, &none, 5000, &err), SL_EFENCED); /* exact, not FAILED_PRECONDITION */
  assert_null(none);
  assert_string_equal(err.msg, "echo: failing as asked");
  assert_int_equal(sl_rpc_stream_send(s, &req.base, 5000, &err), SL_EFENCED);
  sl_rpc_stream_destroy(s);
  sl_echo_fx_stop(&fx);
}

typedef struct sender {
  sl_rpc_stream *s;
  int n;
  sl_status st;
} sender;

static void *send_all(void *arg) {
  sender *x = arg;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < x->n && x->st == SL_OK; i++) {
    req.n = i;
    x->st = sl_rpc_stream_send(x->s, &req.base, 10000, &err);
  }
  if (x->st == SL_OK) x->st = sl_rpc_stream_close_send(x->s, &err);
  return NULL;
}

static void test_rpc_client__bidi_send_and_recv_on_two_threads(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s;
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_bidi, NULL, NULL, &s, &err), SL_OK);
  /* Nothing sent yet: a receive times out and the stream stays usable. */
  ProtobufCMessage *msg = NULL;
  int64_t t0 = sl_clock_mono_ms();
  assert_int_equal(sl_rpc_stream_recv(s, &msg, 100, &err), SL_ETIMEDOUT);
  assert_true(sl_clock_mono_ms() - t0 >= 90);
  sender x = {s, 2000, SL_OK};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, send_all, &x), 0);
  for (int i = 0; i < 2000; i++) {
    echo_resp *r = recv_echo(s);
    assert_int_equal(r->n, i);
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  expect_end(s, SL_OK);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(x.st, SL_OK);
  sl_rpc_stream_destroy(s);
  assert_true(sl_echo_wait(&fx.stats.done, 1, sl_test_scaled_ms(5000)));
  assert_int_equal(atomic_load(&fx.stats.cancelled), 0);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_client__stream_deadline(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s;
  sl_rpc_call_opts o = {.timeout_ms = 200};
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_bidi, NULL, &o, &s, &err), SL_OK);
  expect_end(s, SL_ETIMEDOUT);
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  assert_int_not_equal(sl_rpc_stream_send(s, &req.base, 1000, &err), SL_OK);
  sl_rpc_stream_destroy(s);
  assert_true(sl_echo_wait(&fx.stats.cancelled, 1, sl_test_scaled_ms(5000)));
  /* Destroying a stream nobody used cancels it. */
  assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_bidi, NULL, NULL, &s, &err), SL_OK);
  assert_true(sl_echo_wait(&fx.stats.started, 2, sl_test_scaled_ms(5000)));
  sl_rpc_stream_destroy(s);
  assert_true(sl_echo_wait(&fx.stats.cancelled, 2, sl_test_scaled_ms(5000)));
  sl_echo_fx_stop(&fx);
}

/* ---- async ---- */

enum { N_ASYNC = 1000 };

typedef struct async_slot {
  struct async_ctx *ctx;
  int64_t want;
} async_slot;

typedef struct async_ctx {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, ok, cancelled, wrong;
  async_slot slots[N_ASYNC];
} async_ctx;

static void on_async(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  async_slot *slot = arg;
  async_ctx *c = slot->ctx;
  /* No cmocka asserts here: this is the channel's completion thread. */
  pthread_mutex_lock(&c->mu);
  if (details == NULL) c->wrong++;
  else if (st == SL_OK && ((echo_resp *)resp)->n == slot->want) c->ok++;
  else if (st == SL_ECANCELED) c->cancelled++;
  else c->wrong++;
  c->done++;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
}

static async_ctx *async_ctx_new(void) {
  async_ctx *c = calloc(1, sizeof(*c));
  assert_non_null(c);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  for (int i = 0; i < N_ASYNC; i++) c->slots[i] = (async_slot){c, i};
  return c;
}

static void async_ctx_free(async_ctx *c) {
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static void test_rpc_client__1000_concurrent_async_calls(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  async_ctx *c = async_ctx_new();
  sl_err err = SL_ERR_INIT;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  sl_rpc_call_opts o = {.timeout_ms = 30000};
  int64_t t0 = sl_clock_mono_ms();
  for (int i = 0; i < N_ASYNC; i++) {
    req.n = i;
    assert_int_equal(sl_rpc_unary_async(fx.ch, &sl_echo_unary, &req.base, &o, on_async,
                                        &c->slots[i], &err),
                     SL_OK);
  }
  pthread_mutex_lock(&c->mu);
  while (c->done < N_ASYNC) pthread_cond_wait(&c->cv, &c->mu); /* calls carry deadlines */
  pthread_mutex_unlock(&c->mu);
  printf("%d async calls in %lld ms\n", N_ASYNC, (long long)(sl_clock_mono_ms() - t0));
  assert_int_equal(c->ok, N_ASYNC);
  /* The server's on_done may trail the client's callback a little. */
  assert_true(sl_echo_wait(&fx.stats.done, N_ASYNC, sl_test_scaled_ms(5000)));
  assert_int_equal(atomic_load(&fx.stats.cancelled), 0);
  sl_echo_fx_stop(&fx);
  async_ctx_free(c);
}

static void test_rpc_client__channel_destroy_cancels_async(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  async_ctx *c = async_ctx_new();
  sl_err err = SL_ERR_INIT;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.action = SLUICE__TEST__ECHO_REQUEST__ACTION__HANG;
  sl_rpc_call_opts o = {.timeout_ms = 60000};
  for (int i = 0; i < 5; i++)
    assert_int_equal(sl_rpc_unary_async(fx.ch, &sl_echo_unary, &req.base, &o, on_async,
                                        &c->slots[i], &err),
                     SL_OK);
  assert_true(sl_echo_wait(&fx.stats.started, 5, sl_test_scaled_ms(5000)));
  int64_t t0 = sl_clock_mono_ms();
  sl_rpc_channel_destroy(fx.ch);
  assert_true(sl_clock_mono_ms() - t0 < sl_test_scaled_ms(5000));
  assert_int_equal(c->done, 5);
  assert_int_equal(c->cancelled, 5);
  assert_true(sl_echo_wait(&fx.stats.cancelled, 5, sl_test_scaled_ms(5000)));
  sl_rpc_server_destroy(fx.srv);
  async_ctx_free(c);
}

/* ---- connecting ---- */

/* A loopback port nobody listens on (bound then closed). */
static int dead_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

static void test_rpc_client__no_server_fails_fast_or_waits(void **state) {
  (void)state;
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", dead_port());
  sl_rpc_channel *ch;
  sl_err err = SL_ERR_INIT;
  sl_rpc_channel_opts co = {.target = target};
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_OK);
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 5000};
  int64_t t0 = sl_clock_mono_ms();
  assert_int_equal(sl_rpc_unary(ch, &sl_echo_unary, &req.base, &resp, &o, &err), SL_EUNAVAIL);
  assert_true(sl_clock_mono_ms() - t0 < 4000);
  o.timeout_ms = 300;
  o.wait_for_ready = true;
  t0 = sl_clock_mono_ms();
  assert_int_equal(sl_rpc_unary(ch, &sl_echo_unary, &req.base, &resp, &o, &err), SL_ETIMEDOUT);
  assert_true(sl_clock_mono_ms() - t0 >= 250);
  sl_rpc_channel_destroy(ch);
}

/* ---- TLS ---- */

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) fail_msg("open %s", path);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  assert_true(n > 0);
  rewind(f);
  char *s = calloc(1, (size_t)n + 1);
  assert_non_null(s);
  assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  return s;
}

/* Makes a self-signed EC certificate for 127.0.0.1/localhost in $TEST_TMPDIR
 * and returns its cert and key PEM (heap). */
static void make_cert(const char *name, char **cert, char **key) {
  const char *dir = getenv("TEST_TMPDIR");
  if (dir == NULL) dir = "/tmp";
  char cmd[2048], cert_path[512], key_path[512];
  snprintf(cert_path, sizeof(cert_path), "%s/%s.crt", dir, name);
  snprintf(key_path, sizeof(key_path), "%s/%s.key", dir, name);
  snprintf(cmd, sizeof(cmd),
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-days 1 -subj /CN=%s -addext subjectAltName=IP:127.0.0.1,DNS:localhost "
           "-keyout %s -out %s 2>/dev/null",
           name, key_path, cert_path);
  assert_int_equal(system(cmd), 0);
  *cert = read_file(cert_path);
  *key = read_file(key_path);
}

static sl_status tls_unary(const char *target, const sl_rpc_channel_opts *base, sl_err *err) {
  sl_rpc_channel_opts co = *base;
  co.target = target;
  sl_rpc_channel *ch;
  sl_status st = sl_rpc_channel_create(&co, &ch, err);
  if (st != SL_OK) return st;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.n = 9;
  ProtobufCMessage *resp = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 5000};
  st = sl_rpc_unary(ch, &sl_echo_unary, &req.base, &resp, &o, err);
  if (st == SL_OK) {
    assert_int_equal(((echo_resp *)resp)->n, 9);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  sl_rpc_channel_destroy(ch);
  return st;
}

static void test_rpc_client__tls_and_mutual_tls(void **state) {
  (void)state;
  char *srv_cert, *srv_key, *cli_cert, *cli_key;
  make_cert("server", &srv_cert, &srv_key);
  make_cert("client", &cli_cert, &cli_key);
  sl_err err = SL_ERR_INIT;

  /* Server TLS only. */
  sl_echo_fx fx;
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0", .tls_cert_pem = srv_cert,
                           .tls_key_pem = srv_key};
  sl_rpc_channel_opts co = {.tls_root_pem = srv_cert};
  sl_echo_fx_start(&fx, &so, &co);
  ProtobufCMessage *resp = NULL;
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  assert_int_equal(sl_rpc_unary(fx.ch, &sl_echo_unary, &req.base, &resp, NULL, &err), SL_OK);
  protobuf_c_message_free_unpacked(resp, NULL);
  sl_rpc_channel_opts plain = {0};
  assert_int_equal(tls_unary(fx.target, &plain, &err), SL_EUNAVAIL);
  sl_rpc_channel_opts wrong_root = {.tls_root_pem = cli_cert};
  assert_int_equal(tls_unary(fx.target, &wrong_root, &err), SL_EUNAVAIL);
  sl_echo_fx_stop(&fx);

  /* Mutual TLS: the client's certificate is its own CA here. */
  so.tls_client_ca_pem = cli_cert;
  sl_rpc_channel_opts mutual = {.tls_root_pem = srv_cert, .tls_cert_pem = cli_cert,
                                .tls_key_pem = cli_key};
  sl_echo_fx_start(&fx, &so, &mutual);
  assert_int_equal(sl_rpc_unary(fx.ch, &sl_echo_unary, &req.base, &resp, NULL, &err), SL_OK);
  protobuf_c_message_free_unpacked(resp, NULL);
  assert_int_equal(tls_unary(fx.target, &co, &err), SL_EUNAVAIL); /* no client cert */
  sl_echo_fx_stop(&fx);
  free(srv_cert);
  free(srv_key);
  free(cli_cert);
  free(cli_key);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rpc_client__unary),
      cmocka_unit_test(test_rpc_client__rejects_misuse),
      cmocka_unit_test(test_rpc_client__server_streaming),
      cmocka_unit_test(test_rpc_client__client_streaming),
      cmocka_unit_test(test_rpc_client__bidi_send_and_recv_on_two_threads),
      cmocka_unit_test(test_rpc_client__stream_deadline),
      cmocka_unit_test(test_rpc_client__1000_concurrent_async_calls),
      cmocka_unit_test(test_rpc_client__channel_destroy_cancels_async),
      cmocka_unit_test(test_rpc_client__no_server_fails_fast_or_waits),
      cmocka_unit_test(test_rpc_client__tls_and_mutual_tls),
  };
  return cmocka_run_group_tests(tests, NULL, sl_echo_fx_teardown_group);
}
