//! Recovery when a partition log opens.
//!
//! First a compaction swap a crash interrupted is completed or rolled back
//! ([`super::segment_swap`]).
//!
//! The `recovery-point` file holds an offset below which every segment was fdatasync'ed (it
//! moves when a rolled segment's sync completes, and at close). Segments wholly below it
//! trust their indexes after a sanity check (whole entries, increasing, inside the log), and
//! only the batches after the last index entry are verified; a missing or corrupt index is
//! rebuilt by scanning the segment. After a clean shutdown (marker file present) every
//! segment is treated so. Otherwise the segments at or above the recovery point, the active
//! one included, have every batch verified (length, magic, CRC-32C, record count, consecutive
//! offsets; in a sealed segment, which compaction may have rewritten, a batch may start past
//! the previous one's end) and their indexes rebuilt. A segment is cut at the first batch that fails; cut
//! bytes that were not all zeros (zeros are padding or preallocation) are logged with the file
//! and position. If a sealed segment is cut or ends before the next one starts, the segments
//! after it are deleted (as Kafka does): the log must stay contiguous.
//!
//! The small offset files a log keeps next to its segments (the recovery point, the log start
//! offset of [`super::log_start`], the cleaner checkpoint) are read and written here.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{BufferedFile, DmaFile, OpenOptions as DmaOpenOptions};

use super::error::LogError;
use super::log_config::LogConfig;
use super::offset_index::OffsetIndex;
use super::record_batch::{validate_stored_batch, BatchHeader, LOG_OVERHEAD};
use super::segment::{parse_segment_file, segment_file, Segment};
use super::segment_appender::SegmentAppender;
use super::time_index::TimeIndex;
use tuning::fs::sync_dir;

/// Name of the marker file a clean [`super::PartitionLog::close`] leaves in the log directory.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean_shutdown";

/// Name of the file holding the recovery point (decimal offset).
pub const RECOVERY_POINT_FILE: &str = "recovery-point";

/// Name of the file holding the log start offset (decimal), in the partition's directory.
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset";

/// The log start offset at open: the file's, when it is past the first segment's base and
/// not past the log end, else the first segment's base. A file that cannot be read is
/// logged and ignored: records deleted before come back, nothing is lost.
pub(crate) fn read_log_start(dir: &Path, first_base: i64, log_end: i64) -> i64 {
    let path = dir.join(LOG_START_OFFSET_FILE);
    let stored = match std::fs::metadata(&path) {
        Err(_) => None,
        Ok(_) => {
            let read = read_offset_file(dir, LOG_START_OFFSET_FILE);
            if read.is_none() {
                tracing::warn!(
                    file = %path.display(),
                    "the log start offset file holds no offset; using the first segment's base"
                );
            }
            read
        }
    };
    let start = stored.map_or(first_base, |s| s.max(first_base));
    start.min(log_end.max(first_base))
}

/// Reads the recovery point; `None` if the file is missing or unreadable (then every segment
/// is verified after an unclean shutdown).
pub(crate) fn read_recovery_point(dir: &Path) -> Option<i64> {
    read_offset_file(dir, RECOVERY_POINT_FILE)
}

/// Replaces the recovery point durably (temporary file, fsync, rename, directory fsync).
pub(crate) fn write_recovery_point(dir: &Path, offset: i64) -> std::io::Result<()> {
    write_offset_file(dir, RECOVERY_POINT_FILE, offset)
}

/// Reads a file of `dir` holding one decimal offset; `None` if missing or unreadable.
pub(crate) fn read_offset_file(dir: &Path, name: &str) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    text.trim().parse().ok()
}

/// Replaces a file of `dir` holding one decimal offset durably ([`crate::data_file::replace`]).
pub(crate) fn write_offset_file(dir: &Path, name: &str, offset: i64) -> std::io::Result<()> {
    crate::data_file::replace(&dir.join(name), format!("{offset}\n").as_bytes(), 0o644)
}

/// A cut made by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub file: PathBuf,
    /// The file now ends here (the end of the last intact batch).
    pub position: u64,
    /// Bytes that were after it in the file.
    pub bytes_removed: u64,
    /// Why the batch at `position` was rejected.
    pub reason: String,
}

/// What recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous close was clean (marker found).
    pub clean_shutdown: bool,
    /// Cuts of non-zero bytes (torn or corrupt tails).
    pub truncations: Vec<Truncation>,
    /// Index files that were missing or corrupt and were rebuilt.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Segments found on disk.
    pub segments: usize,
    /// Segments deleted because an earlier one was cut (base offsets).
    pub deleted_segments: Vec<i64>,
    /// Compaction swaps a crash interrupted: completed (base offsets), and files of
    /// uncommitted ones removed (rolled back).
    pub completed_swaps: Vec<i64>,
    pub removed_swap_files: usize,
}

/// Recovery accepts batches up to the larger of this and `max_batch_bytes`: segments may hold
/// batches written under a larger limit than today's, but a corrupt length field must not
/// make recovery read a whole segment into memory.
const RECOVERY_MIN_BATCH_LIMIT_BYTES: u32 = 128 << 20;
const SCAN_READ_BYTES: usize = 1 << 20;

/// Reads a segment file sequentially in large chunks.
struct FileWindow<'a> {
    file: &'a BufferedFile,
    path: &'a Path,
    file_len: u64,
    start: u64,
    bytes: Vec<u8>,
}

impl FileWindow<'_> {
    /// Makes `[pos, pos + len)` available (less at the end of the file); returns the slice.
    async fn get(&mut self, pos: u64, len: usize) -> Result<&[u8], LogError> {
        let have_end = self.start + self.bytes.len() as u64;
        let want_end = (pos + len as u64).min(self.file_len);
        if pos < self.start || want_end > have_end {
            let n = ((self.file_len.saturating_sub(pos)) as usize).min(len.max(SCAN_READ_BYTES));
            let got = self.file.read_at(pos, n).await.map_err(|e| {
                LogError::io(self.path, "reading the log during recovery", e.into())
            })?;
            self.start = pos;
            self.bytes = got[..].to_vec();
        }
        let from = (pos - self.start) as usize;
        let to = (from + len).min(self.bytes.len());
        Ok(&self.bytes[from.min(to)..to])
    }
}

/// Where a verifying scan stopped.
struct ScanEnd {
    valid_end: u64,
    /// `None`: clean end (end of file or zero bytes); `Some`: why the next batch was rejected.
    problem: Option<String>,
}

/// Verifies batches from `pos` and hands each intact one to `on_batch(position, header)`.
/// Offsets must follow each other, except that with `allow_gaps` (a sealed segment, which
/// compaction may have rewritten, or any segment of a compacted log, whose follower copies
/// cleaned batches) a batch may start past the previous one's end.
#[allow(clippy::too_many_arguments)]
async fn scan(
    file: &BufferedFile,
    path: &Path,
    max_batch_bytes: u32,
    file_len: u64,
    mut pos: u64,
    mut expected_offset: i64,
    allow_gaps: bool,
    mut on_batch: impl FnMut(u64, &BatchHeader),
) -> Result<ScanEnd, LogError> {
    let mut window = FileWindow {
        file,
        path,
        file_len,
        start: 0,
        bytes: Vec::new(),
    };
    loop {
        if pos >= file_len {
            return Ok(ScanEnd {
                valid_end: pos,
                problem: None,
            });
        }
        let head = window.get(pos, LOG_OVERHEAD).await?;
        if head.len() < LOG_OVERHEAD || head.iter().all(|b| *b == 0) {
            let problem = if head.iter().all(|b| *b == 0) {
                None
            } else {
                Some(format!("{} stray bytes at the end", head.len()))
            };
            return Ok(ScanEnd {
                valid_end: pos,
                problem,
            });
        }
        let mut length = [0u8; 4];
        length.copy_from_slice(&head[8..12]);
        let total = i32::from_be_bytes(length).max(0) as u64 + LOG_OVERHEAD as u64;
        if total > max_batch_bytes as u64 || pos + total > file_len {
            return Ok(ScanEnd {
                valid_end: pos,
                problem: Some(format!(
                    "batch at byte {pos} claims {total} bytes: past the file end ({file_len}) \
                     or the recovery limit ({max_batch_bytes})"
                )),
            });
        }
        let bytes = window.get(pos, total as usize).await?;
        let header = match validate_stored_batch(bytes, pos as usize, max_batch_bytes) {
            Ok(h) => h,
            Err(e) => {
                return Ok(ScanEnd {
                    valid_end: pos,
                    problem: Some(e.to_string()),
                })
            }
        };
        let follows = header.base_offset == expected_offset
            || (allow_gaps && header.base_offset > expected_offset);
        if !follows {
            return Ok(ScanEnd {
                valid_end: pos,
                problem: Some(format!(
                    "batch at byte {pos} has base offset {}, expected {expected_offset}",
                    header.base_offset
                )),
            });
        }
        on_batch(pos, &header);
        expected_offset = header.next_offset();
        pos += header.total_bytes();
    }
}

/// Whether `[from, to)` of the file holds only zeros (checks at most 1 MiB).
async fn only_zeros(
    file: &BufferedFile,
    path: &Path,
    from: u64,
    to: u64,
) -> Result<bool, LogError> {
    if from >= to {
        return Ok(true);
    }
    let n = ((to - from) as usize).min(SCAN_READ_BYTES);
    let got = file
        .read_at(from, n)
        .await
        .map_err(|e| LogError::io(path, "reading the log during recovery", e.into()))?;
    Ok(got.iter().all(|b| *b == 0))
}

/// Opens or creates the log in `dir` and recovers it. Returns the segments, oldest first;
/// the last one has an appender.
pub(crate) async fn recover(
    dir: &Path,
    config: &LogConfig,
) -> Result<(VecDeque<Segment>, RecoveryReport), LogError> {
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, "creating the log directory", e))?;
    if created {
        // The new directory's name must be durable before anything in it is acknowledged.
        if let Some(parent) = dir.parent() {
            sync_dir(parent).map_err(|e| LogError::io(parent, "syncing the data directory", e))?;
        }
    }
    let mut report = RecoveryReport::default();
    (report.completed_swaps, report.removed_swap_files) =
        super::segment_swap::finish_interrupted_swaps(dir)?;
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    report.clean_shutdown = marker.exists();
    if report.clean_shutdown {
        // Gone from now on: a crash before the next clean close must verify everything.
        std::fs::remove_file(&marker)
            .and_then(|_| sync_dir(dir))
            .map_err(|e| LogError::io(&marker, "removing the clean-shutdown marker", e))?;
    }
    let bases = list_segments(dir)?;
    report.segments = bases.len();
    let mut segments = VecDeque::with_capacity(bases.len().max(1));
    if bases.is_empty() {
        segments.push_back(Segment::create(dir, 0, config).await?);
        return Ok((segments, report));
    }
    let recovery_point = read_recovery_point(dir);
    let mut progress = tuning::progress::Progress::new(
        format!("recovering {}", dir.display()),
        "segments",
        bases.len() as u64,
    );
    let mut expected_next: Option<i64> = None;
    for (i, base) in bases.iter().copied().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let active = next_base.is_none();
        // Every offset of this segment is below `next_base`; it was synced if that is at or
        // below the recovery point.
        let synced = next_base.is_some_and(|nb| recovery_point.is_some_and(|rp| nb <= rp));
        let verify_all = !report.clean_shutdown && !synced;
        let (mut segment, dma, cut) =
            recover_segment(dir, base, active, verify_all, config, &mut report).await?;
        progress.advance(1);
        if let Some(expected) = expected_next {
            if segment.base_offset < expected {
                return Err(LogError::Corrupt {
                    file: segment.log_path.clone(),
                    position: 0,
                    reason: format!(
                        "segment starts at offset {} but the previous one ends at {expected}",
                        segment.base_offset
                    ),
                });
            }
        }
        expected_next = Some(segment.next_offset);
        let broken = !active && (cut || next_base.is_some_and(|nb| segment.next_offset != nb));
        if broken {
            delete_segments(dir, &bases[i + 1..], &mut report)?;
            sync_dir(dir).map_err(|e| LogError::io(dir, "syncing the directory", e))?;
        }
        if active || broken {
            segment.appender = Some(open_appender(&segment, dma, config).await?);
            segments.push_back(segment);
            break;
        }
        segments.push_back(segment);
    }
    progress.finish();
    debug_assert!(
        segments
            .iter()
            .zip(segments.iter().skip(1))
            .all(|(a, b)| a.base_offset <= a.next_offset && a.next_offset <= b.base_offset),
        "recovered segments are in offset order and do not overlap"
    );
    Ok((segments, report))
}

/// The base offsets of the segments in `dir`, ascending. Index files without their log (a
/// crash during retention or a roll) are removed.
fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| LogError::io(dir, "listing the log directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(dir, "listing the log directory", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_segment_file(name, "log") {
            bases.push(base);
        } else if let Some(base) =
            parse_segment_file(name, "index").or_else(|| parse_segment_file(name, "timeindex"))
        {
            index_files.push((base, entry.path()));
        }
    }
    bases.sort_unstable();
    for (base, path) in index_files {
        if bases.binary_search(&base).is_err() {
            tracing::warn!(file = %path.display(), "removing an index without its segment");
            std::fs::remove_file(&path)
                .map_err(|e| LogError::io(&path, "removing an orphan index", e))?;
        }
    }
    Ok(bases)
}

/// Deletes the segments at `bases` (they follow a cut or short one: the log must stay
/// contiguous) and records them in the report. The caller syncs the directory.
fn delete_segments(dir: &Path, bases: &[i64], report: &mut RecoveryReport) -> Result<(), LogError> {
    for later in bases {
        for ext in ["log", "index", "timeindex"] {
            let path = segment_file(dir, *later, ext);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(LogError::io(path, "deleting a segment after a cut", e));
                }
            }
        }
        tracing::warn!(
            file = %segment_file(dir, *later, "log").display(),
            "deleting a segment that follows a cut one"
        );
        report.deleted_segments.push(*later);
    }
    Ok(())
}

/// Starts the writer of the active segment on `dma`, the segment's O_DIRECT handle.
async fn open_appender(
    segment: &Segment,
    dma: Rc<DmaFile>,
    config: &LogConfig,
) -> Result<SegmentAppender, LogError> {
    SegmentAppender::open(
        dma,
        &segment.scan,
        &segment.log_path,
        segment.size_bytes,
        config,
    )
    .await
    .map_err(|e| LogError::io(&segment.log_path, "starting the appender", e))
}

/// Recovers one segment: opens its files, takes or rebuilds its indexes, verifies its
/// batches from the last trusted point, and cuts what follows the last good batch. Returns
/// the segment (no appender yet), its O_DIRECT handle, and whether bytes were cut.
async fn recover_segment(
    dir: &Path,
    base: i64,
    active: bool,
    verify_all: bool,
    config: &LogConfig,
    report: &mut RecoveryReport,
) -> Result<(Segment, Rc<DmaFile>, bool), LogError> {
    let log_path = segment_file(dir, base, "log");
    let (dma, scan_file, file_len) = open_segment_files(dir, &log_path).await?;
    // Trust the indexes of sealed segments, and of the active one after a clean close.
    let trust = !verify_all;
    let indexes = if trust {
        load_indexes(dir, base, file_len)?
    } else {
        None
    };
    let rebuilt = indexes.is_none();
    let (index, time_index) = match indexes {
        Some(pair) => pair,
        None => {
            let pair = create_indexes(dir, base)?;
            if trust {
                report
                    .rebuilt_indexes
                    .push(segment_file(dir, base, "index"));
            }
            pair
        }
    };
    let mut segment = Segment {
        base_offset: base,
        log_path,
        scan: Rc::new(scan_file),
        index,
        time_index,
        size_bytes: 0,
        next_offset: base,
        max_timestamp_ms: -1,
        max_timestamp_offset: -1,
        rolling_timestamp_ms: None,
        bytes_since_index: 0,
        appender: None,
    };
    let (end, first_max_timestamp) =
        scan_segment(&mut segment, rebuilt, active, file_len, config).await?;
    let cut = cut_tail(&segment, &dma, &end, file_len, active, trust, report).await?;
    finish_indexes(&mut segment, rebuilt, active, first_max_timestamp, dir)?;
    Ok((segment, dma, cut))
}

/// Opens a segment's `.log`: its O_DIRECT handle (the appender's, and for a cut), its
/// buffered read handle, and its length on disk.
async fn open_segment_files(
    dir: &Path,
    log_path: &Path,
) -> Result<(Rc<DmaFile>, BufferedFile, u64), LogError> {
    super::iopoll_probe::prepare(dir).await;
    let dma = DmaOpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(log_path)
        .await
        .map_err(|e| LogError::io(log_path, "opening the segment", e.into()))?;
    let scan_file = BufferedFile::open(log_path)
        .await
        .map_err(|e| LogError::io(log_path, "opening the segment for reads", e.into()))?;
    let file_len = std::fs::metadata(log_path)
        .map_err(|e| LogError::io(log_path, "reading the segment size", e))?
        .len();
    Ok((Rc::new(dma), scan_file, file_len))
}

/// The segment's indexes as found on disk, or `None` (with the reason logged) when either
/// fails its sanity check and both must be rebuilt.
fn load_indexes(
    dir: &Path,
    base: i64,
    file_len: u64,
) -> Result<Option<(OffsetIndex, TimeIndex)>, LogError> {
    let index_path = segment_file(dir, base, "index");
    let time_path = segment_file(dir, base, "timeindex");
    let index = OffsetIndex::load(&index_path, file_len)
        .map_err(|e| LogError::io(&index_path, "reading the index", e))?;
    let time = TimeIndex::load(&time_path, u32::MAX as u64)
        .map_err(|e| LogError::io(&time_path, "reading the time index", e))?;
    match (index, time) {
        (Ok(i), Ok(t)) => Ok(Some((i, t))),
        (i, t) => {
            for (path, result) in [(&index_path, i.err()), (&time_path, t.err())] {
                if let Some(reason) = result {
                    tracing::warn!(file = %path.display(), %reason, "rebuilding the index");
                }
            }
            Ok(None)
        }
    }
}

/// Empty indexes for a segment whose indexes are rebuilt by the scan.
fn create_indexes(dir: &Path, base: i64) -> Result<(OffsetIndex, TimeIndex), LogError> {
    let index_path = segment_file(dir, base, "index");
    let time_path = segment_file(dir, base, "timeindex");
    let index = OffsetIndex::create(&index_path)
        .map_err(|e| LogError::io(&index_path, "creating the index", e))?;
    let time = TimeIndex::create(&time_path)
        .map_err(|e| LogError::io(&time_path, "creating the time index", e))?;
    Ok((index, time))
}

/// Verifies the segment's batches from its last index entry (or its start when the indexes
/// are rebuilt) and brings its size, next offset, timestamps and, when `rebuilt`, indexes up
/// to the last good batch. Returns where the scan stopped and the first batch's
/// maxTimestamp (when the scan started at position 0).
async fn scan_segment(
    segment: &mut Segment,
    rebuilt: bool,
    active: bool,
    file_len: u64,
    config: &LogConfig,
) -> Result<(ScanEnd, Option<i64>), LogError> {
    let base = segment.base_offset;
    // The entry's offset is where a batch starts, so the scan knows the offset to expect there.
    let (scan_from, expect) = match segment.index.last() {
        Some(e) if !rebuilt => (e.position as u64, base + e.relative_offset as i64),
        _ => (0, base),
    };
    if let Some(last) = segment.time_index.entries().last() {
        segment.max_timestamp_ms = last.timestamp_ms;
        segment.max_timestamp_offset = base + last.relative_offset as i64;
    }
    segment.size_bytes = scan_from;
    segment.next_offset = expect;
    let interval = config.index_interval_bytes;
    let mut first_max_timestamp = None;
    let scan_file = segment.scan.clone();
    let log_path = segment.log_path.clone();
    let limit = config.max_batch_bytes.max(RECOVERY_MIN_BATCH_LIMIT_BYTES);
    let end = scan(
        &scan_file,
        &log_path,
        limit,
        file_len,
        scan_from,
        expect,
        // A compacted log's active segment may hold a follower's copies of cleaned batches.
        !active || config.cleanup.compact,
        |pos, h| {
            debug_assert!(
                h.base_offset >= base,
                "a segment's base offset is at most every offset it holds"
            );
            if rebuilt {
                segment.add_batch(h, pos, interval);
            } else {
                // Indexes are kept; only follow size, offsets and timestamps.
                if h.max_timestamp > segment.max_timestamp_ms || segment.max_timestamp_offset < 0 {
                    segment.max_timestamp_ms = h.max_timestamp;
                    segment.max_timestamp_offset = h.base_offset;
                }
                segment.size_bytes = pos + h.total_bytes();
                segment.next_offset = h.next_offset();
            }
            if first_max_timestamp.is_none() && pos == 0 {
                first_max_timestamp = Some(h.max_timestamp);
            }
        },
    )
    .await?;
    if !rebuilt {
        // The index stays; entries past the scan start cannot exist (it started at the last),
        // and the bytes since that entry count toward the next one.
        segment.bytes_since_index = segment.size_bytes - scan_from;
    }
    if end.valid_end != segment.size_bytes {
        return Err(LogError::Corrupt {
            file: log_path,
            position: end.valid_end,
            reason: "scan and segment size disagree".into(),
        });
    }
    Ok((end, first_max_timestamp))
}

/// Decides what happens to the bytes after the last good batch: zeros (padding,
/// preallocation) are dropped silently, anything else is a torn or corrupt tail that is cut
/// and reported, except in a trusted sealed segment, where it is an error. True if a tail
/// that was not zeros was cut.
async fn cut_tail(
    segment: &Segment,
    dma: &DmaFile,
    end: &ScanEnd,
    file_len: u64,
    active: bool,
    trust: bool,
    report: &mut RecoveryReport,
) -> Result<bool, LogError> {
    if end.valid_end >= file_len {
        return Ok(false);
    }
    let log_path = &segment.log_path;
    let zeros = end.problem.is_none()
        && only_zeros(&segment.scan, log_path, end.valid_end, file_len).await?;
    let problem = || {
        end.problem
            .clone()
            .unwrap_or_else(|| "non-zero bytes after the last batch".into())
    };
    if !active && !zeros && trust {
        return Err(LogError::Corrupt {
            file: log_path.clone(),
            position: end.valid_end,
            reason: format!("sealed segment has a bad batch: {}", problem()),
        });
    }
    if !zeros {
        let reason = problem();
        tracing::warn!(
            file = %log_path.display(),
            position = end.valid_end,
            bytes_removed = file_len - end.valid_end,
            offset = segment.next_offset,
            %reason,
            "truncating a torn or corrupt tail"
        );
        report.truncations.push(Truncation {
            file: log_path.clone(),
            position: end.valid_end,
            bytes_removed: file_len - end.valid_end,
            reason,
        });
    }
    dma.truncate(end.valid_end)
        .await
        .map_err(|e| LogError::io(log_path, "truncating the log", e.into()))?;
    Ok(!zeros)
}

/// Writes the rebuilt index, seals the time index of a sealed segment, and sets the time the
/// segment's age counts from.
fn finish_indexes(
    segment: &mut Segment,
    rebuilt: bool,
    active: bool,
    first_max_timestamp: Option<i64>,
    dir: &Path,
) -> Result<(), LogError> {
    let base = segment.base_offset;
    if rebuilt {
        segment.index.sync().map_err(|e| {
            LogError::io(
                segment_file(dir, base, "index"),
                "writing the rebuilt index",
                e,
            )
        })?;
    }
    if !active {
        segment.seal_time_index();
    }
    segment.time_index.sync().map_err(|e| {
        LogError::io(
            segment_file(dir, base, "timeindex"),
            "writing the time index",
            e,
        )
    })?;
    segment.rolling_timestamp_ms = first_max_timestamp.or(segment.rolling_timestamp_ms);
    if segment.rolling_timestamp_ms.is_none() && !segment.is_empty() {
        segment.rolling_timestamp_ms = Some(super::segment::now_ms());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The log start read at open: the file's when sane, else the first segment's base, never
    //! past the log end; a garbled file is ignored (records come back, none is lost).
    use super::*;

    #[test]
    fn log_start_read_at_open_prefers_the_file_within_the_log() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_log_start(dir.path(), 5, 100),
            5,
            "no file: the first base"
        );
        write_offset_file(dir.path(), LOG_START_OFFSET_FILE, 42).unwrap();
        assert_eq!(read_log_start(dir.path(), 5, 100), 42);
        assert_eq!(
            read_log_start(dir.path(), 50, 100),
            50,
            "segments deleted past it"
        );
        assert_eq!(
            read_log_start(dir.path(), 5, 30),
            30,
            "never past the log end"
        );
        std::fs::write(dir.path().join(LOG_START_OFFSET_FILE), b"garbage").unwrap();
        assert_eq!(read_log_start(dir.path(), 5, 100), 5);
    }
}
