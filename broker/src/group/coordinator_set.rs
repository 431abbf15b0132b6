//! The group coordinators of one shard: one per partition of `__consumer_offsets` the shard
//! leads, with routing by group id and merged timers and listings.

use super::config::GroupConfig;
use super::coordinator::{AppendId, CoordinatorStatus, GroupCoordinator, Outputs};
use super::error_code::{self as ec, ErrorCode};
use super::placement::partition_for_group;
use super::requests::{ListGroupsRequest, ListGroupsResponse};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

/// The coordinators a shard runs, keyed by partition of `__consumer_offsets`.
#[derive(Debug)]
pub struct CoordinatorSet {
    config: GroupConfig,
    partitions: i32,
    member_id_seed: u64,
    coordinators: BTreeMap<i32, GroupCoordinator>,
}

impl CoordinatorSet {
    /// Approximate memory of every group and offset of this shard's coordinators, bytes.
    pub fn approximate_bytes(&self) -> usize {
        self.coordinators
            .values()
            .map(GroupCoordinator::approximate_bytes)
            .sum()
    }

    /// `partitions` is the partition count of `__consumer_offsets`.
    pub fn new(config: GroupConfig, partitions: i32, member_id_seed: u64) -> Self {
        CoordinatorSet {
            config,
            partitions: partitions.max(1),
            member_id_seed,
            coordinators: BTreeMap::new(),
        }
    }

    /// The partition of `__consumer_offsets` that owns `group_id`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for_group(group_id, self.partitions)
    }

    /// This shard became leader of `partition`: a fresh coordinator in the Loading state
    /// (replay the partition into it, then `finish_loading`). Replaces any previous one.
    pub fn lead(&mut self, partition: i32) -> &mut GroupCoordinator {
        let seed = self.member_id_seed.wrapping_add(partition as u64);
        let c = GroupCoordinator::new(self.config.clone(), partition, self.partitions, seed);
        match self.coordinators.entry(partition) {
            Entry::Occupied(mut slot) => {
                slot.insert(c);
                slot.into_mut()
            }
            Entry::Vacant(slot) => slot.insert(c),
        }
    }

    /// This shard no longer leads `partition`: parked requests are answered NOT_COORDINATOR.
    pub fn resign(&mut self, partition: i32, out: &mut Outputs) {
        if let Some(mut c) = self.coordinators.remove(&partition) {
            c.resign(out);
        }
    }

    pub fn get_mut(&mut self, partition: i32) -> Option<&mut GroupCoordinator> {
        self.coordinators.get_mut(&partition)
    }

    /// The coordinator of `group_id`, if this shard runs it; otherwise the answer is
    /// NOT_COORDINATOR (the client asks FindCoordinator again).
    pub fn for_group(&mut self, group_id: &str) -> Result<&mut GroupCoordinator, ErrorCode> {
        let partition = self.partition_for(group_id);
        self.coordinators
            .get_mut(&partition)
            .ok_or(ec::NOT_COORDINATOR)
    }

    /// Routes an append completion to the coordinator that asked for it.
    pub fn append_completed(
        &mut self,
        partition: i32,
        id: AppendId,
        result: Result<(), ErrorCode>,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if let Some(c) = self.coordinators.get_mut(&partition) {
            c.append_completed(id, result, now_ms, out);
        }
    }

    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.coordinators
            .values()
            .filter_map(GroupCoordinator::next_deadline_ms)
            .min()
    }

    pub fn tick(&mut self, now_ms: u64, out: &mut Outputs) {
        for c in self.coordinators.values_mut() {
            c.tick(now_ms, out);
        }
    }

    /// Every committed offset of this shard's coordinators as (group, topic, partition,
    /// offset).
    pub fn all_committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let mut out = Vec::new();
        for coordinator in self.coordinators.values() {
            coordinator.all_committed_offsets(&mut out);
        }
        out
    }

    /// ListGroups over every coordinator of the shard. As in Kafka, a partition still
    /// loading makes the answer COORDINATOR_LOAD_IN_PROGRESS, with the groups known so far.
    pub fn list_groups(&self, req: &ListGroupsRequest) -> ListGroupsResponse {
        let mut merged = ListGroupsResponse {
            error_code: ec::NONE,
            groups: Vec::new(),
        };
        for c in self.coordinators.values() {
            if c.status() == CoordinatorStatus::Loading {
                merged.error_code = ec::COORDINATOR_LOAD_IN_PROGRESS;
                continue;
            }
            merged.groups.extend(c.list_groups(req).groups);
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    //! Proves requests reach the coordinator of the group's partition, appends name their
    //! partition and complete there, and listings merge across partitions.
    use super::*;
    use crate::group::requests::*;

    fn commit(group: &str) -> OffsetCommitRequest {
        OffsetCommitRequest {
            group_id: group.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            partitions: vec![OffsetCommitPartition {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: None,
                partition_exists: true,
                commit_timestamp_ms: None,
            }],
        }
    }

    #[test]
    fn group_requests_are_routed_by_partition() {
        let mut set = CoordinatorSet::new(GroupConfig::default(), 16, 1);
        // "test-group" -> 4, "my-group" -> 2 (of 16), checked against Java.
        for p in [2, 4] {
            set.lead(p).finish_loading(0);
        }
        assert_eq!(set.partition_for("test-group"), 4);
        let mut out = Outputs::default();
        for g in ["test-group", "my-group"] {
            let c = set.for_group(g).expect("led here");
            c.offset_commit(1, commit(g), 0, &mut out);
        }
        let partitions: Vec<i32> = out.appends.iter().map(|a| a.partition).collect();
        assert_eq!(partitions, vec![4, 2]);
        let appends = std::mem::take(&mut out.appends);
        for a in appends {
            set.append_completed(a.partition, a.id, Ok(()), 0, &mut out);
        }
        assert_eq!(out.responses.len(), 2);
        let listed = set.list_groups(&ListGroupsRequest::default());
        assert_eq!(listed.error_code, ec::NONE);
        assert_eq!(listed.groups.len(), 2);
        assert_eq!(set.for_group("a").err(), Some(ec::NOT_COORDINATOR));
        set.lead(1);
        assert_eq!(
            set.list_groups(&ListGroupsRequest::default()).error_code,
            ec::COORDINATOR_LOAD_IN_PROGRESS
        );
        set.resign(4, &mut out);
        assert_eq!(set.for_group("test-group").err(), Some(ec::NOT_COORDINATOR));
    }
}
