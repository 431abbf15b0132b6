//! Peer-to-peer ZAB messages: the vocabulary the sans-IO core speaks.
//!
//! These types are both the core's in-memory events and the wire format: they derive rkyv
//! `Archive` so the transport (see `frame.rs`) sends them as validated rkyv archives. Nothing
//! here knows about sockets.

use rkyv::{Archive, Deserialize, Serialize};

use super::zxid::{ServerId, Zxid};

/// One replicated transaction: an opaque application payload and its zxid.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Position in the history.
    pub zxid: Zxid,
    /// Opaque to ZAB; the application decodes it when the transaction is committed.
    pub payload: Vec<u8>,
}

/// A candidate in fast leader election, ordered by (epoch, zxid, leader).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    /// The proposed leader's myid.
    pub leader: ServerId,
    /// The proposed leader's last logged zxid.
    pub zxid: Zxid,
    /// The proposed leader's current epoch (the last epoch whose NEWLEADER it accepted).
    pub epoch: u32,
}

impl Vote {
    /// ZooKeeper's total order on votes: higher epoch, then higher zxid, then higher myid.
    pub fn beats(&self, other: &Vote) -> bool {
        (self.epoch, self.zxid, self.leader) > (other.epoch, other.zxid, other.leader)
    }
}

/// What a server is doing, as announced in election notifications.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Electing a leader.
    Looking,
    /// Following the leader named in its vote.
    Following,
    /// Leading.
    Leading,
}

/// The last zxid a log holds in one epoch: the follower's summary of its history, from which
/// the leader finds their common prefix.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochRange {
    /// The epoch.
    pub epoch: u32,
    /// The greatest zxid of that epoch in the log.
    pub last_zxid: Zxid,
}

/// How the leader brings a follower's log in line with its own.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum SyncKind {
    /// The follower's log is a prefix of the leader's: only missing proposals follow.
    Diff,
    /// The follower drops every entry after `zxid` (a diverged suffix), then proposals follow.
    Trunc {
        /// The last zxid both logs share.
        zxid: Zxid,
    },
    /// The follower replaces its state with the leader's snapshot, then proposals follow.
    Snap {
        /// The last transaction reflected in `data`.
        zxid: Zxid,
        /// Opaque application snapshot; empty with zxid 0 means "the initial empty state".
        data: Vec<u8>,
    },
}

/// A message between two servers of the ensemble.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Fast leader election: the sender's current vote, its election round and its state.
    Notification {
        /// Who the sender votes for (or follows/leads).
        vote: Vote,
        /// The sender's logical election clock.
        round: u64,
        /// The sender's state.
        state: PeerState,
    },
    /// Discovery: a follower introduces itself to the leader it elected.
    FollowerInfo {
        /// The follower's accepted epoch.
        accepted_epoch: u32,
        /// The leader that proposed it.
        accepted_leader: ServerId,
        /// The follower's last logged zxid.
        last_zxid: Zxid,
    },
    /// Discovery: the leader proposes the new epoch.
    LeaderInfo {
        /// The new epoch.
        epoch: u32,
    },
    /// Discovery: the follower accepted the epoch and reports its history.
    AckEpoch {
        /// The follower's current epoch.
        current_epoch: u32,
        /// The follower's last logged zxid.
        last_zxid: Zxid,
        /// The follower's last epochs, newest first (bounded), plus its snapshot point.
        epoch_ranges: Vec<EpochRange>,
    },
    /// Synchronization: how the follower's log is repaired; proposals follow.
    Sync {
        /// DIFF, TRUNC or SNAP.
        kind: SyncKind,
    },
    /// Synchronization data and broadcast proposals (batched).
    Proposal {
        /// Consecutive transactions.
        txns: Vec<Txn>,
    },
    /// Synchronization is complete up to `last_zxid`; accept the new epoch.
    NewLeader {
        /// The leader's epoch.
        epoch: u32,
        /// The leader's last zxid at the end of the synchronization data.
        last_zxid: Zxid,
    },
    /// The follower's log holds the leader's history durably and it accepted the epoch.
    AckNewLeader {
        /// The accepted epoch.
        epoch: u32,
    },
    /// The leader is established: start serving; everything up to `commit_zxid` is committed.
    UpToDate {
        /// The leader's commit point.
        commit_zxid: Zxid,
    },
    /// Everything up to `zxid` is durable on the sender.
    Ack {
        /// The durable prefix end.
        zxid: Zxid,
    },
    /// Everything up to `zxid` is committed.
    Commit {
        /// The commit point.
        zxid: Zxid,
    },
    /// Leader heartbeat.
    Ping {
        /// The leader's commit point (lets an idle follower learn commits).
        commit_zxid: Zxid,
    },
    /// Follower heartbeat answer.
    PingAck,
    /// A client write received by a follower, for the leader's application to turn into a
    /// transaction.
    Forward {
        /// The follower that received it.
        origin: ServerId,
        /// The origin's id for the request, echoed back to it through the application.
        request_id: u64,
        /// Opaque request bytes.
        payload: Vec<u8>,
    },
}

impl Message {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Notification { .. } => "NOTIFICATION",
            Message::FollowerInfo { .. } => "FOLLOWERINFO",
            Message::LeaderInfo { .. } => "LEADERINFO",
            Message::AckEpoch { .. } => "ACKEPOCH",
            Message::Sync {
                kind: SyncKind::Diff,
            } => "DIFF",
            Message::Sync {
                kind: SyncKind::Trunc { .. },
            } => "TRUNC",
            Message::Sync {
                kind: SyncKind::Snap { .. },
            } => "SNAP",
            Message::Proposal { .. } => "PROPOSAL",
            Message::NewLeader { .. } => "NEWLEADER",
            Message::AckNewLeader { .. } => "ACKNEWLEADER",
            Message::UpToDate { .. } => "UPTODATE",
            Message::Ack { .. } => "ACK",
            Message::Commit { .. } => "COMMIT",
            Message::Ping { .. } => "PING",
            Message::PingAck => "PINGACK",
            Message::Forward { .. } => "FORWARD",
        }
    }
}
