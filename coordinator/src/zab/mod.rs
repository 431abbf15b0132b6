//! ZAB: the replication layer of the coordinator.
//!
//! ZAB replicates opaque transaction payloads (`Vec<u8>`) identified by a zxid
//! (`epoch << 32 | counter`) and delivers committed ones, in zxid order, to the application.
//! It knows nothing of znodes or sessions: the ZooKeeper layer encodes its transactions as
//! payloads and implements [`Application`]. The protocol, the timers and the on-disk format
//! are described in `docs/zab.md`.
//!
//! Layers, bottom up:
//! - [`peer::Peer`]: the sans-IO core (election, discovery, synchronization, broadcast). It
//!   takes events and returns [`Outputs`]; the deterministic simulator in
//!   `tests/zab_sim.rs` drives it directly.
//! - [`txn_log`], [`snapshot_file`], [`epoch_file`], [`storage`], [`recovery`]: durable
//!   state under `dataLogDir/zab` and `dataDir/zab`.
//! - [`frame`], [`transport`]: rkyv-archived messages over one TCP connection per pair.
//! - [`node::ZabNode`]: the IO shell that runs it all.
//!
//! # Using it from the ZooKeeper layer
//!
//! ```no_run
//! use coordinator::zab::{Application, NodeConfig, ZabNode, Zxid};
//! # use std::collections::BTreeMap;
//! struct Tree; // the data tree
//! impl Application for Tree {
//!     fn apply(&mut self, zxid: Zxid, txn: &[u8]) { /* decode and apply a committed txn */ }
//!     fn snapshot(&self) -> Vec<u8> { Vec::new() /* serialize the tree */ }
//!     fn restore(&mut self, zxid: Zxid, snap: &[u8]) { /* replace the tree */ }
//! }
//! # let servers = BTreeMap::new();
//! let cfg = NodeConfig::new(1, servers, "/var/lib/zk".into(), "/var/lib/zk".into());
//! let node = ZabNode::start(cfg, Tree)?;
//! // On the leader: propose a transaction (or wait for it to commit and apply here).
//! let zxid = node.propose(b"txn".to_vec());
//! // On a follower: forward a client write to the leader's `Application::forwarded`.
//! node.forward(42, b"request".to_vec())?;
//! # Ok::<(), coordinator::zab::ZabError>(())
//! ```
//!
//! Reads are local: the application serves them from its own state. `node.status()` /
//! `node.wait_for(..)` and [`Application::status_changed`] report role, leader and whether
//! the server is serving.

pub mod config;
pub mod epoch_file;
pub mod frame;
pub mod history;
pub mod message;
pub mod node;
pub mod peer;
pub mod peer_auth;
pub mod recovery;
pub mod snapshot_file;
pub mod storage;
pub mod transport;
pub mod txn_log;
pub mod zxid;

pub use config::PeerConfig;
pub use history::History;
pub use message::{EpochRange, Message, PeerState, SyncKind, Txn, Vote};
pub use node::{Application, NodeConfig, NodeStats, SnapshotSource, Ticket, ZabError, ZabNode};
pub use peer::{
    Forwarded, HardState, NotLeader, Outputs, Peer, Restored, Role, SnapshotSend, Status, StepError,
};
pub use zxid::{counter_of, epoch_of, make_zxid, ServerId, Zxid};
