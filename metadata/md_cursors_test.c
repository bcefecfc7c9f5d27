/* Managed-ledger lists and cursors over real gRPC to a local-store service. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/metadata_util.h"

#define P "public/orders-partition-1"

typedef struct fixture {
  mdt_local l;
  uint64_t epoch; /* our broker owns P at this epoch */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  mdt_local_start(&f->l, NULL);
  int64_t s = mdt_open_broker(f->l.ch, "b1", 0);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(f->l.ch, P, "b1", s);
  f->epoch = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  mdt_local_stop(&f->l);
  free(f);
  return 0;
}

static sl_status update_ml(sl_rpc_channel *ch, const char *p, Sluice__V1__LedgerRef **refs,
                           size_t n, int64_t expected, uint64_t epoch, int64_t *version,
                           sl_err *err) {
  Sluice__V1__ManagedLedgerInfo ml = SLUICE__V1__MANAGED_LEDGER_INFO__INIT;
  ml.partition = (char *)p;
  ml.ledgers = refs;
  ml.n_ledgers = n;
  Sluice__V1__UpdateManagedLedgerRequest req = SLUICE__V1__UPDATE_MANAGED_LEDGER_REQUEST__INIT;
  req.info = &ml;
  req.expected_version = expected;
  req.epoch = epoch;
  Sluice__V1__ManagedLedgerResponse *resp = NULL;
  sl_status st = sl_metadata_service_update_managed_ledger(ch, &req, &resp, NULL, err);
  if (st == SL_OK) {
    if (version) *version = resp->version;
    assert_int_equal(resp->info->epoch, epoch);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

static void test_md_cursors__managed_ledger(void **state) {
  fixture *f = *state;
  sl_rpc_channel *ch = f->l.ch;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__GetManagedLedgerRequest gr = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  gr.partition = P;
  Sluice__V1__ManagedLedgerResponse *got = NULL;
  mdt_expect(sl_metadata_service_get_managed_ledger(ch, &gr, &got, NULL, &err), SL_ENOTFOUND,
             &err);
  Sluice__V1__LedgerRef a = SLUICE__V1__LEDGER_REF__INIT, b = SLUICE__V1__LEDGER_REF__INIT;
  a.ledger_id = 7;
  a.entries = 100;
  b.ledger_id = 9;
  Sluice__V1__LedgerRef *refs[] = {&a, &b};
  int64_t v1 = 0, v2 = 0;
  mdt_expect(update_ml(ch, P, refs, 1, 0, f->epoch, &v1, &err), SL_OK, &err);
  mdt_expect(update_ml(ch, P, refs, 1, 0, f->epoch, NULL, &err), SL_EEXIST, &err);
  mdt_expect(update_ml(ch, P, refs, 2, v1, f->epoch, &v2, &err), SL_OK, &err);
  mdt_expect(update_ml(ch, P, refs, 1, v1, f->epoch, NULL, &err), SL_EVERSION, &err);
  mdt_expect(update_ml(ch, P, refs, 1, v2, f->epoch - 1, NULL, &err), SL_ESTALE_EPOCH, &err);
  mdt_expect(sl_metadata_service_get_managed_ledger(ch, &gr, &got, NULL, &err), SL_OK, &err);
  assert_int_equal(got->version, v2);
  assert_int_equal(got->info->n_ledgers, 2);
  assert_int_equal(got->info->ledgers[0]->ledger_id, 7);
  assert_int_equal(got->info->ledgers[0]->entries, 100);
  assert_int_equal(got->info->epoch, f->epoch);
  protobuf_c_message_free_unpacked(&got->base, NULL);
  /* A partition never rolls back to a lower ledger id, even after the
   * list's last ledger was dropped. */
  Sluice__V1__LedgerRef c = SLUICE__V1__LEDGER_REF__INIT;
  c.ledger_id = 8;
  Sluice__V1__LedgerRef *back[] = {&a, &c};
  mdt_expect(update_ml(ch, P, back, 2, v2, f->epoch, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "must increase"));
  Sluice__V1__LedgerRef *down[] = {&b, &a};
  mdt_expect(update_ml(ch, P, down, 2, v2, f->epoch, NULL, &err), SL_EINVAL, &err);
  /* Garbage lists. */
  b.ledger_id = 7;
  mdt_expect(update_ml(ch, P, refs, 2, v2, f->epoch, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "must increase"));
  b.ledger_id = 0;
  mdt_expect(update_ml(ch, P, refs, 2, v2, f->epoch, NULL, &err), SL_EINVAL, &err);
  b.ledger_id = 8;
  b.entries = -4;
  mdt_expect(update_ml(ch, P, refs, 2, v2, f->epoch, NULL, &err), SL_EINVAL, &err);
  mdt_expect(update_ml(ch, "bad", refs, 1, v2, f->epoch, NULL, &err), SL_EINVAL, &err);
  mdt_expect(update_ml(ch, P, refs, 1, -1, f->epoch, NULL, &err), SL_EINVAL, &err);
  /* Updating a list that is not there. */
  mdt_expect(update_ml(ch, "public/none", refs, 1, 5, 0, NULL, &err), SL_ENOTFOUND, &err);
  Sluice__V1__UpdateManagedLedgerRequest empty = SLUICE__V1__UPDATE_MANAGED_LEDGER_REQUEST__INIT;
  mdt_expect(sl_metadata_service_update_managed_ledger(ch, &empty, &got, NULL, &err), SL_EINVAL,
             &err);
}

static sl_status update_ml_info(sl_rpc_channel *ch, Sluice__V1__ManagedLedgerInfo *ml,
                                int64_t expected, uint64_t epoch, int64_t *version,
                                sl_err *err) {
  Sluice__V1__UpdateManagedLedgerRequest req = SLUICE__V1__UPDATE_MANAGED_LEDGER_REQUEST__INIT;
  req.info = ml;
  req.expected_version = expected;
  req.epoch = epoch;
  Sluice__V1__ManagedLedgerResponse *resp = NULL;
  sl_status st = sl_metadata_service_update_managed_ledger(ch, &req, &resp, NULL, err);
  if (st == SL_OK && version != NULL) *version = resp->version;
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static void test_md_cursors__properties_and_terminated(void **state) {
  fixture *f = *state;
  sl_rpc_channel *ch = f->l.ch;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__LedgerRef a = SLUICE__V1__LEDGER_REF__INIT, b = SLUICE__V1__LEDGER_REF__INIT;
  a.ledger_id = 5;
  b.ledger_id = 6;
  Sluice__V1__LedgerRef *refs[] = {&a, &b};
  Sluice__V1__KeyValue p1 = SLUICE__V1__KEY_VALUE__INIT, p2 = SLUICE__V1__KEY_VALUE__INIT;
  p1.key = "dedup/producer-1";
  p1.value = "seq=41;pos=5:3";
  p2.key = "dedup/producer-2";
  p2.value = "seq=7;pos=5:2";
  Sluice__V1__KeyValue *props[] = {&p1, &p2};
  Sluice__V1__ManagedLedgerInfo ml = SLUICE__V1__MANAGED_LEDGER_INFO__INIT;
  ml.partition = P;
  ml.ledgers = refs;
  ml.n_ledgers = 1;
  ml.properties = props;
  ml.n_properties = 2;
  int64_t v = 0;
  mdt_expect(update_ml_info(ch, &ml, 0, f->epoch, &v, &err), SL_OK, &err);
  Sluice__V1__GetManagedLedgerRequest gr = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  gr.partition = P;
  Sluice__V1__ManagedLedgerResponse *got = NULL;
  mdt_expect(sl_metadata_service_get_managed_ledger(ch, &gr, &got, NULL, &err), SL_OK, &err);
  assert_int_equal(got->info->n_properties, 2);
  assert_string_equal(got->info->properties[0]->key, "dedup/producer-1");
  assert_string_equal(got->info->properties[0]->value, "seq=41;pos=5:3");
  assert_false(got->info->terminated);
  protobuf_c_message_free_unpacked(&got->base, NULL);
  /* Properties go with the list's CAS: an old version loses. */
  p1.value = "seq=42;pos=5:4";
  mdt_expect(update_ml_info(ch, &ml, v - 1, f->epoch, NULL, &err), SL_EVERSION, &err);
  /* Bad maps. */
  p2.key = "dedup/producer-1";
  mdt_expect(update_ml_info(ch, &ml, v, f->epoch, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "twice"));
  p2.key = "";
  mdt_expect(update_ml_info(ch, &ml, v, f->epoch, NULL, &err), SL_EINVAL, &err);
  p2.key = "dedup/producer-2";
  static char big[70 * 1024];
  memset(big, 'x', sizeof(big) - 1);
  p2.value = big;
  mdt_expect(update_ml_info(ch, &ml, v, f->epoch, NULL, &err), SL_EINVAL, &err);
  p2.value = "seq=7;pos=5:2";
  /* Terminate: then nothing is added, and it stays terminated. */
  ml.terminated = true;
  mdt_expect(update_ml_info(ch, &ml, v, f->epoch, &v, &err), SL_OK, &err);
  ml.n_ledgers = 2;
  mdt_expect(update_ml_info(ch, &ml, v, f->epoch, NULL, &err), SL_EPRECOND, &err);
  assert_non_null(strstr(err.msg, "terminated"));
  ml.n_ledgers = 1;
  ml.terminated = false;
  mdt_expect(update_ml_info(ch, &ml, v, f->epoch, NULL, &err), SL_EPRECOND, &err);
  /* Trimming a terminated list is fine. */
  ml.terminated = true;
  ml.n_ledgers = 0;
  mdt_expect(update_ml_info(ch, &ml, v, f->epoch, &v, &err), SL_OK, &err);
  mdt_expect(sl_metadata_service_get_managed_ledger(ch, &gr, &got, NULL, &err), SL_OK, &err);
  assert_true(got->info->terminated);
  assert_string_equal(got->info->properties[0]->value, "seq=42;pos=5:4");
  protobuf_c_message_free_unpacked(&got->base, NULL);
}

static void test_md_cursors__crud_and_list(void **state) {
  fixture *f = *state;
  sl_rpc_channel *ch = f->l.ch;
  sl_err err = SL_ERR_INIT;
  int64_t v = 0, entry = 0, got_v = 0;
  mdt_expect(mdt_st_get_cursor(ch, P, "s1", NULL, NULL, &err), SL_ENOTFOUND, &err);
  mdt_expect(mdt_st_update_cursor(ch, P, "s1", 4, 0, f->epoch, &v, &err), SL_OK, &err);
  mdt_expect(mdt_st_update_cursor(ch, P, "s1", 4, 0, f->epoch, NULL, &err), SL_EEXIST, &err);
  mdt_expect(mdt_st_update_cursor(ch, P, "s1", 9, v, f->epoch, &v, &err), SL_OK, &err);
  mdt_expect(mdt_st_get_cursor(ch, P, "s1", &entry, &got_v, &err), SL_OK, &err);
  assert_int_equal(entry, 9);
  assert_int_equal(got_v, v);
  mdt_expect(mdt_st_update_cursor(ch, P, "s0", 1, 0, f->epoch, NULL, &err), SL_OK, &err);
  /* A cursor of a similarly named partition must not show up in the list. */
  mdt_expect(mdt_st_update_cursor(ch, "public/orders-partition-10", "zz", 1, 0, 0, NULL, &err),
             SL_OK, &err);
  Sluice__V1__ListCursorsRequest lr = SLUICE__V1__LIST_CURSORS_REQUEST__INIT;
  lr.partition = P;
  Sluice__V1__ListCursorsResponse *list = NULL;
  mdt_expect(sl_metadata_service_list_cursors(ch, &lr, &list, NULL, &err), SL_OK, &err);
  assert_int_equal(list->n_cursors, 2);
  assert_string_equal(list->cursors[0]->subscription, "s0");
  assert_string_equal(list->cursors[1]->subscription, "s1");
  protobuf_c_message_free_unpacked(&list->base, NULL);

  Sluice__V1__DeleteCursorRequest dr = SLUICE__V1__DELETE_CURSOR_REQUEST__INIT;
  dr.partition = P;
  dr.subscription = "s0";
  dr.epoch = f->epoch - 1; /* a stale owner cannot delete it */
  Sluice__V1__DeleteCursorResponse *dresp = NULL;
  mdt_expect(sl_metadata_service_delete_cursor(ch, &dr, &dresp, NULL, &err), SL_ESTALE_EPOCH,
             &err);
  assert_non_null(strstr(err.msg, "stale"));
  dr.epoch = f->epoch;
  mdt_expect(sl_metadata_service_delete_cursor(ch, &dr, &dresp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&dresp->base, NULL);
  mdt_expect(sl_metadata_service_delete_cursor(ch, &dr, &dresp, NULL, &err), SL_ENOTFOUND, &err);
  dr.subscription = "";
  mdt_expect(sl_metadata_service_delete_cursor(ch, &dr, &dresp, NULL, &err), SL_EINVAL, &err);
  mdt_expect(sl_metadata_service_list_cursors(ch, &lr, &list, NULL, &err), SL_OK, &err);
  assert_int_equal(list->n_cursors, 1);
  protobuf_c_message_free_unpacked(&list->base, NULL);
  lr.partition = "x";
  mdt_expect(sl_metadata_service_list_cursors(ch, &lr, &list, NULL, &err), SL_EINVAL, &err);
}

static sl_status put_ranges(sl_rpc_channel *ch, uint64_t epoch, Sluice__V1__AckedRanges **r,
                            size_t n, int64_t *version, sl_err *err) {
  Sluice__V1__Position md = SLUICE__V1__POSITION__INIT;
  md.ledger_id = 1;
  md.entry_id = -1;
  Sluice__V1__CursorInfo c = SLUICE__V1__CURSOR_INFO__INIT;
  c.partition = P;
  c.subscription = "holes";
  c.mark_delete = &md;
  c.acked = r;
  c.n_acked = n;
  c.type = SLUICE__V1__SUBSCRIPTION_TYPE__SUBSCRIPTION_TYPE_SHARED;
  Sluice__V1__UpdateCursorRequest req = SLUICE__V1__UPDATE_CURSOR_REQUEST__INIT;
  req.info = &c;
  req.expected_version = *version;
  req.epoch = epoch;
  Sluice__V1__CursorResponse *resp = NULL;
  sl_status st = sl_metadata_service_update_cursor(ch, &req, &resp, NULL, err);
  if (st == SL_OK) {
    *version = resp->version;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

static void test_md_cursors__acked_ranges(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  int64_t v = 0;
  /* Every other entry acked: 100k ranges survive a round trip. */
  enum { N = 100000 };
  uint64_t *bounds = malloc(2 * N * sizeof(*bounds));
  for (size_t i = 0; i < 2 * N; i++) bounds[i] = i % 2 == 0 ? (i == 0 ? 0 : 2) : 0;
  Sluice__V1__AckedRanges r = SLUICE__V1__ACKED_RANGES__INIT;
  r.ledger_id = 1;
  r.bounds = bounds;
  r.n_bounds = 2 * N;
  Sluice__V1__AckedRanges *rs[] = {&r, &r};
  mdt_expect(put_ranges(f->l.ch, f->epoch, rs, 1, &v, &err), SL_OK, &err);
  Sluice__V1__GetCursorRequest gr = SLUICE__V1__GET_CURSOR_REQUEST__INIT;
  gr.partition = P;
  gr.subscription = "holes";
  Sluice__V1__CursorResponse *got = NULL;
  mdt_expect(sl_metadata_service_get_cursor(f->l.ch, &gr, &got, NULL, &err), SL_OK, &err);
  assert_int_equal(got->info->n_acked, 1);
  assert_int_equal(got->info->acked[0]->n_bounds, 2 * N);
  assert_int_equal(got->info->type, SLUICE__V1__SUBSCRIPTION_TYPE__SUBSCRIPTION_TYPE_SHARED);
  protobuf_c_message_free_unpacked(&got->base, NULL);
  /* Overlap (a zero gap), odd bounds, ledger 0, the same ledger twice. */
  bounds[4] = 0;
  mdt_expect(put_ranges(f->l.ch, f->epoch, rs, 1, &v, &err), SL_EINVAL, &err);
  bounds[4] = 2;
  r.n_bounds = 3;
  mdt_expect(put_ranges(f->l.ch, f->epoch, rs, 1, &v, &err), SL_EINVAL, &err);
  r.n_bounds = 2 * N;
  mdt_expect(put_ranges(f->l.ch, f->epoch, rs, 2, &v, &err), SL_EINVAL, &err);
  r.ledger_id = 0;
  mdt_expect(put_ranges(f->l.ch, f->epoch, rs, 1, &v, &err), SL_EINVAL, &err);
  r.ledger_id = 1;
  bounds[1] = UINT64_MAX;
  mdt_expect(put_ranges(f->l.ch, f->epoch, rs, 1, &v, &err), SL_EINVAL, &err);
  /* Too big for the store: a clear RESOURCE_EXHAUSTED, not a crash. */
  enum { BIG = 600000 };
  uint64_t *big = malloc(2 * BIG * sizeof(*big));
  for (size_t i = 0; i < 2 * BIG; i++) big[i] = i % 2 == 0 ? 1000 : 1000;
  r.bounds = big;
  r.n_bounds = 2 * BIG;
  mdt_expect(put_ranges(f->l.ch, f->epoch, rs, 1, &v, &err), SL_ETOOBIG, &err);
  free(big);
  free(bounds);
}

static void test_md_cursors__bad_input(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  mdt_expect(mdt_st_update_cursor(f->l.ch, P, "a b", 1, 0, f->epoch, NULL, &err), SL_EINVAL, &err);
  mdt_expect(mdt_st_update_cursor(f->l.ch, "", "s", 1, 0, f->epoch, NULL, &err), SL_EINVAL, &err);
  mdt_expect(mdt_st_update_cursor(f->l.ch, P, "s", -2, 0, f->epoch, NULL, &err), SL_EINVAL, &err);
  mdt_expect(mdt_st_update_cursor(f->l.ch, P, "s", 1, -1, f->epoch, NULL, &err), SL_EINVAL, &err);
  mdt_expect(mdt_st_update_cursor(f->l.ch, P, "s", 1, 77, f->epoch, NULL, &err), SL_ENOTFOUND,
             &err);
  mdt_expect(mdt_st_get_cursor(f->l.ch, P, "", NULL, NULL, &err), SL_EINVAL, &err);
  Sluice__V1__UpdateCursorRequest req = SLUICE__V1__UPDATE_CURSOR_REQUEST__INIT;
  Sluice__V1__CursorResponse *resp = NULL;
  mdt_expect(sl_metadata_service_update_cursor(f->l.ch, &req, &resp, NULL, &err), SL_EINVAL, &err);
  Sluice__V1__CursorInfo c = SLUICE__V1__CURSOR_INFO__INIT;
  c.partition = P;
  c.subscription = "s";
  c.type = (Sluice__V1__SubscriptionType)12;
  req.info = &c;
  req.epoch = f->epoch;
  mdt_expect(sl_metadata_service_update_cursor(f->l.ch, &req, &resp, NULL, &err), SL_EINVAL, &err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_md_cursors__managed_ledger, setup, teardown),
      cmocka_unit_test_setup_teardown(test_md_cursors__crud_and_list, setup, teardown),
      cmocka_unit_test_setup_teardown(test_md_cursors__properties_and_terminated, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_md_cursors__acked_ranges, setup, teardown),
      cmocka_unit_test_setup_teardown(test_md_cursors__bad_input, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
