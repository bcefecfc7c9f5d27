#include "tests/metadata_cluster.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "tests/metadata_util.h"

sl_cluster *mdt_cluster_start(const char *name, int replicas, bool local_store,
                              const char *const *extra) {
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.metadata = replicas;
  o.bookies = 0;
  o.brokers = 0;
  o.local_store = local_store;
  o.name = name;
  o.metadata_args = extra;
  sl_cluster *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  return c;
}

sl_rpc_channel *mdt_cluster_connect(sl_cluster *c, int i) {
  return mdt_connect(sl_cluster_addr(c, SL_NODE_METADATA, i));
}

void mdt_etcd_kill9(sl_cluster *c) {
  sl_err err = SL_ERR_INIT;
  assert_non_null(sl_cluster_etcd(c));
  mdt_expect(sl_etcd_proc_kill9(sl_cluster_etcd(c), &err), SL_OK, &err);
}

void mdt_etcd_restart(sl_cluster *c) {
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_etcd_proc_restart(sl_cluster_etcd(c), &err), SL_OK, &err);
}
