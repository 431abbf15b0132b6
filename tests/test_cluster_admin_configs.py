"""Proves the topic admin APIs in a 3-broker cluster, on our coordinator and on Apache
ZooKeeper: a config change sent
to one broker is written to `/config/topics/<t>` with a change notification, reaches every
broker's DescribeConfigs and changes the topic's behaviour there (min.insync.replicas above
the ISR makes the leader refuse acks=all produces with NOT_ENOUGH_REPLICAS, removing it lets
them through), and a broker that was down during a change has it when it is back;
CreatePartitions through one broker appends replicated partitions to the
topic's znode, the controller gives them leaders with full ISRs, records produced to them
reach every replica, and DescribeLogDirs on every broker (kafka-python, and `broker log-dirs
describe`) shows each replica with the same size. Everything is stopped at teardown."""

import json
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic, ResourceType)

from cluster import BrokerCluster, eventually, start_coordination

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", params=["ours", "zookeeper"])
def cluster(request, tmp_path_factory):
    """Three brokers on our coordinator (3-server ensemble) or on Apache ZooKeeper."""
    coord = start_coordination(request.param, tmp_path_factory.mktemp("coord"))
    try:
        c = BrokerCluster(tmp_path_factory.mktemp("cluster"), coord,
                          broker_args=["--default-replication-factor", "3"])
    except BaseException:
        coord.stop()
        raise
    yield c
    c.stop()
    print(c.log_tails())
    coord.stop()


def describe(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result(30)


def produce_one(bootstrap, topic, partition):
    """The delivery error of one acks=all record (None when acknowledged)."""
    result = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0,
                         "message.timeout.ms": 10000, "enable.idempotence": False})
    producer.produce(topic, value=b"v", partition=partition,
                     on_delivery=lambda err, msg: result.append(err))
    producer.flush(20)
    assert len(result) == 1
    return result[0]


def test_config_change_reaches_every_broker_and_changes_behaviour(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap([1])})
    admin.create_topics([NewTopic("conf", 1, 3)])["conf"].result(30)
    assert produce_one(cluster.bootstrap(), "conf", 0) is None

    resource = ConfigResource(ResourceType.TOPIC, "conf", incremental_configs=[
        ConfigEntry("min.insync.replicas", "4", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(30)
    config = json.loads(cluster.zk.get("/config/topics/conf")[0])
    assert config["config"] == {"min.insync.replicas": "4", "retention.ms": "7200000"}
    changes = [json.loads(cluster.zk.get(f"/config/changes/{c}")[0])
               for c in cluster.zk.get_children("/config/changes")]
    assert {"version": 2, "entity_path": "topics/conf"} in changes

    def sees(broker, key, value, source):
        def check():
            entry = describe(cluster.bootstrap([broker]), "conf")[key]
            assert (entry.value, entry.source) == (value, source.value), entry
        eventually(check, 20, f"broker {broker} sees {key}={value}")

    for broker in (1, 2, 3):
        sees(broker, "min.insync.replicas", "4", ConfigSource.DYNAMIC_TOPIC_CONFIG)
        entry = describe(cluster.bootstrap([broker]), "conf")["retention.ms"]
        assert entry.value == "7200000"
        assert entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    # The leader (whichever broker it is) now needs 4 in-sync replicas of 3.
    err = produce_one(cluster.bootstrap(), "conf", 0)
    assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, err

    # Through another broker, AlterConfigs (replace all): min.insync.replicas goes back to
    # the default, and produces are acknowledged again.
    admin3 = AdminClient({"bootstrap.servers": cluster.bootstrap([3])})
    resource = ConfigResource(ResourceType.TOPIC, "conf", set_config={"retention.ms": "7200000"})
    admin3.alter_configs([resource])[resource].result(30)
    for broker in (1, 2, 3):
        sees(broker, "min.insync.replicas", "1", ConfigSource.DEFAULT_CONFIG)
    assert produce_one(cluster.bootstrap(), "conf", 0) is None

    # A broker that was down while the config changed reads it when it comes back.
    cluster.terminate(3)
    resource = ConfigResource(ResourceType.TOPIC, "conf", incremental_configs=[
        ConfigEntry("segment.ms", "120000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(30)
    cluster.restart(3)
    sees(3, "segment.ms", "120000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    # Every broker sees it again (the next test assigns replicas over the live brokers).
    for broker in (1, 2, 3):
        def listed():
            brokers = AdminClient({"bootstrap.servers": cluster.bootstrap([broker])}).list_topics(
                timeout=10).brokers
            assert sorted(brokers) == [1, 2, 3], brokers
        eventually(listed, 30, f"broker {broker} lists all three brokers")

    resource = ConfigResource(ResourceType.TOPIC, "conf", incremental_configs=[
        ConfigEntry("segment.bytes", "1", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as bad:
        admin.incremental_alter_configs([resource])[resource].result(30)
    assert bad.value.args[0].code() == KafkaError.INVALID_CONFIG


def test_create_partitions_replicated_and_log_dirs(cluster):
    from kafka.admin import KafkaAdminClient

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap([2])})
    admin.create_topics([NewTopic("more", 2, 3)])["more"].result(30)
    admin.create_partitions([NewPartitions("more", 5)])["more"].result(60)
    assignment = json.loads(cluster.zk.get("/brokers/topics/more")[0])
    assert sorted(assignment["partitions"], key=int) == ["0", "1", "2", "3", "4"]
    assert all(sorted(r) == [1, 2, 3] for r in assignment["partitions"].values())
    for p in range(5):
        state = json.loads(cluster.zk.get(f"/brokers/topics/more/partitions/{p}/state")[0])
        assert state["leader"] in (1, 2, 3) and sorted(state["isr"]) == [1, 2, 3], state
    # The new partitions' leaders are spread, as a new topic's are.
    leaders = {json.loads(cluster.zk.get(f"/brokers/topics/more/partitions/{p}/state")[0])["leader"]
               for p in range(2, 5)}
    assert len(leaders) == 3, leaders

    for p in range(5):
        for _ in range(10 if p == 4 else 1):
            assert produce_one(cluster.bootstrap(), "more", p) is None

    with pytest.raises(KafkaException) as bad:
        admin.create_partitions([NewPartitions("more", 3)])["more"].result(30)
    assert bad.value.args[0].code() == KafkaError.INVALID_PARTITIONS

    # DescribeLogDirs on every broker: each holds all five replicas, and partition 4's ten
    # acknowledged records are on every replica (the sizes agree once followers caught up).
    kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap())
    try:
        def sizes():
            found = {}
            for answer in kp.describe_log_dirs({"more": list(range(5))}):
                for log_dir in answer["log_dirs"]:
                    for topic in log_dir["topics"]:
                        for p in topic["partitions"]:
                            found[(answer["broker"], p["partition_index"])] = (
                                p["partition_size"], p["offset_lag"])
            return found

        def replicated():
            found = sizes()
            assert len(found) == 15, found
            assert len({found[(b, 4)] for b in (1, 2, 3)}) == 1, found
            assert found[(1, 4)][0] > found[(1, 0)][0] > 0, found
        eventually(replicated, 30, "every replica of more-4 has the same size")
    finally:
        kp.close()

    done = cluster.cli("log-dirs", "describe", "--bootstrap", cluster.bootstrap([1]),
                       "--topic", "more")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    rows = [line.split() for line in out.splitlines() if line and not line.startswith(("#", "BROKER"))]
    assert sorted((int(r[0]), int(r[2])) for r in rows) == [
        (b, p) for b in (1, 2, 3) for p in range(5)], out
