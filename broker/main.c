/*
 * sluice-broker: entry point. Config table, then sl_service_main().
 *
 * Life of the process: start registers the BrokerService handlers; serving
 * (the port is known now) starts ownership, which opens the broker's session
 * with the metadata service; on SIGTERM, quiesce runs the graceful stop while
 * the server still answers (stop taking sends, flush, close ledgers, release
 * partitions, close the session: see sl_ownership_stop); then the server
 * stops and stop frees the rest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/consume.h"
#include "broker/ledger/ledger.h"
#include "broker/produce.h"
#include "broker/service.h"
#include "common/log.h"
#include "broker/authz.h"
#include "common/service.h"

#define SL_BROKER_VERSION "0.1.0"

typedef struct broker_cfg {
  sl_service_opts svc;
  char *id;                 /* unique broker id */
  char *metadata;           /* metadata service gRPC target */
  char *advertise;          /* address clients use; empty = listen address */
  long long session_ttl;    /* seconds */
  long long rpc_timeout_ms; /* metadata and peer calls */
  long long lookup_cache_ms;/* how long other brokers' partitions are remembered */
  long long drain_timeout_ms;/* graceful stop: wait this long for unloads */
  long long entry_cache_bytes;/* per partition, for consumers at the tail */
  char *metadata_tls_ca;    /* CA files to verify what the broker calls; */
  char *bookie_tls_ca;      /* empty = plaintext */
  char *broker_tls_ca;
  long long authz_cache_ms; /* how long namespace grants are cached */
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
    SL_CONF_INT(broker_cfg, session_ttl, "5", 2, 300, "SLUICE_BROKER_SESSION_TTL",
                "session TTL in seconds: how long after a crash its partitions "
                "stay owned"),
    SL_CONF_INT(broker_cfg, rpc_timeout_ms, "1000", 50, 60000,
                "SLUICE_BROKER_RPC_TIMEOUT_MS",
                "deadline of each metadata service and peer broker call"),
    SL_CONF_INT(broker_cfg, lookup_cache_ms, "1000", 1, 600000,
                "SLUICE_BROKER_LOOKUP_CACHE_MS",
                "how long owners of other brokers' partitions are cached"),
    SL_CONF_INT(broker_cfg, drain_timeout_ms, "5000", 0, 600000,
                "SLUICE_BROKER_DRAIN_TIMEOUT_MS",
                "graceful stop: how long to wait for partitions to unload"),
    SL_CONF_INT(broker_cfg, entry_cache_bytes, "16777216", 1, 1LL << 34,
                "SLUICE_BROKER_ENTRY_CACHE_BYTES",
                "entries kept in memory per partition for consumers at the tail; "
                "consumers further behind read from bookies"),
    SL_CONF_STR(broker_cfg, metadata_tls_ca, "", "SLUICE_BROKER_METADATA_TLS_CA",
                "CA PEM file to verify the metadata service; empty = plaintext. With "
                "tls_cert/tls_key set they are presented as the client certificate "
                "(likewise for the next two)"),
    SL_CONF_STR(broker_cfg, bookie_tls_ca, "", "SLUICE_BROKER_BOOKIE_TLS_CA",
                "CA PEM file to verify bookies; empty = plaintext"),
    SL_CONF_STR(broker_cfg, broker_tls_ca, "", "SLUICE_BROKER_BROKER_TLS_CA",
                "CA PEM file to verify brokers, this one included (dead letters are "
                "published through its own address); empty = plaintext"),
    SL_CONF_INT(broker_cfg, authz_cache_ms, "10000", 1, 3600000,
                "SLUICE_BROKER_AUTHZ_CACHE_MS",
                "with tokens on: how long a namespace's grants are cached, so how "
                "long a changed grant may take to apply to new streams"),
};

typedef struct broker_state {
  sl_broker b;              /* handlers' ctx; b.own is set once serving */
  /* PEMs of the channels the broker makes, for as long as it makes them. */
  sl_service_peer_tls metadata_tls, bookie_tls, broker_tls;
  sl_rpc_server *srv;
  sl_ledger_client *ledgers;/* the produce path's ledger client */
  sl_dead_letter *dead_letter; /* once serving: publishes through our address */
} broker_state;

/* Until serving has started ownership, Lookup and Unload answer UNAVAILABLE. */
static void not_ready(sl_rpc_call *call) {
  sl_rpc_call_finish(call, SL_EUNAVAIL, "broker is starting", NULL);
}

static sl_broker_service_handlers real;

static void lookup_guard(sl_rpc_call *call, const Sluice__V1__LookupRequest *req,
                         void *ctx) {
  sl_broker *b = ctx;
  if (b->own == NULL) not_ready(call);
  else real.lookup(call, req, ctx);
}

static void unload_guard(sl_rpc_call *call, const Sluice__V1__UnloadRequest *req,
                         void *ctx) {
  sl_broker *b = ctx;
  if (b->own == NULL) not_ready(call);
  else real.unload(call, req, ctx);
}

static void tls_release(broker_state *s) {
  sl_service_peer_tls_release(&s->metadata_tls);
  sl_service_peer_tls_release(&s->bookie_tls);
  sl_service_peer_tls_release(&s->broker_tls);
}

static sl_status start(void *c, sl_rpc_server *srv, void **state, sl_err *err) {
  broker_cfg *bc = c;
  broker_state *s = sl_xcalloc(1, sizeof(*s));
  s->srv = srv;
  s->b.rpc_timeout_ms = (int)bc->rpc_timeout_ms;
  sl_status st = sl_service_peer_tls_read(&bc->svc, bc->metadata_tls_ca, &s->metadata_tls, err);
  if (st == SL_OK) st = sl_service_peer_tls_read(&bc->svc, bc->bookie_tls_ca, &s->bookie_tls, err);
  if (st == SL_OK) st = sl_service_peer_tls_read(&bc->svc, bc->broker_tls_ca, &s->broker_tls, err);
  s->b.peer = sl_service_peer_channel(&s->broker_tls);
  sl_rpc_channel_opts co = sl_service_peer_channel(&s->metadata_tls);
  co.target = bc->metadata;
  if (st == SL_OK) st = sl_rpc_channel_create(&co, &s->b.md, err);
  sl_authz_opts zo = {.metadata = s->b.md,
                      .timeout_ms = (int)bc->rpc_timeout_ms,
                      .cache_ms = (int)bc->authz_cache_ms};
  if (st == SL_OK) st = sl_authz_create(&zo, &s->b.authz, err);
  if (st != SL_OK) {
    sl_rpc_channel_destroy(s->b.md);
    tls_release(s);
    free(s);
    return st;
  }
  sl_ledger_client_opts lo = SL_LEDGER_CLIENT_OPTS_INIT;
  sl_rpc_channel_opts bookie_channel = sl_service_peer_channel(&s->bookie_tls);
  lo.metadata = s->b.md;
  lo.bookie_channel = &bookie_channel;
  st = sl_ledger_client_create(&lo, &s->ledgers, err);
  if (st == SL_OK) {
    sl_produce_opts po = {.metadata = s->b.md, .ledgers = s->ledgers};
    st = sl_produce_create(&po, &s->b.produce, err);
  }
  if (st == SL_OK) {
    sl_consume_opts copts = {.produce = s->b.produce,
                             .max_response_bytes = (size_t)cfg.svc.max_message_bytes,
                             .cache_bytes = (size_t)cfg.entry_cache_bytes};
    st = sl_consume_create(&copts, &s->b.consume, err);
    if (st != SL_OK) sl_produce_destroy(s->b.produce);
    s->b.sub_stats = sl_consume_topic_stats;
    s->b.sub_stats_free = sl_consume_topic_stats_free;
    s->b.terminate = sl_produce_terminate;
  }
  if (st != SL_OK) {
    sl_ledger_client_destroy(s->ledgers);
    sl_authz_destroy(s->b.authz);
    sl_rpc_channel_destroy(s->b.md);
    tls_release(s);
    free(s);
    return st;
  }
  sl_broker_lookup_handlers(&real);
  sl_broker_admin_handlers(&real);
  sl_produce_handlers(&real);
  sl_consume_handlers(&real);
  sl_broker_service_handlers h = real;
  h.lookup = lookup_guard;
  h.unload = unload_guard;
  sl_broker_authz_handlers(&h);
  *state = s;
  return sl_broker_service_register(srv, &h, &s->b, err);
}

static sl_status serving(void *state, int port, sl_err *err) {
  broker_state *s = state;
  char address[300];
  if (cfg.advertise[0] != '\0') {
    snprintf(address, sizeof(address), "%s", cfg.advertise);
  } else {
    /* --listen host:0 binds a free port: advertise the one bound. */
    const char *colon = strrchr(cfg.svc.listen, ':');
    int host_len = colon ? (int)(colon - cfg.svc.listen) : (int)strlen(cfg.svc.listen);
    snprintf(address, sizeof(address), "%.*s:%d", host_len, cfg.svc.listen, port);
  }
  sl_ownership_opts oo = {
      .target = cfg.metadata,
      .broker_id = cfg.id,
      .address = address,
      .version = SL_BROKER_VERSION,
      .ttl_seconds = (uint32_t)cfg.session_ttl,
      .rpc_timeout_ms = (int)cfg.rpc_timeout_ms,
      .cache_ms = (int)cfg.lookup_cache_ms,
      .hooks = sl_produce_hooks(s->b.produce),
  };
  sl_rpc_channel_opts md_channel = sl_service_peer_channel(&s->metadata_tls);
  oo.metadata_channel = &md_channel;
  oo.broker_channel = &s->b.peer;
  sl_ownership *own = NULL;
  sl_status st = sl_ownership_create(&oo, &own, err);
  if (st != SL_OK) return st;
  s->b.own = own;
  sl_produce_set_ownership(s->b.produce, own);
  sl_dead_letter_opts dlo = {.lookup_target = address,
                             .timeout_ms = (int)cfg.rpc_timeout_ms * 10,
                             .channel = &s->b.peer};
  st = sl_dead_letter_create(&dlo, &s->dead_letter, err);
  if (st != SL_OK) return st;
  sl_consume_set_dead_letter(s->b.consume, s->dead_letter);
  sl_log(SL_LOG_INFO, "event=broker_serving id=%s address=%s", cfg.id, address);
  return SL_OK;
}

static void quiesce(void *state) {
  broker_state *s = state;
  if (s->b.own != NULL) sl_ownership_stop(s->b.own, (int)cfg.drain_timeout_ms);
}

static void stop(void *state) {
  broker_state *s = state;
  sl_produce_set_ownership(s->b.produce, NULL);
  sl_ownership_destroy(s->b.own);
  sl_produce_destroy(s->b.produce); /* drops the partitions' consume side too */
  sl_consume_destroy(s->b.consume);
  sl_dead_letter_destroy(s->dead_letter); /* cancels publishes in flight */
  sl_ledger_client_destroy(s->ledgers);
  sl_authz_destroy(s->b.authz);
  sl_rpc_channel_destroy(s->b.md);
  tls_release(s);
  free(s);
}

int main(int argc, char **argv) {
  sl_service_def def = {
      .name = "broker",
      .table = table,
      .n_table = sizeof(table) / sizeof(table[0]),
      .cfg = &cfg,
      .opts = &cfg.svc,
      .start = start,
      .serving = serving,
      .quiesce = quiesce,
      .stop = stop,
  };
  return sl_service_main(&def, argc, argv);
}
