/*
 * The standard process_* metrics (sl_metrics_register_process), read from
 * /proc/self at scrape time with the names Prometheus client libraries use,
 * so stock dashboards work.
 */
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/metrics.h"

/* Fields of /proc/self/stat, numbered as in proc(5). */
enum { STAT_UTIME = 14, STAT_STIME = 15, STAT_STARTTIME = 22, STAT_VSIZE = 23, STAT_RSS = 24 };

/* Reads numeric field `field` (proc(5) numbering, >= 3) of /proc/self/stat.
 * The command name (field 2) may hold spaces and parentheses, so fields are
 * counted from its last ')'. */
static bool stat_field(int field, double *out) {
  char buf[1024];
  FILE *f = fopen("/proc/self/stat", "r");
  if (f == NULL) return false;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  if (p == NULL) return false;
  p++;
  for (int i = 3; i <= field; i++) {
    while (*p == ' ') p++;
    if (*p == '\0') return false;
    if (i == field) {
      char *end;
      unsigned long long v = strtoull(p, &end, 10);
      if (end == p) return false;
      *out = (double)v;
      return true;
    }
    while (*p != ' ' && *p != '\0') p++;
  }
  return false;
}

static double stat_or_nan(int field, double scale) {
  double v;
  return stat_field(field, &v) ? v * scale : NAN;
}

static double cpu_seconds(void *arg) {
  (void)arg;
  double tick = (double)sysconf(_SC_CLK_TCK);
  double u = stat_or_nan(STAT_UTIME, 1), s = stat_or_nan(STAT_STIME, 1);
  return (u + s) / tick;
}

static double resident_bytes(void *arg) {
  (void)arg;
  return stat_or_nan(STAT_RSS, (double)sysconf(_SC_PAGESIZE));
}

static double virtual_bytes(void *arg) {
  (void)arg;
  return stat_or_nan(STAT_VSIZE, 1);
}

static double open_fds(void *arg) {
  (void)arg;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return NAN;
  double n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory's own descriptor */
}

static double max_fds(void *arg) {
  (void)arg;
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) != 0) return NAN;
  return r.rlim_cur == RLIM_INFINITY ? INFINITY : (double)r.rlim_cur;
}

/* Boot time (btime in /proc/stat) plus the start tick of this process. */
static double start_time(void) {
  char line[256];
  double btime = NAN, start;
  FILE *f = fopen("/proc/stat", "r");
  if (f == NULL) return NAN;
  while (fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, "btime ", 6) == 0) btime = strtod(line + 6, NULL);
  fclose(f);
  if (!stat_field(STAT_STARTTIME, &start)) return NAN;
  return btime + start / (double)sysconf(_SC_CLK_TCK);
}

sl_status sl_metrics_register_process(sl_metrics *reg, sl_err *err) {
  static const struct {
    sl_metrics_type type;
    const char *name, *help;
    double (*fn)(void *);
  } cbs[] = {
      {SL_METRICS_COUNTER, "process_cpu_seconds_total",
       "Total user and system CPU time spent in seconds.", cpu_seconds},
      {SL_METRICS_GAUGE, "process_resident_memory_bytes", "Resident memory size in bytes.",
       resident_bytes},
      {SL_METRICS_GAUGE, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
       virtual_bytes},
      {SL_METRICS_GAUGE, "process_open_fds", "Number of open file descriptors.", open_fds},
      {SL_METRICS_GAUGE, "process_max_fds", "Maximum number of open file descriptors.",
       max_fds},
  };
  sl_metrics_gauge *g;
  sl_status st = sl_metrics_register_gauge(
      reg, "process_start_time_seconds",
      "Start time of the process since unix epoch in seconds.", NULL, &g, err);
  if (st != SL_OK) return st;
  sl_metrics_gauge_set(g, start_time());
  for (size_t i = 0; i < sizeof(cbs) / sizeof(cbs[0]); i++) {
    sl_metrics_callback *cb;
    st = sl_metrics_register_callback(reg, cbs[i].type, cbs[i].name, cbs[i].help, NULL,
                                      cbs[i].fn, NULL, &cb, err);
    if (st == SL_EEXIST) st = SL_OK; /* registered before: idempotent */
    if (st != SL_OK) return st;
  }
  return SL_OK;
}
