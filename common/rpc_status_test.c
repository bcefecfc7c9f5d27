/* rpc_status: the exact sl_status survives a real call (unary and streams),
 * while stock clients still see the gRPC code of status.c's map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <grpc/grpc.h>
#include <grpc/support/alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc_client.h"
#include "common/rpc_status.h"
#include "common/testdata/echo_service.h"
#include "common/testdata/raw_call.h"
#include "common/testdata/rpc_fixture.h"

typedef Sluice__Test__EchoRequest echo_req;

/* Every non-OK code, from the one list. */
static const sl_status errors[] = {
#define ERR_(name, value, grpc, proto, text) name,
    SL_STATUS_MAP(ERR_)
#undef ERR_
};
#define N_ERRORS (sizeof(errors) / sizeof(errors[0]))

static grpc_metadata_array one_entry(const char *key, const char *value) {
  grpc_metadata_array a;
  grpc_metadata_array_init(&a);
  a.capacity = a.count = 1;
  a.metadata = gpr_malloc(sizeof(grpc_metadata));
  a.metadata[0].key = grpc_slice_from_copied_string(key);
  a.metadata[0].value = grpc_slice_from_copied_string(value);
  return a;
}

static void free_entry(grpc_metadata_array *a) {
  grpc_slice_unref(a->metadata[0].key);
  grpc_slice_unref(a->metadata[0].value);
  grpc_metadata_array_destroy(a);
}

static void test_rpc_status__encode_decode(void **state) {
  (void)state;
  assert_null(sl_rpc_status_encode(SL_OK));
  assert_null(sl_rpc_status_encode((sl_status)-1000));
  assert_null(sl_rpc_status_encode((sl_status)3));
  for (size_t i = 0; i < N_ERRORS; i++) {
    sl_status st = errors[i];
    if (st == SL_OK) continue;
    const grpc_metadata *md = sl_rpc_status_encode(st);
    assert_non_null(md);
    grpc_metadata_array a = {.count = 1, .capacity = 1, .metadata = (grpc_metadata *)md};
    assert_int_equal(sl_rpc_status_decode(sl_status_to_grpc(st), &a), st);
    /* OK wins over any entry (invariant 2). */
    assert_int_equal(sl_rpc_status_decode(GRPC_STATUS_OK, &a), SL_OK);
  }
}

/* Entries that do not name a code of that gRPC class are ignored
 * (invariant 2): the code alone decides. */
static void test_rpc_status__decode_distrusts_bad_entries(void **state) {
  (void)state;
  static const char *bad[] = {"", "abc", "-5x", " -5", "-999", "5", "0",
                              "-99999999999999999999"};
  int fp = GRPC_STATUS_FAILED_PRECONDITION;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    grpc_metadata_array a = one_entry(SL_RPC_STATUS_KEY, bad[i]);
    assert_int_equal(sl_rpc_status_decode(fp, &a), sl_status_from_grpc(fp));
    free_entry(&a);
  }
  /* A real code whose gRPC class disagrees with the received code. */
  grpc_metadata_array a = one_entry(SL_RPC_STATUS_KEY, "-5"); /* fenced */
  assert_int_equal(sl_rpc_status_decode(GRPC_STATUS_UNAVAILABLE, &a), SL_EUNAVAIL);
  assert_int_equal(sl_rpc_status_decode(fp, &a), SL_EFENCED);
  free_entry(&a);
  a = one_entry("x-sl-status", "-5");
  assert_int_equal(sl_rpc_status_decode(fp, &a), SL_EPRECOND);
  free_entry(&a);
  assert_int_equal(sl_rpc_status_decode(GRPC_STATUS_ABORTED, NULL), SL_EVERSION);
}

static echo_req fail_req(sl_status st) {
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.action = SLUICE__TEST__ECHO_REQUEST__ACTION__FAIL;
  req.n = st;
  return req;
}

/* The end status of a stream: receives until the stream ends. */
static sl_status stream_end(sl_rpc_stream *s, sl_err *err) {
  for (;;) {
    ProtobufCMessage *msg = NULL;
    sl_status st = sl_rpc_stream_recv(s, &msg, 10000, err);
    if (st != SL_OK || msg == NULL) return st;
    protobuf_c_message_free_unpacked(msg, NULL);
  }
}

static void test_rpc_status__every_code_survives_unary(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  for (size_t i = 0; i < N_ERRORS; i++) {
    sl_status st = errors[i];
    if (st == SL_OK) continue;
    echo_req req = fail_req(st);
    ProtobufCMessage *resp = NULL;
    sl_err err = SL_ERR_INIT;
    sl_status got = sl_rpc_unary(fx.ch, &sl_echo_unary, &req.base, &resp, NULL, &err);
    if (got != st) fail_msg("unary: sent %s, got %s", sl_status_str(st), sl_status_str(got));
    assert_null(resp);
    assert_string_equal(err.msg, "echo: failing as asked");
  }
  sl_echo_fx_stop(&fx);
}

static void test_rpc_status__every_code_survives_streams(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  for (size_t i = 0; i < N_ERRORS; i++) {
    sl_status st = errors[i];
    if (st == SL_OK) continue;
    echo_req req = fail_req(st);
    sl_err err = SL_ERR_INIT;
    sl_rpc_stream *s = NULL;
    /* Server streaming: the request itself fails. */
    assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_server_stream, &req.base, NULL, &s, &err),
                     SL_OK);
    sl_status got = stream_end(s, &err);
    if (got != st) fail_msg("server stream: sent %s, got %s", sl_status_str(st), sl_status_str(got));
    sl_rpc_stream_destroy(s);
    /* Bidi: an echo first, then the failing message. */
    assert_int_equal(sl_rpc_stream_open(fx.ch, &sl_echo_bidi, NULL, NULL, &s, &err), SL_OK);
    echo_req hello = SLUICE__TEST__ECHO_REQUEST__INIT;
    assert_int_equal(sl_rpc_stream_send(s, &hello.base, 10000, &err), SL_OK);
    assert_int_equal(sl_rpc_stream_send(s, &req.base, 10000, &err), SL_OK);
    got = stream_end(s, &err);
    if (got != st) fail_msg("bidi: sent %s, got %s", sl_status_str(st), sl_status_str(got));
    sl_rpc_stream_destroy(s);
  }
  sl_echo_fx_stop(&fx);
}

/* A stock client (gRPC core alone, ignoring the trailer) sees the gRPC
 * code of status.c's one map. */
static void test_rpc_status__stock_client_sees_grpc_code(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  for (size_t i = 0; i < N_ERRORS; i++) {
    sl_status st = errors[i];
    if (st == SL_OK) continue;
    echo_req req = fail_req(st);
    uint8_t bytes[64];
    size_t n = protobuf_c_message_pack(&req.base, bytes);
    char details[128];
    grpc_status_code code = sl_test_raw_call(fx.target, sl_echo_unary.path, bytes, n, 10000,
                                             details, sizeof(details));
    assert_int_equal(code, sl_status_to_grpc(st));
    assert_string_equal(details, "echo: failing as asked");
  }
  sl_echo_fx_stop(&fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rpc_status__encode_decode),
      cmocka_unit_test(test_rpc_status__decode_distrusts_bad_entries),
      cmocka_unit_test(test_rpc_status__every_code_survives_unary),
      cmocka_unit_test(test_rpc_status__every_code_survives_streams),
      cmocka_unit_test(test_rpc_status__stock_client_sees_grpc_code),
  };
  return cmocka_run_group_tests(tests, NULL, sl_echo_fx_teardown_group);
}
