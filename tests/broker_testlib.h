/*
 * Shorthands for broker integration tests: a cluster with brokers from the
 * one harness (tests/cluster.h), channels to its brokers and metadata
 * service, and Lookup / admin calls that fail the test on transport errors.
 */
#ifndef SL_TESTS_BROKER_TESTLIB_H
#define SL_TESTS_BROKER_TESTLIB_H

#include <stdint.h>

#include "broker.slrpc.h"
#include "common/rpc_client.h"
#include "metadata.slrpc.h"
#include "tests/cluster.h"

/* Session TTL the test brokers run with (seconds): failover waits this long. */
#define BKT_SESSION_TTL 2

typedef struct bkt_cluster {
  sl_cluster *c;
  sl_rpc_channel *broker[SL_CLUSTER_MAX_NODES]; /* one per broker */
  sl_rpc_channel *md;                           /* every metadata replica */
} bkt_cluster;

/* Real etcd, 2 metadata replicas, `bookies` bookies, `brokers` brokers (with
 * BKT_SESSION_TTL), or fails the test. */
bkt_cluster *bkt_start(const char *name, int bookies, int brokers);
/* Closes the channels, stops every process, frees. */
void bkt_stop(bkt_cluster *k);

/* (Re)opens the channel to broker i, e.g. after a restart on the same port. */
void bkt_reconnect(bkt_cluster *k, int i);

/* Lookup through broker i. SL_OK with *out (caller frees), or the status. */
sl_status bkt_lookup(bkt_cluster *k, int i, const char *topic, bool authoritative,
                     Sluice__V1__LookupResponse **out, sl_err *err);

/* Creates topic `name` with `partitions` through broker i, or fails the test. */
void bkt_create_topic(bkt_cluster *k, int i, const char *name, uint32_t partitions);

/* Index of the broker whose id is `id`, or -1. */
int bkt_broker_index(bkt_cluster *k, const char *id);

/* The owner's broker id from the metadata service, "" when unowned; the
 * epoch goes to *epoch (0 when unowned). Fails the test on other errors. */
void bkt_owner(bkt_cluster *k, const char *partition, char *id, size_t cap,
               uint64_t *epoch);

void bkt_sleep_ms(int ms);

#endif
