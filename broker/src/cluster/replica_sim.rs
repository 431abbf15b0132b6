//! Proves the replication core's rules under a deterministic simulator, together with the real
//! controller core. One seed drives 3 or 5 brokers holding one or two partitions (RF = every
//! broker, min.insync.replicas 2): acks=all producers sending to whoever they believe leads
//! (sometimes a deposed leader), followers fetching with Fetch v12 semantics, the controller
//! electing from the ISR through conditional writes to a model ZooKeeper, leaders shrinking
//! and expanding their ISR through the same znodes. Faults: fetch requests and answers
//! delayed, lost, duplicated and reordered; broker crashes that keep only the written prefix
//! of each log (flush `never`/`interval` under a process crash) or, in the other mode, all of
//! it; restarts that rebuild the epoch cache from the log and take a stale HW checkpoint
//! (KIP-101's lagging HW); pauses long enough for the ZooKeeper session to expire, after which
//! the paused broker wakes up still believing it leads; ISR write answers lost (the shell
//! retries the same conditional write and gets a conflict).
//!
//! Checked on every event: (1) every acknowledged record is, at its offset, in the log of
//! every member of the partition's ISR in ZooKeeper (so in the log of any leader the controller
//! can elect), when it is acknowledged, when the ISR gains a member, and whenever an ISR
//! member's log shrinks (truncation, crash); (2) any two replicas hold the same records below
//! the smaller of their high watermarks (checked incrementally against the agreed prefix); a
//! follower never truncates below its own HW; (3) one leader per (partition, leader epoch)
//! over the znode history, and one broker process per epoch over the Leader cores created;
//! (4) a leader's HW never decreases in its term and stays within its log. At quiescence (no
//! faults, every broker up): each partition has a leader with every broker in its ISR, all
//! logs are identical, every HW equals the log end, every acknowledged record is in every
//! log, and every epoch cache matches its log.
//!
//! A deposed leader that has not learned it yet may still acknowledge (the `stale_leader_acks`
//! count): only records its followers, the new leader among them, reported holding before
//! they moved on, so (1) holds for them too.
//!
//! The brokers' shell follows the rules the core's module doc asks for, among them: a broker
//! never leads an epoch it led in an earlier process (it keeps the highest durably). A broker
//! that leaves and joins again while a controller write is in flight gets a new epoch from
//! the core (`leader_left`), so joins are delivered as they happen.
//!
//! `REPLICA_SIM_SEEDS=<n>` runs more seeds, `REPLICA_SIM_SEED=<n>` replays one and
//! `REPLICA_SIM_TRACE=1` prints what happens in it.

use super::*;
use crate::cluster::controller::{
    Controller, ControllerConfig, Event, LeaderAndIsr, Output, TopicPartition, NO_LEADER,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const SEEDS: u64 = 500;
/// Ticks of random faults and produces per seed; then no faults until everything converges.
const CHAOS_TICKS: u64 = 400;
const DRAIN_TICKS_MAX: u64 = 3_000;
const MS_PER_TICK: u64 = 10;
const LAG_TIME_MAX_MS: u64 = 200;
/// A crashed or paused broker's ZooKeeper registration outlives it by this much.
const SESSION_TICKS: u64 = 12;
const MIN_INSYNC: usize = 2;
const FETCH_RECORDS_MAX: usize = 4;
/// A follower with no answer for this long fetches again (the old request may still arrive).
const FETCH_TIMEOUT_TICKS: u64 = 15;
const TOPIC: &str = "t";

// ----- deterministic randomness: `super::super::sim_rng::Rng` (shared) -------------------

use crate::cluster::sim_rng::Rng;

// ----- the simulated world ----------------------------------------------------------------

/// What survives a process crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Only what the log's writes completed (flush never/interval: the page cache survives a
    /// process crash, the appender's buffers do not).
    Written,
    /// Everything appended.
    All,
}

/// A record: (leader epoch, value). Values are unique per seed.
type Rec = (i32, u64);

/// An acks=all append waiting at a leader.
#[derive(Debug)]
struct Ack {
    offset: usize,
    value: u64,
}

enum Role {
    /// No leader known, or offline.
    Idle,
    Leading {
        core: Leader,
        acks: Vec<Ack>,
        /// The controller epoch of the state last read (written back with ISR changes).
        controller_epoch: i32,
    },
    Following {
        leader: BrokerId,
        epoch: i32,
        /// The fetch in flight: (sequence, sent at). Answers to any other are stale.
        in_flight: Option<(u64, u64)>,
        next_fetch: u64,
    },
}

/// One broker's copy of one partition.
struct Replica {
    log: Vec<Rec>,
    /// The written prefix.
    written: usize,
    /// Writes in flight: (due tick, end), ends increasing; they complete in order.
    writes: VecDeque<(u64, usize)>,
    cache: EpochCache,
    hw: i64,
    /// The HW as last checkpointed (what a restart finds).
    checkpoint: i64,
    role: Role,
    /// The newest state znode version acted on.
    seen_version: i32,
    /// The newest epoch any process of this broker led, kept durably (written before it acts
    /// as leader, kept across crashes).
    led_epoch: i32,
}

impl Replica {
    fn new() -> Replica {
        Replica {
            log: Vec::new(),
            written: 0,
            writes: VecDeque::new(),
            cache: EpochCache::default(),
            hw: 0,
            checkpoint: 0,
            role: Role::Idle,
            seen_version: -1,
            led_epoch: -1,
        }
    }

    fn end(&self) -> i64 {
        self.log.len() as i64
    }
}

struct Broker {
    up: bool,
    /// Messages for an older process are dropped.
    incarnation: u64,
    /// Paused (SIGSTOP) until this tick.
    paused_until: Option<u64>,
    /// The ZooKeeper session of a stopped or paused broker ends at this tick.
    session_ends: Option<u64>,
    parts: Vec<Replica>,
}

impl Broker {
    fn running(&self, now: u64) -> bool {
        self.up && self.paused_until.is_none_or(|t| t <= now)
    }
}

#[derive(Debug, Clone)]
enum Body {
    Fetch {
        from: BrokerId,
        from_incarnation: u64,
        p: usize,
        seq: u64,
        fetch_offset: i64,
        current_leader_epoch: i32,
        last_fetched_epoch: i32,
    },
    /// `answer` None: the broker does not lead the partition (NOT_LEADER_OR_FOLLOWER).
    FetchReply {
        p: usize,
        seq: u64,
        answer: Option<FetchAnswer>,
        records: Vec<Rec>,
    },
    Produce {
        p: usize,
        value: u64,
    },
    /// A watch on the state znode fired: read it.
    StateChanged {
        p: usize,
    },
    IsrResult {
        p: usize,
        epoch: i32,
        /// Ok((isr, new version)) or Err(()) for a conflict.
        result: Result<(Vec<BrokerId>, i32), ()>,
    },
}

struct Msg {
    due: u64,
    to: BrokerId,
    /// Some: for that process only (a session's answers and watches); None: whichever runs.
    incarnation: Option<u64>,
    body: Body,
}

/// A leader's conditional write of the state znode, on its way.
struct IsrWrite {
    due: u64,
    broker: BrokerId,
    incarnation: u64,
    p: usize,
    expected_version: i32,
    state: LeaderAndIsr,
}

struct Znode {
    state: LeaderAndIsr,
    version: i32,
}

/// The controller core's operations on one partition's znode, FIFO as a session is.
enum Flight {
    Exec(Output),
    Deliver(Event),
}

struct ControllerShell {
    core: Controller,
    chans: Vec<VecDeque<(u64, Flight)>>,
    /// The /brokers/ids watch fired: at this tick the shell reads the children.
    watch_due: Option<u64>,
    /// Live brokers as last delivered, with their registration (czxid).
    told_live: BTreeMap<BrokerId, u64>,
    /// Restarted brokers whose join waits until the controller has nothing in flight.
    held_joins: BTreeSet<BrokerId>,
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    acked: u64,
    not_enough_replicas: u64,
    not_enough_replicas_after_append: u64,
    not_leader: u64,
    stale_leader_appends: u64,
    stale_leader_acks: u64,
    deposed_leaders: u64,
    elections: u64,
    isr_shrinks: u64,
    isr_expansions: u64,
    isr_conflicts: u64,
    isr_replies_lost: u64,
    diverging: u64,
    truncated_records: u64,
    crashes: u64,
    crash_lost_records: u64,
    restarts_with_lagging_hw: u64,
    pauses_expired: u64,
    fenced_fetches: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.acked += o.acked;
        self.not_enough_replicas += o.not_enough_replicas;
        self.not_enough_replicas_after_append += o.not_enough_replicas_after_append;
        self.not_leader += o.not_leader;
        self.stale_leader_appends += o.stale_leader_appends;
        self.stale_leader_acks += o.stale_leader_acks;
        self.deposed_leaders += o.deposed_leaders;
        self.elections += o.elections;
        self.isr_shrinks += o.isr_shrinks;
        self.isr_expansions += o.isr_expansions;
        self.isr_conflicts += o.isr_conflicts;
        self.isr_replies_lost += o.isr_replies_lost;
        self.diverging += o.diverging;
        self.truncated_records += o.truncated_records;
        self.crashes += o.crashes;
        self.crash_lost_records += o.crash_lost_records;
        self.restarts_with_lagging_hw += o.restarts_with_lagging_hw;
        self.pauses_expired += o.pauses_expired;
        self.fenced_fetches += o.fenced_fetches;
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: u64,
    trace: bool,
    durability: Durability,
    /// Index = broker id - 1.
    brokers: Vec<Broker>,
    replicas: Vec<BrokerId>,
    partitions: usize,
    /// /brokers/ids: broker -> czxid of its registration.
    live: BTreeMap<BrokerId, u64>,
    /// The czxid of the last registration.
    zxid: u64,
    states: Vec<Option<Znode>>,
    controller: ControllerShell,
    msgs: Vec<Msg>,
    isr_writes: Vec<IsrWrite>,
    next_value: u64,
    next_seq: u64,
    /// Per partition: acknowledged (offset, value).
    acked: Vec<Vec<(usize, u64)>>,
    /// Per partition: the prefix every replica agrees on below its HW.
    agreed: Vec<Vec<Rec>>,
    /// (partition, leader epoch) -> leader, over the znode history.
    epoch_leaders: BTreeMap<(usize, i32), BrokerId>,
    /// (partition, leader epoch) -> the one process (broker, incarnation) that led it.
    epoch_cores: BTreeMap<(usize, i32), (BrokerId, u64)>,
    stats: Stats,
}

fn tp(p: usize) -> TopicPartition {
    TopicPartition::new(TOPIC, p as i32)
}

impl Sim {
    fn new(seed: u64, trace: bool) -> Sim {
        let mut rng = Rng(seed);
        let n: BrokerId = if rng.per_mille(500) { 3 } else { 5 };
        let partitions = rng.range(1, 2) as usize;
        let durability = if seed % 2 == 0 {
            Durability::Written
        } else {
            Durability::All
        };
        let replicas: Vec<BrokerId> = (1..=n).collect();
        let mut sim = Sim {
            seed,
            rng,
            now: 0,
            trace,
            durability,
            brokers: (0..n)
                .map(|_| Broker {
                    up: true,
                    incarnation: 0,
                    paused_until: None,
                    session_ends: None,
                    parts: (0..partitions).map(|_| Replica::new()).collect(),
                })
                .collect(),
            live: replicas.iter().map(|&b| (b, b as u64)).collect(),
            zxid: n as u64,
            replicas,
            partitions,
            states: (0..partitions).map(|_| None).collect(),
            controller: ControllerShell {
                core: Controller::new(1, ControllerConfig::default()),
                chans: (0..partitions).map(|_| VecDeque::new()).collect(),
                watch_due: None,
                told_live: BTreeMap::new(),
                held_joins: BTreeSet::new(),
            },
            msgs: Vec::new(),
            isr_writes: Vec::new(),
            next_value: 1,
            next_seq: 1,
            acked: vec![Vec::new(); partitions],
            agreed: vec![Vec::new(); partitions],
            epoch_leaders: BTreeMap::new(),
            epoch_cores: BTreeMap::new(),
            stats: Stats::default(),
        };
        sim.trace(|| format!("{n} brokers, {partitions} partitions, {durability:?}"));
        let assigned = Event::TopicAssigned {
            topic: TOPIC.into(),
            replicas: (0..partitions)
                .map(|p| (p as i32, sim.replicas.clone()))
                .collect(),
            unclean_leader_election: None,
            reassignments: BTreeMap::new(),
        };
        if sim.rng.per_mille(500) {
            sim.deliver_live();
            sim.step_controller(assigned);
        } else {
            sim.step_controller(assigned);
            sim.controller.watch_due = Some(sim.rng.range(1, 5));
        }
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

    fn now_ms(&self) -> u64 {
        self.now * MS_PER_TICK
    }

    fn broker(&self, b: BrokerId) -> &Broker {
        &self.brokers[(b - 1) as usize]
    }

    fn broker_mut(&mut self, b: BrokerId) -> &mut Broker {
        &mut self.brokers[(b - 1) as usize]
    }

    fn replica(&mut self, b: BrokerId, p: usize) -> &mut Replica {
        &mut self.brokers[(b - 1) as usize].parts[p]
    }

    fn send(&mut self, delay: u64, to: BrokerId, incarnation: Option<u64>, body: Body) {
        self.msgs.push(Msg {
            due: self.now + delay,
            to,
            incarnation,
            body,
        });
    }

    /// Fetch traffic: delayed 1..=5 ticks (so reordered), sometimes lost or duplicated.
    fn send_lossy(&mut self, to: BrokerId, incarnation: Option<u64>, body: Body) {
        if self.rng.per_mille(40) {
            return;
        }
        if self.rng.per_mille(40) {
            let d = self.rng.range(1, 8);
            self.send(d, to, incarnation, body.clone());
        }
        let d = self.rng.range(1, 5);
        self.send(d, to, incarnation, body);
    }

    // ----- ZooKeeper and the controller ---------------------------------------------------

    fn watch_live(&mut self) {
        if self.controller.watch_due.is_none() {
            self.controller.watch_due = Some(self.now + self.rng.range(1, 4));
        }
    }

    fn controller_busy(&self) -> bool {
        self.controller.chans.iter().any(|c| !c.is_empty())
    }

    fn deliver_live(&mut self) {
        let current = self.live.clone();
        // A broker registered anew since the last read is reported leaving, then joining.
        let bounced: Vec<BrokerId> = current
            .iter()
            .filter(|(b, c)| self.controller.told_live.get(b).is_some_and(|t| t != *c))
            .map(|(b, _)| *b)
            .collect();
        if !bounced.is_empty() {
            let without: BTreeMap<BrokerId, u64> = current
                .iter()
                .filter(|(b, _)| !bounced.contains(b))
                .map(|(b, c)| (*b, *c))
                .collect();
            let set = without.keys().copied().collect();
            self.controller.told_live = without;
            self.step_controller(Event::LiveBrokers(set));
        }
        let set: BTreeSet<BrokerId> = current.keys().copied().collect();
        self.controller.told_live = current;
        self.step_controller(Event::LiveBrokers(set));
    }

    fn step_controller(&mut self, event: Event) {
        self.trace(|| format!("controller <- {event:?}"));
        for out in self.controller.core.step(event) {
            self.trace(|| format!("controller -> {out:?}"));
            let p = match &out {
                Output::CreateState { tp, .. }
                | Output::UpdateState { tp, .. }
                | Output::ReadState { tp } => tp.partition as usize,
                other => self.fail(format!("unexpected controller output {other:?}")),
            };
            let due = self.now + self.rng.range(0, 3);
            self.controller.chans[p].push_back((due, Flight::Exec(out)));
        }
    }

    fn run_controller_chan(&mut self, p: usize) {
        let Some((_, flight)) = self.controller.chans[p].pop_front() else {
            return;
        };
        match flight {
            Flight::Exec(op) => {
                let event = self.execute_controller_op(p, op);
                let due = self.now + self.rng.range(0, 3);
                self.controller.chans[p].push_front((due, Flight::Deliver(event)));
            }
            Flight::Deliver(event) => self.step_controller(event),
        }
    }

    fn execute_controller_op(&mut self, p: usize, op: Output) -> Event {
        match op {
            Output::ReadState { tp } => Event::StateRead {
                tp,
                state: self.states[p]
                    .as_ref()
                    .map(|z| (z.state.clone(), z.version)),
            },
            Output::CreateState { tp, state } => {
                if self.states[p].is_some() {
                    return Event::WriteConflict { tp };
                }
                self.commit(p, state, "controller");
                Event::WriteDone { tp, new_version: 0 }
            }
            Output::UpdateState {
                tp,
                state,
                expected_version,
            } => match &self.states[p] {
                Some(z) if z.version == expected_version => {
                    let new_version = self.commit(p, state, "controller");
                    Event::WriteDone { tp, new_version }
                }
                _ => Event::WriteConflict { tp },
            },
            other => self.fail(format!("not a ZooKeeper operation: {other:?}")),
        }
    }

    /// Writes the state znode (the version check was done) and fires the watches.
    fn commit(&mut self, p: usize, state: LeaderAndIsr, by: &str) -> i32 {
        let prev = self.states[p].as_ref().map(|z| z.state.clone());
        self.trace(|| format!("p{p}: {by} commits {state:?}"));
        self.check(!state.isr.is_empty(), || {
            format!("p{p}: empty ISR {state:?}")
        });
        self.check(
            state.leader == NO_LEADER || state.isr.contains(&state.leader),
            || format!("p{p}: leader outside the ISR: {state:?}"),
        );
        if let Some(prev) = &prev {
            self.check(state.leader_epoch >= prev.leader_epoch, || {
                format!("p{p}: leader epoch went back: {prev:?} -> {state:?}")
            });
            if state.leader != prev.leader && state.leader != NO_LEADER {
                self.stats.elections += 1;
                self.check(prev.isr.contains(&state.leader), || {
                    format!("p{p}: elected outside the ISR: {prev:?} -> {state:?}")
                });
            }
        }
        if state.leader != NO_LEADER {
            self.claim_epoch(p, state.leader_epoch, state.leader);
        }
        let version = match &self.states[p] {
            Some(z) => z.version + 1,
            None => 0,
        };
        self.states[p] = Some(Znode {
            state: state.clone(),
            version,
        });
        // (1) A new ISR member must already hold every acknowledged record.
        for &b in &state.isr {
            self.check_holds_acked(b, p, "joined the ISR");
        }
        for b in self.replicas.clone() {
            if self.broker(b).up {
                let incarnation = self.broker(b).incarnation;
                let d = self.rng.range(1, 6);
                self.send(d, b, Some(incarnation), Body::StateChanged { p });
            }
        }
        version
    }

    fn claim_epoch(&mut self, p: usize, epoch: i32, leader: BrokerId) {
        let had = *self.epoch_leaders.entry((p, epoch)).or_insert(leader);
        self.check(had == leader, || {
            format!("p{p}: two leaders for epoch {epoch}: {had} and {leader}")
        });
    }

    fn execute_isr_write(&mut self, w: IsrWrite) {
        let applies = self.states[w.p]
            .as_ref()
            .is_some_and(|z| z.version == w.expected_version);
        let result = if applies {
            let prev = &self.states[w.p].as_ref().expect("checked").state;
            self.check(
                prev.leader == w.state.leader && prev.leader_epoch == w.state.leader_epoch,
                || {
                    format!(
                        "p{}: leader write over a state not its own: {prev:?} -> {:?}",
                        w.p, w.state
                    )
                },
            );
            if w.state.isr.len() < prev.isr.len() {
                self.stats.isr_shrinks += 1;
            } else {
                self.stats.isr_expansions += 1;
            }
            let version = self.commit(w.p, w.state.clone(), &format!("leader {}", w.broker));
            self.notify_controller_read(w.p);
            if self.rng.per_mille(50) {
                // The answer is lost; the shell retries the same write, which now conflicts.
                self.stats.isr_replies_lost += 1;
                let due = self.now + self.rng.range(1, 4);
                self.isr_writes.push(IsrWrite { due, ..w });
                return;
            }
            Ok((w.state.isr.clone(), version))
        } else {
            self.stats.isr_conflicts += 1;
            Err(())
        };
        let d = self.rng.range(1, 4);
        let epoch = w.state.leader_epoch;
        self.send(
            d,
            w.broker,
            Some(w.incarnation),
            Body::IsrResult {
                p: w.p,
                epoch,
                result,
            },
        );
    }

    /// The ISR change notification: the controller reads the state again.
    fn notify_controller_read(&mut self, p: usize) {
        let due = self.now + self.rng.range(1, 5);
        self.controller.chans[p].push_back((due, Flight::Exec(Output::ReadState { tp: tp(p) })));
    }

    // ----- brokers ------------------------------------------------------------------------

    fn on_message(&mut self, to: BrokerId, body: Body) {
        match body {
            Body::Fetch {
                from,
                from_incarnation,
                p,
                seq,
                fetch_offset,
                current_leader_epoch,
                last_fetched_epoch,
            } => {
                let now_ms = self.now_ms();
                let r = self.replica(to, p);
                let log_end = r.end();
                let (answer, records, outs) = match &mut r.role {
                    Role::Leading { core, .. } => {
                        let (answer, outs) = core.follower_fetch(
                            from,
                            fetch_offset,
                            current_leader_epoch,
                            last_fetched_epoch,
                            &r.cache,
                            log_end,
                            now_ms,
                        );
                        let records = match answer {
                            FetchAnswer::Serve { .. } => {
                                let from = fetch_offset as usize;
                                let to = r.log.len().min(from + FETCH_RECORDS_MAX);
                                r.log.get(from..to).map(<[Rec]>::to_vec)
                            }
                            _ => Some(Vec::new()),
                        };
                        (Some(answer), records, outs)
                    }
                    _ => (None, Some(Vec::new()), Vec::new()),
                };
                let Some(records) = records else {
                    self.fail(format!(
                        "p{p}: served {from} at {fetch_offset} past the log end {log_end}"
                    ));
                };
                if matches!(
                    answer,
                    Some(FetchAnswer::FencedLeaderEpoch | FetchAnswer::UnknownLeaderEpoch)
                ) {
                    self.stats.fenced_fetches += 1;
                }
                self.leader_sync(to, p, outs);
                self.send_lossy(
                    from,
                    Some(from_incarnation),
                    Body::FetchReply {
                        p,
                        seq,
                        answer,
                        records,
                    },
                );
            }
            Body::FetchReply {
                p,
                seq,
                answer,
                records,
            } => self.on_fetch_reply(to, p, seq, answer, records),
            Body::Produce { p, value } => self.on_produce(to, p, value),
            Body::StateChanged { p } => self.on_state_changed(to, p),
            Body::IsrResult { p, epoch, result } => {
                let now_ms = self.now_ms();
                let outs = match &mut self.replica(to, p).role {
                    Role::Leading { core, .. } if core.epoch() == epoch => match result {
                        Ok((isr, version)) => core.isr_written(isr, version, now_ms),
                        Err(()) => {
                            core.isr_conflict();
                            Vec::new()
                        }
                    },
                    _ => return,
                };
                self.leader_sync(to, p, outs);
            }
        }
    }

    /// How long an append takes to be written: mostly quick, sometimes a stall.
    fn write_ticks(&mut self) -> u64 {
        if self.rng.per_mille(50) {
            self.rng.range(5, 25)
        } else {
            self.rng.range(0, 4)
        }
    }

    fn on_produce(&mut self, b: BrokerId, p: usize, value: u64) {
        let current = self.states[p].as_ref().map(|z| z.state.clone());
        let r = self.replica(b, p);
        let Role::Leading { core, acks, .. } = &mut r.role else {
            self.stats.not_leader += 1;
            return;
        };
        if core.check_min_isr(MIN_INSYNC).is_err() {
            self.stats.not_enough_replicas += 1;
            return;
        }
        let epoch = core.epoch();
        let offset = r.log.len();
        debug_assert_eq!(r.cache.latest_epoch(), Some(epoch));
        r.log.push((epoch, value));
        acks.push(Ack { offset, value });
        let end = r.log.len();
        let due = self.now + self.write_ticks();
        self.replica(b, p).writes.push_back((due, end));
        if current.is_some_and(|s| s.leader != b || s.leader_epoch != epoch) {
            self.stats.stale_leader_appends += 1;
        }
        self.trace(|| format!("b{b} p{p}: append {value} at {offset} (epoch {epoch})"));
    }

    fn on_state_changed(&mut self, b: BrokerId, p: usize) {
        let Some(z) = &self.states[p] else {
            return;
        };
        let (state, version) = (z.state.clone(), z.version);
        let now_ms = self.now_ms();
        let r = self.replica(b, p);
        if version <= r.seen_version {
            return;
        }
        r.seen_version = version;
        if let Role::Leading {
            core,
            controller_epoch,
            ..
        } = &mut r.role
        {
            *controller_epoch = state.controller_epoch;
            if core.state_read(
                state.leader,
                state.leader_epoch,
                state.isr.clone(),
                version,
                now_ms,
            ) {
                self.leader_sync(b, p, Vec::new());
                return;
            }
            self.stats.deposed_leaders += 1;
            self.trace(|| format!("b{b} p{p}: no longer leads ({state:?})"));
            self.replica(b, p).role = Role::Idle;
        }
        let now = self.now;
        let r = self.replica(b, p);
        if state.leader == b && state.leader_epoch <= r.led_epoch {
            // An epoch an earlier process of this broker led (a write the controller decided
            // before it saw that process go): leading it again would put two different
            // batches at one (offset, epoch). The controller, seeing the broker leave and
            // join, moves the leadership to a new epoch.
            r.role = Role::Idle;
        } else if state.leader == b {
            self.become_leader(b, p, &state, version);
        } else if state.leader == NO_LEADER {
            r.role = Role::Idle;
        } else {
            let same = matches!(r.role, Role::Following { leader, epoch, .. }
                if leader == state.leader && epoch == state.leader_epoch);
            if !same {
                r.role = Role::Following {
                    leader: state.leader,
                    epoch: state.leader_epoch,
                    in_flight: None,
                    next_fetch: now,
                };
            }
        }
    }

    fn become_leader(&mut self, b: BrokerId, p: usize, state: &LeaderAndIsr, version: i32) {
        self.claim_epoch(p, state.leader_epoch, b);
        let process = (b, self.broker(b).incarnation);
        let had = *self
            .epoch_cores
            .entry((p, state.leader_epoch))
            .or_insert(process);
        self.check(had == process, || {
            format!(
                "p{p}: epoch {} led by two processes: {had:?} and {process:?}",
                state.leader_epoch
            )
        });
        let now_ms = self.now_ms();
        let replicas = self.replicas.clone();
        let r = self.replica(b, p);
        r.led_epoch = state.leader_epoch;
        let mut core = Leader::new(
            b,
            state.leader_epoch,
            replicas,
            state.isr.clone(),
            version,
            state.controller_epoch,
            r.end(),
            r.hw,
            now_ms,
            &mut r.cache,
            LeaderConfig {
                replica_lag_time_max_ms: LAG_TIME_MAX_MS,
            },
        );
        let outs = core.local_written(r.written as i64, now_ms);
        r.role = Role::Leading {
            core,
            acks: Vec::new(),
            controller_epoch: state.controller_epoch,
        };
        let epoch = state.leader_epoch;
        self.trace(|| format!("b{b} p{p}: leads epoch {epoch}"));
        self.leader_sync(b, p, outs);
    }

    /// Carries out a leader's outputs, checks its HW, and answers the acks it settles.
    fn leader_sync(&mut self, b: BrokerId, p: usize, outs: Vec<LeaderOutput>) {
        let incarnation = self.broker(b).incarnation;
        let r = self.replica(b, p);
        let Role::Leading {
            core,
            acks,
            controller_epoch,
        } = &mut r.role
        else {
            return;
        };
        let (hw, epoch, cepoch) = (core.high_watermark(), core.epoch(), *controller_epoch);
        let log_end = r.log.len() as i64;
        let mut writes = Vec::new();
        let mut bad_hw = None;
        for o in outs {
            match o {
                LeaderOutput::WriteIsr {
                    isr,
                    expected_version,
                } => writes.push((isr, expected_version)),
                LeaderOutput::HighWatermark(h) if h > hw => bad_hw = Some(h),
                LeaderOutput::HighWatermark(_) => {}
            }
        }
        // (4) Within the term the HW only grows, and stays within the log.
        let before = r.hw;
        let mut settled = Vec::new();
        let mut after_append = 0;
        acks.retain(|a| match core.ack_state(a.offset as i64 + 1, MIN_INSYNC) {
            None => true,
            Some(Ok(())) => {
                settled.push((a.offset, a.value));
                false
            }
            Some(Err(_)) => {
                after_append += 1;
                false
            }
        });
        r.hw = hw;
        if let Some(h) = bad_hw {
            self.fail(format!(
                "b{b} p{p}: HighWatermark({h}) above the core's {hw}"
            ));
        }
        self.check(hw >= before, || {
            format!("b{b} p{p}: leader HW went back from {before} to {hw}")
        });
        self.check(hw <= log_end, || {
            format!("b{b} p{p}: leader HW {hw} above its log end {log_end}")
        });
        self.stats.not_enough_replicas_after_append += after_append;
        self.hw_advanced(b, p, before);
        for (offset, value) in settled {
            self.acknowledge(b, p, epoch, offset, value);
        }
        for (isr, expected_version) in writes {
            let due = self.now + self.rng.range(1, 4);
            self.trace(|| format!("b{b} p{p}: proposes ISR {isr:?} at version {expected_version}"));
            self.isr_writes.push(IsrWrite {
                due,
                broker: b,
                incarnation,
                p,
                expected_version,
                state: LeaderAndIsr {
                    leader: b,
                    leader_epoch: epoch,
                    isr,
                    controller_epoch: cepoch,
                },
            });
        }
    }

    fn acknowledge(&mut self, b: BrokerId, p: usize, epoch: i32, offset: usize, value: u64) {
        self.trace(|| format!("b{b} p{p}: acks {value} at {offset} (epoch {epoch})"));
        self.stats.acked += 1;
        let rec = self.replica(b, p).log.get(offset).copied();
        self.check(rec.is_some_and(|(_, v)| v == value), || {
            format!("b{b} p{p}: acked {value} at {offset} but holds {rec:?}")
        });
        self.acked[p].push((offset, value));
        let (isr, current) = self.states[p]
            .as_ref()
            .map(|z| {
                (
                    z.state.isr.clone(),
                    z.state.leader == b && z.state.leader_epoch == epoch,
                )
            })
            .unwrap_or_default();
        if !current {
            // Deposed without knowing yet: safe only if the new ISR holds it, checked below.
            self.stats.stale_leader_acks += 1;
            self.trace(|| {
                format!("p{p}: b{b} acks {value} at {offset} after losing epoch {epoch}")
            });
        }
        for m in isr {
            self.check_holds_acked(m, p, "acknowledged");
        }
    }

    /// (1) Broker `b`, an ISR member, holds every acknowledged record of `p`.
    fn check_holds_acked(&self, b: BrokerId, p: usize, when: &str) {
        let in_isr = self.states[p]
            .as_ref()
            .is_some_and(|z| z.state.isr.contains(&b));
        if !in_isr {
            return;
        }
        let log = &self.broker(b).parts[p].log;
        for &(offset, value) in &self.acked[p] {
            let rec = log.get(offset);
            self.check(rec.is_some_and(|&(_, v)| v == value), || {
                format!(
                    "p{p}: acknowledged {value} at {offset} missing from ISR member {b} \
                     ({when}): it holds {rec:?}, log end {}",
                    log.len()
                )
            });
        }
    }

    /// (2) After `b`'s HW moved up from `from`: its log below the HW agrees with every other.
    fn hw_advanced(&mut self, b: BrokerId, p: usize, from: i64) {
        let r = &self.brokers[(b - 1) as usize].parts[p];
        let (from, to) = (from.max(0) as usize, r.hw.max(0) as usize);
        self.check(to <= r.log.len(), || {
            format!("b{b} p{p}: HW {to} above the log end {}", r.log.len())
        });
        for offset in from..to {
            let rec = r.log[offset];
            match self.agreed[p].get(offset) {
                Some(&agreed) => self.check(agreed == rec, || {
                    format!(
                        "p{p}: b{b} holds {rec:?} at {offset} below its HW {to}, \
                         another replica {agreed:?} below its own"
                    )
                }),
                None => self.agreed[p].push(rec),
            }
        }
    }

    fn on_fetch_reply(
        &mut self,
        b: BrokerId,
        p: usize,
        seq: u64,
        answer: Option<FetchAnswer>,
        records: Vec<Rec>,
    ) {
        let now = self.now;
        let r = self.replica(b, p);
        let Role::Following {
            in_flight,
            next_fetch,
            epoch,
            ..
        } = &mut r.role
        else {
            return;
        };
        if in_flight.is_none_or(|(s, _)| s != seq) {
            return; // a duplicate, or the answer to a fetch given up on
        }
        *in_flight = None;
        let known_epoch = *epoch;
        match answer {
            None
            | Some(
                FetchAnswer::FencedLeaderEpoch
                | FetchAnswer::UnknownLeaderEpoch
                | FetchAnswer::NotAReplica,
            ) => {
                *next_fetch = now + 3;
            }
            Some(FetchAnswer::Serve { high_watermark }) => {
                *next_fetch = if records.is_empty() { now + 2 } else { now };
                for &(e, v) in &records {
                    if e > known_epoch {
                        self.fail(format!(
                            "b{b} p{p}: got a batch of epoch {e} from the leader of {known_epoch}"
                        ));
                    }
                    let r = self.replica(b, p);
                    if r.cache.latest_epoch() != Some(e) {
                        r.cache.assign(e, r.end());
                    }
                    r.log.push((e, v));
                }
                let r = self.replica(b, p);
                if !records.is_empty() {
                    let end = r.log.len();
                    let due = now + self.write_ticks();
                    self.replica(b, p).writes.push_back((due, end));
                }
                let r = self.replica(b, p);
                let before = r.hw;
                r.hw = follower_high_watermark(r.hw, high_watermark, r.end());
                self.hw_advanced(b, p, before);
            }
            Some(FetchAnswer::Diverging {
                epoch,
                end_offset,
                high_watermark,
            }) => {
                *next_fetch = now;
                self.stats.diverging += 1;
                let r = self.replica(b, p);
                let to = truncation_offset(&r.cache, epoch, end_offset, r.end());
                let hw = r.hw;
                self.check(to >= hw, || {
                    format!("b{b} p{p}: truncates to {to}, below its HW {hw} (diverging {epoch}@{end_offset})")
                });
                self.truncate(b, p, to as usize);
                let r = self.replica(b, p);
                let before = r.hw;
                r.hw = follower_high_watermark(r.hw, high_watermark, r.end());
                self.hw_advanced(b, p, before);
            }
        }
    }

    fn truncate(&mut self, b: BrokerId, p: usize, to: usize) {
        let r = self.replica(b, p);
        let cut = r.log.len().saturating_sub(to);
        r.log.truncate(to);
        r.cache.truncate_from_end(to as i64);
        r.written = r.written.min(to);
        for w in r.writes.iter_mut() {
            w.1 = w.1.min(to);
        }
        r.hw = r.hw.min(to as i64);
        self.stats.truncated_records += cut as u64;
        if cut > 0 {
            self.trace(|| format!("b{b} p{p}: truncated {cut} to {to}"));
        }
        self.check_holds_acked(b, p, "after truncating");
    }

    fn send_fetch(&mut self, b: BrokerId, p: usize) {
        let now = self.now;
        let incarnation = self.broker(b).incarnation;
        let seq = self.next_seq;
        let r = self.replica(b, p);
        let Role::Following {
            leader,
            epoch,
            in_flight,
            next_fetch,
        } = &mut r.role
        else {
            return;
        };
        if in_flight.is_some_and(|(_, sent)| now - sent < FETCH_TIMEOUT_TICKS)
            || now < *next_fetch
            || r.written < r.log.len()
        {
            return;
        }
        *in_flight = Some((seq, now));
        let (leader, epoch) = (*leader, *epoch);
        let body = Body::Fetch {
            from: b,
            from_incarnation: incarnation,
            p,
            seq,
            fetch_offset: r.end(),
            current_leader_epoch: epoch,
            last_fetched_epoch: r.cache.latest_epoch().unwrap_or(-1),
        };
        self.next_seq += 1;
        self.send_lossy(leader, None, body);
    }

    /// A broker's own work this tick: completed writes, the leader's tick, the next fetch.
    fn broker_work(&mut self, b: BrokerId) {
        let now_ms = self.now_ms();
        for p in 0..self.partitions {
            let now = self.now;
            let r = self.replica(b, p);
            let mut written = r.written;
            while r.writes.front().is_some_and(|&(due, _)| due <= now) {
                let (_, end) = r.writes.pop_front().expect("checked");
                written = written.max(end.min(r.log.len()));
            }
            let grew = written > r.written;
            r.written = written;
            let outs = match &mut r.role {
                Role::Leading { core, .. } => {
                    let mut outs = if grew {
                        core.local_written(written as i64, now_ms)
                    } else {
                        Vec::new()
                    };
                    outs.extend(core.tick(now_ms));
                    outs
                }
                _ => Vec::new(),
            };
            self.leader_sync(b, p, outs);
            self.send_fetch(b, p);
            if self.rng.per_mille(100) {
                let r = self.replica(b, p);
                r.checkpoint = r.hw;
            }
        }
    }

    // ----- faults -------------------------------------------------------------------------

    fn crash(&mut self, b: BrokerId) {
        self.stats.crashes += 1;
        let durability = self.durability;
        let session_ends = self.now + SESSION_TICKS;
        let broker = self.broker_mut(b);
        broker.up = false;
        broker.paused_until = None;
        broker.incarnation += 1;
        broker.session_ends = Some(session_ends);
        let mut lost = 0;
        for r in &mut broker.parts {
            r.role = Role::Idle;
            r.writes.clear();
            if durability == Durability::Written {
                lost += (r.log.len() - r.written) as u64;
                r.log.truncate(r.written);
            }
            // What a restart finds (and what the agreement check holds it to meanwhile).
            r.hw = r.checkpoint.min(r.end());
        }
        self.stats.crash_lost_records += lost;
        self.trace(|| format!("b{b} crashes, {lost} unwritten records lost"));
        for p in 0..self.partitions {
            self.check_holds_acked(b, p, "after a crash");
        }
    }

    fn restart(&mut self, b: BrokerId) {
        self.zxid += 1;
        let czxid = self.zxid;
        let broker = self.broker_mut(b);
        broker.up = true;
        broker.incarnation += 1;
        broker.session_ends = None;
        let incarnation = broker.incarnation;
        let mut lagging = 0;
        for r in &mut broker.parts {
            let mut cache = EpochCache::default();
            for (offset, &(e, _)) in r.log.iter().enumerate() {
                if cache.latest_epoch() != Some(e) {
                    cache.assign(e, offset as i64);
                }
            }
            r.cache = cache;
            r.written = r.log.len();
            r.writes.clear();
            r.role = Role::Idle;
            r.seen_version = -1;
            r.hw = r.checkpoint.min(r.end());
            if r.hw < r.end() {
                lagging += 1;
            }
        }
        self.stats.restarts_with_lagging_hw += lagging;
        self.trace(|| format!("b{b} restarts"));
        self.live.insert(b, czxid);
        self.watch_live();
        for p in 0..self.partitions {
            let d = self.rng.range(1, 3);
            self.send(d, b, Some(incarnation), Body::StateChanged { p });
        }
    }

    fn pause(&mut self, b: BrokerId) {
        let ticks = self.rng.range(3, 40);
        let until = self.now + ticks;
        let session_ends = self.now + SESSION_TICKS;
        self.trace(|| format!("b{b} paused for {ticks} ticks"));
        let broker = self.broker_mut(b);
        broker.paused_until = Some(until);
        if ticks > SESSION_TICKS {
            broker.session_ends = Some(session_ends);
        }
    }

    /// Paused brokers whose time is up run again; one whose session expired meanwhile
    /// registers anew and reads every state again (with the Leader cores it still has).
    fn resume(&mut self, b: BrokerId) {
        let broker = self.broker_mut(b);
        broker.paused_until = None;
        broker.session_ends = None;
        let incarnation = broker.incarnation;
        if !self.live.contains_key(&b) {
            self.stats.pauses_expired += 1;
            self.trace(|| format!("b{b} resumes with an expired session"));
            self.zxid += 1;
            let czxid = self.zxid;
            self.live.insert(b, czxid);
            self.watch_live();
            for p in 0..self.partitions {
                let d = self.rng.range(1, 8);
                self.send(d, b, Some(incarnation), Body::StateChanged { p });
            }
        }
    }

    fn chaos(&mut self) {
        let up: Vec<BrokerId> = self
            .replicas
            .iter()
            .copied()
            .filter(|&b| self.broker(b).up)
            .collect();
        let restartable: Vec<BrokerId> = self
            .replicas
            .iter()
            .copied()
            .filter(|&b| !self.broker(b).up && !self.live.contains_key(&b))
            .collect();
        if self.rng.per_mille(15) && (up.len() > 1 || self.rng.per_mille(200)) {
            if let Some(b) = self.rng.pick(&up) {
                self.crash(b);
            }
        }
        if self.rng.per_mille(60) {
            if let Some(b) = self.rng.pick(&restartable) {
                self.restart(b);
            }
        }
        if self.rng.per_mille(12) {
            let running: Vec<BrokerId> = up
                .iter()
                .copied()
                .filter(|&b| self.broker(b).running(self.now))
                .collect();
            if let Some(b) = self.rng.pick(&running) {
                self.pause(b);
            }
        }
        for p in 0..self.partitions {
            if self.rng.per_mille(400) {
                let value = self.next_value;
                self.next_value += 1;
                let leader = self.states[p]
                    .as_ref()
                    .map_or(NO_LEADER, |z| z.state.leader);
                let to = if leader != NO_LEADER && self.rng.per_mille(800) {
                    leader
                } else {
                    self.rng.pick(&self.replicas.clone()).expect("brokers")
                };
                let d = self.rng.range(1, 3);
                self.send(d, to, None, Body::Produce { p, value });
            }
            if self.rng.per_mille(20) {
                // A spurious watch: a broker reads a state nobody changed.
                if let Some(b) = self.rng.pick(&up) {
                    let incarnation = self.broker(b).incarnation;
                    self.send(1, b, Some(incarnation), Body::StateChanged { p });
                }
            }
        }
    }

    // ----- time ---------------------------------------------------------------------------

    fn tick(&mut self, chaos: bool) {
        self.now += 1;
        let now = self.now;
        if chaos {
            self.chaos();
        } else {
            // Quiescence: everyone comes back as soon as ZooKeeper lets it.
            for b in self.replicas.clone() {
                if !self.broker(b).up && !self.live.contains_key(&b) {
                    self.restart(b);
                }
            }
        }
        for b in self.replicas.clone() {
            let broker = self.broker(b);
            if broker.session_ends.is_some_and(|t| t <= now) {
                self.broker_mut(b).session_ends = None;
                if self.live.remove(&b).is_some() {
                    self.trace(|| format!("b{b}: session expired"));
                    self.watch_live();
                }
            }
            if self.broker(b).up && self.broker(b).paused_until.is_some_and(|t| t <= now) {
                self.resume(b);
            }
        }

        if !self.controller.held_joins.is_empty() && !self.controller_busy() {
            self.controller.held_joins.clear();
            self.watch_live();
        }
        if self.controller.watch_due.is_some_and(|t| t <= now) {
            self.controller.watch_due = None;
            self.deliver_live();
        }
        for p in 0..self.partitions {
            while self.controller.chans[p]
                .front()
                .is_some_and(|(due, _)| *due <= now)
            {
                self.run_controller_chan(p);
            }
        }

        let (due, later): (Vec<IsrWrite>, Vec<IsrWrite>) = std::mem::take(&mut self.isr_writes)
            .into_iter()
            .partition(|w| w.due <= now);
        self.isr_writes = later;
        for w in due {
            self.execute_isr_write(w);
        }

        // Messages for running processes, in a random order; those for paused ones wait.
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for m in std::mem::take(&mut self.msgs) {
            let broker = self.broker(m.to);
            if !broker.up || m.incarnation.is_some_and(|i| i != broker.incarnation) {
                continue;
            }
            if m.due <= now && broker.running(now) {
                ready.push(m);
            } else {
                waiting.push(m);
            }
        }
        self.msgs = waiting;
        self.rng.shuffle(&mut ready);
        for m in ready {
            // An earlier message of this tick may have crashed nothing, but check anyway.
            if self.broker(m.to).running(now) {
                self.on_message(m.to, m.body);
            }
        }

        let mut order = self.replicas.clone();
        self.rng.shuffle(&mut order);
        for b in order {
            if self.broker(b).running(now) {
                self.broker_work(b);
            }
        }
    }

    fn converged(&self) -> bool {
        let all: BTreeSet<BrokerId> = self.replicas.iter().copied().collect();
        if self.replicas.iter().any(|&b| {
            let broker = self.broker(b);
            !broker.running(self.now) || !self.live.contains_key(&b)
        }) {
            return false;
        }
        if !self.isr_writes.is_empty() || self.controller.chans.iter().any(|c| !c.is_empty()) {
            return false;
        }
        (0..self.partitions).all(|p| {
            let Some(z) = &self.states[p] else {
                return false;
            };
            let s = &z.state;
            if s.leader == NO_LEADER || s.isr.iter().copied().collect::<BTreeSet<_>>() != all {
                return false;
            }
            let leader = &self.broker(s.leader).parts[p];
            let Role::Leading { core, .. } = &leader.role else {
                return false;
            };
            core.epoch() == s.leader_epoch
                && core.high_watermark() == leader.end()
                && self.replicas.iter().all(|&b| {
                    let r = &self.broker(b).parts[p];
                    r.log == leader.log && r.hw == r.end() && r.written == r.log.len()
                })
        })
    }

    fn final_checks(&self) {
        for p in 0..self.partitions {
            for &b in &self.replicas {
                let r = &self.broker(b).parts[p];
                for &(offset, value) in &self.acked[p] {
                    self.check(r.log.get(offset).is_some_and(|&(_, v)| v == value), || {
                        format!("p{p}: acknowledged {value} at {offset} missing from b{b}")
                    });
                }
                let mut rebuilt = EpochCache::default();
                for (offset, &(e, _)) in r.log.iter().enumerate() {
                    if rebuilt.latest_epoch() != Some(e) {
                        rebuilt.assign(e, offset as i64);
                    }
                }
                // A leader's own epoch may have no batch yet.
                let with_batches: Vec<(i32, i64)> = r
                    .cache
                    .entries()
                    .iter()
                    .copied()
                    .filter(|&(_, start)| start < r.end())
                    .collect();
                self.check(with_batches == rebuilt.entries(), || {
                    format!(
                        "p{p}: b{b}'s cache {:?} does not match its log {rebuilt:?}",
                        r.cache
                    )
                });
            }
        }
    }
}

fn run_seed(seed: u64, trace: bool) -> (Stats, u64) {
    let mut sim = Sim::new(seed, trace);
    for _ in 0..CHAOS_TICKS {
        sim.tick(true);
    }
    let mut ticks = 0;
    while !sim.converged() {
        ticks += 1;
        if ticks > DRAIN_TICKS_MAX {
            let states: Vec<_> = sim
                .states
                .iter()
                .map(|z| z.as_ref().map(|z| (&z.state, z.version)))
                .collect();
            sim.fail(format!("no convergence: {states:?}"));
        }
        sim.tick(false);
    }
    sim.final_checks();
    (sim.stats, sim.now)
}

#[test]
fn replication_keeps_acknowledged_records_and_converges_under_faults() {
    let trace = std::env::var("REPLICA_SIM_TRACE").is_ok();
    let seeds: Vec<u64> = match std::env::var("REPLICA_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("REPLICA_SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("REPLICA_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(SEEDS);
            (0..n).collect()
        }
    };
    let mut total = Stats::default();
    let mut ticks = 0;
    for &seed in &seeds {
        match std::panic::catch_unwind(|| run_seed(seed, trace)) {
            Ok((stats, t)) => {
                total.add(&stats);
                ticks += t;
            }
            Err(panic) => {
                eprintln!(
                    "replica sim failed; replay with REPLICA_SIM_SEED={seed} \
                     REPLICA_SIM_TRACE=1 cargo test -p broker --lib cluster::replica::sim"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "replica sim: {} seeds, {ticks} ticks: {total:?}",
        seeds.len()
    );
    // A simulator that never reached a path proves nothing about it.
    if seeds.len() >= 100 {
        let t = total;
        for (what, n) in [
            ("acknowledged records", t.acked),
            ("NOT_ENOUGH_REPLICAS", t.not_enough_replicas),
            (
                "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
                t.not_enough_replicas_after_append,
            ),
            ("appends at a deposed leader", t.stale_leader_appends),
            ("deposed leaders", t.deposed_leaders),
            ("elections", t.elections),
            ("ISR shrinks", t.isr_shrinks),
            ("ISR expansions", t.isr_expansions),
            ("ISR conflicts", t.isr_conflicts),
            ("lost ISR replies", t.isr_replies_lost),
            ("diverging answers", t.diverging),
            ("truncated records", t.truncated_records),
            ("records lost in crashes", t.crash_lost_records),
            ("restarts with a lagging HW", t.restarts_with_lagging_hw),
            ("pauses past the session", t.pauses_expired),
            ("fenced fetches", t.fenced_fetches),
        ] {
            assert!(n > 0, "the simulation never exercised {what}: {t:?}");
        }
    }
}
