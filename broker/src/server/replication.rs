//! Replication on the shard that owns a partition (cluster mode): each hosted partition has a
//! [`Replica`] (`server::replica`) beside its log, whose role follows the cluster view (leader at an epoch,
//! follower of a broker at an epoch, or neither while the partition is offline).
//!
//! - A leader runs the sans-IO [`Leader`] core: follower fetches report each follower's log
//!   end, the core moves the high watermark and proposes ISR changes, which the agent writes
//!   as conditional sets of the state znode. acks=all produces wait here for the high
//!   watermark; consumers read below it.
//! - A follower's log is filled by the shard's replica fetchers (`replica_fetcher.rs`), which
//!   truncate it where the leader-epoch check says it diverged.
//! - The leader-epoch cache is kept in the partition's `leader-epoch-checkpoint` file.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::cluster::replica::{FetchAnswer, Leader, LeaderConfig, LeaderOutput};
use crate::cluster::{ClusterView, Command, LeaderAndIsr};
use crate::kafka::codes;
use crate::kafka::response::Part;
use crate::storage::{self, AppendInfo, PartitionLog};
use crate::topics::Topic;

use super::partition_ops::{FollowerFetch, PartitionError, PartitionRead};
use super::replica::{Replica, Role};
use super::shard::Shard;

pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;

fn now_ms() -> u64 {
    storage::now_ms().max(0) as u64
}

/// `min.insync.replicas` of a topic: its override, else the broker's.
pub fn min_insync(shard: &Shard, topic: &Topic) -> usize {
    topic
        .configs
        .get("min.insync.replicas")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or_else(|| {
            shard
                .config
                .cluster
                .as_ref()
                .map_or(1, |c| c.min_insync_replicas)
        })
        .max(1)
}

/// The leader epoch a role is at (`None` while idle, which orders below every epoch).
fn role_epoch(role: &Role) -> Option<i32> {
    match role {
        Role::Idle => None,
        Role::Leader(leader) => Some(leader.epoch()),
        Role::Follower { epoch, .. } => Some(*epoch),
    }
}

/// The replicas a leader tracks in a term: the assignment, without replicas being removed by
/// a reassignment that are out of the ISR (they leave; letting them rejoin would undo the
/// controller's removal when this broker's view of the topic lags behind the state).
fn term_replicas(partition: &crate::cluster::view::PartitionView, isr: &[i32]) -> Vec<i32> {
    partition
        .replicas
        .iter()
        .copied()
        .filter(|b| !partition.reassignment.removing.contains(b) || isr.contains(b))
        .collect()
}

impl Shard {
    fn leader_config(&self) -> LeaderConfig {
        LeaderConfig {
            replica_lag_time_max_ms: self
                .config
                .cluster
                .as_ref()
                .map_or(30_000, |c| c.replica_lag_time_max_ms),
        }
    }

    /// Follows the view: every replica on this shard takes the role its state znode gives
    /// it. Leaders adopt ISR changes the controller made; new leaders start their epoch.
    pub fn apply_roles(self: &Rc<Self>, view: &ClusterView) {
        let me = self.config.node_id;
        let now = now_ms();
        // This process's registration: a state naming us leader that was written before it
        // belongs to a predecessor (KIP-380), and the controller is about to give a new epoch.
        let broker_epoch = view.brokers.get(&me).map_or(i64::MAX, |b| b.epoch);
        let mut followed = std::collections::BTreeSet::new();
        let mut pending_outputs = Vec::new();
        let mut started_following = false;
        for replica in self.partitions.replicas() {
            let tp = &replica.tp;
            let Some(partition) = view.partition(&tp.topic, tp.partition) else {
                continue;
            };
            let state = partition.state.clone();
            let mut role = replica.role.borrow_mut();
            let next = match (&mut *role, state) {
                (Role::Leader(leader), Some(state))
                    if state.leader == me && state.leader_epoch == leader.epoch() =>
                {
                    leader.replicas_added(&term_replicas(partition, &state.isr));
                    if leader.state_read(
                        state.leader,
                        state.leader_epoch,
                        state.isr.clone(),
                        partition.state_version,
                        now,
                    ) {
                        None
                    } else {
                        Some(Role::Idle)
                    }
                }
                (current, Some(state))
                    if state.leader == me && partition.state_mzxid < broker_epoch =>
                {
                    (!matches!(current, Role::Idle)).then_some(Role::Idle)
                }
                (_, Some(state)) if state.leader == me => {
                    let Some(log) = self.partitions.get(&tp.topic, tp.partition) else {
                        continue;
                    };
                    let high_watermark = match &*role {
                        Role::Follower { high_watermark, .. } => *high_watermark,
                        _ => 0,
                    };
                    let mut cache = replica.cache.borrow_mut();
                    let before = cache.entries().len();
                    let mut leader = Leader::new(
                        me,
                        state.leader_epoch,
                        term_replicas(partition, &state.isr),
                        state.isr.clone(),
                        partition.state_version,
                        state.controller_epoch,
                        log.written_end_offset(),
                        high_watermark.min(log.written_end_offset()),
                        now,
                        &mut cache,
                        self.leader_config(),
                    );
                    let changed = cache.entries().len() != before;
                    drop(cache);
                    if changed {
                        replica.save_cache(&log);
                    }
                    // Everything a follower appended is written: it counts from the start.
                    pending_outputs.push((
                        replica.clone(),
                        leader.local_written(log.written_end_offset(), now),
                    ));
                    tracing::info!(
                        "{tp}: leader at epoch {} from offset {}",
                        state.leader_epoch,
                        log.log_end_offset()
                    );
                    Some(Role::Leader(leader))
                }
                (Role::Follower { leader, epoch, .. }, Some(state))
                    if state.leader == *leader && state.leader_epoch == *epoch =>
                {
                    followed.insert(*leader);
                    None
                }
                (current, Some(state)) if state.leader >= 0 => {
                    followed.insert(state.leader);
                    let high_watermark = match current {
                        Role::Leader(leader) => leader.high_watermark(),
                        Role::Follower { high_watermark, .. } => *high_watermark,
                        Role::Idle => 0,
                    };
                    Some(Role::Follower {
                        leader: state.leader,
                        epoch: state.leader_epoch,
                        high_watermark,
                    })
                }
                (Role::Idle, _) => None,
                _ => Some(Role::Idle),
            };
            let Some(next) = next else {
                drop(role);
                replica.changed.notify();
                continue;
            };
            // Views come in the coordinator's order, where a partition's leader epoch only
            // grows: fencing (FENCED_LEADER_EPOCH, the epoch stamped on appends, the epoch
            // cache) relies on a replica never going back to an older one.
            debug_assert!(
                role_epoch(&next).is_none() || role_epoch(&next) >= role_epoch(&role),
                "{tp}: leader epoch from {:?} back to {:?}",
                role_epoch(&role),
                role_epoch(&next)
            );
            let was_leader = matches!(&*role, Role::Leader(_));
            let is_leader = matches!(&next, Role::Leader(_));
            started_following |= matches!(&next, Role::Follower { .. });
            *role = next;
            drop(role);
            replica.changed.notify();
            if tp.topic == crate::group::OFFSETS_TOPIC && was_leader != is_leader {
                let partitions = view
                    .topics
                    .get(&tp.topic)
                    .map_or(1, |t| t.partitions.len() as i32);
                if is_leader {
                    let shard = self.clone();
                    let partition = tp.partition;
                    glommio::spawn_local(async move {
                        shard.load_offsets_partition(partition, partitions).await
                    })
                    .detach();
                } else {
                    self.resign_offsets_partition(tp.partition);
                }
            }
        }
        for (replica, outputs) in pending_outputs {
            self.leader_outputs(&replica, outputs);
        }
        if started_following {
            if let Some(cluster) = &self.cluster {
                cluster.followers_changed.notify();
            }
        }
        for leader in followed {
            self.ensure_fetcher(leader);
        }
    }

    /// Carries out a leader core's outputs: wakes waiters, sends ISR changes to the agent.
    pub(super) fn leader_outputs(
        self: &Rc<Self>,
        replica: &Rc<Replica>,
        outputs: Vec<LeaderOutput>,
    ) {
        for output in outputs {
            match output {
                LeaderOutput::HighWatermark(_) => replica.changed.notify(),
                LeaderOutput::WriteIsr {
                    isr,
                    expected_version,
                } => {
                    let shard = self.clone();
                    let replica = replica.clone();
                    glommio::spawn_local(async move {
                        shard.write_isr(&replica, isr, expected_version).await;
                    })
                    .detach();
                }
            }
        }
    }

    async fn write_isr(
        self: &Rc<Self>,
        replica: &Rc<Replica>,
        isr: Vec<i32>,
        expected_version: i32,
    ) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let Some(epoch) = replica.leader_epoch() else {
            return;
        };
        let controller_epoch = self
            .cluster_view()
            .and_then(|v| {
                v.partition(&replica.tp.topic, replica.tp.partition)
                    .and_then(|p| p.state.as_ref().map(|s| s.controller_epoch))
            })
            .unwrap_or(0);
        let state = LeaderAndIsr {
            leader: self.config.node_id,
            leader_epoch: epoch,
            isr: isr.clone(),
            controller_epoch,
        };
        let (tx, rx) = async_channel::bounded(1);
        let sent = cluster
            .commands
            .send(Command::WriteIsr {
                tp: replica.tp.clone(),
                state,
                expected_version,
                reply: tx,
            })
            .await;
        let result = match sent {
            Ok(()) => rx.recv().await.unwrap_or(Err(false)),
            Err(_) => Err(false),
        };
        let outputs = {
            let mut role = replica.role.borrow_mut();
            let Role::Leader(leader) = &mut *role else {
                return;
            };
            if leader.epoch() != epoch {
                return;
            }
            match result {
                Ok(version) => {
                    tracing::info!("{}: ISR now {isr:?}", replica.tp);
                    leader.isr_written(isr, version, now_ms())
                }
                Err(_) => {
                    leader.isr_conflict();
                    Vec::new()
                }
            }
        };
        replica.changed.notify();
        self.leader_outputs(replica, outputs);
    }

    /// Periodically lets every leader on this shard shrink ISRs of lagging followers.
    pub async fn run_isr_checks(self: Rc<Self>) {
        let period = Duration::from_millis(
            (self.leader_config().replica_lag_time_max_ms / 4).clamp(50, 5000),
        );
        loop {
            glommio::timer::sleep(period).await;
            let now = now_ms();
            for replica in self.partitions.replicas() {
                let outputs = match &mut *replica.role.borrow_mut() {
                    Role::Leader(leader) => leader.tick(now),
                    _ => continue,
                };
                self.leader_outputs(&replica, outputs);
            }
        }
    }

    /// A leader's append (cluster mode): stamped with its epoch; its own write counts toward
    /// the high watermark once done; acks=all (-1) checks `min.insync.replicas` before and
    /// waits for the high watermark after, up to `timeout_ms`.
    pub async fn append_as_leader(
        self: &Rc<Self>,
        topic: &Topic,
        partition: i32,
        records: &[u8],
        acks: i16,
        timeout_ms: i32,
    ) -> Result<AppendInfo, PartitionError> {
        let (log, replica) = self.hosted(&topic.name, partition)?;
        let not_leader = || {
            (
                codes::NOT_LEADER_OR_FOLLOWER,
                format!("{}-{partition}: not the leader here", topic.name),
            )
        };
        let epoch = replica.leader_epoch().ok_or_else(not_leader)?;
        let min_insync = min_insync(self, topic);
        if acks == -1 {
            if let Role::Leader(leader) = &*replica.role.borrow() {
                leader.check_min_isr(min_insync).map_err(|code| {
                    (
                        code,
                        format!(
                            "{}-{partition}: the ISR is smaller than min.insync.replicas={min_insync}",
                            topic.name
                        ),
                    )
                })?;
            }
        }
        // Its own write counts toward the high watermark below, not in the append.
        let info = log.append_queued(records, epoch).await.map_err(|err| {
            self.note_disk_fault(&topic.name, partition, &log);
            (err.error_code(), err.to_string())
        })?;
        let end = info.last_offset + 1;
        let sync = log.config().flush == tuning::FlushPolicy::Always;
        let written = {
            let shard = self.clone();
            let replica = replica.clone();
            let log = log.clone();
            glommio::spawn_local(async move {
                if log.wait_written(end, sync).await.is_ok() {
                    let outputs = match &mut *replica.role.borrow_mut() {
                        Role::Leader(leader) if leader.epoch() == epoch => {
                            leader.local_written(end, now_ms())
                        }
                        _ => Vec::new(),
                    };
                    replica.changed.notify();
                    shard.leader_outputs(&replica, outputs);
                }
            })
            .detach()
        };
        if acks != -1 {
            drop(written);
            return Ok(info);
        }
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.max(0) as u64);
        loop {
            let wait = replica.changed.wait();
            match &*replica.role.borrow() {
                Role::Leader(leader) if leader.epoch() == epoch => {
                    match leader.ack_state(end, min_insync) {
                        Some(Ok(())) => return Ok(info),
                        Some(Err(code)) => {
                            return Err((
                                code,
                                format!(
                                    "{}-{partition}: written, but the ISR shrank below min.insync.replicas={min_insync}",
                                    topic.name
                                ),
                            ))
                        }
                        None => {}
                    }
                }
                _ => return Err(not_leader()),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err((
                    codes::REQUEST_TIMED_OUT,
                    format!(
                        "{}-{partition}: not replicated to the ISR within {timeout_ms} ms",
                        topic.name
                    ),
                ));
            }
            futures_lite::future::or(wait, glommio::timer::sleep(left)).await;
        }
    }

    /// The log and replica of a partition hosted on this shard.
    pub fn hosted(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(Rc<PartitionLog>, Rc<Replica>), PartitionError> {
        match (
            self.partitions.get(topic, partition),
            self.partitions.replica(topic, partition),
        ) {
            (Some(log), Some(replica)) => Ok((log, replica)),
            _ => Err((
                codes::NOT_LEADER_OR_FOLLOWER,
                format!("{topic}-{partition} is not hosted here"),
            )),
        }
    }

    /// A follower's Fetch of one partition, at its leader: the core decides (epoch checks,
    /// divergence, the follower's log end for the high watermark), then records are read up
    /// to the log end (not the high watermark: followers copy everything).
    pub async fn follower_read_local(
        self: &Rc<Self>,
        fetch: &FollowerFetch,
    ) -> (PartitionRead<Part>, Option<(i32, i64)>) {
        let tp = &fetch.tp;
        let Ok((log, replica)) = self.hosted(&tp.topic, tp.partition) else {
            return (PartitionRead::error(codes::NOT_LEADER_OR_FOLLOWER), None);
        };
        let reported = replica
            .follower_log_starts
            .borrow_mut()
            .insert(fetch.follower, fetch.log_start_offset);
        if reported != Some(fetch.log_start_offset) {
            replica.changed.notify();
        }
        let (answer, outputs) = {
            let mut role = replica.role.borrow_mut();
            let Role::Leader(leader) = &mut *role else {
                return (PartitionRead::error(codes::NOT_LEADER_OR_FOLLOWER), None);
            };
            let cache = replica.cache.borrow();
            leader.follower_fetch(
                fetch.follower,
                fetch.fetch_offset,
                fetch.current_leader_epoch,
                fetch.last_fetched_epoch,
                &cache,
                log.log_end_offset(),
                now_ms(),
            )
        };
        self.leader_outputs(&replica, outputs);
        match answer {
            FetchAnswer::Serve { high_watermark } => {
                let mut read = self
                    .read_log(
                        &log,
                        &tp.topic,
                        tp.partition,
                        fetch.fetch_offset,
                        fetch.max_bytes,
                        None,
                    )
                    .await;
                read.high_watermark = high_watermark;
                (read, None)
            }
            FetchAnswer::Diverging {
                epoch,
                end_offset,
                high_watermark,
            } => {
                let mut read = PartitionRead::error(codes::NONE);
                read.high_watermark = high_watermark;
                read.log_start_offset = log.log_start_offset();
                (read, Some((epoch, end_offset)))
            }
            FetchAnswer::FencedLeaderEpoch => (PartitionRead::error(FENCED_LEADER_EPOCH), None),
            FetchAnswer::UnknownLeaderEpoch => (PartitionRead::error(UNKNOWN_LEADER_EPOCH), None),
            FetchAnswer::NotAReplica => (PartitionRead::error(codes::NOT_LEADER_OR_FOLLOWER), None),
        }
    }

    /// A consumer's view of a leader's partition: the high watermark, and whether the
    /// client's `current_leader_epoch` (-1: not given) matches.
    pub fn consumer_bounds(
        &self,
        topic: &str,
        partition: i32,
        current_leader_epoch: i32,
    ) -> Result<i64, i16> {
        let Some(replica) = self.partitions.replica(topic, partition) else {
            return Err(codes::NOT_LEADER_OR_FOLLOWER);
        };
        let role = replica.role.borrow();
        let Role::Leader(leader) = &*role else {
            return Err(codes::NOT_LEADER_OR_FOLLOWER);
        };
        if current_leader_epoch >= 0 && current_leader_epoch < leader.epoch() {
            return Err(FENCED_LEADER_EPOCH);
        }
        if current_leader_epoch > leader.epoch() {
            return Err(UNKNOWN_LEADER_EPOCH);
        }
        Ok(leader.high_watermark())
    }

    /// A follower's log diverged: cut it where the leader said and record the cut.
    pub async fn truncate_follower(
        self: &Rc<Self>,
        replica: &Rc<Replica>,
        offset: i64,
    ) -> Result<(), String> {
        let tp = &replica.tp;
        let log = self
            .partitions
            .get(&tp.topic, tp.partition)
            .ok_or_else(|| format!("{tp} is not hosted here"))?;
        let before = log.log_end_offset();
        if offset >= before {
            // Nothing to cut: only the epoch cache names an epoch the log has no batch of (a
            // term this broker led without appending); drop it so the next fetch agrees.
            replica.cache.borrow_mut().truncate_from_end(before);
            replica.save_cache(&log);
            return Ok(());
        }
        let (log, cut) = log.truncated(offset).await.map_err(|err| err.to_string())?;
        let log = Rc::new(log);
        self.partitions
            .replace(&tp.topic, tp.partition, log.clone());
        replica.cache.borrow_mut().truncate_from_end(cut.end_offset);
        replica.save_cache(&log);
        if let Role::Follower { high_watermark, .. } = &mut *replica.role.borrow_mut() {
            *high_watermark = (*high_watermark).min(cut.end_offset);
        }
        tracing::warn!(
            "{tp}: log diverged from the leader's; cut from {before} to {} ({} bytes)",
            cut.end_offset,
            cut.bytes_removed
        );
        Ok(())
    }

    /// A follower appends what its leader sent, learning new epochs from the batches.
    pub async fn append_as_follower(
        self: &Rc<Self>,
        replica: &Rc<Replica>,
        records: &[u8],
        leader_high_watermark: i64,
    ) -> Result<(), String> {
        let tp = &replica.tp;
        let log = self
            .partitions
            .get(&tp.topic, tp.partition)
            .ok_or_else(|| format!("{tp} is not hosted here"))?;
        if !records.is_empty() {
            log.append_replica(records).await.map_err(|err| {
                self.note_disk_fault(&tp.topic, tp.partition, &log);
                err.to_string()
            })?;
            // The epochs the appended batches start (the leader stamped each batch).
            let mut changed = false;
            let mut cache = replica.cache.borrow_mut();
            let mut at = 0usize;
            while let Some(header) = records
                .get(at..)
                .and_then(storage::record_batch::BatchHeader::parse)
            {
                if header.partition_leader_epoch >= 0 {
                    changed |= cache.assign(header.partition_leader_epoch, header.base_offset);
                }
                at += header.total_bytes() as usize;
            }
            drop(cache);
            if changed {
                replica.save_cache(&log);
            }
        }
        let end = log.log_end_offset();
        if let Role::Follower { high_watermark, .. } = &mut *replica.role.borrow_mut() {
            *high_watermark = crate::cluster::replica::follower_high_watermark(
                *high_watermark,
                leader_high_watermark,
                end,
            );
            // A follower's consumers-visible end (it becomes the leader's starting high
            // watermark) never passes what it holds.
            debug_assert!(
                *high_watermark <= end,
                "{tp}: HW {high_watermark} > LEO {end}"
            );
        }
        replica.changed.notify();
        Ok(())
    }
}
