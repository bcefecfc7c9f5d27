#include "common/rpc_status.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* One entry per non-OK status, indexed by -st; built once because a
 * grpc_slice cannot be initialised statically. */
#define SL_RPC_STATUS_COUNT_(name, value, grpc, proto, text) +1
enum { N_STATUS = 0 SL_STATUS_MAP(SL_RPC_STATUS_COUNT_) };
#undef SL_RPC_STATUS_COUNT_

static grpc_metadata trailers[N_STATUS];
static pthread_once_t trailers_once = PTHREAD_ONCE_INIT;

static void build_trailers(void) {
#define SL_RPC_STATUS_MD_(name, code, grpc, proto, text)                  \
  if ((code) < 0 && -(code) < N_STATUS) {                                 \
    trailers[-(code)].key = grpc_slice_from_static_string(SL_RPC_STATUS_KEY); \
    trailers[-(code)].value = grpc_slice_from_static_string(#code);       \
  }
  SL_STATUS_MAP(SL_RPC_STATUS_MD_)
#undef SL_RPC_STATUS_MD_
}

/* True for a defined non-OK code (the X-macro list is the only truth). */
static bool is_error_status(long v) {
  switch (v) {
#define SL_RPC_STATUS_IS_(name, value, grpc, proto, text) case value:
    SL_STATUS_MAP(SL_RPC_STATUS_IS_)
#undef SL_RPC_STATUS_IS_
    return v != SL_OK;
  }
  return false;
}

const grpc_metadata *sl_rpc_status_encode(sl_status st) {
  if (!is_error_status(st) || -(long)st >= N_STATUS) return NULL;
  pthread_once(&trailers_once, build_trailers);
  return &trailers[-st];
}

static bool slice_eq(grpc_slice s, const char *text) {
  size_t n = strlen(text);
  return GRPC_SLICE_LENGTH(s) == n && memcmp(GRPC_SLICE_START_PTR(s), text, n) == 0;
}

/* The value of an sl-status entry, or false when it is not a plain decimal
 * integer that names a non-OK sl_status. */
static bool parse_status(grpc_slice v, sl_status *out) {
  char text[16];
  size_t n = GRPC_SLICE_LENGTH(v);
  if (n == 0 || n >= sizeof(text)) return false;
  /* Exactly what the encoder writes: strtol alone would skip spaces. */
  for (size_t i = 0; i < n; i++) {
    char c = (char)GRPC_SLICE_START_PTR(v)[i];
    if (!(c == '-' && i == 0) && (c < '0' || c > '9')) return false;
  }
  memcpy(text, GRPC_SLICE_START_PTR(v), n);
  text[n] = '\0';
  char *end;
  errno = 0;
  long x = strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || !is_error_status(x)) return false;
  *out = (sl_status)x;
  return true;
}

sl_status sl_rpc_status_decode(int grpc_code, const grpc_metadata_array *trailing) {
  if (grpc_code == GRPC_STATUS_OK) return SL_OK;
  for (size_t i = 0; trailing != NULL && i < trailing->count; i++) {
    const grpc_metadata *md = &trailing->metadata[i];
    sl_status st;
    if (slice_eq(md->key, SL_RPC_STATUS_KEY) && parse_status(md->value, &st) &&
        sl_status_to_grpc(st) == grpc_code)
      return st;
  }
  return sl_status_from_grpc(grpc_code);
}
