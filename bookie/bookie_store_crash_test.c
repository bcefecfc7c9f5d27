/*
 * kill -9 test for the bookie store: a child process (storage_crash_child)
 * adds entries and reports each acknowledgement on stdout; we SIGKILL it at
 * a random moment, reopen the store here and check that every acknowledged
 * entry reads back byte-exact, that acknowledged fences and deletes held,
 * and that every ledger with an acknowledged add or fence kept the key of
 * the password the child sent (and refuses another).
 * 20 cycles on the same directory, so later cycles also replay journals
 * left by earlier crashes. The child's entry log collector runs every
 * 20 ms on small files, so kills also land in compactions and removals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bookie/bookie_store.h"
#include "bookie/ledger_storage.h"
#include "bookie/testing/crash_payload.h"
#include "bookie/testing/test_util.h"
#include "common/testing.h"

#define CYCLES 20

typedef struct ack {
  uint64_t ledger;
  int64_t entry;
} ack;

typedef struct report {
  ack *acks;
  size_t nacks, cap;
  uint64_t fenced[CYCLES];    /* ledgers whose fence was acked */
  size_t nfenced;
  uint64_t deleting[CYCLES];  /* ledgers whose delete was submitted */
  bool deleted[CYCLES];       /* ... and acknowledged */
  size_t ndeleting;
  bool ready, done;
} report;

static const char *child_path(void) {
  static char path[4096];
  const char *env = getenv("SL_CRASH_CHILD");
  if (env != NULL) return env;
  const char *srcdir = getenv("TEST_SRCDIR");
  const char *ws = getenv("TEST_WORKSPACE");
  if (srcdir != NULL) {
    snprintf(path, sizeof(path), "%s/%s/bookie/testing/storage_crash_child", srcdir,
             ws != NULL ? ws : "sluice");
    if (access(path, X_OK) == 0) return path;
  }
  return "bookie/testing/storage_crash_child";
}

static void parse_line(report *r, const char *line) {
  uint64_t l;
  int64_t e;
  if (sscanf(line, "A %" SCNu64 " %" SCNd64, &l, &e) == 2) {
    if (r->nacks == r->cap) {
      r->cap = r->cap ? r->cap * 2 : 4096;
      r->acks = realloc(r->acks, r->cap * sizeof(*r->acks));
      assert_non_null(r->acks);
    }
    r->acks[r->nacks++] = (ack){l, e};
  } else if (sscanf(line, "F %" SCNu64, &l) == 1) {
    r->fenced[r->nfenced++] = l;
  } else if (sscanf(line, "d %" SCNu64, &l) == 1) {
    r->deleting[r->ndeleting++] = l;
  } else if (sscanf(line, "D %" SCNu64, &l) == 1) {
    assert_true(r->ndeleting > 0 && r->deleting[r->ndeleting - 1] == l);
    r->deleted[r->ndeleting - 1] = true;
  } else if (strcmp(line, "R") == 0) {
    r->ready = true;
  } else if (strcmp(line, "DONE") == 0) {
    r->done = true;
  } else {
    fail_msg("unexpected line from child: '%s'", line);
  }
}

/* Reads what is available (or waits up to timeout_ms); false at EOF. */
static bool pump(int fd, char *buf, size_t *len, size_t cap, report *r, int timeout_ms) {
  struct pollfd p = {fd, POLLIN, 0};
  int rc = poll(&p, 1, timeout_ms);
  if (rc <= 0) return true;
  ssize_t n = read(fd, buf + *len, cap - *len);
  if (n < 0 && errno == EINTR) return true;
  assert_true(n >= 0);
  if (n == 0) return false;
  *len += (size_t)n;
  char *start = buf, *nl;
  while ((nl = memchr(start, '\n', (size_t)(buf + *len - start))) != NULL) {
    *nl = '\0';
    parse_line(r, start);
    start = nl + 1;
  }
  *len = (size_t)(buf + *len - start);
  memmove(buf, start, *len);
  return true;
}

/* One child run, killed after a random delay. */
static void run_child(const char *dir, int cycle, unsigned *seed, report *r) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    char c[16];
    snprintf(c, sizeof(c), "%d", cycle);
    execl(child_path(), "storage_crash_child", dir, c, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  /* A third of the kills land anywhere, opening and replay included; the
   * rest after the store is up, while adds stream. */
  bool any_time = rand_r(seed) % 3 == 0;
  int delay_ms = any_time ? rand_r(seed) % 150 : 20 + rand_r(seed) % 400;
  static char buf[1 << 16];
  size_t len = 0;
  bool open = true;
  int64_t start = sl_clock_mono_ms();
  while (open && !any_time && !r->ready && sl_clock_mono_ms() - start < 60000) {
    open = pump(fds[0], buf, &len, sizeof(buf), r, 50);
  }
  int64_t kill_at = sl_clock_mono_ms() + delay_ms;
  while (open && sl_clock_mono_ms() < kill_at && !r->done) {
    open = pump(fds[0], buf, &len, sizeof(buf), r, (int)(kill_at - sl_clock_mono_ms()));
  }
  kill(pid, SIGKILL);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  /* The child's last reports are still in the pipe. */
  while (open) open = pump(fds[0], buf, &len, sizeof(buf), r, 5000);
  close(fds[0]);
  if (WIFEXITED(status)) {
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(r->done);
  } else {
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  }
  print_message("cycle %d: killed after %d ms (%s), %zu acks so far\n", cycle, delay_ms,
                any_time ? "any time" : "after open", r->nacks);
}

static bool is_in(const uint64_t *ids, size_t n, uint64_t id, size_t *at) {
  for (size_t i = 0; i < n; i++) {
    if (ids[i] == id) {
      if (at) *at = i;
      return true;
    }
  }
  return false;
}

/* Stored key of a ledger with an acked add or fence: the digest of the
 * child's password; a wrong password is refused. */
static void verify_key(sl_bookie_store *s, uint64_t ledger) {
  sl_ledger_meta m;
  if (sl_bookie_store_ledger_meta(s, ledger, &m, NULL) != SL_OK) return; /* deleted */
  char pw[32];
  sl_crash_password(ledger, pw, sizeof(pw));
  uint8_t want[32];
  unsigned int n = 0;
  assert_int_equal(EVP_Digest(pw, strlen(pw), want, &n, EVP_sha256(), NULL), 1);
  if (!m.has_key) fail_msg("ledger %" PRIu64 ": key lost", ledger);
  assert_memory_equal(m.key, want, sizeof(want));
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_bookie_store_fence(s, ledger, 9, "wrong", 5, sl_test_waiter_cb, NULL,
                                         &err), SL_EPERM);
}

static void verify(sl_bookie_store *s, const report *r) {
  static uint8_t want[SL_CRASH_PAYLOAD_MAX];
  for (size_t i = 0; i < r->nacks; i++) {
    const ack *a = &r->acks[i];
    size_t at;
    sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_bookie_store_read(s, a->ledger, a->entry, &e, &err);
    if (is_in(r->deleting, r->ndeleting, a->ledger, &at)) {
      sl_ledger_meta m;
      bool gone = sl_bookie_store_ledger_meta(s, a->ledger, &m, NULL) == SL_EDELETED;
      /* An acked delete held; an unacked one took effect wholly or not. */
      if (r->deleted[at]) assert_true(gone);
      if (gone) {
        assert_int_equal(st, SL_EDELETED);
        continue;
      }
    }
    if (st != SL_OK) {
      fail_msg("acked ledger %" PRIu64 " entry %" PRId64 " lost: %s", a->ledger, a->entry,
               sl_err_msg(&err, st));
    }
    uint32_t len = sl_crash_payload_len(a->ledger, a->entry);
    sl_crash_payload_fill(a->ledger, a->entry, want);
    assert_int_equal(e.len, len);
    assert_memory_equal(e.payload, want, len);
    sl_ledger_entry_release(&e);
  }
  for (size_t i = 0; i < r->nfenced; i++) {
    sl_ledger_meta m;
    assert_int_equal(sl_bookie_store_ledger_meta(s, r->fenced[i], &m, NULL), SL_OK);
    assert_true(m.fenced);
    assert_int_equal(m.max_epoch, 2);
  }
  /* Ledger ids are (cycle + 1) * 100 + 0..3 (storage_crash_child). */
  static bool seen[(CYCLES + 1) * 100 + 4];
  memset(seen, 0, sizeof(seen));
  for (size_t i = 0; i < r->nacks; i++) {
    uint64_t l = r->acks[i].ledger;
    assert_true(l < sizeof(seen));
    if (!seen[l]) verify_key(s, l);
    seen[l] = true;
  }
  for (size_t i = 0; i < r->nfenced; i++) verify_key(s, r->fenced[i]);
}

/* Entry log files under the store, and the highest file id. */
static void count_entry_logs(const char *store, uint64_t *files, uint64_t *max_id) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/ledgers/entrylogs", store);
  DIR *d = opendir(path);
  assert_non_null(d);
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strstr(de->d_name, ".log") == NULL) continue;
    uint64_t id = strtoull(de->d_name, NULL, 16);
    (*files)++;
    if (id > *max_id) *max_id = id;
  }
  closedir(d);
}

/* The collector on what the kills left (files whose usage was never
 * stored, copies that replay superseded, deleted ledgers): it frees files,
 * and every acked entry still reads after. */
static void collect_what_kills_left(const char *store, report *r,
                                    const sl_bookie_store_opts *o) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/ledgers", store);
  sl_ledger_storage_leveldb_opts lo = SL_LEDGER_STORAGE_LEVELDB_OPTS_INIT;
  lo.gc_interval_ms = 0;
  lo.gc_compact_ratio = 0.9;
  lo.gc_rate_bytes = 1u << 30;
  sl_ledger_storage *ls = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ledger_storage_leveldb_open(path, &lo, &ls, &err), SL_OK);
  sl_ledger_storage_stats st = {0};
  for (int round = 0; round < 1000; round++) {
    uint64_t before = st.gc_removed_files;
    sl_status gs = sl_ledger_storage_gc(ls, &err);
    if (gs != SL_OK) fail_msg("gc: %s", sl_err_msg(&err, gs));
    sl_ledger_storage_stats_get(ls, &st);
    if (st.gc_removed_files == before) break;
  }
  sl_ledger_storage_close(ls);
  print_message("collector after the kills: %" PRIu64 " files removed, %" PRIu64
                " bytes compacted, %" PRIu64 " bytes scanned\n", st.gc_removed_files,
                st.gc_compacted_bytes, st.gc_scanned_bytes);
  assert_true(st.gc_removed_files > 0);
  sl_bookie_store *s = NULL;
  sl_status os = sl_bookie_store_open(store, o, &s, &err);
  if (os != SL_OK) fail_msg("reopen after gc: %s", sl_err_msg(&err, os));
  verify(s, r);
  sl_bookie_store_close(s);
}

static void test_bookie_store_crash__kill9_loses_no_ack(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("crash");
  char *store = malloc(strlen(dir) + 8);
  sprintf(store, "%s/store", dir);
  unsigned seed = (unsigned)time(NULL);
  const char *env_seed = getenv("SL_CRASH_SEED");
  if (env_seed != NULL) seed = (unsigned)strtoul(env_seed, NULL, 10);
  print_message("seed %u (set SL_CRASH_SEED to repeat)\n", seed);
  report *r = calloc(1, sizeof(*r));
  assert_non_null(r);
  sl_bookie_store_opts o = SL_BOOKIE_STORE_OPTS_INIT;
  o.journal_segment_bytes = 256u << 10;
  o.max_entry_bytes = SL_CRASH_PAYLOAD_MAX;
  for (int cycle = 0; cycle < CYCLES; cycle++) {
    r->ready = r->done = false;
    run_child(store, cycle, &seed, r);
    sl_bookie_store *s = NULL;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_bookie_store_open(store, &o, &s, &err);
    if (st != SL_OK) fail_msg("reopen after cycle %d: %s", cycle, sl_err_msg(&err, st));
    verify(s, r);
    sl_bookie_store_close(s);
  }
  print_message("%zu acked entries checked over %d kills\n", r->nacks, CYCLES);
  uint64_t files = 0, max_id = 0;
  count_entry_logs(store, &files, &max_id);
  print_message("entry log: %" PRIu64 " files left, highest id %" PRIu64 " (the children's "
                "collector removed the rest)\n", files, max_id);
  collect_what_kills_left(store, r, &o);
  assert_true((double)r->nacks > 1000 / sl_test_time_scale()); /* slower under sanitizers */
  free(r->acks);
  free(r);
  sl_test_rm_rf(dir);
  free(store);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bookie_store_crash__kill9_loses_no_ack),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
