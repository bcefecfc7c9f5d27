/*
 * protoc-gen-slrpc: the protoc plugin that writes typed C glue for every gRPC
 * service over the Sluice RPC runtime.
 *
 *   protoc -I<dir> --plugin=protoc-gen-slrpc=<this> --slrpc_out=<out> a.proto
 *
 * writes <out>/a.slrpc.h and <out>/a.slrpc.c for every input file (a header
 * with only an include guard and an empty source when the file has no
 * service), next to protoc-c's a.pb-c.{h,c}. tools/proto.bzl runs it.
 *
 * Plugin protocol: protoc writes a CodeGeneratorRequest to our stdin and
 * reads a CodeGeneratorResponse from our stdout. Problems with the .proto
 * files go back in the response's `error` (protoc prints it and fails);
 * exit status 1 is for a broken protocol (unreadable request, I/O error).
 * What is generated is in slrpc_gen.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "google/protobuf/compiler/plugin.pb-c.h"
#include "tools/slrpc_gen.h"

typedef Google__Protobuf__Compiler__CodeGeneratorRequest request;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse response;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse__File response_file;

/* Reads all of `f` into a heap buffer. */
static sl_status read_all(FILE *f, uint8_t **out, size_t *out_len, sl_err *err) {
  size_t cap = 64 * 1024, len = 0;
  uint8_t *buf = sl_xmalloc(cap);
  for (;;) {
    len += fread(buf + len, 1, cap - len, f);
    if (len < cap) break;
    cap *= 2;
    buf = sl_xrealloc(buf, cap);
  }
  if (ferror(f)) {
    free(buf);
    return sl_err_set(err, SL_EIO, "stdin: read failed");
  }
  *out = buf;
  *out_len = len;
  return SL_OK;
}

static response_file *new_file(char *name, char *content) {
  response_file *f = sl_xmalloc(sizeof(*f));
  google__protobuf__compiler__code_generator_response__file__init(f);
  f->name = name;
  f->content = content;
  return f;
}

/* Fills `resp` with two files per file to generate, or with an error. The
 * response owns every string and file it points to (see free_response). */
static void generate(const request *req, response *resp) {
  sl_err err = SL_ERR_INIT;
  if (req->parameter != NULL && req->parameter[0] != '\0') {
    sl_err_set(&err, SL_EINVAL, "protoc-gen-slrpc takes no parameters (got \"%s\")",
               req->parameter);
    resp->error = sl_xstrdup(err.msg);
    return;
  }
  resp->file = sl_xcalloc(2 * req->n_file_to_generate + 1, sizeof(*resp->file));
  for (size_t i = 0; i < req->n_file_to_generate; i++) {
    sl_gen_output out;
    if (sl_gen_file(req, req->file_to_generate[i], &out, &err) != SL_OK) {
      resp->error = sl_xstrdup(err.msg);
      return;
    }
    /* The strings move into the response. */
    resp->file[resp->n_file++] = new_file(out.header_name, out.header);
    resp->file[resp->n_file++] = new_file(out.source_name, out.source);
  }
}

static void free_response(response *resp) {
  for (size_t i = 0; i < resp->n_file; i++) {
    free(resp->file[i]->name);
    free(resp->file[i]->content);
    free(resp->file[i]);
  }
  free(resp->file);
  free(resp->error);
}

int main(void) {
  int rc = 1;
  sl_err err = SL_ERR_INIT;
  uint8_t *in = NULL;
  size_t in_len = 0;
  if (read_all(stdin, &in, &in_len, &err) != SL_OK) goto out;

  request *req = google__protobuf__compiler__code_generator_request__unpack(NULL, in_len, in);
  if (req == NULL) {
    sl_err_set(&err, SL_EINVAL, "stdin: not a CodeGeneratorRequest (run me from protoc)");
    goto out_free_in;
  }

  response resp = GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
  /* proto3 `optional` changes nothing in the glue (protoc-c judges it). */
  resp.has_supported_features = 1;
  resp.supported_features =
      GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__FEATURE__FEATURE_PROTO3_OPTIONAL;
  generate(req, &resp);

  size_t out_len = google__protobuf__compiler__code_generator_response__get_packed_size(&resp);
  uint8_t *outbuf = sl_xmalloc(out_len ? out_len : 1);
  google__protobuf__compiler__code_generator_response__pack(&resp, outbuf);
  if (fwrite(outbuf, 1, out_len, stdout) != out_len || fflush(stdout) != 0)
    sl_err_set(&err, SL_EIO, "stdout: write failed");
  else
    rc = 0;
  free(outbuf);
  free_response(&resp);
  google__protobuf__compiler__code_generator_request__free_unpacked(req, NULL);
out_free_in:
  free(in);
out:
  if (rc != 0) fprintf(stderr, "protoc-gen-slrpc: %s\n", err.msg);
  return rc;
}
