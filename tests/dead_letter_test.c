/*
 * Dead-letter publishing (broker/dead_letter.h) on a real cluster (etcd, 1
 * metadata, 3 bookies, 2 brokers, dedup on): the topic is created on
 * first use; the stored message keeps payload, key and properties and
 * gains the original id and topic; retries of the same dead letter are
 * stored once, also when dead letters come out of id order and when the
 * dead-letter topic moves to another owner between a publish and its
 * retry.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "broker/dead_letter.h"
#include "common/clock.h"
#include "entry.pb-c.h"
#include "tests/produce_testlib.h"
#include "tests/waiter.h"

#define SOURCE "dl/orders-partition-1"
#define SUB "billing"
#define DLQ "dl/orders-billing-DLQ"


typedef struct fixture {
  sl_pt t;
  sl_dead_letter *dl;
  sl_serial *serial;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  sl_pt_start(&f->t, "dead_letter", 1, 3, 2);
  sl_pt_namespace(&f->t, "dl", true, 0);
  sl_err err = SL_ERR_INIT;
  sl_dead_letter_opts o = {sl_cluster_addr(f->t.c, SL_NODE_BROKER, 0), 0};
  assert_int_equal(sl_dead_letter_create(&o, &f->dl, &err), SL_OK);
  assert_int_equal(sl_serial_create(&f->serial, &err), SL_OK);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  sl_serial_unref(f->serial);
  sl_dead_letter_destroy(f->dl);
  sl_pt_stop(&f->t);
  free(f);
  return 0;
}

static void published(sl_status st, void *arg) { sl_tw_done(arg, st, NULL); }

/* Dead-letters the message "payload-<entry>" with key and one property as
 * if it were SOURCE's (ledger 7, entry, batch 0). */
static sl_status publish(fixture *f, const char *topic, int64_t entry) {
  char payload[32], value[32];
  snprintf(payload, sizeof(payload), "payload-%lld", (long long)entry);
  snprintf(value, sizeof(value), "v%lld", (long long)entry);
  Sluice__V1__KeyValue kv = SLUICE__V1__KEY_VALUE__INIT;
  kv.key = "user-prop";
  kv.value = value;
  Sluice__V1__KeyValue *kvp[1] = {&kv};
  Sluice__V1__StoredMessage sm = SLUICE__V1__STORED_MESSAGE__INIT;
  sm.producer_name = "orig-producer";
  sm.key = "k1";
  sm.event_time_ms = 1234;
  sm.n_properties = 1;
  sm.properties = kvp;
  sm.payload.data = (uint8_t *)payload;
  sm.payload.len = strlen(payload);
  sl_dead_letter_msg m = {SOURCE, SUB, topic, 7, entry, 0, &sm};
  sl_tw w;
  sl_tw_init(&w);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_dead_letter_publish(f->dl, &m, f->serial, published, &w, &err);
  if (st != SL_OK) return st;
  return sl_tw_wait(&w, 30000);
}

/* ---- reading the dead-letter topic back ---- */

typedef struct dmsg {
  char payload[32];
  char key[16];
  char prop[16];
  char orig_id[64];
  char orig_topic[64];
  int64_t event_time;
} dmsg;

typedef struct log_reader {
  sl_tw w;
  dmsg *m;
  size_t n, cap;
} log_reader;

static void log_entry(sl_ml_pos pos, const void *data, size_t len, void *arg) {
  (void)pos;
  log_reader *r = arg;
  Sluice__V1__StoredEntry *e = sluice__v1__stored_entry__unpack(NULL, len, data);
  if (e == NULL) return;
  for (size_t i = 0; i < e->n_messages; i++) {
    if (r->n == r->cap) {
      r->cap = r->cap ? r->cap * 2 : 64;
      r->m = realloc(r->m, r->cap * sizeof(*r->m));
    }
    dmsg *d = &r->m[r->n++];
    memset(d, 0, sizeof(*d));
    const Sluice__V1__StoredMessage *sm = e->messages[i];
    snprintf(d->payload, sizeof(d->payload), "%.*s", (int)sm->payload.len,
             (const char *)sm->payload.data);
    snprintf(d->key, sizeof(d->key), "%s", sm->key);
    d->event_time = sm->event_time_ms;
    for (size_t k = 0; k < sm->n_properties; k++) {
      const char *key = sm->properties[k]->key, *v = sm->properties[k]->value;
      if (strcmp(key, "user-prop") == 0) snprintf(d->prop, sizeof(d->prop), "%s", v);
      if (strcmp(key, SL_DLQ_PROP_ORIGINAL_ID) == 0)
        snprintf(d->orig_id, sizeof(d->orig_id), "%s", v);
      if (strcmp(key, SL_DLQ_PROP_ORIGINAL_TOPIC) == 0)
        snprintf(d->orig_topic, sizeof(d->orig_topic), "%s", v);
    }
  }
  sluice__v1__stored_entry__free_unpacked(e, NULL);
}

static void log_done(sl_status st, const char *details, void *arg) {
  log_reader *r = arg;
  sl_tw_done(&r->w, st, details);
}

/* The topic's messages, after an unload (its owner closes the ledger, so
 * a reader sees everything acked). Heap array. */
static size_t read_dlq(fixture *f, const char *topic, dmsg **out) {
  sl_pt_unload(&f->t, 0, topic);
  log_reader r = {0};
  sl_tw_init(&r.w);
  sl_err err = SL_ERR_INIT;
  sl_ml_pos from = {0, 0};
  assert_int_equal(sl_ml_scan_async(f->t.ledgers, f->t.meta, topic, from, NULL, log_entry,
                                    log_done, &r, &err),
                   SL_OK);
  if (sl_tw_wait(&r.w, 30000) != SL_OK) fail_msg("scan %s: %s", topic, r.w.details);
  *out = r.m;
  return r.n;
}

/* How many stored messages carry this payload. */
static int count(const dmsg *m, size_t n, int64_t entry) {
  char payload[32];
  snprintf(payload, sizeof(payload), "payload-%lld", (long long)entry);
  int c = 0;
  for (size_t i = 0; i < n; i++) c += strcmp(m[i].payload, payload) == 0;
  return c;
}

/* The first dead letter creates the default topic; the message keeps its
 * payload, key, event time and property, and gains the original id and
 * topic. */
static void test_dead_letter__creates_topic_and_keeps_properties(void **state) {
  fixture *f = *state;
  assert_int_equal(publish(f, NULL, 3), SL_OK);
  dmsg *m;
  size_t n = read_dlq(f, DLQ, &m);
  assert_int_equal(n, 1);
  assert_string_equal(m[0].payload, "payload-3");
  assert_string_equal(m[0].key, "k1");
  assert_string_equal(m[0].prop, "v3");
  assert_int_equal(m[0].event_time, 1234);
  assert_string_equal(m[0].orig_id, "7:3:0");
  assert_string_equal(m[0].orig_topic, SOURCE);
  free(m);
}

/* Retries, out-of-order dead letters, and the topic moving to another
 * owner between publishes and retries: every dead letter is stored
 * exactly once. */
static void test_dead_letter__retries_are_stored_once(void **state) {
  fixture *f = *state;
  const char *topic = "dl/once-DLQ";
  /* 10, 20, ... 100, then the odd ones below them: out of id order. */
  for (int64_t e = 10; e <= 100; e += 10) assert_int_equal(publish(f, topic, e), SL_OK);
  assert_int_equal(publish(f, topic, 15), SL_OK);
  assert_int_equal(publish(f, topic, 5), SL_OK);
  /* The same dead letters again (a crash before the acks were durable),
   * half of them after the topic moved. */
  for (int64_t e = 10; e <= 50; e += 10) assert_int_equal(publish(f, topic, e), SL_OK);
  sl_pt_unload(&f->t, 0, topic);
  for (int64_t e = 60; e <= 100; e += 10) assert_int_equal(publish(f, topic, e), SL_OK);
  assert_int_equal(publish(f, topic, 15), SL_OK);
  assert_int_equal(publish(f, topic, 5), SL_OK);
  assert_int_equal(publish(f, topic, 100), SL_OK);

  dmsg *m;
  size_t n = read_dlq(f, topic, &m);
  for (int64_t e = 10; e <= 100; e += 10) assert_int_equal(count(m, n, e), 1);
  assert_int_equal(count(m, n, 15), 1);
  assert_int_equal(count(m, n, 5), 1);
  assert_int_equal(n, 12);
  free(m);
}

/* The owner on the other broker: the lookup broker is not the owner, the
 * publish goes there. */
static void test_dead_letter__remote_owner(void **state) {
  fixture *f = *state;
  const char *topic = "dl/remote-DLQ";
  sl_pt_topic(&f->t, topic, 0);
  /* Take ownership on broker 1 (a lookup there picks by load; unload
   * until broker 1 holds it). */
  int64_t deadline = sl_clock_mono_ms() + 20000;
  while (sl_pt_owner(&f->t, 1, topic, NULL) != 1 && sl_clock_mono_ms() < deadline)
    sl_pt_unload(&f->t, 1, topic);
  if (sl_pt_owner(&f->t, 1, topic, NULL) != 1) skip();
  assert_int_equal(publish(f, topic, 1), SL_OK);
  assert_int_equal(publish(f, topic, 1), SL_OK);
  dmsg *m;
  size_t n = read_dlq(f, topic, &m);
  assert_int_equal(n, 1);
  assert_string_equal(m[0].orig_id, "7:1:0");
  free(m);
}

static void test_dead_letter__bad_input(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  char buf[300];
  assert_int_equal(sl_dead_letter_topic("ns/t-partition-3", "s", buf, sizeof(buf), &err), SL_OK);
  assert_string_equal(buf, "ns/t-s-DLQ");
  assert_int_equal(sl_dead_letter_topic("ns/t-partition-x", "s", buf, sizeof(buf), &err), SL_OK);
  assert_string_equal(buf, "ns/t-partition-x-s-DLQ");
  char longsub[300];
  memset(longsub, 'a', sizeof(longsub) - 1);
  longsub[sizeof(longsub) - 1] = '\0';
  assert_int_equal(sl_dead_letter_topic("ns/t", longsub, buf, sizeof(buf), &err), SL_ETOOBIG);
  Sluice__V1__StoredMessage sm = SLUICE__V1__STORED_MESSAGE__INIT;
  sl_dead_letter_msg m = {SOURCE, longsub, NULL, 1, 1, 0, &sm};
  assert_int_equal(sl_dead_letter_publish(f->dl, &m, f->serial, published, NULL, &err),
                   SL_ETOOBIG);
  m.subscription = NULL;
  assert_int_equal(sl_dead_letter_publish(f->dl, &m, f->serial, published, NULL, &err),
                   SL_EINVAL);
  /* A dead-letter topic name the broker refuses: the status, no crash. */
  assert_int_equal(publish(f, "dl/bad name", 1), SL_EINVAL);
  sl_dead_letter_opts o = {NULL, 0};
  sl_dead_letter *dl;
  assert_int_equal(sl_dead_letter_create(&o, &dl, &err), SL_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dead_letter__creates_topic_and_keeps_properties),
      cmocka_unit_test(test_dead_letter__retries_are_stored_once),
      cmocka_unit_test(test_dead_letter__remote_owner),
      cmocka_unit_test(test_dead_letter__bad_input),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
