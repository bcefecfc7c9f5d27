/* Watch streams over real gRPC to a local-store service (md_watch.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/metadata_util.h"

typedef Sluice__V1__WatchEvent event;
#define PUT SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_PUT
#define DEL SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_DELETE
#define RESET SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_RESET

static int setup_small_buffer(void **state) {
  sl_md_service_opts o = SL_MD_SERVICE_OPTS_INIT;
  o.watch_buffer = 16;
  *state = mdt_local_new(&o);
  return 0;
}

static sl_rpc_stream *open_watch(sl_rpc_channel *ch, Sluice__V1__WatchTarget target,
                                 const char *prefix, int64_t start) {
  Sluice__V1__WatchRequest req = SLUICE__V1__WATCH_REQUEST__INIT;
  req.target = target;
  req.prefix = (char *)(prefix ? prefix : "");
  req.start_revision = start;
  sl_rpc_stream *s = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_watch_open(ch, &req, NULL, &s, &err), SL_OK, &err);
  return s;
}

/* The next event, within 5 s; checks revisions never go back. */
static event *next(sl_rpc_stream *s, int64_t *last_rev) {
  event *ev = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_watch_recv(s, &ev, 5000, &err), SL_OK, &err);
  assert_non_null(ev);
  assert_true(ev->revision >= *last_rev);
  *last_rev = ev->revision;
  return ev;
}

static void expect(sl_rpc_stream *s, int64_t *rev, Sluice__V1__WatchEventType type,
                   const char *key) {
  event *ev = next(s, rev);
  if (ev->type != type || strcmp(ev->key, key) != 0)
    fail_msg("got event type %d key %s, want type %d key %s", ev->type, ev->key, type, key);
  if (type == PUT) assert_true(ev->broker || ev->bookie || ev->owner);
  protobuf_c_message_free_unpacked(&ev->base, NULL);
}

static void close_session(sl_rpc_channel *ch, int64_t s) {
  Sluice__V1__CloseSessionRequest req = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  req.session_id = s;
  req.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  req.node_id = "b1";
  Sluice__V1__CloseSessionResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_close_session(ch, &req, &resp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void test_md_watch__state_then_changes(void **state) {
  mdt_local *l = *state;
  int64_t s1 = mdt_open_broker(l->ch, "b1", 0);
  mdt_open_broker(l->ch, "b2", 0);
  mdt_open_bookie(l->ch, "k1", false, 0); /* another target: not seen */
  sl_rpc_stream *w = open_watch(l->ch, SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BROKERS, NULL, 0);
  int64_t rev = 0;
  expect(w, &rev, PUT, "b1");
  expect(w, &rev, PUT, "b2");
  int64_t snap = rev;
  mdt_open_broker(l->ch, "b3", 0);
  expect(w, &rev, PUT, "b3");
  assert_true(rev > snap);
  close_session(l->ch, s1);
  expect(w, &rev, DEL, "b1");
  sl_rpc_stream_destroy(w);
}

static void test_md_watch__ownership_prefix_and_resume(void **state) {
  mdt_local *l = *state;
  int64_t s = mdt_open_broker(l->ch, "b1", 0);
  sl_rpc_stream *w =
      open_watch(l->ch, SLUICE__V1__WATCH_TARGET__WATCH_TARGET_OWNERSHIP, "public/", 0);
  int64_t rev = 0;
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(l->ch, "other/t", "b1", s);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  r = mdt_acquire(l->ch, "public/t-partition-0", "b1", s);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  event *ev = next(w, &rev);
  assert_int_equal(ev->type, PUT);
  assert_string_equal(ev->key, "public/t-partition-0");
  assert_int_equal(ev->owner->epoch, 1);
  assert_string_equal(ev->owner->broker_id, "b1");
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  sl_rpc_stream_destroy(w);

  /* Changes while nobody watches, then resume from the next revision. */
  r = mdt_acquire(l->ch, "public/t-partition-1", "b1", s);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  r = mdt_acquire(l->ch, "public/t-partition-2", "b1", s);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  w = open_watch(l->ch, SLUICE__V1__WATCH_TARGET__WATCH_TARGET_OWNERSHIP, "public/", rev + 1);
  expect(w, &rev, PUT, "public/t-partition-1");
  expect(w, &rev, PUT, "public/t-partition-2");
  /* Nothing else: the resumed stream has no snapshot. */
  ev = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_watch_recv(w, &ev, 200, &err), SL_ETIMEDOUT, &err);
  close_session(l->ch, s);
  for (int i = 0; i < 3; i++) {
    ev = next(w, &rev);
    assert_int_equal(ev->type, DEL);
    protobuf_c_message_free_unpacked(&ev->base, NULL);
  }
  sl_rpc_stream_destroy(w);
}

static void test_md_watch__compacted_history_resets(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s = mdt_open_broker(l->ch, "b1", 0);
  int64_t first = 0;
  mdt_expect(sl_store_revision(l->store, &first, &err), SL_OK, &err);
  mdt_open_broker(l->ch, "b2", 0);
  close_session(l->ch, s);
  int64_t now = 0;
  mdt_expect(sl_store_revision(l->store, &now, &err), SL_OK, &err);
  mdt_expect(sl_store_compact(l->store, now, &err), SL_OK, &err);
  /* Resuming from a compacted revision: RESET, then the state, then changes. */
  sl_rpc_stream *w =
      open_watch(l->ch, SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BROKERS, NULL, first);
  int64_t rev = 0;
  expect(w, &rev, RESET, "");
  assert_true(rev >= now);
  expect(w, &rev, PUT, "b2");
  mdt_open_broker(l->ch, "b3", 0);
  expect(w, &rev, PUT, "b3");
  sl_rpc_stream_destroy(w);
}

/* announce_state: a RESET first, at the revision of the state that follows
 * (a broker waits for it before it takes partitions), then the state and
 * the changes as without it. */
static void test_md_watch__announced_state(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  mdt_open_broker(l->ch, "b1", 0);
  int64_t before = 0;
  mdt_expect(sl_store_revision(l->store, &before, &err), SL_OK, &err);
  Sluice__V1__WatchRequest req = SLUICE__V1__WATCH_REQUEST__INIT;
  req.target = SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BROKERS;
  req.announce_state = true;
  sl_rpc_stream *w = NULL;
  mdt_expect(sl_metadata_service_watch_open(l->ch, &req, NULL, &w, &err), SL_OK, &err);
  int64_t rev = 0;
  expect(w, &rev, RESET, "");
  assert_true(rev >= before);
  expect(w, &rev, PUT, "b1");
  mdt_open_broker(l->ch, "b2", 0);
  expect(w, &rev, PUT, "b2");
  sl_rpc_stream_destroy(w);
}

static void test_md_watch__slow_reader_is_cut_off(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  /* Big events: a long address (registered at open: it cannot change
   * within a session) and a long version. */
  char address[256], version[256];
  memset(address, 'a', 249);
  memcpy(address + 249, ":9", 3);
  memset(version, 'v', 255);
  version[255] = '\0';
  int64_t s = 0;
  mdt_expect(mdt_st_open_broker_at(l->ch, "b1", address, 120, &s, &err), SL_OK, &err);
  sl_rpc_stream *w = open_watch(l->ch, SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BROKERS, NULL, 0);
  int64_t rev = 0;
  expect(w, &rev, PUT, "b1");
  /* Many changes while the client reads nothing: flow control fills,
   * then the write queue, then the 16-event buffer. */
  Sluice__V1__BrokerInfo b = SLUICE__V1__BROKER_INFO__INIT;
  b.id = "b1";
  b.address = address;
  b.version = version;
  Sluice__V1__UpdateNodeRequest up = SLUICE__V1__UPDATE_NODE_REQUEST__INIT;
  up.session_id = s;
  up.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  up.broker = &b;
  enum { UPDATES = 16000 }; /* gRPC buffered about 4 MB (8k events) here */
  for (int i = 0; i < UPDATES; i++) {
    Sluice__V1__UpdateNodeResponse *ur = NULL;
    b.load_permille = (uint32_t)(i % 1000);
    mdt_expect(sl_metadata_service_update_node(l->ch, &up, &ur, NULL, &err), SL_OK, &err);
    protobuf_c_message_free_unpacked(&ur->base, NULL);
  }
  /* Reading now: what was sent arrives, then RESOURCE_EXHAUSTED. */
  sl_status st;
  int got = 0;
  for (;;) {
    event *ev = NULL;
    st = sl_metadata_service_watch_recv(w, &ev, 5000, &err);
    if (st != SL_OK || ev == NULL) break;
    got++;
    protobuf_c_message_free_unpacked(&ev->base, NULL);
  }
  mdt_expect(st, SL_ETOOBIG, &err);
  assert_non_null(strstr(err.msg, "fell more than 16 events behind"));
  print_message("received %d of %d events before the cut\n", got, UPDATES);
  assert_true(got < UPDATES);
  sl_rpc_stream_destroy(w);
  /* The service is fine; a new watch starts with the current state. */
  w = open_watch(l->ch, SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BROKERS, NULL, 0);
  rev = 0;
  event *ev = next(w, &rev);
  assert_int_equal(ev->broker->load_permille, 999);
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  sl_rpc_stream_destroy(w);
}

static void test_md_watch__bad_requests(void **state) {
  mdt_local *l = *state;
  struct {
    int target;
    const char *prefix;
    int64_t start;
  } cases[] = {
      {9, "", 0},
      {SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BROKERS, "public/", 0},
      {SLUICE__V1__WATCH_TARGET__WATCH_TARGET_OWNERSHIP, "bad prefix", 0},
      {SLUICE__V1__WATCH_TARGET__WATCH_TARGET_OWNERSHIP, "", -1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    sl_rpc_stream *w = open_watch(l->ch, (Sluice__V1__WatchTarget)cases[i].target,
                                  cases[i].prefix, cases[i].start);
    event *ev = NULL;
    sl_err err = SL_ERR_INIT;
    mdt_expect(sl_metadata_service_watch_recv(w, &ev, 5000, &err), SL_EINVAL, &err);
    sl_rpc_stream_destroy(w);
  }
}

static void test_md_watch__many_watchers_come_and_go(void **state) {
  mdt_local *l = *state;
  enum { N = 20 };
  sl_rpc_stream *ws[N];
  for (int i = 0; i < N; i++)
    ws[i] = open_watch(l->ch, SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BOOKIES, NULL, 0);
  mdt_open_bookie(l->ch, "k1", false, 0);
  for (int i = 0; i < N; i++) {
    int64_t rev = 0;
    expect(ws[i], &rev, PUT, "k1");
    /* Half are cancelled by the client, half just dropped. */
    if (i % 2 == 0) sl_rpc_stream_cancel(ws[i]);
  }
  for (int i = 0; i < N; i++) sl_rpc_stream_destroy(ws[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_md_watch__state_then_changes, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_watch__ownership_prefix_and_resume, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_watch__announced_state, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_watch__compacted_history_resets, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_watch__slow_reader_is_cut_off, setup_small_buffer,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_watch__bad_requests, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_watch__many_watchers_come_and_go, mdt_local_setup,
                                      mdt_local_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
