//! A client connection's life (open, close, gone) and the order of what it is sent: one
//! FIFO queue per connection, so answers leave in request order behind the connection's
//! uncommitted writes, and the count of bytes handed out and not yet written, past which
//! reads wait and the shell stops reading the socket.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::{frame, Conn, Effect, Now, Queued, RequestProcessor};
use crate::acl::AuthId;
use crate::jute::records::{ReplyHeader, Request};
use crate::jute::Writer;
use crate::watch::ConnId;

impl RequestProcessor {
    /// A connection was accepted.
    pub fn open(&mut self, conn: ConnId, remote: String) {
        let remote_ip = remote.parse::<SocketAddr>().ok().map(|a| a.ip());
        let auth = remote_ip
            .map(|ip| AuthId::new("ip", &ip.to_string()))
            .into_iter()
            .collect();
        self.conns.insert(
            conn,
            Conn {
                remote,
                remote_ip,
                auth,
                session_id: None,
                early: Vec::new(),
                queue: VecDeque::new(),
                closing: false,
                close_requested: false,
                packets_received: 0,
                packets_sent: 0,
                unwritten_bytes: 0,
            },
        );
    }

    /// The connection is gone (socket closed by either side). Its session lives on until it
    /// expires or a client reconnects to it.
    pub fn closed(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(sid) = c.session_id {
                if self.session_conn.get(&sid) == Some(&conn) {
                    self.session_conn.remove(&sid);
                }
            }
        }
        self.connecting.retain(|_, (c, _)| *c != conn);
        self.watches.remove_conn(conn);
    }

    pub(super) fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.closing {
                c.closing = true;
                self.out.push(Effect::Close { conn });
            }
        }
    }

    /// Ensemble: this server lost its leader (or its quorum). Forwarded writes may never
    /// commit, so, like a ZooKeeper follower that stops serving, close every client
    /// connection; clients reconnect (here or elsewhere) with their session and retry.
    pub fn close_all_connections(&mut self) {
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            self.close(conn);
        }
        self.pending.clear();
    }

    pub(super) fn send(&mut self, conn: ConnId, frame: Vec<u8>) {
        let bytes_max = self.cfg.connection_queue_bytes_max;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.packets_sent += 1;
            self.stats.packets_sent += 1;
            let was_congested = c.congested(bytes_max);
            c.unwritten_bytes += frame.len();
            self.out.push(Effect::Send { conn, frame });
            if !was_congested && c.congested(bytes_max) {
                self.out.push(Effect::StopReading { conn });
            }
        }
    }

    /// The shell wrote `bytes` of the frames handed out for `conn` to its socket. Reads held
    /// back while the connection was congested are answered once it is not.
    pub fn written(&mut self, conn: ConnId, bytes: usize) {
        let bytes_max = self.cfg.connection_queue_bytes_max;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let was_congested = c.congested(bytes_max);
        debug_assert!(
            bytes <= c.unwritten_bytes,
            "connection {conn}: {bytes} bytes written of {} handed out",
            c.unwritten_bytes
        );
        c.unwritten_bytes = c.unwritten_bytes.saturating_sub(bytes);
        if was_congested && !c.congested(bytes_max) {
            self.out.push(Effect::ResumeReading { conn });
            self.drain(conn);
        }
    }

    /// Counts a request frame of `conn` and decides whether it is handled now: the session
    /// it acts for, or `None` when it is not (the connection is closing, has asked to close
    /// its session, has too many requests waiting, or has no session yet: a frame behind a
    /// connect whose session is being created waits for it, any other closes the connection).
    pub(super) fn admit_request(&mut self, conn: ConnId, frame_body: &[u8]) -> Option<i64> {
        let c = self.conns.get_mut(&conn)?;
        if c.closing {
            return None;
        }
        c.packets_received += 1;
        self.stats.packets_received += 1;
        if c.close_requested {
            return None;
        }
        if c.queue.len() + c.early.len() >= self.cfg.max_queued_per_connection {
            tracing::warn!(
                conn,
                "more than {} requests waiting on one connection; closing it",
                self.cfg.max_queued_per_connection
            );
            self.close(conn);
            return None;
        }
        if c.session_id.is_none() {
            if self.connecting.values().any(|(c, _)| *c == conn) {
                // Behind a connect whose session is being created: handled after the
                // connect response, as ZooKeeper reads no more of the socket until then.
                // Counted again when it is handled.
                c.packets_received -= 1;
                self.stats.packets_received -= 1;
                c.early.push(frame_body.to_vec());
                return None;
            }
            // A request before any connect request: ZooKeeper drops the connection.
            self.close(conn);
            return None;
        }
        c.session_id
    }

    pub(super) fn queue_write(
        &mut self,
        conn: ConnId,
        xid: i32,
        op: i32,
        sync_path: Option<String>,
        now: Now,
    ) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queue.push_back(Queued::Write {
                xid,
                op,
                sync_path,
                received_ms: now.mono_ms,
            });
        }
    }

    pub(super) fn queue_read(&mut self, conn: ConnId, xid: i32, request: Request, now: Now) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queue.push_back(Queued::Read {
                xid,
                request,
                received_ms: now.mono_ms,
            });
        }
        self.drain(conn);
    }

    /// Answers what waits at the head of the connection's queue, up to its first write not
    /// yet committed; while the connection is congested, reads stay queued (answers already
    /// made, of writes and errors, still go: they take no new memory).
    pub(super) fn drain(&mut self, conn: ConnId) {
        let bytes_max = self.cfg.connection_queue_bytes_max;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            match c.queue.front() {
                Some(Queued::Read { .. }) if c.congested(bytes_max) => return,
                Some(Queued::Read { .. } | Queued::Fail { .. } | Queued::Answered { .. }) => {}
                Some(Queued::Write { .. }) | None => return,
            }
            match c.queue.pop_front() {
                Some(Queued::Read {
                    xid,
                    request,
                    received_ms,
                }) => {
                    let ping = matches!(request, Request::Ping);
                    self.answer_read(conn, xid, request);
                    if !ping {
                        self.stats
                            .read_latency
                            .observe_ms(self.clock_ms.saturating_sub(received_ms));
                    }
                }
                Some(Queued::Answered { frame }) => self.send(conn, frame),
                Some(Queued::Fail { xid, err, close }) => {
                    self.reply(conn, xid, err, |_| {});
                    if close {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.queue.clear();
                        }
                        self.close(conn);
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    pub(super) fn queue_fail(&mut self, conn: ConnId, xid: i32, err: i32, close: bool) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queue.push_back(Queued::Fail { xid, err, close });
        }
        self.drain(conn);
    }

    pub(super) fn reply(
        &mut self,
        conn: ConnId,
        xid: i32,
        error: i32,
        body: impl FnOnce(&mut Writer),
    ) {
        let f = frame(
            ReplyHeader {
                xid,
                zxid: self.tree.last_zxid(),
                err: error,
            },
            body,
        );
        self.send(conn, f);
    }
}
