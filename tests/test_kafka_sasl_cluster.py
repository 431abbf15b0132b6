"""Proves SASL/SCRAM in cluster mode, against our coordinator ensemble and Apache ZooKeeper:
users live in the coordinator (`/config/users/<user>` in Kafka's JSON, change notifications
under `/config/changes`), brokers authenticate to each other with SCRAM-SHA-512 on their
SASL_PLAINTEXT listeners, authenticate to the coordinator with a digest and protect their
znodes (Kafka's zookeeper.set.acl).

How: per flavour, `broker users add --coordinator` writes the inter-broker user and alice
before any broker starts; three brokers start with `--listener SASL_PLAINTEXT://...`,
`--sasl-inter-broker-mechanism SCRAM-SHA-512`, `--coordinator-digest-file` and
`--coordinator-set-acl`. A user added through broker 1 with confluent-kafka's
alter_user_scram_credentials and alice both authenticate on broker 3 and produce (acks=all)
to a replication-factor-3 topic with min.insync.replicas 3, so every follower must have
fetched over SASL; they consume it back. A wrong password and, after its deletion through
broker 2, the deleted user are refused on broker 3. A fourth broker with the right digest but a
wrong inter-broker password is refused by the leader it fetches from and stays out of the
ISR. A kazoo client without the digest cannot register a broker or read credentials; one with
it reads Kafka's credential form.
Everything is stopped at teardown."""

import json
import subprocess
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from conftest import Broker, broker_bin
from cluster import BrokerCluster, eventually, member_extra, start_coordination, stop_zk_client

pytestmark = pytest.mark.timeout(240)

CHROOT = "/kafka-sasl"
DIGEST = "kafka:zk-secret"
INTER_BROKER = ("broker", "broker-secret")
ALICE = ("alice", "alice-secret")
CAROL = ("carol", "carol-secret")


class SaslCluster:
    def __init__(self, tmp, coord):
        self.tmp = tmp
        self.connect = coord.connect + CHROOT
        self.digest_file = tmp / "zk-digest"
        self.digest_file.write_text(DIGEST + "\n")
        self.coordinator_args = ["--coordinator", self.connect,
                                 "--coordinator-digest-file", str(self.digest_file)]
        for user, password in (INTER_BROKER, ALICE):
            self.users("add", user, "--mechanism", "SCRAM-SHA-512",
                       "--password-file", str(self.password_file(user, password)),
                       "--coordinator-set-acl")
        self.brokers = BrokerCluster(tmp / "brokers", coord, chroot=CHROOT,
                                     protocol="SASL_PLAINTEXT",
                                     broker_args=self.broker_args(self.password_file(*INTER_BROKER)))

    def broker_args(self, inter_broker_password_file):
        return ["--sasl-inter-broker-mechanism", "SCRAM-SHA-512",
                "--inter-broker-user", INTER_BROKER[0],
                "--inter-broker-password-file", str(inter_broker_password_file),
                "--coordinator-digest-file", str(self.digest_file), "--coordinator-set-acl"]

    def password_file(self, user, password):
        path = self.tmp / f"{user}.pw"
        path.write_text(password + "\n")
        return path

    def users(self, *args):
        done = subprocess.run([broker_bin(), "users", *args, *self.coordinator_args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def conf(self, broker_id, user, password):
        return {"bootstrap.servers": self.brokers[broker_id].bootstrap,
                "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
                "sasl.username": user, "sasl.password": password}

    def stop(self):
        self.brokers.stop()


@pytest.fixture(scope="module", params=["ours", "zookeeper"])
def sasl_cluster(request, tmp_path_factory):
    coord = start_coordination(request.param, tmp_path_factory.mktemp(f"coord-{request.param}"))
    c = None
    try:
        c = SaslCluster(tmp_path_factory.mktemp("sasl-cluster"), coord)
        yield c
    finally:
        if c is not None:
            print(c.brokers.log_tails())
            c.stop()
        coord.stop()


def authenticates(conf):
    """True when a new connection authenticates (Metadata answered), False when refused."""
    try:
        AdminClient({**conf, "socket.timeout.ms": 5000}).list_topics(timeout=8)
        return True
    except KafkaException:
        return False


def produce_all_acks(conf, topic, values):
    p = Producer({**conf, "acks": "all", "enable.idempotence": True})
    errors = []
    for v in values:
        p.produce(topic, v, on_delivery=lambda err, _m: err and errors.append(err))
    assert p.flush(60) == 0, "records left unsent"
    assert errors == []


def consume(conf, topic, count):
    c = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen = []
    try:
        for _ in range(240):
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is None, m.error()
                seen.append(m.value())
            if len(seen) >= count:
                break
    finally:
        c.close()
    return seen


def test_users_from_the_cli_and_the_admin_api_work_on_every_broker(sasl_cluster):
    c = sasl_cluster
    listed = c.users("list")
    assert "alice SCRAM-SHA-512 iterations=4096" in listed
    assert "broker SCRAM-SHA-512 iterations=4096" in listed

    # carol is made through broker 1; the change notification reaches broker 3.
    admin1 = AdminClient(c.conf(1, *ALICE))
    upsert = UserScramCredentialUpsertion(
        CAROL[0], ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), CAROL[1].encode())
    assert admin1.alter_user_scram_credentials([upsert])[CAROL[0]].result(timeout=30) is None
    carol3 = c.conf(3, *CAROL)
    def carol_accepted():
        assert authenticates(carol3)
    eventually(carol_accepted, 30, "carol to authenticate on broker 3")
    admin2 = AdminClient(c.conf(2, *ALICE))
    described = admin2.describe_user_scram_credentials().result(timeout=30)
    assert set(described) == {"alice", "broker", "carol"}

    # Every follower fetches over SASL: with min.insync.replicas 3 an acks=all produce
    # completes only once all three replicas have the records.
    topic = f"sasl-rf3-{uuid.uuid4().hex[:6]}"
    admin3 = AdminClient(carol3)
    admin3.create_topics(
        [NewTopic(topic, num_partitions=2, replication_factor=3,
                  config={"min.insync.replicas": "3"})])[topic].result(timeout=30)
    values = [f"v{i}".encode() for i in range(200)]
    produce_all_acks(carol3, topic, values[:100])
    produce_all_acks(c.conf(3, *ALICE), topic, values[100:])
    assert sorted(consume(c.conf(3, *ALICE), topic, 200)) == sorted(values)
    assert any("authenticated as User:broker" in c.brokers[b].log() for b in (1, 2, 3))

    assert not authenticates(c.conf(3, CAROL[0], "wrong"))

    # Deleted through broker 2: refused on broker 3 once the notification arrived.
    gone = UserScramCredentialDeletion(CAROL[0], ScramMechanism.SCRAM_SHA_512)
    assert admin2.alter_user_scram_credentials([gone])[CAROL[0]].result(timeout=30) is None
    def carol_refused():
        assert not authenticates(carol3)
    eventually(carol_refused, 30, "carol to be refused on broker 3")
    assert "carol" not in c.users("list")


def test_znodes_are_protected_from_sessions_without_the_digest(sasl_cluster):
    c = sasl_cluster
    anonymous = c.brokers.zk  # kazoo at the chroot, no credentials
    with pytest.raises(NoAuthError):
        anonymous.create("/brokers/ids/99", b"{}", ephemeral=True)
    with pytest.raises(NoAuthError):
        anonymous.get("/config/users/alice")
    with pytest.raises(NoAuthError):
        anonymous.get_children("/config/users")
    with pytest.raises(NoAuthError):
        anonymous.set("/brokers/topics", b"x")
    # Everything else stays readable, as with Kafka's zookeeper.set.acl.
    assert sorted(anonymous.get_children("/brokers/ids")) == ["1", "2", "3"]

    trusted = KazooClient(hosts=c.connect, auth_data=[("digest", DIGEST)], timeout=10)
    trusted.start(timeout=15)
    try:
        data, _ = trusted.get("/config/users/alice")
        stored = json.loads(data)
        assert stored["version"] == 1
        text = stored["config"]["SCRAM-SHA-512"]
        assert [f.split("=", 1)[0] for f in text.split(",")] == \
            ["salt", "stored_key", "server_key", "iterations"]
        assert text.endswith(",iterations=4096") and ALICE[1] not in text
        acl, _ = trusted.get_acls("/config/users/alice")
        assert [(a.id.scheme, a.perms) for a in acl] == [("digest", 31)]
        changes = trusted.get_children("/config/changes")
        notes = [json.loads(trusted.get(f"/config/changes/{n}")[0]) for n in changes]
        assert {"version": 2, "entity_path": "users/alice"} in notes
    finally:
        stop_zk_client(trusted)


def test_a_broker_with_a_wrong_inter_broker_password_cannot_replicate(sasl_cluster, tmp_path):
    """Broker 4 knows the coordinator digest but not the inter-broker password: it registers,
    its fetcher from leader 1 is refused (SASL_AUTHENTICATION_FAILED, error 58) and it never
    joins the ISR, while the partition stays writable on broker 1."""
    c = sasl_cluster
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("not-the-password\n")
    b4 = Broker(tmp_path / "broker4", protocol="SASL_PLAINTEXT",
                extra=member_extra(4, c.connect, args=c.broker_args(wrong)))
    b4.start()
    try:
        topic = f"sasl-b4-{uuid.uuid4().hex[:6]}"
        admin = AdminClient(c.conf(1, *ALICE))
        admin.create_topics([NewTopic(topic, 1, replica_assignment=[[1, 4]])])[topic].result(timeout=30)

        def refused():
            assert "SaslAuthenticate refused (error 58)" in b4.log()
        eventually(refused, 30, "broker 4's fetcher to be refused by broker 1")
        assert "SASL authentication failed" in c.brokers[1].log()
        produce_all_acks(c.conf(1, *ALICE), topic, [b"written without broker 4"])
        state = json.loads(c.brokers.zk.get(f"/brokers/topics/{topic}/partitions/0/state")[0])
        assert state["leader"] == 1 and state["isr"] == [1], state
    finally:
        b4.stop()
