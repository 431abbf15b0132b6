//! Per-shard metrics state. Each shard writes only its own [`ShardMetrics`]: counters and
//! histograms of relaxed atomics updated per request, per append or per disk write (never per
//! record), so the metrics endpoint (`metrics_http.rs`) and the shutdown report read them from
//! another thread without locks. What is costly to keep current (log sizes, per-partition
//! traffic, committed group offsets, the cluster state, glommio's ring counters) the shard
//! copies into [`ShardSample`] once a second (`metrics_sample.rs`), the only lock here, taken
//! by that task and by a scrape.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::histogram::AtomicHistogram;
use crate::storage::batch_cache::BatchCacheStats;
use crate::storage::io_latency::DiskLatency;

/// Kafka API keys counted per key (every key this broker serves is below).
pub const API_KEYS: usize = 80;
/// Versions counted per key; higher versions count in the last slot.
pub const API_VERSIONS: usize = 20;

/// The parts of a request's time, as Kafka splits them: waiting for a handler (`queue`), in
/// the handler (`local`), waiting on others (`remote`: the fetch long-poll, a produce waiting
/// for the ISR), waiting behind earlier answers of the connection (`response_queue`), writing
/// the answer (`send`), and all of it (`total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Queue = 0,
    Local,
    Remote,
    ResponseQueue,
    Send,
    Total,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Queue,
        Stage::Local,
        Stage::Remote,
        Stage::ResponseQueue,
        Stage::Send,
        Stage::Total,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Queue => "queue",
            Stage::Local => "local",
            Stage::Remote => "remote",
            Stage::ResponseQueue => "response_queue",
            Stage::Send => "send",
            Stage::Total => "total",
        }
    }
}

#[derive(Debug)]
pub struct ShardMetrics {
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Part of `bytes_sent` that went by splice from segment files.
    pub bytes_spliced: AtomicU64,
    /// Part of `bytes_sent` read from segment files and written through user space (TLS
    /// listeners, `--no-splice`).
    pub bytes_copied: AtomicU64,
    pub requests: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Connections this shard serves now (a gauge).
    pub connections_open: AtomicU64,
    /// Requests served for another shard over the mesh.
    pub requests_forwarded_in: AtomicU64,
    /// Connections another shard handed to this one (`connection.rs`, "Moving").
    pub connections_moved_in: AtomicU64,
    /// The shard's memory budget, bytes (see `memory_budget.rs`).
    pub memory_budget_bytes: AtomicU64,
    /// Bytes charged to the memory budget now (a gauge).
    pub memory_used_bytes: AtomicU64,
    /// The most ever charged to the memory budget, bytes.
    pub memory_peak_bytes: AtomicU64,
    /// Reads that waited for the memory budget.
    pub memory_waits: AtomicU64,
    /// Records and record-batch bytes appended by Produce requests served here.
    pub produce_records: AtomicU64,
    pub produce_bytes: AtomicU64,
    /// Record bytes answered to consumers' (and followers') Fetch requests served here.
    pub fetch_bytes: AtomicU64,
    pub follower_fetch_bytes: AtomicU64,
    /// Requests by API key and version (`API_KEYS` x `API_VERSIONS`).
    requests_by_api: Box<[AtomicU64]>,
    /// Requests by API key that closed the connection (malformed, unsupported...).
    closes_by_api: Box<[AtomicU64]>,
    /// Per API key, one latency histogram per [`Stage`], microseconds.
    latency_by_api: Box<[[AtomicHistogram; 6]]>,
    /// Error codes in answers by (API key, error code): per partition for Produce and Fetch.
    /// Locked once per request that has errors, and by a scrape.
    errors: Mutex<BTreeMap<(i16, i16), u64>>,
    /// Per partition append of a Produce: its bytes and records.
    pub produce_append_bytes: AtomicHistogram,
    pub produce_append_records: AtomicHistogram,
    /// fdatasync and O_DIRECT write latency of this shard's logs, microseconds.
    pub disk: Arc<DiskLatency>,
    /// What this shard's batch cache holds, and where its log reads were served from.
    pub batch_cache: Arc<BatchCacheStats>,
    /// ISR changes of partitions this broker leads (counted on the control shard).
    pub isr_shrinks: AtomicU64,
    pub isr_expands: AtomicU64,
    /// What the shard copies here once a second.
    pub sample: Mutex<ShardSample>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        let atomics = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        ShardMetrics {
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_spliced: AtomicU64::new(0),
            bytes_copied: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            requests_forwarded_in: AtomicU64::new(0),
            connections_moved_in: AtomicU64::new(0),
            memory_budget_bytes: AtomicU64::new(0),
            memory_used_bytes: AtomicU64::new(0),
            memory_peak_bytes: AtomicU64::new(0),
            memory_waits: AtomicU64::new(0),
            produce_records: AtomicU64::new(0),
            produce_bytes: AtomicU64::new(0),
            fetch_bytes: AtomicU64::new(0),
            follower_fetch_bytes: AtomicU64::new(0),
            requests_by_api: atomics(API_KEYS * API_VERSIONS),
            closes_by_api: atomics(API_KEYS),
            latency_by_api: (0..API_KEYS)
                .map(|_| std::array::from_fn(|_| AtomicHistogram::default()))
                .collect(),
            errors: Mutex::new(BTreeMap::new()),
            produce_append_bytes: AtomicHistogram::default(),
            produce_append_records: AtomicHistogram::default(),
            disk: Arc::new(DiskLatency::default()),
            batch_cache: Arc::new(BatchCacheStats::default()),
            isr_shrinks: AtomicU64::new(0),
            isr_expands: AtomicU64::new(0),
            sample: Mutex::new(ShardSample::default()),
        }
    }
}

/// The timing of one request, from its frame read to its answer written.
#[derive(Debug, Clone, Copy)]
pub struct RequestTiming {
    pub api_key: i16,
    pub api_version: i16,
    pub received: std::time::Instant,
    pub handler_started: std::time::Instant,
    pub handler_done: std::time::Instant,
    /// Part of the handler's time spent waiting on others, microseconds.
    pub remote_us: u64,
}

fn api_index(api_key: i16) -> Option<usize> {
    usize::try_from(api_key).ok().filter(|&k| k < API_KEYS)
}

impl ShardMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// A request answered (or dropped, acks=0) once `send_started` and `sent` are known.
    pub fn request_done(
        &self,
        timing: &RequestTiming,
        send_started: std::time::Instant,
        sent: std::time::Instant,
    ) {
        let Some(api) = api_index(timing.api_key) else {
            return;
        };
        let version = usize::try_from(timing.api_version)
            .unwrap_or(0)
            .min(API_VERSIONS - 1);
        Self::add(&self.requests_by_api[api * API_VERSIONS + version], 1);
        let us = |from: std::time::Instant, to: std::time::Instant| {
            to.saturating_duration_since(from).as_micros() as u64
        };
        let handler_us = us(timing.handler_started, timing.handler_done);
        let remote_us = timing.remote_us.min(handler_us);
        let histograms = &self.latency_by_api[api];
        let record = |stage: Stage, value: u64| histograms[stage as usize].record(value);
        record(Stage::Queue, us(timing.received, timing.handler_started));
        record(Stage::Local, handler_us - remote_us);
        record(Stage::Remote, remote_us);
        record(Stage::ResponseQueue, us(timing.handler_done, send_started));
        record(Stage::Send, us(send_started, sent));
        record(Stage::Total, us(timing.received, sent));
    }

    /// A request of `api_key` closed its connection.
    pub fn request_closed(&self, api_key: i16) {
        if let Some(api) = api_index(api_key) {
            Self::add(&self.closes_by_api[api], 1);
        }
    }

    /// Error codes a request answered (per partition), counted by (API key, code).
    pub fn errors_answered(&self, api_key: i16, codes: impl IntoIterator<Item = i16>) {
        let mut codes = codes.into_iter().filter(|&c| c != 0).peekable();
        if codes.peek().is_none() {
            return;
        }
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        for code in codes {
            *errors.entry((api_key, code)).or_insert(0) += 1;
        }
    }

    /// (API key, version, requests) for every pair seen.
    pub fn requests_by_api(&self) -> Vec<(i16, i16, u64)> {
        let mut out = Vec::new();
        for (index, counter) in self.requests_by_api.iter().enumerate() {
            let n = Self::get(counter);
            if n > 0 {
                out.push((
                    (index / API_VERSIONS) as i16,
                    (index % API_VERSIONS) as i16,
                    n,
                ));
            }
        }
        out
    }

    /// (API key, requests that closed the connection) for every key seen.
    pub fn closes_by_api(&self) -> Vec<(i16, u64)> {
        self.closes_by_api
            .iter()
            .enumerate()
            .filter_map(|(key, counter)| {
                let n = Self::get(counter);
                (n > 0).then_some((key as i16, n))
            })
            .collect()
    }

    pub fn errors(&self) -> BTreeMap<(i16, i16), u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The latency histograms of `api_key` (by [`Stage`]), if it was ever served.
    pub fn latency(&self, api_key: i16) -> Option<&[AtomicHistogram; 6]> {
        let api = api_index(api_key)?;
        let histograms = &self.latency_by_api[api];
        (histograms[Stage::Total as usize].count() > 0).then_some(histograms)
    }

    pub fn sample(&self) -> std::sync::MutexGuard<'_, ShardSample> {
        self.sample.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Traffic of one partition through this shard's Produce and Fetch handlers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionTraffic {
    pub records_in: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Per-partition traffic counted by the shard that served the request (the hot path updates
/// this shard-local map per partition of a request: no lock, no atomics).
#[derive(Debug, Default)]
pub struct ShardTraffic {
    by_topic: RefCell<HashMap<String, Vec<PartitionTraffic>>>,
}

impl ShardTraffic {
    pub fn update(&self, topic: &str, partition: i32, f: impl FnOnce(&mut PartitionTraffic)) {
        let Ok(index) = usize::try_from(partition) else {
            return;
        };
        if index >= crate::topics::PARTITIONS_PER_TOPIC_MAX as usize {
            return;
        }
        let mut map = self.by_topic.borrow_mut();
        if !map.contains_key(topic) {
            map.insert(topic.to_string(), Vec::new());
        }
        let list = map.get_mut(topic).expect("inserted above");
        if list.len() <= index {
            list.resize(index + 1, PartitionTraffic::default());
        }
        f(&mut list[index]);
    }

    /// Forgets a deleted topic.
    pub fn forget(&self, topic: &str) {
        self.by_topic.borrow_mut().remove(topic);
    }

    pub fn snapshot(&self) -> Vec<(String, i32, PartitionTraffic)> {
        let map = self.by_topic.borrow();
        let mut out = Vec::new();
        for (topic, list) in map.iter() {
            for (partition, traffic) in list.iter().enumerate() {
                if *traffic != PartitionTraffic::default() {
                    out.push((topic.clone(), partition as i32, *traffic));
                }
            }
        }
        out
    }
}

/// One partition log this shard owns, as sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSample {
    pub topic: String,
    pub partition: i32,
    pub size_bytes: u64,
    pub segments: u64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// What consumers may read up to (single node: the flush policy's promise; cluster: the
    /// high watermark, on the leader only).
    pub high_watermark: Option<i64>,
}

/// A committed offset of a group this shard coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedSample {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// glommio's counters of this shard's rings (reads and writes of files it submitted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoSample {
    pub file_reads: u64,
    pub file_read_bytes: u64,
    pub file_writes: u64,
    pub file_written_bytes: u64,
    pub tasks_executed: u64,
    pub runtime_us: u64,
}

/// Cluster state as this broker sees it (sampled on the control shard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterSample {
    pub controller_id: i32,
    pub is_controller: bool,
    /// Partitions led here whose ISR is smaller than their replica set.
    pub under_replicated: u64,
    /// Partitions led here whose ISR is below the topic's min.insync.replicas.
    pub under_min_isr: u64,
    /// Partitions led here.
    pub leaders: u64,
    /// On the controller only: partitions without a leader.
    pub offline: u64,
    pub brokers: u64,
}

/// What a shard copies for the metrics once a second.
#[derive(Debug, Clone, Default)]
pub struct ShardSample {
    pub partitions: Vec<PartitionSample>,
    pub traffic: Vec<(String, i32, PartitionTraffic)>,
    pub committed: Vec<CommittedSample>,
    pub io: IoSample,
    pub cluster: Option<ClusterSample>,
}
