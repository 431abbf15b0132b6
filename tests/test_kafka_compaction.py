"""Log compaction with real clients: a topic created with `cleanup.policy=compact` takes keyed
updates and tombstones from confluent-kafka; once the broker's cleaner ran (small segments, a
short check interval), confluent-kafka and kafka-python read from the beginning the latest
value of every key at increasing offsets, the deleted keys are gone entirely (their tombstones
expired after `delete.retention.ms=0`), and far fewer records than were produced. Then
`__consumer_offsets`, created compacted, holds many commits of one group; after a restart the
group's last commit is served from its compacted log."""

import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from conftest import Broker, PROFILES

KEYS = 40
DELETED = range(0, 8)


def compaction_profile(path):
    """dev-2core with small segments and a 300 ms retention/compaction check interval."""
    base = (PROFILES / "dev-2core.toml").read_text()
    base = base.replace("segment_bytes = 268435456", "segment_bytes = 131072")
    base = base.replace("preallocate_bytes = 33554432", "preallocate_bytes = 0")
    base = base.replace("[storage]\n", "[storage]\nretention_check_interval_ms = 300\n"
                        "max_batch_bytes = 65536\n")
    path.write_text(base)
    return str(path)


def produce_round(producer, rnd, keys, tombstones=()):
    for k in keys:
        value = None if k in tombstones else f"key-{k} round {rnd} ".ljust(600, ".").encode()
        while True:
            try:
                producer.produce("compacted", key=f"key-{k}".encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(30) == 0


def read_all_confluent(bootstrap, end):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compaction-reader",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition("compacted", 0, OFFSET_BEGINNING)])
    records, deadline = [], time.time() + 30
    try:
        while time.time() < deadline:
            for msg in consumer.consume(500, 0.5):
                assert msg.error() is None, msg.error()
                records.append((msg.offset(), msg.key().decode(), msg.value()))
            if records and records[-1][0] >= end - 1:
                return records
    finally:
        consumer.close()
    raise AssertionError(f"read stopped at {records[-1][0] if records else None} of {end}")


def check_compacted(records, last_round):
    """Offsets increase; every live key's last record is its latest value; a deleted key
    appears nowhere. Returns the records per key."""
    offsets = [r[0] for r in records]
    assert offsets == sorted(set(offsets))
    per_key = {}
    for offset, key, value in records:
        per_key.setdefault(key, []).append((offset, value))
    for k in range(KEYS):
        if k in DELETED:
            continue
        latest = per_key[f"key-{k}"][-1][1]
        assert latest.decode().startswith(f"key-{k} round {last_round} "), (k, latest[:30])
    return per_key


def test_compacted_topic_keeps_latest_values_and_drops_expired_tombstones(tmp_path):
    profile = compaction_profile(tmp_path / "compaction.toml")
    broker = Broker(tmp_path / "data", profile=profile).start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        configs = {"cleanup.policy": "compact", "segment.bytes": "65536",
                   "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}
        for f in admin.create_topics([NewTopic("compacted", 1, 1, config=configs)]).values():
            f.result(30)
        described = admin.describe_configs([ConfigResource("topic", "compacted")])
        (values,) = [f.result(30) for f in described.values()]
        assert values["cleanup.policy"].value == "compact"
        assert values["min.cleanable.dirty.ratio"].value == "0.01"

        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                             "linger.ms": 5, "compression.type": "none"})
        produced = 0
        for rnd in range(20):
            tombstones = DELETED if rnd == 10 else ()
            keys = [k for k in range(KEYS) if rnd <= 10 or k not in DELETED]
            produce_round(producer, rnd, keys, tombstones)
            produced += len(keys)
        # Keep updating the live keys until the cleaner caught up: every deleted key gone
        # (a tombstone goes on a pass after its segment's first clean) and the log small.
        rnd, deadline = 20, time.time() + 90
        while True:
            live = [k for k in range(KEYS) if k not in DELETED]
            produce_round(producer, rnd, live)
            produced += len(live)
            end = produced  # one partition, offsets from 0: the log end offset
            records = read_all_confluent(broker.bootstrap, end)
            per_key = check_compacted(records, rnd)
            deleted_seen = [k for k in DELETED if f"key-{k}" in per_key]
            if not deleted_seen and len(records) < produced // 3:
                break
            assert time.time() < deadline, (
                f"not compacted: {len(records)} of {produced} records, deleted keys "
                f"{deleted_seen} still there")
            rnd += 1
            time.sleep(0.5)

        # kafka-python reads the same compacted log, stepping over the removed offsets.
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                 consumer_timeout_ms=5000)
        tp = KpTopicPartition("compacted", 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        seen = []
        for msg in consumer:
            seen.append((msg.offset, msg.key.decode(), msg.value))
            if msg.offset >= end - 1:
                break
        consumer.close()
        assert [r for r in seen if r[0] < end] == records
    finally:
        broker.stop()
    assert "compacted" in broker.log()


def test_consumer_offsets_is_compacted_and_replays_after_restart(tmp_path):
    profile = compaction_profile(tmp_path / "compaction.toml")
    broker = Broker(tmp_path / "data", profile=profile).start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for f in admin.create_topics([NewTopic("t", 1, 1)]).values():
            f.result(30)
        described = admin.describe_configs([ConfigResource("topic", "__consumer_offsets")])
        (values,) = [f.result(30) for f in described.values()]
        assert values["cleanup.policy"].value == "compact"
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "many-commits",
                             "enable.auto.commit": False})
        tp = TopicPartition("t", 0)
        # Each commit is one record in __consumer_offsets: enough to roll several 128 KiB
        # segments of its partition.
        for i in range(1, 3001):
            consumer.commit(offsets=[TopicPartition("t", 0, i)], asynchronous=False)
        consumer.close()
        deadline = time.time() + 60
        while "__consumer_offsets" not in "".join(
                line for line in broker.log().splitlines() if "compacted" in line):
            assert time.time() < deadline, "__consumer_offsets was never compacted"
            time.sleep(0.5)
    finally:
        broker.stop()
    broker.start()
    try:
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "many-commits",
                             "enable.auto.commit": False})
        (committed,) = consumer.committed([tp], timeout=30)
        consumer.close()
        assert committed.offset == 3000
    finally:
        broker.stop()


def test_a_compacted_topic_refuses_records_without_a_key(tmp_path):
    """As Kafka: a produce holding a keyless record to a compacted topic fails with
    INVALID_RECORD and appends nothing; keyed records and keyless ones to a delete-policy
    topic are accepted."""
    broker = Broker(tmp_path / "data").start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        topics = [NewTopic("compacted", 1, 1, config={"cleanup.policy": "compact"}),
                  NewTopic("plain", 1, 1)]
        for f in admin.create_topics(topics).values():
            f.result(30)
        outcomes = []

        def delivered(err, msg):
            outcomes.append((msg.topic(), msg.key(), err.code() if err else None))

        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                             "compression.type": "none", "retries": 0,
                             "enable.idempotence": False})
        producer.produce("compacted", key=b"k", value=b"kept", on_delivery=delivered)
        assert producer.flush(30) == 0
        producer.produce("compacted", value=b"no key", on_delivery=delivered)
        producer.produce("plain", value=b"no key", on_delivery=delivered)
        assert producer.flush(30) == 0
        assert outcomes == [("compacted", b"k", None),
                            ("compacted", None, KafkaError.INVALID_RECORD),
                            ("plain", None, None)], outcomes
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "keyless",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition("compacted", 0, OFFSET_BEGINNING)])
        try:
            seen, deadline = [], time.time() + 10
            while time.time() < deadline and not seen:
                seen += [m for m in consumer.consume(10, 0.5) if m.error() is None]
            assert [(m.offset(), m.key(), m.value()) for m in seen] == [(0, b"k", b"kept")]
            low, high = consumer.get_watermark_offsets(TopicPartition("compacted", 0), 10)
            assert (low, high) == (0, 1)
        finally:
            consumer.close()
    finally:
        broker.stop()
