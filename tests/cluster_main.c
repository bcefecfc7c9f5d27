/*
 * sluice-cluster: a whole local cluster on loopback, for people, through the
 * test harness (tests/cluster.h): the same code path the integration tests
 * use. It starts etcd, metadata replicas, bookies and brokers, checks every
 * node's gRPC health, prints the addresses, shows the parts working together
 * (cluster_demo.h), and keeps them running until SIGINT/SIGTERM (or exits at
 * once with --check).
 *
 * With --dir DIR it also takes commands while it runs (tools/cluster is the
 * thin script over this): it writes DIR/url (the first broker, "HOST:PORT")
 * and DIR/pid, and reads one command per line from the FIFO DIR/control:
 *   status | kill NAME | restart NAME | stop NAME | pause NAME | resume NAME
 *   | down
 * followed by the path of a FIFO the answer is written to ("ok" or
 * "error: ..." on the first line). `sluice-cluster --dir DIR --command CMD`
 * is that client. NAME is as in status: etcd, metadata-0, bookie-2, broker-1.
 * The nodes' files go under DIR (kept after down).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/rpc_client.h"
#include "common/rpc_health.h"
#include "common/service.h"
#include "tests/cluster.h"
#include "tests/cluster_demo.h"
#include "tests/proc.h"

typedef struct cli_cfg {
  long long metadata;
  long long bookies;
  long long brokers;
  bool local;
  bool check;
  char *dir;
  char *command;
} cli_cfg;

static const sl_conf_entry table[] = {
    SL_CONF_INT(cli_cfg, metadata, "2", 1, 8, "SLUICE_CLUSTER_METADATA",
                "metadata service replicas"),
    SL_CONF_INT(cli_cfg, bookies, "3", 0, 16, "SLUICE_CLUSTER_BOOKIES", "bookies"),
    SL_CONF_INT(cli_cfg, brokers, "2", 0, 16, "SLUICE_CLUSTER_BROKERS", "brokers"),
    SL_CONF_BOOL(cli_cfg, local, "false", "SLUICE_CLUSTER_LOCAL",
                 "embedded metadata store instead of etcd (one metadata replica)"),
    SL_CONF_BOOL(cli_cfg, check, "false", "SLUICE_CLUSTER_CHECK",
                 "check health, print, then stop everything and exit"),
    SL_CONF_STR(cli_cfg, dir, "", "SLUICE_CLUSTER_DIR",
                "keep the cluster's files here and take commands on DIR/control; "
                "empty = a temp dir, no commands"),
    SL_CONF_STR(cli_cfg, command, "", "SLUICE_CLUSTER_COMMAND",
                "send one command to the cluster running in --dir and print the "
                "answer: status, kill NAME, restart NAME, stop NAME, pause NAME, "
                "resume NAME, down"),
};

#define REPLY_MAX 8192
#define LINE_MAX_BYTES 1024

static sl_status check_health(const char *addr, sl_err *err) {
  sl_rpc_channel *ch = NULL;
  sl_rpc_channel_opts co = {.target = addr};
  sl_status st = sl_rpc_channel_create(&co, &ch, err);
  if (st != SL_OK) return st;
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  sl_rpc_call_opts opts = {.timeout_ms = 5000};
  st = sl_rpc_unary(ch, &sl_rpc_health_check, &req.base, &resp, &opts, err);
  if (st == SL_OK) {
    Grpc__Health__V1__HealthCheckResponse *r = (Grpc__Health__V1__HealthCheckResponse *)resp;
    if (r->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
      st = sl_err_set(err, SL_EUNAVAIL, "%s: not serving", addr);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  sl_rpc_channel_destroy(ch);
  return st;
}

static const char *const kinds[] = {"metadata", "bookie", "broker"};

/* ---- the commands ---- */

/* "running", "paused" (SIGSTOP'd) or "stopped". */
static const char *proc_state(int pid) {
  if (pid <= 0) return "stopped";
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return "stopped";
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *close_paren = strrchr(buf, ')'); /* "pid (comm) S ..." */
  if (close_paren == NULL || close_paren[1] == '\0') return "running";
  return close_paren[2] == 'T' || close_paren[2] == 't' ? "paused" : "running";
}

static void status(sl_cluster *c, char *out, size_t cap) {
  size_t off = (size_t)snprintf(out, cap, "ok\n");
  sl_etcd_proc *e = sl_cluster_etcd(c);
  if (e != NULL)
    off += (size_t)snprintf(out + off, cap - off, "%-12s %-22s %s\n", "etcd",
                            e->endpoint + strlen("http://"),
                            proc_state(sl_proc_running(&e->proc) ? e->proc.pid : 0));
  for (int k = SL_NODE_METADATA; k <= SL_NODE_BROKER && off < cap; k++) {
    for (int i = 0; i < sl_cluster_count(c, (sl_node_kind)k) && off < cap; i++) {
      int pid = sl_cluster_running(c, (sl_node_kind)k, i)
                    ? sl_cluster_pid(c, (sl_node_kind)k, i) : 0;
      off += (size_t)snprintf(out + off, cap - off, "%-12s %-22s %-8s log %s\n",
                              sl_cluster_id(c, (sl_node_kind)k, i),
                              sl_cluster_addr(c, (sl_node_kind)k, i), proc_state(pid),
                              sl_cluster_log(c, (sl_node_kind)k, i));
    }
  }
}

static sl_status on_etcd(sl_cluster *c, const char *verb, sl_err *err) {
  sl_etcd_proc *e = sl_cluster_etcd(c);
  if (e == NULL) return sl_err_set(err, SL_ENOTFOUND, "no etcd (local store)");
  if (strcmp(verb, "kill") == 0) return sl_etcd_proc_kill9(e, err);
  if (strcmp(verb, "stop") == 0) return sl_etcd_proc_stop(e, err);
  if (strcmp(verb, "restart") == 0) return sl_etcd_proc_restart(e, err);
  int sig = strcmp(verb, "pause") == 0 ? SIGSTOP : SIGCONT;
  return kill(e->proc.pid, sig) == 0 ? SL_OK : sl_err_set(err, SL_EIO, "etcd: %s", strerror(errno));
}

/* Runs one command line; the answer goes to out. Returns false for down. */
static bool run_command(sl_cluster *c, const char *line, char *out, size_t cap) {
  char verb[32] = "", name[64] = "";
  if (sscanf(line, "%31s %63s", verb, name) < 1) {
    snprintf(out, cap, "error: empty command\n");
    return true;
  }
  if (strcmp(verb, "status") == 0) {
    status(c, out, cap);
    return true;
  }
  if (strcmp(verb, "down") == 0) {
    snprintf(out, cap, "ok\n");
    return false;
  }
  static const char *const verbs[] = {"kill", "restart", "stop", "pause", "resume"};
  bool known = false;
  for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
    known |= strcmp(verb, verbs[i]) == 0;
  sl_err err = SL_ERR_INIT;
  sl_status st;
  sl_node_kind kind;
  int i = 0;
  if (!known)
    st = sl_err_set(&err, SL_EINVAL, "unknown command %s (status, kill, restart, stop, "
                    "pause, resume, down)", verb);
  else if (name[0] == '\0')
    st = sl_err_set(&err, SL_EINVAL, "%s: which node? (see status)", verb);
  else if (strcmp(name, "etcd") == 0)
    st = on_etcd(c, verb, &err);
  else if ((st = sl_cluster_find(c, name, &kind, &i, &err)) != SL_OK)
    ;
  else if (strcmp(verb, "kill") == 0)
    st = sl_cluster_kill9(c, kind, i, &err);
  else if (strcmp(verb, "stop") == 0)
    st = sl_cluster_stop_node(c, kind, i, &err);
  else if (strcmp(verb, "restart") == 0) {
    if (sl_cluster_running(c, kind, i)) st = sl_cluster_stop_node(c, kind, i, &err);
    if (st == SL_OK) st = sl_cluster_restart(c, kind, i, &err);
  } else
    st = sl_cluster_signal(c, kind, i, strcmp(verb, "pause") == 0 ? SIGSTOP : SIGCONT, &err);
  if (st == SL_OK) snprintf(out, cap, "ok\n");
  else snprintf(out, cap, "error: %s\n", sl_err_msg(&err, st));
  return true;
}

/* Writes the answer to the client's FIFO; gives up after a second if the
 * client has gone. */
static void reply(const char *path, const char *text) {
  int fd = -1;
  for (int tries = 0; tries < 100 && fd < 0; tries++) {
    fd = open(path, O_WRONLY | O_NONBLOCK);
    if (fd < 0) {
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  if (fd < 0) return;
  fcntl(fd, F_SETFL, 0); /* blocking writes from here */
  size_t n = strlen(text), off = 0;
  while (off < n) {
    ssize_t w = write(fd, text + off, n - off);
    if (w <= 0) break;
    off += (size_t)w;
  }
  close(fd);
}

static sl_status write_file(const char *dir, const char *name, const char *text,
                            sl_err *err) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (f == NULL) return sl_err_set(err, SL_EIO, "%s: %s", path, strerror(errno));
  fputs(text, f);
  return fclose(f) == 0 ? SL_OK : sl_err_set(err, SL_EIO, "%s: write failed", path);
}

/* Serves commands on dir/control until SIGTERM/SIGINT or down. */
static void serve_commands(sl_cluster *c, const char *dir) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/control", dir);
  unlink(path);
  int fd = -1;
  if (mkfifo(path, 0600) == 0) fd = open(path, O_RDWR | O_NONBLOCK); /* RDWR: no EOF */
  if (fd < 0) {
    sl_log(SL_LOG_ERROR, "event=control_failed path=%s error=\"%s\"", path, strerror(errno));
    sl_service_wait();
    return;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  char buf[LINE_MAX_BYTES * 4];
  size_t have = 0;
  bool up = true;
  while (up) {
    struct timespec wait = {0, 50 * 1000 * 1000};
    if (sigtimedwait(&set, NULL, &wait) > 0) break;
    ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
    if (n > 0) have += (size_t)n;
    char *nl;
    while (up && (nl = memchr(buf, '\n', have)) != NULL) {
      *nl = '\0';
      /* "<command...> <reply fifo>": the last word is the reply path. */
      char *sp = strrchr(buf, ' ');
      char out[REPLY_MAX];
      if (sp != NULL) {
        *sp = '\0';
        up = run_command(c, buf, out, sizeof(out));
        reply(sp + 1, out);
      }
      size_t used = (size_t)(nl + 1 - buf);
      memmove(buf, nl + 1, have - used);
      have -= used;
    }
    if (have == sizeof(buf) - 1) have = 0; /* a line too long: drop it */
  }
  close(fd);
  unlink(path);
}

/* The client side of --command. */
static int send_command(const char *dir, const char *command) {
  char control[4096], answer[4096];
  snprintf(control, sizeof(control), "%s/control", dir);
  snprintf(answer, sizeof(answer), "%s/reply.%d", dir, (int)getpid());
  int fd = open(control, O_WRONLY | O_NONBLOCK);
  if (fd < 0) {
    fprintf(stderr, "cluster: no cluster running in %s\n", dir);
    return 1;
  }
  unlink(answer);
  if (mkfifo(answer, 0600) != 0) {
    fprintf(stderr, "cluster: %s: %s\n", answer, strerror(errno));
    close(fd);
    return 1;
  }
  char line[LINE_MAX_BYTES];
  int n = snprintf(line, sizeof(line), "%s %s\n", command, answer);
  bool sent = n > 0 && (size_t)n < sizeof(line) && write(fd, line, (size_t)n) == n;
  close(fd);
  int code = 1;
  if (!sent) {
    fprintf(stderr, "cluster: command too long or not sent\n");
  } else {
    alarm(120); /* a restart waits for the node; never hang past this */
    FILE *f = fopen(answer, "r");
    char text[REPLY_MAX];
    size_t got = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
    if (f) fclose(f);
    text[got] = '\0';
    if (strncmp(text, "ok\n", 3) == 0) {
      fputs(text + 3, stdout);
      code = 0;
    } else {
      fputs(got ? text : "error: no answer\n", stderr);
    }
  }
  unlink(answer);
  return code;
}

int main(int argc, char **argv) {
  cli_cfg cfg = {0};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_conf_parse(table, sizeof(table) / sizeof(table[0]), &cfg,
                               argv[0], argc, argv, &err);
  if (st == SL_ECANCELED) return 0;
  if (st != SL_OK) {
    fprintf(stderr, "%s: %s\n", argv[0], sl_err_msg(&err, st));
    return 2;
  }
  int code = 0;
  if (cfg.command[0] != '\0') {
    if (cfg.dir[0] == '\0') {
      fprintf(stderr, "%s: --command needs --dir\n", argv[0]);
      code = 2;
    } else {
      code = send_command(cfg.dir, cfg.command);
    }
    sl_conf_release(table, sizeof(table) / sizeof(table[0]), &cfg);
    return code;
  }
  sl_log_set_service("cluster");
  sl_service_block_signals();
  if (cfg.dir[0] != '\0') {
    /* Every node's files (etcd's too) go under DIR. */
    if (mkdir(cfg.dir, 0755) != 0 && errno != EEXIST) {
      fprintf(stderr, "cluster: %s: %s\n", cfg.dir, strerror(errno));
      return 1;
    }
    setenv("TEST_TMPDIR", cfg.dir, 1);
  }
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.metadata = cfg.local ? 1 : (int)cfg.metadata; /* one embedded store */
  o.bookies = (int)cfg.bookies;
  o.brokers = (int)cfg.brokers;
  o.local_store = cfg.local;
  o.name = "sluice-cluster";
  o.public_namespace = true; /* issue 11: `topic create public/x` works at once */
  sl_cluster *c = NULL;
  st = sl_cluster_start(&o, &c, &err);
  if (st != SL_OK) {
    fprintf(stderr, "cluster: %s\n", sl_err_msg(&err, st));
    return 1;
  }
  printf("sluice local cluster, files in %s\n", sl_cluster_dir(c));
  if (sl_cluster_etcd(c) != NULL) printf("  etcd       %s\n", sl_cluster_etcd(c)->endpoint);
  for (int k = SL_NODE_METADATA; k <= SL_NODE_BROKER && st == SL_OK; k++) {
    for (int i = 0; i < sl_cluster_count(c, (sl_node_kind)k) && st == SL_OK; i++) {
      const char *addr = sl_cluster_addr(c, (sl_node_kind)k, i);
      st = check_health(addr, &err);
      printf("  %-10s %-22s %s  log %s\n", kinds[k], addr,
             st == SL_OK ? "SERVING" : sl_err_msg(&err, st),
             sl_cluster_log(c, (sl_node_kind)k, i));
    }
  }
  if (st == SL_OK) st = sl_cluster_demo(c, stdout, &err);
  if (st == SL_OK && cfg.dir[0] != '\0') {
    char text[64];
    snprintf(text, sizeof(text), "%d\n", (int)getpid());
    st = write_file(cfg.dir, "pid", text, &err);
    const char *url = sl_cluster_count(c, SL_NODE_BROKER) > 0
                          ? sl_cluster_addr(c, SL_NODE_BROKER, 0)
                          : sl_cluster_addr(c, SL_NODE_METADATA, 0);
    snprintf(text, sizeof(text), "%s\n", url);
    if (st == SL_OK) st = write_file(cfg.dir, "url", text, &err);
  }
  if (st != SL_OK) printf("failed: %s\n", sl_err_msg(&err, st));
  fflush(stdout);
  if (st == SL_OK && !cfg.check) {
    printf("running; press Ctrl-C to stop\n");
    fflush(stdout);
    if (cfg.dir[0] != '\0') serve_commands(c, cfg.dir);
    else sl_service_wait();
  }
  char *dir = sl_xstrdup(sl_cluster_dir(c));
  sl_cluster_destroy(c);
  if (cfg.dir[0] != '\0') {
    char path[4096];
    snprintf(path, sizeof(path), "%s/url", cfg.dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/pid", cfg.dir);
    unlink(path);
  } else if (st == SL_OK) {
    sl_proc_rmtree(dir, NULL); /* keep logs of a failed run */
  }
  printf(st == SL_OK ? "stopped\n" : "stopped; logs kept in %s\n", dir);
  free(dir);
  sl_conf_release(table, sizeof(table) / sizeof(table[0]), &cfg);
  return st == SL_OK ? 0 : 1;
}
