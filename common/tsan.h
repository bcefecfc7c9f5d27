/*
 * Happens-before edges that ThreadSanitizer cannot see by itself.
 *
 * gRPC core is not built with -fsanitize=thread on Debian, so TSan does not
 * see that a completion queue orders the thread that started a batch before
 * the thread that receives its tag. Every object handed through a queue then
 * looks raced. The pair below states that edge where our code crosses the
 * queue:
 *
 *   SL_TSAN_RELEASE(tag);  just before grpc_call_start_batch or
 *                          grpc_server_request_*call with that tag
 *   SL_TSAN_ACQUIRE(tag);  just after grpc_completion_queue_next/pluck
 *                          returned it
 *
 * Both compile to nothing outside `--config=tsan`. They never hide a race
 * between two of our own threads that do not hand the object over through a
 * queue: use them only at those two places.
 */
#ifndef SL_COMMON_TSAN_H
#define SL_COMMON_TSAN_H

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define SL_TSAN_RELEASE(p) __tsan_release((void *)(p))
#define SL_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#else
#define SL_TSAN_RELEASE(p) ((void)(p))
#define SL_TSAN_ACQUIRE(p) ((void)(p))
#endif

#endif
