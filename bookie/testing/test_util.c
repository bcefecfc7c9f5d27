#include "bookie/testing/test_util.h"
#include "common/clock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

char *sl_test_mkdtemp(const char *tag) {
  const char *base = getenv("TEST_TMPDIR");
  if (base == NULL || base[0] == '\0') base = "/tmp";
  size_t n = strlen(base) + strlen(tag) + 16;
  char *path = sl_xmalloc(n);
  snprintf(path, n, "%s/%s.XXXXXX", base, tag);
  if (mkdtemp(path) == NULL) {
    fprintf(stderr, "mkdtemp %s: %s\n", path, strerror(errno));
    abort();
  }
  return path;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

void sl_test_rm_rf(const char *path) {
  nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void sl_test_rmdtemp(char *path) {
  if (path == NULL) return;
  sl_test_rm_rf(path);
  free(path);
}

static void copy_file(const char *src, const char *dst) {
  int in = open(src, O_RDONLY);
  int out = open(dst, O_CREAT | O_EXCL | O_WRONLY, 0644);
  if (in < 0 || out < 0) {
    fprintf(stderr, "copy %s -> %s: %s\n", src, dst, strerror(errno));
    abort();
  }
  char buf[65536];
  ssize_t n;
  while ((n = read(in, buf, sizeof(buf))) > 0) {
    if (write(out, buf, (size_t)n) != n) abort();
  }
  if (n < 0) abort();
  close(in);
  close(out);
}

void sl_test_copy_tree(const char *src, const char *dst) {
  if (mkdir(dst, 0755) != 0) {
    fprintf(stderr, "mkdir %s: %s\n", dst, strerror(errno));
    abort();
  }
  DIR *d = opendir(src);
  if (d == NULL) abort();
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    char s[4096], t[4096];
    snprintf(s, sizeof(s), "%s/%s", src, de->d_name);
    snprintf(t, sizeof(t), "%s/%s", dst, de->d_name);
    struct stat sb;
    if (lstat(s, &sb) != 0) continue; /* vanished meanwhile */
    if (S_ISDIR(sb.st_mode)) sl_test_copy_tree(s, t);
    else if (S_ISREG(sb.st_mode)) copy_file(s, t);
  }
  closedir(d);
}

void sl_test_waiter_init(sl_test_waiter *w) {
  memset(w, 0, sizeof(*w));
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
}

void sl_test_waiter_release(sl_test_waiter *w) {
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
}

void sl_test_waiter_cb(sl_status st, const char *msg, void *arg) {
  sl_test_waiter *w = arg;
  pthread_mutex_lock(&w->mu);
  w->done++;
  if (st == SL_OK) {
    w->ok++;
  } else {
    w->last_st = st;
    snprintf(w->last_msg, sizeof(w->last_msg), "%s", msg ? msg : "");
  }
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

struct timespec sl_test_deadline_ms(int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

bool sl_test_waiter_wait(sl_test_waiter *w, uint64_t n, int timeout_ms) {
  struct timespec ts = sl_test_deadline_ms(timeout_ms);
  pthread_mutex_lock(&w->mu);
  int rc = 0;
  while (w->done < n && rc == 0) rc = pthread_cond_timedwait(&w->cv, &w->mu, &ts);
  bool ok = w->done >= n;
  pthread_mutex_unlock(&w->mu);
  return ok;
}

bool sl_test_poll(bool (*pred)(void *arg), void *arg, int timeout_ms) {
  int64_t deadline = sl_clock_mono_ms() + timeout_ms;
  for (;;) {
    if (pred(arg)) return true;
    if (sl_clock_mono_ms() > deadline) return false;
    usleep(1000);
  }
}

int sl_test_gate_hook(int fd, void *gate) {
  sl_test_gate *g = gate;
  pthread_mutex_lock(&g->mu);
  g->waiting++;
  pthread_cond_broadcast(&g->cv);
  while (g->closed) pthread_cond_wait(&g->cv, &g->mu);
  g->waiting--;
  bool fail = g->fail;
  pthread_mutex_unlock(&g->mu);
  if (fail) {
    errno = EIO;
    return -1;
  }
  return fdatasync(fd);
}

void sl_test_gate_set(sl_test_gate *g, bool closed, bool fail) {
  pthread_mutex_lock(&g->mu);
  g->closed = closed;
  g->fail = fail;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

void sl_test_gate_wait_blocked(sl_test_gate *g) {
  pthread_mutex_lock(&g->mu);
  while (g->waiting == 0) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}
