"""Proves the standalone coordinator works with kazoo, a real ZooKeeper client: its recipes
(Lock, Election, Queue, LockingQueue, Barrier, DataWatch, ChildrenWatch), ephemeral nodes
vanishing at session close and at expiry, sequential names and transactions, and that
malformed frames get ZooKeeper's answer or a closed connection while others keep being
served. How: start the `coordinator` binary on a free loopback port in a temp dir, drive it
with kazoo and with raw jute frames over sockets, stop it at the end."""

import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, ConnectionClosedError, NoNodeError, NodeExistsError
from kazoo.recipe.barrier import Barrier
from kazoo.recipe.election import Election
from kazoo.recipe.lock import Lock
from kazoo.recipe.queue import LockingQueue, Queue
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent


def built_binary(name):
    """The newest built binary `name` of the crate of the same name (release or debug);
    builds debug if none."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    candidates = [p for p in (target / "release" / name, target / "debug" / name) if p.exists()]
    if not candidates:
        subprocess.run(["cargo", "build", "-p", name, "--bin", name], cwd=REPO, check=True)
        candidates = [target / "debug" / name]
    return max(candidates, key=lambda p: p.stat().st_mtime)


def coordinator_binary():
    return built_binary("coordinator")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def four_letter(port, word):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(word.encode())
        chunks = []
        while True:
            b = s.recv(4096)
            if not b:
                return b"".join(chunks).decode()
            chunks.append(b)


class Coordinator:
    def __init__(self, tmp, port=None, extra=""):
        self.dir = Path(tmp)
        self.port = port or free_port()
        cfg = self.dir / "zoo.cfg"
        cfg.write_text(
            "tickTime=200\n"
            f"dataDir={self.dir / 'data'}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "maxClientCnxns=50\n"
            "4lw.commands.whitelist=*\n"
            "admin.enableServer=false\n" + extra
        )
        self.log = open(self.dir / "coordinator.log", "ab")
        self.proc = subprocess.Popen([str(coordinator_binary()), "--config", str(cfg)], stdout=self.log, stderr=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if four_letter(self.port, "ruok") == "imok":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("coordinator did not start: " + (self.dir / "coordinator.log").read_text())

    @property
    def hosts(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Coordinator(tmp_path_factory.mktemp("coordinator"))
    yield srv
    srv.stop()
    assert srv.proc.returncode is not None


@pytest.fixture
def client_factory(server):
    clients = []

    def make(**kwargs):
        c = KazooClient(hosts=server.hosts, timeout=4.0, **kwargs)
        c.start(timeout=10)
        clients.append(c)
        return c

    yield make
    for c in clients:
        try:
            c.stop()
            c.close()
        except Exception:
            pass


def wait_until(predicate, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- raw jute helpers -------------------------------------------------------------------

def frame(body):
    return struct.pack(">i", len(body)) + body


def jstring(s):
    b = s.encode()
    return struct.pack(">i", len(b)) + b


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def recv_frame(sock):
    (n,) = struct.unpack(">i", recv_exact(sock, 4))
    return recv_exact(sock, n)


def raw_connect(port, timeout_ms=30000, session_id=0, passwd=b"\0" * 16):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = struct.pack(">iqiq", 0, 0, timeout_ms, session_id) + struct.pack(">i", len(passwd)) + passwd + b"\0"
    s.sendall(frame(body))
    resp = recv_frame(s)
    proto, negotiated, sid = struct.unpack_from(">iiq", resp)
    (plen,) = struct.unpack_from(">i", resp, 16)
    return s, negotiated, sid, resp[20 : 20 + plen]


def is_closed(sock, timeout=5.0):
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


# --- recipes ------------------------------------------------------------------------------

def test_lock_is_exclusive_and_passes_on_release(client_factory):
    a, b = client_factory(), client_factory()
    lock_a, lock_b = Lock(a, "/recipes/lock", "a"), Lock(b, "/recipes/lock", "b")
    assert lock_a.acquire(timeout=5)
    assert not lock_b.acquire(blocking=False)
    assert lock_b.contenders() == ["a"]
    got = threading.Event()

    def wait_for_lock():
        if lock_b.acquire(timeout=10):
            got.set()

    t = threading.Thread(target=wait_for_lock)
    t.start()
    time.sleep(0.3)
    assert not got.is_set()
    lock_a.release()
    t.join(10)
    assert got.is_set()
    lock_b.release()


def test_election_fails_over_when_leader_session_closes(client_factory):
    a, b = client_factory(), client_factory()
    leaders = []
    a_elected, b_elected, done = threading.Event(), threading.Event(), threading.Event()

    def lead(name, event):
        def run():
            leaders.append(name)
            event.set()
            done.wait(30)  # hold leadership until the test ends or the session goes away

        return run

    def campaign(election, name, event):
        try:
            election.run(lead(name, event))
        except ConnectionClosedError:
            pass  # the leader's client was stopped under it: expected for "a"

    ea, eb = Election(a, "/recipes/election", "a"), Election(b, "/recipes/election", "b")
    ta = threading.Thread(target=campaign, args=(ea, "a", a_elected))
    ta.start()
    assert a_elected.wait(5)
    tb = threading.Thread(target=campaign, args=(eb, "b", b_elected))
    tb.start()
    try:
        time.sleep(0.3)
        assert not b_elected.is_set()
        assert eb.contenders() == ["a", "b"]
        a.stop()  # closing the session deletes the leader's ephemeral node
        assert b_elected.wait(10)
        assert leaders == ["a", "b"]
    finally:
        done.set()
        ta.join(10)
        tb.join(10)


def test_queue_and_locking_queue_keep_priority_and_fifo_order(client_factory):
    c = client_factory()
    q = Queue(c, "/recipes/queue")
    for item in [b"one", b"two", b"three"]:
        q.put(item)
    q.put(b"urgent", priority=1)
    assert len(q) == 4
    assert [q.get() for _ in range(4)] == [b"urgent", b"one", b"two", b"three"]
    assert q.get() is None

    producer, consumer = client_factory(), client_factory()
    lq = LockingQueue(producer, "/recipes/lqueue")
    lq.put_all([b"a", b"b"])
    cq = LockingQueue(consumer, "/recipes/lqueue")
    assert cq.get(timeout=5) == b"a"
    # Until consumed, the item is locked: a second consumer sees the next one.
    other = LockingQueue(client_factory(), "/recipes/lqueue")
    assert other.get(timeout=5) == b"b"
    assert cq.consume()
    assert other.consume()
    assert len(cq) == 0


def test_barrier_blocks_until_removed(client_factory):
    a, b = client_factory(), client_factory()
    barrier = Barrier(a, "/recipes/barrier")
    barrier.create()
    passed = threading.Event()

    def waiter():
        if Barrier(b, "/recipes/barrier").wait(10):
            passed.set()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert not passed.is_set()
    barrier.remove()
    t.join(10)
    assert passed.is_set()


def test_data_watch_and_children_watch_see_every_change(client_factory):
    writer, watcher = client_factory(), client_factory()
    writer.create("/watched", b"v0", makepath=True)
    seen_data, seen_children = [], []
    DataWatch(watcher, "/watched", lambda data, stat: seen_data.append(data))
    ChildrenWatch(watcher, "/watched", lambda children: seen_children.append(sorted(children)))
    wait_until(lambda: seen_data == [b"v0"] and seen_children == [[]], what="initial callbacks")
    writer.set("/watched", b"v1")
    wait_until(lambda: seen_data[-1] == b"v1", what="data change")
    writer.create("/watched/x")
    writer.create("/watched/y")
    wait_until(lambda: seen_children[-1] == ["x", "y"], what="children change")
    writer.delete("/watched/x")
    wait_until(lambda: seen_children[-1] == ["y"], what="child delete")
    writer.delete("/watched", recursive=True)
    wait_until(lambda: seen_data[-1] is None, what="node delete")


# --- ephemerals, sequential names, transactions ---------------------------------------------

def test_ephemeral_vanishes_when_session_closes(client_factory):
    owner, observer = client_factory(), client_factory()
    owner.create("/eph/closing", b"", ephemeral=True, makepath=True)
    gone = threading.Event()

    @observer.DataWatch("/eph/closing")
    def _watch(data, stat):
        if stat is None:
            gone.set()

    owner.stop()
    assert gone.wait(5)
    assert observer.exists("/eph/closing") is None


def raw_create_ephemeral(sock, xid, path):
    """Creates `path` as an ephemeral node of the raw session on `sock`; returns the error code."""
    create = struct.pack(">ii", xid, 1) + jstring(path) + struct.pack(">i", 0)
    create += struct.pack(">i", 1) + struct.pack(">i", 31) + jstring("world") + jstring("anyone")
    create += struct.pack(">i", 1)  # EPHEMERAL
    sock.sendall(frame(create))
    reply_xid, _zxid, err = struct.unpack_from(">iqi", recv_frame(sock))
    assert reply_xid == xid
    return err


def test_ephemeral_vanishes_when_session_expires(tmp_path):
    # A server of its own whose maxSessionTimeout (60 s) is far from the 400 ms session
    # below: expiry must follow the negotiated timeout, and "gone within 20 s" tells the two
    # apart with a margin no loaded machine eats into.
    srv = Coordinator(tmp_path, extra="maxSessionTimeout=60000\n")
    observer = KazooClient(hosts=srv.hosts, timeout=10.0)
    try:
        observer.start(timeout=10)
        observer.ensure_path("/eph")
        # A raw client that creates an ephemeral node and then goes silent (no pings).
        sock, negotiated, sid, _ = raw_connect(srv.port, timeout_ms=400)
        assert negotiated == 400  # minSessionTimeout = 2 * tickTime
        assert raw_create_ephemeral(sock, 1, "/eph/silent") == 0
        owner = observer.get("/eph/silent")[1].ephemeralOwner
        assert owner == sid
        started = time.time()
        wait_until(lambda: observer.exists("/eph/silent") is None, timeout=30, what="expiry")
        expired_after = time.time() - started
        print(f"a 400 ms session expired after {expired_after:.2f} s")
        assert expired_after < 20, "expiry followed maxSessionTimeout, not the session's 400 ms"
        assert is_closed(sock), "the expired session's connection is closed"
        sock.close()
    finally:
        observer.stop()
        observer.close()
        srv.stop()


def test_session_closed_by_another_connection_expires_the_first(server, client_factory):
    first = client_factory()
    first.create("/eph/shared", b"", ephemeral=True, makepath=True)
    sid, passwd = first.client_id
    # Resume the same session elsewhere and close it: kazoo's own expiry technique.
    second = KazooClient(hosts=server.hosts, client_id=(sid, passwd), timeout=4.0)
    second.start(timeout=10)
    second.stop()
    second.close()
    observer = client_factory()
    wait_until(lambda: observer.exists("/eph/shared") is None, what="ephemeral removal")


def test_sequential_names_carry_ten_digit_counters(client_factory):
    c = client_factory()
    c.ensure_path("/seq")
    names = [c.create("/seq/n-", sequence=True) for _ in range(3)]
    names.append(c.create("/seq/e-", ephemeral=True, sequence=True))
    assert names == ["/seq/n-0000000000", "/seq/n-0000000001", "/seq/n-0000000002", "/seq/e-0000000003"]
    assert sorted(c.get_children("/seq")) == ["e-0000000003", "n-0000000000", "n-0000000001", "n-0000000002"]


def test_transactions_are_atomic(client_factory):
    c = client_factory()
    c.create("/txn", b"x")
    t = c.transaction()
    t.create("/txn/a", b"1")
    t.check("/txn", 99)
    t.set_data("/txn", b"y")
    results = t.commit()
    assert isinstance(results[1], BadVersionError)
    assert c.exists("/txn/a") is None and c.get("/txn")[0] == b"x"
    t = c.transaction()
    t.create("/txn/a", b"1")
    t.check("/txn", 0)
    t.set_data("/txn", b"y", version=0)
    t.delete("/txn/a")
    results = t.commit()
    assert results[0] == "/txn/a" and results[1] is True and results[3] is True
    assert c.get("/txn")[0] == b"y" and c.exists("/txn/a") is None
    with pytest.raises(NodeExistsError):
        c.create("/txn")
    with pytest.raises(NoNodeError):
        c.set("/txn/none", b"")


# --- malformed input ----------------------------------------------------------------------

def send_malformed_frames(port, existing_path):
    """Sends one server every kind of malformed input and checks each gets ZooKeeper's answer
    or a closed connection; `existing_path` must exist (a valid request checks the session
    still works after the bad ones)."""
    # Negative and oversized lengths: the connection is closed.
    for length in (-1, 2**31 - 1, 1_048_575 + 4096):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(struct.pack(">i", length) + b"\0" * 16)
        assert is_closed(s), f"length {length}"
        s.close()

    # A connect request that is garbage: closed.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(frame(b"\x01\x02\x03"))
    assert is_closed(s)
    s.close()

    # Other protocols' bytes (their first 4 bytes read as a negative or huge length): closed.
    for junk in (b"\xde\xad\xbe\xef" + os.urandom(64), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(junk)
        assert is_closed(s)
        s.close()

    # After a good connect: unknown opcode -> UNIMPLEMENTED, bad body -> MARSHALLINGERROR,
    # and the session keeps working; a header shorter than 8 bytes -> closed.
    s, _, _, _ = raw_connect(port)
    s.sendall(frame(struct.pack(">ii", 5, 9999)))
    assert struct.unpack_from(">iqi", recv_frame(s))[::2] == (5, -6)
    s.sendall(frame(struct.pack(">ii", 6, 4) + b"\xff\xff\xff\x00"))
    assert struct.unpack_from(">iqi", recv_frame(s))[::2] == (6, -5)
    s.sendall(frame(struct.pack(">ii", 7, 3) + jstring(existing_path) + b"\0"))
    assert struct.unpack_from(">iqi", recv_frame(s))[::2] == (7, 0)
    s.sendall(frame(b"\x00\x01"))
    assert is_closed(s)
    s.close()


def test_malformed_frames_are_answered_or_closed_and_others_keep_working(server, client_factory):
    healthy = client_factory()
    healthy.ensure_path("/malformed")
    send_malformed_frames(server.port, "/malformed")

    # The server still serves everyone else.
    assert four_letter(server.port, "ruok") == "imok"
    healthy.set("/malformed", b"still fine")
    assert healthy.get("/malformed")[0] == b"still fine"
    fresh = client_factory()
    assert fresh.exists("/malformed") is not None


def test_four_letter_words(server, client_factory):
    client_factory().ensure_path("/fourletter")
    assert four_letter(server.port, "ruok") == "imok"
    srvr = four_letter(server.port, "srvr")
    assert "Mode: standalone" in srvr and "Node count:" in srvr
    stat = four_letter(server.port, "stat")
    assert "Clients:" in stat
    mntr = dict(line.split("\t", 1) for line in four_letter(server.port, "mntr").splitlines())
    assert mntr["zk_server_state"] == "standalone"
    assert int(mntr["zk_znode_count"]) >= 5


def test_set_watches_after_reconnect_fires_for_missed_changes(server, client_factory):
    """A client that lost its connection resumes its session on a new one and re-registers
    its watches with setWatches(relativeZxid): a change it missed fires at once, an
    unchanged node's watch fires on the next change."""
    writer = client_factory()
    writer.ensure_path("/sw/changed")
    writer.ensure_path("/sw/same")
    s, _, sid, passwd = raw_connect(server.port)
    # exists(/sw/changed) to learn the current zxid, then drop the socket without closing.
    s.sendall(frame(struct.pack(">ii", 1, 3) + jstring("/sw/changed") + b"\0"))
    _, seen_zxid, err = struct.unpack_from(">iqi", recv_frame(s))
    assert err == 0
    s.close()
    writer.set("/sw/changed", b"missed")
    s2, negotiated, sid2, _ = raw_connect(server.port, session_id=sid, passwd=passwd)
    assert sid2 == sid and negotiated > 0, "session resumed"
    body = struct.pack(">ii", -8, 101) + struct.pack(">q", seen_zxid)
    body += struct.pack(">i", 2) + jstring("/sw/changed") + jstring("/sw/same")  # data
    body += struct.pack(">i", 0) + struct.pack(">i", 0)  # exist, child
    s2.sendall(frame(body))
    replies = [recv_frame(s2), recv_frame(s2)]
    xid, _, _ = struct.unpack_from(">iqi", replies[0])
    assert xid == -1, "the missed change is notified first"
    ev_type, state = struct.unpack_from(">ii", replies[0], 16)
    (plen,) = struct.unpack_from(">i", replies[0], 24)
    assert (ev_type, state, replies[0][28 : 28 + plen]) == (3, 3, b"/sw/changed")
    assert struct.unpack_from(">iqi", replies[1])[::2] == (-8, 0)
    writer.set("/sw/same", b"now")
    note = recv_frame(s2)
    assert struct.unpack_from(">i", note)[0] == -1
    (plen,) = struct.unpack_from(">i", note, 24)
    assert note[28 : 28 + plen] == b"/sw/same"
    s2.close()


# --- durability ---------------------------------------------------------------------------

def test_restart_recovers_tree_sessions_and_watches(tmp_path):
    """Writes survive a kill -9 and restart (snapshots every 50 transactions plus log
    replay); clients resume their sessions after the restart and watch again."""
    srv = Coordinator(tmp_path, extra="snapCount=50\n")
    watcher = writer = None
    try:
        writer = KazooClient(hosts=srv.hosts, timeout=4.0)
        writer.start(timeout=10)
        writer.ensure_path("/durable")
        for i in range(120):
            writer.create(f"/durable/n-", str(i).encode(), sequence=True)
        writer.create("/durable/eph", b"", ephemeral=True)
        watcher = KazooClient(hosts=srv.hosts, timeout=4.0)
        watcher.start(timeout=10)
        # kazoo drops its one-shot watches on a disconnect; its DataWatch recipe re-reads and
        # re-watches after the reconnect, which is what this checks end to end.
        seen = []
        DataWatch(watcher, "/durable", lambda data, stat: seen.append(data))
        wait_until(lambda: seen == [b""], what="initial DataWatch call")
        session_before = watcher.client_id[0]
        wait_until(lambda: any((srv.dir / "data" / "zab").glob("snapshot.*")), what="a snapshot")

        srv.proc.kill()  # no clean shutdown: only what was fsynced survives
        srv.proc.wait()
        srv.log.close()
        srv = Coordinator(tmp_path, port=srv.port, extra="snapCount=50\n")

        wait_until(lambda: watcher.connected and writer.connected, what="clients reconnect")
        assert watcher.client_id[0] == session_before, "the session survived the restart"
        children = writer.get_children("/durable")
        assert len(children) == 121
        assert writer.get("/durable/n-0000000119")[0] == b"119"
        assert writer.exists("/durable/eph") is not None, "the owner's session is alive"
        writer.set("/durable", b"changed")
        wait_until(lambda: seen[-1] == b"changed", what="DataWatch after restart")
        writer.stop()
        wait_until(lambda: watcher.exists("/durable/eph") is None, what="ephemeral removal")
    finally:
        for c in (watcher, writer):
            if c is not None:
                c.stop()
                c.close()
        srv.stop()


def test_max_client_cnxns_per_ip_is_enforced(tmp_path):
    """maxClientCnxns=3: three connections from 127.0.0.1 are served, a fourth is closed at
    once, and a slot frees up when one of the three goes away."""
    srv = Coordinator(tmp_path, extra="maxClientCnxns=3\n")
    socks = []
    try:
        for _ in range(3):
            s, negotiated, _, _ = raw_connect(srv.port)
            assert negotiated > 0
            socks.append(s)
        extra = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        assert is_closed(extra, timeout=3)
        extra.close()
        socks.pop().close()
        time.sleep(0.3)
        s, negotiated, _, _ = raw_connect(srv.port)
        assert negotiated > 0
        socks.append(s)
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_bench_load_uses_the_coordinator_codec_end_to_end(server, client_factory, tmp_path):
    """`bench coordinator` (its client encodes and decodes with the coordinator's jute codec)
    creates exactly the znodes it reports, with its data, then sets and reads them back
    without an error: the shared codec speaks what kazoo reads."""
    bench = str(built_binary("bench"))
    created = tmp_path / "create.json"
    subprocess.run([bench, "coordinator", "--connect", server.hosts, "--op", "create",
                    "--clients", "2", "--requests-per-client", "150", "--size", "37",
                    "--root", "/bench-codec", "--json", str(created)],
                   check=True, capture_output=True, timeout=120)
    summary = json.loads(created.read_text())
    assert (summary["msgs"], summary["errors"]) == (300, 0), summary
    zk = client_factory()
    children = zk.get_children("/bench-codec")
    assert len(children) == 300
    data, stat = zk.get(f"/bench-codec/{children[0]}")
    assert len(data) == 37, data
    for op in ("set", "get"):
        out = tmp_path / f"{op}.json"
        subprocess.run([bench, "coordinator", "--connect", server.hosts, "--op", op,
                        "--clients", "2", "--duration", "1", "--keys", "20", "--size", "11",
                        "--root", "/bench-keys", "--json", str(out)],
                       check=True, capture_output=True, timeout=120)
        summary = json.loads(out.read_text())
        assert summary["msgs"] > 0 and summary["errors"] == 0, (op, summary)
    data, stat = zk.get("/bench-keys/k0")
    assert len(data) == 11 and stat.version >= 1, (data, stat)
