//! The Prometheus endpoint (zoo.cfg `metricsProvider.className` naming ZooKeeper's
//! `PrometheusMetricsProvider`): `GET /metrics` on `metricsProvider.httpHost:httpPort`.
//!
//! Nothing is counted for Prometheus on the request path beyond what the server keeps
//! anyway: the processor's counters and latency histograms ([`Histogram`], plain atomics,
//! no lock), ZAB's [`crate::zab::NodeStats`] and the ensemble's role history. A scrape
//! gathers them all at once ([`MetricsSource`], a `prometheus-client` collector, holding the
//! processor lock only to copy numbers) and `prometheus-client` writes the text format.
//!
//! Names are ZooKeeper's where it has the metric (`znode_count`, `packets_received`,
//! `readlatency`, `fsynctime`, `quorum_size`, `synced_followers`, `election_time`, ...) with
//! the same units (milliseconds) and, for gauges, the same type. Two differences are forced
//! by the Rust client and documented in docs/coordinator.md: ZooKeeper's summaries are
//! histograms here (same `_sum` and `_count`, `_bucket` instead of `quantile` series, so
//! they aggregate across servers), and its counters end in `_total`. Metrics ZooKeeper does
//! not have are prefixed `zab_` (state, epoch, zxids, log size, ...).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::config::MetricsSettings;
use crate::ensemble::{lock, EnsembleState, SharedProcessor};
use crate::zab::{Role, ZabNode};

/// Upper bounds of the latency buckets, in milliseconds (ZooKeeper reports these times in
/// ms): from sub-millisecond reads to multi-second snapshots and elections.
pub const LATENCY_BUCKETS_MS: [f64; 15] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
    30000.0,
];

/// A latency histogram over [`LATENCY_BUCKETS_MS`]: relaxed atomics, so any thread may
/// observe without a lock and a scrape reads it while it is written (each bucket is exact;
/// a scrape racing an observation may see it in the count and not yet in the sum, which
/// the next scrape corrects).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_us: AtomicU64,
}

/// A histogram's values at one moment, per bucket (the encoder makes them cumulative).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValues {
    /// `(upper bound ms, observations in this bucket)`, the last bound +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_ms: f64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        self.observe_us(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn observe_ms(&self, ms: u64) {
        self.observe_us(ms.saturating_mul(1000));
    }

    fn observe_us(&self, us: u64) {
        let ms = us as f64 / 1000.0;
        let at = LATENCY_BUCKETS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[at].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn values(&self) -> HistogramValues {
        let mut count = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            count += n;
            let bound = LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        // The count is what the buckets hold: +Inf must equal _count.
        HistogramValues {
            count,
            sum_ms: self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0,
            buckets,
        }
    }
}

impl Clone for Histogram {
    fn clone(&self) -> Self {
        let copy = Histogram::default();
        for (to, from) in copy.buckets.iter().zip(&self.buckets) {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        copy.sum_us
            .store(self.sum_us.load(Ordering::Relaxed), Ordering::Relaxed);
        copy
    }
}

impl EncodeMetric for HistogramValues {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum_ms, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// How the ensemble's role changed over time, kept by the ZAB application callback.
#[derive(Debug, Default)]
pub struct RoleHistory {
    /// From entering election (LOOKING) to electing a leader (ZooKeeper's `election_time`).
    pub election_ms: Histogram,
    /// A follower's synchronization with its new leader, from election to UPTODATE
    /// (ZooKeeper's `follower_sync_time`).
    pub follower_sync_ms: Histogram,
    /// Times this server entered election (ZooKeeper's `looking_count`).
    pub looking_count: AtomicU64,
    /// Milliseconds since the Unix epoch at which this server became the serving leader;
    /// 0 while it is not (ZooKeeper's `leader_uptime` is measured from it).
    pub leading_since_unix_ms: AtomicU64,
}

/// What a scrape reads: the processor, and the durability or ZAB side.
pub struct MetricsSource {
    pub processor: SharedProcessor,
    pub backend: MetricsBackend,
    /// When the server started (ZooKeeper's `uptime`).
    pub started: Instant,
    /// zoo.cfg `metricsProvider.exportJvmInfo`: add the process's standard metrics.
    pub export_process_metrics: bool,
}

pub enum MetricsBackend {
    /// A standalone server (an ensemble of one): only its durability timings, as a
    /// standalone ZooKeeper exports no quorum metrics.
    Standalone(Arc<ZabNode>),
    Ensemble {
        node: Arc<ZabNode>,
        state: Arc<EnsembleState>,
        /// Voting members (ZooKeeper's `quorum_size`).
        voters: usize,
    },
}

impl std::fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSource").finish_non_exhaustive()
    }
}

/// Writes one metric family with no labels.
fn put(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl Into<f64>,
) -> Result<(), std::fmt::Error> {
    put(encoder, name, help, &ConstGauge::new(value.into()))
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    put(encoder, name, help, &ConstCounter::new(value))
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The numbers taken under the processor lock.
struct ProcessorValues {
    znode_count: usize,
    ephemerals_count: usize,
    approximate_data_size: u64,
    watch_count: usize,
    global_sessions: usize,
    num_alive_connections: usize,
    outstanding_requests: usize,
    largest_connection_queue_bytes: usize,
    last_zxid: i64,
    stats: crate::request_processor::ServerStats,
}

impl Collector for MetricsSource {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = {
            let p = lock(&self.processor);
            let tree = p.tree();
            ProcessorValues {
                znode_count: tree.node_count(),
                ephemerals_count: tree.ephemeral_count(),
                approximate_data_size: tree.approximate_data_size(),
                watch_count: p.watch_count(),
                global_sessions: p.session_count(),
                num_alive_connections: p.connection_count(),
                outstanding_requests: p.outstanding(),
                largest_connection_queue_bytes: p.largest_connection_queue_bytes(),
                last_zxid: tree.last_zxid(),
                stats: p.stats().clone(),
            }
        };
        let s = &v.stats;
        let e = &mut e;
        // ZooKeeper's ZooKeeperServer gauges.
        gauge(
            e,
            "znode_count",
            "Znodes in the data tree.",
            v.znode_count as f64,
        )?;
        gauge(
            e,
            "ephemerals_count",
            "Ephemeral znodes.",
            v.ephemerals_count as f64,
        )?;
        gauge(
            e,
            "approximate_data_size",
            "Bytes of znode paths and data (ZooKeeper's approximation).",
            v.approximate_data_size as f64,
        )?;
        gauge(
            e,
            "watch_count",
            "Watches set by clients on this server.",
            v.watch_count as f64,
        )?;
        gauge(
            e,
            "global_sessions",
            "Sessions in the ensemble.",
            v.global_sessions as f64,
        )?;
        gauge(
            e,
            "num_alive_connections",
            "Client connections to this server.",
            v.num_alive_connections as f64,
        )?;
        gauge(
            e,
            "outstanding_requests",
            "Writes proposed and not yet committed.",
            v.outstanding_requests as f64,
        )?;
        // ZooKeeper exports these two as gauges (it samples ServerStats); so do we, so its
        // dashboards' rate(packets_received[1m]) works unchanged.
        gauge(
            e,
            "packets_received",
            "Client packets received since start (monotonic).",
            s.packets_received as f64,
        )?;
        gauge(
            e,
            "packets_sent",
            "Client packets sent since start (monotonic).",
            s.packets_sent as f64,
        )?;
        gauge(
            e,
            "min_latency",
            "Smallest request latency since start, ms.",
            s.latency_min_ms as f64,
        )?;
        gauge(
            e,
            "avg_latency",
            "Mean request latency since start, ms.",
            s.latency_avg_ms(),
        )?;
        gauge(
            e,
            "max_latency",
            "Largest request latency since start, ms.",
            s.latency_max_ms as f64,
        )?;
        gauge(
            e,
            "uptime",
            "Milliseconds since the server started.",
            self.started.elapsed().as_millis() as f64,
        )?;
        let (open_fds, max_fds) = crate::four_letter::fd_counts();
        gauge(
            e,
            "open_file_descriptor_count",
            "Open file descriptors.",
            open_fds as f64,
        )?;
        gauge(
            e,
            "max_file_descriptor_count",
            "File descriptor limit.",
            max_fds as f64,
        )?;
        put(
            e,
            "readlatency",
            "Read latency (request received to answer handed out; pings excluded), ms.",
            &s.read_latency.values(),
        )?;
        put(
            e,
            "updatelatency",
            "Write latency (request received to answer after commit) of this server's clients, ms.",
            &s.update_latency.values(),
        )?;
        counter(
            e,
            "commit_count",
            "Transactions committed and applied on this server.",
            s.commits,
        )?;
        // Ours.
        gauge(
            e,
            "zab_last_zxid",
            "Zxid of the last transaction applied to the data tree.",
            v.last_zxid as f64,
        )?;
        gauge(
            e,
            "largest_connection_queue_bytes",
            "Unwritten answer bytes of the connection that has the most.",
            v.largest_connection_queue_bytes as f64,
        )?;
        match &self.backend {
            MetricsBackend::Standalone(node) => {
                let st = node.stats();
                encode_durability(e, &st.fsync_ms, &st.snapshot_ms)?;
            }
            MetricsBackend::Ensemble {
                node,
                state,
                voters,
            } => {
                encode_ensemble(e, node, state, *voters)?;
            }
        }
        if self.export_process_metrics {
            encode_process(e)?;
        }
        Ok(())
    }
}

/// ZooKeeper's `fsynctime` and `snapshottime`, from ZAB's log and snapshots.
fn encode_durability(
    e: &mut DescriptorEncoder,
    fsync: &Histogram,
    snapshot: &Histogram,
) -> Result<(), std::fmt::Error> {
    put(
        e,
        "fsynctime",
        "Write + fdatasync of one batch of the transaction log, ms.",
        &fsync.values(),
    )?;
    put(
        e,
        "snapshottime",
        "Writing a snapshot, ms.",
        &snapshot.values(),
    )
}

fn encode_ensemble(
    e: &mut DescriptorEncoder,
    node: &ZabNode,
    state: &EnsembleState,
    voters: usize,
) -> Result<(), std::fmt::Error> {
    let st = node.stats();
    let status = node.status();
    let roles = &state.roles;
    gauge(
        e,
        "quorum_size",
        "Voting members of the ensemble.",
        voters as f64,
    )?;
    encode_durability(e, &st.fsync_ms, &st.snapshot_ms)?;
    put(
        e,
        "election_time",
        "Leader election, from entering LOOKING to a leader chosen, ms.",
        &roles.election_ms.values(),
    )?;
    put(
        e,
        "follower_sync_time",
        "A follower's synchronization with a new leader, ms.",
        &roles.follower_sync_ms.values(),
    )?;
    counter(
        e,
        "looking_count",
        "Times this server entered leader election.",
        load(&roles.looking_count),
    )?;
    counter(
        e,
        "diff_count",
        "DIFF synchronizations this leader sent.",
        load(&st.diffs_sent),
    )?;
    counter(
        e,
        "snap_count",
        "SNAP synchronizations this leader sent.",
        load(&st.snaps_sent),
    )?;
    counter(
        e,
        "proposal_count",
        "Transactions this server proposed as leader.",
        load(&st.proposals),
    )?;
    counter(
        e,
        "learner_proposal_received_count",
        "Transactions received in proposals from the leader.",
        load(&st.proposals_received),
    )?;
    if status.role == Role::Leading && status.serving {
        // Leader-only, as in ZooKeeper (absent on followers).
        let (learners, synced) = (load(&st.learners), load(&st.synced_followers));
        gauge(
            e,
            "learners",
            "Followers connected to this leader.",
            learners as f64,
        )?;
        gauge(
            e,
            "synced_followers",
            "Followers synchronized with this leader and receiving proposals.",
            synced as f64,
        )?;
        let since = load(&roles.leading_since_unix_ms);
        if since != 0 {
            gauge(
                e,
                "leader_uptime",
                "Milliseconds since this server became the leader.",
                unix_ms().saturating_sub(since) as f64,
            )?;
        }
    }
    // Ours. One descriptor, one sample per role (a family must not repeat its TYPE line).
    {
        let mut family = e.encode_descriptor(
            "zab_state",
            "1 for the ZAB role this server is in (looking, following, leading).",
            None,
            MetricType::Gauge,
        )?;
        for (name, role) in [
            ("looking", Role::Looking),
            ("following", Role::Following),
            ("leading", Role::Leading),
        ] {
            ConstGauge::new(i64::from(status.role == role))
                .encode(family.encode_family(&[("state", name)])?)?;
        }
    }
    gauge(
        e,
        "zab_serving",
        "1 while this server has an established leader and serves clients.",
        i32::from(status.serving),
    )?;
    gauge(
        e,
        "zab_epoch",
        "The epoch being established or served.",
        status.epoch,
    )?;
    gauge(
        e,
        "zab_leader_id",
        "myid of the leader this server follows or is (0 while looking).",
        status.leader.unwrap_or(0) as f64,
    )?;
    gauge(
        e,
        "zab_log_bytes",
        "Bytes of the ZAB transaction log segments on disk.",
        load(&st.log_bytes) as f64,
    )?;
    counter(
        e,
        "zab_log_appends",
        "Transactions appended to the ZAB log.",
        load(&st.log_appends),
    )?;
    counter(
        e,
        "zab_trunc_count",
        "TRUNC synchronizations this leader sent.",
        load(&st.truncs_sent),
    )?;
    counter(
        e,
        "zab_syncs_received",
        "Synchronizations (DIFF, TRUNC or SNAP) received as a follower.",
        load(&st.diff_syncs) + load(&st.trunc_syncs) + load(&st.snap_syncs),
    )?;
    counter(
        e,
        "zab_bad_messages",
        "Peer messages rejected as protocol violations or bad frames.",
        load(&st.bad_messages),
    )?;
    counter(
        e,
        "zab_snapshots_unsendable",
        "SNAPs a leader could not send (snapshot gone, damaged or too large).",
        load(&st.snapshots_unsendable),
    )?;
    Ok(())
}

/// The process metrics every Prometheus client library exports (ZooKeeper's
/// `exportJvmInfo` adds them with the JVM's), from `/proc/self`.
fn encode_process(e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Some(p) = ProcessStat::read() else {
        return Ok(());
    };
    put(
        e,
        "process_cpu_seconds",
        "User and system CPU time, seconds.",
        &ConstCounter::new(p.cpu_seconds),
    )?;
    gauge(
        e,
        "process_resident_memory_bytes",
        "Resident memory, bytes.",
        p.resident_bytes as f64,
    )?;
    gauge(
        e,
        "process_virtual_memory_bytes",
        "Virtual memory, bytes.",
        p.virtual_bytes as f64,
    )?;
    gauge(
        e,
        "process_start_time_seconds",
        "Start time since the Unix epoch, seconds.",
        p.start_time_seconds,
    )?;
    let (open_fds, max_fds) = crate::four_letter::fd_counts();
    gauge(
        e,
        "process_open_fds",
        "Open file descriptors.",
        open_fds as f64,
    )?;
    gauge(
        e,
        "process_max_fds",
        "File descriptor limit.",
        max_fds as f64,
    )?;
    Ok(())
}

struct ProcessStat {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: f64,
}

impl ProcessStat {
    /// Fields of `/proc/self/stat` (proc(5)); None off Linux or on a malformed file.
    fn read() -> Option<ProcessStat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let fields: Vec<&str> = text
            .get(text.rfind(')')? + 2..)?
            .split_whitespace()
            .collect();
        // Numbered from field 3 (state) at index 0.
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        // SAFETY: sysconf only reads system configuration.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        let boot_seconds = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        Some(ProcessStat {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks as f64,
            start_time_seconds: boot_seconds as f64 + field(22)? as f64 / ticks as f64,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page as u64,
        })
    }
}

/// The `/metrics` text of `source` in the Prometheus text format (version 0.0.4).
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("metricsProvider.httpHost/httpPort {host}:{port}: {reason}")]
pub struct EndpointError {
    host: String,
    port: u16,
    reason: String,
}

/// The running `/metrics` endpoint: one thread answering requests one at a time (a scrape
/// takes well under a millisecond; Prometheus scrapes each target once per interval).
/// `tiny_http` reads requests on its own threads, one per open connection, which it does
/// not bound: the endpoint belongs on a monitoring network (docs/coordinator.md).
pub struct MetricsEndpoint {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Binds `settings.http_host:http_port` and serves `source` until [`Self::stop`].
    pub fn start(
        settings: &MetricsSettings,
        source: MetricsSource,
    ) -> Result<MetricsEndpoint, EndpointError> {
        let fail = |reason: String| EndpointError {
            host: settings.http_host.clone(),
            port: settings.http_port,
            reason,
        };
        let addr = (settings.http_host.as_str(), settings.http_port)
            .to_socket_addrs()
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("resolves to no address".into()))?;
        let server = tiny_http::Server::http(addr).map_err(|e| fail(e.to_string()))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| fail("not an IP listener".into()))?;
        let server = Arc::new(server);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(source));
        let thread = {
            let server = server.clone();
            std::thread::Builder::new()
                .name("metrics-http".into())
                .spawn(move || serve(&server, &registry))
                .map_err(|e| fail(e.to_string()))?
        };
        tracing::info!("serving Prometheus metrics on http://{addr}/metrics");
        Ok(MetricsEndpoint {
            addr,
            server,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and joins the thread.
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(server: &tiny_http::Server, registry: &Registry) {
    let content_type = |value: &str| {
        tiny_http::Header::from_bytes(&b"Content-Type"[..], value.as_bytes())
            .expect("a static header is valid")
    };
    while let Ok(request) = server.recv() {
        let path = request.url().split('?').next().unwrap_or("");
        let answer = match (request.method(), path) {
            (tiny_http::Method::Get | tiny_http::Method::Head, "/metrics") => {
                match render(registry) {
                    Ok(text) => tiny_http::Response::from_string(text).with_header(content_type(
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    )),
                    Err(_) => {
                        tiny_http::Response::from_string("encoding failed\n").with_status_code(500)
                    }
                }
            }
            (tiny_http::Method::Get | tiny_http::Method::Head, _) => {
                tiny_http::Response::from_string("only /metrics is served here\n")
                    .with_status_code(404)
            }
            _ => tiny_http::Response::from_string("only GET /metrics\n").with_status_code(405),
        };
        if let Err(e) = request.respond(answer) {
            tracing::debug!("metrics answer not written: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    //! Proves the histogram puts each observation in the right bucket and its buckets add
    //! up to the count.
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe_ms(0);
        h.observe(Duration::from_micros(700));
        h.observe_ms(3);
        h.observe_ms(60_000);
        let v = h.values();
        assert_eq!(v.count, 4);
        assert_eq!(v.buckets[0], (0.5, 1));
        assert_eq!(v.buckets[1], (1.0, 1));
        assert_eq!(v.buckets[2], (2.0, 0));
        assert_eq!(v.buckets[3], (5.0, 1));
        assert_eq!(*v.buckets.last().unwrap(), (f64::INFINITY, 1));
        assert_eq!(v.buckets.iter().map(|b| b.1).sum::<u64>(), v.count);
        assert_eq!(v.sum_ms, 60_003.7);
        assert_eq!(h.clone().values(), v);
    }
}
