//! One member of a classic consumer group, as the coordinator tracks it.

use super::requests::{JoinProtocol, RequestToken};
use bytes::Bytes;

/// A group member: what it joined with, its assignment and the requests it has parked.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    /// In the member's preference order.
    pub protocols: Vec<JoinProtocol>,
    pub assignment: Bytes,
    /// A JoinGroup parked until the rebalance completes.
    pub awaiting_join: Option<RequestToken>,
    /// A SyncGroup parked until the leader's assignment is stored.
    pub awaiting_sync: Option<RequestToken>,
    /// Joined in the current rebalance and has not yet received its first JoinGroup answer.
    /// Such a member cannot heartbeat, so its session is the new-member join timeout.
    pub is_new: bool,
    /// When the member's session (or new-member join timeout) runs out; `None` while no
    /// expiry is scheduled (a parked member is not expired by its session).
    pub session_deadline_ms: Option<u64>,
}

impl Member {
    /// Approximate memory of the member (its strings, protocols and assignment), bytes.
    pub fn approximate_bytes(&self) -> usize {
        let protocols: usize = self
            .protocols
            .iter()
            .map(|p| std::mem::size_of::<JoinProtocol>() + p.name.len() + p.metadata.len())
            .sum();
        std::mem::size_of::<Member>()
            + self.member_id.len()
            + self.group_instance_id.as_ref().map_or(0, String::len)
            + self.client_id.len()
            + self.client_host.len()
            + self.protocol_type.len()
            + protocols
            + self.assignment.len()
    }

    /// The member's metadata for `protocol`, empty if it does not support it.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// Whether a JoinGroup carries exactly the protocols the member joined with.
    pub fn matches(&self, protocols: &[JoinProtocol]) -> bool {
        self.protocols == protocols
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    /// The first protocol in the member's preference order among `candidates`.
    pub fn vote<'a>(&self, candidates: &[&'a str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .find_map(|p| candidates.iter().find(|c| **c == p.name).copied())
    }

    /// Whether the member's session may expire now: a member parked in JoinGroup or
    /// SyncGroup is bounded by the rebalance timeout instead, unless it is new (then the
    /// deadline was the new-member join timeout).
    pub fn may_expire(&self) -> bool {
        self.is_new || (self.awaiting_join.is_none() && self.awaiting_sync.is_none())
    }
}
