//! Kafka RecordBatch v2 headers: parsing, validation and the two in-place rewrites.
//!
//! The on-disk format is the wire format, so this module is the gate every produced byte
//! passes: a byte slice that may hold several concatenated batches (as a Produce request
//! carries them) is checked batch by batch for length bounds, magic 2, CRC-32C over
//! attributes..end, a known compression codec and `recordsCount == lastOffsetDelta + 1`
//! (Kafka's LogValidator requires this for compressed batches too, as it reads the count from
//! the header). Records are never decoded or re-encoded; only `baseOffset` and
//! `partitionLeaderEpoch`, which lie before the CRC'd range, are rewritten.
//!
//! Layout (big-endian): baseOffset i64 @0, batchLength i32 @8 (bytes after this field),
//! partitionLeaderEpoch i32 @12, magic i8 @16, crc u32 @17, attributes i16 @21,
//! lastOffsetDelta i32 @23, baseTimestamp i64 @27, maxTimestamp i64 @35, producerId i64 @43,
//! producerEpoch i16 @51, baseSequence i32 @53, recordsCount i32 @57, records @61.

use super::error::BatchError;

/// Bytes before `batchLength` counts: baseOffset + batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed RecordBatch v2 header, including [`LOG_OVERHEAD`].
pub const HEADER_BYTES: usize = 61;
/// Smallest legal `batchLength` (a header with no records).
pub const MIN_BATCH_LENGTH: i32 = (HEADER_BYTES - LOG_OVERHEAD) as i32;
/// The only supported magic (message format version).
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

/// Attribute bits 0-2: compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: timestamps are LogAppendTime.
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit 4: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit 5: the batch is a control batch (transaction marker).
pub const ATTR_CONTROL: i16 = 0x20;
/// Highest compression codec id Kafka defines (zstd).
pub const MAX_COMPRESSION_CODEC: i16 = 4;

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    be_i32(b, at) as u32
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// The fixed header fields of one RecordBatch v2, copied out of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Reads the header fields from the first [`HEADER_BYTES`] of `bytes`; `None` if shorter.
    /// Checks nothing: see [`validate_batch`].
    pub fn parse(bytes: &[u8]) -> Option<BatchHeader> {
        if bytes.len() < HEADER_BYTES {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(bytes, BASE_OFFSET_AT),
            batch_length: be_i32(bytes, BATCH_LENGTH_AT),
            partition_leader_epoch: be_i32(bytes, LEADER_EPOCH_AT),
            magic: bytes[MAGIC_AT] as i8,
            crc: be_u32(bytes, CRC_AT),
            attributes: be_i16(bytes, ATTRIBUTES_AT),
            last_offset_delta: be_i32(bytes, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(bytes, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(bytes, MAX_TIMESTAMP_AT),
            producer_id: be_i64(bytes, PRODUCER_ID_AT),
            producer_epoch: be_i16(bytes, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(bytes, BASE_SEQUENCE_AT),
            records_count: be_i32(bytes, RECORDS_COUNT_AT),
        })
    }

    /// Whole batch size on disk and on the wire: `batchLength + 12`.
    pub fn total_bytes(&self) -> u64 {
        self.batch_length as u64 + LOG_OVERHEAD as u64
    }
    /// Offset of the last record: `baseOffset + lastOffsetDelta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    /// Offset after the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    /// Compression codec id (attribute bits 0-2); 0 means uncompressed.
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }
}

/// What validation learned about one batch of a validated input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Byte position of the batch in the validated input.
    pub position: usize,
    /// The header as received (before any offset assignment).
    pub header: BatchHeader,
}

impl BatchInfo {
    /// Whole batch size in bytes.
    pub fn total_bytes(&self) -> usize {
        self.header.total_bytes() as usize
    }
}

/// Checks the batch starting at `bytes[0]` (`bytes` may run on past it) and returns its header.
/// `position` is only used in errors. `max_batch_bytes` bounds the whole batch size.
pub fn validate_batch(
    bytes: &[u8],
    position: usize,
    max_batch_bytes: u32,
) -> Result<BatchHeader, BatchError> {
    validate_batch_as(bytes, position, max_batch_bytes, false, true)
}

/// [`validate_batch`] for a batch already in a log, which compaction may have rewritten
/// ([`super::log_cleaner`]): it keeps its `baseOffset` and `lastOffsetDelta` but may hold
/// fewer records (`0 <= recordsCount <= lastOffsetDelta + 1`), as Kafka's cleaned batches do.
pub fn validate_stored_batch(
    bytes: &[u8],
    position: usize,
    max_batch_bytes: u32,
) -> Result<BatchHeader, BatchError> {
    validate_batch_as(bytes, position, max_batch_bytes, true, true)
}

fn validate_batch_as(
    bytes: &[u8],
    position: usize,
    max_batch_bytes: u32,
    cleaned_allowed: bool,
    check_crc: bool,
) -> Result<BatchHeader, BatchError> {
    let corrupt = |reason: String| BatchError::Corrupt { position, reason };
    if bytes.len() < LOG_OVERHEAD {
        return Err(corrupt(format!(
            "truncated: {} bytes left, a batch needs at least {HEADER_BYTES}",
            bytes.len()
        )));
    }
    let batch_length = be_i32(bytes, BATCH_LENGTH_AT);
    if batch_length < MIN_BATCH_LENGTH {
        return Err(corrupt(format!(
            "batchLength {batch_length} is below the minimum {MIN_BATCH_LENGTH}"
        )));
    }
    let total = batch_length as u64 + LOG_OVERHEAD as u64;
    if total > max_batch_bytes as u64 {
        return Err(BatchError::TooLarge {
            position,
            size_bytes: total,
            max_bytes: max_batch_bytes,
        });
    }
    if (bytes.len() as u64) < total {
        return Err(corrupt(format!(
            "truncated: batchLength {batch_length} needs {total} bytes, {} left",
            bytes.len()
        )));
    }
    let batch = &bytes[..total as usize];
    let header = BatchHeader::parse(batch).ok_or_else(|| corrupt("header cut short".into()))?;
    if header.magic != MAGIC_V2 {
        return Err(corrupt(format!(
            "magic {} is not supported (only {MAGIC_V2})",
            header.magic
        )));
    }
    if check_crc {
        check_crc_as_computed(&header, crc32c::crc32c(&batch[ATTRIBUTES_AT..]), position)?;
    }
    if header.compression() > MAX_COMPRESSION_CODEC {
        return Err(corrupt(format!(
            "unknown compression codec {}",
            header.compression()
        )));
    }
    let invalid = |reason: String| BatchError::InvalidRecord { position, reason };
    if header.last_offset_delta < 0 {
        return Err(invalid(format!(
            "lastOffsetDelta {} is negative",
            header.last_offset_delta
        )));
    }
    let count_fits = if cleaned_allowed {
        (0..=header.last_offset_delta as i64 + 1).contains(&(header.records_count as i64))
    } else {
        header.records_count as i64 == header.last_offset_delta as i64 + 1
    };
    if !count_fits {
        return Err(invalid(format!(
            "recordsCount {} does not match lastOffsetDelta {} + 1",
            header.records_count, header.last_offset_delta
        )));
    }
    Ok(header)
}

/// Validates every batch of `bytes` (concatenated batches, nothing else) and returns them in
/// order. An empty input or any bad batch rejects the whole input.
pub fn validate_batches(bytes: &[u8], max_batch_bytes: u32) -> Result<Vec<BatchInfo>, BatchError> {
    validate_batches_as(bytes, max_batch_bytes, false, true)
}

/// [`validate_batches`] except the CRC-32C, which the caller checks itself: the log's append
/// computes it while it copies each batch into its write buffer ([`check_crc_as_computed`]), so
/// the bytes are read once, and falls back to [`check_crcs`] where it cannot.
pub fn validate_batches_deferring_crc(
    bytes: &[u8],
    max_batch_bytes: u32,
) -> Result<Vec<BatchInfo>, BatchError> {
    validate_batches_as(bytes, max_batch_bytes, false, false)
}

/// The CRC-32C check that [`validate_batches_deferring_crc`] left out, for every batch.
pub fn check_crcs(bytes: &[u8], batches: &[BatchInfo]) -> Result<(), BatchError> {
    for b in batches {
        let batch = &bytes[b.position..b.position + b.total_bytes()];
        check_crc_as_computed(
            &b.header,
            crc32c::crc32c(&batch[ATTRIBUTES_AT..]),
            b.position,
        )?;
    }
    Ok(())
}

/// Compares the CRC-32C computed over a batch's bytes from [`CRC_RANGE_START`] with the one
/// its header carries; `position` is only used in the error.
pub fn check_crc_as_computed(
    header: &BatchHeader,
    computed: u32,
    position: usize,
) -> Result<(), BatchError> {
    if computed == header.crc {
        return Ok(());
    }
    Err(BatchError::Corrupt {
        position,
        reason: format!(
            "CRC-32C mismatch: header says {:#010x}, bytes give {computed:#010x}",
            header.crc
        ),
    })
}

/// [`validate_batches`] for batches copied from a compacted log (a follower's fetch): a batch
/// may hold fewer records than its offsets span ([`validate_stored_batch`]).
pub fn validate_stored_batches(
    bytes: &[u8],
    max_batch_bytes: u32,
) -> Result<Vec<BatchInfo>, BatchError> {
    validate_batches_as(bytes, max_batch_bytes, true, true)
}

fn validate_batches_as(
    bytes: &[u8],
    max_batch_bytes: u32,
    stored: bool,
    check_crc: bool,
) -> Result<Vec<BatchInfo>, BatchError> {
    if bytes.is_empty() {
        return Err(BatchError::Corrupt {
            position: 0,
            reason: "no record batch".into(),
        });
    }
    let mut out = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = validate_batch_as(
            &bytes[position..],
            position,
            max_batch_bytes,
            stored,
            check_crc,
        )?;
        out.push(BatchInfo { position, header });
        position += header.total_bytes() as usize;
    }
    Ok(out)
}

/// Byte position of `crc` in a batch; the CRC-32C covers everything from `attributes` on.
pub const CRC_POSITION: usize = CRC_AT;
/// Byte position of `attributes`, where the CRC'd range starts.
pub const CRC_RANGE_START: usize = ATTRIBUTES_AT;
/// Byte position of `recordsCount`.
pub const RECORDS_COUNT_POSITION: usize = RECORDS_COUNT_AT;
/// Byte position of `batchLength`.
pub const BATCH_LENGTH_POSITION: usize = BATCH_LENGTH_AT;

/// Rewrites `baseOffset` of the batch starting at `batch[0]`. It lies before the CRC'd range,
/// so the batch stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites `partitionLeaderEpoch` of the batch starting at `batch[0]` (outside the CRC too).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// `baseOffset` of the batch starting at `batch[0]`; `None` if shorter than 8 bytes.
pub fn base_offset(batch: &[u8]) -> Option<i64> {
    (batch.len() >= 8).then(|| be_i64(batch, BASE_OFFSET_AT))
}

#[cfg(test)]
mod tests {
    //! Unit checks of the header reader on hand-made bytes; the randomized checks against an
    //! independent encoder live in `broker/tests/record_batch.rs`.
    use super::*;

    fn empty_like_batch(records_count: i32, last_offset_delta: i32) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_BYTES];
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&(MIN_BATCH_LENGTH).to_be_bytes());
        b[MAGIC_AT] = 2;
        b[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&last_offset_delta.to_be_bytes());
        b[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&records_count.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn rewrites_stay_outside_the_crc() {
        let mut b = empty_like_batch(1, 0);
        set_base_offset(&mut b, 1234);
        set_partition_leader_epoch(&mut b, 7);
        let h = validate_batch(&b, 0, 1 << 20).expect("still valid after rewrite");
        assert_eq!(h.base_offset, 1234);
        assert_eq!(h.partition_leader_epoch, 7);
        assert_eq!(base_offset(&b), Some(1234));
    }

    #[test]
    fn count_must_match_delta() {
        let b = empty_like_batch(2, 0);
        let e = validate_batch(&b, 0, 1 << 20).unwrap_err();
        assert_eq!(e.error_code(), 87);
        assert!(validate_stored_batch(&b, 0, 1 << 20).is_err());
    }

    #[test]
    fn stored_batches_may_hold_fewer_records_than_their_offsets() {
        let b = empty_like_batch(0, 4);
        assert!(validate_batch(&b, 0, 1 << 20).is_err());
        let h = validate_stored_batch(&b, 0, 1 << 20).expect("a cleaned batch");
        assert_eq!((h.records_count, h.next_offset()), (0, 5));
    }
}
