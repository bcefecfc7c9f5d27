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
    """Compiles our .proto files and the health proto with protoc, and the
    BrokerService stub with grpc_tools (Debian's python3-grpc-tools)."""
    protos = [runfile("proto/" + p) for p in
              ("common.proto", "metadata.proto", "bookie.proto", "broker.proto")]
    health = runfile("common/health.proto")
    for inc, files in ((os.path.dirname(protos[0]), protos),
                       (os.path.dirname(health), [health])):
        subprocess.run(["/usr/bin/protoc", "-I" + inc, "--python_out=" + out_dir]
                       + files, check=True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc",
                    "-I" + os.path.dirname(protos[0]), "--grpc_python_out=" + out_dir,
                    runfile("proto/broker.proto")], check=True)
    sys.path.insert(0, out_dir)


class Cluster:
    """sluice-cluster (the one harness) with etcd-free local metadata."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [runfile("tests/sluice-cluster"), "--local", "--metadata", "1",
             "--bookies", "1", "--brokers", "1"],
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

    def test_interop__broker_admin_and_lookup(self):
        import broker_pb2
        import broker_pb2_grpc
        import metadata_pb2
        with self.channel("broker") as ch:
            stub = broker_pb2_grpc.BrokerServiceStub(ch)
            made = stub.CreateTopic(
                metadata_pb2.CreateTopicRequest(name="public/py", partitions=2), timeout=5)
            self.assertEqual(made.partitions, 2)
            names = [t.name for t in stub.ListTopics(
                metadata_pb2.ListTopicsRequest(namespace="public"), timeout=5).topics]
            self.assertIn("public/py", names)
            resp = stub.Lookup(broker_pb2.LookupRequest(topic="public/py"), timeout=5)
            self.assertEqual(resp.partitions, 2)
            self.assertEqual([o.partition for o in resp.owners],
                             ["public/py-partition-0", "public/py-partition-1"])
            for owner in resp.owners:
                # One broker: it owns everything, so no redirect.
                self.assertEqual(owner.broker_address, self.cluster.addrs["broker"])
                self.assertGreater(owner.epoch, 0)
                self.assertFalse(owner.HasField("redirect"))
            st = stub.ClusterStatus(broker_pb2.ClusterStatusRequest(), timeout=5)
            self.assertEqual(len(st.brokers), 1)
            self.assertEqual(len(st.bookies), 1)
            owned = {p.partition: p.broker_id for p in st.partitions}
            self.assertEqual(owned["public/py-partition-1"], st.brokers[0].id)
            stats = stub.GetTopicStats(
                broker_pb2.TopicStatsRequest(topic="public/py-partition-0"), timeout=5)
            self.assertEqual(stats.owner_epoch, resp.owners[0].epoch)
            unloaded = stub.Unload(
                broker_pb2.UnloadRequest(topic="public/py-partition-0"), timeout=5)
            self.assertEqual(unloaded.released_epoch, resp.owners[0].epoch)
            for bad, code in (("bad name!", grpc.StatusCode.INVALID_ARGUMENT),
                              ("public/missing", grpc.StatusCode.NOT_FOUND)):
                with self.assertRaises(grpc.RpcError) as ctx:
                    stub.Lookup(broker_pb2.LookupRequest(topic=bad), timeout=5)
                self.assertEqual(ctx.exception.code(), code)

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
