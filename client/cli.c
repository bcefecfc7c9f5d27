/* sluice: the command line. Global options and dispatch; see cli.h. */
#include "client/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: sluice [--url HOST:PORT] [--token T] [--tls-ca FILE] [--json] [--timeout SEC]\n"
    "              COMMAND ...\n"
    "\n"
    "commands:\n"
    "  topic create|list|delete|stats   manage topics\n"
    "  namespace create|list|policies|grant|revoke\n"
    "                                   manage namespaces and who may use them\n"
    "  token create                     mint an HS256 token for a role\n"
    "  produce NAME                     publish messages (-m, -f or stdin lines)\n"
    "  consume NAME -s SUB              print messages, ack them once printed\n"
    "  cluster status                   brokers, bookies, partition owners\n"
    "\n"
    "global options (anywhere on the line):\n"
    "  --url HOST:PORT   any broker (env SLUICE_URL; default 127.0.0.1:6650)\n"
    "  --token T         bearer token sent with every call (env SLUICE_TOKEN)\n"
    "  --tls-ca FILE     use TLS, trusting this CA (PEM)\n"
    "  --json            machine-readable output\n"
    "  --timeout SEC     give up on a call after SEC seconds (default 10)\n"
    "\n"
    "examples:\n"
    "  sluice topic create public/orders --partitions 4\n"
    "  echo hello | sluice produce public/orders\n"
    "  sluice consume public/orders -s audit -n 1 --from earliest\n"
    "  sluice --url 10.0.0.5:6650 cluster status\n"
    "\n"
    "`sluice COMMAND --help` describes each command.\n";

int sl_cli_usage(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("sluice: ", stderr);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "; see `sluice %s--help`\n", cmd ? cmd : "");
  va_end(ap);
  return SL_CLI_USAGE;
}

/* What to do about a failure, by status. */
static const char *hint(const sl_cli *cli, sl_status st, char *buf, size_t cap) {
  switch (st) {
    case SL_EUNAVAIL:
    case SL_ETIMEDOUT:
      snprintf(buf, cap,
               "no answer from a broker at %s within %d s: is the cluster up (tools/cluster "
               "up)? else pass --url or set SLUICE_URL, or raise --timeout",
               cli->copts.url ? cli->copts.url : (getenv("SLUICE_URL") ? getenv("SLUICE_URL")
                                                                        : "127.0.0.1:6650"),
               cli->timeout_s ? cli->timeout_s : 10);
      return buf;
    case SL_ENOTFOUND:
      return "check the name (`sluice topic list NAMESPACE`, `sluice namespace list`) or "
             "create it first";
    case SL_EEXIST: return "it exists already; pick another name or use it as is";
    case SL_EUNAUTH: return "pass a valid token with --token";
    case SL_EPERM: return "the token's role lacks the right for this";
    case SL_EBUSY: return "busy: another consumer holds it, or try again later";
    case SL_ETOOBIG: return "the message is over the topic's limit (policy max_message_bytes)";
    case SL_EPRECOND: return "the object is in use or in the wrong state";
    default: return NULL;
  }
}

int sl_cli_fail(const sl_cli *cli, sl_status st, const sl_err *err) {
  char buf[512];
  const char *h = hint(cli, st, buf, sizeof(buf));
  fprintf(stderr, "sluice: %s (%s)%s%s\n", sl_err_msg(err, st), sl_status_str(st),
          h ? "; " : "", h ? h : "");
  return SL_CLI_FAIL;
}

bool sl_cli_wants_help(int argc, char **argv) {
  for (int i = 0; i < argc; i++)
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return true;
  return false;
}

int sl_cli_client(const sl_cli *cli, sl_client **out) {
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_client_create(&cli->copts, out, &err);
  return st == SL_OK ? SL_CLI_OK : sl_cli_fail(cli, st, &err);
}

/* Takes the global options out of argv wherever they are. */
static int parse_globals(sl_cli *cli, int argc, char **argv) {
  cli->argv = calloc((size_t)argc + 1, sizeof(char *));
  if (cli->argv == NULL) {
    fputs("sluice: out of memory\n", stderr);
    return SL_CLI_FAIL;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    bool takes = strcmp(a, "--url") == 0 || strcmp(a, "--token") == 0 ||
                 strcmp(a, "--tls-ca") == 0 || strcmp(a, "--timeout") == 0;
    if (takes && i + 1 >= argc) return sl_cli_usage(NULL, "%s needs a value", a);
    if (strcmp(a, "--url") == 0) {
      cli->copts.url = argv[++i];
    } else if (strcmp(a, "--token") == 0) {
      cli->copts.token = argv[++i];
    } else if (strcmp(a, "--tls-ca") == 0) {
      cli->copts.tls_ca_file = argv[++i];
    } else if (strcmp(a, "--timeout") == 0) {
      char *end;
      long s = strtol(argv[++i], &end, 10);
      if (*end || s <= 0 || s > 86400)
        return sl_cli_usage(NULL, "--timeout %s: expected seconds (1..86400)", argv[i]);
      cli->timeout_s = (int)s;
      cli->copts.timeout_ms = (int)s * 1000;
    } else if (strcmp(a, "--json") == 0) {
      cli->json = true;
    } else {
      cli->argv[cli->argc++] = argv[i];
    }
  }
  /* From the environment, so that it does not show in `ps`. */
  if (cli->copts.token == NULL && getenv("SLUICE_TOKEN") != NULL && getenv("SLUICE_TOKEN")[0])
    cli->copts.token = getenv("SLUICE_TOKEN");
  return SL_CLI_OK;
}

int main(int argc, char **argv) {
  sl_cli cli = {.copts = SL_CLIENT_OPTS_INIT};
  int rc = parse_globals(&cli, argc, argv);
  if (rc != SL_CLI_OK) goto out;
  if (cli.argc == 0) {
    fputs(usage_text, stderr);
    rc = SL_CLI_USAGE;
    goto out;
  }
  const char *cmd = cli.argv[0];
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
    fputs(usage_text, stdout);
    rc = SL_CLI_OK;
  } else if (strcmp(cmd, "topic") == 0) {
    rc = sl_cli_topic(&cli);
  } else if (strcmp(cmd, "namespace") == 0) {
    rc = sl_cli_namespace(&cli);
  } else if (strcmp(cmd, "cluster") == 0) {
    rc = sl_cli_cluster(&cli);
  } else if (strcmp(cmd, "produce") == 0) {
    rc = sl_cli_produce(&cli);
  } else if (strcmp(cmd, "consume") == 0) {
    rc = sl_cli_consume(&cli);
  } else if (strcmp(cmd, "token") == 0) {
    rc = sl_cli_token(&cli);
  } else if (cmd[0] == '-') {
    rc = sl_cli_usage(NULL, "unknown option %s", cmd);
  } else {
    rc = sl_cli_usage(NULL,
                      "unknown command %s (topic, namespace, produce, consume, cluster, token)",
                      cmd);
  }
out:
  free(cli.argv);
  return rc;
}
