#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "metadata/etcd_json.h"

#define P(s) (s), strlen(s)

static void test_etcd_json__b64_known_vectors(void **state) {
  (void)state;
  const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (size_t i = 0; i < 7; i++) {
    char *e = sl_etcd_b64_encode(plain[i], strlen(plain[i]));
    assert_string_equal(e, enc[i]);
    free(e);
    uint8_t *d;
    size_t n;
    assert_int_equal(sl_etcd_b64_decode(P(enc[i]), &d, &n, NULL), SL_OK);
    assert_int_equal(n, strlen(plain[i]));
    assert_memory_equal(d, plain[i], n);
    assert_int_equal(d[n], 0);
    free(d);
  }
}

static void test_etcd_json__b64_roundtrip_binary(void **state) {
  (void)state;
  uint8_t buf[300];
  for (size_t i = 0; i < sizeof(buf); i++) buf[i] = (uint8_t)(i * 37 + 11);
  for (size_t len = 0; len < sizeof(buf); len += 7) {
    char *e = sl_etcd_b64_encode(buf, len);
    uint8_t *d;
    size_t n;
    assert_int_equal(sl_etcd_b64_decode(e, strlen(e), &d, &n, NULL), SL_OK);
    assert_int_equal(n, len);
    if (len) assert_memory_equal(d, buf, len);
    free(d);
    free(e);
  }
}

static void test_etcd_json__b64_rejects_bad(void **state) {
  (void)state;
  const char *bad[] = {"Zg=", "Z===", "Zg=a", "=Zg=", "Zm9v!A==", "Zm 9", "Zm9\n", "===="};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    sl_err err = SL_ERR_INIT;
    uint8_t *d = NULL;
    size_t n;
    assert_int_equal(sl_etcd_b64_decode(P(bad[i]), &d, &n, &err), SL_EINVAL);
    assert_null(d);
    assert_non_null(strstr(err.msg, "base64"));
  }
}

static void test_etcd_json__range_reply(void **state) {
  (void)state;
  const char *body =
      "{\"header\":{\"cluster_id\":\"14841639068965178418\",\"revision\":\"9007199254740993\"},"
      "\"kvs\":[{\"key\":\"YQ==\",\"create_revision\":\"2\",\"mod_revision\":\"5\","
      "\"version\":\"3\",\"value\":\"djE=\",\"lease\":\"7587869173580374283\"},"
      "{\"key\":\"AP8=\",\"mod_revision\":\"6\"}],\"more\":true,\"count\":\"7\"}";
  sl_etcd_range_reply r;
  assert_int_equal(sl_etcd_parse_range(P(body), "range", &r, NULL), SL_OK);
  /* 2^53 + 1: would be rounded through a double */
  assert_true(r.revision == 9007199254740993LL);
  assert_int_equal(r.n, 2);
  assert_true(r.more);
  assert_int_equal(r.count, 7);
  assert_int_equal(r.kvs[0].key_len, 1);
  assert_memory_equal(r.kvs[0].key, "a", 1);
  assert_string_equal((char *)r.kvs[0].value, "v1");
  assert_int_equal(r.kvs[0].create_revision, 2);
  assert_int_equal(r.kvs[0].mod_revision, 5);
  assert_int_equal(r.kvs[0].version, 3);
  assert_true(r.kvs[0].lease == 7587869173580374283LL);
  /* defaults left out: no value, no create_revision, no lease */
  assert_int_equal(r.kvs[1].key_len, 2);
  assert_int_equal(r.kvs[1].key[1], 0xff);
  assert_int_equal(r.kvs[1].value_len, 0);
  assert_int_equal(r.kvs[1].create_revision, 0);
  assert_int_equal(r.kvs[1].lease, 0);
  sl_etcd_range_reply_release(&r);

  assert_int_equal(sl_etcd_parse_range(P("{\"header\":{\"revision\":\"3\"}}"), "range",
                                       &r, NULL), SL_OK);
  assert_int_equal(r.n, 0);
  assert_false(r.more);
  assert_int_equal(r.revision, 3);
  sl_etcd_range_reply_release(&r);
}

static void test_etcd_json__txn_reply(void **state) {
  (void)state;
  sl_etcd_txn_reply r;
  const char *ok = "{\"header\":{\"revision\":\"10\"},\"succeeded\":true,\"responses\":"
                   "[{\"response_put\":{\"header\":{\"revision\":\"10\"}}},"
                   "{\"response_delete_range\":{\"header\":{},\"deleted\":\"1\"}}]}";
  assert_int_equal(sl_etcd_parse_txn(P(ok), "txn", &r, NULL), SL_OK);
  assert_true(r.succeeded);
  assert_int_equal(r.revision, 10);
  assert_int_equal(r.n_ops, 2);
  assert_int_equal(r.ops[0].type, SL_ETCD_OP_PUT);
  assert_int_equal(r.ops[1].type, SL_ETCD_OP_DELETE);
  assert_int_equal(r.ops[1].deleted, 1);
  sl_etcd_txn_reply_release(&r);

  /* A failed txn has no "succeeded" at all. */
  const char *failed = "{\"header\":{\"revision\":\"10\"},\"responses\":[{\"response_range\":"
                       "{\"header\":{\"revision\":\"10\"},\"kvs\":[{\"key\":\"YQ==\","
                       "\"mod_revision\":\"9\"}],\"count\":\"1\"}},{\"response_range\":"
                       "{\"header\":{\"revision\":\"10\"}}}]}";
  assert_int_equal(sl_etcd_parse_txn(P(failed), "txn", &r, NULL), SL_OK);
  assert_false(r.succeeded);
  assert_int_equal(r.n_ops, 2);
  assert_int_equal(r.ops[0].range.kvs[0].mod_revision, 9);
  assert_int_equal(r.ops[1].range.n, 0);
  sl_etcd_txn_reply_release(&r);
}

static void test_etcd_json__error_replies(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_etcd_range_reply r;
  const char *lease = "{\"error\":\"etcdserver: requested lease not found\",\"message\":"
                      "\"etcdserver: requested lease not found\",\"code\":5}";
  assert_int_equal(sl_etcd_parse_range(P(lease), "put \"k\"", &r, &err), SL_ENOTFOUND);
  assert_non_null(strstr(err.msg, "put \"k\""));
  assert_non_null(strstr(err.msg, "requested lease not found"));
  assert_non_null(strstr(err.msg, "code 5"));
  const char *compacted = "{\"error\":\"x\",\"message\":\"etcdserver: mvcc: required "
                          "revision has been compacted\",\"code\":11}";
  assert_int_equal(sl_etcd_parse_range(P(compacted), "range", &r, &err), SL_ERANGE);
  const char *noleader = "{\"error\":\"etcdserver: no leader\",\"code\":14}";
  assert_int_equal(sl_etcd_parse_range(P(noleader), "range", &r, &err), SL_EUNAVAIL);
  assert_non_null(strstr(err.msg, "no leader"));
  /* the stream form */
  sl_etcd_watch_reply w;
  const char *stream = "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":"
                       "\"etcdserver: no leader\",\"http_status\":\"Service Unavailable\"}}";
  assert_int_equal(sl_etcd_parse_watch(P(stream), "watch", &w, &err), SL_EUNAVAIL);
  assert_non_null(strstr(err.msg, "no leader"));
}

static void test_etcd_json__lease_replies(void **state) {
  (void)state;
  sl_etcd_lease_reply l;
  const char *grant = "{\"header\":{\"revision\":\"2\"},\"ID\":\"2324035529212201737\","
                      "\"TTL\":\"2\"}";
  assert_int_equal(sl_etcd_parse_lease(P(grant), "grant", &l, NULL), SL_OK);
  assert_true(l.id == 2324035529212201737LL);
  assert_int_equal(l.ttl, 2);
  const char *alive = "{\"result\":{\"header\":{\"revision\":\"2\"},\"ID\":\"12\","
                      "\"TTL\":\"5\"}}";
  assert_int_equal(sl_etcd_parse_lease(P(alive), "keepalive", &l, NULL), SL_OK);
  assert_int_equal(l.id, 12);
  assert_int_equal(l.ttl, 5);
  /* A dead lease's keepalive reply has no TTL. */
  const char *dead = "{\"result\":{\"header\":{\"revision\":\"2\"},\"ID\":\"12\"}}";
  assert_int_equal(sl_etcd_parse_lease(P(dead), "keepalive", &l, NULL), SL_OK);
  assert_int_equal(l.ttl, 0);
}

static void test_etcd_json__watch_lines(void **state) {
  (void)state;
  sl_etcd_watch_reply w;
  const char *created = "{\"result\":{\"header\":{\"revision\":\"2\"},\"created\":true}}";
  assert_int_equal(sl_etcd_parse_watch(P(created), "watch", &w, NULL), SL_OK);
  assert_true(w.created);
  assert_int_equal(w.revision, 2);
  assert_int_equal(w.n, 0);
  sl_etcd_watch_reply_release(&w);

  /* A PUT event has no "type". */
  const char *events =
      "{\"result\":{\"header\":{\"revision\":\"4\"},\"events\":["
      "{\"kv\":{\"key\":\"YQ==\",\"create_revision\":\"3\",\"mod_revision\":\"3\","
      "\"version\":\"1\",\"value\":\"MQ==\"}},"
      "{\"type\":\"DELETE\",\"kv\":{\"key\":\"YQ==\",\"mod_revision\":\"4\"}}]}}";
  assert_int_equal(sl_etcd_parse_watch(P(events), "watch", &w, NULL), SL_OK);
  assert_int_equal(w.n, 2);
  assert_int_equal(w.events[0].type, SL_ETCD_EVENT_PUT);
  assert_string_equal((char *)w.events[0].kv.value, "1");
  assert_int_equal(w.events[1].type, SL_ETCD_EVENT_DELETE);
  assert_int_equal(w.events[1].kv.mod_revision, 4);
  sl_etcd_watch_reply_release(&w);

  const char *compacted = "{\"result\":{\"header\":{},\"canceled\":true,"
                          "\"compact_revision\":\"2\"}}";
  assert_int_equal(sl_etcd_parse_watch(P(compacted), "watch", &w, NULL), SL_OK);
  assert_true(w.canceled);
  assert_int_equal(w.compact_revision, 2);
  assert_int_equal(w.revision, 0);
  sl_etcd_watch_reply_release(&w);
}

/* Every parser on one input: must fail cleanly, with a message. */
static void all_fail(const char *body, size_t len) {
  sl_err err;
  sl_etcd_range_reply r;
  sl_etcd_txn_reply t;
  sl_etcd_delete_reply d;
  sl_etcd_lease_reply l;
  sl_etcd_watch_reply w;
  int64_t rev;
  err = (sl_err)SL_ERR_INIT;
  sl_status st = sl_etcd_parse_range(body, len, "range", &r, &err);
  if (st == SL_OK) fail_msg("range accepted %.*s", (int)len, body);
  assert_true(err.msg[0] != '\0');
  err = (sl_err)SL_ERR_INIT;
  assert_int_not_equal(sl_etcd_parse_txn(body, len, "txn", &t, &err), SL_OK);
  assert_true(err.msg[0] != '\0');
  err = (sl_err)SL_ERR_INIT;
  assert_int_not_equal(sl_etcd_parse_delete(body, len, "delete", &d, &err), SL_OK);
  err = (sl_err)SL_ERR_INIT;
  assert_int_not_equal(sl_etcd_parse_lease(body, len, "lease", &l, &err), SL_OK);
  err = (sl_err)SL_ERR_INIT;
  assert_int_not_equal(sl_etcd_parse_watch(body, len, "watch", &w, &err), SL_OK);
  assert_true(err.msg[0] != '\0');
  err = (sl_err)SL_ERR_INIT;
  assert_int_not_equal(sl_etcd_parse_header(body, len, "put", &rev, &err), SL_OK);
}

static void test_etcd_json__malformed_inputs(void **state) {
  (void)state;
  const char *bad[] = {
      "", "{", "}", "[]", "null", "123", "\"str\"", "{\"a\":}", "{\"header\":5}",
      "{\"header\":{\"revision\":12}}",            /* int64 as a number */
      "{\"header\":{\"revision\":\"12x\"}}",
      "{\"header\":{\"revision\":\"\"}}",
      "{\"header\":{\"revision\":\" 12\"}}",
      "{\"header\":{\"revision\":\"99999999999999999999\"}}",
      "{\"header\":{\"revision\":true}}",
      "{\"error\":\"boom\"}",
      "{\"error\":{\"grpc_code\":\"x\"}}",
      "{\"error\":\"x\",\"code\":1e300}",
      "{\"header\":{\"revision\":[]}}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) all_fail(bad[i], strlen(bad[i]));
  /* NUL bytes and non-UTF-8 inside the buffer */
  const char bin[] = {'{', '"', 'a', 0, '"', ':', (char)0xff, '}'};
  all_fail(bin, sizeof(bin));
  /* Very deep nesting must not blow the stack. */
  size_t depth = 100000;
  char *deep = malloc(depth * 2);
  memset(deep, '[', depth);
  memset(deep + depth, ']', depth);
  all_fail(deep, depth * 2);
  free(deep);
}

static void test_etcd_json__malformed_fields_named(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_etcd_range_reply r;
  const char *badkey = "{\"kvs\":[{\"key\":\"@@@@\",\"mod_revision\":\"1\"}]}";
  assert_int_equal(sl_etcd_parse_range(P(badkey), "range \"x\"", &r, &err), SL_EINTERNAL);
  assert_non_null(strstr(err.msg, "key"));
  assert_non_null(strstr(err.msg, "base64"));
  assert_non_null(strstr(err.msg, "range \"x\""));
  const char *kvs = "{\"kvs\":[1]}";
  assert_int_equal(sl_etcd_parse_range(P(kvs), "range", &r, &err), SL_EINTERNAL);
  assert_non_null(strstr(err.msg, "kv"));
  sl_etcd_watch_reply w;
  sl_etcd_txn_reply t;
  const char *type = "{\"result\":{\"events\":[{\"type\":\"EXPLODE\",\"kv\":"
                     "{\"key\":\"YQ==\",\"mod_revision\":\"3\"}}]}}";
  assert_int_equal(sl_etcd_parse_watch(P(type), "watch", &w, &err), SL_EINTERNAL);
  assert_non_null(strstr(err.msg, "type"));
  const char *norev = "{\"result\":{\"events\":[{\"kv\":{\"key\":\"YQ==\"}}]}}";
  assert_int_equal(sl_etcd_parse_watch(P(norev), "watch", &w, &err), SL_EINTERNAL);
  assert_non_null(strstr(err.msg, "mod_revision"));
  /* Type confusion in the fields each parser reads. */
  assert_int_equal(sl_etcd_parse_range(P("{\"kvs\":{}}"), "range", &r, &err), SL_EINTERNAL);
  assert_int_equal(sl_etcd_parse_range(P("{\"more\":\"yes\"}"), "range", &r, &err),
                   SL_EINTERNAL);
  assert_int_equal(sl_etcd_parse_txn(P("{\"responses\":7}"), "txn", &t, &err), SL_EINTERNAL);
  assert_int_equal(sl_etcd_parse_txn(P("{\"succeeded\":1}"), "txn", &t, &err), SL_EINTERNAL);
  sl_etcd_delete_reply d;
  assert_int_equal(sl_etcd_parse_delete(P("{\"deleted\":{}}"), "delete", &d, &err),
                   SL_EINTERNAL);
  sl_etcd_lease_reply l;
  assert_int_equal(sl_etcd_parse_lease(P("{\"result\":[]}"), "lease", &l, &err),
                   SL_EINTERNAL);
  assert_int_equal(sl_etcd_parse_lease(P("{\"TTL\":7}"), "lease", &l, &err), SL_EINTERNAL);
  assert_non_null(strstr(err.msg, "TTL"));
  assert_int_equal(sl_etcd_parse_watch(P("{\"result\":[]}"), "watch", &w, &err),
                   SL_EINTERNAL);
  assert_int_equal(sl_etcd_parse_watch(P("{}"), "watch", &w, &err), SL_EINTERNAL);
  assert_int_equal(sl_etcd_parse_watch(P("{\"result\":{\"events\":[{}]}}"), "watch", &w,
                                       &err), SL_EINTERNAL);
  /* A failure halfway through an array frees what it had parsed. */
  const char *half = "{\"kvs\":[{\"key\":\"YQ==\"},{\"key\":\"!\"}]}";
  assert_int_equal(sl_etcd_parse_range(P(half), "range", &r, &err), SL_EINTERNAL);
  const char *halft = "{\"succeeded\":true,\"responses\":[{\"response_put\":{}},{\"x\":{}}]}";
  assert_int_equal(sl_etcd_parse_txn(P(halft), "txn", &t, &err), SL_EINTERNAL);
  assert_non_null(strstr(err.msg, "responses"));
}

static void test_etcd_json__request_builders(void **state) {
  (void)state;
  cJSON *o = cJSON_CreateObject();
  sl_etcd_json_add_bytes(o, "key", "\0\xff", 2);
  sl_etcd_json_add_int64(o, "ID", 7587869173580374283LL);
  sl_etcd_json_add_int64(o, "neg", -5);
  char *text = cJSON_PrintUnformatted(o);
  assert_string_equal(text, "{\"key\":\"AP8=\",\"ID\":\"7587869173580374283\",\"neg\":\"-5\"}");
  cJSON_free(text);
  cJSON_Delete(o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_etcd_json__b64_known_vectors),
      cmocka_unit_test(test_etcd_json__b64_roundtrip_binary),
      cmocka_unit_test(test_etcd_json__b64_rejects_bad),
      cmocka_unit_test(test_etcd_json__range_reply),
      cmocka_unit_test(test_etcd_json__txn_reply),
      cmocka_unit_test(test_etcd_json__error_replies),
      cmocka_unit_test(test_etcd_json__lease_replies),
      cmocka_unit_test(test_etcd_json__watch_lines),
      cmocka_unit_test(test_etcd_json__malformed_inputs),
      cmocka_unit_test(test_etcd_json__malformed_fields_named),
      cmocka_unit_test(test_etcd_json__request_builders),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
