//! Log compaction, the deciding part (no IO): which records of a batch survive a clean, and
//! the rewritten batch that holds them. The IO part (reading segments, writing and swapping
//! cleaned files) is [`super::compaction`].
//!
//! As Kafka's log cleaner does, a clean first reads the dirty part of the log (from the
//! cleaner checkpoint to the cleanable end) into an [`OffsetMap`] of key -> latest offset,
//! then rewrites every sealed segment below the mapped end: a keyed record is dropped when the
//! map holds a later offset for its key, and a tombstone (null value) that is the latest of
//! its key is dropped too once the segment holding it was cleaned `delete.retention.ms` ago.
//!
//! A rewritten batch keeps its header (baseOffset, lastOffsetDelta, timestamps, producer id,
//! epoch and base sequence), so the offsets of the kept records, the batch's offset range and
//! an idempotent producer's sequence numbers stay what they were; only `recordsCount`,
//! `batchLength` and the CRC-32C change ([`write_cleaned_batch`]). Records are copied as they
//! are: their offset and timestamp deltas are relative to the unchanged header.
//!
//! Kept whole, never looked into: compressed batches (this broker has no compression codec;
//! their keys are not mapped either, so they neither lose nor shadow records), control
//! batches and transactional batches (the broker has no transaction coordinator; a
//! transactional batch is kept whole so no marker semantics can be broken).

use std::collections::HashMap;
use std::ops::Range;

use super::error::BatchError;
use super::record_batch::{
    BatchHeader, BatchInfo, BATCH_LENGTH_POSITION, CRC_POSITION, CRC_RANGE_START, HEADER_BYTES,
    LOG_OVERHEAD, RECORDS_COUNT_POSITION,
};

/// Bookkeeping bytes counted per key of an [`OffsetMap`] on top of the key's own bytes
/// (hash table slot, boxed slice header, allocator rounding).
pub const OFFSET_MAP_ENTRY_OVERHEAD_BYTES: usize = 64;

/// What the cleaner needs of one record of an uncompressed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    pub offset: i64,
    /// Byte range of the key in the batch; `None` for a null key.
    pub key: Option<Range<usize>>,
    /// The value is null.
    pub tombstone: bool,
    /// Byte range of the whole record (length varint included) in the batch.
    pub span: Range<usize>,
}

/// Reads a zigzag varint (Kafka's record encoding) at `*at`; `None` if cut short or too long.
pub(crate) fn read_varlong(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        value |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// Whether the cleaner looks into a batch's records (uncompressed, not control, not
/// transactional). Other batches are kept whole.
pub fn is_cleanable(header: &BatchHeader) -> bool {
    header.compression() == 0 && !header.is_control() && !header.is_transactional()
}

/// The records of the uncompressed batch `batch` (exactly one whole batch). An error names
/// the record that does not parse.
pub fn read_records(batch: &[u8], header: &BatchHeader) -> Result<Vec<RecordView>, String> {
    debug_assert!(is_cleanable(header));
    let count = usize::try_from(header.records_count)
        .map_err(|_| format!("negative recordsCount {}", header.records_count))?;
    let mut out = Vec::with_capacity(count.min(batch.len() / 7));
    let mut at = HEADER_BYTES;
    for i in 0..count {
        let start = at;
        let bad = |what: &str| format!("record {i} at byte {start} of the batch: {what}");
        let len = read_varlong(batch, &mut at).ok_or_else(|| bad("bad length"))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|e| *e <= batch.len())
            .ok_or_else(|| bad("length runs past the batch"))?;
        let body = &batch[..end];
        let mut p = at + 1; // attributes
        read_varlong(body, &mut p).ok_or_else(|| bad("bad timestamp delta"))?;
        let offset_delta = read_varlong(body, &mut p).ok_or_else(|| bad("bad offset delta"))?;
        if !(0..=header.last_offset_delta as i64).contains(&offset_delta) {
            return Err(bad("offset delta outside the batch"));
        }
        let key_len = read_varlong(body, &mut p).ok_or_else(|| bad("bad key length"))?;
        let key = if key_len < 0 {
            None
        } else {
            let k = p..p
                .checked_add(key_len as usize)
                .filter(|e| *e <= end)
                .ok_or_else(|| bad("key runs past the record"))?;
            p = k.end;
            Some(k)
        };
        let value_len = read_varlong(body, &mut p).ok_or_else(|| bad("bad value length"))?;
        out.push(RecordView {
            offset: header.base_offset + offset_delta,
            key,
            tombstone: value_len < 0,
            span: start..end,
        });
        at = end;
    }
    if at != batch.len() {
        return Err(format!(
            "{} bytes after the last of {count} records",
            batch.len() - at
        ));
    }
    Ok(out)
}

/// Refuses a produce to a compacted log that holds a record without a key, as Kafka does
/// (INVALID_RECORD: compaction keeps the latest record of each key, so a keyless record has
/// no meaning there). `infos` are the validated batches of `batches`. Only uncompressed data
/// batches are looked into: this broker does not decompress, so a compressed batch passes
/// (and the cleaner keeps it whole).
pub fn refuse_keyless_records(batches: &[u8], infos: &[BatchInfo]) -> Result<(), BatchError> {
    for info in infos.iter().filter(|info| is_cleanable(&info.header)) {
        let batch = &batches[info.position..info.position + info.total_bytes()];
        let records =
            read_records(batch, &info.header).map_err(|reason| BatchError::InvalidRecord {
                position: info.position,
                reason,
            })?;
        if let Some(record) = records.iter().find(|r| r.key.is_none()) {
            return Err(BatchError::InvalidRecord {
                position: info.position,
                reason: format!(
                    "a compacted topic cannot accept a record without a key (offset delta {})",
                    record.offset - info.header.base_offset
                ),
            });
        }
    }
    Ok(())
}

/// Key -> latest offset over the dirty part of a log, bounded in memory.
#[derive(Debug)]
pub struct OffsetMap {
    latest: HashMap<Box<[u8]>, i64>,
    bytes: usize,
    max_bytes: usize,
}

impl OffsetMap {
    pub fn new(max_bytes: usize) -> OffsetMap {
        OffsetMap {
            latest: HashMap::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Notes `key` at `offset`. False (nothing noted) when a new key would pass the bound.
    pub fn record(&mut self, key: &[u8], offset: i64) -> bool {
        if let Some(latest) = self.latest.get_mut(key) {
            *latest = (*latest).max(offset);
            return true;
        }
        let cost = key.len() + OFFSET_MAP_ENTRY_OVERHEAD_BYTES;
        if self.bytes + cost > self.max_bytes {
            return false;
        }
        self.bytes += cost;
        self.latest.insert(key.into(), offset);
        true
    }

    /// The latest offset noted for `key`.
    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// Notes every keyed record of `batch` in `map`. False if the map filled up before the end
/// of the batch (then the batch counts as not mapped). Batches the cleaner does not look
/// into ([`is_cleanable`]) are skipped and count as mapped.
pub fn map_batch(map: &mut OffsetMap, batch: &[u8], header: &BatchHeader) -> Result<bool, String> {
    if !is_cleanable(header) {
        return Ok(true);
    }
    for record in read_records(batch, header)? {
        if let Some(key) = record.key {
            if !map.record(&batch[key], record.offset) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// What a clean does to one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchFate {
    /// Nothing to remove (or not looked into): the batch stays byte for byte.
    Whole,
    /// Some records go: the byte ranges (in the batch) of those that stay, in order, and how
    /// many were removed.
    Rewritten {
        kept: Vec<Range<usize>>,
        removed: usize,
    },
}

/// The rules of one segment's clean.
#[derive(Debug, Clone, Copy)]
pub struct CleanRules<'a> {
    pub map: &'a OffsetMap,
    /// The map covers the offsets below this; records at or above it are always kept.
    pub map_end: i64,
    /// Tombstones that are the latest of their key go too (the segment was cleaned more than
    /// `delete.retention.ms` ago).
    pub drop_tombstones: bool,
}

/// Decides which records of `batch` survive under `rules`.
pub fn judge_batch(
    batch: &[u8],
    header: &BatchHeader,
    rules: &CleanRules<'_>,
) -> Result<BatchFate, String> {
    if !is_cleanable(header) || header.base_offset >= rules.map_end {
        return Ok(BatchFate::Whole);
    }
    let records = read_records(batch, header)?;
    let mut kept = Vec::with_capacity(records.len());
    for record in &records {
        let stays = match &record.key {
            // Written before the topic became compacted (appends to a compacted log refuse
            // them: [`refuse_keyless_records`]); kept.
            None => true,
            Some(_) if record.offset >= rules.map_end => true,
            Some(key) => {
                let superseded = rules
                    .map
                    .latest(&batch[key.clone()])
                    .is_some_and(|latest| latest > record.offset);
                let expired_tombstone = record.tombstone && rules.drop_tombstones;
                !(superseded || expired_tombstone)
            }
        };
        if stays {
            kept.push(record.span.clone());
        }
    }
    let removed = records.len() - kept.len();
    if removed == 0 {
        return Ok(BatchFate::Whole);
    }
    Ok(BatchFate::Rewritten { kept, removed })
}

/// Appends to `out` the batch `batch` rewritten to hold only the records at the `kept` byte
/// ranges (from [`judge_batch`]): same header but `recordsCount`, `batchLength` and CRC-32C.
pub fn write_cleaned_batch(
    batch: &[u8],
    header: &BatchHeader,
    kept: &[Range<usize>],
    out: &mut Vec<u8>,
) {
    debug_assert!(kept.len() <= header.records_count.max(0) as usize);
    let start = out.len();
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    for range in kept {
        debug_assert!(range.start >= HEADER_BYTES && range.end <= batch.len());
        out.extend_from_slice(&batch[range.clone()]);
    }
    let cleaned = &mut out[start..];
    let batch_length = (cleaned.len() - LOG_OVERHEAD) as i32;
    cleaned[BATCH_LENGTH_POSITION..BATCH_LENGTH_POSITION + 4]
        .copy_from_slice(&batch_length.to_be_bytes());
    cleaned[RECORDS_COUNT_POSITION..RECORDS_COUNT_POSITION + 4]
        .copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&cleaned[CRC_RANGE_START..]);
    cleaned[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    //! The cleaner's decisions on batches built by hand (record encoding written out here,
    //! independently of the broker's parser), and the rewritten batch validated as a stored
    //! batch.
    use super::*;
    use crate::storage::record_batch::{validate_batch, validate_stored_batch};

    fn varint(v: i64, out: &mut Vec<u8>) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// An uncompressed batch at `base` of `(key, value)` records, one offset each.
    fn batch(base: i64, records: &[(Option<&str>, Option<&str>)], attributes: i16) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (k, v)) in records.iter().enumerate() {
            let mut r = vec![0u8]; // attributes
            varint(i as i64, &mut r); // timestamp delta
            varint(i as i64, &mut r); // offset delta
            for field in [k, v] {
                match field {
                    Some(s) => {
                        varint(s.len() as i64, &mut r);
                        r.extend_from_slice(s.as_bytes());
                    }
                    None => varint(-1, &mut r),
                }
            }
            varint(0, &mut r); // headers
            varint(r.len() as i64, &mut body);
            body.extend_from_slice(&r);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&base.to_be_bytes());
        b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
        b.extend_from_slice(&attributes.to_be_bytes());
        b.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
        b.extend_from_slice(&1000i64.to_be_bytes());
        b.extend_from_slice(&(1000 + records.len() as i64).to_be_bytes());
        b.extend_from_slice(&7i64.to_be_bytes()); // producer id
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&40i32.to_be_bytes()); // base sequence
        b.extend_from_slice(&(records.len() as i32).to_be_bytes());
        b.extend_from_slice(&body);
        let crc = crc32c::crc32c(&b[CRC_RANGE_START..]);
        b[CRC_POSITION..CRC_POSITION + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn header(b: &[u8]) -> BatchHeader {
        validate_batch(b, 0, 1 << 20).expect("a valid hand-made batch")
    }

    fn keys_of(b: &[u8]) -> Vec<(i64, Option<String>, bool)> {
        let h = validate_stored_batch(b, 0, 1 << 20).expect("a valid stored batch");
        read_records(b, &h)
            .unwrap()
            .into_iter()
            .map(|r| {
                let key = r.key.map(|k| String::from_utf8(b[k].to_vec()).unwrap());
                (r.offset, key, r.tombstone)
            })
            .collect()
    }

    #[test]
    fn a_compacted_log_refuses_a_record_set_with_a_keyless_record() {
        use crate::storage::record_batch::validate_batches;
        let keyed = batch(0, &[(Some("a"), Some("1")), (Some("b"), None)], 0);
        let keyless = batch(2, &[(Some("c"), Some("1")), (None, Some("2"))], 0);
        let ok: Vec<u8> = [keyed.clone(), keyed.clone()].concat();
        let infos = validate_batches(&ok, 1 << 20).unwrap();
        assert_eq!(refuse_keyless_records(&ok, &infos), Ok(()));
        let bad: Vec<u8> = [keyed.clone(), keyless].concat();
        let infos = validate_batches(&bad, 1 << 20).unwrap();
        let err = refuse_keyless_records(&bad, &infos).unwrap_err();
        assert_eq!(
            err.error_code(),
            crate::storage::error::kafka_code::INVALID_RECORD
        );
        assert_eq!(err.position(), keyed.len());
        assert!(err.to_string().contains("without a key"), "{err}");
        // A compressed batch (attributes: gzip) is not looked into.
        let compressed = batch(0, &[(None, Some("x"))], 1);
        let infos = validate_batches(&compressed, 1 << 20).unwrap();
        assert_eq!(refuse_keyless_records(&compressed, &infos), Ok(()));
    }

    #[test]
    fn reads_keys_offsets_and_tombstones() {
        let b = batch(
            10,
            &[(Some("a"), Some("1")), (None, Some("2")), (Some("b"), None)],
            0,
        );
        assert_eq!(
            keys_of(&b),
            vec![
                (10, Some("a".into()), false),
                (11, None, false),
                (12, Some("b".into()), true)
            ]
        );
    }

    #[test]
    fn truncated_records_are_an_error_not_a_panic() {
        let b = batch(0, &[(Some("a"), Some("1")), (Some("b"), Some("2"))], 0);
        let h = header(&b);
        for cut in HEADER_BYTES..b.len() {
            assert!(read_records(&b[..cut], &h).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn latest_per_key_survives_and_the_batch_keeps_its_offsets() {
        let b = batch(
            100,
            &[
                (Some("a"), Some("1")),
                (Some("b"), Some("1")),
                (Some("a"), Some("2")),
                (None, Some("x")),
                (Some("b"), Some("2")),
                (Some("c"), Some("1")),
            ],
            0,
        );
        let h = header(&b);
        let mut map = OffsetMap::new(1 << 20);
        assert!(map_batch(&mut map, &b, &h).unwrap());
        assert_eq!(map.latest(b"a"), Some(102));
        assert_eq!(map.latest(b"b"), Some(104));
        let rules = CleanRules {
            map: &map,
            map_end: h.next_offset(),
            drop_tombstones: false,
        };
        let BatchFate::Rewritten { kept, removed } = judge_batch(&b, &h, &rules).unwrap() else {
            panic!("two records are superseded");
        };
        assert_eq!(removed, 2);
        let mut out = Vec::new();
        write_cleaned_batch(&b, &h, &kept, &mut out);
        let cleaned = validate_stored_batch(&out, 0, 1 << 20).expect("CRC and lengths fit");
        assert_eq!(cleaned.records_count, 4);
        assert_eq!(cleaned.base_offset, 100);
        assert_eq!(cleaned.last_offset(), h.last_offset());
        assert_eq!(
            (cleaned.producer_id, cleaned.base_sequence),
            (h.producer_id, h.base_sequence)
        );
        let offsets: Vec<i64> = keys_of(&out).iter().map(|r| r.0).collect();
        assert_eq!(offsets, vec![102, 103, 104, 105]);
    }

    #[test]
    fn tombstones_go_only_when_allowed_and_records_past_the_map_stay() {
        let old = batch(0, &[(Some("a"), Some("1")), (Some("b"), None)], 0);
        let new = batch(2, &[(Some("a"), Some("2"))], 0);
        let mut map = OffsetMap::new(1 << 20);
        map_batch(&mut map, &new, &header(&new)).unwrap();
        let h = header(&old);
        let keep_tombstones = CleanRules {
            map: &map,
            map_end: 3,
            drop_tombstones: false,
        };
        match judge_batch(&old, &h, &keep_tombstones).unwrap() {
            BatchFate::Rewritten { kept, removed: 1 } => {
                let mut out = Vec::new();
                write_cleaned_batch(&old, &h, &kept, &mut out);
                assert_eq!(keys_of(&out), vec![(1, Some("b".into()), true)]);
            }
            other => panic!("a@0 is superseded, got {other:?}"),
        }
        let drop_tombstones = CleanRules {
            drop_tombstones: true,
            ..keep_tombstones
        };
        match judge_batch(&old, &h, &drop_tombstones).unwrap() {
            BatchFate::Rewritten { kept, removed: 2 } => {
                let mut out = Vec::new();
                write_cleaned_batch(&old, &h, &kept, &mut out);
                let empty = validate_stored_batch(&out, 0, 1 << 20).unwrap();
                assert_eq!((empty.records_count, empty.next_offset()), (0, 2));
            }
            other => panic!("both records go, got {other:?}"),
        }
        // The map ends before the batch: nothing in it can be judged.
        let short = CleanRules {
            map_end: 0,
            ..drop_tombstones
        };
        assert_eq!(judge_batch(&old, &h, &short).unwrap(), BatchFate::Whole);
    }

    #[test]
    fn compressed_control_and_transactional_batches_stay_whole() {
        let records = [(Some("a"), Some("1")), (Some("a"), Some("2"))];
        for attributes in [0x0001, 0x0020, 0x0010] {
            let b = batch(0, &records, attributes);
            let h = header(&b);
            let mut map = OffsetMap::new(1 << 20);
            assert!(map_batch(&mut map, &b, &h).unwrap());
            assert!(map.is_empty(), "attributes {attributes:#x} are not mapped");
            map.record(b"a", 5);
            let rules = CleanRules {
                map: &map,
                map_end: 10,
                drop_tombstones: true,
            };
            assert_eq!(judge_batch(&b, &h, &rules).unwrap(), BatchFate::Whole);
        }
    }

    #[test]
    fn the_map_refuses_new_keys_past_its_bound() {
        let mut map = OffsetMap::new(2 * (OFFSET_MAP_ENTRY_OVERHEAD_BYTES + 1));
        assert!(map.record(b"a", 1));
        assert!(map.record(b"b", 2));
        assert!(!map.record(b"c", 3));
        assert!(map.record(b"a", 9), "a known key still moves");
        assert_eq!(
            (map.len(), map.latest(b"a"), map.latest(b"c")),
            (2, Some(9), None)
        );
    }
}
