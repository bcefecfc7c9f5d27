/* Unit tests of the ack set: random patterns against a reference bitmap,
 * encode/decode round trips, encoded sizes, malformed input. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "broker/ack_set.h"

#define LEDGERS 3
#define SPAN 20000 /* entries per ledger in the random tests */

typedef struct ref {
  uint8_t acked[LEDGERS][SPAN];
} ref;

static uint64_t lid(int l) { return 100 + 7 * (uint64_t)l; }

static void check_same(const sl_ack_set *s, const ref *r) {
  uint64_t total = 0;
  for (int l = 0; l < LEDGERS; l++)
    for (int e = 0; e < SPAN; e++) {
      if (sl_ack_set_has(s, lid(l), e) != (r->acked[l][e] != 0))
        fail_msg("ledger %d entry %d: set says %d, reference %d", l, e,
                 sl_ack_set_has(s, lid(l), e), r->acked[l][e]);
      total += r->acked[l][e];
    }
  assert_int_equal(s->entries, total);
}

static void roundtrip(const sl_ack_set *s, const ref *r, size_t *size) {
  sl_buf b = SL_BUF_INIT;
  sl_ack_set_encode(s, &b);
  sl_ack_set back = SL_ACK_SET_INIT;
  assert_int_equal(sl_ack_set_decode(&back, b.data, b.len, NULL), SL_OK);
  check_same(&back, r);
  if (size) *size = b.len;
  sl_ack_set_release(&back);
  sl_buf_release(&b);
}

/* Random patterns of several densities, with dense runs and scattered
 * acks, each checked entry by entry and after a round trip. */
static void test_ack_set__random_vs_reference(void **state) {
  (void)state;
  srand(12345);
  static ref r;
  const int densities[] = {1, 10, 50, 90, 99, 100};
  for (size_t d = 0; d < sizeof(densities) / sizeof(densities[0]); d++) {
    memset(&r, 0, sizeof(r));
    sl_ack_set s = SL_ACK_SET_INIT;
    for (int l = 0; l < LEDGERS; l++)
      for (int e = 0; e < SPAN; e++) {
        /* every 5000 entries, a run of 700 acked entries */
        bool want = rand() % 100 < densities[d] || (e % 5000) < 700;
        if (!want) continue;
        assert_int_equal(sl_ack_set_add(&s, lid(l), e), !r.acked[l][e]);
        r.acked[l][e] = 1;
        assert_false(sl_ack_set_add(&s, lid(l), e)); /* twice: no change */
      }
    check_same(&s, &r);
    roundtrip(&s, &r, NULL);
    /* drop a prefix: everything up to ledger 1, entry 12345 */
    sl_ack_set_drop_through(&s, lid(1), 12345);
    memset(r.acked[0], 0, SPAN);
    memset(r.acked[1], 0, 12346);
    check_same(&s, &r);
    roundtrip(&s, &r, NULL);
    /* next_gap and count_range agree with the reference */
    for (int e = 0; e < SPAN; e += 997) {
      int64_t g = sl_ack_set_next_gap(&s, lid(2), e);
      int64_t want = e;
      while (want < SPAN && r.acked[2][want]) want++;
      assert_int_equal(g, want);
      uint64_t c = 0;
      for (int k = e; k < SPAN && k < e + 3000; k++) c += r.acked[2][k];
      assert_int_equal(sl_ack_set_count_range(&s, lid(2), e, e + 2999), c);
    }
    sl_ack_set_release(&s);
  }
}

static void test_ack_set__batch_indexes(void **state) {
  (void)state;
  sl_ack_set s = SL_ACK_SET_INIT;
  bool complete;
  assert_int_equal(sl_ack_set_add_batch(&s, 5, 10, 0, 3, &complete, NULL), SL_OK);
  assert_false(complete);
  assert_true(sl_ack_set_has_batch(&s, 5, 10, 0));
  assert_false(sl_ack_set_has_batch(&s, 5, 10, 1));
  assert_false(sl_ack_set_has(&s, 5, 10));
  assert_true(sl_ack_set_partial(&s, 5, 10));
  assert_int_equal(sl_ack_set_add_batch(&s, 5, 10, 1, 4, &complete, NULL), SL_EINVAL);
  assert_int_equal(sl_ack_set_add_batch(&s, 5, 10, 3, 3, &complete, NULL), SL_EINVAL);
  assert_int_equal(sl_ack_set_add_batch(&s, 5, 10, 0, 0, &complete, NULL), SL_EINVAL);
  assert_int_equal(sl_ack_set_add_batch(&s, 5, 11, 7, 100, &complete, NULL), SL_OK);

  /* the partial batches survive a round trip */
  sl_buf b = SL_BUF_INIT;
  sl_ack_set_encode(&s, &b);
  sl_ack_set back = SL_ACK_SET_INIT;
  assert_int_equal(sl_ack_set_decode(&back, b.data, b.len, NULL), SL_OK);
  assert_true(sl_ack_set_has_batch(&back, 5, 10, 0));
  assert_false(sl_ack_set_has_batch(&back, 5, 10, 2));
  assert_true(sl_ack_set_has_batch(&back, 5, 11, 7));
  assert_false(sl_ack_set_has_batch(&back, 5, 11, 6));
  assert_int_equal(back.n_batches, 2);

  assert_int_equal(sl_ack_set_add_batch(&s, 5, 10, 1, 3, &complete, NULL), SL_OK);
  assert_false(complete);
  assert_int_equal(sl_ack_set_add_batch(&s, 5, 10, 2, 3, &complete, NULL), SL_OK);
  assert_true(complete); /* the whole entry moved to the blocks */
  assert_true(sl_ack_set_has(&s, 5, 10));
  assert_false(sl_ack_set_partial(&s, 5, 10));
  assert_int_equal(s.n_batches, 1);
  /* a whole-entry ack drops the partial batch */
  assert_true(sl_ack_set_add(&s, 5, 11));
  assert_int_equal(s.n_batches, 0);
  /* dropping through removes partial batches too */
  sl_ack_set_drop_through(&back, 5, 10);
  assert_int_equal(back.n_batches, 1);
  sl_ack_set_release(&back);
  sl_ack_set_release(&s);
  sl_buf_release(&b);
}

/* The size figures the cursor's threshold rests on. */
static void test_ack_set__sizes(void **state) {
  (void)state;
  sl_ack_set s = SL_ACK_SET_INIT;
  const int64_t n = 1000000;
  struct timespec t0, t1, t2;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int64_t e = 0; e < n; e += 2) sl_ack_set_add(&s, 42, e);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  sl_buf b = SL_BUF_INIT;
  sl_ack_set_encode(&s, &b);
  clock_gettime(CLOCK_MONOTONIC, &t2);
  double add_ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
  double enc_ms = (t2.tv_sec - t1.tv_sec) * 1e3 + (t2.tv_nsec - t1.tv_nsec) / 1e6;
  /* every other of 1M: about 1 bit per entry */
  assert_true(b.len < (size_t)(n / SL_ACK_BLOCK + 1) * (SL_ACK_BLOCK / 8 + 4) + 64);
  sl_ack_set back = SL_ACK_SET_INIT;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  assert_int_equal(sl_ack_set_decode(&back, b.data, b.len, NULL), SL_OK);
  clock_gettime(CLOCK_MONOTONIC, &t2);
  double dec_ms = (t2.tv_sec - t1.tv_sec) * 1e3 + (t2.tv_nsec - t1.tv_nsec) / 1e6;
  assert_int_equal(back.entries, n / 2);
  printf("ack_set: every other of %" PRId64 " acked: %zu bytes encoded; add %.1f ms, "
         "encode %.1f ms, decode %.1f ms\n", n, b.len, add_ms, enc_ms, dec_ms);
  sl_ack_set_release(&back);
  sl_buf_reset(&b);

  /* dense: 1M acked with 100 holes -> runs, a few bytes per hole */
  sl_ack_set_release(&s);
  for (int64_t e = 0; e < n; e++)
    if (e % 10000 != 0) sl_ack_set_add(&s, 42, e);
  sl_ack_set_encode(&s, &b);
  printf("ack_set: 1M acked with 100 holes: %zu bytes encoded\n", b.len);
  assert_true(b.len < 2000);
  sl_buf_reset(&b);

  /* sparse: 1000 scattered acks over 1M -> runs */
  sl_ack_set_release(&s);
  for (int64_t e = 0; e < n; e += 1000) sl_ack_set_add(&s, 42, e);
  sl_ack_set_encode(&s, &b);
  printf("ack_set: 1000 acks scattered over 1M: %zu bytes encoded\n", b.len);
  assert_true(b.len < 1000 * 3 + 256 * 3);
  sl_ack_set_release(&s);
  sl_buf_release(&b);
}

/* Truncations and random flips of a valid encoding never crash or read out
 * of bounds; most are refused with SL_ECORRUPT. */
static void test_ack_set__malformed(void **state) {
  (void)state;
  sl_ack_set s = SL_ACK_SET_INIT;
  bool complete;
  for (int64_t e = 0; e < 9000; e += 3) sl_ack_set_add(&s, 7, e);
  for (int64_t e = 0; e < 9000; e++) sl_ack_set_add(&s, 9, e);
  sl_ack_set_add(&s, 9, 20000);
  (void)sl_ack_set_add_batch(&s, 11, 3, 1, 5, &complete, NULL);
  sl_buf b = SL_BUF_INIT;
  sl_ack_set_encode(&s, &b);
  for (size_t cut = 0; cut < b.len; cut++) {
    sl_ack_set t = SL_ACK_SET_INIT;
    assert_int_equal(sl_ack_set_decode(&t, b.data, cut, NULL), cut == 0 ? SL_OK : SL_ECORRUPT);
    sl_ack_set_release(&t);
  }
  srand(7);
  char *copy = malloc(b.len);
  for (int i = 0; i < 2000; i++) {
    memcpy(copy, b.data, b.len);
    copy[rand() % b.len] ^= (char)(1 + rand() % 255);
    sl_ack_set t = SL_ACK_SET_INIT;
    (void)sl_ack_set_decode(&t, copy, b.len, NULL);
    sl_ack_set_release(&t);
  }
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ack_set_decode(&s, "\x02", 1, &err), SL_ECORRUPT);
  free(copy);
  sl_ack_set_release(&s);
  sl_buf_release(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ack_set__random_vs_reference),
      cmocka_unit_test(test_ack_set__batch_indexes),
      cmocka_unit_test(test_ack_set__sizes),
      cmocka_unit_test(test_ack_set__malformed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
