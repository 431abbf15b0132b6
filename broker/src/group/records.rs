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

#[cfg(test)]
mod tests {
    //! Proves the record codec writes Kafka's byte layout (against bytes written out by hand
    //! from Kafka's message schemas), reads every version Kafka wrote, round-trips what it
    //! writes, and turns any malformed input into an error rather than a panic (proptest).
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offset_commit_key_has_kafka_layout() {
        let key = OffsetsKey::OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            partition: 2,
        };
        let bytes = key.encode();
        assert_eq!(&bytes[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 2]);
        assert_eq!(OffsetsKey::decode(&bytes).unwrap(), key);
        // Key version 0 (written by Kafka before 0.10) has the same layout.
        let v0 = [0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 2];
        assert_eq!(OffsetsKey::decode(&v0).unwrap(), key);
    }

    #[test]
    fn group_metadata_key_has_kafka_layout() {
        let key = OffsetsKey::GroupMetadata {
            group: "grp".into(),
        };
        assert_eq!(&key.encode()[..], &[0, 2, 0, 3, b'g', b'r', b'p']);
        assert_eq!(key.group(), "grp");
    }

    #[test]
    fn offset_commit_value_v3_layout_and_older_versions() {
        let v = OffsetCommitValue {
            offset: 5,
            leader_epoch: 7,
            metadata: String::new(),
            commit_timestamp_ms: 1000,
            expire_timestamp_ms: None,
        };
        let bytes = v.encode();
        let want: Vec<u8> = [
            &[0u8, 3][..],
            &5i64.to_be_bytes(),
            &7i32.to_be_bytes(),
            &[0, 0],
            &1000i64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(&bytes[..], &want[..]);
        assert_eq!(OffsetCommitValue::decode(&bytes).unwrap(), v);
        // v1: offset, metadata, commit timestamp, expire timestamp.
        let v1: Vec<u8> = [
            &[0u8, 1][..],
            &9i64.to_be_bytes(),
            &[0, 2, b'h', b'i'],
            &10i64.to_be_bytes(),
            &20i64.to_be_bytes(),
        ]
        .concat();
        let d = OffsetCommitValue::decode(&v1).unwrap();
        assert_eq!(
            (d.offset, d.leader_epoch, d.metadata.as_str()),
            (9, -1, "hi")
        );
        assert_eq!(
            (d.commit_timestamp_ms, d.expire_timestamp_ms),
            (10, Some(20))
        );
        assert_eq!(OffsetCommitValue::decode(&d.encode()).unwrap(), d);
        // v0 and v2: offset, metadata, commit timestamp.
        for version in [0u8, 2] {
            let raw: Vec<u8> = [
                &[0u8, version][..],
                &9i64.to_be_bytes(),
                &[0, 0],
                &10i64.to_be_bytes(),
            ]
            .concat();
            let d = OffsetCommitValue::decode(&raw).unwrap();
            assert_eq!((d.offset, d.expire_timestamp_ms), (9, None));
        }
    }

    #[test]
    fn group_metadata_value_v0_from_old_kafka_decodes() {
        let raw: Vec<u8> = [
            &[0u8, 0][..],
            &[0, 8],
            b"consumer",
            &1i32.to_be_bytes(),
            &[0, 5],
            b"range",
            &[0, 2],
            b"m1",
            &1i32.to_be_bytes(),
            &[0, 2],
            b"m1",
            &[0, 1, b'c'],
            &[0, 1, b'h'],
            &10_000i32.to_be_bytes(),
            &2i32.to_be_bytes(),
            &[1, 2],
            &1i32.to_be_bytes(),
            &[3],
        ]
        .concat();
        let v = GroupMetadataValue::decode(&raw).unwrap();
        assert_eq!(v.protocol_type, "consumer");
        assert_eq!(
            (v.generation, v.protocol.as_deref(), v.leader.as_deref()),
            (1, Some("range"), Some("m1"))
        );
        assert_eq!(v.current_state_timestamp_ms, -1);
        let m = &v.members[0];
        assert_eq!(
            (m.session_timeout_ms, m.rebalance_timeout_ms),
            (10_000, 10_000)
        );
        assert_eq!(
            (&m.subscription[..], &m.assignment[..]),
            (&[1u8, 2][..], &[3u8][..])
        );
        assert_eq!(m.group_instance_id, None);
    }

    #[test]
    fn group_metadata_value_v3_round_trips_with_nulls() {
        let v = GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: 77,
            members: vec![],
        };
        let bytes = v.encode();
        // version, type, generation, null protocol, null leader, timestamp, zero members.
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(&bytes[16..20], &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(GroupMetadataValue::decode(&bytes).unwrap(), v);
    }

    #[test]
    fn malformed_records_are_errors() {
        assert!(matches!(
            OffsetsKey::decode(&[0, 9, 0, 0]),
            Err(RecordError::UnsupportedVersion { version: 9, .. })
        ));
        assert!(matches!(
            OffsetsKey::decode(&[0, 1, 0, 5, b'a']),
            Err(RecordError::Truncated {
                field: "group",
                at: 4,
                ..
            })
        ));
        assert!(matches!(
            OffsetsKey::decode(&[0, 2, 0xff, 0xff]),
            Err(RecordError::InvalidLength { field: "group", .. })
        ));
        assert!(matches!(
            OffsetsKey::decode(&[0, 2, 0, 1, 0xff]),
            Err(RecordError::InvalidUtf8 { .. })
        ));
        assert!(matches!(
            OffsetsKey::decode(&[0, 2, 0, 0, 7]),
            Err(RecordError::TrailingBytes { extra: 1, .. })
        ));
        let mut bad_count = GroupMetadataValue {
            protocol_type: "c".into(),
            generation: 1,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: 0,
            members: vec![],
        }
        .encode()
        .to_vec();
        let n = bad_count.len();
        bad_count[n - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(GroupMetadataValue::decode(&bad_count).is_err());
    }

    fn member() -> impl Strategy<Value = MemberMetadataValue> {
        (
            ".{0,12}",
            proptest::option::of("[a-z]{0,8}"),
            ".{0,8}",
            any::<i32>(),
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 0..32),
            proptest::collection::vec(any::<u8>(), 0..32),
        )
            .prop_map(|(id, inst, client, rt, st, sub, asg)| MemberMetadataValue {
                member_id: id,
                group_instance_id: inst,
                client_id: client.clone(),
                client_host: client,
                rebalance_timeout_ms: rt,
                session_timeout_ms: st,
                subscription: Bytes::from(sub),
                assignment: Bytes::from(asg),
            })
    }

    proptest! {
        #[test]
        fn values_round_trip(
            protocol_type in ".{0,10}",
            generation in any::<i32>(),
            protocol in proptest::option::of(".{0,10}"),
            ts in any::<i64>(),
            members in proptest::collection::vec(member(), 0..5),
            offset in any::<i64>(),
            epoch in any::<i32>(),
            metadata in ".{0,20}",
        ) {
            let leader = members.first().map(|m| m.member_id.clone());
            let g = GroupMetadataValue {
                protocol_type, generation, protocol, leader,
                current_state_timestamp_ms: ts, members,
            };
            prop_assert_eq!(GroupMetadataValue::decode(&g.encode()).unwrap(), g);
            let o = OffsetCommitValue {
                offset, leader_epoch: epoch, metadata, commit_timestamp_ms: ts,
                expire_timestamp_ms: None,
            };
            prop_assert_eq!(OffsetCommitValue::decode(&o.encode()).unwrap(), o);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = OffsetsKey::decode(&bytes);
            let _ = OffsetCommitValue::decode(&bytes);
            let _ = GroupMetadataValue::decode(&bytes);
        }
    }
}
