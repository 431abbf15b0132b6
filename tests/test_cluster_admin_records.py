"""DeleteRecords in cluster mode: on a 3-broker cluster (our coordinator ensemble) with a
replication factor 3 topic, confluent-kafka's delete_records moves the leader's log start
offset; both followers learn it from the leader's fetch responses and have written it to their
own `log-start-offset` file by the time the leader answers; after the leader is killed the new leader answers the same earliest
offset and serves every record from it, none below; a follower that was down while the
leader's start moved past its log end starts its log over there, rejoins the ISR and serves
from that start. Everything started here is stopped at teardown."""

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from cluster import BrokerCluster, eventually, start_coordination

pytestmark = pytest.mark.timeout(180)

TOPIC = "drc"


def running_cluster(tmp_path, broker_args=()):
    """A 3-broker cluster on our coordinator ensemble; stopped (logs printed) afterwards."""
    coord = start_coordination("ours", tmp_path / "coord")
    try:
        c = BrokerCluster(tmp_path / "cluster", coord, broker_args=broker_args)
        try:
            yield c
        finally:
            c.stop()
            print(c.log_tails())
    finally:
        coord.stop()


@pytest.fixture
def cluster(tmp_path):
    yield from running_cluster(tmp_path)


@pytest.fixture
def fast_cluster(tmp_path):
    """Followers leave the ISR after 2 s behind."""
    yield from running_cluster(tmp_path, ["--replica-lag-time-max-ms", "2000"])


def produce(c, start, end):
    producer = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "linger.ms": 5})
    for i in range(start, end):
        producer.produce(TOPIC, value=f"v{i}".encode(), partition=0)
    assert producer.flush(30) == 0


def read_from_earliest(bootstrap, count):
    """(offset, value) of the first `count` records from the earliest offset."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "after",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(TOPIC, 0, -2)])
        got = []
        deadline = time.time() + 30
        while len(got) < count and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.offset(), msg.value()))
        return got
    finally:
        consumer.close()


def earliest(bootstrap):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(TOPIC, 0)
    return admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(timeout=30).offset


def test_followers_learn_the_log_start_and_keep_it_as_leaders(cluster):
    c = cluster
    admin = AdminClient({"bootstrap.servers": c.bootstrap()})
    admin.create_topics([NewTopic(TOPIC, 1, 3)])[TOPIC].result(timeout=30)
    c.wait_isr_full(TOPIC, 1)
    produce(c, 0, 100)

    tp = TopicPartition(TOPIC, 0, 60)
    assert admin.delete_records([tp])[tp].result(timeout=30).low_watermark == 60
    assert earliest(c.bootstrap()) == 60

    leader = c.partition_state(TOPIC, 0)["leader"]
    followers = [i for i in (1, 2, 3) if i != leader]

    def learned():
        for i in followers:
            path = c.data_dir(i) / f"{TOPIC}-0" / "log-start-offset"
            assert path.exists() and path.read_text().strip() == "60", (i, path)
    # The leader answered only once both followers reported the new start in a fetch.
    learned()

    c.kill9(leader)

    def new_leader():
        state = c.partition_state(TOPIC, 0)
        assert state["leader"] in followers, state
        return state["leader"]
    now = eventually(new_leader, 30, "a follower to take the partition over")
    assert earliest(c[now].bootstrap) == 60

    got = read_from_earliest(c.bootstrap(), 40)
    assert got == [(o, f"v{o}".encode()) for o in range(60, 100)]


def test_a_follower_behind_the_leaders_start_starts_over_there(fast_cluster):
    """A follower down while records are produced and deleted up to the high watermark comes
    back with its log end below the leader's start: it empties its log to start there,
    catches up and rejoins the ISR, and as leader serves from that start."""
    c = fast_cluster
    admin = AdminClient({"bootstrap.servers": c.bootstrap()})
    admin.create_topics([NewTopic(TOPIC, 1, 3)])[TOPIC].result(timeout=30)
    c.wait_isr_full(TOPIC, 1)
    produce(c, 0, 50)

    leader = c.partition_state(TOPIC, 0)["leader"]
    lagging = [i for i in (1, 2, 3) if i != leader][0]
    c.kill9(lagging)

    def shrunk():
        assert lagging not in c.partition_state(TOPIC, 0)["isr"]
    eventually(shrunk, 30, f"broker {lagging} to leave the ISR")
    produce(c, 50, 120)
    tp = TopicPartition(TOPIC, 0, -1)
    assert admin.delete_records([tp])[tp].result(timeout=30).low_watermark == 120

    c.restart(lagging)

    def rejoined():
        assert sorted(c.partition_state(TOPIC, 0)["isr"]) == [1, 2, 3]
    eventually(rejoined, 30, f"broker {lagging} to rejoin the ISR")
    path = c.data_dir(lagging) / f"{TOPIC}-0" / "log-start-offset"
    assert path.read_text().strip() == "120"

    # Records appended after the restart reach it, and it serves from 120 as leader.
    produce(c, 120, 130)
    for other in [i for i in (1, 2, 3) if i != lagging]:
        c.kill9(other)
    def leads():
        assert c.partition_state(TOPIC, 0)["leader"] == lagging
    eventually(leads, 30, f"broker {lagging} to lead")
    assert earliest(c[lagging].bootstrap) == 120
    got = read_from_earliest(c[lagging].bootstrap, 10)
    assert got == [(o, f"v{o}".encode()) for o in range(120, 130)]
