/*
 * sluice-metadata --store local:DIR (standalone mode): no etcd anywhere,
 * every kind of call works, and state survives a kill -9 of the service.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/metadata_cluster.h"
#include "tests/metadata_util.h"

#define P "public/local-partition-0"

static void test_metadata_local__standalone_and_restart(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_cluster *c = mdt_cluster_start("mdlocal", 1, true, NULL);
  assert_null(sl_cluster_etcd(c));
  sl_rpc_channel *ch = mdt_cluster_connect(c, 0);

  mdt_create_namespace(ch, "public");
  Sluice__V1__CreateTopicRequest tr = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  tr.name = "public/local";
  tr.partitions = 2;
  Sluice__V1__TopicInfo *t = NULL;
  mdt_expect(sl_metadata_service_create_topic(ch, &tr, &t, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&t->base, NULL);
  int64_t s1 = mdt_open_broker(ch, "b1", 30);
  mdt_open_bookie(ch, "k1", false, 30);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(ch, P, "b1", s1);
  assert_true(r->acquired);
  uint64_t e1 = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  int64_t lv = 0, cv = 0;
  uint64_t ledger = mdt_create_ledger(ch, P, e1, &lv);
  mdt_expect(mdt_st_update_cursor(ch, P, "sub", 41, 0, e1, &cv, &err), SL_OK, &err);
  uint64_t before = mdt_allocate_ledger_id(ch);

  Sluice__V1__WatchRequest wr = SLUICE__V1__WATCH_REQUEST__INIT;
  wr.target = SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BOOKIES;
  sl_rpc_stream *w = NULL;
  mdt_expect(sl_metadata_service_watch_open(ch, &wr, NULL, &w, &err), SL_OK, &err);
  Sluice__V1__WatchEvent *ev = NULL;
  mdt_expect(sl_metadata_service_watch_recv(w, &ev, 10000, &err), SL_OK, &err);
  assert_string_equal(ev->key, "k1");
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  sl_rpc_stream_destroy(w);

  /* Crash and restart: everything is still there. */
  mdt_expect(sl_cluster_kill9(c, SL_NODE_METADATA, 0, &err), SL_OK, &err);
  mdt_expect(sl_cluster_restart(c, SL_NODE_METADATA, 0, &err), SL_OK, &err);
  sl_rpc_channel_destroy(ch);
  ch = mdt_cluster_connect(c, 0);
  Sluice__V1__GetTopicRequest gt = SLUICE__V1__GET_TOPIC_REQUEST__INIT;
  gt.name = "public/local";
  mdt_expect(sl_metadata_service_get_topic(ch, &gt, &t, NULL, &err), SL_OK, &err);
  assert_int_equal(t->partitions, 2);
  protobuf_c_message_free_unpacked(&t->base, NULL);
  int64_t entry = 0, version = 0;
  mdt_expect(mdt_st_get_cursor(ch, P, "sub", &entry, &version, &err), SL_OK, &err);
  assert_int_equal(entry, 41);
  assert_int_equal(version, cv);
  Sluice__V1__GetLedgerRequest gl = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  gl.ledger_id = ledger;
  Sluice__V1__LedgerResponse *l = NULL;
  mdt_expect(sl_metadata_service_get_ledger(ch, &gl, &l, NULL, &err), SL_OK, &err);
  assert_int_equal(l->version, lv);
  protobuf_c_message_free_unpacked(&l->base, NULL);
  assert_true(mdt_allocate_ledger_id(ch) > before); /* a fresh block: never handed out twice */

  /* The owner's session ends; the next owner's epoch is higher. */
  Sluice__V1__CloseSessionRequest cr = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  cr.session_id = s1;
  Sluice__V1__CloseSessionResponse *cresp = NULL;
  mdt_expect(sl_metadata_service_close_session(ch, &cr, &cresp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&cresp->base, NULL);
  int64_t s2 = mdt_open_broker(ch, "b2", 30);
  r = mdt_acquire(ch, P, "b2", s2);
  assert_true(r->acquired);
  assert_true(r->owner->epoch > e1);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  mdt_expect(mdt_st_update_cursor(ch, P, "sub", 42, cv, e1, NULL, &err), SL_ESTALE_EPOCH, &err);

  sl_rpc_channel_destroy(ch);
  sl_cluster_destroy(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metadata_local__standalone_and_restart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
