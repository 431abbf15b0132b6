//! A RecordBatch v2 encoder for the load generator: uncompressed batches are written straight
//! into a reusable buffer (no allocation per record); compressed ones go through the
//! kafka-protocol crate's encoder (built once per template, so its allocations stay off the
//! hot path). Independent of the broker's parser, so a bench run also checks the broker
//! against a second implementation.

use broker::kafka::plain_batch::plain_record;
use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

/// Size of the fixed RecordBatch v2 header, bytes.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Offset of the attributes field; the CRC covers attributes..end.
const ATTRIBUTES_OFFSET: usize = 21;
const CRC_OFFSET: usize = 17;

/// The compression codecs a producer can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    fn compression(self) -> Compression {
        match self {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

fn put_varint(out: &mut BytesMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.extend_from_slice(&[(zigzag as u8) | 0x80]);
        zigzag >>= 7;
    }
    out.extend_from_slice(&[zigzag as u8]);
}

fn varint_len(value: i64) -> usize {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let mut len = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        len += 1;
    }
    len
}

/// Encoded size of one record (with its length prefix) at `offset_delta`, bytes.
pub fn record_bytes(offset_delta: i64, key: Option<&[u8]>, value_len: usize) -> usize {
    let body = record_body_bytes(offset_delta, key, value_len);
    varint_len(body as i64) + body
}

/// Encoded size of one record without its length prefix, bytes.
fn record_body_bytes(offset_delta: i64, key: Option<&[u8]>, value_len: usize) -> usize {
    let key_len = key.map_or(-1, |key| key.len() as i64);
    1 // attributes
        + varint_len(0) // timestamp delta
        + varint_len(offset_delta)
        + varint_len(key_len)
        + key.map_or(0, <[u8]>::len)
        + varint_len(value_len as i64)
        + value_len
        + varint_len(0) // header count
}

/// Writes uncompressed RecordBatch v2 batches into `out`, one record at a time.
///
/// Use: `begin`, then `push` each record, then `finish` (which fills the lengths, count and
/// CRC). Records all carry timestamp delta 0: the batch's base timestamp is the creation time.
pub struct BatchWriter {
    start: usize,
    records: i32,
}

impl BatchWriter {
    /// Starts a batch at the end of `out` with `base_timestamp_ms`.
    pub fn begin(out: &mut BytesMut, base_timestamp_ms: i64) -> BatchWriter {
        let start = out.len();
        out.extend_from_slice(&0i64.to_be_bytes()); // baseOffset, assigned by the broker
        out.extend_from_slice(&0i32.to_be_bytes()); // batchLength, filled by finish
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
        out.extend_from_slice(&[2]); // magic
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled by finish
        out.extend_from_slice(&0i16.to_be_bytes()); // attributes: no codec, CreateTime
        out.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta, filled by finish
        out.extend_from_slice(&base_timestamp_ms.to_be_bytes());
        out.extend_from_slice(&base_timestamp_ms.to_be_bytes()); // maxTimestamp
        out.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
        out.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        out.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        out.extend_from_slice(&0i32.to_be_bytes()); // recordsCount, filled by finish
        debug_assert_eq!(out.len() - start, BATCH_HEADER_BYTES);
        BatchWriter { start, records: 0 }
    }

    /// Appends one record whose value is written by `write_value` (exactly `value_len` bytes).
    pub fn push(
        &mut self,
        out: &mut BytesMut,
        key: Option<&[u8]>,
        value_len: usize,
        write_value: impl FnOnce(&mut BytesMut),
    ) {
        let offset_delta = self.records as i64;
        let body = record_body_bytes(offset_delta, key, value_len);
        let before = out.len();
        put_varint(out, body as i64);
        out.extend_from_slice(&[0]); // record attributes
        put_varint(out, 0);
        put_varint(out, offset_delta);
        match key {
            Some(key) => {
                put_varint(out, key.len() as i64);
                out.extend_from_slice(key);
            }
            None => put_varint(out, -1),
        }
        put_varint(out, value_len as i64);
        let value_start = out.len();
        write_value(out);
        assert_eq!(
            out.len() - value_start,
            value_len,
            "write_value wrote the wrong length"
        );
        put_varint(out, 0);
        debug_assert_eq!(out.len() - before, varint_len(body as i64) + body);
        self.records += 1;
    }

    /// Records pushed so far.
    pub fn records(&self) -> i32 {
        self.records
    }

    /// Fills batchLength, lastOffsetDelta, recordsCount and the CRC-32C.
    pub fn finish(self, out: &mut BytesMut) {
        assert!(self.records > 0, "a batch holds at least one record");
        let batch = &mut out[self.start..];
        let batch_length = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
        batch[23..27].copy_from_slice(&(self.records - 1).to_be_bytes());
        batch[57..61].copy_from_slice(&self.records.to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Builds a batch of `values` (with optional keys) compressed with `codec`, through the
/// kafka-protocol encoder. Used for templates and compressed runs, not per message.
pub fn encode_with_codec(
    codec: Codec,
    base_timestamp_ms: i64,
    records: &[(Option<Bytes>, Bytes)],
) -> Bytes {
    if codec == Codec::None {
        let mut out = BytesMut::new();
        let mut writer = BatchWriter::begin(&mut out, base_timestamp_ms);
        for (key, value) in records {
            writer.push(&mut out, key.as_deref(), value.len(), |out| {
                out.extend_from_slice(value)
            });
        }
        writer.finish(&mut out);
        return out.freeze();
    }
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(index, (key, value))| {
            plain_record(
                index as i64,
                base_timestamp_ms,
                key.clone(),
                Some(value.clone()),
            )
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: codec.compression(),
        },
    )
    .expect("encoding records into memory cannot fail");
    out.freeze()
}

#[cfg(test)]
mod tests {
    //! Proves our encoder writes batches the kafka-protocol decoder reads back identically.
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn batch_writer_output_decodes_with_kafka_protocol() {
        for count in [1usize, 2, 127, 128, 300] {
            let records: Vec<(Option<Bytes>, Bytes)> = (0..count)
                .map(|i| {
                    let key = (i % 3 != 0).then(|| Bytes::from(format!("key-{i}")));
                    (key, Bytes::from(vec![i as u8; i * 7 % 200]))
                })
                .collect();
            for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
                let mut batch = encode_with_codec(codec, 1_700_000_000_000, &records);
                let set = RecordBatchDecoder::decode(&mut batch).unwrap();
                assert_eq!(set.records.len(), count, "{codec:?}");
                for (record, (key, value)) in set.records.iter().zip(&records) {
                    assert_eq!(&record.key, key);
                    assert_eq!(record.value.as_ref(), Some(value));
                    assert_eq!(record.timestamp, 1_700_000_000_000);
                }
            }
        }
    }

    #[test]
    fn record_bytes_matches_what_push_writes() {
        let mut out = BytesMut::new();
        let mut writer = BatchWriter::begin(&mut out, 0);
        for (delta, len) in [(0i64, 0usize), (1, 100), (2, 127), (3, 128), (4, 20_000)] {
            let before = out.len();
            writer.push(&mut out, Some(b"k"), len, |out| {
                out.extend_from_slice(&vec![1; len])
            });
            assert_eq!(out.len() - before, record_bytes(delta, Some(b"k"), len));
        }
        writer.finish(&mut out);
    }
}
