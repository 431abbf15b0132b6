//! Watches, sans-IO: who asked to hear about which path.
//!
//! Data watches (set by getData, and by exists on an existing or missing node) fire on
//! NodeCreated, NodeDeleted and NodeDataChanged; child watches (set by getChildren) fire on
//! NodeChildrenChanged and NodeDeleted. Those fire once and are then forgotten. Persistent
//! watches (addWatch, ZooKeeper 3.6) stay: a persistent watch hears every event of its path,
//! a persistent recursive one hears NodeCreated, NodeDeleted and NodeDataChanged of its path
//! and every path below it (not NodeChildrenChanged, as in ZooKeeper). A connection hears an
//! event once even when several of its watches match. Watches belong to a connection
//! (ZooKeeper's `ServerCnxn`): they are dropped when it closes and a reconnecting client
//! re-registers them with setWatches / setWatches2.

use std::collections::{HashMap, HashSet};

use crate::jute::codes::event;

/// An opaque connection identifier chosen by the IO shell.
pub type ConnId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    Data,
    Child,
    Persistent,
    PersistentRecursive,
}

#[derive(Debug, Default)]
pub struct WatchManager {
    data: HashMap<Box<str>, HashSet<ConnId>>,
    child: HashMap<Box<str>, HashSet<ConnId>>,
    persistent: HashMap<Box<str>, HashSet<ConnId>>,
    recursive: HashMap<Box<str>, HashSet<ConnId>>,
    by_conn: HashMap<ConnId, HashSet<(Box<str>, WatchKind)>>,
}

impl WatchManager {
    fn table(&mut self, kind: WatchKind) -> &mut HashMap<Box<str>, HashSet<ConnId>> {
        match kind {
            WatchKind::Data => &mut self.data,
            WatchKind::Child => &mut self.child,
            WatchKind::Persistent => &mut self.persistent,
            WatchKind::PersistentRecursive => &mut self.recursive,
        }
    }

    pub fn add(&mut self, path: &str, kind: WatchKind, conn: ConnId) {
        self.table(kind)
            .entry(path.into())
            .or_default()
            .insert(conn);
        self.by_conn
            .entry(conn)
            .or_default()
            .insert((path.into(), kind));
    }

    pub fn contains(&self, path: &str, kind: WatchKind, conn: ConnId) -> bool {
        let table = match kind {
            WatchKind::Data => &self.data,
            WatchKind::Child => &self.child,
            WatchKind::Persistent => &self.persistent,
            WatchKind::PersistentRecursive => &self.recursive,
        };
        table.get(path).is_some_and(|s| s.contains(&conn))
    }

    /// Removes one watch; true if it was there.
    pub fn remove(&mut self, path: &str, kind: WatchKind, conn: ConnId) -> bool {
        let table = self.table(kind);
        let Some(set) = table.get_mut(path) else {
            return false;
        };
        let removed = set.remove(&conn);
        if set.is_empty() {
            table.remove(path);
        }
        if let Some(mine) = self.by_conn.get_mut(&conn) {
            mine.remove(&(path.into(), kind));
        }
        removed
    }

    /// Drops every watch of a closed connection.
    pub fn remove_conn(&mut self, conn: ConnId) {
        if let Some(mine) = self.by_conn.remove(&conn) {
            for (path, kind) in mine {
                let table = self.table(kind);
                if let Some(set) = table.get_mut(&path) {
                    set.remove(&conn);
                    if set.is_empty() {
                        table.remove(&path);
                    }
                }
            }
        }
    }

    /// The connections to notify of `event_type` on `path`; their watches are consumed.
    /// Appends `(conn, event_type, path)` to `out` in a stable order.
    pub fn trigger(&mut self, path: &str, event_type: i32, out: &mut Vec<(ConnId, i32, String)>) {
        let kinds: &[WatchKind] = match event_type {
            event::NODE_CREATED | event::NODE_DATA_CHANGED => &[WatchKind::Data],
            event::NODE_CHILDREN_CHANGED => &[WatchKind::Child],
            event::NODE_DELETED => &[WatchKind::Data, WatchKind::Child],
            _ => &[],
        };
        let mut conns: Vec<ConnId> = Vec::new();
        for kind in kinds {
            if let Some(set) = self.table(*kind).remove(path) {
                for conn in set {
                    if let Some(mine) = self.by_conn.get_mut(&conn) {
                        mine.remove(&(path.into(), *kind));
                    }
                    conns.push(conn);
                }
            }
        }
        if let Some(set) = self.persistent.get(path) {
            conns.extend(set.iter().copied());
        }
        if !self.recursive.is_empty() && event_type != event::NODE_CHILDREN_CHANGED {
            // The path itself and each ancestor up to the root.
            let mut at = path;
            loop {
                if let Some(set) = self.recursive.get(at) {
                    conns.extend(set.iter().copied());
                }
                if at == "/" {
                    break;
                }
                at = match at.rfind('/') {
                    Some(0) => "/",
                    Some(i) => &at[..i],
                    None => break,
                };
            }
        }
        conns.sort_unstable();
        // A connection with both a data and a child watch on a deleted node hears it once.
        conns.dedup();
        out.extend(conns.into_iter().map(|c| (c, event_type, path.to_owned())));
    }

    /// The number of (path, connection) watches registered.
    pub fn count(&self) -> usize {
        [&self.data, &self.child, &self.persistent, &self.recursive]
            .iter()
            .map(|t| t.values().map(HashSet::len).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    //! Proves watches are one-shot, routed by kind and connection, and dropped with their
    //! connection, by registering and triggering them directly.
    use super::*;

    #[test]
    fn watches_fire_once_by_kind() {
        let mut w = WatchManager::default();
        w.add("/a", WatchKind::Data, 1);
        w.add("/a", WatchKind::Child, 2);
        w.add("/a", WatchKind::Data, 3);
        let mut out = Vec::new();
        w.trigger("/a", event::NODE_CHILDREN_CHANGED, &mut out);
        assert_eq!(
            out,
            vec![(2, event::NODE_CHILDREN_CHANGED, "/a".to_string())]
        );
        out.clear();
        w.trigger("/a", event::NODE_DATA_CHANGED, &mut out);
        assert_eq!(out.len(), 2);
        out.clear();
        w.trigger("/a", event::NODE_DATA_CHANGED, &mut out);
        assert!(out.is_empty(), "one-shot");
        assert_eq!(w.count(), 0);
    }

    #[test]
    fn delete_fires_both_kinds_once_per_connection() {
        let mut w = WatchManager::default();
        w.add("/a", WatchKind::Data, 1);
        w.add("/a", WatchKind::Child, 1);
        let mut out = Vec::new();
        w.trigger("/a", event::NODE_DELETED, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn persistent_watches_stay_and_recursive_ones_cover_descendants() {
        let mut w = WatchManager::default();
        w.add("/p", WatchKind::Persistent, 1);
        w.add("/r", WatchKind::PersistentRecursive, 2);
        w.add("/r/a", WatchKind::Data, 2);
        let mut out = Vec::new();
        for _ in 0..2 {
            w.trigger("/p", event::NODE_DATA_CHANGED, &mut out);
        }
        assert_eq!(out.len(), 2, "persistent: fires every time");
        out.clear();
        w.trigger("/r/a", event::NODE_DATA_CHANGED, &mut out);
        assert_eq!(
            out,
            vec![(2, event::NODE_DATA_CHANGED, "/r/a".to_string())],
            "once per connection"
        );
        out.clear();
        w.trigger("/r/a/b/c", event::NODE_CREATED, &mut out);
        w.trigger("/r", event::NODE_CHILDREN_CHANGED, &mut out);
        w.trigger("/rx", event::NODE_CREATED, &mut out);
        assert_eq!(out, vec![(2, event::NODE_CREATED, "/r/a/b/c".to_string())]);
        assert!(w.remove("/r", WatchKind::PersistentRecursive, 2));
        assert_eq!(w.count(), 1);
    }

    #[test]
    fn closed_connection_loses_its_watches() {
        let mut w = WatchManager::default();
        w.add("/a", WatchKind::Data, 1);
        w.add("/b", WatchKind::Child, 1);
        w.add("/b", WatchKind::Child, 2);
        w.remove_conn(1);
        assert_eq!(w.count(), 1);
        assert!(w.contains("/b", WatchKind::Child, 2));
        assert!(w.remove("/b", WatchKind::Child, 2));
        assert!(!w.remove("/b", WatchKind::Child, 2));
    }
}
