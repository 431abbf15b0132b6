"""Proves consumer groups work with real clients: confluent-kafka and kafka-python
consumers in one group share a 6-partition topic 2 partitions each, a member killed with
SIGKILL (confluent) or closed (kafka-python) has its partitions taken over by the others within
the session timeout, every produced message is consumed at least once with none skipped, and
after every consumer and the broker restart a new consumer resumes from the committed offsets.
The confluent consumers commit every message synchronously and a live member's commit must
succeed: only REBALANCE_IN_PROGRESS / ILLEGAL_GENERATION (Kafka's answers while a group
rebalances) are retried; anything else, UNKNOWN_MEMBER_ID above all, fails the test.
`kcat -G` consumes and commits; `broker groups list|describe` show the group and its lag; the
kafka-python and confluent admin clients list, describe, read the offsets of and delete it.
Bounded by a 10 s session timeout and a 1 s initial rebalance delay
(`--group-initial-rebalance-delay-ms`)."""

import collections
import json
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from conftest import Broker

PARTITIONS = 6
# 10 s, not the broker's 6 s minimum: the shared 2-core development VM was seen to stop the
# broker's (pinned) shard for up to 7 s (logged as "group timers woke N ms late"), and then
# both the coordinator and librdkafka rightly end every session, which is not what this
# test is about. A stall of the broker does not depend on the group code.
SESSION_MS = 10000
# How long after a killed member's session timeout its partitions may take to move.
REBALANCE_AFTER_SESSION_MAX_S = 30
DELAY_ARGS = ("--group-initial-rebalance-delay-ms", "1000")
# What Kafka answers a live member's commit while its group rebalances.
REBALANCE_REFUSALS = {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION}


def produce(bootstrap, topic, start, count):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(topic, value=f"m{i}".encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0


def end_offsets(bootstrap, topic):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe-ends"})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)}
    c.close()
    return ends


def check_all_consumed(seen, ends):
    """seen: set of (partition, offset). Every offset below each end was consumed."""
    for p, end in ends.items():
        missing = [o for o in range(end) if (p, o) not in seen]
        assert not missing, f"partition {p}: offsets {missing[:10]}... never consumed"


CHILD = r"""
import json, sys
from confluent_kafka import Consumer, KafkaError, KafkaException
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
              "session.timeout.ms": %d, "heartbeat.interval.ms": 1000,
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([sys.argv[3]])
last = None
while True:
    m = c.poll(0.2)
    if m is not None and not m.error():
        print(json.dumps(["msg", m.partition(), m.offset()]), flush=True)
        try:
            c.commit(message=m, asynchronous=False)
        except KafkaException as err:
            # Refused while the group rebalances: the partition's next owner re-reads it.
            code = err.args[0].code()
            ok = code in (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION)
            print(json.dumps(["refused" if ok else "error", code, str(err)]), flush=True)
    a = sorted(tp.partition for tp in c.assignment())
    if a != last:
        last = a
        print(json.dumps(["assigned", a]), flush=True)
""" % SESSION_MS


def confluent_consumer(bootstrap, group, topic):
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 1000,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    return c


class Committer:
    """Commits each consumer's newest message per partition synchronously. A commit refused
    with REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION is retried on the next round while the
    consumer still owns the partition (once it moved, its next owner re-reads from the last
    commit); any other refusal fails the test at once."""

    def __init__(self):
        self.pending = {}  # (consumer index, partition) -> newest message not yet committed
        self.refusals = collections.Counter()

    def poll(self, consumers, seen, duration_s):
        end = time.time() + duration_s
        while time.time() < end:
            for i, c in enumerate(consumers):
                m = c.poll(0.05)
                if m is not None and not m.error():
                    seen.add((m.partition(), m.offset()))
                    self.pending[(i, m.partition())] = m
                self.commit(i, c)

    def commit(self, i, c):
        owned = {tp.partition for tp in c.assignment()}
        for (j, partition), m in list(self.pending.items()):
            if j != i:
                continue
            if partition not in owned:
                del self.pending[(j, partition)]
                continue
            try:
                c.commit(message=m, asynchronous=False)
                del self.pending[(j, partition)]
            except KafkaException as err:
                code = err.args[0].code()
                assert code in REBALANCE_REFUSALS, \
                    f"live member's commit of {partition}@{m.offset()} refused: {err}"
                self.refusals[err.args[0].name()] += 1


def test_confluent_group_shares_survives_kill_and_resumes(tmp_path):
    broker = Broker(tmp_path / "data", extra=DELAY_ARGS).start()
    child = None
    try:
        topic, group = "g6", "cg"
        broker.cli("topics", "create", "--bootstrap", broker.bootstrap, topic,
                   "--partitions", str(PARTITIONS))
        produce(broker.bootstrap, topic, 0, 600)
        seen = set()
        child = subprocess.Popen([sys.executable, "-c", CHILD, broker.bootstrap, group, topic],
                                 stdout=subprocess.PIPE, text=True)
        child_assignment = []
        child_errors = []
        child_lock = threading.Lock()

        def read_child():
            for line in child.stdout:
                kind, *rest = json.loads(line)
                with child_lock:
                    if kind == "msg":
                        seen.add((rest[0], rest[1]))
                    elif kind == "assigned":
                        child_assignment[:] = rest[0]
                    elif kind == "error":
                        child_errors.append(rest)
        threading.Thread(target=read_child, daemon=True).start()
        consumers = [confluent_consumer(broker.bootstrap, group, topic) for _ in range(2)]
        committer = Committer()
        deadline = time.time() + 40
        while time.time() < deadline:
            committer.poll(consumers, seen, 0.5)
            sizes = [len(c.assignment()) for c in consumers]
            with child_lock:
                sizes.append(len(child_assignment))
            if sizes == [2, 2, 2]:
                break
        assert sizes == [2, 2, 2], f"assignment sizes {sizes}"
        owned = set(child_assignment)
        with child_lock:
            assert child_errors == [], f"the third member's commits were refused: {child_errors}"

        child.kill()
        child.wait()
        killed_at = time.time()
        produce(broker.bootstrap, topic, 600, 600)
        while time.time() < killed_at + SESSION_MS / 1000 + REBALANCE_AFTER_SESSION_MAX_S:
            committer.poll(consumers, seen, 0.3)
            together = set()
            for c in consumers:
                together |= {tp.partition for tp in c.assignment()}
            if together == set(range(PARTITIONS)):
                break
        took = time.time() - killed_at
        print(f"rebalance after SIGKILL took {took:.1f} s (session timeout {SESSION_MS} ms)")
        assert together == set(range(PARTITIONS)), f"after kill: {together}, lost {owned}"
        # The dead member goes when its session times out, not at the rebalance timeout
        # (max.poll.interval.ms, 300 s): the margin past the session is wide for a loaded box.
        assert took <= SESSION_MS / 1000 + REBALANCE_AFTER_SESSION_MAX_S
        ends = end_offsets(broker.bootstrap, topic)
        deadline = time.time() + 30
        while time.time() < deadline and (committer.pending or not all(
                (p, e - 1) in seen for p, e in ends.items())):
            committer.poll(consumers, seen, 0.5)
        check_all_consumed(seen, ends)
        print(f"commits refused during rebalances (retried): {dict(committer.refusals)}")
        committed = {tp.partition: tp.offset
                     for tp in consumers[0].committed(
                         [__import__("confluent_kafka").TopicPartition(topic, p)
                          for p in range(PARTITIONS)], timeout=10)}
        assert committed == ends, f"committed {committed} vs ends {ends}"
        for c in consumers:
            c.close()

        # Everything restarts: the broker (clean stop) and a new consumer of the group.
        assert broker.stop() == 0
        broker.start()
        produce(broker.bootstrap, topic, 1200, 60)
        c = confluent_consumer(broker.bootstrap, group, topic)
        firsts = {}
        deadline = time.time() + 30
        count = 0
        while time.time() < deadline and count < 60:
            m = c.poll(0.2)
            if m is not None and not m.error():
                firsts.setdefault(m.partition(), m.offset())
                count += 1
        c.close()
        assert count == 60, f"after restart consumed {count} of the 60 new messages"
        assert firsts == committed, f"resumed at {firsts}, committed {committed}"
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        broker.stop()


class PythonMember(threading.Thread):
    """A kafka-python group consumer polling in its own thread (its group protocol blocks
    inside poll, so members must not share a thread)."""

    def __init__(self, bootstrap, group, topic, seen, lock):
        super().__init__(daemon=True)
        from kafka import KafkaConsumer
        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                      session_timeout_ms=SESSION_MS, heartbeat_interval_ms=1000,
                                      auto_offset_reset="earliest", enable_auto_commit=False)
        self.seen, self.lock = seen, lock
        self.stopping = threading.Event()
        self.assigned = set()
        self.refused = []  # commits refused while the group rebalanced (retried next poll)
        self.unexpected = []  # any other refusal: the test fails on it
        self.start()

    def run(self):
        while not self.stopping.is_set():
            batch = self.consumer.poll(timeout_ms=100)
            with self.lock:
                for records in batch.values():
                    for r in records:
                        self.seen.append((r.partition, r.offset))
            if batch:
                self.commit()
            self.assigned = {tp.partition for tp in self.consumer.assignment()}

    def commit(self):
        from kafka import errors
        try:
            self.consumer.commit()
        except Exception as err:
            # kafka-python wraps the coordinator's answer in CommitFailedError; only the
            # rebalance ones are expected from a live member (the next poll rejoins and the
            # commit is redone with the next batch). "Kicked out of the group" or
            # UNKNOWN_MEMBER_ID is not.
            cause = err.args[0] if isinstance(err, errors.CommitFailedError) and err.args else err
            rebalance = (errors.RebalanceInProgressError, errors.IllegalGenerationError)
            (self.refused if isinstance(cause, rebalance) else self.unexpected).append(repr(cause))

    def close(self):
        self.stopping.set()
        self.join(10)
        self.consumer.close()


def test_kafka_python_group_shares_and_resumes(tmp_path):
    from kafka import TopicPartition
    broker = Broker(tmp_path / "data", extra=DELAY_ARGS).start()
    members = []
    try:
        topic, group = "kp6", "kpg"
        broker.cli("topics", "create", "--bootstrap", broker.bootstrap, topic,
                   "--partitions", str(PARTITIONS))
        produce(broker.bootstrap, topic, 0, 600)
        seen, lock = [], threading.Lock()
        members = [PythonMember(broker.bootstrap, group, topic, seen, lock) for _ in range(3)]
        deadline = time.time() + 40
        while time.time() < deadline:
            sizes = [len(m.assigned) for m in members]
            if sizes == [2, 2, 2]:
                break
            time.sleep(0.2)
        assert sizes == [2, 2, 2], f"assignment sizes {sizes}"
        leaving = members.pop()
        leaving.close()
        left_at = time.time()
        produce(broker.bootstrap, topic, 600, 600)
        together = set()
        while time.time() < left_at + SESSION_MS / 1000 + 10:
            together = set().union(*(m.assigned for m in members))
            if together == set(range(PARTITIONS)):
                break
            time.sleep(0.2)
        assert together == set(range(PARTITIONS))
        ends = end_offsets(broker.bootstrap, topic)
        deadline = time.time() + 30
        while time.time() < deadline:
            with lock:
                got = set(seen)
            if all((p, e - 1) in got for p, e in ends.items()):
                break
            time.sleep(0.2)
        check_all_consumed(got, ends)
        for m in members:
            m.stopping.set()
            m.join(10)
        for m in members:
            m.commit()
        assert [m.unexpected for m in members] == [[], []], "a live member's commit was refused"
        print(f"commits refused during rebalances: {[m.refused for m in members]}")
        committed = {p: members[0].consumer.committed(TopicPartition(topic, p))
                     for p in range(PARTITIONS)}
        assert committed == ends
        for m in members:
            m.consumer.close()
        members = []

        assert broker.stop() == 0
        broker.start()
        produce(broker.bootstrap, topic, 1200, 60)
        after, lock = [], threading.Lock()
        members = [PythonMember(broker.bootstrap, group, topic, after, lock)]
        deadline = time.time() + 30
        while time.time() < deadline and len(after) < 60:
            time.sleep(0.2)
        with lock:
            firsts = {}
            for p, o in after:
                firsts.setdefault(p, o)
            assert len(after) == 60
        assert firsts == committed
    finally:
        for m in members:
            try:
                m.close()
            except Exception:
                pass
        broker.stop()


def test_kcat_group_consumes_and_commits(tmp_path):
    broker = Broker(tmp_path / "data").start()
    try:
        broker.cli("topics", "create", "--bootstrap", broker.bootstrap, "kc",
                   "--partitions", str(PARTITIONS))
        produce(broker.bootstrap, "kc", 0, 120)

        def kcat_group():
            started = time.time()
            out = subprocess.run(
                ["kcat", "-b", broker.bootstrap, "-G", "kg", "kc", "-e", "-q",
                 "-X", "auto.offset.reset=earliest", "-f", "%p %o\n"],
                capture_output=True, timeout=60, check=True).stdout.decode()
            return out.split(), time.time() - started
        first, took = kcat_group()
        print(f"kcat -G with default settings: joined and consumed to the end in {took:.1f} s")
        assert len(first) == 2 * 120
        again, _ = kcat_group()
        assert again == [], "offsets committed by the first run were not used"
        listed = broker.cli("groups", "list", "--bootstrap", broker.bootstrap).stdout.decode()
        assert any(line.split()[:2] == ["kg", "Empty"] for line in listed.splitlines())
        described = broker.cli("groups", "describe", "--bootstrap", broker.bootstrap,
                               "kg").stdout.decode()
        rows = [line.split() for line in described.splitlines() if line.startswith("kc ")]
        # topic, partition, committed, end, lag: everything consumed and committed.
        assert sorted(int(r[1]) for r in rows) == list(range(PARTITIONS))
        assert all(r[2] == r[3] == "20" and r[4] == "0" for r in rows), described

        # The admin clients see the same group, its offsets, and can delete it.
        from confluent_kafka.admin import AdminClient
        from kafka import KafkaAdminClient
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        assert {"group_id": "kg", "protocol_type": "consumer",
                "group_state": "Empty"} in admin.list_groups()
        assert admin.describe_groups(["kg"])["kg"]["group_state"] == "Empty"
        offsets = admin.list_group_offsets("kg")["kg"]
        assert sorted((tp.partition, o.offset) for tp, o in offsets.items()) == \
            [(p, 20) for p in range(PARTITIONS)]
        rd = AdminClient({"bootstrap.servers": broker.bootstrap})
        assert [g.group_id for g in rd.list_consumer_groups().result(10).valid] == ["kg"]
        assert rd.describe_consumer_groups(["kg"])["kg"].result(10).group_id == "kg"
        assert admin.delete_groups(["kg"]) == {"kg": "OK"}
        assert admin.list_groups() == []
        admin.close()
    finally:
        broker.stop()


def raw_call(bootstrap, api_key, version, body, correlation_id=7):
    """Sends one request on a fresh connection; returns the response body (after the
    correlation id), or None if the broker closed the connection instead."""
    import socket
    import struct
    host, port = bootstrap.split(":")
    client_id = b"old-client"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
    assert struct.unpack(">i", data[4:8])[0] == correlation_id
    return data[8:]


def test_offset_commit_v0_v1_and_fetch_v0_share_the_group_offsets(tmp_path):
    """OffsetCommit v0-1 and OffsetFetch v0 (dropped by Kafka 4, hand-coded in the broker)
    answer kafka-python's own encoders/decoders of those versions; what they commit is what
    OffsetFetch v0, v1 and confluent-kafka's v9 read, and a truncated v0 body closes the
    connection as Kafka does."""
    import io
    from confluent_kafka import Consumer, TopicPartition
    from kafka.protocol.old.commit import (OffsetCommitRequest, OffsetCommitResponse,
                                           OffsetFetchRequest, OffsetFetchResponse)
    broker = Broker(tmp_path / "data").start()
    try:
        broker.cli("topics", "create", "--bootstrap", broker.bootstrap, "old",
                   "--partitions", "2")

        def commit(version, request):
            body = raw_call(broker.bootstrap, 8, version, request.encode())
            return {(t, p): code for t, parts in
                    OffsetCommitResponse[version].decode(io.BytesIO(body)).topics
                    for p, code in parts}

        def fetch(version, partitions):
            request = OffsetFetchRequest[version](group_id="legacy",
                                                  topics=[("old", partitions)])
            body = raw_call(broker.bootstrap, 9, version, request.encode())
            return {p: (offset, meta, code) for _, parts in
                    OffsetFetchResponse[version].decode(io.BytesIO(body)).topics
                    for p, offset, meta, code in parts}

        got = commit(0, OffsetCommitRequest[0](
            group_id="legacy", topics=[("old", [(0, 5, "m0"), (1, 7, None), (9, 1, "")])]))
        assert got == {("old", 0): 0, ("old", 1): 0, ("old", 9): 3}
        assert fetch(0, [0, 1, 9]) == {0: (5, "m0", 0), 1: (7, "", 0), 9: (-1, "", 0)}
        # v1 without group management (generation -1) moves partition 0 on; with a member id
        # the group does not know it is refused UNKNOWN_MEMBER_ID, as Kafka does.
        got = commit(1, OffsetCommitRequest[1](
            group_id="legacy", generation_id_or_member_epoch=-1, member_id="",
            topics=[("old", [(0, 11, 1_700_000_000_000, "m1")])]))
        assert got == {("old", 0): 0}
        got = commit(1, OffsetCommitRequest[1](
            group_id="legacy", generation_id_or_member_epoch=3, member_id="ghost",
            topics=[("old", [(1, 99, -1, None)])]))
        assert got == {("old", 1): 25}
        assert fetch(0, [0, 1]) == {0: (11, "m1", 0), 1: (7, "", 0)}
        assert fetch(1, [0, 1]) == {0: (11, "m1", 0), 1: (7, "", 0)}
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "legacy"})
        committed = c.committed([TopicPartition("old", 0), TopicPartition("old", 1)],
                                timeout=10)
        c.close()
        assert [(tp.partition, tp.offset) for tp in committed] == [(0, 11), (1, 7)]
        # A body cut inside a partition entry: the broker closes the connection.
        whole = OffsetCommitRequest[0](group_id="legacy",
                                       topics=[("old", [(0, 5, "m0")])]).encode()
        assert raw_call(broker.bootstrap, 8, 0, whole[:-4]) is None
        assert fetch(0, [0]) == {0: (11, "m1", 0)}, "the broker still serves after it"
    finally:
        broker.stop()
