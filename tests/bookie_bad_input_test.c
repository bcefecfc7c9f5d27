/*
 * Bad input to a sluice-bookie process: unknown ledgers and entries, bad
 * ids, a payload over the entry limit and one over the gRPC message limit,
 * a wrong checksum, an overwrite with other bytes, and bytes on the wire
 * that are not a protobuf message at all (sent with gRPC core directly).
 * Each gets a clear status; the process keeps serving and everything stored
 * before reads back unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/crc32c.h"
#include "common/testdata/raw_call.h"
#include "tests/bookie_testlib.h"

static const char *const args[] = {"--max_entry_bytes", "1048576",
                                   "--max_message_bytes", "2097152", NULL};

/* Stored before the abuse; checked after it. */
static void write_known(sl_rpc_channel *ch) {
  sl_bktest_write(ch, 1, 0, 20, 4096, 1);
  sl_bktest_write(ch, 2, 0, 5, 0, 1);
}

static void check_known(sl_rpc_channel *ch) {
  for (int64_t e = 0; e < 20; e++) sl_bktest_check_entry(ch, 1, e, 4096);
  for (int64_t e = 0; e < 5; e++) sl_bktest_check_entry(ch, 2, e, 0);
}

static void test_bookie_bad_input__unknown_ids(void **state) {
  (void)state;
  sl_cluster *c = sl_bktest_cluster("bookie_bad_ids", 1, args);
  sl_rpc_channel *ch = sl_bktest_bookie_channel(c, 0);
  write_known(ch);
  sl_err err = SL_ERR_INIT;
  Sluice__V1__ReadEntryResponse *r = NULL;
  assert_int_equal(sl_bktest_read(ch, 999, 0, false, 0, &r, &err), SL_ENOTFOUND);
  assert_non_null(strstr(err.msg, "999"));
  assert_int_equal(sl_bktest_read(ch, 999, -1, false, 0, &r, &err), SL_ENOTFOUND);
  /* A missing entry of a known ledger is an answer, not an error. */
  assert_int_equal(sl_bktest_read(ch, 1, 20, false, 0, &r, &err), SL_OK);
  assert_false(r->found);
  assert_int_equal(r->last_entry_id, 19);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(sl_bktest_read(ch, 1, -3, false, 0, &r, &err), SL_EINVAL);

  Sluice__V1__ReadLacRequest lq = SLUICE__V1__READ_LAC_REQUEST__INIT;
  lq.ledger_id = 999;
  Sluice__V1__ReadLacResponse *lr = NULL;
  assert_int_equal(sl_bookie_service_read_lac(ch, &lq, &lr, NULL, &err), SL_ENOTFOUND);
  Sluice__V1__DeleteLedgerEntriesRequest dq = SLUICE__V1__DELETE_LEDGER_ENTRIES_REQUEST__INIT;
  dq.ledger_id = 999;
  Sluice__V1__DeleteLedgerEntriesResponse *dr = NULL;
  /* Deleting an unknown ledger leaves a tombstone: a late add cannot create it. */
  assert_int_equal(sl_bookie_service_delete_ledger(ch, &dq, &dr, NULL, &err), SL_OK);
  protobuf_c_message_free_unpacked(&dr->base, NULL);
  Sluice__V1__AddEntryRequest late;
  char late_error[256];
  sl_bktest_add_req(&late, 999, 0, 100, 1);
  assert_int_equal(sl_bktest_add(ch, &late, late_error, sizeof(late_error)),
                   GRPC_STATUS_NOT_FOUND);
  assert_string_equal(late_error, "ledger 999: deleted");
  free(late.payload.data);

  /* An add with a negative entry id. */
  Sluice__V1__AddEntryRequest a;
  char error[256];
  sl_bktest_add_req(&a, 1, -5, 100, 1);
  assert_int_equal(sl_bktest_add(ch, &a, error, sizeof(error)),
                   GRPC_STATUS_INVALID_ARGUMENT);
  free(a.payload.data);

  check_known(ch);
  sl_bktest_finish(c, ch);
}

static void test_bookie_bad_input__bad_adds(void **state) {
  (void)state;
  sl_cluster *c = sl_bktest_cluster("bookie_bad_adds", 1, args);
  sl_rpc_channel *ch = sl_bktest_bookie_channel(c, 0);
  write_known(ch);
  char error[256];
  sl_err err = SL_ERR_INIT;

  /* Wrong checksum: refused, nothing stored, also not over a stored entry. */
  Sluice__V1__AddEntryRequest a;
  sl_bktest_add_req(&a, 1, 20, 4096, 1);
  a.crc32c ^= 0x1234;
  assert_int_equal(sl_bktest_add(ch, &a, error, sizeof(error)), GRPC_STATUS_DATA_LOSS);
  assert_non_null(strstr(error, "checksum"));
  free(a.payload.data);
  Sluice__V1__ReadEntryResponse *r = NULL;
  assert_int_equal(sl_bktest_read(ch, 1, 20, false, 0, &r, &err), SL_OK);
  assert_false(r->found);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  sl_bktest_add_req(&a, 1, 3, 4096, 1);
  assert_true(a.payload.len > 0);
  a.payload.data[0] ^= 0xff;
  assert_int_equal(sl_bktest_add(ch, &a, error, sizeof(error)),
                   GRPC_STATUS_DATA_LOSS); /* bad checksum */
  /* Other bytes, right checksum, for a stored entry: refused too. */
  a.crc32c = sl_entry_crc(a.ledger_id, a.entry_id, a.payload.data, a.payload.len);
  assert_int_equal(sl_bktest_add(ch, &a, error, sizeof(error)),
                   GRPC_STATUS_FAILED_PRECONDITION); /* entry conflict */
  free(a.payload.data);

  /* Over the entry limit (1 MiB): refused on a stream that goes on. */
  sl_rpc_stream *s = NULL;
  assert_int_equal(sl_bookie_service_add_entry_open(ch, NULL, &s, &err), SL_OK);
  Sluice__V1__AddEntryRequest big = SLUICE__V1__ADD_ENTRY_REQUEST__INIT;
  big.ledger_id = 3;
  big.lac = -1;
  big.payload.len = (1u << 20) + 1;
  big.payload.data = calloc(1, big.payload.len);
  big.crc32c = sl_entry_crc(big.ledger_id, big.entry_id, big.payload.data, big.payload.len);
  assert_int_equal(sl_bookie_service_add_entry_send(s, &big, 10000, &err), SL_OK);
  Sluice__V1__AddEntryResponse *ack = NULL;
  assert_int_equal(sl_bookie_service_add_entry_recv(s, &ack, 10000, &err), SL_OK);
  assert_int_equal(ack->code, GRPC_STATUS_RESOURCE_EXHAUSTED);
  print_message("too big: %s\n", ack->error);
  protobuf_c_message_free_unpacked(&ack->base, NULL);
  sl_bktest_add_req(&a, 3, 0, 100, 1);
  assert_int_equal(sl_bookie_service_add_entry_send(s, &a, 10000, &err), SL_OK);
  free(a.payload.data);
  assert_int_equal(sl_bookie_service_add_entry_recv(s, &ack, 10000, &err), SL_OK);
  assert_int_equal(ack->code, 0);
  protobuf_c_message_free_unpacked(&ack->base, NULL);

  /* Over the gRPC message limit (2 MiB): gRPC itself ends the stream. */
  free(big.payload.data);
  big.payload.len = 3u << 20;
  big.payload.data = calloc(1, big.payload.len);
  big.crc32c = sl_entry_crc(big.ledger_id, big.entry_id, big.payload.data, big.payload.len);
  sl_status st = sl_bookie_service_add_entry_send(s, &big, 10000, &err);
  if (st == SL_OK) st = sl_bookie_service_add_entry_recv(s, &ack, 10000, &err);
  assert_int_equal(sl_status_to_grpc(st), GRPC_STATUS_RESOURCE_EXHAUSTED);
  print_message("over the message limit: %s\n", err.msg);
  free(big.payload.data);
  sl_rpc_stream_destroy(s);

  assert_true(sl_cluster_running(c, SL_NODE_BOOKIE, 0));
  check_known(ch);
  sl_bktest_check_entry(ch, 3, 0, 100);
  sl_bktest_finish(c, ch);
}

static void test_bookie_bad_input__garbage_on_the_wire(void **state) {
  (void)state;
  sl_cluster *c = sl_bktest_cluster("bookie_garbage", 1, args);
  const char *addr = sl_cluster_addr(c, SL_NODE_BOOKIE, 0);
  sl_rpc_channel *ch = sl_bktest_channel(addr);
  write_known(ch);
  static const struct {
    const char *method;
    const char *bytes;
    size_t n;
  } junk[] = {
      /* field 1 with wire type 7, which does not exist */
      {"/sluice.v1.BookieService/AddEntry", "\x0f\xff\xff", 3},
      /* field 4 (payload) says 100 bytes, 3 follow */
      {"/sluice.v1.BookieService/AddEntry", "\x08\x01\x22\x64" "abc", 7},
      {"/sluice.v1.BookieService/ReadEntry", "\x22\x64" "abc", 5},
      /* a varint that never ends */
      {"/sluice.v1.BookieService/Fence",
       "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 12},
      {"/sluice.v1.BookieService/ReadLac", "\x0f", 1},
      {"/sluice.v1.BookieService/DeleteLedger", "\x0e\x01", 2},
      {"/sluice.v1.BookieService/ListLedgers", "\x12\x05" "ab", 4},
      {"/sluice.v1.BookieService/GetInfo", "\xff", 1},
  };
  for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
    char details[512];
    grpc_status_code code =
        sl_test_raw_call(addr, junk[i].method, junk[i].bytes, junk[i].n, 10000, details,
                         sizeof(details));
    if (code != GRPC_STATUS_INVALID_ARGUMENT)
      fail_msg("%s with junk: status %d (%s), want INVALID_ARGUMENT", junk[i].method,
               (int)code, details);
  }
  /* The delete above must not have happened; everything is intact. */
  assert_true(sl_cluster_running(c, SL_NODE_BOOKIE, 0));
  check_known(ch);
  sl_bktest_write(ch, 1, 20, 30, 4096, 1);
  sl_bktest_finish(c, ch);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bookie_bad_input__unknown_ids),
      cmocka_unit_test(test_bookie_bad_input__bad_adds),
      cmocka_unit_test(test_bookie_bad_input__garbage_on_the_wire),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
