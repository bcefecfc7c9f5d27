/*
 * Two sluice-metadata replicas on one etcd: clients of either see every
 * change made through the other, and killing one loses nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "tests/metadata_cluster.h"
#include "tests/metadata_util.h"

typedef struct fixture {
  sl_cluster *c;
  sl_rpc_channel *a, *b; /* to replica 0 and replica 1 */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  f->c = mdt_cluster_start("mdrepl", 2, false, NULL);
  f->a = mdt_cluster_connect(f->c, 0);
  f->b = mdt_cluster_connect(f->c, 1);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  sl_rpc_channel_destroy(f->a);
  sl_rpc_channel_destroy(f->b);
  sl_cluster_destroy(f->c);
  free(f);
  return 0;
}

/* An ownership PUT for p by b1, which shows no session (they are private). */
static void expect_owner_event(sl_rpc_stream *w, const char *p) {
  Sluice__V1__WatchEvent *ev = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_watch_recv(w, &ev, 10000, &err), SL_OK, &err);
  assert_int_equal(ev->type, SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_PUT);
  assert_string_equal(ev->key, p);
  assert_string_equal(ev->owner->broker_id, "b1");
  assert_int_equal(ev->owner->base.n_unknown_fields, 0);
  protobuf_c_message_free_unpacked(&ev->base, NULL);
}

static void test_metadata_replicas__kill_one_lose_nothing(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  enum { N = 20 };
  /* B watches ownership through replica 1. */
  int64_t s = mdt_open_broker(f->a, "b1", 60);
  Sluice__V1__WatchRequest wr = SLUICE__V1__WATCH_REQUEST__INIT;
  wr.target = SLUICE__V1__WATCH_TARGET__WATCH_TARGET_OWNERSHIP;
  sl_rpc_stream *w = NULL;
  mdt_expect(sl_metadata_service_watch_open(f->b, &wr, NULL, &w, &err), SL_OK, &err);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(f->a, "public/first", "b1", s);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  expect_owner_event(w, "public/first");

  /* Changes through replica 0 reach the watcher on replica 1, in order. */
  uint64_t ids[2 * N];
  int64_t cursor_versions[N];
  for (int i = 0; i < N; i++) {
    char p[64];
    snprintf(p, sizeof(p), "public/r-partition-%d", i);
    r = mdt_acquire(f->a, p, "b1", s);
    assert_true(r->acquired);
    uint64_t epoch = r->owner->epoch;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    mdt_expect(mdt_st_update_cursor(f->a, p, "sub", i, 0, epoch, &cursor_versions[i], &err),
               SL_OK, &err);
    ids[2 * i] = mdt_allocate_ledger_id(f->a);
    ids[2 * i + 1] = mdt_allocate_ledger_id(f->b);
  }
  for (int i = 0; i < N; i++) {
    char p[64];
    snprintf(p, sizeof(p), "public/r-partition-%d", i);
    expect_owner_event(w, p);
  }
  for (int i = 0; i < 2 * N; i++)
    for (int j = 0; j < i; j++) assert_true(ids[i] != ids[j]);

  /* Replica 0 dies. */
  mdt_expect(sl_cluster_kill9(f->c, SL_NODE_METADATA, 0, &err), SL_OK, &err);
  /* Everything written through it is there through replica 1. */
  for (int i = 0; i < N; i++) {
    char p[64];
    snprintf(p, sizeof(p), "public/r-partition-%d", i);
    int64_t entry = -1, version = 0;
    mdt_expect(mdt_st_get_cursor(f->b, p, "sub", &entry, &version, &err), SL_OK, &err);
    assert_int_equal(entry, i);
    assert_int_equal(version, cursor_versions[i]);
  }
  /* The session opened through replica 0 lives on through replica 1. */
  Sluice__V1__KeepAliveRequest kr = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
  kr.session_id = s;
  kr.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  kr.node_id = "b1";
  Sluice__V1__KeepAliveResponse *kresp = NULL;
  mdt_expect(sl_metadata_service_keep_alive(f->b, &kr, &kresp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&kresp->base, NULL);
  /* The watcher keeps getting changes, and ids stay unique. */
  r = mdt_acquire(f->b, "public/after", "b1", s);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  expect_owner_event(w, "public/after");
  for (int k = 0; k < 5; k++) {
    uint64_t id = mdt_allocate_ledger_id(f->b);
    for (int i = 0; i < 2 * N; i++) assert_true(id != ids[i]);
  }
  sl_rpc_stream_destroy(w);

  /* A client of both replicas fails over to the live one. */
  sl_rpc_channel *both = mdt_connect(sl_cluster_metadata_target(f->c));
  long long deadline = sl_clock_mono_ms() + 15000;
  sl_status st;
  do {
    int64_t entry = 0;
    st = mdt_st_get_cursor(both, "public/r-partition-0", "sub", &entry, NULL, &err);
    if (st != SL_OK) {
      struct timespec ts = {0, 50 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  } while (st != SL_OK && sl_clock_mono_ms() < deadline);
  mdt_expect(st, SL_OK, &err);
  sl_rpc_channel_destroy(both);

  /* And the killed replica comes back into service. */
  mdt_expect(sl_cluster_restart(f->c, SL_NODE_METADATA, 0, &err), SL_OK, &err);
  sl_rpc_channel_destroy(f->a);
  f->a = mdt_cluster_connect(f->c, 0);
  int64_t entry = -1;
  mdt_expect(mdt_st_get_cursor(f->a, "public/r-partition-7", "sub", &entry, NULL, &err), SL_OK,
             &err);
  assert_int_equal(entry, 7);
  uint64_t id = mdt_allocate_ledger_id(f->a);
  for (int i = 0; i < 2 * N; i++) assert_true(id != ids[i]);
}

/* Ledger ids along one partition only grow, whichever replica creates the
 * next ledger: each holds its own block of ids (the default 1000), and
 * without the rule the partition would roll from A's block back into B's
 * older one. The managed-ledger list refuses a lower id too. */
static void test_metadata_replicas__partition_ledger_ids_increase(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  const char *p = "public/ids-partition-0";
  int64_t s = mdt_open_broker(f->a, "b1", 30);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(f->a, p, "b1", s);
  uint64_t e = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  /* B reserves a block first, then A one above it. */
  (void)mdt_allocate_ledger_id(f->b);
  (void)mdt_allocate_ledger_id(f->a);
  enum { N = 12 };
  uint64_t ids[N];
  Sluice__V1__LedgerRef refs[N];
  Sluice__V1__LedgerRef *list[N];
  int64_t version = 0;
  for (int i = 0; i < N; i++) {
    /* Alternate replicas, the way a broker's calls land behind a Service. */
    ids[i] = mdt_create_ledger(i % 2 == 0 ? f->a : f->b, p, e, NULL);
    print_message("ledger %d of %s: id %llu via replica %c\n", i, p,
                  (unsigned long long)ids[i], i % 2 == 0 ? 'a' : 'b');
    if (i > 0 && ids[i] <= ids[i - 1])
      fail_msg("ledger %d has id %llu after %llu", i, (unsigned long long)ids[i],
               (unsigned long long)ids[i - 1]);
    sluice__v1__ledger_ref__init(&refs[i]);
    refs[i].ledger_id = ids[i];
    list[i] = &refs[i];
    Sluice__V1__ManagedLedgerInfo ml = SLUICE__V1__MANAGED_LEDGER_INFO__INIT;
    ml.partition = (char *)p;
    ml.ledgers = list;
    ml.n_ledgers = (size_t)i + 1;
    Sluice__V1__UpdateManagedLedgerRequest req = SLUICE__V1__UPDATE_MANAGED_LEDGER_REQUEST__INIT;
    req.info = &ml;
    req.expected_version = version;
    req.epoch = e;
    Sluice__V1__ManagedLedgerResponse *resp = NULL;
    mdt_expect(sl_metadata_service_update_managed_ledger(i % 2 ? f->a : f->b, &req, &resp, NULL,
                                                         &err),
               SL_OK, &err);
    version = resp->version;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  /* An id from B's older block, appended by hand: refused. */
  uint64_t low = mdt_allocate_ledger_id(f->b);
  Sluice__V1__LedgerRef lr = SLUICE__V1__LEDGER_REF__INIT;
  lr.ledger_id = ids[0] < low ? ids[0] - 1 : low;
  Sluice__V1__LedgerRef *bad[] = {&lr};
  Sluice__V1__ManagedLedgerInfo ml = SLUICE__V1__MANAGED_LEDGER_INFO__INIT;
  ml.partition = (char *)p;
  ml.ledgers = bad;
  ml.n_ledgers = 1;
  Sluice__V1__UpdateManagedLedgerRequest req = SLUICE__V1__UPDATE_MANAGED_LEDGER_REQUEST__INIT;
  req.info = &ml;
  req.expected_version = version;
  req.epoch = e;
  Sluice__V1__ManagedLedgerResponse *resp = NULL;
  mdt_expect(sl_metadata_service_update_managed_ledger(f->a, &req, &resp, NULL, &err), SL_EINVAL,
             &err);
  assert_non_null(strstr(err.msg, "must increase"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_metadata_replicas__partition_ledger_ids_increase,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_metadata_replicas__kill_one_lose_nothing, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
