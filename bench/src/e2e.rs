//! `bench e2e`: produce and consume at once; a message's latency is the time a consumer saw
//! it minus the time it was *intended* to be sent (carried in the record), so broker queueing,
//! fetch long-polling and any generator stall all count.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::consume::{advance, numbered_messages, PARTITION_MAX_BYTES};
use crate::kafka_client::KafkaConnection;
use crate::produce::{self, unix_ns, ProduceOptions};
use crate::report::{LatencyHistogram, RunCounts, Summary};

/// What an e2e run measured: end-to-end latency, and the producer's own summary.
pub struct E2eResult {
    pub summary: Summary,
    pub histogram: LatencyHistogram,
    pub produce: Summary,
}

/// Runs `options` (forced numbered) while a consumer tails the topic from its current end.
pub fn run(options: &ProduceOptions) -> Result<E2eResult, String> {
    let mut options = options.clone();
    options.numbered = true;
    let mut admin = KafkaConnection::connect(&options.bootstrap, Duration::from_secs(10))
        .map_err(|err| format!("connect {}: {err}", options.bootstrap))?;
    let partitions = admin
        .ensure_topic(&options.topic, options.partitions, &[])
        .map_err(|err| err.to_string())?;
    let start = admin
        .list_offsets(&options.topic, partitions, -1)
        .map_err(|err| err.to_string())?;
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let producer_done = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (bootstrap, topic) = (options.bootstrap.clone(), options.topic.clone());
        let expected = expected.clone();
        let producer_done = producer_done.clone();
        std::thread::Builder::new()
            .name("e2e-consumer".into())
            .spawn(move || consume_tail(&bootstrap, &topic, start, &expected, &producer_done))
            .map_err(|err| err.to_string())?
    };
    let produced = produce::run(&options);
    if let Ok(result) = &produced {
        expected.store(result.summary.msgs, Ordering::Relaxed);
    }
    producer_done.store(true, Ordering::Relaxed);
    let consumed = consumer
        .join()
        .map_err(|_| "the consumer thread panicked".to_string())?;
    let produced = produced?;
    let (histogram, msgs, elapsed) = consumed?;
    let missing = produced.summary.msgs.saturating_sub(msgs);
    Ok(E2eResult {
        summary: Summary::new(
            RunCounts {
                workload: "e2e",
                msgs,
                bytes: msgs * options.message_bytes as u64,
                elapsed,
                errors: produced.summary.errors + missing,
                schedule_kept: produced.summary.schedule_kept,
                target_msgs_per_s: options.rate_per_s,
            },
            &histogram,
        ),
        histogram,
        produce: produced.summary,
    })
}

/// Tails `topic` from `start` until `expected` messages were seen (known once the producer
/// finished) or 30 s after the producer finished.
fn consume_tail(
    bootstrap: &str,
    topic: &str,
    start: Vec<(i32, i64)>,
    expected: &AtomicU64,
    producer_done: &AtomicBool,
) -> Result<(LatencyHistogram, u64, Duration), String> {
    let mut connection = KafkaConnection::connect(bootstrap, Duration::from_secs(10))
        .map_err(|err| format!("connect {bootstrap}: {err}"))?;
    let mut positions = start;
    let mut histogram = LatencyHistogram::default();
    let mut seen = 0u64;
    let started = Instant::now();
    let mut done_at: Option<Instant> = None;
    loop {
        if seen >= expected.load(Ordering::Relaxed) {
            break;
        }
        if producer_done.load(Ordering::Relaxed) {
            let since = *done_at.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        let response = connection
            .fetch(topic, &positions, 100, 1, 64 << 20, PARTITION_MAX_BYTES)
            .map_err(|err| err.to_string())?;
        let now_ns = unix_ns();
        advance(
            &response,
            topic,
            &mut positions,
            &mut |partition, _, batch| {
                numbered_messages(partition, batch, |_, intended_ns| {
                    histogram.record_us(now_ns.saturating_sub(intended_ns) / 1000, 1);
                    seen += 1;
                })
            },
        )
        .map_err(|err| err.to_string())?;
    }
    Ok((histogram, seen, started.elapsed()))
}
