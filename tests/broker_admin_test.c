/*
 * Admin calls through BrokerService and bad input, on a real cluster: etcd,
 * two metadata replicas, four bookies and two brokers on loopback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/testdata/raw_call.h"
#include "tests/broker_testlib.h"

static bkt_cluster *k;
static const sl_rpc_call_opts co = {.timeout_ms = 5000};

static int setup(void **state) {
  (void)state;
  k = bkt_start("broker_admin", 4, 2);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  bkt_stop(k);
  return 0;
}

static bool has_namespace(int broker, const char *name) {
  Sluice__V1__ListNamespacesRequest req = SLUICE__V1__LIST_NAMESPACES_REQUEST__INIT;
  Sluice__V1__ListNamespacesResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_broker_service_list_namespaces(k->broker[broker], &req, &resp, &co, &err);
  if (st != SL_OK) fail_msg("list namespaces: %s", sl_err_msg(&err, st));
  bool found = false;
  for (size_t i = 0; i < resp->n_namespaces; i++)
    found |= strcmp(resp->namespaces[i]->name, name) == 0;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return found;
}

/* Topic names listed in ns, joined by spaces. */
static void list_topics(int broker, const char *ns, char *out, size_t cap) {
  Sluice__V1__ListTopicsRequest req = SLUICE__V1__LIST_TOPICS_REQUEST__INIT;
  req.namespace_ = (char *)ns;
  Sluice__V1__ListTopicsResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_broker_service_list_topics(k->broker[broker], &req, &resp, &co, &err);
  if (st != SL_OK) fail_msg("list topics: %s", sl_err_msg(&err, st));
  size_t off = 0;
  out[0] = '\0';
  for (size_t i = 0; i < resp->n_topics; i++)
    off += (size_t)snprintf(out + off, cap - off, "%s%s:%u", i ? " " : "",
                            resp->topics[i]->name, resp->topics[i]->partitions);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static sl_status delete_topic(int broker, const char *name) {
  Sluice__V1__DeleteTopicRequest req = SLUICE__V1__DELETE_TOPIC_REQUEST__INIT;
  req.name = (char *)name;
  Sluice__V1__DeleteTopicResponse *resp = NULL;
  sl_status st = sl_broker_service_delete_topic(k->broker[broker], &req, &resp, &co, NULL);
  if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static sl_status delete_namespace(int broker, const char *name) {
  Sluice__V1__DeleteNamespaceRequest req = SLUICE__V1__DELETE_NAMESPACE_REQUEST__INIT;
  req.name = (char *)name;
  Sluice__V1__DeleteNamespaceResponse *resp = NULL;
  sl_status st = sl_broker_service_delete_namespace(k->broker[broker], &req, &resp, &co, NULL);
  if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static void test_broker_admin__fresh_cluster_has_public(void **state) {
  (void)state;
  assert_true(has_namespace(0, "public"));
  assert_true(has_namespace(1, "public"));
}

static void test_broker_admin__namespaces_and_topics(void **state) {
  (void)state;
  Sluice__V1__CreateNamespaceRequest nreq = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  Sluice__V1__NamespacePolicies pol = SLUICE__V1__NAMESPACE_POLICIES__INIT;
  pol.deduplication = true;
  nreq.name = "orders";
  nreq.policies = &pol;
  Sluice__V1__Namespace *ns = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_broker_service_create_namespace(k->broker[0], &nreq, &ns, &co, &err);
  if (st != SL_OK) fail_msg("create namespace: %s", sl_err_msg(&err, st));
  assert_string_equal(ns->name, "orders");
  protobuf_c_message_free_unpacked(&ns->base, NULL);
  /* Visible through the other broker; a second create is refused. */
  assert_true(has_namespace(1, "orders"));
  st = sl_broker_service_create_namespace(k->broker[1], &nreq, &ns, &co, NULL);
  assert_int_equal(st, SL_EEXIST);
  Sluice__V1__GetNamespaceRequest greq = SLUICE__V1__GET_NAMESPACE_REQUEST__INIT;
  greq.name = "orders";
  st = sl_broker_service_get_namespace(k->broker[1], &greq, &ns, &co, &err);
  if (st != SL_OK) fail_msg("get namespace: %s", sl_err_msg(&err, st));
  assert_true(ns->policies->deduplication);
  protobuf_c_message_free_unpacked(&ns->base, NULL);

  bkt_create_topic(k, 0, "orders/plain", 0);
  bkt_create_topic(k, 1, "orders/wide", 3);
  char topics[512];
  list_topics(0, "orders", topics, sizeof(topics));
  assert_string_equal(topics, "orders/plain:0 orders/wide:3");
  Sluice__V1__GetTopicRequest treq = SLUICE__V1__GET_TOPIC_REQUEST__INIT;
  treq.name = "orders/wide";
  Sluice__V1__TopicInfo *t = NULL;
  st = sl_broker_service_get_topic(k->broker[0], &treq, &t, &co, &err);
  if (st != SL_OK) fail_msg("get topic: %s", sl_err_msg(&err, st));
  assert_int_equal(t->partitions, 3);
  protobuf_c_message_free_unpacked(&t->base, NULL);
  /* A partitioned topic comes with its partitions: each can be looked up. */
  Sluice__V1__LookupResponse *l = NULL;
  st = bkt_lookup(k, 1, "orders/wide-partition-2", false, &l, &err);
  if (st != SL_OK) fail_msg("lookup partition: %s", sl_err_msg(&err, st));
  assert_int_equal(l->partitions, 3);
  assert_int_equal(l->owners[0]->index, 2);
  protobuf_c_message_free_unpacked(&l->base, NULL);

  /* A namespace with topics cannot go; without them it can. */
  assert_int_equal(delete_namespace(1, "orders"), SL_EPRECOND);
  assert_int_equal(delete_topic(0, "orders/plain"), SL_OK);
  list_topics(1, "orders", topics, sizeof(topics));
  assert_string_equal(topics, "orders/wide:3");
  assert_int_equal(delete_topic(1, "orders/plain"), SL_ENOTFOUND);
  assert_int_equal(delete_topic(1, "orders/wide"), SL_OK);
  assert_int_equal(delete_namespace(0, "orders"), SL_OK);
  assert_false(has_namespace(1, "orders"));
}

static void test_broker_admin__cluster_status_and_stats(void **state) {
  (void)state;
  bkt_create_topic(k, 0, "public/status", 2);
  Sluice__V1__LookupResponse *l = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = bkt_lookup(k, 0, "public/status", false, &l, &err);
  if (st != SL_OK) fail_msg("lookup: %s", sl_err_msg(&err, st));
  Sluice__V1__ClusterStatusRequest req = SLUICE__V1__CLUSTER_STATUS_REQUEST__INIT;
  Sluice__V1__ClusterStatusResponse *s = NULL;
  st = sl_broker_service_cluster_status(k->broker[1], &req, &s, &co, &err);
  if (st != SL_OK) fail_msg("cluster status: %s", sl_err_msg(&err, st));
  assert_int_equal(s->n_brokers, 2);
  assert_string_equal(s->brokers[0]->id, "broker-0");
  assert_string_equal(s->brokers[1]->address, sl_cluster_addr(k->c, SL_NODE_BROKER, 1));
  assert_int_equal(s->n_bookies, 4);
  /* The metadata service's auditor (one replica, elected at its start). */
  assert_string_equal(s->auditor, sl_cluster_id(k->c, SL_NODE_METADATA, 0));
  assert_int_equal(s->n_under_replicated_ledgers, 0);
  int found = 0;
  for (size_t i = 0; i < s->n_partitions; i++) {
    for (size_t j = 0; j < l->n_owners; j++) {
      if (strcmp(s->partitions[i]->partition, l->owners[j]->partition) != 0) continue;
      assert_string_equal(s->partitions[i]->broker_id, l->owners[j]->broker_id);
      assert_int_equal(s->partitions[i]->epoch, l->owners[j]->epoch);
      found++;
    }
  }
  assert_int_equal(found, 2);
  protobuf_c_message_free_unpacked(&s->base, NULL);

  /* Stats of one partition: its owner's epoch, no ledgers yet. */
  Sluice__V1__TopicStatsRequest sreq = SLUICE__V1__TOPIC_STATS_REQUEST__INIT;
  sreq.topic = "public/status-partition-1";
  Sluice__V1__TopicStats *ts = NULL;
  st = sl_broker_service_get_topic_stats(k->broker[0], &sreq, &ts, &co, &err);
  if (st != SL_OK) fail_msg("stats: %s", sl_err_msg(&err, st));
  assert_string_equal(ts->topic, "public/status-partition-1");
  assert_int_equal(ts->owner_epoch, l->owners[1]->epoch);
  assert_int_equal(ts->ledgers, 0);
  protobuf_c_message_free_unpacked(&ts->base, NULL);
  sreq.topic = "public/status"; /* partitioned: ask for one partition */
  assert_int_equal(sl_broker_service_get_topic_stats(k->broker[0], &sreq, &ts, &co, NULL),
                   SL_EINVAL);
  sreq.topic = "public/none";
  assert_int_equal(sl_broker_service_get_topic_stats(k->broker[1], &sreq, &ts, &co, NULL),
                   SL_ENOTFOUND);
  protobuf_c_message_free_unpacked(&l->base, NULL);
}

static void expect_lookup(const char *topic, sl_status want) {
  Sluice__V1__LookupResponse *l = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = bkt_lookup(k, 0, topic, false, &l, &err);
  if (st != want)
    fail_msg("lookup %s: want %s, got %s (%s)", topic, sl_status_str(want),
             sl_status_str(st), sl_err_msg(&err, st));
  if (st != SL_OK) print_message("lookup \"%s\": %s\n", topic, sl_err_msg(&err, st));
  if (l) protobuf_c_message_free_unpacked(&l->base, NULL);
}

static void test_broker_admin__bad_input(void **state) {
  (void)state;
  bkt_create_topic(k, 0, "public/two", 2);
  expect_lookup("", SL_EINVAL);
  expect_lookup("no-namespace", SL_EINVAL);
  expect_lookup("public/bad name!", SL_EINVAL);
  expect_lookup("public/../x", SL_EINVAL);
  expect_lookup("public/nope", SL_ENOTFOUND);
  expect_lookup("nons/topic", SL_ENOTFOUND);
  expect_lookup("public/two-partition-2", SL_ENOTFOUND);
  expect_lookup("public/two-partition-1", SL_OK);
  char longname[400];
  memset(longname, 'a', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  memcpy(longname, "public/", 7);
  expect_lookup(longname, SL_EINVAL);

  Sluice__V1__UnloadRequest ureq = SLUICE__V1__UNLOAD_REQUEST__INIT;
  ureq.topic = "bad name";
  Sluice__V1__UnloadResponse *u = NULL;
  assert_int_equal(sl_broker_service_unload(k->broker[1], &ureq, &u, &co, NULL), SL_EINVAL);
  bkt_create_topic(k, 0, "public/x", 0);
  Sluice__V1__CreateTopicRequest creq = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  creq.name = "public/x";
  Sluice__V1__TopicInfo *t = NULL;
  assert_int_equal(sl_broker_service_create_topic(k->broker[1], &creq, &t, &co, NULL),
                   SL_EEXIST);
  creq.name = "ghost/x";
  assert_int_equal(sl_broker_service_create_topic(k->broker[1], &creq, &t, &co, NULL),
                   SL_ENOTFOUND);

  /* Garbage bytes on the wire: a clean INVALID_ARGUMENT or INTERNAL, and the
   * broker keeps serving. */
  static const unsigned char junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a, 0x80};
  char details[256];
  const char *paths[] = {"/sluice.v1.BrokerService/Lookup",
                         "/sluice.v1.BrokerService/CreateTopic",
                         "/sluice.v1.BrokerService/Unload"};
  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
    grpc_status_code code =
        sl_test_raw_call(sl_cluster_addr(k->c, SL_NODE_BROKER, 0), paths[i], junk,
                         sizeof(junk), 5000, details, sizeof(details));
    print_message("%s with junk: code %d (%s)\n", paths[i], (int)code, details);
    assert_true(code == GRPC_STATUS_INVALID_ARGUMENT || code == GRPC_STATUS_INTERNAL);
  }
  expect_lookup("public/two", SL_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_broker_admin__fresh_cluster_has_public),
      cmocka_unit_test(test_broker_admin__namespaces_and_topics),
      cmocka_unit_test(test_broker_admin__cluster_status_and_stats),
      cmocka_unit_test(test_broker_admin__bad_input),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
