/* Subscription over fake ports: an in-memory log whose reads complete when
 * the test runs them (as the partition's serial would, later), an ack set,
 * and recorders for deliveries, active changes and dead letters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/subscription.h"
#include "entry.pb-c.h"

#define LEDGER 4
#define MAX_ENTRIES 512
#define MAX_DELIV 4096

typedef struct delivery {
  uint64_t consumer;
  sl_msg_id id;
  uint32_t count;
  char key[16];
} delivery;

typedef struct pending_read {
  sl_ml_pos from;
  uint32_t max;
  sl_sub_entry_cb on_entry;
  sl_sub_read_cb on_done;
  void *arg;
} pending_read;

typedef struct fake {
  uint8_t *entries[MAX_ENTRIES];
  size_t lens[MAX_ENTRIES];
  int n_entries;
  bool acked[MAX_ENTRIES][4];
  int batch[MAX_ENTRIES];
  pending_read reads[64];
  int n_reads;
  delivery d[MAX_DELIV];
  int n_d;
  uint64_t active_id[16];
  bool active_on[16];
  int n_active;
  char dlq_key[16][16];
  int n_dlq;
  sl_sub_done_cb dlq_cb;
  void *dlq_arg;
} fake;

/* Appends an entry of `n` messages with keys key0.. */
static void append(fake *f, int n, const char *const *keys) {
  Sluice__V1__StoredEntry e = SLUICE__V1__STORED_ENTRY__INIT;
  Sluice__V1__StoredMessage m[4], *mp[4];
  Sluice__V1__KeyValue kv = SLUICE__V1__KEY_VALUE__INIT;
  Sluice__V1__KeyValue *kvp = &kv;
  kv.key = "color";
  kv.value = "blue";
  for (int i = 0; i < n; i++) {
    sluice__v1__stored_message__init(&m[i]);
    m[i].key = (char *)keys[i];
    m[i].n_properties = 1;
    m[i].properties = &kvp;
    mp[i] = &m[i];
  }
  e.n_messages = (size_t)n;
  e.messages = mp;
  size_t len = sluice__v1__stored_entry__get_packed_size(&e);
  f->entries[f->n_entries] = malloc(len);
  sluice__v1__stored_entry__pack(&e, f->entries[f->n_entries]);
  f->lens[f->n_entries] = len;
  f->batch[f->n_entries] = n;
  f->n_entries++;
}

static void append_keys(fake *f, int count, int nkeys) {
  char buf[16];
  for (int i = 0; i < count; i++) {
    snprintf(buf, sizeof(buf), "k%d", (f->n_entries) % nkeys);
    const char *k = buf;
    append(f, 1, &k);
  }
}

static sl_status p_read(void *ctx, sl_ml_pos from, uint32_t max,
                        sl_sub_entry_cb on_entry, sl_sub_read_cb on_done,
                        void *arg) {
  fake *f = ctx;
  assert_true(f->n_reads < 64);
  assert_true(max > 0);
  f->reads[f->n_reads++] = (pending_read){from, max, on_entry, on_done, arg};
  return SL_OK;
}

/* Completes every pending read (and the reads they start). */
static void run(fake *f) {
  while (f->n_reads > 0) {
    pending_read r = f->reads[0];
    memmove(f->reads, f->reads + 1, (size_t)(f->n_reads - 1) * sizeof(r));
    f->n_reads--;
    int64_t e = r.from.ledger_id < LEDGER ? 0 : r.from.entry_id;
    for (uint32_t i = 0; i < r.max && e < f->n_entries; i++, e++) {
      sl_ml_pos pos = {LEDGER, e};
      r.on_entry(pos, f->entries[e], f->lens[e], r.arg);
    }
    r.on_done(SL_OK, r.arg);
  }
}

static sl_ml_pos p_read_start(void *ctx) {
  (void)ctx;
  sl_ml_pos p = {LEDGER, 0};
  return p;
}

static bool p_is_acked(void *ctx, sl_msg_id id, int32_t batch_size) {
  fake *f = ctx;
  (void)batch_size;
  return f->acked[id.entry_id][id.batch_index];
}

static sl_status p_ack(void *ctx, sl_msg_id id, int32_t batch_size,
                       sl_sub_done_cb cb, void *arg, sl_err *err) {
  fake *f = ctx;
  (void)batch_size;
  if (id.ledger_id != LEDGER || id.entry_id < 0 || id.entry_id >= f->n_entries)
    return sl_err_set(err, SL_ERANGE, "not in the partition");
  f->acked[id.entry_id][id.batch_index] = true;
  if (cb) cb(SL_OK, arg);
  return SL_OK;
}

static sl_status p_ack_cumulative(void *ctx, sl_msg_id id, sl_sub_done_cb cb,
                                  void *arg, sl_err *err) {
  fake *f = ctx;
  (void)err;
  for (int64_t e = 0; e <= id.entry_id && e < f->n_entries; e++)
    for (int b = 0; b < 4; b++) f->acked[e][b] = true;
  if (cb) cb(SL_OK, arg);
  return SL_OK;
}

static sl_status p_ack_before(void *ctx, sl_ml_pos to, sl_sub_done_cb cb, void *arg,
                              sl_err *err) {
  fake *f = ctx;
  if (to.ledger_id != LEDGER || to.entry_id < 0 || to.entry_id > f->n_entries)
    return sl_err_set(err, SL_ERANGE, "not in the partition");
  for (int64_t e = 0; e < to.entry_id; e++)
    for (int b = 0; b < 4; b++) f->acked[e][b] = true;
  if (cb) cb(SL_OK, arg);
  return SL_OK;
}

static void p_deliver(void *ctx, uint64_t consumer, const sl_sub_delivery *d) {
  fake *f = ctx;
  assert_true(f->n_d < MAX_DELIV);
  delivery *x = &f->d[f->n_d++];
  x->consumer = consumer;
  x->id = d->id;
  x->count = d->redelivery_count;
  snprintf(x->key, sizeof(x->key), "%s", d->msg->key);
}

static void p_active(void *ctx, uint64_t consumer, bool active) {
  fake *f = ctx;
  f->active_id[f->n_active] = consumer;
  f->active_on[f->n_active++] = active;
}

static sl_status p_dead_letter(void *ctx, const sl_sub_delivery *d,
                               sl_sub_done_cb cb, void *arg) {
  fake *f = ctx;
  assert_int_equal(d->msg->n_properties, 1);
  assert_string_equal(d->msg->properties[0]->value, "blue");
  snprintf(f->dlq_key[f->n_dlq++], 16, "%s", d->msg->key);
  f->dlq_cb = cb;
  f->dlq_arg = arg;
  return SL_OK;
}

static sl_sub *make(fake *f, sl_disp_type t, uint32_t max_redeliveries) {
  sl_sub_opts o = {
      .name = "sub-x", .type = t, .max_redeliveries = max_redeliveries,
      .nack_delay_ms = 50, .max_read = 8,
      .ports = {.ctx = f, .cursor_ctx = f, .read = p_read, .read_start = p_read_start,
                .is_acked = p_is_acked, .ack = p_ack,
                .ack_cumulative = p_ack_cumulative, .ack_before = p_ack_before,
                .deliver = p_deliver,
                .active = p_active, .dead_letter = p_dead_letter}};
  sl_sub *s = NULL;
  assert_int_equal(sl_sub_create(&o, &s, NULL), SL_OK);
  return s;
}

static void add(sl_sub *s, uint64_t id, const char *name) {
  sl_disp_consumer c = {.id = id, .name = name};
  assert_int_equal(sl_sub_add_consumer(s, &c, NULL), SL_OK);
}

static sl_msg_id M(int64_t e) {
  sl_msg_id id = {LEDGER, e, 0};
  return id;
}

static void release(fake *f) {
  for (int i = 0; i < f->n_entries; i++) free(f->entries[i]);
  free(f);
}

/* Permits bound deliveries; everything comes in order; new entries flow
 * after notify; bad permits and cumulative ack rules. */
static void test_subscription__exclusive_in_order_within_permits(void **state) {
  (void)state;
  fake *f = calloc(1, sizeof(*f));
  append_keys(f, 20, 3);
  sl_sub *s = make(f, SL_DISP_EXCLUSIVE, 0);
  add(s, 1, "c1");
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_sub_flow(s, 1, 0, &err), SL_EINVAL);
  assert_int_equal(sl_sub_flow(s, 1, -3, &err), SL_EINVAL);
  assert_int_equal(sl_sub_flow(s, 1, 5, NULL), SL_OK);
  run(f);
  assert_int_equal(f->n_d, 5);
  assert_int_equal(sl_sub_flow(s, 1, 100, NULL), SL_OK);
  run(f);
  assert_int_equal(f->n_d, 20);
  for (int i = 0; i < 20; i++) {
    assert_int_equal(f->d[i].id.entry_id, i);
    assert_int_equal(f->d[i].count, 0);
  }
  append_keys(f, 3, 3);
  sl_sub_notify(s, 0);
  run(f);
  assert_int_equal(f->n_d, 23);
  assert_int_equal(sl_sub_ack_cumulative(s, 1, M(22), NULL, NULL, NULL), SL_OK);
  sl_sub_stats st;
  sl_sub_stats_get(s, &st);
  assert_int_equal(st.unacked, 0);
  assert_int_equal(sl_sub_ack(s, M(400), 1, NULL, NULL, &err), SL_ERANGE);
  sl_msg_id bad = {LEDGER, 1, 3};
  assert_int_equal(sl_sub_ack(s, bad, 2, NULL, NULL, &err), SL_EINVAL);
  sl_sub_destroy(s);
  release(f);
}

static void test_subscription__shared_cumulative_ack_refused(void **state) {
  (void)state;
  fake *f = calloc(1, sizeof(*f));
  sl_sub *s = make(f, SL_DISP_SHARED, 0);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_sub_ack_cumulative(s, 1, M(0), NULL, NULL, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "sub-x"));
  sl_sub_destroy(s);
  release(f);
}

/* Expiry (message TTL) acks what is before the position for any type: the
 * read position jumps ahead, a queued redelivery before it is dropped, and
 * nothing before it goes out again; what is after it still does. */
static void test_subscription__expire_skips_what_is_before(void **state) {
  (void)state;
  fake *f = calloc(1, sizeof(*f));
  append_keys(f, 10, 3);
  sl_sub *s = make(f, SL_DISP_SHARED, 0);
  add(s, 1, "c1");
  assert_int_equal(sl_sub_flow(s, 1, 3, NULL), SL_OK);
  run(f);
  assert_int_equal(f->n_d, 3);
  assert_true(sl_sub_nack(s, M(1), 10, 0)); /* queued for redelivery at 10 ms */
  sl_err err = SL_ERR_INIT;
  sl_ml_pos far = {LEDGER, 11};
  assert_int_equal(sl_sub_expire(s, far, NULL, NULL, &err), SL_ERANGE);
  sl_ml_pos to = {LEDGER, 6};
  assert_int_equal(sl_sub_expire(s, to, NULL, NULL, &err), SL_OK);
  for (int e = 0; e < 6; e++) assert_true(f->acked[e][0]);
  assert_false(f->acked[6][0]);
  assert_int_equal(sl_sub_flow(s, 1, 20, NULL), SL_OK);
  sl_sub_tick(s, 1000); /* the nack is due */
  run(f);
  assert_int_equal(f->n_d, 3 + 4);
  for (int i = 3; i < 7; i++) {
    assert_int_equal(f->d[i].id.entry_id, 6 + (i - 3));
    assert_int_equal(f->d[i].count, 0);
  }
  sl_sub_stats st;
  sl_sub_stats_get(s, &st);
  assert_int_equal(st.replay, 0);
  sl_sub_destroy(s);
  release(f);
}

/* Nack redelivers after the delay with count+1; past max it goes to the
 * dead-letter port with its properties, and only then is acked. */
static void test_subscription__nack_then_dead_letter(void **state) {
  (void)state;
  fake *f = calloc(1, sizeof(*f));
  append_keys(f, 3, 3);
  sl_sub *s = make(f, SL_DISP_SHARED, 2);
  add(s, 1, "c1");
  assert_int_equal(sl_sub_flow(s, 1, 100, NULL), SL_OK);
  run(f);
  assert_int_equal(f->n_d, 3);
  for (uint32_t round = 1; round <= 2; round++) {
    assert_true(sl_sub_nack(s, M(1), 0, 1000 * round));
    run(f);
    int before = f->n_d;
    assert_int_equal(sl_sub_tick(s, 1000 * round + 49), 1000 * round + 50);
    run(f);
    assert_int_equal(f->n_d, before);
    assert_int_equal(sl_sub_tick(s, 1000 * round + 50), -1);
    run(f);
    assert_int_equal(f->n_d, before + 1);
    assert_int_equal(f->d[before].id.entry_id, 1);
    assert_int_equal(f->d[before].count, round);
  }
  assert_true(sl_sub_nack(s, M(1), 0, 5000));
  run(f);
  assert_int_equal(f->n_dlq, 1);
  assert_string_equal(f->dlq_key[0], "k1");
  assert_false(f->acked[1][0]); /* not before the publish is durable */
  f->dlq_cb(SL_OK, f->dlq_arg);
  assert_true(f->acked[1][0]);
  sl_sub_stats st;
  sl_sub_stats_get(s, &st);
  assert_int_equal(st.dead_lettered, 1);
  assert_int_equal(st.redelivered, 2);
  sl_sub_destroy(s);
  release(f);
}

/* Ack timeout redelivers with count+1; a dying consumer's unacked go to
 * the other one. */
static void test_subscription__timeout_and_dead_consumer(void **state) {
  (void)state;
  fake *f = calloc(1, sizeof(*f));
  append_keys(f, 6, 6);
  sl_sub *s = make(f, SL_DISP_SHARED, 0);
  sl_disp_consumer c1 = {.id = 1, .name = "c1", .ack_timeout_ms = 100};
  assert_int_equal(sl_sub_add_consumer(s, &c1, NULL), SL_OK);
  add(s, 2, "c2");
  assert_int_equal(sl_sub_flow(s, 1, 3, NULL), SL_OK);
  assert_int_equal(sl_sub_flow(s, 2, 3, NULL), SL_OK);
  run(f);
  assert_int_equal(f->n_d, 6);
  int at_c2 = 0;
  for (int i = 0; i < 6; i++) at_c2 += f->d[i].consumer == 2;
  assert_int_equal(at_c2, 3);
  /* c2 dies: its 3 go to c1 (once it has permits). */
  sl_sub_remove_consumer(s, 2);
  assert_int_equal(sl_sub_flow(s, 1, 3, NULL), SL_OK);
  run(f);
  assert_int_equal(f->n_d, 9);
  for (int i = 6; i < 9; i++) {
    assert_int_equal(f->d[i].consumer, 1);
    assert_int_equal(f->d[i].count, 1);
  }
  /* Nothing acked by c1 within 100 ms: all 6 come back, count+1. */
  assert_int_equal(sl_sub_flow(s, 1, 10, NULL), SL_OK);
  sl_sub_tick(s, 100);
  run(f);
  assert_int_equal(f->n_d, 15);
  sl_sub_destroy(s);
  release(f);
}

/* Failover: the active leaves; the next gets the unacked in order, then
 * the rest. */
static void test_subscription__failover_keeps_order(void **state) {
  (void)state;
  fake *f = calloc(1, sizeof(*f));
  append_keys(f, 10, 2);
  sl_sub *s = make(f, SL_DISP_FAILOVER, 0);
  add(s, 1, "a");
  add(s, 2, "b");
  assert_int_equal(f->n_active, 1);
  assert_int_equal(sl_sub_flow(s, 1, 4, NULL), SL_OK);
  assert_int_equal(sl_sub_flow(s, 2, 100, NULL), SL_OK);
  run(f);
  assert_int_equal(f->n_d, 4);
  assert_int_equal(sl_sub_ack(s, M(0), 1, NULL, NULL, NULL), SL_OK);
  sl_sub_remove_consumer(s, 1);
  assert_int_equal(f->active_id[1], 2);
  assert_true(f->active_on[1]);
  run(f);
  assert_int_equal(f->n_d, 4 + 9);
  for (int i = 4; i < 13; i++) {
    assert_int_equal(f->d[i].consumer, 2);
    assert_int_equal(f->d[i].id.entry_id, i - 3); /* 1, 2, 3, then 4.. */
  }
  sl_sub_destroy(s);
  release(f);
}

/* Per-key order while consumers join and leave, acks in between: every
 * key's first deliveries come in id order and never at two consumers at
 * once; a joiner gets keys. */
static void test_subscription__key_shared_order_across_joins(void **state) {
  (void)state;
  fake *f = calloc(1, sizeof(*f));
  sl_sub *s = make(f, SL_DISP_KEY_SHARED, 0);
  add(s, 1, "c1");
  assert_int_equal(sl_sub_flow(s, 1, 1000, NULL), SL_OK);
  int acked_upto = 0;
  for (int step = 0; step < 30; step++) {
    if (step == 5) {
      add(s, 2, "c2");
      assert_int_equal(sl_sub_flow(s, 2, 1000, NULL), SL_OK);
    }
    if (step == 12) {
      add(s, 3, "c3");
      assert_int_equal(sl_sub_flow(s, 3, 1000, NULL), SL_OK);
    }
    if (step == 20) sl_sub_remove_consumer(s, 2);
    append_keys(f, 10, 37);
    sl_sub_notify(s, step);
    run(f);
    /* Ack half of what is out. */
    int n = f->n_d;
    for (int i = acked_upto; i < n; i += 2)
      sl_sub_ack(s, f->d[i].id, 1, NULL, NULL, NULL);
    acked_upto = n;
    sl_sub_tick(s, step);
    run(f);
    int m = f->n_d;
    for (int i = 0; i < m; i++)
      if (!f->acked[f->d[i].id.entry_id][0]) sl_sub_ack(s, f->d[i].id, 1, NULL, NULL, NULL);
    run(f);
  }
  int last[37];
  bool joiner_got = false;
  for (int k = 0; k < 37; k++) last[k] = -1;
  for (int i = 0; i < f->n_d; i++) {
    int k = atoi(f->d[i].key + 1);
    if (f->d[i].count > 0) continue; /* a redelivery after a leave */
    assert_true(f->d[i].id.entry_id > last[k]);
    last[k] = (int)f->d[i].id.entry_id;
    if (f->d[i].consumer == 3) joiner_got = true;
  }
  assert_true(joiner_got);
  for (int e = 0; e < 300; e++) assert_true(f->acked[e][0]);
  sl_sub_destroy(s);
  release(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_subscription__exclusive_in_order_within_permits),
      cmocka_unit_test(test_subscription__shared_cumulative_ack_refused),
      cmocka_unit_test(test_subscription__expire_skips_what_is_before),
      cmocka_unit_test(test_subscription__nack_then_dead_letter),
      cmocka_unit_test(test_subscription__timeout_and_dead_consumer),
      cmocka_unit_test(test_subscription__failover_keeps_order),
      cmocka_unit_test(test_subscription__key_shared_order_across_joins),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
