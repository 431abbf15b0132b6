//! `bench produce`: open-loop (or flat-out) load against a Kafka-API broker.
//!
//! Each connection runs on its own thread (pinned to the profile's bench cores when there are
//! some) and drives [`engine::run`] over a [`ProduceTransport`]. Record batches are built once
//! per (partition, record count) as templates and reused by reference, so the generator does
//! no per-message work beyond latency bookkeeping; `--verify` instead numbers every message
//! (one encode per batch) so the run can be read back and checked.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::consume::{numbered_messages, read_range, ReadLimits, PARTITION_MAX_BYTES};
use crate::engine::{self, BatchSource, EnginePlan, Progress, SystemClock};
use crate::kafka_client::{KafkaConnection, ProduceTransport};
use crate::record_batch::{
    encode_with_codec, record_bytes, BatchWriter, Codec, BATCH_HEADER_BYTES,
};
use crate::report::{LatencyHistogram, RunCounts, Second, Summary};
use crate::verify::{verify, VerifyReport};

/// Everything `bench produce` was asked to do.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    /// Messages per second over all connections; None runs flat out.
    pub rate_per_s: Option<f64>,
    pub message_bytes: usize,
    pub duration: Duration,
    /// -1 (all), 0 or 1.
    pub acks: i16,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub connections: usize,
    pub max_in_flight: usize,
    /// Distinct keys; None sends no keys.
    pub keys: Option<u64>,
    pub codec: Codec,
    /// Number each message so `verify` can read the run back.
    pub numbered: bool,
    /// Cores to pin connection threads to (round-robin); empty: no pinning.
    pub cpus: Vec<usize>,
    /// Print a progress line every second.
    pub progress: bool,
    /// Topic configs used if the topic is created (e.g. flush policy).
    pub topic_configs: Vec<(String, String)>,
    /// The embedded node's disk, read once a second into the timeline; None for other
    /// targets.
    pub disk: Option<crate::embedded::DiskMeter>,
    /// The host hiccup meter running beside the run, read once a second into the timeline.
    pub host: Option<crate::hiccup::SlowestWakeUp>,
}

/// What a produce run measured.
pub struct ProduceResult {
    pub summary: Summary,
    pub histogram: LatencyHistogram,
    /// Per connection: messages acknowledged, for `--verify`.
    pub acked_per_connection: Vec<u64>,
    pub unanswered_requests: usize,
    /// Each partition's end offset before the run: where `--verify` starts reading.
    pub start_offsets: Vec<(i32, i64)>,
}

/// Bytes of the numbered prefix of a `--verify` / `e2e` message: connection u32 + sequence
/// u64 + intended send time u64.
pub const NUMBERED_PREFIX_BYTES: usize = 20;

/// Deterministic filler so payloads don't compress to nothing.
fn fill_payload(out: &mut BytesMut, len: usize, seed: u64) {
    let mut state = seed | 1;
    let start = out.len();
    out.resize(start + len, 0);
    for chunk in out[start..].chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

fn key_for(partition: i32, partitions: i32, slot: u64, keys: u64) -> [u8; 16] {
    // Keys k with k % partitions == partition all land on `partition` (the bench's own
    // partitioner), so sticky batches can carry keys.
    let per_partition = (keys / partitions as u64).max(1);
    let key = (slot % per_partition) * partitions as u64 + partition as u64;
    let mut text = [b'0'; 16];
    let digits = key.to_string();
    text[16 - digits.len()..].copy_from_slice(digits.as_bytes());
    text
}

/// Reused batches: one per (partition, record count), built on first use.
struct TemplateSource {
    options: ProduceOptions,
    templates: HashMap<(i32, u32), Bytes>,
    timestamp_ms: i64,
}

impl BatchSource for TemplateSource {
    fn batch(&mut self, partition: i32, _first: u64, count: u32, _at: Duration) -> Bytes {
        let options = &self.options;
        let timestamp_ms = self.timestamp_ms;
        self.templates
            .entry((partition, count))
            .or_insert_with(|| {
                let records: Vec<(Option<Bytes>, Bytes)> = (0..count as u64)
                    .map(|slot| {
                        let key = options.keys.map(|keys| {
                            Bytes::copy_from_slice(&key_for(
                                partition,
                                options.partitions,
                                slot,
                                keys,
                            ))
                        });
                        let mut value = BytesMut::with_capacity(options.message_bytes);
                        fill_payload(&mut value, options.message_bytes, slot + 1);
                        (key, value.freeze())
                    })
                    .collect();
                encode_with_codec(options.codec, timestamp_ms, &records)
            })
            .clone()
    }
    fn message_bytes(&self) -> usize {
        self.options.message_bytes
    }
}

/// Numbered messages: value = connection (u32 BE) + sequence (u64 BE) + intended send time
/// (u64 BE, ns since the Unix epoch) + filler. `--verify` checks the numbers, `e2e` reads
/// the time.
struct NumberedSource {
    options: ProduceOptions,
    connection: u32,
    buffer: BytesMut,
    /// Wall-clock ns of the engine clock's zero.
    wall_start_ns: u64,
    /// Spacing of intended send times on this connection; 0 flat out.
    interval_ns: f64,
}

/// Writes a numbered value of `size` bytes.
fn write_numbered_value(
    out: &mut BytesMut,
    connection: u32,
    sequence: u64,
    intended_ns: u64,
    size: usize,
) {
    out.extend_from_slice(&connection.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&intended_ns.to_be_bytes());
    fill_payload(out, size - NUMBERED_PREFIX_BYTES, sequence);
}

impl NumberedSource {
    fn intended_ns(&self, first: u64, first_intended: Duration, sequence: u64) -> u64 {
        self.wall_start_ns
            + first_intended.as_nanos() as u64
            + ((sequence - first) as f64 * self.interval_ns) as u64
    }
}

impl BatchSource for NumberedSource {
    fn batch(&mut self, partition: i32, first: u64, count: u32, first_intended: Duration) -> Bytes {
        let timestamp_ms = now_ms();
        let size = self.options.message_bytes;
        let key = |sequence| {
            self.options
                .keys
                .map(|keys| key_for(partition, self.options.partitions, sequence, keys))
        };
        if self.options.codec != Codec::None {
            let records: Vec<(Option<Bytes>, Bytes)> = (first..first + count as u64)
                .map(|sequence| {
                    let mut value = BytesMut::with_capacity(size);
                    let intended_ns = self.intended_ns(first, first_intended, sequence);
                    write_numbered_value(&mut value, self.connection, sequence, intended_ns, size);
                    (
                        key(sequence).map(|k| Bytes::copy_from_slice(&k)),
                        value.freeze(),
                    )
                })
                .collect();
            return encode_with_codec(self.options.codec, timestamp_ms, &records);
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        let mut writer = BatchWriter::begin(&mut buffer, timestamp_ms);
        for sequence in first..first + count as u64 {
            let intended_ns = self.intended_ns(first, first_intended, sequence);
            let connection = self.connection;
            writer.push(
                &mut buffer,
                key(sequence).as_ref().map(|k| &k[..]),
                size,
                |out| write_numbered_value(out, connection, sequence, intended_ns, size),
            );
        }
        writer.finish(&mut buffer);
        let batch = buffer.split().freeze();
        self.buffer = buffer;
        batch
    }
    fn message_bytes(&self) -> usize {
        self.options.message_bytes
    }
}

/// Wall-clock nanoseconds since the epoch.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// Wall-clock milliseconds since the epoch: a record's CreateTime.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// Messages per batch so a batch is about `batch_bytes`.
pub fn records_per_batch(options: &ProduceOptions) -> u32 {
    let key = options.keys.map(|_| [0u8; 16]);
    let per_record = record_bytes(64, key.as_ref().map(|k| &k[..]), options.message_bytes);
    let room = options.batch_bytes.saturating_sub(BATCH_HEADER_BYTES);
    (room / per_record).clamp(1, 100_000) as u32
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(cpu, "could not pin the bench thread");
        }
    }
}

/// Which partitions each connection sends, and to which broker: the partitions are grouped
/// by leader (one broker on a single node; a cluster's leaders otherwise) and each leader gets
/// its share of `connections` (at least one), partitions dealt round-robin among them.
fn connection_plans(
    admin: &mut KafkaConnection,
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    connections: usize,
) -> Result<Vec<(String, Vec<i32>)>, String> {
    let metadata = admin
        .metadata(Some(&[topic]))
        .map_err(|err| format!("topic {topic}: {err}"))?;
    let addresses: HashMap<i32, String> = metadata
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    if let Some(entry) = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
    {
        for p in &entry.partitions {
            by_leader
                .entry(p.leader_id.0)
                .or_default()
                .push(p.partition_index);
        }
    }
    if let Some(offline) = by_leader.get(&-1) {
        return Err(format!(
            "topic {topic}: partitions {offline:?} have no leader"
        ));
    }
    // One broker: keep the address the user gave (it may differ from the advertised one).
    if by_leader.len() <= 1 {
        let connections = connections.clamp(1, partitions as usize);
        return Ok((0..connections)
            .map(|c| {
                let assigned = (0..partitions)
                    .filter(|p| *p as usize % connections == c)
                    .collect();
                (bootstrap.to_string(), assigned)
            })
            .collect());
    }
    let per_leader = (connections / by_leader.len()).max(1);
    let mut plans = Vec::new();
    for (leader, mut owned) in by_leader {
        owned.sort_unstable();
        let address = addresses
            .get(&leader)
            .cloned()
            .ok_or_else(|| format!("leader {leader} is not in the metadata's brokers"))?;
        let n = per_leader.min(owned.len());
        for c in 0..n {
            let assigned = owned
                .iter()
                .enumerate()
                .filter(|(i, _)| i % n == c)
                .map(|(_, p)| *p)
                .collect();
            plans.push((address.clone(), assigned));
        }
    }
    Ok(plans)
}

/// Runs the load and returns what it measured.
pub fn run(options: &ProduceOptions) -> Result<ProduceResult, String> {
    if options.numbered && options.message_bytes < NUMBERED_PREFIX_BYTES {
        return Err(format!(
            "--verify needs --size >= {NUMBERED_PREFIX_BYTES} (the message number)"
        ));
    }
    let mut admin = KafkaConnection::connect(&options.bootstrap, Duration::from_secs(10))
        .map_err(|err| format!("connect {}: {err}", options.bootstrap))?;
    let configs: Vec<(&str, &str)> = options
        .topic_configs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let partitions = admin
        .ensure_topic(&options.topic, options.partitions, &configs)
        .map_err(|err| format!("topic {}: {err}", options.topic))?;
    let mut options = options.clone();
    options.partitions = partitions;
    let plans = connection_plans(
        &mut admin,
        &options.bootstrap,
        &options.topic,
        partitions,
        options.connections,
    )?;
    // Each partition's end, asked of its leader.
    let mut start_offsets = Vec::with_capacity(partitions as usize);
    for (address, assigned) in &plans {
        let mut leader = KafkaConnection::connect(address, Duration::from_secs(10))
            .map_err(|err| format!("connect {address}: {err}"))?;
        start_offsets.extend(
            leader
                .list_offsets_of(&options.topic, assigned, -1)
                .map_err(|err| format!("topic {}: {err}", options.topic))?,
        );
    }
    start_offsets.sort_unstable();
    let per_batch = records_per_batch(&options);
    let progress = Arc::new(Progress::default());
    let clock = Arc::new(SystemClock::starting_now());
    let wall_start_ns = unix_ns();
    let started = Instant::now();

    let mut threads = Vec::new();
    for (connection, (address, assigned)) in plans.into_iter().enumerate() {
        let plan = EnginePlan {
            // Each connection carries its share of the partitions' load.
            rate_per_s: options
                .rate_per_s
                .map(|rate| rate * assigned.len() as f64 / partitions as f64),
            duration: options.duration,
            partitions: assigned,
            records_per_batch: per_batch,
            linger: options.linger,
            max_in_flight: options.max_in_flight,
            max_batches_per_request: 8,
            drain_timeout: Duration::from_secs(30),
        };
        let options = options.clone();
        let progress = progress.clone();
        let clock = clock.clone();
        let cpu = (!options.cpus.is_empty()).then(|| options.cpus[connection % options.cpus.len()]);
        threads.push(
            std::thread::Builder::new()
                .name(format!("produce-{connection}"))
                .spawn(move || -> Result<engine::EngineOutcome, String> {
                    if let Some(cpu) = cpu {
                        pin_to_cpu(cpu);
                    }
                    let kafka = KafkaConnection::connect(&address, Duration::from_secs(10))
                        .map_err(|err| format!("connect {address}: {err}"))?;
                    let mut transport =
                        ProduceTransport::new(kafka, &clock, &options.topic, options.acks)
                            .map_err(|err| err.to_string())?;
                    let outcome = if options.numbered {
                        let mut source = NumberedSource {
                            options: options.clone(),
                            connection: connection as u32,
                            buffer: BytesMut::with_capacity(options.batch_bytes * 2),
                            wall_start_ns,
                            interval_ns: plan.rate_per_s.map_or(0.0, |rate| 1e9 / rate),
                        };
                        engine::run(&plan, &*clock, &mut transport, &mut source, &progress)
                    } else {
                        let mut source = TemplateSource {
                            options: options.clone(),
                            templates: HashMap::new(),
                            timestamp_ms: now_ms(),
                        };
                        engine::run(&plan, &*clock, &mut transport, &mut source, &progress)
                    };
                    outcome.map_err(|err| format!("connection {connection}: {err}"))
                })
                .map_err(|err| err.to_string())?,
        );
    }

    let timeline = sample_until_done(
        &progress,
        &threads,
        started,
        options.progress,
        options.disk.as_ref(),
        options.host.as_ref(),
    );
    let mut outcomes = Vec::new();
    for thread in threads {
        outcomes.push(
            thread
                .join()
                .map_err(|_| "a connection thread panicked".to_string())??,
        );
    }
    let elapsed = outcomes
        .iter()
        .map(|outcome| outcome.finished_at)
        .max()
        .unwrap_or_default();
    let histogram = progress
        .histogram
        .lock()
        .map_err(|_| "histogram lock poisoned")?
        .clone();
    let acked: u64 = outcomes.iter().map(|o| o.acked_msgs).sum();
    let errors: u64 = outcomes.iter().map(|o| o.error_msgs).sum();
    let unanswered: usize = outcomes.iter().map(|o| o.unanswered_requests).sum();
    let plan_for_check = EnginePlan {
        rate_per_s: options.rate_per_s,
        duration: options.duration,
        partitions: vec![0],
        records_per_batch: 1,
        linger: options.linger,
        max_in_flight: 1,
        max_batches_per_request: 1,
        drain_timeout: Duration::ZERO,
    };
    let schedule_kept = outcomes.iter().all(|o| o.schedule_kept(&plan_for_check));
    if let Some(code) = outcomes
        .iter()
        .map(|o| o.first_error_code)
        .find(|c| *c != 0)
    {
        eprintln!("errors: first Kafka error code {code}");
    }
    let summary = Summary::new(
        RunCounts {
            workload: "produce",
            msgs: acked,
            bytes: acked * options.message_bytes as u64,
            elapsed,
            errors: errors + unanswered as u64,
            schedule_kept,
            target_msgs_per_s: options.rate_per_s,
        },
        &histogram,
    );
    let summary = Summary {
        timeline,
        ..summary
    };
    Ok(ProduceResult {
        summary,
        histogram,
        acked_per_connection: outcomes.iter().map(|o| o.acked_msgs).collect(),
        unanswered_requests: unanswered,
        start_offsets,
    })
}

/// Samples the shared counters once a second until every connection thread finished: what
/// was acknowledged in each second and its latencies (the difference of the shared histogram
/// since the last sample), the slowest disk operation of `disk` and the latest wake-up of
/// `host`. Prints a line per second when `print`.
fn sample_until_done<T>(
    progress: &Progress,
    threads: &[std::thread::JoinHandle<T>],
    started: Instant,
    print: bool,
    disk: Option<&crate::embedded::DiskMeter>,
    host: Option<&crate::hiccup::SlowestWakeUp>,
) -> Vec<Second> {
    // What came before the load (the topic's creation) is not the first second's.
    if let Some(disk) = disk {
        disk.take_slowest_ms();
    }
    if let Some(host) = host {
        host.take_ms();
    }
    let mut timeline = Vec::new();
    let mut last_msgs = 0;
    let mut last_bytes = 0;
    let mut last_histogram = LatencyHistogram::default();
    let mut last_at = started;
    let mut next = started + Duration::from_secs(1);
    while !threads.iter().all(|thread| thread.is_finished()) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next += Duration::from_secs(1);
        let msgs = progress.acked_msgs.load(Ordering::Relaxed);
        let bytes = progress.acked_bytes.load(Ordering::Relaxed);
        let Ok(histogram) = progress.histogram.lock().map(|h| h.clone()) else {
            break;
        };
        let mut second = Second::new(
            now.duration_since(started).as_secs_f64(),
            now.duration_since(last_at).as_secs_f64(),
            msgs - last_msgs,
            bytes - last_bytes,
            &histogram.since(&last_histogram),
        );
        second.disk_max_ms = disk.map(|d| d.take_slowest_ms());
        second.host_stall_max_ms = host.map(|h| h.take_ms());
        if print {
            let disk = second
                .disk_max_ms
                .map(|ms| format!("  disk max {ms:.3} ms"))
                .unwrap_or_default();
            let host = second
                .host_stall_max_ms
                .map(|ms| format!("  host stall max {ms:.3} ms"))
                .unwrap_or_default();
            println!(
                "{:>6.1} s  {:>10.0} msgs/s  {:>8.1} MB/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  errors {}{disk}{host}",
                second.t_s,
                second.msgs_per_s,
                second.mb_per_s,
                second.p50_ms,
                second.p99_ms,
                second.p99_9_ms,
                progress.errors.load(Ordering::Relaxed)
            );
        }
        timeline.push(second);
        last_msgs = msgs;
        last_bytes = bytes;
        last_histogram = histogram;
        last_at = now;
    }
    timeline
}

/// Reads a `--verify` run back from the offsets the topic had before it (`start_offsets`) to
/// its end, and checks every acknowledged message is there once, in order.
pub fn verify_run(
    options: &ProduceOptions,
    result: &ProduceResult,
) -> Result<VerifyReport, String> {
    if result.unanswered_requests > 0 || result.summary.errors > 0 {
        return Err(format!(
            "verify needs a run without errors ({} errors, {} unanswered requests)",
            result.summary.errors, result.unanswered_requests
        ));
    }
    let mut connection = KafkaConnection::connect(&options.bootstrap, Duration::from_secs(10))
        .map_err(|err| format!("connect {}: {err}", options.bootstrap))?;
    let partitions = result.start_offsets.len() as i32;
    let end = connection
        .list_offsets(&options.topic, partitions, -1)
        .map_err(|err| err.to_string())?;
    let mut messages = Vec::new();
    let mut latency = LatencyHistogram::default();
    read_range(
        &mut connection,
        &options.topic,
        &result.start_offsets,
        &end,
        ReadLimits {
            deadline: Instant::now() + Duration::from_secs(300),
            partition_max_bytes: PARTITION_MAX_BYTES,
        },
        &mut latency,
        |partition, _, batch| {
            numbered_messages(partition, batch, |message, _| messages.push(message))
        },
    )
    .map_err(|err| err.to_string())?;
    Ok(verify(&result.acked_per_connection, messages))
}
