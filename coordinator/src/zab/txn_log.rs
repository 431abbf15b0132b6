//! The transaction log: segmented files of checksummed records under `dataLogDir`.
//!
//! File `log.<first zxid, 16 hex digits>` starts with the 8-byte magic `ZABLOG01`, then
//! records, little-endian: `payload_len u32 | crc32c u32 | zxid u64 | payload`, the CRC-32C
//! covering the zxid and the payload. Appends are buffered in memory and written with one
//! `write` + one `fdatasync` per [`TxnLog::sync`], so a batch of many proposals costs one
//! fsync. Segments roll at `segment_bytes_max`. Opening the log scans every segment: a torn
//! or corrupt tail of the newest segment (a crash mid-write) is cut off and logged with file
//! and offset; damage anywhere else is an error naming the file and offset.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::message::Txn;
use super::zxid::{fmt_zxid, Zxid};

/// Segment file magic.
pub const LOG_MAGIC: &[u8; 8] = b"ZABLOG01";
/// Bytes before a record's payload.
pub const RECORD_HEADER_BYTES: usize = 16;
/// Largest payload accepted from disk or from the core (ZooKeeper's jute.maxbuffer is 1 MiB;
/// this leaves room for multi-ops).
pub const PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// A storage failure, naming the file and, where it applies, the offset.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An IO call failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The bytes on disk are not what was written.
    #[error("{path} at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damaged record or field.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a directory entry change (create, rename, delete) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    tuning::fs::sync_dir(dir).map_err(io_err(dir))
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first_zxid: Zxid,
    /// (zxid, offset of its record) for every record, for truncation.
    index: Vec<(Zxid, u64)>,
    len: u64,
}

/// The append-only, segmented transaction log.
#[derive(Debug)]
pub struct TxnLog {
    dir: PathBuf,
    segment_bytes_max: u64,
    segments: Vec<Segment>,
    file: Option<File>,
    buf: Vec<u8>,
    /// Records in `buf` (zxid, offset in the segment).
    buffered: Vec<(Zxid, u64)>,
    last_zxid: Zxid,
    synced_zxid: Zxid,
}

fn segment_name(first: Zxid) -> String {
    format!("log.{first:016x}")
}

fn parse_segment_name(name: &str) -> Option<Zxid> {
    let hex = name.strip_prefix("log.")?;
    if hex.len() != 16 {
        return None;
    }
    Zxid::from_str_radix(hex, 16).ok()
}

/// Encodes one record.
pub fn encode_record(txn: &Txn, out: &mut Vec<u8>) {
    let mut crc = crc32c::crc32c(&txn.zxid.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &txn.payload);
    out.extend_from_slice(&(txn.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&txn.zxid.to_le_bytes());
    out.extend_from_slice(&txn.payload);
}

/// Decodes the record at the start of `bytes`: `Ok(None)` when the bytes end cleanly,
/// `Err(reason)` when they are torn or corrupt.
pub fn decode_record(bytes: &[u8]) -> Result<Option<(Txn, usize)>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(format!("torn record header ({} bytes)", bytes.len()));
    }
    let word = |r: std::ops::Range<usize>| -> [u8; 4] {
        let mut a = [0u8; 4];
        a.copy_from_slice(&bytes[r]);
        a
    };
    let len = u32::from_le_bytes(word(0..4)) as usize;
    let crc = u32::from_le_bytes(word(4..8));
    let mut z = [0u8; 8];
    z.copy_from_slice(&bytes[8..16]);
    let zxid = u64::from_le_bytes(z);
    if len > PAYLOAD_BYTES_MAX {
        return Err(format!("record length {len} exceeds {PAYLOAD_BYTES_MAX}"));
    }
    let end = RECORD_HEADER_BYTES + len;
    if bytes.len() < end {
        return Err(format!(
            "torn record: {len} payload bytes announced, {} present",
            bytes.len() - RECORD_HEADER_BYTES
        ));
    }
    let payload = &bytes[RECORD_HEADER_BYTES..end];
    let actual = crc32c::crc32c_append(crc32c::crc32c(&z), payload);
    if actual != crc {
        return Err(format!("CRC-32C mismatch for zxid {}", fmt_zxid(zxid)));
    }
    Ok(Some((
        Txn {
            zxid,
            payload: payload.to_vec(),
        },
        end,
    )))
}

impl TxnLog {
    /// Opens (creating if needed) the log in `dir` and returns every valid entry in order.
    pub fn open(dir: &Path, segment_bytes_max: u64) -> Result<(TxnLog, Vec<Txn>), StorageError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut firsts: Vec<(Zxid, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            if let Some(first) = name.to_str().and_then(parse_segment_name) {
                firsts.push((first, entry.path()));
            }
        }
        firsts.sort();
        let mut segments = Vec::new();
        let mut txns: Vec<Txn> = Vec::new();
        let count = firsts.len();
        for (i, (first, path)) in firsts.into_iter().enumerate() {
            let newest = i + 1 == count;
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_err(&path))?;
            let mut seg = Segment {
                path: path.clone(),
                first_zxid: first,
                index: Vec::new(),
                len: 0,
            };
            let mut damage: Option<(u64, String)> = None;
            if bytes.len() < LOG_MAGIC.len() || &bytes[..LOG_MAGIC.len()] != LOG_MAGIC {
                damage = Some((0, "missing or torn segment header".into()));
            } else {
                let mut off = LOG_MAGIC.len();
                loop {
                    match decode_record(&bytes[off..]) {
                        Ok(None) => break,
                        Ok(Some((txn, used))) => {
                            let prev = txns.last().map(|t| t.zxid);
                            if prev.is_some_and(|p| txn.zxid <= p)
                                || (seg.index.is_empty() && txn.zxid != first)
                            {
                                damage = Some((
                                    off as u64,
                                    format!("zxid {} out of order", fmt_zxid(txn.zxid)),
                                ));
                                break;
                            }
                            seg.index.push((txn.zxid, off as u64));
                            txns.push(txn);
                            off += used;
                        }
                        Err(reason) => {
                            damage = Some((off as u64, reason));
                            break;
                        }
                    }
                }
                seg.len = off as u64;
            }
            if let Some((offset, reason)) = damage {
                if !newest {
                    return Err(StorageError::Corrupt {
                        path,
                        offset,
                        reason,
                    });
                }
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    reason = %reason,
                    "truncating the torn tail of the transaction log"
                );
                if offset == 0 {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    sync_dir(dir)?;
                    continue;
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(offset).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                seg.len = offset;
            }
            if seg.index.is_empty() {
                // A segment rolled just before a crash holds only its header; its name
                // promises a first zxid that may never be written, so drop it.
                fs::remove_file(&path).map_err(io_err(&path))?;
                sync_dir(dir)?;
                continue;
            }
            segments.push(seg);
        }
        let last_zxid = txns.last().map_or(0, |t| t.zxid);
        let mut log = TxnLog {
            dir: dir.to_path_buf(),
            segment_bytes_max: segment_bytes_max.max(4096),
            segments,
            file: None,
            buf: Vec::new(),
            buffered: Vec::new(),
            last_zxid,
            synced_zxid: last_zxid,
        };
        if let Some(seg) = log.segments.last() {
            let f = OpenOptions::new()
                .append(true)
                .open(&seg.path)
                .map_err(io_err(&seg.path))?;
            log.file = Some(f);
        }
        Ok((log, txns))
    }

    /// The last appended zxid (buffered or not).
    pub fn last_zxid(&self) -> Zxid {
        self.last_zxid
    }

    /// The last zxid made durable.
    pub fn synced_zxid(&self) -> Zxid {
        self.synced_zxid
    }

    /// Bytes written to the segment files (buffered entries not included).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn roll(&mut self, first: Zxid) -> Result<(), StorageError> {
        self.write_buffer()?;
        if let (Some(f), Some(seg)) = (self.file.as_ref(), self.segments.last()) {
            f.sync_data().map_err(io_err(&seg.path))?;
        }
        let path = self.dir.join(segment_name(first));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(LOG_MAGIC).map_err(io_err(&path))?;
        f.sync_all().map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            path,
            first_zxid: first,
            index: Vec::new(),
            len: LOG_MAGIC.len() as u64,
        });
        self.file = Some(f);
        Ok(())
    }

    /// Buffers one entry; it becomes durable at the next [`TxnLog::sync`].
    pub fn append(&mut self, txn: &Txn) -> Result<(), StorageError> {
        debug_assert!(txn.zxid > self.last_zxid, "log appends are in zxid order");
        if txn.payload.len() > PAYLOAD_BYTES_MAX {
            return Err(StorageError::Corrupt {
                path: self.dir.clone(),
                offset: 0,
                reason: format!("payload of {} bytes exceeds the limit", txn.payload.len()),
            });
        }
        let needs_roll = match self.segments.last() {
            None => true,
            Some(seg) => seg.len + self.buf.len() as u64 >= self.segment_bytes_max,
        };
        if needs_roll {
            self.roll(txn.zxid)?;
        }
        let seg = self.segments.last().expect("rolled");
        let off = seg.len + self.buf.len() as u64;
        self.buffered.push((txn.zxid, off));
        encode_record(txn, &mut self.buf);
        self.last_zxid = txn.zxid;
        Ok(())
    }

    fn write_buffer(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let seg = self
            .segments
            .last_mut()
            .expect("a buffer implies a segment");
        let f = self.file.as_mut().expect("a segment implies an open file");
        f.write_all(&self.buf).map_err(io_err(&seg.path))?;
        seg.len += self.buf.len() as u64;
        seg.index.append(&mut self.buffered);
        self.buf.clear();
        Ok(())
    }

    /// Writes the buffered entries and fdatasyncs; returns the last durable zxid.
    pub fn sync(&mut self) -> Result<Zxid, StorageError> {
        self.flush(true)
    }

    /// Writes the buffered entries, and fdatasyncs them when `fdatasync` (without it they
    /// survive a crash of the process, not of the machine); returns the last zxid written.
    pub fn flush(&mut self, fdatasync: bool) -> Result<Zxid, StorageError> {
        if self.synced_zxid == self.last_zxid {
            return Ok(self.synced_zxid);
        }
        self.write_buffer()?;
        if let (true, Some(f), Some(seg)) = (fdatasync, self.file.as_ref(), self.segments.last()) {
            f.sync_data().map_err(io_err(&seg.path))?;
        }
        self.synced_zxid = self.last_zxid;
        Ok(self.synced_zxid)
    }

    /// Drops every entry above `zxid` and makes the remaining log durable.
    pub fn truncate_after(&mut self, zxid: Zxid) -> Result<(), StorageError> {
        self.write_buffer()?;
        if let (Some(f), Some(seg)) = (self.file.as_ref(), self.segments.last()) {
            f.sync_data().map_err(io_err(&seg.path))?;
        }
        while let Some(seg) = self.segments.last() {
            if seg.first_zxid <= zxid {
                break;
            }
            let path = seg.path.clone();
            self.file = None;
            fs::remove_file(&path).map_err(io_err(&path))?;
            self.segments.pop();
        }
        if let Some(seg) = self.segments.last_mut() {
            let keep = seg.index.partition_point(|&(z, _)| z <= zxid);
            if keep < seg.index.len() {
                let cut = seg.index[keep].1;
                seg.index.truncate(keep);
                let f = OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .map_err(io_err(&seg.path))?;
                f.set_len(cut).map_err(io_err(&seg.path))?;
                f.sync_all().map_err(io_err(&seg.path))?;
                seg.len = cut;
            }
            let f = OpenOptions::new()
                .append(true)
                .open(&seg.path)
                .map_err(io_err(&seg.path))?;
            self.file = Some(f);
        }
        sync_dir(&self.dir)?;
        self.last_zxid = self
            .segments
            .iter()
            .rev()
            .find_map(|s| s.index.last().map(|&(z, _)| z))
            .unwrap_or(0);
        self.synced_zxid = self.last_zxid;
        Ok(())
    }

    /// Deletes every segment (before installing a snapshot received from the leader).
    pub fn clear(&mut self) -> Result<(), StorageError> {
        self.buf.clear();
        self.buffered.clear();
        self.file = None;
        for seg in self.segments.drain(..) {
            fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        }
        sync_dir(&self.dir)?;
        self.last_zxid = 0;
        self.synced_zxid = 0;
        Ok(())
    }

    /// Deletes segments whose entries are all at or below `zxid` (covered by a snapshot).
    pub fn purge_through(&mut self, zxid: Zxid) -> Result<usize, StorageError> {
        let mut removed = 0;
        while self.segments.len() > 1
            && self.segments[0]
                .index
                .last()
                .is_none_or(|&(last, _)| last <= zxid)
        {
            let seg = self.segments.remove(0);
            fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Reads segment files back for tests and tools: where each record lives.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }
}

/// Reads a whole file (helper for recovery tools and tests).
pub fn read_file(path: &Path) -> Result<Vec<u8>, StorageError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut v = Vec::new();
    f.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    f.read_to_end(&mut v).map_err(io_err(path))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    //! Proves append/sync/reopen round trips, torn-tail truncation, TRUNC and purge on real
    //! files in a temporary directory.
    use super::*;
    use crate::zab::zxid::make_zxid;

    fn txn(e: u32, c: u32) -> Txn {
        Txn {
            zxid: make_zxid(e, c),
            payload: format!("payload {e}/{c}").into_bytes(),
        }
    }

    #[test]
    fn round_trip_roll_truncate_purge_and_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, got) = TxnLog::open(dir.path(), 4096).expect("open");
        assert!(got.is_empty());
        for c in 1..=300 {
            log.append(&txn(1, c)).expect("append");
        }
        assert_eq!(log.sync().expect("sync"), make_zxid(1, 300));
        assert!(log.segment_count() > 1, "4 KiB segments must roll");
        drop(log);
        let (mut log, got) = TxnLog::open(dir.path(), 4096).expect("reopen");
        assert_eq!(got.len(), 300);
        assert_eq!(got[299], txn(1, 300));
        // TRUNC into an earlier segment, then append a new epoch.
        log.truncate_after(make_zxid(1, 10)).expect("truncate");
        log.append(&txn(2, 1)).expect("append");
        log.sync().expect("sync");
        drop(log);
        let (mut log, got) = TxnLog::open(dir.path(), 4096).expect("reopen");
        let zxids: Vec<Zxid> = got.iter().map(|t| t.zxid).collect();
        let mut want: Vec<Zxid> = (1..=10).map(|c| make_zxid(1, c)).collect();
        want.push(make_zxid(2, 1));
        assert_eq!(zxids, want);
        // Purge removes nothing while one segment holds everything after the snapshot.
        for c in 2..=300 {
            log.append(&txn(2, c)).expect("append");
        }
        log.sync().expect("sync");
        let before = log.segment_count();
        let removed = log.purge_through(make_zxid(2, 200)).expect("purge");
        assert!(removed > 0 && log.segment_count() == before - removed);
        let last_seg = log.segment_paths().pop().expect("segment");
        drop(log);
        let (_log, got) = TxnLog::open(dir.path(), 4096).expect("reopen");
        assert!(got.first().expect("entries").zxid <= make_zxid(2, 201));
        assert_eq!(got.last().expect("entries").zxid, make_zxid(2, 300));
        // A torn tail: cut the newest segment mid-record; recovery keeps the prefix.
        let len = fs::metadata(&last_seg).expect("meta").len();
        let f = OpenOptions::new()
            .write(true)
            .open(&last_seg)
            .expect("open");
        f.set_len(len - 5).expect("cut");
        drop(f);
        let (_log, got) = TxnLog::open(dir.path(), 4096).expect("reopen torn");
        assert_eq!(got.last().expect("entries").zxid, make_zxid(2, 299));
        // A header-only segment (rolled, then a crash) is dropped, and the log continues.
        let empty = dir.path().join(segment_name(make_zxid(9, 1)));
        fs::write(&empty, LOG_MAGIC).expect("write");
        let (mut log, got) = TxnLog::open(dir.path(), 4096).expect("reopen with empty");
        assert!(!empty.exists());
        assert_eq!(got.last().expect("entries").zxid, make_zxid(2, 299));
        log.append(&txn(3, 1)).expect("append");
        log.sync().expect("sync");
        drop(log);
        let (_log, got) = TxnLog::open(dir.path(), 4096).expect("reopen");
        assert_eq!(got.last().expect("entries").zxid, make_zxid(3, 1));
        // Corruption in an older segment is an error naming the file.
        let (log, _) = TxnLog::open(dir.path(), 4096).expect("reopen");
        let first_seg = log.segment_paths()[0].clone();
        drop(log);
        let mut bytes = read_file(&first_seg).expect("read");
        let at = LOG_MAGIC.len() + RECORD_HEADER_BYTES + 2;
        bytes[at] ^= 0xff;
        fs::write(&first_seg, &bytes).expect("write");
        let err = TxnLog::open(dir.path(), 4096).expect_err("corrupt middle segment");
        let msg = err.to_string();
        assert!(msg.contains("log.") && msg.contains("offset 8"), "{msg}");
    }
}
