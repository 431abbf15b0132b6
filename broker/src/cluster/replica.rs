//! Partition replication's decisions, as a sans-IO state machine: the leader's high watermark
//! and ISR, its answers to followers' fetches, and where a follower truncates.
//!
//! The rules are Kafka's (>= 2.7, ZooKeeper mode):
//! - The high watermark (HW) is the smallest log end offset (LEO) over the *maximal* ISR: the
//!   committed ISR (what the state znode says) together with the ISR of the change in flight
//!   (so an expansion counts at once and a shrink only once written). The leader's own LEO is
//!   what it has written ([`Leader::local_written`]), a follower's what its fetch says it has
//!   written (`fetch_offset`). The HW never decreases. acks=all answers once it passes.
//! - The ISR changes only through conditional writes of the state znode, one at a time. A
//!   follower joins once its LEO reaches the HW and the start of the leader's epoch; an ISR
//!   follower leaves when it has not caught up for `replica_lag_time_max_ms`. A failed write
//!   means the state moved: no more proposals until the new state is read.
//! - Leader epochs (KIP-101/279/595): every replica keeps an [`EpochCache`]; a follower sends
//!   the epoch of its log's end with every fetch (`last_fetched_epoch`), and when that epoch
//!   ends earlier on the leader the answer is [`FetchAnswer::Diverging`] and the follower
//!   truncates to [`truncation_offset`] instead of to its high watermark, which loses
//!   acknowledged records or leaves logs diverged (KIP-101 scenarios 1 and 2, tested below).
//!
//! No IO, no clock, no randomness: time comes in as `now_ms`, effects go out as
//! [`LeaderOutput`]s, the logs themselves stay with the shell. The simulator
//! (`replica_sim.rs`, included below as `sim`) drives this core, the controller core and model
//! logs, ZooKeeper and network through crashes, pauses and lost messages, one seed at a time.
//!
//! What the core relies on from the shell:
//! - One [`Leader`] per leadership term (broker, leader epoch), created from the state znode
//!   that names this broker leader, and dropped when [`Leader::state_read`] says the term is
//!   over. A follower stops fetching before it becomes leader.
//! - One *process* per term: a broker never leads an epoch that it, or an earlier process of
//!   it, led before. A restarted broker can read a state naming it leader at the epoch its
//!   previous process led (a controller write decided before the controller saw it go, or
//!   not yet replaced); leading that epoch again would put two different batches at one
//!   (offset, epoch) in different logs, which no epoch check can see. So the shell keeps
//!   the highest epoch it led per partition durably, written before the Leader answers
//!   anything (the epoch checkpoint is not enough: recovery drops an epoch whose batches a
//!   crash lost, and one without batches), and stays idle on a state whose epoch is not
//!   above it: the controller, seeing the broker leave and join, moves the leadership to a
//!   newer epoch. (Kafka fences this with broker epochs in LeaderAndIsr, KIP-380.)
//! - Right after [`Leader::new`] the shell reports its written end with
//!   [`Leader::local_written`]: the core takes nothing above the high watermark as written
//!   until told, since appends may still be in flight.
//! - A follower fetches `fetch_offset` only once everything below it is written, sends its
//!   cache's latest epoch as `last_fetched_epoch` (as Kafka does: it may be an epoch it led
//!   without appending, which costs one diverging round), and on a diverging answer truncates
//!   its log to [`truncation_offset`] and its cache with [`EpochCache::truncate_from_end`]
//!   (always, even when the log keeps its length: an empty epoch at the end must go).
//! - A fetch below the leader's log start is the shell's `OFFSET_OUT_OF_RANGE`; this core does
//!   not know the log start.
//! - ISR writes: a definite `BadVersion` is [`Leader::isr_conflict`]; a write whose outcome is
//!   unknown (connection loss) is retried as it is until the answer is definite. Every change
//!   of the znode is eventually read again ([`Leader::state_read`]); older reads are ignored.

use std::fmt;

/// A broker's id (`broker.id`).
pub type BrokerId = i32;

/// Kafka's `NOT_ENOUGH_REPLICAS`.
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
/// Kafka's `NOT_ENOUGH_REPLICAS_AFTER_APPEND`.
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;

/// Kafka's leader-epoch cache (`LeaderEpochFileCache`): (epoch, start offset) pairs, both
/// strictly increasing. The start offset of an epoch is the offset of its first batch (for the
/// latest epoch of a leader: its log end when it took over, before any batch of it exists).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct EpochCache {
    entries: Vec<(i32, i64)>,
}

impl fmt::Debug for EpochCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.entries).finish()
    }
}

impl EpochCache {
    /// A cache from a checkpoint file: entries are taken in epoch order as
    /// [`EpochCache::assign`] takes them, so a later epoch starting at or before an earlier
    /// one's start replaces it (the earlier one had no batches), and negative values are
    /// dropped.
    pub fn from_entries(mut entries: Vec<(i32, i64)>) -> EpochCache {
        entries.sort_unstable();
        let mut cache = EpochCache::default();
        for (epoch, start_offset) in entries {
            if epoch < 0 || start_offset < 0 {
                continue;
            }
            cache.push_replacing(epoch, start_offset);
        }
        cache.debug_check();
        cache
    }

    /// The (epoch, start offset) pairs, oldest first.
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// `epoch` starts at `start_offset` (a new leader: at its log end; a follower: at the
    /// first appended batch of that epoch). No-op if `epoch` is the latest. An epoch older than
    /// the latest that starts exactly where the latest does replaces it: that latest epoch has
    /// no batch (a leader that appended nothing) and the batch now appended there proves it
    /// never will, as Kafka does. Another older epoch comes from an append that raced with
    /// becoming leader, and is kept in order ([`EpochCache::insert_older`]). Returns true when the cache changed (the shell then rewrites the checkpoint).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        debug_assert!(epoch >= 0 && start_offset >= 0, "({epoch}, {start_offset})");
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        let changed = match self.entries.last() {
            None => {
                self.entries.push((epoch, start_offset));
                true
            }
            Some(&(latest, _)) if epoch == latest => false,
            Some(&(latest, latest_start)) if epoch < latest => {
                if start_offset == latest_start {
                    self.push_replacing(epoch, start_offset);
                    true
                } else {
                    // A follower's append that completed after this replica became leader
                    // (the leader's epoch starts at the log end, after it): the batch lies
                    // before the latest epoch's start. Kept in order: nothing to do when its
                    // epoch is known and starts no later, else it goes in between.
                    self.insert_older(epoch, start_offset)
                }
            }
            Some(&(_, latest_start)) => {
                // A new epoch starts at the log end, never before the latest one's start.
                debug_assert!(
                    start_offset >= latest_start,
                    "epoch {epoch} at {start_offset} after {:?}",
                    self.entries
                );
                self.push_replacing(epoch, start_offset);
                true
            }
        };
        self.debug_check();
        changed
    }

    /// [`EpochCache::assign`] of an epoch older than the latest: a no-op when `epoch` is
    /// known and starts at or before `start_offset`; inserted when it fits between its
    /// neighbours (smaller epochs start no later, larger ones after); otherwise refused (a
    /// shell bug, asserted in debug builds).
    fn insert_older(&mut self, epoch: i32, start_offset: i64) -> bool {
        let at = self.entries.partition_point(|&(e, _)| e < epoch);
        if let Some(&(e, start)) = self.entries.get(at) {
            if e == epoch && start <= start_offset {
                return false;
            }
        }
        let after_previous = at == 0 || self.entries[at - 1].1 < start_offset;
        let before_next = self
            .entries
            .get(at)
            .is_some_and(|&(e, start)| e > epoch && start > start_offset);
        if after_previous && before_next {
            self.entries.insert(at, (epoch, start_offset));
            return true;
        }
        debug_assert!(
            false,
            "epoch {epoch} at {start_offset} does not fit {:?}",
            self.entries
        );
        false
    }

    /// KIP-279 `OffsetForLeaderEpoch`, as Kafka's `LeaderEpochFileCache.endOffsetFor` answers
    /// it: the largest epoch <= `epoch` and its end offset (the start of the next larger
    /// epoch, or `log_end_offset` when it is the latest). When every known epoch is larger
    /// (retention removed the older ones), `(epoch, start of the first known)`: everything
    /// below it is gone. None when `epoch` is negative, the cache is empty, or `epoch` is newer
    /// than the latest (Kafka answers `UNDEFINED_EPOCH` -1 / `UNDEFINED_EPOCH_OFFSET` -1).
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let &(latest, _) = self.entries.last()?;
        if epoch < 0 || epoch > latest {
            return None;
        }
        if epoch == latest {
            return Some((epoch, log_end_offset));
        }
        let higher = self.entries.partition_point(|&(e, _)| e <= epoch);
        let end_offset = self.entries[higher].1;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].0, end_offset)),
            None => Some((epoch, end_offset)),
        }
    }

    /// After the log was truncated to `end_offset`: drop entries starting at or after it.
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        self.entries.retain(|&(_, start)| start < end_offset);
    }

    /// After retention moved the log start to `start_offset`: the entries before it collapse
    /// into one starting at `start_offset` (the epoch of the batch found there).
    pub fn truncate_from_start(&mut self, start_offset: i64) {
        let covering = self
            .entries
            .partition_point(|&(_, start)| start <= start_offset);
        if covering == 0 {
            return;
        }
        self.entries.drain(..covering - 1);
        self.entries[0].1 = start_offset;
        self.debug_check();
    }

    /// Appends (epoch, start), first dropping entries it makes non-monotonic (Kafka's
    /// `maybeTruncateNonMonotonicEntries`).
    fn push_replacing(&mut self, epoch: i32, start_offset: i64) {
        while self
            .entries
            .last()
            .is_some_and(|&(e, s)| e >= epoch || s >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push((epoch, start_offset));
    }

    fn debug_check(&self) {
        debug_assert!(
            self.entries
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
            "epoch cache not strictly increasing: {:?}",
            self.entries
        );
    }
}

/// Where a follower truncates on a [`FetchAnswer::Diverging`] `{ epoch, end_offset }` (KIP-279,
/// Kafka's `AbstractFetcherThread.getOffsetTruncationState`):
/// `min(end_offset, the follower's own end of the largest epoch <= epoch, log_end_offset)`.
///
/// Why that is safe: the leader's log holds, at offsets >= `end_offset`, only epochs newer
/// than anything the follower has, and two logs holding the same epoch hold the same batches
/// of it from that epoch's leader, up to the shorter end; so nothing the result cuts can be
/// in the leader's log, and with clean elections nothing committed (below the follower's HW)
/// is cut: the simulator checks that on every truncation. When the follower's largest epoch
/// <= `epoch` is older than `epoch`, the result is only a first step: the next fetch carries
/// that older epoch and the leader answers again, until both sides name the same epoch.
///
/// KIP-101 scenario 1 (a restarted follower truncating to its lagging HW, then elected) cannot
/// happen because nothing here looks at the HW; scenario 2 (two logs with different batches
/// at the same offsets, both above their HW) is resolved because the epochs differ there.
///
/// A negative `end_offset` (an `UNDEFINED` answer) proves nothing: no truncation. A negative
/// `epoch` with an offset means "my log ends there, I know no epoch <= yours": the follower
/// keeps at most that much.
pub fn truncation_offset(
    cache: &EpochCache,
    diverging_epoch: i32,
    diverging_end_offset: i64,
    log_end_offset: i64,
) -> i64 {
    if diverging_end_offset < 0 {
        return log_end_offset;
    }
    let leader_end = diverging_end_offset.min(log_end_offset);
    if diverging_epoch < 0 {
        return leader_end;
    }
    match cache.end_offset_for(diverging_epoch, log_end_offset) {
        Some((_, own_end)) => leader_end.min(own_end),
        // Every epoch the follower has is older than the leader's answer (its cache lags its
        // log): only what lies above the leader's end is proven divergent.
        None => leader_end,
    }
}

/// A follower's high watermark after a fetch: `min(leader's HW, own log end)`, never below
/// what it had (a new leader may still report a lower HW than its predecessor did), except
/// that it never exceeds the log end (after a truncation).
pub fn follower_high_watermark(
    current: i64,
    leader_high_watermark: i64,
    log_end_offset: i64,
) -> i64 {
    current
        .min(log_end_offset)
        .max(leader_high_watermark.min(log_end_offset))
}

/// Leader settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// `replica.lag.time.max.ms`: an ISR follower that has not caught up for this long leaves
    /// the ISR. Kafka's default is 30000.
    pub replica_lag_time_max_ms: u64,
}

impl Default for LeaderConfig {
    fn default() -> LeaderConfig {
        LeaderConfig {
            replica_lag_time_max_ms: 30_000,
        }
    }
}

/// What the leader answers a follower's Fetch for this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAnswer {
    /// Serve records from `fetch_offset` up to the leader's log end; report this high
    /// watermark.
    Serve {
        /// The leader's high watermark after taking this fetch in.
        high_watermark: i64,
    },
    /// Fetch v12 `diverging_epoch`: the follower's `last_fetched_epoch` ends earlier on the
    /// leader; it must truncate (see [`truncation_offset`]) and fetch again. No records.
    Diverging {
        /// The largest epoch of the leader <= the follower's last fetched epoch.
        epoch: i32,
        /// Where that epoch ends on the leader.
        end_offset: i64,
        /// The leader's high watermark.
        high_watermark: i64,
    },
    /// `current_leader_epoch` < ours: `FENCED_LEADER_EPOCH` (74).
    FencedLeaderEpoch,
    /// `current_leader_epoch` > ours: `UNKNOWN_LEADER_EPOCH` (75) (we have not seen that epoch
    /// yet). Also when the follower's last fetched epoch is newer than ours: it followed a
    /// newer leader, so this one is deposed and must not make it truncate.
    UnknownLeaderEpoch,
    /// The fetching broker is not in the replica list (or is this leader).
    NotAReplica,
}

/// What the leader asks the shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderOutput {
    /// Propose a new ISR: the shell does a conditional set of the partition's state znode at
    /// `expected_version` with {leader: me, leader_epoch: same, isr, controller_epoch: as last
    /// read}; it reports back [`Leader::isr_written`] or [`Leader::isr_conflict`].
    WriteIsr {
        /// The proposed ISR (the leader first is not promised; members are distinct).
        isr: Vec<BrokerId>,
        /// The znode version the proposal was made from.
        expected_version: i32,
    },
    /// The high watermark advanced to this (the shell wakes acks=all produces and consumer
    /// fetches, and checkpoints it now and then).
    HighWatermark(i64),
}

/// What the leader knows of one follower this term.
#[derive(Debug, Clone)]
struct Follower {
    id: BrokerId,
    /// As its last fetch said; None until it fetched this term (Kafka resets it on election,
    /// and an unknown ISR member holds the HW back).
    log_end: Option<i64>,
    /// Kafka's `lastCaughtUpTimeMs`.
    last_caught_up_ms: u64,
    /// The leader's log end when this follower last fetched (-1: not this term).
    last_fetch_leader_end: i64,
    last_fetch_ms: u64,
}

/// The leader of one partition for one leader epoch. See the module doc.
#[derive(Debug)]
pub struct Leader {
    me: BrokerId,
    epoch: i32,
    controller_epoch: i32,
    config: LeaderConfig,
    replicas: Vec<BrokerId>,
    /// The committed ISR and its znode version.
    isr: Vec<BrokerId>,
    version: i32,
    /// The ISR write in flight, made from `version` (nothing else moves the version while one
    /// is in flight). It stays after a conflict, blocking new proposals and still counting
    /// for the HW, until a newer state is read: a write reported failed may have happened.
    proposal: Option<Vec<BrokerId>>,
    /// The offset this epoch's first batch gets: a follower below it has not caught up with
    /// this term, whatever the HW says.
    epoch_start_offset: i64,
    high_watermark: i64,
    /// The leader's own LEO for the HW: what it has written.
    written_end: i64,
    /// The largest log end the shell reported (appended, maybe not written).
    log_end: i64,
    followers: Vec<Follower>,
    /// Outputs decided where none can be returned ([`Leader::state_read`]): they lead the
    /// next batch returned.
    deferred: Vec<LeaderOutput>,
}

impl Leader {
    /// Becomes leader at `epoch` (from the state znode it read: `isr`, its Stat.version
    /// `state_version`, `controller_epoch`), with its own log end and the high watermark it
    /// knew (as a follower, or 0). Calls `cache.assign(epoch, log_end_offset)`. The core counts
    /// the leader's log as written up to `high_watermark` only, until
    /// [`Leader::local_written`] says more.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: BrokerId,
        epoch: i32,
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
        state_version: i32,
        controller_epoch: i32,
        log_end_offset: i64,
        high_watermark: i64,
        now_ms: u64,
        cache: &mut EpochCache,
        config: LeaderConfig,
    ) -> Leader {
        debug_assert!(isr.contains(&me), "leader {me} outside its ISR {isr:?}");
        debug_assert!(
            high_watermark <= log_end_offset,
            "HW {high_watermark} above the log end {log_end_offset}"
        );
        debug_assert!(
            cache.latest_epoch().is_none_or(|e| e < epoch),
            "leader at epoch {epoch} with that or a newer epoch in its cache {cache:?}"
        );
        cache.assign(epoch, log_end_offset);
        let epoch_start_offset = match cache.entries().last() {
            Some(&(e, start)) if e == epoch => start,
            _ => log_end_offset,
        };
        let high_watermark = high_watermark.clamp(0, log_end_offset.max(0));
        let followers = replicas
            .iter()
            .copied()
            .filter(|&b| b != me)
            .map(|id| Follower {
                id,
                log_end: None,
                // Kafka: an ISR member gets the whole lag time to show up under a new leader.
                last_caught_up_ms: if isr.contains(&id) { now_ms } else { 0 },
                last_fetch_leader_end: -1,
                last_fetch_ms: 0,
            })
            .collect();
        let leader = Leader {
            me,
            epoch,
            controller_epoch,
            config,
            replicas,
            isr: dedup(isr),
            version: state_version,
            proposal: None,
            epoch_start_offset,
            high_watermark,
            written_end: high_watermark,
            log_end: log_end_offset,
            followers,
            deferred: Vec::new(),
        };
        leader.debug_check();
        leader
    }

    /// The leader's own write up to `end_offset` completed (under its flush policy). Its LEO
    /// for the HW is this, not what is merely buffered.
    pub fn local_written(&mut self, end_offset: i64, _now_ms: u64) -> Vec<LeaderOutput> {
        let mut out = std::mem::take(&mut self.deferred);
        if end_offset > self.written_end {
            self.written_end = end_offset;
            self.log_end = self.log_end.max(end_offset);
            self.advance_high_watermark(&mut out);
        }
        self.debug_check();
        out
    }

    /// A follower's Fetch. `fetch_offset` IS that follower's log end: a follower asks for the
    /// next offset only once its own write of everything below completed.
    /// `last_fetched_epoch` is the epoch at the end of the follower's log (its cache's latest,
    /// -1: none/empty log). `current_leader_epoch` -1: not given, not checked. `log_end_offset`
    /// is the leader's current log end (appended, maybe not yet written); `cache` its epoch
    /// cache.
    #[allow(clippy::too_many_arguments)]
    pub fn follower_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        current_leader_epoch: i32,
        last_fetched_epoch: i32,
        cache: &EpochCache,
        log_end_offset: i64,
        now_ms: u64,
    ) -> (FetchAnswer, Vec<LeaderOutput>) {
        let mut out = std::mem::take(&mut self.deferred);
        let Some(k) = self.followers.iter().position(|f| f.id == follower) else {
            return (FetchAnswer::NotAReplica, out);
        };
        if current_leader_epoch >= 0 && current_leader_epoch < self.epoch {
            return (FetchAnswer::FencedLeaderEpoch, out);
        }
        if current_leader_epoch > self.epoch || last_fetched_epoch > self.epoch {
            return (FetchAnswer::UnknownLeaderEpoch, out);
        }
        self.log_end = self.log_end.max(log_end_offset);
        let diverging = if last_fetched_epoch >= 0 {
            match cache.end_offset_for(last_fetched_epoch, log_end_offset) {
                Some((epoch, end_offset))
                    if epoch < last_fetched_epoch || end_offset < fetch_offset =>
                {
                    Some((epoch, end_offset))
                }
                Some(_) => None,
                // Our cache lacks our own epoch: a shell bug. Keep the follower from reading
                // past our end; it truncates no lower than that.
                None => (fetch_offset > log_end_offset).then_some((-1, log_end_offset)),
            }
        } else {
            // No epoch at all: an empty log. More than we have cannot be ours.
            (fetch_offset > log_end_offset).then_some((-1, log_end_offset))
        };
        if let Some((epoch, end_offset)) = diverging {
            // Nothing about this follower's log is known until it has truncated.
            let answer = FetchAnswer::Diverging {
                epoch,
                end_offset,
                high_watermark: self.high_watermark,
            };
            return (answer, out);
        }

        let f = &mut self.followers[k];
        f.log_end = Some(fetch_offset);
        // Kafka's Replica.updateFetchState: caught up when the fetch reaches the leader's log
        // end now, or the one at the previous fetch (then as of that fetch).
        if fetch_offset >= log_end_offset {
            f.last_caught_up_ms = f.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= f.last_fetch_leader_end {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.last_fetch_leader_end = log_end_offset;
        f.last_fetch_ms = now_ms;

        self.advance_high_watermark(&mut out);
        if !self.isr.contains(&follower) && self.can_join(fetch_offset) {
            // It joins as of now: counting its lag from a catch-up long ago would drop it again
            // at the next tick.
            let f = &mut self.followers[k];
            f.last_caught_up_ms = f.last_caught_up_ms.max(now_ms);
        }
        self.maybe_propose(now_ms, Some(follower), &mut out);
        self.debug_check();
        (
            FetchAnswer::Serve {
                high_watermark: self.high_watermark,
            },
            out,
        )
    }

    /// Periodic: shrink the ISR of followers not caught up for `replica_lag_time_max_ms`
    /// (and make the proposals a read or a settled write left waiting).
    pub fn tick(&mut self, now_ms: u64) -> Vec<LeaderOutput> {
        let mut out = std::mem::take(&mut self.deferred);
        self.maybe_propose(now_ms, None, &mut out);
        out
    }

    /// The ISR write succeeded: the znode now holds `isr` at `new_version`. A result that
    /// does not match the write in flight (a late duplicate, or one a newer read already
    /// settled) is ignored.
    pub fn isr_written(
        &mut self,
        isr: Vec<BrokerId>,
        new_version: i32,
        now_ms: u64,
    ) -> Vec<LeaderOutput> {
        let mut out = std::mem::take(&mut self.deferred);
        let matches = self.proposal.as_ref() == Some(&isr);
        if !matches || new_version <= self.version {
            return out;
        }
        self.proposal = None;
        self.isr = dedup(isr);
        self.version = new_version;
        self.advance_high_watermark(&mut out);
        self.maybe_propose(now_ms, None, &mut out);
        self.debug_check();
        out
    }

    /// The conditional write failed (the controller or someone changed the state): make no
    /// more ISR proposals until [`Leader::state_read`] delivers the current state. The
    /// proposal keeps counting for the HW until then.
    pub fn isr_conflict(&mut self) {
        // Nothing to do: the proposal stays in flight (see `proposal`). A conflict that was
        // not about it (a late one for an earlier proposal) only delays the next proposal
        // until this one's result or a newer read.
    }

    /// The state znode as read (watch). Returns false when this broker is no longer leader at
    /// this epoch (the shell then drops the Leader and becomes follower/offline as the state
    /// says). Same leader and epoch: adopt `isr` and `version` (the controller may have
    /// removed a dead follower). A read older than what the core knows changes nothing.
    pub fn state_read(
        &mut self,
        leader: BrokerId,
        epoch: i32,
        isr: Vec<BrokerId>,
        version: i32,
        now_ms: u64,
    ) -> bool {
        if version < self.version {
            return true;
        }
        if leader != self.me || epoch != self.epoch || !isr.contains(&self.me) {
            return false;
        }
        if version == self.version {
            // The state our proposal (if any) was made from: it settles nothing.
            return true;
        }
        // Newer than the version the proposal expected: it either happened and is part of
        // this state, or it never will.
        self.proposal = None;
        self.isr = dedup(isr);
        self.version = version;
        // A smaller ISR may let the HW advance. The answer is a bool, so the output waits for
        // the next call that returns outputs (the shell re-checks its acks after a read
        // anyway, and high_watermark() is current); proposals wait for the next tick or fetch.
        let mut out = std::mem::take(&mut self.deferred);
        self.advance_high_watermark(&mut out);
        self.deferred = out;
        let _ = now_ms;
        self.debug_check();
        true
    }

    /// The partition's replica list grew within this term (a reassignment adds replicas):
    /// the new ones may fetch and, once caught up, join the ISR. Replicas leave only with a
    /// new term (the controller bumps the epoch when it drops them), so an ISR member never
    /// loses its follower entry here.
    pub fn replicas_added(&mut self, replicas: &[BrokerId]) {
        for &b in replicas {
            if b != self.me && !self.replicas.contains(&b) {
                self.replicas.push(b);
                self.followers.push(Follower {
                    id: b,
                    log_end: None,
                    last_caught_up_ms: 0,
                    last_fetch_leader_end: -1,
                    last_fetch_ms: 0,
                });
            }
        }
        self.debug_check();
    }

    /// The leader epoch of this term.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// The controller epoch of the state this term started from (the shell writes the one of
    /// the state it last read).
    pub fn controller_epoch(&self) -> i32 {
        self.controller_epoch
    }

    /// The high watermark: every record below it is on every member of the maximal ISR.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The committed ISR (what the znode says).
    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    /// The znode version of the committed ISR.
    pub fn state_version(&self) -> i32 {
        self.version
    }

    /// The committed ISR together with the one in flight: what the HW is computed over.
    pub fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut m = self.isr.clone();
        if let Some(p) = &self.proposal {
            for &b in p {
                if !m.contains(&b) {
                    m.push(b);
                }
            }
        }
        m
    }

    /// acks=all, checked before the append: `Err(19 NOT_ENOUGH_REPLICAS)` when the committed
    /// ISR is smaller than `min_insync` (Kafka checks the committed ISR here).
    pub fn check_min_isr(&self, min_insync: usize) -> Result<(), i16> {
        if self.isr.len() < min_insync {
            Err(NOT_ENOUGH_REPLICAS)
        } else {
            Ok(())
        }
    }

    /// acks=all, checked whenever the HW moves or the ISR changes, for an append ending at
    /// `end_offset` (exclusive): `Some(Ok(()))` once HW >= `end_offset` and the ISR had >=
    /// `min_insync` members; `Some(Err(20 NOT_ENOUGH_REPLICAS_AFTER_APPEND))` when HW >=
    /// `end_offset` but the ISR shrank below `min_insync`; None: keep waiting. "The ISR" is
    /// the maximal one, as in Kafka's `checkEnoughReplicasReachOffset`: the HW is computed over
    /// it, so every one of its members holds the append.
    pub fn ack_state(&self, end_offset: i64, min_insync: usize) -> Option<Result<(), i16>> {
        if self.high_watermark < end_offset {
            return None;
        }
        let holders = self.isr.len()
            + self
                .proposal
                .as_ref()
                .map_or(0, |p| p.iter().filter(|b| !self.isr.contains(b)).count());
        Some(if holders >= min_insync {
            Ok(())
        } else {
            Err(NOT_ENOUGH_REPLICAS_AFTER_APPEND)
        })
    }

    fn follower(&self, id: BrokerId) -> Option<&Follower> {
        self.followers.iter().find(|f| f.id == id)
    }

    /// Joining needs the HW (so that counting it never lowers the HW) and this epoch's start
    /// (a follower of a previous term may sit at an old HW with a log that stops short of the
    /// records this leader had when elected).
    fn can_join(&self, log_end: i64) -> bool {
        log_end >= self.high_watermark && log_end >= self.epoch_start_offset
    }

    /// The HW is the smallest LEO over the maximal ISR; an ISR member that has not fetched
    /// this term holds it where it is.
    fn advance_high_watermark(&mut self, out: &mut Vec<LeaderOutput>) {
        let mut hw = self.written_end;
        for b in self.maximal_isr() {
            if b == self.me {
                continue;
            }
            match self.follower(b).and_then(|f| f.log_end) {
                Some(end) => hw = hw.min(end),
                None => return,
            }
        }
        if hw > self.high_watermark {
            self.high_watermark = hw;
            out.push(LeaderOutput::HighWatermark(hw));
        }
    }

    /// At most one ISR write in flight, none after a conflict until a newer state is read.
    /// Shrinking comes first: a stuck follower holds back every acks=all produce.
    /// `fetched`: the follower whose fetch is being handled, the only one that may join (as
    /// in Kafka): a follower is added on the evidence of its own fetch, never from a position
    /// it reported long ago (a dead broker would be put back into the ISR after every
    /// controller shrink).
    fn maybe_propose(
        &mut self,
        now_ms: u64,
        fetched: Option<BrokerId>,
        out: &mut Vec<LeaderOutput>,
    ) {
        // A proposal in flight, or a conflicted one waiting for the state to be read.
        if self.proposal.is_some() {
            return;
        }
        let lag_max_ms = self.config.replica_lag_time_max_ms;
        let leader_end = self.log_end;
        let out_of_sync = |f: &Follower| {
            f.log_end != Some(leader_end) && now_ms.saturating_sub(f.last_caught_up_ms) > lag_max_ms
        };
        let mut isr: Vec<BrokerId> = self
            .isr
            .iter()
            .copied()
            .filter(|&b| b == self.me || !self.follower(b).is_some_and(out_of_sync))
            .collect();
        if isr.len() == self.isr.len() {
            // Nobody to drop: add the fetching follower if it caught up.
            for &b in &self.replicas {
                let joins = b != self.me
                    && Some(b) == fetched
                    && !isr.contains(&b)
                    && self
                        .follower(b)
                        .and_then(|f| f.log_end)
                        .is_some_and(|end| self.can_join(end));
                if joins {
                    isr.push(b);
                }
            }
            if isr.len() == self.isr.len() {
                return;
            }
        }
        debug_assert!(isr.contains(&self.me));
        self.proposal = Some(isr.clone());
        out.push(LeaderOutput::WriteIsr {
            isr,
            expected_version: self.version,
        });
    }

    fn debug_check(&self) {
        debug_assert!(
            self.isr.contains(&self.me),
            "ISR {:?} lost leader {}",
            self.isr,
            self.me
        );
        debug_assert!(
            self.high_watermark <= self.log_end,
            "HW {} above the log end {}",
            self.high_watermark,
            self.log_end
        );
        debug_assert!(
            self.proposal.as_ref().is_none_or(|p| p.contains(&self.me)),
            "a proposal without the leader: {:?}",
            self.proposal
        );
    }
}

fn dedup(v: Vec<BrokerId>) -> Vec<BrokerId> {
    let mut seen = Vec::with_capacity(v.len());
    for b in v {
        if !seen.contains(&b) {
            seen.push(b);
        }
    }
    seen
}

#[cfg(test)]
#[path = "replica_sim.rs"]
mod sim;

#[cfg(test)]
mod tests {
    //! The rules one at a time on hand-made sequences, and the two KIP-101 scenarios played
    //! through a minimal shell (the randomised simulator in `sim` covers the interleavings).

    use super::*;

    const LAG_MS: u64 = 100;

    fn config() -> LeaderConfig {
        LeaderConfig {
            replica_lag_time_max_ms: LAG_MS,
        }
    }

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        let c = EpochCache::from_entries(entries.to_vec());
        assert_eq!(c.entries(), entries, "test cache not in canonical form");
        c
    }

    /// Broker 1 leads epoch 5 of replicas [1, 2, 3] with `isr` at version 10; its log (all
    /// written) ends at `log_end` and it knew HW `hw`.
    fn leader(isr: &[BrokerId], log_end: i64, hw: i64) -> (Leader, EpochCache) {
        let mut c = cache(&[(0, 0), (3, 4)]);
        let mut l = Leader::new(
            1,
            5,
            vec![1, 2, 3],
            isr.to_vec(),
            10,
            2,
            log_end,
            hw,
            0,
            &mut c,
            config(),
        );
        assert!(l.local_written(log_end, 0).len() <= 1);
        (l, c)
    }

    fn serve(hw: i64) -> FetchAnswer {
        FetchAnswer::Serve { high_watermark: hw }
    }

    #[test]
    fn assign_starts_epochs_and_replaces_an_empty_latest_one() {
        let mut c = EpochCache::default();
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 5), "the same epoch again is a no-op");
        assert!(c.assign(2, 7));
        assert_eq!(c.latest_epoch(), Some(2));
        // Epoch 4 was led without a batch; a batch of epoch 3 lands where 4 started.
        assert!(c.assign(4, 9));
        assert!(c.assign(3, 9));
        assert_eq!(c.entries(), &[(0, 0), (2, 7), (3, 9)]);
        // A newer epoch at the start of an empty latest one replaces it too.
        assert!(c.assign(5, 12));
        assert!(c.assign(6, 12));
        assert_eq!(c.entries(), &[(0, 0), (2, 7), (3, 9), (6, 12)]);
    }

    #[test]
    fn a_follower_append_that_completes_after_becoming_leader_keeps_the_cache_in_order() {
        // Batch 228 of epoch 0 was appended (log end 229) when this replica became leader of
        // epoch 1 at 229; the append's epoch bookkeeping runs afterwards.
        let mut c = EpochCache::default();
        c.assign(0, 0);
        c.assign(1, 229);
        assert!(
            !c.assign(0, 228),
            "epoch 0 is known from offset 0: nothing new"
        );
        assert_eq!(c.entries(), &[(0, 0), (1, 229)]);
        // An epoch the cache missed goes in between its neighbours.
        let mut c = EpochCache::default();
        c.assign(0, 0);
        c.assign(3, 229);
        assert!(c.assign(2, 200));
        assert_eq!(c.entries(), &[(0, 0), (2, 200), (3, 229)]);
    }

    #[test]
    fn from_entries_sorts_and_drops_what_breaks_monotonicity() {
        let c = EpochCache::from_entries(vec![(3, 10), (1, 0), (-1, 0), (2, 10), (4, 8), (5, -3)]);
        // (2, 10) and (3, 10) start at or after (4, 8): epochs without batches.
        assert_eq!(c.entries(), &[(1, 0), (4, 8)]);
    }

    #[test]
    fn end_offset_for_answers_as_kafka_does() {
        let c = cache(&[(1, 5), (3, 9), (6, 20)]);
        assert_eq!(
            c.end_offset_for(6, 30),
            Some((6, 30)),
            "latest: the log end"
        );
        assert_eq!(c.end_offset_for(3, 30), Some((3, 20)));
        assert_eq!(c.end_offset_for(4, 30), Some((3, 20)), "largest epoch <= 4");
        assert_eq!(c.end_offset_for(1, 30), Some((1, 9)));
        assert_eq!(
            c.end_offset_for(0, 30),
            Some((0, 5)),
            "older than every entry: where the first known starts"
        );
        assert_eq!(c.end_offset_for(7, 30), None, "newer than the latest");
        assert_eq!(c.end_offset_for(-1, 30), None);
        assert_eq!(EpochCache::default().end_offset_for(0, 0), None);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache(&[(1, 5), (3, 9), (6, 20)]);
        c.truncate_from_end(20);
        assert_eq!(c.entries(), &[(1, 5), (3, 9)]);
        c.truncate_from_end(10);
        assert_eq!(c.entries(), &[(1, 5), (3, 9)]);
        c.truncate_from_end(9);
        assert_eq!(c.entries(), &[(1, 5)]);

        let mut c = cache(&[(1, 5), (3, 9), (6, 20)]);
        c.truncate_from_start(2);
        assert_eq!(
            c.entries(),
            &[(1, 5), (3, 9), (6, 20)],
            "before every entry"
        );
        c.truncate_from_start(12);
        assert_eq!(c.entries(), &[(3, 12), (6, 20)]);
        c.truncate_from_start(20);
        assert_eq!(c.entries(), &[(6, 20)]);
    }

    #[test]
    fn truncation_offset_takes_the_smaller_end_of_the_common_epoch() {
        let follower = cache(&[(0, 0), (2, 5), (4, 9)]);
        // Same epoch on both sides: the shorter end of it.
        assert_eq!(truncation_offset(&follower, 2, 7, 12), 7);
        assert_eq!(truncation_offset(&follower, 2, 11, 12), 9);
        // The leader's epoch 3 (which the follower never had) ends at 8: the follower's epoch 2
        // ends at 9, so at most 8 is kept; the next fetch (last epoch 2) settles the rest.
        assert_eq!(truncation_offset(&follower, 3, 8, 12), 8);
        assert_eq!(truncation_offset(&follower, 3, 10, 12), 9);
        // Never above the own log end.
        assert_eq!(truncation_offset(&follower, 4, 30, 12), 12);
        // The leader knows no epoch <= ours but its log ends at 3.
        assert_eq!(truncation_offset(&follower, -1, 3, 12), 3);
        // UNDEFINED proves nothing.
        assert_eq!(truncation_offset(&follower, -1, -1, 12), 12);
        // All of the follower's epochs are newer than the leader's answer.
        assert_eq!(truncation_offset(&cache(&[(5, 2)]), 3, 6, 8), 2);
    }

    #[test]
    fn follower_high_watermark_never_goes_back_nor_past_the_log() {
        assert_eq!(follower_high_watermark(3, 7, 10), 7);
        assert_eq!(follower_high_watermark(3, 7, 5), 5);
        assert_eq!(follower_high_watermark(6, 4, 10), 6, "a new leader lagging");
        assert_eq!(follower_high_watermark(6, 4, 5), 5, "truncated below it");
    }

    #[test]
    fn the_hw_is_the_smallest_written_end_over_the_isr_and_never_decreases() {
        let (mut l, c) = leader(&[1, 2, 3], 10, 4);
        assert_eq!(l.high_watermark(), 4);
        // Broker 3 has not fetched this term: nothing moves.
        let (a, out) = l.follower_fetch(2, 8, 5, 3, &c, 10, 1);
        assert_eq!((a, out), (serve(4), vec![]));
        let (a, out) = l.follower_fetch(3, 9, 5, 3, &c, 10, 1);
        assert_eq!((a, out), (serve(8), vec![LeaderOutput::HighWatermark(8)]));
        // Appended to 14 but written only to 12: the leader's LEO for the HW is 12.
        l.follower_fetch(2, 14, 5, 5, &c, 14, 2);
        l.follower_fetch(3, 14, 5, 5, &c, 14, 2);
        assert_eq!(l.high_watermark(), 10);
        assert_eq!(
            l.local_written(12, 3),
            vec![LeaderOutput::HighWatermark(12)]
        );
        // A late, reordered fetch with a smaller offset does not lower it.
        let (a, _) = l.follower_fetch(2, 9, 5, 3, &c, 14, 4);
        assert_eq!(a, serve(12));
        assert_eq!(l.high_watermark(), 12);
    }

    #[test]
    fn the_leaders_own_log_counts_only_once_written() {
        let mut c = cache(&[(0, 0)]);
        let mut l = Leader::new(1, 1, vec![1, 2], vec![1], 0, 1, 10, 3, 0, &mut c, config());
        assert_eq!(l.high_watermark(), 3, "not written yet as far as it knows");
        assert_eq!(
            l.local_written(10, 0),
            vec![LeaderOutput::HighWatermark(10)]
        );
        assert_eq!(
            c.entries(),
            &[(0, 0), (1, 10)],
            "the new epoch starts at the log end"
        );
    }

    #[test]
    fn a_follower_joins_at_the_hw_and_the_epoch_start_and_counts_at_once() {
        let (mut l, c) = leader(&[1, 2], 10, 4);
        // Broker 3 at the HW but below where epoch 5 starts (10): not yet.
        let (_, out) = l.follower_fetch(3, 6, 5, 3, &c, 10, 1);
        assert!(out.is_empty(), "{out:?}");
        let (_, out) = l.follower_fetch(3, 10, 5, 3, &c, 10, 2);
        assert_eq!(
            out,
            vec![LeaderOutput::WriteIsr {
                isr: vec![1, 2, 3],
                expected_version: 10
            }]
        );
        // While the expansion is in flight broker 3 counts: 2 at 10 cannot move the HW past 3.
        l.follower_fetch(2, 12, 5, 5, &c, 12, 3);
        l.local_written(12, 3);
        assert_eq!(l.high_watermark(), 10);
        assert_eq!(l.isr(), &[1, 2], "the committed ISR");
        assert_eq!(l.isr_written(vec![1, 2, 3], 11, 4), vec![]);
        assert_eq!(l.isr(), &[1, 2, 3]);
    }

    #[test]
    fn a_shrink_counts_the_old_isr_until_written_and_never_drops_the_leader() {
        let (mut l, c) = leader(&[1, 2, 3], 10, 10);
        l.follower_fetch(2, 10, 5, 3, &c, 10, 10);
        l.follower_fetch(3, 10, 5, 3, &c, 10, 10);
        l.local_written(14, 20);
        // 2 keeps up, 3 stops fetching.
        l.follower_fetch(2, 14, 5, 5, &c, 14, 50);
        assert_eq!(l.high_watermark(), 10);
        assert!(l.tick(10 + LAG_MS).is_empty(), "3 caught up at 10 ms");
        let out = l.tick(11 + LAG_MS);
        assert_eq!(
            out,
            vec![LeaderOutput::WriteIsr {
                isr: vec![1, 2],
                expected_version: 10
            }]
        );
        assert_eq!(
            l.high_watermark(),
            10,
            "3 still counts while the shrink is in flight"
        );
        assert!(l.tick(1000).is_empty(), "one write in flight");
        assert_eq!(
            l.isr_written(vec![1, 2], 11, 1000),
            vec![LeaderOutput::HighWatermark(14)]
        );
        // Caught up with the log end, 2 stays however long it is quiet.
        assert!(l.tick(5000).is_empty());
        // The log grows and 2 stops too: the leader drops 2 but never itself.
        l.local_written(16, 5000);
        assert_eq!(
            l.tick(5000),
            vec![LeaderOutput::WriteIsr {
                isr: vec![1],
                expected_version: 11
            }]
        );
    }

    #[test]
    fn caught_up_means_reaching_the_log_end_of_now_or_of_the_previous_fetch() {
        let (mut l, c) = leader(&[1, 2], 10, 10);
        l.follower_fetch(2, 10, 5, 3, &c, 12, 10); // behind the end 12
        l.follower_fetch(2, 12, 5, 5, &c, 16, 60); // reaches the previous end 12: caught up at 10
        assert!(l.tick(10 + LAG_MS).is_empty());
        assert_eq!(l.tick(11 + LAG_MS).len(), 1);
        let (mut l, c) = leader(&[1, 2], 10, 10);
        l.follower_fetch(2, 10, 5, 3, &c, 12, 10);
        l.follower_fetch(2, 11, 5, 5, &c, 16, 60); // never reached an end: since new() at 0
        assert_eq!(l.tick(1 + LAG_MS).len(), 1);
    }

    #[test]
    fn epoch_checks_come_before_anything_else() {
        let (mut l, c) = leader(&[1, 2, 3], 10, 4);
        let fetch = |l: &mut Leader, f, cle, lfe| l.follower_fetch(f, 10, cle, lfe, &c, 10, 1).0;
        assert_eq!(fetch(&mut l, 2, 4, 3), FetchAnswer::FencedLeaderEpoch);
        assert_eq!(fetch(&mut l, 2, 6, 3), FetchAnswer::UnknownLeaderEpoch);
        assert_eq!(
            fetch(&mut l, 2, -1, 7),
            FetchAnswer::UnknownLeaderEpoch,
            "it followed a newer leader"
        );
        assert_eq!(fetch(&mut l, 9, 5, 3), FetchAnswer::NotAReplica);
        assert_eq!(fetch(&mut l, 1, 5, 3), FetchAnswer::NotAReplica);
        assert_eq!(fetch(&mut l, 2, -1, 3), serve(4), "-1: not checked");
    }

    #[test]
    fn a_follower_whose_last_epoch_ends_earlier_here_is_told_where() {
        // Leader cache: epoch 0 from 0, 3 from 4, 5 (ours) from 10.
        let (mut l, c) = leader(&[1, 2, 3], 10, 4);
        let fetch = |l: &mut Leader, offset, lfe| l.follower_fetch(2, offset, 5, lfe, &c, 10, 1);
        // Its epoch 0 ran past 4 (to 6): diverged at 4.
        let (a, out) = fetch(&mut l, 6, 0);
        assert_eq!(
            a,
            FetchAnswer::Diverging {
                epoch: 0,
                end_offset: 4,
                high_watermark: 4
            }
        );
        assert!(out.is_empty());
        // Epoch 2 never existed here: the largest below is 0, ending at 4.
        let (a, _) = fetch(&mut l, 4, 2);
        assert!(
            matches!(
                a,
                FetchAnswer::Diverging {
                    epoch: 0,
                    end_offset: 4,
                    ..
                }
            ),
            "{a:?}"
        );
        // An empty log, and one ending within epoch 3.
        assert_eq!(fetch(&mut l, 0, -1).0, serve(4));
        assert_eq!(fetch(&mut l, 8, 3).0, serve(4));
        // No epoch but more than we have.
        assert!(matches!(
            fetch(&mut l, 12, -1).0,
            FetchAnswer::Diverging {
                epoch: -1,
                end_offset: 10,
                ..
            }
        ));
        // The diverging fetches taught the leader nothing: 2's LEO is 8, not 6 or 12.
        l.follower_fetch(3, 10, 5, 5, &c, 10, 2);
        assert_eq!(l.high_watermark(), 8);
    }

    #[test]
    fn a_conflict_stops_proposals_until_a_newer_state_is_read() {
        let (mut l, c) = leader(&[1, 2], 10, 10);
        let (_, out) = l.follower_fetch(3, 10, 5, 5, &c, 10, 1);
        assert_eq!(out.len(), 1);
        l.isr_conflict();
        assert!(l.tick(1).is_empty());
        // A stale read (older, or the version the proposal was made from) settles nothing.
        assert!(l.state_read(1, 5, vec![1, 2], 9, 2));
        assert!(l.state_read(1, 5, vec![1, 2], 10, 2));
        assert!(l.tick(2).is_empty());
        // The controller removed 2 (dead) at version 11: adopt. Follower 3 joins again on its
        // next fetch (never from the old position alone: 2 must not come back unseen).
        assert!(l.state_read(1, 5, vec![1], 11, 3));
        assert_eq!(l.isr(), &[1]);
        assert!(l.tick(3).is_empty());
        let (_, out) = l.follower_fetch(3, 10, 5, 5, &c, 10, 3);
        assert_eq!(
            out,
            vec![LeaderOutput::WriteIsr {
                isr: vec![1, 3],
                expected_version: 11
            }]
        );
        // A late result for the first proposal changes nothing.
        assert!(l.isr_written(vec![1, 2, 3], 11, 4).is_empty());
        assert_eq!(l.isr(), &[1]);
    }

    #[test]
    fn a_follower_removed_by_the_controller_is_not_added_back_without_fetching() {
        // 2 and 3 caught up, then 3 died and the controller dropped it: no tick puts it back.
        let (mut l, c) = leader(&[1, 2, 3], 10, 10);
        l.follower_fetch(2, 10, 5, 5, &c, 10, 1);
        l.follower_fetch(3, 10, 5, 5, &c, 10, 1);
        assert!(l.state_read(1, 5, vec![1, 2], 11, 2));
        for now in 3..100 {
            assert!(
                l.tick(now).is_empty(),
                "tick {now} re-added a silent follower"
            );
        }
        assert_eq!(l.isr(), &[1, 2]);
    }

    #[test]
    fn a_read_that_shrinks_the_isr_releases_the_hw_on_the_next_call() {
        let (mut l, c) = leader(&[1, 2, 3], 10, 10);
        l.follower_fetch(2, 10, 5, 5, &c, 10, 1);
        l.follower_fetch(3, 10, 5, 5, &c, 10, 1);
        l.local_written(12, 1);
        l.follower_fetch(2, 12, 5, 5, &c, 12, 2);
        assert_eq!(l.high_watermark(), 10);
        assert!(l.state_read(1, 5, vec![1, 2], 11, 3));
        assert_eq!(l.high_watermark(), 12);
        assert_eq!(l.tick(3), vec![LeaderOutput::HighWatermark(12)]);
    }

    #[test]
    fn a_read_naming_another_leader_or_epoch_ends_the_term() {
        let (mut l, _) = leader(&[1, 2, 3], 10, 4);
        assert!(!l.state_read(2, 6, vec![2, 3], 11, 1));
        let (mut l, _) = leader(&[1, 2, 3], 10, 4);
        assert!(!l.state_read(1, 6, vec![1, 2], 11, 1));
        let (mut l, _) = leader(&[1, 2, 3], 10, 4);
        assert!(!l.state_read(-1, 6, vec![1], 11, 1), "offline");
        let (mut l, _) = leader(&[1, 2, 3], 10, 4);
        assert!(l.state_read(2, 4, vec![2], 8, 1), "an older state");
    }

    #[test]
    fn acks_wait_for_the_hw_and_count_the_maximal_isr() {
        let (mut l, c) = leader(&[1, 2], 10, 10);
        assert_eq!(l.check_min_isr(2), Ok(()));
        assert_eq!(l.check_min_isr(3), Err(NOT_ENOUGH_REPLICAS));
        l.local_written(12, 1);
        assert_eq!(l.ack_state(12, 2), None);
        l.follower_fetch(2, 12, 5, 5, &c, 12, 1);
        assert_eq!(l.ack_state(12, 2), Some(Ok(())));
        assert_eq!(l.ack_state(13, 2), None);
        // 2 drops out; the HW then passes 14 with the leader alone.
        l.local_written(14, 500);
        let out = l.tick(500);
        assert_eq!(out.len(), 1);
        assert_eq!(
            l.ack_state(14, 2),
            None,
            "2 still counts while the shrink is in flight"
        );
        l.isr_written(vec![1], 11, 501);
        assert_eq!(
            l.ack_state(14, 2),
            Some(Err(NOT_ENOUGH_REPLICAS_AFTER_APPEND))
        );
        assert_eq!(l.check_min_isr(2), Err(NOT_ENOUGH_REPLICAS));
    }

    // ----- KIP-101 ------------------------------------------------------------------------

    /// One replica of a partition in a minimal shell: its log (epoch, value) by offset, all
    /// written, its epoch cache and HW.
    #[derive(Debug, Clone, Default)]
    struct Replica {
        log: Vec<(i32, &'static str)>,
        cache: EpochCache,
        hw: i64,
    }

    impl Replica {
        fn end(&self) -> i64 {
            self.log.len() as i64
        }

        fn append(&mut self, epoch: i32, value: &'static str) {
            self.cache.assign(epoch, self.end());
            self.log.push((epoch, value));
        }

        fn truncate(&mut self, to: i64) {
            self.log.truncate(to as usize);
            self.cache.truncate_from_end(to);
            self.hw = self.hw.min(to);
        }

        /// A restart: the cache rebuilt from the log, nothing else lost.
        fn restarted(&self, hw: i64) -> Replica {
            let mut r = Replica {
                hw,
                ..Replica::default()
            };
            for &(e, v) in &self.log {
                r.append(e, v);
            }
            r
        }

        fn values(&self) -> Vec<&'static str> {
            self.log.iter().map(|&(_, v)| v).collect()
        }
    }

    /// Follower `id` fetches from `leader` until it is served; returns the truncations it made.
    fn fetch(
        id: BrokerId,
        f: &mut Replica,
        l: &mut Leader,
        lr: &mut Replica,
        now: u64,
    ) -> Vec<i64> {
        let mut truncations = Vec::new();
        for _ in 0..10 {
            let lfe = f.cache.latest_epoch().unwrap_or(-1);
            let (answer, out) =
                l.follower_fetch(id, f.end(), l.epoch(), lfe, &lr.cache, lr.end(), now);
            for o in out {
                if let LeaderOutput::HighWatermark(hw) = o {
                    lr.hw = hw;
                }
            }
            match answer {
                FetchAnswer::Serve { high_watermark } => {
                    for &(e, v) in &lr.log[f.log.len()..] {
                        f.append(e, v);
                    }
                    f.hw = follower_high_watermark(f.hw, high_watermark, f.end());
                    return truncations;
                }
                FetchAnswer::Diverging {
                    epoch, end_offset, ..
                } => {
                    let to = truncation_offset(&f.cache, epoch, end_offset, f.end());
                    truncations.push(to);
                    f.truncate(to);
                }
                other => panic!("{other:?}"),
            }
        }
        panic!("no convergence");
    }

    #[test]
    fn kip101_scenario_1_a_restarted_follower_keeps_what_the_hw_does_not_cover_yet() {
        // A leads epoch 0 with ISR {A, B}; m1, m2 reach B; A's HW passes m2 (acknowledged)
        // but B's HW is still 1: it would learn 2 on its next fetch.
        let (a_id, b_id) = (1, 2);
        let mut a = Replica::default();
        let mut la = Leader::new(
            a_id,
            0,
            vec![1, 2],
            vec![1, 2],
            0,
            1,
            0,
            0,
            0,
            &mut a.cache,
            config(),
        );
        let mut b = Replica::default();
        a.append(0, "m1");
        la.local_written(1, 0);
        fetch(b_id, &mut b, &mut la, &mut a, 1);
        a.append(0, "m2");
        la.local_written(2, 1);
        fetch(b_id, &mut b, &mut la, &mut a, 2); // B gets m2, HW 1
        assert_eq!(b.values(), ["m1", "m2"]);
        // B's next fetch tells A it has m2: A's HW passes it and m2 is acknowledged; B
        // crashes before the answer (with HW 2) reaches it.
        let (answer, _) = la.follower_fetch(b_id, 2, 0, 0, &a.cache, 2, 3);
        assert_eq!(answer, serve(2));
        assert_eq!(la.ack_state(2, 2), Some(Ok(())));
        assert_eq!(b.hw, 1);

        // B restarts. Pre-KIP-101 Kafka truncated it to its HW here, and lost m2.
        let mut b = b.restarted(b.hw);
        assert!(
            b.hw < 2,
            "truncating to the HW would drop the acknowledged m2"
        );
        // A dies; B, in the ISR, is elected at epoch 1 with its log as it is.
        let mut lb = Leader::new(
            b_id,
            1,
            vec![1, 2],
            vec![2],
            1,
            1,
            b.end(),
            b.hw,
            10,
            &mut b.cache,
            config(),
        );
        lb.local_written(b.end(), 10);
        assert_eq!(b.values(), ["m1", "m2"]);
        b.append(1, "m3");
        lb.local_written(3, 10);
        // A comes back and follows B: its epoch 0 ends at 2 on B too, nothing to truncate.
        let mut a = a.restarted(a.hw);
        assert_eq!(fetch(a_id, &mut a, &mut lb, &mut b, 11), Vec::<i64>::new());
        assert_eq!(a.values(), ["m1", "m2", "m3"]);
        assert_eq!(a.log, b.log);
    }

    #[test]
    fn kip101_scenario_2_logs_that_differ_above_the_hw_converge() {
        // A leads epoch 0 and has m1, m2; B has m1. HW 1 on both... then both crash, B loses
        // nothing it had, A keeps m2 (its HW checkpoint says 2: it had learned it).
        let mut a = Replica::default();
        a.append(0, "m1");
        a.append(0, "m2");
        a.hw = 2;
        let mut b = Replica::default();
        b.append(0, "m1");
        b.hw = 1;
        // B comes back first, is elected at epoch 1 and takes m3 at offset 1.
        let mut lb = Leader::new(
            2,
            1,
            vec![1, 2],
            vec![2],
            3,
            1,
            b.end(),
            b.hw,
            0,
            &mut b.cache,
            config(),
        );
        b.append(1, "m3");
        lb.local_written(2, 0);
        assert_eq!(b.cache.entries(), &[(0, 0), (1, 1)]);

        // Truncating to its HW (2) would leave A with m2 where B has m3, for good.
        let naive = a.clone();
        assert_ne!(naive.log[..naive.hw as usize], b.log[..2]);

        // With epochs: A's epoch 0 ends at 1 on B; A drops m2 and takes m3.
        assert_eq!(fetch(1, &mut a, &mut lb, &mut b, 1), vec![1]);
        assert_eq!(a.values(), ["m1", "m3"]);
        assert_eq!(a.log, b.log);
        assert_eq!(a.cache, b.cache);
    }

    #[test]
    fn an_ex_leader_with_an_empty_epoch_rejoins_after_one_diverging_round() {
        // Broker 1 led epoch 4 at offset 3 without appending; broker 2 led epoch 5 and has
        // batches of epoch 3 beyond 3 (from before) and of 5.
        let mut f = Replica::default();
        for v in ["a", "b", "c"] {
            f.append(3, v);
        }
        f.cache.assign(4, 3);
        let mut l = Replica::default();
        for v in ["a", "b", "c", "d"] {
            l.append(3, v);
        }
        let mut leader = Leader::new(
            2,
            5,
            vec![1, 2],
            vec![2],
            0,
            1,
            l.end(),
            3,
            0,
            &mut l.cache,
            config(),
        );
        l.append(5, "e");
        leader.local_written(5, 0);
        assert_eq!(fetch(1, &mut f, &mut leader, &mut l, 1), vec![3]);
        assert_eq!(f.log, l.log);
        assert_eq!(f.cache, l.cache);
    }
}
