/*
 * Tokens and grants on a real cluster (DESIGN.md §8): every service runs
 * with --auth_secret_file, the services call each other with a super-user
 * token, and clients get what their role's grants allow.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "bookie.slrpc.h"
#include "broker.slrpc.h"
#include "client/sluice.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/rpc_client.h"
#include "common/rpc_health.h"
#include "common/testing.h"
#include "metadata.slrpc.h"
#include "tests/cluster.h"

#define SERVICE_ROLE "sluice-service"

typedef struct fixture {
  char dir[256];
  char secret_file[300], token_file[300];
  char service[SL_AUTH_TOKEN_MAX + 8]; /* "Bearer ..." */
  char alice[SL_AUTH_TOKEN_MAX], bob[SL_AUTH_TOKEN_MAX];
  char expired[SL_AUTH_TOKEN_MAX], forged[SL_AUTH_TOKEN_MAX];
  sl_cluster *c;
} fixture;

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(fputs(text, f) >= 0, 1);
  assert_int_equal(fclose(f), 0);
}

static void sign(const char *secret, const char *role, int64_t exp, char *out) {
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_auth_sign_hs256((const uint8_t *)secret, strlen(secret), role, exp, out,
                                    SL_AUTH_TOKEN_MAX, &err);
  if (st != SL_OK) fail_msg("sign: %s", sl_err_msg(&err, st));
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  const char *tmp = getenv("TEST_TMPDIR");
  snprintf(f->dir, sizeof(f->dir), "%s/auth-XXXXXX", tmp ? tmp : "/tmp");
  assert_non_null(mkdtemp(f->dir));
  const char *secret = "0123456789abcdef0123456789abcdef-test-secret";
  snprintf(f->secret_file, sizeof(f->secret_file), "%s/secret", f->dir);
  write_file(f->secret_file, secret);
  char tok[SL_AUTH_TOKEN_MAX];
  sign(secret, SERVICE_ROLE, 0, tok);
  snprintf(f->token_file, sizeof(f->token_file), "%s/service.token", f->dir);
  write_file(f->token_file, tok);
  snprintf(f->service, sizeof(f->service), "Bearer %s", tok);
  int64_t now = sl_clock_wall_ms() / 1000;
  sign(secret, "alice", now + 3600, f->alice);
  sign(secret, "bob", 0, f->bob);
  sign(secret, "alice", now - 3600, f->expired);
  sign("another-secret-of-at-least-32-bytes!!", "alice", 0, f->forged);

  /* The same flags for every service; static: the cluster keeps them. */
  static const char *args[8];
  const char *a[] = {"--auth_secret_file", f->secret_file, "--auth_superusers",
                     SERVICE_ROLE ",ops", "--auth_token_file", f->token_file, NULL};
  memcpy(args, a, sizeof(a));
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.name = "auth";
  o.local_store = true;
  o.public_namespace = true;
  o.metadata_args = args;
  o.bookie_args = args;
  o.broker_args = args;
  o.authorization = f->service;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &f->c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  sl_cluster_destroy(f->c);
  free(f);
  return 0;
}

static sl_client *client(fixture *f, const char *token) {
  sl_client_opts co = SL_CLIENT_OPTS_INIT;
  co.url = sl_cluster_addr(f->c, SL_NODE_BROKER, 0);
  co.token = token;
  sl_client *cl = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_client_create(&co, &cl, &err), SL_OK);
  return cl;
}

/* A superuser client: the service token without its "Bearer ". */
static sl_client *root(fixture *f) { return client(f, f->service + strlen("Bearer ")); }

static sl_rpc_channel *channel(fixture *f, sl_node_kind kind, const char *token) {
  char authz[SL_AUTH_TOKEN_MAX + 8];
  snprintf(authz, sizeof(authz), "Bearer %s", token ? token : "");
  sl_rpc_channel_opts co = {.target = sl_cluster_addr(f->c, kind, 0),
                            .authorization = token ? authz : NULL};
  sl_rpc_channel *ch = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_OK);
  return ch;
}

/* ListBrokers on the metadata service with `token` (NULL = none). */
static sl_status metadata_call(fixture *f, const char *token) {
  sl_rpc_channel *ch = channel(f, SL_NODE_METADATA, token);
  Sluice__V1__ListBrokersRequest req = SLUICE__V1__LIST_BROKERS_REQUEST__INIT;
  Sluice__V1__ListBrokersResponse *resp = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 5000};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_list_brokers(ch, &req, &resp, &o, &err);
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  sl_rpc_channel_destroy(ch);
  return st;
}

/* GetInfo on bookie 0 with `token` (NULL = none). */
static sl_status bookie_call(fixture *f, const char *token) {
  sl_rpc_channel *ch = channel(f, SL_NODE_BOOKIE, token);
  Sluice__V1__GetInfoRequest req = SLUICE__V1__GET_INFO_REQUEST__INIT;
  Sluice__V1__GetInfoResponse *resp = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 5000};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_get_info(ch, &req, &resp, &o, &err);
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  sl_rpc_channel_destroy(ch);
  return st;
}

static int health(fixture *f, sl_node_kind kind) {
  sl_rpc_channel *ch = channel(f, kind, NULL);
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  sl_rpc_call_opts opts = {.timeout_ms = 5000};
  sl_err err = SL_ERR_INIT;
  int status = -1;
  if (sl_rpc_unary(ch, &sl_rpc_health_check, &req.base, &resp, &opts, &err) == SL_OK) {
    status = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  sl_rpc_channel_destroy(ch);
  return status;
}

static sl_status open_producer(sl_client *cl, const char *topic) {
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = topic;
  sl_producer *p = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_producer_create(cl, &po, &p, &err);
  if (st == SL_OK) sl_producer_destroy(p);
  return st;
}

static sl_status open_consumer(sl_client *cl, const char *topic, sl_consumer **out) {
  sl_consumer_opts so = SL_CONSUMER_OPTS_INIT;
  so.topic = topic;
  so.subscription = "s";
  so.from_earliest = true;
  sl_consumer *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_consumer_create(cl, &so, &c, &err);
  if (out != NULL) *out = c;
  else if (st == SL_OK) sl_consumer_destroy(c);
  return st;
}

static void grant(sl_client *cl, const char *ns, const char *role, const char *actions) {
  char *json = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_admin_namespace_grant(cl, ns, role, actions, &json, &err);
  if (st != SL_OK) fail_msg("grant %s %s: %s", role, actions, sl_err_msg(&err, st));
  free(json);
}

static void test_auth__calls_without_a_valid_token_are_refused(void **state) {
  fixture *f = *state;
  const char *bad[] = {NULL, f->expired, f->forged, "not-a-jwt"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    sl_client *cl = client(f, bad[i]);
    sl_strings l;
    sl_err err = SL_ERR_INIT;
    uint32_t *parts = NULL;
    assert_int_equal(sl_admin_topic_list(cl, "public", &l, &parts, &err), SL_EUNAUTH);
    assert_int_equal(open_producer(cl, "public/t"), SL_EUNAUTH);
    assert_int_equal(open_consumer(cl, "public/t", NULL), SL_EUNAUTH);
    sl_client_destroy(cl);
    assert_int_equal(metadata_call(f, bad[i]), SL_EUNAUTH);
    assert_int_equal(bookie_call(f, bad[i]), SL_EUNAUTH);
  }
  /* Probes carry no token. */
  for (int k = SL_NODE_METADATA; k <= SL_NODE_BROKER; k++)
    assert_int_equal(health(f, (sl_node_kind)k),
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
}

static void test_auth__internal_services_need_a_superuser(void **state) {
  fixture *f = *state;
  assert_int_equal(metadata_call(f, f->alice), SL_EPERM);
  assert_int_equal(bookie_call(f, f->alice), SL_EPERM);
  const char *svc = f->service + strlen("Bearer ");
  assert_int_equal(metadata_call(f, svc), SL_OK);
  assert_int_equal(bookie_call(f, svc), SL_OK);
}

static void test_auth__grants_decide_what_a_role_may_do(void **state) {
  fixture *f = *state;
  sl_client *su = root(f);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_admin_namespace_create(su, "team", &err), SL_OK);
  assert_int_equal(sl_admin_namespace_create(su, "other", &err), SL_OK);
  assert_int_equal(sl_admin_topic_create(su, "team/t", 0, &err), SL_OK);
  sl_client *alice = client(f, f->alice), *bob = client(f, f->bob);

  /* No grant yet: not even a lookup. */
  assert_int_equal(open_producer(alice, "team/t"), SL_EPERM);
  grant(su, "team", "alice", "produce");
  grant(su, "team", "bob", "consume");

  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = "team/t";
  sl_producer *p = NULL;
  sl_status st = sl_producer_create(alice, &po, &p, &err);
  if (st != SL_OK) fail_msg("alice produce: %s", sl_err_msg(&err, st));
  sl_message m = {.payload = "granted", .len = 7};
  sl_msg_id id;
  st = sl_producer_send(p, &m, &id, &err);
  if (st != SL_OK) fail_msg("send: %s", sl_err_msg(&err, st));
  sl_producer_destroy(p);
  assert_int_equal(open_consumer(alice, "team/t", NULL), SL_EPERM);
  assert_int_equal(sl_admin_topic_create(alice, "team/u", 0, &err), SL_EPERM);
  assert_int_equal(sl_admin_namespace_create(alice, "mine", &err), SL_EPERM);
  char *json = NULL;
  assert_int_equal(sl_admin_cluster_status(alice, &json, &err), SL_EPERM);
  assert_int_equal(sl_admin_namespace_grant(alice, "team", "alice", "admin", &json, &err),
                   SL_EPERM);

  sl_consumer *c = NULL;
  st = open_consumer(bob, "team/t", &c);
  if (st != SL_OK) fail_msg("bob consume: %s", sl_err_msg(&err, st));
  sl_received *r = NULL;
  st = sl_consumer_receive(c, (int)sl_test_scaled_ms(20000), &r, &err);
  if (st != SL_OK) fail_msg("receive: %s", sl_err_msg(&err, st));
  assert_int_equal(r->len, 7);
  assert_memory_equal(r->payload, "granted", 7);
  assert_int_equal(sl_consumer_ack(c, &r->id, &err), SL_OK);
  sl_received_free(r);
  sl_consumer_destroy(c);
  assert_int_equal(open_producer(bob, "team/t"), SL_EPERM);

  /* Admin on the namespace is enough for its topics, not for others. */
  grant(su, "team", "alice", "produce,admin");
  assert_int_equal(sl_admin_topic_create(alice, "team/u", 0, &err), SL_OK);
  assert_int_equal(sl_admin_topic_create(alice, "other/u", 0, &err), SL_EPERM);
  /* A revoked role is refused on the next open (this broker forgets its
   * cached grants when it forwards the change). */
  grant(su, "team", "bob", "");
  assert_int_equal(open_consumer(bob, "team/t", NULL), SL_EPERM);
  sl_client_destroy(alice);
  sl_client_destroy(bob);
  sl_client_destroy(su);
}

/* The broker publishes dead letters with its own rights, so a consumer may
 * name a dead-letter topic only where it may produce. */
static void test_auth__dead_letter_topic_needs_the_produce_right(void **state) {
  fixture *f = *state;
  sl_client *su = root(f);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_admin_namespace_create(su, "dlq-a", &err), SL_OK);
  assert_int_equal(sl_admin_namespace_create(su, "dlq-b", &err), SL_OK);
  assert_int_equal(sl_admin_topic_create(su, "dlq-a/t", 0, &err), SL_OK);
  grant(su, "dlq-a", "bob", "consume");
  sl_rpc_channel *ch = channel(f, SL_NODE_BROKER, f->bob);
  const char *dlq[] = {"dlq-b/letters", "dlq-a/letters"};
  sl_status want[] = {SL_EPERM, SL_OK};
  for (int i = 0; i < 2; i++) {
    sl_rpc_stream *s = NULL;
    sl_rpc_call_opts o = {.wait_for_ready = true};
    assert_int_equal(sl_broker_service_consume_open(ch, &o, &s, &err), SL_OK);
    Sluice__V1__Subscribe sub = SLUICE__V1__SUBSCRIBE__INIT;
    sub.topic = "dlq-a/t";
    sub.subscription = "s";
    sub.dead_letter_topic = (char *)dlq[i];
    sub.max_redeliveries = 1;
    Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
    req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_SUBSCRIBE;
    req.subscribe = &sub;
    sl_status st = sl_broker_service_consume_send(s, &req, 10000, &err);
    assert_true(st == SL_OK || st == SL_ECANCELED);
    Sluice__V1__ConsumeResponse *r = NULL;
    st = sl_broker_service_consume_recv(s, &r, (int)sl_test_scaled_ms(20000), &err);
    if (st == SL_OK && r != NULL && r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_CLOSED)
      st = (sl_status)(-(int)r->closed->status);
    else if (st == SL_OK && (r == NULL ||
                             r->kind_case != SLUICE__V1__CONSUME_RESPONSE__KIND_SUBSCRIBED))
      st = SL_EINTERNAL;
    if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
    if (st != want[i]) fail_msg("dead letters to %s: %s (%s)", dlq[i], sl_status_str(st), err.msg);
    sl_rpc_stream_destroy(s);
  }
  sl_rpc_channel_destroy(ch);
  sl_client_destroy(su);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_auth__calls_without_a_valid_token_are_refused),
      cmocka_unit_test(test_auth__internal_services_need_a_superuser),
      cmocka_unit_test(test_auth__grants_decide_what_a_role_may_do),
      cmocka_unit_test(test_auth__dead_letter_topic_needs_the_produce_right),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
