//! The transaction log: committed-order proposals appended to files in `dataLogDir/version-2`,
//! each record protected by CRC-32C, many records made durable by one fdatasync.
//!
//! File `log.<first zxid, 16 hex digits>` = magic `ZNTXLOG1`, then records:
//! `payload length u32 | crc32c u32 | zxid i64 | payload`, the CRC covering zxid and payload.
//! Records are only appended. A crash can leave a torn record at the end of the newest file;
//! [`read_log_file`] stops at the first record that is short or fails its CRC and reports
//! where, so recovery can truncate the tail of the newest file (and must refuse a damaged
//! older file, whose later records exist elsewhere).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"ZNTXLOG1";
const RECORD_HEADER_BYTES: usize = 16;

/// The log directory inside `dataLogDir` (ZooKeeper's layout).
pub fn log_dir(data_log_dir: &Path) -> PathBuf {
    data_log_dir.join("version-2")
}

/// `log.<zxid>` files of a directory, oldest first, with the zxid their name starts at.
pub fn list_logs(dir: &Path) -> io::Result<Vec<(i64, PathBuf)>> {
    list_numbered(dir, "log.")
}

pub(crate) fn list_numbered(dir: &Path, prefix: &str) -> io::Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(hex) = name.strip_prefix(prefix) else {
            continue;
        };
        if let Ok(zxid) = u64::from_str_radix(hex, 16) {
            out.push((zxid as i64, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// What reading a log file found.
#[derive(Debug)]
pub struct LogContents {
    pub records: Vec<(i64, Vec<u8>)>,
    /// Bytes of the file up to the end of the last good record.
    pub valid_bytes: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub damage: Option<String>,
}

/// Reads every intact record of a log file, stopping at the first damaged one.
pub fn read_log_file(path: &Path) -> io::Result<LogContents> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut out = LogContents {
        records: Vec::new(),
        valid_bytes: 0,
        damage: None,
    };
    if bytes.len() < MAGIC.len() {
        out.damage = Some(format!("{}: shorter than its header", path.display()));
        return Ok(out);
    }
    if &bytes[..8] != MAGIC {
        out.damage = Some(format!("{}: bad magic at offset 0", path.display()));
        return Ok(out);
    }
    let mut pos = MAGIC.len();
    out.valid_bytes = pos as u64;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < RECORD_HEADER_BYTES {
            out.damage = Some(format!(
                "{}: torn record header at offset {pos}",
                path.display()
            ));
            break;
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if rest.len() < RECORD_HEADER_BYTES + len {
            out.damage = Some(format!("{}: torn record at offset {pos}", path.display()));
            break;
        }
        let covered = &rest[8..RECORD_HEADER_BYTES + len];
        if crc32c::crc32c(covered) != crc {
            out.damage = Some(format!("{}: CRC mismatch at offset {pos}", path.display()));
            break;
        }
        let mut zxid_bytes = [0u8; 8];
        zxid_bytes.copy_from_slice(&rest[8..16]);
        let zxid = i64::from_be_bytes(zxid_bytes);
        out.records.push((
            zxid,
            rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len].to_vec(),
        ));
        pos += RECORD_HEADER_BYTES + len;
        out.valid_bytes = pos as u64;
    }
    Ok(out)
}

/// Appends records to the current log file; [`TxnLogWriter::sync`] makes them durable.
pub struct TxnLogWriter {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    buffer: Vec<u8>,
    file_bytes: u64,
    /// Roll to a new file past this size.
    roll_bytes: u64,
    /// The last zxid appended, to name the next file.
    last_zxid: i64,
}

impl TxnLogWriter {
    /// Opens the log directory for appending; the next record goes into a new file named by
    /// `next_zxid`, so a recovered (possibly truncated) file is never appended to.
    pub fn open(dir: &Path, next_zxid: i64, roll_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (file, path) = new_file(dir, next_zxid)?;
        Ok(TxnLogWriter {
            dir: dir.to_owned(),
            file,
            path,
            buffer: Vec::with_capacity(1 << 20),
            file_bytes: MAGIC.len() as u64,
            roll_bytes,
            last_zxid: next_zxid - 1,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffers one record.
    pub fn append(&mut self, zxid: i64, payload: &[u8]) {
        debug_assert!(zxid > self.last_zxid, "log zxids increase");
        let start = self.buffer.len();
        self.buffer
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.buffer.extend_from_slice(&[0; 4]);
        self.buffer.extend_from_slice(&zxid.to_be_bytes());
        self.buffer.extend_from_slice(payload);
        let crc = crc32c::crc32c(&self.buffer[start + 8..]);
        self.buffer[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
        self.last_zxid = zxid;
    }

    /// Writes the buffered records; with `sync`, also fdatasyncs. Rolls to a new file
    /// afterwards if the current one is full.
    pub fn flush(&mut self, sync: bool) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.file.write_all(&self.buffer)?;
            self.file_bytes += self.buffer.len() as u64;
            self.buffer.clear();
            if sync {
                self.file.sync_data()?;
            }
        }
        if self.file_bytes >= self.roll_bytes {
            self.roll()?;
        }
        Ok(())
    }

    /// Starts a new file at the next zxid (after a snapshot, so old files can be purged).
    pub fn roll(&mut self) -> io::Result<()> {
        self.file.write_all(&self.buffer)?;
        self.buffer.clear();
        self.file.sync_data()?;
        let (file, path) = new_file(&self.dir, self.last_zxid + 1)?;
        self.file = file;
        self.path = path;
        self.file_bytes = MAGIC.len() as u64;
        Ok(())
    }
}

fn new_file(dir: &Path, first_zxid: i64) -> io::Result<(File, PathBuf)> {
    let path = dir.join(format!("log.{:016x}", first_zxid as u64));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    file.write_all(MAGIC)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// fsyncs a directory so a created or renamed file's entry is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    //! Proves records written are read back in order, and that a torn or corrupted tail is
    //! detected at the right offset, by writing real files and damaging them.
    use super::*;

    #[test]
    fn append_read_and_detect_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TxnLogWriter::open(dir.path(), 1, 1 << 20).unwrap();
        for z in 1..=10 {
            w.append(z, format!("payload-{z}").as_bytes());
        }
        w.flush(true).unwrap();
        let path = w.path().to_owned();
        let c = read_log_file(&path).unwrap();
        assert_eq!(c.records.len(), 10);
        assert_eq!(c.records[3], (4, b"payload-4".to_vec()));
        assert!(c.damage.is_none());
        let full = std::fs::metadata(&path).unwrap().len();
        assert_eq!(c.valid_bytes, full);
        // Tear the last record.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        let c = read_log_file(&path).unwrap();
        assert_eq!(c.records.len(), 9);
        assert!(c.damage.unwrap().contains("torn"));
        // Flip a payload byte of record 5.
        let mut bytes = std::fs::read(&path).unwrap();
        let pos = 8 + 4 * (16 + 9) + 16;
        bytes[pos] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let c = read_log_file(&path).unwrap();
        assert_eq!(c.records.len(), 4);
        assert!(c.damage.unwrap().contains("CRC"));
    }

    #[test]
    fn roll_starts_a_file_named_by_the_next_zxid() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TxnLogWriter::open(dir.path(), 1, 64).unwrap();
        w.append(1, &[0; 100]);
        w.flush(true).unwrap();
        w.append(2, &[1; 10]);
        w.flush(true).unwrap();
        let logs = list_logs(dir.path()).unwrap();
        assert_eq!(logs.iter().map(|(z, _)| *z).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(
            read_log_file(&logs[1].1).unwrap().records,
            vec![(2, vec![1; 10])]
        );
    }
}
