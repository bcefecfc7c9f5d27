/* Waiting for gRPC core's own teardown (rpc.h). */
#include <grpc/grpc.h>
#include <time.h>

#include "common/clock.h"
#include "common/rpc.h"

sl_status sl_rpc_wait_shutdown(int timeout_ms) {
  int64_t end = sl_clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  /* gRPC offers no notification: grpc_is_initialized() reads the count
   * under the lock that its cleanup holds from start to end, so 0 means
   * the cleanup is over, not merely begun. */
  while (grpc_is_initialized()) {
    if (sl_clock_mono_ms() >= end) return SL_ETIMEDOUT;
    struct timespec pause = {0, 1000000};
    nanosleep(&pause, NULL);
  }
  return SL_OK;
}
