/* Namespaces and topics over real gRPC to a local-store service. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/metadata_util.h"

static sl_status create_ns(sl_rpc_channel *ch, const char *name,
                           Sluice__V1__NamespacePolicies *p, int64_t *version, sl_err *err) {
  Sluice__V1__CreateNamespaceRequest req = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  req.name = (char *)name;
  req.policies = p;
  Sluice__V1__Namespace *resp = NULL;
  sl_status st = sl_metadata_service_create_namespace(ch, &req, &resp, NULL, err);
  if (st == SL_OK) {
    assert_string_equal(resp->name, name);
    if (version) *version = resp->version;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

static sl_status get_ns(sl_rpc_channel *ch, const char *name, Sluice__V1__Namespace **out,
                        sl_err *err) {
  Sluice__V1__GetNamespaceRequest req = SLUICE__V1__GET_NAMESPACE_REQUEST__INIT;
  req.name = (char *)name;
  return sl_metadata_service_get_namespace(ch, &req, out, NULL, err);
}

static sl_status set_policies(sl_rpc_channel *ch, const char *name,
                              Sluice__V1__NamespacePolicies *p, int64_t expected,
                              int64_t *version, sl_err *err) {
  Sluice__V1__SetNamespacePoliciesRequest req = SLUICE__V1__SET_NAMESPACE_POLICIES_REQUEST__INIT;
  req.name = (char *)name;
  req.policies = p;
  req.expected_version = expected;
  Sluice__V1__Namespace *resp = NULL;
  sl_status st = sl_metadata_service_set_namespace_policies(ch, &req, &resp, NULL, err);
  if (st == SL_OK) {
    if (version) *version = resp->version;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

static sl_status delete_ns(sl_rpc_channel *ch, const char *name, sl_err *err) {
  Sluice__V1__DeleteNamespaceRequest req = SLUICE__V1__DELETE_NAMESPACE_REQUEST__INIT;
  req.name = (char *)name;
  Sluice__V1__DeleteNamespaceResponse *resp = NULL;
  sl_status st = sl_metadata_service_delete_namespace(ch, &req, &resp, NULL, err);
  if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static sl_status create_topic(sl_rpc_channel *ch, const char *name, uint32_t parts,
                              sl_err *err) {
  Sluice__V1__CreateTopicRequest req = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  req.name = (char *)name;
  req.partitions = parts;
  Sluice__V1__TopicInfo *resp = NULL;
  sl_status st = sl_metadata_service_create_topic(ch, &req, &resp, NULL, err);
  if (st == SL_OK) {
    assert_string_equal(resp->name, name);
    assert_int_equal(resp->partitions, parts);
    assert_true(resp->version > 0 && resp->create_time_ms > 0);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

static sl_status delete_topic(sl_rpc_channel *ch, const char *name, sl_err *err) {
  Sluice__V1__DeleteTopicRequest req = SLUICE__V1__DELETE_TOPIC_REQUEST__INIT;
  req.name = (char *)name;
  Sluice__V1__DeleteTopicResponse *resp = NULL;
  sl_status st = sl_metadata_service_delete_topic(ch, &req, &resp, NULL, err);
  if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static void test_md_namespaces__create_get_set_cas(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__NamespacePolicies p = SLUICE__V1__NAMESPACE_POLICIES__INIT;
  p.ensemble_size = 5;
  p.write_quorum = 3;
  p.ack_quorum = 2;
  p.retention_minutes = -1;
  p.deduplication = true;
  Sluice__V1__Action acts[] = {SLUICE__V1__ACTION__ACTION_PRODUCE, SLUICE__V1__ACTION__ACTION_CONSUME};
  Sluice__V1__Permission perm = SLUICE__V1__PERMISSION__INIT;
  perm.role = "app";
  perm.n_actions = 2;
  perm.actions = acts;
  Sluice__V1__Permission *perms[] = {&perm};
  p.n_permissions = 1;
  p.permissions = perms;
  int64_t v1 = 0, v2 = 0;
  mdt_expect(create_ns(l->ch, "public", &p, &v1, &err), SL_OK, &err);
  assert_true(v1 > 0);
  mdt_expect(create_ns(l->ch, "public", NULL, NULL, &err), SL_EEXIST, &err);

  Sluice__V1__Namespace *ns = NULL;
  mdt_expect(get_ns(l->ch, "public", &ns, &err), SL_OK, &err);
  assert_int_equal(ns->version, v1);
  assert_int_equal(ns->policies->ensemble_size, 5);
  assert_true(ns->policies->deduplication);
  assert_int_equal(ns->policies->n_permissions, 1);
  assert_string_equal(ns->policies->permissions[0]->role, "app");
  protobuf_c_message_free_unpacked(&ns->base, NULL);

  p.message_ttl_seconds = 60;
  mdt_expect(set_policies(l->ch, "public", &p, v1, &v2, &err), SL_OK, &err);
  assert_true(v2 > v1);
  /* The old version lost: ABORTED, and nothing changed. */
  p.message_ttl_seconds = 1;
  mdt_expect(set_policies(l->ch, "public", &p, v1, NULL, &err), SL_EVERSION, &err);
  mdt_expect(set_policies(l->ch, "public", &p, 0, NULL, &err), SL_EINVAL, &err);
  mdt_expect(set_policies(l->ch, "nope", &p, v2, NULL, &err), SL_ENOTFOUND, &err);
  mdt_expect(get_ns(l->ch, "public", &ns, &err), SL_OK, &err);
  assert_int_equal(ns->policies->message_ttl_seconds, 60);
  assert_int_equal(ns->version, v2);
  protobuf_c_message_free_unpacked(&ns->base, NULL);

  mdt_expect(create_ns(l->ch, "alpha", NULL, NULL, &err), SL_OK, &err);
  Sluice__V1__ListNamespacesRequest lr = SLUICE__V1__LIST_NAMESPACES_REQUEST__INIT;
  Sluice__V1__ListNamespacesResponse *list = NULL;
  mdt_expect(sl_metadata_service_list_namespaces(l->ch, &lr, &list, NULL, &err), SL_OK, &err);
  assert_int_equal(list->n_namespaces, 2);
  assert_string_equal(list->namespaces[0]->name, "alpha");
  assert_string_equal(list->namespaces[1]->name, "public");
  assert_int_equal(list->namespaces[1]->version, v2);
  protobuf_c_message_free_unpacked(&list->base, NULL);
}

static void test_md_namespaces__bad_policies(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__NamespacePolicies p = SLUICE__V1__NAMESPACE_POLICIES__INIT;
  p.ensemble_size = 1; /* with default Qw 2: E < Qw */
  mdt_expect(create_ns(l->ch, "n", &p, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "namespace n"));
  p.ensemble_size = 3;
  p.ack_quorum = 3; /* Qa > Qw */
  mdt_expect(create_ns(l->ch, "n", &p, NULL, &err), SL_EINVAL, &err);
  p.ack_quorum = 0;
  p.ensemble_size = 65;
  mdt_expect(create_ns(l->ch, "n", &p, NULL, &err), SL_EINVAL, &err);
  p.ensemble_size = 0;
  p.retention_minutes = -2;
  mdt_expect(create_ns(l->ch, "n", &p, NULL, &err), SL_EINVAL, &err);
  p.retention_minutes = 0;
  p.backlog_policy = (Sluice__V1__BacklogPolicy)9;
  mdt_expect(create_ns(l->ch, "n", &p, NULL, &err), SL_EINVAL, &err);
  p.backlog_policy = 0;
  Sluice__V1__Action bad = (Sluice__V1__Action)42;
  Sluice__V1__Permission perm = SLUICE__V1__PERMISSION__INIT;
  perm.role = "r";
  perm.n_actions = 1;
  perm.actions = &bad;
  Sluice__V1__Permission *perms[] = {&perm};
  p.n_permissions = 1;
  p.permissions = perms;
  mdt_expect(create_ns(l->ch, "n", &p, NULL, &err), SL_EINVAL, &err);
  perm.role = "";
  mdt_expect(create_ns(l->ch, "n", &p, NULL, &err), SL_EINVAL, &err);
  mdt_expect(create_ns(l->ch, "", NULL, NULL, &err), SL_EINVAL, &err);
  mdt_expect(create_ns(l->ch, "a/b", NULL, NULL, &err), SL_EINVAL, &err);
  Sluice__V1__Namespace *ns = NULL;
  mdt_expect(get_ns(l->ch, "n", &ns, &err), SL_ENOTFOUND, &err);
  mdt_expect(get_ns(l->ch, "bad name", &ns, &err), SL_EINVAL, &err);
}

static void test_md_namespaces__topics(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  mdt_expect(create_topic(l->ch, "public/orders", 4, &err), SL_ENOTFOUND, &err);
  assert_non_null(strstr(err.msg, "namespace public not found"));
  mdt_create_namespace(l->ch, "public");
  mdt_create_namespace(l->ch, "publicx");
  mdt_expect(create_topic(l->ch, "public/orders", 4, &err), SL_OK, &err);
  mdt_expect(create_topic(l->ch, "public/audit", 0, &err), SL_OK, &err);
  mdt_expect(create_topic(l->ch, "publicx/other", 0, &err), SL_OK, &err);
  mdt_expect(create_topic(l->ch, "public/orders", 1, &err), SL_EEXIST, &err);
  mdt_expect(create_topic(l->ch, "public/x", 10001, &err), SL_EINVAL, &err);
  mdt_expect(create_topic(l->ch, "public/x-partition-1", 0, &err), SL_EINVAL, &err);
  mdt_expect(create_topic(l->ch, "public", 0, &err), SL_EINVAL, &err);

  Sluice__V1__GetTopicRequest gr = SLUICE__V1__GET_TOPIC_REQUEST__INIT;
  gr.name = "public/orders";
  Sluice__V1__TopicInfo *t = NULL;
  mdt_expect(sl_metadata_service_get_topic(l->ch, &gr, &t, NULL, &err), SL_OK, &err);
  assert_int_equal(t->partitions, 4);
  assert_true(t->version > 0);
  protobuf_c_message_free_unpacked(&t->base, NULL);
  gr.name = "public/none";
  mdt_expect(sl_metadata_service_get_topic(l->ch, &gr, &t, NULL, &err), SL_ENOTFOUND, &err);

  Sluice__V1__ListTopicsRequest lr = SLUICE__V1__LIST_TOPICS_REQUEST__INIT;
  lr.namespace_ = "public";
  Sluice__V1__ListTopicsResponse *list = NULL;
  mdt_expect(sl_metadata_service_list_topics(l->ch, &lr, &list, NULL, &err), SL_OK, &err);
  assert_int_equal(list->n_topics, 2); /* not publicx's */
  assert_string_equal(list->topics[0]->name, "public/audit");
  assert_string_equal(list->topics[1]->name, "public/orders");
  protobuf_c_message_free_unpacked(&list->base, NULL);
  lr.namespace_ = "nope";
  mdt_expect(sl_metadata_service_list_topics(l->ch, &lr, &list, NULL, &err), SL_ENOTFOUND, &err);

  /* A namespace with topics cannot go. */
  mdt_expect(delete_ns(l->ch, "public", &err), SL_EPRECOND, &err);
  assert_non_null(strstr(err.msg, "public/audit"));
  mdt_expect(delete_topic(l->ch, "public/audit", &err), SL_OK, &err);
  mdt_expect(delete_topic(l->ch, "public/audit", &err), SL_ENOTFOUND, &err);
  mdt_expect(delete_topic(l->ch, "public/orders", &err), SL_OK, &err);
  mdt_expect(delete_ns(l->ch, "public", &err), SL_OK, &err);
  mdt_expect(delete_ns(l->ch, "public", &err), SL_ENOTFOUND, &err);
  /* And its topics cannot come back without it. */
  mdt_expect(create_topic(l->ch, "public/orders", 1, &err), SL_ENOTFOUND, &err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_md_namespaces__create_get_set_cas, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_namespaces__bad_policies, mdt_local_setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_namespaces__topics, mdt_local_setup,
                                      mdt_local_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
