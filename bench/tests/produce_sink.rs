//! Proves the whole produce path over real TCP (Kafka encode, pipelining, response decode,
//! accounting) against the discard sink: at a fixed rate every planned message is acknowledged
//! once, without errors, and the JSON summary carries the counts.

use std::time::Duration;

use bench::produce::{self, ProduceOptions};
use bench::record_batch::Codec;
use bench::sink::Sink;

fn options(bootstrap: String) -> ProduceOptions {
    ProduceOptions {
        bootstrap,
        topic: "sink-test".into(),
        partitions: 4,
        rate_per_s: Some(20_000.0),
        message_bytes: 100,
        duration: Duration::from_millis(1500),
        acks: 1,
        batch_bytes: 16384,
        linger: Duration::from_millis(1),
        connections: 2,
        max_in_flight: 8,
        keys: Some(1000),
        codec: Codec::None,
        numbered: false,
        cpus: Vec::new(),
        progress: false,
        topic_configs: Vec::new(),
        disk: None,
        host: None,
    }
}

#[test]
fn every_planned_message_is_acknowledged_once() {
    let sink = Sink::start().unwrap();
    let result = produce::run(&options(sink.address().to_string())).unwrap();
    assert_eq!(result.summary.msgs, 30_000);
    assert_eq!(result.summary.errors, 0);
    assert_eq!(result.acked_per_connection.iter().sum::<u64>(), 30_000);
    assert_eq!(result.histogram.len(), 30_000);
    assert!(result.summary.schedule_kept);
    // A second run on the same topic starts where the first ended.
    let again = produce::run(&options(sink.address().to_string())).unwrap();
    let start: i64 = again.start_offsets.iter().map(|(_, offset)| offset).sum();
    assert_eq!(start, 30_000);
}

#[test]
fn compressed_and_numbered_batches_are_accepted() {
    let sink = Sink::start().unwrap();
    let mut options = options(sink.address().to_string());
    options.codec = Codec::Zstd;
    options.numbered = true;
    options.acks = -1;
    options.duration = Duration::from_millis(500);
    let result = produce::run(&options).unwrap();
    assert_eq!(result.summary.msgs, 10_000);
    assert_eq!(result.summary.errors, 0);
}
