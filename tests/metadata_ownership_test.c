/*
 * Partition ownership through sluice-metadata on a real etcd: racing
 * brokers, ownership lapsing with the owner's session, and epochs that keep
 * increasing across lapses and service restarts.
 */
#include <pthread.h>
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
#include "common/testing.h"

typedef mdt_cluster_fx fixture;

static int setup(void **state) {
  *state = mdt_cluster_fx_new("mdown", NULL);
  return 0;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- the race ---- */

typedef struct contender {
  sl_rpc_channel *ch;
  const char *id;
  int64_t session;
  const char *partition;
  pthread_barrier_t *go;
  sl_status st;
  Sluice__V1__AcquireOwnershipResponse *resp;
} contender;

static void *contend(void *arg) {
  contender *c = arg;
  pthread_barrier_wait(c->go);
  c->st = mdt_st_acquire(c->ch, c->partition, c->id, c->session, &c->resp, NULL);
  return NULL;
}

static void test_metadata_ownership__race_has_one_winner(void **state) {
  fixture *f = *state;
  const char *addr = sl_cluster_addr(f->c, SL_NODE_METADATA, 0);
  contender cs[2] = {{.id = "b1"}, {.id = "b2"}};
  for (int i = 0; i < 2; i++) {
    cs[i].ch = mdt_connect(addr);
    cs[i].session = mdt_open_broker(cs[i].ch, cs[i].id, 30);
  }
  int wins[2] = {0, 0};
  for (int round = 0; round < 20; round++) {
    char partition[64];
    snprintf(partition, sizeof(partition), "public/race-partition-%d", round);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
      cs[i].partition = partition;
      cs[i].go = &go;
      cs[i].resp = NULL;
      assert_int_equal(pthread_create(&t[i], NULL, contend, &cs[i]), 0);
    }
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);
    assert_int_equal(cs[0].st, SL_OK);
    assert_int_equal(cs[1].st, SL_OK);
    /* Exactly one acquired; both were told the same owner and epoch. */
    assert_int_equal(cs[0].resp->acquired + cs[1].resp->acquired, 1);
    int w = cs[0].resp->acquired ? 0 : 1;
    wins[w]++;
    for (int i = 0; i < 2; i++) {
      assert_string_equal(cs[i].resp->owner->broker_id, cs[w].id);
      assert_int_equal(cs[i].resp->owner->epoch, 1);
      protobuf_c_message_free_unpacked(&cs[i].resp->base, NULL);
    }
  }
  print_message("b1 won %d rounds, b2 %d\n", wins[0], wins[1]);
  for (int i = 0; i < 2; i++) sl_rpc_channel_destroy(cs[i].ch);
}

/* ---- lapse ---- */

static sl_status lookup(sl_rpc_channel *ch, const char *p, uint64_t *epoch, sl_err *err) {
  Sluice__V1__LookupOwnerRequest req = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
  req.partition = (char *)p;
  Sluice__V1__OwnerInfo *o = NULL;
  sl_rpc_call_opts opts = mdt_opts(5000);
  sl_status st = sl_metadata_service_lookup_owner(ch, &req, &o, &opts, err);
  if (st == SL_OK) {
    if (epoch != NULL) *epoch = o->epoch;
    protobuf_c_message_free_unpacked(&o->base, NULL);
  }
  return st;
}

/* Polls until p has no owner; returns when that was seen. */
static long long wait_unowned(sl_rpc_channel *ch, const char *p, int timeout_ms) {
  long long deadline = sl_clock_mono_ms() + timeout_ms;
  while (sl_clock_mono_ms() < deadline) {
    sl_err err = SL_ERR_INIT;
    sl_status st = lookup(ch, p, NULL, &err);
    if (st == SL_ENOTFOUND) return sl_clock_mono_ms();
    mdt_expect(st, SL_OK, &err);
    sleep_ms(20);
  }
  fail_msg("partition %s still owned after %d ms", p, timeout_ms);
  return 0;
}

static void test_metadata_ownership__lapses_with_session(void **state) {
  fixture *f = *state;
  const char *p = "public/lapse-partition-0";
  const int ttl = 2;
  int64_t s1 = mdt_open_broker(f->ch, "b1", ttl);
  mdt_keeper *k = mdt_keeper_start(f->ch, "b1", s1, 500);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(f->ch, p, "b1", s1);
  assert_true(r->acquired);
  uint64_t e1 = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  /* Held across several TTLs while kept alive. */
  sleep_ms(ttl * 1000 + 1500);
  uint64_t e = 0;
  sl_err err = SL_ERR_INIT;
  mdt_expect(lookup(f->ch, p, &e, &err), SL_OK, &err);
  assert_int_equal(e, e1);
  /* The broker goes silent. */
  long long last_ok = 0;
  assert_int_equal(mdt_keeper_stop(k, &last_ok), 0);
  long long freed = wait_unowned(f->ch, p, 10000);
  long long took = freed - last_ok;
  print_message("ownership freed %lld ms after the last keepalive (ttl %d s)\n", took, ttl);
  assert_true(took <= ttl * 1000 + sl_test_scaled_ms(1000));
  /* The next owner gets a higher epoch. */
  int64_t s2 = mdt_open_broker(f->ch, "b2", 30);
  r = mdt_acquire(f->ch, p, "b2", s2);
  assert_true(r->acquired);
  assert_true(r->owner->epoch > e1);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* Takes p for a fresh broker session and gives it back; returns the epoch. */
static uint64_t cycle(sl_rpc_channel *ch, const char *p, const char *broker) {
  int64_t s = mdt_open_broker(ch, broker, 30);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(ch, p, broker, s);
  assert_true(r->acquired);
  uint64_t e = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  Sluice__V1__CloseSessionRequest cr = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  cr.session_id = s;
  cr.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  cr.node_id = (char *)broker;
  Sluice__V1__CloseSessionResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts o = mdt_opts(10000);
  mdt_expect(sl_metadata_service_close_session(ch, &cr, &resp, &o, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return e;
}

static void test_metadata_ownership__epochs_survive_restarts(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  const char *p = "public/epochs";
  uint64_t e = cycle(f->ch, p, "b1");
  assert_int_equal(e, 1);
  assert_int_equal(cycle(f->ch, p, "b2"), 2);
  /* The service crashes and comes back. */
  mdt_expect(sl_cluster_kill9(f->c, SL_NODE_METADATA, 0, &err), SL_OK, &err);
  mdt_expect(sl_cluster_restart(f->c, SL_NODE_METADATA, 0, &err), SL_OK, &err);
  sl_rpc_channel_destroy(f->ch);
  f->ch = mdt_cluster_connect(f->c, 0);
  assert_int_equal(cycle(f->ch, p, "b3"), 3);
  /* etcd crashes and comes back. */
  mdt_etcd_kill9(f->c);
  mdt_etcd_restart(f->c);
  long long deadline = sl_clock_mono_ms() + 15000;
  sl_status st;
  do { /* the first calls after an etcd restart may still fail */
    st = lookup(f->ch, p, NULL, &err);
    if (st != SL_ENOTFOUND) sleep_ms(50);
  } while (st != SL_ENOTFOUND && sl_clock_mono_ms() < deadline);
  mdt_expect(st, SL_ENOTFOUND, &err);
  assert_int_equal(cycle(f->ch, p, "b4"), 4);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_metadata_ownership__race_has_one_winner, setup,
                                      mdt_cluster_fx_teardown),
      cmocka_unit_test_setup_teardown(test_metadata_ownership__lapses_with_session, setup,
                                      mdt_cluster_fx_teardown),
      cmocka_unit_test_setup_teardown(test_metadata_ownership__epochs_survive_restarts, setup,
                                      mdt_cluster_fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
