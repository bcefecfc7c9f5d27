#!/bin/sh
# Debian's python3-grpcio is only visible to /usr/bin/python3.
exec /usr/bin/python3 "$TEST_SRCDIR/sluice/tests/produce_interop_test.py"
