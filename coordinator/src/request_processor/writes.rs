//! Writes: a client's write becomes a transaction with the next zxid, validated against
//! the tree and the changes proposed before it ([`crate::pending_changes`]) by the proposer
//! (this processor standalone, the ZAB leader in an ensemble); a committed transaction is
//! applied in zxid order, its watch events sent, and its client answered in its place in
//! the connection's queue.

use super::{frame, Effect, Now, Queued, RequestProcessor};
use crate::acl::AuthId;
use crate::data_tree::{create_returns_stat, TxnResult};
use crate::jute::codes::{err, event, op, xid};
use crate::jute::records::{write_multi_header, ReplyHeader, Request, RequestHeader, WatcherEvent};
use crate::jute::Writer;
use crate::pending_changes::WriteRequest;
use crate::txn::{ForwardedRequest, Txn, TxnBody, TxnHeader};
use crate::watch::ConnId;

impl RequestProcessor {
    /// A new ZAB epoch begins on this (leading) server: the next proposal is
    /// `epoch << 32 | 1`, and validation forgets proposals of the old epoch that were never
    /// committed (ZAB discards them). Ignored unless the epoch is newer than the last zxid.
    pub fn start_epoch(&mut self, epoch: u32) {
        let base = (epoch as i64) << 32;
        if base > self.last_proposed_zxid {
            self.last_proposed_zxid = base;
            self.pending.clear();
        }
    }

    fn next_zxid(&mut self) -> i64 {
        self.last_proposed_zxid += 1;
        self.last_proposed_zxid
    }

    /// Sends a state change to the proposer: this processor when standalone, the leader
    /// (through ZAB) in an ensemble.
    pub(super) fn submit(&mut self, request: ForwardedRequest, now: Now) {
        if self.cfg.ensemble {
            self.out.push(Effect::Forward {
                payload: request.encode(),
            });
        } else if let Some(payload) = self.prepare_forwarded(request, now) {
            self.out.push(Effect::Propose {
                zxid: self.last_proposed_zxid,
                payload,
            });
        }
    }

    /// A client's write (or, in an ensemble, sync): it takes its place in the connection's
    /// queue and goes to the proposer with the connection's identities.
    pub(super) fn submit_write(
        &mut self,
        conn: ConnId,
        session_id: i64,
        header: &RequestHeader,
        request: Request,
        body: &[u8],
        now: Now,
    ) {
        let sync_path = match request {
            Request::Sync { path } => Some(path),
            _ => None,
        };
        let auth = self.auth_of(conn).to_vec();
        self.queue_write(conn, header.xid, header.op, sync_path, now);
        self.submit(
            ForwardedRequest::Write {
                session_id,
                cxid: header.xid,
                op: header.op,
                body: body.to_vec(),
                auth,
            },
            now,
        );
    }

    /// On the proposer (standalone server, ZAB leader): turns a forwarded request into the
    /// transaction payload to propose next, or `None` when there is nothing to propose
    /// (session touches, undecodable input). The transaction gets zxid
    /// `last proposed + 1`; the ZAB leader must propose the returned payloads in order.
    pub fn forwarded(&mut self, payload: &[u8], now: Now) -> Option<Vec<u8>> {
        match ForwardedRequest::decode(payload) {
            Ok(request) => self.prepare_forwarded(request, now),
            Err(e) => {
                tracing::warn!("undecodable forwarded request dropped: {e}");
                None
            }
        }
    }

    fn prepare_forwarded(&mut self, request: ForwardedRequest, now: Now) -> Option<Vec<u8>> {
        match request {
            ForwardedRequest::Prepared(txn) => {
                if matches!(txn.body, TxnBody::CloseSession) {
                    self.sessions.set_closing(txn.header.session_id);
                }
                self.next_zxid();
                Some(txn.encode())
            }
            ForwardedRequest::Touch { session_ids } => {
                for id in session_ids {
                    self.sessions.touch(id, now.mono_ms);
                }
                None
            }
            ForwardedRequest::Write {
                session_id,
                cxid,
                op: op_code,
                body,
                auth,
            } => {
                let zxid = self.next_zxid();
                let body = if !self.sessions.touch(session_id, now.mono_ms) {
                    TxnBody::Error {
                        err: err::SESSION_EXPIRED,
                    }
                } else {
                    self.validate_write(session_id, &auth, zxid, op_code, &body)
                };
                Some(
                    Txn {
                        header: TxnHeader {
                            session_id,
                            cxid,
                            time_ms: now.wall_ms,
                        },
                        body,
                    }
                    .encode(),
                )
            }
        }
    }

    /// The transaction of a client's write (request `body` of `op_code`) at `zxid`: its
    /// changes if it is valid against the tree and the changes proposed before it, else the
    /// error its client gets.
    fn validate_write(
        &mut self,
        session_id: i64,
        auth: &[AuthId],
        zxid: i64,
        op_code: i32,
        body: &[u8],
    ) -> TxnBody {
        match Request::decode(op_code, body) {
            Ok(request) => match write_request(&request) {
                Some(write) => self
                    .pending
                    .prepare(&self.tree, session_id, auth, zxid, write),
                // A forwarded sync: an empty transaction whose commit tells the
                // origin it has seen everything before it.
                None if op_code == op::SYNC => TxnBody::Error { err: err::OK },
                None => TxnBody::Error {
                    err: err::BAD_ARGUMENTS,
                },
            },
            Err(_) => TxnBody::Error {
                err: err::MARSHALLING_ERROR,
            },
        }
    }

    /// A transaction was committed (by the local log or by ZAB), in zxid order: apply it,
    /// notify watchers, answer the client that asked (if connected here).
    pub fn commit(&mut self, zxid: i64, payload: &[u8], now: Now) {
        self.clock_ms = self.clock_ms.max(now.mono_ms);
        let txn = match Txn::decode(payload) {
            Ok(t) => t,
            Err(e) => {
                // Replication delivered bytes this server cannot read: the replicas would
                // diverge if we skipped it silently.
                tracing::error!("committed transaction {zxid:#x} does not decode: {e}");
                return;
            }
        };
        if zxid <= self.tree.last_zxid() {
            tracing::warn!("transaction {zxid:#x} already applied, skipped");
            return;
        }
        let result = self.apply(zxid, &txn);
        let session_id = txn.header.session_id;
        match &txn.body {
            TxnBody::CreateSession { timeout_ms, passwd } => {
                self.session_created(session_id, *timeout_ms, *passwd, now)
            }
            TxnBody::CloseSession => self.session_closed(zxid, &txn, &result, now),
            _ => {
                if let Some(conn) = self.session_conn.get(&session_id).copied() {
                    self.finish_write(conn, zxid, &txn, &result, now);
                }
            }
        }
        self.applied_since_snapshot += 1;
        if self.applied_since_snapshot >= self.cfg.snap_count {
            self.applied_since_snapshot = 0;
            self.out.push(Effect::Snapshot {
                zxid,
                image: self.tree.image(),
            });
        }
    }

    /// Applies `txn` to the tree at `zxid` and sends the watch events it triggers.
    fn apply(&mut self, zxid: i64, txn: &Txn) -> TxnResult {
        debug_assert!(
            zxid > self.tree.last_zxid(),
            "transaction {zxid:#x} applied twice"
        );
        let mut triggers = Vec::new();
        let result = self.tree.apply(zxid, txn, &mut triggers);
        self.stats.commits += 1;
        self.pending.applied(zxid);
        self.last_proposed_zxid = self.last_proposed_zxid.max(zxid);
        let mut events = Vec::new();
        for (path, kind) in triggers {
            self.watches.trigger(&path, kind, &mut events);
        }
        for (conn, kind, path) in events {
            let f = notification(zxid, kind, &path);
            self.send(conn, f);
        }
        result
    }

    /// Answers the connection's first uncommitted write if `txn` is its transaction (same
    /// xid, and a close-session only for a closeSession request), then what waits behind it.
    /// When reads held back for a congested connection are ahead of it, the reply waits in
    /// the write's place.
    pub(super) fn finish_write(
        &mut self,
        conn: ConnId,
        zxid: i64,
        txn: &Txn,
        result: &TxnResult,
        now: Now,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(at) = c
            .queue
            .iter()
            .position(|q| matches!(q, Queued::Write { .. }))
        else {
            return;
        };
        let Queued::Write {
            xid,
            op: queued_op,
            received_ms,
            sync_path,
        } = &mut c.queue[at]
        else {
            return;
        };
        let closing = matches!(txn.body, TxnBody::CloseSession);
        if *xid != txn.header.cxid || closing != (*queued_op == op::CLOSE_SESSION) {
            return;
        }
        let (xid, received_ms, sync_path) = (*xid, *received_ms, sync_path.take());
        let f = match (sync_path, result) {
            (Some(path), TxnResult::Error(err::OK)) => frame(
                ReplyHeader {
                    xid,
                    zxid,
                    err: err::OK,
                },
                |w| {
                    w.string(&path);
                },
            ),
            _ => write_reply(xid, zxid, result),
        };
        c.queue[at] = Queued::Answered { frame: f };
        let ms = now.mono_ms.saturating_sub(received_ms);
        self.stats.record_latency(ms);
        self.stats.update_latency.observe_ms(ms);
        self.drain(conn);
    }
}

/// The validation shape of a write request; `None` for everything else.
pub(super) fn write_request(request: &Request) -> Option<WriteRequest<'_>> {
    Some(match request {
        Request::Create { op, request } => WriteRequest::Create { op: *op, request },
        Request::Delete { path, version } => WriteRequest::Delete {
            path,
            version: *version,
        },
        Request::SetData {
            path,
            data,
            version,
        } => WriteRequest::SetData {
            path,
            data: data.as_deref(),
            version: *version,
        },
        Request::SetAcl { path, acl, version } => WriteRequest::SetAcl {
            path,
            acl,
            version: *version,
        },
        Request::Multi(ops) => WriteRequest::Multi(ops),
        _ => return None,
    })
}

pub(super) fn notification(zxid: i64, kind: i32, path: &str) -> Vec<u8> {
    let mut w = Writer::frame();
    ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid,
        err: err::OK,
    }
    .encode(&mut w);
    WatcherEvent {
        kind,
        state: event::STATE_SYNC_CONNECTED,
        path: path.to_owned(),
    }
    .encode(&mut w);
    w.finish_frame()
}

fn write_result(w: &mut Writer, result: &TxnResult) {
    match result {
        TxnResult::Created { path, stat, op } => {
            w.string(path);
            if create_returns_stat(*op) {
                stat.encode(w);
            }
        }
        TxnResult::DataSet { stat } | TxnResult::AclSet { stat } => stat.encode(w),
        TxnResult::Multi(results) => {
            for r in results {
                match r {
                    TxnResult::Created { op, .. } => write_multi_header(w, *op, false, err::OK),
                    TxnResult::Deleted => write_multi_header(w, op::DELETE, false, err::OK),
                    TxnResult::DataSet { .. } => {
                        write_multi_header(w, op::SET_DATA, false, err::OK)
                    }
                    TxnResult::Checked => write_multi_header(w, op::CHECK, false, err::OK),
                    TxnResult::Error(e) => {
                        write_multi_header(w, op::ERROR, false, *e);
                        w.i32(*e);
                        continue;
                    }
                    other => {
                        tracing::error!("unexpected result inside multi: {other:?}");
                        write_multi_header(w, op::ERROR, false, err::RUNTIME_INCONSISTENCY);
                        w.i32(err::RUNTIME_INCONSISTENCY);
                        continue;
                    }
                }
                write_result(w, r);
            }
            write_multi_header(w, -1, true, -1);
        }
        TxnResult::SessionCreated
        | TxnResult::SessionClosed
        | TxnResult::Deleted
        | TxnResult::Checked
        | TxnResult::Error(_) => {}
    }
}

fn write_reply(xid: i32, zxid: i64, result: &TxnResult) -> Vec<u8> {
    let code = match result {
        TxnResult::Error(e) => *e,
        _ => err::OK,
    };
    frame(
        ReplyHeader {
            xid,
            zxid,
            err: code,
        },
        |w| write_result(w, result),
    )
}
