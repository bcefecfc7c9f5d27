"""sl_proto_library: C code for .proto files, generated at build time.

For srcs ["a.proto", "b.proto"] in package P this makes:
  <name>_pb  cc_library with protoc-c's messages (a.pb-c.h, a.pb-c.c, ...)
  <name>     cc_library with the messages plus our gRPC glue from
             //tools:protoc-gen-slrpc (a.slrpc.h, a.slrpc.c, ...), which
             depends on the shared RPC runtime.
Every import must be among srcs (all files are compiled with -I P).
Include generated headers by file name: #include "a.pb-c.h".
"""

def _swap(srcs, ext):
    return [s[:-len(".proto")] + ext for s in srcs]

def sl_proto_library(name, srcs, visibility = None, rpc = True):
    pb_outs = _swap(srcs, ".pb-c.h") + _swap(srcs, ".pb-c.c")
    native.genrule(
        name = name + "_pb_gen",
        srcs = srcs,
        outs = pb_outs,
        cmd = "protoc-c -I$$(dirname $(location %s)) --c_out=$(@D) $(SRCS)" % srcs[0],
    )
    native.cc_library(
        name = name + "_pb",
        srcs = _swap(srcs, ".pb-c.c"),
        hdrs = _swap(srcs, ".pb-c.h"),
        includes = ["."],
        linkopts = ["-lprotobuf-c"],
        visibility = visibility,
    )
    if not rpc:
        return
    rpc_outs = _swap(srcs, ".slrpc.h") + _swap(srcs, ".slrpc.c")
    native.genrule(
        name = name + "_rpc_gen",
        srcs = srcs,
        outs = rpc_outs,
        tools = ["//tools:protoc-gen-slrpc"],
        cmd = ("protoc -I$$(dirname $(location %s)) " % srcs[0]) +
              "--plugin=protoc-gen-slrpc=$(location //tools:protoc-gen-slrpc) " +
              "--slrpc_out=$(@D) $(SRCS)",
    )
    native.cc_library(
        name = name,
        srcs = _swap(srcs, ".slrpc.c"),
        hdrs = _swap(srcs, ".slrpc.h"),
        includes = ["."],
        deps = [
            ":" + name + "_pb",
            "//common:rpc_server",
            "//common:rpc_client",
            "//common:slrpc_support",
        ],
        visibility = visibility,
    )
