/* sluice token create: see cli.h. Works offline: it needs the secret, not a
 * cluster. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/cli.h"
#include "common/auth.h"

static const char token_help[] =
    "usage: sluice token create --secret-file FILE --role ROLE [--expires-in SEC]\n"
    "Prints an HS256 token for ROLE signed with the secret in FILE (the file the\n"
    "services read with --auth_secret_file). Without --expires-in it never expires.\n"
    "examples:\n"
    "  sluice token create --secret-file /etc/sluice/secret --role invoicer --expires-in 86400\n"
    "  SLUICE_TOKEN=$(sluice token create --secret-file s --role ops) sluice cluster status\n";

int sl_cli_token(sl_cli *cli) {
  if (sl_cli_wants_help(cli->argc, cli->argv) || cli->argc < 2) {
    fputs(token_help, cli->argc < 2 ? stderr : stdout);
    return cli->argc < 2 ? SL_CLI_USAGE : SL_CLI_OK;
  }
  if (strcmp(cli->argv[1], "create") != 0)
    return sl_cli_usage("token ", "unknown token command %s (create)", cli->argv[1]);
  const char *file = NULL, *role = NULL;
  long long ttl = 0;
  for (int i = 2; i < cli->argc; i++) {
    const char *a = cli->argv[i];
    if (i + 1 >= cli->argc) return sl_cli_usage("token ", "%s needs a value", a);
    if (strcmp(a, "--secret-file") == 0) {
      file = cli->argv[++i];
    } else if (strcmp(a, "--role") == 0) {
      role = cli->argv[++i];
    } else if (strcmp(a, "--expires-in") == 0) {
      char *end;
      ttl = strtoll(cli->argv[++i], &end, 10);
      if (*end || ttl <= 0 || ttl > 100LL * 365 * 86400)
        return sl_cli_usage("token ", "--expires-in %s: expected seconds", cli->argv[i]);
    } else {
      return sl_cli_usage("token ", "unexpected argument %s", a);
    }
  }
  if (file == NULL || role == NULL)
    return sl_cli_usage("token ", "create needs --secret-file and --role");
  char *secret = NULL;
  size_t len = 0;
  char tok[SL_AUTH_TOKEN_MAX];
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_auth_read_file(file, true, &secret, &len, &err);
  if (st == SL_OK && len < 32)
    st = sl_err_set(&err, SL_EINVAL, "%s: the secret must hold at least 32 bytes", file);
  if (st == SL_OK)
    st = sl_auth_sign_hs256((const uint8_t *)secret, len, role,
                            ttl > 0 ? (int64_t)time(NULL) + ttl : 0, tok, sizeof(tok), &err);
  free(secret);
  if (st != SL_OK) return sl_cli_fail(cli, st, &err);
  printf(cli->json ? "{\"token\":\"%s\"}\n" : "%s\n", tok);
  return SL_CLI_OK;
}
