#include "tools/bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/status.h"
#include "common/clock.h"

int64_t sl_bench_now_ns(void) { return sl_clock_mono_ns(); }

double sl_bench_now_s(void) { return (double)sl_clock_mono_ns() / 1e9; }

sl_bench_usage sl_bench_usage_now(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  sl_bench_usage u = {(double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                          ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6,
                      ru.ru_nvcsw + ru.ru_nivcsw};
  return u;
}

void sl_bench_usage_print(sl_bench_usage since, double ops) {
  sl_bench_usage u = sl_bench_usage_now();
  if (ops < 1) ops = 1;
  printf(" cpu_us=%.0f switches=%.1f\n", (u.cpu_s - since.cpu_s) * 1e6 / ops,
         (double)(u.switches - since.switches) / ops);
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

void sl_bench_sort(int64_t *v, size_t n) {
  if (n > 1) qsort(v, n, sizeof(*v), cmp_i64);
}

double sl_bench_pct_ms(const int64_t *v, size_t n, double p) {
  if (n == 0) return 0;
  return (double)v[(size_t)(p * (double)(n - 1))] / 1e6;
}

int sl_bench_raw_fsync(const char *dir, int seconds, sl_bench_raw *out) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/raw-fsync.bench", dir);
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    fprintf(stderr, "raw fsync: %s: %s\n", path, strerror(errno));
    return -1;
  }
  char buf[4096];
  memset(buf, 'x', sizeof(buf));
  size_t cap = 1 << 16, n = 0;
  int64_t *lat = sl_xmalloc(cap * sizeof(*lat));
  int64_t t0 = sl_bench_now_ns(), end = t0 + (int64_t)seconds * 1000000000;
  int64_t t = t0;
  int rc = 0;
  while (t < end) {
    if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf) || fdatasync(fd) != 0) {
      fprintf(stderr, "raw fsync: %s: %s\n", path, strerror(errno));
      rc = -1;
      break;
    }
    int64_t t2 = sl_bench_now_ns();
    if (n == cap) lat = sl_xrealloc(lat, (cap *= 2) * sizeof(*lat));
    lat[n++] = t2 - t;
    t = t2;
  }
  close(fd);
  unlink(path);
  sl_bench_sort(lat, n);
  out->per_sec = t > t0 ? (double)n / ((double)(t - t0) / 1e9) : 0;
  out->p50_ms = sl_bench_pct_ms(lat, n, 0.50);
  out->p99_ms = sl_bench_pct_ms(lat, n, 0.99);
  free(lat);
  return rc;
}
