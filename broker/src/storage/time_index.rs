//! The sparse time index of one segment (`<base>.timeindex`): timestamp -> relative offset.
//!
//! Kafka's format: 12-byte entries, timestamp i64 then relative offset u32, big-endian, both
//! non-decreasing. An entry `(t, o)` says "the largest timestamp in the segment up to and
//! including the batch at relative offset `o` is `t`", so every batch before `o` has a
//! timestamp <= `t`; a ListOffsets-by-time lookup starts its scan at the offset of the last
//! entry whose `t` is below the target. Entries are added together with offset index entries,
//! and only when the running maximum timestamp grew.

use std::io;
use std::path::Path;

use super::offset_index::{load_entries, IndexEntry, IndexFile};

/// Bytes per time index entry.
pub const TIME_ENTRY_BYTES: usize = 12;

/// One time index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const BYTES: usize = TIME_ENTRY_BYTES;

    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry {
            timestamp_ms: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }

    fn out_of_order(&self, prev: &Self) -> bool {
        self.timestamp_ms < prev.timestamp_ms || self.relative_offset < prev.relative_offset
    }

    fn misfit(&self, i: usize, max_relative_offset_exclusive: u64) -> Option<String> {
        (self.relative_offset as u64 >= max_relative_offset_exclusive).then(|| {
            format!(
                "entry {i} names relative offset {} past the segment",
                self.relative_offset
            )
        })
    }
}

/// The time index of one segment.
#[derive(Debug)]
pub struct TimeIndex {
    file: IndexFile,
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Creates an empty index at `path` (replacing any file there).
    pub fn create(path: &Path) -> io::Result<TimeIndex> {
        Ok(TimeIndex {
            file: IndexFile::create(path)?,
            entries: Vec::new(),
        })
    }

    /// Loads `path`, checking a whole number of entries and non-decreasing fields, relative
    /// offsets below `max_relative_offset_exclusive`. `Ok(Err(reason))`: corrupt or missing.
    pub fn load(
        path: &Path,
        max_relative_offset_exclusive: u64,
    ) -> io::Result<Result<TimeIndex, String>> {
        Ok(load_entries(path, max_relative_offset_exclusive)?
            .map(|(file, entries)| TimeIndex { file, entries }))
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }

    /// Adds `(timestamp_ms, relative_offset)` if the timestamp is larger than the last entry's.
    pub fn maybe_append(&mut self, timestamp_ms: i64, relative_offset: u32) {
        if let Some(last) = self.entries.last() {
            if timestamp_ms <= last.timestamp_ms || relative_offset < last.relative_offset {
                return;
            }
        }
        self.entries.push(TimeEntry {
            timestamp_ms,
            relative_offset,
        });
        let mut raw = [0u8; TIME_ENTRY_BYTES];
        raw[..8].copy_from_slice(&timestamp_ms.to_be_bytes());
        raw[8..].copy_from_slice(&relative_offset.to_be_bytes());
        self.file.push(&raw);
    }

    /// The relative offset a scan for the first batch with a timestamp >= `timestamp_ms`
    /// may start from (every earlier batch is older than the target).
    pub fn lookup(&self, timestamp_ms: i64) -> Option<u32> {
        let n = self
            .entries
            .partition_point(|e| e.timestamp_ms < timestamp_ms);
        n.checked_sub(1).map(|i| self.entries[i].relative_offset)
    }

    /// Drops entries naming relative offsets >= `relative_offset`.
    pub fn truncate_to_relative_offset(&mut self, relative_offset: u32) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
        self.file.truncate((keep * TIME_ENTRY_BYTES) as u64)
    }

    pub fn write_pending(&mut self) -> io::Result<()> {
        self.file.write_pending()
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync()
    }

    pub(crate) fn file(&self) -> &IndexFile {
        &self.file
    }
}
