"""Proves a real Prometheus server (Debian's, tests/prometheus.py) scraping the `/metrics`
endpoint of each server of a 3-server ensemble (zoo.cfg `metricsProvider.*`, ZooKeeper's
keys) sees what a kazoo client did: every server's `commit_count_total` and `znode_count`
grow by exactly the creates and sets sent (instant queries at two times), PromQL's
`increase()` over the load matches it within 10% (extrapolation only), the reads and writes
show up in `readlatency`/`updatelatency` of the server the client used, and the role gauges
name exactly one leader with two synced followers; that a follower wiped and restarted gets
a SNAP the leader counts (`snap_count_total`) and both sides log with its size; and that the
documented alert rules pass `promtool check rules`. How: start the binaries and Prometheus on
free loopback ports in temp dirs, drive a known load, query Prometheus's HTTP API; everything
is stopped at the end, also on failure."""

import pathlib
import re
import shutil
import subprocess
import time
import urllib.request

import pytest
from kazoo.client import KazooClient

from cluster import Ensemble, eventually, stop_zk_client
from prometheus import Prometheus
from test_coordinator_kazoo import free_port

pytestmark = pytest.mark.timeout(240)

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
PROVIDER = "org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider"
CREATES, SETS, READS = 300, 200, 150
WINDOW_S = 40


def scrape(port):
    """`{series: value}` of one direct GET /metrics (series without labels only)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def by_instance(prom, expr, at=None):
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    data = prom.api("query", **params)
    return {item["metric"].get("instance"): float(item["value"][1]) for item in data["result"]}


def wait_prometheus_caught_up(prom, ports, metric, timeout=30):
    """Waits until Prometheus's latest sample of `metric` equals what each endpoint serves
    now (no writes are running), so an instant query at this moment sees the final values."""
    targets = {f"127.0.0.1:{p}": p for p in ports}

    def caught_up():
        seen = by_instance(prom, metric)
        served = {t: scrape(p)[metric] for t, p in targets.items()}
        assert seen == served, (seen, served)

    eventually(caught_up, timeout, f"Prometheus to scrape the final {metric}")
    return time.time()


def test_prometheus_sees_the_load_and_one_leader(tmp_path):
    metrics_ports = [free_port() for _ in range(3)]
    ens = Ensemble(
        tmp_path / "ensemble",
        server_extra=lambda i: (
            f"metricsProvider.className={PROVIDER}\n"
            "metricsProvider.httpHost=127.0.0.1\n"
            f"metricsProvider.httpPort={metrics_ports[i]}\n"
        ),
    )
    zk = None
    try:
        with Prometheus(
            tmp_path / "prometheus",
            {"coordinator": [f"127.0.0.1:{p}" for p in metrics_ports]},
        ) as prom:
            prom.wait_scraped()
            scraping_since = time.time()
            time.sleep(2)  # so the 40 s window ending after the load lies within the samples
            zk = KazooClient(hosts=ens.hosts(), timeout=10)
            zk.start(timeout=15)
            zk.ensure_path("/load")
            t0 = wait_prometheus_caught_up(prom, metrics_ports, "commit_count_total")
            start = time.time()

            pending = [zk.create_async(f"/load/n{i}", b"x" * 100) for i in range(CREATES)]
            for p in pending:
                p.get(timeout=30)
            pending = [zk.set_async(f"/load/n{i}", b"y" * 50) for i in range(SETS)]
            for p in pending:
                p.get(timeout=30)
            for i in range(READS):
                zk.get(f"/load/n{i}")
            load_s = time.time() - start

            t1 = wait_prometheus_caught_up(prom, metrics_ports, "commit_count_total")
            targets = {f"127.0.0.1:{p}" for p in metrics_ports}

            # Exact: what Prometheus stored at t0 and t1, on every server (each applies
            # every transaction; the session was made before t0 and closes after t1).
            for metric, grew in [("commit_count_total", CREATES + SETS), ("znode_count", CREATES)]:
                before, after = by_instance(prom, metric, t0), by_instance(prom, metric, t1)
                assert set(before) == set(after) == targets, (before, after)
                for t in targets:
                    assert after[t] - before[t] == grew, (metric, t, before, after)

            # PromQL's increase() and rate() over a window holding the whole load: the raw
            # difference is exact; extrapolation to the window's edges adds up to about one
            # scrape interval (1 s) at each end, so the window is 40 s long (within the
            # samples Prometheus has) and 10% bounds the extrapolation: 0 (not counted), 2x
            # (counted twice) or one server's writes only all fail it.
            window = WINDOW_S
            at = max(t1, scraping_since + window + 1)
            assert at - window <= t0, "the window starts before the load and ends after it"
            time.sleep(max(0.0, at + 0.5 - time.time()))
            t1 = at
            increase = by_instance(prom, f"increase(commit_count_total[{window}s])", t1)
            for t in targets:
                assert abs(increase[t] - (CREATES + SETS)) <= 0.1 * (CREATES + SETS), increase
            rate = by_instance(prom, f"rate(commit_count_total[{window}s])", t1)
            for t in targets:
                assert abs(rate[t] * window - (CREATES + SETS)) <= 0.1 * (CREATES + SETS), rate

            # Requests are counted by the server the client talks to: summed over the
            # ensemble, the writes and reads sent (one connection, so one server has them).
            def total_increase(metric):
                return sum(by_instance(prom, f"increase({metric}[{window}s])", t1).values())

            assert abs(total_increase("updatelatency_count") - (CREATES + SETS)) <= 0.1 * (CREATES + SETS)
            assert abs(total_increase("readlatency_count") - READS) <= 0.1 * READS
            assert total_increase("packets_received") >= 0.9 * (CREATES + SETS + READS)
            for t, v in by_instance(prom, f"increase(fsynctime_count[{window}s])", t1).items():
                assert v >= 1, f"{t} fsynced nothing during the load"

            # Roles: exactly one leader, two followers, the leader sees both synced.
            states = by_instance(prom, 'zab_state{state="leading"} == 1')
            assert len(states) == 1, states
            leader = next(iter(states))
            followers = by_instance(prom, 'zab_state{state="following"} == 1')
            assert set(followers) == targets - {leader}, followers
            # Each follower received every transaction in a proposal; the leader proposed them.
            metric = "learner_proposal_received_count_total"
            before, after = by_instance(prom, metric, t0), by_instance(prom, metric, t1)
            assert {t: after[t] - before[t] for t in targets} == {
                t: (0 if t == leader else CREATES + SETS) for t in targets}, (before, after)
            proposed = by_instance(prom, "proposal_count_total", t1)
            assert proposed[leader] - by_instance(prom, "proposal_count_total", t0)[leader] == CREATES + SETS
            assert by_instance(prom, "synced_followers") == {leader: 2.0}
            assert by_instance(prom, "learners") == {leader: 2.0}
            assert set(by_instance(prom, "leader_uptime > 0")) == {leader}
            assert by_instance(prom, "quorum_size") == {t: 3.0 for t in targets}
            assert all(v >= 1 for v in by_instance(prom, "election_time_count").values())
            assert len(by_instance(prom, "election_time_count")) == 3
            serving = by_instance(prom, "zab_serving")
            assert serving == {t: 1.0 for t in targets}, serving
            print(f"load: {CREATES} creates + {SETS} sets + {READS} reads in {load_s:.2f} s; "
                  f"increase over {window}s: {sorted(increase.values())}")
    except BaseException:
        print(ens.log_tails())
        raise
    finally:
        if zk is not None:
            stop_zk_client(zk)
        ens.stop()


def metrics_lines(i, ports):
    return (
        f"metricsProvider.className={PROVIDER}\n"
        "metricsProvider.httpHost=127.0.0.1\n"
        f"metricsProvider.httpPort={ports[i]}\n"
    )


def test_snap_transfer_is_counted_and_logged_with_its_size(tmp_path):
    """A small snapCount makes the leader snapshot and drop its old log; a wiped follower
    then needs a SNAP, here of more than 4 MiB (60 znodes of 100 KB), the size from which
    transfers are logged with their progress."""
    ports = [free_port() for _ in range(3)]
    ens = Ensemble(tmp_path, extra="snapCount=20\n", server_extra=lambda i: metrics_lines(i, ports))
    zk = None
    try:
        zk = KazooClient(hosts=ens.hosts(), timeout=10)
        zk.start(timeout=15)
        zk.ensure_path("/big")
        for i in range(60):
            zk.create(f"/big/n{i}", b"z" * 100_000)
        leader = ens.leader()
        assert leader is not None
        eventually(lambda: assert_at_least(scrape(ports[leader]), "snapshottime_count", 1), 30,
                   "the leader to write a snapshot")
        snaps_before = scrape(ports[leader])["snap_count_total"]
        follower = next(i for i in ens.running() if i != leader)
        ens.kill9(follower)
        shutil.rmtree(ens.data_dir(follower))
        # The client may have been on the killed follower: retry through the reconnect
        # (ensure_path, so a create that landed before the loss is not an error).
        zk.retry(zk.ensure_path, "/big/after-wipe")
        ens.start(follower)
        ens.wait_serving()
        assert ens.leader() == leader
        after = scrape(ports[leader])
        assert after["snap_count_total"] == snaps_before + 1, after
        followed = scrape(ports[follower])
        assert followed["zab_syncs_received_total"] == 1, followed
        assert followed["znode_count"] == after["znode_count"], (followed, after)
        def logged():
            # The leader's writer thread logs after its last write returned; on a busy
            # machine the follower may be serving before that thread runs again.
            logs = [(tmp_path / f"server{i + 1}" / "coordinator.log").read_text() for i in range(3)]
            sent = re.findall(rf"sent (\d+) bytes to server {follower + 1} in", logs[leader])
            assert sent and int(sent[-1]) >= 4 << 20, logs[leader][-3000:]
            assert "snapshot received; installing it" in logs[follower], logs[follower][-3000:]

        eventually(logged, 10, "the SNAP logged on both sides")
    except BaseException:
        print(ens.log_tails())
        raise
    finally:
        if zk is not None:
            stop_zk_client(zk)
        ens.stop()


def assert_at_least(samples, key, least):
    assert samples.get(key, 0) >= least, samples.get(key)

def test_documented_alert_rules_pass_promtool(tmp_path):
    """The alert rules docs/operations-coordinator.md gives are valid Prometheus rules."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/setup (Debian package prometheus)"
    text = (DOCS / "operations-coordinator.md").read_text()
    rules = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if b.startswith("groups:")]
    assert len(rules) == 1, "one block of alert rules"
    path = tmp_path / "coordinator-rules.yml"
    path.write_text(rules[0])
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 9 rules found" in checked.stdout, checked.stdout
