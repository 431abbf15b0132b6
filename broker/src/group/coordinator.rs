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
//!
//! Layout: this file holds the state (groups, timers, pending appends), the clock
//! ([`GroupCoordinator::tick`]) and the dispatch of completed appends; each concern has its
//! own file below `coordinator/`: `membership.rs` (join, sync, heartbeat, leave, static
//! members), `rebalance.rs` (the rebalance phases and the assignment), `offsets.rs`
//! (commit, fetch, delete, retention), `admin.rs` (list, describe, delete groups) and
//! `loading.rs` (replay at start, resignation).

mod admin;
mod loading;
mod membership;
mod offsets;
mod rebalance;

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
use admin::groups_deleted;
use bytes::Bytes;
use offsets::offsets_deleted;
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
    OffsetCommit(PendingCommit),
    SyncAssignment {
        group_id: String,
        generation_id: i32,
        assignment: BTreeMap<String, Bytes>,
    },
    StaticRejoin(PendingRejoin),
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

/// An OffsetCommit whose records are being appended.
#[derive(Debug)]
struct PendingCommit {
    /// `None` once the commit was answered REQUEST_TIMED_OUT; the records still count
    /// when they land.
    token: Option<RequestToken>,
    group_id: String,
    results: Vec<PartitionResult>,
    /// Index into `results`, and the offset to apply once durable.
    stored: Vec<(usize, CommittedOffset)>,
    /// When the commit is answered REQUEST_TIMED_OUT if the append has not completed.
    timeout_at_ms: u64,
}

/// A static member's rejoin without a rebalance, answered once its new member id is stored.
#[derive(Debug)]
struct PendingRejoin {
    group_id: String,
    generation_id: i32,
    token: RequestToken,
    instance: String,
    old_member_id: String,
    new_member_id: String,
    leader_before: Option<String>,
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
            PendingAppend::OffsetCommit(commit) => {
                self.cancel_timer(
                    &commit.group_id,
                    TimerKind::Commit(id),
                    commit.timeout_at_ms,
                );
                self.offset_commit_stored(commit, result, now_ms, out);
            }
            PendingAppend::SyncAssignment {
                group_id,
                generation_id,
                assignment,
            } => self.assignment_stored(&group_id, generation_id, &assignment, result, now_ms, out),
            PendingAppend::StaticRejoin(rejoin) => {
                self.static_rejoin_stored(rejoin, result, now_ms, out)
            }
            PendingAppend::DeleteGroups {
                token,
                results,
                deleted,
            } => groups_deleted(token, results, &deleted, result, out),
            PendingAppend::OffsetDelete {
                token,
                response,
                deleted,
            } => offsets_deleted(token, response, &deleted, result, out),
        }
    }

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
                PendingAppend::OffsetCommit(commit) => commit.group_id == g.group_id,
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
