//! Proves the Prometheus endpoint (`ServeConfig::metrics_listen`): after known produces,
//! fetches and a group commit, `/metrics` shows exactly those records and bytes in and out
//! (per shard and per partition), the requests by API and version, the error codes answered,
//! latency histograms per API and stage, disk latency histograms, log size, segments and
//! offsets, and the group's lag; with per-partition series switched off no series carries a
//! partition label while the per-shard totals stay.

mod kafka_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use broker::cli::client::Client;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// GET `path`: the status line, the headers and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// `name{labels}` -> value, labels as the exposition writes them.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, _, body) = get(addr, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn value(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {:#?}", metrics.keys().collect::<Vec<_>>()))
}

/// Scrapes until `ready` holds (the per-partition series are sampled once a second).
fn scrape_until(
    addr: SocketAddr,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = scrape(addr);
        if ready(&metrics) || Instant::now() > deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fetch(client: &mut Client, topic: &str, partition: i32, offset: i64) -> (i16, usize) {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let response = client.call(&request, 12).unwrap();
    let p = &response.responses[0].partitions[0];
    (p.error_code, p.records.as_ref().map_or(0, |r| r.len()))
}

fn commit(client: &mut Client, group: &str, topic: &str, partition: i32, offset: i64) {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_retention_time_ms(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)])]);
    let response = client.call(&request, 8).unwrap();
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
}

fn start(per_partition: bool, dir: &std::path::Path) -> broker::server::ServerHandle {
    let mut profile = kafka_support::dev_profile();
    profile.metrics.per_partition = per_partition;
    broker::server::start(broker::server::ServeConfig {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..kafka_support::config(profile, dir)
    })
    .expect("server starts")
}

#[test]
fn scrape_shows_what_was_produced_fetched_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(true, dir.path());
    let metrics_addr = server.metrics_addr().expect("metrics endpoint bound");
    let bootstrap = server.addr.to_string();
    broker::cli::topics_create(&bootstrap, "m", 2, -1, &[]).unwrap();
    let mut client = Client::connect(&bootstrap).unwrap();
    let three = kafka_support::batch(&[b"a", b"bb", b"ccc"]);
    let one = kafka_support::batch(&[b"dddd"]);
    assert_eq!(
        kafka_support::produce(&mut client, "m", 0, three.clone()).0,
        0
    );
    assert_eq!(
        kafka_support::produce(&mut client, "m", 0, three.clone()).0,
        0
    );
    assert_eq!(
        kafka_support::produce(&mut client, "m", 1, one.clone()).0,
        0
    );
    // UNKNOWN_TOPIC_OR_PARTITION (3), counted as an error of Produce.
    assert_eq!(
        kafka_support::produce(&mut client, "nope", 0, one.clone()).0,
        3
    );
    let (code, fetched) = fetch(&mut client, "m", 0, 0);
    assert_eq!((code, fetched), (0, 2 * three.len()));
    // OFFSET_OUT_OF_RANGE (1) for a fetch past the end.
    assert_eq!(fetch(&mut client, "m", 1, 99).0, 1);
    commit(&mut client, "g", "m", 0, 2);

    let in_p0 = (2 * three.len()) as f64;
    let in_p1 = one.len() as f64;
    let metrics = scrape_until(metrics_addr, |m| {
        m.get("streambox_consumer_group_lag{group=\"g\",topic=\"m\",partition=\"0\"}")
            .is_some()
            && m.get("streambox_partition_bytes_out_total{topic=\"m\",partition=\"0\"}")
                .is_some()
    });
    let v = |series: &str| value(&metrics, series);
    // Records and bytes in and out, per shard and per partition.
    assert_eq!(v("streambox_produce_records_total{shard=\"0\"}"), 7.0);
    assert_eq!(
        v("streambox_produce_bytes_total{shard=\"0\"}"),
        in_p0 + in_p1
    );
    assert_eq!(
        v("streambox_partition_records_in_total{topic=\"m\",partition=\"0\"}"),
        6.0
    );
    assert_eq!(
        v("streambox_partition_bytes_in_total{topic=\"m\",partition=\"1\"}"),
        in_p1
    );
    assert_eq!(
        v("streambox_fetch_bytes_total{shard=\"0\",reader=\"consumer\"}"),
        in_p0
    );
    assert_eq!(
        v("streambox_partition_bytes_out_total{topic=\"m\",partition=\"0\"}"),
        in_p0
    );
    // The fetch read what was just written: the dev profile's batch cache held it, so it came
    // from memory and no file range was sent.
    assert_eq!(
        v("streambox_log_read_bytes_total{shard=\"0\",source=\"memory\"}"),
        in_p0
    );
    assert_eq!(
        v("streambox_log_read_bytes_total{shard=\"0\",source=\"file\"}"),
        0.0
    );
    assert_eq!(
        v("streambox_fetch_file_sent_bytes_total{shard=\"0\",transfer=\"splice\"}")
            + v("streambox_fetch_file_sent_bytes_total{shard=\"0\",transfer=\"copy\"}"),
        0.0
    );
    assert!(v("streambox_batch_cache_bytes{shard=\"0\"}") > 0.0);
    // Requests by API and version, and the error codes answered.
    assert_eq!(
        v("streambox_requests_total{shard=\"0\",api=\"Produce\",version=\"9\"}"),
        4.0
    );
    assert_eq!(
        v("streambox_requests_total{shard=\"0\",api=\"Fetch\",version=\"12\"}"),
        2.0
    );
    assert_eq!(
        v("streambox_request_errors_total{shard=\"0\",api=\"Produce\",error_code=\"3\"}"),
        1.0
    );
    assert_eq!(
        v("streambox_request_errors_total{shard=\"0\",api=\"Fetch\",error_code=\"1\"}"),
        1.0
    );
    // Latency histograms per API and stage: every Produce in each stage's count.
    for stage in [
        "queue",
        "local",
        "remote",
        "response_queue",
        "send",
        "total",
    ] {
        let count = v(&format!(
            "streambox_request_latency_seconds_count{{api=\"Produce\",stage=\"{stage}\"}}"
        ));
        assert_eq!(count, 4.0, "{stage}");
        let inf = v(&format!(
            "streambox_request_latency_seconds_bucket{{le=\"+Inf\",api=\"Produce\",stage=\"{stage}\"}}"
        ));
        assert_eq!(inf, 4.0, "{stage}");
    }
    // flush_policy = always: every acknowledged produce waited for a write and an fdatasync.
    assert!(v("streambox_log_fdatasync_seconds_count{shard=\"0\"}") >= 3.0);
    assert!(v("streambox_log_direct_write_seconds_count{shard=\"0\"}") >= 3.0);
    assert_eq!(v("streambox_produce_append_records_count"), 3.0);
    assert_eq!(v("streambox_produce_append_records_sum"), 7.0);
    // Log size, segments and offsets.
    assert_eq!(
        v("streambox_log_size_bytes{topic=\"m\",partition=\"0\"}"),
        in_p0
    );
    assert_eq!(
        v("streambox_log_segments{topic=\"m\",partition=\"0\"}"),
        1.0
    );
    assert_eq!(
        v("streambox_log_end_offset{topic=\"m\",partition=\"0\"}"),
        6.0
    );
    assert_eq!(
        v("streambox_log_end_offset{topic=\"m\",partition=\"1\"}"),
        1.0
    );
    // The group committed 2 of 6.
    assert_eq!(
        v("streambox_consumer_group_lag{group=\"g\",topic=\"m\",partition=\"0\"}"),
        4.0
    );
    assert_eq!(
        v("streambox_consumer_group_topic_lag{group=\"g\",topic=\"m\"}"),
        4.0
    );
    // The client's connection (and the scrape's is not a Kafka connection).
    assert!(v("streambox_connections") >= 1.0);
    assert!(v("streambox_shard_connections{shard=\"0\"}") >= 1.0);
    let budget = v("streambox_memory_budget_bytes{shard=\"0\"}");
    assert_eq!(budget, (512u64 << 20) as f64);
    assert!(v("streambox_memory_peak_bytes{shard=\"0\"}") <= budget);
    // Not a cluster: no cluster series.
    assert!(!metrics
        .keys()
        .any(|k| k.starts_with("streambox_under_replicated")));

    let (_, headers, _) = get(metrics_addr, "/metrics");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("application/openmetrics-text"),
        "{headers}"
    );
    let (status, _, _) = get(metrics_addr, "/other");
    assert!(status.contains(" 404 "), "{status}");
    server.shutdown();
    // The listener closes once its accept thread sees the stop (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&metrics_addr, Duration::from_secs(1)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the endpoint stops with the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn per_partition_series_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(false, dir.path());
    let metrics_addr = server.metrics_addr().expect("metrics endpoint bound");
    let bootstrap = server.addr.to_string();
    broker::cli::topics_create(&bootstrap, "q", 3, -1, &[]).unwrap();
    let mut client = Client::connect(&bootstrap).unwrap();
    let batch = kafka_support::batch(&[b"x", b"y"]);
    for partition in 0..3 {
        assert_eq!(
            kafka_support::produce(&mut client, "q", partition, batch.clone()).0,
            0
        );
    }
    // The shard's partitions: 3 of q and those of __consumer_offsets.
    let metrics = scrape_until(metrics_addr, |m| {
        m.get("streambox_shard_log_size_bytes{shard=\"0\"}")
            .is_some_and(|&v| v >= (3 * batch.len()) as f64)
    });
    assert!(
        !metrics.keys().any(|k| k.contains("partition=")),
        "per-partition series are off"
    );
    assert_eq!(
        value(&metrics, "streambox_produce_records_total{shard=\"0\"}"),
        6.0
    );
    assert_eq!(
        value(&metrics, "streambox_shard_log_size_bytes{shard=\"0\"}"),
        (3 * batch.len()) as f64
    );
    assert!(value(&metrics, "streambox_shard_partitions{shard=\"0\"}") >= 3.0);
    server.shutdown();
}
