#include "tests/ledger_testlib.h"

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "bookie.slrpc.h"
#include "metadata.slrpc.h"
#include "tests/bookie_testlib.h"
#include "tests/waiter.h"

void sl_lt_start(sl_lt *t, const char *name, int bookies,
                 const char *const *bookie_args, const sl_ledger_client_opts *opts) {
  sl_lt_start_md(t, name, bookies, bookie_args, NULL, opts);
}

void sl_lt_start_md(sl_lt *t, const char *name, int bookies, const char *const *bookie_args,
                    const char *const *metadata_args, const sl_ledger_client_opts *opts) {
  memset(t, 0, sizeof(*t));
  const char **args = t->bookie_args;
  args[0] = "--registration_ttl";
  args[1] = "4";
  for (int i = 0; bookie_args && bookie_args[i] && i < 4; i++) args[2 + i] = bookie_args[i];
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.bookies = bookies;
  o.brokers = 0;
  o.name = name;
  o.bookie_args = args;
  o.metadata_args = metadata_args;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &t->cluster, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  t->meta = sl_bktest_channel(sl_cluster_metadata_target(t->cluster));
  sl_ledger_client_opts co = SL_LEDGER_CLIENT_OPTS_INIT;
  co.recovery_timeout_ms = 30000; /* ASan runs share 2 cores with the suite */
  if (opts) co = *opts;
  co.metadata = t->meta;
  st = sl_ledger_client_create(&co, &t->client, &err);
  if (st != SL_OK) fail_msg("client: %s", sl_err_msg(&err, st));
  for (int i = 0; i < bookies; i++) sl_lt_wait_registered(t, i, 20000);
}

void sl_lt_stop(sl_lt *t) {
  sl_ledger_client_destroy(t->client);
  sl_rpc_channel_destroy(t->meta);
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < sl_cluster_count(t->cluster, SL_NODE_BOOKIE); i++) {
    if (sl_cluster_running(t->cluster, SL_NODE_BOOKIE, i)) {
      sl_lt_signal_bookie(t, i, SIGCONT);
      assert_int_equal(sl_cluster_stop_node(t->cluster, SL_NODE_BOOKIE, i, &err), SL_OK);
    }
    sl_bktest_check_log_clean(sl_cluster_log(t->cluster, SL_NODE_BOOKIE, i));
  }
  sl_cluster_destroy(t->cluster);
}

int sl_lt_teardown(void **state) {
  sl_lt *t = *state;
  sl_lt_stop(t);
  free(t);
  return 0;
}

static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

size_t sl_lt_payload(uint64_t ledger, int64_t entry, uint8_t *buf) {
  uint64_t s = mix(ledger * 0x100000001b3ull ^ mix((uint64_t)entry)) | 1;
  size_t n = 1 + (size_t)(s % SL_LT_PAYLOAD_MAX);
  for (size_t i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    buf[i] = (uint8_t)s;
  }
  return n;
}

/* ---- one-shot waits (tests/waiter.h) ---- */

static void open_cb(sl_status st, const char *details, sl_ledger *lh, void *arg) {
  sl_tw_done_out(arg, st, details, lh);
}

static void close_cb(sl_status st, const char *details, void *arg) {
  sl_tw_done(arg, st, details);
}

sl_ledger *sl_lt_create(sl_lt *t, uint32_t e, uint32_t qw, uint32_t qa,
                        uint64_t epoch, sl_ledger_fenced_cb on_fenced, void *arg) {
  sl_tw w;
  sl_tw_init(&w);
  sl_ledger_create_opts o = SL_LEDGER_CREATE_OPTS_INIT;
  o.ensemble_size = e;
  o.write_quorum = qw;
  o.ack_quorum = qa;
  o.epoch = epoch;
  o.password = "secret";
  o.password_len = 6;
  o.on_fenced = on_fenced;
  o.fenced_arg = arg;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_create_async(t->client, &o, open_cb, &w, &err);
  if (st != SL_OK) fail_msg("create: %s", sl_err_msg(&err, st));
  sl_tw_wait(&w, 30000);
  if (w.st != SL_OK) fail_msg("create: %s: %s", sl_status_str(w.st), w.details);
  sl_ledger *lh = w.out;
  return lh;
}

sl_status sl_lt_close(sl_ledger *lh) {
  sl_tw w;
  sl_tw_init(&w);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_close_async(lh, close_cb, &w, &err);
  if (st != SL_OK) fail_msg("close: %s", sl_err_msg(&err, st));
  sl_tw_wait(&w, 60000);
  st = w.st;
  return st;
}

sl_status sl_lt_recover(sl_lt *t, uint64_t ledger, uint64_t epoch,
                        sl_ledger **out, char *details, size_t n) {
  sl_tw w;
  sl_tw_init(&w);
  sl_ledger_recover_opts o = {epoch, NULL};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_recover_async(t->client, ledger, &o, open_cb, &w, &err);
  if (st != SL_OK) fail_msg("recover: %s", sl_err_msg(&err, st));
  sl_tw_wait(&w, 60000);
  *out = w.out;
  if (details) snprintf(details, n, "%s", w.details);
  st = w.st;
  return st;
}

sl_ledger *sl_lt_open(sl_lt *t, uint64_t ledger) {
  sl_tw w;
  sl_tw_init(&w);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_open_async(t->client, ledger, NULL, open_cb, &w, &err);
  if (st != SL_OK) fail_msg("open: %s", sl_err_msg(&err, st));
  sl_tw_wait(&w, 30000);
  if (w.st != SL_OK) fail_msg("open: %s: %s", sl_status_str(w.st), w.details);
  sl_ledger *lh = w.out;
  return lh;
}

static void destroyed_run(void *arg) { sl_tw_done(arg, SL_OK, NULL); }

void sl_lt_destroy(sl_ledger *lh) {
  sl_tw w;
  sl_tw_init(&w);
  sl_serial *s = sl_ledger_serial(lh);
  sl_serial_ref(s);
  sl_ledger_destroy(lh);
  sl_serial_post(s, destroyed_run, &w); /* runs after the destroy */
  sl_tw_wait(&w, 10000);
  sl_serial_unref(s);
}

/* ---- appends ---- */

void sl_lt_appends_init(sl_lt_appends *a, uint64_t ledger) {
  memset(a, 0, sizeof(*a));
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  a->last_ok = a->last_cb = -1;
  a->ledger = ledger;
}

void sl_lt_appends_release(sl_lt_appends *a) {
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->cv);
}

static void append_cb(sl_status st, int64_t entry, void *arg) {
  sl_lt_appends *a = arg;
  pthread_mutex_lock(&a->mu);
  if (entry <= a->last_cb) a->out_of_order = true;
  a->last_cb = entry;
  if (st == SL_OK) {
    if (a->first_fail != SL_OK) a->ok_after_fail = true;
    a->ok++;
    a->last_ok = entry;
  } else if (a->first_fail == SL_OK) {
    a->first_fail = st;
  }
  a->done++;
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
}

sl_status sl_lt_append(sl_ledger *lh, sl_lt_appends *a) {
  uint8_t buf[SL_LT_PAYLOAD_MAX];
  sl_ledger_stats stats;
  sl_ledger_stats_get(lh, &stats);
  int64_t e = stats.next_entry;
  size_t n = sl_lt_payload(a->ledger, e, buf);
  int64_t id = -1;
  sl_status st = sl_ledger_append(lh, buf, n, append_cb, a, &id, NULL);
  if (st == SL_OK) {
    assert_int_equal(id, e);
    pthread_mutex_lock(&a->mu);
    a->n++;
    pthread_mutex_unlock(&a->mu);
  }
  return st;
}

int64_t sl_lt_done(sl_lt_appends *a) {
  pthread_mutex_lock(&a->mu);
  int64_t done = a->done;
  pthread_mutex_unlock(&a->mu);
  return done;
}

void sl_lt_wait_done(sl_lt_appends *a, int64_t count, int timeout_ms) {
  int64_t deadline = sl_clock_mono_ms() + timeout_ms;
  pthread_mutex_lock(&a->mu);
  while (a->done < count && sl_clock_mono_ms() < deadline) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += 50 * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
      dl.tv_sec++;
      dl.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&a->cv, &a->mu, &dl);
  }
  int64_t done = a->done;
  pthread_mutex_unlock(&a->mu);
  if (done < count)
    fail_msg("appends: %lld of %lld callbacks within %d ms", (long long)done,
             (long long)count, timeout_ms);
}

/* ---- reads ---- */

typedef struct read_check {
  sl_tw w;
  uint64_t ledger;
  int64_t next;
  int64_t delivered;
  bool bad;
  char why[128];
} read_check;

static void entry_cb(int64_t entry, const void *data, size_t len, void *arg) {
  read_check *rc = arg;
  uint8_t want[SL_LT_PAYLOAD_MAX];
  size_t n = sl_lt_payload(rc->ledger, entry, want);
  if (entry != rc->next && !rc->bad) {
    rc->bad = true;
    snprintf(rc->why, sizeof(rc->why), "entry %lld delivered, expected %lld",
             (long long)entry, (long long)rc->next);
  } else if ((n != len || memcmp(want, data, n) != 0) && !rc->bad) {
    rc->bad = true;
    snprintf(rc->why, sizeof(rc->why), "entry %lld: wrong payload", (long long)entry);
  }
  rc->next = entry + 1;
  rc->delivered++;
}

static void read_done_cb(sl_status st, const char *details, void *arg) {
  read_check *rc = arg;
  sl_tw_done(&rc->w, st, details);
}

sl_status sl_lt_read_check(sl_ledger *lh, int64_t first, int64_t last,
                           int64_t *delivered) {
  read_check rc;
  memset(&rc, 0, sizeof(rc));
  sl_tw_init(&rc.w);
  rc.ledger = sl_ledger_id(lh);
  rc.next = first;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_read_async(lh, first, last, entry_cb, read_done_cb, &rc, &err);
  if (st != SL_OK) {
    if (delivered) *delivered = 0;
    return st;
  }
  sl_tw_wait(&rc.w, 60000);
  if (rc.bad) fail_msg("read: %s", rc.why);
  if (rc.w.st == SL_OK) assert_int_equal(rc.delivered, last - first + 1);
  if (delivered) *delivered = rc.delivered;
  st = rc.w.st;
  return st;
}

/* ---- bookies ---- */

sl_ledger *sl_lt_filled(sl_lt *t, int n, bool close) {
  sl_ledger *lh = sl_lt_create(t, 3, 2, 2, 1, NULL, NULL);
  sl_lt_appends a;
  sl_lt_appends_init(&a, sl_ledger_id(lh));
  for (int i = 0; i < n; i++) assert_int_equal(sl_lt_append(lh, &a), SL_OK);
  sl_lt_wait_done(&a, n, 30000);
  assert_int_equal(a.ok, n);
  if (close) assert_int_equal(sl_lt_close(lh), SL_OK);
  sl_lt_appends_release(&a);
  return lh;
}

int sl_lt_bookie_index(sl_lt *t, const char *bookie_id) {
  for (int i = 0; i < sl_cluster_count(t->cluster, SL_NODE_BOOKIE); i++)
    if (strcmp(sl_cluster_id(t->cluster, SL_NODE_BOOKIE, i), bookie_id) == 0) return i;
  return -1;
}

int sl_lt_ensemble_bookie(sl_lt *t, sl_ledger *lh, uint32_t slot) {
  Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  req.ledger_id = sl_ledger_id(lh);
  Sluice__V1__LedgerResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_get_ledger(t->meta, &req, &r, NULL, &err);
  if (st != SL_OK) fail_msg("get ledger: %s", sl_err_msg(&err, st));
  const Sluice__V1__EnsembleSegment *seg = r->info->ensembles[r->info->n_ensembles - 1];
  assert_true(slot < seg->n_bookie_ids);
  int i = sl_lt_bookie_index(t, seg->bookie_ids[slot]);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  if (i < 0) fail_msg("bookie of slot %u not in the cluster", slot);
  return i;
}

/* The pid of the process whose command line holds "--data_dir <dir>". */
static pid_t pid_by_dir(const char *dir) {
  DIR *d = opendir("/proc");
  if (!d) return -1;
  pid_t found = -1;
  struct dirent *de;
  while (found < 0 && (de = readdir(d)) != NULL) {
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    char path[300], buf[8192];
    snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) continue;
    buf[n] = '\0';
    for (ssize_t i = 0; i < n;) {
      const char *arg = buf + i;
      size_t len = strlen(arg);
      if (strcmp(arg, "--data_dir") == 0 && i + (ssize_t)len + 1 < n &&
          strcmp(arg + len + 1, dir) == 0)
        found = (pid_t)atoi(de->d_name);
      i += (ssize_t)len + 1;
    }
  }
  closedir(d);
  return found;
}

static void bookie_dir(sl_lt *t, int i, char *out, size_t n) {
  snprintf(out, n, "%s/%s", sl_cluster_dir(t->cluster),
           sl_cluster_id(t->cluster, SL_NODE_BOOKIE, i));
}

void sl_lt_signal_bookie(sl_lt *t, int i, int sig) {
  char dir[4096];
  bookie_dir(t, i, dir, sizeof(dir));
  pid_t pid = pid_by_dir(dir);
  if (pid <= 0) {
    if (sig == SIGCONT) return; /* not running: nothing to resume */
    fail_msg("bookie %d: no process for %s", i, dir);
  }
  assert_int_equal(kill(pid, sig), 0);
}

static void rm_tree(const char *path) {
  DIR *d = opendir(path);
  if (!d) {
    unlink(path);
    return;
  }
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    char sub[4096];
    snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
    rm_tree(sub);
  }
  closedir(d);
  rmdir(path);
}

/* The instance id bookie i registered with ("" if not registered). */
static void registered_instance(sl_lt *t, int i, char *out, size_t n) {
  const char *id = sl_cluster_id(t->cluster, SL_NODE_BOOKIE, i);
  Sluice__V1__ListBookiesRequest req = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
  Sluice__V1__ListBookiesResponse *r = NULL;
  out[0] = '\0';
  if (sl_metadata_service_list_bookies(t->meta, &req, &r, NULL, NULL) != SL_OK) return;
  for (size_t k = 0; k < r->n_bookies; k++)
    if (strcmp(r->bookies[k]->id, id) == 0)
      snprintf(out, n, "%s", r->bookies[k]->instance_id);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

void sl_lt_wipe_bookie(sl_lt *t, int i) {
  sl_err err = SL_ERR_INIT;
  char before[128], now[128];
  registered_instance(t, i, before, sizeof(before));
  char dir[4096];
  bookie_dir(t, i, dir, sizeof(dir));
  if (sl_cluster_running(t->cluster, SL_NODE_BOOKIE, i))
    assert_int_equal(sl_cluster_kill9(t->cluster, SL_NODE_BOOKIE, i, &err), SL_OK);
  rm_tree(dir);
  assert_int_equal(mkdir(dir, 0755), 0);
  sl_status st = sl_cluster_restart(t->cluster, SL_NODE_BOOKIE, i, &err);
  if (st != SL_OK) fail_msg("restart bookie %d: %s", i, sl_err_msg(&err, st));
  /* The old registration lingers until its session lapses. */
  int64_t deadline = sl_clock_mono_ms() + 30000;
  do {
    usleep(50 * 1000);
    registered_instance(t, i, now, sizeof(now));
  } while ((now[0] == '\0' || strcmp(now, before) == 0) && sl_clock_mono_ms() < deadline);
  if (now[0] == '\0' || strcmp(now, before) == 0)
    fail_msg("bookie %d: no new instance registered (was %s)", i, before);
}

/* Waits until ListBookies shows bookie i (by id) or, with !want, does not. */
static void wait_listed(sl_lt *t, int i, bool want, int timeout_ms) {
  const char *id = sl_cluster_id(t->cluster, SL_NODE_BOOKIE, i);
  int64_t deadline = sl_clock_mono_ms() + timeout_ms;
  while (sl_clock_mono_ms() < deadline) {
    Sluice__V1__ListBookiesRequest req = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
    Sluice__V1__ListBookiesResponse *r = NULL;
    bool seen = false;
    if (sl_metadata_service_list_bookies(t->meta, &req, &r, NULL, NULL) != SL_OK) {
      usleep(50 * 1000);
      continue;
    }
    for (size_t k = 0; k < r->n_bookies; k++) seen |= strcmp(r->bookies[k]->id, id) == 0;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (seen == want) return;
    usleep(50 * 1000);
  }
  fail_msg("bookie %s still %s after %d ms", id, want ? "not registered" : "registered",
           timeout_ms);
}

void sl_lt_wait_registered(sl_lt *t, int i, int timeout_ms) {
  wait_listed(t, i, true, timeout_ms);
}

void sl_lt_wait_gone(sl_lt *t, int i, int timeout_ms) { wait_listed(t, i, false, timeout_ms); }

void sl_lt_stop_bookie(sl_lt *t, int i) {
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_stop_node(t->cluster, SL_NODE_BOOKIE, i, &err);
  if (st != SL_OK) fail_msg("stop bookie %d: %s", i, sl_err_msg(&err, st));
  sl_lt_wait_gone(t, i, 20000);
}

void sl_lt_restart_bookie(sl_lt *t, int i) {
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_restart(t->cluster, SL_NODE_BOOKIE, i, &err);
  if (st != SL_OK) fail_msg("restart bookie %d: %s", i, sl_err_msg(&err, st));
  sl_lt_wait_registered(t, i, 20000);
}

void sl_lt_await_dropped(sl_lt *t, int i, uint64_t ledger, int timeout_ms) {
  int64_t deadline = sl_clock_mono_ms() + timeout_ms;
  sl_rpc_channel *ch = sl_bktest_bookie_channel(t->cluster, i);
  for (;;) {
    Sluice__V1__ReadEntryRequest req = SLUICE__V1__READ_ENTRY_REQUEST__INIT;
    req.ledger_id = ledger;
    Sluice__V1__ReadEntryResponse *r = NULL;
    sl_rpc_call_opts o = {.timeout_ms = 10000};
    sl_status st = sl_bookie_service_read_entry(ch, &req, &r, &o, NULL);
    bool found = st == SL_OK && r->found;
    if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
    if (st == SL_EDELETED) break;
    if (sl_clock_mono_ms() > deadline)
      fail_msg("bookie %d still answers %s (found %d) for ledger %llu", i, sl_status_str(st),
               (int)found, (unsigned long long)ledger);
    usleep(50 * 1000);
  }
  sl_rpc_channel_destroy(ch);
}
