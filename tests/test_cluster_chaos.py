"""Chaos test of replication with real clients (the cluster issue's acceptance list), against
both coordination services (our `coordinator` as a 3-server ensemble, and Apache ZooKeeper 3.8):

- partition leaders and the controller are killed with SIGKILL and restarted, in rounds, while
  two confluent-kafka producers (acks=all; one idempotent, one not) keep producing unique
  values: every acknowledged value is afterwards at exactly the offset it was acknowledged
  with, the idempotent producer's values appear once each and in order, and after one more
  leadership move per partition the new leaders serve the same records at the same offsets;
- with one of three brokers alive, the survivor stays the only ISR member (nothing writes the
  state znodes), acks=all is refused with NOT_ENOUGH_REPLICAS before the append, and nothing
  of it is acknowledged, appended or readable;
- a leader frozen with SIGSTOP beyond the session timeout is replaced; woken with SIGCONT and
  asked directly (raw Produce requests, no client library to redirect them) it acknowledges
  nothing the new leader lacks, and it rejoins as a follower whose log equals the new leader's.

How: per test a 3-broker cluster under its own chroot, short timeouts (session 4 s, replica lag
3 s, tickTime 500 ms on both services), loopback only, bounded waits everywhere. The state
znodes, the controller and the registrations are polled throughout (`StateRecorder`); on a
failure pytest shows that history, the brokers' stderr (with the test's kills, pauses and
restarts marked in it) and the coordination service's log tail. Everything started is stopped
at teardown, paused brokers continued first."""

import collections
import logging
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from cluster import (BrokerCluster, DirectProducer, StateRecorder, batch_headers, create_topic, eventually,
                     read_log, start_coordination)

pytestmark = pytest.mark.timeout(420)

SESSION_MS = 4000
REPLICA_LAG_MS = 3000
SESSION_S = SESSION_MS / 1000
BROKER_ARGS = ["--replica-lag-time-max-ms", str(REPLICA_LAG_MS)]
TOPIC_CONFIG = {"min.insync.replicas": "2"}  # the topic's override; the brokers' default stays 1
ROUNDS = 6  # kill rounds in the first test, alternating a partition leader and the controller
RATE = 300  # messages per second of each background producer

NOT_ENOUGH_REPLICAS = 19


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["ours", "zookeeper"])
def coord(request, tmp_path_factory):
    """The coordination service: our coordinator (3-server ensemble) or Apache ZooKeeper."""
    service = start_coordination(request.param, tmp_path_factory.mktemp(f"chaos-coord-{request.param}"))
    yield service
    service.stop()


@pytest.fixture
def chaos_cluster(coord, tmp_path):
    """make(chroot): a 3-broker cluster with the chaos timeouts under `chroot`; stopped at
    teardown (paused brokers continued first), the logs printed (shown when a test fails)."""
    made = []

    def make(chroot):
        c = BrokerCluster(tmp_path / f"cluster{len(made)}", coord, chroot=chroot,
                          session_timeout_ms=SESSION_MS, broker_args=BROKER_ARGS)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
        print(c.log_tails(80))
    print(coord.log_tails(30))


# --- producers -----------------------------------------------------------------------------

class BackgroundProducer:
    """A confluent-kafka producer (acks=all) on its own thread, producing unique values
    `<name>-<seq>` to partition seq % partitions at about `rate` messages per second until
    `stop()`, then flushing. Keeps every delivery report: `acked` [(partition, offset, seq)],
    `failed` [(partition, seq, error)]; `fatal` holds a fatal client error if one came."""

    def __init__(self, name, bootstrap, topic, partitions, idempotent, rate=100, conf=None, log_path=None):
        self.name = name
        self.topic = topic
        self.partitions = partitions
        self.rate = rate
        config = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": idempotent,
            "message.timeout.ms": 120000,
            "request.timeout.ms": 10000,
            "socket.timeout.ms": 10000,
            "retries": 1000000,
            "retry.backoff.ms": 100,
            "retry.backoff.max.ms": 500,
            "linger.ms": 5,
            "max.in.flight.requests.per.connection": 5,
            "topic.metadata.refresh.interval.ms": 2000,
            "error_cb": self._error,
        }
        self._log_handler = None
        if log_path is not None:
            # librdkafka's idempotence state machine (epoch bumps, retries, sequence resets).
            logger = logging.getLogger(f"librdkafka.{name}.{id(self)}")
            logger.propagate = False
            logger.setLevel(logging.DEBUG)
            self._log_handler = logging.FileHandler(log_path)
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            logger.addHandler(self._log_handler)
            config.update({"logger": logger, "debug": "eos"})
        config.update(conf or {})
        self.producer = Producer(config)
        self.acked = []
        self.failed = []
        self.client_errors = []
        self.fatal = None
        self.sent = 0
        self.unresolved = None
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"producer-{name}", daemon=True)
        self._thread.start()

    def value(self, seq):
        return f"{self.name}-{seq}".encode()

    def _error(self, err):
        self.client_errors.append((round(time.time() - self.started, 2), str(err)))
        if err.fatal():
            self.fatal = err

    def _delivered(self, err, msg, seq):
        if err is not None:
            self.failed.append((msg.partition(), seq, err))
        else:
            self.acked.append((msg.partition(), msg.offset(), seq))

    def _run(self):
        seq = 0
        period = 1.0 / self.rate
        next_at = time.time()
        try:
            while not self._stop.is_set() and self.fatal is None:
                try:
                    self.producer.produce(self.topic, value=self.value(seq), partition=seq % self.partitions,
                                          on_delivery=lambda err, msg, seq=seq: self._delivered(err, msg, seq))
                except BufferError:
                    self.producer.poll(0.1)
                    continue
                seq += 1
                self.sent = seq
                self.producer.poll(0)
                next_at += period
                delay = next_at - time.time()
                if delay > 0:
                    self.producer.poll(delay)
                else:
                    next_at = time.time()
        except KafkaException as err:  # a fatal error makes produce() raise
            self.fatal = err
        self.unresolved = self.producer.flush(60)
        self.producer = None  # destroys the client: no reconnecting to brokers stopped later

    def stop(self):
        self._stop.set()
        self._thread.join(90)
        if self._log_handler is not None:
            self._log_handler.close()
        assert not self._thread.is_alive(), f"producer {self.name}: flush did not end"

    def progress(self, since, at_least, timeout, what):
        """Waits (bounded) until at least `at_least` more deliveries were acknowledged than
        `since`; fails naming `what` otherwise (a cluster that stopped taking acks=all writes)."""
        def check():
            assert self.fatal is None, f"producer {self.name}: fatal error {self.fatal}"
            got = len(self.acked) - since
            assert got >= at_least, f"producer {self.name}: {got} new acks, want {at_least}"
        eventually(check, timeout, f"{what}: producer {self.name} taking acks=all writes", interval=0.2)

    def summary(self):
        errors = collections.Counter(str(e.name()) for _, _, e in self.failed)
        return (f"{self.name}: sent {self.sent}, acked {len(self.acked)}, failed {len(self.failed)} "
                f"{dict(errors)}, unresolved {self.unresolved}, fatal {self.fatal}, "
                f"client errors {len(self.client_errors)} (first {self.client_errors[:3]})")


def produce_all(bootstrap, topic, values, partition, conf=None, timeout=60):
    """Produces each value to `partition` with acks=all and waits for every report:
    (acked [(offset, value)], failed [(value, KafkaError)])."""
    config = {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
              "linger.ms": 5, "message.timeout.ms": 30000}
    config.update(conf or {})
    producer = Producer(config)
    acked, failed = [], []

    def delivered(err, msg):
        if err is None:
            acked.append((msg.offset(), msg.value()))
        else:
            failed.append((msg.value(), err))
    for value in values:
        producer.produce(topic, value=value, partition=partition, on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(timeout)
    assert left == 0, f"{left} messages without a delivery report within {timeout} s"
    return acked, failed


# --- checks --------------------------------------------------------------------------------

def check_acks_in_log(log, acks):
    """`acks`: [(partition, offset, value, who)]. Fails, listing examples, if two acks claim one
    offset or an acknowledged value is not at its offset in `log` ({(p, o): (value, epoch)})."""
    claimed = collections.defaultdict(list)
    for p, o, v, who in acks:
        claimed[(p, o)].append((v, who))
    twice = {k: v for k, v in claimed.items() if len(v) > 1}
    assert not twice, f"{len(twice)} offsets acknowledged for two values, e.g. {sorted(twice.items())[:5]}"
    wrong = [(p, o, v, who, log.get((p, o))) for p, o, v, who in acks if log.get((p, o), (None,))[0] != v]
    assert not wrong, (f"{len(wrong)} of {len(acks)} acknowledged values not at their offset "
                       f"(partition, offset, acked value, producer, found): {sorted(wrong)[:10]}")


def values_by_partition(log, prefix):
    """{p: [(offset, seq)]} of the values `<prefix>-<seq>` in `log`, in offset order."""
    found = collections.defaultdict(list)
    for (p, o), (v, _) in sorted(log.items()):
        name, _, seq = v.decode().rpartition("-")
        if name == prefix:
            found[p].append((o, int(seq)))
    return found


def where_are(c, topic, partition, offsets):
    """Evidence: on each broker, the batches of the partition's log holding `offsets`."""
    lines = []
    for i in sorted(c.brokers):
        for h in batch_headers(c.data_dir(i) / f"{topic}-{partition}"):
            if any(h["base_offset"] <= o <= h["last_offset"] for o in offsets):
                lines.append(f"broker {i}: {h}")
    return "\n".join(lines)


def epochs_never_go_back(log):
    """Within each partition, the leader epochs of records never decrease with the offset."""
    last = {}
    for (p, o), (_, epoch) in sorted(log.items()):
        assert epoch >= last.get(p, (-1, -1))[0], f"partition {p}: epoch {epoch} at {o} after {last[p]}"
        last[p] = (epoch, o)


# --- tests ---------------------------------------------------------------------------------

def test_acked_writes_survive_killed_leaders_and_controller(chaos_cluster):
    """acks=all producers (idempotent and not) through rounds of SIGKILLed and restarted leaders and controllers: every ack is at its offset, the idempotent one's once each and in order, and new leaders serve the same records."""
    c = chaos_cluster("/chaos-kill")
    topic, partitions = "chaos", 4
    create_topic(c[1].bootstrap, topic, partitions, 3, TOPIC_CONFIG)
    c.wait_isr_full(topic, partitions)
    recorder = StateRecorder(c, {topic: partitions})
    started = time.time()
    producers = [BackgroundProducer("idem", c.bootstrap(), topic, partitions, idempotent=True, rate=RATE,
                                    log_path=c.dir / "idem-producer.log"),
                 BackgroundProducer("plain", c.bootstrap(), topic, partitions, idempotent=False, rate=RATE)]
    rounds = []
    try:
        for pr in producers:
            pr.progress(0, 50, 30, "before the first kill")
        for n in range(ROUNDS):
            states = c.states(topic, partitions)
            controller = c.controller_id()
            leaders = {s["leader"] for s in states.values()}
            if n % 2 == 0:
                kind = "leader"
                candidates = sorted(leaders - {controller}) or sorted(leaders)
                victim = candidates[(n // 2) % len(candidates)]
            else:
                kind = "controller"
                victim = controller
            led = sorted(p for p, s in states.items() if s["leader"] == victim)
            killed_at = time.time()
            c.kill9(victim)
            moved = c.wait_moved_off(victim, topic, partitions, controller=victim == controller)
            moved_at = time.time()
            acks_at_move = [len(pr.acked) for pr in producers]
            c.restart(victim)
            full = c.wait_isr_full(topic, partitions, timeout=45)
            rounds.append({
                "round": n + 1, "killed": victim, "as": kind, "was_controller": victim == controller,
                "led": led, "moved_after_s": round(moved_at - killed_at, 1),
                "isr_full_after_s": round(time.time() - killed_at, 1),
                "new_leaders": {p: moved[p]["leader"] for p in led},
                "epochs": {p: s["leader_epoch"] for p, s in full.items()},
                "controller_now": c.controller_id(),
            })
            print("round", rounds[-1])
            for pr, before in zip(producers, acks_at_move):
                pr.progress(before, 30, 30, f"after round {n + 1} (broker {victim} killed and restarted)")
    finally:
        for pr in producers:
            pr.stop()
        recorder.stop()
        print("\n".join(pr.summary() for pr in producers))
        print(f"leader moves {recorder.leader_moves()}, controller moves {recorder.controller_moves()}, "
              f"state history:\n{recorder.dump()}")
    chaos_s = time.time() - started

    for pr in producers:
        assert pr.fatal is None, pr.summary()
    log, order, high = read_log(c.bootstrap(), topic, partitions)
    acks = [(p, o, pr.value(seq), pr.name) for pr in producers for p, o, seq in pr.acked]
    print(f"{len(acks)} acks, log {len(log)} records, high watermarks {high}, {chaos_s:.0f} s of chaos")
    check_acks_in_log(log, acks)
    epochs_never_go_back(log)
    for p, offsets in order.items():
        assert offsets == sorted(offsets) == list(range(len(offsets))), f"partition {p}: offsets out of order or gaps"

    produced = {pr.value(seq) for pr in producers for seq in range(pr.sent)}
    strange = [(k, v) for k, (v, _) in log.items() if v not in produced]
    assert not strange, f"values nobody produced: {strange[:5]}"

    idem = producers[0]
    found = values_by_partition(log, idem.name)
    counts = collections.Counter(seq for entries in found.values() for _, seq in entries)
    dups = {seq: n for seq, n in counts.items() if n > 1}
    if dups:
        acked_at = {seq: (p, o) for p, o, seq in idem.acked}
        evidence = []
        for seq in sorted(dups)[:5]:
            p = seq % partitions
            copies = [(o, log[(p, o)][1]) for o, s in found[p] if s == seq]
            evidence.append(f"idem-{seq}: partition {p}, copies at (offset, epoch) {copies}, acked at "
                            f"{acked_at.get(seq)}\n" + where_are(c, topic, p, [o for o, _ in copies]))
        pytest.fail(f"idempotent producer: {len(dups)} values written more than once "
                    f"(librdkafka's eos log: {c.dir / 'idem-producer.log'}):\n" + "\n".join(evidence))
    for p, entries in found.items():
        seqs = [seq for _, seq in entries]
        assert seqs == sorted(seqs), f"idempotent producer: partition {p} out of order: {seqs[:50]}"
        assert all(seq % partitions == p for seq in seqs), f"partition {p}: values of another partition"
    by_seq = {}
    for p, o, seq in idem.acked:
        by_seq[seq] = (p, o)
    for p in range(partitions):
        acked_offsets = [by_seq[s][1] for s in sorted(by_seq) if by_seq[s][0] == p]
        assert acked_offsets == sorted(acked_offsets), f"idempotent producer: partition {p} acked out of order"
    plain_counts = collections.Counter(v for v, _ in log.values() if v.startswith(b"plain-"))
    print(f"idempotent values in the log {sum(counts.values())}, non-idempotent {sum(plain_counts.values())} "
          f"({sum(1 for n in plain_counts.values() if n > 1)} written twice by retries, allowed)")

    # One more leadership move per partition: stop (SIGTERM) its leader, read everything from
    # the new leaders, start the broker again.
    moves = []
    for p in range(partitions):
        old = c.partition_state(topic, p)["leader"]
        c.terminate(old)

        def moved():
            s = c.partition_state(topic, p)
            assert s["leader"] not in (old, -1), s
            return s
        s = eventually(moved, SESSION_S + 15, f"partition {p} to move off broker {old}")
        again, _, high_again = read_log(c.bootstrap(), topic, partitions, at_least=high)
        assert high_again == high, f"after moving {p} {old}->{s['leader']}: high watermarks {high_again} != {high}"
        diff = sorted(k for k in set(log) | set(again) if log.get(k) != again.get(k))
        assert not diff, (f"after moving partition {p} from {old} to {s['leader']}: {len(diff)} records differ, "
                          f"e.g. {[(k, log.get(k), again.get(k)) for k in diff[:5]]}")
        moves.append((p, old, s["leader"], s["leader_epoch"]))
        c.restart(old)
        c.wait_isr_full(topic, partitions, timeout=45)
    print(f"final moves (partition, from, to, epoch): {moves}")


def test_acks_all_refused_with_one_broker_alive(chaos_cluster):
    """With two of three brokers stopped, the ISR stays the survivor alone and acks=all is refused with NOT_ENOUGH_REPLICAS (librdkafka and the wire), nothing of it acknowledged or appended; once they are back the same writes succeed."""
    c = chaos_cluster("/chaos-alone")
    topic, partitions = "alone", 2
    create_topic(c[1].bootstrap, topic, partitions, 3, TOPIC_CONFIG)
    c.wait_isr_full(topic, partitions)
    before = {p: produce_all(c.bootstrap(), topic, [f"before-{p}-{i}".encode() for i in range(50)], p)
              for p in range(partitions)}
    for p, (acked, failed) in before.items():
        assert not failed and len(acked) == 50, (p, failed[:3])
    _, _, high = read_log(c.bootstrap(), topic, partitions)
    recorder = StateRecorder(c, {topic: partitions})

    # The survivor leads a partition already (its leadership outlives the others), and the
    # controller goes too unless it leads every partition.
    controller = c.controller_id()
    leaders = {s["leader"] for s in c.states(topic, partitions).values()}
    survivor = min(leaders - {controller} or leaders)
    try:
        for i in (1, 2, 3):
            if i != survivor:
                c.terminate(i)

        def alone():
            states = c.states(topic, partitions)
            for p, s in states.items():
                assert s["leader"] == survivor and s["isr"] == [survivor], (p, s)
            assert c.registered_ids() == [survivor] and c.controller_id() == survivor
            return states
        states = eventually(alone, SESSION_S + 15, f"broker {survivor} alone, the only ISR member")
        alone_at = time.time() - recorder.started
        print(f"alone: broker {survivor}, states {states}")

        refused, plain_errors, idem_errors, wire = [], {}, {}, {}
        for p in range(partitions):
            # librdkafka without retries: the broker's error is the delivery report's.
            values = [f"refused-plain-{p}-{i}".encode() for i in range(20)]
            acked, failed = produce_all(c.bootstrap(), topic, values, p, conf={"retries": 0}, timeout=30)
            assert not acked, f"partition {p}: acks=all acknowledged with one broker alive: {acked[:5]}"
            plain_errors[p] = collections.Counter(err.name() for _, err in failed)
            refused += values
            # The idempotent producer retries until its message timeout, acknowledging nothing.
            values = [f"refused-idem-{p}-{i}".encode() for i in range(20)]
            acked, failed = produce_all(c.bootstrap(), topic, values, p, timeout=30,
                                        conf={"enable.idempotence": True, "message.timeout.ms": 5000})
            assert not acked, f"partition {p}: acks=all acknowledged with one broker alive: {acked[:5]}"
            idem_errors[p] = collections.Counter(err.name() for _, err in failed)
            refused += values
            # On the wire, to the survivor itself, for 3 s back to back.
            direct = DirectProducer("127.0.0.1", c[survivor].port)
            wire[p] = collections.Counter()
            try:
                until = time.time() + 3
                while time.time() < until:
                    value = f"refused-direct-{p}-{sum(wire[p].values())}".encode()
                    wire[p][direct.send(topic, p, [value], acks=-1, timeout_ms=2000)[0]] += 1
                    refused.append(value)
            finally:
                direct.close()
        log_alone, _, high_alone = read_log(c.bootstrap(), topic, partitions)
    finally:
        recorder.stop()
        print(f"state history:\n{recorder.dump()}")
    # Nothing may write the state znodes while the survivor is alone: the ISR is the survivor
    # alone and no ISR change is due. (A poll can miss a change undone within its interval;
    # the znode version cannot.)
    alone_versions = {k: v[3] for t, k, v in recorder.changes if t <= alone_at and k.startswith(f"{topic}-")}
    readded = [(t, k, v) for t, k, v in recorder.changes if t > alone_at and k.startswith(f"{topic}-")
               and (v[2] != (survivor,) or v[3] != alone_versions[k])]
    appended = sorted((k, v) for k, v in log_alone.items() if k[1] >= high[k[0]])
    print(f"librdkafka errors without retries {plain_errors}, idempotent {idem_errors}; wire {wire}; "
          f"high watermarks {high} -> {high_alone}")
    assert not readded, (
        f"while broker {survivor} was alone, its state znodes were written again (ISR naming stopped "
        f"brokers, or versions moving: {len(readded)} changes seen, e.g. {readded[:6]}, from "
        f"{alone_versions}); high watermarks {high} -> {high_alone}, "
        f"records appended and committed meanwhile: {len(appended)}, e.g. {appended[:3]}")
    for p in range(partitions):
        assert plain_errors[p] == {"NOT_ENOUGH_REPLICAS": 20}, (p, plain_errors[p])
        assert set(wire[p]) == {NOT_ENOUGH_REPLICAS}, (p, wire[p])
    assert high_alone == high and not appended, \
        f"high watermarks moved while refusing: {high} -> {high_alone}: {appended[:5]}"

    for i in (1, 2, 3):
        if i != survivor:
            c.restart(i)
    c.wait_isr_full(topic, partitions, timeout=45)
    after = {p: produce_all(c.bootstrap(), topic, [f"after-{p}-{i}".encode() for i in range(50)], p)
             for p in range(partitions)}
    for p, (acked, failed) in after.items():
        assert not failed and len(acked) == 50, (p, failed[:3])
    log, _, _ = read_log(c.bootstrap(), topic, partitions)
    acks = [(p, o, v, "before") for p, (acked, _) in before.items() for o, v in acked]
    acks += [(p, o, v, "after") for p, (acked, _) in after.items() for o, v in acked]
    check_acks_in_log(log, acks)
    leaked = [k for k, (v, _) in log.items() if v in set(refused)]
    assert not leaked, f"refused values in the log at {leaked[:10]}"
    assert len(log) == len(acks), f"log has {len(log)} records, {len(acks)} were acknowledged"


@pytest.mark.parametrize("paused", ["leader", "leader-and-controller"])
def test_paused_leader_acknowledges_nothing_after_it_is_fenced(chaos_cluster, paused):
    """A leader SIGSTOPped past the session timeout is replaced; after SIGCONT it acknowledges nothing the new leader lacks (raw Produce to it, clients via the cluster) and rejoins as a follower with the new leader's log."""
    c = chaos_cluster(f"/chaos-pause-{paused}")
    topic = "paused"
    controller = c.controller_id()
    others = sorted(i for i in (1, 2, 3) if i != controller)
    if paused == "leader":
        old, rest = others[0], [others[1], controller]
    else:
        old, rest = controller, others
    # The paused broker first in the assignment: it leads now, and leads again after the new
    # leader is stopped at the end (first live ISR member in assignment order).
    create_topic(c[1].bootstrap, topic, None, config=TOPIC_CONFIG, replica_assignment=[[old, *rest]])
    first = c.wait_isr_full(topic, 1)[0]
    assert first["leader"] == old, first
    recorder = StateRecorder(c, {topic: 1})

    stop = threading.Event()
    answers = []  # (sender, sent at, answered at, value, error code or exception text, base offset)

    def direct_sender(k):
        """Asks broker `old` itself, one acks=all request at a time, reconnecting on errors."""
        seq = 0
        conn = None
        while not stop.is_set():
            sent = time.time()
            try:
                if conn is None:
                    conn = DirectProducer("127.0.0.1", c[old].port, timeout=30, client_id=f"direct-{k}")
                value = f"direct{k}-{seq}".encode()
                seq += 1
                code, offset = conn.send(topic, 0, [value], acks=-1, timeout_ms=3000)
                answers.append((k, sent, time.time(), value, code, offset))
                if code != 0:
                    time.sleep(0.05)
            except OSError as err:
                answers.append((k, sent, time.time(), None, repr(err), -1))
                if conn is not None:
                    conn.close()
                conn = None
                stop.wait(0.2)
        if conn is not None:
            conn.close()

    senders = [threading.Thread(target=direct_sender, args=(k,), daemon=True) for k in range(4)]
    cluster_producer = BackgroundProducer("cluster", c.bootstrap(), topic, 1, idempotent=False, rate=100)
    for t in senders:
        t.start()
    try:
        cluster_producer.progress(0, 50, 30, "before the pause")
        def direct_acked():
            assert any(a[4] == 0 for a in answers), f"direct answers so far: {answers[-3:]}"
        eventually(direct_acked, 20, "a direct ack from the leader before the pause")
        paused_at = time.time()
        c.pause(old)

        def replaced():
            s = c.partition_state(topic, 0)
            assert s["leader"] not in (old, -1) and s["leader_epoch"] > first["leader_epoch"], s
            return s
        new = eventually(replaced, SESSION_S + 15, f"a new leader while broker {old} is paused")
        replaced_at = time.time()
        acks_at_move = len(cluster_producer.acked)
        cluster_producer.progress(acks_at_move, 30, 30, "with the old leader paused")
        c.resume(old)
        resumed_at = time.time()
        time.sleep(6)  # the woken old leader gets the senders' queued and new requests
    finally:
        stop.set()
        for t in senders:
            t.join(40)
        cluster_producer.stop()
        recorder.stop()
        print(cluster_producer.summary())
        print(f"state history:\n{recorder.dump()}")
    assert not any(t.is_alive() for t in senders), "a direct sender hangs"
    print(f"paused broker {old} for {resumed_at - paused_at:.1f} s; replaced after {replaced_at - paused_at:.1f} s "
          f"by broker {new['leader']} at epoch {new['leader_epoch']} (was {first['leader_epoch']})")

    # The old leader rejoins the ISR as a follower.
    def rejoined():
        s = c.partition_state(topic, 0)
        assert old in s["isr"] and s["leader"] != old, s
        return s
    rejoined_state = eventually(rejoined, 45, f"broker {old} back in the ISR as a follower")

    log, _, high = read_log(c.bootstrap(), topic, 1)
    epochs_never_go_back(log)
    acks = [(p, o, cluster_producer.value(seq), "cluster") for p, o, seq in cluster_producer.acked]
    direct_acks = [(0, offset, value, f"direct{k}") for k, _, _, value, code, offset in answers if code == 0]
    woken = [a for a in answers if a[2] >= resumed_at]
    woken_acks = [a for a in woken if a[4] == 0]
    outcome = collections.Counter(str(a[4]) for a in woken)
    print(f"direct answers {len(answers)}, acks {len(direct_acks)}; answered after SIGCONT {len(woken)}: {dict(outcome)}; "
          f"acks among them {[(a[3], a[5]) for a in woken_acks][:10]}")
    print(f"cluster producer acks {len(acks)}; log {len(log)} records, high watermark {high}")
    old_epoch = [(a[3], a[5], log.get((0, a[5]))) for a in woken_acks]
    print(f"acks the woken broker {old} gave (value, offset, (value, leader epoch) in the final log): {old_epoch}")
    check_acks_in_log(log, acks + direct_acks)
    # (Implied by the check above, stated for the report: acks the woken leader gave are in
    # the final log, in its old epoch or not at all.)
    for value, offset, found in old_epoch:
        assert found is not None and found[0] == value, (value, offset, found)
    assert rejoined_state["leader_epoch"] >= new["leader_epoch"]

    # Its log converged: stop the current leader; the old one (first in the assignment, in the
    # ISR) leads and serves the very same records.
    current = c.partition_state(topic, 0)["leader"]
    c.terminate(current)

    def leads_again():
        s = c.partition_state(topic, 0)
        assert s["leader"] == old, s
        return s
    eventually(leads_again, SESSION_S + 15, f"broker {old} to lead after broker {current} stopped")
    again, _, high_again = read_log(c.bootstrap(), topic, 1, at_least=high)
    assert high_again == high, (high, high_again)
    diff = sorted(k for k in set(log) | set(again) if log.get(k) != again.get(k))
    assert not diff, (f"broker {old}'s log differs from broker {current}'s: {len(diff)} records, "
                      f"e.g. {[(k, log.get(k), again.get(k)) for k in diff[:5]]}")
