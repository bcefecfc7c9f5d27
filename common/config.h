/*
 * Per-service config table (after Redis's static_configs[]).
 *
 * A service describes its settings once, as an array of sl_conf_entry, and
 * that one table drives defaults, environment variables, command-line flags,
 * bounds checking and --help. Precedence: default < environment < flag.
 *
 *   typedef struct { char *addr; long long threads; bool tls; } my_cfg;
 *   static const sl_conf_entry table[] = {
 *     SL_CONF_STR(my_cfg, addr, "127.0.0.1:7000", "SLUICE_ADDR", "listen address"),
 *     SL_CONF_INT(my_cfg, threads, "2", 1, 64, "SLUICE_THREADS", "worker threads"),
 *   };
 */
#ifndef SL_COMMON_CONFIG_H
#define SL_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "common/status.h"

typedef enum sl_conf_type {
  SL_CONF_TYPE_STR,  /* char * field, heap-owned after parse */
  SL_CONF_TYPE_INT,  /* long long field */
  SL_CONF_TYPE_BOOL, /* bool field; flag may be given bare: --tls */
} sl_conf_type;

typedef struct sl_conf_entry {
  const char *name; /* flag name without "--" */
  sl_conf_type type;
  const char *def;  /* default, as text; NULL means empty for strings */
  long long min, max; /* bounds for ints */
  const char *env;  /* environment variable name */
  const char *help;
  size_t offset;    /* field offset in the service's config struct */
} sl_conf_entry;

#define SL_CONF_STR(T, field, def, env, help) \
  {#field, SL_CONF_TYPE_STR, def, 0, 0, env, help, offsetof(T, field)}
#define SL_CONF_INT(T, field, def, min, max, env, help) \
  {#field, SL_CONF_TYPE_INT, def, min, max, env, help, offsetof(T, field)}
#define SL_CONF_BOOL(T, field, def, env, help) \
  {#field, SL_CONF_TYPE_BOOL, def, 0, 1, env, help, offsetof(T, field)}

/*
 * Fills `cfg` from defaults, the environment and argv. Underscores in a field
 * name are written as dashes on the command line (--data_dir or --data-dir).
 * Returns SL_ECANCELED after printing usage for --help, SL_EINVAL with a
 * message naming the setting on bad input. On success the caller releases
 * cfg with sl_conf_release().
 */
sl_status sl_conf_parse(const sl_conf_entry *table, size_t n, void *cfg,
                        const char *prog, int argc, char **argv, sl_err *err);

/* Prints --help text generated from the table. */
void sl_conf_usage(FILE *out, const char *prog, const sl_conf_entry *table,
                   size_t n);

/* Frees the strings sl_conf_parse allocated. */
void sl_conf_release(const sl_conf_entry *table, size_t n, void *cfg);

#endif
