/*
 * What sluice-cluster shows once a cluster is up: the bookies registered in
 * the metadata service, and one entry written to a write quorum of bookies
 * under a ledger id from the metadata service, then read back and checked;
 * with brokers, the owners of a partitioned topic in namespace "public"
 * (which the cluster must have) through Lookup.
 */
#ifndef SL_TESTS_CLUSTER_DEMO_H
#define SL_TESTS_CLUSTER_DEMO_H

#include <stdio.h>

#include "common/status.h"
#include "tests/cluster.h"

/* Runs the demo on c, printing to out. Fails with a message naming the step. */
sl_status sl_cluster_demo(sl_cluster *c, FILE *out, sl_err *err);

#endif
