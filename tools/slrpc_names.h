/*
 * C identifiers for proto names, the way protoc-c spells them, plus the few
 * spellings of our own that protoc-gen-slrpc adds on top.
 *
 * protoc-c's rules (protobuf-c 1.4.1, c_helpers.cc), checked against its
 * output on names with digits and runs of capitals:
 *   - a full name is split at '.', each piece is converted on its own and the
 *     pieces are joined with "__";
 *   - type names (ToCamel): drop every '_' and upper-case the letter after
 *     it and the first letter; everything else is kept:
 *       "sluice.test_pkg.HTTP2Thing" -> "Sluice__TestPkg__HTTP2Thing";
 *   - lower names (CamelToLower): lower-case every capital and put '_' before
 *     a capital whose previous character was not a capital (never at the
 *     start): "HTTP2Thing" -> "http2_thing", "InnerMSG" -> "inner_msg",
 *     "X1y2Z" -> "x1y2_z", "Foo_Bar" -> "foo__bar".
 * protoc-c's `c_package` file option changes these names; the generator
 * refuses files that set it (see slrpc_gen.c).
 *
 * Every function returns a new heap string the caller frees (aborts on out
 * of memory: this is a build tool).
 */
#ifndef SL_TOOLS_SLRPC_NAMES_H
#define SL_TOOLS_SLRPC_NAMES_H

/* protoc-c's CamelToLower of one name piece: "GetInfo" -> "get_info". */
char *sl_names_lower(const char *piece);

/* The same, upper-cased: "GetInfo" -> "GET_INFO". */
char *sl_names_upper(const char *piece);

/* protoc-c's C type for a full name; a leading '.' is ignored:
 * ".sluice.v1.GetInfoRequest" -> "Sluice__V1__GetInfoRequest". */
char *sl_names_c_type(const char *full_name);

/* protoc-c's message descriptor variable for a full name:
 * ".sluice.v1.GetInfoRequest" -> "sluice__v1__get_info_request__descriptor". */
char *sl_names_descriptor(const char *full_name);

/* An include guard for a generated file name:
 * "sub/a.slrpc.h" -> "SL_SLRPC_SUB_A_SLRPC_H". */
char *sl_names_guard(const char *file_name);

#endif
