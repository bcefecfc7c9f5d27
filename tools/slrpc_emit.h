/*
 * A tiny text emitter for code generation: a growing string plus templates
 * with $name$ placeholders (in the manner of protobuf's io::Printer), so that
 * the generator reads as the C it writes rather than as a wall of printf.
 *
 *   sl_emit_vars v = SL_EMIT_VARS_INIT;
 *   sl_emit_vars_set(&v, "fn", "sl_%s_ping", svc);
 *   sl_emit_tmpl(&out, &v, "sl_status $fn$(void);\n");
 *
 * Out of memory aborts (this is a build tool). Using a name that was never
 * set is a bug in the generator and aborts through SL_ASSERT.
 */
#ifndef SL_TOOLS_SLRPC_EMIT_H
#define SL_TOOLS_SLRPC_EMIT_H

#include <stddef.h>

#include "common/buf.h"

/* The text so far: an sl_buf (data is NUL-terminated once anything was
 * appended; len counts bytes without the NUL). */
typedef sl_buf sl_emit;

#define SL_EMIT_INIT SL_BUF_INIT

void sl_emit_char(sl_emit *e, char c);
void sl_emit_str(sl_emit *e, const char *s);
void sl_emit_fmt(sl_emit *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A new heap string, formatted (caller frees). */
char *sl_emit_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Hands the text over (never NULL, "" when empty; caller frees) and leaves
 * `e` empty. */
char *sl_emit_take(sl_emit *e);

void sl_emit_release(sl_emit *e);

/* ---- templates ---- */

#define SL_EMIT_MAX_VARS 32

typedef struct sl_emit_vars {
  struct {
    const char *name; /* retained: a string literal */
    char *value;      /* owned */
  } v[SL_EMIT_MAX_VARS];
  size_t n;
} sl_emit_vars;

#define SL_EMIT_VARS_INIT {{{NULL, NULL}}, 0}

/* Sets (or replaces) variable `name` to the formatted value. */
void sl_emit_vars_set(sl_emit_vars *vars, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets (or replaces) variable `name` to `value`, taking ownership of it
 * (a heap string). */
void sl_emit_vars_own(sl_emit_vars *vars, const char *name, char *value);

/* Sets every variable of `src` in `dst` as well (values are copied). */
void sl_emit_vars_copy(sl_emit_vars *dst, const sl_emit_vars *src);

/* The value of `name`; aborts if it was never set (a generator bug). */
const char *sl_emit_vars_get(const sl_emit_vars *vars, const char *name);

void sl_emit_vars_release(sl_emit_vars *vars);

/* Appends `tmpl` with every $name$ replaced by its value; "$$" is a '$'. */
void sl_emit_tmpl(sl_emit *e, const sl_emit_vars *vars, const char *tmpl);

#endif
