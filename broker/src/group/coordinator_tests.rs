//! Scenario tests of the group coordinator: each drives the sans-IO core through a client
//! story (join storms, deaths mid-rebalance, late joiners, leader leaving, expiring sessions,
//! static rejoin, offset commits, restart by replay) with a fake clock and checks the
//! responses, states and records it produces.

use super::config::GroupConfig;
use super::coordinator::{Append, GroupCoordinator, Outputs};
use super::error_code as ec;
use super::metadata::GroupState;
use super::records::{OffsetsKey, OffsetsRecord};
use super::requests::*;
use bytes::Bytes;
use std::collections::HashMap;

const GROUP: &str = "g";
const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

/// A fake shell: numbers requests, collects responses, and (unless told otherwise) appends
/// records to an in-memory log and reports them durable at once.
struct Shell {
    c: GroupCoordinator,
    now_ms: u64,
    next_token: RequestToken,
    responses: HashMap<RequestToken, Response>,
    answered_twice: Vec<RequestToken>,
    log: Vec<OffsetsRecord>,
    hold_appends: bool,
    held: Vec<Append>,
}

fn config(delay_ms: u64) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: delay_ms,
        ..GroupConfig::default()
    }
}

fn protocols(names: &[&str]) -> Vec<JoinProtocol> {
    names
        .iter()
        .map(|n| JoinProtocol {
            name: (*n).to_owned(),
            metadata: Bytes::from(format!("sub-{n}")),
        })
        .collect()
}

fn join_req(member_id: &str, instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest {
        group_id: GROUP.to_owned(),
        member_id: member_id.to_owned(),
        group_instance_id: instance.map(str::to_owned),
        protocol_type: "consumer".to_owned(),
        protocols: protocols(&["range", "roundrobin"]),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        client_id: "client".to_owned(),
        client_host: "/127.0.0.1".to_owned(),
        reason: None,
        require_known_member_id: true,
    }
}

impl Shell {
    fn new(cfg: GroupConfig) -> Self {
        let mut c = GroupCoordinator::new(cfg, 0, 1, 42);
        c.finish_loading(0);
        Shell::with(c)
    }

    fn with(c: GroupCoordinator) -> Self {
        Shell {
            c,
            now_ms: 0,
            next_token: 1,
            responses: HashMap::new(),
            answered_twice: Vec::new(),
            log: Vec::new(),
            hold_appends: false,
            held: Vec::new(),
        }
    }

    fn absorb(&mut self, mut out: Outputs) {
        loop {
            for (t, r) in out.responses.drain(..) {
                if self.responses.insert(t, r).is_some() {
                    self.answered_twice.push(t);
                }
            }
            let appends: Vec<Append> = out.appends.drain(..).collect();
            if appends.is_empty() {
                break;
            }
            for a in appends {
                if self.hold_appends {
                    self.held.push(a);
                } else {
                    self.log.extend(a.records.iter().cloned());
                    self.c.append_completed(a.id, Ok(()), self.now_ms, &mut out);
                }
            }
        }
        assert!(
            self.answered_twice.is_empty(),
            "tokens answered twice: {:?}",
            self.answered_twice
        );
    }

    fn token(&mut self) -> RequestToken {
        self.next_token += 1;
        self.next_token
    }

    fn join(&mut self, req: JoinGroupRequest) -> RequestToken {
        let t = self.token();
        let mut out = Outputs::default();
        self.c.join_group(t, req, self.now_ms, &mut out);
        self.absorb(out);
        t
    }

    fn sync(
        &mut self,
        member_id: &str,
        generation_id: i32,
        assignments: &[(&str, &str)],
    ) -> RequestToken {
        let t = self.token();
        let req = SyncGroupRequest {
            group_id: GROUP.to_owned(),
            generation_id,
            member_id: member_id.to_owned(),
            group_instance_id: None,
            protocol_type: Some("consumer".to_owned()),
            protocol_name: None,
            assignments: assignments
                .iter()
                .map(|(m, a)| SyncAssignment {
                    member_id: (*m).to_owned(),
                    assignment: Bytes::from(a.to_string()),
                })
                .collect(),
        };
        let mut out = Outputs::default();
        self.c.sync_group(t, req, self.now_ms, &mut out);
        self.absorb(out);
        t
    }

    fn heartbeat_as(&mut self, member_id: &str, generation_id: i32, instance: Option<&str>) -> i16 {
        let t = self.token();
        let mut out = Outputs::default();
        let req = HeartbeatRequest {
            group_id: GROUP.to_owned(),
            generation_id,
            member_id: member_id.to_owned(),
            group_instance_id: instance.map(str::to_owned),
        };
        self.c.heartbeat(t, req, self.now_ms, &mut out);
        self.absorb(out);
        match self.take(t) {
            Some(Response::Heartbeat(h)) => h.error_code,
            other => panic!("heartbeat answered with {other:?}"),
        }
    }

    fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> i16 {
        self.heartbeat_as(member_id, generation_id, None)
    }

    fn leave(&mut self, members: &[(&str, Option<&str>)]) -> LeaveGroupResponse {
        let t = self.token();
        let req = LeaveGroupRequest {
            group_id: GROUP.to_owned(),
            members: members
                .iter()
                .map(|(m, i)| LeavingMember {
                    member_id: (*m).to_owned(),
                    group_instance_id: i.map(str::to_owned),
                    reason: None,
                })
                .collect(),
        };
        let mut out = Outputs::default();
        self.c.leave_group(t, req, self.now_ms, &mut out);
        self.absorb(out);
        match self.take(t) {
            Some(Response::LeaveGroup(r)) => r,
            other => panic!("leave answered with {other:?}"),
        }
    }

    fn commit(
        &mut self,
        member_id: &str,
        generation_id: i32,
        parts: &[(&str, i32, i64)],
    ) -> RequestToken {
        let t = self.token();
        let req = OffsetCommitRequest {
            group_id: GROUP.to_owned(),
            generation_id,
            member_id: member_id.to_owned(),
            group_instance_id: None,
            partitions: parts
                .iter()
                .map(|(topic, p, o)| OffsetCommitPartition {
                    topic: (*topic).to_owned(),
                    partition: *p,
                    offset: *o,
                    leader_epoch: 3,
                    metadata: Some("m".to_owned()),
                    partition_exists: *topic != "missing",
                    commit_timestamp_ms: None,
                })
                .collect(),
        };
        let mut out = Outputs::default();
        self.c.offset_commit(t, req, self.now_ms, &mut out);
        self.absorb(out);
        t
    }

    fn commit_codes(
        &mut self,
        member_id: &str,
        generation_id: i32,
        parts: &[(&str, i32, i64)],
    ) -> Vec<i16> {
        let t = self.commit(member_id, generation_id, parts);
        match self.take(t) {
            Some(Response::OffsetCommit(r)) => r.partitions.iter().map(|p| p.error_code).collect(),
            other => panic!("commit answered with {other:?}"),
        }
    }

    fn fetched(&self, topic: &str, partition: i32) -> i64 {
        let r = self.c.offset_fetch(&OffsetFetchRequest {
            group_id: GROUP.to_owned(),
            partitions: Some(vec![(topic.to_owned(), partition)]),
        });
        assert_eq!(r.error_code, ec::NONE);
        r.partitions[0].offset
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        let mut out = Outputs::default();
        self.c.tick(self.now_ms, &mut out);
        self.absorb(out);
    }

    /// Advances in 1 s steps, heartbeating for `alive` members of `generation` each step.
    fn advance_heartbeating(&mut self, ms: u64, alive: &[&str], generation: i32) {
        let mut left = ms;
        while left > 0 {
            let step = left.min(1000);
            self.advance(step);
            left -= step;
            for m in alive {
                self.heartbeat(m, generation);
            }
        }
    }

    /// Advances the clock until `t` is answered (joins in the initial delay extend it).
    fn wait_answer(&mut self, t: RequestToken) {
        while !self.responses.contains_key(&t) {
            assert!(
                self.now_ms <= 2 * REBALANCE_MS as u64,
                "token {t} never answered"
            );
            self.advance(500);
        }
    }

    fn take(&mut self, t: RequestToken) -> Option<Response> {
        self.responses.remove(&t)
    }

    fn join_result(&mut self, t: RequestToken) -> JoinGroupResponse {
        match self.take(t) {
            Some(Response::JoinGroup(r)) => r,
            other => panic!("join token {t} answered with {other:?}"),
        }
    }

    fn sync_result(&mut self, t: RequestToken) -> SyncGroupResponse {
        match self.take(t) {
            Some(Response::SyncGroup(r)) => r,
            other => panic!("sync token {t} answered with {other:?}"),
        }
    }

    fn state(&self) -> (GroupState, i32) {
        self.c.group_state(GROUP).expect("group exists")
    }

    /// The KIP-394 two-step first join: returns the member id and the parked token.
    fn join_new(&mut self) -> (String, RequestToken) {
        let t = self.join(join_req("", None));
        let r = self.join_result(t);
        assert_eq!(r.error_code, ec::MEMBER_ID_REQUIRED);
        assert!(
            r.member_id.starts_with("client-"),
            "member id {}",
            r.member_id
        );
        let id = r.member_id;
        let t = self.join(join_req(&id, None));
        (id, t)
    }

    /// Brings `n` dynamic members to a Stable generation; returns (ids, leader, generation).
    fn stable_group(&mut self, n: usize) -> (Vec<String>, String, i32) {
        let mut ids = Vec::new();
        let mut tokens = Vec::new();
        for _ in 0..n {
            let (id, t) = self.join_new();
            ids.push(id);
            tokens.push(t);
        }
        // Joins during the initial delay extend it (KIP-134): wait until the answer comes.
        while !self.responses.contains_key(&tokens[0]) {
            assert!(self.now_ms < REBALANCE_MS as u64, "join phase never ended");
            self.advance(500);
        }
        let mut leader = String::new();
        let mut generation = 0;
        for t in &tokens {
            let r = self.join_result(*t);
            assert_eq!(r.error_code, ec::NONE);
            leader = r.leader.clone();
            generation = r.generation_id;
        }
        self.sync_all(&ids, &leader, generation);
        (ids, leader, generation)
    }

    fn sync_all(&mut self, ids: &[String], leader: &str, generation: i32) {
        let assignments: Vec<(String, String)> = ids
            .iter()
            .map(|m| (m.clone(), format!("assign-{m}")))
            .collect();
        let refs: Vec<(&str, &str)> = assignments
            .iter()
            .map(|(m, a)| (m.as_str(), a.as_str()))
            .collect();
        let mut tokens = Vec::new();
        for m in ids.iter().filter(|m| *m != leader) {
            tokens.push((m.clone(), self.sync(m, generation, &[])));
        }
        tokens.push((leader.to_owned(), self.sync(leader, generation, &refs)));
        for (m, t) in tokens {
            let r = self.sync_result(t);
            assert_eq!(r.error_code, ec::NONE);
            assert_eq!(r.assignment, Bytes::from(format!("assign-{m}")));
        }
        assert_eq!(self.state(), (GroupState::Stable, generation));
    }
}

#[test]
fn lone_consumer_is_stable_after_the_initial_delay() {
    let mut s = Shell::new(config(3000));
    let (id, t) = s.join_new();
    assert_eq!(s.state(), (GroupState::PreparingRebalance, 0));
    s.advance(2999);
    assert!(
        s.take(t).is_none(),
        "answered before the initial delay ran out"
    );
    s.advance(1);
    let r = s.join_result(t);
    assert_eq!((r.error_code, r.generation_id), (ec::NONE, 1));
    assert_eq!(r.leader, id);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.members[0].metadata, Bytes::from("sub-range"));
    let st = s.sync(&id, 1, &[(&id, "a0")]);
    assert_eq!(s.sync_result(st).assignment, Bytes::from("a0"));
    assert_eq!(s.state(), (GroupState::Stable, 1));
    assert_eq!(s.heartbeat(&id, 1), ec::NONE);
    // The stored generation is in the log.
    assert!(s.log.iter().any(|r| matches!(
        OffsetsKey::decode(&r.key),
        Ok(OffsetsKey::GroupMetadata { .. })
    )));
}

#[test]
fn zero_initial_delay_completes_as_soon_as_everyone_joined() {
    let mut s = Shell::new(config(0));
    let (_, t) = s.join_new();
    assert_eq!(s.join_result(t).generation_id, 1);
}

#[test]
fn join_storm_lands_in_one_generation_bounded_by_the_rebalance_timeout() {
    let mut s = Shell::new(config(3000));
    let mut tokens = Vec::new();
    // 12 members arrive every 500 ms: each arrival extends the initial delay, but never
    // beyond the rebalance timeout.
    for _ in 0..12 {
        let (id, t) = s.join_new();
        tokens.push((id, t));
        s.advance(500);
    }
    // 6000 ms elapsed; still waiting (delay extended at 3000 and 6000).
    assert!(tokens.iter().all(|(_, t)| !s.responses.contains_key(t)));
    for _ in 0..60 {
        let (id, t) = s.join_new();
        tokens.push((id, t));
        s.advance(500);
        if s.responses.contains_key(&tokens[0].1) {
            break;
        }
    }
    assert!(
        s.now_ms <= REBALANCE_MS as u64,
        "join phase outlived the rebalance timeout"
    );
    let mut leaders = Vec::new();
    for (id, t) in &tokens {
        let r = s.join_result(*t);
        assert_eq!(
            (r.error_code, r.generation_id),
            (ec::NONE, 1),
            "member {id}"
        );
        leaders.push(r.leader.clone());
        if r.leader == *id {
            assert_eq!(r.members.len(), tokens.len());
        } else {
            assert!(r.members.is_empty());
        }
    }
    leaders.dedup();
    assert_eq!(leaders.len(), 1, "one leader for everyone");
}

#[test]
fn member_dying_mid_rebalance_is_removed_at_its_session_timeout() {
    let mut s = Shell::new(config(3000));
    let (ids, leader, generation) = s.stable_group(3);
    let dead = ids.iter().find(|m| **m != leader).unwrap().clone();
    let alive: Vec<&str> = ids
        .iter()
        .filter(|m| **m != dead)
        .map(String::as_str)
        .collect();
    // The leader rejoins (e.g. the topic grew): a rebalance starts.
    let t_leader = s.join(join_req(&leader, None));
    assert_eq!(s.state().0, GroupState::PreparingRebalance);
    let other = alive.iter().find(|m| **m != leader).unwrap().to_string();
    assert_eq!(s.heartbeat(&other, generation), ec::REBALANCE_IN_PROGRESS);
    let t_other = s.join(join_req(&other, None));
    // The dead member neither heartbeats nor rejoins: its session (10 s) ends the wait,
    // well before the 30 s rebalance timeout.
    s.advance(SESSION_MS as u64 + 1);
    let r = s.join_result(t_leader);
    assert_eq!((r.error_code, r.generation_id), (ec::NONE, generation + 1));
    assert_eq!(r.members.len(), 2);
    assert!(r.members.iter().all(|m| m.member_id != dead));
    assert_eq!(s.join_result(t_other).generation_id, generation + 1);
    assert_eq!(s.heartbeat(&dead, generation), ec::UNKNOWN_MEMBER_ID);
}

#[test]
fn member_not_rejoining_is_dropped_at_the_rebalance_timeout() {
    let mut s = Shell::new(config(3000));
    let (ids, leader, generation) = s.stable_group(2);
    let follower = ids.iter().find(|m| **m != leader).unwrap().clone();
    let t = s.join(join_req(&leader, None));
    // The follower keeps heartbeating (so its session lives) but never rejoins, like a
    // consumer stuck in a long poll loop.
    s.advance_heartbeating(REBALANCE_MS as u64 - 1000, &[follower.as_str()], generation);
    assert!(s.take(t).is_none());
    s.advance_heartbeating(1000, &[], generation);
    let r = s.join_result(t);
    assert_eq!((r.generation_id, r.members.len()), (generation + 1, 1));
    assert_eq!(s.heartbeat(&follower, generation), ec::UNKNOWN_MEMBER_ID);
}

#[test]
fn member_that_never_syncs_is_removed_and_the_group_rebalances() {
    let mut s = Shell::new(config(3000));
    let mut joined = Vec::new();
    for _ in 0..2 {
        joined.push(s.join_new());
    }
    s.wait_answer(joined[0].1);
    let rs: Vec<JoinGroupResponse> = joined.iter().map(|(_, t)| s.join_result(*t)).collect();
    let leader = rs[0].leader.clone();
    let follower = joined
        .iter()
        .map(|(id, _)| id.clone())
        .find(|m| *m != leader)
        .unwrap();
    let st = s.sync(&leader, 1, &[(&leader, "x"), (&follower, "y")]);
    assert_eq!(s.sync_result(st).assignment, Bytes::from("x"));
    assert_eq!(s.state(), (GroupState::Stable, 1));
    // The follower died between JoinGroup and SyncGroup.
    s.advance_heartbeating(REBALANCE_MS as u64, &[leader.as_str()], 1);
    assert_eq!(s.heartbeat(&leader, 1), ec::REBALANCE_IN_PROGRESS);
    let t = s.join(join_req(&leader, None));
    let r = s.join_result(t);
    assert_eq!((r.generation_id, r.members.len()), (2, 1));
}

#[test]
fn late_joiner_triggers_a_rebalance_that_all_members_follow() {
    let mut s = Shell::new(config(3000));
    let (ids, leader, generation) = s.stable_group(2);
    let (late, t_late) = s.join_new();
    assert_eq!(s.state().0, GroupState::PreparingRebalance);
    // Commits of the old generation still go through while preparing the rebalance.
    assert_eq!(
        s.commit_codes(&ids[0], generation, &[("t", 0, 10)]),
        vec![ec::NONE]
    );
    let mut tokens = vec![(late.clone(), t_late)];
    for m in &ids {
        assert_eq!(s.heartbeat(m, generation), ec::REBALANCE_IN_PROGRESS);
        tokens.push((m.clone(), s.join(join_req(m, None))));
    }
    // Everyone is in and the group is not empty: no delay.
    let mut all = Vec::new();
    for (m, t) in &tokens {
        let r = s.join_result(*t);
        assert_eq!(
            (r.error_code, r.generation_id),
            (ec::NONE, generation + 1),
            "{m}"
        );
        assert_eq!(
            r.leader, leader,
            "the leader stays the leader when it rejoins"
        );
        all.push(m.clone());
    }
    s.sync_all(&all, &leader, generation + 1);
    assert_eq!(s.heartbeat(&ids[0], generation), ec::ILLEGAL_GENERATION);
}

#[test]
fn leader_leaving_hands_leadership_to_a_member_that_rejoined() {
    let mut s = Shell::new(config(3000));
    let (ids, leader, generation) = s.stable_group(3);
    let others: Vec<String> = ids.iter().filter(|m| **m != leader).cloned().collect();
    let r = s.leave(&[(&leader, None)]);
    assert_eq!(r.members[0].error_code, ec::NONE);
    assert_eq!(s.state().0, GroupState::PreparingRebalance);
    let t0 = s.join(join_req(&others[0], None));
    let t1 = s.join(join_req(&others[1], None));
    let r0 = s.join_result(t0);
    let r1 = s.join_result(t1);
    assert_eq!(r0.generation_id, generation + 1);
    assert_eq!(r0.leader, r1.leader);
    assert!(others.contains(&r0.leader));
    let leader_resp = if r0.leader == others[0] { &r0 } else { &r1 };
    assert_eq!(leader_resp.members.len(), 2);
}

#[test]
fn leader_leaving_mid_rebalance_still_completes_it() {
    let mut s = Shell::new(config(3000));
    let (ids, leader, generation) = s.stable_group(3);
    let others: Vec<String> = ids.iter().filter(|m| **m != leader).cloned().collect();
    let t_leader = s.join(join_req(&leader, None));
    let t0 = s.join(join_req(&others[0], None));
    // The leader leaves while its JoinGroup is parked: it is answered, the rest go on.
    s.leave(&[(&leader, None)]);
    let r = s.join_result(t_leader);
    assert_eq!(r.error_code, ec::UNKNOWN_MEMBER_ID);
    let t1 = s.join(join_req(&others[1], None));
    let r0 = s.join_result(t0);
    let r1 = s.join_result(t1);
    assert_eq!(
        (r0.generation_id, r1.generation_id),
        (generation + 1, generation + 1)
    );
    assert_ne!(r0.leader, leader);
    assert_eq!(r0.leader, r1.leader);
}

#[test]
fn expired_sessions_empty_the_group_and_store_the_last_generation() {
    let mut s = Shell::new(config(3000));
    let (ids, _, generation) = s.stable_group(2);
    // Only the first member keeps heartbeating.
    s.advance_heartbeating(SESSION_MS as u64 + 1000, &[ids[0].as_str()], generation);
    assert_eq!(s.heartbeat(&ids[1], generation), ec::UNKNOWN_MEMBER_ID);
    assert_eq!(s.heartbeat(&ids[0], generation), ec::REBALANCE_IN_PROGRESS);
    let t = s.join(join_req(&ids[0], None));
    let r = s.join_result(t);
    assert_eq!((r.generation_id, r.members.len()), (generation + 1, 1));
    s.sync_all(&ids[..1], &ids[0], generation + 1);
    // Now the last member goes silent too.
    s.advance(SESSION_MS as u64 + 1);
    assert_eq!(s.state(), (GroupState::Empty, generation + 2));
    let last = s.log.last().expect("empty generation stored");
    assert_eq!(
        OffsetsKey::decode(&last.key).unwrap(),
        OffsetsKey::GroupMetadata {
            group: GROUP.to_owned()
        }
    );
    let v = super::records::GroupMetadataValue::decode(last.value.as_ref().unwrap()).unwrap();
    assert_eq!((v.generation, v.members.len()), (generation + 2, 0));
}

#[test]
fn static_member_rejoins_without_rebalance_and_keeps_its_assignment() {
    let mut s = Shell::new(config(3000));
    let ta = s.join(join_req("", Some("inst-a")));
    let tb = s.join(join_req("", Some("inst-b")));
    s.wait_answer(ta);
    let ra = s.join_result(ta);
    let rb = s.join_result(tb);
    assert_eq!((ra.error_code, rb.error_code), (ec::NONE, ec::NONE));
    let (a, b) = (ra.member_id.clone(), rb.member_id.clone());
    assert!(a.starts_with("inst-a-"));
    let leader = ra.leader.clone();
    s.sync_all(&[a.clone(), b.clone()], &leader, 1);
    let follower_old = if leader == a { b.clone() } else { a.clone() };
    let follower_inst = if leader == a { "inst-b" } else { "inst-a" };
    // The follower restarts: same instance id, no member id.
    let t = s.join(join_req("", Some(follower_inst)));
    let r = s.join_result(t);
    assert_eq!((r.error_code, r.generation_id), (ec::NONE, 1));
    assert_ne!(r.member_id, follower_old);
    assert!(!r.skip_assignment);
    assert_eq!(s.state(), (GroupState::Stable, 1), "no rebalance");
    let st = s.sync(&r.member_id, 1, &[]);
    assert_eq!(
        s.sync_result(st).assignment,
        Bytes::from(format!("assign-{follower_old}")),
        "old assignment handed to the new member id"
    );
    // The zombie with the old id is fenced; the other member never noticed.
    assert_eq!(
        s.heartbeat_as(&follower_old, 1, Some(follower_inst)),
        ec::FENCED_INSTANCE_ID
    );
    assert_eq!(s.heartbeat(&leader, 1), ec::NONE);
    // The leader restarts too: it gets the members and is told to skip the assignment.
    let leader_inst = if leader == a { "inst-a" } else { "inst-b" };
    let t = s.join(join_req("", Some(leader_inst)));
    let r = s.join_result(t);
    assert_eq!(r.error_code, ec::NONE);
    assert!(r.skip_assignment);
    assert_eq!(r.leader, leader, "old leader id returned, as Kafka does");
    assert_eq!(r.members.len(), 2);
    assert_eq!(s.state(), (GroupState::Stable, 1));
}

#[test]
fn static_member_rejoining_mid_rebalance_fences_its_old_join() {
    let mut s = Shell::new(config(0));
    let ta = s.join(join_req("", Some("inst-a")));
    let a = s.join_result(ta).member_id;
    s.sync_all(std::slice::from_ref(&a), &a, 1);
    // c joins the stable group; inst-a rejoins and the group reaches generation 2.
    let (c, tc) = s.join_new();
    let ta = s.join(join_req(&a, Some("inst-a")));
    let r = s.join_result(ta);
    assert_eq!((r.generation_id, s.join_result(tc).generation_id), (2, 2));
    s.sync_all(&[a.clone(), c.clone()], &r.leader, 2);
    // A newcomer starts a rebalance; inst-a rejoins and parks, c has not rejoined yet.
    let (_, tb) = s.join_new();
    let ta2 = s.join(join_req(&a, Some("inst-a")));
    assert!(s.take(ta2).is_none());
    // inst-a restarts while its JoinGroup is parked: the old one is fenced.
    let ta3 = s.join(join_req("", Some("inst-a")));
    assert_eq!(s.join_result(ta2).error_code, ec::FENCED_INSTANCE_ID);
    let tc2 = s.join(join_req(&c, None));
    let r3 = s.join_result(ta3);
    assert_eq!(r3.generation_id, 3);
    assert_eq!(s.join_result(tb).generation_id, 3);
    assert_eq!(s.join_result(tc2).generation_id, 3);
    assert_ne!(r3.member_id, a);
    assert_ne!(r3.leader, a, "the old member id leads nothing");
    if r3.leader == r3.member_id {
        assert_eq!(r3.members.len(), 3);
    }
    assert_eq!(
        s.heartbeat_as(&a, 3, Some("inst-a")),
        ec::FENCED_INSTANCE_ID
    );
}

#[test]
fn offset_commit_checks_generation_and_membership() {
    let mut s = Shell::new(config(3000));
    // Simple commit (no group management) creates the group.
    assert_eq!(s.commit_codes("", -1, &[("t", 0, 5)]), vec![ec::NONE]);
    assert_eq!(s.fetched("t", 0), 5);
    let (ids, _, generation) = s.stable_group(1);
    let m = &ids[0];
    assert_eq!(
        s.commit_codes(m, generation + 1, &[("t", 0, 7)]),
        vec![ec::ILLEGAL_GENERATION]
    );
    assert_eq!(
        s.commit_codes("stranger", generation, &[("t", 0, 7)]),
        vec![ec::UNKNOWN_MEMBER_ID]
    );
    assert_eq!(
        s.commit_codes("", -1, &[("t", 0, 7)]),
        vec![ec::UNKNOWN_MEMBER_ID]
    );
    assert_eq!(s.fetched("t", 0), 5, "rejected commits change nothing");
    assert_eq!(
        s.commit_codes(
            m,
            generation,
            &[("t", 0, 7), ("missing", 0, 1), ("t", 1, 9)]
        ),
        vec![ec::NONE, ec::UNKNOWN_TOPIC_OR_PARTITION, ec::NONE]
    );
    assert_eq!(
        (s.fetched("t", 0), s.fetched("t", 1), s.fetched("t", 2)),
        (7, 9, -1)
    );
    // While completing a rebalance the commit must wait for the new generation.
    let (_, t) = s.join_new();
    let t_m = s.join(join_req(m, None));
    assert!(s.responses.contains_key(&t) && s.responses.contains_key(&t_m));
    assert_eq!(s.state().0, GroupState::CompletingRebalance);
    assert_eq!(
        s.commit_codes(m, generation + 1, &[("t", 0, 8)]),
        vec![ec::REBALANCE_IN_PROGRESS]
    );
    // Oversized metadata is refused per partition.
    let t = s.token();
    let mut out = Outputs::default();
    s.c.offset_commit(
        t,
        OffsetCommitRequest {
            group_id: GROUP.to_owned(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            partitions: vec![OffsetCommitPartition {
                topic: "t".to_owned(),
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: Some("x".repeat(5000)),
                partition_exists: true,
                commit_timestamp_ms: None,
            }],
        },
        s.now_ms,
        &mut out,
    );
    s.absorb(out);
    match s.take(t) {
        Some(Response::OffsetCommit(r)) => {
            assert_eq!(r.partitions[0].error_code, ec::UNKNOWN_MEMBER_ID)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn offset_commit_is_answered_only_when_durable() {
    let mut s = Shell::new(config(3000));
    s.hold_appends = true;
    let t = s.commit("", -1, &[("t", 0, 42)]);
    assert!(s.take(t).is_none(), "answered before the append completed");
    assert_eq!(s.fetched("t", 0), -1, "visible before durable");
    let a = s.held.remove(0);
    let mut out = Outputs::default();
    s.c.append_completed(a.id, Ok(()), s.now_ms, &mut out);
    s.absorb(out);
    assert!(
        matches!(s.take(t), Some(Response::OffsetCommit(r)) if r.partitions[0].error_code == ec::NONE)
    );
    assert_eq!(s.fetched("t", 0), 42);
    // A failed append is reported with Kafka's mapping and leaves the old offset.
    let t = s.commit("", -1, &[("t", 0, 43)]);
    let a = s.held.remove(0);
    let mut out = Outputs::default();
    s.c.append_completed(a.id, Err(ec::NOT_LEADER_OR_FOLLOWER), s.now_ms, &mut out);
    s.absorb(out);
    assert!(
        matches!(s.take(t), Some(Response::OffsetCommit(r)) if r.partitions[0].error_code == ec::NOT_COORDINATOR)
    );
    assert_eq!(s.fetched("t", 0), 42);
}

/// The cause of the UNKNOWN_MEMBER_ID a surviving confluent-kafka consumer once got on a
/// commit: the commit before it waited on a stalled append for longer than the member's
/// session. Answers on a connection go in request order, so its heartbeat answers waited too;
/// librdkafka then gave up its membership on its own (SESSTMOUT), dropped its member id, and
/// its next commit went out with an empty one. A member's commit is now answered
/// REQUEST_TIMED_OUT after half its session at most, and its offsets still count when the
/// append lands.
#[test]
fn commit_stuck_on_a_slow_append_is_answered_within_half_the_session() {
    let mut s = Shell::new(config(3000));
    let a = s.lone_stable_member();
    s.hold_appends = true;
    let t = s.commit(&a, 1, &[("t", 0, 7), ("missing", 0, 1)]);
    s.advance_heartbeating(SESSION_MS as u64 / 2 - 1, &[&a], 1);
    assert!(s.take(t).is_none(), "answered before the commit timeout");
    s.advance(1);
    match s.take(t) {
        Some(Response::OffsetCommit(r)) => {
            let codes: Vec<i16> = r.partitions.iter().map(|p| p.error_code).collect();
            assert_eq!(
                codes,
                vec![ec::REQUEST_TIMED_OUT, ec::UNKNOWN_TOPIC_OR_PARTITION]
            );
        }
        other => panic!("commit answered with {other:?}"),
    }
    assert_eq!(s.heartbeat(&a, 1), ec::NONE);
    // The append lands later: the offset counts and the commit is not answered again.
    let app = s.held.remove(0);
    let mut out = Outputs::default();
    s.c.append_completed(app.id, Ok(()), s.now_ms, &mut out);
    assert!(
        out.responses.is_empty(),
        "answered twice: {:?}",
        out.responses
    );
    assert_eq!(s.fetched("t", 0), 7);
    assert_eq!(s.c.group_timer_count(), 1, "only the session timer is left");
}

/// A commit from a client outside group management waits `offsets_commit_timeout_ms`.
#[test]
fn commit_timeout_without_a_member_is_the_configured_one() {
    let mut s = Shell::new(GroupConfig {
        offsets_commit_timeout_ms: 2000,
        ..config(3000)
    });
    s.hold_appends = true;
    let t = s.commit("", -1, &[("t", 0, 5)]);
    s.advance(1999);
    assert!(s.take(t).is_none());
    s.advance(1);
    assert!(
        matches!(s.take(t), Some(Response::OffsetCommit(r)) if r.partitions[0].error_code == ec::REQUEST_TIMED_OUT)
    );
    // A failed append after the timeout changes nothing and answers nobody.
    let app = s.held.remove(0);
    let mut out = Outputs::default();
    s.c.append_completed(app.id, Err(ec::KAFKA_STORAGE_ERROR), s.now_ms, &mut out);
    assert!(out.responses.is_empty());
    assert_eq!(s.fetched("t", 0), -1);
}

#[test]
fn failed_assignment_store_sends_members_back_to_rejoin() {
    let mut s = Shell::new(config(0));
    let (a, ta) = s.join_new();
    let r = s.join_result(ta);
    assert_eq!(r.leader, a);
    s.hold_appends = true;
    let st = s.sync(&a, 1, &[(&a, "x")]);
    let app = s.held.remove(0);
    let mut out = Outputs::default();
    s.c.append_completed(app.id, Err(ec::REQUEST_TIMED_OUT), s.now_ms, &mut out);
    s.absorb(out);
    assert_eq!(s.sync_result(st).error_code, ec::COORDINATOR_NOT_AVAILABLE);
    assert_eq!(s.state().0, GroupState::PreparingRebalance);
}

#[test]
fn restart_replays_offsets_and_groups_from_the_log() {
    let mut s = Shell::new(config(3000));
    let (ids, leader, generation) = s.stable_group(2);
    assert_eq!(
        s.commit_codes(&ids[0], generation, &[("t", 0, 100), ("t", 1, 200)]),
        vec![0, 0]
    );
    assert_eq!(
        s.commit_codes(&ids[1], generation, &[("t", 1, 250)]),
        vec![0]
    );
    let log = s.log.clone();

    let mut c = GroupCoordinator::new(config(3000), 0, 1, 7);
    for r in &log {
        c.replay(&r.key, r.value.as_deref())
            .expect("own records replay");
    }
    let mut out = Outputs::default();
    c.join_group(1, join_req(&ids[0], None), 0, &mut out);
    assert!(
        matches!(&out.responses[0].1, Response::JoinGroup(r) if r.error_code == ec::COORDINATOR_LOAD_IN_PROGRESS)
    );
    c.finish_loading(1_000);
    let mut s2 = Shell::with(c);
    s2.now_ms = 1_000;
    assert_eq!((s2.fetched("t", 0), s2.fetched("t", 1)), (100, 250));
    assert_eq!(s2.state(), (GroupState::Stable, generation));
    // Members that survived the broker restart carry on without a rebalance.
    assert_eq!(s2.heartbeat(&ids[0], generation), ec::NONE);
    let st = s2.sync(&leader, generation, &[]);
    assert_eq!(
        s2.sync_result(st).assignment,
        Bytes::from(format!("assign-{leader}"))
    );
    // The other never comes back: it expires and the group rebalances.
    s2.advance_heartbeating(SESSION_MS as u64 + 1000, &[ids[0].as_str()], generation);
    assert_eq!(s2.heartbeat(&ids[1], generation), ec::UNKNOWN_MEMBER_ID);
}

#[test]
fn deleted_groups_stay_deleted_after_replay() {
    let mut s = Shell::new(config(3000));
    assert_eq!(
        s.commit_codes("", -1, &[("t", 0, 5), ("u", 3, 6)]),
        vec![0, 0]
    );
    let t = s.token();
    let mut out = Outputs::default();
    s.c.delete_groups(
        t,
        vec![GROUP.to_owned(), "nope".to_owned()],
        s.now_ms,
        &mut out,
    );
    s.absorb(out);
    match s.take(t) {
        Some(Response::DeleteGroups(r)) => assert_eq!(
            r.results,
            vec![
                (GROUP.to_owned(), ec::NONE),
                ("nope".to_owned(), ec::GROUP_ID_NOT_FOUND)
            ]
        ),
        other => panic!("{other:?}"),
    }
    assert!(s.c.group_state(GROUP).is_none());
    let mut c = GroupCoordinator::new(config(3000), 0, 1, 7);
    for r in &s.log {
        c.replay(&r.key, r.value.as_deref()).unwrap();
    }
    c.finish_loading(0);
    assert!(c.group_state(GROUP).is_none());
    assert!(c.committed_offsets(GROUP).is_empty());
}

#[test]
fn delete_refuses_groups_with_members() {
    let mut s = Shell::new(config(0));
    s.lone_stable_member_no_delay();
    let t = s.token();
    let mut out = Outputs::default();
    s.c.delete_groups(t, vec![GROUP.to_owned()], s.now_ms, &mut out);
    s.absorb(out);
    assert!(
        matches!(s.take(t), Some(Response::DeleteGroups(r)) if r.results[0].1 == ec::NON_EMPTY_GROUP)
    );
}

impl Shell {
    fn lone_stable_member_no_delay(&mut self) -> String {
        let (a, t) = self.join_new();
        assert_eq!(self.join_result(t).generation_id, 1);
        self.sync_all(std::slice::from_ref(&a), &a, 1);
        a
    }
}

#[test]
fn protocol_is_chosen_by_votes_among_common_protocols() {
    let mut s = Shell::new(config(3000));
    let prefs: [&[&str]; 3] = [
        &["roundrobin", "range"],
        &["roundrobin", "range"],
        &["range", "roundrobin", "sticky"],
    ];
    let mut tokens = Vec::new();
    for p in prefs {
        let mut req = join_req("", None);
        req.require_known_member_id = false;
        req.protocols = protocols(p);
        tokens.push(s.join(req));
    }
    s.wait_answer(tokens[0]);
    for t in tokens {
        let r = s.join_result(t);
        assert_eq!(r.protocol_name.as_deref(), Some("roundrobin"));
    }
    // A member sharing no protocol with the group is refused.
    let mut req = join_req("", None);
    req.protocols = protocols(&["sticky"]);
    let t = s.join(req);
    assert_eq!(s.join_result(t).error_code, ec::INCONSISTENT_GROUP_PROTOCOL);
    let mut req = join_req("", None);
    req.protocol_type = "connect".to_owned();
    let t = s.join(req);
    assert_eq!(s.join_result(t).error_code, ec::INCONSISTENT_GROUP_PROTOCOL);
}

#[test]
fn unused_member_id_expires_and_unblocks_the_rebalance() {
    let mut s = Shell::new(config(3000));
    let (ids, _, generation) = s.stable_group(1);
    let m = ids[0].clone();
    // A newcomer gets an id but never comes back with it.
    let t = s.join(join_req("", None));
    assert_eq!(s.join_result(t).error_code, ec::MEMBER_ID_REQUIRED);
    let t = s.join(join_req(&m, None));
    assert!(s.take(t).is_none(), "waits for the pending member");
    s.advance(SESSION_MS as u64 + 1);
    let r = s.join_result(t);
    assert_eq!((r.generation_id, r.members.len()), (generation + 1, 1));
}

#[test]
fn request_errors_match_kafka() {
    let mut s = Shell::new(config(3000));
    let mut req = join_req("", None);
    req.session_timeout_ms = 100;
    let t = s.join(req);
    assert_eq!(s.join_result(t).error_code, ec::INVALID_SESSION_TIMEOUT);
    let t = s.join(join_req("made-up", None));
    assert_eq!(s.join_result(t).error_code, ec::UNKNOWN_MEMBER_ID);
    let mut req = join_req("", None);
    req.group_id = String::new();
    let t = s.join(req);
    assert_eq!(s.join_result(t).error_code, ec::INVALID_GROUP_ID);
    assert!(
        s.c.group_state(GROUP).is_none(),
        "failed joins leave no group behind"
    );
    assert_eq!(s.heartbeat("x", 1), ec::UNKNOWN_MEMBER_ID);
    let t = s.sync("x", 1, &[]);
    assert_eq!(s.sync_result(t).error_code, ec::UNKNOWN_MEMBER_ID);
    let a = s.lone_stable_member();
    let t = s.sync(&a, 7, &[]);
    assert_eq!(s.sync_result(t).error_code, ec::ILLEGAL_GENERATION);
    let r = s.leave(&[("ghost", None), (a.as_str(), None)]);
    let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![ec::UNKNOWN_MEMBER_ID, ec::NONE]);
    assert_eq!(s.state(), (GroupState::Empty, 2));
    // Described: an unknown group is Dead without error; a known one shows its state.
    let d = s.c.describe_groups(&[GROUP.to_owned(), "other".to_owned()]);
    assert_eq!(
        (d[0].state, d[1].state, d[1].error_code),
        ("Empty", "Dead", ec::NONE)
    );
    let l = s.c.list_groups(&ListGroupsRequest {
        states_filter: vec!["empty".into()],
        types_filter: vec![],
    });
    assert_eq!(l.groups.len(), 1);
    let l = s.c.list_groups(&ListGroupsRequest {
        states_filter: vec!["Stable".into()],
        types_filter: vec![],
    });
    assert!(l.groups.is_empty());
}

impl Shell {
    fn lone_stable_member(&mut self) -> String {
        let (a, t) = self.join_new();
        self.advance(3000);
        assert_eq!(self.join_result(t).generation_id, 1);
        self.sync_all(std::slice::from_ref(&a), &a, 1);
        a
    }
}

#[test]
fn coordinator_answers_only_for_its_partition() {
    // "test-group" lives on partition 4 of 16 (Java hashCode 627841412).
    let mut c = GroupCoordinator::new(GroupConfig::default(), 3, 16, 1);
    c.finish_loading(0);
    let mut out = Outputs::default();
    let mut req = join_req("", None);
    req.group_id = "test-group".to_owned();
    c.join_group(1, req.clone(), 0, &mut out);
    assert!(
        matches!(&out.responses[0].1, Response::JoinGroup(r) if r.error_code == ec::NOT_COORDINATOR)
    );
    let mut c = GroupCoordinator::new(GroupConfig::default(), 4, 16, 1);
    c.finish_loading(0);
    let mut out = Outputs::default();
    c.join_group(1, req, 0, &mut out);
    assert!(
        matches!(&out.responses[0].1, Response::JoinGroup(r) if r.error_code == ec::MEMBER_ID_REQUIRED)
    );
}

#[test]
fn resigning_answers_every_parked_request() {
    let mut s = Shell::new(config(3000));
    let (_, t) = s.join_new();
    let mut out = Outputs::default();
    s.c.resign(&mut out);
    s.absorb(out);
    assert_eq!(s.join_result(t).error_code, ec::NOT_COORDINATOR);
    assert_eq!(s.heartbeat("x", 1), ec::NOT_COORDINATOR);
    assert!(s.c.next_deadline_ms().is_none());
}

#[test]
fn group_size_is_bounded() {
    let mut s = Shell::new(GroupConfig {
        max_members_per_group: 2,
        ..config(3000)
    });
    let (ids, leader, generation) = s.stable_group(2);
    let t = s.join(join_req("", None));
    assert_eq!(s.join_result(t).error_code, ec::GROUP_MAX_SIZE_REACHED);
    // Members of the full group may still rejoin.
    let t = s.join(join_req(&leader, None));
    assert!(
        s.take(t).is_none(),
        "leader's rejoin parked for the rebalance"
    );
    let other = ids.iter().find(|m| **m != leader).unwrap().clone();
    let t2 = s.join(join_req(&other, None));
    assert_eq!(s.join_result(t).generation_id, generation + 1);
    assert_eq!(s.join_result(t2).generation_id, generation + 1);
}

#[test]
fn offsets_expire_after_retention_and_empty_groups_disappear() {
    let day_ms = 24 * 3600 * 1000;
    let mut s = Shell::new(GroupConfig {
        offsets_retention_ms: day_ms,
        offsets_retention_check_interval_ms: 60_000,
        ..config(0)
    });
    // A group of a consumer that used group management, then left.
    let a = s.lone_stable_member_no_delay();
    assert_eq!(s.commit_codes(&a, 1, &[("t", 0, 5)]), vec![ec::NONE]);
    s.leave(&[(a.as_str(), None)]);
    assert_eq!(s.state().0, GroupState::Empty);
    // Half the retention later a manual-assignment client commits to another partition.
    s.now_ms += day_ms / 2;
    assert_eq!(s.commit_codes("", -1, &[("t", 1, 6)]), vec![ec::NONE]);
    // The group has been empty for a full retention period: every offset goes, even the
    // recent one, as in Kafka (KIP-211).
    for _ in 0..(day_ms / 2 / 60_000 + 2) {
        s.advance(60_000);
    }
    assert!(
        s.c.group_state(GROUP).is_none(),
        "expired empty group deleted"
    );
    assert_eq!(s.fetched("t", 0), -1);
    let mut c = GroupCoordinator::new(config(0), 0, 1, 9);
    for r in &s.log {
        c.replay(&r.key, r.value.as_deref()).unwrap();
    }
    c.finish_loading(s.now_ms);
    assert!(
        c.group_state(GROUP).is_none(),
        "deletion survives a restart"
    );
}

#[test]
fn offsets_of_groups_without_members_expire_one_by_one() {
    let mut s = Shell::new(GroupConfig {
        offsets_retention_ms: 100_000,
        offsets_retention_check_interval_ms: 10_000,
        ..config(0)
    });
    assert_eq!(s.commit_codes("", -1, &[("t", 0, 5)]), vec![ec::NONE]);
    s.advance(50_000);
    assert_eq!(s.commit_codes("", -1, &[("t", 1, 6)]), vec![ec::NONE]);
    s.advance(60_000);
    assert_eq!((s.fetched("t", 0), s.fetched("t", 1)), (-1, 6));
    s.advance(50_000);
    assert!(s.c.group_state(GROUP).is_none());
}

/// OffsetCommit v1 may carry its own commit time: retention counts from it, as Kafka does.
#[test]
fn explicit_v1_commit_timestamp_is_what_retention_counts_from() {
    let mut s = Shell::new(GroupConfig {
        offsets_retention_ms: 100_000,
        offsets_retention_check_interval_ms: 10_000,
        ..config(0)
    });
    s.advance(200_000);
    let partition = |p: i32, offset: i64, at: Option<i64>| OffsetCommitPartition {
        topic: "t".to_owned(),
        partition: p,
        offset,
        leader_epoch: -1,
        metadata: None,
        partition_exists: true,
        commit_timestamp_ms: at,
    };
    let t = s.token();
    let req = OffsetCommitRequest {
        group_id: GROUP.to_owned(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![partition(0, 5, Some(150_000)), partition(1, 6, None)],
    };
    let mut out = Outputs::default();
    s.c.offset_commit(t, req, s.now_ms, &mut out);
    s.absorb(out);
    assert!(s.take(t).is_some());
    s.advance(60_000);
    assert_eq!((s.fetched("t", 0), s.fetched("t", 1)), (-1, 6));
}

#[test]
fn static_member_with_a_changed_subscription_triggers_a_rebalance() {
    let mut s = Shell::new(config(0));
    let t = s.join(join_req("", Some("inst-a")));
    let a = s.join_result(t).member_id;
    s.sync_all(std::slice::from_ref(&a), &a, 1);
    let mut req = join_req("", Some("inst-a"));
    req.protocols[0].metadata = Bytes::from_static(b"new-topics");
    let t = s.join(req);
    let r = s.join_result(t);
    assert_eq!(
        (r.error_code, r.generation_id),
        (ec::NONE, 2),
        "a new generation"
    );
    assert_eq!(r.members[0].metadata, Bytes::from_static(b"new-topics"));
}

impl Shell {
    fn offset_delete(&mut self, parts: &[(&str, i32)]) -> OffsetDeleteResponse {
        let t = self.token();
        let mut out = Outputs::default();
        let req = OffsetDeleteRequest {
            group_id: GROUP.to_owned(),
            partitions: parts.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect(),
        };
        self.c.offset_delete(t, req, self.now_ms, &mut out);
        self.absorb(out);
        match self.take(t) {
            Some(Response::OffsetDelete(r)) => r,
            other => panic!("offset delete answered with {other:?}"),
        }
    }

    /// A lone Stable member whose `range` metadata is a consumer subscription to `topics`.
    fn lone_member_subscribed_to(&mut self, topics: &[&str]) -> String {
        let mut subscription = 1i16.to_be_bytes().to_vec();
        subscription.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for t in topics {
            subscription.extend_from_slice(&(t.len() as i16).to_be_bytes());
            subscription.extend_from_slice(t.as_bytes());
        }
        subscription.extend_from_slice(&(-1i32).to_be_bytes());
        let with_subscription = |id: &str| JoinGroupRequest {
            protocols: vec![JoinProtocol {
                name: "range".to_owned(),
                metadata: Bytes::from(subscription.clone()),
            }],
            ..join_req(id, None)
        };
        let t = self.join(with_subscription(""));
        let id = self.join_result(t).member_id;
        let t = self.join(with_subscription(&id));
        assert_eq!(self.join_result(t).generation_id, 1);
        self.sync_all(std::slice::from_ref(&id), &id, 1);
        id
    }
}

fn codes_of(r: &OffsetDeleteResponse) -> Vec<(String, i32, i16)> {
    r.partitions
        .iter()
        .map(|p| (p.topic.clone(), p.partition, p.error_code))
        .collect()
}

#[test]
fn offset_delete_of_an_empty_group_writes_tombstones_that_replay() {
    let mut s = Shell::new(config(0));
    assert_eq!(
        s.commit_codes("", -1, &[("t", 0, 5), ("u", 3, 6)]),
        vec![0, 0]
    );
    let r = s.offset_delete(&[("t", 0), ("never", 1)]);
    assert_eq!(r.error_code, ec::NONE);
    assert_eq!(
        codes_of(&r),
        vec![
            ("t".to_owned(), 0, ec::NONE),
            ("never".to_owned(), 1, ec::NONE)
        ]
    );
    assert_eq!((s.fetched("t", 0), s.fetched("u", 3)), (-1, 6));
    let mut c = GroupCoordinator::new(config(0), 0, 1, 7);
    for r in &s.log {
        c.replay(&r.key, r.value.as_deref()).unwrap();
    }
    c.finish_loading(0);
    let kept: Vec<(String, i32)> = c
        .committed_offsets(GROUP)
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .collect();
    assert_eq!(kept, vec![("u".to_owned(), 3)]);
}

#[test]
fn offset_delete_keeps_the_subscribed_topics_of_a_group_with_members() {
    let mut s = Shell::new(config(0));
    let member = s.lone_member_subscribed_to(&["t"]);
    assert_eq!(
        s.commit_codes(&member, 1, &[("t", 0, 5), ("u", 0, 6)]),
        vec![0, 0]
    );
    let r = s.offset_delete(&[("t", 0), ("u", 0)]);
    assert_eq!(
        codes_of(&r),
        vec![
            ("t".to_owned(), 0, ec::GROUP_SUBSCRIBED_TO_TOPIC),
            ("u".to_owned(), 0, ec::NONE)
        ]
    );
    assert_eq!((s.fetched("t", 0), s.fetched("u", 0)), (5, -1));
    // Unknown group.
    let t = s.token();
    let mut out = Outputs::default();
    let req = OffsetDeleteRequest {
        group_id: "other".to_owned(),
        partitions: vec![("t".to_owned(), 0)],
    };
    s.c.offset_delete(t, req, s.now_ms, &mut out);
    s.absorb(out);
    assert!(matches!(s.take(t),
        Some(Response::OffsetDelete(r)) if r.error_code == ec::GROUP_ID_NOT_FOUND));
}

#[test]
fn offset_delete_protects_every_topic_when_subscriptions_cannot_be_read() {
    let mut s = Shell::new(config(0));
    // The harness's members send metadata that is not a consumer subscription.
    let member = s.lone_stable_member_no_delay();
    assert_eq!(s.commit_codes(&member, 1, &[("u", 0, 6)]), vec![0]);
    let r = s.offset_delete(&[("u", 0)]);
    assert_eq!(
        codes_of(&r),
        vec![("u".to_owned(), 0, ec::GROUP_SUBSCRIBED_TO_TOPIC)]
    );
    assert_eq!(s.fetched("u", 0), 6);
}
