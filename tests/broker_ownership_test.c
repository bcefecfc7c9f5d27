/*
 * Ownership and Lookup on a real cluster: etcd, two metadata replicas, four
 * bookies and two brokers on loopback. The cases share one cluster and run
 * in order; those that stop a broker start it again before they end.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/clock.h"
#include "common/testing.h"
#include "tests/broker_testlib.h"
#include "tests/proc.h"

static bkt_cluster *k;

static int setup(void **state) {
  (void)state;
  k = bkt_start("broker_ownership", 4, 2);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  bkt_stop(k);
  return 0;
}

/* Lookup through broker i, failing the test on error. */
static Sluice__V1__LookupResponse *lookup(int i, const char *topic, bool authoritative) {
  Sluice__V1__LookupResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = bkt_lookup(k, i, topic, authoritative, &r, &err);
  if (st != SL_OK) fail_msg("lookup %s via broker-%d: %s", topic, i, sl_err_msg(&err, st));
  return r;
}

static void free_lookup(Sluice__V1__LookupResponse *r) {
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* Checks one answer of broker `via`: a known broker, an epoch, and a
 * redirect exactly when the owner is another broker. */
static void check_owner(int via, const Sluice__V1__PartitionOwner *po) {
  int owner = bkt_broker_index(k, po->broker_id);
  assert_true(owner >= 0);
  assert_string_equal(po->broker_address, sl_cluster_addr(k->c, SL_NODE_BROKER, owner));
  assert_true(po->epoch > 0);
  if (owner == via) {
    assert_null(po->redirect);
  } else {
    assert_non_null(po->redirect);
    assert_string_equal(po->redirect->broker_address, po->broker_address);
    assert_string_equal(po->redirect->broker_id, po->broker_id);
    assert_string_equal(po->redirect->partition, po->partition);
    assert_int_equal(po->redirect->epoch, po->epoch);
  }
}

static void test_broker_ownership__same_owner_from_either_broker(void **state) {
  (void)state;
  bkt_create_topic(k, 0, "public/same", 0);
  Sluice__V1__LookupResponse *a = lookup(0, "public/same", false);
  Sluice__V1__LookupResponse *b = lookup(1, "public/same", false);
  assert_int_equal(a->partitions, 0);
  assert_int_equal(a->n_owners, 1);
  assert_int_equal(b->n_owners, 1);
  assert_string_equal(a->owners[0]->partition, "public/same");
  assert_int_equal(a->owners[0]->index, -1);
  assert_string_equal(a->owners[0]->broker_id, b->owners[0]->broker_id);
  assert_int_equal(a->owners[0]->epoch, b->owners[0]->epoch);
  check_owner(0, a->owners[0]);
  check_owner(1, b->owners[0]);
  /* The metadata service agrees: the partition is owned, at that epoch. */
  char id[64];
  uint64_t epoch = 0;
  bkt_owner(k, "public/same", id, sizeof(id), &epoch);
  assert_string_equal(id, a->owners[0]->broker_id);
  assert_int_equal(epoch, a->owners[0]->epoch);
  free_lookup(a);
  free_lookup(b);
}

/* Unowned partitions get owners picked by load: 8 partitions land on both
 * brokers, and asking again changes nothing. */
static void test_broker_ownership__partitions_spread_over_live_brokers(void **state) {
  (void)state;
  bkt_create_topic(k, 1, "public/spread", 8);
  Sluice__V1__LookupResponse *a = lookup(1, "public/spread", false);
  assert_int_equal(a->partitions, 8);
  assert_int_equal(a->n_owners, 8);
  int per_broker[2] = {0, 0};
  for (size_t i = 0; i < a->n_owners; i++) {
    char name[64];
    snprintf(name, sizeof(name), "public/spread-partition-%zu", i);
    assert_string_equal(a->owners[i]->partition, name);
    assert_int_equal(a->owners[i]->index, (int)i);
    check_owner(1, a->owners[i]);
    per_broker[bkt_broker_index(k, a->owners[i]->broker_id)]++;
  }
  assert_true(per_broker[0] > 0);
  assert_true(per_broker[1] > 0);
  Sluice__V1__LookupResponse *b = lookup(0, "public/spread", false);
  for (size_t i = 0; i < b->n_owners; i++) {
    assert_string_equal(b->owners[i]->broker_id, a->owners[i]->broker_id);
    assert_int_equal(b->owners[i]->epoch, a->owners[i]->epoch);
  }
  /* One partition alone. */
  Sluice__V1__LookupResponse *c = lookup(0, "public/spread-partition-5", false);
  assert_int_equal(c->n_owners, 1);
  assert_int_equal(c->owners[0]->index, 5);
  assert_string_equal(c->owners[0]->broker_id, a->owners[5]->broker_id);
  free_lookup(a);
  free_lookup(b);
  free_lookup(c);
}

/* An authoritative Lookup (what a broker sends the broker it picked) makes
 * the receiver the owner. */
static void own_on(int broker, const char *topic, uint64_t *epoch) {
  Sluice__V1__LookupResponse *r = lookup(broker, topic, true);
  assert_string_equal(r->owners[0]->broker_id, sl_cluster_id(k->c, SL_NODE_BROKER, broker));
  assert_null(r->owners[0]->redirect);
  *epoch = r->owners[0]->epoch;
  free_lookup(r);
}

static void test_broker_ownership__unload_moves_partition(void **state) {
  (void)state;
  bkt_create_topic(k, 0, "public/moving", 0);
  uint64_t epoch = 0;
  own_on(1, "public/moving", &epoch);
  /* Asked through the broker that does not own it: forwarded to the owner. */
  Sluice__V1__UnloadRequest req = SLUICE__V1__UNLOAD_REQUEST__INIT;
  req.topic = "public/moving";
  Sluice__V1__UnloadResponse *resp = NULL;
  sl_rpc_call_opts co = {.timeout_ms = 5000};
  sl_err err = SL_ERR_INIT;
  long long t0 = sl_clock_mono_ms();
  sl_status st = sl_broker_service_unload(k->broker[0], &req, &resp, &co, &err);
  long long ms = sl_clock_mono_ms() - t0;
  if (st != SL_OK) fail_msg("unload: %s", sl_err_msg(&err, st));
  assert_int_equal(resp->released_epoch, epoch);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  print_message("unload moved public/moving in %lld ms\n", ms);
  assert_true(ms < sl_test_scaled_ms(1000));
  /* It moved to the other broker, with a higher epoch. */
  char id[64];
  uint64_t now_epoch = 0;
  bkt_owner(k, "public/moving", id, sizeof(id), &now_epoch);
  assert_string_equal(id, sl_cluster_id(k->c, SL_NODE_BROKER, 0));
  assert_true(now_epoch > epoch);
  Sluice__V1__LookupResponse *r = lookup(1, "public/moving", false);
  assert_string_equal(r->owners[0]->broker_id, id);
  assert_non_null(r->owners[0]->redirect);
  free_lookup(r);
  /* Unloading an unowned partition answers epoch 0. */
  bkt_create_topic(k, 0, "public/idle", 0);
  req.topic = "public/idle";
  st = sl_broker_service_unload(k->broker[1], &req, &resp, &co, &err);
  if (st != SL_OK) fail_msg("unload idle: %s", sl_err_msg(&err, st));
  assert_int_equal(resp->released_epoch, 0);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* SIGTERM: the broker releases its partitions before it exits, within a
 * second, so the other broker can take them at once. */
static void test_broker_ownership__sigterm_releases_within_a_second(void **state) {
  (void)state;
  bkt_create_topic(k, 0, "public/term", 4);
  uint64_t epochs[4];
  for (int i = 0; i < 4; i++) {
    char name[64];
    snprintf(name, sizeof(name), "public/term-partition-%d", i);
    own_on(1, name, &epochs[i]);
  }
  long long t0 = sl_clock_mono_ms();
  assert_int_equal(kill(sl_cluster_pid(k->c, SL_NODE_BROKER, 1), SIGTERM), 0);
  long long released_ms = -1;
  while (sl_clock_mono_ms() - t0 < 5000) {
    int owned = 0;
    for (int i = 0; i < 4; i++) {
      char name[64], id[64];
      uint64_t epoch;
      snprintf(name, sizeof(name), "public/term-partition-%d", i);
      bkt_owner(k, name, id, sizeof(id), &epoch);
      if (strcmp(id, sl_cluster_id(k->c, SL_NODE_BROKER, 1)) == 0) owned++;
    }
    if (owned == 0) {
      released_ms = sl_clock_mono_ms() - t0;
      break;
    }
    bkt_sleep_ms(10);
  }
  print_message("SIGTERM: 4 partitions released after %lld ms\n", released_ms);
  assert_true(released_ms >= 0);
  assert_true(released_ms < sl_test_scaled_ms(1000));
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cluster_stop_node(k->c, SL_NODE_BROKER, 1, &err), SL_OK);
  /* The other broker takes them at once, each with a higher epoch. */
  Sluice__V1__LookupResponse *r = lookup(0, "public/term", false);
  for (int i = 0; i < 4; i++) {
    assert_string_equal(r->owners[i]->broker_id, sl_cluster_id(k->c, SL_NODE_BROKER, 0));
    assert_true(r->owners[i]->epoch > epochs[i]);
  }
  free_lookup(r);
  sl_status st = sl_cluster_restart(k->c, SL_NODE_BROKER, 1, &err);
  if (st == SL_OK) st = sl_cluster_wait_brokers(k->c, 2, 10000, &err);
  if (st != SL_OK) fail_msg("restart broker-1: %s", sl_err_msg(&err, st));
  bkt_reconnect(k, 1);
}

/* kill -9 the owner: once its session lapses, the other broker takes the
 * partition with a higher epoch. */
static void test_broker_ownership__kill9_owner_fails_over(void **state) {
  (void)state;
  bkt_create_topic(k, 0, "public/crash", 0);
  uint64_t epoch = 0;
  own_on(1, "public/crash", &epoch);
  sl_err err = SL_ERR_INIT;
  long long t0 = sl_clock_mono_ms();
  assert_int_equal(sl_cluster_kill9(k->c, SL_NODE_BROKER, 1, &err), SL_OK);
  const char *survivor = sl_cluster_id(k->c, SL_NODE_BROKER, 0);
  long long took_ms = -1;
  uint64_t new_epoch = 0;
  while (sl_clock_mono_ms() - t0 < sl_test_scaled_ms(15000)) {
    Sluice__V1__LookupResponse *r = NULL;
    sl_status st = bkt_lookup(k, 0, "public/crash", false, &r, &err);
    if (st == SL_OK && strcmp(r->owners[0]->broker_id, survivor) == 0) {
      took_ms = sl_clock_mono_ms() - t0;
      new_epoch = r->owners[0]->epoch;
      assert_null(r->owners[0]->redirect);
    }
    if (r != NULL) free_lookup(r);
    if (took_ms >= 0) break;
    bkt_sleep_ms(50);
  }
  print_message("kill -9 owner: taken over after %lld ms (session TTL %d s), "
                "epoch %" PRIu64 " -> %" PRIu64 "\n",
                took_ms, BKT_SESSION_TTL, epoch, new_epoch);
  assert_true(took_ms >= 0);
  assert_true(new_epoch > epoch);
  /* Not before the session could lapse: the lease outlives the process. */
  assert_true(took_ms >= BKT_SESSION_TTL * 1000 - 500);
  sl_status st = sl_cluster_restart(k->c, SL_NODE_BROKER, 1, &err);
  if (st == SL_OK) st = sl_cluster_wait_brokers(k->c, 2, 10000, &err);
  if (st != SL_OK) fail_msg("restart broker-1: %s", sl_err_msg(&err, st));
  bkt_reconnect(k, 1);
}

/* SIGSTOP the owner past its session TTL: the other broker takes over; on
 * SIGCONT the old owner no longer acts as owner (it redirects), never
 * answering with its stale table. */
static void test_broker_ownership__paused_owner_stops_acting_as_owner(void **state) {
  (void)state;
  bkt_create_topic(k, 0, "public/paused", 0);
  uint64_t epoch = 0;
  own_on(1, "public/paused", &epoch);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cluster_signal(k->c, SL_NODE_BROKER, 1, SIGSTOP, &err), SL_OK);
  const char *survivor = sl_cluster_id(k->c, SL_NODE_BROKER, 0);
  long long t0 = sl_clock_mono_ms();
  uint64_t new_epoch = 0;
  while (new_epoch == 0 && sl_clock_mono_ms() - t0 < 15000) {
    Sluice__V1__LookupResponse *r = NULL;
    if (bkt_lookup(k, 0, "public/paused", false, &r, &err) == SL_OK &&
        strcmp(r->owners[0]->broker_id, survivor) == 0)
      new_epoch = r->owners[0]->epoch;
    if (r != NULL) free_lookup(r);
    if (new_epoch == 0) bkt_sleep_ms(50);
  }
  print_message("SIGSTOP owner: taken over after %lld ms\n", sl_clock_mono_ms() - t0);
  assert_true(new_epoch > epoch);
  assert_int_equal(sl_cluster_signal(k->c, SL_NODE_BROKER, 1, SIGCONT, &err), SL_OK);
  /* Until it has a new session the old owner answers UNAVAILABLE; every
   * answer it gives names the new owner, with a redirect. */
  int answers = 0;
  t0 = sl_clock_mono_ms();
  while (answers < 5 && sl_clock_mono_ms() - t0 < 10000) {
    Sluice__V1__LookupResponse *r = NULL;
    sl_status st = bkt_lookup(k, 1, "public/paused", false, &r, &err);
    if (st == SL_OK) {
      assert_string_equal(r->owners[0]->broker_id, survivor);
      assert_int_equal(r->owners[0]->epoch, new_epoch);
      assert_non_null(r->owners[0]->redirect);
      answers++;
      free_lookup(r);
    } else {
      assert_int_equal(st, SL_EUNAVAIL);
    }
    bkt_sleep_ms(20);
  }
  assert_int_equal(answers, 5);
  assert_true(sl_cluster_wait_brokers(k->c, 2, 10000, &err) == SL_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_broker_ownership__same_owner_from_either_broker),
      cmocka_unit_test(test_broker_ownership__partitions_spread_over_live_brokers),
      cmocka_unit_test(test_broker_ownership__unload_moves_partition),
      cmocka_unit_test(test_broker_ownership__sigterm_releases_within_a_second),
      cmocka_unit_test(test_broker_ownership__kill9_owner_fails_over),
      cmocka_unit_test(test_broker_ownership__paused_owner_stops_acting_as_owner),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
