"""Shared helpers for tests that need a coordination service or a broker cluster.

- `Ensemble`: three `coordinator` processes forming a ZAB ensemble (also used by
  test_coordinator_ensemble.py).
- `ZooKeeperStandalone`: Apache ZooKeeper 3.8 from Debian (/usr/share/java/zookeeper.jar), run
  directly with the `java` found on PATH, logs in the temp dir.
- `BrokerCluster`: `broker serve --coordinator ...` processes with ids, optional racks and a
  chroot, plus a kazoo client rooted at that chroot.
- `eventually`: a bounded retry of an assertion.

Every process is started on free loopback ports in a temp dir, and every `stop()` is safe to
call on a half-started object, so fixtures can stop everything on failure."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from conftest import Broker, PROFILES, broker_bin
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

    def __init__(self, tmp, n=3, extra="", tick_ms=200):
        self.dir = Path(tmp)
        self.extra = extra
        self.tick_ms = tick_ms
        self.client_ports = [free_port() for _ in range(n)]
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
            "4lw.commands.whitelist=*\n" + servers + self.extra
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


def member_extra(broker_id, connect, rack=None):
    extra = ["--id", str(broker_id), "--coordinator", connect,
             "--session-timeout-ms", str(SESSION_TIMEOUT_MS)]
    if rack is not None:
        extra += ["--rack", rack]
    return extra


class BrokerCluster:
    """Brokers registered in one coordination service under `chroot` ("" = the root).

    `zk` is a kazoo client rooted at the chroot, so paths are Kafka's (/brokers/ids, ...)."""

    def __init__(self, tmp, coord, ids=(1, 2, 3), chroot="", racks=None):
        self.dir = Path(tmp)
        self.coord = coord
        self.chroot = chroot
        self.connect = coord.connect + chroot
        self.racks = dict(racks or {})
        self.brokers = {
            i: Broker(self.dir / f"broker{i}" / "data",
                      extra=member_extra(i, self.connect, self.racks.get(i)))
            for i in ids
        }
        self.zk = None
        try:
            for b in self.brokers.values():
                b.start()
            self.zk = zk_client(self.connect)
        except BaseException:
            self.stop()
            raise

    # --- processes -------------------------------------------------------------------------

    def __getitem__(self, broker_id):
        return self.brokers[broker_id]

    def live_ids(self):
        return sorted(i for i, b in self.brokers.items() if b.proc is not None and b.proc.poll() is None)

    def bootstrap(self, ids=None):
        ids = self.live_ids() if ids is None else ids
        return ",".join(self.brokers[i].bootstrap for i in ids)

    def kill9(self, broker_id):
        self.brokers[broker_id].kill()

    def data_dir(self, broker_id):
        return self.brokers[broker_id].data_dir

    def cli(self, *args, timeout=60):
        """Runs `broker ARGS`; returns the CompletedProcess (text), not checking the exit code."""
        return subprocess.run([broker_bin(), *args], capture_output=True, text=True, timeout=timeout)

    def log_tails(self, lines=30):
        return "\n".join(f"--- broker {i} stderr ---\n" + tail(b.stderr_path, lines)
                         for i, b in self.brokers.items())

    def stop(self):
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
