"""DeleteRecords in cluster mode: on a 3-broker cluster (our coordinator ensemble) with a
replication factor 3 topic, confluent-kafka's delete_records moves the leader's log start
offset; both followers learn it from the leader's fetch responses and write it to their own
`log-start-offset` file; after the leader is killed the new leader answers the same earliest
offset and serves every record from it, none below. Everything started here is stopped at
teardown."""

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from cluster import BrokerCluster, eventually, start_coordination

pytestmark = pytest.mark.timeout(180)

TOPIC = "drc"


@pytest.fixture
def cluster(tmp_path):
    coord = start_coordination("ours", tmp_path / "coord")
    try:
        c = BrokerCluster(tmp_path / "cluster", coord)
        try:
            yield c
        finally:
            c.stop()
            print(c.log_tails())
    finally:
        coord.stop()


def earliest(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(TOPIC, 0)
    return admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(timeout=30).offset


def test_followers_learn_the_log_start_and_keep_it_as_leaders(cluster):
    c = cluster
    admin = AdminClient({"bootstrap.servers": c.bootstrap()})
    admin.create_topics([NewTopic(TOPIC, 1, 3)])[TOPIC].result(timeout=30)
    c.wait_isr_full(TOPIC, 1)
    producer = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "linger.ms": 5})
    for i in range(100):
        producer.produce(TOPIC, value=f"v{i}".encode(), partition=0)
    assert producer.flush(30) == 0

    tp = TopicPartition(TOPIC, 0, 60)
    assert admin.delete_records([tp])[tp].result(timeout=30).low_watermark == 60
    assert earliest(c.bootstrap()) == 60

    leader = c.partition_state(TOPIC, 0)["leader"]
    followers = [i for i in (1, 2, 3) if i != leader]

    def learned():
        for i in followers:
            path = c.data_dir(i) / f"{TOPIC}-0" / "log-start-offset"
            assert path.exists() and path.read_text().strip() == "60", (i, path)
    eventually(learned, 20, "both followers to store log start offset 60")

    c.kill9(leader)

    def new_leader():
        state = c.partition_state(TOPIC, 0)
        assert state["leader"] in followers, state
        return state["leader"]
    now = eventually(new_leader, 30, "a follower to take the partition over")
    assert earliest(c[now].bootstrap) == 60

    consumer = Consumer({"bootstrap.servers": c.bootstrap(), "group.id": "after",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(TOPIC, 0, -2)])
        got = []
        deadline = time.time() + 30
        while len(got) < 40 and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.offset(), msg.value()))
        assert got == [(o, f"v{o}".encode()) for o in range(60, 100)]
    finally:
        consumer.close()
