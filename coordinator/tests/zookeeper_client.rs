//! Proves a real Rust ZooKeeper client (`zookeeper-client` 0.11) can use a standalone
//! coordinator for create/get/set/delete/children/sequential/ephemeral/multi/watches, by
//! starting the server in-process on a free loopback port in a temp dir and checking every
//! answer; the server is shut down at the end (also when an assertion fails).

mod support;

use std::time::Duration;

use support::Server;
use zookeeper_client as zk;

async fn connect(addr: &str) -> zk::Client {
    tokio::time::timeout(
        Duration::from_secs(10),
        zk::Client::connector()
            .with_session_timeout(Duration::from_secs(4))
            .connect(addr),
    )
    .await
    .expect("connect timed out")
    .expect("connect")
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_children_sequential_ephemeral_multi_and_watches() {
    let server = Server::start("4lw.commands.whitelist=*\n");
    let addr = server.addr();
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        let client = connect(&addr).await;

        // create / get / set / delete with versions.
        let (stat, _) = client.create("/app", b"v0", &persistent()).await.unwrap();
        assert_eq!(stat.version, 0);
        assert!(matches!(
            client.create("/app", b"", &persistent()).await,
            Err(zk::Error::NodeExists)
        ));
        let (data, stat) = client.get_data("/app").await.unwrap();
        assert_eq!((data.as_slice(), stat.version), (&b"v0"[..], 0));
        let stat = client.set_data("/app", b"v1", Some(0)).await.unwrap();
        assert_eq!(stat.version, 1);
        assert!(matches!(
            client.set_data("/app", b"v2", Some(0)).await,
            Err(zk::Error::BadVersion)
        ));
        assert!(matches!(
            client.get_data("/nope").await,
            Err(zk::Error::NoNode)
        ));
        assert!(client.check_stat("/nope").await.unwrap().is_none());

        // children and sequential names.
        for name in ["a", "b", "c"] {
            client
                .create(&format!("/app/{name}"), b"", &persistent())
                .await
                .unwrap();
        }
        let mut children = client.list_children("/app").await.unwrap();
        children.sort();
        assert_eq!(children, vec!["a", "b", "c"]);
        let (_, stat) = client.get_children("/app").await.unwrap();
        assert_eq!(stat.num_children, 3);
        let seq = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
        let (_, s1) = client.create("/app/job-", b"", &seq).await.unwrap();
        let (_, s2) = client.create("/app/job-", b"", &seq).await.unwrap();
        assert_eq!((s1.into_i64(), s2.into_i64()), (3, 4));
        assert!(client.get_data("/app/job-0000000004").await.is_ok());
        assert!(matches!(
            client.delete("/app", None).await,
            Err(zk::Error::NotEmpty)
        ));
        client.delete("/app/a", Some(0)).await.unwrap();

        // Watches: data, children, exists; each fires once, with the right type.
        let watcher_client = connect(&addr).await;
        let (_, _, data_watch) = watcher_client.get_and_watch_data("/app").await.unwrap();
        let (_, child_watch) = watcher_client
            .list_and_watch_children("/app")
            .await
            .unwrap();
        let (none, exist_watch) = watcher_client.check_and_watch_stat("/later").await.unwrap();
        assert!(none.is_none());
        client.set_data("/app", b"v2", None).await.unwrap();
        client.create("/app/d", b"", &persistent()).await.unwrap();
        client.create("/later", b"", &persistent()).await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(30), data_watch.changed())
            .await
            .unwrap();
        assert_eq!(ev.event_type, zk::EventType::NodeDataChanged);
        let ev = tokio::time::timeout(Duration::from_secs(30), child_watch.changed())
            .await
            .unwrap();
        assert_eq!(ev.event_type, zk::EventType::NodeChildrenChanged);
        let ev = tokio::time::timeout(Duration::from_secs(30), exist_watch.changed())
            .await
            .unwrap();
        assert_eq!(
            (ev.event_type, ev.path.as_str()),
            (zk::EventType::NodeCreated, "/later")
        );

        // Ephemerals vanish when their session closes, and a watcher hears it.
        let eph = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        let short = connect(&addr).await;
        short.create("/app/member", b"", &eph).await.unwrap();
        assert_eq!(
            short.list_ephemerals("/").await.unwrap(),
            vec!["/app/member"]
        );
        let (_, gone_watch) = watcher_client
            .check_and_watch_stat("/app/member")
            .await
            .unwrap();
        drop(short);
        let ev = tokio::time::timeout(Duration::from_secs(30), gone_watch.changed())
            .await
            .unwrap();
        assert_eq!(ev.event_type, zk::EventType::NodeDeleted);
        assert!(client.check_stat("/app/member").await.unwrap().is_none());

        // A persistent recursive watch (addWatch) hears every change below its path.
        let mut recursive = watcher_client
            .watch("/app", zk::AddWatchMode::PersistentRecursive)
            .await
            .unwrap();
        client.create("/app/r", b"", &persistent()).await.unwrap();
        client.set_data("/app/r", b"1", None).await.unwrap();
        client.set_data("/app/r", b"2", None).await.unwrap();
        for expected in [
            zk::EventType::NodeCreated,
            zk::EventType::NodeDataChanged,
            zk::EventType::NodeDataChanged,
        ] {
            let ev = tokio::time::timeout(Duration::from_secs(30), recursive.changed())
                .await
                .unwrap();
            assert_eq!((ev.event_type, ev.path.as_str()), (expected, "/app/r"));
        }
        drop(recursive); // sends removeWatches

        // multi: atomic failure leaves nothing, success applies everything.
        let mut txn = client.new_multi_writer();
        txn.add_create("/app/m1", b"", &persistent()).unwrap();
        txn.add_check_version("/app", 99).unwrap();
        match txn.commit().await {
            Err(zk::MultiWriteError::OperationFailed { index, source }) => {
                assert_eq!(index, 1);
                assert!(matches!(source, zk::Error::BadVersion));
            }
            other => panic!("expected a failed multi, got {other:?}"),
        }
        assert!(client.check_stat("/app/m1").await.unwrap().is_none());
        let mut txn = client.new_multi_writer();
        txn.add_create("/app/m1", b"x", &persistent()).unwrap();
        txn.add_set_data("/app/m1", b"y", Some(0)).unwrap();
        txn.add_delete("/app/b", None).unwrap();
        let results = txn.commit().await.unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(client.get_data("/app/m1").await.unwrap().0, b"y");
        assert!(client.check_stat("/app/b").await.unwrap().is_none());

        // multiRead and the other read-side calls.
        let mut reader = client.new_multi_reader();
        reader.add_get_data("/app/m1").unwrap();
        reader.add_get_children("/app").unwrap();
        reader.add_get_data("/missing").unwrap();
        let results = reader.commit().await.unwrap();
        assert_eq!(results.len(), 3);
        assert!(client.count_descendants_number("/app").await.unwrap() >= 4);
        client.sync("/app").await.unwrap();
        let (acls, _) = client.get_acl("/app").await.unwrap();
        assert_eq!(acls.len(), 1);
    })
    .await;
    drop(server);
    result.expect("test timed out");
}
