/*
 * protoc-gen-slrpc's generator: walks file -> service[] -> method[] and
 * fills text templates (slrpc_emit.h) with the names of each.
 *
 * Shape of the work for one file:
 *   1. find its FileDescriptorProto and refuse c_package (check_c_package);
 *   2. per service, name everything it will emit (plan_service) and claim
 *      each C identifier, so that a collision is an error message here
 *      instead of a compile error in generated code;
 *   3. emit the header and the source, service by service. The templates
 *      live next to the function that uses them, in the order they appear
 *      in the output.
 * Every generated identifier starts with sl_<service>_ (or SL_<SERVICE>_),
 * with the package dropped, so it never meets protoc-c's own names, which
 * start with the package.
 */
#include "tools/slrpc_gen.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "pb_c_options.pb-c.h"
#include "tools/slrpc_emit.h"
#include "tools/slrpc_names.h"

typedef Google__Protobuf__FileDescriptorProto file_proto;
typedef Google__Protobuf__ServiceDescriptorProto service_proto;
typedef Google__Protobuf__MethodDescriptorProto method_proto;

/* protoc-c's FileOptions extension `pb_c_file` (protobuf-c.proto). It holds
 * c_package, which renames every type, so we refuse it rather than guess. */
#define PB_C_FILE_OPTIONS_FIELD 1019

/* Field numbers used in SourceCodeInfo location paths (descriptor.proto). */
#define FILE_SERVICE_FIELD 6
#define SERVICE_METHOD_FIELD 2

typedef enum shape { UNARY, SERVER_STREAM, CLIENT_STREAM, BIDI } shape;

static const struct {
  const char *kind; /* sl_rpc_kind constant */
  const char *text; /* for comments */
} kShapes[] = {
    [UNARY] = {"SL_RPC_UNARY", "unary"},
    [SERVER_STREAM] = {"SL_RPC_SERVER_STREAMING", "server streaming"},
    [CLIENT_STREAM] = {"SL_RPC_CLIENT_STREAMING", "client streaming"},
    [BIDI] = {"SL_RPC_BIDI_STREAMING", "bidi streaming"},
};

/* Identifiers already taken in one scope, with who took them. */
typedef struct claims {
  struct {
    char *name;
    char *owner;
  } *v;
  size_t n, cap;
} claims;

typedef struct gen {
  const Google__Protobuf__Compiler__CodeGeneratorRequest *req;
  const file_proto *file;
  sl_emit h;      /* header text */
  sl_emit c;      /* source text */
  claims globals; /* file-scope C identifiers */
  sl_err *err;
} gen;

/* ---- helpers ---- */

static void claims_release(claims *c) {
  for (size_t i = 0; i < c->n; i++) {
    free(c->v[i].name);
    free(c->v[i].owner);
  }
  free(c->v);
  memset(c, 0, sizeof(*c));
}

/* Takes `name` (ownership too) for `owner`; fails if the scope has it. */
static sl_status claim(gen *g, claims *c, char *name, const char *owner) {
  for (size_t i = 0; i < c->n; i++) {
    if (strcmp(c->v[i].name, name) == 0) {
      sl_err_set(g->err, SL_EINVAL,
                 "%s: %s and %s both generate the C name %s; rename one",
                 g->file->name, c->v[i].owner, owner, name);
      free(name);
      return SL_EINVAL;
    }
  }
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 32;
    c->v = sl_xrealloc(c->v, c->cap * sizeof(*c->v));
  }
  c->v[c->n].name = name;
  c->v[c->n].owner = sl_xstrdup(owner);
  c->n++;
  return SL_OK;
}

static const char *var(const sl_emit_vars *v, const char *name) {
  return sl_emit_vars_get(v, name);
}

static shape method_shape(const method_proto *m) {
  bool cs = m->has_client_streaming && m->client_streaming;
  bool ss = m->has_server_streaming && m->server_streaming;
  return cs ? (ss ? BIDI : CLIENT_STREAM) : (ss ? SERVER_STREAM : UNARY);
}

static bool streams_requests(shape s) { return s == CLIENT_STREAM || s == BIDI; }
static bool streams_responses(shape s) { return s == SERVER_STREAM || s == BIDI; }

/* "a/b.proto" -> "a/b" (the stem protoc-c uses for a/b.pb-c.h). */
static char *file_base(const char *name) {
  char *base = sl_xstrdup(name);
  size_t n = strlen(base);
  if (n > 6 && strcmp(base + n - 6, ".proto") == 0) base[n - 6] = '\0';
  return base;
}

/* True if `f` sets protoc-c's c_package. To us the pb_c_file extension is
 * an unknown field of FileOptions: protobuf-c keeps its bytes with their
 * length prefix (a varint), and after that they are a PbCFileOptions. */
static bool sets_c_package(const file_proto *f) {
  if (f->options == NULL) return false;
  const ProtobufCMessage *o = &f->options->base;
  bool set = false;
  for (unsigned i = 0; i < o->n_unknown_fields && !set; i++) {
    const ProtobufCMessageUnknownField *u = &o->unknown_fields[i];
    if (u->tag != PB_C_FILE_OPTIONS_FIELD || u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
      continue;
    size_t prefix = 0;
    while (prefix < u->len && (u->data[prefix] & 0x80) != 0) prefix++;
    prefix++; /* the last byte of the varint */
    Sluice__Tools__PbCFileOptions *opts =
        prefix > u->len ? NULL
                        : sluice__tools__pb_cfile_options__unpack(NULL, u->len - prefix,
                                                                 u->data + prefix);
    /* Undecodable options cannot be trusted to leave the names alone. */
    set = opts == NULL || opts->c_package != NULL;
    if (opts != NULL) sluice__tools__pb_cfile_options__free_unpacked(opts, NULL);
  }
  return set;
}

/* Appends the comment "/<star> title <star>/", with the .proto comment found
 * at `path` (if any) as more lines " * <text>", made safe to sit inside a C
 * comment. */
static void emit_commented(sl_emit *e, const char *title, const file_proto *f,
                           const int32_t *path, size_t n_path) {
  sl_emit_fmt(e, "/* %s", title);
  const Google__Protobuf__SourceCodeInfo *info = f->source_code_info;
  const char *text = NULL;
  for (size_t i = 0; info != NULL && i < info->n_location && text == NULL; i++) {
    const Google__Protobuf__SourceCodeInfo__Location *loc = info->location[i];
    if (loc->n_path == n_path && memcmp(loc->path, path, n_path * sizeof(*path)) == 0)
      text = loc->leading_comments;
  }
  if (text != NULL && *text != '\0') sl_emit_char(e, '\n');
  for (const char *p = text; p != NULL && *p != '\0';) {
    size_t n = strcspn(p, "\n");
    sl_emit_str(e, " *");
    for (size_t k = 0; k < n; k++) {
      /* Break any comment delimiter so the text cannot end our comment. */
      bool breaks = k + 1 < n && ((p[k] == '*' && p[k + 1] == '/') ||
                                  (p[k] == '/' && p[k + 1] == '*'));
      sl_emit_char(e, p[k]);
      if (breaks) sl_emit_char(e, ' ');
    }
    sl_emit_char(e, '\n');
    p += n;
    if (*p == '\n') p++;
  }
  sl_emit_str(e, " */\n");
}

/* ---- naming: one set of template variables per service and per method ----
 *
 * Template variables, e.g. for sluice.v1.BookieService/AddEntry:
 *   file     proto "bookie.proto", base "bookie", guard "SL_SLRPC_BOOKIE_SLRPC_H"
 *   service  Svc "BookieService", svc "bookie_service", SVC "BOOKIE_SERVICE",
 *            full "sluice.v1.BookieService", n (number of methods)
 *   method   name "AddEntry", m "add_entry", M "ADD_ENTRY", i (table index),
 *            what "sluice.v1.BookieService/AddEntry", kind "SL_RPC_BIDI_STREAMING",
 *            kind_text "bidi streaming", Req/Resp (C types), ReqDesc/RespDesc
 *            (descriptor variables)
 */

static sl_status plan_service(gen *g, const service_proto *s, sl_emit_vars *v) {
  const char *pkg = g->file->package ? g->file->package : "";
  sl_emit_vars_own(v, "svc", sl_names_lower(s->name));
  sl_emit_vars_own(v, "SVC", sl_names_upper(s->name));
  sl_emit_vars_set(v, "full", "%s%s%s", pkg, *pkg ? "." : "", s->name);
  sl_emit_vars_set(v, "Svc", "%s", s->name);
  sl_emit_vars_set(v, "n", "%zu", s->n_method);

  char *owner = sl_emit_strf("service %s", var(v, "full"));
  static const struct {
    const char *prefix, *suffix;
  } kNames[] = {
      {"sl_", "_methods"}, {"sl_", ""},         {"sl_", "_handlers"},
      {"sl_", "_register"}, {"", "_binding"}, {"", "_trampolines"},
  };
  sl_status st = SL_OK;
  for (size_t i = 0; i < sizeof(kNames) / sizeof(kNames[0]) && st == SL_OK; i++) {
    char *name = sl_emit_strf("%s%s%s", kNames[i].prefix, var(v, "svc"), kNames[i].suffix);
    st = claim(g, &g->globals, name, owner);
  }
  free(owner);
  return st;
}

/* The identifiers one method adds, as suffixes of sl_<svc>_<m> (functions)
 * and of <svc>__<m> (static trampolines). NULL-terminated. */
static void method_suffixes(shape s, const char *fns[10], const char *statics[5]) {
  size_t f = 0, t = 0;
  fns[f++] = "_reply";
  if (streams_responses(s)) fns[f++] = "_write";
  if (s == UNARY) {
    fns[f++] = "";
    fns[f++] = "_async";
  } else {
    fns[f++] = "_open";
    fns[f++] = "_recv";
    fns[f++] = "_astream_open";
  }
  if (streams_requests(s)) {
    fns[f++] = "_send";
    fns[f++] = "_asend";
  }
  fns[f] = NULL;
  statics[t++] = "_on_start";
  if (streams_requests(s)) statics[t++] = "_on_message";
  statics[t++] = "_on_writable";
  statics[t++] = "_on_done";
  statics[t] = NULL;
}

static sl_status plan_method(gen *g, const sl_emit_vars *sv, const method_proto *m,
                             size_t index, claims *fields, sl_emit_vars *v) {
  const char *full = var(sv, "full");
  if (m->input_type == NULL || m->input_type[0] != '.' || m->output_type == NULL ||
      m->output_type[0] != '.')
    return sl_err_set(g->err, SL_EINVAL,
                      "%s: method %s/%s: request and response types must be "
                      "fully qualified (\".pkg.Type\")",
                      g->file->name, full, m->name);
  shape s = method_shape(m);
  sl_emit_vars_set(v, "name", "%s", m->name);
  sl_emit_vars_own(v, "m", sl_names_lower(m->name));
  sl_emit_vars_own(v, "M", sl_names_upper(m->name));
  sl_emit_vars_set(v, "i", "%zu", index);
  sl_emit_vars_set(v, "what", "%s/%s", full, m->name);
  sl_emit_vars_set(v, "kind", "%s", kShapes[s].kind);
  sl_emit_vars_set(v, "kind_text", "%s", kShapes[s].text);
  sl_emit_vars_own(v, "Req", sl_names_c_type(m->input_type));
  sl_emit_vars_own(v, "Resp", sl_names_c_type(m->output_type));
  sl_emit_vars_own(v, "ReqDesc", sl_names_descriptor(m->input_type));
  sl_emit_vars_own(v, "RespDesc", sl_names_descriptor(m->output_type));

  char *owner = sl_emit_strf("method %s", var(v, "what"));
  const char *svc = var(sv, "svc"), *mm = var(v, "m");
  const char *fns[10], *statics[5];
  method_suffixes(s, fns, statics);
  sl_status st = claim(g, &g->globals,
                       sl_emit_strf("SL_%s_%s", var(sv, "SVC"), var(v, "M")), owner);
  for (size_t i = 0; fns[i] != NULL && st == SL_OK; i++)
    st = claim(g, &g->globals, sl_emit_strf("sl_%s_%s%s", svc, mm, fns[i]), owner);
  for (size_t i = 0; statics[i] != NULL && st == SL_OK; i++)
    st = claim(g, &g->globals, sl_emit_strf("%s__%s%s", svc, mm, statics[i]), owner);
  /* Handler struct fields live in their own scope. */
  static const char *const kFields[] = {"_start", "_message", "_writable", "_done"};
  bool streamed = streams_requests(s);
  if (st == SL_OK && !streamed) st = claim(g, fields, sl_xstrdup(mm), owner);
  for (size_t i = streamed ? 0 : 2; i < 4 && st == SL_OK; i++)
    st = claim(g, fields, sl_emit_strf("%s%s", mm, kFields[i]), owner);
  free(owner);
  return st;
}

/* ---- header ---- */

static const char kHeaderTop[] =
    "/* Generated by protoc-gen-slrpc from $proto$. DO NOT EDIT. */\n"
    "#ifndef $guard$\n"
    "#define $guard$\n";

static const char kHeaderNoService[] =
    "\n"
    "/* $proto$ defines no service: this header exists because every .proto\n"
    " * gets one. Its messages are in $base$.pb-c.h. */\n"
    "#include \"$base$.pb-c.h\"\n";

static const char kHeaderIncludes[] =
    "\n"
    "/* Typed gRPC glue over the Sluice RPC runtime (common/rpc_server.h,\n"
    " * common/rpc_client.h) for the services of $proto$; the messages are\n"
    " * protoc-c's, from $base$.pb-c.h. Messages passed in are borrowed;\n"
    " * messages handed out are heap messages the receiver frees with\n"
    " * protobuf_c_message_free_unpacked(&msg->base, NULL). */\n"
    "\n"
    "#include <stdbool.h>\n"
    "\n"
    "#include \"$base$.pb-c.h\"\n"
    "#include \"common/rpc_astream.h\"\n"
    "#include \"common/rpc_client.h\"\n"
    "#include \"common/rpc_server.h\"\n";

static const char kHeaderTable[] =
    "\n"
    "/* The methods of $Svc$ in .proto order; name one with its macro below,\n"
    " * e.g. for sl_rpc_call_method() or the generic sl_rpc_* calls. */\n"
    "extern const sl_rpc_method sl_$svc$_methods[$n$];\n"
    "\n"
    "/* The service: its full name and its method table. */\n"
    "extern const sl_rpc_service sl_$svc$;\n"
    "\n";

static const char kHeaderMacro[] = "#define SL_$SVC$_$M$ (&sl_$svc$_methods[$i$])\n";

static const char kHeaderHandlersTop[] =
    "\n"
    "/* ---- $Svc$: server side ---- */\n"
    "\n"
    "/*\n"
    " * Callbacks for serving $Svc$; any may be NULL. Each runs on the\n"
    " * call's worker thread (common/rpc_server.h), never two at once for one\n"
    " * call, and gets the ctx given to sl_$svc$_register(). For method <m>:\n"
    " *\n"
    " *   <m>           a new call with its one request (unary and server\n"
    " *                 streaming); `req` is borrowed until the call is released\n"
    " *   <m>_start     a new call whose requests follow (client and bidi)\n"
    " *   <m>_message   one request, borrowed during the callback; NULL once\n"
    " *                 the client half-closed\n"
    " *   <m>_writable  the write queue has room again after a write returned\n"
    " *                 SL_EBUSY\n"
    " *   <m>_done      the call is over: status sent, or cancelled by the\n"
    " *                 client or its deadline; nothing runs for it after this,\n"
    " *                 so free per-call state here\n"
    " *\n"
    " * A method whose <m> (or <m>_message) is NULL answers UNIMPLEMENTED with\n"
    " * \"<package>.<Service>/<Method> is not implemented yet\". Handlers answer\n"
    " * with the _reply and _write helpers below, at once or later from any\n"
    " * thread while holding sl_rpc_call_ref(), or fail with\n"
    " * sl_rpc_call_finish().\n"
    " */\n"
    "typedef struct sl_$svc$_handlers {\n";

static const char kFieldSingle[] =
    "  /* $name$ ($kind_text$) */\n"
    "  void (*$m$)(sl_rpc_call *call, const $Req$ *req, void *ctx);\n";

static const char kFieldStreamed[] =
    "  /* $name$ ($kind_text$) */\n"
    "  void (*$m$_start)(sl_rpc_call *call, void *ctx);\n"
    "  void (*$m$_message)(sl_rpc_call *call, const $Req$ *msg, void *ctx);\n";

static const char kFieldCommon[] =
    "  void (*$m$_writable)(sl_rpc_call *call, void *ctx);\n"
    "  void (*$m$_done)(sl_rpc_call *call, bool cancelled, void *ctx);\n";

static const char kHeaderRegister[] =
    "} sl_$svc$_handlers;\n"
    "\n"
    "/* Registers every method of $Svc$ on `srv`, before sl_rpc_server_start().\n"
    " * `h` is copied; `ctx` is retained until the server is destroyed.\n"
    " * SL_EINVAL if srv or h is NULL; otherwise the status of\n"
    " * sl_rpc_server_add_method(), after which the server may hold only some\n"
    " * of the methods and should be destroyed. */\n"
    "sl_status sl_$svc$_register(sl_rpc_server *srv, const sl_$svc$_handlers *h,\n"
    "    void *ctx, sl_err *err);\n"
    "\n"
    "/* Answers, from any thread. `resp` and `msg` are borrowed and packed\n"
    " * before return. Both return SL_ECANCELED once the call is over or\n"
    " * finished; _write returns SL_EBUSY when the call's write queue is full\n"
    " * (retry from <m>_writable). */\n";

static const char kHeaderReplyUnary[] =
    "\n"
    "/* Ends a $name$ call with the response `resp` and status OK. */\n"
    "sl_status sl_$svc$_$m$_reply(sl_rpc_call *call, const $Resp$ *resp);\n";

static const char kHeaderReplyStream[] =
    "\n"
    "/* Ends a $name$ call: sends `resp` if not NULL, after every queued\n"
    " * write, then status OK. */\n"
    "sl_status sl_$svc$_$m$_reply(sl_rpc_call *call, const $Resp$ *resp);\n"
    "/* Queues one $name$ response. */\n"
    "sl_status sl_$svc$_$m$_write(sl_rpc_call *call, const $Resp$ *msg);\n";

static const char kHeaderClientTop[] =
    "\n"
    "/* ---- $Svc$: client side ----\n"
    " *\n"
    " * Any thread may call these. `opts` may be NULL: unary calls then get a\n"
    " * 10 s deadline, streams none. On failure `err` holds the server's status\n"
    " * details or a local reason. Streams: one sender and one receiver thread\n"
    " * at a time; _send blocks while flow control holds the message back, up\n"
    " * to timeout_ms (<= 0: no limit); _recv gives SL_OK with a heap message,\n"
    " * or SL_OK with NULL once the server ended the stream with OK, or the\n"
    " * stream's final status, or SL_ETIMEDOUT after timeout_ms (> 0) with the\n"
    " * stream still usable. Half-close with sl_rpc_stream_close_send(); free\n"
    " * with sl_rpc_stream_destroy() (it cancels a stream still open).\n"
    " * Async streams (_astream_open, _asend): callbacks on opts->serial, no\n"
    " * thread per stream; see common/rpc_astream.h for the rest of their API.\n"
    " */\n";

static const char kHeaderUnary[] =
    "\n"
    "/* Calls $name$ and waits. On SL_OK *resp is a heap message, else NULL. */\n"
    "sl_status sl_$svc$_$m$(sl_rpc_channel *ch, const $Req$ *req,\n"
    "    $Resp$ **resp, const sl_rpc_call_opts *opts, sl_err *err);\n"
    "/* Starts $name$ and returns at once. `cb` runs on the channel's thread\n"
    " * with the $Resp$ (transferred; NULL unless st == SL_OK). */\n"
    "sl_status sl_$svc$_$m$_async(sl_rpc_channel *ch, const $Req$ *req,\n"
    "    const sl_rpc_call_opts *opts, sl_rpc_unary_cb cb, void *arg, sl_err *err);\n";

static const char kHeaderOpenOne[] =
    "\n"
    "/* Opens a $name$ stream with its one request. */\n"
    "sl_status sl_$svc$_$m$_open(sl_rpc_channel *ch, const $Req$ *req,\n"
    "    const sl_rpc_call_opts *opts, sl_rpc_stream **out, sl_err *err);\n";

static const char kHeaderOpenMany[] =
    "\n"
    "/* Opens a $name$ stream; its requests follow with _send. */\n"
    "sl_status sl_$svc$_$m$_open(sl_rpc_channel *ch,\n"
    "    const sl_rpc_call_opts *opts, sl_rpc_stream **out, sl_err *err);\n"
    "/* Sends one $name$ request. */\n"
    "sl_status sl_$svc$_$m$_send(sl_rpc_stream *s, const $Req$ *msg,\n"
    "    int timeout_ms, sl_err *err);\n";

static const char kHeaderAOpenOne[] =
    "/* Opens an async $name$ stream with its one request; h->on_message gets\n"
    " * $Resp$ messages (see common/rpc_astream.h). */\n"
    "sl_status sl_$svc$_$m$_astream_open(sl_rpc_channel *ch, const $Req$ *req,\n"
    "    const sl_rpc_call_opts *opts, const sl_rpc_astream_handler *h, void *arg,\n"
    "    sl_rpc_astream **out, sl_err *err);\n";

static const char kHeaderAOpenMany[] =
    "/* Opens an async $name$ stream; requests follow with _asend, and\n"
    " * h->on_message gets $Resp$ messages (see common/rpc_astream.h). */\n"
    "sl_status sl_$svc$_$m$_astream_open(sl_rpc_channel *ch,\n"
    "    const sl_rpc_call_opts *opts, const sl_rpc_astream_handler *h, void *arg,\n"
    "    sl_rpc_astream **out, sl_err *err);\n"
    "/* Queues one $name$ request (sl_rpc_astream_send). */\n"
    "sl_status sl_$svc$_$m$_asend(sl_rpc_astream *s, const $Req$ *msg);\n";

static const char kHeaderRecv[] =
    "/* Receives $recv_what$. */\n"
    "sl_status sl_$svc$_$m$_recv(sl_rpc_stream *s, $Resp$ **msg,\n"
    "    int timeout_ms, sl_err *err);\n";

static const char kHeaderBottom[] =
    "\n"
    "#endif /* $guard$ */\n";

/* The method table's macros, each under the method's path, shape and
 * .proto comment. */
static void header_macros(gen *g, const service_proto *s, size_t s_index,
                          sl_emit_vars *mv) {
  int32_t path[4] = {FILE_SERVICE_FIELD, (int32_t)s_index, SERVICE_METHOD_FIELD, 0};
  for (size_t i = 0; i < s->n_method; i++) {
    char *title = sl_emit_strf("/%s (%s)", var(&mv[i], "what"), var(&mv[i], "kind_text"));
    path[3] = (int32_t)i;
    emit_commented(&g->h, title, g->file, path, 4);
    free(title);
    sl_emit_tmpl(&g->h, &mv[i], kHeaderMacro);
  }
}

static void header_service(gen *g, const service_proto *s, size_t s_index,
                           sl_emit_vars *sv, sl_emit_vars *mv) {
  sl_emit *e = &g->h;
  char *title = sl_emit_strf("==== service %s ====", var(sv, "full"));
  int32_t path[2] = {FILE_SERVICE_FIELD, (int32_t)s_index};
  sl_emit_char(e, '\n');
  emit_commented(e, title, g->file, path, 2);
  free(title);
  sl_emit_tmpl(e, sv, kHeaderTable);
  header_macros(g, s, s_index, mv);

  sl_emit_tmpl(e, sv, kHeaderHandlersTop);
  for (size_t i = 0; i < s->n_method; i++) {
    shape sh = method_shape(s->method[i]);
    sl_emit_tmpl(e, &mv[i], streams_requests(sh) ? kFieldStreamed : kFieldSingle);
    sl_emit_tmpl(e, &mv[i], kFieldCommon);
  }
  sl_emit_tmpl(e, sv, kHeaderRegister);
  for (size_t i = 0; i < s->n_method; i++) {
    shape sh = method_shape(s->method[i]);
    sl_emit_tmpl(e, &mv[i], streams_responses(sh) ? kHeaderReplyStream : kHeaderReplyUnary);
  }

  sl_emit_tmpl(e, sv, kHeaderClientTop);
  for (size_t i = 0; i < s->n_method; i++) {
    shape sh = method_shape(s->method[i]);
    if (sh == UNARY) {
      sl_emit_tmpl(e, &mv[i], kHeaderUnary);
      continue;
    }
    sl_emit_vars_set(&mv[i], "recv_what",
                     sh == CLIENT_STREAM ? "the %s response, then the end of the stream"
                                         : "the next %s response",
                     var(&mv[i], "name"));
    sl_emit_tmpl(e, &mv[i], sh == SERVER_STREAM ? kHeaderOpenOne : kHeaderOpenMany);
    sl_emit_tmpl(e, &mv[i], kHeaderRecv);
    sl_emit_tmpl(e, &mv[i], sh == SERVER_STREAM ? kHeaderAOpenOne : kHeaderAOpenMany);
  }
}

/* ---- source ---- */

static const char kSourceTop[] =
    "/* Generated by protoc-gen-slrpc from $proto$. DO NOT EDIT. */\n"
    "#include \"$base$.slrpc.h\"\n";

static const char kSourceIncludes[] =
    "\n"
    "#include <stddef.h>\n"
    "#include <string.h>\n"
    "\n"
    "#include \"common/slrpc_support.h\"\n";

static const char kSourceTable[] =
    "\n"
    "/* ==== service $full$ ==== */\n"
    "\n"
    "const sl_rpc_method sl_$svc$_methods[$n$] = {\n";

static const char kSourceTableRow[] =
    "    {\"/$what$\", $kind$, &$ReqDesc$,\n"
    "     &$RespDesc$},\n";

static const char kSourceService[] =
    "};\n"
    "\n"
    "const sl_rpc_service sl_$svc$ = {\"$full$\", $n$, sl_$svc$_methods};\n"
    "\n"
    "/* The runtime's ctx for every method: the typed handlers and the user's\n"
    " * ctx, in server-lifetime memory (sl_rpc_server_alloc). */\n"
    "typedef struct $svc$_binding {\n"
    "  sl_$svc$_handlers h;\n"
    "  void *ctx;\n"
    "} $svc$_binding;\n";

static const char kOnStartSingle[] =
    "\n"
    "static void $svc$__$m$_on_start(sl_rpc_call *call, const ProtobufCMessage *req,\n"
    "    void *ctx) {\n"
    "  const $svc$_binding *b = ctx;\n"
    "  if (b->h.$m$ == NULL) {\n"
    "    sl_slrpc_unimplemented(call);\n"
    "    return;\n"
    "  }\n"
    "  SL_ASSERT(req != NULL && req->descriptor == &$ReqDesc$);\n"
    "  b->h.$m$(call, (const $Req$ *)req, b->ctx);\n"
    "}\n";

static const char kOnStartStreamed[] =
    "\n"
    "static void $svc$__$m$_on_start(sl_rpc_call *call, const ProtobufCMessage *req,\n"
    "    void *ctx) {\n"
    "  const $svc$_binding *b = ctx;\n"
    "  (void)req; /* requests come through on_message */\n"
    "  if (b->h.$m$_message == NULL) {\n"
    "    sl_slrpc_unimplemented(call);\n"
    "    return;\n"
    "  }\n"
    "  if (b->h.$m$_start != NULL) b->h.$m$_start(call, b->ctx);\n"
    "}\n"
    "\n"
    "static void $svc$__$m$_on_message(sl_rpc_call *call, const ProtobufCMessage *msg,\n"
    "    void *ctx) {\n"
    "  const $svc$_binding *b = ctx;\n"
    "  if (b->h.$m$_message == NULL) return; /* answered UNIMPLEMENTED on start */\n"
    "  SL_ASSERT(msg == NULL || msg->descriptor == &$ReqDesc$);\n"
    "  b->h.$m$_message(call, (const $Req$ *)msg, b->ctx);\n"
    "}\n";

static const char kOnWritableDone[] =
    "\n"
    "static void $svc$__$m$_on_writable(sl_rpc_call *call, void *ctx) {\n"
    "  const $svc$_binding *b = ctx;\n"
    "  if (b->h.$m$_writable != NULL) b->h.$m$_writable(call, b->ctx);\n"
    "}\n"
    "\n"
    "static void $svc$__$m$_on_done(sl_rpc_call *call, bool cancelled, void *ctx) {\n"
    "  const $svc$_binding *b = ctx;\n"
    "  if (b->h.$m$_done != NULL) b->h.$m$_done(call, cancelled, b->ctx);\n"
    "}\n";

static const char kTrampolinesTop[] =
    "\n"
    "/* The runtime's callbacks per method, in table order (ctx set on register). */\n"
    "static const sl_rpc_handler $svc$_trampolines[$n$] = {\n";

static const char kTrampolinesRow[] =
    "    {$svc$__$m$_on_start, $on_message$, $svc$__$m$_on_writable,\n"
    "     $svc$__$m$_on_done, NULL},\n";

static const char kSourceRegister[] =
    "};\n"
    "\n"
    "sl_status sl_$svc$_register(sl_rpc_server *srv, const sl_$svc$_handlers *h,\n"
    "                            void *ctx, sl_err *err) {\n"
    "  if (srv == NULL || h == NULL)\n"
    "    return sl_err_set(err, SL_EINVAL, \"$full$: register needs a server and handlers\");\n"
    "  $svc$_binding *bound = sl_rpc_server_alloc(srv, sizeof(*bound));\n"
    "  bound->h = *h;\n"
    "  bound->ctx = ctx;\n"
    "  for (size_t i = 0; i < $n$; i++) {\n"
    "    sl_rpc_handler handler = $svc$_trampolines[i];\n"
    "    handler.ctx = bound;\n"
    "    sl_status st = sl_rpc_server_add_method(srv, &sl_$svc$_methods[i], &handler, err);\n"
    "    if (st != SL_OK) return st;\n"
    "  }\n"
    "  return SL_OK;\n"
    "}\n";

static const char kSourceReply[] =
    "\n"
    "sl_status sl_$svc$_$m$_reply(sl_rpc_call *call, const $Resp$ *resp) {\n"
    "  return sl_rpc_call_finish(call, SL_OK, NULL, (const ProtobufCMessage *)resp);\n"
    "}\n";

static const char kSourceWrite[] =
    "\n"
    "sl_status sl_$svc$_$m$_write(sl_rpc_call *call, const $Resp$ *msg) {\n"
    "  return sl_rpc_call_send(call, (const ProtobufCMessage *)msg);\n"
    "}\n";

static const char kSourceUnary[] =
    "\n"
    "sl_status sl_$svc$_$m$(sl_rpc_channel *ch, const $Req$ *req,\n"
    "    $Resp$ **resp, const sl_rpc_call_opts *opts, sl_err *err) {\n"
    "  if (resp == NULL) return sl_err_set(err, SL_EINVAL, \"$what$: resp is NULL\");\n"
    "  ProtobufCMessage *msg = NULL;\n"
    "  sl_status st = sl_rpc_unary(ch, SL_$SVC$_$M$, (const ProtobufCMessage *)req,\n"
    "                              &msg, opts, err);\n"
    "  *resp = ($Resp$ *)msg;\n"
    "  return st;\n"
    "}\n"
    "\n"
    "sl_status sl_$svc$_$m$_async(sl_rpc_channel *ch, const $Req$ *req,\n"
    "    const sl_rpc_call_opts *opts, sl_rpc_unary_cb cb, void *arg, sl_err *err) {\n"
    "  return sl_rpc_unary_async(ch, SL_$SVC$_$M$, (const ProtobufCMessage *)req,\n"
    "                            opts, cb, arg, err);\n"
    "}\n";

static const char kSourceOpenOne[] =
    "\n"
    "sl_status sl_$svc$_$m$_open(sl_rpc_channel *ch, const $Req$ *req,\n"
    "    const sl_rpc_call_opts *opts, sl_rpc_stream **out, sl_err *err) {\n"
    "  return sl_rpc_stream_open(ch, SL_$SVC$_$M$, (const ProtobufCMessage *)req,\n"
    "                            opts, out, err);\n"
    "}\n";

static const char kSourceOpenMany[] =
    "\n"
    "sl_status sl_$svc$_$m$_open(sl_rpc_channel *ch,\n"
    "    const sl_rpc_call_opts *opts, sl_rpc_stream **out, sl_err *err) {\n"
    "  return sl_rpc_stream_open(ch, SL_$SVC$_$M$, NULL, opts, out, err);\n"
    "}\n"
    "\n"
    "sl_status sl_$svc$_$m$_send(sl_rpc_stream *s, const $Req$ *msg,\n"
    "    int timeout_ms, sl_err *err) {\n"
    "  return sl_rpc_stream_send(s, (const ProtobufCMessage *)msg, timeout_ms, err);\n"
    "}\n";

static const char kSourceRecv[] =
    "\n"
    "sl_status sl_$svc$_$m$_recv(sl_rpc_stream *s, $Resp$ **msg,\n"
    "    int timeout_ms, sl_err *err) {\n"
    "  if (msg == NULL) return sl_err_set(err, SL_EINVAL, \"$what$: msg is NULL\");\n"
    "  ProtobufCMessage *m = NULL;\n"
    "  sl_status st = sl_rpc_stream_recv(s, &m, timeout_ms, err);\n"
    "  *msg = ($Resp$ *)m;\n"
    "  return st;\n"
    "}\n";

static const char kSourceAOpenOne[] =
    "\n"
    "sl_status sl_$svc$_$m$_astream_open(sl_rpc_channel *ch, const $Req$ *req,\n"
    "    const sl_rpc_call_opts *opts, const sl_rpc_astream_handler *h, void *arg,\n"
    "    sl_rpc_astream **out, sl_err *err) {\n"
    "  return sl_rpc_astream_open(ch, SL_$SVC$_$M$, (const ProtobufCMessage *)req,\n"
    "                             opts, h, arg, out, err);\n"
    "}\n";

static const char kSourceAOpenMany[] =
    "\n"
    "sl_status sl_$svc$_$m$_astream_open(sl_rpc_channel *ch,\n"
    "    const sl_rpc_call_opts *opts, const sl_rpc_astream_handler *h, void *arg,\n"
    "    sl_rpc_astream **out, sl_err *err) {\n"
    "  return sl_rpc_astream_open(ch, SL_$SVC$_$M$, NULL, opts, h, arg, out, err);\n"
    "}\n"
    "\n"
    "sl_status sl_$svc$_$m$_asend(sl_rpc_astream *s, const $Req$ *msg) {\n"
    "  return sl_rpc_astream_send(s, (const ProtobufCMessage *)msg);\n"
    "}\n";

static void source_service(gen *g, const service_proto *s, const sl_emit_vars *sv,
                           sl_emit_vars *mv) {
  sl_emit *e = &g->c;
  sl_emit_tmpl(e, sv, kSourceTable);
  for (size_t i = 0; i < s->n_method; i++) sl_emit_tmpl(e, &mv[i], kSourceTableRow);
  sl_emit_tmpl(e, sv, kSourceService);

  for (size_t i = 0; i < s->n_method; i++) {
    shape sh = method_shape(s->method[i]);
    sl_emit_tmpl(e, &mv[i], streams_requests(sh) ? kOnStartStreamed : kOnStartSingle);
    sl_emit_tmpl(e, &mv[i], kOnWritableDone);
    if (streams_requests(sh))
      sl_emit_vars_set(&mv[i], "on_message", "%s__%s_on_message", var(sv, "svc"),
                       var(&mv[i], "m"));
    else
      sl_emit_vars_set(&mv[i], "on_message", "NULL");
  }
  sl_emit_tmpl(e, sv, kTrampolinesTop);
  for (size_t i = 0; i < s->n_method; i++) sl_emit_tmpl(e, &mv[i], kTrampolinesRow);
  sl_emit_tmpl(e, sv, kSourceRegister);

  for (size_t i = 0; i < s->n_method; i++) {
    shape sh = method_shape(s->method[i]);
    sl_emit_tmpl(e, &mv[i], kSourceReply);
    if (streams_responses(sh)) sl_emit_tmpl(e, &mv[i], kSourceWrite);
    if (sh == UNARY) {
      sl_emit_tmpl(e, &mv[i], kSourceUnary);
      continue;
    }
    sl_emit_tmpl(e, &mv[i], sh == SERVER_STREAM ? kSourceOpenOne : kSourceOpenMany);
    sl_emit_tmpl(e, &mv[i], kSourceRecv);
    sl_emit_tmpl(e, &mv[i], sh == SERVER_STREAM ? kSourceAOpenOne : kSourceAOpenMany);
  }
}

/* ---- one service, one file ---- */

/* Names, checks and emits service `index` of the file. Every method's
 * variables start as a copy of the service's. */
static sl_status gen_service(gen *g, size_t index, const sl_emit_vars *file_vars) {
  const service_proto *s = g->file->service[index];
  sl_emit_vars sv = SL_EMIT_VARS_INIT;
  claims fields = {0};
  /* Zeroed: releasing a variable set that was never filled is a no-op. */
  sl_emit_vars *mv = sl_xcalloc(s->n_method ? s->n_method : 1, sizeof(*mv));

  sl_emit_vars_copy(&sv, file_vars);
  sl_status st = plan_service(g, s, &sv);
  if (st != SL_OK) goto out;
  if (s->n_method == 0) { /* C has no empty arrays or structs */
    sl_emit_tmpl(&g->h, &sv, "\n/* service $full$ has no methods: nothing generated */\n");
    goto out;
  }
  for (size_t i = 0; i < s->n_method && st == SL_OK; i++) {
    sl_emit_vars_copy(&mv[i], &sv);
    st = plan_method(g, &sv, s->method[i], i, &fields, &mv[i]);
  }
  if (st != SL_OK) goto out;
  header_service(g, s, index, &sv, mv);
  source_service(g, s, &sv, mv);

out:
  for (size_t i = 0; i < s->n_method; i++) sl_emit_vars_release(&mv[i]);
  free(mv);
  claims_release(&fields);
  sl_emit_vars_release(&sv);
  return st;
}

static const file_proto *find_file(const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                                   const char *name) {
  for (size_t i = 0; i < req->n_proto_file; i++)
    if (req->proto_file[i]->name != NULL && strcmp(req->proto_file[i]->name, name) == 0)
      return req->proto_file[i];
  return NULL;
}

/* c_package anywhere in the request may rename a type this file uses. */
static sl_status check_c_package(gen *g) {
  for (size_t i = 0; i < g->req->n_proto_file; i++) {
    const file_proto *f = g->req->proto_file[i];
    if (sets_c_package(f))
      return sl_err_set(g->err, SL_EINVAL,
                        "%s: protoc-c's c_package option (set in %s) is not "
                        "supported by protoc-gen-slrpc",
                        g->file->name, f->name ? f->name : "?");
  }
  return SL_OK;
}

sl_status sl_gen_file(const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                      const char *file_name, sl_gen_output *out, sl_err *err) {
  memset(out, 0, sizeof(*out));
  gen g = {.req = req, .file = find_file(req, file_name), .err = err};
  if (g.file == NULL)
    return sl_err_set(err, SL_EINVAL, "%s: not among the request's proto files", file_name);

  sl_emit_vars fv = SL_EMIT_VARS_INIT;
  sl_emit_vars_set(&fv, "proto", "%s", file_name);
  sl_emit_vars_own(&fv, "base", file_base(file_name));
  char *header_name = sl_emit_strf("%s.slrpc.h", var(&fv, "base"));
  sl_emit_vars_own(&fv, "guard", sl_names_guard(header_name));

  sl_status st = check_c_package(&g);
  if (st != SL_OK) goto out;
  sl_emit_tmpl(&g.h, &fv, kHeaderTop);
  sl_emit_tmpl(&g.c, &fv, kSourceTop);
  if (g.file->n_service > 0) {
    sl_emit_tmpl(&g.h, &fv, kHeaderIncludes);
    sl_emit_tmpl(&g.c, &fv, kSourceIncludes);
  } else {
    sl_emit_tmpl(&g.h, &fv, kHeaderNoService);
    sl_emit_tmpl(&g.c, &fv, "\n/* $proto$ defines no service. */\n");
  }
  for (size_t i = 0; i < g.file->n_service && st == SL_OK; i++)
    st = gen_service(&g, i, &fv);
  if (st != SL_OK) goto out;
  sl_emit_tmpl(&g.h, &fv, kHeaderBottom);

  out->header_name = header_name;
  header_name = NULL;
  out->header = sl_emit_take(&g.h);
  out->source_name = sl_emit_strf("%s.slrpc.c", var(&fv, "base"));
  out->source = sl_emit_take(&g.c);

out:
  free(header_name);
  sl_emit_vars_release(&fv);
  sl_emit_release(&g.h);
  sl_emit_release(&g.c);
  claims_release(&g.globals);
  return st;
}

void sl_gen_output_release(sl_gen_output *out) {
  free(out->header_name);
  free(out->header);
  free(out->source_name);
  free(out->source);
  memset(out, 0, sizeof(*out));
}
