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

/* Destroys ch (may be NULL), then the cluster. */
void mdt_cluster_stop(sl_cluster *c, sl_rpc_channel *ch);

/* The usual test fixture: one replica on a real etcd and a channel to it.
 * _new starts it (name and extra as for mdt_cluster_start) or fails the
 * test; _free stops both and frees it (cmocka setup/teardown bodies). */
typedef struct mdt_cluster_fx {
  sl_cluster *c;
  sl_rpc_channel *ch;
} mdt_cluster_fx;
mdt_cluster_fx *mdt_cluster_fx_new(const char *name, const char *const *extra);
void mdt_cluster_fx_free(mdt_cluster_fx *f);
/* cmocka teardown: mdt_cluster_fx_free(*state). */
int mdt_cluster_fx_teardown(void **state);

/* kill -9 etcd, or restart it (same data and port); fail the test on error. */
void mdt_etcd_kill9(sl_cluster *c);
void mdt_etcd_restart(sl_cluster *c);

#endif
