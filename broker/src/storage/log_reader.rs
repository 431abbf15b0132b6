//! Reads of a partition log: Fetch (offset -> segment -> sparse index -> batch header scan)
//! and ListOffsets by timestamp.
//!
//! A read returns byte ranges of a segment file for data only the file holds (to be spliced
//! or sent to a socket without passing through user space) and the bytes still in memory:
//! slices of the recent write rounds' buffers that the shard's batch cache holds and of the
//! round in flight (`batch_cache.rs`, not copied), and a copy of the appender's unwritten
//! tail. Batch headers are scanned from memory too where it
//! holds them. Like Kafka, the result starts at the batch holding
//! the fetch offset and is cut at `max_bytes`, so its last batch may be partial (clients
//! discard a partial trailing batch and fetch it again); if the first batch alone is larger
//! than `max_bytes` it is returned whole.

use std::io;
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::BufferedFile;

use super::batch_cache::CachedBytes;
use super::error::LogError;
use super::file_range::FileRange;
use super::log::{LogInner, PartitionLog};
use super::log_cleaner::read_varlong;
use super::record_batch::{BatchHeader, HEADER_BYTES, MIN_BATCH_LENGTH};

/// One piece of a read result; the pieces concatenated are the fetched bytes.
#[derive(Debug, Clone)]
pub enum ReadChunk {
    /// Bytes already in a segment file.
    File(FileRange),
    /// Bytes appended but not yet written to the file (copied out of the write buffer).
    Memory(Bytes),
    /// Bytes of a round the batch cache holds (or of the round in flight), not copied.
    Cached(CachedBytes),
}

impl ReadChunk {
    pub fn len(&self) -> u64 {
        match self {
            ReadChunk::File(r) => r.len as u64,
            ReadChunk::Memory(b) => b.len() as u64,
            ReadChunk::Cached(b) => b.len() as u64,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a read found.
#[derive(Debug, Clone, Default)]
pub struct LogReadResult {
    /// The record batches, in order (possibly a partial last batch, see the module doc).
    pub chunks: Vec<ReadChunk>,
    /// Base offset of the first batch returned (may be below the fetch offset: the batch
    /// holding it is returned whole); `None` if nothing was returned.
    pub first_batch_offset: Option<i64>,
    /// Log start and end offsets when the read was made.
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

impl LogReadResult {
    pub fn total_bytes(&self) -> u64 {
        self.chunks.iter().map(ReadChunk::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.total_bytes() == 0
    }
    /// All bytes in one buffer (pread for file ranges).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.total_bytes() as usize);
        for c in &self.chunks {
            match c {
                ReadChunk::File(r) => r.read_into(&mut out)?,
                ReadChunk::Memory(b) => out.extend_from_slice(b),
                ReadChunk::Cached(b) => out.extend_from_slice(b),
            }
        }
        Ok(out)
    }
}

/// A record found by [`PartitionLog::offset_for_timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub offset: i64,
    pub timestamp_ms: i64,
}

/// What the reader captured about a segment before awaiting file reads.
struct SegmentView {
    base_offset: i64,
    scan: Rc<BufferedFile>,
    size_bytes: u64,
    next_offset: i64,
    path: std::path::PathBuf,
}

impl SegmentView {
    /// The log's segment this view was taken of, unless compaction replaced its file since.
    fn current<'s>(&self, st: &'s super::log::LogState) -> Option<&'s super::segment::Segment> {
        st.segment_by_base(self.base_offset)
            .filter(|seg| Rc::ptr_eq(&seg.scan, &self.scan))
    }
}

const SCAN_CHUNK_BYTES: usize = 16 * 1024;

/// Walks batch headers of one segment from a position, reading chunks of the file (or of
/// the appender's memory for the unwritten tail).
struct HeaderScanner<'a> {
    inner: &'a LogInner,
    view: &'a SegmentView,
    chunk_pos: u64,
    chunk: Vec<u8>,
}

impl<'a> HeaderScanner<'a> {
    fn new(inner: &'a LogInner, view: &'a SegmentView) -> Self {
        HeaderScanner {
            inner,
            view,
            chunk_pos: 0,
            chunk: Vec::new(),
        }
    }

    /// The header at `pos`, `None` at the end of the segment.
    async fn header_at(&mut self, pos: u64) -> Result<Option<BatchHeader>, LogError> {
        if pos >= self.view.size_bytes {
            return Ok(None);
        }
        let in_chunk = pos >= self.chunk_pos
            && pos + HEADER_BYTES as u64 <= self.chunk_pos + self.chunk.len() as u64;
        if !in_chunk {
            let want = SCAN_CHUNK_BYTES.min((self.view.size_bytes - pos) as usize);
            self.chunk = self
                .inner
                .read_segment_bytes(self.view, pos, want.max(HEADER_BYTES))
                .await?;
            self.chunk_pos = pos;
        }
        let at = (pos - self.chunk_pos) as usize;
        let header = BatchHeader::parse(&self.chunk[at..]).filter(|h| {
            h.batch_length >= MIN_BATCH_LENGTH
                && pos + h.total_bytes() <= self.view.size_bytes
                && h.last_offset_delta >= 0
        });
        match header {
            Some(h) => Ok(Some(h)),
            None => Err(LogError::Corrupt {
                file: self.view.path.clone(),
                position: pos,
                reason: "no valid batch header where one must be".into(),
            }),
        }
    }
}

impl LogInner {
    /// `len` bytes of a segment from `pos` (fewer at its end): from the file below the
    /// written end, from the appender's memory above it.
    async fn read_segment_bytes(
        &self,
        view: &SegmentView,
        pos: u64,
        len: usize,
    ) -> Result<Vec<u8>, LogError> {
        let mut out = Vec::with_capacity(len);
        let mut p = pos;
        while out.len() < len {
            let want = len - out.len();
            let from_file = {
                let st = self.state.borrow();
                // A segment compaction swapped since the view was taken is another file:
                // the view's own file is read whole.
                match view.current(&st) {
                    Some(seg) if p >= seg.memory_start() => {
                        if let Some(a) = &seg.appender {
                            a.copy_from_memory(p, want, &mut out);
                        }
                        None
                    }
                    Some(seg) => Some(want.min((seg.memory_start() - p) as usize)),
                    None => Some(want),
                }
            };
            let Some(n) = from_file else { break };
            let got = view
                .scan
                .read_at(p, n)
                .await
                .map_err(|e| LogError::io(&view.path, "reading the log", e.into()))?;
            out.extend_from_slice(&got[..]);
            if got.len() < n {
                break;
            }
            p += n as u64;
        }
        Ok(out)
    }
}

impl PartitionLog {
    fn segment_view(&self, index: usize) -> Option<SegmentView> {
        let st = self.inner.state.borrow();
        st.segments.get(index).map(|s| SegmentView {
            base_offset: s.base_offset,
            scan: s.scan.clone(),
            size_bytes: s.size_bytes,
            next_offset: s.next_offset,
            path: s.log_path.clone(),
        })
    }

    /// Reads from `fetch_offset`: at most `max_bytes` (but at least the first batch whole),
    /// only batches entirely below `max_offset` (exclusive; e.g. the high watermark; `None`
    /// means the log end offset). `fetch_offset == log_end_offset` gives an empty result;
    /// outside `[log_start_offset, log_end_offset]` is [`LogError::OffsetOutOfRange`].
    pub async fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset: Option<i64>,
    ) -> Result<LogReadResult, LogError> {
        let inner = &self.inner;
        let (mut index, start_pos, log_start_offset, log_end_offset, upper) = {
            let st = inner.state.borrow();
            if st.closed {
                return Err(LogError::Closed);
            }
            if fetch_offset < st.log_start_offset || fetch_offset > st.next_offset {
                return Err(LogError::OffsetOutOfRange {
                    offset: fetch_offset,
                    log_start_offset: st.log_start_offset,
                    log_end_offset: st.next_offset,
                });
            }
            debug_assert!(
                st.log_start_offset <= st.next_offset,
                "log start {} past the log end {}",
                st.log_start_offset,
                st.next_offset
            );
            let i = st.segment_index_for(fetch_offset);
            // The log start is never below the first segment's base (retention, DeleteRecords
            // and open keep it inside the log), so a segment holds the offset.
            debug_assert!(st.segments[i].base_offset <= fetch_offset);
            let pos = scan_start(&st.segments[i], fetch_offset);
            let upper = max_offset.map_or(st.next_offset, |m| m.min(st.next_offset));
            (i, pos, st.log_start_offset, st.next_offset, upper)
        };
        let mut result = LogReadResult {
            chunks: Vec::new(),
            first_batch_offset: None,
            log_start_offset,
            log_end_offset,
        };
        if fetch_offset >= upper {
            return Ok(result);
        }
        let mut pos = start_pos;
        // Find the batch holding fetch_offset; move on to the next segment if this one ends
        // before it.
        let (view, first_pos, first) = loop {
            let Some(view) = self.segment_view(index) else {
                return Ok(result);
            };
            let mut scanner = HeaderScanner::new(inner, &view);
            let mut found = None;
            while let Some(h) = scanner.header_at(pos).await? {
                if h.next_offset() > fetch_offset {
                    found = Some(h);
                    break;
                }
                pos += h.total_bytes();
            }
            match found {
                Some(h) => break (view, pos, h),
                None => {
                    index += 1;
                    pos = 0;
                }
            }
        };
        if first.next_offset() > upper {
            return Ok(result);
        }
        // Where the returned bytes stop: the segment end, or the first batch reaching
        // `upper` when that bound falls inside this segment.
        let mut stop = view.size_bytes;
        if upper < view.next_offset {
            let mut scanner = HeaderScanner::new(inner, &view);
            let mut p = first_pos;
            while let Some(h) = scanner.header_at(p).await? {
                if h.next_offset() > upper {
                    break;
                }
                p += h.total_bytes();
            }
            stop = p;
        }
        let first_len = first.total_bytes();
        let len = if first_len > max_bytes as u64 {
            first_len
        } else {
            (stop - first_pos).min(max_bytes as u64)
        };
        let end = first_pos + len;
        // What memory still holds (the batch cache, the round in flight, the unwritten tail)
        // is answered from there; what is below it, as a range of the file.
        let mut memory = Vec::new();
        let file_end = {
            let st = inner.state.borrow();
            match view.current(&st) {
                Some(seg) => {
                    let file_end = seg.memory_start().clamp(first_pos, end);
                    if let Some(a) = seg.appender.as_ref().filter(|_| end > file_end) {
                        a.read_from_memory(file_end, (end - file_end) as usize, &mut memory);
                    }
                    file_end
                }
                None => end,
            }
        };
        if file_end > first_pos {
            // Inside one segment, and segments stay below 2 GiB.
            debug_assert!(file_end - first_pos <= u32::MAX as u64);
            let len = (file_end - first_pos) as u32;
            result.chunks.push(ReadChunk::File(FileRange {
                file: view.scan.clone(),
                position: first_pos,
                len,
            }));
        }
        let memory_bytes: u64 = memory.iter().map(ReadChunk::len).sum();
        super::batch_cache::record_read(memory_bytes, file_end - first_pos);
        result.chunks.append(&mut memory);
        result.first_batch_offset = Some(first.base_offset);
        Ok(result)
    }

    /// ListOffsets by time: the first record whose timestamp is >= `timestamp_ms`, or `None`
    /// if every record is older. For an uncompressed batch the records are walked to find the
    /// exact record; for a compressed batch (never decompressed here) the answer is the
    /// batch's base offset with its maxTimestamp.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, LogError> {
        let inner = &self.inner;
        let (index, start_pos) = {
            let st = inner.state.borrow();
            if st.closed {
                return Err(LogError::Closed);
            }
            let found = st
                .segments
                .iter()
                .position(|s| !s.is_empty() && s.max_timestamp_ms >= timestamp_ms);
            let Some(i) = found else { return Ok(None) };
            let seg = &st.segments[i];
            let pos = seg
                .time_index
                .lookup(timestamp_ms)
                .and_then(|rel| seg.index.lookup(rel))
                .map_or(0, |e| e.position as u64);
            (i, pos)
        };
        let Some(view) = self.segment_view(index) else {
            return Ok(None);
        };
        let log_start = self.log_start_offset();
        let mut scanner = HeaderScanner::new(inner, &view);
        let mut pos = start_pos;
        while let Some(h) = scanner.header_at(pos).await? {
            if h.max_timestamp >= timestamp_ms && h.next_offset() > log_start {
                if h.compression() != 0 || h.is_log_append_time() {
                    return Ok(Some(TimestampOffset {
                        offset: h.base_offset.max(log_start),
                        timestamp_ms: h.max_timestamp,
                    }));
                }
                let batch = inner
                    .read_segment_bytes(&view, pos, h.total_bytes() as usize)
                    .await?;
                let found = first_record_at_or_after(&batch, &h, timestamp_ms, log_start);
                return Ok(Some(found.unwrap_or(TimestampOffset {
                    offset: h.base_offset.max(log_start),
                    timestamp_ms: h.max_timestamp,
                })));
            }
            pos += h.total_bytes();
        }
        Ok(None)
    }
}

impl PartitionLog {
    /// ListOffsets MAX_TIMESTAMP (KIP-734): the record with the largest timestamp among the
    /// batches in `[log start, max_offset)` (ties: the earliest), or `None` when there is
    /// none. Segments wholly in that range answer from their bookkeeping (largest batch
    /// timestamp and that batch's base offset); the segments at its edges are scanned. In
    /// the chosen batch the first record carrying the batch's largest timestamp is the
    /// answer (a compressed batch is decompressed for it; a log-append-time batch answers
    /// its base offset, all its records sharing that time).
    pub async fn max_timestamp_offset(
        &self,
        max_offset: i64,
    ) -> Result<Option<TimestampOffset>, LogError> {
        let inner = &self.inner;
        // (segment index, largest batch timestamp, that batch's base offset), per segment.
        let (log_start, whole, edges) = {
            let st = inner.state.borrow();
            if st.closed {
                return Err(LogError::Closed);
            }
            let log_start = st.log_start_offset;
            let mut whole = Vec::new();
            let mut edges = Vec::new();
            for (i, s) in st.segments.iter().enumerate() {
                if s.is_empty() || s.next_offset <= log_start || s.base_offset >= max_offset {
                    continue;
                }
                if s.base_offset >= log_start && s.next_offset <= max_offset {
                    whole.push((i, s.max_timestamp_ms, s.max_timestamp_offset));
                } else {
                    edges.push(i);
                }
            }
            (log_start, whole, edges)
        };
        // (segment index, timestamp, offset, whether the offset is the record's already or
        // still the batch's base offset).
        let mut best: Option<(usize, i64, i64, bool)> = None;
        let mut consider = |candidate: (usize, i64, i64, bool)| {
            let better = best.is_none_or(|(_, ts, offset, _)| {
                candidate.1 > ts || (candidate.1 == ts && candidate.2 < offset)
            });
            if better {
                best = Some(candidate);
            }
        };
        whole
            .into_iter()
            .for_each(|(i, ts, offset)| consider((i, ts, offset, false)));
        for index in edges {
            let Some(view) = self.segment_view(index) else {
                continue;
            };
            let mut scanner = HeaderScanner::new(inner, &view);
            let mut pos = 0;
            while let Some(h) = scanner.header_at(pos).await? {
                if h.next_offset() > max_offset {
                    break;
                }
                if h.base_offset >= log_start {
                    consider((index, h.max_timestamp, h.base_offset, false));
                } else if h.next_offset() > log_start {
                    // The batch holding the log start: only its records from there count.
                    let batch = inner
                        .read_segment_bytes(&view, pos, h.total_bytes() as usize)
                        .await?;
                    if let Some((ts, offset)) = max_record_from(&batch, &h, log_start) {
                        consider((index, ts, offset, true));
                    }
                }
                pos += h.total_bytes();
            }
        }
        let Some((index, timestamp_ms, batch_offset, exact)) = best else {
            return Ok(None);
        };
        if exact {
            return Ok(Some(TimestampOffset {
                offset: batch_offset,
                timestamp_ms,
            }));
        }
        let Some(view) = self.segment_view(index) else {
            return Ok(None);
        };
        let start_pos = {
            let st = inner.state.borrow();
            view.current(&st)
                .map_or(0, |seg| scan_start(seg, batch_offset))
        };
        let mut scanner = HeaderScanner::new(inner, &view);
        let mut pos = start_pos;
        while let Some(h) = scanner.header_at(pos).await? {
            if h.base_offset == batch_offset {
                let offset = if h.is_log_append_time() {
                    None
                } else {
                    let batch = inner
                        .read_segment_bytes(&view, pos, h.total_bytes() as usize)
                        .await?;
                    record_with_timestamp(&batch, &h, h.max_timestamp, log_start)
                };
                return Ok(Some(TimestampOffset {
                    offset: offset.unwrap_or(h.base_offset).max(log_start),
                    timestamp_ms,
                }));
            }
            if h.base_offset > batch_offset {
                break;
            }
            pos += h.total_bytes();
        }
        // The batch went meanwhile (retention or compaction): its base offset still names it.
        Ok(Some(TimestampOffset {
            offset: batch_offset.max(log_start),
            timestamp_ms,
        }))
    }
}

/// Where a header scan for `offset` starts in `segment`: the sparse index entry at or
/// below it (the start when the offset is below the segment).
fn scan_start(segment: &super::segment::Segment, offset: i64) -> u64 {
    if offset < segment.base_offset {
        return 0;
    }
    segment
        .index
        .lookup(segment.relative(offset.min(segment.next_offset)))
        .map_or(0, |e| e.position as u64)
}

/// An idempotent producer of a partition, as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub last_sequence: i32,
    /// maxTimestamp of its last batch; -1 when that batch is no longer in the log.
    pub last_timestamp_ms: i64,
}

impl PartitionLog {
    /// The idempotent producers the log remembers (its producer table), ordered by id, with
    /// the timestamp of each one's last batch read from that batch's header.
    pub async fn active_producers(&self) -> Result<Vec<ActiveProducer>, LogError> {
        let mut found: Vec<(i64, i16, i32, i64)> = self
            .inner
            .producers
            .borrow()
            .producers()
            .filter_map(|(id, epoch, batches)| {
                batches
                    .last()
                    .map(|b| (id, epoch, b.last_sequence, b.first_offset))
            })
            .collect();
        found.sort_unstable();
        let mut out = Vec::with_capacity(found.len());
        for (producer_id, producer_epoch, last_sequence, offset) in found {
            out.push(ActiveProducer {
                producer_id,
                producer_epoch,
                last_sequence,
                last_timestamp_ms: self.batch_max_timestamp(offset).await?.unwrap_or(-1),
            });
        }
        Ok(out)
    }

    /// maxTimestamp of the batch holding `offset`, if the log still has it.
    async fn batch_max_timestamp(&self, offset: i64) -> Result<Option<i64>, LogError> {
        let inner = &self.inner;
        let (index, start_pos) = {
            let st = inner.state.borrow();
            if st.closed {
                return Err(LogError::Closed);
            }
            if offset < st.log_start_offset || offset >= st.next_offset {
                return Ok(None);
            }
            let i = st.segment_index_for(offset);
            (i, scan_start(&st.segments[i], offset))
        };
        let Some(view) = self.segment_view(index) else {
            return Ok(None);
        };
        let mut scanner = HeaderScanner::new(inner, &view);
        let mut pos = start_pos;
        while let Some(h) = scanner.header_at(pos).await? {
            if h.next_offset() > offset {
                return Ok((h.base_offset <= offset).then_some(h.max_timestamp));
            }
            pos += h.total_bytes();
        }
        Ok(None)
    }
}

/// The largest timestamp among the records of `batch` at or after `min_offset`, and the
/// first record carrying it (walked in place when uncompressed, decompressed otherwise; a
/// log-append-time batch's records all carry its maxTimestamp).
fn max_record_from(batch: &[u8], header: &BatchHeader, min_offset: i64) -> Option<(i64, i64)> {
    if header.is_log_append_time() {
        return Some((header.max_timestamp, header.base_offset.max(min_offset)));
    }
    let mut best: Option<(i64, i64)> = None;
    let mut keep = |ts: i64, offset: i64| {
        if offset >= min_offset && best.is_none_or(|(b, _)| ts > b) {
            best = Some((ts, offset));
        }
    };
    if header.compression() == 0 {
        walk_records(batch, header, |ts, offset| {
            keep(ts, offset);
            true
        })?;
    } else {
        let mut bytes = Bytes::copy_from_slice(batch);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).ok()?;
        for r in &set.records {
            keep(r.timestamp, r.offset);
        }
    }
    best
}

/// The offset of the first record of `batch` (at or after `min_offset`) whose timestamp is
/// `timestamp`: walked in place when uncompressed, decompressed otherwise. `None` when the
/// records cannot be read.
fn record_with_timestamp(
    batch: &[u8],
    header: &BatchHeader,
    timestamp: i64,
    min_offset: i64,
) -> Option<i64> {
    if header.compression() == 0 {
        return first_record_at_or_after(batch, header, timestamp, min_offset)
            .filter(|found| found.timestamp_ms == timestamp)
            .map(|found| found.offset);
    }
    let mut bytes = Bytes::copy_from_slice(batch);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).ok()?;
    set.records
        .iter()
        .find(|r| r.timestamp == timestamp && r.offset >= min_offset)
        .map(|r| r.offset)
}

/// In an uncompressed batch, the first record with timestamp >= `target` (and offset >=
/// `min_offset`). `None` if the records cannot be walked.
fn first_record_at_or_after(
    batch: &[u8],
    header: &BatchHeader,
    target: i64,
    min_offset: i64,
) -> Option<TimestampOffset> {
    let mut found = None;
    walk_records(batch, header, |ts, offset| {
        if ts >= target && offset >= min_offset {
            found = Some(TimestampOffset {
                offset,
                timestamp_ms: ts,
            });
            return false;
        }
        true
    })?;
    found
}

/// Calls `visit(timestamp, offset)` for each record of an uncompressed batch, in order,
/// until it returns false. `None` if the records cannot be walked.
fn walk_records(
    batch: &[u8],
    header: &BatchHeader,
    mut visit: impl FnMut(i64, i64) -> bool,
) -> Option<()> {
    let mut at = HEADER_BYTES;
    for _ in 0..header.records_count {
        let len = read_varlong(batch, &mut at)?;
        let record_end = at.checked_add(usize::try_from(len).ok()?)?;
        if record_end > batch.len() {
            return None;
        }
        let mut p = at + 1; // attributes
        let ts_delta = read_varlong(batch, &mut p)?;
        let offset_delta = read_varlong(batch, &mut p)?;
        let ts = header.base_timestamp.checked_add(ts_delta)?;
        let offset = header.base_offset.checked_add(offset_delta)?;
        if !visit(ts, offset) {
            return Some(());
        }
        at = record_end;
    }
    Some(())
}
