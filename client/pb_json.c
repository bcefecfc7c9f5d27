/* Protobuf-c message to JSON: see pb_json.h. */
#include "client/pb_json.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = true;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = (b->cap + (size_t)n + 1) * 2;
    char *q = realloc(b->p, cap);
    if (q == NULL) {
      b->oom = true;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
}

static void put_str(sbuf *b, const uint8_t *s, size_t n) {
  put(b, "\"");
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    if (c == '"' || c == '\\') put(b, "\\%c", c);
    else if (c < 0x20) put(b, "\\u%04x", c);
    else put(b, "%c", c);
  }
  put(b, "\"");
}

static void put_msg(sbuf *b, const ProtobufCMessage *m);

/* One value of field f stored at v. */
static void put_value(sbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
      put(b, "%" PRId32, *(const int32_t *)v); break;
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
      put(b, "%" PRIu32, *(const uint32_t *)v); break;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
      put(b, "%" PRId64, *(const int64_t *)v); break;
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
      put(b, "%" PRIu64, *(const uint64_t *)v); break;
    case PROTOBUF_C_TYPE_FLOAT: put(b, "%g", (double)*(const float *)v); break;
    case PROTOBUF_C_TYPE_DOUBLE: put(b, "%g", *(const double *)v); break;
    case PROTOBUF_C_TYPE_BOOL: put(b, "%s", *(const protobuf_c_boolean *)v ? "true" : "false"); break;
    case PROTOBUF_C_TYPE_ENUM: {
      const ProtobufCEnumValue *e =
          protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)v);
      if (e != NULL) put(b, "\"%s\"", e->name);
      else put(b, "%d", *(const int *)v);
      break;
    }
    case PROTOBUF_C_TYPE_STRING: {
      const char *s = *(char *const *)v;
      put_str(b, (const uint8_t *)(s ? s : ""), s ? strlen(s) : 0);
      break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
      const ProtobufCBinaryData *d = v;
      put_str(b, d->data, d->len);
      break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: put_msg(b, *(ProtobufCMessage *const *)v); break;
  }
}

static size_t type_size(ProtobufCType t) {
  switch (t) {
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
      return 8;
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM: return sizeof(int);
    case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    default: return 4;
  }
}

static void put_msg(sbuf *b, const ProtobufCMessage *m) {
  if (m == NULL) {
    put(b, "null");
    return;
  }
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const char *base = (const char *)m;
  bool first = true;
  put(b, "{");
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const void *v = base + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      const char *arr = *(char *const *)v;
      put(b, "%s\"%s\":[", first ? "" : ",", f->name);
      for (size_t k = 0; k < n; k++) {
        if (k) put(b, ",");
        put_value(b, f, arr + k * type_size(f->type));
      }
      put(b, "]");
      first = false;
      continue;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      if (*(const uint32_t *)(base + f->quantifier_offset) != f->id) continue;
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE && *(void *const *)v == NULL) {
      continue;
    }
    put(b, "%s\"%s\":", first ? "" : ",", f->name);
    put_value(b, f, v);
    first = false;
  }
  put(b, "}");
}

sl_status sl_pb_json(const ProtobufCMessage *m, char **out, sl_err *err) {
  sbuf b = {0};
  put_msg(&b, m);
  if (b.oom) {
    free(b.p);
    return sl_err_set(err, SL_ENOMEM, "json: out of memory");
  }
  *out = b.p;
  return SL_OK;
}
