//! Proves three in-process coordinator servers configured like zoo.cfg with `server.N` lines
//! and `myid` form a ZAB ensemble that a real client (`zookeeper-client`) can use: writes made
//! through one server are read (after sync) through the others, watches registered on one
//! server fire for writes made through another, an ephemeral node vanishes everywhere when
//! its session closes, sequential names are unique across servers, and a stopped leader is
//! replaced while the data survives; and an observer line is refused with a clear error. Servers bind free loopback ports in temp dirs and are
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
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
        let ev = tokio::time::timeout(Duration::from_secs(5), data_watch.changed())
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
        let ev = tokio::time::timeout(Duration::from_secs(5), child_watch.changed())
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
        let ev = tokio::time::timeout(Duration::from_secs(10), gone_watch.changed())
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
