"""Proves TLS listeners with real clients. A SASL_SSL listener: confluent-kafka and kcat with
SCRAM-SHA-512, kafka-python with SCRAM-SHA-256 produce and consume (confluent-kafka and
kafka-python as members of a consumer group; kafka-python commits and a new member resumes
after the commit). An SSL listener requiring client certificates: kafka-python and
confluent-kafka with a certificate of the broker's client CA do the same, and the broker takes `User:CN=client,O=example` as the
principal. Refused, with nothing served: a plaintext client on a TLS port, a client certificate
of another CA, no client certificate where one is required. Two listeners (PLAINTEXT and
SASL_SSL) on one broker: each client's Metadata names its own listener's port. A renewed
certificate is served to new connections without a restart. How: certificates are made with
the openssl CLI in a temp dir; brokers start on free loopback ports and are always stopped."""

import socket
import ssl
import struct
import time
import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, Pki, add_scram_users
from test_kafka_sasl import create_topic, kcat_roundtrip, roundtrip

pytestmark = pytest.mark.timeout(240)

USERS = {
    ("alice", "SCRAM-SHA-512"): "alice-secret",
    ("bob", "SCRAM-SHA-256"): "bob-secret",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def sasl_ssl_broker(tmp_path_factory, pki):
    data = tmp_path_factory.mktemp("sasl_ssl") / "data"
    add_scram_users(data, USERS)
    b = Broker(data, protocol="SASL_SSL", tls=pki).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory):
    pki = Pki(tmp_path_factory.mktemp("mtls-pki")).require_client_certificates()
    b = Broker(tmp_path_factory.mktemp("mtls") / "data", protocol="SSL", tls=pki).start()
    b.pki = pki
    yield b
    b.stop()


def sasl_ssl(broker, pki, mechanism, user, password):
    return {
        "bootstrap.servers": broker.bootstrap,
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(pki.ca),
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }


def mtls(broker, cert=None, key=None):
    pki = broker.pki
    return {
        "bootstrap.servers": broker.bootstrap,
        "security.protocol": "SSL",
        "ssl.ca.location": str(pki.ca),
        "ssl.certificate.location": str(cert or pki.client_cert),
        "ssl.key.location": str(key or pki.client_key),
    }


def refused(conf):
    """True when a client with `conf` gets no metadata from the broker."""
    try:
        AdminClient({**conf, "socket.timeout.ms": 3000}).list_topics(timeout=6)
    except KafkaException:
        return True
    return False


# --- SASL_SSL ---------------------------------------------------------------------------------

def test_confluent_kafka_over_sasl_ssl_with_scram_sha_512(sasl_ssl_broker, pki):
    conf = sasl_ssl(sasl_ssl_broker, pki, "SCRAM-SHA-512", "alice", "alice-secret")
    topic = f"tls-ck-{uuid.uuid4().hex[:6]}"
    create_topic(conf, topic)
    roundtrip(conf, topic)


def test_kcat_over_sasl_ssl_with_scram_sha_512(sasl_ssl_broker, pki):
    topic = f"tls-kcat-{uuid.uuid4().hex[:6]}"
    create_topic(sasl_ssl(sasl_ssl_broker, pki, "SCRAM-SHA-512", "alice", "alice-secret"), topic)
    args = ["-b", sasl_ssl_broker.bootstrap, "-X", "security.protocol=SASL_SSL",
            "-X", f"ssl.ca.location={pki.ca}", "-X", "sasl.mechanisms=SCRAM-SHA-512",
            "-X", "sasl.username=alice", "-X", "sasl.password=alice-secret"]
    kcat_roundtrip(args, topic)


def test_kafka_python_over_sasl_ssl_with_scram_sha_256(sasl_ssl_broker, pki):
    conf = dict(bootstrap_servers=sasl_ssl_broker.bootstrap, security_protocol="SASL_SSL",
                ssl_cafile=str(pki.ca), sasl_mechanism="SCRAM-SHA-256",
                sasl_plain_username="bob", sasl_plain_password="bob-secret")
    topic = f"tls-kp-{uuid.uuid4().hex[:6]}"
    create_topic(sasl_ssl(sasl_ssl_broker, pki, "SCRAM-SHA-256", "bob", "bob-secret"), topic)
    kafka_python_roundtrip(conf, topic)


def kafka_python_roundtrip(conf, topic, n=50):
    from kafka import KafkaConsumer, KafkaProducer
    p = KafkaProducer(**conf)
    for i in range(n):
        p.send(topic, f"v{i}".encode()).get(timeout=30)
    p.close()
    group = f"kp-{uuid.uuid4().hex[:6]}"
    c = KafkaConsumer(topic, group_id=group, auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=10000, **conf)
    values = set()
    for m in c:
        values.add(m.value)
        if len(values) >= n:
            break
    c.commit()
    c.close()
    assert values == {f"v{i}".encode() for i in range(n)}
    # The group's commit holds: a new member of the group reads nothing more.
    c = KafkaConsumer(topic, group_id=group, auto_offset_reset="earliest",
                      consumer_timeout_ms=3000, **conf)
    assert [m.value for m in c] == []
    c.close()


def test_sasl_ssl_refuses_a_wrong_password_and_a_plaintext_client(sasl_ssl_broker, pki):
    assert refused(sasl_ssl(sasl_ssl_broker, pki, "SCRAM-SHA-512", "alice", "wrong"))
    assert refused({"bootstrap.servers": sasl_ssl_broker.bootstrap,
                    "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
                    "sasl.username": "alice", "sasl.password": "alice-secret"})


def api_versions_over_plain_tcp(port):
    """Sends ApiVersions v0 as a plaintext client; returns what came back until EOF or 5 s."""
    request = struct.pack(">hhih", 18, 0, 7, 4) + b"test"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack(">i", len(request)) + request)
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return got


def test_a_plaintext_client_on_a_tls_port_gets_no_kafka_answer(sasl_ssl_broker):
    got = api_versions_over_plain_tcp(sasl_ssl_broker.port)
    # A Kafka answer would carry correlation id 7 after the size; at most a TLS alert comes.
    assert got[4:8] != struct.pack(">i", 7)
    assert got == b"" or got[0] == 0x15, got[:16]


# --- SSL with client certificates -----------------------------------------------------------

def test_kafka_python_over_ssl_with_a_client_certificate(mtls_broker):
    pki = mtls_broker.pki
    conf = dict(bootstrap_servers=mtls_broker.bootstrap, security_protocol="SSL",
                ssl_cafile=str(pki.ca), ssl_certfile=str(pki.client_cert),
                ssl_keyfile=str(pki.client_key))
    topic = f"mtls-kp-{uuid.uuid4().hex[:6]}"
    create_topic(mtls(mtls_broker), topic)
    kafka_python_roundtrip(conf, topic)
    # Kafka's default principal: the subject in RFC 2253 form (last RDN first).
    assert "principal User:CN=client,O=example" in mtls_broker.log()


def test_confluent_kafka_over_ssl_with_a_client_certificate(mtls_broker):
    topic = f"mtls-ck-{uuid.uuid4().hex[:6]}"
    create_topic(mtls(mtls_broker), topic)
    roundtrip(mtls(mtls_broker), topic)


def test_ssl_refuses_a_certificate_of_another_ca_and_none(mtls_broker):
    pki = mtls_broker.pki
    assert refused(mtls(mtls_broker, pki.stranger_cert, pki.stranger_key))
    no_cert = {"bootstrap.servers": mtls_broker.bootstrap, "security.protocol": "SSL",
               "ssl.ca.location": str(pki.ca)}
    assert refused(no_cert)
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    def kafka_python_send():
        p = KafkaProducer(bootstrap_servers=mtls_broker.bootstrap, security_protocol="SSL",
                          ssl_cafile=str(pki.ca), ssl_certfile=str(pki.stranger_cert),
                          ssl_keyfile=str(pki.stranger_key), request_timeout_ms=5000,
                          max_block_ms=5000)
        try:
            p.send("stranger", b"v").get(timeout=10)
        finally:
            p.close(timeout=5)

    with pytest.raises(KafkaError):
        kafka_python_send()
    # A good client still gets served after the refusals.
    assert not refused(mtls(mtls_broker))


# --- listeners and reload -------------------------------------------------------------------

def test_two_listeners_each_advertise_their_own_endpoint(tmp_path, pki):
    add_scram_users(tmp_path / "data", USERS)
    b = Broker(tmp_path / "data", tls=pki,
               extra=["--listener", "PLAINTEXT://127.0.0.1:0",
                      "--listener", "SASL_SSL://127.0.0.1:0"])
    b.start()
    try:
        assert set(b.listeners) == {"PLAINTEXT", "SASL_SSL"}
        plain = {"bootstrap.servers": f"127.0.0.1:{b.listeners['PLAINTEXT']}"}
        secure = {**sasl_ssl(b, pki, "SCRAM-SHA-512", "alice", "alice-secret"),
                  "bootstrap.servers": f"127.0.0.1:{b.listeners['SASL_SSL']}"}
        assert b.listeners["PLAINTEXT"] != b.listeners["SASL_SSL"]
        for conf, name in ((plain, "PLAINTEXT"), (secure, "SASL_SSL")):
            brokers = AdminClient(conf).list_topics(timeout=30).brokers
            assert [(x.host, x.port) for x in brokers.values()] == [
                ("127.0.0.1", b.listeners[name])]
        topic = f"two-{uuid.uuid4().hex[:6]}"
        create_topic(plain, topic)
        roundtrip(secure, topic, n=50)
    finally:
        b.stop()


def served_certificate(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def pem_to_der(path):
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path):
    pki = Pki(tmp_path / "pki")
    b = Broker(tmp_path / "data", protocol="SSL", tls=pki).start()
    try:
        first = pem_to_der(pki.server_cert)
        assert served_certificate(b.port) == first
        # Renew: a new key and certificate written over the files the broker was given.
        cert, key = pki.issue("renewed", "/CN=renewed", san="IP:127.0.0.1")
        pki.server_key.write_bytes(key.read_bytes())
        pki.server_cert.write_bytes(cert.read_bytes())
        renewed = pem_to_der(cert)
        assert renewed != first
        deadline = time.time() + 15
        while served_certificate(b.port) != renewed:
            assert time.time() < deadline, "the renewed certificate was not served"
            time.sleep(0.2)
        # Clients that trust the CA keep working with the renewed certificate.
        conf = {"bootstrap.servers": b.bootstrap, "security.protocol": "SSL",
                "ssl.ca.location": str(pki.ca)}
        assert not refused(conf)
    finally:
        b.stop()
