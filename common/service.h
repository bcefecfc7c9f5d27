/*
 * Process scaffolding shared by sluice-metadata, sluice-bookie and
 * sluice-broker: the settings every service has, config parsing with the
 * standard exit codes, the gRPC server with TLS from files, signals, and
 * the one "event=ready" line that scripts and tests wait for.
 */
#ifndef SL_COMMON_SERVICE_H
#define SL_COMMON_SERVICE_H

#include <stdbool.h>

#include "common/auth.h"
#include "common/config.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "common/status.h"

/* Settings every service has. Embed as a field named `svc` in the service's
 * config struct and list SL_SERVICE_CONF(...) in its table. */
typedef struct sl_service_opts {
  char *listen;            /* host:port to serve gRPC on */
  long long threads;       /* gRPC worker threads */
  char *log_level;         /* debug, info, warn, error */
  char *tls_cert;          /* server certificate PEM file; empty = plaintext */
  char *tls_key;           /* its private key PEM file */
  char *tls_client_ca;     /* CA PEM file; set = require client certificates */
  long long max_message_bytes; /* largest gRPC message in either direction */
  char *metrics_listen;    /* host:port for Prometheus GET /metrics; "" = off */
  /* Token authentication (common/auth.h): off unless a key file is set. */
  char *auth_secret_file;     /* HS256 secret tokens are checked with */
  char *auth_public_key_file; /* RS256/ES256 public key PEM */
  char *auth_superusers;      /* roles with every right, comma-separated */
  char *auth_token_file;      /* the token this service presents to others */
} sl_service_opts;

#define SL_SERVICE_CONF_(T, f, type, def, min, max, env, help) \
  {#f, type, def, min, max, env, help, offsetof(T, svc.f)}
/* Table entries for sl_service_opts; ENV is a literal prefix like
 * "SLUICE_BOOKIE_", default_threads a literal like "2" (services whose
 * handlers block want more). */
#define SL_SERVICE_CONF(T, ENV, default_listen, default_threads)              \
  SL_SERVICE_CONF_(T, listen, SL_CONF_TYPE_STR, default_listen, 0, 0,          \
                   ENV "LISTEN", "host:port to serve gRPC on"),                \
  SL_SERVICE_CONF_(T, threads, SL_CONF_TYPE_INT, default_threads, 1, 256,     \
                   ENV "THREADS",                                              \
                   "gRPC worker threads"),                                     \
  SL_SERVICE_CONF_(T, log_level, SL_CONF_TYPE_STR, "info", 0, 0,               \
                   ENV "LOG_LEVEL", "log level: debug, info, warn, error"),    \
  SL_SERVICE_CONF_(T, tls_cert, SL_CONF_TYPE_STR, "", 0, 0, ENV "TLS_CERT",    \
                   "server certificate PEM file; empty = plaintext"),          \
  SL_SERVICE_CONF_(T, tls_key, SL_CONF_TYPE_STR, "", 0, 0, ENV "TLS_KEY",      \
                   "server private key PEM file"),                             \
  SL_SERVICE_CONF_(T, tls_client_ca, SL_CONF_TYPE_STR, "", 0, 0,               \
                   ENV "TLS_CLIENT_CA",                                        \
                   "CA PEM file; when set, clients must present certificates"),\
  SL_SERVICE_CONF_(T, max_message_bytes, SL_CONF_TYPE_INT, "16777216", 1024,   \
                   1073741824, ENV "MAX_MESSAGE_BYTES",                        \
                   "largest gRPC message accepted or sent"),                   \
  SL_SERVICE_CONF_(T, metrics_listen, SL_CONF_TYPE_STR, "", 0, 0,              \
                   ENV "METRICS_LISTEN",                                       \
                   "host:port to serve Prometheus metrics on (GET /metrics); " \
                   "empty = off"),                                             \
  SL_SERVICE_CONF_(T, auth_secret_file, SL_CONF_TYPE_STR, "", 0, 0,            \
                   ENV "AUTH_SECRET_FILE",                                     \
                   "file with the HMAC secret (>= 32 bytes) HS256 tokens are " \
                   "checked with; set this or auth_public_key_file to require " \
                   "tokens"),                                                  \
  SL_SERVICE_CONF_(T, auth_public_key_file, SL_CONF_TYPE_STR, "", 0, 0,        \
                   ENV "AUTH_PUBLIC_KEY_FILE",                                 \
                   "PEM public key (RSA or EC P-256) RS256/ES256 tokens are "  \
                   "checked with"),                                            \
  SL_SERVICE_CONF_(T, auth_superusers, SL_CONF_TYPE_STR, "", 0, 0,             \
                   ENV "AUTH_SUPERUSERS",                                      \
                   "comma-separated roles that hold every right (the "         \
                   "services' own role among them)"),                          \
  SL_SERVICE_CONF_(T, auth_token_file, SL_CONF_TYPE_STR, "", 0, 0,             \
                   ENV "AUTH_TOKEN_FILE",                                      \
                   "file with the token this service presents when it calls "  \
                   "other services; empty = none")

/* What a binary plugs into sl_service_main(). */
typedef struct sl_service_def {
  const char *name;            /* "bookie": log svc= and messages */
  const sl_conf_entry *table;  /* the service's whole config table */
  size_t n_table;
  void *cfg;                   /* the config struct the table fills */
  sl_service_opts *opts;       /* its embedded `svc` field */
  /* Opens stores, starts background work and registers the service's
   * methods on srv (not started yet). Its state goes in *state. */
  sl_status (*start)(void *cfg, sl_rpc_server *srv, void **state, sl_err *err);
  /* Runs after the server is bound, with the real port (for registration). */
  sl_status (*serving)(void *state, int port, sl_err *err);
  /* Runs after SIGTERM/SIGINT, before the server shuts down, while handlers
   * still run (e.g. a broker hands its partitions over). May be NULL. */
  void (*quiesce)(void *state);
  /* Runs after the server has shut down (no handler runs any more). */
  void (*stop)(void *state);
  /* With authentication on, every call needs a super-user role (the
   * metadata service and bookies serve only other services). */
  bool superuser_only;
} sl_service_def;

/* The whole life of a service process: config, the metrics endpoint (if
 * metrics_listen is set: process_* and RPC metrics from
 * sl_metrics_default(), then an "event=metrics_ready port=N" line), server,
 * start, the "event=ready port=N" line, wait for SIGTERM/SIGINT, graceful
 * shutdown (the metrics endpoint stops last). Returns the process exit
 * code. */
int sl_service_main(const sl_service_def *def, int argc, char **argv);

/* Parses the service's whole config table into cfg and applies
 * opts->log_level. Returns true to go on; false with *exit_code set (0 after
 * --help, 2 on bad input, message printed) when the process should exit. */
bool sl_service_configure(const char *svc, const sl_conf_entry *table, size_t n,
                          void *cfg, const sl_service_opts *opts, int argc,
                          char **argv, int *exit_code);

/* The token checker opts asks for (auth_secret_file, auth_public_key_file,
 * auth_superusers); *out = NULL when authentication is off. */
sl_status sl_service_auth_create(const sl_service_opts *opts, sl_auth **out,
                                 sl_err *err);

/* Creates (not starts) the gRPC server described by opts, reading TLS files
 * if set. `auth` (retained until the server is destroyed; NULL = off) and
 * superuser_only as in sl_rpc_server_opts. */
sl_status sl_service_server_create(const sl_service_opts *opts, const sl_auth *auth,
                                   bool superuser_only, sl_rpc_server **out, sl_err *err);

/* Reads a whole file into a NUL-terminated heap string (caller frees). */
sl_status sl_service_read_file(const char *path, char **out, sl_err *err);

/* What a service presents when it calls another one: nothing (plaintext)
 * when ca_file is empty; else that CA, to verify the peer, and, if this
 * service serves with a certificate and key (opts->tls_cert, tls_key),
 * those as its client certificate (mutual TLS). And in every case the
 * token from opts->auth_token_file, if set. */
typedef struct sl_service_peer_tls {
  char *ca, *cert, *key; /* PEM text, NULL when not used */
  char *authorization;   /* "Bearer <token>", NULL when there is none */
} sl_service_peer_tls;

/* Reads them; on failure nothing is held. Release with
 * sl_service_peer_tls_release (also after a failure). */
sl_status sl_service_peer_tls_read(const sl_service_opts *opts, const char *ca_file,
                                   sl_service_peer_tls *out, sl_err *err);
void sl_service_peer_tls_release(sl_service_peer_tls *t);

/* Channel options (target unset) that use them; they point into t. */
sl_rpc_channel_opts sl_service_peer_channel(const sl_service_peer_tls *t);

/* Blocks SIGTERM and SIGINT in the calling thread, so threads created
 * afterwards inherit the mask and only sl_service_wait() sees them, and
 * ignores SIGPIPE. Call before creating any thread. */
void sl_service_block_signals(void);

/* Waits for SIGTERM or SIGINT and returns its number. */
int sl_service_wait(void);

#endif
