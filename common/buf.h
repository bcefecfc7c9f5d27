/*
 * sl_buf: one growable byte buffer, for everything that builds bytes or text
 * piece by piece (metrics exposition, etcd JSON bodies, journal batches,
 * generated code).
 *
 * Two families of calls share one struct:
 *  - the plain calls (sl_buf_append, sl_buf_appendf, sl_buf_reserve, ...)
 *    are for servers and tools: they abort with a clear message when memory
 *    runs out (sl_xrealloc), so they cannot fail and return nothing;
 *  - the *_try calls return SL_ENOMEM instead, for the client library, which
 *    lives in someone else's process and must not abort it.
 *
 * Invariants
 *  1. len <= cap. When cap > 0, data[len] == '\0': the contents are always a
 *     C string as well as bytes (text users need no extra step; binary users
 *     ignore the terminator). cap counts bytes usable for content, so the
 *     allocation is cap + 1.
 *  2. A buffer with cap == 0 owns no memory and data is NULL; sl_buf_release
 *     and sl_buf_detach work on it.
 *  3. A failed *_try call leaves the buffer exactly as it was.
 *  4. Pointers into data are invalidated by any call that may grow the
 *     buffer (append, appendf, reserve); reset keeps the memory.
 *
 * Not thread-safe: one owner at a time.
 */
#ifndef SL_COMMON_BUF_H
#define SL_COMMON_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "common/status.h"

typedef struct sl_buf {
  char *data; /* NULL until the first growth (invariant 2) */
  size_t len; /* bytes of content */
  size_t cap; /* bytes of content that fit without growing */
} sl_buf;

/* All-zero is a valid empty buffer; SL_BUF_INIT spells it out. */
#define SL_BUF_INIT {.data = NULL, .len = 0, .cap = 0}

/* Makes b empty and owning nothing. b is caller-owned storage. */
void sl_buf_init(sl_buf *b);

/* Frees the memory and leaves b as after sl_buf_init. */
void sl_buf_release(sl_buf *b);

/* Empties b (len = 0) but keeps its memory for reuse. */
void sl_buf_reset(sl_buf *b);

/* Makes room for at least `extra` more bytes after len. Aborts on OOM. */
void sl_buf_reserve(sl_buf *b, size_t extra);

/* Appends n bytes from p (borrowed; may be NULL when n == 0). Aborts on OOM.
 * p must not point into b itself. */
void sl_buf_append(sl_buf *b, const void *p, size_t n);

/* Appends a NUL-terminated string (without its NUL). Aborts on OOM. */
void sl_buf_appends(sl_buf *b, const char *s);

/* Appends printf-formatted text. Aborts on OOM. A format vsnprintf rejects
 * (an encoding error in a wide-character argument) appends nothing. */
void sl_buf_appendf(sl_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void sl_buf_vappendf(sl_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Non-aborting variants for the client library: SL_OK, or SL_ENOMEM with b
 * unchanged (invariant 3). sl_buf_appendf_try also returns SL_EINVAL for a
 * format vsnprintf rejects. */
sl_status sl_buf_reserve_try(sl_buf *b, size_t extra);
sl_status sl_buf_append_try(sl_buf *b, const void *p, size_t n);
sl_status sl_buf_appendf_try(sl_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Takes ownership of the contents away from b: returns data (free() it; NULL
 * if b never grew) and stores len in *len_out (if not NULL). b is left as
 * after sl_buf_init. */
char *sl_buf_detach(sl_buf *b, size_t *len_out);

/* Like sl_buf_detach, but never NULL: a buffer that never grew gives a fresh
 * "". Aborts on OOM (servers and tools). */
char *sl_buf_detach_str(sl_buf *b);

#endif
