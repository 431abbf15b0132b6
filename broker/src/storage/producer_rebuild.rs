//! Rebuilding the idempotent-producer table ([`super::producer_state`]) when a log opens,
//! from the newest producer snapshot ([`super::producer_snapshot`]) and the log after it, so a
//! producer retrying a batch across a restart (clean or kill -9), a follower's truncation or a
//! failover to a broker that restarted gets the batch's first offsets back instead of a second
//! copy, and a gap or a stale epoch is still refused.
//!
//! After [`super::recovery`] (the files are cut to intact batches, so a torn tail is already
//! gone and the scan stops exactly where recovery did), snapshots above the log end (their
//! batches were lost) or below the log start are deleted, and the newest remaining one is
//! loaded: the table as it stood at its offset `S`. Then the batch headers from `S` to the log
//! end are read, oldest first, and every batch with a producer id is
//! [`ProducerTable::record`]ed, so the table ends exactly as if those appends had just happened
//! (epochs, last [`super::producer_state::KEPT_BATCHES`] batches, and the
//! [`super::producer_state::MAX_PRODUCERS`] eviction all replay the same way). The log writes a
//! snapshot at every roll and at a clean close, so after a clean close nothing is replayed and
//! after a crash at most about a segment (more only if the newest snapshot was lost with the
//! crash). A snapshot that fails its checks is logged with its file name, deleted and skipped:
//! the next older one is tried.
//!
//! Without a usable snapshot (a log written before snapshots existed, or every snapshot
//! damaged) the headers of the last [`PRODUCER_REBUILD_BYTES`] of the log are replayed into an
//! empty table instead. What that window gives up: a producer whose last batch lies before it
//! is forgotten (its next batch is accepted as from a new producer, and a retry of a batch
//! that old would be appended again); one whose batches straddle the window start keeps its
//! last sequence but only its batches inside the window (a retry of an older one is refused as
//! out of order, never appended twice). A client retries only what it has in flight (at most
//! 5 requests per partition, for up to `request.timeout.ms`), so 64 MiB covers a retry unless
//! the partition took more than that after the batch.
//!
//! Only headers are parsed (records are never read as such): the reader fetches a chunk of
//! the file at a batch start and takes every header it holds; when batches are larger than a
//! chunk it reads just the header of each. A replay starts at a segment start or at an
//! offset-index entry (a batch start), so no segment is scanned from its beginning only to
//! skip bytes. It runs once, in `open`, never on the produce path.
//!
//! If the headers do not add up (a bad header or offsets that do not follow, which recovery
//! should have made impossible) or a read fails, the log opens with an empty table, and a
//! warning names the file: a partial table could refuse a producer's legitimate next batch,
//! an empty one only forgets.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use glommio::io::BufferedFile;

use super::error::LogError;
use super::file_range::FileRange;
use super::offset_index::OffsetEntry;
use super::producer_snapshot;
use super::producer_state::ProducerTable;
use super::record_batch::{BatchHeader, HEADER_BYTES, MAGIC_V2, MIN_BATCH_LENGTH};
use super::segment::Segment;

/// Bytes at the end of a log whose batch headers rebuild the producer table at open when no
/// snapshot can be used. See the module documentation for what this bound gives up.
pub const PRODUCER_REBUILD_BYTES: u64 = 64 << 20;

/// Bytes read at once while batches are smaller than this; a larger batch makes the next
/// read only a header.
const CHUNK_BYTES: usize = 64 * 1024;

/// One segment as the window sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentSpan<'a> {
    pub base_offset: i64,
    pub size_bytes: u64,
    pub index: &'a [OffsetEntry],
}

/// Where the window starts: a segment (index in the log's list), a byte position in it where
/// a batch starts, and that batch's base offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowStart {
    pub segment: usize,
    pub position: u64,
    pub offset: i64,
}

/// The earliest batch start such that at most `max_bytes` of the log follow it: whole
/// segments from the newest back while they fit, then, in the segment that does not fit
/// whole, the first offset-index entry inside the budget. `None` when not even the newest
/// segment's tail has a known batch start inside the budget (then nothing is scanned).
pub(crate) fn window_start(spans: &[SegmentSpan<'_>], max_bytes: u64) -> Option<WindowStart> {
    let mut remaining = max_bytes;
    let mut start = None;
    for (i, span) in spans.iter().enumerate().rev() {
        if span.size_bytes <= remaining {
            remaining -= span.size_bytes;
            start = Some(WindowStart {
                segment: i,
                position: 0,
                offset: span.base_offset,
            });
            continue;
        }
        let from = span.size_bytes - remaining;
        let k = span.index.partition_point(|e| (e.position as u64) < from);
        if let Some(e) = span
            .index
            .get(k)
            .filter(|e| (e.position as u64) < span.size_bytes)
        {
            start = Some(WindowStart {
                segment: i,
                position: e.position as u64,
                offset: span.base_offset + e.relative_offset as i64,
            });
        }
        break;
    }
    start
}

/// A stretch of one segment file to replay: `bytes`, starting with the batch at offset
/// `first_offset`, ending where the segment's batches end (`end_offset`).
pub(crate) struct ScanRange {
    path: PathBuf,
    bytes: FileRange<BufferedFile>,
    first_offset: i64,
    end_offset: i64,
}

/// The stretches of `segments` (oldest first, as recovery left them) the rebuild reads.
pub(crate) fn plan(segments: &VecDeque<Segment>, max_bytes: u64) -> Vec<ScanRange> {
    let spans: Vec<SegmentSpan<'_>> = segments
        .iter()
        .map(|s| SegmentSpan {
            base_offset: s.base_offset,
            size_bytes: s.size_bytes,
            index: s.index.entries(),
        })
        .collect();
    match window_start(&spans, max_bytes) {
        Some(start) => ranges_from(segments, start),
        None => Vec::new(),
    }
}

/// The stretches of `segments` from the batch at `offset` to the log end (from the last index
/// entry at or before it: batches before `offset` are read and skipped); `None` when `offset`
/// is outside the log.
pub(crate) fn plan_from(segments: &VecDeque<Segment>, offset: i64) -> Option<Vec<ScanRange>> {
    let log_start = segments.front()?.base_offset;
    let log_end = segments.back()?.next_offset;
    if offset < log_start || offset > log_end {
        return None;
    }
    let segment = segments
        .partition_point(|s| s.base_offset <= offset)
        .saturating_sub(1);
    let s = &segments[segment];
    let entries = s.index.entries();
    let k = entries.partition_point(|e| s.base_offset + e.relative_offset as i64 <= offset);
    let (position, offset) = match entries[..k]
        .iter()
        .rev()
        .find(|e| (e.position as u64) < s.size_bytes)
    {
        Some(e) => (e.position as u64, s.base_offset + e.relative_offset as i64),
        None => (0, s.base_offset),
    };
    Some(ranges_from(
        segments,
        WindowStart {
            segment,
            position,
            offset,
        },
    ))
}

/// The stretches of `segments` from the batch at `start` to the log end.
fn ranges_from(segments: &VecDeque<Segment>, start: WindowStart) -> Vec<ScanRange> {
    segments
        .iter()
        .enumerate()
        .skip(start.segment)
        .map(|(i, s)| {
            let (from, first_offset) = if i == start.segment {
                (start.position, start.offset)
            } else {
                (0, s.base_offset)
            };
            // Segments stay below 2 GiB (`segment_bytes`' range).
            debug_assert!(from <= s.size_bytes && s.size_bytes <= u32::MAX as u64);
            ScanRange {
                path: s.log_path.clone(),
                bytes: FileRange {
                    file: s.scan.clone(),
                    position: from,
                    len: (s.size_bytes - from) as u32,
                },
                first_offset,
                end_offset: s.next_offset,
            }
        })
        .collect()
}

/// What a replay read. `batches` and `producer_batches` count the batches replayed (from the
/// snapshot's offset on); the bytes include those read to reach it from an index entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub batches: u64,
    pub producer_batches: u64,
    pub bytes_covered: u64,
    pub bytes_read: u64,
}

/// Reads the batch headers of `ranges` in order and records in `table` every producer's batch
/// from offset `record_from` on (a batch holding `record_from` must start there).
pub(crate) async fn replay(
    mut table: ProducerTable,
    ranges: &[ScanRange],
    record_from: i64,
) -> Result<(ProducerTable, ReplayStats), LogError> {
    let mut stats = ReplayStats::default();
    for range in ranges {
        let mut reader = HeaderReader {
            range,
            chunk_pos: 0,
            chunk: Vec::new(),
            bytes_read: 0,
        };
        let mut pos = range.bytes.position;
        let mut expected = range.first_offset;
        let mut last_total = 0u64;
        while pos < range.bytes.end() {
            let header = reader.header_at(pos, last_total).await?;
            // Compaction may leave gaps between the batches of a sealed segment.
            if header.base_offset < expected {
                return Err(corrupt(
                    range,
                    pos,
                    format!(
                        "batch has base offset {}, expected {expected}",
                        header.base_offset
                    ),
                ));
            }
            let skipped = header.base_offset < record_from;
            if skipped {
                if header.next_offset() > record_from {
                    return Err(corrupt(
                        range,
                        pos,
                        format!(
                            "batch at offsets {}..{} holds the snapshot's offset {record_from}",
                            header.base_offset,
                            header.next_offset()
                        ),
                    ));
                }
            } else if header.producer_id >= 0 {
                table.record(&header);
                stats.producer_batches += 1;
            }
            if !skipped {
                stats.batches += 1;
            }
            last_total = header.total_bytes();
            expected = header.next_offset();
            pos += last_total;
        }
        if expected != range.end_offset {
            return Err(corrupt(
                range,
                pos,
                format!(
                    "batches end at offset {expected}, the segment at {}",
                    range.end_offset
                ),
            ));
        }
        stats.bytes_covered += range.bytes.len as u64;
        stats.bytes_read += reader.bytes_read;
    }
    Ok((table, stats))
}

/// How the producer table of a log was rebuilt at open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Offset of the snapshot loaded; `None` when the bounded window was replayed instead.
    pub snapshot_offset: Option<i64>,
    /// Snapshots found damaged (logged, deleted and skipped).
    pub corrupt_snapshots: Vec<PathBuf>,
    /// What the replay after the snapshot (or of the window) read.
    pub replay: ReplayStats,
}

/// The producer table of a log just recovered: the newest usable snapshot and the log after
/// it, else the last [`PRODUCER_REBUILD_BYTES`] of the log; an empty table (with a warning)
/// if the headers do not add up.
pub(crate) async fn rebuild(
    dir: &Path,
    segments: &VecDeque<Segment>,
) -> (ProducerTable, RebuildReport) {
    let started = Instant::now();
    let mut report = RebuildReport::default();
    let log_start = segments.front().map_or(0, |s| s.base_offset);
    let log_end = segments.back().map_or(0, |s| s.next_offset);
    let found = producer_snapshot::remove_interrupted_writes(dir)
        .and_then(|_| producer_snapshot::remove_outside(dir, log_start, log_end));
    let snapshots = found.unwrap_or_else(|error| {
        tracing::warn!(dir = %dir.display(), %error, "cannot list or delete producer snapshots");
        Vec::new()
    });
    for &offset in snapshots.iter().rev() {
        let table = match producer_snapshot::read(dir, offset) {
            Ok(table) => table,
            Err(error) => {
                let file = producer_snapshot::snapshot_file(dir, offset);
                let shown = file.display();
                tracing::warn!(file = %shown, %error, "ignoring a damaged producer snapshot");
                if let Err(error) = producer_snapshot::remove(dir, &[offset]) {
                    tracing::warn!(file = %shown, %error, "cannot delete a damaged snapshot");
                }
                report.corrupt_snapshots.push(file);
                continue;
            }
        };
        let ranges = plan_from(segments, offset).expect("snapshots outside the log were removed");
        match replay(table, &ranges, offset).await {
            Ok((table, stats)) => {
                tracing::debug!(
                    dir = %dir.display(),
                    snapshot_offset = offset,
                    producers = table.len(),
                    batches = stats.batches,
                    bytes_covered = stats.bytes_covered,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "loaded the producer snapshot and replayed the log after it"
                );
                report.snapshot_offset = Some(offset);
                report.replay = stats;
                return (table, report);
            }
            Err(error) => {
                tracing::warn!(
                    dir = %dir.display(),
                    snapshot_offset = offset,
                    %error,
                    "cannot replay the log after a producer snapshot; trying an older one"
                );
            }
        }
    }
    let ranges = plan(segments, PRODUCER_REBUILD_BYTES);
    let start_offset = ranges.first().map_or(log_end, |r| r.first_offset);
    match replay(ProducerTable::default(), &ranges, start_offset).await {
        Ok((table, stats)) => {
            tracing::debug!(
                dir = %dir.display(),
                producers = table.len(),
                batches = stats.batches,
                producer_batches = stats.producer_batches,
                bytes_covered = stats.bytes_covered,
                bytes_read = stats.bytes_read,
                elapsed_us = started.elapsed().as_micros() as u64,
                "rebuilt the producer table from the log's tail (no usable snapshot)"
            );
            report.replay = stats;
            (table, report)
        }
        Err(error) => {
            tracing::warn!(
                dir = %dir.display(),
                %error,
                "cannot rebuild the producer table from the log; idempotent producers start afresh"
            );
            (ProducerTable::default(), report)
        }
    }
}

fn corrupt(range: &ScanRange, position: u64, reason: String) -> LogError {
    LogError::Corrupt {
        file: range.path.clone(),
        position,
        reason: format!("rebuilding the producer table: {reason}"),
    }
}

/// Reads batch headers of one range, a chunk at a time.
struct HeaderReader<'a> {
    range: &'a ScanRange,
    chunk_pos: u64,
    chunk: Vec<u8>,
    bytes_read: u64,
}

impl HeaderReader<'_> {
    /// The header of the batch at `pos` (checked to fit the range); `previous_total` is the
    /// size of the batch before it, which decides how much to read when `pos` is not in the
    /// chunk at hand.
    async fn header_at(&mut self, pos: u64, previous_total: u64) -> Result<BatchHeader, LogError> {
        let range = self.range;
        let have = pos >= self.chunk_pos
            && pos + HEADER_BYTES as u64 <= self.chunk_pos + self.chunk.len() as u64;
        if !have {
            let left = range.bytes.end() - pos;
            if left < HEADER_BYTES as u64 {
                return Err(corrupt(
                    range,
                    pos,
                    format!("{left} bytes left for a header"),
                ));
            }
            let want = if previous_total >= CHUNK_BYTES as u64 {
                HEADER_BYTES
            } else {
                CHUNK_BYTES
            };
            let n = (want as u64).min(left) as usize;
            let got = range.bytes.file.read_at(pos, n).await.map_err(|e| {
                LogError::io(
                    &range.path,
                    "reading batch headers",
                    std::io::Error::from(e),
                )
            })?;
            if got.len() < HEADER_BYTES {
                return Err(corrupt(
                    range,
                    pos,
                    format!("short read: {} bytes", got.len()),
                ));
            }
            self.bytes_read += got.len() as u64;
            self.chunk_pos = pos;
            self.chunk.clear();
            self.chunk.extend_from_slice(&got[..]);
        }
        let at = (pos - self.chunk_pos) as usize;
        let header = BatchHeader::parse(&self.chunk[at..])
            .filter(|h| {
                h.magic == MAGIC_V2
                    && h.batch_length >= MIN_BATCH_LENGTH
                    && h.last_offset_delta >= 0
                    && pos + h.total_bytes() <= range.bytes.end()
            })
            .ok_or_else(|| corrupt(range, pos, "no valid batch header".into()))?;
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    //! The window on hand-made segment lists (whole segments while they fit, then an index
    //! entry inside the budget), and the replay on a real log: the rebuilt table equals the
    //! one the appends built, and a window that ends before a producer's batches forgets it.
    use super::*;
    use crate::storage::producer_state::{Verdict, OUT_OF_ORDER_SEQUENCE_NUMBER};
    use crate::storage::{LogConfig, PartitionLog};

    fn entry(relative_offset: u32, position: u32) -> OffsetEntry {
        OffsetEntry {
            relative_offset,
            position,
        }
    }

    #[test]
    fn the_window_takes_whole_segments_then_an_index_entry() {
        let idx0 = [entry(10, 1000), entry(20, 2000), entry(30, 3000)];
        let idx1 = [entry(5, 500)];
        let spans = [
            SegmentSpan {
                base_offset: 0,
                size_bytes: 4000,
                index: &idx0,
            },
            SegmentSpan {
                base_offset: 40,
                size_bytes: 1000,
                index: &idx1,
            },
            SegmentSpan {
                base_offset: 50,
                size_bytes: 0,
                index: &[],
            },
        ];
        let at = |segment, position, offset| {
            Some(WindowStart {
                segment,
                position,
                offset,
            })
        };
        // Everything fits: the log's start.
        assert_eq!(window_start(&spans, 5000), at(0, 0, 0));
        assert_eq!(window_start(&spans, u64::MAX), at(0, 0, 0));
        // 2500 bytes left for the first segment: its entry at 2000 would exceed, 3000 fits.
        assert_eq!(window_start(&spans, 2500), at(0, 3000, 30));
        assert_eq!(window_start(&spans, 3000), at(0, 2000, 20));
        // Only the last two segments fit; no entry of the first is inside the budget.
        assert_eq!(window_start(&spans, 1500), at(1, 0, 40));
        // Inside the second segment.
        assert_eq!(window_start(&spans, 600), at(1, 500, 45));
        // No known batch start within 400 bytes of the end: only the empty active segment.
        assert_eq!(window_start(&spans, 400), at(2, 0, 50));
        assert_eq!(window_start(&spans[..2], 400), None);
    }

    fn scratch() -> tempfile::TempDir {
        let base = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("test-scratch");
        std::fs::create_dir_all(&base).unwrap();
        tempfile::Builder::new()
            .prefix("producer-rebuild-")
            .tempdir_in(base)
            .unwrap()
    }

    /// A valid uncompressed batch of `count` empty-ish records' worth of header, padded to
    /// `bytes` (records are not parsed by the log beyond the header and CRC).
    fn batch(pid: i64, seq: i32, count: i32, bytes: usize) -> Vec<u8> {
        let mut b = vec![0u8; bytes.max(HEADER_BYTES)];
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&(if pid < 0 { -1i16 } else { 0 }).to_be_bytes());
        b[53..57].copy_from_slice(&(if pid < 0 { -1 } else { seq }).to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 64 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: -1,
            retention_bytes: -1,
            flush: tuning::FlushPolicy::Always,
            index_interval_bytes: 1024,
            max_batch_bytes: 1 << 20,
            write_buffer_bytes: 2 << 20,
            preallocate_bytes: 0,
            preallocate_zeroes: false,
            cleanup: crate::storage::CleanupPolicy::DELETE,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio_ppm: 500_000,
            min_compaction_lag_ms: 0,
        }
    }

    #[test]
    fn replay_matches_the_appends_and_the_window_forgets_older_producers() {
        let dir = scratch();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let log = PartitionLog::open(&path, config()).await.unwrap();
                // Producer 1 first, then ~200 KiB of plain and large batches (several
                // segments), then producer 2, whose batches are small and large.
                for i in 0..3 {
                    log.append(&batch(1, i * 2, 2, 300), 0).await.unwrap();
                }
                for i in 0..50 {
                    let size = if i % 10 == 0 { 70_000 } else { 2000 };
                    log.append(&batch(-1, 0, 1, size), 0).await.unwrap();
                }
                let mut seq = 0;
                for i in 0..12 {
                    let size = if i % 4 == 0 { 80_000 } else { 500 };
                    log.append(&batch(2, seq, 3, size), 0).await.unwrap();
                    seq += 3;
                }
                assert!(log.segment_base_offsets().len() > 3);

                let ranges = plan(&log.inner.state.borrow().segments, u64::MAX);
                let (full, stats) = replay(ProducerTable::default(), &ranges, 0).await.unwrap();
                assert_eq!(stats.batches, 65);
                assert_eq!(stats.producer_batches, 15);
                assert!(stats.bytes_read < stats.bytes_covered);
                assert_eq!(full, *log.inner.producers.borrow());
                assert_eq!(full.len(), 2);

                // A window of the last 100 KiB holds only producer 2's batches (its last
                // five and more), so producer 1 is forgotten: any sequence is accepted.
                let ranges = plan(&log.inner.state.borrow().segments, 100 * 1024);
                let first = ranges[0].first_offset;
                let (tail, _) = replay(ProducerTable::default(), &ranges, first)
                    .await
                    .unwrap();
                assert_eq!(tail.len(), 1);
                let mut h = BatchHeader::parse(&batch(1, 77, 1, 0)).unwrap();
                assert_eq!(tail.check([h].iter()), Ok(Verdict::Append));
                assert!(full.check([h].iter()).is_err());
                // Producer 2 is judged as the live table judges it.
                for s in [seq - 3, seq - 15, seq, seq + 1] {
                    h = BatchHeader::parse(&batch(2, s, 3, 0)).unwrap();
                    let live = log.inner.producers.borrow().check([h].iter());
                    assert_eq!(tail.check([h].iter()), live, "sequence {s}");
                }
                h = BatchHeader::parse(&batch(2, seq + 1, 3, 0)).unwrap();
                assert_eq!(
                    tail.check([h].iter()).unwrap_err().code,
                    OUT_OF_ORDER_SEQUENCE_NUMBER
                );
                log.close().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
