#include "client/host_cpu.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Takes one line of /proc/stat into *c. False on a short "cpu" line. */
static bool take_line(const char *line, sl_host_cpu *c, bool *found) {
  if (strncmp(line, "cpu ", 4) == 0) {
    /* guest and guest_nice are already inside user and nice */
    uint64_t v[8];
    if (sscanf(line + 4, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                         " %" SCNu64 " %" SCNu64 " %" SCNu64,
               &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
      return false;
    c->busy = v[0] + v[1] + v[2] + v[5] + v[6];
    c->idle = v[3] + v[4];
    c->steal = v[7];
    *found = true;
  } else if (strncmp(line, "cpu", 3) == 0 && line[3] >= '0' && line[3] <= '9') {
    c->cpus++;
  }
  return true;
}

bool sl_host_cpu_parse(const char *text, sl_host_cpu *out) {
  memset(out, 0, sizeof(*out));
  bool found = false;
  for (const char *line = text; line != NULL && *line != '\0';) {
    if (!take_line(line, out, &found)) return false;
    line = strchr(line, '\n');
    if (line != NULL) line++;
  }
  return found;
}

bool sl_host_cpu_read(sl_host_cpu *out) {
  memset(out, 0, sizeof(*out));
  FILE *f = fopen("/proc/stat", "r");
  if (f == NULL) return false;
  bool found = false, ok = true;
  char line[512];
  /* Only the leading "cpu" lines: the "intr" line after them can be long. */
  while (ok && fgets(line, sizeof(line), f) != NULL && strncmp(line, "cpu", 3) == 0)
    ok = take_line(line, out, &found);
  fclose(f);
  return ok && found;
}

bool sl_host_cpu_split_of(const sl_host_cpu *a, const sl_host_cpu *b, sl_host_cpu_split *out) {
  if (b->busy < a->busy || b->idle < a->idle || b->steal < a->steal) return false;
  double busy = (double)(b->busy - a->busy), idle = (double)(b->idle - a->idle),
         steal = (double)(b->steal - a->steal), total = busy + idle + steal;
  if (total <= 0) return false;
  out->busy_pct = 100 * busy / total;
  out->idle_pct = 100 * idle / total;
  out->steal_pct = 100 * steal / total;
  return true;
}
