/* Ownership and epochs over real gRPC to a local-store service. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "tests/metadata_util.h"

#define P "public/orders-partition-0"

static sl_status lookup(sl_rpc_channel *ch, const char *p, Sluice__V1__OwnerInfo **out,
                        sl_err *err) {
  Sluice__V1__LookupOwnerRequest req = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
  req.partition = (char *)p;
  return sl_metadata_service_lookup_owner(ch, &req, out, NULL, err);
}

static sl_status release(sl_rpc_channel *ch, const char *p, int64_t session, uint64_t epoch,
                         sl_err *err) {
  Sluice__V1__ReleaseOwnershipRequest req = SLUICE__V1__RELEASE_OWNERSHIP_REQUEST__INIT;
  req.partition = (char *)p;
  req.session_id = session;
  req.epoch = epoch;
  Sluice__V1__ReleaseOwnershipResponse *resp = NULL;
  sl_status st = sl_metadata_service_release_ownership(ch, &req, &resp, NULL, err);
  if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static void test_md_ownership__acquire_lookup_release(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s1 = mdt_open_broker(l->ch, "b1", 0), s2 = mdt_open_broker(l->ch, "b2", 0);
  Sluice__V1__OwnerInfo *o = NULL;
  mdt_expect(lookup(l->ch, P, &o, &err), SL_ENOTFOUND, &err);

  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(l->ch, P, "b1", s1);
  assert_true(r->acquired);
  assert_int_equal(r->owner->epoch, 1);
  assert_string_equal(r->owner->broker_id, "b1");
  assert_string_equal(r->owner->partition, P);
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* Someone else: not acquired, told who owns it. */
  r = mdt_acquire(l->ch, P, "b2", s2);
  assert_false(r->acquired);
  assert_string_equal(r->owner->broker_id, "b1");
  protobuf_c_message_free_unpacked(&r->base, NULL);
  /* The owner again (a retry): acquired, same epoch. */
  r = mdt_acquire(l->ch, P, "b1", s1);
  assert_true(r->acquired);
  assert_int_equal(r->owner->epoch, 1);
  protobuf_c_message_free_unpacked(&r->base, NULL);

  mdt_expect(lookup(l->ch, P, &o, &err), SL_OK, &err);
  assert_string_equal(o->broker_id, "b1");
  assert_non_null(strstr(o->broker_address, "127.0.0.1:")); /* from its registration */
  protobuf_c_message_free_unpacked(&o->base, NULL);

  mdt_expect(release(l->ch, P, s2, 1, &err), SL_EPRECOND, &err);
  mdt_expect(release(l->ch, P, s1, 2, &err), SL_ESTALE_EPOCH, &err);
  mdt_expect(release(l->ch, P, s1, 1, &err), SL_OK, &err);
  mdt_expect(release(l->ch, P, s1, 1, &err), SL_ENOTFOUND, &err);
  mdt_expect(lookup(l->ch, P, &o, &err), SL_ENOTFOUND, &err);

  /* The next owner gets a higher epoch. */
  r = mdt_acquire(l->ch, P, "b2", s2);
  assert_true(r->acquired);
  assert_int_equal(r->owner->epoch, 2);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_md_ownership__ends_with_session(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s1 = mdt_open_broker(l->ch, "b1", 0), s2 = mdt_open_broker(l->ch, "b2", 0);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(l->ch, P, "b1", s1);
  assert_true(r->acquired);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  Sluice__V1__CloseSessionRequest cr = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  cr.session_id = s1;
  cr.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  cr.node_id = "b1";
  Sluice__V1__CloseSessionResponse *cresp = NULL;
  mdt_expect(sl_metadata_service_close_session(l->ch, &cr, &cresp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&cresp->base, NULL);
  Sluice__V1__OwnerInfo *o = NULL;
  mdt_expect(lookup(l->ch, P, &o, &err), SL_ENOTFOUND, &err);
  r = mdt_acquire(l->ch, P, "b2", s2);
  assert_true(r->acquired);
  assert_int_equal(r->owner->epoch, 2);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  /* b1's old session can do nothing any more. */
  mdt_expect(mdt_st_acquire(l->ch, "public/other", "b1", s1, &r, &err), SL_EPRECOND, &err);
}

static void test_md_ownership__stale_epoch_refused(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s1 = mdt_open_broker(l->ch, "b1", 0), s2 = mdt_open_broker(l->ch, "b2", 0);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(l->ch, P, "b1", s1);
  uint64_t e1 = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  int64_t v = 0;
  mdt_expect(mdt_st_update_cursor(l->ch, P, "sub", 5, 0, e1, &v, &err), SL_OK, &err);
  mdt_expect(mdt_st_update_cursor(l->ch, P, "sub", 6, v, e1 + 1, NULL, &err), SL_EPRECOND, &err);
  assert_non_null(strstr(err.msg, "never granted"));
  mdt_expect(release(l->ch, P, s1, e1, &err), SL_OK, &err);
  r = mdt_acquire(l->ch, P, "b2", s2);
  uint64_t e2 = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_true(e2 > e1);
  /* The old owner's write, even with the right version, is refused. */
  mdt_expect(mdt_st_update_cursor(l->ch, P, "sub", 6, v, e1, NULL, &err), SL_ESTALE_EPOCH, &err);
  assert_non_null(strstr(err.msg, "stale"));
  mdt_expect(mdt_st_update_cursor(l->ch, P, "sub", 6, v, 0, NULL, &err), SL_ESTALE_EPOCH, &err);
  int64_t entry = 0;
  mdt_expect(mdt_st_get_cursor(l->ch, P, "sub", &entry, NULL, &err), SL_OK, &err);
  assert_int_equal(entry, 5);
  mdt_expect(mdt_st_update_cursor(l->ch, P, "sub", 6, v, e2, NULL, &err), SL_OK, &err);
}

/* Replica A caches P's epoch; the take-over happens through replica B.
 * A must still refuse the old epoch and accept the new one. */
static void test_md_ownership__epoch_cache_on_other_replica(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  mdt_local r2;
  mdt_replica_start(&r2, l->store, NULL);
  sl_rpc_channel *b = r2.ch;

  int64_t s1 = mdt_open_broker(l->ch, "b1", 0), s2 = mdt_open_broker(b, "b2", 0);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(l->ch, P, "b1", s1);
  uint64_t e1 = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  int64_t v = 0;
  mdt_expect(mdt_st_update_cursor(l->ch, P, "s", 1, 0, e1, &v, &err), SL_OK, &err); /* A caches e1 */
  mdt_expect(release(b, P, s1, e1, &err), SL_OK, &err);
  r = mdt_acquire(b, P, "b2", s2);
  uint64_t e2 = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_true(e2 > e1);
  /* Through A, whose cache still says e1. */
  mdt_expect(mdt_st_update_cursor(l->ch, P, "s", 2, v, e1, NULL, &err), SL_ESTALE_EPOCH, &err);
  assert_non_null(strstr(err.msg, "stale"));
  mdt_expect(mdt_st_update_cursor(l->ch, P, "s", 2, v, e2, &v, &err), SL_OK, &err);
  mdt_expect(mdt_st_update_cursor(l->ch, P, "s", 3, v, e1, NULL, &err), SL_ESTALE_EPOCH, &err);
  mdt_local_stop(&r2);
}

static void test_md_ownership__bad_input(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__AcquireOwnershipResponse *r = NULL;
  int64_t s = mdt_open_broker(l->ch, "b1", 0);
  mdt_expect(mdt_st_acquire(l->ch, "nopartition", "b1", s, &r, &err), SL_EINVAL, &err);
  mdt_expect(mdt_st_acquire(l->ch, "a/b-partition-007", "b1", s, &r, &err), SL_EINVAL, &err);
  mdt_expect(mdt_st_acquire(l->ch, P, "b1", 0, &r, &err), SL_EINVAL, &err);
  mdt_expect(mdt_st_acquire(l->ch, P, "", s, &r, &err), SL_EINVAL, &err);
  /* Not registered, or registered under another session. */
  mdt_expect(mdt_st_acquire(l->ch, P, "ghost", s, &r, &err), SL_EPRECOND, &err);
  mdt_expect(mdt_st_acquire(l->ch, P, "b1", s + 1, &r, &err), SL_EPRECOND, &err);
  Sluice__V1__AcquireOwnershipRequest req = SLUICE__V1__ACQUIRE_OWNERSHIP_REQUEST__INIT;
  req.partition = P;
  req.session_id = s;
  mdt_expect(sl_metadata_service_acquire_ownership(l->ch, &req, &r, NULL, &err), SL_EINVAL, &err);
  Sluice__V1__OwnerInfo *o = NULL;
  mdt_expect(lookup(l->ch, "", &o, &err), SL_EINVAL, &err);
  mdt_expect(release(l->ch, P, 0, 1, &err), SL_EINVAL, &err);
  mdt_expect(release(l->ch, "x", s, 1, &err), SL_EINVAL, &err);
}

static Sluice__V1__AcquireOwnershipRequest acquire_req(const char *p, const char *id,
                                                      int64_t session,
                                                      Sluice__V1__BrokerInfo *b) {
  Sluice__V1__AcquireOwnershipRequest req = SLUICE__V1__ACQUIRE_OWNERSHIP_REQUEST__INIT;
  b->id = (char *)id;
  b->address = "127.0.0.1:7000";
  req.partition = (char *)p;
  req.session_id = session;
  req.broker = b;
  return req;
}

/* AcquireOwnership only for partitions of topics that exist. */
static void test_md_ownership__topic_must_exist(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s = mdt_open_broker(l->ch, "b1", 0);
  Sluice__V1__BrokerInfo b = SLUICE__V1__BROKER_INFO__INIT;
  Sluice__V1__AcquireOwnershipResponse *r = NULL;
  Sluice__V1__AcquireOwnershipRequest req = acquire_req("public/nothing", "b1", s, &b);
  mdt_expect(sl_metadata_service_acquire_ownership(l->ch, &req, &r, NULL, &err), SL_ENOTFOUND,
             &err);
  assert_non_null(strstr(err.msg, "not found"));
  mdt_ensure_topic(l->ch, P); /* public/orders, MDT_TOPIC_PARTITIONS partitions */
  char name[64];
  snprintf(name, sizeof(name), "public/orders-partition-%d", MDT_TOPIC_PARTITIONS);
  req = acquire_req(name, "b1", s, &b);
  mdt_expect(sl_metadata_service_acquire_ownership(l->ch, &req, &r, NULL, &err), SL_ENOTFOUND,
             &err);
  assert_non_null(strstr(err.msg, "has partitions"));
  req = acquire_req("public/orders", "b1", s, &b); /* partitioned: no plain name */
  mdt_expect(sl_metadata_service_acquire_ownership(l->ch, &req, &r, NULL, &err), SL_ENOTFOUND,
             &err);
  mdt_ensure_topic(l->ch, "public/plain");
  req = acquire_req("public/plain-partition-0", "b1", s, &b);
  mdt_expect(sl_metadata_service_acquire_ownership(l->ch, &req, &r, NULL, &err), SL_ENOTFOUND,
             &err);
  assert_non_null(strstr(err.msg, "not partitioned"));
  req = acquire_req("public/plain", "b1", s, &b);
  mdt_expect(sl_metadata_service_acquire_ownership(l->ch, &req, &r, NULL, &err), SL_OK, &err);
  assert_true(r->acquired);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

static sl_status delete_topic(sl_rpc_channel *ch, const char *name, sl_err *err) {
  Sluice__V1__DeleteTopicRequest req = SLUICE__V1__DELETE_TOPIC_REQUEST__INIT;
  req.name = (char *)name;
  Sluice__V1__DeleteTopicResponse *resp = NULL;
  sl_status st = sl_metadata_service_delete_topic(ch, &req, &resp, NULL, err);
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

/* DeleteTopic, then CreateTopic under the same name: nothing old comes
 * back, and the old owner's writes are refused. */
static void test_md_ownership__delete_topic_leaves_nothing(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s1 = mdt_open_broker(l->ch, "b1", 0);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(l->ch, P, "b1", s1);
  uint64_t e1 = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  int64_t cv = 0;
  mdt_expect(mdt_st_update_cursor(l->ch, P, "sub", 41, 0, e1, &cv, &err), SL_OK, &err);
  Sluice__V1__LedgerRef ref = SLUICE__V1__LEDGER_REF__INIT;
  ref.ledger_id = mdt_create_ledger(l->ch, P, e1, NULL);
  Sluice__V1__LedgerRef *refs[] = {&ref};
  Sluice__V1__ManagedLedgerInfo ml = SLUICE__V1__MANAGED_LEDGER_INFO__INIT;
  ml.partition = P;
  ml.ledgers = refs;
  ml.n_ledgers = 1;
  Sluice__V1__UpdateManagedLedgerRequest mr = SLUICE__V1__UPDATE_MANAGED_LEDGER_REQUEST__INIT;
  mr.info = &ml;
  mr.epoch = e1;
  Sluice__V1__ManagedLedgerResponse *mresp = NULL;
  mdt_expect(sl_metadata_service_update_managed_ledger(l->ch, &mr, &mresp, NULL, &err), SL_OK,
             &err);
  int64_t mlv = mresp->version;
  protobuf_c_message_free_unpacked(&mresp->base, NULL);
  /* A cursor whose ack state lives in a cursor ledger, and a ledger of P
   * that neither the list nor a cursor names (an owner crashed between
   * creating it and recording it). */
  uint64_t cursor_ledger = mdt_create_ledger(l->ch, P, e1, NULL);
  uint64_t unnamed = mdt_create_ledger(l->ch, P, e1, NULL);
  Sluice__V1__Position pos = SLUICE__V1__POSITION__INIT;
  pos.ledger_id = ref.ledger_id;
  Sluice__V1__CursorLedgerRef al = SLUICE__V1__CURSOR_LEDGER_REF__INIT;
  al.ledger_id = cursor_ledger;
  Sluice__V1__CursorInfo ci = SLUICE__V1__CURSOR_INFO__INIT;
  ci.partition = P;
  ci.subscription = "big";
  ci.mark_delete = &pos;
  ci.ack_ledger = &al;
  Sluice__V1__UpdateCursorRequest cr = SLUICE__V1__UPDATE_CURSOR_REQUEST__INIT;
  cr.info = &ci;
  cr.epoch = e1;
  Sluice__V1__CursorResponse *cresp = NULL;
  mdt_expect(sl_metadata_service_update_cursor(l->ch, &cr, &cresp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&cresp->base, NULL);

  mdt_expect(delete_topic(l->ch, "public/orders", &err), SL_OK, &err);
  /* The list's and the cursor's ledgers are tombstoned, which is what
   * tells their bookies to drop them; the metadata service cannot know of
   * the unnamed one, which stays. */
  Sluice__V1__GetLedgerRequest gl = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  Sluice__V1__LedgerResponse *lresp = NULL;
  gl.ledger_id = ref.ledger_id;
  mdt_expect(sl_metadata_service_get_ledger(l->ch, &gl, &lresp, NULL, &err), SL_EDELETED, &err);
  gl.ledger_id = cursor_ledger;
  mdt_expect(sl_metadata_service_get_ledger(l->ch, &gl, &lresp, NULL, &err), SL_EDELETED, &err);
  gl.ledger_id = unnamed;
  mdt_expect(sl_metadata_service_get_ledger(l->ch, &gl, &lresp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&lresp->base, NULL);
  mdt_expect(delete_topic(l->ch, "public/orders", &err), SL_ENOTFOUND, &err);
  /* Gone: owner, list, cursor; and the partition cannot be owned. */
  Sluice__V1__OwnerInfo *o = NULL;
  mdt_expect(lookup(l->ch, P, &o, &err), SL_ENOTFOUND, &err);
  Sluice__V1__BrokerInfo b = SLUICE__V1__BROKER_INFO__INIT;
  Sluice__V1__AcquireOwnershipRequest req = acquire_req(P, "b1", s1, &b);
  mdt_expect(sl_metadata_service_acquire_ownership(l->ch, &req, &r, NULL, &err), SL_ENOTFOUND,
             &err);
  /* The old owner, still believing it owns P, is refused. */
  mdt_expect(mdt_st_update_cursor(l->ch, P, "sub", 42, cv, e1, NULL, &err), SL_ESTALE_EPOCH,
             &err);
  assert_non_null(strstr(err.msg, "stale"));
  mr.expected_version = mlv;
  mdt_expect(sl_metadata_service_update_managed_ledger(l->ch, &mr, &mresp, NULL, &err),
             SL_ESTALE_EPOCH, &err);
  mr.expected_version = 0; /* nor can it re-create the list */
  mdt_expect(sl_metadata_service_update_managed_ledger(l->ch, &mr, &mresp, NULL, &err),
             SL_ESTALE_EPOCH, &err);
  mdt_expect(mdt_st_update_cursor(l->ch, P, "sub", 42, 0, e1, NULL, &err), SL_ESTALE_EPOCH,
             &err);

  /* Re-created: empty, and a new owner gets a higher epoch. */
  mdt_ensure_topic(l->ch, P);
  int64_t s2 = mdt_open_broker(l->ch, "b2", 0);
  r = mdt_acquire(l->ch, P, "b2", s2);
  assert_true(r->acquired);
  assert_true(r->owner->epoch > e1 + 1);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  mdt_expect(mdt_st_get_cursor(l->ch, P, "sub", NULL, NULL, &err), SL_ENOTFOUND, &err);
  Sluice__V1__GetManagedLedgerRequest gr = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  gr.partition = P;
  mdt_expect(sl_metadata_service_get_managed_ledger(l->ch, &gr, &mresp, NULL, &err),
             SL_ENOTFOUND, &err);
  Sluice__V1__ListCursorsRequest lr = SLUICE__V1__LIST_CURSORS_REQUEST__INIT;
  lr.partition = P;
  Sluice__V1__ListCursorsResponse *list = NULL;
  mdt_expect(sl_metadata_service_list_cursors(l->ch, &lr, &list, NULL, &err), SL_OK, &err);
  assert_int_equal(list->n_cursors, 0);
  protobuf_c_message_free_unpacked(&list->base, NULL);
}

/* A list that does not decode (damaged in the store) names no ledger
 * anyone could find: DeleteTopic still finishes, instead of failing on it
 * every time. */
static void test_md_ownership__delete_topic_with_unreadable_list(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  const char *part = "public/damaged";
  mdt_ensure_topic(l->ch, part);
  char key[64];
  snprintf(key, sizeof(key), "/sluice/managed-ledgers/%s", part);
  static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
  assert_int_equal(sl_store_put(l->store, key, strlen(key), junk, sizeof(junk),
                                SL_STORE_REV_ANY, 0, NULL, &err), SL_OK);
  mdt_expect(delete_topic(l->ch, part, &err), SL_OK, &err);
  mdt_expect(delete_topic(l->ch, part, &err), SL_ENOTFOUND, &err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_md_ownership__acquire_lookup_release, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ownership__ends_with_session, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ownership__stale_epoch_refused, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ownership__epoch_cache_on_other_replica,
                                      mdt_local_setup, mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ownership__bad_input, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ownership__topic_must_exist, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ownership__delete_topic_leaves_nothing,
                                      mdt_local_setup, mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ownership__delete_topic_with_unreadable_list,
                                      mdt_local_setup, mdt_local_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
