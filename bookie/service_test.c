/*
 * BookieService in one process: a real store in a temp dir, the real RPC
 * server on a loopback port, real gRPC clients through the generated
 * helpers. A gate in the store's sync hook holds group commits back, so
 * adds can be kept in flight on purpose (back-pressure, cancellation).
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <grpc/status.h>

#include "bookie.slrpc.h"
#include "bookie/bookie_store.h"
#include "bookie/service.h"
#include "bookie/testing/test_util.h"
#include "common/crc32c.h"
#include "common/metrics.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"

/* ---- fixture ---- */

typedef struct fx {
  char *dir;
  sl_test_gate g;
  sl_bookie_store *store;
  sl_bookie_svc *svc;
  sl_rpc_server *srv;
  sl_rpc_channel *ch;
  sl_metrics *metrics; /* private registry for the store and the service */
} fx;

static fx *fx_start(uint32_t max_stream_adds, size_t write_queue_max) {
  fx *f = calloc(1, sizeof(*f));
  sl_err err = SL_ERR_INIT;
  f->dir = sl_test_mkdtemp("service");
  pthread_mutex_init(&f->g.mu, NULL);
  pthread_cond_init(&f->g.cv, NULL);
  sl_bookie_store_opts so = SL_BOOKIE_STORE_OPTS_INIT;
  so.journal_segment_bytes = 4u << 20;
  so.max_entry_bytes = 64u << 10;
  so.sync_hook = sl_test_gate_hook;
  so.hook_arg = &f->g;
  so.checkpoint_interval_ms = 600000; /* tests checkpoint explicitly */
  f->metrics = sl_metrics_create();
  so.metrics = f->metrics;
  sl_status st = sl_bookie_store_open(f->dir, &so, &f->store, &err);
  if (st != SL_OK) fail_msg("store: %s", sl_err_msg(&err, st));
  sl_bookie_svc_opts vo = SL_BOOKIE_SVC_OPTS_INIT;
  vo.bookie_id = "bookie-test";
  vo.max_stream_adds = max_stream_adds;
  vo.metrics = f->metrics;
  assert_int_equal(sl_bookie_svc_create(f->store, &vo, &f->svc, &err), SL_OK);
  sl_rpc_server_opts ro = {.addr = "127.0.0.1:0", .write_queue_max = write_queue_max};
  assert_int_equal(sl_rpc_server_create(&ro, &f->srv, &err), SL_OK);
  assert_int_equal(sl_bookie_svc_register(f->svc, f->srv, &err), SL_OK);
  st = sl_rpc_server_start(f->srv, &err);
  if (st != SL_OK) fail_msg("server: %s", sl_err_msg(&err, st));
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", sl_rpc_server_port(f->srv));
  sl_rpc_channel_opts co = {.target = target};
  assert_int_equal(sl_rpc_channel_create(&co, &f->ch, &err), SL_OK);
  return f;
}

static void fx_stop(fx *f) {
  sl_test_gate_set(&f->g, false, false);
  sl_rpc_channel_destroy(f->ch);
  sl_rpc_server_destroy(f->srv);
  sl_bookie_svc_destroy(f->svc);
  sl_bookie_store_close(f->store);
  sl_metrics_destroy(f->metrics);
  sl_test_rmdtemp(f->dir);
  pthread_mutex_destroy(&f->g.mu);
  pthread_cond_destroy(&f->g.cv);
  free(f);
}

static sl_bookie_svc_stats stats(fx *f) {
  sl_bookie_svc_stats s;
  sl_bookie_svc_get_stats(f->svc, &s);
  return s;
}

/* ---- client helpers ---- */

static void payload_of(uint64_t ledger, int64_t entry, uint8_t *buf, size_t len) {
  for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(ledger * 31 + (uint64_t)entry * 7 + i);
}

static sl_rpc_stream *open_adds(fx *f) {
  sl_rpc_stream *s = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_add_entry_open(f->ch, NULL, &s, &err);
  if (st != SL_OK) fail_msg("open: %s", sl_err_msg(&err, st));
  return s;
}

/* Sends one add with the ledger password `password` (NULL: empty). */
static void send_add_pw(sl_rpc_stream *s, uint64_t ledger, int64_t entry, size_t len,
                        uint64_t epoch, bool bad_crc, uint64_t tag, const char *password) {
  uint8_t *buf = malloc(len + 1);
  payload_of(ledger, entry, buf, len);
  Sluice__V1__AddEntryRequest r = SLUICE__V1__ADD_ENTRY_REQUEST__INIT;
  r.ledger_id = ledger;
  r.entry_id = entry;
  r.lac = entry - 1;
  r.payload.data = buf;
  r.payload.len = len;
  r.crc32c = sl_entry_crc(ledger, entry, buf, len) ^ (bad_crc ? 1u : 0u);
  r.epoch = epoch;
  r.tag = tag;
  if (password != NULL) {
    r.password.data = (uint8_t *)password;
    r.password.len = strlen(password);
  }
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_add_entry_send(s, &r, 10000, &err);
  free(buf);
  if (st != SL_OK) fail_msg("send: %s", sl_err_msg(&err, st));
}

static void send_add(sl_rpc_stream *s, uint64_t ledger, int64_t entry, size_t len,
                     uint64_t epoch, bool bad_crc, uint64_t tag) {
  send_add_pw(s, ledger, entry, len, epoch, bad_crc, tag, NULL);
}

/* Receives one ack; returns its typed status (an sl_status) and copies
 * its error. The gRPC code must always agree with the typed status. */
static sl_status recv_ack_st(sl_rpc_stream *s, uint64_t *tag, char *error, size_t n) {
  Sluice__V1__AddEntryResponse *a = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_add_entry_recv(s, &a, 10000, &err);
  if (st != SL_OK || a == NULL) fail_msg("recv: %s", sl_err_msg(&err, st));
  sl_status typed = (sl_status)(-(int)a->status);
  assert_int_equal(a->code, sl_status_to_grpc(typed));
  if (tag) *tag = a->tag;
  if (error) snprintf(error, n, "%s", a->error);
  protobuf_c_message_free_unpacked(&a->base, NULL);
  return typed;
}

/* Receives one ack; returns its gRPC code. */
static int recv_ack(sl_rpc_stream *s, uint64_t *tag, char *error, size_t n) {
  return sl_status_to_grpc(recv_ack_st(s, tag, error, n));
}

/* One add on its own stream, waiting for the ack. */
static int add_one(fx *f, uint64_t ledger, int64_t entry, size_t len, uint64_t epoch,
                   bool bad_crc, char *error, size_t n) {
  sl_rpc_stream *s = open_adds(f);
  send_add(s, ledger, entry, len, epoch, bad_crc, 1);
  int code = recv_ack(s, NULL, error, n);
  sl_rpc_stream_destroy(s);
  return code;
}

/* ReadEntry with a password (NULL: empty; only a fencing read uses it). */
static sl_status read_entry_pw(fx *f, uint64_t ledger, int64_t entry, bool fence,
                               uint64_t epoch, const char *password,
                               Sluice__V1__ReadEntryResponse **out, sl_err *err) {
  Sluice__V1__ReadEntryRequest r = SLUICE__V1__READ_ENTRY_REQUEST__INIT;
  r.ledger_id = ledger;
  r.entry_id = entry;
  r.fence = fence;
  r.epoch = epoch;
  if (password != NULL) {
    r.password.data = (uint8_t *)password;
    r.password.len = strlen(password);
  }
  *out = NULL;
  return sl_bookie_service_read_entry(f->ch, &r, out, NULL, err);
}

static sl_status read_entry(fx *f, uint64_t ledger, int64_t entry, bool fence,
                            uint64_t epoch, Sluice__V1__ReadEntryResponse **out,
                            sl_err *err) {
  return read_entry_pw(f, ledger, entry, fence, epoch, NULL, out, err);
}

static sl_status fence_pw(fx *f, uint64_t ledger, uint64_t epoch, const char *password,
                          sl_err *err) {
  Sluice__V1__FenceRequest q = SLUICE__V1__FENCE_REQUEST__INIT;
  q.ledger_id = ledger;
  q.epoch = epoch;
  q.password.data = (uint8_t *)password;
  q.password.len = strlen(password);
  Sluice__V1__FenceResponse *r = NULL;
  sl_status st = sl_bookie_service_fence(f->ch, &q, &r, NULL, err);
  if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
  return st;
}

static bool is_fenced(fx *f, uint64_t ledger) {
  Sluice__V1__ReadLacRequest q = SLUICE__V1__READ_LAC_REQUEST__INIT;
  q.ledger_id = ledger;
  Sluice__V1__ReadLacResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_read_lac(f->ch, &q, &r, NULL, &err);
  if (st != SL_OK) fail_msg("ReadLac: %s", sl_err_msg(&err, st));
  bool fenced = r->fenced;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return fenced;
}

static uint64_t journal_bytes(fx *f) {
  Sluice__V1__GetInfoRequest q = SLUICE__V1__GET_INFO_REQUEST__INIT;
  Sluice__V1__GetInfoResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_get_info(f->ch, &q, &r, NULL, &err);
  if (st != SL_OK) fail_msg("GetInfo: %s", sl_err_msg(&err, st));
  uint64_t n = r->journal_bytes;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return n;
}

static void check_entry(fx *f, uint64_t ledger, int64_t entry, size_t len) {
  Sluice__V1__ReadEntryResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = read_entry(f, ledger, entry, false, 0, &r, &err);
  if (st != SL_OK) fail_msg("read %llu/%lld: %s", (unsigned long long)ledger,
                            (long long)entry, sl_err_msg(&err, st));
  uint8_t *want = malloc(len + 1);
  payload_of(ledger, entry, want, len);
  assert_int_equal(r->payload.len, len);
  assert_memory_equal(r->payload.data, want, len);
  assert_int_equal(r->crc32c, sl_entry_crc(ledger, entry, want, len));
  assert_true(r->found);
  free(want);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

typedef struct pred_arg {
  fx *f;
  uint64_t n;
} pred_arg;

static bool adds_received(void *arg) {
  pred_arg *p = arg;
  return stats(p->f).adds >= p->n;
}

static bool adds_completed(void *arg) {
  pred_arg *p = arg;
  return stats(p->f).adds_ok >= p->n;
}

static bool syncs_held(void *arg) {
  fx *f = arg;
  pthread_mutex_lock(&f->g.mu);
  bool held = f->g.waiting > 0;
  pthread_mutex_unlock(&f->g.mu);
  return held;
}

/* ---- tests ---- */

/* Lists one page of q: it must hold just `id` and say whether `more` follow.
 * Moves q past it. */
static void expect_page(fx *f, Sluice__V1__ListLedgersRequest *q, uint64_t id, bool more) {
  Sluice__V1__ListLedgersResponse *page = NULL;
  assert_int_equal(sl_bookie_service_list_ledgers(f->ch, q, &page, NULL, NULL), SL_OK);
  assert_int_equal(page->n_ledger_ids, 1);
  assert_int_equal(page->ledger_ids[0], id);
  if (more)
    assert_true(page->more);
  else
    assert_false(page->more);
  q->start_after = page->ledger_ids[0];
  protobuf_c_message_free_unpacked(&page->base, NULL);
}

static void test_service__add_read_list_info(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  sl_rpc_stream *s = open_adds(f);
  for (int64_t e = 0; e < 50; e++) {
    send_add(s, 7, e, (size_t)(e * 13), 1, false, 1000 + (uint64_t)e);
    send_add(s, 9, e, 100, 1, false, 2000 + (uint64_t)e);
  }
  assert_int_equal(sl_rpc_stream_close_send(s, NULL), SL_OK);
  bool seen[100] = {false};
  for (int i = 0; i < 100; i++) {
    uint64_t tag;
    char error[256];
    assert_int_equal(recv_ack(s, &tag, error, sizeof(error)), 0);
    int idx = tag >= 2000 ? 50 + (int)(tag - 2000) : (int)(tag - 1000);
    assert_false(seen[idx]);
    seen[idx] = true;
  }
  /* Every ack out, the client half-closed: the stream ends with OK. */
  Sluice__V1__AddEntryResponse *end = NULL;
  assert_int_equal(sl_bookie_service_add_entry_recv(s, &end, 10000, NULL), SL_OK);
  assert_null(end);
  sl_rpc_stream_destroy(s);

  for (int64_t e = 0; e < 50; e++) {
    check_entry(f, 7, e, (size_t)(e * 13));
    check_entry(f, 9, e, 100);
  }
  Sluice__V1__ReadEntryResponse *last = NULL;
  assert_int_equal(read_entry(f, 7, -1, false, 0, &last, NULL), SL_OK);
  assert_int_equal(last->entry_id, 49);
  assert_int_equal(last->lac, 48);
  protobuf_c_message_free_unpacked(&last->base, NULL);

  Sluice__V1__ReadLacRequest lr = SLUICE__V1__READ_LAC_REQUEST__INIT;
  lr.ledger_id = 9;
  Sluice__V1__ReadLacResponse *lac = NULL;
  assert_int_equal(sl_bookie_service_read_lac(f->ch, &lr, &lac, NULL, NULL), SL_OK);
  assert_int_equal(lac->lac, 48);
  assert_int_equal(lac->last_entry_id, 49);
  assert_false(lac->fenced);
  protobuf_c_message_free_unpacked(&lac->base, NULL);

  /* Paging: one id per page. */
  Sluice__V1__ListLedgersRequest q = SLUICE__V1__LIST_LEDGERS_REQUEST__INIT;
  q.limit = 1;
  expect_page(f, &q, 7, true);
  expect_page(f, &q, 9, false);

  Sluice__V1__GetInfoRequest ir = SLUICE__V1__GET_INFO_REQUEST__INIT;
  Sluice__V1__GetInfoResponse *info = NULL;
  assert_int_equal(sl_bookie_service_get_info(f->ch, &ir, &info, NULL, NULL), SL_OK);
  assert_string_equal(info->bookie_id, "bookie-test");
  assert_int_equal(info->ledger_count, 2);
  assert_int_equal(info->entry_count, 100);
  assert_true(info->total_bytes > 0);
  assert_false(info->read_only);
  protobuf_c_message_free_unpacked(&info->base, NULL);

  /* Delete: gone from reads and lists; deleting again is OK. */
  Sluice__V1__DeleteLedgerEntriesRequest dr = SLUICE__V1__DELETE_LEDGER_ENTRIES_REQUEST__INIT;
  dr.ledger_id = 7;
  Sluice__V1__DeleteLedgerEntriesResponse *dresp = NULL;
  assert_int_equal(sl_bookie_service_delete_ledger(f->ch, &dr, &dresp, NULL, NULL), SL_OK);
  protobuf_c_message_free_unpacked(&dresp->base, NULL);
  Sluice__V1__ReadEntryResponse *gone = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_not_equal(read_entry(f, 7, 3, false, 0, &gone, &err), SL_OK);
  assert_string_equal(err.msg, "ledger 7: deleted");
  assert_int_equal(sl_bookie_service_delete_ledger(f->ch, &dr, &dresp, NULL, NULL), SL_OK);
  protobuf_c_message_free_unpacked(&dresp->base, NULL);
  check_entry(f, 9, 3, 100);
  fx_stop(f);
}

static void test_service__refusals_keep_the_stream(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  char error[256];
  /* Bad checksum, too big, negative entry: each its own code, same stream. */
  sl_rpc_stream *s = open_adds(f);
  send_add(s, 3, 0, 10, 1, true, 1);
  assert_int_equal(recv_ack(s, NULL, error, sizeof(error)), GRPC_STATUS_DATA_LOSS);
  assert_non_null(strstr(error, "checksum"));
  send_add(s, 3, 0, (64u << 10) + 1, 1, false, 2);
  assert_int_equal(recv_ack(s, NULL, error, sizeof(error)), GRPC_STATUS_RESOURCE_EXHAUSTED);
  send_add(s, 3, -4, 10, 1, false, 3);
  assert_int_equal(recv_ack(s, NULL, error, sizeof(error)), GRPC_STATUS_INVALID_ARGUMENT);
  send_add(s, 3, 0, 10, 1, false, 4);
  assert_int_equal(recv_ack(s, NULL, error, sizeof(error)), 0);
  sl_rpc_stream_destroy(s);
  check_entry(f, 3, 0, 10);

  /* Unknown ledger; unknown entry of a known ledger is an answer. */
  Sluice__V1__ReadEntryResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(read_entry(f, 4242, 0, false, 0, &r, &err), SL_ENOTFOUND);
  assert_int_equal(read_entry(f, 3, 5, false, 0, &r, &err), SL_OK);
  assert_false(r->found);
  assert_int_equal(r->last_entry_id, 0);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(read_entry(f, 3, -2, false, 0, &r, &err), SL_EINVAL);
  fx_stop(f);
}

static void test_service__fence_and_fencing_read(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  char error[256];
  for (int64_t e = 0; e < 5; e++) assert_int_equal(add_one(f, 11, e, 32, 2, false, NULL, 0), 0);

  /* A fencing read of "the last entry" fences, then returns entry 4. */
  Sluice__V1__ReadEntryResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(read_entry(f, 11, -1, true, 3, &r, &err), SL_OK);
  assert_int_equal(r->entry_id, 4);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(add_one(f, 11, 5, 32, 3, false, error, sizeof(error)),
                   GRPC_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(error, "fenced"));

  /* Fence: stale epoch refused; same epoch answers with the state. */
  Sluice__V1__FenceRequest fr = SLUICE__V1__FENCE_REQUEST__INIT;
  fr.ledger_id = 11;
  fr.epoch = 1;
  Sluice__V1__FenceResponse *fresp = NULL;
  assert_int_equal(sl_bookie_service_fence(f->ch, &fr, &fresp, NULL, &err), SL_ESTALE_EPOCH);
  assert_non_null(strstr(err.msg, "stale epoch"));
  fr.epoch = 3;
  assert_int_equal(sl_bookie_service_fence(f->ch, &fr, &fresp, NULL, &err), SL_OK);
  assert_int_equal(fresp->last_entry_id, 4);
  assert_int_equal(fresp->lac, 3);
  protobuf_c_message_free_unpacked(&fresp->base, NULL);

  /* A fencing read of a ledger this bookie never saw fences it all the same,
   * and says so: found=false, fenced. */
  assert_int_equal(read_entry(f, 12, -1, true, 1, &r, &err), SL_OK);
  assert_false(r->found);
  assert_true(r->fenced);
  assert_int_equal(r->last_entry_id, -1);
  assert_int_equal(r->lac, -1);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(add_one(f, 12, 0, 32, 1, false, error, sizeof(error)),
                   GRPC_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(error, "fenced"));
  fx_stop(f);
}

/* Adds held in flight by the gate: the stream stops reading at the limit,
 * and goes on once the syncs are let through. */
static void test_service__pauses_reads_at_limit(void **state) {
  (void)state;
  fx *f = fx_start(16, 0);
  sl_test_gate_set(&f->g, true, false);
  sl_rpc_stream *s = open_adds(f);
  for (int64_t e = 0; e < 200; e++) send_add(s, 5, e, 64, 1, false, (uint64_t)e);
  pred_arg p = {f, 16};
  assert_true(sl_test_poll(adds_received, &p, 10000));
  assert_true(sl_test_poll(syncs_held, f, 10000));
  /* Paused at 16 in flight: nothing more is read while the gate is shut.
   * (A read posted before the pause took effect may add one.) */
  sl_bookie_svc_stats st = stats(f);
  assert_int_equal(st.pauses, 1);
  assert_true(st.adds <= 17);
  sl_test_gate_set(&f->g, false, false);
  assert_int_equal(sl_rpc_stream_close_send(s, NULL), SL_OK);
  for (int i = 0; i < 200; i++) assert_int_equal(recv_ack(s, NULL, NULL, 0), 0);
  sl_rpc_stream_destroy(s);
  st = stats(f);
  assert_int_equal(st.adds_ok, 200);
  assert_true(st.pauses >= 1);
  check_entry(f, 5, 199, 64);
  fx_stop(f);
}

/* A client that does not read its acks: once its receive window is full
 * the call's write queue (4 here) fills and acks wait in the stream's list;
 * waiting acks count against the stream's limit (64 here), so the stream
 * stops reading too. The sender keeps going until the bookie reports both
 * (how much the transport buffers first varies with gRPC's flow-control
 * estimates), then stops; the client then reads every ack it is owed. */
typedef struct sender {
  fx *f;
  sl_rpc_stream *s;
  atomic_bool stop;
  int sent;
} sender;

static void *send_many(void *arg) {
  sender *sd = arg;
  for (int e = 0; e < 2000000 && !atomic_load(&sd->stop); e++) {
    /* Refused adds (bad checksum): an ack with an error text at once. */
    send_add(sd->s, 6, e, 1, 1, true, (uint64_t)e);
    sd->sent++;
  }
  sl_rpc_stream_close_send(sd->s, NULL);
  return NULL;
}

/* Acks waited for room, and so many that the stream stopped reading. */
static bool acks_backed_up(void *arg) {
  sl_bookie_svc_stats st = stats(arg);
  return st.acks_deferred > 0 && st.pauses > 0;
}

static void test_service__slow_reader_loses_no_ack(void **state) {
  (void)state;
  fx *f = fx_start(64, 4);
  sl_rpc_stream *s = open_adds(f);
  sender sd = {.f = f, .s = s};
  atomic_init(&sd.stop, false);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, send_many, &sd), 0);
  assert_true(sl_test_poll(acks_backed_up, f, 120000));
  atomic_store(&sd.stop, true);
  /* Read everything; the sender may be held by flow control until we do. */
  size_t cap = 1 << 20, got = 0;
  uint8_t *seen = calloc(cap, 1);
  for (;;) {
    Sluice__V1__AddEntryResponse *a = NULL;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_bookie_service_add_entry_recv(s, &a, 30000, &err);
    if (st != SL_OK) fail_msg("recv: %s", sl_err_msg(&err, st));
    if (a == NULL) break; /* all acks out, stream ended with OK */
    assert_int_equal(a->code, GRPC_STATUS_DATA_LOSS);
    assert_int_equal(a->status, SLUICE__V1__STATUS__STATUS_BAD_CHECKSUM);
    if (a->tag >= cap) {
      seen = realloc(seen, a->tag * 2);
      memset(seen + cap, 0, a->tag * 2 - cap);
      cap = a->tag * 2;
    }
    assert_int_equal(seen[a->tag], 0);
    seen[a->tag] = 1;
    got++;
    protobuf_c_message_free_unpacked(&a->base, NULL);
  }
  pthread_join(t, NULL);
  assert_int_equal(got, (size_t)sd.sent);
  for (int e = 0; e < sd.sent; e++) assert_int_equal(seen[e], 1);
  free(seen);
  sl_rpc_stream_destroy(s);
  sl_bookie_svc_stats st = stats(f);
  assert_int_equal(st.adds_refused, (uint64_t)sd.sent);
  print_message("%d acks, %llu waited for room, %llu pauses\n", sd.sent,
                (unsigned long long)st.acks_deferred, (unsigned long long)st.pauses);
  fx_stop(f);
}

/* The client goes away with adds in flight: they still complete in the
 * store, their acks are dropped, the server shuts down cleanly. */
static void test_service__cancel_with_adds_in_flight(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  sl_test_gate_set(&f->g, true, false);
  sl_rpc_stream *s = open_adds(f);
  for (int64_t e = 0; e < 100; e++) send_add(s, 8, e, 128, 1, false, (uint64_t)e);
  pred_arg p = {f, 100};
  assert_true(sl_test_poll(adds_received, &p, 10000));
  sl_rpc_stream_destroy(s); /* cancels */
  sl_test_gate_set(&f->g, false, false);
  /* The adds were accepted before the cancel: they complete and are
   * readable; only their acks had nowhere to go. */
  assert_true(sl_test_poll(adds_completed, &p, 10000));
  for (int64_t e = 0; e < 100; e++) check_entry(f, 8, e, 128);
  fx_stop(f);
}

/* The ledger password over gRPC: a wrong one is PERMISSION_DENIED for an
 * add (the stream goes on), a fencing read and a fence, and changes
 * nothing; plain reads need none. */
static void test_service__wrong_password_denied(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  char error[256];
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s = open_adds(f);
  for (int64_t e = 0; e < 3; e++) {
    send_add_pw(s, 21, e, 40, 1, false, (uint64_t)e, "pw-21");
    assert_int_equal(recv_ack(s, NULL, error, sizeof(error)), 0);
  }
  send_add_pw(s, 21, 3, 40, 1, false, 3, "pw-22");
  assert_int_equal(recv_ack(s, NULL, error, sizeof(error)), GRPC_STATUS_PERMISSION_DENIED);
  assert_string_equal(error, "ledger 21: wrong password");
  send_add(s, 21, 3, 40, 1, false, 4); /* the empty password is wrong too */
  assert_int_equal(recv_ack(s, NULL, error, sizeof(error)), GRPC_STATUS_PERMISSION_DENIED);
  send_add_pw(s, 21, 3, 40, 1, false, 5, "pw-21"); /* same stream, right one */
  assert_int_equal(recv_ack(s, NULL, error, sizeof(error)), 0);
  sl_rpc_stream_destroy(s);
  check_entry(f, 21, 3, 40); /* written by the right add only */

  /* Fencing read and fence with the wrong password: refused, not fenced. */
  Sluice__V1__ReadEntryResponse *r = NULL;
  assert_int_equal(read_entry_pw(f, 21, -1, true, 2, "pw-22", &r, &err), SL_EPERM);
  assert_null(r);
  assert_string_equal(err.msg, "ledger 21: wrong password");
  assert_int_equal(read_entry(f, 21, -1, true, 2, &r, &err), SL_EPERM);
  assert_int_equal(fence_pw(f, 21, 2, "", &err), SL_EPERM);
  assert_string_equal(err.msg, "ledger 21: wrong password");
  assert_false(is_fenced(f, 21));
  assert_int_equal(add_one(f, 21, 4, 40, 1, false, error, sizeof(error)),
                   GRPC_STATUS_PERMISSION_DENIED);

  /* Plain reads need no password. */
  assert_int_equal(read_entry(f, 21, -1, false, 0, &r, &err), SL_OK);
  assert_int_equal(r->entry_id, 3);
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* The right password fences. */
  assert_int_equal(read_entry_pw(f, 21, -1, true, 2, "pw-21", &r, &err), SL_OK);
  assert_int_equal(r->entry_id, 3);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_true(is_fenced(f, 21));
  assert_int_equal(fence_pw(f, 21, 3, "pw-21", &err), SL_OK);
  assert_int_equal(fence_pw(f, 21, 4, "pw-2", &err), SL_EPERM);

  /* A Fence of a ledger the bookie never saw records its password. */
  assert_int_equal(fence_pw(f, 23, 1, "pw-23", &err), SL_OK);
  assert_int_equal(read_entry_pw(f, 23, -1, true, 1, "pw-21", &r, &err), SL_EPERM);
  fx_stop(f);
}

/* GetInfo's journal_bytes grows with adds and drops after a checkpoint. */
static void test_service__journal_bytes_until_checkpoint(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  uint64_t idle = journal_bytes(f);
  assert_true(idle < 1024); /* the open's checkpoint marker */
  uint64_t prev = idle;
  for (int64_t e = 0; e < 20; e++) {
    assert_int_equal(add_one(f, 31, e, 1000, 1, false, NULL, 0), 0);
    uint64_t now = journal_bytes(f);
    assert_true(now >= prev + 1000);
    prev = now;
  }
  assert_true(prev >= idle + 20 * 1000);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_bookie_store_checkpoint(f->store, &err), SL_OK);
  assert_true(journal_bytes(f) < 1024);
  assert_true(journal_bytes(f) < prev);
  fx_stop(f);
}

/* ---- issue 8: contracts a ledger writer relies on ---- */

static char *instance_of(fx *f) {
  Sluice__V1__GetInfoRequest q = SLUICE__V1__GET_INFO_REQUEST__INIT;
  Sluice__V1__GetInfoResponse *r = NULL;
  assert_int_equal(sl_bookie_service_get_info(f->ch, &q, &r, NULL, NULL), SL_OK);
  char *id = strdup(r->instance_id);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(strlen(id), 32);
  assert_string_equal(id, sl_bookie_store_instance_id(f->store));
  return id;
}

/* Sends a raw add and returns its typed outcome. */
static sl_status add_req(sl_rpc_stream *s, Sluice__V1__AddEntryRequest *r, char *error,
                         size_t n) {
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_add_entry_send(s, r, 10000, &err);
  if (st != SL_OK) fail_msg("send: %s", sl_err_msg(&err, st));
  return recv_ack_st(s, NULL, error, n);
}

static sl_status delete_pw(fx *f, uint64_t ledger, const char *password, sl_err *err) {
  Sluice__V1__DeleteLedgerEntriesRequest q = SLUICE__V1__DELETE_LEDGER_ENTRIES_REQUEST__INIT;
  q.ledger_id = ledger;
  q.password.data = (uint8_t *)password;
  q.password.len = strlen(password);
  Sluice__V1__DeleteLedgerEntriesResponse *r = NULL;
  sl_status st = sl_bookie_service_delete_ledger(f->ch, &q, &r, NULL, err);
  if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
  return st;
}

/* Every refusal of an add carries its own typed status, on one stream. */
static void test_service__typed_status_on_every_refusal(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  char error[256];
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s = open_adds(f);
  uint8_t p[8] = "payload";
  Sluice__V1__AddEntryRequest r = SLUICE__V1__ADD_ENTRY_REQUEST__INIT;
  r.ledger_id = 40;
  r.entry_id = 0;
  r.lac = -1;
  r.payload.data = p;
  r.payload.len = 7;
  r.crc32c = sl_entry_crc(40, 0, p, 7);
  r.epoch = 5;
  r.password.data = (uint8_t *)"pw";
  r.password.len = 2;
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_OK);
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_OK); /* same bytes: idempotent */
  r.payload.data = (uint8_t *)"PAYLOAD";
  r.crc32c = sl_entry_crc(40, 0, r.payload.data, 7);
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_ECONFLICT);
  r.payload.data = p;
  r.entry_id = 1;
  r.lac = 0;
  r.crc32c = sl_entry_crc(40, 0, p, 7); /* entry 0's checksum on entry 1 */
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_EBADCRC);
  r.crc32c = sl_entry_crc(40, 1, p, 7);
  r.lac = 1;
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_EINVAL);
  r.lac = 0;
  r.epoch = 4;
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_ESTALE_EPOCH);
  r.epoch = 5;
  r.password.data = (uint8_t *)"px";
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_EPERM);
  r.password.data = (uint8_t *)"pw";
  static uint8_t big[(64u << 10) + 1];
  r.payload.data = big;
  r.payload.len = sizeof(big);
  r.crc32c = sl_entry_crc(40, 1, big, sizeof(big));
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_ETOOBIG);
  r.payload.data = p;
  r.payload.len = 7;
  r.crc32c = sl_entry_crc(40, 1, p, 7);
  assert_int_equal(fence_pw(f, 40, 6, "pw", &err), SL_OK);
  r.epoch = 6;
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_EFENCED);
  r.recovery = true; /* recovery write-back on a fenced ledger: accepted */
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_OK);

  /* Read-only: plain adds refused with READ_ONLY. */
  sl_bookie_store_set_disk_limit(f->store, 1); /* a 1-byte quota: full */
  r.ledger_id = 41;
  r.entry_id = 0;
  r.lac = -1;
  r.recovery = false;
  r.crc32c = sl_entry_crc(41, 0, p, 7);
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_EREADONLY);
  sl_bookie_store_set_disk_limit(f->store, 0);

  /* Deleted: late adds, even recovery ones, are refused with DELETED. */
  assert_int_equal(delete_pw(f, 40, "px", &err), SL_EPERM);
  assert_int_equal(delete_pw(f, 40, "pw", &err), SL_OK);
  r.ledger_id = 40;
  r.entry_id = 2;
  r.lac = 1;
  r.recovery = true;
  r.crc32c = sl_entry_crc(40, 2, p, 7);
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_EDELETED);
  assert_string_equal(error, "ledger 40: deleted");

  /* A failed journal: FAILED, for this add and every later one. */
  sl_test_gate_set(&f->g, false, true);
  r.ledger_id = 42;
  r.entry_id = 0;
  r.lac = -1;
  r.recovery = false;
  r.crc32c = sl_entry_crc(42, 0, p, 7);
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_EFAILED);
  r.entry_id = 1;
  r.lac = 0;
  r.crc32c = sl_entry_crc(42, 1, p, 7);
  assert_int_equal(add_req(s, &r, error, sizeof(error)), SL_EFAILED);
  sl_rpc_stream_destroy(s);
  fx_stop(f);
}

/* A missing entry is an answer: found=false with the LAC, last entry,
 * fenced flag and instance id, so that recovery can count it. */
static void test_service__not_found_is_an_answer(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  char *id = instance_of(f);
  for (int64_t e = 0; e < 3; e++) assert_int_equal(add_one(f, 50, e, 16, 1, false, NULL, 0), 0);
  Sluice__V1__ReadEntryResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(read_entry(f, 50, 7, false, 0, &r, &err), SL_OK);
  assert_false(r->found);
  assert_int_equal(r->entry_id, 7);
  assert_int_equal(r->payload.len, 0);
  assert_int_equal(r->lac, 1);
  assert_int_equal(r->last_entry_id, 2);
  assert_false(r->fenced);
  assert_string_equal(r->instance_id, id);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  /* A fencing read of a missing entry: OK, found=false, now fenced. */
  assert_int_equal(read_entry(f, 50, 3, true, 2, &r, &err), SL_OK);
  assert_false(r->found);
  assert_true(r->fenced);
  assert_int_equal(r->lac, 1);
  assert_int_equal(r->last_entry_id, 2);
  assert_string_equal(r->instance_id, id);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  /* A present entry says found, with the same view. */
  assert_int_equal(read_entry(f, 50, 2, false, 0, &r, &err), SL_OK);
  assert_true(r->found);
  assert_true(r->fenced);
  assert_string_equal(r->instance_id, id);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  free(id);
  fx_stop(f);
}

/* Adds entries 0 .. n-1 of ledger (len bytes each, epoch 1) except
 * `skip` (-1: none) and waits for their acks. */
static void add_entries(fx *f, uint64_t ledger, int64_t n, size_t len, int64_t skip) {
  sl_rpc_stream *s = open_adds(f);
  int sent = 0;
  for (int64_t e = 0; e < n; e++) {
    if (e == skip) continue;
    send_add(s, ledger, e, len, 1, false, (uint64_t)e);
    sent++;
  }
  for (int e = 0; e < sent; e++) assert_int_equal(recv_ack(s, NULL, NULL, 0), 0);
  sl_rpc_stream_destroy(s);
}

/* Reads a whole ReadEntries stream; returns the call status. Collects entry
 * ids (checked byte-exact), message sizes and the last message's view. */
typedef struct range_result {
  int64_t ids[256];
  int n;
  int msgs;
  int per_msg[256];
  bool found;
  int64_t missing;
  bool fenced;
  int64_t lac, last_entry;
  char instance[64];
} range_result;

static sl_status read_range(fx *f, const Sluice__V1__ReadEntriesRequest *q,
                            range_result *out, sl_err *err) {
  memset(out, 0, sizeof(*out));
  sl_rpc_stream *s = NULL;
  sl_status st = sl_bookie_service_read_entries_open(f->ch, q, NULL, &s, err);
  if (st != SL_OK) return st;
  for (;;) {
    Sluice__V1__ReadEntriesResponse *m = NULL;
    st = sl_bookie_service_read_entries_recv(s, &m, 10000, err);
    if (st != SL_OK || m == NULL) break;
    assert_int_equal(m->ledger_id, q->ledger_id);
    assert_true(out->msgs < 256);
    out->per_msg[out->msgs++] = (int)m->n_entries;
    for (size_t i = 0; i < m->n_entries; i++) {
      Sluice__V1__Entry *e = m->entries[i];
      assert_true(out->n < 256);
      out->ids[out->n++] = e->entry_id;
      uint8_t want[256];
      assert_true(e->payload.len <= sizeof(want));
      payload_of(q->ledger_id, e->entry_id, want, e->payload.len);
      assert_memory_equal(e->payload.data, want, e->payload.len);
      assert_int_equal(e->crc32c, sl_entry_crc(q->ledger_id, e->entry_id, want,
                                               e->payload.len));
    }
    out->found = m->found;
    out->missing = m->missing_entry_id;
    out->fenced = m->fenced;
    out->lac = m->lac;
    out->last_entry = m->last_entry_id;
    snprintf(out->instance, sizeof(out->instance), "%s", m->instance_id);
    protobuf_c_message_free_unpacked(&m->base, NULL);
  }
  sl_rpc_stream_destroy(s);
  return st;
}

static void test_service__read_entries_pages(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  char *id = instance_of(f);
  add_entries(f, 60, 20, 100, -1);
  range_result rr;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__ReadEntriesRequest q = SLUICE__V1__READ_ENTRIES_REQUEST__INIT;
  q.ledger_id = 60;
  q.first_entry_id = 2;
  q.last_entry_id = 16;
  q.max_entries = 4; /* by count: 4+4+4+3 */
  assert_int_equal(read_range(f, &q, &rr, &err), SL_OK);
  assert_int_equal(rr.n, 15);
  for (int i = 0; i < rr.n; i++) assert_int_equal(rr.ids[i], 2 + i);
  assert_int_equal(rr.msgs, 4);
  assert_int_equal(rr.per_msg[0], 4);
  assert_int_equal(rr.per_msg[3], 3);
  assert_true(rr.found);
  assert_false(rr.fenced);
  assert_int_equal(rr.last_entry, 19);
  assert_int_equal(rr.lac, 18);
  assert_string_equal(rr.instance, id);

  q.max_entries = 0;
  q.max_bytes = 250; /* by bytes: two 100-byte entries per message */
  assert_int_equal(read_range(f, &q, &rr, &err), SL_OK);
  assert_int_equal(rr.n, 15);
  assert_int_equal(rr.msgs, 8);
  for (int i = 0; i < 7; i++) assert_int_equal(rr.per_msg[i], 2);
  q.max_bytes = 10; /* an entry larger than max_bytes still goes, alone */
  assert_int_equal(read_range(f, &q, &rr, &err), SL_OK);
  assert_int_equal(rr.msgs, 15);

  /* Past the end: the stream stops at the first missing entry. */
  q.max_bytes = 0;
  q.first_entry_id = 17;
  q.last_entry_id = 30;
  assert_int_equal(read_range(f, &q, &rr, &err), SL_OK);
  assert_int_equal(rr.n, 3);
  assert_false(rr.found);
  assert_int_equal(rr.missing, 20);

  /* With fence: fenced before reading, and later adds are refused. */
  q.first_entry_id = 0;
  q.last_entry_id = 25;
  q.fence = true;
  q.epoch = 2;
  assert_int_equal(read_range(f, &q, &rr, &err), SL_OK);
  assert_int_equal(rr.n, 20);
  assert_true(rr.fenced);
  assert_false(rr.found);
  assert_int_equal(rr.missing, 20);
  char error[256];
  assert_int_equal(add_one(f, 60, 20, 100, 2, false, error, sizeof(error)),
                   GRPC_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(error, "fenced"));

  /* Bad ranges and a wrong fencing password. */
  q.fence = false;
  q.first_entry_id = 5;
  q.last_entry_id = 4;
  assert_int_equal(read_range(f, &q, &rr, &err), SL_EINVAL);
  q.first_entry_id = -1;
  assert_int_equal(read_range(f, &q, &rr, &err), SL_EINVAL);
  q.first_entry_id = 0;
  q.last_entry_id = 3;
  q.fence = true;
  q.password.data = (uint8_t *)"nope";
  q.password.len = 4;
  assert_int_equal(read_range(f, &q, &rr, &err), SL_EPERM);
  free(id);
  fx_stop(f);
}

/* A striped range returns only the entries whose write set holds the
 * asked index, and stops at the first of them that is missing. */
static void test_service__read_entries_striped(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  /* With E=3, Qw=2 entry e's write set is {e mod 3, (e + 1) mod 3}. Entry
   * 16 (write set {1, 2}) is never written. */
  add_entries(f, 62, 20, 50, 16);
  range_result rr;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__ReadEntriesRequest q = SLUICE__V1__READ_ENTRIES_REQUEST__INIT;
  q.ledger_id = 62;
  q.first_entry_id = 1;
  q.last_entry_id = 12;
  q.ensemble_size = 3;
  q.write_quorum = 2;
  q.ensemble_index = 0; /* write sets holding 0: entries e mod 3 in {0, 2} */
  q.max_entries = 3;
  assert_int_equal(read_range(f, &q, &rr, &err), SL_OK);
  static const int64_t want0[] = {2, 3, 5, 6, 8, 9, 11, 12};
  assert_int_equal(rr.n, 8);
  for (int i = 0; i < rr.n; i++) assert_int_equal(rr.ids[i], want0[i]);
  assert_int_equal(rr.msgs, 3); /* by count: 3+3+2 owned entries */
  assert_true(rr.found);

  /* Write quorum 1 below the ledger's: only the entries led by index 1. */
  q.write_quorum = 1;
  q.ensemble_index = 1;
  q.max_entries = 0;
  assert_int_equal(read_range(f, &q, &rr, &err), SL_OK);
  static const int64_t want1[] = {1, 4, 7, 10};
  assert_int_equal(rr.n, 4);
  for (int i = 0; i < rr.n; i++) assert_int_equal(rr.ids[i], want1[i]);

  /* E = Qw: every entry, like a plain range. */
  q.ensemble_size = 2;
  q.write_quorum = 2;
  q.ensemble_index = 1;
  assert_int_equal(read_range(f, &q, &rr, &err), SL_OK);
  assert_int_equal(rr.n, 12);

  /* Index 1 holds 13, 15 and 16 (not 14): the stream stops at the missing
   * 16. */
  q.first_entry_id = 13;
  q.last_entry_id = 19;
  q.ensemble_size = 3;
  q.write_quorum = 2;
  q.ensemble_index = 1;
  assert_int_equal(read_range(f, &q, &rr, &err), SL_OK);
  assert_int_equal(rr.n, 2);
  assert_int_equal(rr.ids[0], 13);
  assert_int_equal(rr.ids[1], 15);
  assert_false(rr.found);
  assert_int_equal(rr.missing, 16);
  /* Index 0 is not in 16's write set: it skips it and goes on. */
  q.ensemble_index = 0;
  assert_int_equal(read_range(f, &q, &rr, &err), SL_OK);
  static const int64_t want2[] = {14, 15, 17, 18};
  assert_int_equal(rr.n, 4);
  for (int i = 0; i < rr.n; i++) assert_int_equal(rr.ids[i], want2[i]);
  assert_true(rr.found);

  /* A range with none of its entries at the index: one empty message. */
  q.first_entry_id = 1;
  q.last_entry_id = 1;
  assert_int_equal(read_range(f, &q, &rr, &err), SL_OK);
  assert_int_equal(rr.n, 0);
  assert_true(rr.found);

  /* Bad striping parameters. */
  static const uint32_t bad[][3] = {
      {3, 0, 0}, /* write_quorum 0 */
      {3, 4, 0}, /* write_quorum > ensemble_size */
      {3, 2, 3}, /* index out of the ensemble */
      {0, 2, 0}, /* quorum without ensemble_size */
      {0, 0, 1}, /* index without ensemble_size */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    q.ensemble_size = bad[i][0];
    q.write_quorum = bad[i][1];
    q.ensemble_index = bad[i][2];
    sl_err e2 = SL_ERR_INIT;
    assert_int_equal(read_range(f, &q, &rr, &e2), SL_EINVAL);
    assert_non_null(strstr(e2.msg, "striped range"));
  }
  fx_stop(f);
}

static sl_status write_lac(fx *f, uint64_t ledger, int64_t lac, uint64_t epoch,
                           const char *password, int64_t *now, sl_err *err) {
  Sluice__V1__WriteLacRequest q = SLUICE__V1__WRITE_LAC_REQUEST__INIT;
  q.ledger_id = ledger;
  q.lac = lac;
  q.epoch = epoch;
  q.password.data = (uint8_t *)password;
  q.password.len = strlen(password);
  Sluice__V1__WriteLacResponse *r = NULL;
  sl_status st = sl_bookie_service_write_lac(f->ch, &q, &r, NULL, err);
  if (r != NULL) {
    *now = r->lac;
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  return st;
}

static void test_service__write_lac(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  sl_rpc_stream *s = open_adds(f);
  for (int64_t e = 0; e < 5; e++) {
    send_add_pw(s, 70, e, 10, 3, false, (uint64_t)e, "pw");
    assert_int_equal(recv_ack(s, NULL, NULL, 0), 0);
  }
  sl_rpc_stream_destroy(s);
  int64_t lac = -9;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(write_lac(f, 70, 4, 3, "pw", &lac, &err), SL_OK);
  assert_int_equal(lac, 4);
  Sluice__V1__ReadLacRequest lr = SLUICE__V1__READ_LAC_REQUEST__INIT;
  lr.ledger_id = 70;
  Sluice__V1__ReadLacResponse *r = NULL;
  assert_int_equal(sl_bookie_service_read_lac(f->ch, &lr, &r, NULL, NULL), SL_OK);
  assert_int_equal(r->lac, 4);
  assert_string_equal(r->instance_id, sl_bookie_store_instance_id(f->store));
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(write_lac(f, 70, 2, 3, "pw", &lac, &err), SL_OK); /* only grows */
  assert_int_equal(lac, 4);
  assert_int_equal(write_lac(f, 70, 5, 3, "px", &lac, &err), SL_EPERM);
  assert_int_equal(write_lac(f, 70, 5, 2, "pw", &lac, &err), SL_ESTALE_EPOCH); /* stale */
  assert_non_null(strstr(err.msg, "stale epoch"));
  assert_int_equal(write_lac(f, 70, -2, 3, "pw", &lac, &err), SL_EINVAL);
  assert_int_equal(delete_pw(f, 70, "pw", &err), SL_OK);
  assert_int_equal(write_lac(f, 70, 5, 3, "pw", &lac, &err), SL_EDELETED);
  assert_string_equal(err.msg, "ledger 70: deleted");
  fx_stop(f);
}

/* Prometheus naming: sluice_bookie_* families, counters end in _total,
 * units are base units; every sample line parses. */
static void check_exposition(const char *text) {
  const char *line = text;
  int families = 0;
  while (*line != '\0') {
    const char *end = strchr(line, '\n');
    assert_non_null(end);
    char buf[512];
    size_t n = (size_t)(end - line) < sizeof(buf) - 1 ? (size_t)(end - line) : sizeof(buf) - 1;
    memcpy(buf, line, n);
    buf[n] = '\0';
    char name[200], type[32];
    if (sscanf(buf, "# TYPE %199s %31s", name, type) == 2) {
      families++;
      bool total = strlen(name) > 6 && strcmp(name + strlen(name) - 6, "_total") == 0;
      if (strcmp(type, "counter") == 0)
        assert_true(total);
      else
        assert_false(total);
      assert_null(strstr(name, "millis"));
      assert_null(strstr(name, "_ms"));
      assert_null(strstr(name, "kilo"));
    } else if (buf[0] != '#' && buf[0] != '\0') {
      char metric[400];
      double v;
      assert_int_equal(sscanf(buf, "%399s %lf", metric, &v), 2);
    }
    line = end + 1;
  }
  assert_true(families > 0);
}

static double metric(fx *f, const char *name, const char *label, const char *value) {
  const char *const labels[] = {label, value, NULL};
  double v = NAN;
  assert_int_equal(sl_metrics_value(f->metrics, name, label ? labels : NULL, &v), SL_OK);
  return v;
}

static void test_service__metrics(void **state) {
  (void)state;
  fx *f = fx_start(0, 0);
  for (int64_t e = 0; e < 10; e++) assert_int_equal(add_one(f, 80, e, 100, 1, false, NULL, 0), 0);
  assert_int_equal(add_one(f, 80, 10, 100, 1, true, NULL, 0), GRPC_STATUS_DATA_LOSS);
  assert_int_equal(fence_pw(f, 80, 2, "", NULL), SL_OK);
  assert_int_equal(add_one(f, 80, 10, 100, 1, false, NULL, 0), GRPC_STATUS_FAILED_PRECONDITION);
  Sluice__V1__ReadEntryResponse *r = NULL;
  assert_int_equal(read_entry(f, 80, 3, false, 0, &r, NULL), SL_OK);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(read_entry(f, 80, 30, false, 0, &r, NULL), SL_OK);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(sl_bookie_store_checkpoint(f->store, NULL), SL_OK);

  assert_true(metric(f, "sluice_bookie_adds_total", "outcome", "ok") == 10);
  assert_true(metric(f, "sluice_bookie_adds_total", "outcome", "bad_checksum") == 1);
  assert_true(metric(f, "sluice_bookie_adds_total", "outcome", "fenced") == 1);
  assert_true(metric(f, "sluice_bookie_adds_total", "outcome", "stale_epoch") == 0);
  assert_true(metric(f, "sluice_bookie_reads_total", "outcome", "ok") == 1);
  assert_true(metric(f, "sluice_bookie_reads_total", "outcome", "not_found") == 1);
  assert_true(metric(f, "sluice_bookie_add_latency_seconds", NULL, NULL) == 10);
  assert_true(metric(f, "sluice_bookie_journal_sync_seconds", NULL, NULL) >= 1);
  assert_true(metric(f, "sluice_bookie_journal_batch_records", NULL, NULL) >= 1);
  assert_true(metric(f, "sluice_bookie_journal_batch_bytes", NULL, NULL) >= 1);
  assert_true(metric(f, "sluice_bookie_checkpoint_seconds", NULL, NULL) >= 1);
  assert_true(metric(f, "sluice_bookie_ledgers", NULL, NULL) == 1);
  assert_true(metric(f, "sluice_bookie_entries", NULL, NULL) == 10);
  assert_true(metric(f, "sluice_bookie_entry_bytes", NULL, NULL) == 1000);
  assert_true(metric(f, "sluice_bookie_read_only", NULL, NULL) == 0);
  assert_true(metric(f, "sluice_bookie_disk_used_bytes", NULL, NULL) > 0);
  assert_true(metric(f, "sluice_bookie_disk_total_bytes", NULL, NULL) > 0);
  /* 10 entries of 100 bytes (28-byte record headers) after a 32-byte file
   * header, in the one entry log file; nothing collected yet. */
  assert_true(metric(f, "sluice_bookie_entry_log_files", NULL, NULL) == 1);
  assert_true(metric(f, "sluice_bookie_entry_log_bytes", NULL, NULL) == 32 + 10 * 128);
  assert_true(metric(f, "sluice_bookie_entry_log_gc_removed_files_total", NULL, NULL) == 0);
  assert_true(metric(f, "sluice_bookie_entry_log_gc_compacted_bytes_total", NULL, NULL) == 0);
  assert_true(metric(f, "sluice_bookie_journal_uncheckpointed_bytes", NULL, NULL) < 1024);
  assert_int_equal(add_one(f, 81, 0, 2000, 1, false, NULL, 0), 0);
  assert_true(metric(f, "sluice_bookie_journal_uncheckpointed_bytes", NULL, NULL) >= 2000);
  sl_bookie_store_set_disk_limit(f->store, 1); /* a 1-byte quota: full */
  assert_true(metric(f, "sluice_bookie_read_only", NULL, NULL) == 1);

  size_t len = 0;
  char *text = sl_metrics_render(f->metrics, &len);
  check_exposition(text);
  /* promtool, when installed (Debian's prometheus package), has the last
   * word on the exposition format and naming. */
  if (access("/usr/bin/promtool", X_OK) == 0) {
    char path[] = "/tmp/bookie-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "/usr/bin/promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[4096];
    size_t got = fread(out, 1, sizeof(out) - 1, p);
    out[got] = '\0';
    int rc = pclose(p);
    unlink(path);
    if (rc != 0 || got > 0) print_error("promtool: %s\n", out);
    assert_int_equal(rc, 0);
    assert_int_equal(got, 0);
  } else {
    print_message("promtool not installed: checked naming rules only\n");
  }
  free(text);
  fx_stop(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_service__add_read_list_info),
      cmocka_unit_test(test_service__refusals_keep_the_stream),
      cmocka_unit_test(test_service__fence_and_fencing_read),
      cmocka_unit_test(test_service__pauses_reads_at_limit),
      cmocka_unit_test(test_service__slow_reader_loses_no_ack),
      cmocka_unit_test(test_service__cancel_with_adds_in_flight),
      cmocka_unit_test(test_service__wrong_password_denied),
      cmocka_unit_test(test_service__journal_bytes_until_checkpoint),
      cmocka_unit_test(test_service__typed_status_on_every_refusal),
      cmocka_unit_test(test_service__not_found_is_an_answer),
      cmocka_unit_test(test_service__read_entries_pages),
      cmocka_unit_test(test_service__read_entries_striped),
      cmocka_unit_test(test_service__write_lac),
      cmocka_unit_test(test_service__metrics),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
