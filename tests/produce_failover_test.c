/*
 * Produce through failures on a real cluster (etcd, 2 metadata replicas, 4
 * bookies, 2 brokers): a bookie of the ensemble killed (-9) or stopped
 * (SIGSTOP) mid-stream, and the owner broker killed (-9). Publishing goes
 * on, every acked message is in the log afterwards, acked ids strictly
 * increase, and with dedup on nothing is stored twice.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/clock.h"
#include "tests/ledger_testlib.h"
#include "tests/produce_testlib.h"

#define BATCH 10
#define MAX_MSGS 4000

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "produce_failover", 2, 4, 2);
  sl_pt_namespace(t, "pf", true, 0);
  sl_pt_topic(t, "pf/bookie-kill", 0);
  sl_pt_topic(t, "pf/bookie-stop", 0);
  sl_pt_topic(t, "pf/owner-kill", 0);
  sl_pt_topic(t, "pf/fence", 0);
  *state = t;
  return 0;
}

/* A producer that resends with the same sequence ids after any failure,
 * through whichever broker owns the partition now. */
typedef struct pub {
  sl_pt *t;
  const char *topic;
  int dead_broker;            /* not to be used (killed); -1 = none */
  sl_pt_producer p;
  bool open;
  uint64_t next;              /* first sequence id of the next batch */
  sl_pt_ack acks[MAX_MSGS];   /* every receipt, in order */
  int n_acks;
  int reconnects;
} pub;

static void pub_connect(pub *u) {
  int64_t end = sl_clock_mono_ms() + 30000;
  for (;;) {
    int via = u->dead_broker == 0 ? 1 : 0;
    int owner = sl_pt_try_owner(u->t, via, u->topic, NULL);
    if (owner >= 0 && owner != u->dead_broker) {
      sl_err err = SL_ERR_INIT;
      if (sl_pt_open(u->t, owner, u->topic, "pub", true, &u->p, NULL, &err) == SL_OK) {
        u->open = true;
        return;
      }
      sl_pt_close(&u->p);
    }
    if (sl_clock_mono_ms() > end) fail_msg("%s: no owner to produce to", u->topic);
    struct timespec ts = {0, 50 * 1000000};
    nanosleep(&ts, NULL);
  }
}

/* Sends one batch until it is acked (resending after failures). Returns the
 * time the batch took in ms. */
static int64_t pub_round(pub *u) {
  int64_t t0 = sl_clock_mono_ms();
  for (;;) {
    if (!u->open) {
      pub_connect(u);
      u->reconnects++;
    }
    sl_err err = SL_ERR_INIT;
    sl_pt_ack acks[BATCH];
    int got = 0;
    sl_status st = sl_pt_send(&u->p, u->next, BATCH, 1024, &err);
    if (st == SL_OK) st = sl_pt_recv_acks(&u->p, acks, BATCH, &got, 20000, &err);
    for (int i = 0; i < got && st == SL_OK; i++)
      if (acks[i].status != 0) st = SL_EUNAVAIL; /* e.g. BUSY: resend */
    if (st == SL_OK) {
      assert_true(u->n_acks + BATCH <= MAX_MSGS);
      memcpy(&u->acks[u->n_acks], acks, sizeof(acks));
      u->n_acks += BATCH;
      u->next += BATCH;
      return sl_clock_mono_ms() - t0;
    }
    sl_pt_close(&u->p);
    u->open = false;
  }
}

/* Every ack OK with an id; ids strictly increase; the log holds each
 * acked sequence exactly once (dedup), in order, with its bytes. */
static void check(pub *u) {
  for (int i = 0; i < u->n_acks; i++) {
    assert_int_equal(u->acks[i].status, 0);
    assert_true(u->acks[i].has_id);
    if (i > 0 && sl_pt_ack_cmp(&u->acks[i - 1], &u->acks[i]) >= 0)
      fail_msg("ack %d: id does not increase", i);
  }
  sl_pt_unload(u->t, u->dead_broker == 0 ? 1 : 0, u->topic);
  sl_pt_msg *log;
  size_t n = sl_pt_read_log(u->t, u->topic, &log);
  assert_int_equal(n, (size_t)u->n_acks);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(log[i].seq, i);
    assert_true(log[i].payload_ok);
    assert_int_equal(log[i].pos.ledger_id, u->acks[i].pos.ledger_id);
    assert_int_equal(log[i].pos.entry_id, u->acks[i].pos.entry_id);
    assert_int_equal(log[i].index, u->acks[i].batch_index);
  }
  free(log);
}

/* SIGSTOP/SIGCONT a bookie (the ledger tests' helper needs only the
 * cluster). */
static void signal_bookie(sl_pt *t, int i, int sig) {
  sl_lt lt = {.cluster = t->c};
  sl_lt_signal_bookie(&lt, i, sig);
}

static void bookie_failure(sl_pt *t, const char *topic, bool stop) {
  static pub u;
  memset(&u, 0, sizeof(u));
  u.t = t;
  u.topic = topic;
  u.dead_broker = -1;
  for (int i = 0; i < 20; i++) pub_round(&u);
  int victim = sl_pt_ensemble_bookie(t, topic, 0);
  sl_err err = SL_ERR_INIT;
  int64_t t0 = sl_clock_mono_ms();
  if (stop) {
    signal_bookie(t, victim, SIGSTOP);
  } else {
    assert_int_equal(sl_cluster_kill9(t->c, SL_NODE_BOOKIE, victim, &err), SL_OK);
  }
  int64_t worst = 0;
  for (int i = 0; i < 40; i++) {
    int64_t ms = pub_round(&u);
    if (ms > worst) worst = ms;
  }
  printf("# %s: bookie %d %s; 40 batches after it, slowest %lld ms, total %lld ms, "
         "reconnects %d\n", topic, victim, stop ? "stopped" : "killed", (long long)worst,
         (long long)(sl_clock_mono_ms() - t0), u.reconnects);
  assert_int_equal(u.reconnects, 1); /* the first connect only: no failover */
  if (stop) signal_bookie(t, victim, SIGCONT);
  check(&u);
  if (!stop) assert_int_equal(sl_cluster_restart(t->c, SL_NODE_BOOKIE, victim, &err), SL_OK);
}

static void test_produce_failover__bookie_kill9(void **state) {
  bookie_failure(*state, "pf/bookie-kill", false);
}

static void test_produce_failover__bookie_sigstop(void **state) {
  bookie_failure(*state, "pf/bookie-stop", true);
}

/* kill -9 the owner: the other broker takes the partition after the
 * session lapses and recovers the ledger; the producer resends the batch
 * that was in flight; nothing acked is lost and nothing is stored twice. */
static void test_produce_failover__owner_kill9(void **state) {
  sl_pt *t = *state;
  static pub u;
  memset(&u, 0, sizeof(u));
  u.t = t;
  u.topic = "pf/owner-kill";
  u.dead_broker = -1;
  for (int i = 0; i < 20; i++) pub_round(&u);
  int owner = sl_pt_owner(t, 0, u.topic, NULL);
  /* Put a batch in flight, then kill the owner under it. */
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_pt_send(&u.p, u.next, BATCH, 1024, &err), SL_OK);
  int64_t t0 = sl_clock_mono_ms();
  assert_int_equal(sl_cluster_kill9(t->c, SL_NODE_BROKER, owner, &err), SL_OK);
  sl_pt_close(&u.p);
  u.open = false;
  u.dead_broker = owner;
  pub_round(&u);
  int64_t failover = sl_clock_mono_ms() - t0;
  printf("# owner broker %d killed: first ack from the new owner after %lld ms\n", owner,
         (long long)failover);
  for (int i = 0; i < 20; i++) pub_round(&u);
  check(&u);
  assert_int_equal(sl_cluster_restart(t->c, SL_NODE_BROKER, owner, &err), SL_OK);
}

/* SIGSTOP the owner until the other broker took over, then SIGCONT it:
 * the batch its producer sent meanwhile is never acked or stored (its adds
 * are refused), that stream ends, and the log holds exactly what was acked,
 * ids increasing across the move. */
static void test_produce_failover__stopped_owner_is_fenced(void **state) {
  sl_pt *t = *state;
  static pub u;
  memset(&u, 0, sizeof(u));
  u.t = t;
  u.topic = "pf/fence";
  u.dead_broker = -1;
  for (int i = 0; i < 10; i++) pub_round(&u);
  int old = sl_pt_owner(t, 0, u.topic, NULL);
  sl_pt_producer stale = u.p; /* keeps its stream to the old owner */
  u.open = false;
  sl_pt_signal_broker(t, old, SIGSTOP);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_pt_send(&stale, 900000, BATCH, 1024, &err), SL_OK);

  /* The other broker takes over once the stopped one's session lapsed. */
  int64_t end = sl_clock_mono_ms() + 30000;
  while (sl_pt_try_owner(t, 1 - old, u.topic, NULL) != 1 - old) {
    if (sl_clock_mono_ms() > end) fail_msg("no take-over");
    struct timespec ts = {0, 100 * 1000000};
    nanosleep(&ts, NULL);
  }
  u.dead_broker = old;
  for (int i = 0; i < 5; i++) pub_round(&u);
  sl_pt_signal_broker(t, old, SIGCONT);

  /* The stale stream gets no OK receipt: it ends (redirect or error). */
  sl_pt_ack acks[BATCH];
  int got = 0;
  err = (sl_err)SL_ERR_INIT;
  sl_status st = sl_pt_recv_acks(&stale, acks, BATCH, &got, 20000, &err);
  assert_int_not_equal(st, SL_OK);
  for (int i = 0; i < got; i++) assert_int_not_equal(acks[i].status, 0);
  printf("# stopped owner resumed: its stream ended with %s (%s)\n", sl_status_str(st),
         err.msg);
  sl_pt_close(&stale);
  for (int i = 0; i < 5; i++) pub_round(&u);
  check(&u);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_produce_failover__bookie_kill9),
      cmocka_unit_test(test_produce_failover__bookie_sigstop),
      cmocka_unit_test(test_produce_failover__owner_kill9),
      cmocka_unit_test(test_produce_failover__stopped_owner_is_fenced),
  };
  return cmocka_run_group_tests(tests, setup, sl_pt_teardown);
}
