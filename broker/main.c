/*
 * sluice-broker: entry point. Config table, then sl_service_main().
 */
#include <stdlib.h>

#include "common/service.h"
#include "broker.slrpc.h"

typedef struct broker_cfg {
  sl_service_opts svc;
  char *id;        /* unique broker id */
  char *metadata;  /* metadata service gRPC target */
  char *advertise; /* address clients use; empty = listen address */
} broker_cfg;

static broker_cfg cfg;

static const sl_conf_entry table[] = {
    SL_SERVICE_CONF(broker_cfg, "SLUICE_BROKER_", "127.0.0.1:6650", "2"),
    SL_CONF_STR(broker_cfg, id, "broker-0", "SLUICE_BROKER_ID",
                "unique broker id, e.g. the pod name"),
    SL_CONF_STR(broker_cfg, metadata, "127.0.0.1:6660", "SLUICE_BROKER_METADATA",
                "metadata service target host:port[,host:port]"),
    SL_CONF_STR(broker_cfg, advertise, "", "SLUICE_BROKER_ADVERTISE",
                "address clients use to reach this broker; empty = --listen"),
};

static sl_status start(void *c, sl_rpc_server *srv, void **state, sl_err *err) {
  (void)c;
  *state = NULL;
  static const sl_broker_service_handlers handlers = {0};
  return sl_broker_service_register(srv, &handlers, NULL, err);
}

int main(int argc, char **argv) {
  sl_service_def def = {
      .name = "broker",
      .table = table,
      .n_table = sizeof(table) / sizeof(table[0]),
      .cfg = &cfg,
      .opts = &cfg.svc,
      .start = start,
  };
  return sl_service_main(&def, argc, argv);
}
