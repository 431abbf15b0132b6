//! Proves three in-process coordinator servers configured like zoo.cfg with `server.N` lines
//! and `myid` form a ZAB ensemble that a real client (`zookeeper-client`) can use: writes made
//! through one server are read (after sync) through the others, watches registered on one
//! server fire for writes made through another, an ephemeral node vanishes everywhere when
//! its session closes, sequential names are unique across servers, and a stopped leader is
//! replaced while the data survives; that the seeds' recipes (lock, election, queue,
//! barrier) work with their clients on different servers; and an observer line is refused
//! with a clear error. Servers bind free loopback ports in temp dirs and are
//! shut down at the end, also when an assertion fails.

use std::net::TcpListener;
use std::time::Duration;

use coordinator::config::ZooConfig;
use coordinator::server::{self, ServerHandle, ServerOptions};
use zookeeper_client as zk;

struct Member {
    handle: Option<ServerHandle>,
    dir: tempfile::TempDir,
}

struct Ensemble {
    members: Vec<Member>,
    peer_ports: Vec<u16>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Ensemble {
    fn start(n: usize) -> Self {
        let peer_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut ens = Ensemble {
            members: Vec::new(),
            peer_ports,
        };
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            ens.members.push(Member { handle: None, dir });
            ens.launch(i);
        }
        ens
    }

    fn launch(&mut self, i: usize) {
        let dir = self.members[i].dir.path().to_owned();
        std::fs::write(dir.join("myid"), format!("{}\n", i + 1)).unwrap();
        let mut text = format!(
            "tickTime=200\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort=0\n\
             clientPortAddress=127.0.0.1\n4lw.commands.whitelist=*\n",
            dir.display()
        );
        for (j, port) in self.peer_ports.iter().enumerate() {
            text.push_str(&format!("server.{}=127.0.0.1:{port}:{}\n", j + 1, port + 1));
        }
        let cfg_path = dir.join("zoo.cfg");
        std::fs::write(&cfg_path, text).unwrap();
        let zoo = ZooConfig::load(&cfg_path).unwrap();
        self.members[i].handle = Some(server::start(ServerOptions::new(zoo)).unwrap());
    }

    fn addr(&self, i: usize) -> String {
        self.members[i]
            .handle
            .as_ref()
            .unwrap()
            .local_addr()
            .to_string()
    }

    fn stop(&mut self, i: usize) {
        if let Some(h) = self.members[i].handle.take() {
            h.shutdown();
        }
    }

    fn mode(&self, i: usize) -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(self.addr(i)) else {
            return String::new();
        };
        let _ = s.write_all(b"srvr");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .unwrap_or("")
            .to_owned()
    }

    fn leader(&self) -> Option<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].handle.is_some())
            .find(|&i| self.mode(i) == "leader")
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }
}

/// Connects once a leader is established (servers in election close new connections).
async fn connect(addr: &str) -> zk::Client {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(3),
            zk::Client::connector()
                .with_session_timeout(Duration::from_secs(4))
                .connect(addr),
        )
        .await;
        match attempt {
            Ok(Ok(c)) => return c,
            other if tokio::time::Instant::now() > deadline => {
                panic!("connect to {addr}: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_replicate_writes_watches_and_ephemerals() {
    let mut ens = Ensemble::start(3);
    let result = tokio::time::timeout(Duration::from_secs(90), async {
        let a = connect(&ens.addr(0)).await;
        let b = connect(&ens.addr(1)).await;
        let c = connect(&ens.addr(2)).await;

        // A write through one server is visible through the others after sync.
        a.create("/app", b"v1", &persistent()).await.unwrap();
        for client in [&b, &c] {
            client.sync("/app").await.unwrap();
            let (data, stat) = client.get_data("/app").await.unwrap();
            assert_eq!((data.as_slice(), stat.version), (&b"v1"[..], 0));
        }

        // A watch set through server 3 fires for a write through server 2.
        let (_, _, data_watch) = c.get_and_watch_data("/app").await.unwrap();
        let (_, child_watch) = a.list_and_watch_children("/app").await.unwrap();
        b.set_data("/app", b"v2", Some(0)).await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(30), data_watch.changed())
            .await
            .unwrap();
        assert_eq!(ev.event_type, zk::EventType::NodeDataChanged);
        assert_eq!(c.get_data("/app").await.unwrap().0, b"v2");
        // Versions are checked by the leader against the replicated tree.
        assert!(matches!(
            a.set_data("/app", b"v3", Some(0)).await,
            Err(zk::Error::BadVersion)
        ));

        // Sequential names from different servers never collide.
        let seq = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
        let mut names = Vec::new();
        for client in [&a, &b, &c, &a, &b, &c] {
            let (_, s) = client.create("/app/job-", b"", &seq).await.unwrap();
            names.push(s.into_i64());
        }
        let ev = tokio::time::timeout(Duration::from_secs(30), child_watch.changed())
            .await
            .unwrap();
        assert_eq!(ev.event_type, zk::EventType::NodeChildrenChanged);
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 6, "sequential names {names:?}");

        // An ephemeral created through server 1 vanishes everywhere when its session closes.
        let eph = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        let short = connect(&ens.addr(0)).await;
        short.create("/app/member", b"", &eph).await.unwrap();
        b.sync("/app").await.unwrap();
        let (stat, gone_watch) = b.check_and_watch_stat("/app/member").await.unwrap();
        assert!(stat.is_some());
        drop(short);
        let ev = tokio::time::timeout(Duration::from_secs(30), gone_watch.changed())
            .await
            .unwrap();
        assert_eq!(ev.event_type, zk::EventType::NodeDeleted);
        c.sync("/app").await.unwrap();
        assert!(c.check_stat("/app/member").await.unwrap().is_none());

        // Multi through a follower is atomic on every server.
        let mut txn = b.new_multi_writer();
        txn.add_create("/app/m1", b"x", &persistent()).unwrap();
        txn.add_set_data("/app/m1", b"y", Some(0)).unwrap();
        txn.commit().await.unwrap();
        a.sync("/app").await.unwrap();
        assert_eq!(a.get_data("/app/m1").await.unwrap().0, b"y");
        drop((a, b, c));

        // Stop the leader: the other two elect a new one and keep the data.
        let leader = ens.leader().expect("a leader");
        ens.stop(leader);
        let survivor = (leader + 1) % 3;
        let client = connect(&ens.addr(survivor)).await;
        client.create("/after", b"", &persistent()).await.unwrap();
        assert_eq!(client.get_data("/app").await.unwrap().0, b"v2");
        // The stopped server comes back and catches up.
        ens.launch(leader);
        let back = connect(&ens.addr(leader)).await;
        back.sync("/after").await.unwrap();
        assert!(back.check_stat("/after").await.unwrap().is_some());
        assert_eq!(back.get_data("/app/m1").await.unwrap().0, b"y");
    })
    .await;
    drop(ens);
    result.expect("test timed out");
}

/// The recipes of the seeds from Rust, each with its clients on different servers: a lock
/// (the crate's own recipe), a leader election and a queue built from ephemeral and
/// sequential nodes with watches, and a barrier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipes_work_with_clients_on_different_servers() {
    let ens = Ensemble::start(3);
    let result = tokio::time::timeout(Duration::from_secs(90), async {
        let a = connect(&ens.addr(0)).await;
        let b = connect(&ens.addr(1)).await;
        let c = connect(&ens.addr(2)).await;
        let acls = || {
            zk::LockOptions::new(zk::Acls::anyone_all())
                .with_ancestor_options(persistent())
                .unwrap()
        };

        // Lock: b waits while a holds it, and gets it once a releases.
        let prefix = || zk::LockPrefix::new_curator("/locks/l", "lock-").unwrap();
        let held = a.lock(prefix(), b"a", acls()).await.unwrap();
        let waiter = tokio::spawn(async move {
            let lock = b.lock(prefix(), b"b", acls()).await.unwrap();
            drop(lock); // releases it
            b
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "b got the lock while a held it");
        drop(held); // releases it
        let b = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("b never got the lock")
            .unwrap();

        // Election: the lowest ephemeral-sequential candidate leads; the next one watches
        // its predecessor and leads when that session ends.
        a.create("/election", b"", &persistent()).await.unwrap();
        let candidate = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        let first = connect(&ens.addr(0)).await;
        let (_, s1) = first
            .create("/election/n-", b"first", &candidate)
            .await
            .unwrap();
        let (_, s2) = c.create("/election/n-", b"c", &candidate).await.unwrap();
        assert!(s1.into_i64() < s2.into_i64());
        c.sync("/election").await.unwrap();
        let predecessor = format!("/election/n-{s1}");
        let (stat, leader_gone) = c.check_and_watch_stat(&predecessor).await.unwrap();
        assert!(stat.is_some(), "c sees the current leader");
        drop(first);
        let ev = tokio::time::timeout(Duration::from_secs(30), leader_gone.changed())
            .await
            .unwrap();
        assert_eq!(ev.event_type, zk::EventType::NodeDeleted);
        let mut candidates = c.list_children("/election").await.unwrap();
        candidates.sort();
        assert_eq!(candidates, vec![format!("n-{s2}")], "c now leads");

        // Queue: a producer on server 1, a consumer on server 3, FIFO by sequence number.
        a.create("/queue", b"", &persistent()).await.unwrap();
        let item = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
        for payload in [b"1", b"2", b"3"] {
            a.create("/queue/item-", payload, &item).await.unwrap();
        }
        c.sync("/queue").await.unwrap();
        let mut items = c.list_children("/queue").await.unwrap();
        items.sort();
        let mut consumed = Vec::new();
        for name in items {
            let path = format!("/queue/{name}");
            let (data, stat) = c.get_data(&path).await.unwrap();
            c.delete(&path, Some(stat.version)).await.unwrap();
            consumed.push(data);
        }
        assert_eq!(consumed, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
        b.sync("/queue").await.unwrap();
        assert!(b.list_children("/queue").await.unwrap().is_empty());

        // Barrier: waiters on servers 2 and 3 pass when it is removed through server 1.
        a.create("/barrier", b"", &persistent()).await.unwrap();
        let mut watches = Vec::new();
        for waiter in [&b, &c] {
            waiter.sync("/barrier").await.unwrap();
            let (stat, watch) = waiter.check_and_watch_stat("/barrier").await.unwrap();
            assert!(stat.is_some(), "the barrier is up");
            watches.push(watch);
        }
        a.delete("/barrier", None).await.unwrap();
        for watch in watches {
            let ev = tokio::time::timeout(Duration::from_secs(30), watch.changed())
                .await
                .unwrap();
            assert_eq!(ev.event_type, zk::EventType::NodeDeleted);
        }
    })
    .await;
    drop(ens);
    result.expect("test timed out");
}

#[test]
fn observers_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("myid"), "1\n").unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let text = format!(
        "dataDir={}\nclientPort=0\nclientPortAddress=127.0.0.1\n\
         server.1=127.0.0.1:{p1}:{}\nserver.2=127.0.0.1:{p2}:{}\n\
         server.3=127.0.0.1:{p3}:{}:observer\n",
        dir.path().display(),
        p1 + 1,
        p2 + 1,
        p3 + 1
    );
    let cfg_path = dir.path().join("zoo.cfg");
    std::fs::write(&cfg_path, text).unwrap();
    let zoo = ZooConfig::load(&cfg_path).unwrap();
    match server::start(ServerOptions::new(zoo)) {
        Ok(h) => {
            h.shutdown();
            panic!("an ensemble with an observer started");
        }
        Err(e) => assert!(e.to_string().contains("observer"), "{e}"),
    }
}
