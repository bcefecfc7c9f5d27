#include "bookie/disk_watcher.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define MAX_DEPTH 8

struct sl_disk_watcher {
  sl_disk_watcher_opts opts; /* opts.dir points at `dir` */
  char *dir;
  atomic_bool readonly;
  pthread_t thread;
  pthread_mutex_t mu;   /* guards the fields below */
  pthread_cond_t cv;    /* check-now, stop, or a sample taken */
  sl_disk_usage usage;
  uint64_t limit_bytes;
  uint64_t want_gen;    /* sample requests */
  uint64_t done_gen;    /* samples taken */
  bool stopping;
};

/* Bytes allocated by regular files under dirfd (recursively). */
static uint64_t dir_bytes(int dirfd, int depth) {
  uint64_t total = 0;
  DIR *d = fdopendir(dirfd);
  if (d == NULL) {
    close(dirfd);
    return 0;
  }
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    struct stat sb;
    /* Files vanish while we walk (journal segments, leveldb compactions). */
    if (fstatat(dirfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISREG(sb.st_mode)) {
      total += (uint64_t)sb.st_blocks * 512u;
    } else if (S_ISDIR(sb.st_mode) && depth < MAX_DEPTH) {
      int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (sub >= 0) total += dir_bytes(sub, depth + 1);
    }
  }
  closedir(d); /* closes dirfd */
  return total;
}

static sl_status sample(const char *dir, uint64_t limit, sl_disk_usage *u,
                        sl_err *err) {
  if (limit != 0) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      return sl_err_set(err, SL_EIO, "disk %s: open: %s", dir, strerror(errno));
    }
    uint64_t used = dir_bytes(fd, 0);
    u->total_bytes = limit;
    u->free_bytes = used >= limit ? 0 : limit - used;
  } else {
    struct statvfs sv;
    if (statvfs(dir, &sv) != 0) {
      return sl_err_set(err, SL_EIO, "disk %s: statvfs: %s", dir, strerror(errno));
    }
    u->total_bytes = (uint64_t)sv.f_blocks * sv.f_frsize;
    u->free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
  }
  u->used_pct = u->total_bytes == 0
                    ? 100.0
                    : 100.0 * (double)(u->total_bytes - u->free_bytes) /
                          (double)u->total_bytes;
  return SL_OK;
}

/* Applies hysteresis to a new sample; returns true if the state changed. */
static bool next_state(const sl_disk_watcher *w, bool ro, double used_pct) {
  if (!ro && used_pct >= w->opts.high_pct) return true;
  if (ro && used_pct < w->opts.low_pct) return true;
  return false;
}

static void take_sample(sl_disk_watcher *w) {
  pthread_mutex_lock(&w->mu);
  uint64_t limit = w->limit_bytes;
  pthread_mutex_unlock(&w->mu);
  sl_disk_usage u;
  sl_err err = SL_ERR_INIT;
  if (sample(w->dir, limit, &u, &err) != SL_OK) {
    sl_log(SL_LOG_WARN, "event=disk_sample_failed err=\"%s\"", err.msg);
    return;
  }
  bool ro = atomic_load(&w->readonly);
  bool changed = next_state(w, ro, u.used_pct);
  if (changed) ro = !ro;
  u.readonly = ro;
  pthread_mutex_lock(&w->mu);
  w->usage = u;
  pthread_mutex_unlock(&w->mu);
  if (!changed) return;
  atomic_store(&w->readonly, ro);
  sl_log(SL_LOG_WARN, "event=disk_%s dir=%s used_pct=%.1f free_bytes=%" PRIu64,
         ro ? "readonly" : "writable", w->dir, u.used_pct, u.free_bytes);
  if (w->opts.on_change != NULL) w->opts.on_change(ro, w->opts.arg);
}

static void *watcher_main(void *arg) {
  sl_disk_watcher *w = arg;
  (void)pthread_setname_np(pthread_self(), "disk-watch");
  pthread_mutex_lock(&w->mu);
  while (!w->stopping) {
    if (w->want_gen == w->done_gen) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      ts.tv_sec += w->opts.interval_ms / 1000;
      ts.tv_nsec += (long)(w->opts.interval_ms % 1000) * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      /* Timeout and wakeups look alike here: either way we sample. */
      (void)pthread_cond_timedwait(&w->cv, &w->mu, &ts);
      if (w->stopping) break;
    }
    uint64_t gen = w->want_gen;
    pthread_mutex_unlock(&w->mu);
    take_sample(w);
    pthread_mutex_lock(&w->mu);
    w->done_gen = gen;
    pthread_cond_broadcast(&w->cv);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

sl_status sl_disk_watcher_start(const sl_disk_watcher_opts *opts,
                                sl_disk_watcher **out, sl_err *err) {
  if (opts == NULL || opts->dir == NULL || out == NULL) {
    return sl_err_set(err, SL_EINVAL, "disk watcher: dir is required");
  }
  if (!(opts->low_pct > 0 && opts->low_pct < opts->high_pct &&
        opts->high_pct <= 100.0) || opts->interval_ms <= 0) {
    return sl_err_set(err, SL_EINVAL, "disk watcher %s: need 0 < low_pct < "
                      "high_pct <= 100 and interval_ms > 0", opts->dir);
  }
  sl_disk_usage u;
  sl_status st = sample(opts->dir, opts->limit_bytes, &u, err);
  if (st != SL_OK) return st;
  sl_disk_watcher *w = sl_xcalloc(1, sizeof(*w));
  w->opts = *opts;
  w->dir = sl_xstrdup(opts->dir);
  w->opts.dir = w->dir;
  w->limit_bytes = opts->limit_bytes;
  u.readonly = u.used_pct >= opts->high_pct;
  w->usage = u;
  atomic_init(&w->readonly, u.readonly);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&w->mu, NULL);
  if (u.readonly) {
    sl_log(SL_LOG_WARN, "event=disk_readonly dir=%s used_pct=%.1f", w->dir, u.used_pct);
  }
  int rc = pthread_create(&w->thread, NULL, watcher_main, w);
  SL_ASSERT(rc == 0);
  *out = w;
  return SL_OK;
}

bool sl_disk_watcher_readonly(sl_disk_watcher *w) { return atomic_load(&w->readonly); }

void sl_disk_watcher_usage(sl_disk_watcher *w, sl_disk_usage *out) {
  pthread_mutex_lock(&w->mu);
  *out = w->usage;
  pthread_mutex_unlock(&w->mu);
}

void sl_disk_watcher_check_now(sl_disk_watcher *w) {
  pthread_mutex_lock(&w->mu);
  uint64_t gen = ++w->want_gen;
  pthread_cond_broadcast(&w->cv);
  while (w->done_gen < gen && !w->stopping) pthread_cond_wait(&w->cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
}

void sl_disk_watcher_set_limit(sl_disk_watcher *w, uint64_t limit_bytes) {
  pthread_mutex_lock(&w->mu);
  w->limit_bytes = limit_bytes;
  pthread_mutex_unlock(&w->mu);
}

void sl_disk_watcher_stop(sl_disk_watcher *w) {
  if (w == NULL) return;
  pthread_mutex_lock(&w->mu);
  w->stopping = true;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w->dir);
  free(w);
}
