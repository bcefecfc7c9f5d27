#include "common/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static bool name_matches(const char *flag, size_t flag_len, const char *name) {
  if (strlen(name) != flag_len) return false;
  for (size_t i = 0; i < flag_len; i++) {
    char a = flag[i] == '-' ? '_' : flag[i];
    if (a != name[i]) return false;
  }
  return true;
}

static sl_status set_value(const sl_conf_entry *e, void *cfg, const char *text,
                           const char *source, sl_err *err) {
  char *field = (char *)cfg + e->offset;
  switch (e->type) {
    case SL_CONF_TYPE_STR: {
      char **slot = (char **)field;
      free(*slot);
      *slot = sl_xstrdup(text ? text : "");
      return SL_OK;
    }
    case SL_CONF_TYPE_INT: {
      char *end = NULL;
      errno = 0;
      long long v = strtoll(text ? text : "", &end, 10);
      if (text == NULL || *text == '\0' || *end != '\0' || errno != 0)
        return sl_err_set(err, SL_EINVAL, "%s %s: not an integer: '%s'", source,
                          e->name, text ? text : "");
      if (v < e->min || v > e->max)
        return sl_err_set(err, SL_EINVAL, "%s %s: %lld is outside [%lld, %lld]",
                          source, e->name, v, e->min, e->max);
      *(long long *)field = v;
      return SL_OK;
    }
    case SL_CONF_TYPE_BOOL: {
      bool *slot = (bool *)field;
      if (text == NULL || strcmp(text, "true") == 0 || strcmp(text, "1") == 0) {
        *slot = true;
      } else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0) {
        *slot = false;
      } else {
        return sl_err_set(err, SL_EINVAL, "%s %s: not a boolean: '%s'", source,
                          e->name, text);
      }
      return SL_OK;
    }
  }
  return sl_err_set(err, SL_EINTERNAL, "%s: bad config type", e->name);
}

static sl_status parse_flag(const sl_conf_entry *table, size_t n, void *cfg,
                            int argc, char **argv, int *i, sl_err *err) {
  const char *arg = argv[*i] + 2;
  const char *eq = strchr(arg, '=');
  size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
  for (size_t k = 0; k < n; k++) {
    const sl_conf_entry *e = &table[k];
    if (!name_matches(arg, len, e->name)) continue;
    const char *value = eq ? eq + 1 : NULL;
    if (value == NULL && e->type != SL_CONF_TYPE_BOOL) {
      if (*i + 1 >= argc)
        return sl_err_set(err, SL_EINVAL, "flag --%s needs a value", e->name);
      value = argv[++*i];
    }
    return set_value(e, cfg, value, "flag", err);
  }
  return sl_err_set(err, SL_EINVAL, "unknown flag --%.*s (see --help)", (int)len,
                    arg);
}

sl_status sl_conf_parse(const sl_conf_entry *table, size_t n, void *cfg,
                        const char *prog, int argc, char **argv, sl_err *err) {
  sl_status st = SL_OK;
  for (size_t k = 0; k < n && st == SL_OK; k++) {
    if (table[k].def != NULL || table[k].type == SL_CONF_TYPE_STR)
      st = set_value(&table[k], cfg, table[k].def, "default", err);
  }
  for (size_t k = 0; k < n && st == SL_OK; k++) {
    const char *v = table[k].env ? getenv(table[k].env) : NULL;
    if (v != NULL) st = set_value(&table[k], cfg, v, table[k].env, err);
  }
  for (int i = 1; i < argc && st == SL_OK; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      sl_conf_usage(stdout, prog, table, n);
      st = SL_ECANCELED;
    } else if (strncmp(argv[i], "--", 2) == 0) {
      st = parse_flag(table, n, cfg, argc, argv, &i, err);
    } else {
      st = sl_err_set(err, SL_EINVAL, "unexpected argument '%s' (see --help)",
                      argv[i]);
    }
  }
  if (st != SL_OK) sl_conf_release(table, n, cfg);
  return st;
}

void sl_conf_usage(FILE *out, const char *prog, const sl_conf_entry *table,
                   size_t n) {
  static const char *const types[] = {"string", "int", "bool"};
  fprintf(out, "usage: %s [--flag value]...\n\n", prog);
  for (size_t k = 0; k < n; k++) {
    const sl_conf_entry *e = &table[k];
    fprintf(out, "  --%-22s %s\n", e->name, e->help);
    fprintf(out, "  %-24s %s, default '%s', env %s", "", types[e->type],
            e->def ? e->def : "", e->env ? e->env : "-");
    if (e->type == SL_CONF_TYPE_INT)
      fprintf(out, ", range [%lld, %lld]", e->min, e->max);
    fputc('\n', out);
  }
}

void sl_conf_release(const sl_conf_entry *table, size_t n, void *cfg) {
  for (size_t k = 0; k < n; k++) {
    if (table[k].type != SL_CONF_TYPE_STR) continue;
    char **slot = (char **)((char *)cfg + table[k].offset);
    free(*slot);
    *slot = NULL;
  }
}
