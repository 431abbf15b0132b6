//! The jute records of the client protocol (`zookeeper.jute`: `proto` and `data` modules)
//! that this server reads and writes, with total decoders and plain encoders.

use super::codes::op;
use super::{DecodeError, Reader, Writer};

/// The first frame of a connection (no `RequestHeader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    /// Sent by clients since 3.4; absent from older ones. Echoed in the response only if sent.
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let protocol_version = r.read_i32()?;
        let last_zxid_seen = r.read_i64()?;
        let timeout_ms = r.read_i32()?;
        let session_id = r.read_i64()?;
        let passwd = r.read_buffer()?.to_vec();
        let read_only = if r.remaining() > 0 {
            Some(r.read_bool()?)
        } else {
            None
        };
        Ok(ConnectRequest {
            protocol_version,
            last_zxid_seen,
            timeout_ms,
            session_id,
            passwd,
            read_only,
        })
    }

    pub fn encode(&self, w: &mut Writer) {
        w.i32(self.protocol_version)
            .i64(self.last_zxid_seen)
            .i32(self.timeout_ms)
            .i64(self.session_id)
            .buffer(&self.passwd);
        if let Some(ro) = self.read_only {
            w.bool(ro);
        }
    }
}

/// The answer to a `ConnectRequest`; a zero timeout and session id tell the client its
/// session expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    pub read_only: Option<bool>,
}

impl ConnectResponse {
    pub fn encode(&self, w: &mut Writer) {
        w.i32(self.protocol_version)
            .i32(self.timeout_ms)
            .i64(self.session_id)
            .buffer(&self.passwd);
        if let Some(ro) = self.read_only {
            w.bool(ro);
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        Ok(ConnectResponse {
            protocol_version: r.read_i32()?,
            timeout_ms: r.read_i32()?,
            session_id: r.read_i64()?,
            passwd: r.read_buffer()?.to_vec(),
            read_only: if r.remaining() > 0 {
                Some(r.read_bool()?)
            } else {
                None
            },
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub xid: i32,
    pub op: i32,
}

impl RequestHeader {
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RequestHeader {
            xid: r.read_i32()?,
            op: r.read_i32()?,
        })
    }
    pub fn encode(&self, w: &mut Writer) {
        w.i32(self.xid).i32(self.op);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
}

impl ReplyHeader {
    pub fn encode(&self, w: &mut Writer) {
        w.i32(self.xid).i64(self.zxid).i32(self.err);
    }
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ReplyHeader {
            xid: r.read_i32()?,
            zxid: r.read_i64()?,
            err: r.read_i32()?,
        })
    }
}

/// A znode's metadata as the client sees it: 11 fields, 68 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

impl Stat {
    pub const ENCODED_BYTES: usize = 68;

    pub fn encode(&self, w: &mut Writer) {
        w.i64(self.czxid)
            .i64(self.mzxid)
            .i64(self.ctime)
            .i64(self.mtime)
            .i32(self.version)
            .i32(self.cversion)
            .i32(self.aversion)
            .i64(self.ephemeral_owner)
            .i32(self.data_length)
            .i32(self.num_children)
            .i64(self.pzxid);
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Stat {
            czxid: r.read_i64()?,
            mzxid: r.read_i64()?,
            ctime: r.read_i64()?,
            mtime: r.read_i64()?,
            version: r.read_i32()?,
            cversion: r.read_i32()?,
            aversion: r.read_i32()?,
            ephemeral_owner: r.read_i64()?,
            data_length: r.read_i32()?,
            num_children: r.read_i32()?,
            pzxid: r.read_i64()?,
        })
    }
}

/// One access control entry: permission bits for `scheme:id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Acl {
    pub perms: i32,
    pub scheme: String,
    pub id: String,
}

impl Acl {
    pub fn world_anyone(perms: i32) -> Self {
        Acl {
            perms,
            scheme: "world".into(),
            id: "anyone".into(),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Acl {
            perms: r.read_i32()?,
            scheme: r.read_string()?.to_owned(),
            id: r.read_string()?.to_owned(),
        })
    }

    pub fn encode(&self, w: &mut Writer) {
        w.i32(self.perms).string(&self.scheme).string(&self.id);
    }
}

pub fn read_acl_vec(r: &mut Reader<'_>) -> Result<Vec<Acl>, DecodeError> {
    // An ACL is at least 12 bytes (perms + two string lengths).
    let n = r.read_vec_len(12)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Acl::decode(r)?);
    }
    Ok(out)
}

pub fn write_acl_vec(w: &mut Writer, acl: &[Acl]) {
    w.i32(acl.len() as i32);
    for a in acl {
        a.encode(w);
    }
}

/// create, create2, createContainer and createTTL share this shape; `ttl_ms` is only on the
/// wire for createTTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub path: String,
    /// `None` when the client sent null data (kept apart from empty, as ZooKeeper does).
    pub data: Option<Vec<u8>>,
    pub acl: Vec<Acl>,
    pub flags: i32,
    pub ttl_ms: Option<i64>,
}

impl CreateRequest {
    fn decode(r: &mut Reader<'_>, with_ttl: bool) -> Result<Self, DecodeError> {
        Ok(CreateRequest {
            path: r.read_string()?.to_owned(),
            data: r.read_opt_buffer()?.map(<[u8]>::to_vec),
            acl: read_acl_vec(r)?,
            flags: r.read_i32()?,
            ttl_ms: if with_ttl { Some(r.read_i64()?) } else { None },
        })
    }

    pub fn encode(&self, w: &mut Writer) {
        w.string(&self.path).opt_buffer(self.data.as_deref());
        write_acl_vec(w, &self.acl);
        w.i32(self.flags);
        if let Some(ttl) = self.ttl_ms {
            w.i64(ttl);
        }
    }
}

/// One operation inside a multi request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp {
    /// `op` is the opcode it came with (create, create2, createContainer, createTTL): it
    /// decides the shape of the result.
    Create {
        op: i32,
        request: CreateRequest,
    },
    Delete {
        path: String,
        version: i32,
    },
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
}

impl MultiOp {
    pub fn op_code(&self) -> i32 {
        match self {
            MultiOp::Create { op, .. } => *op,
            MultiOp::Delete { .. } => op::DELETE,
            MultiOp::SetData { .. } => op::SET_DATA,
            MultiOp::Check { .. } => op::CHECK,
        }
    }

    pub fn encode(&self, w: &mut Writer) {
        match self {
            MultiOp::Create { request, .. } => request.encode(w),
            MultiOp::Delete { path, version } | MultiOp::Check { path, version } => {
                w.string(path).i32(*version);
            }
            MultiOp::SetData {
                path,
                data,
                version,
            } => {
                w.string(path).opt_buffer(data.as_deref()).i32(*version);
            }
        }
    }
}

/// A multi request: `MultiHeader`-prefixed ops ended by a header with `done` set.
pub fn decode_multi(r: &mut Reader<'_>) -> Result<Vec<MultiOp>, DecodeError> {
    let mut ops = Vec::new();
    loop {
        let offset = r.offset();
        let kind = r.read_i32()?;
        let done = r.read_bool()?;
        let _err = r.read_i32()?;
        if done {
            return Ok(ops);
        }
        let op = match kind {
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER => MultiOp::Create {
                op: kind,
                request: CreateRequest::decode(r, false)?,
            },
            op::CREATE_TTL => MultiOp::Create {
                op: kind,
                request: CreateRequest::decode(r, true)?,
            },
            op::DELETE | op::DELETE_CONTAINER => MultiOp::Delete {
                path: r.read_string()?.to_owned(),
                version: r.read_i32()?,
            },
            op::SET_DATA => MultiOp::SetData {
                path: r.read_string()?.to_owned(),
                data: r.read_opt_buffer()?.map(<[u8]>::to_vec),
                version: r.read_i32()?,
            },
            op::CHECK => MultiOp::Check {
                path: r.read_string()?.to_owned(),
                version: r.read_i32()?,
            },
            other => {
                return Err(DecodeError::BadValue {
                    field: "MultiHeader.type",
                    value: other as i64,
                    offset,
                })
            }
        };
        ops.push(op);
    }
}

/// A multiRead request: getData and getChildren ops, ended like a multi.
pub fn decode_multi_read(r: &mut Reader<'_>) -> Result<Vec<(i32, String, bool)>, DecodeError> {
    let mut ops = Vec::new();
    loop {
        let offset = r.offset();
        let kind = r.read_i32()?;
        let done = r.read_bool()?;
        let _err = r.read_i32()?;
        if done {
            return Ok(ops);
        }
        if kind != op::GET_DATA && kind != op::GET_CHILDREN {
            return Err(DecodeError::BadValue {
                field: "MultiHeader.type",
                value: kind as i64,
                offset,
            });
        }
        ops.push((kind, r.read_string()?.to_owned(), r.read_bool()?));
    }
}

/// Writes a `MultiHeader`.
pub fn write_multi_header(w: &mut Writer, kind: i32, done: bool, err: i32) {
    w.i32(kind).bool(done).i32(err);
}

/// The watch lists of setWatches (101) and setWatches2 (105).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetWatches {
    pub relative_zxid: i64,
    pub data: Vec<String>,
    pub exist: Vec<String>,
    pub child: Vec<String>,
    pub persistent: Vec<String>,
    pub persistent_recursive: Vec<String>,
}

impl SetWatches {
    fn decode(r: &mut Reader<'_>, v2: bool) -> Result<Self, DecodeError> {
        let mut out = SetWatches {
            relative_zxid: r.read_i64()?,
            data: r.read_string_vec()?,
            exist: r.read_string_vec()?,
            child: r.read_string_vec()?,
            ..SetWatches::default()
        };
        if v2 {
            out.persistent = r.read_string_vec()?;
            out.persistent_recursive = r.read_string_vec()?;
        }
        Ok(out)
    }

    pub fn encode(&self, w: &mut Writer, v2: bool) {
        w.i64(self.relative_zxid)
            .string_vec(&self.data)
            .string_vec(&self.exist)
            .string_vec(&self.child);
        if v2 {
            w.string_vec(&self.persistent)
                .string_vec(&self.persistent_recursive);
        }
    }
}

/// A decoded client request body, by opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create {
        op: i32,
        request: CreateRequest,
    },
    Delete {
        path: String,
        version: i32,
    },
    Exists {
        path: String,
        watch: bool,
    },
    GetData {
        path: String,
        watch: bool,
    },
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    GetAcl {
        path: String,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    GetChildren {
        path: String,
        watch: bool,
    },
    GetChildren2 {
        path: String,
        watch: bool,
    },
    Sync {
        path: String,
    },
    Ping,
    Check {
        path: String,
        version: i32,
    },
    Multi(Vec<MultiOp>),
    /// multiRead: getData / getChildren ops (`(opcode, path, watch)`), answered one by one.
    MultiRead(Vec<(i32, String, bool)>),
    CloseSession,
    SetWatches {
        watches: SetWatches,
        v2: bool,
    },
    CheckWatches {
        path: String,
        kind: i32,
    },
    RemoveWatches {
        path: String,
        kind: i32,
    },
    GetEphemerals {
        prefix: String,
    },
    GetAllChildrenNumber {
        path: String,
    },
    WhoAmI,
    /// addWatch: mode 0 persistent, 1 persistent recursive.
    AddWatch {
        path: String,
        mode: i32,
    },
    Auth {
        kind: i32,
        scheme: String,
        auth: Vec<u8>,
    },
    /// A well-formed header with an opcode this server does not implement (reconfig,
    /// multiRead, addWatch, sasl, unknown numbers): answered with UNIMPLEMENTED.
    Unimplemented {
        op: i32,
    },
}

impl Request {
    /// Decodes the body that follows a `RequestHeader` with opcode `op`.
    pub fn decode(op_code: i32, body: &[u8]) -> Result<Self, DecodeError> {
        let r = &mut Reader::new(body);
        let req = match op_code {
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER => Request::Create {
                op: op_code,
                request: CreateRequest::decode(r, false)?,
            },
            op::CREATE_TTL => Request::Create {
                op: op_code,
                request: CreateRequest::decode(r, true)?,
            },
            op::DELETE | op::DELETE_CONTAINER => Request::Delete {
                path: r.read_string()?.to_owned(),
                version: r.read_i32()?,
            },
            op::EXISTS => Request::Exists {
                path: r.read_string()?.to_owned(),
                watch: r.read_bool()?,
            },
            op::GET_DATA => Request::GetData {
                path: r.read_string()?.to_owned(),
                watch: r.read_bool()?,
            },
            op::SET_DATA => Request::SetData {
                path: r.read_string()?.to_owned(),
                data: r.read_opt_buffer()?.map(<[u8]>::to_vec),
                version: r.read_i32()?,
            },
            op::GET_ACL => Request::GetAcl {
                path: r.read_string()?.to_owned(),
            },
            op::SET_ACL => Request::SetAcl {
                path: r.read_string()?.to_owned(),
                acl: read_acl_vec(r)?,
                version: r.read_i32()?,
            },
            op::GET_CHILDREN => Request::GetChildren {
                path: r.read_string()?.to_owned(),
                watch: r.read_bool()?,
            },
            op::GET_CHILDREN2 => Request::GetChildren2 {
                path: r.read_string()?.to_owned(),
                watch: r.read_bool()?,
            },
            op::SYNC => Request::Sync {
                path: r.read_string()?.to_owned(),
            },
            op::PING => Request::Ping,
            op::CHECK => Request::Check {
                path: r.read_string()?.to_owned(),
                version: r.read_i32()?,
            },
            op::MULTI => Request::Multi(decode_multi(r)?),
            op::MULTI_READ => Request::MultiRead(decode_multi_read(r)?),
            op::CLOSE_SESSION => Request::CloseSession,
            op::SET_WATCHES => Request::SetWatches {
                watches: SetWatches::decode(r, false)?,
                v2: false,
            },
            op::SET_WATCHES2 => Request::SetWatches {
                watches: SetWatches::decode(r, true)?,
                v2: true,
            },
            op::CHECK_WATCHES => Request::CheckWatches {
                path: r.read_string()?.to_owned(),
                kind: r.read_i32()?,
            },
            op::REMOVE_WATCHES => Request::RemoveWatches {
                path: r.read_string()?.to_owned(),
                kind: r.read_i32()?,
            },
            op::GET_EPHEMERALS => Request::GetEphemerals {
                prefix: r.read_string()?.to_owned(),
            },
            op::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber {
                path: r.read_string()?.to_owned(),
            },
            op::WHO_AM_I => Request::WhoAmI,
            op::ADD_WATCH => Request::AddWatch {
                path: r.read_string()?.to_owned(),
                mode: r.read_i32()?,
            },
            op::AUTH => Request::Auth {
                kind: r.read_i32()?,
                scheme: r.read_string()?.to_owned(),
                auth: r.read_buffer()?.to_vec(),
            },
            other => Request::Unimplemented { op: other },
        };
        Ok(req)
    }

    /// Encodes the body (the client side of [`Request::decode`]; used by tests and bench).
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Request::Create { request, .. } => request.encode(w),
            Request::Delete { path, version } | Request::Check { path, version } => {
                w.string(path).i32(*version);
            }
            Request::Exists { path, watch }
            | Request::GetData { path, watch }
            | Request::GetChildren { path, watch }
            | Request::GetChildren2 { path, watch } => {
                w.string(path).bool(*watch);
            }
            Request::SetData {
                path,
                data,
                version,
            } => {
                w.string(path).opt_buffer(data.as_deref()).i32(*version);
            }
            Request::GetAcl { path }
            | Request::Sync { path }
            | Request::GetAllChildrenNumber { path } => {
                w.string(path);
            }
            Request::GetEphemerals { prefix } => {
                w.string(prefix);
            }
            Request::SetAcl { path, acl, version } => {
                w.string(path);
                write_acl_vec(w, acl);
                w.i32(*version);
            }
            Request::Multi(ops) => {
                for o in ops {
                    write_multi_header(w, o.op_code(), false, -1);
                    o.encode(w);
                }
                write_multi_header(w, -1, true, -1);
            }
            Request::MultiRead(ops) => {
                for (kind, path, watch) in ops {
                    write_multi_header(w, *kind, false, -1);
                    w.string(path).bool(*watch);
                }
                write_multi_header(w, -1, true, -1);
            }
            Request::SetWatches { watches, v2 } => watches.encode(w, *v2),
            Request::CheckWatches { path, kind } | Request::RemoveWatches { path, kind } => {
                w.string(path).i32(*kind);
            }
            Request::AddWatch { path, mode } => {
                w.string(path).i32(*mode);
            }
            Request::Auth { kind, scheme, auth } => {
                w.i32(*kind).string(scheme).buffer(auth);
            }
            Request::Ping
            | Request::CloseSession
            | Request::WhoAmI
            | Request::Unimplemented { .. } => {}
        }
    }
}

/// `WatcherEvent`: what a notification frame carries after its `ReplyHeader`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherEvent {
    pub kind: i32,
    pub state: i32,
    pub path: String,
}

impl WatcherEvent {
    pub fn encode(&self, w: &mut Writer) {
        w.i32(self.kind).i32(self.state).string(&self.path);
    }
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(WatcherEvent {
            kind: r.read_i32()?,
            state: r.read_i32()?,
            path: r.read_string()?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Proves every request record survives encode -> decode unchanged and that truncated or
    //! hostile input is rejected with an error, by round-tripping and by cutting every prefix.
    use super::*;

    fn sample_requests() -> Vec<(i32, Request)> {
        let create = CreateRequest {
            path: "/a/b".into(),
            data: Some(b"hello".to_vec()),
            acl: vec![Acl::world_anyone(31)],
            flags: 3,
            ttl_ms: None,
        };
        vec![
            (
                op::CREATE,
                Request::Create {
                    op: op::CREATE,
                    request: create.clone(),
                },
            ),
            (
                op::CREATE_TTL,
                Request::Create {
                    op: op::CREATE_TTL,
                    request: CreateRequest {
                        ttl_ms: Some(1000),
                        ..create.clone()
                    },
                },
            ),
            (
                op::DELETE,
                Request::Delete {
                    path: "/x".into(),
                    version: -1,
                },
            ),
            (
                op::GET_DATA,
                Request::GetData {
                    path: "/x".into(),
                    watch: true,
                },
            ),
            (
                op::SET_DATA,
                Request::SetData {
                    path: "/x".into(),
                    data: Some(vec![1, 2, 3]),
                    version: 7,
                },
            ),
            (
                op::SET_ACL,
                Request::SetAcl {
                    path: "/x".into(),
                    acl: vec![Acl::world_anyone(1)],
                    version: 0,
                },
            ),
            (
                op::MULTI,
                Request::Multi(vec![
                    MultiOp::Create {
                        op: op::CREATE,
                        request: create,
                    },
                    MultiOp::Check {
                        path: "/c".into(),
                        version: 2,
                    },
                    MultiOp::SetData {
                        path: "/s".into(),
                        data: None,
                        version: -1,
                    },
                    MultiOp::Delete {
                        path: "/d".into(),
                        version: 1,
                    },
                ]),
            ),
            (
                op::SET_WATCHES2,
                Request::SetWatches {
                    watches: SetWatches {
                        relative_zxid: 42,
                        data: vec!["/a".into()],
                        exist: vec!["/b".into(), "/c".into()],
                        child: vec![],
                        persistent: vec!["/p".into()],
                        persistent_recursive: vec![],
                    },
                    v2: true,
                },
            ),
            (
                op::MULTI_READ,
                Request::MultiRead(vec![
                    (op::GET_DATA, "/a".into(), true),
                    (op::GET_CHILDREN, "/b".into(), false),
                ]),
            ),
            (
                op::REMOVE_WATCHES,
                Request::RemoveWatches {
                    path: "/r".into(),
                    kind: 3,
                },
            ),
            (
                op::ADD_WATCH,
                Request::AddWatch {
                    path: "/w".into(),
                    mode: 1,
                },
            ),
            (
                op::AUTH,
                Request::Auth {
                    kind: 0,
                    scheme: "digest".into(),
                    auth: b"u:p".to_vec(),
                },
            ),
        ]
    }

    #[test]
    fn requests_round_trip_and_every_truncation_is_an_error() {
        for (op_code, req) in sample_requests() {
            let mut w = Writer::new();
            req.encode(&mut w);
            assert_eq!(Request::decode(op_code, &w.bytes).unwrap(), req);
            for cut in 0..w.bytes.len() {
                assert!(
                    Request::decode(op_code, &w.bytes[..cut]).is_err(),
                    "op {op_code} cut at {cut} decoded"
                );
            }
        }
    }

    #[test]
    fn connect_round_trip_with_and_without_read_only() {
        for ro in [None, Some(true)] {
            let req = ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: 5,
                timeout_ms: 30000,
                session_id: 0x1234,
                passwd: vec![0; 16],
                read_only: ro,
            };
            let mut w = Writer::new();
            req.encode(&mut w);
            assert_eq!(ConnectRequest::decode(&w.bytes).unwrap(), req);
            let resp = ConnectResponse {
                protocol_version: 0,
                timeout_ms: 4000,
                session_id: 9,
                passwd: vec![7; 16],
                read_only: ro,
            };
            let mut w = Writer::new();
            resp.encode(&mut w);
            assert_eq!(ConnectResponse::decode(&w.bytes).unwrap(), resp);
        }
    }

    #[test]
    fn stat_is_68_bytes_and_round_trips() {
        let stat = Stat {
            czxid: 1,
            mzxid: 2,
            ctime: 3,
            mtime: 4,
            version: 5,
            cversion: 6,
            aversion: 7,
            ephemeral_owner: 8,
            data_length: 9,
            num_children: 10,
            pzxid: 11,
        };
        let mut w = Writer::new();
        stat.encode(&mut w);
        assert_eq!(w.bytes.len(), Stat::ENCODED_BYTES);
        assert_eq!(Stat::decode(&mut Reader::new(&w.bytes)).unwrap(), stat);
    }

    #[test]
    fn hostile_lengths_are_rejected_without_allocating() {
        // A string length of 2^31-1 with 4 bytes behind it, and a negative length.
        let mut w = Writer::new();
        w.i32(i32::MAX).i32(0);
        assert!(matches!(
            Request::decode(op::GET_DATA, &w.bytes),
            Err(DecodeError::BadLength { .. })
        ));
        let mut w = Writer::new();
        w.i32(-5).i32(0);
        assert!(Request::decode(op::GET_DATA, &w.bytes).is_err());
        // A vector of 2^30 ACLs.
        let mut w = Writer::new();
        w.string("/a").buffer(b"").i32(1 << 30);
        assert!(Request::decode(op::CREATE, &w.bytes).is_err());
        // An unknown op inside a multi.
        let mut w = Writer::new();
        write_multi_header(&mut w, 77, false, -1);
        assert!(matches!(
            Request::decode(op::MULTI, &w.bytes),
            Err(DecodeError::BadValue { .. })
        ));
    }

    #[test]
    fn unknown_opcode_is_unimplemented_not_an_error() {
        assert_eq!(
            Request::decode(9999, b"garbage").unwrap(),
            Request::Unimplemented { op: 9999 }
        );
    }
}
