/*
 * sluice-bookie: entry point. Config table, then sl_service_main().
 */
#include <stdlib.h>

#include "common/service.h"
#include "bookie.slrpc.h"

typedef struct bookie_cfg {
  sl_service_opts svc;
  char *id;        /* unique bookie id */
  char *data_dir;  /* journal and ledger storage */
  char *metadata;  /* metadata service gRPC target; empty = no registration */
  char *advertise; /* address to register; empty = listen address */
} bookie_cfg;

static bookie_cfg cfg;

static const sl_conf_entry table[] = {
    SL_SERVICE_CONF(bookie_cfg, "SLUICE_BOOKIE_", "127.0.0.1:3181"),
    SL_CONF_STR(bookie_cfg, id, "bookie-0", "SLUICE_BOOKIE_ID",
                "unique bookie id, e.g. the pod name"),
    SL_CONF_STR(bookie_cfg, data_dir, "/var/lib/sluice/bookie",
                "SLUICE_BOOKIE_DATA_DIR", "directory for journal and ledgers"),
    SL_CONF_STR(bookie_cfg, metadata, "", "SLUICE_BOOKIE_METADATA",
                "metadata service target host:port; empty = do not register"),
    SL_CONF_STR(bookie_cfg, advertise, "", "SLUICE_BOOKIE_ADVERTISE",
                "address brokers use to reach this bookie; empty = --listen"),
};

static sl_status start(void *c, sl_rpc_server *srv, void **state, sl_err *err) {
  (void)c;
  *state = NULL;
  static const sl_bookie_service_handlers handlers = {0};
  return sl_bookie_service_register(srv, &handlers, NULL, err);
}

int main(int argc, char **argv) {
  sl_service_def def = {
      .name = "bookie",
      .table = table,
      .n_table = sizeof(table) / sizeof(table[0]),
      .cfg = &cfg,
      .opts = &cfg.svc,
      .start = start,
  };
  return sl_service_main(&def, argc, argv);
}
