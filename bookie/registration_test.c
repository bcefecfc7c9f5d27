/*
 * Registration against a scripted MetadataService in the same process
 * (real gRPC over loopback): retries while the service answers
 * UNIMPLEMENTED, keep-alives, re-opening a lapsed session, UpdateNode on a
 * read-only flip, CloseSession on stop, and a quick stop when the service
 * never answers.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "bookie/registration.h"
#include "common/clock.h"
#include "common/rpc.h"
#include "common/rpc_server.h"
#include "metadata.slrpc.h"
#include "common/testing.h"

/* ---- the scripted metadata service ---- */

typedef struct fake {
  pthread_mutex_t mu;
  int unimplemented_left; /* OpenSession answers UNIMPLEMENTED this often */
  bool hang;              /* leave every call unanswered */
  int64_t next_id;
  int64_t live;           /* the one live session; 0 = none */
  int opens, keepalives, updates, closes;
  int64_t closed_id;
  bool last_read_only;
  char last_address[64];
  char last_instance[64];
  sl_rpc_server *srv;
  char target[64];
} fake;

static void open_session(sl_rpc_call *call, const Sluice__V1__OpenSessionRequest *req,
                         void *ctx) {
  fake *f = ctx;
  pthread_mutex_lock(&f->mu);
  if (f->hang) {
    pthread_mutex_unlock(&f->mu);
    return;
  }
  if (f->unimplemented_left > 0) {
    f->unimplemented_left--;
    pthread_mutex_unlock(&f->mu);
    sl_rpc_call_finish(call, SL_EUNIMPL, "OpenSession is not implemented yet", NULL);
    return;
  }
  bool ok = req->kind == SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE && req->bookie != NULL;
  if (ok) {
    f->live = ++f->next_id;
    f->opens++;
    f->last_read_only = req->bookie->read_only;
    snprintf(f->last_address, sizeof(f->last_address), "%s", req->bookie->address);
    snprintf(f->last_instance, sizeof(f->last_instance), "%s", req->bookie->instance_id);
  }
  Sluice__V1__OpenSessionResponse r = SLUICE__V1__OPEN_SESSION_RESPONSE__INIT;
  r.session_id = f->live;
  r.ttl_seconds = 2;
  pthread_mutex_unlock(&f->mu);
  if (ok)
    sl_metadata_service_open_session_reply(call, &r);
  else
    sl_rpc_call_finish(call, SL_EINVAL, "bookie info missing", NULL);
}

static void keep_alive(sl_rpc_call *call, const Sluice__V1__KeepAliveRequest *req,
                       void *ctx) {
  fake *f = ctx;
  pthread_mutex_lock(&f->mu);
  /* Calls that carry the session name the holder, as the real service wants. */
  bool live = req->session_id != 0 && req->session_id == f->live &&
              req->kind == SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE &&
              strcmp(req->node_id, "bookie-7") == 0;
  if (live) f->keepalives++;
  pthread_mutex_unlock(&f->mu);
  Sluice__V1__KeepAliveResponse r = SLUICE__V1__KEEP_ALIVE_RESPONSE__INIT;
  r.ttl_seconds = 2;
  if (live)
    sl_metadata_service_keep_alive_reply(call, &r);
  else
    sl_rpc_call_finish(call, SL_ENOTFOUND, "session not found", NULL);
}

static void update_node(sl_rpc_call *call, const Sluice__V1__UpdateNodeRequest *req,
                        void *ctx) {
  fake *f = ctx;
  pthread_mutex_lock(&f->mu);
  bool live = req->session_id == f->live && req->bookie != NULL;
  if (live) {
    f->updates++;
    f->last_read_only = req->bookie->read_only;
  }
  pthread_mutex_unlock(&f->mu);
  Sluice__V1__UpdateNodeResponse r = SLUICE__V1__UPDATE_NODE_RESPONSE__INIT;
  if (live)
    sl_metadata_service_update_node_reply(call, &r);
  else
    sl_rpc_call_finish(call, SL_ENOTFOUND, "session not found", NULL);
}

static void close_session(sl_rpc_call *call, const Sluice__V1__CloseSessionRequest *req,
                          void *ctx) {
  fake *f = ctx;
  pthread_mutex_lock(&f->mu);
  /* Counted only when it names the holder (the tests expect one). */
  if (req->kind == SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE &&
      strcmp(req->node_id, "bookie-7") == 0) {
    f->closes++;
    f->closed_id = req->session_id;
    if (req->session_id == f->live) f->live = 0;
  }
  pthread_mutex_unlock(&f->mu);
  Sluice__V1__CloseSessionResponse r = SLUICE__V1__CLOSE_SESSION_RESPONSE__INIT;
  sl_metadata_service_close_session_reply(call, &r);
}

static fake *fake_start_tls(int unimplemented, const char *cert, const char *key) {
  fake *f = calloc(1, sizeof(*f));
  pthread_mutex_init(&f->mu, NULL);
  f->unimplemented_left = unimplemented;
  f->next_id = 100;
  sl_err err = SL_ERR_INIT;
  sl_rpc_server_opts o = {.addr = "127.0.0.1:0", .tls_cert_pem = cert, .tls_key_pem = key};
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

static fake *fake_start(int unimplemented) {
  return fake_start_tls(unimplemented, NULL, NULL);
}

static void fake_stop(fake *f) {
  sl_rpc_server_destroy(f->srv);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

/* ---- the bookie's side ---- */

typedef struct bstate {
  pthread_mutex_t mu;
  bool read_only;
} bstate;

static void get_state(void *arg, bool *ro, uint64_t *free_b, uint64_t *total) {
  bstate *b = arg;
  pthread_mutex_lock(&b->mu);
  *ro = b->read_only;
  pthread_mutex_unlock(&b->mu);
  *free_b = 1000;
  *total = 2000;
}

static bool bstate_init(bstate *b) {
  pthread_mutex_init(&b->mu, NULL);
  b->read_only = false;
  return true;
}

/* Starts a registration reporting b's state, after initializing b. */
static sl_registration *reg_start_tls(const char *target, bstate *b, const char *ca) {
  bstate_init(b);
  sl_registration_opts o = SL_REGISTRATION_OPTS_INIT;
  o.tls_root_pem = ca;
  o.target = target;
  o.bookie_id = "bookie-7";
  o.address = "127.0.0.1:3181";
  o.instance_id = "inst-7";
  o.ttl_seconds = 2;
  o.retry_min_ms = 10;
  o.retry_max_ms = 50;
  o.rpc_timeout_ms = 5000;
  o.get_state = get_state;
  o.arg = b;
  sl_registration *r = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_registration_start(&o, &r, &err), SL_OK);
  return r;
}

static sl_registration *reg_start(const char *target, bstate *b) {
  return reg_start_tls(target, b, NULL);
}

/* Polls cond(f, r) every millisecond for up to timeout_ms. */
typedef bool (*cond_fn)(fake *f, sl_registration *r);

static bool await(cond_fn cond, fake *f, sl_registration *r, int timeout_ms) {
  int64_t deadline = sl_clock_mono_ms() + timeout_ms;
  for (;;) {
    if (cond(f, r)) return true;
    if (sl_clock_mono_ms() > deadline) return false;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

static sl_registration_status status(sl_registration *r) {
  sl_registration_status s;
  sl_registration_get_status(r, &s);
  return s;
}

static bool registered(fake *f, sl_registration *r) {
  (void)f;
  return status(r).registered;
}

static bool two_keepalives(fake *f, sl_registration *r) {
  (void)r;
  pthread_mutex_lock(&f->mu);
  bool ok = f->keepalives >= 2;
  pthread_mutex_unlock(&f->mu);
  return ok;
}

static bool reopened(fake *f, sl_registration *r) {
  pthread_mutex_lock(&f->mu);
  int64_t live = f->live;
  bool ok = f->opens == 2 && live != 0;
  pthread_mutex_unlock(&f->mu);
  return ok && status(r).session_id == live;
}

static bool updated_read_only(fake *f, sl_registration *r) {
  pthread_mutex_lock(&f->mu);
  bool ok = f->updates >= 1 && f->last_read_only;
  pthread_mutex_unlock(&f->mu);
  return ok && status(r).reported_read_only;
}

/* Starts a registration against f and waits until it has a session. */
static sl_registration *reg_registered(fake *f, bstate *b) {
  sl_registration *r = reg_start(f->target, b);
  assert_true(await(registered, f, r, 10000));
  return r;
}

/* Stops r and fails unless that took under a second. */
static void stop_quickly(sl_registration *r) {
  int64_t t0 = sl_clock_mono_ms();
  sl_registration_stop(r);
  assert_true(sl_clock_mono_ms() - t0 < sl_test_scaled_ms(1000));
}

/* Fails unless f saw exactly `n` CloseSession calls. */
static void expect_closes(fake *f, int n) {
  pthread_mutex_lock(&f->mu);
  assert_int_equal(f->closes, n);
  pthread_mutex_unlock(&f->mu);
}

/* ---- tests ---- */

static void test_registration__retries_while_unimplemented(void **state) {
  (void)state;
  fake *f = fake_start(3);
  bstate b;
  sl_registration *r = reg_registered(f, &b);
  sl_registration_status s = status(r);
  assert_int_equal(s.failures, 3);
  assert_int_equal(s.last_error, SL_EUNIMPL);
  assert_int_equal(s.opens, 1);
  assert_int_equal(s.ttl_seconds, 2);
  pthread_mutex_lock(&f->mu);
  assert_string_equal(f->last_address, "127.0.0.1:3181");
  assert_string_equal(f->last_instance, "inst-7");
  pthread_mutex_unlock(&f->mu);
  sl_registration_stop(r);
  fake_stop(f);
}

static void test_registration__keepalive_then_reopen_lapsed(void **state) {
  (void)state;
  fake *f = fake_start(0);
  bstate b;
  sl_registration *r = reg_start(f->target, &b);
  assert_true(await(two_keepalives, f, r, 10000));
  /* The lease lapses on the service's side: the next keep-alive gets
   * NOT_FOUND and a new session is opened. */
  pthread_mutex_lock(&f->mu);
  f->live = 0;
  pthread_mutex_unlock(&f->mu);
  assert_true(await(reopened, f, r, 10000));
  sl_registration_stop(r);
  fake_stop(f);
}

static void test_registration__poke_reports_read_only(void **state) {
  (void)state;
  fake *f = fake_start(0);
  bstate b;
  sl_registration *r = reg_registered(f, &b);
  assert_false(status(r).reported_read_only);
  pthread_mutex_lock(&b.mu);
  b.read_only = true;
  pthread_mutex_unlock(&b.mu);
  sl_registration_poke(r);
  assert_true(await(updated_read_only, f, r, 10000));
  sl_registration_stop(r);
  fake_stop(f);
}

static void test_registration__stop_closes_session(void **state) {
  (void)state;
  fake *f = fake_start(0);
  bstate b;
  sl_registration *r = reg_registered(f, &b);
  int64_t id = status(r).session_id;
  sl_registration_stop(r);
  pthread_mutex_lock(&f->mu);
  assert_int_equal(f->closes, 1);
  assert_int_equal(f->closed_id, id);
  assert_int_equal(f->live, 0);
  pthread_mutex_unlock(&f->mu);
  fake_stop(f);
}

static void test_registration__stop_is_quick_when_service_hangs(void **state) {
  (void)state;
  fake *f = fake_start(0);
  /* The server's workers already run; the request reaches them over a
   * socket, which is no happens-before edge for TSan. */
  pthread_mutex_lock(&f->mu);
  f->hang = true;
  pthread_mutex_unlock(&f->mu);
  bstate b;
  sl_registration *r = reg_start(f->target, &b); /* rpc timeout 5 s */
  stop_quickly(r);
  fake_stop(f);
}

static void test_registration__stop_is_quick_when_service_down(void **state) {
  (void)state;
  bstate b;
  sl_registration *r = reg_start("127.0.0.1:1", &b);
  stop_quickly(r);
}

/* Reads a whole file (test helper; aborts the test on failure). */
static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) fail_msg("%s: cannot open", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static void test_registration__over_tls(void **state) {
  (void)state;
  const char *base = getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp";
  char dir[4096], cmd[16384], cert_path[4200], key_path[4200];
  snprintf(dir, sizeof(dir), "%s/regtls.XXXXXX", base);
  assert_non_null(mkdtemp(dir));
  snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
  snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
  snprintf(cmd, sizeof(cmd),
           "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
           "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout %s -out %s "
           ">/dev/null 2>&1", key_path, cert_path);
  assert_int_equal(system(cmd), 0);
  char *cert = slurp(cert_path), *key = slurp(key_path);
  fake *f = fake_start_tls(0, cert, key);
  bstate b;
  sl_registration *r = reg_start_tls(f->target, &b, cert);
  assert_true(await(registered, f, r, 10000));
  sl_registration_stop(r);
  expect_closes(f, 1);
  fake_stop(f);
  free(cert);
  free(key);
  unlink(cert_path);
  unlink(key_path);
  rmdir(dir);
}

/* Every server and channel is gone; gRPC tears down on its own threads, and
 * the process must not exit under them. */
static int teardown(void **state) {
  (void)state;
  return sl_rpc_wait_shutdown(30000) == SL_OK ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_registration__retries_while_unimplemented),
      cmocka_unit_test(test_registration__keepalive_then_reopen_lapsed),
      cmocka_unit_test(test_registration__poke_reports_read_only),
      cmocka_unit_test(test_registration__stop_closes_session),
      cmocka_unit_test(test_registration__stop_is_quick_when_service_hangs),
      cmocka_unit_test(test_registration__stop_is_quick_when_service_down),
      cmocka_unit_test(test_registration__over_tls),
  };
  return cmocka_run_group_tests(tests, NULL, teardown);
}
