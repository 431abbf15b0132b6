"""Proves a 3-broker cluster replicates over an SSL inter-broker listener: each broker has a
CLIENT listener (PLAINTEXT, by --listener-security-protocol-map) and an INTERNAL one (SSL),
`--inter-broker-listener-name INTERNAL`. The registration znodes carry both endpoints and the
protocol map as Kafka writes them; Metadata on CLIENT names only CLIENT endpoints; records
produced with acks=all to a topic of replication factor 3 (min.insync.replicas 3, so the leader
acknowledges only once both followers fetched them) are all read back, and every follower's
fetchers connected to their leaders on INTERNAL with TLS. How: our coordinator ensemble and
three broker processes on free loopback ports, certificates from the openssl CLI; all stopped
at the end."""

import json
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from cluster import create_topic, eventually, read_log, tls_broker_cluster

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def tls_cluster(tmp_path):
    with tls_broker_cluster(
            tmp_path,
            broker_args=["--listener", "CLIENT://127.0.0.1:0",
                         "--listener", "INTERNAL://127.0.0.1:0",
                         "--listener-security-protocol-map", "CLIENT:PLAINTEXT,INTERNAL:SSL",
                         "--inter-broker-listener-name", "INTERNAL",
                         "--min-insync-replicas", "3"]) as cluster:
        yield cluster


def test_brokers_replicate_over_an_ssl_inter_broker_listener(tls_cluster):
    c = tls_cluster
    for i, b in c.brokers.items():
        data, _ = c.zk.get(f"/brokers/ids/{i}")
        registration = json.loads(data)
        assert registration["listener_security_protocol_map"] == {
            "CLIENT": "PLAINTEXT", "INTERNAL": "SSL"}
        assert registration["endpoints"] == [
            f"CLIENT://127.0.0.1:{b.listeners['CLIENT']}",
            f"INTERNAL://127.0.0.1:{b.listeners['INTERNAL']}"]
        assert (registration["host"], registration["port"]) == ("127.0.0.1", b.listeners["CLIENT"])
    bootstrap = c.bootstrap()

    def three_brokers():
        brokers = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers
        assert sorted((x.id, x.port) for x in brokers.values()) == sorted(
            (i, b.listeners["CLIENT"]) for i, b in c.brokers.items())

    eventually(three_brokers, 30, "Metadata lists the three CLIENT endpoints")
    topic = f"tls-rep-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, 3, rf=3)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "message.timeout.ms": 60000})
    errors = []
    for i in range(300):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 3,
                         on_delivery=lambda err, _msg: err and errors.append(err))
    assert producer.flush(90) == 0, "records left unacknowledged"
    assert errors == []
    records, _, _ = read_log(bootstrap, topic, 3)
    assert sorted(v for v, _ in records.values()) == sorted(f"v{i}".encode() for i in range(300))
    for i in c.brokers:
        assert "on INTERNAL with TLS" in c.brokers[i].log(), f"broker {i} fetched without TLS"
