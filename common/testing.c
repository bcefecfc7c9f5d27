#include "common/testing.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

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
