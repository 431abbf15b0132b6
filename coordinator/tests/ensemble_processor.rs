//! Proves the request processor works as an ensemble member: writes from a follower's
//! client are forwarded, prepared by the leader's processor, committed everywhere and
//! answered on the follower; watches fire on every server; the leader expires sessions using
//! the followers' touch reports; sync on a follower answers after the leader's commit. How:
//! three processors and a fake in-order ZAB that feeds `Effect::Forward` payloads to the
//! leader's `forwarded` and commits the results on all three.

use std::collections::{HashMap, VecDeque};

use coordinator::data_tree::DataTree;
use coordinator::jute::codes::{create_mode, err, event, op, perms};
use coordinator::jute::records::{
    Acl, ConnectRequest, ConnectResponse, CreateRequest, ReplyHeader, Request, RequestHeader,
    WatcherEvent,
};
use coordinator::jute::{Reader, Writer};
use coordinator::request_processor::{Effect, Now, ProcessorConfig, RequestProcessor};

struct Cluster {
    servers: Vec<RequestProcessor>,
    leader: usize,
    now: Now,
    /// Forwarded payloads in arrival order (ZAB's FIFO to the leader).
    forwards: VecDeque<Vec<u8>>,
    last_zxid: i64,
    frames: HashMap<(usize, u64), Vec<Vec<u8>>>,
    closed: Vec<(usize, u64)>,
}

impl Cluster {
    fn new() -> Self {
        let now = Now {
            mono_ms: 1_000,
            wall_ms: 1_700_000_000_000,
        };
        let servers = (1..=3u8)
            .map(|id| {
                let mut cfg = ProcessorConfig::for_tick(id, 100);
                cfg.ensemble = true;
                RequestProcessor::new(cfg, DataTree::new(), now)
            })
            .collect();
        let mut c = Cluster {
            servers,
            leader: 0,
            now,
            forwards: VecDeque::new(),
            last_zxid: 0,
            frames: HashMap::new(),
            closed: vec![],
        };
        c.servers[0].set_leader(true, now);
        c
    }

    /// Runs effects and the fake ZAB until quiet.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.servers.len() {
                for e in self.servers[i].take_effects() {
                    progressed = true;
                    match e {
                        Effect::Send { conn, frame } => {
                            // Every client reads its answers at once.
                            self.servers[i].written(conn, frame.len());
                            self.frames
                                .entry((i, conn))
                                .or_default()
                                .push(frame[4..].to_vec())
                        }
                        Effect::StopReading { .. } | Effect::ResumeReading { .. } => {
                            panic!("no client here leaves its answers unread")
                        }
                        Effect::Close { conn } => self.closed.push((i, conn)),
                        Effect::Forward { payload } => self.forwards.push_back(payload),
                        Effect::Propose { .. } => panic!("ensemble members do not propose"),
                        Effect::Snapshot { .. } => {}
                    }
                }
            }
            while let Some(payload) = self.forwards.pop_front() {
                progressed = true;
                let now = self.now;
                if let Some(txn) = self.servers[self.leader].forwarded(&payload, now) {
                    self.last_zxid += 1;
                    for s in &mut self.servers {
                        s.commit(self.last_zxid, &txn, now);
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn take(&mut self, server: usize, conn: u64) -> Vec<Vec<u8>> {
        self.frames.remove(&(server, conn)).unwrap_or_default()
    }

    fn connect(&mut self, server: usize, conn: u64, session_id: i64) -> ConnectResponse {
        self.servers[server].open(conn, format!("127.0.0.1:{conn}"));
        let mut w = Writer::new();
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 1000,
            session_id,
            passwd: vec![0; 16],
            read_only: None,
        }
        .encode(&mut w);
        let now = self.now;
        self.servers[server].connect(conn, &w.bytes, now);
        self.pump();
        let frames = self.take(server, conn);
        assert_eq!(frames.len(), 1);
        ConnectResponse::decode(&frames[0]).unwrap()
    }

    fn send(&mut self, server: usize, conn: u64, xid: i32, op_code: i32, req: &Request) {
        let mut w = Writer::new();
        RequestHeader { xid, op: op_code }.encode(&mut w);
        req.encode(&mut w);
        let now = self.now;
        self.servers[server].request(conn, &w.bytes, now);
    }

    fn headers(frames: &[Vec<u8>]) -> Vec<(i32, i32)> {
        frames
            .iter()
            .map(|f| {
                let h = ReplyHeader::decode(&mut Reader::new(f)).unwrap();
                (h.xid, h.err)
            })
            .collect()
    }
}

fn create(path: &str, flags: i32) -> Request {
    Request::Create {
        op: op::CREATE,
        request: CreateRequest {
            path: path.into(),
            data: Some(b"d".to_vec()),
            acl: vec![Acl::world_anyone(perms::ALL)],
            flags,
            ttl_ms: None,
        },
    }
}

#[test]
fn follower_writes_are_prepared_by_the_leader_and_answered_locally() {
    let mut c = Cluster::new();
    c.connect(1, 10, 0);
    c.connect(0, 20, 0);
    // A watcher on the leader.
    c.send(
        0,
        20,
        1,
        op::EXISTS,
        &Request::Exists {
            path: "/a/b".into(),
            watch: true,
        },
    );
    c.pump();
    c.take(0, 20);
    // Pipelined on the follower: the second create needs the first (still uncommitted when
    // the leader validates it), the third must fail.
    c.send(1, 10, 1, op::CREATE, &create("/a", 0));
    c.send(1, 10, 2, op::CREATE, &create("/a/b", 0));
    c.send(1, 10, 3, op::CREATE, &create("/a", 0));
    c.send(1, 10, 4, op::SYNC, &Request::Sync { path: "/a".into() });
    c.pump();
    let frames = c.take(1, 10);
    assert_eq!(
        Cluster::headers(&frames),
        vec![(1, 0), (2, 0), (3, err::NODE_EXISTS), (4, 0)]
    );
    let mut r = Reader::new(&frames[3]);
    ReplyHeader::decode(&mut r).unwrap();
    assert_eq!(r.read_string().unwrap(), "/a", "sync echoes its path");
    let events = c.take(0, 20);
    let mut r = Reader::new(&events[0]);
    assert_eq!(ReplyHeader::decode(&mut r).unwrap().xid, -1);
    assert_eq!(
        WatcherEvent::decode(&mut r).unwrap().kind,
        event::NODE_CREATED
    );
    let digests: Vec<u64> = c.servers.iter().map(|s| s.tree().digest()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "replicas agree");
    // Losing the leader: the follower drops its clients so they retry elsewhere.
    c.servers[1].close_all_connections();
    c.pump();
    assert!(c.closed.contains(&(1, 10)));
}

#[test]
fn leader_expires_sessions_from_follower_touch_reports() {
    let mut c = Cluster::new();
    let alive = c.connect(1, 10, 0);
    let silent = c.connect(2, 30, 0);
    c.send(
        2,
        30,
        1,
        op::CREATE,
        &create("/silent", create_mode::EPHEMERAL),
    );
    c.send(
        1,
        10,
        1,
        op::CREATE,
        &create("/alive", create_mode::EPHEMERAL),
    );
    c.pump();
    for _ in 0..40 {
        c.now.mono_ms += 100;
        c.send(1, 10, -2, op::PING, &Request::Ping);
        let now = c.now;
        for s in &mut c.servers {
            s.tick(now);
        }
        c.pump();
        c.take(1, 10);
    }
    for s in &c.servers {
        assert!(s.tree().get("/silent").is_none(), "expired on every server");
        assert!(s.tree().get("/alive").is_some(), "touched session kept");
        assert!(s.tree().session(silent.session_id).is_none());
        assert!(s.tree().session(alive.session_id).is_some());
    }
    assert!(
        c.closed.contains(&(2, 30)),
        "the follower closed the expired connection"
    );
    // A new leader gives sessions a fresh timeout instead of expiring them at once.
    c.servers[0].set_leader(false, c.now);
    c.leader = 1;
    let now = c.now;
    c.servers[1].set_leader(true, now);
    c.now.mono_ms += 500;
    let now = c.now;
    c.servers[1].tick(now);
    c.pump();
    assert!(c.servers[1].tree().session(alive.session_id).is_some());
}
