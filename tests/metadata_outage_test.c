/*
 * sluice-metadata while etcd is down: every call that needs etcd fails with
 * UNAVAILABLE within its deadline, and once etcd is back the same process
 * serves again. The service runs with --store_timeout_ms 2000, as deployed:
 *  - etcd killed: calls fail at once (the etcd client's fail-fast gate), so
 *    a 500 ms deadline still gets UNAVAILABLE, and a burst of calls does
 *    not hold every worker thread for 2 s each;
 *  - etcd hung (SIGSTOP): each store call ends by the RPC's own deadline
 *    minus a margin, so the client gets UNAVAILABLE, not DEADLINE_EXCEEDED.
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

#include <dirent.h>
#include <pthread.h>
#include <signal.h>

#include "common/rpc_health.h"
#include "tests/metadata_cluster.h"
#include "tests/metadata_util.h"

#define P "public/outage"
#define DEADLINE_MS 3000
#define SHORT_DEADLINE_MS 1000 /* shorter than the store timeout; its margin is 100 ms */

typedef struct fixture {
  sl_cluster *c;
  sl_rpc_channel *ch;
  int64_t session;
  uint64_t epoch;
  int64_t cursor_version;
} fixture;

static int setup(void **state) {
  static const char *const args[] = {"--store_timeout_ms", "2000", "--health_interval_ms", "250",
                                     NULL};
  fixture *f = calloc(1, sizeof(*f));
  f->c = mdt_cluster_start("mdoutage", 1, false, args);
  f->ch = mdt_cluster_connect(f->c, 0);
  f->session = mdt_open_broker(f->ch, "b1", 30);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(f->ch, P, "b1", f->session);
  f->epoch = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  sl_err err = SL_ERR_INIT;
  mdt_expect(mdt_st_update_cursor(f->ch, P, "s", 1, 0, f->epoch, &f->cursor_version, &err),
             SL_OK, &err);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  mdt_cluster_stop(f->c, f->ch);
  free(f);
  return 0;
}

/* One call of each kind that needs etcd, with a deadline of deadline_ms;
 * returns its status. */
static sl_status call(fixture *f, int which, int deadline_ms, sl_err *err) {
  sl_rpc_call_opts o = mdt_opts(deadline_ms);
  ProtobufCMessage *resp = NULL;
  sl_status st;
  switch (which) {
    case 0: {
      Sluice__V1__GetCursorRequest r = SLUICE__V1__GET_CURSOR_REQUEST__INIT;
      r.partition = P;
      r.subscription = "s";
      st = sl_metadata_service_get_cursor(f->ch, &r, (Sluice__V1__CursorResponse **)&resp, &o,
                                          err);
      break;
    }
    case 1: {
      Sluice__V1__Position pos = SLUICE__V1__POSITION__INIT;
      pos.ledger_id = 1;
      pos.entry_id = 2;
      Sluice__V1__CursorInfo c = SLUICE__V1__CURSOR_INFO__INIT;
      c.partition = P;
      c.subscription = "s";
      c.mark_delete = &pos;
      Sluice__V1__UpdateCursorRequest r = SLUICE__V1__UPDATE_CURSOR_REQUEST__INIT;
      r.info = &c;
      r.expected_version = f->cursor_version;
      r.epoch = f->epoch;
      st = sl_metadata_service_update_cursor(f->ch, &r, (Sluice__V1__CursorResponse **)&resp,
                                             &o, err);
      break;
    }
    case 2: {
      Sluice__V1__KeepAliveRequest r = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
      r.session_id = f->session;
      r.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
      r.node_id = "b1";
      st = sl_metadata_service_keep_alive(f->ch, &r, (Sluice__V1__KeepAliveResponse **)&resp,
                                          &o, err);
      break;
    }
    case 3: {
      Sluice__V1__LookupOwnerRequest r = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
      r.partition = P;
      st = sl_metadata_service_lookup_owner(f->ch, &r, (Sluice__V1__OwnerInfo **)&resp, &o, err);
      break;
    }
    case 4: {
      Sluice__V1__ListBookiesRequest r = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
      st = sl_metadata_service_list_bookies(f->ch, &r, (Sluice__V1__ListBookiesResponse **)&resp,
                                            &o, err);
      break;
    }
    case 5: {
      Sluice__V1__CreateNamespaceRequest r = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
      r.name = "during-outage";
      st = sl_metadata_service_create_namespace(f->ch, &r, (Sluice__V1__Namespace **)&resp, &o,
                                                err);
      break;
    }
    default: {
      Sluice__V1__BrokerInfo b = SLUICE__V1__BROKER_INFO__INIT;
      b.id = "b9";
      b.address = "127.0.0.1:1";
      b.version = "test";
      Sluice__V1__OpenSessionRequest r = SLUICE__V1__OPEN_SESSION_REQUEST__INIT;
      r.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
      r.broker = &b;
      st = sl_metadata_service_open_session(f->ch, &r, (Sluice__V1__OpenSessionResponse **)&resp,
                                            &o, err);
      break;
    }
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  return st;
}
#define N_CALLS 7

static void test_metadata_outage__unavailable_then_back(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < N_CALLS - 2; i++)
    mdt_expect(call(f, i == 1 ? 0 : i, DEADLINE_MS, &err), SL_OK, &err);

  mdt_etcd_kill9(f->c);
  for (int i = 0; i < N_CALLS; i++) {
    long long t0 = sl_clock_mono_ms();
    sl_status st = call(f, i, DEADLINE_MS, &err);
    long long took = sl_clock_mono_ms() - t0;
    if (st != SL_EUNAVAIL)
      fail_msg("call %d with etcd down: %s (%s), want unavailable", i, sl_status_str(st),
               sl_err_msg(&err, st));
    assert_true(took < DEADLINE_MS);
  }
  /* A watch opened now ends with UNAVAILABLE too, not silence. */
  Sluice__V1__WatchRequest wr = SLUICE__V1__WATCH_REQUEST__INIT;
  sl_rpc_stream *w = NULL;
  mdt_expect(sl_metadata_service_watch_open(f->ch, &wr, NULL, &w, &err), SL_OK, &err);
  Sluice__V1__WatchEvent *ev = NULL;
  mdt_expect(sl_metadata_service_watch_recv(w, &ev, DEADLINE_MS, &err), SL_EUNAVAIL, &err);
  sl_rpc_stream_destroy(w);

  /* etcd returns: the same service process works again. */
  mdt_etcd_restart(f->c);
  long long deadline = sl_clock_mono_ms() + 20000;
  sl_status st;
  do {
    st = call(f, 0, DEADLINE_MS, &err);
    if (st != SL_OK) {
      struct timespec ts = {0, 50 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  } while (st != SL_OK && sl_clock_mono_ms() < deadline);
  mdt_expect(st, SL_OK, &err);
  /* The session survived (an etcd restart renews leases), the CAS works,
   * and ownership is still ours. */
  for (int i = 1; i < N_CALLS - 1; i++)
    mdt_expect(call(f, i, DEADLINE_MS, &err), SL_OK, &err);
  int64_t entry = 0;
  mdt_expect(mdt_st_get_cursor(f->ch, P, "s", &entry, NULL, &err), SL_OK, &err);
  assert_int_equal(entry, 2);
}

/* Polls a read until the service answers it again; returns how long that
 * took, failing the test past limit_ms. */
static long long wait_serving(fixture *f, long long limit_ms) {
  sl_err err = SL_ERR_INIT;
  long long t0 = sl_clock_mono_ms();
  sl_status st;
  while ((st = call(f, 0, DEADLINE_MS, &err)) != SL_OK) {
    if (sl_clock_mono_ms() - t0 > limit_ms)
      fail_msg("service not back %lld ms after etcd: %s", limit_ms, sl_err_msg(&err, st));
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return sl_clock_mono_ms() - t0;
}

/* True once every thread of pid is stopped ('T' in /proc/pid/task/N/stat). */
static bool all_stopped(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (d == NULL) return false;
  bool stopped = true;
  struct dirent *de;
  while (stopped && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    char stat[384], buf[512];
    snprintf(stat, sizeof(stat), "%s/%s/stat", path, de->d_name);
    FILE *fp = fopen(stat, "r");
    if (fp == NULL) continue; /* the thread just exited */
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* the state follows "(comm) " */
    stopped = paren != NULL && paren[1] == ' ' && paren[2] == 'T';
  }
  closedir(d);
  return stopped;
}

/* SIGSTOP etcd: it keeps its sockets (connections still succeed) but never
 * answers. Waits until it really is stopped, since a signal lands
 * asynchronously. */
static void freeze_etcd(fixture *f) {
  pid_t pid = sl_cluster_etcd(f->c)->proc.pid;
  assert_int_equal(kill(pid, SIGSTOP), 0);
  long long deadline = sl_clock_mono_ms() + 5000;
  while (!all_stopped(pid)) {
    if (sl_clock_mono_ms() > deadline) fail_msg("etcd did not stop within 5 s");
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* Each kind of call with a deadline shorter than the store timeout, while
 * etcd is `how`; every one must be UNAVAILABLE within its deadline. */
static void expect_unavailable_in_time(fixture *f, int n_kinds, const char *how) {
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < n_kinds; i++) {
    long long t0 = sl_clock_mono_ms();
    sl_status st = call(f, i, SHORT_DEADLINE_MS, &err);
    long long took = sl_clock_mono_ms() - t0;
    print_message("etcd %s: call %d -> %s in %lld ms (deadline %d ms)\n", how, i,
                  sl_status_str(st), took, SHORT_DEADLINE_MS);
    if (st != SL_EUNAVAIL)
      fail_msg("etcd %s, call %d with a %d ms deadline: %s (%s), want unavailable", how, i,
               SHORT_DEADLINE_MS, sl_status_str(st), sl_err_msg(&err, st));
    assert_true(took <= SHORT_DEADLINE_MS);
  }
}

static void test_metadata_outage__short_deadline_gets_unavailable(void **state) {
  fixture *f = *state;
  /* Killed: connections are refused, the etcd client fails fast. */
  mdt_etcd_kill9(f->c);
  expect_unavailable_in_time(f, N_CALLS, "killed");
  mdt_etcd_restart(f->c);
  wait_serving(f, 5000);
  /* Hung: nothing is refused, so only the call's own deadline (minus a
   * margin) ends the store call before the client's deadline. */
  freeze_etcd(f);
  expect_unavailable_in_time(f, 3, "hung");
  assert_int_equal(kill(sl_cluster_etcd(f->c)->proc.pid, SIGCONT), 0);
  wait_serving(f, 5000);
}

#define BURST_THREADS 8
#define BURST_CALLS 25 /* per thread: 200 in all */

typedef struct burst {
  fixture *f;
  int index;
  int unavailable; /* calls that got UNAVAILABLE */
  char first_bad[256]; /* the first other outcome, if any */
} burst;

static void *burst_main(void *arg) {
  burst *b = arg;
  for (int i = 0; i < BURST_CALLS; i++) {
    sl_err err = SL_ERR_INIT;
    sl_status st = call(b->f, (b->index + i) % 5, DEADLINE_MS, &err);
    if (st == SL_EUNAVAIL)
      b->unavailable++;
    else if (b->first_bad[0] == '\0')
      snprintf(b->first_bad, sizeof(b->first_bad), "%s (%s)", sl_status_str(st),
               sl_err_msg(&err, st));
  }
  return NULL;
}

static void test_metadata_outage__burst_fails_fast_then_recovers(void **state) {
  fixture *f = *state;
  mdt_etcd_kill9(f->c);
  /* 200 calls that each retried until the 2 s store timeout would keep the
   * 16 workers busy for 25 s at least. */
  burst b[BURST_THREADS];
  pthread_t t[BURST_THREADS];
  long long t0 = sl_clock_mono_ms();
  for (int i = 0; i < BURST_THREADS; i++) {
    b[i] = (burst){.f = f, .index = i};
    assert_int_equal(pthread_create(&t[i], NULL, burst_main, &b[i]), 0);
  }
  for (int i = 0; i < BURST_THREADS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
  long long took = sl_clock_mono_ms() - t0;
  print_message("%d calls from %d threads with etcd down: %lld ms\n",
                BURST_THREADS * BURST_CALLS, BURST_THREADS, took);
  for (int i = 0; i < BURST_THREADS; i++)
    if (b[i].unavailable != BURST_CALLS)
      fail_msg("thread %d: %d of %d calls unavailable; first other: %s", i, b[i].unavailable,
               BURST_CALLS, b[i].first_bad);
  assert_true(took < 10000);

  /* etcd returns: the same process serves again within a few seconds. */
  mdt_etcd_restart(f->c);
  long long back = wait_serving(f, 5000);
  print_message("service back %lld ms after etcd answered again\n", back);
  sl_err err = SL_ERR_INIT;
  mdt_expect(call(f, 1, DEADLINE_MS, &err), SL_OK, &err);
}

/* grpc.health.v1 Check of `service`: its ServingStatus, or -1. */
static int health(fixture *f, const char *service) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  req.service = (char *)service;
  ProtobufCMessage *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(2000);
  sl_err err = SL_ERR_INIT;
  if (sl_rpc_unary(f->ch, &sl_rpc_health_check, &req.base, &resp, &o, &err) != SL_OK) return -1;
  int status = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
  protobuf_c_message_free_unpacked(resp, NULL);
  return status;
}

#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING

/* Polls until both the server and the service report `want`. */
static void await_health(fixture *f, int want, const char *why) {
  long long t0 = sl_clock_mono_ms(), deadline = t0 + 15000;
  for (;;) {
    int all = health(f, ""), svc = health(f, "sluice.v1.MetadataService");
    if (all == want && svc == want) break;
    if (sl_clock_mono_ms() > deadline)
      fail_msg("%s: health is %d/%d after 15 s, want %d", why, all, svc, want);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  print_message("%s: health %s after %lld ms\n", why, want == SERVING ? "SERVING" : "NOT_SERVING",
                sl_clock_mono_ms() - t0);
}

/* Kubernetes stops routing to a replica whose store is gone: health is
 * NOT_SERVING while etcd is killed or hung, SERVING once it is back. */
static void test_metadata_outage__health_follows_the_store(void **state) {
  fixture *f = *state;
  await_health(f, SERVING, "etcd up");
  mdt_etcd_kill9(f->c);
  await_health(f, NOT_SERVING, "etcd killed");
  mdt_etcd_restart(f->c);
  await_health(f, SERVING, "etcd restarted");
  freeze_etcd(f);
  await_health(f, NOT_SERVING, "etcd stopped");
  assert_int_equal(kill(sl_cluster_etcd(f->c)->proc.pid, SIGCONT), 0);
  await_health(f, SERVING, "etcd continued");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_metadata_outage__health_follows_the_store, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_metadata_outage__unavailable_then_back, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_metadata_outage__short_deadline_gets_unavailable,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_metadata_outage__burst_fails_fast_then_recovers,
                                      setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
