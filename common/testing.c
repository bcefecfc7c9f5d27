#include "common/testing.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double scale = 1.0;
static pthread_once_t scale_once = PTHREAD_ONCE_INIT;

static void read_scale(void) {
  const char *v = getenv("SLUICE_TIME_SCALE");
  if (v == NULL || *v == '\0') return;
  char *end;
  double x = strtod(v, &end);
  if (*end != '\0' || !(x >= 1.0 && x <= 100.0)) {
    fprintf(stderr, "SLUICE_TIME_SCALE=%s: want a number from 1 to 100\n", v);
    exit(2);
  }
  scale = x;
}

double sl_test_time_scale(void) {
  pthread_once(&scale_once, read_scale);
  return scale;
}

int64_t sl_test_scaled_ms(int64_t ms) {
  return (int64_t)ceil((double)ms * sl_test_time_scale());
}

int sl_test_threads_named(const char *prefix) {
  DIR *d = opendir("/proc/self/task");
  if (d == NULL) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[300], name[32] = "";
    snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL) continue; /* the thread just exited */
    if (fgets(name, sizeof(name), f) != NULL && strncmp(name, prefix, strlen(prefix)) == 0) n++;
    fclose(f);
  }
  closedir(d);
  return n;
}
