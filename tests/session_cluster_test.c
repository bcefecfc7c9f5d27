/*
 * Sessions end to end: a real etcd, a sluice-metadata process and a
 * sluice-bookie process through the cluster harness, and the session
 * keeper (common/session.h) in this process.
 *
 *  - loss: the metadata service is SIGSTOP'd; on_lost fires within the TTL
 *    of the last keep-alive that succeeded, while etcd still holds the
 *    registration (so before its lease could expire), and a new session is
 *    opened once the service is SIGCONT'd;
 *  - a bookie killed with -9 and restarted under the same id (and address)
 *    is registered again at once, not a TTL (30 s here) later;
 *  - another process with that id and another address is refused;
 *  - KeepAlive and CloseSession by a non-holder are refused;
 *  - session ids are absent from LookupOwner and Watch events.
 *
 * Wall-clock bounds scale by $SL_TEST_TIME_SCALE (default 1).
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/session.h"
#include "metadata/store.h"
#include "tests/cluster.h"
#include "tests/metadata_util.h"

#define BROKER SLUICE__V1__NODE_KIND__NODE_KIND_BROKER
#define BOOKIE SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE
#define BOOKIE_TTL_S 30

static const char *const bookie_args[] = {"--registration_ttl", "30", NULL};

typedef struct fixture {
  sl_cluster *c;
  sl_rpc_channel *ch;
} fixture;

static int64_t scaled(int64_t ms) {
  const char *s = getenv("SL_TEST_TIME_SCALE");
  double f = s != NULL ? atof(s) : 1.0;
  return (int64_t)(ms * (f >= 1.0 ? f : 1.0));
}

static void pause_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.bookies = 1;
  o.brokers = 0;
  o.name = "session";
  o.bookie_args = bookie_args;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &f->c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  f->ch = mdt_connect(sl_cluster_addr(f->c, SL_NODE_METADATA, 0));
  mdt_create_namespace(f->ch, "public");
  Sluice__V1__CreateTopicRequest t = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  t.name = "public/s";
  t.partitions = 4;
  Sluice__V1__TopicInfo *ti = NULL;
  sl_rpc_call_opts co = mdt_opts(10000);
  mdt_expect(sl_metadata_service_create_topic(f->ch, &t, &ti, &co, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&ti->base, NULL);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  sl_rpc_channel_destroy(f->ch);
  sl_cluster_destroy(f->c);
  free(f);
  return 0;
}

/* ---- calls that name a node ---- */

static sl_status keep_alive(sl_rpc_channel *ch, int64_t session, const char *node, sl_err *err) {
  Sluice__V1__KeepAliveRequest req = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
  req.session_id = session;
  req.kind = BROKER;
  req.node_id = (char *)node;
  Sluice__V1__KeepAliveResponse *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_status st = sl_metadata_service_keep_alive(ch, &req, &resp, &o, err);
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static sl_status close_session(sl_rpc_channel *ch, int64_t session, const char *node,
                               sl_err *err) {
  Sluice__V1__CloseSessionRequest req = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  req.session_id = session;
  req.kind = BROKER;
  req.node_id = (char *)node;
  Sluice__V1__CloseSessionResponse *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_status st = sl_metadata_service_close_session(ch, &req, &resp, &o, err);
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

/* Fails if text shows session s (if > 0), or any "session <number>". */
static void assert_no_session(const char *text, int64_t s) {
  char id[32];
  snprintf(id, sizeof(id), "%" PRId64, s);
  if (s > 0 && strstr(text, id) != NULL) fail_msg("session %s shown in \"%s\"", id, text);
  for (const char *p = strstr(text, "session "); p != NULL; p = strstr(p + 1, "session "))
    if (p[8] >= '0' && p[8] <= '9') fail_msg("a session id shown in \"%s\"", text);
}

/* s as a protobuf varint into v (10 bytes); returns its length. */
static size_t varint(int64_t s, uint8_t *v) {
  uint64_t x = (uint64_t)s;
  size_t n = 0;
  do {
    v[n] = (uint8_t)(x & 0x7f);
    x >>= 7;
    if (x != 0) v[n] |= 0x80;
    n++;
  } while (x != 0);
  return n;
}

/* ---- loss under SIGSTOP ---- */

typedef struct watcher {
  pthread_mutex_t mu;
  sl_store *etcd;           /* to look at the registration when lost */
  int established, lost;
  sl_session_event last;
  int64_t lost_ms;          /* when on_lost ran */
  bool key_at_lost;         /* etcd still held brokers/b-lost then */
  sl_status key_st;
} watcher;

static void on_established(void *arg, const sl_session_event *ev) {
  watcher *w = arg;
  pthread_mutex_lock(&w->mu);
  w->established++;
  w->last = *ev;
  pthread_mutex_unlock(&w->mu);
}

static void on_lost(void *arg, const sl_session_event *ev) {
  watcher *w = arg;
  int64_t at = sl_clock_mono_ms();
  /* Straight to etcd (the service is stopped): is the registration, bound
   * to the session's lease, still there? */
  static const char key[] = "/sluice/brokers/b-lost";
  sl_store_kv kv = {0};
  sl_status st = sl_store_get(w->etcd, key, sizeof(key) - 1, &kv, NULL);
  bool held = st == SL_OK && kv.lease == ev->session_id;
  if (st == SL_OK) sl_store_kv_release(&kv);
  pthread_mutex_lock(&w->mu);
  w->lost++;
  w->last = *ev;
  w->lost_ms = at;
  w->key_at_lost = held;
  w->key_st = st;
  pthread_mutex_unlock(&w->mu);
}

static int count(watcher *w, const int *c) {
  pthread_mutex_lock(&w->mu);
  int v = *c;
  pthread_mutex_unlock(&w->mu);
  return v;
}

static void await_count(watcher *w, const int *c, int want, int64_t timeout_ms,
                        const char *what) {
  int64_t end = sl_clock_mono_ms() + scaled(timeout_ms);
  while (count(w, c) < want) {
    if (sl_clock_mono_ms() > end) fail_msg("%s: not seen within %lld ms", what, (long long)timeout_ms);
    pause_ms(2);
  }
}

static void signal_metadata(fixture *f, int sig) {
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_cluster_signal(f->c, SL_NODE_METADATA, 0, sig, &err), SL_OK, &err);
}

static void test_session_cluster__lost_before_lease_expires(void **state) {
  fixture *f = *state;
  const uint32_t ttl = 3;
  watcher w = {.mu = PTHREAD_MUTEX_INITIALIZER};
  char uri[128];
  snprintf(uri, sizeof(uri), "etcd:%s", sl_cluster_etcd(f->c)->endpoint);
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_store_open(uri, NULL, &w.etcd, &err), SL_OK, &err);
  sl_session_opts o = {.target = sl_cluster_addr(f->c, SL_NODE_METADATA, 0),
                       .kind = BROKER,
                       .node_id = "b-lost",
                       .address = "127.0.0.1:7001",
                       .ttl_seconds = ttl,
                       .retry_min_ms = 50,
                       .retry_max_ms = 500,
                       .rpc_timeout_ms = 1000,
                       .on_established = on_established,
                       .on_lost = on_lost,
                       .arg = &w};
  sl_session *s = NULL;
  mdt_expect(sl_session_start(&o, &s, &err), SL_OK, &err);
  await_count(&w, &w.established, 1, 10000, "first session");
  int64_t first = w.last.session_id;
  /* Keep-alives go through for a while. */
  sl_session_status st;
  int64_t end = sl_clock_mono_ms() + scaled(10000);
  do {
    pause_ms(20);
    sl_session_get_status(s, &st);
  } while (st.keepalives < 2 && sl_clock_mono_ms() < end);
  assert_true(st.keepalives >= 2);

  signal_metadata(f, SIGSTOP);
  await_count(&w, &w.lost, 1, 2 * ttl * 1000, "on_lost");
  sl_session_get_status(s, &st);
  pthread_mutex_lock(&w.mu);
  int64_t after = w.lost_ms - st.renewed_ms;
  bool held = w.key_at_lost;
  sl_status key_st = w.key_st;
  sl_session_event lost = w.last;
  pthread_mutex_unlock(&w.mu);
  /* With the service still stopped, the lease lapses in etcd: that is the
   * earliest moment anyone else could take over. */
  static const char key[] = "/sluice/brokers/b-lost";
  int64_t gone_ms = 0;
  end = sl_clock_mono_ms() + scaled(ttl * 1000 + 2000);
  while (gone_ms == 0 && sl_clock_mono_ms() < end) {
    sl_store_kv kv = {0};
    sl_status kst = sl_store_get(w.etcd, key, sizeof(key) - 1, &kv, NULL);
    if (kst == SL_OK) sl_store_kv_release(&kv);
    if (kst == SL_ENOTFOUND) gone_ms = sl_clock_mono_ms();
    else pause_ms(5);
  }
  signal_metadata(f, SIGCONT);
  print_message("on_lost %lld ms after the last keep-alive that succeeded was sent (TTL %u s);"
                " etcd still held the registration then, and dropped it %lld ms later\n",
                (long long)after, ttl, (long long)(gone_ms - w.lost_ms));
  assert_true(gone_ms > 0);
  assert_int_equal(lost.session_id, first);
  assert_int_equal(lost.why, SL_ETIMEDOUT);
  assert_true(after <= (int64_t)ttl * 1000 - sl_session_lost_guard_ms(ttl) + scaled(50));
  assert_true(after >= (int64_t)ttl * 1000 - sl_session_lost_guard_ms(ttl) - 50);
  if (!held) fail_msg("registration gone from etcd at on_lost (%s)", sl_status_str(key_st));

  /* The service is back: registered again, under a new session. */
  await_count(&w, &w.established, 2, 20000, "second session");
  pthread_mutex_lock(&w.mu);
  sl_session_event again = w.last;
  pthread_mutex_unlock(&w.mu);
  assert_int_equal(again.generation, 2);
  assert_true(again.session_id != first);
  /* b-lost is registered under the new session: the old one is refused. */
  mdt_expect(keep_alive(f->ch, first, "b-lost", &err), SL_EPERM, &err);
  sl_session_stop(s);
  sl_store_close(w.etcd);
}

/* ---- restart under the same id ---- */

/* bookie-0's start_time_ms as registered, or 0 when not registered. */
static int64_t bookie_start_time(fixture *f) {
  Sluice__V1__ListBookiesRequest q = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
  Sluice__V1__ListBookiesResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts o = mdt_opts(10000);
  mdt_expect(sl_metadata_service_list_bookies(f->ch, &q, &r, &o, &err), SL_OK, &err);
  int64_t t = 0;
  for (size_t i = 0; i < r->n_bookies; i++)
    if (strcmp(r->bookies[i]->id, sl_cluster_id(f->c, SL_NODE_BOOKIE, 0)) == 0)
      t = r->bookies[i]->start_time_ms;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return t;
}

static void test_session_cluster__restart_registers_at_once(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  int64_t end = sl_clock_mono_ms() + scaled(10000), before = 0;
  while ((before = bookie_start_time(f)) == 0 && sl_clock_mono_ms() < end) pause_ms(20);
  assert_true(before != 0);
  mdt_expect(sl_cluster_kill9(f->c, SL_NODE_BOOKIE, 0, &err), SL_OK, &err);
  int64_t t0 = sl_clock_mono_ms();
  mdt_expect(sl_cluster_restart(f->c, SL_NODE_BOOKIE, 0, &err), SL_OK, &err);
  int64_t ready = sl_clock_mono_ms();
  /* The old session's lease has BOOKIE_TTL_S to run; the new process must
   * not wait for it. */
  int64_t now_t = 0;
  end = t0 + scaled(BOOKIE_TTL_S * 1000 / 3);
  while (((now_t = bookie_start_time(f)) == before || now_t == 0) && sl_clock_mono_ms() < end)
    pause_ms(10);
  int64_t done = sl_clock_mono_ms();
  print_message("bookie restarted under the same id: registered %lld ms after kill -9 (%lld ms"
                " after it was ready); its old session had %d s to run\n",
                (long long)(done - t0), (long long)(done - ready), BOOKIE_TTL_S);
  assert_true(now_t != before && now_t != 0);
}

static void test_session_cluster__same_id_other_address_refused(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  int64_t end = sl_clock_mono_ms() + scaled(10000);
  while (bookie_start_time(f) == 0 && sl_clock_mono_ms() < end) pause_ms(20);
  Sluice__V1__BookieInfo b = SLUICE__V1__BOOKIE_INFO__INIT;
  b.id = (char *)sl_cluster_id(f->c, SL_NODE_BOOKIE, 0);
  b.address = "127.0.0.1:1";
  Sluice__V1__OpenSessionRequest req = SLUICE__V1__OPEN_SESSION_REQUEST__INIT;
  req.kind = BOOKIE;
  req.bookie = &b;
  Sluice__V1__OpenSessionResponse *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  mdt_expect(sl_metadata_service_open_session(f->ch, &req, &resp, &o, &err), SL_EEXIST, &err);
  assert_non_null(strstr(err.msg, sl_cluster_addr(f->c, SL_NODE_BOOKIE, 0)));
  assert_no_session(err.msg, 0);
  assert_true(bookie_start_time(f) != 0); /* the real bookie is still registered */
}

/* ---- holder checks and private ids ---- */

static void test_session_cluster__non_holder_refused(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s1 = mdt_open_broker(f->ch, "h1", 30), s2 = mdt_open_broker(f->ch, "h2", 30);
  mdt_expect(close_session(f->ch, s1, "h2", &err), SL_EPERM, &err);
  assert_no_session(err.msg, s1);
  assert_no_session(err.msg, s2);
  mdt_expect(keep_alive(f->ch, s1, "h2", &err), SL_EPERM, &err);
  mdt_expect(close_session(f->ch, s2 + 1, "h1", &err), SL_EPERM, &err);
  mdt_expect(keep_alive(f->ch, s1, "nobody", &err), SL_ENOTFOUND, &err);
  /* Both sessions live on, and each holder may end its own. */
  mdt_expect(keep_alive(f->ch, s1, "h1", &err), SL_OK, &err);
  mdt_expect(keep_alive(f->ch, s2, "h2", &err), SL_OK, &err);
  mdt_expect(close_session(f->ch, s1, "h1", &err), SL_OK, &err);
  mdt_expect(close_session(f->ch, s2, "h2", &err), SL_OK, &err);
}

static void test_session_cluster__ids_absent_from_answers(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  const char *p = "public/s-partition-2";
  int64_t s = mdt_open_broker(f->ch, "o1", 30);
  Sluice__V1__WatchRequest wr = SLUICE__V1__WATCH_REQUEST__INIT;
  wr.target = SLUICE__V1__WATCH_TARGET__WATCH_TARGET_OWNERSHIP;
  wr.prefix = (char *)p;
  sl_rpc_stream *w = NULL;
  mdt_expect(sl_metadata_service_watch_open(f->ch, &wr, NULL, &w, &err), SL_OK, &err);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(f->ch, p, "o1", s);
  assert_true(r->acquired);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  /* The PUT, from the initial state or as a change. */
  Sluice__V1__WatchEvent *ev = NULL;
  mdt_expect(sl_metadata_service_watch_recv(w, &ev, 10000, &err), SL_OK, &err);
  assert_string_equal(ev->key, p);
  assert_non_null(ev->owner);
  assert_string_equal(ev->owner->broker_id, "o1");
  assert_int_equal(ev->owner->base.n_unknown_fields, 0); /* field 5 is reserved */
  assert_int_equal(ev->base.n_unknown_fields, 0);
  protobuf_c_message_free_unpacked(&ev->base, NULL);
  sl_rpc_stream_destroy(w);
  Sluice__V1__LookupOwnerRequest lq = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
  lq.partition = (char *)p;
  Sluice__V1__OwnerInfo *o = NULL;
  sl_rpc_call_opts co = mdt_opts(10000);
  mdt_expect(sl_metadata_service_lookup_owner(f->ch, &lq, &o, &co, &err), SL_OK, &err);
  assert_string_equal(o->broker_id, "o1");
  assert_int_equal(o->base.n_unknown_fields, 0);
  size_t len = protobuf_c_message_get_packed_size(&o->base);
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  protobuf_c_message_pack(&o->base, buf);
  /* Nor as any bytes: the session's varint is not in the answer. */
  uint8_t v[10];
  assert_null(memmem(buf, len, v, varint(s, v)));
  free(buf);
  protobuf_c_message_free_unpacked(&o->base, NULL);
  mdt_expect(close_session(f->ch, s, "o1", &err), SL_OK, &err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_session_cluster__lost_before_lease_expires),
      cmocka_unit_test(test_session_cluster__restart_registers_at_once),
      cmocka_unit_test(test_session_cluster__same_id_other_address_refused),
      cmocka_unit_test(test_session_cluster__non_holder_refused),
      cmocka_unit_test(test_session_cluster__ids_absent_from_answers),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
