#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile int sl_log_active_level_ = SL_LOG_INFO;
static const char *service = "sluice";
static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void sl_log_set_service(const char *svc) { service = svc; }
void sl_log_set_level(sl_log_level level) { sl_log_active_level_ = (int)level; }

sl_status sl_log_parse_level(const char *text, sl_log_level *out) {
  for (int i = 0; i <= SL_LOG_OFF; i++) {
    if (strcmp(text, level_names[i]) == 0) {
      *out = (sl_log_level)i;
      return SL_OK;
    }
  }
  return SL_EINVAL;
}

void sl_log_emit_(sl_log_level level, const char *fmt, ...) {
  char line[2048];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof(line),
                   "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s svc=%s ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                   tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                   level_names[level < SL_LOG_OFF ? level : SL_LOG_ERROR], service);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof(line) - 2) len = sizeof(line) - 2;
  line[len++] = '\n';
  /* A failed log write has nowhere to be reported; ignore it on purpose. */
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}
