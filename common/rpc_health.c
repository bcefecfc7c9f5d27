/* grpc.health.v1.Health method tables, written by hand so that the runtime
 * does not depend on the protoc plugin. */
#include "common/rpc_health.h"

const sl_rpc_method sl_rpc_health_check = {
    "/grpc.health.v1.Health/Check", SL_RPC_UNARY,
    &grpc__health__v1__health_check_request__descriptor,
    &grpc__health__v1__health_check_response__descriptor};

const sl_rpc_method sl_rpc_health_watch = {
    "/grpc.health.v1.Health/Watch", SL_RPC_SERVER_STREAMING,
    &grpc__health__v1__health_check_request__descriptor,
    &grpc__health__v1__health_check_response__descriptor};

static const sl_rpc_method methods[2] = {
    {"/grpc.health.v1.Health/Check", SL_RPC_UNARY,
     &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor},
    {"/grpc.health.v1.Health/Watch", SL_RPC_SERVER_STREAMING,
     &grpc__health__v1__health_check_request__descriptor,
     &grpc__health__v1__health_check_response__descriptor},
};

const sl_rpc_service sl_rpc_health_service = {"grpc.health.v1.Health", 2, methods};
