"""Proves the broker's Prometheus endpoint (`broker serve --metrics-listen`) with a real
Prometheus server (tests/prometheus.py, Debian's package) scraping it every second while
confluent-kafka produces a paced load of known rate and size: the totals Prometheus stored
equal what was sent, the rate it computes mid-load matches the pace, the bytes in and out
match the records' size, the request latency histograms give a quantile, and a consumer
group's lag is the records produced after its commit. In cluster mode (3 brokers via
tests/cluster.py, our coordinator) the under-replicated partitions go from 0 to above 0
when a broker stops, with ISR shrinks counted and exactly one controller. The alert rules
of docs/operations.md pass `promtool check rules`.

Every broker and Prometheus runs on free loopback ports in a temp dir and is stopped at
teardown, also on failure."""

import json
import re
import subprocess
import shutil
import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cluster import BrokerCluster, eventually, start_coordination
from conftest import ROOT, Broker
from prometheus import Prometheus

pytestmark = pytest.mark.timeout(240)

RATE_PER_S = 400
LOAD_S = 20
VALUE_BYTES = 200


def create_topic(bootstrap, name, partitions, rf=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, rf)])[name].result(timeout=30)


def paced_load(bootstrap, topic, rate_per_s, seconds, value_bytes):
    """Produces `rate_per_s` records a second for `seconds` (acks=all, no compression), each
    value `value_bytes` long; returns (records, start time, end time) once all are acked."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "compression.type": "none", "enable.idempotence": False})
    delivered = []
    failed = []

    def on_delivery(err, _msg):
        (failed if err else delivered).append(err)

    value = b"v" * value_bytes
    total = rate_per_s * seconds
    started = time.time()
    for i in range(total):
        # Pace: record i goes at started + i / rate.
        ahead = started + i / rate_per_s - time.time()
        if ahead > 0:
            time.sleep(ahead)
        producer.produce(topic, value=value, partition=i % 2, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    ended = time.time()
    assert not failed, failed[:3]
    assert len(delivered) == total
    return total, started, ended


def at(prom, expr, when):
    """The single value of `expr` evaluated at time `when`."""
    data = prom.api("query", query=expr, time=f"{when:.3f}")
    assert len(data["result"]) == 1, f"{expr} at {when}: {data['result']}"
    return float(data["result"][0]["value"][1])


def stored_after(prom, expr, want, timeout=20):
    """Waits until Prometheus' latest value of `expr` satisfies `want`; returns it."""
    def check():
        value = prom.scalar(expr)
        assert want(value), f"{expr} = {value}"
        return value
    return eventually(check, timeout, expr, interval=0.5)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data", extra=["--metrics-listen", "127.0.0.1:0"]).start()
    yield b
    b.stop()


def test_prometheus_rates_match_a_paced_load(broker, tmp_path):
    assert broker.metrics_port, "the broker printed its metrics address"
    create_topic(broker.bootstrap, "load", 2)
    with Prometheus(tmp_path / "prom", {"broker": [f"127.0.0.1:{broker.metrics_port}"]}) as prom:
        prom.wait_scraped()
        records, started, ended = paced_load(broker.bootstrap, "load", RATE_PER_S, LOAD_S,
                                             VALUE_BYTES)
        # Every record in the stored counters (records are only counted once appended).
        stored_after(prom, 'sum(streambox_produce_records_total)', lambda v: v == records)
        stored_after(prom, 'sum(streambox_partition_records_in_total{topic="load"})',
                     lambda v: v == records)
        # The rate Prometheus computes over the middle of the load is the pace.
        middle = (started + ended) / 2
        rate = at(prom, 'sum(rate(streambox_produce_records_total[10s]))', middle)
        assert RATE_PER_S * 0.8 <= rate <= RATE_PER_S * 1.2, rate
        byte_rate = at(prom, 'sum(rate(streambox_produce_bytes_total[10s]))', middle)
        # Batches carry each value plus a few bytes of record framing and a batch header.
        assert RATE_PER_S * VALUE_BYTES * 0.8 <= byte_rate <= RATE_PER_S * VALUE_BYTES * 1.5, \
            byte_rate
        produced_bytes = prom.scalar('sum(streambox_produce_bytes_total)')
        assert records * VALUE_BYTES < produced_bytes < records * (VALUE_BYTES + 64)
        request_rate = at(prom, 'sum(rate(streambox_requests_total{api="Produce"}[10s]))',
                          middle)
        assert 0 < request_rate <= RATE_PER_S * 1.2, request_rate
        p99 = at(prom, 'histogram_quantile(0.99, sum by (le) (rate('
                 'streambox_request_latency_seconds_bucket{api="Produce",stage="total"}[10s])))',
                 middle)
        assert 0 < p99 < 10, p99
        # flush_policy = always (the dev profile): acknowledged produces waited for fsyncs.
        assert at(prom, 'sum(rate(streambox_log_fdatasync_seconds_count[10s]))', middle) > 0
        # The log holds what was produced.
        stored_after(prom, 'sum(streambox_log_end_offset{topic="load"})',
                     lambda v: v == records)
        stored_after(prom, 'sum(streambox_log_size_bytes{topic="load"})',
                     lambda v: v == produced_bytes)
        # The dev profile writes zeros into the blocks it preallocates (preallocate_zeroes):
        # they are counted, and the active segments' files run past the data they hold.
        stored_after(prom, 'sum(streambox_log_zero_fill_bytes_total)', lambda v: v > 0)
        files = sorted(broker.data_dir.rglob("load-*/*.log"))
        assert len(files) == 2, files
        assert sum(f.stat().st_size for f in files) > produced_bytes

        # A consumer reads everything and commits; records produced after are its lag.
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "readers",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        try:
            consumer.subscribe(["load"])
            seen = 0
            deadline = time.time() + 60
            while seen < records and time.time() < deadline:
                for msg in consumer.consume(num_messages=1000, timeout=1):
                    assert msg.error() is None, msg.error()
                    seen += 1
            assert seen == records
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        stored_after(prom, 'sum(streambox_fetch_bytes_total{reader="consumer"})',
                     lambda v: v >= produced_bytes)
        stored_after(prom, 'streambox_consumer_group_topic_lag{group="readers",topic="load"}',
                     lambda v: v == 0)
        more, _, _ = paced_load(broker.bootstrap, "load", 100, 1, VALUE_BYTES)
        stored_after(prom, 'streambox_consumer_group_topic_lag{group="readers",topic="load"}',
                     lambda v: v == more)

        # Every query of the Grafana dashboard is valid PromQL for this Prometheus, and the
        # single-node ones give data.
        dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        assert len(exprs) > 20
        with_data = 0
        for expr in exprs:
            concrete = (expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
                        .replace("$job", ".*"))
            if prom.api("query", query=concrete)["result"]:
                with_data += 1
        assert with_data >= len(exprs) - 12, f"{with_data} of {len(exprs)} panels have data"


@pytest.fixture
def coord(tmp_path):
    service = start_coordination("ours", tmp_path / "coord")
    yield service
    service.stop()


def test_cluster_under_replicated_partitions_rise_when_a_broker_stops(coord, tmp_path):
    cluster = BrokerCluster(tmp_path / "cluster", coord,
                            broker_args=["--metrics-listen", "127.0.0.1:0",
                                         "--replica-lag-time-max-ms", "3000"])
    try:
        targets = [f"127.0.0.1:{cluster[i].metrics_port}" for i in (1, 2, 3)]
        assert all(cluster[i].metrics_port for i in (1, 2, 3))
        create_topic(cluster.bootstrap(), "replicated", 3, rf=3)
        with Prometheus(tmp_path / "prom", {"brokers": targets}) as prom:
            prom.wait_scraped()
            stored_after(prom, "sum(streambox_leader_partitions)", lambda v: v >= 3)
            stored_after(prom, "sum(streambox_under_replicated_partitions)", lambda v: v == 0)
            assert prom.scalar("sum(streambox_controller_active)") == 1
            assert prom.scalar("sum(streambox_offline_partitions)") == 0
            shrinks_before = prom.scalar("sum(streambox_isr_shrinks_total)")
            # Stop a broker that leads nothing after a controlled shutdown: the leaders left
            # see their ISR lose it.
            controller = int(prom.scalar("max(streambox_controller_id)"))
            stopped = next(i for i in (1, 2, 3) if i != controller)
            cluster.terminate(stopped)
            stored_after(prom, "sum(streambox_under_replicated_partitions)", lambda v: v > 0,
                         timeout=40)
            stored_after(prom, "sum(streambox_isr_shrinks_total)",
                         lambda v: v > shrinks_before, timeout=40)
            # Prometheus sees the stopped broker's target down (what `up == 0` alerts on).
            stored_after(prom, "count(up == 0)", lambda v: v == 1, timeout=20)
    finally:
        cluster.stop()
        print(cluster.log_tails())


def test_alert_rules_in_operations_doc_pass_promtool(tmp_path):
    text = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```yaml\n(groups:.*?)```", text, re.S)
    assert blocks, "docs/operations.md has alert rules in a ```yaml block starting `groups:`"
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/setup (Debian package prometheus)"
    for n, block in enumerate(blocks):
        rules = tmp_path / f"rules{n}.yml"
        rules.write_text(block)
        checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                                 text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "SUCCESS" in checked.stdout, checked.stdout
    # Every metric the rules use is one the broker exports.
    names = set(re.findall(r"\bstreambox_[a-z_]+", "".join(blocks)))
    exported = (ROOT / "broker" / "src" / "server" / "metrics_http.rs").read_text()
    for name in names:
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert f'"{base}"' in exported, f"{name} is not exported"
