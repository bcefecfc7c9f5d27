/*
 * Watch streams from sluice-metadata on a real etcd: every change arrives,
 * in order, and the stream carries on across an etcd kill -9 and restart
 * with nothing lost.
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

#include <pthread.h>

#include "metadata.pb-c.h"
#include "metadata/store.h"
#include "tests/etcd_proc.h"
#include "tests/metadata_cluster.h"
#include "tests/metadata_util.h"

typedef mdt_cluster_fx fixture;

static int setup(void **state) {
  *state = mdt_cluster_fx_new("mdwatch", NULL);
  return 0;
}

static void update_load(sl_rpc_channel *ch, int64_t session, uint32_t load) {
  Sluice__V1__BrokerInfo b = SLUICE__V1__BROKER_INFO__INIT;
  b.id = "b1";
  b.address = mdt_addr_for("b1"); /* the registered one: it cannot change */
  b.load_permille = load;
  Sluice__V1__UpdateNodeRequest up = SLUICE__V1__UPDATE_NODE_REQUEST__INIT;
  up.session_id = session;
  up.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  up.broker = &b;
  Sluice__V1__UpdateNodeResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts o = mdt_opts(10000);
  mdt_expect(sl_metadata_service_update_node(ch, &up, &resp, &o, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* Polls a read until the service answers again after an etcd restart. */
static void wait_serving(sl_rpc_channel *ch, int timeout_ms) {
  long long deadline = sl_clock_mono_ms() + timeout_ms;
  sl_status st;
  sl_err err = SL_ERR_INIT;
  do {
    Sluice__V1__ListBrokersRequest req = SLUICE__V1__LIST_BROKERS_REQUEST__INIT;
    Sluice__V1__ListBrokersResponse *resp = NULL;
    sl_rpc_call_opts o = mdt_opts(3000);
    st = sl_metadata_service_list_brokers(ch, &req, &resp, &o, &err);
    if (st == SL_OK) protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (st != SL_OK) {
      struct timespec ts = {0, 50 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  } while (st != SL_OK && sl_clock_mono_ms() < deadline);
  mdt_expect(st, SL_OK, &err);
}

static void test_metadata_watch__every_change_in_order_across_etcd_crash(void **state) {
  fixture *f = *state;
  enum { BEFORE = 150, AFTER = 150 };
  int64_t s = mdt_open_broker(f->ch, "b1", 60);
  update_load(f->ch, s, 0);
  Sluice__V1__WatchRequest req = SLUICE__V1__WATCH_REQUEST__INIT;
  req.target = SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BROKERS;
  sl_rpc_stream *w = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_watch_open(f->ch, &req, NULL, &w, &err), SL_OK, &err);
  /* The state comes first: b1 with load 0. */
  Sluice__V1__WatchEvent *ev = NULL;
  mdt_expect(sl_metadata_service_watch_recv(w, &ev, 10000, &err), SL_OK, &err);
  assert_int_equal(ev->broker->load_permille, 0);
  int64_t last_rev = ev->revision;
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  for (uint32_t i = 1; i <= BEFORE; i++) update_load(f->ch, s, i);
  mdt_etcd_kill9(f->c);
  mdt_etcd_restart(f->c);
  wait_serving(f->ch, 20000);
  for (uint32_t i = BEFORE + 1; i <= BEFORE + AFTER; i++) update_load(f->ch, s, i);

  /* Every update exactly once, in order. */
  for (uint32_t want = 1; want <= BEFORE + AFTER; want++) {
    ev = NULL;
    mdt_expect(sl_metadata_service_watch_recv(w, &ev, 10000, &err), SL_OK, &err);
    assert_non_null(ev);
    assert_int_equal(ev->type, SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_PUT);
    assert_string_equal(ev->key, "b1");
    if (ev->broker->load_permille != want)
      fail_msg("event %u carries load %u", want, ev->broker->load_permille);
    assert_true(ev->revision > last_rev);
    last_rev = ev->revision;
    protobuf_c_message_free_unpacked(&ev->base, NULL);
  }
  ev = NULL;
  mdt_expect(sl_metadata_service_watch_recv(w, &ev, 300, &err), SL_ETIMEDOUT, &err);
  sl_rpc_stream_destroy(w);
}

static void test_metadata_watch__ownership_changes_across_etcd_crash(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s = mdt_open_broker(f->ch, "b1", 60);
  Sluice__V1__WatchRequest req = SLUICE__V1__WATCH_REQUEST__INIT;
  req.target = SLUICE__V1__WATCH_TARGET__WATCH_TARGET_OWNERSHIP;
  req.prefix = "public/";
  sl_rpc_stream *w = NULL;
  mdt_expect(sl_metadata_service_watch_open(f->ch, &req, NULL, &w, &err), SL_OK, &err);
  /* A first change, seen either in the state or as a change: from then on
   * the watch is in place. */
  Sluice__V1__AcquireOwnershipResponse *first = mdt_acquire(f->ch, "public/first", "b1", s);
  protobuf_c_message_free_unpacked(&first->base, NULL);
  Sluice__V1__WatchEvent *ev0 = NULL;
  mdt_expect(sl_metadata_service_watch_recv(w, &ev0, 10000, &err), SL_OK, &err);
  assert_string_equal(ev0->key, "public/first");
  protobuf_c_message_free_unpacked(&ev0->base, NULL);
  enum { N = 10 };
  for (int i = 0; i < N; i++) {
    char p[64];
    snprintf(p, sizeof(p), "public/w-partition-%d", i);
    if (i == N / 2) {
      mdt_etcd_kill9(f->c);
      mdt_etcd_restart(f->c);
      wait_serving(f->ch, 20000);
    }
    Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(f->ch, p, "b1", s);
    assert_true(r->acquired);
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  for (int i = 0; i < N; i++) {
    char p[64];
    snprintf(p, sizeof(p), "public/w-partition-%d", i);
    Sluice__V1__WatchEvent *ev = NULL;
    mdt_expect(sl_metadata_service_watch_recv(w, &ev, 10000, &err), SL_OK, &err);
    assert_int_equal(ev->type, SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_PUT);
    assert_string_equal(ev->key, p);
    assert_string_equal(ev->owner->broker_id, "b1");
    protobuf_c_message_free_unpacked(&ev->base, NULL);
  }
  sl_rpc_stream_destroy(w);
}

/* ---- a snapshot of many pages is read at one revision ---- */

enum { SNAP_KEYS = 2500, SNAP_HOT = 2 };

typedef struct bumper {
  sl_store *store;
  pthread_t thread;
  volatile int stop; /* set by the test thread, read by the bumper */
  uint64_t writes;
} bumper;

static void owner_key(char *buf, size_t cap, int i) {
  snprintf(buf, cap, "/sluice/owners/public/snap-%05d", i);
}

static uint8_t *owner_value(int i, uint64_t epoch, size_t *len) {
  char p[64];
  snprintf(p, sizeof(p), "public/snap-%05d", i);
  Sluice__V1__OwnerInfo o = SLUICE__V1__OWNER_INFO__INIT;
  o.partition = p;
  o.broker_id = "b1";
  o.broker_address = "127.0.0.1:7777";
  o.epoch = epoch;
  *len = protobuf_c_message_get_packed_size(&o.base);
  uint8_t *buf = malloc(*len + 1);
  protobuf_c_message_pack(&o.base, buf);
  return buf;
}

/* Keeps raising the epochs of the last SNAP_HOT keys (the last page). */
static void *bump_main(void *arg) {
  bumper *b = arg;
  uint64_t epoch = 1;
  while (!__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) {
    int i = SNAP_KEYS - SNAP_HOT + (int)(epoch % SNAP_HOT);
    char k[64];
    size_t len;
    owner_key(k, sizeof(k), i);
    uint8_t *v = owner_value(i, ++epoch, &len);
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_store_put(b->store, k, strlen(k), v, len, SL_STORE_REV_ANY, 0, NULL, &err);
    free(v);
    if (st == SL_OK) b->writes++;
  }
  return NULL;
}

static void test_metadata_watch__multi_page_snapshot_never_goes_back(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  char uri[128];
  snprintf(uri, sizeof(uri), "etcd:%s", sl_cluster_etcd(f->c)->endpoint);
  bumper b = {0};
  mdt_expect(sl_store_open(uri, NULL, &b.store, &err), SL_OK, &err);
  /* SNAP_KEYS owners at epoch 1, in txns of SL_STORE_TXN_MAX puts. */
  for (int i = 0; i < SNAP_KEYS; i += SL_STORE_TXN_MAX) {
    sl_store_op ops[SL_STORE_TXN_MAX];
    char keys[SL_STORE_TXN_MAX][64];
    uint8_t *vals[SL_STORE_TXN_MAX];
    int n = 0;
    for (; n < SL_STORE_TXN_MAX && i + n < SNAP_KEYS; n++) {
      size_t len;
      owner_key(keys[n], sizeof(keys[n]), i + n);
      vals[n] = owner_value(i + n, 1, &len);
      ops[n] = (sl_store_op){SL_STORE_OP_PUT, keys[n], strlen(keys[n]), vals[n], len, 0};
    }
    mdt_expect(sl_store_txn(b.store, NULL, 0, ops, (size_t)n, NULL, &err), SL_OK, &err);
    for (int j = 0; j < n; j++) free(vals[j]);
  }
  assert_int_equal(pthread_create(&b.thread, NULL, bump_main, &b), 0);
  static uint64_t last[SNAP_KEYS];
  for (int attempt = 0; attempt < 4; attempt++) {
    Sluice__V1__WatchRequest req = SLUICE__V1__WATCH_REQUEST__INIT;
    req.target = SLUICE__V1__WATCH_TARGET__WATCH_TARGET_OWNERSHIP;
    req.prefix = "public/snap-";
    sl_rpc_stream *w = NULL;
    mdt_expect(sl_metadata_service_watch_open(f->ch, &req, NULL, &w, &err), SL_OK, &err);
    memset(last, 0, sizeof(last));
    int64_t last_rev = 0;
    /* The snapshot, then a hundred changes after it. */
    for (int got = 0; got < SNAP_KEYS + 100; got++) {
      Sluice__V1__WatchEvent *ev = NULL;
      mdt_expect(sl_metadata_service_watch_recv(w, &ev, 10000, &err), SL_OK, &err);
      assert_int_equal(ev->type, SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_PUT);
      int i = atoi(ev->key + strlen("public/snap-"));
      assert_true(i >= 0 && i < SNAP_KEYS);
      if (ev->revision < last_rev)
        fail_msg("revision %lld after %lld", (long long)ev->revision, (long long)last_rev);
      if (ev->owner->epoch < last[i])
        fail_msg("attempt %d: %s went back from epoch %llu to %llu (event %d)", attempt, ev->key,
                 (unsigned long long)last[i], (unsigned long long)ev->owner->epoch, got);
      last[i] = ev->owner->epoch;
      last_rev = ev->revision;
      protobuf_c_message_free_unpacked(&ev->base, NULL);
    }
    sl_rpc_stream_destroy(w);
  }
  __atomic_store_n(&b.stop, 1, __ATOMIC_RELEASE);
  pthread_join(b.thread, NULL);
  print_message("snapshot test: %llu concurrent writes\n", (unsigned long long)b.writes);
  assert_true(b.writes > 0);
  sl_store_close(b.store);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_metadata_watch__multi_page_snapshot_never_goes_back,
                                      setup, mdt_cluster_fx_teardown),
      cmocka_unit_test_setup_teardown(
          test_metadata_watch__every_change_in_order_across_etcd_crash, setup,
          mdt_cluster_fx_teardown),
      cmocka_unit_test_setup_teardown(
          test_metadata_watch__ownership_changes_across_etcd_crash, setup,
          mdt_cluster_fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
