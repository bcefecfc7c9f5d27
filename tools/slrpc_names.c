#include "tools/slrpc_names.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tools/slrpc_emit.h"

/* Appends protoc-c's CamelToLower of the `n` bytes at `p`. */
static void lower_piece(sl_emit *e, const char *p, size_t n, bool upper_out) {
  bool was_upper = true; /* so that a leading capital gets no '_' */
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    bool is_upper = isupper(c) != 0;
    if (is_upper && !was_upper) sl_emit_char(e, '_');
    sl_emit_char(e, (char)(upper_out ? toupper(c) : tolower(c)));
    was_upper = is_upper;
  }
}

/* Appends protoc-c's ToCamel of the `n` bytes at `p`. */
static void camel_piece(sl_emit *e, const char *p, size_t n) {
  bool next_upper = true;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '_') {
      next_upper = true;
    } else {
      sl_emit_char(e, (char)(next_upper ? toupper(c) : c));
      next_upper = false;
    }
  }
}

typedef void (*piece_fn)(sl_emit *e, const char *p, size_t n);

static void lower_fn(sl_emit *e, const char *p, size_t n) { lower_piece(e, p, n, false); }

/* protoc-c's FullNameTo*: convert each non-empty dotted piece, join with "__". */
static void full_name(sl_emit *e, const char *name, piece_fn fn) {
  const char *p = name;
  while (*p != '\0') {
    size_t n = strcspn(p, ".");
    if (n > 0) {
      if (e->len > 0) sl_emit_str(e, "__");
      fn(e, p, n);
    }
    p += n;
    if (*p == '.') p++;
  }
}

char *sl_names_lower(const char *piece) {
  sl_emit e = SL_EMIT_INIT;
  lower_piece(&e, piece, strlen(piece), false);
  return sl_emit_take(&e);
}

char *sl_names_upper(const char *piece) {
  sl_emit e = SL_EMIT_INIT;
  lower_piece(&e, piece, strlen(piece), true);
  return sl_emit_take(&e);
}

char *sl_names_c_type(const char *name) {
  sl_emit e = SL_EMIT_INIT;
  full_name(&e, name, camel_piece);
  return sl_emit_take(&e);
}

char *sl_names_descriptor(const char *name) {
  sl_emit e = SL_EMIT_INIT;
  full_name(&e, name, lower_fn);
  sl_emit_str(&e, "__descriptor");
  return sl_emit_take(&e);
}

char *sl_names_guard(const char *file_name) {
  sl_emit e = SL_EMIT_INIT;
  sl_emit_str(&e, "SL_SLRPC_");
  for (const char *p = file_name; *p != '\0'; p++) {
    unsigned char c = (unsigned char)*p;
    sl_emit_char(&e, isalnum(c) ? (char)toupper(c) : '_');
  }
  return sl_emit_take(&e);
}
