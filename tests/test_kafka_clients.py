"""Proves confluent-kafka (librdkafka 2.16) and kafka-python each work end to end against the
broker for every compression codec (confluent-kafka also as an idempotent producer, which
needs InitProducerId and sequence checks): create a topic, produce 50,000 keyed messages, consume
them from the beginning (partitions assigned, no group), check every message arrived once
with its exact bytes and each partition's messages in produce order, and check ListOffsets
earliest/latest against what was produced."""

import collections
import time

import pytest

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
COUNT = 50_000
PARTITIONS = 3


def payload(codec, i):
    body = f"{codec}-{i:06d}-".encode()
    return body + b"p" * (100 - len(body))


def check(codec, consumed, latest_offsets, earliest_offsets):
    """consumed: list of (partition, offset, key, value) in consumption order."""
    assert len(consumed) == COUNT, f"{len(consumed)} of {COUNT} consumed"
    values = sorted(v for _, _, _, v in consumed)
    assert values == sorted(payload(codec, i) for i in range(COUNT))
    per_partition = collections.defaultdict(list)
    for p, o, k, v in consumed:
        per_partition[p].append((o, int(v.split(b"-")[1]), k))
    for p, entries in per_partition.items():
        offsets = [o for o, _, _ in entries]
        assert offsets == list(range(len(entries))), f"partition {p}: offsets not 0..n in order"
        seqs = [s for _, s, _ in entries]
        assert seqs == sorted(seqs), f"partition {p}: produce order lost"
        assert latest_offsets[p] == len(entries)
        assert earliest_offsets[p] == 0
    # A key always lands on one partition.
    key_partitions = collections.defaultdict(set)
    for p, _, k, _ in consumed:
        key_partitions[k].add(p)
    assert all(len(ps) == 1 for ps in key_partitions.values())


@pytest.mark.parametrize(
    "codec,idempotent", [(c, False) for c in CODECS] + [("none", True), ("zstd", True)]
)
def test_confluent_kafka(module_broker, codec, idempotent):
    from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"ck-{codec}" + ("-idempotent" if idempotent else "")
    admin = AdminClient({"bootstrap.servers": module_broker.bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(30)
    errors = []
    producer = Producer({"bootstrap.servers": module_broker.bootstrap, "acks": "all",
                         "compression.type": codec, "linger.ms": 5,
                         "enable.idempotence": idempotent})
    for i in range(COUNT):
        while True:
            try:
                producer.produce(topic, key=f"k{i % 97}".encode(), value=payload(codec, i),
                                 on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors[:3]

    consumer = Consumer({"bootstrap.servers": module_broker.bootstrap, "group.id": f"g-{topic}",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    consumed = []
    deadline = time.time() + 120
    while len(consumed) < COUNT and time.time() < deadline:
        for msg in consumer.consume(1000, 1.0):
            assert msg.error() is None, msg.error()
            consumed.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
    earliest, latest = {}, {}
    for p in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        earliest[p], latest[p] = low, high
    consumer.close()
    check(codec, consumed, latest, earliest)


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python(module_broker, codec):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"kp-{codec}"
    admin = KafkaAdminClient(bootstrap_servers=module_broker.bootstrap)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=module_broker.bootstrap, acks="all",
                             compression_type=None if codec == "none" else codec,
                             linger_ms=5, batch_size=64 * 1024,
                             # kafka-python 3 turns idempotence on by default; it needs
                             # InitProducerId, which this broker does not serve yet.
                             enable_idempotence=False)
    futures = [producer.send(topic, key=f"k{i % 97}".encode(), value=payload(codec, i))
               for i in range(COUNT)]
    producer.flush(120)
    for future in futures[-10:]:
        future.get(timeout=30)
    assert all(f.succeeded() for f in futures)
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=module_broker.bootstrap, group_id=None,
                             enable_auto_commit=False, consumer_timeout_ms=5000,
                             max_partition_fetch_bytes=1 << 20)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    consumed = []
    deadline = time.time() + 120
    while len(consumed) < COUNT and time.time() < deadline:
        for msg in consumer:
            consumed.append((msg.partition, msg.offset, msg.key, msg.value))
            if len(consumed) >= COUNT:
                break
    latest = {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
    earliest = {tp.partition: o for tp, o in consumer.beginning_offsets(tps).items()}
    consumer.close()
    check(codec, consumed, latest, earliest)
