//! Sessions: created by a connect without one, resumed by a connect naming one, closed by
//! closeSession or expiry, each change a transaction of its own so every replica makes it at
//! the same zxid; and what a change of this server's ZAB role (leader or not, a snapshot
//! from the leader) does to session liveness.

use super::{Effect, Now, RequestProcessor};
use crate::data_tree::{DataTree, TxnResult};
use crate::jute::codes::op;
use crate::jute::records::{ConnectRequest, ConnectResponse};
use crate::jute::Writer;
use crate::session::{expiry_interval_ms, negotiate_timeout_ms, SessionTracker};
use crate::txn::{ForwardedRequest, Txn, TxnBody, TxnHeader};
use crate::watch::ConnId;

impl RequestProcessor {
    /// The first frame of a connection: a new session, or one resumed (as the client asks).
    pub fn connect(&mut self, conn: ConnId, body: &[u8], now: Now) {
        self.clock_ms = self.clock_ms.max(now.mono_ms);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.packets_received += 1;
        self.stats.packets_received += 1;
        let req = match ConnectRequest::decode(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(conn, "bad connect request: {e}");
                self.close(conn);
                return;
            }
        };
        if req.last_zxid_seen > self.tree.last_zxid() {
            // The client saw a newer state than ours (it was on a more up-to-date server);
            // ZooKeeper refuses so the client tries another server.
            tracing::info!(
                conn,
                "refusing session: client has seen zxid {:#x}, ours is {:#x}",
                req.last_zxid_seen,
                self.tree.last_zxid()
            );
            self.close(conn);
            return;
        }
        let read_only = req.read_only.is_some();
        if req.session_id == 0 {
            self.create_session(conn, req.timeout_ms, read_only, now);
        } else {
            self.resume_session(conn, &req, read_only, now);
        }
    }

    /// A connect without a session: the create-session transaction is proposed, and the
    /// connection answered when it commits ([`Self::session_created`]).
    fn create_session(
        &mut self,
        conn: ConnId,
        requested_timeout_ms: i32,
        read_only: bool,
        now: Now,
    ) {
        let timeout_ms = negotiate_timeout_ms(
            requested_timeout_ms,
            self.cfg.min_session_timeout_ms,
            self.cfg.max_session_timeout_ms,
        );
        let session_id = self.id_gen.next_id();
        let passwd: [u8; 16] = rand::random();
        self.connecting.insert(session_id, (conn, read_only));
        self.propose_session_change(
            session_id,
            0,
            TxnBody::CreateSession { timeout_ms, passwd },
            now,
        );
    }

    /// A connect naming a session: resumed on this connection (taken from the one that had
    /// it) when it lives and the password matches; otherwise answered with no session and
    /// closed, as ZooKeeper tells a client its session expired.
    fn resume_session(&mut self, conn: ConnId, req: &ConnectRequest, read_only: bool, now: Now) {
        let valid = match self.tree.session(req.session_id) {
            Some(s) => {
                s.passwd[..] == req.passwd[..] && self.sessions.touch(req.session_id, now.mono_ms)
            }
            None => false,
        };
        if !valid {
            self.send_connect_response(conn, 0, 0, [0; 16], read_only);
            self.close(conn);
            return;
        }
        let Some(s) = self.tree.session(req.session_id).copied() else {
            return;
        };
        if let Some(old) = self.session_conn.insert(req.session_id, conn) {
            if old != conn {
                // The session moved to this connection; the old one must not act for it.
                if let Some(c) = self.conns.get_mut(&old) {
                    c.session_id = None;
                }
                self.close(old);
            }
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session_id = Some(req.session_id);
        }
        self.note_activity(req.session_id);
        self.send_connect_response(conn, s.timeout_ms, req.session_id, s.passwd, read_only);
    }

    fn send_connect_response(
        &mut self,
        conn: ConnId,
        timeout_ms: i32,
        session_id: i64,
        passwd: [u8; 16],
        read_only: bool,
    ) {
        let mut w = Writer::frame();
        ConnectResponse {
            protocol_version: 0,
            timeout_ms,
            session_id,
            passwd: passwd.to_vec(),
            read_only: read_only.then_some(false),
        }
        .encode(&mut w);
        self.send(conn, w.finish_frame());
    }

    /// closeSession: later requests of the connection are ignored, the session stops being
    /// expired or touched, and its close-session transaction is proposed; the answer comes
    /// when it commits ([`Self::session_closed`]).
    pub(super) fn close_session(&mut self, conn: ConnId, session_id: i64, xid: i32, now: Now) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.close_requested = true;
        }
        self.sessions.set_closing(session_id);
        self.queue_write(conn, xid, op::CLOSE_SESSION, None, now);
        self.propose_session_change(session_id, xid, TxnBody::CloseSession, now);
    }

    /// Proposes a session's change (create, close) as a transaction of its own.
    fn propose_session_change(&mut self, session_id: i64, cxid: i32, body: TxnBody, now: Now) {
        self.submit(
            ForwardedRequest::Prepared(Txn {
                header: TxnHeader {
                    session_id,
                    cxid,
                    time_ms: now.wall_ms,
                },
                body,
            }),
            now,
        );
    }

    /// A create-session transaction committed: the session is tracked for expiry, and the
    /// connection that asked for it (if still here) gets its connect response, then the
    /// requests it sent behind the connect are handled.
    pub(super) fn session_created(
        &mut self,
        session_id: i64,
        timeout_ms: i32,
        passwd: [u8; 16],
        now: Now,
    ) {
        self.sessions
            .add(session_id, timeout_ms.max(0) as u64, now.mono_ms);
        let Some((conn, read_only)) = self.connecting.remove(&session_id) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.session_id = Some(session_id);
        self.session_conn.insert(session_id, conn);
        self.send_connect_response(conn, timeout_ms, session_id, passwd, read_only);
        let early = self
            .conns
            .get_mut(&conn)
            .map(|c| std::mem::take(&mut c.early))
            .unwrap_or_default();
        for frame_body in early {
            self.request(conn, &frame_body, now);
        }
    }

    /// A close-session transaction committed: the session is forgotten, and the connection
    /// that carried it (if here) gets the answer to its closeSession and is closed.
    pub(super) fn session_closed(&mut self, zxid: i64, txn: &Txn, result: &TxnResult, now: Now) {
        let session_id = txn.header.session_id;
        self.sessions.remove(session_id);
        self.touched.remove(&session_id);
        if let Some(conn) = self.session_conn.remove(&session_id) {
            self.finish_write(conn, zxid, txn, result, now);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.session_id = None;
            }
            self.close(conn);
        }
    }

    /// An ensemble follower reports client activity to the leader, which expires sessions.
    pub(super) fn note_activity(&mut self, session_id: i64) {
        if self.cfg.ensemble && !self.is_leader {
            self.touched.insert(session_id);
        }
    }

    /// Periodic work: the proposer expires sessions whose clients went quiet (each becomes
    /// a close-session transaction); an ensemble follower reports its clients' activity.
    pub fn tick(&mut self, now: Now) {
        self.clock_ms = self.clock_ms.max(now.mono_ms);
        if self.cfg.ensemble && !self.is_leader {
            if !self.touched.is_empty() {
                let session_ids = std::mem::take(&mut self.touched).into_iter().collect();
                self.out.push(Effect::Forward {
                    payload: ForwardedRequest::Touch { session_ids }.encode(),
                });
            }
            return;
        }
        for session_id in self.sessions.expire(now.mono_ms) {
            tracing::info!("session {session_id:#x} expired");
            self.propose_session_change(session_id, 0, TxnBody::CloseSession, now);
        }
    }

    /// Ensemble: ZAB changed this server's role. A new leader gives every session a full
    /// timeout from now (its view of their activity is stale) and forgets validation
    /// records of proposals that may never commit; see also [`Self::start_epoch`].
    pub fn set_leader(&mut self, leader: bool, now: Now) {
        if leader && !self.is_leader {
            let sessions: Vec<(i64, i32)> = self
                .tree
                .sessions()
                .map(|(id, s)| (id, s.timeout_ms))
                .collect();
            for (id, timeout_ms) in sessions {
                self.sessions.add(id, timeout_ms.max(0) as u64, now.mono_ms);
            }
            self.pending.clear();
        }
        if !leader && self.is_leader {
            // Proposals this server made as leader and that never committed are gone; the
            // outstanding count must not keep counting them.
            self.last_proposed_zxid = self.tree.last_zxid();
            self.pending.clear();
        }
        self.is_leader = leader;
    }

    /// Ensemble: ZAB replaced this server's state with a snapshot (start-up, or SNAP from
    /// the leader). Connections are closed (their view of the tree moves), sessions found in
    /// the snapshot get a full timeout from `now`, and validation starts over.
    pub fn restore(&mut self, tree: DataTree, now: Now) {
        self.close_all_connections();
        let mut sessions = SessionTracker::new(expiry_interval_ms(self.cfg.tick_ms as u64));
        for (id, s) in tree.sessions() {
            sessions.add(id, s.timeout_ms.max(0) as u64, now.mono_ms);
        }
        self.sessions = sessions;
        self.last_proposed_zxid = tree.last_zxid();
        self.tree = tree;
        self.pending.clear();
        self.touched.clear();
        self.applied_since_snapshot = 0;
    }
}
