"""Proves cluster mode of the broker (registration, controller, topic metadata) against two
coordination services, our `coordinator` as a 3-server ensemble
and Apache ZooKeeper 3.8: brokers register the znodes Kafka's ZooKeeper mode writes (read back
with kazoo), one is elected controller and another takes over when it is killed, a live id is
refused, topics created and deleted through any broker land in the znodes and in every
broker's Metadata, real clients (confluent-kafka, kafka-python, kcat) produce and consume
through the cluster, and a killed partition leader's partitions go offline and come back with
their data. How: each module run (one per coordination flavour) starts the service on free
loopback ports, a shared 3-broker cluster at its root, and per-test clusters under their own
chroots for the tests that kill brokers; everything is stopped at teardown."""

import base64
import collections
import json
import re
import socket
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka import TopicCollection
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition as KpTopicPartition
from kazoo.protocol.states import EventType

from conftest import broker_bin
from cluster import (SESSION_TIMEOUT_MS, BrokerCluster, eventually, serve_args, start_coordination,
                     stop_zk_client, zk_client)

pytestmark = pytest.mark.timeout(120)

RACK = "rack-c"  # the shared cluster's broker 3 runs with --rack
SESSION_S = SESSION_TIMEOUT_MS / 1000
HOST = "127.0.0.1"
TOPIC_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")  # a UUID in unpadded base64url
DESCRIBE_LINE = re.compile(
    r"^partition (\d+) leader (-?\d+) epoch (-?\d+) replicas ([\d,]*) isr ([\d,]*)( offline)?$")


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["ours", "zookeeper"])
def coord(request, tmp_path_factory):
    """The coordination service: our coordinator (3-server ensemble) or Apache ZooKeeper."""
    service = start_coordination(request.param, tmp_path_factory.mktemp(f"coord-{request.param}"))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def cluster(coord, tmp_path_factory):
    """Three brokers (ids 1, 2, 3; broker 3 with a rack) registered at the service's root."""
    c = BrokerCluster(tmp_path_factory.mktemp("cluster"), coord, racks={3: RACK})
    yield c
    c.stop()


@pytest.fixture
def new_cluster(coord, tmp_path):
    """make(chroot, ids, racks): a cluster of this test's own under `chroot`; all stopped at
    teardown (their stderr tails are printed, shown when the test fails)."""
    made = []

    def make(chroot, ids=(1, 2, 3), racks=None):
        c = BrokerCluster(tmp_path / f"cluster{len(made)}", coord, ids=ids, chroot=chroot, racks=racks)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
        print(c.log_tails())


@pytest.fixture(autouse=True)
def print_logs_written_during_the_test(request, coord):
    """Prints what the shared cluster's brokers and the service logged during the test (pytest
    shows it only for a failing test)."""
    shared = request.getfixturevalue("cluster") if "cluster" in request.fixturenames else None
    marks = {}
    if shared is not None:
        marks = {i: _size(b.stderr_path) for i, b in shared.brokers.items()}
    yield
    for i, start in marks.items():
        path = shared.brokers[i].stderr_path
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace").splitlines()
        print(f"--- shared broker {i} stderr during the test (last 60 lines) ---")
        print("\n".join(text[-60:]))
    print(coord.log_tails())


def _size(path):
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- helpers -------------------------------------------------------------------------------

def admin_client(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def create_topic(bootstrap, name, partitions, rf=1, config=None):
    """CreateTopics through `bootstrap` with confluent-kafka; raises KafkaException if refused."""
    admin = admin_client(bootstrap)  # must outlive the future: destroying it fails the request
    futures = admin.create_topics(
        [NewTopic(name, partitions, rf, config=dict(config or {}))], operation_timeout=15, request_timeout=20)
    futures[name].result(timeout=30)


def refusal_code(bootstrap, name, partitions, rf):
    """The error code CreateTopics answers (None when it succeeds)."""
    try:
        create_topic(bootstrap, name, partitions, rf)
        return None
    except KafkaException as err:
        return err.args[0].code()


def wait_partitions_led(c, topic, partitions, timeout=15):
    """Waits until every partition's state znode has a leader; returns {p: state}."""
    def check():
        states = {p: c.partition_state(topic, p) for p in range(partitions)}
        assert all(s["leader"] >= 0 for s in states.values()), states
        return states
    return eventually(check, timeout, f"state znodes of {topic} with leaders")


def metadata_from(c, broker_id, topic=None):
    """confluent-kafka list_topics answered by broker `broker_id` itself (bootstrap = it only)."""
    port = c[broker_id].port

    def check():
        # A fresh client each time: one that has learned the other brokers may ask them.
        md = admin_client(c[broker_id].bootstrap).list_topics(topic=topic, timeout=10)
        origin = f"{md.orig_broker_name}"
        assert md.orig_broker_id == broker_id or f":{port}/" in origin, \
            f"answered by {md.orig_broker_id} {origin}, not broker {broker_id}"
        return md
    return eventually(check, 10, f"Metadata from broker {broker_id}")


def metadata_leaders(md, topic):
    t = md.topics[topic]
    assert t.error is None, t.error
    return {p: (pm.leader, list(pm.replicas), list(pm.isrs)) for p, pm in t.partitions.items()}


def produce(bootstrap, topic, messages, partition=None, timeout=30):
    """Produces (key, value) pairs with acks=all; returns [(partition, offset, key, value)] in
    send order. Fails if any delivery failed."""
    results = [None] * len(messages)
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": False, "message.timeout.ms": 20000})
    extra = {} if partition is None else {"partition": partition}
    for i, (key, value) in enumerate(messages):
        def delivered(err, msg, i=i):
            if err is not None:
                errors.append((i, err))
            else:
                results[i] = (msg.partition(), msg.offset(), msg.key(), msg.value())
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=delivered, **extra)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(timeout)
    assert left == 0, f"{left} messages not delivered within {timeout} s"
    assert not errors, f"{len(errors)} delivery errors, first {errors[:3]}"
    return results


def keyed(prefix, count, keys=97):
    return [(f"key-{i % keys}".encode(), f"{prefix}-{i}".encode()) for i in range(count)]


def read_with_kafka_python(bootstrap, topic, partitions, timeout=30):
    """Everything in the partitions up to their end offsets, read by kafka-python without a
    group: ({(p, offset): (key, value)}, {p: [offsets in arrival order]})."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", request_timeout_ms=15000)
    try:
        tps = [KpTopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        got, order = {}, collections.defaultdict(list)
        deadline = time.time() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.time() < deadline, \
                f"kafka-python: positions {[consumer.position(tp) for tp in tps]} ends {ends}"
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    got[(tp.partition, r.offset)] = (r.key, r.value)
                    order[tp.partition].append(r.offset)
        return got, order
    finally:
        consumer.close()


def read_with_kcat(bootstrap, topic, timeout=60):
    """`kcat -C -b <one broker> -t T -o beginning -e`: ({(p, offset): (key, value)}, order)."""
    done = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
                           "-f", r"%p\t%o\t%k\t%s\n"], capture_output=True, timeout=timeout)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    got, order = {}, collections.defaultdict(list)
    for line in done.stdout.decode().splitlines():
        p, o, k, v = line.split("\t")
        got[(int(p), int(o))] = (k.encode(), v.encode())
        order[int(p)].append(int(o))
    return got, order


def describe(c, topic, via):
    """`broker topics describe TOPIC` through broker `via`: {p: (leader, epoch, replicas, isr, offline)}."""
    done = c.cli("topics", "describe", topic, "--bootstrap", c[via].bootstrap)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and lines[0].startswith(f"topic {topic} id "), done.stdout
    rows = {}
    for line in lines[1:]:
        m = DESCRIBE_LINE.match(line.strip())
        if m:
            ids = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
            rows[int(m.group(1))] = (int(m.group(2)), int(m.group(3)), ids(m.group(4)), ids(m.group(5)),
                                     m.group(6) is not None)
    assert rows, f"no `partition <p> leader ...` lines in:\n{done.stdout}"
    return rows


def topic_dirs(c, broker_id, topic):
    pattern = re.compile(rf"^{re.escape(topic)}-\d+($|\.)")
    return sorted(p.name for p in c.data_dir(broker_id).iterdir() if pattern.match(p.name))


# --- tests ---------------------------------------------------------------------------------

def test_brokers_register_the_znodes_kafka_writes(cluster):
    """Three brokers register Kafka's v5 /brokers/ids JSON, /cluster/id, /controller and /controller_epoch."""
    now_ms = time.time() * 1000
    assert cluster.children("/brokers/ids") == ["1", "2", "3"]
    for i in (1, 2, 3):
        data, stat = cluster.get(f"/brokers/ids/{i}")
        reg = json.loads(data)
        port = cluster[i].port
        assert stat.ephemeralOwner != 0, "broker registration must be ephemeral"
        assert reg["version"] == 5
        assert reg["host"] == HOST and reg["port"] == port
        assert reg["endpoints"] == [f"PLAINTEXT://{HOST}:{port}"]
        assert reg["listener_security_protocol_map"] == {"PLAINTEXT": "PLAINTEXT"}
        assert isinstance(reg["timestamp"], str) and reg["timestamp"].isdigit(), reg["timestamp"]
        assert now_ms - 300_000 < int(reg["timestamp"]) <= now_ms + 5_000
        if i == 3:
            assert reg.get("rack") == RACK
        else:
            assert "rack" not in reg, reg

    data, stat = cluster.get("/cluster/id")
    cid = json.loads(data)
    assert stat.ephemeralOwner == 0
    assert cid["version"] == "1" and set(cid) == {"version", "id"}, cid
    assert TOPIC_ID.match(cid["id"]), cid

    data, stat = eventually(lambda: cluster.get("/controller"), 10, "/controller")
    ctl = json.loads(data)
    assert stat.ephemeralOwner != 0, "/controller must be ephemeral"
    assert ctl["version"] == 1 and ctl["brokerid"] in (1, 2, 3), ctl
    assert isinstance(ctl["timestamp"], str) and ctl["timestamp"].isdigit(), ctl

    data, stat = cluster.get("/controller_epoch")
    assert stat.ephemeralOwner == 0
    assert re.fullmatch(rb"\d+", data), data
    assert int(data) >= 1, "one election has happened"


def test_chroot_is_created_and_holds_everything(coord, cluster, new_cluster):
    """A chroot in the connect string is created if missing and every znode lives under it."""
    root = zk_client(coord.connect)
    try:
        assert root.exists("/streambox-test") is None
        c = new_cluster("/streambox-test", ids=(7,))

        def everything_under_the_chroot():
            for path in ("/brokers/ids/7", "/cluster/id", "/controller", "/controller_epoch", "/brokers/topics",
                         "/config/topics", "/admin/delete_topics"):
                assert root.exists("/streambox-test" + path), f"/streambox-test{path} missing"
        eventually(everything_under_the_chroot, 10, "the znodes under /streambox-test")
        assert c.children("/brokers/ids") == ["7"]
        assert c.controller_id() == 7
        # Nothing of the chrooted cluster at the root, where the shared cluster lives.
        assert root.exists("/brokers/ids/7") is None
        assert json.loads(root.get("/controller")[0])["brokerid"] != 7
        root_cid = json.loads(root.get("/cluster/id")[0])["id"]
        assert c.cluster_id() != root_cid, "the chrooted cluster must have its own cluster id"

        done = c.cli("topics", "create", "in-chroot", "--partitions", "2", "--bootstrap", c[7].bootstrap)
        assert done.returncode == 0, done.stderr
        wait_partitions_led(c, "in-chroot", 2)
        assert root.exists("/streambox-test/brokers/topics/in-chroot/partitions/1/state")
        assert root.exists("/brokers/topics/in-chroot") is None
        assert root.exists("/config/topics/in-chroot") is None
        assert metadata_from(c, 7).cluster_id == c.cluster_id()
    finally:
        stop_zk_client(root)


def test_live_broker_id_is_refused(new_cluster, tmp_path):
    """A second broker with a live broker's id exits non-zero saying `already registered`; the first is untouched."""
    c = new_cluster("/streambox-dup", ids=(1,))
    before, before_stat = c.get("/brokers/ids/1")
    started = time.time()
    dup = subprocess.Popen(serve_args(tmp_path / "dup" / "data", 1, c.connect), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out, err = dup.communicate(timeout=SESSION_S + 10)
    except subprocess.TimeoutExpired:
        dup.kill()
        out, err = dup.communicate()
        pytest.fail(f"duplicate id still running after {SESSION_S + 10:.0f} s; stdout {out[-300:]!r} "
                    f"stderr {err.decode(errors='replace')[-2000:]}")
    finally:
        if dup.poll() is None:
            dup.kill()
            dup.wait()
    took = time.time() - started
    stderr = err.decode(errors="replace")
    print(f"duplicate id refused after {took:.1f} s, exit {dup.returncode}\n{stderr[-2000:]}")
    assert dup.returncode != 0
    assert "already registered" in stderr
    assert b"listening on" not in out
    after, after_stat = c.get("/brokers/ids/1")
    assert after == before
    assert (after_stat.czxid, after_stat.ephemeralOwner) == (before_stat.czxid, before_stat.ephemeralOwner)
    assert c[1].proc.poll() is None, "the live broker must keep running"
    md = metadata_from(c, 1)
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {1: (HOST, c[1].port)}


def test_controller_fails_over_when_killed(new_cluster):
    """kill -9 of the controller: another live broker takes /controller with a higher epoch; the dead one deregisters."""
    c = new_cluster("/streambox-failover")
    old, old_epoch = c.controller_id(), c.controller_epoch()
    killed_at = time.time()
    c.kill9(old)
    survivors = [i for i in (1, 2, 3) if i != old]

    def check():
        new = c.controller_id()
        assert new in survivors, f"/controller still names {new}"
        epoch = c.controller_epoch()
        assert epoch > old_epoch, f"/controller_epoch {epoch}, was {old_epoch}"
        assert c.registered_ids() == survivors
        return new, epoch
    new, epoch = eventually(check, SESSION_S + 5, "a new controller")
    print(f"controller {old} -> {new}, epoch {old_epoch} -> {epoch}, after {time.time() - killed_at:.1f} s")
    assert all(c[i].proc.poll() is None for i in survivors)

    def metadata_agrees():
        for i in survivors:
            md = metadata_from(c, i)
            assert md.controller_id == new, f"broker {i} reports controller {md.controller_id}"
            assert sorted(md.brokers) == survivors
    eventually(metadata_agrees, 10, "survivors' Metadata to name the new controller")


def test_topics_land_in_znodes_and_every_brokers_metadata(cluster):
    """CreateTopics through broker 2 writes Kafka's topic znodes; every broker's Metadata agrees; RF 2 is refused (for now)."""
    topic = "placed"
    create_topic(cluster[2].bootstrap, topic, 6, 1, {"retention.ms": "3600000"})
    states = wait_partitions_led(cluster, topic, 6)

    reg = cluster.get_json(f"/brokers/topics/{topic}")
    assert reg["version"] == 3
    assert TOPIC_ID.match(reg["topic_id"]), reg
    assert reg.get("adding_replicas", {}) == {} and reg.get("removing_replicas", {}) == {}
    assignment = cluster.assignment(topic)
    assert sorted(assignment) == list(range(6))
    assert all(len(r) == 1 for r in assignment.values()), assignment
    per_broker = collections.Counter(r[0] for r in assignment.values())
    assert set(per_broker) == {1, 2, 3}, f"not spread over the 3 brokers: {assignment}"
    assert max(per_broker.values()) - min(per_broker.values()) <= 1, assignment
    assert cluster.children(f"/brokers/topics/{topic}/partitions") == [str(p) for p in range(6)]

    controller_epoch = cluster.controller_epoch()
    for p, s in states.items():
        assert s["version"] == 1
        assert s["leader"] in assignment[p] and s["isr"] == [s["leader"]], (p, s)
        assert s["leader_epoch"] == 0, (p, s)
        assert s["controller_epoch"] == controller_epoch, (p, s)

    assert cluster.get_json(f"/config/topics/{topic}") == {"version": 1, "config": {"retention.ms": "3600000"}}

    expected = {p: (states[p]["leader"], assignment[p], states[p]["isr"]) for p in range(6)}
    cid, ctl = cluster.cluster_id(), cluster.controller_id()
    brokers = {i: (HOST, cluster[i].port) for i in (1, 2, 3)}

    def every_broker_agrees():
        for i in (1, 2, 3):
            md = metadata_from(cluster, i, topic)
            assert md.cluster_id == cid, f"broker {i}: cluster id {md.cluster_id}"
            assert md.controller_id == ctl, f"broker {i}: controller {md.controller_id}"
            assert {b.id: (b.host, b.port) for b in md.brokers.values()} == brokers, f"broker {i}"
            assert metadata_leaders(md, topic) == expected, f"broker {i}"
    eventually(every_broker_agrees, 10, "every broker's Metadata to match the znodes")

    admin = admin_client(cluster[2].bootstrap)
    desc = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=15)
    # librdkafka prints a Uuid in standard base64 ('+', '/'), Kafka in base64url: compare bytes.
    assert base64.b64decode(str(desc.topic_id) + "==") == base64.urlsafe_b64decode(reg["topic_id"] + "==")

    for i in (1, 2, 3):
        kp = KafkaAdminClient(bootstrap_servers=cluster[i].bootstrap, request_timeout_ms=10000)
        try:
            info = kp.describe_cluster()
        finally:
            kp.close()
        assert info["cluster_id"] == cid and info["controller_id"] == ctl, (i, info)
        assert sorted(b["broker_id"] for b in info["brokers"]) == [1, 2, 3], (i, info)

    # Replication factor 2: two replicas per partition, both in the ISR.
    code = refusal_code(cluster[2].bootstrap, "replicated", 3, 2)
    assert code is None
    assert all(len(r) == 2 for r in cluster.assignment("replicated").values())
    # More replicas than live brokers: refused either way, as Kafka does.
    assert refusal_code(cluster[1].bootstrap, "too-replicated", 1, 4) == KafkaError.INVALID_REPLICATION_FACTOR
    assert not cluster.exists("/brokers/topics/too-replicated")

    # `broker topics describe`: one line per partition, the same as the znodes.
    rows = describe(cluster, topic, 1)
    assert rows == {p: (states[p]["leader"], 0, assignment[p], states[p]["isr"], False) for p in range(6)}, rows


def test_keyed_messages_round_trip_through_the_cluster(cluster):
    """3000 keyed messages produced (acks=all) to all brokers come back via kcat and kafka-python, in per-partition order."""
    topic = "roundtrip"
    create_topic(cluster[1].bootstrap, topic, 6)
    wait_partitions_led(cluster, topic, 6)
    sent = produce(cluster.bootstrap(), topic, keyed("v", 3000))
    expected = {(p, o): (k, v) for p, o, k, v in sent}
    assert len(expected) == 3000, "two messages acknowledged at the same offset"
    by_partition = collections.defaultdict(list)
    for p, o, k, v in sent:
        by_partition[p].append(o)
    assert len(by_partition) > 1, "keys should spread over partitions"
    for p, offsets in by_partition.items():
        assert offsets == list(range(len(offsets))), f"partition {p}: acked offsets not in send order"
    keys = collections.defaultdict(set)
    for p, o, k, v in sent:
        keys[k].add(p)
    assert all(len(ps) == 1 for ps in keys.values())

    for name, (got, order) in (("kcat", read_with_kcat(cluster[3].bootstrap, topic)),
                               ("kafka-python", read_with_kafka_python(cluster[2].bootstrap, topic, range(6)))):
        missing = set(expected) - set(got)
        assert not missing, f"{name}: {len(missing)} messages missing, e.g. {sorted(missing)[:5]}"
        assert got == expected, f"{name}: extra or altered messages"
        for p, offsets in order.items():
            assert offsets == sorted(offsets) == by_partition[p], f"{name}: partition {p} out of order"

    # Each broker keeps logs only for the partitions assigned to it.
    assignment = cluster.assignment(topic)
    for i in (1, 2, 3):
        hosted = sorted(f"{topic}-{p}" for p, r in assignment.items() if i in r)
        assert topic_dirs(cluster, i, topic) == hosted, f"broker {i}: {topic_dirs(cluster, i, topic)}"


def test_killed_leader_partitions_go_offline_and_come_back(new_cluster):
    """kill -9 of a partition leader: its partitions go offline (leader -1, ISR kept), others take writes; after restart it leads them again with their data."""
    c = new_cluster("/streambox-offline")
    topic = "offline"
    done = c.cli("topics", "create", topic, "--partitions", "6", "--replication-factor", "1",
                 "--bootstrap", c[1].bootstrap)
    assert done.returncode == 0, done.stderr
    before = wait_partitions_led(c, topic, 6)
    sent = produce(c.bootstrap(), topic, keyed("before", 600))
    controller = c.controller_id()
    leaders = {p: s["leader"] for p, s in before.items()}
    candidates = [i for i in (1, 2, 3) if i != controller and i in leaders.values()] or sorted(set(leaders.values()))
    victim = candidates[0]
    mine = sorted(p for p, l in leaders.items() if l == victim)
    others = sorted(set(range(6)) - set(mine))
    survivors = [i for i in (1, 2, 3) if i != victim]

    killed_at = time.time()
    c.kill9(victim)

    def offline():
        states = {p: c.partition_state(topic, p) for p in range(6)}
        for p in mine:
            assert states[p]["leader"] == -1 and states[p]["isr"] == [victim], (p, states[p])
        for p in others:
            assert states[p]["leader"] == leaders[p], (p, states[p])
        return states
    during = eventually(offline, 10, f"broker {victim}'s partitions {mine} to go offline")
    print(f"partitions {mine} of broker {victim} offline after {time.time() - killed_at:.1f} s")
    assert victim not in c.registered_ids()
    for p in mine:
        assert during[p]["leader_epoch"] in (before[p]["leader_epoch"], before[p]["leader_epoch"] + 1), during[p]

    def described_offline():
        rows = describe(c, topic, survivors[0])
        assert sorted(rows) == list(range(6)), rows
        for p in mine:
            assert rows[p][0] == -1 and rows[p][4], (p, rows[p])
        for p in others:
            assert rows[p][0] == leaders[p] and not rows[p][4], (p, rows[p])
    eventually(described_offline, 10, "`broker topics describe` to mark them offline")

    outage = []
    for p in others:
        outage += produce(c.bootstrap(survivors), topic, keyed(f"during-{p}", 20), partition=p)

    c[victim].start()

    def back():
        states = {p: c.partition_state(topic, p) for p in range(6)}
        for p in mine:
            s = states[p]
            assert s["leader"] == victim and s["isr"] == [victim], (p, s)
            assert s["leader_epoch"] == during[p]["leader_epoch"] + 1, (p, s, during[p])
        return states
    eventually(back, 15, f"broker {victim} to lead {mine} again")
    assert victim in c.registered_ids()

    after = []
    for p in mine:
        after += produce(c.bootstrap(), topic, keyed(f"after-{p}", 10), partition=p)
    expected = {(p, o): (k, v) for p, o, k, v in sent + outage + after}
    assert len(expected) == len(sent) + len(outage) + len(after), "offsets acknowledged twice"
    got, _ = read_with_kafka_python(c[victim].bootstrap, topic, range(6))
    lost = {k: v for k, v in expected.items() if got.get(k) != v}
    assert not lost, f"{len(lost)} acknowledged messages missing or altered, e.g. {sorted(lost)[:5]}"
    assert got == expected


def test_delete_topic_removes_znodes_and_logs(cluster):
    """DeleteTopics through a broker removes the topic's znodes (via /admin/delete_topics) and its log directories."""
    topic = "doomed"
    create_topic(cluster[1].bootstrap, topic, 6, 1, {"retention.ms": "3600000"})
    wait_partitions_led(cluster, topic, 6)
    for p in range(6):
        produce(cluster.bootstrap(), topic, [(b"k", b"v")], partition=p)
    assignment = cluster.assignment(topic)
    for i in (1, 2, 3):
        hosted = {f"{topic}-{p}" for p, r in assignment.items() if i in r}
        assert hosted <= set(topic_dirs(cluster, i, topic)), f"broker {i} before delete: {topic_dirs(cluster, i, topic)}"
    assert cluster.exists(f"/config/topics/{topic}")

    created = threading.Event()
    cluster.zk.exists(f"/admin/delete_topics/{topic}",
                      watch=lambda event: event.type == EventType.CREATED and created.set())
    admin = admin_client(cluster[3].bootstrap)
    futures = admin.delete_topics([topic], operation_timeout=15, request_timeout=20)
    futures[topic].result(timeout=30)

    def gone():
        for path in (f"/brokers/topics/{topic}", f"/config/topics/{topic}", f"/admin/delete_topics/{topic}"):
            assert not cluster.exists(path), f"{path} still there"
        for i in (1, 2, 3):
            assert topic_dirs(cluster, i, topic) == [], f"broker {i} still has {topic_dirs(cluster, i, topic)}"
    eventually(gone, 15, "the topic's znodes and directories to vanish")
    assert created.is_set(), f"/admin/delete_topics/{topic} was never created"

    def unknown_everywhere():
        for i in (1, 2, 3):
            md = metadata_from(cluster, i)
            assert topic not in md.topics, f"broker {i} still lists {topic}"
    eventually(unknown_everywhere, 10, "every broker's Metadata to drop the topic")


def test_cluster_command_lists_brokers_and_controller(cluster):
    """`broker cluster --bootstrap` prints the cluster id, the controller and each live broker (with its rack)."""
    expected_brokers = {f"broker 1 {HOST}:{cluster[1].port}", f"broker 2 {HOST}:{cluster[2].port}",
                        f"broker 3 {HOST}:{cluster[3].port} rack {RACK}"}
    for i in (1, 2, 3):
        done = cluster.cli("cluster", "--bootstrap", cluster[i].bootstrap)
        assert done.returncode == 0, done.stderr
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        assert f"cluster id: {cluster.cluster_id()}" in lines, done.stdout
        assert f"controller: {cluster.controller_id()}" in lines, done.stdout
        assert {line for line in lines if line.startswith("broker ")} == expected_brokers, done.stdout


def _fetch_v4(host, port, topic, offset, max_wait_ms, timeout):
    """One consumer Fetch v4 of partition 0 at `offset` on a raw socket: (seconds until the
    answer, error code, high watermark, bytes of records). Raw, to see one long-poll as the
    broker holds it (clients hide theirs behind their own fetch loop)."""
    name = topic.encode()
    client = b"hw-wait"
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, 1 << 20, 0)
    body += struct.pack(">ih", 1, len(name)) + name
    body += struct.pack(">iiqi", 1, 0, offset, 1 << 20)
    header = struct.pack(">hhih", 1, 4, 7, len(client)) + client
    frame = header + body
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        started = time.monotonic()
        s.sendall(struct.pack(">i", len(frame)) + frame)

        def read(n):
            data = b""
            while len(data) < n:
                chunk = s.recv(n - len(data))
                assert chunk, "the broker closed the connection"
                data += chunk
            return data
        size, = struct.unpack(">i", read(4))
        answer = read(size)
        elapsed = time.monotonic() - started
    at = 4 + 4  # correlation id, throttle time
    topics, = struct.unpack_from(">i", answer, at)
    assert topics == 1, answer
    at += 4
    name_len, = struct.unpack_from(">h", answer, at)
    at += 2 + name_len + 4  # topic name, partition count
    _partition, error, high_watermark, _lso, aborted = struct.unpack_from(">ihqqi", answer, at)
    at += 4 + 2 + 8 + 8 + 4 + max(aborted, 0) * 16
    records, = struct.unpack_from(">i", answer, at)
    return elapsed, error, high_watermark, max(records, 0)


def test_consumer_fetch_waits_for_the_high_watermark(new_cluster):
    """A consumer's long-poll at the high watermark is held while appended records are not yet
    replicated (not answered empty at once, which makes clients spin), and answered with them
    as soon as the follower's fetch moves the high watermark."""
    c = new_cluster("/streambox-hw-wait", ids=(1, 2))
    topic = "hw-wait"
    create_topic(c.bootstrap(), topic, 1, rf=2, config={"min.insync.replicas": "1"})
    c.wait_isr_full(topic, 1)
    state = c.partition_state(topic, 0)
    leader = state["leader"]
    follower = next(i for i in (1, 2) if i != leader)
    host, port = c[leader].bootstrap.rsplit(":", 1)
    c.pause(follower)
    try:
        producer = Producer({"bootstrap.servers": c[leader].bootstrap, "acks": "1", "linger.ms": 0})
        reports = []
        producer.produce(topic, value=b"held", partition=0, on_delivery=lambda err, msg: reports.append(err))
        assert producer.flush(20) == 0 and reports == [None], reports
        # The record is in the leader's log; the paused follower keeps the high watermark at 0
        # (it stays in the ISR for replica.lag.time.max.ms, 30 s).
        elapsed, error, high_watermark, records = _fetch_v4(host, int(port), topic, 0, 3000, 20)
        assert (error, high_watermark, records) == (0, 0, 0)
        assert elapsed >= 2.5, f"an empty answer after {elapsed:.3f} s of a 3 s long-poll"
        waiting = {}
        poll = threading.Thread(target=lambda: waiting.update(
            answer=_fetch_v4(host, int(port), topic, 0, 20000, 40)))
        poll.start()
        time.sleep(0.5)
    finally:
        c.resume(follower)
    poll.join(45)
    elapsed, error, high_watermark, records = waiting["answer"]
    assert error == 0 and high_watermark == 1 and records > 0, waiting
    assert elapsed < 15, f"answered only after {elapsed:.1f} s: woken by max_wait, not by the follower"


def test_cli_produce_waits_for_a_topic_created_meanwhile(cluster, tmp_path):
    """`broker produce` to a topic that another client creates a moment later waits for its
    leaders (as librdkafka waits for a topic's metadata) instead of failing at once with
    UNKNOWN_TOPIC_OR_PARTITION; the records land and read back."""
    topic = "created-meanwhile"
    lines = tmp_path / "lines"
    lines.write_text("k1:early\nk2:bird\n")
    with open(lines) as stdin:
        producer = subprocess.Popen(
            [broker_bin(), "produce", "--topic", topic, "--key-separator", ":", "--bootstrap", cluster[1].bootstrap],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert producer.poll() is None, f"gave up before the topic existed: {producer.stderr.read()}"
        create_topic(cluster[2].bootstrap, topic, 3, rf=3)
        out, err = producer.communicate(timeout=30)
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
    assert producer.returncode == 0, err
    assert "produced 2 records" in err, (out, err)
    got, _ = read_with_kafka_python(cluster.bootstrap(), topic, range(3))
    assert sorted(got.values()) == [(b"k1", b"early"), (b"k2", b"bird")], got
