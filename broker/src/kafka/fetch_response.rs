//! Fetch responses v4-v16, encoded by hand because their record bytes are not in memory: each
//! partition's records are a sequence of [`Part`]s (segment file ranges that go to the socket
//! by splice, and the in-memory tail). Everything around them is written into small buffers.

use bytes::{BufMut, Bytes, BytesMut};

use super::response::{Part, Response};

/// One partition of the answer.
pub struct PartitionData {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// The records, in order; empty when there are none.
    pub records: Vec<Part>,
    /// v12+: tell a follower its log diverged: `(epoch, end_offset)` (KIP-320).
    pub diverging_epoch: Option<(i32, i64)>,
}

/// One topic of the answer: by name before v13, by id from v13.
pub struct TopicData {
    pub name: Bytes,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionData>,
}

fn put_unsigned_varint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

fn put_array_len(buf: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_unsigned_varint(buf, len as u32 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

/// Encodes the whole response frame (size prefix included).
pub fn encode(
    correlation_id: i32,
    version: i16,
    error_code: i16,
    session_id: i32,
    topics: Vec<TopicData>,
) -> Response {
    debug_assert!((4..=16).contains(&version));
    let flexible = version >= 12;
    let mut parts: Vec<Part> = Vec::new();
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // size, patched below
    buf.put_i32(correlation_id);
    if flexible {
        buf.put_u8(0); // response header v1: no tagged fields
    }
    buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buf.put_i16(error_code);
        buf.put_i32(session_id);
    }
    put_array_len(&mut buf, flexible, topics.len());
    for topic in topics {
        if version >= 13 {
            buf.put_slice(&topic.id);
        } else if flexible {
            put_unsigned_varint(&mut buf, topic.name.len() as u32 + 1);
            buf.put_slice(&topic.name);
        } else {
            buf.put_i16(topic.name.len() as i16);
            buf.put_slice(&topic.name);
        }
        put_array_len(&mut buf, flexible, topic.partitions.len());
        for partition in topic.partitions {
            buf.put_i32(partition.partition);
            buf.put_i16(partition.error_code);
            buf.put_i64(partition.high_watermark);
            buf.put_i64(partition.last_stable_offset);
            if version >= 5 {
                buf.put_i64(partition.log_start_offset);
            }
            // aborted_transactions: null (this broker has no transactions)
            if flexible {
                put_unsigned_varint(&mut buf, 0);
            } else {
                buf.put_i32(-1);
            }
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            let records_len: usize = partition.records.iter().map(Part::len).sum();
            if flexible {
                put_unsigned_varint(&mut buf, records_len as u32 + 1);
            } else {
                buf.put_i32(records_len as i32);
            }
            for part in partition.records {
                match part.in_memory() {
                    // Small pieces in memory are copied next to their framing; the rest are
                    // linked.
                    Some(bytes) if bytes.len() <= 512 => buf.put_slice(bytes),
                    _ => {
                        parts.push(Part::Memory(buf.split().freeze()));
                        parts.push(part);
                    }
                }
            }
            match (flexible, partition.diverging_epoch) {
                (true, Some((epoch, end_offset))) => {
                    // One tagged field, tag 0: EpochEndOffset {epoch, end_offset, no tags}.
                    put_unsigned_varint(&mut buf, 1);
                    put_unsigned_varint(&mut buf, 0);
                    put_unsigned_varint(&mut buf, 13);
                    buf.put_i32(epoch);
                    buf.put_i64(end_offset);
                    buf.put_u8(0);
                }
                (true, None) => buf.put_u8(0), // partition tagged fields
                (false, _) => {}
            }
        }
        if flexible {
            buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        buf.put_u8(0); // response tagged fields
    }
    parts.push(Part::Memory(buf.freeze()));
    let mut response = Response { parts };
    let size = (response.len() - 4) as i32;
    if let Some(Part::Memory(first)) = response.parts.first_mut() {
        let mut head = BytesMut::from(&first[..]);
        head[..4].copy_from_slice(&size.to_be_bytes());
        *first = head.freeze();
    }
    response
}

#[cfg(test)]
mod tests {
    //! Proves the hand encoder produces what kafka-protocol decodes as a Fetch response, for a
    //! non-flexible, a flexible and a topic-id version, by round-tripping through the codec.
    use super::*;
    use bytes::Buf;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    fn roundtrip(version: i16) {
        let records = Bytes::from(vec![7u8; 600]);
        let topics = vec![TopicData {
            name: Bytes::from_static(b"orders"),
            id: [9; 16],
            partitions: vec![PartitionData {
                partition: 3,
                error_code: 0,
                high_watermark: 42,
                last_stable_offset: 42,
                log_start_offset: 1,
                records: vec![
                    Part::Memory(Bytes::from_static(b"abc")),
                    Part::Memory(records.clone()),
                ],
                diverging_epoch: (version >= 12).then_some((5, 77)),
            }],
        }];
        let response = encode(11, version, 0, 0, topics);
        let mut frame = BytesMut::new();
        for part in response.parts {
            frame.put_slice(part.in_memory().unwrap());
        }
        let mut frame = frame.freeze();
        assert_eq!(frame.get_i32() as usize, frame.len());
        assert_eq!(frame.get_i32(), 11);
        if version >= 12 {
            assert_eq!(frame.get_u8(), 0);
        }
        let body = FetchResponse::decode(&mut frame, version).unwrap();
        assert!(frame.is_empty(), "v{version}: trailing bytes");
        let partition = &body.responses[0].partitions[0];
        assert_eq!(partition.partition_index, 3);
        assert_eq!(partition.high_watermark, 42);
        let got = partition.records.clone().unwrap();
        assert_eq!(got.len(), 603);
        assert_eq!(&got[3..], &records[..]);
        if version >= 12 {
            assert_eq!(partition.diverging_epoch.epoch, 5);
            assert_eq!(partition.diverging_epoch.end_offset, 77);
        }
        if version >= 13 {
            assert_eq!(body.responses[0].topic_id.as_bytes(), &[9; 16]);
        } else {
            assert_eq!(body.responses[0].topic.0.as_str(), "orders");
        }
    }

    #[test]
    fn matches_the_codec() {
        for version in 4..=16 {
            roundtrip(version);
        }
    }
}
