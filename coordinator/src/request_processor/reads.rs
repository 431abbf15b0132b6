//! Reads: each answered from the committed tree once the connection's earlier requests
//! are (so a client reads its own writes), with the ACL check of the node, and the watches
//! a read or a watch request (setWatches, addWatch, checkWatches, removeWatches) registers.

use super::writes::notification;
use super::RequestProcessor;
use crate::acl;
use crate::data_tree::validate_path;
use crate::jute::codes::{add_watch_mode, err, event, op, perms, watcher_type, xid};
use crate::jute::records::{write_acl_vec, write_multi_header, Request, SetWatches};
use crate::jute::Writer;
use crate::watch::{ConnId, WatchKind};

impl RequestProcessor {
    /// Answers a read (or a watch or control request) from the committed tree; the
    /// connection's earlier requests are answered already.
    pub(super) fn answer_read(&mut self, conn: ConnId, xid: i32, request: Request) {
        match request {
            Request::Ping => self.reply(conn, xid::PING, err::OK, |_| {}),
            Request::Exists { path, watch } => self.answer_exists(conn, xid, &path, watch),
            Request::GetData { path, watch } => {
                self.answer_node(conn, xid, &path, WatchKind::Data, watch, true)
            }
            Request::GetChildren { path, watch } => {
                self.answer_node(conn, xid, &path, WatchKind::Child, watch, false)
            }
            Request::GetChildren2 { path, watch } => {
                self.answer_node(conn, xid, &path, WatchKind::Child, watch, true)
            }
            Request::GetAcl { path } => self.answer_get_acl(conn, xid, &path),
            Request::Check { path, version } => {
                let result = self.readable(conn, &path).and_then(|n| {
                    if version == -1 || version == n.version {
                        Ok(())
                    } else {
                        Err(err::BAD_VERSION)
                    }
                });
                self.reply(conn, xid, result.err().unwrap_or(err::OK), |_| {});
            }
            Request::Sync { path } => {
                self.reply(conn, xid, err::OK, |w| {
                    w.string(&path);
                });
            }
            Request::MultiRead(ops) => self.answer_multi_read(conn, xid, ops),
            Request::SetWatches { watches, .. } => self.set_watches(conn, xid, watches),
            Request::CheckWatches { path, kind } => {
                self.answer_check_watches(conn, xid, &path, kind)
            }
            Request::RemoveWatches { path, kind } => {
                self.answer_remove_watches(conn, xid, &path, kind)
            }
            Request::GetEphemerals { prefix } => self.answer_ephemerals(conn, xid, &prefix),
            Request::GetAllChildrenNumber { path } => match self.readable(conn, &path) {
                Ok(_) => {
                    let n = self.tree.descendant_count(&path) as i32;
                    self.reply(conn, xid, err::OK, |w| {
                        w.i32(n);
                    })
                }
                Err(e) => self.reply(conn, xid, e, |_| {}),
            },
            Request::WhoAmI => self.answer_who_am_i(conn, xid),
            Request::AddWatch { path, mode } => self.add_watch(conn, xid, &path, mode),
            Request::Unimplemented { .. } => self.reply(conn, xid, err::UNIMPLEMENTED, |_| {}),
            // Writes, closeSession and auth never reach the read queue.
            Request::Create { .. }
            | Request::Delete { .. }
            | Request::SetData { .. }
            | Request::SetAcl { .. }
            | Request::Multi(_)
            | Request::CloseSession
            | Request::Auth { .. } => {
                self.reply(conn, xid, err::SYSTEM_ERROR, |_| {});
            }
        }
    }

    fn answer_exists(&mut self, conn: ConnId, xid: i32, path: &str, watch: bool) {
        if validate_path(path).is_err() {
            return self.reply(conn, xid, err::BAD_ARGUMENTS, |_| {});
        }
        if watch {
            self.watches.add(path, WatchKind::Data, conn);
        }
        // Like ZooKeeper 3.9: a node that exists needs READ to be seen.
        match self.readable(conn, path).map(|n| n.stat()) {
            Ok(stat) => self.reply(conn, xid, err::OK, |w| stat.encode(w)),
            Err(e) => self.reply(conn, xid, e, |_| {}),
        }
    }

    /// getData (`WatchKind::Data`: the data and the stat) or getChildren
    /// (`WatchKind::Child`: the names, and the stat for getChildren2) of a readable node,
    /// with a watch of that kind if asked.
    fn answer_node(
        &mut self,
        conn: ConnId,
        xid: i32,
        path: &str,
        kind: WatchKind,
        watch: bool,
        with_stat: bool,
    ) {
        match self.readable(conn, path) {
            Ok(node) => {
                let mut body = Writer::new();
                if kind == WatchKind::Data {
                    body.opt_buffer(node.data.as_deref());
                } else {
                    let children: Vec<&str> = self.tree.children(path).collect();
                    body.string_vec(&children);
                }
                if with_stat {
                    node.stat().encode(&mut body);
                }
                if watch {
                    self.watches.add(path, kind, conn);
                }
                self.reply(conn, xid, err::OK, |w| {
                    w.bytes.extend_from_slice(&body.bytes)
                });
            }
            Err(e) => self.reply(conn, xid, e, |_| {}),
        }
    }

    fn answer_get_acl(&mut self, conn: ConnId, xid: i32, path: &str) {
        match self.permitted(conn, path, perms::READ | perms::ADMIN) {
            Ok(node) => {
                let list = self.tree.acl(node);
                // Without ADMIN the digests' hashes are hidden.
                let shown = if acl::allowed(list, perms::ADMIN, self.auth_of(conn)) {
                    list.to_vec()
                } else {
                    acl::redacted(list)
                };
                let stat = node.stat();
                self.reply(conn, xid, err::OK, |w| {
                    write_acl_vec(w, &shown);
                    stat.encode(w);
                })
            }
            Err(e) => self.reply(conn, xid, e, |_| {}),
        }
    }

    /// multiRead: each getData or getChildren answered (or failed) on its own, in order.
    fn answer_multi_read(&mut self, conn: ConnId, xid: i32, ops: Vec<(i32, String, bool)>) {
        let mut body = Writer::new();
        for (kind, path, watch) in ops {
            match self.readable(conn, &path) {
                Ok(node) => {
                    write_multi_header(&mut body, kind, false, err::OK);
                    if kind == op::GET_DATA {
                        body.opt_buffer(node.data.as_deref());
                        node.stat().encode(&mut body);
                        if watch {
                            self.watches.add(&path, WatchKind::Data, conn);
                        }
                    } else {
                        let children: Vec<&str> = self.tree.children(&path).collect();
                        body.string_vec(&children);
                        if watch {
                            self.watches.add(&path, WatchKind::Child, conn);
                        }
                    }
                }
                Err(e) => {
                    write_multi_header(&mut body, op::ERROR, false, e);
                    body.i32(e);
                }
            }
        }
        write_multi_header(&mut body, -1, true, -1);
        self.reply(conn, xid, err::OK, |w| {
            w.bytes.extend_from_slice(&body.bytes)
        });
    }

    /// checkWatches: OK when the connection has a watch of `kind` on `path`.
    fn answer_check_watches(&mut self, conn: ConnId, xid: i32, path: &str, kind: i32) {
        let Some(kinds) = watch_kinds(kind) else {
            return self.reply(conn, xid, err::BAD_ARGUMENTS, |_| {});
        };
        let found = kinds.iter().any(|k| self.watches.contains(path, *k, conn));
        let code = if found { err::OK } else { err::NO_WATCHER };
        self.reply(conn, xid, code, |_| {});
    }

    /// removeWatches: the connection's watches of `kind` on `path` removed, OK if any was.
    fn answer_remove_watches(&mut self, conn: ConnId, xid: i32, path: &str, kind: i32) {
        let Some(kinds) = watch_kinds(kind) else {
            return self.reply(conn, xid, err::BAD_ARGUMENTS, |_| {});
        };
        let mut found = false;
        for k in kinds {
            found |= self.watches.remove(path, k, conn);
        }
        let code = if found { err::OK } else { err::NO_WATCHER };
        self.reply(conn, xid, code, |_| {});
    }

    /// getEphemerals: the paths of the session's ephemerals under `prefix`.
    fn answer_ephemerals(&mut self, conn: ConnId, xid: i32, prefix: &str) {
        let session_id = self
            .conns
            .get(&conn)
            .and_then(|c| c.session_id)
            .unwrap_or(0);
        let paths: Vec<String> = self
            .tree
            .ephemerals_of(session_id)
            .filter(|p| prefix.is_empty() || prefix == "/" || p.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        self.reply(conn, xid, err::OK, |w| {
            w.string_vec(&paths);
        });
    }

    /// whoAmI: ZooKeeper's ClientInfo list, the scheme and the user of each identity (a
    /// digest shows its user name, never its hash).
    fn answer_who_am_i(&mut self, conn: ConnId, xid: i32) {
        let infos: Vec<(String, String)> = self
            .auth_of(conn)
            .iter()
            .filter(|i| i.scheme != "super")
            .map(|i| {
                let user = match i.scheme.as_str() {
                    "digest" => i.id.split(':').next().unwrap_or("").to_owned(),
                    _ => i.id.clone(),
                };
                (i.scheme.clone(), user)
            })
            .collect();
        self.reply(conn, xid, err::OK, |w| {
            w.i32(infos.len() as i32);
            for (scheme, user) in &infos {
                w.string(scheme).string(user);
            }
        });
    }

    /// addWatch: a persistent (optionally recursive) watch on `path`.
    fn add_watch(&mut self, conn: ConnId, xid: i32, path: &str, mode: i32) {
        let kind = match mode {
            add_watch_mode::PERSISTENT => WatchKind::Persistent,
            add_watch_mode::PERSISTENT_RECURSIVE => WatchKind::PersistentRecursive,
            _ => return self.reply(conn, xid, err::BAD_ARGUMENTS, |_| {}),
        };
        if validate_path(path).is_err() {
            return self.reply(conn, xid, err::BAD_ARGUMENTS, |_| {});
        }
        self.watches.add(path, kind, conn);
        self.reply(conn, xid, err::OK, |_| {});
    }

    /// setWatches after a reconnect: watches on paths that changed since `relative_zxid`
    /// (the last zxid the client saw) fire at once, the others are registered.
    fn set_watches(&mut self, conn: ConnId, xid: i32, w: SetWatches) {
        // Persistent watches are re-registered without firing, as ZooKeeper does: the
        // client re-reads what it watches after a reconnect anyway.
        for path in &w.persistent {
            self.watches.add(path, WatchKind::Persistent, conn);
        }
        for path in &w.persistent_recursive {
            self.watches.add(path, WatchKind::PersistentRecursive, conn);
        }
        let rel = w.relative_zxid;
        let mut fire: Vec<(i32, String)> = Vec::new();
        for path in w.data {
            match self.tree.get(&path) {
                None => fire.push((event::NODE_DELETED, path)),
                Some(n) if n.mzxid > rel => fire.push((event::NODE_DATA_CHANGED, path)),
                Some(_) => self.watches.add(&path, WatchKind::Data, conn),
            }
        }
        for path in w.exist {
            match self.tree.get(&path) {
                Some(_) => fire.push((event::NODE_CREATED, path)),
                None => self.watches.add(&path, WatchKind::Data, conn),
            }
        }
        for path in w.child {
            match self.tree.get(&path) {
                None => fire.push((event::NODE_DELETED, path)),
                Some(n) if n.pzxid > rel => fire.push((event::NODE_CHILDREN_CHANGED, path)),
                Some(_) => self.watches.add(&path, WatchKind::Child, conn),
            }
        }
        for (kind, path) in fire {
            let f = notification(self.tree.last_zxid(), kind, &path);
            self.send(conn, f);
        }
        self.reply(conn, xid, err::OK, |_| {});
    }
}

/// The watch kinds a checkWatches/removeWatches `kind` (ZooKeeper's `WatcherType`) names;
/// `None` for a value that is no watcher type.
fn watch_kinds(kind: i32) -> Option<Vec<WatchKind>> {
    Some(match kind {
        watcher_type::CHILDREN => vec![WatchKind::Child],
        watcher_type::DATA => vec![WatchKind::Data],
        watcher_type::PERSISTENT => vec![WatchKind::Persistent],
        watcher_type::PERSISTENT_RECURSIVE => vec![WatchKind::PersistentRecursive],
        watcher_type::ANY => vec![
            WatchKind::Data,
            WatchKind::Child,
            WatchKind::Persistent,
            WatchKind::PersistentRecursive,
        ],
        _ => return None,
    })
}
