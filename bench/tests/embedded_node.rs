//! Proves the README's first command works end to end: the embedded single node starts, an
//! open-loop produce run is acknowledged, `--verify` reads every message back once and in
//! order, `e2e` sees every message it produced, and `consume` counts them all.

use std::time::Duration;

use bench::embedded::EmbeddedNode;
use bench::hiccup::HiccupMeter;
use bench::produce::{self, ProduceOptions};
use bench::record_batch::Codec;

fn plan(bootstrap: String, topic: &str) -> ProduceOptions {
    ProduceOptions {
        bootstrap,
        topic: topic.into(),
        partitions: 4,
        rate_per_s: Some(20_000.0),
        message_bytes: 100,
        duration: Duration::from_millis(1500),
        acks: -1,
        batch_bytes: 16384,
        linger: Duration::from_millis(1),
        connections: 2,
        max_in_flight: 8,
        keys: Some(100),
        codec: Codec::None,
        numbered: true,
        cpus: Vec::new(),
        progress: false,
        topic_configs: Vec::new(),
        disk: None,
        host: None,
    }
}

fn node() -> EmbeddedNode {
    let profile = tuning::Profile::parse(
        "[[core]]\ncpu = 0\nmemory_budget_bytes = 268435456\n[storage]\nsegment_bytes = 2097152\n",
        std::path::Path::new("test-profile"),
        tuning::online_cpus(),
    )
    .unwrap();
    EmbeddedNode::start(profile).unwrap()
}

#[test]
fn produce_verify_e2e_and_consume_against_the_embedded_node() {
    let node = node();
    let mut options = plan(node.address().to_string(), "embedded");
    options.disk = Some(node.disk_meter());
    let meter = HiccupMeter::start(&[0], Duration::from_millis(1)).unwrap();
    options.host = Some(meter.slowest_wake_up());
    let result = produce::run(&options).unwrap();
    meter.stop();
    assert_eq!(result.summary.msgs, 30_000);
    assert_eq!(result.summary.errors, 0);
    // Every second of the load wrote rounds to the node's logs, and the meter woke in each:
    // each second carries the slowest of both.
    let timeline = &result.summary.timeline;
    assert!(!timeline.is_empty());
    for second in timeline {
        assert!(second.disk_max_ms.is_some_and(|ms| ms > 0.0), "{second:?}");
        assert!(
            second.host_stall_max_ms.is_some_and(|ms| ms > 0.0),
            "{second:?}"
        );
    }
    let report = produce::verify_run(&options, &result).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.messages_read, 30_000);

    // A second, compressed run on the same topic is verified from where the first ended.
    let mut second = options.clone();
    second.codec = Codec::Lz4;
    let result = produce::run(&second).unwrap();
    let report = produce::verify_run(&second, &result).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.messages_read, 30_000);

    let e2e = bench::e2e::run(&plan(node.address().to_string(), "embedded-e2e")).unwrap();
    assert_eq!(
        e2e.summary.msgs, 30_000,
        "every produced message was consumed"
    );
    assert_eq!(e2e.summary.errors, 0);

    // 64 KiB per partition in each Fetch: many fetches per partition, and still every message.
    let consumed = bench::consume::consume_existing(
        &node.address().to_string(),
        "embedded",
        Duration::from_secs(60),
        64 << 10,
    )
    .unwrap();
    assert_eq!(consumed.msgs, 60_000);
}
