/* Auto-recovery over real gRPC to a local-store service (md_auditor.c,
 * md_rereplication.c): the auditor lists CLOSED ledgers naming a bookie
 * gone past the grace period or wiped (new instance id), and removes items
 * that need nothing any more; workers claim and finish items under the
 * holder rule; one replica audits at a time. Passes are awaited through
 * sl_md_service_audit_stats, never with fixed sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/metrics.h"
#include "common/testing.h"
#include "tests/metadata_util.h"

#define BOOKIE SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE
#define CLOSED SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED
#define HOUR_MS (3600 * 1000)

/* A service whose auditor runs every 50 ms with the given grace; the
 * short lease lets a second replica take over quickly. */
static mdt_local *start_audited(int64_t grace_ms, const char *replica) {
  sl_md_service_opts o = SL_MD_SERVICE_OPTS_INIT;
  o.audit_interval_ms = 50;
  o.rereplication_grace_ms = grace_ms;
  o.auditor_ttl_s = 2;
  o.replica_id = replica;
  mdt_local *l = mdt_local_new(&o);
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_md_service_auditor_start(l->md, &err), SL_OK, &err);
  return l;
}

static int teardown(void **state) {
  if (*state == NULL) return 0; /* failed before it started */
  return mdt_local_teardown(state); /* destroying the service stops its auditor */
}

static void pause_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static sl_md_audit_stats stats(mdt_local *l) { return mdt_audit_stats(l); }

/* With n >= 2, at least one of the passes started after the caller's
 * last change. */
static void await_passes(mdt_local *l, uint64_t n) { mdt_await_audit_passes(l, n); }

/* ---- calls ---- */

static int64_t open_bookie(sl_rpc_channel *ch, const char *id, const char *instance) {
  Sluice__V1__BookieInfo b = SLUICE__V1__BOOKIE_INFO__INIT;
  b.id = (char *)id;
  b.address = mdt_addr_for(id);
  b.instance_id = (char *)instance;
  Sluice__V1__OpenSessionRequest req = SLUICE__V1__OPEN_SESSION_REQUEST__INIT;
  req.kind = BOOKIE;
  req.bookie = &b;
  Sluice__V1__OpenSessionResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_open_session(ch, &req, &resp, NULL, &err), SL_OK, &err);
  int64_t s = resp->session_id;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return s;
}

static void close_bookie(sl_rpc_channel *ch, int64_t session, const char *id) {
  Sluice__V1__CloseSessionRequest req = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  req.session_id = session;
  req.kind = BOOKIE;
  req.node_id = (char *)id;
  Sluice__V1__CloseSessionResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_close_session(ch, &req, &resp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* Closes an OPEN ledger (as its writer would, with update kind WRITE). */
static void close_ledger(sl_rpc_channel *ch, uint64_t id) {
  Sluice__V1__GetLedgerRequest gr = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  gr.ledger_id = id;
  Sluice__V1__LedgerResponse *got = NULL, *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_get_ledger(ch, &gr, &got, NULL, &err), SL_OK, &err);
  got->info->state = CLOSED;
  Sluice__V1__UpdateLedgerRequest ur = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  ur.info = got->info;
  ur.expected_version = got->version;
  ur.kind = SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_WRITE;
  mdt_expect(sl_metadata_service_update_ledger(ch, &ur, &resp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  protobuf_c_message_free_unpacked(&got->base, NULL);
}

/* Creates ledger `id` (0: allocate) on one segment of n bookies, recording
 * their instance ids, OPEN or CLOSED. Returns its id. */
static uint64_t make_ledger(sl_rpc_channel *ch, uint64_t id, const char *const *bookies,
                            const char *const *instances, size_t n, bool closed) {
  Sluice__V1__EnsembleSegment seg = SLUICE__V1__ENSEMBLE_SEGMENT__INIT, *segs[1] = {&seg};
  seg.n_bookie_ids = seg.n_instance_ids = n;
  seg.bookie_ids = (char **)bookies;
  seg.instance_ids = (char **)instances;
  Sluice__V1__LedgerInfo l = SLUICE__V1__LEDGER_INFO__INIT;
  l.ledger_id = id;
  l.ensemble_size = l.write_quorum = l.ack_quorum = (uint32_t)n;
  l.n_ensembles = 1;
  l.ensembles = segs;
  l.last_entry_id = -1;
  Sluice__V1__CreateLedgerRequest cr = SLUICE__V1__CREATE_LEDGER_REQUEST__INIT;
  cr.info = &l;
  Sluice__V1__LedgerResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_create_ledger(ch, &cr, &resp, NULL, &err), SL_OK, &err);
  id = resp->info->ledger_id;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  if (closed) close_ledger(ch, id);
  return id;
}

static void delete_ledger(sl_rpc_channel *ch, uint64_t id) {
  Sluice__V1__DeleteLedgerRequest req = SLUICE__V1__DELETE_LEDGER_REQUEST__INIT;
  req.ledger_id = id;
  Sluice__V1__DeleteLedgerResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_delete_ledger(ch, &req, &resp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static Sluice__V1__ListUnderReplicatedResponse *list(sl_rpc_channel *ch) {
  Sluice__V1__ListUnderReplicatedRequest req = SLUICE__V1__LIST_UNDER_REPLICATED_REQUEST__INIT;
  Sluice__V1__ListUnderReplicatedResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_list_under_replicated(ch, &req, &resp, NULL, &err), SL_OK,
             &err);
  return resp;
}

static size_t n_items(sl_rpc_channel *ch) {
  Sluice__V1__ListUnderReplicatedResponse *r = list(ch);
  size_t n = r->n_items;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return n;
}

/* Polls ListUnderReplicated until it holds n items. */
static void await_items(sl_rpc_channel *ch, size_t n) {
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(10000);
  while (n_items(ch) != n) {
    if (sl_clock_mono_ms() > deadline) fail_msg("%zu items after 10 s, want %zu", n_items(ch), n);
    pause_ms(5);
  }
}

/* Fails unless the items are exactly ledgers ids[0..n), in that order, and
 * the first names bookie b0 only (when b0 is not NULL). */
static void expect_items(sl_rpc_channel *ch, const uint64_t *ids, size_t n, const char *b0) {
  Sluice__V1__ListUnderReplicatedResponse *r = list(ch);
  assert_int_equal(r->n_items, n);
  for (size_t i = 0; i < n; i++) assert_int_equal(r->items[i]->ledger_id, ids[i]);
  if (b0 != NULL) {
    assert_int_equal(r->items[0]->n_bookie_ids, 1);
    assert_string_equal(r->items[0]->bookie_ids[0], b0);
  }
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

static sl_status claim(sl_rpc_channel *ch, int64_t session, const char *node,
                       Sluice__V1__ClaimRereplicationResponse **resp, sl_err *err) {
  Sluice__V1__ClaimRereplicationRequest req = SLUICE__V1__CLAIM_REREPLICATION_REQUEST__INIT;
  req.session_id = session;
  req.kind = BOOKIE;
  req.node_id = (char *)node;
  return sl_metadata_service_claim_rereplication(ch, &req, resp, NULL, err);
}

/* Claims for (session, node): the claimed ledger id, 0 if nothing. */
static uint64_t claim_id(sl_rpc_channel *ch, int64_t session, const char *node) {
  Sluice__V1__ClaimRereplicationResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(claim(ch, session, node, &r, &err), SL_OK, &err);
  uint64_t id = 0;
  if (r->claimed) {
    assert_non_null(r->work);
    id = r->work->ledger_id;
  } else {
    assert_null(r->work);
  }
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return id;
}

static sl_status finish(sl_rpc_channel *ch, int64_t session, const char *node, uint64_t ledger,
                        bool done, sl_err *err) {
  Sluice__V1__FinishRereplicationRequest req = SLUICE__V1__FINISH_REREPLICATION_REQUEST__INIT;
  req.session_id = session;
  req.kind = BOOKIE;
  req.node_id = (char *)node;
  req.ledger_id = ledger;
  req.done = done;
  Sluice__V1__FinishRereplicationResponse *resp = NULL;
  sl_status st = sl_metadata_service_finish_rereplication(ch, &req, &resp, NULL, err);
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

/* The claimed ledger ids ListUnderReplicated shows: how many, and the
 * first (0 if none). */
static size_t claimed(sl_rpc_channel *ch, uint64_t *first) {
  Sluice__V1__ListUnderReplicatedResponse *r = list(ch);
  size_t n = r->n_claimed;
  *first = n > 0 ? r->claimed[0] : 0;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return n;
}

static char *auditor_of(sl_rpc_channel *ch) {
  Sluice__V1__ListUnderReplicatedResponse *r = list(ch);
  char *a = strdup(r->auditor);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_non_null(a);
  return a;
}

static double metric(const char *name, const char *const *labels) {
  double v = -1;
  assert_int_equal(sl_metrics_value(sl_metrics_default(), name, labels, &v), SL_OK);
  return v;
}

/* ---- the auditor ---- */

/* A bookie gone for less than the grace period is not listed, though its
 * ledger is looked at every pass (another ledger's item keeps the scans
 * going); a wiped bookie (new instance id) is listed at once. */
static void test_md_rereplication__gone_bookie_waits_for_grace(void **state) {
  mdt_local *l = *state = start_audited(HOUR_MS, "r1");
  open_bookie(l->ch, "b1", "i1");
  int64_t s2 = open_bookie(l->ch, "b2", "i2");
  open_bookie(l->ch, "b3", "i3");
  const char *e1[] = {"b1", "b2"}, *i1[] = {"i1", "i2"}, *e2[] = {"b3"}, *i2[] = {"i3"};
  make_ledger(l->ch, 0, e1, i1, 2, true); /* names b2 */
  uint64_t l2 = make_ledger(l->ch, 0, e2, i2, 1, true);
  await_passes(l, 2);
  assert_int_equal(n_items(l->ch), 0);

  close_bookie(l->ch, s2, "b2");
  open_bookie(l->ch, "b3", "i3-wiped"); /* the same address takes over */
  await_items(l->ch, 1);
  uint64_t scans = stats(l).scans;
  await_passes(l, 3);
  assert_true(stats(l).scans >= scans + 3); /* l1 was looked at, and left alone */
  expect_items(l->ch, &l2, 1, "b3"); /* and not b2's ledger */
}

/* Registers b1 and b2 (session of b2 in *s2) and a CLOSED ledger on both;
 * returns its id once the auditor has looked at it. */
static uint64_t ledger_on_b1_b2(mdt_local *l, int64_t *s2) {
  open_bookie(l->ch, "b1", "i1");
  *s2 = open_bookie(l->ch, "b2", "i2");
  const char *e[] = {"b1", "b2"}, *in[] = {"i1", "i2"};
  uint64_t id = make_ledger(l->ch, 0, e, in, 2, true);
  await_passes(l, 2);
  return id;
}

static bool gone_record(mdt_local *l, const char *bookie) {
  char key[128];
  snprintf(key, sizeof(key), "/sluice/bookies-gone/%s", bookie);
  sl_store_kv kv = {0};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_store_get(l->store, key, strlen(key), &kv, &err);
  sl_store_kv_release(&kv);
  if (st != SL_ENOTFOUND) mdt_expect(st, SL_OK, &err);
  return st == SL_OK;
}

/* A new auditor term (here: the auditor stopped and started again, as at
 * a replica's restart) keeps the grace that began before it: "gone since"
 * is in the store, not in the old term's memory. The ledger is listed at
 * the grace after the bookie went, well before a grace after the new term
 * began; once the bookie is back, the record goes. */
static void test_md_rereplication__grace_survives_a_new_auditor(void **state) {
  const int64_t grace = sl_test_scaled_ms(2000);
  mdt_local *l = *state = start_audited(grace, "r1");
  int64_t s2;
  uint64_t id = ledger_on_b1_b2(l, &s2);

  int64_t t0 = sl_clock_mono_ms(), wall0 = sl_clock_wall_ms();
  close_bookie(l->ch, s2, "b2");
  while (sl_clock_mono_ms() - t0 < grace / 2) await_passes(l, 1);
  assert_true(gone_record(l, "b2"));
  assert_int_equal(n_items(l->ch), 0);
  sl_err err = SL_ERR_INIT;
  sl_md_service_auditor_stop(l->md);
  int64_t wall1 = sl_clock_wall_ms();
  mdt_expect(sl_md_service_auditor_start(l->md, &err), SL_OK, &err);

  await_items(l->ch, 1);
  expect_items(l->ch, &id, 1, "b2");
  Sluice__V1__ListUnderReplicatedResponse *r = list(l->ch);
  int64_t listed = r->items[0]->since_ms;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  print_message("listed %" PRId64 " ms after the bookie went, %" PRId64 " ms after the new "
                "term began (grace %" PRId64 " ms)\n", listed - wall0, listed - wall1, grace);
  assert_true(listed >= wall0 + grace);
  assert_true(listed < wall1 + grace); /* a restarted grace would list it no sooner */

  open_bookie(l->ch, "b2", "i2");
  await_items(l->ch, 0);
  await_passes(l, 1);
  assert_false(gone_record(l, "b2"));
}

/* A bookie gone past the grace period: its CLOSED ledger is listed, not
 * before the grace has passed since it went; when it comes back with the
 * same data (instance id), the item goes. */
static void test_md_rereplication__gone_bookie_listed_after_grace(void **state) {
  const int64_t grace = 400;
  mdt_local *l = *state = start_audited(grace, "r1");
  int64_t s2;
  uint64_t id = ledger_on_b1_b2(l, &s2);
  assert_int_equal(n_items(l->ch), 0);
  static const char *const ok[] = {"outcome", "ok", NULL};
  double passes = metric("sluice_metadata_audit_passes_total", ok);
  assert_true(passes >= 2);
  assert_true(metric("sluice_metadata_auditor", NULL) == 1);

  int64_t t0 = sl_clock_mono_ms(), wall0 = sl_clock_wall_ms();
  close_bookie(l->ch, s2, "b2");
  await_items(l->ch, 1);
  int64_t took = sl_clock_mono_ms() - t0;
  print_message("gone bookie listed after %" PRId64 " ms (grace %" PRId64 " ms)\n", took, grace);
  assert_true(took >= grace);
  expect_items(l->ch, &id, 1, "b2");
  Sluice__V1__ListUnderReplicatedResponse *r = list(l->ch);
  assert_true(r->items[0]->since_ms >= wall0);
  assert_true(r->items[0]->since_ms <= sl_clock_wall_ms());
  assert_string_equal(r->auditor, "r1");
  protobuf_c_message_free_unpacked(&r->base, NULL);
  await_passes(l, 1); /* the gauge is set at the end of the pass */
  assert_true(metric("sluice_metadata_under_replicated_ledgers", NULL) == 1);
  assert_true(metric("sluice_metadata_audit_passes_total", ok) > passes);

  open_bookie(l->ch, "b2", "i2"); /* back, its data intact */
  await_items(l->ch, 0);
  await_passes(l, 1);
  assert_true(metric("sluice_metadata_under_replicated_ledgers", NULL) == 0);
}

/* Nothing changed, nothing read: once all is well, passes skip the
 * ledgers; a bookie registering with another instance id makes the next
 * pass read them and list its ledger. */
static void test_md_rereplication__new_instance_listed_at_once(void **state) {
  mdt_local *l = *state = start_audited(HOUR_MS, "r1");
  open_bookie(l->ch, "b1", "i1");
  open_bookie(l->ch, "b2", "i2");
  const char *e[] = {"b1", "b2"}, *in[] = {"i1", "i2"};
  uint64_t id = make_ledger(l->ch, 0, e, in, 2, true);
  await_passes(l, 2);
  sl_md_audit_stats s0 = stats(l);
  await_passes(l, 3);
  sl_md_audit_stats s1 = stats(l);
  /* At least one scan per 10 passes (md_auditor.c, invariant 7). */
  if (s1.passes < 10)
    assert_int_equal(s1.scans, s0.scans);
  else
    print_message("too slow to check skipped scans: %" PRIu64 " passes\n", s1.passes);
  assert_int_equal(n_items(l->ch), 0);

  open_bookie(l->ch, "b2", "i2-wiped");
  await_items(l->ch, 1);
  expect_items(l->ch, &id, 1, "b2");
  assert_true(stats(l).scans > s1.scans);
}

/* An item goes when its ledger is deleted. */
static void test_md_rereplication__deleted_ledger_item_removed(void **state) {
  mdt_local *l = *state = start_audited(0, "r1");
  const char *e[] = {"ghost"}, *in[] = {""};
  uint64_t id = make_ledger(l->ch, 0, e, in, 1, true);
  await_items(l->ch, 1);
  expect_items(l->ch, &id, 1, "ghost");
  delete_ledger(l->ch, id);
  await_items(l->ch, 0);
}

/* OPEN ledgers are their writer's: no item, until they close. Items come
 * sorted by ledger id as a number (10 after 9). */
static void test_md_rereplication__open_ledger_listed_once_closed(void **state) {
  mdt_local *l = *state = start_audited(0, "r1");
  (void)mdt_allocate_ledger_id(l->ch); /* reserves ids 1..1000 for explicit use */
  const char *e[] = {"ghost"}, *in[] = {""};
  uint64_t open_id = make_ledger(l->ch, 10, e, in, 1, false);
  uint64_t closed_id = make_ledger(l->ch, 9, e, in, 1, true);
  await_items(l->ch, 1);
  /* Pass by pass: an item put by one pass and removed by the next would
   * show in one of these. */
  for (int i = 0; i < 4; i++) {
    await_passes(l, 1);
    expect_items(l->ch, &closed_id, 1, "ghost");
  }
  close_ledger(l->ch, open_id);
  await_items(l->ch, 2);
  uint64_t want[] = {9, 10};
  expect_items(l->ch, want, 2, "ghost");
}

/* ---- claims ---- */

/* A service whose auditor listed `n` ledgers on gone bookie "ghost" and
 * then stopped, so that no pass re-lists what a test finishes. */
static mdt_local *listed(size_t n, uint64_t *ids) {
  mdt_local *l = start_audited(0, "r1");
  const char *e[] = {"ghost"}, *in[] = {""};
  for (size_t i = 0; i < n; i++) ids[i] = make_ledger(l->ch, 0, e, in, 1, true);
  await_items(l->ch, n);
  sl_md_service_auditor_stop(l->md);
  return l;
}

static void test_md_rereplication__claim_and_finish(void **state) {
  uint64_t id;
  mdt_local *l = *state = listed(1, &id);
  sl_err err = SL_ERR_INIT;
  char *a = auditor_of(l->ch);
  assert_string_equal(a, ""); /* stopping resigned */
  free(a);
  int64_t w1 = open_bookie(l->ch, "w1", "x1"), w2 = open_bookie(l->ch, "w2", "x2");

  /* The holder rule: the session must hold the named node's registration. */
  Sluice__V1__ClaimRereplicationResponse *r = NULL;
  mdt_expect(claim(l->ch, w1, "w2", &r, &err), SL_EPERM, &err);
  mdt_expect(claim(l->ch, w1, "nobody", &r, &err), SL_ENOTFOUND, &err);
  mdt_expect(claim(l->ch, 0, "w1", &r, &err), SL_EINVAL, &err);
  mdt_expect(finish(l->ch, w2, "w1", id, true, &err), SL_EPERM, &err);
  uint64_t first;
  assert_int_equal(claimed(l->ch, &first), 0);

  mdt_expect(claim(l->ch, w1, "w1", &r, &err), SL_OK, &err);
  assert_true(r->claimed);
  assert_int_equal(r->work->ledger_id, id);
  assert_int_equal(r->work->n_bookie_ids, 1);
  assert_string_equal(r->work->bookie_ids[0], "ghost");
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(claimed(l->ch, &first), 1);
  assert_int_equal(first, id);
  /* One worker per item. */
  assert_int_equal(claim_id(l->ch, w2, "w2"), 0);
  mdt_expect(finish(l->ch, w2, "w2", id, true, &err), SL_ENOTFOUND, &err);
  assert_int_equal(n_items(l->ch), 1);

  /* Released: claimable again. */
  mdt_expect(finish(l->ch, w1, "w1", id, false, &err), SL_OK, &err);
  assert_int_equal(claimed(l->ch, &first), 0);
  assert_int_equal(n_items(l->ch), 1);
  assert_int_equal(claim_id(l->ch, w2, "w2"), id);
  /* Done: the item goes with the claim. */
  mdt_expect(finish(l->ch, w2, "w2", id, true, &err), SL_OK, &err);
  assert_int_equal(n_items(l->ch), 0);
  assert_int_equal(claimed(l->ch, &first), 0);
  mdt_expect(finish(l->ch, w2, "w2", id, true, &err), SL_ENOTFOUND, &err);
  mdt_expect(finish(l->ch, w1, "w1", id, false, &err), SL_ENOTFOUND, &err);
  mdt_expect(finish(l->ch, w1, "w1", 0, false, &err), SL_EINVAL, &err);
  assert_int_equal(claim_id(l->ch, w1, "w1"), 0);
}

/* More items than a claim reads at once (CLAIM_PAGE, 64): claims page on
 * past the claimed ones, and wrap around from their random start, until
 * every item is claimed exactly once. */
static void test_md_rereplication__claims_page_through_many(void **state) {
  enum { N = 400 };
  uint64_t ids[N];
  mdt_local *l = *state = listed(N, ids);
  int64_t w = open_bookie(l->ch, "w1", "x1");
  uint64_t got[N];
  for (int i = 0; i < N; i++) {
    got[i] = claim_id(l->ch, w, "w1");
    assert_int_not_equal(got[i], 0);
    for (int j = 0; j < i; j++) assert_int_not_equal(got[j], got[i]);
  }
  assert_int_equal(claim_id(l->ch, w, "w1"), 0);
  uint64_t first;
  assert_int_equal(claimed(l->ch, &first), N);
}

/* A claim is bound to its session: closing the session frees the item.
 * Two workers get two different items. */
static void test_md_rereplication__claim_goes_with_session(void **state) {
  uint64_t ids[2];
  mdt_local *l = *state = listed(2, ids);
  sl_err err = SL_ERR_INIT;
  int64_t w1 = open_bookie(l->ch, "w1", "x1"), w2 = open_bookie(l->ch, "w2", "x2");
  uint64_t c1 = claim_id(l->ch, w1, "w1"), c2 = claim_id(l->ch, w2, "w2");
  assert_true(c1 == ids[0] || c1 == ids[1]);
  assert_true(c2 == ids[0] || c2 == ids[1]);
  assert_true(c1 != c2);
  assert_int_equal(claim_id(l->ch, w2, "w2"), 0);
  uint64_t first;
  assert_int_equal(claimed(l->ch, &first), 2);

  close_bookie(l->ch, w1, "w1");
  assert_int_equal(claimed(l->ch, &first), 1);
  assert_int_equal(first, c2);
  assert_int_equal(n_items(l->ch), 2);
  assert_int_equal(claim_id(l->ch, w2, "w2"), c1);
  /* The closed session's finish is refused: its claim is w2's now. */
  int64_t w1b = open_bookie(l->ch, "w1", "x1");
  mdt_expect(finish(l->ch, w1b, "w1", c1, true, &err), SL_ENOTFOUND, &err);
  mdt_expect(finish(l->ch, w2, "w2", c1, true, &err), SL_OK, &err);
  mdt_expect(finish(l->ch, w2, "w2", c2, true, &err), SL_OK, &err);
  assert_int_equal(n_items(l->ch), 0);
}

/* Workers racing for one item, all at once, round after round: exactly
 * one claims it each time (the claim's txn compares it absent). */
#define RACERS 6
typedef struct racer {
  sl_rpc_channel *ch;
  pthread_barrier_t *start;
  int64_t session;
  char node[8];
  uint64_t got; /* the claimed id, 0 if none */
} racer;

static void *race(void *arg) {
  racer *r = arg;
  pthread_barrier_wait(r->start);
  r->got = claim_id(r->ch, r->session, r->node);
  return NULL;
}

static void test_md_rereplication__racing_claimers(void **state) {
  uint64_t id;
  mdt_local *l = *state = listed(1, &id);
  sl_err err = SL_ERR_INIT;
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, RACERS);
  racer r[RACERS];
  for (int i = 0; i < RACERS; i++) {
    r[i] = (racer){.ch = mdt_connect(l->addr), .start = &start}; /* one connection each */
    snprintf(r[i].node, sizeof(r[i].node), "w%d", i);
    r[i].session = open_bookie(l->ch, r[i].node, "x");
  }
  for (int round = 0; round < 20; round++) {
    pthread_t t[RACERS];
    for (int i = 0; i < RACERS; i++) assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
    int winner = -1;
    for (int i = 0; i < RACERS; i++) {
      pthread_join(t[i], NULL);
      if (r[i].got == 0) continue;
      assert_int_equal(r[i].got, id);
      if (winner >= 0) fail_msg("round %d: w%d and w%d both claimed it", round, winner, i);
      winner = i;
    }
    assert_true(winner >= 0);
    mdt_expect(finish(l->ch, r[winner].session, r[winner].node, id, false, &err), SL_OK, &err);
  }
  pthread_barrier_destroy(&start);
  for (int i = 0; i < RACERS; i++) sl_rpc_channel_destroy(r[i].ch);
}

/* ---- election ---- */

/* Waits until one of two replicas holds the role; returns it. */
static mdt_local *await_auditor(mdt_local *x, mdt_local *y) {
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(10000);
  while (!stats(x).auditor && !stats(y).auditor) {
    if (sl_clock_mono_ms() > deadline) fail_msg("no auditor after 10 s");
    pause_ms(5);
  }
  return stats(x).auditor ? x : y;
}

/* Waits until replica l has looked at the `auditor` key n more times. */
static void await_campaigns(mdt_local *l, uint64_t n) {
  uint64_t want = stats(l).campaigns + n;
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(10000);
  while (stats(l).campaigns < want) {
    if (sl_clock_mono_ms() > deadline) fail_msg("no campaign after 10 s");
    pause_ms(5);
  }
}

/* Two replicas on one store: one audits while the other keeps trying;
 * when the auditor stops, its lease is revoked at once and the other takes
 * over without waiting for it to lapse. */
static void test_md_rereplication__one_auditor_and_take_over(void **state) {
  mdt_local *l = *state = start_audited(0, "r1");
  sl_err err = SL_ERR_INIT;
  sl_md_service_opts o = SL_MD_SERVICE_OPTS_INIT;
  o.audit_interval_ms = 50;
  o.rereplication_grace_ms = 0;
  o.auditor_ttl_s = 2;
  o.replica_id = "r2";
  mdt_local r2;
  mdt_replica_start(&r2, l->store, &o);
  mdt_expect(sl_md_service_auditor_start(r2.md, &err), SL_OK, &err);
  mdt_expect(sl_md_service_auditor_start(r2.md, &err), SL_EEXIST, &err);
  mdt_local *first = await_auditor(l, &r2), *other = first == l ? &r2 : l;
  const char *first_id = first == l ? "r1" : "r2", *other_id = first == l ? "r2" : "r1";
  await_campaigns(other, 2); /* it tried, after the role was taken */
  uint64_t passes = stats(other).passes;
  await_passes(first, 2);
  assert_true(stats(first).auditor);
  assert_false(stats(other).auditor);
  assert_int_equal(stats(other).passes, passes);
  char *a = auditor_of(other->ch);
  assert_string_equal(a, first_id);
  free(a);

  sl_md_service_auditor_stop(first->md);
  assert_false(stats(first).auditor);
  /* Resigned: the key is gone at once, or the other holds it already. */
  a = auditor_of(first->ch);
  assert_string_not_equal(a, first_id);
  free(a);
  int64_t t0 = sl_clock_mono_ms();
  await_passes(other, 1);
  print_message("%s took over in %" PRId64 " ms\n", other_id, sl_clock_mono_ms() - t0);
  assert_true(stats(other).auditor);
  a = auditor_of(first->ch);
  assert_string_equal(a, other_id);
  free(a);
  /* The new auditor works: it lists a ledger on a gone bookie. */
  const char *e[] = {"ghost"}, *in[] = {""};
  make_ledger(l->ch, 0, e, in, 1, true);
  await_items(l->ch, 1);
  mdt_local_stop(&r2); /* stops its auditor, if it runs */
  sl_md_service_auditor_stop(l->md);
  a = auditor_of(l->ch);
  assert_string_equal(a, ""); /* whichever audited resigned on its way out */
  free(a);
}

/* Every write of a pass compares the `auditor` key: a replica whose key
 * was replaced (as when its lease lapsed and another replica won) writes
 * nothing, steps down, and waits for the key to go. */
static void test_md_rereplication__deposed_auditor_writes_nothing(void **state) {
  mdt_local *l = *state = start_audited(0, "r1");
  sl_err err = SL_ERR_INIT;
  await_passes(l, 1);
  assert_true(stats(l).auditor);
  const char *key = "/sluice/auditor";
  mdt_expect(sl_store_put(l->store, key, strlen(key), "intruder", 8, SL_STORE_REV_ANY, 0, NULL,
                          &err), SL_OK, &err);
  const char *e[] = {"ghost"}, *in[] = {""};
  make_ledger(l->ch, 0, e, in, 1, true);
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(10000);
  while (stats(l).auditor) {
    if (sl_clock_mono_ms() > deadline) fail_msg("still auditor after 10 s");
    pause_ms(5);
  }
  await_campaigns(l, 2);
  assert_int_equal(n_items(l->ch), 0);
  assert_true(stats(l).failed >= 1);
  char *a = auditor_of(l->ch);
  assert_string_equal(a, "intruder");
  free(a);
  /* Once the key is gone, it audits again. */
  mdt_expect(sl_store_delete(l->store, key, strlen(key), SL_STORE_REV_ANY, NULL, &err), SL_OK,
             &err);
  await_items(l->ch, 1);
  assert_true(stats(l).auditor);
}

/* The lease of the `auditor` key (0 if there is none). */
static int64_t auditor_lease(mdt_local *l) {
  const char *key = "/sluice/auditor";
  sl_store_kv kv = {0};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_store_get(l->store, key, strlen(key), &kv, &err);
  if (st != SL_ENOTFOUND) mdt_expect(st, SL_OK, &err);
  int64_t lease = kv.lease;
  sl_store_kv_release(&kv);
  return lease;
}

/* An auditor whose lease is gone notices at its next keepalive, even with
 * nothing to write, and campaigns again. */
static void test_md_rereplication__lease_lost_campaigns_again(void **state) {
  mdt_local *l = *state = start_audited(HOUR_MS, "r1");
  sl_err err = SL_ERR_INIT;
  await_passes(l, 1);
  int64_t lease = auditor_lease(l);
  assert_true(lease != 0);
  mdt_expect(sl_store_lease_revoke(l->store, lease, &err), SL_OK, &err);
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(10000);
  while (auditor_lease(l) == 0) {
    if (sl_clock_mono_ms() > deadline) fail_msg("no auditor 10 s after its lease went");
    pause_ms(5);
  }
  assert_true(auditor_lease(l) != lease);
  assert_true(stats(l).auditor);
  await_passes(l, 1);
}

/* Auditor options are checked; interval 0 means no auditor at all. */
static void test_md_rereplication__bad_opts(void **state) {
  sl_err err = SL_ERR_INIT;
  sl_md_service_opts o = SL_MD_SERVICE_OPTS_INIT;
  o.audit_interval_ms = 0;
  o.auditor_ttl_s = 0; /* not checked: no auditor */
  mdt_local *l = *state = mdt_local_new(&o);
  mdt_expect(sl_md_service_auditor_start(l->md, &err), SL_OK, &err);
  await_items(l->ch, 0);
  assert_int_equal(stats(l).campaigns, 0);
  char *a = auditor_of(l->ch);
  assert_string_equal(a, "");
  free(a);

  sl_md_service *md = NULL;
  o = (sl_md_service_opts)SL_MD_SERVICE_OPTS_INIT;
  o.store = l->store;
  o.auditor_ttl_s = 1;
  mdt_expect(sl_md_service_create(&o, &md, &err), SL_EINVAL, &err);
  o.auditor_ttl_s = 10;
  o.audit_interval_ms = -1;
  mdt_expect(sl_md_service_create(&o, &md, &err), SL_EINVAL, &err);
  o.audit_interval_ms = 60000;
  o.rereplication_grace_ms = -1;
  mdt_expect(sl_md_service_create(&o, &md, &err), SL_EINVAL, &err);
  o.rereplication_grace_ms = 0;
  o.replica_id = "has space";
  mdt_expect(sl_md_service_create(&o, &md, &err), SL_EINVAL, &err);
  o.replica_id = "line\nbreak";
  mdt_expect(sl_md_service_create(&o, &md, &err), SL_EINVAL, &err);
  o.replica_id = NULL;
  mdt_expect(sl_md_service_create(&o, &md, &err), SL_OK, &err);
  sl_md_service_destroy(md);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_md_rereplication__gone_bookie_waits_for_grace, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__gone_bookie_listed_after_grace, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__grace_survives_a_new_auditor, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__new_instance_listed_at_once, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__deleted_ledger_item_removed, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__open_ledger_listed_once_closed, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__claim_and_finish, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__claims_page_through_many, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__claim_goes_with_session, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__racing_claimers, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__one_auditor_and_take_over, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__deposed_auditor_writes_nothing, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__lease_lost_campaigns_again, teardown),
      cmocka_unit_test_teardown(test_md_rereplication__bad_opts, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
