//! The Prometheus endpoint (`broker serve --metrics-listen host:port`): a small HTTP server
//! (tiny_http) on its own threads answers `GET /metrics` in the OpenMetrics text format that
//! Prometheus scrapes, encoded by the `prometheus-client` crate from what the shards keep
//! ([`ShardMetrics`]: live atomics, and the once-a-second [`ShardSample`]). A scrape reads the
//! shards' state; it never runs on or waits for a shard.
//!
//! Metric names and labels are listed in docs/operations.md. Per-partition series (topic and
//! partition labels) are left out when `[metrics] per_partition = false` (or
//! `--metrics-per-partition false`); the per-shard and per-topic totals stay.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::histogram::HistogramSnapshot;

use super::metrics::{PartitionTraffic, ShardMetrics, Stage};

/// Largest latency bucket shown, microseconds (about 67 s); slower lands in `+Inf`.
const LATENCY_MAX_BOUND_US: u64 = 1 << 26;
/// Largest size bucket shown for produce appends, bytes (1 GiB) and records (16 M).
const APPEND_BYTES_MAX_BOUND: u64 = 1 << 30;
const APPEND_RECORDS_MAX_BOUND: u64 = 1 << 24;

/// Everything a scrape reads.
#[derive(Debug)]
pub struct MetricsSources {
    pub shards: Vec<Arc<ShardMetrics>>,
    /// Open client connections of the process.
    pub connections: Arc<AtomicU32>,
    pub connections_max: u32,
    /// Whether series with topic and partition labels are exported.
    pub per_partition: bool,
    pub node_id: i32,
}

/// The running endpoint; stopped when dropped.
pub struct MetricsServer {
    pub addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `listen` and serves scrapes on a thread of its own.
    pub fn start(listen: SocketAddr, sources: MetricsSources) -> Result<MetricsServer, String> {
        let server = tiny_http::Server::http(listen)
            .map_err(|err| format!("metrics endpoint on {listen}: {err}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("metrics endpoint on {listen}: not an IP address"))?;
        let server = Arc::new(server);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(BrokerCollector { sources }));
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || serve(&serving, &registry))
            .map_err(|err| format!("metrics endpoint thread: {err}"))?;
        Ok(MetricsServer {
            addr,
            server,
            thread: Some(thread),
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(server: &tiny_http::Server, registry: &Registry) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let response = if path != "/metrics" {
            tiny_http::Response::from_string("not found: the metrics are at /metrics\n")
                .with_status_code(404)
        } else if *request.method() != tiny_http::Method::Get
            && *request.method() != tiny_http::Method::Head
        {
            tiny_http::Response::from_string("use GET\n").with_status_code(405)
        } else {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => tiny_http::Response::from_string(body).with_header(
                    "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"
                        .parse::<tiny_http::Header>()
                        .expect("a valid header"),
                ),
                Err(err) => {
                    tracing::error!("encoding the metrics: {err}");
                    tiny_http::Response::from_string("encoding failed\n").with_status_code(500)
                }
            }
        };
        if let Err(err) = request.respond(response) {
            tracing::debug!("metrics: answering a scrape: {err}");
        }
    }
}

#[derive(Debug)]
struct BrokerCollector {
    sources: MetricsSources,
}

type Labels = Vec<(&'static str, String)>;

/// A histogram already read, encoded through prometheus-client.
struct SnapshotMetric<'a>(&'a HistogramSnapshot);

impl EncodeMetric for SnapshotMetric<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum,
            self.0.count,
            &self.0.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One metric family: its descriptor once, then a sample per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    family(
        encoder,
        name,
        help,
        MetricType::Counter,
        samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v))),
    )
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, i64)>,
) -> Result<(), std::fmt::Error> {
    family(
        encoder,
        name,
        help,
        MetricType::Gauge,
        samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v))),
    )
}

fn histograms<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, &'a HistogramSnapshot)>,
) -> Result<(), std::fmt::Error> {
    family(
        encoder,
        name,
        help,
        MetricType::Histogram,
        samples.into_iter().map(|(l, v)| (l, SnapshotMetric(v))),
    )
}

fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    ShardMetrics::get(counter)
}

fn api_name(key: i16) -> String {
    kafka_protocol::messages::ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| key.to_string())
}

fn shard_label(shard: usize) -> Labels {
    vec![("shard", shard.to_string())]
}

fn partition_labels(topic: &str, partition: i32) -> Labels {
    vec![
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ]
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shards = &self.sources.shards;
        let enc = &mut encoder;
        let per_shard = |f: fn(&ShardMetrics) -> u64| -> Vec<(Labels, u64)> {
            shards
                .iter()
                .enumerate()
                .map(|(i, m)| (shard_label(i), f(m)))
                .collect()
        };

        // Network and requests.
        counters(
            enc,
            "streambox_network_received_bytes",
            "Bytes read from client and broker connections.",
            per_shard(|m| get(&m.bytes_received)),
        )?;
        counters(
            enc,
            "streambox_network_sent_bytes",
            "Bytes written to client and broker connections.",
            per_shard(|m| get(&m.bytes_sent)),
        )?;
        let mut file_bytes = Vec::new();
        for (i, m) in shards.iter().enumerate() {
            let mut labels = shard_label(i);
            labels.push(("transfer", "splice".into()));
            file_bytes.push((labels, get(&m.bytes_spliced)));
            let mut labels = shard_label(i);
            labels.push(("transfer", "copy".into()));
            file_bytes.push((labels, get(&m.bytes_copied)));
        }
        counters(enc, "streambox_fetch_file_sent_bytes", "Segment file bytes sent in fetch answers, by splice (file to socket in the kernel) or copied through user space (TLS, --no-splice).", file_bytes)?;
        let mut requests = Vec::new();
        let mut closes = Vec::new();
        let mut errors = Vec::new();
        for (i, m) in shards.iter().enumerate() {
            for (key, version, n) in m.requests_by_api() {
                let mut labels = shard_label(i);
                labels.push(("api", api_name(key)));
                labels.push(("version", version.to_string()));
                requests.push((labels, n));
            }
            for (key, n) in m.closes_by_api() {
                let mut labels = shard_label(i);
                labels.push(("api", api_name(key)));
                closes.push((labels, n));
            }
            for ((key, code), n) in m.errors() {
                let mut labels = shard_label(i);
                labels.push(("api", api_name(key)));
                labels.push(("error_code", code.to_string()));
                errors.push((labels, n));
            }
        }
        counters(
            enc,
            "streambox_requests",
            "Requests answered, by API and version.",
            requests,
        )?;
        counters(
            enc,
            "streambox_request_closes",
            "Requests that closed their connection (malformed, unsupported, refused), by API.",
            closes,
        )?;
        counters(
            enc,
            "streambox_request_errors",
            "Error codes answered per partition (Produce, Fetch), by API and Kafka error code.",
            errors,
        )?;
        let mut latency: BTreeMap<(i16, usize), HistogramSnapshot> = BTreeMap::new();
        for m in shards {
            for key in 0..super::metrics::API_KEYS as i16 {
                let Some(stages) = m.latency(key) else {
                    continue;
                };
                for stage in Stage::ALL {
                    let snapshot = stages[stage as usize].snapshot(1e-6, LATENCY_MAX_BOUND_US);
                    latency
                        .entry((key, stage as usize))
                        .and_modify(|s| s.merge(&snapshot))
                        .or_insert(snapshot);
                }
            }
        }
        histograms(
            enc,
            "streambox_request_latency_seconds",
            "Request time by API and stage: queue (read, waiting for a handler), local (in the handler), remote (waiting on others: the fetch long-poll), response_queue (behind earlier answers), send (writing the answer), total.",
            latency.iter().map(|((key, stage), snapshot)| {
                (
                    vec![("api", api_name(*key)), ("stage", Stage::ALL[*stage].name().to_string())],
                    snapshot,
                )
            }),
        )?;

        // Connections and memory.
        gauges(
            enc,
            "streambox_connections",
            "Open client connections of the process.",
            [(
                Vec::new(),
                i64::from(self.sources.connections.load(Ordering::Relaxed)),
            )],
        )?;
        gauges(
            enc,
            "streambox_connections_max",
            "The connection limit (network.max_connections).",
            [(Vec::new(), i64::from(self.sources.connections_max))],
        )?;
        gauges(
            enc,
            "streambox_shard_connections",
            "Connections a shard serves now.",
            per_shard(|m| get(&m.connections_open))
                .into_iter()
                .map(|(l, v)| (l, v as i64)),
        )?;
        counters(
            enc,
            "streambox_connections_accepted",
            "Connections accepted (those refused past the limit included).",
            per_shard(|m| get(&m.connections_accepted)),
        )?;
        counters(
            enc,
            "streambox_connections_moved_in",
            "Connections handed to this shard by another, because this one owns the partitions they use.",
            per_shard(|m| get(&m.connections_moved_in)),
        )?;
        counters(
            enc,
            "streambox_mesh_requests_in",
            "Requests served for another shard over the mesh.",
            per_shard(|m| get(&m.requests_forwarded_in)),
        )?;
        gauges(
            enc,
            "streambox_memory_used_bytes",
            "Bytes charged to the shard's memory budget now.",
            per_shard(|m| get(&m.memory_used_bytes))
                .into_iter()
                .map(|(l, v)| (l, v as i64)),
        )?;
        gauges(
            enc,
            "streambox_memory_budget_bytes",
            "The shard's memory budget (memory_budget_bytes of its core).",
            per_shard(|m| get(&m.memory_budget_bytes))
                .into_iter()
                .map(|(l, v)| (l, v as i64)),
        )?;
        gauges(
            enc,
            "streambox_memory_peak_bytes",
            "The most ever charged to the shard's memory budget.",
            per_shard(|m| get(&m.memory_peak_bytes))
                .into_iter()
                .map(|(l, v)| (l, v as i64)),
        )?;
        counters(
            enc,
            "streambox_memory_waits",
            "Reads that waited for the memory budget.",
            per_shard(|m| get(&m.memory_waits)),
        )?;

        // Produce and fetch traffic.
        counters(
            enc,
            "streambox_produce_records",
            "Records appended by Produce requests (records in).",
            per_shard(|m| get(&m.produce_records)),
        )?;
        counters(
            enc,
            "streambox_produce_bytes",
            "Record batch bytes appended by Produce requests (bytes in).",
            per_shard(|m| get(&m.produce_bytes)),
        )?;
        let mut fetch = Vec::new();
        for (i, m) in shards.iter().enumerate() {
            let mut labels = shard_label(i);
            labels.push(("reader", "consumer".into()));
            fetch.push((labels, get(&m.fetch_bytes)));
            let mut labels = shard_label(i);
            labels.push(("reader", "follower".into()));
            fetch.push((labels, get(&m.follower_fetch_bytes)));
        }
        counters(enc, "streambox_fetch_bytes", "Record bytes answered to Fetch requests (bytes out), consumers and follower brokers apart.", fetch)?;
        let merged = |f: fn(&ShardMetrics) -> &crate::histogram::AtomicHistogram, max: u64| {
            let mut all: Option<HistogramSnapshot> = None;
            for m in shards {
                let snapshot = f(m).snapshot(1.0, max);
                match &mut all {
                    Some(total) => total.merge(&snapshot),
                    None => all = Some(snapshot),
                }
            }
            all
        };
        let append_bytes = merged(|m| &m.produce_append_bytes, APPEND_BYTES_MAX_BOUND);
        let append_records = merged(|m| &m.produce_append_records, APPEND_RECORDS_MAX_BOUND);
        histograms(
            enc,
            "streambox_produce_append_bytes",
            "Size of each partition's records in a Produce request (one or more batches), bytes.",
            append_bytes.iter().map(|s| (Vec::new(), s)),
        )?;
        histograms(
            enc,
            "streambox_produce_append_records",
            "Records of each partition's records in a Produce request.",
            append_records.iter().map(|s| (Vec::new(), s)),
        )?;

        // Batch cache and where log reads come from.
        gauges(
            enc,
            "streambox_batch_cache_bytes",
            "Bytes the shard's batch cache holds (allocation sizes of the write rounds kept).",
            per_shard(|m| get(&m.batch_cache.held_bytes))
                .into_iter()
                .map(|(l, v)| (l, v as i64)),
        )?;
        let mut read_from = Vec::new();
        for (i, m) in shards.iter().enumerate() {
            let mut labels = shard_label(i);
            labels.push(("source", "memory".into()));
            read_from.push((labels, get(&m.batch_cache.memory_read_bytes)));
            let mut labels = shard_label(i);
            labels.push(("source", "file".into()));
            read_from.push((labels, get(&m.batch_cache.file_read_bytes)));
        }
        counters(
            enc,
            "streambox_log_zero_fill_bytes",
            "Zeros written ahead of the appends of active segments (preallocate_zeroes).",
            per_shard(|m| get(&m.disk.zero_fill_bytes)),
        )?;
        counters(enc, "streambox_log_read_bytes", "Fetch data read from partition logs: from memory (batch cache and the unwritten tail) or as segment file ranges.", read_from)?;

        // Disk.
        let fsync: Vec<_> = shards
            .iter()
            .map(|m| m.disk.fdatasync_us.snapshot(1e-6, LATENCY_MAX_BOUND_US))
            .collect();
        let direct: Vec<_> = shards
            .iter()
            .map(|m| m.disk.direct_write_us.snapshot(1e-6, LATENCY_MAX_BOUND_US))
            .collect();
        histograms(
            enc,
            "streambox_log_fdatasync_seconds",
            "fdatasync of segment files on the append path (group commits, rolls).",
            fsync.iter().enumerate().map(|(i, s)| (shard_label(i), s)),
        )?;
        histograms(
            enc,
            "streambox_log_direct_write_seconds",
            "O_DIRECT write rounds of active segments (one group commit's bytes each).",
            direct.iter().enumerate().map(|(i, s)| (shard_label(i), s)),
        )?;

        // What the shards sampled.
        let samples: Vec<_> = shards.iter().map(|m| m.sample().clone()).collect();
        let io = |f: fn(&super::metrics::IoSample) -> u64| -> Vec<(Labels, u64)> {
            samples
                .iter()
                .enumerate()
                .map(|(i, s)| (shard_label(i), f(&s.io)))
                .collect()
        };
        counters(
            enc,
            "streambox_io_file_reads",
            "File reads the shard submitted to its io_uring rings (glommio's count).",
            io(|s| s.file_reads),
        )?;
        counters(
            enc,
            "streambox_io_file_read_bytes",
            "Bytes of those reads.",
            io(|s| s.file_read_bytes),
        )?;
        counters(
            enc,
            "streambox_io_file_writes",
            "File writes the shard submitted to its io_uring rings (glommio's count).",
            io(|s| s.file_writes),
        )?;
        counters(
            enc,
            "streambox_io_file_written_bytes",
            "Bytes of those writes.",
            io(|s| s.file_written_bytes),
        )?;
        counters(
            enc,
            "streambox_executor_tasks",
            "Tasks the shard's executor ran.",
            io(|s| s.tasks_executed),
        )?;
        family(
            enc,
            "streambox_executor_busy_seconds",
            "Time the shard's executor ran tasks and polled I/O.",
            MetricType::Counter,
            samples.iter().enumerate().map(|(i, s)| {
                (
                    shard_label(i),
                    ConstCounter::new(s.io.runtime_us as f64 * 1e-6),
                )
            }),
        )?;

        let mut shard_size = Vec::new();
        let mut shard_segments = Vec::new();
        let mut shard_partitions = Vec::new();
        // The newest end offset each hosted partition may be read to (for the lag).
        let mut readable_end: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for (i, s) in samples.iter().enumerate() {
            shard_size.push((
                shard_label(i),
                s.partitions.iter().map(|p| p.size_bytes as i64).sum(),
            ));
            shard_segments.push((
                shard_label(i),
                s.partitions.iter().map(|p| p.segments as i64).sum(),
            ));
            shard_partitions.push((shard_label(i), s.partitions.len() as i64));
            for p in &s.partitions {
                if let Some(hw) = p.high_watermark {
                    readable_end.insert((p.topic.as_str(), p.partition), hw);
                }
            }
        }
        gauges(
            enc,
            "streambox_shard_log_size_bytes",
            "Bytes of the partition logs a shard owns.",
            shard_size,
        )?;
        gauges(
            enc,
            "streambox_shard_log_segments",
            "Segments of the partition logs a shard owns.",
            shard_segments,
        )?;
        gauges(
            enc,
            "streambox_shard_partitions",
            "Partition logs a shard owns (replicas included).",
            shard_partitions,
        )?;
        if self.sources.per_partition {
            let all = || samples.iter().flat_map(|s| s.partitions.iter());
            gauges(
                enc,
                "streambox_log_size_bytes",
                "Bytes of a partition's segments.",
                all().map(|p| (partition_labels(&p.topic, p.partition), p.size_bytes as i64)),
            )?;
            gauges(
                enc,
                "streambox_log_segments",
                "Segments of a partition (the active one included).",
                all().map(|p| (partition_labels(&p.topic, p.partition), p.segments as i64)),
            )?;
            gauges(
                enc,
                "streambox_log_start_offset",
                "A partition's log start offset.",
                all().map(|p| (partition_labels(&p.topic, p.partition), p.log_start_offset)),
            )?;
            gauges(
                enc,
                "streambox_log_end_offset",
                "A partition's log end offset.",
                all().map(|p| (partition_labels(&p.topic, p.partition), p.log_end_offset)),
            )?;
            gauges(
                enc,
                "streambox_high_watermark",
                "The offset consumers may read up to (on the leader in a cluster).",
                all().filter_map(|p| {
                    p.high_watermark
                        .map(|hw| (partition_labels(&p.topic, p.partition), hw))
                }),
            )?;
            let mut traffic: BTreeMap<(&str, i32), PartitionTraffic> = BTreeMap::new();
            for s in &samples {
                for (topic, partition, t) in &s.traffic {
                    let sum = traffic.entry((topic.as_str(), *partition)).or_default();
                    sum.records_in += t.records_in;
                    sum.bytes_in += t.bytes_in;
                    sum.bytes_out += t.bytes_out;
                }
            }
            counters(
                enc,
                "streambox_partition_records_in",
                "Records appended to a partition by Produce requests.",
                traffic
                    .iter()
                    .map(|((t, p), v)| (partition_labels(t, *p), v.records_in)),
            )?;
            counters(
                enc,
                "streambox_partition_bytes_in",
                "Record batch bytes appended to a partition by Produce requests.",
                traffic
                    .iter()
                    .map(|((t, p), v)| (partition_labels(t, *p), v.bytes_in)),
            )?;
            counters(
                enc,
                "streambox_partition_bytes_out",
                "Record bytes of a partition answered to consumers' Fetch requests.",
                traffic
                    .iter()
                    .map(|((t, p), v)| (partition_labels(t, *p), v.bytes_out)),
            )?;
        }

        // Consumer group lag: the readable end of a hosted partition minus the offset the
        // group committed for it.
        let mut lag = Vec::new();
        let mut topic_lag: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for c in samples.iter().flat_map(|s| s.committed.iter()) {
            let Some(&end) = readable_end.get(&(c.topic.as_str(), c.partition)) else {
                continue;
            };
            let behind = (end - c.offset).max(0);
            *topic_lag
                .entry((c.group.as_str(), c.topic.as_str()))
                .or_default() += behind;
            if self.sources.per_partition {
                let mut labels = partition_labels(&c.topic, c.partition);
                labels.insert(0, ("group", c.group.clone()));
                lag.push((labels, behind));
            }
        }
        gauges(enc, "streambox_consumer_group_lag", "Records a group's committed offset is behind a partition's readable end (partitions hosted here).", lag)?;
        gauges(
            enc,
            "streambox_consumer_group_topic_lag",
            "A group's lag summed over the topic's partitions hosted here.",
            topic_lag
                .iter()
                .map(|((g, t), v)| (vec![("group", g.to_string()), ("topic", t.to_string())], *v)),
        )?;

        // Cluster mode.
        let isr_shrinks: u64 = shards.iter().map(|m| get(&m.isr_shrinks)).sum();
        let isr_expands: u64 = shards.iter().map(|m| get(&m.isr_expands)).sum();
        if let Some(cluster) = samples.iter().find_map(|s| s.cluster) {
            let one = |v: u64| [(Vec::new(), v as i64)];
            gauges(
                enc,
                "streambox_under_replicated_partitions",
                "Partitions this broker leads whose ISR is smaller than their replica set.",
                one(cluster.under_replicated),
            )?;
            gauges(
                enc,
                "streambox_under_min_isr_partitions",
                "Partitions this broker leads whose ISR is below min.insync.replicas.",
                one(cluster.under_min_isr),
            )?;
            gauges(
                enc,
                "streambox_leader_partitions",
                "Partitions this broker leads.",
                one(cluster.leaders),
            )?;
            gauges(
                enc,
                "streambox_offline_partitions",
                "On the controller: partitions without a leader (0 on other brokers).",
                one(cluster.offline),
            )?;
            gauges(
                enc,
                "streambox_controller_active",
                "1 on the broker that is the controller, else 0.",
                one(u64::from(cluster.is_controller)),
            )?;
            gauges(
                enc,
                "streambox_controller_id",
                "The controller's broker id as this broker sees it (-1: none).",
                [(Vec::new(), i64::from(cluster.controller_id))],
            )?;
            gauges(
                enc,
                "streambox_cluster_brokers",
                "Brokers registered in the cluster as this broker sees it.",
                one(cluster.brokers),
            )?;
            counters(
                enc,
                "streambox_isr_shrinks",
                "ISR shrinks of partitions this broker leads.",
                [(Vec::new(), isr_shrinks)],
            )?;
            counters(
                enc,
                "streambox_isr_expands",
                "ISR expansions of partitions this broker leads.",
                [(Vec::new(), isr_expands)],
            )?;
        }
        gauges(
            enc,
            "streambox_broker_info",
            "1, labelled with this broker's id.",
            [(vec![("node_id", self.sources.node_id.to_string())], 1)],
        )?;
        Ok(())
    }
}
