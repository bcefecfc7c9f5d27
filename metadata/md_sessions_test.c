/* Sessions over real gRPC to a service on a local store (md_sessions.c):
 * registration, take-over by a restart from the same address, refusal of
 * another address, holder checks, and session ids kept out of answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
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

#define BROKER SLUICE__V1__NODE_KIND__NODE_KIND_BROKER

static sl_status keep_alive(sl_rpc_channel *ch, int64_t session, const char *node,
                            uint32_t *ttl, sl_err *err) {
  Sluice__V1__KeepAliveRequest req = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
  req.session_id = session;
  req.kind = BROKER;
  req.node_id = (char *)node;
  Sluice__V1__KeepAliveResponse *resp = NULL;
  sl_status st = sl_metadata_service_keep_alive(ch, &req, &resp, NULL, err);
  if (st == SL_OK) {
    if (ttl != NULL) *ttl = resp->ttl_seconds;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

static sl_status close_session(sl_rpc_channel *ch, int64_t session, const char *node,
                               sl_err *err) {
  Sluice__V1__CloseSessionRequest req = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  req.session_id = session;
  req.kind = BROKER;
  req.node_id = (char *)node;
  Sluice__V1__CloseSessionResponse *resp = NULL;
  sl_status st = sl_metadata_service_close_session(ch, &req, &resp, NULL, err);
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

/* Opens a broker session for id advertising addr. */
static sl_status open_at(sl_rpc_channel *ch, const char *id, const char *addr,
                         int64_t *session, bool *took_over, sl_err *err) {
  Sluice__V1__BrokerInfo b = SLUICE__V1__BROKER_INFO__INIT;
  b.id = (char *)id;
  b.address = (char *)addr;
  Sluice__V1__OpenSessionRequest req = SLUICE__V1__OPEN_SESSION_REQUEST__INIT;
  req.kind = BROKER;
  req.broker = &b;
  Sluice__V1__OpenSessionResponse *resp = NULL;
  sl_status st = sl_metadata_service_open_session(ch, &req, &resp, NULL, err);
  if (st == SL_OK) {
    *session = resp->session_id;
    if (took_over != NULL) *took_over = resp->took_over;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

static sl_status lookup(sl_rpc_channel *ch, const char *p, Sluice__V1__OwnerInfo **o,
                        sl_err *err) {
  Sluice__V1__LookupOwnerRequest req = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
  req.partition = (char *)p;
  return sl_metadata_service_lookup_owner(ch, &req, o, NULL, err);
}

/* Creates topic public/t with partitions 0 and 1 (owning needs a topic). */
static void create_topic(sl_rpc_channel *ch) {
  mdt_create_namespace(ch, "public");
  Sluice__V1__CreateTopicRequest req = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  req.name = "public/t";
  req.partitions = 2;
  Sluice__V1__TopicInfo *t = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_create_topic(ch, &req, &t, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&t->base, NULL);
}

/* Fails if text shows session s (a credential): as "session <number>",
 * or s itself when it is long enough not to match by chance (the local
 * store's lease ids are small; etcd's are 19 digits). */
static void assert_no_session(const char *text, int64_t s) {
  for (const char *p = strstr(text, "session "); p != NULL; p = strstr(p + 1, "session "))
    if (p[8] >= '0' && p[8] <= '9') fail_msg("a session id shown in \"%s\"", text);
  char id[32];
  snprintf(id, sizeof(id), "%" PRId64, s);
  if (strlen(id) >= 6 && strstr(text, id) != NULL)
    fail_msg("session %s shown in \"%s\"", id, text);
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
  mdt_expect(keep_alive(l->ch, s1, "broker-1", &ttl, &err), SL_OK, &err);
  assert_true(ttl >= 2 && ttl <= 3);

  mdt_expect(close_session(l->ch, s1, "broker-1", &err), SL_OK, &err);
  lb = list_brokers(l->ch);
  assert_int_equal(lb->n_brokers, 1);
  assert_string_equal(lb->brokers[0]->id, "broker-2");
  protobuf_c_message_free_unpacked(&lb->base, NULL);
  /* A closed session is gone: the node must open a new one. */
  mdt_expect(keep_alive(l->ch, s1, "broker-1", NULL, &err), SL_ENOTFOUND, &err);
  assert_non_null(strstr(err.msg, "open a new session"));
  mdt_expect(close_session(l->ch, s1, "broker-1", &err), SL_ENOTFOUND, &err);
  /* The id is free again. */
  int64_t s3 = mdt_open_broker(l->ch, "broker-1", 0);
  assert_true(s3 > 0);
}

static void test_md_sessions__other_address_refused(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s = 0, s2 = 0;
  mdt_expect(open_at(l->ch, "b", "10.0.0.1:6650", &s, NULL, &err), SL_OK, &err);
  /* Another process configured with the same id cannot register too. */
  mdt_expect(open_at(l->ch, "b", "10.0.0.2:6650", &s2, NULL, &err), SL_EEXIST, &err);
  assert_non_null(strstr(err.msg, "10.0.0.1:6650"));
  assert_no_session(err.msg, s);
  /* The refused attempt left the registration and its session alone. */
  mdt_expect(keep_alive(l->ch, s, "b", NULL, &err), SL_OK, &err);
  Sluice__V1__ListBrokersResponse *lb = list_brokers(l->ch);
  assert_int_equal(lb->n_brokers, 1);
  assert_string_equal(lb->brokers[0]->address, "10.0.0.1:6650");
  protobuf_c_message_free_unpacked(&lb->base, NULL);
  /* Once that session is closed, the id is free for any address. */
  mdt_expect(close_session(l->ch, s, "b", &err), SL_OK, &err);
  mdt_expect(open_at(l->ch, "b", "10.0.0.2:6650", &s2, NULL, &err), SL_OK, &err);
}

static void test_md_sessions__restart_takes_over(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  const char *p = "public/t-partition-0";
  int64_t s1 = 0, s2 = 0;
  create_topic(l->ch);
  bool took = true;
  mdt_expect(open_at(l->ch, "b", "10.0.0.1:6650", &s1, &took, &err), SL_OK, &err);
  assert_false(took);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(l->ch, p, "b", s1);
  assert_true(r->acquired);
  uint64_t e1 = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* The restarted process (same id, same address) registers at once. */
  long long t0 = sl_clock_mono_ms();
  mdt_expect(open_at(l->ch, "b", "10.0.0.1:6650", &s2, &took, &err), SL_OK, &err);
  long long took_ms = sl_clock_mono_ms() - t0;
  assert_true(took);
  assert_true(s2 != s1);
  print_message("restart under the same id registered in %lld ms\n", took_ms);
  /* The old session is over: refused, and its ownership went with it. */
  mdt_expect(keep_alive(l->ch, s1, "b", NULL, &err), SL_EPERM, &err);
  assert_no_session(err.msg, s2);
  mdt_expect(close_session(l->ch, s1, "b", &err), SL_EPERM, &err);
  Sluice__V1__OwnerInfo *o = NULL;
  mdt_expect(lookup(l->ch, p, &o, &err), SL_ENOTFOUND, &err);
  /* The new session holds the registration and may own again. */
  mdt_expect(keep_alive(l->ch, s2, "b", NULL, &err), SL_OK, &err);
  r = mdt_acquire(l->ch, p, "b", s2);
  assert_true(r->acquired);
  assert_true(r->owner->epoch > e1);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  Sluice__V1__ListBrokersResponse *lb = list_brokers(l->ch);
  assert_int_equal(lb->n_brokers, 1);
  protobuf_c_message_free_unpacked(&lb->base, NULL);
}

static void test_md_sessions__only_holder_keeps_or_closes(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s1 = mdt_open_broker(l->ch, "b1", 0), s2 = mdt_open_broker(l->ch, "b2", 0);
  /* b2 knows b1's session id somehow, but b1's registration is not b2's. */
  mdt_expect(close_session(l->ch, s1, "b2", &err), SL_EPERM, &err);
  assert_no_session(err.msg, s2);
  mdt_expect(keep_alive(l->ch, s1, "b2", NULL, &err), SL_EPERM, &err);
  mdt_expect(close_session(l->ch, s2, "b1", &err), SL_EPERM, &err);
  assert_no_session(err.msg, s1);
  /* A session that never was, naming a registered node or nobody. */
  mdt_expect(close_session(l->ch, s1 + s2 + 12345, "b1", &err), SL_EPERM, &err);
  mdt_expect(keep_alive(l->ch, 123456789, "zz", NULL, &err), SL_ENOTFOUND, &err);
  /* Kind and id are required. */
  mdt_expect(close_session(l->ch, s1, "", &err), SL_EINVAL, &err);
  Sluice__V1__KeepAliveRequest kr = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
  kr.session_id = s1;
  kr.node_id = "b1";
  Sluice__V1__KeepAliveResponse *kresp = NULL;
  mdt_expect(sl_metadata_service_keep_alive(l->ch, &kr, &kresp, NULL, &err), SL_EINVAL, &err);
  /* Nothing of that touched either session. */
  mdt_expect(keep_alive(l->ch, s1, "b1", NULL, &err), SL_OK, &err);
  mdt_expect(keep_alive(l->ch, s2, "b2", NULL, &err), SL_OK, &err);
  Sluice__V1__ListBrokersResponse *lb = list_brokers(l->ch);
  assert_int_equal(lb->n_brokers, 2);
  protobuf_c_message_free_unpacked(&lb->base, NULL);
}

static void test_md_sessions__ids_not_in_answers(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  const char *p = "public/t-partition-1";
  create_topic(l->ch);
  int64_t s1 = mdt_open_broker(l->ch, "b1", 0), s2 = mdt_open_broker(l->ch, "b2", 0);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(l->ch, p, "b1", s1);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  /* Another broker is told who owns, not with which session. */
  r = mdt_acquire(l->ch, p, "b2", s2);
  assert_false(r->acquired);
  assert_string_equal(r->owner->broker_id, "b1");
  assert_int_equal(r->owner->base.n_unknown_fields, 0); /* field 5 is reserved */
  protobuf_c_message_free_unpacked(&r->base, NULL);
  Sluice__V1__OwnerInfo *o = NULL;
  mdt_expect(lookup(l->ch, p, &o, &err), SL_OK, &err);
  assert_string_equal(o->broker_id, "b1");
  assert_int_equal(o->base.n_unknown_fields, 0);
  protobuf_c_message_free_unpacked(&o->base, NULL);
  /* Nor in refusals. */
  Sluice__V1__ReleaseOwnershipRequest rr = SLUICE__V1__RELEASE_OWNERSHIP_REQUEST__INIT;
  rr.partition = (char *)p;
  rr.session_id = s2;
  rr.epoch = 1;
  Sluice__V1__ReleaseOwnershipResponse *rresp = NULL;
  mdt_expect(sl_metadata_service_release_ownership(l->ch, &rr, &rresp, NULL, &err),
             SL_EPRECOND, &err);
  assert_no_session(err.msg, s1);
  mdt_expect(mdt_st_acquire(l->ch, p, "b1", s2, &r, &err), SL_EPRECOND, &err);
  assert_no_session(err.msg, s1);
}

static void test_md_sessions__bookies_writable_only(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  mdt_open_bookie(l->ch, "bookie-0", false, 0);
  int64_t s1 = mdt_open_bookie(l->ch, "bookie-1", false, 0);
  mdt_open_bookie(l->ch, "bookie-2", true, 0);
  Sluice__V1__ListBookiesResponse *r = list_bookies(l->ch, false);
  assert_int_equal(r->n_bookies, 3);
  char addr[64];
  snprintf(addr, sizeof(addr), "%s", r->bookies[1]->address);
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
  /* The address is what take-over rests on: it stays within a session. */
  mdt_expect(sl_metadata_service_update_node(l->ch, &up, &ur, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "cannot become 127.0.0.1:4000"));
  b.address = addr;
  mdt_expect(sl_metadata_service_update_node(l->ch, &up, &ur, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&ur->base, NULL);
  r = list_bookies(l->ch, true);
  assert_int_equal(r->n_bookies, 1);
  assert_string_equal(r->bookies[0]->id, "bookie-0");
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* Another session may not rewrite bookie-1. */
  int64_t other = mdt_open_broker(l->ch, "x", 0);
  up.session_id = other;
  mdt_expect(sl_metadata_service_update_node(l->ch, &up, &ur, NULL, &err), SL_EPERM, &err);
  assert_no_session(err.msg, s1);
  /* Nor can a node update what is not registered. */
  b.id = "bookie-9";
  mdt_expect(sl_metadata_service_update_node(l->ch, &up, &ur, NULL, &err), SL_ENOTFOUND, &err);
}

static void test_md_sessions__lapse_removes_registration(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s = mdt_open_broker(l->ch, "short", 2);
  long long t0 = sl_clock_mono_ms(), gone_at = 0;
  /* Poll until the registration disappears (TTL 2 s, lapse by TTL + 1 s). */
  while (sl_clock_mono_ms() - t0 < sl_test_scaled_ms(5000)) {
    Sluice__V1__ListBrokersResponse *lb = list_brokers(l->ch);
    size_t n = lb->n_brokers;
    protobuf_c_message_free_unpacked(&lb->base, NULL);
    if (n == 0) {
      gone_at = sl_clock_mono_ms();
      break;
    }
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  assert_true(gone_at > 0);
  assert_true(gone_at - t0 <= 3000 + sl_test_scaled_ms(500));
  mdt_expect(keep_alive(l->ch, s, "short", NULL, &err), SL_ENOTFOUND, &err);
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
  mdt_expect(keep_alive(l->ch, 0, "ok", NULL, &err), SL_EINVAL, &err);
  mdt_expect(keep_alive(l->ch, -5, "ok", NULL, &err), SL_EINVAL, &err);
  mdt_expect(keep_alive(l->ch, 123456789, "ok", NULL, &err), SL_ENOTFOUND, &err);
  mdt_expect(keep_alive(l->ch, 123456789, "bad/id", NULL, &err), SL_EINVAL, &err);
  mdt_expect(close_session(l->ch, 123456789, "ok", &err), SL_ENOTFOUND, &err);
  /* Nothing was registered by any of that. */
  Sluice__V1__ListBrokersResponse *lb = list_brokers(l->ch);
  assert_int_equal(lb->n_brokers, 0);
  protobuf_c_message_free_unpacked(&lb->base, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_md_sessions__open_list_close, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_sessions__other_address_refused, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_sessions__restart_takes_over, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_sessions__only_holder_keeps_or_closes,
                                      mdt_local_setup, mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_sessions__ids_not_in_answers, mdt_local_setup,
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
