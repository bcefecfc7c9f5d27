"""Produce from a stock gRPC client: Debian's python3-grpcio with messages
from `protoc --python_out` and nothing Sluice-specific beyond proto/ looks a
topic up, produces single sends and a client-side batch, and gets receipts
with increasing message ids; a send before open ends the stream with
FAILED_PRECONDITION. Cluster from sluice-cluster (the one harness). Run with
/usr/bin/python3."""
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
    protos = [runfile("proto/" + p) for p in
              ("common.proto", "metadata.proto", "bookie.proto", "broker.proto",
               "entry.proto")]
    subprocess.run(["/usr/bin/protoc", "-I" + os.path.dirname(protos[0]),
                    "--python_out=" + out_dir] + protos, check=True)
    sys.path.insert(0, out_dir)


class Cluster:
    def __init__(self):
        self.proc = subprocess.Popen(
            [runfile("tests/sluice-cluster"), "--local", "--bookies", "3",
             "--brokers", "1"],
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


class ProduceInteropTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        generate_messages(cls.tmp.name)
        cls.cluster = Cluster()
        import metadata_pb2
        with grpc.insecure_channel(cls.cluster.addrs["metadata"]) as ch:
            ch.unary_unary(
                "/sluice.v1.MetadataService/CreateNamespace",
                request_serializer=metadata_pb2.CreateNamespaceRequest.SerializeToString,
                response_deserializer=metadata_pb2.Namespace.FromString)(
                    metadata_pb2.CreateNamespaceRequest(
                        name="py", policies=metadata_pb2.NamespacePolicies(
                            deduplication=True)), timeout=10)
            ch.unary_unary(
                "/sluice.v1.MetadataService/CreateTopic",
                request_serializer=metadata_pb2.CreateTopicRequest.SerializeToString,
                response_deserializer=metadata_pb2.TopicInfo.FromString)(
                    metadata_pb2.CreateTopicRequest(name="py/orders"), timeout=10)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        cls.tmp.cleanup()

    def produce(self, ch):
        import broker_pb2
        return ch.stream_stream(
            "/sluice.v1.BrokerService/Produce",
            request_serializer=broker_pb2.ProduceRequest.SerializeToString,
            response_deserializer=broker_pb2.ProduceResponse.FromString)

    def test_produce_interop__lookup_produce_receipts(self):
        import broker_pb2
        with grpc.insecure_channel(self.cluster.addrs["broker"]) as ch:
            lookup = ch.unary_unary(
                "/sluice.v1.BrokerService/Lookup",
                request_serializer=broker_pb2.LookupRequest.SerializeToString,
                response_deserializer=broker_pb2.LookupResponse.FromString)
            owner = lookup(broker_pb2.LookupRequest(topic="py/orders"), timeout=10)
            address = owner.owners[0].broker_address
        with grpc.insecure_channel(address) as ch:
            def requests():
                yield broker_pb2.ProduceRequest(open=broker_pb2.ProducerOpen(
                    topic="py/orders", producer_name="py-1"))
                for seq in range(3):
                    yield broker_pb2.ProduceRequest(send=broker_pb2.SendRequest(
                        sequence_id=seq, payload=b"hello %d" % seq, key="k"))
                yield broker_pb2.ProduceRequest(batch=broker_pb2.SendBatch(messages=[
                    broker_pb2.SendRequest(sequence_id=seq, payload=b"x" * 100)
                    for seq in range(3, 8)]))
            answers = list(self.produce(ch)(requests(), timeout=30))
        self.assertEqual(answers[0].WhichOneof("kind"), "opened")
        self.assertEqual(answers[0].opened.producer_name, "py-1")
        self.assertEqual(answers[0].opened.last_sequence_id, -1)
        ids = []
        for a in answers[1:]:
            self.assertEqual(a.WhichOneof("kind"), "receipt")
            r = a.receipt
            self.assertEqual(r.status, 0, r.error)
            for i in range(max(r.count, 1)):
                ids.append((r.id.ledger_id, r.id.entry_id, r.id.batch_index + i))
        self.assertEqual(len(ids), 8)
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), 8)

    def test_produce_interop__send_before_open(self):
        import broker_pb2
        with grpc.insecure_channel(self.cluster.addrs["broker"]) as ch:
            req = [broker_pb2.ProduceRequest(send=broker_pb2.SendRequest(sequence_id=1))]
            with self.assertRaises(grpc.RpcError) as ctx:
                list(self.produce(ch)(iter(req), timeout=10))
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("before open", ctx.exception.details())


if __name__ == "__main__":
    unittest.main(verbosity=2)
