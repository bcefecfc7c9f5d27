/*
 * Any protobuf-c message as JSON text, from its descriptor: how the CLI and
 * the admin calls print stats, policies and cluster status. Field names as
 * in the .proto; enums by name; bytes as a UTF-8 string when printable,
 * else base16; 64-bit integers as numbers. Unset sub-messages are omitted.
 */
#ifndef SL_CLIENT_PB_JSON_H
#define SL_CLIENT_PB_JSON_H

#include <protobuf-c/protobuf-c.h>

#include "common/status.h"

/* *out is a heap string (caller frees). SL_ENOMEM is the only failure. */
sl_status sl_pb_json(const ProtobufCMessage *m, char **out, sl_err *err);

#endif
