/*
 * Structured logging: one line per event on stderr, key=value fields.
 *
 *   sl_log(SL_LOG_INFO, "event=ready addr=%s", addr);
 *   -> ts=2026-11-21T22:10:01.123Z level=info svc=bookie event=ready addr=...
 *
 * sl_log() does no work (not even argument evaluation) below the active
 * level. Each line is written with one write(2), so lines from several
 * threads never interleave.
 */
#ifndef SL_COMMON_LOG_H
#define SL_COMMON_LOG_H

#include "common/status.h"

typedef enum sl_log_level {
  SL_LOG_DEBUG = 0,
  SL_LOG_INFO = 1,
  SL_LOG_WARN = 2,
  SL_LOG_ERROR = 3,
  SL_LOG_OFF = 4,
} sl_log_level;

extern volatile int sl_log_active_level_;

#define sl_log(level, ...)                                         \
  do {                                                             \
    if ((int)(level) >= sl_log_active_level_) sl_log_emit_((level), __VA_ARGS__); \
  } while (0)

/* Logs whatever the active level: for the few lines scripts and tests wait
 * for (event=ready, event=metrics_ready). */
#define sl_log_always(level, ...) sl_log_emit_((level), __VA_ARGS__)

void sl_log_emit_(sl_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Sets the service name printed as svc=. `svc` is retained (a literal). */
void sl_log_set_service(const char *svc);
void sl_log_set_level(sl_log_level level);

/* Parses "debug", "info", "warn", "error" or "off". */
sl_status sl_log_parse_level(const char *text, sl_log_level *out);

#endif
