#include "common/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sl_buf_init(sl_buf *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void sl_buf_release(sl_buf *b) {
  free(b->data);
  sl_buf_init(b);
}

void sl_buf_reset(sl_buf *b) {
  b->len = 0;
  if (b->data != NULL) b->data[0] = '\0';
}

/* No object may exceed PTRDIFF_MAX bytes, so a bigger request is out of
 * memory before malloc is even asked. */
#define MAX_CAP ((size_t)PTRDIFF_MAX - 1)

/* The capacity to grow to for `need` (<= MAX_CAP) bytes of content: at least
 * doubling, so that n appends cost O(n) copies. */
static size_t grown_cap(size_t cap, size_t need) {
  size_t c = cap < 32 ? 32 : cap;
  while (c < need) c = c > MAX_CAP / 2 ? MAX_CAP : c * 2;
  return c;
}

/* Grows to fit len + extra; returns false (b unchanged) when out of memory. */
static int grow(sl_buf *b, size_t extra) {
  if (extra <= b->cap - b->len) return 1;
  if (extra > MAX_CAP - b->len) return 0;
  size_t cap = grown_cap(b->cap, b->len + extra);
  char *p = realloc(b->data, cap + 1);
  if (p == NULL) return 0;
  if (b->data == NULL) p[0] = '\0';
  b->data = p;
  b->cap = cap;
  return 1;
}

sl_status sl_buf_reserve_try(sl_buf *b, size_t extra) {
  return grow(b, extra) ? SL_OK : SL_ENOMEM;
}

void sl_buf_reserve(sl_buf *b, size_t extra) {
  if (!grow(b, extra)) {
    fprintf(stderr, "level=fatal event=out_of_memory bytes=%zu\n",
            b->len + extra);
    abort();
  }
}

static void put(sl_buf *b, const void *p, size_t n) {
  if (n > 0) memcpy(b->data + b->len, p, n);
  b->len += n;
  if (b->data != NULL) b->data[b->len] = '\0';
}

sl_status sl_buf_append_try(sl_buf *b, const void *p, size_t n) {
  if (!grow(b, n)) return SL_ENOMEM;
  put(b, p, n);
  return SL_OK;
}

void sl_buf_append(sl_buf *b, const void *p, size_t n) {
  sl_buf_reserve(b, n);
  put(b, p, n);
}

void sl_buf_appends(sl_buf *b, const char *s) { sl_buf_append(b, s, strlen(s)); }

/* Formats into the spare room, growing once if it did not fit. Returns
 * SL_ENOMEM (b unchanged) or SL_EINVAL (bad format) on failure; with
 * `must` set, out-of-memory aborts instead. */
static sl_status vappendf(sl_buf *b, int must, const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  char dummy[1];
  char *dst = b->data != NULL ? b->data + b->len : dummy;
  size_t room = b->data != NULL ? b->cap - b->len + 1 : sizeof(dummy);
  int n = vsnprintf(dst, room, fmt, ap);
  sl_status st = SL_OK;
  if (n < 0) {
    st = SL_EINVAL;
  } else if ((size_t)n >= room) {
    if (must) {
      sl_buf_reserve(b, (size_t)n);
    } else if (!grow(b, (size_t)n)) {
      st = SL_ENOMEM;
    }
    if (st == SL_OK) vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
  }
  if (st == SL_OK) {
    b->len += (size_t)n;
  } else if (b->data != NULL) {
    b->data[b->len] = '\0'; /* undo a partial write into the spare room */
  }
  va_end(ap2);
  return st;
}

void sl_buf_vappendf(sl_buf *b, const char *fmt, va_list ap) {
  /* Only an encoding error can fail here; it appends nothing (header). */
  (void)vappendf(b, 1, fmt, ap);
}

void sl_buf_appendf(sl_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sl_buf_vappendf(b, fmt, ap);
  va_end(ap);
}

sl_status sl_buf_appendf_try(sl_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sl_status st = vappendf(b, 0, fmt, ap);
  va_end(ap);
  return st;
}

char *sl_buf_detach_str(sl_buf *b) {
  sl_buf_reserve(b, 1); /* allocates when b never grew */
  return sl_buf_detach(b, NULL);
}

char *sl_buf_detach(sl_buf *b, size_t *len_out) {
  char *p = b->data;
  if (len_out != NULL) *len_out = b->len;
  sl_buf_init(b);
  return p;
}
