//! The state of one consumer group: members, generation, protocol and committed offsets.
//!
//! Pure data plus the rules that only look at one group (protocol selection, leader choice,
//! generation bump). Timers, responses and records are the coordinator's job.

use super::member::Member;
use super::records::{GroupMetadataValue, MemberMetadataValue};
use super::requests::JoinProtocol;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// Kafka's classic group states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupState {
    /// No members; the group may still hold committed offsets.
    Empty,
    /// A rebalance started; waiting for members to (re)join.
    PreparingRebalance,
    /// Everyone joined; waiting for the leader's assignment in SyncGroup.
    CompletingRebalance,
    /// Assignment stored and handed out; members heartbeat.
    Stable,
    /// Deleted; never kept in the coordinator's map, only reported for unknown groups.
    Dead,
}

impl GroupState {
    /// The name Kafka reports in ListGroups/DescribeGroups.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A committed offset of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One group held by a coordinator.
#[derive(Clone, Debug)]
pub(crate) struct GroupMetadata {
    pub group_id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id -> member id.
    pub static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the deadline to join with them.
    pub pending_members: BTreeMap<String, u64>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pub pending_sync: BTreeSet<String>,
    /// A member joined during the initial delay: extend it once more (KIP-134).
    pub new_member_added: bool,
    /// When the PreparingRebalance phase ends at the latest.
    pub join_deadline_ms: Option<u64>,
    /// While the initial delay (KIP-134) runs: how much of the rebalance timeout is left to
    /// extend it with.
    pub initial_join_remaining_ms: Option<u64>,
    /// When members still in `pending_sync` are removed.
    pub sync_deadline_ms: Option<u64>,
    pub state_timestamp_ms: i64,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
}

/// What one entry of a map (a B-tree node's share, the key's own allocation) costs beyond the
/// bytes it holds, roughly; the shard's memory budget is charged by these estimates.
pub(crate) const MAP_ENTRY_BYTES: usize = 64;

/// Approximate memory of one committed offset of `topic`, bytes.
pub(crate) fn offset_bytes(topic: &str, offset: &CommittedOffset) -> usize {
    MAP_ENTRY_BYTES + std::mem::size_of::<CommittedOffset>() + topic.len() + offset.metadata.len()
}

impl GroupMetadata {
    /// Approximate memory of the group (members, their protocols and assignments, committed
    /// offsets and the bookkeeping maps), bytes.
    pub fn approximate_bytes(&self) -> usize {
        let members: usize = self
            .members
            .values()
            .map(|member| MAP_ENTRY_BYTES + member.approximate_bytes())
            .sum();
        let offsets: usize = self
            .offsets
            .iter()
            .map(|((topic, _), offset)| offset_bytes(topic, offset))
            .sum();
        let ids: usize = self
            .static_members
            .iter()
            .map(|(instance, member)| MAP_ENTRY_BYTES + instance.len() + member.len())
            .chain(
                self.pending_members
                    .keys()
                    .map(|id| MAP_ENTRY_BYTES + id.len()),
            )
            .chain(
                self.pending_sync
                    .iter()
                    .map(|id| MAP_ENTRY_BYTES + id.len()),
            )
            .sum();
        std::mem::size_of::<Self>() + self.group_id.len() + members + offsets + ids
    }

    pub fn new(group_id: &str, now_ms: u64) -> Self {
        GroupMetadata {
            group_id: group_id.to_owned(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            new_member_added: false,
            join_deadline_ms: None,
            initial_join_remaining_ms: None,
            sync_deadline_ms: None,
            state_timestamp_ms: ms_i64(now_ms),
            offsets: BTreeMap::new(),
        }
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    /// Whether a joining member with these protocols can be in this group: an empty group
    /// takes any non-empty protocol set; otherwise the type must match and at least one of
    /// the member's protocols must be supported by every current member.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[JoinProtocol]) -> bool {
        if self.state == GroupState::Empty || self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|p| self.members.values().all(|m| m.supports(&p.name)))
    }

    /// Kafka's selection: among protocols every member supports, each member votes for its
    /// most preferred; most votes wins (ties go to the name that sorts first, so the choice
    /// is deterministic). `None` only if the members share no protocol.
    pub fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(choice) = m.vote(&candidates) {
                *votes.entry(choice).or_default() += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, n) in votes {
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((name, n));
            }
        }
        best.map(|(name, _)| name.to_owned())
    }

    /// The longest rebalance timeout among members: how long a rebalance waits for them.
    pub fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .values()
            .map(|m| u64::try_from(m.rebalance_timeout_ms).unwrap_or(0))
            .max()
            .unwrap_or(0)
    }

    /// Every member has a JoinGroup parked and no handed-out member id is outstanding.
    pub fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    pub fn add(&mut self, member: Member) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        if let Some(instance) = &member.group_instance_id {
            self.static_members
                .insert(instance.clone(), member.member_id.clone());
        }
        self.pending_members.remove(&member.member_id);
        self.members.insert(member.member_id.clone(), member);
    }

    /// Removes a member; if it led, any remaining member leads until the rebalance picks a
    /// joined one.
    pub fn remove(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.is_leader(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
        self.pending_sync.remove(member_id);
        Some(member)
    }

    /// A static member is fenced when its instance id is held by a different member id. An
    /// empty member id (an admin removing members by instance id) is not fenced.
    pub fn is_static_member_fenced(&self, instance: Option<&str>, member_id: &str) -> bool {
        match instance.and_then(|i| self.static_members.get(i)) {
            Some(current) => !member_id.is_empty() && current != member_id,
            None => false,
        }
    }

    /// Makes sure the leader is a member that rejoined; false if none did.
    pub fn elect_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader_id.clone() else {
            return false;
        };
        if self
            .members
            .get(&leader)
            .is_some_and(|m| m.awaiting_join.is_some())
        {
            return true;
        }
        match self.members.values().find(|m| m.awaiting_join.is_some()) {
            Some(m) => {
                self.leader_id = Some(m.member_id.clone());
                true
            }
            None => false,
        }
    }

    pub fn init_next_generation(&mut self, now_ms: u64) {
        self.generation_id = self.generation_id.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.state = GroupState::Empty;
        } else {
            self.protocol_name = self.select_protocol();
            self.state = GroupState::CompletingRebalance;
        }
        self.state_timestamp_ms = ms_i64(now_ms);
        self.pending_sync.clear();
    }

    /// The group metadata record value for the current generation, with `assignment` (or
    /// each member's current assignment) as the members' assignments.
    pub fn to_record_value(
        &self,
        assignment: Option<&BTreeMap<String, Bytes>>,
    ) -> GroupMetadataValue {
        let protocol = self.protocol_name.clone();
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation_id,
            protocol: protocol.clone(),
            leader: self.leader_id.clone(),
            current_state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| MemberMetadataValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: protocol
                        .as_deref()
                        .map(|p| m.metadata(p))
                        .unwrap_or_default(),
                    assignment: match assignment {
                        Some(a) => a.get(&m.member_id).cloned().unwrap_or_default(),
                        None => m.assignment.clone(),
                    },
                })
                .collect(),
        }
    }
}

/// Our clock is unsigned milliseconds; Kafka's records hold signed ones.
pub(crate) fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    //! Proves the size estimate the memory budget is charged follows what a group holds: it
    //! grows by at least the bytes of committed offsets' metadata and of members' protocols and
    //! assignments, and falls back when they go.
    use super::*;

    fn member(id: &str, assignment_bytes: usize) -> Member {
        Member {
            member_id: id.into(),
            group_instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![JoinProtocol {
                name: "range".into(),
                metadata: Bytes::from(vec![1; 500]),
            }],
            assignment: Bytes::from(vec![2; assignment_bytes]),
            awaiting_join: None,
            awaiting_sync: None,
            is_new: false,
            session_deadline_ms: None,
        }
    }

    #[test]
    fn the_estimate_follows_offsets_and_members() {
        let mut group = GroupMetadata::new("g", 0);
        let empty = group.approximate_bytes();
        for partition in 0..100 {
            let offset = CommittedOffset {
                offset: 7,
                leader_epoch: 0,
                metadata: "m".repeat(1000),
                commit_timestamp_ms: 0,
            };
            group.offsets.insert(("topic".into(), partition), offset);
        }
        let with_offsets = group.approximate_bytes();
        assert!(
            with_offsets >= empty + 100 * 1000,
            "{empty} -> {with_offsets}"
        );
        group.members.insert("m1".into(), member("m1", 10_000));
        let with_member = group.approximate_bytes();
        assert!(
            with_member >= with_offsets + 10_000 + 500,
            "{with_offsets} -> {with_member}"
        );
        group.members.clear();
        group.offsets.clear();
        assert_eq!(group.approximate_bytes(), empty);
    }
}
