"""Proves leader elections and partition reassignment on 3 brokers with real admin clients:
confluent-kafka's AdminClient (create_topics with a replica assignment, elect_leaders) and
kafka-python's KafkaAdminClient (alter_partition_reassignments, list_partition_reassignments,
which confluent-kafka 2.16 does not have), with records produced by confluent-kafka before the
move and consumed after it. A partition on [1, 2] moves to [3, 2]: the topic znode ends with
[3, 2] and no adding/removing replicas, broker 3 leads, and every acknowledged record is read
back in order. After a failover, a preferred election brings leadership back to broker 3;
a second one is not needed; cancelling with nothing in progress is refused. The `broker`
commands do the same. How: our coordinator (3-server ensemble) and three brokers on free
loopback ports, stopped at teardown."""

import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka import ElectionType
from kafka import KafkaAdminClient, TopicPartition as KpTopicPartition

from cluster import BrokerCluster, create_topic, eventually, start_coordination

pytestmark = pytest.mark.timeout(180)

TOPIC = "moved"
MESSAGES = 200


@pytest.fixture
def cluster(tmp_path):
    coord = start_coordination("ours", tmp_path / "coord")
    c = None
    try:
        c = BrokerCluster(tmp_path / "cluster", coord)
        yield c
    finally:
        if c is not None:
            c.stop()
            print(c.log_tails())
        coord.stop()


def state(cluster, topic, partition=0):
    return cluster.get_json(f"/brokers/topics/{topic}/partitions/{partition}/state")


def produce(bootstrap, tag, count):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    for k in range(count):
        producer.produce(TOPIC, value=f"{tag}-{k}".encode(), partition=0, on_delivery=delivered)
    assert producer.flush(60) == 0, "not every message was acknowledged"
    assert not failed, failed
    return [f"{tag}-{k}" for k in range(count)]


def consume_all(bootstrap, expected):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    got = []
    deadline = time.time() + 60
    try:
        while len(got) < expected and time.time() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg.value().decode())
    finally:
        consumer.close()
    return got


def test_reassignment_and_elections_through_the_admin_clients(cluster):
    bootstrap = cluster.bootstrap()
    create_topic(bootstrap, TOPIC, 1, replica_assignment=[[1, 2]])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    eventually(lambda: state(cluster, TOPIC)["leader"] == 1 and len(state(cluster, TOPIC)["isr"]) == 2,
               30, "moved led by 1 with both replicas in sync")
    sent = produce(bootstrap, "before", MESSAGES)

    kp = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        tp = KpTopicPartition(TOPIC, 0)
        assert kp.alter_partition_reassignments({tp: [3, 2]}) == {tp: None}

        def finished():
            znode = cluster.get_json(f"/brokers/topics/{TOPIC}")
            s = state(cluster, TOPIC)
            return (znode["partitions"]["0"] == [3, 2]
                    and not znode.get("adding_replicas", {}).get("0")
                    and not znode.get("removing_replicas", {}).get("0")
                    and s["leader"] == 3 and 1 not in s["isr"])
        eventually(finished, 60, "the move to [3, 2] to finish")
        # Listed from the answering broker's view, which follows the znodes by watch.
        eventually(lambda: kp.list_partition_reassignments() == {}, 30, "nothing listed")
        eventually(lambda: sorted(state(cluster, TOPIC)["isr"]) == [2, 3], 30, "ISR [2, 3]")

        sent += produce(bootstrap, "after", MESSAGES)
        assert consume_all(bootstrap, len(sent)) == sent

        # Cancelling with nothing in progress: Kafka's NO_REASSIGNMENT_IN_PROGRESS.
        refused = kp.alter_partition_reassignments({tp: None})
        assert refused[tp].__name__ == "NoReassignmentInProgressError", refused
    finally:
        kp.close()

    # A failover leaves broker 2 leading; a preferred election gives it back to broker 3.
    cluster.terminate(3)
    eventually(lambda: state(cluster, TOPIC)["leader"] == 2, 30, "2 leads after 3 stopped")
    cluster.restart(3)
    eventually(lambda: 3 in state(cluster, TOPIC)["isr"], 60, "3 back in the ISR")

    tps = [TopicPartition(TOPIC, 0)]

    def elected():
        # A broker answers from its view, which follows the znodes by watch: until it has seen
        # 3 back in sync it answers PREFERRED_LEADER_NOT_AVAILABLE.
        (err,) = admin.elect_leaders(ElectionType.PREFERRED, tps).result(60).values()
        assert err is None or err.code() == KafkaError.PREFERRED_LEADER_NOT_AVAILABLE, err
        return err is None
    eventually(elected, 30, "a preferred election of 3")
    # The test's own ZooKeeper session may sit on an ensemble member a little behind.
    eventually(lambda: state(cluster, TOPIC)["leader"] == 3, 10, "3 leads in the state znode")

    def not_needed():
        # Once the answering broker's view has 3 leading.
        (err,) = admin.elect_leaders(ElectionType.PREFERRED, tps).result(60).values()
        assert err is not None, "elected twice"
        return err.code() == KafkaError.ELECTION_NOT_NEEDED
    eventually(not_needed, 30, "ELECTION_NOT_NEEDED")

    # The commands: list (nothing in progress), a move back to [1, 2] and an election.
    listed = cluster.cli("partitions", "list-reassignments", "--bootstrap", bootstrap)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1:] == [], listed.stdout
    moved = cluster.cli("partitions", "reassign", "--bootstrap", bootstrap, "--topic", TOPIC,
                        "--partition", "0", "--replicas", "1,2")
    assert moved.returncode == 0, moved.stderr
    eventually(lambda: cluster.get_json(f"/brokers/topics/{TOPIC}")["partitions"]["0"] == [1, 2]
               and state(cluster, TOPIC)["leader"] == 1, 60, "the move back to [1, 2]")

    def cli_not_needed():
        # Once the answering broker's view has caught up with the move (1 leading).
        elected = cluster.cli("leaders", "elect", "--bootstrap", bootstrap, "--topic", TOPIC)
        return elected.returncode == 0 and f"{TOPIC}-0 not needed" in elected.stdout
    eventually(cli_not_needed, 30, "broker leaders elect: not needed")
    assert consume_all(bootstrap, len(sent)) == sent
