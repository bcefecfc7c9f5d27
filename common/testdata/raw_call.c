#include "common/testdata/raw_call.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <string.h>

grpc_status_code sl_test_raw_call(const char *target, const char *path,
                                  const void *bytes, size_t n, int timeout_ms,
                                  char *details, size_t cap) {
  grpc_init();
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_channel *chan = grpc_channel_create(target, creds, NULL);
  grpc_channel_credentials_release(creds);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_slice method = grpc_slice_from_copied_string(path);
  grpc_call *call = grpc_channel_create_call(
      chan, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
      gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                   gpr_time_from_millis(timeout_ms, GPR_TIMESPAN)),
      NULL);
  grpc_slice_unref(method);
  grpc_slice s = grpc_slice_from_copied_buffer(bytes, n);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1), *recv = NULL;
  grpc_slice_unref(s);
  grpc_metadata_array initial, trailing;
  grpc_metadata_array_init(&initial);
  grpc_metadata_array_init(&trailing);
  grpc_status_code code = GRPC_STATUS_INTERNAL;
  grpc_slice det = grpc_empty_slice();
  grpc_op ops[6];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &recv;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
  ops[5].data.recv_status_on_client.status = &code;
  ops[5].data.recv_status_on_client.status_details = &det;
  grpc_call_error ce = grpc_call_start_batch(call, ops, 6, ops, NULL);
  if (ce == GRPC_CALL_OK) {
    grpc_event ev = grpc_completion_queue_pluck(cq, ops, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE) code = GRPC_STATUS_INTERNAL;
    size_t len = GRPC_SLICE_LENGTH(det) < cap - 1 ? GRPC_SLICE_LENGTH(det) : cap - 1;
    memcpy(details, GRPC_SLICE_START_PTR(det), len);
    details[len] = '\0';
  } else {
    snprintf(details, cap, "grpc_call_start_batch: error %d", (int)ce);
  }
  if (recv != NULL) grpc_byte_buffer_destroy(recv);
  grpc_byte_buffer_destroy(bb);
  grpc_slice_unref(det);
  grpc_metadata_array_destroy(&initial);
  grpc_metadata_array_destroy(&trailing);
  grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  grpc_completion_queue_destroy(cq);
  grpc_channel_destroy(chan);
  grpc_shutdown();
  return code;
}
