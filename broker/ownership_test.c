/*
 * Ownership against a MetadataService in this process (local store): acquire,
 * the holders' hooks on unload and drain, remote owners, drop, session loss.
 * Forwarding to other brokers is covered by tests/broker_ownership_test.
 */
#include "broker/ownership.h"
#include "common/clock.h"
#include "common/tsan.h"

#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "broker.slrpc.h"
#include "common/rpc_server.h"
#include "common/testing.h"
#include "tests/metadata_util.h"
#include "tests/proc.h"

/* What the callbacks saw; the test waits on it. */
typedef struct seen {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int resolves, unloads_done, unload_hooks, lost_hooks;
  int other_resolves;  /* resolves reported through on_other_resolved */
  bool hold_unload;    /* hook_unload waits while set (a slow holder) */
  sl_status st;
  char owner_id[64], owner_addr[64], hook_partition[64];
  uint64_t epoch, hook_epoch;
  bool local;
} seen;

static seen S;

static void reset(void) {
  pthread_mutex_lock(&S.mu);
  S.resolves = S.unloads_done = S.unload_hooks = S.lost_hooks = S.other_resolves = 0;
  S.hold_unload = false;
  S.st = SL_OK;
  S.epoch = S.hook_epoch = 0;
  pthread_mutex_unlock(&S.mu);
}

/* Waits until *counter reaches want (5 s at most). */
static void await(int *counter, int want) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 5;
  pthread_mutex_lock(&S.mu);
  while (*counter < want)
    if (pthread_cond_timedwait(&S.cv, &S.mu, &dl) != 0) break;
  int got = *counter;
  pthread_mutex_unlock(&S.mu);
  assert_int_equal(got, want);
}

static void on_resolved(sl_status st, const char *msg, const sl_ownership_owner *ow,
                        void *arg) {
  (void)msg;
  (void)arg;
  pthread_mutex_lock(&S.mu);
  S.st = st;
  if (st == SL_OK) {
    snprintf(S.owner_id, sizeof(S.owner_id), "%s", ow->broker_id);
    snprintf(S.owner_addr, sizeof(S.owner_addr), "%s", ow->address);
    S.epoch = ow->epoch;
    S.local = ow->local;
  }
  S.resolves++;
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
}

static void on_unloaded(sl_status st, const char *msg, uint64_t epoch, void *arg) {
  (void)msg;
  (void)arg;
  pthread_mutex_lock(&S.mu);
  S.st = st;
  S.epoch = epoch;
  S.unloads_done++;
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
}

static void on_other_resolved(sl_status st, const char *msg, const sl_ownership_owner *ow,
                              void *arg) {
  (void)st;
  (void)msg;
  (void)ow;
  (void)arg;
  pthread_mutex_lock(&S.mu);
  S.other_resolves++;
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
}

static void hook_unload(void *arg, const char *partition, uint64_t epoch) {
  (void)arg;
  pthread_mutex_lock(&S.mu);
  snprintf(S.hook_partition, sizeof(S.hook_partition), "%s", partition);
  S.hook_epoch = epoch;
  S.unload_hooks++;
  pthread_cond_broadcast(&S.cv);
  while (S.hold_unload) pthread_cond_wait(&S.cv, &S.mu);
  pthread_mutex_unlock(&S.mu);
}

static void hook_lost(void *arg, const char *partition, uint64_t epoch, const char *why) {
  (void)arg;
  (void)why;
  pthread_mutex_lock(&S.mu);
  snprintf(S.hook_partition, sizeof(S.hook_partition), "%s", partition);
  S.hook_epoch = epoch;
  S.lost_hooks++;
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
}

typedef struct fx {
  mdt_local *md;
  sl_ownership *o;
} fx;

static sl_ownership *start_ownership(mdt_local *md, uint32_t ttl) {
  sl_ownership_opts oo = {
      .target = md->addr,
      .broker_id = "b1",
      .address = "127.0.0.1:7001",
      .ttl_seconds = ttl,
      .rpc_timeout_ms = 500,
      .hooks = {hook_unload, hook_lost, NULL},
  };
  sl_ownership *o = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ownership_create(&oo, &o, &err);
  if (st != SL_OK) fail_msg("create: %s", sl_err_msg(&err, st));
  long long deadline = sl_clock_mono_ms() + 5000;
  while (sl_ownership_session(o) == 0 && sl_clock_mono_ms() < deadline) {
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  assert_true(sl_ownership_session(o) != 0);
  return o;
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof(*f));
  f->md = mdt_local_new(NULL);
  mdt_create_namespace(f->md->ch, "public");
  f->o = start_ownership(f->md, 2);
  reset();
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  /* A failed test may have left a worker held in hook_unload. */
  pthread_mutex_lock(&S.mu);
  S.hold_unload = false;
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
  sl_ownership_destroy(f->o);
  mdt_local_stop(f->md);
  free(f->md);
  free(f);
  return 0;
}

static void create_topic(fx *f, const char *name) {
  Sluice__V1__CreateTopicRequest req = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  req.name = (char *)name;
  Sluice__V1__TopicInfo *t = NULL;
  sl_rpc_call_opts co = mdt_opts(5000);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_create_topic(f->md->ch, &req, &t, &co, &err);
  if (st != SL_OK) fail_msg("create topic: %s", sl_err_msg(&err, st));
  protobuf_c_message_free_unpacked(&t->base, NULL);
}

static sl_status owner_of(fx *f, const char *partition, char *id, size_t cap) {
  Sluice__V1__LookupOwnerRequest req = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
  req.partition = (char *)partition;
  Sluice__V1__OwnerInfo *o = NULL;
  sl_rpc_call_opts co = mdt_opts(5000);
  sl_status st = sl_metadata_service_lookup_owner(f->md->ch, &req, &o, &co, NULL);
  if (st == SL_OK) {
    snprintf(id, cap, "%s", o->broker_id);
    protobuf_c_message_free_unpacked(&o->base, NULL);
  }
  return st;
}

static void resolve(fx *f, const char *partition, bool authoritative) {
  int before = S.resolves;
  sl_ownership_resolve(f->o, partition, authoritative, on_resolved, NULL);
  await(&S.resolves, before + 1);
}

static void test_ownership__unowned_partition_is_acquired(void **state) {
  fx *f = *state;
  create_topic(f, "public/a");
  resolve(f, "public/a", false); /* the only live broker: picks itself */
  assert_int_equal(S.st, SL_OK);
  assert_true(S.local);
  assert_string_equal(S.owner_id, "b1");
  assert_string_equal(S.owner_addr, "127.0.0.1:7001");
  uint64_t epoch = 0;
  assert_true(sl_ownership_owns(f->o, "public/a", &epoch));
  assert_int_equal(epoch, S.epoch);
  assert_int_equal(sl_ownership_count(f->o), 1);
  char id[64];
  assert_int_equal(owner_of(f, "public/a", id, sizeof(id)), SL_OK);
  assert_string_equal(id, "b1");
  /* Again: the same epoch, from the table. */
  resolve(f, "public/a", false);
  assert_int_equal(S.epoch, epoch);
}

static void test_ownership__owned_elsewhere_is_remote(void **state) {
  fx *f = *state;
  create_topic(f, "public/b");
  int64_t other = mdt_open_broker(f->md->ch, "b2", 30);
  Sluice__V1__AcquireOwnershipResponse *a = mdt_acquire(f->md->ch, "public/b", "b2", other);
  assert_true(a->acquired);
  uint64_t epoch = a->owner->epoch;
  char addr[64];
  snprintf(addr, sizeof(addr), "%s", a->owner->broker_address);
  protobuf_c_message_free_unpacked(&a->base, NULL);
  resolve(f, "public/b", false);
  assert_int_equal(S.st, SL_OK);
  assert_false(S.local);
  assert_string_equal(S.owner_id, "b2");
  assert_string_equal(S.owner_addr, addr);
  assert_int_equal(S.epoch, epoch);
  /* Even authoritative: b2 holds it, so b1 cannot take it. */
  resolve(f, "public/b", true);
  assert_false(S.local);
  assert_false(sl_ownership_owns(f->o, "public/b", NULL));
}

static void test_ownership__unload_waits_for_the_holder(void **state) {
  fx *f = *state;
  create_topic(f, "public/c");
  resolve(f, "public/c", false);
  uint64_t epoch = S.epoch;
  sl_ownership_unload(f->o, "public/c", on_unloaded, NULL);
  await(&S.unload_hooks, 1);
  assert_string_equal(S.hook_partition, "public/c");
  assert_int_equal(S.hook_epoch, epoch);
  /* Unloading: not served, not re-acquired, still held in the metadata. */
  assert_false(sl_ownership_owns(f->o, "public/c", NULL));
  resolve(f, "public/c", false);
  assert_int_equal(S.st, SL_EUNAVAIL);
  char id[64];
  assert_int_equal(owner_of(f, "public/c", id, sizeof(id)), SL_OK);
  assert_int_equal(S.unloads_done, 0);
  sl_ownership_unloaded(f->o, "public/c");
  await(&S.unloads_done, 1);
  assert_int_equal(S.st, SL_OK);
  assert_int_equal(S.epoch, epoch);
  assert_int_equal(owner_of(f, "public/c", id, sizeof(id)), SL_ENOTFOUND);
  assert_int_equal(sl_ownership_count(f->o), 0);
}

static void test_ownership__drop_forgets_without_release(void **state) {
  fx *f = *state;
  create_topic(f, "public/d");
  resolve(f, "public/d", false);
  uint64_t epoch = S.epoch;
  sl_ownership_drop(f->o, "public/d", epoch + 1); /* another epoch: ignored */
  assert_true(sl_ownership_owns(f->o, "public/d", NULL));
  sl_ownership_drop(f->o, "public/d", epoch);
  assert_false(sl_ownership_owns(f->o, "public/d", NULL));
  assert_int_equal(sl_ownership_count(f->o), 0);
}

/* DeleteTopic deletes the owner key under a live session: the owner watch
 * shows it, so the partition leaves the table and the holders hear it
 * (hooks.lost) although this broker writes nothing. Before that, an unload
 * and a re-acquire: the DELETE of our own release comes before our new key
 * in the watch, and must not revoke the new tenure. */
static void test_ownership__deleted_topic_revokes(void **state) {
  fx *f = *state;
  create_topic(f, "public/e");
  resolve(f, "public/e", false);
  sl_ownership_unload(f->o, "public/e", on_unloaded, NULL);
  await(&S.unload_hooks, 1);
  sl_ownership_unloaded(f->o, "public/e");
  await(&S.unloads_done, 1);
  resolve(f, "public/e", false);
  assert_int_equal(S.st, SL_OK);
  assert_true(S.local);
  uint64_t epoch = S.epoch;
  assert_true(sl_ownership_owns(f->o, "public/e", NULL));
  pthread_mutex_lock(&S.mu);
  int lost = S.lost_hooks;
  pthread_mutex_unlock(&S.mu);
  assert_int_equal(lost, 0);
  Sluice__V1__DeleteTopicRequest req = SLUICE__V1__DELETE_TOPIC_REQUEST__INIT;
  req.name = "public/e";
  Sluice__V1__DeleteTopicResponse *resp = NULL;
  sl_rpc_call_opts co = mdt_opts(5000);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_delete_topic(f->md->ch, &req, &resp, &co, &err);
  if (st != SL_OK) fail_msg("delete topic: %s", sl_err_msg(&err, st));
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  await(&S.lost_hooks, 1);
  assert_string_equal(S.hook_partition, "public/e");
  assert_int_equal(S.hook_epoch, epoch);
  assert_false(sl_ownership_owns(f->o, "public/e", NULL));
  assert_int_equal(sl_ownership_count(f->o), 0);
}

/* A job that holds its worker (an unload hook that takes its time, as a
 * slow metadata round trip would) holds up only its own partition: a lookup
 * of another partition is acquired meanwhile, and the next job of the held
 * partition runs after it, in order. */
static void test_ownership__slow_job_blocks_only_its_partition(void **state) {
  fx *f = *state;
  create_topic(f, "public/e");
  create_topic(f, "public/f");
  resolve(f, "public/e", false);
  pthread_mutex_lock(&S.mu);
  S.hold_unload = true;
  pthread_mutex_unlock(&S.mu);
  sl_ownership_unload(f->o, "public/e", on_unloaded, NULL);
  await(&S.unload_hooks, 1); /* a worker is now stuck in the hook */
  sl_ownership_resolve(f->o, "public/e", false, on_other_resolved, NULL);
  resolve(f, "public/f", false);
  assert_int_equal(S.st, SL_OK);
  assert_true(S.local);
  assert_true(sl_ownership_owns(f->o, "public/f", NULL));
  /* Lookups of other partitions, many, never wait for the held one. */
  for (int i = 0; i < 8; i++) resolve(f, "public/f", false);
  pthread_mutex_lock(&S.mu);
  int other = S.other_resolves;
  S.hold_unload = false;
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
  assert_int_equal(other, 0); /* public/e's lookup queued behind its unload */
  await(&S.other_resolves, 1);
  sl_ownership_unloaded(f->o, "public/e");
  await(&S.unloads_done, 1);
  assert_int_equal(S.st, SL_OK);
}

/* ---- load: the registration carries it, and picks prefer the idle ---- */

/* A stand-in for a second broker: answers an authoritative Lookup as the
 * new owner, and counts them. */
typedef struct fake_broker {
  sl_rpc_server *srv;
  char addr[64];
  atomic_int lookups;
} fake_broker;

static void fake_lookup(sl_rpc_call *call, const Sluice__V1__LookupRequest *req, void *ctx) {
  fake_broker *fb = ctx;
  SL_TSAN_ACQUIRE(fb); /* addr was written before it was registered */
  Sluice__V1__PartitionOwner po = SLUICE__V1__PARTITION_OWNER__INIT;
  po.partition = req->topic;
  po.index = -1;
  po.broker_id = "b2";
  po.broker_address = fb->addr;
  po.epoch = 1;
  Sluice__V1__PartitionOwner *pp = &po;
  Sluice__V1__LookupResponse r = SLUICE__V1__LOOKUP_RESPONSE__INIT;
  r.n_owners = 1;
  r.owners = &pp;
  atomic_fetch_add(&fb->lookups, 1);
  sl_broker_service_lookup_reply(call, &r);
}

static void fake_broker_start(fake_broker *fb) {
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0", .n_threads = 1};
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_rpc_server_create(&so, &fb->srv, &err), SL_OK);
  sl_broker_service_handlers h = {0};
  h.lookup = fake_lookup;
  assert_int_equal(sl_broker_service_register(fb->srv, &h, fb, &err), SL_OK);
  assert_int_equal(sl_rpc_server_start(fb->srv, &err), SL_OK);
  snprintf(fb->addr, sizeof(fb->addr), "127.0.0.1:%d", sl_rpc_server_port(fb->srv));
  /* Lookups reach the fake only after addr went through the metadata
   * service (another process), an order TSan cannot see. */
  SL_TSAN_RELEASE(fb);
}

/* b1's load_permille in ListBrokers. */
static uint32_t registered_load(fx *f) {
  Sluice__V1__ListBrokersRequest req = SLUICE__V1__LIST_BROKERS_REQUEST__INIT;
  Sluice__V1__ListBrokersResponse *l = NULL;
  sl_rpc_call_opts co = mdt_opts(5000);
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_list_brokers(f->md->ch, &req, &l, &co, &err), SL_OK, &err);
  uint32_t load = 0;
  for (size_t i = 0; i < l->n_brokers; i++)
    if (strcmp(l->brokers[i]->id, "b1") == 0) load = l->brokers[i]->load_permille;
  protobuf_c_message_free_unpacked(&l->base, NULL);
  return load;
}

static atomic_bool burning;

static void *burn(void *arg) {
  (void)arg;
  volatile uint64_t x = 0;
  while (atomic_load(&burning)) x++;
  return NULL;
}

/* Waits (at most 10 s) until b1's registered load satisfies want(load). */
static uint32_t await_load(fx *f, bool (*want)(uint32_t)) {
  long long deadline = sl_clock_mono_ms() + 10000;
  uint32_t load = registered_load(f);
  while (!want(load) && sl_clock_mono_ms() < deadline) {
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    load = registered_load(f);
  }
  return load;
}

/* Above the pick margin (100) over an idle broker, with room for a busy
 * machine. */
static bool busy_load(uint32_t l) { return l >= 200; }
static bool idle_load(uint32_t l) { return l < 150; }

/* A broker whose process burns CPU reports it as load_permille (at the next
 * keep-alive), and new partitions then go to an idle broker, every one of
 * them (owned counts are equal, so without the load a hash would split
 * them). Once idle again, the report comes back down. */
static void test_ownership__load_is_reported_and_steers_picks(void **state) {
  fx *f = *state;
  fake_broker fb = {0};
  fake_broker_start(&fb);
  int64_t other = 0;
  sl_err err = SL_ERR_INIT;
  mdt_expect(mdt_st_open_broker_at(f->md->ch, "b2", fb.addr, 30, &other, &err), SL_OK, &err);
  pthread_t burners[2];
  atomic_store(&burning, true);
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&burners[i], NULL, burn, NULL), 0);
  uint32_t load = await_load(f, busy_load);
  if (!busy_load(load)) {
    atomic_store(&burning, false);
    for (int i = 0; i < 2; i++) pthread_join(burners[i], NULL);
    fail_msg("b1's registered load stayed at %u while burning CPU", load);
  }
  /* Checked once the burners stopped, so that a failure stops them too. */
  char name[32], owners[8][64];
  sl_status sts[8];
  bool local[8];
  for (int i = 0; i < 8; i++) {
    snprintf(name, sizeof(name), "public/load%d", i);
    create_topic(f, name);
    resolve(f, name, false);
    sts[i] = S.st;
    local[i] = S.local;
    snprintf(owners[i], sizeof(owners[i]), "%s", S.st == SL_OK ? S.owner_id : "");
  }
  atomic_store(&burning, false);
  for (int i = 0; i < 2; i++) pthread_join(burners[i], NULL);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(sts[i], SL_OK);
    assert_string_equal(owners[i], "b2");
    assert_false(local[i]);
  }
  assert_int_equal(atomic_load(&fb.lookups), 8);
  assert_int_equal(sl_ownership_count(f->o), 0);
  load = await_load(f, idle_load);
  assert_true(idle_load(load));
  sl_rpc_server_destroy(fb.srv);
}

/* Plays the holder: answers the first unload hook from another thread. */
static void *holder(void *arg) {
  await(&S.unload_hooks, 1);
  pthread_mutex_lock(&S.mu);
  char partition[64];
  snprintf(partition, sizeof(partition), "%s", S.hook_partition);
  pthread_mutex_unlock(&S.mu);
  sl_ownership_unloaded(arg, partition);
  return NULL;
}

static int brokers_listed(fx *f) {
  Sluice__V1__ListBrokersRequest req = SLUICE__V1__LIST_BROKERS_REQUEST__INIT;
  Sluice__V1__ListBrokersResponse *l = NULL;
  sl_rpc_call_opts co = mdt_opts(5000);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_list_brokers(f->md->ch, &req, &l, &co, &err);
  if (st != SL_OK) fail_msg("list brokers: %s", sl_err_msg(&err, st));
  int n = (int)l->n_brokers;
  protobuf_c_message_free_unpacked(&l->base, NULL);
  return n;
}

static void test_ownership__stop_drains_and_closes_the_session(void **state) {
  fx *f = *state;
  create_topic(f, "public/e");
  resolve(f, "public/e", false);
  assert_int_equal(brokers_listed(f), 1);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, holder, f->o), 0);
  long long t0 = sl_clock_mono_ms();
  sl_ownership_stop(f->o, 5000);
  long long ms = sl_clock_mono_ms() - t0;
  pthread_join(t, NULL);
  assert_true(ms < sl_test_scaled_ms(1000));
  assert_string_equal(S.hook_partition, "public/e");
  char id[64];
  assert_int_equal(owner_of(f, "public/e", id, sizeof(id)), SL_ENOTFOUND);
  assert_int_equal(brokers_listed(f), 0); /* CloseSession, not a lapse */
  /* Stopping: nothing new is acquired. */
  create_topic(f, "public/f");
  resolve(f, "public/f", false);
  assert_int_equal(S.st, SL_EUNAVAIL);
}

/* The metadata service goes away: within the TTL the holders hear that the
 * session is lost, and the table is empty. */
static void test_ownership__session_loss_tells_the_holders(void **state) {
  fx *f = *state;
  create_topic(f, "public/g");
  resolve(f, "public/g", false);
  uint64_t epoch = S.epoch;
  long long t0 = sl_clock_mono_ms();
  sl_rpc_server_destroy(f->md->srv); /* keep the store: only the service dies */
  f->md->srv = NULL;
  await(&S.lost_hooks, 1);
  long long ms = sl_clock_mono_ms() - t0;
  print_message("session lost %lld ms after the service went away (TTL 2 s)\n", ms);
  assert_true(ms <= 2000);
  assert_string_equal(S.hook_partition, "public/g");
  assert_int_equal(S.hook_epoch, epoch);
  assert_false(sl_ownership_owns(f->o, "public/g", NULL));
  assert_int_equal(sl_ownership_count(f->o), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_ownership__unowned_partition_is_acquired, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ownership__owned_elsewhere_is_remote, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ownership__slow_job_blocks_only_its_partition,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_ownership__load_is_reported_and_steers_picks,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_ownership__unload_waits_for_the_holder, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ownership__deleted_topic_revokes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ownership__drop_forgets_without_release, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ownership__stop_drains_and_closes_the_session,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_ownership__session_loss_tells_the_holders, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
