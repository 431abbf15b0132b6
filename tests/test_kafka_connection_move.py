"""Two shards, real clients (librdkafka through confluent-kafka): producers that each write one
partition, and consumers that each read one back. A connection that landed on the shard not owning
its partition moves to the owner (`streambox_connections_moved_in_total`) while the client
keeps requests in flight; every acknowledged message is read back once, in offset order. On a
SASL_PLAINTEXT, SASL_SSL and SSL (client certificate) listener with the authorizer on, the
connection moves with its principal (and on TLS with its session): the only principal the ACLs
let write and read the topic keeps doing so after the move."""

import re
import subprocess
import urllib.request

import pytest

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, Pki, all_cores_profile, broker_bin


def metric(broker, name):
    """The sum over shards of counter `name` on the broker's /metrics."""
    url = f"http://127.0.0.1:{broker.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(float(v) for v in re.findall(rf"(?m)^{name}\{{[^}}]*\}} (\S+)$", text))


def produce_partition(bootstrap, topic, partition, rounds, per_round, prefix, client=None):
    """`rounds` flushes of `per_round` messages to `partition` (so at least one Produce request
    each), acks=all; returns the acknowledged (offset, value) pairs. `client`: more librdkafka
    settings (security)."""
    acked = []

    def delivered(err, msg):
        assert err is None, err
        acked.append((msg.offset(), msg.value()))

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                         "message.timeout.ms": 10000, **(client or {})})
    for r in range(rounds):
        for i in range(per_round):
            producer.produce(topic, partition=partition, value=f"{prefix}-{r}-{i}".encode(),
                             on_delivery=delivered)
        producer.poll(0)
        if r % 4 == 3:
            producer.flush(10)
    producer.flush(15)
    return acked


def consume_partition(bootstrap, topic, partition, count, client=None):
    """The first `count` (offset, value) pairs of `partition`, in the order read."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "move-check",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10, **(client or {})})
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    got = []
    for _ in range(600):
        for msg in consumer.consume(500, 0.1):
            assert not msg.error(), msg.error()
            got.append((msg.offset(), msg.value()))
        if len(got) >= count:
            break
    consumer.close()
    return got


def test_connections_move_to_the_shard_owning_their_partition(tmp_path):
    profile = all_cores_profile(tmp_path / "all-cores.toml")
    broker = Broker(tmp_path / "data", profile=profile,
                    extra=("--metrics-listen", "127.0.0.1:0")).start()
    try:
        broker.cli("topics", "create", "--bootstrap", broker.bootstrap, "mv", "--partitions", "2")
        produce_until_moved_and_read_back(broker)
    finally:
        broker.stop()


def produce_until_moved_and_read_back(broker, client=None):
    """Producers, one partition each, until a connection moved; then every acknowledged message
    is read back once and in order, by consumers with the same `client` settings."""
    acked = {0: [], 1: []}
    # Each producer's connection lands on either shard (SO_REUSEPORT); one in two lands on the
    # shard that does not own its partition.
    for attempt in range(16):
        partition = attempt % 2
        acked[partition] += produce_partition(broker.bootstrap, "mv", partition, 40, 50,
                                              f"a{attempt}", client)
        if metric(broker, "streambox_connections_moved_in_total") >= 1:
            break
    assert metric(broker, "streambox_connections_moved_in_total") >= 1
    for partition in (0, 1):
        expected = sorted(acked[partition])
        assert [o for o, _ in expected] == list(range(len(expected))), "acks are unique"
        got = consume_partition(broker.bootstrap, "mv", partition, len(expected), client)
        assert got == expected, f"partition {partition}"


def add_users(data, passwords):
    """SCRAM-SHA-256 users with `passwords` (user: password) in the broker's store."""
    for user, password in passwords.items():
        (data.parent / f"{user}.pw").write_text(password + "\n")
        subprocess.run([broker_bin(), "users", "add", user, "--mechanism", "SCRAM-SHA-256",
                        "--password-file", str(data.parent / f"{user}.pw"), "--data-dir",
                        str(data)], check=True, capture_output=True, timeout=60)


def allow_only(data, principal):
    """ACLs that let only `principal` use the topic and the group: a connection that lost its
    principal on the way (User:ANONYMOUS) would get TOPIC_AUTHORIZATION_FAILED."""
    for resource in (("--topic", "mv"), ("--group", "move-check")):
        subprocess.run([broker_bin(), "acls", "add", "--data-dir", str(data),
                        "--allow-principal", principal, *resource],
                       check=True, capture_output=True, timeout=60)


def secured_broker(tmp_path, protocol, super_user, tls=None):
    profile = all_cores_profile(tmp_path / "all-cores.toml")
    return Broker(tmp_path / "data", profile=profile, protocol=protocol, tls=tls,
                  extra=("--metrics-listen", "127.0.0.1:0", "--authorizer",
                         "--super-users", super_user)).start()


def create_mv(bootstrap, client):
    admin = AdminClient({"bootstrap.servers": bootstrap, **client})
    for future in admin.create_topics([NewTopic("mv", 2, 1)]).values():
        future.result(timeout=30)


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_connections_move_with_their_principal(tmp_path, protocol):
    """Over SASL_SSL the TLS session moves with the socket too."""
    pki = Pki(tmp_path / "pki") if protocol == "SASL_SSL" else None
    data = tmp_path / "data"
    data.mkdir()
    passwords = {"admin": "admin-secret", "alice": "alice-secret"}
    add_users(data, passwords)
    allow_only(data, "User:alice")
    broker = secured_broker(tmp_path, protocol, "User:admin", tls=pki)

    def sasl(user):
        return {"security.protocol": protocol, "sasl.mechanisms": "SCRAM-SHA-256",
                "sasl.username": user, "sasl.password": passwords[user],
                **({"ssl.ca.location": str(pki.ca)} if pki else {})}
    try:
        create_mv(broker.bootstrap, sasl("admin"))
        produce_until_moved_and_read_back(broker, sasl("alice"))
    finally:
        broker.stop()


def test_ssl_connections_move_with_their_session_and_certificate_principal(tmp_path):
    pki = Pki(tmp_path / "pki").require_client_certificates()
    admin_cert, admin_key = pki.issue("admin", "/CN=admin")
    data = tmp_path / "data"
    data.mkdir()
    allow_only(data, "User:CN=client,O=example")
    broker = secured_broker(tmp_path, "SSL", "User:CN=admin", tls=pki)

    def ssl(cert, key):
        return {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca),
                "ssl.certificate.location": str(cert), "ssl.key.location": str(key)}
    try:
        create_mv(broker.bootstrap, ssl(admin_cert, admin_key))
        produce_until_moved_and_read_back(broker, ssl(pki.client_cert, pki.client_key))
    finally:
        broker.stop()
