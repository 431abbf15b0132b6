"""Shared helpers for tests that need a coordination service or a broker cluster.

- `Ensemble`: three `coordinator` processes forming a ZAB ensemble (also used by
  test_coordinator_ensemble.py).
- `ZooKeeperStandalone`: Apache ZooKeeper 3.8 from Debian (/usr/share/java/zookeeper.jar), run
  directly with the `java` found on PATH, logs in the temp dir.
- `BrokerCluster`: `broker serve --coordinator ...` processes with ids, optional racks and a
  chroot, plus a kazoo client rooted at that chroot.
- `tls_broker_cluster`: our coordinator and a `BrokerCluster` whose brokers hold certificates
  from `Pki` (the TLS cluster tests' setup and teardown, in one place).
- `eventually`: a bounded retry of an assertion.
- `StateRecorder`: a thread that polls the controller, the registrations and partition state
  znodes and keeps every change with its time (evidence for chaos tests, leader moves counted).
- `DirectProducer`: Produce v3 requests on one socket to one chosen broker, no client library
  in between (no metadata, no retries, no redirect), to ask a particular broker for an ack.
- `create_topic`, `read_log`: CreateTopics with confluent-kafka; everything below the high
  watermarks read back with kafka-python, with each record's leader epoch.
- `batch_headers`: the RecordBatch headers in a partition directory's segment files (offsets,
  leader epoch, producer id/epoch/sequence), to show which batches hold a record on a replica.

Every process is started on free loopback ports in a temp dir, and every `stop()` is safe to
call on a half-started object, so fixtures can stop everything on failure."""

import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from conftest import Broker, PROFILES, Pki, broker_bin
from test_coordinator_kazoo import coordinator_binary, four_letter, free_port, wait_until

# Brokers' ZooKeeper session timeout. Servers bound it to 2..20 ticks, so coordination servers
# here run with COORD_TICK_MS = 500 (1000..10000 ms allowed).
SESSION_TIMEOUT_MS = 6000
COORD_TICK_MS = 500

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
ZOOKEEPER_CONF_DIR = Path("/etc/zookeeper/conf")  # log4j.properties
# zookeeper.jar's manifest has slf4j-api but no binding (logs would go nowhere); these route
# them through log4j's CONSOLE appender into the server's log file in the temp dir.
ZOOKEEPER_LOG_JARS = [Path("/usr/share/java/slf4j-log4j12.jar"), Path("/usr/share/java/log4j-1.2.jar")]


def eventually(check, timeout, what, interval=0.1):
    """Calls `check()` until it returns without raising (AssertionError or any client error)
    and returns its result; after `timeout` seconds re-raises the last failure, naming `what`."""
    deadline = time.time() + timeout
    while True:
        try:
            return check()
        except Exception as err:  # noqa: BLE001 - retried, then re-raised below
            if time.time() >= deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f} s; last: {err!r}") from err
        time.sleep(interval)


def tail(path, lines=40):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as err:
        return f"({path}: {err})"
    return "\n".join(text.splitlines()[-lines:])


class Ensemble:
    """Three coordinator processes on loopback, each with its own dataDir and myid."""

    flavour = "ours"

    def __init__(self, tmp, n=3, extra="", tick_ms=200, secure=False, server_extra=None):
        """`secure`: each server also gets its own `secureClientPort` (the `ssl.*` keys go
        in `extra`). `server_extra(i)`: zoo.cfg lines for server i alone (its own ports)."""
        self.dir = Path(tmp)
        self.extra = extra
        self.server_extra = server_extra or (lambda i: "")
        self.tick_ms = tick_ms
        self.client_ports = [free_port() for _ in range(n)]
        self.secure_ports = [free_port() for _ in range(n)] if secure else None
        self.peer_ports = [free_port() for _ in range(n)]
        self.election_ports = [free_port() for _ in range(n)]
        self.procs = [None] * n
        self.logs = [None] * n
        try:
            for i in range(n):
                self.start(i)
            self.wait_serving()
        except BaseException:
            self.stop()
            raise

    def data_dir(self, i):
        return self.dir / f"server{i + 1}" / "data"

    def start(self, i):
        d = self.dir / f"server{i + 1}"
        self.data_dir(i).mkdir(parents=True, exist_ok=True)
        (self.data_dir(i) / "myid").write_text(f"{i + 1}\n")
        servers = "".join(
            f"server.{j + 1}=127.0.0.1:{self.peer_ports[j]}:{self.election_ports[j]}\n"
            for j in range(len(self.procs))
        )
        cfg = d / "zoo.cfg"
        cfg.write_text(
            f"tickTime={self.tick_ms}\ninitLimit=10\nsyncLimit=5\n"
            f"dataDir={self.data_dir(i)}\n"
            f"clientPort={self.client_ports[i]}\n"
            "clientPortAddress=127.0.0.1\n"
            "4lw.commands.whitelist=*\n" + servers + self.extra + self.server_extra(i)
            + (
                f"secureClientPort={self.secure_ports[i]}\nsecureClientPortAddress=127.0.0.1\n"
                if self.secure_ports
                else ""
            )
        )
        self.logs[i] = open(d / "coordinator.log", "ab")
        self.procs[i] = subprocess.Popen(
            [str(coordinator_binary()), "--config", str(cfg)], stdout=self.logs[i], stderr=self.logs[i]
        )

    def mode(self, i):
        try:
            text = four_letter(self.client_ports[i], "srvr")
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("Mode: "):
                return line[len("Mode: ") :]
        return None

    def running(self):
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]

    def leader(self):
        for i in self.running():
            if self.mode(i) == "leader":
                return i
        return None

    def wait_serving(self, timeout=20.0):
        wait_until(
            lambda: all(self.mode(i) in ("leader", "follower") for i in self.running())
            and self.leader() is not None,
            timeout,
            "every running server to serve under one leader",
        )

    def hosts(self, servers=None):
        servers = range(len(self.procs)) if servers is None else servers
        return ",".join(f"127.0.0.1:{self.client_ports[i]}" for i in servers)

    @property
    def connect(self):
        return self.hosts()

    def secure_hosts(self, servers=None):
        servers = range(len(self.procs)) if servers is None else servers
        return ",".join(f"127.0.0.1:{self.secure_ports[i]}" for i in servers)

    def log_tails(self, lines=20):
        return "\n".join(
            f"--- coordinator server{i + 1} ---\n" + tail(self.dir / f"server{i + 1}" / "coordinator.log", lines)
            for i in range(len(self.procs))
        )

    def kill9(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()
        self.logs[i].close()

    def stop(self):
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if self.logs[i] is not None:
                self.logs[i].close()


class ZooKeeperStandalone:
    """Apache ZooKeeper 3.8 (Debian's package) as one standalone server on a free loopback port.

    Runs QuorumPeerMain directly rather than zkServer.sh, because Debian's zkEnv.sh hard-codes
    ZOO_LOG_DIR=/var/log/zookeeper and JAVA=/usr/bin/java; here the log goes to the temp dir
    and java is the one on PATH."""

    flavour = "zookeeper"

    def __init__(self, tmp, tick_ms=COORD_TICK_MS, start_timeout=60.0):
        self.dir = Path(tmp)
        self.proc = None
        self.log = None
        java = shutil.which("java")
        if java is None or not ZOOKEEPER_JAR.exists():
            raise FileNotFoundError("java or Debian's zookeeper is missing: run scripts/setup")
        self.port = free_port()
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "zoo.cfg"
        cfg.write_text(
            f"tickTime={tick_ms}\n"
            f"dataDir={data}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=*\n"
            "maxClientCnxns=0\n"
        )
        self.log_path = self.dir / "zookeeper.out"
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, ZOO_LOG_DIR=str(self.dir))
        self.proc = subprocess.Popen(
            [java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             f"-Dzookeeper.log.dir={self.dir}", "-Dzookeeper.log.file=zookeeper.log",
             "-Dzookeeper.root.logger=INFO,CONSOLE",
             "-cp", ":".join(str(p) for p in [ZOOKEEPER_CONF_DIR, ZOOKEEPER_JAR, *ZOOKEEPER_LOG_JARS]
                             if p.exists()),
             "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg)],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL, env=env)
        try:
            wait_until(lambda: self.mode() == "standalone" or self.proc.poll() is not None,
                       start_timeout, "ZooKeeper to serve")
            if self.proc.poll() is not None:
                raise RuntimeError("ZooKeeper exited at start:\n" + tail(self.log_path))
        except BaseException:
            self.stop()
            raise

    def mode(self):
        try:
            text = four_letter(self.port, "srvr")
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("Mode: "):
                return line[len("Mode: ") :]
        return None

    @property
    def connect(self):
        return f"127.0.0.1:{self.port}"

    def log_tails(self, lines=20):
        return "--- zookeeper ---\n" + tail(self.log_path, lines)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()


def start_coordination(flavour, tmp):
    """A running coordination service of `flavour` ("ours": 3-server coordinator ensemble,
    "zookeeper": Apache ZooKeeper standalone); it has `.connect` and `.stop()`."""
    if flavour == "ours":
        return Ensemble(tmp, tick_ms=COORD_TICK_MS)
    if flavour == "zookeeper":
        return ZooKeeperStandalone(tmp)
    raise ValueError(flavour)


def zk_client(connect, timeout=10.0):
    """A started kazoo client (connect may carry a chroot)."""
    client = KazooClient(hosts=connect, timeout=timeout)
    client.start(timeout=15)
    return client


def stop_zk_client(client):
    try:
        client.stop()
        client.close()
    except Exception:  # noqa: BLE001 - teardown
        pass


def serve_args(data_dir, broker_id, connect, rack=None, profile="dev-2core.toml"):
    """The full `broker serve` command line of a cluster member (for starting it by hand)."""
    return [broker_bin(), "serve", "--tuning", str(PROFILES / profile), "--data-dir", str(data_dir),
            "--listen", "127.0.0.1:0", *member_extra(broker_id, connect, rack)]


def member_extra(broker_id, connect, rack=None, session_timeout_ms=SESSION_TIMEOUT_MS, args=()):
    """`args`: more `broker serve` flags (e.g. `--min-insync-replicas 2`), the same for every member."""
    extra = ["--id", str(broker_id), "--coordinator", connect,
             "--session-timeout-ms", str(session_timeout_ms)]
    if rack is not None:
        extra += ["--rack", rack]
    return extra + list(args)


class BrokerCluster:
    """Brokers registered in one coordination service under `chroot` ("" = the root).

    `zk` is a kazoo client rooted at the chroot, so paths are Kafka's (/brokers/ids, ...).
    `session_timeout_ms`, `broker_args` (more `broker serve` flags), `protocol` (a security
    protocol such as SASL_PLAINTEXT for `--listener`) and `broker_kwargs` (more `Broker`
    arguments, e.g. protocol="SSL", tls=...) apply to every member."""

    def __init__(self, tmp, coord, ids=(1, 2, 3), chroot="", racks=None,
                 session_timeout_ms=SESSION_TIMEOUT_MS, broker_args=(), protocol=None,
                 broker_kwargs=None):
        self.dir = Path(tmp)
        self.coord = coord
        self.chroot = chroot
        self.connect = coord.connect + chroot
        self.racks = dict(racks or {})
        self.session_timeout_ms = session_timeout_ms
        self.brokers = {
            i: Broker(self.dir / f"broker{i}" / "data", protocol=protocol,
                      extra=member_extra(i, self.connect, self.racks.get(i), session_timeout_ms, broker_args),
                      **(broker_kwargs or {}))
            for i in ids
        }
        self.paused = set()
        self.zk = None
        try:
            for b in self.brokers.values():
                b.start()
            self.zk = zk_client(self.connect)
            self.wait_registered(ids)
        except BaseException:
            self.stop()
            raise

    def wait_registered(self, ids, timeout=30):
        """Until every broker of `ids` is registered and the controller's view has them all
        (it logs each live set it acts on), so a test's first CreateTopics sees the whole
        cluster."""
        want = sorted(str(i) for i in ids)
        deadline = time.time() + timeout
        while sorted(self.zk.get_children("/brokers/ids")) != want:
            assert time.time() < deadline, f"brokers {want} not all registered"
            time.sleep(0.05)
        # A broker's view follows /brokers/ids through a watch: give every member's watch the
        # time to fire by reading each one's Metadata broker count where the client can.
        for i in ids:
            b = self.brokers[i]
            while b.protocol in (None, "PLAINTEXT") and b.tls is None:
                seen = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10).brokers
                if len(seen) >= len(ids):
                    break
                assert time.time() < deadline, f"broker {i} sees {sorted(seen)} of {want}"
                time.sleep(0.05)

    # --- processes -------------------------------------------------------------------------

    def __getitem__(self, broker_id):
        return self.brokers[broker_id]

    def live_ids(self):
        return sorted(i for i, b in self.brokers.items() if b.proc is not None and b.proc.poll() is None)

    def bootstrap(self, ids=None):
        ids = self.live_ids() if ids is None else ids
        return ",".join(self.brokers[i].bootstrap for i in ids)

    def mark(self, broker_id, what):
        """Appends `--- test: WHAT at <time> ---` to the broker's stderr log, so the log shows
        where the test killed, paused or restarted it."""
        stamp = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        with open(self.brokers[broker_id].stderr_path, "a") as f:
            f.write(f"--- test: {what} at {stamp} ---\n")

    def kill9(self, broker_id):
        self.mark(broker_id, "SIGKILL")
        self.brokers[broker_id].kill()

    def terminate(self, broker_id, timeout=30):
        """SIGTERM and wait for the exit; returns the exit code."""
        self.mark(broker_id, "SIGTERM")
        return self.brokers[broker_id].stop(timeout=timeout)

    def restart(self, broker_id, timeout=60):
        """Starts a stopped or killed member again with its id and data dir, on its previous port
        when it had one (clients' bootstrap lists stay valid), else on a free one."""
        b = self.brokers[broker_id]
        assert b.proc is None, f"broker {broker_id} is running"
        self.mark(broker_id, "restart")
        try:
            return b.start(port=b.port or 0, timeout=timeout)
        except RuntimeError:
            if not b.port:
                raise
            return b.start(port=0, timeout=timeout)  # the old port was taken meanwhile

    def pause(self, broker_id):
        """SIGSTOP: the process freezes (no heartbeats, no answers) until `resume`."""
        self.paused.add(broker_id)
        self.mark(broker_id, "SIGSTOP")
        self.brokers[broker_id].proc.send_signal(signal.SIGSTOP)

    def resume(self, broker_id):
        proc = self.brokers[broker_id].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            self.mark(broker_id, "SIGCONT")
        self.paused.discard(broker_id)

    def data_dir(self, broker_id):
        return self.brokers[broker_id].data_dir

    def cli(self, *args, timeout=60):
        """Runs `broker ARGS`; returns the CompletedProcess (text), not checking the exit code."""
        return subprocess.run([broker_bin(), *args], capture_output=True, text=True, timeout=timeout)

    def log_tails(self, lines=30):
        return "\n".join(f"--- broker {i} stderr ---\n" + tail(b.stderr_path, lines)
                         for i, b in self.brokers.items())

    def stop(self):
        for i in list(self.paused):
            try:
                self.resume(i)  # a stopped process would sit on SIGTERM until killed
            except Exception:  # noqa: BLE001 - teardown
                pass
        if self.zk is not None:
            stop_zk_client(self.zk)
            self.zk = None
        for b in self.brokers.values():
            try:
                if b.proc is not None and b.proc.poll() is None:
                    b.stop(timeout=10)
                elif b.proc is not None:
                    b.kill()  # reaps and closes its stderr file
            except Exception:  # noqa: BLE001 - keep stopping the others
                if b.proc is not None:
                    b.proc.kill()

    # --- znodes ----------------------------------------------------------------------------

    def get(self, path):
        data, stat = self.zk.get(path)
        return data, stat

    def get_json(self, path):
        return json.loads(self.zk.get(path)[0])

    def exists(self, path):
        return self.zk.exists(path) is not None

    def children(self, path):
        try:
            return sorted(self.zk.get_children(path))
        except NoNodeError:
            return []

    def registered_ids(self):
        return sorted(int(c) for c in self.children("/brokers/ids"))

    def controller_id(self):
        return self.get_json("/controller")["brokerid"]

    def controller_epoch(self):
        return int(self.zk.get("/controller_epoch")[0].decode())

    def cluster_id(self):
        return self.get_json("/cluster/id")["id"]

    def assignment(self, topic):
        """{partition: [replica ids]} from /brokers/topics/<topic>."""
        return {int(p): r for p, r in self.get_json(f"/brokers/topics/{topic}")["partitions"].items()}

    def partition_state(self, topic, partition):
        return self.get_json(f"/brokers/topics/{topic}/partitions/{partition}/state")

    def states(self, topic, partitions):
        """{p: state znode} for p in range(partitions)."""
        return {p: self.partition_state(topic, p) for p in range(partitions)}

    def wait_isr_full(self, topic, partitions, timeout=30):
        """Waits until every partition has a leader and its whole assignment in the ISR."""
        assignment = self.assignment(topic)

        def check():
            states = self.states(topic, partitions)
            for p, s in states.items():
                assert s["leader"] >= 0 and sorted(s["isr"]) == sorted(assignment[p]), (p, s)
            return states
        return eventually(check, timeout, f"every partition of {topic} led with a full ISR")

    def wait_moved_off(self, broker_id, topic, partitions, controller=False, timeout=None):
        """After `broker_id` died: waits until its registration is gone, it leads no partition
        and is in no ISR (and, with `controller`, another broker holds /controller); returns
        the states."""
        timeout = timeout if timeout is not None else self.session_timeout_ms / 1000 + 10

        def check():
            assert broker_id not in self.registered_ids(), f"broker {broker_id} still registered"
            if controller:
                assert self.controller_id() != broker_id, "/controller unchanged"
            states = self.states(topic, partitions)
            for p, s in states.items():
                assert s["leader"] != broker_id and broker_id not in s["isr"], (p, s)
            return states
        return eventually(check, timeout, f"broker {broker_id}'s leaderships and ISR seats to move")



@contextlib.contextmanager
def tls_broker_cluster(tmp, before_brokers=None, **cluster_kwargs):
    """Our coordinator under `tmp/coord`, certificates (`Pki`) under `tmp/pki` and a
    `BrokerCluster` under `tmp/cluster` whose brokers serve with them (`cluster.pki`).
    `before_brokers(coord)` runs once the coordinator serves and before any broker starts
    (e.g. to write users); `cluster_kwargs` go to `BrokerCluster`. Everything is stopped at
    the end, also on failure, and the brokers' log tails printed."""
    coord = start_coordination("ours", Path(tmp) / "coord")
    cluster = None
    try:
        pki = Pki(Path(tmp) / "pki")
        if before_brokers is not None:
            before_brokers(coord)
        cluster = BrokerCluster(Path(tmp) / "cluster", coord, broker_kwargs={"tls": pki},
                                **cluster_kwargs)
        cluster.pki = pki
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
            print(cluster.log_tails())
        coord.stop()

class StateRecorder:
    """Polls /controller, /brokers/ids and the state znodes of `topics` ({name: partitions})
    every `interval` s on a thread and keeps each change: [(seconds since start, key, value)],
    a state's value being (leader, leader epoch, ISR, znode version): the version shows writes
    that a poll missed (a change undone within the interval)."""

    def __init__(self, cluster, topics, interval=0.1):
        self.cluster = cluster
        self.topics = dict(topics)
        self.interval = interval
        self.started = time.time()
        self.changes = []
        self.last = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="state-recorder", daemon=True)
        self._thread.start()

    def _read(self):
        c = self.cluster
        seen = {}
        try:
            seen["controller"] = c.controller_id()
        except NoNodeError:
            seen["controller"] = None
        seen["brokers"] = tuple(c.registered_ids())
        for topic, partitions in self.topics.items():
            for p in range(partitions):
                try:
                    data, stat = c.get(f"/brokers/topics/{topic}/partitions/{p}/state")
                except NoNodeError:
                    continue
                s = json.loads(data)
                seen[f"{topic}-{p}"] = (s["leader"], s["leader_epoch"], tuple(s["isr"]), stat.version)
        return seen

    def _run(self):
        while not self._stop.is_set():
            try:
                seen = self._read()
            except Exception:  # noqa: BLE001 - a missed poll is retried at the next tick
                self.errors += 1
            else:
                now = round(time.time() - self.started, 2)
                for key, value in seen.items():
                    if self.last.get(key, "unset") != value:
                        self.changes.append((now, key, value))
                        self.last[key] = value
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join(10)

    def leader_moves(self):
        """{topic-partition: number of times its leader changed to another live broker}."""
        moves = collections.Counter()
        leader = {}
        for _, key, value in self.changes:
            if key in ("controller", "brokers"):
                continue
            if key in leader and value[0] >= 0 and value[0] != leader[key]:
                moves[key] += 1
            if value[0] >= 0:
                leader[key] = value[0]
        return dict(moves)

    def controller_moves(self):
        ids = [v for _, k, v in self.changes if k == "controller" and v is not None]
        return sum(1 for a, b in zip(ids, ids[1:]) if a != b)

    def dump(self):
        return "\n".join(f"{t:8.2f}  {k:>24}  {v}" for t, k, v in self.changes)


def create_topic(bootstrap, name, partitions, rf=1, config=None, replica_assignment=None):
    """CreateTopics through `bootstrap` with confluent-kafka (explicit `replica_assignment`, a
    list of replica lists, instead of `partitions`/`rf` when given); raises KafkaException if
    refused."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})
    if replica_assignment is not None:
        new = NewTopic(name, len(replica_assignment), replica_assignment=replica_assignment,
                       config=dict(config or {}))
    else:
        new = NewTopic(name, partitions, rf, config=dict(config or {}))
    futures = admin.create_topics([new], operation_timeout=15, request_timeout=20)
    futures[name].result(timeout=30)  # the admin client must outlive the future


def read_log(bootstrap, topic, partitions, timeout=60, at_least=None):
    """Every record below each partition's high watermark, from the beginning, read by
    kafka-python without a group: ({(p, offset): (value, leader_epoch)}, {p: [offsets in
    arrival order]}, {p: high watermark}). `at_least` ({p: offset}): first waits (bounded) until
    the high watermarks reach those offsets (a new leader's may lag until its ISR fetches)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", request_timeout_ms=15000,
                             metadata_max_age_ms=2000)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)

        def ends():
            found = consumer.end_offsets(tps)
            for tp in tps:
                want = (at_least or {}).get(tp.partition, 0)
                assert found[tp] >= want, f"{topic}-{tp.partition}: high watermark {found[tp]} < {want}"
            return found
        end = eventually(ends, timeout / 2, f"{topic}: high watermarks to reach {at_least}", interval=0.5)
        consumer.seek_to_beginning(*tps)
        got, order = {}, collections.defaultdict(list)
        deadline = time.time() + timeout
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.time() < deadline, \
                f"kafka-python: positions {[consumer.position(tp) for tp in tps]} ends {end}"
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    if r.offset < end[tp]:
                        got[(tp.partition, r.offset)] = (r.value, r.leader_epoch)
                        order[tp.partition].append(r.offset)
        return got, order, {tp.partition: end[tp] for tp in tps}
    finally:
        consumer.close()


BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")  # RecordBatch v2 up to recordsCount: 61 bytes


def batch_headers(partition_dir):
    """[{base_offset, last_offset, leader_epoch, producer_id, producer_epoch, base_sequence,
    records}] of every batch in the partition directory's `.log` segments, in offset order
    (reading stops at a segment's preallocated zeros or a torn batch)."""
    found = []
    for segment in sorted(Path(partition_dir).glob("*.log")):
        data = segment.read_bytes()
        at = 0
        while at + BATCH_HEADER.size <= len(data):
            (base, length, epoch, magic, _crc, _attrs, last_delta, _t0, _t1, pid, pepoch, seq,
             count) = BATCH_HEADER.unpack_from(data, at)
            if length <= 0 or magic != 2 or at + 12 + length > len(data):
                break
            found.append({"base_offset": base, "last_offset": base + last_delta, "leader_epoch": epoch,
                          "producer_id": pid, "producer_epoch": pepoch, "base_sequence": seq,
                          "records": count})
            at += 12 + length
    return found


class DirectProducer:
    """Produce v3 on one TCP connection to one broker: one request at a time, no metadata, no
    retries, no redirect to the leader. `send` returns (error code, base offset) for a batch of
    values to one partition, or raises OSError when the connection fails or times out."""

    API_VERSION = 3

    def __init__(self, host, port, timeout=30.0, client_id="direct-producer"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.client_id = client_id.encode()
        self.correlation = 0

    @staticmethod
    def _str(b):
        return struct.pack(">h", len(b)) + b

    @staticmethod
    def batch(values):
        from kafka.record.default_records import DefaultRecordBatchBuilder

        builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                            producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                            batch_size=1 << 20)
        now = int(time.time() * 1000)
        for i, value in enumerate(values):
            builder.append(i, timestamp=now, key=None, value=value, headers=[])
        return bytes(builder.build())

    def send(self, topic, partition, values, acks=-1, timeout_ms=5000):
        self.correlation += 1
        records = self.batch(values)
        header = struct.pack(">hhi", 0, self.API_VERSION, self.correlation) + self._str(self.client_id)
        body = (struct.pack(">hhi", -1, acks, timeout_ms)  # null transactional id, acks, timeout
                + struct.pack(">i", 1) + self._str(topic.encode())
                + struct.pack(">iii", 1, partition, len(records)) + records)
        self.sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        if acks == 0:
            return 0, -1
        size = struct.unpack(">i", self._read(4))[0]
        frame = self._read(size)
        correlation, topics = struct.unpack_from(">ii", frame, 0)
        assert correlation == self.correlation, (correlation, self.correlation)
        at = 8
        (name_len,) = struct.unpack_from(">h", frame, at)
        at += 2 + name_len
        (count,) = struct.unpack_from(">i", frame, at)
        at += 4
        assert topics == 1 and count == 1, (topics, count)
        got_partition, error, base_offset = struct.unpack_from(">ihq", frame, at)
        assert got_partition == partition, (got_partition, partition)
        return error, base_offset

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            buf += chunk
        return buf

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
