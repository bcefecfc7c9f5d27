/* sluice topic | namespace | cluster: see cli.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cli.h"

static const char topic_help[] =
    "usage: sluice topic create NAME [--partitions N]\n"
    "       sluice topic list [NAMESPACE]        (default namespace: public)\n"
    "       sluice topic delete NAME\n"
    "       sluice topic stats NAME              (per partition, JSON)\n"
    "       sluice topic terminate NAME          (no more publishing, for good;\n"
    "                                             consumers read to the end)\n"
    "NAME is NAMESPACE/TOPIC.\n"
    "examples:\n"
    "  sluice topic create public/orders\n"
    "  sluice topic create public/clicks --partitions 8\n"
    "  sluice --json topic list public\n"
    "  sluice topic stats public/orders\n";

static const char namespace_help[] =
    "usage: sluice namespace create NAME\n"
    "       sluice namespace list\n"
    "       sluice namespace policies NAME [--set KEY=VALUE]...\n"
    "       sluice namespace grant NAME ROLE ACTIONS\n"
    "       sluice namespace revoke NAME ROLE\n"
    "Policy keys are the NamespacePolicies fields (proto/metadata.proto), e.g.\n"
    "deduplication, retention_minutes, max_message_bytes, ensemble_size.\n"
    "ACTIONS is a comma-separated list of produce, consume and admin; it replaces\n"
    "what ROLE (the \"sub\" of its tokens) held on the namespace.\n"
    "examples:\n"
    "  sluice namespace create billing\n"
    "  sluice namespace policies billing --set deduplication=true --set retention_minutes=60\n"
    "  sluice namespace grant billing invoicer produce,consume\n";

static const char cluster_help[] =
    "usage: sluice cluster status\n"
    "Brokers, bookies (writable or read-only, free disk) and every partition's owner.\n"
    "example:\n"
    "  sluice --json cluster status\n";

/* Prints a JSON document or, for people, the same thing indented. */
static void print_json(const char *json, bool raw) {
  if (raw) {
    printf("%s\n", json);
    return;
  }
  int depth = 0;
  bool in_str = false;
  for (const char *p = json; *p; p++) {
    char ch = *p;
    if (in_str) {
      putchar(ch);
      if (ch == '\\' && p[1]) putchar(*++p);
      else if (ch == '"') in_str = false;
      continue;
    }
    if (ch == '"') {
      in_str = true;
      putchar(ch);
    } else if (ch == '{' || ch == '[') {
      depth++;
      printf("%c\n%*s", ch, depth * 2, "");
    } else if (ch == '}' || ch == ']') {
      depth--;
      printf("\n%*s%c", depth * 2, "", ch);
    } else if (ch == ',') {
      printf(",\n%*s", depth * 2, "");
    } else if (ch == ':') {
      printf(": ");
    } else {
      putchar(ch);
    }
  }
  putchar('\n');
}

static int topic_create(sl_cli *cli, sl_client *c) {
  const char *name = NULL;
  long partitions = 0;
  for (int i = 2; i < cli->argc; i++) {
    if (strcmp(cli->argv[i], "--partitions") == 0 && i + 1 < cli->argc) {
      char *end;
      partitions = strtol(cli->argv[++i], &end, 10);
      if (*end || partitions < 0 || partitions > 100000)
        return sl_cli_usage("topic ", "--partitions %s: expected a count (0 = not partitioned)",
                            cli->argv[i]);
    } else if (cli->argv[i][0] == '-') {
      return sl_cli_usage("topic ", "unknown option %s", cli->argv[i]);
    } else if (name == NULL) {
      name = cli->argv[i];
    } else {
      return sl_cli_usage("topic ", "one topic at a time (got %s and %s)", name, cli->argv[i]);
    }
  }
  if (name == NULL) return sl_cli_usage("topic ", "topic create needs a NAME");
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_admin_topic_create(c, name, (uint32_t)partitions, &err);
  if (st != SL_OK) return sl_cli_fail(cli, st, &err);
  if (cli->json) printf("{\"created\":\"%s\",\"partitions\":%ld}\n", name, partitions);
  else printf("created %s%s\n", name, partitions ? "" : " (not partitioned)");
  return SL_CLI_OK;
}

/* The single NAME argument of a subcommand, or a usage error. */
static int one_name(sl_cli *cli, const char *what, const char **name, bool optional) {
  *name = NULL;
  for (int i = 2; i < cli->argc; i++) {
    if (cli->argv[i][0] == '-') return sl_cli_usage(what, "unknown option %s", cli->argv[i]);
    if (*name != NULL) return sl_cli_usage(what, "unexpected argument %s", cli->argv[i]);
    *name = cli->argv[i];
  }
  if (*name == NULL && !optional) return sl_cli_usage(what, "%s needs a NAME", cli->argv[1]);
  return SL_CLI_OK;
}

/* Prints each partition's last message id ("none" for an empty one). */
static sl_status topic_terminate(sl_cli *cli, sl_client *c, const char *name, sl_err *err) {
  sl_msg_id *last;
  size_t n;
  sl_status st = sl_admin_topic_terminate(c, name, &last, &n, err);
  if (st != SL_OK) return st;
  if (cli->json) printf("{\"terminated\":\"%s\",\"last_ids\":[", name);
  else printf("terminated %s\n", name);
  for (size_t i = 0; i < n; i++) {
    const sl_msg_id *id = &last[i];
    if (cli->json)
      printf("%s{\"partition\":%d,\"ledger_id\":%llu,\"entry_id\":%lld}", i ? "," : "",
             id->partition, (unsigned long long)id->ledger_id, (long long)id->entry_id);
    else if (id->entry_id < 0)
      printf("  partition %d: no messages\n", id->partition);
    else
      printf("  partition %d: last entry %llu:%lld\n", id->partition,
             (unsigned long long)id->ledger_id, (long long)id->entry_id);
  }
  if (cli->json) printf("]}\n");
  free(last);
  return SL_OK;
}

int sl_cli_topic(sl_cli *cli) {
  if (sl_cli_wants_help(cli->argc, cli->argv) || cli->argc < 2) {
    fputs(topic_help, cli->argc < 2 ? stderr : stdout);
    return cli->argc < 2 ? SL_CLI_USAGE : SL_CLI_OK;
  }
  const char *sub = cli->argv[1], *name;
  if (strcmp(sub, "create") && strcmp(sub, "list") && strcmp(sub, "delete") &&
      strcmp(sub, "stats") && strcmp(sub, "terminate"))
    return sl_cli_usage("topic ", "unknown topic command %s (create, list, delete, stats, "
                        "terminate)", sub);
  int rc = SL_CLI_OK;
  if (strcmp(sub, "create") != 0 &&
      (rc = one_name(cli, "topic ", &name, strcmp(sub, "list") == 0)) != SL_CLI_OK)
    return rc;
  sl_client *c;
  if ((rc = sl_cli_client(cli, &c)) != SL_CLI_OK) return rc;
  sl_err err = SL_ERR_INIT;
  sl_status st = SL_OK;
  if (strcmp(sub, "create") == 0) {
    rc = topic_create(cli, c);
  } else if (strcmp(sub, "delete") == 0) {
    st = sl_admin_topic_delete(c, name, &err);
    if (st == SL_OK) printf(cli->json ? "{\"deleted\":\"%s\"}\n" : "deleted %s\n", name);
  } else if (strcmp(sub, "list") == 0) {
    sl_strings l;
    uint32_t *parts;
    st = sl_admin_topic_list(c, name ? name : "public", &l, &parts, &err);
    if (st == SL_OK) {
      if (cli->json) fputs("[", stdout);
      for (size_t i = 0; i < l.n; i++) {
        if (cli->json) printf("%s{\"name\":\"%s\",\"partitions\":%u}", i ? "," : "", l.v[i], parts[i]);
        else if (parts[i]) printf("%s (%u partitions)\n", l.v[i], parts[i]);
        else printf("%s\n", l.v[i]);
      }
      if (cli->json) fputs("]\n", stdout);
      free(parts);
      sl_strings_free(&l);
    }
  } else if (strcmp(sub, "terminate") == 0) {
    st = topic_terminate(cli, c, name, &err);
  } else {
    char *json;
    st = sl_admin_topic_stats(c, name, &json, &err);
    if (st == SL_OK) {
      print_json(json, cli->json);
      free(json);
    }
  }
  if (st != SL_OK) rc = sl_cli_fail(cli, st, &err);
  sl_client_destroy(c);
  return rc;
}

int sl_cli_namespace(sl_cli *cli) {
  if (sl_cli_wants_help(cli->argc, cli->argv) || cli->argc < 2) {
    fputs(namespace_help, cli->argc < 2 ? stderr : stdout);
    return cli->argc < 2 ? SL_CLI_USAGE : SL_CLI_OK;
  }
  const char *sub = cli->argv[1], *name = NULL;
  const char **set = calloc((size_t)cli->argc, sizeof(char *));
  size_t n_set = 0;
  int rc = SL_CLI_OK;
  if (set == NULL) return SL_CLI_FAIL;
  if (strcmp(sub, "policies") == 0) {
    for (int i = 2; i < cli->argc && rc == SL_CLI_OK; i++) {
      if (strcmp(cli->argv[i], "--set") == 0 && i + 1 < cli->argc) set[n_set++] = cli->argv[++i];
      else if (cli->argv[i][0] == '-') rc = sl_cli_usage("namespace ", "unknown option %s", cli->argv[i]);
      else if (name == NULL) name = cli->argv[i];
      else rc = sl_cli_usage("namespace ", "unexpected argument %s", cli->argv[i]);
    }
    if (rc == SL_CLI_OK && name == NULL) rc = sl_cli_usage("namespace ", "policies needs a NAME");
  } else if (strcmp(sub, "create") == 0) {
    rc = one_name(cli, "namespace ", &name, false);
  } else if (strcmp(sub, "list") == 0) {
    if (cli->argc > 2) rc = sl_cli_usage("namespace ", "unexpected argument %s", cli->argv[2]);
  } else if (strcmp(sub, "grant") == 0 || strcmp(sub, "revoke") == 0) {
    int want = strcmp(sub, "grant") == 0 ? 5 : 4;
    for (int i = 2; i < cli->argc && rc == SL_CLI_OK; i++)
      if (cli->argv[i][0] == '-') rc = sl_cli_usage("namespace ", "unknown option %s", cli->argv[i]);
    if (rc == SL_CLI_OK && cli->argc != want)
      rc = sl_cli_usage("namespace ", want == 5 ? "grant needs NAME ROLE ACTIONS"
                                                : "revoke needs NAME ROLE");
    if (rc == SL_CLI_OK) name = cli->argv[2];
  } else {
    rc = sl_cli_usage("namespace ",
                      "unknown namespace command %s (create, list, policies, grant, revoke)", sub);
  }
  sl_client *c = NULL;
  if (rc == SL_CLI_OK) rc = sl_cli_client(cli, &c);
  if (rc != SL_CLI_OK) {
    free(set);
    return rc;
  }
  sl_err err = SL_ERR_INIT;
  sl_status st;
  if (strcmp(sub, "create") == 0) {
    st = sl_admin_namespace_create(c, name, &err);
    if (st == SL_OK) printf(cli->json ? "{\"created\":\"%s\"}\n" : "created %s\n", name);
  } else if (strcmp(sub, "list") == 0) {
    sl_strings l;
    st = sl_admin_namespace_list(c, &l, &err);
    if (st == SL_OK) {
      if (cli->json) fputs("[", stdout);
      for (size_t i = 0; i < l.n; i++)
        printf(cli->json ? "%s\"%s\"" : "%.0s%s\n", i ? "," : "", l.v[i]);
      if (cli->json) fputs("]\n", stdout);
      sl_strings_free(&l);
    }
  } else {
    char *json;
    if (strcmp(sub, "grant") == 0 || strcmp(sub, "revoke") == 0)
      st = sl_admin_namespace_grant(c, name, cli->argv[3], sub[0] == 'g' ? cli->argv[4] : "",
                                    &json, &err);
    else
      st = sl_admin_namespace_policies(c, name, set, n_set, &json, &err);
    if (st == SL_OK) {
      print_json(json, cli->json);
      free(json);
    }
  }
  if (st != SL_OK) rc = sl_cli_fail(cli, st, &err);
  sl_client_destroy(c);
  free(set);
  return rc;
}

int sl_cli_cluster(sl_cli *cli) {
  if (sl_cli_wants_help(cli->argc, cli->argv)) {
    fputs(cluster_help, stdout);
    return SL_CLI_OK;
  }
  if (cli->argc != 2 || strcmp(cli->argv[1], "status") != 0)
    return sl_cli_usage("cluster ", "expected `sluice cluster status`");
  sl_client *c;
  int rc = sl_cli_client(cli, &c);
  if (rc != SL_CLI_OK) return rc;
  sl_err err = SL_ERR_INIT;
  char *json;
  sl_status st = sl_admin_cluster_status(c, &json, &err);
  if (st == SL_OK) {
    print_json(json, cli->json);
    free(json);
  } else {
    rc = sl_cli_fail(cli, st, &err);
  }
  sl_client_destroy(c);
  return rc;
}
