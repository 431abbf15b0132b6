//! The znode tree: every node's data, metadata and children, the ephemeral nodes of each
//! session and the committed session table, changed only by applying transactions in zxid
//! order ([`DataTree::apply`]).
//!
//! Memory is kept lean for millions of small nodes: one hash map from full path to node, the
//! data as a boxed slice, children as a sorted set of names in a second map holding only the
//! nodes that have any, and the node's ACL as an index into an interned table of lists
//! ([`AclTable`]: one list shared by every node that has it). The tree keeps running counters for `mntr` (node count,
//! approximate data size, ephemerals) and an order-independent digest of its content so
//! replicas can be compared cheaply.
//!
//! Snapshots without a pause: paths and nodes are reference-counted, so [`DataTree::image`]
//! is a copy of the node map's pointers (tens of milliseconds for a million nodes, not the
//! hundreds that serializing takes). The image is serialized on another thread while the
//! tree goes on changing: a node changed meanwhile is copied first (copy on write), once per
//! node and image. Children live outside the nodes because the image does not need them (a
//! snapshot reader links children from the paths), so adding a child to a parent with a
//! million children copies one small node, never the set.
//!
//! [`TreeImage::serialize`] / [`DataTree::deserialize`] turn the whole state into bytes for
//! snapshots and for SNAP synchronisation; integrity (CRC) is the caller's business.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::acl::{open_acl, AclTable};
use crate::jute::codes::{err, event, op};
use crate::jute::records::{read_acl_vec, write_acl_vec, Acl, Stat};
use crate::jute::{DecodeError, Reader, Writer};
use crate::txn::{CreateTxn, Txn, TxnBody};

/// One znode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `None`: the node was given null data (answered as null, not as empty).
    pub data: Option<Box<[u8]>>,
    /// Size of the node's entry in the tree's children map (the names live there).
    child_count: u32,
    pub czxid: i64,
    pub mzxid: i64,
    pub pzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub ephemeral_owner: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    /// The node's ACL: an index into the tree's [`AclTable`] ([`DataTree::acl`]).
    acl: u32,
}

impl Node {
    fn new(
        data: Option<Box<[u8]>>,
        zxid: i64,
        time_ms: i64,
        ephemeral_owner: i64,
        acl: u32,
    ) -> Self {
        Node {
            data,
            child_count: 0,
            czxid: zxid,
            mzxid: zxid,
            pzxid: zxid,
            ctime: time_ms,
            mtime: time_ms,
            ephemeral_owner,
            version: 0,
            cversion: 0,
            aversion: 0,
            acl,
        }
    }

    pub fn data_len(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.len())
    }

    pub fn num_children(&self) -> usize {
        self.child_count as usize
    }

    pub fn stat(&self) -> Stat {
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.cversion,
            aversion: self.aversion,
            ephemeral_owner: self.ephemeral_owner,
            data_length: self.data_len() as i32,
            num_children: self.num_children() as i32,
            pzxid: self.pzxid,
        }
    }

    /// `acl_crc`: the CRC of the node's ACL list's content ([`AclTable::crc`]).
    fn digest(&self, path: &str, acl_crc: u32) -> u64 {
        let mut crc = crc32c::crc32c(path.as_bytes());
        crc = match &self.data {
            Some(d) => crc32c::crc32c_append(crc, d),
            // Null and empty data are different states: hash a marker for null.
            None => crc32c::crc32c_append(crc, &[0xff, 0xfe]),
        };
        for v in [
            self.czxid,
            self.mzxid,
            self.pzxid,
            self.ctime,
            self.mtime,
            self.ephemeral_owner,
            self.version as i64,
            self.cversion as i64,
            self.aversion as i64,
            acl_crc as i64,
        ] {
            crc = crc32c::crc32c_append(crc, &v.to_be_bytes());
        }
        crc as u64
    }
}

/// A session as committed: what every server knows about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedSession {
    pub timeout_ms: i32,
    pub passwd: [u8; 16],
}

/// What applying a transaction produced, for the reply to the client that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnResult {
    SessionCreated,
    SessionClosed,
    Created { path: String, stat: Stat, op: i32 },
    Deleted,
    DataSet { stat: Stat },
    AclSet { stat: Stat },
    Checked,
    Error(i32),
    Multi(Vec<TxnResult>),
}

/// A watch trigger caused by an applied transaction: `(path, WatchedEvent type)`.
pub type Trigger = (String, i32);

/// Why a snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFormatError {
    #[error("snapshot decode error: {0}")]
    Decode(#[from] DecodeError),
    #[error("snapshot: bad magic")]
    Magic,
    #[error("snapshot: node {path} has no parent in the snapshot")]
    Orphan { path: String },
    #[error("snapshot: duplicate node {path}")]
    Duplicate { path: String },
}

/// The tree's serialized form: nodes carry an index into the ACL lists written before them.
const SNAPSHOT_MAGIC: &[u8; 8] = b"ZNTREE02";
/// The first form: a node carried the permission bits of a single `world:anyone` entry. Read
/// (as that entry), never written.
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"ZNTREE01";

#[derive(Debug, Clone)]
pub struct DataTree {
    nodes: HashMap<Arc<str>, Arc<Node>>,
    /// Child names of every node that has children, keyed by the node's own path.
    children: HashMap<Arc<str>, BTreeSet<Box<str>>>,
    ephemerals: HashMap<i64, BTreeSet<Box<str>>>,
    sessions: HashMap<i64, CommittedSession>,
    acls: AclTable,
    last_zxid: i64,
    data_size_bytes: u64,
    digest: u64,
}

impl Default for DataTree {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks a client-supplied path as ZooKeeper's `PathUtils.validatePath` does.
pub fn validate_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("path must not be empty");
    }
    if !path.starts_with('/') {
        return Err("path must start with /");
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err("path must not end with /");
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() {
            return Err("empty node name");
        }
        if segment == "." || segment == ".." {
            return Err("relative paths not allowed");
        }
    }
    if path.chars().any(|c| {
        c == '\0'
            || ('\u{1}'..='\u{1f}').contains(&c)
            || ('\u{7f}'..='\u{9f}').contains(&c)
            || ('\u{e000}'..='\u{f8ff}').contains(&c)
            || ('\u{fff0}'..='\u{ffff}').contains(&c)
    }) {
        return Err("invalid character in path");
    }
    Ok(())
}

/// The parent path and the last name; `None` for the root.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let i = path.rfind('/')?;
    if path.len() == 1 {
        return None;
    }
    let parent = if i == 0 { "/" } else { &path[..i] };
    Some((parent, &path[i + 1..]))
}

impl DataTree {
    /// A tree with `/`, `/zookeeper`, `/zookeeper/quota` and `/zookeeper/config`, as every
    /// ZooKeeper server starts with.
    pub fn new() -> Self {
        let mut tree = DataTree {
            nodes: HashMap::new(),
            children: HashMap::new(),
            ephemerals: HashMap::new(),
            sessions: HashMap::new(),
            acls: AclTable::default(),
            last_zxid: 0,
            data_size_bytes: 0,
            digest: 0,
        };
        let open = open_acl();
        let acl = tree.acls.intern(&open);
        tree.insert_node("/", Node::new(Some(Box::default()), 0, 0, 0, acl));
        for path in ["/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
            tree.link_child(path);
            let acl = tree.acls.intern(&open);
            tree.insert_node(path, Node::new(Some(Box::default()), 0, 0, 0, acl));
        }
        tree
    }

    /// The ACL list of `node` (a node of this tree).
    pub fn acl(&self, node: &Node) -> &[Acl] {
        self.acls.get(node.acl)
    }

    /// Distinct ACL lists in use.
    pub fn acl_list_count(&self) -> usize {
        self.acls.len()
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path).map(|n| &**n)
    }

    /// Child names of `path` in sorted order (none for a leaf or a missing node).
    pub fn children(&self, path: &str) -> impl Iterator<Item = &str> {
        self.children
            .get(path)
            .into_iter()
            .flat_map(|c| c.iter().map(|s| &**s))
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn approximate_data_size(&self) -> u64 {
        self.data_size_bytes
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.values().map(|s| s.len()).sum()
    }

    pub fn ephemerals_of(&self, session_id: i64) -> impl Iterator<Item = &str> {
        self.ephemerals
            .get(&session_id)
            .into_iter()
            .flat_map(|s| s.iter().map(|p| &**p))
    }

    pub fn session(&self, session_id: i64) -> Option<&CommittedSession> {
        self.sessions.get(&session_id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = (i64, &CommittedSession)> {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    /// The number of descendants of `path` (getAllChildrenNumber).
    pub fn descendant_count(&self, path: &str) -> usize {
        let mut count = 0;
        let mut stack = vec![path.to_owned()];
        while let Some(p) = stack.pop() {
            for child in self.children(&p) {
                count += 1;
                stack.push(join(&p, child));
            }
        }
        count
    }

    fn insert_node(&mut self, path: &str, node: Node) {
        self.data_size_bytes += (path.len() + node.data_len()) as u64;
        self.digest = self
            .digest
            .wrapping_add(node.digest(path, self.acls.crc(node.acl)));
        if node.ephemeral_owner != 0 {
            self.ephemerals
                .entry(node.ephemeral_owner)
                .or_default()
                .insert(path.into());
        }
        let previous = self.nodes.insert(path.into(), Arc::new(node));
        debug_assert!(previous.is_none(), "node {path} inserted twice");
    }

    fn remove_node(&mut self, path: &str) -> Option<Arc<Node>> {
        let node = self.nodes.remove(path)?;
        self.children.remove(path);
        self.data_size_bytes -= (path.len() + node.data_len()) as u64;
        self.digest = self
            .digest
            .wrapping_sub(node.digest(path, self.acls.crc(node.acl)));
        self.acls.release(node.acl);
        if node.ephemeral_owner != 0 {
            if let Some(set) = self.ephemerals.get_mut(&node.ephemeral_owner) {
                set.remove(path);
                if set.is_empty() {
                    self.ephemerals.remove(&node.ephemeral_owner);
                }
            }
        }
        Some(node)
    }

    /// Changes a node in place, keeping the size and digest counters right.
    fn modify<R>(&mut self, path: &str, f: impl FnOnce(&mut Node) -> R) -> Option<R> {
        // Copies the node only while an image still shares it.
        let node = Arc::make_mut(self.nodes.get_mut(path)?);
        let before_digest = node.digest(path, self.acls.crc(node.acl));
        let before_len = node.data_len() as u64;
        let out = f(node);
        let after_digest = node.digest(path, self.acls.crc(node.acl));
        let after_len = node.data_len() as u64;
        self.digest = self
            .digest
            .wrapping_sub(before_digest)
            .wrapping_add(after_digest);
        self.data_size_bytes = self.data_size_bytes - before_len + after_len;
        Some(out)
    }

    /// Adds `path`'s name to its parent's children; false if there is no parent. Children
    /// are not part of a node's digest or size, so this bypasses [`Self::modify`].
    fn link_child(&mut self, path: &str) -> bool {
        let Some((parent, name)) = split_path(path) else {
            return false;
        };
        // The children map shares the parent's path allocation as its key.
        let Some(key) = self.nodes.get_key_value(parent).map(|(k, _)| k.clone()) else {
            return false;
        };
        if self.children.entry(key).or_default().insert(name.into()) {
            if let Some(p) = self.nodes.get_mut(parent) {
                Arc::make_mut(p).child_count += 1;
            }
        }
        true
    }

    /// Removes `name` from `parent`'s children (the counterpart of [`Self::link_child`]).
    fn unlink_child(&mut self, parent: &str, name: &str) {
        let Some(set) = self.children.get_mut(parent) else {
            return;
        };
        if !set.remove(name) {
            return;
        }
        if set.is_empty() {
            self.children.remove(parent);
        }
        if let Some(p) = self.nodes.get_mut(parent) {
            let p = Arc::make_mut(p);
            p.child_count = p.child_count.saturating_sub(1);
        }
    }

    /// Applies one committed transaction. Transactions were validated when proposed; a
    /// transaction that no longer fits the tree (which would mean divergent replicas) is
    /// applied as far as it fits and answered with RUNTIME_INCONSISTENCY, never a panic.
    pub fn apply(&mut self, zxid: i64, txn: &Txn, triggers: &mut Vec<Trigger>) -> TxnResult {
        debug_assert!(
            zxid > self.last_zxid,
            "zxid {zxid} after {}",
            self.last_zxid
        );
        self.last_zxid = self.last_zxid.max(zxid);
        let session_id = txn.header.session_id;
        let time_ms = txn.header.time_ms;
        match &txn.body {
            TxnBody::CreateSession { timeout_ms, passwd } => {
                self.sessions.insert(
                    session_id,
                    CommittedSession {
                        timeout_ms: *timeout_ms,
                        passwd: *passwd,
                    },
                );
                TxnResult::SessionCreated
            }
            TxnBody::CloseSession => {
                let paths: Vec<String> =
                    self.ephemerals_of(session_id).map(str::to_owned).collect();
                for path in paths {
                    self.apply_delete(zxid, &path, triggers);
                }
                self.sessions.remove(&session_id);
                TxnResult::SessionClosed
            }
            TxnBody::Multi(ops) => TxnResult::Multi(
                ops.iter()
                    .map(|o| self.apply_single(zxid, time_ms, o, triggers))
                    .collect(),
            ),
            body => self.apply_single(zxid, time_ms, body, triggers),
        }
    }

    fn apply_single(
        &mut self,
        zxid: i64,
        time_ms: i64,
        body: &TxnBody,
        triggers: &mut Vec<Trigger>,
    ) -> TxnResult {
        match body {
            TxnBody::Create(c) => self.apply_create(zxid, time_ms, c, triggers),
            TxnBody::Delete { path } => self.apply_delete(zxid, path, triggers),
            TxnBody::SetData {
                path,
                data,
                version,
            } => {
                let stat = self.modify(path, |n| {
                    n.data = data.clone().map(Vec::into_boxed_slice);
                    n.version = *version;
                    n.mzxid = zxid;
                    n.mtime = time_ms;
                    n.stat()
                });
                match stat {
                    Some(stat) => {
                        triggers.push((path.clone(), event::NODE_DATA_CHANGED));
                        TxnResult::DataSet { stat }
                    }
                    None => inconsistent("setData", path),
                }
            }
            TxnBody::SetAcl {
                path,
                acl,
                aversion,
            } => {
                let new = self.acls.intern(acl);
                match self.modify(path, |n| {
                    let old = n.acl;
                    n.acl = new;
                    n.aversion = *aversion;
                    (old, n.stat())
                }) {
                    Some((old, stat)) => {
                        self.acls.release(old);
                        TxnResult::AclSet { stat }
                    }
                    None => {
                        self.acls.release(new);
                        inconsistent("setACL", path)
                    }
                }
            }
            TxnBody::Check { .. } => TxnResult::Checked,
            TxnBody::Error { err } => TxnResult::Error(*err),
            TxnBody::CreateSession { .. } | TxnBody::CloseSession | TxnBody::Multi(_) => {
                tracing::error!("transaction kind {} not allowed inside a multi", body.tag());
                TxnResult::Error(err::RUNTIME_INCONSISTENCY)
            }
        }
    }

    fn apply_create(
        &mut self,
        zxid: i64,
        time_ms: i64,
        c: &CreateTxn,
        triggers: &mut Vec<Trigger>,
    ) -> TxnResult {
        let Some((parent, _)) = split_path(&c.path) else {
            return inconsistent("create", &c.path);
        };
        if self.nodes.contains_key(c.path.as_str()) || !self.nodes.contains_key(parent) {
            return inconsistent("create", &c.path);
        }
        let parent = parent.to_owned();
        self.link_child(&c.path);
        self.modify(&parent, |p| {
            p.cversion = c.parent_cversion;
            p.pzxid = zxid;
        });
        let acl = self.acls.intern(&c.acl);
        let node = Node::new(
            c.data.clone().map(Vec::into_boxed_slice),
            zxid,
            time_ms,
            c.ephemeral_owner,
            acl,
        );
        let stat = node.stat();
        self.insert_node(&c.path, node);
        triggers.push((c.path.clone(), event::NODE_CREATED));
        triggers.push((parent, event::NODE_CHILDREN_CHANGED));
        TxnResult::Created {
            path: c.path.clone(),
            stat,
            op: c.op,
        }
    }

    fn apply_delete(&mut self, zxid: i64, path: &str, triggers: &mut Vec<Trigger>) -> TxnResult {
        let Some((parent, name)) = split_path(path) else {
            return inconsistent("delete", path);
        };
        match self.nodes.get(path) {
            Some(n) if n.num_children() == 0 => {}
            _ => return inconsistent("delete", path),
        }
        self.remove_node(path);
        self.unlink_child(parent, name);
        // pzxid only moves forward: a later create may already have set it (ZOOKEEPER-3145).
        self.modify(parent, |p| {
            p.pzxid = p.pzxid.max(zxid);
        });
        triggers.push((path.to_owned(), event::NODE_DELETED));
        triggers.push((parent.to_owned(), event::NODE_CHILDREN_CHANGED));
        TxnResult::Deleted
    }

    /// A frozen copy of the state for a snapshot, cheap to take (the nodes are shared, see
    /// the module doc); serialize it anywhere with [`TreeImage::serialize`].
    pub fn image(&self) -> TreeImage {
        let mut sessions: Vec<_> = self.sessions.iter().map(|(id, s)| (*id, *s)).collect();
        sessions.sort_by_key(|(id, _)| *id);
        TreeImage {
            last_zxid: self.last_zxid,
            sessions,
            acls: self.acls.lists(),
            nodes: self.nodes.clone(),
            data_size_bytes: self.data_size_bytes,
        }
    }

    /// The whole state as bytes (an image serialized at once).
    pub fn serialize(&self) -> Vec<u8> {
        self.image().serialize()
    }

    /// Rebuilds a tree from [`TreeImage::serialize`] output; every structural problem is an
    /// error (a node without its parent, no root, duplicates, bad paths, truncation).
    pub fn deserialize(bytes: &[u8]) -> Result<Self, SnapshotFormatError> {
        let with_acl_lists = match bytes.get(..8) {
            Some(m) if m == SNAPSHOT_MAGIC => true,
            Some(m) if m == SNAPSHOT_MAGIC_V1 => false,
            _ => return Err(SnapshotFormatError::Magic),
        };
        let mut r = Reader::new(&bytes[8..]);
        let last_zxid = r.read_i64()?;
        let n_sessions = r.read_vec_len(28)?;
        let mut sessions = HashMap::with_capacity(n_sessions);
        for _ in 0..n_sessions {
            let id = r.read_i64()?;
            let timeout_ms = r.read_i32()?;
            let offset = r.offset();
            let p = r.read_buffer()?;
            let passwd: [u8; 16] = p.try_into().map_err(|_| DecodeError::BadValue {
                field: "session password length",
                value: p.len() as i64,
                offset,
            })?;
            sessions.insert(id, CommittedSession { timeout_ms, passwd });
        }
        let mut acl_lists = Vec::new();
        if with_acl_lists {
            // A list is at least its 4-byte count.
            let n = r.read_vec_len(4)?;
            acl_lists.reserve(n);
            for _ in 0..n {
                acl_lists.push(read_acl_vec(&mut r)?);
            }
        }
        let offset = r.offset();
        let n_nodes = r.read_i64()?;
        if n_nodes < 1 || n_nodes as u64 > (r.remaining() / 60) as u64 {
            return Err(DecodeError::BadValue {
                field: "node count",
                value: n_nodes,
                offset,
            }
            .into());
        }
        let mut tree = DataTree {
            nodes: HashMap::with_capacity(n_nodes as usize),
            children: HashMap::new(),
            ephemerals: HashMap::new(),
            sessions,
            acls: AclTable::default(),
            last_zxid,
            data_size_bytes: 0,
            digest: 0,
        };
        for _ in 0..n_nodes {
            let path = r.read_string()?;
            let data: Option<Box<[u8]>> = r.read_opt_buffer()?.map(Into::into);
            let mut node = Node {
                data,
                child_count: 0,
                czxid: r.read_i64()?,
                mzxid: r.read_i64()?,
                pzxid: r.read_i64()?,
                ctime: r.read_i64()?,
                mtime: r.read_i64()?,
                ephemeral_owner: r.read_i64()?,
                version: r.read_i32()?,
                cversion: r.read_i32()?,
                aversion: r.read_i32()?,
                acl: 0,
            };
            let offset = r.offset();
            let acl_word = r.read_i32()?;
            node.acl = if with_acl_lists {
                match acl_lists.get(acl_word as u32 as usize) {
                    Some(list) => tree.acls.intern(list),
                    None => {
                        return Err(DecodeError::BadValue {
                            field: "node ACL index",
                            value: acl_word as i64,
                            offset,
                        }
                        .into())
                    }
                }
            } else {
                tree.acls.intern(&[Acl::world_anyone(acl_word)])
            };
            if tree.nodes.contains_key(path) {
                return Err(SnapshotFormatError::Duplicate { path: path.into() });
            }
            if validate_path(path).is_err() {
                return Err(SnapshotFormatError::Orphan { path: path.into() });
            }
            tree.insert_node(path, node);
        }
        if !tree.nodes.contains_key("/") {
            return Err(SnapshotFormatError::Orphan { path: "/".into() });
        }
        let paths: Vec<Arc<str>> = tree
            .nodes
            .keys()
            .filter(|p| &***p != "/")
            .cloned()
            .collect();
        for path in paths {
            if !tree.link_child(&path) {
                return Err(SnapshotFormatError::Orphan {
                    path: path.to_string(),
                });
            }
        }
        if r.remaining() != 0 {
            return Err(DecodeError::BadValue {
                field: "snapshot trailing bytes",
                value: r.remaining() as i64,
                offset: r.offset(),
            }
            .into());
        }
        Ok(tree)
    }
}

/// The state of a [`DataTree`] at one zxid, sharing its nodes with the live tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeImage {
    last_zxid: i64,
    sessions: Vec<(i64, CommittedSession)>,
    /// The ACL table's lists when the image was taken (nodes hold indexes into it).
    acls: Vec<Arc<[Acl]>>,
    nodes: HashMap<Arc<str>, Arc<Node>>,
    data_size_bytes: u64,
}

impl TreeImage {
    /// The zxid of the last transaction the image includes.
    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    /// The image as bytes: magic, last zxid, sessions, then the nodes in map order (no
    /// per-node lookups or path building; the reader links children once every node is in).
    pub fn serialize(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes
            .reserve(self.data_size_bytes as usize + self.nodes.len() * 80 + 64);
        w.bytes.extend_from_slice(SNAPSHOT_MAGIC);
        w.i64(self.last_zxid);
        w.i32(self.sessions.len() as i32);
        for (id, s) in &self.sessions {
            w.i64(*id).i32(s.timeout_ms).buffer(&s.passwd);
        }
        w.i32(self.acls.len() as i32);
        for list in &self.acls {
            write_acl_vec(&mut w, list);
        }
        w.i64(self.nodes.len() as i64);
        for (path, node) in &self.nodes {
            w.string(path)
                .opt_buffer(node.data.as_deref())
                .i64(node.czxid)
                .i64(node.mzxid)
                .i64(node.pzxid)
                .i64(node.ctime)
                .i64(node.mtime)
                .i64(node.ephemeral_owner)
                .i32(node.version)
                .i32(node.cversion)
                .i32(node.aversion)
                .i32(node.acl as i32);
        }
        w.bytes
    }
}

/// `parent` + `/` + `name`, without doubling the root's slash.
pub fn join(parent: &str, name: &str) -> String {
    let mut out = String::with_capacity(parent.len() + 1 + name.len());
    out.push_str(parent);
    if parent != "/" {
        out.push('/');
    }
    out.push_str(name);
    out
}

fn inconsistent(what: &str, path: &str) -> TxnResult {
    tracing::error!("committed {what} on {path} does not fit the tree: replicas may diverge");
    TxnResult::Error(err::RUNTIME_INCONSISTENCY)
}

/// The reply opcode a create result answers (create2 carries a stat).
pub fn create_returns_stat(op_code: i32) -> bool {
    op_code != op::CREATE
}

#[cfg(test)]
mod tests {
    //! The serialized tree keeps every node's ACL, and trees written before nodes had ACL
    //! lists still load.
    use super::*;
    use crate::jute::codes::perms;
    use crate::txn::TxnHeader;

    fn create(tree: &mut DataTree, zxid: i64, path: &str, acl: Vec<Acl>) {
        let txn = Txn {
            header: TxnHeader {
                session_id: 0,
                cxid: 0,
                time_ms: 5,
            },
            body: TxnBody::Create(CreateTxn {
                path: path.into(),
                data: None,
                acl,
                ephemeral_owner: 0,
                parent_cversion: zxid as i32,
                op: op::CREATE,
            }),
        };
        tree.apply(zxid, &txn, &mut Vec::new());
    }

    #[test]
    fn acl_lists_round_trip_and_are_shared() {
        let mut tree = DataTree::new();
        let digest = Acl {
            perms: perms::READ,
            scheme: "digest".into(),
            id: "alice:abc=".into(),
        };
        create(&mut tree, 1, "/a", vec![digest.clone()]);
        create(&mut tree, 2, "/b", vec![digest.clone()]);
        create(&mut tree, 3, "/c", vec![Acl::world_anyone(perms::READ)]);
        // The open list of the built-in nodes, the digest list, the read-only list.
        assert_eq!(tree.acl_list_count(), 3);
        let copy = DataTree::deserialize(&tree.serialize()).unwrap();
        assert_eq!(copy.digest(), tree.digest());
        assert_eq!(copy.acl(copy.get("/b").unwrap()), &[digest][..]);
        assert_eq!(copy.acl_list_count(), 3);
        // Deleting the last node of a list frees it.
        let mut tree = copy;
        for (zxid, path) in [(4, "/a"), (5, "/b")] {
            let txn = Txn {
                header: TxnHeader {
                    session_id: 0,
                    cxid: 0,
                    time_ms: 6,
                },
                body: TxnBody::Delete { path: path.into() },
            };
            tree.apply(zxid, &txn, &mut Vec::new());
        }
        assert_eq!(tree.acl_list_count(), 2);
    }

    #[test]
    fn a_tree_written_with_permission_bits_loads_as_world_anyone() {
        let mut w = Writer::new();
        w.bytes.extend_from_slice(SNAPSHOT_MAGIC_V1);
        w.i64(7).i32(0).i64(2);
        for (path, bits) in [("/", perms::ALL), ("/x", perms::READ)] {
            w.string(path).opt_buffer(Some(b"d"));
            for _ in 0..6 {
                w.i64(1);
            }
            w.i32(0).i32(0).i32(0).i32(bits);
        }
        let tree = DataTree::deserialize(&w.bytes).unwrap();
        assert_eq!(
            tree.acl(tree.get("/x").unwrap()),
            &[Acl::world_anyone(perms::READ)][..]
        );
        assert_eq!(tree.last_zxid(), 7);
    }

    #[test]
    fn an_acl_index_past_the_lists_is_an_error() {
        let tree = DataTree::new();
        let mut bytes = tree.serialize();
        // The last node's ACL index is the last 4 bytes.
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&99i32.to_be_bytes());
        assert!(DataTree::deserialize(&bytes).is_err());
    }
}
