//! Proves the core's basic contracts without the simulator: a one-server ensemble leads
//! and commits on its own fsync only; writes are refused while looking; unknown senders
//! and broken proposals are errors, not panics.
use super::*;
use crate::zab::zxid::make_zxid;

#[test]
fn single_server_commits_on_its_own_fsync() {
    let mut p = Peer::new(PeerConfig::new(1, vec![1]), Restored::default(), 0).expect("peer");
    p.tick(1);
    let out = p.take_outputs();
    assert_eq!(
        out.status.map(|s| (s.role, s.serving)),
        Some((Role::Leading, true))
    );
    assert_eq!(out.hard_state.map(|h| h.current_epoch), Some(1));
    let z = p.propose(b"a".to_vec()).expect("leader");
    assert_eq!(z, make_zxid(1, 1));
    let out = p.take_outputs();
    assert_eq!(out.append.len(), 1);
    assert!(out.committed.is_empty(), "nothing commits before the fsync");
    p.log_synced(z);
    let out = p.take_outputs();
    assert_eq!(
        out.committed.iter().map(|t| t.zxid).collect::<Vec<_>>(),
        vec![z]
    );
}

#[test]
fn single_server_restart_commits_its_restored_log() {
    let log: Vec<Txn> = (51..=75)
        .map(|c| Txn {
            zxid: make_zxid(1, c),
            payload: vec![c as u8],
        })
        .collect();
    let restored = Restored {
        hard_state: HardState {
            accepted_epoch: 1,
            accepted_leader: 1,
            current_epoch: 1,
        },
        snapshot_zxid: make_zxid(1, 50),
        log,
    };
    let mut p = Peer::new(PeerConfig::new(1, vec![1]), restored, 0).expect("peer");
    p.tick(1);
    let out = p.take_outputs();
    assert_eq!(
        out.committed.len(),
        25,
        "the restored log commits once leading"
    );
    assert_eq!(p.applied_zxid(), make_zxid(1, 75));
}

/// A peer that was still following when we broadcast our (better) vote, and now looks
/// with its own, hears ours at once rather than at the next resend: the election after
/// a leader's death then takes the finalize wait, not election_timeout_ms more.
#[test]
fn looking_answers_a_worse_vote_at_once_and_an_equal_one_not_at_all() {
    let mut p = Peer::new(PeerConfig::new(3, vec![1, 2, 3]), Restored::default(), 0).expect("peer");
    p.take_outputs();
    let vote = |leader| Vote {
        leader,
        zxid: 0,
        epoch: 0,
    };
    let looking = |v| Message::Notification {
        vote: v,
        round: 1,
        state: PeerState::Looking,
    };
    p.step(2, looking(vote(2))).expect("step");
    let out = p.take_outputs();
    assert_eq!(
        out.messages,
        vec![(2, looking(vote(3)))],
        "our better vote goes straight back to the sender"
    );
    p.step(2, looking(vote(3))).expect("step");
    let out = p.take_outputs();
    assert!(
        out.messages.iter().all(|(to, _)| *to != 2),
        "no echo once the sender agrees"
    );
}

#[test]
fn looking_refuses_writes_and_rejects_bad_input() {
    let mut p = Peer::new(PeerConfig::new(1, vec![1, 2, 3]), Restored::default(), 0).expect("peer");
    let out = p.take_outputs();
    assert_eq!(out.messages.len(), 2, "a vote to each other server");
    assert_eq!(p.propose(vec![1]), Err(NotLeader { leader: None }));
    assert!(p.forward(1, vec![1]).is_err());
    assert_eq!(p.step(9, Message::PingAck), Err(StepError::UnknownPeer(9)));
    assert_eq!(p.step(1, Message::PingAck), Err(StepError::UnknownPeer(1)));
    // Server 3 has the best vote; 2 agrees; we follow 3 after the finalize wait.
    let v3 = Vote {
        leader: 3,
        zxid: 0,
        epoch: 0,
    };
    let round = 1;
    for from in [2, 3] {
        p.step(
            from,
            Message::Notification {
                vote: v3,
                round,
                state: PeerState::Looking,
            },
        )
        .expect("vote");
    }
    p.tick(1000);
    assert_eq!(p.status().leader, Some(3));
    // A proposal that skips counters from the leader is a protocol error.
    p.step(3, Message::LeaderInfo { epoch: 1 })
        .expect("leaderinfo");
    p.step(
        3,
        Message::Sync {
            kind: SyncKind::Diff,
        },
    )
    .expect("diff");
    let gap = Txn {
        zxid: make_zxid(1, 2),
        payload: vec![],
    };
    assert!(matches!(
        p.step(3, Message::Proposal { txns: vec![gap] }),
        Err(StepError::Protocol { from: 3, .. })
    ));
    assert_eq!(
        p.status().role,
        Role::Looking,
        "a broken leader stream means a new election"
    );
}
