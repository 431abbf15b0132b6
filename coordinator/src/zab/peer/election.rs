//! Fast leader election: votes ordered by (epoch, zxid, myid), rounds, the quorum that
//! makes a decision final, and the answers to servers that already follow or lead.

use super::*;

impl Peer {
    pub(super) fn own_vote(&self) -> Vote {
        Vote {
            leader: self.cfg.my_id,
            zxid: self.history.last_zxid(),
            epoch: self.hard.current_epoch,
        }
    }

    pub(super) fn start_looking(&mut self) {
        self.round += 1;
        self.early_follower_info.clear();
        let vote = self.own_vote();
        let mut recv = BTreeMap::new();
        recv.insert(self.cfg.my_id, vote);
        let e = Election {
            vote,
            recv,
            out_of_election: BTreeMap::new(),
            decide_at_ms: None,
            resend_at_ms: self.now_ms + self.cfg.election_timeout_ms,
        };
        tracing::debug!(round = self.round, last = %fmt_zxid(vote.zxid), "looking");
        self.role = RoleState::Looking(e);
        self.broadcast_vote(vote, PeerState::Looking);
        self.maybe_schedule_decision();
    }

    /// Sends our current (looking) vote of this round to one peer.
    pub(super) fn tell_vote(&mut self, to: ServerId, vote: Vote) {
        self.out.messages.push((
            to,
            Message::Notification {
                vote,
                round: self.round,
                state: PeerState::Looking,
            },
        ));
    }

    pub(super) fn broadcast_vote(&mut self, vote: Vote, state: PeerState) {
        for &p in &self.cfg.voters {
            if p != self.cfg.my_id {
                self.out.messages.push((
                    p,
                    Message::Notification {
                        vote,
                        round: self.round,
                        state,
                    },
                ));
            }
        }
    }

    pub(super) fn count_agreeing(&self, votes: &BTreeMap<ServerId, Vote>, vote: &Vote) -> usize {
        votes.values().filter(|v| *v == vote).count()
    }

    pub(super) fn my_state(&self) -> PeerState {
        match self.role {
            RoleState::Following(_) => PeerState::Following,
            RoleState::Leading(_) => PeerState::Leading,
            _ => PeerState::Looking,
        }
    }

    pub(super) fn maybe_schedule_decision(&mut self) {
        let quorum = self.cfg.quorum();
        let n = self.cfg.voters.len();
        let finalize = self.cfg.election_timeout_ms / 4;
        let now = self.now_ms;
        let RoleState::Looking(e) = &self.role else {
            return;
        };
        let agreeing = self.count_agreeing(&e.recv, &e.vote);
        let decide_at = if agreeing >= quorum {
            // Everybody agrees: nothing better can arrive, decide at once.
            Some(if agreeing == n { now } else { now + finalize })
        } else {
            None
        };
        if let RoleState::Looking(e) = &mut self.role {
            e.decide_at_ms = match (e.decide_at_ms, decide_at) {
                (Some(old), Some(new)) => Some(old.min(new)),
                (_, new) => new,
            };
        }
        if decide_at == Some(now) {
            self.tick(now);
        }
    }

    pub(super) fn on_notification(
        &mut self,
        from: ServerId,
        vote: Vote,
        round: u64,
        state: PeerState,
    ) {
        let mut e = match std::mem::replace(&mut self.role, RoleState::Transient) {
            RoleState::Looking(e) => e,
            other => {
                self.role = other;
                // Not electing: tell a looking peer whom we follow or lead.
                if state == PeerState::Looking {
                    let reply = Message::Notification {
                        vote: self.decided,
                        round: self.round,
                        state: self.my_state(),
                    };
                    self.out.messages.push((from, reply));
                }
                return;
            }
        };
        let own = self.own_vote();
        if state == PeerState::Looking {
            let mut rebroadcast = None;
            if round > self.round {
                self.round = round;
                e.recv.clear();
                e.vote = if vote.beats(&own) { vote } else { own };
                e.recv.insert(self.cfg.my_id, e.vote);
                e.decide_at_ms = None;
                rebroadcast = Some(e.vote);
            } else if round < self.round {
                self.tell_vote(from, e.vote);
                self.role = RoleState::Looking(e);
                return;
            } else if vote.beats(&e.vote) {
                e.vote = vote;
                e.recv.insert(self.cfg.my_id, vote);
                e.decide_at_ms = None;
                rebroadcast = Some(vote);
            } else if vote != e.vote {
                // Ours is better and the sender has not adopted it: it was probably still
                // following when we broadcast (it noticed the leader's death later). Tell
                // it now instead of at the next resend, election_timeout_ms away. No echo
                // loop: it adopts our vote, and an equal vote gets no answer.
                self.tell_vote(from, e.vote);
            }
            e.recv.insert(from, vote);
            self.role = RoleState::Looking(e);
            if let Some(v) = rebroadcast {
                self.broadcast_vote(v, PeerState::Looking);
            }
            self.maybe_schedule_decision();
            return;
        }
        // The sender already follows or leads.
        e.out_of_election.insert(from, (vote, state));
        if round == self.round {
            e.recv.insert(from, vote);
        }
        // Servers that joined an ensemble later announce the vote they adopted, which may
        // differ from the leader's own in zxid or epoch: agreement on the leader's id is
        // what counts, provided the leader itself says it leads.
        let leader_confirms = |e: &Election| {
            vote.leader != self.cfg.my_id
                && e.out_of_election
                    .get(&vote.leader)
                    .is_some_and(|(v, s)| v.leader == vote.leader && *s == PeerState::Leading)
        };
        let quorum = self.cfg.quorum();
        let in_round = round == self.round && self.count_agreeing(&e.recv, &vote) >= quorum;
        let outside = e
            .out_of_election
            .values()
            .filter(|(v, _)| v.leader == vote.leader)
            .count()
            >= quorum;
        if (in_round || outside) && leader_confirms(&e) {
            self.round = self.round.max(round);
            self.role = RoleState::Looking(e);
            self.decide(vote);
            return;
        }
        self.role = RoleState::Looking(e);
    }

    pub(super) fn decide(&mut self, vote: Vote) {
        self.decided = vote;
        let now = self.now_ms;
        if vote.leader == self.cfg.my_id {
            tracing::info!(round = self.round, "elected leader; starting discovery");
            let mut l = Leader {
                phase: LeaderPhase::Discovery,
                epoch: 0,
                started_ms: now,
                epoch_proposed_ms: now,
                self_epoch_persisted: false,
                next_ping_ms: now + self.cfg.tick_ms / 2,
                learners: BTreeMap::new(),
            };
            let mut next = Next::Stay;
            // A follower gives up on an unresponsive leader after five election timeouts;
            // older announcements are stale and must not count towards the quorum.
            let fresh_ms = 5 * self.cfg.election_timeout_ms;
            for (from, (at_ms, msg)) in std::mem::take(&mut self.early_follower_info) {
                if now.saturating_sub(at_ms) > fresh_ms {
                    continue;
                }
                if let Ok(Next::Look) = self.leader_step(&mut l, from, msg) {
                    next = Next::Look;
                }
            }
            self.finish_leader(l, next);
        } else {
            tracing::info!(leader = vote.leader, round = self.round, "following");
            let f = Follower {
                leader: vote.leader,
                phase: FollowerPhase::Connecting,
                started_ms: now,
                last_heard_ms: now,
                resend_at_ms: now + self.cfg.election_timeout_ms,
                acked_zxid: 0,
            };
            self.send_follower_info(vote.leader);
            self.role = RoleState::Following(f);
        }
        // Tell the others, so stragglers can join without another round.
        let state = self.my_state();
        self.broadcast_vote(vote, state);
    }
}
