"""Proves the three security layers together on a 3-broker cluster, as docs/security.md sets it
up: every broker has one SASL_SSL listener (TLS, then SCRAM-SHA-512) that clients and the
other brokers use, authenticates to the coordinator with a digest and protects its znodes,
and checks ACLs (`--authorizer`, the inter-broker user and `admin` super users).

How: our coordinator; `broker users add --coordinator` writes the users `broker`, `admin`,
`alice` and `bob` before any broker starts; three broker processes with certificates from the
openssl CLI. `admin` creates a topic of replication factor 3 (min.insync.replicas 3: the leader
acknowledges only once both followers fetched over SASL_SSL) and gives alice WRITE and READ
on it and READ on her group, through confluent-kafka's AdminClient. Alice produces and
consumes every record in a group; bob, authenticated but without ACLs, cannot produce,
consume or see the topic; a plaintext client on the TLS port and a wrong password get
nothing. Everything is stopped at teardown."""

import subprocess
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   NewTopic, ResourcePatternType, ResourceType)

from cluster import eventually, tls_broker_cluster
from conftest import broker_bin

pytestmark = pytest.mark.timeout(300)

CHROOT = "/secure"
DIGEST = "kafka:zk-secret"
USERS = {"broker": "broker-secret", "admin": "admin-secret", "alice": "alice-secret",
         "bob": "bob-secret"}


@pytest.fixture
def secure_cluster(tmp_path):
    digest = tmp_path / "zk-digest"
    digest.write_text(DIGEST + "\n")

    def add_users(coord):
        coordinator = ["--coordinator", coord.connect + CHROOT,
                       "--coordinator-digest-file", str(digest), "--coordinator-set-acl"]
        for user, password in USERS.items():
            pw = tmp_path / f"{user}.pw"
            pw.write_text(password + "\n")
            done = subprocess.run([broker_bin(), "users", "add", user, "--mechanism",
                                   "SCRAM-SHA-512", "--password-file", str(pw), *coordinator],
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr

    with tls_broker_cluster(
            tmp_path, before_brokers=add_users, chroot=CHROOT, protocol="SASL_SSL",
            broker_args=["--sasl-enabled-mechanisms", "SCRAM-SHA-512",
                         "--sasl-inter-broker-mechanism", "SCRAM-SHA-512",
                         "--inter-broker-user", "broker",
                         "--inter-broker-password-file", str(tmp_path / "broker.pw"),
                         "--coordinator-digest-file", str(digest), "--coordinator-set-acl",
                         "--authorizer", "--super-users", "User:broker;User:admin",
                         "--min-insync-replicas", "3"]) as cluster:
        cluster.digest_file = digest
        yield cluster


def conf(cluster, user, password=None):
    return {"bootstrap.servers": cluster.bootstrap(), "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(cluster.pki.ca), "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": user, "sasl.password": password or USERS[user]}


def produce(config, topic, values):
    outcomes = []
    producer = Producer({**config, "acks": "all", "message.timeout.ms": 30000,
                         "enable.idempotence": False, "retries": 2})
    for v in values:
        producer.produce(topic, v, on_delivery=lambda err, _m: outcomes.append(err))
    producer.flush(60)
    return outcomes


def test_sasl_ssl_cluster_with_acls(secure_cluster):
    c = secure_cluster
    topic = f"orders-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(conf(c, "admin"))
    admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(60)
    bindings = [
        AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.WRITE, AclPermissionType.ALLOW),
        AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
        AclBinding(ResourceType.GROUP, "alice-", ResourcePatternType.PREFIXED, "User:alice", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
    ]
    bindings.append(AclBinding(ResourceType.GROUP, "bob-readers", ResourcePatternType.LITERAL,
                               "User:bob", "*", AclOperation.READ, AclPermissionType.ALLOW))
    for f in admin.create_acls(bindings).values():
        f.result(30)

    # Alice writes with acks=all: both followers fetched each record over SASL_SSL.
    values = [f"order-{i}".encode() for i in range(200)]
    def first():
        assert produce(conf(c, "alice"), topic, values[:1]) == [None]
    eventually(first, 60, "alice's first produce is acknowledged")
    assert produce(conf(c, "alice"), topic, values[1:]) == [None] * 199
    consumer = Consumer({**conf(c, "alice"), "group.id": "alice-readers",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen = []
    try:
        def read_all():
            for m in consumer.consume(200, 1.0):
                assert m.error() is None, m.error()
                seen.append(m.value())
            assert set(seen) == set(values), f"{len(set(seen))} of {len(values)}"
        eventually(read_all, 60, "alice reads every record")
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    # Bob authenticates but holds no ACL on the topic (only READ on his group, so his
    # consumer reaches the fetch): refused everywhere, and the topic is hidden.
    outcomes = produce(conf(c, "bob"), topic, [b"intruder"])
    assert [e.code() for e in outcomes] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert topic not in AdminClient(conf(c, "bob")).list_topics(timeout=10).topics
    bob = Consumer({**conf(c, "bob"), "group.id": "bob-readers"})
    try:
        bob.subscribe([topic])
        errors, records = [], []

        def refused():
            for m in bob.consume(10, 1.0):
                (errors if m.error() else records).append(m.error() or m.value())
            assert KafkaError.TOPIC_AUTHORIZATION_FAILED in [e.code() for e in errors], errors
        eventually(refused, 30, "bob's consumer is refused the topic")
        assert records == []
    finally:
        bob.close()

    # A wrong password and a client without TLS get nothing.
    wrong = AdminClient({**conf(c, "alice", "not-her-password"), "socket.timeout.ms": 3000})
    with pytest.raises(Exception):
        wrong.list_topics(timeout=5)
    plain = AdminClient({"bootstrap.servers": c.bootstrap(), "security.protocol": "PLAINTEXT",
                         "socket.timeout.ms": 3000})
    with pytest.raises(Exception):
        plain.list_topics(timeout=5)

    # `broker acls` on the coordinator, as the brokers reach it: without the digest the
    # protected ACL znodes refuse the write; with it bob is allowed to see the topic.
    grant = ["acls", "add", "--coordinator", c.coord.connect + CHROOT,
             "--allow-principal", "User:bob", "--operation", "Describe", "--topic", topic]
    refused = subprocess.run([broker_bin(), *grant], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0, refused.stdout
    granted = subprocess.run([broker_bin(), *grant, "--coordinator-digest-file",
                              str(c.digest_file), "--coordinator-set-acl"],
                             capture_output=True, text=True, timeout=60)
    assert granted.returncode == 0, granted.stderr
    def bob_sees_the_topic():
        assert topic in AdminClient(conf(c, "bob")).list_topics(timeout=10).topics
    eventually(bob_sees_the_topic, 30, "bob sees the topic after `broker acls add` with the digest")
