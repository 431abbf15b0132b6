//! The key and value formats of `__consumer_offsets` records, byte-compatible with Kafka.
//!
//! Keys start with an `i16` version that doubles as the record type: 0 and 1 are offset
//! commits (`group`, `topic`, `partition`), 2 is group metadata (`group`). Values start with
//! their own `i16` version. We write offset commit values v3 (v1 when an expiry timestamp is
//! set, as Kafka does) and group metadata values v3, and read v0-v3 of both. A record with no
//! value is a tombstone: it deletes the offset or the group. Encoding is Kafka's classic
//! (non-flexible) one: big-endian integers, strings as `i16` length + UTF-8 (`-1` = null),
//! bytes as `i32` length, arrays as `i32` count.

use bytes::Bytes;

/// Key version Kafka writes for offset commits (v0 has the same layout).
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of group metadata records.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;

/// A decoded `__consumer_offsets` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetsKey {
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
    },
    GroupMetadata {
        group: String,
    },
}

/// The value of an offset commit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    /// -1 when unknown (and in v0-v2, which do not carry it).
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Only v1 carries it; written when set.
    pub expire_timestamp_ms: Option<i64>,
}

/// The value of a group metadata record: the group's last completed generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// -1 when unknown (v0-v1 do not carry it).
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadataValue>,
}

/// One member inside a group metadata record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMetadataValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// v0 does not carry it; decoded as the session timeout then, as Kafka does.
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A record to append to (or replayed from) the group's partition of `__consumer_offsets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetsRecord {
    pub key: Bytes,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
}

/// Why a `__consumer_offsets` key or value could not be decoded. `at` is the byte position
/// inside the key or value; the caller adds the log offset of the record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("{what}: truncated at byte {at} reading {field}")]
    Truncated {
        what: &'static str,
        field: &'static str,
        at: usize,
    },
    #[error("{what}: unsupported version {version}")]
    UnsupportedVersion { what: &'static str, version: i16 },
    #[error("{what}: invalid length {length} of {field} at byte {at}")]
    InvalidLength {
        what: &'static str,
        field: &'static str,
        length: i64,
        at: usize,
    },
    #[error("{what}: {field} at byte {at} is not UTF-8")]
    InvalidUtf8 {
        what: &'static str,
        field: &'static str,
        at: usize,
    },
    #[error("{what}: {extra} unexpected trailing bytes")]
    TrailingBytes { what: &'static str, extra: usize },
}

impl OffsetsKey {
    pub fn group(&self) -> &str {
        match self {
            OffsetsKey::OffsetCommit { group, .. } | OffsetsKey::GroupMetadata { group } => group,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut w = Writer::default();
        match self {
            OffsetsKey::OffsetCommit {
                group,
                topic,
                partition,
            } => {
                w.i16(OFFSET_COMMIT_KEY_VERSION);
                w.string(group);
                w.string(topic);
                w.i32(*partition);
            }
            OffsetsKey::GroupMetadata { group } => {
                w.i16(GROUP_METADATA_KEY_VERSION);
                w.string(group);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new(bytes, "offsets key");
        let version = r.i16("version")?;
        let key = match version {
            0 | 1 => OffsetsKey::OffsetCommit {
                group: r.string("group")?,
                topic: r.string("topic")?,
                partition: r.i32("partition")?,
            },
            2 => OffsetsKey::GroupMetadata {
                group: r.string("group")?,
            },
            version => {
                return Err(RecordError::UnsupportedVersion {
                    what: "offsets key",
                    version,
                })
            }
        };
        r.finish()?;
        Ok(key)
    }
}

impl OffsetCommitValue {
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::default();
        match self.expire_timestamp_ms {
            Some(expire) => {
                w.i16(1);
                w.i64(self.offset);
                w.string(&self.metadata);
                w.i64(self.commit_timestamp_ms);
                w.i64(expire);
            }
            None => {
                w.i16(3);
                w.i64(self.offset);
                w.i32(self.leader_epoch);
                w.string(&self.metadata);
                w.i64(self.commit_timestamp_ms);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new(bytes, "offset commit value");
        let version = r.i16("version")?;
        if !(0..=3).contains(&version) {
            return Err(RecordError::UnsupportedVersion {
                what: "offset commit value",
                version,
            });
        }
        let offset = r.i64("offset")?;
        let leader_epoch = if version >= 3 {
            r.i32("leader_epoch")?
        } else {
            -1
        };
        let metadata = r.string("metadata")?;
        let commit_timestamp_ms = r.i64("commit_timestamp")?;
        let expire_timestamp_ms = if version == 1 {
            Some(r.i64("expire_timestamp")?)
        } else {
            None
        };
        r.finish()?;
        Ok(OffsetCommitValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
            expire_timestamp_ms,
        })
    }
}

impl GroupMetadataValue {
    /// Encodes as v3, the version Kafka writes since 2.3 (static membership).
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::default();
        w.i16(3);
        w.string(&self.protocol_type);
        w.i32(self.generation);
        w.nullable_string(self.protocol.as_deref());
        w.nullable_string(self.leader.as_deref());
        w.i64(self.current_state_timestamp_ms);
        w.i32(len_i32(self.members.len()));
        for m in &self.members {
            w.string(&m.member_id);
            w.nullable_string(m.group_instance_id.as_deref());
            w.string(&m.client_id);
            w.string(&m.client_host);
            w.i32(m.rebalance_timeout_ms);
            w.i32(m.session_timeout_ms);
            w.bytes(&m.subscription);
            w.bytes(&m.assignment);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new(bytes, "group metadata value");
        let version = r.i16("version")?;
        if !(0..=3).contains(&version) {
            return Err(RecordError::UnsupportedVersion {
                what: "group metadata value",
                version,
            });
        }
        let protocol_type = r.string("protocol_type")?;
        let generation = r.i32("generation")?;
        let protocol = r.nullable_string("protocol")?;
        let leader = r.nullable_string("leader")?;
        let current_state_timestamp_ms = if version >= 2 {
            r.i64("current_state_timestamp")?
        } else {
            -1
        };
        let count = r.count("members")?;
        let mut members = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let member_id = r.string("member_id")?;
            let group_instance_id = if version >= 3 {
                r.nullable_string("group_instance_id")?
            } else {
                None
            };
            let client_id = r.string("client_id")?;
            let client_host = r.string("client_host")?;
            let rebalance_timeout = if version >= 1 {
                Some(r.i32("rebalance_timeout")?)
            } else {
                None
            };
            let session_timeout_ms = r.i32("session_timeout")?;
            let subscription = r.bytes("subscription")?;
            let assignment = r.bytes("assignment")?;
            members.push(MemberMetadataValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms: rebalance_timeout.unwrap_or(session_timeout_ms),
                session_timeout_ms,
                subscription,
                assignment,
            });
        }
        r.finish()?;
        Ok(GroupMetadataValue {
            protocol_type,
            generation,
            protocol,
            leader,
            current_state_timestamp_ms,
            members,
        })
    }
}

/// An offset commit record for `group`/`topic`/`partition`.
pub fn offset_commit_record(
    group: &str,
    topic: &str,
    partition: i32,
    value: &OffsetCommitValue,
) -> OffsetsRecord {
    OffsetsRecord {
        key: OffsetsKey::OffsetCommit {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
        }
        .encode(),
        value: Some(value.encode()),
    }
}

/// A tombstone deleting the committed offset of `group`/`topic`/`partition`.
pub fn offset_tombstone(group: &str, topic: &str, partition: i32) -> OffsetsRecord {
    OffsetsRecord {
        key: OffsetsKey::OffsetCommit {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
        }
        .encode(),
        value: None,
    }
}

/// A group metadata record for `group`.
pub fn group_metadata_record(group: &str, value: &GroupMetadataValue) -> OffsetsRecord {
    OffsetsRecord {
        key: OffsetsKey::GroupMetadata {
            group: group.to_owned(),
        }
        .encode(),
        value: Some(value.encode()),
    }
}

/// A tombstone deleting the metadata of `group`.
pub fn group_tombstone(group: &str) -> OffsetsRecord {
    OffsetsRecord {
        key: OffsetsKey::GroupMetadata {
            group: group.to_owned(),
        }
        .encode(),
        value: None,
    }
}

/// Saturates lengths that cannot occur: strings are bounded by the request size limits and
/// member counts by the group size limit, far below `i32::MAX`.
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn string(&mut self, s: &str) {
        // Kafka strings are at most i16::MAX bytes; longer ones are cut at a char boundary
        // rather than written with a wrapped length that would corrupt the record.
        let mut end = s.len().min(i16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.i16(end as i16);
        self.buf.extend_from_slice(&s.as_bytes()[..end]);
    }
    fn nullable_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.i16(-1),
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        self.i32(len_i32(b.len()));
        self.buf.extend_from_slice(b);
    }
    fn finish(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], RecordError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(RecordError::Truncated {
                what: self.what,
                field,
                at: self.pos,
            })?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }
    fn i32(&mut self, field: &'static str) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }
    fn i64(&mut self, field: &'static str) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    fn nullable_string(&mut self, field: &'static str) -> Result<Option<String>, RecordError> {
        let at = self.pos;
        let len = self.i16(field)?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(RecordError::InvalidLength {
                what: self.what,
                field,
                length: i64::from(len),
                at,
            });
        }
        let raw = self.take(len as usize, field)?;
        let s = std::str::from_utf8(raw).map_err(|_| RecordError::InvalidUtf8 {
            what: self.what,
            field,
            at,
        })?;
        Ok(Some(s.to_owned()))
    }

    fn string(&mut self, field: &'static str) -> Result<String, RecordError> {
        let at = self.pos;
        self.nullable_string(field)?
            .ok_or(RecordError::InvalidLength {
                what: self.what,
                field,
                length: -1,
                at,
            })
    }

    fn bytes(&mut self, field: &'static str) -> Result<Bytes, RecordError> {
        let at = self.pos;
        let len = self.i32(field)?;
        let len = usize::try_from(len).map_err(|_| RecordError::InvalidLength {
            what: self.what,
            field,
            length: i64::from(len),
            at,
        })?;
        Ok(Bytes::copy_from_slice(self.take(len, field)?))
    }

    fn count(&mut self, field: &'static str) -> Result<usize, RecordError> {
        let at = self.pos;
        let n = self.i32(field)?;
        usize::try_from(n).map_err(|_| RecordError::InvalidLength {
            what: self.what,
            field,
            length: i64::from(n),
            at,
        })
    }

    fn finish(&self) -> Result<(), RecordError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(RecordError::TrailingBytes {
                what: self.what,
                extra,
            }),
        }
    }
}
