//! The sparse offset index of one segment (`<base>.index`): relative offset -> byte position.
//!
//! Kafka's format: 8-byte entries, relative offset u32 then position u32, big-endian, in
//! increasing order of both. An entry is added every `index_interval_bytes` of log, pointing at
//! the start of a batch, so a lookup lands at most that many bytes before the wanted batch.
//! The entries live in memory; new entries reach the file after the log bytes they point at
//! were written (so a crash leaves an index that points at most at data that was written),
//! and the file is fdatasync'ed when the segment rolls or the log closes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Index files a shard keeps open at most. Entries live in memory, so a file is only needed
/// to add entries, cut, or sync: the handles of partitions that are written stay open,
/// the others are closed and reopened on demand, so open files follow the partitions being
/// written, not every partition.
pub const OPEN_INDEX_FILES_MAX: usize = 512;

/// The shard's open index files, least recently used closed first.
struct OpenIndexFiles {
    files: HashMap<u64, (Rc<File>, u64)>,
    tick: u64,
}

thread_local! {
    static OPEN_INDEX_FILES: RefCell<OpenIndexFiles> = RefCell::new(OpenIndexFiles {
        files: HashMap::new(),
        tick: 0,
    });
    static NEXT_INDEX_FILE_ID: Cell<u64> = const { Cell::new(0) };
}

fn open_rw(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
}

/// Index files this shard has open now (for tests and the docs' measurements).
pub fn open_index_files() -> usize {
    OPEN_INDEX_FILES.with(|open| open.borrow().files.len())
}

/// Append-only file of fixed-size entries shared by the offset and the time index. Its
/// handle is borrowed from the shard's cache of open index files ([`OPEN_INDEX_FILES_MAX`]).
///
/// A handle reopened after it was closed does not see a write-back error reported before:
/// acceptable for indexes, which recovery checks and rebuilds from the log; the `.log`
/// files keep their own handles.
#[derive(Debug)]
pub(crate) struct IndexFile {
    path: PathBuf,
    /// Key of this file in the shard's cache of open handles.
    id: u64,
    /// Bytes of entries already in the file.
    written_bytes: u64,
    /// Encoded entries not yet in the file.
    pending: Vec<u8>,
}

impl IndexFile {
    /// The handle used to create or load the file is closed here: the first write of
    /// entries opens it again (an idle partition's index holds no file open).
    fn new(path: &Path, written_bytes: u64) -> IndexFile {
        let id = NEXT_INDEX_FILE_ID.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        IndexFile {
            path: path.to_path_buf(),
            id,
            written_bytes,
            pending: Vec::new(),
        }
    }

    /// Opens (creating if needed) `path` and returns it with its whole content.
    pub(crate) fn open(path: &Path) -> io::Result<(IndexFile, Vec<u8>)> {
        let file = open_rw(path, false)?;
        let len = file.metadata()?.len();
        let mut content = vec![0u8; len as usize];
        file.read_exact_at(&mut content, 0)?;
        Ok((IndexFile::new(path, len), content))
    }

    /// Creates `path` empty (replacing an existing file).
    pub(crate) fn create(path: &Path) -> io::Result<IndexFile> {
        open_rw(path, true)?;
        Ok(IndexFile::new(path, 0))
    }

    /// Puts `file` in the shard's cache, closing the least recently used handle if full.
    fn cache(&self, file: Rc<File>) {
        OPEN_INDEX_FILES.with(|open| {
            let mut open = open.borrow_mut();
            open.tick += 1;
            let tick = open.tick;
            if open.files.len() >= OPEN_INDEX_FILES_MAX && !open.files.contains_key(&self.id) {
                let oldest = open.files.iter().min_by_key(|(_, (_, used))| *used);
                if let Some(&oldest) = oldest.map(|(id, _)| id) {
                    open.files.remove(&oldest);
                }
            }
            open.files.insert(self.id, (file, tick));
            debug_assert!(open.files.len() <= OPEN_INDEX_FILES_MAX);
        })
    }

    /// The file's handle: the cached one, or the file opened again.
    fn file(&self) -> io::Result<Rc<File>> {
        let cached = OPEN_INDEX_FILES.with(|open| {
            let mut open = open.borrow_mut();
            open.tick += 1;
            let tick = open.tick;
            open.files.get_mut(&self.id).map(|(file, used)| {
                *used = tick;
                file.clone()
            })
        });
        if let Some(file) = cached {
            return Ok(file);
        }
        // Not created here: the file exists since `open`/`create` (a vanished file is an
        // error to report, not one to recreate empty).
        let file = Rc::new(OpenOptions::new().read(true).write(true).open(&self.path)?);
        self.cache(file.clone());
        Ok(file)
    }

    /// Closes this file's handle (a sealed segment's index is complete: its entries are in
    /// memory and the handle is reopened only to cut or sync it).
    pub(crate) fn close_handle(&self) {
        // `try_with`: a log dropped while its thread exits finds the cache already gone.
        let _ = OPEN_INDEX_FILES.try_with(|open| open.borrow_mut().files.remove(&self.id));
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn push(&mut self, entry: &[u8]) {
        self.pending.extend_from_slice(entry);
    }

    /// Writes the pending entries to the file (page cache; see [`IndexFile::sync`]).
    pub(crate) fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file()?
            .write_all_at(&self.pending, self.written_bytes)?;
        self.written_bytes += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.file()?.sync_data()
    }

    /// A second handle of the file, to fdatasync it from another thread.
    pub(crate) fn handle(&self) -> io::Result<File> {
        self.file()?.try_clone()
    }

    /// Cuts the file to its first `bytes` bytes and drops pending entries beyond them.
    pub(crate) fn truncate(&mut self, bytes: u64) -> io::Result<()> {
        if bytes < self.written_bytes {
            self.file()?.set_len(bytes)?;
            self.written_bytes = bytes;
            self.pending.clear();
        } else {
            self.pending.truncate((bytes - self.written_bytes) as usize);
        }
        Ok(())
    }
}

impl Drop for IndexFile {
    fn drop(&mut self) {
        self.close_handle();
    }
}

/// An entry of an index file: its fixed size, its decoding and the checks a load applies.
pub(crate) trait IndexEntry: Copy {
    /// Bytes per entry in the file.
    const BYTES: usize;
    /// Decodes one entry from exactly [`Self::BYTES`] bytes.
    fn decode(bytes: &[u8]) -> Self;
    /// True when `self` may not follow `prev` in the file.
    fn out_of_order(&self, prev: &Self) -> bool;
    /// Why `self` does not fit a segment bounded by `bound`, if it does not.
    fn misfit(&self, i: usize, bound: u64) -> Option<String>;
}

/// Opens `path` and decodes its entries, checking a whole number of entries, their order and
/// that each fits `bound`. `Ok(Err(reason))`: the file is missing or corrupt and must be
/// rebuilt.
pub(crate) fn load_entries<E: IndexEntry>(
    path: &Path,
    bound: u64,
) -> io::Result<Result<(IndexFile, Vec<E>), String>> {
    if !path.exists() {
        return Ok(Err("missing".into()));
    }
    let (file, content) = IndexFile::open(path)?;
    if content.len() % E::BYTES != 0 {
        return Ok(Err(format!(
            "{} bytes is not a whole number of {}-byte entries",
            content.len(),
            E::BYTES
        )));
    }
    let mut entries: Vec<E> = Vec::with_capacity(content.len() / E::BYTES);
    for (i, chunk) in content.chunks_exact(E::BYTES).enumerate() {
        let entry = E::decode(chunk);
        if entries.last().is_some_and(|prev| entry.out_of_order(prev)) {
            return Ok(Err(format!(
                "entry {i} at byte {} is out of order",
                i * E::BYTES
            )));
        }
        if let Some(reason) = entry.misfit(i, bound) {
            return Ok(Err(reason));
        }
        entries.push(entry);
    }
    Ok(Ok((file, entries)))
}

/// One offset index entry, relative to the segment's base offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// Bytes per offset index entry.
pub const OFFSET_ENTRY_BYTES: usize = 8;

impl IndexEntry for OffsetEntry {
    const BYTES: usize = OFFSET_ENTRY_BYTES;

    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    fn out_of_order(&self, prev: &Self) -> bool {
        self.relative_offset <= prev.relative_offset || self.position <= prev.position
    }

    fn misfit(&self, i: usize, log_bytes: u64) -> Option<String> {
        (self.position as u64 >= log_bytes).then(|| {
            format!(
                "entry {i} points at byte {} past the log's {log_bytes} bytes",
                self.position
            )
        })
    }
}

/// The offset index of one segment.
#[derive(Debug)]
pub struct OffsetIndex {
    file: IndexFile,
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    /// Creates an empty index at `path` (replacing any file there).
    pub fn create(path: &Path) -> io::Result<OffsetIndex> {
        Ok(OffsetIndex {
            file: IndexFile::create(path)?,
            entries: Vec::new(),
        })
    }

    /// Loads `path` and checks it against the segment: a whole number of entries, offsets and
    /// positions strictly increasing, positions below `log_bytes`. `Ok(Err(reason))` means the
    /// file is corrupt and must be rebuilt; a missing file loads as corrupt too.
    pub fn load(path: &Path, log_bytes: u64) -> io::Result<Result<OffsetIndex, String>> {
        Ok(load_entries(path, log_bytes)?.map(|(file, entries)| OffsetIndex { file, entries }))
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    /// Adds an entry (in memory; [`OffsetIndex::write_pending`] puts it in the file).
    pub fn append(&mut self, relative_offset: u32, position: u32) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|l| l.relative_offset < relative_offset && l.position < position));
        self.entries.push(OffsetEntry {
            relative_offset,
            position,
        });
        let mut raw = [0u8; OFFSET_ENTRY_BYTES];
        raw[..4].copy_from_slice(&relative_offset.to_be_bytes());
        raw[4..].copy_from_slice(&position.to_be_bytes());
        self.file.push(&raw);
    }

    /// The last entry whose relative offset is <= `relative_offset`: where a scan for that
    /// offset starts. `None` means "scan from the segment's start".
    pub fn lookup(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let n = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops the entries pointing at or past `position` (used when the log is truncated).
    pub fn truncate_to_position(&mut self, position: u64) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|e| (e.position as u64) < position);
        self.entries.truncate(keep);
        self.file.truncate((keep * OFFSET_ENTRY_BYTES) as u64)
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

#[cfg(test)]
mod tests {
    //! The shard keeps at most `OPEN_INDEX_FILES_MAX` index files open, whatever the number of
    //! indexes written, and reopens an evicted one on demand with its entries intact.
    use super::*;

    #[test]
    fn open_index_files_stay_bounded_and_reopen_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let before = open_index_files();
        let mut indexes = Vec::new();
        for i in 0..OPEN_INDEX_FILES_MAX + 40 {
            let mut index = OffsetIndex::create(&dir.path().join(format!("{i}.index"))).unwrap();
            index.append(1, 100);
            index.write_pending().unwrap();
            indexes.push(index);
            assert!(open_index_files() <= OPEN_INDEX_FILES_MAX);
        }
        assert!(open_index_files() > before);
        // The first one was evicted long ago: a new entry reopens it.
        indexes[0].append(2, 200);
        indexes[0].sync().unwrap();
        let loaded = OffsetIndex::load(&dir.path().join("0.index"), 1000)
            .unwrap()
            .unwrap();
        assert_eq!(loaded.entries().len(), 2);
        drop(loaded);
        let open = open_index_files();
        drop(indexes);
        assert!(open_index_files() < open);
    }
}
