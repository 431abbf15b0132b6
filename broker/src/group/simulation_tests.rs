//! Randomised, seeded simulation of a group under churn: simulated consumers join, sync,
//! heartbeat, commit, crash, restart (static ones with the same instance id) and leave,
//! while appends are sometimes delayed or fail. Proves, for 60 seeds, that every parked
//! request is answered exactly once, that everyone answered for a generation is in the
//! leader's member list and gets exactly the assignment the leader sent for it, and that once
//! churn stops the live consumers converge to one Stable generation. A failing seed replays
//! exactly.

use super::config::GroupConfig;
use super::coordinator::{Append, GroupCoordinator, Outputs};
use super::error_code as ec;
use super::metadata::GroupState;
use super::requests::*;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};

const GROUP: &str = "sim";
const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 20_000;
const HEARTBEAT_MS: u64 = 3_000;
const STEP_MS: u64 = 100;

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    NeedJoin,
    Joining(RequestToken),
    Syncing(RequestToken, i32),
    Stable(i32),
    Leaving(RequestToken),
    Dead,
}

struct Client {
    member_id: String,
    instance: Option<String>,
    phase: Phase,
    next_heartbeat_ms: u64,
    heartbeat: Option<RequestToken>,
}

struct Sim {
    rng: StdRng,
    c: GroupCoordinator,
    now_ms: u64,
    next_token: RequestToken,
    issued: BTreeSet<RequestToken>,
    answers: HashMap<RequestToken, Response>,
    answered: BTreeSet<RequestToken>,
    held: Vec<Append>,
    clients: Vec<Client>,
    /// generation -> (leader, members in the leader's JoinGroup answer, as instance id for
    /// static members and member id for dynamic ones)
    leader_lists: BTreeMap<i32, (String, BTreeSet<String>)>,
    /// generation -> members answered NONE for it, named the same way
    joined: BTreeMap<i32, BTreeSet<String>>,
    next_instance: usize,
    token_instance: HashMap<RequestToken, Option<String>>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let cfg = GroupConfig {
            initial_rebalance_delay_ms: 3000,
            ..GroupConfig::default()
        };
        let mut c = GroupCoordinator::new(cfg, 0, 1, seed);
        c.finish_loading(0);
        Sim {
            rng: StdRng::seed_from_u64(seed),
            c,
            now_ms: 0,
            next_token: 0,
            issued: BTreeSet::new(),
            answers: HashMap::new(),
            answered: BTreeSet::new(),
            held: Vec::new(),
            clients: Vec::new(),
            leader_lists: BTreeMap::new(),
            joined: BTreeMap::new(),
            next_instance: 0,
            token_instance: HashMap::new(),
        }
    }

    fn token(&mut self) -> RequestToken {
        self.next_token += 1;
        self.issued.insert(self.next_token);
        self.next_token
    }

    fn absorb(&mut self, mut out: Outputs, churn: bool) {
        loop {
            for (t, r) in out.responses.drain(..) {
                assert!(
                    self.issued.contains(&t),
                    "answer to a token never issued: {t}"
                );
                assert!(self.answered.insert(t), "token {t} answered twice");
                if let Response::JoinGroup(j) = &r {
                    self.record_join(t, j);
                }
                self.answers.insert(t, r);
            }
            let appends: Vec<Append> = out.appends.drain(..).collect();
            if appends.is_empty() {
                break;
            }
            for a in appends {
                if churn && self.rng.gen_bool(0.2) {
                    self.held.push(a);
                } else {
                    self.c.append_completed(a.id, Ok(()), self.now_ms, &mut out);
                }
            }
        }
    }

    fn complete_held(&mut self, churn: bool) {
        let mut out = Outputs::default();
        while !self.held.is_empty() {
            let i = self.rng.gen_range(0..self.held.len());
            let a = self.held.swap_remove(i);
            let result = if churn && self.rng.gen_bool(0.1) {
                Err(ec::REQUEST_TIMED_OUT)
            } else {
                Ok(())
            };
            self.c.append_completed(a.id, result, self.now_ms, &mut out);
        }
        self.absorb(out, false);
    }

    fn spawn(&mut self, instance: Option<String>) {
        self.clients.push(Client {
            member_id: String::new(),
            instance,
            phase: Phase::NeedJoin,
            next_heartbeat_ms: 0,
            heartbeat: None,
        });
    }

    fn join(&mut self, i: usize) {
        let t = self.token();
        let cl = &self.clients[i];
        let req = JoinGroupRequest {
            group_id: GROUP.into(),
            member_id: cl.member_id.clone(),
            group_instance_id: cl.instance.clone(),
            protocol_type: "consumer".into(),
            protocols: vec![JoinProtocol {
                name: "range".into(),
                metadata: Bytes::from_static(b"topics"),
            }],
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            client_id: format!("c{i}"),
            client_host: "/127.0.0.1".into(),
            reason: None,
            require_known_member_id: true,
        };
        self.token_instance.insert(t, cl.instance.clone());
        self.clients[i].phase = Phase::Joining(t);
        let mut out = Outputs::default();
        self.c.join_group(t, req, self.now_ms, &mut out);
        self.absorb(out, true);
    }

    fn reset(&mut self, i: usize) {
        self.clients[i].member_id.clear();
        self.clients[i].phase = Phase::NeedJoin;
    }

    fn on_join(&mut self, i: usize, r: JoinGroupResponse) {
        match r.error_code {
            ec::NONE => {
                let g = r.generation_id;
                self.clients[i].member_id = r.member_id.clone();
                let assignments: Vec<SyncAssignment> =
                    if r.leader == r.member_id && !r.skip_assignment {
                        r.members
                            .iter()
                            .map(|m| SyncAssignment {
                                member_id: m.member_id.clone(),
                                assignment: Bytes::from(format!("{g}:{}", m.member_id)),
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                let t = self.token();
                self.clients[i].phase = Phase::Syncing(t, g);
                let req = SyncGroupRequest {
                    group_id: GROUP.into(),
                    generation_id: g,
                    member_id: r.member_id,
                    group_instance_id: self.clients[i].instance.clone(),
                    protocol_type: Some("consumer".into()),
                    protocol_name: Some("range".into()),
                    assignments,
                };
                let mut out = Outputs::default();
                self.c.sync_group(t, req, self.now_ms, &mut out);
                self.absorb(out, true);
            }
            ec::MEMBER_ID_REQUIRED => {
                self.clients[i].member_id = r.member_id;
                self.clients[i].phase = Phase::NeedJoin;
            }
            ec::FENCED_INSTANCE_ID => self.clients[i].phase = Phase::Dead,
            ec::REBALANCE_IN_PROGRESS => self.clients[i].phase = Phase::NeedJoin,
            _ => self.reset(i),
        }
    }

    fn on_sync(&mut self, i: usize, g: i32, r: SyncGroupResponse) {
        match r.error_code {
            ec::NONE => {
                let me = self.clients[i].member_id.clone();
                // A static member rejoining a stable group keeps the assignment its
                // instance had, given for the old member id of the same generation.
                let expected_prefix = format!("{g}:");
                assert!(
                    r.assignment.starts_with(expected_prefix.as_bytes()),
                    "assignment {:?} for generation {g}",
                    r.assignment
                );
                if self.clients[i].instance.is_none() {
                    assert_eq!(
                        r.assignment,
                        Bytes::from(format!("{g}:{me}")),
                        "wrong assignment"
                    );
                }
                self.clients[i].phase = Phase::Stable(g);
                self.clients[i].next_heartbeat_ms = self.now_ms + HEARTBEAT_MS;
            }
            ec::FENCED_INSTANCE_ID => self.clients[i].phase = Phase::Dead,
            ec::REBALANCE_IN_PROGRESS => self.clients[i].phase = Phase::NeedJoin,
            _ => self.reset(i),
        }
    }

    fn step_client(&mut self, i: usize, churn: bool) {
        if let Some(t) = self.clients[i].heartbeat {
            if let Some(Response::Heartbeat(h)) = self.answers.remove(&t) {
                self.clients[i].heartbeat = None;
                if let Phase::Stable(_) = self.clients[i].phase {
                    match h.error_code {
                        ec::NONE => {}
                        ec::REBALANCE_IN_PROGRESS => self.clients[i].phase = Phase::NeedJoin,
                        ec::FENCED_INSTANCE_ID => self.clients[i].phase = Phase::Dead,
                        _ => self.reset(i),
                    }
                }
            }
        }
        match self.clients[i].phase.clone() {
            Phase::Dead => {}
            Phase::NeedJoin => self.join(i),
            Phase::Joining(t) => match self.answers.remove(&t) {
                Some(Response::JoinGroup(r)) => self.on_join(i, r),
                Some(other) => panic!("join answered with {other:?}"),
                None => {}
            },
            Phase::Syncing(t, g) => match self.answers.remove(&t) {
                Some(Response::SyncGroup(r)) => self.on_sync(i, g, r),
                Some(other) => panic!("sync answered with {other:?}"),
                None => {}
            },
            Phase::Leaving(t) => {
                if self.answers.remove(&t).is_some() {
                    self.clients[i].phase = Phase::Dead;
                }
            }
            Phase::Stable(g) => {
                if self.now_ms >= self.clients[i].next_heartbeat_ms
                    && self.clients[i].heartbeat.is_none()
                {
                    self.clients[i].next_heartbeat_ms = self.now_ms + HEARTBEAT_MS;
                    let t = self.token();
                    self.clients[i].heartbeat = Some(t);
                    let req = HeartbeatRequest {
                        group_id: GROUP.into(),
                        generation_id: g,
                        member_id: self.clients[i].member_id.clone(),
                        group_instance_id: self.clients[i].instance.clone(),
                    };
                    let mut out = Outputs::default();
                    self.c.heartbeat(t, req, self.now_ms, &mut out);
                    self.absorb(out, churn);
                }
                if churn && self.rng.gen_bool(0.01) {
                    let t = self.token();
                    let req = OffsetCommitRequest {
                        group_id: GROUP.into(),
                        generation_id: g,
                        member_id: self.clients[i].member_id.clone(),
                        group_instance_id: self.clients[i].instance.clone(),
                        partitions: vec![OffsetCommitPartition {
                            topic: "t".into(),
                            partition: i as i32,
                            offset: self.now_ms as i64,
                            leader_epoch: -1,
                            metadata: None,
                            partition_exists: true,
                            commit_timestamp_ms: None,
                        }],
                    };
                    let mut out = Outputs::default();
                    self.c.offset_commit(t, req, self.now_ms, &mut out);
                    self.absorb(out, churn);
                }
            }
        }
    }

    fn leave(&mut self, i: usize) {
        let t = self.token();
        let req = LeaveGroupRequest {
            group_id: GROUP.into(),
            members: vec![LeavingMember {
                member_id: self.clients[i].member_id.clone(),
                group_instance_id: self.clients[i].instance.clone(),
                reason: None,
            }],
        };
        self.clients[i].phase = Phase::Leaving(t);
        let mut out = Outputs::default();
        self.c.leave_group(t, req, self.now_ms, &mut out);
        self.absorb(out, true);
    }

    fn churn(&mut self) {
        let r: f64 = self.rng.gen();
        let live: Vec<usize> = (0..self.clients.len())
            .filter(|i| self.clients[*i].phase != Phase::Dead)
            .collect();
        if r < 0.004 && live.len() < 8 {
            let instance = if self.rng.gen_bool(0.3) {
                self.next_instance += 1;
                Some(format!("inst-{}", self.next_instance))
            } else {
                None
            };
            self.spawn(instance);
        } else if r < 0.006 && !live.is_empty() {
            // Crash: the client just stops; its parked requests stay parked.
            let i = live[self.rng.gen_range(0..live.len())];
            self.clients[i].phase = Phase::Dead;
        } else if r < 0.007 && !live.is_empty() {
            let i = live[self.rng.gen_range(0..live.len())];
            if !self.clients[i].member_id.is_empty() {
                self.leave(i);
            }
        } else if r < 0.008 && !live.is_empty() {
            // A static member restarts: the old process dies, a new one comes with the
            // same instance id and no member id.
            let i = live[self.rng.gen_range(0..live.len())];
            if let Some(instance) = self.clients[i].instance.clone() {
                self.clients[i].phase = Phase::Dead;
                self.spawn(Some(instance));
            }
        }
    }

    fn step(&mut self, churn: bool) {
        self.now_ms += STEP_MS;
        let mut out = Outputs::default();
        self.c.tick(self.now_ms, &mut out);
        self.absorb(out, churn);
        if let Some(next) = self.c.next_deadline_ms() {
            assert!(next > self.now_ms, "a due timer survived tick");
        }
        if churn {
            self.churn();
            if self.rng.gen_bool(0.05) {
                self.complete_held(true);
            }
        } else {
            self.complete_held(false);
        }
        for i in 0..self.clients.len() {
            self.step_client(i, churn);
        }
    }

    /// Notes a successful JoinGroup answer as the coordinator sends it (the client may be
    /// dead and never read it). A static member that restarts takes its instance's place
    /// under a new member id without a rebalance, so static members are named by instance.
    fn record_join(&mut self, t: RequestToken, r: &JoinGroupResponse) {
        if r.error_code != ec::NONE {
            return;
        }
        let g = r.generation_id;
        let instance = self.token_instance.get(&t).cloned().flatten();
        let name = instance.unwrap_or(r.member_id.clone());
        self.joined.entry(g).or_default().insert(name);
        if r.leader == r.member_id && !r.skip_assignment {
            let list: BTreeSet<String> = r
                .members
                .iter()
                .map(|m| m.group_instance_id.clone().unwrap_or(m.member_id.clone()))
                .collect();
            if let Some((leader, prev)) = self.leader_lists.get(&g) {
                assert_eq!(
                    (leader, prev),
                    (&r.leader, &list),
                    "two different leader answers for generation {g}"
                );
            }
            self.leader_lists.insert(g, (r.leader.clone(), list));
        }
    }

    fn check_generations(&self) {
        for (g, members) in &self.joined {
            let (_, list) = self
                .leader_lists
                .get(g)
                .unwrap_or_else(|| panic!("generation {g} answered without a leader answer"));
            for m in members {
                assert!(
                    list.contains(m),
                    "member {m} of generation {g} missing from the leader's list"
                );
            }
        }
    }
}

/// Runs one seed; returns how many generations it went through and how many clients it had.
fn run(seed: u64) -> (i32, usize) {
    let mut sim = Sim::new(seed);
    for _ in 0..3 {
        sim.spawn(None);
    }
    sim.spawn(Some("inst-0".into()));
    // Churn for 5 simulated minutes.
    for _ in 0..3000 {
        sim.step(true);
    }
    // Then calm: the live consumers must converge to one stable generation.
    for _ in 0..1200 {
        sim.step(false);
    }
    sim.check_generations();
    let live: Vec<&Client> = sim
        .clients
        .iter()
        .filter(|c| c.phase != Phase::Dead)
        .collect();
    let gens: BTreeSet<i32> = live
        .iter()
        .map(|c| match c.phase {
            Phase::Stable(g) => g,
            ref p => panic!("seed {seed}: live client not stable after calm: {p:?}"),
        })
        .collect();
    if live.is_empty() {
        assert_eq!(
            sim.c.group_state(GROUP).map(|s| s.0),
            Some(GroupState::Empty),
            "seed {seed}"
        );
    } else {
        assert_eq!(
            gens.len(),
            1,
            "seed {seed}: live clients in several generations {gens:?}"
        );
        let (state, generation) = sim.c.group_state(GROUP).unwrap();
        assert_eq!(
            (state, Some(generation)),
            (GroupState::Stable, gens.first().copied()),
            "seed {seed}"
        );
        let d = sim.c.describe_groups(&[GROUP.to_owned()]);
        assert_eq!(
            d[0].members.len(),
            live.len(),
            "seed {seed}: members vs live clients"
        );
    }
    // Everyone crashes; after every timeout has run, nothing may still be parked.
    for c in &mut sim.clients {
        c.phase = Phase::Dead;
    }
    for _ in 0..(400_000 / STEP_MS) {
        sim.step(false);
    }
    let unanswered: Vec<&RequestToken> = sim.issued.difference(&sim.answered).collect();
    assert!(
        unanswered.is_empty(),
        "seed {seed}: never answered: {unanswered:?}"
    );
    assert_eq!(
        sim.c.group_state(GROUP).map(|s| s.0),
        Some(GroupState::Empty),
        "seed {seed}"
    );
    assert!(
        sim.c.group_timer_count() == 0,
        "seed {seed}: timers left behind"
    );
    let generations = sim.joined.keys().last().copied().unwrap_or(0);
    (generations, sim.clients.len())
}

#[test]
fn group_survives_churn_for_many_seeds() {
    let mut generations = 0;
    let mut clients = 0;
    for seed in 0..60 {
        let (g, c) = run(seed);
        generations += g;
        clients += c;
    }
    eprintln!("60 seeds: {generations} generations, {clients} clients");
    // The churn must really churn: many rebalances and many clients coming and going.
    assert!(generations > 60 * 5, "only {generations} generations");
    assert!(clients > 60 * 6, "only {clients} clients");
}
