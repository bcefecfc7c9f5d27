/*
 * sl_status: the one error type of Sluice.
 *
 * Every fallible call returns an sl_status (0 is OK, failures are negative)
 * and hands results back through out-parameters. The list below is the only
 * place a code is defined; it also yields sl_status_str(), in status.c the
 * single mapping to and from gRPC status codes, and the proto enum
 * sluice.v1.Status that per-item responses carry. Across an RPC the exact
 * code travels beside the gRPC code (rpc_status.h).
 */
#ifndef SL_COMMON_STATUS_H
#define SL_COMMON_STATUS_H

#include <stdarg.h>
#include <stddef.h>

/* X(name, value, grpc code, proto, text). `proto` names the value of the
 * enum sluice.v1.Status (proto/common.proto) that mirrors this code:
 * STATUS_<proto> = -value. common/status_test.c checks that the two lists
 * agree, so add a code to both or the build's tests fail. */
#define SL_STATUS_MAP(X)                                                                     \
  X(SL_OK, 0, GRPC_STATUS_OK, OK, "ok")                                                     \
  X(SL_EINVAL, -1, GRPC_STATUS_INVALID_ARGUMENT, INVALID, "invalid argument")               \
  X(SL_ENOTFOUND, -2, GRPC_STATUS_NOT_FOUND, NOT_FOUND, "not found")                        \
  X(SL_EEXIST, -3, GRPC_STATUS_ALREADY_EXISTS, EXISTS, "already exists")                    \
  X(SL_EPRECOND, -4, GRPC_STATUS_FAILED_PRECONDITION, PRECONDITION, "failed precondition")  \
  X(SL_EFENCED, -5, GRPC_STATUS_FAILED_PRECONDITION, FENCED, "fenced")                      \
  X(SL_EREADONLY, -6, GRPC_STATUS_FAILED_PRECONDITION, READ_ONLY, "read-only")              \
  X(SL_EVERSION, -7, GRPC_STATUS_ABORTED, VERSION, "version mismatch")                      \
  X(SL_EUNAVAIL, -8, GRPC_STATUS_UNAVAILABLE, UNAVAILABLE, "unavailable")                   \
  X(SL_ETIMEDOUT, -9, GRPC_STATUS_DEADLINE_EXCEEDED, TIMED_OUT, "deadline exceeded")        \
  X(SL_ECANCELED, -10, GRPC_STATUS_CANCELLED, CANCELLED, "cancelled")                       \
  X(SL_ENOMEM, -11, GRPC_STATUS_RESOURCE_EXHAUSTED, NO_MEMORY, "out of memory")             \
  X(SL_ETOOBIG, -12, GRPC_STATUS_RESOURCE_EXHAUSTED, TOO_LARGE, "too large")                \
  X(SL_EBUSY, -13, GRPC_STATUS_RESOURCE_EXHAUSTED, BUSY, "busy, try again")                 \
  X(SL_EIO, -14, GRPC_STATUS_INTERNAL, IO, "i/o error")                                     \
  X(SL_ECORRUPT, -15, GRPC_STATUS_DATA_LOSS, CORRUPT, "data corrupted")                     \
  X(SL_EUNIMPL, -16, GRPC_STATUS_UNIMPLEMENTED, UNIMPLEMENTED, "not implemented")           \
  X(SL_EPERM, -17, GRPC_STATUS_PERMISSION_DENIED, WRONG_PASSWORD, "permission denied")      \
  X(SL_EUNAUTH, -18, GRPC_STATUS_UNAUTHENTICATED, UNAUTHENTICATED, "unauthenticated")       \
  X(SL_ERANGE, -19, GRPC_STATUS_OUT_OF_RANGE, OUT_OF_RANGE, "out of range")                 \
  X(SL_EREDIRECT, -20, GRPC_STATUS_FAILED_PRECONDITION, REDIRECT, "not the owner")          \
  X(SL_EINTERNAL, -21, GRPC_STATUS_INTERNAL, INTERNAL, "internal error")                    \
  X(SL_ESTALE_EPOCH, -22, GRPC_STATUS_FAILED_PRECONDITION, STALE_EPOCH, "stale epoch")      \
  X(SL_ECONFLICT, -23, GRPC_STATUS_FAILED_PRECONDITION, CONFLICT, "entry conflict")         \
  X(SL_EBADCRC, -24, GRPC_STATUS_DATA_LOSS, BAD_CHECKSUM, "bad checksum")                   \
  X(SL_EFAILED, -25, GRPC_STATUS_UNAVAILABLE, FAILED, "node failed, needs a restart")       \
  X(SL_EDELETED, -26, GRPC_STATUS_NOT_FOUND, DELETED, "deleted")

typedef enum sl_status {
#define SL_STATUS_ENUM_(name, value, grpc, proto, text) name = value,
  SL_STATUS_MAP(SL_STATUS_ENUM_)
#undef SL_STATUS_ENUM_
} sl_status;

/* Short lowercase text for a code; never NULL ("unknown status" if unknown). */
const char *sl_status_str(sl_status st);

/* The gRPC status code (grpc_status_code as int) for a code. */
int sl_status_to_grpc(sl_status st);

/* The closest sl_status for a gRPC status code alone (several codes share
 * one gRPC code; rpc_status.h recovers the exact one from a Sluice server).
 * Unknown codes give SL_EINTERNAL. */
sl_status sl_status_from_grpc(int grpc_code);

/*
 * sl_err: a message a person reads, naming the object first:
 * "ledger 42: fenced by new owner". Lowercase, no trailing period.
 * Functions take an optional `sl_err *` (NULL allowed) and fill it on failure.
 */
#define SL_ERR_MAX 256
typedef struct sl_err {
  char msg[SL_ERR_MAX];
} sl_err;

#define SL_ERR_INIT {{0}}

/* Sets err->msg (if err is not NULL) and returns st, so callers can write
 * `return sl_err_set(err, SL_EINVAL, "topic %s: bad name", name);`. */
sl_status sl_err_set(sl_err *err, sl_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with more context: "bookie b1: <old>". */
sl_status sl_err_wrap(sl_err *err, sl_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The message, or the status text when no message was set. */
const char *sl_err_msg(const sl_err *err, sl_status st);

/* Always-on check for invariants that protect data (ordering, fencing,
 * checksums). Reports file and line, then aborts. */
#define SL_ASSERT(cond)                                                        \
  ((cond) ? (void)0 : sl_assert_fail_(#cond, __FILE__, __LINE__))
void sl_assert_fail_(const char *cond, const char *file, int line)
    __attribute__((noreturn));

/* Servers abort on out-of-memory (the client library does not use these). */
void *sl_xmalloc(size_t n);
void *sl_xcalloc(size_t n, size_t size);
void *sl_xrealloc(void *p, size_t n);
char *sl_xstrdup(const char *s);

#endif
