#include "common/status.h"

#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sl_status_str(sl_status st) {
  switch (st) {
#define SL_STATUS_STR_(name, value, grpc, proto, text) \
  case name:                                    \
    return text;
    SL_STATUS_MAP(SL_STATUS_STR_)
#undef SL_STATUS_STR_
  }
  return "unknown status";
}

int sl_status_to_grpc(sl_status st) {
  switch (st) {
#define SL_STATUS_GRPC_(name, value, grpc, proto, text) \
  case name:                                     \
    return grpc;
    SL_STATUS_MAP(SL_STATUS_GRPC_)
#undef SL_STATUS_GRPC_
  }
  return GRPC_STATUS_UNKNOWN;
}

sl_status sl_status_from_grpc(int code) {
  switch (code) {
    case GRPC_STATUS_OK: return SL_OK;
    case GRPC_STATUS_INVALID_ARGUMENT: return SL_EINVAL;
    case GRPC_STATUS_NOT_FOUND: return SL_ENOTFOUND;
    case GRPC_STATUS_ALREADY_EXISTS: return SL_EEXIST;
    case GRPC_STATUS_FAILED_PRECONDITION: return SL_EPRECOND;
    case GRPC_STATUS_ABORTED: return SL_EVERSION;
    case GRPC_STATUS_UNAVAILABLE: return SL_EUNAVAIL;
    case GRPC_STATUS_DEADLINE_EXCEEDED: return SL_ETIMEDOUT;
    case GRPC_STATUS_CANCELLED: return SL_ECANCELED;
    case GRPC_STATUS_RESOURCE_EXHAUSTED: return SL_ETOOBIG;
    case GRPC_STATUS_DATA_LOSS: return SL_ECORRUPT;
    case GRPC_STATUS_UNIMPLEMENTED: return SL_EUNIMPL;
    case GRPC_STATUS_PERMISSION_DENIED: return SL_EPERM;
    case GRPC_STATUS_UNAUTHENTICATED: return SL_EUNAUTH;
    case GRPC_STATUS_OUT_OF_RANGE: return SL_ERANGE;
    default: return SL_EINTERNAL;
  }
}

sl_status sl_err_set(sl_err *err, sl_status st, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
  }
  return st;
}

sl_status sl_err_wrap(sl_err *err, sl_status st, const char *fmt, ...) {
  if (err != NULL) {
    char prefix[SL_ERR_MAX];
    char old[SL_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    if (old[0] == '\0') snprintf(old, sizeof(old), "%s", sl_status_str(st));
    /* Messages are capped at SL_ERR_MAX; losing the tail is acceptable. */
    int n = snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, old);
    (void)n;
  }
  return st;
}

const char *sl_err_msg(const sl_err *err, sl_status st) {
  if (err != NULL && err->msg[0] != '\0') return err->msg;
  return sl_status_str(st);
}

void sl_assert_fail_(const char *cond, const char *file, int line) {
  fprintf(stderr, "level=fatal event=assert_failed cond=\"%s\" at=%s:%d\n",
          cond, file, line);
  abort();
}

static void *oom(size_t n) {
  fprintf(stderr, "level=fatal event=out_of_memory bytes=%zu\n", n);
  abort();
}

void *sl_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  return p ? p : oom(n);
}

void *sl_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  return p ? p : oom(n * size);
}

void *sl_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  return q ? q : oom(n);
}

char *sl_xstrdup(const char *s) {
  char *p = strdup(s);
  return p ? p : oom(strlen(s) + 1);
}
