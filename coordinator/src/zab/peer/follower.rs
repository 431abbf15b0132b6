//! A follower: discovery (FOLLOWERINFO, accepting the new epoch), synchronization with its
//! leader (DIFF, TRUNC, SNAP, NEWLEADER, UPTODATE) and broadcast (PROPOSAL, ACK after
//! fsync, COMMIT).

use super::*;

impl Peer {
    pub(super) fn send_follower_info(&mut self, leader: ServerId) {
        self.out.messages.push((
            leader,
            Message::FollowerInfo {
                accepted_epoch: self.hard.accepted_epoch,
                accepted_leader: self.hard.accepted_leader,
                last_zxid: self.history.last_zxid(),
            },
        ));
    }

    pub(super) fn finish_follower(&mut self, f: Follower, next: Next) {
        match next {
            Next::Stay => self.role = RoleState::Following(f),
            Next::Look => self.start_looking(),
        }
    }

    pub(super) fn follower_tick(&mut self, f: &mut Follower) -> Next {
        let now = self.now_ms;
        let silent_ms = now.saturating_sub(f.last_heard_ms);
        match f.phase {
            FollowerPhase::Connecting => {
                if now.saturating_sub(f.started_ms) > 5 * self.cfg.election_timeout_ms {
                    tracing::info!(leader = f.leader, "elected leader does not answer");
                    return Next::Look;
                }
                if now >= f.resend_at_ms {
                    f.resend_at_ms = now + self.cfg.election_timeout_ms;
                    self.send_follower_info(f.leader);
                }
                Next::Stay
            }
            FollowerPhase::Broadcast { .. } => {
                if silent_ms > self.cfg.sync_limit * self.cfg.tick_ms {
                    tracing::info!(leader = f.leader, silent_ms, "leader silent; electing");
                    return Next::Look;
                }
                Next::Stay
            }
            _ => {
                let limit = self.cfg.init_limit * self.cfg.tick_ms;
                if silent_ms > limit || now.saturating_sub(f.started_ms) > limit {
                    tracing::info!(leader = f.leader, "synchronization timed out");
                    return Next::Look;
                }
                Next::Stay
            }
        }
    }

    pub(super) fn follower_step(&mut self, f: &mut Follower, msg: Message) -> Result<Next, String> {
        let leader = f.leader;
        if f.phase == FollowerPhase::Connecting && !matches!(msg, Message::LeaderInfo { .. }) {
            // Traffic the leader sent to our previous session, before it noticed the broken
            // connection; the new session starts with LEADERINFO.
            return Ok(Next::Stay);
        }
        match msg {
            Message::LeaderInfo { epoch } => {
                if f.phase != FollowerPhase::Connecting {
                    return Ok(Next::Stay);
                }
                let acc = self.hard.accepted_epoch;
                if epoch < acc || (epoch == acc && self.hard.accepted_leader != leader) {
                    tracing::info!(epoch, accepted = acc, "leader proposes a stale epoch");
                    return Ok(Next::Look);
                }
                if epoch > acc {
                    self.hard.accepted_epoch = epoch;
                    self.hard.accepted_leader = leader;
                    self.out.hard_state = Some(self.hard);
                }
                let ranges = self.history.epoch_ranges(self.cfg.max_epoch_ranges);
                self.out.messages.push((
                    leader,
                    Message::AckEpoch {
                        current_epoch: self.hard.current_epoch,
                        last_zxid: self.history.last_zxid(),
                        epoch_ranges: ranges,
                    },
                ));
                f.phase = FollowerPhase::Syncing {
                    epoch,
                    header: false,
                };
                Ok(Next::Stay)
            }
            Message::Sync { kind } => {
                let FollowerPhase::Syncing {
                    epoch,
                    header: false,
                } = f.phase
                else {
                    return Err(format!("unexpected sync header in {:?}", f.phase));
                };
                self.apply_sync(kind)?;
                f.phase = FollowerPhase::Syncing {
                    epoch,
                    header: true,
                };
                Ok(Next::Stay)
            }
            Message::Proposal { txns } => {
                let epoch = match f.phase {
                    FollowerPhase::Syncing { header: true, .. } => None,
                    FollowerPhase::WaitDurable { epoch, .. }
                    | FollowerPhase::Synced { epoch }
                    | FollowerPhase::Broadcast { epoch } => Some(epoch),
                    _ => return Err(format!("unexpected proposal in {:?}", f.phase)),
                };
                for txn in txns {
                    if epoch.is_some_and(|e| epoch_of(txn.zxid) != e) {
                        return Err(format!(
                            "proposal {} is not of epoch {epoch:?}",
                            fmt_zxid(txn.zxid)
                        ));
                    }
                    self.history
                        .append(txn.clone())
                        .map_err(|e| e.to_string())?;
                    self.out.append.push(txn);
                }
                Ok(Next::Stay)
            }
            Message::NewLeader { epoch, last_zxid } => {
                let FollowerPhase::Syncing {
                    epoch: e,
                    header: true,
                } = f.phase
                else {
                    return Err(format!("unexpected NEWLEADER in {:?}", f.phase));
                };
                if e != epoch || last_zxid != self.history.last_zxid() {
                    return Err(format!(
                        "NEWLEADER epoch {epoch} last {} does not match epoch {e} last {}",
                        fmt_zxid(last_zxid),
                        fmt_zxid(self.history.last_zxid())
                    ));
                }
                f.phase = FollowerPhase::WaitDurable { epoch, last_zxid };
                self.follower_durable(f);
                Ok(Next::Stay)
            }
            Message::UpToDate { commit_zxid } => {
                let FollowerPhase::Synced { epoch } = f.phase else {
                    return Err(format!("unexpected UPTODATE in {:?}", f.phase));
                };
                f.phase = FollowerPhase::Broadcast { epoch };
                tracing::info!(leader, epoch, "synchronized with the leader; serving");
                self.advance_commit(commit_zxid);
                Ok(Next::Stay)
            }
            Message::Commit { zxid } => {
                if matches!(
                    f.phase,
                    FollowerPhase::Connecting | FollowerPhase::Syncing { header: false, .. }
                ) {
                    return Err("COMMIT before synchronization".into());
                }
                self.advance_commit(zxid);
                Ok(Next::Stay)
            }
            Message::Ping { commit_zxid } => {
                self.out.messages.push((leader, Message::PingAck));
                if !matches!(
                    f.phase,
                    FollowerPhase::Connecting | FollowerPhase::Syncing { header: false, .. }
                ) {
                    self.advance_commit(commit_zxid);
                }
                Ok(Next::Stay)
            }
            // Messages for a leader: the sender believes we lead; ignore.
            _ => Ok(Next::Stay),
        }
    }

    pub(super) fn apply_sync(&mut self, kind: SyncKind) -> Result<(), String> {
        match kind {
            SyncKind::Diff => {}
            SyncKind::Trunc { zxid } => {
                if zxid > self.history.last_zxid()
                    || zxid < self.commit_zxid
                    || zxid < self.history.snapshot_zxid()
                {
                    return Err(format!(
                        "TRUNC to {} outside [{}, {}]",
                        fmt_zxid(zxid),
                        fmt_zxid(self.commit_zxid),
                        fmt_zxid(self.history.last_zxid())
                    ));
                }
                tracing::info!(to = %fmt_zxid(zxid), "truncating diverged log suffix");
                self.history.truncate_after(zxid);
                self.out.truncate_after = Some(zxid);
                self.durable_zxid = zxid;
            }
            SyncKind::Snap { zxid, data } => {
                tracing::info!(zxid = %fmt_zxid(zxid), bytes = data.len(), "installing snapshot");
                self.history.install_snapshot(zxid);
                // Applied entries of this output would be ordered after the install; there
                // are none because commits are applied as soon as they are learnt.
                debug_assert!(self.out.committed.is_empty());
                self.out.truncate_after = None;
                self.out.append.clear();
                self.out.install_snapshot = Some((zxid, data));
                self.durable_zxid = zxid;
                self.commit_zxid = zxid;
                self.applied_zxid = zxid;
            }
        }
        Ok(())
    }

    pub(super) fn follower_durable(&mut self, f: &mut Follower) {
        match f.phase {
            FollowerPhase::WaitDurable { epoch, last_zxid } if self.durable_zxid >= last_zxid => {
                self.hard.current_epoch = epoch;
                self.out.hard_state = Some(self.hard);
                self.out
                    .messages
                    .push((f.leader, Message::AckNewLeader { epoch }));
                f.acked_zxid = last_zxid;
                f.phase = FollowerPhase::Synced { epoch };
                self.follower_ack(f);
            }
            FollowerPhase::Synced { .. } | FollowerPhase::Broadcast { .. } => {
                self.follower_ack(f);
            }
            _ => {}
        }
    }

    pub(super) fn follower_ack(&mut self, f: &mut Follower) {
        if self.durable_zxid > f.acked_zxid {
            f.acked_zxid = self.durable_zxid;
            self.out.messages.push((
                f.leader,
                Message::Ack {
                    zxid: self.durable_zxid,
                },
            ));
        }
    }
}
