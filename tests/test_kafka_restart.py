"""Proves durability and stable placement across restarts: after SIGTERM (clean) and after
kill -9 (crash), every message the broker acknowledged is still there at its offset, and each
shard reopens exactly the partitions it owned before. The SIGTERM test runs two shards, so
produce and fetch also cross the shard mesh. The kill -9 test with a consumer tailing the
topic runs under each flush policy: nothing acknowledged is lost, and every message the
consumer read is still at its offset (a single node serves only what the policy promises).
An idempotent producer that keeps producing across five kill -9 restarts finds each of its
messages in the log exactly once.
It checks the whole path with real clients; the window it guards (bytes acknowledged or served
before their write) lasts microseconds, too short for this producer to hit reliably, so the
test that fails on a broker without the promise is broker/tests/storage_crash.rs."""

import os
import re
import threading
import time

import pytest

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

from conftest import Broker, all_cores_profile


def produce(bootstrap, topic, count, prefix, stop_after=None, on_progress=None):
    """Produces `count` messages with acks=all; returns {(partition, offset): value} of the
    acknowledged ones."""
    acked = {}

    def delivered(err, msg):
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2,
                         "enable.idempotence": False, "message.timeout.ms": 5000,
                         "retries": 0})
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=f"k{i % 13}".encode(),
                                 value=f"{prefix}-{i}".encode(), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if on_progress and on_progress(i, acked):
            break
    producer.flush(15)
    return acked


def consume(bootstrap, topic, partitions):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "restart-check",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got, eof = {}, set()
    deadline = time.time() + 60
    while len(eof) < partitions and time.time() < deadline:
        for msg in consumer.consume(1000, 0.5):
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    eof.add(msg.partition())
                    continue
                raise AssertionError(msg.error())
            got[(msg.partition(), msg.offset())] = msg.value()
    consumer.close()
    return got


def placement(log):
    """Every `shard N opened partitions [...]` line, in start order, without the partitions of
    the internal `__consumer_offsets` topic (created by every broker)."""
    return [(shard, ",".join(p for p in parts.split(",") if not p.startswith("__consumer_offsets")))
            for shard, parts in re.findall(r"shard (\d+) opened partitions \[([^\]]*)\]", log)]


def test_sigterm_restart_keeps_data_and_placement_two_shards(tmp_path):
    profile = all_cores_profile(tmp_path / "all-cores.toml")
    broker = Broker(tmp_path / "data", profile=profile).start()
    try:
        broker.cli("topics", "create", "--bootstrap", broker.bootstrap, "r", "--partitions", "4")
        acked = produce(broker.bootstrap, "r", 20_000, "a")
        assert len(acked) == 20_000
        assert broker.stop() == 0
        broker.start()
        got = consume(broker.bootstrap, "r", 4)
        assert all(got.get(k) == v for k, v in acked.items())
        acked.update(produce(broker.bootstrap, "r", 5_000, "b"))
        assert broker.stop() == 0
        broker.start()
        got = consume(broker.bootstrap, "r", 4)
        assert len(got) == 25_000
        assert all(got.get(k) == v for k, v in acked.items())
    finally:
        broker.stop()
    opened = placement(broker.log())
    shards = {s for s, _ in opened}
    assert len(shards) == min(2, os.cpu_count())
    if len(shards) > 1:
        # Starts 2 and 3 (after the topic existed) report the same partitions per shard.
        later = [entry for entry in opened if entry[1]]
        assert len(later) == 2 * len(shards)
        first, second = later[: len(shards)], later[len(shards):]
        assert sorted(first) == sorted(second)
        # Balanced by count: 2 partitions on each of 2 shards.
        assert all(len(p.split(",")) == 4 // len(shards) for _, p in first)


def test_kill9_with_flush_always_loses_no_acked_message(tmp_path):
    broker = Broker(tmp_path / "data").start()
    try:
        broker.cli("topics", "create", "--bootstrap", broker.bootstrap, "crash",
                   "--partitions", "3", "--config", "flush.policy=always")
        killed = []

        def kill_midway(i, acked):
            if not killed and len(acked) >= 5_000:
                broker.kill()
                killed.append(i)
            return bool(killed) and i > killed[0] + 2_000

        acked = produce(broker.bootstrap, "crash", 200_000, "c", on_progress=kill_midway)
        assert killed, "the broker was killed while producing"
        assert len(acked) >= 5_000
        broker.start()
        got = consume(broker.bootstrap, "crash", 3)
        missing = [k for k, v in acked.items() if got.get(k) != v]
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
    finally:
        broker.stop()


@pytest.mark.parametrize("policy", ["always", "interval_ms=200", "never"])
def test_kill9_while_a_consumer_tails_loses_nothing_acked_or_read(tmp_path, policy):
    broker = Broker(tmp_path / "data").start()
    stop = threading.Event()
    seen = {}

    def tail(bootstrap):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tail",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        consumer.assign([TopicPartition("tail", p, OFFSET_BEGINNING) for p in range(3)])
        try:
            while not stop.is_set():
                for msg in consumer.consume(1000, 0.1):
                    # Transport errors once the broker is killed are expected.
                    if not msg.error():
                        seen[(msg.partition(), msg.offset())] = msg.value()
        finally:
            consumer.close()

    tailer = threading.Thread(target=tail, args=(broker.bootstrap,), daemon=True)
    try:
        broker.cli("topics", "create", "--bootstrap", broker.bootstrap, "tail",
                   "--partitions", "3", "--config", f"flush.policy={policy}")
        tailer.start()
        killed = []

        def kill_midway(i, acked):
            if not killed and len(acked) >= 5_000 and len(seen) >= 1_000:
                broker.kill()
                killed.append(i)
            return bool(killed) and i > killed[0] + 2_000

        acked = produce(broker.bootstrap, "tail", 400_000, "t", on_progress=kill_midway)
        stop.set()
        tailer.join(30)
        assert not tailer.is_alive(), "the consumer did not stop"
        assert killed, "the broker was killed while producing and tailing"
        read = dict(seen)
        assert len(acked) >= 5_000 and len(read) >= 1_000
        broker.start()
        got = consume(broker.bootstrap, "tail", 3)
        lost = [k for k, v in acked.items() if got.get(k) != v]
        assert not lost, f"{policy}: {len(lost)} acknowledged messages lost, e.g. {lost[:3]}"
        changed = [k for k, v in read.items() if got.get(k) != v]
        assert not changed, f"{policy}: {len(changed)} messages read are gone, e.g. {changed[:3]}"
    finally:
        stop.set()
        broker.stop()


def test_kill9_idempotent_producer_keeps_each_message_once(tmp_path):
    """An idempotent confluent-kafka producer keeps producing while the broker is killed (-9)
    and restarted on the same port, five times: every message is delivered, and each is in the
    log exactly once, at the offset its delivery report gave. A batch the broker appended but
    could not answer before the kill is retried with its sequence numbers and must be answered
    from the producer table rebuilt at open (snapshots and the log after them), not appended
    again. That window (between the write of a batch and its answer) is short, and this
    producer did not hit it in trials (a broker that forgets every producer at open passed
    too), so the test that fails without the rebuild is
    broker/tests/storage_idempotence.rs; this one checks the whole path with a real client."""
    broker = Broker(tmp_path / "data").start()
    port = broker.port
    count, kills = 60_000, {10_000, 20_000, 30_000, 40_000, 50_000}
    delivered, failed = {}, []

    def on_delivery(err, msg):
        if err is None:
            delivered[msg.value()] = (msg.partition(), msg.offset())
        else:
            failed.append(err)

    try:
        broker.cli("topics", "create", "--bootstrap", broker.bootstrap, "idem", "--partitions", "2")
        producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                             "acks": "all", "linger.ms": 5, "message.timeout.ms": 120_000,
                             "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500})
        for i in range(count):
            if i in kills:
                broker.kill()
                broker.start(port=port)
            while True:
                try:
                    producer.produce("idem", key=f"k{i % 7}".encode(), value=f"m-{i}".encode(),
                                     on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        assert producer.flush(120) == 0, "messages left undelivered"
        assert not failed, f"{len(failed)} deliveries failed, e.g. {failed[:3]}"
        assert len(delivered) == count
        got = consume(broker.bootstrap, "idem", 2)
        values = list(got.values())
        assert len(values) == len(set(values)), \
            f"{len(values) - len(set(values))} messages are in the log twice"
        assert sorted(values) == sorted(delivered)
        assert all(got[position] == value for value, position in delivered.items())
    finally:
        broker.stop()
