//! ZAB: the replication layer of the coordinator.
//!
//! ZAB replicates opaque transaction payloads (`Vec<u8>`) identified by a zxid
//! (`epoch << 32 | counter`) and delivers committed ones, in zxid order, to the application.
//! It knows nothing of znodes or sessions. The protocol lives in the sans-IO core
//! ([`peer::Peer`]); the design and the on-disk format are described in `docs/zab.md`.

pub mod config;
pub mod epoch_file;
pub mod history;
pub mod message;
pub mod peer;
pub mod recovery;
pub mod snapshot_file;
pub mod storage;
pub mod txn_log;
pub mod zxid;

pub use config::PeerConfig;
pub use history::History;
pub use message::{EpochRange, Message, PeerState, SyncKind, Txn, Vote};
pub use peer::{Forwarded, HardState, NotLeader, Outputs, Peer, Restored, Role, Status, StepError};
pub use zxid::{counter_of, epoch_of, make_zxid, ServerId, Zxid};
