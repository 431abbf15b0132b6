"""Proves Kafka's ACLs with real clients: a broker started with `--authorizer --super-users
User:admin` on a SASL_PLAINTEXT listener (SCRAM users added with `broker users add`) lets
confluent-kafka's AdminClient (and kafka-python's) create, describe and delete ACLs, and every
client sees Kafka's authorization error codes: a principal without ACLs cannot read, write,
describe or delete; a prefixed ACL grants what it names and nothing else; deny wins over
allow; the super user may do everything; Metadata leaves out topics the principal may not
describe; group ACLs gate consumer groups; `broker acls add` on a stopped broker's data dir
applies when it starts. kcat and kafka-python see the same refusals. In cluster mode, an ACL
created through one broker is enforced by another (the coordinator's /kafka-acl znodes).
Each test starts its own broker(s) on free ports in a temp dir and stops them at the end."""

import subprocess
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, AdminClient, NewTopic,
                                   ResourcePatternType, ResourceType)

from conftest import Broker, broker_bin

pytestmark = pytest.mark.timeout(240)

PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}
TOPIC_AUTHORIZATION_FAILED = KafkaError.TOPIC_AUTHORIZATION_FAILED
GROUP_AUTHORIZATION_FAILED = KafkaError.GROUP_AUTHORIZATION_FAILED
CLUSTER_AUTHORIZATION_FAILED = KafkaError.CLUSTER_AUTHORIZATION_FAILED


def add_users(tmp, data):
    for user, password in PASSWORDS.items():
        pw = tmp / f"{user}.pw"
        pw.write_text(password + "\n")
        subprocess.run([broker_bin(), "users", "add", user, "--mechanism", "SCRAM-SHA-256",
                        "--password-file", str(pw), "--data-dir", str(data)],
                       check=True, capture_output=True, timeout=60)


@pytest.fixture
def acl_broker(tmp_path):
    """A fresh broker per test: ACLs of one test (on `*` too) never leak into another."""
    data = tmp_path / "data"
    data.mkdir()
    add_users(tmp_path, data)
    b = Broker(data, protocol="SASL_PLAINTEXT",
               extra=["--authorizer", "--super-users", "User:admin"]).start()
    yield b
    b.stop()


def conf(broker, user, **extra):
    return {"bootstrap.servers": broker.bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": user,
            "sasl.password": PASSWORDS[user], **extra}


def admin(broker, user="admin"):
    return AdminClient(conf(broker, user))


def create_topics(broker, *names):
    a = admin(broker)  # kept alive until the futures are done
    futures = a.create_topics([NewTopic(n, num_partitions=1, replication_factor=1)
                               for n in names])
    for f in futures.values():
        f.result(timeout=30)


def allow(broker, principal, resource, name, *ops, pattern=ResourcePatternType.LITERAL,
          permission=AclPermissionType.ALLOW):
    bindings = [AclBinding(resource, name, pattern, principal, "*", op, permission) for op in ops]
    a = admin(broker)
    for f in a.create_acls(bindings).values():
        f.result(timeout=30)


def produce_error(broker, user, topic):
    """The delivery error code of one record (None: delivered)."""
    errors = []
    p = Producer(conf(broker, user, **{"message.timeout.ms": 10000}))
    p.produce(topic, b"v", on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert len(errors) == 1, "no delivery report"
    return None if errors[0] is None else errors[0].code()


def consume(broker, user, topic, group, n=1, timeout_polls=60):
    """Values read from the start, or the first error code the consumer reports."""
    c = Consumer(conf(broker, user, **{"group.id": group, "auto.offset.reset": "earliest"}))
    c.subscribe([topic])
    values = []
    try:
        for _ in range(timeout_polls):
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return m.error().code()
            values.append(m.value())
            if len(values) >= n:
                break
    finally:
        c.close()
    return values


def kafka_python_any_acl():
    """kafka-python's filter matching every ACL."""
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             ResourcePatternFilter, ResourceType as KpResourceType)
    return ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                     permission_type=ACLPermissionType.ANY,
                     resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None,
                                                            ACLResourcePatternType.ANY))


def test_admin_client_creates_describes_and_deletes_acls(acl_broker):
    a = admin(acl_broker)
    bindings = [
        AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
        AclBinding(ResourceType.GROUP, "team-", ResourcePatternType.PREFIXED, "User:alice",
                   "10.0.0.1", AclOperation.READ, AclPermissionType.DENY),
    ]
    for f in a.create_acls(bindings).values():
        f.result(timeout=30)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    found = a.describe_acls(everything).result(timeout=30)
    assert sorted(found, key=str) == sorted(bindings, key=str)
    only_topics = AclBindingFilter(ResourceType.TOPIC, None, ResourcePatternType.ANY, None, None,
                                   AclOperation.ANY, AclPermissionType.ANY)
    assert a.describe_acls(only_topics).result(timeout=30) == [bindings[0]]
    deleted = a.delete_acls([only_topics])[only_topics].result(timeout=30)
    assert deleted == [bindings[0]]
    assert a.describe_acls(everything).result(timeout=30) == [bindings[1]]
    # Not a super user and no ALTER/DESCRIBE on the cluster: refused.
    alice = admin(acl_broker, "alice")
    # (librdkafka 2.16 turns a DescribeAcls error into an empty list; kafka-python raises it.)
    assert alice.describe_acls(everything).result(timeout=30) == []
    from kafka import KafkaAdminClient
    from kafka.errors import ClusterAuthorizationFailedError
    kp = KafkaAdminClient(bootstrap_servers=acl_broker.bootstrap, security_protocol="SASL_PLAINTEXT",
                          sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
                          sasl_plain_password=PASSWORDS["alice"])
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            kp.describe_acls(kafka_python_any_acl())
    finally:
        kp.close()
    with pytest.raises(KafkaException) as refused:
        list(alice.create_acls([bindings[0]]).values())[0].result(timeout=30)
    assert refused.value.args[0].code() == CLUSTER_AUTHORIZATION_FAILED
    # The ACLs survive a restart (acls.json in the data dir).
    acl_broker.stop()
    acl_broker.start()
    a = admin(acl_broker)
    assert a.describe_acls(everything).result(timeout=30) == [bindings[1]]


def test_a_principal_without_acls_cannot_read_write_describe_or_delete(acl_broker):
    topic = f"t-{uuid.uuid4().hex[:6]}"
    create_topics(acl_broker, topic)
    assert produce_error(acl_broker, "admin", topic) is None
    # bob may use his group, nothing else.
    allow(acl_broker, "User:bob", ResourceType.GROUP, "bob-g", AclOperation.READ)
    assert produce_error(acl_broker, "bob", topic) == TOPIC_AUTHORIZATION_FAILED
    assert consume(acl_broker, "bob", topic, "bob-g") == TOPIC_AUTHORIZATION_FAILED
    bob = admin(acl_broker, "bob")
    assert topic not in bob.list_topics(timeout=30).topics
    described = bob.list_topics(topic=topic, timeout=30).topics[topic]
    assert described.error.code() == TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as refused:
        bob.delete_topics([topic])[topic].result(timeout=30)
    assert refused.value.args[0].code() == TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as refused:
        bob.create_topics([NewTopic("bobs", 1, 1)])["bobs"].result(timeout=30)
    assert refused.value.args[0].code() == TOPIC_AUTHORIZATION_FAILED
    # The topic is still there and whole.
    assert consume(acl_broker, "admin", topic, "admin-g") == [b"v"]


def test_a_prefixed_acl_grants_what_it_names_and_nothing_else(acl_broker):
    create_topics(acl_broker, "pre-a", "pre-b", "other-a", "pr")
    allow(acl_broker, "User:alice", ResourceType.TOPIC, "pre-", AclOperation.WRITE,
          AclOperation.READ, pattern=ResourcePatternType.PREFIXED)
    allow(acl_broker, "User:alice", ResourceType.GROUP, "alice-", AclOperation.READ,
          pattern=ResourcePatternType.PREFIXED)
    assert produce_error(acl_broker, "alice", "pre-a") is None
    assert produce_error(acl_broker, "alice", "pre-b") is None
    assert produce_error(acl_broker, "alice", "other-a") == TOPIC_AUTHORIZATION_FAILED
    assert produce_error(acl_broker, "alice", "pr") == TOPIC_AUTHORIZATION_FAILED
    assert consume(acl_broker, "alice", "pre-a", "alice-1") == [b"v"]
    # READ and WRITE imply DESCRIBE, not DELETE.
    alice = admin(acl_broker, "alice")
    assert set(alice.list_topics(timeout=30).topics) == {"pre-a", "pre-b"}
    with pytest.raises(KafkaException) as refused:
        alice.delete_topics(["pre-a"])["pre-a"].result(timeout=30)
    assert refused.value.args[0].code() == TOPIC_AUTHORIZATION_FAILED
    # The prefixed group ACL names alice-*, not other groups.
    assert consume(acl_broker, "alice", "pre-a", "team-1") == GROUP_AUTHORIZATION_FAILED


def test_deny_wins_over_allow(acl_broker):
    create_topics(acl_broker, "secret", "open")
    for principal in ("User:alice", "User:bob"):
        allow(acl_broker, principal, ResourceType.GROUP, "*", AclOperation.READ)
    allow(acl_broker, "User:*", ResourceType.TOPIC, "*", AclOperation.ALL)
    allow(acl_broker, "User:alice", ResourceType.TOPIC, "secret", AclOperation.READ,
          permission=AclPermissionType.DENY)
    assert produce_error(acl_broker, "alice", "secret") is None
    assert consume(acl_broker, "alice", "secret", "a-g") == TOPIC_AUTHORIZATION_FAILED
    assert consume(acl_broker, "bob", "secret", "b-g") == [b"v"]
    assert produce_error(acl_broker, "alice", "open") is None
    assert consume(acl_broker, "alice", "open", "a-g3") == [b"v"]


def test_the_super_user_may_do_everything_without_acls(acl_broker):
    a = admin(acl_broker)
    create_topics(acl_broker, "su")
    assert produce_error(acl_broker, "admin", "su") is None
    assert consume(acl_broker, "admin", "su", "any-group") == [b"v"]
    assert "su" in a.list_topics(timeout=30).topics
    a.delete_topics(["su"])["su"].result(timeout=30)
    groups = a.list_consumer_groups().result(timeout=30).valid
    assert "any-group" in {g.group_id for g in groups}


def test_metadata_lists_only_describable_topics(acl_broker):
    create_topics(acl_broker, "seen", "hidden")
    allow(acl_broker, "User:alice", ResourceType.TOPIC, "seen", AclOperation.DESCRIBE)
    topics = admin(acl_broker, "alice").list_topics(timeout=30).topics
    assert "seen" in topics and "hidden" not in topics
    assert "seen" in admin(acl_broker, "admin").list_topics(timeout=30).topics
    assert "hidden" in admin(acl_broker, "admin").list_topics(timeout=30).topics


def test_group_acls_gate_a_consumer_group(acl_broker):
    create_topics(acl_broker, "gt")
    assert produce_error(acl_broker, "admin", "gt") is None
    allow(acl_broker, "User:alice", ResourceType.TOPIC, "gt", AclOperation.READ)
    allow(acl_broker, "User:alice", ResourceType.GROUP, "allowed", AclOperation.READ)
    assert consume(acl_broker, "alice", "gt", "allowed") == [b"v"]
    assert consume(acl_broker, "alice", "gt", "forbidden") == GROUP_AUTHORIZATION_FAILED
    # Committed offsets: alice's own group is readable, listing groups shows only it.
    c = Consumer(conf(acl_broker, "alice", **{"group.id": "allowed"}))
    try:
        committed = c.committed([TopicPartition("gt", 0)], timeout=30)
        assert committed[0].offset == 1
    finally:
        c.close()
    alice = admin(acl_broker, "alice")
    listed = alice.list_consumer_groups().result(timeout=30).valid
    assert {g.group_id for g in listed} == {"allowed"}


def test_kcat_sees_the_refusal_then_the_grant(acl_broker):
    create_topics(acl_broker, "kc")
    args = ["-b", acl_broker.bootstrap, "-X", "security.protocol=SASL_PLAINTEXT",
            "-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", "sasl.username=bob",
            "-X", f"sasl.password={PASSWORDS['bob']}", "-X", "message.timeout.ms=10000"]
    refused = subprocess.run(["kcat", *args, "-P", "-t", "kc"], input=b"x\n",
                             capture_output=True, timeout=60)
    assert b"authorization failed" in refused.stderr.lower(), refused.stderr
    allow(acl_broker, "User:bob", ResourceType.TOPIC, "kc", AclOperation.WRITE, AclOperation.READ)
    subprocess.run(["kcat", *args, "-P", "-t", "kc"], input=b"x\ny\n", check=True,
                   capture_output=True, timeout=60)
    out = subprocess.run(["kcat", *args, "-C", "-t", "kc", "-o", "beginning", "-e", "-q"],
                         check=True, capture_output=True, timeout=60).stdout
    assert out.split() == [b"x", b"y"]


def test_kafka_python_sees_the_refusal_and_manages_acls(acl_broker):
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, ResourcePattern, ResourcePatternFilter)
    from kafka.admin import ResourceType as KpResourceType
    from kafka.errors import TopicAuthorizationFailedError
    create_topics(acl_broker, "kp")

    def kp_conf(user):
        return dict(bootstrap_servers=acl_broker.bootstrap, security_protocol="SASL_PLAINTEXT",
                    sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=user,
                    sasl_plain_password=PASSWORDS[user])

    p = KafkaProducer(**kp_conf("bob"), max_block_ms=10000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            p.send("kp", b"v").get(timeout=30)
    finally:
        p.close()
    a = KafkaAdminClient(**kp_conf("admin"))
    try:
        acl = ACL(principal="User:bob", host="*", operation=ACLOperation.WRITE,
                  permission_type=ACLPermissionType.ALLOW,
                  resource_pattern=ResourcePattern(KpResourceType.TOPIC, "kp",
                                                   ACLResourcePatternType.LITERAL))
        result = a.create_acls([acl])
        assert not result["failed"], result
        acls, error = a.describe_acls(ACLFilter(
            principal="User:bob", host=None, operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None,
                                                   ACLResourcePatternType.ANY)))
        assert error.errno == 0
        assert [(x.resource_pattern.resource_name, x.operation) for x in acls] == \
            [("kp", ACLOperation.WRITE)]
    finally:
        a.close()
    p = KafkaProducer(**kp_conf("bob"), max_block_ms=10000)
    try:
        assert p.send("kp", b"v").get(timeout=30).offset == 0
    finally:
        p.close()


def test_broker_acls_cli_edits_a_stopped_brokers_data_dir(acl_broker):
    create_topics(acl_broker, "cli")
    acl_broker.stop()
    run = lambda *a: subprocess.run([broker_bin(), "acls", *a, "--data-dir", str(acl_broker.data_dir)],
                                    check=True, capture_output=True, text=True, timeout=60)
    run("add", "--allow-principal", "User:alice", "--operation", "Write", "--operation", "Read",
        "--topic", "cli")
    run("add", "--allow-principal", "User:alice", "--operation", "Read", "--group", "cli-",
        "--resource-pattern-type", "prefixed")
    listed = run("list", "--topic", "cli").stdout
    assert "name=cli, patternType=LITERAL" in listed and "operation=Write" in listed
    acl_broker.start()
    assert produce_error(acl_broker, "alice", "cli") is None
    assert consume(acl_broker, "alice", "cli", "cli-1") == [b"v"]
    acl_broker.stop()
    run("remove", "--allow-principal", "User:alice", "--operation", "Write", "--topic", "cli")
    acl_broker.start()
    assert produce_error(acl_broker, "alice", "cli") == TOPIC_AUTHORIZATION_FAILED
    assert consume(acl_broker, "alice", "cli", "cli-2") == [b"v"]


def test_without_the_authorizer_acl_apis_answer_security_disabled(broker):
    # kafka-python raises the broker's error (librdkafka 2.16 reports an empty list instead).
    from kafka import KafkaAdminClient
    from kafka.errors import SecurityDisabledError
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        with pytest.raises(SecurityDisabledError):
            a.describe_acls(kafka_python_any_acl())
    finally:
        a.close()



def test_cluster_acls_created_through_one_broker_apply_on_another(tmp_path):
    """Cluster mode (our 3-server coordinator ensemble, PLAINTEXT: every client and the brokers'
    followers are User:ANONYMOUS): an ACL created through broker 1's API is in Kafka's znode,
    and broker 2 enforces it; `broker acls remove --coordinator` lifts it on every broker."""
    from cluster import BrokerCluster, eventually, start_coordination
    coord = start_coordination("ours", tmp_path / "coord")
    cluster = None
    try:
        cluster = BrokerCluster(tmp_path / "cluster", coord, ids=(1, 2),
                                broker_args=["--authorizer", "--allow-everyone-if-no-acl-found"])
        b1, b2 = cluster[1].bootstrap, cluster[2].bootstrap
        a1 = AdminClient({"bootstrap.servers": b1})
        a1.create_topics([NewTopic("guarded", 1, 2)])["guarded"].result(timeout=30)

        def listed_by_broker_2(expected):
            out = cluster.cli("topics", "list", "--bootstrap", b2)
            assert out.returncode == 0, out.stderr
            assert ("guarded" in out.stdout.split()) == expected, out.stdout

        eventually(lambda: listed_by_broker_2(True), 20, "broker 2 lists the topic")
        deny = AclBinding(ResourceType.TOPIC, "guarded", ResourcePatternType.LITERAL,
                          "User:ANONYMOUS", "*", AclOperation.DESCRIBE, AclPermissionType.DENY)
        a1.create_acls([deny])[deny].result(timeout=30)
        assert cluster.get_json("/kafka-acl/Topic/guarded") == {"version": 1, "acls": [
            {"principal": "User:ANONYMOUS", "permissionType": "Deny", "operation": "Describe",
             "host": "*"}]}
        assert cluster.zk.get_children("/kafka-acl-changes")
        eventually(lambda: listed_by_broker_2(False), 20, "broker 2 hides the topic")
        everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                      AclOperation.ANY, AclPermissionType.ANY)
        a2 = AdminClient({"bootstrap.servers": b2})
        assert a2.describe_acls(everything).result(timeout=30) == [deny]
        removed = cluster.cli("acls", "remove", "--coordinator", cluster.connect,
                              "--deny-principal", "User:ANONYMOUS", "--operation", "Describe",
                              "--topic", "guarded")
        assert removed.returncode == 0, removed.stderr
        assert not cluster.exists("/kafka-acl/Topic/guarded")
        eventually(lambda: listed_by_broker_2(True), 20, "broker 2 lists the topic again")
    finally:
        if cluster is not None:
            cluster.stop()
        coord.stop()
