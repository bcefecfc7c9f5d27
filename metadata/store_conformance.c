/*
 * sl_store conformance cases; see store_conformance.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metadata/store_conformance.h"
#include "common/clock.h"

/* Runs expr (which reports into `err`) and fails the case on a surprise. */
#define EXPECT(want, expr)                                                         \
  do {                                                                             \
    err = (sl_err)SL_ERR_INIT;                                                     \
    sl_status st_ = (expr);                                                        \
    if (st_ != (want))                                                             \
      fail_msg("%s:%d: %s -> %s (%s), want %s", __FILE__, __LINE__, #expr,         \
               sl_status_str(st_), err.msg, sl_status_str(want));                  \
  } while (0)

static const sl_store_conf_backend *backend;
static int case_counter;

void sl_store_conf_set_backend(const sl_store_conf_backend *b) { backend = b; }

int sl_store_conf_setup(void **state) {
  sl_err err = SL_ERR_INIT;
  sl_store_conf *t = calloc(1, sizeof(*t));
  if (t == NULL || backend == NULL) return -1;
  t->prefix_len = (size_t)snprintf(t->prefix, sizeof(t->prefix), "/conf/%d/", ++case_counter);
  sl_status st = backend->open(backend->ctx, &t->store, &err);
  if (st != SL_OK) {
    print_error("open %s store: %s\n", backend->name, sl_err_msg(&err, st));
    free(t);
    return -1;
  }
  *state = t;
  return 0;
}

int sl_store_conf_teardown(void **state) {
  sl_store_conf *t = *state;
  backend->close(backend->ctx, t->store);
  free(t);
  return 0;
}

size_t sl_store_conf_key(const sl_store_conf *t, char *buf, const char *suffix) {
  return (size_t)snprintf(buf, 128, "%s%s", t->prefix, suffix);
}


void sl_store_conf_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- event collector ---- */

void sl_store_conf_events_init(sl_store_conf_events *c) {
  memset(c, 0, sizeof(*c));
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
}

void sl_store_conf_events_release(sl_store_conf_events *c) {
  for (size_t i = 0; i < c->n; i++) sl_store_kv_release(&c->evs[i].kv);
  free(c->evs);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n) {
  uint8_t *q = malloc(n + 1);
  if (n) memcpy(q, p, n);
  q[n] = 0;
  return q;
}

void sl_store_conf_collect(void *arg, const sl_store_event *ev) {
  sl_store_conf_events *c = arg;
  pthread_mutex_lock(&c->mu);
  if (c->n == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 16;
    c->evs = realloc(c->evs, c->cap * sizeof(*c->evs));
  }
  sl_store_event *e = &c->evs[c->n++];
  *e = *ev;
  e->kv.key = dup_bytes(ev->kv.key, ev->kv.key_len);
  e->kv.value = dup_bytes(ev->kv.value, ev->kv.value_len);
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

bool sl_store_conf_wait_events(sl_store_conf_events *c, size_t n, int timeout_ms) {
  long long deadline = sl_clock_mono_ms() + timeout_ms;
  pthread_mutex_lock(&c->mu);
  while (c->n < n && sl_clock_mono_ms() < deadline) {
    pthread_mutex_unlock(&c->mu);
    sl_store_conf_sleep_ms(5);
    pthread_mutex_lock(&c->mu);
  }
  bool ok = c->n >= n;
  pthread_mutex_unlock(&c->mu);
  return ok;
}

size_t sl_store_conf_count(sl_store_conf_events *c) {
  pthread_mutex_lock(&c->mu);
  size_t n = c->n;
  pthread_mutex_unlock(&c->mu);
  return n;
}

/* ---- helpers ---- */

#define KEY(t, buf, suffix) char buf[128]; size_t buf##_len = sl_store_conf_key(t, buf, suffix)

static void check_value(sl_store *s, const char *key, size_t key_len, const char *value,
                         int64_t mod_revision) {
  sl_err err;
  sl_store_kv kv;
  EXPECT(SL_OK, sl_store_get(s, key, key_len, &kv, &err));
  assert_int_equal(kv.value_len, strlen(value));
  assert_memory_equal(kv.value, value, kv.value_len);
  if (mod_revision > 0) assert_int_equal(kv.mod_revision, mod_revision);
  sl_store_kv_release(&kv);
}

static void check_absent(sl_store *s, const char *key, size_t key_len) {
  sl_err err;
  sl_store_kv kv;
  EXPECT(SL_ENOTFOUND, sl_store_get(s, key, key_len, &kv, &err));
}

static void check_event(const sl_store_event *ev, sl_store_event_type type,
                         const char *key, const char *value, int64_t revision) {
  assert_int_equal(ev->type, type);
  assert_int_equal(ev->kv.key_len, strlen(key));
  assert_memory_equal(ev->kv.key, key, ev->kv.key_len);
  if (value != NULL) {
    assert_int_equal(ev->kv.value_len, strlen(value));
    assert_memory_equal(ev->kv.value, value, ev->kv.value_len);
  }
  assert_int_equal(ev->revision, revision);
  assert_int_equal(ev->kv.mod_revision, revision);
}

/* ---- cases: basic reads and writes ---- */

void test_store__get_put_basics(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  sl_store_kv kv;
  KEY(t, a, "a");
  EXPECT(SL_ENOTFOUND, sl_store_get(s, a, a_len, &kv, &err));
  assert_non_null(strstr(err.msg, a));

  int64_t r1 = 0, r2 = 0, now = 0;
  EXPECT(SL_OK, sl_store_create(s, a, a_len, "v1", 2, 0, &r1, &err));
  assert_true(r1 > 0);
  EXPECT(SL_OK, sl_store_get(s, a, a_len, &kv, &err));
  assert_string_equal((char *)kv.value, "v1");
  assert_string_equal((char *)kv.key, a);
  assert_int_equal(kv.create_revision, r1);
  assert_int_equal(kv.mod_revision, r1);
  assert_int_equal(kv.lease, 0);
  sl_store_kv_release(&kv);

  EXPECT(SL_OK, sl_store_put(s, a, a_len, "v2", 2, SL_STORE_REV_ANY, 0, &r2, &err));
  assert_true(r2 > r1);
  EXPECT(SL_OK, sl_store_get(s, a, a_len, &kv, &err));
  assert_int_equal(kv.create_revision, r1);
  assert_int_equal(kv.mod_revision, r2);
  sl_store_kv_release(&kv);
  EXPECT(SL_OK, sl_store_revision(s, &now, &err));
  assert_true(now >= r2);

  /* Keys and values are bytes: NULs, 0xff, empty values. */
  char bkey[128];
  size_t bkey_len = sl_store_conf_key(t, bkey, "b");
  memcpy(bkey + bkey_len, "\0\xff\x01", 3);
  bkey_len += 3;
  uint8_t value[3000];
  for (size_t i = 0; i < sizeof(value); i++) value[i] = (uint8_t)(i * 7);
  EXPECT(SL_OK, sl_store_put(s, bkey, bkey_len, value, sizeof(value), SL_STORE_REV_ANY, 0,
                             NULL, &err));
  EXPECT(SL_OK, sl_store_get(s, bkey, bkey_len, &kv, &err));
  assert_int_equal(kv.key_len, bkey_len);
  assert_memory_equal(kv.key, bkey, bkey_len);
  assert_int_equal(kv.value_len, sizeof(value));
  assert_memory_equal(kv.value, value, sizeof(value));
  sl_store_kv_release(&kv);
  EXPECT(SL_OK, sl_store_put(s, bkey, bkey_len, "", 0, SL_STORE_REV_ANY, 0, NULL, &err));
  EXPECT(SL_OK, sl_store_get(s, bkey, bkey_len, &kv, &err));
  assert_int_equal(kv.value_len, 0);
  assert_int_equal(kv.value[0], 0);
  sl_store_kv_release(&kv);
  sl_store_kv_release(NULL);
}

void test_store__create_if_absent(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  KEY(t, a, "a");
  int64_t r1 = 0;
  EXPECT(SL_OK, sl_store_create(s, a, a_len, "first", 5, 0, &r1, &err));
  EXPECT(SL_EEXIST, sl_store_create(s, a, a_len, "second", 6, 0, NULL, &err));
  assert_non_null(strstr(err.msg, a));
  assert_non_null(strstr(err.msg, "already exists"));
  EXPECT(SL_EEXIST, sl_store_put(s, a, a_len, "third", 5, SL_STORE_REV_ABSENT, 0, NULL, &err));
  check_value(s, a, a_len, "first", r1);
}

void test_store__cas_semantics(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  KEY(t, a, "a");
  KEY(t, missing, "missing");
  int64_t r1, r2, r3;
  EXPECT(SL_OK, sl_store_create(s, a, a_len, "1", 1, 0, &r1, &err));
  EXPECT(SL_OK, sl_store_put(s, a, a_len, "2", 1, r1, 0, &r2, &err));
  EXPECT(SL_EVERSION, sl_store_put(s, a, a_len, "x", 1, r1, 0, NULL, &err));
  char want[64];
  snprintf(want, sizeof(want), "mod revision is %" PRId64 ", expected %" PRId64, r2, r1);
  assert_non_null(strstr(err.msg, want));
  assert_non_null(strstr(err.msg, a));
  EXPECT(SL_OK, sl_store_put(s, a, a_len, "3", 1, r2, 0, &r3, &err));
  assert_true(r3 > r2);
  check_value(s, a, a_len, "3", r3);
  EXPECT(SL_ENOTFOUND, sl_store_put(s, missing, missing_len, "x", 1, r3, 0, NULL, &err));
  assert_non_null(strstr(err.msg, missing));
  check_absent(s, missing, missing_len);
}

/* ---- cases: concurrent compare-and-swap ---- */

#define RACERS 4
#define ROUNDS 10

typedef struct race {
  sl_store *s;
  const char *key;
  size_t key_len;
  pthread_barrier_t start, end;
  int64_t expected; /* the version every racer CASes against this round */
  sl_status result[RACERS];
  int rounds;
} race;

typedef struct racer {
  race *r;
  int id;
} racer;

static void *race_main(void *arg) {
  racer *me = arg;
  race *r = me->r;
  for (int round = 0; round < r->rounds; round++) {
    pthread_barrier_wait(&r->start);
    char v[32];
    int n = snprintf(v, sizeof(v), "r%d-t%d", round, me->id);
    r->result[me->id] = sl_store_put(r->s, r->key, r->key_len, v, (size_t)n, r->expected,
                                     0, NULL, NULL);
    pthread_barrier_wait(&r->end);
  }
  return NULL;
}

void test_store__cas_one_winner_per_version(void **state) {
  sl_store_conf *t = *state;
  sl_err err;
  KEY(t, a, "counter");
  race r = {.s = t->store, .key = a, .key_len = a_len, .rounds = ROUNDS};
  EXPECT(SL_OK, sl_store_create(t->store, a, a_len, "init", 4, 0, &r.expected, &err));
  pthread_barrier_init(&r.start, NULL, RACERS + 1);
  pthread_barrier_init(&r.end, NULL, RACERS + 1);
  pthread_t th[RACERS];
  racer rs[RACERS];
  for (int i = 0; i < RACERS; i++) {
    rs[i] = (racer){&r, i};
    assert_int_equal(pthread_create(&th[i], NULL, race_main, &rs[i]), 0);
  }
  for (int round = 0; round < ROUNDS; round++) {
    pthread_barrier_wait(&r.start); /* all racers hold the same version */
    pthread_barrier_wait(&r.end);
    int winners = 0, winner = -1;
    for (int i = 0; i < RACERS; i++) {
      if (r.result[i] == SL_OK) {
        winners++;
        winner = i;
      } else if (r.result[i] != SL_EVERSION) {
        fail_msg("round %d racer %d: %s", round, i, sl_status_str(r.result[i]));
      }
    }
    assert_int_equal(winners, 1);
    sl_store_kv kv;
    EXPECT(SL_OK, sl_store_get(t->store, a, a_len, &kv, &err));
    char want[32];
    snprintf(want, sizeof(want), "r%d-t%d", round, winner);
    assert_string_equal((char *)kv.value, want);
    assert_true(kv.mod_revision > r.expected);
    r.expected = kv.mod_revision;
    sl_store_kv_release(&kv);
  }
  for (int i = 0; i < RACERS; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&r.start);
  pthread_barrier_destroy(&r.end);
}

#define INCREMENTS 25

typedef struct counter_run {
  sl_store *s;
  const char *key;
  size_t key_len;
  pthread_mutex_t mu; /* guards wins, n_wins, failures */
  int64_t wins[RACERS * INCREMENTS]; /* the version each successful CAS replaced */
  int n_wins;
  int failures;
} counter_run;

static void *increment_main(void *arg) {
  counter_run *c = arg;
  int done = 0;
  while (done < INCREMENTS) {
    sl_store_kv kv;
    if (sl_store_get(c->s, c->key, c->key_len, &kv, NULL) != SL_OK) goto out_fail;
    long long n = strtoll((char *)kv.value, NULL, 10);
    int64_t seen = kv.mod_revision;
    sl_store_kv_release(&kv);
    char v[32];
    int len = snprintf(v, sizeof(v), "%lld", n + 1);
    sl_status st = sl_store_put(c->s, c->key, c->key_len, v, (size_t)len, seen, 0, NULL, NULL);
    if (st == SL_EVERSION) continue;
    if (st != SL_OK) goto out_fail;
    pthread_mutex_lock(&c->mu);
    c->wins[c->n_wins++] = seen;
    pthread_mutex_unlock(&c->mu);
    done++;
  }
  return NULL;
out_fail:
  pthread_mutex_lock(&c->mu);
  c->failures++;
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

void test_store__cas_no_lost_updates(void **state) {
  sl_store_conf *t = *state;
  sl_err err;
  KEY(t, a, "counter");
  counter_run c = {.s = t->store, .key = a, .key_len = a_len};
  pthread_mutex_init(&c.mu, NULL);
  EXPECT(SL_OK, sl_store_create(t->store, a, a_len, "0", 1, 0, NULL, &err));
  pthread_t th[RACERS];
  for (int i = 0; i < RACERS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, increment_main, &c), 0);
  for (int i = 0; i < RACERS; i++) pthread_join(th[i], NULL);
  assert_int_equal(c.failures, 0);
  assert_int_equal(c.n_wins, RACERS * INCREMENTS);
  /* No version was won twice. */
  for (int i = 0; i < c.n_wins; i++)
    for (int j = i + 1; j < c.n_wins; j++) assert_true(c.wins[i] != c.wins[j]);
  char want[16];
  snprintf(want, sizeof(want), "%d", RACERS * INCREMENTS);
  check_value(t->store, a, a_len, want, 0);
  pthread_mutex_destroy(&c.mu);
}

void test_store__delete_with_version(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  KEY(t, a, "a");
  int64_t r1, rd;
  EXPECT(SL_ENOTFOUND, sl_store_delete(s, a, a_len, SL_STORE_REV_ANY, NULL, &err));
  assert_non_null(strstr(err.msg, a));
  EXPECT(SL_OK, sl_store_create(s, a, a_len, "1", 1, 0, &r1, &err));
  EXPECT(SL_EVERSION, sl_store_delete(s, a, a_len, r1 + 100, NULL, &err));
  assert_non_null(strstr(err.msg, a));
  EXPECT(SL_EINVAL, sl_store_delete(s, a, a_len, 0, NULL, &err));
  check_value(s, a, a_len, "1", r1);
  EXPECT(SL_OK, sl_store_delete(s, a, a_len, r1, &rd, &err));
  assert_true(rd > r1);
  check_absent(s, a, a_len);
  EXPECT(SL_ENOTFOUND, sl_store_delete(s, a, a_len, r1, NULL, &err));
  EXPECT(SL_OK, sl_store_create(s, a, a_len, "2", 1, 0, NULL, &err));
  EXPECT(SL_OK, sl_store_delete(s, a, a_len, SL_STORE_REV_ANY, NULL, &err));
  check_absent(s, a, a_len);
}

/* ---- cases: transactions ---- */

void test_store__txn_atomicity(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  KEY(t, x, "x");
  KEY(t, y, "y");
  KEY(t, z, "z");
  int64_t rx, ry, rt, before, after;
  EXPECT(SL_OK, sl_store_create(s, x, x_len, "x1", 2, 0, &rx, &err));
  EXPECT(SL_OK, sl_store_create(s, y, y_len, "y1", 2, 0, &ry, &err));

  /* Second compare fails: nothing applies, and the message names y. */
  sl_store_cmp bad[] = {{x, x_len, rx}, {y, y_len, ry + 999}};
  sl_store_op ops1[] = {{SL_STORE_OP_PUT, x, x_len, "x2", 2, 0},
                        {SL_STORE_OP_PUT, z, z_len, "z1", 2, 0}};
  EXPECT(SL_EVERSION, sl_store_txn(s, bad, 2, ops1, 2, NULL, &err));
  assert_non_null(strstr(err.msg, y));
  check_value(s, x, x_len, "x1", rx);
  check_absent(s, z, z_len);

  /* All hold: put, delete and put land at one revision. */
  sl_store_cmp good[] = {{x, x_len, rx}, {y, y_len, ry}, {z, z_len, SL_STORE_REV_ABSENT}};
  sl_store_op ops2[] = {{SL_STORE_OP_PUT, x, x_len, "x2", 2, 0},
                        {SL_STORE_OP_DELETE, y, y_len, NULL, 0, 0},
                        {SL_STORE_OP_PUT, z, z_len, "z1", 2, 0}};
  EXPECT(SL_OK, sl_store_txn(s, good, 3, ops2, 3, &rt, &err));
  assert_true(rt > ry);
  check_value(s, x, x_len, "x2", rt);
  check_absent(s, y, y_len);
  check_value(s, z, z_len, "z1", rt);

  /* EXISTS on a missing key fails. */
  sl_store_cmp exists[] = {{y, y_len, SL_STORE_REV_EXISTS}};
  EXPECT(SL_EVERSION, sl_store_txn(s, exists, 1, ops1, 1, NULL, &err));
  assert_non_null(strstr(err.msg, y));

  /* A put bound to a missing lease fails the whole txn. */
  sl_store_op leased[] = {{SL_STORE_OP_PUT, x, x_len, "x3", 2, 0},
                          {SL_STORE_OP_PUT, y, y_len, "y3", 2, 987654321}};
  EXPECT(SL_ENOTFOUND, sl_store_txn(s, NULL, 0, leased, 2, NULL, &err));
  check_value(s, x, x_len, "x2", rt);
  check_absent(s, y, y_len);

  /* Deleting a missing key changes nothing and keeps the revision. */
  sl_store_op noop[] = {{SL_STORE_OP_DELETE, y, y_len, NULL, 0, 0}};
  EXPECT(SL_OK, sl_store_revision(s, &before, &err));
  EXPECT(SL_OK, sl_store_txn(s, NULL, 0, noop, 1, &after, &err));
  assert_int_equal(after, before);

  /* Bad shapes. */
  sl_store_op dup[] = {{SL_STORE_OP_PUT, x, x_len, "a", 1, 0},
                       {SL_STORE_OP_DELETE, x, x_len, NULL, 0, 0}};
  EXPECT(SL_EINVAL, sl_store_txn(s, NULL, 0, dup, 2, NULL, &err));
  assert_non_null(strstr(err.msg, "two ops"));
  sl_store_op many[SL_STORE_TXN_MAX + 1];
  for (int i = 0; i <= SL_STORE_TXN_MAX; i++) many[i] = ops1[0];
  EXPECT(SL_EINVAL, sl_store_txn(s, NULL, 0, many, SL_STORE_TXN_MAX + 1, NULL, &err));
  sl_store_cmp anycmp[] = {{x, x_len, SL_STORE_REV_ANY}};
  EXPECT(SL_EINVAL, sl_store_txn(s, anycmp, 1, NULL, 0, NULL, &err));
  check_value(s, x, x_len, "x2", rt);
}

void test_store__txn_takes_ownership(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  KEY(t, owner, "owners/public/orders-partition-0");
  KEY(t, epoch, "epochs/public/orders-partition-0");
  int64_t lease_a, lease_b, ttl, erev, rt;
  EXPECT(SL_OK, sl_store_lease_grant(s, 30, &lease_a, &ttl, &err));
  EXPECT(SL_OK, sl_store_lease_grant(s, 30, &lease_b, &ttl, &err));
  assert_true(lease_a != lease_b);
  EXPECT(SL_OK, sl_store_create(s, epoch, epoch_len, "0", 1, 0, &erev, &err));

  /* Broker A takes ownership: owner absent + epoch unchanged. */
  sl_store_cmp cmps[] = {{owner, owner_len, SL_STORE_REV_ABSENT}, {epoch, epoch_len, erev}};
  sl_store_op a_ops[] = {{SL_STORE_OP_PUT, owner, owner_len, "broker-a", 8, lease_a},
                         {SL_STORE_OP_PUT, epoch, epoch_len, "1", 1, 0}};
  EXPECT(SL_OK, sl_store_txn(s, cmps, 2, a_ops, 2, &rt, &err));
  /* Broker B tries with the same view and loses. */
  sl_store_op b_ops[] = {{SL_STORE_OP_PUT, owner, owner_len, "broker-b", 8, lease_b},
                         {SL_STORE_OP_PUT, epoch, epoch_len, "1", 1, 0}};
  EXPECT(SL_EVERSION, sl_store_txn(s, cmps, 2, b_ops, 2, NULL, &err));
  assert_non_null(strstr(err.msg, owner));

  sl_store_kv kv;
  EXPECT(SL_OK, sl_store_get(s, owner, owner_len, &kv, &err));
  assert_string_equal((char *)kv.value, "broker-a");
  assert_int_equal(kv.lease, lease_a);
  assert_int_equal(kv.mod_revision, rt);
  sl_store_kv_release(&kv);
  check_value(s, epoch, epoch_len, "1", rt);

  /* A's session ends: ownership frees up, the epoch stays. */
  EXPECT(SL_OK, sl_store_lease_revoke(s, lease_a, &err));
  check_absent(s, owner, owner_len);
  check_value(s, epoch, epoch_len, "1", rt);
  cmps[1].mod_revision = rt;
  b_ops[1].value = "2";
  EXPECT(SL_OK, sl_store_txn(s, cmps, 2, b_ops, 2, NULL, &err));
  check_value(s, owner, owner_len, "broker-b", 0);
  EXPECT(SL_OK, sl_store_lease_revoke(s, lease_b, &err));
}

/* ---- cases: range ---- */

static void check_keys(const sl_store_range_result *r, const sl_store_conf *t,
                        const char *const *suffixes, size_t n) {
  assert_int_equal(r->n, n);
  for (size_t i = 0; i < n; i++) {
    char k[128];
    size_t len = sl_store_conf_key(t, k, suffixes[i]);
    assert_int_equal(r->kvs[i].key_len, len);
    assert_memory_equal(r->kvs[i].key, k, len);
  }
}

void test_store__range_prefix_limit_paging(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  const char *keys[] = {"a/3", "a/1", "b/1", "a/5", "ab/1", "a/2", "a/4"};
  int64_t last = 0;
  for (size_t i = 0; i < 7; i++) {
    KEY(t, k, keys[i]);
    EXPECT(SL_OK, sl_store_put(s, k, k_len, keys[i], strlen(keys[i]), SL_STORE_REV_ANY, 0,
                               &last, &err));
  }
  sl_store_range_result r;
  KEY(t, pa, "a/");
  EXPECT(SL_OK, sl_store_range(s, pa, pa_len, NULL, 0, 0, &r, &err));
  const char *a_all[] = {"a/1", "a/2", "a/3", "a/4", "a/5"};
  check_keys(&r, t, a_all, 5);
  assert_false(r.more);
  assert_true(r.revision >= last);
  assert_string_equal((char *)r.kvs[2].value, "a/3");
  sl_store_range_result_release(&r);

  /* Pages of two: start after the last key seen. */
  EXPECT(SL_OK, sl_store_range(s, pa, pa_len, NULL, 0, 2, &r, &err));
  check_keys(&r, t, a_all, 2);
  assert_true(r.more);
  char start[130];
  memcpy(start, r.kvs[1].key, r.kvs[1].key_len);
  size_t start_len = r.kvs[1].key_len + 1;
  start[start_len - 1] = '\0';
  sl_store_range_result_release(&r);
  EXPECT(SL_OK, sl_store_range(s, pa, pa_len, start, start_len, 2, &r, &err));
  check_keys(&r, t, a_all + 2, 2);
  assert_true(r.more);
  memcpy(start, r.kvs[1].key, r.kvs[1].key_len);
  start_len = r.kvs[1].key_len + 1;
  start[start_len - 1] = '\0';
  sl_store_range_result_release(&r);
  EXPECT(SL_OK, sl_store_range(s, pa, pa_len, start, start_len, 2, &r, &err));
  check_keys(&r, t, a_all + 4, 1);
  assert_false(r.more);
  sl_store_range_result_release(&r);

  /* "a" covers a/ and ab/; the whole case prefix covers all seven. */
  KEY(t, pa2, "a");
  EXPECT(SL_OK, sl_store_range(s, pa2, pa2_len, NULL, 0, 0, &r, &err));
  const char *a_ab[] = {"a/1", "a/2", "a/3", "a/4", "a/5", "ab/1"};
  check_keys(&r, t, a_ab, 6);
  sl_store_range_result_release(&r);
  EXPECT(SL_OK, sl_store_range(s, t->prefix, t->prefix_len, NULL, 0, 0, &r, &err));
  assert_int_equal(r.n, 7);
  sl_store_range_result_release(&r);
  EXPECT(SL_OK, sl_store_range(s, t->prefix, t->prefix_len, NULL, 0, 7, &r, &err));
  assert_int_equal(r.n, 7);
  assert_false(r.more);
  sl_store_range_result_release(&r);

  /* Prefixes ending in 0xff bytes. */
  char f1[128], f2[128];
  size_t f1_len = sl_store_conf_key(t, f1, "\xff\xff");
  size_t f2_len = sl_store_conf_key(t, f2, "\xff\xff\x01");
  EXPECT(SL_OK, sl_store_put(s, f1, f1_len, "1", 1, SL_STORE_REV_ANY, 0, NULL, &err));
  EXPECT(SL_OK, sl_store_put(s, f2, f2_len, "2", 1, SL_STORE_REV_ANY, 0, NULL, &err));
  EXPECT(SL_OK, sl_store_range(s, f1, f1_len - 1, NULL, 0, 0, &r, &err));
  assert_int_equal(r.n, 2);
  sl_store_range_result_release(&r);
  EXPECT(SL_OK, sl_store_range(s, f1, f1_len, NULL, 0, 0, &r, &err));
  assert_int_equal(r.n, 2);
  sl_store_range_result_release(&r);

  KEY(t, none, "zzz");
  EXPECT(SL_OK, sl_store_range(s, none, none_len, NULL, 0, 0, &r, &err));
  assert_int_equal(r.n, 0);
  assert_false(r.more);
  sl_store_range_result_release(&r);
  KEY(t, outside, "b/1");
  EXPECT(SL_EINVAL, sl_store_range(s, pa, pa_len, outside, outside_len, 0, &r, &err));
  assert_non_null(strstr(err.msg, "outside the prefix"));
}

void test_store__input_validation(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  sl_store_kv kv;
  KEY(t, a, "a");
  EXPECT(SL_EINVAL, sl_store_get(s, "", 0, &kv, &err));
  EXPECT(SL_EINVAL, sl_store_get(s, NULL, 0, &kv, &err));
  char *big = calloc(1, SL_STORE_MAX_VALUE + 1);
  memcpy(big, a, a_len);
  EXPECT(SL_EINVAL, sl_store_put(s, big, SL_STORE_MAX_KEY + 1, "v", 1, SL_STORE_REV_ANY, 0,
                                 NULL, &err));
  assert_non_null(strstr(err.msg, a));
  EXPECT(SL_ETOOBIG, sl_store_put(s, a, a_len, big, SL_STORE_MAX_VALUE + 1, SL_STORE_REV_ANY,
                                  0, NULL, &err));
  assert_non_null(strstr(err.msg, a));
  /* The largest value passes on every backend. */
  EXPECT(SL_OK, sl_store_put(s, a, a_len, big, SL_STORE_MAX_VALUE, SL_STORE_REV_ANY, 0,
                             NULL, &err));
  free(big);
  EXPECT(SL_EINVAL, sl_store_put(s, a, a_len, NULL, 5, SL_STORE_REV_ANY, 0, NULL, &err));
  EXPECT(SL_EINVAL, sl_store_put(s, a, a_len, "v", 1, -7, 0, NULL, &err));
  EXPECT(SL_EINVAL, sl_store_put(s, a, a_len, "v", 1, SL_STORE_REV_ANY, -3, NULL, &err));
  EXPECT(SL_EINVAL, sl_store_delete(s, a, a_len, -5, NULL, &err));
  EXPECT(SL_EINVAL, sl_store_lease_grant(s, 0, &kv.lease, NULL, &err));
  EXPECT(SL_EINVAL, sl_store_lease_keepalive(s, 0, NULL, &err));
  EXPECT(SL_EINVAL, sl_store_lease_revoke(s, -1, &err));
  EXPECT(SL_EINVAL, sl_store_compact(s, 0, &err));
  sl_store_watch *w = NULL;
  EXPECT(SL_EINVAL, sl_store_watch_start(s, a, a_len, 0, NULL, NULL, &w, &err));
  EXPECT(SL_EINVAL, sl_store_watch_start(s, a, a_len, -1, sl_store_conf_collect, NULL, &w,
                                         &err));
  assert_null(w);
  sl_store_op bad_op[] = {{(sl_store_op_type)42, a, a_len, NULL, 0, 0}};
  EXPECT(SL_EINVAL, sl_store_txn(s, NULL, 0, bad_op, 1, NULL, &err));
  sl_store_op empty_key[] = {{SL_STORE_OP_PUT, a, 0, "v", 1, 0}};
  EXPECT(SL_EINVAL, sl_store_txn(s, NULL, 0, empty_key, 1, NULL, &err));
  assert_non_null(strstr(err.msg, "txn op 0"));
}

/* ---- cases: leases ---- */

void test_store__lease_keepalive_and_expiry(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  KEY(t, a, "session");
  KEY(t, plain, "plain");
  int64_t lease = 0, ttl = 0, left = 0;
  EXPECT(SL_OK, sl_store_lease_grant(s, 1, &lease, &ttl, &err));
  assert_true(lease != 0);
  assert_true(ttl >= 2); /* raised to the minimum */
  EXPECT(SL_OK, sl_store_put(s, a, a_len, "alive", 5, SL_STORE_REV_ANY, lease, NULL, &err));
  EXPECT(SL_OK, sl_store_put(s, plain, plain_len, "p", 1, SL_STORE_REV_ANY, 0, NULL, &err));
  sl_store_kv kv;
  EXPECT(SL_OK, sl_store_get(s, a, a_len, &kv, &err));
  assert_int_equal(kv.lease, lease);
  sl_store_kv_release(&kv);

  /* Keepalives every 500 ms hold the key well past its TTL. */
  long long last_ka = 0;
  long long until = sl_clock_mono_ms() + ttl * 1000 + 1500;
  while (sl_clock_mono_ms() < until) {
    EXPECT(SL_OK, sl_store_lease_keepalive(s, lease, &left, &err));
    last_ka = sl_clock_mono_ms();
    assert_int_equal(left, ttl);
    check_value(s, a, a_len, "alive", 0);
    sl_store_conf_sleep_ms(500);
  }
  /* Then it goes, within TTL + 1 s of the last keepalive, and not early. */
  long long gone_at = 0;
  while (gone_at == 0 && sl_clock_mono_ms() < last_ka + ttl * 1000 + 3000) {
    sl_status st = sl_store_get(s, a, a_len, &kv, &err);
    if (st == SL_ENOTFOUND) {
      gone_at = sl_clock_mono_ms();
    } else {
      assert_int_equal(st, SL_OK);
      sl_store_kv_release(&kv);
      sl_store_conf_sleep_ms(20);
    }
  }
  assert_true(gone_at != 0);
  long long after = gone_at - last_ka;
  if (after > ttl * 1000 + 1000 || after < ttl * 1000 - 600)
    fail_msg("key vanished %lld ms after the last keepalive, ttl %" PRId64 " s", after, ttl);
  EXPECT(SL_ENOTFOUND, sl_store_lease_keepalive(s, lease, NULL, &err));
  EXPECT(SL_ENOTFOUND, sl_store_put(s, a, a_len, "x", 1, SL_STORE_REV_ANY, lease, NULL, &err));
  check_value(s, plain, plain_len, "p", 0);
}

void test_store__lease_revoke(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  KEY(t, k1, "k1");
  KEY(t, k2, "k2");
  KEY(t, k3, "k3");
  int64_t lease, lease2, ttl, before, after;
  EXPECT(SL_OK, sl_store_lease_grant(s, 60, &lease, &ttl, &err));
  assert_int_equal(ttl, 60);
  EXPECT(SL_OK, sl_store_lease_grant(s, 60, &lease2, NULL, &err));
  EXPECT(SL_OK, sl_store_put(s, k1, k1_len, "1", 1, SL_STORE_REV_ANY, lease, NULL, &err));
  EXPECT(SL_OK, sl_store_put(s, k2, k2_len, "2", 1, SL_STORE_REV_ANY, lease, NULL, &err));
  /* k3 is moved off lease2 by a later put without a lease. */
  EXPECT(SL_OK, sl_store_put(s, k3, k3_len, "3", 1, SL_STORE_REV_ANY, lease2, NULL, &err));
  EXPECT(SL_OK, sl_store_put(s, k3, k3_len, "3", 1, SL_STORE_REV_ANY, 0, NULL, &err));
  EXPECT(SL_OK, sl_store_revision(s, &before, &err));
  EXPECT(SL_OK, sl_store_lease_revoke(s, lease, &err));
  EXPECT(SL_OK, sl_store_revision(s, &after, &err));
  assert_int_equal(after, before + 1); /* both keys went in one revision */
  check_absent(s, k1, k1_len);
  check_absent(s, k2, k2_len);
  EXPECT(SL_OK, sl_store_lease_revoke(s, lease2, &err));
  check_value(s, k3, k3_len, "3", 0);
  EXPECT(SL_ENOTFOUND, sl_store_lease_revoke(s, lease, &err));
  assert_non_null(strstr(err.msg, "lease"));
  EXPECT(SL_ENOTFOUND, sl_store_lease_keepalive(s, lease, NULL, &err));
  EXPECT(SL_ENOTFOUND, sl_store_lease_keepalive(s, 123456789, NULL, &err));
}

/* ---- cases: watches ---- */

void test_store__watch_in_order(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  KEY(t, pw, "w/");
  KEY(t, a, "w/a");
  KEY(t, b, "w/b");
  KEY(t, c, "w/c");
  KEY(t, x, "x");
  sl_store_conf_events ev;
  sl_store_conf_events_init(&ev);
  sl_store_watch *w = NULL;
  EXPECT(SL_OK, sl_store_watch_start(s, pw, pw_len, 0, sl_store_conf_collect, &ev, &w, &err));
  int64_t r1, r2, r3, r4, r5;
  EXPECT(SL_OK, sl_store_put(s, a, a_len, "1", 1, SL_STORE_REV_ANY, 0, &r1, &err));
  EXPECT(SL_OK, sl_store_put(s, b, b_len, "2", 1, SL_STORE_REV_ANY, 0, &r2, &err));
  sl_store_op ops[] = {{SL_STORE_OP_PUT, c, c_len, "3", 1, 0},
                       {SL_STORE_OP_DELETE, a, a_len, NULL, 0, 0}};
  EXPECT(SL_OK, sl_store_txn(s, NULL, 0, ops, 2, &r3, &err));
  EXPECT(SL_OK, sl_store_delete(s, b, b_len, SL_STORE_REV_ANY, &r4, &err));
  EXPECT(SL_OK, sl_store_put(s, x, x_len, "outside", 7, SL_STORE_REV_ANY, 0, NULL, &err));
  EXPECT(SL_OK, sl_store_put(s, a, a_len, "5", 1, SL_STORE_REV_ANY, 0, &r5, &err));
  assert_true(sl_store_conf_wait_events(&ev, 6, 10000));
  sl_store_watch_stop(w);
  assert_int_equal(ev.n, 6);
  check_event(&ev.evs[0], SL_STORE_EVENT_PUT, a, "1", r1);
  assert_int_equal(ev.evs[0].kv.create_revision, r1);
  assert_true(ev.evs[0].last_in_revision);
  check_event(&ev.evs[1], SL_STORE_EVENT_PUT, b, "2", r2);
  check_event(&ev.evs[2], SL_STORE_EVENT_PUT, c, "3", r3);
  assert_false(ev.evs[2].last_in_revision);
  check_event(&ev.evs[3], SL_STORE_EVENT_DELETE, a, NULL, r3);
  assert_true(ev.evs[3].last_in_revision);
  check_event(&ev.evs[4], SL_STORE_EVENT_DELETE, b, NULL, r4);
  check_event(&ev.evs[5], SL_STORE_EVENT_PUT, a, "5", r5);
  assert_int_equal(ev.evs[5].kv.create_revision, r5);
  sl_store_conf_events_release(&ev);
  sl_store_watch_stop(NULL);
}

void test_store__watch_from_past_and_now(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  KEY(t, pw, "w/");
  int64_t rev[4];
  for (int i = 0; i < 3; i++) {
    char suffix[16];
    snprintf(suffix, sizeof(suffix), "w/%d", i);
    KEY(t, k, suffix);
    EXPECT(SL_OK, sl_store_put(s, k, k_len, suffix, strlen(suffix), SL_STORE_REV_ANY, 0,
                               &rev[i], &err));
  }
  sl_store_conf_events past, now;
  sl_store_conf_events_init(&past);
  sl_store_conf_events_init(&now);
  sl_store_watch *wp = NULL, *wn = NULL;
  EXPECT(SL_OK, sl_store_watch_start(s, pw, pw_len, rev[1], sl_store_conf_collect, &past,
                                     &wp, &err));
  EXPECT(SL_OK, sl_store_watch_start(s, pw, pw_len, 0, sl_store_conf_collect, &now, &wn,
                                     &err));
  KEY(t, k3, "w/3");
  EXPECT(SL_OK, sl_store_put(s, k3, k3_len, "w/3", 3, SL_STORE_REV_ANY, 0, &rev[3], &err));
  assert_true(sl_store_conf_wait_events(&past, 3, 10000));
  assert_true(sl_store_conf_wait_events(&now, 1, 10000));
  sl_store_watch_stop(wp);
  sl_store_watch_stop(wn);
  assert_int_equal(past.n, 3);
  for (int i = 0; i < 3; i++) {
    char k[128];
    char suffix[16];
    snprintf(suffix, sizeof(suffix), "w/%d", i + 1);
    sl_store_conf_key(t, k, suffix);
    check_event(&past.evs[i], SL_STORE_EVENT_PUT, k, suffix, rev[i + 1]);
  }
  assert_int_equal(now.n, 1);
  check_event(&now.evs[0], SL_STORE_EVENT_PUT, k3, "w/3", rev[3]);
  sl_store_conf_events_release(&past);
  sl_store_conf_events_release(&now);
}

void test_store__watch_sees_lease_expiry(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  KEY(t, a, "eph");
  int64_t lease, ttl, rput;
  EXPECT(SL_OK, sl_store_lease_grant(s, 2, &lease, &ttl, &err));
  EXPECT(SL_OK, sl_store_put(s, a, a_len, "e", 1, SL_STORE_REV_ANY, lease, &rput, &err));
  sl_store_conf_events ev;
  sl_store_conf_events_init(&ev);
  sl_store_watch *w = NULL;
  EXPECT(SL_OK, sl_store_watch_start(s, a, a_len, rput, sl_store_conf_collect, &ev, &w, &err));
  assert_true(sl_store_conf_wait_events(&ev, 2, (int)ttl * 1000 + 3000));
  sl_store_watch_stop(w);
  check_event(&ev.evs[0], SL_STORE_EVENT_PUT, a, "e", rput);
  assert_int_equal(ev.evs[0].kv.lease, lease);
  assert_int_equal(ev.evs[1].type, SL_STORE_EVENT_DELETE);
  assert_true(ev.evs[1].revision > rput);
  sl_store_conf_events_release(&ev);
}

void test_store__compaction(void **state) {
  sl_store_conf *t = *state;
  sl_store *s = t->store;
  sl_err err;
  KEY(t, a, "c");
  int64_t r[3];
  for (int i = 0; i < 3; i++) {
    char v[2] = {(char)('0' + i), 0};
    EXPECT(SL_OK, sl_store_put(s, a, a_len, v, 1, SL_STORE_REV_ANY, 0, &r[i], &err));
  }
  EXPECT(SL_OK, sl_store_compact(s, r[2], &err));
  EXPECT(SL_ERANGE, sl_store_compact(s, r[2], &err));
  EXPECT(SL_ERANGE, sl_store_compact(s, r[2] + 1000000, &err));

  /* From before the compaction: one COMPACTED event, then nothing. */
  sl_store_conf_events old;
  sl_store_conf_events_init(&old);
  sl_store_watch *w = NULL;
  EXPECT(SL_OK, sl_store_watch_start(s, a, a_len, r[0], sl_store_conf_collect, &old, &w,
                                     &err));
  assert_true(sl_store_conf_wait_events(&old, 1, 10000));
  sl_store_watch_stop(w);
  assert_int_equal(old.n, 1);
  assert_int_equal(old.evs[0].type, SL_STORE_EVENT_COMPACTED);
  assert_int_equal(old.evs[0].compact_revision, r[2]);
  sl_store_conf_events_release(&old);

  /* From the compaction point itself history is still there. */
  sl_store_conf_events at;
  sl_store_conf_events_init(&at);
  EXPECT(SL_OK, sl_store_watch_start(s, a, a_len, r[2], sl_store_conf_collect, &at, &w,
                                     &err));
  assert_true(sl_store_conf_wait_events(&at, 1, 10000));
  sl_store_watch_stop(w);
  check_event(&at.evs[0], SL_STORE_EVENT_PUT, a, "2", r[2]);
  sl_store_conf_events_release(&at);

  /* The caller's recovery: re-read, then watch from the read's revision + 1. */
  sl_store_range_result rr;
  EXPECT(SL_OK, sl_store_range(s, a, a_len, NULL, 0, 0, &rr, &err));
  assert_int_equal(rr.n, 1);
  int64_t from = rr.revision + 1;
  sl_store_range_result_release(&rr);
  sl_store_conf_events fresh;
  sl_store_conf_events_init(&fresh);
  EXPECT(SL_OK, sl_store_watch_start(s, a, a_len, from, sl_store_conf_collect, &fresh, &w,
                                     &err));
  int64_t r4;
  EXPECT(SL_OK, sl_store_put(s, a, a_len, "4", 1, SL_STORE_REV_ANY, 0, &r4, &err));
  assert_true(sl_store_conf_wait_events(&fresh, 1, 10000));
  sl_store_watch_stop(w);
  check_event(&fresh.evs[0], SL_STORE_EVENT_PUT, a, "4", r4);
  sl_store_conf_events_release(&fresh);
}
