#!/bin/sh
# Debian's python3-grpcio and grpc_tools are only visible to /usr/bin/python3.
exec /usr/bin/python3 "$TEST_SRCDIR/sluice/tests/consume_interop_test.py"
