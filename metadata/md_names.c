#include "metadata/md_names.h"

#include <stdio.h>
#include <string.h>

#define QUOTE_MAX 80
#define SUFFIX "-partition-"
#define SUFFIX_LEN (sizeof(SUFFIX) - 1)

/* A printable, truncated rendering of untrusted input for messages. */
static const char *quote(const char *s, char *buf, size_t cap) {
  size_t o = 0;
  const unsigned char *p = (const unsigned char *)s;
  buf[o++] = '"';
  /* Room kept at the end for an escape, "...", the quote and the NUL. */
  for (; *p && o + 10 < cap; p++) {
    if (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
      buf[o++] = (char)*p;
    else
      o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", *p);
  }
  if (*p) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  buf[o++] = '"';
  buf[o] = '\0';
  return buf;
}

static bool name_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

/* Checks bytes [s, s+len) as one segment; `full` is what the message shows. */
static sl_status check_seg(const char *what, const char *full, const char *s,
                           size_t len, sl_err *err) {
  char q[QUOTE_MAX];
  if (len == 0) return sl_err_set(err, SL_EINVAL, "%s %s: empty name", what, quote(full, q, sizeof(q)));
  if (len > SL_MD_NAME_MAX)
    return sl_err_set(err, SL_EINVAL, "%s %s: %zu bytes, limit is %d", what,
                      quote(full, q, sizeof(q)), len, SL_MD_NAME_MAX);
  for (size_t i = 0; i < len; i++) {
    if (!name_char((unsigned char)s[i]))
      return sl_err_set(err, SL_EINVAL,
                        "%s %s: bad character at byte %zu (allowed: letters, "
                        "digits, '-', '_', '.')",
                        what, quote(full, q, sizeof(q)), (size_t)(s - full) + i);
  }
  if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
    return sl_err_set(err, SL_EINVAL, "%s %s: \".\" and \"..\" are reserved", what,
                      quote(full, q, sizeof(q)));
  return SL_OK;
}

sl_status sl_md_check_segment(const char *what, const char *name, sl_err *err) {
  if (name == NULL) name = "";
  return check_seg(what, name, name, strlen(name), err);
}

sl_status sl_md_check_namespace(const char *name, sl_err *err) {
  return sl_md_check_segment("namespace", name, err);
}

/* If [s, s+len) ends in "-partition-<canonical index>", returns the index
 * (>= 0) and the length before the suffix; otherwise -1. Indexes past the
 * limit count as a suffix too (with index SL_MD_MAX_PARTITIONS) so callers
 * can reject them. */
static int64_t partition_suffix(const char *s, size_t len, size_t *base_len) {
  size_t d = len;
  while (d > 0 && s[d - 1] >= '0' && s[d - 1] <= '9') d--;
  size_t digits = len - d;
  if (digits == 0 || d < SUFFIX_LEN || memcmp(s + d - SUFFIX_LEN, SUFFIX, SUFFIX_LEN) != 0)
    return -1;
  *base_len = d - SUFFIX_LEN;
  if (digits > 1 && s[d] == '0') return SL_MD_MAX_PARTITIONS; /* leading zero */
  if (digits > 5) return SL_MD_MAX_PARTITIONS;
  int64_t v = 0;
  for (size_t i = d; i < len; i++) v = v * 10 + (s[i] - '0');
  return v < SL_MD_MAX_PARTITIONS ? v : SL_MD_MAX_PARTITIONS;
}

/* Checks `name` as "ns/topic" over its first len bytes. */
static sl_status check_topic_n(const char *what, const char *name, size_t len,
                               size_t *ns_len, sl_err *err) {
  char q[QUOTE_MAX];
  const char *slash = memchr(name, '/', len);
  if (slash == NULL)
    return sl_err_set(err, SL_EINVAL, "%s %s: want \"namespace/topic\"", what,
                      quote(name, q, sizeof(q)));
  if (len > SL_MD_NAME_MAX)
    return sl_err_set(err, SL_EINVAL, "%s %s: %zu bytes, limit is %d", what,
                      quote(name, q, sizeof(q)), len, SL_MD_NAME_MAX);
  size_t nl = (size_t)(slash - name);
  sl_status st = check_seg(what, name, name, nl, err);
  if (st == SL_OK) st = check_seg(what, name, slash + 1, len - nl - 1, err);
  if (st != SL_OK) return st;
  if (ns_len != NULL) *ns_len = nl;
  return SL_OK;
}

sl_status sl_md_check_topic(const char *name, size_t *ns_len, sl_err *err) {
  char q[QUOTE_MAX];
  if (name == NULL) name = "";
  size_t len = strlen(name), base;
  sl_status st = check_topic_n("topic", name, len, ns_len, err);
  if (st != SL_OK) return st;
  if (partition_suffix(name, len, &base) >= 0)
    return sl_err_set(err, SL_EINVAL,
                      "topic %s: names ending in \"-partition-<n>\" are reserved "
                      "for partitions",
                      quote(name, q, sizeof(q)));
  return SL_OK;
}

sl_status sl_md_check_partition(const char *name, size_t *topic_len,
                                int64_t *index, sl_err *err) {
  char q[QUOTE_MAX];
  if (name == NULL) name = "";
  size_t len = strlen(name), base = len;
  int64_t idx = partition_suffix(name, len, &base);
  if (idx >= SL_MD_MAX_PARTITIONS)
    return sl_err_set(err, SL_EINVAL,
                      "partition %s: index must be decimal without leading zeros "
                      "and below %d",
                      quote(name, q, sizeof(q)), SL_MD_MAX_PARTITIONS);
  if (idx < 0) base = len;
  sl_status st = check_topic_n("partition", name, base, NULL, err);
  if (st != SL_OK) return st;
  size_t inner;
  if (idx >= 0 && partition_suffix(name, base, &inner) >= 0)
    return sl_err_set(err, SL_EINVAL, "partition %s: nested partition suffix",
                      quote(name, q, sizeof(q)));
  if (topic_len != NULL) *topic_len = base;
  if (index != NULL) *index = idx;
  return SL_OK;
}

sl_status sl_md_check_partition_prefix(const char *prefix, sl_err *err) {
  char q[QUOTE_MAX];
  if (prefix == NULL) prefix = "";
  size_t len = strlen(prefix), slashes = 0;
  if (len > SL_MD_PARTITION_MAX)
    return sl_err_set(err, SL_EINVAL, "partition prefix %s: %zu bytes, limit is %d",
                      quote(prefix, q, sizeof(q)), len, SL_MD_PARTITION_MAX);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)prefix[i];
    if (c == '/' && i > 0 && slashes == 0) {
      slashes++;
      continue;
    }
    if (!name_char(c))
      return sl_err_set(err, SL_EINVAL, "partition prefix %s: bad character at byte %zu",
                        quote(prefix, q, sizeof(q)), i);
  }
  return SL_OK;
}

sl_status sl_md_check_address(const char *what, const char *addr, sl_err *err) {
  char q[QUOTE_MAX];
  if (addr == NULL) addr = "";
  size_t len = strlen(addr);
  sl_status st = sl_md_check_text(what, addr, SL_MD_NAME_MAX, err);
  if (st != SL_OK) return st;
  const char *colon = strrchr(addr, ':');
  bool ok = len > 0 && strchr(addr, ' ') == NULL && colon != NULL && colon != addr &&
            colon[1] != '\0' && strlen(colon + 1) <= 5;
  long port = 0;
  for (const char *p = ok ? colon + 1 : ""; *p; p++) {
    if (*p < '0' || *p > '9') {
      ok = false;
      break;
    }
    port = port * 10 + (*p - '0');
  }
  if (!ok || port < 1 || port > 65535)
    return sl_err_set(err, SL_EINVAL, "%s %s: want host:port", what,
                      quote(addr, q, sizeof(q)));
  return SL_OK;
}

sl_status sl_md_check_text(const char *what, const char *text, size_t max,
                           sl_err *err) {
  char q[QUOTE_MAX];
  if (text == NULL) return SL_OK;
  size_t len = strlen(text);
  if (len > max)
    return sl_err_set(err, SL_EINVAL, "%s %s: %zu bytes, limit is %zu", what,
                      quote(text, q, sizeof(q)), len, max);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c < 0x20 || c >= 0x7f)
      return sl_err_set(err, SL_EINVAL, "%s %s: non-printable byte at %zu", what,
                        quote(text, q, sizeof(q)), i);
  }
  return SL_OK;
}
