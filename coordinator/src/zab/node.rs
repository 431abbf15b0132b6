//! The IO shell: a running ensemble member. It owns the core ([`Peer`]), the storage and the
//! application, on one driver thread fed by one bounded event queue (network events and API
//! calls), and the TCP transport threads.
//!
//! The driver loop: take a batch of events (up to `EVENTS_PER_BATCH`), step the core for
//! each and carry out its effects (log appends are only buffered), tick the core, then make
//! the whole batch durable with one write + fdatasync and tell the core (`log_synced`), which
//! releases the ACKs (follower) or counts the leader's own vote. So one fsync covers every
//! proposal that arrived in the batch.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::config::PeerConfig;
use super::frame::{encode_archive, encode_frame};
use super::message::{Message, SyncKind};
use super::peer::{Forwarded, Outputs, Peer, Role, SnapshotSend, Status};
use super::peer_auth::QuorumSecret;
use super::recovery::recover;
use super::snapshot_file::{write_snapshot, SNAPSHOTS_KEPT};
use super::storage::{Storage, StoragePaths};
use super::transport::{EventSink, Link, NetEvent, Transport, TransportConfig};
use super::txn_log::StorageError;
use super::zxid::{ServerId, Zxid};
use crate::metrics::Histogram;

const EVENTS_PER_BATCH: usize = 512;

/// Produces a snapshot's bytes on the snapshot thread ([`Application::snapshot_source`]).
pub type SnapshotSource = Box<dyn FnOnce() -> Vec<u8> + Send>;

/// The replicated state machine ZAB drives. Called on the node's driver thread only.
pub trait Application: Send + 'static {
    /// Applies a committed transaction; zxids arrive in increasing order, each once per
    /// start (after `restore`).
    fn apply(&mut self, zxid: Zxid, payload: &[u8]);
    /// Serializes the state reflecting everything applied so far.
    fn snapshot(&self) -> Vec<u8>;
    /// The same bytes, produced later on the snapshot thread: an application that can
    /// freeze its state cheaply returns a closure over the frozen copy, so the driver (and
    /// whoever shares the state with it) does not wait while a large state is serialized.
    /// The default serializes at once.
    fn snapshot_source(&self) -> SnapshotSource {
        let bytes = self.snapshot();
        Box::new(move || bytes)
    }
    /// Replaces the state with a snapshot taken at `zxid`. At start-up it is called with the
    /// newest local snapshot (zxid 0 and empty bytes: the initial empty state); during SNAP
    /// synchronization with the leader's. State may move back in time here, before the
    /// server serves again.
    fn restore(&mut self, zxid: Zxid, snapshot: &[u8]);
    /// On the leader: a write forwarded by a follower (or submitted locally with
    /// [`ZabNode::forward`]). Returns the transaction to propose, if any; the payload should
    /// name `request.origin` and `request.request_id` so the origin server recognizes its
    /// request when it applies the transaction. The default proposes the bytes unchanged.
    fn forwarded(&mut self, request: Forwarded) -> Option<Vec<u8>> {
        Some(request.payload)
    }
    /// The server's role, leader or serving flag changed.
    fn status_changed(&mut self, _status: Status) {}
}

/// How to run one ensemble member.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Core settings: myid, voters, timers, batch limits.
    pub peer: PeerConfig,
    /// Peer (ZAB) address of every server, this one included (`server.N=host:peerPort:...`).
    pub servers: BTreeMap<ServerId, SocketAddr>,
    /// ZooKeeper's `dataDir`: snapshots and the epoch file go to `dataDir/zab`.
    pub data_dir: PathBuf,
    /// ZooKeeper's `dataLogDir`: the transaction log goes to `dataLogDir/zab`.
    pub data_log_dir: PathBuf,
    /// Applied transactions between snapshots (ZooKeeper's `snapCount`).
    pub snap_count: u64,
    /// Transaction log segment size.
    pub segment_bytes_max: u64,
    /// Largest peer frame accepted (SNAP frames carry a whole snapshot: a leader does not
    /// send a snapshot larger than this, and says so in its log).
    pub max_frame_bytes: usize,
    /// Frames queued per peer connection before it is declared broken.
    pub send_queue_frames: usize,
    /// Events queued for the driver thread (backpressure on readers and callers).
    pub event_queue: usize,
    /// zoo.cfg `quorum.auth.secretFile`: peers prove this secret on every connection
    /// ([`super::peer_auth`]). None: peers are not authenticated.
    pub quorum_secret: Option<QuorumSecret>,
    /// fdatasync each batch of the log before it counts as durable. False (zoo.cfg
    /// `forceSync=no` on a standalone server) only writes it: not durable.
    pub sync_log: bool,
    /// Snapshots kept on disk (zoo.cfg `autopurge.snapRetainCount`), with the log they need.
    pub snapshots_kept: usize,
}

impl NodeConfig {
    /// Defaults: ZooKeeper's timers (see [`PeerConfig::new`]), snapCount 100000, 64 MiB log
    /// segments, 512 MiB frames, 4096-frame send queues, 16384 queued events, the log
    /// fdatasynced, 3 snapshots kept.
    pub fn new(
        my_id: ServerId,
        servers: BTreeMap<ServerId, SocketAddr>,
        data_dir: PathBuf,
        data_log_dir: PathBuf,
    ) -> NodeConfig {
        let voters = servers.keys().copied().collect();
        NodeConfig {
            peer: PeerConfig::new(my_id, voters),
            servers,
            data_dir,
            data_log_dir,
            snap_count: 100_000,
            segment_bytes_max: 64 << 20,
            max_frame_bytes: 512 << 20,
            send_queue_frames: 4096,
            event_queue: 16_384,
            quorum_secret: None,
            sync_log: true,
            snapshots_kept: SNAPSHOTS_KEPT,
        }
    }

    /// A standalone server: an ensemble of one voter (`my_id`) with no peer port, which
    /// leads its own epoch as soon as it starts.
    pub fn standalone(my_id: ServerId, data_dir: PathBuf, data_log_dir: PathBuf) -> NodeConfig {
        let mut cfg = NodeConfig::new(my_id, BTreeMap::new(), data_dir, data_log_dir);
        cfg.peer.voters = vec![my_id];
        cfg
    }
}

/// Errors of the node API.
#[derive(Debug, thiserror::Error)]
pub enum ZabError {
    /// Writes go to the leader; `leader` is the one this server follows, if known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// Leader hint.
        leader: Option<ServerId>,
    },
    /// The proposal was superseded by a new leader's history; it did not commit.
    #[error("proposal {0:#x} was not committed")]
    NotCommitted(Zxid),
    /// This server replaced its state with the leader's snapshot while the proposal was
    /// pending: it may or may not be part of it.
    #[error("outcome of proposal {0:#x} unknown (state replaced by a snapshot)")]
    OutcomeUnknown(Zxid),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The node stopped (shut down, or a storage failure).
    #[error("node stopped: {0}")]
    Stopped(String),
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// Storage could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Sockets could not be set up.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters for observability and tests.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// DIFF synchronizations received as a follower.
    pub diff_syncs: AtomicU64,
    /// TRUNC synchronizations received.
    pub trunc_syncs: AtomicU64,
    /// SNAP synchronizations received.
    pub snap_syncs: AtomicU64,
    /// fdatasync calls on the log.
    pub log_syncs: AtomicU64,
    /// Transactions appended to the log.
    pub log_appends: AtomicU64,
    /// Peer messages rejected as protocol violations or bad frames.
    pub bad_messages: AtomicU64,
    /// SNAPs not sent as a leader because the named snapshot file was gone, damaged or too
    /// large for a frame (the learner's connection was dropped instead).
    pub snapshots_unsendable: AtomicU64,
    /// DIFF synchronizations sent as a leader.
    pub diffs_sent: AtomicU64,
    /// TRUNC synchronizations sent as a leader.
    pub truncs_sent: AtomicU64,
    /// SNAP synchronizations sent as a leader.
    pub snaps_sent: AtomicU64,
    /// Transactions proposed as the leader.
    pub proposals: AtomicU64,
    /// Transactions received in PROPOSAL messages (as a follower).
    pub proposals_received: AtomicU64,
    /// On the leader: followers connected, and those synchronized and receiving proposals
    /// (0 on other servers).
    pub learners: AtomicU64,
    pub synced_followers: AtomicU64,
    /// Bytes of the log segments on disk (after the last sync).
    pub log_bytes: AtomicU64,
    /// Duration of each log fdatasync (one per batch).
    pub fsync_ms: Histogram,
    /// Duration of each snapshot written (serialize, write, fsync).
    pub snapshot_ms: Histogram,
}

struct Shared {
    status: Mutex<(Status, Option<String>)>,
    changed: Condvar,
    applied: AtomicU64,
    stats: NodeStats,
}

enum Event {
    Net(NetEvent),
    Propose {
        payload: Vec<u8>,
        wait_commit: bool,
        reply: Sender<Result<Zxid, ZabError>>,
    },
    Forward {
        first_request_id: u64,
        payloads: Vec<Vec<u8>>,
        reply: Sender<Result<(), ZabError>>,
    },
    Shutdown,
}

/// The outcome of a [`ZabNode::submit`], available once the transaction is committed and
/// applied on this server.
#[derive(Debug)]
pub struct Ticket(Receiver<Result<Zxid, ZabError>>);

impl Ticket {
    /// Waits for the outcome.
    pub fn wait(self, timeout: Duration) -> Result<Zxid, ZabError> {
        self.0.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => ZabError::Timeout,
            RecvTimeoutError::Disconnected => ZabError::Stopped("driver gone".into()),
        })?
    }
}

/// A running ensemble member.
pub struct ZabNode {
    id: ServerId,
    shared: Arc<Shared>,
    tx: SyncSender<Event>,
    driver: Option<JoinHandle<()>>,
    transport: Option<Transport>,
}

impl ZabNode {
    /// Recovers storage, binds the peer port of `servers[myid]` and starts.
    pub fn start(cfg: NodeConfig, app: impl Application) -> Result<ZabNode, ZabError> {
        let addr = *cfg
            .servers
            .get(&cfg.peer.my_id)
            .ok_or_else(|| ZabError::Config(format!("no address for myid {}", cfg.peer.my_id)))?;
        let listener = TcpListener::bind(addr)?;
        ZabNode::start_with_listener(cfg, listener, app)
    }

    /// Like [`ZabNode::start`] with an already bound listener (tests bind port 0 first).
    pub fn start_with_listener(
        cfg: NodeConfig,
        listener: TcpListener,
        app: impl Application,
    ) -> Result<ZabNode, ZabError> {
        let voters: Vec<ServerId> = cfg.servers.keys().copied().collect();
        if voters != {
            let mut v = cfg.peer.voters.clone();
            v.sort_unstable();
            v
        } {
            return Err(ZabError::Config(
                "peer.voters must equal the servers' ids".into(),
            ));
        }
        ZabNode::start_inner(cfg, Some(listener), app)
    }

    /// A standalone server ([`NodeConfig::standalone`]): the same core, storage and driver
    /// as an ensemble member, without a peer port. It leads at once; `status()` reports it
    /// serving once the driver has carried out the start-up effects.
    pub fn start_standalone(cfg: NodeConfig, app: impl Application) -> Result<ZabNode, ZabError> {
        if cfg.peer.voters != [cfg.peer.my_id] || !cfg.servers.is_empty() {
            return Err(ZabError::Config(
                "a standalone node has itself as its only voter and no peers".into(),
            ));
        }
        ZabNode::start_inner(cfg, None, app)
    }

    fn start_inner(
        cfg: NodeConfig,
        listener: Option<TcpListener>,
        mut app: impl Application,
    ) -> Result<ZabNode, ZabError> {
        cfg.peer.validate().map_err(ZabError::Config)?;
        let paths = StoragePaths::new(&cfg.data_dir, &cfg.data_log_dir);
        let (mut storage, restored, snapshot) = recover(&paths, cfg.segment_bytes_max)?;
        storage.set_sync_log(cfg.sync_log);
        storage.set_snapshots_kept(cfg.snapshots_kept);
        app.restore(restored.snapshot_zxid, &snapshot);
        // Only the file keeps the snapshot from here on (a SNAP reads it again).
        drop(snapshot);
        let restored_snapshot_zxid = restored.snapshot_zxid;
        let start = Instant::now();
        let peer = Peer::new(cfg.peer.clone(), restored, 0).map_err(ZabError::Config)?;
        // What the application holds now; the core may already have effects queued (a
        // one-server ensemble leads and commits inside `Peer::new`), which count only once
        // the driver has carried them out.
        let shared = Arc::new(Shared {
            status: Mutex::new((STOPPED, None)),
            changed: Condvar::new(),
            applied: AtomicU64::new(restored_snapshot_zxid),
            stats: NodeStats::default(),
        });
        let (tx, rx) = mpsc::sync_channel::<Event>(cfg.event_queue.max(16));
        let net_tx = tx.clone();
        let sink: EventSink = Arc::new(move |ev| net_tx.send(Event::Net(ev)).is_ok());
        let tcfg = TransportConfig {
            my_id: cfg.peer.my_id,
            peers: cfg
                .servers
                .iter()
                .filter(|(&id, _)| id != cfg.peer.my_id)
                .map(|(&id, &a)| (id, a))
                .collect(),
            max_frame_bytes: cfg.max_frame_bytes,
            send_queue_frames: cfg.send_queue_frames,
            quorum_secret: cfg.quorum_secret.clone(),
        };
        let id = cfg.peer.my_id;
        let driver_shared = shared.clone();
        let snap_count = cfg.snap_count.max(1);
        let max_frame_bytes = cfg.max_frame_bytes;
        let driver = thread::Builder::new()
            .name(format!("zab-node-{id}"))
            .spawn(move || {
                let mut d = Driver {
                    peer,
                    storage,
                    app,
                    shared: driver_shared,
                    links: BTreeMap::new(),
                    waiters: BTreeMap::new(),
                    since_snapshot: 0,
                    snap_count,
                    snapshot_job: None,
                    max_frame_bytes,
                    start,
                };
                let end = d.run(rx);
                d.finish(end);
            })?;
        let transport = match listener.map(|l| Transport::start(tcfg, l, sink)) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                let _ = tx.send(Event::Shutdown);
                let _ = driver.join();
                return Err(e.into());
            }
        };
        Ok(ZabNode {
            id,
            shared,
            tx,
            driver: Some(driver),
            transport,
        })
    }

    /// This server's myid.
    pub fn id(&self) -> ServerId {
        self.id
    }

    /// Proposes a transaction on the serving leader; returns its zxid once appended (not yet
    /// committed: the application sees it in `apply` when it commits).
    pub fn propose(&self, payload: Vec<u8>) -> Result<Zxid, ZabError> {
        self.call_propose(payload, false, Duration::from_secs(5))
    }

    /// Proposes and waits until the transaction is committed and applied on this server.
    pub fn propose_and_wait(&self, payload: Vec<u8>, timeout: Duration) -> Result<Zxid, ZabError> {
        self.submit(payload)?.wait(timeout)
    }

    /// Queues a proposal without waiting: many submitted back to back share one PROPOSAL
    /// message per follower and one fsync per server. The ticket resolves when the
    /// transaction is committed and applied here (or cannot be).
    pub fn submit(&self, payload: Vec<u8>) -> Result<Ticket, ZabError> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Event::Propose {
                payload,
                wait_commit: true,
                reply,
            })
            .map_err(|_| ZabError::Stopped("driver gone".into()))?;
        Ok(Ticket(rx))
    }

    fn call_propose(
        &self,
        payload: Vec<u8>,
        wait_commit: bool,
        timeout: Duration,
    ) -> Result<Zxid, ZabError> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Event::Propose {
                payload,
                wait_commit,
                reply,
            })
            .map_err(|_| ZabError::Stopped("driver gone".into()))?;
        rx.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => ZabError::Timeout,
            RecvTimeoutError::Disconnected => ZabError::Stopped("driver gone".into()),
        })?
    }

    /// Sends a client write to the leader's [`Application::forwarded`] (on the leader
    /// itself, hands it to the local application the same way).
    pub fn forward(&self, request_id: u64, payload: Vec<u8>) -> Result<(), ZabError> {
        self.forward_batch(request_id, vec![payload])
    }

    /// [`ZabNode::forward`] for many writes at once (request ids `first_request_id..`): one
    /// hand-over to the driver and one wait, however many there are, so a busy server's
    /// forwarding keeps up with its clients.
    pub fn forward_batch(
        &self,
        first_request_id: u64,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), ZabError> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Event::Forward {
                first_request_id,
                payloads,
                reply,
            })
            .map_err(|_| ZabError::Stopped("driver gone".into()))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| ZabError::Timeout)?
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.shared.status.lock().map(|g| g.0).unwrap_or(STOPPED)
    }

    /// Waits until the status satisfies `pred`; returns it, or None on timeout.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Status) -> bool) -> Option<Status> {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.status.lock().ok()?;
        loop {
            if pred(&g.0) {
                return Some(g.0);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            g = self.shared.changed.wait_timeout(g, left).ok()?.0;
        }
    }

    /// The last zxid applied to the application.
    pub fn applied_zxid(&self) -> Zxid {
        self.shared.applied.load(Ordering::SeqCst)
    }

    /// Counters.
    pub fn stats(&self) -> &NodeStats {
        &self.shared.stats
    }

    /// Why the node stopped, if it did on its own (storage failure).
    pub fn failure(&self) -> Option<String> {
        self.shared.status.lock().ok().and_then(|g| g.1.clone())
    }

    /// Stops the node: closes every peer connection, stops the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Event::Shutdown);
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
        if let Some(mut t) = self.transport.take() {
            t.shutdown();
        }
    }
}

impl Drop for ZabNode {
    fn drop(&mut self) {
        self.stop();
    }
}

const STOPPED: Status = Status {
    role: Role::Looking,
    leader: None,
    epoch: 0,
    serving: false,
};

struct Driver<A: Application> {
    peer: Peer,
    storage: Storage,
    app: A,
    shared: Arc<Shared>,
    links: BTreeMap<ServerId, (u64, Link)>,
    waiters: BTreeMap<Zxid, Vec<Sender<Result<Zxid, ZabError>>>>,
    since_snapshot: u64,
    snap_count: u64,
    /// A snapshot being written by a background thread (at most one).
    snapshot_job: Option<SnapshotJob>,
    /// The peers' frame limit: a larger SNAP would be refused by the learner.
    max_frame_bytes: usize,
    start: Instant,
}

/// A snapshot made off the driver thread: the application hands over a frozen source;
/// serializing, writing and fsyncing hundreds of megabytes need not stall the pipeline.
struct SnapshotJob {
    zxid: Zxid,
    handle: JoinHandle<Result<(), StorageError>>,
}

enum End {
    Shutdown,
    Failed(String),
}

impl<A: Application> Driver<A> {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn run(&mut self, rx: Receiver<Event>) -> End {
        loop {
            let now = self.now_ms();
            let wait_ms = if self.storage.has_unsynced() {
                0
            } else {
                self.peer
                    .next_deadline_ms()
                    .saturating_sub(now)
                    .clamp(1, 100)
            };
            let first = match rx.recv_timeout(Duration::from_millis(wait_ms)) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return End::Shutdown,
            };
            let mut batch = first.into_iter().collect::<Vec<_>>();
            while batch.len() < EVENTS_PER_BATCH {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            for ev in batch {
                if let Event::Shutdown = ev {
                    return End::Shutdown;
                }
                if let Err(e) = self.handle(ev) {
                    return End::Failed(e.to_string());
                }
            }
            if let Err(e) = self.drain() {
                return End::Failed(e.to_string());
            }
            let now = self.now_ms();
            self.peer.tick(now);
            if let Err(e) = self.drain() {
                return End::Failed(e.to_string());
            }
            if self.storage.has_unsynced() {
                let sync_started = Instant::now();
                match self.storage.sync() {
                    Ok(z) => {
                        if self.storage.syncs_log() {
                            self.shared.stats.fsync_ms.observe(sync_started.elapsed());
                        }
                        self.shared
                            .stats
                            .log_bytes
                            .store(self.storage.log_bytes(), Ordering::Relaxed);
                        self.shared.stats.log_syncs.fetch_add(1, Ordering::Relaxed);
                        self.peer.log_synced(z);
                    }
                    Err(e) => return End::Failed(e.to_string()),
                }
                if let Err(e) = self.drain() {
                    return End::Failed(e.to_string());
                }
            }
            if let Err(e) = self.finish_snapshot(false) {
                return End::Failed(e.to_string());
            }
        }
    }

    /// Completes a background snapshot once written (or waits for it when `wait`): the log
    /// segments it covers are deleted and the core drops the entries it covers.
    fn finish_snapshot(&mut self, wait: bool) -> Result<(), StorageError> {
        let done = self
            .snapshot_job
            .as_ref()
            .is_some_and(|j| wait || j.handle.is_finished());
        if !done {
            return Ok(());
        }
        let Some(job) = self.snapshot_job.take() else {
            return Ok(());
        };
        let result = job.handle.join().unwrap_or_else(|_| {
            Err(StorageError::Corrupt {
                path: self.storage.snapshot_dir().to_path_buf(),
                offset: 0,
                reason: "snapshot writer panicked".into(),
            })
        });
        result?;
        self.storage.snapshot_written(job.zxid)?;
        self.peer.snapshot_taken(job.zxid);
        tracing::info!(zxid = format_args!("{:#x}", job.zxid), "snapshot taken");
        self.drain()
    }

    fn finish(&mut self, end: End) {
        if let Some(job) = self.snapshot_job.take() {
            let _ = job.handle.join();
        }
        for (_, (_, link)) in std::mem::take(&mut self.links) {
            link.close();
        }
        let why = match end {
            End::Shutdown => "shut down".to_string(),
            End::Failed(e) => {
                tracing::error!(error = %e, "ZAB node stopped on a storage failure");
                e
            }
        };
        for (_, ws) in std::mem::take(&mut self.waiters) {
            for w in ws {
                let _ = w.send(Err(ZabError::Stopped(why.clone())));
            }
        }
        if let Ok(mut g) = self.shared.status.lock() {
            *g = (STOPPED, Some(why));
        }
        self.shared.changed.notify_all();
    }

    fn handle(&mut self, ev: Event) -> Result<(), StorageError> {
        // Consecutive proposals only append to the leader's log, so their effects are taken
        // together: one PROPOSAL message per follower for the whole run. Any other event
        // first flushes them, keeping the per-call order the core's contract requires.
        if let Event::Propose {
            payload,
            wait_commit,
            reply,
        } = ev
        {
            let proposed = self.peer.propose(payload);
            if proposed.is_ok() {
                self.shared.stats.proposals.fetch_add(1, Ordering::Relaxed);
            }
            match proposed {
                Ok(z) if wait_commit => self.waiters.entry(z).or_default().push(reply),
                Ok(z) => {
                    let _ = reply.send(Ok(z));
                }
                Err(e) => {
                    let _ = reply.send(Err(ZabError::NotLeader { leader: e.leader }));
                }
            }
            return Ok(());
        }
        self.drain()?;
        match ev {
            Event::Net(NetEvent::Connected { peer, conn, link }) => {
                if let Some((_, old)) = self.links.insert(peer, (conn, link)) {
                    old.close();
                    self.peer.peer_disconnected(peer);
                }
            }
            Event::Net(NetEvent::Closed { peer, conn, reason }) => {
                if self.links.get(&peer).is_some_and(|(c, _)| *c == conn) {
                    tracing::debug!(peer, %reason, "peer connection closed");
                    self.links.remove(&peer);
                    self.peer.peer_disconnected(peer);
                }
            }
            Event::Net(NetEvent::Inbound { peer, conn, msg }) => {
                if self.links.get(&peer).is_none_or(|(c, _)| *c != conn) {
                    return Ok(());
                }
                if let Message::Proposal { txns } = &msg {
                    self.shared
                        .stats
                        .proposals_received
                        .fetch_add(txns.len() as u64, Ordering::Relaxed);
                }
                if let Message::Sync {
                    kind: SyncKind::Snap { zxid, data },
                } = &msg
                {
                    tracing::info!(
                        leader = peer,
                        zxid = format_args!("{zxid:#x}"),
                        bytes = data.len(),
                        "snapshot received; installing it"
                    );
                }
                if let Message::Sync { kind } = &msg {
                    let counter = match kind {
                        SyncKind::Diff => &self.shared.stats.diff_syncs,
                        SyncKind::Trunc { .. } => &self.shared.stats.trunc_syncs,
                        SyncKind::Snap { .. } => &self.shared.stats.snap_syncs,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                if let Err(e) = self.peer.step(peer, msg) {
                    tracing::warn!(peer, error = %e, "closing a peer connection");
                    self.shared
                        .stats
                        .bad_messages
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some((_, link)) = self.links.remove(&peer) {
                        link.close();
                    }
                    self.peer.peer_disconnected(peer);
                }
            }
            Event::Propose { .. } => {}
            Event::Forward {
                first_request_id,
                payloads,
                reply,
            } => {
                let mut r = Ok(());
                for (request_id, payload) in (first_request_id..).zip(payloads) {
                    if let Err(e) = self.peer.forward(request_id, payload) {
                        r = Err(ZabError::NotLeader { leader: e.leader });
                        break;
                    }
                }
                let _ = reply.send(r);
            }
            Event::Shutdown => {}
        }
        self.drain()
    }

    /// Carries out the core's effects until it has none left.
    fn drain(&mut self) -> Result<(), StorageError> {
        loop {
            let out = self.peer.take_outputs();
            if out.is_empty() {
                return Ok(());
            }
            self.execute(out)?;
        }
    }

    /// A message we cannot deliver must look like a broken connection: nothing later in
    /// these outputs reaches that peer, and the core forgets its state with it.
    fn drop_link(&mut self, to: ServerId) {
        if let Some((_, link)) = self.links.remove(&to) {
            link.close();
        }
        self.peer.peer_disconnected(to);
    }

    /// Sends a SNAP: reads the snapshot file named by the core, archives it and queues it,
    /// then lets the bytes go (the send queue holds the archive until it is written). When
    /// the file is gone or unreadable, or too large for the learner's frame limit, the
    /// connection is dropped so the learner reconnects and the core plans again.
    fn send_snapshot(&mut self, s: SnapshotSend) {
        if !self.links.contains_key(&s.to) {
            return;
        }
        let archive = match self.storage.read_snapshot(s.zxid) {
            Ok(Some(data)) => {
                let bytes = data.len();
                tracing::info!(
                    follower = s.to,
                    zxid = format_args!("{:#x}", s.zxid),
                    bytes,
                    "sending snapshot"
                );
                let msg = Message::Sync {
                    kind: SyncKind::Snap { zxid: s.zxid, data },
                };
                encode_archive(&msg, bytes + 256).map_err(|e| e.to_string())
            }
            Ok(None) => Err(format!("snapshot {:#x} is no longer on disk", s.zxid)),
            Err(e) => Err(e.to_string()),
        };
        let archive = archive.and_then(|a| {
            if a.len() > self.max_frame_bytes {
                Err(format!(
                    "snapshot frame of {} bytes exceeds max_frame_bytes {}; raise it on every server",
                    a.len(),
                    self.max_frame_bytes
                ))
            } else {
                Ok(a)
            }
        });
        let sent = match (archive, self.links.get(&s.to)) {
            (Ok(a), Some((_, link))) => {
                // Length and archive go as two writes in order: no copy of the archive
                // into a frame buffer.
                link.send((a.len() as u32).to_be_bytes().to_vec()) && link.send(a)
            }
            (Ok(_), None) => false,
            (Err(e), _) => {
                tracing::warn!(follower = s.to, error = %e, "cannot send a snapshot; dropping the connection");
                self.shared
                    .stats
                    .snapshots_unsendable
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        if !sent {
            self.drop_link(s.to);
        }
    }

    fn execute(&mut self, out: Outputs) -> Result<(), StorageError> {
        if let Some((z, data)) = out.install_snapshot {
            // A local snapshot still being written must land before the leader's replaces
            // it (install removes newer snapshots, so the log always continues the newest).
            if let Some(job) = self.snapshot_job.take() {
                let _ = job.handle.join();
            }
            self.storage.install_snapshot(z, &data)?;
            self.app.restore(z, &data);
            self.shared.applied.store(z, Ordering::SeqCst);
            self.since_snapshot = 0;
            let stale: Vec<Zxid> = self.waiters.range(..=z).map(|(&k, _)| k).collect();
            for k in stale {
                for w in self.waiters.remove(&k).unwrap_or_default() {
                    let _ = w.send(Err(ZabError::OutcomeUnknown(k)));
                }
            }
        }
        if let Some(t) = out.truncate_after {
            self.storage.truncate_after(t)?;
        }
        for txn in &out.append {
            self.storage.append(txn)?;
        }
        self.shared
            .stats
            .log_appends
            .fetch_add(out.append.len() as u64, Ordering::Relaxed);
        if let Some(h) = out.hard_state {
            self.storage.write_hard_state(&h)?;
        }
        for (_, msg) in &out.messages {
            if let Message::Sync { kind } = msg {
                let counter = match kind {
                    SyncKind::Diff => &self.shared.stats.diffs_sent,
                    SyncKind::Trunc { .. } => &self.shared.stats.truncs_sent,
                    // Built by the shell from `snapshot_sends`, counted there.
                    SyncKind::Snap { .. } => continue,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.shared
            .stats
            .snaps_sent
            .fetch_add(out.snapshot_sends.len() as u64, Ordering::Relaxed);
        let mut snapshot_sends = out.snapshot_sends.into_iter().peekable();
        for (i, (to, msg)) in out.messages.into_iter().enumerate() {
            while let Some(s) = snapshot_sends.next_if(|s| s.before_message <= i) {
                self.send_snapshot(s);
            }
            let sent = match (self.links.get(&to), encode_frame(&msg)) {
                (Some((_, link)), Ok(frame)) => link.send(frame),
                (None, _) => continue,
                (_, Err(e)) => {
                    tracing::error!(error = %e, "cannot encode a peer message");
                    false
                }
            };
            if !sent {
                self.drop_link(to);
            }
        }
        for s in snapshot_sends {
            self.send_snapshot(s);
        }
        for txn in &out.committed {
            // `Application::apply`'s contract: increasing zxids, each once per start.
            debug_assert!(
                txn.zxid > self.shared.applied.load(Ordering::SeqCst),
                "apply {:#x} not above the last applied",
                txn.zxid
            );
            self.app.apply(txn.zxid, &txn.payload);
            self.shared.applied.store(txn.zxid, Ordering::SeqCst);
            self.since_snapshot += 1;
            let done: Vec<Zxid> = self.waiters.range(..=txn.zxid).map(|(&k, _)| k).collect();
            for k in done {
                for w in self.waiters.remove(&k).unwrap_or_default() {
                    let r = if k == txn.zxid {
                        Ok(k)
                    } else {
                        Err(ZabError::NotCommitted(k))
                    };
                    let _ = w.send(r);
                }
            }
        }
        if self.since_snapshot >= self.snap_count && self.snapshot_job.is_none() {
            let zxid = self.shared.applied.load(Ordering::SeqCst);
            let source = self.app.snapshot_source();
            let dir = self.storage.snapshot_dir().to_path_buf();
            let shared = self.shared.clone();
            let kept = self.storage.snapshots_kept();
            let handle = thread::Builder::new()
                .name("zab-snapshot".into())
                .spawn(move || {
                    let started = Instant::now();
                    let data = source();
                    let written = write_snapshot(&dir, zxid, &data, kept).map(|_| ());
                    shared.stats.snapshot_ms.observe(started.elapsed());
                    written
                })
                .map_err(|e| StorageError::Io {
                    path: self.storage.snapshot_dir().to_path_buf(),
                    source: e,
                })?;
            self.snapshot_job = Some(SnapshotJob { zxid, handle });
            self.since_snapshot = 0;
        }
        for f in out.forwarded {
            if let Some(payload) = self.app.forwarded(f) {
                match self.peer.propose(payload) {
                    Ok(_) => {
                        self.shared.stats.proposals.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "dropping a forwarded write: not the leader")
                    }
                }
            }
        }
        let (learners, synced) = self.peer.learner_counts().unwrap_or((0, 0));
        self.shared
            .stats
            .learners
            .store(learners as u64, Ordering::Relaxed);
        self.shared
            .stats
            .synced_followers
            .store(synced as u64, Ordering::Relaxed);
        if let Some(st) = out.status {
            tracing::info!(role = ?st.role, leader = ?st.leader, epoch = st.epoch, serving = st.serving, "status");
            if let Ok(mut g) = self.shared.status.lock() {
                g.0 = st;
            }
            self.shared.changed.notify_all();
            self.app.status_changed(st);
        }
        Ok(())
    }
}
