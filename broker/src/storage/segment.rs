//! One segment of a partition log: `<base>.log` with its `<base>.index` and `<base>.timeindex`,
//! named by the 20-digit, zero-padded base offset as Kafka names them.
//!
//! A segment knows its size, its next offset and its largest timestamp; it keeps the sparse
//! indexes up to date as batches are added. Only the last (active) segment has an appender;
//! the others are sealed: their `.log` was truncated to its logical size and everything was
//! fdatasync'ed when they rolled.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use glommio::io::{BufferedFile, DmaFile, OpenOptions as DmaOpenOptions};

use super::blocking;
use super::error::LogError;
use super::iopoll_probe;
use super::log_config::LogConfig;
use super::offset_index::OffsetIndex;
use super::record_batch::BatchHeader;
use super::segment_appender::SegmentAppender;
use super::time_index::TimeIndex;
use tuning::fs::sync_dir;

/// Milliseconds since the Unix epoch, the clock Kafka timestamps and segment rolling use.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// File name of a segment file: `{base_offset:020}.{extension}`.
pub fn segment_file(dir: &Path, base_offset: i64, extension: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{extension}"))
}

/// The base offset named by a segment file name such as `00000000000000001234.log`.
pub fn parse_segment_file(name: &str, extension: &str) -> Option<i64> {
    let stem = name.strip_suffix(extension)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// One segment. Fields are the log's bookkeeping; files are owned here. A sealed segment holds
/// one open descriptor of its `.log` (`scan`); the active one a second, O_DIRECT, in its
/// appender. Index files come from a bounded cache of handles.
pub(crate) struct Segment {
    pub base_offset: i64,
    pub log_path: PathBuf,
    /// Buffered read handle: the engine's own reads through io_uring (header scans,
    /// recovery), and the descriptor handed out in [`super::FileRange`]s for splice/sendfile
    /// and pread. Reads go through the page cache, which direct writes keep coherent.
    pub scan: Rc<BufferedFile>,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Logical size in bytes, including appended bytes not yet written.
    pub size_bytes: u64,
    /// Offset after the last batch (== base offset while empty).
    pub next_offset: i64,
    /// Largest batch maxTimestamp seen, and the base offset of that batch (-1 while empty).
    pub max_timestamp_ms: i64,
    pub max_timestamp_offset: i64,
    /// Time the segment's age is counted from for `segment_ms`: wall clock of its first
    /// append, or the first batch's maxTimestamp for a segment found on disk.
    pub rolling_timestamp_ms: Option<i64>,
    pub bytes_since_index: u64,
    pub appender: Option<SegmentAppender>,
}

impl Segment {
    /// Creates the files of a new, empty active segment at `base_offset`.
    pub(crate) async fn create(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
    ) -> Result<Segment, LogError> {
        let log_path = segment_file(dir, base_offset, "log");
        iopoll_probe::prepare(dir).await;
        let dma = DmaOpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&log_path)
            .await
            .map_err(|e| LogError::io(&log_path, "creating the segment", e.into()))?;
        let dma = Rc::new(dma);
        let scan = BufferedFile::open(&log_path)
            .await
            .map_err(|e| LogError::io(&log_path, "opening the segment for reads", e.into()))?;
        let index_path = segment_file(dir, base_offset, "index");
        let index = OffsetIndex::create(&index_path)
            .map_err(|e| LogError::io(&index_path, "creating the index", e))?;
        let time_path = segment_file(dir, base_offset, "timeindex");
        let time_index = TimeIndex::create(&time_path)
            .map_err(|e| LogError::io(&time_path, "creating the time index", e))?;
        // The new name must be durable before anything in the file is acknowledged as synced.
        // A directory fsync commits the file system journal, which can take long while other
        // data is being flushed: run it off the shard's thread.
        let dir_owned = dir.to_path_buf();
        blocking::run(move || sync_dir(&dir_owned))
            .await
            .map_err(|e| LogError::io(dir, "syncing the directory", e))?;
        let appender = SegmentAppender::open(dma, &scan, &log_path, 0, config)
            .await
            .map_err(|e| LogError::io(&log_path, "starting the appender", e))?;
        Ok(Segment {
            base_offset,
            log_path,
            scan: Rc::new(scan),
            index,
            time_index,
            size_bytes: 0,
            next_offset: base_offset,
            max_timestamp_ms: -1,
            max_timestamp_offset: -1,
            rolling_timestamp_ms: None,
            bytes_since_index: 0,
            appender: Some(appender),
        })
    }

    /// The O_DIRECT handle of the active segment (None once sealed).
    pub fn dma(&self) -> Option<&Rc<DmaFile>> {
        self.appender.as_ref().map(SegmentAppender::file)
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// Offset relative to the base, as indexes store it.
    pub fn relative(&self, offset: i64) -> u32 {
        debug_assert!(offset >= self.base_offset && offset - self.base_offset <= u32::MAX as i64);
        (offset - self.base_offset) as u32
    }

    /// Everything from this position up is read from memory (the batch cache, the write in
    /// flight and the fill buffer); below it, from the file. At most the written end.
    pub fn memory_start(&self) -> u64 {
        self.appender
            .as_ref()
            .map_or(self.size_bytes, |a| a.memory_start())
    }

    /// Books a batch that now sits at `position` (its header already carries the assigned
    /// offsets): sparse index entries every `index_interval_bytes`, largest timestamp, size.
    pub fn add_batch(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: u32) {
        debug_assert_eq!(position, self.size_bytes);
        // Validation refused a negative lastOffsetDelta; the scan and the append checked the
        // base offset against the segment's next one. The indexes store offsets relative to
        // the base, and lookups rely on them increasing.
        debug_assert!(
            self.base_offset <= self.next_offset
                && self.next_offset <= header.base_offset
                && header.base_offset < header.next_offset(),
            "batch {}..{} added to segment {} whose next offset is {}",
            header.base_offset,
            header.next_offset(),
            self.base_offset,
            self.next_offset
        );
        if header.max_timestamp > self.max_timestamp_ms || self.max_timestamp_offset < 0 {
            self.max_timestamp_ms = header.max_timestamp;
            self.max_timestamp_offset = header.base_offset;
        }
        if self.bytes_since_index > index_interval_bytes as u64 {
            let rel = self.relative(header.base_offset);
            self.index.append(rel, position as u32);
            let rel_ts = self.relative(self.max_timestamp_offset);
            self.time_index.maybe_append(self.max_timestamp_ms, rel_ts);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_bytes();
        self.size_bytes = position + header.total_bytes();
        self.next_offset = header.next_offset();
        if self.rolling_timestamp_ms.is_none() {
            self.rolling_timestamp_ms = Some(header.max_timestamp);
        }
    }

    /// Closes the index files' handles of a sealed segment (reopened on demand: see
    /// [`super::offset_index::OPEN_INDEX_FILES_MAX`]).
    pub fn close_index_handles(&self) {
        self.index.file().close_handle();
        self.time_index.file().close_handle();
    }

    /// Records the final largest timestamp in the time index (as Kafka does when a segment
    /// becomes inactive), so a sealed segment's max timestamp can be read back from it.
    pub fn seal_time_index(&mut self) {
        if self.max_timestamp_offset >= 0 {
            let rel = self.relative(self.max_timestamp_offset);
            self.time_index.maybe_append(self.max_timestamp_ms, rel);
        }
    }
}
