"""Proves consumer groups in a replicated cluster: `__consumer_offsets` is replicated
(replication factor 3), a group's coordinator moves with the leadership of its partition,
committed offsets survive a kill -9 of the broker coordinating the group, and kafka-python,
confluent-kafka and `kcat -G` consume across a leader move without skipping or repeating
committed records. How: per coordination flavour (our 3-server ensemble, Apache ZooKeeper) a
3-broker cluster with min.insync.replicas=2; the coordinator is found with FindCoordinator and
killed; the znodes are read with kazoo; everything is stopped at teardown."""

import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer

from cluster import BrokerCluster, eventually, start_coordination

pytestmark = pytest.mark.timeout(240)

TOPIC = "grouped"
PARTITIONS = 3
SESSION_TIMEOUT_MS = 4000


@pytest.fixture(scope="module", params=["ours", "zookeeper"])
def coord(request, tmp_path_factory):
    service = start_coordination(request.param, tmp_path_factory.mktemp(f"coord-{request.param}"))
    yield service
    service.stop()


@pytest.fixture
def cluster(coord, tmp_path):
    # A chroot per test: the coordination service outlives each test.
    c = BrokerCluster(tmp_path / "cluster", coord, chroot=f"/groups-{tmp_path.name}",
                      session_timeout_ms=SESSION_TIMEOUT_MS,
                      broker_args=["--default-replication-factor", "3", "--min-insync-replicas", "2",
                                   "--replica-lag-time-max-ms", "3000"])
    yield c
    c.stop()
    print(c.log_tails())


def produce(bootstrap, prefix, count):
    """`count` values `prefix-i` with acks=all; returns the acknowledged values."""
    acked = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "message.timeout.ms": 60000})

    def done(err, msg):
        if err is None:
            acked.append(msg.value().decode())
    for i in range(count):
        producer.produce(TOPIC, f"{prefix}-{i}".encode(), key=str(i).encode(), on_delivery=done)
        producer.poll(0)
    assert producer.flush(90) == 0, "messages left unacknowledged"
    assert len(acked) == count
    return acked


def coordinator_of(c, group):
    """The broker id FindCoordinator names for `group` (confluent-kafka's DescribeGroups
    goes to it)."""
    def check():
        admin = AdminClient({"bootstrap.servers": c.bootstrap(), "socket.timeout.ms": 5000})
        found = admin.describe_consumer_groups([group], request_timeout=10)[group].result(15).coordinator.id
        assert found is not None and found >= 0, f"no coordinator: {found}"
        return found
    return eventually(check, 60, f"a coordinator for {group}")


def consume_confluent(bootstrap, group, want, timeout=60):
    """Values read by a confluent-kafka group member (offsets committed synchronously), until
    `want` values came or `timeout` passed."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 10000})
    got = []
    try:
        consumer.subscribe([TOPIC])
        deadline = time.time() + timeout
        while len(got) < want and time.time() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            got.append(msg.value().decode())
            consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()
    return got


def test_committed_offsets_survive_the_coordinators_kill(cluster):
    """A group's committed offsets are replicated: after kill -9 of its coordinator another
    broker coordinates it and the group resumes exactly after its last commit."""
    c = cluster
    admin = AdminClient({"bootstrap.servers": c.bootstrap()})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3, config={"min.insync.replicas": "2"})])[TOPIC].result(30)
    first = produce(c.bootstrap(), "a", 300)
    group = "survivors"
    got = consume_confluent(c.bootstrap(), group, 300)
    assert sorted(got) == sorted(first)
    offsets = c.children("/brokers/topics/__consumer_offsets/partitions")
    assert offsets, "__consumer_offsets was created"
    assert all(len(r) == 3 for r in c.assignment("__consumer_offsets").values()), "replicated 3 ways"

    victim = coordinator_of(c, group)
    c.kill9(victim)

    def moved():
        assert coordinator_of(c, group) != victim, f"broker {victim} still named coordinator"
    eventually(moved, SESSION_TIMEOUT_MS / 1000 + 30, "the group's coordinator to move")
    second = produce(c.bootstrap(), "b", 200)
    resumed = consume_confluent(c.bootstrap(), group, 200)
    assert sorted(resumed) == sorted(second), "the group re-read committed records or skipped some"
    c.restart(victim)


def test_kafka_python_and_kcat_consume_across_a_leader_move(cluster):
    """kafka-python and `kcat -G` groups read every record once across a leader move."""
    c = cluster
    admin = AdminClient({"bootstrap.servers": c.bootstrap()})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3, config={"min.insync.replicas": "2"})])[TOPIC].result(30)
    c.wait_isr_full(TOPIC, PARTITIONS)
    first = produce(c.bootstrap(), "a", 200)

    consumer = KafkaConsumer(TOPIC, bootstrap_servers=c.bootstrap(), group_id="kp", auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=20000, session_timeout_ms=10000)
    seen = []
    try:
        for msg in consumer:
            seen.append(msg.value.decode())
            if len(seen) == len(first):
                break
        consumer.commit()
        assert sorted(seen) == sorted(first)
        # Move the leadership of partition 0 (SIGTERM: a controlled shutdown hands it over).
        leader = c.partition_state(TOPIC, 0)["leader"]
        assert c.terminate(leader) == 0
        second = produce(c.bootstrap(), "b", 200)
        more = []
        for msg in consumer:
            more.append(msg.value.decode())
            if len(more) == len(second):
                break
        assert sorted(more) == sorted(second), "kafka-python skipped or repeated records"
        consumer.commit()
    finally:
        consumer.close()
    c.restart(leader)
    c.wait_isr_full(TOPIC, PARTITIONS)

    # kcat as a group member reads everything once from the start.
    done = subprocess.run(["kcat", "-b", c.bootstrap(), "-G", "kcat-group", TOPIC, "-e", "-q",
                           "-X", "auto.offset.reset=earliest", "-f", "%s\n"],
                          capture_output=True, text=True, timeout=120)
    values = [v for v in done.stdout.splitlines() if v]
    assert sorted(values) == sorted(first + second), done.stderr[-2000:]
