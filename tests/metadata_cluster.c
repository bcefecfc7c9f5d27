#include "tests/metadata_cluster.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
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

mdt_cluster_fx *mdt_cluster_fx_new(const char *name, const char *const *extra) {
  mdt_cluster_fx *f = calloc(1, sizeof(*f));
  if (f == NULL) fail_msg("out of memory");
  f->c = mdt_cluster_start(name, 1, false, extra);
  f->ch = mdt_cluster_connect(f->c, 0);
  return f;
}

void mdt_cluster_stop(sl_cluster *c, sl_rpc_channel *ch) {
  sl_rpc_channel_destroy(ch);
  sl_cluster_destroy(c);
}

void mdt_cluster_fx_free(mdt_cluster_fx *f) {
  mdt_cluster_stop(f->c, f->ch);
  free(f);
}

int mdt_cluster_fx_teardown(void **state) {
  mdt_cluster_fx_free(*state);
  return 0;
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
