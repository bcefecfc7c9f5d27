/*
 * sluice-metadata: entry point. Config table, then sl_service_main().
 */
#include <stdlib.h>

#include "common/service.h"
#include "metadata.slrpc.h"

typedef struct metadata_cfg {
  sl_service_opts svc;
  char *store;           /* etcd:URL[,URL...] or local:DIR */
  long long session_ttl; /* default session TTL in seconds */
} metadata_cfg;

static metadata_cfg cfg;

static const sl_conf_entry table[] = {
    SL_SERVICE_CONF(metadata_cfg, "SLUICE_METADATA_", "127.0.0.1:6660"),
    SL_CONF_STR(metadata_cfg, store, "etcd:http://127.0.0.1:2379",
                "SLUICE_METADATA_STORE",
                "etcd:http://host:port[,http://...] or local:DIR (standalone)"),
    SL_CONF_INT(metadata_cfg, session_ttl, "5", 2, 300,
                "SLUICE_METADATA_SESSION_TTL",
                "default session TTL in seconds for brokers and bookies"),
};

static sl_status start(void *c, sl_rpc_server *srv, void **state, sl_err *err) {
  (void)c;
  *state = NULL;
  static const sl_metadata_service_handlers handlers = {0};
  return sl_metadata_service_register(srv, &handlers, NULL, err);
}

int main(int argc, char **argv) {
  sl_service_def def = {
      .name = "metadata",
      .table = table,
      .n_table = sizeof(table) / sizeof(table[0]),
      .cfg = &cfg,
      .opts = &cfg.svc,
      .start = start,
  };
  return sl_service_main(&def, argc, argv);
}
