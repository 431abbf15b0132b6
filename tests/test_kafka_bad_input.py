"""Proves the broker binary survives each kind of bad input with the right Kafka error code or
a closed connection, and still serves a good client (kafka-python admin + confluent-kafka
produce/consume) afterwards: oversize, negative and truncated frames, a client vanishing
mid-request, unknown API keys and versions, arrays declaring billions of elements, a corrupt
CRC, unknown topics and partitions."""

import socket
import struct

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING


def connect(broker):
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    return sock


def frame(api_key, version, correlation, body=b""):
    header = struct.pack(">hhih", api_key, version, correlation, 4) + b"test"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def closed(sock):
    try:
        return sock.recv(64) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def read_frame(sock):
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    return recv_exact(sock, size)


def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


def good_client_works(broker, topic="good"):
    """A real client still creates, produces and consumes."""
    from kafka.admin import KafkaAdminClient, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    if topic not in admin.list_topics():
        admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce(topic, value=b"still-alive")
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    values = []
    for _ in range(20):
        values += [m.value() for m in consumer.consume(10, 0.5) if m.error() is None]
        if b"still-alive" in values:
            break
    consumer.close()
    assert b"still-alive" in values


def test_oversize_frame(broker):
    sock = connect(broker)
    sock.sendall(struct.pack(">i", 1 << 30))
    assert closed(sock)
    good_client_works(broker)


def test_negative_frame_size(broker):
    sock = connect(broker)
    sock.sendall(struct.pack(">i", -1))
    assert closed(sock)
    good_client_works(broker)


def test_truncated_frame_then_disconnect(broker):
    data = frame(3, 1, 7, struct.pack(">i", -1))
    for cut in (1, 3, 6, len(data) - 1):
        sock = connect(broker)
        sock.sendall(data[:cut])
        sock.close()
    good_client_works(broker)


def test_malformed_body(broker):
    sock = connect(broker)
    sock.sendall(frame(3, 1, 7, struct.pack(">i", 1000)))  # claims 1000 topics, has none
    assert closed(sock)
    good_client_works(broker)


def test_huge_declared_array_counts(broker):
    """Tiny frames whose arrays claim up to 2^31-1 elements (found by `scripts/fuzz`): the
    decoder reserves memory by the declared count before reading elements, which aborts a
    process whose allocator refuses such a reservation; the broker must close the connection
    and keep serving, many times over."""
    huge = struct.pack(">i", 0x7FFFFFFF)
    frames = [
        frame(3, 0, 1, huge),  # Metadata v0: topics
        frame(15, 0, 2, huge),  # DescribeGroups v0: groups
        frame(1, 4, 3, struct.pack(">ii", -1, 500) + huge),  # Fetch v4: topics
        frame(0, 3, 4, struct.pack(">hhi", -1, 1, 1000) + huge),  # Produce v3: topic data
    ]
    for _ in range(20):
        for f in frames:
            sock = connect(broker)
            sock.sendall(f)
            assert closed(sock)
            sock.close()
    good_client_works(broker)


def test_unknown_api_key(broker):
    sock = connect(broker)
    sock.sendall(frame(4242, 0, 1))
    assert closed(sock)
    good_client_works(broker)


def test_unknown_api_version(broker):
    sock = connect(broker)
    sock.sendall(frame(3, 77, 1))
    assert closed(sock)
    sock = connect(broker)
    sock.sendall(frame(18, 99, 5))  # ApiVersions: answered with a v0 body
    answer = read_frame(sock)
    correlation, error = struct.unpack(">ih", answer[:6])
    assert (correlation, error) == (5, 35)
    good_client_works(broker)


def test_bad_crc(broker):
    from kafka.admin import KafkaAdminClient, NewTopic
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic("crc", 1, 1)])
    admin.close()
    # A valid RecordBatch v2 (built by kafka-python) with its last byte flipped: only the
    # CRC-32C can tell.
    from kafka.record.default_records import DefaultRecordBatchBuilder
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    builder.append(0, timestamp=None, key=None, value=b"abc", headers=[])
    batch = bytearray(builder.build())
    batch[-1] ^= 0xFF
    batch = bytes(batch)
    body = struct.pack(">hhi", -1, 1, 5000)  # transactional_id null, acks 1, timeout
    body += struct.pack(">i", 1) + struct.pack(">h", 3) + b"crc"
    body += struct.pack(">i", 1) + struct.pack(">i", 0) + struct.pack(">i", len(batch)) + batch
    sock = connect(broker)
    sock.sendall(frame(0, 3, 9, body))
    answer = read_frame(sock)
    # correlation, [topic "crc", [partition 0, error_code, ...]]
    correlation, = struct.unpack(">i", answer[:4])
    error, = struct.unpack(">h", answer[4 + 4 + 2 + 3 + 4 + 4: 4 + 4 + 2 + 3 + 4 + 4 + 2])
    assert (correlation, error) == (9, 2)  # CORRUPT_MESSAGE
    good_client_works(broker)


def test_unknown_topic_and_partition(broker):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic("two", 2, 1)]).values():
        f.result(10)
    errors = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 3000})
    producer.produce("two", value=b"x", partition=5,
                     on_delivery=lambda err, msg: errors.append(err))
    producer.flush(10)
    assert errors and errors[0] is not None
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g",
                         "enable.auto.commit": False})
    metadata = consumer.list_topics("missing-topic", timeout=10)
    assert metadata.topics["missing-topic"].error.code() == 3  # UNKNOWN_TOPIC_OR_PARTITION
    consumer.close()
    good_client_works(broker)
