//! Cutting a log back to an offset: what a follower does when its log diverged from its
//! leader's (the leader-epoch check said where the two part). Rare and never on the produce
//! path, so it works on the closed files and lets [`super::recovery`] reopen them:
//!
//! 1. the log is closed (everything written and synced, indexes sealed);
//! 2. segments starting at or after the cut are deleted;
//! 3. the segment holding the cut is cut at the start of the batch holding the offset (a
//!    batch is never split: the follower fetches what it lost again), and its indexes are
//!    deleted so recovery rebuilds them;
//! 4. the clean-shutdown marker goes and the recovery point moves down to that segment, so
//!    recovery verifies it; producer snapshots above the new end go (their batches are cut);
//! 5. the log opens again.
//!
//! [`restart_closed_log_at`] empties a log instead, for a follower that fell behind its
//! leader's log start.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::blocking;
use super::error::LogError;
use super::log::PartitionLog;
use super::producer_snapshot;
use super::record_batch::{BatchHeader, HEADER_BYTES};
use super::recovery::{write_recovery_point, CLEAN_SHUTDOWN_FILE};
use super::segment::{parse_segment_file, segment_file};
use tuning::fs::sync_dir;

/// What a cut removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The log now ends here (<= the offset asked for: a batch is kept or dropped whole);
    /// set once the log reopened.
    pub end_offset: i64,
    pub segments_deleted: usize,
    pub bytes_removed: u64,
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl Fn(std::io::Error) -> LogError + 'a {
    move |err| LogError::io(path, what, err)
}

/// The base offsets of the segments in `dir`, oldest first.
fn segment_bases(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .map_err(io(dir, "listing the log directory"))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| parse_segment_file(entry.file_name().to_str()?, "log"))
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

/// The next open must verify the files: the log is being changed under it.
fn remove_clean_shutdown_marker(dir: &Path) -> Result<(), LogError> {
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(io(&marker, "removing the clean-shutdown marker"))?;
    }
    Ok(())
}

/// Deletes the three files of the segment at `base` (those that exist).
fn remove_segment_files(dir: &Path, base: i64) -> Result<(), LogError> {
    for extension in ["log", "index", "timeindex"] {
        let path = segment_file(dir, base, extension);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(LogError::io(&path, "deleting a segment", err)),
        }
    }
    Ok(())
}

/// Cuts the closed log in `dir` so that it ends before the batch holding `offset`.
pub fn cut_closed_log(dir: &Path, offset: i64) -> Result<Cut, LogError> {
    let mut bases = segment_bases(dir)?;
    let mut cut = Cut {
        end_offset: offset,
        segments_deleted: 0,
        bytes_removed: 0,
    };
    remove_clean_shutdown_marker(dir)?;
    // Segments wholly at or after the cut go, newest first (a crash midway leaves a prefix).
    // The first segment stays even when empty: the log needs one.
    while bases.len() > 1 && *bases.last().expect("non-empty") >= offset {
        let base = bases.pop().expect("non-empty");
        cut.bytes_removed +=
            std::fs::metadata(segment_file(dir, base, "log")).map_or(0, |m| m.len());
        remove_segment_files(dir, base)?;
        cut.segments_deleted += 1;
    }
    // The newest remaining segment holds the cut.
    if let Some(&base) = bases.last() {
        let path = segment_file(dir, base, "log");
        let (position, end_offset) = batch_boundary(&path, base, offset)?;
        // Snapshots of producer state above the new end hold batches cut away.
        let snapshots =
            producer_snapshot::list(dir).map_err(io(dir, "listing producer snapshots"))?;
        let above: Vec<i64> = snapshots.into_iter().filter(|&o| o > end_offset).collect();
        producer_snapshot::remove(dir, &above)
            .map_err(io(dir, "deleting producer snapshots above the cut"))?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path, "opening a segment to cut it"))?;
        let length = file
            .metadata()
            .map_err(io(&path, "reading a segment's size"))?
            .len();
        if position < length {
            file.set_len(position)
                .map_err(io(&path, "cutting a segment"))?;
            file.sync_all()
                .map_err(io(&path, "syncing a cut segment"))?;
            cut.bytes_removed += length - position;
        }
        for extension in ["index", "timeindex"] {
            let index = segment_file(dir, base, extension);
            match std::fs::remove_file(&index) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(LogError::io(&index, "deleting an index", err)),
            }
        }
        write_recovery_point(dir, base).map_err(io(dir, "writing the recovery point"))?;
    }
    sync_dir(dir).map_err(io(dir, "syncing the log directory"))?;
    Ok(cut)
}

/// The byte position of the first batch of the segment at `path` (based at `base_offset`)
/// whose last offset is at or after `offset` (the end of the data when there is none), and
/// the offset the log ends at when cut there.
fn batch_boundary(path: &Path, base_offset: i64, offset: i64) -> Result<(u64, i64), LogError> {
    let mut file = File::open(path).map_err(io(path, "opening a segment"))?;
    let length = file
        .metadata()
        .map_err(io(path, "reading a segment's size"))?
        .len();
    let mut position = 0u64;
    let mut end_offset = base_offset;
    let mut header = [0u8; HEADER_BYTES];
    while position + HEADER_BYTES as u64 <= length {
        file.seek(SeekFrom::Start(position))
            .map_err(io(path, "seeking in a segment"))?;
        file.read_exact(&mut header)
            .map_err(io(path, "reading a batch header"))?;
        let Some(batch) = BatchHeader::parse(&header) else {
            break;
        };
        // Zeros (preallocation) or garbage end the data, as recovery would decide.
        if batch.batch_length <= 0 || batch.magic != 2 {
            break;
        }
        if batch.last_offset() >= offset {
            return Ok((position, batch.base_offset));
        }
        position += batch.total_bytes();
        end_offset = batch.next_offset();
    }
    Ok((position.min(length), end_offset))
}

/// Empties the closed log in `dir` so that it starts and ends at `offset` (Kafka's
/// `truncateFullyAndStartAt`): for a follower whose leader no longer has the offsets it would
/// fetch next (DeleteRecords or retention moved the leader's start past its end). The new
/// start is written first, then the segments go newest first, then an empty segment at
/// `offset` is created: a crash midway leaves an older prefix (the fetcher asks again) or
/// an empty log.
pub fn restart_closed_log_at(dir: &Path, offset: i64) -> Result<(), LogError> {
    super::recovery::write_offset_file(dir, super::recovery::LOG_START_OFFSET_FILE, offset)
        .map_err(io(dir, "writing the log start offset"))?;
    remove_clean_shutdown_marker(dir)?;
    let bases = segment_bases(dir)?;
    for base in bases.into_iter().rev() {
        remove_segment_files(dir, base)?;
    }
    let snapshots = producer_snapshot::list(dir).map_err(io(dir, "listing producer snapshots"))?;
    producer_snapshot::remove(dir, &snapshots).map_err(io(dir, "deleting producer snapshots"))?;
    let cleaner = dir.join(super::compaction::CLEANER_CHECKPOINT_FILE);
    match std::fs::remove_file(&cleaner) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(LogError::io(
                &cleaner,
                "deleting the cleaner checkpoint",
                err,
            ))
        }
    }
    let path = segment_file(dir, offset, "log");
    File::create(&path)
        .and_then(|f| f.sync_all())
        .map_err(io(&path, "creating an empty segment"))?;
    write_recovery_point(dir, offset).map_err(io(dir, "writing the recovery point"))?;
    sync_dir(dir).map_err(io(dir, "syncing the log directory"))
}

impl PartitionLog {
    /// Empties this log so it starts and ends at `offset` ([`restart_closed_log_at`]) and
    /// returns it opened again (this one stays closed).
    pub async fn restarted_at(&self, offset: i64) -> Result<PartitionLog, LogError> {
        let dir = self.dir().to_path_buf();
        let config = self.config();
        self.close().await?;
        let d = dir.clone();
        blocking::run(move || restart_closed_log_at(&d, offset)).await?;
        let log = PartitionLog::open(dir, config).await?;
        debug_assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (offset, offset)
        );
        Ok(log)
    }

    /// Cuts this log back so it ends before the batch holding `offset`, and returns the log
    /// opened again (this one stays closed: readers holding it get
    /// [`LogError::Closed`]).
    pub async fn truncated(&self, offset: i64) -> Result<(PartitionLog, Cut), LogError> {
        let dir = self.dir().to_path_buf();
        let config = self.config();
        self.close().await?;
        let mut cut = cut_closed_log(&dir, offset)?;
        let log = PartitionLog::open(dir, config).await?;
        cut.end_offset = log.log_end_offset();
        debug_assert!(cut.end_offset <= offset.max(log.log_start_offset()));
        Ok((log, cut))
    }
}
