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

use std::collections::BTreeMap;

use super::config::PeerConfig;
use super::history::{GapError, History, Repair};
use super::message::{EpochRange, Message, PeerState, SyncKind, Txn, Vote};
use super::zxid::{counter_of, epoch_of, fmt_zxid, make_zxid, ServerId, Zxid};

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

    // ----- election ------------------------------------------------------------------------

    fn own_vote(&self) -> Vote {
        Vote {
            leader: self.cfg.my_id,
            zxid: self.history.last_zxid(),
            epoch: self.hard.current_epoch,
        }
    }

    fn start_looking(&mut self) {
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
    fn tell_vote(&mut self, to: ServerId, vote: Vote) {
        self.out.messages.push((
            to,
            Message::Notification {
                vote,
                round: self.round,
                state: PeerState::Looking,
            },
        ));
    }

    fn broadcast_vote(&mut self, vote: Vote, state: PeerState) {
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

    fn count_agreeing(&self, votes: &BTreeMap<ServerId, Vote>, vote: &Vote) -> usize {
        votes.values().filter(|v| *v == vote).count()
    }

    fn my_state(&self) -> PeerState {
        match self.role {
            RoleState::Following(_) => PeerState::Following,
            RoleState::Leading(_) => PeerState::Leading,
            _ => PeerState::Looking,
        }
    }

    fn maybe_schedule_decision(&mut self) {
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

    fn on_notification(&mut self, from: ServerId, vote: Vote, round: u64, state: PeerState) {
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

    fn decide(&mut self, vote: Vote) {
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

    fn send_follower_info(&mut self, leader: ServerId) {
        self.out.messages.push((
            leader,
            Message::FollowerInfo {
                accepted_epoch: self.hard.accepted_epoch,
                accepted_leader: self.hard.accepted_leader,
                last_zxid: self.history.last_zxid(),
            },
        ));
    }

    // ----- follower ------------------------------------------------------------------------

    fn finish_follower(&mut self, f: Follower, next: Next) {
        match next {
            Next::Stay => self.role = RoleState::Following(f),
            Next::Look => self.start_looking(),
        }
    }

    fn follower_tick(&mut self, f: &mut Follower) -> Next {
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

    fn follower_step(&mut self, f: &mut Follower, msg: Message) -> Result<Next, String> {
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

    fn apply_sync(&mut self, kind: SyncKind) -> Result<(), String> {
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

    fn follower_durable(&mut self, f: &mut Follower) {
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

    fn follower_ack(&mut self, f: &mut Follower) {
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

    // ----- leader --------------------------------------------------------------------------

    fn finish_leader(&mut self, mut l: Leader, next: Next) {
        match next {
            Next::Stay => {
                self.leader_advance(&mut l);
                self.role = RoleState::Leading(l);
            }
            Next::Look => self.start_looking(),
        }
    }

    fn leader_tick(&mut self, l: &mut Leader) -> Next {
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

    fn leader_step(
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

    fn leader_advance(&mut self, l: &mut Leader) {
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

    fn sync_learner(&mut self, l: &mut Leader, id: ServerId) {
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

    fn leader_commit(&mut self, l: &mut Leader) {
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
    fn flush_leader(&mut self) {
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

#[cfg(test)]
mod tests {
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
        let mut p =
            Peer::new(PeerConfig::new(3, vec![1, 2, 3]), Restored::default(), 0).expect("peer");
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
        let mut p =
            Peer::new(PeerConfig::new(1, vec![1, 2, 3]), Restored::default(), 0).expect("peer");
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
}
