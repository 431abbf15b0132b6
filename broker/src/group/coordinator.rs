//! The group coordinator of one partition of `__consumer_offsets`, as a sans-IO state machine.
//!
//! Inputs: typed group requests ([`super::requests`]), each with the shell's
//! [`RequestToken`] and the current time; [`GroupCoordinator::tick`] when the time returned
//! by [`GroupCoordinator::next_deadline_ms`] has come; [`GroupCoordinator::append_completed`]
//! when records it asked for are durable (or failed); and, at start, the partition's records
//! through [`GroupCoordinator::replay`] then [`GroupCoordinator::finish_loading`].
//!
//! Outputs ([`Outputs`]): responses keyed by token (JoinGroup and SyncGroup answers come when
//! the rebalance completes, offset commits when their records are durable, so the shell parks
//! those requests) and appends of records to this partition of `__consumer_offsets`.
//!
//! The rules follow Kafka's classic group coordinator (`GroupCoordinator.scala`): KIP-62
//! rebalance timeouts, KIP-134 initial rebalance delay, KIP-345 static membership, KIP-394
//! member id required. No clocks, sockets or files in here.

use super::config::GroupConfig;
use super::error_code::{self as ec, ErrorCode};
use super::member::Member;
use super::metadata::{ms_i64, CommittedOffset, GroupMetadata, GroupState};
use super::placement::partition_for_group;
use super::records::{
    group_metadata_record, group_tombstone, offset_commit_record, offset_tombstone,
    GroupMetadataValue, OffsetCommitValue, OffsetsKey, OffsetsRecord, RecordError,
};
use super::requests::*;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Identifies an append the shell must report back through
/// [`GroupCoordinator::append_completed`].
pub type AppendId = u64;

/// Records to append, in order, to this coordinator's partition of `__consumer_offsets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    /// The partition of `__consumer_offsets` to append to (this coordinator's).
    pub partition: i32,
    pub id: AppendId,
    pub records: Vec<OffsetsRecord>,
}

/// What the shell must do after a call: send responses, append records.
#[derive(Debug, Default)]
pub struct Outputs {
    pub responses: Vec<(RequestToken, Response)>,
    pub appends: Vec<Append>,
}

/// Whether the coordinator serves requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinatorStatus {
    /// Replaying the partition: requests get COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    Active,
    /// This broker no longer leads the partition: requests get NOT_COORDINATOR.
    Resigned,
}

/// Which deadline a timer entry stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Session(String),
    PendingMember(String),
    Join,
    Sync,
    /// An OffsetCommit waiting for its append is answered REQUEST_TIMED_OUT.
    Commit(AppendId),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TimerKey {
    group_id: String,
    kind: TimerKind,
}

/// What to do when an append completes.
#[derive(Debug)]
enum PendingAppend {
    OffsetCommit {
        /// `None` once the commit was answered REQUEST_TIMED_OUT; the records still count
        /// when they land.
        token: Option<RequestToken>,
        group_id: String,
        results: Vec<PartitionResult>,
        /// Index into `results`, and the offset to apply once durable.
        stored: Vec<(usize, CommittedOffset)>,
        /// When the commit is answered REQUEST_TIMED_OUT if the append has not completed.
        timeout_at_ms: u64,
    },
    SyncAssignment {
        group_id: String,
        generation_id: i32,
        assignment: BTreeMap<String, Bytes>,
    },
    StaticRejoin {
        group_id: String,
        generation_id: i32,
        token: RequestToken,
        instance: String,
        old_member_id: String,
        new_member_id: String,
        leader_before: Option<String>,
    },
    DeleteGroups {
        token: RequestToken,
        results: Vec<(String, ErrorCode)>,
        deleted: Vec<usize>,
    },
    /// Kept for the log only (an empty group's new generation): nobody waits on it.
    GroupMetadata,
    OffsetDelete {
        token: RequestToken,
        response: OffsetDeleteResponse,
        /// Indexes into `response.partitions` of the offsets whose tombstones are pending.
        deleted: Vec<usize>,
    },
}

/// Groups and offsets being rebuilt from the log.
#[derive(Debug, Default)]
struct LoadState {
    groups: BTreeMap<String, GroupMetadataValue>,
    offsets: BTreeMap<String, BTreeMap<(String, i32), CommittedOffset>>,
}

/// The group coordinator for one partition of `__consumer_offsets`.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    partition: i32,
    partitions: i32,
    status: CoordinatorStatus,
    groups: BTreeMap<String, GroupMetadata>,
    timers: BTreeSet<(u64, TimerKey)>,
    pending_appends: HashMap<AppendId, PendingAppend>,
    next_append_id: AppendId,
    member_id_seed: u64,
    member_id_counter: u64,
    load: LoadState,
    /// When expired offsets are next looked for.
    retention_check_at_ms: Option<u64>,
}

/// Which API is checking the group id: the offset APIs and the admin ones accept the empty
/// group id for old clients, as Kafka does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GroupIdUse {
    Membership,
    OffsetsOrAdmin,
}

impl GroupCoordinator {
    /// Approximate memory of the groups and offsets this coordinator holds (and of those it
    /// is still loading), bytes.
    pub fn approximate_bytes(&self) -> usize {
        use super::metadata::{offset_bytes, MAP_ENTRY_BYTES};
        let groups: usize = self
            .groups
            .values()
            .map(|group| MAP_ENTRY_BYTES + group.approximate_bytes())
            .sum();
        let loading_groups: usize = self
            .load
            .groups
            .iter()
            .map(|(id, value)| {
                let members: usize = value
                    .members
                    .iter()
                    .map(|m| {
                        std::mem::size_of_val(m)
                            + m.member_id.len()
                            + m.subscription.len()
                            + m.assignment.len()
                    })
                    .sum();
                MAP_ENTRY_BYTES + id.len() + std::mem::size_of_val(value) + members
            })
            .sum();
        let loading_offsets: usize = self
            .load
            .offsets
            .values()
            .flat_map(|offsets| offsets.iter())
            .map(|((topic, _), offset)| offset_bytes(topic, offset))
            .sum();
        groups + loading_groups + loading_offsets
    }

    /// A coordinator for `partition` of a `partitions`-partition `__consumer_offsets`, in the
    /// Loading state. `member_id_seed` makes member ids unique across broker restarts: pass
    /// something that differs each start (the start time, a random number).
    pub fn new(config: GroupConfig, partition: i32, partitions: i32, member_id_seed: u64) -> Self {
        GroupCoordinator {
            config,
            partition,
            partitions: partitions.max(1),
            status: CoordinatorStatus::Loading,
            groups: BTreeMap::new(),
            timers: BTreeSet::new(),
            pending_appends: HashMap::new(),
            next_append_id: 1,
            member_id_seed,
            member_id_counter: 0,
            load: LoadState::default(),
            retention_check_at_ms: None,
        }
    }

    pub fn status(&self) -> CoordinatorStatus {
        self.status
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The earliest time at which [`Self::tick`] has work; `None` if no timer runs.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let timer = self.timers.first().map(|(at, _)| *at);
        match (timer, self.retention_check_at_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How many group timers (sessions, join and sync phases, handed-out ids) are running;
    /// for metrics and tests.
    pub fn group_timer_count(&self) -> usize {
        self.timers.len()
    }

    // ---------------------------------------------------------------- loading

    /// Applies one record of this partition of `__consumer_offsets`, in log order, while
    /// loading. An error names what is wrong inside the key or value; the shell adds the log
    /// offset, reports it, and may skip the record.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RecordError> {
        match OffsetsKey::decode(key)? {
            OffsetsKey::OffsetCommit {
                group,
                topic,
                partition,
            } => match value {
                Some(v) => {
                    let v = OffsetCommitValue::decode(v)?;
                    self.load.offsets.entry(group).or_default().insert(
                        (topic, partition),
                        CommittedOffset {
                            offset: v.offset,
                            leader_epoch: v.leader_epoch,
                            metadata: v.metadata,
                            commit_timestamp_ms: v.commit_timestamp_ms,
                        },
                    );
                }
                None => {
                    if let Some(offsets) = self.load.offsets.get_mut(&group) {
                        offsets.remove(&(topic, partition));
                    }
                }
            },
            OffsetsKey::GroupMetadata { group } => match value {
                Some(v) => {
                    let v = GroupMetadataValue::decode(v)?;
                    self.load.groups.insert(group, v);
                }
                None => {
                    self.load.groups.remove(&group);
                }
            },
        }
        Ok(())
    }

    /// Ends loading: rebuilds the groups from what was replayed and starts serving. Groups
    /// come back in their last stored generation; members stored with them get a fresh
    /// session from `now_ms` (those that do not heartbeat again expire, as in Kafka).
    pub fn finish_loading(&mut self, now_ms: u64) {
        let load = std::mem::take(&mut self.load);
        let mut offsets = load.offsets;
        for (group_id, value) in load.groups {
            let mut g = GroupMetadata::new(&group_id, now_ms);
            g.generation_id = value.generation;
            g.protocol_type = Some(value.protocol_type.clone()).filter(|t| !t.is_empty());
            g.protocol_name = value.protocol.clone();
            if value.current_state_timestamp_ms >= 0 {
                g.state_timestamp_ms = value.current_state_timestamp_ms;
            }
            for m in value.members {
                let member = Member {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    protocol_type: value.protocol_type.clone(),
                    protocols: vec![JoinProtocol {
                        name: value.protocol.clone().unwrap_or_default(),
                        metadata: m.subscription,
                    }],
                    assignment: m.assignment,
                    awaiting_join: None,
                    awaiting_sync: None,
                    is_new: false,
                    session_deadline_ms: None,
                };
                g.add(member);
            }
            if !g.members.is_empty() {
                // A stored generation with members was stable when written (it is written
                // when the leader's assignment is stored).
                g.state = GroupState::Stable;
                g.leader_id = value
                    .leader
                    .filter(|l| g.members.contains_key(l))
                    .or_else(|| g.members.keys().next().cloned());
            }
            g.offsets = offsets.remove(&group_id).unwrap_or_default();
            let ids: Vec<String> = g.members.keys().cloned().collect();
            for id in ids {
                self.reset_session(&mut g, &id, now_ms);
            }
            self.groups.insert(group_id, g);
        }
        // Offsets of groups that never used group management (or whose metadata was
        // deleted without their offsets) make Empty groups.
        for (group_id, group_offsets) in offsets {
            if group_offsets.is_empty() {
                continue;
            }
            let mut g = GroupMetadata::new(&group_id, now_ms);
            g.offsets = group_offsets;
            self.groups.insert(group_id, g);
        }
        self.status = CoordinatorStatus::Active;
        self.retention_check_at_ms =
            Some(now_ms.saturating_add(self.config.offsets_retention_check_interval_ms.max(1)));
    }

    /// This broker stopped leading the partition: every parked request is answered
    /// NOT_COORDINATOR (clients then find the new coordinator) and all state is dropped.
    pub fn resign(&mut self, out: &mut Outputs) {
        for g in self.groups.values_mut() {
            for m in g.members.values_mut() {
                if let Some(t) = m.awaiting_join.take() {
                    out.responses.push((
                        t,
                        Response::JoinGroup(JoinGroupResponse::error(
                            ec::NOT_COORDINATOR,
                            &m.member_id,
                        )),
                    ));
                }
                if let Some(t) = m.awaiting_sync.take() {
                    out.responses.push((
                        t,
                        Response::SyncGroup(SyncGroupResponse::error(ec::NOT_COORDINATOR)),
                    ));
                }
            }
        }
        let mut pending: Vec<(AppendId, PendingAppend)> = self.pending_appends.drain().collect();
        pending.sort_by_key(|(id, _)| *id);
        for (_, p) in pending {
            match p {
                PendingAppend::OffsetCommit {
                    token: Some(token),
                    mut results,
                    ..
                } => {
                    for r in &mut results {
                        r.error_code = ec::NOT_COORDINATOR;
                    }
                    out.responses.push((
                        token,
                        Response::OffsetCommit(OffsetCommitResponse {
                            partitions: results,
                        }),
                    ));
                }
                PendingAppend::OffsetCommit { token: None, .. } => {}
                PendingAppend::StaticRejoin {
                    token,
                    new_member_id,
                    ..
                } => out.responses.push((
                    token,
                    Response::JoinGroup(JoinGroupResponse::error(
                        ec::NOT_COORDINATOR,
                        &new_member_id,
                    )),
                )),
                PendingAppend::DeleteGroups {
                    token,
                    mut results,
                    deleted,
                } => {
                    for i in deleted {
                        results[i].1 = ec::NOT_COORDINATOR;
                    }
                    out.responses.push((
                        token,
                        Response::DeleteGroups(DeleteGroupsResponse { results }),
                    ));
                }
                PendingAppend::OffsetDelete {
                    token,
                    mut response,
                    deleted,
                } => {
                    for i in deleted {
                        response.partitions[i].error_code = ec::NOT_COORDINATOR;
                    }
                    out.responses
                        .push((token, Response::OffsetDelete(response)));
                }
                PendingAppend::SyncAssignment { .. } | PendingAppend::GroupMetadata => {}
            }
        }
        self.groups.clear();
        self.timers.clear();
        self.retention_check_at_ms = None;
        self.status = CoordinatorStatus::Resigned;
    }

    // ---------------------------------------------------------------- requests

    /// JoinGroup. The answer is usually deferred until the rebalance completes.
    pub fn join_group(
        &mut self,
        token: RequestToken,
        req: JoinGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let reply_error = |out: &mut Outputs, code| {
            out.responses.push((
                token,
                Response::JoinGroup(JoinGroupResponse::error(code, &req.member_id)),
            ))
        };
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::Membership) {
            return reply_error(out, code);
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return reply_error(out, ec::INVALID_SESSION_TIMEOUT);
        }
        let new_member = req.member_id.is_empty();
        let mut g = match self.groups.remove(&req.group_id) {
            Some(g) => g,
            None if !new_member => return reply_error(out, ec::UNKNOWN_MEMBER_ID),
            None if self.groups.len() >= self.config.max_groups => {
                return reply_error(out, ec::COORDINATOR_NOT_AVAILABLE)
            }
            None => GroupMetadata::new(&req.group_id, now_ms),
        };
        // Kafka's acceptJoiningMember: members already in the group (or holding a handed-out
        // id) are always let back in; newcomers only below the limit.
        let known = g.members.contains_key(&req.member_id)
            || g.pending_members.contains_key(&req.member_id)
            || req
                .group_instance_id
                .as_ref()
                .is_some_and(|i| g.static_members.contains_key(i));
        if g.members.len() >= self.config.max_members_per_group && !known {
            reply_error(out, ec::GROUP_MAX_SIZE_REACHED);
        } else if new_member {
            self.join_new_member(&mut g, token, req, now_ms, out);
        } else {
            self.join_current_member(&mut g, token, req, now_ms, out);
        }
        if g.state == GroupState::PreparingRebalance {
            self.try_complete_join(&mut g, now_ms, out);
        }
        self.put_back(g);
    }

    /// SyncGroup. A follower's answer waits for the leader's assignment to be stored.
    pub fn sync_group(
        &mut self,
        token: RequestToken,
        req: SyncGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let reply =
            |out: &mut Outputs, resp| out.responses.push((token, Response::SyncGroup(resp)));
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::Membership) {
            return reply(out, SyncGroupResponse::error(code));
        }
        let Some(mut g) = self.groups.remove(&req.group_id) else {
            return reply(out, SyncGroupResponse::error(ec::UNKNOWN_MEMBER_ID));
        };
        let error = if g.is_static_member_fenced(req.group_instance_id.as_deref(), &req.member_id) {
            Some(ec::FENCED_INSTANCE_ID)
        } else if !g.members.contains_key(&req.member_id) {
            Some(ec::UNKNOWN_MEMBER_ID)
        } else if req.generation_id != g.generation_id {
            Some(ec::ILLEGAL_GENERATION)
        } else if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| g.protocol_type.as_ref() != Some(t))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| g.protocol_name.as_ref() != Some(n))
        {
            Some(ec::INCONSISTENT_GROUP_PROTOCOL)
        } else {
            match g.state {
                GroupState::Empty | GroupState::Dead => Some(ec::UNKNOWN_MEMBER_ID),
                GroupState::PreparingRebalance => Some(ec::REBALANCE_IN_PROGRESS),
                GroupState::CompletingRebalance | GroupState::Stable => None,
            }
        };
        if let Some(code) = error {
            reply(out, SyncGroupResponse::error(code));
            return self.put_back(g);
        }
        self.remove_pending_sync(&mut g, &req.member_id);
        if g.state == GroupState::Stable {
            let assignment = g
                .members
                .get(&req.member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default();
            reply(
                out,
                SyncGroupResponse {
                    error_code: ec::NONE,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol_name.clone(),
                    assignment,
                },
            );
            self.reset_session(&mut g, &req.member_id, now_ms);
            return self.put_back(g);
        }
        // CompletingRebalance: park until the leader's assignment is stored.
        if let Some(member) = g.members.get_mut(&req.member_id) {
            if let Some(previous) = member.awaiting_sync.replace(token) {
                out.responses.push((
                    previous,
                    Response::SyncGroup(SyncGroupResponse::error(ec::REBALANCE_IN_PROGRESS)),
                ));
            }
        }
        if g.is_leader(&req.member_id) {
            // Members the leader left out get an empty assignment, as in Kafka; entries for
            // non-members are ignored.
            let given: HashMap<&str, &Bytes> = req
                .assignments
                .iter()
                .map(|a| (a.member_id.as_str(), &a.assignment))
                .collect();
            let assignment: BTreeMap<String, Bytes> = g
                .members
                .keys()
                .map(|id| {
                    let a = given
                        .get(id.as_str())
                        .map(|b| (*b).clone())
                        .unwrap_or_default();
                    (id.clone(), a)
                })
                .collect();
            let record = group_metadata_record(&g.group_id, &g.to_record_value(Some(&assignment)));
            self.append(
                vec![record],
                PendingAppend::SyncAssignment {
                    group_id: g.group_id.clone(),
                    generation_id: g.generation_id,
                    assignment,
                },
                out,
            );
        }
        self.put_back(g);
    }

    /// Heartbeat: keeps the member's session alive and tells it about rebalances.
    pub fn heartbeat(
        &mut self,
        token: RequestToken,
        req: HeartbeatRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let code = self.heartbeat_code(&req, now_ms);
        out.responses.push((
            token,
            Response::Heartbeat(HeartbeatResponse { error_code: code }),
        ));
    }

    fn heartbeat_code(&mut self, req: &HeartbeatRequest, now_ms: u64) -> ErrorCode {
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::Membership) {
            return code;
        }
        let Some(mut g) = self.groups.remove(&req.group_id) else {
            return ec::UNKNOWN_MEMBER_ID;
        };
        let code = if g.is_static_member_fenced(req.group_instance_id.as_deref(), &req.member_id) {
            ec::FENCED_INSTANCE_ID
        } else if !g.members.contains_key(&req.member_id) {
            ec::UNKNOWN_MEMBER_ID
        } else if req.generation_id != g.generation_id {
            ec::ILLEGAL_GENERATION
        } else {
            match g.state {
                GroupState::Empty | GroupState::Dead => ec::UNKNOWN_MEMBER_ID,
                GroupState::CompletingRebalance | GroupState::Stable => {
                    self.reset_session(&mut g, &req.member_id, now_ms);
                    ec::NONE
                }
                GroupState::PreparingRebalance => {
                    self.reset_session(&mut g, &req.member_id, now_ms);
                    ec::REBALANCE_IN_PROGRESS
                }
            }
        };
        self.put_back(g);
        code
    }

    /// LeaveGroup for a batch of members (one for v0-v2).
    pub fn leave_group(
        &mut self,
        token: RequestToken,
        req: LeaveGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let mut reply = LeaveGroupResponse {
            error_code: ec::NONE,
            members: Vec::with_capacity(req.members.len()),
        };
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::Membership) {
            reply.error_code = code;
            out.responses.push((token, Response::LeaveGroup(reply)));
            return;
        }
        let mut group = self.groups.remove(&req.group_id);
        for leaving in req.members {
            let code = match group.as_mut() {
                None => ec::UNKNOWN_MEMBER_ID,
                Some(g) => self.leave_one(g, &leaving, now_ms, out),
            };
            reply.members.push(LeaveGroupMemberResult {
                member_id: leaving.member_id,
                group_instance_id: leaving.group_instance_id,
                error_code: code,
            });
        }
        if let Some(g) = group {
            self.put_back(g);
        }
        out.responses.push((token, Response::LeaveGroup(reply)));
    }

    fn leave_one(
        &mut self,
        g: &mut GroupMetadata,
        leaving: &LeavingMember,
        now_ms: u64,
        out: &mut Outputs,
    ) -> ErrorCode {
        if let Some(deadline) = g.pending_members.remove(&leaving.member_id) {
            self.cancel_timer(
                &g.group_id,
                TimerKind::PendingMember(leaving.member_id.clone()),
                deadline,
            );
            if g.state == GroupState::PreparingRebalance {
                self.try_complete_join(g, now_ms, out);
            }
            return ec::NONE;
        }
        if g.is_static_member_fenced(leaving.group_instance_id.as_deref(), &leaving.member_id) {
            return ec::FENCED_INSTANCE_ID;
        }
        let member_id = if g.members.contains_key(&leaving.member_id) {
            leaving.member_id.clone()
        } else if let Some(id) = leaving
            .group_instance_id
            .as_ref()
            .and_then(|i| g.static_members.get(i))
        {
            id.clone()
        } else {
            return ec::UNKNOWN_MEMBER_ID;
        };
        self.remove_member_and_update_group(g, &member_id, now_ms, out);
        ec::NONE
    }

    /// OffsetCommit. Answered once the records are durable (or at once on error).
    pub fn offset_commit(
        &mut self,
        token: RequestToken,
        req: OffsetCommitRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let all = |code: ErrorCode| OffsetCommitResponse {
            partitions: req
                .partitions
                .iter()
                .map(|p| PartitionResult {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    error_code: code,
                })
                .collect(),
        };
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::OffsetsOrAdmin) {
            out.responses
                .push((token, Response::OffsetCommit(all(code))));
            return;
        }
        let mut g = match self.groups.remove(&req.group_id) {
            Some(g) => g,
            // A commit from a client that does not use group management creates the group.
            None if req.generation_id < 0 && self.groups.len() < self.config.max_groups => {
                GroupMetadata::new(&req.group_id, now_ms)
            }
            None if req.generation_id < 0 => {
                let resp = all(ec::COORDINATOR_NOT_AVAILABLE);
                out.responses.push((token, Response::OffsetCommit(resp)));
                return;
            }
            None => {
                let resp = all(ec::ILLEGAL_GENERATION);
                out.responses.push((token, Response::OffsetCommit(resp)));
                return;
            }
        };
        let error = if g.is_static_member_fenced(req.group_instance_id.as_deref(), &req.member_id) {
            Some(ec::FENCED_INSTANCE_ID)
        } else if req.generation_id < 0 && g.state == GroupState::Empty {
            None
        } else if !g.members.contains_key(&req.member_id) {
            Some(ec::UNKNOWN_MEMBER_ID)
        } else if req.generation_id != g.generation_id {
            Some(ec::ILLEGAL_GENERATION)
        } else {
            match g.state {
                GroupState::Stable | GroupState::PreparingRebalance => {
                    // Commits are allowed while preparing a rebalance: the member learns
                    // about it from its next heartbeat and commits before revoking.
                    self.reset_session(&mut g, &req.member_id, now_ms);
                    None
                }
                GroupState::CompletingRebalance => Some(ec::REBALANCE_IN_PROGRESS),
                GroupState::Empty | GroupState::Dead => Some(ec::UNKNOWN_MEMBER_ID),
            }
        };
        if let Some(code) = error {
            out.responses
                .push((token, Response::OffsetCommit(all(code))));
            return self.put_back(g);
        }
        let mut results = Vec::with_capacity(req.partitions.len());
        let mut stored = Vec::new();
        let mut records = Vec::new();
        for (i, p) in req.partitions.into_iter().enumerate() {
            let metadata = p.metadata.unwrap_or_default();
            let code = if !p.partition_exists {
                ec::UNKNOWN_TOPIC_OR_PARTITION
            } else if metadata.len() > self.config.max_offset_metadata_bytes {
                ec::OFFSET_METADATA_TOO_LARGE
            } else {
                let value = OffsetCommitValue {
                    offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata: metadata.clone(),
                    commit_timestamp_ms: p.commit_timestamp_ms.unwrap_or(ms_i64(now_ms)),
                    expire_timestamp_ms: None,
                };
                records.push(offset_commit_record(
                    &g.group_id,
                    &p.topic,
                    p.partition,
                    &value,
                ));
                stored.push((
                    i,
                    CommittedOffset {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata,
                        commit_timestamp_ms: value.commit_timestamp_ms,
                    },
                ));
                ec::NONE
            };
            results.push(PartitionResult {
                topic: p.topic,
                partition: p.partition,
                error_code: code,
            });
        }
        if records.is_empty() {
            out.responses.push((
                token,
                Response::OffsetCommit(OffsetCommitResponse {
                    partitions: results,
                }),
            ));
        } else {
            let session_ms = g
                .members
                .get(&req.member_id)
                .map(|m| timeout_ms(m.session_timeout_ms));
            let wait_ms = self.config.offsets_commit_timeout_ms.max(1);
            let wait_ms = session_ms.map_or(wait_ms, |s| wait_ms.min((s / 2).max(1)));
            let timeout_at_ms = now_ms.saturating_add(wait_ms);
            let id = self.append(
                records,
                PendingAppend::OffsetCommit {
                    token: Some(token),
                    group_id: g.group_id.clone(),
                    results,
                    stored,
                    timeout_at_ms,
                },
                out,
            );
            self.schedule(&g.group_id, TimerKind::Commit(id), timeout_at_ms);
        }
        self.put_back(g);
    }

    /// OffsetFetch for one group: answered at once from memory.
    pub fn offset_fetch(&self, req: &OffsetFetchRequest) -> OffsetFetchResponse {
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::OffsetsOrAdmin) {
            return OffsetFetchResponse {
                error_code: code,
                partitions: Vec::new(),
            };
        }
        let offsets = self.groups.get(&req.group_id).map(|g| &g.offsets);
        let fetched = |topic: &str, partition: i32, c: Option<&CommittedOffset>| FetchedOffset {
            topic: topic.to_owned(),
            partition,
            offset: c.map_or(-1, |c| c.offset),
            leader_epoch: c.map_or(-1, |c| c.leader_epoch),
            metadata: c.map(|c| c.metadata.clone()).unwrap_or_default(),
            error_code: ec::NONE,
        };
        let partitions = match &req.partitions {
            Some(list) => list
                .iter()
                .map(|(t, p)| fetched(t, *p, offsets.and_then(|o| o.get(&(t.clone(), *p)))))
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|((t, p), c)| fetched(t, *p, Some(c)))
                .collect(),
        };
        OffsetFetchResponse {
            error_code: ec::NONE,
            partitions,
        }
    }

    /// ListGroups over this coordinator's groups (the shell merges all partitions').
    pub fn list_groups(&self, req: &ListGroupsRequest) -> ListGroupsResponse {
        let error_code = self.status_error();
        if error_code != ec::NONE {
            return ListGroupsResponse {
                error_code,
                groups: Vec::new(),
            };
        }
        let wanted = |filter: &[String], value: &str| {
            filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
        };
        // KIP-848 group types: every group here is a "classic" one.
        let type_wanted = wanted(&req.types_filter, "classic");
        let groups = self
            .groups
            .values()
            .filter(|g| type_wanted && wanted(&req.states_filter, g.state.as_str()))
            .map(|g| ListedGroup {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.as_str(),
            })
            .collect();
        ListGroupsResponse {
            error_code: ec::NONE,
            groups,
        }
    }

    /// DescribeGroups for the given groups, answered at once.
    pub fn describe_groups(&self, group_ids: &[String]) -> Vec<DescribedGroup> {
        group_ids.iter().map(|id| self.describe_group(id)).collect()
    }

    fn describe_group(&self, group_id: &str) -> DescribedGroup {
        let mut d = DescribedGroup {
            error_code: ec::NONE,
            group_id: group_id.to_owned(),
            state: GroupState::Dead.as_str(),
            protocol_type: String::new(),
            protocol_data: String::new(),
            members: Vec::new(),
        };
        if let Err(code) = self.check_group(group_id, GroupIdUse::OffsetsOrAdmin) {
            d.error_code = code;
            return d;
        }
        let Some(g) = self.groups.get(group_id) else {
            return d;
        };
        let stable = g.state == GroupState::Stable;
        d.state = g.state.as_str();
        d.protocol_type = g.protocol_type.clone().unwrap_or_default();
        if stable {
            d.protocol_data = g.protocol_name.clone().unwrap_or_default();
        }
        d.members = g
            .members
            .values()
            .map(|m| DescribedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: match (&g.protocol_name, stable) {
                    (Some(p), true) => m.metadata(p),
                    _ => Bytes::new(),
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        d
    }

    /// Every committed offset this coordinator holds as (group, topic, partition, offset),
    /// for the consumer lag metrics.
    pub fn all_committed_offsets(&self, out: &mut Vec<(String, String, i32, i64)>) {
        for (group, metadata) in &self.groups {
            for ((topic, partition), committed) in &metadata.offsets {
                out.push((group.clone(), topic.clone(), *partition, committed.offset));
            }
        }
    }

    /// Committed offsets of a group, for `broker groups describe` and lag reports.
    pub fn committed_offsets(&self, group_id: &str) -> Vec<(String, i32, CommittedOffset)> {
        self.groups
            .get(group_id)
            .map(|g| {
                g.offsets
                    .iter()
                    .map(|((t, p), c)| (t.clone(), *p, c.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The state and generation of a group, if this coordinator holds it.
    pub fn group_state(&self, group_id: &str) -> Option<(GroupState, i32)> {
        self.groups
            .get(group_id)
            .map(|g| (g.state, g.generation_id))
    }

    /// DeleteGroups: only Empty groups are deleted (with all their offsets).
    pub fn delete_groups(
        &mut self,
        token: RequestToken,
        group_ids: Vec<String>,
        _now_ms: u64,
        out: &mut Outputs,
    ) {
        let mut results = Vec::with_capacity(group_ids.len());
        let mut deleted = Vec::new();
        let mut records = Vec::new();
        for group_id in group_ids {
            let code = match self.check_group(&group_id, GroupIdUse::OffsetsOrAdmin) {
                Err(code) => code,
                Ok(()) => match self.groups.get(&group_id).map(|g| g.state) {
                    None | Some(GroupState::Dead) => ec::GROUP_ID_NOT_FOUND,
                    Some(GroupState::Empty) => {
                        if let Some(g) = self.groups.remove(&group_id) {
                            for (member_id, deadline) in &g.pending_members {
                                self.cancel_timer(
                                    &group_id,
                                    TimerKind::PendingMember(member_id.clone()),
                                    *deadline,
                                );
                            }
                            for (topic, partition) in g.offsets.keys() {
                                records.push(offset_tombstone(&group_id, topic, *partition));
                            }
                            records.push(group_tombstone(&group_id));
                        }
                        deleted.push(results.len());
                        ec::NONE
                    }
                    Some(_) => ec::NON_EMPTY_GROUP,
                },
            };
            results.push((group_id, code));
        }
        if records.is_empty() {
            out.responses.push((
                token,
                Response::DeleteGroups(DeleteGroupsResponse { results }),
            ));
        } else {
            self.append(
                records,
                PendingAppend::DeleteGroups {
                    token,
                    results,
                    deleted,
                },
                out,
            );
        }
    }

    /// OffsetDelete (Kafka's `handleDeleteOffsets`): an Empty group loses the asked offsets;
    /// a consumer group with members keeps those of topics its members subscribe to
    /// (GROUP_SUBSCRIBED_TO_TOPIC) and loses the others; a group of another protocol type
    /// with members is NON_EMPTY_GROUP. Answered once the tombstones are durable. Memory
    /// drops the offsets at once, as for DeleteGroups: a commit racing the tombstones lands
    /// after them in the log, so memory and replay agree.
    pub fn offset_delete(
        &mut self,
        token: RequestToken,
        req: OffsetDeleteRequest,
        _now_ms: u64,
        out: &mut Outputs,
    ) {
        let group_error = |code| OffsetDeleteResponse {
            error_code: code,
            partitions: Vec::new(),
        };
        if let Err(code) = self.check_group(&req.group_id, GroupIdUse::OffsetsOrAdmin) {
            out.responses
                .push((token, Response::OffsetDelete(group_error(code))));
            return;
        }
        let Some(g) = self.groups.get_mut(&req.group_id) else {
            out.responses.push((
                token,
                Response::OffsetDelete(group_error(ec::GROUP_ID_NOT_FOUND)),
            ));
            return;
        };
        // Topics that may not lose their offsets; `None`: every topic may.
        let subscribed: Option<Option<BTreeSet<String>>> = match g.state {
            GroupState::Empty | GroupState::Dead => None,
            _ if g.protocol_type.as_deref() == Some("consumer") => Some(subscriptions(
                g.protocol_name.as_deref(),
                g.members.values(),
            )),
            _ => {
                out.responses.push((
                    token,
                    Response::OffsetDelete(group_error(ec::NON_EMPTY_GROUP)),
                ));
                return;
            }
        };
        let mut response = OffsetDeleteResponse {
            error_code: ec::NONE,
            partitions: Vec::with_capacity(req.partitions.len()),
        };
        let mut records = Vec::new();
        let mut deleted = Vec::new();
        for (topic, partition) in req.partitions {
            let refused = match &subscribed {
                None => false,
                // Subscriptions that cannot be read protect every topic, as Kafka does.
                Some(None) => true,
                Some(Some(topics)) => topics.contains(&topic),
            };
            let code = if refused {
                ec::GROUP_SUBSCRIBED_TO_TOPIC
            } else {
                if g.offsets.remove(&(topic.clone(), partition)).is_some() {
                    records.push(offset_tombstone(&g.group_id, &topic, partition));
                    deleted.push(response.partitions.len());
                }
                ec::NONE
            };
            response.partitions.push(PartitionResult {
                topic,
                partition,
                error_code: code,
            });
        }
        if records.is_empty() {
            out.responses
                .push((token, Response::OffsetDelete(response)));
        } else {
            self.append(
                records,
                PendingAppend::OffsetDelete {
                    token,
                    response,
                    deleted,
                },
                out,
            );
        }
    }

    // ---------------------------------------------------------------- time and appends

    /// Runs every timer due at `now_ms`: session expiries, the end of a rebalance's join
    /// phase, members that never sent SyncGroup, handed-out member ids never used.
    pub fn tick(&mut self, now_ms: u64, out: &mut Outputs) {
        if self.retention_check_at_ms.is_some_and(|at| at <= now_ms) {
            self.expire_offsets(now_ms, out);
            self.retention_check_at_ms =
                Some(now_ms.saturating_add(self.config.offsets_retention_check_interval_ms.max(1)));
        }
        // Handlers schedule new timers at least 1 ms ahead, so this loop ends.
        while let Some((at, key)) = self.timers.first().cloned() {
            if at > now_ms {
                break;
            }
            self.timers.remove(&(at, key.clone()));
            if let TimerKind::Commit(id) = key.kind {
                self.on_commit_timeout(id, out);
                continue;
            }
            let Some(mut g) = self.groups.remove(&key.group_id) else {
                continue;
            };
            match key.kind {
                TimerKind::Session(member_id) => {
                    self.on_session_expired(&mut g, &member_id, at, now_ms, out)
                }
                TimerKind::PendingMember(member_id) => {
                    if g.pending_members.get(&member_id) == Some(&at) {
                        g.pending_members.remove(&member_id);
                        if g.state == GroupState::PreparingRebalance {
                            self.try_complete_join(&mut g, now_ms, out);
                        }
                    }
                }
                TimerKind::Join => {
                    if g.join_deadline_ms == Some(at) {
                        g.join_deadline_ms = None;
                        self.on_join_deadline(&mut g, now_ms, out);
                    }
                }
                TimerKind::Sync => {
                    if g.sync_deadline_ms == Some(at) {
                        g.sync_deadline_ms = None;
                        self.on_sync_deadline(&mut g, now_ms, out);
                    }
                }
                TimerKind::Commit(_) => {}
            }
            self.put_back(g);
        }
    }

    /// The shell appended (or failed to append) the records of `id`. `result` is the
    /// append's Kafka error code on failure.
    pub fn append_completed(
        &mut self,
        id: AppendId,
        result: Result<(), ErrorCode>,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let Some(pending) = self.pending_appends.remove(&id) else {
            return;
        };
        match pending {
            PendingAppend::GroupMetadata => {}
            PendingAppend::OffsetCommit {
                token,
                group_id,
                mut results,
                stored,
                timeout_at_ms,
            } => {
                self.cancel_timer(&group_id, TimerKind::Commit(id), timeout_at_ms);
                match result {
                    Ok(()) => {
                        // The log now holds these offsets, so memory does too, even if the
                        // group was deleted meanwhile (replay would bring them back).
                        let mut g = self
                            .groups
                            .remove(&group_id)
                            .unwrap_or_else(|| GroupMetadata::new(&group_id, now_ms));
                        for (i, c) in stored {
                            let r = &results[i];
                            g.offsets.insert((r.topic.clone(), r.partition), c);
                        }
                        self.put_back(g);
                    }
                    Err(code) => {
                        let code = ec::offset_store_error(code);
                        for (i, _) in stored {
                            results[i].error_code = code;
                        }
                    }
                }
                if let Some(token) = token {
                    out.responses.push((
                        token,
                        Response::OffsetCommit(OffsetCommitResponse {
                            partitions: results,
                        }),
                    ));
                }
            }
            PendingAppend::SyncAssignment {
                group_id,
                generation_id,
                assignment,
            } => {
                let Some(mut g) = self.groups.remove(&group_id) else {
                    return;
                };
                // Another rebalance may have started while the append was in flight.
                if g.state == GroupState::CompletingRebalance && g.generation_id == generation_id {
                    match result {
                        Ok(()) => {
                            for (id, m) in g.members.iter_mut() {
                                m.assignment = assignment.get(id).cloned().unwrap_or_default();
                            }
                            self.propagate_assignment(&mut g, ec::NONE, now_ms, out);
                            g.state = GroupState::Stable;
                            g.state_timestamp_ms = ms_i64(now_ms);
                        }
                        Err(code) => {
                            self.reset_and_propagate_assignment_error(
                                &mut g,
                                ec::group_store_error(code),
                                now_ms,
                                out,
                            );
                            self.maybe_prepare_rebalance(&mut g, now_ms, out);
                        }
                    }
                }
                self.put_back(g);
            }
            PendingAppend::StaticRejoin {
                group_id,
                generation_id,
                token,
                instance,
                old_member_id,
                new_member_id,
                leader_before,
            } => {
                let Some(mut g) = self.groups.remove(&group_id) else {
                    return;
                };
                let still_parked = g
                    .members
                    .get(&new_member_id)
                    .is_some_and(|m| m.awaiting_join == Some(token));
                if still_parked {
                    if let Some(m) = g.members.get_mut(&new_member_id) {
                        m.awaiting_join = None;
                    }
                    match result {
                        Ok(())
                            if g.state == GroupState::Stable
                                && g.generation_id == generation_id =>
                        {
                            let is_leader = g.is_leader(&new_member_id);
                            let resp = JoinGroupResponse {
                                error_code: ec::NONE,
                                generation_id: g.generation_id,
                                protocol_type: g.protocol_type.clone(),
                                protocol_name: g.protocol_name.clone(),
                                // The leader id from before the rejoin: an old client that
                                // rejoins as leader must not recompute the assignment.
                                leader: leader_before.unwrap_or_default(),
                                skip_assignment: is_leader,
                                member_id: new_member_id.clone(),
                                members: if is_leader {
                                    current_member_metadata(&g)
                                } else {
                                    Vec::new()
                                },
                            };
                            out.responses.push((token, Response::JoinGroup(resp)));
                        }
                        Ok(()) => {
                            // A rebalance started meanwhile: the member joins it.
                            if let Some(m) = g.members.get_mut(&new_member_id) {
                                m.awaiting_join = Some(token);
                            }
                        }
                        Err(code) => {
                            // Undo the replacement so the old member id stays valid.
                            self.rekey_member(
                                &mut g,
                                &instance,
                                &new_member_id,
                                &old_member_id,
                                now_ms,
                            );
                            out.responses.push((
                                token,
                                Response::JoinGroup(JoinGroupResponse::error(
                                    ec::group_store_error(code),
                                    &new_member_id,
                                )),
                            ));
                        }
                    }
                }
                if g.state == GroupState::PreparingRebalance {
                    self.try_complete_join(&mut g, now_ms, out);
                }
                self.put_back(g);
            }
            PendingAppend::DeleteGroups {
                token,
                mut results,
                deleted,
            } => {
                if let Err(code) = result {
                    let code = ec::group_store_error(code);
                    for i in deleted {
                        results[i].1 = code;
                    }
                }
                out.responses.push((
                    token,
                    Response::DeleteGroups(DeleteGroupsResponse { results }),
                ));
            }
            PendingAppend::OffsetDelete {
                token,
                mut response,
                deleted,
            } => {
                if let Err(code) = result {
                    let code = ec::offset_store_error(code);
                    for i in deleted {
                        response.partitions[i].error_code = code;
                    }
                }
                out.responses
                    .push((token, Response::OffsetDelete(response)));
            }
        }
    }

    /// Offset retention (Kafka's `offsets.retention.minutes`, KIP-211): an Empty group that
    /// used group management loses all its offsets once it has been empty for the retention
    /// time; a group that never did (commits with generation -1) loses each offset that
    /// many milliseconds after it was committed. A group left with nothing is deleted.
    /// Groups with members keep their offsets (the consumer protocol's subscriptions would be
    /// needed to tell which are stale). Tombstones go to the log like any deletion.
    fn expire_offsets(&mut self, now_ms: u64, out: &mut Outputs) {
        let retention_ms = self.config.offsets_retention_ms;
        let now = ms_i64(now_ms);
        let busy: BTreeSet<String> = self
            .pending_appends
            .values()
            .filter_map(|p| match p {
                PendingAppend::OffsetCommit { group_id, .. } => Some(group_id.clone()),
                _ => None,
            })
            .collect();
        let mut records = Vec::new();
        let mut emptied = Vec::new();
        for g in self.groups.values_mut() {
            // A commit still in flight would land after our tombstones in memory but before
            // them in the log: leave such groups for the next check.
            if g.state != GroupState::Empty || busy.contains(&g.group_id) {
                continue;
            }
            let expired = |base_ms: i64| base_ms.saturating_add(ms_i64(retention_ms)) <= now;
            let group_expired = g.protocol_type.is_some() && expired(g.state_timestamp_ms);
            let gone: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, c)| group_expired || expired(c.commit_timestamp_ms))
                .map(|(k, _)| k.clone())
                .collect();
            for key in gone {
                records.push(offset_tombstone(&g.group_id, &key.0, key.1));
                g.offsets.remove(&key);
            }
            if g.offsets.is_empty() && g.members.is_empty() && g.pending_members.is_empty() {
                emptied.push(g.group_id.clone());
            }
        }
        for group_id in emptied {
            if self.groups.remove(&group_id).is_some() {
                records.push(group_tombstone(&group_id));
            }
        }
        if !records.is_empty() {
            self.append(records, PendingAppend::GroupMetadata, out);
        }
    }

    // ---------------------------------------------------------------- join logic

    fn join_new_member(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: JoinGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if !g.supports_protocols(&req.protocol_type, &req.protocols) {
            out.responses.push((
                token,
                Response::JoinGroup(JoinGroupResponse::error(
                    ec::INCONSISTENT_GROUP_PROTOCOL,
                    &req.member_id,
                )),
            ));
            return;
        }
        let prefix = req.group_instance_id.as_deref().unwrap_or(&req.client_id);
        let new_id = self.generate_member_id(prefix);
        match req.group_instance_id.clone() {
            Some(instance) => match g.static_members.get(&instance).cloned() {
                Some(old_id) => self.update_static_member_and_rebalance(
                    g, token, req, &instance, &old_id, &new_id, now_ms, out,
                ),
                None => self.add_member_and_rebalance(g, token, req, new_id, now_ms, out),
            },
            None if req.require_known_member_id => {
                // KIP-394: hand out the id; the member must come back with it, so a client
                // that times out and retries does not leave defunct members behind.
                let deadline = now_ms.saturating_add(timeout_ms(req.session_timeout_ms));
                g.pending_members.insert(new_id.clone(), deadline);
                self.schedule(
                    &g.group_id,
                    TimerKind::PendingMember(new_id.clone()),
                    deadline,
                );
                out.responses.push((
                    token,
                    Response::JoinGroup(JoinGroupResponse::error(ec::MEMBER_ID_REQUIRED, &new_id)),
                ));
            }
            None => self.add_member_and_rebalance(g, token, req, new_id, now_ms, out),
        }
    }

    fn join_current_member(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: JoinGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let reply_error = |out: &mut Outputs, code| {
            out.responses.push((
                token,
                Response::JoinGroup(JoinGroupResponse::error(code, &req.member_id)),
            ))
        };
        if !g.supports_protocols(&req.protocol_type, &req.protocols) {
            return reply_error(out, ec::INCONSISTENT_GROUP_PROTOCOL);
        }
        if let Some(deadline) = g.pending_members.get(&req.member_id).copied() {
            self.cancel_timer(
                &g.group_id,
                TimerKind::PendingMember(req.member_id.clone()),
                deadline,
            );
            let id = req.member_id.clone();
            return self.add_member_and_rebalance(g, token, req, id, now_ms, out);
        }
        if g.is_static_member_fenced(req.group_instance_id.as_deref(), &req.member_id) {
            return reply_error(out, ec::FENCED_INSTANCE_ID);
        }
        let instance_unknown = req
            .group_instance_id
            .as_ref()
            .is_some_and(|i| !g.static_members.contains_key(i));
        let Some(member) = g.members.get(&req.member_id) else {
            return reply_error(out, ec::UNKNOWN_MEMBER_ID);
        };
        if instance_unknown {
            return reply_error(out, ec::UNKNOWN_MEMBER_ID);
        }
        let matches = member.matches(&req.protocols);
        match g.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(g, token, &req, now_ms, out)
            }
            GroupState::CompletingRebalance if matches => {
                // Same metadata: the member missed its JoinGroup answer; repeat it.
                let resp = current_generation_join(g, &req.member_id);
                out.responses.push((token, Response::JoinGroup(resp)));
            }
            GroupState::Stable if matches && !g.is_leader(&req.member_id) => {
                let mut resp = current_generation_join(g, &req.member_id);
                resp.members.clear();
                out.responses.push((token, Response::JoinGroup(resp)));
            }
            // A leader rejoining a stable group forces a rebalance: it is how a consumer
            // reacts to changes the members' metadata does not show (new partitions).
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(g, token, &req, now_ms, out)
            }
            GroupState::Empty | GroupState::Dead => reply_error(out, ec::UNKNOWN_MEMBER_ID),
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: JoinGroupRequest,
        member_id: String,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if g.state == GroupState::PreparingRebalance && g.generation_id == 0 {
            g.new_member_added = true;
        }
        g.add(Member {
            member_id: member_id.clone(),
            group_instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            session_timeout_ms: req.session_timeout_ms,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(token),
            awaiting_sync: None,
            is_new: true,
            session_deadline_ms: None,
        });
        let deadline = now_ms.saturating_add(self.config.new_member_join_timeout_ms.max(1));
        self.set_session_deadline(g, &member_id, deadline);
        self.maybe_prepare_rebalance(g, now_ms, out);
    }

    fn update_member_and_rebalance(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: &JoinGroupRequest,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        if let Some(m) = g.members.get_mut(&req.member_id) {
            m.protocols = req.protocols.clone();
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.session_timeout_ms = req.session_timeout_ms;
            if let Some(previous) = m.awaiting_join.replace(token) {
                // The client gave up on its earlier JoinGroup and sent a new one.
                out.responses.push((
                    previous,
                    Response::JoinGroup(JoinGroupResponse::error(
                        ec::REBALANCE_IN_PROGRESS,
                        &req.member_id,
                    )),
                ));
            }
        }
        self.maybe_prepare_rebalance(g, now_ms, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn update_static_member_and_rebalance(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: JoinGroupRequest,
        instance: &str,
        old_id: &str,
        new_id: &str,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let leader_before = g.leader_id.clone();
        // Whoever still waits under the old id is a zombie with the same instance id.
        if let Some(m) = g.members.get_mut(old_id) {
            if let Some(t) = m.awaiting_join.take() {
                out.responses.push((
                    t,
                    Response::JoinGroup(JoinGroupResponse::error(ec::FENCED_INSTANCE_ID, old_id)),
                ));
            }
            if let Some(t) = m.awaiting_sync.take() {
                out.responses.push((
                    t,
                    Response::SyncGroup(SyncGroupResponse::error(ec::FENCED_INSTANCE_ID)),
                ));
            }
        }
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let old_metadata = g.members.get(old_id).map(|m| m.metadata(&protocol));
        self.rekey_member(g, instance, old_id, new_id, now_ms);
        let mut rejoin = req;
        rejoin.member_id = new_id.to_owned();
        self.update_member_and_rebalance_no_prepare(g, token, &rejoin);
        match g.state {
            GroupState::Stable => {
                let selected = g.select_protocol();
                let new_metadata = g.members.get(new_id).map(|m| m.metadata(&protocol));
                if selected.is_some() && selected == g.protocol_name && new_metadata == old_metadata
                {
                    // Same protocol and subscription: no rebalance. Persist the new member id,
                    // then answer with the current generation; the member gets its old
                    // assignment in SyncGroup. A changed subscription needs a new assignment.
                    let value = g.to_record_value(None);
                    let record = group_metadata_record(&g.group_id, &value);
                    self.append(
                        vec![record],
                        PendingAppend::StaticRejoin {
                            group_id: g.group_id.clone(),
                            generation_id: g.generation_id,
                            token,
                            instance: instance.to_owned(),
                            old_member_id: old_id.to_owned(),
                            new_member_id: new_id.to_owned(),
                            leader_before,
                        },
                        out,
                    );
                } else {
                    self.maybe_prepare_rebalance(g, now_ms, out);
                }
            }
            GroupState::CompletingRebalance => {
                // The leader may be assigning to the old member id: start over.
                self.prepare_rebalance(g, now_ms, out);
            }
            GroupState::PreparingRebalance => {}
            GroupState::Empty | GroupState::Dead => {
                // Cannot happen (a static member exists); answer rather than park forever.
                if let Some(m) = g.members.get_mut(new_id) {
                    m.awaiting_join = None;
                }
                out.responses.push((
                    token,
                    Response::JoinGroup(JoinGroupResponse::error(ec::UNKNOWN_MEMBER_ID, new_id)),
                ));
            }
        }
    }

    fn update_member_and_rebalance_no_prepare(
        &mut self,
        g: &mut GroupMetadata,
        token: RequestToken,
        req: &JoinGroupRequest,
    ) {
        if let Some(m) = g.members.get_mut(&req.member_id) {
            m.protocols = req.protocols.clone();
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.session_timeout_ms = req.session_timeout_ms;
            m.client_id = req.client_id.clone();
            m.client_host = req.client_host.clone();
            m.awaiting_join = Some(token);
        }
    }

    /// Moves a static member from `from` to `to` (its session restarts under the new id).
    fn rekey_member(
        &mut self,
        g: &mut GroupMetadata,
        instance: &str,
        from: &str,
        to: &str,
        now_ms: u64,
    ) {
        let Some(mut m) = g.members.remove(from) else {
            return;
        };
        if let Some(deadline) = m.session_deadline_ms.take() {
            self.cancel_timer(&g.group_id, TimerKind::Session(from.to_owned()), deadline);
        }
        m.member_id = to.to_owned();
        g.members.insert(to.to_owned(), m);
        if g.is_leader(from) {
            g.leader_id = Some(to.to_owned());
        }
        g.static_members.insert(instance.to_owned(), to.to_owned());
        if g.pending_sync.remove(from) {
            g.pending_sync.insert(to.to_owned());
        }
        self.reset_session(g, to, now_ms);
    }

    fn maybe_prepare_rebalance(&mut self, g: &mut GroupMetadata, now_ms: u64, out: &mut Outputs) {
        if matches!(
            g.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(g, now_ms, out);
        }
    }

    fn prepare_rebalance(&mut self, g: &mut GroupMetadata, now_ms: u64, out: &mut Outputs) {
        if g.state == GroupState::CompletingRebalance {
            self.reset_and_propagate_assignment_error(g, ec::REBALANCE_IN_PROGRESS, now_ms, out);
        }
        self.set_sync_deadline(g, None);
        let rebalance_timeout_ms = g.rebalance_timeout_ms();
        let delay_ms = self.config.initial_rebalance_delay_ms;
        if g.state == GroupState::Empty && delay_ms > 0 {
            g.initial_join_remaining_ms = Some(rebalance_timeout_ms.saturating_sub(delay_ms));
            g.new_member_added = false;
            self.set_join_deadline(g, Some(now_ms.saturating_add(delay_ms)));
        } else {
            g.initial_join_remaining_ms = None;
            self.set_join_deadline(g, Some(now_ms.saturating_add(rebalance_timeout_ms.max(1))));
        }
        g.state = GroupState::PreparingRebalance;
        g.state_timestamp_ms = ms_i64(now_ms);
        self.try_complete_join(g, now_ms, out);
    }

    /// Completes the join phase early once everyone is in, except during the initial delay,
    /// which exists precisely to wait for members nobody knows about yet.
    fn try_complete_join(&mut self, g: &mut GroupMetadata, now_ms: u64, out: &mut Outputs) {
        if g.state == GroupState::PreparingRebalance
            && g.initial_join_remaining_ms.is_none()
            && g.all_members_joined()
        {
            self.complete_join(g, now_ms, out);
        }
    }

    fn on_join_deadline(&mut self, g: &mut GroupMetadata, now_ms: u64, out: &mut Outputs) {
        if g.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(remaining_ms) = g.initial_join_remaining_ms {
            if g.new_member_added && remaining_ms > 0 {
                // KIP-134: someone joined during the delay; wait once more for the rest.
                g.new_member_added = false;
                let delay_ms = self.config.initial_rebalance_delay_ms.min(remaining_ms);
                g.initial_join_remaining_ms = Some(remaining_ms - delay_ms);
                self.set_join_deadline(g, Some(now_ms.saturating_add(delay_ms.max(1))));
                return;
            }
        }
        self.complete_join(g, now_ms, out);
    }

    fn complete_join(&mut self, g: &mut GroupMetadata, now_ms: u64, out: &mut Outputs) {
        self.set_join_deadline(g, None);
        g.initial_join_remaining_ms = None;
        // Dynamic members that did not rejoin in time are gone; static ones stay until
        // their session expires (they are expected back with the same instance id).
        let failed: Vec<String> = g
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in failed {
            self.drop_member(g, &id, out);
        }
        if !g.members.is_empty() && !g.elect_joined_leader() {
            // Nobody rejoined: wait another rebalance timeout for sessions to expire.
            let timeout = g.rebalance_timeout_ms().max(1);
            self.set_join_deadline(g, Some(now_ms.saturating_add(timeout)));
            return;
        }
        g.init_next_generation(now_ms);
        tracing::info!(
            "group {}: generation {} with {} members",
            g.group_id,
            g.generation_id,
            g.members.len()
        );
        if g.state == GroupState::Empty {
            let record = group_metadata_record(&g.group_id, &g.to_record_value(None));
            self.append(vec![record], PendingAppend::GroupMetadata, out);
            return;
        }
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in &ids {
            let resp = current_generation_join(g, id);
            if let Some(m) = g.members.get_mut(id) {
                if let Some(t) = m.awaiting_join.take() {
                    out.responses.push((t, Response::JoinGroup(resp)));
                }
                m.is_new = false;
            }
            self.reset_session(g, id, now_ms);
            g.pending_sync.insert(id.clone());
        }
        let timeout = g.rebalance_timeout_ms().max(1);
        self.set_sync_deadline(g, Some(now_ms.saturating_add(timeout)));
    }

    fn on_sync_deadline(&mut self, g: &mut GroupMetadata, now_ms: u64, out: &mut Outputs) {
        if !matches!(
            g.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) {
            return;
        }
        let missing: Vec<String> = g.pending_sync.iter().cloned().collect();
        if missing.is_empty() {
            return;
        }
        for id in missing {
            self.drop_member(g, &id, out);
        }
        self.maybe_prepare_rebalance(g, now_ms, out);
    }

    /// Answers a commit whose records are still not stored (Kafka's
    /// `offsets.commit.timeout.ms`): stored partitions get REQUEST_TIMED_OUT, the others keep
    /// their own error. The append stays pending, so the offsets count once it lands.
    fn on_commit_timeout(&mut self, id: AppendId, out: &mut Outputs) {
        let Some(PendingAppend::OffsetCommit {
            token,
            results,
            stored,
            ..
        }) = self.pending_appends.get_mut(&id)
        else {
            return;
        };
        let Some(token) = token.take() else {
            return;
        };
        let mut partitions = results.clone();
        for (i, _) in stored.iter() {
            partitions[*i].error_code = ec::REQUEST_TIMED_OUT;
        }
        tracing::warn!(
            "OffsetCommit answered REQUEST_TIMED_OUT: its append is still not done (partition {} of {})",
            self.partition,
            super::placement::OFFSETS_TOPIC
        );
        out.responses.push((
            token,
            Response::OffsetCommit(OffsetCommitResponse { partitions }),
        ));
    }

    fn on_session_expired(
        &mut self,
        g: &mut GroupMetadata,
        member_id: &str,
        at: u64,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let Some(m) = g.members.get_mut(member_id) else {
            return;
        };
        if m.session_deadline_ms != Some(at) {
            return;
        }
        m.session_deadline_ms = None;
        if m.may_expire() {
            self.remove_member_and_update_group(g, member_id, now_ms, out);
        }
    }

    fn remove_member_and_update_group(
        &mut self,
        g: &mut GroupMetadata,
        member_id: &str,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        self.drop_member(g, member_id, out);
        match g.state {
            GroupState::Dead | GroupState::Empty => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(g, now_ms, out)
            }
            GroupState::PreparingRebalance => self.try_complete_join(g, now_ms, out),
        }
    }

    /// Removes a member and answers whatever it had parked with UNKNOWN_MEMBER_ID, so the
    /// client (if alive) joins again from scratch.
    fn drop_member(&mut self, g: &mut GroupMetadata, member_id: &str, out: &mut Outputs) {
        let Some(m) = g.remove(member_id) else {
            return;
        };
        // Operators read these lines to see why a consumer was rebalanced out.
        tracing::info!(
            "group {}: member {member_id} removed (state {:?})",
            g.group_id,
            g.state
        );
        if let Some(deadline) = m.session_deadline_ms {
            self.cancel_timer(
                &g.group_id,
                TimerKind::Session(member_id.to_owned()),
                deadline,
            );
        }
        if let Some(t) = m.awaiting_join {
            out.responses.push((
                t,
                Response::JoinGroup(JoinGroupResponse::error(ec::UNKNOWN_MEMBER_ID, member_id)),
            ));
        }
        if let Some(t) = m.awaiting_sync {
            out.responses.push((
                t,
                Response::SyncGroup(SyncGroupResponse::error(ec::UNKNOWN_MEMBER_ID)),
            ));
        }
        if g.pending_sync.is_empty() {
            self.set_sync_deadline(g, None);
        }
    }

    fn remove_pending_sync(&mut self, g: &mut GroupMetadata, member_id: &str) {
        if g.pending_sync.remove(member_id) && g.pending_sync.is_empty() {
            self.set_sync_deadline(g, None);
        }
    }

    fn reset_and_propagate_assignment_error(
        &mut self,
        g: &mut GroupMetadata,
        code: ErrorCode,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        for m in g.members.values_mut() {
            m.assignment = Bytes::new();
        }
        self.propagate_assignment(g, code, now_ms, out);
    }

    /// Answers every parked SyncGroup with the member's assignment (or `code`), and restarts
    /// those members' sessions: a session that ran out while parked was not expired.
    fn propagate_assignment(
        &mut self,
        g: &mut GroupMetadata,
        code: ErrorCode,
        now_ms: u64,
        out: &mut Outputs,
    ) {
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in ids {
            let Some(m) = g.members.get_mut(&id) else {
                continue;
            };
            let Some(t) = m.awaiting_sync.take() else {
                continue;
            };
            let resp = if code == ec::NONE {
                SyncGroupResponse {
                    error_code: ec::NONE,
                    protocol_type: g.protocol_type.clone(),
                    protocol_name: g.protocol_name.clone(),
                    assignment: m.assignment.clone(),
                }
            } else {
                SyncGroupResponse::error(code)
            };
            out.responses.push((t, Response::SyncGroup(resp)));
            self.reset_session(g, &id, now_ms);
        }
    }

    // ---------------------------------------------------------------- helpers

    fn status_error(&self) -> ErrorCode {
        match self.status {
            CoordinatorStatus::Loading => ec::COORDINATOR_LOAD_IN_PROGRESS,
            CoordinatorStatus::Resigned => ec::NOT_COORDINATOR,
            CoordinatorStatus::Active => ec::NONE,
        }
    }

    fn check_group(&self, group_id: &str, usage: GroupIdUse) -> Result<(), ErrorCode> {
        if usage == GroupIdUse::Membership && group_id.is_empty() {
            return Err(ec::INVALID_GROUP_ID);
        }
        match self.status_error() {
            ec::NONE => {}
            code => return Err(code),
        }
        if partition_for_group(group_id, self.partitions) != self.partition {
            return Err(ec::NOT_COORDINATOR);
        }
        Ok(())
    }

    /// Puts a group taken out of the map back, unless it is an empty shell that a failed
    /// join created (nothing in the log refers to it).
    fn put_back(&mut self, g: GroupMetadata) {
        let forgettable = g.state == GroupState::Empty
            && g.generation_id == 0
            && g.members.is_empty()
            && g.pending_members.is_empty()
            && g.offsets.is_empty();
        let referenced = || {
            self.pending_appends.values().any(|p| match p {
                PendingAppend::OffsetCommit { group_id, .. } => *group_id == g.group_id,
                _ => false,
            })
        };
        if !forgettable || referenced() {
            self.groups.insert(g.group_id.clone(), g);
        }
    }

    fn append(
        &mut self,
        records: Vec<OffsetsRecord>,
        pending: PendingAppend,
        out: &mut Outputs,
    ) -> AppendId {
        let id = self.next_append_id;
        self.next_append_id += 1;
        self.pending_appends.insert(id, pending);
        out.appends.push(Append {
            partition: self.partition,
            id,
            records,
        });
        id
    }

    fn generate_member_id(&mut self, prefix: &str) -> String {
        self.member_id_counter += 1;
        // splitmix64 is a bijection, so distinct counters give distinct ids for one seed.
        let hi = splitmix64(self.member_id_seed.wrapping_add(self.member_id_counter));
        let lo = splitmix64(hi ^ self.member_id_seed.rotate_left(32));
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }

    fn schedule(&mut self, group_id: &str, kind: TimerKind, at: u64) {
        self.timers.insert((
            at,
            TimerKey {
                group_id: group_id.to_owned(),
                kind,
            },
        ));
    }

    fn cancel_timer(&mut self, group_id: &str, kind: TimerKind, at: u64) {
        self.timers.remove(&(
            at,
            TimerKey {
                group_id: group_id.to_owned(),
                kind,
            },
        ));
    }

    fn set_session_deadline(&mut self, g: &mut GroupMetadata, member_id: &str, at: u64) {
        let Some(m) = g.members.get_mut(member_id) else {
            return;
        };
        let old = m.session_deadline_ms.replace(at);
        let group_id = g.group_id.clone();
        if let Some(old) = old {
            self.cancel_timer(&group_id, TimerKind::Session(member_id.to_owned()), old);
        }
        self.schedule(&group_id, TimerKind::Session(member_id.to_owned()), at);
    }

    fn reset_session(&mut self, g: &mut GroupMetadata, member_id: &str, now_ms: u64) {
        let Some(m) = g.members.get(member_id) else {
            return;
        };
        let at = now_ms.saturating_add(timeout_ms(m.session_timeout_ms));
        self.set_session_deadline(g, member_id, at);
    }

    fn set_join_deadline(&mut self, g: &mut GroupMetadata, at: Option<u64>) {
        if let Some(old) = std::mem::replace(&mut g.join_deadline_ms, at) {
            self.cancel_timer(&g.group_id, TimerKind::Join, old);
        }
        if let Some(at) = at {
            self.schedule(&g.group_id, TimerKind::Join, at);
        }
    }

    fn set_sync_deadline(&mut self, g: &mut GroupMetadata, at: Option<u64>) {
        if let Some(old) = std::mem::replace(&mut g.sync_deadline_ms, at) {
            self.cancel_timer(&g.group_id, TimerKind::Sync, old);
        }
        if let Some(at) = at {
            self.schedule(&g.group_id, TimerKind::Sync, at);
        }
    }
}

/// The JoinGroup answer for `member_id` in the group's current generation (members listed
/// only for the leader).
fn current_generation_join(g: &GroupMetadata, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse {
        error_code: ec::NONE,
        generation_id: g.generation_id,
        protocol_type: g.protocol_type.clone(),
        protocol_name: g.protocol_name.clone(),
        leader: g.leader_id.clone().unwrap_or_default(),
        skip_assignment: false,
        member_id: member_id.to_owned(),
        members: if g.is_leader(member_id) {
            current_member_metadata(g)
        } else {
            Vec::new()
        },
    }
}

fn current_member_metadata(g: &GroupMetadata) -> Vec<JoinGroupMember> {
    let protocol = g.protocol_name.clone().unwrap_or_default();
    g.members
        .values()
        .map(|m| JoinGroupMember {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            metadata: m.metadata(&protocol),
        })
        .collect()
}

/// A client-supplied timeout as a delay of at least 1 ms (so timers always move forward).
fn timeout_ms(ms: i32) -> u64 {
    u64::try_from(ms).unwrap_or(0).max(1)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The topics the members of a consumer group subscribe to, from their metadata of the
/// group's protocol; `None` when no protocol is chosen yet or a member's subscription cannot
/// be read (then every topic counts as subscribed, as Kafka treats it).
fn subscriptions<'a>(
    protocol: Option<&str>,
    members: impl Iterator<Item = &'a Member>,
) -> Option<BTreeSet<String>> {
    let protocol = protocol?;
    let mut topics = BTreeSet::new();
    for member in members {
        topics.extend(super::member::subscribed_topics(
            &member.metadata(protocol),
        )?);
    }
    Some(topics)
}
