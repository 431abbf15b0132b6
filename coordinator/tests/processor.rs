//! Proves the sans-IO server core implements ZooKeeper's semantics (versions, sequential
//! names, ephemerals, multi atomicity, watches, session expiry, pipelined writes) by driving
//! `RequestProcessor` with encoded client frames and committing its proposals immediately,
//! as a standalone server with an instant log would. Frames count as written at once unless
//! a test plays a client that does not read (then the bound on unwritten bytes is checked).

use coordinator::data_tree::DataTree;
use coordinator::jute::codes::{create_mode, err, event, op, perms};
use coordinator::jute::records::{
    Acl, ConnectRequest, ConnectResponse, CreateRequest, MultiOp, ReplyHeader, Request,
    RequestHeader, Stat, WatcherEvent,
};
use coordinator::jute::{Reader, Writer};
use coordinator::request_processor::{Effect, Now, ProcessorConfig, RequestProcessor};

struct Harness {
    p: RequestProcessor,
    now: Now,
    /// Frames sent per connection, oldest first.
    frames: std::collections::HashMap<u64, Vec<Vec<u8>>>,
    closed: Vec<u64>,
    /// Proposals not committed yet (when `auto_commit` is off).
    held: Vec<(i64, Vec<u8>)>,
    auto_commit: bool,
    /// Report every sent frame written at once (a client that reads everything).
    auto_written: bool,
    /// Frames sent and not reported written, per connection, oldest first (when
    /// `auto_written` is off).
    unwritten: std::collections::HashMap<u64, std::collections::VecDeque<usize>>,
    /// Connections whose socket the processor asked not to read, now.
    reading_stopped: std::collections::BTreeSet<u64>,
    snapshots: usize,
}

impl Harness {
    fn new() -> Self {
        let now = Now {
            mono_ms: 1_000,
            wall_ms: 1_700_000_000_000,
        };
        let mut cfg = ProcessorConfig::for_tick(1, 100);
        cfg.snap_count = 50;
        Harness {
            p: RequestProcessor::new(cfg, DataTree::new(), now),
            now,
            frames: Default::default(),
            closed: vec![],
            held: vec![],
            auto_commit: true,
            auto_written: true,
            unwritten: Default::default(),
            reading_stopped: Default::default(),
            snapshots: 0,
        }
    }

    fn pump(&mut self) {
        loop {
            let effects = self.p.take_effects();
            if effects.is_empty() {
                return;
            }
            for e in effects {
                match e {
                    Effect::Send { conn, frame } => {
                        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
                        assert_eq!(len, frame.len() - 4, "frame length prefix");
                        self.frames
                            .entry(conn)
                            .or_default()
                            .push(frame[4..].to_vec());
                        if self.auto_written {
                            self.p.written(conn, frame.len());
                        } else {
                            self.unwritten
                                .entry(conn)
                                .or_default()
                                .push_back(frame.len());
                        }
                    }
                    Effect::StopReading { conn } => {
                        assert!(self.reading_stopped.insert(conn), "stopped twice");
                    }
                    Effect::ResumeReading { conn } => {
                        assert!(self.reading_stopped.remove(&conn), "resumed unstopped");
                    }
                    Effect::Close { conn } => self.closed.push(conn),
                    Effect::Propose { zxid, payload } => {
                        if self.auto_commit {
                            self.p.commit(zxid, &payload, self.now);
                        } else {
                            self.held.push((zxid, payload));
                        }
                    }
                    Effect::Forward { .. } => panic!("a standalone processor never forwards"),
                    Effect::Snapshot { image, .. } => {
                        let copy =
                            DataTree::deserialize(&image.serialize()).expect("snapshot reloads");
                        assert_eq!(copy.digest(), self.p.tree().digest());
                        self.snapshots += 1;
                    }
                }
            }
        }
    }

    fn release(&mut self) {
        for (zxid, payload) in std::mem::take(&mut self.held) {
            self.p.commit(zxid, &payload, self.now);
        }
        self.pump();
    }

    /// The client of `conn` reads `frames` of its oldest unwritten frames: the shell reports
    /// them written.
    fn write_out(&mut self, conn: u64, frames: usize) {
        for _ in 0..frames {
            let Some(len) = self.unwritten.get_mut(&conn).and_then(|q| q.pop_front()) else {
                return;
            };
            self.p.written(conn, len);
            self.pump();
        }
    }

    fn unwritten_bytes(&self, conn: u64) -> usize {
        self.unwritten.get(&conn).map_or(0, |q| q.iter().sum())
    }

    fn take(&mut self, conn: u64) -> Vec<Vec<u8>> {
        self.frames.remove(&conn).unwrap_or_default()
    }

    fn connect(&mut self, conn: u64, session_id: i64, passwd: Vec<u8>) -> ConnectResponse {
        self.p.open(conn, format!("127.0.0.1:{}", 40000 + conn));
        let mut w = Writer::new();
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 1000,
            session_id,
            passwd,
            read_only: Some(false),
        }
        .encode(&mut w);
        self.p.connect(conn, &w.bytes, self.now);
        self.pump();
        let frames = self.take(conn);
        assert_eq!(frames.len(), 1, "one connect response");
        ConnectResponse::decode(&frames[0]).unwrap()
    }

    fn send(&mut self, conn: u64, xid: i32, req: &Request) {
        let op_code = match req {
            Request::Create { op, .. } => *op,
            Request::Delete { .. } => op::DELETE,
            Request::Exists { .. } => op::EXISTS,
            Request::GetData { .. } => op::GET_DATA,
            Request::SetData { .. } => op::SET_DATA,
            Request::GetChildren { .. } => op::GET_CHILDREN,
            Request::GetChildren2 { .. } => op::GET_CHILDREN2,
            Request::Multi(_) => op::MULTI,
            Request::CloseSession => op::CLOSE_SESSION,
            Request::SetWatches { .. } => op::SET_WATCHES,
            Request::Ping => op::PING,
            Request::AddWatch { .. } => op::ADD_WATCH,
            Request::RemoveWatches { .. } => op::REMOVE_WATCHES,
            other => panic!("harness does not send {other:?}"),
        };
        let mut w = Writer::new();
        RequestHeader { xid, op: op_code }.encode(&mut w);
        req.encode(&mut w);
        self.p.request(conn, &w.bytes, self.now);
        self.pump();
    }

    /// Sends and returns (header, body) of the single reply.
    fn call(&mut self, conn: u64, req: Request) -> (ReplyHeader, Vec<u8>) {
        self.send(conn, 7, &req);
        let frames = self.take(conn);
        assert_eq!(frames.len(), 1, "one reply to {req:?}");
        let mut r = Reader::new(&frames[0]);
        let h = ReplyHeader::decode(&mut r).unwrap();
        (h, r.rest().to_vec())
    }

    fn create(&mut self, conn: u64, path: &str, flags: i32) -> Result<String, i32> {
        let (h, body) = self.call(conn, create_req(path, b"d", flags));
        if h.err != 0 {
            return Err(h.err);
        }
        Ok(Reader::new(&body).read_string().unwrap().to_owned())
    }

    fn stat(&mut self, conn: u64, path: &str) -> Option<Stat> {
        let (h, body) = self.call(
            conn,
            Request::Exists {
                path: path.into(),
                watch: false,
            },
        );
        (h.err == 0).then(|| Stat::decode(&mut Reader::new(&body)).unwrap())
    }
}

fn create_req(path: &str, data: &[u8], flags: i32) -> Request {
    Request::Create {
        op: op::CREATE,
        request: CreateRequest {
            path: path.into(),
            data: Some(data.to_vec()),
            acl: vec![Acl::world_anyone(perms::ALL)],
            flags,
            ttl_ms: None,
        },
    }
}

fn events(frames: &[Vec<u8>]) -> Vec<(i32, String)> {
    frames
        .iter()
        .filter_map(|f| {
            let mut r = Reader::new(f);
            let h = ReplyHeader::decode(&mut r).unwrap();
            (h.xid == -1).then(|| {
                let e = WatcherEvent::decode(&mut r).unwrap();
                (e.kind, e.path)
            })
        })
        .collect()
}

#[test]
fn versions_and_errors_follow_zookeeper() {
    let mut h = Harness::new();
    let resp = h.connect(1, 0, vec![0; 16]);
    assert_eq!(resp.timeout_ms, 1000);
    assert_ne!(resp.session_id, 0);
    assert_eq!(h.create(1, "/a", 0), Ok("/a".into()));
    assert_eq!(h.create(1, "/a", 0), Err(err::NODE_EXISTS));
    assert_eq!(h.create(1, "/x/y", 0), Err(err::NO_NODE));
    assert_eq!(h.create(1, "bad", 0), Err(err::BAD_ARGUMENTS));
    assert_eq!(h.create(1, "/a/", 0), Err(err::BAD_ARGUMENTS));
    assert_eq!(
        h.create(1, "/ttl", create_mode::PERSISTENT_WITH_TTL),
        Err(err::UNIMPLEMENTED)
    );
    let set = |v| Request::SetData {
        path: "/a".into(),
        data: Some(b"new".to_vec()),
        version: v,
    };
    assert_eq!(h.call(1, set(5)).0.err, err::BAD_VERSION);
    assert_eq!(h.call(1, set(0)).0.err, 0);
    assert_eq!(h.call(1, set(-1)).0.err, 0);
    let st = h.stat(1, "/a").unwrap();
    assert_eq!((st.version, st.data_length), (2, 3));
    assert!(st.mzxid > st.czxid);
    h.create(1, "/a/child", 0).unwrap();
    let del = |v| Request::Delete {
        path: "/a".into(),
        version: v,
    };
    assert_eq!(h.call(1, del(-1)).0.err, err::NOT_EMPTY);
    let (rh, body) = h.call(
        1,
        Request::GetChildren2 {
            path: "/a".into(),
            watch: false,
        },
    );
    assert_eq!(rh.err, 0);
    let mut r = Reader::new(&body);
    assert_eq!(r.read_string_vec().unwrap(), vec!["child".to_string()]);
    let parent = Stat::decode(&mut r).unwrap();
    assert_eq!((parent.num_children, parent.cversion), (1, 1));
    h.call(
        1,
        Request::Delete {
            path: "/a/child".into(),
            version: 0,
        },
    );
    assert_eq!(h.call(1, del(1)).0.err, err::BAD_VERSION);
    assert_eq!(h.call(1, del(2)).0.err, 0);
    assert!(h.stat(1, "/a").is_none());
}

#[test]
fn sequential_names_use_parent_cversion_with_ten_digits() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    h.create(1, "/q", 0).unwrap();
    h.create(1, "/q/plain", 0).unwrap();
    assert_eq!(
        h.create(1, "/q/item-", create_mode::PERSISTENT_SEQUENTIAL),
        Ok("/q/item-0000000001".into())
    );
    h.call(
        1,
        Request::Delete {
            path: "/q/plain".into(),
            version: -1,
        },
    );
    // Deletes do not reuse counters.
    assert_eq!(
        h.create(1, "/q/item-", create_mode::EPHEMERAL_SEQUENTIAL),
        Ok("/q/item-0000000002".into())
    );
    assert_eq!(
        h.create(1, "/q/", create_mode::PERSISTENT_SEQUENTIAL),
        Ok("/q/0000000003".into())
    );
}

#[test]
fn ephemerals_die_with_their_session_and_cannot_have_children() {
    let mut h = Harness::new();
    let s1 = h.connect(1, 0, vec![0; 16]);
    h.connect(2, 0, vec![0; 16]);
    h.create(1, "/e", create_mode::EPHEMERAL).unwrap();
    assert_eq!(h.create(1, "/e/c", 0), Err(err::NO_CHILDREN_FOR_EPHEMERALS));
    assert_eq!(h.stat(2, "/e").unwrap().ephemeral_owner, s1.session_id);
    // Session 2 watches the node; closing session 1 deletes it and fires the watch.
    h.call(
        2,
        Request::Exists {
            path: "/e".into(),
            watch: true,
        },
    );
    let (rh, _) = h.call(1, Request::CloseSession);
    assert_eq!(rh.err, 0);
    assert!(h.closed.contains(&1));
    assert_eq!(
        events(&h.take(2)),
        vec![(event::NODE_DELETED, "/e".to_string())]
    );
    assert!(h.stat(2, "/e").is_none());
    assert_eq!(h.p.tree().ephemeral_count(), 0);
}

#[test]
fn idle_sessions_expire_and_reconnect_checks_password() {
    let mut h = Harness::new();
    let s1 = h.connect(1, 0, vec![0; 16]);
    h.connect(2, 0, vec![0; 16]);
    h.create(1, "/gone", create_mode::EPHEMERAL).unwrap();
    // Reconnect with a wrong password: expired-session answer and the connection closes.
    let bad = h.connect(3, s1.session_id, vec![1; 16]);
    assert_eq!((bad.session_id, bad.timeout_ms), (0, 0));
    assert!(h.closed.contains(&3));
    // The right password moves the session to the new connection.
    let good = h.connect(4, s1.session_id, s1.passwd.clone());
    assert_eq!(good.session_id, s1.session_id);
    assert!(h.closed.contains(&1), "the old connection is closed");
    // Keep session 2 alive by pinging; session 1 goes silent.
    for _ in 0..30 {
        h.now.mono_ms += 100;
        h.send(2, -2, &Request::Ping);
        h.p.tick(h.now);
        h.pump();
        h.take(2);
    }
    assert!(h.stat(2, "/gone").is_none(), "ephemeral removed at expiry");
    assert!(h.p.tree().session(s1.session_id).is_none());
    assert!(h.closed.contains(&4));
    let again = h.connect(5, s1.session_id, s1.passwd);
    assert_eq!(again.timeout_ms, 0, "expired session cannot be resumed");
}

#[test]
fn multi_is_all_or_nothing() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    h.create(1, "/m", 0).unwrap();
    let before = h.p.tree().digest();
    let (rh, body) = h.call(
        1,
        Request::Multi(vec![
            MultiOp::Create {
                op: op::CREATE,
                request: CreateRequest {
                    path: "/m/1".into(),
                    data: Some(vec![]),
                    acl: vec![Acl::world_anyone(perms::ALL)],
                    flags: 0,
                    ttl_ms: None,
                },
            },
            MultiOp::Check {
                path: "/m".into(),
                version: 9,
            },
            MultiOp::Delete {
                path: "/m".into(),
                version: -1,
            },
        ]),
    );
    assert_eq!(rh.err, 0);
    let mut r = Reader::new(&body);
    let mut codes = vec![];
    loop {
        let (kind, done, e) = (
            r.read_i32().unwrap(),
            r.read_bool().unwrap(),
            r.read_i32().unwrap(),
        );
        if done {
            break;
        }
        assert_eq!(kind, op::ERROR);
        assert_eq!(r.read_i32().unwrap(), e);
        codes.push(e);
    }
    assert_eq!(codes, vec![0, err::BAD_VERSION, err::RUNTIME_INCONSISTENCY]);
    assert_eq!(h.p.tree().digest(), before, "failed multi changed nothing");
    assert!(h.stat(1, "/m/1").is_none());
    // The same multi with the right version applies every op (the delete fails: /m has a
    // child by then, so use setData instead).
    let (rh, body) = h.call(
        1,
        Request::Multi(vec![
            MultiOp::Create {
                op: op::CREATE,
                request: CreateRequest {
                    path: "/m/1".into(),
                    data: Some(vec![]),
                    acl: vec![Acl::world_anyone(perms::ALL)],
                    flags: 0,
                    ttl_ms: None,
                },
            },
            MultiOp::Check {
                path: "/m".into(),
                version: 0,
            },
            MultiOp::SetData {
                path: "/m/1".into(),
                data: Some(b"x".to_vec()),
                version: 0,
            },
        ]),
    );
    assert_eq!(rh.err, 0);
    let mut r = Reader::new(&body);
    assert_eq!(
        (
            r.read_i32().unwrap(),
            r.read_bool().unwrap(),
            r.read_i32().unwrap()
        ),
        (op::CREATE, false, 0)
    );
    assert_eq!(r.read_string().unwrap(), "/m/1");
    assert_eq!(h.stat(1, "/m/1").unwrap().version, 1);
}

#[test]
fn pipelined_writes_validate_against_pending_ones_and_replies_keep_order() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    h.auto_commit = false;
    h.send(1, 1, &create_req("/p", b"", 0));
    h.send(1, 2, &create_req("/p/c", b"", 0));
    h.send(
        1,
        3,
        &Request::GetData {
            path: "/p/c".into(),
            watch: false,
        },
    );
    h.send(1, 4, &create_req("/p", b"", 0));
    assert!(h.take(1).is_empty(), "nothing answered before commit");
    h.release();
    let frames = h.take(1);
    let got: Vec<(i32, i32)> = frames
        .iter()
        .map(|f| {
            let hd = ReplyHeader::decode(&mut Reader::new(f)).unwrap();
            (hd.xid, hd.err)
        })
        .collect();
    assert_eq!(got, vec![(1, 0), (2, 0), (3, 0), (4, err::NODE_EXISTS)]);
}

#[test]
fn watches_fire_once_and_before_the_writers_reply() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    h.create(1, "/w", 0).unwrap();
    h.call(
        1,
        Request::GetData {
            path: "/w".into(),
            watch: true,
        },
    );
    h.call(
        1,
        Request::GetChildren {
            path: "/w".into(),
            watch: true,
        },
    );
    h.send(1, 9, &create_req("/w/c", b"", 0));
    let frames = h.take(1);
    assert_eq!(
        events(&frames),
        vec![(event::NODE_CHILDREN_CHANGED, "/w".to_string())]
    );
    let last = ReplyHeader::decode(&mut Reader::new(frames.last().unwrap())).unwrap();
    assert_eq!(last.xid, 9, "the event precedes the reply");
    h.send(
        1,
        10,
        &Request::SetData {
            path: "/w".into(),
            data: Some(vec![]),
            version: -1,
        },
    );
    assert_eq!(
        events(&h.take(1)),
        vec![(event::NODE_DATA_CHANGED, "/w".to_string())]
    );
    h.send(
        1,
        11,
        &Request::SetData {
            path: "/w".into(),
            data: Some(vec![]),
            version: -1,
        },
    );
    assert!(events(&h.take(1)).is_empty(), "one-shot");
}

#[test]
fn set_watches_fires_for_changes_since_relative_zxid() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    h.create(1, "/s", 0).unwrap();
    let seen = h.p.tree().last_zxid();
    h.create(1, "/s/new", 0).unwrap();
    h.create(1, "/t", 0).unwrap();
    h.send(
        1,
        -8,
        &Request::SetWatches {
            watches: coordinator::jute::records::SetWatches {
                relative_zxid: seen,
                data: vec!["/s".into(), "/missing".into()],
                exist: vec!["/t".into(), "/nope".into()],
                child: vec!["/s".into()],
                ..Default::default()
            },
            v2: false,
        },
    );
    let mut got = events(&h.take(1));
    got.sort();
    assert_eq!(
        got,
        vec![
            (event::NODE_CREATED, "/t".to_string()),
            (event::NODE_DELETED, "/missing".to_string()),
            (event::NODE_CHILDREN_CHANGED, "/s".to_string()),
        ]
    );
    // /s data did not change: its watch is registered and fires on the next setData.
    h.send(
        1,
        5,
        &Request::SetData {
            path: "/s".into(),
            data: Some(vec![1]),
            version: -1,
        },
    );
    assert_eq!(
        events(&h.take(1)),
        vec![(event::NODE_DATA_CHANGED, "/s".to_string())]
    );
}

#[test]
fn snapshot_round_trips_the_tree() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    h.create(1, "/snap", 0).unwrap();
    for i in 0..60 {
        h.create(
            1,
            &format!("/snap/n{i}"),
            if i % 2 == 0 {
                0
            } else {
                create_mode::EPHEMERAL
            },
        )
        .unwrap();
    }
    assert!(h.snapshots >= 1, "snap_count=50 triggered a snapshot");
    let bytes = h.p.tree().serialize();
    let copy = DataTree::deserialize(&bytes).unwrap();
    assert_eq!(copy.digest(), h.p.tree().digest());
    assert_eq!(copy.node_count(), h.p.tree().node_count());
    assert_eq!(copy.ephemeral_count(), 30);
    assert_eq!(
        DataTree::deserialize(&copy.serialize()).unwrap().digest(),
        copy.digest()
    );
    for path in ["/", "/snap", "/zookeeper"] {
        let (a, b) = (copy.get(path).unwrap(), h.p.tree().get(path).unwrap());
        assert_eq!(a.stat(), b.stat(), "{path}");
        assert!(
            copy.children(path).eq(h.p.tree().children(path)),
            "{path} children"
        );
    }
    for cut in [0, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        assert!(DataTree::deserialize(&bytes[..cut]).is_err());
    }
}

#[test]
fn garbage_bodies_get_marshalling_error_and_unknown_ops_unimplemented() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    let mut w = Writer::new();
    RequestHeader {
        xid: 3,
        op: op::GET_DATA,
    }
    .encode(&mut w);
    w.bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x00]);
    h.p.request(1, &w.bytes, h.now);
    h.pump();
    let mut w = Writer::new();
    RequestHeader { xid: 4, op: 4242 }.encode(&mut w);
    h.p.request(1, &w.bytes, h.now);
    h.pump();
    let codes: Vec<(i32, i32)> = h
        .take(1)
        .iter()
        .map(|f| {
            let hd = ReplyHeader::decode(&mut Reader::new(f)).unwrap();
            (hd.xid, hd.err)
        })
        .collect();
    assert_eq!(
        codes,
        vec![(3, err::MARSHALLING_ERROR), (4, err::UNIMPLEMENTED)]
    );
    assert!(h.closed.is_empty());
}

#[test]
fn a_new_epoch_moves_zxids_to_its_high_half() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    h.create(1, "/e1", 0).unwrap();
    h.p.start_epoch(3);
    h.create(1, "/e2", 0).unwrap();
    assert_eq!(h.stat(1, "/e2").unwrap().czxid, (3i64 << 32) | 1);
    h.p.start_epoch(2);
    h.create(1, "/e3", 0).unwrap();
    assert_eq!(
        h.stat(1, "/e3").unwrap().czxid,
        (3i64 << 32) | 2,
        "older epochs are ignored"
    );
}

#[test]
fn requests_after_close_session_are_ignored_and_expired_answers_keep_order() {
    let mut h = Harness::new();
    let s1 = h.connect(1, 0, vec![0; 16]);
    h.create(1, "/o", 0).unwrap();
    h.auto_commit = false;
    // closeSession then a read pipelined behind it: only the close is answered.
    h.send(1, 5, &Request::CloseSession);
    h.send(
        1,
        6,
        &Request::GetData {
            path: "/o".into(),
            watch: true,
        },
    );
    h.release();
    let frames = h.take(1);
    let got: Vec<i32> = frames
        .iter()
        .map(|f| ReplyHeader::decode(&mut Reader::new(f)).unwrap().xid)
        .collect();
    assert_eq!(got, vec![5]);
    assert!(h.closed.contains(&1));
    assert!(h.p.tree().session(s1.session_id).is_none());

    // A write in flight, then the session expires: the write's answer and the
    // SESSION_EXPIRED for the next request come in request order.
    h.auto_commit = true;
    let s2 = h.connect(2, 0, vec![0; 16]);
    h.auto_commit = false;
    h.send(2, 1, &create_req("/o/x", b"", 0));
    h.now.mono_ms += 10_000;
    h.p.tick(h.now);
    h.pump();
    h.send(
        2,
        2,
        &Request::Exists {
            path: "/o".into(),
            watch: false,
        },
    );
    h.release();
    let got: Vec<(i32, i32)> = h
        .take(2)
        .iter()
        .map(|f| {
            let hd = ReplyHeader::decode(&mut Reader::new(f)).unwrap();
            (hd.xid, hd.err)
        })
        .collect();
    assert_eq!(got, vec![(1, 0), (2, err::SESSION_EXPIRED)]);
    assert!(h.p.tree().session(s2.session_id).is_none());
}

#[test]
fn null_data_stays_null_and_differs_from_empty() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    let mut req = create_req("/null", b"", 0);
    if let Request::Create { request, .. } = &mut req {
        request.data = None;
    }
    assert_eq!(h.call(1, req).0.err, 0);
    h.create(1, "/empty", 0).unwrap();
    let get = |h: &mut Harness, path: &str| {
        let (rh, body) = h.call(
            1,
            Request::GetData {
                path: path.into(),
                watch: false,
            },
        );
        assert_eq!(rh.err, 0);
        i32::from_be_bytes(body[..4].try_into().unwrap())
    };
    assert_eq!(
        get(&mut h, "/null"),
        -1,
        "null data is answered as a null buffer"
    );
    assert_eq!(get(&mut h, "/empty"), 1, "b\"d\" has length 1");
    let digest = h.p.tree().digest();
    let copy = DataTree::deserialize(&h.p.tree().serialize()).unwrap();
    assert_eq!(copy.digest(), digest);
    assert!(copy.get("/null").unwrap().data.is_none());
}

#[test]
fn a_connection_that_pipelines_without_limit_is_closed() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    h.auto_commit = false;
    h.send(1, 1, &create_req("/flood", b"", 0));
    for xid in 2..10_010 {
        h.send(
            1,
            xid,
            &Request::Exists {
                path: "/".into(),
                watch: false,
            },
        );
    }
    assert!(
        h.closed.contains(&1),
        "closed past max_queued_per_connection"
    );
}

/// The xids of the replies among `frames` (watch events, xid -1, left out).
fn reply_xids(frames: &[Vec<u8>]) -> Vec<i32> {
    frames
        .iter()
        .map(|f| ReplyHeader::decode(&mut Reader::new(f)).unwrap().xid)
        .filter(|&xid| xid != -1)
        .collect()
}

#[test]
fn a_client_that_does_not_read_holds_a_bounded_number_of_bytes() {
    // 64 KiB of data per answer, a 256 KiB bound: a client that pipelines 200 reads and
    // reads nothing has at most 256 KiB + one answer handed out for it, its socket is not
    // read meanwhile, and once it reads, every answer comes, in order, a write's reply
    // after the reads sent before it.
    const DATA_BYTES: usize = 64 << 10;
    const BOUND_BYTES: usize = 256 << 10;
    let mut h = Harness::new();
    let mut cfg = ProcessorConfig::for_tick(1, 100);
    cfg.connection_queue_bytes_max = BOUND_BYTES;
    h.p = RequestProcessor::new(cfg, DataTree::new(), h.now);
    h.connect(1, 0, vec![0; 16]);
    h.connect(2, 0, vec![0; 16]);
    h.send(1, 1, &create_req("/big", &vec![7u8; DATA_BYTES], 0));
    h.take(1);
    h.auto_written = false;
    let get = |path: &str| Request::GetData {
        path: path.into(),
        watch: false,
    };
    for xid in 2..202 {
        h.send(1, xid, &get("/big"));
    }
    h.send(1, 202, &create_req("/after", b"", 0));
    let answer_bytes = DATA_BYTES + 200;
    assert!(
        h.unwritten_bytes(1) <= BOUND_BYTES + answer_bytes,
        "{} bytes handed out for a client that reads nothing",
        h.unwritten_bytes(1)
    );
    assert!(h.unwritten_bytes(1) >= BOUND_BYTES, "the bound is used");
    assert!(h.reading_stopped.contains(&1), "its socket is not read");
    assert!(
        h.p.tree().get("/after").is_some(),
        "writes still commit while answers wait"
    );
    // Another connection is served as usual meanwhile.
    h.auto_written = true;
    let (rh, body) = h.call(2, get("/big"));
    assert_eq!((rh.err, body.len() > DATA_BYTES), (0, true));
    assert!(!h.reading_stopped.contains(&2));
    h.auto_written = false;
    // The client reads: the rest comes, the bound kept all the way.
    let mut xids = reply_xids(&h.take(1));
    while h.unwritten_bytes(1) > 0 {
        h.write_out(1, 1);
        assert!(h.unwritten_bytes(1) <= BOUND_BYTES + answer_bytes);
        xids.extend(reply_xids(&h.take(1)));
    }
    assert_eq!(
        xids,
        (2..=202).collect::<Vec<_>>(),
        "every answer, in order"
    );
    assert!(h.reading_stopped.is_empty(), "reading resumed");
    assert!(h.closed.is_empty());
}

#[test]
fn persistent_and_recursive_watches_keep_firing() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    h.connect(2, 0, vec![0; 16]);
    h.create(1, "/pw", 0).unwrap();
    for (path, mode) in [("/pw", 0), ("/pw", 1)] {
        let (rh, _) = h.call(
            2,
            Request::AddWatch {
                path: path.into(),
                mode,
            },
        );
        assert_eq!(rh.err, 0);
    }
    h.create(1, "/pw/a", 0).unwrap();
    h.create(1, "/pw/a/b", 0).unwrap();
    for _ in 0..2 {
        h.call(
            1,
            Request::SetData {
                path: "/pw/a/b".into(),
                data: Some(vec![1]),
                version: -1,
            },
        );
    }
    h.call(
        1,
        Request::SetData {
            path: "/pw".into(),
            data: None,
            version: -1,
        },
    );
    let got = events(&h.take(2));
    assert_eq!(
        got,
        vec![
            (event::NODE_CREATED, "/pw/a".to_string()),
            (event::NODE_CHILDREN_CHANGED, "/pw".to_string()),
            (event::NODE_CREATED, "/pw/a/b".to_string()),
            (event::NODE_DATA_CHANGED, "/pw/a/b".to_string()),
            (event::NODE_DATA_CHANGED, "/pw/a/b".to_string()),
            (event::NODE_DATA_CHANGED, "/pw".to_string()),
        ]
    );
    let (rh, _) = h.call(
        2,
        Request::RemoveWatches {
            path: "/pw".into(),
            kind: 5,
        },
    );
    assert_eq!(rh.err, 0);
    h.create(1, "/pw/c", 0).unwrap();
    assert_eq!(
        events(&h.take(2)),
        vec![(event::NODE_CHILDREN_CHANGED, "/pw".to_string())],
        "only the plain persistent watch is left"
    );
}

/// An image taken before later writes serializes the tree as it was when taken, however the
/// live tree changed meanwhile (copy on write of shared nodes), and the live tree is intact.
#[test]
fn tree_image_is_frozen_while_the_tree_changes() {
    let mut h = Harness::new();
    h.connect(1, 0, vec![0; 16]);
    h.create(1, "/img", 0).unwrap();
    for i in 0..10 {
        h.create(1, &format!("/img/n{i}"), 0).unwrap();
    }
    let image = h.p.tree().image();
    let digest_then = h.p.tree().digest();
    let count_then = h.p.tree().node_count();
    // Change the data of a shared node, add children to a shared parent, delete a node.
    h.send(
        1,
        100,
        &Request::SetData {
            path: "/img/n0".into(),
            data: Some(vec![7; 32]),
            version: -1,
        },
    );
    h.take(1);
    for i in 10..20 {
        h.create(1, &format!("/img/n{i}"), 0).unwrap();
    }
    h.send(
        1,
        101,
        &Request::Delete {
            path: "/img/n1".into(),
            version: -1,
        },
    );
    h.take(1);
    assert_ne!(h.p.tree().digest(), digest_then);
    let then = DataTree::deserialize(&image.serialize()).unwrap();
    assert_eq!(then.digest(), digest_then);
    assert_eq!(then.node_count(), count_then);
    assert_eq!(then.get("/img").unwrap().num_children(), 10);
    assert!(then.get("/img/n1").is_some() && then.get("/img/n15").is_none());
    let now = DataTree::deserialize(&h.p.tree().serialize()).unwrap();
    assert_eq!(now.digest(), h.p.tree().digest());
    assert_eq!(h.p.tree().get("/img").unwrap().num_children(), 19);
    assert_eq!(h.p.tree().children("/img").count(), 19);
    assert_eq!(h.p.tree().get("/img/n0").unwrap().data_len(), 32);
}
