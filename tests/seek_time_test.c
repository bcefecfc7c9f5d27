/*
 * Seek by publish time (broker/seek_time.h) on a real cluster (etcd, 1
 * metadata, 3 bookies, 1 broker): a partition of several ledgers (one of
 * them empty, the last one still open and being written by its owner) is
 * filled with entries stamped at distinct publish times; for many times T
 * the search must give exactly what a linear scan of the log gives, in a
 * logarithmic number of entry reads.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/seek_time.h"
#include "common/clock.h"
#include "entry.pb-c.h"
#include "metadata.slrpc.h"
#include "tests/produce_testlib.h"
#include "tests/waiter.h"

#define TOPIC "st/seek"
#define ROUNDS 5          /* ENTRIES-sized runs after the first (see the test) */
#define ENTRIES 40        /* entries per round */
#define PER_ENTRY 3       /* messages per entry (one SendBatch) */

/* One stored message as the scan sees it. */
typedef struct smsg {
  sl_ml_pos pos;
  int32_t index;
  int64_t publish_ms;
} smsg;

typedef struct waiter {
  sl_tw tw;
  smsg *msgs;
  size_t n, cap;
  sl_seek_time_result r;
} waiter;

static void waiter_init(waiter *w) {
  memset(w, 0, sizeof(*w));
  sl_tw_init(&w->tw);
}

static void scan_entry(sl_ml_pos pos, const void *data, size_t len, void *arg) {
  waiter *w = arg;
  Sluice__V1__StoredEntry *e = sluice__v1__stored_entry__unpack(NULL, len, data);
  if (e == NULL) return;
  for (size_t i = 0; i < e->n_messages; i++) {
    if (w->n == w->cap) {
      w->cap = w->cap ? w->cap * 2 : 1024;
      w->msgs = realloc(w->msgs, w->cap * sizeof(*w->msgs));
    }
    w->msgs[w->n++] = (smsg){pos, (int32_t)i, e->messages[i]->publish_time_ms};
  }
  sluice__v1__stored_entry__free_unpacked(e, NULL);
}

static void scan_done(sl_status st, const char *details, void *arg) {
  sl_tw_done(&((waiter *)arg)->tw, st, details);
}

/* The partition's messages, in log order (heap array). */
static size_t scan_log(sl_pt *t, smsg **out) {
  waiter w;
  waiter_init(&w);
  sl_err err = SL_ERR_INIT;
  sl_ml_pos from = {0, 0};
  assert_int_equal(sl_ml_scan_async(t->ledgers, t->meta, TOPIC, from, NULL, scan_entry,
                                    scan_done, &w, &err),
                   SL_OK);
  sl_tw_wait(&w.tw, 30000);
  if (w.tw.st != SL_OK) fail_msg("scan: %s", w.tw.details);
  *out = w.msgs;
  return w.n;
}

static void seek_done(sl_status st, const char *details, const sl_seek_time_result *r,
                      void *arg) {
  waiter *w = arg;
  if (st == SL_OK) w->r = *r;
  sl_tw_done(&w->tw, st, details);
}

static sl_seek_time_result seek(sl_pt *t, sl_serial *serial, const char *partition,
                                int64_t when) {
  waiter w;
  waiter_init(&w);
  sl_seek_time_opts o = {t->ledgers, t->meta, partition, when, serial, 0};
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_seek_time_async(&o, seek_done, &w, &err), SL_OK);
  sl_tw_wait(&w.tw, 30000);
  if (w.tw.st != SL_OK) fail_msg("seek %lld: %s", (long long)when, w.tw.details);
  return w.r;
}

/* Opens a producer at the owner; right after an unload the lookup may
 * still name a broker that is letting the partition go (a redirect): look
 * it up again until the owner takes the open. */
static void open_at_owner(sl_pt *t, const char *name, sl_pt_producer *p) {
  int64_t deadline = sl_clock_mono_ms() + 20000;
  for (;;) {
    sl_err err = SL_ERR_INIT;
    int owner = sl_pt_owner(t, 0, TOPIC, NULL);
    sl_status st = sl_pt_open(t, owner, TOPIC, name, false, p, NULL, &err);
    if (st == SL_OK) return;
    sl_pt_close(p);
    if (st != SL_EREDIRECT || sl_clock_mono_ms() > deadline)
      fail_msg("open %s: %s", name, sl_err_msg(&err, st));
  }
}

/* Produces entries [first, first + count) (PER_ENTRY messages each, one
 * SendBatch) on producer "p", each in a later millisecond than the last,
 * so publish times are distinct per entry and increase. The namespace
 * deduplicates: after a redirect (an unload racing the next open) the
 * entry is sent again on a new stream and stored once. */
static void produce_entries(sl_pt *t, int first, int count) {
  sl_pt_producer p;
  sl_err err = SL_ERR_INIT;
  open_at_owner(t, "p", &p);
  sl_pt_ack acks[PER_ENTRY];
  for (int e = first; e < first + count;) {
    int64_t before = sl_clock_wall_ms();
    while (sl_clock_wall_ms() == before) {
    }
    int got = 0;
    sl_status st = sl_pt_send(&p, (uint64_t)e * PER_ENTRY, PER_ENTRY, 64, &err);
    if (st == SL_OK) st = sl_pt_recv_acks(&p, acks, PER_ENTRY, &got, 30000, &err);
    if (st == SL_OK && acks[0].status == 0) {
      e++;
      continue;
    }
    if (st != SL_EREDIRECT && st != SL_OK) fail_msg("entry %d: %s", e, sl_err_msg(&err, st));
    sl_pt_close(&p);
    open_at_owner(t, "p", &p);
  }
  sl_pt_close(&p);
}

/* A namespace that deduplicates and rolls its ledgers every ENTRIES
 * entries. */
static void namespace_with_rollover(sl_pt *t, const char *ns) {
  Sluice__V1__NamespacePolicies pol = SLUICE__V1__NAMESPACE_POLICIES__INIT;
  pol.deduplication = true;
  pol.retention_minutes = -1;
  pol.retention_megabytes = -1;
  pol.ledger_rollover_entries = ENTRIES;
  Sluice__V1__CreateNamespaceRequest req = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  req.name = (char *)ns;
  req.policies = &pol;
  Sluice__V1__Namespace *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_create_namespace(t->meta, &req, &resp, NULL, &err);
  if (st != SL_OK) fail_msg("namespace %s: %s", ns, sl_err_msg(&err, st));
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "seek_time", 1, 3, 1);
  namespace_with_rollover(t, "st");
  sl_pt_topic(t, TOPIC, 0);
  sl_pt_topic(t, "st/empty", 0);
  *state = t;
  return 0;
}

/* What a linear scan says for T: the first message at or after T, or the
 * end (just past the last entry). */
static void expect(const smsg *m, size_t n, int64_t when, const sl_seek_time_result *r,
                   sl_ml_pos end) {
  size_t i = 0;
  while (i < n && m[i].publish_ms < when) i++;
  if (i == n) {
    assert_true(r->at_end);
    assert_int_equal(r->pos.ledger_id, end.ledger_id);
    assert_int_equal(r->pos.entry_id, end.entry_id);
    return;
  }
  if (r->at_end || r->pos.ledger_id != m[i].pos.ledger_id ||
      r->pos.entry_id != m[i].pos.entry_id || r->batch_index != m[i].index)
    fail_msg("T=%lld: got %s(%llu,%lld,%d), want (%llu,%lld,%d)", (long long)when,
             r->at_end ? "end " : "", (unsigned long long)r->pos.ledger_id,
             (long long)r->pos.entry_id, r->batch_index,
             (unsigned long long)m[i].pos.ledger_id, (long long)m[i].pos.entry_id,
             m[i].index);
}

/* Several ledgers (one empty, the last open): every probed T agrees with
 * the linear scan, and no search reads more than a logarithmic number of
 * entries. */
static void test_seek_time__matches_a_linear_scan(void **state) {
  sl_pt *t = *state;
  /* Two ledgers by rollover, then an unload and an open without sends
   * (a ledger that gets no entry), then more rollovers; the last ledger
   * stays open with its owner writing. */
  produce_entries(t, 0, 2 * ENTRIES);
  sl_pt_unload(t, 0, TOPIC);
  sl_pt_producer idle;
  open_at_owner(t, "idle", &idle);
  sl_pt_close(&idle);
  sl_pt_unload(t, 0, TOPIC);
  produce_entries(t, 2 * ENTRIES, (ROUNDS - 1) * ENTRIES + ENTRIES / 2);

  /* Await the open ledger's LAC on the bookies (the writer sends it once
   * idle), so that the scan and the searches see the same entries. */
  size_t want = ((size_t)(ROUNDS + 1) * ENTRIES + ENTRIES / 2) * PER_ENTRY;
  smsg *m = NULL;
  size_t n = 0;
  int64_t deadline = sl_clock_mono_ms() + 20000;
  for (;;) {
    free(m);
    n = scan_log(t, &m);
    if (n == want || sl_clock_mono_ms() > deadline) break;
  }
  assert_int_equal(n, want);
  for (size_t i = 1; i < n; i++) assert_true(m[i - 1].publish_ms <= m[i].publish_ms);
  size_t ledgers = 1;
  for (size_t i = 1; i < n; i++) ledgers += m[i].pos.ledger_id != m[i - 1].pos.ledger_id;
  assert_true(ledgers >= 7); /* rollovers happened: the ledger search has work */
  sl_ml_pos end = m[n - 1].pos;
  end.entry_id++;

  sl_serial *serial;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_serial_create(&serial, &err), SL_OK);
  uint32_t max_reads = 0;
  int64_t times[4 + 2 * ((ROUNDS + 1) * ENTRIES + ENTRIES / 2)];
  size_t nt = 0;
  times[nt++] = 0;
  times[nt++] = m[0].publish_ms - 1000;
  times[nt++] = m[n - 1].publish_ms + 1;
  times[nt++] = m[n - 1].publish_ms + 100000;
  for (size_t i = 0; i < n; i += PER_ENTRY) {
    times[nt++] = m[i].publish_ms;      /* exactly an entry's time */
    times[nt++] = m[i].publish_ms - 1;  /* just before it */
  }
  for (size_t k = 0; k < nt; k++) {
    sl_seek_time_result r = seek(t, serial, TOPIC, times[k]);
    expect(m, n, times[k], &r, end);
    if (r.entries_read > max_reads) max_reads = r.entries_read;
  }
  /* 9 ledgers of up to 40 entries: about log2(9) + log2(40) + 1 = 10
   * reads; a linear scan would read up to 260. */
  print_message("seek_time: %zu searches over %zu messages in %zu non-empty ledgers, at most "
                "%u entry reads\n", nt, n, ledgers, max_reads);
  assert_true(max_reads <= 14);
  sl_serial_unref(serial);
  free(m);
}

/* A partition with no ledger list yet is empty: the end, (0, 0). */
static void test_seek_time__empty_partition(void **state) {
  sl_pt *t = *state;
  sl_serial *serial;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_serial_create(&serial, &err), SL_OK);
  sl_seek_time_result r = seek(t, serial, "st/empty", 12345);
  assert_true(r.at_end);
  assert_int_equal(r.pos.ledger_id, 0);
  assert_int_equal(r.pos.entry_id, 0);
  assert_int_equal(r.entries_read, 0);
  sl_serial_unref(serial);
}

/* Missing options are refused at once; no callback runs. */
static void test_seek_time__bad_options(void **state) {
  sl_pt *t = *state;
  sl_err err = SL_ERR_INIT;
  sl_seek_time_opts o = {t->ledgers, t->meta, NULL, 1, NULL, 0};
  assert_int_equal(sl_seek_time_async(&o, seek_done, NULL, &err), SL_EINVAL);
  assert_int_equal(sl_seek_time_async(NULL, seek_done, NULL, &err), SL_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_seek_time__matches_a_linear_scan),
      cmocka_unit_test(test_seek_time__empty_partition),
      cmocka_unit_test(test_seek_time__bad_options),
  };
  return cmocka_run_group_tests(tests, setup, sl_pt_teardown);
}
