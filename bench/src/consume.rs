//! `bench consume` and the read-back of `--verify`: fetch a topic from given offsets to the
//! offsets it had when the run started, through the Kafka Fetch API.
//!
//! Throughput counts records from batch headers (no decoding, as a consumer's I/O path sees
//! them); the read-back and `bench e2e` read every record's number and send time (in place for
//! uncompressed batches, through kafka-protocol's decoder for compressed ones).

use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::records::RecordBatchDecoder;

use crate::kafka_client::KafkaConnection;
use crate::produce::NUMBERED_PREFIX_BYTES;
use crate::report::{LatencyHistogram, RunCounts, Summary};
use crate::verify::ReadBack;

/// One whole batch found in a fetch response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub last_offset: i64,
    pub records: u32,
    /// The whole batch, bytes.
    pub length: usize,
}

/// Walks the whole batches at the start of `records`; a partial batch at the end (a fetch cut
/// by max_bytes) is left out.
pub fn batch_headers(records: &[u8]) -> impl Iterator<Item = (BatchHeader, &[u8])> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.len() < 61 {
            return None;
        }
        let base_offset = i64::from_be_bytes(rest[0..8].try_into().ok()?);
        let batch_length = i32::from_be_bytes(rest[8..12].try_into().ok()?);
        if batch_length < 49 || rest.len() < 12 + batch_length as usize {
            return None;
        }
        let length = 12 + batch_length as usize;
        let last_offset_delta = i32::from_be_bytes(rest[23..27].try_into().ok()?);
        let records = i32::from_be_bytes(rest[57..61].try_into().ok()?);
        let (batch, tail) = rest.split_at(length);
        rest = tail;
        Some((
            BatchHeader {
                base_offset,
                last_offset: base_offset + last_offset_delta as i64,
                records: records.max(0) as u32,
                length,
            },
            batch,
        ))
    })
}

/// The bytes a Fetch asks for per partition unless told otherwise (Kafka's
/// `max.partition.fetch.bytes`; its consumers default to 1 MiB).
pub const PARTITION_MAX_BYTES: i32 = 8 << 20;

/// How a [`read_range`] fetches: until when, and how much per partition in each Fetch.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    pub deadline: Instant,
    pub partition_max_bytes: i32,
}

/// Reads `partitions` from `from[p]` up to (not including) `until[p]`, calling `on_batch` with
/// each whole batch; records fetch latencies into `latency`.
pub fn read_range(
    connection: &mut KafkaConnection,
    topic: &str,
    from: &[(i32, i64)],
    until: &[(i32, i64)],
    limits: ReadLimits,
    latency: &mut LatencyHistogram,
    mut on_batch: impl FnMut(i32, BatchHeader, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut positions: Vec<(i32, i64)> = from.to_vec();
    let end = |partition: i32| {
        until
            .iter()
            .find(|(p, _)| *p == partition)
            .map_or(0, |(_, o)| *o)
    };
    loop {
        let wanted: Vec<(i32, i64)> = positions
            .iter()
            .copied()
            .filter(|(partition, offset)| *offset < end(*partition))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        if Instant::now() > limits.deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("read-back incomplete at {wanted:?}"),
            ));
        }
        let started = Instant::now();
        let response =
            connection.fetch(topic, &wanted, 500, 1, 64 << 20, limits.partition_max_bytes)?;
        latency.record(started.elapsed());
        advance(&response, topic, &mut positions, &mut on_batch)?;
    }
}

/// Walks the whole batches of a fetch `response` that start at or after each partition's
/// position, calls `on_batch` with each, and moves the positions past them.
pub fn advance(
    response: &kafka_protocol::messages::FetchResponse,
    topic: &str,
    positions: &mut [(i32, i64)],
    on_batch: &mut impl FnMut(i32, BatchHeader, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    for topic_response in &response.responses {
        for data in &topic_response.partitions {
            if data.error_code != 0 {
                return Err(io::Error::other(format!(
                    "fetch {topic}/{}: error {}",
                    data.partition_index, data.error_code
                )));
            }
            let Some(records) = &data.records else {
                continue;
            };
            let Some(position) = positions
                .iter_mut()
                .find(|(p, _)| *p == data.partition_index)
            else {
                continue;
            };
            for (header, batch) in batch_headers(records) {
                if header.last_offset < position.1 {
                    continue; // a batch that starts before the fetch offset
                }
                on_batch(data.partition_index, header, batch)?;
                position.1 = header.last_offset + 1;
            }
        }
    }
    Ok(())
}

/// Decodes the numbered messages of one batch (see `produce --verify`); calls `on_message`
/// with each and its intended send time (ns since the Unix epoch). The batch's CRC-32C is
/// checked. An uncompressed batch is walked in place (no allocation per record: at 1 M
/// msgs/s the e2e consumer shares a core with the generator); a compressed one goes through
/// kafka-protocol's decoder.
pub fn numbered_messages(
    partition: i32,
    batch: &[u8],
    mut on_message: impl FnMut(ReadBack, u64),
) -> io::Result<()> {
    let invalid = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("partition {partition}: {what}"),
        )
    };
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(invalid(format!("a batch of {} bytes", batch.len())));
    }
    let stored_crc = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
    if crc32c::crc32c(&batch[21..]) != stored_crc {
        return Err(invalid(format!(
            "batch at offset {}: CRC-32C mismatch",
            i64::from_be_bytes(batch[..8].try_into().unwrap_or_default())
        )));
    }
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    if attributes & COMPRESSION_MASK != 0 {
        return decoded_numbered_messages(partition, batch, &mut on_message).map_err(invalid);
    }
    let base_offset = i64::from_be_bytes(batch[..8].try_into().unwrap_or_default());
    let count = i32::from_be_bytes([batch[57], batch[58], batch[59], batch[60]]);
    let mut records = RecordCursor {
        rest: &batch[BATCH_HEADER_BYTES..],
    };
    for _ in 0..count.max(0) {
        let (offset_delta, value) = records
            .next_value()
            .ok_or_else(|| invalid(format!("batch at offset {base_offset}: a cut record")))?;
        let offset = base_offset + offset_delta;
        let value = value
            .filter(|v| v.len() >= NUMBERED_PREFIX_BYTES)
            .ok_or_else(|| invalid(format!("offset {offset}: value too short to be numbered")))?;
        let (message, intended_ns) = numbered(partition, offset, value);
        on_message(message, intended_ns);
    }
    Ok(())
}

/// A record batch v2 header: base offset .. record count.
const BATCH_HEADER_BYTES: usize = 61;
/// The codec bits of a batch's attributes.
const COMPRESSION_MASK: i16 = 0x07;

/// The message number and intended send time at the start of a numbered `value`.
fn numbered(partition: i32, offset: i64, mut value: &[u8]) -> (ReadBack, u64) {
    let message = ReadBack {
        partition,
        offset,
        connection: value.get_u32(),
        sequence: value.get_u64(),
    };
    (message, value.get_u64())
}

/// A compressed batch, through kafka-protocol's decoder (any codec).
fn decoded_numbered_messages(
    partition: i32,
    batch: &[u8],
    on_message: &mut impl FnMut(ReadBack, u64),
) -> Result<(), String> {
    let mut bytes = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut bytes).map_err(|err| err.to_string())?;
    for record in &set.records {
        let value = record.value.as_deref().unwrap_or(&[]);
        if value.len() < NUMBERED_PREFIX_BYTES {
            return Err(format!(
                "offset {}: value too short to be numbered",
                record.offset
            ));
        }
        let (message, intended_ns) = numbered(partition, record.offset, value);
        on_message(message, intended_ns);
    }
    Ok(())
}

/// The records of an uncompressed batch, read in place.
struct RecordCursor<'a> {
    rest: &'a [u8],
}

impl<'a> RecordCursor<'a> {
    /// The next record's offset delta and value (None: a null value); None when the record
    /// is cut or malformed.
    fn next_value(&mut self) -> Option<(i64, Option<&'a [u8]>)> {
        let length = usize::try_from(self.varint()?).ok()?;
        let record = self.rest.get(..length)?;
        self.rest = &self.rest[length..];
        let mut fields = RecordCursor { rest: record };
        fields.take(1)?; // attributes
        fields.varint()?; // timestamp delta
        let offset_delta = fields.varint()?;
        fields.bytes()?; // key
        let value = fields.bytes()?;
        Some((offset_delta, value))
    }

    /// A zigzag varint (Kafka's varint and varlong).
    fn varint(&mut self) -> Option<i64> {
        let mut raw = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.rest.get(..n)?;
        self.rest = &self.rest[n..];
        Some(taken)
    }

    /// A varint length and that many bytes (-1: null).
    fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            n => self.take(usize::try_from(n).ok()?).map(Some),
        }
    }
}

/// Consumes `topic` from its earliest offsets to the latest offsets it has now, asking for at
/// most `partition_max_bytes` per partition in each Fetch; reports msgs/s, MB/s (record batch
/// bytes) and fetch latency.
pub fn consume_existing(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    partition_max_bytes: i32,
) -> Result<Summary, String> {
    let mut connection = KafkaConnection::connect(bootstrap, Duration::from_secs(10))
        .map_err(|err| format!("connect {bootstrap}: {err}"))?;
    let metadata = connection
        .metadata(Some(&[topic]))
        .map_err(|err| err.to_string())?;
    let partitions = metadata
        .topics
        .first()
        .filter(|t| t.error_code == 0)
        .map(|t| t.partitions.len() as i32)
        .ok_or_else(|| format!("topic {topic} does not exist"))?;
    let earliest = connection
        .list_offsets(topic, partitions, -2)
        .map_err(|err| err.to_string())?;
    let latest = connection
        .list_offsets(topic, partitions, -1)
        .map_err(|err| err.to_string())?;
    let mut latency = LatencyHistogram::default();
    let (mut msgs, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    read_range(
        &mut connection,
        topic,
        &earliest,
        &latest,
        ReadLimits {
            deadline: started + timeout,
            partition_max_bytes,
        },
        &mut latency,
        |_, header, _| {
            msgs += header.records as u64;
            bytes += header.length as u64;
            Ok(())
        },
    )
    .map_err(|err| err.to_string())?;
    Ok(Summary::new(
        RunCounts {
            workload: "consume",
            msgs,
            bytes,
            elapsed: started.elapsed(),
            errors: 0,
            schedule_kept: true,
            target_msgs_per_s: None,
        },
        &latency,
    ))
}

#[cfg(test)]
mod tests {
    //! Proves batch walking stops at a partial batch and reads counts from the headers, and
    //! that numbered messages read in place match kafka-protocol's decoder (keys, headers,
    //! multi-byte varints, every codec), and that a damaged batch is an error, never a panic.
    use super::*;
    use crate::record_batch::{encode_with_codec, Codec};
    use broker::kafka::plain_batch::plain_record;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

    /// A batch of `count` numbered records (message i: connection 7, sequence 1000 + i, sent
    /// at 5_000_000 + i ns), with keys, headers and values up to 300 bytes, from offset 40.
    fn numbered_batch(count: usize, compression: Compression) -> BytesMut {
        let records: Vec<Record> = (0..count)
            .map(|i| {
                let mut value = BytesMut::new();
                value.put_u32(7);
                value.put_u64(1000 + i as u64);
                value.put_u64(5_000_000 + i as u64);
                value.put_bytes(b'x', i * 37 % 280);
                let mut headers = kafka_protocol::indexmap::IndexMap::new();
                if i % 2 == 0 {
                    headers.insert("h".into(), Some(Bytes::from(vec![1u8; i % 150])));
                }
                Record {
                    headers,
                    ..plain_record(
                        40 + i as i64,
                        1_700_000_000_000 + i as i64 * 1000,
                        (i % 3 != 0).then(|| Bytes::from(vec![b'k'; i % 200])),
                        Some(value.freeze()),
                    )
                }
            })
            .collect();
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        out
    }

    fn read_numbered(batch: &[u8]) -> io::Result<Vec<(ReadBack, u64)>> {
        let mut seen = Vec::new();
        numbered_messages(3, batch, |message, intended| seen.push((message, intended)))?;
        Ok(seen)
    }

    #[test]
    fn numbered_messages_read_in_place_match_the_decoder_for_every_codec() {
        let expected: Vec<(ReadBack, u64)> = (0..300)
            .map(|i| {
                let message = ReadBack {
                    partition: 3,
                    offset: 40 + i as i64,
                    connection: 7,
                    sequence: 1000 + i as u64,
                };
                (message, 5_000_000 + i as u64)
            })
            .collect();
        for compression in [Compression::None, Compression::Gzip, Compression::Lz4] {
            for count in [1, 64, 65, 300] {
                let batch = numbered_batch(count, compression);
                assert_eq!(
                    read_numbered(&batch).unwrap(),
                    expected[..count],
                    "{compression:?}, {count} records"
                );
            }
        }
    }

    #[test]
    fn a_damaged_batch_is_an_error() {
        let batch = numbered_batch(20, Compression::None);
        let mut flipped = batch.clone();
        flipped[200] ^= 1;
        let err = read_numbered(&flipped).unwrap_err();
        assert!(err.to_string().contains("CRC-32C mismatch"), "{err}");
        assert!(read_numbered(&batch[..40]).is_err());
        // Every cut of the records, with the CRC made right again: an error, never a panic.
        for end in (BATCH_HEADER_BYTES..batch.len()).step_by(7) {
            let mut cut = batch[..end].to_vec();
            let crc = crc32c::crc32c(&cut[21..]);
            cut[17..21].copy_from_slice(&crc.to_be_bytes());
            assert!(read_numbered(&cut).is_err(), "cut at {end}");
        }
    }

    #[test]
    fn batch_headers_skip_a_cut_batch() {
        let records: Vec<(Option<Bytes>, Bytes)> =
            (0..5).map(|i| (None, Bytes::from(vec![i; 10]))).collect();
        let one = encode_with_codec(Codec::None, 0, &records);
        let mut two = one.to_vec();
        two[..8].copy_from_slice(&0i64.to_be_bytes());
        let mut second = one.to_vec();
        second[..8].copy_from_slice(&5i64.to_be_bytes());
        two.extend_from_slice(&second);
        two.extend_from_slice(&one[..one.len() - 3]);
        let headers: Vec<BatchHeader> = batch_headers(&two).map(|(h, _)| h).collect();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[1].base_offset, 5);
        assert_eq!(headers[1].last_offset, 9);
        assert_eq!(headers[1].records, 5);
    }
}
