//! Proves the controller core's rules under a deterministic simulator. One seed drives 3 to 5
//! brokers and a few topics (RF 1..=N, some with unclean election) through broker crashes and
//! restarts, leaders shrinking and expanding their own ISR with conditional writes,
//! disk faults under single replicas (reported in `/offline_replicas/<id>`, gone when the broker
//! restarts), controlled shutdowns, topic creation, deletion and config changes, and controller
//! failovers (the old core keeps acting until it learns it was deposed; the model store's
//! epoch fence rejects its writes). Every ZooKeeper operation, result and notification is
//! delayed and reordered across partitions (FIFO within one, as a session is), and live-set
//! notifications coalesce.
//!
//! Checked on every committed write: one leader per (partition, leader epoch) over the whole
//! history; leader epochs never decrease; the ISR is non-empty, within the replicas and holds
//! the leader; a controller's leader was live, as far as that core had been told, when it
//! issued the write, and was not shutting down if newly elected; with unclean election off the
//! controller never adds to an ISR and elects only from the previous one; a controller never
//! elects a replica reported failed, nor keeps one in a led partition's ISR. On every output: at
//! most one write per partition in flight per core, and a current controller's
//! `ShutdownProgress` never under-counts what the broker leads in the store. At quiescence:
//! every partition with a live ISR member (a live replica, for unclean topics) has a live
//! leader, none is led by a dead broker, a leader's ISR is all live, every partition with a
//! live replica has its state znode, no partition is led by a failed replica nor keeps one in
//! its ISR while led, and the current core's belief equals the store.
//!
//! `CONTROLLER_SIM_SEEDS=<n>` runs more seeds, `CONTROLLER_SIM_SEED=<n>` replays one and
//! `CONTROLLER_SIM_TRACE=1` prints what happens in it.

use super::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const SEEDS: u64 = 500;
/// Ticks of random faults per seed; then everything in flight is delivered.
const CHAOS_TICKS: u64 = 300;
const DRAIN_TICKS_MAX: u64 = 5_000;
const TOPICS_MAX: usize = 6;
/// A broker that got no answer to its ControlledShutdown in this many ticks asks again.
const SHUTDOWN_TIMEOUT_TICKS: u64 = 60;
/// Answers with partitions left before the broker stops anyway.
const SHUTDOWN_RETRIES_MAX: u32 = 2;

// ----- deterministic randomness: `super::super::sim_rng::Rng` (shared) -------------------

use crate::cluster::sim_rng::Rng;

// ----- the simulated world ----------------------------------------------------------------

struct Znode {
    state: LeaderAndIsr,
    version: i32,
}

struct Topic {
    replicas: BTreeMap<i32, Vec<BrokerId>>,
    /// Reassignments in progress (the topic znode's adding/removing replicas).
    reassigning: BTreeMap<i32, Reassignment>,
    /// Replicas a completed reassignment dropped that may still be in the ISR until the
    /// controller's next write (never elected).
    retired: BTreeMap<i32, Vec<BrokerId>>,
    unclean: Option<bool>,
    /// Unclean election was enabled at some point: its elections are not checked as clean.
    ever_unclean: bool,
}

/// What a core had been told when it issued a write.
#[derive(Clone, Default)]
struct Issued {
    live: BTreeSet<BrokerId>,
    shutting: BTreeSet<BrokerId>,
    /// Failed replicas as reported to the core.
    offline: BTreeMap<BrokerId, BTreeSet<TopicPartition>>,
}

/// Who asked for an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    CoreWrite,
    CoreRead,
    /// The shell reads on a notification.
    Notification,
}

/// A ZooKeeper operation of one core's shell on one partition, or its result on the way back.
enum Flight {
    Exec {
        op: Output,
        origin: Origin,
        issued: Issued,
    },
    Deliver {
        event: Event,
        origin: Origin,
    },
}

impl Flight {
    fn origin(&self) -> Origin {
        match self {
            Flight::Exec { origin, .. } | Flight::Deliver { origin, .. } => *origin,
        }
    }
}

/// An event for a core that is not about one partition.
struct Queued {
    due: u64,
    event: Event,
    /// For a ControlledShutdown: the asking broker and its generation.
    sender: Option<(BrokerId, u64)>,
}

/// One controller core and its shell's view of the world.
struct Shell {
    core: Controller,
    epoch: i32,
    /// Per partition, FIFO: (due tick, flight).
    chans: BTreeMap<TopicPartition, VecDeque<(u64, Flight)>>,
    /// Topic events, controlled-shutdown requests, Fenced: FIFO.
    events: VecDeque<Queued>,
    /// The /brokers/ids watch fired: at this tick the shell reads the then-current children.
    watch_due: Option<u64>,
    /// Live brokers as last delivered, with their generation (the znode's czxid).
    told_live: BTreeMap<BrokerId, u64>,
    /// Mirror of the core's shutting-down set.
    told_shutting: BTreeSet<BrokerId>,
    /// The /offline_replicas watch fired: at this tick the shell reads every broker's set.
    offline_due: Option<u64>,
    /// Mirror of the failed replicas the core was told of.
    told_offline: BTreeMap<BrokerId, BTreeSet<TopicPartition>>,
}

impl Shell {
    fn drained(&self) -> bool {
        self.chans.is_empty()
            && self.events.is_empty()
            && self.watch_due.is_none()
            && self.offline_due.is_none()
    }
}

enum Shutdown {
    Asked { retries: u32, sent_at: u64 },
    Stopping,
}

enum Ready {
    Chan(usize, TopicPartition),
    Event(usize),
    Watch(usize),
    OfflineWatch(usize),
    LeaderWrite(TopicPartition, i32, LeaderAndIsr),
    Stop(BrokerId, u64),
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    elections: u64,
    offline: u64,
    unclean_elections: u64,
    conflicts: u64,
    fenced_writes: u64,
    leader_writes: u64,
    shutdown_answers: u64,
    shutdown_moves_blocked: u64,
    shutdown_moves: u64,
    failovers: u64,
    bounces: u64,
    topics_deleted: u64,
    disk_faults: u64,
    partitions_added: u64,
    reassignments: u64,
    cancellations: u64,
    reassignments_completed: u64,
    completions_refused: u64,
    elections_asked: u64,
    preferred_moves: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.elections += o.elections;
        self.offline += o.offline;
        self.unclean_elections += o.unclean_elections;
        self.conflicts += o.conflicts;
        self.fenced_writes += o.fenced_writes;
        self.leader_writes += o.leader_writes;
        self.shutdown_answers += o.shutdown_answers;
        self.shutdown_moves_blocked += o.shutdown_moves_blocked;
        self.shutdown_moves += o.shutdown_moves;
        self.failovers += o.failovers;
        self.bounces += o.bounces;
        self.topics_deleted += o.topics_deleted;
        self.disk_faults += o.disk_faults;
        self.partitions_added += o.partitions_added;
        self.reassignments += o.reassignments;
        self.cancellations += o.cancellations;
        self.reassignments_completed += o.reassignments_completed;
        self.completions_refused += o.completions_refused;
        self.elections_asked += o.elections_asked;
        self.preferred_moves += o.preferred_moves;
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: u64,
    trace: bool,
    brokers: Vec<BrokerId>,
    /// The ephemeral /brokers/ids children: broker -> generation.
    alive: BTreeMap<BrokerId, u64>,
    next_generation: u64,
    topics: BTreeMap<String, Topic>,
    next_topic: u32,
    /// The state znodes.
    store: BTreeMap<TopicPartition, Znode>,
    /// /controller_epoch: writes of any other epoch fail the fence.
    store_epoch: i32,
    config: ControllerConfig,
    /// The last one is the current controller; older ones are deposed (until drained).
    shells: Vec<Shell>,
    /// Leaders' ISR changes in flight: (due, partition, expected version, new state).
    leader_writes: Vec<(u64, TopicPartition, i32, LeaderAndIsr)>,
    /// Brokers that will stop: (due, broker, generation).
    stops: Vec<(u64, BrokerId, u64)>,
    shutdowns: BTreeMap<BrokerId, Shutdown>,
    /// Every committed (partition, leader epoch) -> its leader.
    epoch_leaders: BTreeMap<(TopicPartition, i32), BrokerId>,
    /// Replicas whose log failed, per live broker (a restart reopens them).
    disk_faults: BTreeMap<BrokerId, BTreeSet<TopicPartition>>,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64, trace: bool) -> Sim {
        let mut rng = Rng(seed);
        let n = rng.range(3, 5) as BrokerId;
        let brokers: Vec<BrokerId> = (1..=n).collect();
        let config = ControllerConfig {
            unclean_leader_election: rng.per_mille(100),
        };
        let mut sim = Sim {
            seed,
            rng,
            now: 0,
            trace,
            alive: brokers.iter().map(|&b| (b, b as u64)).collect(),
            next_generation: n as u64 + 1,
            brokers,
            topics: BTreeMap::new(),
            next_topic: 0,
            store: BTreeMap::new(),
            store_epoch: 1,
            config,
            shells: Vec::new(),
            leader_writes: Vec::new(),
            stops: Vec::new(),
            shutdowns: BTreeMap::new(),
            epoch_leaders: BTreeMap::new(),
            disk_faults: BTreeMap::new(),
            stats: Stats::default(),
        };
        for _ in 0..sim.rng.range(2, 4) {
            sim.create_topic(false);
        }
        sim.new_controller();
        sim
    }

    fn fail(&self, what: String) -> ! {
        panic!("seed {}: tick {}: {what}", self.seed, self.now);
    }

    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>5}] {}", self.now, what());
        }
    }

    fn current(&self) -> usize {
        self.shells.len() - 1
    }

    fn unclean(&self, topic: &Topic) -> bool {
        topic.unclean.unwrap_or(self.config.unclean_leader_election)
    }

    // ----- the controller's shell ---------------------------------------------------------

    fn new_controller(&mut self) {
        let epoch = self.store_epoch;
        self.trace(|| format!("controller epoch {epoch} elected"));
        self.shells.push(Shell {
            core: Controller::new(epoch, self.config.clone()),
            epoch,
            chans: BTreeMap::new(),
            events: VecDeque::new(),
            watch_due: None,
            told_live: BTreeMap::new(),
            told_shutting: BTreeSet::new(),
            offline_due: None,
            told_offline: BTreeMap::new(),
        });
        let i = self.current();
        self.shells[i].offline_due = Some(self.now + self.rng.range(0, 10));
        // The live set first, or the topics first and the live set later: the core must not
        // decide before it knows who is live.
        let live_first = self.rng.per_mille(500);
        if live_first {
            self.deliver_live(i);
        } else {
            self.shells[i].watch_due = Some(self.now + self.rng.range(1, 10));
        }
        let topics: Vec<Event> = self
            .topics
            .keys()
            .map(|name| self.topic_event(name))
            .collect();
        for e in topics {
            self.step_core(i, e);
        }
    }

    fn step_core(&mut self, i: usize, event: Event) {
        let epoch = self.shells[i].epoch;
        self.trace(|| format!("core {epoch} <- {event:?}"));
        let shell = &mut self.shells[i];
        match &event {
            Event::LiveBrokers(live) => shell.told_shutting.retain(|b| live.contains(b)),
            Event::OfflineReplicas { broker, partitions } => {
                if partitions.is_empty() {
                    shell.told_offline.remove(broker);
                } else {
                    shell.told_offline.insert(*broker, partitions.clone());
                }
            }
            Event::ControlledShutdown { broker } if shell.told_live.contains_key(broker) => {
                shell.told_shutting.insert(*broker);
            }
            _ => {}
        }
        let was_resigned = shell.core.is_resigned();
        let outputs = shell.core.step(event);
        self.check(!was_resigned || outputs.is_empty(), || {
            format!("resigned core {epoch} still acts: {outputs:?}")
        });
        for out in outputs {
            self.trace(|| format!("core {epoch} -> {out:?}"));
            self.on_output(i, out);
        }
    }

    fn on_output(&mut self, i: usize, out: Output) {
        let tp = match &out {
            Output::CreateState { tp, .. }
            | Output::UpdateState { tp, .. }
            | Output::CompleteReassignment { tp, .. }
            | Output::ReadState { tp } => tp.clone(),
            Output::ShutdownProgress {
                broker,
                partitions_remaining,
            } => {
                self.on_shutdown_answer(i, *broker, *partitions_remaining);
                return;
            }
            Output::Resigned => {
                self.check(self.shells[i].epoch < self.store_epoch, || {
                    "the current controller resigned".into()
                });
                return;
            }
        };
        let origin = match &out {
            Output::ReadState { .. } => Origin::CoreRead,
            _ => Origin::CoreWrite,
        };
        let shell = &self.shells[i];
        // Reads may overlap (a notification's read can answer the core's own), writes not.
        let busy = shell
            .chans
            .get(&tp)
            .is_some_and(|c| c.iter().any(|(_, f)| f.origin() == Origin::CoreWrite));
        self.check(origin == Origin::CoreRead || !busy, || {
            format!("{tp}: a second write in flight: {out:?}")
        });
        let issued = Issued {
            live: shell.told_live.keys().copied().collect(),
            shutting: shell.told_shutting.clone(),
            offline: shell.told_offline.clone(),
        };
        if let Output::CreateState { state, .. } | Output::UpdateState { state, .. } = &out {
            self.check(
                state.leader == NO_LEADER || issued.live.contains(&state.leader),
                || format!("{tp}: leader not live as far as the core knows: {out:?}"),
            );
            let failed = |b: &BrokerId| issued.offline.get(b).is_some_and(|s| s.contains(&tp));
            self.check(
                state.leader == NO_LEADER || !state.isr.iter().any(failed),
                || format!("{tp}: a failed replica leads or stays in sync: {out:?}"),
            );
        }
        let due = self.now + self.rng.range(0, 6);
        self.shells[i].chans.entry(tp).or_default().push_back((
            due,
            Flight::Exec {
                op: out,
                origin,
                issued,
            },
        ));
    }

    fn on_shutdown_answer(&mut self, i: usize, broker: BrokerId, remaining: usize) {
        self.stats.shutdown_answers += 1;
        if i != self.current() || self.shells[i].epoch != self.store_epoch {
            return; // a deposed controller's answer: the broker asks the new one
        }
        // Only the current controller moves leaders, everything it had in flight when the
        // broker's shutdown was taken in has come back, and it has not elected the broker
        // since: it cannot lead more than the answer says. (A request the core took from a
        // broker it did not see as live is answered without that promise.)
        if self.shells[i].told_shutting.contains(&broker) {
            let led = self
                .store
                .values()
                .filter(|z| z.state.leader == broker)
                .count();
            self.check(led <= remaining, || {
                format!("broker {broker} told {remaining} partitions remain but leads {led}")
            });
        }
        if remaining > 0 {
            self.stats.shutdown_moves_blocked += 1;
        }
        let Some(Shutdown::Asked { retries, .. }) = self.shutdowns.get(&broker) else {
            return; // answer to a request of an earlier incarnation
        };
        let retries = *retries;
        if remaining == 0 || retries >= SHUTDOWN_RETRIES_MAX {
            self.shutdowns.insert(broker, Shutdown::Stopping);
            if let Some(&generation) = self.alive.get(&broker) {
                let due = self.now + self.rng.range(0, 3);
                self.stops.push((due, broker, generation));
            }
        } else {
            self.send_shutdown(broker, retries + 1);
        }
    }

    fn send_shutdown(&mut self, broker: BrokerId, retries: u32) {
        let Some(&generation) = self.alive.get(&broker) else {
            return;
        };
        self.shutdowns.insert(
            broker,
            Shutdown::Asked {
                retries,
                sent_at: self.now,
            },
        );
        let due = self.now + self.rng.range(0, 5);
        let i = self.current();
        self.shells[i].events.push_back(Queued {
            due,
            event: Event::ControlledShutdown { broker },
            sender: Some((broker, generation)),
        });
    }

    fn deliver_live(&mut self, i: usize) {
        let current = self.alive.clone();
        // A broker with a new generation restarted since the last read: the shell reports it
        // leaving and joining, as it must (see the module doc of the core).
        let bounced: Vec<BrokerId> = current
            .iter()
            .filter(|(b, g)| self.shells[i].told_live.get(b).is_some_and(|t| t != *g))
            .map(|(b, _)| *b)
            .collect();
        if !bounced.is_empty() {
            self.stats.bounces += 1;
            let without: BTreeMap<BrokerId, u64> = current
                .iter()
                .filter(|(b, _)| !bounced.contains(b))
                .map(|(b, g)| (*b, *g))
                .collect();
            let set = without.keys().copied().collect();
            self.shells[i].told_live = without;
            self.step_core(i, Event::LiveBrokers(set));
        }
        let set = current.keys().copied().collect();
        self.shells[i].told_live = current;
        self.step_core(i, Event::LiveBrokers(set));
    }

    /// Runs one ZooKeeper operation against the store; returns its result for the core.
    fn execute(&mut self, i: usize, op: Output, issued: Issued) -> Event {
        match op {
            Output::ReadState { tp } => {
                let state = self.store.get(&tp).map(|z| (z.state.clone(), z.version));
                Event::StateRead { tp, state }
            }
            Output::CreateState { tp, state } => {
                if self.shells[i].epoch != self.store_epoch {
                    self.stats.fenced_writes += 1;
                    return Event::Fenced;
                }
                // No topic znode (deleted): NoNode, reported as a conflict.
                if !self.topics.contains_key(&tp.topic) || self.store.contains_key(&tp) {
                    self.stats.conflicts += 1;
                    return Event::WriteConflict { tp };
                }
                self.check_controller_write(i, &tp, None, &state, &issued);
                self.store.insert(tp.clone(), Znode { state, version: 0 });
                Event::WriteDone { tp, new_version: 0 }
            }
            Output::UpdateState {
                tp,
                state,
                expected_version,
            } => {
                if self.shells[i].epoch != self.store_epoch {
                    self.stats.fenced_writes += 1;
                    return Event::Fenced;
                }
                let prev = match self.store.get(&tp) {
                    Some(z) if z.version == expected_version => z.state.clone(),
                    _ => {
                        self.stats.conflicts += 1;
                        return Event::WriteConflict { tp };
                    }
                };
                self.check_controller_write(i, &tp, Some(&prev), &state, &issued);
                let z = self.store.get_mut(&tp).expect("checked above");
                z.state = state;
                z.version += 1;
                Event::WriteDone {
                    tp,
                    new_version: z.version,
                }
            }
            Output::CompleteReassignment {
                tp,
                state_version,
                replicas,
                target,
            } => {
                if self.shells[i].epoch != self.store_epoch {
                    self.stats.fenced_writes += 1;
                    return Event::Fenced;
                }
                if self.store.get(&tp).map(|z| z.version) != Some(state_version) {
                    self.stats.conflicts += 1;
                    return Event::WriteConflict { tp };
                }
                let current = self.topics.get(&tp.topic).map(|t| {
                    (
                        t.replicas[&tp.partition].clone(),
                        t.reassigning
                            .get(&tp.partition)
                            .cloned()
                            .unwrap_or_default(),
                    )
                });
                let Some((now_replicas, ongoing)) = current else {
                    return Event::TopicRemoved { topic: tp.topic };
                };
                if now_replicas != replicas
                    || !ongoing.in_progress()
                    || ongoing.target(&now_replicas) != target
                {
                    self.stats.completions_refused += 1;
                    return Event::ReassignmentCompleted { tp, written: false };
                }
                // Finishing is safe only with the whole target in sync and leading.
                let state = self.store.get(&tp).map(|z| z.state.clone());
                self.check(
                    state.as_ref().is_some_and(|s| {
                        target.contains(&s.leader) && target.iter().all(|b| s.isr.contains(b))
                    }),
                    || format!("{tp}: reassignment to {target:?} completed in state {state:?}"),
                );
                self.stats.reassignments_completed += 1;
                self.trace(|| format!("{tp}: reassignment to {target:?} completed"));
                let t = self.topics.get_mut(&tp.topic).expect("checked above");
                let retired: Vec<BrokerId> = replicas
                    .iter()
                    .copied()
                    .filter(|b| !target.contains(b))
                    .collect();
                t.retired.insert(tp.partition, retired);
                t.replicas.insert(tp.partition, target);
                t.reassigning.remove(&tp.partition);
                let e = self.topic_event(&tp.topic);
                self.broadcast_event(e);
                Event::ReassignmentCompleted { tp, written: true }
            }
            other => self.fail(format!("not a ZooKeeper operation: {other:?}")),
        }
    }

    /// Invariants of any committed state.
    fn check_commit(
        &mut self,
        tp: &TopicPartition,
        prev: Option<&LeaderAndIsr>,
        new: &LeaderAndIsr,
    ) {
        let topic = &self.topics[&tp.topic];
        let replicas = topic.replicas[&tp.partition].clone();
        let retired = topic
            .retired
            .get(&tp.partition)
            .cloned()
            .unwrap_or_default();
        let isr = &new.isr;
        self.check(!isr.is_empty(), || format!("{tp}: empty ISR: {new:?}"));
        self.check(
            isr.iter().enumerate().all(|(k, b)| !isr[..k].contains(b)),
            || format!("{tp}: duplicate in the ISR: {new:?}"),
        );
        self.check(
            isr.iter()
                .all(|b| replicas.contains(b) || retired.contains(b)),
            || format!("{tp}: ISR outside the replicas {replicas:?}: {new:?}"),
        );
        self.check(
            new.leader == NO_LEADER || replicas.contains(&new.leader),
            || format!("{tp}: leader outside the assignment {replicas:?}: {new:?}"),
        );
        if !isr.iter().any(|b| retired.contains(b)) {
            if let Some(t) = self.topics.get_mut(&tp.topic) {
                t.retired.remove(&tp.partition);
            }
        }
        if let Some(prev) = prev {
            let preferred = replicas.first().copied();
            let prev_serving =
                self.alive.contains_key(&prev.leader) && !self.failed(prev.leader, tp);
            if new.leader != prev.leader && Some(new.leader) == preferred && prev_serving {
                self.stats.preferred_moves += 1;
            }
        }
        self.check(new.leader == NO_LEADER || isr.contains(&new.leader), || {
            format!("{tp}: leader outside the ISR: {new:?}")
        });
        if let Some(prev) = prev {
            self.check(new.leader_epoch >= prev.leader_epoch, || {
                format!("{tp}: leader epoch went back: {prev:?} -> {new:?}")
            });
            self.check(
                new.leader == prev.leader || new.leader_epoch > prev.leader_epoch,
                || format!("{tp}: leader changed without a new epoch: {prev:?} -> {new:?}"),
            );
        }
        let key = (tp.clone(), new.leader_epoch);
        if let Some(&had) = self.epoch_leaders.get(&key) {
            self.check(had == new.leader, || {
                format!(
                    "{tp}: two leaders for epoch {}: {had} and {}",
                    new.leader_epoch, new.leader
                )
            });
        }
        self.epoch_leaders.insert(key, new.leader);
        self.trace(|| format!("commit {tp}: {new:?}"));
    }

    fn check_controller_write(
        &mut self,
        i: usize,
        tp: &TopicPartition,
        prev: Option<&LeaderAndIsr>,
        new: &LeaderAndIsr,
        issued: &Issued,
    ) {
        self.check_commit(tp, prev, new);
        self.check(new.controller_epoch == self.shells[i].epoch, || {
            format!("{tp}: written with a foreign controller epoch: {new:?}")
        });
        let changed = prev.is_none_or(|p| p.leader != new.leader);
        if changed && new.leader != NO_LEADER {
            self.stats.elections += 1;
            self.check(!issued.shutting.contains(&new.leader), || {
                format!("{tp}: elected shutting-down broker {}: {new:?}", new.leader)
            });
            if prev.is_some_and(|p| issued.shutting.contains(&p.leader)) {
                self.stats.shutdown_moves += 1;
            }
        }
        if changed && new.leader == NO_LEADER {
            self.stats.offline += 1;
        }
        let topic = &self.topics[&tp.topic];
        let clean = !topic.ever_unclean && !self.config.unclean_leader_election;
        match prev {
            None => {
                self.check(new.leader_epoch == 0, || {
                    format!("{tp}: created with epoch {}", new.leader_epoch)
                });
                self.check(new.isr.iter().all(|b| issued.live.contains(b)), || {
                    format!("{tp}: created with a dead ISR member: {new:?}")
                });
            }
            Some(prev) if clean => {
                self.check(new.isr.iter().all(|b| prev.isr.contains(b)), || {
                    format!("{tp}: the controller added to the ISR: {prev:?} -> {new:?}")
                });
                self.check(
                    !changed || new.leader == NO_LEADER || prev.isr.contains(&new.leader),
                    || format!("{tp}: elected outside the ISR: {prev:?} -> {new:?}"),
                );
            }
            Some(prev) => {
                if changed && new.leader != NO_LEADER && !prev.isr.contains(&new.leader) {
                    self.stats.unclean_elections += 1;
                }
            }
        }
    }

    fn execute_leader_write(&mut self, tp: TopicPartition, expected: i32, new: LeaderAndIsr) {
        let prev = match self.store.get(&tp) {
            Some(z) if z.version == expected => z.state.clone(),
            _ => return, // stale: the leader reads again (not modelled) and may retry later
        };
        self.stats.leader_writes += 1;
        self.check(
            new.leader == prev.leader
                && new.leader_epoch == prev.leader_epoch
                && new.controller_epoch == prev.controller_epoch,
            || format!("{tp}: sim bug, leader write {prev:?} -> {new:?}"),
        );
        self.check_commit(&tp, Some(&prev), &new);
        let z = self.store.get_mut(&tp).expect("checked above");
        z.state = new;
        z.version += 1;
        // The ISR change notification: every controller still acting reads the state again.
        for i in 0..self.shells.len() {
            if !self.shells[i].core.is_resigned() {
                self.notify_read(i, tp.clone());
            }
        }
    }

    fn notify_read(&mut self, i: usize, tp: TopicPartition) {
        let due = self.now + self.rng.range(1, 8);
        self.shells[i]
            .chans
            .entry(tp.clone())
            .or_default()
            .push_back((
                due,
                Flight::Exec {
                    op: Output::ReadState { tp },
                    origin: Origin::Notification,
                    issued: Issued::default(),
                },
            ));
    }

    // ----- faults and the rest of the world -------------------------------------------------

    fn schedule_watches(&mut self) {
        for i in 0..self.shells.len() {
            if !self.shells[i].core.is_resigned() && self.shells[i].watch_due.is_none() {
                self.shells[i].watch_due = Some(self.now + self.rng.range(1, 10));
            }
        }
    }

    fn crash(&mut self, b: BrokerId) {
        self.trace(|| format!("broker {b} stops"));
        self.alive.remove(&b);
        self.shutdowns.remove(&b);
        self.schedule_watches();
        // Its /offline_replicas znode was ephemeral: gone with its session.
        if self.disk_faults.remove(&b).is_some() {
            self.schedule_offline_watches();
        }
    }

    fn schedule_offline_watches(&mut self) {
        for i in 0..self.shells.len() {
            if !self.shells[i].core.is_resigned() && self.shells[i].offline_due.is_none() {
                self.shells[i].offline_due = Some(self.now + self.rng.range(1, 10));
            }
        }
    }

    /// A live broker's log of one of its replicas fails: it reports its whole failed set.
    fn disk_fault(&mut self) {
        let mut candidates = Vec::new();
        for (name, topic) in &self.topics {
            for (&partition, replicas) in &topic.replicas {
                for &b in replicas {
                    if self.alive.contains_key(&b) {
                        candidates.push((b, TopicPartition::new(name.clone(), partition)));
                    }
                }
            }
        }
        let Some((b, tp)) = self.rng.pick(&candidates) else {
            return;
        };
        self.trace(|| format!("broker {b}: the log of {tp} fails"));
        self.stats.disk_faults += 1;
        self.disk_faults.entry(b).or_default().insert(tp);
        self.schedule_offline_watches();
    }

    /// The shell reads every broker's /offline_replicas znode and hands the sets to the core.
    fn deliver_offline(&mut self, i: usize) {
        for b in self.brokers.clone() {
            let partitions = self.disk_faults.get(&b).cloned().unwrap_or_default();
            let told = self.shells[i]
                .told_offline
                .get(&b)
                .cloned()
                .unwrap_or_default();
            if partitions != told || self.rng.per_mille(100) {
                self.step_core(
                    i,
                    Event::OfflineReplicas {
                        broker: b,
                        partitions,
                    },
                );
            }
        }
    }

    fn failed(&self, b: BrokerId, tp: &TopicPartition) -> bool {
        self.disk_faults.get(&b).is_some_and(|s| s.contains(tp))
    }

    fn restart(&mut self, b: BrokerId) {
        self.trace(|| format!("broker {b} starts"));
        self.alive.insert(b, self.next_generation);
        self.next_generation += 1;
        self.schedule_watches();
    }

    fn broadcast_event(&mut self, e: Event) {
        for i in 0..self.shells.len() {
            if !self.shells[i].core.is_resigned() {
                let due = self.now + self.rng.range(0, 5);
                self.shells[i].events.push_back(Queued {
                    due,
                    event: e.clone(),
                    sender: None,
                });
            }
        }
    }

    fn topic_event(&self, name: &str) -> Event {
        let t = &self.topics[name];
        Event::TopicAssigned {
            topic: name.to_string(),
            replicas: t.replicas.clone(),
            unclean_leader_election: t.unclean,
            reassignments: t.reassigning.clone(),
        }
    }

    fn create_topic(&mut self, announce: bool) {
        let name = format!("t{}", self.next_topic);
        self.next_topic += 1;
        let n = self.brokers.len() as u64;
        let rf = self.rng.range(1, n) as usize;
        let mut replicas = BTreeMap::new();
        for p in 0..self.rng.range(1, 3) as i32 {
            let mut brokers = self.brokers.clone();
            self.rng.shuffle(&mut brokers);
            brokers.truncate(rf);
            replicas.insert(p, brokers);
        }
        let unclean = match self.rng.below(100) {
            0..=14 => Some(true),
            15..=29 => Some(false),
            _ => None,
        };
        self.trace(|| format!("topic {name} created: {replicas:?} unclean {unclean:?}"));
        self.topics.insert(
            name.clone(),
            Topic {
                replicas,
                reassigning: BTreeMap::new(),
                retired: BTreeMap::new(),
                unclean,
                ever_unclean: unclean == Some(true),
            },
        );
        if announce {
            let e = self.topic_event(&name);
            self.broadcast_event(e);
        }
    }

    fn chaos(&mut self) {
        let alive: Vec<BrokerId> = self.alive.keys().copied().collect();
        let dead: Vec<BrokerId> = self
            .brokers
            .iter()
            .copied()
            .filter(|b| !self.alive.contains_key(b))
            .collect();
        if self.rng.per_mille(30) && (alive.len() > 1 || self.rng.per_mille(300)) {
            if let Some(b) = self.rng.pick(&alive) {
                self.crash(b);
            }
        }
        if self.rng.per_mille(40) {
            if let Some(b) = self.rng.pick(&dead) {
                self.restart(b);
            }
        }
        if self.rng.per_mille(150) {
            self.leader_changes_isr();
        }
        if self.rng.per_mille(20) {
            let candidates: Vec<BrokerId> = alive
                .iter()
                .copied()
                .filter(|b| !self.shutdowns.contains_key(b))
                .collect();
            if let Some(b) = self.rng.pick(&candidates) {
                self.trace(|| format!("broker {b} asks to shut down"));
                self.send_shutdown(b, 0);
            }
        }
        if self.rng.per_mille(8) {
            self.failover();
        }
        if self.rng.per_mille(12) {
            self.disk_fault();
        }
        if self.rng.per_mille(10) && self.topics.len() < TOPICS_MAX {
            self.create_topic(true);
        }
        if self.rng.per_mille(4) {
            let names: Vec<String> = self.topics.keys().cloned().collect();
            if let Some(name) = self.rng.pick(&names) {
                self.trace(|| format!("topic {name} deleted"));
                self.stats.topics_deleted += 1;
                self.topics.remove(&name);
                self.store.retain(|tp, _| tp.topic != name);
                self.broadcast_event(Event::TopicRemoved { topic: name });
            }
        }
        if self.rng.per_mille(5) {
            let names: Vec<String> = self.topics.keys().cloned().collect();
            if let Some(name) = self.rng.pick(&names) {
                let unclean = self.rng.pick(&[None, Some(false), Some(true)]).flatten();
                let t = self.topics.get_mut(&name).expect("picked from the keys");
                t.unclean = unclean;
                t.ever_unclean |= unclean == Some(true);
                self.trace(|| format!("topic {name} unclean set to {unclean:?}"));
                let e = self.topic_event(&name);
                self.broadcast_event(e);
            }
        }
        if self.rng.per_mille(6) {
            self.add_partitions();
        }
        if self.rng.per_mille(25) {
            self.reassign();
        }
        if self.rng.per_mille(15) {
            self.elect_leaders();
        }
        if self.rng.per_mille(10) {
            // A spurious notification: the shell reads a state nobody changed.
            let tps: Vec<TopicPartition> = self.store.keys().cloned().collect();
            if let Some(tp) = self.rng.pick(&tps) {
                let i = self.current();
                self.notify_read(i, tp);
            }
        }
    }

    /// CreatePartitions: a topic's assignment grows by one or two partitions (replicas of
    /// the topic's factor, on any brokers, live or not), announced like a new topic. The
    /// final checks then hold the new partitions to the same rules as the old ones.
    fn add_partitions(&mut self) {
        let names: Vec<String> = self.topics.keys().cloned().collect();
        let Some(name) = self.rng.pick(&names) else {
            return;
        };
        let added = self.rng.range(1, 2) as i32;
        let mut brokers = self.brokers.clone();
        let t = self.topics.get(&name).expect("picked from the keys");
        let factor = t.replicas.values().next().map_or(1, Vec::len);
        let first_new = t.replicas.len() as i32;
        let mut new = Vec::new();
        for p in first_new..first_new + added {
            self.rng.shuffle(&mut brokers);
            new.push((p, brokers[..factor].to_vec()));
        }
        self.trace(|| format!("topic {name}: partitions added {new:?}"));
        self.stats.partitions_added += added as u64;
        let t = self.topics.get_mut(&name).expect("picked from the keys");
        t.replicas.extend(new);
        let e = self.topic_event(&name);
        self.broadcast_event(e);
    }

    /// An operator reassigns a partition (a random target, or a cancellation), written to
    /// the topic znode as a broker taking AlterPartitionReassignments does.
    fn reassign(&mut self) {
        let tps: Vec<TopicPartition> = self
            .topics
            .iter()
            .flat_map(|(name, t)| {
                t.replicas
                    .keys()
                    .map(move |&p| TopicPartition::new(name.clone(), p))
            })
            .collect();
        let Some(tp) = self.rng.pick(&tps) else {
            return;
        };
        let cancel = self.rng.per_mille(200);
        let target = if cancel {
            None
        } else {
            let mut brokers = self.brokers.clone();
            self.rng.shuffle(&mut brokers);
            brokers.truncate(self.rng.range(1, self.brokers.len() as u64) as usize);
            Some(brokers)
        };
        let t = &self.topics[&tp.topic];
        let ongoing = t
            .reassigning
            .get(&tp.partition)
            .cloned()
            .unwrap_or_default();
        let Ok((replicas, next)) =
            reassign(&t.replicas[&tp.partition], &ongoing, target.as_deref())
        else {
            return;
        };
        if cancel {
            self.stats.cancellations += 1;
        } else {
            self.stats.reassignments += 1;
        }
        self.trace(|| format!("{tp}: reassigned to {target:?}: {replicas:?} {next:?}"));
        let t = self
            .topics
            .get_mut(&tp.topic)
            .expect("picked from the topics");
        t.replicas.insert(tp.partition, replicas);
        if next.in_progress() {
            t.reassigning.insert(tp.partition, next);
        } else {
            t.reassigning.remove(&tp.partition);
        }
        let e = self.topic_event(&tp.topic);
        self.broadcast_event(e);
    }

    /// An operator asks for preferred or unclean elections of a few partitions.
    fn elect_leaders(&mut self) {
        let tps: Vec<TopicPartition> = self.store.keys().cloned().collect();
        let mut partitions = Vec::new();
        for _ in 0..self.rng.range(1, 3) {
            if let Some(tp) = self.rng.pick(&tps) {
                partitions.push(tp);
            }
        }
        let election = if self.rng.per_mille(300) {
            ElectionType::Unclean
        } else {
            ElectionType::Preferred
        };
        if election == ElectionType::Unclean {
            // Its elections are not checked as clean from here on.
            for tp in &partitions {
                if let Some(t) = self.topics.get_mut(&tp.topic) {
                    t.ever_unclean = true;
                }
            }
        }
        self.stats.elections_asked += 1;
        self.trace(|| format!("elect leaders {election:?}: {partitions:?}"));
        let due = self.now + self.rng.range(0, 5);
        let i = self.current();
        self.shells[i].events.push_back(Queued {
            due,
            event: Event::ElectLeaders {
                election,
                partitions,
            },
            sender: None,
        });
    }

    /// Leaders of partitions being reassigned let caught-up target replicas join (in the
    /// drain, where no random ISR changes happen, so reassignments can finish).
    fn leaders_expand_for_reassignments(&mut self) {
        let mut writes = Vec::new();
        for (name, t) in &self.topics {
            for (&partition, ongoing) in &t.reassigning {
                let tp = TopicPartition::new(name.clone(), partition);
                let Some(z) = self.store.get(&tp) else {
                    continue;
                };
                let leader = z.state.leader;
                if !self.alive.contains_key(&leader) || self.failed(leader, &tp) {
                    continue;
                }
                let joining = ongoing
                    .target(&t.replicas[&partition])
                    .into_iter()
                    .find(|&b| {
                        self.alive.contains_key(&b)
                            && !z.state.isr.contains(&b)
                            && !self.failed(b, &tp)
                    });
                if let Some(b) = joining {
                    let mut state = z.state.clone();
                    state.isr.push(b);
                    writes.push((tp, z.version, state));
                }
            }
        }
        for (tp, version, state) in writes {
            if !self.leader_writes.iter().any(|w| w.1 == tp) {
                let due = self.now + self.rng.range(0, 6);
                self.leader_writes.push((due, tp, version, state));
            }
        }
    }

    /// True while a reassignment could finish: its whole target is live and serving and the
    /// partition has a leader.
    fn reassignment_can_finish(&self) -> bool {
        self.topics.iter().any(|(name, t)| {
            t.reassigning.iter().any(|(&partition, ongoing)| {
                let tp = TopicPartition::new(name.clone(), partition);
                let serving = |b: &BrokerId| self.alive.contains_key(b) && !self.failed(*b, &tp);
                ongoing.target(&t.replicas[&partition]).iter().all(serving)
                    && self
                        .store
                        .get(&tp)
                        .is_some_and(|z| serving(&z.state.leader))
            })
        })
    }

    /// A live leader shrinks or expands its own ISR with a conditional write, as Kafka
    /// leaders do (a follower fell behind or caught up), from the version it knows now.
    fn leader_changes_isr(&mut self) {
        let tps: Vec<TopicPartition> = self
            .store
            .iter()
            // A replica whose log failed does not act as leader.
            .filter(|(tp, z)| {
                self.alive.contains_key(&z.state.leader) && !self.failed(z.state.leader, tp)
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        let Some(tp) = self.rng.pick(&tps) else {
            return;
        };
        let z = &self.store[&tp];
        let replicas = self.topics[&tp.topic].replicas[&tp.partition].clone();
        let mut state = z.state.clone();
        let version = z.version;
        let followers: Vec<BrokerId> = state
            .isr
            .iter()
            .copied()
            .filter(|&b| b != state.leader)
            .collect();
        let outside: Vec<BrokerId> = replicas
            .iter()
            .copied()
            // A follower whose log failed does not fetch, so it never catches up.
            .filter(|&b| {
                self.alive.contains_key(&b) && !state.isr.contains(&b) && !self.failed(b, &tp)
            })
            .collect();
        let shrink = !followers.is_empty() && (outside.is_empty() || self.rng.per_mille(500));
        if shrink {
            let f = self.rng.pick(&followers).expect("not empty");
            state.isr.retain(|&b| b != f);
        } else if let Some(b) = self.rng.pick(&outside) {
            state.isr.push(b);
        } else {
            return;
        }
        let due = self.now + self.rng.range(0, 6);
        self.leader_writes.push((due, tp, version, state));
    }

    fn failover(&mut self) {
        self.stats.failovers += 1;
        self.store_epoch += 1;
        // The deposed controllers learn it from their /controller watch, some time later;
        // until then they act, and the epoch fence must stop their writes.
        for i in 0..self.shells.len() {
            if !self.shells[i].core.is_resigned() {
                let due = self.now + self.rng.range(0, 20);
                self.shells[i].events.push_back(Queued {
                    due,
                    event: Event::Fenced,
                    sender: None,
                });
            }
        }
        self.new_controller();
        // Brokers waiting on a controlled shutdown ask the new controller.
        let waiting: Vec<(BrokerId, u32)> = self
            .shutdowns
            .iter()
            .filter_map(|(b, s)| match s {
                Shutdown::Asked { retries, .. } => Some((*b, *retries)),
                Shutdown::Stopping => None,
            })
            .collect();
        for (b, retries) in waiting {
            self.send_shutdown(b, retries);
        }
    }

    // ----- time -------------------------------------------------------------------------------

    fn tick(&mut self, chaos: bool) {
        self.now += 1;
        if chaos {
            self.chaos();
        } else if self.rng.per_mille(200) {
            self.leaders_expand_for_reassignments();
        }
        let timed_out: Vec<(BrokerId, u32)> = self
            .shutdowns
            .iter()
            .filter_map(|(b, s)| match s {
                Shutdown::Asked { retries, sent_at }
                    if self.now - sent_at > SHUTDOWN_TIMEOUT_TICKS =>
                {
                    Some((*b, *retries))
                }
                _ => None,
            })
            .collect();
        for (b, retries) in timed_out {
            self.send_shutdown(b, retries);
        }

        // Everything due now, run in a random order: operations on different partitions and
        // notifications overtake each other.
        let now = self.now;
        let mut ready = Vec::new();
        for (i, shell) in self.shells.iter().enumerate() {
            for (tp, chan) in &shell.chans {
                if chan.front().is_some_and(|(due, _)| *due <= now) {
                    ready.push(Ready::Chan(i, tp.clone()));
                }
            }
            if shell.events.front().is_some_and(|q| q.due <= now) {
                ready.push(Ready::Event(i));
            }
            if shell.watch_due.is_some_and(|due| due <= now) {
                ready.push(Ready::Watch(i));
            }
            if shell.offline_due.is_some_and(|due| due <= now) {
                ready.push(Ready::OfflineWatch(i));
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.leader_writes)
            .into_iter()
            .partition(|w| w.0 <= now);
        self.leader_writes = later;
        ready.extend(
            due.into_iter()
                .map(|(_, tp, v, s)| Ready::LeaderWrite(tp, v, s)),
        );
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.stops)
            .into_iter()
            .partition(|s| s.0 <= now);
        self.stops = later;
        ready.extend(due.into_iter().map(|(_, b, g)| Ready::Stop(b, g)));
        self.rng.shuffle(&mut ready);

        for r in ready {
            match r {
                Ready::Chan(i, tp) => self.run_chan(i, tp),
                Ready::Event(i) => {
                    let Some(Queued { event, sender, .. }) = self.shells[i].events.pop_front()
                    else {
                        continue;
                    };
                    if let Some((b, generation)) = sender {
                        // A request from a broker process that is gone went with its
                        // connection.
                        if self.alive.get(&b) != Some(&generation) {
                            continue;
                        }
                        // The shell passes a request on only from a broker the core knows
                        // live in that generation; others are told to retry. Some get
                        // through anyway, to exercise the core's own guard.
                        let known = self.shells[i].told_live.get(&b) == Some(&generation);
                        if !known && !self.rng.per_mille(100) {
                            let due = self.now + self.rng.range(2, 8);
                            self.shells[i]
                                .events
                                .push_back(Queued { due, event, sender });
                            continue;
                        }
                    }
                    self.step_core(i, event);
                }
                Ready::Watch(i) => {
                    self.shells[i].watch_due = None;
                    if !self.shells[i].core.is_resigned() {
                        self.deliver_live(i);
                    }
                }
                Ready::OfflineWatch(i) => {
                    self.shells[i].offline_due = None;
                    if !self.shells[i].core.is_resigned() {
                        self.deliver_offline(i);
                    }
                }
                Ready::LeaderWrite(tp, version, state) => {
                    self.execute_leader_write(tp, version, state)
                }
                Ready::Stop(b, generation) => {
                    if self.alive.get(&b) == Some(&generation) {
                        self.crash(b);
                    }
                }
            }
        }
        // Deposed controllers with nothing left in flight leave the simulation.
        let current = self.current();
        let mut k = 0;
        self.shells.retain(|s| {
            k += 1;
            k - 1 == current || !(s.core.is_resigned() && s.drained())
        });
    }

    fn run_chan(&mut self, i: usize, tp: TopicPartition) {
        let Some(chan) = self.shells[i].chans.get_mut(&tp) else {
            return;
        };
        let Some((_, flight)) = chan.pop_front() else {
            return;
        };
        match flight {
            Flight::Exec { op, origin, issued } => {
                let event = self.execute(i, op, issued);
                let due = self.now + self.rng.range(0, 5);
                self.shells[i]
                    .chans
                    .entry(tp)
                    .or_default()
                    .push_front((due, Flight::Deliver { event, origin }));
            }
            Flight::Deliver { event, .. } => {
                if self.shells[i].chans.get(&tp).is_some_and(|c| c.is_empty()) {
                    self.shells[i].chans.remove(&tp);
                }
                self.step_core(i, event);
            }
        }
    }

    fn pending(&self) -> bool {
        self.shells.iter().any(|s| !s.drained())
            || !self.leader_writes.is_empty()
            || !self.stops.is_empty()
            || !self.shutdowns.is_empty()
            || self.reassignment_can_finish()
    }

    fn final_checks(&self) {
        let shell = &self.shells[self.current()];
        self.check(
            !shell.core.is_resigned() && shell.epoch == self.store_epoch,
            || "the current controller is not acting".into(),
        );
        for (name, topic) in &self.topics {
            for (&partition, replicas) in &topic.replicas {
                let tp = TopicPartition::new(name.clone(), partition);
                let serving = |b: &BrokerId| self.alive.contains_key(b) && !self.failed(*b, &tp);
                let replica_alive = replicas.iter().any(serving);
                let Some(z) = self.store.get(&tp) else {
                    self.check(!replica_alive, || {
                        format!("{tp}: no state although a replica can serve")
                    });
                    continue;
                };
                let s = &z.state;
                self.check(s.leader == NO_LEADER || serving(&s.leader), || {
                    format!("{tp}: led by a dead broker or a failed replica: {s:?}")
                });
                let isr_alive = s.isr.iter().any(serving);
                let should_lead = isr_alive || (self.unclean(topic) && replica_alive);
                self.check(!should_lead || s.leader != NO_LEADER, || {
                    format!(
                        "{tp}: offline although it could lead: {s:?}, live {:?}",
                        self.alive
                    )
                });
                self.check(
                    s.leader == NO_LEADER || s.isr.iter().all(|b| replicas.contains(b)),
                    || format!("{tp}: ISR outside the assignment {replicas:?}: {s:?}"),
                );
                self.check(s.leader == NO_LEADER || s.isr.iter().all(serving), || {
                    format!("{tp}: a dead broker or failed replica left in the ISR: {s:?}")
                });
                self.check(shell.core.partition_state(&tp) == Some(s), || {
                    format!(
                        "{tp}: the controller believes {:?}, the store holds {s:?}",
                        shell.core.partition_state(&tp)
                    )
                });
            }
        }
    }
}

fn run_seed(seed: u64, trace: bool) -> Stats {
    let mut sim = Sim::new(seed, trace);
    for _ in 0..CHAOS_TICKS {
        sim.tick(true);
    }
    // Quiescence: no more faults; every operation, notification and shutdown completes.
    let mut ticks = 0;
    while sim.pending() {
        ticks += 1;
        if ticks > DRAIN_TICKS_MAX {
            sim.fail("no quiescence: the controller keeps working".into());
        }
        sim.tick(false);
    }
    sim.final_checks();
    sim.stats
}

#[test]
fn controller_keeps_one_leader_per_epoch_and_converges_under_faults() {
    let trace = std::env::var("CONTROLLER_SIM_TRACE").is_ok();
    let seeds: Vec<u64> = match std::env::var("CONTROLLER_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("CONTROLLER_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("CONTROLLER_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(SEEDS);
            (0..n).collect()
        }
    };
    let mut total = Stats::default();
    for &seed in &seeds {
        match std::panic::catch_unwind(|| run_seed(seed, trace)) {
            Ok(stats) => total.add(&stats),
            Err(panic) => {
                eprintln!(
                    "controller sim failed; replay with CONTROLLER_SIM_SEED={seed} \
                     CONTROLLER_SIM_TRACE=1 cargo test -p broker --lib cluster::controller::sim"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!("controller sim: {} seeds: {total:?}", seeds.len());
    // A simulator that never reached a path proves nothing about it.
    if seeds.len() >= 100 {
        let t = total;
        for (what, n) in [
            ("elections", t.elections),
            ("partitions going offline", t.offline),
            ("unclean elections", t.unclean_elections),
            ("write conflicts", t.conflicts),
            ("fenced writes", t.fenced_writes),
            ("leader ISR changes", t.leader_writes),
            ("shutdown answers", t.shutdown_answers),
            ("shutdowns with partitions left", t.shutdown_moves_blocked),
            (
                "leaderships moved off shutting-down brokers",
                t.shutdown_moves,
            ),
            ("failovers", t.failovers),
            ("restarts seen as bounces", t.bounces),
            ("topic deletions", t.topics_deleted),
            ("partitions added", t.partitions_added),
            ("reassignments", t.reassignments),
            ("cancellations", t.cancellations),
            ("completed reassignments", t.reassignments_completed),
            ("operator elections", t.elections_asked),
            ("preferred leaders restored", t.preferred_moves),
        ] {
            assert!(n > 0, "the simulation never exercised {what}: {t:?}");
        }
    }
}
