//! OffsetCommit v0-1 and OffsetFetch v0, the versions Kafka 4 dropped and the `kafka-protocol`
//! crate therefore has no codec for, decoded and encoded by hand from the protocol guide.
//!
//! Kafka kept v0 offsets in ZooKeeper and v1+ offsets in `__consumer_offsets`. This broker has
//! one offset store, so the front end serves these versions with the same coordinator as the
//! newer ones: a v0 commit is a commit from outside group management (generation -1, no
//! member id), v1 carries the member's generation and id, and a v0 fetch reads what any
//! version committed. Layouts (all big-endian, non-flexible; strings are an `i16` length and
//! UTF-8, -1 for null; arrays an `i32` count):
//!
//! ```text
//! OffsetCommit Request v0 => group_id [name [partition_index committed_offset committed_metadata]]
//! OffsetCommit Request v1 => group_id generation_id member_id
//!                            [name [partition_index committed_offset commit_timestamp committed_metadata]]
//! OffsetCommit Response v0-1 => [name [partition_index error_code]]
//! OffsetFetch Request v0  => group_id [name [partition_index]]
//! OffsetFetch Response v0 => [name [partition_index committed_offset metadata error_code]]
//! ```

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// What is wrong with a request body, naming the field that did not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyError {
    pub field: &'static str,
    pub reason: &'static str,
}

impl fmt::Display for LegacyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for LegacyError {}

type Result<T> = std::result::Result<T, LegacyError>;

fn error<T>(field: &'static str, reason: &'static str) -> Result<T> {
    Err(LegacyError { field, reason })
}

fn i16_of(buf: &mut Bytes, field: &'static str) -> Result<i16> {
    if buf.remaining() < 2 {
        return error(field, "truncated");
    }
    Ok(buf.get_i16())
}

fn i32_of(buf: &mut Bytes, field: &'static str) -> Result<i32> {
    if buf.remaining() < 4 {
        return error(field, "truncated");
    }
    Ok(buf.get_i32())
}

fn i64_of(buf: &mut Bytes, field: &'static str) -> Result<i64> {
    if buf.remaining() < 8 {
        return error(field, "truncated");
    }
    Ok(buf.get_i64())
}

fn nullable_string(buf: &mut Bytes, field: &'static str) -> Result<Option<StrBytes>> {
    let len = i16_of(buf, field)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if len > buf.remaining() {
        return error(field, "length past the end of the request");
    }
    StrBytes::from_utf8(buf.split_to(len))
        .map(Some)
        .or_else(|_| error(field, "not UTF-8"))
}

fn string(buf: &mut Bytes, field: &'static str) -> Result<StrBytes> {
    match nullable_string(buf, field)? {
        Some(s) => Ok(s),
        None => error(field, "null where the protocol has a string"),
    }
}

/// An array count, refused when negative or when `min_item_bytes` each would not fit in what
/// is left (so a lying count cannot make us allocate).
fn count(buf: &mut Bytes, field: &'static str, min_item_bytes: usize) -> Result<usize> {
    let n = i32_of(buf, field)?;
    if n < 0 {
        return error(field, "negative count");
    }
    let n = n as usize;
    if n.saturating_mul(min_item_bytes) > buf.remaining() {
        return error(field, "count larger than the request");
    }
    Ok(n)
}

fn put_string(out: &mut BytesMut, s: &str) {
    // Names come from requests that were decoded with an i16 length, so they fit.
    let len = s.len().min(i16::MAX as usize);
    out.put_i16(len as i16);
    out.put_slice(&s.as_bytes()[..len]);
}

fn put_nullable_string(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.put_i16(-1),
    }
}

/// An OffsetCommit v0-1 request as the crate's type (generation -1 and an empty member id for
/// v0), with v1's per-partition commit timestamps in request order (-1: the broker's time).
pub struct LegacyOffsetCommit {
    pub request: OffsetCommitRequest,
    pub commit_timestamps_ms: Vec<i64>,
}

/// Decodes an OffsetCommit v0 or v1 body.
pub fn decode_offset_commit(body: &mut Bytes, version: i16) -> Result<LegacyOffsetCommit> {
    debug_assert!((0..=1).contains(&version));
    let group_id = string(body, "group_id")?;
    let (generation, member_id) = if version >= 1 {
        (i32_of(body, "generation_id")?, string(body, "member_id")?)
    } else {
        (-1, StrBytes::default())
    };
    let partition_bytes = if version >= 1 { 22 } else { 14 };
    let mut timestamps = Vec::new();
    let topic_count = count(body, "topics", 6)?;
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        let name = string(body, "topics.name")?;
        let partition_count = count(body, "topics.partitions", partition_bytes)?;
        let mut partitions = Vec::with_capacity(partition_count);
        for _ in 0..partition_count {
            let index = i32_of(body, "partition_index")?;
            let offset = i64_of(body, "committed_offset")?;
            if version >= 1 {
                timestamps.push(i64_of(body, "commit_timestamp")?);
            }
            let metadata = nullable_string(body, "committed_metadata")?;
            partitions.push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(index)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(metadata),
            );
        }
        topics.push(
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(name))
                .with_partitions(partitions),
        );
    }
    Ok(LegacyOffsetCommit {
        request: OffsetCommitRequest::default()
            .with_group_id(GroupId(group_id))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(member_id)
            .with_topics(topics),
        commit_timestamps_ms: timestamps,
    })
}

/// The body of an OffsetCommit v0-1 response (no throttle time before v3).
pub fn encode_offset_commit_response(response: &OffsetCommitResponse) -> BytesMut {
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(response.topics.len() as i32);
    for topic in &response.topics {
        put_string(&mut out, topic.name.0.as_str());
        out.put_i32(topic.partitions.len() as i32);
        for p in &topic.partitions {
            out.put_i32(p.partition_index);
            out.put_i16(p.error_code);
        }
    }
    out
}

/// Decodes an OffsetFetch v0 body (its topic list is never null).
pub fn decode_offset_fetch_v0(body: &mut Bytes) -> Result<OffsetFetchRequest> {
    let group_id = string(body, "group_id")?;
    let topic_count = count(body, "topics", 6)?;
    let mut topics = Vec::with_capacity(topic_count);
    for _ in 0..topic_count {
        let name = string(body, "topics.name")?;
        let n = count(body, "topics.partition_indexes", 4)?;
        let mut indexes = Vec::with_capacity(n);
        for _ in 0..n {
            indexes.push(i32_of(body, "partition_index")?);
        }
        topics.push(
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(name))
                .with_partition_indexes(indexes),
        );
    }
    Ok(OffsetFetchRequest::default()
        .with_group_id(GroupId(group_id))
        .with_topics(Some(topics)))
}

/// The body of an OffsetFetch v0 response (the same layout as v1; a group-level error is on
/// every partition, there is no top-level one before v2).
pub fn encode_offset_fetch_v0_response(response: &OffsetFetchResponse) -> BytesMut {
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(response.topics.len() as i32);
    for topic in &response.topics {
        put_string(&mut out, topic.name.0.as_str());
        out.put_i32(topic.partitions.len() as i32);
        for p in &topic.partitions {
            out.put_i32(p.partition_index);
            out.put_i64(p.committed_offset);
            put_nullable_string(&mut out, p.metadata.as_ref().map(|m| m.as_str()));
            out.put_i16(p.error_code);
        }
    }
    out
}

/// A response frame: size, correlation id (response header v0), body.
pub fn frame(correlation_id: i32, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + body.len());
    out.put_i32((4 + body.len()) as i32);
    out.put_i32(correlation_id);
    out.put_slice(body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    //! Proves the hand codec reads and writes the protocol guide's layouts for OffsetCommit
    //! v0-1 and OffsetFetch v0 (bytes built by hand, field by field), and that truncated or
    //! lying bodies are errors naming the field, never panics.
    use super::*;
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponsePartition, OffsetFetchResponseTopic,
    };

    fn s(out: &mut BytesMut, text: &str) {
        out.put_i16(text.len() as i16);
        out.put_slice(text.as_bytes());
    }

    fn commit_body(version: i16) -> BytesMut {
        let mut b = BytesMut::new();
        s(&mut b, "grp");
        if version >= 1 {
            b.put_i32(7);
            s(&mut b, "member-1");
        }
        b.put_i32(1);
        s(&mut b, "t");
        b.put_i32(2);
        for (p, offset, meta) in [(0, 42i64, Some("m")), (3, 9, None)] {
            b.put_i32(p);
            b.put_i64(offset);
            if version >= 1 {
                b.put_i64(if p == 0 { 1_700_000_000_000 } else { -1 });
            }
            match meta {
                Some(m) => s(&mut b, m),
                None => b.put_i16(-1),
            }
        }
        b
    }

    #[test]
    fn offset_commit_v0_is_a_commit_without_group_management() {
        let mut body = commit_body(0).freeze();
        let c = decode_offset_commit(&mut body, 0).unwrap();
        assert!(body.is_empty());
        let r = c.request;
        assert_eq!(r.group_id.0.as_str(), "grp");
        assert_eq!(r.generation_id_or_member_epoch, -1);
        assert_eq!(r.member_id.as_str(), "");
        assert_eq!(r.topics[0].name.0.as_str(), "t");
        let p = &r.topics[0].partitions;
        assert_eq!((p[0].partition_index, p[0].committed_offset), (0, 42));
        assert_eq!(p[0].committed_metadata.as_ref().unwrap().as_str(), "m");
        assert_eq!((p[1].partition_index, p[1].committed_offset), (3, 9));
        assert!(p[1].committed_metadata.is_none());
        assert_eq!(p[0].committed_leader_epoch, -1);
        assert!(c.commit_timestamps_ms.is_empty());
    }

    #[test]
    fn offset_commit_v1_carries_generation_member_and_timestamps() {
        let mut body = commit_body(1).freeze();
        let c = decode_offset_commit(&mut body, 1).unwrap();
        assert!(body.is_empty());
        assert_eq!(c.request.generation_id_or_member_epoch, 7);
        assert_eq!(c.request.member_id.as_str(), "member-1");
        assert_eq!(c.commit_timestamps_ms, vec![1_700_000_000_000, -1]);
        assert_eq!(c.request.topics[0].partitions[1].committed_offset, 9);
    }

    #[test]
    fn every_truncation_of_a_commit_is_an_error() {
        for version in [0, 1] {
            let full = commit_body(version).freeze();
            for cut in 0..full.len() {
                let mut body = full.slice(..cut);
                let err = decode_offset_commit(&mut body, version).err();
                assert!(err.is_some(), "v{version} cut at {cut} decoded");
            }
        }
    }

    #[test]
    fn lying_counts_and_bad_strings_are_errors() {
        let mut b = BytesMut::new();
        s(&mut b, "grp");
        b.put_i32(1_000_000);
        let err = decode_offset_commit(&mut b.freeze(), 0).err().unwrap();
        assert_eq!(err.field, "topics");
        let mut b = BytesMut::new();
        s(&mut b, "grp");
        b.put_i32(-1);
        assert!(decode_offset_fetch_v0(&mut b.freeze()).is_err());
        let mut b = BytesMut::new();
        b.put_i16(2);
        b.put_slice(&[0xff, 0xfe]);
        let err = decode_offset_fetch_v0(&mut b.freeze()).err().unwrap();
        assert_eq!((err.field, err.reason), ("group_id", "not UTF-8"));
        let mut b = BytesMut::new();
        b.put_i16(-1);
        let err = decode_offset_fetch_v0(&mut b.freeze()).err().unwrap();
        assert_eq!(err.field, "group_id");
    }

    #[test]
    fn offset_fetch_v0_request_and_response_layouts() {
        let mut b = BytesMut::new();
        s(&mut b, "grp");
        b.put_i32(1);
        s(&mut b, "t");
        b.put_i32(2);
        b.put_i32(0);
        b.put_i32(5);
        let r = decode_offset_fetch_v0(&mut b.freeze()).unwrap();
        assert_eq!(r.group_id.0.as_str(), "grp");
        let topics = r.topics.unwrap();
        assert_eq!(topics[0].partition_indexes, vec![0, 5]);

        let response =
            OffsetFetchResponse::default().with_topics(vec![OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(42)
                        .with_metadata(Some(StrBytes::from_static_str("m")))
                        .with_error_code(0),
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(5)
                        .with_committed_offset(-1)
                        .with_metadata(None)
                        .with_error_code(3),
                ])]);
        let mut want = BytesMut::new();
        want.put_i32(1);
        s(&mut want, "t");
        want.put_i32(2);
        want.put_i32(0);
        want.put_i64(42);
        s(&mut want, "m");
        want.put_i16(0);
        want.put_i32(5);
        want.put_i64(-1);
        want.put_i16(-1);
        want.put_i16(3);
        assert_eq!(encode_offset_fetch_v0_response(&response), want);
    }

    #[test]
    fn offset_commit_response_layout_and_frame() {
        let response =
            OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![OffsetCommitResponsePartition::default()
                    .with_partition_index(3)
                    .with_error_code(25)])]);
        let body = encode_offset_commit_response(&response);
        let mut want = BytesMut::new();
        want.put_i32(1);
        s(&mut want, "t");
        want.put_i32(1);
        want.put_i32(3);
        want.put_i16(25);
        assert_eq!(body, want);
        let mut f = frame(99, &body);
        assert_eq!(f.get_i32() as usize, 4 + body.len());
        assert_eq!(f.get_i32(), 99);
        assert_eq!(&f[..], &body[..]);
    }
}
