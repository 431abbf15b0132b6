"""Proves a SASL_PLAINTEXT listener authenticates real clients with the users `broker users
add` stored: confluent-kafka (librdkafka) with SCRAM-SHA-512 and PLAIN, kcat with
SCRAM-SHA-256 and kafka-python with SCRAM-SHA-256 produce and consume; a wrong password, an
unknown user, a mechanism the listener does not offer and a client that skips SASL are each
refused with nothing served. How: users are added to a data directory, then the broker binary
starts on it with `--listener SASL_PLAINTEXT://127.0.0.1:0` and is stopped at the end."""

import subprocess
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, add_scram_users, broker_bin

pytestmark = pytest.mark.timeout(180)

USERS = {
    ("alice", "SCRAM-SHA-512"): "alice-secret",
    ("alice", "SCRAM-SHA-256"): "alice-secret",
    ("bob", "SCRAM-SHA-256"): "bob-secret",
}


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    data = tmp_path_factory.mktemp("sasl") / "data"
    add_scram_users(data, USERS)
    b = Broker(data, protocol="SASL_PLAINTEXT",
               extra=["--sasl-enabled-mechanisms", "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN"]).start()
    yield b
    b.stop()


def sasl(broker, mechanism, user, password):
    return {
        "bootstrap.servers": broker.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }


def create_topic(conf, name):
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(timeout=30)


def roundtrip(conf, topic, n=100):
    p = Producer(conf)
    for i in range(n):
        p.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    assert p.flush(30) == 0, "messages left unsent"
    c = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen = set()
    try:
        for _ in range(300):
            m = c.poll(0.5)
            if m is None:
                if len(seen) >= n:
                    break
                continue
            assert m.error() is None, m.error()
            seen.add(m.value())
            if len(seen) >= n:
                break
    finally:
        c.close()
    assert seen == {f"v{i}".encode() for i in range(n)}


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_confluent_kafka_produces_and_consumes_over_sasl(sasl_broker, mechanism):
    conf = sasl(sasl_broker, mechanism, "alice", "alice-secret")
    topic = f"sasl-{mechanism.lower()}-{uuid.uuid4().hex[:6]}"
    create_topic(conf, topic)
    roundtrip(conf, topic)


def test_kcat_with_scram_sha_256(sasl_broker):
    topic = f"sasl-kcat-{uuid.uuid4().hex[:6]}"
    create_topic(sasl(sasl_broker, "SCRAM-SHA-256", "bob", "bob-secret"), topic)
    args = ["-b", sasl_broker.bootstrap, "-X", "security.protocol=SASL_PLAINTEXT",
            "-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", "sasl.username=bob",
            "-X", "sasl.password=bob-secret"]
    kcat_roundtrip(args, topic)


def kcat_roundtrip(args, topic, n=50):
    """kcat with `args` (broker and security settings) produces n keyed records to `topic`
    and consumes them all back."""
    lines = "".join(f"k{i}:v{i}\n" for i in range(n)).encode()
    subprocess.run(["kcat", *args, "-P", "-t", topic, "-K:"], input=lines, check=True,
                   capture_output=True, timeout=60)
    out = subprocess.run(["kcat", *args, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
                          "-f", "%k:%s\\n"], check=True, capture_output=True, timeout=60).stdout
    assert sorted(out.decode().split()) == sorted(f"k{i}:v{i}" for i in range(n))


def test_kafka_python_with_scram_sha_256(sasl_broker):
    from kafka import KafkaConsumer, KafkaProducer
    conf = dict(bootstrap_servers=sasl_broker.bootstrap, security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="bob",
                sasl_plain_password="bob-secret")
    topic = f"sasl-kp-{uuid.uuid4().hex[:6]}"
    create_topic(sasl(sasl_broker, "SCRAM-SHA-256", "bob", "bob-secret"), topic)
    p = KafkaProducer(**conf)
    for i in range(20):
        p.send(topic, f"v{i}".encode()).get(timeout=30)
    p.close()
    c = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, **conf)
    values = {m.value for m in c}
    c.close()
    assert values == {f"v{i}".encode() for i in range(20)}


@pytest.mark.parametrize("mechanism,user,password", [
    ("SCRAM-SHA-512", "alice", "wrong"),
    ("SCRAM-SHA-512", "mallory", "alice-secret"),
    ("SCRAM-SHA-512", "bob", "bob-secret"),  # bob has no SCRAM-SHA-512 credential
    ("PLAIN", "alice", "wrong"),
])
def test_bad_credentials_are_refused(sasl_broker, mechanism, user, password):
    admin = AdminClient({**sasl(sasl_broker, mechanism, user, password), "socket.timeout.ms": 5000})
    with pytest.raises(KafkaException) as err:
        admin.list_topics(timeout=10)
    assert "Authentication" in str(err.value) or "_TRANSPORT" in str(err.value) or \
        "_ALL_BROKERS_DOWN" in str(err.value) or "Timed out" in str(err.value), err.value
    assert f"SASL authentication failed" in sasl_broker.log()


def test_an_unoffered_mechanism_and_a_client_without_sasl_are_refused(sasl_broker):
    bad_mechanism = {**sasl(sasl_broker, "SCRAM-SHA-256", "alice", "alice-secret")}
    b2 = Broker(sasl_broker.data_dir.parent / "data2", protocol="SASL_PLAINTEXT",
                extra=["--sasl-enabled-mechanisms", "SCRAM-SHA-512"]).start()
    try:
        bad_mechanism["bootstrap.servers"] = b2.bootstrap
        with pytest.raises(KafkaException):
            AdminClient(bad_mechanism).list_topics(timeout=10)
        assert "SaslHandshake for mechanism" in b2.log()
    finally:
        b2.stop()
    # A PLAINTEXT client: its Metadata request before SASL closes the connection.
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": sasl_broker.bootstrap,
                     "socket.timeout.ms": 5000}).list_topics(timeout=8)
    assert "before SASL authentication" in sasl_broker.log()


def test_scram_users_managed_through_the_admin_client_take_effect_at_once(sasl_broker):
    """alice (an existing user) adds dave with AlterUserScramCredentials: dave authenticates
    on new connections without a restart, DescribeUserScramCredentials lists him with his
    iteration count, credentials.json holds him (no password); deleting him refuses him."""
    from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialDeletion, UserScramCredentialUpsertion)
    admin = AdminClient(sasl(sasl_broker, "SCRAM-SHA-512", "alice", "alice-secret"))
    dave = sasl(sasl_broker, "SCRAM-SHA-512", "dave", "dave-secret")

    def refused(conf):
        failures = sasl_broker.log().count("SASL authentication failed")
        with pytest.raises(KafkaException):
            AdminClient({**conf, "socket.timeout.ms": 5000}).list_topics(timeout=8)
        assert sasl_broker.log().count("SASL authentication failed") > failures

    refused(dave)
    upsert = UserScramCredentialUpsertion(
        "dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"dave-secret")
    for user, future in admin.alter_user_scram_credentials([upsert]).items():
        assert future.result(timeout=30) is None, user
    assert AdminClient(dave).list_topics(timeout=10).topics is not None
    topic = f"sasl-dave-{uuid.uuid4().hex[:6]}"
    create_topic(dave, topic)
    roundtrip(dave, topic, n=20)

    described = admin.describe_user_scram_credentials(["dave", "alice"]).items()
    infos = {u: sorted((i.mechanism, i.iterations) for i in f.result(timeout=30).scram_credential_infos)
             for u, f in described}
    assert infos == {
        "dave": [(ScramMechanism.SCRAM_SHA_512, 8192)],
        "alice": sorted([(ScramMechanism.SCRAM_SHA_256, 4096), (ScramMechanism.SCRAM_SHA_512, 4096)]),
    }
    everyone = admin.describe_user_scram_credentials().result(timeout=30)
    assert set(everyone) == {"alice", "bob", "dave"}
    stored = (sasl_broker.data_dir / "credentials.json").read_text()
    assert '"dave"' in stored and "iterations=8192" in stored and "dave-secret" not in stored

    # Unknown users are RESOURCE_NOT_FOUND; deleting a credential dave lacks changes nothing.
    with pytest.raises(KafkaException, match="RESOURCE_NOT_FOUND"):
        admin.describe_user_scram_credentials(["nobody"])["nobody"].result(timeout=30)
    missing = UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_256)
    with pytest.raises(KafkaException, match="RESOURCE_NOT_FOUND"):
        admin.alter_user_scram_credentials([missing])["dave"].result(timeout=30)
    assert AdminClient(dave).list_topics(timeout=10).topics is not None

    gone = UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_512)
    assert admin.alter_user_scram_credentials([gone])["dave"].result(timeout=30) is None
    refused(dave)
    assert '"dave"' not in (sasl_broker.data_dir / "credentials.json").read_text()


def test_bad_scram_alterations_are_refused_per_user(sasl_broker):
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion
    admin = AdminClient(sasl(sasl_broker, "SCRAM-SHA-512", "alice", "alice-secret"))
    few = UserScramCredentialUpsertion("erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"pw")
    fine = UserScramCredentialUpsertion("fred", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"pw")
    results = admin.alter_user_scram_credentials([few, fine])
    with pytest.raises(KafkaException, match="UNACCEPTABLE_CREDENTIAL"):
        results["erin"].result(timeout=30)
    assert results["fred"].result(timeout=30) is None
    assert set(admin.describe_user_scram_credentials().result(timeout=30)) >= {"fred"}
    assert "erin" not in admin.describe_user_scram_credentials().result(timeout=30)
