//! Proves the Prometheus endpoint (`metricsProvider.className=...PrometheusMetricsProvider`)
//! serves ZooKeeper's metrics and that they count what a client did: a standalone server
//! in-process with the endpoint on a free loopback port, the `zookeeper-client` crate makes
//! a known number of creates, sets and reads, and two scrapes over plain HTTP (before and
//! after) must differ by exactly that load; histograms keep `+Inf` equal to `_count`, a
//! snapshot is timed, other paths and methods are refused, and `exportJvmInfo=false` drops
//! the process metrics.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::Server;
use zookeeper_client as zk;

const PROMETHEUS: &str = "metricsProvider.className=\
    org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider\n\
    metricsProvider.httpHost=127.0.0.1\nmetricsProvider.httpPort=0\n";

/// The status code, headers and body of one HTTP/1.0 request.
fn http(addr: &str, method: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_owned(), body.to_owned())
}

/// The status code of an answer's head (`HTTP/1.x CODE ...`).
fn status(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("")
}

/// Every sample of a scrape, `name{labels}` -> value; checks each family has a TYPE line.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (head, body) = http(addr, "GET", "/metrics");
    assert_eq!(status(&head), "200", "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut samples = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.rsplit_once(' ').expect("`name value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        assert!(
            samples.insert(key.to_owned(), value).is_none(),
            "twice: {line}"
        );
    }
    for family in ["znode_count", "readlatency", "commit_count", "fsynctime"] {
        assert!(
            body.contains(&format!("# TYPE {family}")),
            "{family}: {body}"
        );
    }
    samples
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {samples:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_load_a_client_sent() {
    let server = Server::start(&format!("snapCount=20\n{PROMETHEUS}"));
    let metrics = server.metrics_addr();
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(4))
            .connect(&server.addr()),
    )
    .await
    .expect("connect timed out")
    .expect("connect");
    let before = scrape(&metrics);
    let (creates, sets, reads) = (25, 10, 7);
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    for i in 0..creates {
        client
            .create(&format!("/m{i}"), b"0123456789", &persistent)
            .await
            .unwrap();
    }
    for i in 0..sets {
        client.set_data("/m0", &[b'x'; 20], None).await.unwrap();
        let _ = i;
    }
    for i in 0..reads {
        client.get_data(&format!("/m{i}")).await.unwrap();
    }
    let after = scrape(&metrics);
    let grew = |key: &str| value(&after, key) - value(&before, key);
    assert_eq!(grew("znode_count"), creates as f64);
    assert_eq!(grew("commit_count_total"), (creates + sets) as f64);
    assert_eq!(grew("updatelatency_count"), (creates + sets) as f64);
    assert_eq!(grew("readlatency_count"), reads as f64);
    assert!(grew("packets_received") >= (creates + sets + reads) as f64);
    assert!(grew("packets_sent") >= (creates + sets + reads) as f64);
    assert!(grew("fsynctime_count") >= 1.0, "every write was fsynced");
    assert!(
        grew("approximate_data_size") >= (creates * 10 + 10) as f64,
        "paths and data count"
    );
    assert_eq!(value(&after, "num_alive_connections"), 1.0);
    assert_eq!(value(&after, "global_sessions"), 1.0);
    for h in ["readlatency", "updatelatency", "fsynctime"] {
        assert_eq!(
            value(&after, &format!("{h}_bucket{{le=\"+Inf\"}}")),
            value(&after, &format!("{h}_count")),
            "{h}"
        );
    }
    assert!(value(&after, "process_resident_memory_bytes") > 0.0);
    assert!(value(&after, "process_start_time_seconds") > 1.7e9);

    // snapCount=20: the 35 writes crossed it; the snapshot thread's time shows up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while value(&scrape(&metrics), "snapshottime_count") < 1.0 {
        assert!(Instant::now() < deadline, "no snapshot timed");
        std::thread::sleep(Duration::from_millis(50));
    }

    assert_eq!(status(&http(&metrics, "GET", "/other").0), "404");
    assert_eq!(status(&http(&metrics, "POST", "/metrics").0), "405");
    drop(client);
}

#[test]
fn export_jvm_info_false_leaves_out_the_process_metrics() {
    let server = Server::start(&format!(
        "{PROMETHEUS}metricsProvider.exportJvmInfo=false\n"
    ));
    let samples = scrape(&server.metrics_addr());
    assert!(samples.contains_key("znode_count"));
    assert!(
        !samples.keys().any(|k| k.starts_with("process_")),
        "{samples:?}"
    );
}
