//! The replica of one hosted partition (cluster mode), beside its log on the owning shard:
//! its role (leader at an epoch, follower of a broker at an epoch, or idle) and its
//! leader-epoch cache, kept in the partition's `leader-epoch-checkpoint` file. The shard's
//! operations on it are in `server::replication`.

use std::cell::RefCell;

use crate::cluster::controller::TopicPartition;
use crate::cluster::replica::{EpochCache, Leader};
use crate::storage::notify::Signal;
use crate::storage::{leader_epoch_checkpoint, PartitionLog};

/// What this broker is for one partition.
pub enum Role {
    /// Offline, or not known yet: neither serves nor fetches.
    Idle,
    Leader(Leader),
    Follower {
        leader: i32,
        epoch: i32,
        high_watermark: i64,
    },
}

/// The replica of one partition on its owning shard.
pub struct Replica {
    pub tp: TopicPartition,
    pub cache: RefCell<EpochCache>,
    pub role: RefCell<Role>,
    /// Notified when the high watermark, the ISR, the role or a follower's log start changes.
    pub changed: Signal,
    /// While leading: each follower's log start offset, as its last fetch reported it
    /// (DeleteRecords waits for them: `records_admin`).
    pub follower_log_starts: RefCell<std::collections::HashMap<i32, i64>>,
}

impl Replica {
    /// A hosted partition's replica, its epoch cache read from the checkpoint.
    pub fn open(tp: TopicPartition, log: &PartitionLog) -> Result<Replica, String> {
        let entries = leader_epoch_checkpoint::read(log.dir()).map_err(|err| err.to_string())?;
        Ok(Replica {
            tp,
            cache: RefCell::new(EpochCache::from_entries(entries)),
            role: RefCell::new(Role::Idle),
            changed: Signal::default(),
            follower_log_starts: RefCell::default(),
        })
    }

    pub fn high_watermark(&self) -> i64 {
        match &*self.role.borrow() {
            Role::Leader(leader) => leader.high_watermark(),
            Role::Follower { high_watermark, .. } => *high_watermark,
            Role::Idle => 0,
        }
    }

    /// Resolves once this replica leads with a high watermark past `offset`, or stops leading
    /// the epoch it led when called (the reader then learns the new state from its next read).
    pub async fn wait_high_watermark_past(&self, offset: i64) {
        let epoch = self.leader_epoch();
        loop {
            let wait = self.changed.wait();
            if epoch.is_none() || self.leader_epoch() != epoch || self.high_watermark() > offset {
                return;
            }
            wait.await;
        }
    }

    /// The epoch while this replica leads.
    pub fn leader_epoch(&self) -> Option<i32> {
        match &*self.role.borrow() {
            Role::Leader(leader) => Some(leader.epoch()),
            _ => None,
        }
    }

    /// Rewrites the checkpoint file (only when the cache changed).
    pub(super) fn save_cache(&self, log: &PartitionLog) {
        let entries = self.cache.borrow().entries().to_vec();
        if let Err(err) = leader_epoch_checkpoint::write(log.dir(), &entries) {
            tracing::error!("{}: {err}", self.tp);
        }
    }
}
