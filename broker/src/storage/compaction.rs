//! Log compaction, the IO part: [`PartitionLog::clean`] reads the dirty part of a log into an
//! offset map, rewrites sealed segments without their superseded records
//! ([`super::log_cleaner`] decides) and swaps the cleaned files in crash-safely.
//!
//! When: a log whose `cleanup.policy` contains `compact` is looked at every time the shard
//! runs retention (`retention_check_interval_ms`). The cleaner checkpoint file holds the
//! first dirty offset (everything below was cleaned at least once). The dirty part is the
//! sealed segments from there on whose newest batch is older than `min.compaction.lag.ms`;
//! the active segment is never touched. A pass starts when the dirty bytes are at least
//! `min.cleanable.dirty.ratio` of the clean plus dirty bytes. The offset map holds at most
//! [`OFFSET_MAP_MAX_BYTES`]; when it fills, the pass cleans up to the last mapped batch and
//! the next pass goes on from there.
//!
//! Where the work runs: reading, filtering, writing and fsyncing a segment run on glommio's
//! blocking thread pool, one segment per job, so the shard's reactor only does the swap's
//! renames and bookkeeping.
//!
//! The swap of one segment (`<base>` below), crash-safe at every step:
//! 1. `<base>.log.cleaned`, `.index.cleaned`, `.timeindex.cleaned` are written and fsync'ed;
//! 2. they are renamed to `.swap`, the log last, and the directory is fsync'ed: from the
//!    moment `<base>.log.swap` exists the swap is committed;
//! 3. the `.swap` files are renamed over the originals, indexes first, the log last, and the
//!    directory is fsync'ed; the shard's segment then uses the new files (reads that hold
//!    the old file keep reading it).
//!
//! At open ([`super::segment_swap::finish_interrupted_swaps`], before recovery) a
//! `<base>.log.swap` next to its `<base>.log` is completed (step 3 again); any other
//! `.cleaned` or `.swap` file is deleted, which rolls the swap back. Either way the segment is
//! whole: cleaned or as it was.
//!
//! Tombstones: a segment's file modification time is when a clean first rewrote it (a later
//! rewrite keeps it), or its last append if no clean had to rewrite it (Kafka's old rule used
//! the segment's modification time too); the tombstones of a segment below the checkpoint are
//! dropped once that is `delete.retention.ms` ago. A batch all of whose records go is dropped, except the last
//! batch of a segment and an idempotent producer's last batch, which stay as an empty
//! header: the segment keeps its end offset and the producer its sequence.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glommio::io::BufferedFile;

use super::blocking;
use super::error::LogError;
use super::log::PartitionLog;
use super::log_cleaner::OffsetMap;
use super::log_cleaner::{judge_batch, map_batch, write_cleaned_batch, BatchFate, CleanRules};
use super::offset_index::OffsetIndex;
use super::record_batch::{validate_stored_batch, BatchHeader, LOG_OVERHEAD};
use super::recovery::{read_offset_file, write_offset_file};
use super::segment::segment_file;
use super::segment_swap::{path_with, remove_segment_files, rename_segment_files};
use super::time_index::TimeIndex;
use tuning::fs::sync_dir;

/// Name of the file holding the first dirty offset (decimal).
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-checkpoint";
/// Upper bound of one pass's offset map (keys plus bookkeeping), bytes.
pub const OFFSET_MAP_MAX_BYTES: usize = 64 << 20;
/// Test hook: when set (milliseconds), a swap sleeps this long after each of its rename
/// steps, so a test can kill the process in the middle of one.
pub const SWAP_PAUSE_ENV: &str = "STREAMBOX_CLEANER_SWAP_PAUSE_MS";
/// Batches up to this size are accepted when a clean reads a segment (as recovery does).
const CLEAN_BATCH_LIMIT_BYTES: u32 = 128 << 20;

/// What a clean did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanOutcome {
    /// Base offsets of the segments replaced by cleaned ones.
    pub cleaned_segments: Vec<i64>,
    /// Records removed (superseded values and expired tombstones).
    pub removed_records: u64,
    /// Bytes of the replaced segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The first dirty offset after the pass (the cleaner checkpoint).
    pub clean_offset: i64,
}

/// A sealed segment as the pass found it.
struct Planned {
    base_offset: i64,
    next_offset: i64,
    size_bytes: u64,
    max_timestamp_ms: i64,
    log_path: PathBuf,
    /// Identity of the segment's file: the swap only happens if the segment still has it.
    scan: Rc<BufferedFile>,
}

fn swap_pause() {
    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        std::env::var(SWAP_PAUSE_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    });
    if let Some(d) = pause {
        std::thread::sleep(*d);
    }
}

/// A batch read by [`BatchReader`]: its position, header and bytes.
type ReadBatch<'a> = (u64, BatchHeader, &'a [u8]);

/// Reads the whole batches of `[0, size_bytes)` of a segment file in order.
struct BatchReader {
    reader: BufReader<File>,
    path: PathBuf,
    pos: u64,
    size_bytes: u64,
    batch: Vec<u8>,
}

impl BatchReader {
    fn open(path: &Path, size_bytes: u64) -> Result<BatchReader, LogError> {
        let file =
            File::open(path).map_err(|e| LogError::io(path, "opening a segment to clean", e))?;
        Ok(BatchReader {
            reader: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            pos: 0,
            size_bytes,
            batch: Vec::new(),
        })
    }

    /// The next batch (its position, header and bytes), `None` at the end.
    fn next_batch(&mut self) -> Result<Option<ReadBatch<'_>>, LogError> {
        if self.pos >= self.size_bytes {
            return Ok(None);
        }
        let io = |e| LogError::io(&self.path, "reading a segment to clean", e);
        self.batch.resize(LOG_OVERHEAD, 0);
        self.reader.read_exact(&mut self.batch).map_err(io)?;
        let length =
            i32::from_be_bytes([self.batch[8], self.batch[9], self.batch[10], self.batch[11]]);
        let total = LOG_OVERHEAD as u64 + length.max(0) as u64;
        if total > CLEAN_BATCH_LIMIT_BYTES as u64 || self.pos + total > self.size_bytes {
            return Err(self.corrupt(format!("batch claims {total} bytes")));
        }
        self.batch.resize(total as usize, 0);
        self.reader
            .read_exact(&mut self.batch[LOG_OVERHEAD..])
            .map_err(|e| LogError::io(&self.path, "reading a segment to clean", e))?;
        let header = validate_stored_batch(&self.batch, self.pos as usize, CLEAN_BATCH_LIMIT_BYTES)
            .map_err(|e| self.corrupt(e.to_string()))?;
        let pos = self.pos;
        self.pos += total;
        Ok(Some((pos, header, &self.batch)))
    }

    fn corrupt(&self, reason: String) -> LogError {
        LogError::Corrupt {
            file: self.path.clone(),
            position: self.pos,
            reason,
        }
    }
}

/// Maps the batches of `segments` (path, size) from offset `from` until offset `end` or until
/// the map is full. Returns the map and the offset below which it covers every keyed record.
fn build_map(
    segments: Vec<(PathBuf, u64)>,
    from: i64,
    end: i64,
) -> Result<(OffsetMap, i64), LogError> {
    let mut map = OffsetMap::new(OFFSET_MAP_MAX_BYTES);
    for (path, size) in segments {
        let mut reader = BatchReader::open(&path, size)?;
        while let Some((pos, header, bytes)) = reader.next_batch()? {
            if header.next_offset() <= from {
                continue;
            }
            if header.base_offset >= end {
                return Ok((map, end));
            }
            let complete =
                map_batch(&mut map, bytes, &header).map_err(|reason| LogError::Corrupt {
                    file: path.clone(),
                    position: pos,
                    reason,
                })?;
            if !complete {
                return Ok((map, header.base_offset));
            }
        }
    }
    Ok((map, end))
}

/// One segment's clean, run on the blocking pool.
struct SegmentJob {
    log_path: PathBuf,
    base_offset: i64,
    size_bytes: u64,
    map: Arc<OffsetMap>,
    map_end: i64,
    drop_tombstones: bool,
    /// Idempotent producers' last offsets: their last batch stays even when emptied.
    producer_last_offsets: Arc<HashMap<i64, i64>>,
    /// Modification time the cleaned file gets (the first clean's time), `None` for now.
    cleaned_at: Option<SystemTime>,
    index_interval_bytes: u32,
}

/// A segment written as `.cleaned` files.
struct CleanedSegment {
    size_bytes: u64,
    removed_records: u64,
    max_timestamp_ms: i64,
    max_timestamp_offset: i64,
}

impl SegmentJob {
    /// Writes the cleaned files; `None` (and no files) if nothing would be removed.
    fn run(self) -> Result<Option<CleanedSegment>, LogError> {
        let base = self.base_offset;
        let out_path = path_with(&self.log_path, "cleaned");
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        let index_path = path_with(&segment_file(dir, base, "index"), "cleaned");
        let time_path = path_with(&segment_file(dir, base, "timeindex"), "cleaned");
        let result = self.write(&out_path, &index_path, &time_path);
        if !matches!(result, Ok(Some(_))) {
            for p in [&out_path, &index_path, &time_path] {
                let _ = std::fs::remove_file(p);
            }
        }
        result
    }

    fn write(
        &self,
        out_path: &Path,
        index_path: &Path,
        time_path: &Path,
    ) -> Result<Option<CleanedSegment>, LogError> {
        let base = self.base_offset;
        let rel = |offset: i64| {
            debug_assert!(offset >= base && offset - base <= u32::MAX as i64);
            (offset - base) as u32
        };
        let out_file = File::create(out_path)
            .map_err(|e| LogError::io(out_path, "creating a cleaned segment", e))?;
        let mut out = BufWriter::with_capacity(1 << 20, out_file);
        let mut index = OffsetIndex::create(index_path)
            .map_err(|e| LogError::io(index_path, "creating a cleaned index", e))?;
        let mut time_index = TimeIndex::create(time_path)
            .map_err(|e| LogError::io(time_path, "creating a cleaned time index", e))?;
        let rules = CleanRules {
            map: &self.map,
            map_end: self.map_end,
            drop_tombstones: self.drop_tombstones,
        };
        let mut reader = BatchReader::open(&self.log_path, self.size_bytes)?;
        let mut written = 0u64;
        let mut removed = 0u64;
        let mut since_index = 0u64;
        let (mut max_ts, mut max_ts_offset) = (-1i64, -1i64);
        let mut cleaned = Vec::new();
        while let Some((pos, header, bytes)) = reader.next_batch()? {
            let fate = judge_batch(bytes, &header, &rules).map_err(|reason| LogError::Corrupt {
                file: self.log_path.clone(),
                position: pos,
                reason,
            })?;
            let batch: &[u8] = match fate {
                BatchFate::Whole => bytes,
                BatchFate::Rewritten { kept, removed: n } => {
                    removed += n as u64;
                    let last_of_segment = pos + header.total_bytes() == self.size_bytes;
                    let last_of_producer = header.producer_id >= 0
                        && self.producer_last_offsets.get(&header.producer_id)
                            == Some(&header.last_offset());
                    if kept.is_empty() && !last_of_segment && !last_of_producer {
                        continue;
                    }
                    cleaned.clear();
                    write_cleaned_batch(bytes, &header, &kept, &mut cleaned);
                    &cleaned
                }
            };
            if since_index > self.index_interval_bytes as u64 {
                index.append(rel(header.base_offset), written as u32);
                time_index.maybe_append(max_ts, rel(max_ts_offset));
                since_index = 0;
            }
            if header.max_timestamp > max_ts || max_ts_offset < 0 {
                max_ts = header.max_timestamp;
                max_ts_offset = header.base_offset;
            }
            out.write_all(batch)
                .map_err(|e| LogError::io(out_path, "writing a cleaned segment", e))?;
            since_index += batch.len() as u64;
            written += batch.len() as u64;
        }
        if removed == 0 {
            return Ok(None);
        }
        if max_ts_offset >= 0 {
            time_index.maybe_append(max_ts, rel(max_ts_offset));
        }
        let file = out
            .into_inner()
            .map_err(|e| LogError::io(out_path, "writing a cleaned segment", e.into_error()))?;
        if let Some(t) = self.cleaned_at {
            file.set_modified(t)
                .map_err(|e| LogError::io(out_path, "keeping the first clean's time", e))?;
        }
        file.sync_all()
            .map_err(|e| LogError::io(out_path, "syncing a cleaned segment", e))?;
        index
            .sync()
            .map_err(|e| LogError::io(index_path, "syncing a cleaned index", e))?;
        time_index
            .sync()
            .map_err(|e| LogError::io(time_path, "syncing a cleaned time index", e))?;
        Ok(Some(CleanedSegment {
            size_bytes: written,
            removed_records: removed,
            max_timestamp_ms: max_ts,
            max_timestamp_offset: max_ts_offset,
        }))
    }
}

fn system_time_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// One compaction pass at `now_ms` (milliseconds since the epoch) if the log's
    /// `cleanup.policy` contains `compact` and enough of it is dirty; see the module
    /// documentation. Returns what it replaced (nothing when no pass was due).
    pub async fn clean(&self, now_ms: i64) -> Result<CleanOutcome, LogError> {
        let inner = &self.inner;
        let config = inner.config.get();
        let dir = inner.dir.clone();
        let (planned, log_start) = {
            let st = inner.state.borrow();
            if st.closed {
                return Err(LogError::Closed);
            }
            let sealed = st.segments.len().saturating_sub(1);
            let planned: Vec<Planned> = st
                .segments
                .iter()
                .take(sealed)
                .map(|s| {
                    debug_assert!(s.appender.is_none(), "only the active segment appends");
                    Planned {
                        base_offset: s.base_offset,
                        next_offset: s.next_offset,
                        size_bytes: s.size_bytes,
                        max_timestamp_ms: s.max_timestamp_ms,
                        log_path: s.log_path.clone(),
                        scan: s.scan.clone(),
                    }
                })
                .collect();
            (planned, st.log_start_offset)
        };
        let checkpoint = read_offset_file(&dir, CLEANER_CHECKPOINT_FILE)
            .unwrap_or(log_start)
            .max(log_start);
        let mut outcome = CleanOutcome {
            clean_offset: checkpoint,
            ..CleanOutcome::default()
        };
        if !config.cleanup.compact {
            return Ok(outcome);
        }
        // Dirty: sealed segments past the checkpoint, old enough for the compaction lag.
        let dirty: Vec<&Planned> = planned
            .iter()
            .filter(|s| s.next_offset > checkpoint)
            .take_while(|s| {
                now_ms.saturating_sub(s.max_timestamp_ms) >= config.min_compaction_lag_ms
            })
            .collect();
        let Some(last_dirty) = dirty.last() else {
            return Ok(outcome);
        };
        let dirty_end = last_dirty.next_offset;
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size_bytes).sum();
        let clean_bytes: u64 = planned
            .iter()
            .filter(|s| s.next_offset <= checkpoint)
            .map(|s| s.size_bytes)
            .sum();
        let ratio_ppm =
            dirty_bytes as u128 * 1_000_000 / (dirty_bytes + clean_bytes).max(1) as u128;
        if ratio_ppm < config.min_cleanable_dirty_ratio_ppm as u128 {
            return Ok(outcome);
        }
        let to_map: Vec<(PathBuf, u64)> = dirty
            .iter()
            .map(|s| (s.log_path.clone(), s.size_bytes))
            .collect();
        let (map, map_end) =
            blocking::run(move || build_map(to_map, checkpoint, dirty_end)).await?;
        if map_end <= checkpoint {
            return Ok(outcome);
        }
        let map = Arc::new(map);
        let producer_last_offsets: Arc<HashMap<i64, i64>> =
            Arc::new(inner.producers.borrow().last_offsets());
        let to_clean: Vec<&Planned> = planned.iter().filter(|s| s.base_offset < map_end).collect();
        let mut progress = tuning::progress::Progress::new(
            format!("compacting {}", dir.display()),
            "segments",
            to_clean.len() as u64,
        );
        for seg in to_clean {
            progress.advance(1);
            let previously_cleaned = seg.next_offset <= checkpoint;
            let modified = std::fs::metadata(&seg.log_path)
                .and_then(|m| m.modified())
                .map_err(|e| LogError::io(&seg.log_path, "reading the segment's clean time", e))?;
            let drop_tombstones = previously_cleaned
                && config.delete_retention_ms >= 0
                && now_ms.saturating_sub(system_time_ms(modified)) > config.delete_retention_ms;
            let job = SegmentJob {
                log_path: seg.log_path.clone(),
                base_offset: seg.base_offset,
                size_bytes: seg.size_bytes,
                map: map.clone(),
                map_end,
                drop_tombstones,
                producer_last_offsets: producer_last_offsets.clone(),
                cleaned_at: previously_cleaned.then_some(modified),
                index_interval_bytes: config.index_interval_bytes,
            };
            let Some(cleaned) = blocking::run(move || job.run()).await? else {
                continue;
            };
            if self.swap_in(seg, &cleaned).await? {
                outcome.cleaned_segments.push(seg.base_offset);
                outcome.removed_records += cleaned.removed_records;
                outcome.bytes_before += seg.size_bytes;
                outcome.bytes_after += cleaned.size_bytes;
            }
            glommio::yield_if_needed().await;
        }
        progress.finish();
        let dir_owned = dir.clone();
        blocking::run(move || write_offset_file(&dir_owned, CLEANER_CHECKPOINT_FILE, map_end))
            .await
            .map_err(|e| LogError::io(&dir, "writing the cleaner checkpoint", e))?;
        outcome.clean_offset = map_end;
        if !outcome.cleaned_segments.is_empty() {
            tracing::info!(
                dir = %dir.display(),
                segments = outcome.cleaned_segments.len(),
                removed_records = outcome.removed_records,
                bytes_before = outcome.bytes_before,
                bytes_after = outcome.bytes_after,
                "compacted"
            );
        }
        Ok(outcome)
    }

    /// Swaps the cleaned files of `seg` in (module documentation, steps 2 and 3) if the log
    /// still has that segment as planned; otherwise drops them. True if swapped.
    async fn swap_in(&self, seg: &Planned, cleaned: &CleanedSegment) -> Result<bool, LogError> {
        let inner = &self.inner;
        let dir = inner.dir.clone();
        let base = seg.base_offset;
        let cleaned_log = path_with(&seg.log_path, "cleaned");
        // The handle on the new file, opened before the rename (it follows the inode).
        let scan = BufferedFile::open(&cleaned_log)
            .await
            .map_err(|e| LogError::io(&cleaned_log, "opening a cleaned segment", e.into()))?;
        // Step 2: commit.
        let d = dir.clone();
        blocking::run(move || {
            rename_segment_files(&d, base, "cleaned", "swap")?;
            sync_dir(&d).map_err(|e| LogError::io(&d, "syncing the directory", e))?;
            swap_pause();
            Ok::<(), LogError>(())
        })
        .await?;
        // Step 3, with the shard's view of the segment, without awaiting in between.
        let swapped = {
            let mut st = inner.state.borrow_mut();
            let sealed = st.segments.len().saturating_sub(1);
            let found = st
                .segments
                .iter()
                .take(sealed)
                .position(|s| s.base_offset == base && Rc::ptr_eq(&s.scan, &seg.scan));
            match found {
                Some(i) if !st.closed => {
                    debug_assert_eq!(st.segments[i].size_bytes, seg.size_bytes);
                    rename_segment_files(&dir, base, "swap", "")?;
                    let index_path = segment_file(&dir, base, "index");
                    let time_path = segment_file(&dir, base, "timeindex");
                    let index = OffsetIndex::load(&index_path, cleaned.size_bytes)
                        .map_err(|e| LogError::io(&index_path, "loading a cleaned index", e))?
                        .map_err(|reason| LogError::Corrupt {
                            file: index_path.clone(),
                            position: 0,
                            reason,
                        })?;
                    let time_index = TimeIndex::load(&time_path, u32::MAX as u64)
                        .map_err(|e| LogError::io(&time_path, "loading a cleaned time index", e))?
                        .map_err(|reason| LogError::Corrupt {
                            file: time_path.clone(),
                            position: 0,
                            reason,
                        })?;
                    let s = &mut st.segments[i];
                    s.scan = Rc::new(scan);
                    s.index = index;
                    s.time_index = time_index;
                    s.size_bytes = cleaned.size_bytes;
                    s.max_timestamp_ms = cleaned.max_timestamp_ms;
                    s.max_timestamp_offset = cleaned.max_timestamp_offset;
                    true
                }
                _ => {
                    // Retention, a truncation or a close got there first.
                    remove_segment_files(&dir, base, "swap");
                    false
                }
            }
        };
        let d = dir.clone();
        blocking::run(move || {
            swap_pause();
            sync_dir(&d)
        })
        .await
        .map_err(|e| LogError::io(&dir, "syncing the directory", e))?;
        Ok(swapped)
    }
}
