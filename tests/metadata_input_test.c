/*
 * Bad input to sluice-metadata on a real etcd: bad names, unknown ids,
 * empty and garbage requests, huge values, wrong versions, and corrupt
 * values in etcd itself. Each gets its status; the process never crashes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "metadata/store.h"
#include "tests/metadata_cluster.h"
#include "tests/metadata_util.h"

typedef mdt_cluster_fx fixture;

static int setup(void **state) {
  *state = mdt_cluster_fx_new("mdinput", NULL);
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  /* Whatever happened, the service is still up and answering. */
  assert_true(sl_cluster_running(f->c, SL_NODE_METADATA, 0));
  Sluice__V1__ListNamespacesRequest req = SLUICE__V1__LIST_NAMESPACES_REQUEST__INIT;
  Sluice__V1__ListNamespacesResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_list_namespaces(f->ch, &req, &resp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  mdt_cluster_fx_free(f);
  return 0;
}

/* Calls method m with req; returns the status and frees any response. */
static sl_status raw(sl_rpc_channel *ch, const sl_rpc_method *m, const ProtobufCMessage *req,
                     sl_err *err) {
  ProtobufCMessage *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_status st = sl_rpc_unary(ch, m, req, &resp, &o, err);
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  return st;
}

/* An empty request to every unary method: harmless reads answer OK,
 * everything that names something says INVALID_ARGUMENT. */
static void test_metadata_input__empty_requests(void **state) {
  fixture *f = *state;
  for (size_t i = 0; i < sl_metadata_service.n_methods; i++) {
    const sl_rpc_method *m = &sl_metadata_service.methods[i];
    if (m->kind != SL_RPC_UNARY) continue;
    ProtobufCMessage *req = calloc(1, m->request->sizeof_message);
    protobuf_c_message_init(m->request, req);
    sl_err err = SL_ERR_INIT;
    sl_status st = raw(f->ch, m, req, &err);
    free(req);
    bool harmless = strstr(m->path, "/List") != NULL || strstr(m->path, "/Allocate") != NULL;
    bool list_of_one = strstr(m->path, "/ListTopics") || strstr(m->path, "/ListCursors");
    sl_status want = harmless && !list_of_one ? SL_OK : SL_EINVAL;
    if (st != want)
      fail_msg("%s with an empty request: %s (%s), want %s", m->path, sl_status_str(st),
               sl_err_msg(&err, st), sl_status_str(want));
  }
}

/* Bytes of another message type that do not parse as the method's request
 * (field 1 is a string where the request has an integer). */
static void test_metadata_input__garbage_bytes(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  sl_rpc_method m = *SL_METADATA_SERVICE_GET_LEDGER;
  m.request = &sluice__v1__get_cursor_request__descriptor;
  Sluice__V1__GetCursorRequest junk = SLUICE__V1__GET_CURSOR_REQUEST__INIT;
  junk.partition = "\xff\xfe garbage \x01";
  mdt_expect(raw(f->ch, &m, &junk.base, &err), SL_EINVAL, &err);
  m = *SL_METADATA_SERVICE_KEEP_ALIVE;
  m.request = &sluice__v1__get_cursor_request__descriptor;
  mdt_expect(raw(f->ch, &m, &junk.base, &err), SL_EINVAL, &err);
  /* And a server stream. */
  m = *SL_METADATA_SERVICE_WATCH;
  m.request = &sluice__v1__get_cursor_request__descriptor;
  sl_rpc_stream *s = NULL;
  junk.partition = "x";
  junk.subscription = "\x80\x80\x80";
  Sluice__V1__GetCursorRequest *jp = &junk;
  sl_status st = sl_rpc_stream_open(f->ch, &m, &jp->base, NULL, &s, &err);
  if (st == SL_OK) {
    ProtobufCMessage *msg = NULL;
    st = sl_rpc_stream_recv(s, &msg, 5000, &err);
    if (msg != NULL) protobuf_c_message_free_unpacked(msg, NULL);
    sl_rpc_stream_destroy(s);
  }
  mdt_expect(st, SL_EINVAL, &err);
}

static void test_metadata_input__bad_names_and_unknown_ids(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  static const char *const bad[] = {"", "a", "a/", "/b", "a/b/c", "a b/c", "a/b\n",
                                    "a/b-partition-01", "../x", "a/\xc3\xa9"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    Sluice__V1__LookupOwnerRequest lo = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
    lo.partition = (char *)bad[i];
    mdt_expect(raw(f->ch, SL_METADATA_SERVICE_LOOKUP_OWNER, &lo.base, &err), SL_EINVAL, &err);
    Sluice__V1__GetTopicRequest gt = SLUICE__V1__GET_TOPIC_REQUEST__INIT;
    gt.name = (char *)bad[i];
    mdt_expect(raw(f->ch, SL_METADATA_SERVICE_GET_TOPIC, &gt.base, &err), SL_EINVAL, &err);
    Sluice__V1__GetManagedLedgerRequest gm = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
    gm.partition = (char *)bad[i];
    mdt_expect(raw(f->ch, SL_METADATA_SERVICE_GET_MANAGED_LEDGER, &gm.base, &err), SL_EINVAL,
               &err);
    mdt_expect(mdt_st_update_cursor(f->ch, bad[i], "s", 1, 0, 0, NULL, &err), SL_EINVAL, &err);
  }
  char longname[400];
  memset(longname, 'n', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  Sluice__V1__CreateNamespaceRequest cn = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  cn.name = longname;
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_CREATE_NAMESPACE, &cn.base, &err), SL_EINVAL, &err);

  /* Unknown things. */
  Sluice__V1__GetLedgerRequest gl = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  gl.ledger_id = 99999999;
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_GET_LEDGER, &gl.base, &err), SL_ENOTFOUND, &err);
  assert_non_null(strstr(err.msg, "ledger 99999999"));
  Sluice__V1__KeepAliveRequest ka = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
  ka.session_id = 0x7fffffffffff;
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_KEEP_ALIVE, &ka.base, &err), SL_ENOTFOUND, &err);
  mdt_expect(mdt_st_get_cursor(f->ch, "a/b", "nosub", NULL, NULL, &err), SL_ENOTFOUND, &err);
  Sluice__V1__LookupOwnerRequest lo = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
  lo.partition = "a/b";
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_LOOKUP_OWNER, &lo.base, &err), SL_ENOTFOUND, &err);
  Sluice__V1__DeleteLedgerRequest dl = SLUICE__V1__DELETE_LEDGER_REQUEST__INIT;
  dl.ledger_id = 99999999;
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_DELETE_LEDGER, &dl.base, &err), SL_ENOTFOUND, &err);
}

static void test_metadata_input__wrong_versions_and_huge_values(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  int64_t v = 0;
  mdt_expect(mdt_st_update_cursor(f->ch, "a/b", "s", 1, 0, 0, &v, &err), SL_OK, &err);
  mdt_expect(mdt_st_update_cursor(f->ch, "a/b", "s", 2, v + 1, 0, NULL, &err), SL_EVERSION, &err);
  mdt_expect(mdt_st_update_cursor(f->ch, "a/b", "s", 2, v - 1, 0, NULL, &err), SL_EVERSION, &err);
  mdt_expect(mdt_st_update_cursor(f->ch, "a/b", "s", 2, 0, 0, NULL, &err), SL_EEXIST, &err);
  mdt_expect(mdt_st_update_cursor(f->ch, "a/b", "s", 2, v, 0, NULL, &err), SL_OK, &err);

  /* A 4 MiB cursor: past the store's value limit. */
  enum { N = 2 << 20 };
  uint64_t *bounds = malloc(N * sizeof(*bounds));
  for (size_t i = 0; i < N; i++) bounds[i] = 1000;
  Sluice__V1__AckedRanges r = SLUICE__V1__ACKED_RANGES__INIT;
  r.ledger_id = 1;
  r.bounds = bounds;
  r.n_bounds = N;
  Sluice__V1__AckedRanges *rs[] = {&r};
  Sluice__V1__CursorInfo c = SLUICE__V1__CURSOR_INFO__INIT;
  c.partition = "a/b";
  c.subscription = "big";
  c.acked = rs;
  c.n_acked = 1;
  Sluice__V1__UpdateCursorRequest ur = SLUICE__V1__UPDATE_CURSOR_REQUEST__INIT;
  ur.info = &c;
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_UPDATE_CURSOR, &ur.base, &err), SL_ETOOBIG, &err);
  /* 20 MiB: past gRPC's message limit. */
  uint64_t *more = realloc(bounds, 5 * (size_t)N * sizeof(*bounds));
  assert_non_null(more);
  for (size_t i = N; i < 5 * (size_t)N; i++) more[i] = 1000;
  r.bounds = more;
  r.n_bounds = 5 * (size_t)N;
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_UPDATE_CURSOR, &ur.base, &err), SL_ETOOBIG, &err);
  free(more);
  mdt_expect(mdt_st_get_cursor(f->ch, "a/b", "big", NULL, NULL, &err), SL_ENOTFOUND, &err);
}

/* Values in etcd that are not what they should be: DATA_LOSS naming the key. */
static void test_metadata_input__corrupt_stored_values(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  char uri[128];
  snprintf(uri, sizeof(uri), "etcd:%s", sl_cluster_etcd(f->c)->endpoint);
  sl_store *store = NULL;
  mdt_expect(sl_store_open(uri, NULL, &store, &err), SL_OK, &err);
  static const char junk[] = "\xff\xff\xff\xff\x0f not protobuf";
  const char *keys[] = {"/sluice/ledgers/77", "/sluice/brokers/evil",
                        "/sluice/cursors/a/b/evil"};
  for (int i = 0; i < 3; i++)
    mdt_expect(sl_store_put(store, keys[i], strlen(keys[i]), junk, sizeof(junk) - 1,
                            SL_STORE_REV_ANY, 0, NULL, &err),
               SL_OK, &err);
  sl_store_close(store);

  Sluice__V1__GetLedgerRequest gl = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  gl.ledger_id = 77;
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_GET_LEDGER, &gl.base, &err), SL_ECORRUPT, &err);
  assert_non_null(strstr(err.msg, "/sluice/ledgers/77"));
  Sluice__V1__ListBrokersRequest lb = SLUICE__V1__LIST_BROKERS_REQUEST__INIT;
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_LIST_BROKERS, &lb.base, &err), SL_ECORRUPT, &err);
  assert_non_null(strstr(err.msg, "brokers/evil"));
  Sluice__V1__ListCursorsRequest lc = SLUICE__V1__LIST_CURSORS_REQUEST__INIT;
  lc.partition = "a/b";
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_LIST_CURSORS, &lc.base, &err), SL_ECORRUPT, &err);
  mdt_expect(mdt_st_get_cursor(f->ch, "a/b", "evil", NULL, NULL, &err), SL_ECORRUPT, &err);
  /* A corrupt ledger cannot be updated, nor deleted: only a CLOSED ledger
   * is deleted, and this one's state is unknown (an operator's job). */
  Sluice__V1__LedgerInfo info;
  Sluice__V1__EnsembleSegment seg;
  mdt_ledger_init(&info, &seg, NULL);
  info.ledger_id = 77;
  Sluice__V1__UpdateLedgerRequest ul = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  ul.info = &info;
  ul.expected_version = 1;
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_UPDATE_LEDGER, &ul.base, &err), SL_ECORRUPT, &err);
  Sluice__V1__DeleteLedgerRequest dl = SLUICE__V1__DELETE_LEDGER_REQUEST__INIT;
  dl.ledger_id = 77;
  mdt_expect(raw(f->ch, SL_METADATA_SERVICE_DELETE_LEDGER, &dl.base, &err), SL_ECORRUPT, &err);
  /* A watch over the corrupt registration ends with DATA_LOSS. */
  Sluice__V1__WatchRequest wr = SLUICE__V1__WATCH_REQUEST__INIT;
  sl_rpc_stream *w = NULL;
  mdt_expect(sl_metadata_service_watch_open(f->ch, &wr, NULL, &w, &err), SL_OK, &err);
  Sluice__V1__WatchEvent *ev = NULL;
  mdt_expect(sl_metadata_service_watch_recv(w, &ev, 10000, &err), SL_ECORRUPT, &err);
  sl_rpc_stream_destroy(w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_metadata_input__empty_requests, setup, teardown),
      cmocka_unit_test_setup_teardown(test_metadata_input__garbage_bytes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_metadata_input__bad_names_and_unknown_ids, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_metadata_input__wrong_versions_and_huge_values,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_metadata_input__corrupt_stored_values, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
