//! Settings of the ZAB core: who the voters are and the timers.
//!
//! Timer semantics follow ZooKeeper (`tickTime`, `initLimit`, `syncLimit`, in ticks), with one
//! addition: elections run on their own, much shorter `election_timeout_ms`, so that losing
//! a leader costs well under two seconds with ZooKeeper's default `tickTime=2000`.

use super::zxid::ServerId;

/// The core's configuration.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// This server's myid.
    pub my_id: ServerId,
    /// Every voting server's myid, this one included.
    pub voters: Vec<ServerId>,
    /// ZooKeeper's `tickTime`: the unit of `init_limit` and `sync_limit`; the leader pings
    /// every half tick.
    pub tick_ms: u64,
    /// Ticks a leader and its followers have to finish discovery and synchronization.
    pub init_limit: u64,
    /// Ticks of silence after which a follower drops its leader, or a leader drops a
    /// follower from its quorum count.
    pub sync_limit: u64,
    /// Election notifications are re-sent this often; a quorum agreement is final after a
    /// quarter of it without a better vote; a follower that gets no answer from its elected
    /// leader within five of it goes back to election.
    pub election_timeout_ms: u64,
    /// Most transactions in one PROPOSAL message.
    pub max_batch_txns: usize,
    /// Most payload bytes in one PROPOSAL message (one transaction may exceed it alone).
    pub max_batch_bytes: usize,
    /// Most epoch ranges a follower reports in ACKEPOCH.
    pub max_epoch_ranges: usize,
}

impl PeerConfig {
    /// ZooKeeper's sample defaults (tickTime 2000, initLimit 10, syncLimit 5) and a 400 ms
    /// election timeout.
    pub fn new(my_id: ServerId, voters: Vec<ServerId>) -> PeerConfig {
        PeerConfig {
            my_id,
            voters,
            tick_ms: 2000,
            init_limit: 10,
            sync_limit: 5,
            election_timeout_ms: 400,
            max_batch_txns: 1000,
            max_batch_bytes: 1 << 20,
            max_epoch_ranges: 16,
        }
    }

    /// Checks the values that would make the protocol meaningless.
    pub fn validate(&self) -> Result<(), String> {
        if !self.voters.contains(&self.my_id) {
            return Err(format!("myid {} is not among the servers", self.my_id));
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.voters.len() {
            return Err("duplicate server ids".into());
        }
        if self.tick_ms == 0 || self.init_limit == 0 || self.sync_limit == 0 {
            return Err("tick_ms, init_limit and sync_limit must be positive".into());
        }
        if self.election_timeout_ms < 4 {
            return Err("election_timeout_ms must be at least 4".into());
        }
        if self.max_batch_txns == 0 || self.max_batch_bytes == 0 || self.max_epoch_ranges < 2 {
            return Err("batch limits must be positive and max_epoch_ranges >= 2".into());
        }
        Ok(())
    }

    /// Votes needed for a quorum (a strict majority).
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}
