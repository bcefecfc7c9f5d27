/*
 * libFuzzer target for the etcd JSON reply parsers (metadata/etcd_json.h).
 *
 * Every parser gets the same bytes. Each must return a status without
 * crashing, leaking or reading out of bounds, and a success must leave a
 * struct whose invariants hold (the checks below abort otherwise). The
 * base64 codec must round-trip whatever it accepted.
 *
 * Build and run: see metadata/fuzz/BUILD.bazel.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metadata/etcd_json.h"

static void check_kv(const sl_etcd_kv *kv) {
  SL_ASSERT(kv->key != NULL && kv->value != NULL);
  SL_ASSERT(kv->key[kv->key_len] == 0 && kv->value[kv->value_len] == 0);
}

static void check_range(const sl_etcd_range_reply *r) {
  SL_ASSERT(r->n == 0 || r->kvs != NULL);
  for (size_t i = 0; i < r->n; i++) check_kv(&r->kvs[i]);
}

static void fuzz_parsers(const char *body, size_t len) {
  sl_err err = SL_ERR_INIT;
  sl_etcd_range_reply r;
  if (sl_etcd_parse_range(body, len, "range", &r, &err) == SL_OK) {
    check_range(&r);
    sl_etcd_range_reply_release(&r);
  } else {
    SL_ASSERT(err.msg[0] != '\0');
  }
  sl_etcd_txn_reply t;
  if (sl_etcd_parse_txn(body, len, "txn", &t, &err) == SL_OK) {
    for (size_t i = 0; i < t.n_ops; i++)
      if (t.ops[i].type == SL_ETCD_OP_RANGE) check_range(&t.ops[i].range);
    sl_etcd_txn_reply_release(&t);
  }
  sl_etcd_delete_reply d;
  (void)sl_etcd_parse_delete(body, len, "delete", &d, &err);
  sl_etcd_lease_reply l;
  (void)sl_etcd_parse_lease(body, len, "lease", &l, &err);
  int64_t rev;
  (void)sl_etcd_parse_header(body, len, "put", &rev, &err);
  sl_etcd_watch_reply w;
  if (sl_etcd_parse_watch(body, len, "watch", &w, &err) == SL_OK) {
    for (size_t i = 0; i < w.n; i++) {
      check_kv(&w.events[i].kv);
      SL_ASSERT(w.events[i].kv.mod_revision > 0);
    }
    sl_etcd_watch_reply_release(&w);
  }
}

static void fuzz_base64(const char *text, size_t len) {
  uint8_t *out = NULL;
  size_t n = 0;
  if (sl_etcd_b64_decode(text, len, &out, &n, NULL) != SL_OK) return;
  char *again = sl_etcd_b64_encode(out, n);
  /* Strict decoding accepts only canonical text, except for the unused
   * low bits of the last group; compare by decoding once more. */
  uint8_t *out2 = NULL;
  size_t n2 = 0;
  SL_ASSERT(sl_etcd_b64_decode(again, strlen(again), &out2, &n2, NULL) == SL_OK);
  SL_ASSERT(n2 == n && memcmp(out, out2, n) == 0);
  free(out2);
  free(again);
  free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_parsers((const char *)data, size);
  fuzz_base64((const char *)data, size);
  return 0;
}
