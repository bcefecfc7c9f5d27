"""Interop: a stock gRPC client nobody here wrote (Debian's python3-grpcio,
with messages from `protoc --python_out`) talks to Sluice binaries started by
the cluster harness (sluice-cluster). Run with /usr/bin/python3."""
import os
import re
import signal
import subprocess
import sys
import tempfile
import unittest

import grpc


def runfile(path):
    base = os.environ.get("TEST_SRCDIR")
    return os.path.join(base, "sluice", path) if base else path


def generate_messages(out_dir):
    """Compiles our .proto files and the health proto with protoc."""
    protos = [runfile("proto/" + p) for p in
              ("common.proto", "metadata.proto", "bookie.proto", "broker.proto")]
    health = runfile("common/health.proto")
    for inc, files in ((os.path.dirname(protos[0]), protos),
                       (os.path.dirname(health), [health])):
        subprocess.run(["/usr/bin/protoc", "-I" + inc, "--python_out=" + out_dir]
                       + files, check=True)
    sys.path.insert(0, out_dir)


class Cluster:
    """sluice-cluster (the one harness) with etcd-free local metadata."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [runfile("tests/sluice-cluster"), "--local", "--bookies", "1",
             "--brokers", "0"],
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.addrs = {}
        for line in self.proc.stdout:
            m = re.match(r"\s+(metadata|bookie|broker)\s+(\S+)\s+SERVING", line)
            if m:
                self.addrs.setdefault(m.group(1), m.group(2))
            if line.startswith("running"):
                return
        raise RuntimeError("sluice-cluster exited before it was ready")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


class InteropTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        generate_messages(cls.tmp.name)
        cls.cluster = Cluster()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        cls.tmp.cleanup()

    def channel(self, kind):
        return grpc.insecure_channel(self.cluster.addrs[kind])

    def test_interop__health_check(self):
        import health_pb2
        for kind in ("metadata", "bookie"):
            with self.channel(kind) as ch:
                check = ch.unary_unary(
                    "/grpc.health.v1.Health/Check",
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString)
                resp = check(health_pb2.HealthCheckRequest(), timeout=5)
                self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING)
                with self.assertRaises(grpc.RpcError) as ctx:
                    check(health_pb2.HealthCheckRequest(service="no.such.Service"),
                          timeout=5)
                self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_interop__metadata_namespace_roundtrip(self):
        import metadata_pb2
        with self.channel("metadata") as ch:
            create = ch.unary_unary(
                "/sluice.v1.MetadataService/CreateNamespace",
                request_serializer=metadata_pb2.CreateNamespaceRequest.SerializeToString,
                response_deserializer=metadata_pb2.Namespace.FromString)
            get = ch.unary_unary(
                "/sluice.v1.MetadataService/GetNamespace",
                request_serializer=metadata_pb2.GetNamespaceRequest.SerializeToString,
                response_deserializer=metadata_pb2.Namespace.FromString)
            pol = metadata_pb2.NamespacePolicies(ensemble_size=3, write_quorum=2,
                                                 ack_quorum=2, deduplication=True)
            made = create(metadata_pb2.CreateNamespaceRequest(name="interop",
                                                              policies=pol),
                          timeout=5)
            self.assertEqual(made.name, "interop")
            got = get(metadata_pb2.GetNamespaceRequest(name="interop"), timeout=5)
            self.assertEqual(got.policies.write_quorum, 2)
            self.assertTrue(got.policies.deduplication)
            with self.assertRaises(grpc.RpcError) as ctx:
                create(metadata_pb2.CreateNamespaceRequest(name="bad name!"), timeout=5)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_interop__unknown_method_unimplemented(self):
        with self.channel("bookie") as ch:
            call = ch.unary_unary("/sluice.v1.NoSuchService/Nope",
                                  request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
            with self.assertRaises(grpc.RpcError) as ctx:
                call(b"", timeout=5)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNIMPLEMENTED)


if __name__ == "__main__":
    unittest.main(verbosity=2)
