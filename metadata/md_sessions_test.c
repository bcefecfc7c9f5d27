/* Sessions over real gRPC to a service on a local store (md_sessions.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "tests/metadata_util.h"
#include "common/testing.h"

static Sluice__V1__ListBrokersResponse *list_brokers(sl_rpc_channel *ch) {
  Sluice__V1__ListBrokersRequest req = SLUICE__V1__LIST_BROKERS_REQUEST__INIT;
  Sluice__V1__ListBrokersResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_list_brokers(ch, &req, &resp, NULL, &err), SL_OK, &err);
  return resp;
}

static Sluice__V1__ListBookiesResponse *list_bookies(sl_rpc_channel *ch, bool writable) {
  Sluice__V1__ListBookiesRequest req = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
  req.writable_only = writable;
  Sluice__V1__ListBookiesResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_list_bookies(ch, &req, &resp, NULL, &err), SL_OK, &err);
  return resp;
}

static sl_status keep_alive(sl_rpc_channel *ch, int64_t session, uint32_t *ttl, sl_err *err) {
  Sluice__V1__KeepAliveRequest req = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
  req.session_id = session;
  Sluice__V1__KeepAliveResponse *resp = NULL;
  sl_status st = sl_metadata_service_keep_alive(ch, &req, &resp, NULL, err);
  if (st == SL_OK) {
    if (ttl != NULL) *ttl = resp->ttl_seconds;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

static sl_status close_session(sl_rpc_channel *ch, int64_t session, sl_err *err) {
  Sluice__V1__CloseSessionRequest req = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  req.session_id = session;
  Sluice__V1__CloseSessionResponse *resp = NULL;
  sl_status st = sl_metadata_service_close_session(ch, &req, &resp, NULL, err);
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static void test_md_sessions__open_list_close(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s2 = mdt_open_broker(l->ch, "broker-2", 0);
  int64_t s1 = mdt_open_broker(l->ch, "broker-1", 3);
  assert_true(s1 != s2);
  Sluice__V1__ListBrokersResponse *lb = list_brokers(l->ch);
  assert_int_equal(lb->n_brokers, 2);
  assert_string_equal(lb->brokers[0]->id, "broker-1"); /* sorted by id */
  assert_string_equal(lb->brokers[1]->id, "broker-2");
  assert_string_equal(lb->brokers[0]->version, "test");
  protobuf_c_message_free_unpacked(&lb->base, NULL);

  uint32_t ttl = 0;
  mdt_expect(keep_alive(l->ch, s1, &ttl, &err), SL_OK, &err);
  assert_true(ttl >= 2 && ttl <= 3);

  mdt_expect(close_session(l->ch, s1, &err), SL_OK, &err);
  lb = list_brokers(l->ch);
  assert_int_equal(lb->n_brokers, 1);
  assert_string_equal(lb->brokers[0]->id, "broker-2");
  protobuf_c_message_free_unpacked(&lb->base, NULL);
  /* A closed session is gone: the node must open a new one. */
  mdt_expect(keep_alive(l->ch, s1, NULL, &err), SL_ENOTFOUND, &err);
  assert_non_null(strstr(err.msg, "open a new session"));
  mdt_expect(close_session(l->ch, s1, &err), SL_ENOTFOUND, &err);
  /* The id is free again. */
  int64_t s3 = mdt_open_broker(l->ch, "broker-1", 0);
  assert_true(s3 > 0);
}

static void test_md_sessions__one_registration_per_id(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s = mdt_open_broker(l->ch, "b", 0), s2 = 0;
  mdt_expect(mdt_st_open_broker(l->ch, "b", 0, &s2, &err), SL_EEXIST, &err);
  assert_non_null(strstr(err.msg, "already registered by session"));
  /* The failed attempt left the first registration alone. */
  mdt_expect(keep_alive(l->ch, s, NULL, &err), SL_OK, &err);
}

static void test_md_sessions__bookies_writable_only(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  mdt_open_bookie(l->ch, "bookie-0", false, 0);
  int64_t s1 = mdt_open_bookie(l->ch, "bookie-1", false, 0);
  mdt_open_bookie(l->ch, "bookie-2", true, 0);
  Sluice__V1__ListBookiesResponse *r = list_bookies(l->ch, false);
  assert_int_equal(r->n_bookies, 3);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  r = list_bookies(l->ch, true);
  assert_int_equal(r->n_bookies, 2);
  assert_string_equal(r->bookies[0]->id, "bookie-0");
  assert_string_equal(r->bookies[1]->id, "bookie-1");
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* bookie-1 turns read-only through UpdateNode. */
  Sluice__V1__BookieInfo b = SLUICE__V1__BOOKIE_INFO__INIT;
  b.id = "bookie-1";
  b.address = "127.0.0.1:4000";
  b.read_only = true;
  Sluice__V1__UpdateNodeRequest up = SLUICE__V1__UPDATE_NODE_REQUEST__INIT;
  up.session_id = s1;
  up.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE;
  up.bookie = &b;
  Sluice__V1__UpdateNodeResponse *ur = NULL;
  mdt_expect(sl_metadata_service_update_node(l->ch, &up, &ur, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&ur->base, NULL);
  r = list_bookies(l->ch, true);
  assert_int_equal(r->n_bookies, 1);
  assert_string_equal(r->bookies[0]->id, "bookie-0");
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* Another session may not rewrite bookie-1. */
  int64_t other = mdt_open_broker(l->ch, "x", 0);
  up.session_id = other;
  mdt_expect(sl_metadata_service_update_node(l->ch, &up, &ur, NULL, &err), SL_EPRECOND, &err);
  /* Nor can a node update what is not registered. */
  b.id = "bookie-9";
  mdt_expect(sl_metadata_service_update_node(l->ch, &up, &ur, NULL, &err), SL_ENOTFOUND, &err);
}

static void test_md_sessions__lapse_removes_registration(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s = mdt_open_broker(l->ch, "short", 2);
  long long t0 = mdt_now_ms(), gone_at = 0;
  /* Poll until the registration disappears (TTL 2 s, lapse by TTL + 1 s). */
  while (mdt_now_ms() - t0 < sl_test_scaled_ms(5000)) {
    Sluice__V1__ListBrokersResponse *lb = list_brokers(l->ch);
    size_t n = lb->n_brokers;
    protobuf_c_message_free_unpacked(&lb->base, NULL);
    if (n == 0) {
      gone_at = mdt_now_ms();
      break;
    }
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  assert_true(gone_at > 0);
  assert_true(gone_at - t0 <= 3000 + sl_test_scaled_ms(500));
  mdt_expect(keep_alive(l->ch, s, NULL, &err), SL_ENOTFOUND, &err);
}

static void test_md_sessions__bad_input(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__OpenSessionRequest req = SLUICE__V1__OPEN_SESSION_REQUEST__INIT;
  Sluice__V1__OpenSessionResponse *resp = NULL;
  /* No kind. */
  mdt_expect(sl_metadata_service_open_session(l->ch, &req, &resp, NULL, &err), SL_EINVAL, &err);
  /* Kind without info. */
  req.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  mdt_expect(sl_metadata_service_open_session(l->ch, &req, &resp, NULL, &err), SL_EINVAL, &err);
  req.kind = (Sluice__V1__NodeKind)77;
  mdt_expect(sl_metadata_service_open_session(l->ch, &req, &resp, NULL, &err), SL_EINVAL, &err);
  Sluice__V1__BrokerInfo b = SLUICE__V1__BROKER_INFO__INIT;
  req.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  req.broker = &b;
  b.id = "ok";
  b.address = "nohostport";
  mdt_expect(sl_metadata_service_open_session(l->ch, &req, &resp, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "host:port"));
  b.address = "127.0.0.1:1";
  b.id = "bad/id";
  mdt_expect(sl_metadata_service_open_session(l->ch, &req, &resp, NULL, &err), SL_EINVAL, &err);
  b.id = "ok";
  b.load_permille = 1001;
  mdt_expect(sl_metadata_service_open_session(l->ch, &req, &resp, NULL, &err), SL_EINVAL, &err);
  b.load_permille = 0;
  req.ttl_seconds = 1;
  mdt_expect(sl_metadata_service_open_session(l->ch, &req, &resp, NULL, &err), SL_EINVAL, &err);
  req.ttl_seconds = 100000;
  mdt_expect(sl_metadata_service_open_session(l->ch, &req, &resp, NULL, &err), SL_EINVAL, &err);
  /* Sessions that never were. */
  mdt_expect(keep_alive(l->ch, 0, NULL, &err), SL_EINVAL, &err);
  mdt_expect(keep_alive(l->ch, -5, NULL, &err), SL_EINVAL, &err);
  mdt_expect(keep_alive(l->ch, 123456789, NULL, &err), SL_ENOTFOUND, &err);
  mdt_expect(close_session(l->ch, 123456789, &err), SL_ENOTFOUND, &err);
  /* Nothing was registered by any of that. */
  Sluice__V1__ListBrokersResponse *lb = list_brokers(l->ch);
  assert_int_equal(lb->n_brokers, 0);
  protobuf_c_message_free_unpacked(&lb->base, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_md_sessions__open_list_close, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_sessions__one_registration_per_id, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_sessions__bookies_writable_only, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_sessions__lapse_removes_registration, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_sessions__bad_input, mdt_local_setup,
                                      mdt_local_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
