//! Proves a standalone data dir of the earlier format (`version-2/`, `ZNTXLOG1` log and
//! `ZNSNAP01` snapshot) is converted at start: every znode, version, sequence counter and
//! the ephemeral of a live session are there, new zxids are above the old ones, the old
//! files are moved to `version-2.before-zab` and the conversion holds across a further
//! restart; and that files another program wrote are refused with a message naming the
//! file and what to do.
//!
//! The fixture `tests/fixtures/standalone-v2/version-2` was written by the coordinator of
//! commit 336bc75 (the last with the old standalone storage): zoo.cfg `snapCount=20`,
//! kazoo created `/conv` ("root"), 30 sequential children `/conv/seq-` with data "0".."29",
//! set `/conv` 3 times, created the ephemeral `/conv/eph` ("owner") with a 10 s session,
//! then the server was killed with SIGKILL. So it holds a snapshot at zxid 0x14 and the
//! log up to zxid 0x24 after it.

use std::path::Path;
use std::time::Duration;

use coordinator::config::ZooConfig;
use coordinator::server::{self, ServerHandle, ServerOptions, StartError};
use zookeeper_client as zk;

/// The last zxid of the fixture (the ephemeral's create).
const FIXTURE_LAST_ZXID: i64 = 0x24;

fn copy_fixture(data_dir: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/standalone-v2/version-2");
    let to = data_dir.join("version-2");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn start(data_dir: &Path, port: u16) -> Result<ServerHandle, StartError> {
    let text = format!(
        "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n",
        data_dir.display()
    );
    server::start(ServerOptions::new(
        ZooConfig::parse(&text, Path::new("test.cfg")).unwrap(),
    ))
}

/// Runs `check` against a started server; the server is shut down whatever happens (the
/// guard's drop also runs when an assertion in `check` panics).
async fn with_server<F, Fut>(handle: ServerHandle, check: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    struct Guard(Option<ServerHandle>);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(h) = self.0.take() {
                h.shutdown();
            }
        }
    }
    let addr = handle.local_addr().to_string();
    let _guard = Guard(Some(handle));
    tokio::time::timeout(Duration::from_secs(60), check(addr))
        .await
        .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_standalone_data_dir_is_converted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let first = start(dir.path(), 0).unwrap();
    let port = first.local_addr().port();
    assert!(
        !dir.path().join("version-2").exists(),
        "old dir moved aside"
    );
    let aside = dir.path().join("version-2.before-zab");
    assert!(
        aside.join("log.0000000000000016").is_file(),
        "old files kept"
    );
    assert!(dir
        .path()
        .join(format!("zab/snapshot.{FIXTURE_LAST_ZXID:016x}"))
        .is_file());
    with_server(first, |addr| async move {
        let client = zk::Client::connect(&addr).await.unwrap();
        let (data, stat) = client.get_data("/conv").await.unwrap();
        assert_eq!((data.as_slice(), stat.version), (&b"root"[..], 3));
        let (mut children, stat) = client.get_children("/conv").await.unwrap();
        assert_eq!((stat.num_children, stat.cversion), (31, 31));
        children.sort();
        assert_eq!(children[0], "eph");
        assert_eq!(children[30], "seq-0000000029");
        assert_eq!(
            client.get_data("/conv/seq-0000000029").await.unwrap().0,
            b"29"
        );
        let (owner, eph) = client.get_data("/conv/eph").await.unwrap();
        assert_eq!(owner, b"owner");
        assert_ne!(
            eph.ephemeral_owner, 0,
            "the session's ephemeral is restored"
        );
        let sequential = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
        let (stat, seq) = client.create("/conv/seq-", b"", &sequential).await.unwrap();
        assert_eq!(seq.into_i64(), 31, "the sequence counter continues");
        assert!(stat.czxid > FIXTURE_LAST_ZXID, "zxid {:#x}", stat.czxid);
    })
    .await;

    // A second start reads ZAB's files only and keeps the write made after the conversion.
    let second = start(dir.path(), port).unwrap();
    assert!(!dir.path().join("version-2.before-zab.1").exists());
    with_server(second, |addr| async move {
        let client = zk::Client::connect(&addr).await.unwrap();
        let (_, stat) = client.get_children("/conv").await.unwrap();
        assert_eq!(stat.num_children, 32);
        assert!(client.get_data("/conv/seq-0000000031").await.is_ok());
    })
    .await;
}

#[test]
fn files_of_another_program_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("version-2");
    std::fs::create_dir_all(&old).unwrap();
    // Apache ZooKeeper's own transaction log starts with "ZKLG".
    std::fs::write(old.join("log.100000001"), b"ZKLG\0\0\0\x02\0\0\0\0\0\0\0\0").unwrap();
    let err = match start(dir.path(), 0) {
        Ok(handle) => {
            handle.shutdown();
            panic!("a foreign data dir was accepted");
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains("log.100000001"), "{err}");
    assert!(err.contains("move"), "{err}");
    assert!(old.is_dir(), "nothing moved on refusal");
    assert!(
        !dir.path().join("zab").exists(),
        "nothing written on refusal"
    );
}
