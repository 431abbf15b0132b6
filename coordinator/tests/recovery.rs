//! Proves a standalone server keeps every acknowledged write across restarts: with snapshots
//! every 100 transactions and the log after them, a restarted server on the same data dir
//! answers with the same nodes, versions and sequential counters, and its zxids continue
//! above the ones acknowledged before the restart. (Sessions surviving a
//! kill -9 are covered by tests/test_coordinator_kazoo.py.) How: start the server
//! in-process, write with the `zookeeper-client` crate, shut it down, start it again.

use std::time::Duration;

use coordinator::config::ZooConfig;
use coordinator::server::{self, ServerOptions};
use zookeeper_client as zk;

fn options(dir: &std::path::Path, port: u16) -> ServerOptions {
    let text = format!(
        "tickTime=200\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nsnapCount=100\n",
        dir.display()
    );
    ServerOptions::new(ZooConfig::parse(&text, std::path::Path::new("test.cfg")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_restarts_through_snapshots_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let first = server::start(options(dir.path(), 0)).unwrap();
    let addr = first.local_addr();
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let client = zk::Client::connect(&addr.to_string()).await.unwrap();
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let sequential = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
        client.create("/r", b"root", &persistent).await.unwrap();
        for i in 0..250 {
            client
                .create("/r/n-", format!("{i}").as_bytes(), &sequential)
                .await
                .unwrap();
        }
        let mut last = None;
        for _ in 0..3 {
            last = Some(client.set_data("/r", b"root", None).await.unwrap());
        }
        (client, last.map_or(0, |stat| stat.mzxid))
    })
    .await;
    let (client, last_zxid_before) = match outcome {
        Ok(c) => c,
        Err(_) => {
            first.shutdown();
            panic!("writes timed out");
        }
    };
    drop(client);
    first.shutdown();
    let snapshots = std::fs::read_dir(dir.path().join("zab"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("snapshot.")
        })
        .count();
    assert!(snapshots >= 1, "snapCount=100 wrote snapshots");

    // Same port, same data dir.
    let second = server::start(options(dir.path(), addr.port())).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let client = zk::Client::connect(&addr.to_string()).await.unwrap();
        let (children, stat) = client.get_children("/r").await.unwrap();
        assert_eq!(children.len(), 250);
        assert_eq!((stat.cversion, stat.num_children), (250, 250));
        let (data, stat) = client.get_data("/r").await.unwrap();
        assert_eq!((data.as_slice(), stat.version), (&b"root"[..], 3));
        assert_eq!(client.get_data("/r/n-0000000249").await.unwrap().0, b"249");
        let sequential = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
        let (stat, seq) = client.create("/r/n-", b"", &sequential).await.unwrap();
        assert_eq!(seq.into_i64(), 250, "the sequence counter continues");
        assert!(
            stat.czxid > last_zxid_before,
            "zxid {:#x} after the restart, {last_zxid_before:#x} before",
            stat.czxid
        );
    })
    .await;
    second.shutdown();
    outcome.expect("reads after restart timed out");
}
