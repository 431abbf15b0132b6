//! The sans-IO server core: client requests and committed transactions in, frames to send,
//! connections to close and transactions to replicate out.
//!
//! It owns the data tree, the outstanding-changes overlay, session liveness and watches, and
//! decides everything a ZooKeeper server decides; the IO shell only moves bytes and time.
//!
//! * A read is answered from the committed tree, but only after every earlier request of the
//!   same connection has been answered (each connection has a FIFO queue), so a client always
//!   reads its own writes.
//! * A write is validated (see [`crate::pending_changes`]), turned into a [`Txn`] with the next
//!   zxid and handed out as [`Effect::Propose`]. Whatever replicates it (the local transaction
//!   log when standalone, ZAB in an ensemble) calls [`RequestProcessor::commit`] in zxid order;
//!   the processor applies it, sends the watch notifications it triggers, then the reply.
//!   Because notifications and replies leave through the same per-connection frame stream, a
//!   client sees a watch event before any later response.
//! * Session expiry runs on [`RequestProcessor::tick`] and is itself a transaction
//!   (close-session), so every replica deletes the same ephemerals at the same zxid.
//! * Outgoing bytes are bounded per connection: the processor counts the bytes of the frames
//!   it hands out and the shell reports the bytes it wrote ([`RequestProcessor::written`]).
//!   Past `connection_queue_bytes_max` unwritten bytes (a client that does not read its
//!   answers) reads wait in the connection's queue instead of being answered, and the shell
//!   is told to stop reading the socket ([`Effect::StopReading`]) until the client catches
//!   up ([`Effect::ResumeReading`]); so such a client holds at most about that many bytes
//!   of answers (plus one answer) whatever it pipelines.
//!
//! Time comes in as [`Now`]: a monotonic clock for expiry and latency, a wall clock for znode
//! timestamps (which travel inside the transaction).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use crate::acl::{self, AuthId, AUTH_IDS_PER_CONNECTION_MAX};
use crate::data_tree::{create_returns_stat, validate_path, DataTree, TreeImage, TxnResult};
use crate::jute::codes::{add_watch_mode, err, event, op, perms, watcher_type, xid};
use crate::jute::records::{
    write_acl_vec, write_multi_header, ConnectRequest, ConnectResponse, ReplyHeader, Request,
    RequestHeader, SetWatches, WatcherEvent,
};
use crate::jute::{Reader, Writer};
use crate::metrics::Histogram;
use crate::pending_changes::{PendingChanges, WriteRequest};
use crate::session::{
    expiry_interval_ms, negotiate_timeout_ms, SessionIdGenerator, SessionTracker,
};
use crate::txn::{ForwardedRequest, Txn, TxnBody, TxnHeader};
use crate::watch::{ConnId, WatchKind, WatchManager};

/// The clock readings an event happened at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (expiry, latency).
    pub mono_ms: u64,
    /// Wall-clock milliseconds since the Unix epoch (znode ctime/mtime).
    pub wall_ms: i64,
}

/// What the IO shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Write a complete frame (length prefix included) to the connection.
    Send { conn: ConnId, frame: Vec<u8> },
    /// Close the connection after the frames already handed out for it are written.
    Close { conn: ConnId },
    /// The connection holds `connection_queue_bytes_max` unwritten bytes or more: stop
    /// reading its socket (its client feels TCP back-pressure) until [`Effect::ResumeReading`].
    StopReading { conn: ConnId },
    /// The connection's unwritten bytes fell below the bound again: read its socket.
    ResumeReading { conn: ConnId },
    /// Standalone: make durable; call [`RequestProcessor::commit`] when it is.
    Propose { zxid: i64, payload: Vec<u8> },
    /// Ensemble: hand to the ZAB leader, whose processor turns it into a transaction with
    /// [`RequestProcessor::forwarded`]; ZAB then commits it on every server.
    Forward { payload: Vec<u8> },
    /// Enough transactions were applied since the last snapshot: persist `image` (the tree
    /// frozen at `zxid`; serialize it off the core thread).
    Snapshot { zxid: i64, image: TreeImage },
}

/// Settings of the core (from zoo.cfg).
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub server_id: u8,
    pub tick_ms: u32,
    pub min_session_timeout_ms: u32,
    pub max_session_timeout_ms: u32,
    /// Applied transactions between snapshots (ZooKeeper's `snapCount`).
    pub snap_count: u64,
    /// Proposed-but-uncommitted transactions past which the shell stops reading requests
    /// ([`RequestProcessor::accepting_requests`]; ZooKeeper's `globalOutstandingLimit`).
    pub max_outstanding_requests: usize,
    /// Part of a ZAB ensemble: writes leave as [`Effect::Forward`] and only the leader
    /// expires sessions. False: standalone, this processor is its own proposer.
    pub ensemble: bool,
    /// Requests one connection may have waiting (behind its uncommitted writes, or behind
    /// answers it does not read) before it is closed; bounds the memory a client that
    /// pipelines without limit can take.
    pub max_queued_per_connection: usize,
    /// Bytes handed out for one connection and not yet reported written, past which its
    /// reads wait and its socket is not read (zoo.cfg `connectionQueueBytesMax`).
    pub connection_queue_bytes_max: usize,
    /// `USER:BASE64(SHA1(USER:PASSWORD))` of the super user (zoo.cfg
    /// `DigestAuthenticationProvider.superDigest`): a connection that proves it passes every
    /// ACL check.
    pub super_digest: Option<String>,
}

impl ProcessorConfig {
    pub fn for_tick(server_id: u8, tick_ms: u32) -> Self {
        ProcessorConfig {
            server_id,
            tick_ms,
            min_session_timeout_ms: tick_ms * 2,
            max_session_timeout_ms: tick_ms * 20,
            snap_count: 100_000,
            max_outstanding_requests: 1000,
            ensemble: false,
            max_queued_per_connection: 10_000,
            connection_queue_bytes_max: crate::config::DEFAULT_CONNECTION_QUEUE_BYTES_MAX as usize,
            super_digest: None,
        }
    }
}

#[derive(Debug)]
enum Queued {
    /// A write (or closeSession, or an ensemble sync) whose transaction is not applied
    /// yet; matched with it by xid and opcode.
    Write {
        xid: i32,
        op: i32,
        /// The path to echo when the write is a sync.
        sync_path: Option<String>,
        received_ms: u64,
    },
    /// A write whose transaction is applied, its reply made: it waits for the reads ahead
    /// of it, held back while the connection's answers are not read.
    Answered { frame: Vec<u8> },
    /// A read (or control request) waiting for earlier writes of the connection, or for
    /// its client to read earlier answers.
    Read {
        xid: i32,
        request: Request,
        received_ms: u64,
    },
    /// An error answer that must keep its place in the connection's order; `close` ends
    /// the connection after it (an expired session).
    Fail { xid: i32, err: i32, close: bool },
}

#[derive(Debug)]
struct Conn {
    remote: String,
    /// The peer's address, when `remote` is one (`ip:` identity, `addauth ip`).
    remote_ip: Option<IpAddr>,
    /// The identities the connection holds: `ip:<address>` from the start, then what
    /// `addauth` proved (at most [`AUTH_IDS_PER_CONNECTION_MAX`]).
    auth: Vec<AuthId>,
    session_id: Option<i64>,
    /// Requests that arrived after the connect request and before its session was created
    /// (clients send `addauth` and setWatches right behind it); handled, in order, after the
    /// connect response. At most `max_queued_per_connection`.
    early: Vec<Vec<u8>>,
    queue: VecDeque<Queued>,
    closing: bool,
    /// closeSession was sent: later requests on this connection are ignored, as ZooKeeper
    /// closes the connection right after answering it.
    close_requested: bool,
    packets_received: u64,
    packets_sent: u64,
    /// Bytes of frames handed out for this connection that the shell has not reported
    /// written yet.
    unwritten_bytes: usize,
}

impl Conn {
    fn congested(&self, bytes_max: usize) -> bool {
        self.unwritten_bytes >= bytes_max
    }
}

/// Counters for the four-letter words and `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct ServerStats {
    pub packets_received: u64,
    pub packets_sent: u64,
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    pub latency_total_ms: u64,
    pub latency_count: u64,
    /// Reads answered (pings excluded), from arrival to answer (ZooKeeper's `readlatency`).
    pub read_latency: Histogram,
    /// Writes of this server's clients, from arrival to answer after commit (ZooKeeper's
    /// `updatelatency`).
    pub update_latency: Histogram,
    /// Transactions committed and applied.
    pub commits: u64,
}

impl ServerStats {
    fn record_latency(&mut self, ms: u64) {
        if self.latency_count == 0 || ms < self.latency_min_ms {
            self.latency_min_ms = ms;
        }
        self.latency_max_ms = self.latency_max_ms.max(ms);
        self.latency_total_ms += ms;
        self.latency_count += 1;
    }

    pub fn latency_avg_ms(&self) -> f64 {
        if self.latency_count == 0 {
            0.0
        } else {
            self.latency_total_ms as f64 / self.latency_count as f64
        }
    }
}

pub struct RequestProcessor {
    cfg: ProcessorConfig,
    tree: DataTree,
    pending: PendingChanges,
    sessions: SessionTracker,
    watches: WatchManager,
    id_gen: SessionIdGenerator,
    conns: HashMap<ConnId, Conn>,
    /// Which connection currently carries a session.
    session_conn: HashMap<i64, ConnId>,
    /// Connections waiting for their create-session transaction, by session id.
    connecting: HashMap<i64, (ConnId, bool)>,
    last_proposed_zxid: i64,
    /// Ensemble: this server leads (it expires sessions and prepares forwarded writes).
    is_leader: bool,
    /// Ensemble follower: sessions with activity since the last touch report.
    touched: BTreeSet<i64>,
    applied_since_snapshot: u64,
    stats: ServerStats,
    /// The latest monotonic time given to a call (what a read answered from `written`,
    /// which carries no time, is measured against).
    clock_ms: u64,
    out: Vec<Effect>,
}

fn frame(header: ReplyHeader, body: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::frame();
    header.encode(&mut w);
    if header.err == err::OK {
        body(&mut w);
    }
    w.finish_frame()
}

impl RequestProcessor {
    /// A processor over `tree` (fresh, or recovered from snapshot + log). Sessions found in
    /// the tree get a full timeout from `now`, as ZooKeeper does after a restart.
    pub fn new(cfg: ProcessorConfig, tree: DataTree, now: Now) -> Self {
        let mut sessions = SessionTracker::new(expiry_interval_ms(cfg.tick_ms as u64));
        for (id, s) in tree.sessions() {
            sessions.add(id, s.timeout_ms as u64, now.mono_ms);
        }
        RequestProcessor {
            id_gen: SessionIdGenerator::new(cfg.server_id, now.wall_ms.max(0) as u64),
            last_proposed_zxid: tree.last_zxid(),
            cfg,
            tree,
            pending: PendingChanges::default(),
            sessions,
            watches: WatchManager::default(),
            conns: HashMap::new(),
            session_conn: HashMap::new(),
            connecting: HashMap::new(),
            is_leader: false,
            touched: BTreeSet::new(),
            applied_since_snapshot: 0,
            stats: ServerStats::default(),
            clock_ms: now.mono_ms,
            out: Vec::new(),
        }
    }

    /// Takes the effects produced since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.out)
    }

    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Proposed transactions not yet committed.
    pub fn outstanding(&self) -> usize {
        let (proposed, applied) = (self.last_proposed_zxid, self.tree.last_zxid());
        if proposed >> 32 != applied >> 32 {
            // A new ZAB epoch started (`start_epoch`): its proposals count from 1.
            (proposed & 0xffff_ffff) as usize
        } else {
            (proposed - applied).max(0) as usize
        }
    }

    /// False while too many proposals wait for commit: the shell should feed only commits
    /// (and timers) until this turns true, leaving client bytes in the socket buffers.
    pub fn accepting_requests(&self) -> bool {
        self.outstanding() < self.cfg.max_outstanding_requests
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub fn watch_count(&self) -> usize {
        self.watches.count()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Per-connection lines for the `stat`/`cons` words: remote, packets in/out, queued.
    pub fn connection_lines(&self) -> Vec<String> {
        let mut lines: Vec<_> = self
            .conns
            .values()
            .map(|c| {
                format!(
                    " /{}[1](queued={},recved={},sent={})",
                    c.remote,
                    c.queue.len(),
                    c.packets_received,
                    c.packets_sent
                )
            })
            .collect();
        lines.sort();
        lines
    }

    fn send(&mut self, conn: ConnId, frame: Vec<u8>) {
        let bytes_max = self.cfg.connection_queue_bytes_max;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.packets_sent += 1;
            self.stats.packets_sent += 1;
            let was_congested = c.congested(bytes_max);
            c.unwritten_bytes += frame.len();
            self.out.push(Effect::Send { conn, frame });
            if !was_congested && c.congested(bytes_max) {
                self.out.push(Effect::StopReading { conn });
            }
        }
    }

    /// The shell wrote `bytes` of the frames handed out for `conn` to its socket. Reads held
    /// back while the connection was congested are answered once it is not.
    pub fn written(&mut self, conn: ConnId, bytes: usize) {
        let bytes_max = self.cfg.connection_queue_bytes_max;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let was_congested = c.congested(bytes_max);
        debug_assert!(
            bytes <= c.unwritten_bytes,
            "connection {conn}: {bytes} bytes written of {} handed out",
            c.unwritten_bytes
        );
        c.unwritten_bytes = c.unwritten_bytes.saturating_sub(bytes);
        if was_congested && !c.congested(bytes_max) {
            self.out.push(Effect::ResumeReading { conn });
            self.drain(conn);
        }
    }

    /// The unwritten bytes of the connection that has the most now (`mntr` reports it).
    pub fn largest_connection_queue_bytes(&self) -> usize {
        self.conns
            .values()
            .map(|c| c.unwritten_bytes)
            .max()
            .unwrap_or(0)
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.closing {
                c.closing = true;
                self.out.push(Effect::Close { conn });
            }
        }
    }

    /// A connection was accepted.
    pub fn open(&mut self, conn: ConnId, remote: String) {
        let remote_ip = remote.parse::<SocketAddr>().ok().map(|a| a.ip());
        let auth = remote_ip
            .map(|ip| AuthId::new("ip", &ip.to_string()))
            .into_iter()
            .collect();
        self.conns.insert(
            conn,
            Conn {
                remote,
                remote_ip,
                auth,
                session_id: None,
                early: Vec::new(),
                queue: VecDeque::new(),
                closing: false,
                close_requested: false,
                packets_received: 0,
                packets_sent: 0,
                unwritten_bytes: 0,
            },
        );
    }

    /// An identity the transport proved for a connection (a verified TLS client
    /// certificate: `x509:<subject>`), held like one from `addauth`.
    pub fn add_connection_identity(&mut self, conn: ConnId, id: AuthId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.auth.contains(&id) {
                c.auth.push(id);
            }
        }
    }

    /// The connection is gone (socket closed by either side). Its session lives on until it
    /// expires or a client reconnects to it.
    pub fn closed(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(sid) = c.session_id {
                if self.session_conn.get(&sid) == Some(&conn) {
                    self.session_conn.remove(&sid);
                }
            }
        }
        self.connecting.retain(|_, (c, _)| *c != conn);
        self.watches.remove_conn(conn);
    }

    /// A new ZAB epoch begins on this (leading) server: the next proposal is
    /// `epoch << 32 | 1`, and validation forgets proposals of the old epoch that were never
    /// committed (ZAB discards them). Ignored unless the epoch is newer than the last zxid.
    pub fn start_epoch(&mut self, epoch: u32) {
        let base = (epoch as i64) << 32;
        if base > self.last_proposed_zxid {
            self.last_proposed_zxid = base;
            self.pending.clear();
        }
    }

    fn next_zxid(&mut self) -> i64 {
        self.last_proposed_zxid += 1;
        self.last_proposed_zxid
    }

    /// Sends a state change to the proposer: this processor when standalone, the leader
    /// (through ZAB) in an ensemble.
    fn submit(&mut self, request: ForwardedRequest, now: Now) {
        if self.cfg.ensemble {
            self.out.push(Effect::Forward {
                payload: request.encode(),
            });
        } else if let Some(payload) = self.prepare_forwarded(request, now) {
            self.out.push(Effect::Propose {
                zxid: self.last_proposed_zxid,
                payload,
            });
        }
    }

    /// Ensemble: ZAB changed this server's role. A new leader gives every session a full
    /// timeout from now (its view of their activity is stale) and forgets validation
    /// records of proposals that may never commit; see also [`Self::start_epoch`].
    pub fn set_leader(&mut self, leader: bool, now: Now) {
        if leader && !self.is_leader {
            let sessions: Vec<(i64, i32)> = self
                .tree
                .sessions()
                .map(|(id, s)| (id, s.timeout_ms))
                .collect();
            for (id, timeout_ms) in sessions {
                self.sessions.add(id, timeout_ms.max(0) as u64, now.mono_ms);
            }
            self.pending.clear();
        }
        if !leader && self.is_leader {
            // Proposals this server made as leader and that never committed are gone; the
            // outstanding count must not keep counting them.
            self.last_proposed_zxid = self.tree.last_zxid();
            self.pending.clear();
        }
        self.is_leader = leader;
    }

    /// Ensemble: this server lost its leader (or its quorum). Forwarded writes may never
    /// commit, so, like a ZooKeeper follower that stops serving, close every client
    /// connection; clients reconnect (here or elsewhere) with their session and retry.
    pub fn close_all_connections(&mut self) {
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.close(conn);
        }
        self.pending.clear();
    }

    /// Ensemble: ZAB replaced this server's state with a snapshot (start-up, or SNAP from
    /// the leader). Connections are closed (their view of the tree moves), sessions found in
    /// the snapshot get a full timeout from `now`, and validation starts over.
    pub fn restore(&mut self, tree: DataTree, now: Now) {
        self.close_all_connections();
        let mut sessions = SessionTracker::new(expiry_interval_ms(self.cfg.tick_ms as u64));
        for (id, s) in tree.sessions() {
            sessions.add(id, s.timeout_ms.max(0) as u64, now.mono_ms);
        }
        self.sessions = sessions;
        self.last_proposed_zxid = tree.last_zxid();
        self.tree = tree;
        self.pending.clear();
        self.touched.clear();
        self.applied_since_snapshot = 0;
    }

    /// On the proposer (standalone server, ZAB leader): turns a forwarded request into the
    /// transaction payload to propose next, or `None` when there is nothing to propose
    /// (session touches, undecodable input). The transaction gets zxid
    /// `last proposed + 1`; the ZAB leader must propose the returned payloads in order.
    pub fn forwarded(&mut self, payload: &[u8], now: Now) -> Option<Vec<u8>> {
        match ForwardedRequest::decode(payload) {
            Ok(request) => self.prepare_forwarded(request, now),
            Err(e) => {
                tracing::warn!("undecodable forwarded request dropped: {e}");
                None
            }
        }
    }

    fn prepare_forwarded(&mut self, request: ForwardedRequest, now: Now) -> Option<Vec<u8>> {
        match request {
            ForwardedRequest::Prepared(txn) => {
                if matches!(txn.body, TxnBody::CloseSession) {
                    self.sessions.set_closing(txn.header.session_id);
                }
                self.next_zxid();
                Some(txn.encode())
            }
            ForwardedRequest::Touch { session_ids } => {
                for id in session_ids {
                    self.sessions.touch(id, now.mono_ms);
                }
                None
            }
            ForwardedRequest::Write {
                session_id,
                cxid,
                op: op_code,
                body,
                auth,
            } => {
                let zxid = self.next_zxid();
                let body = if !self.sessions.touch(session_id, now.mono_ms) {
                    TxnBody::Error {
                        err: err::SESSION_EXPIRED,
                    }
                } else {
                    match Request::decode(op_code, &body) {
                        Ok(request) => match write_request(&request) {
                            Some(write) => self
                                .pending
                                .prepare(&self.tree, session_id, &auth, zxid, write),
                            // A forwarded sync: an empty transaction whose commit tells the
                            // origin it has seen everything before it.
                            None if op_code == op::SYNC => TxnBody::Error { err: err::OK },
                            None => TxnBody::Error {
                                err: err::BAD_ARGUMENTS,
                            },
                        },
                        Err(_) => TxnBody::Error {
                            err: err::MARSHALLING_ERROR,
                        },
                    }
                };
                Some(
                    Txn {
                        header: TxnHeader {
                            session_id,
                            cxid,
                            time_ms: now.wall_ms,
                        },
                        body,
                    }
                    .encode(),
                )
            }
        }
    }

    /// The first frame of a connection.
    pub fn connect(&mut self, conn: ConnId, body: &[u8], now: Now) {
        self.clock_ms = self.clock_ms.max(now.mono_ms);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.packets_received += 1;
        self.stats.packets_received += 1;
        let req = match ConnectRequest::decode(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(conn, "bad connect request: {e}");
                self.close(conn);
                return;
            }
        };
        if req.last_zxid_seen > self.tree.last_zxid() {
            // The client saw a newer state than ours (it was on a more up-to-date server);
            // ZooKeeper refuses so the client tries another server.
            tracing::info!(
                conn,
                "refusing session: client has seen zxid {:#x}, ours is {:#x}",
                req.last_zxid_seen,
                self.tree.last_zxid()
            );
            self.close(conn);
            return;
        }
        let read_only = req.read_only.is_some();
        if req.session_id == 0 {
            let timeout_ms = negotiate_timeout_ms(
                req.timeout_ms,
                self.cfg.min_session_timeout_ms,
                self.cfg.max_session_timeout_ms,
            );
            let session_id = self.id_gen.next_id();
            let passwd: [u8; 16] = rand::random();
            self.connecting.insert(session_id, (conn, read_only));
            self.submit(
                ForwardedRequest::Prepared(Txn {
                    header: TxnHeader {
                        session_id,
                        cxid: 0,
                        time_ms: now.wall_ms,
                    },
                    body: TxnBody::CreateSession { timeout_ms, passwd },
                }),
                now,
            );
            return;
        }
        let valid = match self.tree.session(req.session_id) {
            Some(s) => {
                s.passwd[..] == req.passwd[..] && self.sessions.touch(req.session_id, now.mono_ms)
            }
            None => false,
        };
        if !valid {
            self.send_connect_response(conn, 0, 0, [0; 16], read_only);
            self.close(conn);
            return;
        }
        let Some(s) = self.tree.session(req.session_id).copied() else {
            return;
        };
        if let Some(old) = self.session_conn.insert(req.session_id, conn) {
            if old != conn {
                // The session moved to this connection; the old one must not act for it.
                if let Some(c) = self.conns.get_mut(&old) {
                    c.session_id = None;
                }
                self.close(old);
            }
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session_id = Some(req.session_id);
        }
        self.note_activity(req.session_id);
        self.send_connect_response(conn, s.timeout_ms, req.session_id, s.passwd, read_only);
    }

    fn send_connect_response(
        &mut self,
        conn: ConnId,
        timeout_ms: i32,
        session_id: i64,
        passwd: [u8; 16],
        read_only: bool,
    ) {
        let mut w = Writer::frame();
        ConnectResponse {
            protocol_version: 0,
            timeout_ms,
            session_id,
            passwd: passwd.to_vec(),
            read_only: read_only.then_some(false),
        }
        .encode(&mut w);
        self.send(conn, w.finish_frame());
    }

    /// A request frame (header + body) on an established connection.
    pub fn request(&mut self, conn: ConnId, frame_body: &[u8], now: Now) {
        self.clock_ms = self.clock_ms.max(now.mono_ms);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        c.packets_received += 1;
        self.stats.packets_received += 1;
        if c.close_requested {
            return;
        }
        if c.queue.len() + c.early.len() >= self.cfg.max_queued_per_connection {
            tracing::warn!(
                conn,
                "more than {} requests waiting on one connection; closing it",
                self.cfg.max_queued_per_connection
            );
            self.close(conn);
            return;
        }
        let Some(session_id) = c.session_id else {
            if self.connecting.values().any(|(c, _)| *c == conn) {
                // Behind a connect whose session is being created: handled after the
                // connect response, as ZooKeeper reads no more of the socket until then.
                // Counted again when it is handled.
                c.packets_received -= 1;
                self.stats.packets_received -= 1;
                c.early.push(frame_body.to_vec());
                return;
            }
            // A request before any connect request: ZooKeeper drops the connection.
            self.close(conn);
            return;
        };
        let mut r = Reader::new(frame_body);
        let Ok(header) = RequestHeader::decode(&mut r) else {
            self.close(conn);
            return;
        };
        if !self.sessions.touch(session_id, now.mono_ms) {
            self.queue_fail(conn, header.xid, err::SESSION_EXPIRED, true);
            return;
        }
        let request = match Request::decode(header.op, r.rest()) {
            Ok(req) => req,
            Err(e) => {
                tracing::debug!(conn, op = header.op, "undecodable request: {e}");
                self.queue_fail(conn, header.xid, err::MARSHALLING_ERROR, false);
                return;
            }
        };
        self.note_activity(session_id);
        if write_request(&request).is_some()
            || (self.cfg.ensemble && matches!(request, Request::Sync { .. }))
        {
            let sync_path = match &request {
                Request::Sync { path } => Some(path.clone()),
                _ => None,
            };
            let auth = self
                .conns
                .get(&conn)
                .map(|c| c.auth.clone())
                .unwrap_or_default();
            self.queue_write(conn, header.xid, header.op, sync_path, now);
            self.submit(
                ForwardedRequest::Write {
                    session_id,
                    cxid: header.xid,
                    op: header.op,
                    body: r.rest().to_vec(),
                    auth,
                },
                now,
            );
            return;
        }
        match request {
            Request::CloseSession => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.close_requested = true;
                }
                self.sessions.set_closing(session_id);
                self.queue_write(conn, header.xid, op::CLOSE_SESSION, None, now);
                self.submit(
                    ForwardedRequest::Prepared(Txn {
                        header: TxnHeader {
                            session_id,
                            cxid: header.xid,
                            time_ms: now.wall_ms,
                        },
                        body: TxnBody::CloseSession,
                    }),
                    now,
                );
            }
            Request::Auth { scheme, auth, .. } => self.add_auth(conn, header.xid, &scheme, &auth),
            other => self.queue_read(conn, header.xid, other, now),
        }
    }

    /// `addauth`: answered at once with the request's xid (clients send AUTH, -4, or their
    /// next xid), as ZooKeeper does. A scheme this server does
    /// not offer, or a connection already holding its maximum of identities, gets
    /// AUTH_FAILED and the connection is closed after the answer.
    fn add_auth(&mut self, conn: ConnId, xid: i32, scheme: &str, auth: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let proved = acl::authenticate(scheme, auth, c.remote_ip, self.cfg.super_digest.as_deref());
        let code = match proved {
            Some(ids) => {
                for id in ids {
                    if !c.auth.contains(&id) {
                        c.auth.push(id);
                    }
                }
                if c.auth.len() <= AUTH_IDS_PER_CONNECTION_MAX {
                    err::OK
                } else {
                    tracing::warn!(
                        conn,
                        "more than {AUTH_IDS_PER_CONNECTION_MAX} identities on one connection"
                    );
                    err::AUTH_FAILED
                }
            }
            None => {
                tracing::warn!(conn, "authentication failed for scheme `{scheme}`");
                err::AUTH_FAILED
            }
        };
        if code == err::OK {
            tracing::info!(conn, "auth success for scheme `{scheme}`");
        }
        let f = frame(
            ReplyHeader {
                xid,
                zxid: self.tree.last_zxid(),
                err: code,
            },
            |_| {},
        );
        self.send(conn, f);
        if code != err::OK {
            self.close(conn);
        }
    }

    fn queue_write(
        &mut self,
        conn: ConnId,
        xid: i32,
        op: i32,
        sync_path: Option<String>,
        now: Now,
    ) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queue.push_back(Queued::Write {
                xid,
                op,
                sync_path,
                received_ms: now.mono_ms,
            });
        }
    }

    /// An ensemble follower reports client activity to the leader, which expires sessions.
    fn note_activity(&mut self, session_id: i64) {
        if self.cfg.ensemble && !self.is_leader {
            self.touched.insert(session_id);
        }
    }

    fn queue_read(&mut self, conn: ConnId, xid: i32, request: Request, now: Now) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queue.push_back(Queued::Read {
                xid,
                request,
                received_ms: now.mono_ms,
            });
        }
        self.drain(conn);
    }

    /// Answers what waits at the head of the connection's queue, up to its first write not
    /// yet committed; while the connection is congested, reads stay queued (answers already
    /// made, of writes and errors, still go: they take no new memory).
    fn drain(&mut self, conn: ConnId) {
        let bytes_max = self.cfg.connection_queue_bytes_max;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            match c.queue.front() {
                Some(Queued::Read { .. }) if c.congested(bytes_max) => return,
                Some(Queued::Read { .. } | Queued::Fail { .. } | Queued::Answered { .. }) => {}
                Some(Queued::Write { .. }) | None => return,
            }
            match c.queue.pop_front() {
                Some(Queued::Read {
                    xid,
                    request,
                    received_ms,
                }) => {
                    let ping = matches!(request, Request::Ping);
                    self.answer_read(conn, xid, request);
                    if !ping {
                        self.stats
                            .read_latency
                            .observe_ms(self.clock_ms.saturating_sub(received_ms));
                    }
                }
                Some(Queued::Answered { frame }) => self.send(conn, frame),
                Some(Queued::Fail { xid, err, close }) => {
                    self.reply(conn, xid, err, |_| {});
                    if close {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.queue.clear();
                        }
                        self.close(conn);
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    fn queue_fail(&mut self, conn: ConnId, xid: i32, err: i32, close: bool) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queue.push_back(Queued::Fail { xid, err, close });
        }
        self.drain(conn);
    }

    fn reply(&mut self, conn: ConnId, xid: i32, error: i32, body: impl FnOnce(&mut Writer)) {
        let f = frame(
            ReplyHeader {
                xid,
                zxid: self.tree.last_zxid(),
                err: error,
            },
            body,
        );
        self.send(conn, f);
    }

    /// The identities connection `conn` holds.
    fn auth_of(&self, conn: ConnId) -> &[AuthId] {
        self.conns.get(&conn).map_or(&[], |c| &c.auth)
    }

    /// The node at `path` if it exists and `conn` may use `perm` on it.
    fn permitted(
        &self,
        conn: ConnId,
        path: &str,
        perm: i32,
    ) -> Result<&crate::data_tree::Node, i32> {
        validate_path(path).map_err(|_| err::BAD_ARGUMENTS)?;
        let node = self.tree.get(path).ok_or(err::NO_NODE)?;
        if !acl::allowed(self.tree.acl(node), perm, self.auth_of(conn)) {
            return Err(err::NO_AUTH);
        }
        Ok(node)
    }

    fn readable(&self, conn: ConnId, path: &str) -> Result<&crate::data_tree::Node, i32> {
        self.permitted(conn, path, perms::READ)
    }

    fn answer_read(&mut self, conn: ConnId, xid: i32, request: Request) {
        match request {
            Request::Ping => self.reply(conn, xid::PING, err::OK, |_| {}),
            Request::Exists { path, watch } => {
                if validate_path(&path).is_err() {
                    return self.reply(conn, xid, err::BAD_ARGUMENTS, |_| {});
                }
                if watch {
                    self.watches.add(&path, WatchKind::Data, conn);
                }
                // Like ZooKeeper 3.9: a node that exists needs READ to be seen.
                match self.readable(conn, &path).map(|n| n.stat()) {
                    Ok(stat) => self.reply(conn, xid, err::OK, |w| stat.encode(w)),
                    Err(e) => self.reply(conn, xid, e, |_| {}),
                }
            }
            Request::GetData { path, watch } => match self.readable(conn, &path) {
                Ok(node) => {
                    let mut body = Writer::new();
                    body.opt_buffer(node.data.as_deref());
                    node.stat().encode(&mut body);
                    if watch {
                        self.watches.add(&path, WatchKind::Data, conn);
                    }
                    self.reply(conn, xid, err::OK, |w| {
                        w.bytes.extend_from_slice(&body.bytes)
                    });
                }
                Err(e) => self.reply(conn, xid, e, |_| {}),
            },
            Request::GetChildren { path, watch } => {
                self.answer_children(conn, xid, &path, watch, false)
            }
            Request::GetChildren2 { path, watch } => {
                self.answer_children(conn, xid, &path, watch, true)
            }
            Request::GetAcl { path } => {
                match self.permitted(conn, &path, perms::READ | perms::ADMIN) {
                    Ok(node) => {
                        let list = self.tree.acl(node);
                        // Without ADMIN the digests' hashes are hidden.
                        let shown = if acl::allowed(list, perms::ADMIN, self.auth_of(conn)) {
                            list.to_vec()
                        } else {
                            acl::redacted(list)
                        };
                        let stat = node.stat();
                        self.reply(conn, xid, err::OK, |w| {
                            write_acl_vec(w, &shown);
                            stat.encode(w);
                        })
                    }
                    Err(e) => self.reply(conn, xid, e, |_| {}),
                }
            }
            Request::Check { path, version } => {
                let result = self.readable(conn, &path).and_then(|n| {
                    if version == -1 || version == n.version {
                        Ok(())
                    } else {
                        Err(err::BAD_VERSION)
                    }
                });
                self.reply(conn, xid, result.err().unwrap_or(err::OK), |_| {});
            }
            Request::Sync { path } => {
                self.reply(conn, xid, err::OK, |w| {
                    w.string(&path);
                });
            }
            Request::MultiRead(ops) => {
                let mut body = Writer::new();
                for (kind, path, watch) in ops {
                    match self.readable(conn, &path) {
                        Ok(node) => {
                            write_multi_header(&mut body, kind, false, err::OK);
                            if kind == op::GET_DATA {
                                body.opt_buffer(node.data.as_deref());
                                node.stat().encode(&mut body);
                                if watch {
                                    self.watches.add(&path, WatchKind::Data, conn);
                                }
                            } else {
                                let children: Vec<&str> = self.tree.children(&path).collect();
                                body.string_vec(&children);
                                if watch {
                                    self.watches.add(&path, WatchKind::Child, conn);
                                }
                            }
                        }
                        Err(e) => {
                            write_multi_header(&mut body, op::ERROR, false, e);
                            body.i32(e);
                        }
                    }
                }
                write_multi_header(&mut body, -1, true, -1);
                self.reply(conn, xid, err::OK, |w| {
                    w.bytes.extend_from_slice(&body.bytes)
                });
            }
            Request::SetWatches { watches, .. } => self.set_watches(conn, xid, watches),
            Request::CheckWatches { kind, .. } | Request::RemoveWatches { kind, .. }
                if !matches!(
                    kind,
                    watcher_type::CHILDREN
                        | watcher_type::DATA
                        | watcher_type::ANY
                        | watcher_type::PERSISTENT
                        | watcher_type::PERSISTENT_RECURSIVE
                ) =>
            {
                self.reply(conn, xid, err::BAD_ARGUMENTS, |_| {});
            }
            Request::CheckWatches { path, kind } => {
                let found = self
                    .watch_kinds(kind)
                    .iter()
                    .any(|k| self.watches.contains(&path, *k, conn));
                let code = if found { err::OK } else { err::NO_WATCHER };
                self.reply(conn, xid, code, |_| {});
            }
            Request::RemoveWatches { path, kind } => {
                let mut found = false;
                for k in self.watch_kinds(kind) {
                    found |= self.watches.remove(&path, k, conn);
                }
                let code = if found { err::OK } else { err::NO_WATCHER };
                self.reply(conn, xid, code, |_| {});
            }
            Request::GetEphemerals { prefix } => {
                let session_id = self
                    .conns
                    .get(&conn)
                    .and_then(|c| c.session_id)
                    .unwrap_or(0);
                let paths: Vec<String> = self
                    .tree
                    .ephemerals_of(session_id)
                    .filter(|p| prefix.is_empty() || prefix == "/" || p.starts_with(&prefix))
                    .map(str::to_owned)
                    .collect();
                self.reply(conn, xid, err::OK, |w| {
                    w.string_vec(&paths);
                });
            }
            Request::GetAllChildrenNumber { path } => match self.readable(conn, &path) {
                Ok(_) => {
                    let n = self.tree.descendant_count(&path) as i32;
                    self.reply(conn, xid, err::OK, |w| {
                        w.i32(n);
                    })
                }
                Err(e) => self.reply(conn, xid, e, |_| {}),
            },
            Request::WhoAmI => {
                // ZooKeeper's ClientInfo list: the scheme and the user of each identity (a
                // digest shows its user name, never its hash).
                let infos: Vec<(String, String)> = self
                    .auth_of(conn)
                    .iter()
                    .filter(|i| i.scheme != "super")
                    .map(|i| {
                        let user = match i.scheme.as_str() {
                            "digest" => i.id.split(':').next().unwrap_or("").to_owned(),
                            _ => i.id.clone(),
                        };
                        (i.scheme.clone(), user)
                    })
                    .collect();
                self.reply(conn, xid, err::OK, |w| {
                    w.i32(infos.len() as i32);
                    for (scheme, user) in &infos {
                        w.string(scheme).string(user);
                    }
                });
            }
            Request::AddWatch { path, mode } => {
                let kind = match mode {
                    add_watch_mode::PERSISTENT => WatchKind::Persistent,
                    add_watch_mode::PERSISTENT_RECURSIVE => WatchKind::PersistentRecursive,
                    _ => return self.reply(conn, xid, err::BAD_ARGUMENTS, |_| {}),
                };
                if validate_path(&path).is_err() {
                    return self.reply(conn, xid, err::BAD_ARGUMENTS, |_| {});
                }
                self.watches.add(&path, kind, conn);
                self.reply(conn, xid, err::OK, |_| {});
            }
            Request::Unimplemented { .. } => self.reply(conn, xid, err::UNIMPLEMENTED, |_| {}),
            // Writes, closeSession and auth never reach the read queue.
            Request::Create { .. }
            | Request::Delete { .. }
            | Request::SetData { .. }
            | Request::SetAcl { .. }
            | Request::Multi(_)
            | Request::CloseSession
            | Request::Auth { .. } => {
                self.reply(conn, xid, err::SYSTEM_ERROR, |_| {});
            }
        }
    }

    fn watch_kinds(&self, kind: i32) -> Vec<WatchKind> {
        match kind {
            watcher_type::CHILDREN => vec![WatchKind::Child],
            watcher_type::DATA => vec![WatchKind::Data],
            watcher_type::PERSISTENT => vec![WatchKind::Persistent],
            watcher_type::PERSISTENT_RECURSIVE => vec![WatchKind::PersistentRecursive],
            _ => vec![
                WatchKind::Data,
                WatchKind::Child,
                WatchKind::Persistent,
                WatchKind::PersistentRecursive,
            ],
        }
    }

    fn answer_children(
        &mut self,
        conn: ConnId,
        xid: i32,
        path: &str,
        watch: bool,
        with_stat: bool,
    ) {
        match self.readable(conn, path) {
            Ok(node) => {
                let mut body = Writer::new();
                let children: Vec<&str> = self.tree.children(path).collect();
                body.string_vec(&children);
                if with_stat {
                    node.stat().encode(&mut body);
                }
                if watch {
                    self.watches.add(path, WatchKind::Child, conn);
                }
                self.reply(conn, xid, err::OK, |w| {
                    w.bytes.extend_from_slice(&body.bytes)
                });
            }
            Err(e) => self.reply(conn, xid, e, |_| {}),
        }
    }
}

impl RequestProcessor {
    /// setWatches after a reconnect: watches on paths that changed since `relative_zxid`
    /// (the last zxid the client saw) fire at once, the others are registered.
    fn set_watches(&mut self, conn: ConnId, xid: i32, w: SetWatches) {
        // Persistent watches are re-registered without firing, as ZooKeeper does: the
        // client re-reads what it watches after a reconnect anyway.
        for path in &w.persistent {
            self.watches.add(path, WatchKind::Persistent, conn);
        }
        for path in &w.persistent_recursive {
            self.watches.add(path, WatchKind::PersistentRecursive, conn);
        }
        let rel = w.relative_zxid;
        let mut fire: Vec<(i32, String)> = Vec::new();
        for path in w.data {
            match self.tree.get(&path) {
                None => fire.push((event::NODE_DELETED, path)),
                Some(n) if n.mzxid > rel => fire.push((event::NODE_DATA_CHANGED, path)),
                Some(_) => self.watches.add(&path, WatchKind::Data, conn),
            }
        }
        for path in w.exist {
            match self.tree.get(&path) {
                Some(_) => fire.push((event::NODE_CREATED, path)),
                None => self.watches.add(&path, WatchKind::Data, conn),
            }
        }
        for path in w.child {
            match self.tree.get(&path) {
                None => fire.push((event::NODE_DELETED, path)),
                Some(n) if n.pzxid > rel => fire.push((event::NODE_CHILDREN_CHANGED, path)),
                Some(_) => self.watches.add(&path, WatchKind::Child, conn),
            }
        }
        for (kind, path) in fire {
            let f = notification(self.tree.last_zxid(), kind, &path);
            self.send(conn, f);
        }
        self.reply(conn, xid, err::OK, |_| {});
    }

    /// A transaction was committed (by the local log or by ZAB), in zxid order: apply it,
    /// notify watchers, answer the client that asked (if connected here).
    pub fn commit(&mut self, zxid: i64, payload: &[u8], now: Now) {
        self.clock_ms = self.clock_ms.max(now.mono_ms);
        let txn = match Txn::decode(payload) {
            Ok(t) => t,
            Err(e) => {
                // Replication delivered bytes this server cannot read: the replicas would
                // diverge if we skipped it silently.
                tracing::error!("committed transaction {zxid:#x} does not decode: {e}");
                return;
            }
        };
        if zxid <= self.tree.last_zxid() {
            tracing::warn!("transaction {zxid:#x} already applied, skipped");
            return;
        }
        let mut triggers = Vec::new();
        let result = self.tree.apply(zxid, &txn, &mut triggers);
        self.stats.commits += 1;
        self.pending.applied(zxid);
        self.last_proposed_zxid = self.last_proposed_zxid.max(zxid);
        let mut events = Vec::new();
        for (path, kind) in triggers {
            self.watches.trigger(&path, kind, &mut events);
        }
        for (conn, kind, path) in events {
            let f = notification(zxid, kind, &path);
            self.send(conn, f);
        }
        let session_id = txn.header.session_id;
        match (&txn.body, &result) {
            (TxnBody::CreateSession { timeout_ms, passwd }, _) => {
                self.sessions
                    .add(session_id, (*timeout_ms).max(0) as u64, now.mono_ms);
                if let Some((conn, read_only)) = self.connecting.remove(&session_id) {
                    if self.conns.contains_key(&conn) {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.session_id = Some(session_id);
                        }
                        self.session_conn.insert(session_id, conn);
                        self.send_connect_response(
                            conn,
                            *timeout_ms,
                            session_id,
                            *passwd,
                            read_only,
                        );
                        let early = self
                            .conns
                            .get_mut(&conn)
                            .map(|c| std::mem::take(&mut c.early))
                            .unwrap_or_default();
                        for frame_body in early {
                            self.request(conn, &frame_body, now);
                        }
                    }
                }
            }
            (TxnBody::CloseSession, _) => {
                self.sessions.remove(session_id);
                self.touched.remove(&session_id);
                if let Some(conn) = self.session_conn.remove(&session_id) {
                    self.finish_write(conn, zxid, &txn, &result, now);
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.session_id = None;
                    }
                    self.close(conn);
                }
            }
            _ => {
                if let Some(conn) = self.session_conn.get(&session_id).copied() {
                    self.finish_write(conn, zxid, &txn, &result, now);
                }
            }
        }
        self.applied_since_snapshot += 1;
        if self.applied_since_snapshot >= self.cfg.snap_count {
            self.applied_since_snapshot = 0;
            self.out.push(Effect::Snapshot {
                zxid,
                image: self.tree.image(),
            });
        }
    }

    /// Answers the connection's first uncommitted write if `txn` is its transaction (same
    /// xid, and a close-session only for a closeSession request), then what waits behind it.
    /// When reads held back for a congested connection are ahead of it, the reply waits in
    /// the write's place.
    fn finish_write(&mut self, conn: ConnId, zxid: i64, txn: &Txn, result: &TxnResult, now: Now) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(at) = c
            .queue
            .iter()
            .position(|q| matches!(q, Queued::Write { .. }))
        else {
            return;
        };
        let Queued::Write {
            xid,
            op: queued_op,
            received_ms,
            sync_path,
        } = &mut c.queue[at]
        else {
            return;
        };
        let closing = matches!(txn.body, TxnBody::CloseSession);
        if *xid != txn.header.cxid || closing != (*queued_op == op::CLOSE_SESSION) {
            return;
        }
        let (xid, received_ms, sync_path) = (*xid, *received_ms, sync_path.take());
        let f = match (sync_path, result) {
            (Some(path), TxnResult::Error(err::OK)) => frame(
                ReplyHeader {
                    xid,
                    zxid,
                    err: err::OK,
                },
                |w| {
                    w.string(&path);
                },
            ),
            _ => write_reply(xid, zxid, result),
        };
        c.queue[at] = Queued::Answered { frame: f };
        let ms = now.mono_ms.saturating_sub(received_ms);
        self.stats.record_latency(ms);
        self.stats.update_latency.observe_ms(ms);
        self.drain(conn);
    }

    /// Periodic work: the proposer expires sessions whose clients went quiet (each becomes
    /// a close-session transaction); an ensemble follower reports its clients' activity.
    pub fn tick(&mut self, now: Now) {
        self.clock_ms = self.clock_ms.max(now.mono_ms);
        if self.cfg.ensemble && !self.is_leader {
            if !self.touched.is_empty() {
                let session_ids = std::mem::take(&mut self.touched).into_iter().collect();
                self.out.push(Effect::Forward {
                    payload: ForwardedRequest::Touch { session_ids }.encode(),
                });
            }
            return;
        }
        for session_id in self.sessions.expire(now.mono_ms) {
            tracing::info!("session {session_id:#x} expired");
            self.submit(
                ForwardedRequest::Prepared(Txn {
                    header: TxnHeader {
                        session_id,
                        cxid: 0,
                        time_ms: now.wall_ms,
                    },
                    body: TxnBody::CloseSession,
                }),
                now,
            );
        }
    }
}

/// The validation shape of a write request; `None` for everything else.
fn write_request(request: &Request) -> Option<WriteRequest<'_>> {
    Some(match request {
        Request::Create { op, request } => WriteRequest::Create { op: *op, request },
        Request::Delete { path, version } => WriteRequest::Delete {
            path,
            version: *version,
        },
        Request::SetData {
            path,
            data,
            version,
        } => WriteRequest::SetData {
            path,
            data: data.as_deref(),
            version: *version,
        },
        Request::SetAcl { path, acl, version } => WriteRequest::SetAcl {
            path,
            acl,
            version: *version,
        },
        Request::Multi(ops) => WriteRequest::Multi(ops),
        _ => return None,
    })
}

fn notification(zxid: i64, kind: i32, path: &str) -> Vec<u8> {
    let mut w = Writer::frame();
    ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid,
        err: err::OK,
    }
    .encode(&mut w);
    WatcherEvent {
        kind,
        state: event::STATE_SYNC_CONNECTED,
        path: path.to_owned(),
    }
    .encode(&mut w);
    w.finish_frame()
}

fn write_result(w: &mut Writer, result: &TxnResult) {
    match result {
        TxnResult::Created { path, stat, op } => {
            w.string(path);
            if create_returns_stat(*op) {
                stat.encode(w);
            }
        }
        TxnResult::DataSet { stat } | TxnResult::AclSet { stat } => stat.encode(w),
        TxnResult::Multi(results) => {
            for r in results {
                match r {
                    TxnResult::Created { op, .. } => write_multi_header(w, *op, false, err::OK),
                    TxnResult::Deleted => write_multi_header(w, op::DELETE, false, err::OK),
                    TxnResult::DataSet { .. } => {
                        write_multi_header(w, op::SET_DATA, false, err::OK)
                    }
                    TxnResult::Checked => write_multi_header(w, op::CHECK, false, err::OK),
                    TxnResult::Error(e) => {
                        write_multi_header(w, op::ERROR, false, *e);
                        w.i32(*e);
                        continue;
                    }
                    other => {
                        tracing::error!("unexpected result inside multi: {other:?}");
                        write_multi_header(w, op::ERROR, false, err::RUNTIME_INCONSISTENCY);
                        w.i32(err::RUNTIME_INCONSISTENCY);
                        continue;
                    }
                }
                write_result(w, r);
            }
            write_multi_header(w, -1, true, -1);
        }
        TxnResult::SessionCreated
        | TxnResult::SessionClosed
        | TxnResult::Deleted
        | TxnResult::Checked
        | TxnResult::Error(_) => {}
    }
}

fn write_reply(xid: i32, zxid: i64, result: &TxnResult) -> Vec<u8> {
    let code = match result {
        TxnResult::Error(e) => *e,
        _ => err::OK,
    };
    frame(
        ReplyHeader {
            xid,
            zxid,
            err: code,
        },
        |w| write_result(w, result),
    )
}
