//! The glue between the ZooKeeper server shell and ZAB: a [`ZabNode`] whose application is
//! the shared [`RequestProcessor`], and the forwarder thread that carries the processor's
//! `Effect::Forward` payloads to the leader.
//!
//! Every server runs on it: a member of an ensemble (`server.N` lines), and a standalone
//! server, which is an ensemble of one (as ZooKeeper's standalone mode is the same server
//! code with a quorum of one): the same log, snapshots, recovery and write path, no peer
//! port, and `Mode: standalone` in the four-letter words.
//!
//! Threads and locks: the processor sits behind one mutex shared by the core thread (client
//! requests, timers, effects) and the ZAB driver thread (apply, forwarded, snapshot, restore,
//! role changes). Nobody calls into ZAB while holding that mutex: the core hands forwards to
//! the forwarder thread over a bounded channel, and the forwarder locks the processor only
//! after `ZabNode::forward` returned. So the driver waiting for the mutex can never wait on
//! itself. After a callback changed the processor the driver pokes the core (a `try_send`
//! on a one-slot channel) so the core dispatches the new effects.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use crate::config::{PeerRole, ZooConfig};
use crate::data_tree::DataTree;
use crate::metrics::RoleHistory;
use crate::request_processor::{Now, RequestProcessor};
use crate::zab::peer_auth::QuorumSecret;
use crate::zab::{
    Application, Forwarded, NodeConfig, Role, SnapshotSource, Status, ZabError, ZabNode, Zxid,
};

/// The processor shared by the core thread and the ZAB driver thread.
pub type SharedProcessor = Arc<Mutex<RequestProcessor>>;

/// Locks the processor; a panic on another thread must not stop this one from serving.
pub fn lock(p: &SharedProcessor) -> MutexGuard<'_, RequestProcessor> {
    p.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The server's role as the four-letter words report it.
pub const MODE_LOOKING: u8 = 0;
pub const MODE_FOLLOWER: u8 = 1;
pub const MODE_LEADER: u8 = 2;

/// What the core thread and the acceptor read about the ZAB side.
#[derive(Debug, Default)]
pub struct EnsembleState {
    /// A standalone server (an ensemble of one): its mode is `standalone`.
    pub standalone: bool,
    /// True while this server has an established leader (itself or another) and may serve.
    pub serving: AtomicBool,
    /// One of the `MODE_*` values.
    pub mode: AtomicU8,
    /// Election and synchronization times, for `/metrics`.
    pub roles: RoleHistory,
}

impl EnsembleState {
    pub fn mode_name(&self) -> &'static str {
        if self.standalone {
            return "standalone";
        }
        match self.mode.load(Ordering::SeqCst) {
            MODE_LEADER => "leader",
            MODE_FOLLOWER => "follower",
            _ => "looking",
        }
    }
}

fn now_since(started: Instant) -> Now {
    Now {
        mono_ms: started.elapsed().as_millis() as u64,
        wall_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    }
}

/// The ZAB application: the request processor.
struct ProcessorApp {
    processor: SharedProcessor,
    started: Instant,
    wake: Sender<()>,
    state: Arc<EnsembleState>,
    last_status: Option<Status>,
    /// Since when this server looks for a leader (election time).
    looking_since: Option<Instant>,
    /// Since when this follower synchronizes with its leader (follower sync time).
    syncing_since: Option<Instant>,
}

impl ProcessorApp {
    /// Times elections and synchronizations from the role changes ZAB reports.
    fn record_role_change(&mut self, status: Status) {
        let roles = &self.state.roles;
        let now = Instant::now();
        match status.role {
            Role::Looking => {
                if self.looking_since.is_none() {
                    self.looking_since = Some(now);
                    roles.looking_count.fetch_add(1, Ordering::Relaxed);
                }
                self.syncing_since = None;
            }
            Role::Following | Role::Leading => {
                if let Some(since) = self.looking_since.take() {
                    roles.election_ms.observe(now.duration_since(since));
                    if status.role == Role::Following {
                        self.syncing_since = Some(now);
                    }
                }
                if status.serving {
                    if let Some(since) = self.syncing_since.take() {
                        roles.follower_sync_ms.observe(now.duration_since(since));
                    }
                }
            }
        }
        let leading = status.role == Role::Leading && status.serving;
        let was_leading = self
            .last_status
            .is_some_and(|s| s.role == Role::Leading && s.serving);
        if leading && !was_leading {
            roles
                .leading_since_unix_ms
                .store(crate::metrics::unix_ms().max(1), Ordering::Relaxed);
        } else if !leading {
            roles.leading_since_unix_ms.store(0, Ordering::Relaxed);
        }
    }

    fn poke(&self) {
        // A full slot already means "look again"; one poke is as good as many.
        let _ = self.wake.try_send(());
    }
}

impl Application for ProcessorApp {
    fn apply(&mut self, zxid: Zxid, payload: &[u8]) {
        let now = now_since(self.started);
        lock(&self.processor).commit(zxid as i64, payload, now);
        self.poke();
    }

    fn snapshot(&self) -> Vec<u8> {
        lock(&self.processor).tree().serialize()
    }

    fn snapshot_source(&self) -> SnapshotSource {
        // The lock is held only to copy the node map's pointers, not to serialize.
        let image = lock(&self.processor).tree().image();
        Box::new(move || image.serialize())
    }

    fn restore(&mut self, zxid: Zxid, snapshot: &[u8]) {
        let tree = if snapshot.is_empty() {
            DataTree::new()
        } else {
            match DataTree::deserialize(snapshot) {
                Ok(t) => t,
                Err(e) => {
                    // ZAB checked the snapshot's CRC, so this is a format bug; serving an
                    // empty tree would silently diverge from the other replicas.
                    tracing::error!("snapshot {zxid:#x} does not decode: {e}; exiting");
                    std::process::exit(1);
                }
            }
        };
        let now = now_since(self.started);
        tracing::info!(
            zxid = format!("{zxid:#x}"),
            nodes = tree.node_count(),
            "data tree restored from snapshot"
        );
        lock(&self.processor).restore(tree, now);
        self.poke();
    }

    fn forwarded(&mut self, request: Forwarded) -> Option<Vec<u8>> {
        let now = now_since(self.started);
        let txn = lock(&self.processor).forwarded(&request.payload, now);
        self.poke();
        txn
    }

    fn status_changed(&mut self, status: Status) {
        self.record_role_change(status);
        let now = now_since(self.started);
        let was_serving = self.last_status.is_some_and(|s| s.serving);
        let lost_leader = was_serving
            && (!status.serving
                || self.last_status.is_some_and(|s| {
                    s.leader != status.leader || s.epoch != status.epoch || s.role != status.role
                }));
        {
            let mut p = lock(&self.processor);
            if status.role == Role::Leading {
                // Before the first proposal of the epoch, so the processor's zxid
                // prediction is ZAB's.
                p.start_epoch(status.epoch);
            }
            if lost_leader {
                p.close_all_connections();
            }
            p.set_leader(status.role == Role::Leading && status.serving, now);
        }
        let mode = match (status.serving, status.role) {
            (true, Role::Leading) => MODE_LEADER,
            (true, Role::Following) => MODE_FOLLOWER,
            _ => MODE_LOOKING,
        };
        self.state.mode.store(mode, Ordering::SeqCst);
        self.state.serving.store(status.serving, Ordering::SeqCst);
        tracing::info!(
            role = ?status.role,
            leader = ?status.leader,
            epoch = status.epoch,
            serving = status.serving,
            "ZAB status"
        );
        self.last_status = Some(status);
        self.poke();
    }
}

/// The running ZAB side of one server.
pub struct Ensemble {
    node: Arc<ZabNode>,
    forwards: Option<Sender<Vec<u8>>>,
    forwarder: Option<JoinHandle<()>>,
    pub state: Arc<EnsembleState>,
}

/// How long a standalone server may take to lead its own epoch before its client port
/// opens (it only replays its log: a quorum of one needs no messages).
const STANDALONE_START_MAX: Duration = Duration::from_secs(60);

/// Forwards queued by the core before it stops reading clients (bounded: back-pressure).
const FORWARD_QUEUE: usize = 8192;
/// Forwards handed to the ZAB driver at once.
const FORWARD_BATCH: usize = 1024;

impl Ensemble {
    /// Starts the ZAB node for `zoo` driving `processor`: one member of the ensemble its
    /// `server.N` lines and `myid` describe, or, standalone, an ensemble of one, which
    /// returns once it serves. `sync_log` = false (zoo.cfg `forceSync=no`, or a profile that
    /// never flushes) skips the log's fdatasync on a standalone server; ensemble members
    /// always sync. Commits and role changes poke `wake`.
    pub fn start(
        zoo: &ZooConfig,
        processor: SharedProcessor,
        started: Instant,
        wake: Sender<()>,
        sync_log: bool,
    ) -> Result<Ensemble, String> {
        let standalone = zoo.is_standalone();
        let mut cfg = if standalone {
            let mut cfg = NodeConfig::standalone(
                u64::from(zoo.server_id()),
                zoo.data_dir.clone(),
                zoo.data_log_dir.clone(),
            );
            cfg.sync_log = sync_log;
            cfg
        } else {
            ensemble_config(zoo)?
        };
        cfg.peer.tick_ms = zoo.tick_ms as u64;
        cfg.peer.init_limit = zoo.init_limit_ticks.max(1) as u64;
        cfg.peer.sync_limit = zoo.sync_limit_ticks.max(1) as u64;
        cfg.snap_count = zoo.snap_count;
        cfg.snapshots_kept = zoo.snap_retain_count as usize;
        let state = Arc::new(EnsembleState {
            standalone,
            ..EnsembleState::default()
        });
        let app = ProcessorApp {
            processor: processor.clone(),
            started,
            wake: wake.clone(),
            state: state.clone(),
            last_status: None,
            looking_since: None,
            syncing_since: None,
        };
        let node = if standalone {
            ZabNode::start_standalone(cfg, app)
        } else {
            ZabNode::start(cfg, app)
        };
        let node = Arc::new(node.map_err(|e: ZabError| format!("ZAB peer: {e}"))?);
        if standalone {
            // The quorum of one leads at once; the client port opens when it serves.
            let deadline = Instant::now() + STANDALONE_START_MAX;
            while !state.serving.load(Ordering::SeqCst) {
                if let Some(why) = node.failure() {
                    return Err(format!("ZAB peer stopped: {why}"));
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "not serving {} s after start",
                        STANDALONE_START_MAX.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let (tx, rx) = crossbeam_channel::bounded(FORWARD_QUEUE);
        let forwarder = {
            let node = node.clone();
            std::thread::Builder::new()
                .name("zab-forward".into())
                .spawn(move || forward_loop(&node, rx, &processor, wake))
                .map_err(|e| format!("spawn forwarder: {e}"))?
        };
        Ok(Ensemble {
            node,
            forwards: Some(tx),
            forwarder: Some(forwarder),
            state,
        })
    }

    /// Queues a processor `Effect::Forward` payload for the leader. Must not be called while
    /// holding the processor lock (it may block when the queue is full).
    pub fn forward(&self, payload: Vec<u8>) -> bool {
        self.forwards
            .as_ref()
            .is_some_and(|tx| tx.send(payload).is_ok())
    }

    /// This server's myid.
    pub fn id(&self) -> u64 {
        self.node.id()
    }

    /// The ZAB node (status and counters for `/metrics`).
    pub fn node(&self) -> Arc<ZabNode> {
        self.node.clone()
    }

    /// Why the ZAB node stopped on its own (a storage failure), if it did.
    pub fn failure(&self) -> Option<String> {
        self.node.failure()
    }

    /// Stops the forwarder and the ZAB node.
    pub fn shutdown(mut self) {
        self.forwards.take();
        if let Some(t) = self.forwarder.take() {
            let _ = t.join();
        }
        if let Ok(node) = Arc::try_unwrap(self.node) {
            node.shutdown();
        }
    }
}

/// The node configuration of one member of the ensemble `zoo`'s `server.N` lines describe.
fn ensemble_config(zoo: &ZooConfig) -> Result<NodeConfig, String> {
    let my_id = zoo
        .my_id
        .ok_or_else(|| format!("{}: an ensemble needs dataDir/myid", zoo.source.display()))?;
    let mut servers = BTreeMap::new();
    for (&id, peer) in &zoo.servers {
        if peer.role == PeerRole::Observer {
            // Counting an observer as a voter would change the quorum size silently.
            return Err(format!(
                "{}: server.{id} is an observer; observers are not supported",
                zoo.source.display()
            ));
        }
        let addr: SocketAddr = (peer.host.as_str(), peer.peer_port)
            .to_socket_addrs()
            .map_err(|e| format!("server.{id}={}:{}: {e}", peer.host, peer.peer_port))?
            .next()
            .ok_or_else(|| format!("server.{id}: {} resolves to nothing", peer.host))?;
        servers.insert(id, addr);
    }
    let mut cfg = NodeConfig::new(
        my_id,
        servers,
        zoo.data_dir.clone(),
        zoo.data_log_dir.clone(),
    );
    if let Some(path) = &zoo.quorum_secret_file {
        cfg.quorum_secret = Some(QuorumSecret::from_file(path)?);
    }
    Ok(cfg)
}

fn forward_loop(
    node: &ZabNode,
    rx: Receiver<Vec<u8>>,
    processor: &SharedProcessor,
    wake: Sender<()>,
) {
    let mut next_request_id: u64 = 1;
    while let Ok(first) = rx.recv() {
        // Everything queued meanwhile goes in the same hand-over: under load the wait for
        // the driver is paid once per batch, not once per write.
        let mut payloads = vec![first];
        while payloads.len() < FORWARD_BATCH {
            match rx.try_recv() {
                Ok(p) => payloads.push(p),
                Err(_) => break,
            }
        }
        let first_request_id = next_request_id;
        next_request_id += payloads.len() as u64;
        if let Err(e) = node.forward_batch(first_request_id, payloads) {
            // The request may never reach a leader; like a ZooKeeper server that stops
            // serving, drop every client so they reconnect and retry elsewhere.
            tracing::info!("forward to the leader failed ({e}); closing client connections");
            lock(processor).close_all_connections();
            let _ = wake.try_send(());
        }
    }
}
