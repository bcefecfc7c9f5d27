/*
 * The code generator behind protoc-gen-slrpc: for one .proto file of a
 * CodeGeneratorRequest, the text of <base>.slrpc.h and <base>.slrpc.c.
 *
 * For each service Foo (snake name foo) the header declares the method table
 * sl_foo_methods[], the service sl_foo, one SL_FOO_<METHOD> macro per method,
 * the handler struct sl_foo_handlers and sl_foo_register() for servers, typed
 * reply/write helpers for handlers, and typed client helpers (blocking and
 * async unary calls, stream open/send/recv). The generated header documents
 * each function; read it (e.g. bazel-bin/proto/bookie.slrpc.h).
 *
 * Refused with a message (never emitted as code that would not compile):
 * two generated identifiers that collide (e.g. methods Foo and FooOpen in
 * one service), method types that are not fully qualified, and files using
 * protoc-c's c_package option (it renames the message types).
 */
#ifndef SL_TOOLS_SLRPC_GEN_H
#define SL_TOOLS_SLRPC_GEN_H

#include "common/status.h"
#include "google/protobuf/compiler/plugin.pb-c.h"

typedef struct sl_gen_output {
  char *header_name; /* "sub/a.slrpc.h" */
  char *header;      /* its text */
  char *source_name; /* "sub/a.slrpc.c" */
  char *source;
} sl_gen_output;

/*
 * Generates the glue for `file_name`, one of req->file_to_generate (both
 * borrowed). On SL_OK *out holds heap strings; release them with
 * sl_gen_output_release(). On failure (SL_EINVAL, with a message naming the
 * file and the offending service or method) *out is left empty.
 */
sl_status sl_gen_file(const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                      const char *file_name, sl_gen_output *out, sl_err *err);

void sl_gen_output_release(sl_gen_output *out);

#endif
