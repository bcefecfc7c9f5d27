#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <grpc/status.h>

#include "common.pb-c.h"
#include "common/status.h"

typedef struct status_row {
  sl_status st;
  const char *name;  /* "SL_EFENCED" */
  const char *proto; /* "STATUS_FENCED" */
  int grpc;
} status_row;

static const status_row rows[] = {
#define ROW_(name, value, grpc, proto, text) {name, #name, "STATUS_" #proto, grpc},
    SL_STATUS_MAP(ROW_)
#undef ROW_
};
#define N_ROWS (sizeof(rows) / sizeof(rows[0]))

/* sluice.v1.Status mirrors sl_status: the same codes, value = -code, and
 * each proto name is the one the X-macro list gives. Checked both ways. */
static void test_status__proto_enum_mirrors_list(void **state) {
  (void)state;
  const ProtobufCEnumDescriptor *d = &sluice__v1__status__descriptor;
  assert_int_equal(d->n_values, N_ROWS);
  for (size_t i = 0; i < N_ROWS; i++) {
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, -(int)rows[i].st);
    if (v == NULL) fail_msg("%s: no sluice.v1.Status value %d", rows[i].name, -rows[i].st);
    if (strcmp(v->name, rows[i].proto) != 0)
      fail_msg("%s: proto value %d is %s, want %s", rows[i].name, v->value, v->name,
               rows[i].proto);
  }
  for (unsigned i = 0; i < d->n_values; i++) {
    const ProtobufCEnumValue *v = &d->values[i];
    assert_string_not_equal(sl_status_str((sl_status)-v->value), "unknown status");
  }
}

/* Codes are 0, -1, -2, ... without gaps (rpc_status.c indexes by -code). */
static void test_status__codes_are_dense(void **state) {
  (void)state;
  for (size_t i = 0; i < N_ROWS; i++) assert_int_equal(rows[i].st, -(int)i);
  assert_string_equal(sl_status_str((sl_status)-(int)N_ROWS), "unknown status");
  assert_string_equal(sl_status_str((sl_status)1), "unknown status");
}

/* The coarse map keeps the gRPC class of every code: what comes back from a
 * code alone has the same gRPC code (the exact code needs the trailer,
 * rpc_status.h). */
static void test_status__grpc_class_round_trips(void **state) {
  (void)state;
  for (size_t i = 0; i < N_ROWS; i++) {
    assert_int_equal(sl_status_to_grpc(rows[i].st), rows[i].grpc);
    assert_int_equal(sl_status_to_grpc(sl_status_from_grpc(rows[i].grpc)), rows[i].grpc);
  }
  assert_int_equal(sl_status_from_grpc(GRPC_STATUS_UNKNOWN), SL_EINTERNAL);
  assert_int_equal(sl_status_from_grpc(12345), SL_EINTERNAL);
  assert_int_equal(sl_status_to_grpc((sl_status)-1000), GRPC_STATUS_UNKNOWN);
}

static void test_status__err_set_and_wrap(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  assert_string_equal(sl_err_msg(&err, SL_EFENCED), "fenced");
  assert_int_equal(sl_err_set(&err, SL_EFENCED, "ledger %d: fenced by new owner", 42),
                   SL_EFENCED);
  assert_int_equal(sl_err_wrap(&err, SL_EFENCED, "bookie %s", "b1"), SL_EFENCED);
  assert_string_equal(sl_err_msg(&err, SL_EFENCED), "bookie b1: ledger 42: fenced by new owner");
  assert_int_equal(sl_err_set(NULL, SL_EIO, "x"), SL_EIO);
  assert_string_equal(sl_err_msg(NULL, SL_EIO), "i/o error");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_status__proto_enum_mirrors_list),
      cmocka_unit_test(test_status__codes_are_dense),
      cmocka_unit_test(test_status__grpc_class_round_trips),
      cmocka_unit_test(test_status__err_set_and_wrap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
