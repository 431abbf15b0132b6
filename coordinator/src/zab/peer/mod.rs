//! The sans-IO ZAB core: one server's election, discovery, synchronization and broadcast.
//!
//! `Peer` takes events in (`step` for a peer message, `tick` for time, `propose`, and the
//! shell's notifications `log_synced`, `snapshot_taken`, `peer_disconnected`) and hands
//! effects out through [`Peer::take_outputs`]. It never touches a socket, a file or a clock,
//! so the same code runs under the TCP shell (`node.rs`) and under the deterministic
//! simulator (`tests/zab_sim.rs`).
//!
//! The shell must call `take_outputs` after every call into the core (consecutive `propose`
//! calls may share one: they only append, and that is what batches them into one PROPOSAL)
//! and carry the effects out in the order documented on [`Outputs`]. Channels between two peers are assumed FIFO;
//! when one breaks the shell reports it with `peer_disconnected` before delivering anything
//! sent later.
//!
//! Split by what it decides: `election.rs` (votes, rounds, the decision), `follower.rs`
//! (discovery, synchronization and broadcast as a follower), `leader.rs` (the same as the
//! leader, and the quorum that commits); this file holds the types, the calls the shell
//! makes and the commit point both roles advance; `tests.rs` the core's unit tests.

use std::collections::BTreeMap;

use super::config::PeerConfig;
use super::history::{GapError, History, Repair};
use super::message::{EpochRange, Message, PeerState, SyncKind, Txn, Vote};
use super::zxid::{counter_of, epoch_of, fmt_zxid, make_zxid, ServerId, Zxid};

mod election;
mod follower;
mod leader;

/// Most epoch ranges accepted in one ACKEPOCH, whatever this server's own
/// `max_epoch_ranges` (servers may be configured differently).
const EPOCH_RANGES_ACCEPTED_MAX: usize = 1024;

/// What must survive a crash besides the log and the snapshot (ZooKeeper's `acceptedEpoch`
/// and `currentEpoch` files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// The newest epoch this server promised to follow (LEADERINFO it acknowledged).
    pub accepted_epoch: u32,
    /// The leader that proposed `accepted_epoch`: an epoch number is accepted from one
    /// leader only, which keeps two would-be leaders from both winning one epoch.
    pub accepted_leader: ServerId,
    /// The newest epoch whose NEWLEADER this server acknowledged (its history is that
    /// epoch's leader's).
    pub current_epoch: u32,
}

/// The durable state a core starts from (see `recovery.rs`).
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The epoch files.
    pub hard_state: HardState,
    /// Zxid of the newest valid snapshot (0 when none). Its bytes stay with the shell: the
    /// application is restored from them, and a SNAP to a learner reads them again
    /// ([`SnapshotSend`]).
    pub snapshot_zxid: Zxid,
    /// Every durable log entry after the snapshot, in order.
    pub log: Vec<Txn>,
}

/// The role a server plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// In leader election.
    Looking,
    /// Following a leader.
    Following,
    /// Leading.
    Leading,
}

/// The externally visible state, reported in [`Outputs::status`] when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Current role.
    pub role: Role,
    /// The leader, when following or leading.
    pub leader: Option<ServerId>,
    /// The epoch being established or served (0 while looking).
    pub epoch: u32,
    /// True when the leader is established (quorum acknowledged NEWLEADER) or the follower
    /// received UPTODATE: writes can be proposed or forwarded and reads are served.
    pub serving: bool,
}

/// A client write that reached the leader, for the application to turn into a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The server the client is connected to.
    pub origin: ServerId,
    /// The origin's request id.
    pub request_id: u64,
    /// Opaque request bytes.
    pub payload: Vec<u8>,
}

/// Effects of the calls since the last `take_outputs`, to be carried out in this order:
///
/// 1. `install_snapshot`: restore the application from it, make the log empty, persist the
///    snapshot (log first, so a crash in between leaves an older state, never a mix).
/// 2. `truncate_after`: drop log entries above the zxid and make the remaining log durable
///    (the core then treats everything up to that zxid as durable).
/// 3. `append`: write these entries to the log; fsync later (batch across calls) and report
///    with [`Peer::log_synced`].
/// 4. `hard_state`: persist durably (write + fsync) before any message below is sent.
/// 5. `messages`: send, each to its peer, in order; `snapshot_sends` are SNAP messages that
///    slot in between them (see [`SnapshotSend`]).
/// 6. `committed`: apply to the application in order.
/// 7. `forwarded`, `status`: hand to the application.
#[derive(Debug, Default)]
pub struct Outputs {
    /// A snapshot to install (SNAP sync).
    pub install_snapshot: Option<(Zxid, Vec<u8>)>,
    /// Drop log entries above this zxid (TRUNC sync).
    pub truncate_after: Option<Zxid>,
    /// Entries to append to the log.
    pub append: Vec<Txn>,
    /// Epochs to persist before sending.
    pub hard_state: Option<HardState>,
    /// Messages to peers.
    pub messages: Vec<(ServerId, Message)>,
    /// SNAP messages to peers, whose bytes the shell reads from its newest snapshot, in
    /// `before_message` order.
    pub snapshot_sends: Vec<SnapshotSend>,
    /// Newly committed entries, in zxid order.
    pub committed: Vec<Txn>,
    /// Client writes forwarded to this leader.
    pub forwarded: Vec<Forwarded>,
    /// The new status, when it changed.
    pub status: Option<Status>,
}

impl Outputs {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.install_snapshot.is_none()
            && self.truncate_after.is_none()
            && self.append.is_empty()
            && self.hard_state.is_none()
            && self.messages.is_empty()
            && self.snapshot_sends.is_empty()
            && self.committed.is_empty()
            && self.forwarded.is_empty()
            && self.status.is_none()
    }
}

/// A SNAP sync header the shell builds and sends: `Message::Sync` with
/// `SyncKind::Snap { zxid, data }`, `data` being the bytes of the snapshot at `zxid` from
/// the shell's storage (empty for zxid 0 without a snapshot file: the initial state).
///
/// The core keeps no snapshot bytes in memory (they can be hundreds of megabytes); it only
/// names the snapshot. The message goes to `to` just before `messages[before_message]`
/// (after all of them when `before_message == messages.len()`), because the proposals and
/// NEWLEADER that follow it in `messages` continue that snapshot.
///
/// If the shell cannot read that snapshot (pruned, damaged), it must treat the connection
/// to `to` as broken: send nothing more to `to` from these outputs and report
/// [`Peer::peer_disconnected`]. The learner reconnects and the core plans its sync again
/// from its then newest snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSend {
    /// The learner.
    pub to: ServerId,
    /// The snapshot to send (the core's snapshot point when it planned the sync).
    pub zxid: Zxid,
    /// Index in [`Outputs::messages`] the SNAP goes before.
    pub before_message: usize,
}

/// `propose` or `forward` on a server that cannot take writes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not the serving leader (leader hint: {leader:?})")]
pub struct NotLeader {
    /// The leader this server follows, if it knows one.
    pub leader: Option<ServerId>,
}

/// A peer broke the protocol; the shell closes that connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The sender is not one of the configured servers.
    #[error("message from unknown server {0}")]
    UnknownPeer(ServerId),
    /// The message contradicts the protocol state.
    #[error("protocol violation by server {from}: {reason}")]
    Protocol {
        /// The sender.
        from: ServerId,
        /// What was wrong.
        reason: String,
    },
}

#[derive(Debug)]
struct Election {
    vote: Vote,
    /// Votes of this round (ours included).
    recv: BTreeMap<ServerId, Vote>,
    /// Votes announced by servers that already follow or lead, with their state.
    out_of_election: BTreeMap<ServerId, (Vote, PeerState)>,
    decide_at_ms: Option<u64>,
    resend_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FollowerPhase {
    /// FOLLOWERINFO sent, waiting for LEADERINFO.
    Connecting,
    /// ACKEPOCH sent; `header` once the DIFF/TRUNC/SNAP header arrived.
    Syncing { epoch: u32, header: bool },
    /// NEWLEADER received; waiting for the log to be durable up to `last_zxid`.
    WaitDurable { epoch: u32, last_zxid: Zxid },
    /// ACKNEWLEADER sent, waiting for UPTODATE.
    Synced { epoch: u32 },
    /// Serving.
    Broadcast { epoch: u32 },
}

#[derive(Debug)]
struct Follower {
    leader: ServerId,
    phase: FollowerPhase,
    started_ms: u64,
    last_heard_ms: u64,
    resend_at_ms: u64,
    acked_zxid: Zxid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum LeaderPhase {
    /// Collecting FOLLOWERINFO from a quorum.
    Discovery,
    /// LEADERINFO sent, collecting ACKEPOCH from a quorum.
    EpochProposed,
    /// Syncing followers, collecting ACKNEWLEADER from a quorum.
    Sync,
    /// Quorum acknowledged NEWLEADER: broadcasting.
    Established,
}

#[derive(Debug)]
struct Learner {
    accepted_epoch: u32,
    last_heard_ms: u64,
    epoch_sent: bool,
    /// ACKEPOCH content.
    acked_epoch: Option<(Zxid, Vec<EpochRange>)>,
    synced: bool,
    sent_up_to: Zxid,
    newleader_zxid: Zxid,
    newleader_acked: bool,
    acked_zxid: Zxid,
    commit_sent: Zxid,
    uptodate_sent: bool,
}

#[derive(Debug)]
struct Leader {
    phase: LeaderPhase,
    epoch: u32,
    started_ms: u64,
    epoch_proposed_ms: u64,
    self_epoch_persisted: bool,
    next_ping_ms: u64,
    learners: BTreeMap<ServerId, Learner>,
}

#[derive(Debug)]
enum RoleState {
    Looking(Election),
    Following(Follower),
    Leading(Leader),
    /// Only while a handler owns the real state.
    Transient,
}

enum Next {
    Stay,
    Look,
}

/// One server's ZAB state machine.
#[derive(Debug)]
pub struct Peer {
    cfg: PeerConfig,
    now_ms: u64,
    round: u64,
    decided: Vote,
    hard: HardState,
    history: History,
    durable_zxid: Zxid,
    commit_zxid: Zxid,
    applied_zxid: Zxid,
    role: RoleState,
    out: Outputs,
    reported: Option<Status>,
    /// FOLLOWERINFO that arrived while this server was still finishing its own election
    /// (a follower may decide first): replayed if this server becomes the leader, instead
    /// of waiting for the follower's re-send.
    early_follower_info: BTreeMap<ServerId, (u64, Message)>,
}

impl Peer {
    /// A core restored from durable state; it starts looking for a leader.
    ///
    /// Nothing in `restored.log` is considered committed (the application starts from the
    /// snapshot); the leader tells which entries are.
    pub fn new(cfg: PeerConfig, restored: Restored, now_ms: u64) -> Result<Peer, String> {
        cfg.validate()?;
        let mut history = History::new(restored.snapshot_zxid);
        for txn in restored.log {
            if txn.zxid <= restored.snapshot_zxid {
                continue;
            }
            history
                .append(txn)
                .map_err(|e: GapError| format!("restored log is not contiguous: {e}"))?;
        }
        let last = history.last_zxid();
        let snap = history.snapshot_zxid();
        let mut peer = Peer {
            decided: Vote {
                leader: cfg.my_id,
                zxid: last,
                epoch: restored.hard_state.current_epoch,
            },
            cfg,
            now_ms,
            round: 0,
            hard: restored.hard_state,
            history,
            durable_zxid: last,
            commit_zxid: snap,
            applied_zxid: snap,
            role: RoleState::Transient,
            out: Outputs::default(),
            reported: None,
            early_follower_info: BTreeMap::new(),
        };
        peer.start_looking();
        Ok(peer)
    }

    // ----- queries -------------------------------------------------------------------------

    /// This server's myid.
    pub fn id(&self) -> ServerId {
        self.cfg.my_id
    }

    /// The current status.
    pub fn status(&self) -> Status {
        match &self.role {
            RoleState::Looking(_) | RoleState::Transient => Status {
                role: Role::Looking,
                leader: None,
                epoch: 0,
                serving: false,
            },
            RoleState::Following(f) => {
                let (epoch, serving) = match f.phase {
                    FollowerPhase::Connecting => (0, false),
                    FollowerPhase::Syncing { epoch, .. }
                    | FollowerPhase::WaitDurable { epoch, .. }
                    | FollowerPhase::Synced { epoch } => (epoch, false),
                    FollowerPhase::Broadcast { epoch } => (epoch, true),
                };
                Status {
                    role: Role::Following,
                    leader: Some(f.leader),
                    epoch,
                    serving,
                }
            }
            RoleState::Leading(l) => Status {
                role: Role::Leading,
                leader: Some(self.cfg.my_id),
                epoch: l.epoch,
                serving: l.phase == LeaderPhase::Established,
            },
        }
    }

    /// On a leader: (learners connected, learners synchronized and in broadcast); None on
    /// a server that does not lead.
    pub fn learner_counts(&self) -> Option<(usize, usize)> {
        match &self.role {
            RoleState::Leading(l) => Some((
                l.learners.len(),
                l.learners.values().filter(|x| x.uptodate_sent).count(),
            )),
            _ => None,
        }
    }

    /// The epoch files' content.
    pub fn hard_state(&self) -> HardState {
        self.hard
    }

    /// The in-memory history (snapshot point and log tail).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The last logged zxid.
    pub fn last_zxid(&self) -> Zxid {
        self.history.last_zxid()
    }

    /// The highest zxid known committed.
    pub fn commit_zxid(&self) -> Zxid {
        self.commit_zxid
    }

    /// The highest zxid handed out for application.
    pub fn applied_zxid(&self) -> Zxid {
        self.applied_zxid
    }

    /// The highest zxid the shell reported durable.
    pub fn durable_zxid(&self) -> Zxid {
        self.durable_zxid
    }

    /// When the core next needs a `tick` (absolute, in the caller's clock).
    pub fn next_deadline_ms(&self) -> u64 {
        let base = self.now_ms;
        match &self.role {
            RoleState::Looking(e) => e.decide_at_ms.unwrap_or(u64::MAX).min(e.resend_at_ms),
            RoleState::Following(f) => match f.phase {
                FollowerPhase::Connecting => f.resend_at_ms,
                _ => base + self.cfg.tick_ms / 2,
            },
            RoleState::Leading(l) if l.phase == LeaderPhase::Established => l.next_ping_ms,
            // Phase timeouts are in election timeouts, much shorter than the ping interval.
            RoleState::Leading(l) => l.next_ping_ms.min(base + self.cfg.election_timeout_ms / 4),
            RoleState::Transient => base,
        }
    }

    // ----- inputs --------------------------------------------------------------------------

    /// Hands out the effects accumulated since the last call.
    pub fn take_outputs(&mut self) -> Outputs {
        self.flush_leader();
        let status = self.status();
        if self.reported != Some(status) {
            self.reported = Some(status);
            self.out.status = Some(status);
        }
        std::mem::take(&mut self.out)
    }

    /// Advances time: election re-sends and decisions, pings, and every timeout.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        match std::mem::replace(&mut self.role, RoleState::Transient) {
            RoleState::Looking(mut e) => {
                if e.decide_at_ms.is_some_and(|t| now >= t) {
                    e.decide_at_ms = None;
                    if self.count_agreeing(&e.recv, &e.vote) >= self.cfg.quorum() {
                        let vote = e.vote;
                        self.decide(vote);
                        return;
                    }
                }
                if now >= e.resend_at_ms {
                    e.resend_at_ms = now + self.cfg.election_timeout_ms;
                    self.broadcast_vote(e.vote, PeerState::Looking);
                }
                self.role = RoleState::Looking(e);
            }
            RoleState::Following(mut f) => {
                let next = self.follower_tick(&mut f);
                self.finish_follower(f, next);
            }
            RoleState::Leading(mut l) => {
                let next = self.leader_tick(&mut l);
                self.finish_leader(l, next);
            }
            RoleState::Transient => {}
        }
    }

    /// Handles one message from peer `from`.
    pub fn step(&mut self, from: ServerId, msg: Message) -> Result<(), StepError> {
        if from == self.cfg.my_id || !self.cfg.voters.contains(&from) {
            return Err(StepError::UnknownPeer(from));
        }
        if let Message::Notification { vote, round, state } = msg {
            self.on_notification(from, vote, round, state);
            return Ok(());
        }
        match std::mem::replace(&mut self.role, RoleState::Transient) {
            RoleState::Looking(e) => {
                if let Message::FollowerInfo { .. } = msg {
                    self.early_follower_info.insert(from, (self.now_ms, msg));
                }
                // Anything else is stale traffic from a former leader or follower: the
                // notification exchange will bring both sides back together.
                self.role = RoleState::Looking(e);
                Ok(())
            }
            RoleState::Following(mut f) => {
                let result = if from == f.leader {
                    f.last_heard_ms = self.now_ms;
                    self.follower_step(&mut f, msg)
                } else {
                    Ok(Next::Stay)
                };
                match result {
                    Ok(next) => {
                        self.finish_follower(f, next);
                        Ok(())
                    }
                    Err(reason) => {
                        self.finish_follower(f, Next::Look);
                        Err(StepError::Protocol { from, reason })
                    }
                }
            }
            RoleState::Leading(mut l) => {
                if let Some(learner) = l.learners.get_mut(&from) {
                    learner.last_heard_ms = self.now_ms;
                }
                let result = self.leader_step(&mut l, from, msg);
                match result {
                    Ok(next) => {
                        self.finish_leader(l, next);
                        Ok(())
                    }
                    Err(reason) => {
                        l.learners.remove(&from);
                        self.finish_leader(l, Next::Stay);
                        Err(StepError::Protocol { from, reason })
                    }
                }
            }
            RoleState::Transient => Ok(()),
        }
    }

    /// Proposes a transaction; only the established leader accepts. The returned zxid is
    /// committed when it shows up in [`Outputs::committed`].
    pub fn propose(&mut self, payload: Vec<u8>) -> Result<Zxid, NotLeader> {
        let hint = self.status().leader;
        let RoleState::Leading(l) = &self.role else {
            return Err(NotLeader { leader: hint });
        };
        if l.phase != LeaderPhase::Established {
            return Err(NotLeader { leader: None });
        }
        let epoch = l.epoch;
        let last = self.history.last_zxid();
        let counter = if epoch_of(last) == epoch {
            counter_of(last)
        } else {
            0
        };
        if counter == u32::MAX {
            // ZooKeeper's answer to counter exhaustion: a new election, hence a new epoch.
            tracing::warn!(epoch, "zxid counter exhausted; starting a new election");
            self.start_looking();
            return Err(NotLeader { leader: None });
        }
        let zxid = make_zxid(epoch, counter + 1);
        // An established leader persisted its epoch as the current one before it proposes,
        // and proposes above everything in its history: zxids grow in the log.
        debug_assert_eq!(
            epoch, self.hard.current_epoch,
            "proposal outside the current epoch"
        );
        debug_assert!(zxid > last, "proposal {zxid:#x} not above {last:#x}");
        let txn = Txn { zxid, payload };
        if let Err(e) = self.history.append(txn.clone()) {
            debug_assert!(false, "leader log gap: {e}");
            return Err(NotLeader { leader: None });
        }
        self.out.append.push(txn);
        Ok(zxid)
    }

    /// Sends a client write to the leader's application (or hands it to this server's own
    /// application when it is the serving leader, through [`Outputs::forwarded`]).
    pub fn forward(&mut self, request_id: u64, payload: Vec<u8>) -> Result<(), NotLeader> {
        let me = self.cfg.my_id;
        match &self.role {
            RoleState::Leading(l) if l.phase == LeaderPhase::Established => {
                self.out.forwarded.push(Forwarded {
                    origin: me,
                    request_id,
                    payload,
                });
                Ok(())
            }
            RoleState::Following(f) if matches!(f.phase, FollowerPhase::Broadcast { .. }) => {
                let leader = f.leader;
                self.out.messages.push((
                    leader,
                    Message::Forward {
                        origin: me,
                        request_id,
                        payload,
                    },
                ));
                Ok(())
            }
            _ => Err(NotLeader {
                leader: self.status().leader,
            }),
        }
    }

    /// The shell made every appended entry up to `zxid` durable.
    pub fn log_synced(&mut self, zxid: Zxid) {
        let z = zxid.min(self.history.last_zxid());
        if z <= self.durable_zxid {
            return;
        }
        self.durable_zxid = z;
        self.after_durable();
    }

    /// The application persisted a snapshot of its state at `zxid` (which it has applied);
    /// log entries up to it are no longer kept in memory, and a SNAP sends this snapshot
    /// from now on, so the shell must be able to read it back by zxid.
    pub fn snapshot_taken(&mut self, zxid: Zxid) {
        if zxid > self.applied_zxid || zxid <= self.history.snapshot_zxid() {
            return;
        }
        self.history.compact(zxid);
    }

    /// The connection with `peer` broke; anything it sent later comes on a new connection.
    pub fn peer_disconnected(&mut self, peer: ServerId) {
        match std::mem::replace(&mut self.role, RoleState::Transient) {
            RoleState::Following(f) => {
                if f.leader == peer {
                    tracing::info!(leader = peer, "lost the connection to the leader");
                    self.finish_follower(f, Next::Look);
                } else {
                    self.role = RoleState::Following(f);
                }
            }
            RoleState::Leading(mut l) => {
                l.learners.remove(&peer);
                self.role = RoleState::Leading(l);
            }
            other => self.role = other,
        }
    }

    fn advance_commit(&mut self, zxid: Zxid) {
        let z = zxid.min(self.history.last_zxid());
        if z > self.commit_zxid {
            self.commit_zxid = z;
        }
        if self.commit_zxid > self.applied_zxid {
            let applied = self.applied_zxid;
            let commit = self.commit_zxid;
            let from = self.out.committed.len();
            self.out.committed.extend(
                self.history
                    .entries_after(applied)
                    .take_while(|t| t.zxid <= commit)
                    .cloned(),
            );
            // The application sees each zxid once, in increasing order.
            debug_assert!(
                self.out.committed[from..]
                    .iter()
                    .try_fold(applied, |prev, t| (t.zxid > prev).then_some(t.zxid))
                    .is_some(),
                "commits above {applied:#x} out of order"
            );
            self.applied_zxid = commit;
        }
    }

    fn after_durable(&mut self) {
        match std::mem::replace(&mut self.role, RoleState::Transient) {
            RoleState::Following(mut f) => {
                self.follower_durable(&mut f);
                self.role = RoleState::Following(f);
            }
            RoleState::Leading(mut l) => {
                self.leader_advance(&mut l);
                self.leader_commit(&mut l);
                self.role = RoleState::Leading(l);
            }
            other => self.role = other,
        }
    }
}

#[cfg(test)]
mod tests;
