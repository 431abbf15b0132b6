//! The cluster controller's decisions, as a sans-IO state machine.
//!
//! One broker at a time is the controller: it won the `/controller` election and wrote its
//! epoch to `/controller_epoch`. [`Controller`] decides, for every partition, who leads and
//! which replicas stay in sync, with Kafka's ZooKeeper-mode rules: a leader comes from the
//! ISR only (unless unclean election is enabled for the topic); a dead broker leaves every
//! ISR at once; a partition without a live ISR member goes offline and keeps its last ISR
//! member, the one replica known to hold every acknowledged record; a broker that shuts
//! down cleanly hands its leaderships over first; a replica whose disk failed on its broker
//! (an offline replica, Kafka's offline log directory) counts as dead for that partition
//! only, so a leader that lost its log hands over to another ISR member.
//!
//! It takes [`Event`]s (what the shell read from ZooKeeper, the results of the writes it asked
//! for, controlled-shutdown requests) and returns [`Output`]s (conditional writes and reads of
//! the partition state znodes, answers). It is not the IO: the ZooKeeper client, watches, the
//! controller election, the epoch-fenced `multi` and telling brokers about new states all
//! belong to the shell (`agent.rs`). No clock and no randomness either: the same events give
//! the same outputs, which is what lets the simulator (`controller_sim.rs`, included below as
//! `sim`) replay a failing seed exactly.
//!
//! What the core relies on from the shell:
//! - Every write it asks for is conditional (create-if-absent, or set-at-version) and fenced
//!   by the controller epoch. Results for one partition come back in the order ZooKeeper
//!   executed the operations (a session is FIFO); across partitions any order is fine. The
//!   shell may add reads of its own (a state watch fired): any `StateRead` counts as the
//!   answer to the core's pending read, and older versions are ignored.
//! - The first [`Event::LiveBrokers`] comes before the core can decide anything: until then it
//!   only reads, because with an empty live set it would take every partition offline. After
//!   that, again whenever the children of `/brokers/ids` change. Notifications may be
//!   coalesced, but a broker that restarted in between (same id, new czxid, i.e. a new broker
//!   epoch) must be reported as leaving and then joining: two events.
//! - A [`Event::ControlledShutdown`] is passed on only from a broker in the last live set
//!   delivered, with the broker epoch registered then (Kafka answers others with
//!   `STALE_BROKER_EPOCH` and the broker retries). The core marks only brokers it sees as
//!   live: a mark taken from an older process could outlive it and keep its successor from
//!   ever leading. A request whose broker is missing from a later live set is dropped
//!   unanswered: the broker is gone, and one that still runs retries, as Kafka brokers do.
//! - [`Event::OfflineReplicas`] carries a broker's whole current set of failed replicas, as
//!   read from its `/offline_replicas/<id>` (empty once the znode is gone), whenever that
//!   changes. A set stays until a later report replaces it, whatever the live set does: the
//!   znode of a broker that restarted is gone (ephemeral), and its report of that may come
//!   before or after the restart's live sets, but always before a report of the new process.
//!   (Forgetting the set when the broker leaves would lose a report of its next process that
//!   came before the live set showed the restart.)
//! - A `NoNode` on a write (the topic is being deleted) is reported as
//!   [`Event::WriteConflict`] or [`Event::TopicRemoved`].
//!
//! Partitions added to a known topic (CreatePartitions appends them to its znode) arrive as
//! a [`Event::TopicAssigned`] listing more partitions: the new ones are read and created like
//! a new topic's, the known ones keep their state.
//!
//! Leader elections asked for by an operator (Kafka's ElectLeaders, [`Event::ElectLeaders`]):
//! a preferred election moves leadership to the first replica of the assignment when it is
//! live and in the ISR; an unclean one elects a live replica outside the ISR of a partition
//! that has no live ISR member left. Each is tried once, when the partition is next decided.
//!
//! Partition reassignment (Kafka's KIP-455 in ZooKeeper mode): the topic znode holds the full
//! replica set (target first, then the original replicas not in the target) with the
//! replicas being added and removed ([`Reassignment`]; [`reassign`] computes it for a
//! request). The core waits until every target replica is in the ISR, moves leadership into
//! the target when the leader is not in it, then asks the shell to write the target as the
//! assignment ([`Output::CompleteReassignment`]); once the target is the replica list, replicas
//! outside it leave the ISR at a new leader epoch (so the leader forgets them). Because the
//! progress is in the topic znode, a new controller resumes where the old one stopped.
//! Cancelling reverts to the original replicas the same way.
//!
//! Not handled here: the topic deletion protocol.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A broker's id (`broker.id`).
pub type BrokerId = i32;

/// The `leader` of a partition that has none (offline).
pub const NO_LEADER: BrokerId = -1;

/// The data of `/brokers/topics/<t>/partitions/<p>/state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAndIsr {
    /// The leader, or [`NO_LEADER`] when the partition is offline.
    pub leader: BrokerId,
    /// Bumped on every leader change (going offline included). Batches are stamped with it
    /// and replicas use it to fence a deposed leader, so one epoch must name one leader.
    pub leader_epoch: i32,
    /// The in-sync replicas. Never empty: an offline partition keeps its last member.
    pub isr: Vec<BrokerId>,
    /// The epoch of the controller that wrote this state (leaders changing their ISR carry
    /// it over unchanged).
    pub controller_epoch: i32,
}

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`-`partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A partition's reassignment in progress, as Kafka keeps it in the topic znode: the replica
/// list holds the target and the original replicas, `adding` are in the target only,
/// `removing` in the original only. Both empty: none in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reassignment {
    /// Kafka's `adding_replicas`.
    pub adding: Vec<BrokerId>,
    /// Kafka's `removing_replicas`.
    pub removing: Vec<BrokerId>,
}

impl Reassignment {
    /// True when a reassignment is in progress.
    pub fn in_progress(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The target replicas: the full list without the ones being removed, in order.
    pub fn target(&self, replicas: &[BrokerId]) -> Vec<BrokerId> {
        replicas
            .iter()
            .copied()
            .filter(|b| !self.removing.contains(b))
            .collect()
    }

    /// The original replicas: the full list without the ones being added, in order.
    pub fn origin(&self, replicas: &[BrokerId]) -> Vec<BrokerId> {
        replicas
            .iter()
            .copied()
            .filter(|b| !self.adding.contains(b))
            .collect()
    }
}

/// Why a reassignment request is refused (Kafka's error codes in the answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReassignError {
    /// A cancellation of a partition that is not being reassigned.
    NoReassignmentInProgress,
    /// An empty target or one naming a broker twice.
    InvalidReplicas(String),
}

/// The topic znode entry after a reassignment request for a partition whose entry is
/// `replicas` with `ongoing`: `target` Some starts (or replaces) a reassignment to it, None
/// cancels the one in progress (its target becomes the original replicas). The full list is
/// the target, then every replica held now that is not in it: none is dropped before the
/// target is in sync, so no replica that may lead or hold acknowledged records goes early.
pub fn reassign(
    replicas: &[BrokerId],
    ongoing: &Reassignment,
    target: Option<&[BrokerId]>,
) -> Result<(Vec<BrokerId>, Reassignment), ReassignError> {
    let origin = ongoing.origin(replicas);
    let target = match target {
        Some(t) => {
            if t.is_empty() {
                return Err(ReassignError::InvalidReplicas(
                    "the target replica list is empty".into(),
                ));
            }
            if t.iter().enumerate().any(|(k, b)| t[..k].contains(b)) {
                return Err(ReassignError::InvalidReplicas(format!(
                    "the target {t:?} names a broker twice"
                )));
            }
            t.to_vec()
        }
        None if ongoing.in_progress() => origin.clone(),
        None => return Err(ReassignError::NoReassignmentInProgress),
    };
    let mut full = target.clone();
    for &b in origin.iter().chain(replicas) {
        if !full.contains(&b) {
            full.push(b);
        }
    }
    let next = Reassignment {
        adding: full
            .iter()
            .copied()
            .filter(|b| !origin.contains(b))
            .collect(),
        removing: full
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect(),
    };
    debug_assert_eq!(next.target(&full), target);
    Ok((full, next))
}

/// Kafka's election types (ElectLeaders v1+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// Move leadership to the first replica of the assignment (0).
    Preferred,
    /// Elect a live replica outside the ISR of a partition without a live ISR member (1).
    Unclean,
}

/// Cluster-wide controller settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerConfig {
    /// `unclean.leader.election.enable`: elect a replica outside the ISR when no ISR member
    /// is live, trading acknowledged records for availability. Topics may override it.
    pub unclean_leader_election: bool,
}

/// What the shell feeds the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Children of /brokers/ids as just read (the full live set).
    LiveBrokers(BTreeSet<BrokerId>),
    /// /brokers/topics/<topic> as read: partition -> replica list (assignment order).
    TopicAssigned {
        /// Topic name.
        topic: String,
        /// Partition -> replicas in assignment order.
        replicas: BTreeMap<i32, Vec<BrokerId>>,
        /// The topic's `unclean.leader.election.enable`, when set.
        unclean_leader_election: Option<bool>,
        /// Partitions being reassigned (the others have none in progress).
        reassignments: BTreeMap<i32, Reassignment>,
    },
    /// The topic's znode is gone (deleted).
    TopicRemoved {
        /// Topic name.
        topic: String,
    },
    /// A state znode as read: None when the znode does not exist; Some((state, zk_version)).
    StateRead {
        /// The partition.
        tp: TopicPartition,
        /// The state and its znode version, or None when absent.
        state: Option<(LeaderAndIsr, i32)>,
    },
    /// A write this core asked for succeeded; the znode's new version.
    WriteDone {
        /// The partition.
        tp: TopicPartition,
        /// The znode's version after the write (0 after a create).
        new_version: i32,
    },
    /// A conditional write failed because the znode's version moved (BadVersion) or it
    /// already existed (NodeExists on create): the core must re-read, not retry blindly.
    WriteConflict {
        /// The partition.
        tp: TopicPartition,
    },
    /// The controller-epoch fence failed: another controller was elected. The core stops.
    Fenced,
    /// Broker `id` asks to shut down cleanly: move every leadership it holds to another
    /// live ISR member (and drop it from the ISRs) before it goes.
    ControlledShutdown {
        /// The broker shutting down.
        broker: BrokerId,
    },
    /// The replicas on `broker` whose log failed (a disk fault): the whole current set.
    OfflineReplicas {
        /// The broker reporting.
        broker: BrokerId,
        /// Its replicas that cannot serve: neither lead nor stay in an ISR.
        partitions: BTreeSet<TopicPartition>,
    },
    /// An operator asks for leader elections (ElectLeaders): tried once per partition.
    ElectLeaders {
        /// Preferred or unclean.
        election: ElectionType,
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// The shell carried out a [`Output::CompleteReassignment`]: `written` when the topic
    /// znode now holds the target, false when its entry had changed (a new request): the
    /// topic's next read tells what it holds.
    ReassignmentCompleted {
        /// The partition.
        tp: TopicPartition,
        /// The target was written.
        written: bool,
    },
}

/// What the core asks the shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Create the state znode (must not exist yet), fenced by the controller epoch.
    CreateState {
        /// The partition.
        tp: TopicPartition,
        /// Its first state.
        state: LeaderAndIsr,
    },
    /// Set the state znode if its version is still `expected_version`, fenced.
    UpdateState {
        /// The partition.
        tp: TopicPartition,
        /// The new state.
        state: LeaderAndIsr,
        /// The znode version the decision was made from.
        expected_version: i32,
    },
    /// Read the state znode (and feed back a StateRead).
    ReadState {
        /// The partition.
        tp: TopicPartition,
    },
    /// Answer to ControlledShutdown: how many partitions the broker still leads that could
    /// not be moved (no other live ISR member). 0 = safe to go. One per request, once all
    /// the moves this core issued for it are acknowledged (WriteDone) or abandoned.
    ShutdownProgress {
        /// The broker that asked.
        broker: BrokerId,
        /// Partitions it still leads.
        partitions_remaining: usize,
    },
    /// The core was fenced; the shell must resign (stop acting as controller).
    Resigned,
    /// Every target replica is in the ISR and the leader is one of them: write `target` as
    /// the partition's replicas in the topic znode, without adding/removing replicas, if its
    /// entry still is `replicas` with that target and the state znode is still at
    /// `state_version` (fenced); answer with [`Event::ReassignmentCompleted`], or
    /// [`Event::WriteConflict`] when the state moved.
    CompleteReassignment {
        /// The partition.
        tp: TopicPartition,
        /// The state znode version the decision was made from.
        state_version: i32,
        /// The full replica list the decision was made from.
        replicas: Vec<BrokerId>,
        /// The new replica list.
        target: Vec<BrokerId>,
    },
}

/// What the core knows of a partition's state znode.
#[derive(Debug)]
enum Known {
    /// Not read yet (the first read is in flight).
    Unread,
    /// The znode does not exist.
    Absent,
    /// The znode as last read or written, with its version.
    Present { state: LeaderAndIsr, version: i32 },
    /// The znode existed and then read as absent: the topic is being deleted. Creating it
    /// again would resurrect half a topic, so nothing is decided until `TopicRemoved` or a
    /// newer read.
    Gone,
}

/// What the core has in flight for a partition: one operation at most.
#[derive(Debug, PartialEq, Eq)]
enum Op {
    Idle,
    Reading,
    Writing(LeaderAndIsr),
    /// The topic znode write of [`Output::CompleteReassignment`]: the replica list it was
    /// decided from and the target.
    Completing {
        replicas: Vec<BrokerId>,
        target: Vec<BrokerId>,
    },
}

#[derive(Debug)]
struct Partition {
    /// Replicas in assignment order, without duplicates.
    replicas: Vec<BrokerId>,
    known: Known,
    op: Op,
    /// Something changed while `op` was in flight: decide again when it completes.
    dirty: bool,
    /// The leader (of the known state or of the write in flight) left the live set while an
    /// operation was in flight. If it is back by the time the partition is decided again, it
    /// is a new process that must not inherit its predecessor's epoch: the next write bumps
    /// the epoch even when it keeps the same leader.
    leader_left: bool,
    /// The reassignment in progress (as the topic znode says).
    reassignment: Reassignment,
    /// The shell found the topic znode changed when completing: wait for its next read.
    completion_refused: bool,
    /// An operator's election to try when the partition is next decided.
    election: Option<ElectionType>,
}

/// A write the decision rules want.
#[derive(Debug)]
enum Write {
    Create(LeaderAndIsr),
    Update {
        state: LeaderAndIsr,
        expected_version: i32,
        /// The write is the operator's election.
        elected: bool,
    },
    Complete(Vec<BrokerId>),
}

/// Controlled-shutdown requests of one broker that are not answered yet.
#[derive(Debug, Default)]
struct ShutdownRequest {
    answers_owed: usize,
    /// Partitions that had an operation in flight once the request was taken in; the answer
    /// waits until each has been idle.
    pending: BTreeSet<TopicPartition>,
}

/// Everything the decision rules read besides the partition itself (split from the
/// partitions so that one can be borrowed mutably while the other is read).
#[derive(Debug)]
struct Cluster {
    controller_epoch: i32,
    config: ControllerConfig,
    /// False until the first `LiveBrokers`: no decisions before it.
    live_known: bool,
    live: BTreeSet<BrokerId>,
    /// Brokers that asked to shut down and have not left the live set since.
    shutting_down: BTreeSet<BrokerId>,
    /// Per broker, its replicas whose log failed, as last reported.
    offline_replicas: BTreeMap<BrokerId, BTreeSet<TopicPartition>>,
    /// Topic -> its unclean-election override.
    unclean_overrides: BTreeMap<String, Option<bool>>,
}

impl Cluster {
    /// May lead: live and not on its way out.
    fn electable(&self, b: BrokerId) -> bool {
        self.live.contains(&b) && !self.shutting_down.contains(&b)
    }

    /// `b`'s replica of `tp` can serve: `b` is live and that replica's log did not fail.
    fn serving(&self, b: BrokerId, tp: &TopicPartition) -> bool {
        self.live.contains(&b)
            && !self
                .offline_replicas
                .get(&b)
                .is_some_and(|set| set.contains(tp))
    }

    fn unclean(&self, topic: &str) -> bool {
        self.unclean_overrides
            .get(topic)
            .copied()
            .flatten()
            .unwrap_or(self.config.unclean_leader_election)
    }
}

/// The controller core. See the module doc.
#[derive(Debug)]
pub struct Controller {
    cluster: Cluster,
    partitions: BTreeMap<TopicPartition, Partition>,
    shutdowns: BTreeMap<BrokerId, ShutdownRequest>,
    resigned: bool,
}

impl Controller {
    /// A newly elected controller with its epoch (the value it wrote to /controller_epoch).
    pub fn new(controller_epoch: i32, config: ControllerConfig) -> Controller {
        Controller {
            cluster: Cluster {
                controller_epoch,
                config,
                live_known: false,
                live: BTreeSet::new(),
                shutting_down: BTreeSet::new(),
                offline_replicas: BTreeMap::new(),
                unclean_overrides: BTreeMap::new(),
            },
            partitions: BTreeMap::new(),
            shutdowns: BTreeMap::new(),
            resigned: false,
        }
    }

    /// Takes one event in; returns what the shell must do, in order.
    pub fn step(&mut self, event: Event) -> Vec<Output> {
        let mut out = Vec::new();
        if self.resigned {
            return out;
        }
        match event {
            Event::LiveBrokers(live) => self.on_live_brokers(live, &mut out),
            Event::TopicAssigned {
                topic,
                replicas,
                unclean_leader_election,
                reassignments,
            } => self.on_topic_assigned(
                topic,
                replicas,
                unclean_leader_election,
                reassignments,
                &mut out,
            ),
            Event::TopicRemoved { topic } => {
                self.cluster.unclean_overrides.remove(&topic);
                // Late results for these partitions find nothing and are ignored.
                self.partitions.retain(|tp, _| tp.topic != topic);
            }
            Event::StateRead { tp, state } => self.on_state_read(tp, state, &mut out),
            Event::WriteDone { tp, new_version } => self.on_write_done(&tp, new_version, &mut out),
            Event::WriteConflict { tp } => {
                if let Some(p) = self.partitions.get_mut(&tp) {
                    if matches!(p.op, Op::Writing(_) | Op::Completing { .. }) {
                        // The znode moved under us (a leader changed its ISR, or it was
                        // created meanwhile): what we decided was decided from a stale state.
                        p.op = Op::Reading;
                        out.push(Output::ReadState { tp });
                    }
                }
            }
            Event::Fenced => self.resign(&mut out),
            Event::ControlledShutdown { broker } => self.on_controlled_shutdown(broker, &mut out),
            Event::OfflineReplicas { broker, partitions } => {
                self.on_offline_replicas(broker, partitions, &mut out)
            }
            Event::ElectLeaders {
                election,
                partitions,
            } => {
                for tp in partitions {
                    if let Some(p) = self.partitions.get_mut(&tp) {
                        p.election = Some(election);
                        reconcile(&self.cluster, &tp, p, &mut out);
                    }
                }
            }
            Event::ReassignmentCompleted { tp, written } => {
                self.on_reassignment_completed(tp, written, &mut out)
            }
        }
        if !self.resigned {
            self.answer_settled_shutdowns(&mut out);
        }
        out
    }

    /// The epoch this controller was elected with.
    pub fn controller_epoch(&self) -> i32 {
        self.cluster.controller_epoch
    }

    /// What the core believes each partition's state is (for the shell and tests).
    pub fn partition_state(&self, tp: &TopicPartition) -> Option<&LeaderAndIsr> {
        match &self.partitions.get(tp)?.known {
            Known::Present { state, .. } => Some(state),
            _ => None,
        }
    }

    /// True once fenced: every later step returns nothing.
    pub fn is_resigned(&self) -> bool {
        self.resigned
    }

    fn resign(&mut self, out: &mut Vec<Output>) {
        // Whatever this step decided was decided by a deposed controller: drop it.
        out.clear();
        out.push(Output::Resigned);
        self.resigned = true;
        self.partitions.clear();
        self.shutdowns.clear();
    }

    fn on_live_brokers(&mut self, live: BTreeSet<BrokerId>, out: &mut Vec<Output>) {
        if self.cluster.live_known && live == self.cluster.live {
            return;
        }
        self.cluster.live_known = true;
        let left: Vec<BrokerId> = self.cluster.live.difference(&live).copied().collect();
        self.cluster.live = live;
        if !left.is_empty() {
            for p in self.partitions.values_mut() {
                let pending_leader = match &p.op {
                    Op::Writing(state) => Some(state.leader),
                    _ => None,
                };
                let known_leader = match &p.known {
                    Known::Present { state, .. } => Some(state.leader),
                    _ => None,
                };
                if p.op != Op::Idle
                    && [pending_leader, known_leader]
                        .iter()
                        .flatten()
                        .any(|l| left.contains(l))
                {
                    p.leader_left = true;
                }
            }
        }
        // A broker that left is no longer shutting down: if it comes back it is a new
        // process that has not asked. Its unanswered request went with its connection.
        let live = &self.cluster.live;
        self.cluster.shutting_down.retain(|b| live.contains(b));
        self.shutdowns.retain(|b, _| live.contains(b));
        for (tp, p) in &mut self.partitions {
            reconcile(&self.cluster, tp, p, out);
        }
    }

    fn on_topic_assigned(
        &mut self,
        topic: String,
        replicas: BTreeMap<i32, Vec<BrokerId>>,
        unclean: Option<bool>,
        mut reassignments: BTreeMap<i32, Reassignment>,
        out: &mut Vec<Output>,
    ) {
        self.cluster
            .unclean_overrides
            .insert(topic.clone(), unclean);
        for (partition, assigned) in replicas {
            let tp = TopicPartition {
                topic: topic.clone(),
                partition,
            };
            let mut deduplicated = Vec::with_capacity(assigned.len());
            for b in assigned {
                if !deduplicated.contains(&b) {
                    deduplicated.push(b);
                }
            }
            let reassignment = reassignments.remove(&partition).unwrap_or_default();
            match self.partitions.entry(tp) {
                // Known already (a config change, a repeated read, a reassignment's step):
                // decide again from the replicas and reassignment as they are now.
                Entry::Occupied(mut e) => {
                    let (tp, p) = (e.key().clone(), e.get_mut());
                    if p.replicas != deduplicated || p.reassignment != reassignment {
                        p.replicas = deduplicated;
                        p.reassignment = reassignment;
                        p.completion_refused = false;
                    }
                    reconcile(&self.cluster, &tp, p, out);
                }
                // Never decide on an unread state: the znode may hold a newer controller's
                // or a leader's write.
                Entry::Vacant(e) => {
                    out.push(Output::ReadState {
                        tp: e.key().clone(),
                    });
                    e.insert(Partition {
                        replicas: deduplicated,
                        known: Known::Unread,
                        op: Op::Reading,
                        dirty: false,
                        leader_left: false,
                        reassignment,
                        completion_refused: false,
                        election: None,
                    });
                }
            }
        }
    }

    fn on_state_read(
        &mut self,
        tp: TopicPartition,
        state: Option<(LeaderAndIsr, i32)>,
        out: &mut Vec<Output>,
    ) {
        if let Some((s, _)) = &state {
            if s.controller_epoch > self.cluster.controller_epoch {
                // A newer controller has written: we are deposed, and every write of ours
                // would fail its fence anyway.
                self.resign(out);
                return;
            }
        }
        // A partition of a topic we do not know (never assigned, or removed): nothing to do.
        let Some(p) = self.partitions.get_mut(&tp) else {
            return;
        };
        // Any read answers ours: results of one partition arrive in execution order, so it
        // is at least as new as the state our write conflicted with. A stale one only costs
        // another conditional write that fails.
        if p.op == Op::Reading {
            p.op = Op::Idle;
        }
        p.known = match (std::mem::replace(&mut p.known, Known::Unread), state) {
            // Versions only grow: an older or equal one tells nothing new.
            (Known::Present { state, version }, Some((_, v))) if v <= version => {
                Known::Present { state, version }
            }
            (_, Some((state, version))) => Known::Present { state, version },
            (Known::Present { .. } | Known::Gone, None) => Known::Gone,
            (Known::Unread | Known::Absent, None) => Known::Absent,
        };
        reconcile(&self.cluster, &tp, p, out);
    }

    fn on_write_done(&mut self, tp: &TopicPartition, new_version: i32, out: &mut Vec<Output>) {
        let Some(p) = self.partitions.get_mut(tp) else {
            return;
        };
        let written = match std::mem::replace(&mut p.op, Op::Idle) {
            Op::Writing(written) => written,
            other => {
                // No write of ours in flight: a late duplicate.
                p.op = other;
                return;
            }
        };
        let newer = match &p.known {
            Known::Present { state, version } => {
                debug_assert!(
                    written.leader_epoch >= state.leader_epoch,
                    "{tp}: a write lowered the leader epoch: {state:?} -> {written:?}"
                );
                new_version > *version
            }
            _ => true,
        };
        if newer {
            p.known = Known::Present {
                state: written,
                version: new_version,
            };
        }
        if p.dirty || p.reassignment.in_progress() || p.election.is_some() {
            // A reassignment goes on step by step, and an operator's election waits for the
            // write before it: the next one may be due now.
            reconcile(&self.cluster, tp, p, out);
        } else {
            // Nothing changed since the decision, and decisions are stable.
            debug_assert!(
                decide(&self.cluster, tp, p).is_none(),
                "{tp}: clean partition still wants a write"
            );
        }
    }

    fn on_reassignment_completed(
        &mut self,
        tp: TopicPartition,
        written: bool,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.partitions.get_mut(&tp) else {
            return;
        };
        let (replicas, target) = match std::mem::replace(&mut p.op, Op::Idle) {
            Op::Completing { replicas, target } => (replicas, target),
            other => {
                // Not ours (a late duplicate): leave whatever is in flight alone.
                p.op = other;
                return;
            }
        };
        // A topic read that came in meanwhile is at least as new as what the decision was
        // made from: it is kept, and decided from.
        let unchanged = p.replicas == replicas && p.reassignment.target(&p.replicas) == target;
        if unchanged && written {
            // What the topic znode holds now; its read, when it comes, says the same.
            p.replicas = target;
            p.reassignment = Reassignment::default();
        } else if unchanged {
            // The znode holds something newer: its read is on the way.
            p.completion_refused = true;
        }
        reconcile(&self.cluster, &tp, p, out);
    }

    fn on_offline_replicas(
        &mut self,
        broker: BrokerId,
        partitions: BTreeSet<TopicPartition>,
        out: &mut Vec<Output>,
    ) {
        let before = if partitions.is_empty() {
            self.cluster.offline_replicas.remove(&broker)
        } else {
            self.cluster
                .offline_replicas
                .insert(broker, partitions.clone())
        }
        .unwrap_or_default();
        // Only the partitions whose replica on `broker` changed are decided again.
        for tp in before.symmetric_difference(&partitions) {
            if let Some(p) = self.partitions.get_mut(tp) {
                reconcile(&self.cluster, tp, p, out);
            }
        }
    }

    fn on_controlled_shutdown(&mut self, broker: BrokerId, out: &mut Vec<Output>) {
        // A broker we do not see as live is never elected anyway; it is still answered, once
        // what is in flight (its dead-broker moves, first reads) has come back.
        if self.cluster.live.contains(&broker) {
            self.cluster.shutting_down.insert(broker);
            for (tp, p) in &mut self.partitions {
                reconcile(&self.cluster, tp, p, out);
            }
        }
        let request = self.shutdowns.entry(broker).or_default();
        request.answers_owed += 1;
        // Every operation in flight may be one that makes or keeps `broker` a leader (a
        // write decided before it asked); the answer waits until each has come back and the
        // partition has been decided again without it.
        for (tp, p) in &self.partitions {
            if p.op != Op::Idle {
                request.pending.insert(tp.clone());
            }
        }
    }

    fn answer_settled_shutdowns(&mut self, out: &mut Vec<Output>) {
        let partitions = &self.partitions;
        let mut settled = Vec::new();
        for (broker, request) in &mut self.shutdowns {
            request
                .pending
                .retain(|tp| partitions.get(tp).is_some_and(|p| p.op != Op::Idle));
            if request.pending.is_empty() {
                settled.push(*broker);
            }
        }
        for broker in settled {
            let Some(request) = self.shutdowns.remove(&broker) else {
                continue;
            };
            let partitions_remaining = self
                .partitions
                .values()
                .filter(
                    |p| matches!(&p.known, Known::Present { state, .. } if state.leader == broker),
                )
                .count();
            for _ in 0..request.answers_owed {
                out.push(Output::ShutdownProgress {
                    broker,
                    partitions_remaining,
                });
            }
        }
    }
}

/// Issues the write the rules want for `p`, unless an operation is in flight (then marks it
/// dirty: one write at a time, each decided from the newest known state).
fn reconcile(cluster: &Cluster, tp: &TopicPartition, p: &mut Partition, out: &mut Vec<Output>) {
    if p.op != Op::Idle {
        p.dirty = true;
        return;
    }
    p.dirty = false;
    match decide(cluster, tp, p) {
        None => {
            // Not possible now (or not needed): an operator's election is tried once.
            p.election = None;
        }
        Some(Write::Create(state)) => {
            out.push(Output::CreateState {
                tp: tp.clone(),
                state: state.clone(),
            });
            p.op = Op::Writing(state);
        }
        Some(Write::Complete(target)) => {
            let Known::Present { version, .. } = &p.known else {
                unreachable!("a completion is decided from a known state");
            };
            out.push(Output::CompleteReassignment {
                tp: tp.clone(),
                state_version: *version,
                replicas: p.replicas.clone(),
                target: target.clone(),
            });
            p.op = Op::Completing {
                replicas: p.replicas.clone(),
                target,
            };
        }
        Some(Write::Update {
            state,
            expected_version,
            elected,
        }) => {
            if elected {
                p.election = None;
            }
            p.leader_left = false;
            out.push(Output::UpdateState {
                tp: tp.clone(),
                state: state.clone(),
                expected_version,
            });
            p.op = Op::Writing(state);
        }
    }
}

/// The write the rules want for `p` given what is known, if any.
fn decide(cluster: &Cluster, tp: &TopicPartition, p: &Partition) -> Option<Write> {
    if !cluster.live_known {
        return None;
    }
    let unclean = cluster.unclean(&tp.topic);
    match &p.known {
        Known::Unread | Known::Gone => None,
        Known::Absent => {
            let state = initial_state(cluster, tp, &p.replicas)?;
            debug_assert!(
                next_state(cluster, tp, &state, &p.replicas, unclean).is_none(),
                "{tp}: unstable initial state {state:?}"
            );
            Some(Write::Create(state))
        }
        Known::Present { state, version } => {
            let next = match next_state(cluster, tp, state, &p.replicas, unclean) {
                Some(next) => next,
                None if !p.leader_left => {
                    let elected = p
                        .election
                        .and_then(|election| elect(cluster, tp, state, &p.replicas, election));
                    if let Some(next) = elected {
                        debug_assert!(
                            next_state(cluster, tp, &next, &p.replicas, unclean).is_none(),
                            "{tp}: unstable election {state:?} -> {next:?}"
                        );
                        return Some(Write::Update {
                            state: next,
                            expected_version: *version,
                            elected: true,
                        });
                    }
                    return reassignment_step(cluster, tp, p, state, *version);
                }
                // Same leader and ISR, but the leader is a new process since the state was
                // written: a new epoch, so it never leads where its predecessor did.
                None if p.leader_left && state.leader != NO_LEADER => LeaderAndIsr {
                    leader_epoch: state.leader_epoch.checked_add(1)?,
                    controller_epoch: cluster.controller_epoch,
                    ..state.clone()
                },
                None => return None,
            };
            let next = if p.leader_left && next.leader == state.leader && next.leader != NO_LEADER {
                LeaderAndIsr {
                    leader_epoch: next.leader_epoch.max(state.leader_epoch.checked_add(1)?),
                    ..next
                }
            } else {
                next
            };
            // Stable: deciding again from the result must want nothing, or one event could
            // cause an endless chain of writes.
            debug_assert!(
                next_state(cluster, tp, &next, &p.replicas, unclean).is_none(),
                "{tp}: unstable decision {state:?} -> {next:?}"
            );
            Some(Write::Update {
                state: next,
                expected_version: *version,
                elected: false,
            })
        }
    }
}

/// The state an operator's election wants after `cur`, if it can be held now.
fn elect(
    cluster: &Cluster,
    tp: &TopicPartition,
    cur: &LeaderAndIsr,
    replicas: &[BrokerId],
    election: ElectionType,
) -> Option<LeaderAndIsr> {
    let eligible = |b: BrokerId| cluster.electable(b) && cluster.serving(b, tp);
    match election {
        ElectionType::Preferred => {
            let preferred = *replicas.first()?;
            if preferred == cur.leader || !cur.isr.contains(&preferred) || !eligible(preferred) {
                return None;
            }
            Some(LeaderAndIsr {
                leader: preferred,
                leader_epoch: cur.leader_epoch.checked_add(1)?,
                isr: cur.isr.clone(),
                controller_epoch: cluster.controller_epoch,
            })
        }
        ElectionType::Unclean => {
            // Only a partition without a leader and without a live ISR member: anything
            // else has a clean choice (next_state already made it).
            if cur.leader != NO_LEADER || cur.isr.iter().any(|&b| cluster.serving(b, tp)) {
                return None;
            }
            let pick = replicas.iter().copied().find(|&b| eligible(b))?;
            Some(LeaderAndIsr {
                leader: pick,
                leader_epoch: cur.leader_epoch.checked_add(1)?,
                isr: vec![pick],
                controller_epoch: cluster.controller_epoch,
            })
        }
    }
}

/// The next step of `p`'s reassignment, if one is due: with every target replica in the
/// ISR, leadership moves into the target (first in-sync electable target replica, a new
/// epoch), then the target is written as the assignment.
fn reassignment_step(
    cluster: &Cluster,
    tp: &TopicPartition,
    p: &Partition,
    cur: &LeaderAndIsr,
    version: i32,
) -> Option<Write> {
    if !p.reassignment.in_progress() || p.completion_refused || cur.leader == NO_LEADER {
        return None;
    }
    let target = p.reassignment.target(&p.replicas);
    let in_sync = |b: BrokerId| cur.isr.contains(&b) && cluster.serving(b, tp);
    if !target.iter().all(|&b| in_sync(b)) {
        return None;
    }
    if target.contains(&cur.leader) {
        return Some(Write::Complete(target));
    }
    let leader = target
        .iter()
        .copied()
        .find(|&b| in_sync(b) && cluster.electable(b))?;
    Some(Write::Update {
        state: LeaderAndIsr {
            leader,
            leader_epoch: cur.leader_epoch.checked_add(1)?,
            isr: cur.isr.clone(),
            controller_epoch: cluster.controller_epoch,
        },
        expected_version: version,
        elected: false,
    })
}

/// A new partition's first state: the electable replicas in assignment order, the first of
/// them leading. None while no replica is electable.
fn initial_state(
    cluster: &Cluster,
    tp: &TopicPartition,
    replicas: &[BrokerId],
) -> Option<LeaderAndIsr> {
    // Shutting-down brokers are left out of the ISR too: they would be dropped at once.
    let isr: Vec<BrokerId> = replicas
        .iter()
        .copied()
        .filter(|&b| cluster.electable(b) && cluster.serving(b, tp))
        .collect();
    let leader = *isr.first()?;
    Some(LeaderAndIsr {
        leader,
        leader_epoch: 0,
        isr,
        controller_epoch: cluster.controller_epoch,
    })
}

/// The state the rules want after `cur`, or None when `cur` is already right.
fn next_state(
    cluster: &Cluster,
    tp: &TopicPartition,
    cur: &LeaderAndIsr,
    replicas: &[BrokerId],
    unclean: bool,
) -> Option<LeaderAndIsr> {
    // Dead brokers leave the ISR at once: a dead follower acknowledges nothing, and keeping
    // it would hold back the high watermark and make it electable with a stale log. So do
    // replicas whose log failed: they hold nothing they can serve.
    // Replicas no longer assigned (a finished reassignment) leave too.
    let live_isr: Vec<BrokerId> = cur
        .isr
        .iter()
        .copied()
        .filter(|&b| cluster.serving(b, tp) && replicas.contains(&b))
        .collect();
    let unassigned_left = cur.isr.iter().any(|b| !replicas.contains(b));
    let leader_holds = cur.leader != NO_LEADER && live_isr.contains(&cur.leader);
    // Assignment order, not ISR order: the first replica is the preferred leader.
    let successor = replicas
        .iter()
        .copied()
        .find(|&b| live_isr.contains(&b) && cluster.electable(b));
    let mut unclean_pick = None;
    let leader = if leader_holds && !cluster.shutting_down.contains(&cur.leader) {
        cur.leader
    } else if let Some(s) = successor {
        s
    } else if leader_holds {
        // A shutting-down leader with nobody in sync to take over keeps leading: moving
        // leadership out of the ISR would lose acknowledged records.
        cur.leader
    } else if live_isr.is_empty() && unclean {
        unclean_pick = replicas
            .iter()
            .copied()
            .find(|&b| cluster.electable(b) && cluster.serving(b, tp));
        unclean_pick.unwrap_or(NO_LEADER)
    } else {
        NO_LEADER
    };

    let isr = if let Some(u) = unclean_pick {
        vec![u]
    } else if live_isr.is_empty() {
        // Offline. The ISR keeps the member most likely to hold every acknowledged record,
        // so that only it can bring the partition back cleanly. An empty ISR read from the
        // znode is not ours to repair: leave it.
        let last = if cur.isr.contains(&cur.leader) {
            cur.leader
        } else {
            *cur.isr.first()?
        };
        vec![last]
    } else if leader == NO_LEADER {
        // Live ISR members, all shutting down: keep them, they are the clean ones.
        live_isr
    } else {
        // Shutting-down followers leave the ISR so that acks=all stops waiting on them.
        live_isr
            .into_iter()
            .filter(|&b| b == leader || !cluster.shutting_down.contains(&b))
            .collect()
    };
    if leader == cur.leader && isr == cur.isr {
        return None;
    }
    // A leader whose replica list shrank gets a new epoch, so it starts over with the new
    // list (and forgets followers that are gone).
    let leader_epoch = if leader == cur.leader && !(unassigned_left && leader != NO_LEADER) {
        cur.leader_epoch
    } else {
        cur.leader_epoch.checked_add(1)?
    };
    let next = LeaderAndIsr {
        leader,
        leader_epoch,
        isr,
        controller_epoch: cluster.controller_epoch,
    };
    debug_assert!(!next.isr.is_empty(), "empty ISR: {cur:?} -> {next:?}");
    debug_assert!(
        next.leader == NO_LEADER || next.isr.contains(&next.leader),
        "leader outside the ISR: {cur:?} -> {next:?}"
    );
    debug_assert!(next.leader_epoch >= cur.leader_epoch);
    debug_assert!(
        unclean_pick.is_some() || next.isr.iter().all(|b| cur.isr.contains(b)),
        "the controller added to an ISR: {cur:?} -> {next:?}"
    );
    debug_assert!(
        !cur.isr.iter().all(|b| replicas.contains(b))
            || next.isr.iter().all(|b| replicas.contains(b)),
        "ISR outside the replicas {replicas:?}: {cur:?} -> {next:?}"
    );
    Some(next)
}

#[cfg(test)]
#[path = "controller_sim.rs"]
mod sim;

#[cfg(test)]
mod tests {
    //! The decision rules one at a time, on hand-made event sequences (the randomised
    //! simulator in `sim` covers their interleavings).

    use super::*;

    const EPOCH: i32 = 7;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn live(ids: &[BrokerId]) -> Event {
        Event::LiveBrokers(ids.iter().copied().collect())
    }

    fn assign(parts: &[(i32, &[BrokerId])], unclean: Option<bool>) -> Event {
        Event::TopicAssigned {
            topic: "t".into(),
            replicas: parts.iter().map(|(p, r)| (*p, r.to_vec())).collect(),
            unclean_leader_election: unclean,
            reassignments: BTreeMap::new(),
        }
    }

    fn st(leader: BrokerId, leader_epoch: i32, isr: &[BrokerId]) -> LeaderAndIsr {
        LeaderAndIsr {
            leader,
            leader_epoch,
            isr: isr.to_vec(),
            controller_epoch: EPOCH,
        }
    }

    fn read(p: i32, s: LeaderAndIsr, version: i32) -> Event {
        Event::StateRead {
            tp: tp(p),
            state: Some((s, version)),
        }
    }

    fn update(p: i32, state: LeaderAndIsr, expected_version: i32) -> Vec<Output> {
        vec![Output::UpdateState {
            tp: tp(p),
            state,
            expected_version,
        }]
    }

    /// A controller that knows partition 0 of "t" (replicas as given) in `state` at version 3.
    fn loaded(replicas: &[BrokerId], alive: &[BrokerId], state: LeaderAndIsr) -> Controller {
        let mut c = Controller::new(EPOCH, ControllerConfig::default());
        assert!(c.step(live(alive)).is_empty());
        assert_eq!(
            c.step(assign(&[(0, replicas)], None)),
            vec![Output::ReadState { tp: tp(0) }]
        );
        assert!(c.step(read(0, state, 3)).is_empty());
        c
    }

    #[test]
    fn creates_an_absent_state_from_the_live_replicas_in_assignment_order() {
        let mut c = Controller::new(EPOCH, ControllerConfig::default());
        c.step(live(&[2, 3]));
        assert_eq!(
            c.step(assign(&[(0, &[1, 3, 2])], None)),
            vec![Output::ReadState { tp: tp(0) }]
        );
        let out = c.step(Event::StateRead {
            tp: tp(0),
            state: None,
        });
        assert_eq!(
            out,
            vec![Output::CreateState {
                tp: tp(0),
                state: st(3, 0, &[3, 2])
            }]
        );
        assert!(c
            .step(Event::WriteDone {
                tp: tp(0),
                new_version: 0
            })
            .is_empty());
        assert_eq!(c.partition_state(&tp(0)), Some(&st(3, 0, &[3, 2])));
    }

    #[test]
    fn added_partitions_are_read_and_created_the_old_ones_left_alone() {
        // CreatePartitions: the topic's znode now lists partitions 1 and 2 as well.
        let mut c = loaded(&[1, 2], &[1, 2, 3], st(1, 4, &[1, 2]));
        let out = c.step(assign(&[(0, &[1, 2]), (1, &[2, 3]), (2, &[3, 1])], None));
        assert_eq!(
            out,
            vec![
                Output::ReadState { tp: tp(1) },
                Output::ReadState { tp: tp(2) }
            ]
        );
        let created = c.step(Event::StateRead {
            tp: tp(1),
            state: None,
        });
        assert_eq!(
            created,
            vec![Output::CreateState {
                tp: tp(1),
                state: st(2, 0, &[2, 3])
            }]
        );
        // A replica that is not live stays out of the first ISR; the leader is the first
        // live one in assignment order.
        c.step(live(&[1, 2]));
        let created = c.step(Event::StateRead {
            tp: tp(2),
            state: None,
        });
        assert_eq!(
            created,
            vec![Output::CreateState {
                tp: tp(2),
                state: st(1, 0, &[1])
            }]
        );
        assert_eq!(c.partition_state(&tp(0)), Some(&st(1, 4, &[1, 2])));
    }

    #[test]
    fn decides_nothing_before_the_first_live_set() {
        let mut c = Controller::new(EPOCH, ControllerConfig::default());
        c.step(assign(&[(0, &[1, 2])], None));
        assert!(c.step(read(0, st(1, 4, &[1, 2]), 3)).is_empty());
        assert_eq!(c.step(live(&[2])), update(0, st(2, 5, &[2]), 3));
    }

    #[test]
    fn a_dead_follower_leaves_the_isr_and_the_epoch_stays() {
        let mut c = loaded(&[1, 2, 3], &[1, 2, 3], st(1, 4, &[1, 2, 3]));
        assert_eq!(c.step(live(&[1, 3])), update(0, st(1, 4, &[1, 3]), 3));
    }

    #[test]
    fn a_leader_that_restarts_while_a_write_is_in_flight_gets_a_new_epoch() {
        // Broker 3 dies: the ISR shrink keeping leader 1 is in flight when broker 1 leaves
        // and comes back (a new process). Deciding again must not leave the new process
        // leading at its predecessor's epoch 4.
        let mut c = loaded(&[1, 2, 3], &[1, 2, 3], st(1, 4, &[1, 2, 3]));
        assert_eq!(c.step(live(&[1, 2])), update(0, st(1, 4, &[1, 2]), 3));
        assert!(c.step(live(&[2])).is_empty());
        assert!(c.step(live(&[1, 2])).is_empty());
        let out = c.step(Event::WriteDone {
            tp: tp(0),
            new_version: 4,
        });
        assert_eq!(out, update(0, st(1, 5, &[1, 2]), 4));
    }

    #[test]
    fn a_dead_leader_is_replaced_by_the_first_live_isr_member_in_assignment_order() {
        let mut c = loaded(&[3, 1, 2], &[1, 2, 3], st(1, 4, &[1, 2, 3]));
        assert_eq!(c.step(live(&[2, 3])), update(0, st(3, 5, &[2, 3]), 3));
    }

    fn offline(broker: BrokerId, partitions: &[i32]) -> Event {
        Event::OfflineReplicas {
            broker,
            partitions: partitions.iter().map(|&p| tp(p)).collect(),
        }
    }

    #[test]
    fn a_leader_whose_log_failed_hands_over_and_its_replica_stays_out_until_it_restarts() {
        let mut c = loaded(&[1, 2, 3], &[1, 2, 3], st(1, 4, &[1, 2, 3]));
        // Broker 1's disk failed under partition 0: 2 leads, 1 leaves the ISR.
        assert_eq!(c.step(offline(1, &[0])), update(0, st(2, 5, &[2, 3]), 3));
        c.step(Event::WriteDone {
            tp: tp(0),
            new_version: 4,
        });
        // A failed replica is not electable either: 2 and 3 die, the partition goes offline
        // with 2 as its last ISR member, not 1.
        assert_eq!(c.step(live(&[1])), update(0, st(NO_LEADER, 6, &[2]), 4));
        c.step(Event::WriteDone {
            tp: tp(0),
            new_version: 5,
        });
        assert_eq!(c.partition_state(&tp(0)), Some(&st(NO_LEADER, 6, &[2])));
        // Reported fixed (the report is empty again): still not in the ISR, so no election.
        assert!(c.step(offline(1, &[])).is_empty());
        // 2 returns and leads.
        assert_eq!(c.step(live(&[1, 2])), update(0, st(2, 7, &[2]), 5));
    }

    #[test]
    fn a_failed_replica_is_not_in_a_new_partitions_isr_and_its_report_outlives_a_restart() {
        let mut c = Controller::new(EPOCH, ControllerConfig::default());
        c.step(live(&[1, 2]));
        assert!(c.step(offline(1, &[0])).is_empty());
        c.step(assign(&[(0, &[1, 2]), (1, &[1, 2])], None));
        let created = |p: i32, state: LeaderAndIsr| Output::CreateState { tp: tp(p), state };
        assert_eq!(
            c.step(Event::StateRead {
                tp: tp(0),
                state: None
            }),
            vec![created(0, st(2, 0, &[2]))]
        );
        assert_eq!(
            c.step(Event::StateRead {
                tp: tp(1),
                state: None
            }),
            vec![created(1, st(1, 0, &[1, 2]))]
        );
        c.step(Event::WriteDone {
            tp: tp(0),
            new_version: 0,
        });
        c.step(Event::WriteDone {
            tp: tp(1),
            new_version: 0,
        });
        // Broker 1 restarts (leaves, then joins): the set stays until a report replaces it
        // (the new process may have reported the same failure before the live set showed it).
        c.step(live(&[2]));
        c.step(live(&[1, 2]));
        assert_eq!(c.partition_state(&tp(0)), Some(&st(2, 0, &[2])));
        assert!(c.step(offline(1, &[])).is_empty());
        assert!(c.cluster.offline_replicas.is_empty());
    }

    #[test]
    fn the_last_isr_member_keeps_the_partition_until_it_returns() {
        let mut c = loaded(&[1, 2], &[1, 2], st(1, 4, &[1]));
        assert_eq!(c.step(live(&[2])), update(0, st(NO_LEADER, 5, &[1]), 3));
        c.step(Event::WriteDone {
            tp: tp(0),
            new_version: 4,
        });
        // Broker 2 is live but out of sync: no election.
        assert!(c.step(live(&[2, 3])).is_empty());
        assert_eq!(c.step(live(&[1, 2])), update(0, st(1, 6, &[1]), 4));
    }

    #[test]
    fn unclean_election_takes_a_live_replica_only_when_enabled() {
        let mut c = loaded(&[1, 2], &[2], st(NO_LEADER, 5, &[1]));
        assert!(c.step(assign(&[(0, &[1, 2])], Some(false))).is_empty());
        assert_eq!(
            c.step(assign(&[(0, &[1, 2])], Some(true))),
            update(0, st(2, 6, &[2]), 3)
        );
    }

    #[test]
    fn one_write_in_flight_and_the_next_is_decided_from_its_result() {
        let mut c = loaded(&[1, 2, 3], &[1, 2, 3], st(1, 4, &[1, 2, 3]));
        assert_eq!(c.step(live(&[2, 3])), update(0, st(2, 5, &[2, 3]), 3));
        assert!(
            c.step(live(&[3])).is_empty(),
            "a second write while one is in flight"
        );
        assert_eq!(
            c.step(Event::WriteDone {
                tp: tp(0),
                new_version: 4
            }),
            update(0, st(3, 6, &[3]), 4)
        );
    }

    #[test]
    fn a_conflict_is_read_again_and_decided_from_the_fresh_state() {
        let mut c = loaded(&[1, 2, 3], &[1, 2, 3], st(1, 4, &[1, 2, 3]));
        assert_eq!(c.step(live(&[2, 3])), update(0, st(2, 5, &[2, 3]), 3));
        assert_eq!(
            c.step(Event::WriteConflict { tp: tp(0) }),
            vec![Output::ReadState { tp: tp(0) }]
        );
        // Meanwhile leader 1 had dropped 2 from its ISR: 3 is the only clean successor.
        assert_eq!(
            c.step(read(0, st(1, 4, &[1, 3]), 4)),
            update(0, st(3, 5, &[3]), 4)
        );
    }

    #[test]
    fn stale_reads_and_late_results_change_nothing() {
        let mut c = loaded(&[1, 2], &[1, 2], st(1, 4, &[1, 2]));
        assert!(c.step(read(0, st(2, 3, &[2]), 2)).is_empty());
        assert!(c
            .step(Event::WriteDone {
                tp: tp(0),
                new_version: 9
            })
            .is_empty());
        assert_eq!(c.partition_state(&tp(0)), Some(&st(1, 4, &[1, 2])));
    }

    #[test]
    fn controlled_shutdown_moves_leadership_and_answers_once_written() {
        let mut c = Controller::new(EPOCH, ControllerConfig::default());
        c.step(live(&[1, 2, 3]));
        c.step(assign(&[(0, &[1, 2]), (1, &[2, 1]), (2, &[1])], None));
        c.step(read(0, st(1, 4, &[1, 2]), 3));
        c.step(read(1, st(2, 4, &[2, 1]), 3));
        c.step(read(2, st(1, 4, &[1]), 3));
        let out = c.step(Event::ControlledShutdown { broker: 1 });
        assert_eq!(
            out,
            vec![
                Output::UpdateState {
                    tp: tp(0),
                    state: st(2, 5, &[2]),
                    expected_version: 3
                },
                Output::UpdateState {
                    tp: tp(1),
                    state: st(2, 4, &[2]),
                    expected_version: 3
                },
            ]
        );
        assert!(c
            .step(Event::WriteDone {
                tp: tp(0),
                new_version: 4
            })
            .is_empty());
        assert_eq!(
            c.step(Event::WriteDone {
                tp: tp(1),
                new_version: 4
            }),
            vec![Output::ShutdownProgress {
                broker: 1,
                partitions_remaining: 1
            }]
        );
        // Broker 2 dies: broker 1, still shutting down, is not in those ISRs any more, so
        // both partitions go offline rather than back to it.
        assert_eq!(
            c.step(live(&[1, 3])),
            vec![
                Output::UpdateState {
                    tp: tp(0),
                    state: st(NO_LEADER, 6, &[2]),
                    expected_version: 4
                },
                Output::UpdateState {
                    tp: tp(1),
                    state: st(NO_LEADER, 5, &[2]),
                    expected_version: 4
                },
            ]
        );
    }

    #[test]
    fn fenced_or_outranked_controllers_resign_and_go_quiet() {
        let mut c = loaded(&[1, 2], &[1, 2], st(1, 4, &[1, 2]));
        assert_eq!(c.step(Event::Fenced), vec![Output::Resigned]);
        assert!(c.is_resigned());
        assert!(c.step(live(&[2])).is_empty());

        let mut c = loaded(&[1, 2], &[1, 2], st(1, 4, &[1, 2]));
        let mut newer = st(2, 5, &[2]);
        newer.controller_epoch = EPOCH + 1;
        assert_eq!(c.step(read(0, newer, 4)), vec![Output::Resigned]);
    }

    #[test]
    fn a_state_that_disappears_is_not_created_again() {
        // Topic deletion removes the state znodes before the topic's: recreating one would
        // resurrect part of a deleted topic.
        let mut c = loaded(&[1, 2], &[1, 2], st(1, 4, &[1, 2]));
        let gone = Event::StateRead {
            tp: tp(0),
            state: None,
        };
        assert!(c.step(gone).is_empty());
        assert!(c.step(live(&[2])).is_empty());
        assert!(c.partition_state(&tp(0)).is_none());
    }

    #[test]
    fn a_shutdown_request_from_a_broker_not_seen_live_is_answered_without_a_mark() {
        let mut c = Controller::new(EPOCH, ControllerConfig::default());
        c.step(live(&[1]));
        c.step(assign(&[(0, &[1, 2])], None));
        // The answer waits for the first read: "0 remaining" must not come from ignorance.
        assert!(c.step(Event::ControlledShutdown { broker: 2 }).is_empty());
        assert!(c.step(live(&[1, 2])).is_empty());
        assert_eq!(
            c.step(read(0, st(1, 4, &[1, 2]), 3)),
            vec![Output::ShutdownProgress {
                broker: 2,
                partitions_remaining: 0
            }]
        );
        // No mark was taken (it could have belonged to an older process): 2 may lead.
        assert_eq!(c.step(live(&[2])), update(0, st(2, 5, &[2]), 3));
    }

    fn done(p: i32, new_version: i32) -> Event {
        Event::WriteDone {
            tp: tp(p),
            new_version,
        }
    }

    fn reassigning(replicas: &[BrokerId], adding: &[BrokerId], removing: &[BrokerId]) -> Event {
        Event::TopicAssigned {
            topic: "t".into(),
            replicas: BTreeMap::from([(0, replicas.to_vec())]),
            unclean_leader_election: None,
            reassignments: BTreeMap::from([(
                0,
                Reassignment {
                    adding: adding.to_vec(),
                    removing: removing.to_vec(),
                },
            )]),
        }
    }

    #[test]
    fn reassign_keeps_every_held_replica_until_the_target_is_in_sync() {
        let none = Reassignment::default();
        let (full, r) = reassign(&[1, 2], &none, Some(&[3, 2])).unwrap();
        assert_eq!(full, vec![3, 2, 1]);
        assert_eq!((r.adding.clone(), r.removing.clone()), (vec![3], vec![1]));
        assert_eq!(r.target(&full), vec![3, 2]);
        assert_eq!(r.origin(&full), vec![2, 1]);
        // Replaced by a new target: 3 (being added) stays until [4, 1] is in sync.
        let (full2, r2) = reassign(&full, &r, Some(&[4, 1])).unwrap();
        assert_eq!(full2, vec![4, 1, 2, 3]);
        assert_eq!(r2.target(&full2), vec![4, 1]);
        assert_eq!(r2.origin(&full2), vec![1, 2]);
        // Cancelled: the original replicas are the target again.
        let (full3, r3) = reassign(&full, &r, None).unwrap();
        assert_eq!(r3.target(&full3), vec![2, 1]);
        assert!(r3.removing.contains(&3));
        // A pure reordering or growth needs no removal; a move to the same set is none.
        let (full4, r4) = reassign(&[1, 2], &none, Some(&[2, 1])).unwrap();
        assert_eq!((full4, r4.in_progress()), (vec![2, 1], false));
        let (_, r5) = reassign(&[1], &none, Some(&[1, 2])).unwrap();
        assert_eq!((r5.adding, r5.removing), (vec![2], vec![]));
        assert_eq!(
            reassign(&[1, 2], &none, None),
            Err(ReassignError::NoReassignmentInProgress)
        );
        assert!(matches!(
            reassign(&[1, 2], &none, Some(&[])),
            Err(ReassignError::InvalidReplicas(_))
        ));
        assert!(matches!(
            reassign(&[1, 2], &none, Some(&[3, 3])),
            Err(ReassignError::InvalidReplicas(_))
        ));
    }

    #[test]
    fn a_reassignment_waits_for_the_target_then_moves_leadership_then_completes() {
        let mut c = loaded(&[1, 2], &[1, 2, 3], st(1, 4, &[1, 2]));
        // [1, 2] -> [3, 2]: nothing until 3 is in the ISR.
        assert!(c.step(reassigning(&[3, 2, 1], &[3], &[1])).is_empty());
        // The leader lets 3 join (its own ISR write, read back).
        assert_eq!(
            c.step(read(0, st(1, 4, &[1, 2, 3]), 4)),
            update(0, st(3, 5, &[1, 2, 3]), 4),
            "leadership moves into the target first"
        );
        assert_eq!(
            c.step(done(0, 5)),
            vec![Output::CompleteReassignment {
                tp: tp(0),
                state_version: 5,
                replicas: vec![3, 2, 1],
                target: vec![3, 2],
            }]
        );
        // The topic znode holds [3, 2]: 1 leaves the ISR at a new epoch.
        assert_eq!(
            c.step(Event::ReassignmentCompleted {
                tp: tp(0),
                written: true
            }),
            update(0, st(3, 6, &[2, 3]), 5)
        );
        assert!(c.step(done(0, 6)).is_empty());
        // The topic's read confirms it: nothing more to do.
        assert!(c
            .step(Event::TopicAssigned {
                topic: "t".into(),
                replicas: BTreeMap::from([(0, vec![3, 2])]),
                unclean_leader_election: None,
                reassignments: BTreeMap::new(),
            })
            .is_empty());
    }

    #[test]
    fn a_refused_completion_waits_for_the_topic_read_and_a_dead_target_holds_the_move() {
        let mut c = loaded(&[1, 2], &[1, 2, 3], st(1, 4, &[1, 2]));
        // Target [2, 1] (a cancelled move to 3): in sync, and 1 (in the target) leads.
        let out = c.step(reassigning(&[2, 1, 3], &[3], &[3]));
        assert_eq!(
            out,
            vec![Output::CompleteReassignment {
                tp: tp(0),
                state_version: 3,
                replicas: vec![2, 1, 3],
                target: vec![2, 1],
            }]
        );
        assert!(c
            .step(Event::ReassignmentCompleted {
                tp: tp(0),
                written: false
            })
            .is_empty());
        // A new request: [3, 1], with 3 dead: the move waits.
        assert!(c.step(live(&[1, 2])).is_empty());
        assert!(c.step(reassigning(&[3, 1, 2], &[3], &[2])).is_empty());
        assert_eq!(c.partition_state(&tp(0)), Some(&st(1, 4, &[1, 2])));
    }

    #[test]
    fn preferred_election_moves_leadership_to_the_first_replica_when_in_sync() {
        let mut c = loaded(&[1, 2, 3], &[1, 2, 3], st(2, 4, &[2, 3]));
        let elect = |election| Event::ElectLeaders {
            election,
            partitions: vec![tp(0), tp(9)],
        };
        // 1 is not in the ISR: nothing, and the request is not kept.
        assert!(c.step(elect(ElectionType::Preferred)).is_empty());
        assert!(c.step(read(0, st(2, 4, &[2, 3, 1]), 4)).is_empty());
        assert_eq!(
            c.step(elect(ElectionType::Preferred)),
            update(0, st(1, 5, &[2, 3, 1]), 4)
        );
        assert!(c.step(done(0, 5)).is_empty());
        assert!(
            c.step(elect(ElectionType::Preferred)).is_empty(),
            "not needed"
        );
    }

    #[test]
    fn unclean_election_takes_a_live_replica_of_an_offline_partition_only() {
        let mut c = loaded(&[1, 2], &[2], st(NO_LEADER, 5, &[1]));
        let unclean = Event::ElectLeaders {
            election: ElectionType::Unclean,
            partitions: vec![tp(0)],
        };
        assert_eq!(c.step(unclean.clone()), update(0, st(2, 6, &[2]), 3));
        assert!(c.step(done(0, 4)).is_empty());
        // Led now: not needed.
        assert!(c.step(unclean).is_empty());
        // No replica outside the assignment is ever taken.
        let mut c = loaded(&[1, 2], &[3], st(NO_LEADER, 5, &[1]));
        assert!(c
            .step(Event::ElectLeaders {
                election: ElectionType::Unclean,
                partitions: vec![tp(0)],
            })
            .is_empty());
    }

    #[test]
    fn a_removed_topic_ignores_late_results() {
        let mut c = loaded(&[1, 2], &[1, 2], st(1, 4, &[1, 2]));
        assert_eq!(c.step(live(&[2])), update(0, st(2, 5, &[2]), 3));
        c.step(Event::TopicRemoved { topic: "t".into() });
        assert!(c.step(Event::WriteConflict { tp: tp(0) }).is_empty());
        assert!(c.partition_state(&tp(0)).is_none());
    }
}
