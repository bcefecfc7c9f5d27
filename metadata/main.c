/*
 * sluice-metadata: the MetadataService process. Config table, store,
 * service (metadata/service.h), then sl_service_main().
 */
#include <stdlib.h>

#include "common/log.h"
#include "common/service.h"
#include "metadata/service.h"
#include "metadata/store.h"

typedef struct metadata_cfg {
  sl_service_opts svc;
  char *store;               /* etcd:URL[,URL...] or local:DIR */
  long long session_ttl;     /* default session TTL in seconds */
  long long max_session_ttl; /* largest TTL a node may ask for */
  long long store_timeout_ms;
  long long store_down_ms;   /* etcd fail-fast window (metadata/etcd.h) */
  long long ledger_id_block;
  long long watch_buffer;
  long long health_interval_ms;
  long long audit_interval_ms;      /* 0 = this replica never audits */
  long long rereplication_grace_ms;
  long long auditor_ttl;            /* seconds */
  char *replica_id;                 /* "" = hostname:pid */
} metadata_cfg;

static metadata_cfg cfg;

#define ENV "SLUICE_METADATA_"

/* Handlers block on the store, so 16 worker threads by default. */
static const sl_conf_entry table[] = {
    SL_SERVICE_CONF(metadata_cfg, ENV, "127.0.0.1:6660", "16"),
    SL_CONF_STR(metadata_cfg, store, "etcd:http://127.0.0.1:2379", ENV "STORE",
                "etcd:http://host:port[,http://...] or local:DIR (standalone)"),
    SL_CONF_INT(metadata_cfg, session_ttl, "5", 2, 300, ENV "SESSION_TTL",
                "default session TTL in seconds for brokers and bookies"),
    SL_CONF_INT(metadata_cfg, max_session_ttl, "300", 2, 3600, ENV "MAX_SESSION_TTL",
                "largest session TTL in seconds a node may ask for"),
    SL_CONF_INT(metadata_cfg, store_timeout_ms, "2000", 100, 60000, ENV "STORE_TIMEOUT_MS",
                "deadline of each store call; calls fail UNAVAILABLE after it"),
    SL_CONF_INT(metadata_cfg, store_down_ms, "500", 0, 60000, ENV "STORE_DOWN_MS",
                "while every etcd endpoint failed to connect within this many ms, "
                "store calls fail at once (one probe at a time); 0 = always retry"),
    SL_CONF_INT(metadata_cfg, ledger_id_block, "1000", 1, 1000000, ENV "LEDGER_ID_BLOCK",
                "ledger ids reserved per store round trip"),
    SL_CONF_INT(metadata_cfg, watch_buffer, "16384", 2, 10000000, ENV "WATCH_BUFFER",
                "events buffered for a slow watcher before its stream ends"),
    SL_CONF_INT(metadata_cfg, health_interval_ms, "1000", 10, 60000, ENV "HEALTH_INTERVAL_MS",
                "how often the store is probed; health is NOT_SERVING while it fails"),
    SL_CONF_INT(metadata_cfg, audit_interval_ms, "60000", 0, 86400000, ENV "AUDIT_INTERVAL_MS",
                "how often the auditor (one replica at a time) lists the ledgers to "
                "re-replicate; 0 = this replica never audits"),
    SL_CONF_INT(metadata_cfg, rereplication_grace_ms, "300000", 0, 604800000,
                ENV "REREPLICATION_GRACE_MS",
                "a bookie unregistered this long has its closed ledgers re-replicated"),
    SL_CONF_INT(metadata_cfg, auditor_ttl, "10", 2, 3600, ENV "AUDITOR_TTL",
                "lease TTL in seconds of the auditor role: how long a dead auditor keeps it"),
    SL_CONF_STR(metadata_cfg, replica_id, "", ENV "REPLICA_ID",
                "this replica's name as the auditor; empty = hostname:pid"),
};

typedef struct state {
  sl_store *store;
  sl_md_service *md;
  sl_rpc_server *srv;
  int health_interval_ms;
} state;

static sl_status start(void *c, sl_rpc_server *srv, void **out, sl_err *err) {
  metadata_cfg *mc = c;
  state *s = sl_xcalloc(1, sizeof(*s));
  sl_store_opts so = SL_STORE_OPTS_INIT;
  so.timeout_ms = (int)mc->store_timeout_ms;
  so.etcd_down_ms = (int)mc->store_down_ms;
  if (so.connect_timeout_ms > so.timeout_ms) so.connect_timeout_ms = so.timeout_ms;
  sl_status st = sl_store_open(mc->store, &so, &s->store, err);
  if (st != SL_OK) goto out_free;
  sl_md_service_opts mo = SL_MD_SERVICE_OPTS_INIT;
  mo.store = s->store;
  mo.default_ttl_s = mc->session_ttl;
  mo.max_ttl_s = mc->max_session_ttl < mc->session_ttl ? mc->session_ttl : mc->max_session_ttl;
  mo.ledger_id_block = (uint64_t)mc->ledger_id_block;
  mo.watch_buffer = (size_t)mc->watch_buffer;
  mo.audit_interval_ms = mc->audit_interval_ms;
  mo.rereplication_grace_ms = mc->rereplication_grace_ms;
  mo.auditor_ttl_s = mc->auditor_ttl;
  mo.replica_id = mc->replica_id;
  st = sl_md_service_create(&mo, &s->md, err);
  if (st != SL_OK) goto out_store;
  st = sl_md_service_register(s->md, srv, err);
  if (st != SL_OK) goto out_md;
  s->srv = srv;
  s->health_interval_ms = (int)mc->health_interval_ms;
  sl_log(SL_LOG_INFO, "event=store_opened backend=%s uri=%s", sl_store_backend(s->store),
         mc->store);
  *out = s;
  return SL_OK;
out_md:
  /* The server may hold some methods; sl_service_main destroys it before
   * anything could call them, and never calls stop() after a failed start. */
  sl_md_service_destroy(s->md);
out_store:
  sl_store_close(s->store);
out_free:
  free(s);
  return st;
}

/* The monitor sets the server's health, so it runs only while the server
 * does: from here until quiesce. The auditor runs along: a replica that
 * is shutting down hands the role on at once (its stop revokes the lease). */
static sl_status serving(void *p, int port, sl_err *err) {
  (void)port;
  state *s = p;
  sl_status st = sl_md_service_monitor_start(s->md, s->srv, s->health_interval_ms, err);
  if (st != SL_OK) return st;
  st = sl_md_service_auditor_start(s->md, err);
  /* No quiesce follows a failed serving(): the monitor must not outlive
   * the server. */
  if (st != SL_OK) sl_md_service_monitor_stop(s->md);
  return st;
}

static void quiesce(void *p) {
  state *s = p;
  if (s == NULL) return;
  sl_md_service_auditor_stop(s->md);
  sl_md_service_monitor_stop(s->md);
}

static void stop(void *p) {
  state *s = p;
  if (s == NULL) return;
  sl_md_service_destroy(s->md);
  sl_store_close(s->store);
  free(s);
}

int main(int argc, char **argv) {
  sl_service_def def = {
      .name = "metadata",
      .table = table,
      .n_table = sizeof(table) / sizeof(table[0]),
      .cfg = &cfg,
      .opts = &cfg.svc,
      .start = start,
      .serving = serving,
      .quiesce = quiesce,
      .stop = stop,
      .superuser_only = true,
  };
  return sl_service_main(&def, argc, argv);
}
