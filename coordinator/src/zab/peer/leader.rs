//! A leader: discovery (a quorum of FOLLOWERINFO, the new epoch), synchronization of each
//! learner (DIFF, TRUNC or SNAP, then NEWLEADER and UPTODATE) and broadcast (batched
//! PROPOSALs, the quorum of ACKs that commits, COMMIT).

use super::*;

impl Peer {
    pub(super) fn finish_leader(&mut self, mut l: Leader, next: Next) {
        match next {
            Next::Stay => {
                self.leader_advance(&mut l);
                self.role = RoleState::Leading(l);
            }
            Next::Look => self.start_looking(),
        }
    }

    pub(super) fn leader_tick(&mut self, l: &mut Leader) -> Next {
        let now = self.now_ms;
        if now >= l.next_ping_ms {
            l.next_ping_ms = now + (self.cfg.tick_ms / 2).max(1);
            for (&id, _) in l.learners.iter() {
                self.out.messages.push((
                    id,
                    Message::Ping {
                        commit_zxid: self.commit_zxid,
                    },
                ));
            }
        }
        let age = now.saturating_sub(l.started_ms);
        match l.phase {
            LeaderPhase::Discovery if age > 5 * self.cfg.election_timeout_ms => {
                tracing::info!("no quorum of followers connected; electing again");
                Next::Look
            }
            LeaderPhase::EpochProposed
                if now.saturating_sub(l.epoch_proposed_ms) > 5 * self.cfg.election_timeout_ms =>
            {
                // LEADERINFO/ACKEPOCH is one round trip and an fsync: a quorum that does not
                // answer soon is not coming (a follower changed its mind), elect again.
                tracing::info!(
                    epoch = l.epoch,
                    "no quorum acknowledged the epoch; electing again"
                );
                Next::Look
            }
            LeaderPhase::EpochProposed | LeaderPhase::Sync
                if age > self.cfg.init_limit * self.cfg.tick_ms =>
            {
                tracing::info!(epoch = l.epoch, "quorum did not synchronize in time");
                Next::Look
            }
            LeaderPhase::Established => {
                let limit = self.cfg.sync_limit * self.cfg.tick_ms;
                let live = l
                    .learners
                    .values()
                    .filter(|x| x.newleader_acked && now.saturating_sub(x.last_heard_ms) <= limit)
                    .count();
                if live + 1 < self.cfg.quorum() {
                    tracing::warn!(epoch = l.epoch, live, "lost the quorum; stepping down");
                    Next::Look
                } else {
                    Next::Stay
                }
            }
            _ => Next::Stay,
        }
    }

    pub(super) fn leader_step(
        &mut self,
        l: &mut Leader,
        from: ServerId,
        msg: Message,
    ) -> Result<Next, String> {
        match msg {
            Message::FollowerInfo {
                accepted_epoch,
                accepted_leader,
                last_zxid: _,
            } => {
                if l.phase > LeaderPhase::Discovery
                    && (accepted_epoch > l.epoch
                        || (accepted_epoch == l.epoch && accepted_leader != self.cfg.my_id))
                {
                    // The follower promised our epoch number (or a later one) to another
                    // would-be leader, so it can never join this epoch. A new election picks
                    // an epoch above everybody's; each retry raises ours, so this converges.
                    tracing::info!(
                        from,
                        accepted_epoch,
                        epoch = l.epoch,
                        "a follower accepted a newer epoch; electing again"
                    );
                    return Ok(Next::Look);
                }
                let mut learner = Learner {
                    accepted_epoch,
                    last_heard_ms: self.now_ms,
                    epoch_sent: false,
                    acked_epoch: None,
                    synced: false,
                    sent_up_to: 0,
                    newleader_zxid: 0,
                    newleader_acked: false,
                    acked_zxid: 0,
                    commit_sent: 0,
                    uptodate_sent: false,
                };
                if l.phase > LeaderPhase::Discovery {
                    learner.epoch_sent = true;
                    self.out
                        .messages
                        .push((from, Message::LeaderInfo { epoch: l.epoch }));
                }
                l.learners.insert(from, learner);
                Ok(Next::Stay)
            }
            Message::AckEpoch {
                current_epoch,
                last_zxid,
                epoch_ranges,
            } => {
                let Some(learner) = l.learners.get_mut(&from) else {
                    return Ok(Next::Stay);
                };
                if !learner.epoch_sent || learner.acked_epoch.is_some() {
                    return Err("unexpected ACKEPOCH".into());
                }
                if (current_epoch, last_zxid) > (self.hard.current_epoch, self.history.last_zxid())
                {
                    tracing::warn!(
                        from,
                        follower_last = %fmt_zxid(last_zxid),
                        "a follower is ahead of the elected leader; electing again"
                    );
                    return Ok(Next::Look);
                }
                if epoch_ranges.is_empty() || epoch_ranges.len() > EPOCH_RANGES_ACCEPTED_MAX {
                    return Err(format!("{} epoch ranges", epoch_ranges.len()));
                }
                learner.acked_epoch = Some((last_zxid, epoch_ranges));
                if l.phase >= LeaderPhase::Sync {
                    self.sync_learner(l, from);
                }
                Ok(Next::Stay)
            }
            Message::AckNewLeader { epoch } => {
                let Some(learner) = l.learners.get_mut(&from) else {
                    return Ok(Next::Stay);
                };
                if !learner.synced || epoch != l.epoch || learner.newleader_acked {
                    return Err("unexpected ACKNEWLEADER".into());
                }
                learner.newleader_acked = true;
                learner.acked_zxid = learner.acked_zxid.max(learner.newleader_zxid);
                if l.phase == LeaderPhase::Established {
                    learner.uptodate_sent = true;
                    self.out.messages.push((
                        from,
                        Message::UpToDate {
                            commit_zxid: self.commit_zxid.min(learner.sent_up_to),
                        },
                    ));
                    learner.commit_sent = learner.commit_sent.max(self.commit_zxid);
                    self.leader_commit(l);
                }
                Ok(Next::Stay)
            }
            Message::Ack { zxid } => {
                let Some(learner) = l.learners.get_mut(&from) else {
                    return Ok(Next::Stay);
                };
                if !learner.newleader_acked {
                    return Ok(Next::Stay);
                }
                if zxid > learner.sent_up_to {
                    return Err(format!("ACK of {} never sent", fmt_zxid(zxid)));
                }
                learner.acked_zxid = learner.acked_zxid.max(zxid);
                self.leader_commit(l);
                Ok(Next::Stay)
            }
            Message::Forward {
                origin,
                request_id,
                payload,
            } => {
                if origin != from {
                    return Err(format!("forward claims origin {origin}"));
                }
                self.out.forwarded.push(Forwarded {
                    origin,
                    request_id,
                    payload,
                });
                Ok(Next::Stay)
            }
            // PingAck only refreshes liveness; other kinds are stale traffic from an old role.
            _ => Ok(Next::Stay),
        }
    }

    pub(super) fn leader_advance(&mut self, l: &mut Leader) {
        let quorum = self.cfg.quorum();
        if l.phase == LeaderPhase::Discovery && l.learners.len() + 1 >= quorum {
            let max_accepted = l
                .learners
                .values()
                .map(|x| x.accepted_epoch)
                .chain(std::iter::once(self.hard.accepted_epoch))
                .max()
                .unwrap_or(0);
            let Some(epoch) = max_accepted.checked_add(1) else {
                tracing::error!("epoch space exhausted");
                return;
            };
            l.epoch = epoch;
            l.phase = LeaderPhase::EpochProposed;
            l.epoch_proposed_ms = self.now_ms;
            self.hard.accepted_epoch = epoch;
            self.hard.accepted_leader = self.cfg.my_id;
            self.out.hard_state = Some(self.hard);
            tracing::info!(epoch, "proposing epoch");
            for (&id, learner) in l.learners.iter_mut() {
                learner.epoch_sent = true;
                self.out.messages.push((id, Message::LeaderInfo { epoch }));
            }
        }
        if l.phase == LeaderPhase::EpochProposed {
            let acked = l
                .learners
                .values()
                .filter(|x| x.acked_epoch.is_some())
                .count();
            if acked + 1 >= quorum {
                l.phase = LeaderPhase::Sync;
                let ids: Vec<ServerId> = l
                    .learners
                    .iter()
                    .filter(|(_, x)| x.acked_epoch.is_some())
                    .map(|(&id, _)| id)
                    .collect();
                for id in ids {
                    self.sync_learner(l, id);
                }
            }
        }
        if l.phase == LeaderPhase::Sync {
            if !l.self_epoch_persisted && self.durable_zxid >= self.history.last_zxid() {
                l.self_epoch_persisted = true;
                self.hard.current_epoch = l.epoch;
                self.out.hard_state = Some(self.hard);
            }
            let acked = l.learners.values().filter(|x| x.newleader_acked).count();
            if l.self_epoch_persisted && acked + 1 >= quorum {
                l.phase = LeaderPhase::Established;
                tracing::info!(
                    epoch = l.epoch,
                    last = %fmt_zxid(self.history.last_zxid()),
                    "established; broadcasting"
                );
                self.leader_commit(l);
                for (&id, learner) in l.learners.iter_mut() {
                    if learner.newleader_acked {
                        learner.uptodate_sent = true;
                        learner.commit_sent = self.commit_zxid;
                        self.out.messages.push((
                            id,
                            Message::UpToDate {
                                commit_zxid: self.commit_zxid,
                            },
                        ));
                    }
                }
            }
        }
    }

    pub(super) fn sync_learner(&mut self, l: &mut Leader, id: ServerId) {
        let Some(learner) = l.learners.get_mut(&id) else {
            return;
        };
        let Some((last, ranges)) = learner.acked_epoch.as_ref() else {
            return;
        };
        let plan = self.history.plan_sync(*last, ranges);
        let kind = match plan.kind {
            Repair::Diff => "DIFF",
            Repair::Trunc { .. } => "TRUNC",
            Repair::Snap { .. } => "SNAP",
        };
        tracing::info!(
            follower = id,
            kind,
            from = %fmt_zxid(plan.from),
            to = %fmt_zxid(self.history.last_zxid()),
            "synchronizing follower"
        );
        match plan.kind {
            Repair::Diff => self.out.messages.push((
                id,
                Message::Sync {
                    kind: SyncKind::Diff,
                },
            )),
            Repair::Trunc { zxid } => self.out.messages.push((
                id,
                Message::Sync {
                    kind: SyncKind::Trunc { zxid },
                },
            )),
            Repair::Snap { zxid } => self.out.snapshot_sends.push(SnapshotSend {
                to: id,
                zxid,
                before_message: self.out.messages.len(),
            }),
        }
        let leader_last = self.history.last_zxid();
        push_proposals(
            &mut self.out.messages,
            id,
            self.history.entries_after(plan.from),
            self.cfg.max_batch_txns,
            self.cfg.max_batch_bytes,
        );
        self.out.messages.push((
            id,
            Message::NewLeader {
                epoch: l.epoch,
                last_zxid: leader_last,
            },
        ));
        learner.synced = true;
        learner.sent_up_to = leader_last;
        learner.newleader_zxid = leader_last;
        learner.commit_sent = 0;
    }

    pub(super) fn leader_commit(&mut self, l: &mut Leader) {
        if l.phase != LeaderPhase::Established {
            return;
        }
        let mut acks: Vec<Zxid> = l
            .learners
            .values()
            .filter(|x| x.newleader_acked)
            .map(|x| x.acked_zxid)
            .collect();
        if l.self_epoch_persisted {
            acks.push(self.durable_zxid);
        }
        let quorum = self.cfg.quorum();
        if acks.len() < quorum {
            return;
        }
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = acks[quorum - 1];
        if candidate > self.commit_zxid {
            self.advance_commit(candidate);
        }
    }

    /// Sends new proposals and the commit point to every synchronized learner, batched: one
    /// PROPOSAL message per learner for everything proposed since the last call.
    pub(super) fn flush_leader(&mut self) {
        let RoleState::Leading(l) = &mut self.role else {
            return;
        };
        let last = self.history.last_zxid();
        for (&id, learner) in l.learners.iter_mut() {
            if !learner.synced {
                continue;
            }
            if learner.sent_up_to < last {
                push_proposals(
                    &mut self.out.messages,
                    id,
                    self.history.entries_after(learner.sent_up_to),
                    self.cfg.max_batch_txns,
                    self.cfg.max_batch_bytes,
                );
                learner.sent_up_to = last;
            }
            let commit = self.commit_zxid.min(learner.sent_up_to);
            if learner.uptodate_sent && commit > learner.commit_sent {
                learner.commit_sent = commit;
                self.out
                    .messages
                    .push((id, Message::Commit { zxid: commit }));
            }
        }
    }
}

fn push_proposals<'a>(
    messages: &mut Vec<(ServerId, Message)>,
    to: ServerId,
    entries: impl Iterator<Item = &'a Txn>,
    max_txns: usize,
    max_bytes: usize,
) {
    let mut batch: Vec<Txn> = Vec::new();
    let mut bytes = 0usize;
    for t in entries {
        if !batch.is_empty() && (batch.len() >= max_txns || bytes + t.payload.len() > max_bytes) {
            messages.push((
                to,
                Message::Proposal {
                    txns: std::mem::take(&mut batch),
                },
            ));
            bytes = 0;
        }
        bytes += t.payload.len();
        batch.push(t.clone());
    }
    if !batch.is_empty() {
        messages.push((to, Message::Proposal { txns: batch }));
    }
}
