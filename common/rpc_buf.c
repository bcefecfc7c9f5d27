/* Codec and small helpers shared by the RPC server and client (rpc_int.h). */
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <string.h>

#include "common/log.h"
#include "common/rpc_int.h"

sl_status sl_rpc_buf_pack(const ProtobufCMessage *msg, size_t max_bytes,
                          grpc_byte_buffer **out, sl_err *err) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  if (max_bytes != 0 && n > max_bytes)
    return sl_err_set(err, SL_ETOOBIG, "%s: message of %zu bytes exceeds the limit of %zu",
                      msg->descriptor->name, n, max_bytes);
  grpc_slice slice = grpc_slice_malloc(n);
  size_t packed = protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
  SL_ASSERT(packed == n);
  *out = grpc_raw_byte_buffer_create(&slice, 1);
  grpc_slice_unref(slice);
  return SL_OK;
}

/* Unpacks `len` bytes at `data`. */
static sl_status unpack_bytes(const ProtobufCMessageDescriptor *desc, size_t len,
                              const uint8_t *data, ProtobufCMessage **out, sl_err *err) {
  ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, len, data);
  if (msg == NULL)
    return sl_err_set(err, SL_EINVAL, "%s: malformed message (%zu bytes)", desc->name, len);
  *out = msg;
  return SL_OK;
}

/* Gathers the slices of an uncompressed buffer into scratch; false if it
 * cannot grow (the caller then gathers the other way). */
static bool gather(const grpc_slice_buffer *sb, sl_buf *scratch) {
  sl_buf_reset(scratch);
  if (sl_buf_reserve_try(scratch, sb->length) != SL_OK) return false;
  for (size_t i = 0; i < sb->count; i++)
    sl_buf_append(scratch, GRPC_SLICE_START_PTR(sb->slices[i]),
                  GRPC_SLICE_LENGTH(sb->slices[i])); /* fits: reserved above */
  return true;
}

sl_status sl_rpc_buf_unpack(const ProtobufCMessageDescriptor *desc,
                            grpc_byte_buffer *bb, sl_buf *scratch,
                            ProtobufCMessage **out, sl_err *err) {
  grpc_byte_buffer_reader reader;
  *out = NULL;
  bool raw = bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE;
  /* The common case, one uncompressed slice, needs no gathering copy (a
   * 64 KiB message costs one memcpy less on each side). */
  if (raw && bb->data.raw.slice_buffer.count == 1) {
    grpc_slice one = bb->data.raw.slice_buffer.slices[0];
    return unpack_bytes(desc, GRPC_SLICE_LENGTH(one), GRPC_SLICE_START_PTR(one), out, err);
  }
  if (raw && scratch != NULL && gather(&bb->data.raw.slice_buffer, scratch)) {
    sl_status st = unpack_bytes(desc, scratch->len, (const uint8_t *)scratch->data, out, err);
    if (scratch->cap > SL_RPC_SCRATCH_KEEP) sl_buf_release(scratch);
    return st;
  }
  /* Fails only when a compressed buffer does not decompress. */
  if (!grpc_byte_buffer_reader_init(&reader, bb))
    return sl_err_set(err, SL_EINVAL, "%s: cannot decompress message", desc->name);
  grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  sl_status st = unpack_bytes(desc, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all), out, err);
  grpc_slice_unref(all);
  return st;
}

void sl_rpc_args_add_int(sl_rpc_args *s, const char *key, int value) {
  SL_ASSERT(s->args.num_args < SL_RPC_ARGS_MAX);
  grpc_arg *a = &s->arg[s->args.num_args++];
  a->type = GRPC_ARG_INTEGER;
  a->key = (char *)key;
  a->value.integer = value;
}

void sl_rpc_args_add_str(sl_rpc_args *s, const char *key, const char *value) {
  SL_ASSERT(s->args.num_args < SL_RPC_ARGS_MAX);
  grpc_arg *a = &s->arg[s->args.num_args++];
  a->type = GRPC_ARG_STRING;
  a->key = (char *)key;
  a->value.string = (char *)value;
}

const grpc_channel_args *sl_rpc_args_init(sl_rpc_args *s, size_t max_message,
                                          bool server) {
  if (max_message == 0) max_message = SL_RPC_DEFAULT_MAX_MESSAGE;
  if (max_message > INT32_MAX) max_message = INT32_MAX; /* gRPC takes an int */
  memset(s, 0, sizeof(*s));
  s->args.args = s->arg;
  sl_rpc_args_add_int(s, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)max_message);
  sl_rpc_args_add_int(s, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, (int)max_message);
  if (!server) return &s->args;
  /* Without this two servers can silently share one port. */
  sl_rpc_args_add_int(s, GRPC_ARG_ALLOW_REUSEPORT, 0);
  /* Clients ping every keepalive_time_ms (>= SL_RPC_MIN_PING_INTERVAL_MS),
   * also on idle connections. gRPC's server default wants 5 minutes between
   * pings without data and, after two "strikes", sends GOAWAY
   * too_many_pings, which kills every call on the connection. */
  sl_rpc_args_add_int(s, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                      SL_RPC_MIN_PING_INTERVAL_MS);
  sl_rpc_args_add_int(s, GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0); /* 0 = never */
  sl_rpc_args_add_int(s, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  return &s->args;
}

gpr_timespec sl_rpc_deadline(int64_t ms) {
  if (ms <= 0) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis(ms, GPR_TIMESPAN));
}

void sl_rpc_slice_str(grpc_slice s, char *buf, size_t cap) {
  size_t n = GRPC_SLICE_LENGTH(s);
  if (cap == 0) return;
  if (n >= cap) n = cap - 1;
  memcpy(buf, GRPC_SLICE_START_PTR(s), n);
  buf[n] = '\0';
}

/* gRPC's errors are mostly a peer's doing (failed handshakes, bad ports),
 * so they log as warnings; ours say what they mean to us separately. */
static void grpc_log_line(gpr_log_func_args *a) {
  sl_log_level level = a->severity == GPR_LOG_SEVERITY_ERROR  ? SL_LOG_WARN
                       : a->severity == GPR_LOG_SEVERITY_INFO ? SL_LOG_INFO
                                                              : SL_LOG_DEBUG;
  if ((int)level < sl_log_active_level_) return;
  char msg[1024];
  size_t n = 0;
  for (const char *p = a->message; *p != '\0' && n < sizeof(msg) - 1; p++)
    msg[n++] = *p == '\n' ? ' ' : *p == '"' ? '\'' : *p;
  msg[n] = '\0';
  const char *file = strrchr(a->file, '/');
  sl_log(level, "event=grpc_log src=%s:%d msg=\"%s\"", file ? file + 1 : a->file, a->line, msg);
}

/* gRPC drops its last reference, and with it joins its threads, on a
 * thread of its own, so some of those threads can still be exiting while the
 * process runs its atexit handlers. OpenSSL's atexit cleanup deletes the key
 * whose destructor frees each thread's error queue, so a TLS thread exiting
 * after it leaks that queue (904 bytes, which LeakSanitizer reports). Without
 * that cleanup every thread frees its own; the process is exiting anyway.
 * A constructor, because the first OpenSSL initialization in the process
 * decides, and libcurl may come first. */
__attribute__((constructor)) static void openssl_skip_atexit(void) {
  /* Failing leaves OpenSSL's default, which only a leak checker notices. */
  (void)OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
}

static void log_init_once(void) { gpr_set_log_function(grpc_log_line); }

void sl_rpc_log_init(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, log_init_once);
}
