#include "tools/slrpc_emit.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"

void sl_emit_char(sl_emit *e, char c) { sl_buf_append(e, &c, 1); }

void sl_emit_str(sl_emit *e, const char *s) { sl_buf_appends(e, s); }

void sl_emit_fmt(sl_emit *e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sl_buf_vappendf(e, fmt, ap);
  va_end(ap);
}

char *sl_emit_strf(const char *fmt, ...) {
  sl_emit e = SL_EMIT_INIT;
  va_list ap;
  va_start(ap, fmt);
  sl_buf_vappendf(&e, fmt, ap);
  va_end(ap);
  return sl_emit_take(&e);
}

char *sl_emit_take(sl_emit *e) { return sl_buf_detach_str(e); }

void sl_emit_release(sl_emit *e) { sl_buf_release(e); }

void sl_emit_vars_own(sl_emit_vars *vars, const char *name, char *value) {
  for (size_t i = 0; i < vars->n; i++) {
    if (strcmp(vars->v[i].name, name) == 0) {
      free(vars->v[i].value);
      vars->v[i].value = value;
      return;
    }
  }
  SL_ASSERT(vars->n < SL_EMIT_MAX_VARS);
  vars->v[vars->n].name = name;
  vars->v[vars->n].value = value;
  vars->n++;
}

void sl_emit_vars_set(sl_emit_vars *vars, const char *name, const char *fmt, ...) {
  sl_emit value = SL_EMIT_INIT;
  va_list ap;
  va_start(ap, fmt);
  sl_buf_vappendf(&value, fmt, ap);
  va_end(ap);
  sl_emit_vars_own(vars, name, sl_emit_take(&value));
}

void sl_emit_vars_copy(sl_emit_vars *dst, const sl_emit_vars *src) {
  for (size_t i = 0; i < src->n; i++)
    sl_emit_vars_set(dst, src->v[i].name, "%s", src->v[i].value);
}

void sl_emit_vars_release(sl_emit_vars *vars) {
  for (size_t i = 0; i < vars->n; i++) free(vars->v[i].value);
  vars->n = 0;
}

static const char *lookup(const sl_emit_vars *vars, const char *name, size_t len) {
  for (size_t i = 0; i < vars->n; i++) {
    if (strlen(vars->v[i].name) == len && memcmp(vars->v[i].name, name, len) == 0)
      return vars->v[i].value;
  }
  fprintf(stderr, "protoc-gen-slrpc: template uses unset variable $%.*s$\n",
          (int)len, name);
  SL_ASSERT(!"template variable is set");
  return NULL;
}

const char *sl_emit_vars_get(const sl_emit_vars *vars, const char *name) {
  return lookup(vars, name, strlen(name));
}

void sl_emit_tmpl(sl_emit *e, const sl_emit_vars *vars, const char *tmpl) {
  const char *p = tmpl;
  for (;;) {
    const char *open = strchr(p, '$');
    if (open == NULL) break;
    sl_buf_append(e, p, (size_t)(open - p));
    const char *close = strchr(open + 1, '$');
    SL_ASSERT(close != NULL); /* an unbalanced '$' is a template bug */
    if (close == open + 1)
      sl_emit_char(e, '$');
    else
      sl_emit_str(e, lookup(vars, open + 1, (size_t)(close - open - 1)));
    p = close + 1;
  }
  sl_emit_str(e, p);
}
