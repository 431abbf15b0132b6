//! Turning a write request into a transaction: validation against the tree as it will be
//! once every already-proposed transaction is applied.
//!
//! Writes are pipelined: a client may send `create /a` and `create /a/b` back to back, and the
//! second must be validated as if the first were applied although it is not committed yet.
//! Like ZooKeeper's `PrepRequestProcessor` "outstanding changes", [`PendingChanges`] keeps
//! the metadata of every node touched by a proposed-but-not-applied transaction; lookups see
//! that overlay first and the committed [`DataTree`] second. A multi is validated on a
//! scratch layer that is merged only if every op passes, so a failed multi leaves no trace.
//! Only the proposer (standalone server or ZAB leader) runs this, and it also checks ACLs
//! here (against the identities the client's connection holds, carried with the request),
//! as ZooKeeper's `PrepRequestProcessor` does: a write is refused with NO_AUTH before it
//! becomes a transaction.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::acl::{self, AuthId};
use crate::data_tree::{split_path, validate_path, DataTree};
use crate::jute::codes::{create_mode, err, op, perms};
use crate::jute::records::{Acl, CreateRequest, MultiOp};
use crate::txn::{CreateTxn, TxnBody};

/// A node's metadata as seen by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChangeRecord {
    /// The zxid of the proposal that produced this record.
    zxid: i64,
    exists: bool,
    version: i32,
    cversion: i32,
    aversion: i32,
    ephemeral_owner: i64,
    num_children: i64,
    acl: Arc<[Acl]>,
}

/// The outstanding-changes overlay of proposed, not yet applied, transactions.
#[derive(Debug, Default)]
pub struct PendingChanges {
    records: HashMap<String, ChangeRecord>,
    /// (zxid, path) in proposal order, to drop records once their transaction is applied.
    order: VecDeque<(i64, String)>,
}

/// A write request as the proposer validates it.
#[derive(Debug, Clone, Copy)]
pub enum WriteRequest<'a> {
    Create {
        op: i32,
        request: &'a CreateRequest,
    },
    Delete {
        path: &'a str,
        version: i32,
    },
    SetData {
        path: &'a str,
        data: Option<&'a [u8]>,
        version: i32,
    },
    SetAcl {
        path: &'a str,
        acl: &'a [Acl],
        version: i32,
    },
    Multi(&'a [MultiOp]),
}

impl PendingChanges {
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Forgets the records of transactions up to `zxid`, which are now in the tree.
    pub fn applied(&mut self, zxid: i64) {
        while let Some((z, _)) = self.order.front() {
            if *z > zxid {
                break;
            }
            let Some((z, path)) = self.order.pop_front() else {
                break;
            };
            if self.records.get(&path).is_some_and(|r| r.zxid == z) {
                self.records.remove(&path);
            }
        }
    }

    /// Drops every record (the proposals were abandoned, e.g. leadership was lost).
    pub fn clear(&mut self) {
        self.records.clear();
        self.order.clear();
    }

    /// Validates `request` from `session_id` as proposal `zxid` and returns the transaction
    /// body: the resolved change, or `Error` with ZooKeeper's code.
    pub fn prepare(
        &mut self,
        tree: &DataTree,
        session_id: i64,
        auth: &[AuthId],
        zxid: i64,
        request: WriteRequest<'_>,
    ) -> TxnBody {
        let mut prep = Prep {
            tree,
            pending: self,
            scratch: HashMap::new(),
            session_id,
            auth,
            zxid,
        };
        let body = match request {
            WriteRequest::Multi(ops) => {
                let mut bodies = Vec::with_capacity(ops.len());
                let mut failed_at = None;
                for (i, o) in ops.iter().enumerate() {
                    match prep.multi_op(o) {
                        Ok(b) => bodies.push(b),
                        Err(code) => {
                            failed_at = Some((i, code));
                            break;
                        }
                    }
                }
                match failed_at {
                    None => TxnBody::Multi(bodies),
                    Some((i, code)) => {
                        prep.scratch.clear();
                        // ZooKeeper's shape: OK before the failed op, its code, then
                        // RUNTIME_INCONSISTENCY for the ops never tried.
                        TxnBody::Multi(
                            (0..ops.len())
                                .map(|j| TxnBody::Error {
                                    err: match j.cmp(&i) {
                                        std::cmp::Ordering::Less => err::OK,
                                        std::cmp::Ordering::Equal => code,
                                        std::cmp::Ordering::Greater => err::RUNTIME_INCONSISTENCY,
                                    },
                                })
                                .collect(),
                        )
                    }
                }
            }
            WriteRequest::Create { op, request } => prep.create(op, request).unwrap_or_else(error),
            WriteRequest::Delete { path, version } => {
                prep.delete(path, version).unwrap_or_else(error)
            }
            WriteRequest::SetData {
                path,
                data,
                version,
            } => prep.set_data(path, data, version).unwrap_or_else(error),
            WriteRequest::SetAcl { path, acl, version } => {
                prep.set_acl(path, acl, version).unwrap_or_else(error)
            }
        };
        let scratch = std::mem::take(&mut prep.scratch);
        for (path, record) in scratch {
            self.order.push_back((zxid, path.clone()));
            self.records.insert(path, record);
        }
        body
    }
}

fn error(code: i32) -> TxnBody {
    TxnBody::Error { err: code }
}

struct Prep<'a> {
    tree: &'a DataTree,
    pending: &'a PendingChanges,
    scratch: HashMap<String, ChangeRecord>,
    session_id: i64,
    /// The identities of the client's connection.
    auth: &'a [AuthId],
    zxid: i64,
}

impl Prep<'_> {
    fn get(&self, path: &str) -> Option<ChangeRecord> {
        let record = self
            .scratch
            .get(path)
            .or_else(|| self.pending.records.get(path))
            .cloned()
            .or_else(|| {
                self.tree.get(path).map(|n| ChangeRecord {
                    zxid: 0,
                    exists: true,
                    version: n.version,
                    cversion: n.cversion,
                    aversion: n.aversion,
                    ephemeral_owner: n.ephemeral_owner,
                    num_children: n.num_children() as i64,
                    acl: self.tree.acl(n).into(),
                })
            })?;
        record.exists.then_some(record)
    }

    /// NO_AUTH unless the caller may use `perm` on a node with `record`'s ACL.
    fn check_acl(&self, record: &ChangeRecord, perm: i32) -> Result<(), i32> {
        if acl::allowed(&record.acl, perm, self.auth) {
            Ok(())
        } else {
            Err(err::NO_AUTH)
        }
    }

    fn put(&mut self, path: &str, mut record: ChangeRecord) {
        record.zxid = self.zxid;
        self.scratch.insert(path.to_owned(), record);
    }

    fn multi_op(&mut self, o: &MultiOp) -> Result<TxnBody, i32> {
        match o {
            MultiOp::Create { op, request } => self.create(*op, request),
            MultiOp::Delete { path, version } => self.delete(path, *version),
            MultiOp::SetData {
                path,
                data,
                version,
            } => self.set_data(path, data.as_deref(), *version),
            MultiOp::Check { path, version } => {
                validate_path(path).map_err(|_| err::BAD_ARGUMENTS)?;
                let rec = self.get(path).ok_or(err::NO_NODE)?;
                self.check_acl(&rec, perms::READ)?;
                check_version(*version, rec.version)?;
                Ok(TxnBody::Check { path: path.clone() })
            }
        }
    }

    fn create(&mut self, op_code: i32, req: &CreateRequest) -> Result<TxnBody, i32> {
        if op_code == op::CREATE_CONTAINER || op_code == op::CREATE_TTL {
            return Err(err::UNIMPLEMENTED);
        }
        let (ephemeral, sequential) = match req.flags {
            create_mode::PERSISTENT => (false, false),
            create_mode::EPHEMERAL => (true, false),
            create_mode::PERSISTENT_SEQUENTIAL => (false, true),
            create_mode::EPHEMERAL_SEQUENTIAL => (true, true),
            create_mode::CONTAINER
            | create_mode::PERSISTENT_WITH_TTL
            | create_mode::PERSISTENT_SEQUENTIAL_WITH_TTL => return Err(err::UNIMPLEMENTED),
            _ => return Err(err::BAD_ARGUMENTS),
        };
        let checked = if sequential {
            format!("{}1", req.path)
        } else {
            req.path.clone()
        };
        validate_path(&checked).map_err(|_| err::BAD_ARGUMENTS)?;
        let (parent_path, _) = split_path(&checked).ok_or(err::BAD_ARGUMENTS)?;
        let parent_path = parent_path.to_owned();
        let acl = acl::fixup(&req.acl, self.auth)?;
        let mut parent = self.get(&parent_path).ok_or(err::NO_NODE)?;
        self.check_acl(&parent, perms::CREATE)?;
        let path = if sequential {
            format!("{}{:010}", req.path, parent.cversion)
        } else {
            req.path.clone()
        };
        if self.get(&path).is_some() {
            return Err(err::NODE_EXISTS);
        }
        if parent.ephemeral_owner != 0 {
            return Err(err::NO_CHILDREN_FOR_EPHEMERALS);
        }
        parent.cversion = parent.cversion.wrapping_add(1);
        parent.num_children += 1;
        let parent_cversion = parent.cversion;
        self.put(&parent_path, parent);
        let ephemeral_owner = if ephemeral { self.session_id } else { 0 };
        self.put(
            &path,
            ChangeRecord {
                zxid: self.zxid,
                exists: true,
                version: 0,
                cversion: 0,
                aversion: 0,
                ephemeral_owner,
                num_children: 0,
                acl: acl.clone().into(),
            },
        );
        Ok(TxnBody::Create(CreateTxn {
            path,
            data: req.data.clone(),
            acl,
            ephemeral_owner,
            parent_cversion,
            op: if op_code == op::CREATE2 {
                op::CREATE2
            } else {
                op::CREATE
            },
        }))
    }

    fn delete(&mut self, path: &str, version: i32) -> Result<TxnBody, i32> {
        validate_path(path).map_err(|_| err::BAD_ARGUMENTS)?;
        let (parent_path, _) = split_path(path).ok_or(err::BAD_ARGUMENTS)?;
        let mut parent = self.get(parent_path).ok_or(err::NO_NODE)?;
        let node = self.get(path).ok_or(err::NO_NODE)?;
        self.check_acl(&parent, perms::DELETE)?;
        check_version(version, node.version)?;
        if node.num_children > 0 {
            return Err(err::NOT_EMPTY);
        }
        parent.num_children -= 1;
        let parent_path = parent_path.to_owned();
        self.put(&parent_path, parent);
        self.put(
            path,
            ChangeRecord {
                exists: false,
                ..node
            },
        );
        Ok(TxnBody::Delete {
            path: path.to_owned(),
        })
    }

    fn set_data(&mut self, path: &str, data: Option<&[u8]>, version: i32) -> Result<TxnBody, i32> {
        validate_path(path).map_err(|_| err::BAD_ARGUMENTS)?;
        let mut node = self.get(path).ok_or(err::NO_NODE)?;
        self.check_acl(&node, perms::WRITE)?;
        check_version(version, node.version)?;
        node.version = node.version.wrapping_add(1);
        let version = node.version;
        self.put(path, node);
        Ok(TxnBody::SetData {
            path: path.to_owned(),
            data: data.map(<[u8]>::to_vec),
            version,
        })
    }

    fn set_acl(&mut self, path: &str, acl: &[Acl], version: i32) -> Result<TxnBody, i32> {
        validate_path(path).map_err(|_| err::BAD_ARGUMENTS)?;
        let acl = acl::fixup(acl, self.auth)?;
        let mut node = self.get(path).ok_or(err::NO_NODE)?;
        self.check_acl(&node, perms::ADMIN)?;
        check_version(version, node.aversion)?;
        node.aversion = node.aversion.wrapping_add(1);
        node.acl = acl.clone().into();
        let aversion = node.aversion;
        self.put(path, node);
        Ok(TxnBody::SetAcl {
            path: path.to_owned(),
            acl,
            aversion,
        })
    }
}

fn check_version(expected: i32, actual: i32) -> Result<(), i32> {
    if expected == -1 || expected == actual {
        Ok(())
    } else {
        Err(err::BAD_VERSION)
    }
}
