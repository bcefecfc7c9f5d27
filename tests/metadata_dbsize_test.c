/*
 * etcd's own limits: cursors and ledger lists are rewritten all the time,
 * and every rewrite leaves an old revision behind. With the settings we
 * deploy (periodic auto-compaction, a sized quota; tests/etcd_proc.h and
 * k8s/etcd.yaml) the backend stops growing once compaction frees the old
 * revisions, and defragmentation gives the space back. This test rewrites
 * a large cursor through sluice-metadata and watches etcd's db size
 * (maintenance status), printing the figures. It writes until TARGET_MIB
 * went through AND at least MIN_MS passed: compaction is periodic, so on a
 * fast machine the amount alone passes within one or two compaction
 * periods, before the db could level off (24 MiB in 5 s: it grew by half
 * of the second half's writes); on a loaded one the time alone writes too
 * little to tell (92 rewrites in 20 s under ASan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "tests/etcd_proc.h"
#include "tests/metadata_cluster.h"
#include "tests/metadata_util.h"

#define P "public/busy-partition-0"
#define TARGET_MIB 24.0    /* rewrite until this much went through etcd */
#define RETENTION "2s"     /* compaction period of this test's etcd */
#define MIN_MS 12000       /* and write for at least six such periods */
#define BOUNDS 30000       /* acked-range bounds per cursor: a ~60 KiB value */
#define MIB (1024.0 * 1024.0)

static int setup(void **state) {
  /* Read by tests/etcd_proc.c when the cluster starts etcd. */
  setenv("SL_ETCD_COMPACTION_RETENTION", RETENTION, 1);
  *state = mdt_cluster_fx_new("mddbsize", NULL);
  return 0;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void db_size(mdt_cluster_fx *f, long long *size, long long *in_use) {
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_etcd_proc_db_size(sl_cluster_etcd(f->c), size, in_use, &err), SL_OK, &err);
}

static void test_metadata_dbsize__busy_cursor_keeps_etcd_bounded(void **state) {
  mdt_cluster_fx *f = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s = mdt_open_broker(f->ch, "b1", 60);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(f->ch, P, "b1", s);
  uint64_t epoch = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);

  static uint64_t bounds[BOUNDS];
  for (size_t i = 0; i < BOUNDS; i++) bounds[i] = 1000 + i; /* 2-byte varints */
  Sluice__V1__AckedRanges ranges = SLUICE__V1__ACKED_RANGES__INIT;
  ranges.ledger_id = 7;
  ranges.bounds = bounds;
  ranges.n_bounds = BOUNDS;
  Sluice__V1__AckedRanges *acked[] = {&ranges};
  Sluice__V1__Position md = SLUICE__V1__POSITION__INIT;
  md.ledger_id = 7;
  Sluice__V1__CursorInfo c = SLUICE__V1__CURSOR_INFO__INIT;
  c.partition = P;
  c.subscription = "sub";
  c.mark_delete = &md;
  c.acked = acked;
  c.n_acked = 1;
  size_t value_bytes = protobuf_c_message_get_packed_size(&c.base);

  long long size0, in_use0;
  db_size(f, &size0, &in_use0);
  long long peak = size0, mid_size = -1, mid_in_use = -1;
  double mid_written = 0;
  int64_t version = 0;
  long long writes = 0, t0 = sl_clock_mono_ms(), next_sample = t0;
  double written = 0;
  while (written < TARGET_MIB * MIB || sl_clock_mono_ms() - t0 < MIN_MS) {
    md.entry_id = writes;
    Sluice__V1__UpdateCursorRequest req = SLUICE__V1__UPDATE_CURSOR_REQUEST__INIT;
    req.info = &c;
    req.expected_version = version;
    req.epoch = epoch;
    Sluice__V1__CursorResponse *resp = NULL;
    sl_rpc_call_opts o = mdt_opts(10000);
    mdt_expect(sl_metadata_service_update_cursor(f->ch, &req, &resp, &o, &err), SL_OK, &err);
    version = resp->version;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    writes++;
    written = (double)writes * (double)value_bytes;
    if (mid_size < 0 && written >= TARGET_MIB * MIB / 2 && sl_clock_mono_ms() - t0 >= MIN_MS / 2) {
      db_size(f, &mid_size, &mid_in_use);
      if (mid_size > peak) peak = mid_size;
      mid_written = written;
    }
    if (sl_clock_mono_ms() >= next_sample) {
      long long size, in_use;
      db_size(f, &size, &in_use);
      if (size > peak) peak = size;
      print_message("t=%5lld ms writes=%lld written=%.1f MiB db=%.1f MiB in_use=%.1f MiB\n",
                    sl_clock_mono_ms() - t0, writes, written / MIB, size / MIB,
                    in_use / MIB);
      next_sample += 2000;
    }
  }
  long long took = sl_clock_mono_ms() - t0;
  /* Let the last compaction run, then give the space back. */
  sleep_ms(3000);
  long long size, in_use;
  db_size(f, &size, &in_use);
  if (size > peak) peak = size;
  mdt_expect(sl_etcd_proc_defragment(sl_cluster_etcd(f->c), &err), SL_OK, &err);
  long long after, after_in_use;
  db_size(f, &after, &after_in_use);
  print_message("%lld rewrites of a %zu-byte cursor in %lld ms: %.1f MiB written; db %.1f MiB at "
                "start, peak %.1f MiB, %.1f MiB (%.1f in use) after compaction, %.1f MiB "
                "after defragmentation\n",
                writes, value_bytes, took, written / MIB, size0 / MIB, peak / MIB, size / MIB,
                in_use / MIB, after / MIB);
  /* Without compaction every revision stays, and the backend holds at
   * least what was written. With it, the pages in use stop growing once
   * the first compactions have run: over the second half they grow by
   * less than a quarter of what was written then. The file itself is a
   * high-water mark that bbolt extends while readers still pin freed
   * pages, so its growth over the second half varies (0-5.5 MiB of 35-52
   * written in three runs here, 11.3 of 38.3 in one CI run); it is held
   * to well under what was written. */
  assert_true(mid_in_use >= 0);
  double late_written = written - mid_written;
  print_message("second half: %.1f MiB written, in use grew %.1f MiB, db grew %.1f MiB\n",
                late_written / MIB, (double)(in_use - mid_in_use) / MIB,
                (double)(size - mid_size) / MIB);
  assert_true((double)(in_use - mid_in_use) < late_written / 4);
  assert_true((double)size < written * 3 / 4);
  assert_true(after <= size);
  assert_true(after < 64 * MIB); /* the quota (2 GiB) is far away */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_metadata_dbsize__busy_cursor_keeps_etcd_bounded, setup,
                                      mdt_cluster_fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
