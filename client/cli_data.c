/* sluice produce | consume: see cli.h. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cli.h"
#include "common/clock.h"

static const char produce_help[] =
    "usage: sluice produce NAME [-m MSG]... [-f FILE] [-k KEY] [-p K=V]...\n"
    "  -m MSG   send MSG (repeatable)\n"
    "  -f FILE  send the file's contents as one message\n"
    "  -k KEY   routing key (partitioned topics: same key, same partition)\n"
    "  -p K=V   a property on every message (repeatable)\n"
    "With no -m or -f, every line of stdin is one message. Prints how many were\n"
    "acked; exits 1 if any was not.\n"
    "examples:\n"
    "  sluice produce public/orders -m hello -m world\n"
    "  seq 1000 | sluice produce public/orders -k customer-7 -p source=seq\n"
    "  sluice produce public/images -f cat.png\n";

static const char consume_help[] =
    "usage: sluice consume NAME -s SUB [-t exclusive|failover|shared|key_shared]\n"
    "                      [-n COUNT] [--from earliest|latest] [--timeout SEC]\n"
    "Prints each payload on its own line (with --json: JSON lines with id, key,\n"
    "properties, publish time, redelivery count, payload) and acks a message only\n"
    "once it has been written out. Stops after COUNT messages, or when none came\n"
    "for --timeout seconds, or on Ctrl-C; exits 1 if fewer than COUNT came.\n"
    "examples:\n"
    "  sluice consume public/orders -s audit -n 10 --from earliest\n"
    "  sluice --json consume public/orders -s billing -t shared\n";

typedef struct tally {
  atomic_ulong acked, failed;
  _Atomic sl_status first;
} tally;

static void on_sent(sl_status st, const sl_msg_id *id, void *arg) {
  (void)id;
  tally *t = arg;
  if (st == SL_OK) {
    atomic_fetch_add(&t->acked, 1);
  } else {
    sl_status none = SL_OK;
    atomic_compare_exchange_strong(&t->first, &none, st);
    atomic_fetch_add(&t->failed, 1);
  }
}

static sl_status send_one(sl_producer *p, const void *data, size_t len, const char *key,
                          const sl_property *props, size_t n_props, tally *t, sl_err *err) {
  sl_message m = {.payload = data, .len = len, .key = key, .props = props, .n_props = n_props};
  sl_status st = sl_producer_send_async(p, &m, on_sent, t, err);
  if (st != SL_OK) atomic_fetch_add(&t->failed, 1);
  return st;
}

static sl_status read_all(const char *path, char **data, size_t *len, sl_err *err) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return sl_err_set(err, SL_EINVAL, "%s: cannot open (check the path)", path);
  size_t cap = 65536;
  *len = 0;
  *data = malloc(cap);
  while (*data != NULL) {
    *len += fread(*data + *len, 1, cap - *len, f);
    if (*len < cap) break;
    char *n = realloc(*data, cap *= 2);
    if (n == NULL) free(*data);
    *data = n;
  }
  bool bad = ferror(f);
  fclose(f);
  if (*data == NULL) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", path);
  if (bad) {
    free(*data);
    return sl_err_set(err, SL_EIO, "%s: read error", path);
  }
  return SL_OK;
}

int sl_cli_produce(sl_cli *cli) {
  if (sl_cli_wants_help(cli->argc, cli->argv)) {
    fputs(produce_help, stdout);
    return SL_CLI_OK;
  }
  const char *name = NULL, *file = NULL, *key = NULL;
  int n_msgs = 0, n_props = 0;
  const char **msgs = calloc((size_t)cli->argc, sizeof(char *));
  sl_property *props = calloc((size_t)cli->argc, sizeof(*props));
  char **prop_keys = calloc((size_t)cli->argc, sizeof(char *));
  int rc = msgs && props && prop_keys ? SL_CLI_OK : SL_CLI_FAIL;
  for (int i = 1; i < cli->argc && rc == SL_CLI_OK; i++) {
    const char *a = cli->argv[i];
    bool has = i + 1 < cli->argc;
    if (strcmp(a, "-m") == 0 && has) {
      msgs[n_msgs++] = cli->argv[++i];
    } else if (strcmp(a, "-f") == 0 && has) {
      file = cli->argv[++i];
    } else if (strcmp(a, "-k") == 0 && has) {
      key = cli->argv[++i];
    } else if (strcmp(a, "-p") == 0 && has) {
      const char *kv = cli->argv[++i], *eq = strchr(kv, '=');
      if (eq == NULL || eq == kv) {
        rc = sl_cli_usage("produce ", "-p %s: expected K=V", kv);
        break;
      }
      prop_keys[n_props] = strndup(kv, (size_t)(eq - kv));
      props[n_props].key = prop_keys[n_props];
      props[n_props++].value = eq + 1;
    } else if (a[0] == '-') {
      rc = sl_cli_usage("produce ", "unknown option %s (or it needs a value)", a);
    } else if (name == NULL) {
      name = a;
    } else {
      rc = sl_cli_usage("produce ", "unexpected argument %s", a);
    }
  }
  if (rc == SL_CLI_OK && name == NULL) rc = sl_cli_usage("produce ", "produce needs a topic NAME");
  sl_client *c = NULL;
  sl_producer *p = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = SL_OK;
  if (rc == SL_CLI_OK) rc = sl_cli_client(cli, &c);
  if (rc == SL_CLI_OK) {
    sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
    po.topic = name;
    st = sl_producer_create(c, &po, &p, &err);
    if (st != SL_OK) rc = sl_cli_fail(cli, st, &err);
  }
  tally t = {0};
  if (rc == SL_CLI_OK) {
    for (int i = 0; i < n_msgs && st == SL_OK; i++)
      st = send_one(p, msgs[i], strlen(msgs[i]), key, props, (size_t)n_props, &t, &err);
    if (st == SL_OK && file != NULL) {
      char *data;
      size_t len;
      st = read_all(file, &data, &len, &err);
      if (st == SL_OK) {
        st = send_one(p, data, len, key, props, (size_t)n_props, &t, &err);
        free(data);
      }
    }
    if (st == SL_OK && n_msgs == 0 && file == NULL) {
      char *line = NULL;
      size_t cap = 0;
      ssize_t n;
      while (st == SL_OK && (n = getline(&line, &cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') n--;
        st = send_one(p, line, (size_t)n, key, props, (size_t)n_props, &t, &err);
      }
      free(line);
    }
    sl_producer_flush(p, NULL);
  }
  sl_producer_destroy(p);
  if (rc == SL_CLI_OK) {
    unsigned long acked = atomic_load(&t.acked), failed = atomic_load(&t.failed);
    if (cli->json) printf("{\"acked\":%lu,\"failed\":%lu}\n", acked, failed);
    else printf("acked %lu%s", acked, failed ? "" : "\n");
    if (failed && !cli->json) printf(", failed %lu\n", failed);
    fflush(stdout);
    if (st != SL_OK) {
      rc = sl_cli_fail(cli, st, &err);
    } else if (failed) {
      sl_status first = atomic_load(&t.first);
      sl_err_set(&err, first, "%s: %lu messages not acked", name, failed);
      rc = sl_cli_fail(cli, first, &err);
    }
  }
  sl_client_destroy(c);
  for (int i = 0; i < n_props; i++) free(prop_keys[i]);
  free(prop_keys);
  free(props);
  free(msgs);
  return rc;
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

static void json_str(const uint8_t *s, size_t n) {
  putchar('"');
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '"' || s[i] == '\\') printf("\\%c", s[i]);
    else if (s[i] < 0x20) printf("\\u%04x", s[i]);
    else putchar(s[i]);
  }
  putchar('"');
}

static void print_msg(const sl_received *m, bool json) {
  if (!json) {
    fwrite(m->payload, 1, m->len, stdout);
    putchar('\n');
    return;
  }
  printf("{\"id\":\"%llu:%lld:%d:%d\",\"key\":", (unsigned long long)m->id.ledger_id,
         (long long)m->id.entry_id, m->id.batch_index, m->id.partition);
  json_str((const uint8_t *)m->key, strlen(m->key));
  printf(",\"properties\":{");
  for (size_t i = 0; i < m->n_props; i++) {
    if (i) putchar(',');
    json_str((const uint8_t *)m->props[i].key, strlen(m->props[i].key));
    putchar(':');
    json_str((const uint8_t *)m->props[i].value, strlen(m->props[i].value));
  }
  printf("},\"publish_time_ms\":%lld,\"redelivery_count\":%u,\"payload\":",
         (long long)m->publish_time_ms, m->redelivery_count);
  json_str(m->payload, m->len);
  printf("}\n");
}

/* The last printed, not yet acked message of each partition (by index;
 * slot 0 also for a non-partitioned topic). */
typedef struct last_acks {
  sl_msg_id *id;
  bool *held;
  size_t n;
} last_acks;

/* Acks the partition's previously held message and holds this one. */
static sl_status hold_ack(last_acks *l, sl_consumer *cons, const sl_msg_id *id, sl_err *err) {
  size_t i = id->partition < 0 ? 0 : (size_t)id->partition;
  if (i >= l->n) {
    size_t n = i + 1;
    sl_msg_id *v = realloc(l->id, n * sizeof(*v));
    if (v != NULL) l->id = v;
    bool *h = v ? realloc(l->held, n * sizeof(*h)) : NULL;
    if (h == NULL) return sl_err_set(err, SL_ENOMEM, "out of memory; message not acked");
    l->held = h;
    for (size_t k = l->n; k < n; k++) l->held[k] = false;
    l->n = n;
  }
  sl_status st = l->held[i] ? sl_consumer_ack(cons, &l->id[i], err) : SL_OK;
  /* Reconnecting: the broker redelivers it (at least once), not an error. */
  if (st == SL_EUNAVAIL) st = SL_OK;
  l->id[i] = *id;
  l->held[i] = true;
  return st;
}

/* Acks every held message and waits for the broker's receipts; frees l. */
static sl_status ack_held(last_acks *l, sl_consumer *cons, sl_err *err) {
  sl_status first = SL_OK;
  for (size_t i = 0; i < l->n; i++) {
    if (!l->held[i]) continue;
    sl_err e = SL_ERR_INIT;
    sl_status st = sl_consumer_ack_sync(cons, &l->id[i], &e);
    if (st != SL_OK && first == SL_OK) {
      first = st;
      *err = e;
    }
  }
  free(l->id);
  free(l->held);
  return first;
}

int sl_cli_consume(sl_cli *cli) {
  if (sl_cli_wants_help(cli->argc, cli->argv)) {
    fputs(consume_help, stdout);
    return SL_CLI_OK;
  }
  sl_consumer_opts co = SL_CONSUMER_OPTS_INIT;
  long count = 0;
  for (int i = 1; i < cli->argc; i++) {
    const char *a = cli->argv[i];
    bool has = i + 1 < cli->argc;
    if (strcmp(a, "-s") == 0 && has) {
      co.subscription = cli->argv[++i];
    } else if (strcmp(a, "-t") == 0 && has) {
      const char *t = cli->argv[++i];
      static const char *const types[] = {"exclusive", "failover", "shared", "key_shared"};
      int k = 0;
      while (k < 4 && strcmp(t, types[k]) != 0) k++;
      if (k == 4)
        return sl_cli_usage("consume ", "-t %s: expected exclusive, failover, shared or key_shared", t);
      co.type = (sl_sub_type)k;
    } else if (strcmp(a, "-n") == 0 && has) {
      char *end;
      count = strtol(cli->argv[++i], &end, 10);
      if (*end || count <= 0) return sl_cli_usage("consume ", "-n %s: expected a count > 0", cli->argv[i]);
    } else if (strcmp(a, "--from") == 0 && has) {
      const char *f = cli->argv[++i];
      if (strcmp(f, "earliest") && strcmp(f, "latest"))
        return sl_cli_usage("consume ", "--from %s: expected earliest or latest", f);
      co.from_earliest = strcmp(f, "earliest") == 0;
    } else if (a[0] == '-') {
      return sl_cli_usage("consume ", "unknown option %s (or it needs a value)", a);
    } else if (co.topic == NULL) {
      co.topic = a;
    } else {
      return sl_cli_usage("consume ", "unexpected argument %s", a);
    }
  }
  if (co.topic == NULL) return sl_cli_usage("consume ", "consume needs a topic NAME");
  if (co.subscription == NULL) return sl_cli_usage("consume ", "consume needs -s SUBSCRIPTION");
  if (count > 0 && count < 1000) co.receiver_queue = (int)count;
  sl_client *c;
  int rc = sl_cli_client(cli, &c);
  if (rc != SL_CLI_OK) return rc;
  sl_err err = SL_ERR_INIT;
  sl_consumer *cons = NULL;
  sl_status st = sl_consumer_create(c, &co, &cons, &err);
  long got = 0;
  signal(SIGINT, on_sigint);
  int idle_ms = cli->timeout_s ? cli->timeout_s * 1000 : -1;
  int64_t idle_deadline = idle_ms > 0 ? sl_clock_mono_ns() + (int64_t)idle_ms * 1000000 : 0;
  /* Each message is acked once the next one of its partition is printed,
   * and the last of each partition with a receipt before exiting: acks
   * travel in order on a partition's stream, so that receipt also means the
   * earlier acks reached the broker (a plain ack could still be in flight
   * when the stream is closed). */
  last_acks held = {0};
  bool ended = false;
  while (st == SL_OK && !interrupted && (count == 0 || got < count)) {
    sl_received *m = NULL;
    st = sl_consumer_receive(cons, 200, &m, &err);
    if (st == SL_ETIMEDOUT) {
      st = SL_OK;
      if (idle_deadline && sl_clock_mono_ns() >= idle_deadline) break;
      continue;
    }
    if (st == SL_ERANGE) { /* a terminated topic, read to its end */
      fprintf(stderr, "sluice: %s: end of topic (terminated)\n", co.topic);
      st = SL_OK;
      ended = true;
      break;
    }
    if (st != SL_OK) break;
    print_msg(m, cli->json);
    /* Ack only what is out of our hands. */
    if (fflush(stdout) != 0) st = sl_err_set(&err, SL_EIO, "stdout: write failed; message not acked");
    else st = hold_ack(&held, cons, &m->id, &err);
    if (st == SL_OK) got++;
    sl_received_free(m);
    if (idle_ms > 0) idle_deadline = sl_clock_mono_ns() + (int64_t)idle_ms * 1000000;
  }
  sl_err aerr = SL_ERR_INIT;
  sl_status ast = ack_held(&held, cons, &aerr);
  if (st == SL_OK && ast != SL_OK) {
    st = ast;
    err = aerr;
  }
  if (st != SL_OK) {
    rc = sl_cli_fail(cli, st, &err);
  } else if (count > 0 && got < count) {
    fprintf(stderr, "sluice: %s: got %ld of %ld messages before %s\n", co.topic, got, count,
            interrupted ? "Ctrl-C"
            : ended     ? "the end of the topic"
                        : "--timeout passed; raise --timeout or produce more");
    rc = SL_CLI_FAIL;
  }
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
  return rc;
}
