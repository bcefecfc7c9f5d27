/*
 * The session keeper against a scripted MetadataService in this process
 * (real gRPC over loopback): on_lost at TTL after the last keep-alive that
 * succeeded while the service hangs, then a new session; loss reported by
 * the service (NOT_FOUND, PERMISSION_DENIED); UpdateNode on poke with the
 * broker's info; CloseSession naming the holder on stop, without on_lost.
 *
 * Wall-clock bounds scale by $SLUICE_TIME_SCALE (common/testing.h) for slow
 * machines.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/clock.h"
#include "common/rpc_server.h"
#include "common/testing.h"
#include "common/session.h"
#include "common/testdata/rpc_fixture.h"
#include "metadata.slrpc.h"

#define BROKER SLUICE__V1__NODE_KIND__NODE_KIND_BROKER
#define TTL_S 2

/* ---- the scripted metadata service ---- */

typedef enum mode { ANSWER, HANG, GONE, TAKEN } mode;

typedef struct fake {
  pthread_mutex_t mu;
  mode mode;            /* how KeepAlive and UpdateNode answer */
  int64_t next_id;
  int64_t live;         /* the live session; 0 = none */
  int64_t last_ok_ms;   /* when the last answered keep-alive arrived */
  int opens, keepalives, updates, closes;
  bool named_holder;    /* every session call named (BROKER, "b1") */
  bool update_fails;    /* UpdateNode answers INVALID_ARGUMENT */
  uint32_t last_load;   /* load_permille of the last OpenSession/UpdateNode */
  sl_rpc_server *srv;
  char target[64];
} fake;

static bool names_holder(Sluice__V1__NodeKind kind, const char *id) {
  return kind == BROKER && strcmp(id, "b1") == 0;
}

static void open_session(sl_rpc_call *call, const Sluice__V1__OpenSessionRequest *req,
                         void *ctx) {
  fake *f = ctx;
  pthread_mutex_lock(&f->mu);
  bool ok = req->kind == BROKER && req->broker != NULL && f->mode != HANG;
  Sluice__V1__OpenSessionResponse r = SLUICE__V1__OPEN_SESSION_RESPONSE__INIT;
  if (ok) {
    r.took_over = f->live != 0;
    f->live = ++f->next_id;
    f->opens++;
    f->last_ok_ms = sl_clock_mono_ms();
    f->last_load = req->broker->load_permille;
    f->named_holder &= names_holder(req->kind, req->broker->id);
  }
  r.session_id = f->live;
  r.ttl_seconds = TTL_S;
  bool hang = f->mode == HANG;
  pthread_mutex_unlock(&f->mu);
  if (ok)
    sl_metadata_service_open_session_reply(call, &r);
  else if (!hang)
    sl_rpc_call_finish(call, SL_EINVAL, "broker info missing", NULL);
}

/* How a session call is answered in the current mode; false: leave it. */
static bool session_answer(fake *f, int64_t session, sl_status *st) {
  switch (f->mode) {
    case HANG: return false;
    case GONE: *st = SL_ENOTFOUND; f->live = 0; return true;
    case TAKEN: *st = SL_EPERM; return true;
    case ANSWER: *st = session == f->live ? SL_OK : SL_ENOTFOUND; return true;
  }
  return false;
}

static void keep_alive(sl_rpc_call *call, const Sluice__V1__KeepAliveRequest *req, void *ctx) {
  fake *f = ctx;
  sl_status st = SL_OK;
  pthread_mutex_lock(&f->mu);
  f->named_holder &= names_holder(req->kind, req->node_id);
  bool answer = session_answer(f, req->session_id, &st);
  if (answer && st == SL_OK) {
    f->keepalives++;
    f->last_ok_ms = sl_clock_mono_ms();
  }
  pthread_mutex_unlock(&f->mu);
  Sluice__V1__KeepAliveResponse r = SLUICE__V1__KEEP_ALIVE_RESPONSE__INIT;
  r.ttl_seconds = TTL_S;
  if (answer && st == SL_OK)
    sl_metadata_service_keep_alive_reply(call, &r);
  else if (answer)
    sl_rpc_call_finish(call, st, "scripted refusal", NULL);
}

static void update_node(sl_rpc_call *call, const Sluice__V1__UpdateNodeRequest *req,
                        void *ctx) {
  fake *f = ctx;
  sl_status st = SL_OK;
  pthread_mutex_lock(&f->mu);
  bool answer = session_answer(f, req->session_id, &st);
  if (req->broker == NULL || f->update_fails) st = SL_EINVAL;
  if (answer && st == SL_OK) {
    f->updates++;
    f->last_load = req->broker->load_permille;
    f->named_holder &= names_holder(req->kind, req->broker->id);
  }
  pthread_mutex_unlock(&f->mu);
  Sluice__V1__UpdateNodeResponse r = SLUICE__V1__UPDATE_NODE_RESPONSE__INIT;
  if (answer && st == SL_OK)
    sl_metadata_service_update_node_reply(call, &r);
  else if (answer)
    sl_rpc_call_finish(call, st, "scripted refusal", NULL);
}

static void close_session(sl_rpc_call *call, const Sluice__V1__CloseSessionRequest *req,
                          void *ctx) {
  fake *f = ctx;
  pthread_mutex_lock(&f->mu);
  f->named_holder &= names_holder(req->kind, req->node_id);
  if (req->session_id == f->live) {
    f->closes++;
    f->live = 0;
  }
  pthread_mutex_unlock(&f->mu);
  Sluice__V1__CloseSessionResponse r = SLUICE__V1__CLOSE_SESSION_RESPONSE__INIT;
  sl_metadata_service_close_session_reply(call, &r);
}

static fake *fake_start(void) {
  fake *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  pthread_mutex_init(&f->mu, NULL);
  f->next_id = 100;
  f->named_holder = true;
  sl_err err = SL_ERR_INIT;
  sl_rpc_server_opts o = {.addr = "127.0.0.1:0"};
  assert_int_equal(sl_rpc_server_create(&o, &f->srv, &err), SL_OK);
  sl_metadata_service_handlers h;
  memset(&h, 0, sizeof(h));
  h.open_session = open_session;
  h.keep_alive = keep_alive;
  h.update_node = update_node;
  h.close_session = close_session;
  assert_int_equal(sl_metadata_service_register(f->srv, &h, f, &err), SL_OK);
  assert_int_equal(sl_rpc_server_start(f->srv, &err), SL_OK);
  snprintf(f->target, sizeof(f->target), "127.0.0.1:%d", sl_rpc_server_port(f->srv));
  return f;
}

static void fake_set(fake *f, mode m) {
  pthread_mutex_lock(&f->mu);
  f->mode = m;
  pthread_mutex_unlock(&f->mu);
}

static void fake_stop(fake *f) {
  sl_rpc_server_destroy(f->srv); /* cancels hanging calls */
  pthread_mutex_destroy(&f->mu);
  free(f);
}

/* ---- the broker's side: what the callbacks saw ---- */

#define MAX_EVENTS 16

typedef struct seen {
  bool lost;            /* on_lost, else on_established */
  sl_session_event ev;
  int64_t at_ms;
} seen;

typedef struct user {
  pthread_mutex_t mu;
  seen events[MAX_EVENTS];
  int n;
  uint32_t load;        /* what describe reports */
} user;

static void record(user *u, bool lost, const sl_session_event *ev) {
  pthread_mutex_lock(&u->mu);
  if (u->n < MAX_EVENTS) u->events[u->n++] = (seen){lost, *ev, sl_clock_mono_ms()};
  pthread_mutex_unlock(&u->mu);
}

static void on_established(void *arg, const sl_session_event *ev) { record(arg, false, ev); }
static void on_lost(void *arg, const sl_session_event *ev) { record(arg, true, ev); }

static void describe(void *arg, ProtobufCMessage *m) {
  user *u = arg;
  Sluice__V1__BrokerInfo *b = (Sluice__V1__BrokerInfo *)m;
  pthread_mutex_lock(&u->mu);
  b->load_permille = u->load;
  pthread_mutex_unlock(&u->mu);
  b->version = "test";
}

static sl_session *start(fake *f, user *u) {
  memset(u, 0, sizeof(*u));
  pthread_mutex_init(&u->mu, NULL);
  sl_session_opts o = {.target = f->target,
                       .kind = BROKER,
                       .node_id = "b1",
                       .address = "127.0.0.1:6650",
                       .ttl_seconds = TTL_S,
                       .retry_min_ms = 20,
                       .retry_max_ms = 200,
                       .rpc_timeout_ms = 5000,
                       .describe = describe,
                       .on_established = on_established,
                       .on_lost = on_lost,
                       .arg = u};
  sl_session *s = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_session_start(&o, &s, &err), SL_OK);
  return s;
}

static int events(user *u) {
  pthread_mutex_lock(&u->mu);
  int n = u->n;
  pthread_mutex_unlock(&u->mu);
  return n;
}

/* Polls until u has seen n events; fails after timeout_ms. */
static void await_events(user *u, int n, int64_t timeout_ms) {
  int64_t end = sl_clock_mono_ms() + sl_test_scaled_ms(timeout_ms);
  while (events(u) < n) {
    if (sl_clock_mono_ms() > end) fail_msg("saw %d session events, want %d", events(u), n);
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static seen event(user *u, int i) {
  pthread_mutex_lock(&u->mu);
  seen e = u->events[i];
  pthread_mutex_unlock(&u->mu);
  return e;
}

static int counter(fake *f, const int *c) {
  pthread_mutex_lock(&f->mu);
  int v = *c;
  pthread_mutex_unlock(&f->mu);
  return v;
}

/* The fake's fields are written on server threads, under f->mu. */
static bool holder_named(fake *f) {
  pthread_mutex_lock(&f->mu);
  bool v = f->named_holder;
  pthread_mutex_unlock(&f->mu);
  return v;
}

static uint32_t last_load(fake *f) {
  pthread_mutex_lock(&f->mu);
  uint32_t v = f->last_load;
  pthread_mutex_unlock(&f->mu);
  return v;
}

/* ---- tests ---- */

static void test_session__lost_at_ttl_then_reopened(void **state) {
  (void)state;
  fake *f = fake_start();
  user u;
  sl_session *s = start(f, &u);
  await_events(&u, 1, 5000);
  seen e = event(&u, 0);
  assert_false(e.lost);
  assert_int_equal(e.ev.generation, 1);
  assert_int_equal(e.ev.session_id, 101);
  assert_false(e.ev.took_over);
  /* A few keep-alives (every TTL/3), then the service hangs. */
  int64_t end = sl_clock_mono_ms() + sl_test_scaled_ms(5000);
  while (counter(f, &f->keepalives) < 2 && sl_clock_mono_ms() < end) {
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  assert_true(counter(f, &f->keepalives) >= 2);
  fake_set(f, HANG);
  await_events(&u, 2, 5000);
  e = event(&u, 1);
  pthread_mutex_lock(&f->mu);
  int64_t last_ok = f->last_ok_ms;
  pthread_mutex_unlock(&f->mu);
  assert_true(e.lost);
  assert_int_equal(e.ev.session_id, 101);
  assert_int_equal(e.ev.why, SL_ETIMEDOUT);
  /* Invariant 1: lost by the time the service's lease (renewed when it got
   * the last keep-alive) could expire, and not long before. */
  int64_t after = e.at_ms - last_ok;
  print_message("on_lost %lld ms after the last keep-alive the service answered (TTL %d ms)\n",
                (long long)after, TTL_S * 1000);
  assert_true(after <= TTL_S * 1000 - sl_session_lost_guard_ms(TTL_S) + sl_test_scaled_ms(40));
  assert_true(after >= TTL_S * 1000 - sl_session_lost_guard_ms(TTL_S) - 100);
  /* The service is back: a new session, generation 2, taking over. */
  fake_set(f, ANSWER);
  await_events(&u, 3, 10000);
  e = event(&u, 2);
  assert_false(e.lost);
  assert_int_equal(e.ev.generation, 2);
  assert_int_equal(e.ev.session_id, 102);
  assert_true(e.ev.took_over);
  sl_session_status st;
  sl_session_get_status(s, &st);
  assert_true(st.live);
  assert_int_equal(st.session_id, 102);
  assert_int_equal(st.losses, 1);
  assert_int_equal(st.takeovers, 1);
  sl_session_stop(s);
  /* Stop closed the session, naming its holder, and said nothing more. */
  assert_int_equal(counter(f, &f->closes), 1);
  assert_true(holder_named(f));
  assert_int_equal(u.n, 3);
  fake_stop(f);
  pthread_mutex_destroy(&u.mu);
}

/* The service says the session is gone (lapsed, or taken over): on_lost at
 * once with its reason, then a new session. */
static void lost_when_told(mode m, sl_status why) {
  fake *f = fake_start();
  user u;
  sl_session *s = start(f, &u);
  await_events(&u, 1, 5000);
  fake_set(f, m);
  int64_t t0 = sl_clock_mono_ms();
  await_events(&u, 2, 5000);
  seen e = event(&u, 1);
  assert_true(e.lost);
  assert_int_equal(e.ev.why, why);
  assert_true(e.at_ms - t0 < TTL_S * 1000); /* at the next keep-alive, not at TTL */
  fake_set(f, ANSWER);
  await_events(&u, 3, 5000);
  assert_false(event(&u, 2).lost);
  assert_int_equal(event(&u, 2).ev.generation, 2);
  sl_session_stop(s);
  fake_stop(f);
  pthread_mutex_destroy(&u.mu);
}

static void test_session__lost_when_service_says_gone(void **state) {
  (void)state;
  lost_when_told(GONE, SL_ENOTFOUND);
}

static void test_session__lost_when_taken_over(void **state) {
  (void)state;
  lost_when_told(TAKEN, SL_EPERM);
}

static void test_session__poke_sends_update(void **state) {
  (void)state;
  fake *f = fake_start();
  user u;
  sl_session *s = start(f, &u);
  await_events(&u, 1, 5000);
  pthread_mutex_lock(&u.mu);
  u.load = 700;
  pthread_mutex_unlock(&u.mu);
  sl_session_poke(s);
  int64_t end = sl_clock_mono_ms() + sl_test_scaled_ms(5000);
  while (counter(f, &f->updates) < 1 && sl_clock_mono_ms() < end) {
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  assert_int_equal(counter(f, &f->updates), 1);
  assert_int_equal(last_load(f), 700);
  sl_session_stop(s);
  assert_true(holder_named(f));
  fake_stop(f);
  pthread_mutex_destroy(&u.mu);
}

/* An UpdateNode that keeps failing does not stand in for keep-alives: the
 * session outlives several TTLs. */
static void test_session__failing_update_does_not_starve(void **state) {
  (void)state;
  fake *f = fake_start();
  user u;
  sl_session *s = start(f, &u);
  await_events(&u, 1, 5000);
  pthread_mutex_lock(&f->mu);
  f->update_fails = true;
  int ka0 = f->keepalives;
  pthread_mutex_unlock(&f->mu);
  sl_session_poke(s);
  /* Keep-alives every TTL/3: seven of them span more than two TTLs. */
  int64_t end = sl_clock_mono_ms() + sl_test_scaled_ms(6 * TTL_S * 1000);
  while (counter(f, &f->keepalives) < ka0 + 7 && sl_clock_mono_ms() < end) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  assert_true(counter(f, &f->keepalives) >= ka0 + 7);
  assert_int_equal(events(&u), 1); /* never lost */
  sl_session_status st;
  sl_session_get_status(s, &st);
  assert_true(st.failures > 0);
  assert_int_equal(st.last_error, SL_EINVAL);
  sl_session_stop(s);
  fake_stop(f);
  pthread_mutex_destroy(&u.mu);
}

static void test_session__bad_opts(void **state) {
  (void)state;
  sl_session *s = NULL;
  sl_err err = SL_ERR_INIT;
  sl_session_opts o = {.target = "127.0.0.1:1", .node_id = "b1", .address = "127.0.0.1:2"};
  assert_int_equal(sl_session_start(&o, &s, &err), SL_EINVAL); /* no kind */
  o.kind = BROKER;
  o.node_id = "";
  assert_int_equal(sl_session_start(&o, &s, &err), SL_EINVAL);
  o.node_id = "b1";
  o.address = NULL;
  assert_int_equal(sl_session_start(&o, &s, &err), SL_EINVAL);
  assert_null(s);
  sl_session_stop(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_session__lost_at_ttl_then_reopened),
      cmocka_unit_test(test_session__lost_when_service_says_gone),
      cmocka_unit_test(test_session__lost_when_taken_over),
      cmocka_unit_test(test_session__poke_sends_update),
      cmocka_unit_test(test_session__failing_update_does_not_starve),
      cmocka_unit_test(test_session__bad_opts),
  };
  return cmocka_run_group_tests(tests, NULL, sl_echo_fx_teardown_group);
}
