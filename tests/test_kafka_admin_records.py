"""Admin APIs on records, through the real admin clients against one broker process:
DeleteRecords (confluent-kafka's `delete_records`, kafka-python's `delete_records`, and
`broker records delete`): the log start offset moves, earliest offsets and consumers follow
it, a fetch below it is out of range, segments wholly below it are removed from disk, and all
of it holds after a kill -9 and restart."""

import pathlib
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KTopicPartition
from kafka.admin import OffsetSpec as KOffsetSpec
from kafka.errors import OffsetOutOfRangeError

from conftest import Broker

VALUE = b"x" * 1000


def create_topic(admin, name, partitions=1, configs=None):
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=configs or {})])
    futures[name].result(timeout=30)


def produce(bootstrap, topic, partition, count, start=0, value=VALUE):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "batch.size": 16384, "enable.idempotence": True})
    for i in range(start, start + count):
        producer.produce(topic, key=f"k{i}".encode(), value=value + f"{i}".encode(),
                         partition=partition)
    assert producer.flush(30) == 0


def earliest_and_latest(admin, topic, partition):
    tp = TopicPartition(topic, partition)
    earliest = admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(timeout=30)
    latest = admin.list_offsets({tp: OffsetSpec.latest()})[tp].result(timeout=30)
    return earliest.offset, latest.offset


def consume_all(bootstrap, topic, partition, start, expected):
    """Reads `expected` records of one partition from `start` (an offset or OFFSET_BEGINNING)
    and returns their offsets and values."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                         "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        got = []
        deadline = time.time() + 30
        while len(got) < expected and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.offset(), msg.value()))
        return got
    finally:
        consumer.close()


def segment_files(data_dir, topic, partition):
    return sorted(p.name for p in (pathlib.Path(data_dir) / f"{topic}-{partition}").glob("*.log"))


def test_delete_records_confluent_survives_kill_and_restart(tmp_path):
    broker = Broker(tmp_path / "data").start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        create_topic(admin, "dr", partitions=2, configs={"segment.bytes": "65536"})
        produce(broker.bootstrap, "dr", 0, 300)
        produce(broker.bootstrap, "dr", 1, 10)
        assert earliest_and_latest(admin, "dr", 0) == (0, 300)
        segments_before = segment_files(broker.data_dir, "dr", 0)
        assert len(segments_before) >= 4, segments_before

        tp = TopicPartition("dr", 0, 200)
        deleted = admin.delete_records([tp])[tp].result(timeout=30)
        assert deleted.low_watermark == 200
        assert earliest_and_latest(admin, "dr", 0) == (200, 300)
        # Partition 1 was not asked about.
        assert earliest_and_latest(admin, "dr", 1) == (0, 10)
        # Sealed segments wholly below 200 are gone from disk; the one holding 200 stays.
        segments_after = segment_files(broker.data_dir, "dr", 0)
        assert len(segments_after) < len(segments_before)
        first_base = int(segments_after[0].split(".")[0])
        assert 0 < first_base <= 200

        # A consumer starting below the start is out of range (auto.offset.reset=error).
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "low",
                             "auto.offset.reset": "error"})
        try:
            consumer.assign([TopicPartition("dr", 0, 50)])
            error = None
            deadline = time.time() + 30
            while error is None and time.time() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is not None:
                    error = msg.error()
                elif msg is not None:
                    pytest.fail(f"read offset {msg.offset()} below the log start")
            assert error is not None and error.code() == KafkaError._AUTO_OFFSET_RESET, error
            assert "out of range" in error.str().lower(), error.str()
        finally:
            consumer.close()

        # From the beginning: offset 200 first, then every record up to the end, in order.
        got = consume_all(broker.bootstrap, "dr", 0, -2, 100)
        assert [o for o, _ in got] == list(range(200, 300))
        assert [v for _, v in got] == [VALUE + f"{i}".encode() for i in range(200, 300)]

        # Below the current start: nothing moves; past the end: OFFSET_OUT_OF_RANGE.
        tp = TopicPartition("dr", 0, 100)
        assert admin.delete_records([tp])[tp].result(timeout=30).low_watermark == 200
        tp = TopicPartition("dr", 0, 301)
        with pytest.raises(Exception) as refused:
            admin.delete_records([tp])[tp].result(timeout=30)
        assert refused.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE

        # The acknowledged start survives a crash.
        broker.kill()
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        assert earliest_and_latest(admin, "dr", 0) == (200, 300)
        got = consume_all(broker.bootstrap, "dr", 0, -2, 100)
        assert [o for o, _ in got] == list(range(200, 300))
        # Appends go on after it.
        produce(broker.bootstrap, "dr", 0, 5, start=300)
        assert earliest_and_latest(admin, "dr", 0) == (200, 305)
    finally:
        broker.stop()


def test_delete_records_kafka_python_and_cli(tmp_path):
    broker = Broker(tmp_path / "data").start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        create_topic(admin, "kp", partitions=2)
        produce(broker.bootstrap, "kp", 0, 50)
        produce(broker.bootstrap, "kp", 1, 30)
        kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            result = kadmin.delete_records({KTopicPartition("kp", 0): 20,
                                            KTopicPartition("kp", 1): -1})
            low = {tp.partition: meta["low_watermark"] for tp, meta in result.items()}
            assert low == {0: 20, 1: 30}
            offsets = kadmin.list_partition_offsets({KTopicPartition("kp", 0): KOffsetSpec.EARLIEST,
                                                     KTopicPartition("kp", 1): KOffsetSpec.EARLIEST})
            assert {tp.partition: o.offset for tp, o in offsets.items()} == {0: 20, 1: 30}
        finally:
            kadmin.close()

        # kafka-python's consumer without a reset policy is told the offset is out of range.
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="none",
                                 enable_auto_commit=False, group_id=None)
        try:
            tp = KTopicPartition("kp", 0)
            consumer.assign([tp])
            consumer.seek(tp, 5)
            with pytest.raises(OffsetOutOfRangeError):
                deadline = time.time() + 30
                while time.time() < deadline:
                    records = consumer.poll(timeout_ms=500)
                    assert not records, f"read below the log start: {records}"
        finally:
            consumer.close()

        out = broker.cli("records", "delete", "--bootstrap", broker.bootstrap, "--topic", "kp",
                         "--partition", "0", "--before", "35")
        assert "kp-0: low watermark 35" in out.stdout.decode()
        assert earliest_and_latest(admin, "kp", 0) == (35, 50)
        # Past the high watermark the CLI fails and says why.
        import subprocess
        with pytest.raises(subprocess.CalledProcessError) as failed:
            broker.cli("records", "delete", "--bootstrap", broker.bootstrap, "--topic", "kp",
                       "--partition", "0", "--before", "51")
        assert "error code 1" in failed.value.stderr.decode()
        assert earliest_and_latest(admin, "kp", 0) == (35, 50)
    finally:
        broker.stop()


def produce_timestamped(bootstrap, topic, partition, timestamps, compression="none"):
    """One batch of records with the given CreateTime timestamps (values name their index)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 200,
                         "compression.type": compression})
    for i, ts in enumerate(timestamps):
        producer.produce(topic, value=f"r{i}".encode(), partition=partition, timestamp=ts)
    assert producer.flush(30) == 0


def test_list_offsets_max_timestamp(tmp_path):
    """ListOffsets MAX_TIMESTAMP (-3, v7): the first record carrying the largest timestamp,
    inside an uncompressed batch and inside a gzip one, ignoring records below the log start,
    -1 on an empty partition; through confluent-kafka and kafka-python."""
    broker = Broker(tmp_path / "data").start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        create_topic(admin, "mt", partitions=3)
        base = int(time.time() * 1000) - 60_000
        deltas = [10, 50, 30, 50, 20]
        produce_timestamped(broker.bootstrap, "mt", 0, [base + d for d in deltas])
        produce_timestamped(broker.bootstrap, "mt", 1, [base + d for d in deltas], "gzip")
        # A later batch with smaller timestamps changes nothing.
        produce_timestamped(broker.bootstrap, "mt", 0, [base + 40, base + 5])

        def max_timestamp(partition):
            tp = TopicPartition("mt", partition)
            got = admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(timeout=30)
            return got.offset, got.timestamp

        assert max_timestamp(0) == (1, base + 50)
        assert max_timestamp(1) == (1, base + 50)
        assert max_timestamp(2)[0] == -1

        kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            found = kadmin.list_partition_offsets(
                {KTopicPartition("mt", p): KOffsetSpec.MAX_TIMESTAMP for p in (0, 1)})
            assert {tp.partition: (o.offset, o.timestamp) for tp, o in found.items()} == {
                0: (1, base + 50), 1: (1, base + 50)}
        finally:
            kadmin.close()

        # Records below the log start do not count: the next largest is offset 3.
        tp = TopicPartition("mt", 0, 2)
        assert admin.delete_records([tp])[tp].result(timeout=30).low_watermark == 2
        assert max_timestamp(0) == (3, base + 50)
        tp = TopicPartition("mt", 0, 4)
        assert admin.delete_records([tp])[tp].result(timeout=30).low_watermark == 4
        assert max_timestamp(0) == (5, base + 40)
    finally:
        broker.stop()


def commit(bootstrap, group, offsets):
    """Commits {(topic, partition): offset} for `group` as a client without group
    management (generation -1)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                        asynchronous=False)
    finally:
        consumer.close()


def committed(kadmin, group):
    offsets = kadmin.list_group_offsets({group: None})[group]
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def test_offset_delete_kafka_python_and_cli(tmp_path):
    """OffsetDelete through kafka-python's delete_group_offsets (confluent-kafka's Python
    AdminClient has no call for it) and `broker groups delete-offsets`: an empty group loses
    the asked offsets, a group with a member keeps those of its subscribed topic
    (GROUP_SUBSCRIBED_TO_TOPIC) and loses the others, an unknown group is GROUP_ID_NOT_FOUND;
    the deletions survive a kill -9."""
    from kafka.errors import GroupIdNotFoundError, GroupSubscribedToTopicError, NoError
    broker = Broker(tmp_path / "data").start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        create_topic(admin, "od", partitions=2)
        create_topic(admin, "other", partitions=1)
        produce(broker.bootstrap, "od", 0, 10)
        produce(broker.bootstrap, "od", 1, 10)
        produce(broker.bootstrap, "other", 0, 10)
        commit(broker.bootstrap, "g-empty", {("od", 0): 3, ("od", 1): 4, ("other", 0): 5})
        kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            result = kadmin.delete_group_offsets("g-empty", [KTopicPartition("od", 0)])
            assert result == {KTopicPartition("od", 0): NoError}
            assert committed(kadmin, "g-empty") == {("od", 1): 4, ("other", 0): 5}

            with pytest.raises(GroupIdNotFoundError):
                kadmin.delete_group_offsets("no-such-group", [KTopicPartition("od", 0)])

            # A member subscribed to `od`, with offsets of `od` and `other` committed.
            consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-active",
                                 "auto.offset.reset": "earliest", "enable.auto.commit": False})
            try:
                consumer.subscribe(["od"])
                deadline = time.time() + 60
                while not consumer.assignment() and time.time() < deadline:
                    consumer.poll(0.2)
                assert consumer.assignment()
                consumer.commit(offsets=[TopicPartition("od", 0, 7), TopicPartition("od", 1, 8),
                                         TopicPartition("other", 0, 9)], asynchronous=False)
                result = kadmin.delete_group_offsets(
                    "g-active", [KTopicPartition("od", 0), KTopicPartition("other", 0)])
                assert result == {KTopicPartition("od", 0): GroupSubscribedToTopicError,
                                  KTopicPartition("other", 0): NoError}
                assert committed(kadmin, "g-active") == {("od", 0): 7, ("od", 1): 8}
            finally:
                consumer.close()
        finally:
            kadmin.close()

        out = broker.cli("groups", "delete-offsets", "--bootstrap", broker.bootstrap, "g-empty",
                         "--topic", "other")
        assert "other-0: deleted" in out.stdout.decode()

        broker.kill()
        broker.start()
        kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            assert committed(kadmin, "g-empty") == {("od", 1): 4}
            # The member left: its topic's offsets can go now.
            result = kadmin.delete_group_offsets("g-active", [KTopicPartition("od", 0)])
            assert result == {KTopicPartition("od", 0): NoError}
            assert committed(kadmin, "g-active") == {("od", 1): 8}
        finally:
            kadmin.close()
    finally:
        broker.stop()


def test_describe_producers_kafka_python_and_cli(tmp_path):
    """DescribeProducers through kafka-python's describe_producers (confluent-kafka's Python
    AdminClient has no call for it) and `broker producers describe`: each idempotent
    producer of a partition with its epoch, last sequence and last batch's timestamp, also
    after a restart; a non-idempotent producer is not listed."""
    broker = Broker(tmp_path / "data").start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        create_topic(admin, "dp", partitions=2)
        before = int(time.time() * 1000)
        produce(broker.bootstrap, "dp", 0, 10)
        produce(broker.bootstrap, "dp", 0, 3)
        plain = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False})
        plain.produce("dp", value=b"plain", partition=1)
        assert plain.flush(30) == 0

        def described():
            kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
            try:
                states = kadmin.describe_producers([KTopicPartition("dp", 0),
                                                    KTopicPartition("dp", 1)])
            finally:
                kadmin.close()
            return {tp.partition: s.active_producers for tp, s in states.items()}

        states = described()
        assert states[1] == []
        producers = sorted(states[0], key=lambda p: p.producer_id)
        assert len(producers) == 2, producers
        assert producers[0].producer_id != producers[1].producer_id
        # Each producer's sequences start at 0: 10 records end at 9, 3 at 2.
        assert sorted(p.last_sequence for p in producers) == [2, 9]
        for p in producers:
            assert p.producer_epoch == 0
            assert before - 1000 <= p.last_timestamp <= int(time.time() * 1000) + 1000
            assert p.coordinator_epoch == -1 and p.current_transaction_start_offset == -1

        out = broker.cli("producers", "describe", "--bootstrap", broker.bootstrap,
                         "--topic", "dp").stdout.decode()
        for p in producers:
            assert any(line.split()[:3] == ["dp", "0", str(p.producer_id)]
                       for line in out.splitlines()), out

        broker.stop()
        broker.start()
        assert sorted(described()[0]) == sorted(producers)
    finally:
        broker.stop()
