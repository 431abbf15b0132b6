"""Proves the topic admin APIs tools call work through real admin clients on a single node
with two shards: IncrementalAlterConfigs and AlterConfigs change a topic's overrides (checked
like Kafka: bad values, unknown keys, APPEND on a non-list, broker resources without dynamic
configs), DescribeConfigs shows them, they survive a restart, and the topic's behaviour
changes (a smaller segment.bytes and retention.bytes move the log start offset); CreatePartitions
grows a topic whose new partitions take records on both shards and survive a restart; and
DescribeLogDirs reports each partition log's real size. Run with confluent-kafka and
kafka-python, and with the `broker topics alter|add-partitions` and `broker log-dirs describe`
commands."""

import os
import time

import pytest

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic, ResourceType)

from conftest import Broker

PROFILE = """description = "test: two shards, retention checked twice a second"
cores = "all"
[core_defaults]
memory_budget_bytes = 134217728
[storage]
segment_bytes = 16777216
preallocate_bytes = 0
flush_policy = "always"
retention_check_interval_ms = 500
"""


@pytest.fixture
def two_shard_broker(tmp_path):
    profile = tmp_path / "profile.toml"
    profile.write_text(PROFILE)
    broker = Broker(tmp_path / "data", profile=str(profile)).start()
    yield broker
    broker.stop()


def create(admin, name, partitions):
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def topic_configs(admin, name):
    resource = ConfigResource(ResourceType.TOPIC, name)
    return admin.describe_configs([resource])[resource].result(30)


def incremental(admin, name, *ops):
    resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=op) for key, value, op in ops])
    return admin.incremental_alter_configs([resource])[resource].result(30)


def kafka_code(excinfo):
    return excinfo.value.args[0].code()


def produce(bootstrap, topic, partition, count, size=1000, retries=2):
    acked = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "batch.size": 16384, "enable.idempotence": False,
                         "retries": retries, "message.timeout.ms": 20000})

    def delivered(err, msg):
        assert err is None, err
        acked.append(msg.offset())

    for i in range(count):
        producer.produce(topic, value=b"%06d" % i + b"x" * (size - 6), partition=partition,
                         on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert len(acked) == count
    return acked


def watermarks(bootstrap, topic, partition):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        consumer.close()


def test_confluent_incremental_alter_configs_change_the_topic(two_shard_broker, tmp_path):
    broker = two_shard_broker
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    create(admin, "cfg", 2)
    produce(broker.bootstrap, "cfg", 0, 300)
    assert watermarks(broker.bootstrap, "cfg", 0) == (0, 300)

    incremental(admin, "cfg",
                ("segment.bytes", "65536", AlterConfigOpType.SET),
                ("retention.bytes", "65536", AlterConfigOpType.SET))
    configs = topic_configs(admin, "cfg")
    assert configs["segment.bytes"].value == "65536"
    assert configs["segment.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["retention.bytes"].value == "65536"
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    # The new segment size rolls the log, and retention by size deletes the oldest segments:
    # the log start offset moves while every record above it stays readable.
    produce(broker.bootstrap, "cfg", 0, 300)
    deadline = time.time() + 30
    low, high = watermarks(broker.bootstrap, "cfg", 0)
    while low == 0 and time.time() < deadline:
        time.sleep(0.5)
        low, high = watermarks(broker.bootstrap, "cfg", 0)
    assert high == 600
    assert 0 < low < 600, (low, high)
    # Partition 1 kept the same settings but holds nothing to delete.
    assert watermarks(broker.bootstrap, "cfg", 1) == (0, 0)

    # APPEND starts from the default `delete`; a compacted topic refuses unkeyed records.
    incremental(admin, "cfg", ("cleanup.policy", "compact", AlterConfigOpType.APPEND))
    assert topic_configs(admin, "cfg")["cleanup.policy"].value == "delete,compact"
    with pytest.raises(AssertionError, match="INVALID_RECORD"):
        produce(broker.bootstrap, "cfg", 1, 1, retries=0)
    # DELETE removes the override; SUBTRACT takes an item off a list.
    incremental(admin, "cfg",
                ("retention.bytes", None, AlterConfigOpType.DELETE),
                ("cleanup.policy", "compact", AlterConfigOpType.SUBTRACT))
    assert produce(broker.bootstrap, "cfg", 1, 1) == [0]
    configs = topic_configs(admin, "cfg")
    assert configs["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["retention.bytes"].value == "-1"
    assert configs["cleanup.policy"].value == "delete"

    # Refused as Kafka refuses them; nothing changes.
    for topic, change, code in [
            ("cfg", ("segment.bytes", "12", AlterConfigOpType.SET), KafkaError.INVALID_CONFIG),
            ("cfg", ("no.such.config", "1", AlterConfigOpType.SET), KafkaError.INVALID_CONFIG),
            ("cfg", ("retention.ms", "5", AlterConfigOpType.APPEND), KafkaError.INVALID_CONFIG),
            ("missing", ("retention.ms", "5", AlterConfigOpType.SET),
             KafkaError.UNKNOWN_TOPIC_OR_PART)]:
        with pytest.raises(KafkaException) as bad:
            incremental(admin, topic, change)
        assert kafka_code(bad) == code, change
    assert topic_configs(admin, "cfg")["segment.bytes"].value == "65536"

    # This broker has no dynamic broker configs: Kafka's answer for a static one.
    (node_id,) = admin.list_topics(timeout=10).brokers
    resource = ConfigResource(ResourceType.BROKER, str(node_id), incremental_configs=[
        ConfigEntry("log.retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as bad:
        admin.incremental_alter_configs([resource])[resource].result(30)
    assert kafka_code(bad) == KafkaError.INVALID_CONFIG

    # validate_only checks without changing.
    resource = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("retention.ms", "1234", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource], validate_only=True)[resource].result(30)
    assert topic_configs(admin, "cfg")["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    # Persisted: the overrides and the moved log start survive a restart.
    broker.stop()
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    configs = topic_configs(admin, "cfg")
    assert configs["segment.bytes"].value == "65536"
    assert configs["segment.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert watermarks(broker.bootstrap, "cfg", 0) == (low, 600)
    assert watermarks(broker.bootstrap, "cfg", 1) == (0, 1)


def test_confluent_alter_configs_replaces_and_create_partitions_grows(two_shard_broker):
    broker = two_shard_broker
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    create(admin, "grow", 1)
    incremental(admin, "grow", ("retention.ms", "3600000", AlterConfigOpType.SET),
                ("max.message.bytes", "200000", AlterConfigOpType.SET))
    # AlterConfigs (not incremental): the overrides become exactly the ones given.
    resource = ConfigResource(ResourceType.TOPIC, "grow", set_config={"segment.ms": "60000"})
    admin.alter_configs([resource])[resource].result(30)
    configs = topic_configs(admin, "grow")
    assert configs["segment.ms"].value == "60000"
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value

    produce(broker.bootstrap, "grow", 0, 10)
    # min.insync.replicas above the one replica a single node has: acks=all is refused.
    incremental(admin, "grow", ("min.insync.replicas", "2", AlterConfigOpType.SET))
    with pytest.raises(AssertionError, match="NOT_ENOUGH_REPLICAS"):
        produce(broker.bootstrap, "grow", 0, 1, retries=0)
    incremental(admin, "grow", ("min.insync.replicas", None, AlterConfigOpType.DELETE))
    admin.create_partitions([NewPartitions("grow", 4)])["grow"].result(30)
    metadata = admin.list_topics("grow", timeout=10)
    assert sorted(metadata.topics["grow"].partitions) == [0, 1, 2, 3]
    for partition in (1, 2, 3):
        assert produce(broker.bootstrap, "grow", partition, 5) == [0, 1, 2, 3, 4]
    # The new partitions were spread over both shards.
    opened = [line for line in broker.log().splitlines() if "opened added partition grow-" in line]
    assert len(opened) == 3, opened
    assert {line.split("shard ")[1][0] for line in opened} == {"0", "1"}, opened

    # Refused: not larger, validate only changes nothing.
    with pytest.raises(KafkaException) as bad:
        admin.create_partitions([NewPartitions("grow", 4)])["grow"].result(30)
    assert kafka_code(bad) == KafkaError.INVALID_PARTITIONS
    with pytest.raises(KafkaException) as bad:
        admin.create_partitions([NewPartitions("grow", 2)])["grow"].result(30)
    assert kafka_code(bad) == KafkaError.INVALID_PARTITIONS
    admin.create_partitions([NewPartitions("grow", 8)], validate_only=True)["grow"].result(30)
    assert len(admin.list_topics("grow", timeout=10).topics["grow"].partitions) == 4

    broker.stop()
    broker.start()
    for partition, count in ((0, 10), (1, 5), (2, 5), (3, 5)):
        assert watermarks(broker.bootstrap, "grow", partition) == (0, count)


def test_kafka_python_admin(two_shard_broker):
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient
    from kafka.admin import NewTopic as KNewTopic

    broker = two_shard_broker
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([KNewTopic("kp", 2, 1)])
        produce(broker.bootstrap, "kp", 0, 50)

        def modified():
            """The topic's overrides, as kafka-python's describe_configs lists them."""
            result = admin.describe_configs([KConfigResource(ConfigResourceType.TOPIC, "kp")])
            return {name: config["value"] for name, config in result["topic"]["kp"].items()}

        # IncrementalAlterConfigs (kafka-python picks it when advertised) and AlterConfigs.
        admin.alter_configs([KConfigResource(ConfigResourceType.TOPIC, "kp",
                                             configs={"retention.ms": "7200000"})])
        assert modified() == {"retention.ms": "7200000"}
        admin.alter_configs([KConfigResource(ConfigResourceType.TOPIC, "kp",
                                             configs={"segment.bytes": "1048576"})],
                            incremental=False)
        # kafka-python's AlterConfigs sends the modified keys along, so the first one stays.
        assert modified() == {"retention.ms": "7200000", "segment.bytes": "1048576"}
        refused = admin.alter_configs([KConfigResource(ConfigResourceType.TOPIC, "kp",
                                                       configs={"segment.bytes": "1"})])
        # kafka-python reports a refused resource as a string naming the error.
        assert str(refused["topic"]["kp"]).startswith("[Error 40] InvalidConfigurationError"), \
            refused
        assert modified()["segment.bytes"] == "1048576"

        admin.create_partitions({"kp": 3})
        assert len(admin.describe_topics(["kp"])[0]["partitions"]) == 3

        dirs = admin.describe_log_dirs()
        assert len(dirs) == 1 and len(dirs[0]["log_dirs"]) == 1
        log_dir = dirs[0]["log_dirs"][0]
        assert os.path.realpath(log_dir["log_dir"]) == os.path.realpath(broker.data_dir)
        sizes = {(t["name"], p["partition_index"]): p["partition_size"]
                 for t in log_dir["topics"] for p in t["partitions"]}
        # 50 records of 1000 bytes in partition 0; the others are empty. The size is the
        # log's logical bytes (Kafka's log size); the file is padded to the page on disk.
        on_disk = sum(f.stat().st_size for f in (broker.data_dir / "kp-0").glob("*.log"))
        assert 50 * 1000 < sizes[("kp", 0)] <= on_disk < sizes[("kp", 0)] + 4096
        assert sizes[("kp", 1)] == 0 and sizes[("kp", 2)] == 0
        assert all(p["offset_lag"] == 0 for t in log_dir["topics"] for p in t["partitions"])
        assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
    finally:
        admin.close()


def test_cli_alter_add_partitions_and_log_dirs(two_shard_broker):
    broker = two_shard_broker
    broker.cli("topics", "create", "--bootstrap", broker.bootstrap, "clit", "--partitions", "1")
    out = broker.cli("topics", "alter", "--bootstrap", broker.bootstrap, "clit",
                     "--config", "retention.ms=600000", "--config", "segment.bytes=1048576")
    assert b"2 set" in out.stdout
    described = broker.cli("topics", "describe", "--bootstrap", broker.bootstrap, "clit").stdout
    assert b"config retention.ms=600000\n" in described
    assert b"config segment.bytes=1048576\n" in described
    broker.cli("topics", "alter", "--bootstrap", broker.bootstrap, "clit",
               "--delete-config", "retention.ms")
    described = broker.cli("topics", "describe", "--bootstrap", broker.bootstrap, "clit").stdout
    assert b"config retention.ms=604800000 (default)" in described

    broker.cli("topics", "add-partitions", "--bootstrap", broker.bootstrap, "clit",
               "--partitions", "3")
    described = broker.cli("topics", "describe", "--bootstrap", broker.bootstrap, "clit").stdout
    assert b"partitions 3" in described

    produce(broker.bootstrap, "clit", 2, 20)
    out = broker.cli("log-dirs", "describe", "--bootstrap", broker.bootstrap,
                     "--topic", "clit").stdout.decode()
    rows = [line.split() for line in out.splitlines()
            if line and not line.startswith(("#", "BROKER"))]
    assert [(r[1], r[2]) for r in rows] == [("clit", "0"), ("clit", "1"), ("clit", "2")], out
    assert int(rows[2][3]) > 20 * 1000 and int(rows[0][3]) == 0

    # A refused change exits non-zero with Kafka's error.
    import subprocess
    with pytest.raises(subprocess.CalledProcessError) as failed:
        broker.cli("topics", "alter", "--bootstrap", broker.bootstrap, "clit",
                   "--config", "segment.bytes=1")
    assert b"error code 40" in failed.value.stderr
