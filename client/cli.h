/*
 * The `sluice` command line (issue 11 fixes its surface): what the command
 * files share. cli.c parses the global options and dispatches;
 * cli_admin.c holds topic, namespace and cluster; cli_data.c produce and
 * consume; cli_token.c token. Every command prints its --help with examples, reports a
 * failure as one line on stderr that says what to do, and exits non-zero.
 */
#ifndef SL_CLIENT_CLI_H
#define SL_CLIENT_CLI_H

#include <stdbool.h>

#include "client/sluice.h"

typedef struct sl_cli {
  sl_client_opts copts;   /* from --url, --token, --tls-ca, --timeout */
  bool json;              /* --json */
  int timeout_s;          /* --timeout, 0 = default */
  int argc;               /* the command's own arguments (globals removed) */
  char **argv;            /* argv[0] is the command word */
} sl_cli;

/* Exit codes. */
#define SL_CLI_OK 0
#define SL_CLI_FAIL 1     /* the operation failed */
#define SL_CLI_USAGE 2    /* bad command line */

/* Prints "sluice: <msg>" plus what to do about st, one line on stderr;
 * returns SL_CLI_FAIL. */
int sl_cli_fail(const sl_cli *cli, sl_status st, const sl_err *err);
/* Prints "sluice: <msg>; see `sluice <cmd> --help`" and returns SL_CLI_USAGE. */
int sl_cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True if any argument is -h or --help. */
bool sl_cli_wants_help(int argc, char **argv);
/* Connects a client with the global options, or reports why not. */
int sl_cli_client(const sl_cli *cli, sl_client **out);

int sl_cli_topic(sl_cli *cli);
int sl_cli_namespace(sl_cli *cli);
int sl_cli_cluster(sl_cli *cli);
int sl_cli_produce(sl_cli *cli);
int sl_cli_consume(sl_cli *cli);
int sl_cli_token(sl_cli *cli);

#endif
