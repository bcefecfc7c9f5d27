/*
 * Cluster shorthands for MetadataService integration tests: a real etcd
 * (or a local store) and N sluice-metadata replicas, no bookies or brokers,
 * through the one harness (tests/cluster.h).
 */
#ifndef SL_TESTS_METADATA_CLUSTER_H
#define SL_TESTS_METADATA_CLUSTER_H

#include <stdbool.h>

#include "common/rpc_client.h"
#include "tests/cluster.h"

/* Starts the cluster or fails the test. `extra` are extra sluice-metadata
 * flags (NULL-terminated, may be NULL). */
sl_cluster *mdt_cluster_start(const char *name, int replicas, bool local_store,
                              const char *const *extra);

/* A channel to metadata replica i. */
sl_rpc_channel *mdt_cluster_connect(sl_cluster *c, int i);

/* kill -9 etcd, or restart it (same data and port); fail the test on error. */
void mdt_etcd_kill9(sl_cluster *c);
void mdt_etcd_restart(sl_cluster *c);

#endif
