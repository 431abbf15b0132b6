//! Transactions: the state changes that are replicated (by ZAB, or the local log when
//! standalone) and then applied, in zxid order, to every server's data tree.
//!
//! A transaction is fully resolved when it is proposed: sequential names carry their counter,
//! versions are the new versions, timestamps come from the proposer's clock, failed writes are
//! `Error` transactions. Applying the same sequence therefore yields the same tree on every
//! server, whatever its local clock. The zxid is not in the payload: the replication layer
//! carries it next to the payload.
//!
//! Encoding (big-endian, jute primitives): format version u8 = 2, session id i64, cxid i32,
//! time ms i64, then the body: a type tag (ZooKeeper's opcode numbers) and its fields.
//! Version 1 (read, never written) carried the permission bits of a single `world:anyone`
//! entry where version 2 carries a node's whole ACL list.

use crate::acl::AuthId;
use crate::jute::codes::op;
use crate::jute::records::{read_acl_vec, write_acl_vec, Acl};
use crate::jute::{DecodeError, Reader, Writer};

const FORMAT_VERSION: u8 = 2;
/// Transactions written before nodes had ACL lists.
const FORMAT_VERSION_PERMS_ONLY: u8 = 1;

/// Who asked for the change and when it was proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnHeader {
    pub session_id: i64,
    /// The client's xid, so the server holding the connection can match the reply.
    pub cxid: i32,
    pub time_ms: i64,
}

/// One committed state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub header: TxnHeader,
    pub body: TxnBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnBody {
    CreateSession {
        timeout_ms: i32,
        passwd: [u8; 16],
    },
    /// Closes the session and deletes its ephemeral nodes (listed by the tree at apply time,
    /// which is the same on every server).
    CloseSession,
    Create(CreateTxn),
    Delete {
        path: String,
    },
    SetData {
        path: String,
        /// `None`: null data.
        data: Option<Vec<u8>>,
        /// The node's version after this change.
        version: i32,
    },
    SetAcl {
        path: String,
        /// The node's new ACL, as stored (`auth` entries already expanded).
        acl: Vec<Acl>,
        /// The node's aversion after this change.
        aversion: i32,
    },
    /// A version check inside a multi; changes nothing.
    Check {
        path: String,
    },
    /// The ops of a multi, all applied or (when one is `Error`) none.
    Multi(Vec<TxnBody>),
    /// A write that failed validation: applied as a no-op, answered with `err`.
    Error {
        err: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTxn {
    /// The final path, with the sequential suffix if any.
    pub path: String,
    /// `None`: null data.
    pub data: Option<Vec<u8>>,
    /// The node's ACL, as stored (`auth` entries already expanded).
    pub acl: Vec<Acl>,
    /// The owning session for ephemeral nodes, 0 otherwise.
    pub ephemeral_owner: i64,
    /// The parent's cversion after this create.
    pub parent_cversion: i32,
    /// The request opcode (create, create2): decides the reply shape.
    pub op: i32,
}

impl Txn {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes.push(FORMAT_VERSION);
        w.i64(self.header.session_id)
            .i32(self.header.cxid)
            .i64(self.header.time_ms);
        self.body.encode(&mut w);
        w.bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.read_bool().map(|_| bytes[0])?;
        if version != FORMAT_VERSION && version != FORMAT_VERSION_PERMS_ONLY {
            return Err(DecodeError::BadValue {
                field: "txn format version",
                value: version as i64,
                offset: 0,
            });
        }
        let header = TxnHeader {
            session_id: r.read_i64()?,
            cxid: r.read_i32()?,
            time_ms: r.read_i64()?,
        };
        let body = TxnBody::decode(&mut r, 0, version)?;
        if r.remaining() != 0 {
            return Err(DecodeError::BadValue {
                field: "txn trailing bytes",
                value: r.remaining() as i64,
                offset: r.offset(),
            });
        }
        Ok(Txn { header, body })
    }
}

impl TxnBody {
    /// The type tag: ZooKeeper's opcode for the same transaction.
    pub fn tag(&self) -> i32 {
        match self {
            TxnBody::CreateSession { .. } => op::CREATE_SESSION,
            TxnBody::CloseSession => op::CLOSE_SESSION,
            TxnBody::Create(_) => op::CREATE,
            TxnBody::Delete { .. } => op::DELETE,
            TxnBody::SetData { .. } => op::SET_DATA,
            TxnBody::SetAcl { .. } => op::SET_ACL,
            TxnBody::Check { .. } => op::CHECK,
            TxnBody::Multi(_) => op::MULTI,
            TxnBody::Error { .. } => op::ERROR,
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.i32(self.tag());
        match self {
            TxnBody::CreateSession { timeout_ms, passwd } => {
                w.i32(*timeout_ms).buffer(passwd);
            }
            TxnBody::CloseSession => {}
            TxnBody::Create(c) => {
                w.string(&c.path).opt_buffer(c.data.as_deref());
                write_acl_vec(w, &c.acl);
                w.i64(c.ephemeral_owner).i32(c.parent_cversion).i32(c.op);
            }
            TxnBody::Delete { path } | TxnBody::Check { path } => {
                w.string(path);
            }
            TxnBody::SetData {
                path,
                data,
                version,
            } => {
                w.string(path).opt_buffer(data.as_deref()).i32(*version);
            }
            TxnBody::SetAcl {
                path,
                acl,
                aversion,
            } => {
                w.string(path);
                write_acl_vec(w, acl);
                w.i32(*aversion);
            }
            TxnBody::Multi(ops) => {
                w.i32(ops.len() as i32);
                for o in ops {
                    o.encode(w);
                }
            }
            TxnBody::Error { err } => {
                w.i32(*err);
            }
        }
    }

    fn decode(r: &mut Reader<'_>, depth: u8, version: u8) -> Result<Self, DecodeError> {
        let offset = r.offset();
        let read_acl = |r: &mut Reader<'_>| -> Result<Vec<Acl>, DecodeError> {
            if version == FORMAT_VERSION_PERMS_ONLY {
                Ok(vec![Acl::world_anyone(r.read_i32()?)])
            } else {
                read_acl_vec(r)
            }
        };
        let tag = r.read_i32()?;
        Ok(match tag {
            op::CREATE_SESSION => {
                let timeout_ms = r.read_i32()?;
                let p = r.read_buffer()?;
                let passwd: [u8; 16] = p.try_into().map_err(|_| DecodeError::BadValue {
                    field: "session password length",
                    value: p.len() as i64,
                    offset,
                })?;
                TxnBody::CreateSession { timeout_ms, passwd }
            }
            op::CLOSE_SESSION => TxnBody::CloseSession,
            op::CREATE => TxnBody::Create(CreateTxn {
                path: r.read_string()?.to_owned(),
                data: r.read_opt_buffer()?.map(<[u8]>::to_vec),
                acl: read_acl(r)?,
                ephemeral_owner: r.read_i64()?,
                parent_cversion: r.read_i32()?,
                op: r.read_i32()?,
            }),
            op::DELETE => TxnBody::Delete {
                path: r.read_string()?.to_owned(),
            },
            op::CHECK => TxnBody::Check {
                path: r.read_string()?.to_owned(),
            },
            op::SET_DATA => TxnBody::SetData {
                path: r.read_string()?.to_owned(),
                data: r.read_opt_buffer()?.map(<[u8]>::to_vec),
                version: r.read_i32()?,
            },
            op::SET_ACL => TxnBody::SetAcl {
                path: r.read_string()?.to_owned(),
                acl: read_acl(r)?,
                aversion: r.read_i32()?,
            },
            // A multi never nests another multi.
            op::MULTI if depth == 0 => {
                let n = r.read_vec_len(4)?;
                let mut ops = Vec::with_capacity(n);
                for _ in 0..n {
                    ops.push(TxnBody::decode(r, depth + 1, version)?);
                }
                TxnBody::Multi(ops)
            }
            op::ERROR => TxnBody::Error { err: r.read_i32()? },
            other => {
                return Err(DecodeError::BadValue {
                    field: "txn type",
                    value: other as i64,
                    offset,
                })
            }
        })
    }
}

/// What a server hands the proposer (itself when standalone, the ZAB leader in an ensemble)
/// for a state change one of its clients asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardedRequest {
    /// A transaction the origin built itself: session create and close need no validation
    /// against the tree.
    Prepared(Txn),
    /// A client write (or sync) to validate against the proposer's view: the jute body that
    /// followed the request header.
    Write {
        session_id: i64,
        cxid: i32,
        op: i32,
        body: Vec<u8>,
        /// The identities the client's connection holds (ACL checks run on the proposer).
        auth: Vec<AuthId>,
    },
    /// Sessions with client activity on the origin since its last report (ZooKeeper's
    /// session touches carried in follower pings): they must not expire.
    Touch { session_ids: Vec<i64> },
}

const FORWARD_PREPARED: u8 = 1;
const FORWARD_WRITE: u8 = 2;
const FORWARD_TOUCH: u8 = 3;

impl ForwardedRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            ForwardedRequest::Prepared(txn) => {
                w.bytes.push(FORWARD_PREPARED);
                w.bytes.extend_from_slice(&txn.encode());
            }
            ForwardedRequest::Write {
                session_id,
                cxid,
                op,
                body,
                auth,
            } => {
                w.bytes.push(FORWARD_WRITE);
                w.i64(*session_id).i32(*cxid).i32(*op).buffer(body);
                w.i32(auth.len() as i32);
                for id in auth {
                    w.string(&id.scheme).string(&id.id);
                }
            }
            ForwardedRequest::Touch { session_ids } => {
                w.bytes.push(FORWARD_TOUCH);
                w.i32(session_ids.len() as i32);
                for id in session_ids {
                    w.i64(*id);
                }
            }
        }
        w.bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let Some((&tag, rest)) = bytes.split_first() else {
            return Err(DecodeError::Truncated {
                offset: 0,
                needed: 1,
                available: 0,
            });
        };
        let mut r = Reader::new(rest);
        let out = match tag {
            FORWARD_PREPARED => return Ok(ForwardedRequest::Prepared(Txn::decode(rest)?)),
            FORWARD_WRITE => ForwardedRequest::Write {
                session_id: r.read_i64()?,
                cxid: r.read_i32()?,
                op: r.read_i32()?,
                body: r.read_buffer()?.to_vec(),
                auth: {
                    // An identity is at least its two string lengths.
                    let n = r.read_vec_len(8)?;
                    let mut ids = Vec::with_capacity(n);
                    for _ in 0..n {
                        let scheme = r.read_string()?;
                        ids.push(AuthId::new(scheme, r.read_string()?));
                    }
                    ids
                },
            },
            FORWARD_TOUCH => {
                let n = r.read_vec_len(8)?;
                let mut session_ids = Vec::with_capacity(n);
                for _ in 0..n {
                    session_ids.push(r.read_i64()?);
                }
                ForwardedRequest::Touch { session_ids }
            }
            other => {
                return Err(DecodeError::BadValue {
                    field: "forwarded request kind",
                    value: other as i64,
                    offset: 0,
                })
            }
        };
        if r.remaining() != 0 {
            return Err(DecodeError::BadValue {
                field: "forwarded request trailing bytes",
                value: r.remaining() as i64,
                offset: r.offset() + 1,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! Proves every transaction kind round-trips through its byte encoding and that damaged
    //! payloads (truncated, unknown tag, nested multi) decode to errors.
    use super::*;

    fn header() -> TxnHeader {
        TxnHeader {
            session_id: 0x0100_0000_0000_0001,
            cxid: 7,
            time_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn every_kind_round_trips_and_truncations_fail() {
        let bodies = vec![
            TxnBody::CreateSession {
                timeout_ms: 4000,
                passwd: [3; 16],
            },
            TxnBody::CloseSession,
            TxnBody::Create(CreateTxn {
                path: "/q/item-0000000004".into(),
                data: Some(b"x".to_vec()),
                acl: vec![
                    Acl::world_anyone(1),
                    Acl {
                        perms: 31,
                        scheme: "digest".into(),
                        id: "alice:abc=".into(),
                    },
                ],
                ephemeral_owner: 5,
                parent_cversion: 5,
                op: op::CREATE2,
            }),
            TxnBody::Delete { path: "/a".into() },
            TxnBody::SetData {
                path: "/a".into(),
                data: None,
                version: 3,
            },
            TxnBody::SetAcl {
                path: "/a".into(),
                acl: vec![Acl::world_anyone(1)],
                aversion: 1,
            },
            TxnBody::Multi(vec![
                TxnBody::Check { path: "/c".into() },
                TxnBody::Delete { path: "/d".into() },
                TxnBody::Error { err: -2 },
            ]),
            TxnBody::Error { err: -101 },
        ];
        for body in bodies {
            let txn = Txn {
                header: header(),
                body,
            };
            let bytes = txn.encode();
            assert_eq!(Txn::decode(&bytes).unwrap(), txn);
            for cut in 0..bytes.len() {
                assert!(Txn::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Txn::decode(&longer).is_err());
        }
    }

    #[test]
    fn forwarded_requests_round_trip() {
        for req in [
            ForwardedRequest::Prepared(Txn {
                header: header(),
                body: TxnBody::CloseSession,
            }),
            ForwardedRequest::Write {
                session_id: 5,
                cxid: 9,
                op: op::SET_DATA,
                body: vec![1, 2, 3],
                auth: vec![
                    AuthId::new("ip", "127.0.0.1"),
                    AuthId::new("digest", "alice:abc="),
                ],
            },
            ForwardedRequest::Touch {
                session_ids: vec![1, 2, 3],
            },
        ] {
            let bytes = req.encode();
            assert_eq!(ForwardedRequest::decode(&bytes).unwrap(), req);
            for cut in 0..bytes.len() {
                assert!(ForwardedRequest::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn version_1_permission_bits_read_as_a_world_anyone_entry() {
        // Hand-built version 1 setACL: path "/a", perms 3, aversion 2.
        let mut w = Writer::new();
        w.bytes.push(FORMAT_VERSION_PERMS_ONLY);
        w.i64(1).i32(7).i64(9);
        w.i32(op::SET_ACL).string("/a").i32(3).i32(2);
        let txn = Txn::decode(&w.bytes).unwrap();
        assert_eq!(
            txn.body,
            TxnBody::SetAcl {
                path: "/a".into(),
                acl: vec![Acl::world_anyone(3)],
                aversion: 2,
            }
        );
    }

    #[test]
    fn nested_multi_and_unknown_tags_are_rejected() {
        let nested = Txn {
            header: header(),
            body: TxnBody::Multi(vec![TxnBody::Multi(vec![])]),
        };
        assert!(Txn::decode(&nested.encode()).is_err());
        let mut bytes = Txn {
            header: header(),
            body: TxnBody::CloseSession,
        }
        .encode();
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&999i32.to_be_bytes());
        assert!(Txn::decode(&bytes).is_err());
    }
}
