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

//!
//! Where each decision lives:
//! * this file: the types, the counters, and [`RequestProcessor::request`], which decides
//!   what a request frame is (a write, closeSession, addauth, or a read) and hands it on;
//! * `connections`: a connection's life, its FIFO queue of answers and the back-pressure
//!   on its unwritten bytes;
//! * `access`: the identities a connection holds (`addauth`, a TLS certificate) and what
//!   ACLs they pass;
//! * `sessions`: creating, resuming, closing and expiring sessions, and what a change of
//!   this server's ZAB role does to them;
//! * `reads`: the answer to each read, from the committed tree, and watch registration;
//! * `writes`: turning writes into transactions (zxids, validation against pending
//!   changes), and applying committed transactions with their watch events and replies.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

use crate::acl::AuthId;
use crate::data_tree::{DataTree, TreeImage};
use crate::jute::codes::err;
use crate::jute::records::{ReplyHeader, Request, RequestHeader};
use crate::jute::{Reader, Writer};
use crate::metrics::Histogram;
use crate::pending_changes::PendingChanges;
use crate::session::{expiry_interval_ms, SessionIdGenerator, SessionTracker};
use crate::watch::{ConnId, WatchManager};

mod access;
mod connections;
mod reads;
mod sessions;
mod writes;

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

    /// The unwritten bytes of the connection that has the most now (`mntr` reports it).
    pub fn largest_connection_queue_bytes(&self) -> usize {
        self.conns
            .values()
            .map(|c| c.unwritten_bytes)
            .max()
            .unwrap_or(0)
    }

    /// A request frame (header + body) on an established connection.
    pub fn request(&mut self, conn: ConnId, frame_body: &[u8], now: Now) {
        self.clock_ms = self.clock_ms.max(now.mono_ms);
        let Some(session_id) = self.admit_request(conn, frame_body) else {
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
        if writes::write_request(&request).is_some()
            || (self.cfg.ensemble && matches!(request, Request::Sync { .. }))
        {
            self.submit_write(conn, session_id, &header, request, r.rest(), now);
            return;
        }
        match request {
            Request::CloseSession => self.close_session(conn, session_id, header.xid, now),
            Request::Auth { scheme, auth, .. } => self.add_auth(conn, header.xid, &scheme, &auth),
            other => self.queue_read(conn, header.xid, other, now),
        }
    }
}
