/*
 * Tests of async client streams and cancellable async unary calls
 * (rpc_astream.h, rpc_client.h) over real gRPC on loopback against the echo
 * service: every stream shape, callbacks on the user's serial, a full send
 * queue and on_writable, pause/resume, cancel racing completion, deadlines,
 * keepalive against a frozen (SIGSTOP) server process, pack once / send to
 * three streams, multi-endpoint targets and a DNS name with two addresses,
 * with one endpoint down.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/testing.h"
#include "common/rpc_astream.h"
#include "common/rpc_server.h"
#include "common/testdata/dns_stub.h"
#include "common/testdata/echo_service.h"
#include "common/testdata/rpc_fixture.h"
#include "tests/proc.h"

typedef Sluice__Test__EchoRequest echo_req;
typedef Sluice__Test__EchoResponse echo_resp;

#define WAIT_MS 30000 /* an upper bound only: generous for TSan and loaded machines */

/* What a stream's callbacks saw. Callbacks run serially (that is under
 * test: `inside` catches overlap), so plain fields are written only there
 * and read by the test after `done`/`released` say the writer is finished. */
typedef struct rec {
  sl_serial *serial;        /* callbacks must run on it */
  atomic_int inside;
  bool overlap, off_serial, after_done, order_broken;
  atomic_long msgs, writable, done, released;
  long next_n;              /* server streaming: expected resp.n */
  size_t payload_len;       /* of the last message */
  uint8_t payload0;         /* its first byte */
  sl_status st;
  char details[256];
  bool pause_at_first;      /* pause reads in the first on_message */
  bool check_pattern;       /* payloads must be pattern(n, len) */
  bool pattern_broken;
  sl_rpc_astream *s;        /* for pause_at_first */
} rec;

static void rec_init(rec *r, sl_serial *serial) {
  memset(r, 0, sizeof(*r));
  r->serial = serial;
  atomic_init(&r->inside, 0);
  atomic_init(&r->msgs, 0);
  atomic_init(&r->writable, 0);
  atomic_init(&r->done, 0);
  atomic_init(&r->released, 0);
  r->st = 1; /* not an sl_status */
}

static void enter(rec *r) {
  if (atomic_fetch_add(&r->inside, 1) != 0) r->overlap = true;
  if (r->serial != NULL && !sl_serial_running_here(r->serial)) r->off_serial = true;
  if (atomic_load(&r->done) > 0) r->after_done = true;
}

static void leave(rec *r) { atomic_fetch_sub(&r->inside, 1); }

/* Byte i of message n's payload in the large-message case. */
static uint8_t pattern(int64_t n, size_t i) { return (uint8_t)(i * 7 + (size_t)n * 13); }

static void on_message(sl_rpc_astream *s, const ProtobufCMessage *msg, void *arg) {
  rec *r = arg;
  enter(r);
  const echo_resp *m = (const echo_resp *)msg;
  for (size_t i = 0; r->check_pattern && i < m->payload.len; i++)
    if (m->payload.data[i] != pattern(m->n, i)) r->pattern_broken = true;
  if (m->n != r->next_n) r->order_broken = true;
  r->next_n++;
  r->payload_len = m->payload.len;
  r->payload0 = m->payload.len > 0 ? m->payload.data[0] : 0;
  if (r->pause_at_first && atomic_load(&r->msgs) == 0) sl_rpc_astream_pause_reads(s);
  atomic_fetch_add(&r->msgs, 1);
  leave(r);
}

static void on_writable(sl_rpc_astream *s, void *arg) {
  (void)s;
  rec *r = arg;
  enter(r);
  atomic_fetch_add(&r->writable, 1);
  leave(r);
}

static void on_done(sl_rpc_astream *s, sl_status st, const char *details, void *arg) {
  (void)s;
  rec *r = arg;
  enter(r);
  r->st = st;
  snprintf(r->details, sizeof(r->details), "%s", details);
  atomic_fetch_add(&r->done, 1);
  leave(r);
}

static void on_release(void *arg) {
  rec *r = arg;
  atomic_fetch_add(&r->released, 1);
}

static const sl_rpc_astream_handler handler = {
    .on_message = on_message,
    .on_writable = on_writable,
    .on_done = on_done,
    .on_release = on_release,
};

static sl_rpc_astream *open_stream(sl_rpc_channel *ch, const sl_rpc_method *m,
                                   const ProtobufCMessage *first, const sl_rpc_call_opts *o,
                                   rec *r) {
  sl_rpc_astream *s = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_astream_open(ch, m, first, o, &handler, r, &s, &err);
  if (st != SL_OK) fail_msg("open: %s", sl_err_msg(&err, st));
  r->s = s;
  return s;
}

/* Waits for on_done, checks the stream's life was clean, drops the
 * caller's reference and waits for on_release. */
static sl_status finish(sl_rpc_astream *s, rec *r) {
  assert_true(sl_echo_wait(&r->done, 1, WAIT_MS));
  sl_rpc_astream_unref(s);
  assert_true(sl_echo_wait(&r->released, 1, WAIT_MS));
  assert_int_equal(atomic_load(&r->done), 1);
  assert_int_equal(atomic_load(&r->released), 1);
  assert_false(r->overlap);
  assert_false(r->off_serial);
  assert_false(r->after_done);
  return r->st;
}

static echo_req req_of(int64_t n, const char *payload) {
  echo_req q = SLUICE__TEST__ECHO_REQUEST__INIT;
  q.n = n;
  q.payload.data = (uint8_t *)payload;
  q.payload.len = payload != NULL ? strlen(payload) : 0;
  return q;
}

static sl_serial *new_serial(void) {
  sl_serial *s;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_serial_create(&s, &err), SL_OK);
  return s;
}

/* ---- shapes ---- */

static void test_rpc_astream__server_streaming_on_user_serial(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_serial *serial = new_serial();
  rec r;
  rec_init(&r, serial);
  echo_req q = req_of(500, "abc");
  sl_rpc_call_opts o = {.serial = serial};
  sl_rpc_astream *s = open_stream(fx.ch, &sl_echo_server_stream, &q.base, &o, &r);
  assert_int_equal(finish(s, &r), SL_OK);
  assert_int_equal(atomic_load(&r.msgs), 500);
  assert_false(r.order_broken);
  assert_int_equal(r.payload_len, 3);
  sl_serial_unref(serial);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_astream__client_streaming(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  rec r;
  rec_init(&r, NULL);
  r.next_n = 3; /* the one response carries the count */
  sl_rpc_astream *s = open_stream(fx.ch, &sl_echo_client_stream, NULL, NULL, &r);
  /* The threads are named for profiles: the server's two workers and the
   * channel's completion thread, "cq " and the target's tail. */
  assert_int_equal(sl_test_threads_named("rpc-server"), 2);
  char cq[16];
  size_t len = strlen(fx.target);
  snprintf(cq, sizeof(cq), "cq %s", fx.target + (len > 12 ? len - 12 : 0));
  assert_int_equal(sl_test_threads_named(cq), 1);
  echo_req q = req_of(0, "z");
  for (int i = 0; i < 3; i++) assert_int_equal(sl_rpc_astream_send(s, &q.base), SL_OK);
  assert_int_equal(sl_rpc_astream_close_send(s), SL_OK);
  assert_int_equal(sl_rpc_astream_close_send(s), SL_ECANCELED);
  assert_int_equal(sl_rpc_astream_send(s, &q.base), SL_ECANCELED);
  assert_int_equal(finish(s, &r), SL_OK);
  assert_int_equal(atomic_load(&r.msgs), 1);
  assert_false(r.order_broken);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_astream__bidi_echo_and_misuse(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  rec r;
  rec_init(&r, NULL);
  sl_rpc_call_opts o = {.send_queue_max = 1000};
  sl_rpc_astream *s = open_stream(fx.ch, &sl_echo_bidi, NULL, &o, &r);
  for (int i = 0; i < 300; i++) {
    echo_req q = req_of(i, "p");
    assert_int_equal(sl_rpc_astream_send(s, &q.base), SL_OK);
  }
  /* Wrong type: refused, stream unharmed. */
  echo_resp wrong = SLUICE__TEST__ECHO_RESPONSE__INIT;
  assert_int_equal(sl_rpc_astream_send(s, &wrong.base), SL_EINVAL);
  assert_true(sl_echo_wait(&r.msgs, 300, WAIT_MS));
  assert_int_equal(sl_rpc_astream_close_send(s), SL_OK);
  assert_int_equal(finish(s, &r), SL_OK);
  assert_int_equal(atomic_load(&r.msgs), 300);
  assert_false(r.order_broken);

  /* Open refusals: no callback, no stream. */
  sl_err err = SL_ERR_INIT;
  sl_rpc_astream *bad = NULL;
  echo_req q = req_of(1, "x");
  assert_int_equal(sl_rpc_astream_open(fx.ch, &sl_echo_bidi, &q.base, NULL, &handler, &r, &bad,
                                       &err),
                   SL_EINVAL);
  assert_int_equal(sl_rpc_astream_open(fx.ch, &sl_echo_server_stream, NULL, NULL, &handler, &r,
                                       &bad, &err),
                   SL_EINVAL);
  assert_null(bad);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_astream__server_error_reaches_on_done(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  rec r;
  rec_init(&r, NULL);
  /* SL_EFENCED shares FAILED_PRECONDITION with others: only the exact
   * status in the trailing metadata tells them apart. */
  echo_req q = req_of(SL_EFENCED, NULL);
  q.action = SLUICE__TEST__ECHO_REQUEST__ACTION__FAIL;
  sl_rpc_astream *s = open_stream(fx.ch, &sl_echo_server_stream, &q.base, NULL, &r);
  assert_int_equal(finish(s, &r), SL_EFENCED);
  assert_non_null(strstr(r.details, "failing as asked"));
  sl_echo_fx_stop(&fx);
}

/* ---- flow control ---- */

static void test_rpc_astream__full_send_queue_then_writable(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  rec r;
  rec_init(&r, NULL);
  sl_rpc_call_opts o = {.send_queue_max = 4};
  sl_rpc_astream *s = open_stream(fx.ch, &sl_echo_bidi, NULL, &o, &r);
  /* Stop reading echoes: the server's write queue fills, it pauses its
   * reads, HTTP/2 flow control stops our sends, and our queue fills. */
  sl_rpc_astream_pause_reads(s);
  static uint8_t big[64 * 1024];
  echo_req q = SLUICE__TEST__ECHO_REQUEST__INIT;
  q.payload.data = big;
  q.payload.len = sizeof(big);
  long sent = 0, refused = 0;
  sl_status st;
  while ((st = sl_rpc_astream_send(s, &q.base)) == SL_OK) {
    sent++;
    assert_true(sl_rpc_astream_queue_len(s) <= 4);
    assert_true(sent < 100000);
  }
  assert_int_equal(st, SL_EBUSY);
  refused++;
  /* The transport may still be draining into the HTTP/2 window when the
   * queue first fills, so the next send may find room; either way a
   * refused send queues nothing, which the echo count below proves. */
  st = sl_rpc_astream_send(s, &q.base);
  assert_true(st == SL_OK || st == SL_EBUSY);
  if (st == SL_OK) sent++; else refused++;
  assert_true(sl_rpc_astream_queue_len(s) <= 4);
  /* Reading again drains everything; on_writable follows each refusal
   * episode, at most once per refused send. */
  sl_rpc_astream_resume_reads(s);
  assert_true(sl_echo_wait(&r.writable, 1, WAIT_MS));
  assert_true(sl_echo_wait(&r.msgs, sent, WAIT_MS));
  assert_int_equal(sl_rpc_astream_close_send(s), SL_OK);
  assert_int_equal(finish(s, &r), SL_OK);
  assert_true(atomic_load(&r.writable) >= 1 && atomic_load(&r.writable) <= refused);
  assert_int_equal(atomic_load(&r.msgs), sent);
  sl_echo_fx_stop(&fx);
}

/* Messages far larger than an HTTP/2 frame arrive in many slices, which
 * both sides gather into a buffer kept per stream or call (rpc_int.h): each
 * must come back byte for byte, whatever the size of the one before, also
 * past the size at which that buffer is let go. */
static void test_rpc_astream__large_messages_byte_exact(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  rec r;
  rec_init(&r, NULL);
  r.check_pattern = true;
  sl_rpc_astream *s = open_stream(fx.ch, &sl_echo_bidi, NULL, NULL, &r);
  static const size_t sizes[] = {200 * 1024, 64 * 1024, 3 * 1024 * 1024 / 2, 300 * 1024, 17,
                                 100 * 1024};
  enum { N = sizeof(sizes) / sizeof(sizes[0]) };
  uint8_t *buf = malloc(3 * 1024 * 1024 / 2);
  assert_non_null(buf);
  for (int n = 0; n < N; n++) {
    for (size_t i = 0; i < sizes[n]; i++) buf[i] = pattern(n, i);
    echo_req q = SLUICE__TEST__ECHO_REQUEST__INIT;
    q.n = n;
    q.payload.data = buf;
    q.payload.len = sizes[n];
    assert_int_equal(sl_rpc_astream_send(s, &q.base), SL_OK); /* packed: buf reusable */
  }
  free(buf);
  assert_true(sl_echo_wait(&r.msgs, N, WAIT_MS));
  assert_int_equal(sl_rpc_astream_close_send(s), SL_OK);
  assert_int_equal(finish(s, &r), SL_OK);
  assert_int_equal(atomic_load(&r.msgs), N);
  assert_false(r.order_broken);
  assert_false(r.pattern_broken);
  assert_int_equal(r.payload_len, sizes[N - 1]);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_astream__pause_and_resume_reads(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0", .n_threads = 2, .write_queue_max = 4};
  sl_echo_fx_start(&fx, &so, NULL);
  rec r;
  rec_init(&r, NULL);
  r.pause_at_first = true;
  static char payload[4 * 1024];
  memset(payload, 'q', sizeof(payload) - 1);
  echo_req q = req_of(2000, payload);
  sl_rpc_astream *s = open_stream(fx.ch, &sl_echo_server_stream, &q.base, NULL, &r);
  /* Paused after one message: the server goes on sending into the HTTP/2
   * window and its queue while we hold exactly one. */
  assert_true(sl_echo_wait(&r.msgs, 1, WAIT_MS));
  assert_true(sl_echo_wait(&fx.stats.sent, 10, WAIT_MS));
  assert_true(sl_echo_wait(&fx.stats.ebusy, 1, WAIT_MS)); /* it stalled */
  assert_int_equal(atomic_load(&r.msgs), 1);
  assert_int_equal(atomic_load(&r.done), 0);
  r.pause_at_first = false; /* written before resume; callbacks run after */
  sl_rpc_astream_resume_reads(s);
  assert_int_equal(finish(s, &r), SL_OK);
  assert_int_equal(atomic_load(&r.msgs), 2000);
  assert_false(r.order_broken);
  sl_echo_fx_stop(&fx);
}

/* ---- cancel, deadline, channel destroy ---- */

typedef struct racer {
  sl_rpc_astream *s;
  atomic_int go;
} racer;

static void *cancel_main(void *arg) {
  racer *x = arg;
  while (atomic_load(&x->go) == 0) {
  }
  sl_rpc_astream_cancel(x->s);
  sl_rpc_astream_cancel(x->s); /* twice is harmless */
  return NULL;
}

/* Cancel from another thread while the stream completes on its own: on_done
 * exactly once, with OK or SL_ECANCELED, nothing after it, released once.
 * Which one wins each round is up to the scheduler, so the rounds assert
 * only what holds either way; a stream the server never ends shows that
 * cancel itself works. */
static void test_rpc_astream__cancel_races_completion(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  rec hung;
  rec_init(&hung, NULL);
  echo_req h = req_of(1, "h");
  h.action = SLUICE__TEST__ECHO_REQUEST__ACTION__HANG;
  sl_rpc_astream *hs = open_stream(fx.ch, &sl_echo_server_stream, &h.base, NULL, &hung);
  assert_true(sl_echo_wait(&fx.stats.started, 1, WAIT_MS));
  sl_rpc_astream_cancel(hs);
  assert_int_equal(finish(hs, &hung), SL_ECANCELED);
  assert_int_equal(atomic_load(&hung.msgs), 0);

  int ok = 0, cancelled = 0;
  for (int i = 0; i < 300; i++) {
    rec r;
    rec_init(&r, NULL);
    echo_req q = req_of(i % 7, "r");
    sl_rpc_astream *s = open_stream(fx.ch, &sl_echo_server_stream, &q.base, NULL, &r);
    racer x = {.s = s};
    atomic_init(&x.go, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_main, &x), 0);
    if (i % 3 != 0) sl_echo_wait(&r.msgs, i % 7, 2); /* vary the moment */
    atomic_store(&x.go, 1);
    pthread_join(th, NULL);
    sl_status st = finish(s, &r);
    if (st == SL_OK) ok++;
    else if (st == SL_ECANCELED) cancelled++;
    else fail_msg("round %d: status %s (%s)", i, sl_status_str(st), r.details);
  }
  assert_int_equal(ok + cancelled, 300);
  sl_echo_fx_stop(&fx);
}

static void test_rpc_astream__deadline(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  rec r;
  rec_init(&r, NULL);
  sl_rpc_call_opts o = {.timeout_ms = 300};
  int64_t t0 = sl_clock_mono_ms();
  sl_rpc_astream *s = open_stream(fx.ch, &sl_echo_bidi, NULL, &o, &r); /* never half-closed */
  assert_int_equal(finish(s, &r), SL_ETIMEDOUT);
  int64_t took = sl_clock_mono_ms() - t0;
  assert_true(took >= 280);
  assert_true(took < sl_test_scaled_ms(5000));
  sl_echo_fx_stop(&fx);
}

static void test_rpc_astream__channel_destroy_ends_open_streams(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  rec r;
  rec_init(&r, NULL);
  sl_rpc_astream *s = open_stream(fx.ch, &sl_echo_bidi, NULL, NULL, &r);
  assert_true(sl_echo_wait(&fx.stats.started, 1, WAIT_MS));
  sl_rpc_channel_destroy(fx.ch); /* cancels, waits for on_done */
  fx.ch = NULL;
  assert_int_equal(atomic_load(&r.done), 1);
  assert_int_equal(r.st, SL_ECANCELED);
  sl_rpc_astream_unref(s);
  assert_int_equal(atomic_load(&r.released), 1);
  sl_echo_fx_stop(&fx);
}

/* ---- async unary ---- */

typedef struct ures {
  atomic_long calls;
  sl_status st;
  long n;
} ures;

static void unary_cb(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  (void)details;
  ures *u = arg;
  u->st = st;
  if (resp != NULL) {
    u->n = (long)((echo_resp *)resp)->n;
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  atomic_fetch_add(&u->calls, 1);
}

static void test_rpc_astream__unary_cancel_and_ok(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_err err = SL_ERR_INIT;
  ures u = {.st = 1};
  atomic_init(&u.calls, 0);
  echo_req q = req_of(0, NULL);
  q.action = SLUICE__TEST__ECHO_REQUEST__ACTION__HANG;
  sl_rpc_ucall *c = NULL;
  assert_int_equal(sl_rpc_unary_start(fx.ch, &sl_echo_unary, &q.base, NULL, unary_cb, &u, &c,
                                      &err),
                   SL_OK);
  assert_true(sl_echo_wait(&fx.stats.started, 1, WAIT_MS));
  sl_rpc_ucall_cancel(c);
  assert_true(sl_echo_wait(&u.calls, 1, WAIT_MS));
  assert_int_equal(u.st, SL_ECANCELED);
  sl_rpc_ucall_cancel(c); /* after the end: a no-op */
  sl_rpc_ucall_unref(c);

  ures v = {.st = 1};
  atomic_init(&v.calls, 0);
  echo_req ok = req_of(42, "x");
  sl_serial *serial = new_serial();
  sl_rpc_call_opts o = {.serial = serial};
  assert_int_equal(sl_rpc_unary_start(fx.ch, &sl_echo_unary, &ok.base, &o, unary_cb, &v, NULL,
                                      &err),
                   SL_OK);
  assert_true(sl_echo_wait(&v.calls, 1, WAIT_MS));
  assert_int_equal(v.st, SL_OK);
  assert_int_equal(v.n, 42);
  assert_int_equal(atomic_load(&u.calls), 1);
  sl_serial_unref(serial);
  sl_echo_fx_stop(&fx);
}

/* ---- pack once, send many ---- */

static void test_rpc_astream__pack_once_send_to_three_streams(void **state) {
  (void)state;
  sl_echo_fx fx;
  sl_echo_fx_start(&fx, NULL, NULL);
  sl_err err = SL_ERR_INIT;
  sl_serial *serial = new_serial(); /* one serial for all three, like a ledger */
  rec r[3];
  sl_rpc_astream *s[3];
  sl_rpc_call_opts o = {.serial = serial};
  for (int i = 0; i < 3; i++) {
    rec_init(&r[i], serial);
    s[i] = open_stream(fx.ch, &sl_echo_bidi, NULL, &o, &r[i]);
  }
  static char payload[1024];
  memset(payload, 'P', sizeof(payload) - 1);
  echo_req q = req_of(0, payload);
  sl_rpc_packed *p = NULL;
  assert_int_equal(sl_rpc_pack(&q.base, 0, &p, &err), SL_OK);
  assert_int_equal(sl_rpc_packed_size(p), protobuf_c_message_get_packed_size(&q.base));
  for (int i = 0; i < 3; i++) assert_int_equal(sl_rpc_astream_send_packed(s[i], p), SL_OK);
  sl_rpc_packed_unref(p); /* the streams hold the bytes */
  for (int i = 0; i < 3; i++) {
    assert_true(sl_echo_wait(&r[i].msgs, 1, WAIT_MS));
    assert_int_equal(sl_rpc_astream_close_send(s[i]), SL_OK);
    assert_int_equal(finish(s[i], &r[i]), SL_OK);
    assert_int_equal(r[i].payload_len, sizeof(payload) - 1);
    assert_int_equal(r[i].payload0, 'P');
  }
  /* Too big for the limit given. */
  assert_int_equal(sl_rpc_pack(&q.base, 10, &p, &err), SL_ETOOBIG);
  sl_serial_unref(serial);
  sl_echo_fx_stop(&fx);
}

/* ---- keepalive: a frozen server ---- */

static char *echo_server_path(void) {
  const char *srcdir = getenv("TEST_SRCDIR");
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/sluice/common/testdata/echo_server",
           srcdir != NULL ? srcdir : ".");
  char *real = realpath(path, NULL);
  if (real == NULL) fail_msg("echo_server binary not found at %s", path);
  return real;
}

static void test_rpc_astream__keepalive_ends_stream_to_frozen_server(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  int port;
  assert_int_equal(sl_proc_free_port(&port, &err), SL_OK);
  char addr[64], log_path[PATH_MAX];
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  const char *tmp = getenv("TEST_TMPDIR");
  snprintf(log_path, sizeof(log_path), "%s/echo_server.log", tmp != NULL ? tmp : "/tmp");
  char *bin = echo_server_path();
  const char *argv[] = {bin, addr, NULL};
  sl_proc p = SL_PROC_INIT;
  assert_int_equal(sl_proc_start(&p, argv, NULL, log_path, &err), SL_OK);
  assert_int_equal(sl_proc_wait_port(&p, port, WAIT_MS, &err), SL_OK);

  sl_rpc_channel *ch = NULL;
  sl_rpc_channel_opts co = {.target = addr, .keepalive_time_ms = 1000,
                            .keepalive_timeout_ms = 1000};
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_OK);
  rec r;
  rec_init(&r, NULL);
  sl_rpc_astream *s = open_stream(ch, &sl_echo_bidi, NULL, NULL, &r);
  echo_req q = req_of(0, "k");
  assert_int_equal(sl_rpc_astream_send(s, &q.base), SL_OK);
  assert_true(sl_echo_wait(&r.msgs, 1, WAIT_MS)); /* connected and working */
  /* Idle but healthy: keepalive pings are accepted (no GOAWAY
   * too_many_pings), so the stream survives several ping intervals. */
  assert_false(sl_echo_wait(&r.done, 1, 3500));

  /* Frozen: the kernel keeps the socket open, nobody answers pings. */
  assert_int_equal(kill(p.pid, SIGSTOP), 0);
  int64_t t0 = sl_clock_mono_ms();
  assert_true(sl_echo_wait(&r.done, 1, sl_test_scaled_ms(8000)));
  int64_t took = sl_clock_mono_ms() - t0;
  assert_int_equal(r.st, SL_EUNAVAIL);
  assert_true(took < sl_test_scaled_ms(5000));
  kill(p.pid, SIGCONT);
  assert_int_equal(finish(s, &r), SL_EUNAVAIL);
  sl_rpc_channel_destroy(ch);
  assert_int_equal(sl_proc_stop(&p, 5000, &err), SL_OK);
  free(bin);
}

/* ---- targets with several endpoints ---- */

static void unary_ok_via(const char *target, long n) {
  sl_err err = SL_ERR_INIT;
  sl_rpc_channel *ch = NULL;
  sl_rpc_channel_opts co = {.target = target};
  sl_status st = sl_rpc_channel_create(&co, &ch, &err);
  if (st != SL_OK) fail_msg("%s: %s", target, sl_err_msg(&err, st));
  echo_req q = req_of(n, "m");
  ProtobufCMessage *resp = NULL;
  st = sl_rpc_unary(ch, &sl_echo_unary, &q.base, &resp, NULL, &err);
  if (st != SL_OK) fail_msg("%s: %s", target, sl_err_msg(&err, st));
  assert_int_equal(((echo_resp *)resp)->n, n);
  protobuf_c_message_free_unpacked(resp, NULL);
  sl_rpc_channel_destroy(ch);
}

static void test_rpc_astream__multi_endpoint_target_with_one_down(void **state) {
  (void)state;
  sl_echo_fx live, dead;
  sl_echo_fx_start(&live, NULL, NULL);
  sl_echo_fx_start(&dead, NULL, NULL);
  char dead_target[64];
  snprintf(dead_target, sizeof(dead_target), "%s", dead.target);
  sl_echo_fx_stop(&dead); /* its port now refuses connections */
  char target[160];
  snprintf(target, sizeof(target), "%s,%s", dead_target, live.target);
  unary_ok_via(target, 1);
  snprintf(target, sizeof(target), "%s,%s", live.target, dead_target);
  unary_ok_via(target, 2);
  /* A DNS name goes to gRPC's resolver ("localhost" here). */
  snprintf(target, sizeof(target), "localhost:%d", sl_rpc_server_port(live.srv));
  unary_ok_via(target, 3);
  /* Lists must be numeric and of one family. */
  sl_err err = SL_ERR_INIT;
  sl_rpc_channel *ch = NULL;
  sl_rpc_channel_opts co = {.target = "localhost:1,localhost:2"};
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_EINVAL);
  co.target = "127.0.0.1:1,[::1]:2";
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_EINVAL);
  co.target = "127.0.0.1:1,127.0.0.1:";
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_EINVAL);
  assert_null(ch);
  sl_echo_fx_stop(&live);
}

/* Two echo servers on one port at 127.0.0.1 and 127.0.0.2, and a DNS name
 * (served by dns_stub.h) with both addresses. Which address gRPC tries
 * first is its own business (it sorts them), so the test learns it: with
 * both up, a new channel reaches the first one, F. Then F goes down: the
 * same channel reconnects to the other, and a new channel, which again
 * tries F first and is refused, fails over to the other. */
static sl_rpc_server *echo_on(const char *addr, sl_echo_stats *stats) {
  sl_err err = SL_ERR_INIT;
  sl_rpc_server *srv = NULL;
  sl_rpc_server_opts so = {.addr = addr, .n_threads = 1};
  memset(stats, 0, sizeof(*stats));
  sl_status st = sl_echo_server_start(&so, stats, &srv, &err);
  return st == SL_OK ? srv : NULL;
}

static void unary_on(sl_rpc_channel *ch, long n) {
  sl_err err = SL_ERR_INIT;
  echo_req q = req_of(n, "d");
  ProtobufCMessage *resp = NULL;
  sl_rpc_call_opts o = {.wait_for_ready = true, .timeout_ms = (int)sl_test_scaled_ms(10000)};
  sl_status st = sl_rpc_unary(ch, &sl_echo_unary, &q.base, &resp, &o, &err);
  if (st != SL_OK) fail_msg("call %ld: %s", n, sl_err_msg(&err, st));
  assert_int_equal(((echo_resp *)resp)->n, n);
  protobuf_c_message_free_unpacked(resp, NULL);
}

static sl_rpc_channel *channel_to(const char *target) {
  sl_err err = SL_ERR_INIT;
  sl_rpc_channel *ch = NULL;
  sl_rpc_channel_opts co = {.target = target};
  sl_status st = sl_rpc_channel_create(&co, &ch, &err);
  if (st != SL_OK) fail_msg("%s: %s", target, sl_err_msg(&err, st));
  return ch;
}

static void test_rpc_astream__dns_name_with_two_addresses_fails_over(void **state) {
  (void)state;
  sl_echo_stats stats[2];
  sl_rpc_server *srv[2] = {NULL, NULL};
  char addr[64];
  /* 127.0.0.2 may have the port taken: try a few. */
  for (int tries = 0; srv[1] == NULL && tries < 10; tries++) {
    sl_rpc_server_destroy(srv[0]);
    srv[0] = echo_on("127.0.0.1:0", &stats[0]);
    assert_non_null(srv[0]);
    snprintf(addr, sizeof(addr), "127.0.0.2:%d", sl_rpc_server_port(srv[0]));
    srv[1] = echo_on(addr, &stats[1]);
  }
  assert_non_null(srv[1]);
  int port = sl_rpc_server_port(srv[0]);

  sl_err err = SL_ERR_INIT;
  const char *addrs[] = {"127.0.0.1", "127.0.0.2"};
  sl_dns_stub *dns = NULL;
  assert_int_equal(sl_dns_stub_start("echo.sluice.test", addrs, 2, &dns, &err), SL_OK);
  char target[128];
  snprintf(target, sizeof(target), "dns://127.0.0.1:%d/echo.sluice.test:%d",
           sl_dns_stub_port(dns), port);

  sl_rpc_channel *ch = channel_to(target);
  unary_on(ch, 1);
  assert_true(sl_dns_stub_a_queries(dns) >= 1); /* resolved through the stub */
  long seen0 = atomic_load(&stats[0].started), seen1 = atomic_load(&stats[1].started);
  assert_int_equal(seen0 + seen1, 1);
  int f = seen0 == 1 ? 0 : 1, other = 1 - f;

  sl_rpc_server_destroy(srv[f]); /* its address now refuses connections */
  srv[f] = NULL;
  unary_on(ch, 2); /* the old channel reconnects to the other address */
  assert_int_equal(atomic_load(&stats[other].started), 1);
  sl_rpc_channel_destroy(ch);

  ch = channel_to(target); /* tries F first, then fails over */
  unary_on(ch, 3);
  assert_int_equal(atomic_load(&stats[other].started), 2);
  sl_rpc_channel_destroy(ch);

  sl_rpc_server_destroy(srv[other]);
  sl_dns_stub_stop(dns);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rpc_astream__server_streaming_on_user_serial),
      cmocka_unit_test(test_rpc_astream__client_streaming),
      cmocka_unit_test(test_rpc_astream__bidi_echo_and_misuse),
      cmocka_unit_test(test_rpc_astream__server_error_reaches_on_done),
      cmocka_unit_test(test_rpc_astream__full_send_queue_then_writable),
      cmocka_unit_test(test_rpc_astream__large_messages_byte_exact),
      cmocka_unit_test(test_rpc_astream__pause_and_resume_reads),
      cmocka_unit_test(test_rpc_astream__cancel_races_completion),
      cmocka_unit_test(test_rpc_astream__deadline),
      cmocka_unit_test(test_rpc_astream__channel_destroy_ends_open_streams),
      cmocka_unit_test(test_rpc_astream__unary_cancel_and_ok),
      cmocka_unit_test(test_rpc_astream__pack_once_send_to_three_streams),
      cmocka_unit_test(test_rpc_astream__keepalive_ends_stream_to_frozen_server),
      cmocka_unit_test(test_rpc_astream__multi_endpoint_target_with_one_down),
      cmocka_unit_test(test_rpc_astream__dns_name_with_two_addresses_fails_over),
  };
  return cmocka_run_group_tests(tests, NULL, sl_echo_fx_teardown_group);
}
