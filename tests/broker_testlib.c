#include "tests/broker_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define CALL_TIMEOUT_MS 5000

static sl_rpc_channel *channel(const char *target) {
  sl_rpc_channel *ch = NULL;
  sl_err err = SL_ERR_INIT;
  sl_rpc_channel_opts co = {.target = target};
  sl_status st = sl_rpc_channel_create(&co, &ch, &err);
  if (st != SL_OK) fail_msg("channel %s: %s", target, sl_err_msg(&err, st));
  return ch;
}

bkt_cluster *bkt_start(const char *name, int bookies, int brokers) {
  static const char *const broker_args[] = {"--session_ttl", "2", NULL};
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.name = name;
  o.metadata = 2;
  o.bookies = bookies;
  o.brokers = brokers;
  o.broker_args = broker_args;
  o.public_namespace = true;
  bkt_cluster *k = calloc(1, sizeof(*k));
  assert_non_null(k);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &k->c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  for (int i = 0; i < brokers; i++)
    k->broker[i] = channel(sl_cluster_addr(k->c, SL_NODE_BROKER, i));
  k->md = channel(sl_cluster_metadata_target(k->c));
  return k;
}

void bkt_stop(bkt_cluster *k) {
  if (k == NULL) return;
  for (int i = 0; i < SL_CLUSTER_MAX_NODES; i++) sl_rpc_channel_destroy(k->broker[i]);
  sl_rpc_channel_destroy(k->md);
  sl_cluster_destroy(k->c);
  free(k);
}

void bkt_reconnect(bkt_cluster *k, int i) {
  sl_rpc_channel_destroy(k->broker[i]);
  k->broker[i] = channel(sl_cluster_addr(k->c, SL_NODE_BROKER, i));
}

sl_status bkt_lookup(bkt_cluster *k, int i, const char *topic, bool authoritative,
                     Sluice__V1__LookupResponse **out, sl_err *err) {
  Sluice__V1__LookupRequest req = SLUICE__V1__LOOKUP_REQUEST__INIT;
  req.topic = (char *)topic;
  req.authoritative = authoritative;
  sl_rpc_call_opts co = {.timeout_ms = CALL_TIMEOUT_MS};
  return sl_broker_service_lookup(k->broker[i], &req, out, &co, err);
}

void bkt_create_topic(bkt_cluster *k, int i, const char *name, uint32_t partitions) {
  Sluice__V1__CreateTopicRequest req = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  req.name = (char *)name;
  req.partitions = partitions;
  Sluice__V1__TopicInfo *t = NULL;
  sl_rpc_call_opts co = {.timeout_ms = CALL_TIMEOUT_MS};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_broker_service_create_topic(k->broker[i], &req, &t, &co, &err);
  if (st != SL_OK) fail_msg("create topic %s: %s", name, sl_err_msg(&err, st));
  assert_string_equal(t->name, name);
  assert_int_equal(t->partitions, partitions);
  protobuf_c_message_free_unpacked(&t->base, NULL);
}

int bkt_broker_index(bkt_cluster *k, const char *id) {
  for (int i = 0; i < sl_cluster_count(k->c, SL_NODE_BROKER); i++)
    if (strcmp(sl_cluster_id(k->c, SL_NODE_BROKER, i), id) == 0) return i;
  return -1;
}

void bkt_owner(bkt_cluster *k, const char *partition, char *id, size_t cap,
               uint64_t *epoch) {
  Sluice__V1__LookupOwnerRequest req = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
  req.partition = (char *)partition;
  Sluice__V1__OwnerInfo *o = NULL;
  sl_rpc_call_opts co = {.timeout_ms = CALL_TIMEOUT_MS};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_lookup_owner(k->md, &req, &o, &co, &err);
  if (st == SL_ENOTFOUND) {
    snprintf(id, cap, "%s", "");
    *epoch = 0;
    return;
  }
  if (st != SL_OK) fail_msg("lookup owner %s: %s", partition, sl_err_msg(&err, st));
  snprintf(id, cap, "%s", o->broker_id);
  *epoch = o->epoch;
  protobuf_c_message_free_unpacked(&o->base, NULL);
}

void bkt_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}
