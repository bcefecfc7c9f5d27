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

bool sl_test_tree_holds(const char *dir, const char *needle) {
  DIR *d = opendir(dir);
  if (d == NULL) return false;
  bool found = false;
  size_t nl = strlen(needle);
  struct dirent *de;
  while (!found && (de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
    if (de->d_type == DT_DIR) {
      found = sl_test_tree_holds(path, needle);
      continue;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) continue;
    /* Read in windows that overlap by nl - 1 bytes, so no match straddles
     * two reads unseen. */
    char buf[1 << 16];
    size_t keep = 0, n;
    while (!found && (n = fread(buf + keep, 1, sizeof(buf) - keep, f)) > 0) {
      n += keep;
      found = memmem(buf, n, needle, nl) != NULL;
      keep = n >= nl ? nl - 1 : n;
      memmove(buf, buf + n - keep, keep);
    }
    fclose(f);
  }
  closedir(d);
  return found;
}
